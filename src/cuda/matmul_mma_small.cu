// SMALL_M v2: tensor-core (mma.sync.m16n8k16, f16/bf16 -> f32) kernel for small
// and mid M that reads the RAW interchange layouts directly (no prepare).
//
// K permutation.  An mma sums over k, so any permutation of k applied to both
// operands gives the same product.  A warp works on slabs of 32 k (one weight
// word row of 4 x 8 codes per column, or one 16:32 block) as two k16 mma
// steps.  In the B fragment lane t = 4g + c holds column g and logical k
// (2c, 2c+1) in b0 and (2c+8, 2c+9) in b1; we let lane c own PHYSICAL rows
// 8c .. 8c+7 of the slab (one raw dense word) and map its 4 half2 pairs to
// (step 1 b0, step 1 b1, step 2 b0, step 2 b1):
//   dense:  pairs (0,4) (1,5) (2,6) (3,7)  - what the magic-exponent trick
//           extracts from one word with one LOP3 each;
//   sparse: pairs (0,2) (1,3) (4,6) (5,7)  - what one PRMT per pair gathers
//           from the rank-ordered code bytes.
// A lane (g, c) of the A fragment therefore reads x[g][8c .. 8c+7] (16
// contiguous bytes, natural order) and reorders halves with PRMT: no ldmatrix.
//
// Columns.  A lane's 16-byte weight chunk is one word row of 4 adjacent
// columns; word jj of the chunk goes to n8 tile jj, so tile jj, mma column g
// is physical column colbase + 4g + jj.  A warp covers 32 columns x 32 k per
// slab with one 16-byte load per lane (4 rows x 128 contiguous bytes).
//
// Pipeline.  Every lane copies ITS OWN chunks (weights, x, scales/zeros) with
// cp.async into a private ring of STAGES slots in shared memory and later
// reads back exactly what it copied, so the main loop has no barrier at all:
// cp.async.wait_group is enough.  Weights carry an L2 evict_first policy
// (read once); x stays cached.
//
// Parallelism.  Block = 8 warps = nwn column-warps x wk K-warps.  The K-warps
// of a column group stream disjoint K ranges; their fp32 partials are summed
// through shared memory at the end (no workspace, no atomics).  M > 16 * MT
// rows loop over grid.y (each re-reads the weights, from L2 when they fit).
//
// Dequantization (dense, fp16): per 2 weights one LOP3 ((w & 0x000F000F) |
// 0x64006400 = half2(1024 + q) exactly), one HSUB2 / HFMA2 to get q exactly
// (odd nibbles arrive as 1024 + 16 q and take fma(p, 1/16, -64)), then one
// HFMA2:
// grouped  B = q * s - z * s   (pair; z * s rounded once, ~4e-4 relative);
// channel  B = q - z           (pair; s applied in the fp32 epilogue).
// bf16 has only 7 mantissa bits: the magic is 0x4300 (128.0) and odd nibbles
// are shifted down first (one more SHF per two pairs), then the same math in
// bf16x2.
// Sparse: the lane's 8 rows of one column take the mask byte m8, the code
// window starting at popc(mask below row 8c), SWAR ranks of m8 as PRMT
// selectors (pruned rows select a zero byte through PRMT's sign mode), and a
// keep mask built from m8 zeroes pruned halves after the HFMA2.
#include "matmul_kernels.cuh"
#include "mma_ptx.cuh"

#include <algorithm>
#include <type_traits>

namespace int4mm {
namespace {

constexpr int kMmaThreads = 256;
constexpr int kMmaWarps = kMmaThreads / 32;
constexpr int kSlotUnit = 512;  // bytes: one 16-byte chunk per lane

// ---- PTX wrappers ----------------------------------------------------------

__device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes, L2 only, evict-first; src_size 0 writes zeros and reads nothing.
__device__ __forceinline__ void cp_async16_ef(uint32_t dst, const void *src, int src_size, uint64_t policy) {
    asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" ::"r"(dst), "l"(src),
                 "r"(src_size), "l"(policy)
                 : "memory");
}
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int src_size) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_size) : "memory");
}
__device__ __forceinline__ void cp_async8(uint32_t dst, const void *src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(dst), "l"(src) : "memory");
}

