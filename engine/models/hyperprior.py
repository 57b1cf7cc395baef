"""Mean-scale hyperprior (Minnen, Balle, Toderici, NeurIPS 2018) with sub-pixel synthesis.

    x (B, 3, H, W) --g_a--> y (B, M, H/16, W/16) --h_a--> z (B, N, H/64, W/64)
    z_hat --h_s--> (scales, means) (B, M, H/16, W/16) each
    y_hat = round(y - means) + means --g_s--> x_hat (B, 3, H, W)

g_a and g_s are the shared transforms (`engine.models.transforms`); h_s upsamples with sub-pixel
convolutions (Theis et al., ICLR 2017) instead of transposed convolutions. H and W are multiples
of ALIGN (the codec pads). Coding passes: z (whole, in stream 0), then y.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..entropy.cdf import CdfTables
from ..entropy.factorized import FactorizedDensity
from ..entropy.gaussian import GaussianConditional, scale_bounds
from ..errors import CodecError
from .base import CodingModel, Decoding, Encoded, Latents, Quantizer
from .layers import SubpelConv, conv, leaky_relu
from .strips import in_strips
from .transforms import Analysis, Synthesis


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a mean-scale hyperprior; stored in every weights file."""

    N: int = 128
    M: int = 192

    def to_dict(self) -> dict:
        return asdict(self)


class LeakyReLU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return leaky_relu(x)


