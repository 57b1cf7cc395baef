"""The quantizer Q of one refinement step: a relaxed rounding (`nicengine_kernels.sga`) or a
baseline."""

from __future__ import annotations

import torch
from torch import Tensor

from nicengine_kernels.dispatch import sga_round

from .config import Refine


def relax(v: Tensor, refine: Refine, t: int, generator: torch.Generator | None = None
          ) -> Tensor:
    """Q(v) at step t, differentiable in v, for v of any shape (the values the codec rounds:
    y - mu, z - median).

    ste: round(v) forward, identity gradient. noise: v + U(-0.5, 0.5). The others: stochastic
    Gumbel-softmax rounding at temperature `refine.temperature(t)`."""
    if refine.method == "ste":
        return v + (torch.round(v) - v).detach()
    if refine.method == "noise":
        u = torch.rand(v.shape, dtype=v.dtype, device=v.device, generator=generator)
        return v + (u - 0.5)
    return sga_round(v, refine.method, refine.temperature(t), refine.a, refine.r, refine.n,
                     generator=generator)
