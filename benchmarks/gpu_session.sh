#!/bin/bash
# Every GPU figure and GPU test of the project from one device call: at most 480 s of work, most
# important first, each step under its own time limit and each writing what it measures as soon
# as it has it (a step cut off leaves its finished rows).
#
#   bash benchmarks/gpu_session.sh --prepare   # here, before the call: out/carry (below)
#   bash benchmarks/gpu_session.sh             # on the GPU machine: the device call's command
#   bash benchmarks/gpu_session.sh --plan      # the steps, their limits and the total
#   bash benchmarks/gpu_session.sh --dry-run   # every step on this CPU at toy sizes
#   python benchmarks/gpu_results.py DIR --write   # here, after: DIR's figures into RESULTS.md
#
# The device call (docs/CUDA_CODER.md, "On a GPU machine"): command
# "bash benchmarks/gpu_session.sh", carry ["out/carry"], timeout_s 600. out/carry holds what the
# copy of the working tree lacks there: Kodak, a slice of the training pool, the wheels of
# CompressAI and of pytorch_msssim (the image has CompressAI's other dependencies), and the
# commit (the copy has no .git). Results: $OUT (the device's, else out/gpu_session, or
# out/gpu_dry_run for --dry-run; OUTPUTS below), summarised at the end of the output.
# Environment: PY (default python3), OUT, COMMIT (overrides out/carry/COMMIT), TRAIN_MB and
# KODAK_IMAGES (what --prepare carries), and for make test GPU_SESSION_SHORT=1 (a shorter dry run).

set -u
cd "$(dirname "$0")/.."
PY=${PY:-python3}
CARRY=out/carry
SHARED=../shared/data
BUDGET=480  # seconds of work in one device call of 600 (the machine's start is not in it)
OUTPUTS=(log.txt results.jsonl kernels.json train.csv train-int8.safetensors)
# The GPU tests (tests/conftest.py makes the kernel tests run compiled kernels on CUDA tensors
# when there is a GPU); the rest of the suite runs last. test_gpu_session.py is this script's.
GPU_TESTS=(tests/test_coder_cuda.py tests/test_gpu_codec.py tests/test_kernels_*.py)

# name, limit in seconds, what
STEPS=(
    "setup      15 this machine's description; CompressAI's wheels"
    "build      85 engine._rans, its warp emulation, the CUDA coder (first build); its backend"
    "tests      70 the GPU tests: CUDA coder, codec on CUDA, compiled kernels vs references"
    "kernels    55 kernel GB/s and speed-up against PyTorch (bench_kernels.py)"
    "coder      35 CUDA coder symbols/s against the CPU coder and CompressAI's"
    "pipeline   50 end to end, 768x512 and 1920x1080, batch 1 and 16, against CompressAI"
    "context    35 mbt2018 (N=M=192) on a 768x512 image, fused and per-layer wavefront steps"
    "cross      40 Kodak encoded on the GPU decoded on the CPU and back, every model and level"
    "train      45 a short run of the default model: steps/s, an int8 checkpoint"
    "sanitizer  30 the CUDA coder's tests under compute-sanitizer: memcheck, racecheck, synccheck"
    "suite      20 the rest of the test suite"
)

total=0
for entry in "${STEPS[@]}"; do
    read -r _ limit _ <<<"$entry"
    total=$((total + limit))
done
if ((total > BUDGET)); then
    echo "the step limits add up to ${total}s, over the ${BUDGET}s budget" >&2
    exit 2
fi

plan() {
    printf '%-10s %5s  %s\n' step limit what
    for entry in "${STEPS[@]}"; do
        read -r name limit what <<<"$entry"
        printf '%-10s %4ss  %s\n' "$name" "$limit" "$what"
    done
    printf '%-10s %4ss  (budget %ss)\n' total "$total" "$BUDGET"
    echo "outputs: ${OUTPUTS[*]}"
}

