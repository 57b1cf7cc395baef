"""nicengine: learned image compression.

    data = engine.compress(image, quality=3)      # tensor, numpy array, PIL image or path
    image = engine.decompress(data)               # (3, H, W) float32 in [0, 1]
    data = engine.compress(image, refine=engine.Refine(method="ssl", iterations=500))

`engine.Codec` keeps loaded models for repeated calls; `CodecError` reports unusable streams,
`UsageError` settings the engine cannot serve (`DeviceUnavailable`: a CUDA device that is not
there); `engine.zoo.shipped_models()` lists the models and their quality levels;
`engine.zoo.zoo_models()` CompressAI's published ones, which `model=NAME` fetches into a cache on
first use.
"""

from __future__ import annotations

import os

# OpenMP threads wait by sleeping, not spinning: with a core taken by another process, spinning
# waits made two threads 5 to 10x slower than one (benchmarks/RESULTS.md, "Under a busy core").
# OpenMP reads this once, when torch loads it: it takes effect where engine is imported first
# (the command line, pool workers); otherwise set it before importing torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from . import heap, zoo  # noqa: E402
from .codec import DEFAULT_MODEL, DEFAULT_QUALITY, Codec, check_quality_number
from .errors import CodecError, DeviceUnavailable, UsageError
from .images import ImageLike
from .refine import Refine

heap.retain()  # large tensors reuse freed heap instead of faulting in fresh pages (engine/heap.py)

__all__ = ["DEFAULT_MODEL", "DEFAULT_QUALITY", "Codec", "CodecError", "DeviceUnavailable",
           "Refine", "UsageError", "compress", "compress_batch", "decompress", "decompress_batch",
           "zoo"]

Device = str | torch.device
_codecs: dict[tuple[str, float, str], Codec] = {}
_lock = threading.Lock()


def _codec(model: str, quality: float, device: Device) -> Codec:
    check_quality_number(quality)  # before the cache: True would find the codec of quality 1
    key = (model, quality, str(device))
    with _lock:
        if key not in _codecs:
            _codecs[key] = Codec(quality, device, model=model)
        return _codecs[key]


def compress(image: ImageLike, quality: float = DEFAULT_QUALITY, device: Device = "auto",
             drop_alpha: bool = False, refine: Refine | None = None,
             model: str = DEFAULT_MODEL, max_bytes: int | None = None,
             target_bpp: float | None = None) -> bytes:
    """Compress one image with a shipped model, or a zoo model by name (fetched on first use).
    `device`: where the networks run ("auto": a CUDA tensor's own device, else the GPU when
    there is one, else the CPU). `refine`: optimise the latents first (slower encoding, same
    decoder; see `engine.Refine`). `max_bytes` or `target_bpp`: the highest quality (or level)
    that fits instead of `quality`; with `refine`, refined to fill the budget
    (`Codec.compress`)."""
    return _codec(model, quality, device).compress(image, drop_alpha, refine, max_bytes,
                                                   target_bpp)


def compress_batch(images: list[ImageLike] | torch.Tensor, quality: float = DEFAULT_QUALITY,
                   device: Device = "auto", drop_alpha: bool = False,
                   refine: Refine | None = None, model: str = DEFAULT_MODEL,
                   max_bytes: int | None = None, target_bpp: float | None = None
                   ) -> list[bytes]:
    """`compress` for many images, the same bytes as one call each (equal sizes share network
    passes)."""
    return _codec(model, quality, device).compress_batch(images, drop_alpha, refine, max_bytes,
                                                         target_bpp)


def decompress(data: bytes | str | Path, device: Device = "auto", rectifier: bool = True
               ) -> torch.Tensor:
    """Decode a stream (bytes or a stream file's path; of any shipped model, or a zoo model in
    the cache) to a (3, H, W) float32 tensor in [0, 1] on the device the networks ran on.
    `rectifier=False`: decode without the quantization rectifier of the weights that have one
    (faster; docs/RECTIFIER.md says what each costs)."""
    return _codec(DEFAULT_MODEL, DEFAULT_QUALITY, device).decompress(data, rectifier=rectifier)


def decompress_batch(streams: list[bytes | str | Path], device: Device = "auto",
                     rectifier: bool = True) -> list[torch.Tensor]:
    """`decompress` for many streams."""
    return _codec(DEFAULT_MODEL, DEFAULT_QUALITY, device).decompress_batch(streams,
                                                                           rectifier=rectifier)
