#!/bin/bash
# The GPU checks and benchmarks of the open issues, most important first, for one device call of
# at most 10 minutes (the device tool's per-command limit; a task gets 15 minutes in all).
#
#   bash benchmarks/gpu_session.sh [checks|pipeline|all]    (default: all)
#
# checks:   build, the coder tests on the GPU, the Triton kernels (checked against their
#           references on the GPU, then timed), the GPU coder.
# pipeline: end to end against CompressAI, cross-device decoding of Kodak, training and SGA+
#           speed, the coder tests under compute-sanitizer.
#
# Prepare on the development machine (nothing here needs a GPU):
#   mkdir -p out && cp -r ../shared/data/kodak out/kodak
#   for the CompressAI columns (the device image has all its dependencies but itself):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_34_x86_64 -d out/wheels compressai==1.2.8
# then call the device tool with command "bash benchmarks/gpu_session.sh", carry
# ["out/kodak", "out/wheels"] and timeout_s 600. Each step runs under its own time limit, cut
# to what is left of DEADLINE seconds, so the results are always collected: $OUT/log.txt,
# $OUT/RESULTS.md (with every measured section written by --write) and $OUT/results.tar.gz
# (benchmarks/results/*.json). Copy RESULTS.md's new sections over the local file and commit.
# PY, OUT and DEADLINE may be set: `PY=.venv/bin/python DEADLINE=60 OUT=/tmp/s bash
# benchmarks/gpu_session.sh` is a dry run of the script here (the CUDA steps fail fast).

set -u
PHASE=${1:-all}
OUT=${OUT:-out/gpu_session}
DEADLINE=${DEADLINE:-560}  # seconds from the start; the tool kills the command at 600
KODAK=out/kodak
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
LOG=$OUT/log.txt

step() {  # step LIMIT_S NAME COMMAND...: run COMMAND for at most LIMIT_S (and the deadline)
    local limit=$1 name=$2 left=$((DEADLINE - SECONDS)) t0=$SECONDS
    shift 2
    ((left < limit)) && limit=$left
    if ((limit < 10)); then
        echo "--> $name: skipped, ${left}s left" >>"$LOG"
        return
    fi
    echo "--> $name ($(date +%T), at most ${limit}s): $*" >>"$LOG"
    timeout "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    echo "--> $name: exit $rc after $((SECONDS - t0))s$( ((rc == 124)) && echo ', out of time')" \
        >>"$LOG"
}

collect() {
    cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
    tar czf "$OUT/results.tar.gz" benchmarks/results/*.json 2>/dev/null
    grep '^--> ' "$LOG"  # the summary: the end of the log is in $OUT
}
trap collect EXIT

nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv >>"$LOG" 2>&1
if compgen -G "out/wheels/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site out/wheels/*.whl \
        >>"$LOG" 2>&1 && export PYTHONPATH=/tmp/site
fi

# A second call on a machine still warm keeps the first one's build.
$PY -c "import engine._rans" 2>/dev/null ||
    step 150 build $PY -m pip install --no-build-isolation --no-deps -e .
if [[ $PHASE == checks || $PHASE == all ]]; then
    step 60 backend env NICENGINE_BUILD_VERBOSE=1 $PY -c \
        "from engine import coder; print(coder.backend(), coder.unavailable_reason())"
    step 90 coder-tests $PY -m pytest -q -x tests/test_coder.py tests/test_coder_bitexact.py \
        tests/test_coder_cuda.py
    step 150 kernels $PY benchmarks/bench_kernels.py --write --json "$OUT/kernels.json"
    step 60 gpu-coder $PY benchmarks/bench_gpu_coder.py --write
fi
if [[ $PHASE == pipeline || $PHASE == all ]]; then
    step 90 pipeline $PY benchmarks/gpu_pipeline.py --write
    step 120 cross-device $PY benchmarks/gpu_pipeline.py --cross-device --images "$KODAK" --write
    step 60 train-speed $PY benchmarks/train_speed.py --N 128 --M 192 --batch 8 --crop 256 --write
    step 90 sga-speed $PY benchmarks/sga_speed.py --images "$KODAK" --devices cuda --full --write
    step 120 memcheck env NICENGINE_MEMCHECK=1 $PY -m pytest -q tests/test_coder_cuda.py -k memcheck
fi
