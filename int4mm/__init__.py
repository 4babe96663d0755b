"""int4mm: fp16 activations x 4-bit quantized weights on NVIDIA tensor cores.

Works with any array exposing ``__cuda_array_interface__`` or DLPack (PyTorch,
CuPy, Numba, JAX); the core has no torch dependency.  See ``int4mm.reference`` for
the exact formats (numpy oracle) and ``python -m int4mm info`` for the build.
"""

from __future__ import annotations

from . import reference
from ._api import (
    LAYOUT,
    PreparedWeight,
    chosen_config,
    chosen_path,
    matmul,
    pack_dense,
    pack_sparse,
    prepare,
    unpack_dense,
    unpack_sparse,
    validate_sparse_mask,
)
from ._info import info, is_available
from ._shard import plan_shards, shard
from ._version import __version__
from .errors import (
    BadDataError,
    CUDAError,
    Int4mmError,
    Int4mmTypeError,
    Int4mmValueError,
    NoDeviceError,
    UnsupportedDeviceError,
)
from .gptq import load_gptq
from .quantize import quantize

__all__ = [
    "LAYOUT",
    "BadDataError",
    "CUDAError",
    "Int4mmError",
    "Int4mmTypeError",
    "Int4mmValueError",
    "NoDeviceError",
    "PreparedWeight",
    "UnsupportedDeviceError",
    "__version__",
    "chosen_config",
    "chosen_path",
    "info",
    "is_available",
    "load_gptq",
    "matmul",
    "pack_dense",
    "pack_sparse",
    "plan_shards",
    "prepare",
    "quantize",
    "reference",
    "shard",
    "unpack_dense",
    "unpack_sparse",
    "validate_sparse_mask",
]
