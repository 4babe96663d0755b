// Decode / small-M kernel on the fragment-ordered prepared weights (the
// INT4MM_LAYOUT_SM90_WGMMA section: int4 W^T in 16 (n) x 16 (k) blocks whose
// 32-bit word t is exactly lane t's register A fragment of one
// mma.m16n8k16, values in the order [0,2,4,6,1,3,5,7], codes stored as
// q ^ 8; scales [K/G, N] and zero_c = -(z - 8) * s next to them; grouped
// weights also get this kernel's scale records, below).
//
// Scale records (grouped weights; written by prepare_decode_records into the
// same section).  For group j and 16-column block b, 64 bytes: for g = 0..7,
// the 16-bit values s[j, 16 b + g], s[j, 16 b + g + 8], zero_c[j, 16 b + g],
// zero_c[j, 16 b + g + 8] (the element type's bits), so lane (g, c) gets what
// its two accumulator rows need with one 8-byte load per block (four lanes
// read each 8 bytes); records of group j lie in block order, groups one after
// another.  Read from [K/G, N] instead (four 2-byte loads per block and group)
// the register ring spent ~20% of its warp samples on those loads: grouped
// 8192^2 at M = 1 took 12.7 us against 9.6 per-channel (benchmarks/NOTES.md,
// v21, v22).
//
// The product is computed transposed, y^T = W^T x^T, one mma.m16n8k16 per
// 16 x 16 weight block with the weights as the A operand (16 weight columns)
// and up to 8 rows of x as the B operand, so a warp loads ONE coalesced
// 32-bit word per lane per block (128 contiguous bytes) and feeds it to the
// tensor core after 4 LOP3 and 4 packed subtractions - no shared memory, no
// shuffles, no permutation of x.
//
// Exact integer weights.  The A operand is q - 8 (exact in fp16 and bf16);
// the scale and zero point are applied per group in fp32:
//   y[m, n] = sum_g  s[g, n] * sum_{k in g} (q - 8) x[m, k]
//                  + zero_c[g, n] * sum_{k in g} x[m, k]
// The per-group sum of x comes from one more mma per k16 step with an
// all-ones A operand (its D holds the sum of x for every row of D), so the
// zero-point term costs one mma per step, not one per weight block.
// Grouped weights (and per-channel ones in the 16-row ring kernels with
// chunks of 8 steps) skip the subtraction below: their A operand is
// 1.125 + (q - 8) / 64 (bf16: 1.0625 + (q - 8) / 128), one LOP3 per register
// (dequant_offset), and the per-group fold (per-channel: the end of each
// chunk) takes the offset back out with the same sum of x; each such sum
// runs 8 k16 steps or fewer (longer groups are folded chunk by chunk), which
// keeps the results as close to the float64 reference as the exact codes'
// (benchmarks/NOTES.md, v19).
//
// Dequantization of one word w (fp16): LOP3 (w & 0x000F000F) ^ 0x64086408 =
// half2(1024 + q) for nibbles 0 and 4 (the XOR undoes the stored q ^ 8),
// minus 1032 gives q - 8; nibbles 1 and 5 arrive as 1024 + 16 q and take
// fma(h, 1/16, -72); w >> 8 gives nibbles 2, 6 and 3, 7 the same way.
// bf16 (7 mantissa bits, magic 0x4300 = 128): each nibble pair is shifted to
// bits 0-3 / 16-19 first, then (w' & 0x000F000F) ^ 0x43084308 = 128 + q,
// minus 136.
//
// Work split.  A CTA owns NB consecutive 16-column weight blocks and up to
// 8 * MT rows of x; its wk warps split K into equal runs of whole chunks
// (U k16 steps); each warp keeps its partial sums in registers and the wk
// partials are added through shared memory at the end (no workspace, no
// atomics: deterministic).  Two ways to stream the weight words:
//  - register ring (stages = 0): DEPTH chunks ahead into registers
//    (ld.global.nc, L1 no-allocate, L2 evict-first: read once);
//  - shared-memory ring (ASYNC, stages >= 2, one or two groups of 8 rows):
//    cp.async (L1 bypassed, L2 evict-first) into a per-warp ring of `stages`
//    chunks; grouped weights get their group's scale records in the same
//    slot.  Registers freed this way allow 8 and 16 blocks per CTA (1-2 KB
//    contiguous per warp per k16 step), which made it faster on large
//    weights in v8 (benchmarks/NOTES.md); deeper rings were slower; 5, 7, 10
//    and 14 blocks (v20) fill one wave of 128 or 256 CTAs where N / 16 has a
//    factor 5 or 7.  Since v16 (less bookkeeping per chunk) the register ring
//    is ahead again for per-channel weights at M <= 8 (except 14-block rings
//    at M <= 4, v20); grouped weights and M = 9-16 keep the shared-memory
//    ring, except where the register ring's grid is one balanced wave:
//    grouped M = 9-16 (v20) and, since the scale records, grouped M <= 8
//    (v22; the defaults: decode_default_config).
//    With two groups of rows (M = 9-16) the chunk's rows of x go into the
//    slot as well, as contiguous runs, and come back with ldmatrix: every
//    CTA re-reads x, and the register ring's 4-byte loads of 16 rows at a
//    stride of K elements cost as much L2 traffic as the weights
//    (benchmarks/NOTES.md, v9).
#include "matmul_kernels.cuh"
#include "mma_ptx.cuh"

#include <algorithm>
#include <cmath>
#include <atomic>
#include <type_traits>

namespace int4mm {
namespace {

// ---- PTX wrappers -----------------------------------------------------------

__device__ __forceinline__ uint32_t ld_stream(const uint32_t *p, uint64_t policy) {
    uint32_t v;
    asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.b32 %0, [%1], %2;\n"
                 : "=r"(v)
                 : "l"(p), "l"(policy));
    return v;
}

__device__ __forceinline__ uint32_t ld_cached(const uint32_t *p) {
    uint32_t v;
    asm volatile("ld.global.nc.b32 %0, [%1];\n" : "=r"(v) : "l"(p));
    return v;
}

__device__ __forceinline__ void ld_cached_v2(const uint32_t *p, uint32_t (&v)[2]) {
    asm volatile("ld.global.nc.v2.b32 {%0, %1}, [%2];\n" : "=r"(v[0]), "=r"(v[1]) : "l"(p));
}

__device__ __forceinline__ uint16_t ld_cached16(const uint16_t *p) {
    uint16_t v;
    asm volatile("ld.global.nc.b16 %0, [%1];\n" : "=h"(v) : "l"(p));
    return v;
}

// Waits until at most stages - 2 groups are pending (stages: 2 .. 8).  The
// 2-slot ring (every default) is tested first: a switch on a runtime value
// compiles to a jump table, per chunk (benchmarks/NOTES.md, v16).
__device__ __forceinline__ void cp_async_wait_ring(int stages) {
    if (stages == 2) {
        cp_async_wait<0>();
        return;
    }
    switch (stages) {
        case 2: cp_async_wait<0>(); break;
        case 3: cp_async_wait<1>(); break;
        case 4: cp_async_wait<2>(); break;
        case 5: cp_async_wait<3>(); break;
        case 6: cp_async_wait<4>(); break;
        case 7: cp_async_wait<5>(); break;
        default: cp_async_wait<6>(); break;
    }
}

// The low / high 16-bit value of type T (raw bits) in v -> fp32.
template <class T>
__device__ __forceinline__ float lo_to_float(uint32_t v) {
    if constexpr (std::is_same<T, __nv_bfloat16>::value) return __uint_as_float(v << 16);
    else return __half2float(__ushort_as_half(uint16_t(v)));
}
template <class T>
__device__ __forceinline__ float hi_to_float(uint32_t v) {
    if constexpr (std::is_same<T, __nv_bfloat16>::value) return __uint_as_float(v & 0xFFFF0000u);
    else return __half2float(__ushort_as_half(uint16_t(v >> 16)));
}

template <class T>
struct DecodeArgs {
    const T *x;
    const uint32_t *w;   // fragment-ordered codes
    const T *s;          // [K/G, N]
    const T *zc;         // [K/G, N]
    const uint32_t *rec;  // grouped weights: the scale records (above)
    const T *bias;       // [N] or nullptr
    T *y;
    int64_t ldx, ldy;
    int M, N16, ksteps, gsteps, warp_steps;  // steps are k16 steps; warp_steps % U == 0
    int stages;  // ASYNC kernels: chunks in each warp's shared-memory ring (2 .. 8)
    // Launched with programmatic dependent launch (sm_90+): the kernel may
    // start while the previous kernel of the stream still runs, so it reads
    // x and writes y only after griddepcontrol.wait; before that it only
    // prefetches its first `prefetch` chunks of weights into L2.
    int pdl, prefetch;
};

// Registers of one chunk: U k16 steps of NB weight words (ASYNC kernels keep
// them in shared memory instead) and the x fragments.
template <int NB, int MT, int U, bool GROUPED, bool ASYNC>
struct Chunk {
    uint32_t w[ASYNC ? 1 : U][ASYNC ? 1 : NB];
    uint32_t x[ASYNC && MT == 2 ? 1 : U][MT][2];
    // Grouped weights: block b's scales of rows g and g + 8 (sz[b][0], low
    // half row g) and zero_c (sz[b][1]), loaded with the chunks that end a
    // group (ASYNC kernels: into the chunk's slot instead).
    uint32_t sz[GROUPED && !ASYNC ? NB : 1][2];
};

// ASYNC: the weight words go global -> shared memory with cp.async, each
// warp keeping a ring of a.stages chunks (stages - 1 in flight while one is
// computed), so the bytes in flight are bounded by shared memory, not by
// registers; a group's scales and zero_c travel with the chunk that ends
// it.  With 16 rows (MT = 2, XS) the chunk's rows of x travel in the same
// slot too (one contiguous 32 U-byte run per row, read back with ldmatrix)
// and per-channel scales go once into a per-warp area after the rings.
// With 8 rows x stays in the register ring (staging it was 1-7% slower at
// M = 1: benchmarks/NOTES.md, v9).
// The 1 in the launch bounds keeps ptxas from trading registers for spills
// to reach a round occupancy (64 / 80 / 128 registers with 8-40 bytes of
// spills in the main loop of some kernels, up to 25% slower: NOTES v15);
// the defaults are chosen from each kernel's measured occupancy anyway.
template <class T, int NB, int MT, int U, int DEPTH, bool GROUPED, bool ASYNC>
__global__ void __launch_bounds__(256, 1) decode_kernel(DecodeArgs<T> a) {
    using ChunkT = Chunk<NB, MT, U, GROUPED, ASYNC>;
    constexpr bool XS = ASYNC && MT == 2;  // x (and per-channel scales) through shared memory
    // Codes with an offset (dequant_offset): grouped weights, and per-channel
    // weights in the 16-row shared-memory-ring kernels with chunks of 8 k16
    // steps, which take the offset out of acc chunk by chunk (2.7-3.7% faster
    // there; with chunks of 4 steps or through the register ring it cost as
    // much as it saved: benchmarks/NOTES.md, v19).
    constexpr bool OFFSET = GROUPED || (XS && U == 8);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wk = blockDim.x >> 5;
    const int g = lane >> 2, c = lane & 3;
    const int nb0 = blockIdx.x * NB;
    const int m0 = blockIdx.y * 8 * MT;
    // K is split over the wk warps of the CTA and the gridDim.z CTAs of a cluster.
    const int s_begin = (blockIdx.z * wk + warp) * a.warp_steps;
    const int s_end = min(s_begin + a.warp_steps, a.ksteps);
    const int nchunks = s_begin < s_end ? (s_end - s_begin) / U : 0;

    const uint64_t policy = evict_first_policy();
    const int64_t wstride = int64_t(a.N16) * 32;  // words per k16 step
    const uint32_t *wp = a.w + int64_t(s_begin) * wstride + int64_t(nb0) * 32 + lane;

    // x rows this lane feeds as B columns: m = m0 + 8 mt + g.  A row past M
    // feeds row m0 instead (no zero fill, no predicated loads): the mma keeps
    // B columns apart, and only valid rows' columns reach y.
    const uint32_t *xp[MT];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        const int m = m0 + 8 * mt + g;
        xp[mt] = reinterpret_cast<const uint32_t *>(a.x + int64_t(m < a.M ? m : m0) * a.ldx + 16 * s_begin + 2 * c);
    }
    const uint16_t *sp = reinterpret_cast<const uint16_t *>(a.s) + int64_t(nb0) * 16 + g;
    const uint16_t *zp = reinterpret_cast<const uint16_t *>(a.zc) + int64_t(nb0) * 16 + g;

