"""Precision of the two big transforms, g_a and g_s: float32, or bfloat16 where it is fast.

On x86 CPUs with bfloat16 dot products (AVX512_BF16: AMD Zen 4 and later, Intel Cooper Lake;
AMX: Intel Xeon Sapphire Rapids and later) oneDNN runs bfloat16 convolutions on channels-last
tensors about twice as fast as float32 (RESULTS.md has the figures). "auto" takes bfloat16 for
g_a there, and for g_s only with AMX: g_s's big layers are 3x3 ones, which run on NNPACK's
float32 Winograd convolution (engine.models.layers) as fast as oneDNN's bfloat16 direct one
without AMX, or faster (decoding in float32 took 1.0x to 1.08x bfloat16's time at N=64, 0.89x
at N=128, and 0.88x for cheng2020-anchor; benchmarks/RESULTS.md), and without its rounding,
though at twice its activation memory (decoding 4000x3000 peaked at 3.9 GB instead of 2.4).

Only g_a and g_s change (g_s's last layer, which writes the pixels, stays float32): the
hyper-transforms and entropy models stay float32 / float64, so the side information and the
decoder's table choices do not depend on the precision, and a stream made at either precision
decodes at either. The cost is the reconstruction's rounding (bfloat16 keeps 8 significant
bits) and a few y symbols that round the other way; RESULTS.md measures both.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

PRECISIONS = ("auto", "float32", "bfloat16")


def check(precision: str) -> str:
    """precision itself, or ValueError if it is not one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}; expected one of {PRECISIONS}")
    return precision


# oneDNN's ISA names (ONEDNN_MAX_CPU_ISA) below the first with bfloat16 dot products.
_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                      "AVX512_CORE_VNNI")


@functools.cache
def amx_bfloat16() -> bool:
    """Whether this CPU has AMX tiles and AVX-512 bfloat16 (training's fast bfloat16 path)."""
    try:
        return torch.cpu._is_amx_tile_supported() and torch.cpu._is_avx512_bf16_supported()
    except AttributeError:  # a torch without these probes
        return False


@functools.cache
def fast_bfloat16() -> bool:
    """Whether oneDNN runs bfloat16 convolutions natively here: the CPU has AVX512_BF16 and
    ONEDNN_MAX_CPU_ISA (or its old name DNNL_MAX_CPU_ISA) does not forbid it. Elsewhere oneDNN
    emulates bfloat16, slower than float32."""
    try:
        native = torch.cpu._is_avx512_bf16_supported()
    except AttributeError:  # a torch without this probe
        return False
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    return native and limit.strip().upper() not in _ISAS_WITHOUT_BF16


def resolve(precision: str, device: torch.device, synthesis: bool = False) -> torch.dtype:
    """The dtype g_a (or, with `synthesis`, g_s) runs in. "auto": bfloat16 on CPUs with native
    bfloat16 dot products (`fast_bfloat16`), for g_s only with AMX too; float32 elsewhere (the
    GPU figures of bfloat16 are not measured yet)."""
    if check(precision) == "auto":
        fast = device.type == "cpu" and fast_bfloat16() and (not synthesis or amx_bfloat16())
        return torch.bfloat16 if fast else torch.float32
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


def describe(precision: str, device: torch.device) -> str:
    """What `resolve` chooses, in words: "g_a and g_s in float32", "g_a in bfloat16, g_s in
    float32"."""
    analysis, synthesis = (str(resolve(precision, device, s)).removeprefix("torch.")
                           for s in (False, True))
    if analysis == synthesis:
        return f"g_a and g_s in {analysis}"
    return f"g_a in {analysis}, g_s in {synthesis}"


# The dtype g_a and g_s run in, as the codec chose it for the call in progress (`transforms_in`).
_TRANSFORM_DTYPE: ContextVar[torch.dtype] = ContextVar("transform_dtype", default=torch.float32)


@contextmanager
def transforms_in(dtype: torch.dtype) -> Iterator[None]:
    """Within this block g_a and g_s run in `dtype` (they opt in with `transform`); nothing else
    does, so the entropy models, the hyper-networks and whatever chooses a table stay float32
    or exact whatever the precision."""
    token = _TRANSFORM_DTYPE.set(dtype)
    try:
        yield
    finally:
        _TRANSFORM_DTYPE.reset(token)


@contextmanager
def transform(x: torch.Tensor) -> Iterator[torch.Tensor]:
    """Around one call of g_a or g_s on x: autocast to the dtype of `transforms_in` (none for
    float32), yielding x in the layout that wants (`layout`). The transforms return float32."""
    dtype = _TRANSFORM_DTYPE.get()
    if dtype == torch.float32:
        yield layout(x)  # under training's own autocast, channels-last too
        return
    with torch.autocast(x.device.type, dtype=dtype):
        yield layout(x)


def layout(x: torch.Tensor) -> torch.Tensor:
    """Channels-last under reduced-precision autocast (oneDNN's fast bfloat16 convolutions want
    it; NCHW bfloat16 is slower than float32), x unchanged otherwise."""
    if torch.is_autocast_enabled(x.device.type):
        return x.contiguous(memory_format=torch.channels_last)
    return x
