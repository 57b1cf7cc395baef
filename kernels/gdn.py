"""GDN / IGDN: channel-mixing sum of squares, square root and division in one pass."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def gdn_reference(x: Tensor, beta: Tensor, gamma: Tensor, inverse: bool = False) -> Tensor:
    """x (B, C, H, W); beta (C,); gamma (C, C). y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)."""
    norm = F.conv2d(x * x, gamma[:, :, None, None], beta)
    return x * norm.sqrt() if inverse else x * norm.rsqrt()


gdn = gdn_reference
