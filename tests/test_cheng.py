"""Cheng et al. 2020's transforms (engine/models/cheng.py) against CompressAI's own modules, with
CompressAI's tensors converted by `engine.zoo.compressai.cheng_layers`; their strips, halos and
shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.models import strips
from engine.models.cheng import (
    ANALYSIS_HALO,
    HYPER_SYNTHESIS_HALO,
    SYNTHESIS_HALO,
    ChengAnalysis,
    ChengSynthesis,
    cheng_hyper_transforms,
)
from engine.models.integer_hyper import FakeIntegerHyper
from engine.models.layers import SubpelConv
from engine.zoo.compressai import cheng_layers, convert_modules
from tests.compressai_reference import compressai_or_skip

ARCH = {False: "cheng2020-anchor", True: "cheng2020-attn"}


def ours(N: int, attention: bool) -> nn.ModuleDict:
    h_a, h_s = cheng_hyper_transforms(N)
    return nn.ModuleDict({"g_a": ChengAnalysis(N, attention),
                          "g_s": ChengSynthesis(N, attention), "h_a": h_a, "h_s": h_s})


def compressai_model(N: int, attention: bool) -> nn.Module:
    """CompressAI's model with random weights, its GDN parameters moved off their identity-like
    initial values so that a GDN mapped to the wrong layer shows."""
    compressai_or_skip()
    from compressai.models import Cheng2020Anchor, Cheng2020Attention

    torch.manual_seed(N + attention)
    model = (Cheng2020Attention if attention else Cheng2020Anchor)(N=N).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("gdn.beta", "gdn.gamma")):
                p.copy_(p.abs() + 0.2 * torch.rand_like(p))
    return model


def converted(N: int, attention: bool) -> tuple[nn.Module, nn.ModuleDict]:
    ref = compressai_model(N, attention)
    mine = ours(N, attention)
    convert_modules(ref.state_dict(), cheng_layers(attention), mine, ARCH[attention], f"N={N}")
    return ref, mine.eval()


def assert_equal(out: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 rounding: 1e-5 of the output's magnitude."""
    assert out.shape == expected.shape
    assert (out - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize("N", [16, 5])  # 5: odd, so are the attention units' N // 2 = 2 + 1
@pytest.mark.parametrize("attention", [False, True])
@torch.no_grad()
def test_transforms_equal_compressai(attention, N):
    ref, mine = converted(N, attention)
    x = torch.rand(1, 3, 128, 192, generator=torch.Generator().manual_seed(0))
    y = ref.g_a(x)
    assert y.shape == (1, N, 8, 12)
    assert_equal(mine.g_a(x), y)
    assert_equal(mine.g_a.analyze(x), y)
    x_hat = ref.g_s(y)
    assert_equal(mine.g_s(y), x_hat)
    assert_equal(mine.g_s.synthesize(y), x_hat.clamp(0, 1))
    z = ref.h_a(y)
    assert z.shape == (1, N, 2, 3)
    assert_equal(mine.h_a(y), z)
    assert_equal(mine.h_s(z), ref.h_s(z))
    assert mine.h_s(z).shape == (1, 2 * N, 8, 12)


@pytest.mark.parametrize("attention", [False, True])
@torch.no_grad()
def test_strips_equal_the_whole_image(attention, monkeypatch):
    torch.manual_seed(1)
    N = 4
    g_a, g_s = ChengAnalysis(N, attention).eval(), ChengSynthesis(N, attention).eval()
    _, h_s = cheng_hyper_transforms(N)
    x = torch.rand(1, 3, 16 * 20, 64)
    y = g_a.analyze(x)
    y_hat = torch.round(y * 4) / 4
    z_hat = torch.randn(1, N, 20, 2).round()
    whole = (y, g_s.synthesize(y_hat), h_s(z_hat))
    monkeypatch.setattr(strips, "TILE_PIXELS", 4 * 16 * 64)  # strips of 4 latent rows
    parts = (g_a.analyze(x), g_s.synthesize(y_hat),
             strips.in_strips(h_s, z_hat, 1, 4, 2 * N, unit_rows=64, halo=HYPER_SYNTHESIS_HALO))
    for part, full in zip(parts, whole, strict=True):
        assert_equal(part, full)


@pytest.mark.parametrize("transform, attention", [("g_a", False), ("g_a", True), ("g_s", False),
                                                  ("g_s", True), ("h_s", False)])
def test_halos_are_the_receptive_radius(transform, attention):
    """One latent row's gradient reaches the outermost row of its halo and no further: the halo
    is enough and no larger than needed. Positive weights and inputs keep every ReLU open, so
    the gradient reaches everything the row depends on."""
    torch.manual_seed(2)
    f, in_unit, out_unit, halo = {
        "g_a": (ChengAnalysis(4, attention), 16, 1, ANALYSIS_HALO[attention]),
        "g_s": (ChengSynthesis(4, attention), 1, 16, SYNTHESIS_HALO[attention]),
        "h_s": (cheng_hyper_transforms(4)[1], 1, 4, HYPER_SYNTHESIS_HALO)}[transform]
    rows, j = 2 * halo + 5, halo + 2  # latent rows; row j has its halo and more on each side
    with torch.no_grad():
        for p in f.parameters():
            p.abs_()
    x = torch.rand(1, 3 if transform == "g_a" else 4, rows * in_unit, 2 * in_unit,
                   dtype=torch.float64, requires_grad=True)
    f.double()(x)[:, :, j * out_unit:(j + 1) * out_unit].sum().backward()
    reached = (x.grad.abs().sum((0, 1, 3)) > 0).nonzero().flatten() // in_unit  # latent rows
    lo, hi = reached.min().item(), reached.max().item()
    assert j - halo <= lo and hi <= j + halo
    assert lo == j - halo or hi == j + halo


@pytest.mark.parametrize("attention", [False, True])
@torch.no_grad()
def test_shapes_with_odd_channel_counts(attention):
    N = 7
    x = torch.rand(2, 3, 64, 32)
    y = ChengAnalysis(N, attention).eval().analyze(x)
    assert y.shape == (2, N, 4, 2) and y.dtype == torch.float32
    x_hat = ChengSynthesis(N, attention).eval().synthesize(y)
    assert x_hat.shape == (2, 3, 64, 32) and x_hat.min() >= 0 and x_hat.max() <= 1
    h_a, h_s = cheng_hyper_transforms(N)
    z = h_a(y)
    assert z.shape == (2, N, 1, 1)
    assert h_s(z).shape == (2, 2 * N, 4, 4)
    assert [m.conv.out_channels for m in list(h_s)[:4]] == [N, 4 * N, 3 * N // 2, 4 * (3 * N // 2)]


def test_subpel_conv_with_r_1_is_a_plain_convolution():
    layer = SubpelConv(5, 7, r=1, act="lrelu")
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(2, 5, 6, 9)
    with torch.no_grad():
        expected = F.leaky_relu(F.conv2d(x, layer.conv.weight, layer.bias, padding=1), 0.01)
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_h_s_takes_the_integer_hyper_decoder():
    torch.manual_seed(3)
    _, h_s = cheng_hyper_transforms(8)
    z_hat = torch.randn(1, 8, 4, 4).mul(3).round()
    fake = FakeIntegerHyper(h_s, FakeIntegerHyper.calibrate(h_s, z_hat))
    out, expected = fake(z_hat), h_s(z_hat)
    assert out.shape == expected.shape == (1, 16, 16, 16)
    assert (out - expected).abs().max() < 0.05 * expected.abs().max()


@pytest.mark.parametrize("key, shape, message", [
    ("g_s.1.upsample.0.weight", (60, 16, 3, 3),
     r"g_s.1.upsample.0.weight has shape \(60, 16, 3, 3\); a cheng2020-anchor with N=16 needs "
     r"\(64, 16, 3, 3\)"),
    ("h_s.2.0.bias", None, "missing key h_s.2.0.bias"),
    ("g_a.9.weight", (16, 16, 3, 3), "unknown key g_a.9.weight"),
])
def test_a_foreign_tensor_is_a_value_error_naming_its_key(key, shape, message):
    state = compressai_model(16, attention=False).state_dict()
    if shape is None:
        del state[key]
    else:
        state[key] = torch.zeros(shape)
    with pytest.raises(ValueError, match=message):
        convert_modules(state, cheng_layers(False), ours(16, False), ARCH[False], "N=16")