    // Per-channel weights: scales / zero_c of rows g and g + 8 of each block
    // (the layout of Chunk::sz), from the [1, N] rows.
    auto load_scales = [&](uint32_t (&sz)[NB][2]) {
#pragma unroll
        for (int b = 0; b < NB; ++b) {
            sz[b][0] = ld_cached16(sp + 16 * b) | uint32_t(ld_cached16(sp + 16 * b + 8)) << 16;
            sz[b][1] = ld_cached16(zp + 16 * b) | uint32_t(ld_cached16(zp + 16 * b + 8)) << 16;
        }
    };
    // The same from shared memory laid out as [NB * 16 scales][NB * 16 zero_c]
    // (the per-warp area of the 16-row ring kernels).
    auto read_scales = [&](const uint32_t *area, uint32_t (&sz)[NB][2]) {
        const uint16_t *ss = reinterpret_cast<const uint16_t *>(area) + g;
#pragma unroll
        for (int b = 0; b < NB; ++b) {
            sz[b][0] = ss[16 * b] | uint32_t(ss[16 * b + 8]) << 16;
            sz[b][1] = ss[NB * 16 + 16 * b] | uint32_t(ss[NB * 16 + 16 * b + 8]) << 16;
        }
    };
    // Grouped weights: this CTA's records of group `grp` (NB * 16 words), and
    // each lane's 8 bytes per block from a copy of them in shared memory.
    auto group_records = [&](int grp) { return a.rec + (int64_t(grp) * a.N16 + nb0) * 16; };
    auto load_records = [&](uint32_t (&sz)[NB][2], int grp) {
        const uint32_t *r = group_records(grp) + 2 * g;
#pragma unroll
        for (int b = 0; b < NB; ++b) ld_cached_v2(r + 16 * b, sz[b]);
    };
    auto read_records = [&](const uint32_t *area, uint32_t (&sz)[NB][2]) {
#pragma unroll
        for (int b = 0; b < NB; ++b) {
            const uint2 v = *reinterpret_cast<const uint2 *>(area + 16 * b + 2 * g);
            sz[b][0] = v.x, sz[b][1] = v.y;
        }
    };
    // Grouped weights: which chunks end a group (and which group), walked
    // chunk by chunk in order by the loads and by the math separately
    // (counters, not a division per chunk).
    struct GroupWalk {
        int left, grp;  // chunks to the end of the current group, including the next one; its group
    };
    const int chunks_per_group = a.gsteps / U;
    GroupWalk load_walk{(a.gsteps - s_begin % a.gsteps) / U, s_begin / a.gsteps};
    GroupWalk math_walk = load_walk;
    // The next chunk (`chunk`) of walk w: whether it ends a group (or this
    // warp's run) and, if so, that group in *grp.
    // Groups longer than 8 k16 steps are folded chunk by chunk (their
    // scales with every chunk), so that no offset sum (dequant_offset)
    // runs longer than 8 steps.
    const bool fold_each = a.gsteps > 8;
    auto next_ends_group = [&](GroupWalk &w, int chunk, int *grp) {
        const bool ends = --w.left == 0 || chunk + 1 == nchunks || fold_each;
        *grp = w.grp;
        if (w.left == 0) {
            w.left = chunks_per_group;
            ++w.grp;
        }
        return ends;
    };

    // ASYNC: this warp's ring in shared memory, chunk c in slot c % stages
    // (the callers count slots: no division per chunk):
    // the weight words in global order (step, block, lane), then (grouped
    // weights, chunks that end a group) the group's records of the CTA's
    // blocks (NB * 16 words), then (XS) the chunk's 16 rows of x, kXRow words apart (16 U
    // values and 4 words of padding: the 8 rows of an ldmatrix hit distinct
    // banks).  Rows past M are zeros, written once.
    constexpr int kChunkWords = U * NB * 32, kScaleWords = GROUPED ? NB * 16 : 0;
    constexpr int kXRow = 8 * U + 4, kSlotWords = kChunkWords + kScaleWords + (XS ? 8 * MT * kXRow : 0);
    extern __shared__ float red[];
    uint32_t *wring = reinterpret_cast<uint32_t *>(red) + int64_t(warp) * a.stages * kSlotWords;
    const int xrows = min(8 * MT, a.M - m0);  // rows of x this CTA reads
    // XS: this lane's ldmatrix row address in a slot's x: row (l % 8) + 8 (l / 16), values 8 ((l / 8) % 2) ..
    const int xlane = ((lane & 7) + 8 * (lane >> 4)) * kXRow + 4 * ((lane >> 3) & 1);
    const uint32_t *xsrc = reinterpret_cast<const uint32_t *>(a.x + int64_t(m0) * a.ldx + 16 * s_begin);
    auto issue = [&](int chunk, int slot) {  // `chunk` -> `slot`
        const uint32_t *src = wp - lane + int64_t(chunk) * U * wstride;
        uint32_t *dst = wring + slot * kSlotWords;
#pragma unroll
        for (int i = 0; i < U * NB / 4; ++i) {
            const int piece = lane + 32 * i;  // 16-byte piece of the chunk
            const int step = piece / (NB * 8), within = piece % (NB * 8);
            cp_async16(dst + 4 * piece, src + step * wstride + 4 * within, policy);
        }
        // XS: row r of x is 2 U pieces of 16 bytes (read by every CTA along
        // N: default L2 policy).
        if constexpr (XS) {
#pragma unroll
            for (int i = 0; i < MT * U / 2; ++i) {
                const int piece = lane + 32 * i, r = piece / (2 * U), j = piece % (2 * U);
                if (r < xrows)
                    cp_async16_keep(dst + kChunkWords + kScaleWords + r * kXRow + 4 * j,
                                    xsrc + (int64_t(r) * a.ldx) / 2 + 8 * chunk * U + 4 * j);
            }
        }
        if constexpr (GROUPED) {
            int grp;
            if (next_ends_group(load_walk, chunk, &grp)) {
                const uint32_t *from = group_records(grp);
#pragma unroll
                for (int i = 0; i < (NB * 4 + 31) / 32; ++i) {
                    const int piece = lane + 32 * i;  // 16-byte piece of the records
                    if (piece < NB * 4) cp_async16(dst + kChunkWords + 4 * piece, from + 4 * piece, policy);
                }
            }
        }
    };

