// SMALL_M path: CUDA-core matrix-vector style kernels for decode-sized M.
//
// Weight bytes dominate at small M, so the kernels read the interchange
// layout directly (no prepare step) with coalesced 16-byte loads, and keep
// every SM busy by giving each block few columns and splitting K *inside*
// the block (no workspace exists for a cross-block split-K).
//
// Partitioning (dense; sparse is the same with 8 column-threads x 32 lanes):
//
//            columns n0 .. n0+15 of the block (4 column-threads x 4 columns,
//            one uint4 of 4 adjacent weight words per thread)
//            +----+----+----+----+
//   K chunk  |ct0 |ct1 |ct2 |ct3 |  lane 0: words 0,1 of the chunk (k 0..15)
//   of 1024  |----+----+----+----|  lane 1: words 2,3             (k 16..31)
//   rows     |        ...        |  ...  64 K-lanes
//            +----+----+----+----+  lane 63: words 126,127
//   (the block walks K in chunks of 1024; x rows m0..m0+R-1 of the chunk are
//   staged in shared memory as fp32 first)
//
// grid.x = column blocks, grid.y = chunks of R rows of x (R in {1,2,4,8},
// picked from M).  Each thread accumulates R x 4 fp32 sums in registers (all
// indices compile-time), then the 64 (32) K-lanes are reduced through shared
// memory and one thread per output adds the bias and stores y (fp16 or bf16).
//
// Dequantization is per weight in fp32: w = fma(q, s, -z*s).  -z*s is exact
// in fp32 (two 11-bit significands), so each weight is rounded once.
#include "matmul_kernels.cuh"

#include <algorithm>

