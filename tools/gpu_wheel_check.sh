#!/usr/bin/env bash
# GPU machine, once per release candidate: build the wheel as released (the
# variant of the local nvcc, all of its architectures), install it into a
# fresh venv, and run the GPU test suite against the *installed* wheel, not
# the source tree.  Offline: no build isolation, no index; CUTLASS headers
# come from .whl/nvidia_cutlass-*.whl (setup.py unpacks it; carry `.whl`).
#
#   OUT=$OUT bash tools/gpu_wheel_check.sh
#
# Environment (all optional):
#   OUT               log folder (default ./gpu_out); the wheel is copied there too
#   PYTHON            interpreter (default python3; the wheel is for its version)
#   INT4MM_VARIANT    variant to build (default: the one of this nvcc, e.g. cu130 for
#                     CUDA 13.0; none when the toolkit is not in int4mm/_variants.py)
#   INT4MM_CUDA_ARCHS override the variant's archs (quicker, e.g. 90a; not the release)
#   INT4MM_BUILD_JOBS parallel nvcc processes (default 16)
#   INT4MM_NVCC_FLAGS extra nvcc flags (default "--threads 4": archs of one file in parallel)
#   PYTEST_ARGS       extra pytest arguments (default "-n 8" when pytest-xdist is there)
#   SKIP_TESTS=1      build and install only, then EXTRA (e.g. a second call for the
#                     sanitizer while the first call's build objects are still there)
#   TIME_BUDGET       seconds for the whole script (default 570); BUILD_TIMEOUT (420),
#                     TEST_TIMEOUT (240).  A build cut short keeps its finished objects
#                     in build/int4mm-cuda-obj: run the script again to continue.
# Exit status: 0 when the build, the install and the tests passed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd -P)
PY=${PYTHON:-python3}
DEADLINE=$((SECONDS + ${TIME_BUDGET:-570}))
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

limit() {  # seconds a step may take: its own limit or what is left
    local want=$1 left=$((DEADLINE - SECONDS - 15))
    ((left < want)) && want=$left
    ((want < 1)) && want=1
    echo "$want"
}
fail() { echo "FAIL: $*" | tee -a "$OUT/summary.txt"; exit 1; }
: > "$OUT/summary.txt"
say() { echo "$*" | tee -a "$OUT/summary.txt"; }

echo "== env"
{
    date -u +%Y-%m-%dT%H:%M:%SZ
    echo "host: $(hostname) ($(nproc) CPUs)"
    "$PY" --version
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    nvcc --version || true
    "$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)" || true
    "$PY" -c "import numpy; print('numpy', numpy.__version__)" || true
    "$PY" -c "import pytest; print('pytest', pytest.__version__)" || true
    git rev-parse HEAD 2>/dev/null || echo "no git metadata (version from int4mm/_build_version.py)"
} > "$OUT/env.txt" 2>&1
head -n 4 "$OUT/env.txt"
ls .whl/nvidia_cutlass-*.whl > /dev/null 2>&1 \
    || say "note: no .whl/nvidia_cutlass-*.whl (carry .whl); CUTLASS must be found another way"

if [[ -z ${INT4MM_VARIANT+x} ]]; then
    release=$(nvcc --version 2>/dev/null | grep -o 'release [0-9]*\.[0-9]*' | cut -d' ' -f2 || true)
    candidate=cu${release//./}
    if "$PY" int4mm/_variants.py get "$candidate" toolkit > /dev/null 2>&1; then
        INT4MM_VARIANT=$candidate
    else
        INT4MM_VARIANT=""
    fi
fi
export INT4MM_VARIANT
export INT4MM_BUILD_JOBS=${INT4MM_BUILD_JOBS:-16}
export INT4MM_NVCC_FLAGS=${INT4MM_NVCC_FLAGS---threads 4}
say "variant: ${INT4MM_VARIANT:-none (source build named int4mm)}; archs: ${INT4MM_CUDA_ARCHS:-$(
    [[ -n $INT4MM_VARIANT ]] && "$PY" int4mm/_variants.py get "$INT4MM_VARIANT" archs || echo "nvcc default")}"

echo "== build (python3 -m pip wheel --no-build-isolation --no-deps)"
t=$SECONDS
rc=0
timeout -k 10 "$(limit "${BUILD_TIMEOUT:-420}")" \
    "$PY" -m pip wheel --no-build-isolation --no-deps -w "$WORK/wheel" . \
    > "$OUT/build.log" 2>&1 || rc=$?
if ((rc != 0)); then
    grep -m 15 -iE 'error|warning: INT4MM' "$OUT/build.log" | cut -c 1-300 || true
    tail -n 15 "$OUT/build.log" | cut -c 1-300
    if ((rc == 124 || rc == 137)); then
        fail "build timed out after $((SECONDS - t)) s; finished objects are kept in build/int4mm-cuda-obj: run again to continue"
    fi
    fail "build failed (exit $rc); log: build.log"
