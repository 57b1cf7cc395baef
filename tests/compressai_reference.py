"""CompressAI 1.2.8, the reference that import and zoo tests compare with (installed by
`make test`'s set-up, without its dependencies).

Its torchvision dependency does not load beside the CPU torch used here, and CompressAI imports
it only to fill a registry of transforms, so an empty stand-in module takes its place. Tests
that need CompressAI call `compressai_or_skip()`: it skips them, saying why, where CompressAI is
not installed (a user's own environment).
"""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest

INSTALL = ("pip install --no-deps compressai==1.2.8 torch_geometric==2.8.1 "
           "pytorch_msssim==1.0.0 einops xxhash psutil")


def load_compressai() -> types.ModuleType:
    """The compressai package (ImportError when it is not installed)."""
    if importlib.util.find_spec("compressai") is None:
        raise ImportError(f"CompressAI is not installed ({INSTALL})")
    for name in ("torchvision", "torchvision.transforms"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    import compressai
    import compressai.zoo

    return compressai


def compressai_or_skip() -> types.ModuleType:
    try:
        return load_compressai()
    except ImportError as e:
        pytest.skip(str(e))
