"""Tests of the interleaved rANS coder `engine._rans` (bitstream: docs/CODER.md)."""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from engine import _rans as rans

M = 1 << 16
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


# ---- helpers ----


def quantize(pmf: np.ndarray) -> np.ndarray:
    """Frequencies summing to 2**16, each >= 1: 1 + floor(p * (M - K)), remainder to the
    largest fractional parts."""
    p = np.asarray(pmf, dtype=np.float64)
    p = p / p.sum()
    share = p * (M - len(p))
    freq = 1 + np.floor(share).astype(np.int64)
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    freq[order[: M - freq.sum()]] += 1
    return freq


def make_tables(freqs, offsets) -> tuple[rans.Tables, np.ndarray, np.ndarray, np.ndarray]:
    """rans.Tables for the given frequency lists, and its padded (cdfs, sizes, offsets)."""
    cdfs = np.full((len(freqs), max(len(f) for f in freqs) + 1), M, dtype=np.int32)
    for t, f in enumerate(freqs):
        cdfs[t, 0] = 0
        cdfs[t, 1 : len(f) + 1] = np.cumsum(f)
    sizes = np.array([len(f) for f in freqs], dtype=np.int32)
    offsets = np.array(offsets, dtype=np.int32)
    return rans.Tables(cdfs, sizes, offsets), cdfs, sizes, offsets


def random_tables(rng, count: int):
    """Tables of 2..40 symbols with random (Dirichlet) probabilities and offsets."""
    freqs = [quantize(rng.dirichlet(np.ones(rng.integers(2, 41)))) for _ in range(count)]
    return make_tables(freqs, rng.integers(-30, 10, count))


def discretized(kind: str, scale: float, radius: int, tail: float = 1e-9) -> np.ndarray:
    """pmf of round(X) on -radius..radius plus an escape of mass `tail`, X ~ N(0, s) or L(0, s)."""
    edges = np.arange(-radius, radius + 2) - 0.5
    if kind == "gaussian":
        cdf = np.array([0.5 * math.erfc(-e / (scale * math.sqrt(2))) for e in edges])
    else:
        cdf = np.where(edges < 0, 0.5 * np.exp(edges / scale), 1 - 0.5 * np.exp(-edges / scale))
    return np.append(np.diff(cdf), tail)


def latents(rng, kind: str, n: int, num_tables: int = 64):
    """Hyperprior-like latents: each value picks one of `num_tables` log-spaced scales and is
    drawn from that distribution; its table covers +-8 scales, anything beyond escapes."""
    scales = np.exp(np.linspace(np.log(0.11), np.log(64.0), num_tables))
    radii = np.ceil(scales * 8).astype(int)
    freqs = [quantize(discretized(kind, s, r)) for s, r in zip(scales, radii, strict=True)]
    tables, cdfs, sizes, offsets = make_tables(freqs, [-int(r) for r in radii])
    indexes = rng.integers(0, num_tables, n).astype(np.int32)
    if kind == "gaussian":
        x = rng.normal(0.0, scales[indexes])
    else:
        x = rng.laplace(0.0, scales[indexes])
    return tables, cdfs, sizes, offsets, np.round(x).astype(np.int32), indexes


def ideal_bits(cdfs, sizes, offsets, values, indexes) -> float:
    """sum of -log2(freq / 2**16) over every coded symbol, escape lengths and chunks included."""
    values = values.astype(np.int64)
    size, off = sizes[indexes].astype(np.int64), offsets[indexes].astype(np.int64)
    s = values - off
    escaped = (s < 0) | (s >= size - 1)
    s = np.where(escaped, size - 1, s)
    freq = cdfs[indexes, s + 1].astype(np.int64) - cdfs[indexes, s]
    hi = off + size - 1
    u = np.where(values >= hi, 2 * (values - hi), 2 * (off - 1 - values) + 1)[escaped]
    nbits = np.array([int(x).bit_length() for x in u], dtype=np.int64)
    return float(np.sum(16 - np.log2(freq)) + np.sum(6 + nbits))