prepare() {  # what the device call carries, under out/carry; prints the call
    local mb=${TRAIN_MB:-3} kodak=${KODAK_IMAGES:-6} size=0 f
    rm -rf "$CARRY" && mkdir -p "$CARRY/kodak" "$CARRY/train" "$CARRY/wheels" || return
    # The call carries 64 MiB and the working tree takes ~53 of them (the shipped weights), so
    # the cross-device step gets the first Kodak images and the train step a slice of the pool.
    for f in $(find "$SHARED/kodak" -name '*.png' | sort | head -n "$kodak"); do
        cp "$f" "$CARRY/kodak/" || return
    done
    for f in "$SHARED"/train/bsds500/*.jpg; do
        size=$((size + $(stat -c %s "$f")))
        ((size > mb * 1000000)) && break
        cp "$f" "$CARRY/train/"
    done
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 \
        --platform manylinux2014_x86_64 -d "$CARRY/wheels" compressai==1.2.8 \
        pytorch-msssim==1.0.0 || return
    git rev-parse --short HEAD >"$CARRY/COMMIT" || return
    if [[ -n $(git status --porcelain --untracked-files=no) ]]; then
        sed -i 's/$/+changes/' "$CARRY/COMMIT"
    fi
    local tree carried
    tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) |
        xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s}')
    carried=$(du -sb "$CARRY" | cut -f1)
    echo "out/carry: $((carried / 1048576)) MiB ($(ls "$CARRY/train" | wc -l) training images)," \
        "commit $(cat "$CARRY/COMMIT"); with the working tree $(((tree + carried) / 1048576))" \
        "MiB travel, of at most 64"
    if ((tree + carried > 64 * 1048576)); then
        echo "too much for one call: TRAIN_MB=... (now $mb) or KODAK_IMAGES=... (now $kodak)" \
            "carry less" >&2
        return 1
    fi
    echo 'device call: command "bash benchmarks/gpu_session.sh", carry ["out/carry"],' \
        'timeout_s 600'
}

MODE=gpu
case ${1:-} in
    --plan) plan; exit ;;
    --prepare) prepare; exit ;;
    --dry-run) MODE=dry ;;
    "") ;;
    *) echo "usage: bash benchmarks/gpu_session.sh [--plan | --prepare | --dry-run]" >&2
       exit 2 ;;
esac

# --- the session -------------------------------------------------------------------------------

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
KODAK=$CARRY/kodak
[[ -d $KODAK ]] || KODAK=$SHARED/kodak
TRAIN_DATA=$CARRY/train
[[ -d $TRAIN_DATA ]] || TRAIN_DATA=$SHARED/train/bsds500
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# Kept between calls on a machine still warm (build/ is ignored, so the copy keeps it).
export TORCH_EXTENSIONS_DIR=$PWD/build/torch_extensions
XDIST=()
$PY -c "import xdist" 2>/dev/null && XDIST=(-n 4)
SHORT=${GPU_SESSION_SHORT:-0}

DRY_SCALE=1
if [[ $MODE == gpu ]]; then
    OUT=${OUT:-out/gpu_session}
    export NICENGINE_COMMIT=${COMMIT:-$(cat "$CARRY/COMMIT" 2>/dev/null)}
    if [[ -z $NICENGINE_COMMIT && ! -e .git ]]; then
        NICENGINE_COMMIT="unknown (no out/carry/COMMIT)"
    fi
    unset TRITON_INTERPRET NICENGINE_DRY_RUN
    SANITIZER=$(command -v compute-sanitizer ||
        echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
    SANITIZER_TOOLS=(memcheck racecheck synccheck)
    KERNEL_ARGS=(--no-compile)  # a fresh torch.compile per case would not fit the limit
    CODER_ARGS=()
    PIPELINE_ARGS=()
    CROSS_ARGS=()
    # The channel-conditional model with the checkerboard at its GPU size (N=128, M=192, the six
    # lambdas; issue 25), batch and crop of docs/TRAINING.md.
    TRAIN_ARGS=(--workers 8 --kind channel_conditional --checkerboard true)
    TESTS=("${GPU_TESTS[@]}")
    SUITE=(tests)
else
    OUT=${OUT:-out/gpu_dry_run}
    export TRITON_INTERPRET=1 NICENGINE_DRY_RUN=1
    SANITIZER=""  # none here: the tests run without it
    SANITIZER_TOOLS=(memcheck)  # the others would run the same commands again
    KERNEL_ARGS=(--dry-run)
    CODER_ARGS=(--emulate --toy --repeat 1)
    PIPELINE_ARGS=(--device cpu --toy --repeat 1)
    CROSS_ARGS=(--devices cpu cpu --limit 2 --toy)
    TRAIN_ARGS=(--N 16 --M 24 --hidden 8 --batch 2 --crop 64 --steps 3 --workers 0
                --kind channel_conditional --checkerboard true)
    TESTS=("${GPU_TESTS[@]}")
    SUITE=(tests/test_format.py)  # the mechanics of the step; make test runs the suite
    [[ $SHORT == 1 ]] && TESTS=(tests/test_gpu_codec.py)
    DRY_SCALE=3  # this CPU is slower than the device machine at everything
fi
IGNORE=()
for f in "${GPU_TESTS[@]}" tests/test_gpu_session.py; do IGNORE+=("--ignore=$f"); done

mkdir -p "$OUT"
for f in "${OUTPUTS[@]}"; do rm -f "$OUT/$f"; done
LOG=$OUT/log.txt
export NICENGINE_RECORD=$OUT/results.jsonl
: >"$NICENGINE_RECORD"

run() {  # run COMMAND... within what is left of the step's limit; output to the log
    local left=$((STEP_END - SECONDS)) rc
    if ((left <= 0)); then
        echo "(no time left) $*" >>"$LOG"
        STEP_RC=124
        return 124
    fi
    echo "+ $*" >>"$LOG"
    timeout -k 3 "$left" "$@" >>"$LOG" 2>&1
    rc=$?
    ((rc != 0 && STEP_RC == 0)) && STEP_RC=$rc
    return $rc
}

step_setup() {
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem \
        --format=csv >>"$LOG" 2>&1
    run $PY benchmarks/gpu_record.py machine
    # The wheels are for the device's Python; a dry run uses this machine's CompressAI, if any.
    if [[ $MODE == gpu ]] && compgen -G "$CARRY/wheels/*.whl" >/dev/null; then
        run $PY -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" \
            "$CARRY"/wheels/*.whl && export PYTHONPATH=$PYTHONPATH:$WORK/site
    fi
}

step_build() {
    $PY -c "import engine._rans, engine._rans_warp_host" 2>/dev/null ||
        run $PY setup.py -q build_ext --inplace -j "$(nproc)"
    if ! run env NICENGINE_BUILD_VERBOSE=1 $PY benchmarks/gpu_record.py backend; then
        # A build killed by its limit leaves torch's lock, on which every later build would
        # wait; the later steps use the CPU coder rather than each trying the build again.
        rm -f "$TORCH_EXTENSIONS_DIR"/*/lock
        export NICENGINE_CODER=cpu
        echo "the CUDA coder did not build: the later steps use the CPU coder" >>"$LOG"
    fi
}

