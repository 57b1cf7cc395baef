"""Quantization and Gaussian likelihoods of the latent y in Triton, one pass each: the coding form
(symbols, likelihoods, scale-table indexes) and the training form (forward and backward). The
definitions are in `kernels.quantize_reference`; `kernels.dispatch` chooses between the two. The
Gaussian's bounds (SCALE_MIN, LIKELIHOOD_MIN) are the entropy model's, passed in as arguments.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton import cdiv

from . import utils
from .utils import round_half_even

_BLOCK = 1024


@triton.jit
def _round_to(x, ty: tl.constexpr):
    """x rounded to the storage type `ty` and back: the reference rounds after every operation."""
    return x.to(ty).to(x.dtype)


@triton.jit
def _erfc(x):
    # erfc(a) = t exp(-a^2) P(2t - 1), t = 1 / (1 + a/2), a = |x|: P is a degree-12 fit of
    # erfc(a) exp(a^2) / t made for this kernel, relative error 1.2e-9 on [0, inf) (in float32
    # the rounding of a^2 inside exp dominates, as it does for the reference). libdevice's erfc
    # would not run under the interpreter.
    a = tl.abs(x)
    t = 1.0 / (1.0 + 0.5 * a)
    u = 2.0 * t - 1.0
    p = -9.020251396693602e-06
    p = p * u - 1.4688034626411661e-06
    p = p * u + 6.92146390168652e-05
    p = p * u - 3.256490236192705e-05
    p = p * u - 0.00032980750081615384
    p = p * u + 0.00042663624731892336
    p = p * u + 0.0015449260620295918
    p = p * u - 0.003241688433077948
    p = p * u - 0.010755319859095266
    p = p * u + 0.01822135486377363
    p = p * u + 0.13973604986390778
    p = p * u + 0.343580334416281
    p = p * u + 0.5107913525276025
    e = t * tl.exp(-a * a) * p
    return tl.where(x < 0, 2.0 - e, e)


@triton.jit
def _likelihood(v, s):
    """(unbounded likelihood, a, b) of |value - mean| = v at bounded scale s: Phi(a) - Phi(b),
    Phi(x) = erfc(-x sqrt(1/2)) / 2."""
    a = (0.5 - v) / s
    b = (-0.5 - v) / s
    p = 0.5 * _erfc(a * -0.7071067811865476) - 0.5 * _erfc(b * -0.7071067811865476)
    return p, a, b


@triton.jit
def _quantize_kernel(y_ptr, scales_ptr, means_ptr, bounds_ptr, sym_ptr, lik_ptr, idx_ptr, n,
                     n_bounds, SCALE_MIN: tl.constexpr, LIKELIHOOD_MIN: tl.constexpr,
                     STEPS: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    mean_ty = means_ptr.dtype.element_ty
    scale_ty = scales_ptr.dtype.element_ty
    y = tl.load(y_ptr + offs, mask=mask, other=0.0)
    mu = tl.load(means_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    scale = tl.load(scales_ptr + offs, mask=mask, other=1.0).to(COMPUTE)
    # The symbols and indexes are bit-identical to the reference's: the same roundings in the
    # same types, and comparisons only.
    q = round_half_even(_round_to(_round_to(y.to(COMPUTE), mean_ty) - mu, mean_ty))
    tl.store(sym_ptr + offs, q.to(tl.int32), mask=mask)
    # The index is the number of bounds strictly below the scale (torch.bucketize with
    # right=False): a binary search for the largest idx with bounds[idx - 1] < scale, over the
    # sorted bounds, one bit of idx per step, the highest first.
    idx = tl.zeros((BLOCK,), dtype=tl.int32)
    for k in tl.static_range(STEPS):
        cand = idx + (1 << (STEPS - 1 - k))
        bound = tl.load(bounds_ptr + cand - 1, mask=mask & (cand <= n_bounds), other=0.0)
        idx = tl.where((cand <= n_bounds) & (scale > bound.to(COMPUTE)), cand, idx)
    tl.store(idx_ptr + offs, idx, mask=mask)
    s = _round_to(tl.maximum(scale, SCALE_MIN), scale_ty)
    p, _, _ = _likelihood(tl.abs(q), s)
    tl.store(lik_ptr + offs, tl.maximum(p, LIKELIHOOD_MIN).to(lik_ptr.dtype.element_ty),
             mask=mask)


def quantize_triton(y: Tensor, scales: Tensor, means: Tensor, scale_bounds: Tensor, *,
                    scale_min: float, likelihood_min: float) -> tuple[Tensor, Tensor, Tensor]:
    """`quantize_reference` in one pass, inputs of one shape. The symbols and the indexes are
    bit-identical to the reference's (the bitstream does not depend on the kernels); the
    likelihoods agree to a relative 1e-6 (float64 inputs; float32 rounding sets the limit for
    float32). `scale_bounds` must be sorted."""
    y, scales, means = y.contiguous(), scales.contiguous(), means.contiguous()
    bounds = scale_bounds.to(scales.dtype).contiguous()
    n = y.numel()
    lik_dtype = torch.promote_types(means.dtype, scales.dtype)
    symbols = utils.empty(y.shape, torch.int32, y.device)
    lik = utils.empty(y.shape, lik_dtype, y.device)
    indexes = utils.empty(y.shape, torch.int32, y.device)
    _quantize_kernel[(cdiv(n, _BLOCK),)](
        y, scales, means, bounds, symbols, lik, indexes, n, bounds.numel(),
        SCALE_MIN=scale_min, LIKELIHOOD_MIN=likelihood_min,
        STEPS=max(1, bounds.numel().bit_length()),
        COMPUTE=utils.compute_type(y.dtype, scales.dtype, means.dtype), BLOCK=_BLOCK)
    return symbols, lik, indexes


@triton.jit
def _train_values(y_ptr, scales_ptr, means_ptr, u_ptr, offs, mask, seed, NOISE: tl.constexpr,
                  COMPUTE: tl.constexpr):
    """(y_hat, values - mu, scale) in COMPUTE, rounded to the input type where the reference
    rounds. NOISE: 0 straight-through (values = y_hat), 1 u from u_ptr, 2 u from seed."""
    ty = y_ptr.dtype.element_ty
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    mu = tl.load(means_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    scale = tl.load(scales_ptr + offs, mask=mask, other=1.0).to(COMPUTE)
    q = round_half_even(_round_to(y - mu, ty))
    y_hat = _round_to(y + _round_to(_round_to(q + mu, ty) - y, ty), ty)
    if NOISE == 0:
        values = y_hat
    elif NOISE == 1:
        values = _round_to(y + tl.load(u_ptr + offs, mask=mask, other=0.0).to(COMPUTE), ty)
    else:
        # The same offsets and seed regenerate the same noise in the backward pass.
        values = _round_to(y + _round_to((tl.rand(seed, offs) - 0.5).to(COMPUTE), ty), ty)
    return y_hat, _round_to(values - mu, ty), scale


@triton.jit
def _train_fwd_kernel(y_ptr, scales_ptr, means_ptr, u_ptr, y_hat_ptr, lik_ptr, n, seed,
                      SCALE_MIN: tl.constexpr, LIKELIHOOD_MIN: tl.constexpr, NOISE: tl.constexpr,
                      COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    ty = y_ptr.dtype.element_ty
    y_hat, diff, scale = _train_values(y_ptr, scales_ptr, means_ptr, u_ptr, offs, mask, seed,
                                       NOISE, COMPUTE)
    p, _, _ = _likelihood(tl.abs(diff), _round_to(tl.maximum(scale, SCALE_MIN), ty))
    tl.store(y_hat_ptr + offs, y_hat.to(ty), mask=mask)
    tl.store(lik_ptr + offs, tl.maximum(p, LIKELIHOOD_MIN).to(ty), mask=mask)


@triton.jit
def _train_bwd_kernel(y_ptr, scales_ptr, means_ptr, u_ptr, g_y_hat_ptr, g_lik_ptr, grad_y_ptr,
                      grad_scales_ptr, grad_means_ptr, n, seed, SCALE_MIN: tl.constexpr,
                      LIKELIHOOD_MIN: tl.constexpr, NOISE: tl.constexpr, COMPUTE: tl.constexpr,
                      BLOCK: tl.constexpr):
    # The forward recomputed (cheaper than storing it), then the chain rule of the reference,
    # lower_bound's included: where a bound was active, only a negative gradient passes.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    ty = y_ptr.dtype.element_ty
    _, diff, scale = _train_values(y_ptr, scales_ptr, means_ptr, u_ptr, offs, mask, seed, NOISE,
                                   COMPUTE)
    s = _round_to(tl.maximum(scale, SCALE_MIN), ty)
    p, a, b = _likelihood(tl.abs(diff), s)
    g_lik = tl.load(g_lik_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    g_p = tl.where((p >= LIKELIHOOD_MIN) | (g_lik < 0), g_lik, 0.0)
    # Phi'(x) = exp(-x^2 / 2) / sqrt(2 pi)
    g_a = g_p * 0.3989422804014327 * tl.exp(-0.5 * a * a)
    g_b = -g_p * 0.3989422804014327 * tl.exp(-0.5 * b * b)
    g_v = -(g_a + g_b) / s
    g_s = -(g_a * a + g_b * b) / s
    # scale >= SCALE_MIN in the input type, as the reference compares: the bound left it as is.
    g_s = tl.where((s == scale) | (g_s < 0), g_s, 0.0)
    g_diff = tl.where(diff > 0, g_v, tl.where(diff < 0, -g_v, 0.0))
    g_y_hat = tl.load(g_y_hat_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    tl.store(grad_y_ptr + offs, (g_diff + g_y_hat).to(ty), mask=mask)
    tl.store(grad_scales_ptr + offs, g_s.to(ty), mask=mask)
    tl.store(grad_means_ptr + offs, (-g_diff).to(ty), mask=mask)


class _QuantizeTrain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: Tensor, scales: Tensor, means: Tensor, uniform: Tensor | None,
                noise: bool, scale_min: float, likelihood_min: float) -> tuple[Tensor, Tensor]:
        ctx.mode = 0 if not noise else 1 if uniform is not None else 2
        # Seeded from torch's generator, so torch.manual_seed makes training repeatable.
        ctx.seed = int(torch.randint(2**31 - 1, ())) if ctx.mode == 2 else 0
        ctx.bounds = {"SCALE_MIN": scale_min, "LIKELIHOOD_MIN": likelihood_min}
        u = uniform.contiguous() if ctx.mode == 1 else y
        ctx.save_for_backward(y, scales, means, u)
        y_hat = utils.empty(y.shape, y.dtype, y.device)
        lik = utils.empty(y.shape, y.dtype, y.device)
        n = y.numel()
        _train_fwd_kernel[(cdiv(n, _BLOCK),)](
            y, scales, means, u, y_hat, lik, n, ctx.seed, **ctx.bounds, NOISE=ctx.mode,
            COMPUTE=utils.compute_type(y.dtype), BLOCK=_BLOCK)
        return y_hat, lik

    @staticmethod
    def backward(ctx, g_y_hat: Tensor, g_lik: Tensor):
        y, scales, means, u = ctx.saved_tensors
        grads = [utils.empty(y.shape, y.dtype, y.device) for _ in range(3)]
        n = y.numel()
        _train_bwd_kernel[(cdiv(n, _BLOCK),)](
            y, scales, means, u, g_y_hat.contiguous(), g_lik.contiguous(), *grads, n, ctx.seed,
            **ctx.bounds, NOISE=ctx.mode, COMPUTE=utils.compute_type(y.dtype), BLOCK=_BLOCK)
        return *grads, None, None, None, None


def quantize_train_triton(y: Tensor, scales: Tensor, means: Tensor, noise: bool,
                          uniform: Tensor | None = None, *, scale_min: float,
                          likelihood_min: float) -> tuple[Tensor, Tensor]:
    """`quantize_train_reference` fused, forward and backward one pass each, inputs of one shape
    and dtype. Without `uniform` the kernel draws its noise itself (Philox, regenerated in the
    backward pass)."""
    y, scales, means = y.contiguous(), scales.contiguous(), means.contiguous()
    return _QuantizeTrain.apply(y, scales, means, uniform, noise, scale_min, likelihood_min)
