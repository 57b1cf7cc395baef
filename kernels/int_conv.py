"""Exact integer convolution in Triton: an implicit GEMM with int8 operands and int32 sums, equal
to `kernels.int_conv_reference` bit for bit (integer sums do not depend on their order).

Each program computes a BLOCK_P (output pixels) x BLOCK_CO (output channels) tile of one image,
looping over K = C*k*k in blocks of BLOCK_K: the input at the shifted positions (masked where the
zero padding is), the weights as (K, Co), and an int8 dot product accumulated in int32. The
bound of `check_int_conv` holds for every partial sum too, so accumulators that saturate (sm_80's
mma .satfinite) and ones that wrap give the same result.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton import cdiv, next_power_of_2

from . import utils
from .int_conv_reference import check_int_conv

BLOCK_K = 64  # an int8 tl.dot needs K >= 32 on NVIDIA GPUs
MAX_BLOCK = 64  # BLOCK_P and BLOCK_CO: from 16 (tl.dot's least M and N) to this


@triton.jit
def int_conv_kernel(x_ptr, w_ptr, out_ptr, C, H, W, CO, KSIZE: tl.constexpr,
                    BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_K: tl.constexpr):
    """One program: output pixels p x output channels co of image b (grid: pixel blocks,
    channel blocks, images)."""
    b = tl.program_id(2).to(tl.int64)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    co = tl.program_id(1) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    HW = H * W
    KK: tl.constexpr = KSIZE * KSIZE
    PAD: tl.constexpr = KSIZE // 2
    K = C * KK
    oh = p // W
    ow = p % W
    x_img = x_ptr + b * C * HW  # 64-bit bases; channel and weight-row offsets in 64 bits too
    w_cols = w_ptr + co.to(tl.int64)[None, :] * K  # weight (Co, K) read as (K, Co)
    acc = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)  # kk = c*k*k + dy*k + dx, weight's (C, k, k) order
        ih = oh[:, None] + (kk % KK // KSIZE - PAD)[None, :]
        iw = ow[:, None] + (kk % KSIZE - PAD)[None, :]
        inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        a_mask = (p < HW)[:, None] & (kk < K)[None, :] & inside
        a = tl.load(x_img + (kk // KK).to(tl.int64)[None, :] * HW + ih * W + iw, mask=a_mask,
                    other=0)
        w = tl.load(w_cols + kk[:, None], mask=(kk < K)[:, None] & (co < CO)[None, :], other=0)
        acc = tl.dot(a, w, acc, out_dtype=tl.int32)
    out = out_ptr + b * CO * HW + co.to(tl.int64)[None, :] * HW + p[:, None]
    tl.store(out, acc, mask=(p < HW)[:, None] & (co < CO)[None, :])


def int_conv_triton(x: Tensor, weight: Tensor) -> Tensor:
    """x (B, C, H, W) int8 * weight (Co, C, k, k) int8 -> (B, Co, H, W) int32, equal to
    `int_conv_reference`."""
    k = check_int_conv(x, weight)
    x, weight = x.contiguous(), weight.contiguous()
    b, c, h, w = x.shape
    co = weight.shape[0]
    out = utils.empty((b, co, h, w), torch.int32, x.device)
    block_p = min(MAX_BLOCK, max(16, next_power_of_2(h * w)))
    block_co = min(MAX_BLOCK, max(16, next_power_of_2(co)))
    grid = (cdiv(h * w, block_p), cdiv(co, block_co), b)
    int_conv_kernel[grid](x, weight, out, c, h, w, co, KSIZE=k, BLOCK_P=block_p,
                           BLOCK_CO=block_co, BLOCK_K=BLOCK_K)
    return out
