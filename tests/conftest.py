"""Shared test helpers: fake CUDA array interfaces for CPU tests, GPU gating,
framework adapters and output poisoning for GPU tests."""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

# JAX reserves 75% of GPU memory at start by default; tests share the GPU
# between several processes (pytest-xdist), so allocate on demand instead.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def pytest_report_header(config):
    try:
        import int4mm
    except ImportError as exc:
        return f"int4mm: not importable ({exc})"
    return f"int4mm {int4mm.__version__} from {os.path.dirname(int4mm.__file__)}"


def pytest_configure(config):
    """With INT4MM_EXPECT_INSTALLED_AT (tools/test_installed.sh), the tests must
    exercise that installed copy, not a source tree that shadows it."""
    expected = os.environ.get("INT4MM_EXPECT_INSTALLED_AT")
    if expected:
        import int4mm

        here = os.path.realpath(os.path.dirname(int4mm.__file__))
        if here != os.path.realpath(expected):
            raise pytest.UsageError(f"int4mm imported from {here}, expected the installed "
                                    f"{expected}")


class FakeCAI:
    """An object exposing a __cuda_array_interface__ over *host* memory.

    Lets CPU-only tests drive every validation path of the API (dtype, shape,
    strides, alignment, read-only, host memory) without a GPU: the pointer is
    real host memory, so the library must refuse it before any kernel runs.
    """

    def __init__(self, arr, *, shape=None, strides=None, typestr=None, offset=0,
                 readonly=False, version=3, stream=None, extra=None):
        self._arr = arr
        ptr = arr.ctypes.data + offset
        self.__cuda_array_interface__ = {
            "shape": tuple(arr.shape if shape is None else shape),
            "typestr": typestr or arr.dtype.str,
            "data": (ptr, readonly),
            "strides": strides,
            "version": version,
        }
        if version >= 3:
            self.__cuda_array_interface__["stream"] = stream
        if extra:
            self.__cuda_array_interface__.update(extra)


def _gpu_reason():
    try:
        import int4mm
    except ImportError as exc:
        return f"int4mm not importable: {exc}"
    info = int4mm.info()
    if "error" in info:
        return info["error"]
    if not info["devices"]:
        return f"no GPU visible ({info.get('driver_status', 'no driver')})"
    if not any(d["supported"] for d in info["devices"]):
        return "no GPU supported by this build: " + info["devices"][0]["reason"]
    return None


@functools.cache
def gpu_skip_reason():
    return _gpu_reason()


def require_gpu():
    reason = gpu_skip_reason()
    if reason:
        pytest.skip(f"GPU test skipped: {reason}")


def jax_gpu():
    """(jax, jax.numpy, the first JAX GPU device), or skip: no GPU, no jax,
    or a jax without a GPU backend."""
    require_gpu()
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    try:
        device = jax.devices("gpu")[0]
    except RuntimeError:
        pytest.skip("jax has no GPU backend here")
    return jax, jnp, device


@pytest.fixture
def gpu():
    require_gpu()


def have(module):
    try:
        __import__(module)
        return True
    except Exception:  # noqa: BLE001
        return False


# ---------------------------------------------------------------- frameworks

class Torch:
    name = "torch"

    def __init__(self):
        import torch

        self.t = torch

    def to_device(self, a):
        return self.t.from_numpy(np.ascontiguousarray(a)).cuda()

    def to_host(self, a):
        self.t.cuda.synchronize()
        return a.cpu().numpy()

    def empty(self, shape, dtype):
        return self.t.empty(shape, dtype=getattr(self.t, np.dtype(dtype).name), device="cuda")

    def poisoned(self, shape, dtype=np.float16):
        """An output array filled with NaN (or 0xAB bytes): unwritten cells show."""
        out = self.empty(shape, dtype)
        if np.dtype(dtype).kind == "f":
            out.fill_(float("nan"))
        else:
            out.fill_(0xAB if np.dtype(dtype).itemsize == 1 else -0x54545455)
        return out

    def is_native(self, a):
        return isinstance(a, self.t.Tensor)


class CuPy:
    name = "cupy"

    def __init__(self):
        import cupy

        self.cp = cupy

    def to_device(self, a):
        return self.cp.asarray(np.ascontiguousarray(a))

    def to_host(self, a):
        self.cp.cuda.runtime.deviceSynchronize()
        return self.cp.asnumpy(a)

    def poisoned(self, shape, dtype=np.float16):
        out = self.cp.empty(shape, dtype=dtype)
        out.fill(np.nan if np.dtype(dtype).kind == "f" else 0xAB)
        return out

    def is_native(self, a):
        return isinstance(a, self.cp.ndarray)


class Numba:
    name = "numba"

    def __init__(self):
        from numba import cuda

        self.cuda = cuda

    def to_device(self, a):
        return self.cuda.to_device(np.ascontiguousarray(a))

    def to_host(self, a):
        self.cuda.synchronize()
        return a.copy_to_host()

    def poisoned(self, shape, dtype=np.float16):
        fill = np.nan if np.dtype(dtype).kind == "f" else 0xAB
        return self.cuda.to_device(np.full(shape, fill, dtype=dtype))

    def is_native(self, a):
        return self.cuda.is_cuda_array(a) and type(a).__module__.startswith("numba")


FRAMEWORKS = {"torch": Torch, "cupy": CuPy, "numba": Numba}
_MODULES = {"torch": "torch", "cupy": "cupy", "numba": "numba.cuda"}


@functools.cache
def framework(name):
    require_gpu()
    if not have(_MODULES[name]):
        pytest.skip(f"{name} is not installed")
    return FRAMEWORKS[name]()


@pytest.fixture
def torch_fw():
    return framework("torch")


def rel_err(y, ref):
    y = np.asarray(y, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(y - ref) / max(np.linalg.norm(ref), 1e-30))


TOL = 2e-3
