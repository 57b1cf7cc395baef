"""The compressive autoencoder (engine/models/cae.py), its Gaussian scale mixture
(engine/entropy/gsm.py), its variable rate by scales and its training (engine/train/cae.py)."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

import engine
from engine import Codec, CodecError, format, zoo
from engine.cli import main as cli
from engine.entropy.cdf import TOTAL
from engine.entropy.gsm import GaussianScaleMixture
from engine.images import save_png
from engine.models.cae import GRID, CaeConfig, ChannelMask, CompressiveAutoencoder, round_ste
from tests.conftest import SHARED, check_bfloat16_round_trip, smooth_image

TINY = CaeConfig(channels=6, width=8, width1=8, mixtures=3, lambdas=(0.002, 0.01, 0.05), base=1)
SHIPPED = zoo.WEIGHTS_DIR / "cae.safetensors"
TRAIN = SHARED / "data" / "train"


@pytest.fixture(scope="module")
def cae() -> CompressiveAutoencoder:
    torch.manual_seed(0)
    model = CompressiveAutoencoder(TINY)
    with torch.no_grad():  # spread the code over a few integers, as a trained f does
        model.f_out.weight.mul_(20)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def cae_file(cae, tmp_path_factory):
    path = tmp_path_factory.mktemp("cae") / "tiny.safetensors"
    zoo.save_weights(cae, path)
    return path


def test_shapes():
    model = CompressiveAutoencoder(TINY)
    x = torch.rand(2, 3, 48, 40)
    assert model.f(x).shape == (2, 6, 6, 5)
    out = model(x, torch.tensor([0, 2]))
    assert out["x_hat"].shape == x.shape
    assert out["likelihoods"][0].shape == (2, 6, 6, 5)
    assert out["lambdas"].tolist() == pytest.approx([0.002, 0.05])
    assert model.pass_shapes(45, 33) == [(6, 6, 5)]


def test_gsm_likelihood_sums_to_one_and_tables_round_trip():
    torch.manual_seed(1)
    gsm = GaussianScaleMixture(2, 6).double().requires_grad_(False)
    gsm.log_weights.normal_()
    n = torch.arange(-400, 401, dtype=torch.float64).view(1, 1, 1, -1).expand(1, 2, 1, -1)
    scale = torch.tensor([0.5, 3.0], dtype=torch.float64).view(1, 2, 1, 1)
    p = gsm.likelihood(n, scale)
    assert p.sum(-1).flatten().tolist() == pytest.approx([1, 1], abs=1e-6)
    # the continuous density integrates to one too (the training bound's density)
    v = torch.linspace(-300, 300, 600001, dtype=torch.float64).view(1, 1, 1, -1)
    q = gsm.density(v.expand(1, 2, 1, -1), scale)
    assert (q.sum(-1) * 1e-3).flatten().tolist() == pytest.approx([1, 1], abs=1e-4)
    tables = gsm.tables(torch.tensor([0, 1]), torch.tensor([0.5, 3.0], dtype=torch.float64))
    for t, c in enumerate((0, 1)):
        size, offset = int(tables.sizes[t]), int(tables.offsets[t])
        freq = np.diff(tables.cdfs[t, : size + 1]) / TOTAL
        values = torch.arange(offset, offset + size - 1, dtype=torch.float64)
        expected = p[0, c, 0, values.long() + 400].numpy()
        assert tables.cdfs[t, size] == TOTAL
        assert np.abs(freq[:-1] - expected).max() < 2e-3  # 16-bit quantization of the pmf


def test_straight_through_rounding():
    v = torch.tensor([0.3, 1.7, -2.6], requires_grad=True)
    z = round_ste(v)
    assert z.tolist() == [0.0, 2.0, -3.0]
    z.sum().backward()
    assert v.grad.tolist() == [1.0, 1.0, 1.0]
    model = CompressiveAutoencoder(TINY)
    out = model(torch.rand(1, 3, 32, 32))
    (out["x_hat"].sum() - torch.log2(out["likelihoods"][0]).sum()).backward()
    assert model.f_in[0].weight.grad.abs().sum() > 0  # through the rounding to the encoder
    assert model.entropy.log_weights.grad.abs().sum() > 0


def test_noise_quantizer_and_unknown_quantizer():
    model = CompressiveAutoencoder(TINY)
    x = torch.rand(1, 3, 16, 16)
    assert model(x, quantizer="noise")["x_hat"].shape == x.shape
    with pytest.raises(ValueError, match="quantizer"):
        model(x, quantizer="soft")


def test_channel_mask_grows_on_plateaus_only():
    mask = ChannelMask(6)
    mask.enabled.fill_(2)
    grew = [mask.observe(loss, window=2, tolerance=0.1, grow=3)
            for loss in (10, 10, 5, 5, 5, 5, 4.9, 4.9)]
    # windows: 10 (improves on inf), 5 (improves), 5 (plateau: +3), 4.9 (plateau: +1, capped)
    assert grew == [False, False, False, False, False, True, False, True]
    assert mask.count == 6
    model = CompressiveAutoencoder(TINY)
    model.mask.enabled.fill_(2)
    y = model.f(torch.rand(1, 3, 16, 16))
    assert y[:, 2:].abs().sum() == 0 and y[:, :2].abs().sum() > 0
    assert model.pass_shapes(16, 16) == [(2, 2, 2)]


def test_scales_interpolate_and_snap_deterministically(cae):
    table = cae.log2_scales.double().numpy()
    for q, expected in ((1, table[0]), (3, table[2]), (1.5, (table[0] + table[1]) / 2),
                        (2.25, 0.75 * table[1] + 0.25 * table[2])):
        assert cae.grid_points(q).tolist() == np.floor(expected * GRID + 0.5).tolist()
    k = cae.grid_points(2.5)
    assert torch.equal(cae.scales(2.5, torch.device("cpu")).flatten(),
                       torch.tensor([2.0 ** (v / GRID) for v in k], dtype=torch.float32))
    assert (cae.grid_points(1) <= k).all() and (k <= cae.grid_points(3)).all()
    fingerprint = cae.tables().fingerprint
    first, count, start = cae.table_layout()
    for q in (1, 1.75, 2.5, 3):  # every quality's grid points have a table; tables are fixed
        assert ((cae.grid_points(q) >= first) & (cae.grid_points(q) < first + count)).all()
    assert cae.tables().fingerprint == fingerprint and len(cae.tables()) == count.sum()
    for q in (0.99, 3.01):
        with pytest.raises(ValueError, match="outside this model's range"):
            cae.grid_points(q)


def test_round_trip_integer_and_fractional_quality(cae):
    x = smooth_image(37, 50)
    sizes = []
    for q in (1, 2, 2.5, 3):
        codec = Codec(q, weights=cae)
        data = codec.compress(x)
        y = codec.decompress(data)
        assert y.shape == x.shape
        assert engine.format.unpack(data)[0].quality == q
        encoded = cae.encode_latents(cae.analyze(cae.pad(x[None])), q)
        assert torch.allclose(y, cae.reconstruct(encoded, 37, 50, q)[0, :, :37, :50], atol=1e-5)
        sizes.append(len(data))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    with pytest.raises(ValueError, match="outside this model's range"):
        Codec(3.5, weights=cae).compress(x)


@pytest.mark.parametrize("h, w", [(1, 1), (8, 40), (30, 3), (16, 16)])
def test_round_trip_of_images_of_a_side_of_16_or_less(cae, h, w):
    """f's reflect padding needs a quarter of the padded side to be at least 3: small sides pad
    to 16, larger ones to multiples of 8 as before (so earlier streams keep their shapes)."""
    codec = Codec(2, weights=cae)
    x = smooth_image(h, w)
    assert codec.decompress(codec.compress(x)).shape == (3, h, w)
    assert [cae.padded(n) for n in (1, 8, 9, 16, 17, 24)] == [16, 16, 16, 16, 24, 24]


def test_decoder_runs_the_fused_subpel_kernels(cae, monkeypatch, device, kernels_on):
    """With every kernel on (the GPU path; interpreted on the CPU) the CAE writes the same bytes
    and decodes through the three fused sub-pixel epilogues to the references' image."""
    from nicengine_kernels import dispatch

    codec = Codec(2.5, device=device, weights=copy.deepcopy(cae).to(device))
    x = smooth_image(24, 32).to(device)
    monkeypatch.setenv("NIC_KERNELS", "reference")
    data, decisions = codec.compress(x), []
    expected = codec.decompress(data)
    decide = dispatch.use_triton
    monkeypatch.setattr(dispatch, "use_triton",
                        lambda *t, **kw: decisions.append(decide(*t, **kw)) or decisions[-1])
    monkeypatch.setenv("NIC_KERNELS", "triton")
    assert codec.compress(x) == data and decisions == []  # the encoder has no kernel to take
    torch.testing.assert_close(codec.decompress(data), expected, rtol=0, atol=1e-5)
    assert decisions == [True] * 3  # g_in, then g_out's two sub-pixel layers


