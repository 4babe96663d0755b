// Hopper (sm_90a) wgmma path for dense int4 weights, built on CUTLASS 3.x's
// mixed-input warp-specialized collective.  It reads only the prepared layout
// INT4MM_LAYOUT_SM90_WGMMA (see int4mm_prepare in prepare.cu).
#ifndef INT4MM_MATMUL_WGMMA_CUH_
#define INT4MM_MATMUL_WGMMA_CUH_

#include <cstddef>
#include <cstdint>

#include "common.cuh"

// y[M, N] = x[M, K] @ W + bias with W taken from a.prepared (layout
// INT4MM_LAYOUT_SM90_WGMMA).  Returns INT4MM_ERR_UNSUPPORTED when this build
// has no sm_90a code, the device is not compute capability 9.0, or the shape /
// group size is not one the kernel handles (see int4mm::wgmma::supported).
int4mm_status launch_matmul_wgmma(const int4mm_matmul_args &a, cudaStream_t s);

namespace int4mm {
namespace wgmma {

// Offsets of the prepared form's parts (each 256-byte aligned): codes at 0,
// scales [K/G, N] at soff, zero_c [K/G, N] at zoff, and for grouped weights
// (G < K) the decode kernel's scale records at roff (rbytes = K/G * N * 4,
// matmul_decode.cu; the wgmma kernels do not read them); total bytes.
struct PreparedParts {
    size_t wbytes, soff, zoff, roff, rbytes, total;
};

inline PreparedParts parts(int64_t K, int64_t N, int64_t G) {
    auto up = [](size_t v) { return (v + 255) / 256 * 256; };
    PreparedParts p;
    p.wbytes = static_cast<size_t>(N) * static_cast<size_t>(K) / 2;
    const size_t sbytes = static_cast<size_t>(K / G) * static_cast<size_t>(N) * 2;
    p.soff = up(p.wbytes);
    p.zoff = p.soff + up(sbytes);
    p.roff = p.zoff + up(sbytes);
    p.rbytes = G < K ? 2 * sbytes : 0;
    p.total = p.roff + up(p.rbytes);
    return p;
}

// Shape rules of the kernel (device-independent): dense weights, N % 16 == 0,
// K % 64 == 0, group_size == K or group_size % 64 == 0, N * K < 2^31.
bool supported(int64_t K, int64_t N, int64_t group_size);
// True when this build holds sm_90a code for the wgmma kernels.
bool compiled();
// Bytes of the prepared form (0 if unsupported).
size_t prepared_bytes(int64_t K, int64_t N, int64_t group_size);
// Enqueues the conversion raw -> prepared on `stream` (no synchronization).
// Arguments already validated by the caller (device current).
// scales and zeros are INT4MM_DTYPE_FP16 or _BF16 (`dtype`); the prepared form
// keeps that type and serves only calls whose activations have it.
int4mm_status prepare(const int32_t *qweight, const void *scales, const void *zeros, int dtype,
                      int64_t K, int64_t N, int64_t group_size, void *prepared, cudaStream_t stream);

}  // namespace wgmma
}  // namespace int4mm

#endif  // INT4MM_MATMUL_WGMMA_CUH_
