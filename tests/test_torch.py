"""int4mm.torch: Int4Linear, replace_linear and the int4mm::matmul custom op.

CPU (torch installed): state_dict format and round trip, constructors,
extra_repr, opcheck and a fullgraph trace (the CPU op runs the numpy
reference).  GPU: results vs the reference, torch.compile(fullgraph=True),
CUDA graphs, streams, cache invalidation, the MLP block end to end.
"""

from __future__ import annotations

import numpy as np
import pytest

from int4mm import reference as ref

from .conftest import TOL, framework, rel_err

torch = pytest.importorskip("torch")
it = pytest.importorskip("int4mm.torch")
nn = torch.nn


def _linear(K, N, bias=True, seed=0, device="cpu"):
    torch.manual_seed(seed)
    return nn.Linear(K, N, bias=bias).half().to(device)


def _expect(m, x):
    """float64 reference of Int4Linear m on x (numpy), from its own buffers."""
    def host(t):  # bf16 has no numpy type: floating buffers go through float64
        t = t.detach().cpu()
        return (t.double() if t.is_floating_point() else t).numpy()

    b = {k: None if getattr(m, k) is None else host(getattr(m, k))
         for k in ("qweight", "scales", "zeros", "mask", "perm", "bias")}
    xs = x if b["perm"] is None else x[..., b["perm"]]
    return ref.matmul(xs, b["qweight"], b["scales"], b["zeros"], b["mask"], b["bias"])


# ---------------------------------------------------------------- CPU

@pytest.mark.parametrize("sparse", [False, True])
def test_state_dict_format_and_round_trip(sparse):
    m = it.Int4Linear.from_linear(_linear(128, 48), group_size=32, sparse=sparse)
    sd = m.state_dict()
    expect = {"qweight": ((128 // (16 if sparse else 8), 48), torch.int32),
              "scales": ((4, 48), torch.float16), "zeros": ((4, 48), torch.float16),
              "bias": ((48,), torch.float16)}
    if sparse:
        expect["mask"] = ((4, 48), torch.int32)
    assert {k: (tuple(v.shape), v.dtype) for k, v in sd.items()} == expect
    m2 = it.Int4Linear(128, 48, group_size=32, sparse=sparse)
    m2.load_state_dict(sd)
    x = torch.randn(2, 128, dtype=torch.float16)
    assert torch.equal(m(x), m2(x))
    assert "group_size=32" in repr(m2) and f"sparse={sparse}" in repr(m2)


def test_from_linear_cpu_is_the_reference_quantizer():
    lin = _linear(256, 64)
    m = it.Int4Linear.from_linear(lin, group_size=64)
    r = ref.quantize_rtn(lin.weight.detach().numpy().T, group_size=64)
    assert np.array_equal(m.qweight.numpy(), r["qweight"])
    assert np.array_equal(m.scales.numpy(), r["scales"])
    x = np.random.default_rng(0).standard_normal((3, 256)).astype(np.float16)
    y = m(torch.from_numpy(x)).numpy()
    assert rel_err(y, _expect(m, x)) <= TOL


def test_from_gptq_act_order_cpu():
    g = ref.random_gptq(256, 64, 64, act_order=True, seed=3)
    m = it.Int4Linear.from_gptq(g)
    assert m.perm is not None and "act_order=True" in repr(m)
    x = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float16)
    expect = x.astype(np.float64) @ ref.dequantize_gptq(g["qweight"], g["qzeros"], g["scales"],
                                                        g["g_idx"])
    assert rel_err(m(torch.from_numpy(x)).numpy(), expect) <= TOL
    m2 = it.Int4Linear(256, 64, bias=False, group_size=64, act_order=True)
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m2.perm, m.perm)


def test_load_state_dict_refuses_bad_mask_and_perm():
    m = it.Int4Linear.from_linear(_linear(64, 16), group_size=32, sparse=True)
    sd = m.state_dict()
    sd["mask"] = torch.zeros_like(sd["mask"])
    with pytest.raises(Exception, match="keeps 0 weights"):
        it.Int4Linear(64, 16, group_size=32, sparse=True).load_state_dict(sd)
    m = it.Int4Linear(64, 16, group_size=32, act_order=True)
    sd = m.state_dict()
    sd["perm"] = torch.zeros(64, dtype=torch.int32)
    with pytest.raises(Exception, match="perm: not a permutation"):
        m.load_state_dict(sd)