    auto load = [&](ChunkT &ch, int chunk) {
        if constexpr (!ASYNC) {
            const uint32_t *p = wp + int64_t(chunk) * U * wstride;
#pragma unroll
            for (int u = 0; u < U; ++u)
#pragma unroll
                for (int b = 0; b < NB; ++b) ch.w[u][b] = ld_stream(p + u * wstride + 32 * b, policy);
        }
        if constexpr (!XS) {
#pragma unroll
            for (int u = 0; u < U; ++u)
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    const int off = 8 * (chunk * U + u);  // in 32-bit pairs
                    ch.x[u][mt][0] = ld_cached(xp[mt] + off);
                    ch.x[u][mt][1] = ld_cached(xp[mt] + off + 4);
                }
        }
        if constexpr (GROUPED && !ASYNC) {
            int grp;
            if (next_ends_group(load_walk, chunk, &grp)) load_records(ch.sz, grp);
        }
    };

    // One group's sums: sum (q - 8) x per block and row group, and sum x per row.
    // xs[mt][2..3]: the ones-mma's rows 8-15 (the same sums, never read;
    // kept so that no step zero-fills them).
    float acc[NB][MT][4], xs[MT][4];
    auto reset_sums = [&]() {
#pragma unroll
        for (int b = 0; b < NB; ++b)
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int i = 0; i < 4; ++i) acc[b][mt][i] = 0.0f;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) xs[mt][0] = xs[mt][1] = xs[mt][2] = xs[mt][3] = 0.0f;
    };
    reset_sums();
    // Grouped weights fold each group into tot; per-channel ones once, at the end.
    float tot[GROUPED ? NB : 1][GROUPED ? MT : 1][4] = {};
    // Per-channel offset codes: the sums of x of the chunks done (xs: the current chunk's).
    float xs_tot[OFFSET && !GROUPED ? MT : 1][2] = {};

    auto fold = [&](const uint32_t (&sz)[NB][2], float (&out)[NB][MT][4]) {
#pragma unroll
        for (int b = 0; b < NB; ++b) {
            float s0 = lo_to_float<T>(sz[b][0]), s1 = hi_to_float<T>(sz[b][0]);
            float z0 = lo_to_float<T>(sz[b][1]), z1 = hi_to_float<T>(sz[b][1]);
            if constexpr (GROUPED) {  // acc holds offset codes: s (kDiv acc - kDivBase xs) + z xs
                z0 = fmaf(-OffsetCodes<T>::kDivBase, s0, z0), z1 = fmaf(-OffsetCodes<T>::kDivBase, s1, z1);
            }
            if constexpr (OFFSET) {  // acc counts q - 8 in units of 1 / kDiv (per-channel: offset out already)
                s0 *= OffsetCodes<T>::kDiv, s1 *= OffsetCodes<T>::kDiv;
            }
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                out[b][mt][0] = fmaf(z0, xs[mt][0], fmaf(s0, acc[b][mt][0], out[b][mt][0]));
                out[b][mt][1] = fmaf(z0, xs[mt][1], fmaf(s0, acc[b][mt][1], out[b][mt][1]));
                out[b][mt][2] = fmaf(z1, xs[mt][0], fmaf(s1, acc[b][mt][2], out[b][mt][2]));
                out[b][mt][3] = fmaf(z1, xs[mt][1], fmaf(s1, acc[b][mt][3], out[b][mt][3]));
            }
        }
    };

    constexpr uint32_t kOnes = std::is_same<T, __nv_bfloat16>::value ? 0x3F803F80u : 0x3C003C00u;
    const uint32_t ones[4] = {kOnes, kOnes, kOnes, kOnes};

    auto compute = [&](const ChunkT &ch, int chunk, int slot) {
        const uint32_t *ws = nullptr;
        if constexpr (ASYNC) ws = wring + slot * kSlotWords + lane;
#pragma unroll
        for (int u = 0; u < U; ++u) {
            uint32_t xf[MT][2];  // this step's B fragments
            if constexpr (XS) {
                uint32_t r[4];  // ldmatrix: B fragments when a matrix row is a row of x, its columns 8 values of k
                ldmatrix_x4(r, ws - lane + kChunkWords + kScaleWords + 8 * u + xlane);
                xf[0][0] = r[0], xf[0][1] = r[1], xf[MT - 1][0] = r[2], xf[MT - 1][1] = r[3];
            } else {
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) xf[mt][0] = ch.x[u][mt][0], xf[mt][1] = ch.x[u][mt][1];
            }
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                mma16816<T>(xs[mt], ones, xf[mt][0], xf[mt][1]);
            }
#pragma unroll
            for (int b = 0; b < NB; ++b) {
                uint32_t af[4];
                uint32_t word;
                if constexpr (ASYNC) word = ws[(u * NB + b) * 32];
                else word = ch.w[u][b];
                if constexpr (OFFSET) dequant_offset<T>(word, af);
                else dequant<T>(word, af);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) mma16816<T>(acc[b][mt], af, xf[mt][0], xf[mt][1]);
            }
        }
        if constexpr (OFFSET && !GROUPED) {
            // This chunk's offset (kBase times its sums of x) out of acc now,
            // so that no sum carries more than one chunk of it.
            constexpr float kBase = OffsetCodes<T>::kBase;
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
                for (int b = 0; b < NB; ++b) {
                    acc[b][mt][0] = fmaf(-kBase, xs[mt][0], acc[b][mt][0]);
                    acc[b][mt][1] = fmaf(-kBase, xs[mt][1], acc[b][mt][1]);
                    acc[b][mt][2] = fmaf(-kBase, xs[mt][0], acc[b][mt][2]);
                    acc[b][mt][3] = fmaf(-kBase, xs[mt][1], acc[b][mt][3]);
                }
                xs_tot[mt][0] += xs[mt][0], xs_tot[mt][1] += xs[mt][1];
                xs[mt][0] = xs[mt][1] = 0.0f;
            }
        }
        if constexpr (GROUPED) {
            int grp;
            if (next_ends_group(math_walk, chunk, &grp)) {
                if constexpr (ASYNC) {
                    uint32_t sz[NB][2];
                    read_records(ws - lane + kChunkWords, sz);
                    fold(sz, tot);
                } else {
                    fold(ch.sz, tot);
                }
                reset_sums();
            }
        }
    };

    // PDL: nothing of this call's data is read before the previous kernel
    // has finished (griddepcontrol.wait), not even the weights, which that
    // kernel may have written (prepare, a copy).  What may run before the
    // wait is a prefetch of the first chunks into L2: a prefetch moves no data
    // into this kernel, and the L2 is where every write lands, so the later
    // reads see the previous kernel's writes (benchmarks/NOTES.md, v15).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (a.pdl) {
        // One 128-byte line per lane at a time (a bulk prefetch per k16 step
        // took a loop over the lanes: its operands must be warp-uniform).
        const int lines = min(a.prefetch, nchunks) * U * NB;  // chunk, step, block
        for (int l = lane; l < lines; l += 32) {
            const uint32_t *src = wp - lane + int64_t(l / NB) * wstride + 32 * (l % NB);
            asm volatile("prefetch.global.L2 [%0];\n" ::"l"(src) : "memory");
        }
        asm volatile("griddepcontrol.wait;\n" ::: "memory");
    }
#endif

    // Per-channel: the one scale row, loaded while the weights stream
    // (XS: into this warp's area after the rings, with chunk 0).
    uint32_t sz_pc[NB][2];
    uint32_t *pcs = reinterpret_cast<uint32_t *>(red) + int64_t(wk) * a.stages * kSlotWords + warp * NB * 16;
    if constexpr (!GROUPED && !XS) {
        if (nchunks > 0) load_scales(sz_pc);
    }

    // Register ring of DEPTH + 1 chunks; the ring index is static after unrolling.
    ChunkT ring[DEPTH + 1];
    if constexpr (XS) {
        // Rows of x past M: zeros in every slot (the cp.async never write them).
        for (int i = lane; i < a.stages * (8 * MT - xrows) * kXRow; i += 32) {
            const int per_slot = (8 * MT - xrows) * kXRow, slot = i / per_slot, r = i % per_slot;
            wring[slot * kSlotWords + kChunkWords + kScaleWords + xrows * kXRow + r] = 0u;
        }
        if constexpr (!GROUPED) {
            for (int piece = lane; nchunks > 0 && piece < NB * 4; piece += 32) {  // NB * 2 of scales, NB * 2 of zero_c
                const uint16_t *from = (piece < NB * 2 ? sp : zp) - g + 8 * (piece % (NB * 2));
                cp_async16(pcs + 4 * piece, reinterpret_cast<const uint32_t *>(from), policy);
            }
        }
    }
    if constexpr (ASYNC) {  // one commit group per chunk, empty ones past the end
        for (int c = 0; c < a.stages - 1; ++c) {
            if (c < nchunks) issue(c, c);
            cp_async_commit();
        }
    }
#pragma unroll
    for (int d = 0; d < DEPTH; ++d)
        if (d < nchunks) load(ring[d], d);
    int slot = 0;  // ASYNC: chunk % stages
    for (int base = 0; base < nchunks; base += DEPTH + 1) {
#pragma unroll
        for (int r = 0; r <= DEPTH; ++r) {
            const int chunk = base + r;
            if (chunk < nchunks) {
                if (chunk + DEPTH < nchunks) load(ring[(r + DEPTH) % (DEPTH + 1)], chunk + DEPTH);
                if constexpr (ASYNC) {
                    // Chunk `chunk` has landed (for every lane: __syncwarp);
                    // its slot's previous reader, chunk - 1, is done too, so
                    // the slot it leaves takes chunk + stages - 1.
                    cp_async_wait_ring(a.stages);
                    __syncwarp();
                    if (chunk + a.stages - 1 < nchunks) issue(chunk + a.stages - 1, slot == 0 ? a.stages - 1 : slot - 1);
                    cp_async_commit();
                }
                compute(ring[r], chunk, slot);
                if constexpr (ASYNC) slot = slot + 1 == a.stages ? 0 : slot + 1;
            }
        }
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    // Every load of this warp is issued: a PDL launch after this one may
    // start its CTAs (and their prefetches) while this CTA reduces.  (At the
    // start of the kernel instead, it was slower on some shapes: NOTES v15.)
    if (a.pdl) asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
    if constexpr (ASYNC) {
        cp_async_wait<0>();
        if constexpr (!GROUPED && XS) {
            __syncwarp();
            read_scales(pcs, sz_pc);
        }
        __syncthreads();  // the rings become the reduction buffer
    }
    if constexpr (!GROUPED) {
        if (nchunks > 0) {
            if constexpr (OFFSET) {
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) xs[mt][0] = xs_tot[mt][0], xs[mt][1] = xs_tot[mt][1];
            }
            float out[NB][MT][4] = {};
            fold(sz_pc, out);
#pragma unroll
            for (int b = 0; b < NB; ++b)
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int i = 0; i < 4; ++i) acc[b][mt][i] = out[b][mt][i];
        }
    }

    auto result = [&](int b, int mt) -> const float(&)[4] {
        if constexpr (GROUPED) return tot[b][mt];
        else return acc[b][mt];
    };

    // Sum the wk warps' partials through shared memory, red[warp][m][n] for
    // the CTA's valid rows m only; with K split over a cluster, each CTA's sum
    // goes to part[m][n] and the CTAs add them through distributed shared
    // memory, each writing a share of the outputs.  (Every row of the tile
    // and a separate pass for ks = 1 cost 1-3 µs: benchmarks/NOTES.md, v15.)
    constexpr int kCols = NB * 16, kRows = 8 * MT, kTile = kCols * kRows;
    const int rows = min(kRows, a.M - m0);
