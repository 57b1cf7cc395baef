"""Quantization kernels against their references: compiled on a GPU, under the Triton interpreter
on the CPU (the `device` fixture).

Symbols, scale indexes and y_hat are compared bit for bit (they decide the bitstream and what the
decoder sees). Likelihoods and gradients against the reference in the same dtype, (relative,
absolute): float64 (1e-6, 1e-9): the kernel's erfc is accurate to 1.2e-9, amplified by the scale
where Phi(a) and Phi(b) nearly cancel; float32 (2e-4, 1e-9): the reference's own float32
rounding, amplified alike; float16 (1e-2, 1e-3): the reference computes in float16, the kernel
in float32. Gradients take the absolute tolerance as a fraction of the largest gradient.
"""

import math

import pytest
import torch

from engine.entropy.gaussian import LIKELIHOOD_MIN, SCALE_MIN, SCALES, GaussianConditional
from nicengine_kernels.dispatch import quantize, quantize_train
from nicengine_kernels.quantize_reference import (
    likelihood_reference,
    quantize_reference,
    quantize_train_reference,
)

pytestmark = pytest.mark.usefixtures("kernels_on")

TOL = {torch.float64: (1e-6, 1e-9), torch.float32: (2e-4, 1e-9), torch.float16: (1e-2, 1e-3)}
BOUNDS = {"scale_min": SCALE_MIN, "likelihood_min": LIKELIHOOD_MIN}
SCALE_BOUNDS = torch.as_tensor(SCALES[:-1])
# Not multiples of the 1024-element block; one smaller than a block.
SHAPES = [(2, 5, 33, 31), (1, 24, 7, 9)]


def _inputs(shape, dtype, device, seed=0, scale_range=(0.03, 300.0)):
    """y, scales, means in float64 with ties (y - mu = k + 1/2) and scales on, just above and just
    below the table bounds."""
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    means = torch.randn(n, generator=g, dtype=torch.float64) * 2
    y = means + torch.randn(n, generator=g, dtype=torch.float64) * 4
    lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
    scales = torch.exp(lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64))
    k = min(8, n)
    means[:k] = torch.arange(k) / 4 - 1
    y[:k] = means[:k] + torch.tensor([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.25, 3.5])[:k]
    b = SCALE_BOUNDS.to(dtype).double()
    edges = torch.cat([b, torch.nextafter(b, b + 1), torch.nextafter(b, b - 1)])[: n - k]
    scales[k : k + edges.numel()] = edges
    return (t.view(shape).to(device) for t in (y, scales, means))


@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float64), (torch.float32,) * 2,
                                    (torch.float16,) * 2], ids=["codec", "float32", "float16"])
@pytest.mark.parametrize("shape", SHAPES)
def test_quantize_matches_reference(shape, dtypes, device, poisoned):
    y_dtype, dtype = dtypes
    y, scales, means = _inputs(shape, dtype, device)
    y, scales, means = y.to(y_dtype), scales.to(dtype), means.to(dtype)
    bounds = SCALE_BOUNDS.to(device)
    symbols, lik, indexes = quantize(y, scales, means, bounds, **BOUNDS)
    assert sorted(t.data_ptr() for t in poisoned) == sorted(
        t.data_ptr() for t in (symbols, lik, indexes))
    ref_symbols, ref_lik, ref_indexes = quantize_reference(y, scales, means, bounds, **BOUNDS)
    assert torch.equal(symbols, ref_symbols)
    assert torch.equal(indexes, ref_indexes)
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(lik, ref_lik, rtol=rtol, atol=atol)


def test_poison_catches_skipped_elements(device, launch_one_short):
    from nicengine_kernels import quantize as quantize_triton

    launch_one_short(quantize_triton)
    y, scales, means = _inputs(SHAPES[0], torch.float64, device)
    bounds = SCALE_BOUNDS.to(device)
    out = quantize(y.float(), scales, means, bounds, **BOUNDS)
    ref = quantize_reference(y.float(), scales, means, bounds, **BOUNDS)
    for o, r in zip(out, ref, strict=True):
        assert not torch.equal(o, r)


