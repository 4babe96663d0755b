// LARGE_M path: tensor-core GEMM (mma.sync m16n8k16, fp16 or bf16 in, fp32
// accumulate), sm_80 and newer.  Weights are dequantized to the activations'
// type in shared memory once per block tile and reused by all BM rows of x.
//
// Tiling (BM = BN = 128, BK = 32, 8 warps as 2 x 4, warp tile 64 x 32):
//
//        x tile (As, [m][k])           W^T tile (Bs, [n][k], k contiguous)
//        k ->  0 ........ 31           k ->  0 ........ 31
//   m  +--------------------+     n  +--------------------+
//   0  |  warps 0..3 (wm=0) |     0  |  wn=0 (32 cols)    |
//  64  |  warps 4..7 (wm=1) |    32  |  wn=1              |
// 127  +--------------------+    64  |  wn=2              |
//                                96  |  wn=3              |
//   warp (wm, wn) computes         127 +--------------------+
//   y[wm*64 .. +64, wn*32 .. +32] = 4 x 4 mma tiles of 16 x 8.
//
// Rows of both tiles are padded to BK + 8 halves (80 bytes): the 8 row
// addresses of every ldmatrix phase then hit 8 distinct 16-byte bank groups.
//
// Per K-step, double-buffered (2 stages): x arrives by cp.async (16 bytes,
// zero-filled outside [M, K]); the raw weight words for the next stage are
// loaded into registers before the current stage's mma work and dequantized
// into the other buffer after it, so both loads overlap the math.
//
// Weight tile fill, dense: 4 word rows x 128 columns = 512 words, 2 per
// thread; consecutive threads take consecutive columns (coalesced 128-byte
// rows); each word = 8 k values of one column = one 16-byte st.shared.
// Sparse: BK = 32 is exactly one 16:32 block per column; two threads per
// column expand 16 rows each (two 16-byte st.shared).
#include "matmul_kernels.cuh"

#include <type_traits>

namespace int4mm {
namespace {

constexpr int BM = 128;
constexpr int BN = 128;
constexpr int BK = 32;
constexpr int kPad = 8;
constexpr int kLds = BK + kPad;  // row stride of both tiles, halves
constexpr int kThreads = 256;
constexpr int kWarpTileM = 64;
constexpr int kWarpTileN = 32;
constexpr int kMmaTilesM = kWarpTileM / 16;  // 4
constexpr int kMmaTilesN = kWarpTileN / 8;   // 4
static_assert((BM / kWarpTileM) * (BN / kWarpTileN) * 32 == kThreads, "warp grid covers the tile");
static_assert(BM * BK / 8 == 2 * kThreads, "x tile: two 16-byte cp.async per thread");
static_assert(BN * BK / 8 == 2 * kThreads, "dense weight tile: two words per thread");
static_assert(BN * 2 == kThreads, "sparse weight tile: two threads per column");

template <class T>
struct TcSmem {
    T a[2][BM * kLds];
    T b[2][BN * kLds];
};  // 40 KiB: static, under the 48 KiB default limit

// ---- PTX wrappers --------------------------------------------------------

// 16-byte global->shared copy that bypasses registers and L1 (.cg: x is
// re-read by other blocks from L2); src_size 0 writes zeros and reads
// nothing, which is how rows >= M and k >= K are padded.
__device__ __forceinline__ void cp_async16_zfill(void *smem_dst, const void *gmem_src, bool valid) {
    const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
    const int src_size = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem_src), "r"(src_size)
                 : "memory");
}

// c += a (16x16, row-major fragments) * b (16x8, column-major fragments), fp32 accumulate.
template <class T>
__device__ __forceinline__ void mma_m16n8k16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    if constexpr (std::is_same<T, __nv_bfloat16>::value) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
}

// ---- weight expansion ----------------------------------------------------

// One dense weight word (8 codes of one column, k order, low nibble first)
// -> 8 dequantized values (q - z) * s of type T in k order, as one 16-byte
// value.
//
// "Magic exponent" int4 -> T: OR-ing a code into the low mantissa bits of
// M = 1024.0 (fp16, 0x6400) or 128.0 (bf16, 0x4300), whose ulp is 1, gives
// exactly M + q, and subtracting M is exact: one LOP per two codes, no I2F.
// The zero is subtracted separately (NOT folded into the offset): zeros may
// be non-integral and M + z would round.
template <class T>
__device__ __forceinline__ uint4 dequant8(uint32_t w, typename Elem<T>::Pair s2, typename Elem<T>::Pair z2) {
    using P = typename Elem<T>::Pair;
    constexpr uint32_t kLow4Each = 0x000F000Fu;
    constexpr uint32_t kMagic = std::is_same<T, __nv_bfloat16>::value ? 0x43004300u : 0x64006400u;
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
    const P magic = bits_as<P>(kMagic);
    uint32_t out[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const P q = __hsub2(bits_as<P>(pair[i]), magic);  // exact
        out[i] = as_bits(__hmul2(__hsub2(q, z2), s2));
    }
    return make_uint4(out[0], out[1], out[2], out[3]);
}

