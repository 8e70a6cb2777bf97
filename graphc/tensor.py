"""graphc.Tensor: PyTorch's tensor API over numpy, with every operation routed through the op registry.

A Tensor is either *concrete* (it holds a numpy array; ``.numpy()`` shares it) or *symbolic* (it
stands for an IR Value while :func:`graphc.trace` runs a forward pass). Both kinds call
:func:`apply`, which checks the op's type rule and then either evaluates the op's numpy reference or
asks the active tracer to record a node. Eager results, traced graphs and compiled code therefore
share one definition of every op.

In-place methods (``add_``, ``x += y``, ``x[i] = v``, ``inplace=True``) are never written by hand: each
is its out-of-place method followed by :meth:`Tensor._write` (see graphc/functionalize.py for the
view/alias semantics, eager and traced). ``INPLACE_METHODS`` lists the ones defined explicitly, and any
other ``name_`` falls back to ``name`` + write in ``Tensor.__getattr__``: adding an out-of-place method
is enough for its in-place form to work eagerly and while tracing.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from . import _dtype as D
from ._device import as_device, device
from ._dtype import as_dtype, dtype, promote_types
from .errors import ShapeError, TraceError
from .functionalize import (
    VIEW_OPS,
    has_internal_overlap,
    is_contiguous,
    layout,
    numpy_view,
    register_view,
    write_array,
)
from .ops import get_op
from .ops.registry import TensorType
from .sym import Dim, Sym, exact_div, is_static, prod

# ------------------------------------------------------------------------------------------ tracing hook
# The tracer (graphc/trace.py) registers itself here while a trace runs; see Tracer.record.
_ACTIVE: list[Any] = []


def _active_tracer():
    return _ACTIVE[-1] if _ACTIVE else None


class Size(tuple):
    """torch.Size: a tuple of dims (ints, or Syms for dynamic dims while tracing)."""

    def __new__(cls, dims: Iterable[Dim] = ()):
        return super().__new__(cls, tuple(dims))

    def numel(self) -> Dim:
        return prod(self)

    def __getitem__(self, i):
        r = super().__getitem__(i)
        return Size(r) if isinstance(i, slice) else r

    def __add__(self, other):
        return Size(tuple(self) + tuple(other))

    def __repr__(self) -> str:
        return f"graphc.Size([{', '.join(str(d) for d in self)}])"


def _attrs_symbolic(attrs: dict[str, Any]) -> bool:
    for v in attrs.values():
        if isinstance(v, Sym) or (isinstance(v, tuple) and any(isinstance(x, Sym) for x in v)):
            return True
    return False


def apply(opname: str, *inputs: Tensor | None, **attrs: Any) -> Tensor:
    """Apply a registry op to tensors: evaluate it eagerly, or record it when tracing.

    The view ops (graphc.functionalize.VIEW_OPS) alias their input as in PyTorch: eagerly a numpy
    view, while tracing a recorded alias of the input's root (so in-place writes reach it)."""
    out = _apply_raw(opname, inputs, attrs)
    if opname in VIEW_OPS and (_ACTIVE or out._tracer is not None):
        register_view(inputs[0], out, opname, attrs)
    return out


def _apply_raw(opname: str, inputs: Sequence[Tensor | None], attrs: dict[str, Any]) -> Tensor:
    """apply() without recording the alias of a view op's result."""
    op = get_op(opname)
    ins = list(inputs)
    while ins and ins[-1] is None:
        ins.pop()
    tracer = None
    for t in ins:
        if t is not None and t._tracer is not None:
            tracer = t._tracer
            break
    try:
        bound = op.bind_attrs(attrs)
        if tracer is None and _attrs_symbolic(bound):
            tracer = _active_tracer()
            if tracer is None:
                raise TraceError(f"{opname}: a dynamic dim was used outside of graphc.trace")
        out_type = op.infer_type([None if t is None else t._type() for t in ins], bound)
    except ShapeError as e:
        if tracer is not None:
            raise tracer.wrap_error(e, opname) from None
        raise
    if tracer is not None:
        return tracer.record(op, ins, bound, out_type)
    arrays = [None if t is None else t._data for t in ins]
    if opname in VIEW_OPS:
        out = numpy_view(opname, arrays[0], bound)
    else:
        out = np.asarray(op.ref(*arrays, **bound))
        if any(a is not None and np.may_share_memory(out, a) for a in arrays):
            out = out.copy()  # only the view ops alias their input
    if out.dtype != out_type.dtype.np:
        out = out.astype(out_type.dtype.np)
    if out.shape != out_type.shape:  # the reference and the rule disagree: a bug in the op record
        raise AssertionError(f"op {opname}: reference gave shape {out.shape}, rule says {out_type.shape}")
    dev = next((t._device for t in ins if t is not None), device("cpu"))
    return Tensor._wrap(out, dev)


class _MaxResult(NamedTuple):
    values: Tensor
    indices: Tensor


def _is_tensor(x: Any) -> bool:
    return isinstance(x, Tensor)


def _torch_to_numpy(x: Any) -> np.ndarray | None:
    mod = type(x).__module__
    if mod.startswith("torch") and hasattr(x, "detach"):
        t = x.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            return t.view(__import__("torch").int16).numpy().view(D.bfloat16.np)
        return t.numpy()
    return None


def _to_array(data: Any, dt: dtype | None) -> np.ndarray:
    """Convert Python data / numpy / torch / Tensor into a new array with PyTorch's dtype inference."""
    if isinstance(data, Tensor):
        arr = data._concrete("graphc.tensor()")
        return arr.astype(dt.np) if dt is not None else arr.copy()
    tarr = _torch_to_numpy(data)
    if tarr is not None:
        return tarr.astype(dt.np) if dt is not None else tarr.copy()
    if isinstance(data, np.ndarray) or isinstance(data, np.generic):
        arr = np.array(data)
        if dt is None:
            D.from_numpy_dtype(arr.dtype)  # raises for unsupported numpy dtypes
            return arr
        return arr.astype(dt.np)
    if dt is None:
        dt = _infer_dtype(data)
    try:
        return np.array(_untensor(data), dtype=dt.np)
    except ValueError as e:
        raise ValueError(f"cannot build a tensor from {type(data).__name__}: {e}") from None


def _untensor(data: Any) -> Any:
    if isinstance(data, Tensor):
        return data._concrete("graphc.tensor()")
    if isinstance(data, (list, tuple)):
        return [_untensor(x) for x in data]
    return data


def _infer_dtype(data: Any) -> dtype:
    kinds: set[str] = set()

    def walk(x: Any) -> None:
        if isinstance(x, (list, tuple)):
            for y in x:
                walk(y)
        elif isinstance(x, Tensor):
            kinds.add(x.dtype.name)
        elif isinstance(x, (bool, np.bool_)):
            kinds.add("bool")
        elif isinstance(x, (int, np.integer)):
            kinds.add("int")
        elif isinstance(x, (float, np.floating)):
            kinds.add("float")
        else:
            raise TypeError(f"cannot build a tensor from an element of type {type(x).__name__}")

    walk(data)
    if "float" in kinds or any(k.startswith(("float", "bfloat")) for k in kinds):
        return D.get_default_dtype()
    if "int" in kinds or any(k.startswith(("int", "uint")) for k in kinds):
        return D.int64
    if kinds == {"bool"}:
        return D.bool_
    return D.get_default_dtype()


_TYPE_NAMES = {
    D.float32: "FloatTensor", D.float64: "DoubleTensor", D.float16: "HalfTensor", D.bfloat16: "BFloat16Tensor",
    D.int8: "CharTensor", D.int16: "ShortTensor", D.int32: "IntTensor", D.int64: "LongTensor",
    D.uint8: "ByteTensor", D.bool_: "BoolTensor",
}


def _scalar_dtype(t: Tensor, s: Any) -> dtype:
    return D.result_type_with_scalar(t.dtype, s)


def _result_dtype(a: Tensor, b: Tensor) -> dtype:
    """PyTorch: a 0-d tensor only lifts the category of a dimensioned one."""
    if a.ndim == 0 and b.ndim > 0 and a.dtype.is_floating_point == b.dtype.is_floating_point \
            and (a.dtype is D.bool_) == (b.dtype is D.bool_):
        return b.dtype
    if b.ndim == 0 and a.ndim > 0 and a.dtype.is_floating_point == b.dtype.is_floating_point \
            and (a.dtype is D.bool_) == (b.dtype is D.bool_):
        return a.dtype
    return promote_types(a.dtype, b.dtype)


