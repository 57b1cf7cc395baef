"""max(x, bound) with a gradient that still flows when it pushes x up (Balle et al. 2018)."""

from __future__ import annotations

import torch
from torch import Tensor


class _LowerBound(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, bound: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return grad * ((x >= ctx.bound) | (grad < 0)), None


def lower_bound(x: Tensor, bound: float) -> Tensor:
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x.clamp_min(bound)  # no backward to shape: the plain op (what ONNX export traces)
    return _LowerBound.apply(x, bound)
