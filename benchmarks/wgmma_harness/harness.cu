// Standalone check + timing of every wgmma (CUTLASS) configuration of
// src/cuda/matmul_wgmma.cu against fp16 cuBLAS, without the rest of the
// library: which configuration each shape should get (benchmarks/NOTES.md, v12, v13, v14, v18).
// Build (nvcc, CUTLASS headers from the nvidia-cutlass wheel; ~4 min on 2 cores):
//   nvcc -std=c++17 -O3 --expt-relaxed-constexpr -DNDEBUG -gencode=arch=compute_90a,code=sm_90a \
//        -I<site-packages>/cutlass_library/source/include -Isrc/cuda \
//        benchmarks/wgmma_harness/harness.cu -o wgh -ldl
// (-DWGH_EXTRA adds candidate configs that the library does not build: cfg 12 and up.)
// Run on an sm_90 GPU:
//   CUBLAS_LIB=<path to libcublas.so> SHAPES="K,N,M,G ..." [CFGS="cfg,splits ..."] [XCFGS="cfg ..."] ./wgh
// For each shape: fp16 cuBLAS (cublasGemmEx, fp32 accumulation), the
// automatic choice and configs 0-11 (stream-K ones also with split-K 2 and 4;
// 8 and 9 only for per-channel weights, 9-11 only where K tiles of 128 apply),
// each checked against float64 on sampled rows and columns (outputs
// NaN-poisoned first) and timed: a CUDA graph of LAUNCHES launches (default
// 20) over weight copies rotated past 300 MB, median of 7 replays, in ROUNDS
// (default 3) interleaved rounds, median.  cuBLAS reads constant data (a
// memset): it runs cooler and faster than on random data, so its column is
// for scale only; the bench's ratios are the ones to quote.
// WGH_NODES=1 ./wgh instead times the graph nodes around a launch (an empty
// kernel alone, with a stream-ordered alloc/free around it, with a kernel
// before it: benchmarks/NOTES.md, v14).
#include "../../src/cuda/matmul_wgmma_f16.cu"
#include "../../src/cuda/matmul_wgmma_f16_small.cu"
#include "../../src/cuda/matmul_wgmma_f16_wide.cu"
// fp16 only: the bf16 instantiations (matmul_wgmma_bf16*.cu) double the build.
namespace int4mm {
namespace wgmma {
namespace detail {
template <>
int4mm_status run_large<cutlass::bfloat16_t>(int, const int4mm_matmul_args &, cudaStream_t, int, int) {
    return INT4MM_ERR_UNSUPPORTED;
}
template <>
int4mm_status run_small<cutlass::bfloat16_t>(int, const int4mm_matmul_args &, cudaStream_t, int, int) {
    return INT4MM_ERR_UNSUPPORTED;
}
template <>
int4mm_status run_wide<cutlass::bfloat16_t>(int, const int4mm_matmul_args &, cudaStream_t, int, int) {
    return INT4MM_ERR_UNSUPPORTED;
}
}  // namespace detail
}  // namespace wgmma
}  // namespace int4mm
#include "../../src/cuda/matmul_wgmma.cu"

