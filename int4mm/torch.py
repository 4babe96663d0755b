"""PyTorch integration (optional; imported only when used): ``Int4Linear``,
``replace_linear`` and the ``int4mm::matmul`` custom op.

The op is a ``torch.library`` custom op with a fake (meta) implementation,
so ``torch.compile(fullgraph=True)`` traces models that use it without graph
breaks and ``torch.library.opcheck`` passes.  On CUDA it calls
:func:`int4mm.matmul` on torch's current stream, with its output (and the
act-order gather's temporary) from torch's caching allocator, so it can be
captured in a CUDA graph; on the CPU it falls back to the numpy reference
(slow; for tests and tooling).

Inference only: the op has no autograd formula (weights are frozen codes;
``x`` gets no gradient).

The :class:`int4mm.PreparedWeight` of each weight (its checked views, and on
Hopper the kernel-specific copy of the weights) is built on first use and
cached per ``qweight`` tensor, keyed by the data pointers and version
counters of the weight tensors: ``.to()`` makes new tensors and
``load_state_dict`` bumps the versions, so both invalidate it.  Build the
cache (one forward, or :meth:`Int4Linear.prepare`) before capturing a CUDA
graph.
"""

from __future__ import annotations

import weakref
from typing import Optional

import numpy as np
import torch
from torch import nn

import int4mm

from . import reference as ref
from .errors import Int4mmTypeError, Int4mmValueError

__all__ = ["Int4Linear", "int4mm_matmul", "replace_linear"]


# --------------------------------------------------------------------------- prepared-weight cache


class _Borrowed:
    """A CUDA array interface over a tensor's memory that does not keep the tensor
    alive: the cache entry dies with the tensor instead (weakref.finalize)."""

    __slots__ = ("__cuda_array_interface__",)
    __int4mm_library__ = "torch"  # allocate (prepared layouts) with torch's caching allocator

    def __init__(self, t: torch.Tensor):
        self.__cuda_array_interface__ = t.__cuda_array_interface__


def _borrow(t):
    """What the prepared-weight cache hands int4mm for tensor ``t``.  bfloat16
    tensors have no ``__cuda_array_interface__``: they are passed themselves
    (read through DLPack), which keeps them alive while the entry lives; the
    entry still dies with ``qweight`` (int32, always borrowed)."""
    if t is None:
        return None
    return t if t.dtype == torch.bfloat16 else _Borrowed(t)


_CACHE: dict[int, tuple] = {}  # id(qweight) -> (key, PreparedWeight, finalizer)
#: How many PreparedWeights the op has built (tests check that steady-state
#: calls, eager or compiled, build none).
STATS = {"prepared": 0}


def _key(tensors):
    return tuple((t.data_ptr(), t._version, tuple(t.shape), t.device.index) if t is not None
                 else None for t in tensors)


def _prepared(qweight, scales, zeros, mask, perm, dtype=None) -> int4mm.PreparedWeight:
    """The cached PreparedWeight of these CUDA tensors for activations of
    ``dtype`` (default: the scales' dtype), built on a miss."""
    tensors = (qweight, scales, zeros, mask, perm)
    dtype = scales.dtype if dtype is None else dtype
    key = (_key(tensors), dtype)
    hit = _CACHE.get(id(qweight))
    if hit is not None and hit[0] == key:
        return hit[1]
    if hit is not None:
        hit[2].detach()
    stream = torch.cuda.current_stream(qweight.device).cuda_stream
    w = int4mm.prepare(*(_borrow(t) for t in tensors[:3]), mask=_borrow(mask),
                       perm=_borrow(perm), validate=False, stream=stream,
                       dtype=str(dtype).removeprefix("torch."))
    STATS["prepared"] += 1
    fin = weakref.finalize(qweight, _CACHE.pop, id(qweight), None)
    fin.atexit = False
    _CACHE[id(qweight)] = (key, w, fin)
    return w


def _clear_cache():
    for _, _, fin in list(_CACHE.values()):
        fin()
    _CACHE.clear()


# --------------------------------------------------------------------------- custom op


