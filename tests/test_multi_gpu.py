"""Several GPUs: every call runs on the GPU that owns its arrays, whatever the
caller's current device; arrays of one call on different GPUs are refused;
per-device state (event pool, device facts, prepared layouts) is right from
several threads at once; shard() moves parts between GPUs.

Skipped unless at least two GPUs are visible.  The torch tests also need a
CUDA build of torch.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import int4mm
from int4mm import _arrays as A
from int4mm import reference as ref
from int4mm.errors import BadDataError, Int4mmValueError

from .conftest import TOL, rel_err, require_gpu

pytest.importorskip("int4mm._int4mm", reason="compiled extension not built")


@pytest.fixture(autouse=True)
def two_gpus():
    require_gpu()
    n = A.native().device_count()
    if n < 2:
        pytest.skip(f"multi-GPU test skipped: {n} GPU visible, 2 needed")


@pytest.fixture
def torch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        pytest.skip("torch does not see 2 CUDA GPUs")
    return torch


def _upload(a, device):
    return A.native().DeviceArray.from_host(np.ascontiguousarray(a), device)


def _host(arr):
    return A.native().copy_to_host(A.view(arr, "arr"))


def _weights(K=512, N=256, G=128, sparse=False, seed=0):
    return ref.random_weights(K, N, group_size=G, sparse=sparse, seed=seed)


def _on(w, device, sparse=False):
    d = {k: _upload(w[k], device) for k in ("qweight", "scales", "zeros")}
    d["mask"] = _upload(w["mask"], device) if sparse else None
    return d


# ------------------------------------------------------------------ placement


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("M", [1, 40, 600])
def test_native_arrays_on_device_1(M, sparse):
    """int4mm's own arrays on GPU 1 (the process's current device is 0)."""
    w = _weights(G=64, sparse=sparse, seed=M)
    d = _on(w, 1, sparse)
    x = np.random.default_rng(M).standard_normal((M, 512)).astype(np.float16)
    y_ref = ref.matmul(x, w["qweight"], w["scales"], w["zeros"], w["mask"])
    prepared = int4mm.prepare(d["qweight"], d["scales"], d["zeros"], mask=d["mask"])
    assert prepared.device == 1
    for weight in (prepared, d["qweight"]):
        kw = {} if weight is prepared else {"scales": d["scales"], "zeros": d["zeros"],
                                             "mask": d["mask"]}
        y = int4mm.matmul(_upload(x, 1), weight, **kw)
        assert y.device == 1
        assert rel_err(_host(y), y_ref) < TOL


@pytest.mark.parametrize("M", [1, 40, 600])
def test_torch_device_1_while_current_is_0(torch, M):
    torch.cuda.set_device(0)
    w = _weights(seed=M)
    tw = {k: torch.from_numpy(np.ascontiguousarray(w[k])).to("cuda:1")
          for k in ("qweight", "scales", "zeros")}
    bias = torch.randn(256, dtype=torch.float16, device="cuda:1")
    prepared = int4mm.prepare(**tw)
    assert prepared.device == 1
    assert prepared.layout == int4mm.prepare(
        *(t.to("cuda:0") for t in (tw["qweight"], tw["scales"], tw["zeros"]))).layout
    x = torch.randn(M, 512, dtype=torch.float16, device="cuda:1")
    y_ref = ref.matmul(x.cpu().numpy(), w["qweight"], w["scales"], w["zeros"],
                       bias=bias.cpu().numpy())
    for path in ("auto", "small_m", "large_m"):
        y = int4mm.matmul(x, prepared, bias=bias, path=path)
        assert y.device == torch.device("cuda:1")
        assert torch.cuda.current_device() == 0
        torch.cuda.synchronize(1)
        assert rel_err(y.cpu().numpy(), y_ref) < TOL, path
    y = int4mm.matmul(x, tw["qweight"], tw["scales"], tw["zeros"], bias=bias)
    torch.cuda.synchronize(1)
    assert rel_err(y.cpu().numpy(), y_ref) < TOL
    # empty x on GPU 1: the (empty) result is allocated there too
    assert int4mm.matmul(x[:0], prepared).device == torch.device("cuda:1")


def test_mixed_devices_refused():
    w = _weights()
    d0, d1 = _on(w, 0), _on(w, 1)
    x0 = _upload(np.zeros((4, 512), np.float16), 0)
    w1 = int4mm.prepare(d1["qweight"], d1["scales"], d1["zeros"])
    with pytest.raises(Int4mmValueError, match=r"x is on device 0 but the weight is on device 1"):
        int4mm.matmul(x0, w1)
    with pytest.raises(Int4mmValueError,
                       match=r"scales is on device 1 but x is on device 0; all arrays of "
                             r"one call must be on the same GPU"):
        int4mm.matmul(x0, d0["qweight"], d1["scales"], d0["zeros"])
    with pytest.raises(Int4mmValueError, match=r"out is on device 1 but x is on device 0"):
        int4mm.matmul(x0, d0["qweight"], d0["scales"], d0["zeros"],
                      out=_upload(np.zeros((4, 256), np.float16), 1))
    with pytest.raises(Int4mmValueError, match=r"bias is on device 1 but x is on device 0"):
        int4mm.matmul(x0, d0["qweight"], d0["scales"], d0["zeros"],
                      bias=_upload(np.zeros(256, np.float16), 1))
    with pytest.raises(Int4mmValueError, match=r"zeros is on device 0 but qweight is on device 1"):
        int4mm.prepare(d1["qweight"], d1["scales"], d0["zeros"])
    with pytest.raises(Int4mmValueError, match=r"on device 1 but .* on device 0"):
        int4mm.shard({"qweight": d0["qweight"], "scales": d1["scales"], "zeros": d0["zeros"]},
                     "n", 2)


def test_pack_and_prepare_on_device_1():
    K, N = 256, 64
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 16, size=(K, N), dtype=np.uint8)
    q = int4mm.pack_dense(_upload(codes, 1))
    assert q.device == 1
    np.testing.assert_array_equal(_host(q), ref.pack_dense(codes))
    np.testing.assert_array_equal(_host(int4mm.unpack_dense(q)), codes)
    keep = np.zeros((K, N), np.uint8)
    for b in range(K // 32):
        for n in range(N):
            keep[32 * b + rng.permutation(32)[:16], n] = 1
    qs, mask = int4mm.pack_sparse(_upload(codes, 1), _upload(keep, 1))
    assert qs.device == 1 and mask.device == 1
    rq, rm = ref.pack_sparse(codes, keep)
    np.testing.assert_array_equal(_host(qs), rq)
    np.testing.assert_array_equal(_host(mask), rm)
    int4mm.validate_sparse_mask(mask)
    bad = codes.copy()
    bad[5, 7] = 17
    with pytest.raises(BadDataError, match=r"codes: value at \[k=5, n=7\] is 17"):
        int4mm.pack_dense(_upload(bad, 1))
    s = _upload(np.full((K // 64, N), 0.01, np.float16), 1)
    z = _upload(np.full((K // 64, N), 8, np.float16), 1)
    w = int4mm.prepare(q, s, z)
    assert w.device == 1
    ws = int4mm.prepare(qs, s, z, mask=mask)
    assert ws.device == 1
    x = rng.standard_normal((300, K)).astype(np.float16)
    for weight, (rq_, rm_) in ((w, (ref.pack_dense(codes), None)), (ws, (rq, rm))):
        y = int4mm.matmul(_upload(x, 1), weight)
        y_ref = ref.matmul(x, rq_, _host(s), _host(z), rm_)
        assert rel_err(_host(y), y_ref) < TOL


def test_save_load_on_device_1(tmp_path):
    w = _weights(seed=9)
    d = _on(w, 0)
    path = tmp_path / "w.npz"
    int4mm.prepare(d["qweight"], d["scales"], d["zeros"]).save(path)
    w1 = int4mm.PreparedWeight.load(path, device=1)
    assert w1.device == 1 and w1.qweight.device == 1
    x = np.random.default_rng(0).standard_normal((8, 512)).astype(np.float16)
    y = int4mm.matmul(_upload(x, 1), w1)
    assert rel_err(_host(y), ref.matmul(x, w["qweight"], w["scales"], w["zeros"])) < TOL


# ------------------------------------------------------------------ threads


def test_threads_on_both_devices(torch):
    """Many host threads, each calling on one of two GPUs with a producer stream
    to wait for (the per-device event pool) and its own launch stream."""
    K, N = 512, 256
    ws = [_weights(K, N, G=128, seed=d) for d in (0, 1)]
    prepared = [int4mm.prepare(*(_upload(ws[d][k], d) for k in ("qweight", "scales", "zeros")))
                for d in (0, 1)]
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((M, K)).astype(np.float16) for M in (1, 7, 64, 300)]
    refs = [[ref.matmul(x, ws[d]["qweight"], ws[d]["scales"], ws[d]["zeros"]) for x in xs]
            for d in (0, 1)]

    def work(task):
        dev = task % 2
        torch.cuda.set_device(1 - dev)  # the current device is never the right one
        producer = torch.cuda.Stream(device=dev)
        launch = torch.cuda.Stream(device=dev)
        errs = []
        for rep in range(12):
            i = (task + rep) % len(xs)
            x = _upload(xs[i], dev)
            x.stream = producer.cuda_stream  # as if written there: matmul must wait for it
            y = int4mm.matmul(x, prepared[dev], stream=launch.cuda_stream)
            errs.append((i, y))
        out = []
        for i, y in errs:
            out.append(rel_err(y.copy_to_host(stream=launch.cuda_stream), refs[dev][i]))
        assert torch.cuda.current_device() == 1 - dev
        return max(out)

    with ThreadPoolExecutor(max_workers=8) as pool:
        worst = list(pool.map(work, range(32)))
    assert max(worst) < TOL, worst


# ------------------------------------------------------------------ shard across GPUs


@pytest.mark.parametrize(("dim", "sparse"), [("n", False), ("k", False), ("k", True)])
def test_shard_to_the_other_gpu(dim, sparse):
    K, N = 512, 256
    w = _weights(K, N, G=64, sparse=sparse, seed=5)
    d = _on(w, 0, sparse)
    full = int4mm.prepare(d["qweight"], d["scales"], d["zeros"], mask=d["mask"])
    x = np.random.default_rng(2).standard_normal((33, K)).astype(np.float16)
    y_ref = ref.matmul(x, w["qweight"], w["scales"], w["zeros"], w["mask"])
    parts = [int4mm.shard(full, dim, 2, index=i, device=i) for i in (0, 1)]
    assert [p.device for p in parts] == [0, 1]
    assert all(a.device == 1 for a in (parts[1].qweight, parts[1].scales, parts[1].zeros))
    ys = []
    for i, p in enumerate(parts):
        xp = x[:, i * K // 2:(i + 1) * K // 2] if dim == "k" else x
        ys.append(_host(int4mm.matmul(_upload(xp, i), p)).astype(np.float64))
    y = ys[0] + ys[1] if dim == "k" else np.concatenate(ys, axis=1)
    assert rel_err(y, y_ref) < TOL
    # and back: from GPU 1 to GPU 0
    back = int4mm.shard(parts[1], "n", 1, device=0)[0]
    assert back.device == 0
    np.testing.assert_array_equal(_host(back.qweight), _host(parts[1].qweight))


def test_shard_torch_weight_on_device_1(torch):
    torch.cuda.set_device(0)
    w = _weights(seed=6)
    tw = {k: torch.from_numpy(np.ascontiguousarray(w[k])).to("cuda:1")
          for k in ("qweight", "scales", "zeros")}
    parts = int4mm.shard(int4mm.prepare(**tw), "n", 2)
    assert all(p.device == 1 and p.qweight.device == torch.device("cuda:1") for p in parts)
    moved = int4mm.shard(tw, "k", 2, device=torch.device("cuda:0"))
    assert all(p.device == 0 and p.scales.device == torch.device("cuda:0") for p in moved)
    x = torch.randn(5, 512, dtype=torch.float16, device="cuda:0")
    y = int4mm.matmul(x[:, :256].contiguous(), moved[0]).float() + \
        int4mm.matmul(x[:, 256:].contiguous(), moved[1]).float()
    y_ref = ref.matmul(x.cpu().numpy(), w["qweight"], w["scales"], w["zeros"])
    torch.cuda.synchronize(0)
    assert rel_err(y.cpu().numpy(), y_ref) < TOL
    assert torch.cuda.current_device() == 0
