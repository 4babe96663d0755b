#!/usr/bin/env bash
# Test an *installed* int4mm (a wheel), never the source tree: copies tests/
# to a temporary folder, checks from there that `import int4mm` resolves to
# the installed package, prints `python -m int4mm info`, runs pytest.
# Used by cibuildwheel's test-command, .ci/run and tools/gpu_wheel_check.sh.
#
#   bash tools/test_installed.sh PROJECT_DIR [pytest arguments...]
#
# PYTHON (default: python) is the interpreter of the environment holding the wheel.
set -euo pipefail
project=$(cd "${1:?usage: test_installed.sh PROJECT_DIR [pytest args]}" && pwd -P)
shift
PY=${PYTHON:-python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$project/tests" "$work/tests"
rm -rf "$work/tests/__pycache__"
cd "$work"
# Where int4mm comes from, checked in the same folder pytest runs in.
location=$("$PY" -c 'import os, int4mm; print(os.path.realpath(os.path.dirname(int4mm.__file__)))')
case "$location/" in
    "$project"/*)
        echo "FAIL: int4mm is imported from the source tree ($location), not the installed wheel" >&2
        exit 1 ;;
esac
"$PY" -c 'import int4mm._int4mm' || {
    echo "FAIL: the installed int4mm has no loadable compiled extension" >&2
    exit 1
}
echo "int4mm under test: $location"
"$PY" -m int4mm info
INT4MM_EXPECT_INSTALLED_AT=$location "$PY" -m pytest -q -p no:cacheprovider tests "$@"
