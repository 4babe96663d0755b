"""Build and device facts for ``python -m int4mm info`` and ``int4mm.info()``."""

from __future__ import annotations

import platform

from ._version import __version__

MIN_CC = (8, 0)  # mma.sync m16n8k16 with fp32 accumulation and cp.async: Ampere and newer


def _fmt_cuda(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}" if v else "none"


def _support(cc: tuple[int, int], targets: list[str], loadable: bool) -> tuple[bool, str]:
    """Whether this build can run on a GPU of compute capability ``cc``, and why."""
    arch = cc[0] * 10 + cc[1]
    if cc < MIN_CC:
        return False, (f"compute capability {cc[0]}.{cc[1]} is older than int4mm's minimum "
                       f"{MIN_CC[0]}.{MIN_CC[1]} (Ampere): the kernels need mma.sync and cp.async")
    sass = {t[3:].rstrip("af") for t in targets if t.startswith("sm_")}
    ptx = [int(t[8:]) for t in targets if t.startswith("compute_") and t[8:].isdigit()]
    if str(arch) in sass:
        how = f"native code (sm_{arch})"
    elif any(p <= arch for p in ptx):
        how = f"PTX (compute_{max(p for p in ptx if p <= arch)}) compiled by the driver at first use"
    else:
        return False, (f"this build has no code for sm_{arch} (it has {' '.join(targets)}): "
                       "install the int4mm wheel for your CUDA version or rebuild from source "
                       f"with INT4MM_CUDA_ARCHS including {arch}")
    if not loadable:
        return False, (f"the build lists {how}, but the driver could not load it: "
                       "update the NVIDIA driver")
    return True, how


def info() -> dict:
    """Everything ``python -m int4mm info`` prints, as a dict."""
    out = {"int4mm": __version__, "python": platform.python_version(), "devices": []}
    try:
        from . import _int4mm as nat
    except ImportError as exc:
        out["error"] = f"compiled extension not importable: {exc}"
        return out
    rt = nat.cuda_runtime_version()
    targets = list(nat.compiled_targets())
    drv = nat.driver_version()
    out.update(cuda_runtime=_fmt_cuda(rt), compiled_targets=targets, driver_cuda=_fmt_cuda(drv))
    if drv == 0:
        out["driver_status"] = ("no NVIDIA driver found (libcuda.so.1 not loadable): "
                                "int4mm can be imported but GPU functions will raise")
        return out
    if drv // 1000 < rt // 1000:
        out["driver_status"] = (
            f"driver supports CUDA {_fmt_cuda(drv)} but this build needs CUDA {rt // 1000}.x: "
            f"update the driver or install the int4mm-cu{drv // 1000}x variant that matches it")
    else:
        out["driver_status"] = "ok"
    for d in range(nat.device_count()):
        di = nat.device_info(d)
        ok, why = _support((di["major"], di["minor"]), targets, bool(di["kernels_loadable"]))
        di.update(index=d, supported=ok, reason=why)
        out["devices"].append(di)
    return out


def is_available() -> bool:
    """True when the extension loads and at least one GPU can run its kernels."""
    try:
        return any(d["supported"] for d in info()["devices"])
    except Exception:  # noqa: BLE001 - availability probe must not raise
        return False
