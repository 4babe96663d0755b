// 2-D block copies between device arrays, on one GPU or from one GPU to
// another: what int4mm.shard() uses to cut packed weights into column blocks
// (a strided copy: a column block of a row-major array is not contiguous) or
// row ranges (contiguous).  No kernels: the copy engines do the work.
#include <cuda_runtime.h>

#include "common.cuh"
#include "int4mm.h"

using int4mm::clear_error;
using int4mm::DeviceGuard;
using int4mm::fail;

extern "C" int4mm_status int4mm_copy_2d(void *dst, size_t dst_pitch_bytes, const void *src,
                                        size_t src_pitch_bytes, size_t width_bytes,
                                        size_t height, int dst_device, int src_device,
                                        uintptr_t stream) {
    clear_error();
    if (width_bytes == 0 || height == 0) return INT4MM_OK;
    if (dst == nullptr || src == nullptr)
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "copy_2d: NULL %s pointer",
                    dst == nullptr ? "destination" : "source");
    if (width_bytes > dst_pitch_bytes || width_bytes > src_pitch_bytes)
        return fail(INT4MM_ERR_INVALID_ARGUMENT,
                    "copy_2d: row width %zu bytes exceeds a pitch (destination %zu, source %zu)",
                    width_bytes, dst_pitch_bytes, src_pitch_bytes);
    if (dst_device < 0 || src_device < 0)
        return fail(INT4MM_ERR_INVALID_ARGUMENT,
                    "copy_2d: device ordinals must be >= 0 (destination %d, source %d)",
                    dst_device, src_device);
    // The copy is enqueued on `stream`, a stream of the destination device.
    DeviceGuard guard;
    if (int4mm_status s = guard.enter(dst_device)) return s;
    cudaStream_t s = int4mm::as_stream(stream);
    // Rows that follow each other in both arrays are one contiguous range:
    // copy it as such (no pitch limits apply to a linear copy).
    const bool linear = width_bytes == dst_pitch_bytes && width_bytes == src_pitch_bytes;
    if (dst_device == src_device) {
        if (linear)
            INT4MM_CUDA_TRY(cudaMemcpyAsync(dst, src, width_bytes * height,
                                            cudaMemcpyDeviceToDevice, s));
        else
            INT4MM_CUDA_TRY(cudaMemcpy2DAsync(dst, dst_pitch_bytes, src, src_pitch_bytes,
                                              width_bytes, height, cudaMemcpyDeviceToDevice, s));
        return INT4MM_OK;
    }
    // Across GPUs: through NVLink/PCIe peer access where the driver has it,
    // else staged by the driver; either way ordered on `stream`.
    if (linear) {
        INT4MM_CUDA_TRY(cudaMemcpyPeerAsync(dst, dst_device, src, src_device,
                                            width_bytes * height, s));
        return INT4MM_OK;
    }
    cudaMemcpy3DPeerParms p = {};
    p.srcPtr = make_cudaPitchedPtr(const_cast<void *>(src), src_pitch_bytes, width_bytes, height);
    p.srcDevice = src_device;
    p.dstPtr = make_cudaPitchedPtr(dst, dst_pitch_bytes, width_bytes, height);
    p.dstDevice = dst_device;
    p.extent = make_cudaExtent(width_bytes, height, 1);
    INT4MM_CUDA_TRY(cudaMemcpy3DPeerAsync(&p, s));
    return INT4MM_OK;
}
