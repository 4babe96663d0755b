// Standalone check + timing of the decode kernel (src/cuda/matmul_decode.cu)
// on synthetic fragment-ordered weights, without the rest of the library
// (benchmarks/NOTES.md, v5).  Build (any machine with nvcc), run on the GPU:
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -I../../src/cuda harness.cu -o harness
//   ./harness check      every config on ragged shapes, fp16 and bf16, vs float64
//   ./harness rr         configs interleaved over 5 rounds on the target shapes
//   ./harness m1 | g1 | m16   one-pass sweeps (g1: M = 1, G = 128)
//   SHAPES="K,N,M,G ..." ./harness shapes   the same sweep on those shapes
//   DEFAULTS_ONLY=1 times the default config only (DCFG="nb,mt,u,wk,ks,stages": that config instead)
//   ONLY57=1 ./harness check   only the 5- and 7-block register-ring configs (v24)
//   ./harness host       host cost per call of a launch and of the decode entry (tiny shape)
//   ANY_MT=1 sweeps every row tiling (mt = 1, 2, 4) whatever M is, not only the smallest that holds M
//   STAGES="0 2 3" adds the shared-memory-ring kernels to a sweep (0: registers;
//   M = 9-16 runs the mt = 2 ring kernels, x through the ring: v9)
// INT4MM_PDL=0 launches without programmatic dependent launch (as the library
// does then); PF=n prefetches n chunks per warp into L2 before a PDL launch
// waits for the previous kernel (default: the ring's prologue).
// X_DC=d centres x on d (uniform in [d - 1, d + 1); default 0): the sums of x
// large next to the products, for the offset codes (benchmarks/NOTES.md, v19).
// LDX_PAD=n sets the row stride of x to K + n (default 8; 0 = contiguous x; a
// multiple of 8 for the mt = 2 ring kernels, which copy rows in 16-byte pieces).
// COPIES, GAP_KB, LAUNCHES: weight copies rotated (default: > 300 MB), slack
// between copies, launches per timed graph (default 20).
// The v10 wgmma experiment (wgdecode_experiment.cu) is built in when the
// CUTLASS/CuTe headers are on the include path (add -I<cutlass include>
// --expt-relaxed-constexpr -DNDEBUG -ldl):
//   ./harness wcheck | wscheck   its configs vs float64 (wscheck: a few, for compute-sanitizer)
//   ./harness wsweep             SHAPES (default: M = 16-128 targets) vs fp16 cuBLAS
//                                (CUBLAS_LIB=<path to libcublas.so>), the decode kernel
//                                and every config; WCFG="j,mn,ks,stages" replaces the default
#include "../../src/cuda/matmul_decode.cu"
#if __has_include(<cute/arch/mma_sm90_gmma.hpp>)
#define HARNESS_WGDECODE 1
#include "wgdecode_experiment.cu"  // the v10 wgmma experiment (needs the CUTLASS include path)
#endif
#include "../cublas_f16.h"
#include <cstdarg>
#include <chrono>
#include <functional>
#include <vector>
#include <algorithm>
#include <cmath>
#include <string>
#include <cstdio>
#include <cstdlib>

namespace int4mm {
int4mm_status fail(int4mm_status s, const char *fmt, ...) {
    va_list ap; va_start(ap, fmt); vfprintf(stderr, fmt, ap); va_end(ap); fprintf(stderr, "\n"); return s;
}
int4mm_status fail_cuda(cudaError_t e, const char *w) { fprintf(stderr, "%s: %s\n", w, cudaGetErrorString(e)); return INT4MM_ERR_CUDA; }
void clear_error() {}
#if defined(HARNESS_WGDECODE)
namespace wgmma { bool compiled() { return true; } }  // this harness is built for sm_90a only
#endif
int4mm_status device_attrs(int device, DeviceAttrs *out) {
    cudaDeviceGetAttribute(&out->major, cudaDevAttrComputeCapabilityMajor, device);
    cudaDeviceGetAttribute(&out->minor, cudaDevAttrComputeCapabilityMinor, device);
    cudaDeviceGetAttribute(&out->sms, cudaDevAttrMultiProcessorCount, device);
    int khz = 0, bits = 0;
    cudaDeviceGetAttribute(&khz, cudaDevAttrMemoryClockRate, device);
    cudaDeviceGetAttribute(&bits, cudaDevAttrGlobalMemoryBusWidth, device);
    out->dram_bytes_per_s = 2.0 * khz * 1e3 * bits / 8.0;
    return INT4MM_OK;
}
bool pdl_enabled() {  // INT4MM_PDL=0 turns PDL off, as in the library
    static const bool on = !(getenv("INT4MM_PDL") && strcmp(getenv("INT4MM_PDL"), "0") == 0);
    return on;
}
}
using namespace int4mm;
#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("CUDA %s at %d\n", cudaGetErrorString(e_), __LINE__); exit(1);} } while (0)

