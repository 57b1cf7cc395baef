"""Single-thread throughput of the rANS coder on hyperprior-like latents.

    .venv/bin/python -m pytest benchmarks/bench_coder.py --benchmark-enable

Skipped unless timing is enabled (the project's pytest options include --benchmark-disable).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine import _rans as rans

N = 2_000_000
M = 1 << 16


def quantize(pmf: np.ndarray) -> np.ndarray:
    share = pmf / pmf.sum() * (M - len(pmf))
    freq = 1 + np.floor(share).astype(np.int64)
    freq[np.argsort(share - np.floor(share))[::-1][: M - freq.sum()]] += 1
    return freq


def gaussian_table(scale: float) -> np.ndarray:
    """Frequencies of round(N(0, scale)) on -r..r, r = ceil(8 scale), then ESCAPE."""
    r = math.ceil(8 * scale)
    cdf = [0.5 * math.erfc(-(k - 0.5) / (scale * math.sqrt(2))) for k in range(-r, r + 2)]
    return quantize(np.append(np.diff(cdf), 1e-9))


@pytest.fixture(scope="module")
def latents():
    """Values and table indexes like a hyperprior's y: 64 log-spaced scale tables, most elements
    with small scales (log-normal around 0.5), coded as round(y - mean) ~ N(0, scale)."""
    rng = np.random.default_rng(0)
    scales = np.exp(np.linspace(math.log(0.11), math.log(64.0), 64))
    freqs = [gaussian_table(s) for s in scales]
    cdfs = np.full((len(freqs), max(map(len, freqs)) + 1), M, dtype=np.int32)
    cdfs[:, 0] = 0
    for t, f in enumerate(freqs):
        cdfs[t, 1 : len(f) + 1] = np.cumsum(f)
    sizes = np.array([len(f) for f in freqs], dtype=np.int32)
    tables = rans.Tables(cdfs, sizes, -(sizes - 2) // 2)  # symbol 0 is -r
    sigma = np.clip(np.exp(rng.normal(math.log(0.5), 1.2, N)), 0.11, 64.0)
    indexes = np.searchsorted(scales, sigma).clip(0, len(scales) - 1).astype(np.int32)
    values = np.round(rng.normal(0.0, sigma)).astype(np.int32)
    return tables, values, indexes


def report(benchmark, capsys, what: str, data_bytes: int) -> None:
    rate = N / benchmark.stats.stats.min / 1e6
    benchmark.extra_info["msymbols_per_s"] = rate
    with capsys.disabled():
        print(f"\n{what}: {rate:.1f} M symbols/s on one thread "
              f"({8 * data_bytes / N:.3f} bits/symbol)")


@pytest.fixture
def timed(request):
    """The benchmark fixture, or a skip when timing is disabled."""
    opt = request.config.getoption
    if opt("benchmark_disable") and not opt("benchmark_enable"):
        pytest.skip("timing runs only with --benchmark-enable")
    return request.getfixturevalue("benchmark")


def test_encode(timed, latents, capsys):
    tables, values, indexes = latents
    (data,) = timed.pedantic(rans.encode, args=(tables, [[(values, indexes)]]),
                             kwargs={"threads": 1}, rounds=5, warmup_rounds=1)
    report(timed, capsys, "encode", len(data))


def test_decode(timed, latents, capsys):
    tables, values, indexes = latents
    (data,) = rans.encode(tables, [[(values, indexes)]], threads=1)

    def decode():
        dec = rans.Decoder(tables, data)
        out = dec.decode(indexes)
        dec.finish()
        return out

    np.testing.assert_array_equal(timed.pedantic(decode, rounds=5, warmup_rounds=1), values)
    report(timed, capsys, "decode", len(data))
