"""Precision of g_a and g_s (engine.precision): the choice of "auto", and the bfloat16 path,
which runs on any CPU (fast only with AMX) and must give float32 images close to float32's."""

import pytest
import torch

from engine import Codec, precision
from tests.conftest import smooth_image


def test_resolve(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert precision.resolve("float32", cpu) == torch.float32
    assert precision.resolve("bfloat16", cuda) == torch.bfloat16
    assert precision.resolve("auto", cuda) == torch.float32
    for amx, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(precision, "amx_bfloat16", lambda amx=amx: amx)
        assert precision.resolve("auto", cpu) == dtype
    with pytest.raises(ValueError, match="precision 'half'"):
        precision.resolve("half", cpu)
    with pytest.raises(ValueError, match="precision 'fp16'"):
        Codec(precision="fp16")


def test_analysis_under_autocast_keeps_the_side_information_float32(tiny_model):
    x = smooth_image(64, 64)[None]
    with torch.inference_mode():
        with precision.transforms_in(torch.bfloat16, x.device):
            assert precision.layout(x).is_contiguous(memory_format=torch.channels_last)
            y, z = tiny_model.analyze(x)
        assert y.dtype == z.dtype == torch.float32
        assert torch.equal(z, tiny_model.h_a(y))
        assert not torch.equal(y, tiny_model.analyze(x)[0])  # g_a did run in bfloat16


def test_bfloat16_streams_and_images(tiny_model):
    x = smooth_image(96, 80)
    fast, exact = (Codec(weights=tiny_model, precision=p) for p in ("bfloat16", "float32"))
    for data in (fast.compress(x), exact.compress(x)):
        a, b = fast.decompress(data), exact.decompress(data)
        assert a.dtype == torch.float32 and a.shape == (3, 96, 80)
        assert float(a.min()) >= 0 and float(a.max()) <= 1
        assert torch.equal(fast.decompress(data), a)  # deterministic at either precision
        assert torch.mean((a - b) ** 2) < 1e-5  # > 50 dB from the float32 decoding
        assert not torch.equal(a, b)
    ratio = len(fast.compress(x)) / len(exact.compress(x))
    assert 0.97 < ratio < 1.03
