// Internal interface between the matmul dispatcher (matmul.cu) and the two
// kernel families (matmul_small_m.cu, matmul_tc.cu), plus the device helpers
// both families share.  Not part of the C ABI.
#ifndef INT4MM_MATMUL_KERNELS_CUH_
#define INT4MM_MATMUL_KERNELS_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "common.cuh"

namespace int4mm {

// The fragment-ordered prepared weights (the INT4MM_LAYOUT_SM90_WGMMA
// section, described in matmul_wgmma.cu): codes in 16 x 16 blocks whose word
// t is lane t's mma A fragment, scales [K/G, N] and zero_c = -(z - 8) * s,
// and for grouped weights the decode kernel's scale records (matmul_decode.cu).
struct FragWeights {
    const uint32_t *codes = nullptr;  // nullptr: the weight has no such section
    const void *scales = nullptr;
    const void *zero_c = nullptr;
    const uint32_t *records = nullptr;  // grouped weights only
};

// One validated multiplication, type-erased as the dispatcher sees it.  The
// dispatcher guarantees: 1 <= M, N, K <= kMaxMatmulDim; N % 8 == 0;
// K % 8 == 0 (dense) or K % 32 == 0 (sparse); group_size divides K and is a
// multiple of 8 (dense) or 32 (sparse); every pointer 16-byte aligned;
// ldx % 8 == 0, ldy % 8 == 0; x, scales, zeros, bias and y all hold `dtype`
// (INT4MM_DTYPE_FP16 or INT4MM_DTYPE_BF16).  Offsets that can pass 2^31
// (row * N, m * ldx) are always computed in int64 by the kernels.
struct MatmulProblem {
    const void *x;            // [M, K], row stride ldx
    const uint32_t *qweight;  // dense [K/8, N] or sparse [K/16, N]
    const uint32_t *mask;     // sparse [K/32, N]; nullptr: dense
    const void *scales;       // [K/G, N]
    const void *zeros;        // [K/G, N]
    const void *bias;         // [N] or nullptr
    void *y;                  // [M, N], row stride ldy
    int64_t ldx, ldy;
    int M, N, K;
    int group_size;
    int group_shift;          // log2(group_size) when it is a power of two, else -1
    int dtype = INT4MM_DTYPE_FP16;
    int device = 0;  // the current device (the dispatcher made it so)
    // Dense weights also in the SMALL_M "tiled" layout (prepare_small_m.cu),
    // or nullptr: the v2 SMALL_M kernel then reads qweight (raw).  Ignored
    // for sparse weights and by every other kernel.
    const void *tiled = nullptr;
    // Dense weights also in the fragment-ordered form, read by the decode
    // kernel (matmul_decode.cu) when present.
    FragWeights frag;
};

// The same problem with the 16-bit element type T (__half or __nv_bfloat16)
// spelled out: what the kernels take.
template <class T>
struct TypedProblem {
    const T *x;
    const uint32_t *qweight;
    const uint32_t *mask;
    const T *scales;
    const T *zeros;
    const T *bias;
    T *y;
    int64_t ldx, ldy;
    int M, N, K;
    int group_size;
    int group_shift;
    const void *tiled;
};

template <class T>
TypedProblem<T> typed(const MatmulProblem &p) {
    return TypedProblem<T>{static_cast<const T *>(p.x), p.qweight, p.mask,
                           static_cast<const T *>(p.scales), static_cast<const T *>(p.zeros),
                           static_cast<const T *>(p.bias), static_cast<T *>(p.y),
                           p.ldx, p.ldy, p.M, p.N, p.K, p.group_size, p.group_shift, p.tiled};
}

// Calls f(T{}) with T the element type named by `dtype` (validated earlier).
template <class F>
int4mm_status with_element_type(int dtype, F &&f) {
    if (dtype == INT4MM_DTYPE_BF16) return f(__nv_bfloat16{});
    return f(__half{});
}

// Element-type traits: conversions, packed-pair arithmetic on raw 32-bit
// words, and the constants the dequantizers need.
template <class T>
struct Elem;

template <>
struct Elem<__half> {
    using Pair = __half2;
    static constexpr uint32_t kOne2 = 0x3C003C00u;  // (1, 1)
    __device__ __forceinline__ static float to_float(__half v) { return __half2float(v); }
    __device__ __forceinline__ static __half from_float(float v) { return __float2half_rn(v); }
    __device__ __forceinline__ static Pair pair_from_floats(float a, float b) { return __floats2half2_rn(a, b); }
    __device__ __forceinline__ static float2 pair_to_float2(Pair v) { return __half22float2(v); }
    __device__ __forceinline__ static Pair bcast(__half v) { return __half2half2(v); }
    __device__ __forceinline__ static Pair zero_pair() { return __float2half2_rn(0.0f); }
};

template <>
struct Elem<__nv_bfloat16> {
    using Pair = __nv_bfloat162;
    static constexpr uint32_t kOne2 = 0x3F803F80u;  // (1, 1)
    __device__ __forceinline__ static float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
    __device__ __forceinline__ static __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
    __device__ __forceinline__ static Pair pair_from_floats(float a, float b) { return __floats2bfloat162_rn(a, b); }
    __device__ __forceinline__ static float2 pair_to_float2(Pair v) { return __bfloat1622float2(v); }
    __device__ __forceinline__ static Pair bcast(__nv_bfloat16 v) { return __bfloat162bfloat162(v); }
    __device__ __forceinline__ static Pair zero_pair() { return __float2bfloat162_rn(0.0f); }
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
// With a wgmma-prepared weight (Hopper), AUTO uses wgmma above this many rows
// and the decode kernel on the same prepared codes up to it.  Measured on
// H100 (benchmarks/NOTES.md, v5, v6): decode 8192^2 M = 16 18.9-21 us,
// M = 32 44-87 us; wgmma 28.6 us at M = 32 (cooperative 128x64, split-K).
constexpr int kWgmmaMinM = 16;
// ... except for weights of less than this many bytes of int4, where the
// decode kernel (two tiles of 16 rows, register ring) also takes M = 17-32:
// on the H200 it was 1.1-2.6x faster than wgmma on all 18 such cases
// measured (M = 17-32, per-channel and G = 128; 4096^2 M = 32 7.8 vs 17.1
// us, 5120^2 17.5 vs 20.3); from 16 MiB up the two were mixed (8192^2 29.2
// vs 26.6, 14336 x 4096 24.7 vs 30.4; benchmarks/NOTES.md, v18).
constexpr int kDecodeMaxM = 32;
constexpr int64_t kDecodeMaxMBytes = int64_t(16) << 20;
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

// Decode / small-M kernel on the fragment-ordered weights (matmul_decode.cu).
// A config field <= 0 (all of them: the default) picks measured defaults.
struct DecodeConfig {
    int nb = 0;     // 16-column weight blocks per CTA (divides N / 16): 1, 2, 4; shared-memory
                    // ring also 5, 7, 8, 10, 14, 16
    int mt = 0;     // groups of 8 rows of x per CTA: 1, 2, 4 (more rows: grid.y)
    int u = 0;      // k16 steps per chunk: 4 or 8 (divides group_size / 16)
    int wk = 0;     // warps per CTA, each streaming its own run of K: 1 .. 8
    int ks = 0;     // CTAs of a cluster splitting K (sm_90): 1 .. 8
    int stages = 0; // 0: weights stream through registers; 2 .. 8: through a
                    // shared-memory ring of that many chunks per warp (cp.async)
};
bool decode_supported(const MatmulProblem &p);
// The measured default for p on `device`; INT4MM_OK or a CUDA failure.
int4mm_status decode_default_config(const MatmulProblem &p, int device, DecodeConfig *out);
int4mm_status launch_matmul_decode(const MatmulProblem &p, cudaStream_t stream, DecodeConfig cfg = {});
// The decode kernel's scale records of a grouped weight (layout: the top of
// matmul_decode.cu; groups * N * 4 bytes) from its prepared scales and
// zero_c [groups, N] (16-bit values, N % 16 == 0); enqueued on stream.
int4mm_status prepare_decode_records(const void *scales, const void *zero_c, int64_t groups, int64_t N,
                                     void *records, cudaStream_t stream);

// SMALL_M "tiled" prepared layout of dense qweight (prepare_small_m.cu):
// 512-byte tiles (32 columns x 32 k, lane order of the v2 kernel), the slabs
// of one 32-column group consecutive.  Bytes needed (0: K % 32 != 0 or
// N % 8 != 0, no tiled layout), and the conversion (enqueued on s, no sync).
size_t small_m_tiled_bytes(int64_t K, int64_t N);
int4mm_status prepare_small_m_tiled(const uint32_t *qweight, int64_t K, int64_t N, void *out, cudaStream_t s);

// ---- device helpers shared by the kernel families ------------------------

// cp.async bookkeeping (sm_80+): close the group of copies issued so far;
// wait until at most N groups are pending (a barrier must follow before
// other threads read the data).
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 b16 matrices from shared memory (sm_75+); lane l supplies the
// address of row (l % 8) of matrix (l / 8) and receives one 32-bit fragment
// of each: lane t gets row t / 4, values 2 (t % 4) and 2 (t % 4) + 1.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void *smem_src) {
    const uint32_t src = static_cast<uint32_t>(__cvta_generic_to_shared(smem_src));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(src)
                 : "memory");
}

// Bit casts between 32-bit words and packed pairs (memcpy: no aliasing UB; free).
template <class P>
__device__ __forceinline__ P bits_as(uint32_t u) {
    static_assert(sizeof(P) == 4, "a pair of 16-bit values");
    P h;
    memcpy(&h, &u, sizeof(h));
    return h;
}
template <class P>
__device__ __forceinline__ uint32_t as_bits(P h) {
    static_assert(sizeof(P) == 4, "a pair of 16-bit values");
    uint32_t u;
    memcpy(&u, &h, sizeof(u));
    return u;
}

// Two packed 16-bit values of type T (low first) -> two fp32.
template <class T>
__device__ __forceinline__ float2 pair_bits_to_float2(uint32_t u) {
    return Elem<T>::pair_to_float2(bits_as<typename Elem<T>::Pair>(u));
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

}  // namespace int4mm

#endif  // INT4MM_MATMUL_KERNELS_CUH_
