"""Check (and refit) the shared-memory-ring decode defaults against harness sweeps.

The sweeps are `harness shapes|m1|g1` output with STAGES including 2: one
"K=.. N=.. M=.. G=.." line per case, then a "sweep(...)" line listing every
config's time as nb-mt u wk ks st (v20 on; before: the same digits without the
dash, nb possibly two digits).

    python3 benchmarks/decode_harness/fit_ring_defaults.py SWEEP.txt [SWEEP.txt ...]
        prints, per case of 16 MiB and more, the model's pick (the scores of
        ring_config in src/cuda/matmul_decode.cu), its time, the sweep's best,
        and the regret; --search also grid-searches the model's constants.

Residency is modelled as the C++ code measures it (a grid that does not fit
in one wave is skipped; at M = 9-16 x's rows take shared memory too), from
the ring kernels' register counts (ptxas -v of src/cuda/matmul_decode.cu for
sm_90a, fp16, at v17; widths 5, 7, 10 and 14 at v20) and their shared memory (smem_bytes); the bandwidth is
the H200's (4.81 TB/s, as the device reports it).
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
# registers per thread of the shared-memory-ring kernels, by (nb, mt, u, grouped)
REGISTERS = {
    (1, 1, 4, False): 64, (1, 1, 4, True): 72, (1, 1, 8, False): 78, (1, 1, 8, True): 92,
    (2, 1, 4, False): 80, (2, 1, 4, True): 80, (2, 1, 8, False): 95, (2, 1, 8, True): 96,
    (4, 1, 4, False): 93, (4, 1, 4, True): 96, (4, 1, 8, False): 112, (4, 1, 8, True): 125,
    (8, 1, 4, False): 127, (8, 1, 4, True): 139, (8, 1, 8, False): 143, (8, 1, 8, True): 157,
    (16, 1, 4, False): 187, (16, 1, 4, True): 194, (16, 1, 8, False): 202, (16, 1, 8, True): 214,
    (2, 2, 4, False): 95, (2, 2, 4, True): 113, (2, 2, 8, False): 119, (2, 2, 8, True): 129,
    (4, 2, 4, False): 110, (4, 2, 4, True): 146, (4, 2, 8, False): 130, (4, 2, 8, True): 167,
    (8, 2, 4, False): 156, (8, 2, 4, True): 210, (8, 2, 8, False): 166, (8, 2, 8, True): 235,
    (16, 2, 4, False): 255, (16, 2, 8, False): 255,
    # v20 (cuobjdump --dump-resource-usage); 14 wide with mt = 1, u = 8 is not built (it spills)
    (5, 1, 4, False): 110, (5, 1, 4, True): 128, (5, 1, 8, False): 160, (5, 1, 8, True): 164,
    (7, 1, 4, False): 142, (7, 1, 4, True): 156, (7, 1, 8, False): 208, (7, 1, 8, True): 228,
    (10, 1, 4, False): 186, (10, 1, 4, True): 202, (10, 1, 8, False): 246, (10, 1, 8, True): 248,
    (14, 1, 4, False): 244, (14, 1, 4, True): 246,
    (5, 2, 4, False): 128, (5, 2, 4, True): 175, (5, 2, 8, False): 165, (5, 2, 8, True): 215,
    (7, 2, 4, False): 150, (7, 2, 4, True): 215, (7, 2, 8, False): 206, (7, 2, 8, True): 249,
    (10, 2, 4, False): 190, (10, 2, 8, False): 250, (14, 2, 4, False): 255, (14, 2, 8, False): 254,
}


def resident_ctas(regs: int, wk: int, smem: int) -> int:
    """CTAs per SM (H100/H200 limits) of wk warps with `regs` registers per thread
    (256 per warp granule) and `smem` bytes of dynamic shared memory."""
    if smem > 227 * 1024:
        return 0
    by_regs = 65536 // (math.ceil(regs * 32 / 256) * 256 * wk)
    return min(by_regs, 64 // wk, 32, 228 * 1024 // (smem + 1024))


def per_sm(nb: int, mt: int, u: int, wk: int, grouped: bool, stages: int = 2) -> int:
    """Resident CTAs per SM of a ring kernel (shared memory as smem_bytes computes it)."""
    regs = REGISTERS.get((nb, mt, u, grouped))
    if regs is None:
        return 0
    xs = mt == 2
    red = (wk + 1) * nb * 16 * 8 * mt * 4
    slot = u * nb * 32 + (nb * 16 if grouped else 0) + (16 * (8 * u + 4) if xs else 0)
    rings = (wk * stages * slot + (wk * nb * 16 if xs and not grouped else 0)) * 4
    return resident_ctas(regs, wk, max(red, rings))


LIBRARY: dict[tuple[int, int, int, int], tuple[int, ...]] = {}


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
            lib = re.search(r"default\(nb(\d+) mt\d+ u(\d+) wk(\d+) ks(\d+) st(\d+)\)", line)
            if lib:  # the library's pick when the sweep ran
                LIBRARY[key] = tuple(int(v) for v in lib.groups())
            times = cases.setdefault(key, {})
            for nb, cfg, us in re.findall(r" (\d+)-(\d{5}):([\d.]+)", lines[i + 1]):  # v20 on: nb-mt u wk ks st
                rest = [int(c) for c in cfg]
                times[(int(nb), rest[1], rest[2], rest[3], rest[4])] = float(us)  # (nb, u, wk, ks, st)
            for cfg, us in re.findall(r" (\d+):([\d.]+)", lines[i + 1]):  # before: the digits run together
                nb, rest = int(cfg[:-5]), [int(c) for c in cfg[-5:]]
                times[(nb, rest[1], rest[2], rest[3], rest[4])] = float(us)
    return cases


def pick(K, N, G, P, M=1):
    tgt, c_pc, c_g, a_chunk, s_floor, b_steps, bal_w, wk2, w_floor, w_w, ks4 = P
    n16, ksteps, grouped = N // 16, K // 16, G != K
    target = tgt * BANDWIDTH / 4.9e12
    best = None
    for nb, u, wk, ks in itertools.product((1, 2, 4, 5, 7, 8, 10, 14, 16), (4, 8), (8, 4, 2), (1, 2, 4)):
        if n16 % nb or (G // 16) % u:
            continue
        if M > 8 and (nb < 2 or (grouped and nb > 8)):  # mt = 2: the kernels that exist
            continue
        ctas = n16 // nb * ks
        warps = ctas * wk
        spw = ksteps / (wk * ks)
        mt = 2 if M > 8 else 1
        if spw < u or warps > 16 * SMS or ctas > per_sm(nb, mt, u, wk, grouped) * SMS:
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
    # ring_config's cases: 16 MiB and more, grouped or M = 9-16 (per-channel
    # weights at M <= 8 take scored_register_config: fit_register_defaults.py)
    cases = {k: v for k, v in load(args.sweeps).items()
             if k[0] * k[1] // 2 >= 16 << 20 and (k[2] > 8 or k[3] != k[0])}
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
        lib = LIBRARY.get(shape)
        note = "" if lib is None or lib == c else f" (the library then: nb{lib[0]} u{lib[1]} wk{lib[2]} ks{lib[3]} st{lib[4]})"
        print(f"{shape}: pick nb{c[0]} u{c[1]} wk{c[2]} ks{c[3]} {t:.1f} us, best {b:.1f} us, "
              f"+{100 * (t / b - 1):.1f}%{note}")
    r = [t / b - 1 for *_, t, b in rows]
    print(f"{len(r)} cases: mean +{100 * sum(r) / len(r):.1f}%, worst +{100 * max(r):.1f}%")


if __name__ == "__main__":
    main()
