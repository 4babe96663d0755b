"""int4mm from Numba: device arrays and a Numba stream, zero copies (the
result is written into a Numba device array).  Uses an act-order GPTQ layer,
so the activation gather runs too.  Prints the relative error against the
reference and exits non-zero above tolerance.

    python examples/numba_example.py
"""

import sys

import numpy as np
from numba import cuda

import int4mm
from int4mm import reference as ref
from int4mm.gptq import gptq_arrays

TOL = 2e-3
K, N, M = 4096, 4096, 4


def main() -> int:
    g = ref.random_gptq(K, N, 128, act_order=True)  # a GPTQ checkpoint's tensors
    h = gptq_arrays(g)  # int4mm layout: rows sorted by group, perm for x
    stream = cuda.stream()
    dev = {k: cuda.to_device(h[k], stream=stream) for k in ("qweight", "scales", "zeros", "perm")}
    weight = int4mm.prepare(dev["qweight"], dev["scales"], dev["zeros"], perm=dev["perm"],
                            stream=stream)
    x = np.random.default_rng(0).standard_normal((M, K)).astype(np.float16)
    xd = cuda.to_device(x, stream=stream)
    y = cuda.device_array((M, N), dtype=np.float16, stream=stream)
    int4mm.matmul(xd, weight, out=y, stream=stream)
    result = y.copy_to_host(stream=stream)
    stream.synchronize()

    expect = x.astype(np.float64) @ ref.dequantize_gptq(g["qweight"], g["qzeros"], g["scales"],
                                                        g["g_idx"])
    err = float(np.linalg.norm(result - expect) / np.linalg.norm(expect))
    print(f"numba: y {result.shape}, relative error {err:.2e} (tolerance {TOL:.0e})")
    return 0 if err <= TOL else 1


if __name__ == "__main__":
    sys.exit(main())
