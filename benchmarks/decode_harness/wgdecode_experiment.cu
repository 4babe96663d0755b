// EXPERIMENT, not part of the library (benchmarks/NOTES.md, v10): a Hopper
// (sm_90a) small-batch kernel on the fragment-ordered prepared codes (the
// INT4MM_LAYOUT_SM90_WGMMA section, the same words the decode kernel reads):
// the decode kernel's weight stream with warpgroup MMAs (wgmma) instead of
// mma.sync, for 9 to 128 rows of x.  Correct (harness `wcheck`: 2086 cases,
// 0 failures) but slower than the decode kernel at M = 16 and than the
// CUTLASS kernel at M = 32-128 on the H200 (results/h200-wgdecode-experiment.txt),
// so it stays here, built only into benchmarks/decode_harness/harness.cu
// (which needs the CUTLASS include path for it).  Experiment switches:
//   INT4MM_WG_EXP=1  no refills: the ring is loaded once (compute only)
//   INT4MM_WG_EXP=2  no wgmma: stream and convert only
//   INT4MM_WG_EXP=3  no scale / zero_c FMAs on the A operand (wrong results)
//   INT4MM_WG_BATCH=2|4  steps per wgmma group: WRONG results (the next
//                    group's conversion overwrites A registers that the
//                    in-flight group still reads); timing only
//   INT4MM_WG_U=8    8 k16 steps per chunk
//
// Why.  At M = 16 the decode kernel issues two mma.sync m16n8k16 per 16 x 16
// weight block, which is about what the SM's mma.sync rate allows while the
// weights stream at full DRAM speed; at M = 32-128 the CUTLASS mixed-input
// kernel converts every weight once per CTA tile and does not hide it
// (benchmarks/NOTES.md, v6, v9).  wgmma has twice mma.sync's rate and runs
// asynchronously: the warps only load, convert and issue.
//
// The product is computed transposed, y^T = W^T x^T, one wgmma m64nMNk16 per
// 64 weight columns and k16 step: A (64 x 16 weights) from registers, each
// warp of the warpgroup holding one 16 x 16 block - exactly one fragment
// word per lane, converted as in the decode kernel and scaled in the element
// type, (q - 8) * s + zero_c (the CUTLASS kernel's rounding); B (16 x MN, the
// step's rows of x) from shared memory in the no-swizzle K-major layout (core
// matrices of 8 rows x 16 bytes).
//
// Work split.  A CTA is one warpgroup (128 threads) owning 4J consecutive
// 16-column blocks, MN rows of x (grid.y: more rows) and a run of whole
// chunks of U k16 steps of K (grid.z: the CTAs of a cluster split K and add
// their sums through distributed shared memory - deterministic, no
// workspace).  Chunks stream through a ring of `stages` shared-memory slots
// with cp.async: the chunk's weight words (L2 evict-first: read once), its
// rows of x (default policy: every CTA along N reads them) and, for grouped
// weights, its group's scales and zero_c.  Slot reuse: chunk c goes into the
// slot of chunk c - 2 (stages - 2 chunks in flight), whose wgmmas are
// complete because each step waits for all but the last one.
#include "matmul_kernels.cuh"
#include "matmul_wgmma.cuh"
#include "mma_ptx.cuh"

namespace int4mm {
// The experiment's config; j <= 0 (the default) picks the rough defaults of
// wgdecode_default_config (a grid that fills the SMs, not a measured fit).
struct WgDecodeConfig {
    int j = 0;       // 64-column groups per CTA (one warpgroup): 1, 2, 4 (2 with mn = 128)
    int mn = 0;      // rows of x per CTA: 16, 32, 64, 128 (more rows: grid.y)
    int ks = 0;      // CTAs of a cluster splitting K: 1, 2, 4, 8
    int stages = 0;  // shared-memory ring slots: 3 .. 8
};
// Fragment-ordered weights as for the decode kernel, M <= 128, x 16-byte
// aligned with ldx % 8 == 0, and sm_90a code in this build (the device must
// be compute capability 9.0: the caller checks).
bool wgdecode_supported(const MatmulProblem &p);
int4mm_status wgdecode_default_config(const MatmulProblem &p, int device, WgDecodeConfig *out);
// Resident CTAs per SM of config c (0: it cannot run); opts the kernel in to
// its shared memory.
int4mm_status wgdecode_blocks_per_sm(int device, int dtype, bool grouped, const WgDecodeConfig &c, int *out);
int4mm_status launch_matmul_wgdecode(const MatmulProblem &p, cudaStream_t stream, WgDecodeConfig cfg = {});
}  // namespace int4mm

