"""The quantization rectifier (engine/models/rectifier.py, engine/train/rectify.py): a second
decoder of the same streams; the header says the weights have one; phase 2 of soft-to-predictive
training leaves the encoder and the streams alone."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from engine import Codec, CodecError, compress, format, zoo
from engine.cli import main as cli_main
from engine.models import (
    ChannelConditional,
    ChannelConfig,
    CodingModel,
    ContextConfig,
    JointAutoregressive,
    MeanScaleHyperprior,
    ModelConfig,
    ModelInfo,
)
from engine.models.factorized_prior import FactorizedPrior
from engine.models.integer_hyper import FRAC_BITS
from engine.models.rectifier import RectifiedDecoder, Rectifier, RectifierConfig
from engine.models.scale_hyperprior import ScaleHyperprior
from engine.train.__main__ import main as train_main
from engine.train.rectify import coded_crops, held_out_psnr, search_alpha, train_phase2
from tests.conftest import smooth_image

IMAGE = smooth_image(70, 90, seed=3)


@pytest.fixture(scope="module")
def images(train_images) -> Path:
    return train_images


def _model() -> MeanScaleHyperprior:
    torch.manual_seed(0)
    m = MeanScaleHyperprior(ModelConfig(N=16, M=24)).eval().requires_grad_(False)
    for layer, gain in ((m.g_a[-1], 40), (m.h_a[-1], 10), (m.h_s[-1], 20)):
        layer.weight.mul_(gain)  # a trained model's latent ranges
        layer.bias.mul_(gain)
    m.info = ModelInfo(zoo.fingerprint(m), lam=0.01)
    return m


def _decoder(model: CodingModel) -> RectifiedDecoder:
    """A rectified decoder whose rectifier does something (its last layer is not zero)."""
    torch.manual_seed(1)
    decoder = RectifiedDecoder.of(model, width=16, blocks=1)
    torch.nn.init.normal_(decoder.rectifier.tail.weight, std=0.05)
    return decoder.eval().requires_grad_(False)


def _imported(arch: str) -> CodingModel:
    """A small model of the kind `engine.zoo.import_compressai` makes of CompressAI's `arch`,
    with the integer context model the context kinds code with."""
    torch.manual_seed(0)
    if arch == "bmshj2018-factorized":
        m = FactorizedPrior(ModelConfig(N=16, M=24))
    elif arch == "bmshj2018-hyperprior":
        m = ScaleHyperprior(ModelConfig(N=16, M=24))
    else:
        m = JointAutoregressive(ContextConfig(16, 24 if arch == "mbt2018" else 16, arch))
    m.eval().requires_grad_(False)
    if isinstance(m, JointAutoregressive):
        m.attach_integer_hyper(m.calibrate(torch.stack([smooth_image(128, 192, s)
                                                        for s in range(2)])))
    m.info = ModelInfo(zoo.fingerprint(m))
    return m


@pytest.fixture(scope="module")
def plain() -> MeanScaleHyperprior:
    return _model()


@pytest.fixture(scope="module")
def rectified(plain) -> MeanScaleHyperprior:
    m = copy.deepcopy(plain)
    m.info = plain.info
    m.attach_rectifier(_decoder(plain))
    return m


@pytest.mark.parametrize("shape", [(1, 24, 4, 5), (3, 24, 7, 2)])
def test_rectifier_shapes_and_zero_start(shape):
    y_hat = torch.randn(shape).round()
    means, scales = torch.randn(shape), torch.rand(shape) + 0.1
    qr = Rectifier(24, width=16, blocks=2)
    assert torch.equal(qr(y_hat, means, scales), y_hat)  # untrained: the identity
    decoder = RectifiedDecoder(RectifierConfig(16, 24, 16, 2))
    assert decoder(y_hat, means, scales).shape == (shape[0], 3, 16 * shape[2], 16 * shape[3])


def test_same_streams_with_and_without_a_rectifier(plain, rectified):
    with_qr = Codec(weights=rectified).compress(IMAGE)
    without = Codec(weights=plain).compress(IMAGE)
    (h1, s1), (h2, s2) = format.unpack(with_qr), format.unpack(without)
    assert [bytes(s) for s in s1] == [bytes(s) for s in s2]
    assert h1.rectifier and not h2.rectifier
    assert h1 == format.Header(**{**h2.__dict__, "rectifier": True})


def test_decoding_with_and_without_the_rectifier(rectified):
    codec = Codec(weights=rectified)
    data = codec.compress(IMAGE)
    latents = rectified.analyze(rectified.pad(IMAGE[None]))
    y_hat, means, scales = rectified.decoder_latents(latents)
    expected_qr = rectified.rectifier.synthesize(y_hat, means, scales)[0, :, :70, :90]
    expected_plain = rectified.synthesize(y_hat)[0, :, :70, :90]
    assert torch.allclose(codec.decompress(data), expected_qr, atol=1e-5)
    assert torch.allclose(codec.decompress(data, rectifier=False), expected_plain, atol=1e-5)
    assert (expected_qr - expected_plain).abs().max() > 1e-3
    both = codec.decompress_batch([data, data], rectifier=False)
    assert all(torch.allclose(x, expected_plain, atol=1e-5) for x in both)


def test_a_stream_asking_for_a_rectifier_the_weights_lack(plain, rectified):
    data = Codec(weights=rectified).compress(IMAGE)
    codec = Codec(weights=plain)
    with pytest.raises(CodecError, match="quantization rectifier, which these weights lack"):
        codec.decompress(data)
    assert codec.decompress(data, rectifier=False).shape == IMAGE.shape


def test_the_companion_file_belongs_to_its_weights(plain, rectified, tmp_path):
    weights = tmp_path / "w.safetensors"
    zoo.save_weights(plain, weights, storage="float32")
    assert zoo.load_weights(weights).rectifier is None
    zoo.save_rectifier(rectified.rectifier, zoo.load_weights(weights),
                       zoo.companion(weights, "rectifier"), alpha=1.0)
    loaded = zoo.load_weights(weights)
    assert loaded.rectifier.info == {"alpha": 1.0}
    assert loaded.info.fingerprint == zoo.load_weights(weights).info.fingerprint
    data = Codec(weights=str(weights)).compress(IMAGE)
    assert torch.allclose(Codec(weights=rectified).decompress(data),
                          Codec(weights=str(weights)).decompress(data), atol=1e-2)  # float16
    with pytest.raises(ValueError, match="made for weights"):
        zoo.load_rectifier(zoo.companion(weights, "rectifier"), loaded.info.fingerprint ^ 1)
    with pytest.raises(ValueError, match="not a rectifier companion"):
        zoo.load_rectifier(weights, 0)  # a weights file, not a companion


@pytest.mark.parametrize("arch", ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018",
                                  "cheng2020-attn"])
def test_every_imported_kind_decodes_with_its_companion(arch, tmp_path):
    weights = tmp_path / "w.safetensors"
    zoo.save_weights(_imported(arch), weights, storage="float32")
    model = zoo.load_weights(weights)
    if isinstance(model, JointAutoregressive):
        zoo.save_integer_hyper(_imported(arch).integer_hyper, model,
                               zoo.companion(weights, "integer_hyper"))
    zoo.save_rectifier(_decoder(model), model, zoo.companion(weights, "rectifier"))
    model = zoo.load_weights(weights)
    codec = Codec(weights=str(weights))
    data = codec.compress(IMAGE)
    assert format.unpack(data)[0].rectifier
    y_hat, means, scales = model.decoder_latents(model.analyze(model.pad(IMAGE[None])))
    expected_qr = model.rectifier.synthesize(y_hat, means, scales)[0, :, :70, :90]
    expected_plain = model.synthesize(y_hat)[0, :, :70, :90]
    assert torch.allclose(codec.decompress(data), expected_qr, atol=1e-5)
    assert torch.allclose(codec.decompress(data, rectifier=False), expected_plain, atol=1e-5)
    assert (expected_qr - expected_plain).abs().max() > 1e-3


def test_the_wavefront_gives_every_decoded_position_its_own_step_params():
    model = _imported("mbt2018")
    y, z = model.analyze(model.pad(IMAGE[None]))
    _, wave = model._code(y, z)
    scales, means = wave.decoded_params()
    for t in range(wave.steps):
        rows, cols = wave.positions(t)
        _, step_scales, step_means = wave.step(t)  # the same layers, the same taps
        assert torch.equal(scales[:, :, rows, cols], step_scales)
        assert torch.equal(means[:, :, rows, cols], step_means)
    assert ((wave.y_fixed - means) % (1 << FRAC_BITS) == 0).all()  # y_hat - means: symbols


def test_decoder_only_is_phase_two_without_the_rectifier(images):
    model = _model()
    crops = coded_crops(model, images, 8, 64, seed=0)
    decoder = train_phase2(model, 0.01, crops, alpha=1.0, steps=3, batch=2, decoder_only=True)
    assert decoder.rectifier is None and decoder.config.decoder_only
    assert not torch.equal(decoder.g_s[0].conv.weight, model.g_s[0].conv.weight)  # it trained
    model.attach_rectifier(decoder)
    codec = Codec(weights=model)
    data = codec.compress(IMAGE)
    y_hat, _, _ = model.decoder_latents(model.analyze(model.pad(IMAGE[None])))
    assert torch.allclose(codec.decompress(data), decoder.g_s.synthesize(y_hat)[0, :, :70, :90],
                          atol=1e-5)
    assert torch.allclose(codec.decompress(data, rectifier=False),
                          model.synthesize(y_hat)[0, :, :70, :90], atol=1e-5)


def test_g_s_learns_at_its_own_rate(images):
    model = _model()
    crops = coded_crops(model, images, 8, 64, seed=0)
    decoder = train_phase2(model, 0.01, crops, alpha=1.0, steps=2, batch=2, g_s_lr=0.0,
                           width=16, blocks=1)
    assert torch.equal(decoder.g_s[0].conv.weight, model.g_s[0].conv.weight)
    assert decoder.rectifier.tail.weight.abs().max() > 0  # the rectifier trained


def test_kinds_without_a_rectifier_refuse_one(plain):
    model = ChannelConditional(ChannelConfig(N=16, M=24, slices=2, hidden=8))
    with pytest.raises(ValueError, match="do not decode with a quantization rectifier"):
        model.attach_rectifier(_decoder(plain))


def test_phase_two_leaves_the_encoder_and_the_streams_unchanged(images):
    model = _model()
    before = Codec(weights=model).compress(IMAGE)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    crops = coded_crops(model, images, 8, 64, seed=0)
    decoder = train_phase2(model, 0.01, crops, alpha=1.0, steps=3, batch=2, width=16, blocks=1)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert not torch.equal(decoder.g_s[0].conv.weight, model.g_s[0].conv.weight)  # it trained
    model.attach_rectifier(decoder)
    after = Codec(weights=model).compress(IMAGE)
    assert [bytes(s) for s in format.unpack(before)[1]] == [bytes(s) for s in
                                                           format.unpack(after)[1]]
    assert held_out_psnr(decoder, model, crops) > 0


def test_alpha_search_extends_the_grid_at_its_end(images, monkeypatch):
    model = _model()
    crops = coded_crops(model, images, 4, 64, seed=0)
    # The held-out PSNR rises with alpha: the search goes up a factor 10 twice.
    monkeypatch.setattr("engine.train.rectify.held_out_psnr", lambda d, m, c: d.alpha)
    monkeypatch.setattr("engine.train.rectify.train_phase2",
                        lambda m, lam, t, alpha, steps, **o: type("D", (), {"alpha": alpha}))
    runs = search_alpha(model, 0.01, crops, crops, 1, alphas=(0.0, 1.0), extend=2)
    assert [r["alpha"] for r in runs] == [0.0, 1.0, 10.0, 100.0]
    monkeypatch.setattr("engine.train.rectify.held_out_psnr", lambda d, m, c: -d.alpha)
    runs = search_alpha(model, 0.01, crops, crops, 1, alphas=(0.0, 1.0), extend=2)
    assert [r["alpha"] for r in runs] == [0.0, 1.0]  # the best is 0: nothing to extend


def test_rectify_command_and_the_cli(images, tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    zoo.save_weights(_model(), weights, storage="float32")
    train_main(["rectify", str(weights), "--data", str(images), "--steps", "2",
                "--alphas", "0", "1", "--search-steps", "1", "--crops", "8", "--batch", "2",
                "--lam", "0.01"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["alpha"] for r in report["search"]][:2] == [0.0, 1.0]
    assert report["gain_db"] == report["psnr_with"] - report["psnr_without"]
    assert zoo.load_weights(weights).rectifier is not None
    png, nic = tmp_path / "in.png", tmp_path / "out.nic"
    Image.fromarray((IMAGE.permute(1, 2, 0) * 255).byte().numpy()).save(png)
    cli_main(["compress", str(png), str(nic), "--weights", str(weights)])
    cli_main(["info", str(nic)])
    assert "quantization rectifier" in capsys.readouterr().out
    for extra in ([], ["--no-rectifier"]):
        cli_main(["decompress", str(nic), str(tmp_path / "x.png"), "--weights", str(weights),
                  *extra])
    assert Image.open(tmp_path / "x.png").size == (90, 70)


def test_rectify_decoder_only_command(images, tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    zoo.save_weights(_imported("bmshj2018-factorized"), weights, storage="float32")
    train_main(["rectify", str(weights), "--decoder-only", "--data", str(images), "--steps", "2",
                "--crops", "8", "--batch", "2", "--lam", "0.01"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["decoder_only"] and report["alpha"] == 0 and "search" not in report
    decoder = zoo.load_weights(weights).rectifier
    assert decoder.rectifier is None and decoder.config.decoder_only


def test_rectify_refuses_a_kind_without_one(images, tmp_path):
    weights = tmp_path / "c.safetensors"
    zoo.save_weights(ChannelConditional(ChannelConfig(N=16, M=24, slices=2, hidden=8)), weights)
    with pytest.raises(SystemExit, match="do not decode with a quantization rectifier"):
        train_main(["rectify", str(weights), "--data", str(images), "--steps", "1"])


def test_decompress_dir_takes_the_choice(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a.nic").write_bytes(compress(IMAGE))
    cli_main(["decompress-dir", str(src), str(dst), "--no-rectifier", "--workers", "1"])
    assert Image.open(dst / "a.png").size == (90, 70)
