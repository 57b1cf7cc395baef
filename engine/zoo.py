"""Model weights: the shipped quality levels and loading/saving safetensors files.

A weights file holds float16 tensors, or int8 convolution kernels with a float32 scale per output
channel (half the size, for large models), and, in its metadata, the architecture and how the
model was trained. Loading never executes code (safetensors, not pickle). Every loaded model
carries a fingerprint of its weights that goes into each stream, so a stream is never decoded
with weights other than the ones that encoded it.
"""

from __future__ import annotations

import json
import zlib
from functools import cache
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from .errors import CodecError
from .models import MeanScaleHyperprior, ModelConfig

WEIGHTS_DIR = Path(__file__).parent / "weights"
ARCH = "mean_scale_hyperprior"
MODEL_ID = 1  # the architecture's id in stream headers
STORAGE = ("float16", "int8")
SCALE = ".int8_scale"  # suffix of an int8 tensor's per-output-channel scales


def fingerprint(model: torch.nn.Module) -> int:
    """CRC32 over the names and float32 bytes of every tensor of the state dict."""
    crc = 0
    for name, t in sorted(model.state_dict().items()):
        crc = zlib.crc32(name.encode(), crc)
        crc = zlib.crc32(t.detach().float().cpu().contiguous().numpy().tobytes(), crc)
    return crc


def _per_channel(scale: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`scale` (one per output channel) shaped to broadcast against `like` along dim 0."""
    return scale.float().view(-1, *[1] * (like.dim() - 1))


def _int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per output channel (dim 0): error at most scale / 2."""
    scale = w.abs().amax(dim=tuple(range(1, w.dim()))).clamp_min(1e-30) / 127
    return torch.round(w / _per_channel(scale, w)).to(torch.int8), scale


def save_weights(model: MeanScaleHyperprior, path: str | Path, storage: str = "float16",
                 **info: object) -> None:
    """Write the weights with the architecture and `info` (lambda, steps, ...) as metadata.
    `storage="int8"` stores the convolution kernels (4-D tensors, 99 % of the parameters) as
    int8, everything else as float16."""
    if storage not in STORAGE:
        raise ValueError(f"storage must be one of {STORAGE}, not {storage!r}")
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().float()
        if storage == "int8" and v.dim() == 4:
            tensors[k], tensors[k + SCALE] = _int8(v)
        else:
            tensors[k] = v.half()
    meta = {"arch": ARCH, "config": json.dumps(model.config.to_dict()), "storage": storage,
            "info": json.dumps(info)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Our own write, not safetensors' save_file: that creates the file readable by its owner
    # alone (0600), and a weights file is usually served to other users.
    path.write_bytes(save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta))


def load_weights(path: str | Path) -> MeanScaleHyperprior:
    """A float32 model in eval mode, with `.info` (metadata plus `fingerprint`) attached."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        if meta.get("arch") != ARCH:
            raise ValueError(f"{path}: not a {ARCH} weights file")
        model = MeanScaleHyperprior(ModelConfig(**json.loads(meta["config"])))
        stored = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    state = {}
    for k, v in stored.items():
        if k.endswith(SCALE):
            continue
        if v.dtype == torch.int8:
            scale = stored.get(k + SCALE)
            if scale is None or scale.numel() != v.shape[0]:
                raise ValueError(f"{path}: int8 tensor {k} lacks one scale per output channel")
            v = v.float() * _per_channel(scale, v)
        state[k] = v.float()
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
