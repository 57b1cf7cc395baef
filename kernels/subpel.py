"""Sub-pixel upsampling epilogue in Triton: bias + pixel shuffle (+ LeakyReLU) on a conv output,
read once and written once. The definition is `kernels.subpel_reference`; the IGDN form runs
the GDN kernel (`kernels.gdn.gdn_triton` with a bias and a shuffle factor)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton import cdiv, next_power_of_2

from . import utils
from .subpel_reference import LRELU_SLOPE


@triton.jit
def _subpel_kernel(x_ptr, bias_ptr, out_ptr, C, H, W, R: tl.constexpr, LRELU: tl.constexpr,
                   SLOPE: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_H: tl.constexpr,
                   BLOCK_W: tl.constexpr):
    # One program: a BLOCK_H x BLOCK_W tile of one output plane (image b, channel c).
    bc = tl.program_id(0).to(tl.int64)
    p = tl.arange(0, BLOCK_H * BLOCK_W)
    oh = tl.program_id(1) * BLOCK_H + p // BLOCK_W
    ow = tl.program_id(2) * BLOCK_W + p % BLOCK_W
    mask = (oh < R * H) & (ow < R * W)
    sub = (oh % R) * R + ow % R
    x_group = x_ptr + bc * (R * R) * (H * W)  # 64-bit base; 32-bit offsets within the group
    x = tl.load(x_group + sub * (H * W) + (oh // R) * W + ow // R, mask=mask)
    b = tl.load(bias_ptr + (bc % C) * (R * R) + sub, mask=mask)
    out_ty = out_ptr.dtype.element_ty
    # Round to the output type after each step, as the reference does: an add or a multiply in
    # COMPUTE, then rounded, is the correctly rounded operation of the output type.
    v = (x.to(COMPUTE) + b.to(COMPUTE)).to(out_ty).to(COMPUTE)
    if LRELU:
        v = tl.where(v > 0, v, (v * SLOPE).to(out_ty).to(COMPUTE))
    tl.store(out_ptr + bc * (R * H * R * W) + oh * (R * W) + ow, v.to(out_ty), mask=mask)


def subpel_triton(y: Tensor, bias: Tensor, r: int, lrelu: bool) -> Tensor:
    """(B, C*r*r, H, W) conv output -> (B, C, r*H, r*W), bit-identical to `subpel_reference` in
    every float dtype but bfloat16 (where the interpreter truncates)."""
    y, bias = y.contiguous(), bias.contiguous()
    b, crr, h, w = y.shape
    c = crr // (r * r)
    dtype = torch.promote_types(y.dtype, bias.dtype)
    out = utils.empty((b, c, r * h, r * w), dtype, y.device)
    block_w = min(128, next_power_of_2(r * w))
    block_h = max(1, 1024 // block_w)
    grid = (b * c, cdiv(r * h, block_h), cdiv(r * w, block_w))
    _subpel_kernel[grid](y, bias, out, c, h, w, R=r, LRELU=lrelu, SLOPE=LRELU_SLOPE,
                         COMPUTE=utils.compute_type(dtype), BLOCK_H=block_h, BLOCK_W=block_w)
    return out
