"""GPTQ checkpoints (AutoGPTQ / GPTQModel "gptq" format) into int4mm weights.

See FORMATS.md, "GPTQ checkpoints": ``qweight`` is int4mm's dense layout
already; ``qzeros`` are unpacked along N (8 per word) into fp16 zeros
``(K // G, N)`` (+1 for the classic "v1" storage); symmetric checkpoints use
zero 8.  Act-order checkpoints (a ``g_idx`` that is not ``k // G``) are
turned into contiguous groups at load time: ``perm = stable argsort(g_idx)``
sorts the weight's rows (``W'[j] = W[perm[j]]``), and :func:`int4mm.matmul`
gathers ``x[..., perm]`` on the GPU before each multiplication (one extra
read and write of ``x``; the weight kernels stay the fast grouped ones).

Loading happens on the host with numpy (the row sort unpacks and repacks the
codes); only the finished arrays are copied to the GPU.
"""

from __future__ import annotations

import os

import numpy as np

from . import reference as ref
from .errors import Int4mmTypeError, Int4mmValueError

__all__ = ["gptq_arrays", "load_gptq", "read_tensors"]


def _key_prefix(prefix: str) -> str:
    if not prefix:
        return ""
    return prefix if prefix.endswith(".") else prefix + "."


def read_tensors(tensors_or_path, prefix: str = "") -> dict:
    """The arrays named ``{prefix}.qweight``, ``.qzeros``, ``.scales``, ``.g_idx``,
    ``.bias`` (those present) from a safetensors file or a dict, as numpy arrays
    keyed by their short names."""
    p = _key_prefix(prefix)
    names = ("qweight", "qzeros", "scales", "g_idx", "bias")
    out = {}
    if isinstance(tensors_or_path, (str, os.PathLike)):
        try:
            from safetensors import safe_open
        except ImportError as exc:
            raise ImportError("reading a .safetensors file needs the safetensors package "
                              "(pip install safetensors)") from exc
        with safe_open(os.fspath(tensors_or_path), framework="numpy") as f:
            keys = set(f.keys())
            for n in names:
                if p + n in keys:
                    out[n] = f.get_tensor(p + n)
        where = f"{os.fspath(tensors_or_path)}"
        available = keys
    elif hasattr(tensors_or_path, "keys"):
        for n in names:
            if p + n in tensors_or_path:
                out[n] = _host(tensors_or_path[p + n], p + n)
        where = "the tensors given"
        available = set(tensors_or_path.keys())
    else:
        raise Int4mmTypeError(
            "tensors_or_path: expected a safetensors file path or a dict of arrays, got "
            f"{type(tensors_or_path).__name__}"
        )
    if "qweight" not in out:
        near = sorted(k for k in available if k.endswith(".qweight") or k == "qweight")[:5]
        raise Int4mmValueError(
            f"prefix: no tensor {p + 'qweight'!r} in {where}"
            + (f"; layers found include {near}" if near else "")
        )
    return out


