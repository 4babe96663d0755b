"""Check (and refit) the shared-memory-ring decode defaults against harness sweeps.

The sweeps are `harness shapes|m1|g1` output with STAGES including 2: one
"K=.. N=.. M=.. G=.." line per case, then a "sweep(nb mt u wk ks st:us)" line
listing every config's time as digits nb mt u wk ks st (nb may be two digits).

    python3 benchmarks/decode_harness/fit_ring_defaults.py SWEEP.txt [SWEEP.txt ...]
        prints, per case of 16 MiB and more, the model's pick (the scores of
        ring_config in src/cuda/matmul_decode.cu), its time, the sweep's best,
        and the regret; --search also grid-searches the model's constants.

Residency is not modelled here (the C++ code skips grids that do not fit in
one wave, which matters at M = 9-16, where x's rows take shared memory too);
the bandwidth is the H200's (4.81 TB/s, as the device reports it).
pick() is the Python twin of ring_config: a change to one belongs in the other.
"""

from __future__ import annotations

import argparse
import itertools
import math
import re

SMS = 132
BANDWIDTH = 4.81e12
# target MB at 4.9 TB/s, per-channel chunk, grouped chunk, chunk weight,
# steps floor, steps weight, balance weight, wk=2 cost, warps floor, warps weight, ks=4 cost
DEFAULT = (7e6, 4096, 8192, 0.5, 32, 3.0, 4.0, 1.0, 1024, 1.0, 1.0)


def load(paths):
    cases: dict[tuple[int, int, int, int], dict[tuple[int, ...], float]] = {}
    for path in paths:
        with open(path) as f:
            lines = f.read().split("\n")
        for i, line in enumerate(lines[:-1]):
            head = re.match(r"K=(\d+) N=(\d+) M=(\d+) G=(\d+)", line)
            if not head or "sweep" not in lines[i + 1]:
                continue
            key = tuple(int(v) for v in head.groups())
            times = cases.setdefault(key, {})
            for cfg, us in re.findall(r" (\d+):([\d.]+)", lines[i + 1]):
                nb, rest = int(cfg[:-5]), [int(c) for c in cfg[-5:]]
                times[(nb, rest[1], rest[2], rest[3], rest[4])] = float(us)  # (nb, u, wk, ks, st)
    return cases


def pick(K, N, G, P, M=1):
    tgt, c_pc, c_g, a_chunk, s_floor, b_steps, bal_w, wk2, w_floor, w_w, ks4 = P
    n16, ksteps, grouped = N // 16, K // 16, G != K
    target = tgt * BANDWIDTH / 4.9e12
    best = None
    for nb, u, wk, ks in itertools.product((1, 2, 4, 8, 16), (4, 8), (8, 4, 2), (1, 2, 4)):
        if n16 % nb or (G // 16) % u:
            continue
        if M > 8 and (nb < 2 or (grouped and nb > 8)):  # mt = 2: the kernels that exist
            continue
        ctas = n16 // nb * ks
        warps = ctas * wk
        spw = ksteps / (wk * ks)
        if spw < u or warps > 16 * SMS:
            continue
        chunk = nb * u * 128
        balance = (warps / SMS) / (math.ceil(ctas / SMS) * wk)
        score = (abs(math.log2(chunk * warps / target))
                 + a_chunk * abs(math.log2(chunk / (c_g if grouped else c_pc)))
                 + bal_w * (1 / balance - 1))
        if spw < s_floor:
            score += b_steps * math.log2(s_floor / spw)
        if M > 8 and spw > 128:  # mt = 2: long runs per warp (v17)
            score += 0.5 * math.log2(spw / 128)
        if warps < w_floor:
            score += w_w * math.log2(w_floor / warps)
        score += wk2 * (wk == 2) + ks4 * (ks == 4)
        key = (score, -wk, ks)
        if best is None or key < best[0]:
            best = (key, (nb, u, wk, ks, 2))
    return best[1]


def regrets(cases, P):
    out = []
    for (K, N, M, G), times in sorted(cases.items()):
        c = pick(K, N, G, P, M)
        if c in times:
            out.append(((K, N, M, G), c, times[c], min(times.values())))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sweeps", nargs="+")
    ap.add_argument("--search", action="store_true", help="grid-search the constants")
    args = ap.parse_args()
    cases = {k: v for k, v in load(args.sweeps).items() if k[0] * k[1] // 2 >= 16 << 20}
    P = DEFAULT
    if args.search:
        grid = itertools.product([6e6, 7e6, 8e6], [4096], [8192], [0.5, 1], [32, 64], [1, 3],
                                 [2, 4], [1], [768, 1024], [1, 2], [0.5, 1])
        scored = []
        for Q in grid:
            r = [t / b - 1 for *_, t, b in regrets(cases, Q)]
            scored.append((sum(r) / len(r), max(r), Q))
        P = min(scored)[2]
        print("best constants", P)
    rows = regrets(cases, P)
    for shape, c, t, b in rows:
        print(f"{shape}: pick nb{c[0]} u{c[1]} wk{c[2]} ks{c[3]} {t:.1f} us, best {b:.1f} us, "
              f"+{100 * (t / b - 1):.1f}%")
    r = [t / b - 1 for *_, t, b in rows]
    print(f"{len(r)} cases: mean +{100 * sum(r) / len(r):.1f}%, worst +{100 * max(r):.1f}%")


if __name__ == "__main__":
    main()