static int g_pad = getenv("LDX_PAD") ? atoi(getenv("LDX_PAD")) : 8;
static uint64_t rs = 88172645463325252ull;
static inline uint32_t rnd() { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (uint32_t)(rs >> 11); }
static inline float frand() { return (rnd() & 0xFFFFFF) / 16777216.0f; }

static uint16_t f2h(float f) { __half h = __float2half_rn(f); uint16_t u; memcpy(&u, &h, 2); return u; }
static float h2f(uint16_t u) { __half h; memcpy(&h, &u, 2); return __half2float(h); }
static uint16_t f2b(float f) { __nv_bfloat16 h = __float2bfloat16_rn(f); uint16_t u; memcpy(&u, &h, 2); return u; }
static float b2f(uint16_t u) { uint32_t v = uint32_t(u) << 16; float f; memcpy(&f, &v, 4); return f; }

struct Shape { int K, N, M, G; };

// q (0..15) at (k, n) of the fragment-ordered words.
static int code_at(const std::vector<uint32_t> &w, int N16, int k, int n) {
    int nb = n / 16, kb = k / 16, row = n % 16, col = k % 16;
    int g = row % 8, c = (col % 8) / 2, t = 4 * g + c;
    int v = (col % 2) + 2 * (row / 8) + 4 * (col / 8);
    int pos = (v % 2) * 4 + v / 2;
    uint32_t word = w[(size_t(nb) + size_t(kb) * N16) * 32 + t];
    return int((word >> (4 * pos)) & 0xF) ^ 8;
}

struct Case {
    Shape sh; bool bf16;
    std::vector<uint32_t> hw; std::vector<uint16_t> hs, hz, hx;
    uint32_t *dw = nullptr; uint16_t *ds = nullptr, *dz = nullptr, *drec = nullptr, *dx = nullptr, *dy = nullptr;
    int copies = 1; size_t recpitch = 0, wwords = 0, wpitch = 0, ng = 0;
    std::vector<int> cols; std::vector<double> ref;
};

