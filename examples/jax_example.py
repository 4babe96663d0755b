"""int4mm from JAX: JAX arrays in, a JAX array out (through DLPack, no copy),
ready for further JAX computation.  Prints the relative error against the
reference and exits non-zero above tolerance.

    python examples/jax_example.py
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

import int4mm
from int4mm import reference as ref

TOL = 2e-3
K, N, M = 4096, 11008, 8


def main() -> int:
    gpu = jax.devices("gpu")[0]
    w = ref.random_weights(K, N, group_size=128)
    put = lambda a: jax.device_put(jnp.asarray(a), gpu)
    weight = int4mm.prepare(put(w["qweight"]), put(w["scales"]), put(w["zeros"]))
    x = put(np.random.default_rng(0).standard_normal((M, K)).astype(np.float16))

    y = int4mm.matmul(x, weight)  # a jax.Array
    z = jnp.tanh(y.astype(jnp.float32))  # keeps going in JAX
    z.block_until_ready()

    expect = ref.matmul(np.asarray(x), w["qweight"], w["scales"], w["zeros"])
    err = float(np.linalg.norm(np.asarray(y).astype(np.float64) - expect) / np.linalg.norm(expect))
    print(f"jax: y is {type(y).__name__} {y.shape} {y.dtype}, relative error {err:.2e} "
          f"(tolerance {TOL:.0e})")
    return 0 if isinstance(y, jax.Array) and err <= TOL else 1


if __name__ == "__main__":
    sys.exit(main())
