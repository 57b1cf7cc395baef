"""GDN/IGDN kernel against its reference under the Triton interpreter, and the dispatcher.

Tolerances (absolute and relative, against the reference in the same dtype, whose own roundings
differ): float32 1e-5, float16 2e-3, bfloat16 2e-2.
"""


import pytest
import torch

from kernels import gdn

pytestmark = pytest.mark.usefixtures("kernels_on")

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def _inputs(b, c, h, w, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(b, c, h, w, generator=g)
    beta = 0.5 + torch.rand(c, generator=g)
    gamma = torch.rand(c, c, generator=g) * 0.5 / c
    return x.to(dtype), beta.to(dtype), gamma.to(dtype)


# Channels: the smallest dot block (16), partial blocks (24, 80), two blocks, the second partial
# (160); pixel counts that are not multiples of the 64-pixel tile.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("b, c, h, w",
                         [(1, 16, 5, 7), (2, 24, 9, 11), (1, 80, 3, 29), (1, 160, 2, 9)])
def test_gdn_matches_reference(b, c, h, w, inverse, dtype, poisoned):
    x, beta, gamma = _inputs(b, c, h, w, dtype)
    out = gdn.gdn(x, beta, gamma, inverse)
    assert [t.data_ptr() for t in poisoned] == [out.data_ptr()]
    expected = gdn.gdn_reference(x, beta, gamma, inverse)
    torch.testing.assert_close(out, expected, rtol=TOL[dtype], atol=TOL[dtype])


def test_poison_catches_skipped_elements(poisoned, monkeypatch):
    """A launch one tile short leaves NaN behind, and the comparison fails."""
    monkeypatch.setattr(gdn, "cdiv", lambda a, b: max(1, -(-a // b) - 1))
    x, beta, gamma = _inputs(1, 16, 9, 11, torch.float32)
    out = gdn.gdn(x, beta, gamma)
    assert out.isnan().any()
    with pytest.raises(AssertionError):
        torch.testing.assert_close(out, gdn.gdn_reference(x, beta, gamma))


def test_gdn_module_uses_the_kernel(poisoned):
    from engine.models.layers import GDN

    torch.manual_seed(1)
    layer = GDN(24)
    with torch.no_grad():
        layer.gamma.add_(0.05 * torch.rand(24, 24))
        x = torch.randn(2, 24, 6, 5)
        out = layer(x)
    assert len(poisoned) == 1
    beta, gamma = layer.effective_params()
    torch.testing.assert_close(out, gdn.gdn_reference(x, beta, gamma), rtol=1e-5, atol=1e-5)


def test_dispatch(poisoned, monkeypatch):
    """The kernel runs only where it should: the mode, the dtype and the need of a gradient."""
    x, beta, gamma = _inputs(1, 16, 4, 4, torch.float32)

    def kernel_ran(*args, **kwargs):
        before = len(poisoned)
        gdn.gdn(*args, **kwargs)
        return len(poisoned) > before

    assert kernel_ran(x, beta, gamma)
    assert not kernel_ran(x.double(), beta.double(), gamma.double())  # no float64 GDN kernel
    assert not kernel_ran(x.requires_grad_(), beta, gamma)  # no backward: the reference
    with torch.no_grad():
        assert kernel_ran(x, beta, gamma)
    x = x.detach()
    monkeypatch.setenv("NIC_KERNELS", "reference")
    assert not kernel_ran(x, beta, gamma)
    monkeypatch.setenv("NIC_KERNELS", "auto")
    assert not kernel_ran(x, beta, gamma)  # CPU tensors: the reference
    monkeypatch.setenv("NIC_KERNELS", "fast")
    with pytest.raises(ValueError, match="NIC_KERNELS"):
        gdn.gdn(x, beta, gamma)
