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

This module is the definition in PyTorch (`sga_round_reference`); `kernels/sga.py` is the same
as one fused Triton pass forward and one backward. Both compute in float32 for half inputs. The
Gumbel noise is a (K, *v.shape) tensor when given, so both can be compared element by element;
otherwise the reference draws it with torch and the kernel with Philox.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

METHODS = ("atanh", "linear", "cosine", "ssl", "linear3", "cosine3", "ssl3")
EPS = 1e-5  # distances are clamped into [EPS, 1 - EPS] before logs
W_MIN = 1e-6  # floor of the three-class weights, so their logs stay finite
U_MIN = 1e-7  # uniforms are clamped into [U_MIN, 1 - U_MIN] before the Gumbel transform


def num_classes(method: str) -> int:
    if method not in METHODS:
        raise ValueError(f"unknown rounding method {method!r}; expected one of {METHODS}")
    return 3 if method.endswith("3") else 2


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
