/*
 * int4mm C ABI: the only interface between the CUDA kernels and the Cython
 * bridge.  Plain C, POD structs, integer status codes.  Nothing here knows
 * about Python; nothing in the bridge knows about tiles or launch shapes.
 *
 * Conventions
 * -----------
 * - Shapes follow shared/FORMATS.md: y[M, N] = x[M, K] @ W[K, N] (+ bias[N]).
 * - Every device pointer handed to a kernel entry point is 16-byte aligned
 *   (the Python layer checks this before calling; entry points re-check and
 *   return INT4MM_ERR_INVALID_ARGUMENT rather than launch on bad input).
 * - `stream` is a cudaStream_t carried as an integer (0 = legacy default,
 *   1 = legacy default, 2 = per-thread default, as in CAI v3).
 * - `device` is the CUDA ordinal that owns every array of the call.  Entry
 *   points make it current for the call and restore the caller's device.
 * - No entry point synchronizes the device.  Matmul never synchronizes at all;
 *   pack entry points synchronize only their own stream, because they must
 *   read a validation verdict back before writing any output.
 * - On failure an entry point returns a non-zero status and records a
 *   human-readable message retrievable (per host thread) with
 *   int4mm_last_error_message().
 */
#ifndef INT4MM_H_
#define INT4MM_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum int4mm_status {
    INT4MM_OK = 0,
    INT4MM_ERR_INVALID_ARGUMENT = 1, /* shape/alignment/pointer rule broken */
    INT4MM_ERR_CUDA = 2,             /* a CUDA runtime call failed; see int4mm_last_cuda_error() */
    INT4MM_ERR_UNSUPPORTED = 3,      /* no kernel in this build for this GPU/config */
    INT4MM_ERR_NO_DEVICE = 4,        /* no driver, driver too old, or no GPU */
    INT4MM_ERR_BAD_DATA = 5          /* data-dependent check failed (bad code / mask block) */
} int4mm_status;

/* ---- errors ------------------------------------------------------------ */

/* Message of the last failure on this host thread ("" if none). */
const char *int4mm_last_error_message(void);
/* cudaError_t value of the last CUDA failure on this host thread (0 if none). */
int int4mm_last_cuda_error(void);
/* cudaGetErrorName() of that error ("" if none). */
const char *int4mm_last_cuda_error_name(void);

/* ---- build and runtime facts ------------------------------------------- */

/* CUDART_VERSION the library was compiled against, e.g. 13000. */
int int4mm_cuda_runtime_version(void);
/* Space-separated list of compiled targets, e.g. "sm_80 sm_90a compute_90a". */
const char *int4mm_compiled_targets(void);
/* Driver's CUDA version (cudaDriverGetVersion); 0 when no driver is loaded. */
int4mm_status int4mm_driver_version(int *version);
int4mm_status int4mm_device_count(int *count);

typedef struct int4mm_device_info {
    char name[256];
    int major, minor;           /* compute capability */
    int multiprocessor_count;
    int l2_cache_bytes;
    int max_shared_per_block_optin;
    int64_t total_memory_bytes;
    int memory_clock_khz;      /* 0 when the runtime no longer reports it */
    int sm_clock_khz;          /* 0 when the runtime no longer reports it */
    int kernels_loadable;      /* 1: this build has code the GPU can run */
} int4mm_device_info;

int4mm_status int4mm_get_device_info(int device, int4mm_device_info *info);

/* ---- memory and streams (used by the bridge; no kernels) ---------------- */

enum {
    INT4MM_MEM_HOST = 0,       /* unregistered host memory or unknown pointer */
    INT4MM_MEM_HOST_PINNED = 1,
    INT4MM_MEM_DEVICE = 2,
    INT4MM_MEM_MANAGED = 3
};
/* Where `ptr` lives: *kind is one of INT4MM_MEM_*, *device the owning ordinal
 * (-1 for host memory).  Unknown pointers are reported as host memory. */
int4mm_status int4mm_pointer_info(const void *ptr, int *kind, int *device);

int4mm_status int4mm_malloc(int device, size_t bytes, void **ptr);
int4mm_status int4mm_free(int device, void *ptr);
/* Blocking copies on `stream` (the stream is synchronized; used for small
 * host<->device transfers by the library-owned array type and by tests). */
int4mm_status int4mm_memcpy_d2h(int device, void *dst, const void *src, size_t bytes, uintptr_t stream);
int4mm_status int4mm_memcpy_h2d(int device, void *dst, const void *src, size_t bytes, uintptr_t stream);
int4mm_status int4mm_memset_async(int device, void *dst, int value, size_t bytes, uintptr_t stream);
/* Make `waiter` wait for the work queued so far on `producer` without
 * blocking the host (event record + stream wait).  No-op if equal. */
