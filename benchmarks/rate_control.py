"""Rate control (`compress(x, target_bpp=...)` / `max_bytes=`) on Kodak: how many codings a call
takes, its time against one plain compress, and how close it lands to the budget.

    python benchmarks/rate_control.py --weights W.safetensors [--bpp 0.25 0.5 1.0] [--write]

W is a variable-rate model. For every image and target: the stream's bpp (at most the target),
the quality bisection picked, the number of `encode_latents` calls (the analysis runs once), and
the call's time over one compress of the same image at the quality it picked.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_md import commit, machine, write_section  # noqa: E402

from engine import Codec, format  # noqa: E402
from engine.images import list_images, to_batch  # noqa: E402

SHARED = ROOT.parent / "shared"


def measure(weights: Path, images: list[torch.Tensor], targets: list[float]) -> list[dict]:
    codec = Codec(weights=weights, device="cpu", precision="float32")
    model = codec.model()
    calls = 0
    encode = model.encode_latents

    def counted(*args, **kwargs):
        nonlocal calls
        calls += 1
        return encode(*args, **kwargs)

    model.encode_latents = counted
    codec.compress(torch.rand(3, 64, 64))  # warm-up: tables, float64 copies
    rows = []
    for target in targets:
        for x in images:
            calls = 0
            t0 = time.perf_counter()
            data = codec.compress(x, target_bpp=target)
            fit_s = time.perf_counter() - t0
            quality = format.unpack(data)[0].quality
            plain = Codec(quality, device="cpu", weights=model, precision="float32")
            t0 = time.perf_counter()
            plain.compress(x)
            plain_s = time.perf_counter() - t0
            rows.append({"target": target, "bpp": 8 * len(data) / (x.shape[1] * x.shape[2]),
                         "quality": quality, "codings": calls, "ratio": fit_s / plain_s})
    return rows


def report(rows: list[dict], weights: Path, images: int, command: str) -> str:
    lines = [f"Date {date.today()}, commit {commit()}, {machine('cpu')}, float32, command: "
             f"`{command}`. Weights: `{weights.name}`; {images} Kodak images per target.", "",
             "| target bpp | mean bpp reached | min / max bpp | qualities picked | codings per "
             "call (mean, max) | time over one compress (median) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for target in sorted({r["target"] for r in rows}):
        rs = [r for r in rows if r["target"] == target]
        bpp = [r["bpp"] for r in rs]
        q = [r["quality"] for r in rs]
        codings = [r["codings"] for r in rs]
        lines.append(f"| {target:g} | {statistics.mean(bpp):.4f} | {min(bpp):.4f} / "
                     f"{max(bpp):.4f} | {min(q):g} .. {max(q):g} | "
                     f"{statistics.mean(codings):.1f}, {max(codings)} | "
                     f"{statistics.median(r['ratio'] for r in rs):.2f}x |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--bpp", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    p.add_argument("--images", type=Path, default=SHARED / "data" / "kodak")
    p.add_argument("--limit", type=int, default=None, help="first N images only")
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    images = [to_batch(path)[0] for path in list_images(a.images)[: a.limit]]
    rows = measure(a.weights, images, a.bpp)
    command = "python benchmarks/rate_control.py " + shlex.join(sys.argv[1:])
    text = report(rows, a.weights, len(images), command)
    print(text)
    if a.write:
        write_section("rate_control", "Rate control", text)


if __name__ == "__main__":
    main()
