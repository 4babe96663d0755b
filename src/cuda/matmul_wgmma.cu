// Hopper wgmma path for dense int4 weights (LARGE_M, sm_90a only).
//
// The GEMM is computed transposed, y^T[N, M] = W^T[N, K] x^T[K, M], so that the
// narrow operand (the int4 weights) is CUTLASS's "A" operand, which the
// mixed-input collective (sm90_mma_tma_gmma_rs_warpspecialized_mixed_input)
// loads by TMA into shared memory, moves to registers, dequantizes in
// registers ((int4 -> fp16) * scale + zero) and feeds to wgmma as the
// register-A operand; the activations are the shared-memory B operand.  The
// output tile is stored by the TMA epilogue as a column-major [N, M] matrix,
// i.e. row-major y with row stride ldy; bias is a per-row (per weight column)
// broadcast in the epilogue.  Per-channel weights at M <= 64 (config 8) skip
// the per-element scale: the mainloop only converts the codes, and the
// epilogue applies s * acc + zero_c * sum_k x[m, k] + bias (the row sums of x
// from a small kernel launched first; matmul_wgmma_gemm.cuh, ChannelConfig).
//
// Activations, scales, zeros, bias and output are fp16 or bf16 (one type per
// call, the type the weight was prepared for); the kernels are instantiated
// once per type (matmul_wgmma_f16.cu, matmul_wgmma_bf16.cu).
//
// Prepared form (INT4MM_LAYOUT_SM90_WGMMA), all parts 256-byte aligned:
//   [0, wbytes)           int4 W^T, signed (q - 8), N*K/2 bytes, reordered so
//                         the 8 values a thread holds in one m64nXk16 register
//                         fragment form one 32-bit word, in the value order
//                         [0,2,4,6,1,3,5,7] (see fragment_ordered_atom()).
//   [soff, soff + sbytes) scales [K/G, N] (copied), fp16 or bf16
//   [zoff, zoff + sbytes) zero_c [K/G, N] = -(z - 8) * s  (fp32, rounded once
//                         to the scales' type)
//   [roff, roff + rbytes) grouped weights only: the same scales and zero_c
//                         as the decode kernel's records (matmul_decode.cu),
//                         written by int4mm_prepare; not read here
// so that W[k, n] = (q - 8) * s + zero_c = (q - z) * s.
//
// Every .cu file is compiled for every target of the build; the CUTLASS
// kernels' bodies are empty (a printf) unless compiled for sm_90a
// (__CUDA_ARCH_FEAT_SM90_ALL), and the host side refuses to launch them
// unless the device is 9.0 and the loaded cubin is the sm_90a one.
#include "matmul_wgmma_gemm.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>