step_tests() { run $PY benchmarks/gpu_tests.py tests -q -rfE "${XDIST[@]}" "${TESTS[@]}"; }

step_kernels() {
    run $PY benchmarks/bench_kernels.py --json "$OUT/kernels.json" "${KERNEL_ARGS[@]}"
}

step_coder() { run $PY benchmarks/bench_gpu_coder.py "${CODER_ARGS[@]}"; }

step_pipeline() { run $PY benchmarks/gpu_pipeline.py "${PIPELINE_ARGS[@]}"; }

step_context() { run $PY benchmarks/gpu_pipeline.py --context --repeat 2 "${PIPELINE_ARGS[@]}"; }

step_cross() {
    run $PY benchmarks/gpu_pipeline.py --cross-device --images "$KODAK" "${CROSS_ARGS[@]}"
}

step_train() {
    # Training stops itself (and saves) 25 s before the limit: its start (the clock starts
    # after the model and the loader) and the export fit in them.
    local minutes
    minutes=$(awk -v s=$((STEP_END - SECONDS - 25)) 'BEGIN {printf "%.2f", (s > 6 ? s : 6) / 60}')
    run $PY -m engine.train "$WORK/train" --data "$TRAIN_DATA" --minutes "$minutes" \
        "${TRAIN_ARGS[@]}"
    cp "$WORK/train/log.csv" "$OUT/train.csv" 2>>"$LOG"
    echo "{\"step\": \"train\", \"command\": \"python -m engine.train RUN --data $TRAIN_DATA" \
        "--minutes $minutes ${TRAIN_ARGS[*]}\"}" >>"$NICENGINE_RECORD"
    run $PY -m engine.train export "$WORK/train" "$OUT/train-int8.safetensors" --storage int8
}

step_sanitizer() {
    local tool rc
    for tool in "${SANITIZER_TOOLS[@]}"; do
        # Small sizes (the tools are ~100x slower); without torch's caching allocator every
        # tensor is its own allocation, whose bounds memcheck then knows. Exit 99: errors found.
        run env NICENGINE_SMALL=1 PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
            ${SANITIZER:+"$SANITIZER" --tool "$tool" --error-exitcode 99} \
            $PY benchmarks/gpu_tests.py "sanitizer-$tool" -q -p no:cacheprovider \
            tests/test_coder_cuda.py -k "not memcheck"
        rc=$?
        printf '{"step": "sanitizer_tool", "tool": "%s", "sanitizer": "%s", "rc": %d}\n' \
            "$tool" "${SANITIZER:-none}" "$rc" >>"$NICENGINE_RECORD"
    done
}

step_suite() {
    run $PY benchmarks/gpu_tests.py suite -q -rfE "${XDIST[@]}" "${IGNORE[@]}" "${SUITE[@]}"
}

echo "gpu_session ($MODE): results in $OUT" | tee "$LOG"
failed=0
for entry in "${STEPS[@]}"; do
    read -r name limit what <<<"$entry"
    limit=$((limit * DRY_SCALE))
    STEP_RC=0
    STEP_END=$((SECONDS + limit))
    start=$SECONDS
    echo "==> $name (at most ${limit}s, $(date +%T)): $what" >>"$LOG"
    "step_$name"
    took=$((SECONDS - start))
    printf '{"step": "session", "name": "%s", "limit_s": %d, "seconds": %d, "rc": %d}\n' \
        "$name" "$limit" "$took" "$STEP_RC" >>"$NICENGINE_RECORD"
    printf '%-10s exit %3d after %3ds of %3ds%s\n' "$name" "$STEP_RC" "$took" "$limit" \
        "$( ((STEP_RC == 124 || STEP_RC == 137)) && echo ', out of time')" | tee -a "$LOG"
    ((STEP_RC == 0)) || failed=$((failed + 1))
done
for f in "${OUTPUTS[@]}"; do
    [[ -e $OUT/$f ]] || { echo "missing: $OUT/$f" | tee -a "$LOG"; failed=$((failed + 1)); }
done
exit $((failed > 0))
