"""int4mm from CuPy: quantize a weight on the GPU, multiply on a CuPy stream,
zero copies.  Prints the relative error against the numpy reference and exits
non-zero above tolerance.

    python examples/cupy_example.py
"""

import sys

import cupy as cp
import numpy as np

import int4mm
from int4mm import reference as ref

TOL = 2e-3
K, N, M = 4096, 11008, 8


def main() -> int:
    w = cp.random.standard_normal((K, N), dtype=cp.float32).astype(cp.float16) * 0.02
    weight = int4mm.quantize(w, group_size=128)  # qweight/scales/zeros are cupy arrays
    x = cp.random.standard_normal((M, K), dtype=cp.float32).astype(cp.float16)

    stream = cp.cuda.Stream(non_blocking=True)
    with stream:  # int4mm launches on CuPy's current stream
        y = int4mm.matmul(x, weight)  # a cupy.ndarray
    stream.synchronize()

    expect = ref.matmul(cp.asnumpy(x), *(cp.asnumpy(a) for a in
                                         (weight.qweight, weight.scales, weight.zeros)))
    err = float(np.linalg.norm(cp.asnumpy(y).astype(np.float64) - expect) / np.linalg.norm(expect))
    print(f"cupy: y {y.shape} {y.dtype}, relative error {err:.2e} (tolerance {TOL:.0e})")
    return 0 if err <= TOL else 1


if __name__ == "__main__":
    sys.exit(main())
