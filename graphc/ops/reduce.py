"""Reductions, softmax, and matmul."""

from __future__ import annotations

import numpy as np

from .._dtype import bool_, int64
from ..errors import ShapeError
from ..sym import Dim
from .registry import Attr, TensorType, broadcast_shapes, defop, float_only, norm_dim, same_dtype


def _reduced_shape(op: str, x: TensorType, dims: tuple[int, ...], keepdim: bool) -> list[Dim]:
    nd = [norm_dim(op, d, x.ndim) for d in dims]
    if len(set(nd)) != len(nd):
        raise ShapeError(f"{op}: dim {list(dims)} repeats a dimension")
    if list(nd) != list(dims) or sorted(nd) != nd:
        raise ShapeError(f"{op}: dims must be non-negative and sorted, got {list(dims)}")
    return [1 if i in nd else s for i, s in enumerate(x.shape) if keepdim or i not in nd]


def _reduction(name: str, fn, *, kind: str):
    def rule(x: TensorType, dims: tuple[int, ...], keepdim: bool) -> TensorType:
        shape = _reduced_shape(name, x, dims, keepdim)
        if kind == "float":
            float_only(name, x)
        dt = x.dtype
        if kind == "sum" and not dt.is_floating_point:
            dt = int64  # PyTorch: integer and bool sums accumulate in int64
        if kind == "minmax" and dt is bool_:
            raise ShapeError(f"{name}: not defined for bool tensors")
        return TensorType(tuple(shape), dt)

    rule.__doc__ = {
        "sum": "Sum over dims (integer and bool inputs accumulate in int64); keepdim keeps them as size 1.",
        "prod": "Product over dims (integer and bool inputs accumulate in int64); keepdim keeps them as size 1.",
        "mean": "Mean over dims (floating point); keepdim keeps them as size 1.",
        "amax": "Maximum over dims (NaN propagates); keepdim keeps them as size 1.",
        "amin": "Minimum over dims (NaN propagates); keepdim keeps them as size 1.",
    }[name]
    op = defop(name, ("x",), {"dims": Attr("ints"), "keepdim": Attr("bool", False)}, family="reduce")(rule)

    def ref(x, dims, keepdim):
        out = fn(x, axis=tuple(dims), keepdims=keepdim)
        dt = rule(TensorType(x.shape, _np_dtype(x)), dims, keepdim).dtype
        return np.asarray(out).astype(dt.np, copy=False)

    op.reference(ref)
    return op


def _np_dtype(x: np.ndarray):
    from .._dtype import from_numpy_dtype

    return from_numpy_dtype(x.dtype)


def _sum(x, axis, keepdims):
    if x.dtype.kind in "biu":
        return np.sum(x.astype(np.int64), axis=axis, keepdims=keepdims)
    return np.sum(x, axis=axis, keepdims=keepdims)


def _prod(x, axis, keepdims):
    if x.dtype.kind in "biu":
        return np.prod(x.astype(np.int64), axis=axis, keepdims=keepdims)
    return np.prod(x, axis=axis, keepdims=keepdims)


def _mean(x, axis, keepdims):
    return np.mean(x, axis=axis, keepdims=keepdims, dtype=np.float64 if x.dtype == np.float64 else np.float32)


def _amax(x, axis, keepdims):
    if x.size == 0:
        raise ShapeError("amax: reduction over an empty dimension")
    return np.amax(x, axis=axis, keepdims=keepdims)


def _amin(x, axis, keepdims):
    if x.size == 0:
        raise ShapeError("amin: reduction over an empty dimension")
    return np.amin(x, axis=axis, keepdims=keepdims)


_reduction("sum", _sum, kind="sum")
_reduction("prod", _prod, kind="sum")
_reduction("mean", _mean, kind="float")
_reduction("amax", _amax, kind="minmax")
_reduction("amin", _amin, kind="minmax")


@defop("var", ("x",), {"dims": Attr("ints"), "keepdim": Attr("bool", False), "correction": Attr("int", 1)},
       family="reduce")