// Bits 2j and 2j+1 of `keep` -> a mask that keeps (all-ones) or zeroes the
// low / high 16-bit value of pair j.  Pruned weights become +0.0 exactly.
__device__ __forceinline__ uint32_t keep_mask_pair(uint32_t keep, int j) {
    const uint32_t lo = 0u - ((keep >> (2 * j)) & 1u);
    const uint32_t hi = 0u - ((keep >> (2 * j + 1)) & 1u);
    return (lo & 0x0000FFFFu) | (hi & 0xFFFF0000u);
}

__device__ __forceinline__ uint4 apply_keep8(uint4 v, uint32_t keep8) {
    v.x &= keep_mask_pair(keep8, 0);
    v.y &= keep_mask_pair(keep8, 1);
    v.z &= keep_mask_pair(keep8, 2);
    v.w &= keep_mask_pair(keep8, 3);
    return v;
}

// Rows [16h, 16h + 16) of one 16:32 block of one column -> 16 halves in k
// order (out[0]: rows 16h..16h+7, out[1]: the next 8) of type T.  Row i's code is nibble
// p = popcount(mask & ((1 << i) - 1)) of lo | hi << 32.  The codes are first
// gathered into two dense words so the dense dequantizer does the math, then
// pruned rows are zeroed.  The shift is taken mod 64, so an invalid mask
// (popcount != 16) yields garbage values but never undefined behaviour.
template <class T>
__device__ __forceinline__ void expand_sparse16(uint32_t mask, uint32_t lo, uint32_t hi, int h,
                                                typename Elem<T>::Pair s2, typename Elem<T>::Pair z2,
                                                uint4 (&out)[2]) {
    const uint64_t codes = (uint64_t(hi) << 32) | lo;
    const uint32_t keep16 = h ? (mask >> 16) : (mask & 0xFFFFu);
    const uint32_t p0 = h ? __popc(mask & 0xFFFFu) : 0u;
    uint32_t dense[2] = {0u, 0u};
#pragma unroll
    for (int i = 0; i < 16; ++i) {
        const uint32_t p = p0 + __popc(keep16 & ((1u << i) - 1u));
        const uint32_t q = uint32_t(codes >> ((4u * p) & 63u)) & 0xFu;
        dense[i / 8] |= q << (4 * (i % 8));
    }
    out[0] = apply_keep8(dequant8<T>(dense[0], s2, z2), keep16 & 0xFFu);
    out[1] = apply_keep8(dequant8<T>(dense[1], s2, z2), keep16 >> 8);
}

// Raw weight data of one stage held in registers between load and store.
// Out-of-range entries have word/mask 0 and s = z = 0, so they expand to
// exact zeros with no extra branch.
template <class T>
struct DenseRaw {
    uint32_t word[2];
    typename Elem<T>::Pair s[2], z[2];
};
template <class T>
struct SparseRaw {
    uint32_t mask, lo, hi;
    typename Elem<T>::Pair s, z;
};

template <class T>
__device__ __forceinline__ typename Elem<T>::Pair load_bcast(const T *base, int64_t idx) {
    return Elem<T>::bcast(__ldg(base + idx));
}

// Dense: thread's word t is (word row kt*4 + tid/128 + 2t, column n0 + tid%128).
template <class T>
__device__ __forceinline__ DenseRaw<T> load_dense_raw(const TypedProblem<T> &p, int kt, int n0) {
    DenseRaw<T> raw;
    const int num_words = p.K / 8;
#pragma unroll
    for (int t = 0; t < 2; ++t) {
        const int idx = threadIdx.x + t * kThreads;
        const int n = n0 + idx % BN;
        const int word = kt * (BK / 8) + idx / BN;
        raw.word[t] = 0u;
        raw.s[t] = raw.z[t] = Elem<T>::zero_pair();
        if (n < p.N && word < num_words) {
            raw.word[t] = __ldg(p.qweight + int64_t(word) * p.N + n);
            const int64_t gi = int64_t(group_of(word * 8, p.group_size, p.group_shift)) * p.N + n;
            raw.s[t] = load_bcast(p.scales, gi);
            raw.z[t] = load_bcast(p.zeros, gi);
        }
    }
    return raw;
}

template <class T>
__device__ __forceinline__ void store_dense_tile(T *bs, const DenseRaw<T> &raw) {
#pragma unroll
    for (int t = 0; t < 2; ++t) {
        const int idx = threadIdx.x + t * kThreads;
        const int n = idx % BN;
        const int kw = idx / BN;  // word row within the tile: k = 8*kw .. 8*kw+7
        *reinterpret_cast<uint4 *>(bs + n * kLds + kw * 8) = dequant8<T>(raw.word[t], raw.s[t], raw.z[t]);
    }
}