def _host(a, name):
    """A numpy copy/view of a host or device array."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "__cuda_array_interface__"):
        from . import _arrays as A

        return A.native().copy_to_host(A.view(a, name))
    mod = type(a).__module__ or ""
    if mod.startswith("torch"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def gptq_arrays(tensors_or_path, prefix: str = "", *, zero_storage: str = "v1",
                sym: bool | None = None) -> dict:
    """int4mm host arrays (numpy) for one GPTQ layer.

    Returns ``qweight`` (int32 ``(K // 8, N)``, rows sorted by group for
    act-order), ``scales`` and ``zeros`` (fp16 ``(K // G, N)``), ``perm``
    (int32 ``(K,)`` or None), ``bias`` (fp16 ``(N,)`` or None) and
    ``group_size``.

    ``zero_storage``: "v1" (classic GPTQ: ``qzeros`` hold ``zero - 1``) or
    "v2" (they hold ``zero``).  ``sym``: True forces zero 8 (``qzeros`` is
    ignored and may be absent); None reads ``qzeros`` when present, else 8;
    False requires ``qzeros``.
    """
    ref._check_zero_storage(zero_storage)
    t = read_tensors(tensors_or_path, prefix)
    p = _key_prefix(prefix)
    qweight = np.ascontiguousarray(t["qweight"])
    if qweight.dtype == np.uint32:
        qweight = qweight.view(np.int32)
    if qweight.ndim != 2 or qweight.dtype != np.int32:
        raise Int4mmValueError(f"{p}qweight: expected int32 (K // 8, N), got {qweight.dtype} "
                               f"{qweight.shape} (only 4-bit GPTQ is supported)")
    K, N = qweight.shape[0] * 8, qweight.shape[1]
    if "scales" not in t:
        raise Int4mmValueError(f"{p}scales: missing (GPTQ layers need qweight, qzeros, scales)")
    scales = np.asarray(t["scales"])
    if scales.ndim == 1:
        scales = scales[None, :]
    if scales.ndim != 2 or scales.shape[1] != N or not np.issubdtype(scales.dtype, np.floating):
        raise Int4mmValueError(f"{p}scales: expected float (K // G, {N}), got {scales.dtype} "
                               f"{scales.shape}")
    scales = np.ascontiguousarray(scales.astype(np.float16))
    groups = scales.shape[0]
    if K % groups:
        raise Int4mmValueError(f"{p}scales: {groups} groups do not divide K = {K}")
    G = K // groups

    if sym is True or (sym is None and "qzeros" not in t):
        zeros = np.full((groups, N), 8, dtype=np.float16)
    else:
        if "qzeros" not in t:
            raise Int4mmValueError(f"{p}qzeros: missing; pass sym=True for a symmetric "
                                   "checkpoint without zero points")
        qzeros = np.asarray(t["qzeros"])
        if qzeros.dtype == np.uint32:
            qzeros = qzeros.view(np.int32)
        if qzeros.shape != (groups, N // 8) or qzeros.dtype != np.int32:
            raise Int4mmValueError(f"{p}qzeros: expected int32 ({groups}, {N // 8}), got "
                                   f"{qzeros.dtype} {qzeros.shape}")
        zeros = ref.unpack_gptq_zeros(qzeros, zero_storage).astype(np.float16)

    perm = None
    if "g_idx" in t:
        g_idx = np.asarray(t["g_idx"]).astype(np.int64)
        if g_idx.shape != (K,):
            raise Int4mmValueError(f"{p}g_idx: expected shape ({K},), got {g_idx.shape}")
        if g_idx.min() < 0 or g_idx.max() >= groups:
            raise Int4mmValueError(f"{p}g_idx: values must be group indices in 0..{groups - 1}, "
                                   f"got {int(g_idx.min())}..{int(g_idx.max())}")
        if not np.array_equal(g_idx, np.arange(K) // G):
            counts = np.bincount(g_idx, minlength=groups)
            if (counts != G).any():
                g = int(np.argmax(counts != G))
                raise Int4mmValueError(
                    f"{p}g_idx: group {g} has {int(counts[g])} rows; int4mm needs every group "
                    f"to hold K / n_groups = {G} rows"
                )
            order = np.argsort(g_idx, kind="stable")
            codes = ref.unpack_dense(qweight)[order]
            qweight = ref.pack_dense(codes)
            perm = order.astype(np.int32)

    bias = None
    if "bias" in t:
        bias = np.ascontiguousarray(np.asarray(t["bias"]).astype(np.float16).reshape(-1))
        if bias.shape != (N,):
            raise Int4mmValueError(f"{p}bias: expected shape ({N},), got {bias.shape}")
    if G != K and G % 8:
        raise Int4mmValueError(f"{p}: group size {G} is not a multiple of 8 (int4mm's rule)")
    return {"qweight": qweight, "scales": scales, "zeros": zeros, "perm": perm, "bias": bias,
            "group_size": G}


def load_gptq(tensors_or_path, prefix: str = "", *, zero_storage: str = "v1",
              sym: bool | None = None, device: int = 0):
    """One GPTQ layer onto GPU ``device``: ``(PreparedWeight, bias)``.

    ``bias`` is an int4mm ``DeviceArray`` or None; both expose
    ``__cuda_array_interface__`` and DLPack.  Arguments as :func:`gptq_arrays`.
    """
    from . import _api
    from . import _arrays as A

    h = gptq_arrays(tensors_or_path, prefix, zero_storage=zero_storage, sym=sym)
    DA = A.native().DeviceArray
    dev = {k: DA.from_host(h[k], device) for k in ("qweight", "scales", "zeros", "perm", "bias")
           if h[k] is not None}
    w = _api.prepare(dev["qweight"], dev["scales"], dev["zeros"], perm=dev.get("perm"),
                     validate=False)
    return w, dev.get("bias")
