"""Compress and decompress of one Kodak image (768x512) with the shipped default model.

    .venv/bin/python -m pytest benchmarks/bench_codec.py --benchmark-enable

Skipped unless timing is enabled (the project's pytest options include --benchmark-disable),
without ../shared/data/kodak, or without shipped weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import DEFAULT_QUALITY, Codec, zoo
from engine.images import to_batch

KODIM = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak" / "kodim23.png"

pytestmark = [
    pytest.mark.skipif(not KODIM.exists(), reason="needs ../shared/data/kodak"),
    pytest.mark.skipif(DEFAULT_QUALITY not in zoo.shipped_qualities(), reason="no shipped model"),
]


@pytest.fixture(scope="module")
def setup():
    codec = Codec(DEFAULT_QUALITY)
    x = to_batch(KODIM)
    return codec, x, codec.compress(x)


def test_compress(benchmark, setup):
    codec, x, _ = setup
    benchmark.pedantic(codec.compress, args=(x,), rounds=5, warmup_rounds=1)


def test_decompress(benchmark, setup):
    codec, _, data = setup
    benchmark.pedantic(codec.decompress, args=(data,), rounds=5, warmup_rounds=1)
