"""The CUDA coder on a GPU (skipped without one): round trips over random symbols, sizes and
batch mixes; bytes identical to the CPU coder's, so that streams decode across the two; damaged
streams rejected without a fault.

    python -m pytest tests/test_coder_cuda.py -q
    NICENGINE_MEMCHECK=1 python -m pytest tests/test_coder_cuda.py -q -k memcheck

The second runs this file again under compute-sanitizer's memcheck (at small sizes: it is ~100x
slower) and fails on any memory error of the kernels.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_coder import extreme_values, make_tables, quantize, random_tables
from test_coder_bitexact import (
    assert_same_outcome,
    cpu_outcome,
    decode_all,
    encode_to_bytes,
    random_streams,
)

from engine import _rans, coder
from engine.entropy.cdf import CdfTables
from engine.entropy.gaussian import SCALES, gaussian_tables
from engine.errors import CodecError

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU and a CUDA build of torch")
SMALL = os.environ.get("NICENGINE_SMALL") == "1"  # set for the run under compute-sanitizer


@pytest.fixture(scope="module", autouse=True)
def built():
    """A GPU is here, so the CUDA coder must build: a failure is an error, not a skip."""
    assert coder.available(), coder.unavailable_reason()


def on_gpu(cdfs, sizes, offsets) -> tuple[coder.Coder, _rans.Tables]:
    """The CUDA coder of these tables, and the CPU coder's tables to check it against."""
    return (coder.open_coder(CdfTables(cdfs, sizes, offsets), "cuda"),
            _rans.Tables(cdfs, sizes, offsets))


def check_both_ways(gpu: coder.Coder, cpu: _rans.Tables, streams) -> None:
    """GPU bytes == CPU bytes; the GPU decodes them; the CPU decodes the GPU's."""
    coded = encode_to_bytes(gpu, streams)
    assert coded == _rans.encode(cpu, streams)
    decode_all(gpu, coded, streams)
    for data, segs in zip(coded, streams, strict=True):
        assert cpu_outcome(cpu, data, segs) is not None


def test_backend_is_cuda():
    gpu = coder.open_coder(gaussian_tables(), "cuda")
    assert gpu.device.type == "cuda" and gpu.name == "cuda"


@pytest.mark.parametrize("seed", range(3 if SMALL else 8))
def test_random_batches(seed):
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 64))
    _, cdfs, sizes, offsets = random_tables(rng, count)
    streams = random_streams(rng, count, int(rng.integers(1, 20 if SMALL else 200)),
                             max_segments=4, max_len=int(rng.choice([40, 300, 5000])))
    check_both_ways(*on_gpu(cdfs, sizes, offsets), streams)


def test_device_tensor_inputs_and_outputs():
    rng = np.random.default_rng(1)
    _, cdfs, sizes, offsets = random_tables(rng, 5)
    gpu, cpu = on_gpu(cdfs, sizes, offsets)
    values = torch.from_numpy(extreme_values(rng, 500)).cuda().long()  # converted to int32
    indexes = torch.from_numpy(rng.integers(0, 5, len(values))).cuda()
    streams = [[(values, indexes)], [(values[:7], indexes[:7])]]
    coded = encode_to_bytes(gpu, streams)
    assert coded == _rans.encode(cpu, [[(v.cpu(), i.cpu()) for v, i in s] for s in streams])
    dec = gpu.decoder(coded)
    out = dec.decode([indexes, indexes[:7]])
    assert all(o.is_cuda and o.dtype == torch.int32 for o in out)
    assert torch.equal(out[0], values.int()) and torch.equal(out[1], values[:7].int())
    dec.finish()