namespace int4mm {
namespace wgmma {
namespace {

using detail::kNumConfigs;
using detail::kTileK;
using detail::weight_layout;
using detail::WeightLayout;

// ---------------------------------------------------------------------------
// Build probe: its static shared memory differs in the sm_90a cubin, so
// cudaFuncGetAttributes tells (without a launch) whether the code the driver
// picked for the current device is the sm_90a one.
__global__ void sm90a_probe_kernel(int *out) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    __shared__ int buf[1024];
    buf[threadIdx.x] = (int)threadIdx.x;
    __syncthreads();
    if (out) out[threadIdx.x] = buf[1023 - threadIdx.x];
#else
    if (out) out[threadIdx.x] = 0;
#endif
}

// Whether the sm90a kernels can run on each device: 0 unknown, 1 yes, 2 no.
// Read lock-free on every call; written once per device (a racing second
// probe writes the same answer).  The SM count comes from device_attrs.
constexpr int kMaxDevices = 64;
std::atomic<int> g_usable[kMaxDevices];

// Returns INT4MM_OK with *usable set (and *sm_count when asked), or a CUDA
// failure (recorded).
int4mm_status device_usable(int device, bool *usable, int *sm_count) {
    *usable = false;
    if (device < 0 || device >= kMaxDevices) return INT4MM_OK;
    DeviceAttrs attrs;
    int4mm_status st = device_attrs(device, &attrs);
    if (st != INT4MM_OK) return st;
    if (sm_count) *sm_count = attrs.sms;
    const int known = g_usable[device].load(std::memory_order_acquire);
    if (known != 0) {
        *usable = known == 1;
        return INT4MM_OK;
    }
    bool ok = false;
    if (attrs.major == 9 && attrs.minor == 0) {
        int previous = 0;
        INT4MM_CUDA_TRY(cudaGetDevice(&previous));
        if (previous != device) INT4MM_CUDA_TRY(cudaSetDevice(device));
        cudaFuncAttributes attr{};
        cudaError_t e = cudaFuncGetAttributes(&attr, sm90a_probe_kernel);
        if (previous != device) cudaSetDevice(previous);
        if (e == cudaSuccess) {
            ok = attr.sharedSizeBytes >= 4096;
        } else {
            (void)cudaGetLastError();  // no loadable image: not usable, not an error
        }
    }
    g_usable[device].store(ok ? 1 : 2, std::memory_order_release);
    *usable = ok;
    return INT4MM_OK;
}

// ---------------------------------------------------------------------------
// Conversion kernels (compiled for every target; plain integer/fp code).

// One thread per raw word (i, n): codes k = 8i..8i+7 of column n.  The
// destination was zeroed; each nibble is OR-ed into its reordered place
// (nibbles of one destination word come from two columns and four words).
__global__ void prepare_weights_kernel(const uint32_t *__restrict__ qweight,
                                       uint32_t *__restrict__ dst, WeightLayout layout, int K,
                                       int N) {
    int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    int64_t total = static_cast<int64_t>(K / 8) * N;
    if (idx >= total) return;
    int n = static_cast<int>(idx % N);
    int i = static_cast<int>(idx / N);
    uint32_t w = __ldg(qweight + idx) ^ 0x88888888u;  // unsigned q -> signed q - 8
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        int off = static_cast<int>(layout(n, 8 * i + j, 0));
        uint32_t nib = (w >> (4 * j)) & 0xFu;
        atomicOr(dst + (off >> 3), nib << (4 * (off & 7)));
    }
}

__device__ __forceinline__ float elem_to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float elem_to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T>
__device__ __forceinline__ T elem_from_float(float v);
template <>
__device__ __forceinline__ __half elem_from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 elem_from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <class T>
__global__ void prepare_scales_kernel(const T *__restrict__ scales, const T *__restrict__ zeros,
                                      T *__restrict__ s_out, T *__restrict__ z_out, int64_t count) {
    int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= count) return;
    const T s = scales[idx];
    const float z = elem_to_float(zeros[idx]);
    // (z - 8) and its product with s are exact in fp32 (significands of at
    // most 11 bits): one rounding, to T.
    s_out[idx] = s;
    z_out[idx] = elem_from_float<T>(-(z - 8.0f) * elem_to_float(s));
}

