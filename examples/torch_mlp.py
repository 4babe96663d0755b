"""A transformer MLP block (gate/up/down, 4096 x 11008) quantized to int4 with
int4mm and run with PyTorch: eager, torch.compile(fullgraph=True), and a CUDA
graph.  Prints the relative error against the fp16-dequantized reference
(float64) and exits non-zero above tolerance.

    python examples/torch_mlp.py
"""

import sys

import torch
from torch import nn

from int4mm import reference as ref
from int4mm.torch import Int4Linear, replace_linear

TOL = 2e-3


class MLP(nn.Module):
    def __init__(self, d=4096, h=11008):
        super().__init__()
        self.gate_proj = nn.Linear(d, h, bias=False)
        self.up_proj = nn.Linear(d, h, bias=False)
        self.down_proj = nn.Linear(h, d, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


def dequantized(m: Int4Linear) -> torch.Tensor:
    b = [getattr(m, k).cpu().numpy() for k in ("qweight", "scales", "zeros")]
    return torch.from_numpy(ref.dequantize(*b)).cuda()  # (K, N) float64


def main() -> int:
    torch.manual_seed(0)
    mlp = replace_linear(MLP().half().cuda(), group_size=128)  # quantized on the GPU
    print(mlp)
    x = torch.randn(16, 4096, dtype=torch.float16, device="cuda")

    xd = x.double()
    h = nn.functional.silu((xd @ dequantized(mlp.gate_proj)).half()) \
        * (xd @ dequantized(mlp.up_proj)).half()
    expect = h.double() @ dequantized(mlp.down_proj)

    results = {"eager": mlp(x)}
    results["compiled"] = torch.compile(mlp, fullgraph=True)(x)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y_graph = mlp(x)
    graph.replay()
    results["cuda graph"] = y_graph
    torch.cuda.synchronize()

    ok = True
    for name, y in results.items():
        err = float((y.double() - expect).norm() / expect.norm())
        print(f"{name:>10}: relative error {err:.2e} (tolerance {TOL:.0e})")
        ok &= err <= TOL
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
