"""Round-to-nearest 4-bit quantization on the GPU: ``int4mm.quantize``.

The arithmetic (and its numpy twin, :func:`int4mm.reference.quantize_rtn`,
which matches it bit for bit) is described in src/cuda/int4mm.h and in
:func:`int4mm.reference.quantize_rtn`.
"""

from __future__ import annotations

from . import _api
from . import _arrays as A
from .errors import Int4mmValueError

__all__ = ["quantize"]


def quantize(weight, group_size=128, sparse=False, *, stream=None) -> _api.PreparedWeight:
    """Quantize an fp16 or bf16 weight ``(K, N)`` (``y = x @ W``) into int4mm's formats.

    Round-to-nearest, asymmetric, per group of ``group_size`` rows (None:
    per output channel).  With ``sparse=True`` every aligned 32-row block of
    each column first keeps its 16 largest ``|w|`` (ties: the lower row), and
    the groups are quantized over the kept weights; the result is 16:32
    sparse.  ``weight`` may have any strides (e.g. ``linear.weight.t()``, a
    transposed torch view, needs no copy).

    Returns a :class:`PreparedWeight` whose ``qweight``, ``scales``,
    ``zeros`` (and ``mask``) arrays are allocated with ``weight``'s library.
    Work is enqueued on ``stream`` (default: the stream ``weight`` carries,
    else its library's current stream); a first pass refuses Inf/NaN
    weights and synchronizes that stream.  Scales and zeros have the
    weight's dtype (bf16 weights give a weight prepared for bf16
    activations).
    """
    wv = A.check(A.view(weight, "weight"), "weight", typestr=A.FLOATS, ndim=2,
                 contiguous=False, aligned=False)
    K, N = wv.shape
    G = K if group_size is None else group_size
    if isinstance(G, bool) or not isinstance(G, int):
        raise Int4mmValueError(f"group_size: expected an int or None, got {group_size!r}")
    unit = 32 if sparse else 8
    if N <= 0 or N % 8:
        raise Int4mmValueError(f"weight: N = {N} (out_features, dim 1) must be a positive "
                               "multiple of 8")
    if K <= 0 or K % unit:
        raise Int4mmValueError(f"weight: K = {K} (in_features, dim 0) must be a positive "
                               f"multiple of {unit}{' for 16:32 sparsity' if sparse else ''}")
    if G <= 0 or K % G or G % unit:
        raise Int4mmValueError(
            f"group_size: {group_size} must divide K = {K} and be a positive multiple of "
            f"{unit}{' for 16:32 sparse weights' if sparse else ''} (or None: per channel)"
        )
    device = A.common_device([("weight", wv)])
    target, waits = A.launch_stream(stream, wv, (wv,))
    nat = A.native()
    for producer in waits:
        nat.stream_wait(device, target, producer)
    rows = K // 16 if sparse else K // 8
    qweight = A.empty(weight, (rows, N), A.INT32, device, target)
    mask = A.empty(weight, (K // 32, N), A.INT32, device, target) if sparse else None
    scales = A.empty(weight, (K // G, N), wv.typestr, device, target)
    zeros = A.empty(weight, (K // G, N), wv.typestr, device, target)
    nat.quantize_rtn(wv, A.view(qweight, "qweight"),
                     None if mask is None else A.view(mask, "mask"),
                     A.view(scales, "scales"), A.view(zeros, "zeros"), K, N, G, device, target)
    for arr in (qweight, mask, scales, zeros):
        if type(arr).__name__ == "DeviceArray":
            arr.stream = target  # consumers order their reads after the kernel
    return _api.prepare(qweight, scales, zeros, mask, validate=False, stream=target)
