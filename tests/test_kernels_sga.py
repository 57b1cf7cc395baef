"""SGA / SGA+ relaxed rounding: the probability functions against their formulas (METHODS.md
section 3), the relaxation's limits, and the Triton kernel against the reference (compiled on a
GPU, under the interpreter on the CPU: the `device` fixture).

Kernel tolerances, given the same Gumbel noise: float32 (1e-5 absolute on values in [base,
base + 2]; gradients 1e-4 relative plus 1e-5 of the largest): both compute in float32 with
different formulas for the same function (sigmoid of a logit difference vs a softmax); float16
and bfloat16 one unit in the last place (both compute in float32 and round once; the interpreter
truncates to bfloat16 where torch rounds).
"""

import math

import pytest
import torch

from nicengine_kernels import sga_reference as ref
from nicengine_kernels.dispatch import sga_round

TWO_CLASS = ("atanh", "linear", "cosine", "ssl")
THREE_CLASS = ("linear3", "cosine3", "ssl3")
ULP = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}
# Odd sizes: less than one 1024-element block, and more than two blocks with a partial one.
SHAPES = [(3, 5, 7), (2, 1100)]


def _gumbel(shape, method, dtype=torch.float32, seed=0):
    return ref.gumbel_noise(shape, ref.num_classes(method), dtype=dtype,
                            generator=torch.Generator().manual_seed(seed))


def _values(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 3).to(dtype)


# --- the probability functions -----------------------------------------------------------------

X = torch.linspace(0.001, 0.999, 301, dtype=torch.float64)


@pytest.mark.parametrize("a", [0.63, 1.0, 1.6, 2.3])
def test_two_class_formulas(a):
    p = {m: ref.two_class_log_prob(X, m, a).exp() for m in TWO_CLASS}
    torch.testing.assert_close(p["atanh"], torch.exp(-torch.atanh(X)))
    torch.testing.assert_close(p["linear"], 1 - X)
    torch.testing.assert_close(p["cosine"], torch.cos(math.pi * X / 2) ** 2)
    torch.testing.assert_close(p["ssl"], torch.sigmoid(-a * torch.logit(X)))
    # a = 1 is exactly linear.
    torch.testing.assert_close(ref.two_class_log_prob(X, "ssl", 1.0).exp(), 1 - X)


def test_two_class_clamp():
    x = torch.tensor([0.0, 1e-9, 1.0], dtype=torch.float64)
    expected = ref.two_class_log_prob(torch.tensor([1e-5, 1e-5, 1 - 1e-5], dtype=torch.float64),
                                      "linear")
    torch.testing.assert_close(ref.two_class_log_prob(x, "linear"), expected)


@pytest.mark.parametrize("r,n,a", [(0.98, 1.5, 2.3), (1.0, 1.0, 1.0), (0.9, 2.0, 1.4)])
def test_three_class_formulas(r, n, a):
    d = torch.linspace(-1.5, 1.5, 301, dtype=torch.float64)
    w = {m: ref.three_class_log_weight(d, m, a, r, n).exp() for m in THREE_CLASS}
    torch.testing.assert_close(w["linear3"], torch.clamp_min(1 - r * d.abs(), 1e-6) ** n)
    cos = torch.cos(math.pi / 2 * torch.clamp(r * d, -1, 1))
    torch.testing.assert_close(w["cosine3"], torch.clamp_min(cos, 1e-6) ** n)
    x = torch.clamp(r * d.abs() / 1.5, 1e-5, 1 - 1e-5)
    torch.testing.assert_close(w["ssl3"], torch.sigmoid(-a * torch.logit(x)) ** n)


@pytest.mark.parametrize("method", ["linear", "cosine", "ssl"])
@pytest.mark.parametrize("a", [0.63, 1.0, 2.3, 5.0])
def test_two_class_probabilities_are_normalised(method, a):
    """p(x_d) + p(x_u) = 1 for the SGA+ functions (atanh is unnormalised)."""
    total = (ref.two_class_log_prob(X, method, a).exp()
             + ref.two_class_log_prob(1 - X, method, a).exp())
    torch.testing.assert_close(total, torch.ones_like(X))


