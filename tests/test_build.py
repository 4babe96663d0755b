"""Build metadata: what the extension says about itself, and what it links."""

import os
import re
import shutil
import subprocess

import pytest

nat = pytest.importorskip("int4mm._int4mm", reason="compiled extension not built")

from int4mm._info import _support


def test_runtime_version_and_targets():
    assert nat.cuda_runtime_version() >= 11000
    targets = nat.compiled_targets()
    assert targets and all(re.fullmatch(r"(sm|compute)_\d+a?f?", t) for t in targets), targets
    assert any(t.startswith("compute_") for t in targets), "PTX of the newest arch is embedded"


def test_no_dynamic_cudart_or_torch():
    if not shutil.which("ldd"):
        pytest.skip("ldd not available")
    out = subprocess.run(["ldd", nat.__file__], capture_output=True, text=True, check=False).stdout
    assert "libcudart" not in out, out
    assert "libtorch" not in out and "libc10" not in out, out
    assert "libcuda.so" not in out, "the driver must be loaded at run time, not linked"


def test_device_count_never_raises():
    assert nat.device_count() >= 0


def test_support_verdicts():
    assert _support((9, 0), ["sm_80", "sm_90a", "compute_90"], True)[0]
    ok, why = _support((7, 5), ["sm_80", "compute_80"], True)
    assert not ok and "older than" in why
    ok, why = _support((8, 9), ["sm_90a", "compute_90"], True)
    assert not ok and "no code for sm_89" in why
    ok, why = _support((12, 0), ["sm_80", "compute_90"], True)
    assert ok and "PTX" in why


def test_import_without_gpu_env():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    import sys

    code = "import int4mm, int4mm._int4mm as m; print(m.device_count())"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0"
