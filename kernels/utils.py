"""What the Triton modules share: output allocation, the compute type, round half to even.

Imports triton: like every Triton module here, it is reached only through `kernels.dispatch`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


def empty(shape: torch.Size | tuple[int, ...], dtype: torch.dtype, device: torch.device
          ) -> Tensor:
    """Every kernel output is allocated here (the tests poison it to catch unwritten elements)."""
    return torch.empty(shape, dtype=dtype, device=device)


def compute_type(*dtypes: torch.dtype) -> tl.dtype:
    """The Triton type the kernels compute in: float64 if any input is, float32 otherwise
    (halves are widened: the interpreter stores bfloat16 as raw bits)."""
    return tl.float64 if torch.float64 in dtypes else tl.float32


@triton.jit
def round_half_even(x):
    """torch.round (ties to even) inside a kernel. Exact: x - floor(x) is exact, unlike
    floor(x + 0.5)."""
    f = tl.floor(x)
    d = x - f
    odd = f - 2.0 * tl.floor(0.5 * f)
    return tl.where((d > 0.5) | ((d == 0.5) & (odd == 1.0)), f + 1.0, f)
