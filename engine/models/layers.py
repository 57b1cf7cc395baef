"""Building blocks of the transforms: GDN/IGDN and sub-pixel convolutions.

GDN: Balle, Laparra, Simoncelli, "Density modeling of images using a generalized normalization
transformation", ICLR 2016. Sub-pixel convolution: Shi et al., CVPR 2016, used as the decoder's
upsampler by Theis et al., "Lossy image compression with compressive autoencoders", ICLR 2017.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nicengine_kernels.dispatch import gdn, subpel, subpel_igdn
from nicengine_kernels.lower_bound import lower_bound


class GDN(nn.Module):
    """Generalized divisive normalization over channels, shape-preserving (B, C, H, W).

    GDN:  y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)
    IGDN: y_i = x_i * sqrt(beta_i + sum_j gamma_ij x_j^2)   (the approximate inverse)

    beta and gamma are kept non-negative by storing their square roots above a small pedestal,
    as in Balle's reparameterisation, so that training cannot drive them negative.
    """

    _pedestal = 2.0**-36

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6,
                 gamma_init: float = 0.1) -> None:
        super().__init__()
        self.inverse = inverse
        self._beta_bound = (beta_min + self._pedestal) ** 0.5
        self._gamma_bound = self._pedestal**0.5
        self.beta = nn.Parameter(torch.sqrt(torch.ones(channels) + self._pedestal))
        gamma = gamma_init * torch.eye(channels) + self._pedestal
        self.gamma = nn.Parameter(torch.sqrt(gamma))

    def effective_params(self) -> tuple[Tensor, Tensor]:
        """(beta[C], gamma[C, C]) as used in the formula."""
        beta = lower_bound(self.beta, self._beta_bound) ** 2 - self._pedestal
        gamma = lower_bound(self.gamma, self._gamma_bound) ** 2 - self._pedestal
        return beta, gamma

    def forward(self, x: Tensor) -> Tensor:
        beta, gamma = self.effective_params()
        return gdn(x, beta, gamma, self.inverse)


class SubpelConv(nn.Module):
    """Sub-pixel convolution: conv3x3 to r^2 * C_out channels, then pixel shuffle by r.

    (B, C_in, H, W) -> (B, C_out, r*H, r*W). The bias, the shuffle and an optional following
    nonlinearity ("igdn" or "lrelu") run as one fused epilogue (`nicengine_kernels.subpel`) on the
    conv output.
    """

    def __init__(self, c_in: int, c_out: int, r: int = 2, act: str | None = None,
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.r = r
        self.conv = Conv2d(c_in, c_out * r * r, kernel_size, padding=kernel_size // 2,
                           bias=False)
        self.bias = nn.Parameter(torch.zeros(c_out * r * r))
        self.act = act
        self.igdn = GDN(c_out, inverse=True) if act == "igdn" else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        if self.act == "igdn":
            beta, gamma = self.igdn.effective_params()
            return subpel_igdn(y, self.bias, self.r, beta, gamma)
        return subpel(y, self.bias, self.r, lrelu=self.act == "lrelu")


# NNPACK's Winograd 3x3 convolution is about 2x faster than oneDNN's direct convolution for
# layers of 64 or more outputs on CPUs without AVX-512 (the synthesis' largest layer: 95 ms
# against 197 on a Kodak image, 2 cores, AVX2), but slower for few outputs (the last layer, 12
# channels: 67 ms against 37). Its rounding differs slightly (~1e-4 relative). Inference only,
# and never in an exported graph (torch.export, as ONNX export uses it): ONNX has no such
# operator.
_NNPACK = torch.backends.nnpack.is_available() and torch._nnpack_available()  # also initialises


class Conv2d(nn.Conv2d):
    """nn.Conv2d (the same parameters and state dict) whose 3x3 stride-1 zero-padded layers of
    64 or more outputs run on NNPACK's Winograd convolution when inferring on the CPU in
    float32."""

    def forward(self, x: Tensor) -> Tensor:
        if self._winograd(x):
            return torch._nnpack_spatial_convolution(x.contiguous(), self.weight, self.bias,
                                                     [1, 1], [1, 1])
        return super().forward(x)

    def _winograd(self, x: Tensor) -> bool:
        return (_NNPACK and x.device.type == "cpu" and x.dtype == torch.float32
                and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_exporting()
                and not (torch.is_grad_enabled()
                         and (x.requires_grad or self.weight.requires_grad))
                and self.kernel_size == (3, 3) and self.stride == (1, 1)
                and self.padding == (1, 1) and self.dilation == (1, 1) and self.groups == 1
                and self.padding_mode == "zeros" and self.out_channels >= 64)


def conv(c_in: int, c_out: int, kernel_size: int = 5, stride: int = 2) -> Conv2d:
    """'Same'-padded convolution; stride 2 halves H and W."""
    return Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2)


def leaky_relu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.01)
