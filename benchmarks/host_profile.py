"""Where the host time of a prepared ``int4mm.matmul`` call goes (GPU machine).

    python benchmarks/host_profile.py

Times, on a tiny shape (M = 1, K = N = 256), the public call, the bridge's
fast path alone, the torch attribute reads that fast path makes, one torch
kernel launch (``y.zero_()``) and ``torch.matmul`` for scale, and the CuPy
call when CuPy is installed.  Best of 5 runs of 4000 back-to-back calls.
benchmarks/NOTES.md (v6, host cost) has a reading.
"""

import time

import torch

import int4mm
from int4mm import reference as ref

K = N = 256
w = ref.random_weights(K, N, group_size=None, seed=1)
dev = torch.device("cuda")
pw = int4mm.prepare(
    torch.from_numpy(w["qweight"]).to(dev),
    torch.from_numpy(w["scales"]).to(dev),
    torch.from_numpy(w["zeros"]).to(dev),
)
x = torch.randn(1, K, device=dev, dtype=torch.float16)
y = torch.empty(1, N, device=dev, dtype=torch.float16)
w16 = torch.randn(K, N, device=dev, dtype=torch.float16)
raw = torch._C._cuda_getCurrentRawStream


def t(name, f, n=4000):
    for _ in range(200):
        f()
    torch.cuda.synchronize()
    best = 1e9
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        dt = (time.perf_counter() - t0) / n * 1e6
        torch.cuda.synchronize()
        best = min(best, dt)
    print(f"{best:8.2f} us  {name}")


fast = pw._fast
t("int4mm.matmul(x, pw, out=y)", lambda: int4mm.matmul(x, pw, out=y))
t("pw._fast(x, y, None)", lambda: fast(x, y, None))


def attrs():
    return (
        tuple(x.shape),
        tuple(y.shape),
        x.dtype,
        y.dtype,
        x.get_device(),
        y.get_device(),
        x.is_contiguous(),
        y.is_contiguous(),
        x.numel(),
        x.data_ptr(),
        y.data_ptr(),
        raw(0),
    )


t("torch attribute reads of the fast path", attrs)
t("tuple(x.shape) x2", lambda: (tuple(x.shape), tuple(y.shape)))
t("get_device x2", lambda: (x.get_device(), y.get_device()))
t("is_contiguous x2", lambda: (x.is_contiguous(), y.is_contiguous()))
t("data_ptr x2", lambda: (x.data_ptr(), y.data_ptr()))
t("raw stream", lambda: raw(0))
t("y.zero_() (one torch launch)", lambda: y.zero_())
t("torch.matmul(x, w16, out=y)", lambda: torch.matmul(x, w16, out=y))
t("lambda: None", lambda: None)
try:
    import cupy
except ImportError:
    cupy = None
if cupy is not None:
    xc, yc = cupy.asarray(x), cupy.asarray(y)
    t("cupy: int4mm.matmul(xc, pw, out=yc)", lambda: int4mm.matmul(xc, pw, out=yc))
