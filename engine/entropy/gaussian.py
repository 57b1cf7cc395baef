"""Gaussian conditional for the latent y (Minnen, Balle, Toderici, "Joint autoregressive and
hierarchical priors for learned image compression", NeurIPS 2018: the mean-scale hyperprior).

The likelihood of a quantized value is
    Phi((0.5 - |y - mu|) / sigma) - Phi((-0.5 - |y - mu|) / sigma),
with sigma >= SCALE_MIN and the likelihood >= LIKELIHOOD_MIN (`kernels.quantize`). Coding uses the
symbols round(y - mu) under one of NUM_SCALES fixed CDF tables, chosen by `scale_indexes`.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor, nn

from kernels import quantize as quantize_kernel
from kernels.quantize import SCALE_MIN

from .cdf import CdfTables, quantize_pmf

SCALE_MAX = 256.0
NUM_SCALES = 64
TAIL_MASS = 1e-9
MAX_HALF_WIDTH = 511  # wider distributions code their far tails through the escape symbol

# float64, log-spaced; the tables are built for exactly these scales.
SCALES = np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), NUM_SCALES))


def scale_indexes(scales: Tensor) -> Tensor:
    """The table index of every scale: how many of SCALES[:-1] lie strictly below it.

    This is the only place the index is derived; encoder and decoder both call it on the
    hyper-decoder output, which is computed in float64 (see `MeanScaleHyperprior.hyper_decode`)
    so that both sides agree. A scale picks the smallest table scale >= itself; scales above
    SCALE_MAX use the last table.
    """
    bounds = torch.as_tensor(SCALES[:-1], dtype=scales.dtype, device=scales.device)
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
        Fused with its backward on the GPU (`kernels.quantize.quantize_train`). Always float32:
        rounding and likelihoods are too coarse in half precision (autocast)."""
        with torch.autocast(y.device.type, enabled=False):
            return quantize_kernel.quantize_train(y.float(), scales.float(), means.float(), noise)

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