namespace int4mm {
namespace {

constexpr int kThreads = 256;
constexpr int kChunkK = 1024;  // input rows staged per pass over shared memory

// Dense: 4 column-threads x 64 K-lanes, 2 weight words per lane per chunk.
constexpr int kDenseColThreads = 4;
constexpr int kDenseLanes = kThreads / kDenseColThreads;  // 64
constexpr int kDenseWordsPerLane = kChunkK / 8 / kDenseLanes;  // 2
constexpr int kDenseBlockCols = 4 * kDenseColThreads;  // 16
static_assert(kDenseWordsPerLane * 8 * kDenseLanes == kChunkK, "dense chunk tiling");

// Sparse: 8 column-threads x 32 K-lanes, one 32-row sparse block per lane.
constexpr int kSparseColThreads = 8;
constexpr int kSparseLanes = kThreads / kSparseColThreads;  // 32
constexpr int kSparseBlockCols = 4 * kSparseColThreads;  // 32
static_assert(kSparseLanes * 32 == kChunkK, "sparse chunk tiling");

// Shared memory: the x chunk (R x kChunkK floats), reused for the K-lane
// reduction (lanes x R x block columns floats); both are R * 1024 floats.
static_assert(kDenseLanes * kDenseBlockCols == kChunkK, "reduction fits the x buffer");
static_assert(kSparseLanes * kSparseBlockCols == kChunkK, "reduction fits the x buffer");

__device__ __forceinline__ uint32_t component(const uint4 &v, int c) {
    // c is a compile-time constant after unrolling: this folds to one register.
    return c == 0 ? v.x : c == 1 ? v.y : c == 2 ? v.z : v.w;
}

// Weights are read once per row chunk; __ldg keeps them on the read-only path.
__device__ __forceinline__ uint4 load_weight_u4(const uint32_t *base, int64_t row, int N, int col) {
    return __ldg(reinterpret_cast<const uint4 *>(base + row * N + col));
}

// Stages x[m0 .. m0+R-1, k0 .. k0+kChunkK-1] into shared memory as fp32,
// zero for rows >= M and k >= K (K % 8 == 0, so each 8-half vector is either
// wholly inside or wholly outside).  Layout:
//   K_MAJOR == false: xs[r * kChunkK + k]   (dense: 8 consecutive k per row)
//   K_MAJOR == true:  xs[k * R + r]         (sparse: all R rows of one k)
template <int R, bool K_MAJOR, class T>
__device__ __forceinline__ void stage_x_chunk(float *xs, const TypedProblem<T> &p, int m0, int k0) {
    constexpr int kVecPerRow = kChunkK / 8;
    for (int v = threadIdx.x; v < R * kVecPerRow; v += kThreads) {
        const int r = v / kVecPerRow;
        const int kv = v % kVecPerRow;
        const int m = m0 + r;
        const int k = k0 + kv * 8;
        uint4 raw = make_uint4(0, 0, 0, 0);
        if (m < p.M && k < p.K) raw = __ldg(reinterpret_cast<const uint4 *>(p.x + int64_t(m) * p.ldx + k));
        const float2 f01 = pair_bits_to_float2<T>(raw.x);
        const float2 f23 = pair_bits_to_float2<T>(raw.y);
        const float2 f45 = pair_bits_to_float2<T>(raw.z);
        const float2 f67 = pair_bits_to_float2<T>(raw.w);
        const float f[8] = {f01.x, f01.y, f23.x, f23.y, f45.x, f45.y, f67.x, f67.y};
        if constexpr (K_MAJOR) {
#pragma unroll
            for (int j = 0; j < 8; ++j) xs[(kv * 8 + j) * R + r] = f[j];
        } else {
            float4 *dst = reinterpret_cast<float4 *>(xs + r * kChunkK + kv * 8);
            dst[0] = make_float4(f[0], f[1], f[2], f[3]);
            dst[1] = make_float4(f[4], f[5], f[6], f[7]);
        }
    }
}

// Scale and -zero*scale of 4 adjacent columns for the group holding row k.
struct GroupParams {
    float s[4];
    float neg_zs[4];
    int end_k = 0;  // first row past the group: reload when k reaches it
};

template <class T>
__device__ __forceinline__ void load_group_params(GroupParams &gp, const TypedProblem<T> &p, int k, int col) {
    const int g = group_of(k, p.group_size, p.group_shift);
    gp.end_k = (g + 1) * p.group_size;
    const int64_t off = int64_t(g) * p.N + col;  // col % 4 == 0, N % 8 == 0: 8-byte aligned
    const uint2 s = __ldg(reinterpret_cast<const uint2 *>(p.scales + off));
    const uint2 z = __ldg(reinterpret_cast<const uint2 *>(p.zeros + off));
    const float2 s01 = pair_bits_to_float2<T>(s.x), s23 = pair_bits_to_float2<T>(s.y);
    const float2 z01 = pair_bits_to_float2<T>(z.x), z23 = pair_bits_to_float2<T>(z.y);
    const float sf[4] = {s01.x, s01.y, s23.x, s23.y};
    const float zf[4] = {z01.x, z01.y, z23.x, z23.y};
#pragma unroll
    for (int c = 0; c < 4; ++c) {
        gp.s[c] = sf[c];
        gp.neg_zs[c] = -zf[c] * sf[c];  // exact in fp32
    }
}

// acc[r][c] += sum_j x[r][kl + j] * W[k + j, col + c] for one dense word row
// (8 k values, 4 columns).
template <int R>
__device__ __forceinline__ void accumulate_dense_word(float (&acc)[R][4], const uint4 &q, const GroupParams &gp,
                                                      const float *xs, int kl) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        float xv[R][4];
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const float4 v = *reinterpret_cast<const float4 *>(xs + r * kChunkK + kl + 4 * half);
            xv[r][0] = v.x;
            xv[r][1] = v.y;
            xv[r][2] = v.z;
            xv[r][3] = v.w;
        }
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const uint32_t word = component(q, c);
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int shift = 4 * (4 * half + j);
                const float w = fmaf(code_to_float((word >> shift) & 0xFu), gp.s[c], gp.neg_zs[c]);
#pragma unroll
                for (int r = 0; r < R; ++r) acc[r][c] = fmaf(xv[r][j], w, acc[r][c]);
            }
        }
    }
}

// Loads the R values x[0..R-1][k] from the K-major staging buffer.
template <int R>
__device__ __forceinline__ void load_x_column(const float *src, float (&v)[R]) {
    if constexpr (R == 1) {
        v[0] = src[0];
    } else if constexpr (R == 2) {
        const float2 a = *reinterpret_cast<const float2 *>(src);
        v[0] = a.x;
        v[1] = a.y;
    } else {
        static_assert(R % 4 == 0, "R is 1, 2, 4 or 8");
#pragma unroll
        for (int i = 0; i < R / 4; ++i) {
            const float4 a = *reinterpret_cast<const float4 *>(src + 4 * i);
            v[4 * i + 0] = a.x;
            v[4 * i + 1] = a.y;
            v[4 * i + 2] = a.z;
            v[4 * i + 3] = a.w;
        }
    }
}

