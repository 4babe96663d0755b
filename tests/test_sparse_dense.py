"""16:32 sparse weights prepared as their exact dense equivalent (pruned
weights coded as their integral zero point): the numpy twin, the GPU
conversion bit for bit, and prepared matmuls on every path against the
float64 reference, with outputs poisoned first."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import int4mm
from int4mm import reference as ref
from int4mm.errors import Int4mmValueError

from .conftest import TOL, framework, rel_err


@functools.lru_cache(maxsize=8)
def integral_problem(K, N, G, seed=0):
    """Random 16:32 weights whose zero points are all integers (as GPTQ, AWQ and
    int4mm.quantize make them), and their float64 dequantization."""
    w = ref.random_weights(K, N, group_size=G, sparse=True, seed=seed + K + 5 * N)
    w["zeros"] = np.floor(w["zeros"]).astype(np.float16)  # drop the few x.5 ones
    W = ref.dequantize(w["qweight"], w["scales"], w["zeros"], w["mask"])
    return w, W


# ---------------------------------------------------------------- CPU: the numpy twin

@pytest.mark.parametrize("G", [32, 128, None], ids=lambda g: f"g{g or 'chan'}")
def test_reference_dense_equivalent_is_exact(G):
    w, W = integral_problem(256, 24, G)
    dense = ref.sparse_as_dense(w["qweight"], w["mask"], w["zeros"])
    assert dense.shape == (256 // 8, 24) and dense.dtype == np.int32
    np.testing.assert_array_equal(ref.dequantize(dense, w["scales"], w["zeros"]), W)
    # Kept codes are untouched, pruned ones are the zero point.
    codes, keep = ref.unpack_sparse(w["qweight"], w["mask"])
    dc = ref.unpack_dense(dense)
    keep = keep.astype(bool)
    np.testing.assert_array_equal(dc[keep], codes[keep])
    z = np.asarray(w["zeros"], np.float64).reshape(-1, 24)
    z = np.repeat(z, ref.group_size_of(256, z), 0)
    np.testing.assert_array_equal(dc[~keep], z[~keep])


def test_reference_dense_equivalent_refuses_fractional_zero():
    w, _ = integral_problem(256, 24, 64)
    z = w["zeros"].copy()
    z[2, 5] = 7.5
    with pytest.raises(Int4mmValueError, match=r"zeros: \[2, 5\] is 7.5"):
        ref.sparse_as_dense(w["qweight"], w["mask"], z)
    z[2, 5] = 16
    with pytest.raises(Int4mmValueError, match=r"\[2, 5\] is 16"):
        ref.sparse_as_dense(w["qweight"], w["mask"], z)


# ---------------------------------------------------------------- GPU: the conversion

@pytest.mark.parametrize("G", [32, 64, None], ids=lambda g: f"g{g or 'chan'}")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_gpu_conversion_matches_reference(G, dtype):
    fw = framework("torch")
    import torch

    from int4mm import _arrays as A

    K, N = 512, 40
    w, _ = integral_problem(K, N, G)
    zeros = fw.to_device(w["zeros"])
    if dtype == "bfloat16":
        zeros = zeros.to(torch.bfloat16)  # integers 0..15 are exact in bfloat16
    dense = torch.full((K // 8, N), -0x54545455, dtype=torch.int32, device="cuda")
    views = [A.view(a, n) for a, n in ((fw.to_device(w["qweight"]), "qweight"),
                                       (fw.to_device(w["mask"]), "mask"), (zeros, "zeros"),
                                       (dense, "dense"))]
    G_ = K if G is None else G
    stream = torch.cuda.current_stream().cuda_stream
    assert A.native().sparse_to_dense(*views, K, N, G_, 0, stream) is None
    np.testing.assert_array_equal(fw.to_host(dense),
                                  ref.sparse_as_dense(w["qweight"], w["mask"], w["zeros"]))


def test_gpu_conversion_names_first_fractional_zero_and_writes_nothing():
    fw = framework("torch")
    import torch

    from int4mm import _arrays as A

    K, N, G = 256, 24, 64
    w, _ = integral_problem(K, N, G)
    z = w["zeros"].copy()
    z[3, 7] = 4.5
    z[1, 20] = -1  # earlier in row-major order: the one reported
    dense = torch.full((K // 8, N), -0x54545455, dtype=torch.int32, device="cuda")
    views = [A.view(a, n) for a, n in ((fw.to_device(w["qweight"]), "qweight"),
                                       (fw.to_device(w["mask"]), "mask"),
                                       (fw.to_device(z), "zeros"), (dense, "dense"))]
    stream = torch.cuda.current_stream().cuda_stream
    assert A.native().sparse_to_dense(*views, K, N, G, 0, stream) == (1, 20)
    assert (fw.to_host(dense) == -0x54545455).all()


# ---------------------------------------------------------------- GPU: prepared matmul

def _expected_layout(G):
    info = int4mm.info()
    import torch

    hopper = torch.cuda.get_device_capability() == (9, 0) and "sm_90a" in info["compiled_targets"]
    base = "sm90-wgmma" if hopper and G != 32 else "small-m-tiled"
    return base + "+dense-equivalent"


@pytest.mark.parametrize("path", ["auto", "small_m", "large_m"])
@pytest.mark.parametrize("M", [1, 2, 9, 16, 17, 64, 128, 255, 1000])
@pytest.mark.parametrize("G", [64, 128, None, 32], ids=lambda g: f"g{g or 'chan'}")
@pytest.mark.parametrize("K,N", [(1024, 128), (2048, 1040)], ids=lambda v: str(v))
def test_prepared_sparse_dense_equivalent(K, N, G, M, path):
    """Decode kernel (M <= 16), wgmma (above) or the tiled mid-M kernel run the
    dense equivalent; forced paths and shapes those kernels decline run the
    sparse raw kernels on the same weight.  Fast path: torch tensors + out."""
    if path == "small_m" and M > 128:
        pytest.skip("small-M kernels at large M: covered up to 128 rows")
    fw = framework("torch")
    w, W = integral_problem(K, N, G)
    p = int4mm.prepare(fw.to_device(w["qweight"]), fw.to_device(w["scales"]),
                       fw.to_device(w["zeros"]), mask=fw.to_device(w["mask"]))
    assert p.sparse and p.layout == _expected_layout(G), p
    x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float16)
    out = fw.poisoned((M, N))
    int4mm.matmul(fw.to_device(x), p, out=out, path=path)
    y = fw.to_host(out)
    assert not np.isnan(y).any(), "kernel left output cells unwritten"
    from .test_matmul import reference_product

    err = rel_err(y, reference_product(x, W))
    assert err <= TOL, f"relative error {err:.2e} (prepared {p.layout}, M={M}, {path})"


@pytest.mark.parametrize("M", [1, 16, 300])
def test_prepared_sparse_dense_equivalent_bf16_with_bias(M):
    fw = framework("torch")
    import torch

    K, N, G = 1024, 136, 128
    w, _ = integral_problem(K, N, G)
    p = int4mm.prepare(fw.to_device(w["qweight"]), fw.to_device(w["scales"]),
                       fw.to_device(w["zeros"]), mask=fw.to_device(w["mask"]), dtype="bfloat16")
    assert p.layout.endswith("+dense-equivalent") and p.dtype == "bfloat16", p
    x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float32)
    b = np.random.default_rng(2).standard_normal(N).astype(np.float32)
    xt = torch.from_numpy(x).cuda().to(torch.bfloat16)
    bt = torch.from_numpy(b).cuda().to(torch.bfloat16)
    out = torch.full((M, N), float("nan"), dtype=torch.bfloat16, device="cuda")
    int4mm.matmul(xt, p, bias=bt, out=out)
    y = out.float().cpu().numpy()
    assert not np.isnan(y).any()
    xr = xt.float().cpu().numpy().astype(np.float64)
    br = bt.float().cpu().numpy().astype(np.float64)
    s = ref.bf16_round(w["scales"]).astype(np.float64)  # the bf16 weight's own scales
    Wb = ref.dequantize(w["qweight"], s, w["zeros"], w["mask"])
    assert rel_err(y, xr @ Wb + br) <= 1e-2


def test_fractional_zero_points_keep_the_raw_kernels():
    """random_weights mixes in a few x.5 zero points: no exact dense equivalent,
    so the weight stays on the raw-format kernels, still correct."""
    fw = framework("torch")
    K, N, G = 1024, 128, 128
    w = ref.random_weights(K, N, group_size=G, sparse=True, seed=11)
    assert (w["zeros"] != np.round(w["zeros"])).any()
    W = ref.dequantize(w["qweight"], w["scales"], w["zeros"], w["mask"])
    p = int4mm.prepare(fw.to_device(w["qweight"]), fw.to_device(w["scales"]),
                       fw.to_device(w["zeros"]), mask=fw.to_device(w["mask"]))
    assert p.layout == "raw", p
    for M in (1, 40):
        x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float16)
        out = fw.poisoned((M, N))
        int4mm.matmul(fw.to_device(x), p, out=out)
        assert rel_err(fw.to_host(out), x.astype(np.float64) @ W) <= TOL


def test_sparse_as_dense_false_keeps_the_raw_kernels(tmp_path):
    fw = framework("torch")
    K, N, G = 1024, 128, None
    w, W = integral_problem(K, N, G)
    dev = [fw.to_device(w[k]) for k in ("qweight", "scales", "zeros", "mask")]
    raw = int4mm.prepare(*dev[:3], mask=dev[3], sparse_as_dense=False)
    assert raw.layout == "raw", raw
    fast = int4mm.prepare(*dev[:3], mask=dev[3])
    x = fw.to_device(np.random.default_rng(4).standard_normal((5, K)).astype(np.float16))
    y_raw, y_fast = fw.to_host(int4mm.matmul(x, raw)), fw.to_host(int4mm.matmul(x, fast))
    expect = fw.to_host(x).astype(np.float64) @ W
    assert rel_err(y_raw, expect) <= TOL and rel_err(y_fast, expect) <= TOL
    # save / load keeps the sparse interchange arrays and rebuilds the equivalent.
    fast.save(tmp_path / "w.npz")
    again = int4mm.PreparedWeight.load(tmp_path / "w.npz")
    assert again.sparse and again.layout == fast.layout
    np.testing.assert_array_equal(fw.to_host(int4mm.matmul(x, again)), y_fast)
    # The opt-out survives save / load (unless load overrides it) and shard.
    raw.save(tmp_path / "raw.npz")
    assert int4mm.PreparedWeight.load(tmp_path / "raw.npz").layout == "raw"
    assert int4mm.PreparedWeight.load(tmp_path / "raw.npz", sparse_as_dense=True).layout == fast.layout
    for whole, parts in ((raw, raw.shard("n", 2)), (fast, fast.shard("n", 2))):
        assert [p.layout for p in parts] == [whole.layout] * 2
        ys = [fw.to_host(int4mm.matmul(x, p)) for p in parts]
        assert rel_err(np.concatenate(ys, axis=-1), expect) <= TOL


@pytest.mark.parametrize("M", [1, 33])
def test_sanitize_sparse_dense_equivalent(M):
    """For compute-sanitizer: the conversion, then decode / wgmma (or the tiled
    kernel) on a ragged small shape."""
    fw = framework("torch")
    K, N, G = 256, 48, 64
    w, W = integral_problem(K, N, G)
    p = int4mm.prepare(fw.to_device(w["qweight"]), fw.to_device(w["scales"]),
                       fw.to_device(w["zeros"]), mask=fw.to_device(w["mask"]))
    assert p.layout.endswith("+dense-equivalent"), p
    x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float16)
    out = fw.poisoned((M, N))
    int4mm.matmul(fw.to_device(x), p, out=out)
    assert rel_err(fw.to_host(out), x.astype(np.float64) @ W) <= TOL
