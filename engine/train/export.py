"""Export a training checkpoint to the safetensors weights file the engine loads."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from ..models import CodingModel
from ..zoo import load_weights, save_weights
from .loop import CHECKPOINT, TrainConfig, build_model


def export_checkpoint(checkpoint: str | Path, out: str | Path, storage: str = "float16",
                      **info: object) -> None:
    """`checkpoint`: a run folder or its checkpoint file, or a weights file to store again
    (in another `storage`, see `save_weights`). The training config (lambda, N, M, steps done,
    data) goes into the weights file's metadata together with `info`. A run that started from
    other weights (`init`) also records their metadata as `init_info` and counts their steps in
    `total_steps`, so a chain of fine-tunes keeps its whole history."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        state = {k[6:]: f.get_tensor(k) for k in f.keys() if k.startswith("model.")}  # noqa: SIM118
    if meta.get("arch"):  # a weights file
        model = load_weights(path)
        save_weights(model, out, storage, **{**_stored_info(model), **info})
        return
    config = json.loads(meta["config"])
    model = build_model(TrainConfig(**config))
    model.load_state_dict(state)
    steps = int(meta["step"])
    meta_info = {"steps": steps, "train_config": config}
    if not model.VARIABLE_RATE:  # a variable-rate model's lambdas are in its config
        meta_info["lambda"] = config["lam"]
    if not config.get("init"):
        meta_info["total_steps"] = steps
    elif Path(config["init"]).exists():  # else the history is unknown here: left out
        init = _stored_info(load_weights(config["init"]))
        meta_info["init_info"] = init
        meta_info["total_steps"] = steps + init.get("total_steps", init.get("steps", 0))
    save_weights(model, out, storage, **{**meta_info, **info})


def _stored_info(model: CodingModel) -> dict:
    """A loaded model's training record, as its weights file stores it."""
    return dict(model.info.meta)
