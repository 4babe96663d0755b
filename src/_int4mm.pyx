# cython: language_level=3, boundscheck=False, wraparound=False
"""Cython bridge between the int4mm Python layer and the C ABI (src/cuda/int4mm.h).

This module parses ``__cuda_array_interface__`` dicts (or, for objects without
one, legacy DLPack capsules) into :class:`ArrayView`,
makes one C call per operation with the GIL released, and turns C status codes
into the typed exceptions of :mod:`int4mm.errors` (all in :func:`_raise_status`).
It chooses no kernels and no tile sizes; the Python layer validates shapes and
dtypes before calling in, and the bridge only re-checks what would otherwise
corrupt memory.
"""

from cpython.object cimport PyObject
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid, PyCapsule_New
from libc.stdint cimport int32_t, int64_t, uint8_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from int4mm_c cimport (
    int4mm_cast,
    DLManagedTensor,
    DLTensor,
    INT4MM_ERR_BAD_DATA,
    INT4MM_ERR_CUDA,
    INT4MM_ERR_INVALID_ARGUMENT,
    INT4MM_ERR_NO_DEVICE,
    INT4MM_ERR_UNSUPPORTED,
    INT4MM_DTYPE_BF16,
    INT4MM_DTYPE_FP16,
    INT4MM_LAYOUT_NONE,
    INT4MM_LAYOUT_SM90_WGMMA,
    INT4MM_LAYOUT_SMALL_M_TILED,
    INT4MM_LAYOUT_SPARSE_AS_DENSE,
    INT4MM_MEM_DEVICE,
    INT4MM_MEM_HOST,
    INT4MM_MEM_HOST_PINNED,
    INT4MM_MEM_MANAGED,
    INT4MM_OK,
    INT4MM_PATH_AUTO,
    INT4MM_PATH_LARGE_M,
    INT4MM_PATH_SMALL_M,
    int4mm_compiled_targets,
    int4mm_cuda_runtime_version,
    int4mm_device_count,
    int4mm_device_info,
    int4mm_driver_version,
    int4mm_free,
    int4mm_gather_columns,
    int4mm_get_device_info,
    int4mm_last_cuda_error,
    int4mm_last_cuda_error_name,
    int4mm_last_error_message,
    int4mm_malloc,
    int4mm_matmul,
    int4mm_matmul_args,
    int4mm_matmul_chosen_path,
    int4mm_matmul_decode_config,
    int4mm_memcpy_d2h,
    int4mm_memcpy_h2d,
    int4mm_pack_dense,
    int4mm_pack_sparse,
    int4mm_pointer_info,
    int4mm_prepare,
    int4mm_prepared_layout,
    int4mm_quantize_rtn,
    int4mm_status,
    int4mm_stream_synchronize,
    int4mm_stream_wait,
    int4mm_unpack_dense,
    int4mm_unpack_sparse,
    int4mm_sparse_to_dense,
    int4mm_validate_sparse_mask,
    kDLBfloat,
    kDLBool,
    kDLCPU,
    kDLCUDA,
    kDLCUDAHost,
    kDLCUDAManaged,
    kDLFloat,
    kDLInt,
    kDLUInt,
)

from int4mm.errors import (
    BadDataError,
    CUDAError,
    Int4mmError,
    Int4mmTypeError,
    Int4mmValueError,
    NoDeviceError,
    UnsupportedDeviceError,
)


cdef extern from "Python.h":
    void Py_IncRef(PyObject *o)
    void Py_DecRef(PyObject *o)
    int Py_IsInitialized() nogil


MEM_HOST = INT4MM_MEM_HOST
MEM_HOST_PINNED = INT4MM_MEM_HOST_PINNED
MEM_DEVICE = INT4MM_MEM_DEVICE
MEM_MANAGED = INT4MM_MEM_MANAGED
#: ``ArrayView.mem_kind`` of an empty array whose data pointer is 0.
MEM_UNKNOWN = -1

LAYOUT_NONE = INT4MM_LAYOUT_NONE
LAYOUT_SM90_WGMMA = INT4MM_LAYOUT_SM90_WGMMA
LAYOUT_SMALL_M_TILED = INT4MM_LAYOUT_SMALL_M_TILED
LAYOUT_SPARSE_AS_DENSE = INT4MM_LAYOUT_SPARSE_AS_DENSE

PATH_AUTO = INT4MM_PATH_AUTO
PATH_SMALL_M = INT4MM_PATH_SMALL_M
PATH_LARGE_M = INT4MM_PATH_LARGE_M


# ---- the one error path -------------------------------------------------------------

cdef object _status_error(int status, str message):
    """The exception for a failed C call (message: the C layer's, unless given)."""
    cdef int code
    cdef str name
    if message is None:
        message = int4mm_last_error_message().decode("utf-8", "replace")
    if status == INT4MM_ERR_INVALID_ARGUMENT:
        return Int4mmValueError(message)
    if status == INT4MM_ERR_BAD_DATA:
        return BadDataError(message)
    if status == INT4MM_ERR_UNSUPPORTED:
        return UnsupportedDeviceError(message)
    code = int4mm_last_cuda_error()
    name = int4mm_last_cuda_error_name().decode("utf-8", "replace")
    if status == INT4MM_ERR_NO_DEVICE:
        return NoDeviceError(message, code, name)
    if status == INT4MM_ERR_CUDA:
        return CUDAError(message, code, name)
    return Int4mmError(f"int4mm: unknown status {status}: {message}")


cdef int _raise_status(int status, str message=None) except -1:
    """Raises the typed exception for a non-OK status (see int4mm.errors)."""
    raise _status_error(status, message)


cdef inline int _check(int4mm_status status) except -1:
    if status != INT4MM_OK:
        _raise_status(status)
    return 0


# ---- array views --------------------------------------------------------------------

cdef dict _TYPESTR_CACHE = {}


cdef tuple _parse_typestr(object raw, str name):
    """(normalized typestr, itemsize); '=' and '<' are little-endian, 1-byte types '|'."""
    cdef tuple hit = _TYPESTR_CACHE.get(raw)
    if hit is not None:
        return hit
    if not isinstance(raw, str) or len(raw) < 3 or raw[0] not in "<>|=":
        raise Int4mmValueError(f"{name}: typestr {raw!r} is not an array-interface type string")
    try:
        itemsize = int(raw[2:])
    except ValueError:
        raise Int4mmValueError(
            f"{name}: typestr {raw!r} is not an array-interface type string") from None
    if itemsize <= 0:
        raise Int4mmValueError(f"{name}: typestr {raw!r} has item size {itemsize}")
    order = raw[0]
    if itemsize == 1:
        order = "|"
    elif order == ">":
        raise Int4mmValueError(f"{name}: big-endian data (typestr {raw!r}) is not supported")
    else:
        order = "<"
    hit = (f"{order}{raw[1]}{itemsize}", itemsize)
    _TYPESTR_CACHE[raw] = hit
    return hit


cdef str _type_name(object obj):
    cls = type(obj)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


cdef object _not_cuda_array(object obj, str name, object exc, object dl_exc=None):
    msg = (f"{name}: expected an object exposing __cuda_array_interface__ or __dlpack__ "
           f"(a torch/CuPy/Numba/JAX CUDA array), got {_type_name(obj)}")
    if exc is not None:
        msg += f" (its __cuda_array_interface__ raised {type(exc).__name__}: {exc})"
    if dl_exc is not None:
        msg += f" (its __dlpack__() raised {type(dl_exc).__name__}: {dl_exc})"
    return Int4mmTypeError(msg)


#: The typestr of bfloat16 data.  Never produced by a CAI typestr (those start
#: with one of "<>|="): bfloat16 arrays come in through DLPack only.
BF16_TYPESTR = "bfloat16"

# DLPack (code, bits) -> the typestr the bridge normalizes to.
cdef dict _DL_TYPESTRS = {
    (kDLFloat, 16): "<f2", (kDLFloat, 32): "<f4", (kDLInt, 32): "<i4", (kDLInt, 64): "<i8",
    (kDLUInt, 8): "|u1", (kDLBool, 8): "|b1", (kDLBfloat, 16): BF16_TYPESTR,
}