def test_stream_errors(cae, tiny_model):
    x = smooth_image(32, 32)
    data = Codec(2.5, weights=cae).compress(x)
    broken = bytearray(data)
    broken[-3] ^= 0x40
    with pytest.raises(CodecError):
        Codec(weights=cae).decompress(bytes(broken))
    with pytest.raises(CodecError, match="model kind"):
        Codec(weights=tiny_model).decompress(data)
    other = CompressiveAutoencoder(TINY).eval()
    with pytest.raises(CodecError, match="other weights"):
        Codec(weights=other).decompress(data)
    with pytest.raises(CodecError, match="not shipped|no shipped model has"):
        engine.decompress(data)
    header, streams = format.unpack(data)  # a well-formed stream at a quality out of range
    beyond = format.pack(dataclasses.replace(header, quality=cae.rates + 1), list(streams))
    with pytest.raises(CodecError, match="outside its model's range"):
        Codec(weights=cae).decompress(beyond)


def test_cli_round_trip(cae_file, tmp_path, capsys):
    png = tmp_path / "in.png"
    save_png(smooth_image(24, 40), png)
    out, back = tmp_path / "a.nic", tmp_path / "b.png"
    assert cli(["compress", str(png), str(out), "-q", "1.5", "--weights", str(cae_file)]) == 0
    assert cli(["decompress", str(out), str(back), "--weights", str(cae_file)]) == 0
    assert cli(["info", str(out)]) == 0
    assert "(weights not shipped), quality 1.5" in capsys.readouterr().out
    assert cli(["compress", str(png), str(out), "-q", "4", "--weights", str(cae_file)]) == 1
    assert "outside this model's range" in capsys.readouterr().err


