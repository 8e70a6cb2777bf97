"""PyTorch's free functions and Tensor methods that real model code reaches for, beyond the core of
:mod:`graphc.tensor`: grad-mode context managers, flips and rolls, einsum,
meshgrid, logsumexp, addmm, the float predicates, finfo/iinfo and the aliases.

Each one either composes registry ops through Tensor methods (roll = slices + concat, flip =
index_select, einsum = permute/reshape/matmul, logsumexp = amax + exp + sum + log, ...) or calls a
registry op (gather, index_select, expm1, log1p, log2), so eager results,
traced graphs and compiled code share one definition. :func:`install` puts the Tensor methods on the
class and ``graphc/__init__.py`` exports the functions.
"""

from __future__ import annotations

import builtins
import functools
import string
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _dtype as D
from . import return_types
from ._dtype import as_dtype
from .ops.registry import broadcast_shapes as _broadcast_shapes
from .sym import Dim, is_static, prod
from .tensor import _ACTIVE, Tensor, _const, _wrap_dim, apply, arange, cat, tensor, where

__all__ = [
    "no_grad", "enable_grad", "inference_mode", "set_grad_enabled", "is_grad_enabled", "is_inference_mode_enabled",
    "_assert", "meshgrid", "roll", "gather", "index_select", "einsum", "flip", "fliplr",
    "flipud", "isnan", "isinf", "isfinite", "isposinf", "isneginf", "expm1", "log2", "log1p",
    "logsumexp", "addmm", "baddbmm", "bmm", "broadcast_to", "broadcast_tensors", "broadcast_shapes", "clamp_min",
    "clamp_max", "clone", "detach", "divide", "multiply", "subtract", "negative", "swapaxes", "swapdims",
    "true_divide", "finfo", "iinfo", "multinomial", "movedim", "moveaxis",
    "cumsum", "cumprod", "sort", "argsort", "msort", "topk",
]


# ------------------------------------------------------------------------------------------ grad mode
class _GradState:
    """graphc has no autograd: the grad mode is only recorded so that code asking for it sees the
    value it set (is_grad_enabled, is_inference_mode_enabled)."""

    enabled = True
    inference = False


class _GradContext:
    """A context manager that also decorates functions, with or without parentheses, like PyTorch's
    (``@no_grad()``, ``@no_grad``, ``with no_grad():``)."""

    def __new__(cls, *args: Any, **kwargs: Any):
        if len(args) == 1 and not kwargs and callable(args[0]) and not isinstance(args[0], builtins.bool):
            return cls()(args[0])  # the bare decorator form: @graphc.no_grad
        return super().__new__(cls)

    def _state(self) -> tuple[builtins.bool, builtins.bool]:
        return _GradState.enabled, _GradState.inference

    def __enter__(self) -> None:
        self._saved = (_GradState.enabled, _GradState.inference)
        _GradState.enabled, _GradState.inference = self._state()

    def __exit__(self, *exc: Any) -> None:
        _GradState.enabled, _GradState.inference = self._saved

    def __call__(self, func: Callable) -> Callable:
        make = functools.partial(type(self), *self._args())

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any):
            with make():
                return func(*args, **kwargs)

        return wrapper

    def _args(self) -> tuple:
        return ()

    def clone(self) -> _GradContext:
        return type(self)(*self._args())


class no_grad(_GradContext):  # noqa: N801 - PyTorch's name
    """Disable gradient tracking (graphc records none anyway): a context manager and a decorator."""

    def _state(self) -> tuple[builtins.bool, builtins.bool]:
        return False, _GradState.inference


class enable_grad(_GradContext):  # noqa: N801
    """Enable gradient tracking inside a no_grad block (graphc records none anyway)."""

    def _state(self) -> tuple[builtins.bool, builtins.bool]:
        return True, _GradState.inference


