// Round-to-nearest (RTN) asymmetric 4-bit quantization of an fp16 or bf16 weight
// W [K, N] straight into the packed formats of shared/FORMATS.md, and the
// optional magnitude-based 16:32 pruning in front of it.
//
// One thread owns one (group g, column n): it scans the group's rows twice
// (range, then codes) and writes whole packed words, so no two threads touch
// the same output and neighbouring threads (n, n+1) read neighbouring
// addresses of a row-major weight.
//
//        n ->   thread (g, n)
//   k  +-----+-----+
//   |  | g=0 | ... |   rows [g*G, (g+1)*G) of column n: min/max, scale, zero,
//   v  +-----+-----+   then 8 codes per qweight word (dense) or, per 32-row
//      | g=1 | ... |   block, the 16 kept codes in 2 words + a 32-bit mask.
//
// The arithmetic is defined bit for bit so that int4mm.reference.quantize_rtn
// (numpy, float32) reproduces it exactly; every operation is an explicitly
// rounded fp32 intrinsic, so no FMA contraction or fast-math flag can change
// a result:
//   lo = min(0, min_k w), hi = max(0, max_k w)        (over kept rows if sparse)
//   if lo == hi: lo = -1, hi = 1                      (an all-zero group)
//   scale = dtype_rn((hi - lo) / 15)                  (0 -> smallest subnormal)
//   zero  = clamp(rint(-lo / scale), 0, 15)           (rint: half to even)
//   code  = clamp(rint(w / scale) + zero, 0, 15)
// (dtype: the weight's, fp16 or bf16; scales and zeros are written in it)
// with scale taken back to fp32 from its rounded value, so dequantization
// (code - zero) * scale uses exactly the numbers the codes were chosen with.
// Including 0 in [lo, hi] (as GPTQ's quantizer does) keeps zero inside 0..15
// without clamping, and represents 0 exactly.
//
// Pruning (16:32): in each aligned 32-row block of a column the 16 weights of
// largest |w| are kept; ties go to the lower row.  rank(i) = #{j : |w_j| >
// |w_i|} + #{j < i : |w_j| == |w_i|} is a strict total order, so exactly 16
// ranks are below 16.
//
// A non-finite weight is refused (INT4MM_ERR_BAD_DATA, nothing written) by a
// first pass, as the pack entry points do.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "int4mm.h"

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 8192;
constexpr unsigned long long kNoOffence = ~0ull;

int grid_for(int64_t work) {
    int64_t blocks = (work + kThreads - 1) / kThreads;
    if (blocks > kMaxBlocks) blocks = kMaxBlocks;
    if (blocks < 1) blocks = 1;
    return static_cast<int>(blocks);
}

__device__ __forceinline__ int64_t first_index() {
    return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() {
    return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// 16-bit value of `dtype` (fp16 or bf16) <-> fp32.  Widening is exact.
__device__ __forceinline__ float bits_to_float(uint16_t b, int dtype) {
    return dtype == INT4MM_DTYPE_BF16 ? __bfloat162float(__ushort_as_bfloat16(b))
                                      : __half2float(__ushort_as_half(b));
}
__device__ __forceinline__ uint16_t float_to_bits_rn(float v, int dtype) {
    return dtype == INT4MM_DTYPE_BF16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v))
                                      : __half_as_ushort(__float2half_rn(v));
}

// Strided read of one fp16 / bf16 weight as fp32 (exact).
struct WeightView {
    const uint16_t *w;
    int64_t sk, sn;
    int dtype;
    __device__ __forceinline__ float at(int64_t k, int64_t n) const {
        return bits_to_float(w[k * sk + n * sn], dtype);
    }
};

// Smallest flat index k * N + n holding an Inf or NaN.
__global__ void find_nonfinite(WeightView W, int64_t K, int64_t N,
                               unsigned long long *__restrict__ verdict) {
    const int64_t total = K * N;
    for (int64_t f = first_index(); f < total; f += grid_stride()) {
        const int64_t k = f / N, n = f - k * N;
        if (!isfinite(W.at(k, n))) {
            atomicMin(verdict, static_cast<unsigned long long>(f));  // a thread's first is its least
            return;
        }
    }
}

