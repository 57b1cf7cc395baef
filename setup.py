"""Builds the C++17 rANS coder (`engine._rans`) from csrc/ with pybind11."""

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

ext = Pybind11Extension(
    "engine._rans",
    ["csrc/rans_cpu.cpp", "csrc/bindings.cpp"],
    include_dirs=["csrc"],
    cxx_std=17,
    extra_compile_args=["-O3"],
    extra_link_args=["-pthread"],
)

# The CUDA coder's warp algorithm (csrc/rans_warp.h) on the host, for the bit-exactness tests
# that run without a GPU. The CUDA extension itself is built on first use (engine.coder).
warp_host = Pybind11Extension(
    "engine._rans_warp_host",
    ["csrc/rans_host_emulation.cpp"],
    include_dirs=["csrc"],
    cxx_std=17,
    extra_compile_args=["-O2", "-Wall", "-Wextra"],
)

setup(ext_modules=[ext, warp_host], cmdclass={"build_ext": build_ext})
