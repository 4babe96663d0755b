// Packing and unpacking of the int4 weight formats (shared/FORMATS.md):
//   dense  : qweight int32 [K/8, N], nibble j of word (i, n) = code (8i + j, n)
//   sparse : 16:32 structured; per 32-row block b of column n, mask[b, n] bit i
//            marks row 32b + i as kept, and the p-th kept code (increasing k)
//            sits in nibble p of lo | hi << 32, lo = qweight[2b, n],
//            hi = qweight[2b + 1, n].
//
// Every entry point that can meet bad data works in two passes on its stream:
//   1. a validation kernel finds the first offence: each thread keeps the
//      smallest bad flat index it saw and does one atomicMin into an 8-byte
//      stream-ordered scratch word initialised to all ones;
//   2. the verdict is copied back and the stream synchronized; only a clean
//      verdict launches the kernel that writes outputs.
// So a refused call writes nothing.  Flat indices are row-major: k * N + n
// for codes, b * N + n for blocks.  All index arithmetic is 64-bit and every
// kernel is a grid-stride loop, so K * N beyond 2^31 is fine.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "int4mm.h"

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 8192;
constexpr unsigned long long kNoOffence = ~0ull;

// Block verdicts pack the per-block count of kept weights (0..32, 6 bits)
// under the flat block index, so the first bad block and its count come back
// in one atomic word.
constexpr int kCountBits = 6;

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

// ---- dense ---------------------------------------------------------------------

// Finds the smallest flat index k * N + n whose code exceeds 15.
__global__ void find_bad_code_dense(const uint8_t *__restrict__ codes, int64_t K, int64_t N,
                                    int64_t stride_k, int64_t stride_n,
                                    unsigned long long *__restrict__ verdict) {
    const int64_t total = K * N;
    for (int64_t f = first_index(); f < total; f += grid_stride()) {
        const int64_t k = f / N, n = f - k * N;
        if (codes[k * stride_k + n * stride_n] > 15) {
            // A thread's indices only grow, so its first offence is its least.
            atomicMin(verdict, static_cast<unsigned long long>(f));
            return;
        }
    }
}

// One thread per output word (i, n): gathers codes 8i .. 8i+7 of column n.
__global__ void pack_dense_kernel(const uint8_t *__restrict__ codes, int64_t K, int64_t N,
                                  int64_t stride_k, int64_t stride_n,
                                  int32_t *__restrict__ qweight) {
    const int64_t words = (K / 8) * N;
    for (int64_t w = first_index(); w < words; w += grid_stride()) {
        const int64_t i = w / N, n = w - i * N;
        const uint8_t *src = codes + (8 * i) * stride_k + n * stride_n;
        uint32_t word = 0;
#pragma unroll
        for (int j = 0; j < 8; ++j) word |= static_cast<uint32_t>(src[j * stride_k] & 15u) << (4 * j);
        qweight[w] = static_cast<int32_t>(word);
    }
}

__global__ void unpack_dense_kernel(const int32_t *__restrict__ qweight, int64_t K, int64_t N,
                                    uint8_t *__restrict__ codes) {
    const int64_t words = (K / 8) * N;
    for (int64_t w = first_index(); w < words; w += grid_stride()) {
        const int64_t i = w / N, n = w - i * N;
        const uint32_t word = static_cast<uint32_t>(qweight[w]);
        uint8_t *dst = codes + (8 * i) * N + n;
#pragma unroll
        for (int j = 0; j < 8; ++j) dst[j * N] = static_cast<uint8_t>((word >> (4 * j)) & 15u);
    }
}

// ---- sparse 16:32 ---------------------------------------------------------------