cdef dict _DL_CODE_NAMES = {
    kDLInt: "int", kDLUInt: "uint", kDLFloat: "float", 3: "opaque_handle",
    kDLBfloat: "bfloat", 5: "complex", kDLBool: "bool",
}

cdef dict _DL_DEVICE_NAMES = {
    kDLCPU: "kDLCPU", kDLCUDA: "kDLCUDA", kDLCUDAHost: "kDLCUDAHost", 4: "kDLOpenCL",
    7: "kDLVulkan", 8: "kDLMetal", 9: "kDLVPI", 10: "kDLROCM", 11: "kDLROCMHost",
    12: "kDLExtDev", kDLCUDAManaged: "kDLCUDAManaged", 14: "kDLOneAPI", 15: "kDLWebGPU",
    16: "kDLHexagon", 17: "kDLMAIA",
}


cdef str _dl_dtype_text(int code, int bits, int lanes):
    """'float64', 'complex64', 'code 9 (8 bits)'; 'x4' appended for lanes != 1."""
    base = _DL_CODE_NAMES.get(code)
    text = f"{base}{bits}" if base is not None else f"code {code} ({bits} bits)"
    if lanes != 1:
        text += f"x{lanes}"
    return text


cdef object _NO_CAI = object()  # view(): the object has no usable CAI


cdef inline bint _has_dlpack(object obj):
    try:
        return hasattr(obj, "__dlpack__")
    except Exception:
        return False


cdef class ArrayView:
    """A parsed ``__cuda_array_interface__`` (or DLPack tensor) of one argument.

    ``strides`` are in elements (filled in for contiguous arrays); ``device`` is
    the owning CUDA ordinal, -1 for host memory, None for an empty array whose
    data pointer is 0 (then ``mem_kind`` is MEM_UNKNOWN, -1).  ``protocol`` is
    "cai" or "dlpack": how the array was read.  A DLPack view keeps the
    producer's capsule (never renamed) alive, so the producer's capsule
    destructor releases the DLManagedTensor when the view dies.
    """

    cdef readonly object obj
    cdef readonly str name
    cdef readonly uintptr_t ptr
    cdef readonly tuple shape
    cdef readonly tuple strides
    cdef readonly str typestr
    cdef readonly int itemsize
    cdef bint _readonly
    cdef readonly object stream
    cdef readonly object device
    cdef readonly int mem_kind
    cdef readonly bint c_contiguous
    cdef readonly bint aligned16
    cdef readonly int64_t size
    cdef readonly int ndim
    cdef readonly str protocol
    cdef object _capsule

    @property
    def readonly(self):
        return self._readonly

    def __repr__(self):
        return (f"ArrayView({self.name}: shape={self.shape}, strides={self.strides}, "
                f"typestr={self.typestr!r}, ptr=0x{self.ptr:x}, device={self.device}, "
                f"mem_kind={self.mem_kind}, stream={self.stream})")


cpdef ArrayView view(object obj, str name):
    """Parses ``obj.__cuda_array_interface__`` (versions 0-3) into an ArrayView.

    An object without a CAI (or whose CAI raises) that has ``__dlpack__`` is
    imported through DLPack instead (see :func:`_view_dlpack`); so is one whose
    CAI typestr is opaque ('V': torch reports bfloat16 as "<V2"), since DLPack
    names the real dtype.  Errors name the argument ``name``.
    """
    cdef ArrayView v
    cdef int64_t size = 1, expected = 1, elem, d
    cdef Py_ssize_t i, ndim
    cai_exc = None
    try:
        cai = obj.__cuda_array_interface__
    except AttributeError:
        cai = _NO_CAI
    except Exception as exc:
        cai = _NO_CAI
        cai_exc = exc
    if cai is _NO_CAI:
        # (outside the except clauses: DLPack errors are not chained to the CAI's)
        if _has_dlpack(obj):
            return _view_dlpack(obj, name, cai_exc)
        if cai_exc is None:
            raise _not_cuda_array(obj, name, None)
        raise _not_cuda_array(obj, name, cai_exc) from cai_exc
    if not isinstance(cai, dict):
        raise Int4mmTypeError(
            f"{name}: __cuda_array_interface__ of {_type_name(obj)} is not a dict")
    version = cai.get("version")
    if type(version) is not int or not 0 <= version <= 3:
        raise Int4mmValueError(
            f"{name}: __cuda_array_interface__ version {version!r} is not supported "
            f"(int4mm reads versions 0 to 3)")
    if cai.get("mask") is not None:
        raise Int4mmValueError(
            f"{name}: masked CUDA arrays (__cuda_array_interface__ 'mask') are not supported")

    v = ArrayView.__new__(ArrayView)
    v.obj = obj
    v.name = name
    v.protocol = "cai"
    try:
        shape = tuple(cai["shape"])
        data = cai["data"]
        raw_typestr = cai["typestr"]
    except KeyError as exc:
        raise Int4mmValueError(
            f"{name}: __cuda_array_interface__ has no {exc.args[0]!r} entry") from None
    v.typestr, v.itemsize = _parse_typestr(raw_typestr, name)
    if v.typestr[1] == "V" and _has_dlpack(obj):
        # An opaque CAI type ("<V2" is how torch and ml_dtypes spell bfloat16):
        # DLPack names the real dtype.  If it cannot, keep the CAI reading and
        # let the dtype checks report the opaque type.
        try:
            return _view_dlpack(obj, name, None)
        except Exception:
            pass
    ndim = len(shape)
    v.shape = shape
    v.ndim = <int>ndim
    for i in range(ndim):
        d = shape[i]
        if d < 0:
            raise Int4mmValueError(f"{name}: negative dimension in shape {shape}")
        size *= d
    v.size = size

    if data is None:
        v.ptr = 0
        v._readonly = False
    else:
        v.ptr = <uintptr_t>data[0]
        v._readonly = bool(data[1])

    byte_strides = cai.get("strides")
    if byte_strides is None:
        elem_strides = [0] * ndim
        for i in range(ndim - 1, -1, -1):
            elem_strides[i] = expected
            expected *= <int64_t>shape[i]
        v.strides = tuple(elem_strides)
        v.c_contiguous = True
    else:
        if len(byte_strides) != ndim:
            raise Int4mmValueError(
                f"{name}: strides {tuple(byte_strides)} do not match shape {shape}")
        elem_strides = [0] * ndim
        for i in range(ndim):
            elem = byte_strides[i]
            if elem % v.itemsize != 0:
                raise Int4mmValueError(
                    f"{name}: byte stride {elem} (strides {tuple(byte_strides)}) is not a "
                    f"multiple of the item size {v.itemsize}")
            elem_strides[i] = elem // v.itemsize
        _set_strides(v, elem_strides)

    v.stream = cai.get("stream")
    _place(v)
    return v


cdef int _set_strides(ArrayView v, list elem_strides) except -1:
    """v.strides (elements) and v.c_contiguous, from v.shape and v.size."""
    cdef int64_t expected = 1, d
    cdef Py_ssize_t i
    v.c_contiguous = True
    for i in range(v.ndim - 1, -1, -1):
        d = v.shape[i]
        if d != 1 and elem_strides[i] != expected:
            v.c_contiguous = False
        expected *= d
    if v.size == 0:
        v.c_contiguous = True
    v.strides = tuple(elem_strides)
    return 0


cdef int _place(ArrayView v) except -1:
    """v.aligned16, v.device and v.mem_kind from v.ptr (a null pointer only for
    an empty array); host pointers are reported as such, for common_device to
    refuse."""
    cdef int kind = INT4MM_MEM_HOST, dev = -1
    v.aligned16 = (v.ptr & 15) == 0
    if v.ptr == 0:
        if v.size != 0:
            raise Int4mmValueError(
                f"{v.name}: data pointer is 0 for a non-empty array of shape {v.shape}")
        v.device = None
        v.mem_kind = MEM_UNKNOWN
    else:
        _check(int4mm_pointer_info(<const void *>v.ptr, &kind, &dev))
        v.mem_kind = kind
        v.device = dev
    return 0


