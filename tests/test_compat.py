"""The original module's call signatures keep working."""

import numpy as np
import pytest

from int4mm import compat
from int4mm import reference as ref

from .conftest import TOL, framework, rel_err


@pytest.mark.parametrize("fn", ["quant_int4_linear_mult", "quant_int4_linear_mult_mtx",
                                "quant_int4_linear_mult_vec"])
@pytest.mark.parametrize("sparse", [False, True])
def test_quant_int4_linear_mult(fn, sparse):
    fw = framework("torch")
    B, M, K, N = 2, 33, 512, 64
    w = ref.random_weights(K, N, group_size=128, sparse=sparse, seed=1)
    x = np.random.default_rng(0).standard_normal((B, M, K)).astype(np.float16)
    outs = fw.poisoned((B, M, N))
    getattr(compat, fn)(outs, fw.to_device(w["qweight"]), fw.to_device(x),
                        fw.to_device(w["scales"]), fw.to_device(w["zeros"]),
                        fw.to_device(w["mask"]) if sparse else None)
    expect = ref.matmul(x, w["qweight"], w["scales"], w["zeros"], w["mask"])
    assert rel_err(fw.to_host(outs), expect) <= TOL


def test_per_channel_scales_as_1xN():
    """The original module passed per-channel scales as scales[None, :]."""
    fw = framework("torch")
    w = ref.random_weights(256, 16, seed=2)
    x = np.random.default_rng(1).standard_normal((1, 4, 256)).astype(np.float16)
    outs = fw.poisoned((1, 4, 16))
    compat.quant_int4_linear_mult(outs, fw.to_device(w["qweight"]), fw.to_device(x),
                                  fw.to_device(w["scales"].reshape(1, 16)),
                                  fw.to_device(w["zeros"].reshape(1, 16)))
    assert rel_err(fw.to_host(outs), ref.matmul(x, w["qweight"], w["scales"], w["zeros"])) <= TOL
