// Prepared SMALL_M layout "tiled": the raw dense qweight [K/8, N] rearranged
// so that the v2 tensor-core SMALL_M kernel (matmul_mma_small.cu) streams
// contiguous memory.
//
// The kernel's warp covers 32 columns (a column group cg = n / 32) and reads
// one 32-k slab s (word rows 4s .. 4s+3) per step; lane L = 4g + c takes the
// 16 bytes qweight[4s + c][32 cg + 4g .. 32 cg + 4g + 3].  In the raw layout
// one warp load touches 4 rows x 128 B that are 4N bytes apart.  Here:
//
//   tile (cg, s) = 512 bytes at byte offset (cg * S + s) * 512, S = K / 32;
//   lane L's 16 bytes at offset 16 L inside the tile (same words, same order).
//
// So each warp load is 512 contiguous bytes and a warp that streams slabs
// s0 .. s1 of one column group reads one contiguous region.  Columns past N
// in the last (partial) group are zero.  Size: ceil(N/32) * 32 * K / 2 bytes.
// Requires K % 32 == 0 (the kernel's own condition: group_size % 32 == 0).
#include "matmul_kernels.cuh"

namespace int4mm {
namespace {

// One thread per 16-byte output chunk: reads the 4 words of one raw row (16
// contiguous bytes when the 4 columns are all inside N), writes 16 bytes.
__global__ void prepare_small_m_tiled_kernel(const uint32_t *__restrict__ q, int64_t N, int64_t S, int64_t chunks,
                                             uint4 *__restrict__ out) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < chunks;
         i += int64_t(gridDim.x) * blockDim.x) {
        const int lane = int(i & 31);
        const int64_t tile = i >> 5;  // cg * S + s
        const int64_t cg = tile / S;
        const int64_t s = tile - cg * S;
        const int g = lane >> 2, c = lane & 3;
        const int64_t col = cg * 32 + 4 * g;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (col < N) v = *reinterpret_cast<const uint4 *>(q + (4 * s + c) * N + col);  // N % 8 == 0: all 4 or none
        out[i] = v;
    }
}

}  // namespace

size_t small_m_tiled_bytes(int64_t K, int64_t N) {
    if (K <= 0 || N <= 0 || K % 32 != 0 || N % 8 != 0) return 0;
    return size_t((N + 31) / 32) * 32 * size_t(K) / 2;
}

int4mm_status prepare_small_m_tiled(const uint32_t *qweight, int64_t K, int64_t N, void *out, cudaStream_t s) {
    const size_t bytes = small_m_tiled_bytes(K, N);
    if (bytes == 0)
        return fail(INT4MM_ERR_UNSUPPORTED, "prepare_small_m_tiled: needs K %% 32 == 0 and N %% 8 == 0, got K=%lld N=%lld",
                    (long long)K, (long long)N);
    if (qweight == nullptr || out == nullptr)
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "prepare_small_m_tiled: NULL pointer");
    if (!aligned16(qweight) || !aligned16(out))
        return fail(INT4MM_ERR_INVALID_ARGUMENT, "prepare_small_m_tiled: pointers must be 16-byte aligned");
    const int64_t chunks = int64_t(bytes / 16);
    const int threads = 256;
    const int64_t want = (chunks + threads - 1) / threads;
    const unsigned blocks = unsigned(want < 65536 ? want : 65536);
    prepare_small_m_tiled_kernel<<<blocks, threads, 0, s>>>(qweight, N, K / 32, chunks, static_cast<uint4 *>(out));
    INT4MM_LAUNCH_CHECK("prepare_small_m_tiled launch");
    return INT4MM_OK;
}

}  // namespace int4mm
