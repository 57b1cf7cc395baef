"""GDN/IGDN kernel against its reference: compiled on a GPU, under the Triton interpreter on the
CPU (the `device` fixture).

Tolerances (absolute and relative, against the reference in the same dtype, whose own roundings
differ): float32 1e-5, float16 2e-3, bfloat16 2e-2.
"""


import pytest
import torch

from nicengine_kernels.dispatch import gdn
from nicengine_kernels.gdn_reference import gdn_reference

pytestmark = pytest.mark.usefixtures("kernels_on")

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def _inputs(b, c, h, w, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(b, c, h, w, generator=g)
    beta = 0.5 + torch.rand(c, generator=g)
    gamma = torch.rand(c, c, generator=g) * 0.5 / c
    return (t.to(device, dtype) for t in (x, beta, gamma))


# Channels: the smallest dot block (16), partial blocks (24, 80), two blocks, the second partial
# (160); pixel counts that are not multiples of the 64-pixel tile.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("b, c, h, w",
                         [(1, 16, 5, 7), (2, 24, 9, 11), (1, 80, 3, 29), (1, 160, 2, 9)])
def test_gdn_matches_reference(b, c, h, w, inverse, dtype, device, poisoned):
    x, beta, gamma = _inputs(b, c, h, w, dtype, device)
    out = gdn(x, beta, gamma, inverse)
    assert [t.data_ptr() for t in poisoned] == [out.data_ptr()]
    expected = gdn_reference(x, beta, gamma, inverse)
    torch.testing.assert_close(out, expected, rtol=TOL[dtype], atol=TOL[dtype])


def test_poison_catches_skipped_elements(device, launch_one_short):
    """A launch one tile short leaves NaN behind, and the comparison fails."""
    from nicengine_kernels import gdn as gdn_triton

    launch_one_short(gdn_triton)
    x, beta, gamma = _inputs(1, 16, 9, 11, torch.float32, device)
    out = gdn(x, beta, gamma)
    assert out.isnan().any()
    with pytest.raises(AssertionError):
        torch.testing.assert_close(out, gdn_reference(x, beta, gamma))


def test_gdn_module_uses_the_kernel(device, poisoned):
    from engine.models.layers import GDN

    torch.manual_seed(1)
    layer = GDN(24).to(device)
    with torch.no_grad():
        layer.gamma.add_(0.05 * torch.rand(24, 24, device=device))
        x = torch.randn(2, 24, 6, 5, device=device)
        out = layer(x)
    assert len(poisoned) == 1
    beta, gamma = layer.effective_params()
    torch.testing.assert_close(out, gdn_reference(x, beta, gamma), rtol=1e-5, atol=1e-5)
