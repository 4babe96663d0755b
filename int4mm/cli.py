"""Command line: ``python -m int4mm info`` and ``python -m int4mm bench``."""

from __future__ import annotations

import argparse
import json
import sys


def _print_info(as_json: bool) -> int:
    from ._info import info

    data = info()
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"int4mm {data['int4mm']} (Python {data['python']})")
    if data.get("variant"):
        print(f"  distribution: {data['dist']} (CUDA {data['variant_cuda']} variant; needs an "
              f"NVIDIA driver >= {data['min_driver']})")
    else:
        print(f"  distribution: {data['dist']} (built from source)")
    if "error" in data:
        print(f"  error: {data['error']}")
        return 1
    print(f"  built with CUDA runtime {data['cuda_runtime']} (linked statically)")
    print(f"  compiled targets: {' '.join(data['compiled_targets'])}")
    print(f"  driver: CUDA {data['driver_cuda']} - {data['driver_status']}")
    print(f"  torch: {data['torch']}")
    if not data["devices"]:
        print("  GPUs: none visible")
    for d in data["devices"]:
        verdict = "supported" if d["supported"] else "NOT supported"
        print(f"  GPU {d['index']}: {d['name']} (sm_{d['major']}{d['minor']}, "
              f"{d['sm_count']} SMs, {d['total_memory'] / 2**30:.1f} GiB) - {verdict}: "
              f"{d['reason']}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m int4mm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="version, build, driver and GPUs")
    p_info.add_argument("--json", action="store_true", help="print JSON")
    p_bench = sub.add_parser("bench", help="benchmark against fp16 cuBLAS on this GPU")
    from .bench import add_arguments

    add_arguments(p_bench)
    args = parser.parse_args(argv)
    if args.command == "info":
        return _print_info(args.json)
    from .bench import run

    return run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
