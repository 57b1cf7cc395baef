"""The shipped models, CompressAI's published ones by name (engine/zoo/published.py), and
weights files (engine/zoo/weights.py).

A shipped model is a name (`model=` in the API) and its quality levels: one weights file per
level, `engine/weights/NAME-qQ.safetensors`, or for a variable-rate model one file,
`engine/weights/NAME.safetensors`, for every quality of its range (fractional ones too).
A zoo model (`zoo_models()`) is a name too: CompressAI's checkpoint, fetched, imported and cached
on first use. Streams name the model kind, quality and weights fingerprint; `for_stream` finds
the shipped or cached weights that made one.
"""

from __future__ import annotations

import math
import threading
from functools import cache
from pathlib import Path

from ..errors import CodecError
from ..models import KINDS, CodingModel
from . import published
from .compressai import import_compressai
from .published import FetchError, cache_dir, fetch, zoo_models
from .weights import (
    STORAGE,
    SUFFIX,
    companion,
    fingerprint,
    load_integer_hyper,
    load_rectifier,
    load_weights,
    save_integer_hyper,
    save_rectifier,
    save_weights,
)

WEIGHTS_DIR = Path(__file__).parents[1] / "weights"
DEFAULT_MODEL = "msh"  # mean-scale hyperprior, N=64, M=128 (docs/TRAINING.md)
DEFAULT_QUALITY = 3
_loading = threading.Lock()

__all__ = ["DEFAULT_MODEL", "DEFAULT_QUALITY", "STORAGE", "FetchError", "cache_dir",
           "check_quality", "companion", "fetch", "fingerprint", "for_stream",
           "import_compressai", "levels", "load", "load_integer_hyper", "load_rectifier",
           "load_weights", "quality_range", "save_integer_hyper", "save_rectifier",
           "save_weights", "shipped_models", "shipped_qualities", "stream_model_name",
           "zoo_models"]


@cache
def shipped_models() -> dict[str, tuple[int, ...]]:
    """Each shipped model's name and its quality levels, in increasing rate. A variable-rate
    model lists its integer qualities; it codes every quality of its range (`quality_range`)."""
    levels: dict[str, list[int]] = {}
    for p in WEIGHTS_DIR.glob("*-q*.safetensors"):
        name, q = p.name.removesuffix(SUFFIX).rsplit("-q", 1)
        if q.isdigit():  # not NAME-qQ.int.safetensors, an integer hyper-decoder
            levels.setdefault(name, []).append(int(q))
    for name, model in _variable_rate().items():
        low, high = model.quality_range()
        levels[name] = list(range(math.ceil(low), math.floor(high) + 1))
    return {name: tuple(sorted(qs)) for name, qs in sorted(levels.items())}


@cache
def _variable_rate() -> dict[str, CodingModel]:
    """The shipped variable-rate models, loaded: NAME.safetensors (no -qQ level, no
    NAME.KIND.safetensors companion), one file for every quality of its range."""
    files = (p for p in WEIGHTS_DIR.glob("*" + SUFFIX)
             if "." not in p.name.removesuffix(SUFFIX)
             and not p.name.removesuffix(SUFFIX).rsplit("-q", 1)[-1].isdigit())
    return {p.name.removesuffix(SUFFIX): load_weights(p) for p in sorted(files)}


def quality_range(model: str) -> tuple[float, float] | None:
    """The qualities a shipped variable-rate model codes at (None for a model of levels)."""
    shipped_qualities(model)
    variable = _variable_rate().get(model)
    return None if variable is None else variable.quality_range()


def shipped_qualities(model: str = DEFAULT_MODEL) -> tuple[int, ...]:
    """The quality levels of a shipped model."""
    if model not in shipped_models():
        raise ValueError(f"no shipped model {model!r} (shipped: {sorted(shipped_models())}; "
                         f"by name from CompressAI's zoo: {sorted(zoo_models())})")
    return shipped_models()[model]


def _from_zoo(model: str) -> bool:
    return model in zoo_models() and model not in shipped_models()


