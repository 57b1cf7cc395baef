"""Exact integer convolution on the CPU: `int_conv_reference`'s result bit for bit, at GEMM
speed, through im2col and one of two exact matrix products, chosen per process:

- INT8_GEMM (x86 CPUs with AVX2): csrc/int_gemm.cpp's int8 GEMM with int32 sums. Integers, so
  exact in any order; 1.15 to 1.6x as fast as the float32 GEMM below on the integer
  hyper-decoder's layers (benchmarks/RESULTS.md).
- Otherwise, float32 GEMMs through torch's BLAS over chunks of CHUNK_K products. int8 values are
  exact in float32 and every product has |x*w| <= 2^14, so a reduction over at most
  CHUNK_K = 2^24 / 2^14 terms has every partial sum, in any order, with any blocking, threading
  or FMA, an integer of magnitude <= 2^24, which float32 holds exactly. Each chunk's sum is
  therefore exact; it is converted to int32 and the chunks are added in int32.

No overflow in int32 either way (`check_int_conv`). Nothing depends on the BLAS, the ISA, the
threads or the batch.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _int_gemm
from .int_conv_reference import INT8_MAX_PRODUCT, check_int_conv

INT8_GEMM = _int_gemm.simd
CHUNK_K = 2**24 // INT8_MAX_PRODUCT  # products per float32 GEMM: 1024
COLS_ELEMENTS = 2**22  # about the most im2col elements held at once
_PRECISION_LOCK = threading.Lock()  # one caller at a time sets and restores the switch
_PREPARED: dict[tuple[int, str], tuple[weakref.ref, int, object]] = {}


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


def prepared(source: object, form: str, make: Callable[[object], object]) -> object:
    """make(source), kept while source lives (and, for a tensor, its version counter says it is
    unchanged): an integer network's weights are converted once, not on every call (the joint
    autoregressive decoder runs its 1x1 layers once per wavefront step)."""
    key, version = (id(source), form), getattr(source, "_version", 0)
    hit = _PREPARED.get(key)
    if hit is not None and hit[0]() is source and hit[1] == version:
        return hit[2]
    value = make(source)
    if len(_PREPARED) >= 256:
        _PREPARED.clear()
    _PREPARED[key] = (weakref.ref(source), version, value)
    return value


def packed_weight(weight: Tensor) -> Tensor:
    """The kernel (Co, C, k, k) int8 as the int8 GEMM's packed A (`_int_gemm.pack_a`), packed
    once while the weight lives unchanged."""
    return prepared(weight, "packed", _pack)


def _pack(weight: Tensor) -> Tensor:
    rows = weight.reshape(weight.shape[0], -1).contiguous()
    packed = torch.empty(_int_gemm.packed_a_size(*rows.shape), dtype=torch.int16)
    _int_gemm.pack_a(rows.data_ptr(), *rows.shape, packed.data_ptr())
    return packed


def _chunks(weight: Tensor) -> list[Tensor]:
    """The kernel as float32 rows (Co, C*k*k) cut into reductions of CHUNK_K columns."""
    rows = weight.reshape(weight.shape[0], -1).float()
    return [rows[:, k0 : k0 + CHUNK_K].contiguous() for k0 in range(0, rows.shape[1], CHUNK_K)]


def _int8_product(weight: Tensor, cols: Tensor, out: Tensor) -> None:
    """out (Co, N) int32, rows of any stride = weight rows (Co, K) @ cols (K, N) int8."""
    (co, n), k = out.shape, cols.shape[0]
    packed, cols = packed_weight(weight), cols.contiguous()  # alive during the call
    _int_gemm.gemm(packed.data_ptr(), cols.data_ptr(), out.data_ptr(), co, n, k, out.stride(0),
                   torch.get_num_threads())


def _float_product(weight: Tensor, cols: Tensor, out: Tensor) -> None:
    """`_int8_product` through float32 GEMMs over chunks of CHUNK_K products."""
    with _ieee_float32_matmul():
        for j, w_chunk in enumerate(prepared(weight, f"float{CHUNK_K}", _chunks)):
            part = w_chunk @ cols[j * CHUNK_K : (j + 1) * CHUNK_K].float()
            if j == 0:
                out.copy_(part)  # float32 -> int32, exact (an integer below 2^24)
            else:
                out.add_(part.to(torch.int32))


def _columns(x: Tensor, r0: int, r1: int, k: int) -> Tensor:
    """im2col of output rows r0 .. r1 - 1: x (C, H, W) int8 -> int8 (C*k*k, (r1 - r0)*W);
    element (c*k*k + dy*k + dx, (r - r0)*W + j) is x[c, r + dy - k//2, j + dx - k//2], zero
    outside x. Strided views and one copy (F.unfold is several times slower)."""
    p = k // 2
    top, bottom = max(0, r0 - p), min(x.shape[1], r1 + p)
    band = F.pad(x[:, top:bottom], (p, p, top - (r0 - p), r1 + p - bottom))
    windows = band.unfold(1, k, 1).unfold(2, k, 1)  # (C, r1 - r0, W, k, k)
    return windows.permute(0, 3, 4, 1, 2).reshape(-1, (r1 - r0) * x.shape[2])


def int_conv_gemm(x: Tensor, weight: Tensor) -> Tensor:
    """x (B, C, H, W) int8 * weight (Co, C, k, k) int8 -> (B, Co, H, W) int32, equal to
    `int_conv_reference`. CPU tensors only: on a GPU the Triton kernel sums in integers, while
    cuBLAS precision can be changed outside this process's control (NVIDIA_TF32_OVERRIDE).

    One image at a time, in bands of output rows (at least one) whose im2col holds about
    COLS_ELEMENTS elements; 1x1 layers as one product over every image's pixels."""
    k = check_int_conv(x, weight)
    if x.device.type != "cpu":
        raise ValueError(f"int_conv_gemm takes CPU tensors, got {x.device}")
    product = _int8_product if INT8_GEMM else _float_product
    b, c, h, w = x.shape
    co = weight.shape[0]
    if k == 1:  # the wavefront steps: a few positions per image, where bands would cost more
        out = torch.empty((co, b * h * w), dtype=torch.int32)
        product(weight, x.permute(1, 0, 2, 3).reshape(c, -1), out)
        return out.view(co, b, h, w).permute(1, 0, 2, 3).contiguous()
    out = torch.empty((b, co, h, w), dtype=torch.int32)
    rows = max(1, COLS_ELEMENTS // (c * k * k * w))
    for i in range(b):
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            product(weight, _columns(x[i], r0, r1, k), out[i, :, r0:r1].view(co, -1))
    return out
