"""Array plumbing for the public API: reading CUDA array interfaces (or DLPack)
through the bridge, argument checks with messages that name the argument, choosing the
launch stream, and allocating results with the caller's own library.

Nothing here does pointer arithmetic or knows about kernels.
"""

from __future__ import annotations

import math
import sys

from .errors import Int4mmTypeError, Int4mmValueError

# typestrs the bridge normalizes to
FP16 = "<f2"
INT32 = "<i4"
UINT8 = "|u1"
BOOL = "|b1"
# bfloat16 has no CAI type string; the bridge reports it (read through DLPack)
# with this token, which no CAI typestr can equal (those start with "<>|=").
BF16 = "bfloat16"
#: The activation / scale dtypes.
FLOATS = (FP16, BF16)

_DTYPE_NAMES = {FP16: "float16", INT32: "int32", UINT8: "uint8", BOOL: "bool",
                BF16: "bfloat16"}


def native():
    """The compiled bridge, imported on first use with a clear error if absent."""
    try:
        from . import _int4mm
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "int4mm's compiled extension (int4mm._int4mm) is missing or failed to load: "
            f"{exc}. Reinstall int4mm (pip install int4mm-cuXYZ, or build from source "
            "with `pip install .` and a CUDA toolkit)."
        ) from exc
    return _int4mm


def dtype_name(typestr: str) -> str:
    if typestr in _DTYPE_NAMES:
        return _DTYPE_NAMES[typestr]
    try:
        import numpy as np

        return np.dtype(typestr).name
    except (TypeError, ValueError):
        return typestr


def view(obj, name: str):
    """Parse ``obj.__cuda_array_interface__``, or import ``obj`` through DLPack
    when it has no usable one (through the bridge)."""
    return native().view(obj, name)


def check(v, name: str, *, typestr, ndim=None, shape=None, contiguous=True, aligned=True,
          writable=False):
    """Validate one array view; every message names the argument."""
    if isinstance(typestr, str):
        typestr = (typestr,)
    if v.typestr not in typestr:
        want = " or ".join(dtype_name(t) for t in typestr)
        raise Int4mmTypeError(f"{name}: expected dtype {want}, got {dtype_name(v.typestr)}")
    if ndim is not None and v.ndim not in (ndim if isinstance(ndim, tuple) else (ndim,)):
        raise Int4mmValueError(f"{name}: expected {ndim} dimensions, got shape {v.shape}")
    if shape is not None and tuple(v.shape) != tuple(shape):
        raise Int4mmValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(v.shape)}")
    if v.size == 0:
        return v
    if contiguous and not v.c_contiguous:
        raise Int4mmValueError(
            f"{name}: must be C-contiguous (row-major, densely packed); got strides "
            f"{tuple(v.strides)} (in elements) for shape {tuple(v.shape)}. "
            "Make a contiguous copy first (e.g. .contiguous() / cupy.ascontiguousarray)."
        )
    if aligned and not v.aligned16:
        raise Int4mmValueError(
            f"{name}: data pointer {v.ptr:#x} is not 16-byte aligned; int4mm's kernels use "
            "16-byte loads. Pass an array that starts at an aligned address (a fresh "
            "allocation, not an offset view)."
        )
    if writable and v.readonly:
        raise Int4mmValueError(f"{name}: is read-only; int4mm must write its result there")
    return v


def common_device(views, default: int = 0) -> int:
    """The one GPU every non-empty array lives on (``default`` when all are empty).

    Refuses host memory and arrays spread over several devices, naming the
    argument.  Called after the shape rules, so a wrong shape is reported as
    such even for an array in the wrong place.
    """
    device = None
    first = None
    for name, v in views:
        if v is None or v.size == 0:
            continue
        if v.mem_kind not in (2, 3):  # INT4MM_MEM_DEVICE, INT4MM_MEM_MANAGED
            where = "pinned host" if v.mem_kind == 1 else "host"
            raise Int4mmValueError(
                f"{name}: points to {where} memory; int4mm needs arrays in GPU device memory"
            )
        if device is None:
            device, first = v.device, name
        elif v.device != device:
            raise Int4mmValueError(
                f"{name} is on device {v.device} but {first} is on device {device}; "
                "all arrays of one call must be on the same GPU"
            )
    return default if device is None else device


def stream_handle(stream) -> int:
    """An integer cudaStream_t from an explicit ``stream=`` argument.

    Accepts an int, an object with ``__cuda_stream__`` (returns
    ``(version, handle)``), ``cuda_stream`` (torch), ``ptr`` (CuPy) or
    ``handle`` (Numba; a ctypes pointer).
    """
    if isinstance(stream, bool):
        raise Int4mmTypeError(f"stream: expected a CUDA stream or handle, got {stream!r}")
    if isinstance(stream, int):
        if stream < 0:
            raise Int4mmValueError(f"stream: handle must be non-negative, got {stream}")
        return stream
    proto = getattr(stream, "__cuda_stream__", None)
    if proto is not None:
        value = proto() if callable(proto) else proto
        return int(value[1])
    for attr in ("cuda_stream", "ptr"):
        h = getattr(stream, attr, None)
        if isinstance(h, int):
            return h
    h = getattr(stream, "handle", None)
    if h is not None:
        h = getattr(h, "value", h)
        return int(h or 0)
    raise Int4mmTypeError(
        f"stream: expected an int handle or a stream object (torch.cuda.Stream, "
        f"cupy.cuda.Stream, numba stream, or one with __cuda_stream__), got {type(stream).__name__}"
    )


