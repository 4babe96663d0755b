# cython: language_level=3
# Declarations of the int4mm C ABI (src/cuda/int4mm.h) and of the DLPack
# structs the bridge exports and imports.  Declares only; src/_int4mm.pyx implements.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint64_t, uintptr_t


cdef extern from "int4mm.h" nogil:
    ctypedef enum int4mm_status:
        INT4MM_OK
        INT4MM_ERR_INVALID_ARGUMENT
        INT4MM_ERR_CUDA
        INT4MM_ERR_UNSUPPORTED
        INT4MM_ERR_NO_DEVICE
        INT4MM_ERR_BAD_DATA

    const char *int4mm_last_error_message()
    int int4mm_last_cuda_error()
    const char *int4mm_last_cuda_error_name()

    int int4mm_cuda_runtime_version()
    const char *int4mm_compiled_targets()
    int4mm_status int4mm_driver_version(int *version)
    int4mm_status int4mm_device_count(int *count)

    ctypedef struct int4mm_device_info:
        char name[256]
        int major
        int minor
        int multiprocessor_count
        int l2_cache_bytes
        int max_shared_per_block_optin
        int64_t total_memory_bytes
        int memory_clock_khz
        int sm_clock_khz
        int kernels_loadable

    int4mm_status int4mm_get_device_info(int device, int4mm_device_info *info)

    enum:
        INT4MM_MEM_HOST
        INT4MM_MEM_HOST_PINNED
        INT4MM_MEM_DEVICE
        INT4MM_MEM_MANAGED

    int4mm_status int4mm_pointer_info(const void *ptr, int *kind, int *device)
    int4mm_status int4mm_malloc(int device, size_t nbytes, void **ptr)
    int4mm_status int4mm_free(int device, void *ptr)
    int4mm_status int4mm_memcpy_d2h(int device, void *dst, const void *src, size_t nbytes,
                                    uintptr_t stream)
    int4mm_status int4mm_memcpy_h2d(int device, void *dst, const void *src, size_t nbytes,
                                    uintptr_t stream)
    int4mm_status int4mm_memset_async(int device, void *dst, int value, size_t nbytes,
                                      uintptr_t stream)
    int4mm_status int4mm_stream_wait(int device, uintptr_t waiter, uintptr_t producer)
    int4mm_status int4mm_stream_synchronize(int device, uintptr_t stream)

    enum:
        INT4MM_PATH_AUTO
        INT4MM_PATH_SMALL_M
        INT4MM_PATH_LARGE_M

    enum:
        INT4MM_DTYPE_FP16
        INT4MM_DTYPE_BF16

    ctypedef struct int4mm_matmul_args:
        const void *x
        const int32_t *qweight
        const int32_t *mask
        const void *scales
        const void *zeros
        const void *bias
        void *y
        int64_t ldx
        int64_t ldy
        int64_t M
        int64_t N
        int64_t K
        int64_t group_size
        int dtype
        int path
        int device
        uintptr_t stream
        const void *prepared
        int layout

    int4mm_status int4mm_matmul(const int4mm_matmul_args *args)
    int int4mm_matmul_chosen_path(const int4mm_matmul_args *args)
    int4mm_status int4mm_matmul_decode_config(const int4mm_matmul_args *args, int *config) nogil

    enum:
        INT4MM_LAYOUT_NONE
        INT4MM_LAYOUT_SM90_WGMMA
        INT4MM_LAYOUT_SMALL_M_TILED
        INT4MM_LAYOUT_SPARSE_AS_DENSE

    int4mm_status int4mm_prepared_layout(int device, int64_t K, int64_t N, int64_t group_size,
                                         int sparse, int *layout, size_t *nbytes)
    int4mm_status int4mm_prepare(int layout, const int32_t *qweight, const int32_t *mask,
                                 const void *scales, const void *zeros, int dtype, int64_t K,
                                 int64_t N,
                                 int64_t group_size, void *prepared, size_t nbytes,
                                 int device, uintptr_t stream)

    int4mm_status int4mm_pack_dense(const uint8_t *codes, int64_t K, int64_t N,
                                    int64_t stride_k, int64_t stride_n,
                                    int32_t *qweight, int device, uintptr_t stream,
                                    int64_t *bad_k, int64_t *bad_n)
    int4mm_status int4mm_unpack_dense(const int32_t *qweight, int64_t K, int64_t N,
                                      uint8_t *codes, int device, uintptr_t stream)
    int4mm_status int4mm_pack_sparse(const uint8_t *codes, int64_t codes_stride_k,
                                     int64_t codes_stride_n,
                                     const uint8_t *keep, int64_t keep_stride_k,
                                     int64_t keep_stride_n,
                                     int64_t K, int64_t N,
                                     int32_t *qweight, int32_t *mask, int device,
                                     uintptr_t stream,
                                     int *bad_reason, int64_t *bad_k, int64_t *bad_n,
                                     int *bad_count)
    int4mm_status int4mm_unpack_sparse(const int32_t *qweight, const int32_t *mask,
                                       int64_t K, int64_t N,
                                       uint8_t *codes, uint8_t *keep, int device,
                                       uintptr_t stream,
                                       int *bad_reason, int64_t *bad_k, int64_t *bad_n,
                                       int *bad_count)
    int4mm_status int4mm_validate_sparse_mask(const int32_t *mask, int64_t K, int64_t N,
                                              int device, uintptr_t stream,
                                              int64_t *bad_k, int64_t *bad_n, int *bad_count)
    int4mm_status int4mm_sparse_to_dense(const int32_t *qweight, const int32_t *mask,
                                         const void *zeros, int dtype, int64_t K, int64_t N,
                                         int64_t group_size, int32_t *dense, int device,
                                         uintptr_t stream, int *exact, int64_t *bad_g,
                                         int64_t *bad_n)

    int4mm_status int4mm_quantize_rtn(const void *weight, int64_t stride_k, int64_t stride_n,
                                      int dtype, int64_t K, int64_t N, int64_t group_size,
                                      int sparse, int32_t *qweight, int32_t *mask,
                                      void *scales, void *zeros, int device, uintptr_t stream,
                                      int64_t *bad_k, int64_t *bad_n)
    int4mm_status int4mm_gather_columns(const void *x, int64_t ldx, const int32_t *perm,
                                        int64_t M, int64_t K, void *out, int64_t ldo,
                                        int dtype, int device, uintptr_t stream)

    int4mm_status int4mm_cast(const void *src, int src_dtype, void *dst, int dst_dtype,
                              int64_t count, int device, uintptr_t stream)


