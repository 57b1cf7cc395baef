"""Models by name from CompressAI's published zoo: downloaded, verified, imported once, cached.

`load(name, quality)` gives CompressAI's published model of that name and quality (MSE) from
the cache, fetching it on first use: the checkpoint is downloaded, its SHA-256 checked against
the hex prefix in its file name (CompressAI's own loader never checks it), imported with
`import_compressai`, and the weights file (with any companion files the import writes) kept in
the cache. `cached(quality)` gives the models already cached, never fetching: decoding uses it.

Where: $NICENGINE_CACHE, else $XDG_CACHE_HOME/nicengine, else ~/.cache/nicengine; the weights
go under zoo/ as NAME-qQ.safetensors. Files enter the cache by rename once complete, so an
interrupted fetch never leaves a file that looks cached. $NICENGINE_ZOO_URL replaces CompressAI's
address (a mirror: the same file names under another base URL; file:// works too).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

from ..models import CodingModel
from .compressai import ARCHS, import_compressai
from .weights import COMPANIONS, companion, load_weights

ZOO_URL = "https://compressai.s3.amazonaws.com/models/v1"  # CompressAI's root_url
TIMEOUT = 60.0  # seconds a download may wait for data before it fails

# CompressAI's MSE checkpoints (compressai/zoo/image.py, model_urls), by the name of their
# architecture (the importer's --arch): the file name's stem, and the SHA-256 prefix of each
# quality level from 1. File: STEM-Q-PREFIX.pth.tar.
CHECKPOINTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "bmshj2018-factorized": ("bmshj2018-factorized-prior", (
        "446d5c7f", "87279a02", "5c6f152b", "1ed4405a", "866ba797", "9b02ea3a", "6dfd6734",
        "5232faa3")),
    "bmshj2018-hyperprior": ("bmshj2018-hyperprior", (
        "7eb97409", "93677231", "6d87be32", "de1b779c", "f8b614e1", "1ab9c41e", "3804dcbd",
        "a583f0cf")),
    "mbt2018-mean": ("mbt2018-mean", (
        "e522738d", "e54a039d", "723404a8", "6dba02a3", "d504e8eb", "a19628ab", "d5d441d1",
        "8089ae3e")),
    "mbt2018": ("mbt2018", (
        "3f36cd77", "43b70cdd", "22901978", "456e2af9", "b4a046dd", "7052e5ea", "8ba2bf82",
        "dd0097aa")),
    "cheng2020-anchor": ("cheng2020-anchor", (
        "dad2ebff", "a29008eb", "e49be189", "98b0b468", "23852949", "4c052b1a")),
    "cheng2020-attn": ("cheng2020_attn-mse", (
        "465f2b64", "e0805385", "2d07bbdf", "f7b0ccf2", "26c8920e", "730501f2")),
}
SHA256_PREFIX = re.compile(r"[0-9a-fA-F]{8,64}")  # what may name a checkpoint's SHA-256

_lock = threading.Lock()  # one fetch at a time in a process; guards _loaded
_loaded: dict[Path, CodingModel] = {}  # by cache file: each is loaded once per process


class FetchError(OSError):
    """A model that could not be fetched: the server unreachable or refusing, a truncated
    download, or a file that is not the one its SHA-256 prefix names."""


def zoo_models() -> dict[str, tuple[int, ...]]:
    """The models by name this engine can fetch (those whose architecture the importer knows)
    and their quality levels."""
    return {name: tuple(range(1, len(prefixes) + 1))
            for name, (_, prefixes) in CHECKPOINTS.items() if name in ARCHS}


def check(name: str, quality: float) -> None:
    """ValueError unless `name` is a zoo model with quality level `quality`."""
    levels = zoo_models().get(name)
    if levels is None:
        raise ValueError(f"no CompressAI zoo model {name!r}; available: {sorted(zoo_models())}")
    if quality not in levels:
        raise ValueError(f"model {name!r} has quality levels {list(levels)}, not {quality:g}")


def checkpoint_url(name: str, quality: int) -> tuple[str, str]:
    """(URL, SHA-256 prefix) of CompressAI's checkpoint of `name` at `quality` (a model and
    level of CHECKPOINTS), under $NICENGINE_ZOO_URL when set, else CompressAI's address."""
    stem, prefixes = CHECKPOINTS[name]
    base = os.environ.get("NICENGINE_ZOO_URL") or ZOO_URL
    prefix = prefixes[quality - 1]
    return f"{base.rstrip('/')}/{stem}-{quality}-{prefix}.pth.tar", prefix


