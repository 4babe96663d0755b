// The standalone harnesses' timing loop (wgmma_harness/, read_ceiling/), as the
// bench times kernels: `launches` calls captured in one CUDA graph, one warm-up
// replay, then the median of 7 timed replays, in µs per call.
#ifndef INT4MM_BENCH_GRAPH_TIME_H_
#define INT4MM_BENCH_GRAPH_TIME_H_

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <vector>

// run(i, stream) enqueues call i and says whether it could.  Returns -1 when a
// call (the warm-up one outside the graph, or one while capturing) or a CUDA
// step fails.
inline float time_graph(const std::function<bool(int, cudaStream_t)> &run, int launches) {
    cudaStream_t st;
    if (cudaStreamCreate(&st) != cudaSuccess) return -1.0f;
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    cudaEvent_t a = nullptr, b = nullptr;
    float result = -1.0f;
    // warm-up outside the graph (CUTLASS opts kernels in to their shared memory)
    bool ok = run(0, st) && cudaStreamSynchronize(st) == cudaSuccess &&
              cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
    if (ok) {
        bool captured = true;
        for (int i = 0; i < launches && captured; ++i) captured = run(i, st);
        ok = cudaStreamEndCapture(st, &graph) == cudaSuccess && captured;
    }
    ok = ok && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess && cudaEventCreate(&a) == cudaSuccess &&
         cudaEventCreate(&b) == cudaSuccess && cudaGraphLaunch(exec, st) == cudaSuccess &&
         cudaStreamSynchronize(st) == cudaSuccess;
    std::vector<float> ts;
    for (int r = 0; r < 7 && ok; ++r) {
        float ms = 0.0f;
        ok = cudaEventRecord(a, st) == cudaSuccess && cudaGraphLaunch(exec, st) == cudaSuccess &&
             cudaEventRecord(b, st) == cudaSuccess && cudaEventSynchronize(b) == cudaSuccess &&
             cudaEventElapsedTime(&ms, a, b) == cudaSuccess;
        ts.push_back(ms * 1000.0f / launches);
    }
    if (ok) {
        std::sort(ts.begin(), ts.end());
        result = ts[ts.size() / 2];
    }
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    if (a) cudaEventDestroy(a);
    if (b) cudaEventDestroy(b);
    cudaStreamDestroy(st);
    return result;
}

// Copies of a `bytes` buffer rotated past 300 MB, so that each launch reads
// its copy from DRAM (more than 4 x the 50-60 MB L2): 4 KiB-aligned, filled
// with 0x5a bytes (nonzero, so no read can be elided).  Launch i reads
// copy(i); free with cudaFree(base).
struct RotatedCopies {
    char *base = nullptr;  // nullptr: the GPU had no room (a message was printed)
    size_t pitch = 0;
    int copies = 0;
    const char *copy(int i) const { return base + size_t(i % copies) * pitch; }
};
inline RotatedCopies alloc_rotated(size_t bytes) {
    RotatedCopies r;
    r.pitch = (bytes + 4095) / 4096 * 4096;
    r.copies = int(std::max<size_t>(2, (size_t(300) << 20) / r.pitch + 1));
    if (cudaMalloc(&r.base, r.pitch * r.copies) != cudaSuccess ||
        cudaMemset(r.base, 0x5a, r.pitch * r.copies) != cudaSuccess) {
        printf("no room for %d copies of %.1f MB\n", r.copies, bytes / 1e6);
        cudaFree(r.base);
        r.base = nullptr;
    }
    return r;
}

// "<GPU>, <n> SMs; graph of <launches> launches, ...": the probes' first line.
inline void print_device_line(int launches) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return;
    printf("%s, %d SMs; graph of %d launches, copies rotated past 300 MB, median of 7\n", prop.name,
           prop.multiProcessorCount, launches);
}

#endif  // INT4MM_BENCH_GRAPH_TIME_H_