__device__ __forceinline__ uint4 lds128(uint32_t addr) {
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "r"(addr));
    return v;
}
__device__ __forceinline__ uint2 lds64(uint32_t addr) {
    uint2 v;
    asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "r"(addr));
    return v;
}

// PRMT in its default mode, including the sign-replicate bit of each
// selector nibble (__byte_perm does not promise that bit).
__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
    uint32_t d;
    asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
    return d;
}

// Packed-pair arithmetic on raw words, in T (fma2_bits: mma_ptx.cuh).
template <class T>
__device__ __forceinline__ uint32_t sub2_bits(uint32_t a, uint32_t b) {
    using P = typename Elem<T>::Pair;
    return as_bits(__hsub2(bits_as<P>(a), bits_as<P>(b)));
}
template <class T>
__device__ __forceinline__ uint32_t neg2_bits(uint32_t a) {
    return a ^ 0x80008000u;  // both signs flipped: exact negation in fp16 and bf16
}
template <class T>
__device__ __forceinline__ uint32_t mul2_bits(uint32_t a, uint32_t b) {
    using P = typename Elem<T>::Pair;
    return as_bits(__hmul2(bits_as<P>(a), bits_as<P>(b)));
}

// M + q for a code q in the low mantissa bits: M = 1024 (fp16) or 128 (bf16).
template <class T>
struct Magic {
    static constexpr uint32_t kPair = 0x64006400u;  // half2(1024, 1024)
};
template <>
struct Magic<__nv_bfloat16> {
    static constexpr uint32_t kPair = 0x43004300u;  // bf16x2(128, 128)
};
constexpr uint32_t kSixteenth = 0x2C002C00u;  // half2(1/16, 1/16)
constexpr uint32_t kNeg64 = 0xD400D400u;      // half2(-64, -64)

// One raw dense word (codes of rows 8c..8c+7 of one column) -> the 4 B
// pairs (0,4) (1,5) (2,6) (3,7), each q * s2 + nzs2.
template <class T>
__device__ __forceinline__ void expand_dense(uint32_t w, uint32_t s2, uint32_t nzs2, uint32_t (&b)[4]) {
    constexpr uint32_t kMagic = Magic<T>::kPair;
    const uint32_t w8 = w >> 8;
    if constexpr (std::is_same<T, __nv_bfloat16>::value) {
        const uint32_t w4 = w >> 4, w12 = w >> 12;
        const uint32_t p0 = (w & 0x000F000Fu) | kMagic;    // 128 + q0, q4
        const uint32_t p1 = (w4 & 0x000F000Fu) | kMagic;   // 128 + q1, q5
        const uint32_t p2 = (w8 & 0x000F000Fu) | kMagic;   // 128 + q2, q6
        const uint32_t p3 = (w12 & 0x000F000Fu) | kMagic;  // 128 + q3, q7
        b[0] = fma2_bits<T>(sub2_bits<T>(p0, kMagic), s2, nzs2);
        b[1] = fma2_bits<T>(sub2_bits<T>(p1, kMagic), s2, nzs2);
        b[2] = fma2_bits<T>(sub2_bits<T>(p2, kMagic), s2, nzs2);
        b[3] = fma2_bits<T>(sub2_bits<T>(p3, kMagic), s2, nzs2);
    } else {
        const uint32_t p0 = (w & 0x000F000Fu) | kMagic;   // 1024 + q0, q4
        const uint32_t p1 = (w & 0x00F000F0u) | kMagic;   // 1024 + 16 q1, q5
        const uint32_t p2 = (w8 & 0x000F000Fu) | kMagic;  // 1024 + q2, q6
        const uint32_t p3 = (w8 & 0x00F000F0u) | kMagic;  // 1024 + 16 q3, q7
        b[0] = fma2_bits<T>(sub2_bits<T>(p0, kMagic), s2, nzs2);
        b[1] = fma2_bits<T>(fma2_bits<T>(p1, kSixteenth, kNeg64), s2, nzs2);
        b[2] = fma2_bits<T>(sub2_bits<T>(p2, kMagic), s2, nzs2);
        b[3] = fma2_bits<T>(fma2_bits<T>(p3, kSixteenth, kNeg64), s2, nzs2);
    }
}