int4mm_status int4mm_stream_wait(int device, uintptr_t waiter, uintptr_t producer);
int4mm_status int4mm_stream_synchronize(int device, uintptr_t stream);

/* ---- matrix multiplication --------------------------------------------- */

enum {
    INT4MM_PATH_AUTO = 0,
    INT4MM_PATH_SMALL_M = 1,   /* CUDA-core / matrix-vector style, decode */
    INT4MM_PATH_LARGE_M = 2    /* tensor-core GEMM, prefill */
};

/* Element type of activations, outputs, scales, zeros and bias (one type for
 * all five in a call; see int4mm_cast for converting scales). */
enum {
    INT4MM_DTYPE_FP16 = 0,     /* IEEE half */
    INT4MM_DTYPE_BF16 = 1      /* bfloat16 */
};

/* y[M, N] = x[M, K] @ W[K, N] + bias[N]
 * W is dense (mask == NULL, qweight [K/8, N]) or 16:32 sparse
 * (mask [K/32, N], qweight [K/16, N]); see shared/FORMATS.md.
 * scales and zeros are [K/group_size, N] (group_size == K: per channel). */
typedef struct int4mm_matmul_args {
    const void *x;        /* [M, K], row stride ldx elements (ldx >= K, ldx % 8 == 0) */
    const int32_t *qweight;
    const int32_t *mask;  /* NULL: dense */
    const void *scales;
    const void *zeros;
    const void *bias;     /* NULL: no bias */
    void *y;              /* [M, N], row stride ldy elements (ldy >= N, ldy % 8 == 0) */
    int64_t ldx, ldy;
    int64_t M, N, K;
    int64_t group_size;   /* divides K; multiple of 8 (dense) or 32 (sparse) */
    int dtype;            /* INT4MM_DTYPE_* */
    int path;             /* INT4MM_PATH_*; AUTO picks by measured heuristics */
    int device;
    uintptr_t stream;
    /* Optional kernel-specific copy of the weights made by int4mm_prepare()
     * (NULL: none).  Kernels that can read `layout` use it; every other
     * kernel keeps reading the raw arrays above, which must stay valid. */
    const void *prepared;
    int layout;           /* INT4MM_LAYOUT_* of `prepared` */
} int4mm_matmul_args;

/* Enqueue the multiplication; never synchronizes.  M == 0 is a no-op. */
int4mm_status int4mm_matmul(const int4mm_matmul_args *args);
/* Which path int4mm_matmul would take for these arguments (no launch). */
int int4mm_matmul_chosen_path(const int4mm_matmul_args *args);
/* The decode kernel's configuration int4mm_matmul would launch for these
 * arguments (no launch; pointers are only tested against NULL, x taken as
 * 16-byte aligned when args->x is NULL): config[0..5] = nb (16-column weight
 * blocks per CTA), mt (groups of 8 rows of x per CTA), u (k16 steps per
 * chunk), wk (warps per CTA), ks (CTAs of a cluster splitting K), stages (0:
 * register ring, else shared-memory ring slots).  All zero when another
 * kernel would run.  May query the device (occupancy, once per config). */
int4mm_status int4mm_matmul_decode_config(const int4mm_matmul_args *args, int *config);

/* ---- prepared layouts ---------------------------------------------------- */

/* Bit flags: a prepared buffer holds one section per set bit (see
 * src/cuda/prepared_layout.cuh for the arrangement). */
enum {
    INT4MM_LAYOUT_NONE = 0,          /* raw formats only */
    INT4MM_LAYOUT_SM90_WGMMA = 1,    /* Hopper wgmma mixed-input path (dense) */
    INT4MM_LAYOUT_SMALL_M_TILED = 2, /* decode / mid-M tensor-core path (dense) */
    /* Not a section: set by the caller on a 16:32 sparse weight whose sections
     * were made (int4mm_prepare, mask NULL) from its exact dense equivalent
     * (int4mm_sparse_to_dense).  int4mm_matmul then runs the kernels that read
     * those sections as for a dense weight, and every other kernel on the
     * sparse raw arrays (qweight, mask), which stay the weight's truth. */
    INT4MM_LAYOUT_SPARSE_AS_DENSE = 4
};

/* The layouts int4mm_prepare() would produce for this weight on `device`
 * (INT4MM_LAYOUT_NONE when no kernel wants one) and the bytes of device
 * memory they need together.  Never fails for lack of a layout.  sparse != 0
 * gives INT4MM_LAYOUT_NONE: a 16:32 weight gets the layouts of its dense
 * equivalent instead (see int4mm_sparse_to_dense). */
int4mm_status int4mm_prepared_layout(int device, int64_t K, int64_t N, int64_t group_size,
                                     int sparse, int *layout, size_t *bytes);