// One column of one 16:32 block: walk the 16 stored codes in order; the t-th
// code belongs to the t-th set bit of the mask (lowest first).  xs_block is
// the K-major staging of the block's 32 rows.  An invalid mask never indexes
// outside the block: with bits exhausted the weight is 0 and the row index is
// clamped to 0..31; extra bits beyond 16 are ignored.
template <int R, int C>
__device__ __forceinline__ void accumulate_sparse_column(float (&acc)[R][4], uint32_t mask, uint32_t lo, uint32_t hi,
                                                         float s, float neg_zs, const float *xs_block) {
#pragma unroll
    for (int t = 0; t < 16; ++t) {
        const uint32_t q = ((t < 8 ? lo : hi) >> (4 * (t & 7))) & 0xFu;
        const int i = (__ffs(mask) - 1) & 31;  // row of the t-th kept code
        const float w = mask != 0 ? fmaf(code_to_float(q), s, neg_zs) : 0.0f;
        mask &= mask - 1;
        float xv[R];
        load_x_column<R>(xs_block + i * R, xv);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r][C] = fmaf(xv[r], w, acc[r][C]);
    }
}

// Sums the per-lane partials through shared memory and writes y (+ bias) for
// the block's columns.  Must be entered by every thread after a barrier that
// ends all reads of `smem` as the x buffer.
template <int R, int LANES, int BLOCK_COLS, class T>
__device__ __forceinline__ void reduce_and_store(float *smem, const float (&acc)[R][4], const TypedProblem<T> &p,
                                                 int lane, int col_thread, int m0, int n0) {
    float *red = smem;  // [lane][r][BLOCK_COLS]
#pragma unroll
    for (int r = 0; r < R; ++r) {
        *reinterpret_cast<float4 *>(red + (lane * R + r) * BLOCK_COLS + col_thread * 4) =
            make_float4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
    }
    __syncthreads();
    for (int o = threadIdx.x; o < R * BLOCK_COLS; o += kThreads) {
        const int r = o / BLOCK_COLS;
        const int c = o % BLOCK_COLS;
        float sum = 0.0f;
        for (int l = 0; l < LANES; ++l) sum += red[(l * R + r) * BLOCK_COLS + c];
        const int m = m0 + r;
        const int n = n0 + c;
        if (m < p.M && n < p.N) {
            if (p.bias != nullptr) sum += Elem<T>::to_float(p.bias[n]);
            p.y[int64_t(m) * p.ldy + n] = Elem<T>::from_float(sum);
        }
    }
    __syncthreads();  // the next row chunk restages x into the same buffer
}

template <int R, class T>
__global__ void __launch_bounds__(kThreads) small_m_dense_kernel(const TypedProblem<T> p) {
    __shared__ __align__(16) float smem[R * kChunkK];
    const int col_thread = threadIdx.x % kDenseColThreads;
    const int lane = threadIdx.x / kDenseColThreads;
    const int n0 = blockIdx.x * kDenseBlockCols;
    const int col = n0 + col_thread * 4;
    const bool col_ok = col < p.N;  // N % 4 == 0: all 4 columns or none
    const int num_words = p.K / 8;

    for (int rc = blockIdx.y; rc * R < p.M; rc += gridDim.y) {
        const int m0 = rc * R;
        float acc[R][4] = {};
        GroupParams gp{};
        for (int k0 = 0; k0 < p.K; k0 += kChunkK) {
            // Issue this chunk's weight loads first so they fly while x is staged.
            uint4 q[kDenseWordsPerLane];
#pragma unroll
            for (int t = 0; t < kDenseWordsPerLane; ++t) {
                const int word = k0 / 8 + lane * kDenseWordsPerLane + t;
                q[t] = (col_ok && word < num_words) ? load_weight_u4(p.qweight, word, p.N, col)
                                                    : make_uint4(0, 0, 0, 0);
            }
            stage_x_chunk<R, false>(smem, p, m0, k0);
            __syncthreads();
            if (col_ok) {
#pragma unroll
                for (int t = 0; t < kDenseWordsPerLane; ++t) {
                    const int kl = (lane * kDenseWordsPerLane + t) * 8;  // row within the chunk
                    const int k = k0 + kl;
                    if (k < p.K) {
                        if (k >= gp.end_k) load_group_params(gp, p, k, col);  // k only grows
                        accumulate_dense_word<R>(acc, q[t], gp, smem, kl);
                    }
                }
            }
            __syncthreads();
        }
        reduce_and_store<R, kDenseLanes, kDenseBlockCols>(smem, acc, p, lane, col_thread, m0, n0);
    }
}

