"""Compressive autoencoder (Theis, Shi, Cunningham, Huszar, "Lossy image compression with
compressive autoencoders", ICLR 2017), with its variable rate by per-channel scales.

    x (B, 3, H, W) in [0, 1] --normalise, f--> y (B, C, H/8, W/8), channels >= `enabled` zero
    code at quality q: round(y * lambda(q)), lambda (C,) a power of 2^(1/8) per channel
    z_hat = code / lambda(q) --g, denormalise, clip--> x_hat (B, 3, H, W)

f: mirror-padded 5x5 stride-2 convolutions 3 -> 64 -> 128, three residual blocks (two 3x3
convolutions of 128 each), a 5x5 stride-2 convolution to C; leaky ReLU between. g: sub-pixel
convolutions (3x3 to 4x the channels, pixel shuffle by 2; the fused epilogue
`nicengine_kernels.dispatch.subpel` on the GPU): C -> 128, three residual blocks, 128 -> 64, 64 ->
3. Normalisation is a fixed per-channel affine map. The code of every channel has its own Gaussian
scale mixture (`engine.entropy.gsm`), trained once and frozen.

Variable rate (section 2.4 of the paper): `log2_scales` (R, C) holds the log2 of every
channel's scale for each of R trained rate-distortion lambdas (`config.lambdas`); the transforms
and mixtures are trained at `lambdas[base]`, then only the scales are fine-tuned. Quality q in
[1, R] interpolates the log2 scales linearly between rates floor(q) and floor(q) + 1 and snaps
each to the grid k / GRID (`grid_points`, float64 on the CPU: encoder and decoder derive the
same k from the header's quality). Every (channel, k) in the trained range has its own CDF
table, the channel's mixture with every sigma times 2^(k / GRID), so the tables do not depend
on the quality and the header's quality says which scales coded the image. One coding pass: the
enabled channels' codes, (C', H/8, W/8) in (C, H, W) order, split across streams.

Incremental training (section 3.3): `mask` enables the first channels only; training starts with
two and enables the next when the loss stops improving (`engine.train.cae`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from .. import precision
from ..entropy.cdf import TOTAL, CdfTables
from ..entropy.gsm import GaussianScaleMixture
from .base import CodingModel, Decoding, Encoded, Latents, Quantizer
from .layers import Conv2d, SubpelConv, leaky_relu

GRID = 8  # scale grid steps per octave: lambda = 2^(k / GRID)
MEAN = (0.485, 0.456, 0.406)  # the fixed normalisation (ImageNet's RGB statistics)
STD = (0.229, 0.224, 0.225)
# Training lambdas (loss = bpp + lambda 255^2 MSE) of the shipped rates, in increasing rate.
CAE_LAMBDAS = (0.0003, 0.0008, 0.002, 0.005, 0.01, 0.025)


@dataclass(frozen=True)
class CaeConfig:
    """Architecture of a CAE; stored in every weights file. The paper's is the default."""

    channels: int = 96  # C, the code's channels
    width: int = 128  # the residual blocks' channels
    width1: int = 64  # the outer layers' channels
    mixtures: int = 6
    lambdas: tuple[float, ...] = field(default=CAE_LAMBDAS)
    base: int = 4  # the transforms train at lambdas[base]

    def __post_init__(self) -> None:
        object.__setattr__(self, "lambdas", tuple(self.lambdas))  # JSON gives a list
        if len(self.lambdas) < 2 or list(self.lambdas) != sorted(self.lambdas):
            raise ValueError(f"lambdas must be at least two, increasing: {self.lambdas}")
        if not 0 <= self.base < len(self.lambdas):
            raise ValueError(f"base {self.base} is not an index of lambdas {self.lambdas}")

    def to_dict(self) -> dict:
        return {**asdict(self), "lambdas": list(self.lambdas)}


