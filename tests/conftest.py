"""Shared fixtures. The core suite generates its own images; tests that need ../shared skip
with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.models import MeanScaleHyperprior, ModelConfig

if not torch.cuda.is_available():
    # Kernel tests run the Triton kernels on CPU tensors through the interpreter. Triton reads
    # this when it is imported, which the kernels do on their first launch.
    os.environ.setdefault("TRITON_INTERPRET", "1")

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


@pytest.fixture
def kernels_on(monkeypatch):
    """Every dispatch takes the Triton kernel (on CPU tensors: under the interpreter)."""
    pytest.importorskip("triton")
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("TRITON_INTERPRET=1 is needed to run kernels without a GPU")
    monkeypatch.setenv("NIC_KERNELS", "triton")


@pytest.fixture
def poisoned(monkeypatch):
    """Kernel outputs start as NaN (integers: their minimum), so skipped elements fail."""
    from kernels import dispatch

    made = []

    def empty(shape, dtype, device):
        fill = float("nan") if dtype.is_floating_point else torch.iinfo(dtype).min
        made.append(torch.full(shape, fill, dtype=dtype, device=device))
        return made[-1]

    monkeypatch.setattr(dispatch, "empty", empty)
    return made