# ---- DLPack (legacy, unversioned ABI; https://dmlc.github.io/dlpack) ----------
# Laid out exactly as dlpack.h v0.8: the enum fields are C ints.

cdef enum:
    kDLCPU = 1
    kDLCUDA = 2
    kDLCUDAHost = 3
    kDLCUDAManaged = 13

cdef enum:
    kDLInt = 0
    kDLUInt = 1
    kDLFloat = 2
    kDLBfloat = 4
    kDLBool = 6

cdef struct DLDevice:
    int device_type
    int32_t device_id

cdef struct DLDataType:
    uint8_t code
    uint8_t bits
    uint16_t lanes

cdef struct DLTensor:
    void *data
    DLDevice device
    int32_t ndim
    DLDataType dtype
    int64_t *shape
    int64_t *strides
    uint64_t byte_offset

cdef struct DLManagedTensor:
    DLTensor dl_tensor
    void *manager_ctx
    void (*deleter)(DLManagedTensor *) noexcept nogil


# ---- multi-GPU: block copies (int4mm.shard) -----------------------------------

cdef extern from "int4mm.h" nogil:
    int4mm_status int4mm_copy_2d(void *dst, size_t dst_pitch_bytes, const void *src,
                                 size_t src_pitch_bytes, size_t width_bytes, size_t height,
                                 int dst_device, int src_device, uintptr_t stream)
