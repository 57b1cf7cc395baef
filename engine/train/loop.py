"""Rate-distortion training of the mean-scale hyperprior, resumable to the bit.

Loss: bpp + lambda * 255^2 * MSE (pixels in [0, 1]); the factorized density's quantiles are fitted
by their own auxiliary loss and optimizer. A run lives in a folder: `config.json`, `log.csv` and
`checkpoint.safetensors` (model, both optimizers, step, RNG state). Stopping at any step and
resuming, on this machine or another of the same kind, continues exactly like one long run.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import rd
from ..images import list_images
from ..models import KINDS, CodingModel, MeanScaleHyperprior
from ..models.channel import MSE_LAMBDAS
from ..precision import amx_bfloat16
from ..zoo import load_weights
from .data import RandomCrops

CHECKPOINT = "checkpoint.safetensors"


@dataclass
class TrainConfig:
    kind: str = MeanScaleHyperprior.ARCH  # a key of engine.models.KINDS
    lam: float = 0.013  # fixed-rate kinds
    lambdas: list[float] = field(default_factory=lambda: list(MSE_LAMBDAS))  # variable-rate
    levels: list[int] = field(default_factory=list)  # variable-rate: levels trained (1-based; all)
    N: int = 128
    M: int = 192
    slices: int = 4  # channel-conditional kinds
    hidden: int = 96
    checkerboard: bool = False  # channel-conditional kinds: two coding passes per slice
    steps: int = 200_000
    batch: int = 8
    crop: int = 256
    lr: float = 1e-4
    aux_lr: float = 1e-3
    warmup: int = 1000
    decay_at: list[float] = field(default_factory=lambda: [0.8, 0.95])
    clip: float = 1.0
    seed: int = 0
    data: str = "../shared/data/train"
    init: str | None = None  # weights file to start from (fine-tuning to another lambda)
    workers: int = 0
    amp: bool = True  # bfloat16 autocast, on CUDA and on CPUs with AMX
    channels_last: bool = True  # NHWC activations: 1.36x the float32 steps/s on a no-AMX CPU

    def lr_at(self, step: int) -> float:
        decay = sum(step >= f * self.steps for f in self.decay_at)
        return self.lr * min(1.0, (step + 1) / max(self.warmup, 1)) * 0.1**decay


def build_model(config: TrainConfig) -> CodingModel:
    """A new model of the config's kind, with the architecture fields of its config."""
    if config.kind not in KINDS:
        raise ValueError(f"unknown model kind {config.kind!r}; expected one of {sorted(KINDS)}")
    kind = KINDS[config.kind]
    return kind(kind.CONFIG(**{f.name: getattr(config, f.name)
                               for f in fields(kind.CONFIG)}))


def rd_loss(out: dict, x: torch.Tensor, lam: float | torch.Tensor
            ) -> dict[str, torch.Tensor]:
    """Batch means of bpp, mse, psnr and loss = bpp + lam * 255^2 * mse (`engine.rd`); `lam`
    may be one per image (B,)."""
    loss, bpp, mse = (v.mean() for v in rd.rd_loss(out["x_hat"], x,
                                                   rd.total_bits(out["likelihoods"]), lam))
    psnr = -10 * torch.log10(mse.detach().clamp_min(1e-10))
    return {"loss": loss, "bpp": bpp, "mse": mse, "psnr": psnr}


def run_config(run_dir: Path, config: object | None, kind: type) -> object:
    """The config of the run in `run_dir` (a dataclass of type `kind`): the one stored there
    (`config`, if given, must equal it), or `config`, stored as the new run's."""
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = run_dir / "config.json"
    if saved.exists():
        stored = kind(**json.loads(saved.read_text()))
        if config is not None and asdict(config) != asdict(stored):
            raise ValueError(f"{run_dir} holds a run with another config; use a new folder")
        return stored
    if config is None:
        raise ValueError(f"{run_dir} holds no run; give a config")
    saved.write_text(json.dumps(asdict(config), indent=2))
    return config


