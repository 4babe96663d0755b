"""The one table of binary distributions: ``int4mm-cuXYZ`` per CUDA toolkit line.

Read by setup.py (archs, toolkit check, distribution name), by the workflows
and cibuildwheel (``python int4mm/_variants.py matrix|get``), by
``python -m int4mm info`` (driver and architecture diagnostics) and by the
README's table (``python int4mm/_variants.py markdown``).  Pure standard
library, loadable by path without importing the package.

Rules that produced the arch lists (checked by tests/test_variants.py):
SASS for every architecture the toolkit's nvcc lists from MIN_ARCH (sm_80)
up, Hopper as the arch-specific ``sm_90a`` (the wgmma kernels need it), plus
PTX of the newest plain architecture so that later GPUs JIT-compile it.
"""

from __future__ import annotations

import json
import sys
from typing import NamedTuple

MIN_ARCH = 80  # mma.sync m16n8k16 + cp.async: Ampere and newer

# Build-time only: the CUTLASS/CuTe headers of the Hopper kernels (an
# ``nvidia_cutlass-*.whl`` in .whl/, unpacked by setup.py).
CUTLASS_REQUIREMENT = "nvidia-cutlass==4.2.0.0"

# `nvcc --list-gpu-arch`, compute capabilities >= MIN_ARCH, per toolkit line.
# 12.8 added 100/101/120, 12.9 added 103/121, 13.0 renamed 101 -> 110 and
# added 88 (and dropped everything below 75).
TOOLKIT_ARCHS = {
    "12.1": (80, 86, 87, 89, 90),
    "12.4": (80, 86, 87, 89, 90),
    "12.6": (80, 86, 87, 89, 90),
    "12.8": (80, 86, 87, 89, 90, 100, 101, 120),
    "12.9": (80, 86, 87, 89, 90, 100, 101, 103, 120, 121),
    "13.0": (80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121),
}

# Minimum Linux driver of a CUDA major line (CUDA minor-version compatibility:
# any 12.x build runs on a >= 525.60.13 driver, any 13.x on >= 580.65.06).
# PTX JIT of a 12.x build needs a driver of at least that 12.x release.
MIN_DRIVER = {12: "525.60.13", 13: "580.65.06"}


class Variant(NamedTuple):
    name: str  # cu130
    toolkit: str  # "13.0": the CUDA toolkit line it is built with
    archs: tuple  # SASS targets, nvcc spelling without "sm_": "80", "90a", ...
    ptx: str  # the PTX target (compute_XX) for newer GPUs
    max_gcc: int  # newest host gcc this nvcc accepts (older toolset used if needed)
    gpus: str  # for the README

    @property
    def dist(self) -> str:
        return f"int4mm-{self.name}"

    @property
    def cuda_major(self) -> int:
        return int(self.toolkit.split(".")[0])

    @property
    def cuda_version(self) -> int:
        """As cudaRuntimeGetVersion reports it: 13.0 -> 13000."""
        major, minor = (int(x) for x in self.toolkit.split("."))
        return major * 1000 + minor * 10

    @property
    def min_driver(self) -> str:
        return MIN_DRIVER[self.cuda_major]

    @property
    def targets(self) -> list:
        """What the built extension reports from ``compiled_targets()``."""
        return [f"sm_{a}" for a in self.archs] + [f"compute_{self.ptx}"]


_AMPERE_HOPPER = "Ampere, Ada, Hopper; Blackwell through PTX"
_ALL = "Ampere, Ada, Hopper, Blackwell"

VARIANTS = {
    v.name: v
    for v in (
        Variant("cu121", "12.1", ("80", "86", "87", "89", "90a"), "90", 12, _AMPERE_HOPPER),
        Variant("cu124", "12.4", ("80", "86", "87", "89", "90a"), "90", 13, _AMPERE_HOPPER),
        Variant("cu126", "12.6", ("80", "86", "87", "89", "90a"), "90", 13, _AMPERE_HOPPER),
        Variant("cu128", "12.8", ("80", "86", "87", "89", "90a", "100", "101", "120"), "120",
                14, _ALL),
        Variant("cu130", "13.0",
                ("80", "86", "87", "88", "89", "90a", "100", "103", "110", "120", "121"),
                "121", 14, _ALL),
    )
}

DEFAULT_VARIANT = "cu130"  # what the README and .ci/run build


def get(name: str) -> Variant:
    key = name.strip().lower()
    if key not in VARIANTS:
        raise KeyError(f"unknown int4mm variant {name!r}: one of {', '.join(VARIANTS)}")
    return VARIANTS[key]


def expected_archs(toolkit: str) -> tuple:
    """The arch list the rules above give for a toolkit line."""
    nums = [n for n in TOOLKIT_ARCHS[toolkit] if n >= MIN_ARCH]
    return tuple("90a" if n == 90 else str(n) for n in nums)


def _cuda_tuple(version: int) -> tuple:
    return version // 1000, (version % 1000) // 10


def fitting_variant(driver_cuda: int):
    """The newest variant a driver supporting CUDA ``driver_cuda`` (e.g. 12040)
    runs fully (PTX JIT included), else one it runs through minor-version
    compatibility, else None."""
    if driver_cuda <= 0:
        return None
    drv = _cuda_tuple(driver_cuda)
    by_age = sorted(VARIANTS.values(), key=lambda v: v.cuda_version, reverse=True)
    for v in by_age:
        if _cuda_tuple(v.cuda_version) <= drv:
            return v
    for v in reversed(by_age):  # same major, older driver: minor-version compatibility
        if v.cuda_major == drv[0]:
            return v
    return None


def variants_with_sass(arch: int) -> list:
    """Variants that carry native code for compute capability ``arch`` (e.g. 90)."""
    return [v for v in VARIANTS.values() if any(int(a.rstrip("af")) == arch for a in v.archs)]


def matrix() -> list:
    return [{"variant": v.name, "toolkit": v.toolkit} for v in VARIANTS.values()]


def markdown() -> str:
    header = ("| Variant | `pip install` | CUDA toolkit | NVIDIA driver (Linux) "
              "| GPUs: native code (SASS) | PTX |")
    rows = [header, "|---|---|---|---|---|---|"]
    for v in VARIANTS.values():
        sass = ", ".join(f"sm_{a}" for a in v.archs)
        rows.append(f"| {v.name} | `pip install {v.dist}` | {v.toolkit} | >= {v.min_driver} "
                    f"| {v.gpus}: {sass} | compute_{v.ptx} |")
    return "\n".join(rows)


def _main(argv) -> int:
    usage = ("usage: _variants.py names | matrix | markdown | cutlass | "
             "get VARIANT {toolkit|archs|ptx|dist|max_gcc|min_driver}")
    if not argv:
        print(usage, file=sys.stderr)
        return 2
    cmd = argv[0]
    if cmd == "names":
        print(" ".join(VARIANTS))
    elif cmd == "matrix":
        print(json.dumps(matrix()))
    elif cmd == "markdown":
        print(markdown())
    elif cmd == "cutlass":
        print(CUTLASS_REQUIREMENT)
    elif cmd == "get" and len(argv) == 3:
        v = get(argv[1])
        value = getattr(v, argv[2])
        print(";".join(value) if isinstance(value, tuple) else value)
    else:
        print(usage, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