def test_shipped_levels_unchanged():
    assert zoo.shipped_qualities("msh") == (1, 2, 3, 4, 5, 6)
    assert zoo.quality_range("msh") is None
    with pytest.raises(ValueError, match="quality levels"):
        zoo.check_quality("msh", 2.5)


@pytest.mark.skipif(not SHIPPED.is_file(), reason="the shipped CAE (engine/weights/"
                    "cae.safetensors) is absent")
def test_shipped_cae_fractional_quality(tmp_path):
    low, high = zoo.quality_range("cae")
    assert high - low >= 3  # at least four trained rates
    assert zoo.shipped_qualities("cae") == tuple(range(int(low), int(high) + 1))
    x = smooth_image(40, 56)
    for q in (low, 2.5):
        data = engine.compress(x, model="cae", quality=q)
        y = engine.decompress(data)
        assert y.shape == x.shape and engine.format.unpack(data)[0].quality == q
        assert -10 * math.log10(float((y - x).square().mean())) > 20
    png, out = tmp_path / "in.png", tmp_path / "a.nic"
    save_png(x, png)
    assert cli(["compress", str(png), str(out), "--model", "cae", "-q", "2.75"]) == 0
    assert cli(["decompress", str(out), str(tmp_path / "b.png")]) == 0
    assert engine.format.unpack(out.read_bytes())[0].quality == 2.75


@pytest.mark.skipif(not TRAIN.is_dir(), reason="needs ../shared/data/train")
def test_training_resumes_exactly_and_scales_phase_trains_scales_only(tmp_path):
    from engine.train.cae import CaeTrainConfig, CaeTrainer, export_cae

    def config(**kw) -> CaeTrainConfig:
        return CaeTrainConfig(channels=6, width=8, width1=8, mixtures=3, lambdas=[0.002, 0.01,
                              0.05], base=1, steps=4, batch=2, crop=32, mask_window=1,
                              mask_grow=2, data=str(TRAIN), channels_last=False, **kw)

    CaeTrainer(tmp_path / "a", config()).run(progress=False)
    CaeTrainer(tmp_path / "b", config()).run(max_steps=2, progress=False)
    b = CaeTrainer(tmp_path / "b")
    b.run(progress=False)
    a = CaeTrainer(tmp_path / "a")
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values(),
                            strict=True):
        assert torch.equal(p, q), name
    assert 2 < a.model.mask.count <= 6
    export_cae(tmp_path / "a", tmp_path / "main.safetensors")
    main = zoo.load_weights(tmp_path / "main.safetensors")
    CaeTrainer(tmp_path / "s", config(phase="scales", init=str(tmp_path / "main.safetensors"),
                                      lr=0.05)).run(progress=False)
    tuned = CaeTrainer(tmp_path / "s").model.state_dict()
    for name, value in main.state_dict().items():
        changed = not torch.equal(value, tuned[name])
        assert changed == (name == "log2_scales"), name
    with pytest.raises(ValueError, match="--init"):
        config(phase="scales")


def test_bfloat16_round_trip(cae):
    check_bfloat16_round_trip(cae, smooth_image(64, 96))
