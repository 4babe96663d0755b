"""int4mm.shard / plan_shards: tensor-parallel splits of quantized weights.

The split rules (which cuts break a group, a sparse block or a packed word)
run everywhere; the copies and the products of the parts run on one GPU and
are compared with int4mm.reference.  Multi-GPU placement is in
test_multi_gpu.py.
"""

from types import SimpleNamespace

import numpy as np
import pytest

import int4mm
from int4mm import _arrays as A
from int4mm import reference as ref
from int4mm._api import PreparedWeight
from int4mm.errors import Int4mmTypeError, Int4mmValueError

from .conftest import TOL, FakeCAI, rel_err, require_gpu

pytest.importorskip("int4mm._int4mm", reason="compiled extension not built")


# --------------------------------------------------------------------------- rules (CPU)


def test_plan_equal_and_uneven():
    assert int4mm.plan_shards(256, 64, 128, False, "n", 2) == [(0, 32), (32, 64)]
    assert int4mm.plan_shards(256, 64, 128, False, 1, [16, 48]) == [(0, 16), (16, 64)]
    assert int4mm.plan_shards(256, 64, 128, False, "k", 2) == [(0, 128), (128, 256)]
    assert int4mm.plan_shards(256, 64, 64, False, 0, (64, 192)) == [(0, 64), (64, 256)]
    assert int4mm.plan_shards(256, 64, None, False, "K", 4) == [(0, 64), (64, 128), (128, 192),
                                                                 (192, 256)]
    # per-channel dense: any multiple of 8
    assert int4mm.plan_shards(64, 8, 64, False, "k", [8, 56]) == [(0, 8), (8, 64)]
    # per-channel sparse: multiples of 32
    assert int4mm.plan_shards(128, 8, None, True, "k", [32, 96]) == [(0, 32), (32, 128)]
    assert int4mm.plan_shards(64, 8, None, False, "n", 1) == [(0, 8)]


def test_plan_refuses_n_not_multiple_of_8():
    with pytest.raises(Int4mmValueError,
                       match=r"part 0: N = 12 \(columns 0\.\.11\) is not a multiple of 8"):
        int4mm.plan_shards(64, 24, None, False, "n", 2)
    with pytest.raises(Int4mmValueError, match=r"part 1: N = 4 \(columns 16\.\.19\)"):
        int4mm.plan_shards(64, 24, None, False, "n", [16, 4, 4])


def test_plan_refuses_split_group():
    with pytest.raises(Int4mmValueError,
                       match=r"part 0: K = 192 \(rows 0\.\.191\) would split quantization group 1 "
                             r"\(rows 128\.\.255\); with group_size 128 every part's K must be a "
                             r"multiple of 128"):
        int4mm.plan_shards(512, 64, 128, False, "k", [192, 320])
    with pytest.raises(Int4mmValueError, match=r"would split quantization group"):
        int4mm.plan_shards(384, 64, 128, False, "k", 2)  # 192 + 192


def test_plan_refuses_split_sparse_block():
    with pytest.raises(Int4mmValueError,
                       match=r"part 0: K = 48 \(rows 0\.\.47\) would split 16:32 sparse block 1 "
                             r"\(rows 32\.\.63\)"):
        int4mm.plan_shards(96, 8, None, True, "k", 2)
    # a group of 64 already keeps blocks whole: the group message wins
    with pytest.raises(Int4mmValueError, match=r"would split quantization group"):
        int4mm.plan_shards(256, 8, 64, True, "k", [32, 224])


def test_plan_refuses_split_word():
    with pytest.raises(Int4mmValueError,
                       match=r"part 0: K = 12 \(rows 0\.\.11\) would split packed word row 1 of "
                             r"qweight"):
        int4mm.plan_shards(24, 8, None, False, "k", 2)


