// Prepared (kernel-specific) weight layouts: which sections a weight gets and
// the conversion into them.  The buffer's arrangement is described in
// prepared_layout.cuh; each section's content by the kernel family that reads
// it (prepare_small_m.cu, matmul_wgmma.cu).
#include "common.cuh"
#include "matmul_kernels.cuh"
#include "matmul_wgmma.cuh"
#include "prepared_layout.cuh"

namespace int4mm {

namespace {

// The decode kernel's tiled form exists for the weights its fast path takes.
bool tiled_applies(int64_t K, int64_t N, int64_t group_size) {
    return group_size % 32 == 0 && K % 32 == 0 && small_m_tiled_bytes(K, N) > 0;
}

// Whether `device` (already current) runs this build's sm_90a wgmma code.
bool wgmma_applies(int64_t K, int64_t N, int64_t group_size) {
    if (!wgmma::supported(K, N, group_size)) return false;
    const bool ok = wgmma::compiled();
    clear_error();
    return ok;
}

}  // namespace

PreparedSections prepared_sections(int layout, int64_t K, int64_t N, int64_t group_size) {
    PreparedSections s;
    if (layout & INT4MM_LAYOUT_SMALL_M_TILED) {
        s.tiled_offset = 0;
        s.tiled_bytes = small_m_tiled_bytes(K, N);
    }
    if (layout & INT4MM_LAYOUT_SM90_WGMMA) {
        s.wgmma_offset = align256(s.tiled_bytes);
        s.wgmma_bytes = wgmma::prepared_bytes(K, N, group_size);
    }
    s.total = s.wgmma_bytes ? s.wgmma_offset + s.wgmma_bytes : s.tiled_bytes;
    return s;
}

}  // namespace int4mm

extern "C" int4mm_status int4mm_prepared_layout(int device, int64_t K, int64_t N,
                                                int64_t group_size, int sparse, int *layout,
                                                size_t *bytes) {
    using namespace int4mm;
    clear_error();
    if (layout == nullptr || bytes == nullptr)
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "prepared_layout: NULL output pointer");
    *layout = INT4MM_LAYOUT_NONE;
    *bytes = 0;
    if (sparse || K <= 0 || N <= 0 || group_size <= 0) return INT4MM_OK;
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || device < 0 || device >= count) {
        (void)cudaGetLastError();
        return INT4MM_OK;  // no device: no layout (never an error)
    }
    DeviceGuard guard;
    if (guard.enter(device) != INT4MM_OK) {
        clear_error();
        return INT4MM_OK;
    }
    // The wgmma section also serves the decode kernel (matmul_decode.cu), so a
    // weight that has it needs no tiled copy: one prepared copy of the codes.
    int bits = 0;
    if (wgmma_applies(K, N, group_size)) bits = INT4MM_LAYOUT_SM90_WGMMA;
    else if (tiled_applies(K, N, group_size)) bits = INT4MM_LAYOUT_SMALL_M_TILED;
    *layout = bits;
    *bytes = prepared_sections(bits, K, N, group_size).total;
    return INT4MM_OK;
}

extern "C" int4mm_status int4mm_prepare(int layout, const int32_t *qweight, const int32_t *mask,
                                        const void *scales, const void *zeros, int dtype, int64_t K,
                                        int64_t N, int64_t group_size, void *prepared,
                                        size_t bytes, int device, uintptr_t stream) {
    using namespace int4mm;
    clear_error();
    const int known = INT4MM_LAYOUT_SM90_WGMMA | INT4MM_LAYOUT_SMALL_M_TILED;
    if (layout == INT4MM_LAYOUT_NONE || (layout & ~known) != 0)
        return fail(INT4MM_ERR_UNSUPPORTED, "prepare: layout %d is not available in this build",
                    layout);
    if (mask != nullptr)
        return fail(INT4MM_ERR_UNSUPPORTED, "prepare: prepared layouts are for dense weights only");
    if (qweight == nullptr || scales == nullptr || zeros == nullptr || prepared == nullptr)
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "prepare: NULL pointer");
    if (dtype != INT4MM_DTYPE_FP16 && dtype != INT4MM_DTYPE_BF16)
        return fail(INT4MM_ERR_INVALID_ARGUMENT,
                    "prepare: dtype must be INT4MM_DTYPE_FP16 (%d) or INT4MM_DTYPE_BF16 (%d), got %d",
                    INT4MM_DTYPE_FP16, INT4MM_DTYPE_BF16, dtype);
    if ((layout & INT4MM_LAYOUT_SMALL_M_TILED) && !tiled_applies(K, N, group_size))
        return fail(INT4MM_ERR_UNSUPPORTED,
                    "prepare: SMALL_M_TILED needs K and group_size multiples of 32 (K=%lld G=%lld)",
                    (long long)K, (long long)group_size);
    if ((layout & INT4MM_LAYOUT_SM90_WGMMA) && !wgmma::supported(K, N, group_size))
        return fail(INT4MM_ERR_UNSUPPORTED,
                    "prepare: SM90_WGMMA does not support K=%lld N=%lld group_size=%lld",
                    (long long)K, (long long)N, (long long)group_size);
    const PreparedSections sec = prepared_sections(layout, K, N, group_size);
    if (bytes < sec.total)
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "prepare: %zu bytes given, %zu needed", bytes,
                    sec.total);
    if (!aligned16(prepared) || !aligned16(qweight) || !aligned16(scales) || !aligned16(zeros))
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "prepare: pointers must be 16-byte aligned");
    DeviceGuard guard;
    int4mm_status st = guard.enter(device);
    if (st != INT4MM_OK) return st;
    const cudaStream_t s = as_stream(stream);
    char *base = static_cast<char *>(prepared);
    if (sec.tiled_bytes) {
        st = prepare_small_m_tiled(reinterpret_cast<const uint32_t *>(qweight), K, N,
                                   base + sec.tiled_offset, s);
        if (st != INT4MM_OK) return st;
    }
    if (sec.wgmma_bytes) {
        if (!wgmma::compiled())
            return fail(INT4MM_ERR_UNSUPPORTED,
                        "prepare: device %d is not sm_90 or this build has no sm_90a code", device);
        char *section = base + sec.wgmma_offset;
        st = wgmma::prepare(qweight, scales, zeros, dtype, K, N, group_size, section, s);
        const wgmma::PreparedParts parts = wgmma::parts(K, N, group_size);
        if (st == INT4MM_OK && parts.rbytes)
            st = prepare_decode_records(section + parts.soff, section + parts.zoff, K / group_size, N,
                                        section + parts.roff, s);
    }
    return st;
}
