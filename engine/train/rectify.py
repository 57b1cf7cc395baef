"""Soft-to-predictive training of a quantization rectifier (Luo, Chen, arXiv 2403.17236, 2024).

    python -m engine.train rectify WEIGHTS [--steps 4000] [--alpha A | --alphas A1 A2 ...]
        [--lr 1e-4] [--g-s-lr 1e-6]
    python -m engine.train rectify WEIGHTS --decoder-only [--steps 4000] [--g-s-lr 1e-6]

writes NAME.qr.safetensors beside WEIGHTS (`engine.zoo.companion`): a second decoder of the
weights' streams. `--decoder-only` is the ablation: the same phase 2 (steps, data, learning
rates) without the rectifier, g_s alone fine-tuned on the rounded latents. Phase 1 ("soft") is
the model's ordinary training; this is phase 2 ("predictive"): the encoder and the hard
quantization are frozen (g_a, h_a, h_s and the entropy models do not change, so neither do the
symbols, the rate or the streams) and the rectifier and a copy of g_s are trained on the
decoder's own inputs with

    loss = lambda 255^2 MSE(x, g_s(QR(y_hat))) + alpha mean((QR(y_hat) - y)^2)

`alpha`, the rectifier coefficient, is searched (`search_alpha`): short runs from the same start,
held-out PSNR for each, the grid extended while the best alpha is at its end.

1. Data: training crops through the frozen encoder, once: x, y, and (y_hat, means, scales) as
   the decoder computes them (`CodingModel.decoder_latents`).
2. The alpha search, unless --alpha or --decoder-only is given.
3. The long run with the chosen alpha; held-out PSNR of both decoders before and after.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..images import list_images
from ..models import CodingModel
from ..models.rectifier import RectifiedDecoder
from ..zoo import companion, load_weights, save_rectifier
from .data import RandomCrops

ALPHAS = (0.0, 0.1, 1.0, 10.0)  # the search's first grid; extended by EXTEND while at an end
EXTEND = 10.0
G_S_LR = 0.01  # g_s, already trained, learns at this fraction of the rectifier's rate


@dataclass(frozen=True)
class CodedCrops:
    """Crops as the frozen encoder codes them: x (n, 3, c, c) uint8; y, y_hat, means, scales
    (n, M, c/16, c/16) float32."""

    x: Tensor
    y: Tensor
    y_hat: Tensor
    means: Tensor
    scales: Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    def batch(self, i: Tensor) -> tuple[Tensor, ...]:
        """(x float in [0, 1], y, y_hat, means, scales) of the crops i."""
        return (self.x[i].float() / 255, self.y[i], self.y_hat[i], self.means[i],
                self.scales[i])


def coded_crops(model: CodingModel, data: str | Path, count: int, crop: int, seed: int
                ) -> CodedCrops:
    """`count` training crops through the frozen encoder (8 at a time)."""
    crops = RandomCrops(list_images(data), crop, seed, count)
    parts: list[tuple[Tensor, ...]] = []
    with torch.no_grad():
        for i in range(0, count, 8):
            x = torch.stack([crops[j] for j in range(i, min(count, i + 8))])
            latents = model.analyze(x)
            y_hat, means, scales = model.decoder_latents(latents)
            parts.append((torch.round(x * 255).to(torch.uint8), latents[0].float(), y_hat,
                          means.float(), scales.float()))
    return CodedCrops(*(torch.cat(t) for t in zip(*parts, strict=True)))


def held_out_psnr(decode: torch.nn.Module | None, model: CodingModel, crops: CodedCrops
                  ) -> float:
    """Mean PSNR (dB) over `crops` of the model's own decoder (`decode` None) or a rectified
    decoder, on the clamped output."""
    total = 0.0
    with torch.no_grad():
        for i in torch.arange(len(crops)).split(16):
            x, _, y_hat, means, scales = crops.batch(i)
            x_hat = model.g_s(y_hat) if decode is None else decode(y_hat, means, scales)
            mse = (x_hat.clamp(0, 1) - x).square().flatten(1).mean(1)
            total += float((-10 * torch.log10(mse)).sum())
    return total / len(crops)


def train_phase2(model: CodingModel, lam: float, crops: CodedCrops, alpha: float, steps: int,
                 batch: int = 8, lr: float = 1e-4, g_s_lr: float | None = None, seed: int = 0,
                 width: int = 128, blocks: int = 3, decoder_only: bool = False,
                 log_every: int = 0) -> RectifiedDecoder:
    """Phase 2: a rectifier (zero at the start; none if `decoder_only`) and a copy of g_s
    trained with the loss of the module docstring. g_s, already trained, learns at `g_s_lr`,
    by default G_S_LR times the rectifier's `lr` (at a tenth of it, the shipped models' g_s first
    left its optimum), with or without a rectifier, so that the two differ by the rectifier
    alone; both drop tenfold for the last fifth of the steps. The crops are drawn in the same
    order either way."""
    torch.manual_seed(seed)
    decoder = RectifiedDecoder.of(model, width, blocks, decoder_only)
    decoder.train().requires_grad_(True)
    g_s_lr = lr * G_S_LR if g_s_lr is None else g_s_lr
    groups = [{"params": decoder.g_s.parameters(), "lr": g_s_lr}]
    if decoder.rectifier is not None:
        groups.append({"params": decoder.rectifier.parameters(), "lr": lr})
    opt = torch.optim.Adam(groups)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        if step == int(steps * 0.8):
            for group in opt.param_groups:
                group["lr"] /= 10
        x, y, y_hat, means, scales = crops.batch(torch.randint(0, len(crops), (batch,),
                                                               generator=g))
        y_tilde = decoder.rectify(y_hat, means, scales)
        mse = (decoder.g_s(y_tilde) - x).square().mean()
        loss = lam * 255**2 * mse + alpha * (y_tilde - y).square().mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        opt.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}: loss {loss.item():.5f}, "
                  f"PSNR {-10 * math.log10(mse.item()):.3f} dB", flush=True)
    return decoder.eval().requires_grad_(False)


def search_alpha(model: CodingModel, lam: float, train: CodedCrops, held: CodedCrops,
                 steps: int, alphas: tuple[float, ...] = ALPHAS, extend: int = 2,
                 **options) -> list[dict]:
    """Short phase-2 runs from the same start for each alpha of the grid; while the best alpha
    is the largest (smallest) positive one tried, one more run a factor EXTEND above (below)
    it, at most `extend` times. Returns every run: {"alpha", "psnr"} (held-out), in run order."""
    runs: list[dict] = []

    def run(alpha: float) -> None:
        decoder = train_phase2(model, lam, train, alpha, steps, **options)
        runs.append({"alpha": alpha, "psnr": held_out_psnr(decoder, model, held)})
        print(f"alpha {alpha:g}: held-out PSNR {runs[-1]['psnr']:.4f} dB", flush=True)

    for alpha in alphas:
        run(alpha)
    for _ in range(extend):
        best = max(runs, key=lambda r: r["psnr"])["alpha"]
        positive = sorted(r["alpha"] for r in runs if r["alpha"] > 0)
        if positive and best == positive[-1]:
            run(best * EXTEND)
        elif positive and best == positive[0]:
            run(best / EXTEND)
        else:
            break
    return runs


def rectify(model: CodingModel, data: str | Path, steps: int = 4000,
            alpha: float | None = None, alphas: tuple[float, ...] = ALPHAS,
            search_steps: int = 500, crops: int = 3072, crop: int = 192,
            lam: float | None = None, seed: int = 0, decoder_only: bool = False, **options
            ) -> tuple[RectifiedDecoder, dict]:
    """The rectified decoder of `model` (with `decoder_only`, its g_s alone fine-tuned: no
    rectifier, no alpha) and a report (the alpha search's runs, the chosen alpha, held-out PSNR
    of both decoders on crops // 8 other crops)."""
    if not model.RECTIFIABLE:
        raise ValueError(f"{model.ARCH} models do not decode with a quantization rectifier")
    lam = model.training_lambda(model.info.quality) if lam is None else lam
    if lam is None:
        raise ValueError("the weights do not record their training lambda; give --lam")
    train = coded_crops(model, data, crops, crop, seed)
    test = coded_crops(model, data, max(1, crops // 8), crop, seed + 1)
    report: dict = {"lambda": lam, "steps": steps, "crops": crops, "crop": crop,
                    "decoder_only": decoder_only, "psnr_without": held_out_psnr(None, model, test)}
    print(f"held-out PSNR of the model's own decoder: {report['psnr_without']:.4f} dB",
          flush=True)
    if decoder_only:
        alpha = 0.0  # without a rectifier, y_tilde = y_hat: the term is a constant
    elif alpha is None:
        report["search"] = search_alpha(model, lam, train, test, search_steps, alphas, seed=seed,
                                        **options)
        report["search_steps"] = search_steps
        alpha = max(report["search"], key=lambda r: r["psnr"])["alpha"]
    report["alpha"] = alpha
    decoder = train_phase2(model, lam, train, alpha, steps, seed=seed,
                           decoder_only=decoder_only, log_every=500, **options)
    report["psnr_with"] = held_out_psnr(decoder, model, test)
    report["gain_db"] = report["psnr_with"] - report["psnr_without"]
    return decoder, report


def rectify_file(weights: str | Path, data: str | Path, **options) -> dict:
    """Write WEIGHTS's rectified decoder (NAME.qr.safetensors; with decoder_only=True, its
    fine-tuned g_s alone, in the same file); returns `rectify`'s report."""
    model = load_weights(weights)
    model.attach_rectifier(None)  # never start from a companion already there
    decoder, report = rectify(model, data, **options)
    save_rectifier(decoder, model, companion(weights, "rectifier"), **report)
    return report
