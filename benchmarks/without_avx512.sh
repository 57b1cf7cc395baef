#!/usr/bin/env bash
# Runs a command as if this CPU had no AVX-512 (nor its bfloat16 and VNNI instructions): the
# target CPU of issue 40, emulated on a CPU that has them. Every library that picks its kernels
# at run time is held to AVX2: oneDNN (convolutions), ATen (element-wise kernels), MKL (GEMMs)
# and this engine's coder and int8 GEMM. Same cores and clock, so the figures are of AVX2 code on this CPU,
# not of an AVX2-only CPU; results_md.cpu() names the limits in every figure it labels.
#
#     bash benchmarks/without_avx512.sh python benchmarks/vs_compressai.py --repeat 9
export ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
export NIC_RANS_SCALAR=1 NIC_INT_GEMM_AVX2=1
exec "$@"
