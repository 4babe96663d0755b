"""Build and device facts for ``python -m int4mm info`` and ``int4mm.info()``."""

from __future__ import annotations

import importlib.util
import platform
import re
import sys
from pathlib import Path

from . import _variants
from ._version import __version__

MIN_CC = (8, 0)  # mma.sync m16n8k16 with fp32 accumulation and cp.async: Ampere and newer


def _fmt_cuda(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}" if v else "none"


def build_variant():
    """(distribution name, Variant or None) of this build: ``int4mm-cu130`` from
    a wheel, ``int4mm`` (None) from the sdist or a source checkout."""
    try:
        from . import _build_version as bv  # type: ignore[attr-defined]
    except ImportError:
        return "int4mm", None
    name = getattr(bv, "variant", None)
    variant = _variants.VARIANTS.get(name) if name else None
    return (variant.dist if variant else "int4mm"), variant


def _pip(v) -> str:
    return f"pip install {v.dist}"


def driver_advice(driver: int, runtime: int, variant=None) -> str | None:
    """One sentence when the driver (supporting CUDA ``driver``) is too old for
    this build (CUDA runtime ``runtime``), naming the variant that fits; else None."""
    if driver <= 0 or driver // 1000 >= runtime // 1000:
        return None
    dist = variant.dist if variant else "this source build of int4mm"
    major = runtime // 1000
    need = _variants.MIN_DRIVER.get(major)
    need_text = f"an NVIDIA driver >= {need} (CUDA {major}.x)" if need else f"CUDA {major}.x"
    fit = _variants.fitting_variant(driver)
    if fit is not None:
        return (f"The NVIDIA driver supports CUDA {_fmt_cuda(driver)}, too old for {dist}, which "
                f"needs {need_text}: `pip uninstall {dist if variant else 'int4mm'}` and "
                f"`{_pip(fit)}` (it runs on this driver), or update the driver.")
    oldest = min(_variants.VARIANTS.values(), key=lambda v: v.cuda_version)
    return (f"The NVIDIA driver supports CUDA {_fmt_cuda(driver)}, too old for {dist} and for "
            f"every int4mm wheel (the oldest, {oldest.dist}, needs a driver >= "
            f"{oldest.min_driver}): update the NVIDIA driver.")


def arch_advice(arch: int, driver: int = 0, dist: str = "this build") -> str:
    """One sentence: what to do when this build has no code for sm_<arch>."""
    have = _variants.variants_with_sass(arch)
    rebuild = f"build from source with INT4MM_CUDA_ARCHS={'90a' if arch == 90 else arch}"
    if arch < _variants.MIN_ARCH:
        return (f"int4mm needs compute capability {MIN_CC[0]}.{MIN_CC[1]} or newer; "
                f"sm_{arch} is not supported by any variant.")
    if not have:
        newest = max(_variants.VARIANTS.values(), key=lambda v: v.cuda_version)
        return (f"No int4mm wheel has native code for sm_{arch} yet: `{_pip(newest)}` (its "
                f"PTX compute_{newest.ptx} runs on newer GPUs) or {rebuild}.")
    fit = _variants.fitting_variant(driver) if driver else None
    usable = [v for v in have if fit is None or v.cuda_version <= fit.cuda_version]
    # The newest this driver runs fully, else the one asking the least of the driver.
    pick = (max(usable, key=lambda v: v.cuda_version) if usable
            else min(have, key=lambda v: v.cuda_version))
    return (f"{dist} has no code for sm_{arch}: `{_pip(pick)}`, which has native sm_{arch} "
            f"code, or {rebuild}.")


def _torch_cuda():
    """(torch version, its CUDA version or None) without importing torch; None
    when torch is not installed."""
    mod = sys.modules.get("torch")
    if mod is not None and hasattr(mod, "version"):
        return str(getattr(mod, "__version__", "?")), getattr(mod.version, "cuda", None)
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    try:
        text = (Path(spec.origin).parent / "version.py").read_text()
    except OSError:
        return "?", None
    ver = re.search(r"^__version__\s*(?::[^=]*)?=\s*['\"]([^'\"]+)", text, re.MULTILINE)
    cuda = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)", text, re.MULTILINE)
    return (ver.group(1) if ver else "?"), (cuda.group(1) if cuda else None)


