"""Make the integer hyper-decoder of a weights file: quantization-aware fine-tuning of h_s.

    python -m engine.train integerize WEIGHTS [--steps 1000] [--data ../shared/data/train]

writes NAME.int.safetensors beside WEIGHTS (`engine.zoo.companion`). The weights file
itself does not change, so streams coded with its float h_s keep decoding.

1. Latents: g_a and h_a (frozen) on training crops give y and z_hat = round(z - median) + median,
   computed once.
2. Activation exponents from the float h_s on those latents (`FakeIntegerHyper.calibrate`).
3. A copy of h_s trained through `FakeIntegerHyper` (straight-through rounding) on the rate of
   y, -log2 P(y + U(-1/2, 1/2) | scales, means): z, and so the hyperprior's rate, is fixed, and
   the distortion does not depend on h_s beyond where the means put the rounding grid.
4. The integers (`IntegerHyper.build`) with the model's CDF tables as integers, as this
   machine derives them from the weights (so the float path's streams keep their tables).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from torch import Tensor

from ..entropy.gaussian import GaussianConditional, scale_bounds
from ..images import list_images
from ..models import CodingModel
from ..models.integer_hyper import FakeIntegerHyper, IntegerHyper
from ..zoo import companion, load_weights, save_integer_hyper
from .data import RandomCrops


def training_latents(model: CodingModel, data: str | Path, count: int, crop: int = 256,
                     seed: int = 0) -> tuple[Tensor, Tensor]:
    """(y, z_hat) of `count` training crops, float32: (count, M, crop/16, crop/16) and
    (count, N, crop/64, crop/64)."""
    crops = RandomCrops(list_images(data), crop, seed, count)
    ys, zs = [], []
    with torch.no_grad():
        for i in range(0, count, 8):
            x = torch.stack([crops[j] for j in range(i, min(count, i + 8))])
            y, z = model.analyze(x)
            z_hat = model.entropy_z.dequantize(model.entropy_z.symbols(z))
            ys.append(y)
            zs.append(z_hat)
    return torch.cat(ys), torch.cat(zs)


def y_bits(scales: Tensor, means: Tensor, y: Tensor, noise: bool) -> Tensor:
    """Bits of y under the Gaussian conditional: on y + U(-1/2, 1/2) (noise) or on the coded
    grid round(y - means) + means."""
    if noise:
        values = y + torch.empty_like(y).uniform_(-0.5, 0.5)
    else:
        values = torch.round(y - means) + means
    return -torch.log2(GaussianConditional.likelihood(values, scales, means)).sum()


def integerize(model: CodingModel, data: str | Path, steps: int = 1000, crops: int = 1024,
               batch: int = 16, lr: float = 1e-5, seed: int = 0,
               log: bool = True) -> tuple[IntegerHyper, dict]:
    """The integer hyper-decoder of `model` (a mean-scale hyperprior) and a report: the bits per
    y element on held-out crops with float64 h_s, the integers before fine-tuning, and after."""
    if not model.INTEGER_HYPER:
        raise ValueError(f"{model.ARCH} models do not code with an integer hyper-decoder")
    torch.manual_seed(seed)
    y, z_hat = training_latents(model, data, crops + crops // 8, seed=seed)
    (y_train, y_test), (z_train, z_test) = y.split(crops), z_hat.split(crops)
    h_s = copy.deepcopy(model.h_s).float().train().requires_grad_(True)
    fake = FakeIntegerHyper(h_s, FakeIntegerHyper.calibrate(model.h_s, z_train))
    tables = model.tables()

    def held_out(network: IntegerHyper | None) -> float:
        with torch.no_grad():
            if network is None:
                scales, means, _ = model.hyper_decode(z_test)
            else:
                scales, means = network(z_test).chunk(2, dim=1)
            bits = y_bits(scales.float(), means.float(), y_test, noise=False)
            return float(bits) / y_test.numel()

    report = {"shifts": fake.shifts, "float64": held_out(None),
              "integer_before": held_out(IntegerHyper.build(fake, scale_bounds(y), tables))}
    opt = torch.optim.Adam(h_s.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    # The rate's gradients reach denormal floats, which make the convolutions' backward 4x
    # slower on x86 CPUs; flushing them to zero changes nothing measurable.
    flush = torch.set_flush_denormal(True)
    for step in range(steps):
        i = torch.randint(0, crops, (batch,), generator=g)
        scales, means = fake(z_train[i]).chunk(2, dim=1)
        loss = y_bits(scales, means, y_train[i], noise=True) / y_train[i].numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if log and (step + 1) % 250 == 0:
            print(f"step {step + 1}: {loss.item():.5f} bits per element", flush=True)
    if flush:
        torch.set_flush_denormal(False)
    with torch.no_grad():
        integer = IntegerHyper.build(fake, scale_bounds(y), tables)
    report["integer"] = held_out(integer)
    for key in ("integer_before", "integer"):
        report[key + "_cost"] = report[key] / report["float64"] - 1
    if not math.isfinite(report["integer"]):
        raise RuntimeError("the integer hyper-decoder's rate is not finite")
    return integer, report


def integerize_file(weights: str | Path, data: str | Path, **options) -> dict:
    """Write WEIGHTS's integer companion; returns the report of `integerize`."""
    model = load_weights(weights)
    model.attach_integer_hyper(None)  # derive from the float path, never from a stale companion
    integer, report = integerize(model, data, **options)
    save_integer_hyper(integer, model, companion(weights, "integer_hyper"))
    return report
