#!/usr/bin/env bash
# The one script for a machine with (at least) two GPUs, offline, from anywhere
# in the checkout: build, `int4mm info`, the multi-GPU and shard tests, and the
# tensor-parallel example (torch.distributed, NCCL, one process per GPU).
# Full logs go under $OUT; the terminal gets a short summary.
#
#   OUT=$OUT bash tools/multi_gpu_check.sh
#
# Environment (all optional):
#   OUT                log folder (default ./multi_gpu_out)
#   PYTHON             interpreter (default python3)
#   INT4MM_CUDA_ARCHS  architectures to build (default 90a); INT4MM_BUILD_JOBS (default 32)
#   TIME_BUDGET        seconds for the whole script (default 360); each step's timeout is
#                      cut to what is left, so the summary is always printed
#   BUILD_TIMEOUT (default 300), TEST_TIMEOUT (150), TP_TIMEOUT (120): seconds
#
# Exit status: 0 when every step passed, 1 otherwise.  A failed build skips
# the steps after it.
# shellcheck disable=SC2329  # the step functions are called through `step NAME FUNCTION`
set -euo pipefail
cd "$(dirname "$0")/.."

# NVLink SHARP / multicast stays off (NCCL, torch symmetric memory, NVSHMEM).
export NCCL_NVLS_ENABLE=0
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1
export NVSHMEM_DISABLE_NVLS=1

OUT=${OUT:-./multi_gpu_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
DEADLINE=$((SECONDS + ${TIME_BUDGET:-360}))
BUILD_TIMEOUT=${BUILD_TIMEOUT:-300}
TEST_TIMEOUT=${TEST_TIMEOUT:-150}
TP_TIMEOUT=${TP_TIMEOUT:-120}

FAILED=0
BUILD_FAILED=0
SUMMARY=()
: > "$OUT/steps.txt"

limit() {  # seconds a step may take: its own limit, or what is left of TIME_BUDGET
    local want=$1 left=$((DEADLINE - SECONDS - 10))
    if ((left < want)); then want=$left; fi
    if ((want < 1)); then want=1; fi
    echo "$want"
}

timed() {  # limit command...: run under `timeout`; a timeout says so
    local secs rc=0
    secs=$(limit "$1")
    shift
    timeout -k 10 "$secs" "$@" || rc=$?
    if ((rc == 124 || rc == 137)); then echo "  timed out after ${secs}s: ${*:1:4} ..."; fi
    return "$rc"
}

record() {  # name status seconds
    local line
    line=$(printf '%-7s %-26s %5ss' "$1" "$2" "$3")
    SUMMARY+=("$line")
    echo "$line" >> "$OUT/steps.txt"
}

step() {  # name function
    local name=$1 fn=$2 t0=$SECONDS rc=0
    if ((BUILD_FAILED)) && [[ $name != env ]]; then
        record "$name" "skipped (build failed)" 0
        return 0
    fi
    if ((DEADLINE - SECONDS < 15)); then
        record "$name" "skipped (TIME_BUDGET)" 0
        FAILED=1
        return 0
    fi
    echo "== $name"
    "$fn" || rc=$?
    if ((rc == 0)); then
        record "$name" ok $((SECONDS - t0))
    else
        record "$name" "FAILED (exit $rc)" $((SECONDS - t0))
        FAILED=1
    fi
}

step_env() {
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "host: $(hostname) ($(nproc) CPUs)"
        echo "python: $("$PY" --version 2>&1)"
        git rev-parse HEAD 2>/dev/null || true
        env | grep -E '^(NCCL_NVLS_ENABLE|TORCH_SYMM_MEM_DISABLE_MULTICAST|NVSHMEM_DISABLE_NVLS)=' || true
        nvidia-smi || true
        nvidia-smi topo -m || true
        "$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
'GPUs', torch.cuda.device_count(), 'NCCL', torch.cuda.nccl.version())" || true
    } > "$OUT/env.txt" 2>&1
    nvidia-smi -L 2>&1 | tee -a "$OUT/env.txt"
    "$PY" -c "import torch; print('torch', torch.__version__, 'sees', torch.cuda.device_count(), 'GPUs')" \
        2>&1 | tail -n 1 || true
}

step_build() {
    local rc=0
    timed "$BUILD_TIMEOUT" env INT4MM_CUDA_ARCHS="${INT4MM_CUDA_ARCHS:-90a}" \
        INT4MM_BUILD_JOBS="${INT4MM_BUILD_JOBS:-32}" \
        "$PY" -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 || rc=$?
    if ((rc != 0)); then
        BUILD_FAILED=1
        echo "build failed (exit $rc); first errors, then the end of build.log:"
        grep -m 15 -iE 'error|timed out' "$OUT/build.log" | cut -c 1-300 || true
        echo "..."
        tail -n 15 "$OUT/build.log" | cut -c 1-300
    else
        echo "built (INT4MM_CUDA_ARCHS=${INT4MM_CUDA_ARCHS:-90a}); log: build.log"
    fi
    return "$rc"
}

step_info() {
    local rc=0
    "$PY" -m int4mm info > "$OUT/info.txt" 2>&1 || rc=$?
    head -n 30 "$OUT/info.txt" | cut -c 1-200
    return "$rc"
}

step_test() {
    local rc=0
    timed "$TEST_TIMEOUT" "$PY" -m pytest -q -rs -p no:cacheprovider \
        tests/test_multi_gpu.py tests/test_shard.py > "$OUT/pytest.log" 2>&1 || rc=$?
    tail -n 30 "$OUT/pytest.log" | cut -c 1-400
    # Every multi-GPU test skipped means this machine did not show two GPUs.
    if ((rc == 0)) && grep -qE "GPU test skipped|torch does not see" "$OUT/pytest.log"; then
        echo "GPU tests were skipped (see the SKIPPED lines): not a 2-GPU run"
        rc=3
    fi
    return "$rc"
}

step_tp() {
    local rc=0
    if "$PY" -c "import torch.distributed.run" 2> /dev/null; then
        timed "$TP_TIMEOUT" "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 \
            examples/tp_two_gpus.py > "$OUT/tp.log" 2>&1 || rc=$?
    else
        timed "$TP_TIMEOUT" "$PY" examples/tp_two_gpus.py > "$OUT/tp.log" 2>&1 || rc=$?
    fi
    grep -E '(M= *[0-9]+:|tp_two_gpus|layers:)' "$OUT/tp.log" || tail -n 30 "$OUT/tp.log" | cut -c 1-300
    if ((rc != 0)); then
        echo "tp example exit $rc; end of tp.log:"
        tail -n 20 "$OUT/tp.log" | cut -c 1-300
    fi
    return "$rc"
}

step env step_env
step build step_build
step info step_info
step test step_test
step tp step_tp

echo "== summary (logs in $OUT)"
printf '%s\n' "${SUMMARY[@]}"
exit "$FAILED"
