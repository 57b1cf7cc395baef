"""python -m engine.train RUN_DIR [options]   |   python -m engine.train export CKPT OUT
   |   python -m engine.train integerize WEIGHTS   |   python -m engine.train rectify WEIGHTS
   |   python -m engine.train cae RUN_DIR [options]
   |   python -m engine.train cae-export RUN_DIR OUT"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from ..zoo import STORAGE
from .cae import CaeTrainConfig, CaeTrainer
from .cae import export_main as cae_export
from .export import export_checkpoint
from .integerize import integerize_file
from .loop import TrainConfig, Trainer
from .rectify import ALPHAS, rectify_file


def _train(argv: list[str], config_type: type[TrainConfig] = TrainConfig,
           trainer_type: type[Trainer] = Trainer, prog: str = "python -m engine.train") -> None:
    p = argparse.ArgumentParser(prog=prog, description="Train (or resume) a run in RUN_DIR.")
    p.add_argument("run_dir")
    defaults = config_type()
    for f in fields(config_type):
        value = getattr(defaults, f.name)
        if isinstance(value, bool):
            p.add_argument(f"--{f.name}", type=lambda s: s.lower() in ("1", "true", "yes"),
                           default=value)
        elif isinstance(value, list):
            p.add_argument(f"--{f.name}", type=int if f.type == "list[int]" else float,
                           nargs="+", default=value)
        else:
            p.add_argument(f"--{f.name}", type=type(value) if value is not None else str,
                           default=value)
    p.add_argument("--minutes", type=float, default=float("inf"),
                   help="stop (and save) after this long; rerun the command to resume")
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--device", default=None)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in RUN_DIR with its stored config")
    a = p.parse_args(argv)
    config = None if a.resume else config_type(**{f.name: getattr(a, f.name)
                                                  for f in fields(config_type)})
    trainer_type(a.run_dir, config, a.device).run(a.minutes, save_every=a.save_every)


def _cae(argv: list[str]) -> None:
    _train(argv, CaeTrainConfig, CaeTrainer, "python -m engine.train cae")


def _export(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m engine.train export",
                                description="Write the weights file of a checkpoint.")
    p.add_argument("checkpoint", help="run folder, checkpoint.safetensors or a weights file")
    p.add_argument("out")
    p.add_argument("--quality", type=int, default=None)
    p.add_argument("--storage", choices=STORAGE, default="float16",
                   help="int8: convolution kernels in int8 (half the size of float16)")
    a = p.parse_args(argv)
    info = {} if a.quality is None else {"quality": a.quality}
    export_checkpoint(a.checkpoint, a.out, a.storage, **info)


def _integerize(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m engine.train integerize",
                                description="Fine-tune and write the integer hyper-decoder of "
                                            "a weights file (NAME.int.safetensors beside it).")
    p.add_argument("weights")
    p.add_argument("--data", default="../shared/data/train")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--crops", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    report = integerize_file(a.weights, a.data, steps=a.steps, crops=a.crops, lr=a.lr,
                             seed=a.seed)
    print(json.dumps(report))


def _rectify(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m engine.train rectify",
                                description="Train and write the rectified decoder of a weights "
                                            "file (NAME.qr.safetensors beside it): phase 2 of "
                                            "soft-to-predictive training.")
    p.add_argument("weights")
    p.add_argument("--data", default="../shared/data/train")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--decoder-only", action="store_true",
                   help="the ablation: phase 2 without the rectifier (g_s alone fine-tuned on "
                        "the rounded latents), written to the same file")
    p.add_argument("--alpha", type=float, default=None,
                   help="the rectifier coefficient (default: searched)")
    p.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS),
                   help="the search's first grid")
    p.add_argument("--search-steps", type=int, default=500)
    p.add_argument("--crops", type=int, default=3072, help="training crops, coded once")
    p.add_argument("--crop", type=int, default=192, help="their side, in pixels")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4,
                   help="the rectifier's learning rate")
    p.add_argument("--g-s-lr", type=float, default=None,
                   help="g_s's learning rate (default: 1/100 of --lr, with --decoder-only too)")
    p.add_argument("--lam", type=float, default=None,
                   help="lambda of the distortion term (default: the weights' own)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    report = rectify_file(a.weights, a.data, steps=a.steps, alpha=a.alpha,
                          alphas=tuple(a.alphas), search_steps=a.search_steps, crops=a.crops,
                          crop=a.crop, batch=a.batch, lr=a.lr, g_s_lr=a.g_s_lr, lam=a.lam,
                          seed=a.seed, decoder_only=a.decoder_only)
    print(json.dumps(report))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"export": _export, "integerize": _integerize, "rectify": _rectify,
                "cae": _cae, "cae-export": cae_export}
    try:
        if argv[:1] and argv[0] in commands:
            commands[argv[0]](argv[1:])
        else:
            _train(argv)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