// Automatic choice, from measurements on H100 SXM (benchmarks/NOTES.md, "wgmma", v6) and
// H200 (v12, v13, v14, v18).
// - M <= 64 / M <= 128: cooperative 128x64 / 128x128 tiles (x tiles no
//   taller than M needs; K tiles of 128 where K and G allow, else 64) with
//   the stream-K scheduler: CUTLASS's heuristic
//   spreads K over the SMs when the tiles fill less than a wave (8192 x
//   28672, M = 64: 83 us, was 113 on pingpong 64x64); when the tiles fill
//   between a quarter and half of the SMs, a plain split-K in two was
//   faster still (8192^2, M = 32: 28.6 vs 32.7 us), except at M <= 64 with
//   a third of a wave or less and K > 4096 (v14).  Per-channel weights of
//   more than 2^26 values at M <= 64 take config 8 (v14).  Where 128-column
//   tiles would run more than 1.5 waves, 256-column ones (configs 9-11, v18).
//   *splits: 0 = CUTLASS's heuristic, n > 1 = split-K in n.
// - M <= 256: pingpong 64x256 (one 64-row weight tile per CTA: N/64 CTAs).
// - otherwise 128x256 cooperative tiles; when they fill the last wave badly
//   (e.g. N = 5120, M = 2048: 320 tiles on 132 SMs = 2.4 waves) stream-K
//   spreads the remainder over all SMs (needs a stream-ordered workspace),
//   unless K <= 4096: there each tile's K loop is short, stream-K's fixup
//   costs more than it balances, and pingpong 64x256 tiles (twice as many,
//   no workspace) were faster on H200 (benchmarks/NOTES.md, v12: 1024^2
//   M = 2048 9.5 vs 20.1 us, 4096^2 M = 512 26.3 vs 36.5, 2048 x 5120 M = 2048
//   63.2 vs 70.8; at K = 5120 they were 0-9% slower, at K = 20480 15-25%).
int choose_config(int64_t M, int64_t N, int64_t K, int64_t G, int sm_count, int *splits) {
    const int64_t sms = sm_count > 0 ? sm_count : 132;
    *splits = 0;
    if (M <= 128) {
        const int64_t tiles = ((N + 127) / 128) * (M <= 64 ? (M + 63) / 64 : (M + 127) / 128);
        if (4 * tiles > sms && 2 * tiles <= sms) *splits = 2;
        // At M <= 64 with a third of a wave of tiles or less, CUTLASS's own
        // stream-K split beat split-K in two once K >= 8192 (N = 5120, H200:
        // 4-25%, K = 20480 39.4 vs 50.7 µs; v14).
        if (M <= 64 && 3 * tiles <= sms && K > 4096) *splits = 0;
        const bool k128 = K % 128 == 0 && (G == K || G % 128 == 0);  // K tiles of 128 (v13)
        // Weight tiles of 256 columns (configs 9-11) where 128-column tiles
        // would run more than 1.5 waves: a 256-column tile took 1.43-1.6x
        // as long as a 128-column one on the same SM (8192 x 28672, M = 32-128,
        // H200), so it wins once N / 128 > ~1.5 x the SMs (N = 28672: 224
        // tiles, 6-16% faster; N = 20480: 160 tiles, 16% slower; v18).
        // (`tiles` above is N / 128 rounded up: one x tile holds M <= 128.)
        if (k128 && 2 * tiles > 3 * sms) {
            if (M > 64) return 11;
            return G == K && K * N > (int64_t(1) << 26) ? 9 : 10;  // 9: as config 8 (below)
        }
        // Per-channel weights of more than 2^26 values (32 MiB of int4):
        // config 7's tiles with the scale and zero point in the epilogue
        // (v14: 4-15% faster there on H200); at 2^26 and below the extra
        // launch for the row sums of x costs what it saves (8192^2: even),
        // or more (4096 x 8192: +6%).
        if (M <= 64 && k128 && G == K && K * N > (int64_t(1) << 26)) return 8;
        if (M <= 64) return k128 ? 7 : 5;
        return k128 ? 6 : 4;
    }
    if (M <= 256) return 0;
    int64_t tiles = ((N + 127) / 128) * ((M + 255) / 256);
    int64_t waves = (tiles + sms - 1) / sms;
    double fill = static_cast<double>(tiles) / static_cast<double>(waves * sms);
    if (fill < 0.9) return K <= 4096 ? 0 : 3;
    return M > 512 ? 2 : 1;
}

}  // namespace

bool supported(int64_t K, int64_t N, int64_t G) {
    if (K <= 0 || N <= 0 || G <= 0) return false;
    if (N % 16 != 0 || K % kTileK != 0) return false;
    if (K % G != 0) return false;
    if (!(G == K || G % kTileK == 0)) return false;
    if (N * K >= (int64_t(1) << 31)) return false;  // 32-bit element offsets
    return true;
}

bool compiled() {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    bool ok = false;
    if (device_usable(dev, &ok, nullptr) != INT4MM_OK) return false;
    return ok;
}

size_t prepared_bytes(int64_t K, int64_t N, int64_t G) {
    if (!supported(K, N, G)) return 0;
    return parts(K, N, G).total;
}