def _is_scalar(x: Any) -> bool:
    return isinstance(x, (int, float, bool, np.integer, np.floating, np.bool_))


def _const(value: Any, dt: dtype, like: Tensor) -> Tensor:
    """A 0-d tensor for a Python scalar operand (a `constant` node when tracing)."""
    value = builtins.float(value) if dt.is_floating_point else builtins.bool(value) if dt is D.bool_ \
        else builtins.int(value)
    if like._tracer is not None:
        return like._tracer.constant(value, dt)
    return Tensor._wrap(np.asarray(value).astype(dt.np), like._device)


def _dim_value(d: Dim, like: Tensor | None = None) -> Tensor:
    """A dynamic size as a 0-d int64 graph value: the dim read at run time (x * x.shape[0]).

    A symbol's value is the last element of arange(0, S + 1); a polynomial is built from its symbols
    with tensor arithmetic, so no op ever holds more than one dim's elements."""
    if not isinstance(d, Sym):
        return _const(d, D.int64, like) if like is not None else tensor(d, dtype=D.int64)
    total: Tensor | None = None
    const = 0
    for mono, coef in d.terms:
        if not mono:
            const = coef
            continue
        term: Tensor | None = None
        for name in mono:
            s = Sym.var(name)
            v = apply("reshape", apply("slice", arange(s + 1), dim=0, start=s, end=s + 1, step=1), shape=())
            term = v if term is None else term * v
        term = term if coef == 1 else term * coef
        total = term if total is None else total + term
    return total if const == 0 else total + const


def _pair(a: Any, b: Any, *, floating: bool = False) -> tuple[Tensor, Tensor]:
    """Bring two operands (tensor or scalar) to one dtype, as PyTorch's type promotion does."""
    if isinstance(a, Sym) and _is_tensor(b):
        a = _dim_value(a, b)  # a 0-d int: the tensor's dtype wins within its category, as for a scalar
    if isinstance(b, Sym) and _is_tensor(a):
        b = _dim_value(b, a)
    if not _is_tensor(a) and not _is_tensor(b):
        raise TypeError("at least one operand must be a Tensor")
    if not _is_tensor(a):
        if not _is_scalar(a):
            raise TypeError(f"unsupported operand type {type(a).__name__}")
        dt = _scalar_dtype(b, a)
        if floating and not dt.is_floating_point:
            dt = D.get_default_dtype()
        return _const(a, dt, b), b.to(dt)
    if not _is_tensor(b):
        if not _is_scalar(b):
            raise TypeError(f"unsupported operand type {type(b).__name__}")
        dt = _scalar_dtype(a, b)
        if floating and not dt.is_floating_point:
            dt = D.get_default_dtype()
        return a.to(dt), _const(b, dt, a)
    dt = _result_dtype(a, b)
    if floating and not dt.is_floating_point:
        dt = D.get_default_dtype()
    return a.to(dt), b.to(dt)


def _binop(name: str, a: Any, b: Any, *, floating: bool = False) -> Tensor:
    x, y = _pair(a, b, floating=floating)
    return apply(name, x, y)


def _cmp(name: str, a: Any, b: Any) -> Tensor:
    x, y = _pair(a, b)
    return apply(name, x, y)


def _norm_dims(dim: Any, ndim: int, op: str) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, int):
        dim = (dim,)
    out = []
    for d in dim:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"{op}: dim {d} out of range for a {ndim}-d tensor")
        out.append(d % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: dim {list(dim)} appears more than once")
    return tuple(sorted(out))


def _wrap_dim(d: int, ndim: int, op: str = "dim") -> int:
    n = max(ndim, 1)
    if not -n <= d < n:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {d})")
    return d % n


def _size_args(size: tuple) -> tuple:
    if len(size) == 1 and isinstance(size[0], (list, tuple)):
        return tuple(size[0])
    return tuple(size)


