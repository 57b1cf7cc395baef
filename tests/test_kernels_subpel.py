"""Sub-pixel epilogue kernels against their references: compiled on a GPU, under the Triton
interpreter on the CPU (the `device` fixture).

Tolerances: float32, float16 and float64 are bit-identical (one rounding per reference step);
bfloat16 allows one unit in the last place per rounding step, since the interpreter truncates
float32 -> bfloat16 where the reference (and a GPU) rounds to nearest. subpel_igdn takes the
tolerances of test_kernels_gdn.
"""


import pytest
import torch

from nicengine_kernels.dispatch import subpel, subpel_igdn
from nicengine_kernels.subpel_reference import (
    pixel_shuffle,
    subpel_igdn_reference,
    subpel_reference,
)

pytestmark = pytest.mark.usefixtures("kernels_on")

GDN_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
BF16_ULP = 2.0**-7


@pytest.mark.parametrize("shape, r", [((1, 8, 3, 5), 2), ((2, 18, 4, 1), 3), ((1, 4, 1, 1), 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_reference_pixel_shuffle_is_torchs(shape, r, dtype):
    y = torch.randn(shape).to(dtype)
    assert torch.equal(pixel_shuffle(y, r), torch.nn.functional.pixel_shuffle(y, r))
    y = y.contiguous(memory_format=torch.channels_last)  # as bfloat16 autocast leaves it
    assert torch.equal(pixel_shuffle(y, r), torch.nn.functional.pixel_shuffle(y, r))


def _assert_written(out, poisoned):
    assert [t.data_ptr() for t in poisoned] == [out.data_ptr()]


def _gdn_params(c, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    beta = 0.5 + torch.rand(c, generator=g)
    gamma = torch.rand(c, c, generator=g) * 0.5 / c
    return beta.to(device, dtype), gamma.to(device, dtype)


# (B, C, H, W, r): odd sizes; widths over one block (128) and rows over one block; r = 3; r = 1
# (no shuffle: bias and LeakyReLU of a plain convolution, as in Cheng et al.'s h_s).
SUBPEL_SHAPES = [(1, 3, 5, 7, 2), (2, 4, 9, 70, 2), (1, 2, 3, 5, 3), (2, 3, 5, 7, 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("lrelu", [False, True])
@pytest.mark.parametrize("shape", SUBPEL_SHAPES)
def test_subpel_matches_reference(shape, lrelu, dtype, device, poisoned):
    b, c, h, w, r = shape
    g = torch.Generator().manual_seed(1)
    y = torch.randn(b, c * r * r, h, w, generator=g).to(device, dtype)
    bias = torch.randn(c * r * r, generator=g).to(device, dtype)
    out = subpel(y, bias, r, lrelu)
    _assert_written(out, poisoned)
    expected = subpel_reference(y, bias, r, lrelu)
    if dtype == torch.bfloat16:
        torch.testing.assert_close(out, expected, rtol=2 * BF16_ULP, atol=1e-6)
    else:
        assert torch.equal(out, expected)


# Channels: the smallest dot block (16), partial blocks (24, 80), two blocks, one partial (160).
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("b, c, h, w",
                         [(1, 16, 5, 7), (2, 24, 3, 41), (1, 80, 6, 5), (1, 160, 2, 3)])
def test_subpel_igdn_matches_reference(b, c, h, w, dtype, device, poisoned):
    g = torch.Generator().manual_seed(2)
    y = torch.randn(b, c * 4, h, w, generator=g).to(device, dtype)
    bias = (0.1 * torch.randn(c * 4, generator=g)).to(device, dtype)
    beta, gamma = _gdn_params(c, dtype, device)
    out = subpel_igdn(y, bias, 2, beta, gamma)
    _assert_written(out, poisoned)
    expected = subpel_igdn_reference(y, bias, 2, beta, gamma)
    torch.testing.assert_close(out, expected, rtol=GDN_TOL[dtype], atol=GDN_TOL[dtype])


def test_poison_catches_skipped_elements(device, launch_one_short):
    """A launch one block short along each axis leaves NaN behind, and the comparison fails."""
    from nicengine_kernels import subpel as subpel_triton

    launch_one_short(subpel_triton)
    y, bias = torch.randn(1, 4 * 4, 9, 70, device=device), torch.randn(16, device=device)
    out = subpel(y, bias, 2)
    assert out.isnan().any()
    with pytest.raises(AssertionError):
        torch.testing.assert_close(out, subpel_reference(y, bias, 2))


def test_modules_use_the_kernels(device, poisoned):
    """SubpelConv's forward reaches the kernels without a gradient and matches the reference."""
    from engine.models.layers import SubpelConv

    torch.manual_seed(3)
    x = torch.randn(1, 8, 5, 6, device=device)
    for act in ("igdn", "lrelu", None):
        layer = SubpelConv(8, 16, act=act).to(device)
        with torch.no_grad():
            out = layer(x)
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("NIC_KERNELS", "reference")
                expected = layer(x)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert len(poisoned) == 3
