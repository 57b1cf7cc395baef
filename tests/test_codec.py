"""The codec end to end on a small random-weight model: shapes, determinism, damaged streams."""

import copy
import dataclasses
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from engine import Codec, CodecError, coder, format
from tests.conftest import smooth_image


@pytest.fixture(scope="module")
def codec(tiny_model):
    # float32: the exactness checks below hold on any CPU (tests/test_precision.py covers the
    # bfloat16 path that "auto" picks on CPUs with AVX512_BF16).
    return Codec(weights=tiny_model, precision="float32")


@pytest.mark.parametrize("h, w", [(1, 1), (7, 13), (65, 129), (512, 768)])
def test_any_size_decodes_to_its_shape(codec, h, w):
    x = smooth_image(h, w)
    data = codec.compress(x)
    x_hat = codec.decompress(data)
    assert x_hat.shape == (3, h, w) and x_hat.dtype == torch.float32
    assert float(x_hat.min()) >= 0 and float(x_hat.max()) <= 1


def test_decoding_is_deterministic(codec):
    data = codec.compress(smooth_image(70, 90))
    first = codec.decompress(data)
    assert torch.equal(codec.decompress(data), first)
    assert torch.equal(Codec(weights=codec.model(), threads=1, precision="float32")
                       .decompress(data), first)
    batch = codec.decompress_batch([data, codec.compress(smooth_image(64, 64, 1)), data])
    assert torch.equal(batch[0], batch[2])
    assert torch.allclose(batch[0], first, atol=1e-5)


def test_decoded_latents_match_the_encoder(codec, tiny_model):
    """What the decoder rebuilds equals y_hat = round(y - mu) + mu computed at encode time."""
    x = smooth_image(128, 192)[None]
    y, z = tiny_model.analyze(x)
    z_hat = tiny_model.entropy_z.dequantize(tiny_model.entropy_z.symbols(z))
    scales, means, _ = tiny_model.hyper_decode(z_hat)
    y_hat = (torch.round(y.double() - means) + means).float()
    expected = tiny_model.synthesize(y_hat)
    assert torch.allclose(codec.decompress(codec.compress(x)), expected[0], atol=1e-6)


def test_the_gpu_coder_algorithm_codes_the_same_streams(codec, monkeypatch):
    """The codec through the CUDA coder's warp algorithm (emulated on the host) and through the
    CPU coder: identical bytes, identical images."""
    images = [smooth_image(70, 90), smooth_image(70, 90, 1), smooth_image(33, 17)]
    streams = codec.compress_batch(images)
    emulated = Codec(weights=codec.model(), precision="float32")
    monkeypatch.setattr(emulated, "_coder",
                        lambda model, device: coder.open_coder(model.tables(), "cpu",
                                                               emulate=True))
    assert emulated.compress_batch(images) == streams
    for a, b in zip(emulated.decompress_batch(streams), codec.decompress_batch(streams),
                    strict=True):
        assert torch.equal(a, b)


def test_batches_match_single_calls(codec):
    images = [smooth_image(48, 80, s) for s in range(3)] + [smooth_image(33, 17)]
    streams = codec.compress_batch(images)
    for x, data in zip(images, streams, strict=True):
        assert codec.decompress(data).shape == x.shape
    decoded = codec.decompress_batch(streams)
    for data, x_hat in zip(streams, decoded, strict=True):
        assert torch.allclose(codec.decompress(data), x_hat, atol=1e-5)


def test_large_images_use_several_parallel_streams(tiny_model):
    loud = copy.deepcopy(tiny_model)
    loud.g_a[-1].weight.mul_(100)  # large latents: many bits, so several streams
    codec = Codec(weights=loud, stream_bytes=1024)
    x = torch.rand(3, 512, 512)
    data = codec.compress(x)
    header, _ = format.unpack(data)
    assert len(header.stream_lengths) > 1
    assert codec.decompress(data).shape == x.shape