// Sparse: thread handles column n0 + tid%128, rows 16*(tid/128) .. +15 of block kt.
template <class T>
__device__ __forceinline__ SparseRaw<T> load_sparse_raw(const TypedProblem<T> &p, int kt, int n0) {
    SparseRaw<T> raw;
    raw.mask = raw.lo = raw.hi = 0u;
    raw.s = raw.z = Elem<T>::zero_pair();
    const int n = n0 + threadIdx.x % BN;
    if (n < p.N && kt < p.K / 32) {
        raw.mask = __ldg(p.mask + int64_t(kt) * p.N + n);
        raw.lo = __ldg(p.qweight + int64_t(2 * kt) * p.N + n);
        raw.hi = __ldg(p.qweight + int64_t(2 * kt + 1) * p.N + n);
        const int64_t gi = int64_t(group_of(kt * 32, p.group_size, p.group_shift)) * p.N + n;
        raw.s = load_bcast(p.scales, gi);
        raw.z = load_bcast(p.zeros, gi);
    }
    return raw;
}

template <class T>
__device__ __forceinline__ void store_sparse_tile(T *bs, const SparseRaw<T> &raw) {
    const int n = threadIdx.x % BN;
    const int h = threadIdx.x / BN;
    uint4 out[2];
    expand_sparse16<T>(raw.mask, raw.lo, raw.hi, h, raw.s, raw.z, out);
    uint4 *dst = reinterpret_cast<uint4 *>(bs + n * kLds + 16 * h);
    dst[0] = out[0];
    dst[1] = out[1];
}

// ---- x tile --------------------------------------------------------------

// Thread's chunk t: row idx/4, k 8*(idx%4) .. +7 of the tile, idx = tid + 256t.
template <class T>
__device__ __forceinline__ void load_x_tile_async(T *as, const TypedProblem<T> &p, int m0, int kt) {
#pragma unroll
    for (int t = 0; t < 2; ++t) {
        const int idx = threadIdx.x + t * kThreads;
        const int row = idx / (BK / 8);
        const int kc = (idx % (BK / 8)) * 8;
        const int m = m0 + row;
        const int k = kt * BK + kc;
        const bool valid = m < p.M && k < p.K;  // K % 8 == 0: whole chunk in or out
        const T *src = valid ? p.x + int64_t(m) * p.ldx + k : p.x;
        cp_async16_zfill(as + row * kLds + kc, src, valid);
    }
}

// ---- math ----------------------------------------------------------------

// One BK-deep step of the warp tile from one stage of shared memory.
template <class T>
__device__ __forceinline__ void mma_stage(float (&acc)[kMmaTilesM][kMmaTilesN][4], const T *as,
                                          const T *bs, int wm, int wn, int lane) {
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
        // B from [n][k]: matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15,
        // k 0-7), (n 8-15, k 8-15) = (b0, b1) of two adjacent n8 tiles.
        uint32_t b[kMmaTilesN][2];
#pragma unroll
        for (int np = 0; np < kMmaTilesN / 2; ++np) {
            const int n = wn * kWarpTileN + np * 16 + ((lane >> 4) << 3) + (lane & 7);
            uint32_t r[4];
            ldmatrix_x4(r, bs + n * kLds + kk * 16 + ((lane >> 3) & 1) * 8);
            b[2 * np][0] = r[0];
            b[2 * np][1] = r[1];
            b[2 * np + 1][0] = r[2];
            b[2 * np + 1][1] = r[3];
        }
        // A 16x16, one m16 tile at a time (keeps 4 fragment registers live,
        // not 16): matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7,
        // k 8-15), (rows 8-15, k 8-15) = mma registers a0..a3.
#pragma unroll
        for (int mt = 0; mt < kMmaTilesM; ++mt) {
            uint32_t a[4];
            const int row = wm * kWarpTileM + mt * 16 + (lane & 15);
            ldmatrix_x4(a, as + row * kLds + kk * 16 + (lane >> 4) * 8);
#pragma unroll
            for (int nt = 0; nt < kMmaTilesN; ++nt) mma_m16n8k16<T>(acc[mt][nt], a, b[nt]);
        }
    }
}

