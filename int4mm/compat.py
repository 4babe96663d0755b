"""Drop-in replacements for the original ``int4matmul`` extension's functions.

Same names, same argument order, so an existing caller switches with one
import change::

    from int4mm import compat as int4matmul
    int4matmul.quant_int4_linear_mult(outs, qweight, x, scales, zeros, sparse_mask)

``outs`` (fp16, ``(B, M, N)``) is written in place, as before.  Unlike the
original, these accept any M, launch on the arrays' stream rather than the
legacy default stream, and validate every argument.
"""

from __future__ import annotations

from . import _api
from . import _arrays as A
from .errors import Int4mmValueError

__all__ = ["quant_int4_linear_mult", "quant_int4_linear_mult_mtx",
           "quant_int4_linear_mult_vec", "weight_matrix_packing"]


def _mult(outs, matrix, multiplier, scales, zeros, sparse_mask, path):
    _api.matmul(multiplier, matrix, scales, zeros, mask=sparse_mask, out=outs, path=path)


def quant_int4_linear_mult(outs, matrix, multiplier, scales, zeros, sparse_mask=None):
    """``outs = multiplier @ dequant(matrix)``; picks the kernel by batch size."""
    _mult(outs, matrix, multiplier, scales, zeros, sparse_mask, "auto")


def quant_int4_linear_mult_mtx(outs, matrix, multiplier, scales, zeros, sparse_mask=None):
    """As :func:`quant_int4_linear_mult`, forcing the matrix-matrix (tensor-core) kernel."""
    _mult(outs, matrix, multiplier, scales, zeros, sparse_mask, "large_m")


def quant_int4_linear_mult_vec(outs, matrix, multiplier, scales, zeros, sparse_mask=None):
    """As :func:`quant_int4_linear_mult`, forcing the matrix-vector kernel."""
    _mult(outs, matrix, multiplier, scales, zeros, sparse_mask, "small_m")


class _Transposed:
    """A (K, N) view of an (N, K) CUDA array: same memory, swapped shape/strides."""

    def __init__(self, obj, name):
        v = A.view(obj, name)
        if v.ndim != 2:
            raise Int4mmValueError(f"{name}: expected a 2-D (N, K) array, got shape {v.shape}")
        cai = dict(obj.__cuda_array_interface__)
        cai["shape"] = (v.shape[1], v.shape[0])
        cai["strides"] = (v.strides[1] * v.itemsize, v.strides[0] * v.itemsize)
        cai["version"] = 3
        self.__cuda_array_interface__ = cai
        self._keep = obj


def weight_matrix_packing(wt_outs, msk_outs, wt_in, msk_in):
    """Pack untransposed uint8 codes ``(N, K)`` and keep-mask ``(N, K)`` into
    ``wt_outs`` int32 ``(K // 16, N)`` and ``msk_outs`` int32 ``(K // 32, N)``."""
    _api.pack_sparse(_Transposed(wt_in, "wt_in"), _Transposed(msk_in, "msk_in"),
                     out=(wt_outs, msk_outs))
