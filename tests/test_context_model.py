"""The joint autoregressive kind (engine/models/context.py): wavefront order, exact integer
entropy parameters, coding through the codec, and CompressAI's mbt2018 imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import Codec, CodecError
from engine.metrics import psnr
from engine.models import ContextConfig, JointAutoregressive, ModelInfo
from engine.models.integer_context import (
    CONTEXT_TAPS,
    wavefront_counts,
    wavefront_positions,
    wavefront_steps,
)
from engine.refine import Refine
from engine.zoo import fingerprint, import_compressai, load_weights
from tests.compressai_reference import compressai_or_skip
from tests.conftest import check_bfloat16_round_trip, smooth_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model() -> JointAutoregressive:
    torch.manual_seed(0)
    m = JointAutoregressive(ContextConfig(N=16, M=24)).eval().requires_grad_(False)
    m.attach_integer_hyper(m.calibrate(torch.stack([smooth_image(128, 192, s)
                                                    for s in range(2)])))
    m.info = ModelInfo(fingerprint(m))
    return m


@pytest.mark.parametrize("h, w", [(1, 1), (1, 7), (5, 1), (4, 6), (32, 48)])
def test_wavefront_visits_every_position_once_after_its_context(h, w):
    step_of = torch.full((h, w), -1)
    for t in range(wavefront_steps(h, w)):
        rows, cols = wavefront_positions(h, w, t)
        assert (step_of[rows, cols] == -1).all()
        step_of[rows, cols] = t
    assert (step_of >= 0).all()
    assert wavefront_counts(h, w) == [int((step_of == t).sum()) for t in range(step_of.max() + 1)]
    for r in range(h):
        for c in range(w):
            for dy, dx in CONTEXT_TAPS:  # the neighbours the context reads
                rr, cc = r + dy - 2, c + dx - 2
                if 0 <= rr < h and 0 <= cc < w:
                    assert step_of[rr, cc] < step_of[r, c]
    assert wavefront_steps(32, 48) == 141  # a Kodak image's latent: 141 steps, not 1536


def _parallel_indexes(model, encoded, y_fixed, z_hat) -> torch.Tensor:
    """Every position's table index recomputed at once from the final y_hat: equal to the
    wavefront's only if every step saw exactly its decoded neighbours."""
    net = model.integer_hyper
    wave = net.wavefront(net(z_hat))
    wave.taps[:, :, 2:-2, 2:-2] = net.to_int8(y_fixed)
    h, w = y_fixed.shape[2:]
    out = []
    for t in range(wave.steps):  # the same layers, fed from the complete y_hat
        _, scales, _ = wave.step(t)
        out.append(model.entropy_y.indexes(scales.double() / 256, net.scale_bounds("cpu"))
                   .flatten(1) + model.config.N)
    return torch.cat(out, 1)


def test_wavefront_equals_a_parallel_pass_over_the_decoded_latents(model):
    x = smooth_image(128, 192, 7)[None]
    latents = model.analyze(model.pad(x))
    encoded = model.encode_latents(latents, 0)
    z_hat = model.entropy_z.dequantize(encoded.symbols[0].view(1, 16, 2, 3))
    net = model.integer_hyper
    wave = net.wavefront(net(z_hat))
    for t in range(wave.steps):
        _, _, means = wave.step(t)
        wave.put(t, encoded.symbols[t + 1].view(means.shape), means)
    expected = torch.cat(encoded.indexes[1:], 1)
    assert torch.equal(_parallel_indexes(model, encoded, wave.y_fixed, z_hat), expected)


def test_round_trip_sizes_batches_and_determinism(model):
    codec = Codec(weights=model)
    images = [smooth_image(100, 150, 1), smooth_image(64, 64, 2), smooth_image(1, 1, 3),
              smooth_image(70, 3, 4)]
    streams = codec.compress_batch(images)
    assert streams == [codec.compress(x) for x in images]
    decoded = codec.decompress_batch(streams)
    for x, d, s in zip(images, decoded, streams, strict=True):
        assert d.shape == x.shape
        assert torch.allclose(d, codec.decompress(s), atol=1e-5)
    torch.set_num_threads(1)
    try:
        assert codec.compress(images[0]) == streams[0]
    finally:
        torch.set_num_threads(2)


def test_same_stream_and_image_with_every_kernel_backend(model, monkeypatch):
    codec = Codec(weights=model)
    x = smooth_image(64, 128, 5)
    data = codec.compress(x)
    image = codec.decompress(data)
    for mode in ("reference", "triton"):  # triton: the kernels under the interpreter
        monkeypatch.setenv("NIC_KERNELS", mode)
        assert codec.compress(x) == data, mode
        assert torch.allclose(codec.decompress(data), image, atol=1e-5), mode


