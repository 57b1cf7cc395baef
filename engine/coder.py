"""The entropy coder: interleaved rANS (docs/CODER.md) on the CPU or on the GPU, same bytes.

The CPU coder is the C++ extension `engine._rans`; the CUDA coder (csrc/rans_cuda.cu, one warp per
stream, docs/CUDA_CODER.md) is compiled on first use with torch.utils.cpp_extension and cached.
`CoderTables(tables, device)` picks the one that runs on `device`; without a CUDA device, a CUDA
build of torch or nvcc, CUDA requests fall back to the CPU coder (`backend`, `unavailable_reason`
say which runs and why). Decoding goes one segment per call on every stream at once, so that the
hyper-decoder can run between z and y (engine/codec.py shows the calls). Damaged streams and bad
table indexes raise `CodecError` naming the stream.
"""

from __future__ import annotations

import os
import shutil
import warnings
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from . import _rans
from .entropy.cdf import CdfTables
from .errors import CodecError

LANES = _rans.LANES
CSRC = Path(__file__).resolve().parents[1] / "csrc"

# Per-stream status codes of the kernels, in the order of `enum Status` in csrc/rans_warp.h.
STATUS_MESSAGES = (
    "ok",
    "corrupt stream: shorter than the 128-byte header",
    "corrupt stream: odd length",
    "corrupt stream: initial state < 2^16",
    "corrupt stream: read past the end of the data",
    "corrupt stream: escape longer than 40 bits",
    "corrupt stream: escape length does not match its bits",
    "corrupt stream: escaped value does not fit int32",
    "corrupt stream: words left after the last segment",
    "corrupt stream: final state is not 2^16",
    "table index out of range",
)
BAD_TABLE_INDEX = len(STATUS_MESSAGES) - 1

Array = np.ndarray | torch.Tensor
Segment = tuple[Array, Array]  # (values, table indexes), 1-D integer arrays of equal length


# ---- the CUDA extension ----


