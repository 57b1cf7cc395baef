"""Learned factorized density for the hyper-latent z (Balle et al., "Variational image compression
with a scale hyperprior", ICLR 2018, appendix 6.1).

Each channel has its own univariate cumulative c(x) = sigmoid(f_K(... f_1(x))), where every f_k is
a small monotonic map (softplus-positive matrices, tanh gates). Coding uses `round(z - median)`
with per-channel tables over the range between two learned tail quantiles.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cdf import CdfTables, quantize_pmf


class FactorizedDensity(nn.Module):
    """Per-channel density of z (B, C, H, W); `forward` returns the likelihood of every element."""

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3, 3),
                 init_scale: float = 10.0, tail_mass: float = 1e-9,
                 likelihood_bound: float = 1e-9) -> None:
        super().__init__()
        self.channels = channels
        self.tail_mass = tail_mass
        self.likelihood_bound = likelihood_bound
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for k in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[k + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[k + 1], dims[k]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[k + 1], 1) - 0.5))
            if k < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[k + 1], 1)))
        # Lower tail, median, upper tail of every channel, learned by `aux_loss`.
        t = init_scale
        self.quantiles = nn.Parameter(torch.tensor([-t, 0.0, t]).repeat(channels, 1))
        target = math.log(2 / tail_mass - 1)
        self.register_buffer("_target", torch.tensor([-target, 0.0, target]), persistent=False)
        self._tables: CdfTables | None = None

    def _logits(self, x: Tensor) -> Tensor:
        """Logit of the cumulative, for x of shape (C, 1, S), in x's dtype (float64 for tables)."""
        for k, (m, b) in enumerate(zip(self.matrices, self.biases, strict=True)):
            x = torch.matmul(F.softplus(m.to(x)), x) + b.to(x)
            if k < len(self.factors):
                x = x + torch.tanh(self.factors[k].to(x)) * torch.tanh(x)
        return x

    def likelihood(self, v: Tensor) -> Tensor:
        """P(round(v) = v) for (B, C, H, W) values on the (possibly noisy) integer grid."""
        b, c, h, w = v.shape
        x = v.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower = self._logits(x - 0.5)
        upper = self._logits(x + 0.5)
        # Evaluate on the side of the median where the sigmoids are not saturated.
        sign = -torch.sign(lower + upper).detach()
        p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        p = p.reshape(c, b, h, w).permute(1, 0, 2, 3)
        return p.clamp_min(self.likelihood_bound)

    @property
    def medians(self) -> Tensor:
        return self.quantiles[:, 1].detach()

    def forward(self, z: Tensor, noise: bool) -> tuple[Tensor, Tensor]:
        """(z_hat, likelihoods). Training: z_hat rounds with a straight-through gradient around the
        median while the rate is measured on z + U(-0.5, 0.5); inference: both use the rounded z.
        Always float32: rounding and densities are too coarse in half precision (autocast)."""
        with torch.autocast(z.device.type, enabled=False):
            z = z.float()
            med = self.medians.view(1, -1, 1, 1)
            z_hat = z + (torch.round(z - med) + med - z).detach()
            z_rate = z + torch.empty_like(z).uniform_(-0.5, 0.5) if noise else z_hat
            return z_hat, self.likelihood(z_rate)

    def aux_loss(self) -> Tensor:
        """Pulls the three quantiles to where the cumulative logits are -t, 0, t."""
        logits = self._logits(self.quantiles.unsqueeze(1)).squeeze(1)
        return torch.abs(logits - self._target).sum()

    # --- coding ------------------------------------------------------------------------------

    @torch.no_grad()
    def symbols(self, z: Tensor) -> Tensor:
        """int32 coding symbols round(z - median), same shape as z."""
        return torch.round(z - self.medians.view(1, -1, 1, 1)).to(torch.int32)

    def indexes(self, shape: tuple[int, ...], device: torch.device | str = "cpu") -> Tensor:
        """(1, C*H*W) int32 table indexes of z's symbols of shape (C, H, W) in (C, H, W) order:
        each symbol's channel."""
        c, h, w = shape
        channels = torch.arange(c, dtype=torch.int32, device=device)
        return channels.repeat_interleave(h * w).unsqueeze(0)

    def dequantize(self, symbols: Tensor) -> Tensor:
        return symbols.to(torch.float32) + self.medians.view(1, -1, 1, 1).to(symbols.device)

    def tables(self) -> CdfTables:
        """One table per channel, built once (call `invalidate` after changing the weights)."""
        if self._tables is None:
            self._tables = self._build_tables()
        return self._tables

    def invalidate(self) -> None:
        self._tables = None

    @torch.no_grad()
    def _build_tables(self) -> CdfTables:
        q = self.quantiles.detach().double().cpu()
        med = q[:, 1]
        below = torch.ceil(med - q[:, 0]).clamp(0, 1 << 12).long()
        above = torch.ceil(q[:, 2] - med).clamp(0, 1 << 12).long()
        lengths = below + above + 1
        # Evaluate every channel on a common-length grid starting at its own lower end.
        grid = torch.arange(int(lengths.max()), dtype=torch.float64)
        x = (med - below).view(-1, 1, 1) + grid.view(1, 1, -1)
        lower, upper = self._logits(x - 0.5), self._logits(x + 0.5)
        sign = -torch.sign(lower + upper)
        pmf = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))[:, 0]
        freqs, offsets = [], []
        for c in range(self.channels):
            n = int(lengths[c])
            tail = float(torch.sigmoid(lower[c, 0, 0]) + torch.sigmoid(-upper[c, 0, n - 1]))
            freqs.append(quantize_pmf(pmf[c, :n].numpy(), tail))
            offsets.append(-int(below[c]))
        return CdfTables.from_freqs(freqs, offsets)
