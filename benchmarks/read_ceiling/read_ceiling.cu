// How fast can this GPU read a weight-sized buffer, once per launch, under the
// bench's protocol (CUDA graph of LAUNCHES launches, copies rotated past
// 300 MB, median of 7 replays)?  The decode kernels cannot beat this, so it
// is the honest ceiling for M = 1 (benchmarks/NOTES.md, "Read ceiling").
// Build and run (any sm_80+ GPU):
//   nvcc -std=c++17 -O3 -arch=sm_90a benchmarks/read_ceiling/read_ceiling.cu -o rc && ./rc
// SIZES="MB ..." overrides the default sizes (the int4 bytes of the target
// shapes at M = 1: 5120^2, 8192^2, 5120 x 20480, 8192 x 28672, 16384^2).
// Each size: every grid (CTAs per SM x threads) and loads in flight per
// thread, reading with ld.global.nc.L1::no_allocate 16-byte loads in a
// grid-stride loop; the best and the time an ideal read at 4.8 TB/s takes.
#include "../graph_time.h"

#include <cuda_runtime.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("CUDA %s at %d\n", cudaGetErrorString(e_), __LINE__); exit(1); } } while (0)

__device__ __forceinline__ uint4 ld_nc(const uint4 *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}

// U loads in flight per thread per trip; one word per CTA out (never zero in
// practice, so the loads cannot be dropped).
template <int U>
__global__ void read_all(const uint4 *__restrict__ src, size_t n16, unsigned *__restrict__ out) {
    unsigned acc = 0;
    const size_t stride = size_t(gridDim.x) * blockDim.x;
    size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
    for (; i + (U - 1) * stride < n16; i += U * stride) {
        uint4 v[U];
#pragma unroll
        for (int u = 0; u < U; ++u) v[u] = ld_nc(src + i + u * stride);
#pragma unroll
        for (int u = 0; u < U; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    for (; i < n16; i += stride) {
        const uint4 v = ld_nc(src + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    acc = __reduce_xor_sync(0xffffffffu, acc);
    if ((threadIdx.x & 31) == 0 && acc == 0x9e3779b9u) out[blockIdx.x] = acc;  // practically never
}

static const int g_launches = getenv("LAUNCHES") ? atoi(getenv("LAUNCHES")) : 20;

template <int U>
static float time_read(const RotatedCopies &rot, size_t bytes, int ctas, int threads, unsigned *out) {
    return time_graph([&](int i, cudaStream_t st) {
        read_all<U><<<ctas, threads, 0, st>>>(reinterpret_cast<const uint4 *>(rot.copy(i)),
                                             bytes / 16, out);
        return cudaGetLastError() == cudaSuccess;
    }, g_launches);
}

int main() {
    std::vector<double> sizes_mb = {13.1, 33.6, 52.4, 117.4, 134.2};
    if (const char *v = getenv("SIZES")) {
        sizes_mb.clear();
        for (std::string s = v; !s.empty();) {
            size_t j = s.find(' ');
            if (j != 0) sizes_mb.push_back(atof(s.substr(0, j).c_str()));
            if (j == std::string::npos) break;
            s = s.substr(j + 1);
        }
    }
    int sms = 0;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    unsigned *out;
    CK(cudaMalloc(&out, 1 << 20));
    print_device_line(g_launches);
    for (double mb : sizes_mb) {
        const size_t bytes = size_t(mb * 1e6) / 16 * 16;
        const RotatedCopies rot = alloc_rotated(bytes);
        if (rot.base == nullptr) return 1;
        float best = 1e30f;
        char best_name[64] = "";
        std::string line;
        for (int per_sm : {1, 2, 4, 8})
            for (int threads : {256, 512, 1024})
                for (int u : {1, 2, 4, 8}) {
                    if (per_sm * threads > 2048) continue;
                    const int ctas = per_sm * sms;
                    float t = 0;
                    switch (u) {
                        case 1: t = time_read<1>(rot, bytes, ctas, threads, out); break;
                        case 2: t = time_read<2>(rot, bytes, ctas, threads, out); break;
                        case 4: t = time_read<4>(rot, bytes, ctas, threads, out); break;
                        default: t = time_read<8>(rot, bytes, ctas, threads, out); break;
                    }
                    char b[48];
                    snprintf(b, sizeof b, " %dx%du%d:%.1f", per_sm, threads, u, t);
                    line += b;
                    if (t < best) { best = t; snprintf(best_name, sizeof best_name, "%d CTAs/SM x %d threads, %d loads in flight", per_sm, threads, u); }
                }
        printf("%.1f MB: best %.2f us (%.2f TB/s; %s); 4.8 TB/s would take %.2f us\n   all (CTAs/SM x threads, u: us):%s\n",
               bytes / 1e6, best, bytes / best / 1e6, best_name, bytes / 4.8e6, line.c_str());
        fflush(stdout);
        cudaFree(rot.base);
    }
    cudaFree(out);
    return 0;
}