#include <cute/arch/mma_sm90_gmma.hpp>

#include <algorithm>
#include <type_traits>
#include <utility>

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define INT4MM_WGDECODE_BODY 1
#endif

namespace int4mm {
namespace {

// ---- wgmma --------------------------------------------------------------------

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Orders this thread's generic-proxy writes to shared memory (cp.async, stores)
// before later async-proxy reads (wgmma operands).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Keeps the compiler from moving accesses to accumulators across the
// asynchronous wgmma window.
template <int N>
__device__ __forceinline__ void fence_regs(float (&r)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

// Shared-memory matrix descriptor, no swizzle: start address, leading byte
// offset (between the two 16-byte halves of k16, K-major) and stride byte
// offset (between groups of 8 rows), each in 16-byte units.
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
    return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t(lbo >> 4) << 16) | (uint64_t(sbo >> 4) << 32);
}

// The m64nMNk16 register-A wgmma of element type T (CuTe's PTX wrappers).
template <class T, int MN>
struct Gmma;
#define INT4MM_GMMA(TYPE, MN, OP)                                                                \
    template <>                                                                                  \
    struct Gmma<TYPE, MN> {                                                                      \
        using Op = cute::SM90::GMMA::OP<cute::SM90::GMMA::Major::K, cute::SM90::GMMA::Major::K>;             \
    };
INT4MM_GMMA(__half, 16, MMA_64x16x16_F32F16F16_RS)
INT4MM_GMMA(__half, 32, MMA_64x32x16_F32F16F16_RS)
INT4MM_GMMA(__half, 64, MMA_64x64x16_F32F16F16_RS)
INT4MM_GMMA(__half, 128, MMA_64x128x16_F32F16F16_RS)
INT4MM_GMMA(__nv_bfloat16, 16, MMA_64x16x16_F32BF16BF16_RS)
INT4MM_GMMA(__nv_bfloat16, 32, MMA_64x32x16_F32BF16BF16_RS)
INT4MM_GMMA(__nv_bfloat16, 64, MMA_64x64x16_F32BF16BF16_RS)
INT4MM_GMMA(__nv_bfloat16, 128, MMA_64x128x16_F32BF16BF16_RS)
#undef INT4MM_GMMA

template <class Op, size_t... I>
__device__ __forceinline__ void gmma_call(const uint32_t (&a)[4], uint64_t desc, float *d, bool add,
                                          std::index_sequence<I...>) {
    Op::fma(a[0], a[1], a[2], a[3], desc, d[I]...,
            add ? cute::SM90::GMMA::ScaleOut::One : cute::SM90::GMMA::ScaleOut::Zero);
}
// d (MN / 2 accumulators per thread) = A (registers) * B (descriptor) + (add ? d : 0).
template <class T, int MN>
__device__ __forceinline__ void gmma(const uint32_t (&a)[4], uint64_t desc, float (&d)[MN / 2], bool add) {
    gmma_call<typename Gmma<T, MN>::Op>(a, desc, d, add, std::make_index_sequence<MN / 2>{});
}

// The kernel arguments are the decode kernel's (DecodeArgs, frag_args in
// matmul_decode.cu) with warp_steps read as k16 steps per CTA.
template <class T>
using WgArgs = DecodeArgs<T>;

// Bytes of one ring slot: weight words, rows of x, (grouped) scales and zero_c.
constexpr int slot_bytes(int j, int mn, int u, bool grouped) {
    return u * 4 * j * 128 + 2 * u * mn * 16 + (grouped ? 4 * j * 16 * 2 * 2 : 0);
}
// The reduction tile: [MN rows][64 J columns + 4] floats (the padding keeps
// the fragment stores free of bank conflicts).
constexpr int tile_bytes(int j, int mn) { return mn * (64 * j + 4) * 4; }

#ifndef INT4MM_WG_EXP
#define INT4MM_WG_EXP 0  // 1: no refills (compute only), 2: no wgmma (stream + convert only)
#endif
#ifndef INT4MM_WG_BATCH
#define INT4MM_WG_BATCH 1
#endif
template <class T, int J, int MN, int U, bool GROUPED>
__global__ void __launch_bounds__(128) wgdecode_kernel(WgArgs<T> a) {
#if defined(INT4MM_WGDECODE_BODY)
    constexpr int kBatch = INT4MM_WG_BATCH < U ? INT4MM_WG_BATCH : U;
    constexpr int kBlocks = 4 * J;  // 16-column blocks per CTA
    constexpr int kW = U * kBlocks * 128, kX = 2 * U * MN * 16, kSlot = slot_bytes(J, MN, U, GROUPED);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, c = lane & 3;
    const int nb0 = blockIdx.x * kBlocks, m0 = blockIdx.y * MN;
    const int s_begin = blockIdx.z * a.warp_steps, s_end = min(s_begin + a.warp_steps, a.ksteps);
    const int nchunks = s_begin < s_end ? (s_end - s_begin) / U : 0;
    const int xrows = min(MN, a.M - m0);
    extern __shared__ __align__(128) unsigned char smem[];
    const uint64_t policy = evict_first_policy();
    const int64_t wstride = int64_t(a.N16) * 32;  // words per k16 step
    const int64_t N = int64_t(a.N16) * 16;
    const uint32_t *wsrc = a.w + int64_t(s_begin) * wstride + int64_t(nb0) * 32;
    const T *xsrc = a.x + int64_t(m0) * a.ldx + 16 * int64_t(s_begin);

    // Slot layout: weight words in global order (step, block, lane); x as
    // 16-byte pieces in (k8 piece, row) order, i.e. step u's B operand at
    // kW + 2 u MN 16 with its two k8 halves MN 16 bytes apart and row groups
    // 128 bytes apart; then the group's 64 J scales and 64 J zero_c.
    constexpr int kWPieces = U * kBlocks * 8, kXPieces = 2 * U * MN;  // 16-byte pieces per chunk
    constexpr int kWIters = (kWPieces + 127) / 128, kXIters = (kXPieces + 127) / 128;
    int64_t woff[kWIters];  // this thread's weight pieces: source offsets (words) in chunk 0
#pragma unroll
    for (int i = 0; i < kWIters; ++i) {
        const int piece = tid + 128 * i, step = piece / (kBlocks * 8), within = piece % (kBlocks * 8);
        woff[i] = step * wstride + 4 * within;
    }
    const T *xp[kXIters];  // this thread's pieces of x (row r, k8 piece j) in chunk 0; nullptr: none
    int xdst[kXIters];
#pragma unroll
    for (int i = 0; i < kXIters; ++i) {
        const int piece = tid + 128 * i, r = piece / (2 * U), j = piece % (2 * U);
        const bool ok = (kXPieces % 128 == 0 || piece < kXPieces) && r < xrows;
        xp[i] = ok ? xsrc + int64_t(r) * a.ldx + 8 * j : nullptr;
        xdst[i] = kW + (j * MN + r) * 16;
    }
    auto issue = [&](int chunk, unsigned char *dst) {
        const uint32_t *src = wsrc + int64_t(chunk) * U * wstride;
#pragma unroll
        for (int i = 0; i < kWIters; ++i)
            if (kWPieces % 128 == 0 || tid + 128 * i < kWPieces)
                cp_async16(reinterpret_cast<uint32_t *>(dst) + 4 * (tid + 128 * i), src + woff[i], policy);
#pragma unroll
        for (int i = 0; i < kXIters; ++i)
            if (xp[i] != nullptr)
                cp_async16_keep(reinterpret_cast<uint32_t *>(dst + xdst[i]),
                                reinterpret_cast<const uint32_t *>(xp[i] + 16 * U * chunk));
        if constexpr (GROUPED) {
            const int64_t row = int64_t((s_begin + chunk * U) / a.gsteps) * N + int64_t(nb0) * 16;
            if (tid < kBlocks * 4) {  // kBlocks * 2 pieces of scales, kBlocks * 2 of zero_c
                const T *from = (tid < kBlocks * 2 ? a.s : a.zc) + row + 8 * (tid % (kBlocks * 2));
                cp_async16(reinterpret_cast<uint32_t *>(dst + kW + kX) + 4 * tid,
                           reinterpret_cast<const uint32_t *>(from), policy);
            }
        }
    };

    // Rows of x past M: zeros in every slot (the cp.async never write them).
    if (xrows < MN) {
        for (int i = tid; i < a.stages * 2 * U * (MN - xrows); i += 128) {
            const int per_slot = 2 * U * (MN - xrows), s = i / per_slot, r = i % per_slot;
            const int j = r / (MN - xrows), row = xrows + r % (MN - xrows);
            *reinterpret_cast<uint4 *>(smem + s * kSlot + kW + (j * MN + row) * 16) = make_uint4(0, 0, 0, 0);
        }
    }

    // Scale and zero_c pairs (both halves the same value) of rows g and
    // g + 8 of this warp's block in each 64-column group j.
    using P = typename Elem<T>::Pair;
    uint32_t sv[J][2], zv[J][2];
    auto read_scales = [&](const T *s, const T *z, int64_t stride_blocks) {
#pragma unroll
        for (int j = 0; j < J; ++j)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int64_t n = (4 * j + warp) * stride_blocks + g + 8 * h;
                sv[j][h] = as_bits(Elem<T>::bcast(s[n]));
                zv[j][h] = as_bits(Elem<T>::bcast(z[n]));
            }
    };
    if constexpr (!GROUPED) read_scales(a.s + int64_t(nb0) * 16, a.zc + int64_t(nb0) * 16, 16);

