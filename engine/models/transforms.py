"""The analysis and synthesis transforms that model kinds share, and how the codec runs them.

Analysis: Balle's four 5x5 stride-2 convolutions with GDN (Balle, Laparra, Simoncelli, ICLR
2017). Synthesis: its mirror with sub-pixel convolutions and IGDN instead of transposed
convolutions (Theis et al., ICLR 2017). When coding, both run in horizontal strips on large
images (memory), may run under autocast (`engine.precision.transform`), and return float32.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import precision
from .layers import GDN, SubpelConv, conv
from .strips import in_strips


class Analysis(nn.Sequential):
    """x (B, 3, H, W) -> y (B, M, H/16, W/16)."""

    def __init__(self, N: int, M: int) -> None:
        super().__init__(conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M))
        self.M = M

    def analyze(self, x: Tensor) -> Tensor:
        """The coding path's y, float32."""
        with precision.transform(x) as x:
            return in_strips(self, x, 16, 1, self.M).float()


class Synthesis(nn.Sequential):
    """y_hat (B, M, h, w) -> x_hat (B, 3, 16h, 16w)."""

    def __init__(self, N: int, M: int) -> None:
        super().__init__(SubpelConv(M, N, act="igdn"), SubpelConv(N, N, act="igdn"),
                         SubpelConv(N, N, act="igdn"), SubpelConv(N, 3))

    def synthesize(self, y_hat: Tensor) -> Tensor:
        """The decoder's image, float32, clamped to [0, 1]."""
        with precision.transform(y_hat) as y_hat:
            return in_strips(self._pixels, y_hat, 1, 16, 3).clamp_(0, 1)

    def _pixels(self, y_hat: Tensor) -> Tensor:
        """Every layer but the last may run under autocast: the last one's rounding goes
        straight into the pixels (on the astronaut photo at quality 3, bfloat16 cost 0.04 dB of
        PSNR with that layer in bfloat16 too, 0.02 dB with it in float32)."""
        *layers, last = self
        for layer in layers:
            y_hat = layer(y_hat)
        with torch.autocast(y_hat.device.type, enabled=False):
            return last(y_hat.float())
