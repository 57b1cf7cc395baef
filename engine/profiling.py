"""Named stages of compress and decompress, visible to Nsight Systems (NVTX) and torch.profiler.

docs/PROFILING.md shows the commands that display them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def stage(name: str) -> Iterator[None]:
    """An NVTX range (when CUDA is available) and a profiler record around one stage."""
    nvtx = torch.cuda.is_available()
    if nvtx:
        torch.cuda.nvtx.range_push(name)
    try:
        with torch.profiler.record_function(name):
            yield
    finally:
        if nvtx:
            torch.cuda.nvtx.range_pop()
