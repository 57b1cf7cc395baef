"""The shipped models, and weights files (engine/zoo/weights.py).

A shipped model is a name (`model=` in the API) and its quality levels: one weights file per
level, `engine/weights/NAME-qQ.safetensors`. Streams name the model kind, quality and weights
fingerprint; `for_stream` finds the shipped weights that made one.
"""

from __future__ import annotations

import threading
from functools import cache
from pathlib import Path

from ..errors import CodecError
from ..models import CodingModel
from .compressai import import_compressai
from .weights import (
    STORAGE,
    SUFFIX,
    fingerprint,
    integer_companion,
    load_integer_hyper,
    load_weights,
    save_integer_hyper,
    save_weights,
)

WEIGHTS_DIR = Path(__file__).parents[1] / "weights"
DEFAULT_MODEL = "msh"  # mean-scale hyperprior, N=64, M=128 (docs/TRAINING.md)
DEFAULT_QUALITY = 3
_loading = threading.Lock()

__all__ = ["DEFAULT_MODEL", "DEFAULT_QUALITY", "STORAGE", "check_quality", "fingerprint",
           "for_stream", "import_compressai", "integer_companion", "load", "load_integer_hyper",
           "load_weights", "save_integer_hyper", "save_weights", "shipped_models",
           "shipped_qualities"]


@cache
def shipped_models() -> dict[str, tuple[int, ...]]:
    """Each shipped model's name and its quality levels, in increasing rate."""
    levels: dict[str, list[int]] = {}
    for p in WEIGHTS_DIR.glob("*-q*.safetensors"):
        name, q = p.name.removesuffix(SUFFIX).rsplit("-q", 1)
        if q.isdigit():  # not NAME-qQ.int.safetensors, an integer hyper-decoder
            levels.setdefault(name, []).append(int(q))
    return {name: tuple(sorted(qs)) for name, qs in sorted(levels.items())}


def shipped_qualities(model: str = DEFAULT_MODEL) -> tuple[int, ...]:
    """The quality levels of a shipped model."""
    if model not in shipped_models():
        raise ValueError(f"no shipped model {model!r}; available: {sorted(shipped_models())}")
    return shipped_models()[model]


def check_quality(model: str, quality: float) -> None:
    """ValueError unless `model` is shipped and `quality` is one of its levels."""
    levels = shipped_qualities(model)
    if quality not in levels:
        raise ValueError(f"model {model!r} has quality levels {list(levels)}, not {quality:g}")


def load(model: str, quality: float) -> CodingModel:
    """A shipped model at a quality level (loaded once per process, also when many threads ask
    at once)."""
    check_quality(model, quality)
    with _loading:
        return _load(model, int(quality))


@cache
def _load(model: str, quality: int) -> CodingModel:
    return load_weights(WEIGHTS_DIR / f"{model}-q{quality}.safetensors")


def for_stream(kind_id: int, quality: float, fingerprint: int) -> CodingModel:
    """The shipped weights that made a stream (its header's kind, quality and fingerprint)."""
    candidates = [load(name, quality) for name, levels in shipped_models().items()
                  if quality in levels]
    for model in candidates:
        if kind_id == model.KIND_ID and model.info.fingerprint == fingerprint:
            return model
    if not candidates:
        raise CodecError(f"the stream needs quality {quality:g}, which no shipped model has "
                         f"(shipped: {shipped_models()})")
    raise CodecError(f"the stream was encoded with weights that are not shipped with this "
                     f"engine (kind {kind_id}, quality {quality:g}, fingerprint "
                     f"{fingerprint:08x}); pass them as weights= (--weights on the command line)")