cdef ArrayView _view_dlpack(object obj, str name, object cai_exc):
    """Imports ``obj`` through DLPack (legacy, unversioned 'dltensor' capsule).

    Calls ``obj.__dlpack__()`` without arguments: no stream synchronization is
    asked for (torch: none is done), so ``stream`` is None and the launch-stream
    rules of int4mm._arrays apply as for a CAI without a stream.  An int4mm
    DeviceArray is exported with ``stream=-1`` and keeps its own ``stream``, as
    its CAI would report it.  The capsule is kept (never renamed): its
    destructor, run when the view dies, calls the producer's deleter.
    ``cai_exc``: what reading the CAI raised, if anything (for the message).
    """
    cdef ArrayView v
    cdef DLManagedTensor *managed
    cdef DLTensor *t
    cdef int64_t size = 1, expected = 1, d
    cdef int i, ndim, code, bits, lanes, dev_type
    cdef uintptr_t data
    try:
        if isinstance(obj, DeviceArray):
            capsule = obj.__dlpack__(stream=-1)
        else:
            capsule = obj.__dlpack__()
    except Exception as exc:
        raise _not_cuda_array(obj, name, cai_exc, exc) from exc
    if not PyCapsule_IsValid(capsule, b"dltensor"):
        raise Int4mmTypeError(
            f"{name}: {_type_name(obj)}.__dlpack__() returned {capsule!r}, not an unconsumed "
            f"DLPack 'dltensor' capsule")
    managed = <DLManagedTensor *>PyCapsule_GetPointer(capsule, b"dltensor")
    t = &managed.dl_tensor

    code = t.dtype.code
    bits = t.dtype.bits
    lanes = t.dtype.lanes
    if lanes != 1:
        raise Int4mmTypeError(
            f"{name}: DLPack dtype {_dl_dtype_text(code, bits, lanes)} has {lanes} lanes; "
            f"int4mm reads scalar elements only (lanes = 1)")
    typestr = _DL_TYPESTRS.get((code, bits))
    if typestr is None:
        raise Int4mmTypeError(
            f"{name}: DLPack dtype {_dl_dtype_text(code, bits, lanes)} is not supported "
            f"(int4mm reads float16, bfloat16, float32, int32, int64, uint8 and bool)")
    dev_type = t.device.device_type
    if dev_type != kDLCPU and dev_type != kDLCUDA and dev_type != kDLCUDAHost and \
            dev_type != kDLCUDAManaged:
        raise Int4mmValueError(
            f"{name}: DLPack device {_DL_DEVICE_NAMES.get(dev_type, dev_type)} "
            f"(device_type {dev_type}, id {t.device.device_id}) is not CUDA memory; "
            f"int4mm needs arrays in GPU device memory")
    ndim = t.ndim
    if ndim < 0 or (ndim > 0 and t.shape == NULL):
        raise Int4mmValueError(f"{name}: DLPack tensor has ndim {ndim} and no valid shape")

    v = ArrayView.__new__(ArrayView)
    v.obj = obj
    v.name = name
    v.protocol = "dlpack"
    v._capsule = capsule
    v.typestr = typestr
    v.itemsize = bits // 8
    v.ndim = ndim
    shape_list = [0] * ndim
    for i in range(ndim):
        shape_list[i] = t.shape[i]
    shape = tuple(shape_list)
    for i in range(ndim):
        d = t.shape[i]
        if d < 0:
            raise Int4mmValueError(f"{name}: negative dimension in DLPack shape {shape}")
        size *= d
    v.shape = shape
    v.size = size

    elem_strides = [0] * ndim
    for i in range(ndim - 1, -1, -1):
        if t.strides == NULL:
            elem_strides[i] = expected
            expected *= t.shape[i]
        else:
            elem_strides[i] = t.strides[i]
    _set_strides(v, elem_strides)

    v._readonly = False  # the legacy capsule has no read-only flag
    v.stream = obj.stream if isinstance(obj, DeviceArray) else None
    data = <uintptr_t>t.data
    v.ptr = data + <uintptr_t>t.byte_offset if data != 0 else 0
    # As for a CAI: the CUDA runtime classifies the pointer (host memory,
    # kDLCPU included, is reported as host and refused by common_device).
    _place(v)
    return v


# ---- matrix multiplication ------------------------------------------------------------

cdef inline const void *_ptr_or_null(ArrayView v):
    if v is None:
        return NULL
    return <const void *>v.ptr


cdef inline int _dtype_code(ArrayView v):
    """INT4MM_DTYPE_* of a 16-bit float array (the Python layer checked the dtype)."""
    return INT4MM_DTYPE_BF16 if v.typestr == "bfloat16" else INT4MM_DTYPE_FP16


cdef inline void _fill_matmul_args(
        int4mm_matmul_args *a, ArrayView x, ArrayView qweight, ArrayView mask,
        ArrayView scales, ArrayView zeros, ArrayView bias, ArrayView y,
        int64_t M, int64_t N, int64_t K, int64_t ldx, int64_t ldy, int64_t group_size,
        int path, int device, uintptr_t stream, ArrayView prepared, int layout):
    memset(a, 0, sizeof(int4mm_matmul_args))
    a.x = <const void *>x.ptr
    a.qweight = <const int32_t *>qweight.ptr
    a.mask = <const int32_t *>_ptr_or_null(mask)
    a.scales = <const void *>scales.ptr
    a.zeros = <const void *>zeros.ptr
    a.bias = _ptr_or_null(bias)
    a.y = <void *>y.ptr
    a.ldx = ldx
    a.ldy = ldy
    a.M = M
    a.N = N
    a.K = K
    a.group_size = group_size
    a.dtype = _dtype_code(x)
    a.path = path
    a.device = device
    a.stream = stream
    a.prepared = _ptr_or_null(prepared)
    a.layout = layout if prepared is not None else INT4MM_LAYOUT_NONE


def matmul(ArrayView x not None, ArrayView qweight not None, ArrayView mask,
           ArrayView scales not None, ArrayView zeros not None, ArrayView bias,
           ArrayView y not None, int64_t M, int64_t N, int64_t K, int64_t ldx, int64_t ldy,
           int64_t group_size, int path, int device, uintptr_t stream,
           ArrayView prepared=None, int layout=INT4MM_LAYOUT_NONE):
    """Enqueues y = x @ W (+ bias) on ``stream``; ``mask``/``bias`` may be None.

    ``prepared``/``layout``: the optional copy made by :func:`prepare`.
    """
    cdef int4mm_matmul_args a
    cdef int4mm_status status
    _fill_matmul_args(&a, x, qweight, mask, scales, zeros, bias, y, M, N, K, ldx, ldy,
                      group_size, path, device, stream, prepared, layout)
    with nogil:
        status = int4mm_matmul(&a)
    if status != INT4MM_OK:
        _raise_status(status)


# Stands in for the mask (and prepared) pointer when chosen_path_for or
# decode_config_for asks about a sparse (or prepared) weight: both only test
# them against NULL and never read them.
cdef int32_t _PLACEHOLDER[8]


def chosen_path_for(int64_t M, int64_t N, int64_t K, int64_t group_size, bint sparse,
                    int path=INT4MM_PATH_AUTO, int device=0, int layout=INT4MM_LAYOUT_NONE):
    """The PATH_* that matmul would take for a weight of this shape (no arrays needed)."""
    cdef int4mm_matmul_args a
    _shape_args(&a, M, N, K, group_size, sparse, path, device, layout, INT4MM_DTYPE_FP16)
    return int4mm_matmul_chosen_path(&a)


