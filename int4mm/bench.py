"""``python -m int4mm bench``: int4mm against fp16 cuBLAS on this GPU.

Follows the protocol of shared/PERFORMANCE.md:

1. GPU time: ``--graph-launches`` launches captured in one CUDA graph on a
   side stream, two warm-up replays, then ``--repeats`` replays timed with
   CUDA events; per-launch time = replay time / launches; the median counts.
   The timed replays run back to back behind untimed ones (``LEAD_MS`` of GPU
   work), so no host time lands between the events (``--replay-timing``).
   Host overhead is measured separately (wall clock, back-to-back calls).
2. Weights (and the fp16 baseline's weights) are rotated over enough device
   copies that one cycle reads more than 4 x L2, so every launch reads HBM.
3. Random data, never zeros; every int4 result is checked against the
   float64 reference (:mod:`int4mm.reference`) in the same run, on a subset
   of rows and columns, and the whole output is checked for NaN/Inf.
4. fp16 cuBLAS (torch.matmul or cupy.matmul) runs in the same process on the
   same shapes; ratios are reported.
5. GPU, clocks, driver, CUDA, library commit and date go into the JSON.
6. GPU clocks and power settings are only read, never changed.

torch or CuPy is imported lazily: importing this module needs neither.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------- what is measured


@dataclass(frozen=True)
class Config:
    """One int4 weight format to benchmark."""

    name: str  # key in the JSON and the table
    label: str  # legend text
    group_size: int | None  # None: per output channel (G = K)
    sparse: bool  # 16:32 structured sparsity
    #: Zero points all integers (as GPTQ, AWQ and int4mm.quantize make them);
    #: otherwise a few are x.5, as reference.random_weights draws them.  A
    #: 16:32 weight with integer zero points is prepared as its exact dense
    #: equivalent (int4mm.prepare, sparse_as_dense).
    integral_zeros: bool = False


#: The int4 formats, in table order.  Add a line to benchmark another one.
CONFIGS = [
    Config("int4", "int4 dense, per-channel", None, False),
    Config("int4_g128", "int4 dense, group 128", 128, False),
    Config("int4_sparse", "int4 16:32 sparse, per-channel", None, True),
    Config("int4_sparse_iz", "int4 16:32 sparse, per-channel, integer zeros", None, True, True),
    # Config("int4_sparse_g128", "int4 16:32 sparse, group 128", 128, True),
]
BASELINE = "fp16"

#: (K, N) of the original project's two tables (PERFORMANCE.md).
DEFAULT_SHAPES = [
    (16384, 16384), (8192, 28672), (28672, 8192), (8192, 8192),
    (5120, 20480), (20480, 5120), (5120, 5120), (1024, 1024),
]
DEFAULT_MS = (1, 2048)  # matrix-vector and matrix-matrix
#: Rows of the PERFORMANCE.md target table that the default suite lacks.
FULL_EXTRA_MS = {(8192, 8192): (16, 64, 128, 256, 1024, 4096), (8192, 28672): (16, 64)}
SWEEP_SHAPE = (8192, 8192)
SWEEP_MS = tuple(2**i for i in range(13))  # 1 .. 4096
QUICK_SHAPES = [(8192, 8192), (1024, 1024)]
QUICK_SWEEP_MS = (1, 16, 128, 2048)

#: PERFORMANCE.md anchors (H100 80GB HBM3, 2026-11-24): (K, N, M) ->
#: (fp16 µs, seed, Marlin, tinygemm), the last three as speedups over fp16.
ANCHORS = {
    (16384, 16384, 1): (176.3, 0.46, 3.36, 2.56), (8192, 28672, 1): (157.0, 0.64, 3.27, 2.58),
    (28672, 8192, 1): (156.6, 0.25, 3.34, 2.48), (8192, 8192, 1): (47.0, 0.26, 2.84, 2.32),
    (5120, 20480, 1): (72.0, 0.52, 2.91, 2.45), (20480, 5120, 1): (73.3, 0.16, 2.89, 2.15),
    (5120, 5120, 1): (20.2, 0.17, 1.74, 1.94), (1024, 1024, 1): (4.0, 0.18, 0.36, 1.68),
    (8192, 8192, 16): (46.9, 0.15, 2.84, 0.55), (8192, 28672, 16): (158.4, 0.43, 3.26, 0.60),
    (8192, 8192, 64): (48.0, 0.14, 1.59, 0.16), (8192, 28672, 64): (161.4, 0.42, 2.14, 0.16),
    (8192, 8192, 128): (48.4, 0.13, 0.99, 0.08), (8192, 8192, 256): (53.8, 0.14, 0.62, 0.05),
    (8192, 8192, 1024): (207.8, 0.18, 0.59, 0.05), (8192, 8192, 4096): (784.1, 0.22, 0.53, 0.04),
    (20480, 5120, 2048): (602.8, 0.21, 0.51, 0.04), (5120, 20480, 2048): (631.3, 0.21, 0.55, 0.04),
    (1024, 1024, 2048): (8.7, 0.23, 0.36, 0.06),
}

# --------------------------------------------------------------------------- protocol constants

TOLERANCE = 2e-3  # relative Frobenius error vs the float64 reference (fp16)
#: bf16 keeps 8 significant bits (fp16: 11): its results are ~8x less exact.
TOLERANCE_BF16 = 1e-2
L2_FACTOR = 4  # one rotation cycle reads more than L2_FACTOR x L2
MAX_ROTATION_BYTES = 8 << 30  # cap on the copies of one weight (also <= 1/4 of GPU memory)
MAX_COPIES = 1024
ASSUMED_L2_BYTES = 64 << 20  # only if the library cannot tell the L2 size
WARMUP_REPLAYS = 2
MAX_REPLAY_MS = 500.0  # a slow kernel gets fewer launches per graph, not minutes of runtime
MIN_LAUNCHES = 3
#: back-to-back replay timing: GPU work (ms) queued ahead of the first timed
#: replay, so that the host's replay call is hidden behind it
LEAD_MS = 2.0
#: and the least GPU time of one replay (more launches per graph where
#: needed), so that the host's next replay call is hidden behind it
MIN_REPLAY_MS = 0.2
CHECK_ROWS = 8  # the first and last CHECK_ROWS rows of x are checked (all if M <= 16)
CHECK_COLS = 512  # the first and last CHECK_COLS output columns are checked
HOST_SHAPE = 256  # K = N of the host-overhead measurement (M = 1)


# --------------------------------------------------------------------------- arguments


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _shape_list(text: str) -> list[tuple[int, int]]:
    shapes = []
    for item in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", item)
        if not m:
            raise argparse.ArgumentTypeError(f"expected KxN[,KxN...], got {text!r}")
        shapes.append((int(m.group(1)), int(m.group(2))))
    return shapes


def _config_list(text: str) -> list[Config]:
    by_name = {c.name: c for c in CONFIGS}
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown config(s) {unknown}; choose from {', '.join(by_name)}")
    return [by_name[n] for n in names]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m int4mm bench``."""
    parser.add_argument("--suite", choices=("default", "full"), default="default",
                        help="default: the original project's tables (M = 1 and M = 2048); "
                             "full: adds the PERFORMANCE.md target rows, an M sweep at "
                             "8192x8192 and a plot")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default benchmarks/results/bench-<gpu>-<time>.json)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="PNG of speedup against M (default: next to the JSON for --suite "
                             "full)")
    parser.add_argument("--repeats", type=_positive_int, default=5,
                        help="timed graph replays; the median counts (default 5)")
    parser.add_argument("--graph-launches", type=_positive_int, default=50,
                        help="launches captured in one CUDA graph (default 50; raised where "
                             "more weight copies are needed to exceed 4 x L2)")
    parser.add_argument("--replay-timing", choices=("back-to-back", "isolated"),
                        default="back-to-back",
                        help="back-to-back (default): timed replays queued behind untimed "
                             "GPU work and behind each other, so the events hold GPU time "
                             "only; isolated: each timed replay starts on an idle GPU (its "
                             "events also hold the replay call's launch latency)")
    parser.add_argument("--framework", choices=("auto", "torch", "cupy"), default="auto",
                        help="array library for data and the fp16 baseline (auto: torch, "
                             "else CuPy)")
    parser.add_argument("--quick", action="store_true",
                        help="two shapes only, for smoke tests")
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                        help="compare results with the float64 reference (default on)")
    parser.add_argument("--configs", type=_config_list, default=None,
                        help=f"int4 configs to run (default all: "
                             f"{','.join(c.name for c in CONFIGS)})")
    parser.add_argument("--shapes", type=_shape_list, default=None,
                        help="override the shapes, e.g. 8192x8192,1024x1024 (K x N)")
    parser.add_argument("--ms", type=_int_list, default=None,
                        help="override the batch sizes M, e.g. 1,16,2048")
    parser.add_argument("--path", choices=("auto", "small_m", "large_m"), default="auto",
                        help="int4mm kernel family (default auto)")
    parser.add_argument("--weights", choices=("fast", "reference"), default="fast",
                        help="weight generator: fast (numpy, same formats and value "
                             "distributions; sparse masks drawn from 65536 random 16-of-32 "
                             "patterns) or reference (int4mm.reference.random_weights; "
                             "minutes for the large shapes)")
    parser.add_argument("--dtype", choices=("float16", "bfloat16"), default="float16",
                        help="activation/output dtype of every config, the cuBLAS baseline "
                             "included (bfloat16 needs torch; int4 scales are converted to it "
                             "once, when the weight is prepared)")
    parser.add_argument("--host-calls", type=_positive_int, default=2000,
                        help="back-to-back calls for the host-overhead measurement")


