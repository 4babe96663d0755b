"""bfloat16 activations and outputs, with bfloat16 or float16 scales, on every
kernel family (CUDA-core decode, mma.sync decode / mid-M on raw and prepared
layouts, mma.sync tiles, Hopper wgmma), against the float64 reference.

bf16 keeps 8 significant bits, so a bf16 result is only as exact as its own
rounding (relative 2^-9 per value) plus the bf16 dequantized weights the
tensor cores multiply; TOL_BF16 allows for that and nothing more: a kernel
that dropped a group, a column or a k-block misses it by orders of magnitude.
"""

from __future__ import annotations

import numpy as np
import pytest

import int4mm
from int4mm import reference as ref

from .conftest import framework, have, jax_gpu, rel_err

TOL_BF16 = 1e-2


def torch_fw():
    return framework("torch")


def bf16_tensor(t, a):
    """A CUDA bf16 tensor holding the bf16 rounding of ``a``."""
    return t.from_numpy(np.ascontiguousarray(ref.bf16_round(a))).to(t.bfloat16).cuda()


def host(t, a):
    t.cuda.synchronize()
    return a.float().cpu().numpy()


def poisoned(t, shape, dtype):
    return t.full(shape, float("nan"), dtype=dtype, device="cuda")


def weights(K, N, G, sparse, scale_dtype, seed=0):
    """Random weights; scales/zeros as host float arrays holding ``scale_dtype`` values."""
    w = ref.random_weights(K, N, group_size=G, sparse=sparse, seed=seed + K + 7 * N)
    s = w["scales"].astype(np.float32)
    z = w["zeros"].astype(np.float32)
    if scale_dtype == "bfloat16":
        s, z = ref.bf16_round(s), ref.bf16_round(z)
    return w, s, z


def device_scales(t, s, z, scale_dtype):
    if scale_dtype == "bfloat16":
        return bf16_tensor(t, s), bf16_tensor(t, z)
    return (t.from_numpy(s.astype(np.float16)).cuda(), t.from_numpy(z.astype(np.float16)).cuda())


def expected(x32, w, s, z, bias=None):
    W = ref.dequantize(w["qweight"], s, z, w["mask"])
    y = x32.astype(np.float64) @ W
    return y if bias is None else y + bias.astype(np.float64)


def run_raw(K, N, G, sparse, M, path="auto", scale_dtype="bfloat16", bias_dtype=None, seed=0):
    fw = torch_fw()
    t = fw.t
    w, s, z = weights(K, N, G, sparse, scale_dtype, seed)
    rng = np.random.default_rng(seed + M)
    x32 = ref.bf16_round(rng.standard_normal((M, K)).astype(np.float32))
    b32 = None
    bias = None
    if bias_dtype is not None:
        b32 = rng.standard_normal(N).astype(np.float32)
        if bias_dtype == "bfloat16":
            b32 = ref.bf16_round(b32)
            bias = bf16_tensor(t, b32)
        else:
            b32 = b32.astype(np.float16).astype(np.float32)
            bias = t.from_numpy(b32.astype(np.float16)).cuda()
    sd, zd = device_scales(t, s, z, scale_dtype)
    out = poisoned(t, (M, N), t.bfloat16)
    res = int4mm.matmul(bf16_tensor(t, x32), fw.to_device(w["qweight"]), sd, zd,
                        mask=None if w["mask"] is None else fw.to_device(w["mask"]),
                        bias=bias, out=out, path=path)
    assert res is out and res.dtype == t.bfloat16
    y = host(t, out)
    assert not np.isnan(y).any(), "kernel left output cells unwritten (NaN poison survived)"
    err = rel_err(y, expected(x32, w, s, z, b32))
    assert err <= TOL_BF16, f"relative error {err:.2e} (K={K} N={N} G={G} M={M} {path})"
    return err


@pytest.mark.parametrize("M", [1, 2, 5, 16, 33, 130, 300])
@pytest.mark.parametrize("G", [32, 128, None], ids=lambda g: f"g{g or 'chan'}")
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("path", ["auto", "small_m", "large_m"])
def test_bf16_raw(path, sparse, G, M):
    run_raw(512, 136, G, sparse, M, path=path)


