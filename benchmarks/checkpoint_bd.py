"""A training checkpoint against the shipped model: Kodak BD-rate through the public API, quick
enough to follow a run (the first N images).

    python benchmarks/checkpoint_bd.py WEIGHTS... [--limit 6] [--quality 1 2 3 4 5 6]
        [--images DIR]

Each WEIGHTS (an exported weights file, `python -m engine.train export`) is coded at every
--quality (a variable-rate model at each; a fixed-rate one at its own level) and compared with
the shipped default model's levels: mean bpp and PSNR per point and the BD-rate against the
shipped curve (negative: fewer bits). A single point (one --quality, or a run that trained one
level) gets the rate difference at its PSNR instead, log-rate interpolated on the shipped curve.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import Codec, zoo  # noqa: E402
from engine.bjontegaard import bd_rate  # noqa: E402
from engine.images import list_images, to_batch  # noqa: E402
from engine.metrics import psnr  # noqa: E402

KODAK = ROOT.parent / "shared" / "data" / "kodak"


def point(codec: Codec, images: list[torch.Tensor]) -> tuple[float, float]:
    rows = []
    for x in images:
        data = codec.compress(x)
        rows.append((8 * len(data) / (x.shape[1] * x.shape[2]), psnr(codec.decompress(data), x)))
    bpp, quality = (float(np.mean(v)) for v in zip(*rows, strict=True))
    return bpp, quality


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", type=Path, nargs="+")
    p.add_argument("--limit", type=int, default=6, help="the first N images")
    p.add_argument("--images", type=Path, default=KODAK, help="another folder than Kodak's")
    p.add_argument("--quality", type=float, nargs="+", default=[1, 2, 3, 4, 5, 6])
    a = p.parse_args()
    images = [to_batch(path)[0] for path in list_images(a.images)[: a.limit]]
    shipped = [point(Codec(q, "cpu"), images) for q in zoo.shipped_qualities()]
    print(f"shipped {zoo.DEFAULT_MODEL}: " + "  ".join(f"{b:.4f}/{q:.2f}" for b, q in shipped))
    for w in a.weights:
        ours = [point(Codec(q, "cpu", weights=w), images) for q in a.quality]
        if len(ours) == 1:
            (bpp, db), (rates, dbs) = ours[0], zip(*shipped, strict=True)
            same = float(np.exp(np.interp(db, dbs, np.log(rates))))
            summary = f"rate against shipped at equal PSNR: {100 * (bpp / same - 1):+.2f} %"
        else:
            summary = (f"BD-rate against shipped: "
                       f"{bd_rate(*zip(*shipped, strict=True), *zip(*ours, strict=True)):+.2f} %")
        print(f"{w.name}: " + "  ".join(f"{b:.4f}/{q:.2f}" for b, q in ours) + "  " + summary,
              flush=True)


if __name__ == "__main__":
    main()
