"""Exact integer convolution on the CPU through float32 GEMM: `int_conv_reference`'s result bit
for bit, at BLAS speed.

Exact by construction: int8 values are exact in float32 and every product has |x*w| <= 2^14, so
a reduction over at most CHUNK_K = 2^24 / 2^14 terms has every partial sum, in any order, with
any blocking, threading or FMA, an integer of magnitude <= 2^24, which float32 holds exactly.
Each chunk's sum is therefore exact; it is converted to int32 and the chunks are added in int32
(no overflow: `check_int_conv`). Nothing depends on the BLAS, the ISA, the threads or the batch.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

from .int_conv_reference import INT8_MAX_PRODUCT, check_int_conv

CHUNK_K = 2**24 // INT8_MAX_PRODUCT  # products per float32 GEMM: 1024
COLS_FLOATS = 2**22  # about the most im2col floats held at once (16 MiB)
_PRECISION_LOCK = threading.Lock()  # one caller at a time sets and restores the switch
_CHUNKS: dict[tuple[int, int], tuple[weakref.ref, int, list[Tensor]]] = {}


@contextmanager
def _ieee_float32_matmul() -> Iterator[None]:
    """CPU float32 matmul in IEEE float32 inside the block. oneDNN may otherwise compute float32
    GEMMs in bfloat16 or TF32 (torch.backends.mkldnn.matmul.fp32_precision, which
    torch.set_float32_matmul_precision("medium"/"high") also sets), rounding partial sums. This
    per-backend switch is what ATen's CPU GEMM reads; reading the legacy
    torch.get_float32_matmul_precision() raises once a program mixes the two APIs."""
    matmul = torch.backends.mkldnn.matmul
    with _PRECISION_LOCK:
        saved = matmul.fp32_precision
        matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision = saved


def _weight_chunks(weight: Tensor, step: int) -> list[Tensor]:
    """The kernel as float32 rows (Co, C*k*k) cut into reductions of `step` columns, kept while
    the weight lives unchanged: an integer network's weights are converted once, not on every
    call (the joint autoregressive decoder calls its 1x1 layers once per wavefront step)."""
    key = (id(weight), step)
    hit = _CHUNKS.get(key)
    if hit is not None and hit[0]() is weight and hit[1] == weight._version:
        return hit[2]
    rows = weight.reshape(weight.shape[0], -1).float()
    chunks = [rows[:, k0 : k0 + step].contiguous() for k0 in range(0, rows.shape[1], step)]
    if len(_CHUNKS) >= 256:
        _CHUNKS.clear()
    _CHUNKS[key] = (weakref.ref(weight), weight._version, chunks)
    return chunks


def _columns(x: Tensor, r0: int, r1: int, k: int) -> Tensor:
    """im2col of output rows r0 .. r1 - 1: x (C, H, W) int8 -> float32 (C*k*k, (r1 - r0)*W);
    element (c*k*k + dy*k + dx, (r - r0)*W + j) is x[c, r + dy - k//2, j + dx - k//2], zero
    outside x. Strided views and one copy in int8 (F.unfold is several times slower), then
    float32."""
    p = k // 2
    top, bottom = max(0, r0 - p), min(x.shape[1], r1 + p)
    band = F.pad(x[:, top:bottom], (p, p, top - (r0 - p), r1 + p - bottom))
    windows = band.unfold(1, k, 1).unfold(2, k, 1)  # (C, r1 - r0, W, k, k)
    return windows.permute(0, 3, 4, 1, 2).reshape(-1, (r1 - r0) * x.shape[2]).float()


def int_conv_gemm(x: Tensor, weight: Tensor) -> Tensor:
    """x (B, C, H, W) int8 * weight (Co, C, k, k) int8 -> (B, Co, H, W) int32, equal to
    `int_conv_reference`. CPU tensors only: on a GPU the Triton kernel sums in integers, while
    cuBLAS precision can be changed outside this process's control (NVIDIA_TF32_OVERRIDE).

    One image at a time, in bands of output rows (at least one) whose im2col holds about
    COLS_FLOATS floats; the reduction over C*k*k runs in chunks of at most CHUNK_K products,
    whole channels where k*k <= CHUNK_K."""
    k = check_int_conv(x, weight)
    if x.device.type != "cpu":
        raise ValueError(f"int_conv_gemm takes CPU tensors, got {x.device}")
    b, c, h, w = x.shape
    co, kk = weight.shape[0], k * k
    step = CHUNK_K - CHUNK_K % kk if kk <= CHUNK_K else CHUNK_K
    chunks = [(k0, min(c * kk, k0 + step)) for k0 in range(0, c * kk, step)]
    w_chunks = _weight_chunks(weight, step)
    if k == 1:
        return _pointwise(x, chunks, w_chunks)
    rows = max(1, COLS_FLOATS // (min(step, c * kk) * w))
    out = torch.empty((b, co, h, w), dtype=torch.int32)
    with _ieee_float32_matmul():
        for i in range(b):
            for r0 in range(0, h, rows):
                r1 = min(h, r0 + rows)
                band = out[i, :, r0:r1].view(co, (r1 - r0) * w)
                for j, ((k0, k1), w_chunk) in enumerate(zip(chunks, w_chunks, strict=True)):
                    c0, c1 = k0 // kk, -(-k1 // kk)  # the channels of rows k0 .. k1 - 1
                    part = w_chunk @ _columns(x[i, c0:c1], r0, r1, k)[k0 - c0 * kk : k1 - c0 * kk]
                    if j == 0:
                        band.copy_(part)  # float32 -> int32, exact (an integer below 2^24)
                    else:
                        band.add_(part.to(torch.int32))
    return out


def _pointwise(x: Tensor, chunks: list[tuple[int, int]], w_chunks: list[Tensor]) -> Tensor:
    """A 1x1 convolution as one GEMM per chunk over every image's pixels at once: the joint
    autoregressive decoder's wavefront steps are 1x1 layers over a few positions each, where
    per-image bands would cost more than the products."""
    b, c, h, w = x.shape
    cols = x.permute(1, 0, 2, 3).reshape(c, -1).float()  # (C, B*H*W)
    with _ieee_float32_matmul():
        parts = ((w_chunk @ cols[k0:k1]).to(torch.int32)  # exact: an integer below 2^24
                 for (k0, k1), w_chunk in zip(chunks, w_chunks, strict=True))
        out = next(parts)
        for part in parts:
            out.add_(part)
    return out.view(-1, b, h, w).permute(1, 0, 2, 3).contiguous()
