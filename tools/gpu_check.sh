#!/usr/bin/env bash
# The one script to run on the GPU machine, from anywhere in the checkout:
# environment facts, build, `int4mm info`, tests, compute-sanitizer, benchmark.
# Full logs go under $OUT; the terminal gets a short summary (the caller of a
# remote run sees only the last ~12k characters).
#
#   bash tools/gpu_check.sh
#   OUT=$OUT STEPS=build,bench BENCH_SUITE=full bash tools/gpu_check.sh
#
# Environment (all optional):
#   OUT                log folder (default ./gpu_out)
#   STEPS              comma list, in any order, of: env,build,info,test,sanitize,bench
#                      (default: all six; they always run in that order)
#   PYTHON             interpreter (default python3)
#   INT4MM_CUDA_ARCHS  architectures to build (default 90a); INT4MM_BUILD_JOBS (default 16)
#   PYTEST_ARGS        extra pytest arguments of the test step (default "-n 8")
#   SANITIZE_K         pytest -k expression run under compute-sanitizer (default sanitize)
#   BENCH_SUITE        default | full (default: default); BENCH_ARGS: extra bench arguments
#   TIME_BUDGET        seconds for the whole script (default 570): each step's timeout is
#                      cut to what is left, so the summary is always printed
#   BUILD_TIMEOUT, TEST_TIMEOUT, SANITIZE_TIMEOUT (each tool), BENCH_TIMEOUT: seconds
#   INT4MM_COMMIT      commit recorded in the benchmark JSON when the tree has no .git
#
# Exit status: 0 when every selected step passed, 1 otherwise.  A failed step
# does not stop the later ones, except that a failed build skips the steps
# that need it.
# shellcheck disable=SC2329  # the step functions are called through `step NAME FUNCTION`
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
STEPS=${STEPS:-env,build,info,test,sanitize,bench}
SANITIZE_K=${SANITIZE_K:-sanitize}
BENCH_SUITE=${BENCH_SUITE:-default}
DEADLINE=$((SECONDS + ${TIME_BUDGET:-570}))
BUILD_TIMEOUT=${BUILD_TIMEOUT:-300}
TEST_TIMEOUT=${TEST_TIMEOUT:-240}
SANITIZE_TIMEOUT=${SANITIZE_TIMEOUT:-150}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}
if [[ -z ${INT4MM_COMMIT:-} ]] && commit=$(git rev-parse HEAD 2>/dev/null); then
    export INT4MM_COMMIT=$commit
fi

FAILED=0
BUILD_FAILED=0
SUMMARY=()
: > "$OUT/steps.txt"

# Seconds a step may take: its own limit, or what is left of TIME_BUDGET.
limit() {
    local want=$1 left=$((DEADLINE - SECONDS - 10))
    if ((left < want)); then want=$left; fi
    if ((want < 1)); then want=1; fi
    echo "$want"
}

# Run `timeout` with the step's limit; a timeout says so.  SIGINT first: an
# interrupted pytest still prints its counts (SIGTERM does not).
timed() {
    local secs rc=0
    secs=$(limit "$1")
    shift
    timeout -s INT -k 10 "$secs" "$@" || rc=$?
    if ((rc == 124 || rc == 137)); then echo "  timed out after ${secs}s: ${*:1:4} ..."; fi
    return "$rc"
}

record() {  # name status seconds
    local line
    line=$(printf '%-9s %-26s %5ss' "$1" "$2" "$3")
    SUMMARY+=("$line")
    echo "$line" >> "$OUT/steps.txt"
}