    float acc[J][MN / 2];  // the first step's wgmmas start from zero (scale-d = 0)
#if INT4MM_WG_EXP == 2
    for (int j = 0; j < J; ++j) for (int i = 0; i < MN / 2; ++i) acc[j][i] = 0.0f;
#endif

    unsigned char *const ring_end = smem + a.stages * kSlot;
    for (int k = 0; k < a.stages - 2; ++k) {  // one commit group per chunk, empty ones past the end
        if (k < nchunks) issue(k, smem + k * kSlot);
        cp_async_commit();
    }
    unsigned char *wslot = smem + (a.stages - 2) * kSlot;  // the slot chunk + stages - 2 goes to
    const unsigned char *rslot = smem;                     // chunk's slot
    for (int chunk = 0; chunk < nchunks; ++chunk) {
        cp_async_wait_ring(a.stages - 1);  // at most stages - 3 pending: this thread's pieces of `chunk` landed
        fence_proxy_async();             // ... and are visible to wgmma (the async proxy)
        __syncthreads();                 // everyone's pieces landed; the slot of chunk - 2 is free
#if INT4MM_WG_EXP != 1
        if (chunk + a.stages - 2 < nchunks) issue(chunk + a.stages - 2, wslot);
#endif
        cp_async_commit();
        wslot = wslot + kSlot == ring_end ? smem : wslot + kSlot;
        if constexpr (GROUPED) {
            const T *ss = reinterpret_cast<const T *>(rslot + kW + kX);
            read_scales(ss, ss + kBlocks * 16, 16);
        }
        const uint32_t *ws = reinterpret_cast<const uint32_t *>(rslot) + warp * 32 + lane;
        const uint32_t xaddr = static_cast<uint32_t>(__cvta_generic_to_shared(rslot + kW));
        // kBatch steps per wgmma batch: convert them all, issue their wgmmas
        // as one group, then wait for the previous group (whose A registers
        // the next conversion may reuse).
#pragma unroll
        for (int u0 = 0; u0 < U; u0 += kBatch) {
            uint32_t af[kBatch][J][4];
#pragma unroll
            for (int b = 0; b < kBatch; ++b)
#pragma unroll
                for (int j = 0; j < J; ++j) {
                    dequant<T>(ws[((u0 + b) * kBlocks + 4 * j) * 32], af[b][j]);
#if INT4MM_WG_EXP != 3
                    af[b][j][0] = fma2_bits<T>(af[b][j][0], sv[j][0], zv[j][0]);  // row g
                    af[b][j][1] = fma2_bits<T>(af[b][j][1], sv[j][1], zv[j][1]);  // row g + 8
                    af[b][j][2] = fma2_bits<T>(af[b][j][2], sv[j][0], zv[j][0]);
                    af[b][j][3] = fma2_bits<T>(af[b][j][3], sv[j][1], zv[j][1]);
#endif
                }
#pragma unroll
            for (int j = 0; j < J; ++j) fence_regs(acc[j]);
            wgmma_fence();
#pragma unroll
            for (int b = 0; b < kBatch; ++b) {
                const uint64_t desc = smem_desc(xaddr + 2 * (u0 + b) * MN * 16, MN * 16, 128);
#pragma unroll
                for (int j = 0; j < J; ++j) {
#if INT4MM_WG_EXP == 2
                    acc[j][b % (MN / 2)] += __uint_as_float((af[b][j][0] ^ af[b][j][1] ^ af[b][j][2] ^ af[b][j][3]) & 0x3FFFFFu) + float(desc & 1);
#else
                    gmma<T, MN>(af[b][j], desc, acc[j], chunk > 0 || u0 + b > 0);
#endif
                }
            }
            wgmma_commit();
#pragma unroll
            for (int j = 0; j < J; ++j) fence_regs(acc[j]);
            wgmma_wait<1>();
        }
        rslot = rslot + kSlot == ring_end ? smem : rslot + kSlot;
    }
    wgmma_wait<0>();
#pragma unroll
    for (int j = 0; j < J; ++j) fence_regs(acc[j]);
    if (nchunks == 0) {  // a CTA without K steps (uneven split) adds zeros
#pragma unroll
        for (int j = 0; j < J; ++j)
#pragma unroll
            for (int i = 0; i < MN / 2; ++i) acc[j][i] = 0.0f;
    }
    cp_async_wait<0>();
    __syncthreads();  // the ring becomes the reduction tile

