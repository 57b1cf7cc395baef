"""Refining the latents of images against a frozen model (SGA+, Perugachi-Diaz, Gansekoele,
Bhulai, NeurIPS 2024; SGA, Yang, Bamler, Mandt, NeurIPS 2020), for any model kind.

The latents start from the model's analysis of the padded image. Each step, with Q the method's
quantizer (`relax`) in place of every rounding the codec does (`CodingModel.relaxed`):

    loss = lam 255^2 MSE(x~, x) + bpp(likelihoods of the relaxed latents)

(`engine.rd`); the distortion is measured on the original pixels (x~ cropped) and bpp per
original pixel. The true loss is the codec's own: the model's coding passes (`encode_latents`)
give the rate, and what the decoder makes of them (`reconstruct`) the distortion. It is
evaluated before every step and after the last, and the latents with the lowest true loss are
returned: iteration 0 (the unrefined latents) counts, so refinement never does worse than none.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from ..models import CodingModel
from ..models.base import Latents
from ..rd import rd_loss, total_bits
from .config import Refine
from .rounding import relax

_POSTFIX_EVERY = 10  # progress-bar updates cost a device sync


@dataclass
class History:
    """What a refinement measured. Row t of the (T, B) tensors is measured on the latents after t
    steps (row 0: unrefined; T = steps + 1); B is the batch.

    loss, bpp, psnr: true R-D loss, rate (model likelihoods, bits per original pixel) and PSNR
        (float pixels, 10 log10(1 / MSE)) of the hard-rounded latents.
    relaxed: (T - 1, B) the method's own loss at each step; tau: its temperature.
    seconds: (T,) time since the start (analysis included) when row t was measured.
    best: (B,) the row whose latents were returned.
    """

    loss: Tensor
    bpp: Tensor
    psnr: Tensor
    relaxed: Tensor
    tau: Tensor
    seconds: Tensor
    best: Tensor
    lam: float

    @property
    def steps(self) -> int:
        return self.loss.shape[0] - 1

    def at(self, t: int) -> dict[str, Tensor]:
        """What a refinement stopped after t steps would have coded: per image the row with the
        lowest true loss among rows 0..t. {loss, bpp, psnr, row}, each (B,)."""
        loss = self.loss[: t + 1].nan_to_num(nan=math.inf)
        row = loss.argmin(0)
        pick = row.unsqueeze(0)
        return {"loss": loss.gather(0, pick)[0], "bpp": self.bpp.gather(0, pick)[0],
                "psnr": self.psnr.gather(0, pick)[0], "row": row}


def refine_latents(model: CodingModel, x: Tensor, refine: Refine, quality: float = 0.0
                   ) -> tuple[Latents, History]:
    """x (B, 3, H, W) in [0, 1] on the model's device, any H and W -> the refined latents (of
    the padded image, as `model.analyze` gives them) and the History. `quality`: the rate of a
    variable-rate model. The model is not changed; gradients go to the latents only. Runs with
    gradients whatever the caller's mode (`torch.no_grad`, `torch.inference_mode`)."""
    with torch.inference_mode(False), torch.enable_grad():
        return _refine(model, x.detach().clone().float(), refine, quality)


def _refine(model: CodingModel, x: Tensor, refine: Refine, quality: float
            ) -> tuple[Latents, History]:
    lam = refine_lambda(model, refine, quality)
    start = time.perf_counter()
    generator = torch.Generator(device=x.device).manual_seed(refine.seed)
    h, w = x.shape[2:]
    with torch.no_grad():
        initial = model.analyze(model.pad(x))
    latents = [v.clone().requires_grad_(True) for v in initial]
    best = list(initial)
    best_loss = torch.full((x.shape[0],), math.inf, device=x.device)
    best_row = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    opt = torch.optim.Adam(latents, lr=refine.lr)
    rows, relaxed, taus, seconds = [], [], [], []
    show = refine.progress if refine.progress is not None else refine.iterations >= 100
    bar = tqdm(total=refine.iterations, desc=f"refine {refine.method}", unit="it",
               disable=None if show and refine.progress is None else not show)
    for t in range(refine.iterations + 1):
        current = tuple(v.detach() for v in latents)
        with torch.no_grad():  # what the codec codes and decodes
            encoded = model.encode_latents(current, quality)
            x_hat = model.reconstruct(encoded, h, w, quality)
            loss, bpp, mse = rd_loss(x_hat, x, encoded.bits.to(x), lam)
        better = loss < best_loss  # False for NaN: a diverged step is never kept
        best_loss = torch.where(better, loss, best_loss)
        best_row = torch.where(better, t, best_row)
        for i, v in enumerate(current):
            best[i] = torch.where(better.view(-1, *[1] * (v.dim() - 1)), v, best[i])
        rows.append(torch.stack([loss, bpp, mse]))
        seconds.append(_elapsed(start, x.device))
        if t == refine.iterations or (refine.time_budget is not None
                                      and seconds[-1] >= refine.time_budget):
            break
        taus.append(refine.temperature(t))
        x_t, likelihoods = model.relaxed(tuple(latents), quality,
                                         lambda v, t=t: relax(v, refine, t, generator))
        # x~ is not clamped (as in training): the clamp would stop the gradient of every
        # saturated pixel.
        step_loss = rd_loss(x_t, x, total_bits(likelihoods), lam)[0]
        grads = torch.autograd.grad(step_loss.sum(), latents)
        for v, g in zip(latents, grads, strict=True):
            v.grad = g
        opt.step()
        relaxed.append(step_loss.detach())
        bar.update(1)
        if not bar.disable and t % _POSTFIX_EVERY == 0:  # batch means
            bar.set_postfix(loss=f"{loss.mean():.4f}", best=f"{best_loss.mean():.4f}",
                            bpp=f"{bpp.mean():.4f}", psnr=f"{_psnr(mse).mean():.2f}")
    bar.close()
    table = torch.stack(rows).cpu()  # (T, 3, B)
    history = History(
        loss=table[:, 0], bpp=table[:, 1], psnr=_psnr(table[:, 2]),
        relaxed=(torch.stack(relaxed).cpu() if relaxed else torch.empty(0, x.shape[0])),
        tau=torch.tensor(taus, dtype=torch.float64),
        seconds=torch.tensor(seconds, dtype=torch.float64), best=best_row.cpu(), lam=lam)
    return tuple(best), history


def refine_lambda(model: CodingModel, refine: Refine, quality: float = 0.0) -> float:
    """The lambda a refinement optimises for: `refine.lam`, else the model's training lambda."""
    if refine.lam is not None:
        return refine.lam
    lam = model.training_lambda(quality)
    if lam is None:
        raise ValueError("the model's training lambda is unknown (its weights file records "
                         "none); give it as Refine(lam=...)")
    return float(lam)


def _elapsed(start: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _psnr(mse: Tensor) -> Tensor:
    return -10 * torch.log10(mse.clamp_min(1e-10))