// Candidate configurations not in the library (cfg 12 and up here), built
// only when the harness is compiled with -DWGH_EXTRA.  Measured in v13 and
// kept: 128x64 and 128x128 stream-K with K tiles of 128 (now configs 7 and
// 6); in v14, config 7 with the scales in the epilogue (now config 8); in
// v18, 256-column weight tiles (x17 / x19 / x20 then, now configs 9-11).
// Not kept (v13, v14; their definitions are in git history): pingpong 64x256
// with K tiles of 128 and the per-channel twins of configs 6, 0 and 3; in
// v18, configs 8 and 6 with 2x1 clusters (the x tile multicast to both CTAs
// of a weight-tile pair: 1-7% slower at M = 64, even at M = 128, so L2
// traffic for x is not what limits M = 32-128).
#if defined(WGH_EXTRA)
namespace int4mm {
namespace wgmma {
namespace detail {
template <class MmaT> using X18 = Config<MmaT, 128, 64, 2, Coop, CoopEpi, StreamK, 128, true>;   // cfg 8, 2x1 cluster
template <class MmaT> using X21 = Config<MmaT, 128, 128, 2, Coop, CoopEpi, StreamK, 128>;        // cfg 6, 2x1 cluster
}  // namespace detail
}  // namespace wgmma
}  // namespace int4mm
static int4mm_status run_extra(int cfg, const int4mm_matmul_args &a, cudaStream_t st, int sms, int splits) {
    using namespace int4mm::wgmma::detail;
    using H = cutlass::half_t;
    if (cfg == 18) return run_config<H, X18<H>>(a, st, sms, splits);
    if (cfg == 21) return run_config<H, X21<H>>(a, st, sms, splits);
    return INT4MM_ERR_INVALID_ARGUMENT;
}
// cfg, whether it is per-channel only, whether it takes split-K
struct Extra { int cfg; bool per_channel; bool stream_k; };
static const Extra kExtra[] = {{18, true, true}, {21, false, true}};
#else
static int4mm_status run_extra(int, const int4mm_matmul_args &, cudaStream_t, int, int) {
    return INT4MM_ERR_INVALID_ARGUMENT;
}
struct Extra { int cfg; bool per_channel; bool stream_k; };
static const Extra kExtra[] = {{-1, false, false}};
#endif

#include "../cublas_f16.h"
#include "../graph_time.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace int4mm {
int4mm_status fail(int4mm_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    return s;
}
int4mm_status fail_cuda(cudaError_t e, const char *w) {
    fprintf(stderr, "%s: %s\n", w, cudaGetErrorString(e));
    return INT4MM_ERR_CUDA;
}
void clear_error() {}
int4mm_status device_attrs(int device, DeviceAttrs *out) {
    cudaDeviceGetAttribute(&out->major, cudaDevAttrComputeCapabilityMajor, device);
    cudaDeviceGetAttribute(&out->minor, cudaDevAttrComputeCapabilityMinor, device);
    cudaDeviceGetAttribute(&out->sms, cudaDevAttrMultiProcessorCount, device);
    return INT4MM_OK;
}
}  // namespace int4mm

using namespace int4mm;

