"""Reference implementation of every int4mm format, in numpy, on the CPU.

This module is the executable form of the format specification (see
``docs/FORMATS.md`` in the repository): the test oracle for every kernel.
It favours obviousness over speed, computes in float64, and never touches a
GPU.

Notation: ``y = x @ W`` with ``x`` of shape ``(..., K)`` and ``W`` of shape
``(K, N)``; ``q[k, n]`` is the unsigned 4-bit code of ``W[k, n]``.
"""

from __future__ import annotations

import numpy as np

from .errors import BadDataError, Int4mmValueError

__all__ = [
    "check_sparse_mask",
    "dequantize",
    "dequantize_gptq",
    "group_size_of",
    "matmul",
    "pack_dense",
    "pack_gptq_zeros",
    "pack_sparse",
    "quantize_rtn",
    "random_gptq",
    "random_weights",
    "sparse_as_dense",
    "unpack_dense",
    "unpack_gptq_zeros",
    "unpack_sparse",
]

SPARSE_BLOCK = 32  # rows per 16:32 block
SPARSE_KEEP = 16  # weights kept per block


def _as_codes(codes, name="codes"):
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise Int4mmValueError(f"{name}: expected a 2-D (K, N) array, got shape {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise Int4mmValueError(f"{name}: expected integer codes, got dtype {codes.dtype}")
    if codes.size and (codes.min() < 0 or codes.max() > 15):
        bad = np.argwhere((codes < 0) | (codes > 15))[0]
        raise BadDataError(
            f"{name}: value at [k={bad[0]}, n={bad[1]}] is {int(codes[tuple(bad)])}, "
            "outside 0..15"
        )
    return codes.astype(np.uint32)


def pack_dense(codes) -> np.ndarray:
    """Codes ``(K, N)`` in 0..15 -> ``qweight`` int32 ``(K // 8, N)`` (section 1).

    Word ``[i, n]`` holds ``q[8*i + j, n]`` in bits ``4*j .. 4*j+3``.
    """
    q = _as_codes(codes)
    K, N = q.shape
    if K % 8:
        raise Int4mmValueError(f"codes: K = {K} must be a multiple of 8")
    q = q.reshape(K // 8, 8, N)
    word = np.zeros((K // 8, N), dtype=np.uint32)
    for j in range(8):
        word |= q[:, j, :] << np.uint32(4 * j)
    return word.view(np.int32)


def unpack_dense(qweight) -> np.ndarray:
    """``qweight`` int32 ``(K // 8, N)`` -> codes uint8 ``(K, N)``."""
    w = np.asarray(qweight)
    if w.ndim != 2 or w.dtype != np.int32:
        raise Int4mmValueError(f"qweight: expected int32 (K // 8, N), got {w.dtype} {w.shape}")
    w = w.view(np.uint32)
    k8, N = w.shape
    out = np.empty((k8, 8, N), dtype=np.uint8)
    for j in range(8):
        out[:, j, :] = (w >> np.uint32(4 * j)) & np.uint32(15)
    return out.reshape(k8 * 8, N)


def check_sparse_mask(keep_counts: np.ndarray, name: str = "mask") -> None:
    """Raise BadDataError naming the first block whose count is not 16.

    ``keep_counts`` has shape ``(K // 32, N)``; the first offence in row-major
    (block, column) order is reported.
    """
    bad = np.argwhere(keep_counts != SPARSE_KEEP)
    if bad.size:
        b, n = (int(v) for v in bad[0])
        raise BadDataError(
            f"{name}: block {b} of column {n} (rows {32 * b}..{32 * b + 31}) keeps "
            f"{int(keep_counts[b, n])} weights; every 32-row block must keep exactly 16"
        )


def pack_sparse(codes, keep) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``(K, N)`` and a keep mask ``(K, N)`` -> ``(qweight, mask)`` (section 3).

    ``qweight`` is int32 ``(K // 16, N)``, ``mask`` int32 ``(K // 32, N)``.
    Codes at pruned positions are ignored (they may hold anything); kept codes
    must be in 0..15 and every aligned 32-row block of each column must keep
    exactly 16 weights.
    """
    keep = np.asarray(keep).astype(bool)
    codes = np.asarray(codes)
    if codes.shape != keep.shape or codes.ndim != 2:
        raise Int4mmValueError(
            f"codes and keep must be 2-D arrays of one shape, got {codes.shape} and {keep.shape}"
        )
    K, N = codes.shape
    if K % SPARSE_BLOCK:
        raise Int4mmValueError(f"codes: K = {K} must be a multiple of 32 for 16:32 sparsity")
    kb = keep.reshape(K // 32, 32, N)
    check_sparse_mask(kb.sum(axis=1), name="keep")
    q = _as_codes(np.where(keep, codes, 0))
    qb = q.reshape(K // 32, 32, N)
    # Stable sort puts kept rows first, in increasing k.
    order = np.argsort(~kb, axis=1, kind="stable")[:, :SPARSE_KEEP, :]
    kept = np.take_along_axis(qb, order, axis=1).astype(np.uint64)  # (B, 16, N)
    packed = np.zeros((K // 32, N), dtype=np.uint64)
    for p in range(SPARSE_KEEP):
        packed |= kept[:, p, :] << np.uint64(4 * p)
    qweight = np.empty((K // 16, N), dtype=np.uint32)
    qweight[0::2] = (packed & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    qweight[1::2] = (packed >> np.uint64(32)).astype(np.uint32)
    bits = np.zeros((K // 32, N), dtype=np.uint32)
    for i in range(32):
        bits |= kb[:, i, :].astype(np.uint32) << np.uint32(i)
    return qweight.view(np.int32), bits.view(np.int32)


def unpack_sparse(qweight, mask) -> tuple[np.ndarray, np.ndarray]:
    """``(qweight, mask)`` -> ``(codes, keep)``, both uint8 ``(K, N)``.

    Pruned positions get code 0 and keep 0.
    """
    qw = np.asarray(qweight)
    mk = np.asarray(mask)
    if qw.dtype != np.int32 or mk.dtype != np.int32 or qw.ndim != 2 or mk.ndim != 2:
        raise Int4mmValueError("qweight and mask must be 2-D int32 arrays")
    B, N = mk.shape
    if qw.shape != (2 * B, N):
        raise Int4mmValueError(
            f"qweight: expected shape {(2 * B, N)} for mask of shape {mk.shape}, got {qw.shape}"
        )
    bits = mk.view(np.uint32)
    keep = np.empty((B, 32, N), dtype=bool)
    for i in range(32):
        keep[:, i, :] = (bits >> np.uint32(i)) & np.uint32(1)
    check_sparse_mask(keep.sum(axis=1), name="mask")
    u = qw.view(np.uint32).astype(np.uint64)
    packed = u[0::2] | (u[1::2] << np.uint64(32))  # (B, N)
    rank = np.cumsum(keep, axis=1) - 1  # p for kept rows
    rank = np.clip(rank, 0, 15).astype(np.uint64)
    codes = (packed[:, None, :] >> (np.uint64(4) * rank)) & np.uint64(15)
    codes = np.where(keep, codes, 0).astype(np.uint8)
    return codes.reshape(B * 32, N), keep.reshape(B * 32, N).astype(np.uint8)


def group_size_of(K: int, scales) -> int:
    """Group size implied by ``scales`` of shape ``(N,)`` or ``(K // G, N)``."""
    s = np.asarray(scales)
    if s.ndim == 1 or s.shape[0] == 1:
        return K
    groups = s.shape[0]
    if groups <= 0 or K % groups:
        raise Int4mmValueError(f"scales: {groups} groups do not divide K = {K}")
    return K // groups


def dequantize(qweight, scales, zeros, mask=None) -> np.ndarray:
    """Dense float64 ``W`` of shape ``(K, N)`` from any section 1-3 format."""
    if mask is None:
        codes = unpack_dense(qweight).astype(np.float64)
        keep = None
    else:
        c, k = unpack_sparse(qweight, mask)
        codes = c.astype(np.float64)
        keep = k.astype(bool)
    K, N = codes.shape
    s = np.asarray(scales, dtype=np.float64).reshape(-1, N)
    z = np.asarray(zeros, dtype=np.float64).reshape(-1, N)
    if s.shape != z.shape:
        raise Int4mmValueError(f"scales {s.shape} and zeros {z.shape} differ in shape")
    G = group_size_of(K, s)
    s = np.repeat(s, G, axis=0)
    z = np.repeat(z, G, axis=0)
    W = (codes - z) * s
    if keep is not None:
        W = np.where(keep, W, 0.0)
    return W


def sparse_as_dense(qweight, mask, zeros) -> np.ndarray:
    """The dense ``qweight`` of the same matrix as a 16:32 weight whose zero
    points are all integers in 0..15: kept codes as they are, each pruned
    weight coded as its zero point, so ``(q - zero) * scale`` is exactly 0
    there (what ``int4mm.prepare`` builds its dense-equivalent copy from).
    Raises Int4mmValueError naming the first zero point that is not such an
    integer."""
    codes, keep = unpack_sparse(qweight, mask)
    K, N = codes.shape
    z = np.asarray(zeros, dtype=np.float64).reshape(-1, N)
    bad = ~((z >= 0) & (z <= 15) & (z == np.round(z)))
    if bad.any():
        g, n = np.argwhere(bad)[0]
        raise Int4mmValueError(
            f"zeros: [{g}, {n}] is {z[g, n]}: a dense equivalent needs integer zero points "
            "in 0..15"
        )
    G = group_size_of(K, z)
    zc = np.repeat(z, G, axis=0).astype(np.uint8)
    return pack_dense(np.where(keep.astype(bool), codes, zc))


def matmul(x, qweight, scales, zeros, mask=None, bias=None) -> np.ndarray:
    """``x @ dequantize(...) (+ bias)`` in float64; ``x`` has shape ``(..., K)``."""
    W = dequantize(qweight, scales, zeros, mask)
    xf = np.asarray(x, dtype=np.float64)
    if xf.shape[-1] != W.shape[0]:
        raise Int4mmValueError(f"x: last dimension {xf.shape[-1]} != K = {W.shape[0]}")
    y = xf @ W
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
    return y


def random_weights(K: int, N: int, group_size: int | None = None, sparse: bool = False,
                   seed: int = 0) -> dict:
    """Random, never-zero test weights in a packed format, as numpy arrays.

    Returns a dict with ``qweight``, ``scales``, ``zeros`` (fp16, shape
    ``(K // G, N)``), ``mask`` (int32 or None), ``codes`` and ``keep``.  Scales
    are sized so that ``x @ W`` stays O(1) for standard-normal ``x``; zeros are
    integral values in 4..11 (as real quantizers produce), with a few
    non-integral ones mixed in.
    """
    rng = np.random.default_rng(seed)
    G = K if group_size is None else group_size
    if K % G:
        raise Int4mmValueError(f"group_size {G} does not divide K = {K}")
    codes = rng.integers(0, 16, size=(K, N), dtype=np.uint8)
    scales = (rng.uniform(0.5, 1.5, size=(K // G, N)) / (4.6 * np.sqrt(K))).astype(np.float16)
    zeros = rng.integers(4, 12, size=(K // G, N)).astype(np.float16)
    zeros[rng.random(zeros.shape) < 0.05] += np.float16(0.5)
    out = {"codes": codes, "scales": scales, "zeros": zeros, "group_size": G}
    if sparse:
        keep = np.zeros((K // 32, 32, N), dtype=bool)
        ranks = rng.random((K // 32, 32, N)).argsort(axis=1)
        keep[:] = ranks < SPARSE_KEEP
        keep = keep.reshape(K, N)
        out["qweight"], out["mask"] = pack_sparse(codes, keep)
        out["keep"] = keep
    else:
        out["qweight"] = pack_dense(codes)
        out["mask"] = None
        out["keep"] = None
    return out


# --------------------------------------------------------------------------- quantization


def bf16_round(a) -> np.ndarray:
    """float32 values of ``a`` rounded to the nearest bfloat16 (ties to even),
    returned as float32 (numpy has no bfloat16 type).  NaN stays NaN."""
    a = np.asarray(a, dtype=np.float32)
    u = a.view(np.uint32).astype(np.uint64)
    r = (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16) & 0xFFFFFFFF
    out = r.astype(np.uint32).view(np.float32)
    return np.where(np.isnan(a), a, out)


def bf16_bits(a) -> np.ndarray:
    """uint16 bit patterns of the bfloat16 values nearest ``a``."""
    return (bf16_round(a).view(np.uint32) >> 16).astype(np.uint16)


def from_bf16_bits(bits) -> np.ndarray:
    """float32 values of bfloat16 bit patterns (uint16)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def quantize_rtn(weight, group_size=None, sparse=False, dtype="float16") -> dict:
    """Round-to-nearest asymmetric 4-bit quantization (the GPU's int4mm.quantize, bit for bit).

    ``weight``: ``(K, N)``, rounded to ``dtype`` first ("float16", or
    "bfloat16": then scales and zeros are bfloat16 values, returned as
    float32 arrays since numpy has no bfloat16).  ``group_size``: rows per group (None: per channel, ``G = K``).
    With ``sparse=True`` each aligned 32-row block of each column first keeps
    its 16 largest ``|w|`` (ties: the lower row), and groups are quantized
    over the kept weights only.

    Per (group, column), in float32 (every operation correctly rounded;
    ``rint`` rounds half to even)::

        lo = min(0, min w), hi = max(0, max w)     # over kept rows if sparse
        if lo == hi: lo, hi = -1, 1                # an all-zero group
        scale = dtype((hi - lo) / 15)              # nearest, ties even; 0 -> smallest subnormal
        zero  = clip(rint(-lo / scale), 0, 15)     # scale read back from its rounded value
        code  = clip(rint(w / scale) + zero, 0, 15)

    Returns ``qweight``, ``scales``, ``zeros`` (``(K // G, N)``, fp16 or bf16 values),
    ``mask`` (None when dense), ``codes`` (uint8, 0 where pruned), ``keep``
    (bool or None) and ``group_size``.
    """
    w = np.asarray(weight)
    if w.ndim != 2:
        raise Int4mmValueError(f"weight: expected a 2-D (K, N) array, got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.floating):
        raise Int4mmValueError(f"weight: expected a floating-point array, got dtype {w.dtype}")
    if dtype not in ("float16", "bfloat16"):
        raise Int4mmValueError(f"dtype: expected 'float16' or 'bfloat16', got {dtype!r}")
    bf16 = dtype == "bfloat16"
    w16 = bf16_round(w.astype(np.float32)) if bf16 else w.astype(np.float16)
    K, N = w16.shape
    G = K if group_size is None else int(group_size)
    unit = SPARSE_BLOCK if sparse else 8
    if K <= 0 or N <= 0 or G <= 0 or K % G or G % unit:
        raise Int4mmValueError(
            f"group_size: {G} must divide K = {K} and be a positive multiple of {unit}"
            f"{' for 16:32 sparse weights' if sparse else ''}"
        )
    bad = ~np.isfinite(w16)
    if bad.any():
        k, n = (int(v) for v in np.argwhere(bad)[0])
        raise BadDataError(f"weight: value at [k={k}, n={n}] is Inf or NaN; only finite "
                           "weights can be quantized")
    w32 = w16.astype(np.float32)
    keep = None
    if sparse:
        mag = np.abs(w32).reshape(K // 32, 32, N)
        order = np.argsort(-mag, axis=1, kind="stable")  # largest first, ties: lower row
        kb = np.zeros(mag.shape, dtype=bool)
        np.put_along_axis(kb, order[:, :SPARSE_KEEP, :], True, axis=1)
        keep = kb.reshape(K, N)
    wg = w32.reshape(K // G, G, N)
    kept = wg if keep is None else np.where(keep.reshape(K // G, G, N), wg, np.float32(0))
    lo = np.minimum(kept.min(axis=1), np.float32(0))
    hi = np.maximum(kept.max(axis=1), np.float32(0))
    flat = lo == hi
    lo[flat] = np.float32(-1)
    hi[flat] = np.float32(1)
    if bf16:
        scales = bf16_round((hi - lo) / np.float32(15))
        scales[scales == 0] = from_bf16_bits(np.uint16(1))  # 2**-133
    else:
        scales = ((hi - lo) / np.float32(15)).astype(np.float16)
        scales[scales == 0] = np.array(1, dtype=np.uint16).view(np.float16)  # 2**-24
    s = scales.astype(np.float32)
    zero = np.clip(np.rint(-lo / s), np.float32(0), np.float32(15)) + np.float32(0)
    codes = np.clip(np.rint(wg / s[:, None, :]) + zero[:, None, :], 0, 15).astype(np.uint8)
    codes = codes.reshape(K, N)
    out = {"scales": scales, "zeros": zero.astype(np.float32 if bf16 else np.float16),
           "group_size": G, "keep": keep}
    if sparse:
        codes = np.where(keep, codes, 0).astype(np.uint8)
        out["qweight"], out["mask"] = pack_sparse(codes, keep)
    else:
        out["qweight"], out["mask"] = pack_dense(codes), None
    out["codes"] = codes
    return out


# --------------------------------------------------------------------------- GPTQ checkpoints

GPTQ_ZERO_STORAGES = ("v1", "v2")


def _check_zero_storage(zero_storage):
    if zero_storage not in GPTQ_ZERO_STORAGES:
        raise Int4mmValueError(
            f"zero_storage: expected 'v1' (classic GPTQ, stores zero - 1) or 'v2' (stores "
            f"zero), got {zero_storage!r}"
        )


def unpack_gptq_zeros(qzeros, zero_storage="v1") -> np.ndarray:
    """GPTQ ``qzeros`` int32 ``(K // G, N // 8)`` -> zero points float64 ``(K // G, N)``.

    Word ``[g, j]`` holds the zero of column ``8*j + i`` in bits ``4*i .. 4*i+3``;
    ``v1`` stores ``zero - 1`` (so 1 is added: a stored 15 means 16, as the
    classic kernels compute it), ``v2`` stores ``zero``.
    """
    _check_zero_storage(zero_storage)
    qz = np.asarray(qzeros)
    if qz.ndim != 2 or qz.dtype not in (np.int32, np.uint32):
        raise Int4mmValueError(f"qzeros: expected int32 (K // G, N // 8), got {qz.dtype} {qz.shape}")
    u = qz.view(np.uint32)
    groups, words = u.shape
    z = np.empty((groups, words, 8), dtype=np.float64)
    for i in range(8):
        z[:, :, i] = (u >> np.uint32(4 * i)) & np.uint32(15)
    z = z.reshape(groups, words * 8)
    return z + 1.0 if zero_storage == "v1" else z


def pack_gptq_zeros(zeros, zero_storage="v1") -> np.ndarray:
    """Integer zero points ``(K // G, N)`` -> GPTQ ``qzeros`` int32 ``(K // G, N // 8)``.

    ``v1`` stores ``(zero - 1) & 15`` (a zero of 0 wraps to 15, as GPTQ
    writes it), ``v2`` stores ``zero`` (0..15).
    """
    _check_zero_storage(zero_storage)
    z = np.asarray(zeros).astype(np.int64)
    groups, N = z.shape
    if N % 8:
        raise Int4mmValueError(f"zeros: N = {N} must be a multiple of 8")
    stored = (z - 1) & 15 if zero_storage == "v1" else z
    if stored.min(initial=0) < 0 or stored.max(initial=0) > 15:
        raise Int4mmValueError("zeros: v2 zero points must be integers in 0..15")
    u = stored.astype(np.uint32).reshape(groups, N // 8, 8)
    word = np.zeros((groups, N // 8), dtype=np.uint32)
    for i in range(8):
        word |= u[:, :, i] << np.uint32(4 * i)
    return word.view(np.int32)


def dequantize_gptq(qweight, qzeros, scales, g_idx=None, zero_storage="v1") -> np.ndarray:
    """Dense float64 ``W`` ``(K, N)`` of a GPTQ checkpoint, straight from FORMATS.md.

    ``W[k, n] = (q[k, n] - zero[g_idx[k], n]) * scales[g_idx[k], n]``, with
    ``g_idx[k] = k // G`` when ``g_idx`` is None.  ``qzeros=None`` means a
    symmetric checkpoint (zero 8 everywhere).
    """
    codes = unpack_dense(qweight).astype(np.float64)
    K, N = codes.shape
    s = np.asarray(scales, dtype=np.float64).reshape(-1, N)
    groups = s.shape[0]
    if qzeros is None:
        z = np.full(s.shape, 8.0)
    else:
        z = unpack_gptq_zeros(qzeros, zero_storage)
        if z.shape != s.shape:
            raise Int4mmValueError(f"qzeros unpack to {z.shape}, scales are {s.shape}")
    if g_idx is None:
        if K % groups:
            raise Int4mmValueError(f"scales: {groups} groups do not divide K = {K}")
        g = np.arange(K) // (K // groups)
    else:
        g = np.asarray(g_idx).astype(np.int64)
        if g.shape != (K,) or g.min() < 0 or g.max() >= groups:
            raise Int4mmValueError(f"g_idx: expected ({K},) group indices in 0..{groups - 1}")
    return (codes - z[g, :]) * s[g, :]


def random_gptq(K: int, N: int, group_size: int = 128, *, act_order=False, sym=False,
                zero_storage="v1", seed: int = 0) -> dict:
    """Random GPTQ-format tensors (numpy): ``qweight``, ``qzeros``, ``scales``, ``g_idx``.

    ``act_order=True`` gives a ``g_idx`` as GPTQ's desc_act writes it (each
    group holds ``group_size`` rows, scattered by a random permutation);
    otherwise ``g_idx[k] = k // G``.  ``sym=True`` uses zero 8.
    """
    rng = np.random.default_rng(seed)
    G = group_size
    codes = rng.integers(0, 16, size=(K, N), dtype=np.uint8)
    scales = (rng.uniform(0.5, 1.5, size=(K // G, N)) / (4.6 * np.sqrt(K))).astype(np.float16)
    zeros = np.full((K // G, N), 8) if sym else rng.integers(0, 16, size=(K // G, N))
    if act_order:
        order = rng.permutation(K)
        g_idx = np.empty(K, dtype=np.int32)
        g_idx[order] = np.arange(K) // G
    else:
        g_idx = (np.arange(K) // G).astype(np.int32)
    return {"qweight": pack_dense(codes), "qzeros": pack_gptq_zeros(zeros, zero_storage),
            "scales": scales, "g_idx": g_idx}
