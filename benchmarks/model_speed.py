"""Encode and decode time and peak memory of weights files against a shipped level, side by side
in one run, on a Kodak image (768x512) and at 4000x3000.

    python benchmarks/model_speed.py WEIGHTS... [--quality 1] [--shipped 4] [--repeat 3] [--write]

Each WEIGHTS (an exported weights file) codes at --quality, the shipped default model at level
--shipped. The 4000x3000 image is the largest photo of ../shared/data/hires resized to that size
(bicubic), so its content is a photo's, not noise. Times: the fastest of --repeat calls after a
warm-up, through the public API on the CPU. Peak memory: the peak RSS during one call, and its
growth over the RSS just before it, each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
KODIM = ROOT.parent / "shared" / "data" / "kodak" / "kodim23.png"
HIRES = ROOT.parent / "shared" / "data" / "hires"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_md import commit, cpu, write_section  # noqa: E402
from timing import best_of, peak_rss_in_child, print_peak_rss  # noqa: E402

SIZES = {"768x512": None, "4000x3000": (4000, 3000)}


def image(size: str) -> torch.Tensor:
    """The Kodak image, or the largest hires photo resized to `size` (1, 3, H, W)."""
    from PIL import Image

    from engine.images import list_images, to_batch

    if SIZES[size] is None:
        return to_batch(KODIM)
    photo = max(list_images(HIRES), key=lambda p: Image.open(p).size[0] * Image.open(p).size[1])
    return to_batch(Image.open(photo).convert("RGB").resize(SIZES[size], Image.BICUBIC))


def codec(weights: str, quality: float):
    """The shipped default model ("shipped") or a weights file, on the CPU."""
    from engine import Codec

    return Codec(quality, "cpu", weights=None if weights == "shipped" else weights)


def memory_probe(weights: str, quality: float, size: str, op: str) -> None:
    """In a child process: print the peak RSS of one compress or decompress (after a warm-up)."""
    c, x = codec(weights, quality), image(size)
    data = c.compress(x)
    call = (lambda: c.compress(x)) if op == "compress" else (lambda: c.decompress(data))
    call()
    print_peak_rss(call)


def measure(models: dict[str, tuple[str, float]], repeat: int) -> dict:
    """{model: {size: {"bpp", "compress", "decompress", "compress_mem", "decompress_mem"}}}."""
    out: dict = {}
    for size in SIZES:
        x = image(size)
        for name, (weights, quality) in models.items():
            c = codec(weights, quality)
            data = c.compress(x)
            row = {"bpp": 8 * len(data) / (x.shape[2] * x.shape[3]),
                   "compress": best_of(lambda c=c, x=x: c.compress(x), repeat),
                   "decompress": best_of(lambda c=c, d=data: c.decompress(d), repeat)}
            for op in ("compress", "decompress"):
                row[f"{op}_mem"] = peak_rss_in_child(__file__, weights, quality, size, op)
            out.setdefault(name, {})[size] = row
            print(name, size, json.dumps(row), flush=True)
    return out


def report(r: dict, command: str) -> str:
    base = next(iter(r))
    lines = [f"Date {date.today()}, commit {commit()}, {cpu()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads. Command: `{command}`. Times: fastest of the "
             "repeats, through the public API; peak RSS of one call in a fresh process (growth "
             f"during the call in brackets). Ratios: the model's time over {base}'s.", "",
             "| model | image | bpp | encode (s) | decode (s) | encode ratio | decode ratio | "
             "peak RSS encode (MiB) | peak RSS decode (MiB) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, sizes in r.items():
        for size, row in sizes.items():
            ref = r[base][size]
            lines.append(
                f"| {name} | {size} | {row['bpp']:.4f} | {row['compress']:.3f} | "
                f"{row['decompress']:.3f} | {row['compress'] / ref['compress']:.2f}x | "
                f"{row['decompress'] / ref['decompress']:.2f}x | "
                f"{row['compress_mem']['peak_mib']:.0f} "
                f"(+{row['compress_mem']['growth_mib']:.0f}) | "
                f"{row['decompress_mem']['peak_mib']:.0f} "
                f"(+{row['decompress_mem']['growth_mib']:.0f}) |")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--probe"]:
        weights, quality, size, op = sys.argv[2:6]
        memory_probe(weights, float(quality), size, op)
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", nargs="+")
    p.add_argument("--quality", type=float, default=1, help="the weights files' quality")
    p.add_argument("--shipped", type=float, default=4, help="the shipped level to compare with")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--write", action="store_true", help="write the section of RESULTS.md")
    a = p.parse_args()
    models = {f"shipped, level {a.shipped:g}": ("shipped", a.shipped)}
    models.update({Path(w).stem: (w, a.quality) for w in a.weights})
    text = report(measure(models, a.repeat),
                  "python benchmarks/model_speed.py " + " ".join(sys.argv[1:]))
    print(text)
    if a.write:
        write_section("model_speed", "Model speed and memory against the shipped default", text)


if __name__ == "__main__":
    main()
