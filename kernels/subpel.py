"""Sub-pixel upsampling epilogue: bias + pixel shuffle (+ LeakyReLU or IGDN) on a conv output.

The kernels read the conv output once and write the upsampled tensor once. Output channel c at
output pixel (r*h + i, r*w + j) comes from input channel c*r*r + i*r + j at (h, w), the order of
F.pixel_shuffle.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import dispatch
from .dispatch import FLOAT_DTYPES, cdiv, jit, next_pow2, use_triton
from .gdn import launch_gdn

tl = None  # triton.language, bound by dispatch.load on the first launch


def subpel_reference(y: Tensor, bias: Tensor, r: int, lrelu: bool = False) -> Tensor:
    """(B, C*r*r, H, W) conv output -> (B, C, r*H, r*W) in y's dtype: add bias, shuffle,
    optional LeakyReLU."""
    out = F.pixel_shuffle(y + bias.to(y.dtype).view(1, -1, 1, 1), r)
    return F.leaky_relu(out, 0.01) if lrelu else out


def subpel_igdn_reference(y: Tensor, bias: Tensor, r: int, beta: Tensor, gamma: Tensor) -> Tensor:
    """bias + pixel shuffle, then IGDN with (beta[C], gamma[C, C]); in y's dtype."""
    x = F.pixel_shuffle(y + bias.to(y.dtype).view(1, -1, 1, 1), r)
    norm = F.conv2d(x * x, gamma.to(y.dtype)[:, :, None, None], beta.to(y.dtype))
    return x * torch.sqrt(norm)


@jit
def _subpel_kernel(x_ptr, bias_ptr, out_ptr, C, H, W, R: tl.constexpr, LRELU: tl.constexpr,
                   COMPUTE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
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
        v = tl.where(v > 0, v, (v * 0.01).to(out_ty).to(COMPUTE))
    tl.store(out_ptr + bc * (R * H * R * W) + oh * (R * W) + ow, v.to(out_ty), mask=mask)


def _subpel_triton(y: Tensor, bias: Tensor, r: int, lrelu: bool) -> Tensor:
    dispatch.load(globals())
    y, bias = y.contiguous(), bias.contiguous()
    b, crr, h, w = y.shape
    c = crr // (r * r)
    dtype = torch.promote_types(y.dtype, bias.dtype)
    out = dispatch.empty((b, c, r * h, r * w), dtype, y.device)
    block_w = min(128, next_pow2(r * w))
    block_h = max(1, 1024 // block_w)
    grid = (b * c, cdiv(r * h, block_h), cdiv(r * w, block_w))
    _subpel_kernel[grid](y, bias, out, c, h, w, R=r, LRELU=lrelu,
                         COMPUTE=dispatch.compute_type(dtype), BLOCK_H=block_h, BLOCK_W=block_w)
    return out


def subpel(y: Tensor, bias: Tensor, r: int, lrelu: bool = False) -> Tensor:
    """`subpel_reference`, fused on the GPU (float64 included: h_s runs in float64 when coding,
    and the kernel is bit-identical to the reference there)."""
    if use_triton(y, bias, dtypes=FLOAT_DTYPES):
        return _subpel_triton(y, bias, r, lrelu)
    return subpel_reference(y, bias, r, lrelu)


def subpel_igdn(y: Tensor, bias: Tensor, r: int, beta: Tensor, gamma: Tensor) -> Tensor:
    """`subpel_igdn_reference`, fused on the GPU: bias, shuffle and IGDN in one pass."""
    if use_triton(y, bias, beta, gamma):
        return launch_gdn(y, beta, gamma, inverse=True, bias=bias, r=r)
    return subpel_igdn_reference(y, bias, r, beta, gamma)