class inference_mode(_GradContext):  # noqa: N801
    """``inference_mode(mode=True)``: no_grad plus PyTorch's inference-tensor bookkeeping, which graphc
    does not need; a context manager and a decorator."""

    def __init__(self, mode: builtins.bool = True):
        self.mode = builtins.bool(mode)

    def _state(self) -> tuple[builtins.bool, builtins.bool]:
        return (not self.mode) and _GradState.enabled, self.mode

    def _args(self) -> tuple:
        return (self.mode,)


class set_grad_enabled(_GradContext):  # noqa: N801
    """``set_grad_enabled(mode)`` sets the grad mode at once (a function call), or for a ``with`` block."""

    def __new__(cls, mode: builtins.bool):
        return super().__new__(cls)

    def __init__(self, mode: builtins.bool):
        self.mode = builtins.bool(mode)
        self._prev = _GradState.enabled
        _GradState.enabled = self.mode

    def __enter__(self) -> None:
        self._saved = (self._prev, _GradState.inference)

    def _args(self) -> tuple:
        return (self.mode,)

    def __call__(self, func: Callable) -> Callable:
        _GradState.enabled = self._prev  # as a decorator it applies per call only
        return super().__call__(func)


def is_grad_enabled() -> builtins.bool:
    return _GradState.enabled


def is_inference_mode_enabled() -> builtins.bool:
    return _GradState.inference


def _assert(condition: Any, message: str) -> None:
    """torch._assert: ``assert condition, message`` that stays in scripted and traced code. A condition
    on tensor values fails tracing with a data-dependent-control-flow TraceError naming the line."""
    if not condition:
        raise AssertionError(message)


# ------------------------------------------------------------------------------------------ helpers
def _t(x: Any, fn: str, what: str = "input") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}(): argument '{what}' must be a graphc.Tensor, got {type(x).__name__}")
    return x


def _dims_arg(dims: Any) -> tuple[int, ...]:
    if isinstance(dims, (int, np.integer)):
        return (int(dims),)
    return tuple(int(d) for d in dims)


def _dim_value(x: Tensor, n: Dim) -> Tensor:
    """The size n as a 0-d int64 tensor of x's trace (a dynamic size is counted by a reduction)."""
    if is_static(n):
        return _const(int(n), D.int64, x)
    return apply("full", shape=(n,), value=1, dtype=D.int64).sum()


def _as_float(x: Tensor) -> Tensor:
    return x if x.dtype.is_floating_point else x.to(D.get_default_dtype())


# ------------------------------------------------------------------------------------------ scans
def _scan(op: str, input: Tensor, dim: int, dtype: Any) -> Tensor:  # noqa: A002
    x = _t(input, op)
    if dtype is not None:
        x = x.to(dtype)  # PyTorch casts the input before the scan, and the result has that dtype
    d = _wrap_dim(dim, x.ndim)
    out = apply(op, x.reshape(1), dim=0).reshape(()) if x.ndim == 0 else apply(op, x, dim=d)
    return out if dtype is None or out.dtype is x.dtype else out.to(x.dtype)


def cumsum(input: Tensor, dim: int, *, dtype: Any = None) -> Tensor:  # noqa: A002
    """The running sum along dim (the ``cumsum`` op); integer and bool inputs give int64, and ``dtype``
    casts the input first, like PyTorch."""
    return _scan("cumsum", input, dim, dtype)


def cumprod(input: Tensor, dim: int, *, dtype: Any = None) -> Tensor:  # noqa: A002
    """The running product along dim (the ``cumprod`` op), with cumsum's dtype rules."""
    return _scan("cumprod", input, dim, dtype)


# ------------------------------------------------------------------------------------------ order
def _argsort(x: Tensor, dim: int, descending: builtins.bool, k: int | None = None) -> Tensor:
    """The ``argsort`` op along dim (a 0-d tensor as one element); the values are gathered by the caller."""
    d = _wrap_dim(dim, x.ndim)
    if x.ndim == 0:
        return apply("argsort", x.reshape(1), dim=0, descending=builtins.bool(descending), k=k).reshape(())
    return apply("argsort", x, dim=d, descending=builtins.bool(descending), k=k)