def _framework_current_stream(obj, device: int):
    """The current stream of the library that owns ``obj``, if it has one."""
    mod = type(obj).__module__ or ""
    if mod.startswith("torch") and "torch" in sys.modules:
        import torch

        return torch.cuda.current_stream(device).cuda_stream
    return None


def launch_stream(stream, x, views) -> tuple[int, list[int]]:
    """The stream to launch on, and the producer streams it must wait for.

    An explicit ``stream`` wins.  Otherwise the stream ``x`` carries (CAI v3),
    else its library's current stream, else the legacy default stream.
    Every other stream named by an input's CAI is waited on (event record +
    stream wait: the host never blocks).
    """
    if stream is not None:
        target = stream_handle(stream)
    elif x.stream is not None:
        target = x.stream
    else:
        current = _framework_current_stream(x.obj, x.device)
        target = current if current is not None else 0
    waits = []
    for v in views:
        if v is None or v.stream is None:
            continue
        s = v.stream
        if s != target and s not in waits and not (s in (0, 1) and target in (0, 1)):
            waits.append(s)
    return target, waits


def _library_of(obj):
    # A wrapper may name the library to allocate with (int4mm.torch's views).
    lib = getattr(type(obj), "__int4mm_library__", None)
    if lib is not None:
        return lib
    mod = type(obj).__module__ or ""
    if mod.startswith("torch"):
        return "torch"
    if mod.startswith("cupy"):
        return "cupy"
    if mod.startswith("numba"):
        return "numba"
    if mod.startswith(("jax", "jaxlib")):
        return "jax"
    return None


def _no_bf16(lib: str):
    return Int4mmTypeError(
        f"cannot allocate a bfloat16 array with {lib}: {lib} has no bfloat16 dtype. "
        "Pass torch or JAX arrays for bfloat16 data, or an out= array of your own."
    )


def empty(like, shape, typestr: str, device: int, stream: int):
    """Allocate an uninitialized device array with ``like``'s own library.

    torch -> torch.Tensor, CuPy -> cupy.ndarray, Numba -> DeviceNDArray,
    anything else -> int4mm's own :class:`DeviceArray` (CAI + DLPack; a
    bfloat16 one has DLPack only).  CuPy and Numba have no bfloat16: asking
    them for ``BF16`` raises Int4mmTypeError.
    """
    shape = tuple(int(s) for s in shape)
    lib = _library_of(like)
    if lib == "torch":
        import torch

        dt = {FP16: torch.float16, INT32: torch.int32, UINT8: torch.uint8,
              BF16: torch.bfloat16}[typestr]
        return torch.empty(shape, dtype=dt, device=f"cuda:{device}")
    if lib in ("cupy", "numba") and typestr == BF16:
        raise _no_bf16("CuPy" if lib == "cupy" else "Numba")
    if lib == "cupy":
        import cupy

        with cupy.cuda.Device(device):
            return cupy.empty(shape, dtype=typestr)
    if lib == "numba":
        import numpy as np
        from numba import cuda

        with cuda.gpus[device]:
            return cuda.device_array(shape, dtype=np.dtype(typestr))
    return native().DeviceArray(shape, typestr, device, stream)


def numel(shape) -> int:
    return int(math.prod(shape))


class _StreamHandle:
    """A raw ``cudaStream_t`` behind the CUDA stream protocol (``__cuda_stream__``)."""

    __slots__ = ("handle",)

    def __init__(self, handle: int):
        self.handle = handle

    def __cuda_stream__(self):
        return (0, self.handle)


def _cupy_stream(cupy, handle: int):
    """A CuPy stream object for a raw handle: ``Stream.from_external`` (CuPy
    14+, through the stream protocol), else ``ExternalStream``, which CuPy 14
    deprecates."""
    from_external = getattr(cupy.cuda.Stream, "from_external", None)
    if from_external is not None:
        return from_external(_StreamHandle(handle))
    return cupy.cuda.ExternalStream(handle)


def scratch(like, shape, typestr: str, device: int, stream: int):
    """A temporary device array that work enqueued on ``stream`` may use after
    the caller drops it.

    torch: from the caching allocator, marked as used on ``stream``
    (``record_stream``) when that is not torch's current stream; CuPy: from
    the memory pool of ``stream``; otherwise a cudaMalloc'ed array (whose
    cudaFree waits for the device).  bfloat16 with CuPy or Numba raises
    Int4mmTypeError, as in :func:`empty`.
    """
    lib = _library_of(like)
    if lib in ("cupy", "numba") and typestr == BF16:
        raise _no_bf16("CuPy" if lib == "cupy" else "Numba")
    if lib == "torch":
        import torch

        buf = empty(like, shape, typestr, device, stream)
        current = torch.cuda.current_stream(device).cuda_stream
        if stream != current and not (stream in (0, 1) and current == 0):
            buf.record_stream(torch.cuda.ExternalStream(stream, device=f"cuda:{device}"))
        return buf
    if lib == "cupy":
        import cupy

        with cupy.cuda.Device(device), _cupy_stream(cupy, stream):
            return cupy.empty(tuple(int(s) for s in shape), dtype=typestr)
    if lib == "numba":
        return empty(like, shape, typestr, device, stream)
    return native().DeviceArray(tuple(int(s) for s in shape), typestr, device, stream)


def result(x, out):
    """What :func:`int4mm.matmul` returns for a result it allocated: JAX input
    gets a JAX array (zero-copy, through DLPack), every other library the
    array :func:`empty` made."""
    if _library_of(x) == "jax":
        import jax.dlpack

        return jax.dlpack.from_dlpack(out)
    return out
