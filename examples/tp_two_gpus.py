#!/usr/bin/env python3
"""Tensor parallelism over two GPUs with int4mm and torch.distributed (NCCL).

An MLP pair ``y = relu(x @ W1 + b1) @ W2 + b2`` with both weights quantized to
int4 (grouped, zero points) runs Megatron-style over two GPUs, one process per
GPU:

- layer 1 is column parallel: rank r holds columns ``[r*N1/2, (r+1)*N1/2)``
  of W1 (``int4mm.shard(W1, "n", 2, index=r)``) and of b1, and computes its
  slice of the hidden activations, relu included, with no communication;
- layer 2 is row parallel: rank r holds rows ``[r*N1/2, (r+1)*N1/2)`` of W2
  (``int4mm.shard(W2, "k", 2, index=r)``), multiplies its hidden slice, and
  an all-reduce (sum) of the partial products plus b2 gives y on every rank.

Rank 0 compares y with the same pair run unsharded with int4mm on one GPU and
with the float64 reference (int4mm.reference); it prints PASS or FAIL and
every rank exits non-zero on failure.

Run either way (needs 2 GPUs and a CUDA build of torch):

    torchrun --nproc_per_node=2 examples/tp_two_gpus.py
    python3 examples/tp_two_gpus.py        # spawns the two processes itself
"""

from __future__ import annotations

import os

# NVLink SHARP / multicast stays off in every process (set before torch and
# NCCL read them; spawned children inherit them and re-run this too).
for _k, _v in {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
               "NVSHMEM_DISABLE_NVLS": "1"}.items():
    os.environ[_k] = _v

import socket
import sys
import traceback

import numpy as np
import torch
import torch.distributed as dist

import int4mm
from int4mm import reference as ref

WORLD = 2
K1, N1, N2 = 1024, 2048, 1024  # in -> hidden -> out
GROUP = 128
TOKENS = (1, 16, 300)           # decode-like and prefill-like batches (both kernel paths)
TOL = 2e-3


try:  # int4mm's torch layer, where this int4mm has it
    from int4mm.torch import Int4Linear
except ImportError:
    Int4Linear = None


class PreparedLinear(torch.nn.Module):
    """``x @ W (+ bias)`` with W an int4mm PreparedWeight (used without int4mm.torch)."""

    def __init__(self, weight: int4mm.PreparedWeight, bias: torch.Tensor | None = None):
        super().__init__()
        self.weight = weight
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return int4mm.matmul(x, self.weight, bias=self.bias)


def linear(weight: int4mm.PreparedWeight, bias: torch.Tensor | None = None) -> torch.nn.Module:
    """An int4 linear layer over a (sharded) weight: int4mm.torch.Int4Linear, else a
    minimal module calling int4mm.matmul."""
    if Int4Linear is not None:
        return Int4Linear.from_quantized(weight.qweight, weight.scales, weight.zeros,
                                         weight.mask, bias=bias)
    return PreparedLinear(weight, bias)


def host_model():
    """Quantized weights and fp16 biases, identical on every rank (fixed seeds)."""
    w1 = ref.random_weights(K1, N1, group_size=GROUP, seed=1)
    w2 = ref.random_weights(N1, N2, group_size=GROUP, seed=2)
    rng = np.random.default_rng(3)
    b1 = (0.1 * rng.standard_normal(N1)).astype(np.float16)
    b2 = (0.1 * rng.standard_normal(N2)).astype(np.float16)
    return w1, w2, b1, b2


def upload(w, device):
    return int4mm.prepare(*(torch.from_numpy(np.ascontiguousarray(w[k])).to(device)
                            for k in ("qweight", "scales", "zeros")))


def rel_err(y, y_ref) -> float:
    y = np.asarray(y, dtype=np.float64)
    y_ref = np.asarray(y_ref, dtype=np.float64)
    return float(np.linalg.norm(y - y_ref) / max(np.linalg.norm(y_ref), 1e-30))