def _take(x: Tensor, dim: int, idx: Tensor) -> Tensor:
    return gather(x, dim, idx) if x.ndim else x


def sort(input: Tensor, dim: int = -1, descending: builtins.bool = False, *,  # noqa: A002
         stable: builtins.bool = False) -> return_types.sort:
    """(values, indices) of input sorted along dim (the ``argsort`` op, then ``gather``). graphc's sort is
    always stable (``stable=True``'s order: equal values keep their order); NaN sorts above every number."""
    x = _t(input, "sort")
    idx = _argsort(x, dim, descending)
    return return_types.sort(_take(x, dim, idx), idx)


def argsort(input: Tensor, dim: int = -1, descending: builtins.bool = False, *,  # noqa: A002
            stable: builtins.bool = False) -> Tensor:
    """The int64 indices that sort input along dim (stable, like ``sort``)."""
    return _argsort(_t(input, "argsort"), dim, descending)


def msort(input: Tensor) -> Tensor:  # noqa: A002
    """input sorted along its first dim."""
    return sort(input, 0).values


def topk(input: Tensor, k: int, dim: int = -1, largest: builtins.bool = True,  # noqa: A002
         sorted: builtins.bool = True) -> return_types.topk:  # noqa: A002
    """(values, indices) of the k largest (or smallest) elements along dim, in sorted order (``sorted=False``
    returns them sorted too, which PyTorch allows). Among equal values the lower index comes first."""
    x = _t(input, "topk")
    d = _wrap_dim(dim, x.ndim)
    n = x.shape[d] if x.ndim else 1
    if isinstance(k, builtins.bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"topk(): argument 'k' must be int, not {type(k).__name__}")
    if k < 0 or (is_static(n) and k > n):
        raise RuntimeError(f"topk: selected index k out of range (k={k}, dim {d} has size {n})")
    idx = _argsort(x, dim, largest, int(k))
    return return_types.topk(_take(x, dim, idx), idx)








def gather(input: Tensor, dim: int, index: Tensor, *, sparse_grad: builtins.bool = False) -> Tensor:  # noqa: A002
    """out[i][j][k] = input[index[i][j][k]][j][k] for dim 0 (and so on); index has input's rank."""
    x, idx = _t(input, "gather"), _t(index, "gather", "index")
    if x.ndim == 0:
        return apply("gather", x.reshape(1), idx.reshape(1), dim=0).reshape(())
    return apply("gather", x, idx, dim=_wrap_dim(dim, x.ndim))


def index_select(input: Tensor, dim: int, index: Tensor) -> Tensor:  # noqa: A002
    """The slices of input along dim picked by a 1-d (or 0-d) integer index."""
    x, idx = _t(input, "index_select"), _t(index, "index_select", "index")
    if idx.ndim == 0:
        idx = idx.reshape(1)
    if x.ndim == 0:
        return apply("index_select", x.reshape(1), idx, dim=0).reshape(())
    return apply("index_select", x, idx, dim=_wrap_dim(dim, x.ndim))


def _reversed_index(x: Tensor, n: Dim) -> Tensor:
    if is_static(n):
        return tensor(np.arange(int(n) - 1, -1, -1, dtype=np.int64))
    return (_dim_value(x, n) - 1) - arange(n)


def flip(input: Tensor, dims: Any) -> Tensor:  # noqa: A002
    """input with the order of its elements reversed along each of dims."""
    x = _t(input, "flip")
    out = x
    seen: set[int] = set()
    for d in _dims_arg(dims):
        d = _wrap_dim(d, x.ndim)
        if d in seen:
            raise RuntimeError(f"flip: dim {d} appears multiple times in the list of dims")
        seen.add(d)
        n = x.shape[d]
        if x.ndim == 0 or (is_static(n) and n <= 1):
            continue
        out = apply("index_select", out, _reversed_index(x, n), dim=d)
    return out


