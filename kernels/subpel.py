"""Sub-pixel upsampling epilogue: bias + pixel shuffle (+ LeakyReLU or IGDN) on a conv output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def subpel_reference(y: Tensor, bias: Tensor, r: int, lrelu: bool = False) -> Tensor:
    """(B, C*r*r, H, W) conv output -> (B, C, r*H, r*W): add bias, shuffle, optional LeakyReLU."""
    out = F.pixel_shuffle(y + bias.view(1, -1, 1, 1), r)
    return F.leaky_relu(out, 0.01) if lrelu else out


def subpel_igdn_reference(y: Tensor, bias: Tensor, r: int, beta: Tensor, gamma: Tensor) -> Tensor:
    """bias + pixel shuffle, then IGDN with (beta[C], gamma[C, C])."""
    x = F.pixel_shuffle(y + bias.view(1, -1, 1, 1), r)
    norm = F.conv2d(x * x, gamma[:, :, None, None], beta)
    return x * torch.sqrt(norm)


subpel = subpel_reference
subpel_igdn = subpel_igdn_reference
