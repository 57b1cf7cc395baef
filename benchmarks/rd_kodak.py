"""Kodak rate-distortion of the real codec against the anchors, with a Bjontegaard table.

    python benchmarks/rd_kodak.py [--quality 1 2 ...] [--weights W.safetensors ...] [--write]

Runs compress/decompress (actual stream sizes, not estimated entropy) on all 24 Kodak images for
every shipped quality (or the given weights files), computes mean bpp, PSNR and MS-SSIM, writes
benchmarks/results/kodak_rd.json, plots PSNR-vs-bpp and MS-SSIM-vs-bpp against
../shared/anchors/kodak_rd.json to benchmarks/results/kodak_rd.png, and prints BD-rate and
BD-PSNR of ours against each anchor over the overlapping range (PCHIP interpolation).
`--write` also puts the table into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_md import commit, machine, write_section  # noqa: E402

from engine import Codec, zoo  # noqa: E402
from engine.bjontegaard import bd_psnr, bd_rate  # noqa: E402
from engine.evaluate import evaluate_image  # noqa: E402
from engine.images import list_images, to_batch  # noqa: E402
from engine.precision import PRECISIONS, describe  # noqa: E402

SHARED = ROOT.parent / "shared"
RESULTS = ROOT / "benchmarks" / "results"


def run(codecs: dict[str, Codec], folder: Path) -> dict:
    images = [(p.name, to_batch(p)[0]) for p in list_images(folder)]
    points = {}
    for name, codec in codecs.items():
        codec.compress(torch.rand(3, 64, 64))  # warm-up
        rows = [{"name": n, **evaluate_image(codec, x)} for n, x in images]
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k != "name"}
        points[name] = {"mean": mean, "images": rows}
        print(f"{name}: bpp {mean['bpp']:.4f}  PSNR {mean['psnr']:.3f}  "
              f"MS-SSIM {mean['ms_ssim']:.5f}  enc {mean['encode_s']:.3f}s  "
              f"dec {mean['decode_s']:.3f}s", flush=True)
    return points


def curve(points: dict) -> dict[str, list[float]]:
    means = sorted((p["mean"] for p in points.values()), key=lambda m: m["bpp"])
    return {k: [m[k] for m in means] for k in ("bpp", "psnr", "ms_ssim")}


def bd_table(ours: dict, anchors: dict) -> list[tuple[str, float | None, float | None]]:
    rows = []
    for group in ("measured_here", "published"):
        for name, a in anchors[group].items():
            label = f"{name} ({'measured' if group == 'measured_here' else 'published'})"
            try:
                rows.append((label, bd_rate(a["bpp"], a["psnr"], ours["bpp"], ours["psnr"]),
                             bd_psnr(a["bpp"], a["psnr"], ours["bpp"], ours["psnr"])))
            except ValueError:  # no overlap
                rows.append((label, None, None))
    return rows


def plot(ours: dict, anchors: dict, label: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for group, style in (("measured_here", "--"), ("published", ":")):
        for name, a in anchors[group].items():
            tag = f"{name} ({'measured' if group == 'measured_here' else 'published'})"
            axes[0].plot(a["bpp"], a["psnr"], style, marker=".", label=tag, alpha=0.8)
            if "ms_ssim" in a:
                axes[1].plot(a["bpp"], a["ms_ssim"], style, marker=".", label=tag, alpha=0.8)
    for ax, key in ((axes[0], "psnr"), (axes[1], "ms_ssim")):
        ax.plot(ours["bpp"], ours[key], "-o", color="black", linewidth=2.5, label=label)
        ax.set_xlabel("bits per pixel")
        ax.set_xlim(0, 2.0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("PSNR (dB, RGB)")
    axes[0].set_ylim(24, 40)
    axes[1].set_ylabel("MS-SSIM")
    axes[1].set_ylim(0.9, 1.0)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Kodak (24 images)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(points: dict, ours: dict, table: list, label: str, command: str, stem: str,
           transforms: str, device: str) -> str:
    lines = [f"Date {date.today()}, commit {commit()}, {machine(device)}, "
             f"command: `{command}`. Model: {label}; {transforms}.", "",
             "| point | bpp | PSNR (dB) | MS-SSIM | encode (s) | decode (s) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, p in points.items():
        m = p["mean"]
        lines.append(f"| {name} | {m['bpp']:.4f} | {m['psnr']:.3f} | {m['ms_ssim']:.5f} | "
                     f"{m['encode_s']:.3f} | {m['decode_s']:.3f} |")
    lines += ["", "Bjontegaard deltas of ours against each anchor over the overlapping range "
              "(negative BD-rate: ours needs fewer bits at equal PSNR):", "",
              "| anchor | BD-rate | BD-PSNR |", "| --- | --- | --- |"]
    for name, r, p in table:
        lines.append(f"| {name} | no overlap | |" if r is None
                     else f"| {name} | {r:+.2f} % | {p:+.3f} dB |")
    lines += ["", f"![Kodak rate-distortion](results/{stem}.png)"]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quality", type=float, nargs="*", default=None,
                   help="levels of the model (with one variable-rate --weights file: any in "
                   "its range)")
    p.add_argument("--model", default=None, help="a shipped model (default: the default)")
    p.add_argument("--weights", type=Path, nargs="*", default=None)
    p.add_argument("--images", type=Path, default=SHARED / "data" / "kodak")
    p.add_argument("--device", default="auto")
    p.add_argument("--label", default="nicengine (shipped CPU-trained models)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="as in Codec")
    p.add_argument("--name", default="kodak_rd",
                   help="file stem of the JSON and plot under benchmarks/results")
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    if a.weights and a.quality:  # one variable-rate model at several qualities
        [w] = a.weights
        codecs = {f"{w.stem}@q{q:g}": Codec(q, a.device, weights=w, precision=a.precision)
                  for q in a.quality}
    elif a.weights:
        codecs = {w.stem: Codec(weights=w, device=a.device, precision=a.precision)
                  for w in a.weights}
    else:
        model = a.model or zoo.DEFAULT_MODEL
        codecs = {f"q{q:g}": Codec(q, a.device, precision=a.precision, model=model)
                  for q in (a.quality or zoo.shipped_qualities(model))}
    points = run(codecs, a.images)
    ours = curve(points)
    anchors = json.loads((SHARED / "anchors" / "kodak_rd.json").read_text())
    table = bd_table(ours, anchors)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{a.name}.json").write_text(json.dumps(
        {"label": a.label, "curve": ours, "points": points,
         "bd": [{"anchor": n, "bd_rate": r, "bd_psnr": q} for n, r, q in table]}, indent=1))
    plot(ours, anchors, a.label, RESULTS / f"{a.name}.png")
    command = "python benchmarks/rd_kodak.py " + shlex.join(sys.argv[1:])
    device = next(iter(codecs.values())).device_for() if a.device == "auto" else a.device
    transforms = describe(a.precision, torch.device(device))
    text = report(points, ours, table, a.label, command.strip(), a.name, transforms, device)
    print(text)
    if a.write:
        write_section("rd_kodak", "Kodak rate-distortion", text)


if __name__ == "__main__":
    main()