def check_quality(model: str, quality: float) -> None:
    """ValueError unless `model` is shipped or a zoo model and codes at `quality`: one of its
    levels, or any quality of a variable-rate model's range."""
    if _from_zoo(model):
        published.check(model, quality)
        return
    levels = shipped_qualities(model)
    span = quality_range(model)
    if span is not None:
        if not span[0] <= quality <= span[1]:
            raise ValueError(f"model {model!r} codes qualities in [{span[0]:g}, {span[1]:g}], "
                             f"not {quality:g}")
    elif quality not in levels:
        raise ValueError(f"model {model!r} has quality levels {list(levels)}, not {quality:g}")


def levels(model: str) -> tuple[int, ...]:
    """The quality levels of a shipped or zoo model, in increasing rate (a variable-rate
    model's integer qualities)."""
    return zoo_models()[model] if _from_zoo(model) else shipped_qualities(model)


def load(model: str, quality: float) -> CodingModel:
    """A shipped model at a quality level (loaded once per process, also when many threads ask
    at once); a variable-rate model's one network for every quality; a zoo model from the cache,
    fetched on first use."""
    check_quality(model, quality)
    if _from_zoo(model):
        return published.load(model, int(quality))
    if model in _variable_rate():
        return _variable_rate()[model]
    with _loading:
        return _load(model, int(quality))


@cache
def _load(model: str, quality: int) -> CodingModel:
    return load_weights(WEIGHTS_DIR / f"{model}-q{quality}.safetensors")


def _codes_at(model: str, quality: float) -> bool:
    try:
        check_quality(model, quality)
    except ValueError:
        return False
    return True


def _shipped(kind_id: int, quality: float, fingerprint: int
             ) -> tuple[list[CodingModel], str | None, CodingModel | None]:
    """The shipped models that code at `quality`, and the name and weights of the one that made
    a stream of this header (None, None where none did)."""
    candidates = {name: load(name, quality) for name in shipped_models()
                  if _codes_at(name, quality)}
    for name, model in candidates.items():
        if kind_id == model.KIND_ID and model.info.fingerprint == fingerprint:
            return list(candidates.values()), name, model
    return list(candidates.values()), None, None


def stream_model_name(kind_id: int, quality: float, fingerprint: int) -> str:
    """What made a stream: the shipped or cached zoo model's name ("msh", "mbt2018"), else its
    kind's name."""
    name = _shipped(kind_id, quality, fingerprint)[1]
    if name is not None:
        return name
    zoo_model = _cached(kind_id, quality, fingerprint)
    if zoo_model is not None:
        return Path(zoo_model.info.path).name.rsplit("-q", 1)[0]
    kind = next((k.ARCH for k in KINDS.values() if kind_id == k.KIND_ID), f"kind {kind_id}")
    return f"{kind} (weights not shipped)"


def _cached(kind_id: int, quality: float, fingerprint: int) -> CodingModel | None:
    """The cached zoo weights that made a stream of this header (loaded only when asked: for
    streams no shipped model made)."""
    return next((m for m in published.cached(quality)
                 if kind_id == m.KIND_ID and m.info.fingerprint == fingerprint), None)


def for_stream(kind_id: int, quality: float, fingerprint: int) -> CodingModel:
    """The shipped or cached zoo weights that made a stream (its header's kind, quality and
    fingerprint). Never fetches: a stream names no zoo model, only its weights' fingerprint."""
    candidates, _, model = _shipped(kind_id, quality, fingerprint)
    model = model or _cached(kind_id, quality, fingerprint)
    if model is not None:
        return model
    hint = ""
    if any(quality in levels for levels in zoo_models().values()):
        hint = (f"; a stream of a CompressAI zoo model decodes once that model is cached "
                f"(python -m engine.zoo fetch NAME --quality {quality:g})")
    if not candidates and not published.cached(quality):
        raise CodecError(f"the stream needs quality {quality:g}, which no shipped model has "
                         f"(shipped: {shipped_models()}), nor a cached zoo model{hint}")
    raise CodecError(f"the stream was encoded with weights that are not shipped with this "
                     f"engine (kind {kind_id}, quality {quality:g}, fingerprint "
                     f"{fingerprint:08x}); pass them as weights= (--weights on the command "
                     f"line){hint}")