// One thread per block (b, n).  verdict[0]: first block whose keep count is
// not 16 (flat index << kCountBits | count); verdict[1]: first k * N + n whose
// kept code exceeds 15.
__global__ void find_bad_sparse_input(const uint8_t *__restrict__ codes, int64_t codes_sk,
                                      int64_t codes_sn, const uint8_t *__restrict__ keep,
                                      int64_t keep_sk, int64_t keep_sn, int64_t K, int64_t N,
                                      unsigned long long *__restrict__ verdict) {
    const int64_t blocks = (K / 32) * N;
    bool count_reported = false;
    // Blocks (b, n) and (b, n') of one row band interleave in (k, n) order,
    // so the least bad code position is tracked over all of a thread's blocks.
    unsigned long long least_bad_code = kNoOffence;
    for (int64_t t = first_index(); t < blocks; t += grid_stride()) {
        const int64_t b = t / N, n = t - b * N;
        const uint8_t *c = codes + (32 * b) * codes_sk + n * codes_sn;
        const uint8_t *m = keep + (32 * b) * keep_sk + n * keep_sn;
        int kept = 0;
        int first_bad_row = -1;
        for (int i = 0; i < 32; ++i) {
            if (m[i * keep_sk] != 0) {
                ++kept;
                if (first_bad_row < 0 && c[i * codes_sk] > 15) first_bad_row = i;
            }
        }
        // A thread's block indices only grow: its first bad block is its least.
        if (kept != 16 && !count_reported) {
            atomicMin(&verdict[0],
                      (static_cast<unsigned long long>(t) << kCountBits) |
                          static_cast<unsigned long long>(kept));
            count_reported = true;
        }
        if (first_bad_row >= 0) {
            const unsigned long long f =
                static_cast<unsigned long long>((32 * b + first_bad_row) * N + n);
            if (f < least_bad_code) least_bad_code = f;
        }
    }
    if (least_bad_code != kNoOffence) atomicMin(&verdict[1], least_bad_code);
}

__global__ void pack_sparse_kernel(const uint8_t *__restrict__ codes, int64_t codes_sk,
                                   int64_t codes_sn, const uint8_t *__restrict__ keep,
                                   int64_t keep_sk, int64_t keep_sn, int64_t K, int64_t N,
                                   int32_t *__restrict__ qweight, int32_t *__restrict__ mask) {
    const int64_t blocks = (K / 32) * N;
    for (int64_t t = first_index(); t < blocks; t += grid_stride()) {
        const int64_t b = t / N, n = t - b * N;
        const uint8_t *c = codes + (32 * b) * codes_sk + n * codes_sn;
        const uint8_t *m = keep + (32 * b) * keep_sk + n * keep_sn;
        uint32_t bits = 0;
        uint64_t packed = 0;
        int p = 0;
        for (int i = 0; i < 32; ++i) {
            if (m[i * keep_sk] != 0) {
                bits |= 1u << i;
                packed |= static_cast<uint64_t>(c[i * codes_sk] & 15u) << (4 * p);
                ++p;
            }
        }
        qweight[(2 * b) * N + n] = static_cast<int32_t>(static_cast<uint32_t>(packed));
        qweight[(2 * b + 1) * N + n] = static_cast<int32_t>(static_cast<uint32_t>(packed >> 32));
        mask[t] = static_cast<int32_t>(bits);
    }
}

// verdict[0] as in find_bad_sparse_input, for a packed mask.
__global__ void find_bad_mask(const int32_t *__restrict__ mask, int64_t blocks,
                              unsigned long long *__restrict__ verdict) {
    for (int64_t t = first_index(); t < blocks; t += grid_stride()) {
        const int kept = __popc(static_cast<uint32_t>(mask[t]));
        if (kept != 16) {
            atomicMin(verdict, (static_cast<unsigned long long>(t) << kCountBits) |
                                   static_cast<unsigned long long>(kept));
            return;
        }
    }
}

// The 16 kept codes of 32-row block b of column n: lo | hi << 32.
__device__ __forceinline__ uint64_t block_codes(const int32_t *__restrict__ qweight, int64_t b,
                                                int64_t n, int64_t N) {
    return static_cast<uint64_t>(static_cast<uint32_t>(qweight[(2 * b) * N + n])) |
           (static_cast<uint64_t>(static_cast<uint32_t>(qweight[(2 * b + 1) * N + n])) << 32);
}

