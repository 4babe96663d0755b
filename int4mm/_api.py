"""The public operations: matmul, prepare, pack/unpack.

Each function reads its arguments' CUDA array interfaces, checks every rule
with a message naming the argument, picks the launch stream, and makes one
bridge call.  Wrong input never reaches a kernel.
"""

from __future__ import annotations

import json

from . import _arrays as A
from .errors import Int4mmTypeError, Int4mmValueError

_PATHS = {"auto": 0, "small_m": 1, "large_m": 2}
_PATH_NAMES = {v: k for k, v in _PATHS.items()}

#: Version of the file format written by :meth:`PreparedWeight.save`: the
#: interchange arrays of docs/FORMATS.md plus metadata.  Kernel-specific
#: layouts are derived again on load, for whichever GPU loads them.
LAYOUT = "raw-v1"

#: Names of the kernel-specific layout sections (INT4MM_LAYOUT_* bits in int4mm.h).
_LAYOUT_BITS = ((2, "small-m-tiled"), (1, "sm90-wgmma"), (4, "dense-equivalent"))


def _layout_name(layout: int) -> str:
    """"raw", or the prepared sections joined by "+" (e.g. "small-m-tiled+sm90-wgmma")."""
    names = [name for bit, name in _LAYOUT_BITS if layout & bit]
    return "+".join(names) if names else "raw"


# --------------------------------------------------------------------------- weights


def _launch_for(stream, v):
    """The stream for a one-array operation: explicit, else the one ``v``'s
    interface carries, else the default stream."""
    if stream is not None:
        return A.stream_handle(stream)
    return v.stream if v.stream is not None else 0


class PreparedWeight:
    """Quantized weights checked once and kept ready for :func:`matmul`.

    Build with :func:`prepare`.  Holds references to the device arrays (so
    they stay alive), their parsed interfaces, and the problem geometry, so a
    call only has to read ``x`` and ``out``.  ``save``/``load`` round-trip it
    through a ``.npz`` file.
    """

    __slots__ = (
        "K",
        "N",
        "_fast",
        "_layout_id",
        "_permview",
        "_pview",
        "_sparse_as_dense",
        "_views",
        "device",
        "dtype",
        "group_size",
        "layout",
        "mask",
        "perm",
        "prepared",
        "qweight",
        "scales",
        "sparse",
        "zeros",
    )

    def __repr__(self):
        kind = "16:32 sparse" if self.sparse else "dense"
        g = "per-channel" if self.group_size == self.K else f"group {self.group_size}"
        if self.perm is not None:
            g += ", act-order"
        return (f"PreparedWeight(K={self.K}, N={self.N}, {kind}, {g}, dtype={self.dtype}, "
                f"device={self.device}, layout={self.layout!r})")

    @property
    def shape(self):
        """``(K, N)``: in_features, out_features."""
        return (self.K, self.N)

    def shard(self, dim, parts, **kwargs):
        """Split for tensor parallelism: see :func:`int4mm.shard`."""
        from ._shard import shard

        return shard(self, dim, parts, **kwargs)

    def save(self, path) -> None:
        """Write the weights (copied to the host) and metadata to ``path`` (.npz)."""
        import numpy as np

        # Version 2 adds the act-order ``perm``; files without one stay version 1,
        # readable by older int4mm (which would ignore a perm and compute wrongly).
        meta = {"K": self.K, "N": self.N, "group_size": self.group_size,
                "sparse": self.sparse, "layout": LAYOUT,
                "format_version": 1 if self.perm is None else 2}
        if self.sparse and not self._sparse_as_dense:
            meta["sparse_as_dense"] = False  # load() prepares it the same way
        arrays = {name: _to_host(getattr(self, name), name)
                  for name in ("qweight", "scales", "zeros", "mask", "perm")
                  if getattr(self, name) is not None}
        if arrays["scales"].dtype.name == "bfloat16":
            # .npy has no bfloat16: stored as its bits, named in the metadata
            # (readers that ignore "bfloat16" refuse the uint16 scales' dtype).
            meta["bfloat16"] = ["scales", "zeros"]
            for name in ("scales", "zeros"):
                arrays[name] = arrays[name].view(np.uint16)
        with open(path, "wb") as f:
            np.savez(f, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                     **arrays)

    @classmethod
    def load(cls, path, device: int = 0, *, sparse_as_dense=None) -> PreparedWeight:
        """Read a file written by :meth:`save` onto GPU ``device``.

        ``sparse_as_dense`` (16:32 weights, see :func:`prepare`): None keeps
        the choice the weight was saved with."""
        import numpy as np

        with np.load(path, allow_pickle=False) as data:
            if "__meta__" not in data:
                raise Int4mmValueError(f"{path}: not an int4mm PreparedWeight file (no metadata)")
            meta = json.loads(bytes(data["__meta__"]).decode())
            if meta.get("format_version") not in (1, 2) or meta.get("layout") != LAYOUT:
                raise Int4mmValueError(
                    f"{path}: layout {meta.get('layout')!r} version {meta.get('format_version')} "
                    f"is not readable by this int4mm (expects {LAYOUT!r} version 1 or 2)"
                )
            host = {k: np.ascontiguousarray(data[k])
                    for k in ("qweight", "scales", "zeros", "mask", "perm") if k in data}
        for name in meta.get("bfloat16", ()):
            try:
                import ml_dtypes
            except ImportError:
                raise Int4mmTypeError(
                    f"{path}: its {name} are bfloat16; loading them needs the ml_dtypes "
                    "package (pip install ml_dtypes)") from None
            host[name] = host[name].view(ml_dtypes.bfloat16)
        DA = A.native().DeviceArray
        dev = {k: DA.from_host(v, device) for k, v in host.items()}
        if sparse_as_dense is None:
            sparse_as_dense = bool(meta.get("sparse_as_dense", True))
        w = prepare(dev["qweight"], dev["scales"], dev["zeros"], mask=dev.get("mask"),
                    perm=dev.get("perm"), validate=False, sparse_as_dense=sparse_as_dense)
        if (w.K, w.N, w.group_size) != (meta["K"], meta["N"], meta["group_size"]):
            raise Int4mmValueError(f"{path}: arrays disagree with the metadata {meta}")
        return w