class Tensor:
    """A tensor: PyTorch's API, numpy storage (or an IR value while tracing)."""

    __slots__ = ("_data", "_value", "_tracer", "_device", "requires_grad", "grad", "_view", "_strides",
                 "_aliases", "__dict__", "__weakref__")
    __array_priority__ = 1000  # numpy defers to our operators

    def __init__(self, *args: Any, dtype: Any = None, device: Any = None):
        # legacy constructor: Tensor(2, 3) uninitialised (zeros here), Tensor([1, 2]) float data
        dt = as_dtype(dtype) if dtype is not None else D.get_default_dtype()
        if len(args) == 1 and not isinstance(args[0], (int, np.integer)):
            data = _to_array(args[0], dt)
        elif all(isinstance(a, (int, np.integer)) for a in args):
            data = np.zeros(tuple(int(a) for a in args) if args else (0,), dtype=dt.np)
        else:
            raise TypeError(f"Tensor(): cannot interpret arguments {args!r}")
        self._init(data, as_device(device))

    def _init(self, data: np.ndarray | None, dev: device, value: Any = None, tracer: Any = None,
              requires_grad: bool = False) -> None:
        self._data = data
        self._value = value
        self._tracer = tracer
        self._device = dev
        self.requires_grad = requires_grad
        self.grad = None
        self._view = None  # while tracing: (root, chain of view ops) when this tensor is a view
        self._strides = None  # while tracing: the view's strides (graphc.functionalize)
        self._aliases = None  # while tracing: a root's live views

    @classmethod
    def _wrap(cls, data: np.ndarray, dev: device | None = None, requires_grad: bool = False) -> Tensor:
        t = object.__new__(cls)
        t._init(data, dev or device("cpu"), requires_grad=requires_grad)
        return t

    @classmethod
    def _symbolic(cls, value: Any, tracer: Any) -> Tensor:
        t = object.__new__(cls)
        t._init(None, device("cpu"), value=value, tracer=tracer)
        return t

    def _type(self) -> TensorType:
        if self._value is not None:
            return self._value.type
        return TensorType(tuple(self._data.shape), D.from_numpy_dtype(self._data.dtype))

    def _concrete(self, what: str) -> np.ndarray:
        if self._tracer is not None:
            raise self._tracer.data_dependent(what, self)
        return self._data

    # metadata ---------------------------------------------------------------------------------------
    @property
    def shape(self) -> Size:
        return Size(self._type().shape)

    def size(self, dim: int | None = None):
        s = self.shape
        return s if dim is None else s[_wrap_dim(dim, len(s))]

    @property
    def dtype(self) -> dtype:
        return self._type().dtype

    @property
    def device(self) -> device:
        return self._device

    @property
    def is_cuda(self) -> bool:
        return self._device.type == "cuda"

    @property
    def ndim(self) -> int:
        return len(self._type().shape)

    def dim(self) -> int:
        return self.ndim

    ndimension = dim

    def numel(self) -> Dim:
        return prod(self.shape)

    nelement = numel

    def element_size(self) -> int:
        return self.dtype.itemsize

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def is_contiguous(self, memory_format: Any = None) -> bool:
        if self._tracer is None:
            return bool(self._data.flags.c_contiguous)
        return is_contiguous(tuple(self.shape), layout(self))

    def type(self, dtype: Any = None):  # noqa: A003
        if dtype is None:
            return "graphc." + _TYPE_NAMES[self.dtype]
        if isinstance(dtype, str) and dtype.startswith(("graphc.", "torch.")) and dtype.endswith("Tensor"):
            name = dtype.split(".", 1)[1]
            for k, v in _TYPE_NAMES.items():
                if v == name:
                    return self.to(k)
            raise ValueError(f"unknown tensor type {dtype!r}")
        return self.to(dtype)

    @property
    def data(self) -> Tensor:
        if self._tracer is not None:
            return self
        return Tensor._wrap(self._data, self._device)

    @data.setter
    def data(self, other: Tensor) -> None:
        if not isinstance(other, Tensor):
            raise TypeError(f"data must be a Tensor, got {type(other).__name__}")
        self._data = other._concrete("Tensor.data =")
        self._device = other._device

    def numpy(self, *, force: bool = False) -> np.ndarray:
        """The underlying array (shared, as in PyTorch)."""
        return self._concrete(".numpy()")

    def __array__(self, dtype=None, copy=None):
        arr = self._concrete("numpy conversion (np.asarray)")
        return arr if dtype is None else arr.astype(dtype)

    def data_ptr(self) -> int:
        return int(self._concrete(".data_ptr()").__array_interface__["data"][0])

    def tolist(self) -> Any:
        return self._concrete(".tolist()").tolist()

    def item(self) -> Any:
        arr = self._concrete(".item()")
        if arr.size != 1:
            raise RuntimeError(f"a Tensor with {arr.size} elements cannot be converted to Scalar")
        return arr.reshape(()).item()

    def __bool__(self) -> bool:
        arr = self._concrete("bool() (an `if` or `while` on a tensor value)")
        if arr.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with {arr.size} elements is ambiguous")
        return bool(arr.reshape(()))

    def __float__(self) -> float:
        return float(self._concrete("float()").reshape(()))

    def __int__(self) -> int:
        return int(self._concrete("int()").reshape(()))

    def __index__(self) -> int:
        arr = self._concrete("use as an index")
        if arr.dtype.kind not in "iu" or arr.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(arr.reshape(()))

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        n = self.shape[0]
        if not is_static(n):
            msg = f"len() of a tensor whose first dim is the dynamic size {n}"
            raise self._tracer.error(msg, self) if self._tracer is not None else TraceError(msg)
        return n

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return iter(self.unbind(0))

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        if self._tracer is not None:
            return f"Tensor({self._value.ref} : {self._value.type})"
        return _format(self)

    def __format__(self, spec: str) -> str:
        if self._tracer is None and self._data.ndim == 0:
            return format(self._data.item(), spec)
        return repr(self) if not spec else format(repr(self), spec)

    def __deepcopy__(self, memo):
        t = type(self)._wrap(self._concrete("deepcopy").copy(), self._device, self.requires_grad)
        t.__dict__.update(self.__dict__)
        memo[id(self)] = t
        return t

    def __reduce_ex__(self, proto):
        raise TypeError("graphc tensors do not pickle (graphc never unpickles); use graphc.save (safetensors)")

    # conversion -------------------------------------------------------------------------------------
    def to(self, *args: Any, **kwargs: Any) -> Tensor:
        dt = kwargs.pop("dtype", None)
        dev = kwargs.pop("device", None)
        kwargs.pop("non_blocking", None)
        copy = kwargs.pop("copy", False)
        if kwargs:
            raise TypeError(f"to() got unexpected arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, Tensor):
                dt, dev = a.dtype, a.device
            elif isinstance(a, (device,)) or (isinstance(a, str) and a.split(":")[0] in ("cpu", "cuda", "meta")):
                dev = a
            else:
                dt = a
        out = self
        if dt is not None:
            dt = as_dtype(dt)
            if dt is not self.dtype:
                out = apply("cast", self, dtype=dt)
        if dev is not None:
            dev = as_device(dev)
            if dev != out._device:
                if out is self:
                    out = Tensor._wrap(self._data, dev) if self._tracer is None else self
                out._device = dev
        if copy and out is self:
            out = self.clone()
        return out

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self, index: int | None = None) -> Tensor:
        return self.to(device("cuda", index))

    def float(self) -> Tensor:  # noqa: A003
        return self.to(D.float32)

    def double(self) -> Tensor:
        return self.to(D.float64)

    def half(self) -> Tensor:
        return self.to(D.float16)

    def bfloat16(self) -> Tensor:
        return self.to(D.bfloat16)

    def long(self) -> Tensor:
        return self.to(D.int64)

    def int(self) -> Tensor:  # noqa: A003
        return self.to(D.int32)

    def short(self) -> Tensor:
        return self.to(D.int16)

    def char(self) -> Tensor:
        return self.to(D.int8)

    def byte(self) -> Tensor:
        return self.to(D.uint8)

    def bool(self) -> Tensor:  # noqa: A003
        return self.to(D.bool_)

    def type_as(self, other: Tensor) -> Tensor:
        return self.to(other.dtype)

    def contiguous(self, memory_format: Any = None) -> Tensor:
        """self when contiguous, else a contiguous copy (which no longer aliases self)."""
        return self if self.is_contiguous() else self.clone()

    def clone(self, memory_format: Any = None) -> Tensor:
        if self._tracer is not None:
            # values are immutable in the graph: a copy is a new tensor object for the same value,
            # which later in-place writes to self (or to the copy) do not reach
            return Tensor._symbolic(self._value, self._tracer)
        return Tensor._wrap(self._data.copy(), self._device)

    def detach(self) -> Tensor:
        if self._tracer is not None:
            return self
        return Tensor._wrap(self._data, self._device)

    def detach_(self) -> Tensor:
        self.requires_grad = False
        return self

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        self.requires_grad = requires_grad
        return self

    def cast_like(self, other: Tensor) -> Tensor:
        return self.to(other.dtype)

    # in-place ----------------------------------------------------------------------------------------
    # Every in-place method is its out-of-place form followed by _write (graphc/functionalize.py):
    # eagerly a write into the tensor's (possibly shared) numpy memory, while tracing a functional
    # write-back that rebinds the tensor and all its aliases. A method `name_` that is not defined here
    # falls back to `name` + _write in __getattr__, so new out-of-place methods get their in-place form.
    def _inplace(self, what: str) -> np.ndarray:
        """The array an eager-only in-place initialiser (uniform_, nn.init) writes into."""
        if self._tracer is not None:
            raise self._tracer.error(
                f"in-place '{what}' on a traced tensor is not supported; write the out-of-place form "
                "(e.g. x = x + y)", self)
        return self._data

    def _write(self, value: Any, what: str, *, any_cast: bool = False) -> Tensor:
        """Write value (a tensor or scalar broadcastable to self) into self, as PyTorch's in-place ops
        do; any_cast allows every dtype conversion (copy_, fill_), else PyTorch's casting rule."""
        if not isinstance(value, Tensor):
            if isinstance(value, np.ndarray) or isinstance(value, (list, tuple)):
                value = tensor(value, dtype=self.dtype)
            else:
                value = _const(value, self.dtype if any_cast else _scalar_dtype(self, value), self)
        if not any_cast and not _can_cast(value.dtype, self.dtype):
            raise _write_error(f"{what}: result type {_TYPE_NAMES[value.dtype][:-6]} can't be cast to the "
                               f"desired output type {_TYPE_NAMES[self.dtype][:-6]}", self, value)
        value = value.to(self.dtype)
        if tuple(value.shape) != tuple(self.shape):
            vs, ts = tuple(value.shape), tuple(self.shape)
            if len(vs) > len(ts) or any(a != 1 and a != b for a, b in zip(vs[::-1], ts[::-1])):
                raise _write_error(f"{what}: output with shape {list(ts)} doesn't match the broadcast shape "
                                   f"{list(vs)}", self, value)
            value = _apply_raw("expand", (value,), {"shape": ts}) if vs else _apply_raw(
                "expand", (_apply_raw("reshape", (value,), {"shape": (1,) * len(ts)}),), {"shape": ts})
        tracer = self._tracer or value._tracer or _active_tracer()
        if tracer is None:
            write_array(self._data, value._data)
        else:
            from .functionalize import write

            write(tracer, self, value, what)
        return self

    def __getattr__(self, name: str) -> Any:
        if name.endswith("_") and not name.startswith("_"):
            if name[:-1] in _RELAYOUT_INPLACE:
                return _relayout_refusal(self, name)
            fn = getattr(type(self), name[:-1], None)
            if callable(fn) and name[:-1] not in _VIEW_METHODS:
                return _inplace_method(name[:-1]).__get__(self)
        raise AttributeError(f"'Tensor' object has no attribute '{name}'")

    def copy_(self, src: Any, non_blocking: bool = False) -> Tensor:
        return self._write(src, "copy_", any_cast=True)

    def fill_(self, value: Any) -> Tensor:
        if isinstance(value, Sym):  # a dynamic size while tracing: its run-time value
            value = _dim_value(value, self)
        if isinstance(value, Tensor) and value.ndim != 0:
            raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor with "
                               f"{value.ndim} dimensions")
        return self._write(value, "fill_", any_cast=True)

    def zero_(self) -> Tensor:
        return self.fill_(0)

    def uniform_(self, a: float = 0.0, b: float = 1.0, generator: Any = None) -> Tensor:
        from .random import _gen

        dst = self._inplace("uniform_")
        dst[...] = _gen(generator).uniform(a, b, size=dst.shape).astype(dst.dtype)
        return self

    def normal_(self, mean: float = 0.0, std: float = 1.0, generator: Any = None) -> Tensor:
        from .random import _gen

        dst = self._inplace("normal_")
        dst[...] = _gen(generator).normal(mean, std, size=dst.shape).astype(dst.dtype)
        return self

    def masked_fill_(self, mask: Tensor, value: Any) -> Tensor:
        return self._write(self.masked_fill(mask, value), "masked_fill_", any_cast=True)

    def __setitem__(self, idx: Any, value: Any) -> None:
        traced = self._tracer is not None or (isinstance(value, Tensor) and value._tracer is not None)
        if not traced and not _ACTIVE:
            dst = self._data
            val = value._concrete("__setitem__") if isinstance(value, Tensor) else value
            if not dst.flags.writeable or has_internal_overlap(dst.shape, dst.strides):
                write_array(dst, dst)  # raises the matching error
            dst[_np_index(idx)] = val
            return
        items = idx if isinstance(idx, tuple) else (idx,)
        if len(items) == 1 and isinstance(items[0], Tensor) and items[0].dtype is D.bool_:
            mask = items[0]
            if mask.ndim > self.ndim:
                raise IndexError(f"too many indices for tensor of dimension {self.ndim}")
            mask = mask.reshape(list(mask.shape) + [1] * (self.ndim - mask.ndim))
            if isinstance(value, Tensor) and value.ndim != 0 and value.numel() != 1:
                raise _trace_error("x[mask] = tensor needs the number of True elements of the mask, which "
                                   "is data-dependent; use graphc.where(mask, value, x)", self, value)
            v = value.reshape(()) if isinstance(value, Tensor) else value
            self._write(self.masked_fill(mask, v), "x[mask] = v", any_cast=True)
            return
        for i in items:
            if isinstance(i, (list, np.ndarray)) or (isinstance(i, Tensor) and (i.ndim != 0 or i._tracer is not None)):
                raise _trace_error("x[index_tensor] = v (index_put) is not supported while tracing; use "
                                   "graphc.where or a one-hot mask", self, value)
        _getitem(self, idx)._write(value, "x[...] = v", any_cast=True)

    # arithmetic ------------------------------------------------------------------------------------
    def __add__(self, o: Any) -> Tensor:
        return _binop("add", self, o)

    def __radd__(self, o: Any) -> Tensor:
        return _binop("add", o, self)

    def __sub__(self, o: Any) -> Tensor:
        return _binop("sub", self, o)

    def __rsub__(self, o: Any) -> Tensor:
        return _binop("sub", o, self)

    def __mul__(self, o: Any) -> Tensor:
        return _binop("mul", self, o)

    def __rmul__(self, o: Any) -> Tensor:
        return _binop("mul", o, self)

    def __truediv__(self, o: Any) -> Tensor:
        return _binop("div", self, o, floating=True)

    def __rtruediv__(self, o: Any) -> Tensor:
        return _binop("div", o, self, floating=True)

    def __floordiv__(self, o: Any) -> Tensor:
        x, y = _pair(self, o)
        if x.dtype.is_floating_point:
            return apply("floor", apply("div", x, y))
        q = apply("floor", apply("div", x.to(D.float64), y.to(D.float64)))
        return q.to(x.dtype)

    def __mod__(self, o: Any) -> Tensor:
        return _binop("remainder", self, o)

    def __rmod__(self, o: Any) -> Tensor:
        return _binop("remainder", o, self)

    def __pow__(self, o: Any) -> Tensor:
        if _is_scalar(o) and not isinstance(o, bool):
            if o == 2:
                return self * self
            if o == 1:
                return self.clone()
            if o == 0.5 and self.dtype.is_floating_point:
                return self.sqrt()
            if o == -1 and self.dtype.is_floating_point:
                return self.reciprocal()
        return _binop("pow", self, o, floating=True)

    def __rpow__(self, o: Any) -> Tensor:
        return _binop("pow", o, self, floating=True)

    def __matmul__(self, o: Tensor) -> Tensor:
        return self.matmul(o)

    def __rmatmul__(self, o: Tensor) -> Tensor:
        return Tensor.matmul(_as_tensor_like(o, self), self)

    def __neg__(self) -> Tensor:
        return apply("neg", self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return apply("abs", self)

    def __invert__(self) -> Tensor:
        if self.dtype is not D.bool_:
            raise TypeError("~ is only supported on bool tensors in graphc")
        return apply("logical_not", self)

    def __and__(self, o: Any) -> Tensor:
        return self.logical_and(o)

    def __or__(self, o: Any) -> Tensor:
        return self.logical_or(o)

    def __xor__(self, o: Any) -> Tensor:
        return self.logical_xor(o)

    def __eq__(self, o: Any) -> Tensor:  # type: ignore[override]
        return _cmp("eq", self, o)

    def __ne__(self, o: Any) -> Tensor:  # type: ignore[override]
        return _cmp("ne", self, o)

    def __lt__(self, o: Any) -> Tensor:
        return _cmp("lt", self, o)

    def __le__(self, o: Any) -> Tensor:
        return _cmp("le", self, o)

    def __gt__(self, o: Any) -> Tensor:
        return _cmp("gt", self, o)

    def __ge__(self, o: Any) -> Tensor:
        return _cmp("ge", self, o)

    eq = __eq__
    ne = __ne__
    lt = __lt__
    le = __le__
    gt = __gt__
    ge = __ge__

    def add(self, o: Any, alpha: Any = 1) -> Tensor:
        return self + (o if alpha == 1 else o * alpha)

    def sub(self, o: Any, alpha: Any = 1) -> Tensor:
        return self - (o if alpha == 1 else o * alpha)

    def mul(self, o: Any) -> Tensor:
        return self * o

    def div(self, o: Any, rounding_mode: str | None = None) -> Tensor:
        if rounding_mode is None:
            return self / o
        if rounding_mode == "floor":
            return self // o
        if rounding_mode == "trunc":
            q = _binop("div", self, o, floating=True)
            q = apply("where", apply("lt", q, _const(0, q.dtype, q)), apply("ceil", q), apply("floor", q))
            return q if self.dtype.is_floating_point else q.to(self.dtype)
        raise ValueError(f"div: rounding_mode must be None, 'trunc' or 'floor', got {rounding_mode!r}")

    true_divide = __truediv__
    multiply = mul
    subtract = sub
    divide = div

    def pow(self, o: Any) -> Tensor:  # noqa: A003
        return self ** o

    def remainder(self, o: Any) -> Tensor:
        return self % o

    def maximum(self, o: Tensor) -> Tensor:
        return _binop("maximum", self, o)

    def minimum(self, o: Tensor) -> Tensor:
        return _binop("minimum", self, o)

    def logical_and(self, o: Any) -> Tensor:
        return apply("logical_and", self.to(D.bool_), _as_tensor_like(o, self).to(D.bool_))

    def logical_or(self, o: Any) -> Tensor:
        return apply("logical_or", self.to(D.bool_), _as_tensor_like(o, self).to(D.bool_))

    def logical_xor(self, o: Any) -> Tensor:
        return apply("logical_xor", self.to(D.bool_), _as_tensor_like(o, self).to(D.bool_))

    def logical_not(self) -> Tensor:
        return apply("logical_not", self.to(D.bool_))

    # unary math --------------------------------------------------------------------------------
    def _float_unary(self, name: str, **attrs: Any) -> Tensor:
        x = self if self.dtype.is_floating_point else self.to(D.get_default_dtype())
        return apply(name, x, **attrs)

    def exp(self) -> Tensor:
        return self._float_unary("exp")

    def log(self) -> Tensor:
        return self._float_unary("log")

    def sqrt(self) -> Tensor:
        return self._float_unary("sqrt")

    def rsqrt(self) -> Tensor:
        return self._float_unary("rsqrt")

    def reciprocal(self) -> Tensor:
        return self._float_unary("reciprocal")

    def sin(self) -> Tensor:
        return self._float_unary("sin")

    def cos(self) -> Tensor:
        return self._float_unary("cos")

    def tanh(self) -> Tensor:
        return self._float_unary("tanh")

    def erf(self) -> Tensor:
        return self._float_unary("erf")

    def sigmoid(self) -> Tensor:
        return self._float_unary("sigmoid")

    def floor(self) -> Tensor:
        return self.clone() if not self.dtype.is_floating_point else apply("floor", self)

    def ceil(self) -> Tensor:
        return self.clone() if not self.dtype.is_floating_point else apply("ceil", self)

    def round(self) -> Tensor:  # noqa: A003
        return self.clone() if not self.dtype.is_floating_point else apply("round", self)

    def relu(self) -> Tensor:
        return apply("relu", self)

    def abs(self) -> Tensor:  # noqa: A003
        return apply("abs", self)

    def neg(self) -> Tensor:
        return apply("neg", self)

    negative = neg

    def sign(self) -> Tensor:
        return apply("sign", self)

    def square(self) -> Tensor:
        return self * self

    def clamp(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
        if isinstance(min, Tensor) or isinstance(max, Tensor):
            out = self
            if min is not None:
                out = out.maximum(min)
            if max is not None:
                out = out.minimum(max)
            return out
        x = self
        if (isinstance(min, float) or isinstance(max, float)) and not x.dtype.is_floating_point:
            x = x.to(D.get_default_dtype())
        return apply("clamp", x, min=min, max=max)

    clip = clamp

    def clamp_min(self, v: Any) -> Tensor:
        return self.clamp(min=v)

    def clamp_max(self, v: Any) -> Tensor:
        return self.clamp(max=v)

    def where(self, condition: Tensor, other: Any) -> Tensor:
        return where(condition, self, other)

    def masked_fill(self, mask: Tensor, value: Any) -> Tensor:
        if isinstance(value, Sym):  # a dynamic size while tracing: its run-time value
            value = _dim_value(value, self)
        v = value.item() if isinstance(value, Tensor) and value._tracer is None else value
        return where(mask, v, self) if _is_scalar(v) else where(mask, v.to(self.dtype), self)

    # shape ---------------------------------------------------------------------------------------
    def reshape(self, *shape: Any) -> Tensor:
        target = _resolve_shape(self.shape, _size_args(shape))
        if tuple(target) == tuple(self.shape):
            return self
        return apply("reshape", self, shape=target)

    view = reshape

    def view_as(self, other: Tensor) -> Tensor:
        return self.reshape(other.shape)

    reshape_as = view_as

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        if self.ndim == 0:
            return self.reshape(1)
        s = _wrap_dim(start_dim, self.ndim)
        e = _wrap_dim(end_dim, self.ndim)
        if s > e:
            raise ValueError("flatten() has invalid args: start_dim cannot come after end_dim")
        shape = list(self.shape)
        return self.reshape(shape[:s] + [prod(shape[s:e + 1])] + shape[e + 1:])

    def unflatten(self, dim: int, sizes: Sequence[int]) -> Tensor:
        d = _wrap_dim(dim, self.ndim)
        shape = list(self.shape)
        inner = _resolve_shape(Size([shape[d]]), tuple(sizes))
        return self.reshape(shape[:d] + list(inner) + shape[d + 1:])

    def squeeze(self, dim: Any = None) -> Tensor:
        if dim is None:
            dims = [i for i, s in enumerate(self.shape) if s == 1]
        else:
            dims = _norm_dims(dim, self.ndim, "squeeze")
            for d in dims:
                s = self.shape[d]
                b = s.bounds() if isinstance(s, Sym) else None
                if b is not None and b[0] <= 1 <= b[1] and b[0] != b[1]:
                    raise TraceError(
                        f"squeeze({dim}) of the dynamic size {s} ({s} in {b[0]}..{b[1]}): PyTorch removes the dim "
                        f"only when {s} is 1 at run time, which one traced graph cannot follow; give {s} a minimum "
                        f"of 2 (the dim is then kept), or make it static")
            dims = [d for d in dims if self.shape[d] == 1]
        return self.reshape([s for i, s in enumerate(self.shape) if i not in dims])

    def unsqueeze(self, dim: int) -> Tensor:
        d = _wrap_dim(dim, self.ndim + 1)
        shape = list(self.shape)
        shape.insert(d, 1)
        return self.reshape(shape)

    def permute(self, *dims: Any) -> Tensor:
        dims = _size_args(dims)
        if len(dims) != self.ndim:
            raise RuntimeError(f"permute: number of dims don't match: got {len(dims)} for a {self.ndim}-d tensor")
        nd = tuple(_wrap_dim(d, self.ndim) for d in dims)
        if nd == tuple(range(self.ndim)):
            return self
        return apply("permute", self, dims=nd)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        d0, d1 = _wrap_dim(dim0, self.ndim), _wrap_dim(dim1, self.ndim)
        perm = list(range(self.ndim))
        perm[d0], perm[d1] = perm[d1], perm[d0]
        return self.permute(perm)

    swapaxes = transpose

    def t(self) -> Tensor:
        if self.ndim > 2:
            raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {self.ndim}D")
        return self if self.ndim < 2 else self.transpose(0, 1)

    @property
    def T(self) -> Tensor:  # noqa: N802
        return self.permute(list(range(self.ndim))[::-1]) if self.ndim > 1 else self

    @property
    def mT(self) -> Tensor:  # noqa: N802
        return self.transpose(-2, -1)

    def expand(self, *sizes: Any) -> Tensor:
        sizes = _size_args(sizes)
        off = len(sizes) - self.ndim
        if off < 0:
            raise RuntimeError(f"expand: the number of sizes provided ({len(sizes)}) must be greater or "
                               f"equal to the number of dimensions in the tensor ({self.ndim})")
        shape = [self.shape[i - off] if (s == -1 and i >= off) else s for i, s in enumerate(sizes)]
        if tuple(shape) == tuple(self.shape):
            return self
        return apply("expand", self, shape=shape)

    def expand_as(self, other: Tensor) -> Tensor:
        return self.expand(other.shape)

    def broadcast_to(self, shape: Sequence[Dim]) -> Tensor:
        return self.expand(*shape)

    def repeat(self, *sizes: Any) -> Tensor:
        sizes = _size_args(sizes)
        if len(sizes) < self.ndim:
            raise RuntimeError("repeat: number of repeat dims can not be smaller than number of tensor dims")
        x = self.reshape([1] * (len(sizes) - self.ndim) + list(self.shape))
        # interleave a unit dim before each axis, expand it to the repeat count, then merge
        inter, target, final = [], [], []
        for r, s in zip(sizes, x.shape):
            inter += [1, s]
            target += [r, s]
            final.append(r * s)
        return x.reshape(inter).expand(target).reshape(final)

    def narrow(self, dim: int, start: int, length: int) -> Tensor:
        d = _wrap_dim(dim, self.ndim)
        idx = [slice(None)] * d + [slice(start, start + length)]
        return self[tuple(idx)]

    def unbind(self, dim: int = 0) -> tuple[Tensor, ...]:
        d = _wrap_dim(dim, self.ndim)
        n = self.shape[d]
        if not is_static(n):
            raise TraceError(f"unbind along the dynamic dim {n} is not possible in a static graph")
        return tuple(self.select(d, i) for i in range(n))

    def select(self, dim: int, index: int) -> Tensor:
        d = _wrap_dim(dim, self.ndim)
        return self[(slice(None),) * d + (index,)]

    def split(self, split_size: Any, dim: int = 0) -> tuple[Tensor, ...]:
        d = _wrap_dim(dim, self.ndim)
        n = self.shape[d]
        if isinstance(split_size, int):
            if not is_static(n):
                raise TraceError(f"split of the dynamic dim {n} into chunks of {split_size}")
            sizes = [min(split_size, n - i) for i in range(0, n, split_size)] or [0]
        else:
            sizes = list(split_size)
            if is_static(n) and sum(sizes) != n:
                raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {n}, got {sizes}")
        out, start = [], 0
        for s in sizes:
            out.append(self.narrow(d, start, s))
            start += s
        return tuple(out)

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        d = _wrap_dim(dim, self.ndim)
        n = self.shape[d]
        if not is_static(n):
            q = exact_div(n, chunks)
            if q is None:
                raise TraceError(f"chunk of the dynamic dim {n} into {chunks} parts is not exact")
            return self.split([q] * chunks, d)
        return self.split(-(-n // chunks) if n else 1, d)

    def tril(self, diagonal: int = 0) -> Tensor:
        return _tri(self, diagonal, lower=True)

    def triu(self, diagonal: int = 0) -> Tensor:
        return _tri(self, diagonal, lower=False)

    def __getitem__(self, idx: Any) -> Tensor:
        return _getitem(self, idx)

    # reductions ----------------------------------------------------------------------------------
    def _reduce(self, name: str, dim: Any, keepdim: bool, dtype: Any = None) -> Tensor:
        x = self if dtype is None else self.to(dtype)
        dims = _norm_dims(dim, x.ndim, name)
        if x.ndim == 0:
            return apply(name, x.reshape(1), dims=(0,), keepdim=False)
        return apply(name, x, dims=dims, keepdim=keepdim)

    def sum(self, dim: Any = None, keepdim: bool = False, dtype: Any = None) -> Tensor:  # noqa: A003
        return self._reduce("sum", dim, keepdim, dtype)

    def prod(self, dim: Any = None, keepdim: bool = False, dtype: Any = None) -> Tensor:
        return self._reduce("prod", dim, keepdim, dtype)

    def mean(self, dim: Any = None, keepdim: bool = False, dtype: Any = None) -> Tensor:
        if dtype is None and not self.dtype.is_floating_point:
            raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be either a floating "
                               f"point or complex dtype. Got: {_TYPE_NAMES[self.dtype][:-6]}")
        return self._reduce("mean", dim, keepdim, dtype)

    def amax(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return self._reduce("amax", () if dim is None else dim, keepdim) if dim is not None else \
            self._reduce("amax", None, keepdim)

    def amin(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return self._reduce("amin", dim, keepdim)

    def max(self, dim: Any = None, keepdim: bool = False):  # noqa: A003
        if isinstance(dim, Tensor):
            return self.maximum(dim)
        if dim is None:
            return self._reduce("amax", None, False)
        return _MaxResult(self._reduce("amax", dim, keepdim), self.argmax(dim, keepdim))

    def min(self, dim: Any = None, keepdim: bool = False):  # noqa: A003
        if isinstance(dim, Tensor):
            return self.minimum(dim)
        if dim is None:
            return self._reduce("amin", None, False)
        return _MaxResult(self._reduce("amin", dim, keepdim), self.argmin(dim, keepdim))

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        if dim is None:
            return apply("argmax", self.reshape(-1), dim=0, keepdim=False)
        return apply("argmax", self, dim=_wrap_dim(dim, self.ndim), keepdim=keepdim)

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        if dim is None:
            return apply("argmin", self.reshape(-1), dim=0, keepdim=False)
        return apply("argmin", self, dim=_wrap_dim(dim, self.ndim), keepdim=keepdim)

    def var(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,
            correction: int | None = None) -> Tensor:
        if correction is None:
            correction = 0 if unbiased is False else 1
        return apply("var", self, dims=_norm_dims(dim, self.ndim, "var"), keepdim=keepdim, correction=correction)

    def std(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,
            correction: int | None = None) -> Tensor:
        return self.var(dim, unbiased, keepdim, correction=correction).sqrt()

    def all(self, dim: Any = None, keepdim: bool = False) -> Tensor:  # noqa: A003
        return self.to(D.bool_).logical_not().to(D.int64).sum(dim, keepdim) == 0

    def any(self, dim: Any = None, keepdim: bool = False) -> Tensor:  # noqa: A003
        return self.to(D.bool_).to(D.int64).sum(dim, keepdim) > 0

    def norm(self, p: Any = 2, dim: Any = None, keepdim: bool = False) -> Tensor:
        if p == 2 or p == "fro":
            return (self * self).sum(dim, keepdim).sqrt()
        if p == 1:
            return self.abs().sum(dim, keepdim)
        raise NotImplementedError(f"norm(p={p!r}): graphc supports p=1 and p=2")

    def softmax(self, dim: int, dtype: Any = None) -> Tensor:
        x = self if dtype is None else self.to(dtype)
        return apply("softmax", x, dim=_wrap_dim(dim, x.ndim))

    def log_softmax(self, dim: int, dtype: Any = None) -> Tensor:
        x = self if dtype is None else self.to(dtype)
        return apply("log_softmax", x, dim=_wrap_dim(dim, x.ndim))

    def matmul(self, other: Tensor) -> Tensor:
        other = _as_tensor_like(other, self)
        x, y = _pair(self, other)
        return apply("matmul", x, y)

    mm = matmul
    bmm = matmul

    def dot(self, other: Tensor) -> Tensor:
        return self.matmul(other)

    def equal(self, other: Tensor) -> bool:
        return equal(self, other)

    def allclose(self, other: Tensor, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
        return bool(np.allclose(self.numpy(), np.asarray(other), rtol=rtol, atol=atol))

    def new_tensor(self, data: Any, dtype: Any = None) -> Tensor:
        return tensor(data, dtype=dtype or self.dtype, device=self.device)

    def new_zeros(self, *size: Any, dtype: Any = None) -> Tensor:
        return zeros(*size, dtype=dtype or self.dtype, device=self.device)

    def new_ones(self, *size: Any, dtype: Any = None) -> Tensor:
        return ones(*size, dtype=dtype or self.dtype, device=self.device)

    def new_full(self, size: Any, fill_value: Any, dtype: Any = None) -> Tensor:
        return full(size, fill_value, dtype=dtype or self.dtype, device=self.device)

    def new_empty(self, *size: Any, dtype: Any = None) -> Tensor:
        return empty(*size, dtype=dtype or self.dtype, device=self.device)


# ------------------------------------------------------------------------------------ in-place methods
def _can_cast(src: dtype, dst: dtype) -> bool:
    """PyTorch's rule for writing a result of dtype src into a tensor of dtype dst in place."""
    if src.is_floating_point and not dst.is_floating_point:
        return False
    return not (dst is D.bool_ and src is not D.bool_)


def _trace_error(msg: str, *ts: Any) -> TraceError:
    tracer = next((t._tracer for t in ts if isinstance(t, Tensor) and t._tracer is not None), None) \
        or _active_tracer()
    return tracer.error(msg) if tracer is not None else TraceError(msg)


def _write_error(msg: str, *ts: Any) -> RuntimeError:
    """PyTorch's RuntimeError for a bad in-place write, naming the user's line while tracing."""
    tracer = next((t._tracer for t in ts if isinstance(t, Tensor) and t._tracer is not None), None) \
        or _active_tracer()
    return RuntimeError(f"{msg} ({tracer._where()})" if tracer is not None else msg)


# PyTorch's in-place methods that change a tensor's shape or strides instead of its values (x.t_() makes
# x its own transpose; views taken before keep the old layout). graphc's in-place methods write values
# (the out-of-place result into self's memory), which for these would be wrong through earlier views
# (a square x.t_()) or refused with a misleading shape message, so they are refused as what they are.
_RELAYOUT_INPLACE = frozenset({"t", "transpose", "swapaxes", "swapdims", "squeeze", "unsqueeze"})
# methods whose result is a view of self: no in-place form (PyTorch has none either)
_VIEW_METHODS = frozenset({"permute", "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten",
                           "expand", "expand_as", "narrow", "select", "movedim", "moveaxis", "contiguous",
                           "detach", "chunk", "split", "unbind", "diagonal", "unfold", "T", "mT"})


def _relayout_refusal(self: Tensor, name: str):
    def refuse(*args: Any, **kwargs: Any) -> Tensor:
        raise _write_error(f"{name}: graphc does not change a tensor's shape or strides in place (PyTorch's "
                           f"{name} relayouts the tensor, and views taken before keep the old layout); write "
                           f"`x = x.{name[:-1]}(...)` instead", self)

    refuse.__name__ = name
    return refuse


def _inplace_method(name: str, shown: str | None = None):
    """Tensor.<name>_: the out-of-place method `name`, then a write of its result into self."""
    shown = shown or f"{name}_"

    def method(self: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        res = getattr(type(self), name)(self, *args, **kwargs)
        if not isinstance(res, Tensor):
            raise TypeError(f"{shown}: {name}() does not return a tensor, so it has no in-place form")
        if tuple(res.shape) != tuple(self.shape):
            raise _write_error(f"{shown}: output with shape {list(self.shape)} doesn't match the broadcast "
                               f"shape {list(res.shape)}", self, res)
        return self._write(res, shown)

    method.__name__ = shown
    method.__doc__ = f"In-place {name}: x.{shown}(...) writes x.{name}(...) into x (and its views)."
    return method


INPLACE_METHODS = (
    "add", "sub", "mul", "div", "true_divide", "multiply", "subtract", "divide", "clamp", "clamp_min",
    "clamp_max", "clip", "pow", "remainder", "relu", "sigmoid", "tanh", "exp", "log", "sqrt", "rsqrt",
    "abs", "neg", "negative", "sign", "floor", "ceil", "round", "reciprocal", "sin", "cos", "erf", "square",
    "tril", "triu", "logical_not", "logical_and", "logical_or", "logical_xor", "eq", "ne", "lt", "le", "gt",
    "ge",
)
for _name in INPLACE_METHODS:
    setattr(Tensor, _name + "_", _inplace_method(_name))
for _op, _name in (("__iadd__", "add"), ("__isub__", "sub"), ("__imul__", "mul"), ("__itruediv__", "div"),
                   ("__ifloordiv__", "__floordiv__"), ("__imod__", "remainder"), ("__ipow__", "__pow__"),
                   ("__iand__", "__and__"), ("__ior__", "__or__"), ("__ixor__", "__xor__")):
    setattr(Tensor, _op, _inplace_method(_name, _op))


# -------------------------------------------------------------------------------------------- helpers
def _as_tensor_like(x: Any, like: Tensor) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if _is_scalar(x):
        return _const(x, D.result_type_with_scalar(like.dtype, x), like)
    return tensor(x)


def _resolve_shape(src: Sequence[Dim], shape: Sequence[Any]) -> list[Dim]:
    shape = [s if isinstance(s, Sym) else int(s) for s in shape]
    neg = [i for i, s in enumerate(shape) if is_static(s) and s == -1]
    if len(neg) > 1:
        raise RuntimeError("only one dimension can be inferred (-1)")
    for s in shape:
        if is_static(s) and s < -1:
            raise RuntimeError(f"invalid shape dimension {s}")
    total = prod(src)
    if neg:
        known = prod(s for i, s in enumerate(shape) if i != neg[0])
        q = exact_div(total, known) if known != 0 else None
        if q is None:
            raise RuntimeError(f"shape '[{', '.join(map(str, shape))}]' is invalid for input of size {total}")
        shape[neg[0]] = q
    elif prod(shape) != total:
        raise RuntimeError(f"shape '[{', '.join(map(str, shape))}]' is invalid for input of size {total}")
    return shape


def _np_index(idx: Any) -> Any:
    if isinstance(idx, tuple):
        return tuple(_np_index(i) for i in idx)
    if isinstance(idx, Tensor):
        return idx._concrete("indexing")
    return idx


def _norm_slice(s: slice, size: Dim) -> tuple[Dim, Dim, int]:
    step = 1 if s.step is None else int(s.step)
    if step <= 0:
        raise ValueError("step must be greater than zero")

    def clip(v: Any, default: Dim) -> Dim:
        if v is None:
            return default
        if isinstance(v, Tensor):
            v = v.__index__()
        if isinstance(v, Sym):
            return v
        v = int(v)
        if is_static(size):
            if v < 0:
                v = builtins.max(v + size, 0)
            return builtins.min(v, size)
        return size + v if v < 0 else v

    start = clip(s.start, 0)
    stop = clip(s.stop, size)
    if is_static(start) and is_static(stop) and stop < start:
        stop = start
    return start, stop, step


def _getitem(x: Tensor, idx: Any) -> Tensor:
    if not isinstance(idx, tuple):
        idx = (idx,)
    if any(isinstance(i, Tensor) and i.dtype is D.bool_ for i in idx) or any(
            isinstance(i, (list, np.ndarray)) and np.asarray(i).dtype == bool for i in idx):
        if x._tracer is not None:
            raise x._tracer.error("boolean-mask indexing gives a data-dependent shape; use torch.where-style "
                                  "graphc.where(mask, x, fill) instead", x)
        return Tensor._wrap(np.asarray(x._data[_np_index(idx)], order="C"), x._device)
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    if n_real > x.ndim:
        raise IndexError(f"too many indices for tensor of dimension {x.ndim}")
    if sum(1 for i in idx if i is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    expanded: list[Any] = []
    for i in idx:
        if i is Ellipsis:
            expanded += [slice(None)] * (x.ndim - n_real)
        else:
            expanded.append(i)
    out = x
    final_shape: list[Dim] = []
    d = 0  # dim of `out` that the next index applies to
    for i in expanded:
        if i is None:
            final_shape.append(1)
            continue
        size = out.shape[d]
        if isinstance(i, (int, np.integer)) or (isinstance(i, Tensor) and i.ndim == 0 and i._tracer is None
                                                and not i.dtype.is_floating_point):
            k = int(i)
            if is_static(size):
                if not -size <= k < size:
                    raise IndexError(f"index {k} is out of bounds for dimension {d} with size {size}")
                k %= size
                start: Dim = k
            else:
                start = size + k if k < 0 else k
            out = apply("slice", out, dim=d, start=start, end=start + 1, step=1)
            d += 1
        elif isinstance(i, slice):
            start, stop, step = _norm_slice(i, size)
            if not (start == 0 and stop == size and step == 1):
                out = apply("slice", out, dim=d, start=start, end=stop, step=step)
            final_shape.append(out.shape[d])
            d += 1
        elif isinstance(i, (Tensor, list, np.ndarray)):
            index = i if isinstance(i, Tensor) else tensor(i)
            if index.dtype.is_floating_point:
                raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
            index = index.to(D.int64)
            flat = index.reshape(-1) if index.ndim != 1 else index
            out = apply("index_select", out, flat, dim=d)
            final_shape.extend(index.shape)
            d += 1
        else:
            raise IndexError(f"unsupported index type {type(i).__name__}")
    final_shape.extend(out.shape[d:])
    if tuple(final_shape) != tuple(out.shape):
        out = out.reshape(final_shape)
    return out


def _tri(x: Tensor, diagonal: int, lower: bool) -> Tensor:
    if x.ndim < 2:
        raise RuntimeError("tril/triu: input tensor must have at least 2 dimensions")
    r, c = x.shape[-2], x.shape[-1]
    rows = arange(r).reshape(-1, 1) if x._tracer is None or is_static(r) else arange(r).reshape(r, 1)
    cols = arange(c).reshape(1, -1) if x._tracer is None or is_static(c) else arange(c).reshape(1, c)
    keep = (cols - rows <= diagonal) if lower else (cols - rows >= diagonal)
    return where(keep, x, _const(0, x.dtype, x) if x._tracer is not None else 0)


def _format(t: Tensor) -> str:
    arr = t._data
    default_float = t.dtype is D.get_default_dtype()
    if arr.size == 0:
        body = "[]"
    else:
        opts: dict[str, Any] = {"separator": ", ", "prefix": "tensor("}
        if t.dtype.is_floating_point:
            a64 = arr.astype(np.float64)
            finite = a64[np.isfinite(a64)]
            big = finite.size and np.abs(finite).max() >= 1e8
            tiny = finite.size and np.abs(finite[finite != 0]).min(initial=1.0) < 1e-4
            if finite.size and np.all(finite == np.round(finite)) and not big:
                fmt = "{:.0f}."
            elif big or tiny:
                fmt = "{:.4e}"
            else:
                fmt = "{:.4f}"
            opts["formatter"] = {"float_kind": lambda v: fmt.format(v) if np.isfinite(v) else str(v)}
            arr = a64
        body = np.array2string(arr, **opts)
    extras = []
    if t._device.type != "cpu":
        extras.append(f"device='{t._device}'")
    if not ((t.dtype.is_floating_point and default_float) or t.dtype is D.int64 or t.dtype is D.bool_):
        extras.append(f"dtype={t.dtype!r}")
    if arr.size == 0 and tuple(arr.shape) != (0,):
        extras.insert(0, f"size={tuple(arr.shape)}")
    if t.requires_grad:
        extras.append("requires_grad=True")
    return "tensor(" + body + "".join(", " + e for e in extras) + ")"


# ------------------------------------------------------------------------------------ free functions
def tensor(data: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """Copy data into a new tensor (PyTorch's dtype inference: floats -> float32, ints -> int64)."""
    if isinstance(data, Tensor) and data._tracer is not None:
        return data.to(dtype) if dtype is not None else data.clone()
    if isinstance(data, Sym):  # a dynamic size while tracing: its run-time value
        return _dim_value(data).to(dtype if dtype is not None else D.int64)
    arr = _to_array(data, as_dtype(dtype) if dtype is not None else None)
    return Tensor._wrap(arr, as_device(device), requires_grad)


def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Tensor:
    """Share memory with data where it can (numpy arrays of a matching dtype, tensors)."""
    if isinstance(data, Tensor):
        return data.to(dtype) if dtype is not None else data
    if isinstance(data, np.ndarray) and (dtype is None or as_dtype(dtype).np == data.dtype):
        D.from_numpy_dtype(data.dtype)
        return Tensor._wrap(data, as_device(device))
    tarr = _torch_to_numpy(data)
    if tarr is not None and (dtype is None or as_dtype(dtype).np == tarr.dtype):
        return Tensor._wrap(tarr, as_device(device))
    return tensor(data, dtype=dtype, device=device)


def from_numpy(arr: np.ndarray) -> Tensor:
    """A tensor that always shares arr's memory."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(arr).__name__})")
    D.from_numpy_dtype(arr.dtype)
    return Tensor._wrap(arr)


def _creation(shape: tuple, dtype: Any, fill: Any, device: Any, requires_grad: bool) -> Tensor:
    if isinstance(fill, Sym):  # a dynamic size while tracing (full(s, B)): its run-time value everywhere
        dt = as_dtype(dtype) if dtype is not None else D.int64
        return _creation(shape, dt, 0, device, requires_grad) + _dim_value(fill).to(dt)
    shape = tuple(_size_args(shape))
    dt = as_dtype(dtype) if dtype is not None else (
        D.get_default_dtype() if isinstance(fill, float) or fill is None else
        D.bool_ if isinstance(fill, bool) else D.int64 if isinstance(fill, int) else D.get_default_dtype())
    if any(isinstance(s, Sym) for s in shape):
        return apply("full", shape=shape, value=0 if fill is None else fill, dtype=dt)
    for s in shape:
        if not isinstance(s, (int, np.integer)) or s < 0:
            raise RuntimeError(f"invalid size {s!r} in shape {shape}: sizes must be non-negative ints")
    arr = np.full(tuple(int(s) for s in shape), 0 if fill is None else fill).astype(dt.np)
    return Tensor._wrap(arr, as_device(device), requires_grad)


def zeros(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _creation(size, dtype or D.get_default_dtype(), 0, device, requires_grad)


def ones(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _creation(size, dtype or D.get_default_dtype(), 1, device, requires_grad)


def empty(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _creation(size, dtype or D.get_default_dtype(), None, device, requires_grad)


def full(size: Any, fill_value: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    if isinstance(size, (int, Sym)):
        size = (size,)
    return _creation(tuple(size), dtype, fill_value, device, requires_grad)


def _like(t: Tensor, dtype: Any) -> dict:
    return {"dtype": dtype or t.dtype, "device": t.device}


def zeros_like(t: Tensor, dtype: Any = None, device: Any = None) -> Tensor:
    return zeros(t.shape, **_like(t, dtype))


def ones_like(t: Tensor, dtype: Any = None, device: Any = None) -> Tensor:
    return ones(t.shape, **_like(t, dtype))


def empty_like(t: Tensor, dtype: Any = None, device: Any = None) -> Tensor:
    return empty(t.shape, **_like(t, dtype))


def full_like(t: Tensor, fill_value: Any, dtype: Any = None, device: Any = None) -> Tensor:
    return full(t.shape, fill_value, **_like(t, dtype))


def arange(start: Any, end: Any = None, step: Any = 1, dtype: Any = None, device: Any = None,
           requires_grad: bool = False) -> Tensor:
    if end is None:
        start, end = 0, start
    if dtype is None:
        dtype = D.get_default_dtype() if any(isinstance(v, float) for v in (start, end, step)) else D.int64
    dt = as_dtype(dtype)
    if isinstance(end, Sym):
        return apply("arange", start=start, end=end, step=step, dtype=dt)
    if step == 0:
        raise RuntimeError("arange: step must be nonzero")
    return Tensor._wrap(np.arange(start, end, step).astype(dt.np), as_device(device), requires_grad)


def linspace(start: float, end: float, steps: int, dtype: Any = None, device: Any = None) -> Tensor:
    dt = as_dtype(dtype) if dtype is not None else D.get_default_dtype()
    return Tensor._wrap(np.linspace(start, end, steps).astype(dt.np), as_device(device))


def eye(n: int, m: int | None = None, dtype: Any = None, device: Any = None) -> Tensor:
    dt = as_dtype(dtype) if dtype is not None else D.get_default_dtype()
    return Tensor._wrap(np.eye(n, m).astype(dt.np), as_device(device))


def rand(*size: Any, generator: Any = None, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    return empty(*size, dtype=dtype, device=device, requires_grad=requires_grad).uniform_(generator=generator)


def randn(*size: Any, generator: Any = None, dtype: Any = None, device: Any = None,
          requires_grad: bool = False) -> Tensor:
    return empty(*size, dtype=dtype, device=device, requires_grad=requires_grad).normal_(generator=generator)


def randint(low: int, high: int | None = None, size: Any = (), generator: Any = None, dtype: Any = None) -> Tensor:
    from .random import _gen

    if high is None:
        low, high = 0, low
    dt = as_dtype(dtype) if dtype is not None else D.int64
    return Tensor._wrap(_gen(generator).integers(low, high, size=tuple(size)).astype(dt.np))


def rand_like(t: Tensor, dtype: Any = None) -> Tensor:
    return rand(t.shape, dtype=dtype or t.dtype)


def randn_like(t: Tensor, dtype: Any = None) -> Tensor:
    return randn(t.shape, dtype=dtype or t.dtype)


def _tensors(ts: Sequence[Tensor], op: str) -> list[Tensor]:
    ts = list(ts)
    if not ts:
        raise RuntimeError(f"{op}(): expected a non-empty list of Tensors")
    dt = ts[0].dtype
    for t in ts[1:]:
        dt = promote_types(dt, t.dtype)
    return [t.to(dt) for t in ts]


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    ts = [t for t in _tensors(tensors, "cat") if not (t.ndim == 1 and t.shape[0] == 0)] or list(tensors)[:1]
    d = _wrap_dim(dim, ts[0].ndim)
    if len(ts) == 1:
        return ts[0].clone()  # cat copies: the result never aliases an input
    return apply("concat", *ts, dim=d)


concat = cat
concatenate = cat


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    ts = _tensors(tensors, "stack")
    d = _wrap_dim(dim, ts[0].ndim + 1)
    shape0 = ts[0].shape
    for i, t in enumerate(ts):
        if t.shape != shape0:
            raise RuntimeError(f"stack expects each tensor to be equal size, but got {list(shape0)} at entry 0 "
                               f"and {list(t.shape)} at entry {i}")
    return cat([t.unsqueeze(d) for t in ts], d)


def where(condition: Tensor, x: Any, y: Any) -> Tensor:
    if not isinstance(condition, Tensor):
        raise TypeError("where: condition must be a Tensor")
    cond = condition.to(D.bool_)
    if not isinstance(x, Tensor) and not isinstance(y, Tensor):
        dt = D.get_default_dtype() if isinstance(x, float) or isinstance(y, float) else D.int64
        return apply("where", cond, _const(x, dt, cond), _const(y, dt, cond))
    a, b = _pair(x, y)
    return apply("where", cond, a, b)


def equal(a: Tensor, b: Tensor) -> bool:
    """True when both tensors have the same shape and elements."""
    x, y = a._concrete("graphc.equal"), b._concrete("graphc.equal")
    return x.shape == y.shape and bool(np.array_equal(x, y))


def allclose(a: Tensor, b: Tensor, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> bool:
    return bool(np.allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, equal_nan=equal_nan))


def is_tensor(x: Any) -> bool:
    return isinstance(x, Tensor)


def numel(t: Tensor) -> Dim:
    return t.numel()


def _method(name: str):
    def f(t: Tensor, *args: Any, **kwargs: Any):
        return getattr(t, name)(*args, **kwargs)

    f.__name__ = name
    f.__doc__ = f"graphc.{name}(t, ...) is t.{name}(...)."
    return f


# torch.<fn>(tensor, ...) forms of the methods
FUNCTIONS = [
    "reshape", "flatten", "squeeze", "unsqueeze", "permute", "transpose", "t", "matmul", "mm", "bmm",
    "sum", "mean", "prod", "amax", "amin", "argmax", "argmin", "max", "min", "var", "std", "softmax",
    "log_softmax", "exp", "log", "sqrt", "rsqrt", "tanh", "erf", "sigmoid", "relu", "abs", "neg", "sin",
    "cos", "clamp", "clip", "maximum", "minimum", "pow", "split", "chunk", "unbind", "narrow", "select",
    "tril", "triu", "masked_fill", "floor", "ceil", "round", "sign", "square", "reciprocal", "all", "any",
    "logical_and", "logical_or", "logical_not", "logical_xor", "eq", "ne", "lt", "le", "gt", "ge", "add",
    "sub", "mul", "div", "remainder", "norm", "dot", "repeat", "unflatten",
]
_FUNCS = {name: _method(name) for name in FUNCTIONS}

