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
// broadcast in the epilogue.
//
// Prepared form (INT4MM_LAYOUT_SM90_WGMMA), all parts 256-byte aligned:
//   [0, wbytes)           int4 W^T, signed (q - 8), N*K/2 bytes, reordered so
//                         the 8 values a thread holds in one m64nXk16 register
//                         fragment form one 32-bit word, in the value order
//                         [0,2,4,6,1,3,5,7] (see fragment_ordered_atom()).
//   [soff, soff + sbytes) fp16 scales [K/G, N] (copied)
//   [zoff, zoff + sbytes) fp16 zero_c [K/G, N] = -(z - 8) * s  (fp32, rounded once)
// so that W[k, n] = (q - 8) * s + zero_c = (q - z) * s.
//
// Every .cu file is compiled for every target of the build; the CUTLASS
// kernels' bodies are empty (a printf) unless compiled for sm_90a
// (__CUDA_ARCH_FEAT_SM90_ALL), and the host side refuses to launch them
// unless the device is 9.0 and the loaded cubin is the sm_90a one.
#include "matmul_wgmma.cuh"

#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/numeric_types.h>
#include <cutlass/gemm/dispatch_policy.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/epilogue/fusion/operations.hpp>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/kernel/gemm_universal.hpp>

#include <mutex>