__global__ void unpack_sparse_kernel(const int32_t *__restrict__ qweight,
                                     const int32_t *__restrict__ mask, int64_t K, int64_t N,
                                     uint8_t *__restrict__ codes, uint8_t *__restrict__ keep) {
    const int64_t blocks = (K / 32) * N;
    for (int64_t t = first_index(); t < blocks; t += grid_stride()) {
        const int64_t b = t / N, n = t - b * N;
        const uint32_t bits = static_cast<uint32_t>(mask[t]);
        const uint64_t packed = block_codes(qweight, b, n, N);
        uint8_t *c = codes + (32 * b) * N + n;
        uint8_t *m = keep + (32 * b) * N + n;
        int p = 0;
        for (int i = 0; i < 32; ++i) {
            const bool kept = (bits >> i) & 1u;
            c[i * N] = kept ? static_cast<uint8_t>((packed >> (4 * p)) & 15u) : 0;
            m[i * N] = kept ? 1 : 0;
            p += kept;
        }
    }
}

// ---- sparse -> dense equivalent ------------------------------------------------------

// A zero point (16-bit `dtype` bits) as float.
__device__ __forceinline__ float zero_value(const uint16_t *zeros, int64_t i, int dtype) {
    const uint16_t v = zeros[i];
    if (dtype == INT4MM_DTYPE_BF16) return __uint_as_float(static_cast<uint32_t>(v) << 16);
    return __half2float(__ushort_as_half(v));
}

// verdict[0] = the smallest flat index of a zero point that is not an integer
// in 0..15 (NaN included).
__global__ void find_fractional_zero(const uint16_t *__restrict__ zeros, int64_t count, int dtype,
                                     unsigned long long *__restrict__ verdict) {
    for (int64_t t = first_index(); t < count; t += grid_stride()) {
        const float z = zero_value(zeros, t, dtype);
        if (!(z >= 0.0f && z <= 15.0f && z == rintf(z))) {
            atomicMin(verdict, static_cast<unsigned long long>(t));
            return;
        }
    }
}

// One thread per (32-row block b, column n): the four dense words of rows
// 32b .. 32b + 31, pruned rows coded as the block's (integral) zero point.
// Rank p wraps at 16, so a bad mask block cannot read past its 64 bits.
__global__ void sparse_to_dense_kernel(const int32_t *__restrict__ qweight,
                                       const int32_t *__restrict__ mask,
                                       const uint16_t *__restrict__ zeros, int dtype, int64_t K,
                                       int64_t N, int64_t group_size, int32_t *__restrict__ dense) {
    const int64_t blocks = (K / 32) * N;
    for (int64_t t = first_index(); t < blocks; t += grid_stride()) {
        const int64_t b = t / N, n = t - b * N;
        const uint32_t bits = static_cast<uint32_t>(mask[t]);
        const uint64_t packed = block_codes(qweight, b, n, N);
        const uint32_t zc =
            static_cast<uint32_t>(zero_value(zeros, ((32 * b) / group_size) * N + n, dtype)) & 15u;
        int p = 0;
        for (int j = 0; j < 4; ++j) {
            uint32_t word = 0;
            for (int i = 0; i < 8; ++i) {
                uint32_t code = zc;
                if ((bits >> (8 * j + i)) & 1u) {
                    code = static_cast<uint32_t>(packed >> (4 * (p & 15))) & 15u;
                    ++p;
                }
                word |= code << (4 * i);
            }
            dense[(4 * b + j) * N + n] = static_cast<int32_t>(word);
        }
    }
}

// ---- host helpers ------------------------------------------------------------------

// A few verdict words in stream-ordered memory, set to all ones on creation
// and released (stream-ordered) on scope exit.
class Verdict {
  public:
    explicit Verdict(cudaStream_t stream) : stream_(stream) {}
    ~Verdict() {
        if (words_ != nullptr) {
            if (async_) cudaFreeAsync(words_, stream_);
            else cudaFree(words_);
        }
    }
    Verdict(const Verdict &) = delete;
    Verdict &operator=(const Verdict &) = delete;