// The scale and zero of a group with range [lo, hi] (lo <= 0 <= hi), as above.
// The scale is rounded to the weight's dtype; *scale16 receives its bits.
__device__ __forceinline__ void scale_zero(float lo, float hi, int dtype, float *scale, float *zero,
                                           uint16_t *scale16) {
    if (lo == hi) {
        lo = -1.0f;
        hi = 1.0f;
    }
    uint16_t s16 = float_to_bits_rn(__fdiv_rn(__fsub_rn(hi, lo), 15.0f), dtype);
    if (bits_to_float(s16, dtype) == 0.0f) s16 = 1;  // smallest positive subnormal
    const float s = bits_to_float(s16, dtype);
    *scale16 = s16;
    *scale = s;
    // + 0: a -0 (from lo == -0) becomes +0, so zeros hold no negative zero.
    *zero = __fadd_rn(fminf(fmaxf(rintf(__fdiv_rn(-lo, s)), 0.0f), 15.0f), 0.0f);
}

__device__ __forceinline__ uint32_t code_of(float w, float scale, float zero) {
    return static_cast<uint32_t>(fminf(fmaxf(__fadd_rn(rintf(__fdiv_rn(w, scale)), zero), 0.0f),
                                       15.0f));
}

// Dense: one thread per (group, column) writes G/8 qweight words.
__global__ void quantize_dense_kernel(WeightView W, int64_t K, int64_t N, int64_t G,
                                      int32_t *__restrict__ qweight, uint16_t *__restrict__ scales,
                                      uint16_t *__restrict__ zeros) {
    const int64_t work = (K / G) * N;
    for (int64_t t = first_index(); t < work; t += grid_stride()) {
        const int64_t g = t / N, n = t - g * N;
        const int64_t k0 = g * G;
        float lo = 0.0f, hi = 0.0f;
        for (int64_t k = k0; k < k0 + G; ++k) {
            const float w = W.at(k, n);
            lo = fminf(lo, w);
            hi = fmaxf(hi, w);
        }
        float scale, zero;
        uint16_t s16;
        scale_zero(lo, hi, W.dtype, &scale, &zero, &s16);
        scales[t] = s16;
        zeros[t] = float_to_bits_rn(zero, W.dtype);  // an integer in 0..15: exact
        for (int64_t k = k0; k < k0 + G; k += 8) {
            uint32_t word = 0;
#pragma unroll
            for (int j = 0; j < 8; ++j) word |= code_of(W.at(k + j, n), scale, zero) << (4 * j);
            qweight[(k / 8) * N + n] = static_cast<int32_t>(word);
        }
    }
}

// Bit i set <=> row 32b + i is among the block's 16 largest |w| (ties: lower row).
__device__ uint32_t keep_bits(WeightView W, int64_t k0, int64_t n) {
    float a[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) a[i] = fabsf(W.at(k0 + i, n));
    uint32_t bits = 0;
#pragma unroll
    for (int i = 0; i < 32; ++i) {
        int rank = 0;
#pragma unroll
        for (int j = 0; j < 32; ++j) rank += (a[j] > a[i]) || (a[j] == a[i] && j < i);
        bits |= static_cast<uint32_t>(rank < 16) << i;
    }
    return bits;
}

// Sparse: one thread per (group, column); G is a multiple of 32.  Pass 1
// writes the block masks and finds the range of the kept weights; pass 2
// reads its own masks back and packs the kept codes.
__global__ void quantize_sparse_kernel(WeightView W, int64_t K, int64_t N, int64_t G,
                                       int32_t *__restrict__ qweight, int32_t *__restrict__ mask,
                                       uint16_t *__restrict__ scales, uint16_t *__restrict__ zeros) {
    const int64_t work = (K / G) * N;
    for (int64_t t = first_index(); t < work; t += grid_stride()) {
        const int64_t g = t / N, n = t - g * N;
        const int64_t k0 = g * G;
        float lo = 0.0f, hi = 0.0f;
        for (int64_t kb = k0; kb < k0 + G; kb += 32) {
            const uint32_t bits = keep_bits(W, kb, n);
            mask[(kb / 32) * N + n] = static_cast<int32_t>(bits);
            for (int i = 0; i < 32; ++i) {
                if ((bits >> i) & 1u) {
                    const float w = W.at(kb + i, n);
                    lo = fminf(lo, w);
                    hi = fmaxf(hi, w);
                }
            }
        }
        float scale, zero;
        uint16_t s16;
        scale_zero(lo, hi, W.dtype, &scale, &zero, &s16);
        scales[t] = s16;
        zeros[t] = float_to_bits_rn(zero, W.dtype);
        for (int64_t kb = k0; kb < k0 + G; kb += 32) {
            const int64_t b = kb / 32;
            const uint32_t bits = static_cast<uint32_t>(mask[b * N + n]);
            uint64_t packed = 0;
            int p = 0;
            for (int i = 0; i < 32; ++i) {
                if ((bits >> i) & 1u) {
                    packed |= static_cast<uint64_t>(code_of(W.at(kb + i, n), scale, zero)) << (4 * p);
                    ++p;
                }
            }
            qweight[(2 * b) * N + n] = static_cast<int32_t>(static_cast<uint32_t>(packed));
            qweight[(2 * b + 1) * N + n] = static_cast<int32_t>(static_cast<uint32_t>(packed >> 32));
        }
    }
}

