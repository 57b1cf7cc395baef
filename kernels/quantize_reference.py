"""Quantization and Gaussian likelihoods of the latent y given the hyperprior's (scale, mean), in
PyTorch: the definition the Triton kernels (`kernels/quantize.py`) are tested against.

Inference: (y, scales, means) -> the coding symbols round(y - mu), the likelihoods and the
scale-table indexes. Training: the same likelihood on noisy or straight-through values. The
bounds of the Gaussian (`scale_min`, `likelihood_min`) are the entropy model's
(`engine.entropy.gaussian`), passed in by it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .lower_bound import lower_bound


def _std_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * torch.erfc(x * -math.sqrt(0.5))


def likelihood_reference(values: Tensor, scales: Tensor, means: Tensor, *, scale_min: float,
                         likelihood_min: float) -> Tensor:
    """Phi((0.5 - |v - mu|) / s) - Phi((-0.5 - |v - mu|) / s), s = max(scale, scale_min),
    bounded below by likelihood_min (both bounds with `lower_bound`'s gradient). Evaluated on the
    left tail (|.|) for accuracy."""
    v = torch.abs(values - means)
    s = lower_bound(scales, scale_min)
    p = _std_normal_cdf((0.5 - v) / s) - _std_normal_cdf((-0.5 - v) / s)
    return lower_bound(p, likelihood_min)


def quantize_reference(y: Tensor, scales: Tensor, means: Tensor, scale_bounds: Tensor, *,
                       scale_min: float, likelihood_min: float) -> tuple[Tensor, Tensor, Tensor]:
    """Coding form: (symbols round(y - mu) as int32, likelihoods of y_hat = symbols + mu,
    scale-table indexes as int32 = how many of `scale_bounds` (sorted) lie strictly below the
    scale, torch.bucketize(right=False)).

    Computed in the dtype of `means` (float64 in the codec)."""
    centered = y.to(means.dtype) - means
    symbols = torch.round(centered)
    p = likelihood_reference(symbols, scales, torch.zeros_like(means), scale_min=scale_min,
                             likelihood_min=likelihood_min)
    indexes = torch.bucketize(scales, scale_bounds.to(scales.dtype), right=False)
    return symbols.to(torch.int32), p, indexes.to(torch.int32)


def quantize_train_reference(y: Tensor, scales: Tensor, means: Tensor, noise: bool,
                             uniform: Tensor | None = None, *, scale_min: float,
                             likelihood_min: float) -> tuple[Tensor, Tensor]:
    """Training form: (y_hat, likelihoods), all (B, M, H, W). y_hat = round(y - mu) + mu with a
    straight-through gradient (what the decoder sees); the likelihood is of y + u if `noise`
    (u ~ U(-0.5, 0.5): `uniform`, drawn when None), of y_hat otherwise."""
    y_hat = y + (torch.round(y - means) + means - y).detach()
    if noise:
        y_rate = y + (torch.empty_like(y).uniform_(-0.5, 0.5) if uniform is None else uniform)
    else:
        y_rate = y_hat
    return y_hat, likelihood_reference(y_rate, scales, means, scale_min=scale_min,
                                       likelihood_min=likelihood_min)
