"""GPTQ checkpoints: qzeros unpacking (v1/v2), symmetric, act-order (g_idx),
from dicts and safetensors files.  CPU: the loader against
reference.dequantize_gptq (FORMATS.md's formula, no permutation).  GPU:
load_gptq + matmul against the same oracle on the original tensors."""

from __future__ import annotations

import numpy as np
import pytest

import int4mm
from int4mm import reference as ref
from int4mm.errors import Int4mmTypeError, Int4mmValueError
from int4mm.gptq import gptq_arrays

from .conftest import TOL, framework, rel_err

CASES = [(ao, sym, zs) for ao in (False, True) for sym in (False, True) for zs in ("v1", "v2")]


def _oracle(g, zs, sym, x):
    return x.astype(np.float64) @ ref.dequantize_gptq(
        g["qweight"], None if sym else g["qzeros"], g["scales"], g["g_idx"], zs)


def _loaded(h, x):
    xp = x if h["perm"] is None else x[..., h["perm"]]
    y = ref.matmul(xp, h["qweight"], h["scales"], h["zeros"])
    return y if h["bias"] is None else y + h["bias"].astype(np.float64)


def test_qzeros_pack_unpack():
    z = np.arange(16 * 8).reshape(8, 16) % 16
    for zs in ("v1", "v2"):
        back = ref.unpack_gptq_zeros(ref.pack_gptq_zeros(z, zs), zs)
        expect = np.where(z == 0, 16, z) if zs == "v1" else z  # v1 cannot store 0: wraps to 16
        assert np.array_equal(back, expect)
    # nibble order: column 8j + i in bits 4i..4i+3 of word j
    qz = np.array([[0x76543210]], dtype=np.uint32).view(np.int32)
    assert np.array_equal(ref.unpack_gptq_zeros(qz, "v2")[0], np.arange(8))


@pytest.mark.parametrize("act_order,sym,zs", CASES)
def test_loader_matches_formula(act_order, sym, zs):
    K, N, G = 256, 64, 32
    g = ref.random_gptq(K, N, G, act_order=act_order, sym=sym, zero_storage=zs, seed=2)
    h = gptq_arrays(g, zero_storage=zs, sym=sym or None)
    assert (h["perm"] is not None) == act_order
    assert h["zeros"].shape == (K // G, N) and h["zeros"].dtype == np.float16
    if sym:
        assert (h["zeros"] == 8).all()
    x = np.random.default_rng(0).standard_normal((3, K))
    y = _loaded(h, x)
    expect = _oracle(g, zs, sym, x)
    assert np.abs(y - expect).max() <= 1e-9 * np.abs(expect).max()


def test_prefix_bias_torch_tensors_and_sym_without_qzeros():
    torch = pytest.importorskip("torch")
    g = ref.random_gptq(128, 32, 64, sym=True)
    bias = np.linspace(-1, 1, 32).astype(np.float16)
    d = {f"model.layers.0.mlp.up_proj.{k}": torch.from_numpy(v) for k, v in g.items()
         if k != "qzeros"}
    d["model.layers.0.mlp.up_proj.bias"] = torch.from_numpy(bias)
    h = gptq_arrays(d, "model.layers.0.mlp.up_proj")
    assert (h["zeros"] == 8).all() and np.array_equal(h["bias"], bias)
    with pytest.raises(Int4mmValueError, match="qzeros"):
        gptq_arrays(d, "model.layers.0.mlp.up_proj", sym=False)


def test_errors_name_the_tensor():
    g = ref.random_gptq(128, 32, 32, act_order=True)
    with pytest.raises(Int4mmValueError, match="no tensor 'layer.qweight'.*up.qweight"):
        gptq_arrays({"up." + k: v for k, v in g.items()}, "layer")
    bad = dict(g, g_idx=np.zeros(128, dtype=np.int32))
    with pytest.raises(Int4mmValueError, match="g_idx: group 0 has 128 rows"):
        gptq_arrays(bad)
    with pytest.raises(Int4mmValueError, match="zero_storage"):
        gptq_arrays(g, zero_storage="v3")
    with pytest.raises(Int4mmTypeError, match="tensors_or_path"):
        gptq_arrays(42)


def test_safetensors_file(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    g = ref.random_gptq(256, 48, 128, act_order=True, zero_storage="v2")
    path = tmp_path / "model.safetensors"
    st.save_file({f"blk.{k}": v for k, v in g.items()} | {"other.weight": np.ones(3, np.float16)},
                 str(path))
    h = gptq_arrays(path, "blk", zero_storage="v2")
    x = np.random.default_rng(5).standard_normal((2, 256))
    assert np.allclose(_loaded(h, x), _oracle(g, "v2", False, x), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- GPU

@pytest.mark.parametrize("act_order,sym,zs", CASES)
@pytest.mark.parametrize("M", [1, 7, 64])
def test_gpu_load_gptq_matches_original(act_order, sym, zs, M):
    fw = framework("torch")
    K, N, G = 1024, 256, 128
    g = ref.random_gptq(K, N, G, act_order=act_order, sym=sym, zero_storage=zs, seed=M)
    w, bias = int4mm.load_gptq(g, zero_storage=zs, sym=sym or None)
    assert bias is None and (w.perm is not None) == act_order
    x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float16)
    y = fw.to_host(int4mm.matmul(fw.to_device(x), w))
    assert rel_err(y, _oracle(g, zs, sym, x)) <= TOL


def test_gpu_act_order_raw_perm_save_load_and_validation(tmp_path):
    fw = framework("torch")
    K, N = 512, 128
    g = ref.random_gptq(K, N, 64, act_order=True, seed=9)
    h = gptq_arrays(g)
    dev = {k: fw.to_device(h[k]) for k in ("qweight", "scales", "zeros", "perm")}
    x = np.random.default_rng(1).standard_normal((4, 3, K)).astype(np.float16)
    expect = _oracle(g, "v1", False, x)
    y = int4mm.matmul(fw.to_device(x), dev["qweight"], dev["scales"], dev["zeros"],
                      perm=dev["perm"])
    assert rel_err(fw.to_host(y), expect) <= TOL
    w = int4mm.prepare(dev["qweight"], dev["scales"], dev["zeros"], perm=dev["perm"])
    w.save(tmp_path / "w.npz")
    w2 = int4mm.PreparedWeight.load(tmp_path / "w.npz")
    assert w2.perm is not None
    assert rel_err(fw.to_host(int4mm.matmul(fw.to_device(x), w2)), expect) <= TOL
    bad = h["perm"].copy()
    bad[0] = bad[1]
    with pytest.raises(Int4mmValueError, match="perm: not a permutation"):
        int4mm.prepare(dev["qweight"], dev["scales"], dev["zeros"], perm=fw.to_device(bad))


def test_gpu_safetensors_with_bias(tmp_path):
    fw = framework("torch")
    st = pytest.importorskip("safetensors.numpy")
    g = ref.random_gptq(256, 64, 32, act_order=True, seed=4)
    bias = np.linspace(-1, 1, 64).astype(np.float16)
    path = tmp_path / "m.safetensors"
    st.save_file({f"l.{k}": v for k, v in g.items()} | {"l.bias": bias}, str(path))
    w, b = int4mm.load_gptq(path, "l")
    x = np.random.default_rng(0).standard_normal((9, 256)).astype(np.float16)
    y = fw.to_host(int4mm.matmul(fw.to_device(x), w, bias=b))
    assert rel_err(y, _oracle(g, "v1", False, x) + bias) <= TOL