    // Accumulator i of group j: row 64 j + 16 warp + g (+ 8 for i % 4 >= 2)
    // of W^T, column 8 (i / 4) + 2 c (+ 1 for odd i) = row of x.
    constexpr int kCols = 64 * J, kTS = kCols + 4;
    float *tile = reinterpret_cast<float *>(smem);
#pragma unroll
    for (int j = 0; j < J; ++j)
#pragma unroll
        for (int i = 0; i < MN / 8; ++i) {
            const int n = 64 * j + 16 * warp + g, m = 8 * i + 2 * c;
            tile[m * kTS + n] = acc[j][4 * i];
            tile[(m + 1) * kTS + n] = acc[j][4 * i + 1];
            tile[m * kTS + n + 8] = acc[j][4 * i + 2];
            tile[(m + 1) * kTS + n + 8] = acc[j][4 * i + 3];
        }
    const int ks = gridDim.z;
    int share = 0;
    if (ks > 1) {
        cluster_sync();
        share = cluster_rank();
    } else {
        __syncthreads();
    }
    // CTA `share` of the cluster writes outputs share, share + ks, ...
    const int col0 = nb0 * 16;
    for (int i = tid + share * 128; i < xrows * kCols; i += ks * 128) {
        const int m = i / kCols, n = i % kCols;
        float v = 0.0f;
        if (ks > 1) {
            for (int q = 0; q < ks; ++q) v += ld_cluster(tile + m * kTS + n, q);
        } else {
            v = tile[m * kTS + n];
        }
        if (a.bias != nullptr) v += Elem<T>::to_float(a.bias[col0 + n]);
        a.y[int64_t(m0 + m) * a.ldy + col0 + n] = Elem<T>::from_float(v);
    }
    if (ks > 1) cluster_sync();  // keep this CTA's shared memory alive until the others read it
#endif
}