static void setup(Case &cs, bool timing) {
    const Shape &s = cs.sh;
    size_t wwords = size_t(s.K) * s.N / 8;
    cs.wwords = wwords;
    cs.hw.resize(wwords);
    for (auto &v : cs.hw) v = rnd();
    size_t ng = size_t(s.K / s.G) * s.N;
    cs.hs.resize(ng); cs.hz.resize(ng);
    for (size_t i = 0; i < ng; ++i) {
        float sc = (0.5f + frand()) * 0.02f;
        float z = frand() * 15.0f;  // non-integral zero points
        if (cs.bf16) { cs.hs[i] = f2b(sc); cs.hz[i] = f2b(-(z - 8.0f) * b2f(cs.hs[i])); }
        else { cs.hs[i] = f2h(sc); cs.hz[i] = f2h(-(z - 8.0f) * h2f(cs.hs[i])); }
    }
    size_t ldx = size_t(s.K) + g_pad;
    cs.hx.resize(size_t(s.M) * ldx);
    const float dc = getenv("X_DC") ? float(atof(getenv("X_DC"))) : 0.0f;
    for (auto &v : cs.hx) { float f = frand() * 2.0f - 1.0f + dc; v = cs.bf16 ? f2b(f) : f2h(f); }
    size_t wbytes = wwords * 4;
    cs.copies = timing ? std::max<size_t>(1, (300u << 20) / wbytes + 1) : 1;
    if (timing && getenv("COPIES")) cs.copies = atoi(getenv("COPIES"));
    // copy i of the weight words starts at i * wpitch words (GAP_KB of slack between copies)
    cs.wpitch = wwords + (getenv("GAP_KB") ? size_t(atoi(getenv("GAP_KB"))) * 256 : 0);
    CK(cudaMalloc(&cs.dw, cs.wpitch * 4 * cs.copies));
    for (int i = 0; i < cs.copies; ++i) CK(cudaMemcpy(cs.dw + i * cs.wpitch, cs.hw.data(), wbytes, cudaMemcpyHostToDevice));
    // scales and zero_c rotate with the weights (grouped ones are 6% of the bytes at G = 128)
    cs.ng = ng;
    CK(cudaMalloc(&cs.ds, ng * 2 * cs.copies)); CK(cudaMalloc(&cs.dz, ng * 2 * cs.copies));
    for (int i = 0; i < cs.copies; ++i) {
        CK(cudaMemcpy(cs.ds + i * ng, cs.hs.data(), ng * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(cs.dz + i * ng, cs.hz.data(), ng * 2, cudaMemcpyHostToDevice));
    }
    // grouped weights: the decode kernel's scale records, as int4mm_prepare writes them
    if (s.G != s.K) {
        cs.recpitch = ng * 2;  // 16-bit values: s and zero_c
        CK(cudaMalloc(&cs.drec, cs.recpitch * 2 * cs.copies));
        for (int i = 0; i < cs.copies; ++i)
            if (prepare_decode_records(cs.ds + i * ng, cs.dz + i * ng, s.K / s.G, s.N, cs.drec + i * cs.recpitch, 0) !=
                INT4MM_OK) { printf("prepare_decode_records failed\n"); exit(1); }
        CK(cudaDeviceSynchronize());
    }
    CK(cudaMalloc(&cs.dx, cs.hx.size() * 2));
    CK(cudaMemcpy(cs.dx, cs.hx.data(), cs.hx.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMalloc(&cs.dy, size_t(s.M) * (s.N + 8) * 2));
}
static void teardown(Case &cs) { cudaFree(cs.drec); cudaFree(cs.dw); cudaFree(cs.ds); cudaFree(cs.dz); cudaFree(cs.dx); cudaFree(cs.dy); }

static MatmulProblem problem(Case &cs, int copy) {
    MatmulProblem p{};
    const Shape &s = cs.sh;
    p.x = cs.dx; p.y = cs.dy; p.bias = nullptr; p.mask = nullptr; p.qweight = nullptr;
    p.ldx = s.K + g_pad; p.ldy = s.N + 8; p.M = s.M; p.N = s.N; p.K = s.K; p.group_size = s.G; p.group_shift = -1;
    p.dtype = cs.bf16 ? INT4MM_DTYPE_BF16 : INT4MM_DTYPE_FP16;
    p.frag.codes = cs.dw + size_t(copy) * cs.wpitch; p.frag.scales = cs.ds + size_t(copy) * cs.ng;
    p.frag.zero_c = cs.dz + size_t(copy) * cs.ng;
    if (cs.drec) p.frag.records = reinterpret_cast<const uint32_t *>(cs.drec + size_t(copy) * cs.recpitch);
    return p;
}

using Launcher = std::function<int4mm_status(const MatmulProblem &, cudaStream_t)>;
static Launcher decode_launcher(DecodeConfig cfg) {
    return [cfg](const MatmulProblem &p, cudaStream_t s) { return launch_matmul_decode(p, s, cfg); };
}

static double check_with(Case &cs, const Launcher &launch) {
    const Shape &s = cs.sh;
    size_t ny = size_t(s.M) * (s.N + 8);
    CK(cudaMemset(cs.dy, 0xFF, ny * 2));  // NaN poison
    MatmulProblem p = problem(cs, 0);
    if (launch(p, 0) != INT4MM_OK) { printf("launch failed\n"); return 1e9; }
    CK(cudaDeviceSynchronize());
    std::vector<uint16_t> hy(ny);
    CK(cudaMemcpy(hy.data(), cs.dy, ny * 2, cudaMemcpyDeviceToHost));
    int N16 = s.N / 16;
    auto tf = [&](uint16_t u) { return cs.bf16 ? b2f(u) : h2f(u); };
    std::vector<int> &cols = cs.cols;
    if (cols.empty()) {
        int step = std::max(1, s.N / 96);
        for (int n = 0; n < s.N; n += step) cols.push_back(n);
        cols.push_back(s.N - 1);
        for (int m = 0; m < s.M; ++m)
            for (int n : cols) {
                double ref = 0;
                for (int k = 0; k < s.K; ++k) {
                    int q = code_at(cs.hw, N16, k, n);
                    size_t gi = size_t(k / s.G) * s.N + n;
                    double w = (q - 8) * double(tf(cs.hs[gi])) + double(tf(cs.hz[gi]));
                    ref += double(tf(cs.hx[size_t(m) * (s.K + g_pad) + k])) * w;
                }
                cs.ref.push_back(ref);
            }
    }
    double num = 0, den = 0; int nan = 0;
    size_t ri = 0;
    for (int m = 0; m < s.M; ++m)
        for (int n : cols) {
            double ref = cs.ref[ri++];
            double got = tf(hy[size_t(m) * (s.N + 8) + n]);
            if (std::isnan(got)) ++nan;
            num += (got - ref) * (got - ref); den += ref * ref;
        }
    // every element written: no NaN anywhere in [M, N]
    for (int m = 0; m < s.M; ++m) for (int n = 0; n < s.N; ++n) if (std::isnan(tf(hy[size_t(m) * (s.N + 8) + n]))) ++nan;
    // padding untouched
    for (int m = 0; m < s.M; ++m) for (int n = s.N; n < s.N + 8; ++n) if (hy[size_t(m) * (s.N + 8) + n] != 0xFFFF) ++nan;
    if (nan) return 1e9 + nan;
    return std::sqrt(num / den);
}

static double check(Case &cs, DecodeConfig cfg) { return check_with(cs, decode_launcher(cfg)); }

static int g_launches = getenv("LAUNCHES") ? atoi(getenv("LAUNCHES")) : 20;
static float time_with(Case &cs, const Launcher &launch, int launches = g_launches, int reps = 7) {
    cudaStream_t st; CK(cudaStreamCreate(&st));
    cudaGraph_t graph; cudaGraphExec_t exec;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < launches; ++i) {
        MatmulProblem p = problem(cs, i % cs.copies);
        if (launch(p, st) != INT4MM_OK) { printf("launch failed in capture\n"); exit(1); }
    }
    CK(cudaStreamEndCapture(st, &graph));
    CK(cudaGraphInstantiate(&exec, graph, 0));
    cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
    CK(cudaGraphLaunch(exec, st)); CK(cudaStreamSynchronize(st));
    std::vector<float> ts;
    for (int r = 0; r < reps; ++r) {
        CK(cudaEventRecord(a, st)); CK(cudaGraphLaunch(exec, st)); CK(cudaEventRecord(b, st));
        CK(cudaEventSynchronize(b)); float ms; CK(cudaEventElapsedTime(&ms, a, b)); ts.push_back(ms * 1000.f / launches);
    }
    std::sort(ts.begin(), ts.end());
    cudaGraphExecDestroy(exec); cudaGraphDestroy(graph); cudaStreamDestroy(st);
    return ts[ts.size() / 2];
}
static float time_cfg(Case &cs, DecodeConfig cfg, int launches = g_launches, int reps = 7) {
    return time_with(cs, decode_launcher(cfg), launches, reps);
}

#if defined(HARNESS_WGDECODE)
static Launcher wg_launcher(WgDecodeConfig cfg) {
    return [cfg](const MatmulProblem &p, cudaStream_t s) { return launch_matmul_wgdecode(p, s, cfg); };
}

// fp16 cuBLAS (fp32 accumulation) on the same shape, y = x W with W [K, N]
// fp16 (one copy: the timed shapes' weights exceed L2), in a graph like the
// rest.  libcublas is opened at run time (CUBLAS_LIB, default libcublas.so:
// the device has torch's copy, this machine has none); 0 if it is missing.
static float time_cublas(const Shape &s) {
    __half *w, *x, *y;
    CK(cudaMalloc(&w, size_t(s.K) * s.N * 2)); CK(cudaMalloc(&x, size_t(s.M) * s.K * 2)); CK(cudaMalloc(&y, size_t(s.M) * s.N * 2));
    CK(cudaMemset(w, 0x22, size_t(s.K) * s.N * 2)); CK(cudaMemset(x, 0x22, size_t(s.M) * s.K * 2));
    cudaStream_t st; CK(cudaStreamCreate(&st));
    auto run = [&]() { return cublas_gemm_f16(st, s.M, s.N, s.K, x, w, y); };
    if (!run()) { cudaFree(w); cudaFree(x); cudaFree(y); cudaStreamDestroy(st); return 0.0f; }
    CK(cudaStreamSynchronize(st));
    cudaGraph_t graph; cudaGraphExec_t exec;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < g_launches; ++i) run();
    CK(cudaStreamEndCapture(st, &graph)); CK(cudaGraphInstantiate(&exec, graph, 0));
    cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
    CK(cudaGraphLaunch(exec, st)); CK(cudaStreamSynchronize(st));
    std::vector<float> ts;
    for (int r = 0; r < 7; ++r) {
        CK(cudaEventRecord(a, st)); CK(cudaGraphLaunch(exec, st)); CK(cudaEventRecord(b, st));
        CK(cudaEventSynchronize(b)); float ms; CK(cudaEventElapsedTime(&ms, a, b)); ts.push_back(ms * 1000.f / g_launches);
    }
    std::sort(ts.begin(), ts.end());
    cudaGraphExecDestroy(exec); cudaGraphDestroy(graph); cudaStreamDestroy(st);
    cudaFree(w); cudaFree(x); cudaFree(y);
    return ts[ts.size() / 2];
}

