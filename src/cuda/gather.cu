// Column gather of activations, for act-order (GPTQ g_idx) weights:
//   out[m, j] = x[m, perm[j]]          x [M, K] (row stride ldx), out [M, K] (ldo)
// A weight loaded from an act-order checkpoint has its rows sorted by group
// (W'[j] = W[perm[j]]) so the matmul kernels see contiguous groups; then
// x @ W == x[:, perm] @ W', and this kernel makes x[:, perm].
//
// One thread per output element, consecutive threads on consecutive j: the
// writes are coalesced, the reads follow perm (within one row of x, so they
// stay in a few cache lines for the usual near-sorted act-order permutations).
// Cost: one read and one write of x, i.e. 4 * M * K bytes, next to the
// weight's K * N / 2 bytes read by the matmul.
//
// perm values outside [0, K) read as 0 (memory safety; the Python layer
// checks perm is a permutation when the weight is prepared).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "int4mm.h"

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

// 16-bit elements moved as bits: the same code serves fp16 and bf16 (0 is +0
// in both).
__global__ void gather_columns_kernel(const uint16_t *__restrict__ x, int64_t ldx,
                                      const int32_t *__restrict__ perm, int64_t M, int64_t K,
                                      uint16_t *__restrict__ out, int64_t ldo) {
    const int64_t total = M * K;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t f = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; f < total;
         f += stride) {
        const int64_t m = f / K, j = f - m * K;
        const int32_t src = perm[j];
        out[m * ldo + j] = (src >= 0 && src < K) ? x[m * ldx + src] : uint16_t(0);
    }
}

}  // namespace

extern "C" int4mm_status int4mm_gather_columns(const void *x, int64_t ldx, const int32_t *perm,
                                               int64_t M, int64_t K, void *out, int64_t ldo,
                                               int dtype, int device, uintptr_t stream) {
    static const char fn[] = "int4mm_gather_columns";
    int4mm::clear_error();
    if (dtype != INT4MM_DTYPE_FP16 && dtype != INT4MM_DTYPE_BF16)
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: dtype %d is not supported (fp16 or bf16)",
                            fn, dtype);
    if (M < 0 || K < 0 || ldx < K || ldo < K)
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT,
                            "%s: M=%lld, K=%lld, ldx=%lld, ldo=%lld: need M, K >= 0 and ldx, ldo >= K",
                            fn, static_cast<long long>(M), static_cast<long long>(K),
                            static_cast<long long>(ldx), static_cast<long long>(ldo));
    if (M == 0 || K == 0) return INT4MM_OK;
    if (M > INT64_MAX / ldx || M > INT64_MAX / ldo)
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: M*ld overflows", fn);
    if (x == nullptr || perm == nullptr || out == nullptr)
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: x, perm and out must not be NULL", fn);
    if ((reinterpret_cast<uintptr_t>(x) & 1u) || (reinterpret_cast<uintptr_t>(out) & 1u) ||
        (reinterpret_cast<uintptr_t>(perm) & 3u))
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: misaligned pointer", fn);
    int4mm::DeviceGuard guard;
    if (int4mm_status s = guard.enter(device)) return s;
    int64_t blocks = (M * K + kThreads - 1) / kThreads;
    if (blocks > kMaxBlocks) blocks = kMaxBlocks;
    gather_columns_kernel<<<static_cast<int>(blocks), kThreads, 0, int4mm::as_stream(stream)>>>(
        static_cast<const uint16_t *>(x), ldx, perm, M, K, static_cast<uint16_t *>(out), ldo);
    INT4MM_LAUNCH_CHECK("gather_columns_kernel launch");
    return INT4MM_OK;
}
