"""Builds the C++17 extensions from csrc/ with pybind11: the rANS coder (`engine._rans`), the
exact int8 GEMM (`nicengine_kernels._int_gemm`) and the CUDA coder's host emulation."""

import sys

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

# The exact int8 GEMM of the integer networks' convolutions on the CPU (kernels/int_conv_gemm.py).
# OpenMP where the compiler has it (GCC on Linux): the process then has one OpenMP runtime,
# torch's, and the GEMM runs on its threads instead of competing with them.
OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else []
int_gemm = Pybind11Extension(
    "nicengine_kernels._int_gemm",
    ["csrc/int_gemm.cpp"],
    cxx_std=17,
    extra_compile_args=["-O3", "-Wall", "-Wextra", *OPENMP],
    extra_link_args=OPENMP,
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

setup(ext_modules=[ext, int_gemm, warp_host], cmdclass={"build_ext": build_ext})
