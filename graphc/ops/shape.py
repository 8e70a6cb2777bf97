"""Shape and data-movement ops, and the ops that create tensors from attributes alone.

Attributes are always fully resolved by the front end: reshape has no -1, slice bounds are clamped
and non-negative, permute/concat dims are non-negative.
"""

from __future__ import annotations

import numpy as np

from .._dtype import bool_, dtype, int32, int64
from ..errors import ShapeError
from ..sym import Dim, floor_div, is_static, prod
from .registry import Attr, TensorType, defop, norm_dim


def _needs_dims(op: str, x: TensorType) -> None:
    if x.ndim == 0:
        raise ShapeError(f"{op}: needs a tensor with at least 1 dimension, got a 0-d tensor")


def _fmt(shape) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


@defop("reshape", ("x",), {"shape": Attr("dims")}, family="view")
def reshape(x: TensorType, shape: tuple[Dim, ...]) -> TensorType:
    """Same elements, new shape (row-major order; a view in every backend)."""
    if any(is_static(d) and d < 0 for d in shape):
        raise ShapeError(f"reshape: shape {_fmt(shape)} has a negative dim (the front end resolves -1)")
    if prod(x.shape) != prod(shape):
        raise ShapeError(f"reshape: cannot view {_fmt(x.shape)} ({prod(x.shape)} elements) as "
                         f"{_fmt(shape)} ({prod(shape)} elements)")
    return x.with_shape(shape)


@reshape.reference
def _(x, shape):
    return x.reshape(tuple(int(d) for d in shape))


@defop("permute", ("x",), {"dims": Attr("ints")}, family="permute")
def permute(x: TensorType, dims: tuple[int, ...]) -> TensorType:
    """Reorder the axes: out.shape[i] = x.shape[dims[i]]."""
    if sorted(dims) != list(range(x.ndim)):
        raise ShapeError(f"permute: dims {list(dims)} are not a permutation of 0..{x.ndim - 1}")
    return x.with_shape([x.shape[d] for d in dims])


@permute.reference
def _(x, dims):
    return np.asarray(np.transpose(x, dims), order="C")


@defop("expand", ("x",), {"shape": Attr("dims")}, family="expand")
def expand(x: TensorType, shape: tuple[Dim, ...]) -> TensorType:
    """Broadcast x to shape (PyTorch expand; new leading dims allowed)."""
    if len(shape) < x.ndim:
        raise ShapeError(f"expand: target {_fmt(shape)} has fewer dims than the input {_fmt(x.shape)}")
    off = len(shape) - x.ndim
    for i, d in enumerate(x.shape):
        if d != 1 and d != shape[off + i]:
            raise ShapeError(f"expand: cannot expand {_fmt(x.shape)} to {_fmt(shape)} (dim {off + i})")
    return x.with_shape(shape)


@expand.reference
def _(x, shape):
    return np.asarray(np.broadcast_to(x, tuple(int(d) for d in shape)), order="C")