#define CK(x)                                                                          \
    do {                                                                               \
        cudaError_t e_ = (x);                                                          \
        if (e_ != cudaSuccess) {                                                       \
            printf("CUDA %s at %d\n", cudaGetErrorString(e_), __LINE__);               \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

static uint64_t g_rs = 88172645463325252ull;
static uint32_t rnd() {
    g_rs ^= g_rs << 13;
    g_rs ^= g_rs >> 7;
    g_rs ^= g_rs << 17;
    return static_cast<uint32_t>(g_rs >> 11);
}
static float frand() { return (rnd() & 0xFFFFFF) / 16777216.0f; }
static uint16_t f2h(float f) {
    __half h = __float2half_rn(f);
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
}
static float h2f(uint16_t u) {
    __half h;
    memcpy(&h, &u, 2);
    return __half2float(h);
}

static const int g_launches = getenv("LAUNCHES") ? atoi(getenv("LAUNCHES")) : 20;
static const int g_rounds = getenv("ROUNDS") ? atoi(getenv("ROUNDS")) : 3;

// Median µs per launch of `run(i)` (i: launch index) replayed from a graph
// of g_launches; -1 when a launch fails.
static float time_graph(const std::function<bool(int, cudaStream_t)> &run) { return time_graph(run, g_launches); }

// fp16 cuBLAS, y = x W with W [K, N] fp16 (one copy; constant data).
static float time_cublas(int K, int N, int M) {
    __half *w, *x, *y;
    CK(cudaMalloc(&w, size_t(K) * N * 2));
    CK(cudaMalloc(&x, size_t(M) * K * 2));
    CK(cudaMalloc(&y, size_t(M) * N * 2));
    CK(cudaMemset(w, 0x22, size_t(K) * N * 2));
    CK(cudaMemset(x, 0x22, size_t(M) * K * 2));
    const float t = time_graph([&](int, cudaStream_t st) { return cublas_gemm_f16(st, M, N, K, x, w, y); });
    cudaFree(w);
    cudaFree(x);
    cudaFree(y);
    return t > 0 ? t : 0.0f;
}

struct Shape {
    int K, N, M, G;
};

__global__ void empty_kernel() {}

// WGH_NODES=1: what the graph nodes around a wgmma launch cost per launch
// (v14): an empty kernel alone, with a stream-ordered allocation and free
// around it (as the stream-K / per-channel configs take their workspace),
// and with a second small kernel before it (as config 8's row sums).
static float node_cost(bool with_alloc, bool kernel_before) {
    return time_graph([=](int, cudaStream_t st) {
        void *ws = nullptr;
        if (with_alloc && cudaMallocAsync(&ws, 1 << 20, st) != cudaSuccess) return false;
        if (kernel_before) empty_kernel<<<64, 1024, 0, st>>>();
        empty_kernel<<<132, 128, 0, st>>>();
        if (with_alloc && cudaFreeAsync(ws, st) != cudaSuccess) return false;
        return cudaGetLastError() == cudaSuccess;
    });
}

static int node_costs() {
    const float bare = node_cost(false, false), alloc = node_cost(true, false);
    const float two = node_cost(false, true), both = node_cost(true, true);
    printf("graph of %d: empty kernel %.2f us; + malloc/free async %.2f; + a kernel before it %.2f; both %.2f\n",
           g_launches, bare, alloc, two, both);
    return 0;
}

int main() {
    if (getenv("WGH_NODES")) return node_costs();
    std::vector<Shape> shapes;
    const char *v = getenv("SHAPES");
    if (v == nullptr)
        v = "1024,1024,2048,1024 5120,5120,2048,5120 20480,5120,2048,20480 5120,20480,2048,5120 "
            "8192,8192,1024,8192 8192,8192,2048,8192";
    for (const char *q = v; *q;) {
        Shape s{};
        int used = 0;
        if (sscanf(q, " %d,%d,%d,%d%n", &s.K, &s.N, &s.M, &s.G, &used) != 4) break;
        shapes.push_back(s);
        q += used;
    }
    int sms = 0;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    bool usable = false;
    if (wgmma::device_usable(0, &usable, nullptr) != INT4MM_OK || !usable) {
        printf("device 0 cannot run the sm_90a kernels\n");
        return 1;
    }
    int failures = 0;
    for (const Shape &s : shapes) {
        if (!wgmma::supported(s.K, s.N, s.G)) {
            printf("K=%d N=%d M=%d G=%d: unsupported\n", s.K, s.N, s.M, s.G);
            continue;
        }
        // Raw weights (q in 0..15, fractional zero points), x in [-1, 1).
        const size_t qwords = size_t(s.K / 8) * s.N, ng = size_t(s.K / s.G) * s.N;
        std::vector<uint32_t> hq(qwords);
        for (auto &w : hq) w = rnd();
        std::vector<uint16_t> hs(ng), hz(ng), hx(size_t(s.M) * s.K);
        for (size_t i = 0; i < ng; ++i) {
            hs[i] = f2h((0.5f + frand()) * 0.02f);
            hz[i] = f2h(frand() * 15.0f);
        }
        for (auto &x : hx) x = f2h(frand() * 2.0f - 1.0f);
        int32_t *dq;
        uint16_t *ds, *dz, *dx, *dy;
        CK(cudaMalloc(&dq, qwords * 4));
        CK(cudaMalloc(&ds, ng * 2));
        CK(cudaMalloc(&dz, ng * 2));
        CK(cudaMalloc(&dx, hx.size() * 2));
        CK(cudaMalloc(&dy, size_t(s.M) * s.N * 2));
        CK(cudaMemcpy(dq, hq.data(), qwords * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(ds, hs.data(), ng * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dz, hz.data(), ng * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dx, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
        const size_t pbytes = wgmma::prepared_bytes(s.K, s.N, s.G);
        const int copies = static_cast<int>(std::min<size_t>(64, (size_t(300) << 20) / pbytes + 1));
        char *dp;
        CK(cudaMalloc(&dp, pbytes * copies));
        if (wgmma::prepare(dq, ds, dz, INT4MM_DTYPE_FP16, s.K, s.N, s.G, dp, 0) != INT4MM_OK) return 1;
        for (int i = 1; i < copies; ++i) CK(cudaMemcpy(dp + i * pbytes, dp, pbytes, cudaMemcpyDeviceToDevice));
        CK(cudaDeviceSynchronize());

        // float64 reference on sampled rows and columns.
        std::vector<int> rows, cols;
        for (int m = 0; m < s.M; m += std::max(1, s.M / 24)) rows.push_back(m);
        rows.push_back(s.M - 1);
        for (int n = 0; n < s.N; n += std::max(1, s.N / 24)) cols.push_back(n);
        cols.push_back(s.N - 1);
        std::vector<double> ref;
        for (int m : rows)
            for (int n : cols) {
                double acc = 0.0;
                for (int k = 0; k < s.K; ++k) {
                    const int q = (hq[size_t(k / 8) * s.N + n] >> (4 * (k % 8))) & 15;
                    const size_t gi = size_t(k / s.G) * s.N + n;
                    acc += double(h2f(hx[size_t(m) * s.K + k])) * (q - double(h2f(hz[gi]))) * double(h2f(hs[gi]));
                }
                ref.push_back(acc);
            }

        auto args_for = [&](int copy) {
            int4mm_matmul_args a{};
            a.x = dx;
            a.y = dy;
            a.ldx = s.K;
            a.ldy = s.N;
            a.M = s.M;
            a.N = s.N;
            a.K = s.K;
            a.group_size = s.G;
            a.dtype = INT4MM_DTYPE_FP16;
            a.device = 0;
            a.prepared = dp + size_t(copy) * pbytes;
            a.layout = INT4MM_LAYOUT_SM90_WGMMA;
            return a;
        };
        // cfg -1: the automatic choice; splits 0: CUTLASS's stream-K heuristic.
        auto launch = [&](int cfg, int splits, int copy, cudaStream_t st) {
            int4mm_matmul_args a = args_for(copy);
            if (cfg < 0) return wgmma::launch_config(a, st, -1) == INT4MM_OK;
            if (cfg >= wgmma::detail::kNumConfigs) return run_extra(cfg, a, st, sms, splits) == INT4MM_OK;
            return wgmma::detail::run<cutlass::half_t>(cfg, a, st, sms, splits) == INT4MM_OK;
        };
        auto check = [&](int cfg, int splits) -> double {
            CK(cudaMemset(dy, 0xFF, size_t(s.M) * s.N * 2));  // NaN
            if (!launch(cfg, splits, 0, 0)) return 1e9;
            CK(cudaDeviceSynchronize());
            std::vector<uint16_t> hy(size_t(s.M) * s.N);
            CK(cudaMemcpy(hy.data(), dy, hy.size() * 2, cudaMemcpyDeviceToHost));
            for (uint16_t y : hy)
                if (std::isnan(h2f(y))) return 1e9;
            double num = 0.0, den = 0.0;
            size_t i = 0;
            for (int m : rows)
                for (int n : cols) {
                    const double d = h2f(hy[size_t(m) * s.N + n]) - ref[i];
                    num += d * d;
                    den += ref[i] * ref[i];
                    ++i;
                }
            return std::sqrt(num / den);
        };

        int auto_splits = 0;
        const int auto_cfg = wgmma::choose_config(s.M, s.N, s.K, s.G, sms, &auto_splits);
        const float tc = time_cublas(s.K, s.N, s.M);
        printf("K=%d N=%d M=%d G=%d cublas %.1f us | auto cfg%d split%d", s.K, s.N, s.M, s.G, tc, auto_cfg,
               auto_splits);
        struct Cand {
            int cfg, splits;
        };
        std::vector<Cand> cands = {{-1, 0}, {0, 0}, {1, 0}, {2, 0}, {3, 0}, {3, 2}, {4, 0}, {4, 2}, {4, 4},
                                   {5, 0}, {5, 2}, {6, 0}, {6, 2}, {7, 0}, {7, 2}};
        if (s.G == s.K && s.K % 128 == 0) {  // configs 8 and 9: per-channel weights only
            cands.push_back({8, 0});
            cands.push_back({8, 2});
            cands.push_back({9, 0});
        }
        if (s.K % 128 == 0 && (s.G == s.K || s.G % 128 == 0)) {  // 256-column tiles (v18)
            cands.push_back({10, 0});
            cands.push_back({11, 0});
        }
        if (getenv("CFGS")) {  // CFGS="cfg,splits cfg,splits ...": only those (and auto)
            cands = {{-1, 0}};
            for (const char *q = getenv("CFGS"); *q;) {
                Cand c{};
                int used = 0;
                if (sscanf(q, " %d,%d%n", &c.cfg, &c.splits, &used) != 2) break;
                cands.push_back(c);
                q += used;
            }
        }
        const char *xcfgs = getenv("XCFGS");  // XCFGS="17 19": only those extras
        for (const Extra &x : kExtra)
            if (x.cfg >= 0 && (!xcfgs || strstr((" " + std::string(xcfgs) + " ").c_str(),
                                                (" " + std::to_string(x.cfg) + " ").c_str())) && (s.G == s.K || s.G % 128 == 0) && s.K % 128 == 0 && (!x.per_channel || s.G == s.K)) {
                cands.push_back({x.cfg, 0});
                if (x.stream_k) {
                    cands.push_back({x.cfg, 2});
                    cands.push_back({x.cfg, 4});
                }
            }
        // Every candidate checked, then timed in ROUNDS interleaved rounds
        // (the clock drifts as the GPU heats: one pass favours the first);
        // the median per candidate.
        std::vector<bool> ok(cands.size());
        std::vector<std::vector<float>> ts(cands.size());
        for (size_t j = 0; j < cands.size(); ++j) {
            const double err = check(cands[j].cfg, cands[j].splits);
            ok[j] = err < 2e-3;
            if (!ok[j]) ++failures;
        }
        for (int r = 0; r < g_rounds; ++r)
            for (size_t j = 0; j < cands.size(); ++j)
                if (ok[j]) {
                    const Cand c = cands[j];
                    ts[j].push_back(time_graph([&](int i, cudaStream_t st) { return launch(c.cfg, c.splits, i % copies, st); }));
                }
        float best = 1e30f;
        std::string best_name;
        for (size_t j = 0; j < cands.size(); ++j) {
            const Cand &c = cands[j];
            char name[32];
            if (c.cfg < 0) snprintf(name, sizeof name, "auto");
            else if (c.cfg >= wgmma::detail::kNumConfigs && c.splits) snprintf(name, sizeof name, "x%ds%d", c.cfg, c.splits);
            else if (c.cfg >= wgmma::detail::kNumConfigs) snprintf(name, sizeof name, "x%d", c.cfg);
            else if (c.splits) snprintf(name, sizeof name, "c%ds%d", c.cfg, c.splits);
            else snprintf(name, sizeof name, "c%d", c.cfg);
            if (!ok[j]) {
                printf(" %s:FAIL", name);
                continue;
            }
            std::sort(ts[j].begin(), ts[j].end());
            const float t = ts[j][ts[j].size() / 2];
            printf(" %s:%.1f", name, t);
            if (c.cfg >= 0 && t > 0 && t < best) {
                best = t;
                best_name = name;
            }
        }
        if (best_name.empty()) printf("\n");  // only the automatic choice was timed
        else printf(" | best %s %.1f us (%.2fx cublas)\n", best_name.c_str(), best, tc / best);
        fflush(stdout);
        cudaFree(dq);
        cudaFree(ds);
        cudaFree(dz);
        cudaFree(dx);
        cudaFree(dy);
        cudaFree(dp);
    }
    printf("failures: %d\n", failures);
    return failures ? 1 : 0;
}
