"""Tensor-parallel splitting of quantized weights: :func:`shard`.

``y = x @ W`` with ``W`` of shape ``(K, N)`` splits two ways:

- along N (column parallel): part ``i`` holds the columns ``[n0, n1)``;
  ``y[..., n0:n1] = x @ W_i`` and the parts' outputs concatenate to ``y``.
  Every part keeps all K rows, all groups, and ``N_i % 8 == 0``.
- along K (row parallel): part ``i`` holds the rows ``[k0, k1)``;
  ``y = sum_i x[..., k0:k1] @ W_i`` (an all-reduce in tensor parallelism).
  Cuts fall on group boundaries (grouped weights), on 32-row block
  boundaries (16:32 sparse) and on 8-row word boundaries (dense).  A
  per-channel weight's scales and zeros apply to every row, so each part
  keeps all of them; with zero points the partial sums
  ``x_i @ ((q_i - z) * s)`` still add up to ``x @ ((q - z) * s)``.

The parts' arrays are new, C-contiguous device arrays allocated with the
source arrays' own library (torch, CuPy, Numba, else int4mm's DeviceArray),
on the source's GPU or, with ``device=``, on another one.  The copies are
made by the bridge (it computes the byte offsets and pitches) on the copy
engines; nothing here touches a pointer.
"""

from __future__ import annotations

import operator

from . import _arrays as A
from ._api import PreparedWeight, _weight, prepare
from .errors import Int4mmTypeError, Int4mmValueError

__all__ = ["plan_shards", "shard"]

_DIM_NAMES = {"n": "n", "N": "n", "k": "k", "K": "k"}
_DIM_AXES = {1: "n", 0: "k"}

def _dim(dim) -> str:
    """'n' (out_features, axis 1 of W (K, N)) or 'k' (in_features, axis 0)."""
    if isinstance(dim, str) and dim in _DIM_NAMES:
        return _DIM_NAMES[dim]
    if isinstance(dim, int) and not isinstance(dim, bool) and dim in _DIM_AXES:
        return _DIM_AXES[dim]
    raise Int4mmValueError(
        f"dim: expected 'n' (or 1: split out_features, column parallel) or 'k' (or 0: split "
        f"in_features, row parallel) for W of shape (K, N), got {dim!r}"
    )