def slice_len(start: Dim, end: Dim, step: int) -> Dim:
    n = end - start
    if step == 1:
        return n
    if is_static(n):
        return max(0, -(-n // step))
    q = floor_div(n + (step - 1), step)  # ceil(n / step), a polynomial when n's terms divide by step
    if q is None:
        raise ShapeError(f"slice: length of ({n})/{step} is not exact for a dynamic dim")
    return q


@defop("slice", ("x",), {"dim": Attr("int"), "start": Attr("dim"), "end": Attr("dim"), "step": Attr("int", 1)},
       family="slice")
def slice_(x: TensorType, dim: int, start: Dim, end: Dim, step: int) -> TensorType:
    """x[..., start:end:step, ...] along dim, with 0 <= start <= end <= size and step > 0."""
    _needs_dims("slice", x)
    d = norm_dim("slice", dim, x.ndim)
    if d != dim:
        raise ShapeError(f"slice: dim must be non-negative, got {dim}")
    if step <= 0:
        raise ShapeError(f"slice: step must be positive, got {step}")
    size = x.shape[d]
    if is_static(start) and is_static(end) and is_static(size):
        if not 0 <= start <= end <= size:
            raise ShapeError(f"slice: bounds {start}:{end} not within 0..{size} on dim {d}")
    shape = list(x.shape)
    shape[d] = slice_len(start, end, step)
    return x.with_shape(shape)


@slice_.reference
def _(x, dim, start, end, step):
    idx = [slice(None)] * x.ndim
    idx[dim] = slice(int(start), int(end), step)
    return np.asarray(x[tuple(idx)], order="C")


@defop("concat", ("xs*",), {"dim": Attr("int")}, family="concat")
def concat(*xs: TensorType, dim: int) -> TensorType:
    """Join along dim (all other dims equal; one dtype)."""
    if not xs:
        raise ShapeError("concat: needs at least one tensor")
    first = xs[0]
    _needs_dims("concat", first)
    d = norm_dim("concat", dim, first.ndim)
    total: Dim = 0
    for i, t in enumerate(xs):
        if t.dtype is not first.dtype:
            raise ShapeError(f"concat: tensor {i} has dtype {t.dtype}, tensor 0 has {first.dtype}")
        if t.ndim != first.ndim or any(a != b for j, (a, b) in enumerate(zip(t.shape, first.shape)) if j != d):
            raise ShapeError(f"concat: tensor {i} has shape {_fmt(t.shape)}, incompatible with "
                             f"{_fmt(first.shape)} along dim {d}")
        total = total + t.shape[d]
    shape = list(first.shape)
    shape[d] = total
    return first.with_shape(shape)


@concat.reference
def _(*xs, dim):
    return np.concatenate(xs, axis=dim)


@defop("pad", ("x",), {"pads": Attr("ints"), "value": Attr("scalar", 0.0)}, family="pad")
def pad(x: TensorType, pads: tuple[int, ...], value) -> TensorType:
    """Constant padding, PyTorch F.pad order: (left, right) of the last dim, then the one before, ...;
    negative pads crop."""
    if len(pads) % 2 or len(pads) // 2 > x.ndim:
        raise ShapeError(f"pad: {len(pads)} pad values do not fit a {x.ndim}-d tensor")
    shape = list(x.shape)
    for i in range(len(pads) // 2):
        d = x.ndim - 1 - i
        shape[d] = shape[d] + pads[2 * i] + pads[2 * i + 1]
        if is_static(shape[d]) and shape[d] < 0:
            raise ShapeError(f"pad: dim {d} would have negative size {shape[d]}")
    return x.with_shape(shape)


@pad.reference
def _(x, pads, value):
    y = x
    widths = [(0, 0)] * x.ndim
    for i in range(len(pads) // 2):
        d = x.ndim - 1 - i
        lo, hi = pads[2 * i], pads[2 * i + 1]
        sl = [slice(None)] * x.ndim
        sl[d] = slice(max(0, -lo), y.shape[d] - max(0, -hi))
        y = y[tuple(sl)]
        widths[d] = (max(lo, 0), max(hi, 0))
    return np.pad(y, widths, constant_values=np.asarray(value).astype(x.dtype))


def _check_index(op: str, idx: TensorType) -> None:
    if idx.dtype not in (int64, int32):
        raise ShapeError(f"{op}: index tensor must be int64 or int32, got {idx.dtype}")


def _index_error(op: str, idx: np.ndarray, size: int) -> None:
    if idx.size and (idx.min() < -size or idx.max() >= size):
        bad = idx[(idx < -size) | (idx >= size)].flat[0]
        raise IndexError(f"{op}: index {bad} is out of bounds for size {size}")


@defop("index_select", ("x", "index"), {"dim": Attr("int")}, family="index_select")
def index_select(x: TensorType, index: TensorType, dim: int) -> TensorType:
    """Pick slices along dim by a 1-d index tensor (negative indices count from the end)."""
    _check_index("index_select", index)
    _needs_dims("index_select", x)
    d = norm_dim("index_select", dim, x.ndim)
    if index.ndim != 1:
        raise ShapeError(f"index_select: index must be 1-d, got {index.ndim}-d")
    shape = list(x.shape)
    shape[d] = index.shape[0]
    return x.with_shape(shape)


@index_select.reference
def _(x, index, dim):
    _index_error("index_select", index, x.shape[dim])
    return np.take(x, index, axis=dim)


@defop("gather", ("x", "index"), {"dim": Attr("int")}, family="gather")
def gather(x: TensorType, index: TensorType, dim: int) -> TensorType:
    """torch.gather: out[i][j] = x[index[i][j]][j] for dim 0 (same rank; index dims <= x dims)."""
    _check_index("gather", index)
    d = norm_dim("gather", dim, x.ndim)
    if index.ndim != x.ndim:
        raise ShapeError(f"gather: index must have as many dims as the input ({x.ndim}), got {index.ndim}")
    for i, (a, b) in enumerate(zip(index.shape, x.shape)):
        if i != d and is_static(a) and is_static(b) and a > b:
            raise ShapeError(f"gather: index size {a} exceeds input size {b} on dim {i}")
    return index.with_dtype(x.dtype)


@gather.reference
def _(x, index, dim):
    _index_error("gather", index, x.shape[dim])
    sl = tuple(slice(0, s) if i != dim else slice(None) for i, s in enumerate(index.shape))
    return np.take_along_axis(x[sl], index, axis=dim)


# ------------------------------------------------------------------------------------- creation
@defop("constant", (), {"value": Attr("scalar"), "dtype": Attr("dtype")}, family="fill")
def constant(value, dtype: dtype) -> TensorType:
    """A 0-d tensor holding one scalar (larger constants are parameters)."""
    return TensorType((), dtype)


@constant.reference
def _(value, dtype):
    return np.asarray(value).astype(dtype.np)


@defop("full", (), {"shape": Attr("dims"), "value": Attr("scalar"), "dtype": Attr("dtype")}, family="fill")
def full(shape: tuple[Dim, ...], value, dtype: dtype) -> TensorType:
    """A tensor of the given (possibly dynamic) shape filled with value."""
    return TensorType(tuple(shape), dtype)


@full.reference
def _(shape, value, dtype):
    return np.full(tuple(int(d) for d in shape), value).astype(dtype.np)


@defop("arange", (), {"start": Attr("scalar", 0), "end": Attr("dim"), "step": Attr("scalar", 1),
                      "dtype": Attr("dtype", int64)}, family="arange")
def arange(start, end: Dim, step, dtype: dtype) -> TensorType:
    """start, start+step, ... < end. A dynamic end needs start 0 and step 1."""
    if dtype is bool_:
        raise ShapeError("arange: dtype bool is not supported")
    if not is_static(end):
        if start != 0 or step != 1:
            raise ShapeError("arange: a dynamic end needs start=0 and step=1")
        return TensorType((end,), dtype)
    if step == 0:
        raise ShapeError("arange: step must be nonzero")
    n = max(0, int(np.ceil((end - start) / step)))
    return TensorType((n,), dtype)


@arange.reference
def _(start, end, step, dtype):
    return np.arange(start, int(end), step).astype(dtype.np)
