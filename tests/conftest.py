"""Shared fixtures. The core suite generates its own images; tests that need ../shared skip
with a reason when it is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.models import MeanScaleHyperprior, ModelConfig

SHARED = Path(__file__).resolve().parents[2] / "shared"
KODAK = SHARED / "data" / "kodak"

needs_kodak = pytest.mark.skipif(not KODAK.is_dir(),
                                 reason="needs ../shared/data/kodak (present in CI)")


def smooth_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A photo-like (3, h, w) image in [0, 1]: smooth gradients plus a little texture."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    phase = torch.rand(3, 1, 1, generator=g) * 6
    base = 0.5 + 0.3 * torch.sin(4 * xx + 3 * yy + phase) * torch.cos(2 * yy - xx + phase)
    return (base + 0.05 * torch.rand(3, h, w, generator=g)).clamp(0, 1)


@pytest.fixture(scope="session")
def tiny_model() -> MeanScaleHyperprior:
    """A small random-weight model: enough for exact round trips and stream handling."""
    torch.manual_seed(0)
    model = MeanScaleHyperprior(ModelConfig(N=16, M=24)).eval().requires_grad_(False)
    return model


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