@pytest.mark.parametrize("method", ref.METHODS)
@pytest.mark.parametrize("tau", [1.0, 0.5])
@pytest.mark.parametrize("noisy", [False, True])
def test_probabilities_positive_sum_to_one(method, tau, noisy):
    v = _values((4000,), torch.float64)
    k = ref.num_classes(method)
    g = _gumbel(v.shape, method, torch.float64) if noisy else None
    p = ref.probabilities(v, method, tau, gumbel=g)
    assert p.shape == (k, *v.shape)
    assert (p > 0).all()
    torch.testing.assert_close(p.sum(0), torch.ones_like(v))
    # The relaxed value is the probability-weighted candidate, within the candidates' range.
    out = ref.sga_round_reference(v, method, tau, gumbel=g)
    base, _ = ref.candidates(v, method)
    assert ((out >= base) & (out <= base + k - 1)).all()


@pytest.mark.parametrize("method", ref.METHODS)
@pytest.mark.parametrize("noisy", [False, True])
def test_zero_temperature_is_rounding(method, noisy):
    v = _values((2000,), torch.float64, seed=1)
    v = v[(v - v.floor() - 0.5).abs() > 0.05]  # away from the ties
    g = _gumbel(v.shape, method, torch.float64)
    if not noisy:
        g.zero_()
    errors = [(ref.sga_round_reference(v, method, tau, gumbel=g) - torch.round(v)).abs()
              for tau in (0.3, 0.03, 1e-3)]
    assert errors[-1].max() < 1e-6
    assert errors[0].mean() > errors[1].mean() >= errors[2].mean()


def _grad(v, method, tau, a=2.3, gumbel=None, fn=ref.sga_round_reference):
    v = v.clone().requires_grad_(True)
    fn(v, method, tau, a=a, gumbel=gumbel).sum().backward()
    return v.grad


ENDS = 3 + torch.tensor([1e-7, 1e-6, 1e-5, 2e-5, 1e-4, 1 - 1e-4, 1 - 2e-5, 1 - 1e-5, 1 - 1e-6],
                        dtype=torch.float64)
INNER = 3 + torch.linspace(0.01, 0.99, 99, dtype=torch.float64)


@pytest.mark.parametrize("method,a", [("ssl", 1.0), ("ssl", 2.3), ("ssl", 4.0), ("linear", 1.0),
                                      ("cosine", 1.0)])
def test_gradients_bounded_at_interval_ends(method, a):
    """For a >= 1 (and linear, cosine) the gradient near an integer is no larger than inside the
    interval; atanh and SSL with a < 1 blow up there (kept finite only by the clamp)."""
    zero = torch.zeros(2, len(ENDS), dtype=torch.float64)
    at_ends = _grad(ENDS, method, 1.0, a, zero).abs().max()
    inside = _grad(INNER, method, 1.0, a, torch.zeros(2, len(INNER), dtype=torch.float64))
    assert at_ends <= inside.abs().max() * (1 + 1e-9)
    for steep, a_steep in (("atanh", 1.0), ("ssl", 0.5)):
        assert _grad(ENDS, steep, 1.0, a_steep, zero).abs().max() > 10 * _grad(
            INNER, steep, 1.0, a_steep, torch.zeros(2, len(INNER), dtype=torch.float64)
        ).abs().max()