/* Converts raw weights (as in int4mm_matmul_args) into `layout`, written to
 * `prepared` (`bytes` from int4mm_prepared_layout, 16-byte aligned).
 * scales and zeros hold `dtype` (INT4MM_DTYPE_*); the prepared buffer serves
 * only matmul calls of that dtype (the caller keeps track: the buffer does
 * not record it).  Enqueued on `stream`; does not synchronize. */
int4mm_status int4mm_prepare(int layout, const int32_t *qweight, const int32_t *mask,
                             const void *scales, const void *zeros, int dtype, int64_t K, int64_t N,
                             int64_t group_size, void *prepared, size_t bytes,
                             int device, uintptr_t stream);

/* ---- packing ----------------------------------------------------------- */

/* codes: uint8 [K, N] with element strides (stride_k, stride_n), values 0..15
 * -> qweight int32 [K/8, N] (contiguous).  K % 8 == 0.
 * If any code exceeds 15 nothing is written, INT4MM_ERR_BAD_DATA is returned
 * and *bad_k, *bad_n name the first offending element (row-major order). */
int4mm_status int4mm_pack_dense(const uint8_t *codes, int64_t K, int64_t N,
                                int64_t stride_k, int64_t stride_n,
                                int32_t *qweight, int device, uintptr_t stream,
                                int64_t *bad_k, int64_t *bad_n);

/* qweight int32 [K/8, N] -> codes uint8 [K, N] (contiguous).  Never fails on data. */
int4mm_status int4mm_unpack_dense(const int32_t *qweight, int64_t K, int64_t N,
                                  uint8_t *codes, int device, uintptr_t stream);

/* codes, keep: uint8 [K, N] with element strides; keep != 0 marks a kept weight.
 * -> qweight int32 [K/16, N], mask int32 [K/32, N] (contiguous).  K % 32 == 0.
 * Refuses (INT4MM_ERR_BAD_DATA, nothing written):
 *   *bad_reason = 1: block (k0 = 32*b, n) keeps *bad_count weights instead of 16;
 *   *bad_reason = 2: kept code at (k, n) exceeds 15.
 * The first offence in (block, column) / (k, n) row-major order is reported;
 * *bad_k is the first row of the block for reason 1. */
int4mm_status int4mm_pack_sparse(const uint8_t *codes, int64_t codes_stride_k, int64_t codes_stride_n,
                                 const uint8_t *keep, int64_t keep_stride_k, int64_t keep_stride_n,
                                 int64_t K, int64_t N,
                                 int32_t *qweight, int32_t *mask, int device, uintptr_t stream,
                                 int *bad_reason, int64_t *bad_k, int64_t *bad_n, int *bad_count);

/* qweight int32 [K/16, N], mask int32 [K/32, N] -> codes uint8 [K, N] (0 where
 * pruned), keep uint8 [K, N] (1 kept, 0 pruned), both contiguous.
 * Refuses a mask block whose popcount is not 16 like int4mm_pack_sparse
 * (reason 1), writing nothing. */
int4mm_status int4mm_unpack_sparse(const int32_t *qweight, const int32_t *mask, int64_t K, int64_t N,
                                   uint8_t *codes, uint8_t *keep, int device, uintptr_t stream,
                                   int *bad_reason, int64_t *bad_k, int64_t *bad_n, int *bad_count);

/* The dense qweight int32 [K/8, N] (contiguous) of the same matrix as a 16:32
 * sparse weight (qweight [K/16, N], mask [K/32, N]) whose zero points are all
 * integers in 0..15: a pruned weight gets code = its zero point, so
 * (code - zero) * scale is exactly 0 and a dense kernel computes the sparse
 * product exactly.  zeros: [K/group_size, N] of `dtype` (INT4MM_DTYPE_*);
 * group_size divides K and is a multiple of 32.  Synchronizes `stream`.
 * *exact = 1: every zero point is such an integer and `dense` is written.
 * *exact = 0: *bad_g, *bad_n name the first (row-major) zero point that is
 * not, and nothing is written.  A mask block that does not keep exactly 16
 * gives unspecified codes for its column block (never an out-of-bounds read). */
int4mm_status int4mm_sparse_to_dense(const int32_t *qweight, const int32_t *mask, const void *zeros,
                                     int dtype, int64_t K, int64_t N, int64_t group_size,
                                     int32_t *dense, int device, uintptr_t stream, int *exact,
                                     int64_t *bad_g, int64_t *bad_n);

/* Checks every mask block has popcount 16 (synchronizes `stream`).
 * Returns INT4MM_ERR_BAD_DATA naming the first bad block as above. */