def fliplr(input: Tensor) -> Tensor:  # noqa: A002
    if input.ndim < 2:
        raise RuntimeError("fliplr: input must be at least 2-d")
    return flip(input, (1,))


def flipud(input: Tensor) -> Tensor:  # noqa: A002
    if input.ndim < 1:
        raise RuntimeError("flipud: input must be at least 1-d")
    return flip(input, (0,))


def roll(input: Tensor, shifts: Any, dims: Any = None) -> Tensor:  # noqa: A002
    """input rolled by shifts along dims (elements pushed off one end come back at the other); without
    dims the flattened tensor rolls and the shape is restored."""
    x = _t(input, "roll")
    sh = _dims_arg(shifts)
    if dims is None:
        if len(sh) != 1:
            raise RuntimeError(f"roll: without dims, shifts must be a single int, got {shifts!r}")
        return roll(x.reshape(-1), sh, 0).reshape(x.shape)
    ds = _dims_arg(dims)
    if len(sh) != len(ds):
        raise RuntimeError(f"roll: shifts and dimensions must align. shifts: {len(sh)}, dims: {len(ds)}")
    out = x
    for s, d in zip(sh, ds):
        d = _wrap_dim(d, x.ndim)
        n = x.shape[d]
        if is_static(n):
            if n == 0 or s % n == 0:
                continue
            s %= n
            out = cat([out.narrow(d, n - s, s), out.narrow(d, 0, n - s)], d)
        else:  # a dynamic size: source index (i - s) mod n
            idx = apply("remainder", arange(n) - s, _dim_value(x, n).reshape(1))
            out = apply("index_select", out, idx, dim=d)
    return out






# ------------------------------------------------------------------------------------------ math
def isnan(input: Tensor) -> Tensor:  # noqa: A002
    x = _t(input, "isnan")
    return x != x


def isinf(input: Tensor) -> Tensor:  # noqa: A002
    x = _t(input, "isinf")
    return x.abs() == np.inf if x.dtype.is_floating_point else x != x


def isposinf(input: Tensor) -> Tensor:  # noqa: A002
    x = _t(input, "isposinf")
    return x == np.inf if x.dtype.is_floating_point else x != x


def isneginf(input: Tensor) -> Tensor:  # noqa: A002
    x = _t(input, "isneginf")
    return x == -np.inf if x.dtype.is_floating_point else x != x


def isfinite(input: Tensor) -> Tensor:  # noqa: A002
    x = _t(input, "isfinite")
    return x.abs() < np.inf if x.dtype.is_floating_point else x == x


def expm1(input: Tensor) -> Tensor:  # noqa: A002
    return apply("expm1", _as_float(_t(input, "expm1")))


def log1p(input: Tensor) -> Tensor:  # noqa: A002
    return apply("log1p", _as_float(_t(input, "log1p")))


def log2(input: Tensor) -> Tensor:  # noqa: A002
    return apply("log2", _as_float(_t(input, "log2")))


def logsumexp(input: Tensor, dim: Any, keepdim: builtins.bool = False) -> Tensor:  # noqa: A002
    """log(sum(exp(input))) over dim, computed stably (PyTorch's formula: the max is taken out, and an
    infinite max is replaced by 0 so that all -inf gives -inf and +inf gives +inf)."""
    x = _as_float(_t(input, "logsumexp"))
    if x.ndim == 0:
        return x
    m = x.amax(dim, keepdim=True)
    m = where(m.abs() == np.inf, _const(0.0, m.dtype, m), m)
    out = (x - m).exp().sum(dim, keepdim=True).log() + m
    return out if keepdim else out.squeeze(_dims_arg(dim) if not isinstance(dim, int) else dim)


def _scaled(t: Tensor, s: Any) -> Tensor:
    return t if s == 1 else t * s