def _reference_cpu(x, qweight, scales, zeros, mask, bias, perm):
    """CPU fallback: the numpy oracle, in float64, rounded to x's dtype."""
    xs = x.detach().double().numpy()
    if perm is not None:
        xs = xs[..., perm.numpy()]
    y = ref.matmul(xs, qweight.numpy(), scales.double().numpy(), zeros.double().numpy(),
                   None if mask is None else mask.numpy(),
                   None if bias is None else bias.double().numpy())
    return torch.from_numpy(np.ascontiguousarray(y)).to(x.dtype)


@torch.library.custom_op("int4mm::matmul", mutates_args=())
def int4mm_matmul(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                  zeros: torch.Tensor, mask: Optional[torch.Tensor],  # noqa: UP045
                  bias: Optional[torch.Tensor], perm: Optional[torch.Tensor],  # noqa: UP045
                  group_size: int) -> torch.Tensor:
    """``x @ dequantize(W) (+ bias)``: fp16 or bf16 ``x (..., K)`` -> ``(..., N)``
    of ``x``'s dtype (float16 scales serve bf16 ``x`` too: converted once).

    ``group_size`` is checked against ``scales`` (0: take it from ``scales``).
    """
    if not x.is_cuda:
        return _reference_cpu(x, qweight, scales, zeros, mask, bias, perm)
    x = x.detach()
    if not x.is_contiguous() or x.data_ptr() % 16:
        x = x.clone(memory_format=torch.contiguous_format)
    if bias is not None:
        bias = bias.detach()
    if x.dtype not in (torch.float16, torch.bfloat16):
        raise Int4mmTypeError(f"x: expected float16 or bfloat16, got {x.dtype}")
    w = _prepared(qweight, scales, zeros, mask, perm, x.dtype)
    if group_size and group_size != w.group_size:
        raise Int4mmValueError(f"group_size: {group_size} disagrees with scales of shape "
                               f"{tuple(scales.shape)} (group size {w.group_size})")
    stream = torch.cuda.current_stream(x.device)
    out = torch.empty((*x.shape[:-1], w.N), dtype=x.dtype, device=x.device)
    int4mm.matmul(x, w, bias=bias, out=out, stream=stream.cuda_stream)
    return out


@int4mm_matmul.register_fake
def _(x, qweight, scales, zeros, mask, bias, perm, group_size):
    torch._check(x.dtype in (torch.float16, torch.bfloat16),
                 lambda: f"x: expected float16 or bfloat16, got {x.dtype}")
    return x.new_empty((*x.shape[:-1], scales.shape[-1]), dtype=x.dtype)


# --------------------------------------------------------------------------- module