def _build_directory() -> Path:
    """Where the compiled extension is cached: per torch and CUDA version, so that an upgrade
    rebuilds instead of loading a stale binary."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "nicengine" / "torch_extensions"
    return base / f"rans_cuda-torch{torch.__version__}-cuda{torch.version.cuda}"


@lru_cache(maxsize=1)
def _load() -> tuple[ModuleType | None, str]:
    """(the CUDA extension, "") or (None, why not); builds it on the first call (ninja, cached:
    later processes load it in a second unless csrc/ changed)."""
    if os.environ.get("NICENGINE_CODER", "").lower() == "cpu":
        return None, "NICENGINE_CODER=cpu"
    if not torch.cuda.is_available():
        return None, "no CUDA device (or a CPU-only build of torch)"
    from torch.utils import cpp_extension

    home = cpp_extension.CUDA_HOME
    if home is None or shutil.which(str(Path(home) / "bin" / "nvcc")) is None:
        return None, "nvcc not found (set CUDA_HOME)"
    sources = [CSRC / "rans_cuda.cu", CSRC / "rans_cuda_bindings.cpp"]
    if not all(s.is_file() for s in sources):
        return None, f"the CUDA sources are not in {CSRC} (an editable install has them)"
    build = _build_directory()
    build.mkdir(parents=True, exist_ok=True)
    try:
        module = cpp_extension.load(
            name="nicengine_rans_cuda", sources=[str(s) for s in sources],
            extra_include_paths=[str(CSRC)], extra_cflags=["-O3"], extra_cuda_cflags=["-O3"],
            build_directory=str(build), verbose=os.environ.get("NICENGINE_BUILD_VERBOSE") == "1")
    except Exception as e:  # any build failure leaves the CPU coder in charge
        warnings.warn(f"the CUDA rANS coder did not build; using the CPU coder: {e}",
                      stacklevel=2)
        return None, f"the build failed: {e}"
    return module, ""


def available() -> bool:
    """True when the CUDA coder can run here (builds it on the first call)."""
    return _load()[0] is not None


def unavailable_reason() -> str:
    """Why `available()` is False ("" when it is True)."""
    return _load()[1]


def backend() -> str:
    """The coder `CoderTables` uses by default: "cuda" or "cpu"."""
    return "cuda" if available() else "cpu"


class _HostOps:
    """engine._rans_warp_host (the kernels' algorithm on the host) behind the CUDA extension's
    calls: CPU tensors in and out, shared with numpy so that in-place updates arrive."""

    def __init__(self) -> None:
        from . import _rans_warp_host

        self._m = _rans_warp_host
        self.MAX_WORDS_PER_VALUE = _rans_warp_host.MAX_WORDS_PER_VALUE

    @staticmethod
    def _np(args: tuple) -> list:
        return [a.numpy() if isinstance(a, torch.Tensor) else a for a in args]

    def encode(self, *args) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(a) for a in self._m.encode(*self._np(args)))

    def open(self, *args) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(a) for a in self._m.open(*self._np(args)))

    def decode(self, *args) -> None:
        self._m.decode(*self._np(args))

    def finish(self, *args) -> None:
        self._m.finish(*self._np(args))


# ---- tables ----


def pack_tables(tables: CdfTables) -> np.ndarray:
    """The kernels' table blob (csrc/rans_warp.h) as int32: (row, size, offset, 0) per table,
    then every row's cdf[0..size) as uint16, zero-padded to whole 16-byte units."""
    sizes = tables.sizes.astype(np.int64)
    rows = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    info = np.stack([rows, sizes, tables.offsets, np.zeros_like(sizes)], axis=1)
    cdf = np.concatenate([tables.cdfs[t, :n] for t, n in enumerate(sizes)]).astype(np.uint16)
    cdf = np.pad(cdf, (0, -len(cdf) % 8))
    return np.concatenate([info.astype(np.int32).reshape(-1), cdf.view(np.int32)])


class CoderTables:
    """CDF tables for `encode` and `Decoder`, and where those run.

    device: "cuda" (or "cuda:N") runs the CUDA coder, "cpu" the CPU coder (`engine._rans`);
        None picks "cuda" when `available()`.
    emulate: run the CUDA coder's algorithm on the host instead (`engine._rans_warp_host`; slow,
        for tests of the GPU path on machines without a GPU).
    Invalid tables raise ValueError (checked by the CPU coder's `Tables`).
    """

    def __init__(self, tables: CdfTables, device: str | torch.device | None = None, *,
                 emulate: bool = False, threads: int = 0) -> None:
        self.cpu = _rans.Tables(tables.cdfs, tables.sizes, tables.offsets)
        self.threads = threads  # of the CPU coder; 0: all cores
        self.count = len(tables)
        self.device = torch.device(device or ("cuda" if not emulate and available() else "cpu"))
        self._ops = None
        if emulate:
            if self.device.type != "cpu":
                raise ValueError("emulated tables live on the CPU")
            self._ops = _HostOps()
        elif self.device.type == "cuda":
            module, why = _load()
            if module is None:
                raise RuntimeError(f"the CUDA rANS coder is not available: {why}")
            self._ops = module
        elif self.device.type != "cpu":
            raise ValueError(f"no rANS coder for device {self.device}")
        if self._ops is not None:
            self.blob = torch.from_numpy(pack_tables(tables)).to(self.device)

    @property
    def backend(self) -> str:
        """"cuda", "emulated" or "cpu"."""
        if self._ops is None:
            return "cpu"
        return "emulated" if isinstance(self._ops, _HostOps) else "cuda"


# ---- helpers ----


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


def _numpy(x: Array | None) -> np.ndarray:
    if x is None:
        return np.zeros(0, np.int32)
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def to_bytes(data: torch.Tensor, offsets: torch.Tensor) -> list[bytes]:
    """`encode`'s output as one bytes object per stream (one copy to the host)."""
    buf, cut = data.cpu().numpy(), offsets.cpu().tolist()
    return [buf[a:b].tobytes() for a, b in zip(cut, cut[1:], strict=False)]


# ---- encoding ----


def encode(tables: CoderTables, streams: list[list[Segment]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode every stream, a list of (values, indexes) segments (1-D integer arrays or tensors,
    any device), in one launch. Returns (data, offsets) on tables.device: stream i is
    data[offsets[i]:offsets[i + 1]] (uint8; offsets int64 [len(streams) + 1]). Table indexes
    out of range raise ValueError."""
    if tables._ops is None:
        try:
            coded = _rans.encode(tables.cpu, [[(_numpy(v), _numpy(i)) for v, i in _pairs(segs, k)]
                                              for k, segs in enumerate(streams)], tables.threads)
        except ValueError as e:
            raise CodecError(str(e)) from None
        data = np.frombuffer(b"".join(coded), dtype=np.uint8).copy()
        return torch.from_numpy(data), _int64(_starts([len(c) for c in coded] + [0]), "cpu")
    dev, ops = tables.device, tables._ops
    values, indexes, lengths, stream_segs, scratch = [], [], [], [0], [0]
    for k, segs in enumerate(streams):
        for j, (v, i) in enumerate(_pairs(segs, k)):
            where = f"stream {k}, segment {j}"
            values.append(_int32(v, dev, f"{where} values"))
            indexes.append(_int32(i, dev, f"{where} indexes"))
            if values[-1].numel() != indexes[-1].numel():
                raise CodecError(f"{where}: values and indexes differ in length")
            lengths.append(values[-1].numel())
        stream_segs.append(len(lengths))
        scratch.append(scratch[-1] + ops.MAX_WORDS_PER_VALUE * sum(lengths[stream_segs[-2]:]))
    data, offsets, status = ops.encode(
        tables.blob, tables.count, _cat(values, dev), _cat(indexes, dev),
        _int64(_starts(lengths), dev), _int64(lengths, dev), _int64(stream_segs, dev),
        _int64(scratch, dev), scratch[-1])
    bad = torch.nonzero(status.cpu()).flatten().tolist()
    if bad:
        k = bad[0]
        segs = indexes[stream_segs[k] : stream_segs[k + 1]]
        raise CodecError(f"stream {k}: {_index_error(segs, tables.count)}")
    return data, offsets


def _pairs(segs: list[Segment], k: int) -> list[Segment]:
    for j, pair in enumerate(segs):
        if len(pair) != 2:
            raise CodecError(f"stream {k}, segment {j} must be a (values, indexes) pair")
    return segs


def _index_error(segments: list[torch.Tensor], count: int) -> str:
    """The CPU coder's message for the first table index out of range in these segments."""
    for j, t in enumerate(segments):
        bad = ((t < 0) | (t >= count)).nonzero().flatten()
        if bad.numel():
            p = int(bad[0])
            return (f"segment {j}: table index {int(t[p])} at position {p} is out of range "
                    f"[0, {count})")
    return STATUS_MESSAGES[BAD_TABLE_INDEX]


# ---- decoding ----


class Decoder:
    """Decodes many streams together, one segment of every stream per `decode` call (so that a
    segment's table indexes may depend on the values of earlier ones).

    streams: bytes-like objects, one per stream, or encode's (data, offsets) tensors.
    Errors raise CodecError naming the first failing stream: at once for a bad header, in
    `decode` for damaged data or bad table indexes, in `finish` for a stream that did not end
    exactly.
    """

    def __init__(self, tables: CoderTables,
                 streams: list | tuple[torch.Tensor, torch.Tensor]) -> None:
        self.tables = tables
        if _is_pair(streams):
            data, offsets = streams
            if tables._ops is None:
                streams = to_bytes(data, offsets)
            else:
                data, offsets = _checked(data, offsets, tables.device)
        if tables._ops is None:
            self._cpu = []
            for k, s in enumerate(streams):
                try:
                    self._cpu.append(_rans.Decoder(tables.cpu, s))
                except ValueError as e:
                    raise CodecError(f"stream {k}: {e}") from None
            self.num_streams = len(self._cpu)
            return
        if not _is_pair(streams):
            parts = [np.frombuffer(s, dtype=np.uint8) for s in streams]
            data = torch.from_numpy(np.concatenate(parts) if parts else np.zeros(0, np.uint8))
            data = data.to(tables.device)
            offsets = _int64(_starts([len(p) for p in parts] + [0]), tables.device)
        self.num_streams = offsets.numel() - 1
        self._data, self._offsets = data, offsets
        self._states, self._pos, self._status = tables._ops.open(data, offsets)
        self._check()

    def decode(self, indexes: list[Array | None]) -> list[torch.Tensor]:
        """Decode the next segment of every stream: indexes[k] holds the table index of each of
        its values (None or empty: stream k does not advance). Returns int32 tensors on
        tables.device (views of one buffer)."""
        if len(indexes) != self.num_streams:
            raise ValueError(f"decode needs one index array (or None) per stream: "
                             f"{self.num_streams}, not {len(indexes)}")
        t = self.tables
        if t._ops is None:
            try:
                outs = _rans.decode_many(self._cpu, [_numpy(i) for i in indexes], t.threads)
            except ValueError as e:
                raise CodecError(str(e)) from None
            return [torch.from_numpy(o) for o in outs]
        idx = [_int32(x, t.device, f"indexes[{k}]") for k, x in enumerate(indexes)]
        lengths = [x.numel() for x in idx]
        flat = _cat(idx, t.device)
        out = torch.empty_like(flat)
        t._ops.decode(t.blob, t.count, self._data, self._offsets, flat,
                      _int64(_starts(lengths), t.device), _int64(lengths, t.device), out,
                      self._states, self._pos, self._status)
        self._check()
        return list(out.split(lengths))

    def finish(self) -> None:
        """Raise CodecError unless every stream ended exactly after its last segment."""
        if self.tables._ops is None:
            for k, d in enumerate(self._cpu):
                try:
                    d.finish()
                except ValueError as e:
                    raise CodecError(f"stream {k}: {e}") from None
            return
        self.tables._ops.finish(self._offsets, self._states, self._pos, self._status)
        self._check()

    def _check(self) -> None:
        status = self._status.cpu()
        bad = torch.nonzero(status).flatten().tolist()
        if not bad:
            return
        codes = status.tolist()
        argument = [k for k in bad if codes[k] == BAD_TABLE_INDEX]
        if argument:  # the kernels left those streams as they were: usable again
            self._status[torch.tensor(argument, device=self._status.device)] = 0
        k = bad[0]
        more = f" (and {len(bad) - 1} more streams)" if len(bad) > 1 else ""
        raise CodecError(f"stream {k}: {STATUS_MESSAGES[codes[k]]}{more}")


def _is_pair(streams) -> bool:
    return (isinstance(streams, tuple) and len(streams) == 2
            and all(isinstance(s, torch.Tensor) for s in streams))


def _checked(data: torch.Tensor, offsets: torch.Tensor, device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(data, offsets) on device, after checking on the host that the offsets cut data into
    streams (the kernels trust them)."""
    cut = offsets.cpu().to(torch.int64)
    if (data.dtype != torch.uint8 or data.dim() != 1 or cut.dim() != 1 or cut.numel() < 1
            or cut[0] != 0 or bool((cut[1:] < cut[:-1]).any()) or cut[-1] > data.numel()):
        raise ValueError("streams must be 1-D uint8 data and offsets [S + 1] from 0, "
                         "increasing, within the data")
    return data.to(device).contiguous(), cut.to(device)
