"""Precision of the two big transforms, g_a and g_s: float32, or bfloat16 where it is fast.

On x86 CPUs with AMX (Intel Xeon Sapphire Rapids and later) oneDNN runs bfloat16 convolutions
on channels-last tensors several times faster than float32 (RESULTS.md has the figures). Only
g_a and g_s change (g_s's last layer, which writes the pixels, stays float32): the
hyper-transforms and entropy models stay float32 / float64, so the side information and the
decoder's table choices do not depend on the precision, and a stream made at either precision
decodes at either. The cost is the reconstruction's rounding (bfloat16 keeps 8 significant
bits) and a few y symbols that round the other way; RESULTS.md measures both.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch

PRECISIONS = ("auto", "float32", "bfloat16")


def check(precision: str) -> str:
    """precision itself, or ValueError if it is not one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}; expected one of {PRECISIONS}")
    return precision


@functools.cache
def amx_bfloat16() -> bool:
    """Whether this CPU has AMX tiles and AVX-512 bfloat16 (oneDNN's fast bfloat16 path)."""
    try:
        return torch.cpu._is_amx_tile_supported() and torch.cpu._is_avx512_bf16_supported()
    except AttributeError:  # a torch without these probes
        return False


def resolve(precision: str, device: torch.device) -> torch.dtype:
    """The dtype g_a and g_s run in. "auto": bfloat16 on CPUs with AMX, float32 elsewhere (the
    GPU figures of bfloat16 are not measured yet)."""
    if check(precision) == "auto":
        return torch.bfloat16 if device.type == "cpu" and amx_bfloat16() else torch.float32
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


@contextmanager
def transforms_in(dtype: torch.dtype, device: torch.device) -> Iterator[None]:
    """Autocast to `dtype` unless it is float32. The model returns float32 either way."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield


def layout(x: torch.Tensor) -> torch.Tensor:
    """Channels-last under reduced-precision autocast (oneDNN's fast bfloat16 convolutions want
    it; NCHW bfloat16 is slower than float32), x unchanged otherwise. The transforms call it on
    their input, so the codec only chooses the precision (`transforms_in`)."""
    if torch.is_autocast_enabled(x.device.type):
        return x.contiguous(memory_format=torch.channels_last)
    return x