// Rows 8c..8c+7 (c8 = 8c) of one 16:32 block of one column -> B pairs
// (0,2) (1,3) (4,6) (5,7), pruned rows exactly +0.  lowmask = (1 << 8c) - 1.
// An invalid mask (popcount != 16) gives wrong values, never a bad access.
template <class T>
__device__ __forceinline__ void expand_sparse(uint32_t m, uint32_t lo, uint32_t hi, uint32_t c8, uint32_t lowmask,
                                              uint32_t s2, uint32_t nzs2, uint32_t (&b)[4]) {
    const uint32_t m8 = (m >> c8) & 0xFFu;
    const uint32_t p0 = __popc(m & lowmask);  // codes stored before row 8c
    const uint64_t codes = (uint64_t(hi) << 32) | lo;
    const uint32_t win = uint32_t(codes >> ((4u * p0) & 63u));  // code of rank r in nibble r
    const uint32_t ev = win & 0x0F0F0F0Fu;                       // ranks 0,2,4,6 as bytes
    const uint32_t od = (win >> 4) & 0x0F0F0F0Fu;                // ranks 1,3,5,7
    const uint32_t E = prmt(ev, od, 0x5140u);                    // ranks 0..3 in byte order
    const uint32_t O = prmt(ev, od, 0x7362u);                    // ranks 4..7
    // Bit i of m8 -> bit 0 of nibble i.
    uint32_t t = m8;
    t = (t | (t << 12)) & 0x000F000Fu;
    t = (t | (t << 6)) & 0x03030303u;
    t = (t | (t << 3)) & 0x11111111u;
    const uint32_t rank = (t * 0x11111111u) << 4;           // nibble i: kept rows below i (<= 7)
    const uint32_t sel = rank | ((t ^ 0x11111111u) << 3);  // pruned: sign mode on a code byte -> 0x00
    const uint32_t k_even = t << 7;                         // byte msbs: keep of rows 0, 2, 4, 6
    const uint32_t k_odd = t << 3;                          // rows 1, 3, 5, 7
    const uint32_t P[4] = {prmt(E, O, sel), prmt(E, O, sel >> 4), prmt(E, O, sel >> 16), prmt(E, O, sel >> 20)};
    const uint32_t keep[4] = {prmt(k_even, 0u, 0x9988u), prmt(k_odd, 0u, 0x9988u), prmt(k_even, 0u, 0xBBAAu),
                              prmt(k_odd, 0u, 0xBBAAu)};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const uint32_t pj = (P[j] & 0x000F000Fu) | Magic<T>::kPair;
        b[j] = fma2_bits<T>(sub2_bits<T>(pj, Magic<T>::kPair), s2, nzs2) & keep[j];
    }
}

// A pairs of one 16-byte x chunk (x0..x7 of one row) in the kernel's k order.
template <bool SPARSE>
__device__ __forceinline__ void x_pairs(const uint4 &v, uint32_t (&a)[4]) {
    if constexpr (SPARSE) {
        a[0] = prmt(v.x, v.y, 0x5410u);  // (x0, x2)
        a[1] = prmt(v.x, v.y, 0x7632u);  // (x1, x3)
        a[2] = prmt(v.z, v.w, 0x5410u);  // (x4, x6)
        a[3] = prmt(v.z, v.w, 0x7632u);  // (x5, x7)
    } else {
        a[0] = prmt(v.x, v.z, 0x5410u);  // (x0, x4)
        a[1] = prmt(v.x, v.z, 0x7632u);  // (x1, x5)
        a[2] = prmt(v.y, v.w, 0x5410u);  // (x2, x6)
        a[3] = prmt(v.y, v.w, 0x7632u);  // (x3, x7)
    }
}

