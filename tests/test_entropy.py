import numpy as np
import pytest
import torch

from engine.entropy.cdf import TOTAL, CdfTables, quantize_pmf
from engine.entropy.gaussian import SCALES, GaussianConditional, gaussian_tables, scale_indexes


@pytest.mark.parametrize("n", [1, 2, 5, 300])
def test_quantize_pmf_sums_and_keeps_every_symbol(n, rng):
    pmf = rng.dirichlet(np.full(n, 0.3))
    pmf[0] = 0.0  # a zero-probability symbol must still be codable
    freq = quantize_pmf(pmf, tail=1e-12)
    assert freq.sum() == TOTAL and freq.min() >= 1 and len(freq) == n + 1


def test_quantize_pmf_is_close_to_the_distribution(rng):
    pmf = rng.dirichlet(np.ones(40))
    freq = quantize_pmf(pmf, tail=0.0)[:-1]
    assert np.abs(freq / TOTAL - pmf).max() < 41 / TOTAL


def test_gaussian_tables_are_valid():
    t = gaussian_tables()
    assert len(t) == len(SCALES)
    for row, size in zip(t.cdfs, t.sizes, strict=True):
        assert row[0] == 0 and row[size] == TOTAL and np.all(np.diff(row[: size + 1]) >= 1)
    # symbol 0 of table t is the value offsets[t]: tables are centred on 0
    assert np.all(t.offsets == -(t.sizes - 2) // 2)


def test_scale_indexes_pick_the_smallest_table_scale_not_below():
    s = torch.tensor(SCALES, dtype=torch.float64)
    assert scale_indexes(s).tolist() == list(range(len(SCALES)))
    just_above = s[:-1] * (1 + 1e-12)
    assert scale_indexes(just_above).tolist() == list(range(1, len(SCALES)))
    assert scale_indexes(torch.tensor([0.0, 1e-3, 1e6], dtype=torch.float64)).tolist() == [
        0, 0, len(SCALES) - 1]


def test_gaussian_likelihoods_sum_to_one():
    values = torch.arange(-60, 61, dtype=torch.float64).view(-1, 1)
    for scale in (0.05, 0.5, 3.0, 10.0):
        p = GaussianConditional.likelihood(values + 0.3, torch.full_like(values, scale),
                                           torch.full_like(values, 0.3))
        assert abs(float(p.sum()) - 1) < 1e-6


def test_factorized_tables_follow_the_learned_density(tiny_model):
    ez = tiny_model.entropy_z
    tables = ez.tables()
    assert len(tables) == tiny_model.config.N
    c = 3
    size = int(tables.sizes[c])
    grid = torch.arange(size - 1, dtype=torch.float32) + int(tables.offsets[c])
    z = (grid + ez.medians[c]).view(1, 1, -1, 1).expand(1, ez.channels, -1, 1).contiguous()
    p = ez.likelihood(z)[0, c, :, 0].double().numpy()
    freq = np.diff(tables.cdfs[c, : size + 1])[:-1] / TOTAL
    assert np.abs(freq - p).max() < 1e-3  # the escape symbol holds the tail mass


def test_concat_keeps_rows():
    a = CdfTables.from_freqs([quantize_pmf(np.array([0.5, 0.5]), 0.01)], [0])
    b = gaussian_tables()
    c = CdfTables.concat(a, b)
    assert len(c) == 1 + len(b)
    assert np.array_equal(c.cdfs[1:, : b.cdfs.shape[1]], b.cdfs)