def decode_config_for(int64_t M, int64_t N, int64_t K, int64_t group_size, bint sparse, bint bf16,
                      int device, int layout):
    """(nb, mt, u, wk, ks, stages) of the decode kernel that matmul (path AUTO)
    would launch for a prepared weight of this shape and contiguous x, or None
    when another kernel would run."""
    cdef int4mm_matmul_args a
    cdef int config[6]
    cdef int4mm_status status
    _shape_args(&a, M, N, K, group_size, sparse, INT4MM_PATH_AUTO, device, layout,
                INT4MM_DTYPE_BF16 if bf16 else INT4MM_DTYPE_FP16)
    with nogil:
        status = int4mm_matmul_decode_config(&a, config)
    _check(status)
    if config[0] == 0:
        return None
    return tuple(config[i] for i in range(6))


cdef void _shape_args(int4mm_matmul_args *a, int64_t M, int64_t N, int64_t K, int64_t group_size,
                      bint sparse, int path, int device, int layout, int dtype) noexcept:
    """Arguments that describe a weight of this shape and no arrays (placeholders
    for the mask and prepared pointers, which are only tested against NULL)."""
    memset(a, 0, sizeof(int4mm_matmul_args))
    if sparse:
        a.mask = <const int32_t *>_PLACEHOLDER
    if layout != INT4MM_LAYOUT_NONE:
        a.prepared = <const void *>_PLACEHOLDER
        a.layout = layout
    a.ldx = K
    a.ldy = N
    a.M = M
    a.N = N
    a.K = K
    a.group_size = group_size
    a.dtype = dtype
    a.path = path
    a.device = device


def prepared_layout(int device, int64_t K, int64_t N, int64_t group_size, bint sparse):
    """(layout, nbytes): the LAYOUT_* prepare() would make for this weight on
    ``device`` and the device bytes it needs; (LAYOUT_NONE, 0) when no kernel wants one."""
    cdef int layout = INT4MM_LAYOUT_NONE
    cdef size_t nbytes = 0
    cdef int4mm_status status
    with nogil:
        status = int4mm_prepared_layout(device, K, N, group_size, sparse, &layout, &nbytes)
    _check(status)
    return layout, nbytes


def prepare(int layout, ArrayView qweight not None, ArrayView mask, ArrayView scales not None,
            ArrayView zeros not None, int64_t K, int64_t N, int64_t group_size,
            ArrayView prepared not None, int device, uintptr_t stream):
    """Enqueues the conversion of raw weights into ``layout``, written to ``prepared``
    (a C-contiguous device array of at least prepared_layout()'s nbytes).  The
    prepared buffer serves calls whose activations have the scales' dtype."""
    cdef int4mm_status status
    cdef size_t nbytes = <size_t>(prepared.size * prepared.itemsize)
    if not prepared.c_contiguous:
        raise Int4mmValueError(f"{prepared.name}: must be C-contiguous")
    cdef const int32_t *qw = <const int32_t *>qweight.ptr
    cdef const int32_t *mk = <const int32_t *>_ptr_or_null(mask)
    cdef const void *sc = <const void *>scales.ptr
    cdef const void *zr = <const void *>zeros.ptr
    cdef void *out = <void *>prepared.ptr
    cdef int dtype = _dtype_code(scales)
    with nogil:
        status = int4mm_prepare(layout, qw, mk, sc, zr, dtype, K, N, group_size, out, nbytes,
                                device, stream)
    _check(status)


def copy_to_host(ArrayView v not None, stream=None):
    """A new numpy array with the contents of a C-contiguous device array (blocking).

    Copies on ``stream``, else on the array's CAI stream, else on the legacy
    default stream.  bfloat16 data needs ml_dtypes (see :func:`_host_dtype`).
    """
    import numpy
    cdef uintptr_t s
    cdef void *dst
    cdef int4mm_status status
    cdef int device
    out = numpy.empty(v.shape, dtype=_host_dtype(v.typestr, v.name))
    if v.size == 0:
        return out
    if not v.c_contiguous:
        raise Int4mmValueError(f"{v.name}: copy_to_host needs a C-contiguous array "
                               f"(strides {v.strides})")
    if v.mem_kind != INT4MM_MEM_DEVICE and v.mem_kind != INT4MM_MEM_MANAGED:
        raise Int4mmValueError(f"{v.name}: is not in GPU memory")
    if stream is None:
        stream = v.stream if v.stream is not None else 0
    s = <uintptr_t>stream
    device = v.device
    dst = <void *><uintptr_t>out.ctypes.data
    with nogil:
        status = int4mm_memcpy_d2h(device, dst, <const void *>v.ptr,
                                   <size_t>(v.size * v.itemsize), s)
    _check(status)
    return out


# ---- packing --------------------------------------------------------------------------

cdef int _require_matrix(ArrayView v, str what, int64_t rows, int64_t cols, int itemsize,
                         bint contiguous) except -1:
    """Memory-safety re-check of a pack argument (the Python layer checks first)."""
    if v.ndim != 2 or v.shape[0] != rows or v.shape[1] != cols:
        raise Int4mmValueError(f"{what}: expected shape ({rows}, {cols}), got {v.shape}")
    if v.itemsize != itemsize:
        raise Int4mmValueError(
            f"{what}: expected {itemsize}-byte elements, got typestr {v.typestr!r}")
    if contiguous and not v.c_contiguous:
        raise Int4mmValueError(f"{what}: must be C-contiguous (strides {v.strides})")
    return 0


cdef str _code_value_text(ArrayView codes, int64_t k, int64_t n, int device,
                          uintptr_t stream):
    """' is 17' for the code at (k, n), read back from the GPU; '' if that fails."""
    cdef uint8_t value = 0
    cdef int64_t offset = k * <int64_t>codes.strides[0] + n * <int64_t>codes.strides[1]
    cdef const void *src = <const void *>(codes.ptr + <uintptr_t>offset)
    cdef int4mm_status status
    with nogil:
        status = int4mm_memcpy_d2h(device, &value, src, 1, stream)
    if status != INT4MM_OK:
        return ""
    return f" is {value}"


cdef str _bad_block_text(str what, int64_t k0, int64_t n, int count):
    return (f"{what}: block {k0 // 32} of column {n} (rows {k0}..{k0 + 31}) keeps {count} "
            f"weights; every 32-row block must keep exactly 16")


