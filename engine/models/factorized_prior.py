"""Factorized prior (Balle, Laparra, Simoncelli, "End-to-end optimized image compression", ICLR
2017): CompressAI's bmshj2018-factorized (the baseline of Balle et al., ICLR 2018), with sub-pixel
synthesis.

    x (B, 3, H, W) --g_a--> y (B, M, H/16, W/16)
    y_hat = round(y - median) + median --g_s--> x_hat (B, 3, H, W)

y is coded with a learned factorized density per channel (`engine.entropy.factorized`) and no
side information: one coding pass, split across the streams (WHOLE_PASSES = 0). g_a and g_s are
the shared transforms (`engine.models.transforms`; N is their inner width). H and W are
multiples of ALIGN = 16, g_a's stride (the codec pads).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..entropy.cdf import CdfTables
from ..entropy.factorized import FactorizedDensity
from .base import CodingModel, Decoding, Encoded, Latents, Quantizer
from .hyperprior import ModelConfig
from .transforms import Analysis, Synthesis


class FactorizedPrior(CodingModel):
    """The transforms and y's factorized density."""

    ARCH = "factorized_prior"
    KIND_ID = 3
    CONFIG = ModelConfig
    ALIGN = 16
    WHOLE_PASSES = 0
    RECTIFIABLE = True

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        N, M = self.config.N, self.config.M
        self.g_a = Analysis(N, M)
        self.g_s = Synthesis(N, M)
        self.entropy_y = FactorizedDensity(M)

    def forward(self, x: Tensor, noise: bool = True) -> dict:
        """Training pass: x (B, 3, H, W) in [0, 1] -> {"x_hat", "likelihoods": [y's]}."""
        y_hat, y_lik = self.entropy_y(self.g_a(x), noise)
        return {"x_hat": self.g_s(y_hat), "likelihoods": [y_lik]}

    def aux_loss(self) -> Tensor:
        return self.entropy_y.aux_loss()

    # --- the coding interface (engine.models.base) --------------------------------------------

    def pass_shapes(self, height: int, width: int) -> list[tuple[int, ...]]:
        return [(self.config.M, self.padded(height) // 16, self.padded(width) // 16)]

    def analyze(self, x: Tensor) -> Latents:
        """x (B, 3, H, W) -> (y,), float32; g_a runs in strips on large images and may run
        under autocast (`engine.precision`)."""
        return (self.g_a.analyze(x),)

    def encode_latents(self, latents: Latents, quality: float) -> Encoded:
        (y,) = latents
        y_sym = self.entropy_y.symbols(y)
        return Encoded(
            symbols=[y_sym.flatten(1)],
            indexes=[self.entropy_y.indexes(y_sym.shape[1:], y.device).expand(y.shape[0], -1)],
            bits=self.bits(y_sym))

    def decode(self, batch: int, height: int, width: int, quality: float,
               device: torch.device, integer: bool = False, rectify: bool = False
               ) -> Decoding:
        (y_shape,) = self.pass_shapes(height, width)
        y_sym = yield self.entropy_y.indexes(y_shape, device).expand(batch, -1)
        y_hat = self.entropy_y.dequantize(y_sym.to(device).view(batch, *y_shape))
        if rectify:  # the codec checked that there is a rectifier
            return self.rectifier.synthesize(y_hat, *self._rectifier_side(y_hat))
        return self.synthesize(y_hat)

    def decoder_latents(self, latents: Latents) -> tuple[Tensor, Tensor, Tensor]:
        y_hat = self.entropy_y.dequantize(self.entropy_y.symbols(latents[0]))
        return (y_hat, *self._rectifier_side(y_hat))

    def _rectifier_side(self, y_hat: Tensor) -> tuple[Tensor, Tensor]:
        """A rectifier's (means, scales) for y_hat: the channels' medians (the rounding's
        offsets) and ones (there is no scale: one density per channel)."""
        means = self.entropy_y.medians.view(1, -1, 1, 1).to(y_hat).expand_as(y_hat)
        return means, torch.ones_like(y_hat)

    def bits(self, y_sym: Tensor) -> Tensor:
        """(B,) estimated bits of each image's symbols y_sym (B, M, h, w). A symbol's likelihood
        depends on its value and channel only, so when the range of values present is shorter
        than a channel's symbols it is evaluated once per channel and value, and gathered (the
        295k symbols of a Kodak image take about 0.5 s element by element on a 2-core CPU)."""
        b, c = y_sym.shape[:2]
        lo, hi = int(y_sym.min()), int(y_sym.max())
        if hi - lo + 1 >= y_sym[:, 0].numel():
            return -torch.log2(self.entropy_y.likelihood(self.entropy_y.dequantize(y_sym))
                               ).flatten(1).sum(1)
        grid = torch.arange(lo, hi + 1, device=y_sym.device).expand(1, c, 1, -1)
        table = -torch.log2(self.entropy_y.likelihood(self.entropy_y.dequantize(grid)))[0, :, 0]
        per_channel = (y_sym - lo).long().transpose(0, 1).reshape(c, -1)  # (M, B h w)
        return table.gather(1, per_channel).view(c, b, -1).sum((0, 2))

    def tables(self) -> CdfTables:
        """One table per channel of y."""
        return self.entropy_y.tables()

    def relaxed(self, latents: Latents, quality: float, quantize: Quantizer
                ) -> tuple[Tensor, list[Tensor]]:
        (y,) = latents
        med = self.entropy_y.medians.view(1, -1, 1, 1)
        y_t = quantize(y - med) + med
        return self.g_s(y_t), [self.entropy_y.likelihood(y_t)]

    def invalidate(self) -> None:
        super().invalidate()
        self.entropy_y.invalidate()

    def synthesize(self, y_hat: Tensor) -> Tensor:
        """y_hat (B, M, h, w) -> x_hat (B, 3, 16h, 16w) float32, clamped to [0, 1]."""
        return self.g_s.synthesize(y_hat)
