"""The CUDA extension's calls (encode, open, decode, finish) on CPU tensors, run by the warp
algorithm on the host: engine._rans_warp_host, csrc/rans_warp.h with the 32 lanes of a warp as
loops. Tests without a GPU run the warp coder's glue and algorithm through this module."""

from __future__ import annotations

import numpy as np
import torch

from .. import _rans_warp_host

MAX_WORDS_PER_VALUE = _rans_warp_host.MAX_WORDS_PER_VALUE


def _numpy(args: tuple) -> list:
    """Tensors as arrays that share their memory, so that in-place updates reach the tensors."""
    return [a.numpy() if isinstance(a, torch.Tensor) else a for a in args]


def _tensors(arrays: tuple[np.ndarray, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(a) for a in arrays)


def encode(*args) -> tuple[torch.Tensor, ...]:
    return _tensors(_rans_warp_host.encode(*_numpy(args)))


def open(*args) -> tuple[torch.Tensor, ...]:  # named as in the CUDA extension
    return _tensors(_rans_warp_host.open(*_numpy(args)))


def decode(*args) -> None:
    _rans_warp_host.decode(*_numpy(args))


def finish(*args) -> None:
    _rans_warp_host.finish(*_numpy(args))
