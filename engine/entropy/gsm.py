"""Gaussian scale mixture for the code of a compressive autoencoder (Theis, Shi, Cunningham,
Huszar, "Lossy image compression with compressive autoencoders", ICLR 2017, section 2.3).

Every channel c has its own zero-mean density, shared across space:

    q_c(v) = sum_k pi_ck N(v; 0, sigma_ck^2),  pi_c = softmax(log_weights_c),
    sigma_ck = exp(-log_precisions_ck / 2),   K = 6 scales by default.

A code scaled by lambda (round(f(x) * lambda), the CAE's variable rate) has the density with
every sigma multiplied by lambda, so one mixture serves every scale: `scale` arguments are
per-channel lambdas broadcast against the values. Training bounds the rate of the rounded code
by the continuous density, -log2 q(round(v) + u) with u ~ U[-0.5, 0.5) (`density`); coding
uses the exact probability of each integer, P(n) = integral of q over [n - 0.5, n + 0.5]
(`likelihood`), discretised into one CDF table per (channel, scale) by `tables`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .cdf import CdfTables, quantize_pmf
from .gaussian import LIKELIHOOD_MIN, MAX_HALF_WIDTH

TAIL_SIGMAS = 6.11  # a table spans +-ceil(6.11 sigma_max): ~1e-9 of a Gaussian lies beyond


class GaussianScaleMixture(nn.Module):
    """Per-channel GSM of a code (B, C, H, W). `scale` arguments are (B or 1, C, 1, 1)."""

    def __init__(self, channels: int, mixtures: int = 6) -> None:
        super().__init__()
        self.channels = channels
        self.log_weights = nn.Parameter(torch.zeros(channels, mixtures))
        # Scales from 0.5 to 16 at the start: the code's spread is unknown until it trains.
        sigmas = torch.logspace(math.log10(0.5), math.log10(16.0), mixtures)
        self.log_precisions = nn.Parameter((-2 * sigmas.log()).repeat(channels, 1))

    def _sigmas(self, scale: Tensor) -> Tensor:
        """(B or 1, C, 1, 1, K) mixture scales of the code at `scale`."""
        sigma = torch.exp(-0.5 * self.log_precisions.to(scale.dtype))
        return scale.unsqueeze(-1) * sigma.view(1, self.channels, 1, 1, -1)

    def _log_pi(self, dtype: torch.dtype) -> Tensor:
        return torch.log_softmax(self.log_weights.to(dtype), -1).view(1, self.channels, 1, 1, -1)

    def density(self, v: Tensor, scale: Tensor) -> Tensor:
        """q(v) at every element of v (B, C, H, W): the continuous density (training's bound)."""
        sigma = self._sigmas(scale)
        t = v.unsqueeze(-1) / sigma
        log_q = self._log_pi(v.dtype) - 0.5 * t.square() - sigma.log() - 0.5 * math.log(2 * math.pi)
        return torch.logsumexp(log_q, -1).exp()

    def likelihood(self, v: Tensor, scale: Tensor) -> Tensor:
        """P(round(v) = v) for v on the (possibly relaxed) integer grid, at least
        LIKELIHOOD_MIN; differentiable (latent refinement)."""
        sigma = self._sigmas(scale)
        a = v.abs().unsqueeze(-1)  # symmetric: evaluate where the normal CDF is not saturated
        mass = torch.special.ndtr((0.5 - a) / sigma) - torch.special.ndtr((-0.5 - a) / sigma)
        return (self._log_pi(v.dtype).exp() * mass).sum(-1).clamp_min(LIKELIHOOD_MIN)

    @torch.no_grad()
    def tables(self, channels: Tensor, scales: Tensor) -> CdfTables:
        """One table per (channel, scale) pair, channels (T,) int and scales (T,) float64: the
        channel's mixture at that scale, discretised on [-R, R], R = ceil(TAIL_SIGMAS * the
        largest sigma) capped at MAX_HALF_WIDTH, with the mass beyond in the escape symbol.
        Built in float64 on the CPU."""
        log_pi = torch.log_softmax(self.log_weights.detach().double().cpu(), -1)
        sigma = torch.exp(-0.5 * self.log_precisions.detach().double().cpu())
        freqs, offsets = [], []
        for c, s in zip(channels.tolist(), scales.tolist(), strict=True):
            sig = sigma[c] * s
            r = min(math.ceil(TAIL_SIGMAS * float(sig.max())), MAX_HALF_WIDTH)
            n = torch.arange(-r, r + 1, dtype=torch.float64).abs().unsqueeze(-1)
            pi = log_pi[c].exp()
            pmf = ((torch.special.ndtr((0.5 - n) / sig) - torch.special.ndtr((-0.5 - n) / sig))
                   * pi).sum(-1)
            tail = float(2 * (torch.special.ndtr(-(r + 0.5) / sig) * pi).sum())
            freqs.append(quantize_pmf(pmf.numpy(), tail))
            offsets.append(-r)
        return CdfTables.from_freqs(freqs, offsets)
