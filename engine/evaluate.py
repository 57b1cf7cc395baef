"""Rate-distortion evaluation of the real codec: actual stream sizes, 8-bit PSNR and MS-SSIM."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm

from .codec import DEFAULT_MODEL, Codec
from .images import list_images, to_batch
from .metrics import ms_ssim, psnr


def _sync() -> None:
    if torch.cuda.is_available():  # GPU work is asynchronous: time it to its end
        torch.cuda.synchronize()


def evaluate_image(codec: Codec, x: torch.Tensor) -> dict[str, float]:
    """x (3, H, W) in [0, 1] -> bytes, bpp, psnr, ms_ssim, encode_s, decode_s."""
    _sync()
    t0 = time.perf_counter()
    data = codec.compress(x)
    _sync()
    t1 = time.perf_counter()
    x_hat = codec.decompress(data)
    _sync()
    t2 = time.perf_counter()
    x, x_hat = x.cpu(), x_hat.cpu()
    return {"bytes": len(data), "bpp": 8 * len(data) / (x.shape[1] * x.shape[2]),
            "psnr": psnr(x_hat, x), "ms_ssim": ms_ssim(x_hat, x),
            "encode_s": t1 - t0, "decode_s": t2 - t1}


def evaluate_folder(folder: str | Path, qualities: list[float], device: str = "auto",
                    limit: int | None = None, progress: bool = True, precision: str = "auto",
                    model: str = DEFAULT_MODEL) -> dict:
    """{quality: {"images": [{name, bytes, bpp, ...}], "mean": {bpp, psnr, ...}}};
    `device`, `precision` and `model` as in `Codec`."""
    codecs = {q: Codec(q, device, precision=precision, model=model) for q in qualities}
    paths = list_images(folder)[:limit]
    images = [(p.name, to_batch(p)[0]) for p in paths]
    results = {}
    bar = tqdm(total=len(images) * len(qualities), disable=not progress, unit="img")
    for q, codec in codecs.items():
        codec.compress(torch.rand(3, 64, 64))  # warm-up: load the model, build the tables
        rows = []
        for name, x in images:
            x = x.to(codec.device_for(x))
            rows.append({"name": name, **evaluate_image(codec, x)})
            bar.set_postfix(q=q, bpp=f"{rows[-1]['bpp']:.3f}", psnr=f"{rows[-1]['psnr']:.2f}")
            bar.update(1)
        keys = [k for k in rows[0] if k != "name"]
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
        results[q] = {"images": rows, "mean": mean}
    bar.close()
    return results
