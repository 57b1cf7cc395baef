"""The whole codec on a GPU (skipped without one): every shipped model and level round-trips with
`Codec(device="cuda")` through the CUDA coder, and streams encoded on the GPU decode on the CPU
and the reverse. benchmarks/gpu_session.sh runs this file on the device machine.

    python -m pytest -q tests/test_gpu_codec.py
"""

from __future__ import annotations

import pytest
import torch

from engine import Codec, zoo
from engine.metrics import psnr
from tests.conftest import smooth_image

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU and a CUDA build of torch")

LEVELS = [(name, q) for name, levels in zoo.shipped_models().items() for q in levels]
# Two decodings of one stream on different devices differ by float noise (far above this); a
# stream decoded with other table indexes than it was encoded with desynchronises (far below).
AGREE_DB = 45.0


@pytest.fixture(scope="module")
def images() -> list[torch.Tensor]:
    """Two sizes, neither a multiple of 64."""
    return [smooth_image(70, 50), smooth_image(200, 300, 1)]


def codec(name: str, quality: int, device: str) -> Codec:
    """float32, so that the devices differ by rounding alone; small streams, so that an image
    codes into several parallel streams."""
    return Codec(quality, device, model=name, precision="float32", stream_bytes=1024)


def test_the_cuda_coder_runs():
    assert Codec().coder_backend("cuda") == "cuda"


@pytest.mark.parametrize("name, quality", LEVELS)
def test_round_trip_on_cuda(name, quality, images):
    """Decoded on the GPU, and as good as the CPU's own round trip, at about its size."""
    gpu, cpu = codec(name, quality, "cuda"), codec(name, quality, "cpu")
    streams = gpu.compress_batch([x.cuda() for x in images])
    reference = cpu.compress_batch(images)
    for x, data, ref, x_hat in zip(images, streams, reference, gpu.decompress_batch(streams),
                                   strict=True):
        assert x_hat.is_cuda and x_hat.dtype == torch.float32 and x_hat.shape == x.shape
        assert psnr(x_hat.cpu(), x) > psnr(cpu.decompress(ref), x) - 0.2
        assert abs(len(data) - len(ref)) <= 0.02 * len(ref) + 16


def test_batches_match_single_calls_on_cuda(images):
    gpu = codec(zoo.DEFAULT_MODEL, zoo.DEFAULT_QUALITY, "cuda")
    on_gpu = [x.cuda() for x in images]
    streams = gpu.compress_batch(on_gpu)
    assert [gpu.compress(x) for x in on_gpu] == streams
    assert torch.equal(gpu.decompress(streams[1]), gpu.decompress_batch(streams)[1])


@pytest.mark.parametrize("name, quality", LEVELS)
@pytest.mark.parametrize("encode, decode", [("cuda", "cpu"), ("cpu", "cuda")])
def test_streams_decode_on_the_other_device(name, quality, encode, decode, images):
    encoder, decoder = codec(name, quality, encode), codec(name, quality, decode)
    streams = encoder.compress_batch(images)
    same = encoder.decompress_batch(streams)
    for a, b in zip(same, decoder.decompress_batch(streams), strict=True):
        assert b.device.type == decode
        assert psnr(a.cpu(), b.cpu()) > AGREE_DB