int4mm_status prepare(const int32_t *qweight, const void *scales, const void *zeros, int dtype,
                      int64_t K, int64_t N, int64_t G, void *prepared, cudaStream_t stream) {
    PreparedParts p = parts(K, N, G);
    char *base = static_cast<char *>(prepared);
    INT4MM_CUDA_TRY(cudaMemsetAsync(base, 0, p.wbytes, stream));
    {
        int64_t total = (K / 8) * N;
        int threads = 256;
        unsigned blocks = static_cast<unsigned>((total + threads - 1) / threads);
        prepare_weights_kernel<<<blocks, threads, 0, stream>>>(
            reinterpret_cast<const uint32_t *>(qweight), reinterpret_cast<uint32_t *>(base),
            weight_layout(K, N), static_cast<int>(K), static_cast<int>(N));
        INT4MM_LAUNCH_CHECK("prepare (wgmma): weights");
    }
    {
        int64_t count = (K / G) * N;
        int threads = 256;
        unsigned blocks = static_cast<unsigned>((count + threads - 1) / threads);
        if (dtype == INT4MM_DTYPE_BF16) {
            prepare_scales_kernel<__nv_bfloat16><<<blocks, threads, 0, stream>>>(
                static_cast<const __nv_bfloat16 *>(scales), static_cast<const __nv_bfloat16 *>(zeros),
                reinterpret_cast<__nv_bfloat16 *>(base + p.soff),
                reinterpret_cast<__nv_bfloat16 *>(base + p.zoff), count);
        } else {
            prepare_scales_kernel<__half><<<blocks, threads, 0, stream>>>(
                static_cast<const __half *>(scales), static_cast<const __half *>(zeros),
                reinterpret_cast<__half *>(base + p.soff), reinterpret_cast<__half *>(base + p.zoff),
                count);
        }
        INT4MM_LAUNCH_CHECK("prepare (wgmma): scales");
    }
    return INT4MM_OK;
}

namespace {

int4mm_status launch_config(const int4mm_matmul_args &a, cudaStream_t s, int cfg) {
    if (a.prepared == nullptr || a.layout != INT4MM_LAYOUT_SM90_WGMMA)
        return fail(INT4MM_ERR_UNSUPPORTED, "matmul (wgmma): needs weights prepared as SM90_WGMMA");
    if (a.mask != nullptr)
        return fail(INT4MM_ERR_UNSUPPORTED, "matmul (wgmma): dense weights only");
    if (a.dtype != INT4MM_DTYPE_FP16 && a.dtype != INT4MM_DTYPE_BF16)
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul (wgmma): dtype %d is neither fp16 nor bf16", a.dtype);
    if (!supported(a.K, a.N, a.group_size))
        return fail(INT4MM_ERR_UNSUPPORTED, "matmul (wgmma): unsupported shape K=%lld N=%lld G=%lld",
                    (long long)a.K, (long long)a.N, (long long)a.group_size);
    if (a.M < 0 || a.M > INT32_MAX || a.ldx < a.K || a.ldy < a.N || a.ldx % 8 || a.ldy % 8)
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul (wgmma): bad M or row strides");
    if (!aligned16(a.x) || !aligned16(a.y) || !aligned16(a.prepared) ||
        (a.bias && !aligned16(a.bias)))
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul (wgmma): pointers must be 16-byte aligned");
    if (a.M == 0) return INT4MM_OK;
    bool usable = false;
    int sms = 0;
    int4mm_status st = device_usable(a.device, &usable, &sms);
    if (st != INT4MM_OK) return st;
    if (!usable)
        return fail(INT4MM_ERR_UNSUPPORTED, "matmul (wgmma): device %d is not sm_90 or this build has no sm_90a code",
                    a.device);
    int splits = 0;
    if (cfg < 0) cfg = choose_config(a.M, a.N, a.K, a.group_size, sms, &splits);
    if (cfg >= kNumConfigs) return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul (wgmma): no config %d", cfg);
    if (a.dtype == INT4MM_DTYPE_BF16) return detail::run<cutlass::bfloat16_t>(cfg, a, s, sms, splits);
    return detail::run<cutlass::half_t>(cfg, a, s, sms, splits);
}

}  // namespace

}  // namespace wgmma
}  // namespace int4mm

int4mm_status launch_matmul_wgmma(const int4mm_matmul_args &a, cudaStream_t s) {
    return int4mm::wgmma::launch_config(a, s, -1);
}