def latent_batch(rng, shapes):
    """Engine-like streams for images with latents y (192, h, w) and z (128, h/4, w/4): Gaussian
    symbols at scales log-uniform over [0.11, 20]; stream 0 of an image holds z then y's first
    part, as in engine.codec."""
    streams, firsts = [], []
    for h, w in shapes:
        z_idx = np.repeat(np.arange(128, dtype=np.int32), (h // 4) * (w // 4))
        z = np.round(rng.laplace(0, 2, z_idx.size)).astype(np.int32)
        y_idx = rng.integers(0, 40, 192 * h * w).astype(np.int32)
        y = np.round(rng.normal(0, SCALES[y_idx])).astype(np.int32)
        y_idx += 128
        parts = 1 + y.size // 100_000
        cuts = [y.size * s // parts for s in range(parts + 1)]
        segs = [[(y[a:e], y_idx[a:e])] for a, e in zip(cuts, cuts[1:], strict=False)]
        segs[0].insert(0, (z, z_idx))
        firsts.append(len(streams))
        streams += segs
    return streams, firsts


def engine_tables() -> CdfTables:
    from engine.models import MeanScaleHyperprior, ModelConfig

    torch.manual_seed(0)
    return MeanScaleHyperprior(ModelConfig(128, 192)).eval().tables()


def test_engine_batch_decodes_z_then_y():
    """A batch of mixed image sizes through the engine's tables, decoded as the codec will: the
    z segments first (first streams only), then y on every stream."""
    rng = np.random.default_rng(2)
    shapes = [(4, 8), (8, 4)] if SMALL else [(32, 48), (68, 120), (48, 32), (4, 4), (16, 16)]
    streams, firsts = latent_batch(rng, shapes)
    tables = engine_tables()
    gpu = coder.open_coder(tables, "cuda")
    coded = encode_to_bytes(gpu, streams)
    assert coded == coder.open_coder(tables, "cpu").encode(streams)
    dec = gpu.decoder(coded)
    z = dec.decode([streams[k][0][1] if k in firsts else None for k in range(len(streams))])
    y = dec.decode([segs[-1][1] for segs in streams])
    dec.finish()
    for k, segs in enumerate(streams):
        if k in firsts:
            np.testing.assert_array_equal(z[k].cpu().numpy(), segs[0][0])
        else:
            assert z[k].numel() == 0
        np.testing.assert_array_equal(y[k].cpu().numpy(), segs[-1][0])


@pytest.mark.parametrize("num_tables", [20, 60, 150])
def test_table_placements(num_tables):
    """Tables of 1024 symbols: 20 fit the default 48 KB of shared memory, 60 need the opt-in
    limit, 150 exceed it and are read from global memory."""
    rng = np.random.default_rng(num_tables)
    freqs = [quantize(rng.dirichlet(np.ones(1024) * 0.3)) for _ in range(num_tables)]
    _, cdfs, sizes, offsets = make_tables(freqs, rng.integers(-600, -400, num_tables))
    n = 2000 if SMALL else 50_000
    streams = [[(rng.integers(-700, 700, n).astype(np.int32),
                 rng.integers(0, num_tables, n).astype(np.int32))] for _ in range(5)]
    check_both_ways(*on_gpu(cdfs, sizes, offsets), streams)


# ---- damaged streams: rejected like the CPU coder rejects them, and no fault ----


def assert_device_healthy():
    torch.cuda.synchronize()  # a fault in a kernel would surface here
    assert torch.arange(4, device="cuda").sum().item() == 6


def test_truncations_and_corruptions():
    rng = np.random.default_rng(8)
    _, cdfs, sizes, offsets = random_tables(rng, 3)
    gpu, cpu = on_gpu(cdfs, sizes, offsets)
    segments = [(extreme_values(rng, n)[:n], rng.integers(0, 3, n).astype(np.int32))
                for n in (20, 45, 300)]
    data = _rans.encode(cpu, [segments])[0]
    for length in range(0, len(data), 7 if SMALL else 1):
        assert_same_outcome(cpu, gpu, data[:length], segments)
    for pos in rng.integers(0, len(data), 30 if SMALL else 300):
        bad = bytearray(data)
        bad[pos] ^= int(rng.integers(1, 256))
        assert_same_outcome(cpu, gpu, bytes(bad), segments)
    assert_device_healthy()


def test_garbage_in_a_batch():
    """Random bytes of every kind of length next to good streams: errors, never a fault."""
    rng = np.random.default_rng(9)
    _, cdfs, sizes, offsets = random_tables(rng, 4)
    gpu, _ = on_gpu(cdfs, sizes, offsets)
    streams = random_streams(rng, 4, 8, max_segments=2)
    coded = encode_to_bytes(gpu, streams)
    for trial in range(10 if SMALL else 100):
        junk = [rng.integers(0, 256, int(rng.integers(0, 400))).astype(np.uint8).tobytes()
                for _ in range(5)]
        if trial % 2:  # valid headers, so that decoding starts on garbage words
            junk = [np.full(32, 1 << 20, "<u4").tobytes() + j[: len(j) // 2 * 2] for j in junk]
        batch = coded + junk
        low, high = (-1, 5) if trial % 3 == 0 else (0, 4)  # sometimes bad table indexes
        indexes = [rng.integers(low, high, 200).astype(np.int32) for _ in batch]
        try:
            dec = gpu.decoder(batch)
            dec.decode(indexes)
            dec.decode([s[1][1] if len(s) > 1 else None for s in streams] + [None] * 5)
            dec.finish()
        except CodecError:
            pass
    assert_device_healthy()
    decode_all(gpu, coded, streams)  # the good streams alone still decode


def test_bad_table_indexes():
    rng = np.random.default_rng(12)
    _, cdfs, sizes, offsets = random_tables(rng, 3)
    gpu, _ = on_gpu(cdfs, sizes, offsets)
    values, indexes = rng.integers(-5, 5, 40).astype(np.int32), np.zeros(40, np.int32)
    wrong = indexes.copy()
    wrong[37] = -1
    with pytest.raises(CodecError, match="^stream 1: segment 0: table index -1 at position 37"):
        gpu.encode([[(values, indexes)], [(torch.from_numpy(values).cuda(), wrong)]])
    (data,) = encode_to_bytes(gpu, [[(values, indexes)]])
    dec = gpu.decoder([data])
    with pytest.raises(CodecError, match="table index out of range"):
        dec.decode([wrong])
    assert torch.equal(dec.decode([indexes])[0].cpu(), torch.from_numpy(values))
    dec.finish()


# ---- compute-sanitizer ----


def test_memcheck():
    """This file's other tests, small, under compute-sanitizer's memcheck (opt-in: slow)."""
    if os.environ.get("NICENGINE_MEMCHECK") != "1":
        pytest.skip("set NICENGINE_MEMCHECK=1 to run the CUDA tests under compute-sanitizer")
    home = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    tool = shutil.which("compute-sanitizer") or str(home / "bin" / "compute-sanitizer")
    if not Path(tool).exists():
        pytest.skip("compute-sanitizer not found")
    # Without torch's caching allocator every tensor is its own allocation, so that memcheck
    # sees the bounds of each.
    env = {**os.environ, "NICENGINE_SMALL": "1", "NICENGINE_MEMCHECK": "0",
           "PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}
    cmd = [tool, "--tool", "memcheck", "--error-exitcode", "99", sys.executable, "-m", "pytest",
           "-q", "-x", "-p", "no:cacheprovider", __file__, "-k", "not memcheck"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    assert "ERROR SUMMARY: 0 errors" in result.stdout + result.stderr