class Int4Linear(nn.Module):
    """``y = x @ W (+ bias)`` with ``W`` in int4mm's 4-bit formats.

    Buffers (all in ``state_dict``): ``qweight`` int32, ``scales`` and
    ``zeros`` ``(in_features // group_size, out_features)`` of ``dtype``
    (float16 or bfloat16), ``mask`` int32 (16:32 sparse only), ``perm`` int32
    (act-order only); ``bias`` is a parameter of ``dtype`` (no gradient).
    Activations may be float16 or bfloat16 (the output has their dtype);
    float16 buffers serve bfloat16 activations (converted once per weight),
    bfloat16 buffers only bfloat16 ones.  ``module.to(torch.bfloat16)``
    converts the buffers.  Build with :meth:`from_linear`,
    :meth:`from_quantized` (the original project's tensors) or
    :meth:`from_gptq`; or construct empty and ``load_state_dict``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 group_size: int | None = 128, sparse: bool = False, act_order: bool = False,
                 device=None, dtype=None):
        super().__init__()
        G = in_features if group_size in (None, -1) else int(group_size)
        unit = 32 if sparse else 8
        if in_features <= 0 or in_features % unit or out_features <= 0 or out_features % 8:
            raise Int4mmValueError(
                f"Int4Linear: in_features = {in_features} must be a positive multiple of {unit}"
                f" and out_features = {out_features} of 8"
            )
        if in_features % G or (G != in_features and G % unit):
            raise Int4mmValueError(f"group_size: {group_size} must divide in_features = "
                                   f"{in_features} and be a multiple of {unit}")
        self.in_features, self.out_features = in_features, out_features
        self.group_size, self.sparse = G, bool(sparse)
        K, N = in_features, out_features
        rows = K // 16 if sparse else K // 8
        kw = {"device": device}
        dtype = torch.float16 if dtype is None else dtype
        if dtype not in (torch.float16, torch.bfloat16):
            raise Int4mmTypeError(f"dtype: expected torch.float16 or torch.bfloat16, got {dtype}")
        self.register_buffer("qweight", torch.zeros((rows, N), dtype=torch.int32, **kw))
        self.register_buffer("scales", torch.zeros((K // G, N), dtype=dtype, **kw))
        self.register_buffer("zeros", torch.zeros((K // G, N), dtype=dtype, **kw))
        self.register_buffer("mask", torch.zeros((K // 32, N), dtype=torch.int32, **kw)
                             if sparse else None)
        self.register_buffer("perm", torch.arange(K, dtype=torch.int32, device=device)
                             if act_order else None)
        if bias:
            self.bias = nn.Parameter(torch.zeros(N, dtype=dtype, **kw),
                                     requires_grad=False)
        else:
            self.register_parameter("bias", None)
        self.register_load_state_dict_post_hook(_validate_after_load)

    # ---- construction

    @classmethod
    def from_quantized(cls, qweight, scales, zeros, mask=None, bias=None, perm=None,
                       group_size=None) -> Int4Linear:
        """From tensors already in int4mm's formats (the original project's
        ``qweight``/``scales``/``zeros``/optional ``mask``; any device), which
        are copied.  ``scales`` of shape ``(N,)`` mean per-channel.  The
        module's dtype is the scales' when they are bfloat16, else float16."""
        qweight, scales, zeros = (torch.as_tensor(a) for a in (qweight, scales, zeros))
        dtype = torch.bfloat16 if scales.dtype == torch.bfloat16 else torch.float16
        if scales.ndim == 1:
            scales, zeros = scales[None, :], zeros.reshape(1, -1)
        sparse = mask is not None
        K = qweight.shape[0] * (16 if sparse else 8)
        N = qweight.shape[1]
        G = K // scales.shape[0] if scales.shape[0] else K
        if group_size is not None and group_size != G:
            raise Int4mmValueError(f"group_size: {group_size} disagrees with scales of shape "
                                   f"{tuple(scales.shape)} (K = {K} gives {G})")
        m = cls(K, N, bias=bias is not None, group_size=G, sparse=sparse,
                act_order=perm is not None, device=qweight.device, dtype=dtype)
        with torch.no_grad():
            for name, value in (("qweight", qweight), ("scales", scales), ("zeros", zeros),
                                ("mask", mask), ("perm", perm), ("bias", bias)):
                if value is not None:
                    t = getattr(m, name)
                    value = torch.as_tensor(value).to(t.device)
                    if value.shape != t.shape:
                        raise Int4mmValueError(f"{name}: expected shape {tuple(t.shape)}, got "
                                               f"{tuple(value.shape)}")
                    t.copy_(value.to(t.dtype) if name in ("bias", "scales", "zeros") else value)
        m._validate()
        return m

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int | None = 128,
                    sparse: bool = False) -> Int4Linear:
        """Quantize an ``nn.Linear`` on the spot (round-to-nearest, see
        :func:`int4mm.quantize`; on CUDA with the GPU quantizer, on the CPU with
        its bit-identical numpy reference).  bf16 weights are quantized in bf16
        (bf16 scales), others in fp16."""
        weight = linear.weight.detach()
        dtype = torch.bfloat16 if weight.dtype == torch.bfloat16 else torch.float16
        w = weight.to(dtype)
        bias = None if linear.bias is None else linear.bias.detach().to(dtype)
        K = linear.in_features
        G = K if group_size in (None, -1) else group_size
        if w.is_cuda:
            q = int4mm.quantize(w.t(), group_size=G, sparse=sparse,
                                stream=torch.cuda.current_stream(w.device).cuda_stream)
            return cls.from_quantized(q.qweight, q.scales, q.zeros, q.mask, bias=bias)
        q = ref.quantize_rtn(w.t().float().numpy(), group_size=G, sparse=sparse,
                             dtype=str(dtype).removeprefix("torch."))
        t = {k: None if q[k] is None else torch.from_numpy(q[k]) for k in
             ("qweight", "scales", "zeros", "mask")}
        t["scales"], t["zeros"] = t["scales"].to(dtype), t["zeros"].to(dtype)
        return cls.from_quantized(t["qweight"], t["scales"], t["zeros"], t["mask"], bias=bias)

    @classmethod
    def from_gptq(cls, tensors_or_path, prefix: str = "", *, zero_storage: str = "v1",
                  sym: bool | None = None, device=None) -> Int4Linear:
        """One GPTQ layer (``{prefix}.qweight``, ``.qzeros``, ``.scales``,
        optional ``.g_idx``/``.bias``) from a safetensors file or a dict; see
        :func:`int4mm.gptq.gptq_arrays`."""
        from .gptq import gptq_arrays

        h = gptq_arrays(tensors_or_path, prefix, zero_storage=zero_storage, sym=sym)
        t = {k: None if h[k] is None else torch.from_numpy(h[k]).to(device)
             for k in ("qweight", "scales", "zeros", "perm", "bias")}
        return cls.from_quantized(t["qweight"], t["scales"], t["zeros"], bias=t["bias"],
                                  perm=t["perm"])

    # ---- behaviour

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.int4mm.matmul(x, self.qweight, self.scales, self.zeros, self.mask,
                                       self.bias, self.perm, self.group_size)

    def prepare(self) -> Int4Linear:
        """Build the cached PreparedWeight now (e.g. before CUDA-graph capture)."""
        if self.qweight.is_cuda:
            _prepared(self.qweight, self.scales, self.zeros, self.mask, self.perm)
        return self

    def extra_repr(self) -> str:
        g = "per-channel" if self.group_size == self.in_features else str(self.group_size)
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, group_size={g}, sparse={self.sparse}"
                + (", act_order=True" if self.perm is not None else ""))

    def _validate(self):
        """Checks what the kernels cannot afford to check: 16:32 mask blocks and perm."""
        if self.mask is not None and self.mask.is_cuda:
            int4mm.validate_sparse_mask(self.mask,
                                        stream=torch.cuda.current_stream(self.mask.device))
        elif self.mask is not None:
            ref.unpack_sparse(self.qweight.numpy(), self.mask.numpy())
        if self.perm is not None:
            p = self.perm.cpu().numpy()
            if not np.array_equal(np.sort(p), np.arange(self.in_features)):
                raise Int4mmValueError(f"perm: not a permutation of 0..{self.in_features - 1}")


def _validate_after_load(module, incompatible_keys):
    module._validate()


# --------------------------------------------------------------------------- model surgery


def _eligible(m: nn.Linear, group_size, sparse) -> bool:
    K, N = m.in_features, m.out_features
    G = K if group_size in (None, -1) else group_size
    unit = 32 if sparse else 8
    return K % unit == 0 and N % 8 == 0 and K % G == 0 and (G == K or G % unit == 0)


def replace_linear(model: nn.Module, filter=None, group_size: int | None = 128,
                   sparse: bool = False, progress: bool = True) -> nn.Module:
    """Swap every eligible ``nn.Linear`` of ``model`` for an :class:`Int4Linear`
    (quantized on the spot, in place, one layer at a time); returns ``model``.

    ``filter(name, module) -> bool`` picks layers (default: all).  A layer is
    eligible when its shape fits int4mm's rules (in_features a multiple of 8,
    or 32 sparse, and of ``group_size``; out_features a multiple of 8); others
    are left alone.  ``progress``: a tqdm bar when tqdm is installed, else a
    line per tenth of the layers.
    """
    todo = [(name, m) for name, m in model.named_modules()
            if type(m) is nn.Linear and _eligible(m, group_size, sparse)
            and (filter is None or filter(name, m))]
    bar = None
    if progress and todo:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc="int4mm: quantizing", unit="layer")
        except ImportError:
            bar = None
    step = max(1, len(todo) // 10)
    total = len(todo)
    todo.reverse()
    for i in range(total):
        name, m = todo.pop()  # drop our reference: the fp16 layer is freed once swapped
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, Int4Linear.from_linear(m, group_size=group_size, sparse=sparse))
        del m
        if bar is not None:
            bar.update(1)
        elif progress and ((i + 1) % step == 0 or i + 1 == total):
            print(f"int4mm: quantized {i + 1}/{total} linear layers ({name})", flush=True)
    if bar is not None:
        bar.close()
    return model