def test_plan_refuses_bad_parts():
    with pytest.raises(Int4mmValueError,
                       match=r"parts: K \(in_features\) = 256 does not split into 3 equal parts"):
        int4mm.plan_shards(256, 64, None, False, "k", 3)
    with pytest.raises(Int4mmValueError, match=r"parts: sizes \[128, 64\] add up to 192, not K"):
        int4mm.plan_shards(256, 64, None, False, "k", [128, 64])
    with pytest.raises(Int4mmValueError, match=r"parts: part 1 has size 0"):
        int4mm.plan_shards(256, 64, None, False, "k", [256, 0])
    with pytest.raises(Int4mmValueError, match=r"parts: must be >= 1, got 0"):
        int4mm.plan_shards(256, 64, None, False, "k", 0)
    with pytest.raises(Int4mmValueError, match=r"parts: the list of sizes is empty"):
        int4mm.plan_shards(256, 64, None, False, "k", [])
    with pytest.raises(Int4mmTypeError, match=r"parts: expected an int or a list"):
        int4mm.plan_shards(256, 64, None, False, "k", True)
    with pytest.raises(Int4mmTypeError, match=r"parts: expected an int or a list of int sizes"):
        int4mm.plan_shards(256, 64, None, False, "k", [128.0, 128.0])


@pytest.mark.parametrize("dim", ["x", 2, -1, True, None, "rows"])
def test_plan_refuses_bad_dim(dim):
    with pytest.raises(Int4mmValueError, match=r"dim: expected 'n' \(or 1"):
        int4mm.plan_shards(256, 64, None, False, dim, 2)


def test_plan_refuses_bad_geometry():
    with pytest.raises(Int4mmValueError, match=r"group size that divides K"):
        int4mm.plan_shards(256, 64, 96, False, "k", 2)


# ---------------------------------------------------------------- shard() argument checks (CPU)


def _fake_weights(K=256, N=64, G=128, sparse=False):
    w = ref.random_weights(K, N, group_size=G, sparse=sparse, seed=3)
    out = {k: FakeCAI(np.ascontiguousarray(w[k])) for k in ("qweight", "scales", "zeros")}
    if sparse:
        out["mask"] = FakeCAI(w["mask"])
    return out


def test_shard_refuses_bad_split_before_touching_memory():
    w = _fake_weights()
    with pytest.raises(Int4mmValueError, match=r"part 0: K = 64 .* would split quantization group"):
        int4mm.shard(w, "k", 4)
    with pytest.raises(Int4mmValueError, match=r"part 0: N = 4 "):
        int4mm.shard(w, "n", 16)
    with pytest.raises(Int4mmValueError, match=r"index: 2 is out of range for 2 parts"):
        int4mm.shard(w, "n", 2, index=2)
    with pytest.raises(Int4mmTypeError, match=r"index: expected an int"):
        int4mm.shard(w, "n", 2, index="0")


def test_shard_refuses_host_memory():
    with pytest.raises(Int4mmValueError, match=r"qweight: points to host memory"):
        int4mm.shard(_fake_weights(), "n", 2)


def test_shard_refuses_bad_weight_type():
    with pytest.raises(Int4mmTypeError, match=r"weight: expected a PreparedWeight"):
        int4mm.shard([1, 2], "n", 2)
    with pytest.raises(Int4mmValueError, match=r"weight: the dict has no zeros"):
        w = _fake_weights()
        del w["zeros"]
        int4mm.shard(w, "n", 2)


def test_shard_refuses_k_split_with_act_order():
    w = _fake_weights()
    w["perm"] = FakeCAI(np.arange(256, dtype=np.int32)[::-1].copy())
    with pytest.raises(Int4mmValueError, match=r"has an act-order perm .*splitting it along K is "
                                                r"not supported"):
        int4mm.shard(w, "k", 2)
    # along N every part keeps the perm: the split goes on (to host memory, refused here)
    with pytest.raises(Int4mmValueError, match=r"points to host memory"):
        int4mm.shard(w, "n", 2)


def test_prepared_weight_has_shard_method():
    assert callable(PreparedWeight.shard)


# ---------------------------------------------------------------- device rules (CPU)


def _v(device, size=4, mem_kind=2):
    return SimpleNamespace(device=device, size=size, mem_kind=mem_kind)


def test_common_device_refuses_mixed_devices():
    with pytest.raises(Int4mmValueError,
                       match=r"^scales is on device 1 but qweight is on device 0; all arrays of "
                             r"one call must be on the same GPU"):
        A.common_device([("qweight", _v(0)), ("mask", None), ("scales", _v(1))])
    assert A.common_device([("x", _v(1)), ("out", _v(1, mem_kind=3))]) == 1