def run(rank: int, world: int, local_rank: int) -> bool:
    device = torch.device("cuda", local_rank)
    w1, w2, b1, b2 = host_model()
    full1, full2 = upload(w1, device), upload(w2, device)
    b1_t = torch.from_numpy(b1).to(device)
    b2_t = torch.from_numpy(b2).to(device)

    # Column parallel layer 1, row parallel layer 2.
    lo, hi = int4mm.plan_shards(K1, N1, GROUP, False, "n", world)[rank]
    part1 = int4mm.shard(full1, "n", world, index=rank)
    part2 = int4mm.shard(full2, "k", world, index=rank)
    assert part1.shape == (K1, hi - lo) and part2.shape == (hi - lo, N2)
    assert part1.device == local_rank and part2.device == local_rank
    l1 = linear(part1, b1_t[lo:hi].contiguous())
    l2 = linear(part2)
    if rank == 0:
        print(f"layers: {type(l1).__module__}.{type(l1).__name__}; rank {rank} holds W1 "
              f"columns {lo}..{hi - 1} and W2 rows {lo}..{hi - 1}", flush=True)

    # All collectives first, identical on every rank (no rank leaves the
    # sequence early, so a failed check cannot leave a peer waiting).
    results = []
    for M in TOKENS:
        x_host = np.random.default_rng(100 + M).standard_normal((M, K1)).astype(np.float16)
        x = torch.from_numpy(x_host).to(device)
        y_part = l2(torch.relu(l1(x))).float()          # (M, N2) partial sum of this rank
        dist.all_reduce(y_part, op=dist.ReduceOp.SUM)
        results.append((M, x_host, x, (y_part + b2_t.float()).half()))
    if rank != 0:
        return True

    ok = True
    for M, x_host, x, y in results:
        # The unsharded pair on this GPU, and the float64 reference.
        y_full = linear(full2, b2_t)(torch.relu(linear(full1, b1_t)(x)))
        h_ref = np.maximum(ref.matmul(x_host, w1["qweight"], w1["scales"], w1["zeros"], bias=b1),
                           0.0)
        y_ref = ref.matmul(h_ref, w2["qweight"], w2["scales"], w2["zeros"], bias=b2)
        torch.cuda.synchronize(device)
        y_np, y_full_np = y.cpu().numpy(), y_full.cpu().numpy()
        e_full, e_ref = rel_err(y_np, y_full_np), rel_err(y_np, y_ref)
        e_full_ref = rel_err(y_full_np, y_ref)
        good = e_full <= TOL and e_ref <= TOL and bool(np.isfinite(y_np).all())
        ok &= good
        print(f"M={M:4d}: rel err sharded vs unsharded {e_full:.2e}, sharded vs float64 "
              f"{e_ref:.2e} (unsharded vs float64 {e_full_ref:.2e}) "
              f"{'ok' if good else 'FAIL'}", flush=True)
    return ok


def worker(rank: int, world: int, local_rank: int | None = None) -> int:
    """One process: rank ``rank`` of ``world``, on GPU ``local_rank`` (default: rank)."""
    local_rank = rank if local_rank is None else local_rank
    torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group("nccl", rank=rank, world_size=world,
                                device_id=torch.device("cuda", local_rank))
    except TypeError:  # torch < 2.3: no device_id
        dist.init_process_group("nccl", rank=rank, world_size=world)
    ok = False
    try:
        ok = run(rank, world, local_rank)
    except Exception:  # noqa: BLE001 - reported, then turned into FAIL on every rank
        traceback.print_exc()
    # Every rank learns whether any rank failed.
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=f"cuda:{local_rank}")
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    ok = bool(flag.item())
    if rank == 0:
        print(f"tp_two_gpus: {'PASS' if ok else 'FAIL'} (column-parallel + row-parallel int4 "
              f"MLP over {world} GPUs, NCCL)", flush=True)
    dist.destroy_process_group()
    return 0 if ok else 1


def _spawned(rank: int, world: int) -> None:
    code = worker(rank, world)
    if code:
        sys.exit(code)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    if not torch.cuda.is_available() or torch.cuda.device_count() < WORLD:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        print(f"tp_two_gpus: FAIL: needs {WORLD} CUDA GPUs, torch sees {n}")
        return 2
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # torchrun
        world = int(os.environ["WORLD_SIZE"])
        if world != WORLD:
            print(f"tp_two_gpus: FAIL: run with --nproc_per_node={WORLD} (got {world})")
            return 2
        rank = int(os.environ["RANK"])
        return worker(rank, world, int(os.environ.get("LOCAL_RANK", rank)))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    import torch.multiprocessing as mp

    try:
        mp.spawn(_spawned, args=(WORLD,), nprocs=WORLD, join=True)
    except Exception as exc:  # noqa: BLE001 - a rank failed or exited non-zero
        print(f"tp_two_gpus: a rank failed: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