def roundtrip(tables, segments) -> bytes:
    """Encodes one stream, checks that it decodes exactly, returns its bytes."""
    data = rans.encode(tables, [segments])[0]
    dec = rans.Decoder(tables, data)
    for values, indexes in segments:
        out = dec.decode(indexes)
        assert out.dtype == np.int32
        np.testing.assert_array_equal(out, values)
    dec.finish()
    return data


def reference_encode(cdfs, sizes, offsets, segments) -> bytes:
    """docs/CODER.md transcribed literally in Python: the C++ (and any GPU) coder must match it
    byte for byte."""
    x = [1 << 16] * 32
    words = []  # in reverse read order

    def put(lane, start, freq):
        if x[lane] >= freq << 16:
            words.append(x[lane] & 0xFFFF)
            x[lane] >>= 16
        x[lane] = ((x[lane] // freq) << 16) + x[lane] % freq + start

    def put_uniform(lane, b, k):
        put(lane, b << (16 - k), 1 << (16 - k))

    for values, indexes in reversed(segments):
        for base in reversed(range(0, len(values), 32)):
            lanes = range(min(32, len(values) - base))
            syms = []  # (table, symbol, u or None)
            for lane in lanes:
                v, t = int(values[base + lane]), int(indexes[base + lane])
                size, off = int(sizes[t]), int(offsets[t])
                if 0 <= v - off < size - 1:
                    syms.append((t, v - off, None))
                else:
                    hi = off + size - 1
                    syms.append((t, size - 1, 2 * (v - hi) if v >= hi else 2 * (off - 1 - v) + 1))
            for j in (2, 1, 0):
                for lane in reversed(lanes):
                    u = syms[lane][2]
                    if u is not None and u.bit_length() > 16 * j:
                        k = min(16, u.bit_length() - 16 * j)
                        put_uniform(lane, (u >> (16 * j)) & ((1 << k) - 1), k)
            for lane in reversed(lanes):
                if syms[lane][2] is not None:
                    put_uniform(lane, syms[lane][2].bit_length(), 6)
            for lane in reversed(lanes):
                t, s, _ = syms[lane]
                put(lane, int(cdfs[t, s]), int(cdfs[t, s + 1] - cdfs[t, s]))
    return struct.pack("<32I", *x) + struct.pack(f"<{len(words)}H", *reversed(words))


def extreme_values(rng, n: int) -> np.ndarray:
    special = np.array([INT32_MIN, INT32_MAX, INT32_MIN + 1, INT32_MAX - 1, 0, -1, 1,
                        2**16, -(2**16), 2**20 + 3, -(2**30), 2**30], dtype=np.int64)
    mixed = np.concatenate([
        special,
        rng.integers(-40, 40, n),
        rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True),
        np.round(rng.standard_cauchy(n) * 100).clip(INT32_MIN, INT32_MAX),
    ])
    return rng.permutation(mixed).astype(np.int32)


# ---- format ----


def test_constants():
    assert rans.LANES == 32
    assert rans.PRECISION == 16
    assert rans.HEADER_BYTES == 128
    assert rans.STATUS_MESSAGES[rans.BAD_TABLE_INDEX] == "table index out of range"


def test_matches_reference_encoder():
    rng = np.random.default_rng(1)
    tables, cdfs, sizes, offsets = random_tables(rng, 5)
    segments = []
    for n in (45, 0, 70, 32):
        values = np.where(rng.random(n) < 0.8, rng.integers(-35, 10, n),
                          rng.integers(INT32_MIN, INT32_MAX, n)).astype(np.int32)
        segments.append((values, rng.integers(0, 5, n).astype(np.int32)))
    data = roundtrip(tables, segments)
    assert data == reference_encode(cdfs, sizes, offsets, segments)


def test_worked_example_of_the_docs():
    tables, *_ = make_tables([np.array([40000, 20000, 5536])], [-1])
    (data,) = rans.encode(tables, [[(np.array([0, -1, 1000]), np.zeros(3))]])
    expected = "e0b10300" "c0630100" "c0f91900" + "00000100" * 29 + "c0f9"
    assert data.hex() == expected


def test_empty_stream_is_the_initial_states():
    tables, *_ = random_tables(np.random.default_rng(0), 1)
    for streams in ([[]], [[(np.zeros(0, np.int32), np.zeros(0, np.int32))]]):
        (data,) = rans.encode(tables, streams)
        assert data == struct.pack("<32I", *[1 << 16] * 32)
        dec = rans.Decoder(tables, data)
        dec.finish()


def test_stream_length_is_header_plus_words():
    rng = np.random.default_rng(2)
    tables, *_ = random_tables(rng, 3)
    for n in (1, 100, 5000):
        data = rans.encode(tables, [[(rng.integers(-20, 20, n), rng.integers(0, 3, n))]])[0]
        assert len(data) >= 128 and len(data) % 2 == 0


# ---- round trips ----


@pytest.mark.parametrize("offset", [0, -7, 12345, INT32_MIN, INT32_MAX - 100, INT32_MAX - 38])
def test_extreme_values_roundtrip(offset):
    rng = np.random.default_rng(abs(offset) % 1000)
    freqs = [quantize(rng.dirichlet(np.ones(40))), quantize([0.5, 0.5]), quantize([0.9, 0.1])]
    tables, *_ = make_tables(freqs, [offset, offset, -offset // 2])
    values = extreme_values(rng, 300)
    # Also values right at the edges of the regular ranges.
    edges = np.array([offset - 1, offset, offset + 38, offset + 39, offset + 40], dtype=np.int64)
    values = np.concatenate([values, edges.clip(INT32_MIN, INT32_MAX).astype(np.int32)])
    indexes = rng.integers(0, 3, len(values)).astype(np.int32)
    roundtrip(tables, [(values, indexes)])


@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 1000])
def test_awkward_sizes(n):
    rng = np.random.default_rng(n)
    tables, *_ = random_tables(rng, 4)
    roundtrip(tables, [(extreme_values(rng, n)[:n], rng.integers(0, 4, n).astype(np.int32))])


def test_multi_segment_partial_groups():
    rng = np.random.default_rng(3)
    tables, cdfs, sizes, offsets = random_tables(rng, 6)
    segments = [(extreme_values(rng, n)[:n], rng.integers(0, 6, n).astype(np.int32))
                for n in (33, 0, 1, 65, 32, 7, 200)]
    data = roundtrip(tables, segments)
    assert data == reference_encode(cdfs, sizes, offsets, segments)


def test_segment_boundaries_matter():
    """Every segment restarts at lane 0, so splitting the same values differently changes the
    stream and decoding with the wrong split fails."""
    rng = np.random.default_rng(4)
    tables, *_ = random_tables(rng, 2)
    values, indexes = rng.integers(-20, 5, 100).astype(np.int32), np.zeros(100, np.int32)
    whole = rans.encode(tables, [[(values, indexes)]])[0]
    split = rans.encode(tables, [[(values[:10], indexes[:10]), (values[10:], indexes[10:])]])[0]
    assert whole != split
    dec = rans.Decoder(tables, split)
    try:
        out = dec.decode(indexes)
        dec.finish()
    except ValueError as e:
        assert str(e).startswith("corrupt stream:")
    else:
        assert not np.array_equal(out, values)


def test_many_streams_encode_and_decode_many():
    rng = np.random.default_rng(5)
    tables, *_ = random_tables(rng, 8)
    streams = []
    for _ in range(40):
        streams.append([(extreme_values(rng, n)[:n], rng.integers(0, 8, n).astype(np.int32))
                        for n in rng.integers(0, 300, rng.integers(1, 4))])
    parallel = rans.encode(tables, streams, threads=0)
    assert parallel == rans.encode(tables, streams, threads=1)
    assert parallel[0] == rans.encode(tables, streams[:1])[0]
    decoders = [rans.Decoder(tables, data) for data in parallel]
    for k in range(3):
        todo = [i for i, s in enumerate(streams) if k < len(s)]
        outs = rans.decode_many([decoders[i] for i in todo], [streams[i][k][1] for i in todo],
                                threads=2)
        for i, out in zip(todo, outs, strict=True):
            np.testing.assert_array_equal(out, streams[i][k][0])
    for dec in decoders:
        dec.finish()


def test_escape_heavy():
    rng = np.random.default_rng(6)
    # Mostly-escape tables: tiny regular ranges, large escape mass.
    tables, cdfs, sizes, offsets = make_tables(
        [quantize([0.05, 0.95]), quantize([0.1, 0.1, 0.8])], [0, -1])
    n = 5000
    magnitude = 2 ** rng.integers(0, 32, n).astype(np.int64)  # every escape bit length
    values = (rng.choice([-1, 1], n) * (magnitude + rng.integers(0, magnitude))).clip(
        INT32_MIN, INT32_MAX).astype(np.int32)
    indexes = rng.integers(0, 2, n).astype(np.int32)
    data = roundtrip(tables, [(values, indexes)])
    assert data == reference_encode(cdfs, sizes, offsets, [(values, indexes)])


@pytest.mark.parametrize("search", ["default", "scalar"])
def test_symbol_search_on_extreme_tables(search):
    """The decoder's bucketed search: every symbol of tables whose buckets hold one symbol,
    many one-slot symbols (up to 2**16 of them), or a wide symbol between one-slot ones. The
    portable search ("scalar") is also checked on CPUs where an AVX-512 one runs by default."""
    if search == "scalar" and not os.environ.get("NIC_RANS_SCALAR"):
        # The search is chosen when the extension loads: run the check in a child process.
        test = f"{__file__}::test_symbol_search_on_extreme_tables[default]"
        child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                test], env={**os.environ, "NIC_RANS_SCALAR": "1"},
                               capture_output=True, text=True)
        assert child.returncode == 0, child.stdout + child.stderr
        return
    rng = np.random.default_rng(8)
    freqs = [np.ones(M, dtype=np.int64), np.array([M - 1, 1]),
             np.concatenate([np.ones(999), [M - 1998], np.ones(999)]).astype(np.int64),
             quantize(discretized("gaussian", 300.0, 2400))]
    tables, cdfs, sizes, offsets = make_tables(freqs, [0, 5, -999, -2400])
    indexes = rng.integers(0, len(freqs), 200_000).astype(np.int32)
    # Every regular symbol and the escape equally often, whatever its probability.
    s = rng.integers(0, sizes[indexes] + 1)
    values = (offsets[indexes] + s).astype(np.int32)
    roundtrip(tables, [(values, indexes)])