template <class T>
using WgKernelFn = void (*)(WgArgs<T>);

// The kernels built: J (4J blocks per CTA) x MN (rows of x per CTA) with at
// most 128 accumulators per thread, U = 4.
#ifndef INT4MM_WG_U
#define INT4MM_WG_U 4
#endif
constexpr int kWgU = INT4MM_WG_U;
template <class T, int J, int MN>
WgKernelFn<T> pick_grouped(bool grouped) {
    return grouped ? wgdecode_kernel<T, J, MN, kWgU, true> : wgdecode_kernel<T, J, MN, kWgU, false>;
}
template <class T, int MN>
WgKernelFn<T> pick_j(int j, bool grouped) {
    if constexpr (MN == 128) {
        return j == 1 ? pick_grouped<T, 1, MN>(grouped) : j == 2 ? pick_grouped<T, 2, MN>(grouped) : nullptr;
    } else {
        return j == 1 ? pick_grouped<T, 1, MN>(grouped) : j == 2 ? pick_grouped<T, 2, MN>(grouped)
               : j == 4 ? pick_grouped<T, 4, MN>(grouped) : nullptr;
    }
}
template <class T>
WgKernelFn<T> pick_wg_kernel(const WgDecodeConfig &c, bool grouped) {
    switch (c.mn) {
        case 16: return pick_j<T, 16>(c.j, grouped);
        case 32: return pick_j<T, 32>(c.j, grouped);
        case 64: return pick_j<T, 64>(c.j, grouped);
        case 128: return pick_j<T, 128>(c.j, grouped);
        default: return nullptr;
    }
}