def _plan(args) -> list[tuple[int, int, tuple[int, ...]]]:
    """(K, N, Ms) per shape, in run order."""
    shapes = args.shapes or (QUICK_SHAPES if args.quick else DEFAULT_SHAPES)
    ms = {shape: set(DEFAULT_MS) for shape in shapes}
    if args.suite == "full":
        for shape, extra in FULL_EXTRA_MS.items():
            if shape in ms and not args.quick:
                ms[shape].update(extra)
        if SWEEP_SHAPE in ms:
            ms[SWEEP_SHAPE].update(QUICK_SWEEP_MS if args.quick else SWEEP_MS)
    if args.ms:
        ms = {shape: set(args.ms) for shape in shapes}
    return [(K, N, tuple(sorted(ms[(K, N)]))) for K, N in dict.fromkeys(shapes)]


# --------------------------------------------------------------------------- array libraries


class _TorchBackend:
    """Data, streams, graphs and events through PyTorch."""

    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch
        self.version = torch.__version__
        self.device = torch.device("cuda", 0)
        self.act = torch.float16  # activation dtype (run() may set bfloat16)

    def set_dtype(self, name: str) -> None:
        self.act = getattr(self.torch, name)

    def gpu_problem(self) -> str | None:
        if not self.torch.cuda.is_available():
            return f"torch {self.version} sees no CUDA GPU"
        return None

    def properties(self) -> dict:
        p = self.torch.cuda.get_device_properties(self.device)
        return {"name": p.name, "sm_count": p.multi_processor_count,
                "l2_bytes": int(getattr(p, "L2_cache_size", 0)), "total_memory": p.total_memory,
                "compute_capability": f"{p.major}.{p.minor}"}

    def upload(self, a: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def download(self, a) -> np.ndarray:
        if a.dtype == self.torch.bfloat16:
            a = a.float()
        return a.cpu().numpy()

    def randn_fp16(self, shape, seed: int, scale: float = 1.0):
        """Random activations (or fp16-baseline weights) of the run's dtype."""
        gen = self.torch.Generator(device=self.device)
        gen.manual_seed(seed)
        a = self.torch.randn(shape, generator=gen, device=self.device, dtype=self.act)
        return a.mul_(scale) if scale != 1.0 else a

    def empty_fp16(self, shape):
        return self.torch.empty(shape, dtype=self.act, device=self.device)

    def clone(self, a):
        return a.clone()

    def fill_nan(self, a) -> None:
        a.fill_(float("nan"))

    def all_finite(self, a) -> bool:
        return bool(self.torch.isfinite(a).all())

    def matmul(self, x, w, out) -> None:
        self.torch.matmul(x, w, out=out)

    def new_stream(self):
        return self.torch.cuda.Stream(self.device)

    def stream_ctx(self, stream):
        return self.torch.cuda.stream(stream)

    def current_stream_handle(self) -> int:
        return self.torch.cuda.current_stream(self.device).cuda_stream

    def capture(self, stream, body):
        graph = self.torch.cuda.CUDAGraph()
        with self.torch.cuda.graph(graph, stream=stream):
            body()
        return graph

    def replay(self, graph, stream) -> None:
        with self.torch.cuda.stream(stream):
            graph.replay()

    def timing_event(self):
        return self.torch.cuda.Event(enable_timing=True)

    def event_ms(self, start, end) -> float:
        return start.elapsed_time(end)

    def synchronize(self) -> None:
        self.torch.cuda.synchronize(self.device)

    def release(self) -> None:
        self.synchronize()
        self.torch.cuda.empty_cache()


class _CupyBackend:
    """Data, streams, graphs and events through CuPy."""

    name = "cupy"

    def __init__(self):
        import cupy

        self.cp = cupy
        self.version = cupy.__version__
        self.device = cupy.cuda.Device(0)

    def gpu_problem(self) -> str | None:
        try:
            count = self.cp.cuda.runtime.getDeviceCount()
        except Exception as exc:  # noqa: BLE001 - any failure means "no GPU"
            return f"CuPy {self.version} cannot reach a GPU: {exc}"
        return None if count else f"CuPy {self.version} sees no CUDA GPU"

    def properties(self) -> dict:
        p = self.cp.cuda.runtime.getDeviceProperties(0)
        name = p["name"].decode() if isinstance(p["name"], bytes) else str(p["name"])
        return {"name": name, "sm_count": p["multiProcessorCount"],
                "l2_bytes": int(p.get("l2CacheSize", 0)), "total_memory": p["totalGlobalMem"],
                "compute_capability": f"{p['major']}.{p['minor']}"}

    def upload(self, a: np.ndarray):
        return self.cp.asarray(np.ascontiguousarray(a))

    def download(self, a) -> np.ndarray:
        return self.cp.asnumpy(a)

    def randn_fp16(self, shape, seed: int, scale: float = 1.0):
        rs = self.cp.random.RandomState(seed)
        return (rs.standard_normal(shape, dtype=self.cp.float32) * scale).astype(self.cp.float16)

    def empty_fp16(self, shape):
        return self.cp.empty(shape, dtype=self.cp.float16)

    def clone(self, a):
        return a.copy()

    def fill_nan(self, a) -> None:
        a.fill(np.nan)

    def all_finite(self, a) -> bool:
        return bool(self.cp.isfinite(a).all())

    def matmul(self, x, w, out) -> None:
        self.cp.matmul(x, w, out=out)

    def new_stream(self):
        return self.cp.cuda.Stream(non_blocking=True)

    def stream_ctx(self, stream):
        return stream  # a CuPy stream is its own context manager

    def current_stream_handle(self) -> int:
        return self.cp.cuda.get_current_stream().ptr

    def capture(self, stream, body):
        with stream:
            stream.begin_capture()
            try:
                body()
            finally:
                graph = stream.end_capture()
        return graph

    def replay(self, graph, stream) -> None:
        graph.launch(stream)

    def timing_event(self):
        return self.cp.cuda.Event()

    def event_ms(self, start, end) -> float:
        return self.cp.cuda.get_elapsed_time(start, end)

    def synchronize(self) -> None:
        self.device.synchronize()

    def release(self) -> None:
        self.synchronize()
        self.cp.get_default_memory_pool().free_all_blocks()


_BACKENDS = {"torch": _TorchBackend, "cupy": _CupyBackend}


def _pick_backend(choice: str):
    """(backend, None) or (None, why none is usable)."""
    reasons = []
    for name in (("torch", "cupy") if choice == "auto" else (choice,)):
        try:
            backend = _BACKENDS[name]()
        except ImportError as exc:
            reasons.append(f"{name} is not installed ({exc})")
            continue
        problem = backend.gpu_problem()
        if problem is None:
            return backend, None
        reasons.append(problem)
    return None, "; ".join(reasons)


# --------------------------------------------------------------------------- weights


def _mask_table(rng: np.random.Generator, size: int = 1 << 16) -> np.ndarray:
    """``size`` uniformly random 16-of-32 bit masks (int32)."""
    keep = rng.random((size, 32)).argsort(axis=1) < 16
    bits = (keep.astype(np.uint64) << np.arange(32, dtype=np.uint64)).sum(axis=1)
    return bits.astype(np.uint32).view(np.int32)


def _fast_random_weights(K: int, N: int, group_size: int | None, sparse: bool,
                         seed: int) -> dict:
    """Packed weights with reference.random_weights' distributions, in seconds, not minutes.

    Every packed word is uniformly random (so every code is uniform in 0..15);
    scales and zeros follow the reference formulas.  Sparse masks are drawn
    from a table of 65536 random 16-of-32 patterns (the reference argsorts
    K*N random numbers, which takes minutes at 16384 x 16384).
    """
    rng = np.random.default_rng(seed)
    G = K if group_size is None else group_size
    rows = K // 16 if sparse else K // 8
    qweight = rng.integers(0, 2**32, size=(rows, N), dtype=np.uint32).view(np.int32)
    scales = (rng.uniform(0.5, 1.5, size=(K // G, N)) / (4.6 * np.sqrt(K))).astype(np.float16)
    zeros = rng.integers(4, 12, size=(K // G, N)).astype(np.float16)
    zeros[rng.random(zeros.shape) < 0.05] += np.float16(0.5)
    mask = None
    if sparse:
        table = _mask_table(rng)
        mask = table[rng.integers(0, len(table), size=(K // 32, N))]
    return {"qweight": qweight, "scales": scales, "zeros": zeros, "mask": mask}


def _host_weights(K: int, N: int, config: Config, seed: int, generator: str) -> dict:
    """numpy qweight/scales/zeros/mask; per-channel scales/zeros as (N,) (the seed format)."""
    if generator == "reference":
        from . import reference

        w = reference.random_weights(K, N, config.group_size, config.sparse, seed)
        w = {k: w[k] for k in ("qweight", "scales", "zeros", "mask")}
    else:
        w = _fast_random_weights(K, N, config.group_size, config.sparse, seed)
    if config.integral_zeros:
        w["zeros"] = np.floor(w["zeros"])
    if config.group_size is None:
        w["scales"], w["zeros"] = w["scales"].reshape(N), w["zeros"].reshape(N)
    return w


def _nbytes(arrays) -> int:
    return int(sum(a.nbytes for a in arrays if a is not None))


def _rotation_copies(weight_bytes: int, l2_bytes: int, total_memory: int) -> tuple[int, bool]:
    """Copies so that one cycle reads > L2_FACTOR x L2; and whether the cap allowed that."""
    need = max(2, L2_FACTOR * l2_bytes // weight_bytes + 1)
    cap_bytes = min(MAX_ROTATION_BYTES, total_memory // 4)
    allowed = max(1, min(MAX_COPIES, cap_bytes // weight_bytes))
    copies = min(need, allowed)
    return copies, copies * weight_bytes > L2_FACTOR * l2_bytes


def _check_columns(N: int) -> np.ndarray:
    if N <= 2 * CHECK_COLS:
        return np.arange(N)
    return np.r_[0:CHECK_COLS, N - CHECK_COLS:N]


def _check_rows(M: int) -> list[tuple[int, int]]:
    """Row ranges of x/out to compare with the reference."""
    if M <= 2 * CHECK_ROWS:
        return [(0, M)]
    return [(0, CHECK_ROWS), (M - CHECK_ROWS, M)]


def _reference_weight(host: dict, cols: np.ndarray) -> np.ndarray:
    """float64 W[:, cols] from the oracle (columns are independent in every format)."""
    from . import reference

    def pick(a):
        return None if a is None else np.ascontiguousarray(a[..., cols])

    return reference.dequantize(pick(host["qweight"]), pick(host["scales"]),
                                pick(host["zeros"]), pick(host["mask"]))


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    us: float  # median per-launch time
    samples_us: list[float]
    launches: int
    mode: str  # "graph", or "stream (...)" when capture failed


def _chained_ms(be, stream, fn, lead: int, repeats: int) -> list[float]:
    """ms of each of ``repeats`` back-to-back ``fn()`` on ``stream``, after
    ``lead`` untimed ones: one event between consecutive calls, one wait at
    the end (with lead = 0 and repeats = 1: one call started on an idle GPU)."""
    events = [be.timing_event() for _ in range(repeats + 1)]
    with be.stream_ctx(stream):
        for _ in range(lead):
            fn()
        events[0].record(stream)
        for event in events[1:]:
            fn()
            event.record(stream)
    events[-1].synchronize()
    return [be.event_ms(a, b) for a, b in zip(events, events[1:])]


def _time_launches(be, stream, launch, launches: int, repeats: int,
                   replay_timing: str = "back-to-back") -> Timing:
    """Per-launch GPU time of ``launch(i)`` (i = 0.. launches-1) following the protocol.

    back-to-back: the timed replays are enqueued behind untimed ones (at least
    LEAD_MS of GPU work) and behind each other, so the GPU is busy from the
    first event to the last and the events time the replays alone.  isolated:
    each timed replay starts on an idle GPU, so its events also hold the time
    from recording the start event to the first kernel (the host's replay call
    and the graph launch: 16-34 µs per replay on the lent H200's host, v17
    in benchmarks/NOTES.md)."""
    with be.stream_ctx(stream):
        launch(0)  # first-call setup (module load, cuBLAS workspace) outside the capture
    single_ms = _chained_ms(be, stream, lambda: launch(0), 0, 1)[0]
    if single_ms * launches > MAX_REPLAY_MS:
        launches = max(MIN_LAUNCHES, min(launches, int(MAX_REPLAY_MS / max(single_ms, 1e-3))))
    elif single_ms * launches < MIN_REPLAY_MS:
        # back to back, the host must enqueue the next replay before this one ends
        launches = math.ceil(MIN_REPLAY_MS / max(single_ms, 1e-4))

    def body():
        for i in range(launches):
            launch(i)

    mode = "graph"
    try:
        graph = be.capture(stream, body)
    except Exception as exc:  # noqa: BLE001 - reported; times still taken, run marked failed
        with contextlib.suppress(Exception):
            be.synchronize()
        graph = None
        mode = f"stream (graph capture failed: {_short_error(exc)})"

    def run_once():
        if graph is not None:
            be.replay(graph, stream)
        else:  # plain launches between the events: includes host launch gaps
            body()

    for _ in range(WARMUP_REPLAYS):
        run_once()
    if replay_timing == "back-to-back" and graph is not None:
        lead = max(1, math.ceil(LEAD_MS / max(single_ms * launches, 1e-3)))
        samples = [ms * 1e3 / launches for ms in _chained_ms(be, stream, run_once, lead, repeats)]
    else:
        samples = [_chained_ms(be, stream, run_once, 0, 1)[0] * 1e3 / launches
                   for _ in range(repeats)]
    return Timing(statistics.median(samples), samples, launches, mode)


# --------------------------------------------------------------------------- one shape


def _short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


@dataclass
class Rotation:
    """The device copies of one weight that successive launches cycle through."""

    weights: list  # fp16 arrays, or PreparedWeight
    weight_bytes: int  # bytes of one copy
    l2_rule_met: bool  # copies * weight_bytes > L2_FACTOR x L2
    host: dict | None  # numpy arrays of the int4 weight (for the reference)

    @property
    def copies(self) -> int:
        return len(self.weights)


def _rotation(be, stream, K: int, N: int, config: Config | None, args, props,
              seed: int) -> Rotation:
    """Upload one random weight and clone it until a cycle reads > L2_FACTOR x L2."""
    import int4mm

    with be.stream_ctx(stream):
        if config is None:
            first = be.randn_fp16((K, N), seed=seed, scale=1.0 / math.sqrt(K))
            host, weight_bytes = None, 2 * K * N
        else:
            host = _host_weights(K, N, config, seed, args.weights)
            weight_bytes = _nbytes(host.values())
            first = {k: (None if v is None else be.upload(v)) for k, v in host.items()}
        copies, l2_met = _rotation_copies(weight_bytes, props["l2_bytes"],
                                          props["total_memory"])
        weights = [first]
        for _ in range(copies - 1):
            weights.append(be.clone(first) if config is None else
                           {k: (None if v is None else be.clone(v)) for k, v in first.items()})
        if config is not None:
            # validate only the first: the copies are byte-identical
            weights = [int4mm.prepare(w["qweight"], w["scales"], w["zeros"], mask=w["mask"],
                                      validate=(i == 0), dtype=args.dtype)
                       for i, w in enumerate(weights)]
    be.synchronize()
    return Rotation(weights, weight_bytes, l2_met, host)


def _bench_config(be, stream, args, config: Config | None, rot: Rotation, x, out, ms,
                  checks: dict, fp16_us: dict) -> list[dict]:
    """One record per M for one config (None: the fp16 baseline)."""
    import int4mm

    K, N = x.shape[1], out.shape[1]
    name = BASELINE if config is None else config.name
    W_ref = None
    if config is not None and args.check:
        W_ref = _reference_weight(rot.host, checks["cols"])
    weights, copies = rot.weights, rot.copies
    records = []
    for M in ms:
        rec = {"K": K, "N": N, "M": M, "config": name, "weight_bytes": rot.weight_bytes,
               "copies": copies, "l2_rule_met": rot.l2_rule_met}
        xm, om = x[:M], out[:M]
        if config is None:
            def launch(i, xm=xm, om=om):
                be.matmul(xm, weights[i % copies], om)
        else:
            def launch(i, xm=xm, om=om):
                int4mm.matmul(xm, weights[i % copies], out=om, stream=stream, path=args.path)
        try:
            with be.stream_ctx(stream):
                be.fill_nan(out)  # a kernel that writes nothing cannot pass the check
            t = _time_launches(be, stream, launch, max(args.graph_launches, copies),
                               args.repeats, args.replay_timing)
            rec.update(us=t.us, us_min=min(t.samples_us), us_max=max(t.samples_us),
                       samples_us=t.samples_us, launches=t.launches, timing=t.mode)
            if config is None:
                fp16_us[M] = t.us
                rec.update(speedup=1.0, status="ok")
            else:
                base = fp16_us.get(M)
                rec["speedup"] = None if base is None else base / t.us
                rec["path"] = _chosen("chosen_path", M, weights[0]) if args.path == "auto" else args.path
                if args.path == "auto":
                    rec["decode_config"] = _chosen("chosen_config", M, weights[0])
                rec["layout"] = weights[0].layout
                rec.update(_check(be, om, M, checks.get(M), W_ref, checks["cols"],
                                  _tolerance(args)))
            if t.mode != "graph":
                rec["failure"] = t.mode
                if rec["status"] == "ok":
                    rec["status"] = "FAILED"
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            with contextlib.suppress(Exception):  # a sticky CUDA error: later configs say so
                be.synchronize()
            rec.update(status="FAILED", failure=_short_error(exc))
        if rec["status"] != "ok":
            _err(f"{rec['status']} K={K} N={N} M={M} {name}: "
                 f"{rec.get('failure') or 'error ' + str(rec.get('error'))}")
        records.append(rec)
    return records


def _tolerance(args) -> float:
    return TOLERANCE_BF16 if getattr(args, "dtype", "float16") == "bfloat16" else TOLERANCE


def _chosen(what: str, M: int, weight):
    """int4mm.chosen_path or chosen_config for the record; None if it fails
    (informational only: the cell is timed and checked either way)."""
    import int4mm

    try:
        return getattr(int4mm, what)(M, weight)
    except Exception:  # noqa: BLE001 - informational only
        return None


def _bench_shape(be, stream, args, K: int, N: int, ms, configs, props, seed: int):
    """Records for every (config, M) of one (K, N) shape: fp16 first, then each int4 config."""
    with be.stream_ctx(stream):
        x = be.randn_fp16((max(ms), K), seed=seed)
        out = be.empty_fp16((max(ms), N))
    be.synchronize()
    # rows of x (float64) and output columns compared with the reference
    checks = {"cols": _check_columns(N)}
    if args.check:
        for M in ms:
            rows = [be.download(x[a:b]) for a, b in _check_rows(M)]
            checks[M] = np.concatenate(rows).astype(np.float64)
    fp16_us = {}
    records = []
    for i, config in enumerate([None] + list(configs)):
        name = BASELINE if config is None else config.name
        try:
            rot = _rotation(be, stream, K, N, config, args, props, seed + 1 + i)
            records += _bench_config(be, stream, args, config, rot, x, out, ms, checks,
                                     fp16_us)
        except Exception as exc:  # noqa: BLE001 - one config failing must not stop the run
            _err(f"FAILED K={K} N={N} {name}: setup: {_short_error(exc)}")
            records += [{"K": K, "N": N, "M": M, "config": name, "status": "FAILED",
                         "failure": f"setup: {_short_error(exc)}"} for M in ms]
        rot = None  # free this config's copies before the next one
        be.release()
    return records


def _check(be, out, M: int, x_rows, W_ref, cols, tolerance: float = TOLERANCE) -> dict:
    """NaN/Inf over the whole output; relative Frobenius error on the checked rows/columns."""
    be.synchronize()
    result = {"finite": be.all_finite(out)}
    if W_ref is None:
        result.update(error=None, status="ok" if result["finite"] else "WRONG")
        return result
    y = np.concatenate([be.download(out[a:b]) for a, b in _check_rows(M)])
    y = y[:, cols].astype(np.float64)
    y_ref = x_rows @ W_ref
    with np.errstate(all="ignore"):
        err = float(np.linalg.norm(y - y_ref) / np.linalg.norm(y_ref))
    ok = result["finite"] and math.isfinite(err) and err <= tolerance
    result.update(error=err if math.isfinite(err) else str(err), status="ok" if ok else "WRONG")
    return result


# --------------------------------------------------------------------------- host overhead


def _host_overhead(be, calls: int) -> dict:
    """Wall-clock µs per call of back-to-back calls on a tiny shape (M = 1, K = N = 256)."""
    import int4mm

    K = N = HOST_SHAPE
    host = _fast_random_weights(K, N, None, False, seed=7)
    q, s, z = (be.upload(host[k]) for k in ("qweight", "scales", "zeros"))
    act = str(getattr(be, "act", "float16")).removeprefix("torch.")
    prepared = int4mm.prepare(q, s, z, dtype=act)
    x = be.randn_fp16((1, K), seed=8)
    y = be.empty_fp16((1, N))
    w16 = be.randn_fp16((K, N), seed=9, scale=1.0 / math.sqrt(K))
    handle = be.current_stream_handle()
    cases = {
        "int4mm.matmul(x, prepared, out=y)": lambda: int4mm.matmul(x, prepared, out=y),
        "int4mm.matmul(x, prepared, out=y, stream=handle)":
            lambda: int4mm.matmul(x, prepared, out=y, stream=handle),
        "int4mm.matmul(x, qweight, scales, zeros, out=y)":
            lambda: int4mm.matmul(x, q, s, z, out=y),
        f"{be.name}.matmul(x, w16, out=y)": lambda: be.matmul(x, w16, y),
    }
    result = {"shape": {"M": 1, "K": K, "N": N}, "calls": calls, "us_per_call": {}}
    for label, fn in cases.items():
        for _ in range(50):
            fn()
        be.synchronize()
        trials = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            be.synchronize()
            trials.append((time.perf_counter() - t0) * 1e6 / calls)
        result["us_per_call"][label] = statistics.median(trials)
    return result


# --------------------------------------------------------------------------- facts


def _git_commit() -> dict:
    """The commit measured: INT4MM_COMMIT when set (a copied tree whose .git is
    stale or absent, as on a remote GPU machine), else git."""
    env = os.environ.get("INT4MM_COMMIT")
    if env:
        return {"commit": env, "commit_source": "INT4MM_COMMIT", "dirty": None}
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists() and shutil.which("git"):
        try:
            def git(*cmd):
                return subprocess.run(["git", "-C", str(root), *cmd], capture_output=True,
                                      text=True, timeout=20, check=True).stdout.strip()

            commit = git("rev-parse", "HEAD")
            dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
            return {"commit": commit, "commit_source": "git", "dirty": dirty}
        except (OSError, subprocess.SubprocessError):
            pass
    return {"commit": "unknown", "commit_source": "unknown", "dirty": None}


_SMI_FIELDS = ("driver_version", "clocks.sm", "clocks.mem", "clocks.max.sm", "clocks.max.mem",
               "power.limit", "temperature.gpu", "pstate")


def _nvidia_smi() -> dict:
    """Read-only GPU facts from nvidia-smi, if it is present ({} otherwise)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {}
    try:
        proc = subprocess.run([exe, f"--query-gpu={','.join(_SMI_FIELDS)}",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return {}
    lines = proc.stdout.strip().splitlines()
    if not lines:
        return {}
    return dict(zip(_SMI_FIELDS, (v.strip() for v in lines[0].split(","))))


def _no_gpu_reason() -> str:
    import int4mm

    try:
        data = int4mm.info()
    except Exception as exc:  # noqa: BLE001
        return f"int4mm.info() failed: {exc}"
    if "error" in data:
        return data["error"]
    if data.get("driver_status", "ok") != "ok":
        return data["driver_status"]
    if not data["devices"]:
        return "no GPU visible"
    return "; ".join(f"GPU {d['index']} ({d['name']}): {d['reason']}" for d in data["devices"])


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


# --------------------------------------------------------------------------- output


def _cell(rec) -> str:
    if rec is None:
        return ""
    if rec.get("status") == "FAILED" and "us" not in rec:
        return "FAILED"
    sp = rec.get("speedup")
    text = f"{rec['us']:.1f}" + (f" {sp:.2f}x" if sp is not None else "")
    if rec.get("status") in ("WRONG", "FAILED"):
        text += " " + rec["status"]
    return text


def _table(records, plan, configs) -> str:
    by_key = {(r["K"], r["N"], r["M"], r["config"]): r for r in records}
    names = [c.name for c in configs]
    widths = [max(18, len(n)) for n in names]
    head = (f"{'K':>6} {'N':>6} {'M':>5}  {'fp16 us':>9}  "
            + "  ".join(f"{n:<{w}}" for n, w in zip(names, widths)) + "  marlin*")
    lines = [head, "-" * len(head)]
    for K, N, ms in plan:
        for M in ms:
            base = by_key.get((K, N, M, BASELINE))
            fp16 = (f"{base['us']:9.1f}" if base and "us" in base else f"{'FAILED':>9}")
            cells = "  ".join(f"{_cell(by_key.get((K, N, M, n))):<{w}}"
                              for n, w in zip(names, widths))
            anchor = ANCHORS.get((K, N, M))
            lines.append(f"{K:>6} {N:>6} {M:>5}  {fp16}  {cells}  "
                         + (f"{anchor[2]:.2f}x" if anchor else ""))
    lines.append("cells: int4mm us per launch and speedup over fp16 cuBLAS (> 1 is faster); "
                 "* Marlin's speedup on an H100 (PERFORMANCE.md), not measured in this run")
    return "\n".join(lines)


def _measured_label(meta: dict) -> str:
    """What was measured, for the plot's title: with INT4MM_COMMIT the tree was
    a copy whose git metadata (and so the version's +g<hash>) may be stale, so
    the commit only; else the version and the commit."""
    if meta.get("commit_source") == "INT4MM_COMMIT":
        return f"int4mm {meta['commit'][:10]}"
    return f"int4mm {meta['version']} ({meta['commit'][:10]})"


def plot(results: dict, path: Path) -> None:
    """PNG of speedup over fp16 against M for the shape with the most batch sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in results["records"] if r.get("speedup") is not None]
    counts = {}
    for r in records:
        counts.setdefault((r["K"], r["N"]), set()).add(r["M"])
    if not counts:
        return
    K, N = SWEEP_SHAPE if len(counts.get(SWEEP_SHAPE, ())) > 2 else max(
        counts, key=lambda s: len(counts[s]))
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.axhline(1.0, color="black", linewidth=1.2, label="fp16 cuBLAS")
    any_bad = False
    for config in results["configs"]:
        if config["name"] == BASELINE:
            continue
        pts = sorted((r["M"], r["speedup"]) for r in records
                     if (r["K"], r["N"], r["config"]) == (K, N, config["name"]))
        if not pts:
            continue
        ax.plot(*zip(*pts), marker="o", label=config["label"])
        bad = [(r["M"], r["speedup"]) for r in records
               if (r["K"], r["N"], r["config"]) == (K, N, config["name"])
               and r["status"] != "ok"]
        if bad:
            any_bad = True
            ax.scatter(*zip(*bad), marker="x", s=100, color="black", zorder=5)
    for idx, label, style in ((2, "Marlin (H100 anchor)", "s--"),
                              (3, "tinygemm g128 (H100 anchor)", "^:")):
        pts = sorted((m, v[idx]) for (k, n, m), v in ANCHORS.items() if (k, n) == (K, N))
        if len(pts) > 1:
            ax.plot(*zip(*pts), style, color="grey", alpha=0.6, label=label)
    if any_bad:
        ax.scatter([], [], marker="x", s=100, color="black", label="WRONG or FAILED")
    ax.set_xscale("log", base=2)
    ms = sorted(counts[(K, N)])
    ax.set_xticks(ms, [str(m) for m in ms])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("M (rows of x)")
    ax.set_ylabel("speedup over fp16 cuBLAS")
    ax.set_title(f"{_measured_label(results['int4mm'])}, K={K} N={N}, {results['gpu']['name']}",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- entry point


def _rotation_summary(records) -> list[dict]:
    """Weight copies per (shape, config), for the JSON's protocol section."""
    seen = {}
    for r in records:
        if "copies" in r:
            seen.setdefault((r["K"], r["N"], r["config"]), {
                "K": r["K"], "N": r["N"], "config": r["config"], "copies": r["copies"],
                "weight_bytes": r["weight_bytes"], "l2_rule_met": r["l2_rule_met"]})
    return list(seen.values())


def _err(msg: str) -> None:
    print(f"int4mm bench: {msg}", file=sys.stderr, flush=True)


def run(args) -> int:
    """Run the benchmark; 0 all correct, 1 a wrong or failed result, 2 no usable GPU."""
    import int4mm

    if not int4mm.is_available():
        _err(f"no usable GPU for int4mm: {_no_gpu_reason()}")
        return 2
    be, why = _pick_backend(args.framework)
    if be is None:
        _err(f"no array library that can use the GPU: {why}")
        return 2
    if args.dtype != "float16":
        if not hasattr(be, "set_dtype"):
            _err(f"--dtype {args.dtype} needs torch ({be.name} has no {args.dtype})")
            return 2
        be.set_dtype(args.dtype)

    started = time.perf_counter()
    props = be.properties()
    if not props["l2_bytes"]:
        props.update(l2_bytes=ASSUMED_L2_BYTES, l2_assumed=True)
    info = int4mm.info()
    smi_start = _nvidia_smi()
    configs = args.configs or CONFIGS
    plan = _plan(args)
    out_path = args.out or (Path("benchmarks/results") / (
        f"bench-{_slug(props['name'])}-{_dt.datetime.now():%Y%m%d-%H%M%S}.json"))
    plot_path = args.plot or (out_path.with_suffix(".png") if args.suite == "full" else None)
    _err(f"{props['name']}, {props['sm_count']} SMs, L2 {props['l2_bytes'] / 2**20:.0f} MiB; "
         f"{be.name} {be.version}; {sum(len(ms) for _, _, ms in plan)} (shape, M) points")

    try:
        host = _host_overhead(be, args.host_calls)
    except Exception as exc:  # noqa: BLE001 - recorded; the GPU timings may still work
        host = {"error": _short_error(exc)}
    be.release()

    stream = be.new_stream()
    records = []
    for i, (K, N, ms) in enumerate(plan):
        _err(f"[{i + 1}/{len(plan)}] K={K} N={N} M={','.join(map(str, ms))} "
             f"({time.perf_counter() - started:.0f} s)")
        records += _bench_shape(be, stream, args, K, N, ms, configs, props, 1000 * (i + 1))

    failures = [r for r in records if r.get("status") != "ok"]
    if "error" in host:
        failures.append({"config": "host overhead", "status": "FAILED",
                         "failure": host["error"]})
    results = {
        "schema": 1,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "suite": args.suite,
        "quick": bool(args.quick),
        "int4mm": {"version": int4mm.__version__, "layout": int4mm.LAYOUT, **_git_commit()},
        "gpu": {**props, "driver_version": smi_start.get("driver_version"),
                "nvidia_smi_start": smi_start, "nvidia_smi_end": _nvidia_smi()},
        "int4mm_info": info,
        "framework": {"name": be.name, "version": be.version},
        "python": platform.python_version(),
        "numpy": np.__version__,
        "protocol": {
            "timing": "CUDA graph of `launches` launches on a side stream, CUDA events "
                      "between replays (replay_timing), per-launch = replay / launches, "
                      "median of repeats",
            "replay_timing": args.replay_timing, "lead_ms": LEAD_MS,
            "min_replay_ms": MIN_REPLAY_MS,
            "graph_launches": args.graph_launches, "repeats": args.repeats,
            "warmup_replays": WARMUP_REPLAYS, "statistic": "median",
            "l2_factor": L2_FACTOR, "max_rotation_bytes": MAX_ROTATION_BYTES,
            "max_replay_ms": MAX_REPLAY_MS, "weights": args.weights, "path": args.path,
            "check": bool(args.check), "tolerance": _tolerance(args),
            "dtype": args.dtype,
            "check_rows": f"first and last {CHECK_ROWS} rows (all if M <= {2 * CHECK_ROWS})",
            "check_cols": f"first and last {CHECK_COLS} columns (all if N <= {2 * CHECK_COLS})",
            "rotation": _rotation_summary(records),
            # the decode kernels' programmatic dependent launch (README, "Back-to-back launches")
            "pdl": ("off (INT4MM_PDL=0)" if os.environ.get("INT4MM_PDL") == "0"
                    else "on where supported (sm_90 decode kernels)"),
        },
        "configs": [{"name": BASELINE, "label": "fp16 cuBLAS" if args.dtype == "float16"
                     else f"{args.dtype} cuBLAS"}]
                   + [{"name": c.name, "label": c.label, "group_size": c.group_size,
                       "sparse": c.sparse, "integral_zeros": c.integral_zeros}
                      for c in configs],
        "host_overhead": host,
        "records": records,
        "anchors": {f"{k}x{n}x{m}": dict(zip(("fp16_us", "seed", "marlin", "tinygemm"), v))
                    for (k, n, m), v in ANCHORS.items()},
        "ok": not failures,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }

    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=1) + "\n")
    _err(f"wrote {out_path}")
    if plot_path is not None:
        try:
            plot(results, plot_path)
            _err(f"wrote {plot_path}")
        except Exception as exc:  # noqa: BLE001 - a missing matplotlib must not lose the run
            _err(f"plot not written: {_short_error(exc)}")

    print(_table(records, plan, configs))
    if "us_per_call" in host:
        print(f"host overhead (wall clock, {host['calls']} back-to-back calls, "
              f"M=1 K=N={HOST_SHAPE}):")
        for label, us in host["us_per_call"].items():
            print(f"  {us:7.2f} us  {label}")
    for r in failures:
        where = f"K={r['K']} N={r['N']} M={r['M']} " if "K" in r else ""
        detail = r.get("failure") or f"error {r.get('error')}, finite={r.get('finite')}"
        print(f"{r['status']}: {where}{r['config']}: {detail}")
    print(f"{'all results correct' if not failures else f'{len(failures)} bad result(s)'}; "
          f"{results['elapsed_s']:.0f} s")
    return 0 if not failures else 1
