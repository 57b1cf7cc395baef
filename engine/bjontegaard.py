"""Bjontegaard deltas between two rate-distortion curves (VCEG-M33), with piecewise cubic
Hermite (PCHIP, Fritsch-Carlson) interpolation over the overlapping range, integrated exactly.

bd_rate: average bitrate difference in percent at equal PSNR (negative: fewer bits).
bd_psnr: average PSNR difference in dB at equal bitrate (positive: better quality).
"""

from __future__ import annotations

import numpy as np


def bd_rate(rate_ref, psnr_ref, rate_test, psnr_test) -> float:
    """Percent; computed on log-rate as a function of PSNR."""
    delta = _mean_gap(np.asarray(psnr_ref), np.log(rate_ref), np.asarray(psnr_test),
                      np.log(rate_test))
    return float((np.exp(delta) - 1) * 100)


def bd_psnr(rate_ref, psnr_ref, rate_test, psnr_test) -> float:
    """dB; computed on PSNR as a function of log-rate."""
    return _mean_gap(np.log(rate_ref), np.asarray(psnr_ref), np.log(rate_test),
                     np.asarray(psnr_test))


def _mean_gap(x_ref, y_ref, x_test, y_test) -> float:
    """Mean of (test - ref) over the overlap of the x ranges."""
    lo = max(np.min(x_ref), np.min(x_test))
    hi = min(np.max(x_ref), np.max(x_test))
    if not lo < hi:
        raise ValueError("the two curves do not overlap")
    return (_integral(x_test, y_test, lo, hi) - _integral(x_ref, y_ref, lo, hi)) / (hi - lo)


def _integral(x, y, lo: float, hi: float) -> float:
    order = np.argsort(x)
    x, y = np.asarray(x, float)[order], np.asarray(y, float)[order]
    if len(x) < 2 or np.any(np.diff(x) <= 0):
        raise ValueError("a curve needs at least two points with distinct x")
    d = _pchip_slopes(x, y)
    total = 0.0
    for k in range(len(x) - 1):
        a, b = max(lo, x[k]), min(hi, x[k + 1])
        if a >= b:
            continue
        h = x[k + 1] - x[k]
        m = (y[k + 1] - y[k]) / h
        c2 = (3 * m - 2 * d[k] - d[k + 1]) / h
        c3 = (d[k] + d[k + 1] - 2 * m) / h**2

        def antiderivative(s: float, k: int = k, c2: float = c2, c3: float = c3) -> float:
            return y[k] * s + d[k] * s**2 / 2 + c2 * s**3 / 3 + c3 * s**4 / 4

        total += antiderivative(b - x[k]) - antiderivative(a - x[k])
    return total


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h = np.diff(x)
    m = np.diff(y) / h
    if len(x) == 2:
        return np.array([m[0], m[0]])
    d = np.zeros_like(y)
    for k in range(1, len(x) - 1):
        if m[k - 1] * m[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / m[k - 1] + w2 / m[k])
    d[0] = _end_slope(h[0], h[1], m[0], m[1])
    d[-1] = _end_slope(h[-1], h[-2], m[-1], m[-2])
    return d


def _end_slope(h0: float, h1: float, m0: float, m1: float) -> float:
    d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    if np.sign(d) != np.sign(m0):
        return 0.0
    if np.sign(m0) != np.sign(m1) and abs(d) > 3 * abs(m0):
        return 3 * m0
    return d
