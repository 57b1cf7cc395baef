"""Shared fixtures. The core suite generates its own images; tests that need ../shared skip
with a reason when it is absent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import Codec
from engine.models import MeanScaleHyperprior, ModelConfig

if not torch.cuda.is_available():
    # Without a GPU the kernel tests run the Triton kernels on CPU tensors through the
    # interpreter. Triton reads this when it is imported, which nicengine_kernels.dispatch does on
    # the first kernel call, after this.
    os.environ.setdefault("TRITON_INTERPRET", "1")
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# precision="auto" is float32 in every test, and in the processes the tests start, whatever the
# CPU (CI's varies; with AVX512_BF16 it would be bfloat16), so the exact comparisons hold
# everywhere: oneDNN is held below its bfloat16 instructions (`engine.precision.fast_bfloat16`).
# Tests of the bfloat16 path ask for it by name.
os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX512_CORE_VNNI"
# Where the kernel tests put their tensors: CUDA on a GPU host (compiled kernels), the CPU under
# the interpreter (also on a GPU host when TRITON_INTERPRET=1 asks for it, as `make test` does).
KERNEL_DEVICE = torch.device("cuda" if torch.cuda.is_available() and not INTERPRET else "cpu")

SHARED = Path(__file__).resolve().parents[2] / "shared"
KODAK = SHARED / "data" / "kodak"

needs_kodak = pytest.mark.skipif(not KODAK.is_dir(),
                                 reason="needs ../shared/data/kodak (present in CI)")


def compile_for_gpus(script: str, cache: Path) -> list[str]:
    """What `script` (a kernel's compile check) prints, run by Triton's compiler, not its
    interpreter, in a fresh process caching into `cache`; skips without triton."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(cache)
    run = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1],
                         env=env, check=True, capture_output=True, text=True, timeout=300)
    return run.stdout.split()


def smooth_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A photo-like (3, h, w) image in [0, 1]: smooth gradients plus a little texture."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    phase = torch.rand(3, 1, 1, generator=g) * 6
    base = 0.5 + 0.3 * torch.sin(4 * xx + 3 * yy + phase) * torch.cos(2 * yy - xx + phase)
    return (base + 0.05 * torch.rand(3, h, w, generator=g)).clamp(0, 1)


def check_bfloat16_round_trip(model, x: torch.Tensor, max_mse: float = 1e-5) -> None:
    """Streams made with g_a in bfloat16 and in float32 both decode at either precision, to
    images within `max_mse` of each other (a table chosen under autocast would desynchronise
    the coder: garbage or a CodecError), deterministically, at about the same size."""
    fast, exact = (Codec(weights=model, precision=p) for p in ("bfloat16", "float32"))
    for data in (fast.compress(x), exact.compress(x)):
        a, b = fast.decompress(data), exact.decompress(data)
        assert a.dtype == torch.float32 and a.shape == x.shape
        assert float(a.min()) >= 0 and float(a.max()) <= 1
        assert torch.equal(fast.decompress(data), a)  # deterministic at either precision
        assert torch.mean((a - b) ** 2) < max_mse
        assert not torch.equal(a, b)  # g_s did run in bfloat16
    ratio = len(fast.compress(x)) / len(exact.compress(x))
    assert 0.97 < ratio < 1.03


@pytest.fixture(scope="session")
def train_images(tmp_path_factory) -> Path:
    """A folder of four 340x300 photo-like PNGs: training data for the fine-tuning commands."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("train")
    for i in range(4):
        x = smooth_image(300, 340, seed=i)
        Image.fromarray((x.permute(1, 2, 0) * 255).byte().numpy()).save(folder / f"{i}.png")
    return folder


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
def device() -> torch.device:
    """The kernel tests' device, KERNEL_DEVICE."""
    return KERNEL_DEVICE


@pytest.fixture
def kernels_on(monkeypatch, device):
    """Every dispatch takes the Triton kernel: compiled on CUDA tensors, interpreted on CPU ones.
    TF32 is off, so float32 references (cuDNN convolutions) and kernels compute in float32."""
    pytest.importorskip("triton")
    if device.type == "cpu" and not INTERPRET:
        pytest.skip("TRITON_INTERPRET=1 is needed to run kernels without a GPU")
    monkeypatch.setenv("NIC_KERNELS", "triton")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


@pytest.fixture
def poisoned(monkeypatch, kernels_on):
    """Kernel outputs start as NaN (integers: their minimum), so skipped elements fail."""
    from nicengine_kernels import utils

    made = []

    def empty(shape, dtype, device):
        fill = float("nan") if dtype.is_floating_point else torch.iinfo(dtype).min
        made.append(torch.full(shape, fill, dtype=dtype, device=device))
        return made[-1]

    monkeypatch.setattr(utils, "empty", empty)
    return made


@pytest.fixture
def launch_one_short(monkeypatch, poisoned):
    """launch_one_short(module): that Triton module's grids get one program too few along each
    axis (at least one), to show that the poison catches the elements left unwritten."""
    return lambda module: monkeypatch.setattr(module, "cdiv", lambda a, b: max(1, -(-a // b) - 1))