template <int R, class T>
__global__ void __launch_bounds__(kThreads) small_m_sparse_kernel(const TypedProblem<T> p) {
    __shared__ __align__(16) float smem[R * kChunkK];
    const int col_thread = threadIdx.x % kSparseColThreads;
    const int lane = threadIdx.x / kSparseColThreads;
    const int n0 = blockIdx.x * kSparseBlockCols;
    const int col = n0 + col_thread * 4;
    const bool col_ok = col < p.N;
    const int num_blocks = p.K / 32;

    for (int rc = blockIdx.y; rc * R < p.M; rc += gridDim.y) {
        const int m0 = rc * R;
        float acc[R][4] = {};
        GroupParams gp{};
        for (int k0 = 0; k0 < p.K; k0 += kChunkK) {
            const int b = k0 / 32 + lane;  // this lane's 16:32 block
            const bool b_ok = col_ok && b < num_blocks;
            uint4 mask = make_uint4(0, 0, 0, 0), lo = mask, hi = mask;
            if (b_ok) {
                mask = load_weight_u4(p.mask, b, p.N, col);
                lo = load_weight_u4(p.qweight, 2 * int64_t(b), p.N, col);
                hi = load_weight_u4(p.qweight, 2 * int64_t(b) + 1, p.N, col);
            }
            stage_x_chunk<R, true>(smem, p, m0, k0);
            __syncthreads();
            if (b_ok) {
                const int k = b * 32;  // G % 32 == 0: the whole block is one group
                if (k >= gp.end_k) load_group_params(gp, p, k, col);
                const float *xs_block = smem + lane * 32 * R;
                accumulate_sparse_column<R, 0>(acc, mask.x, lo.x, hi.x, gp.s[0], gp.neg_zs[0], xs_block);
                accumulate_sparse_column<R, 1>(acc, mask.y, lo.y, hi.y, gp.s[1], gp.neg_zs[1], xs_block);
                accumulate_sparse_column<R, 2>(acc, mask.z, lo.z, hi.z, gp.s[2], gp.neg_zs[2], xs_block);
                accumulate_sparse_column<R, 3>(acc, mask.w, lo.w, hi.w, gp.s[3], gp.neg_zs[3], xs_block);
            }
            __syncthreads();
        }
        reduce_and_store<R, kSparseLanes, kSparseBlockCols>(smem, acc, p, lane, col_thread, m0, n0);
    }
}

template <int R, class T>
int4mm_status launch_rows(const TypedProblem<T> &p, cudaStream_t stream) {
    const bool sparse = p.mask != nullptr;
    const int block_cols = sparse ? kSparseBlockCols : kDenseBlockCols;
    const int64_t row_chunks = (int64_t(p.M) + R - 1) / R;
    // grid.y is capped; the kernels loop over the remaining row chunks.
    const dim3 grid(unsigned((p.N + block_cols - 1) / block_cols), unsigned(std::min<int64_t>(row_chunks, 65535)));
    if (sparse) {
        small_m_sparse_kernel<R, T><<<grid, kThreads, 0, stream>>>(p);
        INT4MM_LAUNCH_CHECK("small_m_sparse_kernel launch");
    } else {
        small_m_dense_kernel<R, T><<<grid, kThreads, 0, stream>>>(p);
        INT4MM_LAUNCH_CHECK("small_m_dense_kernel launch");
    }
    return INT4MM_OK;
}

}  // namespace

int4mm_status launch_matmul_small_m_v1(const MatmulProblem &p, cudaStream_t stream) {
    // Rows of x per pass: as few as M needs (no wasted FMAs at M = 1, 2), at
    // most 8 (accumulators live in registers); larger M re-reads the weights
    // once per 8 rows (from L2 when they fit).
    return with_element_type(p.dtype, [&](auto tag) {
        using T = decltype(tag);
        const TypedProblem<T> q = typed<T>(p);
        if (q.M == 1) return launch_rows<1>(q, stream);
        if (q.M == 2) return launch_rows<2>(q, stream);
        if (q.M <= 4) return launch_rows<4>(q, stream);
        return launch_rows<8>(q, stream);
    });
}

}  // namespace int4mm