def cache_dir() -> Path:
    """nicengine's cache: $NICENGINE_CACHE, else $XDG_CACHE_HOME/nicengine, else
    ~/.cache/nicengine (the XDG base directory rules: a relative XDG_CACHE_HOME is ignored)."""
    if os.environ.get("NICENGINE_CACHE"):
        return Path(os.environ["NICENGINE_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "nicengine"


def cached_path(name: str, quality: int) -> Path:
    """Where the cache keeps the weights of `name` at `quality` (whether there or not)."""
    return cache_dir() / "zoo" / f"{name}-q{quality}.safetensors"


def load(name: str, quality: int, timeout: float = TIMEOUT) -> CodingModel:
    """The zoo model `name` at `quality` from the cache, fetched (and cached) on first use."""
    check(name, quality)
    path = cached_path(name, quality)
    with _lock:
        if path not in _loaded:
            if not path.is_file():
                _fetch(name, quality, *checkpoint_url(name, quality), timeout)
            _loaded[path] = load_weights(path)
        return _loaded[path]


def fetch(name: str, quality: int, url: str | None = None, sha256: str | None = None,
          timeout: float = TIMEOUT) -> CodingModel:
    """Download `name` at `quality` (CompressAI's checkpoint, or the file at `url`, whose SHA-256
    must start with `sha256`), import it and cache it in place of any cached copy; the model.
    FetchError when it cannot be had; nothing is cached then."""
    check(name, quality)
    if url is None:
        url, sha256 = checkpoint_url(name, quality)
    elif sha256 is None or not SHA256_PREFIX.fullmatch(sha256):
        raise ValueError(f"a checkpoint at an explicit URL needs its SHA-256, or a prefix of 8 or "
                         f"more hex digits of it, not {sha256!r}")
    path = cached_path(name, quality)
    with _lock:
        _fetch(name, quality, url, sha256.lower(), timeout)
        _loaded[path] = load_weights(path)
        return _loaded[path]


def cached(quality: float) -> list[CodingModel]:
    """The zoo models cached at `quality`, loaded; never fetches anything."""
    models = []
    with _lock:
        for name, levels in zoo_models().items():
            if quality not in levels:
                continue
            path = cached_path(name, int(quality))
            if path not in _loaded and path.is_file():
                _loaded[path] = load_weights(path)
            if path in _loaded:
                models.append(_loaded[path])
    return models


def _fetch(name: str, quality: int, url: str, sha256: str, timeout: float) -> None:
    """Download, verify and import into a temporary folder beside the cache, then move in."""
    path = cached_path(name, quality)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=path.parent) as tmp:
        # The file keeps its name: the weights' record names the checkpoint they came from.
        checkpoint = Path(tmp) / (url.rsplit("/", 1)[-1] or "checkpoint.pth.tar")
        try:
            digest = _download(url, checkpoint, timeout)
        except FetchError:
            raise
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, resets
            raise FetchError(
                f"cannot fetch {name} quality {quality} from {url} ({_reason(e)}); to cache a "
                f"copy of that file obtained otherwise: python -m engine.zoo import-compressai "
                f"CKPT {path} --arch {name} --quality {quality}"
            ) from None
        if not digest.startswith(sha256):
            raise FetchError(f"{url}: SHA-256 {digest[:len(sha256)]}... is not the {sha256} "
                             "expected; nothing cached")
        weights = Path(tmp) / path.name
        try:
            import_compressai(checkpoint, weights, name, quality=quality)
        except ValueError as e:  # its messages name the temporary file: name the URL instead
            raise FetchError(f"{str(e).replace(str(checkpoint), url)}; nothing cached") from None
        _move_in(weights, path)


def _download(url: str, dest: Path, timeout: float) -> str:
    """Stream `url` into `dest`; its SHA-256 (hex). FetchError when fewer bytes arrive than the
    server announced (http.client returns a short body without complaint)."""
    digest, received = hashlib.sha256(), 0
    with urllib.request.urlopen(url, timeout=timeout) as response, dest.open("wb") as f:
        announced = response.headers.get("Content-Length")
        while chunk := response.read(1 << 20):
            f.write(chunk)
            digest.update(chunk)
            received += len(chunk)
    if announced is not None and announced.isdigit() and received != int(announced):
        raise FetchError(f"{url}: truncated download ({received} of {announced} bytes); "
                         "nothing cached")
    return digest.hexdigest()


def _reason(e: Exception) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    return str(getattr(e, "reason", None) or e or type(e).__name__)


def _move_in(weights: Path, path: Path) -> None:
    """Move a weights file and its companions into the cache: the weights file out first and in
    last, so that whenever it is there its companions are its own; a companion the new import
    lacks is removed (it would belong to other weights)."""
    path.unlink(missing_ok=True)
    for kind in COMPANIONS:
        new, old = companion(weights, kind), companion(path, kind)
        if new.is_file():
            os.replace(new, old)
        else:
            old.unlink(missing_ok=True)
    os.replace(weights, path)
