"""The CUDA coder's warp algorithm (csrc/rans_warp.h) against the CPU coder, without a GPU.

`open_coder(..., emulate=True)` runs the kernels' per-lane steps on the host (32 lanes as loops,
the ballot prefix count as a loop: `engine._rans_warp_host`) behind the warp coder's own glue
(engine/coder/warp.py), so these tests cover everything but the CUDA launch code, which
tests/test_coder_cuda.py covers on a GPU. Also here: the backend choice, the CPU coder behind
the same interface, and every csrc/*.cu compiling with nvcc.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from test_coder import (
    INT32_MAX,
    INT32_MIN,
    extreme_values,
    latents,
    make_tables,
    quantize,
    random_tables,
    reference_encode,
)

from engine import _rans, coder
from engine.entropy.cdf import CdfTables
from engine.entropy.gaussian import SCALES, gaussian_tables
from engine.errors import CodecError

CSRC = Path(__file__).resolve().parents[1] / "csrc"


def emulated(cdfs, sizes, offsets) -> coder.Coder:
    return coder.open_coder(CdfTables(cdfs, sizes, offsets), "cpu", emulate=True)


def random_setup(seed: int, count: int = 6):
    rng = np.random.default_rng(seed)
    cpu, cdfs, sizes, offsets = random_tables(rng, count)
    return rng, cpu, emulated(cdfs, sizes, offsets), (cdfs, sizes, offsets)


def random_streams(rng, count: int, num_streams: int, max_segments: int = 4, max_len: int = 300):
    return [[(extreme_values(rng, n)[:n], rng.integers(0, count, n).astype(np.int32))
             for n in rng.integers(0, max_len, rng.integers(0, max_segments + 1))]
            for _ in range(num_streams)]


def encode_to_bytes(c: coder.Coder, streams) -> list[bytes]:
    coded = c.encode(streams)
    assert len(coded) == len(streams) and all(type(b) is bytes for b in coded)
    return coded


def decode_all(c: coder.Coder, coded, streams) -> None:
    """Decode every stream segment by segment (streams with fewer segments sit out) and check
    the values, then finish."""
    dec = c.decoder(coded)
    assert dec.num_streams == len(streams)
    for k in range(max((len(s) for s in streams), default=0)):
        outs = dec.decode([s[k][1] if k < len(s) else None for s in streams])
        for s, out in zip(streams, outs, strict=True):
            assert out.dtype == torch.int32 and out.device.type == c.device.type
            np.testing.assert_array_equal(out.cpu().numpy(), s[k][0] if k < len(s) else [])
    dec.finish()


def error_of(call) -> str:
    """The message of the CodecError that call() raises."""
    with pytest.raises(CodecError) as e:
        call()
    return str(e.value)


# ---- the same bytes as the CPU coder ----


def test_worked_example_of_the_docs():
    _, cdfs, sizes, offsets = make_tables([np.array([40000, 20000, 5536])], [-1])
    (data,) = encode_to_bytes(emulated(cdfs, sizes, offsets),
                              [[(np.array([0, -1, 1000]), np.zeros(3))]])
    assert data.hex() == "e0b10300" "c0630100" "c0f91900" + "00000100" * 29 + "c0f9"


def test_matches_reference_and_cpu_multi_segment():
    rng, cpu, emu, raw = random_setup(3)
    segments = [(extreme_values(rng, n)[:n], rng.integers(0, 6, n).astype(np.int32))
                for n in (33, 0, 1, 65, 32, 7, 200)]
    (data,) = encode_to_bytes(emu, [segments])
    assert data == _rans.encode(cpu, [segments])[0]
    assert data == reference_encode(*raw, segments)
    decode_all(emu, [data], [segments])


@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 63, 64, 65, 1000])
def test_awkward_sizes(n):
    rng, cpu, emu, _ = random_setup(n, 4)
    segments = [(extreme_values(rng, n)[:n], rng.integers(0, 4, n).astype(np.int32))]
    (data,) = encode_to_bytes(emu, [segments])
    assert data == _rans.encode(cpu, [segments])[0]
    decode_all(emu, [data], [segments])


def test_empty_streams_and_segments():
    _, _, emu, _ = random_setup(0, 1)
    empty = np.zeros(0, np.int32)
    streams = [[], [(empty, empty)], [(empty, empty), (empty, empty)]]
    coded = encode_to_bytes(emu, streams)
    assert coded == [struct.pack("<32I", *[1 << 16] * 32)] * 3
    decode_all(emu, coded, streams)
    assert emu.encode([]) == []
    decode_all(emu, [], [])


def test_escape_heavy():
    rng = np.random.default_rng(6)
    cpu, cdfs, sizes, offsets = make_tables([quantize([0.05, 0.95]), quantize([0.1, 0.1, 0.8])],
                                            [0, -1])
    n = 5000
    magnitude = 2 ** rng.integers(0, 32, n).astype(np.int64)  # every escape bit length
    values = (rng.choice([-1, 1], n) * (magnitude + rng.integers(0, magnitude))).clip(
        INT32_MIN, INT32_MAX).astype(np.int32)
    segments = [(values, rng.integers(0, 2, n).astype(np.int32))]
    emu = emulated(cdfs, sizes, offsets)
    (data,) = encode_to_bytes(emu, [segments])
    assert data == _rans.encode(cpu, [segments])[0]
    decode_all(emu, [data], [segments])


@pytest.mark.parametrize("offset", [0, INT32_MIN, INT32_MAX - 38])
def test_extreme_offsets(offset):
    rng = np.random.default_rng(abs(offset) % 1000)
    freqs = [quantize(rng.dirichlet(np.ones(40))), quantize([0.5, 0.5]), quantize([0.9, 0.1])]
    cpu, cdfs, sizes, offsets = make_tables(freqs, [offset, offset, -offset // 2])
    values = extreme_values(rng, 300)
    segments = [(values, rng.integers(0, 3, len(values)).astype(np.int32))]
    emu = emulated(cdfs, sizes, offsets)
    (data,) = encode_to_bytes(emu, [segments])
    assert data == _rans.encode(cpu, [segments])[0]
    decode_all(emu, [data], [segments])


def test_many_streams_of_different_lengths_both_ways():
    rng, cpu, emu, _ = random_setup(5, 8)
    streams = random_streams(rng, 8, 60)
    coded = encode_to_bytes(emu, streams)
    assert coded == _rans.encode(cpu, streams)
    decode_all(emu, coded, streams)  # CPU-encoded streams (the same bytes) decode emulated
    for data, segs in zip(coded, streams, strict=True):  # and emulated ones on the CPU
        dec = _rans.Decoder(cpu, data)
        for values, indexes in segs:
            np.testing.assert_array_equal(dec.decode(indexes), values)
        dec.finish()


def test_hyperprior_latents_and_engine_tables():
    """Realistic symbols: the engine's Gaussian tables, and the CPU tests' Laplace latents."""
    rng = np.random.default_rng(7)
    g = gaussian_tables()
    idx = rng.integers(0, 40, 20_000).astype(np.int32)  # scales 0.11 .. ~20
    sym = np.round(rng.normal(0, SCALES[idx])).astype(np.int32)
    _, cdfs, sizes, offsets, values, indexes = latents(rng, "laplace", 20_000, num_tables=16)
    for tables, v, i in ((g, sym, idx), (CdfTables(cdfs, sizes, offsets), values, indexes)):
        streams = [[(v[:700], i[:700]), (v[700:], i[700:])], [(v[:5000], i[:5000])]]
        emu = coder.open_coder(tables, "cpu", emulate=True)
        coded = encode_to_bytes(emu, streams)
        assert coded == coder.open_coder(tables, "cpu").encode(streams)
        decode_all(emu, coded, streams)


def test_tensor_inputs_of_other_dtypes_and_memoryviews():
    """Segments as int64 tensors, indexes as tensors, streams as memoryviews of one buffer (as
    engine.format.unpack gives them): the same as int32 arrays and bytes."""
    rng, cpu, emu, _ = random_setup(8, 3)
    streams = random_streams(rng, 3, 10)
    as_tensors = [[(torch.from_numpy(v).long(), torch.from_numpy(i)) for v, i in segs]
                  for segs in streams]
    coded = encode_to_bytes(emu, as_tensors)
    assert coded == _rans.encode(cpu, streams)
    buffer = memoryview(b"".join(coded))
    cuts = np.cumsum([0] + [len(c) for c in coded]).tolist()
    views = [buffer[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    decode_all(emu, views, as_tensors)


# ---- damaged streams: rejected exactly when the CPU coder rejects them ----


def cpu_outcome(cpu, data, segments):
    """The CPU coder's decoded segments of one stream, or None if it rejects the stream."""
    try:
        dec = _rans.Decoder(cpu, data)
        outs = [dec.decode(idx) for _, idx in segments]
        dec.finish()
        return outs
    except ValueError as e:
        assert str(e).startswith("corrupt stream:")
        return None


