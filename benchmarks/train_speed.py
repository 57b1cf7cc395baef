"""Training speed: seconds per step of `engine.train` in float32 and bfloat16, NCHW and NHWC.

    python benchmarks/train_speed.py [--N 64 --M 128 --batch 8 --crop 128] [--repeat 10] [--write]

Times `Trainer.train_step` (forward, rate-distortion loss, backward, clipping, both optimizers)
on a fixed random batch, so image loading is not included: float32 in NCHW, float32 in
channels-last (the trainer's default layout everywhere) and, where the trainer's `amp` is in
effect (CUDA and CPUs with AMX), bfloat16 autocast in channels-last. `--write` puts the table into
benchmarks/RESULTS.md (a section of its own for a GPU).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_md import commit, machine, write_section  # noqa: E402
from timing import best_of  # noqa: E402

from engine.train import TrainConfig, Trainer  # noqa: E402


def seconds_per_step(amp: bool, channels_last: bool, args: argparse.Namespace, device: str
                     ) -> tuple[bool, float]:
    """(whether autocast was in effect, best seconds per step over `repeat` steps)."""
    config = TrainConfig(N=args.N, M=args.M, batch=args.batch, crop=args.crop, amp=amp,
                         channels_last=channels_last, steps=10**6, warmup=1)
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(run, config, device)
        x = torch.rand(args.batch, 3, args.crop, args.crop, device=device)
        sync = torch.cuda.synchronize if device.startswith("cuda") else None
        return trainer.amp, best_of(lambda: trainer.train_step(x), args.repeat, sync)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--N", type=int, default=64)
    p.add_argument("--M", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--write", action="store_true")
    args = p.parse_args()

    fp32 = seconds_per_step(False, False, args, args.device)[1]
    rows = [("float32", fp32),
            ("float32, channels-last", seconds_per_step(False, True, args, args.device)[1])]
    used, amp = seconds_per_step(True, True, args, args.device)
    if used:
        rows.append(("bfloat16 autocast, channels-last", amp))
    pixels = args.batch * args.crop**2
    lines = [f"Date {date.today()}, commit {commit()}, {machine(args.device)}, command: "
             f"`python {' '.join(sys.argv)}`. Model N={args.N}, M={args.M}; batch {args.batch} "
             f"of {args.crop}x{args.crop}; best of {args.repeat} steps, image loading excluded.",
             "", "| precision, layout | s/step | steps/s | Mpixel/s | speed-up |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {s:.4f} | {1 / s:.2f} | {pixels / s / 1e6:.2f} | {fp32 / s:.2f}x |"
              for name, s in rows]
    text = "\n".join(lines)
    print(text)
    if args.write:  # the GPU's figures go beside the CPU's, not over them
        gpu = torch.device(args.device).type == "cuda"
        write_section(*(("train_speed_gpu", "Training speed (GPU)") if gpu
                        else ("train_speed", "Training speed")), text)


if __name__ == "__main__":
    main()
