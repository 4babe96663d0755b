"""Check the register-ring decode defaults for per-channel weights at M <= 8.

The sweeps are `harness shapes|m1` output with STAGES including 0 (the same
format fit_ring_defaults.py reads).  For every per-channel case of 12 MiB and
more at M <= 8 this prints the model's pick (the scores of
channel_register_config in src/cuda/matmul_decode.cu), its time, the best
register-ring config of the sweep, the regret, and the shared-memory-ring
default the library used before (the sweep's "default(...)" time):

    python3 benchmarks/decode_harness/fit_register_defaults.py SWEEP.txt [SWEEP.txt ...]

Residency is modelled from the kernels' register counts (ptxas -v of
src/cuda/matmul_decode.cu for sm_90a, fp16, at the commit that added this
script) and the H200's 132 SMs: a grid that does not fit in one wave is
skipped, as the C++ code does with the measured occupancy.
pick() is the Python twin of channel_register_config: a change to one
belongs in the other.
"""

from __future__ import annotations

import argparse
import itertools
import math
import re

from fit_ring_defaults import load, resident_ctas

SMS = 132
# registers per thread of the per-channel register-ring kernels (mt = 1), by (nb, u)
REGISTERS = {(1, 4): 71, (1, 8): 90, (2, 4): 90, (2, 8): 122, (4, 4): 123, (4, 8): 168}


def per_sm(nb: int, u: int, wk: int) -> int:
    """Resident CTAs per SM; the shared memory is the reduction buffer (mt = 1)."""
    return resident_ctas(REGISTERS[(nb, u)], wk, (wk + 1) * nb * 16 * 8 * 4)


def pick(K: int, N: int, M: int) -> tuple[int, int, int, int]:
    n16, ksteps = N // 16, K // 16
    best, best_score = None, 0.0
    for nb, u, wk, ks in itertools.product((1, 2, 4), (4, 8), (2, 4, 8), (1, 2, 4)):
        spw = ksteps / (wk * ks)
        if n16 % nb or spw < u:
            continue
        if n16 // nb * ks > per_sm(nb, u, wk) * SMS:
            continue
        score = abs(math.log2(n16 * 128.0 * u * wk * ks / 4e6))
        if spw < 32:
            score += 3.0 * math.log2(32 / spw)
        if spw > 128:
            score += 0.5 * math.log2(spw / 128)
        if nb * u == 4:
            score += 1.0
        if M > 1 and nb < 4:
            score += 0.5
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
        if G != K or M > 8 or K * N // 2 < 12 << 20:
            continue
        register = {cfg[:4]: us for cfg, us in times.items() if cfg[4] == 0}
        if not register:
            continue
        choice = pick(K, N, M)
        best = min(register, key=register.get)
        t = register.get(choice, float("nan"))
        regrets.append(t / register[best])
        old = before.get((K, N, M, G), float("nan"))
        print(
            f"K={K} N={N} M={M}: pick {choice} {t:.2f} us, best {best} {register[best]:.2f} us "
            f"(regret {t / register[best] - 1:+.1%}); shared-memory-ring default {old:.2f} us"
        )
    if regrets:
        print(f"{len(regrets)} cases: mean regret {sum(regrets) / len(regrets) - 1:+.2%}, worst {max(regrets) - 1:+.2%}")


if __name__ == "__main__":
    main()