int4mm_status int4mm_validate_sparse_mask(const int32_t *mask, int64_t K, int64_t N,
                                          int device, uintptr_t stream,
                                          int64_t *bad_k, int64_t *bad_n, int *bad_count);

/* ---- quantization (src/cuda/quantize.cu) ------------------------------- */

/* Round-to-nearest asymmetric 4-bit quantization of weight [K, N] (element
 * strides stride_k, stride_n; dtype INT4MM_DTYPE_FP16 or _BF16) in groups of
 * group_size rows, written straight into the packed formats:
 *   dense  (sparse == 0): qweight int32 [K/8, N]; mask unused (may be NULL);
 *   sparse (sparse != 0): first keeps the 16 largest |w| of every aligned
 *          32-row block of each column (ties: lower row), then quantizes
 *          each group over its kept weights: qweight [K/16, N], mask [K/32, N];
 * scales, zeros: [K/group_size, N] of the weight's dtype (contiguous, like
 *          qweight and mask).
 * group_size divides K and is a multiple of 8 (dense) or 32 (sparse).
 * Per (group, column), in fp32 with explicit rounding (bit-exact with
 * int4mm.reference.quantize_rtn):
 *   lo = min(0, min w), hi = max(0, max w); lo == hi -> lo = -1, hi = 1;
 *   scale = dtype round-to-nearest-even((hi - lo) / 15) (0 -> smallest subnormal);
 *   zero = clamp(rint(-lo / scale), 0, 15);  code = clamp(rint(w / scale) + zero, 0, 15);
 * rint rounds half to even.  A non-finite weight is refused with
 * INT4MM_ERR_BAD_DATA before anything is written, *bad_k/*bad_n naming the
 * first one (row-major); that check synchronizes `stream`. */
int4mm_status int4mm_quantize_rtn(const void *weight, int64_t stride_k, int64_t stride_n,
                                  int dtype, int64_t K, int64_t N, int64_t group_size,
                                  int sparse, int32_t *qweight, int32_t *mask,
                                  void *scales, void *zeros, int device, uintptr_t stream,
                                  int64_t *bad_k, int64_t *bad_n);

/* ---- element type conversion (src/cuda/cast.cu) ---------------------------- */

/* dst[i] = src[i] converted from src_dtype to dst_dtype (INT4MM_DTYPE_*),
 * round-to-nearest-even, for i < count; contiguous arrays.  fp16 -> bf16 never
 * overflows; bf16 -> fp16 gives +-inf beyond fp16's range.  Equal dtypes copy.
 * Enqueued on `stream`; never synchronizes.  count == 0 is a no-op. */
int4mm_status int4mm_cast(const void *src, int src_dtype, void *dst, int dst_dtype, int64_t count,
                          int device, uintptr_t stream);

/* ---- activation gather for act-order weights (src/cuda/gather.cu) ------- */

/* out[m, j] = x[m, perm[j]] for x [M, K] (row stride ldx) and out [M, K]
 * (row stride ldo), perm int32 [K] (entries outside [0, K) read as 0);
 * dtype INT4MM_DTYPE_FP16 or _BF16 (the values are copied bit for bit).
 * Enqueued on `stream`; never synchronizes. */
int4mm_status int4mm_gather_columns(const void *x, int64_t ldx, const int32_t *perm,
                                    int64_t M, int64_t K, void *out, int64_t ldo,
                                    int dtype, int device, uintptr_t stream);

#ifdef __cplusplus
}
#endif

#endif /* INT4MM_H_ */

/* ==== multi-GPU: block copies (used by int4mm.shard) ======================
 * Kept in its own guarded block at the end of the header. */
#ifndef INT4MM_H_COPY_2D_
#define INT4MM_H_COPY_2D_
#ifdef __cplusplus
extern "C" {
#endif

/* Copies `height` rows of `width_bytes` bytes from `src` (row pitch
 * src_pitch_bytes, memory of src_device) to `dst` (row pitch dst_pitch_bytes,
 * memory of dst_device).  width_bytes <= both pitches.  Same device: a 2-D
 * device-to-device copy; different devices: a peer copy (cudaMemcpy3DPeerAsync;
 * NVLink/PCIe peer access where available, else staged by the driver).
 * Enqueued on `stream`, a stream of dst_device; does not synchronize.  The
 * caller orders the copy after the source's writer (on another device: by
 * synchronizing it first).  Zero width or height is a no-op. */
int4mm_status int4mm_copy_2d(void *dst, size_t dst_pitch_bytes, const void *src,
                             size_t src_pitch_bytes, size_t width_bytes, size_t height,
                             int dst_device, int src_device, uintptr_t stream);

#ifdef __cplusplus
}
#endif
#endif /* INT4MM_H_COPY_2D_ */
