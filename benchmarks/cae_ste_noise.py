"""Straight-through rounding against additive uniform noise on the same compressive autoencoder
at equal steps (the comparison the review of Theis et al., ICLR 2017, asks for).

    python benchmarks/cae_ste_noise.py RUN_STE RUN_NOISE [--write]

The two runs (engine/train/cae.py, `--quantizer ste` and `--quantizer noise`, otherwise the
same config, seed and data) are exported and coded on Kodak with real rounding at the base rate:
mean bpp, PSNR, MS-SSIM and the rate-distortion loss bpp + lambda 255^2 MSE at the training
lambda (each image's 8-bit MSE, from its PSNR), and each run's training loss over its last 50
steps (log.csv).
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
import tempfile
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cae_kodak import kodak  # noqa: E402
from results_md import commit, machine, write_section  # noqa: E402

from engine import Codec, zoo  # noqa: E402
from engine.evaluate import evaluate_image  # noqa: E402
from engine.train.cae import CaeTrainer, export_cae  # noqa: E402


def last_training_loss(run: Path, steps: int = 50) -> float:
    rows = list(csv.DictReader((run / "log.csv").open()))
    last = int(rows[-1]["step"])
    tail = [float(r["loss"]) for r in rows if int(r["step"]) > last - steps]
    return sum(tail) / len(tail)


def evaluate(run: Path, images: list) -> dict:
    trainer = CaeTrainer(run)
    with tempfile.TemporaryDirectory() as tmp:
        export_cae(run, Path(tmp) / "w.safetensors")
        model = zoo.load_weights(Path(tmp) / "w.safetensors")
    quality = float(model.config.base + 1)
    lam = model.training_lambda(quality)
    codec = Codec(quality, weights=model)
    rows = [evaluate_image(codec, x) for _, x in images]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("bpp", "psnr", "ms_ssim")}
    mse = [10 ** (-r["psnr"] / 10) for r in rows]  # per image, pixels in [0, 1]
    losses = [r["bpp"] + lam * 255**2 * m for r, m in zip(rows, mse, strict=True)]
    mean["loss"] = sum(losses) / len(losses)
    mean["train_loss"] = last_training_loss(run)
    mean["steps"] = trainer.step
    mean["quantizer"] = trainer.config.quantizer
    print(run, mean, flush=True)
    return mean


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs=2)
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    images = kodak()
    results = [evaluate(run, images) for run in a.runs]
    command = "python benchmarks/cae_ste_noise.py " + shlex.join(sys.argv[1:])
    config = CaeTrainer(a.runs[0]).config
    lines = [f"Date {date.today()}, commit {commit()}, {machine('cpu')}, command: `{command}`. "
             f"Both runs: {config.steps} steps from the same random initialisation (seed "
             f"{config.seed}), batch {config.batch}, crops {config.crop}, lr {config.lr:g}, "
             f"lambda {config.lambdas[config.base]:g}, all {config.channels} channels (no "
             "incremental mask); Kodak coded with real rounding at the base rate.", "",
             "| quantizer in training | steps | training loss (last 50) | Kodak bpp | PSNR (dB) | "
             "MS-SSIM | Kodak loss |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r['quantizer']} | {r['steps']} | {r['train_loss']:.3f} | "
                     f"{r['bpp']:.4f} | {r['psnr']:.3f} | {r['ms_ssim']:.5f} | {r['loss']:.3f} |")
    text = "\n".join(lines)
    print(text)
    if a.write:
        write_section("cae_ste_noise", "CAE: straight-through rounding against additive noise",
                      text)


if __name__ == "__main__":
    main()
