"""Stochastic relaxed rounding for latent refinement: SGA (Yang, Bamler, Mandt, "Improving inference
for neural image compression", NeurIPS 2020) and SGA+ (Perugachi-Diaz, Gansekoele, Bhulai,
"Robustly overfitting latents for flexible neural image compression", NeurIPS 2024).

A value v (any shape) becomes a Gumbel-softmax mixture of K integer candidates base + k:

    out = base + sum_k k * p_k,   p = softmax((log w / tau + g) / tau),   g ~ Gumbel(0, 1)

(tau enters twice, as in SGA). Two-class methods (K = 2, base = floor(v)) weigh floor and ceil by
p(x) of their distance x (x_d = v - floor(v), x_u = 1 - x_d), x clamped into [EPS, 1 - EPS]:
    atanh    log w = -atanh(x)                  (SGA; unnormalised)
    linear   w = 1 - x
    cosine   w = cos^2(pi x / 2)
    ssl      w = sigmoid(-a logit(x))           (a = 1: linear, ~1.6: cosine, ~0.63: atanh)
Three-class methods (K = 3, base = round(v) - 1) weigh round(v) - 1, round(v), round(v) + 1 by the
signed distance d = v - candidate:
    linear3  w = max(1 - r|d|, W_MIN)^n
    cosine3  w = max(cos(pi/2 clamp(r d, -1, 1)), W_MIN)^n
    ssl3     w = sigmoid(-a logit(clamp(r|d| / 1.5, EPS, 1 - EPS)))^n
The gradient flows through the probabilities only (the candidates are constants).

`sga_round` runs one fused Triton pass forward and one backward (the backward recomputes the
forward instead of storing it); `sga_round_reference` is the same in eager PyTorch. Both compute
in float32 for half inputs. The Gumbel noise is a (K, *v.shape) tensor when given, so both can be
compared element by element; otherwise the reference draws it with torch and the kernel with Philox.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from . import dispatch
from .dispatch import NETWORK_DTYPES, cdiv, jit, round_half_even, use_triton

tl = None  # triton.language, bound by dispatch.load on the first launch

METHODS = ("atanh", "linear", "cosine", "ssl", "linear3", "cosine3", "ssl3")
EPS = 1e-5  # distances are clamped into [EPS, 1 - EPS] before logs
W_MIN = 1e-6  # floor of the three-class weights, so their logs stay finite
U_MIN = 1e-7  # uniforms are clamped into [U_MIN, 1 - U_MIN] before the Gumbel transform
_BLOCK = 1024


def num_classes(method: str) -> int:
    if method not in METHODS:
        raise ValueError(f"unknown rounding method {method!r}; expected one of {METHODS}")
    return 3 if method.endswith("3") else 2


# --- reference ---------------------------------------------------------------------------------

def _logsigmoid_neg_a_logit(x: Tensor, a: float) -> Tensor:
    """log sigmoid(-a logit(x)) for x in (0, 1)."""
    return F.logsigmoid(-a * (torch.log(x) - torch.log(1 - x)))


def two_class_log_prob(x: Tensor, method: str, a: float = 2.3) -> Tensor:
    """log p(x) of a two-class method at distances x in [0, 1] (clamped into [EPS, 1 - EPS])."""
    x = x.clamp(EPS, 1 - EPS)
    if method == "atanh":
        return -0.5 * (torch.log(1 + x) - torch.log(1 - x))
    if method == "linear":
        return torch.log(1 - x)
    if method == "cosine":
        # cos(pi x / 2) = sin(pi (1 - x) / 2): the sine keeps full precision near x = 1.
        low = x <= 0.5
        h = torch.where(low, x, 1 - x) * (math.pi / 2)
        return 2 * torch.log(torch.where(low, torch.cos(h), torch.sin(h)))
    if method == "ssl":
        return _logsigmoid_neg_a_logit(x, a)
    raise ValueError(f"{method!r} is not a two-class method")


def three_class_log_weight(d: Tensor, method: str, a: float = 2.3, r: float = 0.98,
                           n: float = 1.5) -> Tensor:
    """log w(d) of a three-class method at signed distances d in [-1.5, 1.5]."""
    if method == "linear3":
        return n * torch.log(torch.clamp_min(1 - r * d.abs(), W_MIN))
    if method == "cosine3":
        # cos(pi/2 q) = sin(pi/2 (1 - |q|)), precise near |q| = 1.
        q = torch.clamp(r * d, -1, 1)
        return n * torch.log(torch.clamp_min(torch.sin((math.pi / 2) * (1 - q.abs())), W_MIN))
    if method == "ssl3":
        x = torch.clamp(r * d.abs() / 1.5, EPS, 1 - EPS)
        return n * _logsigmoid_neg_a_logit(x, a)
    raise ValueError(f"{method!r} is not a three-class method")


def gumbel_noise(shape: torch.Size | tuple[int, ...], classes: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 generator: torch.Generator | None = None) -> Tensor:
    """(classes, *shape) standard Gumbel samples -log(-log(u))."""
    u = torch.rand((classes, *shape), device=device, dtype=dtype, generator=generator)
    return -torch.log(-torch.log(u.clamp_(U_MIN, 1 - U_MIN)))


def _compute_dtype(v: Tensor) -> torch.dtype:
    return torch.float64 if v.dtype == torch.float64 else torch.float32


def candidates(v: Tensor, method: str, a: float = 2.3, r: float = 0.98, n: float = 1.5
               ) -> tuple[Tensor, Tensor]:
    """(base, log_w): candidate k is base + k; log_w (K, *v.shape) their unnormalised log
    weights. Computed in float32 for half inputs."""
    v = v.to(_compute_dtype(v))
    if num_classes(method) == 2:
        base = torch.floor(v)
        x_d = v - base  # exact
        log_w = torch.stack([two_class_log_prob(x_d, method, a),
                             two_class_log_prob(1 - x_d, method, a)])
    else:
        base = torch.round(v) - 1
        d = v - base  # distance to the lowest candidate, in [0.5, 1.5]
        log_w = torch.stack([three_class_log_weight(d - k, method, a, r, n) for k in range(3)])
    return base, log_w


def probabilities(v: Tensor, method: str, tau: float, a: float = 2.3, r: float = 0.98,
                  n: float = 1.5, gumbel: Tensor | None = None) -> Tensor:
    """(K, *v.shape) probabilities of the candidates: softmax((log w / tau + g) / tau); without
    `gumbel` the noise-free probabilities (g = 0)."""
    _, log_w = candidates(v, method, a, r, n)
    logits = log_w / tau
    if gumbel is not None:
        logits = logits + gumbel.to(logits.dtype)
    return torch.softmax(logits / tau, dim=0)


def sga_round_reference(v: Tensor, method: str, tau: float, a: float = 2.3, r: float = 0.98,
                        n: float = 1.5, gumbel: Tensor | None = None,
                        generator: torch.Generator | None = None) -> Tensor:
    """Relaxed rounding of v (any shape), differentiable in v; same shape and dtype as v.
    `gumbel`: (K, *v.shape) noise; drawn with `generator` when None."""
    k = num_classes(method)
    if gumbel is None:
        gumbel = gumbel_noise(v.shape, k, v.device, _compute_dtype(v), generator)
    base, _ = candidates(v, method, a, r, n)
    p = probabilities(v, method, tau, a, r, n, gumbel)
    offsets = torch.arange(k, dtype=p.dtype, device=p.device).view(-1, *[1] * v.dim())
    return (base + (p * offsets).sum(0)).to(v.dtype)


# --- Triton ------------------------------------------------------------------------------------

@jit
def _sigmoid(t):
    e = tl.exp(-tl.abs(t))  # never overflows
    return tl.where(t >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@jit
def _ssl_log_w(x, a):
    """(log sigmoid(-a logit x), its derivative in x) at x in (0, 1)."""
    logit = tl.log(x) - tl.log(1.0 - x)
    t = -a * logit
    log_w = tl.minimum(t, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(t)))
    return log_w, -a * _sigmoid(a * logit) / (x * (1.0 - x))


@jit
def _log_p2(x_raw, a, METHOD: tl.constexpr):
    """(log p, d log p / d x_raw) of two-class METHOD (0 atanh, 1 linear, 2 cosine, 3 ssl) at the
    distance x_raw, clamped like the reference (zero derivative outside the clamp)."""
    x = tl.minimum(tl.maximum(x_raw, 1e-5), 1.0 - 1e-5)
    inside = (x_raw >= 1e-5) & (x_raw <= 1.0 - 1e-5)
    if METHOD == 0:
        lp = -0.5 * (tl.log(1.0 + x) - tl.log(1.0 - x))
        dlp = -1.0 / ((1.0 + x) * (1.0 - x))
    elif METHOD == 1:
        lp = tl.log(1.0 - x)
        dlp = -1.0 / (1.0 - x)
    elif METHOD == 2:
        low = x <= 0.5
        h = tl.where(low, x, 1.0 - x) * 1.5707963267948966
        sh = tl.sin(h)
        ch = tl.cos(h)
        lp = 2.0 * tl.log(tl.where(low, ch, sh))
        dlp = -3.141592653589793 * tl.where(low, sh / ch, ch / sh)
    else:
        lp, dlp = _ssl_log_w(x, a)
    return lp, tl.where(inside, dlp, 0.0)


@jit
def _sign(d):
    return tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, 0.0))


@jit
def _log_w3(d, a, r, pw, METHOD: tl.constexpr):
    """(log w, d log w / d d) of three-class METHOD (4 linear3, 5 cosine3, 6 ssl3) at the signed
    distance d; clamps as in the reference."""
    if METHOD == 4:
        u = 1.0 - r * tl.abs(d)
        lw = pw * tl.log(tl.maximum(u, 1e-6))
        dlw = tl.where(u >= 1e-6, -pw * r * _sign(d) / u, 0.0)
    elif METHOD == 5:
        q_raw = r * d
        q = tl.minimum(tl.maximum(q_raw, -1.0), 1.0)
        h = 1.5707963267948966 * (1.0 - tl.abs(q))
        c = tl.maximum(tl.sin(h), 1e-6)
        lw = pw * tl.log(c)
        dlw = tl.where((tl.sin(h) >= 1e-6) & (q_raw >= -1.0) & (q_raw <= 1.0),
                       -pw * 1.5707963267948966 * r * _sign(q) * tl.cos(h) / c, 0.0)
    else:
        x_raw = r * tl.abs(d) / 1.5
        x = tl.minimum(tl.maximum(x_raw, 1e-5), 1.0 - 1e-5)
        lw, dx = _ssl_log_w(x, a)
        lw = pw * lw
        dlw = tl.where((x_raw >= 1e-5) & (x_raw <= 1.0 - 1e-5), pw * dx * r * _sign(d) / 1.5,
                       0.0)
    return lw, dlw


@jit
def _gumbel(u):
    return -tl.log(-tl.log(tl.minimum(tl.maximum(u, 1e-7), 1.0 - 1e-7)))


@jit
def _sga_values(v_ptr, g_ptr, offs, mask, n, seed, tau, a, r, pw, METHOD: tl.constexpr,
                NOISE: tl.constexpr, COMPUTE: tl.constexpr):
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
        g0 = _gumbel(u0).to(COMPUTE)
        g1 = _gumbel(u1).to(COMPUTE)
        g2 = _gumbel(u2).to(COMPUTE)
    inv_tau = 1.0 / tau
    if METHOD < 4:
        base = tl.floor(v)
        x_d = v - base
        lp_d, dlp_d = _log_p2(x_d, a, METHOD)
        lp_u, dlp_u = _log_p2(1.0 - x_d, a, METHOD)
        # Two-class softmax = sigmoid of the logit difference; x_u = 1 - x_d moves against v.
        s = ((lp_u * inv_tau + g1) - (lp_d * inv_tau + g0)) * inv_tau
        p = _sigmoid(s)
        out = base + p
        grad = p * (1.0 - p) * (-dlp_u - dlp_d) * inv_tau * inv_tau
    else:
        base = round_half_even(v) - 1.0
        d = v - base
        lw0, dw0 = _log_w3(d, a, r, pw, METHOD)
        lw1, dw1 = _log_w3(d - 1.0, a, r, pw, METHOD)
        lw2, dw2 = _log_w3(d - 2.0, a, r, pw, METHOD)
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


@jit
def _sga_fwd_kernel(v_ptr, g_ptr, out_ptr, n, seed, tau, a, r, pw, METHOD: tl.constexpr,
                    NOISE: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    out, _ = _sga_values(v_ptr, g_ptr, offs, mask, n, seed, tau, a, r, pw, METHOD, NOISE,
                         COMPUTE)
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@jit
def _sga_bwd_kernel(v_ptr, g_ptr, grad_out_ptr, grad_v_ptr, n, seed, tau, a, r, pw,
                    METHOD: tl.constexpr, NOISE: tl.constexpr, COMPUTE: tl.constexpr,
                    BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    _, grad = _sga_values(v_ptr, g_ptr, offs, mask, n, seed, tau, a, r, pw, METHOD, NOISE,
                          COMPUTE)
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
        out = dispatch.empty(v.shape, v.dtype, v.device)
        _launch(_sga_fwd_kernel, ctx, v, gumbel, out)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        v, gumbel = ctx.saved_tensors
        grad_v = dispatch.empty(v.shape, v.dtype, v.device)
        _launch(_sga_bwd_kernel, ctx, v, gumbel, grad_out.contiguous(), grad_v)
        return grad_v, None, None, None, None, None, None, None


def _launch(kernel, ctx, v: Tensor, gumbel: Tensor, *tensors: Tensor) -> None:
    """One element per lane over v; `tensors`: the kernel's other pointers, in order."""
    method, tau, a, r, power = ctx.args
    n = v.numel()
    kernel[(cdiv(n, _BLOCK),)](v, gumbel, *tensors, n, ctx.seed, tau, a, r, power,
                               METHOD=method, NOISE=ctx.noise,
                               COMPUTE=dispatch.compute_type(v.dtype), BLOCK=_BLOCK)