#pragma unroll
    for (int b = 0; b < NB; ++b)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            const int m = 8 * mt + 2 * c;  // D: rows are weight columns g, g + 8; columns are rows of x 2c, 2c + 1
            float *r = red + (warp * kRows + m) * kCols + b * 16 + g;
            const float(&v)[4] = result(b, mt);
            if (m < rows) {
                r[0] = v[0];
                r[8] = v[2];
            }
            if (m + 1 < rows) {
                r[kCols] = v[1];
                r[kCols + 8] = v[3];
            }
        }
    __syncthreads();
    auto warps_sum = [&](int i) {  // i = m * kCols + n
        float v = 0.0f;
#pragma unroll
        for (int w = 0; w < 8; ++w)
            if (w < wk) v += red[w * kTile + i];
        return v;
    };
    const int col0 = nb0 * 16, ks = gridDim.z;
    auto store = [&](int i, float v) {
        const int m = i / kCols, n = i % kCols;
        if (a.bias != nullptr) v += Elem<T>::to_float(a.bias[col0 + n]);
        a.y[int64_t(m0 + m) * a.ldy + col0 + n] = Elem<T>::from_float(v);
    };
    if (ks == 1) {
        for (int i = threadIdx.x; i < rows * kCols; i += blockDim.x) store(i, warps_sum(i));
        return;
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    float *part = red + wk * kTile;  // this CTA's sum [m][n]
    for (int i = threadIdx.x; i < rows * kCols; i += blockDim.x) part[i] = warps_sum(i);
    cluster_sync();
    // CTA `share` of the cluster writes outputs share, share + ks, ...
    const int share = cluster_rank();
    for (int i = threadIdx.x + share * blockDim.x; i < rows * kCols; i += ks * blockDim.x) {
        float v = 0.0f;
        for (int q = 0; q < ks; ++q) v += ld_cluster(part + i, q);
        store(i, v);
    }
    cluster_sync();  // keep this CTA's shared memory alive until the others read it
#endif
}

constexpr int kDepth = 1;  // chunks loaded ahead (2 was never faster: benchmarks/NOTES.md, v5)
// Chunks per warp prefetched into L2 before a PDL launch waits for the
// previous kernel; < 0: the ring's prologue (the decode harness sets it).
int g_decode_prefetch = -1;

template <class T>
using KernelFn = void (*)(DecodeArgs<T>);

// Kernels that are not built: grouped ones with NB * MT > 16 (they keep two
// accumulator sets: the group's and the total; they would spill), and 14
// blocks with one row group and chunks of 8 steps (ptxas spills 104-152
// bytes there, sm_90a).
template <int NB, int MT, int U, bool GROUPED>
constexpr bool decode_kernel_built() {
    return !(GROUPED && NB * MT > 16) && !(NB == 14 && MT == 1 && U == 8);
}

template <class T, int NB, int MT, int U, bool GROUPED, bool ASYNC>
KernelFn<T> kernel_or_null() {
    if constexpr (decode_kernel_built<NB, MT, U, GROUPED>()) return decode_kernel<T, NB, MT, U, kDepth, GROUPED, ASYNC>;
    else return nullptr;
}

template <class T, int NB, int MT, bool ASYNC>
KernelFn<T> pick_u(int u, bool grouped) {
    if (u == 8) return grouped ? kernel_or_null<T, NB, MT, 8, true, ASYNC>() : kernel_or_null<T, NB, MT, 8, false, ASYNC>();
    return grouped ? kernel_or_null<T, NB, MT, 4, true, ASYNC>() : kernel_or_null<T, NB, MT, 4, false, ASYNC>();
}

constexpr int kRingWidths[] = {1, 2, 4, 5, 7, 8, 10, 14, 16};  // shared-memory ring nb (pick_kernel)

bool is_ring_width(int nb) {
    for (int w : kRingWidths)
        if (w == nb) return true;
    return false;
}

// The kernel of a (validated) config; nullptr where none is built.  Register
// ring: nb 1, 2, 4 with nb * mt <= 8, and 4 with mt = 4 (larger tiles spill);
// nb 5 and 7 with mt = 1 (7 with u = 4 only: N / 16 with a factor 5 or 7 in
// one balanced wave, benchmarks/NOTES.md, v24).
// Shared-memory ring: nb 1, 2, 4, 8, 16 and 5, 7, 10, 14 (N / 16 with a
// factor 5 or 7 in one wave of 128 or 256 CTAs: benchmarks/NOTES.md, v20),
// mt = 1 with nb 1 .. 16, mt = 2 with nb 2 .. 16 (per-channel) or 2 .. 8
// (grouped).
template <class T>
KernelFn<T> pick_kernel(const DecodeConfig &c, bool grouped) {
    if (c.stages > 0 && c.mt == 2) {
        switch (c.nb) {
            case 16: return pick_u<T, 16, 2, true>(c.u, grouped);
            case 14: return pick_u<T, 14, 2, true>(c.u, grouped);
            case 10: return pick_u<T, 10, 2, true>(c.u, grouped);
            case 8: return pick_u<T, 8, 2, true>(c.u, grouped);
            case 7: return pick_u<T, 7, 2, true>(c.u, grouped);
            case 5: return pick_u<T, 5, 2, true>(c.u, grouped);
            case 4: return pick_u<T, 4, 2, true>(c.u, grouped);
            default: return pick_u<T, 2, 2, true>(c.u, grouped);
        }
    }
    if (c.stages > 0) {
        switch (c.nb) {
            case 16: return pick_u<T, 16, 1, true>(c.u, grouped);
            case 14: return pick_u<T, 14, 1, true>(c.u, grouped);
            case 10: return pick_u<T, 10, 1, true>(c.u, grouped);
            case 8: return pick_u<T, 8, 1, true>(c.u, grouped);
            case 7: return pick_u<T, 7, 1, true>(c.u, grouped);
            case 5: return pick_u<T, 5, 1, true>(c.u, grouped);
            case 4: return pick_u<T, 4, 1, true>(c.u, grouped);
            case 2: return pick_u<T, 2, 1, true>(c.u, grouped);
            default: return pick_u<T, 1, 1, true>(c.u, grouped);
        }
    }
    if (c.nb == 7) {  // mt = 1, u = 4 (launch_matmul_decode checks)
        return grouped ? kernel_or_null<T, 7, 1, 4, true, false>() : kernel_or_null<T, 7, 1, 4, false, false>();
    }
    if (c.nb == 5) return pick_u<T, 5, 1, false>(c.u, grouped);
    if (c.nb == 4) return c.mt == 2 ? pick_u<T, 4, 2, false>(c.u, grouped) : pick_u<T, 4, 1, false>(c.u, grouped);
    if (c.nb == 2) return c.mt == 2 ? pick_u<T, 2, 2, false>(c.u, grouped) : pick_u<T, 2, 1, false>(c.u, grouped);
    if (c.mt == 4) return pick_u<T, 1, 4, false>(c.u, grouped);
    return c.mt == 2 ? pick_u<T, 1, 2, false>(c.u, grouped) : pick_u<T, 1, 1, false>(c.u, grouped);
}

// Dynamic shared memory: the reduction buffer, which ASYNC kernels overlay
// on their rings (slots of weight words, grouped scales and x rows; then
// per-channel scales, one area per warp).
size_t smem_bytes(const DecodeConfig &c, bool grouped) {
    const size_t red = size_t(c.wk + 1) * c.nb * 16 * 8 * c.mt * sizeof(float);
    if (c.stages == 0) return red;
    const bool xs = c.mt == 2;  // x and per-channel scales in shared memory
    const size_t slot = size_t(c.u) * c.nb * 32 + (grouped ? c.nb * 16 : 0) + (xs ? size_t(16) * (8 * c.u + 4) : 0);
    const size_t rings = (size_t(c.wk) * c.stages * slot + (grouped || !xs ? 0 : size_t(c.wk) * c.nb * 16)) * sizeof(uint32_t);
    return std::max(red, rings);
}