step() {  # name function
    local name=$1 fn=$2 t0=$SECONDS rc=0
    [[ ",$STEPS," == *",$name,"* ]] || return 0
    if ((BUILD_FAILED)) && [[ $name != env && $name != info ]]; then
        record "$name" "skipped (build failed)" 0
        return 0
    fi
    if ((DEADLINE - SECONDS < 20)); then
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

# --------------------------------------------------------------------------- steps

step_env() {
    local rc=0
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "host: $(hostname) ($(nproc) CPUs)"
        uname -a
        echo "python: $("$PY" --version 2>&1) at $(command -v "$PY")"
        echo "commit: ${INT4MM_COMMIT:-unknown}"
        git status --short 2>/dev/null | head -n 20 || true
        echo
        nvidia-smi || true
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,power.limit,temperature.gpu,pstate --format=csv || true
        echo
        nvcc --version || true
        compute-sanitizer --version || true
        "$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)" || true
        "$PY" -c "import cupy; print('cupy', cupy.__version__)" || true
        "$PY" -m pip list 2>/dev/null \
            | grep -iE '^(torch|cupy|numba|jax|jaxlib|numpy|cython|setuptools|pytest|pytest-xdist|hypothesis|nvidia-cutlass|triton|matplotlib) ' || true
    } > "$OUT/env.txt" 2>&1
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
        --format=csv,noheader 2>&1 | head -n 4 || rc=$?
    echo "$("$PY" --version 2>&1); $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'no nvcc')"
    return "$rc"
}

step_build() {
    local rc=0
    timed "$BUILD_TIMEOUT" env INT4MM_CUDA_ARCHS="${INT4MM_CUDA_ARCHS:-90a}" \
        INT4MM_BUILD_JOBS="${INT4MM_BUILD_JOBS:-16}" \
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
    "$PY" -m int4mm info 2>&1 | tee "$OUT/info.txt"
}

step_test() {
    local rc=0 args
    read -ra args <<< "${PYTEST_ARGS--n 8}"
    timed "$TEST_TIMEOUT" "$PY" -m pytest -q -x ${args[@]+"${args[@]}"} tests \
        > "$OUT/pytest.log" 2>&1 || rc=$?
    tail -n 25 "$OUT/pytest.log" | cut -c 1-400
    return "$rc"
}

sanitize_with() {  # memcheck | racecheck
    local tool=$1 log="$OUT/$1.log" rc=0
    timed "$SANITIZE_TIMEOUT" compute-sanitizer --tool "$tool" --error-exitcode 1 \
        "$PY" -m pytest -q tests -k "$SANITIZE_K" -p no:xdist -p no:cacheprovider \
        > "$log" 2>&1 || rc=$?
    local summary tests
    summary=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | tail -n 2 | tr -s ' =' ' ' || true)
    tests=$(grep -E '[0-9]+ (passed|failed|error)|no tests ran' "$log" | tail -n 1 || true)
    echo "$tool: ${summary:-no SUMMARY line} | pytest: ${tests:-no result line} (exit $rc)"
    if ((rc == 5)); then echo "  no test matched -k '$SANITIZE_K'"; fi
    if ((rc == 127)); then echo "  compute-sanitizer is not on the PATH"; fi
    if ((rc != 0)); then grep -m 8 -E '^========= (Invalid|Race|Error|Program hit)' "$log" | cut -c 1-200 || true; fi
    return "$rc"
}

step_sanitize() {
    local rc=0
    sanitize_with memcheck || rc=$?
    sanitize_with racecheck || rc=$?
    return "$rc"
}

step_bench() {
    local rc=0 args extra
    args=(--suite "$BENCH_SUITE" --out "$OUT/bench.json")
    if [[ $BENCH_SUITE == full ]]; then args+=(--plot "$OUT/bench.png"); fi
    read -ra extra <<< "${BENCH_ARGS:-}"
    timed "$BENCH_TIMEOUT" "$PY" -m int4mm bench "${args[@]}" ${extra[@]+"${extra[@]}"} \
        > "$OUT/bench.txt" 2> "$OUT/bench.err" || rc=$?
    cut -c 1-200 "$OUT/bench.txt"
    if ((rc != 0)); then
        echo "bench exit $rc; end of bench.err:"
        tail -n 6 "$OUT/bench.err" | cut -c 1-300
    fi
    return "$rc"
}

# --------------------------------------------------------------------------- run

step env step_env
step build step_build
step info step_info
step test step_test
step sanitize step_sanitize
step bench step_bench

echo "== summary (logs in $OUT)"
printf '%s\n' "${SUMMARY[@]}"
exit "$FAILED"