// The wgmma experiment (wgdecode_experiment.cu): wcheck = every config on ragged
// shapes vs float64 (wscheck: a few, for compute-sanitizer); wsweep = SHAPES
// (default: the M = 16-128 targets) timed against fp16 cuBLAS, the decode
// kernel (M <= 16) and every config.
static int wg_main(const std::string &mode) {
    if (mode == "wcheck" || mode == "wscheck") {
        const bool quick = mode == "wscheck";
        std::vector<Shape> shapes = {{1024, 1024, 16, 1024}, {1024, 1024, 13, 128}, {2048, 512, 33, 64}, {4096, 4096, 64, 4096},
                                     {4096, 4096, 100, 128}, {1024, 2048, 128, 64}, {5120, 5120, 7, 128}, {8192, 1024, 40, 8192},
                                     {640, 256, 9, 64}, {192, 64, 5, 192}, {1024, 512, 128, 128}};
        if (quick) shapes = {{1024, 1024, 13, 128}, {640, 256, 40, 64}, {4096, 4096, 100, 4096}};
        int fails = 0, n = 0; double worst = 0;
        for (int bf = 0; bf < 2; ++bf)
            for (auto sh : shapes) {
                Case cs; cs.sh = sh; cs.bf16 = bf; setup(cs, false);
                for (int mn : {16, 32, 64, 128}) for (int j : {1, 2, 4}) for (int ks : {1, 2, 4, 8}) for (int stg : {3, 4, 6}) {
                    if ((mn == 128 && j == 4) || (sh.N / 16) % (4 * j)) continue;
                    if (quick && (stg == 6 || ks == 8 || (mn > 16 && mn < sh.M / 2))) continue;
                    if (mn > 16 && mn / 2 >= sh.M && !(sh.M <= 16 && mn == 32)) continue;  // far more rows than needed
                    WgDecodeConfig cfg{j, mn, ks, stg};
                    double e = check_with(cs, wg_launcher(cfg)); ++n;
                    double tol = bf ? 8e-3 : 1.5e-3;
                    worst = std::max(worst, e < 1e8 ? e : 0.0);
                    if (!(e < tol)) { ++fails; printf("FAIL %s K=%d N=%d M=%d G=%d j=%d mn=%d ks=%d stages=%d err=%g\n", bf ? "bf16" : "fp16", sh.K, sh.N, sh.M, sh.G, j, mn, ks, stg, e); }
                }
                { double e = check_with(cs, wg_launcher(WgDecodeConfig{})); ++n; if (!(e < (bf ? 8e-3 : 1.5e-3))) { ++fails; printf("FAIL default %g\n", e); } }
                teardown(cs);
            }
        printf("wcheck: %d cases, %d failures, worst rel err %.3g\n", n, fails, worst);
        return fails ? 1 : 0;
    }
    std::vector<Shape> shapes = {{8192, 28672, 16, 8192}, {8192, 28672, 16, 128}, {8192, 8192, 16, 8192}, {8192, 8192, 16, 128},
                                 {8192, 28672, 64, 8192}, {8192, 8192, 64, 8192}, {8192, 8192, 128, 8192}, {8192, 8192, 32, 8192},
                                 {8192, 28672, 64, 128}, {8192, 8192, 128, 128}};
    if (const char *v = getenv("SHAPES")) {
        shapes.clear();
        for (const char *q = v; *q;) {
            Shape sh{}; int used = 0;
            if (sscanf(q, " %d,%d,%d,%d%n", &sh.K, &sh.N, &sh.M, &sh.G, &used) != 4) break;
            shapes.push_back(sh); q += used;
        }
    }
    const bool defaults_only = getenv("DEFAULTS_ONLY") != nullptr;
    for (auto sh : shapes) {
        Case cs; cs.sh = sh; cs.bf16 = false; setup(cs, true);
        const float tb = time_cublas(sh);
        MatmulProblem p0 = problem(cs, 0);
        WgDecodeConfig def; wgdecode_default_config(p0, 0, &def);
        if (const char *v = getenv("WCFG")) sscanf(v, "%d,%d,%d,%d", &def.j, &def.mn, &def.ks, &def.stages);  // j,mn,ks,stages
        const float tw = time_with(cs, wg_launcher(def));
        char dec[64] = "";
        if (sh.M <= 16) snprintf(dec, sizeof dec, " decode %.2f us (%.2fx)", time_cfg(cs, DecodeConfig{}), tb / time_cfg(cs, DecodeConfig{}));
        printf("K=%d N=%d M=%d G=%d cublas %.2f us, wg default(j%d mn%d ks%d st%d) %.2f us (%.2fx)%s\n", sh.K, sh.N, sh.M, sh.G,
               tb, def.j, def.mn, def.ks, def.stages, tw, tb / tw, dec);
        if (!defaults_only) {
            float best = 1e30; WgDecodeConfig bc{};
            std::string line;
            for (int mn : {16, 32, 64, 128}) for (int j : {1, 2, 4}) for (int ks : {1, 2, 4, 8}) for (int stg : {3, 4, 6}) {
                if (mn < sh.M || (mn > 16 && mn / 2 >= sh.M) || (mn == 128 && j == 4) || (sh.N / 16) % (4 * j)) continue;
                WgDecodeConfig cfg{j, mn, ks, stg};
                int per_sm = 0;
                if (wgdecode_blocks_per_sm(0, p0.dtype, sh.G != sh.K, cfg, &per_sm) != INT4MM_OK || per_sm == 0) continue;
                float t = time_with(cs, wg_launcher(cfg));
                char buf[48]; snprintf(buf, sizeof buf, " %d/%d/%d/%d:%.1f", j, mn, ks, stg, t); line += buf;
                if (t < best) { best = t; bc = cfg; }
            }
            printf("   sweep(j/mn/ks/st:us)%s\n   best j%d mn%d ks%d st%d %.2f us (%.2fx)\n", line.c_str(), bc.j, bc.mn, bc.ks, bc.stages, best, tb / best);
        }
        fflush(stdout);
        teardown(cs);
    }
    return 0;
}

