"""Channel-conditional entropy model with latent residual prediction (Minnen & Singh, "Channel-wise
autoregressive entropy models for learned image compression", ICIP 2020), one network for every
rate through gain units (Cui, Wang, Gao, Bai, Guo, Li, Feng, "Asymmetric gained deep image
compression with continuous rate adaptation", CVPR 2021), optionally with a checkerboard split
inside each slice (He, Zheng, Sun, Wang, Qin, "Checkerboard context model for efficient learned
image compression", CVPR 2021).

    x (B, 3, H, W) --g_a--> y (B, M, H/16, W/16);  y_s = y * gain(q)
    y_s --h_a--> z * hyper_gain(q) (B, N, H/64, W/64);  z_hat / hyper_gain(q) --h_s--> hyper
    hyper = (scales, means) (B, 2M, H/16, W/16), the mean-scale hyperprior's prediction of y_s
    y_s in S slices of C = M/S channels; slice i:
        (scales_i, means_i) = hyper's slice i, corrected by slice_params[i](hyper, y_hat_<i)
        y_hat_i = round(y_s,i - means_i) + means_i + 0.5 tanh(slice_lrp[i](means, y_hat_<=i))
    y_hat (B, M, H/16, W/16) * inverse_gain(q) --g_s--> x_hat (B, 3, H, W)
    checkerboard: slice i in two halves, anchors (row + column even) first; the non-anchors'
        correction also sees slice_context[i](the slice's decoded anchors, zero elsewhere)

The transforms are the mean-scale hyperprior's (`engine.models.hyperprior`), so its weights start
this model: the corrections start at zero, and then the model equals the hyperprior. Quality q
runs over [1, L] for L trained lambdas; between two levels the gains are interpolated
geometrically (Cui et al., section 3.3). Coding passes: z (whole), then one per slice (two with
the checkerboard: its anchors, then the rest, each (C, n, 1) in row-major order). Every
step that decides a table index or a decoded symbol's value (h_s, the slice corrections, latent
residual prediction, the gains of z) runs in float64 on both sides, as h_s does in the
hyperprior.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from .base import Decoding, Encoded, Latents, Quantizer
from .hyperprior import LeakyReLU, MeanScaleHyperprior
from .layers import conv

MSE_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.013, 0.025, 0.0483)  # quality 1..6


@dataclass(frozen=True)
class ChannelConfig:
    """Architecture of a channel-conditional model; stored in every weights file."""

    N: int = 64
    M: int = 128
    slices: int = 4
    hidden: int = 96  # width of the slice transforms
    checkerboard: bool = False  # two passes per slice, the second conditioned on the first
    lambdas: tuple[float, ...] = field(default=MSE_LAMBDAS)  # quality k trains lambdas[k - 1]

    def __post_init__(self) -> None:
        object.__setattr__(self, "lambdas", tuple(self.lambdas))  # JSON gives a list
        if self.M % self.slices:
            raise ValueError(f"M={self.M} does not split into {self.slices} equal slices")
        if len(self.lambdas) < 2 or list(self.lambdas) != sorted(self.lambdas):
            raise ValueError(f"lambdas must be at least two, increasing: {self.lambdas}")

    def to_dict(self) -> dict:
        return {**asdict(self), "lambdas": list(self.lambdas)}


def _stack(c_in: int, hidden: int, c_out: int) -> nn.Sequential:
    """Three 3x3 convolutions, the last one zero: a correction that starts at nothing."""
    last = conv(hidden, c_out, 3, 1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(conv(c_in, hidden, 3, 1), LeakyReLU(), conv(hidden, hidden, 3, 1),
                         LeakyReLU(), last)


class ChannelConditional(MeanScaleHyperprior):
    """The hyperprior's transforms, slice-wise conditional entropy parameters and gain units."""

    ARCH = "channel_conditional"
    KIND_ID = 4
    INTEGER_HYPER = False  # the slice networks decide tables too; they run in float64
    RECTIFIABLE = False  # not trained with one yet (its decode would pass the slices' params)
    CONFIG = ChannelConfig
    VARIABLE_RATE = True

    def __init__(self, config: ChannelConfig = ChannelConfig()) -> None:
        super().__init__(config)
        M, N, S, hidden = config.M, config.N, config.slices, config.hidden
        C = M // S
        context = 2 * C if config.checkerboard else 0
        self.slice_params = nn.ModuleList(_stack(2 * M + i * C + context, hidden, 2 * C)
                                          for i in range(S))
        # Each non-anchor sees its four nearest anchors and eight more within 5x5 (He et al.).
        self.slice_context = nn.ModuleList(conv(C, context, 5, 1) for _ in range(S)
                                           if config.checkerboard)
        self.slice_lrp = nn.ModuleList(_stack(M + (i + 1) * C, hidden, C) for i in range(S))
        L = len(config.lambdas)
        self.log_gain = nn.Parameter(torch.zeros(L, M))
        self.log_inverse_gain = nn.Parameter(torch.zeros(L, M))
        self.log_hyper_gain = nn.Parameter(torch.zeros(L, N))
        self.log_hyper_inverse_gain = nn.Parameter(torch.zeros(L, N))
        lams = torch.tensor(config.lambdas, dtype=torch.float64)
        self.start_gains(float(lams.log().mean().exp()))

    @torch.no_grad()
    def start_gains(self, reference: float) -> None:
        """Set the gains of level l to sqrt(lambda_l / reference): rate-distortion theory puts
        the quantization step near 1 / sqrt(lambda), and transforms trained at the reference
        lambda (those this model starts from) then see their own latents at that lambda."""
        lams = torch.tensor(self.config.lambdas, dtype=torch.float64)
        start = (0.5 * (lams.log() - math.log(reference))).float().view(-1, 1)
        self.log_gain.copy_(start.expand_as(self.log_gain))
        self.log_inverse_gain.copy_(-start.expand_as(self.log_inverse_gain))

    @property
    def levels(self) -> int:
        return len(self.config.lambdas)

    def lambdas_at(self, quality: Tensor) -> Tensor:
        """The training lambda of each integer quality (B,)."""
        return torch.tensor(self.config.lambdas, device=quality.device)[quality.long() - 1]

    def quality_range(self) -> tuple[float, float]:
        return 1.0, float(self.levels)

    def training_lambda(self, quality: float) -> float:
        """Between two trained levels, geometrically interpolated, like the gains."""
        self.check_quality(quality)
        low = min(int(quality), self.levels - 1)
        a, b = self.config.lambdas[low - 1], self.config.lambdas[low]
        return a * (b / a) ** (quality - low)

    def check_quality(self, quality: float) -> None:
        if not 1 <= quality <= self.levels:
            raise ValueError(f"quality {quality:g} is outside this model's range "
                             f"[1, {self.levels}]")

    def gains(self, quality: Tensor, dtype: torch.dtype = torch.float32
              ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(gain, inverse gain) (B, M, 1, 1) and (hyper gain, hyper inverse gain) (B, N, 1, 1)
        at each quality (B,) in [1, L]: log-linear between the two neighbouring levels."""
        q = quality.to(dtype).clamp(1, self.levels)
        low = q.floor().clamp(max=self.levels - 1)
        t = (q - low).view(-1, 1)
        i = low.long() - 1

        def at(table: Tensor) -> Tensor:
            table = table.to(dtype)
            return torch.exp((1 - t) * table[i] + t * table[i + 1])[:, :, None, None]

        return (at(self.log_gain), at(self.log_inverse_gain), at(self.log_hyper_gain),
                at(self.log_hyper_inverse_gain))

    # --- training ------------------------------------------------------------------------------

    def forward(self, x: Tensor, noise: bool = True, quality: Tensor | None = None) -> dict:
        """Training pass at each image's integer quality (B,) (default: the middle level):
        {"x_hat", "likelihoods": [y's, z's], "lambdas": (B,) the lambda of each image}."""
        if quality is None:
            quality = torch.full((x.shape[0],), (self.levels + 1) // 2, device=x.device)
        gain, inverse, hyper_gain, hyper_inverse = self.gains(quality.to(x.device))
        y_s = self.g_a(x) * gain
        z_hat, z_lik = self.entropy_z(self.h_a(y_s) * hyper_gain, noise)
        hyper = self.h_s(z_hat * hyper_inverse)
        with torch.autocast(x.device.type, enabled=False):
            y_hat, y_lik = self.slice_pass(y_s.float(), hyper.float(), noise)
        return {"x_hat": self.g_s(y_hat * inverse), "likelihoods": [y_lik, z_lik],
                "lambdas": self.lambdas_at(quality.to(x.device))}

    def slice_pass(self, y_s: Tensor, hyper: Tensor, noise: bool) -> tuple[Tensor, Tensor]:
        """(y_hat, likelihoods) of all slices, each slice conditioned on the ones before."""
        done, likelihoods = [], []
        for i in range(self.config.slices):
            y_hat, lik = self._whole_slice(i, y_s[:, self._channels(i)], hyper, done,
                                           lambda y, s, m: self.entropy_y(y, s, m, noise))
            done.append(y_hat + self._lrp(hyper, done + [y_hat], self.slice_lrp[i]))
            likelihoods.append(lik)
        return torch.cat(done, 1), torch.cat(likelihoods, 1)

    # --- the pieces of every path ------------------------------------------------------------

    def _channels(self, i: int) -> slice:
        c = self.config.M // self.config.slices
        return slice(i * c, (i + 1) * c)

    def _slice_params(self, i: int, hyper: Tensor, done: list[Tensor], net: nn.Module,
                      context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Slice i's (scales, means): the hyperprior's, scaled and shifted by the correction
        that the slices before it give (and, with the checkerboard, the context of the slice's
        anchors: None for the anchors themselves)."""
        base_scales, base_means = hyper.chunk(2, 1)
        inputs = [hyper, *done]
        if self.config.checkerboard:
            c = self.config.M // self.config.slices
            inputs.append(hyper.new_zeros(hyper.shape[0], 2 * c, *hyper.shape[2:])
                          if context is None else context)
        d_scale, d_mean = net(torch.cat(inputs, 1)).chunk(2, 1)
        channels = self._channels(i)
        return base_scales[:, channels] * torch.exp(d_scale), base_means[:, channels] + d_mean

    def _whole_slice(self, i: int, y: Tensor, hyper: Tensor, done: list[Tensor],
                     code: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
                     ) -> tuple[Tensor, Tensor]:
        """Slice i's (y_hat, likelihoods) from code(y, scales, means) run on the whole map (the
        differentiable paths): with the checkerboard, once with the anchors' parameters and once
        with the rest's, whose context is the first run's y_hat at the anchors."""
        net = self.slice_params[i]
        y_hat, lik = code(y, *self._slice_params(i, hyper, done, net))
        if not self.config.checkerboard:
            return y_hat, lik
        anchors = _halves(*y.shape[2:], y.device)[0]
        context = self.slice_context[i](y_hat * anchors)
        y_rest, lik_rest = code(y, *self._slice_params(i, hyper, done, net, context))
        return torch.where(anchors, y_hat, y_rest), torch.where(anchors, lik, lik_rest)

    def _halves(self, height: int, width: int, device: torch.device) -> list[Tensor | None]:
        """The positions (h, w) bool of each coding pass of a slice; None: all of them."""
        return _halves(height, width, device) if self.config.checkerboard else [None]

    def _context(self, i: int, y_hat: Tensor, k: int) -> Tensor | None:
        """The context of a slice's pass k in the coding paths: after the anchors (k = 1), the
        slice's context network over y_hat, which then holds the anchors only."""
        return self._exact("slice_context", y_hat.device)[i](y_hat) if k else None

    def _lrp(self, hyper: Tensor, done: list[Tensor], net: nn.Module) -> Tensor:
        """Latent residual prediction of the newest slice (bounded to +-0.5)."""
        means = hyper.chunk(2, 1)[1]
        return 0.5 * torch.tanh(net(torch.cat([means, *done], 1)))

    def _exact(self, name: str, device: torch.device) -> nn.Module:
        """The float64 copy of a submodule that the coding path runs (cached)."""
        key = f"{name}64"
        module = self._cache.get(key)
        if module is None or next(module.parameters()).device != device:
            with torch.inference_mode(False):
                module = copy.deepcopy(getattr(self, name)).double().to(device)
            self._cache[key] = module
        return module

    # --- coding (engine.models.base) -----------------------------------------------------------

    def pass_shapes(self, height: int, width: int) -> list[tuple[int, ...]]:
        (z, (m, h, w)) = super().pass_shapes(height, width)
        c = m // self.config.slices
        if not self.config.checkerboard:
            return [z] + [(c, h, w)] * self.config.slices
        anchors = (h * w + 1) // 2
        return [z] + [(c, anchors, 1), (c, h * w - anchors, 1)] * self.config.slices

    def analyze(self, x: Tensor) -> Latents:
        """x -> (y,): the rate enters later, through the gains, so rate control analyses once."""
        y = super().analyze(x)[0]
        return (y,)

    def encode_latents(self, latents: Latents, quality: float) -> Encoded:
        (y,) = latents
        self.check_quality(quality)
        q = torch.full((y.shape[0],), float(quality), device=y.device)
        gain, _, hyper_gain, _ = self.gains(q)
        y_s = y * gain
        with torch.autocast(y.device.type, enabled=False):
            z_sym = self.entropy_z.symbols(self.h_a(y_s) * hyper_gain)
        z_hat = self.entropy_z.dequantize(z_sym)
        bits = -torch.log2(self.entropy_z.likelihood(z_hat)).flatten(1).sum(1).double()
        symbols = [z_sym.flatten(1)]
        indexes = [self.entropy_z.indexes(z_sym.shape[1:], y.device).expand(y.shape[0], -1)]
        hyper = self._hyper(z_hat, q)
        done: list[Tensor] = []
        halves = self._halves(*y.shape[2:], y.device)
        for i in range(self.config.slices):
            net = self._exact("slice_params", y.device)[i]
            y_i = y_s[:, self._channels(i)]
            y_hat = torch.zeros_like(y_i, dtype=torch.float64)
            for k, half in enumerate(halves):
                scales, means = self._slice_params(i, hyper, done, net,
                                                   self._context(i, y_hat, k))
                means = _pick(means, half)
                sym, half_bits, idx = self.entropy_y.quantize(_pick(y_i, half),
                                                              _pick(scales, half), means)
                symbols.append(sym.flatten(1))
                indexes.append(idx.flatten(1) + self.config.N)
                bits = bits + half_bits
                y_hat = y_hat + _put(sym.double() + means, half, y_hat)
            done.append(self._decoded(i, y_hat, hyper, done))
        return Encoded(symbols, indexes, bits)

    def decode(self, batch: int, height: int, width: int, quality: float,
               device: torch.device, integer: bool = False, rectify: bool = False
               ) -> Decoding:
        self.check_quality(quality)
        shapes = self.pass_shapes(height, width)
        q = torch.full((batch,), float(quality), device=device)
        z_sym = yield self.entropy_z.indexes(shapes[0], device).expand(batch, -1)
        hyper = self._hyper(self.entropy_z.dequantize(z_sym.to(device).view(batch, *shapes[0])), q)
        h, w = hyper.shape[2:]
        done: list[Tensor] = []
        halves = self._halves(h, w, device)
        for i in range(self.config.slices):
            net = self._exact("slice_params", device)[i]
            y_hat = hyper.new_zeros(batch, self.config.M // self.config.slices, h, w)
            for k, half in enumerate(halves):
                scales, means = self._slice_params(i, hyper, done, net,
                                                   self._context(i, y_hat, k))
                means = _pick(means, half)
                sym = yield self.entropy_y.indexes(_pick(scales, half)).flatten(1) + self.config.N
                y_hat = y_hat + _put(sym.to(device).view(means.shape).double() + means, half,
                                     y_hat)
            done.append(self._decoded(i, y_hat, hyper, done))
        inverse = self.gains(q, torch.float64)[1]
        return self.synthesize((torch.cat(done, 1) * inverse).float())

    def _hyper(self, z_hat: Tensor, quality: Tensor) -> Tensor:
        """h_s in float64 of z_hat / hyper gain: (B, 2M, h, w), the (scales, means) of y_s."""
        hyper_inverse = self.gains(quality, torch.float64)[3]
        return torch.cat(self.hyper_decode(z_hat.double() * hyper_inverse)[:2], 1)

    def _decoded(self, i: int, y_hat: Tensor, hyper: Tensor, done: list[Tensor]) -> Tensor:
        """Slice i's decoded y_hat (float64, symbols + means) with its latent residual
        prediction."""
        return y_hat + self._lrp(hyper, done + [y_hat], self._exact("slice_lrp",
                                                                   y_hat.device)[i])

    def relaxed(self, latents: Latents, quality: float, quantize: Quantizer
                ) -> tuple[Tensor, list[Tensor]]:
        (y,) = latents
        self.check_quality(quality)
        q = torch.full((y.shape[0],), float(quality), device=y.device)
        gain, inverse, hyper_gain, hyper_inverse = self.gains(q)
        y_s = y * gain
        z = self.h_a(y_s) * hyper_gain
        med = self.entropy_z.medians.view(1, -1, 1, 1)
        z_t = quantize(z - med) + med
        hyper = self.h_s(z_t * hyper_inverse)
        done, likelihoods = [], [self.entropy_z.likelihood(z_t)]

        def code(y_i: Tensor, scales: Tensor, means: Tensor) -> tuple[Tensor, Tensor]:
            y_t = quantize(y_i - means) + means
            return y_t, self.entropy_y.likelihood(y_t, scales, means)

        for i in range(self.config.slices):
            y_t, lik = self._whole_slice(i, y_s[:, self._channels(i)], hyper, done, code)
            likelihoods.append(lik)
            done.append(y_t + self._lrp(hyper, done + [y_t], self.slice_lrp[i]))
        return self.g_s(torch.cat(done, 1) * inverse), likelihoods


def _halves(height: int, width: int, device: torch.device) -> list[Tensor]:
    """The checkerboard's two halves of an (h, w) map: anchors (row + column even), the rest."""
    rows = torch.arange(height, device=device)[:, None]
    anchors = (rows + torch.arange(width, device=device)) % 2 == 0
    return [anchors, ~anchors]


def _pick(t: Tensor, half: Tensor | None) -> Tensor:
    """t (B, C, h, w) at a pass's positions: (B, C, n, 1) in row-major order (None: all, as is)."""
    return t if half is None else t[:, :, half].unsqueeze(-1)


def _put(values: Tensor, half: Tensor | None, like: Tensor) -> Tensor:
    """The inverse of `_pick`: values at those positions of a map shaped like `like`, 0
    elsewhere."""
    if half is None:
        return values
    out = torch.zeros_like(like)
    out[:, :, half] = values.squeeze(-1)
    return out
