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
# channels: 67 ms against 37). A 5x5 stride-2 layer is a 3x3 stride-1 one on the space-to-depth
# rearrangement of its input (4x the channels, a 6x6 kernel: 36 taps for 25), and NNPACK runs
# that 1.2 to 1.6x faster than oneDNN runs the direct one from inputs of 128 channels and
# 128x128 pixels (at N=128, 128 -> 128 at 256x384: 120 against 188 ms on one core, 81 against
# 116 on two, AVX2; benchmarks/RESULTS.md), and up to 1.5x slower on smaller ones (64 channels;
# at 64x96 pixels 1.4x faster on one core, 1.3x slower on two with AVX-512). Its rounding
# differs slightly (~1e-5 to 1e-4 of a layer's largest output). Inference only, and never in an
# exported graph (torch.export, as ONNX export uses it): ONNX has no such operator.
_NNPACK = torch.backends.nnpack.is_available() and torch._nnpack_available()  # also initialises
SPACE_TO_DEPTH_MIN_PIXELS = 128 * 128
SPACE_TO_DEPTH_MIN_CHANNELS = 128


def space_to_depth(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 4C, ceil(H/2), ceil(W/2)), channel c*4 + 2p + q holding the pixels
    (2i + p, 2j + q): F.pixel_unshuffle(x, 2) after zero-padding odd sizes. In two copies (rows,
    then columns), twice as fast as pixel_unshuffle's one strided gather."""
    b, c, h, w = x.shape
    x = F.pad(x, (0, w % 2, 0, h % 2))
    h, w = (h + 1) // 2, (w + 1) // 2
    rows = x.reshape(b, c, h, 2, 2 * w).transpose(2, 3).contiguous()  # (B, C, p, H/2, W)
    return rows.view(b, c, 2, h, w, 2).permute(0, 1, 2, 5, 3, 4).reshape(b, 4 * c, h, w)


def space_to_depth_weight(weight: Tensor) -> Tensor:
    """A 5x5 stride-2 kernel (O, C, 5, 5), padding 2, as the 3x3 stride-1 kernel (O, 4C, 3, 3),
    padding 1, over `space_to_depth` of the input: input offset 2(a - 1) + p of the 5x5 kernel
    (-2 to 2; 3 is a zero tap) is tap a of phase p."""
    o, c = weight.shape[:2]
    taps = F.pad(weight, (0, 1, 0, 1)).view(o, c, 3, 2, 3, 2)  # (O, C, a, p, b, q)
    return taps.permute(0, 1, 3, 5, 2, 4).reshape(o, 4 * c, 3, 3)


class Conv2d(nn.Conv2d):
    """nn.Conv2d (the same parameters and state dict) that runs on NNPACK's Winograd
    convolution when inferring on the CPU in float32: its zero-padded 3x3 stride-1 layers of 64
    or more outputs, and its 5x5 stride-2 ones of 64 or more outputs on inputs of at least
    SPACE_TO_DEPTH_MIN_CHANNELS channels and SPACE_TO_DEPTH_MIN_PIXELS pixels, through
    `space_to_depth`."""

    def forward(self, x: Tensor) -> Tensor:
        if self._nnpack(x):
            if self.kernel_size == (3, 3):
                return torch._nnpack_spatial_convolution(x.contiguous(), self.weight, self.bias,
                                                         [1, 1], [1, 1])
            return torch._nnpack_spatial_convolution(
                space_to_depth(x), self._space_to_depth_weight(), self.bias, [1, 1], [1, 1])
        return super().forward(x)

    def _space_to_depth_weight(self) -> Tensor:
        """space_to_depth_weight(self.weight), made again only when the weight changes (an
        inference tensor has no version counter: then every call)."""
        w = self.weight
        if torch.is_inference(w):
            return space_to_depth_weight(w)
        key = (w.data_ptr(), w._version)
        cached = self.__dict__.get("_s2d")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_s2d"] = (key, space_to_depth_weight(w.detach()))
        return cached[1]

    def _nnpack(self, x: Tensor) -> bool:
        if not (_NNPACK and x.device.type == "cpu" and x.dtype == torch.float32
                and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_exporting()
                and not (torch.is_grad_enabled()
                         and (x.requires_grad or self.weight.requires_grad))
                and self.dilation == (1, 1) and self.groups == 1
                and self.padding_mode == "zeros" and self.out_channels >= 64):
            return False
        if self.kernel_size == (3, 3):
            return self.stride == (1, 1) and self.padding == (1, 1)
        return (self.kernel_size == (5, 5) and self.stride == (2, 2) and self.padding == (2, 2)
                and self.in_channels >= SPACE_TO_DEPTH_MIN_CHANNELS
                and x.shape[-2] * x.shape[-1] >= SPACE_TO_DEPTH_MIN_PIXELS)


def conv(c_in: int, c_out: int, kernel_size: int = 5, stride: int = 2) -> Conv2d:
    """'Same'-padded convolution; stride 2 halves H and W."""
    return Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2)


def leaky_relu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.01)
