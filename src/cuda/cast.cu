// Element type conversion between fp16 and bf16 (int4mm_cast): how the
// Python layer hands bf16 activations scales that arrived as fp16 (the
// kernels take one element type per call).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common.cuh"
#include "int4mm.h"

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

__device__ __forceinline__ float load_as_float(const uint16_t *p, int64_t i, int dtype) {
    return dtype == INT4MM_DTYPE_BF16 ? __bfloat162float(__ushort_as_bfloat16(p[i]))
                                      : __half2float(__ushort_as_half(p[i]));
}

// fp16 and bf16 values are exact in fp32, so going through fp32 rounds once.
__global__ void cast_kernel(const uint16_t *__restrict__ src, int src_dtype, uint16_t *__restrict__ dst,
                            int dst_dtype, int64_t count) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
        const float v = load_as_float(src, i, src_dtype);
        dst[i] = dst_dtype == INT4MM_DTYPE_BF16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v))
                                                : __half_as_ushort(__float2half_rn(v));
    }
}

bool known_dtype(int d) { return d == INT4MM_DTYPE_FP16 || d == INT4MM_DTYPE_BF16; }

}  // namespace

extern "C" int4mm_status int4mm_cast(const void *src, int src_dtype, void *dst, int dst_dtype, int64_t count,
                                     int device, uintptr_t stream) {
    static const char fn[] = "int4mm_cast";
    int4mm::clear_error();
    if (!known_dtype(src_dtype) || !known_dtype(dst_dtype))
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: dtypes must be FP16 (0) or BF16 (1), got %d -> %d",
                            fn, src_dtype, dst_dtype);
    if (count < 0)
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: count must be >= 0, got %lld", fn,
                            static_cast<long long>(count));
    if (count == 0) return INT4MM_OK;
    if (src == nullptr || dst == nullptr)
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: src and dst must not be NULL", fn);
    if ((reinterpret_cast<uintptr_t>(src) & 1u) || (reinterpret_cast<uintptr_t>(dst) & 1u))
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: misaligned pointer", fn);
    int4mm::DeviceGuard guard;
    if (int4mm_status s = guard.enter(device)) return s;
    int64_t blocks = (count + kThreads - 1) / kThreads;
    if (blocks > kMaxBlocks) blocks = kMaxBlocks;
    cast_kernel<<<static_cast<int>(blocks), kThreads, 0, int4mm::as_stream(stream)>>>(
        static_cast<const uint16_t *>(src), src_dtype, static_cast<uint16_t *>(dst), dst_dtype, count);
    INT4MM_LAUNCH_CHECK("cast_kernel launch");
    return INT4MM_OK;
}
