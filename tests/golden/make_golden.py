"""Writes a golden stream for every shipped model level that has none: `v2-NAME-qQ.nic`, made
from a generated 112x80 image, and `v2-NAME-qQ.png`, its decoding (tests/test_golden.py);
`v2-NAME-qQ-int.*` for levels with an integer hyper-decoder, whose streams use it.

    python tests/golden/make_golden.py

Existing files are never rewritten: they pin what earlier releases wrote and decoded (the
v1-* files were written and decoded by commit 397e647, format version 1).
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

import engine
from engine import format, zoo
from engine.images import to_uint8

HERE = Path(__file__).parent


def golden_image(h: int = 80, w: int = 112, seed: int = 7) -> torch.Tensor:
    """Waves, a disc, an edge and noise: every kind of content in a few KB."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.zeros(3, h, w)
    for _ in range(6):
        f = torch.rand(3, generator=g) * 20
        p = torch.rand(3, 1, 1, generator=g) * 6
        img += 0.08 * torch.sin(f[0] * xx + f[1] * yy + p)
    disc = ((xx - 0.4) ** 2 + (yy - 0.5) ** 2 < 0.08).float()
    img += 0.5 + 0.25 * disc - 0.1 * (xx > 0.7).float()
    img += 0.06 * torch.rand(3, h, w, generator=g)
    return img.clamp(0, 1)


def golden_name(name: str, q: float) -> str:
    """The golden stream a shipped level writes today."""
    integer = zoo.load(name, q).integer_hyper is not None
    return f"v{format.VERSION}-{name}-q{q:g}{'-int' if integer else ''}.nic"


def main() -> None:
    x = golden_image()
    for name, levels in zoo.shipped_models().items():
        for q in levels:
            stem = (HERE / golden_name(name, q)).with_suffix("")
            if stem.with_suffix(".nic").exists():
                continue
            data = engine.compress(x, quality=q, model=name, device="cpu")
            stem.with_suffix(".nic").write_bytes(data)
            Image.fromarray(to_uint8(engine.decompress(data, device="cpu"))).save(
                stem.with_suffix(".png"))
            print(f"wrote {stem.name}.nic ({len(data)} bytes) and its decoding")


if __name__ == "__main__":
    main()
