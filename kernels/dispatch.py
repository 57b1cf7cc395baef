"""Kernel or reference: the one decision every fused kernel makes, and what the kernels share.

NIC_KERNELS (read on every call, so it can be switched at run time):
    auto       (default) Triton for CUDA tensors when triton is installed, the reference
               otherwise;
    reference  never Triton;
    triton     always Triton, CPU tensors included (these run under TRITON_INTERPRET=1: how CI
               tests the kernels).
Triton is optional and imported on the first launch of a kernel, not with the modules: that
keeps `import kernels.*` working without it, and TRITON_INTERPRET may be set until then (triton
reads it when it is imported and when it decorates a kernel).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable

import torch
from torch import Tensor

tl = None  # triton.language, bound by `load`: the shared @jit helpers at the end use it

MODES = ("auto", "reference", "triton")
NETWORK_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
FLOAT_DTYPES = (*NETWORK_DTYPES, torch.float64)
_HAVE_TRITON = importlib.util.find_spec("triton") is not None
_load_lock = threading.Lock()


def jit(fn: Callable) -> Callable:
    """Marks a Triton function of a kernel module; `load` applies triton.jit to it."""
    fn.triton_jit = True
    return fn


def load(namespace: dict) -> None:
    """On a kernel module's first launch: import triton, bind the module's `tl` and replace the
    functions `jit` marked by triton.jit ones."""
    if namespace["tl"] is not None:
        return
    with _load_lock:
        if namespace["tl"] is None:
            import triton
            import triton.language as tl

            for name, value in list(namespace.items()):
                if getattr(value, "triton_jit", False):
                    namespace[name] = triton.jit(value)
            namespace["tl"] = globals()["tl"] = tl


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


def empty(shape: torch.Size | tuple[int, ...], dtype: torch.dtype, device: torch.device
          ) -> Tensor:
    """Every kernel output is allocated here (the tests poison it to catch unwritten elements)."""
    return torch.empty(shape, dtype=dtype, device=device)


def compute_type(*dtypes: torch.dtype) -> tl.dtype:
    """The Triton type the kernels compute in: float64 if any input is, float32 otherwise
    (halves are widened: the interpreter stores bfloat16 as raw bits)."""
    import triton.language as tl

    return tl.float64 if torch.float64 in dtypes else tl.float32


def next_pow2(n: int) -> int:
    """The least power of two >= n (1 for n <= 1)."""
    return 1 << max(0, n - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    """ceil(a / b): the program count that covers a elements in blocks of b."""
    return -(-a // b)


@jit
def round_half_even(x):
    """torch.round (ties to even) inside a kernel. Exact: x - floor(x) is exact, unlike
    floor(x + 0.5)."""
    f = tl.floor(x)
    d = x - f
    odd = f - 2.0 * tl.floor(0.5 * f)
    return tl.where((d > 0.5) | ((d == 0.5) & (odd == 1.0)), f + 1.0, f)