// Whether the decode kernels this device runs were compiled for sm_90 or
// newer: only those wait for the previous kernel (griddepcontrol.wait), so
// only they may be launched with PDL.  A build with only sm_80 PTX, compiled
// for a Hopper GPU at load time, has ptxVersion 80.  Once per device.
constexpr int kMaxPdlDevices = 64;
std::atomic<int8_t> g_pdl_compiled[kMaxPdlDevices];
bool decode_pdl_compiled(int device) {
    std::atomic<int8_t> *slot = device >= 0 && device < kMaxPdlDevices ? &g_pdl_compiled[device] : nullptr;
    const int8_t v = slot ? slot->load(std::memory_order_relaxed) : 0;
    if (v != 0) return v > 0;
    cudaFuncAttributes fa{};
    const cudaError_t e = cudaFuncGetAttributes(&fa, decode_kernel<__half, 1, 1, 8, kDepth, false, false>);
    if (e != cudaSuccess) (void)cudaGetLastError();  // no answer: no PDL (the launch reports real errors)
    const bool ok = e == cudaSuccess && fa.ptxVersion >= 90;
    if (slot) slot->store(ok ? 1 : -1, std::memory_order_relaxed);
    return ok;
}

// Set once a launch with the PDL attribute failed (a driver without it):
// later launches go without.
std::atomic<bool> g_pdl_refused{false};

// kernel(args) on `grid` with `threads` threads and `smem` bytes of dynamic
// shared memory; ks > 1: in clusters of ks CTAs along z (a K split, sm_90);
// args.pdl: with programmatic dependent launch.
template <class F, class A>
int4mm_status launch_k_split(F kernel, dim3 grid, int threads, size_t smem, cudaStream_t stream, int ks, A args) {
    if (args.pdl && g_pdl_refused.load(std::memory_order_relaxed)) args.pdl = 0;
    if (ks == 1 && !args.pdl) {
        kernel<<<grid, threads, smem, stream>>>(args);
        return INT4MM_OK;
    }
    cudaLaunchConfig_t lc{};
    lc.gridDim = grid;
    lc.blockDim = dim3(threads);
    lc.dynamicSmemBytes = smem;
    lc.stream = stream;
    cudaLaunchAttribute attr[2];
    unsigned n = 0;
    if (ks > 1) {
        attr[n].id = cudaLaunchAttributeClusterDimension;
        attr[n].val.clusterDim.x = 1;
        attr[n].val.clusterDim.y = 1;
        attr[n].val.clusterDim.z = ks;
        ++n;
    }
    if (args.pdl) {
        attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[n].val.programmaticStreamSerializationAllowed = 1;
        ++n;
    }
    lc.attrs = attr;
    lc.numAttrs = n;
    if (args.pdl) {
        if (cudaLaunchKernelEx(&lc, kernel, args) == cudaSuccess) return INT4MM_OK;
        (void)cudaGetLastError();
        args.pdl = 0;  // the kernel then does not wait: it must start after the previous one
        lc.numAttrs = n - 1;
        INT4MM_CUDA_TRY(cudaLaunchKernelEx(&lc, kernel, args));
        g_pdl_refused.store(true, std::memory_order_relaxed);  // it was the attribute: never again
        return INT4MM_OK;
    }
    INT4MM_CUDA_TRY(cudaLaunchKernelEx(&lc, kernel, args));
    return INT4MM_OK;
}

template <class T>
int4mm_status launch(const DecodeArgs<T> &a, const DecodeConfig &c, cudaStream_t stream) {
    const bool grouped = a.gsteps != a.ksteps;
    const dim3 grid(static_cast<unsigned>(a.N16 / c.nb), static_cast<unsigned>((a.M + 8 * c.mt - 1) / (8 * c.mt)),
                    static_cast<unsigned>(c.ks));
    int4mm_status st = launch_k_split(pick_kernel<T>(c, grouped), grid, 32 * c.wk, smem_bytes(c, grouped), stream,
                                      c.ks, a);
    if (st != INT4MM_OK) return st;
    INT4MM_LAUNCH_CHECK("matmul (decode) launch");
    return INT4MM_OK;
}

// Resident CTAs per SM of `kernel` (nullptr: no such kernel) with `threads`
// threads and `smem` bytes of dynamic shared memory; 0 if it cannot run.
// Above the default 48 KB the kernel is opted in to the device's maximum.
template <class F>
int4mm_status resident_ctas(int device, F kernel, int threads, size_t smem, int *out) {
    *out = 0;
    if (kernel == nullptr) return INT4MM_OK;
    if (smem > 48 * 1024) {
        int optin = 0;
        INT4MM_CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
        if (smem > size_t(optin)) return INT4MM_OK;
        INT4MM_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, optin));
    }
    INT4MM_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(out, kernel, threads, smem));
    return INT4MM_OK;
}

// Resident CTAs per SM of each kernel, measured once per device
// (cudaOccupancy...) and cached: the default config depends on them.  Read
// lock-free on every call; a slot is written at most once per value.
constexpr int kMaxDevices = 64;
struct Occupancy {
    // [bf16][nb_index(nb)][log2 mt][u == 8][grouped][wk - 1][max(stages - 1, 0)]; 0 unknown
    std::atomic<int8_t> slot[2][9][3][2][2][8][8];
};
Occupancy g_occupancy[kMaxDevices];

int log2_small(int v) { return v >= 16 ? 4 : v >= 8 ? 3 : v >= 4 ? 2 : v >= 2 ? 1 : 0; }
// Index of a ring width nb (kRingWidths) in the occupancy table.
int nb_index(int nb) { return nb == 5 ? 5 : nb == 7 ? 6 : nb == 10 ? 7 : nb == 14 ? 8 : log2_small(nb); }

// Resident CTAs per SM of config c (0 if it cannot run).
int4mm_status blocks_per_sm(int device, int dtype, bool grouped, const DecodeConfig &c, int *out) {
    std::atomic<int8_t> *slot = nullptr;
    if (device >= 0 && device < kMaxDevices) {
        slot = &g_occupancy[device].slot[dtype == INT4MM_DTYPE_BF16][nb_index(c.nb)][log2_small(c.mt)][c.u == 8]
                                        [grouped][c.wk - 1][std::max(c.stages - 1, 0)];
        const int8_t v = slot->load(std::memory_order_relaxed);
        if (v != 0) {
            *out = v > 0 ? v : 0;
            return INT4MM_OK;
        }
    }
    int n = 0;
    int4mm_status st = with_element_type(dtype, [&](auto tag) {
        using T = decltype(tag);
        return resident_ctas(device, pick_kernel<T>(c, grouped), 32 * c.wk, smem_bytes(c, grouped), &n);
    });
    if (st != INT4MM_OK) return st;
    if (slot) slot->store(static_cast<int8_t>(n > 0 ? std::min(n, 127) : -1), std::memory_order_relaxed);
    *out = n;
    return INT4MM_OK;
}

}  // namespace

// The shared-memory ring with 16 rows (mt = 2) copies rows of x in 16-byte pieces.
static bool x_rows_aligned(const MatmulProblem &p) {
    return reinterpret_cast<uintptr_t>(p.x) % 16 == 0 && p.ldx % 8 == 0;
}

bool decode_supported(const MatmulProblem &p) {
    return p.frag.codes != nullptr && p.mask == nullptr && p.N % 16 == 0 && p.K % 64 == 0 &&
           (p.group_size == p.K || (p.group_size % 64 == 0 && p.frag.records != nullptr));
}

namespace {

// One thread per (group, block, g): the 8 bytes of the records (above).
__global__ void decode_records_kernel(const uint16_t *s, const uint16_t *zc, int64_t groups, int64_t n16,
                                      uint32_t *rec) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= groups * n16 * 8) return;
    const int64_t g = i % 8, b = (i / 8) % n16, j = i / (8 * n16);
    const int64_t at = j * n16 * 16 + 16 * b + g;  // s[j, 16 b + g]
    rec[2 * i] = s[at] | uint32_t(s[at + 8]) << 16;
    rec[2 * i + 1] = zc[at] | uint32_t(zc[at + 8]) << 16;
}

}  // namespace

int4mm_status prepare_decode_records(const void *scales, const void *zero_c, int64_t groups, int64_t N,
                                     void *records, cudaStream_t stream) {
    const int64_t n = groups * (N / 16) * 8;  // threads
    if (n <= 0) return INT4MM_OK;
    const int threads = 256;
    decode_records_kernel<<<unsigned((n + threads - 1) / threads), threads, 0, stream>>>(
        static_cast<const uint16_t *>(scales), static_cast<const uint16_t *>(zero_c), groups, N / 16,
        static_cast<uint32_t *>(records));
    INT4MM_LAUNCH_CHECK("prepare: decode scale records");
    return INT4MM_OK;
}

