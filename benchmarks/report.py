"""Markdown from a `python -m int4mm bench` JSON: the README's benchmark section.

    python benchmarks/report.py benchmarks/results/X.json              # print
    python benchmarks/report.py benchmarks/results/X.json --readme README.md
        # replace the text between <!-- bench:start --> and <!-- bench:end -->

Every number comes from the JSON; nothing here is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def render(data: dict, source: str) -> str:
    gpu = data["gpu"]
    info = data.get("int4mm_info", {})
    ver = data["int4mm"]
    configs = [c for c in data["configs"] if c["name"] != "fp16"]
    rows: dict = {}
    for r in data["records"]:
        rows.setdefault((r["K"], r["N"], r["M"]), {})[r["config"]] = r
    # With INT4MM_COMMIT the tree was a copy whose git metadata (and so the
    # version string) may be stale: name the commit only.
    which = (f"int4mm at commit `{ver.get('commit', '?')}`"
             if ver.get("commit_source") == "INT4MM_COMMIT"
             else f"int4mm {ver['version']} at commit `{ver.get('commit', '?')}`")
    # back to back: the replays queued behind untimed GPU work (no host gap timed)
    replay = ("replays timed back to back, "
              if data["protocol"].get("replay_timing") == "back-to-back" else "")
    intro = (
        f"Measured on {gpu['name']} (driver {gpu.get('driver_version', '?')}, CUDA runtime "
        f"{info.get('cuda_runtime', '?')}), {which}, {data['date'][:10]}, with `python -m int4mm bench "
        f"--suite {data['suite']}` ({source}). GPU time per launch from CUDA-graph replay "
        f"({replay}median of {data['protocol']['repeats']}), weights rotated over more than "
        f"{data['protocol']['l2_factor']}x L2; cells are µs and speedup over fp16 cuBLAS "
        f"(`{data['framework']['name']}.matmul`) measured in the same run; > 1 is faster."
    )
    lines = [
        intro,
        "",
        "| K | N | M | fp16 µs | " + " | ".join(c["label"] for c in configs) + " |",
        "|---:|---:|---:|---:|" + "---:|" * len(configs),
    ]
    for (K, N, M), recs in sorted(rows.items(), key=lambda kv: (kv[0][2] > 1, kv[0])):
        base = recs.get("fp16")
        cells = []
        for c in configs:
            r = recs.get(c["name"])
            if r is None or r.get("us") is None:
                cells.append("—")
            else:
                flag = "" if r.get("status") == "ok" else f" ({r.get('status')})"
                cells.append(f"{r['us']:.1f} ({r['speedup']:.2f}x){flag}")
        fp16 = f"{base['us']:.1f}" if base and base.get("us") else "—"
        lines.append(f"| {K} | {N} | {M} | {fp16} | " + " | ".join(cells) + " |")
    host = data.get("host_overhead", {}).get("us_per_call", {})
    if host:
        shape = data["host_overhead"]["shape"]
        head = (f"Host cost per call (wall clock, back-to-back calls, M={shape['M']} "
                f"K={shape['K']} N={shape['N']}):")
        lines += ["", head, ""]
        lines += [f"- `{name}`: {us:.1f} µs" for name, us in host.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("json")
    p.add_argument("--readme", help="file whose bench:start/end block to replace")
    args = p.parse_args(argv)
    data = json.loads(Path(args.json).read_text())
    text = render(data, Path(args.json).as_posix())
    if not args.readme:
        print(text, end="")
        return 0
    path = Path(args.readme)
    doc = path.read_text()
    block = f"{START}\n{text}{END}"
    if START in doc:
        doc = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, doc,
                     flags=re.DOTALL)
    else:
        doc += "\n" + block + "\n"
    path.write_text(doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
