"""The variant table (int4mm/_variants.py): every variant is buildable with its
toolkit, names and drivers are consistent, the diagnostics name what fits,
and setup / cibuildwheel / workflows / README read the same table.  CPU only."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from int4mm import _info, _variants
from int4mm._variants import MIN_ARCH, TOOLKIT_ARCHS, VARIANTS

ROOT = Path(__file__).resolve().parent.parent
IN_TREE = (ROOT / "setup.py").is_file()  # False when tests/ is a copy (wheel tests)
in_tree = pytest.mark.skipif(not IN_TREE, reason="needs the source tree (setup.py, workflows)")


def _num(arch: str) -> int:
    return int(arch.rstrip("af"))


def test_required_variants_present():
    assert {"cu121", "cu124", "cu126", "cu128", "cu130"} <= set(VARIANTS)


@pytest.mark.parametrize("v", VARIANTS.values(), ids=list(VARIANTS))
def test_variant_consistent(v):
    assert v.name == "cu" + v.toolkit.replace(".", "")
    assert v.dist == f"int4mm-{v.name}"
    supported = TOOLKIT_ARCHS[v.toolkit]
    # SASS for every arch the toolkit has from sm_80 up, Hopper as sm_90a ...
    assert v.archs == _variants.expected_archs(v.toolkit)
    for a in v.archs:
        assert re.fullmatch(r"\d+[af]?", a) and _num(a) >= MIN_ARCH
        assert _num(a) in supported, f"{v.name}: CUDA {v.toolkit} cannot compile sm_{a}"
    assert "90a" in v.archs and "90" not in v.archs
    # ... plus PTX of the newest plain arch.
    assert v.ptx == str(max(_num(a) for a in v.archs)) and v.ptx.isdigit()
    assert v.targets[-1] == f"compute_{v.ptx}"
    assert v.min_driver == {12: "525.60.13", 13: "580.65.06"}[v.cuda_major]


def test_toolkit_facts():
    for tk in ("12.1", "12.4", "12.6"):
        assert not {100, 101, 103, 110, 120, 121} & set(TOOLKIT_ARCHS[tk])
    assert {100, 101, 120} <= set(TOOLKIT_ARCHS["12.8"]) and 110 not in TOOLKIT_ARCHS["12.8"]
    assert all(110 not in a for tk, a in TOOLKIT_ARCHS.items() if tk.startswith("12."))
    assert 110 in TOOLKIT_ARCHS["13.0"] and 101 not in TOOLKIT_ARCHS["13.0"]
    assert "110" in VARIANTS["cu130"].archs and "101" in VARIANTS["cu128"].archs


def test_local_nvcc_matches_table():
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not os.path.isfile(nvcc):
        pytest.skip("no nvcc")
    release = re.search(r"release (\d+\.\d+)",
                        subprocess.run([nvcc, "--version"], capture_output=True,
                                       text=True, check=True).stdout).group(1)
    if release not in TOOLKIT_ARCHS:
        pytest.skip(f"CUDA {release} is not in the table")
    out = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True,
                         check=True).stdout
    listed = tuple(sorted({int(n) for n in re.findall(r"compute_(\d+)", out) if int(n) >= 80}))
    assert listed == TOOLKIT_ARCHS[release]


@pytest.mark.parametrize("driver, fits", [
    (13000, "cu130"), (13010, "cu130"), (12090, "cu128"), (12080, "cu128"), (12060, "cu126"),
    (12040, "cu124"), (12020, "cu121"), (12000, "cu121"), (11080, None), (0, None)])
def test_fitting_variant(driver, fits):
    v = _variants.fitting_variant(driver)
    assert (v.name if v else None) == fits


def _one_sentence(text):
    assert text and text.endswith("."), text
    assert ". " not in text.rstrip("."), f"more than one sentence: {text}"


def test_driver_too_old_names_the_variant_that_fits():
    msg = _info.driver_advice(12040, 13000, VARIANTS["cu130"])
    _one_sentence(msg)
    assert "too old for int4mm-cu130" in msg and "pip install int4mm-cu124" in msg
    assert "580.65.06" in msg
    msg = _info.driver_advice(11080, 12010, VARIANTS["cu121"])
    _one_sentence(msg)
    assert "update the NVIDIA driver" in msg and "525.60.13" in msg
    assert _info.driver_advice(13000, 13000, VARIANTS["cu130"]) is None
    assert _info.driver_advice(12020, 12080, VARIANTS["cu128"]) is None  # minor-version compat
    assert _info.driver_advice(0, 13000, VARIANTS["cu130"]) is None  # "no driver" is separate


def test_arch_missing_says_what_to_do():
    msg = _info.arch_advice(89, 13000, "int4mm")
    _one_sentence(msg)
    assert "no code for sm_89" in msg and "pip install int4mm-cu130" in msg
    assert "INT4MM_CUDA_ARCHS=89" in msg
    msg = _info.arch_advice(100, 12040, "int4mm-cu121")  # driver 12.4: oldest with sm_100
    assert "pip install int4mm-cu128" in msg
    assert "INT4MM_CUDA_ARCHS=90a" in _info.arch_advice(90, 0)
    ok, why = _info._support((8, 9), ["sm_90a", "compute_90"], True, dist="int4mm-cu121",
                             driver=12060)
    assert not ok and "no code for sm_89" in why and "pip install int4mm-cu126" in why


def test_torch_cuda_mismatch_is_harmless():
    msg = _info.torch_note(("2.5.1+cu121", "12.1"), VARIANTS["cu130"])
    _one_sentence(msg)
    assert "harmless" in msg and "12.1" in msg and "int4mm-cu130" in msg
    assert "same" in _info.torch_note(("2.9.0", "13.0"), VARIANTS["cu130"])
    assert "harmless" in _info.torch_note(("2.5.1+cpu", None), VARIANTS["cu126"])
    assert "harmless" in _info.torch_note(None)


def test_first_gpu_call_errors_carry_the_hint(monkeypatch):
    from int4mm import errors

    monkeypatch.setattr(_info, "error_hint",
                        lambda kind, message: {"arch": "Use X.", "driver": "Use Y."}[kind])
    e = errors.UnsupportedDeviceError("this build of int4mm has no code for this GPU (compute "
                                      "capability 8.9; compiled targets: sm_90a)")
    assert str(e).endswith("sm_90a). Use X.")
    e = errors.NoDeviceError("driver too old", 35, "cudaErrorInsufficientDriver")
    assert str(e) == "driver too old. Use Y." and e.code == 35
    assert str(errors.NoDeviceError("no GPU", 100, "cudaErrorNoDevice")) == "no GPU"
    monkeypatch.setattr(_info, "error_hint", lambda kind, message: 1 / 0)
    assert str(errors.UnsupportedDeviceError("compute capability 7.0")) == "compute capability 7.0"


def test_info_reports_the_distribution():
    data = _info.info()
    dist, variant = _info.build_variant()
    assert data["dist"] == dist and data["variant"] == (variant.name if variant else None)
    if "error" not in data:
        assert "harmless" in data["torch"] or "same" in data["torch"]
        if variant is not None:
            assert data["compiled_targets"] == variant.targets


def test_cli_table_commands():
    run = [sys.executable, str(Path(_variants.__file__))]
    out = subprocess.run([*run, "get", "cu130", "archs"], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ";".join(VARIANTS["cu130"].archs)
    assert subprocess.run([*run, "names"], capture_output=True, text=True,
                          check=True).stdout.split() == list(VARIANTS)


@in_tree
def test_readme_table_is_the_table():
    readme = (ROOT / "README.md").read_text()
    assert _variants.markdown() in readme, "README variant table: paste `python " \
        "int4mm/_variants.py markdown`"
    for v in VARIANTS.values():
        assert f"pip install {v.dist}" in readme


@in_tree
def test_build_and_workflows_read_the_table():
    setup = (ROOT / "setup.py").read_text()
    assert "_variants.py" in setup and "INT4MM_VARIANT" in setup
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "tools/cibw_before_all.sh" in pyproject and "INT4MM_VARIANT" in pyproject
    assert "--exclude libcuda.so.1" in pyproject
    assert "_variants.py" in (ROOT / "tools" / "cibw_before_all.sh").read_text()
    wf = ROOT / ".github" / "workflows"
    assert "_variants.py matrix" in (wf / "wheels.yml").read_text()
    assert "wheels.yml" in (wf / "release.yml").read_text()


@in_tree
@pytest.mark.parametrize("env, expected", [
    ("1.2.3", "1.2.3"), ("v1.3.0rc1", "1.3.0rc1"), ("1.2.3.post4.dev0+gabcdef0", None)])
def test_version_tool(env, expected):
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "version.py")],
                         env=dict(os.environ, INT4MM_VERSION=env), capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == (expected or env)
    pre = subprocess.run([sys.executable, str(ROOT / "tools" / "version.py"), "--prerelease"],
                         env=dict(os.environ, INT4MM_VERSION=env), capture_output=True,
                         text=True, check=True).stdout.strip()
    assert pre == ("true" if ("rc" in env or "dev" in env) else "false")