def coder_outcome(c: coder.Coder, data, segments):
    """The coder's decoded segments of one stream, or None if it rejects the stream."""
    try:
        dec = c.decoder([data])
        outs = [dec.decode([idx])[0].cpu().numpy() for _, idx in segments]
        dec.finish()
        return outs
    except CodecError as e:
        assert str(e).startswith("stream 0: corrupt stream:")
        return None


def assert_same_outcome(cpu, c: coder.Coder, data, segments):
    expected, got = cpu_outcome(cpu, data, segments), coder_outcome(c, data, segments)
    if got is not None:
        assert all(g.dtype == np.int32 for g in got)
    assert (expected is None) == (got is None)
    for e, g in zip(expected or [], got or [], strict=True):
        np.testing.assert_array_equal(e, g)


def test_every_truncation_is_rejected():
    rng, cpu, emu, _ = random_setup(8, 3)
    segments = [(extreme_values(rng, 40)[:n], rng.integers(0, 3, n).astype(np.int32))
                for n in (20, 45)]
    data = _rans.encode(cpu, [segments])[0]
    for length in range(len(data)):
        assert coder_outcome(emu, data[:length], segments) is None


def test_corruptions_match_the_cpu_decoder():
    rng = np.random.default_rng(9)
    cpu, cdfs, sizes, offsets, values, indexes = latents(rng, "laplace", 5_000, num_tables=16)
    emu = emulated(cdfs, sizes, offsets)
    values[::97] = rng.integers(-2000, 2000, len(values[::97]))  # some escapes
    segments = [(values[:500], indexes[:500]), (values[500:], indexes[500:])]
    data = _rans.encode(cpu, [segments])[0]
    for pos in rng.integers(0, len(data), 300):
        bad = bytearray(data)
        bad[pos] ^= int(rng.integers(1, 256))
        assert_same_outcome(cpu, emu, bytes(bad), segments)