def test_opcheck_cpu():
    m = it.Int4Linear.from_linear(_linear(64, 16), group_size=32)
    x = torch.randn(3, 64, dtype=torch.float16)
    torch.library.opcheck(torch.ops.int4mm.matmul.default,
                          (x, m.qweight, m.scales, m.zeros, None, m.bias, None, 32))


def test_opcheck_bf16_cpu():
    lin = nn.Linear(64, 16, bias=True).to(torch.bfloat16)
    m = it.Int4Linear.from_linear(lin, group_size=32)
    assert m.scales.dtype == torch.bfloat16 and m.bias.dtype == torch.bfloat16
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    torch.library.opcheck(torch.ops.int4mm.matmul.default,
                          (x, m.qweight, m.scales, m.zeros, None, m.bias, None, 32))
    y = m(x)
    assert y.dtype == torch.bfloat16
    expect = _expect(m, x.double().numpy())
    assert rel_err(y.float().numpy(), expect) <= 1e-2


def test_compile_fullgraph_traces_without_breaks_cpu():
    model = nn.Sequential(_linear(64, 32), nn.ReLU(), _linear(32, 16))
    it.replace_linear(model, group_size=32, progress=False)
    x = torch.randn(4, 64, dtype=torch.float16)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x), model(x))


def test_replace_linear_filter_and_progress(capsys):
    model = nn.Sequential(nn.Linear(64, 32), nn.Linear(32, 12), nn.Linear(32, 16).half())
    model[1] = nn.Linear(32, 12)  # N = 12: not eligible
    model = nn.Sequential(model, nn.Linear(64, 64))
    it.replace_linear(model, filter=lambda name, m: name != "1", group_size=32)
    assert isinstance(model[0][0], it.Int4Linear) and isinstance(model[0][2], it.Int4Linear)
    assert type(model[0][1]) is nn.Linear and type(model[1]) is nn.Linear
    out = capsys.readouterr()
    assert "2/2" in out.out or "2/2" in out.err


# ---------------------------------------------------------------- GPU

@pytest.mark.parametrize("kind", ["dense", "sparse", "act_order", "per_channel"])
@pytest.mark.parametrize("M", [1, 33])
def test_gpu_forward_matches_reference(kind, M):
    framework("torch")
    if kind == "act_order":
        m = it.Int4Linear.from_gptq(ref.random_gptq(512, 128, 128, act_order=True), device="cuda")
    else:
        m = it.Int4Linear.from_linear(_linear(512, 128, device="cuda"),
                                      group_size=None if kind == "per_channel" else 128,
                                      sparse=kind == "sparse")
    x = np.random.default_rng(M).standard_normal((2, M, 512)).astype(np.float16)
    y = m(torch.from_numpy(x).cuda())
    assert y.shape == (2, M, 128) and y.dtype == torch.float16
    assert rel_err(y.cpu().numpy(), _expect(m, x)) <= TOL


def test_gpu_from_linear_bit_exact_with_cpu():
    framework("torch")
    lin = _linear(256, 64)
    a = it.Int4Linear.from_linear(lin, group_size=64, sparse=True)
    b = it.Int4Linear.from_linear(lin.cuda(), group_size=64, sparse=True)
    for k in ("qweight", "scales", "zeros", "mask"):
        assert torch.equal(getattr(a, k), getattr(b, k).cpu()), k


def test_gpu_opcheck():
    framework("torch")
    m = it.Int4Linear.from_linear(_linear(128, 32, device="cuda"), group_size=32)
    x = torch.randn(5, 128, dtype=torch.float16, device="cuda")
    torch.library.opcheck(torch.ops.int4mm.matmul.default,
                          (x, m.qweight, m.scales, m.zeros, None, m.bias, None, 32))


def test_gpu_compile_fullgraph_and_cache_reuse():
    framework("torch")
    model = nn.Sequential(_linear(256, 512), nn.SiLU(), _linear(512, 256)).cuda()
    it.replace_linear(model, group_size=128, progress=False)
    x = torch.randn(8, 256, dtype=torch.float16, device="cuda")
    eager = model(x)
    before = it.STATS["prepared"]
    compiled = torch.compile(model, fullgraph=True)
    for _ in range(3):
        y = compiled(x)
    torch.cuda.synchronize()
    assert rel_err(y.cpu().numpy(), eager.cpu().numpy()) <= TOL
    assert it.STATS["prepared"] - before <= 2, "compiled calls rebuilt PreparedWeights"