def _train(fn, y, scales, means, noise, uniform, grads):
    inputs = [t.detach().requires_grad_() for t in (y, scales, means)]
    outputs = fn(*inputs, noise, uniform, **BOUNDS)
    return outputs, torch.autograd.grad(outputs, inputs, grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("noise", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_quantize_train_matches_reference(shape, noise, dtype, device, poisoned):
    """Forward and backward, lower_bound's pass-through included: scales below SCALE_MIN,
    likelihoods below LIKELIHOOD_MIN and incoming gradients of both signs all occur."""
    y, scales, means = (t.to(dtype) for t in _inputs(shape, dtype, device, 1, (0.03, 50.0)))
    g = torch.Generator().manual_seed(2)
    uniform = (torch.rand(shape, generator=g) - 0.5).to(device, dtype) if noise else None
    grads = [torch.randn(shape, generator=g).to(device, dtype) for _ in range(2)]
    (y_hat, lik), grad = _train(quantize_train, y, scales, means, noise, uniform, grads)
    assert len(poisoned) == 5  # y_hat, lik and the three gradients
    (ref_y_hat, ref_lik), ref_grad = _train(quantize_train_reference, y, scales, means, noise,
                                            uniform, grads)
    assert torch.equal(y_hat, ref_y_hat)
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(lik, ref_lik, rtol=rtol, atol=atol)
    for got, want in zip(grad, ref_grad, strict=True):
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * float(want.abs().max()))


def _seeded(y, scales, means, seed=0):
    torch.manual_seed(seed)
    return quantize_train(y, scales, means, True, **BOUNDS)


def test_seeded_noise_is_repeatable_and_differentiated_exactly(device):
    """Without `uniform` the kernel draws the noise from a seed taken from torch's generator and
    redraws the same in backward: the gradient equals central differences of the same draw."""
    shape = (3, 4, 5)
    g = torch.Generator().manual_seed(3)
    y = torch.randn(shape, generator=g, dtype=torch.float64).to(device)
    means = torch.zeros(shape, dtype=torch.float64, device=device)
    scales = (0.3 + 3 * torch.rand(shape, generator=g, dtype=torch.float64)).to(device)
    assert torch.equal(_seeded(y, scales, means)[1], _seeded(y, scales, means)[1])
    assert not torch.equal(_seeded(y, scales, means)[1], _seeded(y, scales, means, 1)[1])
    w = torch.randn(shape, generator=g, dtype=torch.float64).to(device)
    inputs = [t.clone().requires_grad_() for t in (y, scales, means)]
    grads = torch.autograd.grad((w * _seeded(*inputs)[1]).sum(), inputs)
    eps = 1e-6
    for i, grad in enumerate(grads):
        d = torch.randn(shape, generator=g, dtype=torch.float64).to(device)
        plus, minus = [list((y, scales, means)) for _ in range(2)]
        plus[i], minus[i] = plus[i] + eps * d, minus[i] - eps * d
        numeric = ((w * _seeded(*plus)[1]).sum() - (w * _seeded(*minus)[1]).sum()) / (2 * eps)
        assert float(numeric) == pytest.approx(float((grad * d).sum()), rel=1e-6)


def test_seeded_noise_is_uniform_on_a_unit_interval(device):
    """E[likelihood of y + u] for u ~ U(-0.5, 0.5) matches the integral over u."""
    n = 8192
    zeros, ones = torch.zeros(n, device=device), torch.ones(n, device=device)
    y_hat, lik = _seeded(zeros, ones, zeros)
    assert torch.equal(y_hat, zeros)
    u = torch.linspace(-0.5, 0.5, 20001, dtype=torch.float64)
    expected = float(likelihood_reference(u, torch.ones(1).double(), 0 * u, **BOUNDS).mean())
    assert float(lik.double().mean()) == pytest.approx(expected, abs=6e-4)


def test_gaussian_conditional_uses_the_fused_training_form(device, poisoned):
    y, scales, means = (t.float() for t in _inputs((1, 8, 5, 6), torch.float32, device, 4))
    y_hat, lik = GaussianConditional()(y.requires_grad_(), scales, means, noise=False)
    lik.sum().backward()
    assert len(poisoned) == 5
    ref_y_hat, ref_lik = quantize_train_reference(y, scales, means, False, **BOUNDS)
    assert torch.equal(y_hat, ref_y_hat)
    torch.testing.assert_close(lik, ref_lik, rtol=2e-4, atol=1e-9)


def test_gaussian_conditional_quantizes_with_the_kernel(device, poisoned):
    """The codec's quantization (`GaussianConditional.quantize`) runs the fused kernel with the
    entropy model's bounds, and its indexes are the decoder's (`GaussianConditional.indexes`)."""
    y, scales, means = _inputs((1, 8, 5, 6), torch.float64, device, 5)
    symbols, bits, indexes = GaussianConditional.quantize(y.float(), scales, means)
    assert len(poisoned) == 3
    ref_symbols, ref_lik, _ = quantize_reference(y.float(), scales, means,
                                                 SCALE_BOUNDS.to(device), **BOUNDS)
    assert torch.equal(symbols, ref_symbols)
    assert torch.equal(indexes, GaussianConditional.indexes(scales))
    torch.testing.assert_close(bits, -torch.log2(ref_lik).flatten(1).sum(1), rtol=1e-6, atol=0)