def _to_host(obj, name):
    return A.native().copy_to_host(A.view(obj, name))


def _weight_views(qweight, scales, zeros, mask, K, group_size):
    """Check the weight arrays; return (views, K, N, group_size, sparse)."""
    qv = A.check(A.view(qweight, "qweight"), "qweight", typestr=A.INT32, ndim=2)
    sparse = mask is not None
    rows, N = qv.shape
    if K is None:
        K = rows * (16 if sparse else 8)
    per_word = 16 if sparse else 8
    if rows * per_word != K:
        raise Int4mmValueError(
            f"qweight: shape {tuple(qv.shape)} does not match K = {K}: expected "
            f"({K} // {per_word}, N) = ({K // per_word}, N) for a "
            f"{'16:32 sparse' if sparse else 'dense'} weight"
        )
    if N <= 0 or N % 8:
        raise Int4mmValueError(f"qweight: N = {N} (out_features) must be a positive multiple of 8")
    if K <= 0 or K % (32 if sparse else 8):
        raise Int4mmValueError(
            f"K = {K} (in_features) must be a positive multiple of {32 if sparse else 8}"
            f"{' for 16:32 sparse weights' if sparse else ''}"
        )
    mv = None
    if sparse:
        mv = A.check(A.view(mask, "mask"), "mask", typestr=A.INT32, shape=(K // 32, N))
    sv = A.check(A.view(scales, "scales"), "scales", typestr=A.FLOATS, ndim=(1, 2))
    if sv.ndim == 1:
        if sv.shape[0] != N:
            raise Int4mmValueError(f"scales: expected shape ({N},) or (K // G, {N}), got {sv.shape}")
        groups = 1
    else:
        groups = sv.shape[0]
        if sv.shape[1] != N or groups == 0:
            raise Int4mmValueError(f"scales: expected shape (K // G, {N}), got {tuple(sv.shape)}")
    if K % groups:
        raise Int4mmValueError(
            f"scales: {groups} groups do not divide K = {K}; scales must have shape (K // G, N)"
        )
    G = K // groups
    if group_size is not None and group_size != G:
        raise Int4mmValueError(
            f"group_size: {group_size} disagrees with scales of shape {tuple(sv.shape)} "
            f"(K = {K} gives group size {G})"
        )
    unit = 32 if sparse else 8
    if G != K and G % unit:
        raise Int4mmValueError(
            f"group_size: {G} must be a multiple of {unit}"
            f"{' for 16:32 sparse weights' if sparse else ''} (or equal K = {K}, per-channel); "
            "supported: 32, 64, 128, 256, ... and per-channel"
        )
    zv = A.check(A.view(zeros, "zeros"), "zeros", typestr=A.FLOATS, shape=tuple(sv.shape))
    if zv.typestr != sv.typestr:
        raise Int4mmTypeError(
            f"zeros: dtype {A.dtype_name(zv.typestr)} differs from scales' "
            f"{A.dtype_name(sv.typestr)}; give both in one dtype"
        )
    return (qv, mv, sv, zv), K, N, G, sparse


def _activation_typestr(dtype, default):
    """The typestr of a ``dtype=`` argument ("float16"/"bfloat16", numpy or torch
    dtypes by name), or ``default`` when it is None."""
    if dtype is None:
        return default
    name = getattr(dtype, "name", None) or str(dtype)
    name = name.removeprefix("torch.")
    if name in ("float16", "half", "<f2"):
        return A.FP16
    if name in ("bfloat16", A.BF16):
        return A.BF16
    raise Int4mmTypeError(f"dtype: expected float16 or bfloat16, got {dtype!r}")


def _convertible(scales_typestr, act_typestr, what):
    """Refuse scales/zeros/bias whose dtype cannot serve ``act_typestr`` activations."""
    if scales_typestr == act_typestr or (scales_typestr == A.FP16 and act_typestr == A.BF16):
        return
    raise Int4mmTypeError(
        f"{what}: {A.dtype_name(scales_typestr)} values cannot serve "
        f"{A.dtype_name(act_typestr)} activations (bfloat16 -> float16 may overflow); "
        "give them in float16 (or use bfloat16 activations)"
    )


def _converted(like, v, typestr, device, stream, name):
    """``v``'s values in ``typestr`` (a new device array from ``like``'s library)
    when its dtype differs; ``(array, view)``."""
    if v.typestr == typestr:
        return v.obj, v
    arr = A.scratch(like, tuple(v.shape), typestr, device, stream)
    cv = A.view(arr, name)
    A.native().cast(v, cv, device, stream)
    return arr, cv


def prepare(qweight, scales, zeros, mask=None, *, perm=None, group_size=None, validate=True,
            stream=None, dtype=None, sparse_as_dense=True) -> PreparedWeight:
    """Check quantized weights once and return a :class:`PreparedWeight`.

    ``qweight``/``scales``/``zeros``/``mask`` are CUDA arrays in the formats
    of docs/FORMATS.md (sections 1-3).  With ``validate=True`` a sparse
    ``mask`` is checked on the GPU (every 32-row block keeps exactly 16).
    Where a kernel of this GPU wants its own weight layout (Hopper's wgmma
    path), the converted copy is made here, once, and kept with the weight.

    ``perm`` (int32 ``(K,)``, a permutation of ``0..K-1``) marks an
    act-order weight whose rows were sorted by group (see
    :func:`int4mm.load_gptq`): :func:`matmul` then computes
    ``x[..., perm] @ W``, gathering ``x`` on the GPU first.  With
    ``validate=True`` it is copied to the host once and checked.

    ``dtype`` ("float16" or "bfloat16"; default: the scales' dtype) is the
    activations' dtype the weight will serve.  float16 scales and zeros are
    converted to bfloat16 here, once, for a bfloat16 weight (bfloat16 ones
    cannot serve float16 activations).

    ``sparse_as_dense`` (16:32 weights): when every zero point is an integer
    in 0..15 (as GPTQ, AWQ and :func:`int4mm.quantize` make them), the
    prepared copy is made from the weight's exact dense equivalent (pruned
    weights coded as their zero point, so they dequantize to exactly 0), and
    the dense kernels run it: dense speed at every M, for about 1x the int4
    dense weight in device memory.  ``False``, or fractional zero points,
    keep the 16:32 weight on the kernels that read its raw format (no extra
    memory, slower).  ``layout`` says which one was made.
    """
    w = _weight(qweight, scales, zeros, mask, group_size, perm)
    qv, mv, sv, zv = w._views
    device = A.common_device([("qweight", qv), ("mask", mv), ("scales", sv), ("zeros", zv),
                              ("perm", w._permview)])
    w.device = device
    s = _launch_for(stream, qv)
    act = _activation_typestr(dtype, sv.typestr)
    _convertible(sv.typestr, act, "scales")
    if act != sv.typestr:
        w.scales, sv = _converted(qweight, sv, act, device, s, "scales")
        w.zeros, zv = _converted(qweight, zv, act, device, s, "zeros")
        w._views = (qv, mv, sv, zv)
    w.dtype = A.dtype_name(act)
    nat = A.native()
    if w.sparse and validate:
        nat.validate_sparse_mask(mv, w.K, w.N, device, s)
    if w.perm is not None and validate:
        _check_permutation(nat.copy_to_host(w._permview), w.K)
    w._sparse_as_dense = bool(sparse_as_dense)
    # A 16:32 weight gets the sections of its dense equivalent (or none).
    layout, nbytes = nat.prepared_layout(device, w.K, w.N, w.group_size,
                                         w.sparse and not sparse_as_dense)
    source, flags = qv, 0
    if layout and w.sparse:
        dense = A.scratch(qweight, (w.K // 8, w.N), A.INT32, device, s)
        dv = A.view(dense, "dense equivalent")
        if nat.sparse_to_dense(qv, mv, zv, dv, w.K, w.N, w.group_size, device, s) is None:
            source, flags = dv, nat.LAYOUT_SPARSE_AS_DENSE
        else:
            layout = 0  # a fractional zero point: no exact dense equivalent
    if layout:
        buf = A.empty(qweight, (nbytes,), A.UINT8, device, s)
        pv = A.view(buf, "prepared")
        nat.prepare(layout, source, None, sv, zv, w.K, w.N, w.group_size, pv, device, s)
        layout |= flags
        w.prepared, w._pview, w._layout_id = buf, pv, layout
    w.layout = _layout_name(layout)
    if w.perm is None:
        w._fast = nat.FastMatmul(qv, mv, sv, zv, w.N, w.K, w.group_size, device,
                                 w._pview, w._layout_id)
    return w


def _check_permutation(p, K):
    """Raise naming ``perm`` unless host array ``p`` is a permutation of 0..K-1."""
    import numpy as np

    seen = np.zeros(K, dtype=bool)
    inside = (p >= 0) & (p < K)
    if not inside.all():
        j = int(np.argmin(inside))
        raise Int4mmValueError(f"perm: entry {j} is {int(p[j])}, outside 0..{K - 1}")
    seen[p] = True
    if not seen.all():
        raise Int4mmValueError(
            f"perm: not a permutation of 0..{K - 1} (row {int(np.argmin(seen))} never appears)"
        )


def _weight(qweight, scales, zeros, mask, group_size, perm=None) -> PreparedWeight:
    """A PreparedWeight over raw arrays: shapes checked, memory not yet."""
    views, K, N, G, sparse = _weight_views(qweight, scales, zeros, mask, None, group_size)
    w = PreparedWeight.__new__(PreparedWeight)
    w.K, w.N, w.group_size, w.sparse, w.device, w.layout = K, N, G, sparse, None, "raw"
    w.dtype = A.dtype_name(views[2].typestr)
    w.qweight, w.scales, w.zeros, w.mask, w.perm = qweight, scales, zeros, mask, perm
    w.prepared, w._pview, w._layout_id = None, None, 0
    w._sparse_as_dense = True
    w._views = views
    w._permview = None
    w._fast = None
    if perm is not None:
        w._permview = A.check(A.view(perm, "perm"), "perm", typestr=A.INT32, shape=(K,))
    return w


# --------------------------------------------------------------------------- matmul


def matmul(x, qweight, scales=None, zeros=None, *, mask=None, perm=None, bias=None,
           group_size=None, out=None, stream=None, path="auto"):
    """``y = x @ dequantize(W) (+ bias)`` for ``x`` of shape ``(..., K)``.

    ``x`` is float16 or bfloat16; the result (and ``out``) has ``x``'s dtype.
    ``qweight`` is either a :class:`PreparedWeight` (then ``scales``,
    ``zeros`` and ``mask`` come from it; it must have been prepared for
    ``x``'s dtype) or a raw ``qweight`` array with ``scales``/``zeros`` (and
    ``mask`` for 16:32 sparse weights).  With bfloat16 ``x``, float16
    ``scales``/``zeros``/``bias`` are converted to bfloat16 on the GPU for the
    call (a PreparedWeight made with ``dtype="bfloat16"`` converts them once);
    bfloat16 ones are refused with float16 ``x``.  Returns ``out`` if given,
    else a new ``(..., N)`` array from ``x``'s own library (torch, CuPy,
    Numba), a JAX array for JAX input (zero-copy, through DLPack), or an
    int4mm ``DeviceArray``.

    ``perm`` (raw weights only; a PreparedWeight carries its own) marks an
    act-order weight: the result is ``x[..., perm] @ W``.  ``x`` is then
    gathered on the GPU into a temporary first: one extra read and write of
    ``x`` (``4 * M * K`` bytes) and one small kernel launch per call.

    ``path``: "auto" (default), "small_m" or "large_m" forces one kernel
    family (both are correct for every shape; "auto" picks the faster).
    """
    if path not in _PATHS:
        raise Int4mmValueError(f"path: expected one of {sorted(_PATHS)}, got {path!r}")
    if stream is not None:
        stream = A.stream_handle(stream)
    if (out is not None and bias is None and path == "auto" and scales is None
            and type(qweight) is PreparedWeight and qweight._fast is not None):
        # The inference fast path (torch / CuPy arrays, everything regular):
        # see FastMatmul in the bridge.  It declines anything else, which then
        # takes the validated path below.
        done = qweight._fast(x, out, stream)
        if done is not None:
            return done
    if isinstance(qweight, PreparedWeight):
        if scales is not None or zeros is not None or mask is not None or perm is not None:
            raise Int4mmValueError(
                "scales/zeros/mask/perm: pass them to prepare(), not with a PreparedWeight"
            )
        if group_size is not None and group_size != qweight.group_size:
            raise Int4mmValueError(
                f"group_size: {group_size} disagrees with the prepared weight's "
                f"{qweight.group_size}"
            )
        w = qweight
        raw = False
    else:
        if scales is None or zeros is None:
            raise Int4mmValueError("scales and zeros are required with a raw qweight array")
        w = _weight(qweight, scales, zeros, mask, group_size, perm)
        raw = True
    qv, mv, sv, zv = w._views
    K, N = w.K, w.N

    xv = A.check(A.view(x, "x"), "x", typestr=A.FLOATS, ndim=tuple(range(1, 33)))
    act = xv.typestr
    if not raw and w.dtype != A.dtype_name(act):
        raise Int4mmTypeError(
            f"x: is {A.dtype_name(act)} but the weight was prepared for {w.dtype} activations; "
            f"prepare it with dtype={A.dtype_name(act)!r}"
        )
    if raw:
        _convertible(sv.typestr, act, "scales")
    if xv.shape[-1] != K:
        raise Int4mmValueError(
            f"x: last dimension is {xv.shape[-1]} but the weight has K = {K} (in_features)"
        )
    out_shape = tuple(xv.shape[:-1]) + (N,)
    M = A.numel(xv.shape[:-1])
    bv = yv = None
    if bias is not None:
        bv = A.check(A.view(bias, "bias"), "bias", typestr=A.FLOATS, shape=(N,))
        _convertible(bv.typestr, act, "bias")
    if out is not None:
        yv = A.check(A.view(out, "out"), "out", typestr=act, shape=out_shape, writable=True)
    placed = [("x", xv), ("bias", bv), ("out", yv)]
    if raw:
        placed += [("qweight", qv), ("mask", mv), ("scales", sv), ("zeros", zv),
                   ("perm", w._permview)]
    # An empty x may carry no device (null pointer): then the weight's decides.
    device = A.common_device(placed, default=0 if raw else w.device)
    if not raw and M and device != w.device:
        raise Int4mmValueError(
            f"x is on device {device} but the weight is on device {w.device}; "
            "all arrays of one call must be on the same GPU"
        )
    target, waits = A.launch_stream(stream, xv, (xv, qv, mv, sv, zv, bv, yv, w._permview))
    allocated = out is None
    if allocated:
        out = A.empty(x, out_shape, act, device, target)
        yv = A.view(out, "out")
    if M == 0:
        return A.result(x, out) if allocated else out
    nat = A.native()
    for producer in waits:
        nat.stream_wait(device, target, producer)
    # float16 scales / zeros / bias with bfloat16 x: converted copies for this
    # call (temporaries that live until the kernel is done with them).
    temps = []
    if sv.typestr != act:
        s_arr, sv = _converted(x, sv, act, device, target, "scales")
        z_arr, zv = _converted(x, zv, act, device, target, "zeros")
        temps += [s_arr, z_arr]
    if bv is not None and bv.typestr != act:
        b_arr, bv = _converted(x, bv, act, device, target, "bias")
        temps.append(b_arr)
    if w._permview is not None:
        # Act-order: the weight's rows are sorted by group, so x's columns
        # follow the same permutation (x @ W == x[..., perm] @ W_sorted).
        gathered = A.scratch(x, tuple(xv.shape), act, device, target)
        gv = A.view(gathered, "x[..., perm]")
        nat.gather_columns(xv, w._permview, gv, M, K, device, target)
        xv = gv
    nat.matmul(xv, qv, mv, sv, zv, bv, yv, M, N, K, K, N, w.group_size, _PATHS[path],
               device, target, w._pview, w._layout_id)
    return A.result(x, out) if allocated else out


def chosen_path(M: int, weight: PreparedWeight) -> str:
    """Which kernel family ``matmul(path="auto")`` uses for ``M`` rows."""
    return _PATH_NAMES[A.native().chosen_path_for(M, weight.N, weight.K, weight.group_size,
                                                  weight.sparse, 0, weight.device or 0,
                                                  weight._layout_id)]


_DECODE_FIELDS = ("nb", "mt", "u", "wk", "ks", "stages")


def chosen_config(M: int, weight: PreparedWeight) -> dict | None:
    """The decode kernel's configuration that ``matmul(path="auto")`` launches
    for ``M`` rows of contiguous ``x`` and this prepared weight, or None when
    another kernel runs (``M`` = 0, large M, no Hopper-prepared codes).

    Keys: ``nb`` (16-column weight blocks per CTA), ``mt`` (groups of 8 rows
    of x per CTA), ``u`` (k16 steps per chunk), ``wk`` (warps per CTA, each
    streaming its own run of K), ``ks`` (CTAs of a cluster splitting K) and
    ``stages`` (0: weights stream through registers; else the slots of a
    shared-memory ring).  For reports and tests; the choice is measured
    (``benchmarks/NOTES.md``) and may change between releases.
    """
    if not isinstance(M, int) or isinstance(M, bool) or M < 0:
        raise Int4mmValueError(f"M must be a non-negative int, got {M!r}")
    if not isinstance(weight, PreparedWeight):
        raise Int4mmTypeError(f"weight must be a PreparedWeight (from int4mm.prepare), got {type(weight).__name__}")
    cfg = A.native().decode_config_for(M, weight.N, weight.K, weight.group_size, weight.sparse,
                                       weight.dtype == "bfloat16", weight.device or 0,
                                       weight._layout_id)
    return None if cfg is None else dict(zip(_DECODE_FIELDS, cfg))


# --------------------------------------------------------------------------- packing


def _codes_view(codes, name):
    v = A.check(A.view(codes, name), name, typestr=(A.UINT8, A.BOOL) if name == "keep"
                else A.UINT8, ndim=2, contiguous=False, aligned=False)
    return v


def pack_dense(codes, *, out=None, stream=None):
    """Codes uint8 ``(K, N)`` in 0..15 (any strides) -> ``qweight`` int32 ``(K // 8, N)``.

    Refuses (BadDataError, nothing written) a code above 15, naming where.
    """
    cv = _codes_view(codes, "codes")
    K, N = cv.shape
    if K % 8 or N % 8 or K == 0 or N == 0:
        raise Int4mmValueError(
            f"codes: shape {(K, N)} must be (K, N) with K and N positive multiples of 8"
        )
    s = _launch_for(stream, cv)
    A.common_device([("codes", cv)])
    if out is None:
        out = A.empty(codes, (K // 8, N), A.INT32, cv.device, s)
    ov = A.check(A.view(out, "out"), "out", typestr=A.INT32, shape=(K // 8, N), writable=True)
    device = A.common_device([("codes", cv), ("out", ov)])
    A.native().pack_dense(cv, ov, K, N, device, s)
    return out


def unpack_dense(qweight, *, out=None, stream=None):
    """``qweight`` int32 ``(K // 8, N)`` -> codes uint8 ``(K, N)``."""
    qv = A.check(A.view(qweight, "qweight"), "qweight", typestr=A.INT32, ndim=2)
    K, N = qv.shape[0] * 8, qv.shape[1]
    s = _launch_for(stream, qv)
    A.common_device([("qweight", qv)])
    if out is None:
        out = A.empty(qweight, (K, N), A.UINT8, qv.device, s)
    ov = A.check(A.view(out, "out"), "out", typestr=A.UINT8, shape=(K, N), writable=True,
                 aligned=False)
    device = A.common_device([("qweight", qv), ("out", ov)])
    A.native().unpack_dense(qv, ov, K, N, device, s)
    return out


def pack_sparse(codes, keep, *, out=None, stream=None):
    """Codes and keep-mask ``(K, N)`` (uint8/bool, any strides) -> ``(qweight, mask)``.

    Every aligned 32-row block of each column must keep exactly 16 weights;
    otherwise BadDataError names the first bad block and nothing is written.
    ``out`` may be a ``(qweight, mask)`` pair of int32 arrays to write into.
    """
    cv = _codes_view(codes, "codes")
    kv = _codes_view(keep, "keep")
    if tuple(kv.shape) != tuple(cv.shape):
        raise Int4mmValueError(f"keep: shape {kv.shape} differs from codes' {cv.shape}")
    K, N = cv.shape
    if K % 32 or N % 8 or K == 0 or N == 0:
        raise Int4mmValueError(
            f"codes: shape {(K, N)} must be (K, N) with K a positive multiple of 32 and N of 8"
        )
    s = _launch_for(stream, cv)
    A.common_device([("codes", cv), ("keep", kv)])
    if out is None:
        out = (A.empty(codes, (K // 16, N), A.INT32, cv.device, s),
               A.empty(codes, (K // 32, N), A.INT32, cv.device, s))
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise Int4mmTypeError("out: expected a (qweight, mask) pair")
    qv = A.check(A.view(out[0], "out[0]"), "out[0]", typestr=A.INT32, shape=(K // 16, N),
                 writable=True)
    mv = A.check(A.view(out[1], "out[1]"), "out[1]", typestr=A.INT32, shape=(K // 32, N),
                 writable=True)
    device = A.common_device([("codes", cv), ("keep", kv), ("out[0]", qv), ("out[1]", mv)])
    A.native().pack_sparse(cv, kv, qv, mv, K, N, device, s)
    return tuple(out)


def unpack_sparse(qweight, mask, *, stream=None):
    """``(qweight, mask)`` -> ``(codes, keep)``, uint8 ``(K, N)`` each (0 where pruned)."""
    mv = A.check(A.view(mask, "mask"), "mask", typestr=A.INT32, ndim=2)
    K, N = mv.shape[0] * 32, mv.shape[1]
    qv = A.check(A.view(qweight, "qweight"), "qweight", typestr=A.INT32, shape=(K // 16, N))
    s = _launch_for(stream, qv)
    device = A.common_device([("qweight", qv), ("mask", mv)])
    codes = A.empty(qweight, (K, N), A.UINT8, device, s)
    keep = A.empty(qweight, (K, N), A.UINT8, device, s)
    A.native().unpack_sparse(qv, mv, A.view(codes, "codes"), A.view(keep, "keep"), K, N,
                             device, s)
    return codes, keep


def validate_sparse_mask(mask, *, stream=None) -> None:
    """Raise BadDataError naming the first 32-row block that does not keep 16."""
    mv = A.check(A.view(mask, "mask"), "mask", typestr=A.INT32, ndim=2)
    K, N = mv.shape[0] * 32, mv.shape[1]
    if mv.size:
        A.native().validate_sparse_mask(mv, K, N, mv.device, _launch_for(stream, mv))