def test_gpu_opcheck_and_compile_bf16():
    """bf16 activations through the custom op: opcheck, and torch.compile
    (fullgraph) of a model whose buffers are float16 (converted once per
    weight) equals eager."""
    framework("torch")
    m = it.Int4Linear.from_linear(_linear(128, 32, device="cuda"), group_size=32)
    x = torch.randn(5, 128, dtype=torch.bfloat16, device="cuda")
    torch.library.opcheck(torch.ops.int4mm.matmul.default,
                          (x, m.qweight, m.scales, m.zeros, None, m.bias, None, 32))
    model = nn.Sequential(_linear(256, 512), nn.SiLU(), _linear(512, 256)).cuda()
    it.replace_linear(model, group_size=128, progress=False)
    xb = torch.randn(8, 256, dtype=torch.bfloat16, device="cuda")
    eager = model(xb)
    assert eager.dtype == torch.bfloat16
    compiled = torch.compile(model, fullgraph=True)
    y = compiled(xb)
    torch.cuda.synchronize()
    assert y.dtype == torch.bfloat16
    assert rel_err(y.float().cpu().numpy(), eager.float().cpu().numpy()) <= 1e-2


def test_gpu_cuda_graph_replay_and_current_stream():
    framework("torch")
    m = it.Int4Linear.from_linear(_linear(256, 128, device="cuda"), group_size=64).prepare()
    x = torch.randn(4, 256, dtype=torch.float16, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as torch recommends
        m(x)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        y = m(x)
    x.copy_(torch.randn_like(x))
    g.replay()
    torch.cuda.synchronize()
    assert rel_err(y.cpu().numpy(), _expect(m, x.cpu().numpy())) <= TOL
    # Launches follow torch's current stream: a busy side stream, no explicit sync.
    with torch.cuda.stream(side):
        big = torch.randn(4096, 4096, device="cuda")
        for _ in range(5):
            big = big @ big / 64
        x2 = torch.randn(4, 256, dtype=torch.float16, device="cuda")
        y2 = m(x2)
    side.synchronize()
    assert rel_err(y2.cpu().numpy(), _expect(m, x2.cpu().numpy())) <= TOL


def test_gpu_to_and_load_state_dict_invalidate_cache():
    framework("torch")
    m = it.Int4Linear.from_linear(_linear(128, 64), group_size=64).cuda()
    x = torch.randn(3, 128, dtype=torch.float16, device="cuda")
    y1 = m(x)
    other = it.Int4Linear.from_linear(_linear(128, 64, seed=7), group_size=64)
    m.load_state_dict(other.state_dict())
    y2 = m(x)
    assert rel_err(y2.cpu().numpy(), _expect(other, x.cpu().numpy())) <= TOL
    assert not torch.equal(y1, y2)
    cpu = m.cpu()
    assert rel_err(cpu(x.cpu()).numpy(), y2.cpu().numpy()) <= TOL


def test_gpu_mlp_block_end_to_end():
    """Gate/up/down projections of a 4096 x 11008 MLP, quantized and run with int4mm,
    against the fp16 dequantized weights computed in float64."""
    framework("torch")

    class MLP(nn.Module):
        def __init__(self, d=4096, h=11008):
            super().__init__()
            self.gate_proj = nn.Linear(d, h, bias=False)
            self.up_proj = nn.Linear(d, h, bias=False)
            self.down_proj = nn.Linear(h, d, bias=False)

        def forward(self, x):
            return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))

    torch.manual_seed(0)
    mlp = MLP().half().cuda()
    q = it.replace_linear(mlp, group_size=128, progress=False)
    x = torch.randn(16, 4096, dtype=torch.float16, device="cuda")
    y = q(x).double()

    def deq(m):
        b = [getattr(m, k).cpu().numpy() for k in ("qweight", "scales", "zeros")]
        return torch.from_numpy(ref.dequantize(*b)).cuda()  # (K, N) float64

    # Same fp16 roundings as the model between the matmuls; each matmul in float64.
    xd = x.double()
    h = nn.functional.silu((xd @ deq(q.gate_proj)).half()) * (xd @ deq(q.up_proj)).half()
    expect = h.double() @ deq(q.down_proj)
    assert rel_err(y.cpu().numpy(), expect.cpu().numpy()) <= TOL
