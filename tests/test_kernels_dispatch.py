"""nicengine_kernels.dispatch: which calls take the Triton kernel, and the engine without triton."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nicengine_kernels import dispatch


def _gdn_inputs(device):
    g = torch.Generator().manual_seed(0)
    x, beta = torch.randn(1, 16, 4, 4, generator=g), 0.5 + torch.rand(16, generator=g)
    gamma = torch.rand(16, 16, generator=g) / 16
    return x.to(device), beta.to(device), gamma.to(device)


def test_modes_dtypes_and_gradients(device, poisoned, monkeypatch):
    """The kernel runs only where it should: the mode, the device, the dtype and the need of a
    gradient decide."""
    x, beta, gamma = _gdn_inputs(device)

    def kernel_ran(fn, *args, **kwargs):
        before = len(poisoned)
        fn(*args, **kwargs)
        return len(poisoned) > before

    assert kernel_ran(dispatch.gdn, x, beta, gamma)
    assert not kernel_ran(dispatch.gdn, x.double(), beta.double(), gamma.double())  # no float64
    assert not kernel_ran(dispatch.gdn, x.requires_grad_(), beta, gamma)  # no backward
    with torch.no_grad():
        assert kernel_ran(dispatch.gdn, x, beta, gamma)
    # Kernels with a backward take inputs that need a gradient.
    g = torch.zeros(2, *x.shape, device=device)
    assert kernel_ran(dispatch.sga_round, x, "ssl", 0.5, gumbel=g)
    assert not kernel_ran(dispatch.sga_round, x.double(), "ssl", 0.5, gumbel=g)  # no float64
    x = x.detach()
    monkeypatch.setenv("NIC_KERNELS", "reference")
    assert not kernel_ran(dispatch.gdn, x, beta, gamma)
    monkeypatch.setenv("NIC_KERNELS", "auto")
    assert kernel_ran(dispatch.gdn, x, beta, gamma) == (device.type == "cuda")
    assert not kernel_ran(dispatch.gdn, x.cpu(), beta.cpu(), gamma.cpu())
    monkeypatch.setenv("NIC_KERNELS", "fast")
    with pytest.raises(ValueError, match="NIC_KERNELS"):
        dispatch.gdn(x, beta, gamma)


def check_without_triton() -> None:
    """Run in a process where triton cannot be imported (test_engine_runs_without_triton)."""
    import engine  # noqa: F401  the whole engine imports
    from nicengine_kernels.gdn_reference import gdn_reference
    from nicengine_kernels.quantize_reference import quantize_reference, quantize_train_reference
    from nicengine_kernels.sga_reference import gumbel_noise, sga_round_reference
    from nicengine_kernels.subpel_reference import subpel_igdn_reference, subpel_reference

    x, beta, gamma = _gdn_inputs("cpu")
    assert torch.equal(dispatch.gdn(x, beta, gamma), gdn_reference(x, beta, gamma))
    y, bias = torch.randn(1, 64, 3, 5), torch.randn(64)
    assert torch.equal(dispatch.subpel(y, bias, 2, True), subpel_reference(y, bias, 2, True))
    assert torch.equal(dispatch.subpel_igdn(y, bias, 2, beta, gamma),
                       subpel_igdn_reference(y, bias, 2, beta, gamma))
    scales, bounds = x.abs() + 0.05, torch.linspace(0.1, 2.0, 9)
    given = {"scale_min": 0.1, "likelihood_min": 1e-6}
    for got, want in zip(dispatch.quantize(x, scales, x.round(), bounds, **given),
                         quantize_reference(x, scales, x.round(), bounds, **given), strict=True):
        assert torch.equal(got, want)
    u = torch.rand(x.shape) - 0.5
    for got, want in zip(dispatch.quantize_train(x, scales, 0 * x, True, u, **given),
                         quantize_train_reference(x, scales, 0 * x, True, u, **given),
                         strict=True):
        assert torch.equal(got, want)
    g = gumbel_noise(x.shape, 3)
    assert torch.equal(dispatch.sga_round(x, "ssl3", 0.5, gumbel=g),
                       sga_round_reference(x, "ssl3", 0.5, gumbel=g))
    loaded = {name for name, module in sys.modules.items() if module is not None}
    assert not {"triton", *(f"nicengine_kernels.{m}" for m in ("gdn", "subpel", "quantize",
                                                               "sga", "utils"))} & loaded
    os.environ["NIC_KERNELS"] = "triton"
    with pytest.raises(RuntimeError, match="triton is not installed"):
        dispatch.gdn(x, beta, gamma)


def test_engine_runs_without_triton():
    """Triton stays optional: with it unimportable the engine imports, every entry point runs
    its reference and no Triton module is loaded; NIC_KERNELS=triton says what is missing."""
    code = ("import sys; sys.modules['triton'] = None\n"
            "from tests.test_kernels_dispatch import check_without_triton\n"
            "check_without_triton()\n")
    env = {k: v for k, v in os.environ.items() if k != "NIC_KERNELS"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env,
                   cwd=Path(__file__).resolve().parents[1])
