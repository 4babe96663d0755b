// Internal interface between the matmul dispatcher (matmul.cu) and the two
// kernel families (matmul_small_m.cu, matmul_tc.cu), plus the device helpers
// both families share.  Not part of the C ABI.
#ifndef INT4MM_MATMUL_KERNELS_CUH_
#define INT4MM_MATMUL_KERNELS_CUH_

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "common.cuh"

namespace int4mm {

// One validated multiplication, in the types the kernels use.  The
// dispatcher guarantees: 1 <= M, N, K <= kMaxMatmulDim; N % 8 == 0;
// K % 8 == 0 (dense) or K % 32 == 0 (sparse); group_size divides K and is a
// multiple of 8 (dense) or 32 (sparse); every pointer 16-byte aligned;
// ldx % 8 == 0, ldy % 8 == 0.  Offsets that can pass 2^31 (row * N,
// m * ldx) are always computed in int64 by the kernels.
struct MatmulProblem {
    const __half *x;          // [M, K], row stride ldx
    const uint32_t *qweight;  // dense [K/8, N] or sparse [K/16, N]
    const uint32_t *mask;     // sparse [K/32, N]; nullptr: dense
    const __half *scales;     // [K/G, N]
    const __half *zeros;      // [K/G, N]
    const __half *bias;       // [N] or nullptr
    __half *y;                // [M, N], row stride ldy
    int64_t ldx, ldy;
    int M, N, K;
    int group_size;
    int group_shift;          // log2(group_size) when it is a power of two, else -1
    // Dense weights also in the SMALL_M "tiled" layout (prepare_small_m.cu),
    // or nullptr: the v2 SMALL_M kernel then reads qweight (raw).  Ignored
    // for sparse weights and by every other kernel.
    const void *tiled = nullptr;
};

// Keeps every int index (k, n, m, tile corners plus a tile) far from 2^31.
constexpr int64_t kMaxMatmulDim = int64_t(1) << 30;

// AUTO takes the CUDA-core path for M <= this.  Measured on H100 (8192^2,
// G = 128): SMALL_M costs ~30-60 us per 8 rows, the v1 tensor-core path a flat
// ~230 us for any M <= 128 (only N/128 = 64 blocks), so SMALL_M wins through
// M = 16 for dense and sparse (benchmarks/NOTES.md, "v1 kernels").
constexpr int kSmallMThreshold = 16;
// When the v2 tensor-core SMALL_M kernel applies (group_size % 32 == 0) AUTO
// takes SMALL_M up to this M.  Measured on H100 at 8192^2 (G = 128, v2 vs the
// v1 tensor-core tile kernel): M = 64: 57 vs 225 us, M = 128: 115 vs 241 us,
// M = 256: 229 vs 243 us (benchmarks/NOTES.md, "v2").
constexpr int kSmallMThresholdMma = 128;
// With a wgmma-prepared weight (Hopper), AUTO uses wgmma above this many rows.
constexpr int kWgmmaMinM = 32;
// 16:32 sparse at M <= this stays on the v1 CUDA-core kernel, which is
// faster there (H100, 8192^2, G = 128: M = 1 v1 29.7 vs v2 45.1 us, M = 2
// 39.3 vs 45.6, M = 4 73.6 vs 45.9): the v2 per-word mask expansion is
// ALU heavy and flat in M, v1 grows with M.
constexpr int kSparseV1MaxM = 2;

// Largest N the tensor-core launcher accepts (its N tiles are grid.y).
constexpr int64_t kTcMaxN = int64_t(65535) * 128;

// Enqueue on `stream`; the current device is already the right one.
// Return INT4MM_OK or a recorded failure.
int4mm_status launch_matmul_small_m(const MatmulProblem &p, cudaStream_t stream);
// The pieces of SMALL_M: the v1 CUDA-core kernels (any valid shape) and the
// v2 tensor-core kernel on the raw layouts (matmul_mma_small.cu), which
// needs group_size % 32 == 0.  xr (groups of 8 rows of x per block: 1, 2, 4,
// 8) and wk (K-split warps per 8-warp block: 1, 2, 4, 8) <= 0 pick defaults.
int4mm_status launch_matmul_small_m_v1(const MatmulProblem &p, cudaStream_t stream);
bool mma_small_supported(const MatmulProblem &p);
int4mm_status launch_matmul_mma_small(const MatmulProblem &p, cudaStream_t stream, int xr, int wk);
int4mm_status launch_matmul_tc(const MatmulProblem &p, cudaStream_t stream);

// SMALL_M "tiled" prepared layout of dense qweight (prepare_small_m.cu):
// 512-byte tiles (32 columns x 32 k, lane order of the v2 kernel), the slabs
// of one 32-column group consecutive.  Bytes needed (0: K % 32 != 0 or
// N % 8 != 0, no tiled layout), and the conversion (enqueued on s, no sync).
size_t small_m_tiled_bytes(int64_t K, int64_t N);
int4mm_status prepare_small_m_tiled(const uint32_t *qweight, int64_t K, int64_t N, void *out, cudaStream_t s);

// ---- device helpers shared by both kernel families -----------------------

// Bit casts between 32-bit words and half2 (memcpy: no aliasing UB; free).
__device__ __forceinline__ __half2 bits_as_half2(uint32_t u) {
    __half2 h;
    memcpy(&h, &u, sizeof(h));
    return h;
}
__device__ __forceinline__ uint32_t half2_as_bits(__half2 h) {
    uint32_t u;
    memcpy(&u, &h, sizeof(u));
    return u;
}

// Two packed fp16 (low half first) -> two fp32.
__device__ __forceinline__ float2 half2_bits_to_float2(uint32_t u) {
    return __half22float2(bits_as_half2(u));
}

// Group row of scales/zeros for input row k.  A shift when G is a power of
// two: the division would otherwise cost ~20 instructions per weight word.
__device__ __forceinline__ int group_of(int k, int group_size, int group_shift) {
    return group_shift >= 0 ? (k >> group_shift) : (k / group_size);
}

// Code q (0..15) -> float, exactly, without I2F: 0x4B000000 is 2^23, whose
// float ulp is 1, so OR-ing q into the mantissa gives 2^23 + q.
__device__ __forceinline__ float code_to_float(uint32_t q) {
    return __int_as_float(0x4B000000u | q) - 8388608.0f;
}

// One dense weight word (8 codes of one column, k order, low nibble first)
// -> 8 dequantized halves (q - z) * s in k order, as one 16-byte value.
//
// "Magic exponent" int4 -> fp16: 0x6400 is 1024.0h, whose fp16 ulp is 1, so
// (w & 0x000F000F) | 0x64006400 read as half2 is exactly (1024 + q0, 1024 + q4)
// and subtracting 1024 is exact: one LOP per two codes, no I2F.  The zero is
// subtracted separately (NOT folded into the 1024 offset): zeros may be
// non-integral fp16 values and 1024 + z would round.
__device__ __forceinline__ uint4 dequant8_to_half(uint32_t w, __half2 s2, __half2 z2) {
    constexpr uint32_t kLow4Each = 0x000F000Fu;
    constexpr uint32_t kMagic = 0x64006400u;  // (1024.0h, 1024.0h)
    const uint32_t t0 = (w & kLow4Each) | kMagic;          // (q0, q4)
    const uint32_t t1 = ((w >> 4) & kLow4Each) | kMagic;   // (q1, q5)
    const uint32_t t2 = ((w >> 8) & kLow4Each) | kMagic;   // (q2, q6)
    const uint32_t t3 = ((w >> 12) & kLow4Each) | kMagic;  // (q3, q7)
    // Regroup into k order: low halves of (t0, t1) are (q0, q1), high (q4, q5).
    const uint32_t pair[4] = {
        __byte_perm(t0, t1, 0x5410),  // (q0, q1)
        __byte_perm(t2, t3, 0x5410),  // (q2, q3)
        __byte_perm(t0, t1, 0x7632),  // (q4, q5)
        __byte_perm(t2, t3, 0x7632),  // (q6, q7)
    };
    const __half2 magic = bits_as_half2(kMagic);
    uint32_t out[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const __half2 q = __hsub2(bits_as_half2(pair[i]), magic);  // exact
        out[i] = half2_as_bits(__hmul2(__hsub2(q, z2), s2));
    }
    return make_uint4(out[0], out[1], out[2], out[3]);
}

}  // namespace int4mm

#endif  // INT4MM_MATMUL_KERNELS_CUH_
