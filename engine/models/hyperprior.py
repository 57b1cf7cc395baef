"""Mean-scale hyperprior (Minnen, Balle, Toderici, NeurIPS 2018) with sub-pixel synthesis.

    x (B, 3, H, W) --g_a--> y (B, M, H/16, W/16) --h_a--> z (B, N, H/64, W/64)
    z_hat --h_s--> (scales, means) (B, M, H/16, W/16) each
    y_hat = round(y - means) + means --g_s--> x_hat (B, 3, H, W)

g_a is Balle's four 5x5 stride-2 convolutions with GDN; g_s and h_s upsample with sub-pixel
convolutions (Theis et al., ICLR 2017) instead of transposed convolutions. H and W must be
multiples of `ALIGN`; the codec pads (and crops) for any other size.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..entropy.cdf import CdfTables
from ..entropy.factorized import FactorizedDensity
from ..entropy.gaussian import GaussianConditional
from .layers import GDN, SubpelConv, conv, leaky_relu

ALIGN = 64
TILE_PIXELS = 1 << 21  # the transforms run in horizontal strips of about this many image pixels
_HALO = 3  # latent rows of context around a strip: more than any transform's receptive radius


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


class MeanScaleHyperprior(nn.Module):
    """The codec's network: transforms, hyper-transforms and both entropy models."""

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.config = config
        N, M = config.N, config.M
        self.g_a = nn.Sequential(
            conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M))
        self.g_s = nn.Sequential(
            SubpelConv(M, N, act="igdn"), SubpelConv(N, N, act="igdn"),
            SubpelConv(N, N, act="igdn"), SubpelConv(N, 3))
        self.h_a = nn.Sequential(
            conv(M, N, 3, 1), LeakyReLU(), conv(N, N), LeakyReLU(), conv(N, N))
        self.h_s = nn.Sequential(
            SubpelConv(N, M, act="lrelu"), SubpelConv(M, M * 3 // 2, act="lrelu"),
            conv(M * 3 // 2, 2 * M, 3, 1))
        self.entropy_z = FactorizedDensity(N)
        self.entropy_y = GaussianConditional()
        # Derived coding state, built on first use; a plain dict so it stays out of state_dict.
        self._cache: dict[str, object] = {}

    def forward(self, x: Tensor, noise: bool = True) -> dict[str, Tensor]:
        """Training/evaluation pass: x (B, 3, H, W) in [0, 1] -> x_hat and both likelihoods."""
        y = self.g_a(x)
        z = self.h_a(y)
        z_hat, z_lik = self.entropy_z(z, noise)
        scales, means = self.h_s(z_hat).chunk(2, dim=1)
        y_hat, y_lik = self.entropy_y(y, scales, means, noise)
        return {"x_hat": self.g_s(y_hat), "y_likelihoods": y_lik, "z_likelihoods": z_lik}

    def aux_loss(self) -> Tensor:
        return self.entropy_z.aux_loss()

    # --- the coding path ---------------------------------------------------------------------

    def analyze(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, 3, H, W) -> (y, z), both float32; g_a runs in strips on large images to bound
        memory. g_a may run under autocast (`engine.precision`); h_a never does, so that z does
        not depend on it."""
        y = _in_strips(self.g_a, x, 16, 1, self.config.M).float()
        with torch.autocast(x.device.type, enabled=False):
            return y, self.h_a(y)

    def hyper_decode(self, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        """z_hat -> (scales, means), both float64.

        The scale-table indexes derive from these scales, and the decoder must derive exactly the
        encoder's indexes. Float32 convolutions differ in the last bits between thread counts,
        batch sizes and devices; in float64 such differences (~1e-15 relative) are far too small
        to move a scale across a table boundary in practice.
        """
        h_s64 = self._cache.get("h_s64")
        if h_s64 is None or next(h_s64.parameters()).device != z_hat.device:
            h_s64 = self._cache["h_s64"] = copy.deepcopy(self.h_s).double().to(z_hat.device)
        # In strips: float64 convolutions unfold their input (9x its size) on the CPU.
        out = _in_strips(h_s64, z_hat.double(), 1, 4, 2 * self.config.M, unit_rows=64)
        scales, means = out.chunk(2, dim=1)
        return scales.contiguous(), means.contiguous()

    def synthesize(self, y_hat: Tensor) -> Tensor:
        """y_hat (B, M, h, w) -> x_hat (B, 3, 16h, 16w) float32, clamped to [0, 1]; g_s runs in
        strips on large images to bound memory."""
        return _in_strips(self._g_s, y_hat, 1, 16, 3).clamp_(0, 1)

    def _g_s(self, y_hat: Tensor) -> Tensor:
        """g_s, whose layers but the last may run under autocast: the last one's rounding goes
        straight into the pixels (on the astronaut photo at quality 3, bfloat16 g_s cost 0.04 dB
        of PSNR with that layer in bfloat16 too, 0.02 dB with it in float32)."""
        h = self.g_s[:-1](y_hat)
        with torch.autocast(y_hat.device.type, enabled=False):
            return self.g_s[-1](h.float())

    def tables(self) -> CdfTables:
        """The coder's tables: z's per-channel tables first, then the Gaussian scale tables."""
        if "tables" not in self._cache:
            self._cache["tables"] = CdfTables.concat(self.entropy_z.tables(),
                                                     self.entropy_y.tables())
        return self._cache["tables"]

    @property
    def num_z_tables(self) -> int:
        return self.config.N

    def invalidate(self) -> None:
        """Forget the derived coding state (tables, float64 h_s) after the weights change."""
        self._cache.clear()
        self.entropy_z.invalidate()


def _in_strips(f: Callable[[Tensor], Tensor], x: Tensor, in_unit: int, out_unit: int,
               out_channels: int, unit_rows: int = 16) -> Tensor:
    """f(x) for a transform mapping every `in_unit` rows of x to `out_unit` rows (one latent
    row, which stands for `unit_rows` image rows: 16 for a row of y, 64 for one of z), computed
    in strips of latent rows when the image is large.

    Each strip carries _HALO latent rows of context on both sides, computed and discarded, so
    every kept row sees its whole receptive field: the result equals f(x) up to float rounding.
    """
    b, _, h, w = x.shape
    latent_rows = h // in_unit
    image_width = w * unit_rows // in_unit
    rows = max(4, TILE_PIXELS // (unit_rows * image_width))
    if latent_rows <= rows:
        return f(x)
    out = x.new_empty(b, out_channels, latent_rows * out_unit, w * out_unit // in_unit)
    for s in range(0, latent_rows, rows):
        a, e = max(0, s - _HALO), min(latent_rows, s + rows + _HALO)
        part = f(x[:, :, a * in_unit : e * in_unit])
        n = min(rows, latent_rows - s)
        out[:, :, s * out_unit : (s + n) * out_unit] = (
            part[:, :, (s - a) * out_unit : (s - a + n) * out_unit])
    return out
