"""Inputs from torch, CuPy and Numba; streams; the library-owned result array."""

import numpy as np
import pytest

import int4mm
from int4mm import reference as ref

from .conftest import TOL, framework, jax_gpu, rel_err


def _problem(K=512, N=40, G=128, sparse=False, M=9, seed=0):
    w = ref.random_weights(K, N, group_size=G, sparse=sparse, seed=seed)
    x = np.random.default_rng(seed).standard_normal((M, K)).astype(np.float16)
    expect = ref.matmul(x, w["qweight"], w["scales"], w["zeros"], w["mask"])
    return w, x, expect


@pytest.mark.parametrize("fwname", ["torch", "cupy", "numba"])
@pytest.mark.parametrize("sparse", [False, True])
def test_frameworks(fwname, sparse):
    fw = framework(fwname)
    w, x, expect = _problem(sparse=sparse)
    args = [fw.to_device(w[k]) for k in ("qweight", "scales", "zeros")]
    mask = fw.to_device(w["mask"]) if sparse else None
    y = int4mm.matmul(fw.to_device(x), *args, mask=mask)
    assert fw.is_native(y), f"result should be a {fwname} array, got {type(y)}"
    out = fw.poisoned(expect.shape)
    int4mm.matmul(fw.to_device(x), *args, mask=mask, out=out)
    for r in (y, out):
        assert rel_err(fw.to_host(r), expect) <= TOL


def test_torch_non_default_stream_explicit_and_current():
    fw = framework("torch")
    torch = fw.t
    w, x, expect = _problem(M=300)  # large-M path: longer kernel
    args = [fw.to_device(w[k]) for k in ("qweight", "scales", "zeros")]
    s = torch.cuda.Stream()
    xd = fw.to_device(x)
    torch.cuda.current_stream().synchronize()
    out = fw.poisoned(expect.shape)
    torch.cuda.current_stream().synchronize()
    int4mm.matmul(xd, *args, out=out, stream=s)
    s.synchronize()
    assert rel_err(out.cpu().numpy(), expect) <= TOL
    # implicit: torch's current stream is followed
    with torch.cuda.stream(s):
        out2 = fw.poisoned(expect.shape)
        int4mm.matmul(xd, *args, out=out2)
        y = out2.float().sum()  # queued on s after the kernel
    s.synchronize()
    assert np.isfinite(y.item())
    assert rel_err(out2.cpu().numpy(), expect) <= TOL


def test_cupy_stream_object_and_cai_v3_stream():
    fw = framework("cupy")
    cp = fw.cp
    w, x, expect = _problem(M=70)
    args = [fw.to_device(w[k]) for k in ("qweight", "scales", "zeros")]
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        xd = cp.asarray(x)  # its CAI carries stream s
        out = cp.full(expect.shape, np.nan, dtype=np.float16)
        int4mm.matmul(xd, *args, out=out)
    s.synchronize()
    assert rel_err(cp.asnumpy(out), expect) <= TOL
    out2 = cp.full(expect.shape, np.nan, dtype=np.float16)
    int4mm.matmul(xd, *args, out=out2, stream=s)
    s.synchronize()
    assert rel_err(cp.asnumpy(out2), expect) <= TOL


def test_numba_stream():
    fw = framework("numba")
    cuda = fw.cuda
    w, x, expect = _problem(M=3)
    s = cuda.stream()
    args = [cuda.to_device(w[k], stream=s) for k in ("qweight", "scales", "zeros")]
    xd = cuda.to_device(x, stream=s)
    out = cuda.to_device(np.full(expect.shape, np.nan, np.float16), stream=s)
    int4mm.matmul(xd, *args, out=out, stream=s)
    assert rel_err(out.copy_to_host(stream=s), expect) <= TOL


class _Plain:
    """A bare CAI holder: not torch/CuPy/Numba, so results are int4mm DeviceArrays."""

    def __init__(self, arr):
        self._arr = arr
        self.__cuda_array_interface__ = arr.__cuda_array_interface__


def test_device_array_result_has_cai_and_dlpack():
    fw = framework("torch")
    torch = fw.t
    w, x, expect = _problem(M=4)
    args = [_Plain(fw.to_device(w[k])) for k in ("qweight", "scales", "zeros")]
    y = int4mm.matmul(_Plain(fw.to_device(x)), *args)
    assert type(y).__name__ == "DeviceArray"
    assert y.__cuda_array_interface__["shape"] == expect.shape
    assert y.__dlpack_device__() == (2, 0)
    t = torch.from_dlpack(y)
    assert rel_err(t.cpu().numpy(), expect) <= TOL
    assert rel_err(y.copy_to_host(), expect) <= TOL


def test_jax_input_if_installed():
    jax, jnp, gpu = jax_gpu()
    w, x, expect = _problem(M=5)
    put = lambda a: jax.device_put(jnp.asarray(a), gpu)
    xs = [put(x)] + [put(w[k]) for k in ("qweight", "scales", "zeros")]
    for a in xs:
        a.block_until_ready()
    y = int4mm.matmul(*xs)
    yj = jax.dlpack.from_dlpack(y)
    assert rel_err(np.asarray(yj), expect) <= TOL


@pytest.mark.parametrize("fwname", ["torch", "cupy"])
@pytest.mark.parametrize("sparse", [False, True])
def test_fast_path_taken_and_correct(fwname, sparse):
    """A prepared weight with out= and torch/CuPy arrays takes the bridge's
    fast path (no __cuda_array_interface__ parsing); results equal the reference."""
    fw = framework(fwname)
    w, x, expect = _problem(M=3, sparse=sparse)
    p = int4mm.prepare(*[fw.to_device(w[k]) for k in ("qweight", "scales", "zeros")],
                       mask=fw.to_device(w["mask"]) if sparse else None)
    taken = []
    fast = p._fast

    def spy(xx, yy, s):
        r = fast(xx, yy, s)
        taken.append(r is not None)
        return r

    p._fast = spy
    out = fw.poisoned(expect.shape)
    assert int4mm.matmul(fw.to_device(x), p, out=out) is out
    assert taken == [True], "the fast path declined a regular call"
    assert rel_err(fw.to_host(out), expect) <= TOL
    # irregular calls decline and still work (validated path): a strided out
    big = fw.poisoned((expect.shape[0], 2 * expect.shape[1]))
    with pytest.raises(int4mm.Int4mmValueError, match="out: "):
        int4mm.matmul(fw.to_device(x), p, out=big[:, : expect.shape[1]])
    assert taken == [True, False]
