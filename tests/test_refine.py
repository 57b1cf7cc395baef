"""Encode-time latent refinement (engine.refine) on a small random-weight model.

The random model is far from any optimum, so a short run at a larger learning rate than the
paper's (0.05 instead of 0.005) is enough to lower the true loss.
"""

import math

import pytest
import torch

import engine
from engine.models import MeanScaleHyperprior, ModelConfig, ModelInfo
from engine.rd import rd_loss
from engine.refine import METHODS, Refine, refine_latents
from engine.zoo import fingerprint
from tests.conftest import smooth_image


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small convolutions run far faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = MeanScaleHyperprior(ModelConfig(N=16, M=24)).eval().requires_grad_(False)
    m.info = ModelInfo(fingerprint(m), lam=0.01)
    return m


@pytest.fixture(scope="module")
def image():
    return smooth_image(40, 72)  # padded to 64 x 128 for the networks


def _reconstruction(model, y, z, h, w):
    """What the standard decoder makes of latents (y, z): the codec's float64 hyper path."""
    z_hat = model.entropy_z.dequantize(model.entropy_z.symbols(z))
    scales, means, _ = model.hyper_decode(z_hat)
    y_hat = (torch.round(y.double() - means) + means).float()
    return model.synthesize(y_hat)[:, :, :h, :w]


def _true_loss(model, x, latents, lam):
    """The codec's R-D loss of latents: its coding passes and what its decoder makes of them."""
    encoded = model.encode_latents(latents, 0)
    x_hat = model.reconstruct(encoded, *x.shape[2:], 0)
    return rd_loss(x_hat, x, encoded.bits.to(x), lam)[0]


def test_temperature_schedule():
    ssl = Refine(method="ssl")
    assert ssl.temperature(0) == 1.0
    assert ssl.temperature(500) == pytest.approx(math.exp(-0.5))
    atanh = Refine(method="atanh")  # SGA: held at 0.5, decaying 700 steps late
    assert atanh.temperature(0) == atanh.temperature(1300) == 0.5
    assert atanh.temperature(2000) == pytest.approx(math.exp(-1.3))
    custom = Refine(method="linear", tau_max=0.3, c=2e-3, delay=10)
    assert custom.temperature(5) == 0.3
    assert custom.temperature(1010) == pytest.approx(math.exp(-2.0))
    for bad in ({"method": "round"}, {"iterations": -1}, {"lr": 0.0}, {"lam": -1.0}):
        with pytest.raises(ValueError):
            Refine(**bad)


def test_refinement_lowers_true_loss_and_decodes(model, image):
    refine = Refine(method="ssl", iterations=12, lr=0.05)
    (y, z), history = refine_latents(model, image[None], refine)
    assert history.loss.shape == history.bpp.shape == history.psnr.shape == (13, 1)
    assert history.relaxed.shape == (12, 1) and history.tau.shape == (12,)
    best = int(history.best[0])
    assert history.loss[best, 0] == history.loss.min() < history.loss[0, 0]
    assert history.lam == 0.01

    codec = engine.Codec(weights=model, precision="float32")  # the reference below is float32
    plain = codec.decompress(codec.compress(image))
    data = codec.compress(image, refine=refine)
    decoded = codec.decompress(data)
    expected = _reconstruction(model, y, z, *image.shape[1:])[0]
    assert torch.equal(decoded, expected)
    assert not torch.equal(decoded, plain)
    mse = torch.mean((decoded - image) ** 2)
    assert -10 * math.log10(mse) == pytest.approx(float(history.psnr[best, 0]), abs=0.01)


def test_returned_latents_are_the_best_per_image(model):
    """A batch keeps each image's own best latents, and they reproduce the recorded loss; a
    diverging run returns the unrefined latents."""
    x = torch.stack([smooth_image(32, 48, seed=s) for s in (1, 2)])
    latents, history = refine_latents(model, x, Refine(method="noise", iterations=6, lr=0.05))
    loss = _true_loss(model, x, latents, 0.01)
    best = history.loss.gather(0, history.best.view(1, -1))[0]
    torch.testing.assert_close(loss, best)
    torch.testing.assert_close(best, history.loss.min(0).values)

    # Rate-dominated (tiny lambda) with huge steps: every step is worse, or NaN.
    latents, history = refine_latents(model, x[:1], Refine(method="ste", iterations=3, lr=1e4,
                                                           lam=1e-5))
    assert int(history.best[0]) == 0 and not (history.loss[1:] <= history.loss[0]).any()
    for v, v0 in zip(latents, model.analyze(model.pad(x[:1])), strict=True):
        assert torch.equal(v, v0)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs(model, method):
    _, history = refine_latents(model, smooth_image(20, 30)[None],
                                Refine(method=method, iterations=3, lr=0.05, seed=3))
    assert torch.isfinite(history.loss).all() and torch.isfinite(history.relaxed).all()
    assert history.loss.min() <= history.loss[0, 0]


def test_semi_multi_rate(model, image):
    """A refinement lambda other than the model's moves the rate: higher lambda, more bits."""
    bpp = {}
    for lam in (1e-4, 0.1):
        _, history = refine_latents(model, image[None],
                                    Refine(method="ssl", iterations=8, lr=0.05, lam=lam))
        assert history.lam == lam
        bpp[lam] = float(history.at(8)["bpp"][0])
        torch.testing.assert_close(
            history.loss, lam * 255**2 * 10 ** (-history.psnr / 10) + history.bpp, rtol=1e-4,
            atol=1e-4)
    assert bpp[0.1] > bpp[1e-4]


def test_lambda_required_without_model_info(image):
    bare = MeanScaleHyperprior(ModelConfig(N=16, M=24)).eval().requires_grad_(False)
    with pytest.raises(ValueError, match="lam"):
        refine_latents(bare, image[None], Refine(iterations=1))
    _, history = refine_latents(bare, image[None], Refine(iterations=1, lam=0.02))
    assert history.lam == 0.02


def test_time_budget_and_progress(model, image, capsys):
    latents, history = refine_latents(model, image[None],
                                      Refine(iterations=50, time_budget=1e-9, progress=True))
    assert history.steps == 0 and int(history.best[0]) == 0
    for v, v0 in zip(latents, model.analyze(model.pad(image[None])), strict=True):
        assert torch.equal(v, v0)
    refine_latents(model, image[None], Refine(iterations=2, progress=True))
    assert "loss=" in capsys.readouterr().err


def test_engine_compress_forwards_refine(model, image, monkeypatch):
    codec = engine.Codec(weights=model)
    for key in ((engine.DEFAULT_MODEL, 5, "auto"),
                (engine.DEFAULT_MODEL, engine.DEFAULT_QUALITY, "auto")):
        monkeypatch.setitem(engine._codecs, key, codec)
    refine = Refine(method="linear3", iterations=4, lr=0.05)
    data = engine.compress(image, quality=5, refine=refine)
    assert data == codec.compress(image, refine=refine)
    [batch] = engine.compress_batch([image], quality=5, refine=refine)
    assert batch == data
    assert engine.decompress(data).shape == image.shape
