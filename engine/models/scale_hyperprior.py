"""Scale hyperprior (Balle, Minnen, Singh, Hwang, Johnston, "Variational image compression with a
scale hyperprior", ICLR 2018): CompressAI's bmshj2018-hyperprior, with sub-pixel synthesis.

    x (B, 3, H, W) --g_a--> y (B, M, H/16, W/16);  |y| --h_a--> z (B, N, H/64, W/64)
    z_hat --h_s--> scales (B, M, H/16, W/16)
    y_hat = round(y) --g_s--> x_hat (B, 3, H, W)

y's Gaussian conditional has zero means, so this is the mean-scale hyperprior
(`engine.models.hyperprior`) with the means fixed at zero: the same g_a, g_s, entropy models,
coding passes and refinement, with other hyper-transforms. h_a sees |y| and uses ReLU; h_s uses
ReLU, ends in one, and appends M zero channels as the means, so that y_hat = round(y - 0) + 0 is
exactly this model's rounding. H and W are multiples of ALIGN (the codec pads).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .hyperprior import MeanScaleHyperprior, ModelConfig
from .layers import SubpelConv, conv


class OnMagnitudes(nn.Sequential):
    """The layers applied to |x|, x (B, C, H, W)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.abs())


class WithZeroMeans(nn.Sequential):
    """The layers' output s (B, M, H, W) followed by M zero channels: (B, 2M, H, W), read as
    (scales, means) like the mean-scale hyperprior's h_s output."""

    def forward(self, x: Tensor) -> Tensor:
        scales = super().forward(x)
        return torch.cat([scales, torch.zeros_like(scales)], dim=1)


class ScaleHyperprior(MeanScaleHyperprior):
    """The mean-scale hyperprior's coding with the scale hyperprior's h_a and h_s. Layer indexes
    inside h_a and h_s are CompressAI's (`engine.zoo.compressai` maps its checkpoints)."""

    ARCH = "scale_hyperprior"
    KIND_ID = 2
    INTEGER_HYPER = False  # its h_s ends in a ReLU, not what FakeIntegerHyper models

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__(config or ModelConfig())

    @staticmethod
    def hyper_transforms(N: int, M: int) -> tuple[nn.Module, nn.Module]:
        h_a = OnMagnitudes(conv(M, N, 3, 1), nn.ReLU(), conv(N, N), nn.ReLU(), conv(N, N))
        h_s = WithZeroMeans(SubpelConv(N, N), nn.ReLU(), SubpelConv(N, N), nn.ReLU(),
                            conv(N, M, 3, 1), nn.ReLU())
        return h_a, h_s
