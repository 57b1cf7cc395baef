"""Quantization and Gaussian likelihoods of the latent y given the hyperprior's (scale, mean).

Inference: one pass from (y, scales, means) to the coding symbols round(y - mu), the likelihoods
and the scale-table indexes. Training: the same likelihood on noisy or straight-through values.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .lower_bound import lower_bound

SCALE_MIN = 0.11
LIKELIHOOD_MIN = 1e-9


def _std_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * torch.erfc(x * -math.sqrt(0.5))


def likelihood_reference(values: Tensor, scales: Tensor, means: Tensor) -> Tensor:
    """Phi((0.5 - |v - mu|) / s) - Phi((-0.5 - |v - mu|) / s), s = max(scale, SCALE_MIN),
    bounded below by LIKELIHOOD_MIN. Evaluated on the left tail (|.|) for accuracy."""
    v = torch.abs(values - means)
    s = lower_bound(scales, SCALE_MIN)
    p = _std_normal_cdf((0.5 - v) / s) - _std_normal_cdf((-0.5 - v) / s)
    return lower_bound(p, LIKELIHOOD_MIN)


def quantize_reference(y: Tensor, scales: Tensor, means: Tensor, scale_bounds: Tensor
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """Coding form: (symbols round(y - mu) as int32, likelihoods of y_hat = symbols + mu,
    scale-table indexes as int32 = how many of `scale_bounds` lie strictly below the scale).

    Computed in the dtype of `means` (float64 in the codec)."""
    centered = y.to(means.dtype) - means
    symbols = torch.round(centered)
    p = likelihood_reference(symbols, scales, torch.zeros_like(means))
    indexes = torch.bucketize(scales, scale_bounds.to(scales.dtype), right=False)
    return symbols.to(torch.int32), p, indexes.to(torch.int32)


likelihood = likelihood_reference
quantize = quantize_reference
