"""Training the compressive autoencoder (`engine.models.cae`) the paper's way, resumable.

Two phases, each a run folder like `engine.train.loop`'s (config.json, log.csv,
checkpoint.safetensors with the model, both optimizers, the step and the RNG state):

- "main": f, g and the mixtures at `lambdas[base]`, straight-through rounding (`--quantizer
  noise`: additive uniform noise instead, for the comparison the paper's review asks for), the
  rate bounded by -log2 q(round(v) + u); incremental training over the code's channels: the run
  starts with `mask_start` enabled and enables `mask_grow` more at the end of every
  `mask_window` steps whose mean loss did not improve on the best by `mask_tolerance`. The
  mixtures learn with their own Adam at `aux_lr`.
- "scales": from the main phase's weights (`--init`), everything frozen but the log2 scales;
  every image of a batch is trained at one of the rates, drawn uniformly, with its own lambda
  (the rows are independent, so this is one fine-tune per rate, interleaved). The rate is the
  exact probability of the rounded code under the frozen mixture
  (`CompressiveAutoencoder.forward`, bound=False), what the coder spends. Unlike the paper,
  the base rate's scales are fine-tuned too: after a short main phase (trained on the bound)
  they are not optimal, and a neighbouring rate's tuned scales coded at fewer bits for a
  higher PSNR than the base rate's, so quality did not order the rate.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..models.cae import CAE_LAMBDAS, CompressiveAutoencoder
from ..zoo import load_weights, save_weights
from .loop import CHECKPOINT, TrainConfig, Trainer, build_model, rd_loss, run_config

PHASES = ("main", "scales")
QUANTIZERS = ("ste", "noise")


@dataclass
class CaeTrainConfig(TrainConfig):
    kind: str = CompressiveAutoencoder.ARCH
    lambdas: list[float] = field(default_factory=lambda: list(CAE_LAMBDAS))
    channels: int = 96
    width: int = 128
    width1: int = 64
    mixtures: int = 6
    base: int = 4
    phase: str = "main"
    quantizer: str = "ste"
    mask_start: int = 2
    mask_window: int = 20  # steps; 0: the mask stays as it is
    mask_tolerance: float = 0.01
    mask_grow: int = 1
    steps: int = 2000
    batch: int = 8
    crop: int = 128
    lr: float = 1e-4
    warmup: int = 50
    decay_at: list[float] = field(default_factory=lambda: [0.85])
    amp: bool = False

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, not {self.phase!r}")
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, not {self.quantizer!r}")
        if self.phase == "scales" and not self.init:
            raise ValueError("the scales phase starts from the main phase's weights: give --init")


class CaeTrainer(Trainer):
    """`Trainer`'s run folder, checkpoints and data, with the CAE's phases."""

    def __init__(self, run_dir: str | Path, config: CaeTrainConfig | None = None,
                 device: str | None = None) -> None:
        self.dir = Path(run_dir)
        self.config = c = run_config(self.dir, config, CaeTrainConfig)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.amp = False  # the mixtures' densities need float32
        torch.manual_seed(c.seed)
        self.model: CompressiveAutoencoder = build_model(c)
        if c.crop % self.model.ALIGN:
            raise ValueError(f"crop must be a multiple of {self.model.ALIGN}, got {c.crop}")
        if c.init:
            init = load_weights(c.init)
            if not isinstance(init, CompressiveAutoencoder):
                raise ValueError(f"{c.init} holds a {init.ARCH}, not a compressive autoencoder")
            if init.config.lambdas[init.config.base] != c.lambdas[c.base]:
                raise ValueError(f"{c.init} was trained at another base lambda than "
                                 f"{c.lambdas[c.base]:g}")
            if c.phase == "main":
                self._start_from(init)
            else:  # the scales start afresh, for this run's lambdas (they may be other rates)
                state = {k: v for k, v in init.state_dict().items() if k != "log2_scales"}
                try:
                    self.model.load_state_dict(state, strict=False)
                except RuntimeError as e:
                    raise ValueError(f"{c.init} does not fit this config: "
                                     f"{str(e).splitlines()[-1].strip()}") from None
        elif c.phase == "main":
            self.model.mask.enabled.fill_(min(c.mask_start, c.channels))
        self.model.to(self.device)
        if c.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.model.requires_grad_(False)
        density = list(self.model.entropy.parameters())
        if c.phase == "main":
            trainable = [p for n, p in self.model.named_parameters()
                         if not n.startswith(("entropy.", "log2_scales"))]
        else:
            trainable = [self.model.log2_scales]
        for p in trainable + (density if c.phase == "main" else []):
            p.requires_grad_(True)
        self.opt = torch.optim.Adam(trainable, lr=c.lr)
        self.aux_opt = torch.optim.Adam(density, lr=c.aux_lr)  # never stepped in "scales"
        self.step = 0
        if (self.dir / CHECKPOINT).exists():
            self._load()

    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        c, model = self.config, self.model
        decay = c.lr_at(self.step) / c.lr
        for opt, lr in ((self.opt, c.lr), (self.aux_opt, c.aux_lr)):
            for group in opt.param_groups:
                group["lr"] = lr * decay
        model.train()
        if c.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        rate = None
        if c.phase == "scales":  # a trained rate for every image
            rate = torch.randint(0, len(c.lambdas), (x.shape[0],))
        out = model(x, rate, c.quantizer, bound=c.phase == "main")
        metrics = rd_loss(out, x, out["lambdas"])
        self.opt.zero_grad(set_to_none=True)
        self.aux_opt.zero_grad(set_to_none=True)
        metrics["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.opt.param_groups[0]["params"], c.clip)
        self.opt.step()
        if c.phase == "main":
            self.aux_opt.step()
            model.mask.observe(float(metrics["loss"].detach()), c.mask_window, c.mask_tolerance,
                               c.mask_grow)
        self.step += 1
        return {**{k: float(v.detach()) for k, v in metrics.items()},
                "channels": model.mask.count}

    def run(self, minutes: float = math.inf, max_steps: int | None = None,
            save_every: int = 250, progress: bool = True) -> None:
        """Train until `config.steps`, or for at most `minutes` / `max_steps` in this call;
        always ends on a save. log.csv: a row every 10 steps."""
        c = self.config
        if self.step >= c.steps:
            return
        stop = c.steps if max_steps is None else min(c.steps, self.step + max_steps)
        deadline = time.monotonic() + minutes * 60
        path = self.dir / "log.csv"
        names = ["step", "loss", "bpp", "psnr", "channels", "lr", "seconds"]
        new = not path.exists()
        with open(path, "a", newline="") as f:
            log = csv.DictWriter(f, fieldnames=names)
            if new:
                log.writeheader()
            start = time.monotonic()
            for x in self._loader():
                m = self.train_step(x.to(self.device))
                if self.step % 10 == 0 or self.step >= stop:
                    log.writerow({"step": self.step, "loss": f"{m['loss']:.5g}",
                                  "bpp": f"{m['bpp']:.5g}", "psnr": f"{m['psnr']:.4g}",
                                  "channels": m["channels"], "lr": f"{c.lr_at(self.step - 1):.3g}",
                                  "seconds": f"{time.monotonic() - start:.1f}"})
                    f.flush()
                    if progress:
                        print(f"step {self.step} loss {m['loss']:.4f} bpp {m['bpp']:.4f} "
                              f"psnr {m['psnr']:.2f} channels {m['channels']}", flush=True)
                if self.step % save_every == 0:
                    self.save()
                if time.monotonic() > deadline or self.step >= stop:
                    break
        self.save()


def export_cae(run_dir: str | Path, out: str | Path, storage: str = "float16") -> None:
    """Write the weights file of a CAE run (its training record in the metadata; a run that
    started from other weights records theirs as `init_info`)."""
    trainer = CaeTrainer(run_dir)
    c = trainer.config
    info: dict = {"steps": trainer.step, "train_config": asdict(c)}
    if c.init:
        init = dict(load_weights(c.init).info.meta)
        info["init_info"] = init
        info["total_steps"] = trainer.step + init.get("total_steps", init.get("steps", 0))
    else:
        info["total_steps"] = trainer.step
    save_weights(trainer.model.cpu(), out, storage, **info)


def export_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m engine.train cae-export",
                                description="Write the weights file of a CAE run.")
    p.add_argument("run_dir")
    p.add_argument("out")
    a = p.parse_args(argv)
    export_cae(a.run_dir, a.out)