fi
wheel=$(echo "$WORK"/wheel/*.whl)
cp "$wheel" "$OUT/"
say "built $(basename "$wheel") ($(($(stat -c %s "$wheel") / 1000000)) MB) in $((SECONDS - t)) s"

echo "== install into a fresh venv (--system-site-packages for numpy/torch/cupy)"
"$PY" -m venv --system-site-packages "$WORK/venv"
VPY=$WORK/venv/bin/python
# When $PY itself lives in a virtual environment (as on the GPU machine),
# --system-site-packages reaches only the base interpreter's packages: expose
# the parent environment's site-packages too (after the venv's own, so the
# installed wheel still wins).
"$PY" -c 'import site, sys; print("\n".join(p for p in site.getsitepackages() if p not in sys.base_prefix))' \
    > "$("$VPY" -c 'import site; print(site.getsitepackages()[0])')/_parent_env.pth"
"$VPY" -m pip install --no-index --no-deps "$wheel" > "$OUT/install.log" 2>&1 \
    || { tail -n 20 "$OUT/install.log"; fail "pip install of the wheel failed"; }
# From outside the source tree, int4mm must be the venv's copy.
where=$(cd "$WORK" && "$VPY" -c 'import os, int4mm; print(os.path.realpath(int4mm.__file__))')
case "$where" in
    "$WORK/venv/"*) say "int4mm imported from the installed wheel: $where" ;;
    *) fail "int4mm imported from $where, not the fresh venv $WORK/venv" ;;
esac

echo "== info"
(cd "$WORK" && "$VPY" -m int4mm info) 2>&1 | tee "$OUT/info.txt"
(cd "$WORK" && "$VPY" -c 'import int4mm, sys; sys.exit(0 if int4mm.is_available() else 1)') \
    || fail "the installed wheel cannot run on this GPU (see info.txt)"

echo "== tests (a copy of tests/ outside the source tree, against the installed wheel)"
args=()
if [[ -n ${PYTEST_ARGS+x} ]]; then
    read -ra args <<< "$PYTEST_ARGS"
elif "$VPY" -c 'import xdist' 2> /dev/null; then
    args=(-n 8)
fi
if [[ ${SKIP_TESTS:-0} == 1 ]]; then
    say "tests: SKIPPED (SKIP_TESTS=1; run them in another call)"
else
    rc=0
    # SIGINT first: an interrupted pytest still prints its counts (SIGTERM does not)
    PYTHON=$VPY timeout -s INT -k 10 "$(limit "${TEST_TIMEOUT:-240}")" \
        bash tools/test_installed.sh "$ROOT" -x ${args[@]+"${args[@]}"} > "$OUT/pytest.log" 2>&1 || rc=$?
    tail -n 25 "$OUT/pytest.log" | cut -c 1-400
    result=$(grep -E '[0-9]+ (passed|failed|error)' "$OUT/pytest.log" | tail -n 1 || true)
    if ((rc != 0)); then fail "tests: ${result:-no result line} (exit $rc; log: pytest.log)"; fi
    say "tests against the installed wheel: $result"
fi

# Optional, still against the installed wheel: EXTRA="sanitize,bench".
if [[ ,${EXTRA:-}, == *,sanitize,* ]]; then
    echo "== compute-sanitizer (memcheck, racecheck) on tests -k sanitize"
    rm -rf "$WORK/stests" && cp -r "$ROOT/tests" "$WORK/stests"
    for tool in memcheck racecheck; do
        rc=0
        (cd "$WORK" && timeout -k 10 "$(limit 90)" compute-sanitizer --tool "$tool" \
            --error-exitcode 1 "$VPY" -m pytest -q -p no:cacheprovider -p no:xdist stests \
            -k sanitize) > "$OUT/$tool.log" 2>&1 || rc=$?
        say "$tool: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/$tool.log" | tail -n 1) | $(
            grep -E '[0-9]+ (passed|failed)' "$OUT/$tool.log" | tail -n 1) (exit $rc)"
        ((rc == 0)) || fail "$tool found problems (log: $tool.log)"
    done
fi
if [[ ,${EXTRA:-}, == *,bench,* ]]; then
    echo "== bench (installed wheel)"
    rc=0
    (cd "$WORK" && timeout -k 10 "$(limit 200)" "$VPY" -m int4mm bench \
        --suite "${BENCH_SUITE:-default}" --out "$OUT/bench.json" ${BENCH_ARGS:-}) \
        > "$OUT/bench.txt" 2> "$OUT/bench.err" || rc=$?
    cat "$OUT/bench.txt"
    ((rc == 0)) || fail "bench failed (exit $rc; log: bench.err)"
fi
say "OK ($((SECONDS)) s); logs in $OUT"
