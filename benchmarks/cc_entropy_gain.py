"""How much rate the channel-conditional entropy model saves on frozen transforms (issue 25's
next recipe, docs/TRAINING.md).

    python benchmarks/cc_entropy_gain.py [--level 4] [--steps 3000] [--limit 6]
        [--variants slices checkerboard] [--save DIR] [--write]

A channel-conditional model (`engine.models.channel`, 4 slices; the variant `checkerboard` adds
the checkerboard split inside each slice) starts from a shipped level's weights; g_a and g_s
stay frozen, latent residual prediction stays off (zero), and only the entropy model (h_a, h_s,
the factorized density of z, the slice networks) is trained, on the rate of y and z alone (the
distortion changes only through where the means put the rounding grid), on the latents of
training crops computed once. Every variant trains from the same start on the same batches.
Reported: held-out bits per pixel of the shipped hyperprior and of each trained variant, and all
of them through the public API on the first Kodak images (bpp, PSNR, encode and decode seconds
per image), same run. `--save DIR` writes each trained variant as DIR/VARIANT.safetensors
(float32; a start for training the transforms with it: `python -m engine.train --init`).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"
TRAIN = ROOT.parent / "shared" / "data" / "train"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_md import commit, cpu, write_section  # noqa: E402


def conditional_from(model, lam: float, checkerboard: bool):
    """A channel-conditional model holding `model`'s weights, level 1 coding at its lambda with
    unit gains (level 2, at twice the lambda, is never used)."""
    from engine.models import ChannelConditional, ChannelConfig

    cc = ChannelConditional(ChannelConfig(N=model.config.N, M=model.config.M, slices=4,
                                          hidden=96, lambdas=(lam, 2 * lam),
                                          checkerboard=checkerboard))
    cc.load_state_dict(model.state_dict(), strict=False)
    cc.start_gains(lam)
    return cc


def bits_per_pixel(cc, y: torch.Tensor, noise: bool) -> torch.Tensor:
    """Rate of y and z under `cc` at level 1 (gains 1), per pixel of the crops."""
    z_hat, z_lik = cc.entropy_z(cc.h_a(y), noise)
    _, y_lik = cc.slice_pass(y, cc.h_s(z_hat), noise)
    pixels = y.shape[0] * y.shape[2] * y.shape[3] * 256
    return -(torch.log2(y_lik).sum() + torch.log2(z_lik).sum()) / pixels


def train(cc, y: torch.Tensor, steps: int, batch: int = 8, lr: float = 1e-4) -> None:
    cc.train().requires_grad_(False)
    params = [p for name, p in cc.named_parameters()
              if name.startswith(("h_a.", "h_s.", "entropy_z.", "slice_params.", "slice_context."))]
    for p in params:
        p.requires_grad_(True)
    main = [p for p in params if p is not cc.entropy_z.quantiles]
    opt = torch.optim.Adam(main, lr=lr)
    aux = torch.optim.Adam([cc.entropy_z.quantiles], lr=1e-3)
    g = torch.Generator().manual_seed(0)
    torch.set_flush_denormal(True)  # the rate's gradients reach denormals: 4x slower without
    for step in range(steps):
        if step == int(0.8 * steps):
            opt.param_groups[0]["lr"] = lr / 10
        loss = bits_per_pixel(cc, y[torch.randint(0, len(y), (batch,), generator=g)], True)
        opt.zero_grad()
        aux.zero_grad()
        (loss + cc.aux_loss()).backward()
        opt.step()
        aux.step()
        if (step + 1) % 500 == 0:
            print(f"step {step + 1}: {loss.item():.4f} bpp (noisy)", flush=True)
    cc.eval().requires_grad_(False)
    cc.invalidate()


def api_rd(weights, quality: float, limit: int) -> tuple[float, float, float, float]:
    """Mean (bpp, PSNR, encode s, decode s) on the first Kodak images."""
    from engine import Codec
    from engine.images import list_images, to_batch
    from engine.metrics import psnr

    codec = Codec(quality, weights=weights, device="cpu")
    codec.decompress(codec.compress(torch.rand(3, 64, 64)))  # warm-up: tables, float64 copies
    rows = []
    for p in list_images(KODAK)[:limit]:
        x = to_batch(p)[0]
        t0 = time.perf_counter()
        data = codec.compress(x)
        t1 = time.perf_counter()
        x_hat = codec.decompress(data)
        t2 = time.perf_counter()
        rows.append((8 * len(data) / (x.shape[1] * x.shape[2]), psnr(x_hat, x), t1 - t0,
                     t2 - t1))
    return tuple(float(np.mean(v)) for v in zip(*rows, strict=True))


def main() -> None:
    from engine import zoo
    from engine.train.integerize import training_latents
    from engine.zoo import save_weights

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--level", type=int, default=4)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--crops", type=int, default=2048)
    p.add_argument("--limit", type=int, default=6, help="first N Kodak images")
    p.add_argument("--variants", nargs="+", default=["slices", "checkerboard"],
                   choices=["slices", "checkerboard"])
    p.add_argument("--save", type=Path, default=None)
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    msh = copy.deepcopy(zoo.load("msh", a.level))
    msh.attach_integer_hyper(None)  # the float path on both sides: one comparison
    msh.info = zoo.load("msh", a.level).info
    y, _ = training_latents(msh, TRAIN, a.crops + a.crops // 8)
    y_train, y_test = y.split(a.crops)
    rows = {"hyperprior": api_rd(msh, a.level, a.limit)}
    with torch.no_grad():  # zero corrections: the hyperprior itself
        held_out = {"hyperprior": float(bits_per_pixel(conditional_from(msh, msh.info.lam, False),
                                                       y_test, False))}
    minutes = {}
    for variant in a.variants:
        cc = conditional_from(msh, msh.info.lam, variant == "checkerboard")
        start = time.perf_counter()
        train(cc, y_train, a.steps)
        minutes[variant] = (time.perf_counter() - start) / 60
        with torch.no_grad():
            held_out[variant] = float(bits_per_pixel(cc, y_test, False))
        cc.info = None  # the codec fingerprints the weights
        if a.save:
            save_weights(cc, a.save / f"{variant}.safetensors", "float32", lam=msh.info.lam,
                         steps=a.steps, init=f"msh-q{a.level}")
        rows[variant] = api_rd(cc, 1, a.limit)

    before = held_out["hyperprior"]
    lines = [f"Date {date.today()}, commit {commit()}, {cpu()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads. Command: `python benchmarks/cc_entropy_gain.py "
             f"{' '.join(sys.argv[1:])}`. Level {a.level}; {a.crops} training crops of 256x256 "
             f"({a.crops // 8} held out); {a.steps} steps of batch 8 per variant ("
             + ", ".join(f"{v}: {m:.1f} minutes" for v, m in minutes.items()) + "). `slices`: "
             "4 slices of 32 channels; `checkerboard`: the same with the checkerboard split "
             "inside each slice.", "",
             "| model | held-out bpp (model entropy) | against the hyperprior | Kodak bpp | PSNR "
             "(dB) | encode (s) | decode (s) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, (bpp, psnr, enc, dec) in rows.items():
        change = "" if name == "hyperprior" else f"{100 * (held_out[name] / before - 1):+.2f} %"
        lines.append(f"| {name} | {held_out[name]:.4f} | {change} | {bpp:.4f} | {psnr:.3f} | "
                     f"{enc:.3f} | {dec:.3f} |")
    text = "\n".join(lines)
    print(text)
    if a.write:
        write_section("cc_entropy_gain", "Channel-conditional entropy model on frozen transforms",
                      text)


if __name__ == "__main__":
    main()