def var(x: TensorType, dims: tuple[int, ...], keepdim: bool, correction: int) -> TensorType:
    """Variance over dims with Bessel's correction `correction` (PyTorch's torch.var)."""
    float_only("var", x)
    return TensorType(tuple(_reduced_shape("var", x, dims, keepdim)), x.dtype)


@var.reference
def _(x, dims, keepdim, correction):
    return np.var(x.astype(np.float64), axis=tuple(dims), keepdims=keepdim, ddof=correction).astype(x.dtype)


def _argrule(name: str):
    def rule(x: TensorType, dim: int, keepdim: bool) -> TensorType:
        d = norm_dim(name, dim, x.ndim)
        if d != dim:
            raise ShapeError(f"{name}: dim must be non-negative, got {dim}")
        if x.dtype is bool_:
            raise ShapeError(f"{name}: not defined for bool tensors")
        shape = [1 if i == d else s for i, s in enumerate(x.shape) if keepdim or i != d]
        return TensorType(tuple(shape), int64)

    rule.__doc__ = f"Index (int64) of the first {'largest' if name == 'argmax' else 'smallest'} element along dim."
    return rule


argmax = defop("argmax", ("x",), {"dim": Attr("int"), "keepdim": Attr("bool", False)}, family="argreduce")(
    _argrule("argmax"))
argmin = defop("argmin", ("x",), {"dim": Attr("int"), "keepdim": Attr("bool", False)}, family="argreduce")(
    _argrule("argmin"))


@argmax.reference
def _(x, dim, keepdim):
    if x.shape[dim] == 0:
        raise ShapeError("argmax: reduction over an empty dimension")
    out = np.argmax(x, axis=dim)
    return (np.expand_dims(out, dim) if keepdim else out).astype(np.int64)


@argmin.reference
def _(x, dim, keepdim):
    if x.shape[dim] == 0:
        raise ShapeError("argmin: reduction over an empty dimension")
    out = np.argmin(x, axis=dim)
    return (np.expand_dims(out, dim) if keepdim else out).astype(np.int64)


def _softmax_rule(name: str):
    def rule(x: TensorType, dim: int) -> TensorType:
        """exp(x - max) / sum(exp(x - max)) along dim (log_softmax: its logarithm, computed stably)."""
        float_only(name, x)
        if norm_dim(name, dim, x.ndim) != dim:
            raise ShapeError(f"{name}: dim must be non-negative, got {dim}")
        return x

    return rule


softmax = defop("softmax", ("x",), {"dim": Attr("int")}, family="softmax")(_softmax_rule("softmax"))
log_softmax = defop("log_softmax", ("x",), {"dim": Attr("int")}, family="softmax")(
    _softmax_rule("log_softmax"))


@softmax.reference
def _(x, dim):
    with np.errstate(invalid="ignore"):
        m = np.max(x, axis=dim, keepdims=True)
        e = np.exp(x - m)
        return (e / np.sum(e, axis=dim, keepdims=True)).astype(x.dtype)


@log_softmax.reference
def _(x, dim):
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.max(x, axis=dim, keepdims=True)
        s = x - m
        return (s - np.log(np.sum(np.exp(s), axis=dim, keepdims=True))).astype(x.dtype)


def _scan_rule(name: str):
    def rule(x: TensorType, dim: int) -> TensorType:
        if norm_dim(name, dim, x.ndim) != dim:
            raise ShapeError(f"{name}: dim must be non-negative, got {dim}")
        # PyTorch: integer and bool inputs accumulate in int64
        return x if x.dtype.is_floating_point else x.with_dtype(int64)

    what = "sum" if name == "cumsum" else "product"
    rule.__doc__ = (f"Running {what} along dim: out[..., i, ...] is the {what} of x[..., :i+1, ...] (integer and "
                    "bool inputs accumulate in int64, float32 in double, as PyTorch's CPU kernels).")
    return rule


