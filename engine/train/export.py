"""Export a training checkpoint to the float16 safetensors file the engine loads."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from ..models import MeanScaleHyperprior, ModelConfig
from ..zoo import save_weights
from .loop import CHECKPOINT


def export_checkpoint(checkpoint: str | Path, out: str | Path, **info: object) -> None:
    """`checkpoint`: a run folder or its checkpoint file. The training config (lambda, N, M,
    steps done, data) goes into the weights file's metadata together with `info`."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        state = {k[6:]: f.get_tensor(k) for k in f.keys() if k.startswith("model.")}  # noqa: SIM118
    config = json.loads(meta["config"])
    model = MeanScaleHyperprior(ModelConfig(config["N"], config["M"]))
    model.load_state_dict(state)
    save_weights(model, out, **{"lambda": config["lam"], "steps": int(meta["step"]),
                                "train_config": config, **info})