def test_input_forms(codec, tmp_path):
    x = smooth_image(20, 30)
    u8 = (x * 255).round().to(torch.uint8)
    arr = u8.permute(1, 2, 0).numpy()
    Image.fromarray(arr).save(tmp_path / "a.png")
    reference = codec.decompress(codec.compress(u8))
    for form in (u8.float() / 255, u8[None], arr, Image.fromarray(arr), tmp_path / "a.png",
                 str(tmp_path / "a.png")):
        assert torch.equal(codec.decompress(codec.compress(form)), reference)
    gray = arr[:, :, 0]
    from_gray = codec.decompress(codec.compress(gray))
    assert torch.equal(from_gray, codec.decompress(codec.compress(np.stack([gray] * 3, -1))))


def test_bad_inputs_get_clear_errors(codec):
    rgba = np.zeros((8, 8, 4), np.uint8)
    with pytest.raises(ValueError, match="alpha"):
        codec.compress(rgba)
    assert codec.decompress(codec.compress(rgba, drop_alpha=True)).shape == (3, 8, 8)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        codec.compress(torch.full((3, 8, 8), 1.5))
    with pytest.raises(ValueError, match="NaN"):
        codec.compress(torch.full((3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="channels"):
        codec.compress(torch.rand(5, 8, 8))
    with pytest.raises(ValueError, match="CHW"):
        codec.compress(torch.rand(8, 8))
    with pytest.raises(ValueError, match="compress_batch"):
        codec.compress(torch.rand(2, 3, 8, 8))
    with pytest.raises(TypeError):
        codec.compress([1, 2, 3])
    with pytest.raises(FileNotFoundError):
        codec.compress("/nonexistent.png")


@pytest.fixture(scope="module")
def stream(codec):
    return codec.compress(smooth_image(96, 160))


def test_truncations_raise_codec_error(codec, stream, rng):
    for n in sorted(set(rng.integers(0, len(stream), 150).tolist()) | {0, 1, len(stream) - 1}):
        with pytest.raises(CodecError):
            codec.decompress(stream[:n])


def test_single_byte_corruptions_raise_codec_error(codec, stream, rng):
    for pos in rng.integers(0, len(stream), 300):
        bad = bytearray(stream)
        bad[pos] ^= int(rng.integers(1, 256))
        with pytest.raises(CodecError):
            codec.decompress(bytes(bad))


def test_payload_damage_behind_a_valid_crc_never_crashes(codec, stream, rng):
    """Forge the CRC so the coder itself meets the damage: it must fail cleanly, not crash."""
    header, _ = format.unpack(stream)
    start = len(stream) - sum(header.stream_lengths)
    detected = 0
    trials = 200
    for _ in range(trials):
        bad = bytearray(stream)
        bad[int(rng.integers(start, len(bad)))] ^= int(rng.integers(1, 256))
        crc = zlib.crc32(bytes(bad[start:]), zlib.crc32(bytes(bad[: start - 4])))
        bad[start - 4 : start] = struct.pack("<I", crc)
        try:
            codec.decompress(bytes(bad))
        except CodecError:
            detected += 1
    assert detected >= 0.9 * trials


def forged(codec, **changes) -> bytes:
    """A valid-CRC stream whose header fields were changed."""
    header, streams = format.unpack(codec.compress(smooth_image(64, 64)))
    header = dataclasses.replace(header, **changes)
    return format.pack(header, [bytes(s) for s in streams])


def test_absurd_sizes_are_rejected_before_allocating(codec):
    tracemalloc.start()
    for changes in ({"height": 65536, "width": 65536}, {"height": 60000, "width": 60000},
                    {"height": 200, "width": 300}):
        with pytest.raises(CodecError):
            codec.decompress(forged(codec, **changes))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50 << 20


def test_streams_from_other_weights_are_refused(codec, tiny_model):
    data = forged(codec, fingerprint=tiny_model.info.fingerprint ^ 1)
    with pytest.raises(CodecError, match="other weights"):
        codec.decompress(data)
    with pytest.raises(CodecError, match="model kind 7"):
        codec.decompress(forged(codec, kind_id=7))


def test_random_bytes_are_rejected(codec, rng):
    for n in (0, 3, 20, 200):
        with pytest.raises(CodecError):
            codec.decompress(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
