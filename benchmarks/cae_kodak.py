"""The compressive autoencoder's claims (Theis et al., ICLR 2017) on Kodak, in one run.

    python benchmarks/cae_kodak.py [--weights engine/weights/cae.safetensors]
        [--quality 1 2 3 4 5] [--write]

- Rate-distortion of the real codec (stream sizes, 8-bit PSNR and MS-SSIM) at each quality,
  against JPEG 2000 and JPEG measured here with the anchors' settings (Pillow: JPEG 2000
  irreversible 9/7 with colour transform in rate mode at the anchors' compression ratios; JPEG
  4:2:0 at the anchors' qualities; `../shared/anchors/kodak_rd.json`, whose PSNRs this run
  reproduces) and against the default model's curve (`benchmarks/results/kodak_rd.json`,
  written by rd_kodak.py): BD-rate in PSNR and in MS-SSIM (as -10 log10(1 - MS-SSIM) dB).
- Encode and decode time of the CAE and the default model at Kodak size (768x512, kodim01)
  and at 1920x1080 (a crop of ../shared/data/hires), same run, best of 3.

Writes benchmarks/results/cae_kodak.json (and .png), and with --write the section "Compressive
autoencoder (Theis et al. 2017) on Kodak" of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import shlex
import sys
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_md import commit, machine, write_section  # noqa: E402
from timing import best_of  # noqa: E402

from engine import Codec, zoo  # noqa: E402
from engine.bjontegaard import bd_rate  # noqa: E402
from engine.evaluate import evaluate_image  # noqa: E402
from engine.images import list_images, to_batch  # noqa: E402
from engine.metrics import ms_ssim, psnr  # noqa: E402

SHARED = ROOT.parent / "shared"
RESULTS = ROOT / "benchmarks" / "results"
KODAK = SHARED / "data" / "kodak"


def kodak() -> list[tuple[str, torch.Tensor]]:
    return [(p.name, to_batch(p)[0]) for p in list_images(KODAK)]


def codec_points(codec_at: dict[str, Codec], images: list) -> dict[str, dict]:
    """Mean bpp, PSNR, MS-SSIM, encode and decode seconds of each codec over the images."""
    points = {}
    for name, codec in codec_at.items():
        codec.compress(torch.rand(3, 64, 64))  # warm-up: load, build the tables
        rows = [evaluate_image(codec, x) for _, x in images]
        points[name] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        print(name, {k: round(v, 4) for k, v in points[name].items()}, flush=True)
    return points


def pillow_points(codec: str, settings: list, images: list) -> dict[str, list[float]]:
    """The anchors' Pillow settings: JPEG 2000 (irreversible 9/7, colour transform, rate mode,
    one layer at compression ratio s) or JPEG (4:2:0, quality s)."""
    curve: dict[str, list[float]] = {"bpp": [], "psnr": [], "ms_ssim": [], "settings": settings}
    for s in settings:
        rows = []
        for _, x in images:
            im = Image.fromarray(x.mul(255).round().byte().permute(1, 2, 0).numpy())
            buf = io.BytesIO()
            if codec == "jpeg2000":
                im.save(buf, "JPEG2000", irreversible=True, mct=1, quality_mode="rates",
                        quality_layers=[s])
            else:
                im.save(buf, "JPEG", quality=s, subsampling="4:2:0")
            back = to_batch(Image.open(io.BytesIO(buf.getvalue())))[0]
            rows.append((8 * buf.tell() / (x.shape[1] * x.shape[2]), psnr(back, x),
                         ms_ssim(back, x)))
        for key, v in zip(("bpp", "psnr", "ms_ssim"), np.mean(rows, 0), strict=True):
            curve[key].append(float(v))
    return curve


def ms_ssim_db(values: list[float]) -> list[float]:
    return [-10 * math.log10(1 - v) for v in values]


def bd_rates(test: dict, ref: dict) -> tuple[float | None, float | None]:
    """BD-rate (%) of test against ref in PSNR and in MS-SSIM dB (None: no overlap)."""
    out = []
    for key, f in (("psnr", list), ("ms_ssim", ms_ssim_db)):
        if ref.get(key) is None:
            out.append(None)
            continue
        try:
            out.append(bd_rate(ref["bpp"], f(ref[key]), test["bpp"], f(test[key])))
        except ValueError:
            out.append(None)
    return out[0], out[1]


def timing(weights: Path, quality: float, default_quality: float) -> list[dict]:
    """Best-of-3 encode and decode seconds, CAE against the default model, at two sizes."""
    hires = to_batch(list_images(SHARED / "data" / "hires")[0])[0, :, :1080, :1920]
    sizes = {"768x512": to_batch(list_images(KODAK)[0])[0], "1920x1080": hires}
    codecs = {"cae": Codec(quality, weights=weights),
              zoo.DEFAULT_MODEL: Codec(default_quality)}
    rows = []
    for size, x in sizes.items():
        for name, codec in codecs.items():
            data = codec.compress(x)
            rows.append({"size": size, "model": name, "bytes": len(data),
                         "encode_s": best_of(lambda c=codec, x=x: c.compress(x), 3),
                         "decode_s": best_of(lambda c=codec, d=data: c.decompress(d), 3)})
            print(rows[-1], flush=True)
    return rows


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for name, c in curves.items():
        axes[0].plot(c["bpp"], c["psnr"], "-o", label=name)
        if c.get("ms_ssim") is not None:
            axes[1].plot(c["bpp"], ms_ssim_db(c["ms_ssim"]), "-o", label=name)
    for ax, label in zip(axes, ("PSNR (dB, RGB)", "MS-SSIM (dB)"), strict=True):
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(label)
        ax.set_xlim(0, 1.6)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Kodak (24 images): compressive autoencoder against JPEG 2000, JPEG, msh")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def interpolate_psnr(ref: dict, bpp: float) -> float | None:
    """ref's PSNR at this rate (linear in log-rate), None outside its range."""
    order = np.argsort(ref["bpp"])
    x, y = np.log(np.asarray(ref["bpp"])[order]), np.asarray(ref["psnr"])[order]
    if not x[0] <= math.log(bpp) <= x[-1]:
        return None
    return float(np.interp(math.log(bpp), x, y))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=zoo.WEIGHTS_DIR / "cae.safetensors")
    p.add_argument("--quality", type=float, nargs="+", default=None,
                   help="default: every trained rate of the weights")
    p.add_argument("--timing-quality", type=float, default=None,
                   help="the CAE's quality in the timing (default: its base rate)")
    p.add_argument("--points", type=Path, default=None,
                   help="the CAE's points from an earlier run's JSON ({quality: means}) "
                   "instead of coding Kodak again")
    p.add_argument("--no-pillow", action="store_true",
                   help="JPEG 2000 and JPEG from the anchors (PSNR; MS-SSIM of JPEG 2000 from "
                   "the published curve) instead of measuring them (MS-SSIM takes seconds an "
                   "image on one thread)")
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    model = zoo.load_weights(a.weights)
    qualities = a.quality or [float(q) for q in range(1, model.rates + 1)]
    images = kodak()
    cae = (json.loads(a.points.read_text()) if a.points else
           codec_points({f"q{q:g}": Codec(q, weights=model) for q in qualities}, images))
    cae_curve = {k: [cae[f"q{q:g}"][k] for q in qualities] for k in ("bpp", "psnr", "ms_ssim")}
    all_anchors = json.loads((SHARED / "anchors" / "kodak_rd.json").read_text())
    anchors = all_anchors["measured_here"]
    curves = {"CAE": cae_curve}
    for codec in ("jpeg2000", "jpeg"):
        if a.no_pillow:
            curves[codec] = {**anchors[codec], "ms_ssim": None, "anchor_psnr_gap_db": None}
            continue
        curves[codec] = pillow_points(codec, anchors[codec]["settings"], images)
        gap = np.abs(np.subtract(curves[codec]["psnr"], anchors[codec]["psnr"])).max()
        print(f"{codec}: largest PSNR difference to the anchor {gap:.4f} dB", flush=True)
        curves[codec]["anchor_psnr_gap_db"] = float(gap)
    if a.no_pillow:
        curves["jpeg2000 (published, CompressAI)"] = all_anchors["published"]["jpeg2000"]
    default = json.loads((RESULTS / "kodak_rd.json").read_text())["curve"]
    curves[f"{zoo.DEFAULT_MODEL} (rd_kodak.py)"] = default
    base = float(model.config.base + 1)
    times = timing(a.weights, a.timing_quality or base, zoo.DEFAULT_QUALITY)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cae_kodak.json").write_text(json.dumps(
        {"cae_points": cae, "curves": curves, "timing": times}, indent=1))
    plot(curves, RESULTS / "cae_kodak.png")
    command = "python benchmarks/cae_kodak.py " + shlex.join(sys.argv[1:])
    text = report(model, a.weights, cae, qualities, curves, times, command.strip())
    print(text)
    if a.write:
        write_section("cae_kodak", "Compressive autoencoder (Theis et al. 2017) on Kodak", text)


