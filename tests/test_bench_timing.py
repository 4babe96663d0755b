"""The benchmark's replay timing on a simulated GPU (no GPU needed).

The simulated GPU runs enqueued work in order; the host pays a fixed cost per
replay call before the work reaches the GPU.  Timed back to back, a replay
must cost its kernels' time alone; timed in isolation, it also holds the
host's replay call (the gap the back-to-back protocol removes).
"""

import contextlib
import math

import pytest

from int4mm import bench

KERNEL_US = 7.0  # GPU time of one launch
HOST_US = 30.0  # host time of one replay call before its work reaches the GPU


class _Event:
    def __init__(self, gpu):
        self.gpu, self.t = gpu, None

    def record(self, stream):
        self.t = max(self.gpu.host, self.gpu.free)  # when the GPU gets to it

    def synchronize(self):
        self.gpu.synchronize()


class _SimulatedGpu:
    """The backend interface _time_launches uses, over a simulated timeline (µs)."""

    def __init__(self):
        self.host = 0.0  # host clock
        self.free = 0.0  # when the GPU has finished everything enqueued
        self.capturing = False  # inside capture(): launches go into the graph
        self.captured = 0  # launches captured into the graph
        self.replays = 0  # replays enqueued

    def _enqueue(self, us):
        self.free = max(self.host, self.free) + us

    def stream_ctx(self, stream):
        return contextlib.nullcontext()

    def capture(self, stream, body):
        self.capturing = True
        body()
        self.capturing = False
        return self.captured

    def launch(self, i):
        if self.capturing:
            self.captured += 1
        else:
            self.host += 5.0
            self._enqueue(KERNEL_US)

    def replay(self, graph, stream):
        self.host += HOST_US
        self.replays += 1
        self._enqueue(graph * KERNEL_US)

    def synchronize(self):
        self.host = max(self.host, self.free)

    def timing_event(self):
        return _Event(self)

    def event_ms(self, start, end):
        return (end.t - start.t) / 1e3


@pytest.mark.parametrize("launches", [3, 50, 400])
def test_back_to_back_replays_time_the_kernels_alone(launches):
    gpu = _SimulatedGpu()
    t = bench._time_launches(gpu, None, gpu.launch, launches, repeats=5)
    assert t.mode == "graph"
    # 3 launches (21 µs) would end before the host's next replay call (30 µs):
    # the graph gets enough for MIN_REPLAY_MS of GPU time
    if launches == 3:
        assert t.launches == math.ceil(bench.MIN_REPLAY_MS * 1e3 / KERNEL_US)
    else:
        assert t.launches == launches
    assert t.samples_us == pytest.approx([KERNEL_US] * 5)
    # the untimed lead covers at least LEAD_MS of GPU work (or one replay)
    lead_us = (gpu.replays - bench.WARMUP_REPLAYS - 5) * t.launches * KERNEL_US
    assert lead_us >= min(bench.LEAD_MS * 1e3, t.launches * KERNEL_US)


def test_isolated_replays_hold_the_host_call():
    gpu = _SimulatedGpu()
    t = bench._time_launches(gpu, None, gpu.launch, 50, repeats=5, replay_timing="isolated")
    # the first timed replay queues behind the warm-ups; the others start on an idle GPU
    assert t.samples_us[0] == pytest.approx(KERNEL_US)
    assert t.samples_us[1:] == pytest.approx([KERNEL_US + HOST_US / 50] * 4)
    assert t.us == pytest.approx(KERNEL_US + HOST_US / 50)


def test_plot_title_names_the_commit_measured(monkeypatch):
    """With INT4MM_COMMIT (a copied tree, stale git metadata) the title names
    only that commit, not the version string's +g<hash>; else both."""
    monkeypatch.setenv("INT4MM_COMMIT", "77aa53c")
    meta = {"version": "0.1.0.dev169+gf0e416d.dirty", **bench._git_commit()}
    assert meta["commit_source"] == "INT4MM_COMMIT"
    assert bench._measured_label(meta) == "int4mm 77aa53c"
    meta = {"version": "0.1.0.dev169+g77aa53c", "commit": "77aa53c0123456789abc", "commit_source": "git"}
    assert bench._measured_label(meta) == "int4mm 0.1.0.dev169+g77aa53c (77aa53c012)"