@pytest.mark.parametrize("method", ref.METHODS)
def test_gradients_finite_everywhere(method):
    """Integers, ties, values next to them, at low and high temperature, with noise."""
    base = torch.tensor([-2.0, 0.0, 5.0])
    offsets = torch.tensor([0.0, 1e-7, 1e-5, 0.5 - 1e-6, 0.5, 0.5 + 1e-6, 1 - 1e-5, 1 - 1e-7])
    v = (base[:, None] + offsets[None]).flatten()
    for tau in (1.0, 0.5, 0.05, 1e-3):
        g = _gumbel(v.shape, method)
        for gumbel in (g, torch.zeros_like(g)):
            assert torch.isfinite(_grad(v, method, tau, gumbel=gumbel)).all()


def test_unknown_method_and_bad_arguments():
    with pytest.raises(ValueError, match="unknown rounding method"):
        sga_round(torch.zeros(3), "round", 1.0)
    with pytest.raises(ValueError, match="temperature"):
        sga_round(torch.zeros(3), "ssl", 0.0)
    with pytest.raises(ValueError, match="gumbel"):
        sga_round(torch.zeros(3), "ssl3", 1.0, gumbel=torch.zeros(2, 3))


# --- the kernel --------------------------------------------------------------------------------

def _assert_close(actual, expected, dtype, grad=False):
    if dtype == torch.float32:
        rtol, atol = (1e-4, 1e-5 * float(expected.abs().max())) if grad else (0.0, 1e-5)
    else:
        rtol, atol = ULP[dtype], (1e-5 * float(expected.float().abs().max()) if grad else 1e-6)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("method", ref.METHODS)
def test_kernel_matches_reference(method, shape, dtype, device, poisoned):
    v = _values(shape, dtype).to(device)
    g = _gumbel(shape, method).to(device)
    grad_out = _values(shape, dtype, seed=2).to(device)
    tau = 0.4
    v_k = v.clone().requires_grad_(True)
    out = sga_round(v_k, method, tau, gumbel=g)
    assert len(poisoned) == 1 and out.data_ptr() == poisoned[0].data_ptr()
    out.backward(grad_out)
    assert len(poisoned) == 2 and not any(t.isnan().any() for t in poisoned)
    v_r = v.clone().requires_grad_(True)
    expected = ref.sga_round_reference(v_r, method, tau, gumbel=g)
    expected.backward(grad_out)
    assert out.dtype == v.dtype
    _assert_close(out, expected, dtype)
    _assert_close(v_k.grad, v_r.grad, dtype, grad=True)


@pytest.mark.parametrize("method", ["atanh", "ssl", "cosine3"])
def test_kernel_noise_repeatable_and_consistent(method, device, kernels_on):
    """Without a noise tensor the kernel draws Philox noise from the generator's seed, and the
    backward redraws the same: its gradient is the derivative of its own forward."""
    v = _values((3000,)).to(device)
    frac = v - v.round()
    v = v[(frac.abs() > 0.1) & (frac.abs() < 0.4)]  # no candidate or clamp changes within +-h

    def run(values, seed=7):
        values = values.clone().requires_grad_(True)
        out = sga_round(values, method, 0.7, generator=torch.Generator().manual_seed(seed))
        out.sum().backward()
        return out.detach(), values.grad

    out, grad = run(v)
    out_again, grad_again = run(v)
    assert torch.equal(out, out_again) and torch.equal(grad, grad_again)
    assert not torch.equal(out, run(v, seed=8)[0])
    h = 1e-3
    numeric = (run(v + h)[0].double() - run(v - h)[0].double()) / (2 * h)
    torch.testing.assert_close(grad.double(), numeric, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("method", ["linear", "ssl3"])
def test_kernel_noise_distribution(method, device, kernels_on):
    """The kernel's own Gumbel noise gives the reference's expected value."""
    v = torch.full((20000,), 2.3, device=device)
    mean_kernel = sga_round(v, method, 1.0, generator=torch.Generator().manual_seed(0))
    mean_ref = ref.sga_round_reference(v.cpu(), method, 1.0,
                                       generator=torch.Generator().manual_seed(1))
    assert abs(float(mean_kernel.mean()) - float(mean_ref.mean())) < 0.02