def report(model, weights: Path, cae: dict, qualities: list, curves: dict, times: list,
           command: str) -> str:
    meta = model.info.meta
    lines = [f"Date {date.today()}, commit {commit()}, {machine('cpu')}, command: `{command}`. "
             f"Weights `{weights.name}` ({meta.get('total_steps', '?')} training steps in all; "
             f"docs/TRAINING.md), {model.mask.count} of {model.config.channels} code channels "
             "enabled. Real streams, 8-bit RGB PSNR and MS-SSIM, means over the 24 images.", "",
             "| quality | lambda | bpp | PSNR (dB) | MS-SSIM | JPEG 2000 PSNR at that bpp |",
             "| --- | --- | --- | --- | --- | --- |"]
    j2k = curves["jpeg2000"]
    for q in qualities:
        m = cae[f"q{q:g}"]
        ref = interpolate_psnr(j2k, m["bpp"])
        lines.append(f"| {q:g} | {model.training_lambda(q):.4g} | {m['bpp']:.4f} | "
                     f"{m['psnr']:.3f} | {m['ms_ssim']:.5f} | "
                     f"{'outside its range' if ref is None else f'{ref:.3f}'} |")
    if j2k["anchor_psnr_gap_db"] is None:
        lines += ["", "JPEG 2000 and JPEG: the anchors' measured curves (PSNR only); MS-SSIM of "
                  "JPEG 2000 from the published curve (CompressAI's encoder settings, not the "
                  "anchors'); no MS-SSIM of JPEG."]
    else:
        lines += ["", "JPEG 2000 and JPEG measured in this run with the anchors' settings "
                  f"(largest PSNR difference to the anchors: JPEG 2000 "
                  f"{j2k['anchor_psnr_gap_db']:.3f} dB, JPEG "
                  f"{curves['jpeg']['anchor_psnr_gap_db']:.3f} dB):", "",
                  "| codec | setting | bpp | PSNR (dB) | MS-SSIM |",
                  "| --- | --- | --- | --- | --- |"]
        for name in ("jpeg2000", "jpeg"):
            c = curves[name]
            for s, b, ps, ms in zip(c["settings"], c["bpp"], c["psnr"], c["ms_ssim"],
                                    strict=True):
                lines.append(f"| {name} | {s} | {b:.4f} | {ps:.3f} | {ms:.5f} |")
    lines += ["", "BD-rate of the CAE against each (positive: the CAE needs more bits for the "
              "same quality; over the overlapping range):", "",
              "| against | BD-rate, PSNR | BD-rate, MS-SSIM |", "| --- | --- | --- |"]
    for name, ref in curves.items():
        if name == "CAE":
            continue
        r_psnr, r_ms = bd_rates(curves["CAE"], ref)
        lines.append(f"| {name} | {_pct(r_psnr)} | {_pct(r_ms)} |")
    lines += ["", "Encode and decode time, best of 3, one thread (torch.set_num_threads(1)), "
              "CPU, whole codec (analysis, quantization, entropy coding, synthesis):", "",
              "| size | model | bytes | encode (s) | decode (s) | decode, CAE / msh |",
              "| --- | --- | --- | --- | --- | --- |"]
    for row in times:
        other = next(r for r in times if r["size"] == row["size"] and r is not row)
        ratio = (row["decode_s"] / other["decode_s"] if row["model"] == "cae"
                 else other["decode_s"] / row["decode_s"])
        lines.append(f"| {row['size']} | {row['model']} | {row['bytes']} | "
                     f"{row['encode_s']:.3f} | {row['decode_s']:.3f} | {ratio:.2f} |")
    lines += ["", "![CAE on Kodak](results/cae_kodak.png)"]
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "no overlap" if v is None else f"{v:+.1f} %"


if __name__ == "__main__":
    main()