class Residual(nn.Module):
    """x + conv(lrelu(conv(x))), 3x3 convolutions of `channels`, shape-preserving."""

    def __init__(self, channels: int, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.conv1 = Conv2d(channels, channels, 3, padding=1, padding_mode=padding_mode)
        self.conv2 = Conv2d(channels, channels, 3, padding=1, padding_mode=padding_mode)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(leaky_relu(self.conv1(x)))


class ChannelMask(nn.Module):
    """Incremental training's mask: the code's first `enabled` channels are on. The plateau
    tracker (`best`, the window's loss sum and step count) lives here too, so that a resumed
    run grows the mask exactly as an uninterrupted one."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("enabled", torch.tensor(channels))
        self.register_buffer("best", torch.tensor(math.inf, dtype=torch.float64))
        self.register_buffer("window_loss", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("window_steps", torch.tensor(0))

    @property
    def count(self) -> int:
        return int(self.enabled)

    def on(self, device: torch.device) -> Tensor:
        """(1, C, 1, 1) float: 1 for the enabled channels."""
        return (torch.arange(self.channels, device=device) < self.count).float().view(1, -1, 1, 1)

    @torch.no_grad()
    def observe(self, loss: float, window: int, tolerance: float, grow: int) -> bool:
        """Add a training step's loss; at the end of every `window` steps, enable `grow` more
        channels unless the window's mean loss improved on the best by `tolerance` (relative).
        True when the mask grew."""
        self.window_loss += loss
        self.window_steps += 1
        if window <= 0 or int(self.window_steps) < window or self.count >= self.channels:
            return False
        mean = float(self.window_loss) / int(self.window_steps)
        self.window_loss.zero_()
        self.window_steps.zero_()
        improved = mean < float(self.best) * (1 - tolerance)
        self.best.fill_(min(mean, float(self.best)) if improved else mean)
        if not improved:
            self.enabled.fill_(min(self.count + grow, self.channels))
        return not improved


def round_ste(v: Tensor) -> Tensor:
    """round(v) forward, identity backward (the paper's straight-through quantization)."""
    return v + (torch.round(v) - v).detach()


def clip_ste(x: Tensor) -> Tensor:
    """x clipped to [0, 1] forward, derivative 1 everywhere (as the paper's clipping)."""
    return x + (x.clamp(0, 1) - x).detach()


class CompressiveAutoencoder(CodingModel):
    """f, g, the code's mixtures, the per-rate channel scales and the channel mask."""

    ARCH = "compressive_autoencoder"
    KIND_ID = 5
    CONFIG = CaeConfig
    ALIGN = 8
    MIN_SIDE = 16  # f's last convolution reflects 2 pixels of its input, (H/4, W/4): at least 3
    WHOLE_PASSES = 0
    VARIABLE_RATE = True

    def __init__(self, config: CaeConfig = CaeConfig()) -> None:
        super().__init__()
        self.config = config
        C, W, W1 = config.channels, config.width, config.width1
        mirror = {"padding": 2, "padding_mode": "reflect"}
        self.f_in = nn.Sequential(nn.Conv2d(3, W1, 5, 2, **mirror), nn.LeakyReLU(0.01),
                                  nn.Conv2d(W1, W, 5, 2, **mirror), nn.LeakyReLU(0.01))
        self.f_res = nn.Sequential(*(Residual(W, "reflect") for _ in range(3)))
        self.f_out = nn.Conv2d(W, C, 5, 2, **mirror)
        self.g_in = SubpelConv(C, W, act="lrelu")
        self.g_res = nn.Sequential(*(Residual(W) for _ in range(3)))
        self.g_out = nn.Sequential(SubpelConv(W, W1, act="lrelu"), SubpelConv(W1, 3))
        self.entropy = GaussianScaleMixture(C, config.mixtures)
        self.mask = ChannelMask(C)
        self.log2_scales = nn.Parameter(torch.zeros(len(config.lambdas), C))
        self.start_scales()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def start_scales(self) -> None:
        """Every rate's log2 scales at 0.5 log2(lambda_r / lambda_base): rate-distortion theory
        puts the quantization step near 1 / sqrt(lambda), and the base rate's scales are 1."""
        lams = torch.tensor(self.config.lambdas, dtype=torch.float64)
        start = 0.5 * torch.log2(lams / lams[self.config.base])
        self.log2_scales.copy_(start.float().view(-1, 1).expand_as(self.log2_scales))

    # --- the transforms ------------------------------------------------------------------------

    def f(self, x: Tensor) -> Tensor:
        """x (B, 3, H, W) in [0, 1], H and W multiples of 8 -> y (B, C, H/8, W/8), masked."""
        y = self.f_out(self.f_res(self.f_in((x - self.mean) / self.std)))
        return y * self.mask.on(y.device)

    def g(self, z_hat: Tensor) -> Tensor:
        """z_hat (B, C, h, w) -> x_hat (B, 3, 8h, 8w), unclipped."""
        return self.g_out(self.g_res(self.g_in(z_hat))) * self.std + self.mean

    # --- rates ---------------------------------------------------------------------------------

    @property
    def rates(self) -> int:
        return len(self.config.lambdas)

    def quality_range(self) -> tuple[float, float]:
        return 1.0, float(self.rates)

    def check_quality(self, quality: float) -> None:
        if not 1 <= quality <= self.rates:
            raise ValueError(f"quality {quality:g} is outside this model's range [1, {self.rates}]")

    def training_lambda(self, quality: float) -> float:
        """Between two trained rates, geometrically interpolated (as the scales)."""
        self.check_quality(quality)
        low = min(int(quality), self.rates - 1)
        a, b = self.config.lambdas[low - 1], self.config.lambdas[low]
        return a * (b / a) ** (quality - low)

    def grid_points(self, quality: float) -> np.ndarray:
        """(C,) int64 k: channel c codes at scale 2^(k_c / GRID) at this quality. float64
        linear interpolation of the log2 scales and round-half-up, in numpy on the CPU: the
        same integers wherever the weights are."""
        self.check_quality(quality)
        table = self.log2_scales.detach().cpu().double().numpy()
        low = min(int(quality), self.rates - 1)
        t = float(quality) - low
        log2 = (1 - t) * table[low - 1] + t * table[low]
        return np.floor(log2 * GRID + 0.5).astype(np.int64)

    def scales(self, quality: float, device: torch.device) -> Tensor:
        """(1, C, 1, 1) float32 lambda(quality) on the grid (powers of two are exact)."""
        k = torch.from_numpy(self.grid_points(quality)).double() / GRID
        return torch.exp2(k).float().view(1, -1, 1, 1).to(device)

    def training_scales(self, rate: Tensor) -> Tensor:
        """(B, C, 1, 1) scales of each image's trained rate index (B,), snapped to the grid
        forward and continuous backward (fine-tuning sees the scales coding uses)."""
        log2 = self.log2_scales[rate.long()]
        snapped = torch.floor(log2 * GRID + 0.5) / GRID
        return torch.exp2(log2 + (snapped - log2).detach())[:, :, None, None]

    # --- training ------------------------------------------------------------------------------

    def forward(self, x: Tensor, rate: Tensor | None = None, quantizer: str = "ste",
                bound: bool = True) -> dict:
        """Training pass at each image's trained rate index (B,) (default: the base rate):
        {"x_hat" clipped, "likelihoods": [the code's], "lambdas" (B,)}. quantizer "ste":
        straight-through rounding, rate -log2 q(round(v) + u) (the paper's bound); "noise":
        v + u for both the decoder and the rate (the alternative the paper's review asks
        about). bound=False (with "ste"): the rate is the exact probability of the rounded
        code, what the coder spends; fine-tuning the scales under a frozen mixture needs it,
        as the bound overstates the cost of codes whose scaled mixture is narrower than a bin,
        and so keeps the lower rates' scales from shrinking."""
        if rate is None:
            rate = torch.full((x.shape[0],), self.config.base, device=x.device)
        scale = self.training_scales(rate.to(x.device))
        v = self.f(x).float() * scale
        noise = torch.empty_like(v).uniform_(-0.5, 0.5)
        if quantizer == "ste":
            z = round_ste(v)
            q = (self.entropy.density(z + noise, scale) if bound
                 else self.entropy.likelihood(z, scale))
        elif quantizer == "noise":
            z = v + noise
            q = self.entropy.density(z, scale)
        else:
            raise ValueError(f"quantizer must be 'ste' or 'noise', not {quantizer!r}")
        on = self.mask.on(x.device)
        lambdas = torch.tensor(self.config.lambdas, device=x.device)[rate.long()]
        return {"x_hat": clip_ste(self.g(z / scale)), "likelihoods": [q * on + (1 - on)],
                "lambdas": lambdas}

    # --- coding (engine.models.base) -----------------------------------------------------------

    @classmethod
    def padded(cls, n: int) -> int:
        """n rounded up to a multiple of ALIGN, and to at least MIN_SIDE (sides of 8 or less
        could never be coded before, so no earlier stream pads differently)."""
        return max(cls.MIN_SIDE, super().padded(n))

    def pass_shapes(self, height: int, width: int) -> list[tuple[int, ...]]:
        return [(self.mask.count, self.padded(height) // 8, self.padded(width) // 8)]

    def analyze(self, x: Tensor) -> Latents:
        """x (B, 3, H, W) -> (y,) float32; the rate enters later, through the scales."""
        with precision.transform(x) as x:
            return (self.f(x).float(),)

    def encode_latents(self, latents: Latents, quality: float) -> Encoded:
        (y,) = latents
        n = self.mask.count
        symbols = torch.round(y[:, :n] * self.scales(quality, y.device)[:, :n]).to(torch.int32)
        indexes = self._indexes(quality, symbols.shape[2:], y.device).expand(y.shape[0], -1)
        symbols = symbols.flatten(1)
        return Encoded([symbols], [indexes], self._bits(symbols, indexes))

    def decode(self, batch: int, height: int, width: int, quality: float,
               device: torch.device, integer: bool = False, rectify: bool = False) -> Decoding:
        (shape,) = self.pass_shapes(height, width)
        symbols = yield self._indexes(quality, shape[1:], device).expand(batch, -1)
        scale = self.scales(quality, device)
        z_hat = torch.zeros(batch, self.config.channels, *shape[1:], device=device)
        z_hat[:, : shape[0]] = symbols.to(device).view(batch, *shape).float()
        return self.synthesize(z_hat / scale)

    def synthesize(self, z_hat: Tensor) -> Tensor:
        """z_hat (B, C, h, w) -> x_hat (B, 3, 8h, 8w) float32, clamped to [0, 1]."""
        with precision.transform(z_hat) as z_hat:
            return self.g(z_hat).float().clamp(0, 1)

    def tables(self) -> CdfTables:
        """For each enabled channel c, one table per grid point k from the lowest to the highest
        of its trained rates' (`table_layout`)."""
        if "tables" not in self._cache:
            first, count, _ = self.table_layout()
            channels = torch.repeat_interleave(torch.arange(len(count)), torch.from_numpy(count))
            k = torch.cat([torch.arange(a, a + n) for a, n in zip(first, count, strict=True)])
            self._cache["tables"] = self.entropy.tables(channels,
                                                        torch.exp2(k.double() / GRID))
        return self._cache["tables"]

    def table_layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(first grid point, number of grid points, first table) of each enabled channel:
        interpolated qualities snap between their two rates' points, so these cover them all.
        Built once, like the tables (cached until `invalidate`)."""
        if "layout" not in self._cache:
            n = self.mask.count
            points = np.stack([self.grid_points(q) for q in range(1, self.rates + 1)])[:, :n]
            first = points.min(0)
            count = points.max(0) - first + 1
            self._cache["layout"] = first, count, np.concatenate([[0], np.cumsum(count)[:-1]])
        return self._cache["layout"]

    def _indexes(self, quality: float, hw: tuple[int, ...], device: torch.device) -> Tensor:
        """(1, C' h w) int32: each symbol's table, its channel's at this quality's grid point."""
        first, _, start = self.table_layout()
        k = self.grid_points(quality)[: len(first)]
        table = torch.from_numpy((start + k - first).astype(np.int32))
        return table.repeat_interleave(math.prod(hw)).unsqueeze(0).to(device)

    def _bits(self, symbols: Tensor, indexes: Tensor) -> Tensor:
        """(B,) the coded size of each image's symbols under their tables (bypass bits of
        escaped values left out)."""
        cdfs, sizes, offsets = self._table_tensors(symbols.device)
        idx = indexes.long()
        size, offset = sizes[idx], offsets[idx]
        s = symbols.long() - offset
        s = torch.where((s >= 0) & (s < size - 1), s, size - 1)  # out of range: the escape
        freq = cdfs[idx, s + 1] - cdfs[idx, s]
        return -torch.log2(freq.double() / TOTAL).sum(1)

    def _table_tensors(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """The tables' CDFs, sizes and offsets (int64) on `device`, copied there once."""
        key = f"table_tensors@{device}"
        if key not in self._cache:
            t = self.tables()
            self._cache[key] = tuple(torch.from_numpy(a).to(device).long()
                                     for a in (t.cdfs, t.sizes, t.offsets))
        return self._cache[key]

    def relaxed(self, latents: Latents, quality: float, quantize: Quantizer
                ) -> tuple[Tensor, list[Tensor]]:
        (y,) = latents
        scale = self.scales(quality, y.device)
        v = quantize(y * scale)
        on = self.mask.on(y.device)
        lik = self.entropy.likelihood(v, scale) * on + (1 - on)
        return self.g(v / scale), [lik]