def test_bad_headers_and_escapes():
    _, cdfs, sizes, offsets = make_tables([quantize([0.5, 0.5])], [0])
    emu = emulated(cdfs, sizes, offsets)
    cases = [(bytes(100), "shorter than the 128-byte header"), (bytes(129), "odd length"),
             (bytes(128), "initial state < 2\\^16")]
    for data, message in cases:
        with pytest.raises(CodecError, match=f"^stream 0: corrupt stream: {message}"):
            emu.decoder([data])
    # An escape that claims 63 bits (tests/test_coder.py builds the same stream).
    x = 1 << 16
    for start, freq in ((63 << 10, 1 << 10), (32768, 32768)):
        x = ((x // freq) << 16) + x % freq + start
    dec = emu.decoder([struct.pack("<32I", x, *[1 << 16] * 31)])
    with pytest.raises(CodecError, match="escape longer than 40 bits"):
        dec.decode([np.zeros(1, np.int32)])


def test_finish_and_failure_are_per_stream_and_sticky():
    rng, cpu, emu, _ = random_setup(11, 1)
    seg = (rng.integers(-20, 20, 300).astype(np.int32), np.zeros(300, np.int32))
    good, twice = _rans.encode(cpu, [[seg], [seg, seg]])
    dec = emu.decoder([good, twice])
    dec.decode([seg[1], seg[1]])
    with pytest.raises(CodecError, match="^stream 1: corrupt stream: words left"):
        dec.finish()
    dec = emu.decoder([good, good[:-2]])
    with pytest.raises(CodecError, match="^stream 1: corrupt stream: read past the end"):
        dec.decode([seg[1], seg[1]])
    with pytest.raises(CodecError, match="^stream 1: corrupt stream: read past the end"):
        dec.finish()  # refuses: the failure stays


def test_bad_table_indexes_are_argument_errors():
    rng, cpu, emu, _ = random_setup(12, 3)
    values = rng.integers(-5, 5, 40).astype(np.int32)
    indexes = np.zeros(40, np.int32)
    wrong = indexes.copy()
    wrong[37] = 3
    with pytest.raises(CodecError, match="^stream 1: segment 1: table index 3 at position 37 "
                                         "is out of range \\[0, 3\\)$"):
        emu.encode([[(values, indexes)], [(values, indexes), (values, wrong)], [(values, wrong)]])
    with pytest.raises(CodecError, match="differ in length"):
        emu.encode([[(values, indexes[:39])]])
    with pytest.raises(CodecError, match="pair"):
        emu.encode([[(values,)]])
    with pytest.raises(ValueError, match="1-D"):
        emu.encode([[(values.reshape(4, 10), indexes.reshape(4, 10))]])
    data = _rans.encode(cpu, [[(values, indexes)]])[0]
    dec = emu.decoder([data])
    with pytest.raises(CodecError, match="^stream 0: table index out of range$"):
        dec.decode([wrong])
    with pytest.raises(ValueError, match="one index array"):
        dec.decode([indexes, indexes])
    np.testing.assert_array_equal(dec.decode([indexes])[0].numpy(), values)  # unchanged
    dec.finish()


# ---- the CPU coder behind the same interface, and the choice of backend ----


def test_cpu_coder_has_the_same_interface_and_bytes():
    rng, _, emu, (cdfs, sizes, offsets) = random_setup(13, 5)
    on_cpu = coder.open_coder(CdfTables(cdfs, sizes, offsets), "cpu", threads=2)
    streams = random_streams(rng, 5, 12)
    coded = encode_to_bytes(on_cpu, streams)
    assert coded == encode_to_bytes(emu, streams)
    decode_all(on_cpu, coded, streams)
    decode_all(emu, coded, streams)


def test_both_coders_give_the_same_errors():
    """The messages come from one table (csrc/rans_status.h); the CPU coder may add a detail in
    parentheses. Table indexes in encode are named by the same check."""
    rng, cpu, emu, (cdfs, sizes, offsets) = random_setup(14, 2)
    on_cpu = coder.open_coder(CdfTables(cdfs, sizes, offsets), "cpu")
    seg = (rng.integers(-20, 20, 300).astype(np.int32), np.zeros(300, np.int32))
    good = _rans.encode(cpu, [[seg]])[0]
    wrong = seg[1].copy()
    wrong[5] = -4

    def finish_early(c):
        c.decoder([good]).finish()

    def decode_short(c):
        c.decoder([good, good[:-2]]).decode([seg[1], seg[1]])

    cases = [lambda c: c.decoder([good, bytes(100)]), lambda c: c.decoder([bytes(129)]),
             lambda c: c.decoder([good, bytes(128)]), finish_early, decode_short,
             lambda c: c.encode([[seg], [seg, (seg[0], wrong)]])]
    for case in cases:
        cpu_message, emu_message = error_of(lambda case=case: case(on_cpu)), error_of(
            lambda case=case: case(emu))
        assert cpu_message == emu_message or cpu_message.startswith(emu_message + " ("), (
            cpu_message, emu_message)
    assert error_of(lambda: finish_early(on_cpu)) == (
        "stream 0: corrupt stream: words left after the last segment (224 words)")


def test_open_coder_picks_the_backend():
    tables = gaussian_tables()
    on_cpu, emu = coder.open_coder(tables, "cpu"), coder.open_coder(tables, "cpu", emulate=True)
    assert (on_cpu.name, on_cpu.device) == ("cpu", torch.device("cpu"))
    assert (emu.name, emu.device) == ("emulated", torch.device("cpu"))
    assert isinstance(on_cpu, coder.Coder) and isinstance(emu, coder.Coder)
    with pytest.raises(ValueError, match="emulated coder runs on the CPU"):
        coder.open_coder(tables, "cuda", emulate=True)
    with pytest.raises(ValueError, match="no rANS coder for device meta"):
        coder.open_coder(tables, "meta")
    if coder.available():
        assert coder.open_coder(tables, "cuda").name == "cuda" and not coder.unavailable_reason()
    else:
        assert coder.unavailable_reason()
        with pytest.raises(RuntimeError, match="CUDA rANS coder is not available"):
            coder.open_coder(tables, "cuda")


@pytest.mark.parametrize("emulate", [False, True])
def test_invalid_tables_are_rejected(emulate):
    bad = CdfTables(np.array([[0, 0, 65536]], np.int32), np.array([2], np.int32),
                    np.array([0], np.int32))
    with pytest.raises(ValueError, match="strictly increasing"):
        coder.open_coder(bad, "cpu", emulate=emulate)


def test_exported_contracts():
    """The stream header size and the status messages are the C++ coder's (engine._rans)."""
    assert coder.STREAM_HEADER_BYTES == _rans.HEADER_BYTES == 4 * _rans.LANES == 128
    messages = _rans.STATUS_MESSAGES
    assert messages[0] == "ok" and messages[_rans.BAD_TABLE_INDEX] == "table index out of range"
    assert all(m.startswith("corrupt stream: ") for i, m in enumerate(messages)
               if i not in (0, _rans.BAD_TABLE_INDEX))


def test_table_blob_layout():
    _, cdfs, sizes, offsets = make_tables([quantize([0.5, 0.5]), quantize([0.2, 0.3, 0.5])],
                                          [-3, 7])
    blob = coder.pack_tables(CdfTables(cdfs, sizes, offsets))
    assert blob.dtype == np.int32 and len(blob) % 4 == 0
    np.testing.assert_array_equal(blob[:8].reshape(2, 4), [[0, 2, -3, 0], [2, 3, 7, 0]])
    rows = blob[8:].view(np.uint16)
    np.testing.assert_array_equal(rows[:5], [*cdfs[0, :2], *cdfs[1, :3]])
    assert not rows[5:].any()


# ---- the CUDA sources compile (compile only: CI has nvcc but no GPU) ----


@pytest.mark.parametrize("source", sorted(CSRC.glob("*.cu")), ids=lambda p: p.name)
def test_cuda_sources_compile(source, tmp_path):
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not Path(nvcc).exists():
        pytest.skip("nvcc not found: the CUDA sources are compiled only where a CUDA toolkit is")
    cmd = [nvcc, "-c", "-arch=sm_90", "-std=c++17", "-O3", "-Xcompiler", "-Wall,-Wextra",
           "-I", str(CSRC), str(source), "-o", str(tmp_path / "out.o")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr, result.stderr
