// Internal to the wgmma path: the prepared weight layout, the CUTLASS kernel
// configurations and their launcher, shared by matmul_wgmma.cu (layout,
// prepare, dispatch) and the per-element-type instantiation files
// matmul_wgmma_f16.cu / matmul_wgmma_bf16.cu (split so that the two heavy
// CUTLASS instantiations compile in parallel).  See matmul_wgmma.cu for the
// computation and the prepared form.
#ifndef INT4MM_MATMUL_WGMMA_GEMM_CUH_
#define INT4MM_MATMUL_WGMMA_GEMM_CUH_

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

#include <algorithm>
#include <type_traits>

namespace int4mm {
namespace wgmma {
namespace detail {

using namespace cute;

using QuantT = cutlass::int4b_t;
constexpr int kTileK = 64;  // 128 bytes of fp16 per TMA row: the 128B swizzle

// ---------------------------------------------------------------------------
// Weight layout.  One 16 (n) x 16 (k) block of W^T holds the register A
// fragment of one warp for one m64nXk16 wgmma: lane t holds rows t/4 and
// t/4 + 8 and columns 2(t%4) + {0, 1, 8, 9}, 8 values.  The atom maps (n, k)
// of the block to lane * 8 + position, where the value's position follows the
// order [0,2,4,6,1,3,5,7] that CUTLASS's int4 -> fp16 converter specialization
// for that order expects (even values come out of one shift/lop3, odd ones of
// another).  So each lane reads one 32-bit word per k16 step.
using ValueOrder = Layout<Shape<_2, _4>, Stride<_4, _1>>;

template <class MmaT>
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

// fp16 and bf16 register fragments are laid out alike, so one prepared weight
// layout serves both element types.
using WeightAtom = decltype(fragment_ordered_atom<cutlass::half_t>());
static_assert(std::is_same<WeightAtom, decltype(fragment_ordered_atom<cutlass::bfloat16_t>())>::value,
              "fp16 and bf16 A fragments differ");
// (N, K, L) -> element offset; blocks tiled column-major over (N/16, K/16).
using WeightLayout = decltype(tile_to_shape(WeightAtom{}, make_shape(int(0), int(0), int(0))));

inline WeightLayout weight_layout(int64_t K, int64_t N) {
    return tile_to_shape(WeightAtom{}, make_shape(int(N), int(K), int(1)));
}

// ---------------------------------------------------------------------------
// Per-channel weights (G == K) can keep the scale and zero point out of the
// mainloop: it converts the exact codes only (q ^ 8 read as a signed int4 is
// q - 8), and the epilogue applies them per output element in fp32,
//   y[m, n] = s[n] * acc[n, m] + zero_c[n] * xsum[m] + bias[n],
// with xsum[m] = sum_k x[m, k] from a small kernel launched first
// (`x_row_sums`).  That takes one HFMA2 per two weights and the scale tiles'
// shared-memory traffic out of the consumer warps, which at M <= 64 are what
// limits the kernel: 8192 x 28672 M = 64 74.2 -> 65.0 µs on H200 (the extra
// launch makes it no faster on 8192^2; benchmarks/NOTES.md, v14).
template <class MmaT, class TileShape>
struct ChannelEpilogue {
    static constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;
    // per weight column (a row of y^T): s, zero_c, bias (a null bias reads as 0)
    using ColVector = cutlass::epilogue::fusion::Sm90ColBroadcast<0, TileShape, MmaT, float, Stride<_1, _0, int64_t>>;
    // per row of x: its sum (fp32, no alignment asked of M)
    using RowVector = cutlass::epilogue::fusion::Sm90RowBroadcast<0, TileShape, float, float, Stride<_0, _1, int64_t>, 1>;
    using ZeroTerm = cutlass::epilogue::fusion::Sm90EVT<  // zero_c * xsum + bias
        cutlass::epilogue::fusion::Sm90Compute<cutlass::homogeneous_multiply_add, float, float, kRound>,
        ColVector, RowVector, ColVector>;
    using Fusion = cutlass::epilogue::fusion::Sm90EVT<  // s * acc + (zero_c * xsum + bias)
        cutlass::epilogue::fusion::Sm90Compute<cutlass::homogeneous_multiply_add, MmaT, float, kRound>,
        ColVector, cutlass::epilogue::fusion::Sm90AccFetch, ZeroTerm>;
};

// Kernel configurations.  Problem (CUTLASS terms): M = N_weights, N = rows of x.
// PerChannel: the mainloop converts the codes only and the epilogue scales
// (above; G == K only); otherwise each weight is scaled in the mainloop.
template <class MmaT, int TileN, int TileM, int ClusterN, class Schedule, class EpiSchedule,
          class Scheduler = void, int TileK = kTileK, bool PerChannel = false>
struct Config {
    using TileShape = Shape<Int<TileN>, Int<TileM>, Int<TileK>>;
    using ClusterShape = Shape<Int<ClusterN>, _1, _1>;
    using Fusion = std::conditional_t<PerChannel, typename ChannelEpilogue<MmaT, TileShape>::Fusion,
                                      cutlass::epilogue::fusion::LinCombPerRowBias<MmaT, float, MmaT, MmaT, float>>;
    using ElementA = std::conditional_t<PerChannel, QuantT,                  // int4 W^T, converted only
                                        cute::tuple<QuantT, MmaT, MmaT>>;    // int4 W^T + scale + zero
    using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
        cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
        cutlass::epilogue::collective::EpilogueTileAuto, float, float,
        void, cutlass::layout::ColumnMajor, 8,   // no C
        MmaT, cutlass::layout::ColumnMajor, 8,   // D = y^T, column-major: y row-major
        EpiSchedule, Fusion>::CollectiveOp;
    using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
        cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
        ElementA, WeightLayout, 32,
        MmaT, cutlass::layout::ColumnMajor, 8,   // x: K-major
        float, TileShape, ClusterShape,
        cutlass::gemm::collective::StageCountAutoCarveout<
            static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
        Schedule>::CollectiveOp;
    using Kernel =
        cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue, Scheduler>;
    using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
    static constexpr bool kStreamK = std::is_same<Scheduler, cutlass::gemm::StreamKScheduler>::value;
    static constexpr bool kPerChannel = PerChannel;
};

using Coop = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
using CoopEpi = cutlass::epilogue::TmaWarpSpecializedCooperative;
using Ping = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
using PingEpi = cutlass::epilogue::TmaWarpSpecialized;

using StreamK = cutlass::gemm::StreamKScheduler;

// Measured alternatives that lost everywhere (benchmarks/NOTES.md, "wgmma"):
// cooperative 128x128 without stream-K at M > 256, pingpong 64x256 with
// 2x1 / 4x1 clusters, stream-K with a 2x1 cluster (also configs 8 and 6 with
// 2x1 clusters at M = 32-128: v18).  They are not built.
template <class MmaT> using Cfg0 = Config<MmaT, 64, 256, 1, Ping, PingEpi>;            // M <= 256
template <class MmaT> using Cfg1 = Config<MmaT, 128, 256, 1, Coop, CoopEpi>;           // 256 < M <= 512
template <class MmaT> using Cfg2 = Config<MmaT, 128, 256, 2, Coop, CoopEpi>;           // M > 512
template <class MmaT> using Cfg3 = Config<MmaT, 128, 256, 1, Coop, CoopEpi, StreamK>;  // badly filled last wave
// Few rows of x: x tiles as tall as M needs (a 256-row x tile at M = 64 was
// slower than at M = 256: benchmarks/NOTES.md, v4), cooperative so that both
// consumer warpgroups work, stream-K or split-K so that every SM streams
// weights (pingpong 64x64 / 64x128 tiles lost: NOTES.md, v6).
template <class MmaT> using Cfg4 = Config<MmaT, 128, 128, 1, Coop, CoopEpi, StreamK>;  // M <= 128
template <class MmaT> using Cfg5 = Config<MmaT, 128, 64, 1, Coop, CoopEpi, StreamK>;   // M <= 64
// The same two with K tiles of 128 (half the mainloop trips; 4-7% faster at
// M = 32-128 on H200: benchmarks/NOTES.md, v13), for K % 128 == 0 with G == K
// or G % 128 == 0.
template <class MmaT> using Cfg6 = Config<MmaT, 128, 128, 1, Coop, CoopEpi, StreamK, 128>;  // M <= 128
template <class MmaT> using Cfg7 = Config<MmaT, 128, 64, 1, Coop, CoopEpi, StreamK, 128>;   // M <= 64

// Config 8: config 7's tiles for per-channel weights (ChannelEpilogue).
template <class MmaT> using Cfg8 = Config<MmaT, 128, 64, 1, Coop, CoopEpi, StreamK, 128, true>;  // M <= 64, G == K
// Configs 9-11: weight tiles of 256 columns for M <= 128 (each consumer
// warpgroup issues two m64 wgmmas per k16 step; 6-16% faster than configs
// 8 / 7 / 6 where 128-column tiles run more than 1.5 waves, e.g. N = 28672,
// and slower below: benchmarks/NOTES.md, v18), K tiles of 128.
template <class MmaT> using Cfg9 = Config<MmaT, 256, 64, 1, Coop, CoopEpi, StreamK, 128, true>;  // M <= 64, G == K
template <class MmaT> using Cfg10 = Config<MmaT, 256, 64, 1, Coop, CoopEpi, StreamK, 128>;       // M <= 64
template <class MmaT> using Cfg11 = Config<MmaT, 256, 128, 1, Coop, CoopEpi, StreamK, 128>;      // M <= 128
constexpr int kNumConfigs = 12;
constexpr int kFirstSmallConfig = 4;  // configs 4 .. 8 live in their own files (see run())
constexpr int kFirstWideConfig = 9;   // and configs 9 .. 11 in theirs

// out[m] = sum_k x[m, k] in fp32, one CTA per row of x (K % 8 == 0, rows
// 16-byte aligned: the wgmma path's own requirements on x).
template <class T>
__global__ void x_row_sums(const T *__restrict__ x, int64_t ldx, int K, float *__restrict__ out) {
    const T *row = x + static_cast<int64_t>(blockIdx.x) * ldx;
    float s = 0.0f;
    for (int k = threadIdx.x * 8; k < K; k += blockDim.x * 8) {
        const uint4 v = *reinterpret_cast<const uint4 *>(row + k);
        const T *e = reinterpret_cast<const T *>(&v);
#pragma unroll
        for (int i = 0; i < 8; ++i) s += static_cast<float>(e[i]);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    __shared__ float part[32];
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x < 32) {
        s = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.0f;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (threadIdx.x == 0) out[blockIdx.x] = s;
    }
}

template <class MmaT, class Cfg>
int4mm_status run_config(const int4mm_matmul_args &a, cudaStream_t stream, int sm_count, int splits) {
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

    const MmaT *scales = reinterpret_cast<const MmaT *>(base + p.soff);
    const MmaT *zero_c = reinterpret_cast<const MmaT *>(base + p.zoff);
    const MmaT *bias = static_cast<const MmaT *>(a.bias);
    (void)scales;  // nvcc's device pass warns about these (177-D) across the if constexpr
    (void)zero_c;

    typename Gemm::Arguments args{};
    args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
    args.problem_shape = {N, M, K, 1};
    // The sums of x's rows (per-channel configs) go at the start of the
    // call's workspace; their pointer is set once that exists.
    float *xsum = nullptr;
    size_t sum_bytes = 0;
    if constexpr (Cfg::kPerChannel) {
        if (G != K) return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul (wgmma): config for per-channel weights, G=%d", G);
        args.mainloop = {reinterpret_cast<const QuantT *>(base), weight_layout(a.K, a.N),
                         static_cast<const MmaT *>(a.x), dx};
        sum_bytes = (static_cast<size_t>(M) * sizeof(float) + 255) / 256 * 256;
        args.epilogue.thread = {{scales}, {}, {{zero_c}, {xsum}, {bias}, {}}, {}};
    } else {
        args.mainloop = {reinterpret_cast<const QuantT *>(base), weight_layout(a.K, a.N),
                         static_cast<const MmaT *>(a.x), dx, scales, ds, G, zero_c};
        auto &fusion = args.epilogue.thread;
        fusion.alpha = 1.0f;
        fusion.beta = 0.0f;
        fusion.bias_ptr = bias;
    }
    args.epilogue.ptr_C = nullptr;
    args.epilogue.dC = dy;
    args.epilogue.ptr_D = static_cast<MmaT *>(a.y);
    args.epilogue.dD = dy;
    args.hw_info.device_id = a.device;
    args.hw_info.sm_count = sm_count;
    args.scheduler.max_swizzle_size = 1;  // measured best (benchmarks/NOTES.md, "wgmma")
    if constexpr (Cfg::kStreamK) {
        if (splits > 1) {
            args.scheduler.splits = splits;
            args.scheduler.decomposition_mode = cutlass::gemm::kernel::detail::DecompositionMode::SplitK;
        }
    }

    if (Gemm::can_implement(args) != cutlass::Status::kSuccess)
        return fail(INT4MM_ERR_UNSUPPORTED, "matmul (wgmma): CUTLASS cannot implement M=%d N=%d K=%d G=%d",
                    M, N, K, G);
    // Only the stream-K configurations need a workspace (partial tiles +
    // flags), and the per-channel ones room for the row sums; it is taken
    // from the stream-ordered pool for the call.
    size_t ws_bytes = Gemm::get_workspace_size(args);
    char *ws = nullptr;
    if (sum_bytes + ws_bytes != 0)
        INT4MM_CUDA_TRY(cudaMallocAsync(reinterpret_cast<void **>(&ws), sum_bytes + ws_bytes, stream));
    struct WsFree {
        void *p; cudaStream_t s;
        ~WsFree() { if (p) cudaFreeAsync(p, s); }
    } ws_free{ws, stream};
    if constexpr (Cfg::kPerChannel) {
        xsum = reinterpret_cast<float *>(ws);
        const int threads = std::min(1024, (K / 8 + 31) / 32 * 32);
        x_row_sums<MmaT><<<M, threads, 0, stream>>>(static_cast<const MmaT *>(a.x), a.ldx, K, xsum);
        INT4MM_LAUNCH_CHECK("matmul (wgmma): row sums of x");
        args.epilogue.thread = {{scales}, {}, {{zero_c}, {xsum}, {bias}, {}}, {}};
    }
    Gemm gemm;
    cutlass::Status st = gemm.initialize(args, ws_bytes != 0 ? ws + sum_bytes : nullptr, stream);
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

// Runs configuration `cfg` (0 .. kNumConfigs - 1) with activations of type
// MmaT (cutlass::half_t or cutlass::bfloat16_t).  The CUTLASS instantiations
// are the slowest part of the build, so they are spread over six files that
// compile in parallel: configs 0-3 in matmul_wgmma_{f16,bf16}.cu (run_large),
// 4-8 in matmul_wgmma_{f16,bf16}_small.cu (run_small), 9-11 in
// matmul_wgmma_{f16,bf16}_wide.cu (run_wide).
template <class MmaT>
int4mm_status run_large(int cfg, const int4mm_matmul_args &a, cudaStream_t stream, int sm_count, int splits);
template <class MmaT>
int4mm_status run_small(int cfg, const int4mm_matmul_args &a, cudaStream_t stream, int sm_count, int splits);
template <class MmaT>
int4mm_status run_wide(int cfg, const int4mm_matmul_args &a, cudaStream_t stream, int sm_count, int splits);

template <class MmaT>
inline int4mm_status run(int cfg, const int4mm_matmul_args &a, cudaStream_t stream, int sm_count, int splits) {
    if (cfg >= kFirstWideConfig) return run_wide<MmaT>(cfg, a, stream, sm_count, splits);
    if (cfg >= kFirstSmallConfig) return run_small<MmaT>(cfg, a, stream, sm_count, splits);
    return run_large<MmaT>(cfg, a, stream, sm_count, splits);
}

// The definitions the instantiation files use.
template <class MmaT>
int4mm_status run_large_impl(int cfg, const int4mm_matmul_args &a, cudaStream_t stream, int sm_count, int splits) {
    switch (cfg) {
        case 0: return run_config<MmaT, Cfg0<MmaT>>(a, stream, sm_count, splits);
        case 1: return run_config<MmaT, Cfg1<MmaT>>(a, stream, sm_count, splits);
        case 2: return run_config<MmaT, Cfg2<MmaT>>(a, stream, sm_count, splits);
        case 3: return run_config<MmaT, Cfg3<MmaT>>(a, stream, sm_count, splits);
        default: return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul (wgmma): no config %d", cfg);
    }
}
template <class MmaT>
int4mm_status run_small_impl(int cfg, const int4mm_matmul_args &a, cudaStream_t stream, int sm_count, int splits) {
    switch (cfg) {
        case 4: return run_config<MmaT, Cfg4<MmaT>>(a, stream, sm_count, splits);
        case 5: return run_config<MmaT, Cfg5<MmaT>>(a, stream, sm_count, splits);
        case 6: return run_config<MmaT, Cfg6<MmaT>>(a, stream, sm_count, splits);
        case 7: return run_config<MmaT, Cfg7<MmaT>>(a, stream, sm_count, splits);
        case 8: return run_config<MmaT, Cfg8<MmaT>>(a, stream, sm_count, splits);
        default: return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul (wgmma): no config %d", cfg);
    }
}
template <class MmaT>
int4mm_status run_wide_impl(int cfg, const int4mm_matmul_args &a, cudaStream_t stream, int sm_count, int splits) {
    switch (cfg) {
        case 9: return run_config<MmaT, Cfg9<MmaT>>(a, stream, sm_count, splits);
        case 10: return run_config<MmaT, Cfg10<MmaT>>(a, stream, sm_count, splits);
        case 11: return run_config<MmaT, Cfg11<MmaT>>(a, stream, sm_count, splits);
        default: return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul (wgmma): no config %d", cfg);
    }
}

}  // namespace detail
}  // namespace wgmma
}  // namespace int4mm

#endif  // INT4MM_MATMUL_WGMMA_GEMM_CUH_
