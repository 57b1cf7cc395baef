"""Model weights: the shipped quality levels and loading/saving safetensors files.

A weights file holds float16 tensors and, in its metadata, the architecture and how the model was
trained. Loading never executes code (safetensors, not pickle). Every loaded model carries a
fingerprint of its weights that goes into each stream, so a stream is never decoded with weights
other than the ones that encoded it.
"""

from __future__ import annotations

import json
import zlib
from functools import cache
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import CodecError
from .models import MeanScaleHyperprior, ModelConfig

WEIGHTS_DIR = Path(__file__).parent / "weights"
ARCH = "mean_scale_hyperprior"
MODEL_ID = 1  # the architecture's id in stream headers


def fingerprint(model: torch.nn.Module) -> int:
    """CRC32 over the names and float32 bytes of every tensor of the state dict."""
    crc = 0
    for name, t in sorted(model.state_dict().items()):
        crc = zlib.crc32(name.encode(), crc)
        crc = zlib.crc32(t.detach().float().cpu().contiguous().numpy().tobytes(), crc)
    return crc


def save_weights(model: MeanScaleHyperprior, path: str | Path, **info: object) -> None:
    """Write float16 weights with the architecture and `info` (lambda, steps, ...) as metadata."""
    tensors = {k: v.detach().cpu().half().contiguous() for k, v in model.state_dict().items()}
    meta = {"arch": ARCH, "config": json.dumps(model.config.to_dict()),
            "info": json.dumps(info)}
    save_file(tensors, str(path), metadata=meta)


def load_weights(path: str | Path) -> MeanScaleHyperprior:
    """A float32 model in eval mode, with `.info` (metadata plus `fingerprint`) attached."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        if meta.get("arch") != ARCH:
            raise ValueError(f"{path}: not a {ARCH} weights file")
        model = MeanScaleHyperprior(ModelConfig(**json.loads(meta["config"])))
        state = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118 (not a dict)
    model.load_state_dict(state)
    model.eval().requires_grad_(False)
    model.info = {**json.loads(meta.get("info", "{}")), "fingerprint": fingerprint(model),
                  "path": str(path)}
    return model


def shipped_qualities() -> list[int]:
    """Quality levels whose weights ship with the package, in increasing rate."""
    return sorted(int(p.stem.split("-q")[1]) for p in WEIGHTS_DIR.glob("msh-q*.safetensors"))


@cache
def load_quality(quality: int) -> MeanScaleHyperprior:
    """The shipped model of a quality level (loaded once per process)."""
    path = WEIGHTS_DIR / f"msh-q{quality}.safetensors"
    if not path.exists():
        raise CodecError(f"no shipped model for quality {quality}; "
                         f"available: {shipped_qualities()}")
    return load_weights(path)
