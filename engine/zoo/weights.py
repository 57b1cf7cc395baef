"""Weights files: safetensors with the model kind, its config and its training record.

A weights file holds float16 tensors, or int8 convolution kernels with a float32 scale per output
channel (half the size, for large models), and, in its metadata, the kind ("arch"), its config
and how the model was trained. Loading never executes code (safetensors, not pickle). Every
loaded model carries a fingerprint of its weights that goes into each stream, so a stream is
never decoded with weights other than the ones that encoded it.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from ..models import KINDS, CodingModel, ModelInfo
from ..models.integer_hyper import IntegerHyper
from ..models.rectifier import RectifiedDecoder, RectifierConfig

STORAGE = ("float16", "int8", "float32")
SCALE = ".int8_scale"  # suffix of an int8 tensor's per-output-channel scales
SUFFIX = ".safetensors"
# Files beside a weights file that give its streams another decoder, by kind; and the command
# that makes each.
COMPANIONS = {"integer_hyper": ".int.safetensors", "rectifier": ".qr.safetensors"}
COMMANDS = {"integer_hyper": "python -m engine.train integerize",
            "rectifier": "python -m engine.train rectify"}


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


def save_weights(model: CodingModel, path: str | Path, storage: str = "float16",
                 **info: object) -> None:
    """Write the weights with the architecture and `info` (lambda, steps, ...) as metadata.
    `storage="int8"` stores the convolution kernels (4-D tensors, 99 % of the parameters) as
    int8, everything else as float16; "float32" keeps every tensor exact (imported models)."""
    if storage not in STORAGE:
        raise ValueError(f"storage must be one of {STORAGE}, not {storage!r}")
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().float()
        if storage == "int8" and v.dim() == 4:
            tensors[k], tensors[k + SCALE] = _int8(v)
        else:
            tensors[k] = v if storage == "float32" else v.half()
    meta = {"arch": model.ARCH, "config": json.dumps(model.config.to_dict()), "storage": storage,
            "info": json.dumps(info)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Our own write, not safetensors' save_file: that creates the file readable by its owner
    # alone (0600), and a weights file is usually served to other users.
    path.write_bytes(save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta))


def load_weights(path: str | Path) -> CodingModel:
    """A float32 model of the kind the file names, in eval mode, its `info` filled in."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such weights file: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            stored = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as e:  # safetensors raises its own error types for foreign files
        raise ValueError(f"{path}: not a safetensors weights file ({e})") from None
    kind = KINDS.get(meta.get("arch", ""))
    if kind is None:
        raise ValueError(f"{path}: unknown model kind {meta.get('arch')!r}; "
                         f"this engine knows {sorted(KINDS)}")
    # Ordinary tensors even when the caller is in inference mode: weights loaded as inference
    # tensors could never take part in a backward pass (latent refinement needs one).
    with torch.inference_mode(False):
        return _build(kind, meta, stored, path)


def _build(kind: type[CodingModel], meta: dict, stored: dict[str, torch.Tensor], path: Path
           ) -> CodingModel:
    model = kind(kind.CONFIG(**json.loads(meta["config"])))
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
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: the tensors do not fit a {kind.ARCH} of that config: "
                         f"{str(e).splitlines()[0]}") from None
    model.eval().requires_grad_(False)
    info = json.loads(meta.get("info", "{}"))
    model.info = ModelInfo(fingerprint(model), quality=float(info.get("quality", 0)),
                           lam=info.get("lambda"), path=str(path), meta=info)
    integer = companion(path, "integer_hyper")
    if integer.is_file():
        model.attach_integer_hyper(load_integer_hyper(integer, model.info.fingerprint, kind))
    rectifier = companion(path, "rectifier")
    if rectifier.is_file():
        model.attach_rectifier(load_rectifier(rectifier, model.info.fingerprint))
    return model


def companion(path: str | Path, kind: str) -> Path:
    """Where a weights file's companion of this kind lives (`COMPANIONS`): NAME.int.safetensors
    (integer hyper-decoder), NAME.qr.safetensors (rectified decoder)."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(SUFFIX) + COMPANIONS[kind])


def _save_companion(kind: str, tensors: dict[str, torch.Tensor], weights: CodingModel,
                    path: str | Path, **meta: str) -> None:
    """Write a companion of `weights` (whose fingerprint it records)."""
    meta = {"kind": kind, "weights_fingerprint": f"{weights.info.fingerprint:08x}", **meta}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    Path(path).write_bytes(save(tensors, metadata=meta))


def _read_companion(path: str | Path, kind: str, weights_fingerprint: int
                    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a companion file; ValueError unless it is of this kind and was
    made for the weights with this fingerprint."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as e:
        raise ValueError(f"{path}: not a safetensors file ({e})") from None
    if meta.get("kind") != kind:
        raise ValueError(f"{path}: not a {kind} companion (its kind: {meta.get('kind')!r})")
    if meta.get("weights_fingerprint") != f"{weights_fingerprint:08x}":
        raise ValueError(f"{path}: made for weights {meta.get('weights_fingerprint')}, not these "
                         f"({weights_fingerprint:08x}); make it again ({COMMANDS[kind]})")
    return state, meta


def save_integer_hyper(integer_hyper: IntegerHyper, weights: CodingModel, path: str | Path
                       ) -> None:
    """Write an integer hyper-decoder for `weights`."""
    _save_companion("integer_hyper", integer_hyper.state_dict(), weights, path)


def load_integer_hyper(path: str | Path, weights_fingerprint: int,
                       kind: type[CodingModel] = CodingModel) -> IntegerHyper:
    """The integer hyper-decoder in `path` of a model of this kind; ValueError unless it was
    made for the weights with this fingerprint."""
    state, _ = _read_companion(path, "integer_hyper", weights_fingerprint)
    try:
        return kind.integer_from_state(state)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def save_rectifier(decoder: RectifiedDecoder, weights: CodingModel, path: str | Path,
                   **info: object) -> None:
    """Write a rectified decoder for `weights`, with its training record `info` (float16
    tensors, like weights files)."""
    _save_companion("rectifier", {k: v.half() for k, v in decoder.state_dict().items()},
                    weights, path,
                    config=json.dumps(decoder.config.to_dict()), info=json.dumps(info))


def load_rectifier(path: str | Path, weights_fingerprint: int) -> RectifiedDecoder:
    """The rectified decoder in `path` (eval mode); ValueError unless it was made for the
    weights with this fingerprint."""
    state, meta = _read_companion(path, "rectifier", weights_fingerprint)
    with torch.inference_mode(False):
        try:
            decoder = RectifiedDecoder(RectifierConfig(**json.loads(meta.get("config", "{}"))))
            decoder.load_state_dict({k: v.float() for k, v in state.items()})
        except (TypeError, RuntimeError) as e:
            raise ValueError(f"{path}: not a valid rectified decoder: "
                             f"{str(e).splitlines()[0]}") from None
    decoder.info = json.loads(meta.get("info", "{}"))
    return decoder.eval().requires_grad_(False)
