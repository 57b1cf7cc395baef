"""The entropy coder behind the codec: the C++ interleaved rANS coder (`engine._rans`).

A coded stream interleaves 32 rANS lanes and holds one or more segments; docs/CODER.md defines
the bytes. This module adapts the engine's `CdfTables` to the coder and turns the coder's
complaints about damaged input into `CodecError`.
"""

from __future__ import annotations

import numpy as np

from . import _rans
from .entropy.cdf import CdfTables
from .errors import CodecError

LANES = _rans.LANES
BACKEND = "cpu"

Segment = tuple[np.ndarray, np.ndarray]  # (values int32, table indexes int32)


def coder_tables(tables: CdfTables) -> _rans.Tables:
    return _rans.Tables(tables.cdfs, tables.sizes, tables.offsets)


def encode(tables: _rans.Tables, streams: list[list[Segment]], threads: int = 0) -> list[bytes]:
    """Code every stream (a list of segments) in parallel; one bytes object per stream."""
    return _rans.encode(tables, streams, threads)


def open_streams(tables: _rans.Tables, streams: list) -> list[_rans.Decoder]:
    try:
        return [_rans.Decoder(tables, s) for s in streams]
    except ValueError as e:
        raise CodecError(str(e)) from None


def decode(decoders: list[_rans.Decoder], indexes: list[np.ndarray],
           threads: int = 0) -> list[np.ndarray]:
    """Decode the next segment of every decoder, in parallel."""
    try:
        return _rans.decode_many(decoders, indexes, threads)
    except ValueError as e:
        raise CodecError(str(e)) from None


def finish(decoders: list[_rans.Decoder]) -> None:
    """Check that every stream was consumed exactly and its lanes returned to their start."""
    try:
        for d in decoders:
            d.finish()
    except ValueError as e:
        raise CodecError(str(e)) from None
