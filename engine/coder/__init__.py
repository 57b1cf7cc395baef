"""The entropy coder: interleaved rANS (docs/CODER.md) on the CPU or on the GPU, same bytes.

    coder = open_coder(tables, "cuda" if available() else "cpu")
    data = coder.encode([[(values, indexes), ...], ...])   # one bytes object per stream
    dec = coder.decoder(data)
    outs = dec.decode([indexes of the next segment of each stream, or None])
    dec.finish()

`open_coder` is the one place a backend is chosen: the CPU coder (`engine._rans`, cpu.py), or
the warp coder (warp.py) on a CUDA device (its extension is built on first use: cuda_build.py)
or emulated on the host (emulation.py; slow, for tests). Damaged streams and bad table indexes
raise `CodecError` naming the stream.
"""

from __future__ import annotations

import torch

from .. import _rans
from ..entropy.cdf import CdfTables
from . import cuda_build
from .base import Array, Coder, Segment, StreamDecoder
from .cpu import CpuCoder
from .cuda_build import available, unavailable_reason
from .warp import WarpCoder, pack_tables

__all__ = ["STREAM_HEADER_BYTES", "Array", "Coder", "Segment", "StreamDecoder", "available",
           "open_coder", "pack_tables", "unavailable_reason"]

STREAM_HEADER_BYTES = _rans.HEADER_BYTES  # the 32 lane states that open every coded stream


def open_coder(tables: CdfTables, device: torch.device | str, threads: int = 0,
               emulate: bool = False) -> Coder:
    """The coder of `tables` for symbols on `device`.

    device: "cuda" or "cuda:N" runs the CUDA coder there (RuntimeError when `available()` is
        False: callers fall back to "cpu"); "cpu" the CPU coder.
    threads: of the CPU coder (0: all cores).
    emulate: run the CUDA coder's algorithm on the host instead (device "cpu").
    Invalid tables raise ValueError.
    """
    device = torch.device(device)
    if emulate:
        if device.type != "cpu":
            raise ValueError(f"the emulated coder runs on the CPU, not on {device}")
        from . import emulation  # engine._rans_warp_host: for tests only

        return WarpCoder(tables, emulation, device, "emulated")
    if device.type == "cuda":
        return WarpCoder(tables, cuda_build.extension(), device, "cuda")
    if device.type == "cpu":
        return CpuCoder(tables, threads)
    raise ValueError(f"no rANS coder for device {device}")