// XR: groups of 8 rows of x per block (1, 2, 4, 8 -> MT = 1, 1, 2, 4 m16 tiles).
template <int XR, int STAGES, bool SPARSE, class T>
__global__ void __launch_bounds__(kMmaThreads) mma_small_kernel(const TypedProblem<T> p, int wk) {
    constexpr int MT = (XR + 1) / 2;
    constexpr int WCH = SPARSE ? 3 : 1;          // weight chunks per lane per slab
    constexpr int SLOT = (WCH + XR + 1) * kSlotUnit;
    constexpr int X_OFF = WCH * kSlotUnit;
    constexpr int SZ_OFF = (WCH + XR) * kSlotUnit;
    extern __shared__ __align__(16) unsigned char smem[];

    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    const int g = lane >> 2;
    const int c = lane & 3;
    const int nwn = kMmaWarps / wk;
    const int wn = warp / wk;
    const int wkid = warp % wk;
    const int colbase = (blockIdx.x * nwn + wn) * 32;
    const int col = colbase + 4 * g;  // this lane's 4 columns (N % 8 == 0: all or none)
    const bool col_ok = col < p.N;
    const int m0 = blockIdx.y * (8 * XR);
    const bool per_channel = p.group_size == p.K;

    const int S = p.K / 32;  // slabs (K % 32 == 0 on this path)
    const int per = (S + wk - 1) / wk;
    const int s_begin = min(S, wkid * per);
    const int s_end = min(S, s_begin + per);
    const int gslabs = p.group_size / 32;

    const uint32_t ring = smem_u32(smem) + warp * (STAGES * SLOT) + lane * 16;
    const uint64_t policy = evict_first_policy();

    bool row_ok[XR];
#pragma unroll
    for (int xr = 0; xr < XR; ++xr) row_ok[xr] = m0 + 8 * xr + g < p.M;

    // Per-lane source pointers, advanced by one slab per issue.  Lanes whose
    // columns are past N keep a valid pointer, stride 0 and copy 0 bytes
    // (zero fill).
    const int64_t N64 = p.N;
    const int wsize = col_ok ? 16 : 0;
    // Dense with the tiled layout (prepare_small_m.cu): the lane's chunk of
    // slab s of column group cg sits at word ((cg * S + s) * 32 + lane) * 4,
    // so a warp load is 512 contiguous bytes and consecutive slabs follow.
    const bool tiled = !SPARSE && p.tiled != nullptr;
    const int64_t wstride = col_ok ? (SPARSE ? N64 : tiled ? 128 : 4 * N64) : 0;  // words per slab
    const uint32_t *wp0;  // dense: word row 4s + c; sparse: mask row s
    const uint32_t *wp1 = p.qweight;  // sparse: qweight row 2s (row 2s + 1 is + N)
    if constexpr (SPARSE) {
        wp0 = col_ok ? p.mask + int64_t(s_begin) * N64 + col : p.mask;
        wp1 = col_ok ? p.qweight + int64_t(2 * s_begin) * N64 + col : p.qweight;
    } else {
        if (tiled) {
            const uint32_t *t = static_cast<const uint32_t *>(p.tiled);
            const int64_t cg = colbase / 32;
            wp0 = col_ok ? t + ((cg * S + s_begin) * 32 + lane) * 4 : t;
        } else {
            wp0 = col_ok ? p.qweight + int64_t(4 * s_begin + c) * N64 + col : p.qweight;
        }
    }
    const T *xp[XR];
#pragma unroll
    for (int xr = 0; xr < XR; ++xr)
        xp[xr] = row_ok[xr] ? p.x + int64_t(m0 + 8 * xr + g) * p.ldx + 32 * s_begin + 8 * c : p.x;

    // Next slab that (re)loads scales/zeros: the warp's first, then each group
    // start.  sz_row: the group row of the next load.
    const int first_boundary = (s_begin / gslabs + 1) * gslabs;
    int sz_issue = s_begin, sz_use = s_begin;
    int sz_row = s_begin / gslabs;
    int s_issue = s_begin;

    auto issue_next = [&](uint32_t base) {
        if (s_issue < s_end) {
            if constexpr (SPARSE) {
                cp_async16_ef(base, wp0, wsize, policy);
                cp_async16_ef(base + kSlotUnit, wp1, wsize, policy);
                cp_async16_ef(base + 2 * kSlotUnit, wp1 + N64, wsize, policy);
                wp1 += 2 * wstride;
            } else {
                cp_async16_ef(base, wp0, wsize, policy);
            }
            wp0 += wstride;
#pragma unroll
            for (int xr = 0; xr < XR; ++xr) {
                if (row_ok[xr]) cp_async16(base + X_OFF + xr * kSlotUnit, xp[xr], 16);
                xp[xr] += 32;
            }
            if (s_issue == sz_issue) {
                sz_issue = (s_issue == s_begin) ? first_boundary : s_issue + gslabs;
                if (col_ok) {
                    const int64_t off = int64_t(sz_row) * N64 + col;
                    cp_async8(base + SZ_OFF, p.scales + off);
                    cp_async8(base + SZ_OFF + 8, p.zeros + off);
                }
                ++sz_row;
            }
        }
        ++s_issue;
        cp_async_commit();
    };

    float acc[MT][4][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mt][j][e] = 0.0f;

    uint32_t s2[4] = {0, 0, 0, 0}, nzs2[4] = {0, 0, 0, 0};
    const uint32_t c8 = 8u * c;
    const uint32_t lowmask = c == 0 ? 0u : ((1u << c8) - 1u);

    auto consume = [&](uint32_t base, int s) {
        if (s == sz_use) {
            sz_use = (s == s_begin) ? first_boundary : s + gslabs;
            const uint2 sv = lds64(base + SZ_OFF);
            const uint2 zv = lds64(base + SZ_OFF + 8);
            if (per_channel) {
                // B = q - z; the scale is applied in fp32 at the end.
                const uint32_t nz01 = neg2_bits<T>(zv.x);
                const uint32_t nz23 = neg2_bits<T>(zv.y);
                s2[0] = s2[1] = s2[2] = s2[3] = Elem<T>::kOne2;
                nzs2[0] = prmt(nz01, nz01, 0x1010u);
                nzs2[1] = prmt(nz01, nz01, 0x3232u);
                nzs2[2] = prmt(nz23, nz23, 0x1010u);
                nzs2[3] = prmt(nz23, nz23, 0x3232u);
            } else {
                const uint32_t nzs01 = mul2_bits<T>(neg2_bits<T>(zv.x), sv.x);
                const uint32_t nzs23 = mul2_bits<T>(neg2_bits<T>(zv.y), sv.y);
                s2[0] = prmt(sv.x, sv.x, 0x1010u);
                s2[1] = prmt(sv.x, sv.x, 0x3232u);
                s2[2] = prmt(sv.y, sv.y, 0x1010u);
                s2[3] = prmt(sv.y, sv.y, 0x3232u);
                nzs2[0] = prmt(nzs01, nzs01, 0x1010u);
                nzs2[1] = prmt(nzs01, nzs01, 0x3232u);
                nzs2[2] = prmt(nzs23, nzs23, 0x1010u);
                nzs2[3] = prmt(nzs23, nzs23, 0x3232u);
            }
            if (!col_ok) {
                s2[0] = s2[1] = s2[2] = s2[3] = 0u;
                nzs2[0] = nzs2[1] = nzs2[2] = nzs2[3] = 0u;
            }
        }

        // A fragments (rows >= M are zero).
        uint32_t ap[XR][4];
#pragma unroll
        for (int xr = 0; xr < XR; ++xr) {
            uint4 v = make_uint4(0, 0, 0, 0);
            if (row_ok[xr]) v = lds128(base + X_OFF + xr * kSlotUnit);
            x_pairs<SPARSE>(v, ap[xr]);
        }

        uint4 wv[WCH];
#pragma unroll
        for (int i = 0; i < WCH; ++i) wv[i] = lds128(base + i * kSlotUnit);

#pragma unroll
        for (int jj = 0; jj < 4; ++jj) {
            uint32_t b[4];
            if constexpr (SPARSE) {
                const uint32_t m = jj == 0 ? wv[0].x : jj == 1 ? wv[0].y : jj == 2 ? wv[0].z : wv[0].w;
                const uint32_t lo = jj == 0 ? wv[1].x : jj == 1 ? wv[1].y : jj == 2 ? wv[1].z : wv[1].w;
                const uint32_t hi = jj == 0 ? wv[2].x : jj == 1 ? wv[2].y : jj == 2 ? wv[2].z : wv[2].w;
                expand_sparse<T>(m, lo, hi, c8, lowmask, s2[jj], nzs2[jj], b);
            } else {
                const uint32_t w = jj == 0 ? wv[0].x : jj == 1 ? wv[0].y : jj == 2 ? wv[0].z : wv[0].w;
                expand_dense<T>(w, s2[jj], nzs2[jj], b);
            }
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                constexpr int kLast = XR - 1;
                const int r0 = 2 * mt;
                const int r1 = 2 * mt + 1 <= kLast ? 2 * mt + 1 : kLast;
                const bool has_r1 = 2 * mt + 1 < XR;
                uint32_t a1[4], a2[4];
                a1[0] = ap[r0][0];
                a1[2] = ap[r0][1];
                a2[0] = ap[r0][2];
                a2[2] = ap[r0][3];
                a1[1] = has_r1 ? ap[r1][0] : 0u;
                a1[3] = has_r1 ? ap[r1][1] : 0u;
                a2[1] = has_r1 ? ap[r1][2] : 0u;
                a2[3] = has_r1 ? ap[r1][3] : 0u;
                mma16816<T>(acc[mt][jj], a1, b[0], b[1]);
                mma16816<T>(acc[mt][jj], a2, b[2], b[3]);
            }
        }
    };

