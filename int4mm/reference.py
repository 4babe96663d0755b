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
    "group_size_of",
    "matmul",
    "pack_dense",
    "pack_sparse",
    "random_weights",
    "unpack_dense",
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