def addmm(input: Tensor, mat1: Tensor, mat2: Tensor, *, beta: Any = 1, alpha: Any = 1) -> Tensor:  # noqa: A002
    """beta * input + alpha * (mat1 @ mat2), with 2-d mat1 and mat2 (beta 0 ignores input, NaN too)."""
    if mat1.ndim != 2 or mat2.ndim != 2:
        raise RuntimeError(f"addmm: mat1 and mat2 must be 2-d, got {mat1.ndim}-d and {mat2.ndim}-d")
    prod_ = _scaled(mat1.matmul(mat2), alpha)
    return prod_ if beta == 0 else _scaled(input, beta) + prod_


def baddbmm(input: Tensor, batch1: Tensor, batch2: Tensor, *, beta: Any = 1, alpha: Any = 1) -> Tensor:  # noqa: A002
    """beta * input + alpha * (batch1 @ batch2), with 3-d batch1 and batch2."""
    if batch1.ndim != 3 or batch2.ndim != 3:
        raise RuntimeError(f"baddbmm: batch1 and batch2 must be 3-d, got {batch1.ndim}-d and {batch2.ndim}-d")
    prod_ = _scaled(batch1.matmul(batch2), alpha)
    return prod_ if beta == 0 else _scaled(input, beta) + prod_


def bmm(input: Tensor, mat2: Tensor) -> Tensor:  # noqa: A002
    """Batched matrix product of two 3-d tensors with the same batch size."""
    if input.ndim != 3 or mat2.ndim != 3:
        raise RuntimeError(f"bmm: both operands must be 3-d, got {input.ndim}-d and {mat2.ndim}-d")
    return input.matmul(mat2)


def broadcast_shapes(*shapes: Any) -> Any:
    from .tensor import Size

    return Size(_broadcast_shapes("broadcast_shapes", *[(s,) if isinstance(s, int) else tuple(s) for s in shapes]))


def broadcast_tensors(*tensors: Tensor) -> tuple[Tensor, ...]:
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    shape = broadcast_shapes(*[t.shape for t in tensors])
    return tuple(t.expand(*shape) for t in tensors)


def broadcast_to(input: Tensor, size: Sequence[Dim]) -> Tensor:  # noqa: A002
    return input.expand(*size)


def movedim(input: Tensor, source: Any, destination: Any) -> Tensor:  # noqa: A002
    """Move dims source to positions destination; the others keep their order."""
    x = _t(input, "movedim")
    src = [_wrap_dim(d, x.ndim) for d in _dims_arg(source)]
    dst = [_wrap_dim(d, x.ndim) for d in _dims_arg(destination)]
    if len(src) != len(dst):
        raise RuntimeError(f"movedim: source and destination must have the same length, got {len(src)} and {len(dst)}")
    rest = iter(d for d in range(x.ndim) if d not in src)
    where_to = dict(zip(dst, src))
    return x.permute([where_to[i] if i in where_to else next(rest) for i in range(x.ndim)])


moveaxis = movedim


def _alias(method: str) -> Callable[..., Any]:
    def f(input: Tensor, *args: Any, **kwargs: Any) -> Any:  # noqa: A002
        return getattr(_t(input, method), method)(*args, **kwargs)

    f.__name__ = f.__qualname__ = method
    f.__doc__ = f"graphc.{method}(t, ...) is t.{method}(...)."
    return f


clamp_min = _alias("clamp_min")
clamp_max = _alias("clamp_max")
clone = _alias("clone")
detach = _alias("detach")
divide = _alias("divide")
multiply = _alias("multiply")
subtract = _alias("subtract")
negative = _alias("negative")
swapaxes = _alias("swapaxes")
swapdims = _alias("swapaxes")
true_divide = _alias("true_divide")