def test_common_device_ignores_empty_arrays_and_uses_default():
    assert A.common_device([("x", _v(None, size=0, mem_kind=-1)), ("bias", None)]) == 0
    assert A.common_device([("x", _v(None, size=0, mem_kind=-1))], default=1) == 1
    assert A.common_device([("x", _v(None, size=0, mem_kind=-1)), ("out", _v(3))],
                           default=1) == 3


def test_common_device_refuses_host():
    with pytest.raises(Int4mmValueError, match=r"^x: points to pinned host memory"):
        A.common_device([("x", _v(-1, mem_kind=1))])


def test_copy_2d_refuses_out_of_range_blocks():
    nat = A.native()
    src = nat.view(FakeCAI(np.zeros((4, 16), np.int32)), "src")
    dst = nat.view(FakeCAI(np.zeros((4, 8), np.int32)), "dst")
    with pytest.raises(Int4mmValueError, match=r"src: block rows \[0, 4\), columns \[12, 20\) is "
                                                r"outside its 4 x 16 elements"):
        nat.copy_2d(dst, src, 0, 4, 12, 20, 0)
    with pytest.raises(Int4mmValueError, match=r"dst: holds 32 elements, the block has 2 x 8"):
        nat.copy_2d(dst, src, 0, 2, 0, 8, 0)
    d16 = nat.view(FakeCAI(np.zeros((4, 8), np.float16)), "d16")
    with pytest.raises(Int4mmValueError, match=r"d16: element size 2 differs from src's 4"):
        nat.copy_2d(d16, src, 0, 4, 0, 8, 0)
    with pytest.raises(Int4mmValueError, match=r"src: is not in GPU memory"):
        nat.copy_2d(dst, src, 0, 4, 0, 8, 0)


# --------------------------------------------------------------------------- GPU: one device


def _upload(a, device=0):
    return A.native().DeviceArray.from_host(np.ascontiguousarray(a), device)


def _host(arr):
    return A.native().copy_to_host(A.view(arr, "arr"))