def pack_dense(ArrayView codes not None, ArrayView qweight not None, int64_t K, int64_t N,
               int device, uintptr_t stream):
    """codes uint8 [K, N] (any strides) -> qweight int32 [K/8, N] (contiguous)."""
    cdef int64_t bad_k = -1, bad_n = -1
    cdef int64_t sk, sn
    cdef int4mm_status status
    _require_matrix(codes, "codes", K, N, 1, False)
    _require_matrix(qweight, "qweight", K // 8, N, 4, True)
    sk = codes.strides[0]
    sn = codes.strides[1]
    with nogil:
        status = int4mm_pack_dense(<const uint8_t *>codes.ptr, K, N, sk, sn,
                                   <int32_t *>qweight.ptr, device, stream, &bad_k, &bad_n)
    if status == INT4MM_ERR_BAD_DATA and bad_k >= 0:
        _raise_status(status,
                      f"codes: value at [k={bad_k}, n={bad_n}]"
                      f"{_code_value_text(codes, bad_k, bad_n, device, stream)}, outside 0..15")
    _check(status)


def unpack_dense(ArrayView qweight not None, ArrayView codes not None, int64_t K, int64_t N,
                 int device, uintptr_t stream):
    """qweight int32 [K/8, N] -> codes uint8 [K, N] (both contiguous)."""
    cdef int4mm_status status
    _require_matrix(qweight, "qweight", K // 8, N, 4, True)
    _require_matrix(codes, "codes", K, N, 1, True)
    with nogil:
        status = int4mm_unpack_dense(<const int32_t *>qweight.ptr, K, N,
                                     <uint8_t *>codes.ptr, device, stream)
    _check(status)


def pack_sparse(ArrayView codes not None, ArrayView keep not None, ArrayView qweight not None,
                ArrayView mask not None, int64_t K, int64_t N, int device, uintptr_t stream):
    """codes, keep uint8 [K, N] (any strides) -> qweight int32 [K/16, N], mask [K/32, N]."""
    cdef int bad_reason = 0, bad_count = -1
    cdef int64_t bad_k = -1, bad_n = -1
    cdef int64_t csk, csn, ksk, ksn
    cdef int4mm_status status
    _require_matrix(codes, "codes", K, N, 1, False)
    _require_matrix(keep, "keep", K, N, 1, False)
    _require_matrix(qweight, "qweight", K // 16, N, 4, True)
    _require_matrix(mask, "mask", K // 32, N, 4, True)
    csk = codes.strides[0]
    csn = codes.strides[1]
    ksk = keep.strides[0]
    ksn = keep.strides[1]
    with nogil:
        status = int4mm_pack_sparse(<const uint8_t *>codes.ptr, csk, csn,
                                    <const uint8_t *>keep.ptr, ksk, ksn, K, N,
                                    <int32_t *>qweight.ptr, <int32_t *>mask.ptr, device, stream,
                                    &bad_reason, &bad_k, &bad_n, &bad_count)
    if status == INT4MM_ERR_BAD_DATA:
        if bad_reason == 1:
            _raise_status(status, _bad_block_text("keep", bad_k, bad_n, bad_count))
        if bad_reason == 2:
            _raise_status(status,
                          f"codes: kept value at [k={bad_k}, n={bad_n}]"
                          f"{_code_value_text(codes, bad_k, bad_n, device, stream)}, "
                          f"outside 0..15")
    _check(status)


def unpack_sparse(ArrayView qweight not None, ArrayView mask not None, ArrayView codes not None,
                  ArrayView keep not None, int64_t K, int64_t N, int device, uintptr_t stream):
    """qweight [K/16, N], mask [K/32, N] -> codes, keep uint8 [K, N] (all contiguous)."""
    cdef int bad_reason = 0, bad_count = -1
    cdef int64_t bad_k = -1, bad_n = -1
    cdef int4mm_status status
    _require_matrix(qweight, "qweight", K // 16, N, 4, True)
    _require_matrix(mask, "mask", K // 32, N, 4, True)
    _require_matrix(codes, "codes", K, N, 1, True)
    _require_matrix(keep, "keep", K, N, 1, True)
    with nogil:
        status = int4mm_unpack_sparse(<const int32_t *>qweight.ptr, <const int32_t *>mask.ptr,
                                      K, N, <uint8_t *>codes.ptr, <uint8_t *>keep.ptr,
                                      device, stream, &bad_reason, &bad_k, &bad_n, &bad_count)
    if status == INT4MM_ERR_BAD_DATA and bad_reason == 1:
        _raise_status(status, _bad_block_text("mask", bad_k, bad_n, bad_count))
    _check(status)


def validate_sparse_mask(ArrayView mask not None, int64_t K, int64_t N, int device,
                         uintptr_t stream):
    """Raises BadDataError naming the first mask block whose popcount is not 16."""
    cdef int bad_count = -1
    cdef int64_t bad_k = -1, bad_n = -1
    cdef int4mm_status status
    _require_matrix(mask, "mask", K // 32, N, 4, True)
    with nogil:
        status = int4mm_validate_sparse_mask(<const int32_t *>mask.ptr, K, N, device, stream,
                                             &bad_k, &bad_n, &bad_count)
    if status == INT4MM_ERR_BAD_DATA and bad_k >= 0:
        _raise_status(status, _bad_block_text("mask", bad_k, bad_n, bad_count))
    _check(status)


def sparse_to_dense(ArrayView qweight not None, ArrayView mask not None,
                    ArrayView zeros not None, ArrayView dense not None, int64_t K, int64_t N,
                    int64_t group_size, int device, uintptr_t stream):
    """Writes into ``dense`` (int32 (K // 8, N)) the dense equivalent of a 16:32
    weight whose zero points are all integers in 0..15, pruned weights coded as
    their zero point; synchronizes ``stream``.  Returns None when it did, else
    ``(g, n)``, the first zero point that is not such an integer (nothing written)."""
    cdef int exact = 0
    cdef int64_t bad_g = -1, bad_n = -1
    cdef int4mm_status status
    cdef int dtype = _dtype_code(zeros)
    _require_matrix(qweight, "qweight", K // 16, N, 4, True)
    _require_matrix(mask, "mask", K // 32, N, 4, True)
    _require_matrix(dense, "dense", K // 8, N, 4, True)
    if group_size <= 0 or zeros.size != (K // group_size) * N or not zeros.c_contiguous:
        raise Int4mmValueError(f"zeros: expected {K // max(group_size, 1) * N} contiguous values")
    with nogil:
        status = int4mm_sparse_to_dense(<const int32_t *>qweight.ptr, <const int32_t *>mask.ptr,
                                        <const void *>zeros.ptr, dtype, K, N, group_size,
                                        <int32_t *>dense.ptr, device, stream, &exact, &bad_g,
                                        &bad_n)
    _check(status)
    return None if exact else (bad_g, bad_n)


# ---- streams --------------------------------------------------------------------------

def stream_wait(int device, uintptr_t waiter, uintptr_t producer):
    """Makes ``waiter`` wait for the work queued so far on ``producer`` (non-blocking)."""
    cdef int4mm_status status
    if waiter == producer:
        return
    with nogil:
        status = int4mm_stream_wait(device, waiter, producer)
    _check(status)


def stream_synchronize(int device, uintptr_t stream):
    """Blocks until the work queued on ``stream`` is done."""
    cdef int4mm_status status
    with nogil:
        status = int4mm_stream_synchronize(device, stream)
    _check(status)


# ---- build and runtime facts ------------------------------------------------------------

def cuda_runtime_version():
    """CUDART_VERSION the library was compiled against (e.g. 13000)."""
    return int4mm_cuda_runtime_version()


def compiled_targets():
    """Compiled GPU targets, e.g. ['sm_80', 'sm_90a', 'compute_90']."""
    return int4mm_compiled_targets().decode("ascii", "replace").split()


def driver_version():
    """CUDA version the NVIDIA driver supports (e.g. 13000); 0 when no driver is loaded."""
    cdef int version = 0
    _check(int4mm_driver_version(&version))
    return version


def device_count():
    """Number of visible CUDA GPUs; 0 (not an error) when there is no driver or GPU."""
    cdef int count = 0
    cdef int4mm_status status = int4mm_device_count(&count)
    if status == INT4MM_ERR_NO_DEVICE:
        return 0
    _check(status)
    return count


def device_info(int device):
    """Facts about GPU ``device`` as a dict; raises NoDeviceError without a GPU."""
    cdef int4mm_device_info info
    cdef int4mm_status status
    with nogil:
        status = int4mm_get_device_info(device, &info)
    _check(status)
    return {
        "name": info.name.decode("utf-8", "replace"),
        "major": info.major,
        "minor": info.minor,
        "sm_count": info.multiprocessor_count,
        "l2_bytes": info.l2_cache_bytes,
        "max_shared_per_block_optin": info.max_shared_per_block_optin,
        "total_memory": info.total_memory_bytes,
        "memory_clock_khz": info.memory_clock_khz,
        "sm_clock_khz": info.sm_clock_khz,
        "kernels_loadable": bool(info.kernels_loadable),
    }


# ---- library-owned device memory ------------------------------------------------------

cdef dict _DTYPE_NAMES = {
    "<f2": "float16", "<f4": "float32", "<i4": "int32", "<i8": "int64", "|u1": "uint8",
    "|i1": "int8", "|b1": "bool", "<u4": "uint32", "<i2": "int16", "<u2": "uint16",
    BF16_TYPESTR: "bfloat16",
}

cdef dict _DL_CODES = {"f": kDLFloat, "i": kDLInt, "u": kDLUInt, "b": kDLBool}


class _NoCudaArrayInterface(TypeError, AttributeError):
    """Raised by ``DeviceArray.__cuda_array_interface__`` for bfloat16 arrays.

    A TypeError (what int4mm documents) that is also an AttributeError, so
    ``hasattr(arr, "__cuda_array_interface__")`` is False, as for torch CPU
    tensors and JAX bfloat16 arrays: duck-typing consumers then try DLPack.
    """


cdef object _bf16_numpy_dtype():
    """numpy.dtype(ml_dtypes.bfloat16), or None when ml_dtypes is not importable."""
    import importlib
    import numpy
    try:
        return numpy.dtype(importlib.import_module("ml_dtypes").bfloat16)
    except ImportError:
        return None


cdef object _host_dtype(str typestr, str what):
    """The numpy dtype of host copies of ``typestr`` data.

    bfloat16: ``ml_dtypes.bfloat16`` (numpy has none); without ml_dtypes the
    copy is refused (Int4mmTypeError) rather than returning raw uint16 bits.
    """
    import numpy
    if typestr == BF16_TYPESTR:
        dt = _bf16_numpy_dtype()
        if dt is None:
            raise Int4mmTypeError(
                f"{what}: host copies of bfloat16 data need the ml_dtypes package "
                f"(numpy has no bfloat16): pip install ml_dtypes, or move the array "
                f"with DLPack (torch.from_dlpack / jax.dlpack.from_dlpack)")
        return dt
    return numpy.dtype(typestr)


cdef void _dl_deleter(DLManagedTensor *managed) noexcept nogil:
    """DLPack deleter: drops the reference that kept the DeviceArray alive."""
    if managed == NULL:
        return
    if managed.manager_ctx != NULL and Py_IsInitialized():
        with gil:
            Py_DecRef(<PyObject *>managed.manager_ctx)
    managed.manager_ctx = NULL
    free(managed)


cdef void _dl_capsule_destructor(object capsule) noexcept:
    """Frees a capsule nobody consumed (a consumer renames it 'used_dltensor')."""
    cdef DLManagedTensor *managed
    if PyCapsule_IsValid(capsule, b"dltensor"):
        managed = <DLManagedTensor *>PyCapsule_GetPointer(capsule, b"dltensor")
        if managed != NULL and managed.deleter != NULL:
            managed.deleter(managed)


cdef class DeviceArray:
    """C-contiguous device memory owned by int4mm.

    Exposes ``__cuda_array_interface__`` (v3) and DLPack.  A bfloat16 array
    (typestr "bfloat16") has no CAI type string: its ``__cuda_array_interface__``
    raises TypeError and it is exported (and read by int4mm) through DLPack
    only; its ``dtype`` is ``ml_dtypes.bfloat16`` when ml_dtypes is installed,
    else the opaque 2-byte ``numpy.dtype("V2")``, and host copies need
    ml_dtypes.  ``stream`` is the CAI
    v3 stream that writes to the array are (or were) enqueued on: consumers
    order their reads after it.  The constructor's ``stream`` is that stream
    (0, the legacy default, is reported as 1 since CAI forbids 0); it is None
    when nothing is pending (after ``from_host``).  Whoever enqueues a write on
    another stream sets ``arr.stream``.
    """

    cdef uintptr_t _ptr
    cdef readonly tuple shape
    cdef readonly str typestr
    cdef readonly int itemsize
    cdef readonly int device
    cdef readonly int64_t size
    cdef readonly int64_t nbytes
    cdef object _stream

    def __cinit__(self, shape, typestr, int device, stream=0):
        cdef int64_t size = 1, d
        cdef void *p = NULL
        cdef int4mm_status status
        cdef size_t nbytes
        self._ptr = 0
        self.stream = stream
        if isinstance(shape, int):
            shape = (shape,)
        shape = tuple(int(x) for x in shape)
        if typestr == BF16_TYPESTR:
            self.typestr, self.itemsize = BF16_TYPESTR, 2
        else:
            self.typestr, self.itemsize = _parse_typestr(typestr, "DeviceArray typestr")
            if self.typestr[1] not in _DL_CODES:
                raise Int4mmValueError(
                    f"DeviceArray: typestr {typestr!r} is not a supported element type "
                    f"(float, signed/unsigned integer, bool or 'bfloat16')")
        for x in shape:
            d = x
            if d < 0:
                raise Int4mmValueError(f"DeviceArray: negative dimension in shape {shape}")
            if d != 0 and size > (1 << 62) // d:
                raise Int4mmValueError(f"DeviceArray: shape {shape} is too large")
            size *= d
        if size > (1 << 62) // self.itemsize:
            raise Int4mmValueError(f"DeviceArray: shape {shape} is too large")
        self.shape = shape
        self.size = size
        self.nbytes = size * self.itemsize
        self.device = device
        nbytes = <size_t>self.nbytes
        if nbytes == 0:
            return
        with nogil:
            status = int4mm_malloc(device, nbytes, &p)
        _check(status)
        self._ptr = <uintptr_t>p

    def __dealloc__(self):
        cdef void *p = <void *>self._ptr
        cdef int device = self.device
        self._ptr = 0
        if p != NULL:
            with nogil:
                int4mm_free(device, p)  # errors ignored: nothing can be done here

    @property
    def ptr(self):
        return self._ptr

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def dtype(self):
        """numpy dtype; for bfloat16 ml_dtypes.bfloat16, or numpy.dtype("V2")
        (2 opaque bytes) when ml_dtypes is not installed."""
        import numpy
        if self.typestr == BF16_TYPESTR:
            dt = _bf16_numpy_dtype()
            return numpy.dtype("V2") if dt is None else dt
        return numpy.dtype(self.typestr)

    @property
    def stream(self):
        """CAI stream of the last enqueued write, or None."""
        return self._stream

    @stream.setter
    def stream(self, value):
        if value is None:
            self._stream = None
        else:
            value = int(value)
            self._stream = 1 if value == 0 else value

    @property
    def __cuda_array_interface__(self):
        if self.typestr == BF16_TYPESTR:
            raise _NoCudaArrayInterface(
                "DeviceArray: bfloat16 has no __cuda_array_interface__ type string; use "
                "DLPack (e.g. torch.from_dlpack / jax.dlpack.from_dlpack)")
        return {
            "shape": self.shape,
            "typestr": self.typestr,
            "data": (self._ptr, False),
            "version": 3,
            "strides": None,
            "stream": self._stream,
        }

    def __dlpack_device__(self):
        return (kDLCUDA, self.device)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """A legacy 'dltensor' capsule viewing this memory (no copy).

        ``stream``: the consumer's stream (None: legacy default; -1: no
        synchronization); it is made to wait for the last write.  ``max_version``
        is accepted and the unversioned (legacy) capsule is returned.
        """
        cdef DLManagedTensor *managed
        cdef int64_t *dims
        cdef int ndim = len(self.shape)
        cdef int i
        cdef int64_t expected = 1
        if dl_device is not None and tuple(dl_device) != (kDLCUDA, self.device):
            raise BufferError(
                f"DeviceArray.__dlpack__: cannot export to device {tuple(dl_device)}; "
                f"the array lives on (kDLCUDA=2, {self.device})")
        if copy:
            raise BufferError("DeviceArray.__dlpack__: copy=True is not supported")
        if stream is None:
            stream = 1
        elif stream == 0:
            raise ValueError("DeviceArray.__dlpack__: stream 0 is ambiguous for CUDA; "
                             "pass 1 (legacy default), 2 (per-thread default) or a handle")
        if stream != -1 and self._stream is not None:
            stream_wait(self.device, <uintptr_t>stream, <uintptr_t>self._stream)

        managed = <DLManagedTensor *>malloc(sizeof(DLManagedTensor) +
                                            2 * max(ndim, 1) * sizeof(int64_t))
        if managed == NULL:
            raise MemoryError()
        dims = <int64_t *>(<char *>managed + sizeof(DLManagedTensor))
        for i in range(ndim - 1, -1, -1):
            dims[i] = self.shape[i]
            dims[ndim + i] = expected
            expected *= dims[i]
        managed.dl_tensor.data = <void *>self._ptr
        managed.dl_tensor.device.device_type = kDLCUDA
        managed.dl_tensor.device.device_id = self.device
        managed.dl_tensor.ndim = ndim
        if self.typestr == BF16_TYPESTR:
            managed.dl_tensor.dtype.code = <uint8_t>kDLBfloat
        else:
            managed.dl_tensor.dtype.code = <uint8_t><int>_DL_CODES[self.typestr[1]]
        managed.dl_tensor.dtype.bits = <uint8_t>(8 * self.itemsize)
        managed.dl_tensor.dtype.lanes = 1
        managed.dl_tensor.shape = dims
        managed.dl_tensor.strides = dims + ndim
        managed.dl_tensor.byte_offset = 0
        managed.manager_ctx = <void *>self
        managed.deleter = _dl_deleter
        Py_IncRef(<PyObject *>self)
        try:
            return PyCapsule_New(managed, b"dltensor", _dl_capsule_destructor)
        except BaseException:
            _dl_deleter(managed)
            raise

    def copy_to_host(self, stream=None):
        """A new numpy array with this array's contents (blocking).

        Copies on ``stream``, else on the stream of the last write, else on the
        legacy default stream.
        """
        import numpy
        cdef uintptr_t s
        cdef void *dst
        cdef int4mm_status status
        out = numpy.empty(self.shape, dtype=_host_dtype(self.typestr, "DeviceArray"))
        if self.nbytes == 0:
            return out
        if stream is None:
            stream = self._stream if self._stream is not None else 0
        s = <uintptr_t>stream
        dst = <void *><uintptr_t>out.ctypes.data
        with nogil:
            status = int4mm_memcpy_d2h(self.device, dst, <const void *>self._ptr,
                                       <size_t>self.nbytes, s)
        _check(status)
        return out

    @staticmethod
    def from_host(array, int device, stream=0):
        """A DeviceArray holding a copy of a host array (blocking copy on ``stream``).

        An ``ml_dtypes.bfloat16`` array gives a bfloat16 DeviceArray.
        """
        import numpy
        cdef DeviceArray out
        cdef uintptr_t s = <uintptr_t>stream
        cdef const void *src
        cdef int4mm_status status
        host = numpy.ascontiguousarray(array)
        typestr = host.dtype.str
        if host.dtype.kind == "V" and host.dtype.itemsize == 2 and \
                host.dtype.name == "bfloat16":  # ml_dtypes.bfloat16 (its str is "<V2")
            typestr = BF16_TYPESTR
        out = DeviceArray(host.shape, typestr, device, stream)
        if out.nbytes == 0:
            out._stream = None
            return out
        src = <const void *><uintptr_t>host.ctypes.data
        with nogil:
            status = int4mm_memcpy_h2d(device, <void *>out._ptr, src, <size_t>out.nbytes, s)
        _check(status)
        out._stream = None  # the copy was blocking: nothing pending
        return out

    def __repr__(self):
        dtype = _DTYPE_NAMES.get(self.typestr, self.typestr)
        return f"DeviceArray(shape={self.shape}, dtype={dtype}, device={self.device})"


# ---- quantization and act-order gather ----------------------------------------------

def quantize_rtn(ArrayView weight not None, ArrayView qweight not None, ArrayView mask,
                 ArrayView scales not None, ArrayView zeros not None, int64_t K, int64_t N,
                 int64_t group_size, int device, uintptr_t stream):
    """fp16 weight [K, N] (any strides) -> qweight (+ mask if not None), scales, zeros.

    Dense when ``mask`` is None, 16:32 sparse otherwise.  Raises BadDataError
    naming the first Inf/NaN weight (nothing written).
    """
    cdef int64_t bad_k = -1, bad_n = -1
    cdef int64_t sk, sn
    cdef int sparse = mask is not None
    cdef int4mm_status status
    cdef int32_t *mk = NULL
    _require_matrix(weight, "weight", K, N, 2, False)
    _require_matrix(qweight, "qweight", K // (16 if sparse else 8), N, 4, True)
    if sparse:
        _require_matrix(mask, "mask", K // 32, N, 4, True)
        mk = <int32_t *>mask.ptr
    _require_matrix(scales, "scales", K // group_size, N, 2, True)
    _require_matrix(zeros, "zeros", K // group_size, N, 2, True)
    sk = weight.strides[0]
    sn = weight.strides[1]
    cdef int dtype = _dtype_code(weight)
    with nogil:
        status = int4mm_quantize_rtn(<const void *>weight.ptr, sk, sn, dtype, K, N,
                                     group_size, sparse, <int32_t *>qweight.ptr, mk,
                                     <void *>scales.ptr, <void *>zeros.ptr, device, stream,
                                     &bad_k, &bad_n)
    if status == INT4MM_ERR_BAD_DATA and bad_k >= 0:
        _raise_status(status, f"weight: value at [k={bad_k}, n={bad_n}] is Inf or NaN; "
                              f"only finite weights can be quantized")
    _check(status)


def gather_columns(ArrayView x not None, ArrayView perm not None, ArrayView out not None,
                   int64_t M, int64_t K, int device, uintptr_t stream):
    """Enqueues out[m, j] = x[m, perm[j]] for C-contiguous 16-bit x, out [M, K], int32 perm [K]."""
    cdef int4mm_status status
    cdef int dtype = _dtype_code(x)
    if x.size != M * K or out.size != M * K or x.itemsize != 2 or out.itemsize != 2:
        raise Int4mmValueError(f"gather_columns: x and out must hold {M} x {K} 16-bit values")
    if out.typestr != x.typestr:
        raise Int4mmValueError("gather_columns: x and out must have one dtype")
    if not x.c_contiguous or not out.c_contiguous:
        raise Int4mmValueError("gather_columns: x and out must be C-contiguous")
    if perm.ndim != 1 or perm.shape[0] != K or perm.itemsize != 4 or not perm.c_contiguous:
        raise Int4mmValueError(f"perm: expected a contiguous int32 array of shape ({K},), "
                               f"got {perm.shape}")
    with nogil:
        status = int4mm_gather_columns(<const void *>x.ptr, K, <const int32_t *>perm.ptr, M, K,
                                       <void *>out.ptr, K, dtype, device, stream)
    _check(status)


def cast(ArrayView src not None, ArrayView dst not None, int device, uintptr_t stream):
    """Enqueues dst = src converted between float16 and bfloat16 (C-contiguous, equal
    sizes, round to nearest even)."""
    cdef int4mm_status status
    cdef int sd = _dtype_code(src)
    cdef int dd = _dtype_code(dst)
    cdef int64_t count = src.size
    for v in (src, dst):
        if (<ArrayView>v).typestr not in ("<f2", "bfloat16"):
            raise Int4mmValueError(f"{(<ArrayView>v).name}: cast takes float16 or bfloat16 arrays, "
                                   f"got {(<ArrayView>v).typestr}")
        if not (<ArrayView>v).c_contiguous:
            raise Int4mmValueError(f"{(<ArrayView>v).name}: must be C-contiguous")
    if dst.size != src.size:
        raise Int4mmValueError(f"{dst.name}: holds {dst.size} elements, {src.name} {src.size}")
    if dst.readonly:
        raise Int4mmValueError(f"{dst.name}: is read-only")
    with nogil:
        status = int4mm_cast(<const void *>src.ptr, sd, <void *>dst.ptr, dd, count, device, stream)
    _check(status)


# ==== multi-GPU: block copies (int4mm.shard) =============================================

from int4mm_c cimport int4mm_copy_2d


cdef tuple _as_rows_cols(ArrayView v, str what):
    """(rows, cols) of a C-contiguous 1-D (one row) or 2-D array."""
    if v.ndim == 1:
        return 1, v.shape[0]
    if v.ndim == 2:
        return v.shape[0], v.shape[1]
    raise Int4mmValueError(f"{what}: copy_2d takes 1-D or 2-D arrays, got shape {v.shape}")


def copy_2d(ArrayView dst not None, ArrayView src not None, int64_t row0, int64_t row1,
            int64_t col0, int64_t col1, uintptr_t stream):
    """Enqueues ``dst[...] = src[row0:row1, col0:col1]`` on ``stream`` (a stream of
    ``dst``'s device); ``src`` may live on another GPU.

    Ranges are in elements; a 1-D ``src`` is one row.  Both arrays are
    C-contiguous with one element size; ``dst`` holds exactly the block.
    Byte offsets and pitches are computed here, not in Python.
    """
    cdef int64_t src_rows, src_cols, rows, cols
    cdef int64_t item = src.itemsize
    cdef size_t src_pitch, dst_pitch, width, height
    cdef const char *sp
    cdef void *dp
    cdef int dst_device, src_device
    cdef int4mm_status status
    src_rows, src_cols = _as_rows_cols(src, src.name)
    if not (0 <= row0 <= row1 <= src_rows and 0 <= col0 <= col1 <= src_cols):
        raise Int4mmValueError(
            f"{src.name}: block rows [{row0}, {row1}), columns [{col0}, {col1}) is outside "
            f"its {src_rows} x {src_cols} elements")
    rows = row1 - row0
    cols = col1 - col0
    if dst.itemsize != src.itemsize:
        raise Int4mmValueError(
            f"{dst.name}: element size {dst.itemsize} differs from {src.name}'s {src.itemsize}")
    if dst.size != rows * cols:
        raise Int4mmValueError(
            f"{dst.name}: holds {dst.size} elements, the block has {rows} x {cols}")
    if rows == 0 or cols == 0:
        return
    for v in (src, dst):
        if not (<ArrayView>v).c_contiguous:
            raise Int4mmValueError(
                f"{(<ArrayView>v).name}: must be C-contiguous (strides {(<ArrayView>v).strides})")
        if (<ArrayView>v).mem_kind != INT4MM_MEM_DEVICE and \
                (<ArrayView>v).mem_kind != INT4MM_MEM_MANAGED:
            raise Int4mmValueError(f"{(<ArrayView>v).name}: is not in GPU memory")
    if dst.readonly:
        raise Int4mmValueError(f"{dst.name}: is read-only")
    src_pitch = <size_t>(src_cols * item)
    dst_pitch = <size_t>(cols * item)
    width = <size_t>(cols * item)
    height = <size_t>rows
    sp = <const char *>src.ptr + <size_t>((row0 * src_cols + col0) * item)
    dp = <void *>dst.ptr
    dst_device = dst.device
    src_device = src.device
    with nogil:
        status = int4mm_copy_2d(dp, dst_pitch, <const void *>sp, src_pitch, width, height,
                                dst_device, src_device, stream)
    _check(status)


# ---------------------------------------------------------------- fast call path
#
# A prepared weight called with torch tensors or CuPy arrays, out= given, and
# no bias: the common inference call.  Reading a torch tensor's
# __cuda_array_interface__ alone costs ~4 us, so for these two libraries the
# plan reads pointer, shape, dtype, contiguity and device straight from the
# objects (a handful of attribute lookups) into a C args struct whose weight
# fields were filled once.  Anything unusual returns None and the caller takes
# the fully validated path, which also produces the error messages.

cdef object _TORCH_TENSOR = None      # torch.Tensor, once seen
cdef object _TORCH_F16 = None         # torch.float16
cdef object _TORCH_BF16 = None        # torch.bfloat16
cdef object _TORCH_RAW_STREAM = None  # torch._C._cuda_getCurrentRawStream
cdef object _CUPY_NDARRAY = None      # cupy.ndarray, once seen
cdef object _CUPY_CURRENT_STREAM = None


cdef int _learn_type(object t) except -1:
    """Recognize torch.Tensor / cupy.ndarray by module without importing them."""
    global _TORCH_TENSOR, _TORCH_F16, _TORCH_BF16, _TORCH_RAW_STREAM, _CUPY_NDARRAY
    global _CUPY_CURRENT_STREAM
    mod = getattr(t, "__module__", "") or ""
    if _TORCH_TENSOR is None and mod.startswith("torch") and t.__name__ == "Tensor":
        import torch
        _TORCH_TENSOR = torch.Tensor
        _TORCH_F16 = torch.float16
        _TORCH_BF16 = torch.bfloat16
        _TORCH_RAW_STREAM = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    elif _CUPY_NDARRAY is None and mod.startswith("cupy") and t.__name__ == "ndarray":
        import cupy
        _CUPY_NDARRAY = cupy.ndarray
        _CUPY_CURRENT_STREAM = cupy.cuda.get_current_stream
    return 0


cdef class FastMatmul:
    """y = x @ W for one prepared weight, with the weight half of the C
    arguments filled once (see the comment above)."""

    cdef int4mm_matmul_args a
    cdef readonly object refs
    cdef int64_t K, N

    def __init__(self, ArrayView qweight not None, ArrayView mask, ArrayView scales not None,
                 ArrayView zeros not None, int64_t N, int64_t K, int64_t group_size, int device,
                 ArrayView prepared=None, int layout=INT4MM_LAYOUT_NONE):
        """The activations' dtype is the scales' (float16 or bfloat16)."""
        memset(&self.a, 0, sizeof(int4mm_matmul_args))
        self.a.qweight = <const int32_t *>qweight.ptr
        self.a.mask = <const int32_t *>_ptr_or_null(mask)
        self.a.scales = <const void *>scales.ptr
        self.a.zeros = <const void *>zeros.ptr
        self.a.N = N
        self.a.K = K
        self.a.ldx = K
        self.a.ldy = N
        self.a.group_size = group_size
        self.a.dtype = _dtype_code(scales)
        self.a.path = INT4MM_PATH_AUTO
        self.a.device = device
        self.a.prepared = _ptr_or_null(prepared)
        self.a.layout = layout if prepared is not None else INT4MM_LAYOUT_NONE
        self.refs = (qweight, mask, scales, zeros, prepared)  # keep the memory alive
        self.K = K
        self.N = N

    def __call__(self, x, y, stream):
        """Enqueue and return ``y``, or return None when this path does not apply."""
        cdef uintptr_t xp, yp, s
        cdef int64_t M, numel
        cdef int dev
        cdef int4mm_status status
        cdef int4mm_matmul_args a
        t = type(x)
        if type(y) is not t:
            return None
        if t is not _TORCH_TENSOR and t is not _CUPY_NDARRAY:
            _learn_type(t)
            if t is not _TORCH_TENSOR and t is not _CUPY_NDARRAY:
                return None
        xs = tuple(x.shape)
        ys = tuple(y.shape)
        nd = len(xs)
        # Explicit positive indices: this module compiles with wraparound=False,
        # under which xs[-1] would read before the tuple.
        if nd == 0 or len(ys) != nd or xs[nd - 1] != self.K or ys[nd - 1] != self.N:
            return None
        if xs[0:nd - 1] != ys[0:nd - 1]:
            return None
        if t is _TORCH_TENSOR:
            want = _TORCH_BF16 if self.a.dtype == INT4MM_DTYPE_BF16 else _TORCH_F16
            if x.dtype is not want or y.dtype is not want:
                return None
            dev = x.get_device()
            if dev != self.a.device or y.get_device() != dev:
                return None
            if not x.is_contiguous() or not y.is_contiguous():
                return None
            numel = x.numel()
            xp = x.data_ptr()
            yp = y.data_ptr()
            if stream is not None:
                s = stream
            elif _TORCH_RAW_STREAM is not None:
                s = _TORCH_RAW_STREAM(dev)
            else:
                return None
        else:
            if self.a.dtype != INT4MM_DTYPE_FP16 or x.dtype.char != "e" or y.dtype.char != "e":
                return None
            dev = x.device.id
            if dev != self.a.device or y.device.id != dev:
                return None
            if not x.flags.c_contiguous or not y.flags.c_contiguous:
                return None
            numel = x.size
            xp = x.data.ptr
            yp = y.data.ptr
            s = stream if stream is not None else _CUPY_CURRENT_STREAM().ptr
        if ((xp | yp) & 15) != 0:
            return None
        M = numel // self.K
        if M == 0:
            return y
        a = self.a
        a.x = <const void *>xp
        a.y = <void *>yp
        a.M = M
        a.stream = s
        with nogil:
            status = int4mm_matmul(&a)
        if status != INT4MM_OK:
            _raise_status(status)
        return y
