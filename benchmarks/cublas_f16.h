// fp16 cuBLAS GEMM (fp32 accumulation), the baseline of the standalone
// harnesses (decode_harness/, wgmma_harness/).  The library is opened at run
// time: CUBLAS_LIB names it (default libcublas.so; the GPU machine has torch's
// copy, the build machine none), so the harnesses link without cuBLAS.
#ifndef INT4MM_BENCH_CUBLAS_F16_H_
#define INT4MM_BENCH_CUBLAS_F16_H_

#include <cuda_runtime.h>
#include <dlfcn.h>

#include <cstdlib>

// y = x W on `stream` with x [M, K], W [K, N] and y [M, N] row-major fp16
// (column-major for cuBLAS: y^T [N, M] = W^T [N, K] x^T [K, M]).  False when
// cuBLAS cannot be opened or the call fails.
inline bool cublas_gemm_f16(cudaStream_t stream, int M, int N, int K, const void *x, const void *w, void *y) {
    using Create = int (*)(void **);
    using SetStream = int (*)(void *, cudaStream_t);
    using GemmEx = int (*)(void *, int, int, int, int, int, const void *, const void *, int, int, const void *, int,
                           int, const void *, void *, int, int, int, int);
    static void *lib = dlopen(getenv("CUBLAS_LIB") ? getenv("CUBLAS_LIB") : "libcublas.so", RTLD_NOW);
    if (lib == nullptr) return false;
    static const auto create = reinterpret_cast<Create>(dlsym(lib, "cublasCreate_v2"));
    static const auto set_stream = reinterpret_cast<SetStream>(dlsym(lib, "cublasSetStream_v2"));
    static const auto gemm = reinterpret_cast<GemmEx>(dlsym(lib, "cublasGemmEx"));
    static void *handle = nullptr;
    if (create == nullptr || set_stream == nullptr || gemm == nullptr) return false;
    if (handle == nullptr && create(&handle) != 0) return false;
    if (set_stream(handle, stream) != 0) return false;
    const float one = 1.0f, zero = 0.0f;
    constexpr int kOpN = 0, kR16F = 2, kCompute32F = 68, kGemmDefault = -1;
    return gemm(handle, kOpN, kOpN, N, M, K, &one, w, kR16F, N, x, kR16F, K, &zero, y, kR16F, N, kCompute32F,
                kGemmDefault) == 0;
}

#endif  // INT4MM_BENCH_CUBLAS_F16_H_