#else
static int wg_main(const std::string &) {
    printf("built without the CUTLASS include path: no wgmma experiment\n");
    return 2;
}
#endif

__global__ void empty_kernel(int) {}

// Host cost per call (no GPU time: tiny work, back-to-back launches, best of
// 5 runs of 20000 calls): an empty kernel launch, the runtime queries the
// library adds around a launch, and the decode kernel's C entry on K = N =
// 256, M = 1 (what a prepared int4mm.matmul call spends below the bridge).
static int host_main() {
    cudaStream_t st; CK(cudaStreamCreate(&st));
    auto per_call = [&](const char *name, auto &&f) {
        for (int i = 0; i < 1000; ++i) f();
        CK(cudaStreamSynchronize(st));
        double best = 1e30;
        for (int r = 0; r < 5; ++r) {
            auto t0 = std::chrono::steady_clock::now();
            for (int i = 0; i < 20000; ++i) f();
            auto t1 = std::chrono::steady_clock::now();
            CK(cudaStreamSynchronize(st));
            best = std::min(best, std::chrono::duration<double, std::micro>(t1 - t0).count() / 20000);
        }
        printf("%-58s %.3f us\n", name, best);
    };
    per_call("empty_kernel<<<1, 32, 0, stream>>>", [&] { empty_kernel<<<1, 32, 0, st>>>(0); });
    per_call("cudaGetDevice + cudaGetLastError", [&] { int d; cudaGetDevice(&d); (void)cudaGetLastError(); });
    per_call("empty kernel + cudaGetDevice + cudaGetLastError", [&] {
        int d; cudaGetDevice(&d); empty_kernel<<<1, 32, 0, st>>>(0); (void)cudaGetLastError(); });
    Case cs; cs.sh = Shape{256, 256, 1, 256}; cs.bf16 = false; setup(cs, false);
    MatmulProblem p = problem(cs, 0);
    per_call("launch_matmul_decode(K = N = 256, M = 1, default config)", [&] {
        if (launch_matmul_decode(p, st, DecodeConfig{}) != INT4MM_OK) exit(1); });
    DecodeConfig c; decode_default_config(p, 0, &c);
    per_call("launch_matmul_decode(..., the same config given)", [&] {
        if (launch_matmul_decode(p, st, c) != INT4MM_OK) exit(1); });
    printf("default config: nb%d mt%d u%d wk%d ks%d st%d\n", c.nb, c.mt, c.u, c.wk, c.ks, c.stages);
    teardown(cs);
    return 0;
}

