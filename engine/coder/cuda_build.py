"""The CUDA coder's extension (csrc/rans_cuda.cu and csrc/rans_cuda_bindings.cpp), compiled on
first use with torch.utils.cpp_extension (ninja) and cached per torch and CUDA version.

NICENGINE_CODER=cpu disables it; NICENGINE_BUILD_VERBOSE=1 shows the build; TORCH_EXTENSIONS_DIR
moves the cache (docs/CUDA_CODER.md, "Build and cache").
"""

from __future__ import annotations

import os
import shutil
import warnings
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import torch

CSRC = Path(__file__).resolve().parents[2] / "csrc"


def _build_directory() -> Path:
    """Where the compiled extension is cached: per torch and CUDA version, so that an upgrade
    rebuilds instead of loading a stale binary."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "nicengine" / "torch_extensions"
    return base / f"rans_cuda-torch{torch.__version__}-cuda{torch.version.cuda}"


@lru_cache(maxsize=1)
def _load() -> tuple[ModuleType | None, str]:
    """(the CUDA extension, "") or (None, why not); builds it on the first call (ninja, cached:
    later processes load it in a second unless csrc/ changed)."""
    if os.environ.get("NICENGINE_CODER", "").lower() == "cpu":
        return None, "NICENGINE_CODER=cpu"
    if not torch.cuda.is_available():
        return None, "no CUDA device (or a CPU-only build of torch)"
    from torch.utils import cpp_extension

    home = cpp_extension.CUDA_HOME
    if home is None or shutil.which(str(Path(home) / "bin" / "nvcc")) is None:
        return None, "nvcc not found (set CUDA_HOME)"
    sources = [CSRC / "rans_cuda.cu", CSRC / "rans_cuda_bindings.cpp"]
    if not all(s.is_file() for s in sources):
        return None, f"the CUDA sources are not in {CSRC} (an editable install has them)"
    build = _build_directory()
    build.mkdir(parents=True, exist_ok=True)
    try:
        module = cpp_extension.load(
            name="nicengine_rans_cuda", sources=[str(s) for s in sources],
            extra_include_paths=[str(CSRC)], extra_cflags=["-O3"], extra_cuda_cflags=["-O3"],
            build_directory=str(build), verbose=os.environ.get("NICENGINE_BUILD_VERBOSE") == "1")
    except Exception as e:  # any build failure leaves the CPU coder in charge
        warnings.warn(f"the CUDA rANS coder did not build; using the CPU coder: {e}",
                      stacklevel=2)
        return None, f"the build failed: {e}"
    return module, ""


def available() -> bool:
    """True when the CUDA coder can run here (builds it on the first call)."""
    return _load()[0] is not None


def unavailable_reason() -> str:
    """Why `available()` is False ("" when it is True)."""
    return _load()[1]


def extension() -> ModuleType:
    """The CUDA extension (encode, open, decode, finish on device tensors); RuntimeError saying
    why when it cannot run here."""
    module, why = _load()
    if module is None:
        raise RuntimeError(f"the CUDA rANS coder is not available: {why}")
    return module