# ------------------------------------------------------------------------------------------ einsum
def _einsum_parse(equation: str, operands: Sequence[Tensor]) -> tuple[list[str], str]:
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise ValueError(f"einsum(): {len(terms)} operand term(s) in {equation!r} for {len(operands)} operand(s)")
    letters = set(eq) - set(",->.")
    free = [c for c in string.ascii_letters if c not in letters]
    ell_nd = 0
    for t, x in zip(terms, operands):
        if "..." in t:
            ell_nd = builtins.max(ell_nd, x.ndim - (len(t) - 3))
    ell = "".join(free[:ell_nd])
    out_terms = []
    for t, x in zip(terms, operands):
        bad = set(t.replace("...", "")) - set(string.ascii_letters)
        if bad or t.count("...") > 1:
            raise ValueError(f"einsum(): invalid subscripts {t!r} in {equation!r}")
        if "..." in t:
            k = x.ndim - (len(t) - 3)
            if k < 0:
                raise ValueError(f"einsum(): term {t!r} has more subscripts than the operand's {x.ndim} dims")
            t = t.replace("...", ell[ell_nd - k:])
        if len(t) != x.ndim:
            raise ValueError(f"einsum(): term {t!r} has {len(t)} subscripts for an operand with {x.ndim} dims")
        if len(set(t)) != len(t):
            raise NotImplementedError(f"einsum(): repeated subscripts within one operand ({t!r}, a diagonal) are "
                                      "not supported by graphc; use torch.diagonal-free formulations")
        out_terms.append(t)
    if arrow:
        out = rhs
        if "..." in out:
            out = out.replace("...", ell)
        if set(out) - set("".join(out_terms)) or len(set(out)) != len(out):
            raise ValueError(f"einsum(): output subscripts {rhs!r} must each appear once in the inputs")
    else:  # implicit output: the ellipsis dims, then the letters that occur once, alphabetically
        counts: dict[str, int] = {}
        for t in out_terms:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        out = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    return out_terms, out


def _sum_out(x: Tensor, term: str, keep: set[str]) -> tuple[Tensor, str]:
    """Sum over the subscripts of x that nothing else needs."""
    drop = [i for i, c in enumerate(term) if c not in keep]
    if not drop:
        return x, term
    return x.sum(drop), "".join(c for c in term if c in keep)


def _contract(a: Tensor, ta: str, b: Tensor, tb: str, keep: set[str]) -> tuple[Tensor, str]:
    """a[ta] * b[tb] summed over the subscripts they share and keep does not: one matmul over
    [batch..., left, k] @ [batch..., k, right]."""
    batch = [c for c in ta if c in tb and c in keep]
    contr = [c for c in ta if c in tb and c not in keep]
    left = [c for c in ta if c not in tb]
    right = [c for c in tb if c not in ta]

    def size(x: Tensor, t: str, c: str) -> Dim:
        return x.shape[t.index(c)]

    ap = a.permute([ta.index(c) for c in batch + left + contr])
    bp = b.permute([tb.index(c) for c in batch + contr + right])
    bsh_a = [size(a, ta, c) for c in batch]
    bsh_b = [size(b, tb, c) for c in batch]
    lsh = [size(a, ta, c) for c in left]
    rsh = [size(b, tb, c) for c in right]
    k = prod([size(a, ta, c) for c in contr])
    am = ap.reshape(bsh_a + [prod(lsh), k])
    bm = bp.reshape(bsh_b + [k, prod(rsh)])
    y = am.matmul(bm)
    bsh = list(_broadcast_shapes("einsum", bsh_a, bsh_b))
    return y.reshape(bsh + lsh + rsh), "".join(batch + left + right)


