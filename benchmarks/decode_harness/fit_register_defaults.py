"""Check the register-ring decode defaults at M <= 8 (scored_register_config).

The sweeps are `harness shapes|m1` output with STAGES including 0 (the same
format fit_ring_defaults.py reads).  For every per-channel case of 12 MiB and
more and every grouped case under 16 MiB at M <= 8 this prints the model's
pick (the scores of scored_register_config in src/cuda/matmul_decode.cu,
with the weights of its kind), its time, the best register-ring config of
the sweep, the regret, and the default the sweep ran with (its
"default(...)" time):

    python3 benchmarks/decode_harness/fit_register_defaults.py SWEEP.txt [SWEEP.txt ...]

Residency is modelled from the kernels' register counts (ptxas -v of
src/cuda/matmul_decode.cu for sm_90a, fp16: per-channel at v16, grouped at
v23) and the H200's 132 SMs: a grid that does not fit in one wave is
skipped, as the C++ code does with the measured occupancy.
pick() is the Python twin of scored_register_config: a change to one
belongs in the other.
"""

from __future__ import annotations

import argparse
import itertools
import math
import re

from fit_ring_defaults import load, resident_ctas

SMS = 132
# registers per thread of the register-ring kernels (mt = 1), by (grouped, nb, u)
REGISTERS = {(False, 1, 4): 71, (False, 1, 8): 90, (False, 2, 4): 90, (False, 2, 8): 122, (False, 4, 4): 123,
             (False, 4, 8): 168, (True, 1, 4): 80, (True, 1, 8): 100, (True, 2, 4): 96, (True, 2, 8): 128,
             (True, 4, 4): 138, (True, 4, 8): 186}
# RegisterWeights: target bytes in flight, short runs, balance (at most one
# CTA per SM, more), ks = 4, few warps, u = 4 where 8 fits, warps per SM
CHANNEL = (4e6, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
GROUPED = (2.5e6, 1.0, 0.25, 0.5, 1.0, 2.0, 1.0, 0.5)


def per_sm(grouped: bool, nb: int, u: int, wk: int) -> int:
    """Resident CTAs per SM; the shared memory is the reduction buffer (mt = 1)."""
    return resident_ctas(REGISTERS[(grouped, nb, u)], wk, (wk + 1) * nb * 16 * 8 * 4)


def pick(K: int, N: int, M: int, G: int) -> tuple[int, int, int, int]:
    n16, ksteps, gsteps, grouped = N // 16, K // 16, G // 16, G != K
    target, short_runs, bal_one, bal_more, ks4, few_warps, short_u, warps = GROUPED if grouped else CHANNEL
    max_u = 8 if gsteps % 8 == 0 else 4
    best, best_score = None, 0.0
    for nb, u, wk, ks in itertools.product((1, 2, 4), (4, 8), (2, 4, 8), (1, 2, 4)):
        spw = ksteps / (wk * ks)
        if n16 % nb or gsteps % u or spw < u:
            continue
        ctas = n16 // nb * ks
        if ctas > per_sm(grouped, nb, u, wk) * SMS:
            continue
        score = abs(math.log2(n16 * 128.0 * u * wk * ks / target))
        if spw < 32:
            score += short_runs * math.log2(32 / spw)
        if spw > 128:
            score += 0.5 * math.log2(spw / 128)
        if nb * u == 4:
            score += 1.0
        if M > 1 and nb < 4:
            score += 0.5
        balance = (ctas / SMS) / math.ceil(ctas / SMS)
        score += (bal_one if ctas <= SMS else bal_more) * (1 / balance - 1) + few_warps * math.log2(8 / wk)
        if ks == 4:
            score += ks4
        if u < max_u:
            score += short_u
        if ctas * wk / SMS > 8:
            score -= warps * math.log2(ctas * wk / SMS / 8)
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
    regrets = []
    for (K, N, M, G), times in sorted(cases.items()):
        if M > 8 or (K * N // 2 < 12 << 20 if G == K else K * N // 2 >= 16 << 20):
            continue
        register = {cfg[:4]: us for cfg, us in times.items() if cfg[4] == 0}
        if not register:
            continue
        choice = pick(K, N, M, G)
        best = min(register, key=register.get)
        t = register.get(choice, float("nan"))
        regrets.append(t / register[best])
        old = before.get((K, N, M, G), float("nan"))
        print(
            f"K={K} N={N} M={M} G={G}: pick {choice} {t:.2f} us, best {best} {register[best]:.2f} us "
            f"(regret {t / register[best] - 1:+.1%}); the sweep's default {old:.2f} us"
        )
    if regrets:
        print(f"{len(regrets)} cases: mean regret {sum(regrets) / len(regrets) - 1:+.2%}, worst {max(regrets) - 1:+.2%}")


if __name__ == "__main__":
    main()
