"""GDN / IGDN in Triton: channel-mixing sum of squares, square root and division in one pass.
The definition is `kernels.gdn_reference`; `kernels.dispatch` chooses between the two."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton import cdiv, next_power_of_2

from . import utils


@triton.jit
def _input_tile(x_img, bias_ptr, c, sub, pix_off, pix_ok, C, HW, R: tl.constexpr,
                HAS_BIAS: tl.constexpr):
    """(channels c, pixels) tile of the shuffled input in float32, the bias added. pix_off: the
    offset of each pixel within its group of R*R input channels."""
    mask = (c < C)[:, None] & pix_ok[None, :]
    group = c.to(tl.int64) * (R * R * HW)
    x = tl.load(x_img + group[:, None] + pix_off[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        chan = (c * (R * R))[:, None] + sub[None, :]
        x += tl.load(bias_ptr + chan, mask=mask, other=0.0).to(tl.float32)
    return x


@triton.jit
def _gdn_kernel(x_ptr, bias_ptr, beta_ptr, gamma_ptr, out_ptr, C, H, W, R: tl.constexpr,
                HAS_BIAS: tl.constexpr, INVERSE: tl.constexpr, PRECISION: tl.constexpr,
                BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    # One program: all C channels of a BLOCK_H x BLOCK_W tile of output pixels of image b. The
    # norm of each BLOCK_C output channels sums tl.dot(gamma block, x^2 block) over the input
    # channel blocks; x tiles read again come from cache, so DRAM sees x about once.
    b = tl.program_id(2).to(tl.int64)
    p = tl.arange(0, BLOCK_H * BLOCK_W)
    oh = tl.program_id(1) * BLOCK_H + p // BLOCK_W
    ow = tl.program_id(0) * BLOCK_W + p % BLOCK_W
    pix_ok = (oh < R * H) & (ow < R * W)
    sub = (oh % R) * R + ow % R
    pix_off = sub * (H * W) + (oh // R) * W + ow // R
    out_pix = oh * (R * W) + ow
    x_img = x_ptr + b * C * (R * R) * (H * W)
    out_img = out_ptr + b * C * (R * H * R * W)
    cs = tl.arange(0, BLOCK_C)
    for co in range(0, C, BLOCK_C):
        acc = tl.zeros((BLOCK_C, BLOCK_H * BLOCK_W), dtype=tl.float32)
        for ci in range(0, C, BLOCK_C):
            xi = _input_tile(x_img, bias_ptr, ci + cs, sub, pix_off, pix_ok, C, H * W, R,
                             HAS_BIAS)
            g_mask = (co + cs < C)[:, None] & (ci + cs < C)[None, :]
            g = tl.load(gamma_ptr + (co + cs)[:, None] * C + (ci + cs)[None, :], mask=g_mask,
                        other=0.0).to(tl.float32)
            acc = tl.dot(g, xi * xi, acc, input_precision=PRECISION)
        xo = _input_tile(x_img, bias_ptr, co + cs, sub, pix_off, pix_ok, C, H * W, R, HAS_BIAS)
        # Padding channels get norm 1 (not 0) so they stay finite; they are not stored.
        beta = tl.load(beta_ptr + co + cs, mask=co + cs < C, other=1.0).to(tl.float32)
        norm = acc + beta[:, None]
        y = xo * tl.sqrt(norm) if INVERSE else xo * tl.rsqrt(norm)
        o_mask = (co + cs < C)[:, None] & pix_ok[None, :]
        o_off = (co + cs).to(tl.int64)[:, None] * (R * H * R * W) + out_pix[None, :]
        tl.store(out_img + o_off, y.to(out_ptr.dtype.element_ty), mask=o_mask)


def gdn_triton(x: Tensor, beta: Tensor, gamma: Tensor, inverse: bool, bias: Tensor | None = None,
               r: int = 1) -> Tensor:
    """The kernel on x (B, C*r*r, H, W), read through bias + pixel shuffle by r when given, ->
    (B, C, r*H, r*W). Float32 maths; the channel mix uses TF32 where cuDNN may (as the reference's
    1x1 convolution then does)."""
    x, beta, gamma = x.contiguous(), beta.contiguous(), gamma.contiguous()
    bsz, crr, h, w = x.shape
    c = crr // (r * r)
    out = utils.empty((bsz, c, r * h, r * w), x.dtype, x.device)
    if r == 1:  # no shuffle: one row of pixels per image, contiguous tiles
        h, w = 1, h * w
    block_w = min(64, next_power_of_2(r * w))
    block_h = 64 // block_w
    tf32 = x.dtype != torch.float32 or torch.backends.cudnn.allow_tf32
    # Up to 128 channels in one block: x^2 is then read once and the channel loops run once.
    block_c = min(128, max(16, next_power_of_2(c)))
    grid = (cdiv(r * w, block_w), cdiv(r * h, block_h), bsz)
    _gdn_kernel[grid](x, x if bias is None else bias.contiguous(), beta, gamma, out, c, h, w,
                      R=r, HAS_BIAS=bias is not None, INVERSE=inverse,
                      PRECISION="tf32" if tf32 else "ieee", BLOCK_C=block_c, BLOCK_H=block_h,
                      BLOCK_W=block_w, num_warps=8 if block_c == 128 else 4)
    return out