size_t wg_smem_bytes(const WgDecodeConfig &c, bool grouped) {
    return std::max<size_t>(size_t(c.stages) * slot_bytes(c.j, c.mn, kWgU, grouped), tile_bytes(c.j, c.mn));
}

}  // namespace

// Resident CTAs per SM of config c (0: it cannot run), not cached (harness only).
int4mm_status wgdecode_blocks_per_sm(int device, int dtype, bool grouped, const WgDecodeConfig &c, int *out) {
    return with_element_type(dtype, [&](auto tag) {
        using T = decltype(tag);
        return resident_ctas(device, pick_wg_kernel<T>(c, grouped), 128, wg_smem_bytes(c, grouped), out);
    });
}

bool wgdecode_supported(const MatmulProblem &p) {
    return decode_supported(p) && p.M <= 128 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0 && p.ldx % 8 == 0 &&
           wgmma::compiled();
}

// Defaults: MN = M rounded up to 16, 32, 64 or 128; J and the K split chosen
// so that the grid keeps every SM busy with its resident CTAs.
int4mm_status wgdecode_default_config(const MatmulProblem &p, int device, WgDecodeConfig *out) {
    const int mn = p.M <= 16 ? 16 : p.M <= 32 ? 32 : p.M <= 64 ? 64 : 128;
    const bool grouped = p.group_size != p.K;
    DeviceAttrs attrs;
    int4mm_status st = device_attrs(device, &attrs);
    if (st != INT4MM_OK) return st;
    const int n16 = p.N / 16, ksteps = p.K / 16;
    WgDecodeConfig cfg;
    cfg.mn = mn;
    cfg.stages = 4;
    // Wider CTAs re-read x less (x bytes per weight byte: MN / (16 J)).
    cfg.j = mn >= 128 ? 2 : mn >= 32 ? 4 : 2;
    while (cfg.j > 1 && n16 % (4 * cfg.j) != 0) cfg.j /= 2;
    cfg.ks = 1;
    int per_sm = 0;
    if ((st = wgdecode_blocks_per_sm(device, p.dtype, grouped, cfg, &per_sm)) != INT4MM_OK) return st;
    if (per_sm == 0) per_sm = 1;
    const int64_t tiles = int64_t(n16 / (4 * cfg.j)) * ((p.M + mn - 1) / mn);
    while (cfg.ks < 8 && tiles * cfg.ks * 2 <= int64_t(per_sm) * attrs.sms && ksteps / (cfg.ks * 2) >= 8 * kWgU)
        cfg.ks *= 2;
    *out = cfg;
    return INT4MM_OK;
}

