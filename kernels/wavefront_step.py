"""One wavefront step of the joint autoregressive model (`kernels.wavefront_step_reference`) as
one Triton kernel, equal to the reference bit for bit: integer sums do not depend on their order,
and the rest is the same integer operations.

One program per image and block of BLOCK_P positions runs every layer of the step. Per block of
BLOCK_N output channels it accumulates int8 tl.dot products over BLOCK_K inputs in int32 (as
kernels/int_conv.py does), requantizes in int64, and writes the int8 activations to a scratch
buffer of its own in global memory, which the next layer reads: two buffers in turn, a barrier
between layers (a thread reads what the program's other threads wrote). The context layer reads
its inputs straight from the taps buffer (the gather), the first entropy-parameter layer adds
params_acc, and the last writes the scales, the means and the table index of each scale. A step
has few positions (at most 16 in a Kodak image's latent), so a program usually holds all of
them and reads every weight once (1.7 MB at M = 192, from L2).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton import cdiv

from . import utils
from .int_conv_reference import LRELU_INT8, LRELU_NUM, LRELU_SHIFT
from .wavefront_step_reference import WavefrontLayers

BLOCK_P = 16  # positions per program: tl.dot's least M
BLOCK_N = 64  # output channels per tile
BLOCK_K = 64  # inputs per product: an int8 tl.dot needs K >= 32 on NVIDIA GPUs
_LRELU_INT8 = tl.constexpr(LRELU_INT8)
_LRELU_NUM = tl.constexpr(LRELU_NUM)
_LRELU_SHIFT = tl.constexpr(LRELU_SHIFT)


@triton.jit(do_not_specialize=["P"])
def wavefront_step_kernel(taps_ptr, rows_ptr, cols_ptr, acc_ptr, w_ptr, vec_ptr, table_ptr,
                          thr_ptr, idx_ptr, scales_ptr, means_ptr, scratch_ptr, P, M, TH, TW,
                          H, W, NV, NT, CMAX, LAYERS: tl.constexpr, STEPS: tl.constexpr,
                          BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """One program: positions p of image b (grid: position blocks, images). Layer l is row l of
    the table (C, CO, mode), its weight (CO, C) at w_ptr + the earlier layers' C * CO, its bias,
    mult and shift at vec_ptr + (0, NV, 2 NV) + the earlier layers' CO."""
    b = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = p < P
    row = tl.load(rows_ptr + p, mask=p_ok, other=0)
    col = tl.load(cols_ptr + p, mask=p_ok, other=0)
    local = tl.arange(0, BLOCK_P)[:, None] * CMAX  # this program's rows of a scratch buffer
    scratch = scratch_ptr + (b * tl.num_programs(0) + tl.program_id(0)) * 2 * BLOCK_P * CMAX
    taps_img = taps_ptr + b * M * TH * TW
    w_layer = w_ptr
    v_layer = vec_ptr
    for layer in tl.static_range(LAYERS):
        C = tl.load(table_ptr + 3 * layer)
        CO = tl.load(table_ptr + 3 * layer + 1)
        mode = tl.load(table_ptr + 3 * layer + 2)
        src = scratch + ((layer + 1) % 2) * BLOCK_P * CMAX  # what layer l - 1 wrote
        dst = scratch + (layer % 2) * BLOCK_P * CMAX
        for n0 in range(0, CO, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            n_ok = n < CO
            acc = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.int32)
            for k0 in range(0, C, BLOCK_K):
                kk = k0 + tl.arange(0, BLOCK_K)
                a_mask = p_ok[:, None] & (kk < C)[None, :]
                if layer == 0:  # input kk: channel kk // 12 at tap j = kk % 12, (j // 5, j % 5)
                    j = kk % 12
                    a_ptr = (taps_img + (kk // 12).to(tl.int64)[None, :] * TH * TW
                             + (row[:, None] + (j // 5)[None, :]) * TW
                             + col[:, None] + (j % 5)[None, :])
                else:
                    a_ptr = src + local + kk[None, :]
                a = tl.load(a_ptr, mask=a_mask, other=0)
                w = tl.load(w_layer + n[None, :] * C + kk[:, None],
                            mask=(kk < C)[:, None] & n_ok[None, :], other=0)
                acc = tl.dot(a, w, acc, out_dtype=tl.int32)
            ok = p_ok[:, None] & n_ok[None, :]
            t = acc.to(tl.int64)
            if layer == 1:  # the params half of the first entropy-parameter layer
                t += tl.load(acc_ptr + (b * CO + n[None, :]) * H * W + (row * W + col)[:, None],
                             mask=ok, other=0)
            # requantize (kernels.int_conv_reference): bias, multiplier, LeakyReLU, shift
            bias = tl.load(v_layer + n, mask=n_ok, other=0).to(tl.int64)
            mult = tl.load(v_layer + NV + n, mask=n_ok, other=0).to(tl.int64)
            k = tl.load(v_layer + 2 * NV + n, mask=n_ok, other=1).to(tl.int64)
            t = (t + bias[None, :]) * mult[None, :]
            t = tl.where((t < 0) & (mode == _LRELU_INT8), (t * _LRELU_NUM) >> _LRELU_SHIFT, t)
            one = tl.full((BLOCK_N,), 1, tl.int64)
            out = (t + (one << (k - 1))[None, :]) >> k[None, :]  # round half up
            if layer < LAYERS - 1:
                out = tl.minimum(tl.maximum(out, -128), 127).to(tl.int8)
                tl.store(dst + local + n[None, :], out, mask=ok)
            else:  # scales (channels < M) and means, (B, M, P) each
                is_scale = (n < M)[None, :]
                at = (b * M + n[None, :]) * P + p[:, None]
                tl.store(scales_ptr + at, out, mask=ok & is_scale)
                tl.store(means_ptr + at - M * P, out, mask=ok & ~is_scale)
                # the index: the largest i with thresholds[i - 1] < scale (sorted thresholds),
                # one bit of i per step, the highest first
                idx = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.int32)
                for s in tl.static_range(STEPS):
                    cand = idx + (1 << (STEPS - 1 - s))
                    inside = cand <= NT
                    bound = tl.load(thr_ptr + cand - 1, mask=inside, other=0)
                    idx = tl.where(inside & (bound < out), cand, idx)
                tl.store(idx_ptr + at, idx, mask=ok & is_scale)
        w_layer += C * CO
        v_layer += CO
        tl.debug_barrier()  # layer l's scratch is written before l + 1 reads it


def wavefront_step_triton(taps: Tensor, rows: Tensor, cols: Tensor, params_acc: Tensor,
                          layers: WavefrontLayers) -> tuple[Tensor, Tensor, Tensor]:
    """`wavefront_step_reference` in one kernel launch: (indexes int32, scales int64, means
    int64), each (B, M, P)."""
    taps, params_acc = taps.contiguous(), params_acc.contiguous()
    rows, cols = rows.contiguous(), cols.contiguous()
    b, m, th, tw = taps.shape
    h, w = params_acc.shape[2:]
    p = rows.numel()
    weights, vectors, table = layers.packed
    thresholds = layers.thresholds.contiguous()
    cmax = max(layer.weight.shape[0] for layer in (layers.context, *layers.params[:-1]))
    grid = (cdiv(p, BLOCK_P), b)
    scratch = torch.empty(grid[0] * b * 2 * BLOCK_P * cmax, dtype=torch.int8, device=taps.device)
    indexes = utils.empty((b, m, p), torch.int32, taps.device)
    scales = utils.empty((b, m, p), torch.int64, taps.device)
    means = utils.empty((b, m, p), torch.int64, taps.device)
    wavefront_step_kernel[grid](
        taps, rows, cols, params_acc, weights, vectors, table, thresholds, indexes, scales,
        means, scratch, p, m, th, tw, h, w, vectors.shape[1], thresholds.numel(), cmax,
        LAYERS=table.shape[0], STEPS=max(1, thresholds.numel().bit_length()), BLOCK_P=BLOCK_P,
        BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
    return indexes, scales, means