# ---- efficiency ----


@pytest.mark.parametrize("kind", ["gaussian", "laplace"])
def test_overhead_below_one_percent(kind):
    rng = np.random.default_rng(7)
    tables, cdfs, sizes, offsets, values, indexes = latents(rng, kind, 1_000_000)
    data = roundtrip(tables, [(values[:4000], indexes[:4000]), (values[4000:], indexes[4000:])])
    ideal = ideal_bits(cdfs, sizes, offsets, values, indexes)
    overhead = 8 * len(data) / ideal - 1
    print(f"{kind}: {ideal / len(values):.3f} bits/value ideal, overhead {100 * overhead:.3f} %")
    assert overhead < 0.01


# ---- robustness ----


def test_every_truncation_is_rejected():
    rng = np.random.default_rng(8)
    tables, *_ = random_tables(rng, 3)
    segments = [(extreme_values(rng, 40)[:n], rng.integers(0, 3, n).astype(np.int32))
                for n in (20, 45)]
    data = rans.encode(tables, [segments])[0]
    for length in range(len(data)):
        with pytest.raises(ValueError, match="^corrupt stream:"):
            dec = rans.Decoder(tables, data[:length])
            for _, indexes in segments:
                dec.decode(indexes)
            dec.finish()


def test_single_byte_corruptions():
    rng = np.random.default_rng(9)
    tables, _, _, _, values, indexes = latents(rng, "laplace", 20_000, num_tables=16)
    segments = [(values[:500], indexes[:500]), (values[500:], indexes[500:])]
    data = rans.encode(tables, [segments])[0]
    trials, detected = 400, 0
    for pos in rng.integers(0, len(data), trials):
        bad = bytearray(data)
        bad[pos] ^= int(rng.integers(1, 256))
        try:
            dec = rans.Decoder(tables, bad)
            for _, idx in segments:
                dec.decode(idx)
            dec.finish()
        except ValueError as e:
            assert str(e).startswith("corrupt stream:")
            detected += 1
    print(f"detected {detected}/{trials} single-byte corruptions")
    assert detected >= 0.9 * trials


