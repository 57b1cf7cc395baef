import pytest
import torch

import engine.models.strips as strips
from engine.models import MeanScaleHyperprior, ModelConfig
from engine.models.layers import GDN, SubpelConv


def test_shapes(tiny_model):
    x = torch.rand(2, 3, 128, 192)
    out = tiny_model(x, noise=False)
    assert out["x_hat"].shape == x.shape
    y_lik, z_lik = out["likelihoods"]
    assert y_lik.shape == (2, 24, 8, 12) and z_lik.shape == (2, 16, 2, 3)
    assert tiny_model.pass_shapes(128, 192) == [(16, 2, 3), (24, 8, 12)]
    assert tiny_model.pass_shapes(65, 1) == [(16, 2, 1), (24, 8, 4)]
    scales, means, _ = tiny_model.hyper_decode(torch.zeros(1, 16, 2, 3))
    assert scales.shape == means.shape == (1, 24, 8, 12) and scales.dtype == torch.float64


def test_subpel_matches_conv_then_shuffle():
    layer = SubpelConv(4, 5, r=2, act="lrelu")
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(2, 4, 7, 9)
    expected = torch.nn.functional.leaky_relu(
        torch.nn.functional.pixel_shuffle(layer.conv(x) + layer.bias.view(1, -1, 1, 1), 2), 0.01)
    assert torch.allclose(layer(x), expected, atol=1e-6)
    assert layer(x).shape == (2, 5, 14, 18)


def test_gdn_and_igdn():
    gdn, igdn = GDN(6), GDN(6, inverse=True)
    x = torch.randn(1, 6, 5, 5)
    beta, gamma = gdn.effective_params()
    assert torch.all(beta > 0) and torch.all(gamma >= 0)
    norm = torch.sqrt(beta.view(1, -1, 1, 1) + torch.einsum("ij,bjhw->bihw", gamma, x * x))
    assert torch.allclose(gdn(x), x / norm, atol=1e-6)
    assert torch.allclose(igdn(x), x * norm, atol=1e-5)


@pytest.mark.parametrize("h", [320, 384])
def test_strips_give_the_same_result(tiny_model, monkeypatch, h):
    x = torch.rand(1, 3, h, 192)
    with torch.inference_mode():
        y_full = tiny_model.g_a(x)
        x_full = tiny_model.g_s(y_full).clamp(0, 1)
        z_hat = torch.round(tiny_model.h_a(y_full))
        hyper_full = tiny_model.hyper_decode(z_hat)
        # Strips of 4 latent rows: several for g_a and g_s, two for h_s (5 or 6 rows of z).
        monkeypatch.setattr(strips, "TILE_PIXELS", 4 * 16 * 192)
        y_strips, _ = tiny_model.analyze(x)
        x_strips = tiny_model.synthesize(y_full)
        hyper_strips = tiny_model.hyper_decode(z_hat)
    assert torch.allclose(y_full, y_strips, atol=1e-5)
    assert torch.allclose(x_full, x_strips, atol=1e-5)
    for full, part in zip(hyper_full, hyper_strips, strict=True):
        assert torch.allclose(full, part, rtol=1e-12, atol=1e-12)


def test_state_dict_has_no_derived_state(tiny_model):
    tiny_model.tables()
    tiny_model.hyper_decode(torch.zeros(1, 16, 1, 1))
    keys = MeanScaleHyperprior(ModelConfig(16, 24)).state_dict().keys()
    assert tiny_model.state_dict().keys() == keys
