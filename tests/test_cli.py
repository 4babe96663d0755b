"""The command line works without a GPU: info reports, bench refuses clearly."""

import json
import subprocess
import sys

import int4mm


def run(*args):
    return subprocess.run([sys.executable, "-m", "int4mm", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_info_runs_and_reports_build():
    r = run("info")
    assert r.returncode == 0, r.stderr
    assert f"int4mm {int4mm.__version__}" in r.stdout
    assert "compiled targets:" in r.stdout
    assert "driver:" in r.stdout


def test_info_json():
    r = run("info", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["int4mm"] == int4mm.__version__
    assert data["compiled_targets"], "a build must list what it compiled"
    for d in data["devices"]:
        assert isinstance(d["supported"], bool) and d["reason"]


def test_bench_without_gpu_exits_nonzero():
    if int4mm.is_available():
        import pytest

        pytest.skip("GPU present: the benchmark is run by tools/gpu_check.sh, not by tests")
    r = run("bench", "--quick")
    assert r.returncode != 0
    assert "GPU" in r.stderr or "GPU" in r.stdout
