// Does the decode kernel's read pattern itself reach the read ceiling?  The
// M = 1 ring kernel (src/cuda/matmul_decode.cu) streams the fragment-ordered
// codes as: CTA column block of NB 16-column blocks, wk warps x ks CTAs
// splitting K, each warp a ring of `stages` chunks (U k16 steps x NB x 128
// contiguous bytes, one k16 step of the weight N * 8 bytes further on) filled
// by 16-byte cp.async.  This probe does exactly that and nothing else (each
// lane XORs its words of each landed chunk), so its time against
// read_ceiling.cu's says what the pattern costs and, against the decode
// harness, what the decode kernel's arithmetic and reduction cost
// (benchmarks/NOTES.md, "Read pattern at M = 1").
//   nvcc -std=c++17 -O3 -arch=sm_90a benchmarks/read_ceiling/decode_pattern.cu -o dp && ./dp
// SHAPES="K,N ..." (default: 5120^2, 8192^2, 5120 x 20480, 16384^2).
// Variants per config: K runs per warp contiguous (as the decode kernel) or
// chunk-interleaved (warp kw of nk reads chunks kw, kw + nk, ..., so the
// whole GPU sweeps the weight from its start to its end), and launched
// plainly or with programmatic dependent launch (PDL: the kernel lets the next
// launch start at once and waits for the previous one after issuing its ring's
// first chunks (pdl 1), before anything (pdl 2), or after prefetching those
// chunks into L2 only (pdl 3: a prefetch cannot return stale data, so this is
// safe even when the previous kernel writes the weights; pdl 1 is not)).
// ALL=1 prints every config, not only the best 8; IL=1 adds the interleaved
// K order; PDL="0 1" limits the launch variants.
#include "../graph_time.h"

#include <cuda_runtime.h>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("CUDA %s at %d\n", cudaGetErrorString(e_), __LINE__); exit(1); } } while (0)

__device__ __forceinline__ void cp16(uint32_t *dst, const uint32_t *src, uint64_t policy) {
    const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "l"(policy)
                 : "memory");
}
__device__ __forceinline__ void commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wait_n() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

struct Args {
    const uint32_t *w;
    unsigned *out;
    int N16, ksteps, warp_steps, stages, interleave;
    int pdl;  // 0: plain launch; 1, 2, 3: PDL, wait after the prologue / first / after an L2 prefetch
};

template <int NB, int U>
__global__ void __launch_bounds__(256) pattern_read(Args a) {
    extern __shared__ uint32_t smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wk = blockDim.x >> 5;
    if (a.pdl) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    uint64_t policy;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
    const int64_t wstride = int64_t(a.N16) * 32;
    const int kw = blockIdx.z * wk + warp, nk = gridDim.z * wk;
    const int total_chunks = a.ksteps / U;
    int s_begin = 0, nchunks = 0;
    if (a.interleave) {
        nchunks = kw < total_chunks ? (total_chunks - 1 - kw) / nk + 1 : 0;
    } else {
        s_begin = kw * a.warp_steps;
        const int s_end = min(s_begin + a.warp_steps, a.ksteps);
        nchunks = s_begin < s_end ? (s_end - s_begin) / U : 0;
    }
    constexpr int kChunk = U * NB * 32;
    uint32_t *ring = smem + int64_t(warp) * a.stages * kChunk;
    const uint32_t *base = a.w + int64_t(blockIdx.x) * NB * 32;
    auto issue = [&](int j) {
        const int step0 = a.interleave ? (j * nk + kw) * U : s_begin + j * U;
        const uint32_t *src = base + int64_t(step0) * wstride;
        uint32_t *dst = ring + (j % a.stages) * kChunk;
#pragma unroll
        for (int i = 0; i < U * NB / 4; ++i) {
            const int piece = lane + 32 * i, step = piece / (NB * 8), within = piece % (NB * 8);
            cp16(dst + 4 * piece, src + step * wstride + 4 * within, policy);
        }
    };
    if (a.pdl == 2) asm volatile("griddepcontrol.wait;" ::: "memory");
    if (a.pdl == 3) {  // the prologue's chunks into L2 only: one bulk prefetch per k16 step
        for (int c = 0; c < a.stages - 1 && c < nchunks; ++c) {
            const int step0 = a.interleave ? (c * nk + kw) * U : s_begin + c * U;
            if (lane < U) {
                const uint32_t *src = base + int64_t(step0 + lane) * wstride;
                asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(src), "r"(NB * 128) : "memory");
            }
        }
        asm volatile("griddepcontrol.wait;" ::: "memory");
    }
    for (int c = 0; c < a.stages - 1; ++c) {
        if (c < nchunks) issue(c);
        commit();
    }
    if (a.pdl == 1) asm volatile("griddepcontrol.wait;" ::: "memory");
    uint32_t acc = 0;
    for (int j = 0; j < nchunks; ++j) {
        switch (a.stages) {
            case 2: wait_n<0>(); break;
            case 3: wait_n<1>(); break;
            default: wait_n<2>(); break;
        }
        __syncwarp();
        if (j + a.stages - 1 < nchunks) issue(j + a.stages - 1);
        commit();
        const uint32_t *slot = ring + (j % a.stages) * kChunk + lane;
#pragma unroll
        for (int i = 0; i < U * NB; ++i) acc ^= slot[32 * i];
    }
    wait_n<0>();
    __syncthreads();  // as the decode kernel's reduction
    acc = __reduce_xor_sync(0xffffffffu, acc);
    if (lane == 0 && acc == 0x9e3779b9u) a.out[blockIdx.x] = acc;  // practically never
}

