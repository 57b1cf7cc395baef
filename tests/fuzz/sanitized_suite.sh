#!/usr/bin/env bash
# The test suite with the C++ Python extensions (the coder's engine._rans and
# engine._rans_warp_host, the int8 GEMM's nicengine_kernels._int_gemm) built with
# AddressSanitizer and UBSan, in a temporary copy of the working tree, so that every test's use
# of them (threads, buffers, damaged streams, tile edges) is checked too.
#
# usage: tests/fuzz/sanitized_suite.sh [PYTEST ARGS]   (after `make test` has made .venv)
#
# The nvcc compile checks and the fuzz test are left out: the sanitizer runtimes preloaded
# into Python would be preloaded into their compilers too.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
py="$root/.venv/bin/python"
cxx="${CXX:-g++}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
work="$tmp/main"
mkdir "$work"
# Tracked and new files as they are in the working tree (not those deleted there but not yet in
# a commit).
(cd "$root" && git ls-files -z --cached --others --exclude-standard |
   while IFS= read -r -d '' f; do if [[ -e "$f" ]]; then printf '%s\0' "$f"; fi; done |
   xargs -0 cp --parents -t "$work")
[[ -e "$root/../shared" ]] && ln -s "$(realpath "$root/../shared")" "$tmp/shared"

"$py" -m pip install -q --target "$tmp/pybind11" pybind11
include="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
suffix="$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
flags=(-std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined
       -fno-sanitize-recover=all -shared -fPIC -pthread -I"$tmp/pybind11/pybind11/include"
       -I"$include" -I"$work/csrc")
"$cxx" "${flags[@]}" "$work/csrc/rans_cpu.cpp" "$work/csrc/bindings.cpp" \
  -o "$work/engine/_rans$suffix"
"$cxx" "${flags[@]}" "$work/csrc/rans_host_emulation.cpp" -o "$work/engine/_rans_warp_host$suffix"
# Without OpenMP (its runtime is not instrumented): the GEMM then runs on one thread.
"$cxx" "${flags[@]}" "$work/csrc/int_gemm.cpp" -o "$work/kernels/_int_gemm$suffix"
ln -s kernels "$work/nicengine_kernels"  # found on PYTHONPATH before the editable install

cd "$work"
export PYTHONPATH="$work" TRITON_INTERPRET=1 ASAN_OPTIONS=detect_leaks=0 \
  UBSAN_OPTIONS=print_stacktrace=1 \
  LD_PRELOAD="$("$cxx" -print-file-name=libasan.so) $("$cxx" -print-file-name=libubsan.so)"
"$py" -c "import engine._rans as r, nicengine_kernels._int_gemm as g, sys
sys.exit(not (r.__file__.startswith('$work') and g.__file__.startswith('$work')))"
"$py" -m pytest -q -p no:cacheprovider -k "not sources_compile and not sanitizers" tests "$@"