    int4mm_status create(int count) {
        count_ = count;
        const size_t bytes = sizeof(unsigned long long) * count;
        cudaError_t e = cudaMallocAsync(reinterpret_cast<void **>(&words_), bytes, stream_);
        if (e == cudaErrorNotSupported) {
            // A device without stream-ordered allocation: plain malloc.
            cudaGetLastError();
            async_ = false;
            e = cudaMalloc(reinterpret_cast<void **>(&words_), bytes);
        }
        if (e != cudaSuccess) {
            words_ = nullptr;
            return int4mm::fail_cuda(e, "allocating the validation verdict");
        }
        INT4MM_CUDA_TRY(cudaMemsetAsync(words_, 0xff, bytes, stream_));
        return INT4MM_OK;
    }

    unsigned long long *device_words() { return words_; }

    // Copies the verdict to `host` and waits for the stream.
    int4mm_status read(unsigned long long *host) {
        INT4MM_CUDA_TRY(cudaMemcpyAsync(host, words_, sizeof(unsigned long long) * count_,
                                        cudaMemcpyDeviceToHost, stream_));
        INT4MM_CUDA_TRY(cudaStreamSynchronize(stream_));
        return INT4MM_OK;
    }

  private:
    cudaStream_t stream_;
    unsigned long long *words_ = nullptr;
    int count_ = 0;
    bool async_ = true;
};

bool aligned4(const void *p) { return (reinterpret_cast<uintptr_t>(p) & 3u) == 0; }

int4mm_status check_dims(const char *fn, int64_t K, int64_t N, int64_t k_multiple) {
    if (K < 0 || N < 0)
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: K=%lld and N=%lld must be >= 0", fn,
                            static_cast<long long>(K), static_cast<long long>(N));
    if (K % k_multiple != 0)
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: K=%lld must be a multiple of %lld",
                            fn, static_cast<long long>(K), static_cast<long long>(k_multiple));
    if (N > 0 && K > INT64_MAX / N)
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: K*N overflows", fn);
    return INT4MM_OK;
}

int4mm_status check_ptr(const char *fn, const char *name, const void *p, bool need_aligned4) {
    if (p == nullptr) return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, name);
    if (need_aligned4 && !aligned4(p))
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT,
                            "%s: %s (int32) is not 4-byte aligned", fn, name);
    return INT4MM_OK;
}

void split_block_verdict(unsigned long long v, int64_t N, int64_t *bad_k, int64_t *bad_n,
                         int *bad_count) {
    const int64_t t = static_cast<int64_t>(v >> kCountBits);
    *bad_k = 32 * (t / N);
    *bad_n = t % N;
    *bad_count = static_cast<int>(v & ((1u << kCountBits) - 1));
}

int4mm_status refuse_block(const char *fn, int64_t bad_k, int64_t bad_n, int bad_count) {
    return int4mm::fail(INT4MM_ERR_BAD_DATA,
                        "%s: block %lld of column %lld (rows %lld..%lld) keeps %d weights; every "
                        "32-row block must keep exactly 16",
                        fn, static_cast<long long>(bad_k / 32), static_cast<long long>(bad_n),
                        static_cast<long long>(bad_k), static_cast<long long>(bad_k + 31),
                        bad_count);
}

// Shared by unpack_sparse and validate_sparse_mask: checks every mask block.
// Leaves *clean true when all blocks keep 16.
int4mm_status check_mask_blocks(const char *fn, const int32_t *mask, int64_t K, int64_t N,
                                cudaStream_t stream, bool *clean, int64_t *bad_k, int64_t *bad_n,
                                int *bad_count) {
    *clean = true;
    const int64_t blocks = (K / 32) * N;
    Verdict verdict(stream);
    if (int4mm_status s = verdict.create(1)) return s;
    find_bad_mask<<<grid_for(blocks), kThreads, 0, stream>>>(mask, blocks, verdict.device_words());
    INT4MM_LAUNCH_CHECK("find_bad_mask launch");
    unsigned long long v = kNoOffence;
    if (int4mm_status s = verdict.read(&v)) return s;
    if (v != kNoOffence) {
        *clean = false;
        split_block_verdict(v, N, bad_k, bad_n, bad_count);
        return refuse_block(fn, *bad_k, *bad_n, *bad_count);
    }
    return INT4MM_OK;
}

}  // namespace

using int4mm::clear_error;
using int4mm::DeviceGuard;

