// Prepared (kernel-specific) weight layouts: which one a weight gets, and the
// conversion into it.  Today one layout exists, INT4MM_LAYOUT_SM90_WGMMA, the
// form the Hopper wgmma kernel (matmul_wgmma.cu) reads; every other weight is
// used in its raw interchange format (INT4MM_LAYOUT_NONE).
#include "common.cuh"
#include "matmul_wgmma.cuh"

extern "C" int4mm_status int4mm_prepared_layout(int device, int64_t K, int64_t N,
                                                int64_t group_size, int sparse, int *layout,
                                                size_t *bytes) {
    int4mm::clear_error();
    if (layout == nullptr || bytes == nullptr)
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "prepared_layout: NULL output pointer");
    *layout = INT4MM_LAYOUT_NONE;
    *bytes = 0;
    if (sparse || !int4mm::wgmma::supported(K, N, group_size)) return INT4MM_OK;
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || device < 0 || device >= count) {
        (void)cudaGetLastError();
        return INT4MM_OK;  // no device: no layout (never an error)
    }
    int4mm::DeviceGuard guard;
    if (guard.enter(device) != INT4MM_OK) {
        int4mm::clear_error();
        return INT4MM_OK;
    }
    if (!int4mm::wgmma::compiled()) {
        int4mm::clear_error();
        return INT4MM_OK;
    }
    *layout = INT4MM_LAYOUT_SM90_WGMMA;
    *bytes = int4mm::wgmma::prepared_bytes(K, N, group_size);
    return INT4MM_OK;
}

extern "C" int4mm_status int4mm_prepare(int layout, const int32_t *qweight, const int32_t *mask,
                                        const void *scales, const void *zeros, int64_t K,
                                        int64_t N, int64_t group_size, void *prepared,
                                        size_t bytes, int device, uintptr_t stream) {
    int4mm::clear_error();
    if (layout != INT4MM_LAYOUT_SM90_WGMMA)
        return int4mm::fail(INT4MM_ERR_UNSUPPORTED,
                            "prepare: layout %d is not available in this build", layout);
    if (mask != nullptr)
        return int4mm::fail(INT4MM_ERR_UNSUPPORTED, "prepare: SM90_WGMMA is for dense weights only");
    if (qweight == nullptr || scales == nullptr || zeros == nullptr || prepared == nullptr)
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "prepare: NULL pointer");
    if (!int4mm::wgmma::supported(K, N, group_size))
        return int4mm::fail(INT4MM_ERR_UNSUPPORTED,
                            "prepare: SM90_WGMMA does not support K=%lld N=%lld group_size=%lld",
                            (long long)K, (long long)N, (long long)group_size);
    size_t need = int4mm::wgmma::prepared_bytes(K, N, group_size);
    if (bytes < need)
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "prepare: %zu bytes given, %zu needed",
                            bytes, need);
    if (!int4mm::aligned16(prepared) || !int4mm::aligned16(qweight) ||
        !int4mm::aligned16(scales) || !int4mm::aligned16(zeros))
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "prepare: pointers must be 16-byte aligned");
    int4mm::DeviceGuard guard;
    int4mm_status st = guard.enter(device);
    if (st != INT4MM_OK) return st;
    if (!int4mm::wgmma::compiled())
        return int4mm::fail(INT4MM_ERR_UNSUPPORTED,
                            "prepare: device %d is not sm_90 or this build has no sm_90a code", device);
    return int4mm::wgmma::prepare(qweight, scales, zeros, K, N, group_size, prepared,
                                  int4mm::as_stream(stream));
}
