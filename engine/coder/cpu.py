"""The CPU coder: the C++ extension engine._rans (csrc/rans_cpu.cpp), streams coded in parallel
on up to `threads` threads. Its batch calls name the failing stream themselves."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from .. import _rans
from ..entropy.cdf import CdfTables
from ..errors import CodecError
from .base import Array, Coder, Segment, StreamDecoder, to_numpy


@contextmanager
def _codec_errors() -> Iterator[None]:
    """engine._rans's ValueErrors (damaged streams, bad indexes) as CodecError."""
    try:
        yield
    except ValueError as e:
        raise CodecError(str(e)) from None


class CpuCoder(Coder):
    """threads: of the encoder and decoder (0: all cores). Invalid tables raise ValueError."""

    name = "cpu"

    def __init__(self, tables: CdfTables, threads: int = 0) -> None:
        self.device = torch.device("cpu")
        self._tables = _rans.Tables(tables.cdfs, tables.sizes, tables.offsets)
        self._threads = threads

    def encode(self, streams: list[list[Segment]]) -> list[bytes]:
        host = [[tuple(to_numpy(a) for a in pair) for pair in segs] for segs in streams]
        with _codec_errors():
            return _rans.encode(self._tables, host, self._threads)

    def decoder(self, streams: Sequence[bytes | memoryview]) -> StreamDecoder:
        return _CpuStreamDecoder(self._tables, streams, self._threads)


class _CpuStreamDecoder(StreamDecoder):
    def __init__(self, tables: _rans.Tables, streams: Sequence[bytes | memoryview],
                 threads: int) -> None:
        with _codec_errors():
            self._decoders = _rans.open_many(tables, list(streams))
        self._threads = threads
        self.num_streams = len(self._decoders)

    def _decode(self, indexes: list[Array | None]) -> list[torch.Tensor]:
        with _codec_errors():
            outs = _rans.decode_many(self._decoders, [to_numpy(i) for i in indexes],
                                     self._threads)
        return [torch.from_numpy(o) for o in outs]

    def finish(self) -> None:
        with _codec_errors():
            _rans.finish_many(self._decoders)