using Fn = void (*)(Args);
template <int U>
static Fn pick_nb(int nb) {
    switch (nb) {
        case 4: return pattern_read<4, U>;
        case 8: return pattern_read<8, U>;
        default: return pattern_read<16, U>;
    }
}

static const int g_launches = getenv("LAUNCHES") ? atoi(getenv("LAUNCHES")) : 20;

int main() {
    std::vector<std::pair<int, int>> shapes = {{5120, 5120}, {8192, 8192}, {5120, 20480}, {16384, 16384}};
    if (const char *v = getenv("SHAPES")) {
        shapes.clear();
        for (std::string s = v; !s.empty();) {
            int K = 0, N = 0;
            if (sscanf(s.c_str(), "%d,%d", &K, &N) == 2) shapes.push_back({K, N});
            const size_t j = s.find(' ');
            if (j == std::string::npos) break;
            s = s.substr(j + 1);
        }
    }
    std::vector<int> interleave_list = {0}, pdl_list = {0, 1, 2, 3};
    if (getenv("IL")) interleave_list = {0, 1};
    if (const char *v = getenv("PDL")) {
        pdl_list.clear();
        for (const char *q = v; *q; ++q)
            if (*q >= '0' && *q <= '3') pdl_list.push_back(*q - '0');
    }
    int sms = 0;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    unsigned *out;
    CK(cudaMalloc(&out, 1 << 20));
    for (int nb : {4, 8, 16})
        for (int u : {4, 8}) {
            Fn f = u == 4 ? pick_nb<4>(nb) : pick_nb<8>(nb);
            CK(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024));
        }
    print_device_line(g_launches);
    for (auto [K, N] : shapes) {
        const size_t bytes = size_t(K) * N / 2;
        const RotatedCopies rot = alloc_rotated(bytes);
        if (rot.base == nullptr) return 1;
        struct Result { float t; std::string name; };
        std::vector<Result> res;
        for (int nb : {4, 8, 16})
            for (int u : {4, 8})
                for (int wk : {2, 4, 8})
                    for (int ks : {1, 2, 4})
                        for (int stages : {2, 3})
                            for (int il : interleave_list)
                                for (int pdl : pdl_list) {
                                    const int n16 = N / 16, ksteps = K / 16;
                                    if (n16 % nb || ksteps % (u * ks * wk)) continue;
                                    const size_t smem = size_t(wk) * stages * u * nb * 128;
                                    if (smem > 227 * 1024) continue;
                                    Fn f = u == 4 ? pick_nb<4>(nb) : pick_nb<8>(nb);
                                    int per_sm = 0;
                                    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, f, 32 * wk, smem));
                                    const int ctas = n16 / nb * ks;
                                    if (per_sm == 0 || ctas > per_sm * sms) continue;  // one wave, as the decode defaults
                                    Args a{nullptr, out, n16, ksteps, ksteps / (ks * wk), stages, il, pdl};
                                    cudaLaunchAttribute attr;
                                    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
                                    attr.val.programmaticStreamSerializationAllowed = 1;
                                    const float t = time_graph([&](int i, cudaStream_t st) {
                                        a.w = reinterpret_cast<const uint32_t *>(rot.copy(i));
                                        cudaLaunchConfig_t cfg = {};
                                        cfg.gridDim = dim3(n16 / nb, 1, ks);
                                        cfg.blockDim = dim3(32 * wk);
                                        cfg.dynamicSmemBytes = smem;
                                        cfg.stream = st;
                                        cfg.attrs = pdl ? &attr : nullptr;
                                        cfg.numAttrs = pdl ? 1 : 0;
                                        return cudaLaunchKernelEx(&cfg, f, a) == cudaSuccess;
                                    }, g_launches);
                                    char name[96];
                                    snprintf(name, sizeof name, "nb%d u%d wk%d ks%d st%d %s pdl%d", nb, u, wk, ks, stages,
                                             il ? "interleaved" : "contiguous", pdl);
                                    res.push_back({t, name});
                                }
        std::sort(res.begin(), res.end(), [](const Result &x, const Result &y) { return x.t < y.t; });
        const size_t shown = getenv("ALL") ? res.size() : 8;
        printf("K=%d N=%d (%.1f MB): %zu configs; best %zu:\n", K, N, bytes / 1e6, res.size(), shown);
        for (size_t i = 0; i < res.size() && i < shown; ++i)
            printf("   %.2f us (%.2f TB/s) %s\n", res[i].t, bytes / res[i].t / 1e6, res[i].name.c_str());
        for (int pdl : pdl_list)  // best per launch variant
            for (auto &r : res)
                if (r.name.find(" pdl" + std::to_string(pdl)) != std::string::npos) {
                    printf("   best pdl%d: %.2f us %s\n", pdl, r.t, r.name.c_str());
                    break;
                }
        fflush(stdout);
        cudaFree(rot.base);
    }
    cudaFree(out);
    return 0;
}
