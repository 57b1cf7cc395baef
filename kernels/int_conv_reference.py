"""Exact integer convolution in PyTorch: the definition the integer hyper-decoder's convolution
kernels (`kernels/int_conv_gemm.py`, `kernels/int_conv.py`) are tested against, bit for bit
(Balle, Johnston, Minnen, "Integer networks for data compression with latent-variable models",
ICLR 2019: integer arithmetic makes the entropy model's parameters the same on every machine).

x (B, C, H, W) int8, weight (Co, C, k, k) int8 with k odd; stride 1, zero padding k // 2
("same") -> (B, Co, H, W) int32. Sums are taken in int64 and fit int32 under the bound below.

`requantize` is what an integer layer does after its convolution: the one definition of that
rule, which the integer layers (`engine.models.integer_hyper`) and the fused wavefront step
(`kernels/wavefront_step*.py`) follow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

INT8_MAX_PRODUCT = 128 * 128  # the largest |x * w| of two int8 values: (-128) * (-128)
# The most products (C*k*k) a sum may have: then |sum| <= MAX_TERMS * 2^14 <= 2^31 - 1.
MAX_TERMS = (2**31 - 1) // INT8_MAX_PRODUCT
# What an integer layer outputs: int64 fixed point; LeakyReLU then int8; int8 without an
# activation.
FIXED, LRELU_INT8, PLAIN_INT8 = 0, 1, 2
LRELU_NUM, LRELU_SHIFT = 41, 12  # LeakyReLU's slope, 41 / 4096 (about 0.01), in integers
INT8 = (-128, 127)


def max_channels(k: int) -> int:
    """The most input channels a k x k integer convolution may have for its sums to fit int32."""
    return MAX_TERMS // (k * k)


def check_int_conv(x: Tensor, weight: Tensor) -> int:
    """ValueError unless x (B, C, H, W) and weight (Co, C, k, k) are non-empty int8 tensors on
    one device, k odd, C <= max_channels(k); returns k."""
    if x.dtype != torch.int8 or weight.dtype != torch.int8:
        raise ValueError(f"int_conv takes int8 x and weight, got {x.dtype} and {weight.dtype}")
    if (x.dim() != 4 or weight.dim() != 4 or weight.shape[1] != x.shape[1]
            or weight.shape[2] != weight.shape[3] or weight.shape[2] % 2 == 0
            or x.numel() == 0 or weight.numel() == 0):
        raise ValueError(f"int_conv takes non-empty x (B, C, H, W) and weight (Co, C, k, k) with k "
                         f"odd, got {tuple(x.shape)} and {tuple(weight.shape)}")
    if x.device != weight.device:
        raise ValueError(f"int_conv takes x and weight on one device, got {x.device} and "
                         f"{weight.device}")
    c, k = x.shape[1], weight.shape[2]
    if c > max_channels(k):
        raise ValueError(f"int_conv sums C*k*k = {c * k * k} products of up to {INT8_MAX_PRODUCT}: "
                         f"over int32; k = {k} allows at most {max_channels(k)} input channels")
    return k


def int_conv_reference(x: Tensor, weight: Tensor) -> Tensor:
    """x (B, C, H, W) int8 * weight (Co, C, k, k) int8 -> (B, Co, H, W) int32, exactly: im2col
    (unfold copies values, and float64 holds int8 exactly), then an int64 matrix product. The
    product runs on the CPU (CUDA has no int64 matmul); the result is on x's device."""
    k = check_int_conv(x, weight)
    b, _, h, w = x.shape
    cols = F.unfold(x.cpu().double(), k, padding=k // 2).long()  # (B, C*k*k, H*W)
    sums = weight.cpu().reshape(weight.shape[0], -1).long() @ cols  # (B, Co, H*W)
    return sums.to(torch.int32).view(b, -1, h, w).to(x.device)


def requantize(acc: Tensor, bias: Tensor, mult: Tensor, shift: Tensor, mode: int) -> Tensor:
    """An integer layer after its convolution: acc (B, Co, ...) int32 or int64, the exact sums
    without the bias; bias, mult, shift (Co,) -> round((acc + bias) * mult / 2^shift), half up,
    with LeakyReLU before the rounding (LRELU_INT8: t < 0 -> floor(t * 41 / 4096)); int8
    clamped, or int64 for FIXED. Exact in int64: |acc + bias| < 2^32 and mult < 2^15."""
    view = (1, -1) + (1,) * (acc.dim() - 2)
    t = (acc.long() + bias.long().view(view)) * mult.long().view(view)
    if mode == LRELU_INT8:
        t = torch.where(t >= 0, t, (t * LRELU_NUM) >> LRELU_SHIFT)
    k = shift.long().view(view)
    out = (t + (torch.ones_like(k) << (k - 1))) >> k  # round half up
    return out if mode == FIXED else out.clamp(*INT8).to(torch.int8)