extern "C" {

int4mm_status int4mm_pack_dense(const uint8_t *codes, int64_t K, int64_t N, int64_t stride_k,
                                int64_t stride_n, int32_t *qweight, int device, uintptr_t stream,
                                int64_t *bad_k, int64_t *bad_n) {
    static const char fn[] = "int4mm_pack_dense";
    clear_error();
    if (bad_k) *bad_k = -1;
    if (bad_n) *bad_n = -1;
    if (int4mm_status s = check_dims(fn, K, N, 8)) return s;
    if (K == 0 || N == 0) return INT4MM_OK;
    if (int4mm_status s = check_ptr(fn, "codes", codes, false)) return s;
    if (int4mm_status s = check_ptr(fn, "qweight", qweight, true)) return s;
    DeviceGuard guard;
    if (int4mm_status s = guard.enter(device)) return s;
    cudaStream_t st = int4mm::as_stream(stream);

    Verdict verdict(st);
    if (int4mm_status s = verdict.create(1)) return s;
    find_bad_code_dense<<<grid_for(K * N), kThreads, 0, st>>>(codes, K, N, stride_k, stride_n,
                                                              verdict.device_words());
    INT4MM_LAUNCH_CHECK("find_bad_code_dense launch");
    unsigned long long v = kNoOffence;
    if (int4mm_status s = verdict.read(&v)) return s;
    if (v != kNoOffence) {
        const int64_t f = static_cast<int64_t>(v);
        if (bad_k) *bad_k = f / N;
        if (bad_n) *bad_n = f % N;
        return int4mm::fail(INT4MM_ERR_BAD_DATA, "%s: code at [k=%lld, n=%lld] is above 15", fn,
                            static_cast<long long>(f / N), static_cast<long long>(f % N));
    }
    pack_dense_kernel<<<grid_for((K / 8) * N), kThreads, 0, st>>>(codes, K, N, stride_k,
                                                                  stride_n, qweight);
    INT4MM_LAUNCH_CHECK("pack_dense_kernel launch");
    return INT4MM_OK;
}

int4mm_status int4mm_unpack_dense(const int32_t *qweight, int64_t K, int64_t N, uint8_t *codes,
                                  int device, uintptr_t stream) {
    static const char fn[] = "int4mm_unpack_dense";
    clear_error();
    if (int4mm_status s = check_dims(fn, K, N, 8)) return s;
    if (K == 0 || N == 0) return INT4MM_OK;
    if (int4mm_status s = check_ptr(fn, "qweight", qweight, true)) return s;
    if (int4mm_status s = check_ptr(fn, "codes", codes, false)) return s;
    DeviceGuard guard;
    if (int4mm_status s = guard.enter(device)) return s;
    cudaStream_t st = int4mm::as_stream(stream);
    unpack_dense_kernel<<<grid_for((K / 8) * N), kThreads, 0, st>>>(qweight, K, N, codes);
    INT4MM_LAUNCH_CHECK("unpack_dense_kernel launch");
    return INT4MM_OK;
}

int4mm_status int4mm_pack_sparse(const uint8_t *codes, int64_t codes_stride_k,
                                 int64_t codes_stride_n, const uint8_t *keep,
                                 int64_t keep_stride_k, int64_t keep_stride_n, int64_t K,
                                 int64_t N, int32_t *qweight, int32_t *mask, int device,
                                 uintptr_t stream, int *bad_reason, int64_t *bad_k,
                                 int64_t *bad_n, int *bad_count) {
    static const char fn[] = "int4mm_pack_sparse";
    clear_error();
    if (bad_reason) *bad_reason = 0;
    if (bad_k) *bad_k = -1;
    if (bad_n) *bad_n = -1;
    if (bad_count) *bad_count = -1;
    if (int4mm_status s = check_dims(fn, K, N, 32)) return s;
    if (K == 0 || N == 0) return INT4MM_OK;
    if (int4mm_status s = check_ptr(fn, "codes", codes, false)) return s;
    if (int4mm_status s = check_ptr(fn, "keep", keep, false)) return s;
    if (int4mm_status s = check_ptr(fn, "qweight", qweight, true)) return s;
    if (int4mm_status s = check_ptr(fn, "mask", mask, true)) return s;
    DeviceGuard guard;
    if (int4mm_status s = guard.enter(device)) return s;
    cudaStream_t st = int4mm::as_stream(stream);

    const int64_t blocks = (K / 32) * N;
    Verdict verdict(st);
    if (int4mm_status s = verdict.create(2)) return s;
    find_bad_sparse_input<<<grid_for(blocks), kThreads, 0, st>>>(
        codes, codes_stride_k, codes_stride_n, keep, keep_stride_k, keep_stride_n, K, N,
        verdict.device_words());
    INT4MM_LAUNCH_CHECK("find_bad_sparse_input launch");
    unsigned long long v[2] = {kNoOffence, kNoOffence};
    if (int4mm_status s = verdict.read(v)) return s;
    // A block that does not keep 16 is reported before any bad code.
    if (v[0] != kNoOffence) {
        int64_t k = 0, n = 0;
        int count = 0;
        split_block_verdict(v[0], N, &k, &n, &count);
        if (bad_reason) *bad_reason = 1;
        if (bad_k) *bad_k = k;
        if (bad_n) *bad_n = n;
        if (bad_count) *bad_count = count;
        return refuse_block(fn, k, n, count);
    }
    if (v[1] != kNoOffence) {
        const int64_t f = static_cast<int64_t>(v[1]);
        if (bad_reason) *bad_reason = 2;
        if (bad_k) *bad_k = f / N;
        if (bad_n) *bad_n = f % N;
        return int4mm::fail(INT4MM_ERR_BAD_DATA, "%s: kept code at [k=%lld, n=%lld] is above 15",
                            fn, static_cast<long long>(f / N), static_cast<long long>(f % N));
    }
    pack_sparse_kernel<<<grid_for(blocks), kThreads, 0, st>>>(
        codes, codes_stride_k, codes_stride_n, keep, keep_stride_k, keep_stride_n, K, N, qweight,
        mask);
    INT4MM_LAUNCH_CHECK("pack_sparse_kernel launch");
    return INT4MM_OK;
}

int4mm_status int4mm_unpack_sparse(const int32_t *qweight, const int32_t *mask, int64_t K,
                                   int64_t N, uint8_t *codes, uint8_t *keep, int device,
                                   uintptr_t stream, int *bad_reason, int64_t *bad_k,
                                   int64_t *bad_n, int *bad_count) {
    static const char fn[] = "int4mm_unpack_sparse";
    clear_error();
    if (bad_reason) *bad_reason = 0;
    if (bad_k) *bad_k = -1;
    if (bad_n) *bad_n = -1;
    if (bad_count) *bad_count = -1;
    if (int4mm_status s = check_dims(fn, K, N, 32)) return s;
    if (K == 0 || N == 0) return INT4MM_OK;
    if (int4mm_status s = check_ptr(fn, "qweight", qweight, true)) return s;
    if (int4mm_status s = check_ptr(fn, "mask", mask, true)) return s;
    if (int4mm_status s = check_ptr(fn, "codes", codes, false)) return s;
    if (int4mm_status s = check_ptr(fn, "keep", keep, false)) return s;
    DeviceGuard guard;
    if (int4mm_status s = guard.enter(device)) return s;
    cudaStream_t st = int4mm::as_stream(stream);

    bool clean = true;
    int64_t k = -1, n = -1;
    int count = -1;
    int4mm_status s = check_mask_blocks(fn, mask, K, N, st, &clean, &k, &n, &count);
    if (!clean) {
        if (bad_reason) *bad_reason = 1;
        if (bad_k) *bad_k = k;
        if (bad_n) *bad_n = n;
        if (bad_count) *bad_count = count;
    }
    if (s != INT4MM_OK) return s;
    unpack_sparse_kernel<<<grid_for((K / 32) * N), kThreads, 0, st>>>(qweight, mask, K, N, codes,
                                                                      keep);
    INT4MM_LAUNCH_CHECK("unpack_sparse_kernel launch");
    return INT4MM_OK;
}

int4mm_status int4mm_validate_sparse_mask(const int32_t *mask, int64_t K, int64_t N, int device,
                                          uintptr_t stream, int64_t *bad_k, int64_t *bad_n,
                                          int *bad_count) {
    static const char fn[] = "int4mm_validate_sparse_mask";
    clear_error();
    if (bad_k) *bad_k = -1;
    if (bad_n) *bad_n = -1;
    if (bad_count) *bad_count = -1;
    if (int4mm_status s = check_dims(fn, K, N, 32)) return s;
    if (K == 0 || N == 0) return INT4MM_OK;
    if (int4mm_status s = check_ptr(fn, "mask", mask, true)) return s;
    DeviceGuard guard;
    if (int4mm_status s = guard.enter(device)) return s;
    bool clean = true;
    int64_t k = -1, n = -1;
    int count = -1;
    int4mm_status s =
        check_mask_blocks(fn, mask, K, N, int4mm::as_stream(stream), &clean, &k, &n, &count);
    if (!clean) {
        if (bad_k) *bad_k = k;
        if (bad_n) *bad_n = n;
        if (bad_count) *bad_count = count;
    }
    return s;
}

int4mm_status int4mm_sparse_to_dense(const int32_t *qweight, const int32_t *mask, const void *zeros,
                                     int dtype, int64_t K, int64_t N, int64_t group_size,
                                     int32_t *dense, int device, uintptr_t stream, int *exact,
                                     int64_t *bad_g, int64_t *bad_n) {
    static const char fn[] = "int4mm_sparse_to_dense";
    clear_error();
    if (exact) *exact = 0;
    if (bad_g) *bad_g = -1;
    if (bad_n) *bad_n = -1;
    if (exact == nullptr) return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: exact is NULL", fn);
    if (int4mm_status s = check_dims(fn, K, N, 32)) return s;
    if (dtype != INT4MM_DTYPE_FP16 && dtype != INT4MM_DTYPE_BF16)
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: dtype must be FP16 (%d) or BF16 (%d), got %d",
                            fn, INT4MM_DTYPE_FP16, INT4MM_DTYPE_BF16, dtype);
    if (group_size < 32 || group_size % 32 != 0 || (K > 0 && K % group_size != 0))
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT,
                            "%s: group_size=%lld must be a multiple of 32 that divides K=%lld", fn,
                            static_cast<long long>(group_size), static_cast<long long>(K));
    if (K == 0 || N == 0) {
        *exact = 1;
        return INT4MM_OK;
    }
    if (int4mm_status s = check_ptr(fn, "qweight", qweight, true)) return s;
    if (int4mm_status s = check_ptr(fn, "mask", mask, true)) return s;
    if (int4mm_status s = check_ptr(fn, "zeros", zeros, false)) return s;
    if (int4mm_status s = check_ptr(fn, "dense", dense, true)) return s;
    if ((reinterpret_cast<uintptr_t>(zeros) & 1u) != 0)
        return int4mm::fail(INT4MM_ERR_INVALID_ARGUMENT, "%s: zeros is not 2-byte aligned", fn);
    DeviceGuard guard;
    if (int4mm_status s = guard.enter(device)) return s;
    cudaStream_t st = int4mm::as_stream(stream);
    const uint16_t *z = static_cast<const uint16_t *>(zeros);
    const int64_t count = (K / group_size) * N;

    Verdict verdict(st);
    if (int4mm_status s = verdict.create(1)) return s;
    find_fractional_zero<<<grid_for(count), kThreads, 0, st>>>(z, count, dtype, verdict.device_words());
    INT4MM_LAUNCH_CHECK("find_fractional_zero launch");
    unsigned long long v = kNoOffence;
    if (int4mm_status s = verdict.read(&v)) return s;
    if (v != kNoOffence) {
        if (bad_g) *bad_g = static_cast<int64_t>(v) / N;
        if (bad_n) *bad_n = static_cast<int64_t>(v) % N;
        return INT4MM_OK;
    }
    sparse_to_dense_kernel<<<grid_for((K / 32) * N), kThreads, 0, st>>>(qweight, mask, z, dtype, K, N,
                                                                        group_size, dense);
    INT4MM_LAUNCH_CHECK("sparse_to_dense_kernel launch");
    *exact = 1;
    return INT4MM_OK;
}

}  // extern "C"
