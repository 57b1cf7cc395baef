"""The integer hyper-decoder (engine/models/integer_hyper.py): its outputs are the same integers
whatever the thread count, batch size, CPU ISA or kernel backend; streams say they use it; old
streams keep decoding; its companion file belongs to one weights file."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import Codec, CodecError, format, zoo
from engine.models import MeanScaleHyperprior, ModelConfig, ModelInfo
from engine.models.factorized_prior import FactorizedPrior
from engine.models.integer_hyper import FRAC_BITS, IntegerHyper
from engine.train.__main__ import main as train_main
from engine.train.integerize import integerize
from tests.conftest import smooth_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(train_images) -> Path:
    return train_images


@pytest.fixture(scope="module")
def model(images) -> MeanScaleHyperprior:
    """A small random model with its fine-tuned integer hyper-decoder attached."""
    torch.manual_seed(0)
    m = MeanScaleHyperprior(ModelConfig(N=16, M=24)).eval().requires_grad_(False)
    # Random weights make y, z and h_s's output nearly 0; scale them to a trained model's ranges.
    for layer, gain in ((m.g_a[-1], 40), (m.h_a[-1], 10), (m.h_s[-1], 20)):
        layer.weight.mul_(gain)
        layer.bias.mul_(gain)
    m.info = ModelInfo(zoo.fingerprint(m))
    integer, report = integerize(m, images, steps=20, crops=16, batch=4, lr=1e-5, log=False)
    # Fine-tuning lowers the rate of the integers derived before it (held-out crops).
    assert report["integer"] < report["integer_before"]
    m.attach_integer_hyper(integer)
    return m


def _z_hat(model):
    """z_hat of three 256x320 images: (3, N, 4, 5)."""
    x = torch.stack([smooth_image(256, 320, seed=10 + i) for i in range(3)])
    z = model.analyze(x)[1]
    return model.entropy_z.dequantize(model.entropy_z.symbols(z))


def test_outputs_are_fixed_point_and_close_to_the_float_h_s(model):
    z_hat = _z_hat(model)
    scales, means = model.integer_hyper(z_hat).chunk(2, dim=1)
    assert scales.shape == means.shape == (3, model.config.M, 16, 20)
    assert scales.dtype == torch.float64
    for t in (scales, means):
        assert torch.equal(t, torch.round(t * 2**FRAC_BITS) / 2**FRAC_BITS)
    # Close to the float h_s it was fine-tuned from (20 steps on a random model).
    float_scales, float_means, _ = model.hyper_decode(z_hat)
    for a, b in ((scales, float_scales), (means, float_means)):
        assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.99


def test_same_integers_for_any_batch_size_and_thread_count(model):
    z_hat = _z_hat(model)
    whole = model.integer_hyper(z_hat)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = [model.integer_hyper(z_hat[i : i + 1]) for i in range(3)]
    finally:
        torch.set_num_threads(threads)
    for i, out in enumerate(alone):
        assert torch.equal(out[0], whole[i])


def test_same_integers_with_every_kernel_backend(model, monkeypatch):
    z_hat = _z_hat(model)
    expected = model.integer_hyper(z_hat)
    for mode in ("reference", "triton"):  # triton: the Triton kernel (interpreted on the CPU)
        monkeypatch.setenv("NIC_KERNELS", mode)
        assert torch.equal(model.integer_hyper(z_hat), expected), mode


def test_same_integers_under_another_isa_and_one_thread(model, tmp_path):
    """A fresh process with the generic ISA (ATEN_CPU_CAPABILITY=default, oneDNN's baseline) and
    one thread computes the same bytes."""
    path = tmp_path / "m.int.safetensors"
    zoo.save_integer_hyper(model.integer_hyper, model, path)
    z_hat = _z_hat(model)
    torch.save(z_hat, tmp_path / "z.pt")
    script = (
        "import sys, torch, hashlib\n"
        "from engine.zoo import load_integer_hyper\n"
        f"ih = load_integer_hyper(sys.argv[1], {model.info.fingerprint})\n"
        "print(hashlib.sha256(ih(torch.load(sys.argv[2])).numpy().tobytes()).hexdigest())\n")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "z.pt")],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    expected = model.integer_hyper(z_hat).numpy().tobytes()
    assert out.stdout.strip() == hashlib.sha256(expected).hexdigest()


def test_stream_says_it_uses_the_integer_path_and_round_trips(model):
    x = smooth_image(70, 90)
    codec = Codec(weights=model, device="cpu")
    data = codec.compress(x)
    header, _ = format.unpack(data)
    assert header.integer_fingerprint == model.integer_hyper.fingerprint
    encoded = model.encode_latents(model.analyze(model.pad(x[None])), 0)
    assert encoded.integer
    expected = model.reconstruct(encoded, 70, 90, 0)[0, :, :70, :90]
    assert torch.equal(codec.decompress(data), expected)


def test_float_path_streams_keep_decoding_once_an_integer_path_exists(model):
    x = smooth_image(64, 64, seed=3)
    float_only = copy.deepcopy(model)
    float_only.attach_integer_hyper(None)
    float_only.info = model.info
    old = Codec(weights=float_only, device="cpu").compress(x)
    assert format.unpack(old)[0].integer_fingerprint is None
    both = Codec(weights=model, device="cpu")
    assert torch.equal(both.decompress(old), Codec(weights=float_only).decompress(old))


def test_integer_stream_against_weights_without_that_decoder_is_an_error(model):
    data = Codec(weights=model, device="cpu").compress(smooth_image(64, 64))
    float_only = copy.deepcopy(model)
    float_only.attach_integer_hyper(None)
    float_only.info = model.info
    with pytest.raises(CodecError, match="integer hyper-decoder"):
        Codec(weights=float_only).decompress(data)


def test_companion_file_is_tied_to_its_weights(model, tmp_path):
    weights = tmp_path / "w.safetensors"
    zoo.save_weights(model, weights, storage="float32")
    loaded = zoo.load_weights(weights)
    assert loaded.integer_hyper is None
    companion = zoo.companion(weights, "integer_hyper")
    zoo.save_integer_hyper(model.integer_hyper, loaded, companion)
    loaded = zoo.load_weights(weights)
    assert loaded.integer_hyper.fingerprint == model.integer_hyper.fingerprint
    with pytest.raises(ValueError, match="made for weights"):
        zoo.load_integer_hyper(companion, loaded.info.fingerprint ^ 1)
    companion.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a safetensors"):
        zoo.load_weights(weights)


def test_from_state_rejects_a_foreign_state(model):
    state = dict(model.integer_hyper.state_dict())
    del state["thresholds"]
    with pytest.raises(ValueError, match="not an integer hyper-decoder"):
        IntegerHyper.from_state(state)


def test_in_strips_equals_whole(model, monkeypatch):
    """Large images run h_s in strips of z rows; for the integers that is exact."""
    from engine.models import strips

    z_hat = torch.cat([_z_hat(model)] * 3, dim=2)  # 12 rows of z
    whole = model.hyper_decode(z_hat, integer=True)
    monkeypatch.setattr(strips, "TILE_PIXELS", 4 * 64 * 320)  # strips of 4 rows of z
    parts = model.hyper_decode(z_hat, integer=True)
    assert all(torch.equal(a, b) for a, b in zip(whole, parts, strict=True))


def test_integerize_command_writes_the_companion(model, images, tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    zoo.save_weights(model, weights, storage="float32")  # the float weights only
    train_main(["integerize", str(weights), "--data", str(images), "--steps", "3",
                "--crops", "8"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["integer_cost"] == report["integer"] / report["float64"] - 1
    assert zoo.load_weights(weights).integer_hyper is not None


def test_integerize_refuses_a_kind_without_an_integer_path(images, tmp_path):
    weights = tmp_path / "f.safetensors"
    zoo.save_weights(FactorizedPrior(ModelConfig(N=8, M=8)), weights)
    with pytest.raises(SystemExit, match="do not code with an integer hyper-decoder"):
        train_main(["integerize", str(weights), "--data", str(images), "--steps", "1"])
