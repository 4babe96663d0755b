"""GPU packing kernels against the reference packers; refusals write nothing."""

import numpy as np
import pytest

import int4mm
from int4mm import reference as ref
from int4mm.errors import BadDataError

from .conftest import framework

SHAPES = [(32, 8), (256, 24), (1024, 136), (4096, 512)]


@pytest.mark.parametrize("fwname", ["torch", "cupy"])
@pytest.mark.parametrize("K,N", SHAPES)
def test_pack_unpack_dense(fwname, K, N):
    fw = framework(fwname)
    codes = np.random.default_rng(K * N).integers(0, 16, (K, N), dtype=np.uint8)
    out = fw.poisoned((K // 8, N), np.int32)
    qw = int4mm.pack_dense(fw.to_device(codes), out=out)
    np.testing.assert_array_equal(fw.to_host(qw), ref.pack_dense(codes))
    back = int4mm.unpack_dense(qw)
    assert fw.is_native(back)
    np.testing.assert_array_equal(fw.to_host(back), codes)


def test_pack_dense_transposed_input():
    """Codes given as an (N, K) array's transpose (non-contiguous view)."""
    fw = framework("torch")
    K, N = 256, 24
    codes = np.random.default_rng(1).integers(0, 16, (K, N), dtype=np.uint8)
    dev_t = fw.to_device(np.ascontiguousarray(codes.T)).t()  # (K, N), strides (1, K)
    qw = int4mm.pack_dense(dev_t)
    np.testing.assert_array_equal(fw.to_host(qw), ref.pack_dense(codes))


def test_pack_dense_refuses_code_above_15_and_writes_nothing():
    fw = framework("torch")
    codes = np.random.default_rng(2).integers(0, 16, (64, 16), dtype=np.uint8)
    codes[37, 5] = 16
    codes[40, 1] = 200
    out = fw.poisoned((8, 16), np.int32)
    before = fw.to_host(out).copy()
    with pytest.raises(BadDataError, match=r"\[k=37, n=5\] is 16"):
        int4mm.pack_dense(fw.to_device(codes), out=out)
    np.testing.assert_array_equal(fw.to_host(out), before)


@pytest.mark.parametrize("fwname", ["torch", "cupy"])
@pytest.mark.parametrize("K,N", SHAPES)
def test_pack_unpack_sparse(fwname, K, N):
    fw = framework(fwname)
    w = ref.random_weights(K, N, sparse=True, seed=K + N)
    codes = w["codes"].copy()
    codes[~w["keep"]] = 0xEE  # pruned codes are ignored, whatever they hold
    outs = (fw.poisoned((K // 16, N), np.int32), fw.poisoned((K // 32, N), np.int32))
    qw, mask = int4mm.pack_sparse(fw.to_device(codes), fw.to_device(w["keep"].astype(np.uint8)),
                                  out=outs)
    np.testing.assert_array_equal(fw.to_host(qw), w["qweight"])
    np.testing.assert_array_equal(fw.to_host(mask), w["mask"])
    c, k = int4mm.unpack_sparse(qw, mask)
    np.testing.assert_array_equal(fw.to_host(k).astype(bool), w["keep"])
    np.testing.assert_array_equal(fw.to_host(c), np.where(w["keep"], w["codes"], 0))


def test_pack_sparse_refuses_bad_block_and_writes_nothing():
    fw = framework("torch")
    K, N = 128, 16
    w = ref.random_weights(K, N, sparse=True, seed=9)
    keep = w["keep"].copy()
    k_off = np.flatnonzero(~keep[64:96, 11])[0]
    keep[64 + k_off, 11] = True  # block 2 of column 11 now keeps 17
    outs = (fw.poisoned((K // 16, N), np.int32), fw.poisoned((K // 32, N), np.int32))
    before = [fw.to_host(o).copy() for o in outs]
    with pytest.raises(BadDataError, match=r"block 2 of column 11 \(rows 64\.\.95\) keeps 17"):
        int4mm.pack_sparse(fw.to_device(w["codes"]), fw.to_device(keep.astype(np.uint8)),
                           out=outs)
    for o, b in zip(outs, before):
        np.testing.assert_array_equal(fw.to_host(o), b)


def test_validate_and_unpack_refuse_bad_mask():
    fw = framework("torch")
    w = ref.random_weights(64, 8, sparse=True, seed=10)
    mask = w["mask"].copy()
    mask[1, 6] = 0x7FFF  # 15 bits
    with pytest.raises(BadDataError, match=r"block 1 of column 6 .* keeps 15"):
        int4mm.validate_sparse_mask(fw.to_device(mask))
    with pytest.raises(BadDataError, match=r"block 1 of column 6"):
        int4mm.unpack_sparse(fw.to_device(w["qweight"]), fw.to_device(mask))
    with pytest.raises(BadDataError, match=r"block 1 of column 6"):
        int4mm.prepare(fw.to_device(w["qweight"]), fw.to_device(w["scales"]),
                       fw.to_device(w["zeros"]), fw.to_device(mask))


def test_compat_weight_matrix_packing():
    """The original (N, K) uint8 inputs, written into caller-given outputs."""
    from int4mm import compat

    fw = framework("torch")
    K, N = 256, 24
    w = ref.random_weights(K, N, sparse=True, seed=11)
    wt_out = fw.poisoned((K // 16, N), np.int32)
    msk_out = fw.poisoned((K // 32, N), np.int32)
    compat.weight_matrix_packing(wt_out, msk_out, fw.to_device(np.ascontiguousarray(w["codes"].T)),
                                 fw.to_device(np.ascontiguousarray(w["keep"].T.astype(np.uint8))))
    np.testing.assert_array_equal(fw.to_host(wt_out), w["qweight"])
    np.testing.assert_array_equal(fw.to_host(msk_out), w["mask"])