def _slices(w, dim, lo, hi, G, K, sparse):
    """The numpy arrays part [lo, hi) must hold."""
    out = {}
    per_word = 16 if sparse else 8
    grouped = w["scales"].ndim == 2 and w["scales"].shape[0] > 1
    for name in ("qweight", "mask", "scales", "zeros"):
        a = w.get(name)
        if a is None:
            continue
        if dim == "n":
            out[name] = a[..., lo:hi]
        elif name == "qweight":
            out[name] = a[lo // per_word:hi // per_word]
        elif name == "mask":
            out[name] = a[lo // 32:hi // 32]
        else:
            out[name] = a[lo // G:hi // G] if grouped else a
    return out


CASES = [
    # K, N, G (None: per channel), sparse, dim, parts
    (512, 256, 128, False, "n", 2),
    (512, 256, 128, False, "k", 2),
    (512, 256, None, False, "n", [64, 192]),
    (512, 256, None, False, "k", [8, 504]),
    (512, 128, 64, False, "k", [64, 192, 256]),
    (512, 256, 32, True, "n", 4),
    (512, 256, 64, True, "k", 2),
    (512, 128, None, True, "k", [32, 480]),
]


# 1-D scales/zeros exist for per-channel weights only (G is None).
SHARD_PARAMS = [(*c, False) for c in CASES] + [(*c, True) for c in CASES if c[2] is None]


@pytest.mark.parametrize(("K", "N", "G", "sparse", "dim", "parts", "flat_scales"), SHARD_PARAMS)
def test_shard_parts_match_reference(K, N, G, sparse, dim, parts, flat_scales):
    require_gpu()
    w = ref.random_weights(K, N, group_size=G, sparse=sparse, seed=11)
    if flat_scales:
        w["scales"], w["zeros"] = w["scales"].reshape(N), w["zeros"].reshape(N)
    dev = {k: _upload(w[k]) for k in ("qweight", "scales", "zeros")}
    dev["mask"] = _upload(w["mask"]) if sparse else None
    full = int4mm.prepare(dev["qweight"], dev["scales"], dev["zeros"], mask=dev["mask"])
    ranges = int4mm.plan_shards(K, N, G, sparse, dim, parts)
    shards = int4mm.shard(full, dim, parts)
    assert len(shards) == len(ranges)
    rng = np.random.default_rng(5)
    for M in (3, 300):
        x = rng.standard_normal((M, K)).astype(np.float16)
        y_ref = ref.matmul(x, w["qweight"], w["scales"], w["zeros"], w.get("mask"))
        acc = np.zeros((M, N))
        for (lo, hi), part in zip(ranges, shards):
            want = _slices(w, dim, lo, hi, G or K, K, sparse)
            for name, a in want.items():
                got = _host(getattr(part, name))
                assert got.shape == a.shape, name
                np.testing.assert_array_equal(got, a, err_msg=f"{name} of part [{lo}, {hi})")
            assert part.device == full.device
            xp = x[:, lo:hi] if dim == "k" else x
            y = _host(int4mm.matmul(_upload(xp), part))
            y_part_ref = ref.matmul(xp, want["qweight"], want["scales"], want["zeros"],
                                    want.get("mask"))
            assert rel_err(y, y_part_ref) < TOL
            if dim == "k":
                acc += y.astype(np.float64)
            else:
                acc[:, lo:hi] = y
        assert rel_err(acc, y_ref) < TOL


def test_shard_index_method_and_dict():
    require_gpu()
    K, N = 256, 64
    w = ref.random_weights(K, N, group_size=64, seed=2)
    dev = {k: _upload(w[k]) for k in ("qweight", "scales", "zeros")}
    full = int4mm.prepare(**dev)
    one = full.shard("n", 2, index=1)
    assert isinstance(one, PreparedWeight) and one.shape == (K, 32)
    np.testing.assert_array_equal(_host(one.qweight), w["qweight"][:, 32:])
    last = int4mm.shard(dev, 0, [64, 192], index=-1)
    assert last.shape == (192, N) and last.group_size == 64
    np.testing.assert_array_equal(_host(last.scales), w["scales"][1:])
    assert type(last.qweight).__name__ == "DeviceArray"


def test_shard_keeps_the_callers_library():
    require_gpu()
    torch = pytest.importorskip("torch")
    K, N = 256, 64
    w = ref.random_weights(K, N, group_size=128, seed=4)
    tw = {k: torch.from_numpy(np.ascontiguousarray(w[k])).cuda() for k in
          ("qweight", "scales", "zeros")}
    for part in int4mm.shard(tw, "n", 2) + int4mm.shard(int4mm.prepare(**tw), "k", 2):
        for name in ("qweight", "scales", "zeros"):
            t = getattr(part, name)
            assert isinstance(t, torch.Tensor) and t.is_contiguous() and t.is_cuda
    x = torch.randn(4, K, dtype=torch.float16, device="cuda")
    ys = [int4mm.matmul(x, p) for p in int4mm.shard(tw, "n", [16, 48])]
    y = int4mm.matmul(x, int4mm.prepare(**tw))
    torch.cuda.synchronize()
    assert rel_err(torch.cat(ys, dim=1).cpu().numpy(), y.cpu().numpy()) < TOL


def test_shard_n_keeps_act_order_perm():
    require_gpu()
    K, N = 256, 64
    w = ref.random_weights(K, N, group_size=64, seed=8)
    perm = np.random.default_rng(8).permutation(K).astype(np.int32)
    dev = {k: _upload(w[k]) for k in ("qweight", "scales", "zeros")}
    full = int4mm.prepare(**dev, perm=_upload(perm))
    x = np.random.default_rng(9).standard_normal((6, K)).astype(np.float16)
    y_ref = ref.matmul(x[:, perm], w["qweight"], w["scales"], w["zeros"])
    ys = []
    for part in int4mm.shard(full, "n", [16, 48]):
        np.testing.assert_array_equal(_host(part.perm), perm)
        ys.append(_host(int4mm.matmul(_upload(x), part)))
    assert rel_err(np.concatenate(ys, axis=1), y_ref) < TOL
    with pytest.raises(Int4mmValueError, match=r"act-order perm"):
        full.shard("k", 2)