namespace int4mm {
namespace wgmma {
namespace {

using namespace cute;

using MmaT = cutlass::half_t;
using QuantT = cutlass::int4b_t;
constexpr int kTileK = 64;  // 128 bytes of fp16 per TMA row: the 128B swizzle
constexpr size_t kAlign = 256;

// ---------------------------------------------------------------------------
// Weight layout.  One 16 (n) x 16 (k) block of W^T holds the register A
// fragment of one warp for one m64nXk16 wgmma: lane t holds rows t/4 and
// t/4 + 8 and columns 2(t%4) + {0, 1, 8, 9}, 8 values.  The atom maps (n, k)
// of the block to lane * 8 + position, where the value's position follows the
// order [0,2,4,6,1,3,5,7] that CUTLASS's int4 -> fp16 converter specialization
// for that order expects (even values come out of one shift/lop3, odd ones of
// another).  So each lane reads one 32-bit word per k16 step.
using ValueOrder = Layout<Shape<_2, _4>, Stride<_4, _1>>;

constexpr auto fragment_ordered_atom() {
    using Atom = decltype(SM90::GMMA::rs_op_selector<MmaT, MmaT, float, Shape<_64, _16, _32>>());
    using Traits = MMA_Traits<Atom>;
    // (thread, value) -> (m, k) of the whole 64 x 16 warpgroup fragment
    auto tv = typename Traits::ALayout{};
    constexpr int kVals = decltype(size<1>(tv))::value;  // 8
    static_assert(kVals == 8, "unexpected register-A fragment");
    // The first warp's part: lanes 0..31 own rows 0..15.
    auto tv_warp = make_layout_like(composition(tv, make_shape(Int<32>{}, Int<kVals>{})));
    // (m, k) in the 16 x 16 block -> lane + 32 * value
    auto mk_to_tv = right_inverse(tv_warp).with_shape(make_shape(Int<16>{}, Int<16>{}));
    // lane + 32 * value -> lane * 8 + position(value)
    auto tv_to_offset = make_layout(make_shape(Int<32>{}, shape(ValueOrder{})),
                                    make_stride(Int<kVals>{}, stride(ValueOrder{})));
    return composition(tv_to_offset, mk_to_tv);
}

using WeightAtom = decltype(fragment_ordered_atom());
// (N, K, L) -> element offset; blocks tiled column-major over (N/16, K/16).
using WeightLayout = decltype(tile_to_shape(WeightAtom{}, make_shape(int(0), int(0), int(0))));

WeightLayout weight_layout(int64_t K, int64_t N) {
    return tile_to_shape(WeightAtom{}, make_shape(int(N), int(K), int(1)));
}

// ---------------------------------------------------------------------------
// Kernel configurations.  Problem (CUTLASS terms): M = N_weights, N = rows of x.
template <int TileN, int TileM, int ClusterN, class Schedule, class EpiSchedule,
          class Scheduler = void>
struct Config {
    using TileShape = Shape<Int<TileN>, Int<TileM>, Int<kTileK>>;
    using ClusterShape = Shape<Int<ClusterN>, _1, _1>;
    using Fusion = cutlass::epilogue::fusion::LinCombPerRowBias<MmaT, float, MmaT, MmaT, float>;
    using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
        cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
        cutlass::epilogue::collective::EpilogueTileAuto, float, float,
        void, cutlass::layout::ColumnMajor, 8,   // no C
        MmaT, cutlass::layout::ColumnMajor, 8,   // D = y^T, column-major: y row-major
        EpiSchedule, Fusion>::CollectiveOp;
    using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
        cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
        cute::tuple<QuantT, MmaT, MmaT>, WeightLayout, 32,   // int4 W^T + scale + zero
        MmaT, cutlass::layout::ColumnMajor, 8,               // x: K-major
        float, TileShape, ClusterShape,
        cutlass::gemm::collective::StageCountAutoCarveout<
            static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
        Schedule>::CollectiveOp;
    using Kernel =
        cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue, Scheduler>;
    using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};

using Coop = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
using CoopEpi = cutlass::epilogue::TmaWarpSpecializedCooperative;
using Ping = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
using PingEpi = cutlass::epilogue::TmaWarpSpecialized;

using StreamK = cutlass::gemm::StreamKScheduler;

// Measured alternatives that lost everywhere (benchmarks/NOTES.md, "wgmma"):
// cooperative 128x128, pingpong 64x256 with 2x1 / 4x1 clusters, stream-K
// with a 2x1 cluster.  They are not built.
using Cfg0 = Config<64, 256, 1, Ping, PingEpi>;              // M <= 256
using Cfg1 = Config<128, 256, 1, Coop, CoopEpi>;             // 256 < M <= 512
using Cfg2 = Config<128, 256, 2, Coop, CoopEpi>;             // M > 512
using Cfg3 = Config<128, 256, 1, Coop, CoopEpi, StreamK>;    // badly filled last wave
constexpr int kNumConfigs = 4;
const char *const kConfigNames[kNumConfigs] = {
    "pingpong 64(N)x256(M)x64", "coop 128(N)x256(M)x64", "coop 128(N)x256(M)x64 cluster 2x1",
    "coop 128(N)x256(M)x64 stream-K"};

// Test hooks (benchmarks only): tile raster order and swizzle.
int g_swizzle = 1;
int g_raster = 0;  // 0 heuristic, 1 along M (weights), 2 along N (rows of x)

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

struct DeviceFacts {
    int checked = 0;  // 0 unknown, 1 known
    bool usable = false;
    int sm_count = 0;
};
constexpr int kMaxDevices = 64;
DeviceFacts g_facts[kMaxDevices];
std::mutex g_facts_mutex;

// Returns INT4MM_OK with *usable set, or a CUDA failure (recorded).
int4mm_status device_usable(int device, bool *usable, int *sm_count) {
    *usable = false;
    if (device < 0 || device >= kMaxDevices) return INT4MM_OK;
    {
        std::lock_guard<std::mutex> lock(g_facts_mutex);
        if (g_facts[device].checked) {
            *usable = g_facts[device].usable;
            if (sm_count) *sm_count = g_facts[device].sm_count;
            return INT4MM_OK;
        }
    }
    int major = 0, minor = 0, sms = 0;
    INT4MM_CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    INT4MM_CUDA_TRY(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    INT4MM_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    bool ok = false;
    if (major == 9 && minor == 0) {
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
    std::lock_guard<std::mutex> lock(g_facts_mutex);
    g_facts[device].checked = 1;
    g_facts[device].usable = ok;
    g_facts[device].sm_count = sms;
    *usable = ok;
    if (sm_count) *sm_count = sms;
    return INT4MM_OK;
}

struct PreparedParts {
    size_t wbytes, soff, zoff, total;
};

PreparedParts parts(int64_t K, int64_t N, int64_t G) {
    auto up = [](size_t v) { return (v + kAlign - 1) / kAlign * kAlign; };
    PreparedParts p;
    p.wbytes = static_cast<size_t>(N) * static_cast<size_t>(K) / 2;
    size_t sbytes = static_cast<size_t>(K / G) * static_cast<size_t>(N) * 2;
    p.soff = up(p.wbytes);
    p.zoff = p.soff + up(sbytes);
    p.total = p.zoff + up(sbytes);
    return p;
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

__global__ void prepare_scales_kernel(const __half *__restrict__ scales,
                                      const __half *__restrict__ zeros, __half *__restrict__ s_out,
                                      __half *__restrict__ z_out, int64_t count) {
    int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= count) return;
    __half s = scales[idx];
    float z = __half2float(zeros[idx]);
    // (z - 8) and its product with s are exact in fp32 (11-bit significands):
    // one rounding, to fp16.
    s_out[idx] = s;
    z_out[idx] = __float2half_rn(-(z - 8.0f) * __half2float(s));
}

// ---------------------------------------------------------------------------
template <class Cfg>
int4mm_status run_config(const int4mm_matmul_args &a, cudaStream_t stream, int sm_count) {
    using Gemm = typename Cfg::Gemm;
    using Kernel = typename Cfg::Kernel;
    using Mainloop = typename Cfg::Mainloop;

    const int M = static_cast<int>(a.M), N = static_cast<int>(a.N), K = static_cast<int>(a.K);
    const int G = static_cast<int>(a.group_size);
    const int scale_k = K / G;
    PreparedParts p = parts(a.K, a.N, a.group_size);
    const char *base = static_cast<const char *>(a.prepared);

    using StrideX = cutlass::detail::TagToStrideB_t<cutlass::layout::ColumnMajor>;
    StrideX dx = make_stride(static_cast<int64_t>(a.ldx), _1{}, static_cast<int64_t>(a.ldx) * M);
    typename Mainloop::StrideScale ds =
        make_stride(_1{}, static_cast<int64_t>(N), static_cast<int64_t>(N) * scale_k);
    typename Kernel::StrideD dy = make_stride(_1{}, static_cast<int64_t>(a.ldy), static_cast<int64_t>(a.ldy) * M);

    typename Gemm::Arguments args{};
    args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
    args.problem_shape = {N, M, K, 1};
    args.mainloop = {reinterpret_cast<const QuantT *>(base), weight_layout(a.K, a.N),
                     static_cast<const MmaT *>(a.x), dx,
                     reinterpret_cast<const MmaT *>(base + p.soff), ds, G,
                     reinterpret_cast<const MmaT *>(base + p.zoff)};
    auto &fusion = args.epilogue.thread;
    fusion.alpha = 1.0f;
    fusion.beta = 0.0f;
    fusion.bias_ptr = static_cast<const MmaT *>(a.bias);
    args.epilogue.ptr_C = nullptr;
    args.epilogue.dC = dy;
    args.epilogue.ptr_D = static_cast<MmaT *>(a.y);
    args.epilogue.dD = dy;
    args.hw_info.device_id = a.device;
    args.hw_info.sm_count = sm_count;
    using RasterT = decltype(args.scheduler.raster_order);
    args.scheduler.max_swizzle_size = g_swizzle;
    args.scheduler.raster_order = static_cast<RasterT>(g_raster);

    if (Gemm::can_implement(args) != cutlass::Status::kSuccess)
        return fail(INT4MM_ERR_UNSUPPORTED, "matmul (wgmma): CUTLASS cannot implement M=%d N=%d K=%d G=%d",
                    M, N, K, G);
    // Only the stream-K configuration needs a workspace (partial tiles +
    // flags); it is taken from the stream-ordered pool for the call.
    size_t ws_bytes = Gemm::get_workspace_size(args);
    void *ws = nullptr;
    if (ws_bytes != 0) INT4MM_CUDA_TRY(cudaMallocAsync(&ws, ws_bytes, stream));
    struct WsFree {
        void *p; cudaStream_t s;
        ~WsFree() { if (p) cudaFreeAsync(p, s); }
    } ws_free{ws, stream};
    Gemm gemm;
    cutlass::Status st = gemm.initialize(args, ws, stream);
    if (st != cutlass::Status::kSuccess) {
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return fail_cuda(e, "matmul (wgmma): initialize");
        return fail(INT4MM_ERR_CUDA, "matmul (wgmma): initialize failed (%s)", cutlassGetStatusString(st));
    }
    st = gemm.run(stream);
    if (st != cutlass::Status::kSuccess) {
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return fail_cuda(e, "matmul (wgmma): launch");
        return fail(INT4MM_ERR_CUDA, "matmul (wgmma): launch failed (%s)", cutlassGetStatusString(st));
    }
    INT4MM_LAUNCH_CHECK("matmul (wgmma) launch");
    return INT4MM_OK;
}

// Automatic choice, from measurements on H100 SXM (benchmarks/NOTES.md, "wgmma").
// - M <= 256: pingpong 64x256 (one 64-row weight tile per CTA: N/64 CTAs).
// - otherwise 128x256 cooperative tiles; when they fill the last wave badly
//   (e.g. N = 5120, M = 2048: 320 tiles on 132 SMs = 2.4 waves) stream-K
//   spreads the remainder over all SMs (needs a stream-ordered workspace).
int choose_config(int64_t M, int64_t N, int sm_count) {
    if (M <= 256) return 0;
    int64_t tiles = ((N + 127) / 128) * ((M + 255) / 256);
    int64_t sms = sm_count > 0 ? sm_count : 132;
    int64_t waves = (tiles + sms - 1) / sms;
    double fill = static_cast<double>(tiles) / static_cast<double>(waves * sms);
    if (fill < 0.9) return 3;
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

int4mm_status prepare(const int32_t *qweight, const void *scales, const void *zeros, int64_t K,
                      int64_t N, int64_t G, void *prepared, cudaStream_t stream) {
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
        prepare_scales_kernel<<<blocks, threads, 0, stream>>>(
            static_cast<const __half *>(scales), static_cast<const __half *>(zeros),
            reinterpret_cast<__half *>(base + p.soff), reinterpret_cast<__half *>(base + p.zoff),
            count);
        INT4MM_LAUNCH_CHECK("prepare (wgmma): scales");
    }
    return INT4MM_OK;
}

int num_configs() { return kNumConfigs; }
void set_tuning(int swizzle, int raster) {
    g_swizzle = swizzle;
    g_raster = raster;
}
const char *config_name(int cfg) { return (cfg >= 0 && cfg < kNumConfigs) ? kConfigNames[cfg] : "?"; }

int4mm_status launch_config(const int4mm_matmul_args &a, cudaStream_t s, int cfg) {
    if (a.prepared == nullptr || a.layout != INT4MM_LAYOUT_SM90_WGMMA)
        return fail(INT4MM_ERR_UNSUPPORTED, "matmul (wgmma): needs weights prepared as SM90_WGMMA");
    if (a.mask != nullptr || a.dtype != INT4MM_DTYPE_FP16)
        return fail(INT4MM_ERR_UNSUPPORTED, "matmul (wgmma): dense fp16 only");
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
    if (cfg < 0) cfg = choose_config(a.M, a.N, sms);
    switch (cfg) {
        case 0: return run_config<Cfg0>(a, s, sms);
        case 1: return run_config<Cfg1>(a, s, sms);
        case 2: return run_config<Cfg2>(a, s, sms);
        case 3: return run_config<Cfg3>(a, s, sms);
        default: return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul (wgmma): no config %d", cfg);
    }
}

}  // namespace wgmma
}  // namespace int4mm

int4mm_status launch_matmul_wgmma(const int4mm_matmul_args &a, cudaStream_t s) {
    return int4mm::wgmma::launch_config(a, s, -1);
}
