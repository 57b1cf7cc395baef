"""The warp coder: one warp per stream, lane l holding rANS state l (csrc/rans_warp.h,
docs/CUDA_CODER.md), on a CUDA device (csrc/rans_cuda.cu) or on the host (engine.coder.emulation,
for tests). Its bytes are the CPU coder's.

Every call covers the whole batch: the segments' values and indexes go back to back, with a
(start, length) per segment. The kernels report problems as a status code per stream, whose
messages engine._rans exports (csrc/rans_status.h).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np
import torch

from .. import _rans
from ..entropy.cdf import CdfTables
from ..errors import CodecError
from .base import Array, Coder, Segment, StreamDecoder, to_numpy


def pack_tables(tables: CdfTables) -> np.ndarray:
    """The kernels' table blob (csrc/rans_warp.h) as int32: (row, size, offset, 0) per table,
    then every row's cdf[0..size) as uint16, zero-padded to whole 16-byte units."""
    sizes = tables.sizes.astype(np.int64)
    rows = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    info = np.stack([rows, sizes, tables.offsets, np.zeros_like(sizes)], axis=1)
    cdf = np.concatenate([tables.cdfs[t, :n] for t, n in enumerate(sizes)]).astype(np.uint16)
    cdf = np.pad(cdf, (0, -len(cdf) % 8))
    return np.concatenate([info.astype(np.int32).reshape(-1), cdf.view(np.int32)])


class WarpCoder(Coder):
    """ops: the CUDA extension (engine.coder.cuda_build) with a CUDA device, or
    engine.coder.emulation with the CPU. Invalid tables raise ValueError."""

    def __init__(self, tables: CdfTables, ops: ModuleType, device: torch.device,
                 name: str) -> None:
        # The CPU coder's tables validate these, and name the culprit of a bad-index status.
        self._cpu_tables = _rans.Tables(tables.cdfs, tables.sizes, tables.offsets)
        self.name, self.device = name, device
        self._ops = ops
        self._blob = torch.from_numpy(pack_tables(tables)).to(device)
        self._count = len(tables)

    def encode(self, streams: list[list[Segment]]) -> list[bytes]:
        dev = self.device
        values, indexes, lengths, stream_segs, scratch = [], [], [], [0], [0]
        for k, segs in enumerate(streams):
            for j, pair in enumerate(segs):
                where = f"stream {k}, segment {j}"
                if len(pair) != 2:
                    raise CodecError(f"{where} must be a (values, indexes) pair")
                values.append(_int32(pair[0], dev, f"{where} values"))
                indexes.append(_int32(pair[1], dev, f"{where} indexes"))
                if values[-1].numel() != indexes[-1].numel():
                    raise CodecError(f"{where}: values and indexes differ in length")
                lengths.append(values[-1].numel())
            stream_segs.append(len(lengths))
            words = self._ops.MAX_WORDS_PER_VALUE * sum(lengths[stream_segs[-2] :])
            scratch.append(scratch[-1] + words)
        data, offsets, status = self._ops.encode(
            self._blob, self._count, _cat(values, dev), _cat(indexes, dev),
            _int64(_starts(lengths), dev), _int64(lengths, dev), _int64(stream_segs, dev),
            _int64(scratch, dev), scratch[-1])
        status = status.cpu()
        if status.any():  # only bad table indexes: the CPU coder's check names the first
            host = [[to_numpy(i) for _, i in segs] for segs in streams]
            try:
                _rans.check_indexes(self._cpu_tables, host)
            except ValueError as e:
                raise CodecError(str(e)) from None
            raise _status_error(status)
        buf, cut = data.cpu().numpy(), offsets.cpu().tolist()
        return [buf[a:b].tobytes() for a, b in zip(cut, cut[1:], strict=False)]

    def decoder(self, streams: Sequence[bytes | memoryview]) -> StreamDecoder:
        return _WarpStreamDecoder(self, streams)


class _WarpStreamDecoder(StreamDecoder):
    """The streams uploaded at once; the decoder's state (lane states, positions, status per
    stream) stays on the coder's device between calls."""

    def __init__(self, coder: WarpCoder, streams: Sequence[bytes | memoryview]) -> None:
        self._coder = coder
        parts = [np.frombuffer(s, dtype=np.uint8) for s in streams]
        data = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
        self._data = torch.from_numpy(data).to(coder.device)
        self._offsets = _int64(_starts([len(p) for p in parts] + [0]), coder.device)
        self.num_streams = len(parts)
        self._states, self._pos, self._status = coder._ops.open(self._data, self._offsets)
        self._check()

    def _decode(self, indexes: list[Array | None]) -> list[torch.Tensor]:
        c, dev = self._coder, self._coder.device
        idx = [_int32(x, dev, f"indexes[{k}]") for k, x in enumerate(indexes)]
        lengths = [x.numel() for x in idx]
        flat = _cat(idx, dev)
        out = torch.empty_like(flat)
        c._ops.decode(c._blob, c._count, self._data, self._offsets, flat,
                      _int64(_starts(lengths), dev), _int64(lengths, dev), out, self._states,
                      self._pos, self._status)
        self._check()
        return list(out.split(lengths))

    def finish(self) -> None:
        self._coder._ops.finish(self._offsets, self._states, self._pos, self._status)
        self._check()

    def _check(self) -> None:
        status = self._status.cpu()
        if not status.any():
            return
        error = _status_error(status)
        # Bad table indexes are argument errors: the kernels left those streams as they were,
        # so they are usable again.
        self._status[self._status == _rans.BAD_TABLE_INDEX] = 0
        raise error


def _status_error(status: torch.Tensor) -> CodecError:
    """The error of the first stream whose status is not ok."""
    bad = torch.nonzero(status).flatten().tolist()
    k = bad[0]
    more = f" (and {len(bad) - 1} more streams)" if len(bad) > 1 else ""
    return CodecError(f"stream {k}: {_rans.STATUS_MESSAGES[int(status[k])]}{more}")


def _int32(x: Array | None, device: torch.device, what: str) -> torch.Tensor:
    if x is None:
        return torch.zeros(0, dtype=torch.int32, device=device)
    t = torch.as_tensor(x, device=device)
    if t.dim() != 1:
        raise ValueError(f"{what} must be a 1-D integer array")
    return t.to(torch.int32).contiguous()


def _int64(x: list[int] | np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.int64), device=device)


def _cat(parts: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int32, device=device)


def _starts(lengths: list[int]) -> np.ndarray:
    """Exclusive prefix sums: where each of the back-to-back pieces starts."""
    out = np.zeros(len(lengths), np.int64)
    np.cumsum(lengths[:-1], out=out[1:])
    return out
