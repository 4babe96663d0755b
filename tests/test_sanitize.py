"""A small representative subset for compute-sanitizer (memcheck, racecheck):
every kernel family once, small shapes with ragged edges.  Run by
tools/gpu_check.sh as `compute-sanitizer ... pytest -k sanitize`."""

import numpy as np
import pytest

import int4mm
from int4mm import reference as ref

from .conftest import TOL, framework, rel_err


@pytest.mark.parametrize("path", ["small_m", "large_m"])
@pytest.mark.parametrize("sparse,G", [(False, None), (False, 32), (True, None), (True, 64)])
@pytest.mark.parametrize("M", [1, 17, 130])
def test_sanitize_matmul(path, sparse, G, M):
    fw = framework("torch")
    K, N = 192, 40
    w = ref.random_weights(K, N, group_size=G, sparse=sparse, seed=M)
    x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float16)
    bias = np.random.default_rng(1).standard_normal(N).astype(np.float16)
    out = fw.poisoned((M, N))
    int4mm.matmul(fw.to_device(x), fw.to_device(w["qweight"]), fw.to_device(w["scales"]),
                  fw.to_device(w["zeros"]), mask=None if not sparse else fw.to_device(w["mask"]),
                  bias=fw.to_device(bias), out=out, path=path)
    expect = ref.matmul(x, w["qweight"], w["scales"], w["zeros"], w["mask"], bias=bias)
    assert rel_err(fw.to_host(out), expect) <= TOL


@pytest.mark.parametrize("path", ["small_m", "auto"])
@pytest.mark.parametrize("K,N,G,M", [(256, 48, 64, 1), (256, 48, None, 13), (512, 96, 128, 40),
                                     (5120, 5120, None, 1), (4096, 8192, 128, 1), (8192, 4096, None, 5),
                                     (4096, 8192, None, 12), (8192, 4096, 128, 16), (1024, 256, None, 100),
                                     (1024, 256, 128, 300), (16384, 4112, None, 40), (1024, 26640, 128, 40),
                                     (1024, 26640, None, 100), (1024, 256, None, 24), (2048, 256, 512, 3),
                                     (4096, 8960, 128, 3), (4096, 20480, None, 16), (8192, 28672, None, 2),
                                     (4096, 8192, 128, 12)])
def test_sanitize_prepared(K, N, G, M, path):
    """Prepared weights: the decode kernel (1, 2 and 4 groups of 8 rows;
    per-channel weights at M <= 8 through the register ring, on Hopper
    8192 x 4096 at M = 5 with K split over a 2-CTA cluster; grouped 16 MiB
    weights, which read the scale records, through the register ring where
    its grid is one balanced wave (4096 x 8192 at M = 1 on 132 SMs) and the
    shared-memory ring elsewhere (4096 x 8960 at M = 3); at M = 12 and 16
    every weight through the ring with x in it, except as below) and wgmma (M = 40 and 100: K tiles of 128; M = 300
    with K <= 4096 and few tiles: pingpong 64x256; per-channel 16384 x 4112
    at M = 40: the row sums of x and the scales in the epilogue; N = 26640 at
    M = 40 and 100: 256-column weight tiles; 1024 x 256 per-channel at M = 24:
    the decode kernel's two tiles of 16 rows; 2048 x 256 with G = 512 at
    M = 3: grouped codes with an offset, folded chunk by chunk; N = 8960,
    20480 and 28672: ring widths 5, 10 and 14 on the H200, the last
    per-channel at M = 2 on the ring instead of the register ring;
    4096 x 8192 with G = 128 at M = 12: grouped weights through the register
    ring with two row groups)."""
    fw = framework("torch")
    w = ref.random_weights(K, N, group_size=G, seed=M)
    p = int4mm.prepare(fw.to_device(w["qweight"]), fw.to_device(w["scales"]), fw.to_device(w["zeros"]))
    x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float16)
    bias = np.random.default_rng(1).standard_normal(N).astype(np.float16)
    out = fw.poisoned((M, N))
    int4mm.matmul(fw.to_device(x), p, bias=fw.to_device(bias), out=out, path=path)
    expect = ref.matmul(x, w["qweight"], w["scales"], w["zeros"], None, bias=bias)
    assert rel_err(fw.to_host(out), expect) <= TOL


def test_sanitize_packing():
    fw = framework("torch")
    K, N = 96, 24
    w = ref.random_weights(K, N, sparse=True, seed=5)
    qw = int4mm.pack_dense(fw.to_device(w["codes"]))
    np.testing.assert_array_equal(fw.to_host(int4mm.unpack_dense(qw)), w["codes"])
    q2, m2 = int4mm.pack_sparse(fw.to_device(w["codes"]), fw.to_device(w["keep"]))
    _codes, k = int4mm.unpack_sparse(q2, m2)
    np.testing.assert_array_equal(fw.to_host(k).astype(bool), w["keep"])
    bad = w["keep"].copy()
    bad[0, 0] = not bad[0, 0]
    with pytest.raises(int4mm.BadDataError):
        int4mm.pack_sparse(fw.to_device(w["codes"]), fw.to_device(bad))
