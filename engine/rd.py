"""The rate-distortion objective, shared by training and latent refinement."""

from __future__ import annotations

import torch
from torch import Tensor


def total_bits(likelihoods: list[Tensor]) -> Tensor:
    """(B,) bits of each image: -sum log2 of every likelihood tensor (B, ...)."""
    return -sum(torch.log2(p).flatten(1).sum(1) for p in likelihoods)


def rd_loss(x_hat: Tensor, x: Tensor, bits: Tensor, lam: float
            ) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, bpp, mse), each (B,): loss = bpp + lam 255^2 MSE, with the distortion measured on
    the original pixels (x_hat, possibly padded, is cropped to x) and the rate per original
    pixel. Pixels are in [0, 1]."""
    h, w = x.shape[2:]
    mse = (x_hat[:, :, :h, :w].float() - x).square().flatten(1).mean(1)
    bpp = bits / (h * w)
    return lam * 255**2 * mse + bpp, bpp, mse