def _sizes(parts, total: int, what: str) -> list[int]:
    """Part sizes from an int (equal parts) or a sequence of sizes."""
    if isinstance(parts, bool):
        raise Int4mmTypeError(f"parts: expected an int or a list of sizes, got {parts!r}")
    if isinstance(parts, int):
        if parts < 1:
            raise Int4mmValueError(f"parts: must be >= 1, got {parts}")
        if total % parts:
            raise Int4mmValueError(
                f"parts: {what} = {total} does not split into {parts} equal parts; pass a list "
                f"of part sizes for uneven parts"
            )
        return [total // parts] * parts
    try:
        sizes = [operator.index(s) for s in parts]
    except TypeError:
        raise Int4mmTypeError(
            f"parts: expected an int or a list of int sizes, got {parts!r}"
        ) from None
    if not sizes:
        raise Int4mmValueError("parts: the list of sizes is empty")
    for i, s in enumerate(sizes):
        if s <= 0:
            raise Int4mmValueError(f"parts: part {i} has size {s}; every part must be positive")
    if sum(sizes) != total:
        raise Int4mmValueError(
            f"parts: sizes {sizes} add up to {sum(sizes)}, not {what} = {total}"
        )
    return sizes


def plan_shards(K: int, N: int, group_size: int | None, sparse: bool, dim,
                parts) -> list[tuple[int, int]]:
    """The ``[start, stop)`` range (rows of W for dim 'k', columns for 'n') of each part.

    ``parts`` is a number of equal parts or a list of sizes.  Raises
    :class:`~int4mm.Int4mmValueError`, naming the part, for a split that would
    break a quantization group, a 16:32 sparse block or a packed word, or give
    a part an N that is not a multiple of 8.  ``group_size`` None or ``K``
    means per-channel.
    """
    d = _dim(dim)
    K, N = operator.index(K), operator.index(N)
    G = K if group_size is None else operator.index(group_size)
    if K <= 0 or N <= 0 or G <= 0 or K % G:
        raise Int4mmValueError(
            f"plan_shards: K = {K}, N = {N}, group_size = {G}: need positive sizes and a "
            "group size that divides K"
        )
    if d == "n":
        sizes = _sizes(parts, N, "N (out_features)")
    else:
        sizes = _sizes(parts, K, "K (in_features)")
    ranges = []
    start = 0
    for i, size in enumerate(sizes):
        stop = start + size
        if d == "n":
            if size % 8:
                raise Int4mmValueError(
                    f"part {i}: N = {size} (columns {start}..{stop - 1}) is not a multiple of 8; "
                    "every part's out_features must be a multiple of 8"
                )
        elif G != K and size % G:
            # Earlier parts ended on boundaries, so the cut at `stop` is the bad one.
            g = stop // G
            raise Int4mmValueError(
                f"part {i}: K = {size} (rows {start}..{stop - 1}) would split quantization "
                f"group {g} (rows {g * G}..{g * G + G - 1}); with group_size {G} every part's "
                f"K must be a multiple of {G}"
            )
        elif sparse and size % 32:
            b = stop // 32
            raise Int4mmValueError(
                f"part {i}: K = {size} (rows {start}..{stop - 1}) would split 16:32 sparse "
                f"block {b} (rows {32 * b}..{32 * b + 31}); every part's K must be a "
                "multiple of 32"
            )
        elif size % 8:
            w = stop // 8
            raise Int4mmValueError(
                f"part {i}: K = {size} (rows {start}..{stop - 1}) would split packed word row "
                f"{w} of qweight (rows {8 * w}..{8 * w + 7}); every part's K must be a "
                "multiple of 8"
            )
        ranges.append((start, stop))
        start = stop
    return ranges


# --------------------------------------------------------------------------- shard


def _source(weight) -> PreparedWeight:
    if isinstance(weight, PreparedWeight):
        return weight
    if isinstance(weight, dict):
        missing = [k for k in ("qweight", "scales", "zeros") if weight.get(k) is None]
        if missing:
            raise Int4mmValueError(f"weight: the dict has no {', '.join(missing)}")
        # Shapes only; where the arrays live is checked once the split is known good.
        return _weight(weight["qweight"], weight["scales"], weight["zeros"], weight.get("mask"),
                       weight.get("group_size"), weight.get("perm"))
    raise Int4mmTypeError(
        "weight: expected a PreparedWeight (from int4mm.prepare) or a dict with qweight, "
        f"scales, zeros (and mask, perm), got {type(weight).__name__}"
    )


def _device_ordinal(device) -> int:
    if isinstance(device, int) and not isinstance(device, bool):
        d = device
    else:  # torch.device (.index), cupy.cuda.Device (.id)
        d = getattr(device, "index", None)
        if d is None:
            d = getattr(device, "id", None)
        if not isinstance(d, int) or isinstance(d, bool):
            raise Int4mmTypeError(
                f"device: expected a CUDA device ordinal (int) or a device object with one, "
                f"got {device!r}"
            )
    count = A.native().device_count()
    if not 0 <= d < count:
        raise Int4mmValueError(
            f"device: {d} does not exist; {count} CUDA device(s) are visible"
        )
    return d


def _block(nat, like, v, rows, cols, device, stream, name):
    """A new array on ``device`` holding ``v[rows[0]:rows[1], cols[0]:cols[1]]``."""
    (r0, r1), (c0, c1) = rows, cols
    shape = (r1 - r0, c1 - c0) if v.ndim == 2 else (c1 - c0,)
    out = A.empty(like, shape, v.typestr, device, stream)
    nat.copy_2d(A.view(out, name), v, r0, r1, c0, c1, stream)
    return out


_WHOLE = "whole"


def _rows_cols(v, d, lo, hi, per_row):
    """Block of array view ``v`` (rows of W packed ``per_row`` to a row) for range [lo, hi).

    ``per_row`` None: rows shared by all of K (per-channel scales/zeros);
    _WHOLE: an array every part keeps whole (perm, which only an N split allows).
    """
    nrows = 1 if v.ndim == 1 else v.shape[0]
    ncols = v.shape[-1]
    if per_row == _WHOLE:
        return (0, nrows), (0, ncols)
    if d == "n":
        return (0, nrows), (lo, hi)
    if per_row is None:  # per-channel scales/zeros: every part keeps all of them
        return (0, nrows), (0, ncols)
    return (lo // per_row, hi // per_row), (0, ncols)


def shard(weight, dim, parts, *, index=None, device=None, stream=None):
    """Split a quantized weight for tensor parallelism.

    ``weight``: a :class:`PreparedWeight`, or a dict of raw arrays (``qweight``,
    ``scales``, ``zeros``, optional ``mask`` and ``group_size``).  ``dim``:
    ``"n"`` (or 1) splits out_features (column parallel), ``"k"`` (or 0)
    in_features (row parallel), for W of shape ``(K, N)``.  ``parts``: a number
    of equal parts, or a list of part sizes (uneven splits).

    Returns the list of parts as :class:`PreparedWeight` (each prepared for
    its GPU), or only part ``index``.  Every array of a part is a new
    C-contiguous array from the source arrays' library, on the source's GPU,
    or on ``device`` (an ordinal or a device object) when given.

    Refuses, naming the part, splits that would break a quantization group,
    a 16:32 sparse block, a packed word, or give a part's N that is not a
    multiple of 8 (see :func:`plan_shards`).

    Streams: on one GPU the copies are enqueued (asynchronously) on
    ``stream``, else on the stream the source arrays' library uses, after
    their producers.  To another GPU, the source's stream is synchronized
    first, the copies run on ``stream`` (a stream of ``device``) or that
    library's current stream there, and it is synchronized before returning,
    so the source may be freed at once.
    """
    w = _source(weight)
    d = _dim(dim)
    if w.perm is not None and d == "k":
        # Part i would need x[..., perm[k0:k1]]: columns of the whole x, not the
        # slice x[..., k0:k1] a row-parallel rank holds.
        raise Int4mmValueError(
            "shard: this weight has an act-order perm (y = x[..., perm] @ W); splitting it "
            "along K is not supported, since each part would need columns of the whole x. "
            "Split along N (every part keeps the perm), or permute the rows of the weight "
            "(and of the previous layer's output) first"
        )
    ranges = plan_shards(w.K, w.N, w.group_size, w.sparse, d, parts)
    if index is None:
        chosen = list(range(len(ranges)))
    else:
        if isinstance(index, bool) or not isinstance(index, int):
            raise Int4mmTypeError(f"index: expected an int, got {index!r}")
        if not -len(ranges) <= index < len(ranges):
            raise Int4mmValueError(f"index: {index} is out of range for {len(ranges)} parts")
        chosen = [index % len(ranges)]

    qv, mv, sv, zv = w._views
    pv = w._permview
    if w.device is None:  # raw arrays
        w.device = A.common_device([("qweight", qv), ("mask", mv), ("scales", sv),
                                    ("zeros", zv), ("perm", pv)])
    nat = A.native()
    src = w.device
    dst = src if device is None else _device_ordinal(device)
    views = [v for v in (qv, mv, sv, zv, pv) if v is not None]
    if dst == src:
        target, waits = A.launch_stream(stream, qv, views)
        for producer in waits:
            nat.stream_wait(src, target, producer)
    else:
        # A stream of the source GPU cannot be waited on from the destination's
        # copy without an event of its own device: wait on the host instead
        # (sharding is done once, at load time).
        src_stream, waits = A.launch_stream(None, qv, views)
        for s in (src_stream, *waits):
            nat.stream_synchronize(src, s)
        if stream is not None:
            target = A.stream_handle(stream)
        else:
            current = A._framework_current_stream(w.qweight, dst)
            target = current if current is not None else 0

    per_word = 16 if w.sparse else 8
    groups = 1 if sv.ndim == 1 else sv.shape[0]
    group_rows = None if groups == 1 else w.group_size
    like = w.qweight
    out = []
    for i in chosen:
        lo, hi = ranges[i]
        arrays = {}
        for name, v, per_row in (("qweight", qv, per_word), ("mask", mv, 32),
                                 ("scales", sv, group_rows), ("zeros", zv, group_rows),
                                 ("perm", pv, _WHOLE)):
            if v is None:
                arrays[name] = None
                continue
            rows, cols = _rows_cols(v, d, lo, hi, per_row)
            arrays[name] = _block(nat, like, v, rows, cols, dst, target, f"part {i} {name}")
        part = prepare(arrays["qweight"], arrays["scales"], arrays["zeros"],
                       mask=arrays["mask"], perm=arrays["perm"], validate=False, stream=target,
                       sparse_as_dense=w._sparse_as_dense)
        out.append(part)
    if dst != src:
        nat.stream_synchronize(dst, target)
    return out[0] if index is not None else out
