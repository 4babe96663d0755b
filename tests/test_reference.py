"""The numpy reference is the oracle: pin it to FORMATS.md by hand-built
examples, then check its round trips on random data."""

import numpy as np
import pytest

from int4mm import reference as ref
from int4mm.errors import BadDataError, Int4mmValueError


def test_dense_word_layout_matches_spec():
    # q[k, 0] = k for k in 0..7 -> nibble j holds j: 0x76543210
    codes = np.arange(8, dtype=np.uint8).reshape(8, 1).repeat(8, axis=1)
    codes[:, 1] = 15 - np.arange(8)  # 0x89ABCDEF (negative as int32)
    w = ref.pack_dense(codes)
    assert w.dtype == np.int32 and w.shape == (1, 8)
    assert w.view(np.uint32)[0, 0] == 0x76543210
    assert w.view(np.uint32)[0, 1] == 0x89ABCDEF
    assert w[0, 1] < 0  # the top nibble makes it negative: still read as uint32


@pytest.mark.parametrize("K,N", [(8, 8), (64, 24), (256, 40)])
def test_dense_round_trip(K, N):
    codes = np.random.default_rng(K + N).integers(0, 16, (K, N), dtype=np.uint8)
    np.testing.assert_array_equal(ref.unpack_dense(ref.pack_dense(codes)), codes)


def test_dense_rejects_code_above_15():
    codes = np.zeros((8, 8), dtype=np.uint8) + 3
    codes[5, 2] = 17
    with pytest.raises(BadDataError, match=r"\[k=5, n=2\] is 17"):
        ref.pack_dense(codes)


def test_sparse_layout_matches_spec():
    K, N = 32, 8
    keep = np.zeros((K, N), dtype=bool)
    keep[1::2, :] = True  # odd rows kept: mask 0xAAAAAAAA
    codes = np.zeros((K, N), dtype=np.uint8)
    codes[1::2, 0] = np.arange(16)  # p-th kept code = p
    qw, mask = ref.pack_sparse(codes, keep)
    assert qw.shape == (2, N) and mask.shape == (1, N)
    assert mask.view(np.uint32)[0, 0] == 0xAAAAAAAA
    assert qw.view(np.uint32)[0, 0] == 0x76543210  # nibbles 0..7 in lo
    assert qw.view(np.uint32)[1, 0] == 0xFEDCBA98  # nibbles 8..15 in hi
    c2, k2 = ref.unpack_sparse(qw, mask)
    np.testing.assert_array_equal(k2.astype(bool), keep)
    np.testing.assert_array_equal(c2, np.where(keep, codes, 0))


@pytest.mark.parametrize("K,N", [(32, 8), (128, 16), (256, 24)])
def test_sparse_round_trip(K, N):
    w = ref.random_weights(K, N, sparse=True, seed=K * N)
    codes, keep = ref.unpack_sparse(w["qweight"], w["mask"])
    np.testing.assert_array_equal(keep.astype(bool), w["keep"])
    np.testing.assert_array_equal(codes, np.where(w["keep"], w["codes"], 0))
    assert (keep.reshape(K // 32, 32, N).sum(axis=1) == 16).all()


def test_sparse_pack_refuses_bad_block_naming_it():
    K, N = 64, 8
    keep = np.zeros((K, N), dtype=bool)
    keep[:16, :] = True
    keep[32:48, :] = True
    keep[40, 3] = False  # block 1 of column 3 keeps 15
    codes = np.ones((K, N), dtype=np.uint8)
    with pytest.raises(BadDataError, match=r"block 1 of column 3 \(rows 32\.\.63\) keeps 15"):
        ref.pack_sparse(codes, keep)


def test_sparse_unpack_refuses_bad_mask():
    w = ref.random_weights(64, 8, sparse=True, seed=1)
    mask = w["mask"].copy()
    mask[1, 5] = 0x0000FFFF | (1 << 20)  # 17 bits
    with pytest.raises(BadDataError, match=r"block 1 of column 5 .* keeps 17"):
        ref.unpack_sparse(w["qweight"], mask)


@pytest.mark.parametrize("G", [32, 64, 128, None])
def test_dequantize_formula(G):
    K, N = 256, 16
    w = ref.random_weights(K, N, group_size=G, seed=3)
    W = ref.dequantize(w["qweight"], w["scales"], w["zeros"])
    Gs = K if G is None else G
    k, n = 77, 9
    expect = (float(w["codes"][k, n]) - float(w["zeros"][k // Gs, n])) * float(
        w["scales"][k // Gs, n])
    assert W[k, n] == expect
    assert np.abs(W).max() > 0


def test_dequantize_sparse_zeroes_pruned_rows():
    w = ref.random_weights(64, 8, sparse=True, group_size=32, seed=4)
    W = ref.dequantize(w["qweight"], w["scales"], w["zeros"], w["mask"])
    assert (W[~w["keep"]] == 0).all()
    kept = w["keep"]
    assert np.count_nonzero(W[kept]) > 0.8 * kept.sum()


def test_per_channel_scales_accept_1d_and_1xN():
    w = ref.random_weights(64, 8, seed=5)
    a = ref.dequantize(w["qweight"], w["scales"][0], w["zeros"][0])
    b = ref.dequantize(w["qweight"], w["scales"], w["zeros"])
    np.testing.assert_array_equal(a, b)


def test_matmul_with_bias_and_batch_dims():
    w = ref.random_weights(64, 16, group_size=32, seed=6)
    x = np.random.default_rng(0).standard_normal((2, 3, 64))
    bias = np.arange(16, dtype=np.float16)
    y = ref.matmul(x, w["qweight"], w["scales"], w["zeros"], bias=bias)
    W = ref.dequantize(w["qweight"], w["scales"], w["zeros"])
    np.testing.assert_allclose(y, x @ W + bias, rtol=1e-12)
    assert y.shape == (2, 3, 16)


def test_group_size_must_divide_k():
    with pytest.raises(Int4mmValueError):
        ref.group_size_of(96, np.zeros((5, 8)))