class Trainer:
    """Owns a run folder; `run(minutes)` trains until the step budget or the time limit."""

    def __init__(self, run_dir: str | Path, config: TrainConfig | None = None,
                 device: str | None = None) -> None:
        self.dir = Path(run_dir)
        self.config = config = run_config(self.dir, config, TrainConfig)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # bfloat16 where it is fast: any GPU, and CPUs with AMX (2.9x the float32 steps per second
        # on the development machine); the entropy models run in float32 either way.
        self.amp = config.amp and (self.device.type == "cuda" or amx_bfloat16())
        if self.device.type == "cuda":  # TF32 for what runs in float32 (entropy models, GDN)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        torch.manual_seed(config.seed)
        self.model = build_model(config)
        if config.crop % self.model.ALIGN:
            raise ValueError(f"crop must be a multiple of {self.model.ALIGN}, got {config.crop}")
        if not set(config.levels) <= set(range(1, len(config.lambdas) + 1)):
            raise ValueError(f"levels must lie in 1..{len(config.lambdas)} (one per lambda), "
                             f"not {config.levels}")
        if config.init:
            self._start_from(load_weights(config.init))
        self.model.to(self.device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        aux = [p for n, p in self.model.named_parameters() if n.endswith("quantiles")]
        main = [p for n, p in self.model.named_parameters() if not n.endswith("quantiles")]
        self.opt = torch.optim.Adam(main, lr=config.lr)
        self.aux_opt = torch.optim.Adam(aux, lr=config.aux_lr)
        self.step = 0
        if (self.dir / CHECKPOINT).exists():
            self._load()

    def _start_from(self, init: CodingModel) -> None:
        """Copy the weights of `init`: all of them for the same kind; for another kind (a
        channel-conditional model started from a hyperprior) the shared parts, by name and
        shape, leaving the rest as initialised."""
        if init.ARCH == self.model.ARCH:
            self.model.load_state_dict(init.state_dict())
            return
        own = self.model.state_dict()
        shared = {k: v for k, v in init.state_dict().items()
                  if k in own and own[k].shape == v.shape}
        if not shared:
            raise ValueError(f"{self.config.init}: a {init.ARCH} shares no weights with a "
                             f"{self.model.ARCH} of this config")
        self.model.load_state_dict(shared, strict=False)
        if self.model.VARIABLE_RATE and init.info.lam is not None:
            self.model.start_gains(init.info.lam)

    # --- checkpoints (safetensors: no pickle anywhere) ------------------------------------

    def _named_opt_state(self) -> dict[str, torch.Tensor]:
        names = {id(p): n for n, p in self.model.named_parameters()}
        out = {}
        for tag, opt in (("opt", self.opt), ("aux", self.aux_opt)):
            for p, state in opt.state.items():
                for key, value in state.items():
                    out[f"{tag}.{names[id(p)]}.{key}"] = value.detach().cpu().contiguous()
        return out

    def save(self) -> None:
        tensors = {f"model.{k}": v.detach().cpu().contiguous()
                   for k, v in self.model.state_dict().items()}
        tensors.update(self._named_opt_state())
        tensors["rng.cpu"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        tmp = self.dir / (CHECKPOINT + ".tmp")
        save_file(tensors, str(tmp), metadata={"step": str(self.step),
                                               "config": json.dumps(asdict(self.config))})
        tmp.replace(self.dir / CHECKPOINT)

    def _load(self) -> None:
        path = self.dir / CHECKPOINT
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            self.step = int(f.metadata()["step"])
        model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        self.model.load_state_dict(model_state)
        params = dict(self.model.named_parameters())
        for tag, opt in (("opt", self.opt), ("aux", self.aux_opt)):
            for key, value in tensors.items():
                if key.startswith(tag + "."):
                    name, field_name = key[len(tag) + 1 :].rsplit(".", 1)
                    p = params[name]
                    target = value.to(p.device) if field_name != "step" else value
                    opt.state[p][field_name] = target
        torch.set_rng_state(tensors["rng.cpu"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)

    # --- training --------------------------------------------------------------------------

    def _loader(self) -> DataLoader:
        c = self.config
        paths = list_images(c.data)
        dataset = RandomCrops(paths, c.crop, c.seed, length=c.steps * c.batch)
        return DataLoader(dataset, batch_size=c.batch,
                          sampler=range(self.step * c.batch, c.steps * c.batch),
                          num_workers=c.workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=c.workers > 0, drop_last=False,
                          prefetch_factor=4 if c.workers > 0 else None,
                          generator=torch.Generator())  # keeps the global RNG untouched

    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        c = self.config
        for group in self.opt.param_groups:
            group["lr"] = c.lr_at(self.step)
        self.model.train()
        if c.channels_last:  # the model's layout (a no-op for a batch already in it)
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            if self.model.VARIABLE_RATE:  # every image at a level of its own
                levels = torch.tensor(c.levels or range(1, len(c.lambdas) + 1))
                out = self.model(x, quality=levels[torch.randint(len(levels), (x.shape[0],))])
            else:
                out = self.model(x)
        metrics = rd_loss(out, x, out["lambdas"] if self.model.VARIABLE_RATE else c.lam)
        self.opt.zero_grad(set_to_none=True)
        metrics["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.opt.param_groups[0]["params"], c.clip)
        self.opt.step()
        aux = self.model.aux_loss()
        self.aux_opt.zero_grad(set_to_none=True)
        aux.backward()
        self.aux_opt.step()
        self.step += 1
        result = {k: float(v.detach()) for k, v in metrics.items()}
        result["aux"] = float(aux.detach())
        return result

    def run(self, minutes: float = math.inf, max_steps: int | None = None,
            save_every: int = 1000, progress: bool = True) -> None:
        """Train until `config.steps`, or for at most `minutes` / `max_steps` in this call;
        always ends on a save, from which the next call continues."""
        c = self.config
        if self.step >= c.steps:
            return
        stop_step = c.steps if max_steps is None else min(c.steps, self.step + max_steps)
        log_path = self.dir / "log.csv"
        new_log = not log_path.exists()
        deadline = time.monotonic() + minutes * 60
        fields = ["step", "loss", "bpp", "psnr", "mse", "aux", "lr", "steps_per_s"]
        with open(log_path, "a", newline="") as f:
            log = csv.DictWriter(f, fieldnames=fields)
            if new_log:
                log.writeheader()
            bar = tqdm(total=c.steps, initial=self.step, disable=not progress, unit="step",
                       dynamic_ncols=True)
            tick, tick_step = time.monotonic(), self.step
            for x in self._loader():
                m = self.train_step(x.to(self.device, non_blocking=True))
                bar.update(1)
                if self.step % 10 == 0 or self.step == c.steps:
                    now = time.monotonic()
                    rate = (self.step - tick_step) / max(now - tick, 1e-9)
                    tick, tick_step = now, self.step
                    bar.set_postfix(loss=f"{m['loss']:.3f}", bpp=f"{m['bpp']:.3f}",
                                    psnr=f"{m['psnr']:.2f}", it_s=f"{rate:.2f}")
                    log.writerow({"step": self.step, **{k: f"{m[k]:.6g}" for k in fields[1:6]},
                                  "lr": f"{c.lr_at(self.step - 1):.3g}",
                                  "steps_per_s": f"{rate:.3f}"})
                    f.flush()
                if self.step % save_every == 0:
                    self.save()
                if time.monotonic() > deadline or self.step >= stop_step:
                    break
            bar.close()
        self.save()
