"""Training speed: seconds per step of `engine.train` in float32 and bfloat16, NCHW and NHWC.

    python benchmarks/train_speed.py [--N 64 --M 128 --batch 8 --crop 128] [--repeat 10] [--write]
    python benchmarks/train_speed.py --candidates [--batch 4 --crop 256] [--write]

Times `Trainer.train_step` (forward, rate-distortion loss, backward, clipping, both optimizers)
on a fixed random batch, so image loading is not included: float32 in NCHW, float32 in
channels-last (the trainer's default layout everywhere) and, where the trainer's `amp` is in
effect (CUDA and CPUs with AMX), bfloat16 autocast in channels-last. `--candidates` times the
channel-conditional model's candidate sizes instead (issue 25 picks them by Kodak gain per CPU
hour), beside the shipped hyperprior's, in the trainer's default precision and layout. `--write`
puts the table into benchmarks/RESULTS.md (a section of its own for a GPU, and for candidates).
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

# The channel-conditional candidates: (kind, N, M, slices, hidden, checkerboard). The first is the
# shipped hyperprior; N=64, M=128 is the size whose shipped weights start a run.
CANDIDATES = (
    ("mean_scale_hyperprior", 64, 128, 0, 0, False),
    ("channel_conditional", 64, 128, 2, 96, False),
    ("channel_conditional", 64, 128, 4, 96, False),
    ("channel_conditional", 64, 128, 4, 96, True),
    ("channel_conditional", 64, 128, 8, 64, False),
    ("channel_conditional", 96, 160, 4, 128, True),
    ("channel_conditional", 128, 192, 4, 128, True),
    ("channel_conditional", 192, 320, 10, 224, False),
)


def seconds_per_step(amp: bool, channels_last: bool, args: argparse.Namespace, device: str,
                     **model: object) -> tuple[bool, float, int]:
    """(whether autocast was in effect, best seconds per step over `repeat` steps, the model's
    parameter count); `model`: TrainConfig's architecture fields (default: --N, --M)."""
    model = {"N": args.N, "M": args.M, **model}
    config = TrainConfig(batch=args.batch, crop=args.crop, amp=amp, channels_last=channels_last,
                         steps=10**6, warmup=1, **model)
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(run, config, device)
        x = torch.rand(args.batch, 3, args.crop, args.crop, device=device)
        sync = torch.cuda.synchronize if device.startswith("cuda") else None
        seconds = best_of(lambda: trainer.train_step(x), args.repeat, sync)
        return trainer.amp, seconds, sum(p.numel() for p in trainer.model.parameters())


def candidates(args: argparse.Namespace) -> str:
    """The table of the channel-conditional candidates' training speed."""
    rows = []
    for kind, n, m, slices, hidden, checkerboard in CANDIDATES:
        spec = {"kind": kind, "N": n, "M": m}
        if slices:
            spec.update(slices=slices, hidden=hidden, checkerboard=checkerboard)
        amp, seconds, params = seconds_per_step(True, True, args, args.device, **spec)
        rows.append((kind, n, m, slices, hidden, checkerboard, params, seconds))
        print(rows[-1], flush=True)
    base = rows[0][-1]
    lines = [f"Date {date.today()}, commit {commit()}, {machine(args.device)}, command: "
             f"`python {' '.join(sys.argv)}`. Batch {args.batch} of {args.crop}x{args.crop}; "
             f"best of {args.repeat} steps, image loading excluded; the trainer's default "
             f"precision ({'bfloat16 autocast' if amp else 'float32'}) and layout "
             "(channels-last).", "",
             "| kind | N | M | slices | hidden | checkerboard | parameters | s/step | steps/s | "
             "time against the first |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- "
             "| --- |"]
    for kind, n, m, slices, hidden, checkerboard, params, seconds in rows:
        lines.append(f"| {kind} | {n} | {m} | {slices or ''} | {hidden or ''} | "
                     f"{('yes' if checkerboard else 'no') if slices else ''} | "
                     f"{params / 1e6:.2f} M | {seconds:.3f} | {1 / seconds:.2f} | "
                     f"{seconds / base:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--N", type=int, default=64)
    p.add_argument("--M", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--candidates", action="store_true",
                   help="time the channel-conditional candidates instead")
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    text = candidates(args) if args.candidates else precisions(args)
    print(text)
    if args.write:  # the GPU's figures go beside the CPU's, not over them
        name, title = (("train_speed_cc", "Training speed of the channel-conditional candidates")
                       if args.candidates else ("train_speed", "Training speed"))
        if torch.device(args.device).type == "cuda":
            name, title = name + "_gpu", title + " (GPU)"
        write_section(name, title, text)


def precisions(args: argparse.Namespace) -> str:
    """The table of one model's training speed by precision and layout."""
    fp32 = seconds_per_step(False, False, args, args.device)[1]
    rows = [("float32", fp32),
            ("float32, channels-last", seconds_per_step(False, True, args, args.device)[1])]
    used, amp, _ = seconds_per_step(True, True, args, args.device)
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
    return "\n".join(lines)


if __name__ == "__main__":
    main()
