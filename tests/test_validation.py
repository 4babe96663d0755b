"""Bad input is refused on the host with a message naming the argument, the
value and the rule - before any kernel could see it.  These run without a GPU:
FakeCAI exposes host memory through __cuda_array_interface__."""

import numpy as np
import pytest

import int4mm
from int4mm import reference as ref
from int4mm.errors import Int4mmTypeError, Int4mmValueError

from .conftest import FakeCAI

pytest.importorskip("int4mm._int4mm", reason="compiled extension not built")

K, N = 64, 16


def aligned(shape, dtype):
    """A host array whose data pointer is 64-byte aligned."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.zeros(n + 64, dtype=np.uint8)
    off = (-raw.ctypes.data) % 64
    return raw[off:off + n].view(dtype).reshape(shape)


def weights(G=None, sparse=False):
    w = ref.random_weights(K, N, group_size=G, sparse=sparse, seed=7)
    out = {k: FakeCAI(np.ascontiguousarray(w[k])) for k in ("qweight", "scales", "zeros")}
    out["mask"] = FakeCAI(w["mask"]) if sparse else None
    return out


def x_of(shape=(4, K), dtype=np.float16):
    return FakeCAI(aligned(shape, dtype))


def call(x=None, w=None, **kw):
    w = w if w is not None else weights()
    x = x if x is not None else x_of()
    return int4mm.matmul(x, w["qweight"], w["scales"], w["zeros"], mask=w["mask"], **kw)


def test_not_a_cuda_array():
    # neither __cuda_array_interface__ nor __dlpack__ (a numpy array has
    # __dlpack__: tests/test_dlpack_import.py refuses it as host memory)
    with pytest.raises(Int4mmTypeError, match=r"^x: expected an object exposing "
                       r"__cuda_array_interface__ or __dlpack__ .*, got list$"):
        call(x=np.zeros((4, K), np.float16).tolist())


def test_wrong_dtype_named():
    with pytest.raises(Int4mmTypeError, match=r"x: expected dtype float16 or bfloat16, got float32"):
        call(x=x_of(dtype=np.float32))
    w = weights()
    w["scales"] = FakeCAI(np.zeros(N, np.float32))
    with pytest.raises(Int4mmTypeError, match=r"scales: expected dtype float16"):
        call(w=w)


def test_wrong_k():
    with pytest.raises(Int4mmValueError, match=r"x: last dimension is 32 but the weight has K = 64"):
        call(x=x_of((4, 32)))


def test_host_memory_refused():
    with pytest.raises(Int4mmValueError, match=r"points to host memory"):
        call()


def test_non_contiguous_refused():
    arr = aligned((4, 2 * K), np.float16)
    x = FakeCAI(arr, shape=(4, K), strides=(2 * K * 2, 2))
    with pytest.raises(Int4mmValueError, match=r"x: must be C-contiguous"):
        call(x=x)


def test_misaligned_refused():
    arr = aligned((4 * K + 8,), np.float16)
    x = FakeCAI(arr, shape=(4, K), typestr="<f2", offset=2)
    with pytest.raises(Int4mmValueError, match=r"x: data pointer 0x[0-9a-f]+ is not 16-byte aligned"):
        call(x=x)


def test_read_only_out_refused():
    out = FakeCAI(aligned((4, N), np.float16), readonly=True)
    with pytest.raises(Int4mmValueError, match=r"out: is read-only"):
        call(out=out)


def test_out_shape_checked():
    out = FakeCAI(aligned((4, N + 8), np.float16))
    with pytest.raises(Int4mmValueError, match=r"out: expected shape \(4, 16\), got \(4, 24\)"):
        call(out=out)


def test_n_must_be_multiple_of_8():
    qw = FakeCAI(aligned((K // 8, 12), np.int32))
    s = FakeCAI(aligned((12,), np.float16))
    with pytest.raises(Int4mmValueError, match=r"N = 12 .* multiple of 8"):
        int4mm.matmul(x_of(), qw, s, s)


def test_bad_group_size():
    w = weights()
    # 3 groups do not divide K = 64
    w["scales"] = FakeCAI(aligned((3, N), np.float16))
    w["zeros"] = FakeCAI(aligned((3, N), np.float16))
    with pytest.raises(Int4mmValueError, match=r"scales: 3 groups do not divide K = 64"):
        call(w=w)


def test_group_size_too_small_for_sparse():
    w = weights(sparse=True)
    w["scales"] = FakeCAI(aligned((4, N), np.float16))  # G = 16 < 32
    w["zeros"] = FakeCAI(aligned((4, N), np.float16))
    with pytest.raises(Int4mmValueError, match=r"group_size: 16 must be a multiple of 32"):
        call(w=w)


def test_explicit_group_size_must_agree():
    with pytest.raises(Int4mmValueError, match=r"group_size: 32 disagrees"):
        call(group_size=32)


def test_sparse_mask_shape():
    w = weights(sparse=True)
    w["mask"] = FakeCAI(aligned((1, N), np.int32))
    with pytest.raises(Int4mmValueError, match=r"mask: expected shape \(2, 16\)"):
        call(w=w)


def test_masked_cai_refused():
    x = FakeCAI(aligned((4, K), np.float16), extra={"mask": object()})
    with pytest.raises(Int4mmValueError, match=r"x: .*mask"):
        call(x=x)


def test_bad_path_and_stream():
    with pytest.raises(Int4mmValueError, match=r"path: expected one of"):
        call(path="fast")
    with pytest.raises(Int4mmTypeError, match=r"stream: expected"):
        call(stream="s0")


def test_pack_sparse_rejects_wrong_k():
    c = FakeCAI(aligned((48, 8), np.uint8))
    with pytest.raises(Int4mmValueError, match=r"K a positive multiple of 32"):
        int4mm.pack_sparse(c, c)


def test_pack_dense_wrong_dtype():
    c = FakeCAI(aligned((8, 8), np.int32))
    with pytest.raises(Int4mmTypeError, match=r"codes: expected dtype uint8, got int32"):
        int4mm.pack_dense(c)


def test_gpu_call_without_gpu_is_clear():
    """On a GPU-less machine a real call fails with a clear sentence, not a crash."""
    if int4mm.is_available():
        pytest.skip("a GPU is present; this test is for GPU-less machines")
    with pytest.raises(int4mm.Int4mmError):
        int4mm._arrays.native().DeviceArray((4,), "<f2", 0, 0)


def test_chosen_config_arguments_checked():
    """chosen_config names a bad row count or a weight that is not prepared
    (no GPU needed: both are refused before anything runs)."""
    with pytest.raises(Int4mmValueError, match="M must be a non-negative int"):
        int4mm.chosen_config(-1, None)
    with pytest.raises(Int4mmValueError, match="M must be a non-negative int"):
        int4mm.chosen_config(True, None)
    with pytest.raises(Int4mmTypeError, match="PreparedWeight"):
        int4mm.chosen_config(4, np.zeros((8, 8), np.int32))