int main(int argc, char **argv) {
    std::string mode = argc > 1 ? argv[1] : "check";
    if (getenv("PF")) g_decode_prefetch = atoi(getenv("PF"));  // chunks prefetched into L2 before a PDL wait
    if (mode.size() > 1 && mode[0] == 'w') return wg_main(mode);
    if (mode == "host") return host_main();
    int sms = 0; CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    if (mode == "check" || mode == "scheck") {
        // scheck: a few shapes and the shared-memory-ring configs only (for compute-sanitizer)
        const bool quick = mode == "scheck";
        // correctness over configs and shapes
        std::vector<Shape> shapes = {{1024, 1024, 1, 1024}, {1024, 1024, 3, 128}, {2048, 528, 1, 64}, {4096, 4096, 1, 4096},
                                     {4096, 4096, 16, 128}, {1024, 2048, 32, 64}, {5120, 5120, 7, 128}, {8192, 1024, 40, 8192},
                                     {640, 272, 9, 64}, {192, 16, 5, 192},
                                     {1024, 2048, 1, 128}, {2048, 1024, 1, 256},  // M = 1 grouped: v18's fold
                                     {4096, 1024, 5, 1024},  // groups of 64 k16 steps, folded chunk by chunk (v19)
                                     {1024, 1120, 13, 128}, {2048, 2240, 16, 2048}};  // N / 16 = 70, 140: nb 5, 7, 10, 14 (v20)
        if (quick) shapes = {{1024, 1024, 3, 128}, {640, 272, 9, 64}, {4096, 4096, 1, 4096}};
        int fails = 0, n = 0; double worst = 0;
        double worst_by[2][2] = {{0, 0}, {0, 0}};  // [bf16][grouped]
        for (int bf = 0; bf < 2; ++bf)
            for (auto sh : shapes) {
                Case cs; cs.sh = sh; cs.bf16 = bf; setup(cs, false);
                for (int nb : {1, 2, 4, 5, 7, 8, 10, 14, 16}) for (int mt : {1, 2, 4}) for (int u : {4, 8}) for (int wk : {1, 3, 8}) for (int ks : {1, 3}) for (int stg : {0, 2, 5}) {
                    if (quick && (stg == 0 || wk == 3 || (nb != 1 && nb != 2 && nb != 16))) continue;  // nb 1, 2 and 16
                    if (getenv("ONLY57") && (stg != 0 || (nb != 5 && nb != 7))) continue;  // the 5- and 7-block register ring (v24)
                    if ((stg == 0 && (nb > 4 ? mt != 1 || (nb != 5 && (nb != 7 || u != 4)) : nb * mt > (mt == 4 ? 4 : 8))) || (stg > 0 && (mt == 4 || (mt == 2 && nb == 1))) || (sh.N / 16) % nb || (sh.G / 16) % u) continue;
                    DecodeConfig cfg{nb, mt, u, wk, ks, stg};
                    int per_sm = 0;
                    if (stg > 0 && (blocks_per_sm(0, cs.bf16 ? INT4MM_DTYPE_BF16 : INT4MM_DTYPE_FP16, sh.G != sh.K, cfg, &per_sm) != INT4MM_OK || per_sm == 0)) continue;
                    double e = check(cs, cfg); ++n;
                    double tol = bf ? 8e-3 : 1e-3;
                    worst = std::max(worst, e < 1e8 ? e : 0.0);
                    worst_by[bf][sh.G != sh.K] = std::max(worst_by[bf][sh.G != sh.K], e < 1e8 ? e : 0.0);
                    if (!(e < tol)) { ++fails; printf("FAIL %s K=%d N=%d M=%d G=%d nb=%d mt=%d u=%d wk=%d ks=%d stages=%d err=%g\n", bf ? "bf16" : "fp16", sh.K, sh.N, sh.M, sh.G, nb, mt, u, wk, ks, stg, e); }
                }
                { double e = check(cs, DecodeConfig{}); ++n; if (!(e < (bf ? 8e-3 : 1e-3))) { ++fails; printf("FAIL default %g\n", e); } }
                teardown(cs);
            }
        printf("check: %d cases, %d failures, worst rel err %.3g (fp16 per-channel %.3g, grouped %.3g; bf16 %.3g, %.3g)\n",
               n, fails, worst, worst_by[0][0], worst_by[0][1], worst_by[1][0], worst_by[1][1]);
        return fails ? 1 : 0;
    }
    if (mode == "rr") {
        std::vector<Shape> shapes = {{16384, 16384, 1, 16384}, {16384, 16384, 1, 128}, {5120, 5120, 1, 5120},
                               {8192, 28672, 16, 8192}, {8192, 8192, 16, 8192}, {16384, 16384, 16, 16384}, {8192, 8192, 8, 8192}, {5120, 20480, 16, 5120}};
        if (getenv("SHAPES_M1")) shapes = {{16384, 16384, 1, 16384}};
        for (auto sh : shapes) {
            Case cs; cs.sh = sh; cs.bf16 = false; setup(cs, true);
            int mt = sh.M <= 8 ? 1 : 2;
            std::vector<DecodeConfig> cands;
            for (int nb : {1, 2, 4}) for (int u : {4, 8}) for (int wk : {4, 8}) for (int ks : {1, 2}) {
                if (nb * mt > 8 || (sh.N / 16) % nb || (sh.G / 16) % u) continue;
                cands.push_back(DecodeConfig{nb, mt, u, wk, ks});
            }
            MatmulProblem p0 = problem(cs, 0);
            { DecodeConfig dc; decode_default_config(p0, 0, &dc); cands.push_back(dc); }
            std::vector<std::vector<float>> t(cands.size());
            for (int r = 0; r < 5; ++r)
                for (size_t i = 0; i < cands.size(); ++i) t[i].push_back(time_cfg(cs, cands[i], 20, 3));
            std::vector<std::pair<float, int>> med;
            for (size_t i = 0; i < cands.size(); ++i) { auto v = t[i]; std::sort(v.begin(), v.end()); med.push_back({v[2], (int)i}); }
            double bytes = double(sh.K) * sh.N / 2 + double(sh.K / sh.G) * sh.N * 4;
            std::string line;
            for (size_t i = 0; i < cands.size(); ++i) { char b[48]; auto &c = cands[i]; snprintf(b, sizeof b, " %d%d%d%d:%.1f", c.nb, c.u, c.wk, c.ks, med[i].first); line += b; }
            auto d = cands.back();
            printf("K=%d N=%d M=%d G=%d default nb%d u%d wk%d ks%d %.2f us\n", sh.K, sh.N, sh.M, sh.G, d.nb, d.u, d.wk, d.ks, med.back().first);
            std::sort(med.begin(), med.end());
            for (int j = 0; j < 5; ++j) { auto &c = cands[med[j].second]; printf("   top%d nb%d u%d wk%d ks%d %.2f us %.2f TB/s\n", j, c.nb, c.u, c.wk, c.ks, med[j].first, bytes / med[j].first / 1e6); }
            fflush(stdout);
            teardown(cs);
        }
        return 0;
    }
    // timing; STAGES="2 4 8" sweeps the shared-memory-ring kernels with those
    // ring depths (default: the register-ring kernel only, stages 0)
    std::vector<int> stage_list = {0};
    if (getenv("STAGES")) { stage_list.clear(); std::string v = getenv("STAGES"); size_t i = 0;
        while (i < v.size()) { size_t j = v.find(' ', i); if (j == std::string::npos) j = v.size(); if (j > i) stage_list.push_back(atoi(v.substr(i, j - i).c_str())); i = j + 1; } }
    std::vector<Shape> shapes;
    if (mode == "m1") shapes = {{16384, 16384, 1, 16384}, {8192, 28672, 1, 8192}, {28672, 8192, 1, 28672}, {8192, 8192, 1, 8192},
                               {5120, 20480, 1, 5120}, {20480, 5120, 1, 20480}, {5120, 5120, 1, 5120}, {1024, 1024, 1, 1024},
                               {16384, 16384, 1, 128}, {8192, 8192, 1, 128}};
    else if (mode == "g1") shapes = {{16384, 16384, 1, 128}, {8192, 28672, 1, 128}, {28672, 8192, 1, 128}, {8192, 8192, 1, 128},
                                     {5120, 20480, 1, 128}, {20480, 5120, 1, 128}, {5120, 5120, 1, 128}, {1024, 1024, 1, 128}};
    else if (mode == "shapes") {  // SHAPES="K,N,M,G K,N,M,G ..."
        const char *v = getenv("SHAPES");
        for (const char *q = v ? v : ""; *q;) {
            Shape sh{}; int used = 0;
            if (sscanf(q, " %d,%d,%d,%d%n", &sh.K, &sh.N, &sh.M, &sh.G, &used) != 4) break;
            shapes.push_back(sh); q += used;
        }
    }
    else shapes = {{8192, 28672, 16, 8192}, {8192, 28672, 16, 128}, {8192, 8192, 16, 8192}, {8192, 8192, 16, 128},
                   {16384, 16384, 16, 16384}, {16384, 16384, 16, 128}, {8192, 8192, 8, 8192}, {8192, 8192, 4, 8192}};
    const bool defaults_only = getenv("DEFAULTS_ONLY") != nullptr;  // time the default config, no sweep
    for (auto sh : shapes) {
        Case cs; cs.sh = sh; cs.bf16 = false; setup(cs, true);
        MatmulProblem p0 = problem(cs, 0);
        DecodeConfig def; decode_default_config(p0, 0, &def);
        // DCFG="nb,mt,u,wk,ks,stages": time that config instead of the default (for ncu)
        if (const char *v = getenv("DCFG")) sscanf(v, "%d,%d,%d,%d,%d,%d", &def.nb, &def.mt, &def.u, &def.wk, &def.ks, &def.stages);
        float tdef = time_cfg(cs, def);
        if (defaults_only) {
            double bytes = double(sh.K) * sh.N / 2 + double(sh.K / sh.G) * sh.N * 4;
            printf("K=%d N=%d M=%d G=%d default(nb%d mt%d u%d wk%d ks%d st%d) %.2f us %.2f TB/s\n", sh.K, sh.N, sh.M, sh.G,
                   def.nb, def.mt, def.u, def.wk, def.ks, def.stages, tdef, bytes / tdef / 1e6);
            teardown(cs);
            continue;
        }
        double bytes = double(sh.K) * sh.N / 2 + double(sh.K / sh.G) * sh.N * 4;
        printf("K=%d N=%d M=%d G=%d default(nb%d mt%d u%d wk%d ks%d st%d) %.2f us %.2f TB/s\n", sh.K, sh.N, sh.M, sh.G, def.nb, def.mt, def.u, def.wk, def.ks,
               def.stages, tdef, bytes / tdef / 1e6);
        float best = 1e30; DecodeConfig bc{};
        std::string line;
        for (int stg : stage_list) for (int nb : {1, 2, 4, 5, 7, 8, 10, 14, 16}) for (int mt : {1, 2, 4}) for (int u : {4, 8}) for (int wk : {2, 4, 8}) for (int ks : {1, 2, 4}) {
            if ((stg == 0 && (nb > 4 ? mt != 1 || (nb != 5 && (nb != 7 || u != 4)) : nb * mt > (mt == 4 ? 4 : 8))) || (stg > 0 && (mt == 4 || (mt == 2 && nb == 1))) || (sh.N / 16) % nb || (sh.G / 16) % u) continue;
            if (!getenv("ANY_MT") && mt != (sh.M <= 8 ? 1 : sh.M <= 16 ? 2 : 4)) continue;  // ANY_MT: every row tiling
            DecodeConfig cfg{nb, mt, u, wk, ks, stg};
            int per_sm = 0;
            if (stg > 0 && (blocks_per_sm(0, p0.dtype, sh.G != sh.K, cfg, &per_sm) != INT4MM_OK || per_sm == 0)) continue;
            float t = time_cfg(cs, cfg);
            char buf[64]; snprintf(buf, sizeof buf, " %d-%d%d%d%d%d:%.1f", nb, mt, u, wk, ks, stg, t); line += buf;
            if (t < best) { best = t; bc = cfg; }
        }
        printf("   sweep(nb-mt u wk ks st:us)%s\n   best nb%d mt%d u%d wk%d ks%d st%d %.2f us %.2f TB/s\n", line.c_str(), bc.nb, bc.mt, bc.u, bc.wk, bc.ks, bc.stages, best, bytes / best / 1e6);
        fflush(stdout);
        teardown(cs);
    }
    return 0;
}