def einsum(equation: str, *operands: Any) -> Tensor:
    """Einstein summation over one or more operands ("bhqd,bhkd->bhqk", "...ij,...jk->...ik", implicit
    outputs, broadcasting ellipsis dims). Pairs are contracted left to right as batched matmuls;
    a subscript repeated within one operand (a diagonal) is not supported."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not operands:
        raise ValueError("einsum(): must provide at least one operand")
    ops = [_t(x, "einsum", f"operands[{i}]") for i, x in enumerate(operands)]
    dt = ops[0].dtype
    for x in ops[1:]:
        dt = D.promote_types(dt, x.dtype)
    ops = [x.to(dt) for x in ops]
    terms, out = _einsum_parse(equation, ops)

    def needed(skip: Sequence[int]) -> set[str]:
        s = set(out)
        for i, t in enumerate(terms):
            if i not in skip:
                s |= set(t)
        return s

    x, tx = _sum_out(ops[0], terms[0], needed([0]))
    for i in range(1, len(ops)):
        y, ty = _sum_out(ops[i], terms[i], needed([i]) | set(tx))
        keep = needed(list(range(i + 1)))
        x, tx = _contract(x, tx, y, ty, keep)
    x, tx = _sum_out(x, tx, set(out))
    return x.permute([tx.index(c) for c in out]) if len(out) > 1 else x


# ------------------------------------------------------------------------------------------ meshgrid
def meshgrid(*tensors: Any, indexing: str | None = None) -> tuple[Tensor, ...]:
    """Coordinate grids from 1-d tensors: indexing 'ij' (PyTorch's default, matrix) or 'xy'
    (Cartesian: the first two grid dims swapped)."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    ind = "ij" if indexing is None else indexing
    if ind not in ("ij", "xy"):
        raise ValueError(f"meshgrid: indexing must be 'ij' or 'xy', got {indexing!r}")
    ts = [_t(t, "meshgrid", f"tensors[{i}]") for i, t in enumerate(tensors)]
    for i, t in enumerate(ts):
        if t.ndim > 1:
            raise RuntimeError(f"meshgrid: expects 0-d or 1-d tensors, tensor {i} is {t.ndim}-d")
    ts = [t.reshape(1) if t.ndim == 0 else t for t in ts]
    shape = [t.shape[0] for t in ts]
    pos = list(range(len(ts)))
    if ind == "xy" and len(ts) >= 2:
        pos[0], pos[1] = 1, 0
        shape[0], shape[1] = shape[1], shape[0]
    out = []
    for t, p in zip(ts, pos):
        view = [1] * len(ts)
        view[p] = t.shape[0]
        out.append(t.reshape(view).expand(*shape))
    return tuple(out)


# ------------------------------------------------------------------------------------------ finfo
class finfo:  # noqa: N801 - PyTorch's name
    """Machine limits of a floating-point dtype: bits, eps, max, min, tiny (= smallest_normal),
    resolution, dtype."""

    def __init__(self, type: Any = None):  # noqa: A002
        dt = D.get_default_dtype() if type is None else as_dtype(type)
        if not dt.is_floating_point:
            raise TypeError(f"finfo: {dt} is not a floating-point dtype (use graphc.iinfo)")
        import ml_dtypes

        fi = ml_dtypes.finfo(dt.np)
        self.bits = int(fi.bits)
        self.eps = float(fi.eps)
        self.max = float(fi.max)
        self.min = float(fi.min)
        self.tiny = self.smallest_normal = float(fi.smallest_normal)
        self.resolution = 10.0 ** -int(fi.precision)
        self.dtype = dt.name

    def __repr__(self) -> str:
        return (f"finfo(resolution={self.resolution:g}, min={self.min:g}, max={self.max:g}, eps={self.eps:g}, "
                f"smallest_normal={self.tiny:g}, tiny={self.tiny:g}, dtype={self.dtype})")


class iinfo:  # noqa: N801
    """Limits of an integer dtype: bits, min, max, dtype."""

    def __init__(self, type: Any):  # noqa: A002
        dt = as_dtype(type)
        if dt.is_floating_point or dt is D.bool_:
            raise TypeError(f"iinfo: {dt} is not an integer dtype (use graphc.finfo)")
        ii = np.iinfo(dt.np)
        self.bits, self.min, self.max, self.dtype = int(ii.bits), int(ii.min), int(ii.max), dt.name

    def __repr__(self) -> str:
        return f"iinfo(min={self.min}, max={self.max}, dtype={self.dtype})"


# ------------------------------------------------------------------------------------------ sampling
def multinomial(input: Tensor, num_samples: int, replacement: builtins.bool = False, *,  # noqa: A002
                generator: Any = None) -> Tensor:
    """Draw num_samples category indices per row of (unnormalised) probabilities; eager only (a random
    draw has no place in a compiled graph: sample from the compiled model's outputs instead)."""
    from .random import _gen

    x = _t(input, "multinomial")
    if x._tracer is not None:
        raise x._tracer.error(
            "multinomial draws random samples, which a compiled graph cannot contain; return the "
            "probabilities (or logits) from forward() and sample outside, e.g. with graphc.multinomial "
            "or numpy on the compiled model's output", x)
    p = x._data.astype(np.float64)
    if p.ndim not in (1, 2):
        raise RuntimeError(f"multinomial: prob_dist must be 1 or 2 dim, got {p.ndim}")
    rows = p.reshape(-1, p.shape[-1])
    if not np.all(np.isfinite(rows)) or (rows < 0).any():
        raise RuntimeError("multinomial: probability tensor contains either `inf`, `nan` or element < 0")
    n = int(num_samples)
    if n <= 0:
        raise RuntimeError(f"multinomial: cannot sample n_sample <= 0 samples, got {n}")
    rng = _gen(generator)
    out = np.empty((rows.shape[0], n), np.int64)
    for i, r in enumerate(rows):
        s = r.sum()
        if s <= 0:
            raise RuntimeError("multinomial: invalid multinomial distribution (sum of probabilities <= 0)")
        if not replacement and n > np.count_nonzero(r):
            raise RuntimeError("multinomial: cannot sample n_sample > prob_dist.size(-1) samples without "
                               "replacement (or more samples than non-zero categories)")
        out[i] = rng.choice(r.size, size=n, replace=builtins.bool(replacement), p=r / s)
    return Tensor._wrap(out.reshape(*p.shape[:-1], n), x._device)


# ------------------------------------------------------------------------------------------ tracing
def is_tracing() -> builtins.bool:
    """True while graphc.trace (or graphc.compile) runs a forward pass."""
    return builtins.bool(_ACTIVE)


# ------------------------------------------------------------------------------------------ methods
def _method_of(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def m(self: Tensor, *args: Any, **kwargs: Any) -> Any:
        return fn(self, *args, **kwargs)

    return m


def _flip_method(self: Tensor, *dims: Any) -> Tensor:
    return flip(self, dims[0] if len(dims) == 1 and not isinstance(dims[0], int) else dims)


def _gather_method(self: Tensor, dim: int, index: Tensor, *, sparse_grad: builtins.bool = False) -> Tensor:
    return gather(self, dim, index)


# Tensor methods added here (the Tensor class itself holds the core: arithmetic, shape, reductions)
METHODS: dict[str, Callable[..., Any]] = {
    "gather": _gather_method, "index_select": _method_of(index_select), "flip": _flip_method,
    "fliplr": _method_of(fliplr), "flipud": _method_of(flipud), "roll": _method_of(roll),
    "isnan": _method_of(isnan),
    "isinf": _method_of(isinf), "isposinf": _method_of(isposinf), "isneginf": _method_of(isneginf),
    "isfinite": _method_of(isfinite), "expm1": _method_of(expm1), "log1p": _method_of(log1p),
    "log2": _method_of(log2), "logsumexp": _method_of(logsumexp), "addmm": _method_of(addmm),
    "baddbmm": _method_of(baddbmm), "bmm": _method_of(bmm), "multinomial": _method_of(multinomial),
    "movedim": _method_of(movedim), "moveaxis": _method_of(movedim), "swapdims": Tensor.swapaxes,
    "cumsum": _method_of(cumsum), "cumprod": _method_of(cumprod), "sort": _method_of(sort),
    "argsort": _method_of(argsort), "msort": _method_of(msort), "topk": _method_of(topk),
}


def install() -> None:
    for name, fn in METHODS.items():
        setattr(Tensor, name, fn)


install()
