"""Compressing a folder of images: one `.nic` per image and a Parquet manifest, resumable, on a
Ray cluster (Ray Data actors, one codec each) or on this machine (a process pool, or inline).

    compress_dir("photos", "out")                              # a process per CPU, here
    compress_dir("photos", "out", workers=Workers(ray="local"))  # a Ray cluster for the run
    compress_dir("photos", "out", workers=Workers(ray="auto"))   # join one (`ray start`)
    decompress_dir("out", "decoded")                           # back to PNG

OUT holds `a/b/photo.nic` for `IN/a/b/photo.png` and `manifest.parquet`: one row per input
(MANIFEST_SCHEMA), readable with pandas or pyarrow. Safety: every output is written as
`NAME.part` and renamed when complete; the worker that wrote it then appends its row to its
own journal, `manifest.journal.ID.jsonl`, and the manifest is rewritten with every journal's
rows when the run ends, interrupted or not (or, after a killed run, when the next one starts).
A rerun skips every image whose row says done: no error, the same model fingerprint, and its
output present with the recorded size. An image that fails (not an image, unreadable, too
large) gets its error in the manifest and the run goes on.

With Ray, workers read IN and write OUT themselves: on a cluster of several machines both must be
on a filesystem that every node mounts at the same path. Each actor loads one `engine.Codec`
(weights and coder tables once) and gets one GPU where the cluster has GPUs. Ray is optional
(`pip install nicengine[ray]`); without it, runs use this machine.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from tqdm import tqdm

from .codec import DEFAULT_MODEL, DEFAULT_QUALITY, Codec, check_device
from .format import SUFFIX
from .images import list_images, to_batch, to_uint8
from .metrics import ms_ssim, psnr

MANIFEST = "manifest.parquet"
JOURNALS = "manifest.journal.*.jsonl"  # one per worker, rows not yet in the manifest
PART_SUFFIX = ".part"  # an output being written; renamed when complete
BATCH_IMAGES = 8  # images per worker call, by default
BATCH_PIXELS = 1 << 24  # the most pixels one compress_batch call gets (bounds its memory)
MAX_BLOCKS = 10_000  # Ray Data blocks of a run (one per batch below this)

MANIFEST_SCHEMA = pa.schema([
    ("path", pa.string()),  # the input, relative to IN
    ("output", pa.string()),  # its stream, relative to OUT; null when the image failed
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("bytes", pa.int64()),
    ("bpp", pa.float64()),
    # 8-bit RGB, dB; null unless asked for. The networks' float rounding varies with batching
    # and threads, so reruns may differ in the last digits (the streams do not).
    ("psnr", pa.float64()),
    ("ms_ssim", pa.float64()),
    ("seconds", pa.float64()),  # reading and coding this image (its share of a batched call)
    ("fingerprint", pa.string()),  # of the weights that encoded it: 8 hex digits, as `info`
    ("error", pa.string()),  # why the image failed; null when it did not
])
_DECODED_SCHEMA = pa.schema([("path", pa.string()), ("error", pa.string())])


@dataclass(frozen=True)
class CompressOptions:
    """How every image of a run is coded (the same in every worker). `metrics`: decode each
    stream again and record PSNR and MS-SSIM. `device`, `precision`: as in `engine.Codec`;
    `max_bytes`: as in `engine.Codec.compress`."""

    quality: float = DEFAULT_QUALITY
    model: str = DEFAULT_MODEL
    metrics: bool = False
    device: str = "auto"
    precision: str = "auto"
    max_bytes: int | None = None  # per image, instead of `quality`

    def codec(self) -> Codec:
        return Codec(self.quality, self.device, precision=self.precision, model=self.model)

    def encode(self, codec: Codec, images: list[torch.Tensor]) -> list[bytes]:
        """Equal-size (1, 3, H, W) images -> their streams (the one place options reach the
        encoder)."""
        return codec.compress_batch(images, max_bytes=self.max_bytes)


@dataclass(frozen=True)
class Workers:
    """Where a run's workers run. `ray`: None (this machine), "local" (a Ray cluster started for
    the run), "auto" or an address (join a cluster; a `ray.init` the caller already made is used
    as is). `count`: processes, or Ray actors (default: one per GPU of the Ray cluster, else one
    per CPU); 1 without Ray runs in this process. `batch`: images per worker call (the unit of
    progress and of the journal; equal sizes among them share network passes)."""

    ray: str | None = None
    count: int | None = None
    batch: int = BATCH_IMAGES

    def __post_init__(self) -> None:
        if (self.count is not None and self.count < 1) or self.batch < 1:
            raise ValueError(f"workers and batch must be at least 1, not {self.count} and "
                             f"{self.batch}")


@dataclass(frozen=True)
class RunSummary:
    """What a `compress_dir` or `decompress_dir` run did: of `files` inputs, `done` were handled
    by this run (failures included) and `skipped` by earlier ones; `failures`: (path, error) of
    each file that failed in this run; `seconds`: wall time of the work, workers' start
    included."""

    files: int
    done: int
    skipped: int
    failures: tuple[tuple[str, str], ...]
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


def fingerprint(codec: Codec) -> str:
    """The fingerprint of the weights `codec` encodes with, as rows record it (8 hex digits)."""
    return f"{codec.model().info.fingerprint:08x}"


def stream_name(path: str) -> str:
    """The stream's path in OUT for an input's relative path: the suffix becomes `.nic`."""
    return Path(path).with_suffix(SUFFIX).as_posix()


def find_manifest(path: str | Path) -> Path | None:
    """The manifest `path` names: a `.parquet` file, or a folder holding MANIFEST; else None."""
    path = Path(path)
    if path.is_file() and path.suffix == ".parquet":
        return path
    return path / MANIFEST if (path / MANIFEST).is_file() else None


def read_manifest(path: str | Path) -> pa.Table:
    """A compress_dir manifest (the file, or the OUT folder holding it) as a table."""
    found = find_manifest(path)
    if found is None:
        raise FileNotFoundError(f"{path}: no {MANIFEST} (compress-dir writes one)")
    table = pq.read_table(found)
    column = table.schema.get_field_index("fingerprint")
    if pa.types.is_integer(table.schema.field(column).type):  # written before hex: converted
        hexed = [None if v is None else f"{v:08x}" for v in table.column(column).to_pylist()]
        table = table.set_column(column, "fingerprint", pa.array(hexed, pa.string()))
    return table.cast(MANIFEST_SCHEMA)


def summarize(table: pa.Table) -> dict[str, float | int | None]:
    """Totals and means over a manifest's images that did not fail (None where no row has the
    value: PSNR and MS-SSIM when metrics were not asked for)."""
    rows = table.to_pylist()
    ok = [r for r in rows if r["error"] is None]

    def mean(key: str) -> float | None:
        values = [r[key] for r in ok if r[key] is not None]
        return sum(values) / len(values) if values else None

    return {"images": len(ok), "failed": len(rows) - len(ok),
            "bytes": sum(r["bytes"] for r in ok), "bpp": mean("bpp"), "psnr": mean("psnr"),
            "ms_ssim": mean("ms_ssim"), "seconds": sum(r["seconds"] for r in rows)}


def compress_dir(src: str | Path, dst: str | Path, options: CompressOptions = CompressOptions(),
                 workers: Workers = Workers(), progress: bool = True) -> RunSummary:
    """Compress every image below `src` into `dst` (see the module docstring), skipping what an
    earlier run finished."""
    expected = fingerprint(options.codec())  # a setting the codec refuses fails here, once
    src, dst = Path(src), Path(dst)
    inputs = [p.relative_to(src).as_posix() for p in list_images(src)]
    dst.mkdir(parents=True, exist_ok=True)
    manifest = _Manifest(dst)
    first: dict[str, str] = {}  # stream name -> the input that writes it
    todo, clashes = [], []
    for path in inputs:
        other = first.setdefault(stream_name(path), path)
        if other != path:
            clashes.append(_failed(path, f"{other} is written to the same "
                                         f"{stream_name(path)}"))
        elif not manifest.done(path, expected):
            todo.append(path)
    start = time.perf_counter()
    failures = [(row["path"], row["error"]) for row in clashes]
    manifest.rows.update((row["path"], row) for row in clashes)
    bar = tqdm(total=len(todo), unit="img", desc="compress", disable=not progress)
    try:
        # closing: the workers stop before the manifest takes their journals
        with closing(_execute(_Compressor, (src, dst, options), todo, workers)) as batches:
            for rows in batches:
                failures += [(r["path"], r["error"]) for r in rows if r["error"] is not None]
                bar.update(len(rows))
    finally:
        bar.close()
        manifest.save()
    return RunSummary(len(inputs), len(todo), len(inputs) - len(todo) - len(clashes),
                      tuple(failures), time.perf_counter() - start)


def decompress_dir(src: str | Path, dst: str | Path, workers: Workers = Workers(),
                   device: str = "auto", precision: str = "auto", progress: bool = True,
                   rectifier: bool = True) -> RunSummary:
    """Decode the streams below `src` (those its manifest lists as done, or every `.nic` file
    when it has none) to PNG files under `dst` at the same relative paths. A rerun skips the
    PNG files that exist (they too are written whole, then renamed). `rectifier`: as in
    `Codec.decompress`."""
    src, dst = Path(src), Path(dst)
    check_device(device)  # once, here, rather than against every file
    if find_manifest(src) is not None:
        streams = [p for p in read_manifest(src).column("output").to_pylist() if p is not None]
    else:
        streams = sorted(p.relative_to(src).as_posix() for p in src.rglob("*" + SUFFIX))
    if not streams:
        raise FileNotFoundError(f"no {SUFFIX} files below {src}")
    todo = [p for p in streams if not (dst / _png_name(p)).is_file()]
    start = time.perf_counter()
    failures = []
    bar = tqdm(total=len(todo), unit="img", desc="decompress", disable=not progress)
    try:
        for rows in _execute(_Decompressor, (src, dst, device, precision, rectifier), todo,
                             workers):
            failures += [(r["path"], r["error"]) for r in rows if r["error"] is not None]
            bar.update(len(rows))
    finally:
        bar.close()
    return RunSummary(len(streams), len(todo), len(streams) - len(todo), tuple(failures),
                      time.perf_counter() - start)


# --- workers: one codec each; a list of relative paths in, one row per path out ---------------

class _Compressor:
    schema = MANIFEST_SCHEMA

    def __init__(self, src: Path, dst: Path, options: CompressOptions) -> None:
        self.src, self.dst, self.options = src, dst, options
        self.codec = options.codec()
        self.fingerprint = fingerprint(self.codec)
        self.journal = _Journal(dst)

    def __call__(self, paths: list[str]) -> list[dict]:
        return _each(paths, self._compress, self._failed)

    def _failed(self, path: str, error: str) -> dict:
        return self.journal.write({**_failed(path, error), "fingerprint": self.fingerprint})

    def _compress(self, paths: list[str]) -> list[dict]:
        t0 = time.perf_counter()
        images = {p: to_batch(self.src / p) for p in paths}
        read_share = (time.perf_counter() - t0) / len(paths)
        rows = []
        for group in _size_groups(images):
            t0 = time.perf_counter()
            xs = [images[p] for p in group]
            streams = self.options.encode(self.codec, xs)
            decoded = self.codec.decompress_batch(streams) if self.options.metrics else None
            share = read_share + (time.perf_counter() - t0) / len(group)
            for i, (path, data) in enumerate(zip(group, streams, strict=True)):
                h, w = xs[i].shape[2:]
                row = {"path": path, "output": stream_name(path), "width": w, "height": h,
                       "bytes": len(data), "bpp": 8 * len(data) / (h * w), "psnr": None,
                       "ms_ssim": None, "seconds": share, "fingerprint": self.fingerprint,
                       "error": None}
                if decoded is not None:
                    x, x_hat = xs[i][0], decoded[i].cpu()
                    row.update(psnr=psnr(x_hat, x), ms_ssim=ms_ssim(x_hat, x))
                _write(self.dst / stream_name(path), data)
                rows.append(self.journal.write(row))
        return rows


class _Decompressor:
    schema = _DECODED_SCHEMA

    def __init__(self, src: Path, dst: Path, device: str, precision: str, rectifier: bool
                 ) -> None:
        self.src, self.dst, self.rectifier = src, dst, rectifier
        self.codec = Codec(device=device, precision=precision)

    def __call__(self, paths: list[str]) -> list[dict]:
        return _each(paths, self._decompress, _failed)

    def _decompress(self, paths: list[str]) -> list[dict]:
        images = self.codec.decompress_batch([(self.src / p).read_bytes() for p in paths],
                                             rectifier=self.rectifier)
        for path, x in zip(paths, images, strict=True):
            png = BytesIO()
            Image.fromarray(to_uint8(x)).save(png, format="PNG")
            _write(self.dst / _png_name(path), png.getvalue())
        return [{"path": p, "error": None} for p in paths]


def _each(paths: list[str], work: Callable[[list[str]], list[dict]],
          failed: Callable[[str, str], dict]) -> list[dict]:
    """work(paths), or, when it raises, each path on its own, so that one bad file fails alone
    and is recorded with its error. Any exception: image decoders raise many kinds, and one
    file must not stop a run of millions."""
    try:
        return work(paths)
    except Exception as err:
        if len(paths) > 1:
            return [row for p in paths for row in _each([p], work, failed)]
        return [failed(paths[0], " ".join(f"{type(err).__name__}: {err}".split()))]


def _failed(path: str, error: str) -> dict:
    """A manifest row for a file that failed (the decompressor's rows use path and error)."""
    return {**dict.fromkeys(MANIFEST_SCHEMA.names), "path": path, "seconds": 0.0, "error": error}


def _size_groups(images: dict[str, torch.Tensor]) -> list[list[str]]:
    """Paths of equal-size images, in groups of at most BATCH_PIXELS pixels (at least one)."""
    by_size: dict[tuple[int, int], list[str]] = {}
    for path, x in images.items():
        by_size.setdefault(tuple(x.shape[2:]), []).append(path)
    groups = []
    for (h, w), paths in by_size.items():
        n = max(1, BATCH_PIXELS // (h * w))
        groups += [paths[i : i + n] for i in range(0, len(paths), n)]
    return groups


def _png_name(stream: str) -> str:
    return Path(stream).with_suffix(".png").as_posix()


def _write(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: to a temporary name first, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + PART_SUFFIX)
    part.write_bytes(data)
    os.replace(part, path)


# --- the manifest and its journal --------------------------------------------------------------

class _Journal:
    """One worker's rows, a JSON line each, appended and flushed as each file finishes: an
    interrupted or killed run keeps every finished file."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / JOURNALS.replace("*", f"{os.getpid()}-{secrets.token_hex(4)}")
        self.file = None  # opened with the first row

    def write(self, row: dict) -> dict:
        if self.file is None:
            self.file = self.path.open("a")
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        return row


class _Manifest:
    """The rows of OUT's manifest by input path; `save` adds the workers' journals."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / MANIFEST
        found = self.path.is_file()
        self.rows = {r["path"]: r for r in read_manifest(self.path).to_pylist()} if found else {}
        if any(folder.glob(JOURNALS)):  # a killed run's rows: saved into the manifest now
            self.save()

    def done(self, path: str, fingerprint: str) -> bool:
        row = self.rows.get(path)
        if row is None or row["error"] is not None or row["fingerprint"] != fingerprint:
            return False
        stream = self.folder / row["output"]
        return stream.is_file() and stream.stat().st_size == row["bytes"]

    def save(self) -> None:
        """Rewrite the manifest (sorted by path) with every row and every journal's, then drop
        the journals."""
        journals = sorted(self.folder.glob(JOURNALS))
        for journal in journals:
            for line in journal.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # the last line, cut by a kill: redone
                    continue
                self.rows[row["path"]] = row
        table = pa.Table.from_pylist([self.rows[p] for p in sorted(self.rows)],
                                     schema=MANIFEST_SCHEMA)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        _write(self.path, sink.getvalue().to_pybytes())
        for journal in journals:
            journal.unlink()


# --- where the workers run ---------------------------------------------------------------------

def _execute(worker: type, args: tuple, paths: list[str], workers: Workers
             ) -> Iterator[list[dict]]:
    """Rows of `worker(*args)(batch)` over `paths` in batches of `workers.batch`, as batches
    finish (in any order)."""
    if not paths:
        return
    if workers.ray is not None:
        yield from _on_ray(worker, args, paths, workers)
        return
    batches = [paths[i : i + workers.batch] for i in range(0, len(paths), workers.batch)]
    count = workers.count or os.cpu_count() or 1
    if count == 1:
        yield from map(worker(*args), batches)
        return
    # spawn, not fork: the parent holds torch's threads. Each process gets its share of cores.
    threads = max(1, (os.cpu_count() or 1) // count)
    with _sigint_ignored():  # inherited: Ctrl-C stops the parent, which stops the processes
        pool = multiprocessing.get_context("spawn").Pool(count, _start_process,
                                                         (worker, args, threads))
    # Batches as they finish, in any order; leaving (done, interrupted, failed) terminates the
    # processes at once: the files they finished are in their journals.
    with pool:
        yield from pool.imap_unordered(_run_in_process, batches)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored inside (in the main thread, the only one that may change it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


_process_worker = None  # the worker of this pool process (set by _start_process)


def _start_process(worker: type, args: tuple, threads: int) -> None:
    global _process_worker
    torch.set_num_threads(threads)
    _process_worker = worker(*args)


def _run_in_process(batch: list[str]) -> list[dict]:
    return _process_worker(batch)


class _RayActor:
    """A Ray Data actor: one worker (so one codec) for the actor's life. `setup`, (worker class,
    its arguments), is set on a subclass made for the run: constructor arguments would go
    through Ray's object store, which Ray reports at error level."""

    setup: tuple[type, tuple] = (object, ())

    def __init__(self) -> None:
        worker, args = self.setup
        self.worker = worker(*args)

    def __call__(self, batch: dict) -> pa.Table:
        rows = self.worker([str(p) for p in batch["path"]])
        return pa.Table.from_pylist(rows, schema=self.worker.schema)


def _on_ray(worker: type, args: tuple, paths: list[str], workers: Workers
            ) -> Iterator[list[dict]]:
    try:
        import ray
        import ray.data
    except ImportError:
        raise ValueError("running on Ray needs it installed: pip install 'nicengine[ray]'"
                         ) from None
    started = not ray.is_initialized()
    if started:
        try:
            # Quiet unless something fails: Ray's warnings (token authentication, ...) are not
            # the user's business in a run it started for them.
            ray.init(address=workers.ray, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
        except ConnectionError:
            raise ValueError(f"no Ray cluster found at {workers.ray} (start one with `ray start "
                             "--head`, or pass local to start one for the run)") from None
    try:
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours counts images
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), resources.get("CPU", 1)
        batches = math.ceil(len(paths) / workers.batch)
        actors = min(workers.count or gpus or int(cpus), batches)  # no actor without work
        # One GPU per actor where there are GPUs (shared when asked for more actors than GPUs);
        # else the CPUs shared out, which also sets each actor's torch threads.
        share = {"num_gpus": min(1, gpus / actors)} if gpus else {"num_cpus": cpus / actors}
        ds = ray.data.from_items([{"path": p} for p in paths],
                                 override_num_blocks=min(batches, MAX_BLOCKS))
        actor = type("RayActor", (_RayActor,), {"setup": (worker, args)})
        ds = ds.map_batches(actor, batch_size=workers.batch,
                            compute=ray.data.ActorPoolStrategy(size=actors), **share)
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            yield table.to_pylist()
    finally:
        if started:
            ray.shutdown()
