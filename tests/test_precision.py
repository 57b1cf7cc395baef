"""Precision of g_a and g_s (engine.precision): the choice of "auto", and the bfloat16 path,
which runs on any CPU (fast only with AVX512_BF16 or AMX) and must give float32 images close
to float32's."""

import pytest
import torch

from engine import Codec, precision
from tests.conftest import check_bfloat16_round_trip, smooth_image


def test_resolve(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert precision.resolve("float32", cpu) == torch.float32
    assert precision.resolve("bfloat16", cuda) == torch.bfloat16
    assert precision.resolve("auto", cuda) == torch.float32
    bf16, f32 = torch.bfloat16, torch.float32
    # (AVX512_BF16, AMX) -> g_a's dtype, g_s's: without AMX, g_s's float32 Winograd layers win.
    for fast, amx, analysis, synthesis in ((True, True, bf16, bf16), (True, False, bf16, f32),
                                           (False, False, f32, f32)):
        monkeypatch.setattr(precision, "fast_bfloat16", lambda fast=fast: fast)
        monkeypatch.setattr(precision, "amx_bfloat16", lambda amx=amx: amx)
        assert precision.resolve("auto", cpu) == analysis
        assert precision.resolve("auto", cpu, synthesis=True) == synthesis
        assert precision.resolve("bfloat16", cpu, synthesis=True) == bf16
        assert precision.resolve("auto", cuda, synthesis=True) == f32
    assert precision.describe("auto", cpu) == "g_a and g_s in float32"
    monkeypatch.setattr(precision, "fast_bfloat16", lambda: True)
    assert precision.describe("auto", cpu) == "g_a in bfloat16, g_s in float32"
    assert precision.describe("bfloat16", cpu) == "g_a and g_s in bfloat16"
    with pytest.raises(ValueError, match="precision 'half'"):
        precision.resolve("half", cpu)
    with pytest.raises(ValueError, match="precision 'fp16'"):
        Codec(precision="fp16")


@pytest.mark.parametrize("native, limit, fast", [
    (True, None, True), (True, "avx512_core_bf16", True), (True, "AVX512_CORE_AMX", True),
    (True, "AVX2", False), (True, "avx512_core_vnni", False), (False, None, False)])
def test_bfloat16_is_fast_where_onednn_may_use_it(monkeypatch, native, limit, fast):
    """A CPU with AVX512_BF16, unless ONEDNN_MAX_CPU_ISA keeps oneDNN below it."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if limit is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
    precision.fast_bfloat16.cache_clear()
    try:
        assert precision.fast_bfloat16() is fast
    finally:
        precision.fast_bfloat16.cache_clear()


def test_only_the_transforms_run_in_bfloat16(tiny_model):
    x = smooth_image(64, 64)[None]
    with torch.inference_mode():
        with precision.transforms_in(torch.bfloat16):
            assert not torch.is_autocast_enabled("cpu")  # the entropy models' code: no autocast
            with precision.transform(x) as inside:
                assert torch.is_autocast_enabled("cpu")
                assert inside.is_contiguous(memory_format=torch.channels_last)
            y, z = tiny_model.analyze(x)
        assert y.dtype == z.dtype == torch.float32
        assert torch.equal(z, tiny_model.h_a(y))
        assert not torch.equal(y, tiny_model.analyze(x)[0])  # g_a did run in bfloat16


def test_bfloat16_streams_and_images(tiny_model):
    check_bfloat16_round_trip(tiny_model, smooth_image(96, 80))


def test_auto_runs_g_a_in_bfloat16_and_g_s_in_float32_without_amx(tiny_model, monkeypatch):
    monkeypatch.setattr(precision, "fast_bfloat16", lambda: True)
    monkeypatch.setattr(precision, "amx_bfloat16", lambda: False)
    seen, real = [], precision.transforms_in

    def spy(dtype):
        seen.append(dtype)
        return real(dtype)

    monkeypatch.setattr(precision, "transforms_in", spy)
    codec = Codec(weights=tiny_model, device="cpu")
    data = codec.compress(smooth_image(64, 64))
    assert seen == [torch.bfloat16]
    codec.decompress(data)
    assert seen == [torch.bfloat16, torch.float32]