namespace {

// Shared-memory-ring defaults for M <= 16 on weights of 16 MiB and more
// where scored_register_config does not apply (grouped weights, M = 9-16)
// (measured on H200, benchmarks/NOTES.md, v8; mt = 2 for M = 9-16: v9, the
// same scores, nb >= 2, grouped nb <= 8; v20: the same scores over the
// widths 5, 7, 10 and 14 too, which the balance term takes where N / 16 has
// a factor 5 or 7: 2-17% faster there).  Every (nb, u, wk, ks) with
// stages = 2 whose grid is resident in one wave, with at most 16 warps per
// SM and at least one chunk per warp, is scored and the lowest
// score wins (ties: more warps per CTA, then fewer CTAs per cluster):
//     |log2(bytes in flight / 7 MB)|     one chunk in flight per warp:
//                                        warps * nb * u * 128 bytes (the 7 MB
//                                        are for 4.9 TB/s and scale with the
//                                        device's DRAM bandwidth)
//   + |log2(chunk / 4 KB)| / 2           8 KB for grouped weights (each chunk
//                                        folds its group's scales)
//   + 3 log2(32 / k16 steps per warp)    if under 32
//   + log2(steps per warp / 128) / 2     if over 128 with 16 rows (mt = 2;
//                                        v17: 28672 x 8192 at M = 16 took
//                                        46.3 us with 224 steps per warp,
//                                        40.0 with 112 over a cluster of 2)
//   + log2(1024 / warps)                 if under 1024
//   + 4 (1 / balance - 1)                mean warps per SM / warps on the
//                                        busiest SM
//   + 1 if wk = 2, + 1 if ks = 4         (often far off: 1.3-2x)
// Fitted to exhaustive sweeps of 31 shape / group / M combinations (M = 1, 4,
// 8, per-channel and G = 128, 16 MiB to 224 MiB): 1.3% slower than each
// sweep's best on average, 7.5% at worst; with the target 10% lower or
// higher, 1.7% and 1.3% on average.  benchmarks/decode_harness/
// fit_ring_defaults.py scores the same way (without the residency test) to
// check and refit these constants: change both together (they once differed
// by the 16-warp bound, and the bench showed it).
int4mm_status ring_config(const MatmulProblem &p, const DeviceAttrs &attrs, int device, int mt, DecodeConfig *out) {
    const int n16 = p.N / 16, ksteps = p.K / 16, gsteps = p.group_size / 16, sms = attrs.sms;
    const bool grouped = p.group_size != p.K;
    const double bw = attrs.dram_bytes_per_s > 0 ? attrs.dram_bytes_per_s : 3.35e12;
    const double target = 7e6 * bw / 4.9e12, chunk_target = grouped ? 8192.0 : 4096.0;
    DecodeConfig best;
    double best_score = 0.0;
    for (int nb : kRingWidths) {
        if (n16 % nb != 0 || (mt == 2 && (nb < 2 || (grouped && nb > 8)))) continue;
        for (int u : {4, 8}) {
            if (gsteps % u != 0) continue;
            for (int wk : {8, 4, 2}) {
                for (int ks : {1, 2, 4}) {
                    if (ks > 1 && attrs.major < 9) continue;
                    const int64_t ctas = int64_t(n16 / nb) * ks, warps = ctas * wk;
                    const double spw = double(ksteps) / (wk * ks);
                    if (spw < u || warps > int64_t(16) * sms) continue;  // > 16 warps per SM: never the best
                    const DecodeConfig c{nb, mt, u, wk, ks, 2};
                    int per_sm = 0;
                    int4mm_status st = blocks_per_sm(device, p.dtype, grouped, c, &per_sm);
                    if (st != INT4MM_OK) return st;
                    if (per_sm == 0 || ctas > int64_t(per_sm) * sms) continue;
                    const double chunk = double(nb) * u * 128;
                    const double balance = (double(warps) / sms) / (double((ctas + sms - 1) / sms) * wk);
                    double score = std::fabs(std::log2(chunk * double(warps) / target)) +
                                   0.5 * std::fabs(std::log2(chunk / chunk_target)) + 4.0 * (1.0 / balance - 1.0);
                    if (spw < 32) score += 3.0 * std::log2(32 / spw);
                    if (mt == 2 && spw > 128) score += 0.5 * std::log2(spw / 128);
                    if (warps < 1024) score += std::log2(1024.0 / double(warps));
                    if (wk == 2) score += 1.0;
                    if (ks == 4) score += 1.0;
                    const bool better = best.nb == 0 || score < best_score ||
                                        (score == best_score && (wk > best.wk || (wk == best.wk && ks < best.ks)));
                    if (better) {
                        best = c;
                        best_score = score;
                    }
                }
            }
        }
    }
    *out = best;  // nb == 0: nothing fits (the caller falls back)
    return INT4MM_OK;
}

// Register-ring defaults (measured on H100, benchmarks/NOTES.md, v5).  The kernel is
// bound by DRAM latency x bytes in flight: each warp has one chunk of
// nb * u * 128 bytes in flight, so the whole grid has N/16 * 128 * u * wk * ks
// bytes in flight, independently of nb.  About 4 MB was best for the large
// shapes (2-2.5 MB for N = 5120 and N = 20480 with short K), provided every
// CTA is resident at once (a second wave costs up to 40%).
//  - nb: as many 16-column blocks per CTA as leave >= 256 CTAs.
//  - u * wk * ks ~ 32768 / (N/16) (bytes in flight / 128), 16 .. 128, at
//    most K/64 for K >= 4096 (each warp keeps >= 4 steps of work).
//  - among the splits of that product, the first whose grid fits in one wave.
int4mm_status register_ring_config(const MatmulProblem &p, int device, DecodeConfig *out) {
    DeviceAttrs attrs;
    int4mm_status st = device_attrs(device, &attrs);
    if (st != INT4MM_OK) return st;
    const int sms = attrs.sms, major = attrs.major;
    const int n16 = p.N / 16, ksteps = p.K / 16, gsteps = p.group_size / 16;
    const bool grouped = p.group_size != p.K;
    DecodeConfig best;
    // Up to 32 rows: tiles of 16 (M = 17-32 in two; H200, v18: 1.45-2.6x
    // faster than tiles of 32 on 12 of 13 shapes, 8% slower on 1024^2).
    best.mt = p.M <= 8 ? 1 : p.M <= 32 ? 2 : 4;
    best.nb = 1;
    // Grouped weights: 4 blocks per CTA down to 64 CTAs (G = 128, M = 1:
    // nb = 4 was the fastest on every target shape but 1024^2).
    const int min_ctas = grouped ? 64 : 256;
    for (int nb : {4, 2}) {
        if (nb * best.mt <= 4 && n16 % nb == 0 && n16 / nb >= min_ctas) {
            best.nb = nb;
            break;
        }
    }
    if (best.mt > 1) {
        // 9 or more rows (measured at M = 16, x rows K apart): four blocks per
        // CTA (the x fragments are re-read once per CTA: fewer, wider CTAs
        // read less of them), 8-step chunks for per-channel K >= 8192 (4-step
        // ones for grouped weights: 8192^2 G = 128 20.4 vs 24.6 us), 8 warps
        // up to N = 8192.
        best.nb = best.mt == 2 && n16 % 4 == 0 ? 4 : best.mt == 2 && n16 % 2 == 0 ? 2 : 1;
        best.u = gsteps % 8 == 0 && !grouped && p.K >= 8192 ? 8 : 4;
        best.wk = n16 <= 512 ? 8 : 4;
        while (best.wk > 1 && best.wk * best.u > ksteps) best.wk /= 2;
        best.ks = 1;
        *out = best;
        return INT4MM_OK;
    }
    int target = 16;
    while (target < 128 && target * 2 * n16 <= 32768) target *= 2;
    const int cap = ksteps >= 256 ? ksteps / 4 : ksteps;
    while (target > 4 && target > cap) target /= 2;
    // Splits (u, wk, ks) in order of preference; the largest product <= target
    // whose grid is resident at once.
    // At 32, per-channel weights prefer u = 4 with 8 warps (16384^2: 47 vs
    // 54 us), grouped ones u = 8 with 4 (one scale load per group, not per chunk).
    static const int kChannel[][3] = {{4, 8, 1}, {8, 4, 1}, {4, 4, 1}, {8, 8, 1}, {8, 4, 2}, {4, 4, 2}, {8, 8, 2},
                                      {4, 8, 2}, {8, 4, 4}, {4, 4, 4}, {8, 2, 1}, {4, 2, 1}, {4, 1, 1}, {8, 1, 1}};
    static const int kGrouped[][3] = {{8, 4, 1}, {4, 8, 1}, {4, 4, 1}, {8, 8, 1}, {4, 4, 4}, {8, 4, 2}, {4, 4, 2},
                                      {8, 8, 2}, {4, 8, 2}, {8, 4, 4}, {8, 2, 1}, {4, 2, 1}, {4, 1, 1}, {8, 1, 1}};
    const auto &kSplits = grouped ? kGrouped : kChannel;
    // Grouped weights with 4 blocks per CTA also want the grid to cover ~all
    // SMs (20480 x 5120, G = 128: 80 CTAs of nb4 u8 wk8 32.6 us, 320 of nb4
    // u4 wk4 ks4 27.2 us; 1024^2 stays latency-bound on one small wave); a
    // second pass drops that wish.
    DecodeConfig first;
    for (int pass = grouped && best.nb == 4 ? 0 : 1; pass < 2; ++pass) {
        for (int t = target; t >= 4; t /= 2) {
            for (const auto &sp : kSplits) {
                const int u = sp[0], wk = sp[1], ks = sp[2];
                if (u * wk * ks != t || gsteps % u != 0 || (ks > 1 && major < 9)) continue;
                DecodeConfig c = best;
                c.u = u;
                c.wk = wk;
                c.ks = ks;
                int per_sm = 0;
                if ((st = blocks_per_sm(device, p.dtype, grouped, c, &per_sm)) != INT4MM_OK) return st;
                if (per_sm == 0) continue;
                if (first.nb == 0) first = c;
                const int64_t ctas = int64_t(n16 / c.nb) * ((p.M + 8 * c.mt - 1) / (8 * c.mt)) * ks;
                if (ctas <= int64_t(per_sm) * sms && (pass == 1 || 10 * ctas >= 9 * int64_t(sms))) {
                    *out = c;
                    return INT4MM_OK;
                }
            }
        }
    }
    if (first.nb == 0) {  // nothing resident at once: the smallest CTA
        first = best;
        first.u = 4;
        first.wk = 1;
        first.ks = 1;
    }
    best = first;
    *out = best;
    return INT4MM_OK;
}

// Register-ring defaults at M <= 8 for per-channel weights from 12 MiB up
// and for every grouped weight.  Every (nb, u, wk, ks) whose grid is
// resident in one wave, with at least u k16 steps per warp, is scored and
// the lowest score wins (ties: more warps per CTA, then fewer CTAs per
// cluster, then the first in the order below).  Per-channel weights take
// nb 1, 2, 4, grouped ones 1, 2, 4, 5, 7 (5 and 7 give N / 16 with those
// factors one balanced wave).  The terms, with their weights per kind
// (RegisterWeights: per-channel / grouped under 16 MiB / grouped from 16 MiB):
//     |log2(bytes in flight / T)|       N/16 * 128 * u * wk * ks bytes: one
//                                       chunk ahead per warp; T = 4 / 2 / 4 MB
//   + a log2(32 / k16 steps per warp)   if under 32; a = 3 / 0 / 0
//   + h log2(F / chunks per warp)       if under F (the ring's start and end
//                                       are not overlapped); F = - / 2 / 6,
//                                       h = 0 / 1 / 1/2
//   + log2(steps per warp / 128) / 2    if over 128 (long runs: split K)
//   + 1 if nb * u == 4                  (512-byte chunks)
//   + 1/2 if M > 1 and nb < 4           (x reused by fewer blocks)
//   + n if M = 1 and nb < 4             n = 0 / 0 / 1/2 (16384^2 G = 128:
//                                       nb2 and nb4 scored the same, 40.4
//                                       and 35.2 us)
//   + b (1 / balance - 1)               CTAs per SM: mean / busiest; b = 0 /
//                                       1 / 1/4 (at most one CTA per SM),
//                                       0 / 1 / 1/2 (more)
//   + c if ks = 4                       c = 0 / 1 / 1
//   + d log2(8 / wk)                    d = 0 / 2 / 0
//   + e if u = 4 where the groups allow 8   e = 0 / 1/2 / 0
// Per-channel (H200, benchmarks/NOTES.md v16: after v16's kernel changes
// the register ring matched the shared-memory ring on 28672 x 8192 and beat
// it on the other 15 per-channel shapes swept at M = 1, by 5-31% on most,
// and on all 12 cases at M = 2-8): fitted to the exhaustive register-ring
// sweeps of 28 shape / M combinations (M = 1, 2, 4, 8; 11-224 MB), 0.2%
// slower than each sweep's best on average, 2.1% at worst
// (benchmarks/results/h200-decode-v16.txt).  Grouped (H200, v24, with the
// scale records and the 5- and 7-block register ring): fitted to the sweeps
// of v23 (88 cases, 0.5-14 MiB, nb <= 4) and v23's call 6 (47 grouped cases
// whose N / 16 has a factor 5 or 7, both rings), and checked on v24's sweeps
// of the large shapes (benchmarks/results/h200-decode-v24.txt).
// benchmarks/decode_harness/fit_register_defaults.py is the Python twin.
struct RegisterWeights {
    double target, short_steps;
    int chunk_floor;
    double short_chunks, balance_one, balance_more, ks4, few_warps, short_u, narrow;
};
constexpr RegisterWeights kChannelWeights{4e6, 3.0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
constexpr RegisterWeights kGroupedSmallWeights{2e6, 0.0, 2, 1.0, 1.0, 1.0, 1.0, 2.0, 0.5, 0.0};
constexpr RegisterWeights kGroupedLargeWeights{4e6, 0.0, 6, 0.5, 0.25, 0.5, 1.0, 0.0, 0.0, 0.5};

int4mm_status scored_register_config(const MatmulProblem &p, const DeviceAttrs &attrs, int device, DecodeConfig *out) {
    const int n16 = p.N / 16, ksteps = p.K / 16, gsteps = p.group_size / 16, sms = attrs.sms;
    const bool grouped = p.group_size != p.K;
    const bool large = int64_t(p.K) * p.N / 2 >= (int64_t(16) << 20);
    const RegisterWeights &w = !grouped ? kChannelWeights : large ? kGroupedLargeWeights : kGroupedSmallWeights;
    const int max_u = gsteps % 8 == 0 ? 8 : 4;
    DecodeConfig best;
    double best_score = 0.0;
    for (int nb : {1, 2, 4, 5, 7}) {
        if (n16 % nb != 0 || (!grouped && nb > 4)) continue;
        for (int u : {4, 8}) {
            if (gsteps % u != 0 || (nb == 7 && u != 4)) continue;
            for (int wk : {2, 4, 8}) {
                for (int ks : {1, 2, 4}) {
                    if (ks > 1 && attrs.major < 9) continue;
                    const double spw = double(ksteps) / (wk * ks);
                    if (spw < u) continue;
                    const DecodeConfig c{nb, 1, u, wk, ks, 0};
                    int per_sm = 0;
                    int4mm_status st = blocks_per_sm(device, p.dtype, grouped, c, &per_sm);
                    if (st != INT4MM_OK) return st;
                    const int64_t ctas = int64_t(n16 / nb) * ks;
                    if (per_sm == 0 || ctas > int64_t(per_sm) * sms) continue;
                    const double in_flight = double(n16) * 128.0 * u * wk * ks;
                    const double balance = (double(ctas) / sms) / double((ctas + sms - 1) / sms);
                    double score = std::fabs(std::log2(in_flight / w.target));
                    if (spw < 32) score += w.short_steps * std::log2(32 / spw);
                    if (spw < w.chunk_floor * u) score += w.short_chunks * std::log2(w.chunk_floor * u / spw);
                    if (spw > 128) score += 0.5 * std::log2(spw / 128);
                    if (nb * u == 4) score += 1.0;
                    if (nb < 4) score += p.M > 1 ? 0.5 : w.narrow;
                    score += (ctas <= sms ? w.balance_one : w.balance_more) * (1.0 / balance - 1.0) +
                             w.few_warps * std::log2(8.0 / wk);
                    if (ks == 4) score += w.ks4;
                    if (u < max_u) score += w.short_u;
                    const bool better = best.nb == 0 || score < best_score - 1e-9 ||
                                        (std::fabs(score - best_score) <= 1e-9 &&
                                         (wk > best.wk || (wk == best.wk && ks < best.ks)));
                    if (better) {
                        best = c;
                        best_score = score;
                    }
                }
            }
        }
    }
    *out = best;  // nb == 0: nothing fits (the caller falls back)
    return INT4MM_OK;
}

// Chosen configs, per thread (no locks on the hot path): a decode loop
// cycles through a handful of weight shapes.
struct ConfigCacheEntry {
    uint64_t shape = 0, rest = 0;  // (K, N), (group size, dtype, rows class, device); 0: empty
    DecodeConfig cfg;
};
constexpr int kConfigCacheSize = 16;
thread_local ConfigCacheEntry t_config_cache[kConfigCacheSize];
thread_local int t_config_next = 0;

// register_ring_config's pick for p with its grid size (CTAs) and resident
// CTAs per SM: decode_default_config's grouped M = 9-16 rule tests its wave.
int4mm_status register_ring_grid(const MatmulProblem &p, int device, DecodeConfig *reg, int64_t *ctas, int *per_sm) {
    int4mm_status st = register_ring_config(p, device, reg);
    if (st != INT4MM_OK) return st;
    if ((st = blocks_per_sm(device, p.dtype, p.group_size != p.K, *reg, per_sm)) != INT4MM_OK) return st;
    *ctas = int64_t(p.N / 16 / reg->nb) * reg->ks;
    return INT4MM_OK;
}

}  // namespace

int4mm_status decode_default_config(const MatmulProblem &p, int device, DecodeConfig *out) {
    const int rows = p.M <= 8 ? 1 : p.M <= 16 ? 2 : 4;
    const bool aligned = x_rows_aligned(p);
    const uint64_t shape = (uint64_t(p.K) << 32) | uint64_t(p.N);
    // The defaults depend on M through the row groups (and M == 1 or not,
    // M <= 4 or not; register_ring_config tiles 17-32 rows in 16s, more in 32s).
    const int row_class = p.M == 1 ? 0 : p.M <= 4 ? 5 : p.M > 16 && p.M <= 32 ? 3 : rows;
    const uint64_t rest = (uint64_t(p.group_size) << 24) | (uint64_t(p.dtype & 0xFF) << 16) | (uint64_t(row_class) << 8) |
                          (uint64_t(aligned) << 7) | uint64_t(device & 0x7F);
    for (const ConfigCacheEntry &e : t_config_cache) {
        if (e.shape == shape && e.rest == rest) {
            *out = e.cfg;
            return INT4MM_OK;
        }
    }
    DeviceAttrs attrs;
    int4mm_status st = device_attrs(device, &attrs);
    if (st != INT4MM_OK) return st;
    DecodeConfig cfg;
    const int64_t bytes = int64_t(p.K) * p.N / 2;
    const bool grouped = p.group_size != p.K;
    // Per-channel weights at M <= 4 whose ring default is 14 blocks wide with
    // 64 or more k16 steps per warp (N / 16 a multiple of 7 filling one wave):
    // the shared-memory ring beat the register ring there (H200, v20: 8192 x
    // 57344 M = 1 58.9 -> 54.3 us, 8192 x 28672 M = 1 / 2 / 4 by 5.5 / 2.4 /
    // 1.9%; at M = 8 they tied, and with other widths the register ring stayed
    // ahead or even).
    if (rows == 1 && p.M <= 4 && !grouped && attrs.major >= 8 && bytes >= (int64_t(16) << 20)) {
        DecodeConfig ring;
        if ((st = ring_config(p, attrs, device, 1, &ring)) != INT4MM_OK) return st;
        if (ring.nb == 14 && p.K / 16 >= 64 * ring.wk * ring.ks) cfg = ring;
    }
    // Grouped weights at M <= 8: the scored register ring (v23 under 16 MiB;
    // v24 from 16 MiB, with 5 and 7 blocks per CTA, where v22 took the
    // register ring only for grids of one balanced wave of four-block CTAs
    // and the shared-memory ring elsewhere).  At M = 2-8, eight warps with
    // more than 128 k16 steps each on one CTA per SM become four warps and a
    // K split of two (v22: 28672 x 8192, M = 4 / 8: 35.1 / 37.7 -> 32.5 /
    // 32.9 us).
    if (rows == 1 && grouped && attrs.major >= 8) {
        if ((st = scored_register_config(p, attrs, device, &cfg)) != INT4MM_OK) return st;
        // Groups of 64 (chunks of 4 k16 steps only) from 16 MiB where the
        // register ring's pick has under 3 MB in flight: the shared-memory
        // ring if its pick (ring_config) has twice that in flight without a
        // K split of 4 (its 8- to 16-block chunks; H200, v24, M = 1: 16384^2
        // 56.2 -> 39.3 us, 28672 x 8192 41.9 -> 38.6, 5120 x 20480 21.8 ->
        // 18.8, 8192^2 13.4 both; at M = 8 8192^2 13.8 -> 14.6.  The
        // register ring stayed ahead where the ring's pick had as much in
        // flight (4096 x 11008) or a split of 4 (20480 x 5120), or its own
        // had 3.7 MB (8192 x 28672, 4096 x 14336)).
        auto in_flight = [&](const DecodeConfig &c) { return int64_t(p.N / 16) * 128 * c.u * c.wk * c.ks; };
        if (cfg.nb > 0 && (p.group_size / 16) % 8 != 0 && bytes >= (int64_t(16) << 20) &&
            in_flight(cfg) < 3000000) {
            DecodeConfig ring;
            if ((st = ring_config(p, attrs, device, 1, &ring)) != INT4MM_OK) return st;
            if (ring.nb > 0 && ring.ks <= 2 && in_flight(ring) >= 2 * in_flight(cfg)) cfg = ring;
        }
        const int64_t ctas = int64_t(p.N / 16 / std::max(cfg.nb, 1)) * cfg.ks;
        if (cfg.nb > 0 && cfg.stages == 0 && p.M > 1 && cfg.wk == 8 && cfg.ks == 1 && ctas <= attrs.sms &&
            p.K / 16 > 128 * 8 && attrs.major >= 9) {
            DecodeConfig split = cfg;
            split.wk = 4;
            split.ks = 2;
            int per_sm = 0;
            if ((st = blocks_per_sm(device, p.dtype, grouped, split, &per_sm)) != INT4MM_OK) return st;
            if (2 * ctas <= int64_t(per_sm) * attrs.sms) cfg = split;
        }
    }
    // Grouped weights at M = 9-16 whose register-ring grid (register_ring_config:
    // four blocks per CTA) is one wave over 90% of the SMs or more, with 64 k16
    // steps per warp or fewer: the register ring (H200, v20: 8192^2 G = 128 at
    // M = 9 / 12 / 16 17.4 -> 15.2 / 17.1 -> 15.3 / 17.4 -> 15.5 us, G = 64 -6%,
    // 4096 x 8192 -3%; with half the SMs (N = 4096), more than one wave
    // (N >= 8960) or longer runs the shared-memory ring stayed ahead, by up to
    // 62%: 14336 x 4096, 16384 x 4096).
    if (rows == 2 && grouped && attrs.major >= 8 && bytes >= (int64_t(16) << 20)) {
        DecodeConfig reg;
        int64_t ctas = 0;
        int per_sm = 0;
        if ((st = register_ring_grid(p, device, &reg, &ctas, &per_sm)) != INT4MM_OK) return st;
        if (10 * ctas >= 9 * int64_t(attrs.sms) && ctas <= int64_t(per_sm) * attrs.sms &&
            p.K / 16 <= 64 * reg.wk * reg.ks)
            cfg = reg;
    }
    // Per-channel weights at M <= 8 from 12 MiB (v16).
    if (cfg.nb == 0 && rows == 1 && !grouped && attrs.major >= 8 && bytes >= (int64_t(12) << 20) &&
        (st = scored_register_config(p, attrs, device, &cfg)) != INT4MM_OK)
        return st;
    if (cfg.nb == 0 && (rows == 1 || (rows == 2 && aligned)) && attrs.major >= 8 && bytes >= (int64_t(16) << 20) &&
        (st = ring_config(p, attrs, device, rows, &cfg)) != INT4MM_OK)
        return st;
    if (cfg.nb == 0 && (st = register_ring_config(p, device, &cfg)) != INT4MM_OK) return st;
    ConfigCacheEntry &slot = t_config_cache[t_config_next];
    t_config_next = (t_config_next + 1) % kConfigCacheSize;
    slot.shape = shape;
    slot.rest = rest;
    slot.cfg = cfg;
    *out = cfg;
    return INT4MM_OK;
}

// The kernel arguments for p (fragment-ordered weights, shape already
// checked): `steps` k16 steps per worker, `stages` ring slots.
template <class T>
DecodeArgs<T> frag_args(const MatmulProblem &p, int steps, int stages) {
    DecodeArgs<T> a;
    a.x = static_cast<const T *>(p.x);
    a.w = p.frag.codes;
    a.s = static_cast<const T *>(p.frag.scales);
    a.zc = static_cast<const T *>(p.frag.zero_c);
    a.rec = p.frag.records;
    a.bias = static_cast<const T *>(p.bias);
    a.y = static_cast<T *>(p.y);
    a.ldx = p.ldx;
    a.ldy = p.ldy;
    a.M = p.M;
    a.N16 = p.N / 16;
    a.ksteps = p.K / 16;
    a.gsteps = p.group_size / 16;
    a.warp_steps = steps;
    a.stages = stages;
    a.pdl = 0;
    a.prefetch = 0;
    return a;
}

int4mm_status launch_matmul_decode(const MatmulProblem &p, cudaStream_t stream, DecodeConfig cfg) {
    if (!decode_supported(p))
        return fail(INT4MM_ERR_UNSUPPORTED, "matmul (decode): needs fragment-ordered weights, N %% 16 == 0, "
                    "K %% 64 == 0, group_size == K or a multiple of 64");
    int4mm_status st;
    if (cfg.nb <= 0 && (st = decode_default_config(p, p.device, &cfg)) != INT4MM_OK) return st;
    if (cfg.ks <= 0) cfg.ks = 1;
    DeviceAttrs attrs;
    if ((st = device_attrs(p.device, &attrs)) != INT4MM_OK) return st;
    if (cfg.ks > 1 && attrs.major < 9)
        return fail(INT4MM_ERR_UNSUPPORTED, "matmul (decode): a K split over a cluster needs sm_90");
    const int n16 = p.N / 16, ksteps = p.K / 16, gsteps = p.group_size / 16;
    // Tiles: register ring nb 1, 2, 4 with nb * mt <= 8 (4 with mt = 4), 5
    // and 7 with mt = 1 (7 with u = 4); shared-memory ring nb in kRingWidths
    // (pick_kernel).
    const bool grouped = p.group_size != p.K;
    const bool register_tile = ((cfg.mt == 1 || cfg.mt == 2 || cfg.mt == 4) && (cfg.nb == 1 || cfg.nb == 2 || cfg.nb == 4) &&
                                cfg.nb * cfg.mt <= (cfg.mt == 4 ? 4 : 8)) ||
                               (cfg.mt == 1 && (cfg.nb == 5 || (cfg.nb == 7 && cfg.u == 4)));
    const bool tile_ok = cfg.stages > 0 ? is_ring_width(cfg.nb) && (cfg.mt == 1 || (cfg.mt == 2 && cfg.nb >= 2 && (!grouped || cfg.nb <= 8)))
                                        : register_tile;
    if (!tile_ok || n16 % cfg.nb != 0 || (cfg.u != 4 && cfg.u != 8) || gsteps % cfg.u != 0 || cfg.wk < 1 ||
        cfg.wk > 8 || cfg.ks < 1 || cfg.ks > 8 || cfg.stages < 0 || cfg.stages == 1 || cfg.stages > 8)
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "matmul (decode): bad config nb=%d mt=%d u=%d wk=%d ks=%d stages=%d",
                    cfg.nb, cfg.mt, cfg.u, cfg.wk, cfg.ks, cfg.stages);
    if (cfg.stages > 0) {  // also opts the kernel in to its shared memory
        if (cfg.mt == 2 && !x_rows_aligned(p))
            return fail(INT4MM_ERR_UNSUPPORTED, "matmul (decode): the shared-memory ring with mt=2 needs x 16-byte "
                        "aligned with a row stride that is a multiple of 8 elements");
        int per_sm = 0;
        if ((st = blocks_per_sm(p.device, p.dtype, grouped, cfg, &per_sm)) != INT4MM_OK) return st;
        if (per_sm == 0)
            return fail(INT4MM_ERR_UNSUPPORTED, "matmul (decode): config nb=%d mt=%d u=%d wk=%d stages=%d has no "
                        "kernel or needs more shared memory than the device has", cfg.nb, cfg.mt, cfg.u, cfg.wk,
                        cfg.stages);
    }
    if ((p.M + 8 * cfg.mt - 1) / (8 * cfg.mt) > 65535)
        return fail(INT4MM_ERR_UNSUPPORTED, "matmul (decode): M = %d is too large for this kernel", p.M);
    // Whole chunks per warp; the last warps may get fewer (or none).
    const int chunks = ksteps / cfg.u;
    const int warps = cfg.wk * cfg.ks;
    const int warp_steps = (chunks + warps - 1) / warps * cfg.u;
    return with_element_type(p.dtype, [&](auto tag) {
        using T = decltype(tag);
        DecodeArgs<T> a = frag_args<T>(p, warp_steps, cfg.stages);
        // PDL where it was measured to help (NOTES v15): not with a K split
        // over 4 or more CTAs of a cluster (20480 x 5120: 19.8 -> 22.2 µs).
        a.pdl = cfg.ks <= 2 && attrs.major >= 9 && pdl_enabled() && decode_pdl_compiled(p.device);
        a.prefetch = g_decode_prefetch >= 0 ? g_decode_prefetch : cfg.stages > 0 ? cfg.stages - 1 : kDepth;
        return launch<T>(a, cfg, stream);
    });
}

}  // namespace int4mm