#pragma unroll
    for (int i = 0; i < STAGES - 1; ++i) issue_next(ring + i * SLOT);

    // The ring position of slab s is (s - s_begin) % STAGES: unrolling by
    // STAGES makes every slot address an immediate offset.
    for (int s = s_begin; s < s_end; s += STAGES) {
#pragma unroll
        for (int i = 0; i < STAGES; ++i) {
            if (s + i < s_end) {
                cp_async_wait<STAGES - 2>();
                // Refill the slot consumed one step ago (its values fed mma
                // instructions issued before this point).
                issue_next(ring + ((i + STAGES - 1) % STAGES) * SLOT);
                consume(ring + i * SLOT, s + i);
            }
        }
    }
    cp_async_wait<0>();
    __syncthreads();  // every warp is done with its ring: reuse it for the reduction

    // red[wkid][row][block column], rows 0 .. 16 MT - 1 of this block.
    constexpr int ROWS = 16 * MT;
    const int bcols = nwn * 32;
    float *red = reinterpret_cast<float *>(smem);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int row = 16 * mt + g + (e >= 2 ? 8 : 0);
                const int bc = wn * 32 + 4 * (2 * c + (e & 1)) + jj;
                if (row < XR * 8 && m0 + row < p.M) red[(wkid * ROWS + row) * bcols + bc] = acc[mt][jj][e];
            }
        }
    }
    __syncthreads();
    const int rows = min(8 * XR, p.M - m0);
    for (int o = threadIdx.x; o < rows * bcols; o += kMmaThreads) {
        const int row = o / bcols;
        const int bc = o % bcols;
        const int n = blockIdx.x * bcols + bc;
        if (n >= p.N) continue;
        float sum = 0.0f;
        for (int k = 0; k < wk; ++k) sum += red[(k * ROWS + row) * bcols + bc];
        if (per_channel) sum *= Elem<T>::to_float(p.scales[n]);
        if (p.bias != nullptr) sum += Elem<T>::to_float(p.bias[n]);
        p.y[int64_t(m0 + row) * p.ldy + n] = Elem<T>::from_float(sum);
    }
}

