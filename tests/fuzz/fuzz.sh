#!/usr/bin/env bash
# Builds the coders' fuzz target (tests/fuzz/coder_fuzz.cpp) with AddressSanitizer and UBSan in
# build/fuzz and runs it there (a failing input is left there too).
#
# usage: tests/fuzz/fuzz.sh [--standalone] [--seconds S | --iterations N] [--seed K] [FILE ...]
#
# With clang++ and libFuzzer (Debian: apt-get install clang libclang-rt-dev) the run is
# coverage-guided and keeps its corpus in build/fuzz/corpus; otherwise, or with --standalone,
# the target runs under its own driver of random inputs (g++ or clang++). FILEs are replayed.
# Exit status 77: no compiler here builds with the sanitizers (tests/test_coder_fuzz.py skips).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/build/fuzz"
mkdir -p "$out/corpus"
cd "$out"

standalone=0 seconds="" iterations="" seed=1 files=()
while (($#)); do
  case "$1" in
    --standalone) standalone=1 ;;
    --seconds) seconds="$2"; shift ;;
    --iterations) iterations="$2"; shift ;;
    --seed) seed="$2"; shift ;;
    *) files+=("$(realpath "$1")") ;;
  esac
  shift
done

flags=(-std=c++17 -O1 -g -fno-omit-frame-pointer -fno-sanitize-recover=all -pthread
       -I"$root/csrc" "$root/tests/fuzz/coder_fuzz.cpp" "$root/csrc/rans_cpu.cpp")
builds() {  # compiler, sanitizers, program: can they build and link it?
  echo "$3" | "$1" -x c++ -fsanitize="$2" -o probe - 2>/dev/null && rm probe
}
empty_target='extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }'
clang=$(command -v clang++ || command -v clang++-14 || true)

if ((!standalone)) && [[ -n "$clang" ]] &&
   builds "$clang" fuzzer,address,undefined "$empty_target"; then
  "$clang" -fsanitize=fuzzer,address,undefined "${flags[@]}" -o coder_libfuzzer
  if ((${#files[@]})); then exec ./coder_libfuzzer "${files[@]}"; fi
  args=(-seed="$seed" -print_final_stats=1)
  [[ -n "$seconds" ]] && args+=(-max_total_time="$seconds")
  [[ -n "$iterations" ]] && args+=(-runs="$iterations")
  exec ./coder_libfuzzer "${args[@]}" corpus
fi

for cxx in "${CXX:-g++}" "$clang"; do
  if [[ -n "$cxx" ]] && builds "$cxx" address,undefined 'int main() { return 0; }'; then
    "$cxx" -fsanitize=address,undefined -DNIC_FUZZ_MAIN "${flags[@]}" -o coder_fuzz
    args=(--seed "$seed")
    [[ -n "$seconds" ]] && args+=(--seconds "$seconds")
    [[ -n "$iterations" ]] && args+=(--iterations "$iterations")
    exec ./coder_fuzz "${args[@]}" "${files[@]}"
  fi
done
echo "fuzz.sh: no C++ compiler here builds with -fsanitize=address,undefined" >&2
exit 77