// Accumulator (mt, nt): c0, c1 at (row lane/4, cols 2*(lane%4) + 0/1), c2, c3
// eight rows below.  Columns are even and N % 8 == 0, so a pair store is
// either wholly inside N or wholly outside.
template <class T>
__device__ __forceinline__ void store_output(const float (&acc)[kMmaTilesM][kMmaTilesN][4], const TypedProblem<T> &p,
                                             int m0, int n0, int wm, int wn, int lane) {
#pragma unroll
    for (int nt = 0; nt < kMmaTilesN; ++nt) {
        const int n = n0 + wn * kWarpTileN + nt * 8 + 2 * (lane & 3);
        if (n >= p.N) continue;
        float b0 = 0.0f, b1 = 0.0f;
        if (p.bias != nullptr) {
            const float2 bb = Elem<T>::pair_to_float2(*reinterpret_cast<const typename Elem<T>::Pair *>(p.bias + n));
            b0 = bb.x;
            b1 = bb.y;
        }
#pragma unroll
        for (int mt = 0; mt < kMmaTilesM; ++mt) {
            const int m = m0 + wm * kWarpTileM + mt * 16 + (lane >> 2);
            if (m < p.M) {
                *reinterpret_cast<typename Elem<T>::Pair *>(p.y + int64_t(m) * p.ldy + n) =
                    Elem<T>::pair_from_floats(acc[mt][nt][0] + b0, acc[mt][nt][1] + b1);
            }
            if (m + 8 < p.M) {
                *reinterpret_cast<typename Elem<T>::Pair *>(p.y + int64_t(m + 8) * p.ldy + n) =
                    Elem<T>::pair_from_floats(acc[mt][nt][2] + b0, acc[mt][nt][3] + b1);
            }
        }
    }
}

// 128 registers x 256 threads: two blocks per SM.  (The explicit
// __launch_bounds__(256, 2) form made ptxas spill 4 bytes on sm_90a.)
template <bool SPARSE, class T>
__global__ void __launch_bounds__(kThreads) tc_matmul_kernel(const TypedProblem<T> p) {
    __shared__ __align__(128) TcSmem<T> smem;
    using Raw = typename std::conditional<SPARSE, SparseRaw<T>, DenseRaw<T>>::type;
    const int m0 = blockIdx.x * BM;
    const int n0 = blockIdx.y * BN;
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int wm = warp / (BN / kWarpTileN);
    const int wn = warp % (BN / kWarpTileN);
    const int num_k_steps = (p.K + BK - 1) / BK;

    auto load_raw = [&](int kt) -> Raw {
        if constexpr (SPARSE) return load_sparse_raw(p, kt, n0);
        else return load_dense_raw(p, kt, n0);
    };
    auto store_tile = [&](int stage, const Raw &raw) {
        if constexpr (SPARSE) store_sparse_tile(smem.b[stage], raw);
        else store_dense_tile(smem.b[stage], raw);
    };

    float acc[kMmaTilesM][kMmaTilesN][4];
#pragma unroll
    for (int mt = 0; mt < kMmaTilesM; ++mt)
#pragma unroll
        for (int nt = 0; nt < kMmaTilesN; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;

    // Prologue: stage 0.
    load_x_tile_async(smem.a[0], p, m0, 0);
    cp_async_commit();
    store_tile(0, load_raw(0));
    cp_async_wait<0>();
    __syncthreads();

    for (int kt = 0; kt < num_k_steps; ++kt) {
        const int cur = kt & 1;
        const int nxt = cur ^ 1;
        const bool has_next = kt + 1 < num_k_steps;
        // Buffer `nxt` was last read in step kt-1, which every warp finished
        // before the barrier that ended it: safe to refill now.
        Raw raw{};
        if (has_next) {
            load_x_tile_async(smem.a[nxt], p, m0, kt + 1);
            cp_async_commit();
            raw = load_raw(kt + 1);  // in flight during the mma work below
        }
        mma_stage(acc, smem.a[cur], smem.b[cur], wm, wn, lane);
        if (has_next) store_tile(nxt, raw);
        cp_async_wait<0>();
        __syncthreads();
    }

    store_output(acc, p, m0, n0, wm, wn, lane);
}

}  // namespace

int4mm_status launch_matmul_tc(const MatmulProblem &p, cudaStream_t stream) {
    // grid.x: M tiles (up to 2^31 - 1), grid.y: N tiles (<= 65535, checked by
    // the dispatcher).  Neighbouring blocks share one weight tile, so its
    // HBM read is reused from L2 by every M tile that runs at the same time.
    const dim3 grid(unsigned((p.M + BM - 1) / BM), unsigned((p.N + BN - 1) / BN));
    return with_element_type(p.dtype, [&](auto tag) {
        using T = decltype(tag);
        if (p.mask != nullptr) {
            tc_matmul_kernel<true, T><<<grid, kThreads, 0, stream>>>(typed<T>(p));
            INT4MM_LAUNCH_CHECK("tc_matmul_kernel<sparse> launch");
        } else {
            tc_matmul_kernel<false, T><<<grid, kThreads, 0, stream>>>(typed<T>(p));
            INT4MM_LAUNCH_CHECK("tc_matmul_kernel<dense> launch");
        }
        return INT4MM_OK;
    });
}

}  // namespace int4mm