@pytest.mark.parametrize("G", [8, 24, 40], ids=lambda g: f"g{g}")
@pytest.mark.parametrize("M", [1, 9, 200])
def test_bf16_raw_odd_groups(G, M):
    """Group sizes that are not multiples of 32: the CUDA-core decode kernel and
    the tile kernel."""
    run_raw(120 if G != 8 else 64, 40, G, False, M)


@pytest.mark.parametrize("bias_dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("scale_dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("M", [1, 64, 257])
def test_bf16_scale_and_bias_dtypes(scale_dtype, bias_dtype, M):
    """float16 scales/zeros/bias are converted for bf16 activations."""
    run_raw(256, 64, 64, False, M, scale_dtype=scale_dtype, bias_dtype=bias_dtype)


def test_bf16_is_not_fp16():
    """The bf16 path must really read bf16: the same bits read as fp16 would be
    garbage, so a kernel that ignored the dtype fails this check."""
    fw = torch_fw()
    t = fw.t
    w, s, z = weights(256, 32, 64, False, "bfloat16")
    x32 = ref.bf16_round(np.random.default_rng(3).standard_normal((4, 256)).astype(np.float32))
    y = int4mm.matmul(bf16_tensor(t, x32), fw.to_device(w["qweight"]),
                      *device_scales(t, s, z, "bfloat16"))
    assert y.dtype == t.bfloat16
    assert rel_err(host(t, y), expected(x32, w, s, z)) <= TOL_BF16


# ---------------------------------------------------------------- prepared weights


@pytest.mark.parametrize("M", [1, 8, 16, 40, 64, 100, 200, 1024])
@pytest.mark.parametrize("G", [128, None], ids=lambda g: f"g{g or 'chan'}")
@pytest.mark.parametrize("scale_dtype", ["bfloat16", "float16"])
def test_bf16_prepared(scale_dtype, G, M):
    """Prepared for bf16 (tiled decode layout and, on Hopper, the wgmma layout),
    called through the torch fast path (out=) and the validated path (bias)."""
    fw = torch_fw()
    t = fw.t
    K, N = 1024, 256
    w, s, z = weights(K, N, G, False, scale_dtype, seed=11)
    sd, zd = device_scales(t, s, z, scale_dtype)
    pw = int4mm.prepare(fw.to_device(w["qweight"]), sd, zd, dtype="bfloat16")
    assert pw.dtype == "bfloat16"
    s_used = ref.bf16_round(s)  # float16 scales were converted to bf16 once
    z_used = ref.bf16_round(z)
    rng = np.random.default_rng(M)
    x32 = ref.bf16_round(rng.standard_normal((M, K)).astype(np.float32))
    out = poisoned(t, (M, N), t.bfloat16)
    assert int4mm.matmul(bf16_tensor(t, x32), pw, out=out) is out
    y = host(t, out)
    assert not np.isnan(y).any()
    assert rel_err(y, expected(x32, w, s_used, z_used)) <= TOL_BF16
    b32 = ref.bf16_round(rng.standard_normal(N).astype(np.float32))
    y2 = int4mm.matmul(bf16_tensor(t, x32), pw, bias=bf16_tensor(t, b32))
    assert rel_err(host(t, y2), expected(x32, w, s_used, z_used, b32)) <= TOL_BF16


def prepared_bf16(K, N, G, seed):
    """Random weights with bf16 scales, prepared for bf16: (torch, w, s, z, prepared)."""
    fw = torch_fw()
    t = fw.t
    w, s, z = weights(K, N, G, False, "bfloat16", seed=seed)
    sd, zd = device_scales(t, s, z, "bfloat16")
    return t, w, s, z, int4mm.prepare(fw.to_device(w["qweight"]), sd, zd, dtype="bfloat16")


def call_with_bias(t, pw, M, K, N):
    """Random bf16 x (M rows, seeded by M) and bias through ``pw`` into a
    NaN-poisoned out: (x, bias, y) as float32 host arrays."""
    rng = np.random.default_rng(M)
    x32 = ref.bf16_round(rng.standard_normal((M, K)).astype(np.float32))
    b32 = ref.bf16_round(rng.standard_normal(N).astype(np.float32))
    out = poisoned(t, (M, N), t.bfloat16)
    int4mm.matmul(bf16_tensor(t, x32), pw, bias=bf16_tensor(t, b32), out=out)
    return x32, b32, host(t, out)


@pytest.mark.parametrize("G", [64, 256, 1024])
def test_bf16_prepared_grouped_offset_codes(G):
    """Grouped bf16 weights at decode row counts with x far from zero mean
    (standard normal + 4): the decode kernel's bf16 codes are
    1.0625 + (q - 8) / 128, the offset taken back out per fold with the sum
    of x (test_matmul.py: the fp16 twin, test_matmul_prepared_offset_codes)."""
    K, N = 4096, 1040
    t, w, s, z, pw = prepared_bf16(K, N, G, seed=5)
    for M in (1, 5, 16):
        rng = np.random.default_rng(M + G)
        x32 = ref.bf16_round((rng.standard_normal((M, K)) + 4.0).astype(np.float32))
        out = poisoned(t, (M, N), t.bfloat16)
        assert int4mm.matmul(bf16_tensor(t, x32), pw, out=out) is out
        y = host(t, out)
        assert not np.isnan(y).any()
        err = rel_err(y, expected(x32, w, s, z))
        assert err <= TOL_BF16, f"relative error {err:.2e} (G={G}, M={M})"


def test_bf16_prepared_per_channel_large():
    """Per-channel, more than 2^26 values, 17-64 rows: on Hopper the wgmma
    config with the scale, zero point and bias applied in the epilogue, in
    bf16."""
    K, N = 16384, 4112
    t, w, s, z, pw = prepared_bf16(K, N, None, seed=5)
    W = ref.dequantize(w["qweight"], s, z, None)
    for M in (24, 64):
        x32, b32, y = call_with_bias(t, pw, M, K, N)
        assert not np.isnan(y).any()
        e = x32.astype(np.float64) @ W + b32.astype(np.float64)
        assert rel_err(y, e) <= TOL_BF16, f"M={M}"


@pytest.mark.parametrize("G", [128, None], ids=lambda g: f"g{g or 'chan'}")
def test_bf16_prepared_wide(G):
    """More than 1.5 waves of 128-column tiles (N = 26640) at 17-128 rows: on
    Hopper the wgmma configs with 256-column weight tiles, in bf16."""
    K, N = 2560, 26640
    t, w, s, z, pw = prepared_bf16(K, N, G, seed=7)
    W = ref.dequantize(w["qweight"], s, z, None)
    for M in (24, 64, 100):
        x32, b32, y = call_with_bias(t, pw, M, K, N)
        assert not np.isnan(y).any()
        e = x32.astype(np.float64) @ W + b32.astype(np.float64)
        assert rel_err(y, e) <= TOL_BF16, f"M={M}"


@pytest.mark.parametrize("M", [1, 6, 11, 16])
@pytest.mark.parametrize("G", [128, None], ids=lambda g: f"g{g or 'chan'}")
def test_bf16_prepared_large_decode(G, M):
    """A 16 MiB weight at M <= 16: the shared-memory-ring decode kernel in bf16
    (x through the ring from 9 rows)."""
    K, N = 8192, 4096
    t, w, s, z, pw = prepared_bf16(K, N, G, seed=3)
    x32, b32, y = call_with_bias(t, pw, M, K, N)
    assert not np.isnan(y).any()
    assert rel_err(y, expected(x32, w, s, z, b32)) <= TOL_BF16


def test_bf16_dtype_mismatches_are_refused():
    fw = torch_fw()
    t = fw.t
    w, s, z = weights(256, 64, 64, False, "bfloat16")
    qw = fw.to_device(w["qweight"])
    s16, z16 = device_scales(t, s, z, "float16")
    sb, zb = device_scales(t, s, z, "bfloat16")
    x16 = t.randn(4, 256, device="cuda", dtype=t.float16)
    xb = x16.to(t.bfloat16)
    pw16 = int4mm.prepare(qw, s16, z16)
    assert pw16.dtype == "float16"
    with pytest.raises(int4mm.Int4mmTypeError, match="prepared for float16"):
        int4mm.matmul(xb, pw16)
    with pytest.raises(int4mm.Int4mmTypeError, match="bfloat16 values cannot serve float16"):
        int4mm.matmul(x16, qw, sb, zb)
    with pytest.raises(int4mm.Int4mmTypeError, match="bfloat16 values cannot serve float16"):
        int4mm.prepare(qw, sb, zb, dtype="float16")
    with pytest.raises(int4mm.Int4mmTypeError, match="zeros: dtype"):
        int4mm.matmul(xb, qw, sb, z16)
    with pytest.raises(int4mm.Int4mmTypeError, match="out"):
        int4mm.matmul(xb, qw, sb, zb, out=t.empty(4, 64, device="cuda", dtype=t.float16))
    with pytest.raises(int4mm.Int4mmTypeError, match="dtype"):
        int4mm.prepare(qw, sb, zb, dtype="float32")


def test_bf16_act_order():
    """bf16 activations gathered for an act-order weight."""
    fw = torch_fw()
    t = fw.t
    K, N, G = 256, 64, 64
    w, s, z = weights(K, N, G, False, "bfloat16", seed=5)
    perm = np.random.default_rng(1).permutation(K).astype(np.int32)
    sd, zd = device_scales(t, s, z, "bfloat16")
    pw = int4mm.prepare(fw.to_device(w["qweight"]), sd, zd, perm=fw.to_device(perm))
    x32 = ref.bf16_round(np.random.default_rng(2).standard_normal((3, K)).astype(np.float32))
    y = int4mm.matmul(bf16_tensor(t, x32), pw)
    assert rel_err(host(t, y), expected(x32[:, perm], w, s, z)) <= TOL_BF16


# ---------------------------------------------------------------- quantizer, cast


@pytest.mark.parametrize("sparse,G", [(False, 128), (False, None), (True, 64)])
def test_bf16_quantize_matches_reference_bit_for_bit(sparse, G):
    fw = torch_fw()
    t = fw.t
    K, N = 256, 48
    w32 = ref.bf16_round(np.random.default_rng(7).standard_normal((K, N)).astype(np.float32))
    q = int4mm.quantize(bf16_tensor(t, w32), group_size=G, sparse=sparse)
    assert q.dtype == "bfloat16" and q.scales.dtype == t.bfloat16
    r = ref.quantize_rtn(w32, group_size=G, sparse=sparse, dtype="bfloat16")
    np.testing.assert_array_equal(host(t, q.scales), r["scales"])
    np.testing.assert_array_equal(host(t, q.zeros), r["zeros"])
    np.testing.assert_array_equal(q.qweight.cpu().numpy(), r["qweight"])
    if sparse:
        np.testing.assert_array_equal(q.mask.cpu().numpy(), r["mask"])


def test_bf16_cast_matches_torch():
    fw = torch_fw()
    t = fw.t
    a = (t.randn(4097, device="cuda") * 100).to(t.float16)
    b = t.empty(4097, device="cuda", dtype=t.bfloat16)
    nat = int4mm._arrays.native()
    nat.cast(nat.view(a, "a"), nat.view(b, "b"), 0, t.cuda.current_stream().cuda_stream)
    t.cuda.synchronize()
    assert t.equal(b, a.to(t.bfloat16))


# ---------------------------------------------------------------- torch module, JAX


def test_bf16_int4linear():
    fw = torch_fw()
    t = fw.t
    from int4mm.torch import Int4Linear

    lin = t.nn.Linear(256, 128, bias=True).cuda().to(t.bfloat16)
    m = Int4Linear.from_linear(lin, group_size=64)
    assert m.scales.dtype == t.bfloat16
    x = t.randn(5, 256, device="cuda", dtype=t.bfloat16)
    y = m(x)
    assert y.dtype == t.bfloat16
    s = m.scales.float().cpu().numpy()
    z = m.zeros.float().cpu().numpy()
    W = ref.dequantize(m.qweight.cpu().numpy(), s, z)
    expect = x.double().cpu().numpy() @ W + m.bias.double().cpu().numpy()
    assert rel_err(host(t, y), expect) <= TOL_BF16
    # float16 buffers serving bf16 activations (scales converted once, cached)
    m16 = Int4Linear.from_quantized(m.qweight, m.scales.to(t.float16), m.zeros.to(t.float16),
                                    bias=m.bias.to(t.float16))
    assert m16.scales.dtype == t.float16
    y16 = m16(x)
    assert y16.dtype == t.bfloat16
    assert rel_err(host(t, y16), expect) <= TOL_BF16
    # and the module converted as a whole
    mb = m16.to(t.bfloat16)
    assert rel_err(host(t, mb(x)), expect) <= TOL_BF16


@pytest.mark.skipif(not have("jax"), reason="jax is not installed")
def test_bf16_jax():
    torch_fw()  # GPU gate (and the reference weights go through torch)
    jax, jnp, gpu = jax_gpu()
    K, N = 256, 64
    w, s, z = weights(K, N, 64, False, "bfloat16", seed=9)
    x32 = ref.bf16_round(np.random.default_rng(4).standard_normal((3, K)).astype(np.float32))
    put = lambda a, dt=None: jax.device_put(jnp.asarray(a, dtype=dt), gpu)
    y = int4mm.matmul(put(x32, jnp.bfloat16), put(w["qweight"]), put(s, jnp.bfloat16),
                      put(z, jnp.bfloat16))
    assert isinstance(y, jax.Array) and y.dtype == jnp.bfloat16
    got = np.asarray(jnp.asarray(y, dtype=jnp.float32))
    assert rel_err(got, expected(x32, w, s, z)) <= TOL_BF16


# ---------------------------------------------------------------- sanitizer subset


@pytest.mark.parametrize("path", ["small_m", "large_m"])
@pytest.mark.parametrize("sparse,G", [(False, None), (True, 64), (False, 24)])
@pytest.mark.parametrize("M", [1, 130])
def test_sanitize_bf16_matmul(path, sparse, G, M):
    K = 192 if G != 24 else 120
    run_raw(K, 40, G, sparse, M, path=path, bias_dtype="bfloat16")


@pytest.mark.parametrize("M", [1, 13, 300])
def test_sanitize_bf16_prepared(M):
    fw = torch_fw()
    t = fw.t
    K, N = 256, 64
    w, s, z = weights(K, N, 64, False, "bfloat16", seed=2)
    pw = int4mm.prepare(fw.to_device(w["qweight"]), *device_scales(t, s, z, "bfloat16"))
    x32 = ref.bf16_round(np.random.default_rng(M).standard_normal((M, K)).astype(np.float32))
    out = poisoned(t, (M, N), t.bfloat16)
    int4mm.matmul(bf16_tensor(t, x32), pw, out=out)
    assert rel_err(host(t, out), expected(x32, w, s, z)) <= TOL_BF16


@pytest.mark.skipif(not have("ml_dtypes"), reason="ml_dtypes is not installed")
def test_bf16_prepared_save_load(tmp_path):
    fw = torch_fw()
    t = fw.t
    K, N = 256, 64
    w, s, z = weights(K, N, 64, False, "float16", seed=3)
    pw = int4mm.prepare(fw.to_device(w["qweight"]), *device_scales(t, s, z, "float16"),
                        dtype="bfloat16")
    path = tmp_path / "w.npz"
    pw.save(path)
    back = int4mm.PreparedWeight.load(path)
    assert back.dtype == "bfloat16"
    x = t.randn(3, K, device="cuda", dtype=t.bfloat16)
    assert t.equal(int4mm.matmul(x, pw), int4mm.matmul(x, back))
