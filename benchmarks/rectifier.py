"""The quantization rectifier on Kodak: the same streams decoded with and without it.

    python benchmarks/rectifier.py [--limit N] [--write]

Every shipped level that has a rectified decoder (NAME.qr.safetensors) codes each Kodak image
once through the public API; the stream is decoded twice, with the rectifier (the default) and
without it (`rectifier=False`). Reported: mean PSNR and MS-SSIM of both decodings at equal bytes,
BD-rate of with against without (PSNR and MS-SSIM in dB), decode time of both on one image
(fastest of 5) and the peak memory of one decode of the first Kodak image and the largest image
of ../shared/data/hires, in a fresh process each.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_md import commit, cpu, write_section  # noqa: E402
from timing import best_of, peak_rss_in_child, print_peak_rss  # noqa: E402

HIRES = ROOT.parent / "shared" / "data" / "hires"


def ms_ssim_db(value: float) -> float:
    return -10 * math.log10(1 - value)


def levels() -> dict[int, torch.nn.Module]:
    from engine import zoo

    models = {q: zoo.load("msh", q) for q in zoo.shipped_qualities("msh")}
    return {q: m for q, m in models.items() if m.rectifier is not None}


def rd(limit: int | None) -> dict:
    from engine import Codec
    from engine.bjontegaard import bd_rate
    from engine.images import list_images, to_batch
    from engine.metrics import ms_ssim, psnr

    xs = [to_batch(p)[0] for p in list_images(KODAK)[:limit]]
    rows = {}
    times = {}
    for q, model in levels().items():
        codec = Codec(weights=model, device="cpu")
        per_image = []
        for x in xs:
            data = codec.compress(x)
            with_qr, without = codec.decompress(data), codec.decompress(data, rectifier=False)
            per_image.append((8 * len(data) / (x.shape[1] * x.shape[2]),
                              psnr(with_qr, x), psnr(without, x),
                              ms_ssim_db(ms_ssim(with_qr, x)), ms_ssim_db(ms_ssim(without, x))))
        rows[q] = [float(np.mean(v)) for v in zip(*per_image, strict=True)]
        if not times:
            data = codec.compress(xs[0])
            times = {"with": best_of(lambda c=codec, d=data: c.decompress(d), 5),
                     "without": best_of(lambda c=codec, d=data: c.decompress(d, rectifier=False),
                                        5),
                     "level": q}
    bpp, p1, p0, m1, m0 = (list(v) for v in zip(*rows.values(), strict=True))
    bd = {"psnr": bd_rate(bpp, p0, bpp, p1), "ms_ssim": bd_rate(bpp, m0, bpp, m1)} \
        if len(rows) > 1 else {}
    return {"rows": rows, "bd_rate": bd, "times": times, "images": len(xs)}


def probe_images() -> dict[str, Path]:
    from PIL import Image

    from engine.images import list_images

    hires = max(list_images(HIRES), key=lambda p: Image.open(p).size[0] * Image.open(p).size[1])
    return {"kodim01": list_images(KODAK)[0], hires.stem: hires}


def memory_probe(name: str, rectifier: bool) -> None:
    """In a child process: the peak RSS (MiB) during one decode of the image `name` (level 3,
    or the level nearest it with a rectifier), and its growth over the RSS before the call."""
    from engine import Codec

    q = min(levels(), key=lambda k: abs(k - 3))
    codec = Codec(weights=levels()[q], device="cpu")
    data = codec.compress(probe_images()[name])
    codec.decompress(data, rectifier=rectifier)  # warm-up: tables, caches
    print_peak_rss(lambda: codec.decompress(data, rectifier=rectifier))


def memory() -> dict:
    out = {}
    for name in probe_images():
        for rectifier in (True, False):
            out[f"{name}, {'with' if rectifier else 'without'}"] = peak_rss_in_child(
                __file__, name, int(rectifier))
    return out


def report(r: dict, mem: dict, command: str) -> str:
    lines = [f"Date {date.today()}, commit {commit()}, {cpu()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads. Command: `{command}`. Images: {r['images']} "
             "from Kodak, each level's streams decoded with and without its rectifier (equal "
             "bytes).", "",
             "| level | bpp | PSNR with | PSNR without | gain | MS-SSIM dB with | without | "
             "gain |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for q, (bpp, p1, p0, m1, m0) in r["rows"].items():
        lines.append(f"| {q} | {bpp:.4f} | {p1:.3f} | {p0:.3f} | {p1 - p0:+.3f} dB | {m1:.3f} | "
                     f"{m0:.3f} | {m1 - m0:+.3f} dB |")
    if r["bd_rate"]:
        lines += ["", f"BD-rate of with against without: {r['bd_rate']['psnr']:+.2f} % (PSNR), "
                      f"{r['bd_rate']['ms_ssim']:+.2f} % (MS-SSIM dB)."]
    t = r["times"]
    lines += ["", f"Decode time of kodim01 at level {t['level']} (fastest of 5): with "
                  f"{1000 * t['with']:.1f} ms, without {1000 * t['without']:.1f} ms "
                  f"(ratio {t['with'] / t['without']:.2f}).", "",
              "| decode | peak RSS (MiB) | growth during the call (MiB) |", "| --- | --- | --- |"]
    for name, m in mem.items():
        lines.append(f"| {name} | {m['peak_mib']:.0f} | {m['growth_mib']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--probe"]:
        memory_probe(sys.argv[2], bool(int(sys.argv[3])))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=None, help="first N Kodak images")
    p.add_argument("--write", action="store_true", help="write the section of RESULTS.md")
    a = p.parse_args()
    if not levels():
        sys.exit("no shipped level has a rectified decoder (python -m engine.train rectify)")
    text = report(rd(a.limit), memory(), "python benchmarks/rectifier.py " + " ".join(sys.argv[1:]))
    print(text)
    if a.write:
        write_section("rectifier", "Quantization rectifier", text)


if __name__ == "__main__":
    main()
