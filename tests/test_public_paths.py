"""Every public entry point with the *shipped* weights, loaded exactly as users load them.

The other codec tests use a small random-weight model built in the test; these go through
`engine.compress`, `engine.Codec`, the CLI and the zoo, as a new user would, on small images.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

import engine
from engine import Codec, CodecError, Refine, format, zoo
from engine.metrics import psnr
from engine.refine import METHODS
from tests.conftest import smooth_image

QUALITIES = zoo.shipped_qualities()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return smooth_image(48, 72, seed=3)


@pytest.mark.parametrize("quality", QUALITIES)
def test_compress_decompress_every_shipped_level(image, quality):
    data = engine.compress(image, quality=quality, device="cpu")
    x_hat = engine.decompress(data, device="cpu")
    assert x_hat.shape == image.shape and x_hat.dtype == torch.float32
    assert psnr(x_hat, image) > 24
    header, _ = format.unpack(data)
    assert (header.version, header.quality) == (format.VERSION, quality)


def test_batches_give_the_bytes_and_pixels_of_single_calls(image):
    images = [image, smooth_image(48, 72, seed=4), smooth_image(7, 13), image]
    streams = engine.compress_batch(images, quality=2, device="cpu")
    assert streams == [engine.compress(x, quality=2, device="cpu") for x in images]
    assert streams[0] == streams[3]
    decoded = engine.decompress_batch(streams, device="cpu")
    for data, x_hat in zip(streams, decoded, strict=True):
        # The same symbols; g_s on a batch of 3 rounds its float sums a little differently.
        torch.testing.assert_close(x_hat, engine.decompress(data, device="cpu"), rtol=0,
                                   atol=1e-5)


def test_decompress_takes_a_path_as_compress_does(image, tmp_path):
    path = tmp_path / "photo.nic"
    path.write_bytes(engine.compress(image))
    assert torch.equal(engine.decompress(str(path)), engine.decompress(path.read_bytes()))
    assert torch.equal(Codec().decompress_batch([path])[0], engine.decompress(path))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CodecError, match="photo.nic: "):
        engine.decompress(path)


def test_a_byte_budget_picks_the_highest_level_that_fits(image, tmp_path):
    streams = [engine.compress(image, quality=q) for q in QUALITIES]
    for i, data in enumerate(streams):
        assert engine.compress(image, max_bytes=len(data)) == data
        assert engine.compress(image, target_bpp=8 * len(data) / image[0].numel()) == data
        if i:
            assert engine.compress(image, max_bytes=len(data) - 1) == streams[i - 1]
    with pytest.raises(engine.UsageError, match="even at the lowest level"):
        engine.compress(image, max_bytes=len(streams[0]) - 1)
    one_level = Codec(weights=zoo.WEIGHTS_DIR / f"msh-q{QUALITIES[2]}.safetensors")
    assert one_level.compress(image, max_bytes=len(streams[-1])) == streams[2]
    with pytest.raises(engine.UsageError, match="even at the lowest level"):
        one_level.compress(image, max_bytes=len(streams[2]) - 1)


def test_refinement_fills_a_byte_budget_between_levels():
    x = smooth_image(96, 128, seed=5)
    low, high = (engine.compress(x, quality=q) for q in QUALITIES[1:3])
    budget = (len(low) + len(high)) // 2
    data = engine.compress(x, max_bytes=budget, refine=Refine(iterations=20, lr=0.02))
    assert 0.95 * budget <= len(data) <= budget
    assert psnr(engine.decompress(data), x) > psnr(engine.decompress(low), x)


def test_codec_methods(image):
    codec = Codec(quality=4, device="cpu")
    model = codec.model()
    assert model.info.quality == 4 and model.info.lam > 0 and model.info.path
    assert codec.coder_backend("cpu") == "cpu"
    data = codec.compress(image)
    assert torch.equal(codec.decompress(data), Codec(device="cpu").decompress(data))


@pytest.mark.parametrize("method", METHODS)
def test_refinement_with_the_shipped_weights(image, method):
    refine = Refine(method=method, iterations=3, progress=False)
    data = engine.compress(image, quality=2, refine=refine, device="cpu")
    assert engine.decompress(data, device="cpu").shape == image.shape


def test_refinement_inside_inference_mode(image):
    """A user's inference mode must not leak into refinement's backward pass (the weights are
    loaded inside it here, on first use by this codec)."""
    with torch.inference_mode():
        codec = Codec(quality=1, device="cpu", weights=zoo.load_weights(
            zoo.WEIGHTS_DIR / "msh-q1.safetensors"))
        data = codec.compress(image, refine=Refine(method="ssl", iterations=2, progress=False))
    assert len(data) > 0


@pytest.mark.parametrize("precision_name", ["float32", "bfloat16"])
def test_every_precision(image, precision_name):
    """bfloat16 runs on any CPU (fast only with AVX512_BF16 or AMX): both sides of "auto"."""
    codec = Codec(quality=3, device="cpu", precision=precision_name)
    x_hat = codec.decompress(codec.compress(image))
    assert psnr(x_hat, image) > 24


def test_both_coder_search_paths(image):
    """The CPU coder searches its CDFs with AVX-512 where the CPU has it; NIC_RANS_SCALAR=1
    forces the scalar search (a CPU without AVX-512 takes it anyway): both decode alike."""
    data = engine.compress(image, quality=3, device="cpu")
    code = ("import sys, hashlib, torch, engine; from engine.images import to_uint8; "
            "torch.set_num_threads(1); x = engine.decompress(sys.stdin.buffer.read(), "
            "device='cpu'); print(hashlib.sha256(to_uint8(x).tobytes()).hexdigest())")
    digests = []
    for scalar in (False, True):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        env.pop("NIC_RANS_SCALAR", None)
        if scalar:
            env["NIC_RANS_SCALAR"] = "1"
        digests.append(subprocess.run([sys.executable, "-c", code], input=data,
                                      capture_output=True, env=env, cwd=ROOT,
                                      check=True).stdout)
    assert digests[0] == digests[1] and len(digests[0]) > 64


def test_openmp_threads_sleep_rather_than_spin_while_they_wait():
    """Spinning waits collapse under a busy core (benchmarks/busy_core.py)."""
    code = ("import engine, os, torch; "
            "print(os.environ['OMP_WAIT_POLICY'], torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=True).stdout.split()
    assert out == ["PASSIVE", str(os.cpu_count())]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the heap policy is glibc's")
@pytest.mark.parametrize("setting, kept", [(None, True), ("system", False)])
def test_freed_tensor_memory_is_kept_for_reuse_unless_opted_out(setting, kept):
    """engine/heap.py: a freed 48 MB tensor (above glibc's largest mmap threshold, below the
    engine's) stays in the heap, with no page faults for the next one; with
    NICENGINE_HEAP=system glibc unmaps it as usual."""
    code = ("import engine, torch\n"
            "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096\n"
            "before = rss(); x = torch.ones(12 << 20); del x\n"
            "print(rss() - before > 40 << 20)")
    env = {k: v for k, v in os.environ.items()
           if k not in ("NICENGINE_HEAP", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                        "GLIBC_TUNABLES")}
    if setting:
        env["NICENGINE_HEAP"] = setting
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=True).stdout.split()
    assert out == [str(kept)]


def test_device_auto():
    codec = Codec()
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert codec.device_for().type == expected
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        Codec(device="gpu")


@pytest.mark.parametrize("cuda_build, reason", [(False, "torch .* is a CPU build"),
                                                 (True, "no GPU visible")])
def test_an_absent_gpu_is_one_clear_error_before_any_work(monkeypatch, cuda_build, reason):
    monkeypatch.setattr(torch.version, "cuda", "12.8" if cuda_build else None)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0"):
        with pytest.raises(engine.DeviceUnavailable, match=f"CUDA is not available: {reason}"):
            engine.compress(smooth_image(8, 8), device=device)
        with pytest.raises(engine.UsageError, match=reason):
            engine.decompress(b"not even read", device=device)


def test_unknown_model_and_quality():
    with pytest.raises(ValueError, match="no shipped model 'nope'"):
        Codec(model="nope")
    for quality in (None, "3", True):
        with pytest.raises(TypeError, match=f"quality must be a number, not {quality!r}"):
            engine.compress(smooth_image(8, 8), quality=quality)
    with pytest.raises(ValueError, match="quality levels"):
        engine.compress(smooth_image(8, 8), quality=99)


# --- determinism and concurrency ------------------------------------------------------------


@pytest.mark.parametrize("h, w", [(1, 1), (7, 13), (65, 129)])
def test_odd_sizes_decode_the_pixels_not_only_the_shape(h, w):
    """An odd-sized image decodes to exactly the top-left corner of its padded version's
    decoding (the encoder pads by replication, so both code the same latents)."""
    x = smooth_image(h, w, seed=h)
    x_hat = engine.decompress(engine.compress(x, quality=6, device="cpu"), device="cpu")
    model = zoo.load("msh", 6)
    padded = model.pad(x[None])[0]
    assert padded.shape[1:] != x.shape[1:]
    whole = engine.decompress(engine.compress(padded, quality=6, device="cpu"), device="cpu")
    assert torch.equal(x_hat, whole[:, :h, :w])
    assert psnr(x_hat, x) > 20


def test_same_bytes_across_processes_and_thread_counts(image):
    """Encoding is bit-exact whatever the thread count (g_a and the hyper path do not depend on
    it: measured, and checked here)."""
    path = os.path.join(ROOT, "tests", "golden", "v1-msh-q3.png")
    code = ("import sys, hashlib, torch, engine; torch.set_num_threads(int(sys.argv[2])); "
            "print(hashlib.sha256(engine.compress(sys.argv[1], quality=3, device='cpu'))"
            ".hexdigest())")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    digests = {subprocess.run([sys.executable, "-c", code, path, str(t)], capture_output=True,
                              env=env, cwd=ROOT, check=True).stdout.strip()
               for t in (1, 2)}
    here = hashlib.sha256(engine.compress(path, quality=3, device="cpu")).hexdigest()
    assert digests == {here.encode()}


def test_multi_stream_decoding_equals_single_stream():
    x = torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(0))
    many, one = Codec(quality=6, device="cpu", stream_bytes=512), Codec(quality=6, device="cpu")
    split, whole = many.compress(x), one.compress(x)
    assert len(format.unpack(split)[0].stream_lengths) > 1
    assert len(format.unpack(whole)[0].stream_lengths) == 1
    assert torch.equal(one.decompress(split), one.decompress(whole))


def test_eight_threads_share_one_codec_and_the_module_functions():
    images = [smooth_image(40 + 8 * (i % 3), 56, seed=i) for i in range(16)]
    codec = Codec(quality=3, device="cpu")
    serial = [codec.compress(x) for x in images]
    decoded = [codec.decompress(d) for d in serial]

    def work(i: int) -> tuple[bytes, torch.Tensor, bytes]:
        data = codec.compress(images[i])
        return data, codec.decompress(data), engine.compress(images[i], quality=3, device="cpu")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(len(images)), timeout=300))
    for i, (data, x_hat, module_data) in enumerate(results):
        assert data == serial[i] == module_data
        assert torch.equal(x_hat, decoded[i])


# --- bad input: one clear error ---------------------------------------------------------------


def test_bad_streams_raise_codec_error(image):
    data = engine.compress(image, quality=3, device="cpu")
    with pytest.raises(CodecError, match=r"truncated: stream 0 needs \d+ bytes, \d+ remain"):
        engine.decompress(data[:40])
    with pytest.raises(CodecError, match="not a nicengine stream"):
        engine.decompress(b"GIF89a" + data)
    with pytest.raises(CodecError, match="CRC32"):
        engine.decompress(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CodecError):
        engine.decompress(b"")


def test_size_limits_agree_between_encoder_and_decoder():
    codec = Codec(device="cpu", max_pixels=64 * 64)
    with pytest.raises(ValueError, match="max_pixels=4096"):
        codec.compress(smooth_image(65, 64))
    data = Codec(device="cpu").compress(smooth_image(65, 64))
    with pytest.raises(CodecError, match="max_pixels=4096"):
        codec.decompress(data)
    assert Codec().max_pixels == engine.codec.MAX_PIXELS


def test_bad_images_raise_value_error(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path in (text, empty):
        with pytest.raises(ValueError, match="not an image Pillow can read"):
            engine.compress(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        engine.compress(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="alpha"):
        engine.compress(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        engine.compress(torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        engine.compress(torch.full((3, 8, 8), 2.0))