def test_decoder_refuses_after_failure():
    rng = np.random.default_rng(10)
    tables, *_ = random_tables(rng, 1)
    values, indexes = rng.integers(-20, 20, 300).astype(np.int32), np.zeros(300, np.int32)
    data = rans.encode(tables, [[(values, indexes)]])[0]
    dec = rans.Decoder(tables, data[:-2])
    with pytest.raises(ValueError, match="^corrupt stream: read past"):
        dec.decode(indexes)
    with pytest.raises(ValueError, match="^corrupt stream: the decoder already failed"):
        dec.decode(indexes[:1])
    with pytest.raises(ValueError, match="^corrupt stream:"):
        dec.finish()


def test_finish_detects_unread_data_and_bad_header():
    rng = np.random.default_rng(11)
    tables, *_ = random_tables(rng, 1)
    seg = (rng.integers(-20, 20, 300).astype(np.int32), np.zeros(300, np.int32))
    data = rans.encode(tables, [[seg, seg]])[0]
    dec = rans.Decoder(tables, data)
    dec.decode(seg[1])
    with pytest.raises(ValueError, match="^corrupt stream: words left after the last segment "
                                         "\\(\\d+ words\\)$"):
        dec.finish()
    with pytest.raises(ValueError, match="^corrupt stream: initial state < 2\\^16 \\(lane 0\\)$"):
        rans.Decoder(tables, bytes(128))
    with pytest.raises(ValueError, match="^corrupt stream: odd length"):
        rans.Decoder(tables, data + b"\0")


