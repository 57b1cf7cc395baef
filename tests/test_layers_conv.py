"""engine.models.layers.Conv2d: the NNPACK paths against torch's own convolution."""

import pytest
import torch
import torch.nn.functional as F

from engine.models import layers
from engine.models.layers import conv, space_to_depth, space_to_depth_weight

needs_nnpack = pytest.mark.skipif(not layers._NNPACK, reason="torch was built without NNPACK")


@pytest.mark.parametrize("shape", [(1, 3, 4, 6), (2, 5, 7, 9), (1, 1, 1, 1), (3, 2, 6, 1)])
def test_space_to_depth_is_pixel_unshuffle_of_the_zero_padded_input(shape):
    x = torch.randn(shape)
    padded = F.pad(x, (0, shape[3] % 2, 0, shape[2] % 2))
    assert torch.equal(space_to_depth(x), F.pixel_unshuffle(padded, 2))
    x = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(space_to_depth(x), F.pixel_unshuffle(padded, 2))


@pytest.mark.parametrize("size", [(8, 10), (9, 7), (1, 1)])
def test_space_to_depth_weight_gives_the_strided_convolution_exactly(size):
    # Small integers: every product and sum exact in float64, whatever the order.
    x = torch.randint(-8, 9, (2, 3, *size), dtype=torch.float64)
    w = torch.randint(-8, 9, (4, 3, 5, 5), dtype=torch.float64)
    expected = F.conv2d(x, w, stride=2, padding=2)
    got = F.conv2d(space_to_depth(x), space_to_depth_weight(w), padding=1)
    assert torch.equal(got, expected)


@needs_nnpack
@pytest.mark.parametrize("batch, c_in, c_out, h, w", [
    (1, 128, 64, 128, 128), (1, 130, 64, 131, 129), (2, 128, 96, 129, 130),
    (1, 192, 192, 127, 200)])
def test_strided_layers_on_large_inputs_run_through_nnpack_and_match_torch(
        batch, c_in, c_out, h, w):
    layer = conv(c_in, c_out).eval()
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(batch, c_in, h, w)
    with torch.no_grad():
        assert layer._nnpack(x)
        got = layer(x)
        expected = F.conv2d(x, layer.weight, layer.bias, stride=2, padding=2)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


@needs_nnpack
def test_small_or_trained_or_other_layers_keep_torchs_convolution():
    layer = conv(128, 64).eval()
    large = torch.randn(1, 128, 128, 128)
    with torch.no_grad():
        assert layer._nnpack(large)
        assert not layer._nnpack(torch.randn(1, 128, 127, 128))  # under 128x128 pixels
        assert not conv(64, 64)._nnpack(torch.randn(1, 64, 128, 128))  # few input channels
        assert not conv(128, 32)._nnpack(large)  # few outputs
        assert not conv(128, 64, 3, 2)._nnpack(large)  # 3x3 stride 2
        assert not layer._nnpack(large.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not layer._nnpack(large)
    assert not layer._nnpack(large)  # gradients on: training


@needs_nnpack
def test_the_rearranged_weight_follows_the_weight():
    layer = conv(128, 64).eval()
    x = torch.randn(1, 128, 128, 128)
    with torch.no_grad():
        assert layer._nnpack(x)
        first = layer(x)
        assert torch.equal(layer(x), first)
        layer.weight.mul_(2)  # in place: the version counter moves
        assert torch.allclose(layer(x) - layer.bias.view(1, -1, 1, 1),
                              2 * (first - layer.bias.view(1, -1, 1, 1)), atol=1e-4)
        layer.load_state_dict({**layer.state_dict(), "weight": -layer.weight})
        expected = F.conv2d(x, layer.weight, layer.bias, stride=2, padding=2)
        assert torch.allclose(layer(x), expected, atol=1e-4)
    with torch.inference_mode():
        made_here = conv(128, 64).eval()  # inference tensors: no version counter
        assert torch.allclose(made_here(x), F.conv2d(x, made_here.weight, made_here.bias,
                                                     stride=2, padding=2), atol=1e-4)
