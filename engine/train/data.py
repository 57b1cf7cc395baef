"""Training crops from any folder of images.

Each sample is a pure function of (seed, sample number): pick an image, downscale it by a random
factor in [0.5, 1] (hides the JPEG artefacts of the sources), take a random crop, flip. So the
data order of a run is fully described by its step counter, which makes resuming exact, whatever
the number of loader workers.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


@lru_cache(maxsize=4096)
def _load(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


class RandomCrops(Dataset):
    """Sample i of the run: a (3, crop, crop) float tensor in [0, 1]."""

    def __init__(self, paths: list[Path], crop: int, seed: int, length: int,
                 min_scale: float = 0.5) -> None:
        self.paths = paths
        self.crop = crop
        self.seed = seed
        self.length = length
        self.min_scale = min_scale

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, i])
        image = _load(self.paths[rng.integers(len(self.paths))])
        w, h = image.size
        # Downscale by s, then crop: equivalently crop a (crop / s)-sized region and resize it.
        s = max(rng.uniform(self.min_scale, 1.0), self.crop / min(w, h))
        side = min(int(round(self.crop / s)), w, h)
        x0, y0 = rng.integers(w - side + 1), rng.integers(h - side + 1)
        region = image.crop((x0, y0, x0 + side, y0 + side))
        if side != self.crop:
            region = region.resize((self.crop, self.crop), Image.BICUBIC, reducing_gap=2.0)
        a = np.asarray(region, dtype=np.uint8)
        if rng.random() < 0.5:
            a = a[:, ::-1]
        if rng.random() < 0.5:
            a = a[::-1]
        return torch.from_numpy(a.copy()).permute(2, 0, 1).float().div_(255)
