"""Re-draw the speedup-vs-M plot of a saved ``python -m int4mm bench`` JSON (no GPU needed).

    python benchmarks/plot.py benchmarks/results/bench-<gpu>-<time>.json [out.png]

Writes next to the JSON (same name, .png) unless an output path is given.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from int4mm.bench import plot


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    src = Path(argv[0])
    dst = Path(argv[1]) if len(argv) == 2 else src.with_suffix(".png")
    plot(json.loads(src.read_text()), dst)
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