def sga_round(v: Tensor, method: str, tau: float, a: float = 2.3, r: float = 0.98,
              n: float = 1.5, gumbel: Tensor | None = None,
              generator: torch.Generator | None = None) -> Tensor:
    """`sga_round_reference` fused: one Triton pass forward, one backward (Triton on CUDA
    tensors, or everywhere with NIC_KERNELS=triton; the reference otherwise).

    v: any shape; gumbel: optional (K, *v.shape) noise, K = 2 or 3 (`num_classes(method)`).
    Without it the kernel draws Philox noise seeded from `generator` (the reference draws torch
    noise), so the two agree (to float rounding) only when `gumbel` is given."""
    k = num_classes(method)
    if not tau > 0:
        raise ValueError(f"the temperature must be positive, got {tau}")
    if gumbel is not None and gumbel.shape != (k, *v.shape):
        raise ValueError(f"gumbel must have shape {(k, *v.shape)}, got {tuple(gumbel.shape)}")
    inputs = (v,) if gumbel is None else (v, gumbel)
    if use_triton(*inputs, dtypes=NETWORK_DTYPES, autograd=True):
        dispatch.load(globals())
        return _SgaRound.apply(v.contiguous(), gumbel, method, tau, a, r, n, generator)
    return sga_round_reference(v, method, tau, a, r, n, gumbel, generator)
