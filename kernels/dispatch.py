"""The kernels' entry points: for each call, the Triton kernel or its PyTorch reference.

NIC_KERNELS (read on every call, so it can be switched at run time):
    auto       (default) Triton for CUDA tensors when triton is installed, the reference
               otherwise;
    reference  never Triton;
    triton     always Triton, CPU tensors included (these run under TRITON_INTERPRET=1: how CI
               tests the kernels).
Whatever the mode, a call takes the reference for dtypes its kernel lacks, and for inputs that
need a gradient unless the kernel has a backward. int_conv and wavefront_step have a third
path: where Triton does not run, CPU tensors take the exact int8 or float32 GEMM
(kernels/int_conv_gemm.py) unless the mode is reference, and wavefront_step, where the int8
GEMM runs, its C++ step (kernels/wavefront_step_cpu.py).

Triton is optional (`pip install nicengine[triton]`). This module is the only one that imports
the Triton modules (kernels/gdn.py, subpel.py, quantize.py, sga.py, int_conv.py,
wavefront_step.py), inside the calls that run them: without triton the engine imports and runs
on the references, and TRITON_INTERPRET may be set until the first kernel runs (triton reads it
when it is imported and when it decorates a kernel).
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import Tensor

from . import int_conv_gemm as gemm_module  # its INT8_GEMM, read at each call
from .gdn_reference import gdn_reference
from .int_conv_gemm import int_conv_gemm
from .int_conv_reference import int_conv_reference
from .quantize_reference import likelihood_reference, quantize_reference, quantize_train_reference
from .sga_reference import num_classes, sga_round_reference
from .subpel_reference import subpel_igdn_reference, subpel_reference
from .wavefront_step_cpu import wavefront_step_cpu
from .wavefront_step_reference import WavefrontLayers, wavefront_step_reference

MODES = ("auto", "reference", "triton")
NETWORK_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
FLOAT_DTYPES = (*NETWORK_DTYPES, torch.float64)
_HAVE_TRITON = importlib.util.find_spec("triton") is not None


def use_triton(*tensors: Tensor, dtypes: tuple[torch.dtype, ...] = NETWORK_DTYPES,
               autograd: bool = False) -> bool:
    """Whether the kernel runs on these inputs. Dtypes outside `dtypes` take the reference; so do
    inputs that need a gradient, unless the kernel has a backward (`autograd`)."""
    mode = os.environ.get("NIC_KERNELS", "auto")
    if mode not in MODES:
        raise ValueError(f"NIC_KERNELS={mode!r}; expected one of {MODES}")
    if mode == "reference" or (not _HAVE_TRITON and mode == "auto"):
        return False
    if not _HAVE_TRITON:
        raise RuntimeError("NIC_KERNELS=triton, but triton is not installed")
    if any(t.dtype not in dtypes for t in tensors):
        return False
    if not autograd and torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return mode == "triton" or all(t.is_cuda for t in tensors)


def gdn(x: Tensor, beta: Tensor, gamma: Tensor, inverse: bool = False) -> Tensor:
    """`gdn_reference`, fused on the GPU (float32, float16, bfloat16; no gradient)."""
    if use_triton(x, beta, gamma):
        from .gdn import gdn_triton

        return gdn_triton(x, beta, gamma, inverse)
    return gdn_reference(x, beta, gamma, inverse)


def subpel(y: Tensor, bias: Tensor, r: int, lrelu: bool = False) -> Tensor:
    """`subpel_reference`, fused on the GPU (float64 included: h_s runs in float64 when coding,
    and the kernel is bit-identical to the reference there; no gradient)."""
    if use_triton(y, bias, dtypes=FLOAT_DTYPES):
        from .subpel import subpel_triton

        return subpel_triton(y, bias, r, lrelu)
    return subpel_reference(y, bias, r, lrelu)


def subpel_igdn(y: Tensor, bias: Tensor, r: int, beta: Tensor, gamma: Tensor) -> Tensor:
    """`subpel_igdn_reference`, fused on the GPU: bias, shuffle and IGDN in one pass of the GDN
    kernel (float32, float16, bfloat16; no gradient)."""
    if use_triton(y, bias, beta, gamma):
        from .gdn import gdn_triton

        return gdn_triton(y, beta, gamma, inverse=True, bias=bias, r=r)
    return subpel_igdn_reference(y, bias, r, beta, gamma)


# No kernel of its own: the fused passes below compute the likelihood inline.
likelihood = likelihood_reference


def quantize(y: Tensor, scales: Tensor, means: Tensor, scale_bounds: Tensor, *,
             scale_min: float, likelihood_min: float) -> tuple[Tensor, Tensor, Tensor]:
    """`quantize_reference` (symbols, likelihoods, scale-table indexes) in one pass on the GPU;
    symbols and indexes bit-identical to the reference's, so the bitstream does not depend on
    the kernels."""
    bounds = {"scale_min": scale_min, "likelihood_min": likelihood_min}
    if use_triton(y, scales, means, scale_bounds, dtypes=FLOAT_DTYPES) and (
            y.shape == scales.shape == means.shape):
        from .quantize import quantize_triton

        return quantize_triton(y, scales, means, scale_bounds, **bounds)
    return quantize_reference(y, scales, means, scale_bounds, **bounds)


def quantize_train(y: Tensor, scales: Tensor, means: Tensor, noise: bool,
                   uniform: Tensor | None = None, *, scale_min: float, likelihood_min: float
                   ) -> tuple[Tensor, Tensor]:
    """`quantize_train_reference` fused on the GPU, forward and backward one pass each. Without
    `uniform` the kernel draws its noise itself (Philox, regenerated in the backward pass)."""
    bounds = {"scale_min": scale_min, "likelihood_min": likelihood_min}
    inputs = (y, scales, means) if uniform is None else (y, scales, means, uniform)
    if use_triton(*inputs, dtypes=FLOAT_DTYPES, autograd=True) and all(
            t.shape == y.shape and t.dtype == y.dtype for t in inputs):
        from .quantize import quantize_train_triton

        return quantize_train_triton(y, scales, means, noise, uniform, **bounds)
    return quantize_train_reference(y, scales, means, noise, uniform, **bounds)


def sga_round(v: Tensor, method: str, tau: float, a: float = 2.3, r: float = 0.98,
              n: float = 1.5, gumbel: Tensor | None = None,
              generator: torch.Generator | None = None) -> Tensor:
    """`sga_round_reference` fused: one Triton pass forward, one backward (float32, float16,
    bfloat16).

    v: any shape; gumbel: optional (K, *v.shape) noise, K = 2 or 3 (`num_classes(method)`).
    Without it the kernel draws Philox noise seeded from `generator` (the reference draws torch
    noise), so the two agree (to float rounding) only when `gumbel` is given."""
    k = num_classes(method)
    if not tau > 0:
        raise ValueError(f"the temperature must be positive, got {tau}")
    if gumbel is not None and gumbel.shape != (k, *v.shape):
        raise ValueError(f"gumbel must have shape {(k, *v.shape)}, got {tuple(gumbel.shape)}")
    inputs = (v,) if gumbel is None else (v, gumbel)
    if use_triton(*inputs, dtypes=NETWORK_DTYPES, autograd=True):
        from .sga import sga_round_triton

        return sga_round_triton(v, method, tau, a, r, n, gumbel, generator)
    return sga_round_reference(v, method, tau, a, r, n, gumbel, generator)


def int_conv(x: Tensor, weight: Tensor) -> Tensor:
    """`int_conv_reference`: x (B, C, H, W) int8 * weight (Co, C, k, k) int8, k odd, "same"
    zero padding -> (B, Co, H, W) int32. Triton on the GPU, the float32 GEMM on the CPU; every
    path is bit-identical to the reference (the integer hyper-decoder relies on it)."""
    if use_triton(x, weight, dtypes=(torch.int8,)):
        from .int_conv import int_conv_triton

        return int_conv_triton(x, weight)
    if not _cpu_path(x):
        return int_conv_reference(x, weight)
    return int_conv_gemm(x, weight)


def wavefront_step(taps: Tensor, rows: Tensor, cols: Tensor, params_acc: Tensor,
                   layers: WavefrontLayers) -> tuple[Tensor, Tensor, Tensor]:
    """`wavefront_step_reference`: one step of the joint autoregressive model's wavefront, the
    gather, the context layer, the entropy-parameter layers and the table indexes -> (indexes
    int32, scales int64, means int64), each (B, M, P). One Triton kernel on the GPU, one C++
    call on x86 CPUs with AVX2; elsewhere the reference over `int_conv`. Bit-identical on every
    path."""
    if use_triton(taps, dtypes=(torch.int8,)):
        from .wavefront_step import wavefront_step_triton

        return wavefront_step_triton(taps, rows, cols, params_acc, layers)
    if gemm_module.INT8_GEMM and _cpu_path(taps):
        return wavefront_step_cpu(taps, rows, cols, params_acc, layers)
    return wavefront_step_reference(taps, rows, cols, params_acc, layers, conv=int_conv)


def _cpu_path(x: Tensor) -> bool:
    """Whether x takes the CPU's own exact path (C++ or BLAS), not the reference: a CPU tensor,
    unless NIC_KERNELS=reference."""
    return x.device.type == "cpu" and os.environ.get("NIC_KERNELS", "auto") != "reference"