int4mm_status need(const char *fn, const char *name, const void *p, unsigned align) {
    if (p == nullptr) return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, name);
    if ((reinterpret_cast<uintptr_t>(p) & (align - 1)) != 0)
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: %s is not %u-byte aligned", fn,
                            name, align);
    return INT4MM_OK;
}

}  // namespace

extern "C" int4mm_status int4mm_quantize_rtn(const void *weight, int64_t stride_k,
                                             int64_t stride_n, int dtype, int64_t K, int64_t N,
                                             int64_t group_size, int sparse, int32_t *qweight,
                                             int32_t *mask, void *scales, void *zeros, int device,
                                             uintptr_t stream, int64_t *bad_k, int64_t *bad_n) {
    static const char fn[] = "int4mm_quantize_rtn";
    int4mm::clear_error();
    if (bad_k) *bad_k = -1;
    if (bad_n) *bad_n = -1;
    if (dtype != INT4MM_DTYPE_FP16 && dtype != INT4MM_DTYPE_BF16)
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: dtype %d is not supported (fp16 or bf16)",
                            fn, dtype);
    const int64_t unit = sparse ? 32 : 8;
    if (K < 0 || N < 0 || group_size <= 0 || K % group_size != 0 || group_size % unit != 0)
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT,
                            "%s: K=%lld, N=%lld, group_size=%lld: group_size must divide K and "
                            "be a positive multiple of %lld",
                            fn, static_cast<long long>(K), static_cast<long long>(N),
                            static_cast<long long>(group_size), static_cast<long long>(unit));
    if (N > 0 && K > INT64_MAX / N)
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: K*N overflows", fn);
    if (K == 0 || N == 0) return INT4MM_OK;
    if (int4mm_status s = need(fn, "weight", weight, 2)) return s;
    if (int4mm_status s = need(fn, "qweight", qweight, 4)) return s;
    if (int4mm_status s = need(fn, "scales", scales, 2)) return s;
    if (int4mm_status s = need(fn, "zeros", zeros, 2)) return s;
    if (sparse)
        if (int4mm_status s = need(fn, "mask", mask, 4)) return s;
    int4mm::DeviceGuard guard;
    if (int4mm_status s = guard.enter(device)) return s;
    cudaStream_t st = int4mm::as_stream(stream);
    const WeightView W{static_cast<const uint16_t *>(weight), stride_k, stride_n, dtype};

    // Pass 0: refuse Inf/NaN before writing anything (synchronizes the stream).
    unsigned long long *verdict = nullptr;
    INT4MM_CUDA_TRY(cudaMallocAsync(reinterpret_cast<void **>(&verdict), sizeof(*verdict), st));
    unsigned long long v = kNoOffence;
    cudaError_t e = cudaMemsetAsync(verdict, 0xff, sizeof(*verdict), st);
    if (e == cudaSuccess) {
        find_nonfinite<<<grid_for(K * N), kThreads, 0, st>>>(W, K, N, verdict);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaMemcpyAsync(&v, verdict, sizeof(v), cudaMemcpyDeviceToHost, st);
    cudaFreeAsync(verdict, st);
    if (e == cudaSuccess) e = cudaStreamSynchronize(st);
    if (e != cudaSuccess) return int4mm::fail_cuda(e, "checking the weight for Inf/NaN");
    if (v != kNoOffence) {
        const int64_t f = static_cast<int64_t>(v);
        if (bad_k) *bad_k = f / N;
        if (bad_n) *bad_n = f % N;
        return int4mm::fail(INT4MM_ERR_BAD_DATA, "%s: weight at [k=%lld, n=%lld] is Inf or NaN", fn,
                            static_cast<long long>(f / N), static_cast<long long>(f % N));
    }

    const int64_t work = (K / group_size) * N;
    if (sparse) {
        quantize_sparse_kernel<<<grid_for(work), kThreads, 0, st>>>(
            W, K, N, group_size, qweight, mask, static_cast<uint16_t *>(scales),
            static_cast<uint16_t *>(zeros));
    } else {
        quantize_dense_kernel<<<grid_for(work), kThreads, 0, st>>>(
            W, K, N, group_size, qweight, static_cast<uint16_t *>(scales),
            static_cast<uint16_t *>(zeros));
    }
    INT4MM_LAUNCH_CHECK("quantize kernel launch");
    return INT4MM_OK;
}
