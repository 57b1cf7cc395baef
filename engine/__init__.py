"""nicengine: learned image compression.

    data = engine.compress(image, quality=3)      # tensor, numpy array, PIL image or path
    image = engine.decompress(data)               # (3, H, W) float32 in [0, 1]
    data = engine.compress(image, refine=engine.Refine(method="ssl", iterations=500))

`engine.Codec` keeps loaded models for repeated calls; `CodecError` reports unusable streams.
"""

from __future__ import annotations

import torch

from .codec import DEFAULT_QUALITY, Codec
from .errors import CodecError
from .images import ImageLike
from .refine import Refine

__all__ = ["Codec", "CodecError", "DEFAULT_QUALITY", "Refine", "compress", "compress_batch",
           "decompress", "decompress_batch"]

_codecs: dict[tuple[int, str | None], Codec] = {}


def _codec(quality: int, device: str | torch.device | None) -> Codec:
    key = (quality, None if device is None else str(device))
    if key not in _codecs:
        _codecs[key] = Codec(quality, device)
    return _codecs[key]


def compress(image: ImageLike, quality: int = DEFAULT_QUALITY,
             device: str | torch.device | None = None, drop_alpha: bool = False,
             refine: Refine | None = None) -> bytes:
    """Compress one image with a shipped model. `device`: where the networks run (default: the
    input tensor's device). `refine`: optimise the latents first (slower encoding, same decoder;
    see `engine.Refine`)."""
    return _codec(quality, device).compress(image, drop_alpha, refine)


def compress_batch(images: list[ImageLike] | torch.Tensor, quality: int = DEFAULT_QUALITY,
                   device: str | torch.device | None = None,
                   drop_alpha: bool = False, refine: Refine | None = None) -> list[bytes]:
    return _codec(quality, device).compress_batch(images, drop_alpha, refine)


def decompress(data: bytes, device: str | torch.device | None = None) -> torch.Tensor:
    """Decode a stream to a (3, H, W) float32 tensor in [0, 1] on `device` (default CPU)."""
    return _codec(DEFAULT_QUALITY, None).decompress(data, device)


def decompress_batch(streams: list[bytes], device: str | torch.device | None = None
                     ) -> list[torch.Tensor]:
    return _codec(DEFAULT_QUALITY, None).decompress_batch(streams, device)
