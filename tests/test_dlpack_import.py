"""Arrays read through DLPack: objects without a usable __cuda_array_interface__
(numpy, torch CPU tensors, bfloat16 tensors and DeviceArrays, JAX bfloat16).

The CPU tests drive the bridge's DLPack import with numpy arrays, torch CPU
tensors and a ctypes-built producer (any dtype, device, strides, byte offset),
all over host memory, which matmul must refuse as such.  The GPU tests need
torch, JAX or ml_dtypes and skip without them."""

from __future__ import annotations

import ctypes
import sys

import numpy as np
import pytest

import int4mm
from int4mm import _arrays as A
from int4mm import reference as ref
from int4mm.errors import Int4mmTypeError, Int4mmValueError

from .conftest import FakeCAI, have, jax_gpu, require_gpu

pytest.importorskip("int4mm._int4mm", reason="compiled extension not built")

needs_numpy_dlpack = pytest.mark.skipif(
    not hasattr(np.ndarray, "__dlpack__"), reason="numpy < 1.22 has no __dlpack__")

K, N = 64, 16


def nat():
    return A.native()


def aligned(shape, dtype, seed=0):
    """Random host data whose pointer is 64-byte aligned."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.zeros(n + 64, dtype=np.uint8)
    off = (-raw.ctypes.data) % 64
    out = raw[off:off + n].view(dtype).reshape(shape)
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind in "fc":
        out[...] = rng.standard_normal(shape).astype(dtype)
    else:
        out[...] = rng.integers(0, 2 if np.dtype(dtype).kind == "b" else 100, shape).astype(dtype)
    return out


def weights():
    w = ref.random_weights(K, N, seed=3)
    return {k: FakeCAI(np.ascontiguousarray(w[k])) for k in ("qweight", "scales", "zeros")}


def matmul(x, **kw):
    w = weights()
    return int4mm.matmul(x, w["qweight"], w["scales"], w["zeros"], **kw)


# ---------------------------------------------------------------- a ctypes DLPack producer

kDLCPU, kDLCUDA, kDLCUDAHost, kDLROCM, kDLCUDAManaged = 1, 2, 3, 10, 13
kDLInt, kDLUInt, kDLFloat, kDLBfloat, kDLComplex, kDLBool = 0, 1, 2, 4, 5, 6


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p)]


_PyCapsule_New = ctypes.pythonapi.PyCapsule_New
_PyCapsule_New.restype = ctypes.py_object
_PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_PyCapsule_IsValid = ctypes.pythonapi.PyCapsule_IsValid
_PyCapsule_IsValid.restype = ctypes.c_int
_PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]
_CAPSULE_NAMES = {name: ctypes.create_string_buffer(name) for name in
                  (b"dltensor", b"used_dltensor", b"dltensor_versioned")}


class FakeDLPack:
    """An object whose ``__dlpack__()`` returns a legacy capsule built with ctypes
    over ``arr``'s host memory, with any dtype / device / strides the test names.
    ``calls`` records the keyword arguments of each ``__dlpack__`` call and
    ``capsule`` is the last capsule returned.  The capsule has no destructor
    (this object owns the memory); a real producer's destructor would call
    the deleter of a capsule still named 'dltensor'."""

    def __init__(self, arr, *, code=None, bits=None, lanes=1, device_type=kDLCPU,
                 device_id=0, shape=None, strides=None, byte_offset=0, data=None,
                 name=b"dltensor", cai=None):
        self.arr = arr
        if code is None:
            code = {"f": kDLFloat, "i": kDLInt, "u": kDLUInt, "b": kDLBool}[arr.dtype.kind]
        shape = tuple(arr.shape if shape is None else shape)
        self._shape = (ctypes.c_int64 * max(len(shape), 1))(*shape)
        self._strides = None if strides is None else \
            (ctypes.c_int64 * max(len(strides), 1))(*strides)
        self.managed = m = DLManagedTensor()
        t = m.dl_tensor
        t.data = arr.ctypes.data if data is None else data
        t.device = DLDevice(device_type, device_id)
        t.ndim = len(shape)
        t.dtype = DLDataType(code, 8 * arr.dtype.itemsize if bits is None else bits, lanes)
        t.shape = ctypes.cast(self._shape, ctypes.POINTER(ctypes.c_int64))
        if self._strides is not None:
            t.strides = ctypes.cast(self._strides, ctypes.POINTER(ctypes.c_int64))
        t.byte_offset = byte_offset
        self._name = _CAPSULE_NAMES[name]
        self.calls = []
        if cai is not None:
            self.__cuda_array_interface__ = cai

    @property
    def address(self):
        return ctypes.addressof(self.managed)

    def __dlpack__(self, **kw):
        self.calls.append(kw)
        self.capsule = _PyCapsule_New(self.address, self._name, None)
        return self.capsule


# ---------------------------------------------------------------- CPU: numpy, torch CPU

@needs_numpy_dlpack
def test_numpy_x_refused_as_host_memory_naming_x():
    x = aligned((4, K), np.float16)
    with pytest.raises(Int4mmValueError, match=r"^x: points to host memory"):
        matmul(x)
    w = ref.random_weights(K, N, seed=3)
    with pytest.raises(Int4mmValueError, match=r"^qweight: points to host memory"):
        int4mm.prepare(np.ascontiguousarray(w["qweight"]), FakeCAI(w["scales"]),
                       FakeCAI(w["zeros"]))


@needs_numpy_dlpack
def test_numpy_out_and_bias_are_checked_through_dlpack():
    x = FakeCAI(aligned((4, K), np.float16))
    # shapes and dtypes come before placement, so these name out / bias
    with pytest.raises(Int4mmValueError, match=r"^out: expected shape \(4, 16\), got \(4, 15\)"):
        matmul(x, out=aligned((4, N - 1), np.float16))
    with pytest.raises(Int4mmTypeError, match=r"^bias: expected dtype float16 or bfloat16, got float32"):
        matmul(x, bias=aligned((N,), np.float32))
    with pytest.raises(Int4mmValueError, match=r"^x: points to host memory"):
        matmul(x, out=aligned((4, N), np.float16))


@needs_numpy_dlpack
@pytest.mark.parametrize("dtype,typestr", [
    (np.float16, "<f2"), (np.float32, "<f4"), (np.int32, "<i4"), (np.int64, "<i8"),
    (np.uint8, "|u1"), (np.bool_, "|b1"),
])
def test_numpy_view_fields(dtype, typestr):
    a = aligned((6, 10), dtype, seed=1)
    try:
        a.__dlpack__()
    except (BufferError, TypeError) as exc:  # older numpy: no DLPack for bool
        pytest.skip(f"numpy cannot export {np.dtype(dtype)} through DLPack: {exc}")
    v = nat().view(a, "a")
    assert v.protocol == "dlpack"
    assert v.typestr == typestr and v.itemsize == np.dtype(dtype).itemsize
    assert v.ptr == a.ctypes.data
    assert v.shape == (6, 10) and v.ndim == 2 and v.size == 60
    assert v.strides == (10, 1) and v.c_contiguous
    assert v.aligned16
    assert not v.readonly
    assert v.stream is None
    assert v.mem_kind in (nat().MEM_HOST, nat().MEM_HOST_PINNED) and v.device == -1
    assert A.dtype_name(v.typestr) == np.dtype(dtype).name


@needs_numpy_dlpack
def test_numpy_view_strides_offsets_and_empty():
    a = aligned((6, 10), np.float16, seed=2)
    v = nat().view(a.T, "a")
    assert v.shape == (10, 6) and v.strides == (1, 10) and not v.c_contiguous
    assert v.ptr == a.ctypes.data
    s = a[2:, 3::2]
    v = nat().view(s, "a")
    assert v.shape == (4, 4) and v.strides == (10, 2) and not v.c_contiguous
    assert v.ptr == s.ctypes.data == a.ctypes.data + 2 * (2 * 10 + 3)
    assert not v.aligned16
    v = nat().view(a[1], "a")  # 1-D row: contiguous, offset pointer
    assert v.c_contiguous and v.ptr == a.ctypes.data + 20
    v = nat().view(np.zeros((0, 5), np.float16), "a")
    assert v.size == 0 and v.shape == (0, 5) and v.c_contiguous


@needs_numpy_dlpack
@pytest.mark.parametrize("dtype,text", [(np.float64, "float64"), (np.complex64, "complex64"),
                                        (np.int16, "int16")])
def test_numpy_unsupported_dtype_is_a_type_error_naming_the_argument(dtype, text):
    # The dtype is read (and refused) before any placement check, so host
    # memory does not mask it.
    x = aligned((4, K), np.float32).astype(dtype)
    with pytest.raises(Int4mmTypeError, match=rf"^x: DLPack dtype {text} is not supported"):
        matmul(x)


@needs_numpy_dlpack
def test_numpy_read_only_export_failure_is_reported():
    a = aligned((4, K), np.float16)
    a.flags.writeable = False
    with pytest.raises(Int4mmTypeError, match=r"^x: expected an object exposing "
                       r"__cuda_array_interface__ or __dlpack__ .*got numpy\.ndarray "
                       r"\(its __dlpack__\(\) raised BufferError"):
        matmul(a)


def test_neither_protocol_message():
    with pytest.raises(Int4mmTypeError, match=r"^x: expected an object exposing "
                       r"__cuda_array_interface__ or __dlpack__ \(a torch/CuPy/Numba/JAX CUDA "
                       r"array\), got object$"):
        nat().view(object(), "x")


def test_cai_raising_without_dlpack_keeps_its_message():
    class Bad:
        @property
        def __cuda_array_interface__(self):
            raise RuntimeError("no CAI today")

    with pytest.raises(Int4mmTypeError, match=r"^w: expected an object exposing .*got .*Bad "
                       r"\(its __cuda_array_interface__ raised RuntimeError: no CAI today\)$"):
        nat().view(Bad(), "w")


def test_cai_raising_falls_back_to_dlpack():
    a = aligned((3, 8), np.float16, seed=4)

    class OldTorchBf16(FakeDLPack):  # torch < 2.x: KeyError from the CAI for bfloat16
        @property
        def __cuda_array_interface__(self):
            raise KeyError("torch.bfloat16")

    f = OldTorchBf16(a, code=kDLBfloat, bits=16)
    v = nat().view(f, "x")
    assert v.protocol == "dlpack" and v.typestr == "bfloat16" and v.ptr == a.ctypes.data
    assert f.calls == [{}]  # __dlpack__() called without arguments

    class BothFail(OldTorchBf16):
        def __dlpack__(self, **kw):
            raise BufferError("not today either")

    with pytest.raises(Int4mmTypeError, match=r"^x: .*\(its __cuda_array_interface__ raised "
                       r"KeyError: 'torch.bfloat16'\) \(its __dlpack__\(\) raised BufferError: "
                       r"not today either\)$"):
        nat().view(BothFail(a), "x")


def test_valid_cai_wins_over_dlpack():
    a = aligned((4, 8), np.float16)
    f = FakeDLPack(a, cai=FakeCAI(a).__cuda_array_interface__)
    v = nat().view(f, "x")
    assert v.protocol == "cai" and v.typestr == "<f2"
    assert f.calls == []


def test_opaque_cai_typestr_is_resolved_through_dlpack():
    """torch >= 2.x reports bfloat16 in its CAI as "<V2": DLPack names it."""
    a = aligned((4, 8), np.float16, seed=5)
    cai = FakeCAI(a, typestr="<V2").__cuda_array_interface__
    f = FakeDLPack(a, code=kDLBfloat, bits=16, cai=cai)
    v = nat().view(f, "x")
    assert v.protocol == "dlpack" and v.typestr == "bfloat16" and v.ptr == a.ctypes.data
    assert f.calls == [{}]
    # Without a (working) __dlpack__ the CAI reading stands and is reported as is.
    v = nat().view(FakeCAI(a, typestr="<V2"), "x")
    assert v.protocol == "cai" and v.typestr == "<V2"
    f = FakeDLPack(a, code=kDLComplex, bits=32, cai=cai)  # DLPack cannot help: keep the CAI
    v = nat().view(f, "x")
    assert v.protocol == "cai" and v.typestr == "<V2"
    with pytest.raises(Int4mmTypeError, match=r"^x: expected dtype float16, got void16"):
        A.check(v, "x", typestr=A.FP16)


def test_torch_cpu_bf16_view_and_host_refusal():
    torch = pytest.importorskip("torch")
    t = torch.randn(8, 24, dtype=torch.bfloat16)
    v = nat().view(t.t(), "x")
    assert v.protocol == "dlpack"
    assert v.typestr == "bfloat16" and A.dtype_name(v.typestr) == "bfloat16"
    assert v.itemsize == 2
    assert v.shape == (24, 8) and v.strides == (1, 24) and not v.c_contiguous
    assert v.ptr == t.data_ptr()
    s = t[2:, 5:]
    v = nat().view(s, "x")
    assert v.ptr == s.data_ptr() == t.data_ptr() + 2 * (2 * 24 + 5)
    assert v.mem_kind in (nat().MEM_HOST, nat().MEM_HOST_PINNED) and v.device == -1
    # A torch CPU tensor is host memory (it used to be "not a CUDA array").
    x = torch.randn(4, K).half()
    with pytest.raises(Int4mmValueError, match=r"^x: points to host memory"):
        matmul(x)
    g = torch.randn(4, K, requires_grad=True)
    with pytest.raises(Int4mmTypeError, match=r"^x: expected an object exposing .*"
                       r"its __dlpack__\(\) raised"):
        nat().view(g, "x")


# ---------------------------------------------------------------- CPU: the ctypes producer

def test_fake_producer_fields_and_byte_offset():
    a = aligned((64,), np.float16, seed=6)
    f = FakeDLPack(a, shape=(3, 5), strides=(10, 2), byte_offset=6)
    v = nat().view(f, "x")
    assert f.calls == [{}]
    assert v.ptr == a.ctypes.data + 6 and not v.aligned16
    assert v.shape == (3, 5) and v.strides == (10, 2) and not v.c_contiguous
    f = FakeDLPack(a, shape=(4, 16), byte_offset=32)  # NULL strides: C-contiguous
    v = nat().view(f, "x")
    assert v.strides == (16, 1) and v.c_contiguous and v.aligned16
    assert v.ptr == a.ctypes.data + 32
    f = FakeDLPack(a, shape=(4, 1, 16), strides=(16, 999, 1))  # size-1 dims: any stride
    assert nat().view(f, "x").c_contiguous
    f = FakeDLPack(a, shape=(), strides=None)
    v = nat().view(f, "x")
    assert v.shape == () and v.ndim == 0 and v.size == 1 and v.strides == ()


@pytest.mark.parametrize("code,bits,typestr", [
    (kDLFloat, 16, "<f2"), (kDLFloat, 32, "<f4"), (kDLInt, 32, "<i4"), (kDLInt, 64, "<i8"),
    (kDLUInt, 8, "|u1"), (kDLBool, 8, "|b1"), (kDLBfloat, 16, "bfloat16"),
])
def test_fake_producer_dtype_map(code, bits, typestr):
    a = aligned((4, 4), np.float64)
    v = nat().view(FakeDLPack(a, code=code, bits=bits), "x")
    assert v.typestr == typestr and v.itemsize == bits // 8


@pytest.mark.parametrize("code,bits,text", [
    (kDLFloat, 64, "float64"), (kDLBfloat, 32, "bfloat32"), (kDLUInt, 16, "uint16"),
    (kDLInt, 8, "int8"), (kDLComplex, 64, "complex64"), (9, 8, r"code 9 \(8 bits\)"),
])
def test_fake_producer_unsupported_dtype(code, bits, text):
    a = aligned((4, 4), np.float64)
    with pytest.raises(Int4mmTypeError, match=rf"^zeros: DLPack dtype {text} is not supported"):
        nat().view(FakeDLPack(a, code=code, bits=bits), "zeros")


def test_fake_producer_lanes_refused():
    a = aligned((4, 4), np.float32)
    with pytest.raises(Int4mmTypeError,
                       match=r"^scales: DLPack dtype float16x2 has 2 lanes; int4mm reads scalar"):
        nat().view(FakeDLPack(a, code=kDLFloat, bits=16, lanes=2), "scales")


@pytest.mark.parametrize("device_type", [kDLCPU, kDLCUDA, kDLCUDAHost, kDLCUDAManaged])
def test_fake_producer_host_memory_refused_whatever_the_device_claims(device_type):
    """The CUDA runtime classifies the pointer, as for a CAI: host memory is
    refused by the device check even when the producer claims kDLCUDA."""
    x = aligned((4, K), np.float16)
    v = nat().view(FakeDLPack(x, device_type=device_type), "x")
    assert v.mem_kind in (nat().MEM_HOST, nat().MEM_HOST_PINNED)
    with pytest.raises(Int4mmValueError, match=r"^x: points to (pinned )?host memory"):
        matmul(FakeDLPack(x, device_type=device_type))


def test_fake_producer_other_device_refused():
    a = aligned((4, 4), np.float16)
    with pytest.raises(Int4mmValueError, match=r"^x: DLPack device kDLROCM \(device_type 10, "
                       r"id 3\) is not CUDA memory"):
        nat().view(FakeDLPack(a, device_type=kDLROCM, device_id=3), "x")


def test_fake_producer_null_data():
    a = aligned((4,), np.float16)
    v = nat().view(FakeDLPack(a, shape=(0, 8), data=0), "x")
    assert v.ptr == 0 and v.size == 0 and v.device is None and v.mem_kind == nat().MEM_UNKNOWN
    with pytest.raises(Int4mmValueError, match=r"^x: data pointer is 0 for a non-empty array"):
        nat().view(FakeDLPack(a, shape=(2, 8), data=0), "x")


def test_fake_producer_negative_dimension():
    a = aligned((4,), np.float16)
    with pytest.raises(Int4mmValueError, match=r"^x: negative dimension in DLPack shape \(2, -1\)"):
        nat().view(FakeDLPack(a, shape=(2, -1)), "x")


@pytest.mark.parametrize("name", [b"used_dltensor", b"dltensor_versioned"])
def test_fake_producer_wrong_capsule_refused(name):
    a = aligned((4,), np.float16)
    with pytest.raises(Int4mmTypeError, match=r"^x: .*FakeDLPack\.__dlpack__\(\) returned "
                       r".*not an unconsumed DLPack 'dltensor' capsule"):
        nat().view(FakeDLPack(a, name=name), "x")


def test_capsule_lives_as_long_as_the_view():
    """The view holds the capsule and never renames it, so the producer's
    capsule destructor (which calls the DLManagedTensor's deleter) runs when
    the view dies, not before."""
    a = aligned((4, 8), np.float16)
    f = FakeDLPack(a)
    v = nat().view(f, "x")
    with_view = sys.getrefcount(f.capsule)
    del v
    without_view = sys.getrefcount(f.capsule)
    assert without_view == with_view - 1  # the view held the capsule, and let it go
    assert _PyCapsule_IsValid(f.capsule, b"dltensor") == 1  # still 'dltensor'
    f2 = FakeDLPack(a, code=kDLComplex, bits=64)
    with pytest.raises(Int4mmTypeError):
        nat().view(f2, "x")
    assert _PyCapsule_IsValid(f2.capsule, b"dltensor") == 1


# ---------------------------------------------------------------- CPU: allocation, DeviceArray

def test_dtype_name_and_bf16_allocation_rules():
    assert A.BF16 == "bfloat16" and A.dtype_name(A.BF16) == "bfloat16"

    for lib, shown in (("cupy", "CuPy"), ("numba", "Numba")):
        like = type("Like", (), {"__int4mm_library__": lib})()
        for make in (A.empty, A.scratch):
            with pytest.raises(Int4mmTypeError, match=rf"bfloat16 array with {shown}: {shown} "
                               r"has no bfloat16"):
                make(like, (2, 3), A.BF16, 0, 0)


def _empty_bf16():
    """A bfloat16 DeviceArray with no elements: needs no GPU (nothing is allocated)."""
    d = A.empty(object(), (0, 3), A.BF16, 0, 0)
    assert type(d).__name__ == "DeviceArray"
    return d


def test_empty_bf16_device_array_without_gpu():
    d = _empty_bf16()
    assert d.typestr == "bfloat16" and d.itemsize == 2 and d.nbytes == 0
    assert repr(d) == "DeviceArray(shape=(0, 3), dtype=bfloat16, device=0)"
    with pytest.raises(TypeError, match=r"bfloat16 has no __cuda_array_interface__ type "
                       r"string; use DLPack \(e\.g\. torch\.from_dlpack / jax\.dlpack"):
        _ = d.__cuda_array_interface__
    assert not hasattr(d, "__cuda_array_interface__")  # duck-typing consumers try DLPack
    assert d.__dlpack_device__() == (kDLCUDA, 0)
    v = nat().view(d, "x")  # through DLPack
    assert v.protocol == "dlpack" and v.typestr == "bfloat16" and v.itemsize == 2
    assert v.shape == (0, 3) and v.strides == (3, 1) and v.size == 0
    assert v.ptr == 0 and v.device is None and v.mem_kind == nat().MEM_UNKNOWN
    assert v.stream == d.stream  # a DeviceArray keeps its own stream, as in its CAI
    with pytest.raises(Int4mmValueError, match=r"not a supported element type"):
        nat().DeviceArray((0,), "<V2", 0)


def test_bf16_device_array_dtype_and_host_copy_without_ml_dtypes(monkeypatch):
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # import ml_dtypes -> ImportError
    d = _empty_bf16()
    assert d.dtype == np.dtype("V2")
    with pytest.raises(Int4mmTypeError, match=r"host copies of bfloat16 data need the "
                       r"ml_dtypes package"):
        d.copy_to_host()
    with pytest.raises(Int4mmTypeError, match=r"^x: host copies of bfloat16 data need"):
        nat().copy_to_host(nat().view(d, "x"))


def test_bf16_device_array_dtype_with_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    d = _empty_bf16()
    assert d.dtype == np.dtype(ml_dtypes.bfloat16)
    h = d.copy_to_host()
    assert h.dtype == np.dtype(ml_dtypes.bfloat16) and h.shape == (0, 3)


# ---------------------------------------------------------------- GPU

def _torch_gpu():
    require_gpu()
    if not have("torch"):
        pytest.skip("torch is not installed")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    return torch


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint16)


def test_torch_bf16_through_dlpack():
    torch = _torch_gpu()
    g = torch.Generator(device="cuda").manual_seed(11)
    t = torch.randn(64, 40, dtype=torch.bfloat16, device="cuda", generator=g)
    v = nat().view(t, "x")
    assert v.protocol == "dlpack" and v.typestr == "bfloat16"
    assert v.ptr == t.data_ptr() and v.aligned16
    assert v.shape == (64, 40) and v.strides == (40, 1) and v.c_contiguous
    assert v.mem_kind == nat().MEM_DEVICE and v.device == t.device.index
    assert v.stream is None  # no stream in DLPack: the launch-stream rules decide
    tt = t.t()
    v = nat().view(tt, "x")
    assert v.shape == (40, 64) and v.strides == (1, 40) and not v.c_contiguous
    assert v.ptr == t.data_ptr()
    s = t[3:, 8:]
    v = nat().view(s, "x")
    assert v.ptr == s.data_ptr() == t.data_ptr() + 2 * (3 * 40 + 8)
    assert v.strides == (40, 1) and not v.c_contiguous
    # launch-stream rule for a DLPack view of a torch tensor: torch's current stream
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        xv = nat().view(t, "x")
        target, waits = A.launch_stream(None, xv, [xv])
    assert target == side.cuda_stream and waits == []
    # the bytes behind the view are the tensor's
    if have("ml_dtypes"):
        torch.cuda.synchronize()
        host = nat().copy_to_host(nat().view(t, "x"))
        expect = t.view(torch.int16).cpu().numpy().view(np.uint16)
        assert np.array_equal(_bits(host), expect)


def test_torch_fp16_still_through_cai():
    torch = _torch_gpu()
    t = torch.randn(16, 32, device="cuda").half()
    v = nat().view(t, "x")
    assert v.protocol == "cai" and v.typestr == "<f2"
    assert v.ptr == t.data_ptr() and v.stream is None  # torch's CAI is v2: no stream
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        target, _ = A.launch_stream(None, v, [v])
    assert target == side.cuda_stream


def test_torch_empty_bf16():
    torch = _torch_gpu()
    like = torch.empty(1, device="cuda", dtype=torch.float16)
    for make in (A.empty, A.scratch):
        y = make(like, (3, 5), A.BF16, 0, torch.cuda.current_stream().cuda_stream)
        assert y.dtype == torch.bfloat16 and y.shape == (3, 5) and y.is_cuda


def test_jax_bf16_through_dlpack():
    jax, jnp, gpu = jax_gpu()
    ml_dtypes = pytest.importorskip("ml_dtypes")  # a dependency of jax
    host = np.random.default_rng(12).standard_normal((24, 16)).astype(ml_dtypes.bfloat16)
    xj = jax.device_put(jnp.asarray(host), gpu)
    xj.block_until_ready()
    assert xj.dtype == jnp.bfloat16
    v = nat().view(xj, "x")
    assert v.protocol == "dlpack" and v.typestr == "bfloat16"
    assert v.shape == (24, 16) and v.c_contiguous
    assert v.mem_kind == nat().MEM_DEVICE
    if hasattr(xj, "unsafe_buffer_pointer"):
        assert v.ptr == xj.unsafe_buffer_pointer()
    back = nat().copy_to_host(v)
    assert np.array_equal(_bits(back), _bits(host))


def test_bf16_device_array_on_gpu():
    torch = _torch_gpu()
    d = nat().DeviceArray((8, 24), "bfloat16", 0)
    assert repr(d) == "DeviceArray(shape=(8, 24), dtype=bfloat16, device=0)"
    with pytest.raises(TypeError, match=r"bfloat16 has no __cuda_array_interface__"):
        _ = d.__cuda_array_interface__
    v = nat().view(d, "x")
    assert v.protocol == "dlpack" and v.typestr == "bfloat16"
    assert v.ptr == d.ptr and v.mem_kind == nat().MEM_DEVICE and v.device == 0
    assert v.c_contiguous and v.strides == (24, 1)
    t = torch.from_dlpack(d)
    assert t.dtype == torch.bfloat16 and t.shape == (8, 24)
    assert t.data_ptr() == d.ptr  # zero copy
    src = torch.randn(8, 24, device="cuda", dtype=torch.bfloat16)
    t.copy_(src)  # written through torch, read back through int4mm
    torch.cuda.synchronize()
    if have("ml_dtypes"):
        expect = src.view(torch.int16).cpu().numpy().view(np.uint16)
        assert np.array_equal(_bits(d.copy_to_host()), expect)
    else:
        with pytest.raises(Int4mmTypeError, match=r"ml_dtypes"):
            d.copy_to_host()


def test_bf16_device_array_host_round_trip():
    require_gpu()
    ml_dtypes = pytest.importorskip("ml_dtypes")
    host = np.random.default_rng(13).standard_normal((5, 33)).astype(ml_dtypes.bfloat16)
    d = nat().DeviceArray.from_host(host, 0)
    assert d.typestr == "bfloat16" and d.shape == (5, 33) and d.nbytes == 5 * 33 * 2
    assert d.dtype == np.dtype(ml_dtypes.bfloat16)
    back = d.copy_to_host()
    assert back.dtype == np.dtype(ml_dtypes.bfloat16)
    assert np.array_equal(_bits(back), _bits(host))
    assert np.array_equal(_bits(nat().copy_to_host(nat().view(d, "d"))), _bits(host))
    if have("jax"):
        import jax.dlpack

        try:
            yj = jax.dlpack.from_dlpack(d)
        except Exception as exc:  # noqa: BLE001 - no JAX GPU backend
            pytest.skip(f"jax cannot import a CUDA DLPack tensor here: {exc}")
        assert str(yj.dtype) == "bfloat16"
        assert np.array_equal(_bits(np.asarray(yj)), _bits(host))
