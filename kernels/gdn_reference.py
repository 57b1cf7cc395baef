"""GDN / IGDN in PyTorch: the definition the Triton kernel (`kernels/gdn.py`) is tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gdn_reference(x: Tensor, beta: Tensor, gamma: Tensor, inverse: bool = False) -> Tensor:
    """x (B, C, H, W); beta (C,); gamma (C, C). y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)
    (times the root for the inverse), in x's dtype."""
    norm = F.conv2d(x * x, gamma.to(x.dtype)[:, :, None, None], beta.to(x.dtype))
    return x * torch.sqrt(norm) if inverse else x * torch.rsqrt(norm)
