"""SGA / SGA+ relaxed rounding in Triton: one fused pass forward, one backward that recomputes the
forward instead of storing it. The methods and their formulas are defined in
`kernels.sga_reference` (with the clamps EPS, W_MIN, U_MIN, passed to the kernels as
arguments); `kernels.dispatch` chooses between the two.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton import cdiv

from . import utils
from .sga_reference import EPS, METHODS, U_MIN, W_MIN
from .utils import round_half_even

_BLOCK = 1024


@triton.jit
def _sigmoid(t):
    e = tl.exp(-tl.abs(t))  # never overflows
    return tl.where(t >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def _ssl_log_w(x, a):
    """(log sigmoid(-a logit x), its derivative in x) at x in (0, 1)."""
    logit = tl.log(x) - tl.log(1.0 - x)
    t = -a * logit
    log_w = tl.minimum(t, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(t)))
    return log_w, -a * _sigmoid(a * logit) / (x * (1.0 - x))


@triton.jit
def _log_p2(x_raw, a, METHOD: tl.constexpr, EPS: tl.constexpr):
    """(log p, d log p / d x_raw) of two-class METHOD (0 atanh, 1 linear, 2 cosine, 3 ssl) at the
    distance x_raw, clamped like the reference (zero derivative outside the clamp)."""
    x = tl.minimum(tl.maximum(x_raw, EPS), 1.0 - EPS)
    inside = (x_raw >= EPS) & (x_raw <= 1.0 - EPS)
    if METHOD == 0:
        lp = -0.5 * (tl.log(1.0 + x) - tl.log(1.0 - x))
        dlp = -1.0 / ((1.0 + x) * (1.0 - x))
    elif METHOD == 1:
        lp = tl.log(1.0 - x)
        dlp = -1.0 / (1.0 - x)
    elif METHOD == 2:
        low = x <= 0.5
        h = tl.where(low, x, 1.0 - x) * 1.5707963267948966  # pi / 2
        sh = tl.sin(h)
        ch = tl.cos(h)
        lp = 2.0 * tl.log(tl.where(low, ch, sh))
        dlp = -3.141592653589793 * tl.where(low, sh / ch, ch / sh)  # -pi
    else:
        lp, dlp = _ssl_log_w(x, a)
    return lp, tl.where(inside, dlp, 0.0)


@triton.jit
def _sign(d):
    return tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, 0.0))


@triton.jit
def _log_w3(d, a, r, pw, METHOD: tl.constexpr, EPS: tl.constexpr, W_MIN: tl.constexpr):
    """(log w, d log w / d d) of three-class METHOD (4 linear3, 5 cosine3, 6 ssl3) at the signed
    distance d; clamps as in the reference."""
    if METHOD == 4:
        u = 1.0 - r * tl.abs(d)
        lw = pw * tl.log(tl.maximum(u, W_MIN))
        dlw = tl.where(u >= W_MIN, -pw * r * _sign(d) / u, 0.0)
    elif METHOD == 5:
        q_raw = r * d
        q = tl.minimum(tl.maximum(q_raw, -1.0), 1.0)
        h = 1.5707963267948966 * (1.0 - tl.abs(q))  # pi / 2
        c = tl.maximum(tl.sin(h), W_MIN)
        lw = pw * tl.log(c)
        dlw = tl.where((tl.sin(h) >= W_MIN) & (q_raw >= -1.0) & (q_raw <= 1.0),
                       -pw * 1.5707963267948966 * r * _sign(q) * tl.cos(h) / c, 0.0)
    else:
        x_raw = r * tl.abs(d) / 1.5
        x = tl.minimum(tl.maximum(x_raw, EPS), 1.0 - EPS)
        lw, dx = _ssl_log_w(x, a)
        lw = pw * lw
        dlw = tl.where((x_raw >= EPS) & (x_raw <= 1.0 - EPS), pw * dx * r * _sign(d) / 1.5, 0.0)
    return lw, dlw


@triton.jit
def _gumbel(u, U_MIN: tl.constexpr):
    return -tl.log(-tl.log(tl.minimum(tl.maximum(u, U_MIN), 1.0 - U_MIN)))


@triton.jit
def _sga_values(v_ptr, g_ptr, offs, mask, n, seed, tau, a, r, pw, METHOD: tl.constexpr,
                NOISE: tl.constexpr, COMPUTE: tl.constexpr, EPS: tl.constexpr,
                W_MIN: tl.constexpr, U_MIN: tl.constexpr):
    """(relaxed value, its derivative in v) of the elements at offs. NOISE: 1 Gumbel noise from
    g_ptr ((K, n) layout), 2 drawn from `seed` (the same offsets redraw it in the backward)."""
    v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    if NOISE == 1:
        g0 = tl.load(g_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
        g1 = tl.load(g_ptr + n + offs, mask=mask, other=0.0).to(COMPUTE)
        g2 = (tl.load(g_ptr + 2 * n + offs, mask=mask, other=0.0).to(COMPUTE) if METHOD >= 4
              else g0)  # two-class methods have no third class
    else:
        u0, u1, u2, _ = tl.rand4x(seed, offs)
        g0 = _gumbel(u0, U_MIN).to(COMPUTE)
        g1 = _gumbel(u1, U_MIN).to(COMPUTE)
        g2 = _gumbel(u2, U_MIN).to(COMPUTE)
    inv_tau = 1.0 / tau
    if METHOD < 4:
        base = tl.floor(v)
        x_d = v - base
        lp_d, dlp_d = _log_p2(x_d, a, METHOD, EPS)
        lp_u, dlp_u = _log_p2(1.0 - x_d, a, METHOD, EPS)
        # Two-class softmax = sigmoid of the logit difference; x_u = 1 - x_d moves against v.
        s = ((lp_u * inv_tau + g1) - (lp_d * inv_tau + g0)) * inv_tau
        p = _sigmoid(s)
        out = base + p
        grad = p * (1.0 - p) * (-dlp_u - dlp_d) * inv_tau * inv_tau
    else:
        base = round_half_even(v) - 1.0
        d = v - base
        lw0, dw0 = _log_w3(d, a, r, pw, METHOD, EPS, W_MIN)
        lw1, dw1 = _log_w3(d - 1.0, a, r, pw, METHOD, EPS, W_MIN)
        lw2, dw2 = _log_w3(d - 2.0, a, r, pw, METHOD, EPS, W_MIN)
        s0 = (lw0 * inv_tau + g0) * inv_tau
        s1 = (lw1 * inv_tau + g1) * inv_tau
        s2 = (lw2 * inv_tau + g2) * inv_tau
        m = tl.maximum(tl.maximum(s0, s1), s2)
        e0 = tl.exp(s0 - m)
        e1 = tl.exp(s1 - m)
        e2 = tl.exp(s2 - m)
        total = e0 + e1 + e2
        p1 = e1 / total
        p2 = e2 / total
        mean = p1 + 2.0 * p2
        out = base + mean
        # d/dv sum_k k p_k = sum_k k p_k (s'_k - sum_j p_j s'_j), s'_k = w'_k / tau^2.
        ds0 = dw0 * inv_tau * inv_tau
        ds1 = dw1 * inv_tau * inv_tau
        ds2 = dw2 * inv_tau * inv_tau
        ds_mean = (e0 * ds0 + e1 * ds1 + e2 * ds2) / total
        grad = p1 * ds1 + 2.0 * p2 * ds2 - mean * ds_mean
    return out, grad


@triton.jit
def _sga_fwd_kernel(v_ptr, g_ptr, out_ptr, n, seed, tau, a, r, pw, METHOD: tl.constexpr,
                    NOISE: tl.constexpr, COMPUTE: tl.constexpr, EPS: tl.constexpr,
                    W_MIN: tl.constexpr, U_MIN: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    out, _ = _sga_values(v_ptr, g_ptr, offs, mask, n, seed, tau, a, r, pw, METHOD, NOISE,
                         COMPUTE, EPS, W_MIN, U_MIN)
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sga_bwd_kernel(v_ptr, g_ptr, grad_out_ptr, grad_v_ptr, n, seed, tau, a, r, pw,
                    METHOD: tl.constexpr, NOISE: tl.constexpr, COMPUTE: tl.constexpr,
                    EPS: tl.constexpr, W_MIN: tl.constexpr, U_MIN: tl.constexpr,
                    BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    _, grad = _sga_values(v_ptr, g_ptr, offs, mask, n, seed, tau, a, r, pw, METHOD, NOISE,
                          COMPUTE, EPS, W_MIN, U_MIN)
    g_out = tl.load(grad_out_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    tl.store(grad_v_ptr + offs, (g_out * grad).to(grad_v_ptr.dtype.element_ty), mask=mask)


class _SgaRound(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v: Tensor, gumbel: Tensor | None, method: str, tau: float, a: float,
                r: float, n: float, generator: torch.Generator | None) -> Tensor:
        ctx.noise = 1 if gumbel is not None else 2
        if gumbel is None:
            # Seeded from torch's generator, so a seeded generator makes the noise repeatable.
            device = "cpu" if generator is None else generator.device
            ctx.seed = int(torch.randint(2**31 - 1, (), generator=generator, device=device))
            gumbel = v  # a placeholder pointer, never read
        else:
            ctx.seed = 0
            gumbel = gumbel.contiguous()
        ctx.args = (METHODS.index(method), float(tau), float(a), float(r), float(n))
        ctx.save_for_backward(v, gumbel)
        out = utils.empty(v.shape, v.dtype, v.device)
        _launch(_sga_fwd_kernel, ctx, v, gumbel, out)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        v, gumbel = ctx.saved_tensors
        grad_v = utils.empty(v.shape, v.dtype, v.device)
        _launch(_sga_bwd_kernel, ctx, v, gumbel, grad_out.contiguous(), grad_v)
        return grad_v, None, None, None, None, None, None, None


def _launch(kernel, ctx, v: Tensor, gumbel: Tensor, *tensors: Tensor) -> None:
    """One element per lane over v; `tensors`: the kernel's other pointers, in order."""
    method, tau, a, r, power = ctx.args
    n = v.numel()
    kernel[(cdiv(n, _BLOCK),)](v, gumbel, *tensors, n, ctx.seed, tau, a, r, power,
                               METHOD=method, NOISE=ctx.noise,
                               COMPUTE=utils.compute_type(v.dtype), EPS=EPS, W_MIN=W_MIN,
                               U_MIN=U_MIN, BLOCK=_BLOCK)


def sga_round_triton(v: Tensor, method: str, tau: float, a: float, r: float, n: float,
                     gumbel: Tensor | None = None, generator: torch.Generator | None = None
                     ) -> Tensor:
    """`sga_round_reference` fused, on validated arguments. Without `gumbel` the kernel draws
    Philox noise seeded from `generator` (the reference draws torch noise)."""
    return _SgaRound.apply(v.contiguous(), gumbel, method, tau, a, r, n, generator)