template <int XR, int STAGES, bool SPARSE, class T>
int4mm_status launch_cfg(const TypedProblem<T> &p, cudaStream_t stream, int wk) {
    constexpr int WCH = SPARSE ? 3 : 1;
    constexpr int SLOT = (WCH + XR + 1) * kSlotUnit;
    constexpr int MT = (XR + 1) / 2;
    const int nwn = kMmaWarps / wk;
    const size_t ring = size_t(kMmaWarps) * STAGES * SLOT;
    const size_t red = size_t(wk) * 16 * MT * nwn * 32 * sizeof(float);
    const size_t smem = std::max(ring, red);
    auto kernel = mma_small_kernel<XR, STAGES, SPARSE, T>;
    if (smem > 48 * 1024) {
        INT4MM_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    }
    const int64_t bcols = int64_t(nwn) * 32;
    const int64_t row_blocks = (int64_t(p.M) + 8 * XR - 1) / (8 * XR);
    if (row_blocks > 65535) return fail(INT4MM_ERR_UNSUPPORTED, "matmul: M = %d too large for the SMALL_M path", p.M);
    const dim3 grid(unsigned((p.N + bcols - 1) / bcols), unsigned(row_blocks));
    kernel<<<grid, kMmaThreads, smem, stream>>>(p, wk);
    INT4MM_LAUNCH_CHECK("mma_small_kernel launch");
    return INT4MM_OK;
}