int4mm_status launch_matmul_wgdecode(const MatmulProblem &p, cudaStream_t stream, WgDecodeConfig cfg) {
    if (!wgdecode_supported(p))
        return fail(INT4MM_ERR_UNSUPPORTED, "matmul (wgdecode): needs fragment-ordered weights, N %% 16 == 0, "
                    "K %% 64 == 0, group_size == K or a multiple of 64, M <= 128, x 16-byte aligned with a row "
                    "stride that is a multiple of 8, and a build with sm_90a code");
    int4mm_status st;
    if (cfg.j <= 0 && (st = wgdecode_default_config(p, p.device, &cfg)) != INT4MM_OK) return st;
    const bool grouped = p.group_size != p.K;
    const int n16 = p.N / 16, ksteps = p.K / 16, gsteps = p.group_size / 16;
    if ((cfg.mn != 16 && cfg.mn != 32 && cfg.mn != 64 && cfg.mn != 128) || (cfg.j != 1 && cfg.j != 2 && cfg.j != 4) ||
        (cfg.mn == 128 && cfg.j == 4) || n16 % (4 * cfg.j) != 0 || gsteps % kWgU != 0 || cfg.ks < 1 || cfg.ks > 8 ||
        (cfg.ks & (cfg.ks - 1)) != 0 || cfg.stages < 3 || cfg.stages > 8)
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul (wgdecode): bad config j=%d mn=%d ks=%d stages=%d", cfg.j,
                    cfg.mn, cfg.ks, cfg.stages);
    int per_sm = 0;
    if ((st = wgdecode_blocks_per_sm(p.device, p.dtype, grouped, cfg, &per_sm)) != INT4MM_OK) return st;
    if (per_sm == 0)
        return fail(INT4MM_ERR_UNSUPPORTED, "matmul (wgdecode): config j=%d mn=%d stages=%d does not fit on the device",
                    cfg.j, cfg.mn, cfg.stages);
    const int chunks = ksteps / kWgU;
    const int cta_steps = (chunks + cfg.ks - 1) / cfg.ks * kWgU;
    return with_element_type(p.dtype, [&](auto tag) {
        using T = decltype(tag);
        const WgArgs<T> a = frag_args<T>(p, cta_steps, cfg.stages);
        const dim3 grid(static_cast<unsigned>(n16 / (4 * cfg.j)), static_cast<unsigned>((p.M + cfg.mn - 1) / cfg.mn),
                        static_cast<unsigned>(cfg.ks));
        int4mm_status launched = launch_k_split(pick_wg_kernel<T>(cfg, grouped), grid, 128, wg_smem_bytes(cfg, grouped),
                                                stream, cfg.ks, a);
        if (launched != INT4MM_OK) return launched;
        INT4MM_LAUNCH_CHECK("matmul (wgdecode) launch");
        return INT4MM_OK;
    });
}

}  // namespace int4mm
