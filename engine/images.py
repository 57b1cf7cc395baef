"""Turning what users pass as an image into a (B, 3, H, W) float tensor in [0, 1], and back."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ImageLike = torch.Tensor | np.ndarray | Image.Image | str | Path
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


def list_images(folder: str | Path) -> list[Path]:
    """Every image file below `folder`, sorted."""
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images found below {folder}")
    return paths


def to_batch(image: ImageLike, drop_alpha: bool = False) -> torch.Tensor:
    """(B, 3, H, W) float32 in [0, 1] on the input's device (CPU for non-tensors).

    Accepts torch tensors (CHW or BCHW; float in [0, 1] or uint8), numpy arrays (HWC or HW; uint8,
    or float in [0, 1]), PIL images and file paths. One channel is replicated to RGB; a fourth
    (alpha) channel is an error unless `drop_alpha` is set.
    """
    if isinstance(image, (str, Path)):
        return to_batch(_read_image(Path(image)), drop_alpha)
    if isinstance(image, Image.Image):
        return to_batch(_pil_array(image), drop_alpha)
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise ValueError(f"numpy images must be HWC or HW, got shape {image.shape}")
        if not image.flags.writeable:  # torch wants writable memory (PIL's arrays are not)
            image = image.copy()
        return to_batch(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
                        drop_alpha)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"unsupported image type {type(image).__name__}: pass a tensor, "
                        "a numpy array, a PIL image or a path")
    x = image.unsqueeze(0) if image.dim() == 3 else image
    if x.dim() != 4:
        raise ValueError(f"tensor images must be CHW or BCHW, got shape {tuple(image.shape)}")
    b, c, h, w = x.shape
    if b == 0 or h == 0 or w == 0:
        raise ValueError(f"empty image: shape {tuple(image.shape)}")
    if c == 4:
        if not drop_alpha:
            raise ValueError("the image has an alpha channel, which the codec does not store; "
                             "pass drop_alpha=True to discard it")
        x, c = x[:, :3], 3
    if c == 1:
        x = x.expand(b, 3, h, w)
    elif c != 3:
        raise ValueError(f"images need 1, 3 or 4 channels (C first), got {c} "
                         f"in shape {tuple(image.shape)}")
    if x.dtype == torch.uint8:
        return x.float().div_(255)
    if not x.is_floating_point():
        raise ValueError(f"tensor images must be uint8 or floating point, got {x.dtype}")
    x = x.float()
    lo, hi = (float(v) for v in torch.aminmax(x))  # one pass; a NaN anywhere makes both NaN
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("the image contains NaN or infinite values")
    if lo < 0 or hi > 1:
        raise ValueError(f"float images must lie in [0, 1]; this one spans [{lo:.4g}, {hi:.4g}]")
    return x.contiguous()


def read_file(path: str | Path) -> bytes:
    """A file's bytes; FileNotFoundError / IsADirectoryError name the path."""
    path = Path(path)
    if not path.is_file():
        raise (IsADirectoryError if path.is_dir() else FileNotFoundError)(
            f"{path}: {'a folder, not a file' if path.is_dir() else 'no such file'}")
    return path.read_bytes()


def _read_image(path: Path) -> np.ndarray:
    """The pixels of an image file; ValueError for a file Pillow cannot decode."""
    if not path.is_file():
        read_file(path)  # raises the error that names the problem
    try:
        with Image.open(path) as im:
            return _pil_array(im)
    except (OSError, Image.DecompressionBombError, SyntaxError) as e:
        # PIL reports unknown formats, truncated data and oversized images this way.
        if isinstance(e, PermissionError):
            raise
        raise ValueError(f"{path}: not an image Pillow can read ({e})") from None


def _pil_array(im: Image.Image) -> np.ndarray:
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA" if im.mode != "LA" else "LA")
    elif im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    a = np.asarray(im)
    if a.dtype != np.uint8:
        raise ValueError(f"unsupported image sample type {a.dtype} (mode {im.mode})")
    if a.ndim == 3 and a.shape[2] == 2:  # gray + alpha
        a = a[:, :, [0, 0, 0, 1]]
    return a


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> HWC uint8 array (round to nearest)."""
    return (x.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0)
            .cpu().numpy())


def save_png(x: torch.Tensor, path: str | Path) -> None:
    """Write (3, H, W) in [0, 1] as a PNG file, whatever the name's extension."""
    Image.fromarray(to_uint8(x)).save(path, format="PNG")