def test_damaged_streams_are_codec_errors(model):
    codec = Codec(weights=model)
    data = codec.compress(smooth_image(64, 64, 6))
    for bad in (data[:-3], data[:20], data[:-1] + bytes([data[-1] ^ 1])):
        with pytest.raises(CodecError):
            codec.decompress(bad)


def test_weights_without_their_integer_context_model(model):
    bare = JointAutoregressive(model.config).eval().requires_grad_(False)
    bare.load_state_dict(model.state_dict())
    bare.info = model.info
    with pytest.raises(ValueError, match="integer context model"):
        Codec(weights=bare).compress(smooth_image(64, 64))
    data = Codec(weights=model).compress(smooth_image(64, 64))
    with pytest.raises(CodecError, match="integer"):
        Codec(weights=bare).decompress(data)


def test_refinement_codes_fewer_or_equal_bits_for_the_same_decoder(model):
    codec = Codec(weights=model)
    x = smooth_image(64, 64, 8)
    refined = codec.compress(x, refine=Refine(iterations=3, lam=0.01))
    assert codec.decompress(refined).shape == x.shape


# --- CompressAI's mbt2018, cheng2020-anchor and cheng2020-attn ---------------------------------

CONTEXT_ARCHS = ["mbt2018", "cheng2020-anchor", "cheng2020-attn"]


@pytest.fixture(scope="module", params=CONTEXT_ARCHS)
def imported(request, tmp_path_factory):
    """(CompressAI's model with random weights, ours imported from its training checkpoint, the
    weights file)."""
    compressai_or_skip()
    from compressai.zoo import image_models

    arch = request.param
    torch.manual_seed(1)
    net = image_models[arch](quality=1, pretrained=False)
    net = type(net)(N=16) if arch.startswith("cheng") else type(net)(N=16, M=24)
    net.eval().update(force=True)
    folder = tmp_path_factory.mktemp(arch)
    torch.save({"epoch": 3, "state_dict": net.state_dict()}, folder / "ckpt.pth.tar")
    ours = import_compressai(folder / "ckpt.pth.tar", folder / "w.safetensors", arch, quality=3)
    return net, ours, folder / "w.safetensors"


def test_imported_models_compute_compressais_networks(imported):
    net, ours, _ = imported
    x = smooth_image(128, 128, 9)[None]
    with torch.no_grad():
        y = net.g_a(x)
        assert torch.allclose(ours.g_a(x), y, atol=1e-4, rtol=1e-4)
        median = net.entropy_bottleneck._get_medians()
        z_hat = torch.round(net.h_a(y) - median) + median
        y_hat = torch.round(y)
        theirs = net.entropy_parameters(torch.cat([net.h_s(z_hat), net.context_prediction(
            y_hat)], 1)).chunk(2, 1)
        for a, b in zip(ours.float_params(z_hat, y_hat), theirs, strict=True):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
        assert torch.allclose(ours.g_s(y_hat), net.g_s(y_hat), atol=1e-4, rtol=1e-4)


def test_imported_models_decode_like_compressai(imported):
    net, _, path = imported
    x = smooth_image(128, 192, 10)[None]
    with torch.no_grad():
        out = net.compress(x)
        theirs = net.decompress(out["strings"], out["shape"])["x_hat"].clamp(0, 1)
    codec = Codec(weights=path)
    mine = codec.decompress(codec.compress(x))[None]
    assert abs(float(psnr(mine, x)) - float(psnr(theirs, x))) < 0.05
    assert load_weights(path).integer_hyper is not None


def test_identical_latents_under_another_isa_and_one_thread(imported, tmp_path):
    """Encoded here (AVX2 or better, 2 threads), decoded in a fresh process with the generic ISA
    and one thread: the same y_hat, bit for bit (it fixes every symbol and every mean)."""
    _, _, path = imported
    data = Codec(weights=path).compress(smooth_image(128, 128, 11))
    (tmp_path / "s.nic").write_bytes(data)
    script = (
        "import hashlib, sys\n"
        "from engine import Codec\n"
        "from engine.models import JointAutoregressive as J\n"
        "seen, synthesize = [], J.synthesize\n"
        "J.synthesize = lambda self, y: (seen.append(y), synthesize(self, y))[1]\n"
        "Codec(weights=sys.argv[1]).decompress(open(sys.argv[2], 'rb').read())\n"
        "print(hashlib.sha256(seen[0].numpy().tobytes()).hexdigest())\n")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
           "OMP_NUM_THREADS": "1"}
    runs = [subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "s.nic")],
                           cwd=ROOT, env=e, capture_output=True, text=True, check=True).stdout
            for e in (os.environ, env)]
    assert runs[0] == runs[1] and len(runs[0].strip()) == 64


def test_bfloat16_transforms_leave_the_context_model_exact(model):
    check_bfloat16_round_trip(model, smooth_image(64, 96))
