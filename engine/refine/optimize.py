"""Refining one image's latents against a frozen mean-scale hyperprior (SGA+, Perugachi-Diaz,
Gansekoele, Bhulai, NeurIPS 2024; SGA, Yang, Bamler, Mandt, NeurIPS 2020).

y and z start from g_a and h_a of the padded image. Each step, with Q the method's quantizer
(`relax`) applied to the values the codec rounds:

    z~ = Q(z - med) + med;  (sigma, mu) = h_s(z~);  y~ = Q(y - mu) + mu;  x~ = g_s(y~)
    loss = lam 255^2 MSE(x~, x) + bpp(y~ | sigma, mu) + bpp(z~)

with the model's own likelihoods; the distortion is measured on the original pixels (x~ cropped)
and bpp per original pixel. The true loss is the same with hard rounding and x~ clamped to [0, 1],
as the codec codes and decodes. It is evaluated before every step and after the last, and the
latents with the lowest true loss are returned: iteration 0 (the unrefined latents) counts, so
refinement never does worse than none.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from kernels.quantize import likelihood

from ..codec import _pad
from ..models import MeanScaleHyperprior
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


def refine_latents(model: MeanScaleHyperprior, x: Tensor, refine: Refine
                   ) -> tuple[Tensor, Tensor, History]:
    """x (B, 3, H, W) in [0, 1] on the model's device, any H and W (padded like the codec) ->
    the refined y (B, M, H'/16, W'/16) and z (B, N, H'/64, W'/64), H' and W' padded, float32, and
    the History. The model is not changed; gradients go to the latents only."""
    lam = _lambda(model, refine)
    start = time.perf_counter()
    x = x.detach().float()
    generator = torch.Generator(device=x.device).manual_seed(refine.seed)
    with torch.no_grad():
        y0, z0 = model.analyze(_pad(x))
    y, z = y0.clone().requires_grad_(True), z0.clone().requires_grad_(True)
    best_y, best_z = y0, z0
    best_loss = torch.full((x.shape[0],), math.inf, device=x.device)
    best_row = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    opt = torch.optim.Adam([y, z], lr=refine.lr)
    rows, relaxed, taus, seconds = [], [], [], []
    show = refine.progress if refine.progress is not None else refine.iterations >= 100
    bar = tqdm(total=refine.iterations, desc=f"refine {refine.method}", unit="it",
               disable=None if show and refine.progress is None else not show)
    for t in range(refine.iterations + 1):
        loss, bpp, mse = _true_loss(model, x, y.detach(), z.detach(), lam)
        better = loss < best_loss  # False for NaN: a diverged step is never kept
        best_loss = torch.where(better, loss, best_loss)
        best_row = torch.where(better, t, best_row)
        keep = better.view(-1, 1, 1, 1)
        best_y = torch.where(keep, y.detach(), best_y)
        best_z = torch.where(keep, z.detach(), best_z)
        rows.append(torch.stack([loss, bpp, mse]))
        seconds.append(_elapsed(start, x.device))
        if t == refine.iterations or (refine.time_budget is not None
                                      and seconds[-1] >= refine.time_budget):
            break
        taus.append(refine.temperature(t))
        step_loss = _relaxed_loss(model, x, y, z, lam, refine, t, generator)
        y.grad, z.grad = torch.autograd.grad(step_loss.sum(), [y, z])
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
    return best_y, best_z, history


def _lambda(model: MeanScaleHyperprior, refine: Refine) -> float:
    if refine.lam is not None:
        return refine.lam
    lam = getattr(model, "info", {}).get("lambda")
    if lam is None:
        raise ValueError("the model's training lambda is unknown (no 'lambda' in model.info); "
                         "give it as Refine(lam=...)")
    return float(lam)


def _elapsed(start: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _psnr(mse: Tensor) -> Tensor:
    return -10 * torch.log10(mse.clamp_min(1e-10))


def _rd(model: MeanScaleHyperprior, x: Tensor, x_hat: Tensor, y_hat: Tensor, z_hat: Tensor,
        scales: Tensor, means: Tensor, lam: float) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, bpp, mse), each (B,): distortion on the original pixels, rate per original pixel."""
    h, w = x.shape[2:]
    mse = (x_hat[:, :, :h, :w] - x).square().flatten(1).mean(1)
    bits = -(torch.log2(likelihood(y_hat, scales, means)).flatten(1).sum(1)
             + torch.log2(model.entropy_z.likelihood(z_hat)).flatten(1).sum(1))
    bpp = bits / (h * w)
    return lam * 255**2 * mse + bpp, bpp, mse


@torch.no_grad()
def _true_loss(model: MeanScaleHyperprior, x: Tensor, y: Tensor, z: Tensor, lam: float
               ) -> tuple[Tensor, Tensor, Tensor]:
    med = model.entropy_z.medians.view(1, -1, 1, 1)
    z_hat = torch.round(z - med) + med
    scales, means = model.h_s(z_hat).chunk(2, dim=1)
    y_hat = torch.round(y - means) + means
    return _rd(model, x, model.g_s(y_hat).clamp(0, 1), y_hat, z_hat, scales, means, lam)


def _relaxed_loss(model: MeanScaleHyperprior, x: Tensor, y: Tensor, z: Tensor, lam: float,
                  refine: Refine, t: int, generator: torch.Generator) -> Tensor:
    """The method's loss at step t, (B,). x~ is not clamped (as in training): the clamp would
    stop the gradient of every saturated pixel."""
    med = model.entropy_z.medians.view(1, -1, 1, 1)
    z_t = relax(z - med, refine, t, generator) + med
    scales, means = model.h_s(z_t).chunk(2, dim=1)
    y_t = relax(y - means, refine, t, generator) + means
    return _rd(model, x, model.g_s(y_t), y_t, z_t, scales, means, lam)[0]
