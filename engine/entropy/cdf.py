"""Quantized CDF tables for the rANS coder (16-bit precision, escape symbol last).

A table row describes one discrete distribution over `n` symbols: `n - 1` regular symbols
(values `offset .. offset + n - 2`) and a final ESCAPE symbol that carries the tail mass; values
outside the regular range are coded exactly as ESCAPE plus bypass bits (see docs/CODER.md).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

PRECISION = 16
TOTAL = 1 << PRECISION


def quantize_pmf(pmf: np.ndarray, tail: float) -> np.ndarray:
    """Integer frequencies summing to 2**16 for `pmf` followed by an escape of mass `tail`.

    Every symbol gets at least frequency 1 (anything can be coded); the rest of the range is
    shared in proportion to the probabilities, and the rounding remainder goes to the symbols with
    the largest fractional parts. Deterministic: float64 with stable tie-breaking by index.
    """
    p = np.append(np.asarray(pmf, dtype=np.float64), max(float(tail), 0.0))
    p = np.clip(p, 0.0, None)
    p /= p.sum()
    k = len(p)
    if not 2 <= k <= TOTAL // 2:
        raise ValueError(f"a table needs 2..{TOTAL // 2} symbols, got {k}")
    share = p * (TOTAL - k)
    freq = 1 + np.floor(share).astype(np.int64)
    remainder = TOTAL - int(freq.sum())
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    freq[order[:remainder]] += 1
    return freq


@dataclass(frozen=True)
class CdfTables:
    """Padded CDF rows for the coder: row t is valid on `[:sizes[t] + 1]`; `offsets[t]` is the
    value of its symbol 0."""

    cdfs: np.ndarray  # int32 (T, K)
    sizes: np.ndarray  # int32 (T,)
    offsets: np.ndarray  # int32 (T,)

    @staticmethod
    def from_freqs(freqs: list[np.ndarray], offsets: list[int]) -> CdfTables:
        width = max(len(f) for f in freqs) + 1
        cdfs = np.zeros((len(freqs), width), dtype=np.int32)
        for t, f in enumerate(freqs):
            cdfs[t, 1 : len(f) + 1] = np.cumsum(f)
            cdfs[t, len(f) + 1 :] = TOTAL
        sizes = np.array([len(f) for f in freqs], dtype=np.int32)
        return CdfTables(cdfs, sizes, np.asarray(offsets, dtype=np.int32))

    @staticmethod
    def concat(*tables: CdfTables) -> CdfTables:
        """Stack several table sets; the caller shifts indexes by the earlier sets' sizes."""
        width = max(t.cdfs.shape[1] for t in tables)
        rows = [np.pad(t.cdfs, ((0, 0), (0, width - t.cdfs.shape[1])), constant_values=TOTAL)
                for t in tables]
        return CdfTables(np.concatenate(rows), np.concatenate([t.sizes for t in tables]),
                         np.concatenate([t.offsets for t in tables]))

    def __len__(self) -> int:
        return len(self.sizes)

    @cached_property
    def fingerprint(self) -> int:
        """CRC32 of every table's size, offset and CDF: version 2 streams carry it, so that a
        change to how tables are derived fails loudly (and in the golden-stream tests) instead
        of decoding garbage."""
        crc = zlib.crc32(self.sizes.astype("<i4").tobytes())
        crc = zlib.crc32(self.offsets.astype("<i4").tobytes(), crc)
        for t, n in enumerate(self.sizes):
            crc = zlib.crc32(self.cdfs[t, : n + 1].astype("<i4").tobytes(), crc)
        return crc