cumsum = defop("cumsum", ("x",), {"dim": Attr("int")}, family="scan")(_scan_rule("cumsum"))
cumprod = defop("cumprod", ("x",), {"dim": Attr("int")}, family="scan")(_scan_rule("cumprod"))


def _scan_ref(fn):
    def ref(x, dim):
        integer = x.dtype.kind in "biu"
        with np.errstate(all="ignore"):
            out = fn(x.astype(np.int64 if integer else np.float64), axis=dim)
        return out if integer else out.astype(x.dtype)

    return ref


cumsum.reference(_scan_ref(np.cumsum))
cumprod.reference(_scan_ref(np.cumprod))


@defop("argsort", ("x",), {"dim": Attr("int"), "descending": Attr("bool", False), "k": Attr("int?", None)},
       family="sort")
def argsort(x: TensorType, dim: int, descending: bool, k: int | None) -> TensorType:
    """Indices (int64) that sort x along dim, ascending or descending, or with k the first k of them
    (topk: the k largest when descending, else the k smallest). Stable: equal values keep their order;
    NaN sorts above every number (last ascending, first descending) and -0.0 equals 0.0, as PyTorch."""
    if norm_dim("argsort", dim, x.ndim) != dim:
        raise ShapeError(f"argsort: dim must be non-negative, got {dim}")
    shape = list(x.shape)
    if k is not None:
        n = shape[dim]
        if k < 0 or (isinstance(n, int) and k > n):
            raise ShapeError(f"argsort: k={k} is out of range for a dim of size {n} (selected index k out of range)")
        shape[dim] = k
    return TensorType(tuple(shape), int64)


def _sort_order(x: np.ndarray, dim: int, descending: bool) -> np.ndarray:
    x = np.moveaxis(x, dim, -1)
    if x.dtype.kind == "f":
        x = np.where(x == 0, np.zeros((), x.dtype), x)  # -0.0 sorts as 0.0
    if not descending:
        return np.moveaxis(np.argsort(x, axis=-1, kind="stable"), -1, dim)
    # stable descending: sort the reversed rows ascending and reverse back (NaN first, ties in index order)
    n = x.shape[-1]
    rev = np.argsort(x[..., ::-1], axis=-1, kind="stable")[..., ::-1]
    return np.moveaxis(n - 1 - rev, -1, dim)


@argsort.reference
def _(x, dim, descending, k):
    idx = _sort_order(x.astype(np.int64) if x.dtype == np.bool_ else x, dim, descending).astype(np.int64)
    if k is not None:
        idx = np.take(idx, np.arange(k), axis=dim)
    return np.asarray(idx, order="C")


@defop("matmul", ("a", "b"), family="matmul")
def matmul(a: TensorType, b: TensorType) -> TensorType:
    """torch.matmul: 1-d operands are promoted and the added dim removed; batch dims broadcast."""
    dt = same_dtype("matmul", a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError("matmul: both operands need at least 1 dimension")
    if not (dt.is_floating_point or dt in (int64,)):
        raise ShapeError(f"matmul: unsupported dtype {dt}")
    ash = list(a.shape) if a.ndim > 1 else [1, a.shape[0]]
    bsh = list(b.shape) if b.ndim > 1 else [b.shape[0], 1]
    if ash[-1] != bsh[-2]:
        raise ShapeError(
            f"matmul: inner dims differ: [{','.join(map(str, a.shape))}] @ [{','.join(map(str, b.shape))}] "
            f"({ash[-1]} vs {bsh[-2]})"
        )
    batch = broadcast_shapes("matmul", ash[:-2], bsh[:-2])
    out = list(batch)
    if a.ndim > 1:
        out.append(ash[-2])
    if b.ndim > 1:
        out.append(bsh[-1])
    return TensorType(tuple(out), dt)


@matmul.reference
def _(a, b):
    if a.dtype == np.float32:
        return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.float32)
    return np.matmul(a, b)


