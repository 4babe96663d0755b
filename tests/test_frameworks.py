"""CuPy, Numba and JAX through __cuda_array_interface__ / DLPack: zero copies,
the caller's stream, results in the caller's library.  GPU only."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import int4mm
from int4mm import reference as ref

from .conftest import TOL, framework, jax_gpu, rel_err

K, N = 512, 256


def _problem(M=6, act_order=False, seed=0):
    g = ref.random_gptq(K, N, 128, act_order=act_order, seed=seed)
    h = int4mm.gptq.gptq_arrays(g)
    x = np.random.default_rng(seed).standard_normal((M, K)).astype(np.float16)
    expect = x.astype(np.float64) @ ref.dequantize_gptq(g["qweight"], g["qzeros"], g["scales"],
                                                        g["g_idx"])
    return h, x, expect


@pytest.mark.parametrize("act_order", [False, True])
def test_cupy_current_stream_zero_copy(act_order):
    fw = framework("cupy")
    cp = fw.cp
    h, x, expect = _problem(act_order=act_order)
    w = int4mm.prepare(*(cp.asarray(h[k]) for k in ("qweight", "scales", "zeros")),
                       perm=None if h["perm"] is None else cp.asarray(h["perm"]))
    s = cp.cuda.Stream(non_blocking=True)
    # act_order gathers x into a CuPy scratch array on the caller's stream,
    # without CuPy's deprecated ExternalStream (a DeprecationWarning in CuPy 14).
    with s, warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        xd = cp.asarray(x)
        out = cp.full((x.shape[0], N), np.nan, dtype=cp.float16)
        y = int4mm.matmul(xd, w, out=out)
        assert y is out  # written in place, no copy
        y2 = int4mm.matmul(xd, w)
        assert isinstance(y2, cp.ndarray)
    s.synchronize()
    assert rel_err(cp.asnumpy(out), expect) <= TOL
    assert rel_err(cp.asnumpy(y2), expect) <= TOL


def test_cupy_quantize():
    fw = framework("cupy")
    cp = fw.cp
    w = (np.random.default_rng(0).standard_normal((K, N)) * 0.02).astype(np.float16)
    q = int4mm.quantize(cp.asarray(w), group_size=64, sparse=True)
    r = ref.quantize_rtn(w, group_size=64, sparse=True)
    assert np.array_equal(cp.asnumpy(q.qweight), r["qweight"])
    assert np.array_equal(cp.asnumpy(q.mask), r["mask"])


@pytest.mark.parametrize("act_order", [False, True])
def test_numba_stream_object(act_order):
    fw = framework("numba")
    cuda = fw.cuda
    h, x, expect = _problem(act_order=act_order, seed=1)
    s = cuda.stream()
    dev = {k: cuda.to_device(h[k], stream=s) for k in ("qweight", "scales", "zeros")}
    perm = None if h["perm"] is None else cuda.to_device(h["perm"], stream=s)
    w = int4mm.prepare(dev["qweight"], dev["scales"], dev["zeros"], perm=perm, stream=s)
    xd = cuda.to_device(x, stream=s)
    out = cuda.device_array((x.shape[0], N), dtype=np.float16, stream=s)
    y = int4mm.matmul(xd, w, out=out, stream=s)
    assert y is out
    s.synchronize()
    assert rel_err(out.copy_to_host(), expect) <= TOL


@pytest.mark.parametrize("act_order", [False, True])
def test_jax_results_are_jax_arrays(act_order):
    jax, jnp, gpu = jax_gpu()
    h, x, expect = _problem(act_order=act_order, seed=2)
    put = lambda a: jax.device_put(jnp.asarray(a), gpu)
    w = int4mm.prepare(*(put(h[k]) for k in ("qweight", "scales", "zeros")),
                       perm=None if h["perm"] is None else put(h["perm"]))
    xj = put(x)
    y = int4mm.matmul(xj, w)
    assert isinstance(y, jax.Array)
    assert rel_err(np.asarray(y), expect) <= TOL
    # JAX computes with the result straight away (no copy back to the host).
    z = (y.astype(jnp.float32) * 2).block_until_ready()
    assert rel_err(np.asarray(z) / 2, expect) <= TOL