def test_bad_escape_data_is_rejected():
    """A stream that claims an escape longer than 40 bits, hand-made with the reference coder's
    arithmetic: lane 0 holds ESCAPE (table [0.5, 0.5]: cdf 0, 32768, 65536) then nbits = 63."""
    tables, *_ = make_tables([quantize([0.5, 0.5])], [0])
    x = 1 << 16
    for start, freq in ((63 << 10, 1 << 10), (32768, 32768)):  # encoder order: nbits, then ESCAPE
        assert x < freq << 16
        x = ((x // freq) << 16) + x % freq + start
    data = struct.pack("<32I", x, *[1 << 16] * 31)
    dec = rans.Decoder(tables, data)
    with pytest.raises(ValueError, match="^corrupt stream: escape longer than 40 bits"):
        dec.decode(np.zeros(1, np.int32))


# ---- argument checking ----


def test_invalid_tables_rejected():
    good = np.array([[0, 100, 65536]], np.int32)
    three = np.array([[0, 100, 200, 65536]], np.int32)
    one, zero = np.array([2], np.int32), np.array([0], np.int32)
    rans.Tables(good, one, zero)
    cases = [
        (np.array([[1, 100, 65536]]), one, zero, "from 0 to 65536"),
        (np.array([[0, 100, 65535]]), one, zero, "from 0 to 65536"),
        (np.array([[0, 0, 65536]]), one, zero, "strictly increasing"),
        (np.array([[0, 70000, 65536]]), one, zero, "strictly increasing"),
        (good, np.array([1]), zero, "size 1"),
        (good, np.array([3]), zero, "size 3"),
        (three, np.array([3]), np.array([INT32_MAX]), "exceeds int32"),
        (np.zeros((0, 3)), np.zeros(0), np.zeros(0), "at least one table"),
        (good[0], one, zero, "2-D"),
        (good, np.array([2, 2]), zero, "length T"),
        (good, one, np.zeros((1, 1)), "length T"),
    ]
    for cdfs, sizes, offsets, message in cases:
        with pytest.raises(ValueError, match=message):
            rans.Tables(cdfs, sizes, offsets)
    assert rans.Tables(np.repeat(good, 3, axis=0), np.full(3, 2), np.zeros(3)).num_tables == 3


def test_bad_indexes_and_arguments_rejected():
    rng = np.random.default_rng(12)
    tables, *_ = random_tables(rng, 3)
    values = np.zeros(40, np.int32)
    for bad in (3, -1, INT32_MAX):
        indexes = np.zeros(40, np.int32)
        indexes[37] = bad
        message = f"^stream 1: segment 2: table index {bad} at position 37 is out of range"
        good = (values, np.zeros(40, np.int32))
        with pytest.raises(ValueError, match=message):
            rans.encode(tables, [[good], [good, good, (values, indexes)], [(values, indexes)]])
        with pytest.raises(ValueError, match=message):
            rans.check_indexes(tables, [[good[1]], [good[1], good[1], indexes], [indexes]])
    rans.check_indexes(tables, [[values], []])
    with pytest.raises(ValueError, match="differ in length"):
        rans.encode(tables, [[(values, np.zeros(39, np.int32))]])
    with pytest.raises(ValueError, match="1-D"):
        rans.encode(tables, [[(values.reshape(4, 10), values.reshape(4, 10))]])
    with pytest.raises(ValueError, match="pair"):
        rans.encode(tables, [[(values,)]])
    with pytest.raises(ValueError, match="threads"):
        rans.encode(tables, [[(values, values)]], threads=-1)

    data = rans.encode(tables, [[(values, values)]])[0]
    dec = rans.Decoder(tables, data)
    with pytest.raises(ValueError, match="table index 5 at position 0"):
        dec.decode(np.full(40, 5, np.int32))
    with pytest.raises(ValueError, match="1-D"):
        dec.decode(values.reshape(4, 10))
    np.testing.assert_array_equal(dec.decode(values), values)  # argument errors consume nothing
    dec.finish()
    with pytest.raises(ValueError, match="same decoder twice"):
        rans.decode_many([dec, dec], [values, values])
    with pytest.raises(ValueError, match="one index array per decoder"):
        rans.decode_many([dec], [values, values])


def test_batch_calls_name_the_failing_stream():
    """open_many, decode_many and finish_many, as engine.coder uses them: errors name the first
    failing stream; the other streams of a decode_many call are decoded all the same."""
    rng = np.random.default_rng(14)
    tables, *_ = random_tables(rng, 2)
    seg = (rng.integers(-20, 20, 100).astype(np.int32), rng.integers(0, 2, 100).astype(np.int32))
    data = rans.encode(tables, [[seg]])[0]
    with pytest.raises(ValueError, match="^stream 2: corrupt stream: odd length$"):
        rans.open_many(tables, [data, data, data + b"\0", b""])
    decoders = rans.open_many(tables, [data, data[:-2], data[:-4], data])
    with pytest.raises(ValueError, match="^stream 1: corrupt stream: read past the end"):
        rans.decode_many(decoders, [seg[1]] * 4, threads=2)
    for k in (0, 3):
        decoders[k].finish()
    with pytest.raises(ValueError, match="^stream 1: corrupt stream: the decoder already failed"):
        rans.finish_many(decoders)
    decoders = rans.open_many(tables, [data, data])
    with pytest.raises(ValueError, match="^stream 1: table index 2 at position 0"):
        rans.decode_many(decoders, [seg[1], np.full(100, 2, np.int32)])
    with pytest.raises(ValueError, match="^stream 1: corrupt stream: words left"):
        rans.finish_many(decoders)


def test_accepts_other_integer_dtypes_and_buffers():
    rng = np.random.default_rng(13)
    tables, *_ = random_tables(rng, 2)
    values, indexes = rng.integers(-30, 30, 77), rng.integers(0, 2, 77)  # int64 arrays
    data = rans.encode(tables, [[(values, indexes)]])[0]
    for buf in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        dec = rans.Decoder(tables, buf)
        np.testing.assert_array_equal(dec.decode(indexes), values)
        dec.finish()