class MeanScaleHyperprior(CodingModel):
    """The transforms, hyper-transforms and both entropy models."""

    ARCH = "mean_scale_hyperprior"
    KIND_ID = 1
    CONFIG = ModelConfig
    INTEGER_HYPER = True
    RECTIFIABLE = True

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.config = config
        N, M = config.N, config.M
        self.g_a = Analysis(N, M)
        self.g_s = Synthesis(N, M)
        self.h_a, self.h_s = self.hyper_transforms(N, M)
        self.entropy_z = FactorizedDensity(N)
        self.entropy_y = GaussianConditional()

    @staticmethod
    def hyper_transforms(N: int, M: int) -> tuple[nn.Module, nn.Module]:
        """(h_a: y (B, M, h, w) -> z (B, N, h/4, w/4), h_s: z_hat -> (scales, means) as
        (B, 2M, h, w))."""
        h_a = nn.Sequential(conv(M, N, 3, 1), LeakyReLU(), conv(N, N), LeakyReLU(), conv(N, N))
        h_s = nn.Sequential(SubpelConv(N, M, act="lrelu"), SubpelConv(M, M * 3 // 2, act="lrelu"),
                            conv(M * 3 // 2, 2 * M, 3, 1))
        return h_a, h_s

    def forward(self, x: Tensor, noise: bool = True) -> dict:
        """Training pass: x (B, 3, H, W) in [0, 1] -> {"x_hat", "likelihoods": [y's, z's]}."""
        y = self.g_a(x)
        z = self.h_a(y)
        z_hat, z_lik = self.entropy_z(z, noise)
        scales, means = self.h_s(z_hat).chunk(2, dim=1)
        y_hat, y_lik = self.entropy_y(y, scales, means, noise)
        return {"x_hat": self.g_s(y_hat), "likelihoods": [y_lik, z_lik]}

    def aux_loss(self) -> Tensor:
        return self.entropy_z.aux_loss()

    # --- the coding interface (engine.models.base) --------------------------------------------

    def pass_shapes(self, height: int, width: int) -> list[tuple[int, ...]]:
        hp, wp = self.padded(height), self.padded(width)
        return [(self.config.N, hp // 64, wp // 64), (self.config.M, hp // 16, wp // 16)]

    def analyze(self, x: Tensor) -> Latents:
        """x (B, 3, H, W) -> (y, z), both float32; g_a runs in strips on large images to bound
        memory. g_a may run under autocast (`engine.precision`); h_a never does, so that z does
        not depend on it."""
        y = self.g_a.analyze(x)
        with torch.autocast(x.device.type, enabled=False):
            return y, self.h_a(y)

    def encode_latents(self, latents: Latents, quality: float) -> Encoded:
        y, z = latents
        z_sym, z_hat, (scales, means, bounds) = self.coded_side(z)
        y_sym, y_bits, y_idx = self.entropy_y.quantize(y, scales, means, bounds)
        z_bits = -torch.log2(self.entropy_z.likelihood(z_hat)).flatten(1).sum(1)
        b = y.shape[0]
        return Encoded(
            symbols=[z_sym.flatten(1), y_sym.flatten(1)],
            indexes=[self.entropy_z.indexes(z_sym.shape[1:], z_sym.device).expand(b, -1),
                     y_idx.flatten(1) + self.config.N],
            bits=y_bits + z_bits.to(y_bits), integer=self.integer_hyper is not None)

    def decode(self, batch: int, height: int, width: int, quality: float,
               device: torch.device, integer: bool = False, rectify: bool = False
               ) -> Decoding:
        z_shape, y_shape = self.pass_shapes(height, width)
        z_sym = yield self.entropy_z.indexes(z_shape, device).expand(batch, -1)
        z_hat = self.entropy_z.dequantize(z_sym.to(device).view(batch, *z_shape))
        scales, means, bounds = self.hyper_decode(z_hat, integer)
        y_sym = yield self.entropy_y.indexes(scales, bounds).flatten(1) + self.config.N
        y_hat = self.dequantize_y(y_sym.to(device).view(batch, *y_shape), means)
        if rectify:  # the codec checked that there is a rectifier
            return self.rectifier.synthesize(y_hat, means, scales)
        return self.synthesize(y_hat)

    def decoder_latents(self, latents: Latents) -> tuple[Tensor, Tensor, Tensor]:
        """What the decoder of these latents has before synthesis, as `decode` computes it:
        (y_hat float32, means, scales float64), each (B, M, h, w). Rectifier training data."""
        y, z = latents
        _, _, (scales, means, bounds) = self.coded_side(z)
        y_sym = self.entropy_y.quantize(y, scales, means, bounds)[0]
        return self.dequantize_y(y_sym, means), means, scales

    def tables(self) -> CdfTables:
        """z's per-channel tables first, then the Gaussian scale tables (stored as integers with
        the integer hyper-decoder when there is one)."""
        if self.integer_hyper is not None:
            return self.integer_hyper.tables()
        if "tables" not in self._cache:
            self._cache["tables"] = CdfTables.concat(self.entropy_z.tables(),
                                                     self.entropy_y.tables())
        return self._cache["tables"]

    def relaxed(self, latents: Latents, quality: float, quantize: Quantizer
                ) -> tuple[Tensor, list[Tensor]]:
        y, z = latents
        med = self.entropy_z.medians.view(1, -1, 1, 1)
        z_t = quantize(z - med) + med
        scales, means = self.h_s(z_t).chunk(2, dim=1)
        y_t = quantize(y - means) + means
        likelihoods = [self.entropy_y.likelihood(y_t, scales, means),
                       self.entropy_z.likelihood(z_t)]
        return self.g_s(y_t), likelihoods

    def invalidate(self) -> None:
        super().invalidate()
        self.entropy_z.invalidate()

    # --- the pieces -------------------------------------------------------------------------

    def hyper_decode(self, z_hat: Tensor, integer: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """z_hat -> (scales, means, the bounds of the scale index rule), float64, never under
        autocast.

        The scale-table indexes derive from these scales, and the decoder must derive exactly the
        encoder's indexes. `integer`: the exact integer h_s (`integer_hyper`), the same on every
        machine. Otherwise h_s in float64: float32 convolutions differ in the last bits between
        thread counts, batch sizes and devices; in float64 such differences (~1e-15 relative) are
        far too small to move a scale across a table boundary in practice, but not impossible.
        """
        if integer:
            if self.integer_hyper is None:
                raise CodecError("the stream was coded with an integer hyper-decoder, which "
                                 "these weights lack")
            h_s = self.integer_hyper
        else:
            h_s = self._cache.get("h_s64")
            if h_s is None or next(h_s.parameters()).device != z_hat.device:
                h_s = self._cache["h_s64"] = copy.deepcopy(self.h_s).double().to(z_hat.device)
        with torch.autocast(z_hat.device.type, enabled=False):
            # In strips: float64 convolutions unfold their input (9x its size) on the CPU, and
            # the integer path's int64 intermediates are large too. (Exact for the integers.)
            out = in_strips(h_s, z_hat.double(), 1, 4, 2 * self.config.M, unit_rows=64)
        scales, means = (c.contiguous() for c in out.chunk(2, dim=1))
        bounds = (self.integer_hyper.scale_bounds(z_hat.device) if integer
                  else scale_bounds(scales))
        return scales, means, bounds

    def coded_side(self, z: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor]]:
        """z -> (its symbols, z_hat, `hyper_decode(z_hat)`) as the codec codes them (with the
        integer hyper-decoder when there is one)."""
        z_sym = self.entropy_z.symbols(z)
        z_hat = self.entropy_z.dequantize(z_sym)
        return z_sym, z_hat, self.hyper_decode(z_hat, self.integer_hyper is not None)

    @staticmethod
    def dequantize_y(y_sym: Tensor, means: Tensor) -> Tensor:
        """The decoder's y_hat = symbols + means, float32 (B, M, h, w)."""
        return (y_sym + means).float()

    def synthesize(self, y_hat: Tensor) -> Tensor:
        """y_hat (B, M, h, w) -> x_hat (B, 3, 16h, 16w) float32, clamped to [0, 1]."""
        return self.g_s.synthesize(y_hat)