def torch_note(torch=None, variant=None, runtime: int = 0) -> str:
    """One sentence on the installed torch's CUDA version versus this build."""
    if torch is None:
        return ("The core does not use torch: a torch built for another CUDA version is "
                "harmless.")
    tver, tcuda = torch
    ours = variant.dist if variant else "this int4mm build"
    ours_cuda = variant.toolkit if variant else (_fmt_cuda(runtime) if runtime else "?")
    if tcuda is None:
        return (f"torch {tver} is a CPU-only build: harmless, int4mm does not use torch's CUDA "
                "(it carries its own CUDA runtime), but you need a CUDA array library for GPU "
                "arrays.")
    if tcuda == ours_cuda:
        return f"torch {tver} uses CUDA {tcuda}, the same as {ours}."
    return (f"torch {tver} uses CUDA {tcuda} and {ours} CUDA {ours_cuda}: this mismatch is "
            "harmless, int4mm links its own CUDA runtime statically and does not use torch, "
            "so only the NVIDIA driver must support both.")


def error_hint(kind: str, message: str) -> str | None:
    """The sentence added to the error of the first GPU call (see _int4mm.pyx):
    ``kind`` is "driver" (driver too old) or "arch" (no code for this GPU)."""
    from . import _int4mm as nat

    dist, variant = build_variant()
    if kind == "driver":
        return driver_advice(nat.driver_version(), nat.cuda_runtime_version(), variant)
    if kind == "arch":
        m = re.search(r"compute capability (\d+)\.(\d+)", message)
        if m:
            arch = int(m.group(1)) * 10 + int(m.group(2))
            return arch_advice(arch, nat.driver_version(), dist)
    return None


def _support(cc: tuple[int, int], targets: list[str], loadable: bool, *, dist: str = "int4mm",
             driver: int = 0) -> tuple[bool, str]:
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
        return False, (f"this build has no code for sm_{arch} (it has {' '.join(targets)}). "
                       + arch_advice(arch, driver, dist))
    if not loadable:
        return False, (f"the build lists {how}, but the driver could not load it: "
                       "update the NVIDIA driver")
    return True, how


def info() -> dict:
    """Everything ``python -m int4mm info`` prints, as a dict."""
    dist, variant = build_variant()
    out = {"int4mm": __version__, "python": platform.python_version(), "dist": dist,
           "variant": variant.name if variant else None, "devices": []}
    if variant is not None:
        out.update(variant_cuda=variant.toolkit, min_driver=variant.min_driver)
    try:
        from . import _int4mm as nat
    except ImportError as exc:
        out["error"] = f"compiled extension not importable: {exc}"
        return out
    rt = nat.cuda_runtime_version()
    targets = list(nat.compiled_targets())
    drv = nat.driver_version()
    out.update(cuda_runtime=_fmt_cuda(rt), compiled_targets=targets, driver_cuda=_fmt_cuda(drv))
    out["torch"] = torch_note(_torch_cuda(), variant, rt)
    if drv == 0:
        out["driver_status"] = ("no NVIDIA driver found (libcuda.so.1 not loadable): "
                                "int4mm can be imported but GPU functions will raise")
        return out
    advice = driver_advice(drv, rt, variant)
    if advice:
        out["driver_status"] = advice
    elif drv < rt:
        out["driver_status"] = (f"ok (CUDA minor-version compatibility; PTX for GPUs newer than "
                                f"this build needs a driver for CUDA {_fmt_cuda(rt)})")
    else:
        out["driver_status"] = "ok"
    for d in range(nat.device_count()):
        try:
            di = nat.device_info(d)
        except Exception as exc:  # noqa: BLE001 - report the device, do not abort the listing
            out["devices"].append({"index": d, "name": "?", "major": 0, "minor": 0,
                                   "sm_count": 0, "total_memory": 0, "supported": False,
                                   "reason": f"could not query this GPU: {exc}"})
            continue
        ok, why = _support((di["major"], di["minor"]), targets, bool(di["kernels_loadable"]),
                           dist=dist, driver=drv)
        di.update(index=d, supported=ok, reason=why)
        out["devices"].append(di)
    return out


def is_available() -> bool:
    """True when the extension loads and at least one GPU can run its kernels."""
    try:
        return any(d["supported"] for d in info()["devices"])
    except Exception:  # noqa: BLE001 - availability probe must not raise
        return False
