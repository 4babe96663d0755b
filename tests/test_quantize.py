"""int4mm.quantize (GPU) and its numpy twin reference.quantize_rtn.

CPU: properties of the reference quantizer.  GPU: the kernel matches the
reference bit for bit (codes, scales, zeros, masks), and matmul on the result
matches the dequantized reference.
"""

from __future__ import annotations

import numpy as np
import pytest

import int4mm
from int4mm import reference as ref
from int4mm.errors import BadDataError, Int4mmValueError

from .conftest import TOL, framework, rel_err


def _weight(K, N, seed=0, scale=0.02):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((K, N)) * scale
    w[rng.random((K, N)) < 0.01] *= 8  # outliers
    return w.astype(np.float16)


# ---------------------------------------------------------------- reference (CPU)

@pytest.mark.parametrize("G", [32, 64, None])
@pytest.mark.parametrize("sparse", [False, True])
def test_reference_properties(G, sparse):
    K, N = 128, 24
    w = _weight(K, N)
    q = ref.quantize_rtn(w, group_size=G, sparse=sparse)
    Gs = K if G is None else G
    assert q["group_size"] == Gs
    assert q["scales"].dtype == np.float16 and q["scales"].shape == (K // Gs, N)
    z = q["zeros"].astype(np.float64)
    assert (z == np.rint(z)).all() and z.min() >= 0 and z.max() <= 15
    assert (q["scales"] > 0).all()
    W = ref.dequantize(q["qweight"], q["scales"], q["zeros"], q["mask"])
    target = w.astype(np.float64)
    if sparse:
        keep = q["keep"]
        assert (keep.reshape(K // 32, 32, N).sum(axis=1) == 16).all()
        target = np.where(keep, target, 0)
    # Round to nearest: every weight within half a step (the range holds 0, so no clamping).
    step = np.repeat(q["scales"].astype(np.float64), Gs, axis=0)
    assert (np.abs(W - target) <= step * 0.5 * (1 + 1e-3)).all()


def test_reference_sparse_keeps_largest_ties_to_lower_row():
    K, N = 32, 8
    w = np.zeros((K, N), dtype=np.float16)
    w[:, 0] = np.arange(K)  # keeps rows 16..31
    w[:, 1] = 1.0  # all tied: keeps rows 0..15
    w[:, 2] = -np.arange(K)  # magnitude, not sign
    q = ref.quantize_rtn(w, group_size=32, sparse=True)
    keep = q["keep"]
    assert keep[16:, 0].all() and not keep[:16, 0].any()
    assert keep[:16, 1].all() and not keep[16:, 1].any()
    assert keep[16:, 2].all()


def test_reference_all_zero_group_and_exact_grid():
    K, N = 16, 8
    w = np.zeros((K, N), dtype=np.float16)
    q = ref.quantize_rtn(w, group_size=8)
    assert (q["zeros"] == 8).all() and np.allclose(q["scales"], np.float16(2 / 15))
    assert (ref.dequantize(q["qweight"], q["scales"], q["zeros"]) == 0).all()
    # Weights on a 4-bit grid with 0 inside come back exactly.
    rng = np.random.default_rng(1)
    s = np.float16(0.125)
    codes = rng.integers(0, 16, size=(K, N))
    codes[0] = 0
    codes[1] = 15
    g = ((codes - 5) * s).astype(np.float16)
    q = ref.quantize_rtn(g, group_size=K)
    assert np.array_equal(ref.dequantize(q["qweight"], q["scales"], q["zeros"]), g)


def test_reference_refuses_bad_input():
    w = _weight(64, 8)
    w[3, 5] = np.inf
    with pytest.raises(BadDataError, match=r"k=3, n=5"):
        ref.quantize_rtn(w)
    with pytest.raises(Int4mmValueError, match="group_size"):
        ref.quantize_rtn(_weight(64, 8), group_size=12)
    with pytest.raises(Int4mmValueError, match="group_size"):
        ref.quantize_rtn(_weight(64, 8), group_size=16, sparse=True)


# ---------------------------------------------------------------- GPU

def _assert_same(q, r):
    assert np.array_equal(q["qweight"], r["qweight"])
    assert np.array_equal(q["scales"].view(np.uint16), r["scales"].view(np.uint16))
    assert np.array_equal(q["zeros"].view(np.uint16), r["zeros"].view(np.uint16))
    if r["mask"] is not None:
        assert np.array_equal(q["mask"], r["mask"])


@pytest.mark.parametrize("fw_name", ["torch", "cupy"])
@pytest.mark.parametrize("G", [32, 128, None])
@pytest.mark.parametrize("sparse", [False, True])
def test_gpu_matches_reference_bit_exact(fw_name, G, sparse):
    fw = framework(fw_name)
    K, N = 512, 136
    w = _weight(K, N, seed=3)
    w[:32, :8] = 0  # an all-zero group/block
    w[40:72, 8] = 0.5  # ties
    r = ref.quantize_rtn(w, group_size=G, sparse=sparse)
    q = int4mm.quantize(fw.to_device(w), group_size=G, sparse=sparse)
    assert fw.is_native(q.qweight)
    got = {k: None if getattr(q, k) is None else fw.to_host(getattr(q, k))
           for k in ("qweight", "scales", "zeros", "mask")}
    _assert_same(got, r)
    x = np.random.default_rng(4).standard_normal((5, K)).astype(np.float16)
    y = fw.to_host(int4mm.matmul(fw.to_device(x), q))
    assert rel_err(y, ref.matmul(x, r["qweight"], r["scales"], r["zeros"], r["mask"])) <= TOL


def test_gpu_transposed_input_needs_no_copy():
    fw = framework("torch")
    torch = fw.t
    lin = torch.nn.Linear(256, 64, bias=False).half().cuda()
    q = int4mm.quantize(lin.weight.detach().t(), group_size=64)  # (K, N) view of (N, K)
    r = ref.quantize_rtn(lin.weight.detach().cpu().numpy().T, group_size=64)
    _assert_same({k: fw.to_host(getattr(q, k)) for k in ("qweight", "scales", "zeros")}
                 | {"mask": None}, r)


def test_gpu_refuses_nonfinite():
    fw = framework("torch")
    w = _weight(64, 16)
    w[9, 3] = np.nan
    with pytest.raises(BadDataError, match=r"k=9, n=3"):
        int4mm.quantize(fw.to_device(w), group_size=32)


def test_gpu_large_layer_one_at_a_time():
    """A 70B-class MLP projection (8192 x 28672) quantizes in well under a second."""
    import time

    fw = framework("torch")
    torch = fw.t
    w = torch.randn(8192, 28672, dtype=torch.float16, device="cuda") * 0.02
    int4mm.quantize(w[:256], group_size=128)  # warm up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    q = int4mm.quantize(w, group_size=128)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    assert q.qweight.shape == (1024, 28672)
    assert dt < 1.0, f"quantizing 8192 x 28672 took {dt:.3f} s"
