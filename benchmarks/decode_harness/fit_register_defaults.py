"""Check the register-ring decode defaults at M <= 8 (scored_register_config).

The sweeps are `harness shapes|m1` output with STAGES including 0 (the same
format fit_ring_defaults.py reads).  For every per-channel case of 12 MiB and
more and every grouped case at M <= 8 this prints the model's pick (the
scores of scored_register_config in src/cuda/matmul_decode.cu, with the
weights of its kind and size), its time, the best register-ring config of
the sweep, the best of either ring where the sweep has shared-memory-ring
configs too, and the default the sweep ran with (its "default(...)" time):

    python3 benchmarks/decode_harness/fit_register_defaults.py SWEEP.txt [SWEEP.txt ...]

Residency is modelled from the kernels' register counts (ptxas -v of
src/cuda/matmul_decode.cu for sm_90a, fp16: per-channel nb <= 4 at v16,
grouped at v23, nb 5 and 7 at v24) and the H200's 132 SMs: a grid that does
not fit in one wave is skipped, as the C++ code does with the measured
occupancy.  pick() is the Python twin of scored_register_config: a change to
one belongs in the other.  decode_default_config adds two rules on top for
grouped weights that this script does not model: groups of 64 from 16 MiB
take the shared-memory ring where the pick is 4 blocks wide or narrower, and
at M = 2-8 eight warps on one CTA per SM with long runs become four warps and
a K split of two.
"""

from __future__ import annotations

import argparse
import itertools
import math
import re

from fit_ring_defaults import load, resident_ctas

SMS = 132
# registers per thread of the register-ring kernels (mt = 1), by (grouped, nb, u);
# nb = 7 is built with u = 4 only
REGISTERS = {(False, 1, 4): 71, (False, 1, 8): 90, (False, 2, 4): 90, (False, 2, 8): 122, (False, 4, 4): 123,
             (False, 4, 8): 168, (True, 1, 4): 80, (True, 1, 8): 100, (True, 2, 4): 96, (True, 2, 8): 128,
             (True, 4, 4): 138, (True, 4, 8): 186,
             (False, 5, 4): 139, (False, 5, 8): 194, (False, 7, 4): 168,
             (True, 5, 4): 161, (True, 5, 8): 217, (True, 7, 4): 197}
# RegisterWeights: target bytes in flight, short runs in k16 steps (under 32
# per warp), chunks per warp below which a run is short, short runs in
# chunks, balance (at most one CTA per SM, more), ks = 4, few warps, u = 4
# where 8 fits, nb < 4 at M = 1 (at M > 1 it always costs 1/2)
CHANNEL = (4e6, 3.0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
GROUPED_SMALL = (2e6, 0.0, 2, 1.0, 1.0, 1.0, 1.0, 2.0, 0.5, 0.0)  # grouped, under 16 MiB
GROUPED_LARGE = (4e6, 0.0, 6, 0.5, 0.25, 0.5, 1.0, 0.0, 0.0, 0.5)  # grouped, 16 MiB and more
WIDTHS = (1, 2, 4, 5, 7)


def weights(K: int, N: int, G: int):
    if G == K:
        return CHANNEL
    return GROUPED_SMALL if K * N // 2 < 16 << 20 else GROUPED_LARGE


def per_sm(grouped: bool, nb: int, u: int, wk: int) -> int:
    """Resident CTAs per SM; the shared memory is the reduction buffer (mt = 1)."""
    regs = REGISTERS.get((grouped, nb, u))
    return 0 if regs is None else resident_ctas(regs, wk, (wk + 1) * nb * 16 * 8 * 4)


def pick(K: int, N: int, M: int, G: int) -> tuple[int, int, int, int]:
    n16, ksteps, gsteps, grouped = N // 16, K // 16, G // 16, G != K
    target, short_steps, chunk_floor, short_chunks, bal_one, bal_more, ks4, few_warps, short_u, narrow = weights(K, N, G)
    max_u = 8 if gsteps % 8 == 0 else 4
    best, best_score = None, 0.0
    for nb, u, wk, ks in itertools.product(WIDTHS, (4, 8), (2, 4, 8), (1, 2, 4)):
        spw = ksteps / (wk * ks)
        if n16 % nb or gsteps % u or spw < u or (not grouped and nb > 4):
            continue
        ctas = n16 // nb * ks
        resident = per_sm(grouped, nb, u, wk)
        if resident == 0 or ctas > resident * SMS:
            continue
        score = abs(math.log2(n16 * 128.0 * u * wk * ks / target))
        if spw < 32:
            score += short_steps * math.log2(32 / spw)
        if spw < chunk_floor * u:
            score += short_chunks * math.log2(chunk_floor * u / spw)
        if spw > 128:
            score += 0.5 * math.log2(spw / 128)
        if nb * u == 4:
            score += 1.0
        if nb < 4:
            score += 0.5 if M > 1 else narrow
        balance = (ctas / SMS) / math.ceil(ctas / SMS)
        score += (bal_one if ctas <= SMS else bal_more) * (1 / balance - 1) + few_warps * math.log2(8 / wk)
        if ks == 4:
            score += ks4
        if u < max_u:
            score += short_u
        if (
            best is None
            or score < best_score - 1e-9
            or (abs(score - best_score) <= 1e-9 and (wk > best[2] or (wk == best[2] and ks < best[3])))
        ):
            best, best_score = (nb, u, wk, ks), score
    return best


def defaults(paths):
    """The library's default time per case, from the sweep's header lines."""
    out = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                m = re.match(r"K=(\d+) N=(\d+) M=(\d+) G=(\d+) default\(.*?\) ([\d.]+) us", line)
                if m:
                    out.setdefault(tuple(int(v) for v in m.groups()[:4]), float(m.group(5)))  # section 1 first
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sweeps", nargs="+")
    args = ap.parse_args()
    cases, before = load(args.sweeps), defaults(args.sweeps)
    regrets, overall, old_regrets = [], [], []
    for (K, N, M, G), times in sorted(cases.items()):
        if M > 8 or (G == K and K * N // 2 < 12 << 20):
            continue
        register = {cfg[:4]: us for cfg, us in times.items() if cfg[4] == 0}
        if not register:
            continue
        choice = pick(K, N, M, G)
        best = min(register, key=register.get)
        t = register.get(choice, float("nan"))
        regrets.append(t / register[best])
        either = min(times.values())
        overall.append(t / either)
        old = before.get((K, N, M, G), float("nan"))
        old_regrets.append(old / either)
        print(
            f"K={K} N={N} M={M} G={G}: pick {choice} {t:.2f} us, register best {best} {register[best]:.2f} "
            f"({t / register[best] - 1:+.1%}), either ring {either:.2f} ({t / either - 1:+.1%}); "
            f"the sweep's default {old:.2f} us ({old / either - 1:+.1%})"
        )

    def summary(name, r):
        r = [v for v in r if not math.isnan(v)]
        if r:
            print(f"{name}: {len(r)} cases, mean {sum(r) / len(r) - 1:+.2%}, worst {max(r) - 1:+.2%}")

    summary("pick vs the register ring's best", regrets)
    summary("pick vs either ring's best", overall)
    summary("the sweep's default vs either ring's best", old_regrets)


if __name__ == "__main__":
    main()
