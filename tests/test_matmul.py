"""Every format x group size x dense/sparse x M x path against the float64
reference, with outputs poisoned before the kernel writes them."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import int4mm
from int4mm import reference as ref

from .conftest import TOL, framework, rel_err

M_VALUES = [1, 2, 3, 15, 16, 17, 64, 255, 2048]
GROUPS = [32, 64, 128, 256, None]  # None: per-channel
SHAPES = [(256, 8), (512, 24), (1024, 136), (2048, 1024)]  # (K, N): every G divides K


@functools.lru_cache(maxsize=8)
def problem(K, N, G, sparse, seed=0):
    """Random weights (host and device) and their float64 dequantization."""
    w = ref.random_weights(K, N, group_size=G, sparse=sparse, seed=seed + K + 3 * N)
    W = ref.dequantize(w["qweight"], w["scales"], w["zeros"], w["mask"])
    return w, W


def device_weights(fw, w):
    return (fw.to_device(w["qweight"]), fw.to_device(w["scales"]), fw.to_device(w["zeros"]),
            None if w["mask"] is None else fw.to_device(w["mask"]))


def reference_product(x, W, bias=None):
    """float64 x @ W (+ bias): the reference's dequantized W, multiplied on the
    GPU in float64 when torch is there (big shapes), else with numpy."""
    try:
        import torch

        y = (torch.from_numpy(x.astype(np.float64)).cuda() @ torch.from_numpy(W).cuda())
        y = y.cpu().numpy()
    except ImportError:
        y = x.astype(np.float64) @ W
    return y if bias is None else y + bias.astype(np.float64)


def check(fw, K, N, G, sparse, M, path="auto", bias=False, batch=None, seed=0):
    w, W = problem(K, N, G, sparse)
    rng = np.random.default_rng(seed + M)
    shape = (M, K) if batch is None else (*batch, K)
    x = rng.standard_normal(shape).astype(np.float16)
    b = rng.standard_normal(N).astype(np.float16) if bias else None
    qw, s, z, m = device_weights(fw, w)
    out = fw.poisoned(shape[:-1] + (N,))
    res = int4mm.matmul(fw.to_device(x), qw, s, z, mask=m, out=out, path=path,
                        bias=None if b is None else fw.to_device(b))
    assert res is out
    y = fw.to_host(out)
    assert not np.isnan(y).any(), "kernel left output cells unwritten (NaN poison survived)"
    expect = reference_product(x.reshape(-1, K), W, b).reshape(y.shape)
    err = rel_err(y, expect)
    assert err <= TOL, f"relative error {err:.2e} > {TOL} (K={K} N={N} G={G} M={M} {path})"
    return err


@pytest.mark.parametrize("M", M_VALUES)
@pytest.mark.parametrize("G", GROUPS, ids=lambda g: f"g{g or 'chan'}")
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("K,N", SHAPES, ids=lambda v: str(v))
def test_matmul_auto(K, N, G, sparse, M):
    check(framework("torch"), K, N, G, sparse, M)


@pytest.mark.parametrize("path", ["small_m", "large_m"])
@pytest.mark.parametrize("M", M_VALUES)
@pytest.mark.parametrize("G", [32, 128, None], ids=lambda g: f"g{g or 'chan'}")
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("K,N", [(256, 8), (1024, 136)], ids=lambda v: str(v))
def test_matmul_forced_path(K, N, G, sparse, M, path):
    check(framework("torch"), K, N, G, sparse, M, path=path)


@pytest.mark.parametrize("path", ["small_m", "large_m"])
@pytest.mark.parametrize("K,N", [(8, 8), (40, 16), (24, 8), (136, 40), (1000, 72)])
@pytest.mark.parametrize("M", [1, 5, 33])
def test_matmul_odd_dense_shapes(K, N, M, path):
    """K a multiple of 8 but not of 32/64, N a multiple of 8 but not of 64."""
    check(framework("torch"), K, N, None, False, M, path=path)


# the original project's benchmark shapes (K, N)
BENCH_SHAPES = [(16384, 16384), (8192, 28672), (28672, 8192), (8192, 8192),
                (5120, 20480), (20480, 5120), (5120, 5120), (1024, 1024)]


@pytest.mark.parametrize("G", [128, None], ids=lambda g: f"g{g or 'chan'}")
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("K,N", BENCH_SHAPES, ids=lambda v: str(v))
def test_matmul_benchmark_shapes(K, N, G, sparse):
    """Matrix-vector (M = 1) and matrix-matrix (M = 2048), as the original tables."""
    fw = framework("torch")
    for M in (1, 2048):
        check(fw, K, N, G, sparse, M, seed=1)
    problem.cache_clear()  # these weights are large: do not keep them


def test_bias_and_batch_dims():
    fw = framework("torch")
    check(fw, 256, 24, 64, False, 6, bias=True, batch=(2, 3))
    check(fw, 256, 24, None, True, 40, bias=True, batch=(2, 20))
    check(fw, 256, 24, None, False, 1, batch=())  # x of shape (K,) -> (N,)


def test_allocates_with_callers_library():
    fw = framework("torch")
    w, W = problem(256, 24, None, False)
    qw, s, z, _ = device_weights(fw, w)
    x = np.random.default_rng(2).standard_normal((5, 256)).astype(np.float16)
    y = int4mm.matmul(fw.to_device(x), qw, s, z)
    assert fw.is_native(y) and tuple(y.shape) == (5, 24)
    assert rel_err(fw.to_host(y), reference_product(x, W)) <= TOL


def test_m_zero_returns_empty():
    fw = framework("torch")
    w, _ = problem(256, 24, None, False)
    qw, s, z, _ = device_weights(fw, w)
    y = int4mm.matmul(fw.to_device(np.zeros((0, 256), np.float16)), qw, s, z)
    assert tuple(y.shape) == (0, 24)


def test_prepared_weight_matches_raw_and_round_trips(tmp_path):
    fw = framework("torch")
    w, W = problem(512, 24, 128, True)
    qw, s, z, m = device_weights(fw, w)
    p = int4mm.prepare(qw, s, z, m)
    assert (p.K, p.N, p.group_size, p.sparse) == (512, 24, 128, True)
    x = np.random.default_rng(3).standard_normal((7, 512)).astype(np.float16)
    y1 = fw.to_host(int4mm.matmul(fw.to_device(x), p))
    path = tmp_path / "w.npz"
    p.save(path)
    p2 = int4mm.PreparedWeight.load(path)
    y2 = fw.to_host(int4mm.matmul(fw.to_device(x), p2))
    np.testing.assert_array_equal(y1, y2)
    assert rel_err(y1, reference_product(x, W)) <= TOL


def test_chosen_path_depends_on_m():
    fw = framework("torch")
    w, _ = problem(1024, 136, None, False)
    p = int4mm.prepare(*device_weights(fw, w)[:3])
    assert int4mm.chosen_path(1, p) == "small_m"
    assert int4mm.chosen_path(4096, p) == "large_m"


def test_chosen_path_decode_rows_on_hopper():
    """With a wgmma-prepared weight AUTO takes the decode kernel up to 16 rows,
    and up to 32 for weights of less than 16 MiB of int4 (there it beat
    wgmma at M = 17-32 on the H200: NOTES v18)."""
    fw = framework("torch")  # skips without torch or a GPU, before _is_hopper() imports torch
    if not (_is_hopper() and "sm_90a" in int4mm.info()["compiled_targets"]):
        pytest.skip("needs an sm_90 GPU and a build with sm_90a code")
    cases = [((1024, 144, None), 32), ((1024, 128, 128), 32), ((4096, 8192, None), 16),  # 4096 x 8192: 16 MiB
             ((4096, 8192, 128), 16)]
    for (K, N, G), last in cases:
        w = ref.random_weights(K, N, group_size=G, seed=K + N)
        p = int4mm.prepare(*device_weights(fw, w)[:3])
        assert p.layout == "sm90-wgmma", p
        assert int4mm.chosen_path(last, p) == "small_m", (K, N, G, last)
        assert int4mm.chosen_path(last + 1, p) == "large_m", (K, N, G, last)


def _is_hopper():
    import torch

    return torch.cuda.get_device_capability() == (9, 0)


@pytest.mark.parametrize("path", ["auto", "small_m", "large_m"])
@pytest.mark.parametrize("M", [1, 2, 9, 16, 17, 32, 33, 64, 100, 128, 255, 256, 1000, 2048])
@pytest.mark.parametrize("G", [64, 128, None, 32], ids=lambda g: f"g{g or 'chan'}")
@pytest.mark.parametrize("K,N", [(1024, 128), (2048, 1040), (5120, 5120)], ids=lambda v: str(v))
def test_matmul_prepared(K, N, G, M, path):
    """Prepared weights: on Hopper these take the wgmma kernel above 16 rows
    (above 32 for weights under 16 MiB) and the decode kernel on
    the same prepared codes up to there, 17-32 rows as two tiles of 16
    (except G = 32, which neither supports and which must fall back, still
    correct).  Forcing small_m runs the decode kernel at every M (rows beyond
    32 loop)."""
    if path == "small_m" and M > 128:
        pytest.skip("decode kernel at large M: covered up to 128 rows")
    fw = framework("torch")
    w, W = problem(K, N, G, False)
    p = int4mm.prepare(*device_weights(fw, w)[:3])
    if _is_hopper() and "sm_90a" in int4mm.info()["compiled_targets"]:
        # One prepared copy: the wgmma section (needs G % 64 == 0), else the tiled one.
        assert p.layout == ("sm90-wgmma" if G != 32 else "small-m-tiled"), p
    else:
        assert p.layout == "small-m-tiled", p  # K and G multiples of 32: decode layout
    x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float16)
    b = np.random.default_rng(1).standard_normal(N).astype(np.float16)
    out = fw.poisoned((M, N))
    int4mm.matmul(fw.to_device(x), p, bias=fw.to_device(b), out=out, path=path)
    y = fw.to_host(out)
    assert not np.isnan(y).any(), "kernel left output cells unwritten"
    err = rel_err(y, reference_product(x, W, b))
    assert err <= TOL, f"relative error {err:.2e} (prepared {p.layout}, M={M}, {path})"


def check_rows_through_prepared(fw, K, N, G, ms, rng_seed):
    """A random K x N weight (group size G, seed K + N), prepared, against
    float64 at each M in ``ms`` rows of x (seeded by ``rng_seed``), with a
    bias (validated path) and without (fast path), into NaN-poisoned outputs.
    The weight is made here, not through problem()'s cache: these are large
    (their float64 dequantization is hundreds of MB)."""
    w = ref.random_weights(K, N, group_size=G, seed=K + N)
    W = ref.dequantize(w["qweight"], w["scales"], w["zeros"], None)
    p = int4mm.prepare(*device_weights(fw, w)[:3])
    rng = np.random.default_rng(rng_seed)
    xs = [rng.standard_normal((M, K)).astype(np.float16) for M in ms]
    b = rng.standard_normal(N).astype(np.float16)
    expect = np.split(reference_product(np.concatenate(xs), W), np.cumsum(ms)[:-1])
    del W
    for M, x, e in zip(ms, xs, expect):
        out = fw.poisoned((M, N))
        int4mm.matmul(fw.to_device(x), p, bias=fw.to_device(b), out=out)
        y = fw.to_host(out)
        assert not np.isnan(y).any(), f"kernel left output cells unwritten (M={M})"
        err = rel_err(y, e + b.astype(np.float64))
        assert err <= TOL, f"relative error {err:.2e} (prepared {p.layout}, {K}x{N}, M={M}, bias)"
        out = fw.poisoned((M, N))
        assert int4mm.matmul(fw.to_device(x), p, out=out) is out
        err = rel_err(fw.to_host(out), e)
        assert err <= TOL, f"relative error {err:.2e} (prepared {p.layout}, {K}x{N}, M={M})"


@pytest.mark.parametrize("K,N", [(16384, 4112), (11264, 6144)], ids=lambda v: str(v))
def test_matmul_prepared_per_channel_large(K, N):
    """Per-channel weights of more than 2^26 values at 17-64 rows: on Hopper
    the wgmma config that converts the codes only and applies the scale, the
    zero point (through the row sums of x) and the bias in its epilogue, with
    CUTLASS's stream-K (N = 4112, a ragged last tile) and split-K in two
    (N = 6144).  The random zero points are rarely 8, a few fractional, so
    the zero-point term carries weight.  With a bias and without (float64
    dequantization: 540 MB)."""
    check_rows_through_prepared(framework("torch"), K, N, None, (17, 33, 64), rng_seed=K)


@pytest.mark.parametrize("G", [64, 320, None], ids=lambda g: f"g{g or 'chan'}")
def test_matmul_prepared_k_not_multiple_of_128(G):
    """K = 4160 (260 k16 steps, not a multiple of 8) at 12 MiB and M <= 8:
    the decode defaults score their register-ring configs there, and only
    chunks of 4 k16 steps divide K (per-channel) or the group (G = 64, 320);
    before v23 the per-channel scores could pick chunks of 8, which the
    launch rejects as a bad config."""
    K, N = 4160, 6144
    check_rows_through_prepared(framework("torch"), K, N, G, (1, 4, 8), rng_seed=K + (G or 0))


@pytest.mark.parametrize("K,N,G", [(2560, 26640, None), (1024, 26640, None), (1024, 26640, 128)],
                         ids=lambda v: str(v))
def test_matmul_prepared_wide(K, N, G):
    """Weights with more than 1.5 waves of 128-column tiles (N = 26640: 209
    tiles, more than 1.5 x the SMs of any Hopper part) at 17-128 rows: on
    Hopper the wgmma configs with 256-column weight tiles (a ragged last tile
    of 16 columns), per-channel weights of more than 2^26 values with the
    scale in the epilogue (2560 x 26640 at M <= 64), the others with the
    scale in the mainloop (1024 x 26640, under 16 MiB, takes the decode
    kernel at M = 17).  With a bias and without (float64 dequantization: up
    to 546 MB)."""
    check_rows_through_prepared(framework("torch"), K, N, G, (17, 40, 64, 100, 128), rng_seed=K + 1)


@pytest.mark.parametrize("G", [64, 128, None], ids=lambda g: f"g{g or 'chan'}")
@pytest.mark.parametrize("K,N", [(4096, 8192), (8192, 4096), (2048, 16384)], ids=lambda v: str(v))
def test_matmul_prepared_large_decode(K, N, G):
    """Prepared weights of 16 MiB and more at M <= 16: on sm_80 and newer the
    decode kernel streams grouped weights (and every weight at M = 9-16)
    through a shared-memory ring (cp.async), with up to 16 column blocks per
    CTA and, on sm_90, K split over a cluster; at M = 9-16 the rows of x
    travel through the ring too (ldmatrix), rows past M as zeros; grouped
    4096 x 8192 at M = 9-16 takes the register ring instead where its grid
    of 128 CTAs is one wave over 90% of the SMs or more (H100, H200), and
    grouped weights at M <= 8 where the register ring's grid is one balanced
    wave (all three shapes here on 132 SMs; the grouped ring at M <= 8 runs in
    test_matmul_prepared_ring_widths).  Grouped weights read their scales
    from the prepared section's scale records (both rings).  Per-channel
    weights at M <= 8 take the register ring with its fitted defaults (rows
    of x past M read row 0 of the tile, their columns never stored).  The
    weight is made here, not through problem()'s cache: its float64
    dequantization is 268 MB."""
    fw = framework("torch")
    w = ref.random_weights(K, N, group_size=G, seed=K + 3 * N)
    W = ref.dequantize(w["qweight"], w["scales"], w["zeros"], None)
    p = int4mm.prepare(*device_weights(fw, w)[:3])
    ms = (1, 3, 8, 9, 13, 16)
    cases = []
    for M in ms:
        rng = np.random.default_rng(M + K)
        cases.append((rng.standard_normal((M, K)).astype(np.float16),
                      rng.standard_normal(N).astype(np.float16)))
    # One float64 reference product for all M (W goes to the GPU once), bias added per M.
    expect = np.split(reference_product(np.concatenate([x for x, _ in cases]), W),
                      np.cumsum(ms)[:-1])
    for M, (x, b), e in zip(ms, cases, expect):
        out = fw.poisoned((M, N))
        int4mm.matmul(fw.to_device(x), p, bias=fw.to_device(b), out=out)
        y = fw.to_host(out)
        assert not np.isnan(y).any(), f"kernel left output cells unwritten (M={M})"
        err = rel_err(y, e + b.astype(np.float64))
        assert err <= TOL, f"relative error {err:.2e} (prepared {p.layout}, {K}x{N}, G={G}, M={M})"


@pytest.mark.parametrize("G", [64, 128, 256, 1024, None], ids=lambda g: f"g{g or 'chan'}")
def test_matmul_prepared_offset_codes(G):
    """Prepared weights at decode row counts with x far from zero mean
    (standard normal + 4).  The decode kernel multiplies grouped codes (and
    per-channel ones in its 16-row ring kernels with chunks of 8 steps) as
    1.125 + (q - 8) / 64 and takes the offset back out with the sum of x
    every 8 k16 steps or fewer (grouped: in the fold, every chunk once a group
    is longer than 128; per-channel: at the end of each chunk): a wrong
    offset or a missed fold shows as an error that grows with that sum.  The
    decode harness (`X_DC=8 harness check`) runs every config this way."""
    fw = framework("torch")
    K, N = 4096, 1040
    w = ref.random_weights(K, N, group_size=G, seed=(G or K) + 5)
    W = ref.dequantize(w["qweight"], w["scales"], w["zeros"], None)
    p = int4mm.prepare(*device_weights(fw, w)[:3])
    for M in (1, 5, 16):
        x = (np.random.default_rng(M + (G or K)).standard_normal((M, K)) + 4.0).astype(np.float16)
        out = fw.poisoned((M, N))
        assert int4mm.matmul(fw.to_device(x), p, out=out) is out
        y = fw.to_host(out)
        assert not np.isnan(y).any(), f"kernel left output cells unwritten (M={M})"
        err = rel_err(y, reference_product(x, W))
        assert err <= TOL, f"relative error {err:.2e} (prepared {p.layout}, G={G}, M={M})"


def _sampled_columns(N, width):
    """Columns to check against float64 on large weights: one per 16-column
    block (its position within the block rotating), and every column of the
    first and last `width` (the first and last CTA's blocks)."""
    blocks = np.arange(N // 16)
    cols = set((16 * blocks + (5 * blocks) % 16).tolist())
    cols.update(range(width))
    cols.update(range(N - width, N))
    cols = sorted(cols)
    return np.array(cols[: len(cols) - len(cols) % 8])


# (K, N, G, rows): on a 132-SM Hopper GPU the decode defaults take 5, 7, 10
# or 14 column blocks per CTA at these row counts (H200: 8960 -> 5, 14336 ->
# 7, 20480 -> 10 and 5, 28672 -> 14 and 7; 8192 x 28672 per-channel at
# M <= 4: the shared-memory ring, 14).  Grouped weights at M <= 8 take the
# register ring with 5 or 7 blocks since v24, M = 9-16 the shared-memory
# ring (grouped 4096 x 14336 takes the register ring at M = 9-16 since v22:
# no case here; test_matmul_prepared_large_decode checks other grouped
# register-ring grids).
RING_WIDTH_CASES = [
    (4096, 8960, 128, (1, 3, 12, 16)),
    (4096, 8960, None, (12, 16)),
    (4096, 14336, None, (9, 16)),
    (4096, 20480, 128, (1, 8, 16)),
    (4096, 20480, None, (16,)),
    (4096, 28672, 128, (1, 13, 16)),
    (8192, 28672, None, (1, 2, 4, 16)),
]


@pytest.mark.parametrize("K,N,G,ms", RING_WIDTH_CASES,
                         ids=[f"{k}x{n}-g{g or 'chan'}" for k, n, g, _ in RING_WIDTH_CASES])
def test_matmul_prepared_ring_widths(K, N, G, ms):
    """Weights whose N / 16 has a factor 5 or 7: the decode kernel takes 5,
    7, 10 or 14 column blocks per CTA there (one wave of 128 or 256 CTAs):
    the shared-memory ring at M = 9-16 (benchmarks/NOTES.md v20), the
    register ring with 5 or 7 blocks for grouped weights at M <= 8 (v24), and
    per-channel weights at M <= 4 take the shared-memory ring instead of the
    register ring when it is 14 blocks wide with 64 or more k16 steps per
    warp.  Each row count's configuration comes from chosen_config; the
    outputs are checked against float64 on sampled columns (every block, and
    all of the first and last CTA's), every cell against the NaN poison.  On
    a 132-SM Hopper GPU every configuration here must use one of those widths
    (which ones depends on the DRAM bandwidth the device reports: the H200's
    are in the table)."""
    fw = framework("torch")
    w = ref.random_weights(K, N, group_size=G, seed=K + N + (G or 0))
    p = int4mm.prepare(*device_weights(fw, w)[:3])
    configs = {M: int4mm.chosen_config(M, p) for M in ms}
    cols = _sampled_columns(N, 16 * 16)
    W = ref.dequantize(w["qweight"][:, cols], w["scales"][:, cols], w["zeros"][:, cols], None)
    for M in ms:
        x = np.random.default_rng(M + N).standard_normal((M, K)).astype(np.float16)
        out = fw.poisoned((M, N))
        assert int4mm.matmul(fw.to_device(x), p, out=out) is out
        y = fw.to_host(out)
        assert not np.isnan(y).any(), f"kernel left output cells unwritten (M={M}, {configs[M]})"
        err = rel_err(y[:, cols], reference_product(x, W))
        assert err <= TOL, f"relative error {err:.2e} ({K}x{N}, G={G}, M={M}, {configs[M]})"
    if not (_is_hopper() and "sm_90a" in int4mm.info()["compiled_targets"]):
        pytest.skip("outputs checked; the ring widths are measured for sm_90 GPUs with an sm_90a build")
    import torch

    if torch.cuda.get_device_properties(0).multi_processor_count != 132:
        pytest.skip("outputs checked; the widths asserted here are for 132-SM Hopper GPUs")
    assert all(c is not None and c["nb"] in (5, 7, 10, 14) for c in configs.values()), configs
    # Grouped rows <= 8: the register ring (5 or 7 blocks); rows 9-16: the
    # shared-memory ring.
    assert all(c["stages"] == 0 and c["nb"] in (5, 7) for M, c in configs.items() if G is not None and M <= 8), configs
    assert all(c["stages"] > 0 for M, c in configs.items() if M > 8), configs
    # Per-channel rows <= 4 go to the shared-memory ring only with 14 blocks per CTA.
    assert all(c["stages"] > 0 and c["nb"] == 14 for M, c in configs.items() if G is None and M <= 4), configs


@pytest.mark.parametrize("M", [1, 12])
@pytest.mark.parametrize("K,N", [(2048, 2048), (4096, 8192)], ids=lambda v: str(v))
def test_matmul_decode_back_to_back(K, N, M):
    """On sm_90 the decode kernel is launched with programmatic dependent
    launch: it may start while the previous kernel of the stream still runs.
    It waits for that kernel before it reads x, the weights or anything else,
    and before it writes out; before the wait it only prefetches weights into
    L2.  Here every call directly follows a kernel that writes its weights (an
    in-place XOR that turns prepared weight A into B and back) or its x, and
    a kernel reads each call's output before the next call overwrites it.
    Back to back and with a synchronize after every step, the outputs must be
    identical (the kernel is deterministic), and weights A and B must give
    different outputs, both matching the float64 reference (2048^2)."""
    fw = framework("torch")
    torch = fw.t
    ws = [ref.random_weights(K, N, group_size=None, seed=K + N + s) for s in (1, 2)]
    pa = int4mm.prepare(*device_weights(fw, ws[0])[:3])
    pb = int4mm.prepare(*device_weights(fw, ws[1])[:3])
    if pa.prepared is None:
        pytest.skip(f"no prepared layout on this GPU ({pa.layout})")
    delta = torch.bitwise_xor(pa.prepared, pb.prepared)
    rng = np.random.default_rng(M + K)
    xs_host = [rng.standard_normal((M, K)).astype(np.float16) for _ in range(8)]
    xs = [fw.to_device(x) for x in xs_host]

    def run(sync):
        x, y = torch.empty_like(xs[0]), fw.poisoned((M, N))
        outs = [fw.poisoned((M, N)) for _ in xs]
        for i, src in enumerate(xs):
            steps = [lambda: pa.prepared.bitwise_xor_(delta), lambda s=src: torch.mul(s, 1.0, out=x)]
            for step in steps if i % 2 else steps[::-1]:  # the weights' writer or x's right before the call
                step()
                if sync:
                    torch.cuda.synchronize()
            int4mm.matmul(x, pa, out=y)
            if sync:
                torch.cuda.synchronize()
            torch.mul(y, 1.0, out=outs[i])  # read before the next call overwrites y
        return [fw.to_host(o) for o in outs]  # 8 XORs: pa holds weight A again

    back_to_back, synced = run(False), run(True)
    for i, (u, v) in enumerate(zip(back_to_back, synced)):
        assert not np.isnan(u).any(), f"call {i} left output cells unwritten"
        np.testing.assert_array_equal(u, v, err_msg=f"call {i}: back to back differs from synchronized")
    # call i used weight B for even i (one XOR before it), A for odd i
    if K * N <= 2048 * 2048:
        for i in (0, 1):
            w = ws[1 - i % 2]
            W = ref.dequantize(w["qweight"], w["scales"], w["zeros"], None)
            err = rel_err(synced[i], reference_product(xs_host[i], W))
            assert err <= TOL, f"call {i}: relative error {err:.2e}"
    b_out = fw.to_host(int4mm.matmul(xs[0], pb))
    a_out = fw.to_host(int4mm.matmul(xs[1], pa))
    np.testing.assert_array_equal(b_out, synced[0], err_msg="call 0 did not use weight B")
    np.testing.assert_array_equal(a_out, synced[1], err_msg="call 1 did not use weight A")
    assert rel_err(fw.to_host(int4mm.matmul(xs[0], pa)), b_out.astype(np.float64)) > 0.1, \
        "weights A and B give the same output"
