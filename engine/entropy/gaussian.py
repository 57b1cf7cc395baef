"""Gaussian conditional for the latent y (Minnen, Balle, Toderici, "Joint autoregressive and
hierarchical priors for learned image compression", NeurIPS 2018: the mean-scale hyperprior).

The likelihood of a quantized value is
    Phi((0.5 - |y - mu|) / sigma) - Phi((-0.5 - |y - mu|) / sigma),
with sigma >= SCALE_MIN and the likelihood >= LIKELIHOOD_MIN (`nicengine_kernels.dispatch`). Coding
uses the symbols round(y - mu) under one of NUM_SCALES fixed CDF tables, chosen by `scale_indexes`.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor, nn

from nicengine_kernels import dispatch

from .cdf import CdfTables, quantize_pmf

SCALE_MIN = 0.11  # sigma's lower bound, and the smallest table scale
LIKELIHOOD_MIN = 1e-9  # the likelihood's lower bound: no symbol costs more than ~30 bits
_BOUNDS = {"scale_min": SCALE_MIN, "likelihood_min": LIKELIHOOD_MIN}  # as the kernels take them
SCALE_MAX = 256.0
NUM_SCALES = 64
TAIL_MASS = 1e-9
MAX_HALF_WIDTH = 511  # wider distributions code their far tails through the escape symbol

# float64, log-spaced; the tables are built for exactly these scales.
SCALES = np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), NUM_SCALES))


def scale_bounds(like: Tensor) -> Tensor:
    """The index rule's bounds, SCALES[:-1], in the dtype and on the device of `like`."""
    return torch.as_tensor(SCALES[:-1], dtype=like.dtype, device=like.device)


def scale_indexes(scales: Tensor, bounds: Tensor | None = None) -> Tensor:
    """The table index of every scale: how many of `bounds` (default `scale_bounds`) lie
    strictly below it (the smallest table scale >= the scale; scales above SCALE_MAX use the
    last table). An integer hyper-decoder passes its fixed-point thresholds as the bounds.

    The encoder gets the same indexes from the fused quantization (`GaussianConditional.quantize`
    passes it these bounds; the kernel's search is bit-exact to this). Both sides apply the rule
    to the hyper-decoder's float64 output (`MeanScaleHyperprior.hyper_decode`), so they agree.
    """
    bounds = scale_bounds(scales) if bounds is None else bounds
    return torch.bucketize(scales, bounds, right=False).to(torch.int32)


@lru_cache(maxsize=1)
def gaussian_tables() -> CdfTables:
    """One quantized table per entry of SCALES over [-R, R], R = ceil(6.1 sigma) capped at
    MAX_HALF_WIDTH; the escape symbol carries the mass beyond. Identical for every model."""
    tail_z = -_normal_ppf(TAIL_MASS / 2)
    freqs, offsets = [], []
    for s in SCALES:
        r = min(math.ceil(tail_z * s), MAX_HALF_WIDTH)
        a = np.abs(np.arange(-r, r + 1, dtype=np.float64))
        pmf = _normal_cdf((0.5 - a) / s) - _normal_cdf((-0.5 - a) / s)
        tail = 2 * float(_normal_cdf(np.array([-(r + 0.5) / s]))[0])
        freqs.append(quantize_pmf(pmf, tail))
        offsets.append(-r)
    return CdfTables.from_freqs(freqs, offsets)


class GaussianConditional(nn.Module):
    """Entropy model of y (B, M, H, W) given scales and means of the same shape."""

    def forward(self, y: Tensor, scales: Tensor, means: Tensor, noise: bool
                ) -> tuple[Tensor, Tensor]:
        """(y_hat, likelihoods). y_hat = round(y - mu) + mu with a straight-through gradient (what
        the decoder sees); the rate is measured on y + U(-0.5, 0.5) in training, y_hat otherwise.
        Fused with its backward on the GPU (`nicengine_kernels.dispatch.quantize_train`). Always
        float32: rounding and likelihoods are too coarse in half precision (autocast)."""
        with torch.autocast(y.device.type, enabled=False):
            return dispatch.quantize_train(y.float(), scales.float(), means.float(), noise,
                                           **_BOUNDS)

    @staticmethod
    def likelihood(values: Tensor, scales: Tensor, means: Tensor) -> Tensor:
        """P(value) of values on the (possibly relaxed) grid around the means, differentiable."""
        return dispatch.likelihood(values, scales, means, **_BOUNDS)

    @staticmethod
    def quantize(y: Tensor, scales: Tensor, means: Tensor, bounds: Tensor | None = None
                 ) -> tuple[Tensor, Tensor, Tensor]:
        """The coding quantization of y (B, M, h, w) given float64 scales and means: (symbols
        round(y - mu) int32, estimated bits per image (B,), table indexes int32), in one pass
        (fused on the GPU). The indexes are `indexes(scales, bounds)`, bit for bit."""
        bounds = scale_bounds(scales) if bounds is None else bounds
        symbols, likelihoods, indexes = dispatch.quantize(y, scales, means, bounds, **_BOUNDS)
        return symbols, -torch.log2(likelihoods).flatten(1).sum(1), indexes

    @staticmethod
    def indexes(scales: Tensor, bounds: Tensor | None = None) -> Tensor:
        """The decoder's table indexes (int32, the shape of `scales`): `scale_indexes`, or the
        same rule with other bounds (an integer hyper-decoder's fixed-point thresholds)."""
        return scale_indexes(scales, bounds)

    @staticmethod
    def tables() -> CdfTables:
        return gaussian_tables()


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * np.vectorize(math.erfc)(-x / math.sqrt(2))


def _normal_ppf(p: float) -> float:
    """Inverse normal CDF by bisection (used once, for the table width)."""
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 * math.erfc(-mid / math.sqrt(2)) < p else (lo, mid)
    return (lo + hi) / 2