template <bool SPARSE, class T>
int4mm_status launch_sparse_or_dense(const TypedProblem<T> &p, cudaStream_t stream, int xr, int wk) {
    // Stages: measured at M = 1 (8192^2, 16384^2): raw layout 3, 4, 6, 8
    // stages within ~10% of each other, 12 (one block per SM) 1.4x slower
    // (benchmarks/NOTES.md, v2).  Tiled layout: 3 stages 19.0 / 62.1 us,
    // 4-8 stages 22.5 / 72-81 us (v3).
    const bool tiled = !SPARSE && p.tiled != nullptr;
    switch (xr) {
        case 1:
            if (!SPARSE && tiled) return launch_cfg<1, 3, false>(p, stream, wk);
            return launch_cfg<1, 4, SPARSE>(p, stream, wk);
        case 2:
            // Tiled, M = 16, wk = 8 (v3): 3 stages 24.4 / 80.7 us (8192^2 /
            // 16384^2), 4: 24.8 / 85.9, 6: 24.5 / 85.6.
            if (!SPARSE && tiled) return launch_cfg<2, 3, false>(p, stream, wk);
            return launch_cfg<2, SPARSE ? 4 : 6, SPARSE>(p, stream, wk);
        case 4: return launch_cfg<4, 4, SPARSE>(p, stream, wk);
        default: return launch_cfg<8, 3, SPARSE>(p, stream, wk);
    }
}

}  // namespace

bool mma_small_supported(const MatmulProblem &p) {
    // K % 32 == 0 follows from G % 32 == 0 (G divides K).
    return p.group_size % 32 == 0 && p.K % 32 == 0;
}

int4mm_status launch_matmul_mma_small(const MatmulProblem &p, cudaStream_t stream, int xr, int wk) {
    if (xr <= 0) xr = p.M <= 8 ? 1 : p.M <= 16 ? 2 : p.M <= 32 ? 4 : 8;
    if (wk <= 0) {
        // K-warps per block: as many as keep >= ~2 blocks per SM busy.  Small
        // M: all 8 warps split K (32-column blocks).  Larger M: more columns
        // per block so each block re-reads x for more weights.
        const int64_t n32 = (int64_t(p.N) + 31) / 32;
        const bool tiled = p.tiled != nullptr && p.mask == nullptr;
        // Tiled, M = 64 (v3): N = 8192 wk 4/8 = 48.2/52.0 us, N = 28672
        // wk 2/4/8 = 177.6/185.5/176.3 us.
        if (xr >= 4 && tiled) wk = n32 >= 2 * 264 ? 2 : n32 >= 128 ? 4 : 8;
        else if (xr >= 4) wk = n32 >= 4 * 264 ? 2 : n32 >= 2 * 264 ? 4 : 8;
        else wk = n32 >= 8 * 264 ? 4 : 8;
    }
    return with_element_type(p.dtype, [&](auto tag) {
        using T = decltype(tag);
        if (p.mask != nullptr) return launch_sparse_or_dense<true>(typed<T>(p), stream, xr, wk);
        return launch_sparse_or_dense<false>(typed<T>(p), stream, xr, wk);
    });
}

int4mm_status launch_matmul_small_m(const MatmulProblem &p, cudaStream_t stream) {
    if (decode_supported(p)) return launch_matmul_decode(p, stream);
    if (mma_small_supported(p) && !(p.mask != nullptr && p.M <= kSparseV1MaxM))
        return launch_matmul_mma_small(p, stream, 0, 0);
    return launch_matmul_small_m_v1(p, stream);
}

}  // namespace int4mm
