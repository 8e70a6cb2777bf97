"""graphc.from_onnx: an ONNX model (opset 13 and later) as a graphc Graph.

The ONNX graph is interpreted node by node with graphc's own Tensor functions inside graphc's tracer, so
every ONNX op becomes the graphc ops it means (``Gemm`` -> ``linear``, ``Conv`` -> ``conv``, ...) and no
op is defined twice. Each ONNX op has one handler in ``HANDLERS`` that reads its attributes, works out
static shapes and calls graphc ops (onnx2c's one-class-per-op, as functions).

Values known at import time stay concrete: initializers (which the tracer lifts as parameters under
their ONNX names), ``Constant`` nodes, and what is computed from them alone, which the Tensor functions
evaluate eagerly. Shape arithmetic (``Shape``, ``Gather``, ``Concat``, ``Slice``, ...) on dims that are
dynamic runs on :class:`SymArray` values, arrays of graphc dims, so ``Reshape`` / ``Expand`` /
``ConstantOfShape`` / ``Range`` get symbolic sizes and fold to constants when the sizes are static.

An op without a handler, or an attribute outside what graphc compiles, raises one
:class:`~graphc.errors.UnsupportedError` naming the node, its op type, the opset and docs/importers.md.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .. import _dtype as D
from ..errors import GraphcError, ShapeError, TraceError, UnsupportedError
from ..ir.graph import Graph
from ..ir.graph import Node as IRNode
from ..ir.graph import Value as IRValue
from ..ops.registry import TensorType
from ..sym import Sym, exact_div, floor_div, is_static
from ..tensor import _ACTIVE, Tensor, apply
from ..trace import DEFAULT_MAX, Dim, Tracer
from .onnx_load import OnnxLoadError, load

__all__ = ["from_onnx", "OnnxImportError", "NeedsConstant", "OnnxLoadError", "HANDLERS", "ONNX_DTYPES", "MIN_OPSET"]

MIN_OPSET = 13
DOCS = "docs/importers.md"

# ONNX TensorProto.DataType -> graphc dtype (the element types graphc has)
ONNX_DTYPES: dict[int, D.dtype] = {1: D.float32, 2: D.uint8, 3: D.int8, 5: D.int16, 6: D.int32, 7: D.int64,
                                   9: D.bool_, 10: D.float16, 11: D.float64, 16: D.bfloat16}
_ONNX_TYPE_NAMES = {0: "UNDEFINED", 1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32",
                    7: "INT64", 8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64",
                    14: "COMPLEX64", 15: "COMPLEX128", 16: "BFLOAT16", 17: "FLOAT8E4M3FN", 18: "FLOAT8E4M3FNUZ",
                    19: "FLOAT8E5M2", 20: "FLOAT8E5M2FNUZ", 21: "UINT4", 22: "INT4", 23: "FLOAT4E2M1",
                    24: "FLOAT8E8M0", 25: "UINT2", 26: "INT2"}


class OnnxImportError(GraphcError, ValueError):
    """The ONNX model is malformed or uses a value in a way graphc cannot import (names the node)."""


class NeedsConstant(UnsupportedError):
    """A node needs the value of one of its inputs at import (a shape, axes, slice bounds) but that input is
    computed at run time. ``input_name`` is the ONNX name of that input."""

    input_name = ""


def type_name(code: int) -> str:
    return _ONNX_TYPE_NAMES.get(code, str(code))


def graphc_dtype(code: int, where: str) -> D.dtype:
    dt = ONNX_DTYPES.get(code)
    if dt is None:
        raise UnsupportedError(f"{where}: element type {type_name(code)} is not a graphc dtype (graphc has "
                               f"{', '.join(type_name(k) for k in ONNX_DTYPES)}); see {DOCS}")
    return dt


# ------------------------------------------------------------------------------------- shape values
class SymArray:
    """A small integer tensor known at import time whose elements may be dynamic dims (graphc Syms):
    the result of ``Shape`` on a dynamically sized tensor and of arithmetic on it."""

    __slots__ = ("arr", "dtype")

    def __init__(self, arr: np.ndarray, dtype: D.dtype = D.int64):
        self.arr = np.asarray(arr, dtype=object)
        self.dtype = dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.arr.shape

    @property
    def ndim(self) -> int:
        return self.arr.ndim

    def __repr__(self) -> str:
        return f"SymArray({self.arr.tolist()})"


def _has_sym(arr: np.ndarray) -> bool:
    return arr.dtype == object and any(isinstance(v, Sym) for v in arr.flat)


def _wrap_static(arr: np.ndarray, dt: D.dtype) -> Tensor | SymArray:
    """A SymArray while it holds a dynamic dim, else a concrete graphc Tensor."""
    if arr.dtype == object:
        if _has_sym(arr):
            return SymArray(arr, dt)
        arr = np.array(arr.tolist(), dtype=dt.np).reshape(arr.shape)
    return Tensor._wrap(np.asarray(arr.astype(dt.np, copy=False), order="C"))


Value = Any  # Tensor | SymArray | None


# ------------------------------------------------------------------------------------------ context
class _OnnxTracer(Tracer):
    """The tracer, with the ONNX node being imported as the location of every op it records."""

    loc = ""

    def record(self, op, inputs, attrs, out_type):  # noqa: ANN001 - Tracer.record's signature
        vals = []
        for t in inputs:
            if t is None:
                vals.append(None)
            elif t._tracer is self:
                vals.append(t._value)
            elif t._tracer is None:
                vals.append(self.lift(t))
            else:
                raise self.error("a tensor from another trace was used", t)
        node = self.graph.add_node(op.name, vals, attrs, out_type, scope=self.current_scope, loc=self.loc)
        return Tensor._symbolic(node.out, self)


class Node:
    """One ONNX node while its handler runs: inputs (None for an omitted optional one), attributes as
    Python values, the opset, and error helpers that name the node."""

    def __init__(self, proto: Any, inputs: list[Value], opset: int, label: str):
        self.proto = proto
        self.op_type: str = proto.op_type
        self.name: str = proto.name or (proto.output[0] if proto.output else proto.op_type)
        self.inputs = inputs
        self.opset = opset
        self.label = label
        self.attrs = {a.name: _attr_value(a) for a in proto.attribute}
        self.n_outputs = len(proto.output)
        self.outputs_used = [bool(o) for o in proto.output]

    @property
    def where(self) -> str:
        return f"{self.label}: node '{self.name}' ({self.op_type}, opset {self.opset})"

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def input(self, i: int) -> Value:
        return self.inputs[i] if i < len(self.inputs) else None

    def tensor(self, i: int) -> Tensor:
        v = self.input(i)
        if v is None:
            raise OnnxImportError(f"{self.where}: input {i} is required")
        return as_tensor(v, self, i)

    def static(self, i: int, what: str) -> np.ndarray | None:
        """Input i as a numpy array (object dtype when it holds dynamic dims); None when omitted. An input
        computed at run time is an error: the handler needs its value to build the graph."""
        v = self.input(i)
        if v is None:
            return None
        if isinstance(v, SymArray):
            return v.arr
        if v._tracer is None:
            return v._data
        e = NeedsConstant(f"{self.where}: input {i} ({what}) must be known when the model is imported (a "
                          "constant, an initializer or shape arithmetic), but it is computed at run time; bind the "
                          f"graph input to a value with from_onnx(..., constants={{name: array}}); see {DOCS}")
        e.input_name = self.proto.input[i]
        raise e

    def ints(self, i: int, what: str) -> list | None:
        arr = self.static(i, what)
        if arr is None:
            return None
        return [v if isinstance(v, Sym) else int(v) for v in np.asarray(arr).reshape(-1).tolist()]

    def unsupported(self, why: str) -> UnsupportedError:
        return UnsupportedError(f"{self.where}: {why}; see {DOCS} for what graphc imports")

    def error(self, why: str) -> OnnxImportError:
        return OnnxImportError(f"{self.where}: {why}")


def as_tensor(v: Value, node: Node | None = None, i: int = 0) -> Tensor:
    if isinstance(v, Tensor):
        return v
    if isinstance(v, SymArray):
        if not _has_sym(v.arr):
            return _wrap_static(v.arr, v.dtype)  # type: ignore[return-value]
        return _sym_tensor(v)
    raise OnnxImportError(f"{node.where if node else 'ONNX import'}: input {i} is missing")


def _sym_tensor(v: SymArray) -> Tensor:
    """A shape value holding dynamic dims used as tensor data (arange(T) * T): each dim's run-time value
    (graphc.tensor of a dim), the elements joined in the array's shape and type."""
    from ..tensor import tensor

    parts = [apply("reshape", _cast(tensor(e) if isinstance(e, Sym) else Tensor._wrap(np.asarray(int(e), np.int64)),
                                    D.int64), shape=(1,)) for e in v.arr.reshape(-1).tolist()]
    flat = parts[0] if len(parts) == 1 else apply("concat", *parts, dim=0)
    return _cast(_reshape(flat, v.arr.shape), v.dtype)


def _attr_value(a: Any) -> Any:
    from onnx import AttributeProto as A
    from onnx import numpy_helper

    t = a.type
    if t == A.FLOAT:
        return float(a.f)
    if t == A.INT:
        return int(a.i)
    if t == A.STRING:
        return a.s.decode("utf-8", "replace")
    if t == A.TENSOR:
        return numpy_helper.to_array(a.t)
    if t == A.FLOATS:
        return [float(x) for x in a.floats]
    if t == A.INTS:
        return [int(x) for x in a.ints]
    if t == A.STRINGS:
        return [s.decode("utf-8", "replace") for s in a.strings]
    if t == A.TENSORS:
        return [numpy_helper.to_array(x) for x in a.tensors]
    return a  # graphs, sparse tensors, type protos: the handler that wants them says it cannot


def _tensor_array(t: Any, where: str) -> np.ndarray:
    from onnx import numpy_helper

    graphc_dtype(t.data_type, where)
    return np.asarray(numpy_helper.to_array(t), order="C")


# ------------------------------------------------------------------------------------------ helpers
def _norm_axis(node: Node, axis: int, ndim: int) -> int:
    if not -ndim <= axis < max(ndim, 1):
        raise node.error(f"axis {axis} out of range for a {ndim}-d input")
    return axis % ndim if ndim else 0


def _shape(v: Value) -> tuple:
    return tuple(v.shape)


def _reshape(x: Tensor, shape: Sequence[Any]) -> Tensor:
    if tuple(x.shape) == tuple(shape):
        return x
    return apply("reshape", x, shape=tuple(shape))


def _cast(x: Tensor, dt: D.dtype) -> Tensor:
    return x if x.dtype is dt else apply("cast", x, dtype=dt)


def _scalar(value: Any, like: Tensor) -> Tensor:
    return Tensor._wrap(np.asarray(value, dtype=like.dtype.np))


def _static_dims(node: Node, x: Tensor, first: int = 2) -> list[int]:
    dims = list(x.shape[first:])
    if not all(is_static(d) for d in dims):
        raise node.unsupported(f"spatial dims {[str(d) for d in dims]} must be static")
    return [int(d) for d in dims]


# ------------------------------------------------------------------------------- shape arithmetic
def _sym_elementwise(fn: Callable[..., Any]) -> Callable[..., np.ndarray]:
    vec = np.frompyfunc(fn, 2, 1)

    def run(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(vec(np.asarray(a, dtype=object), np.asarray(b, dtype=object)), dtype=object)

    return run


def _sym_div(a: Any, b: Any) -> Any:
    if isinstance(a, Sym) or isinstance(b, Sym):
        q = exact_div(a, b)
        if q is None:
            raise ShapeError(f"the dynamic dim {a} is not divisible by {b}")
        return q
    q = abs(int(a)) // abs(int(b))
    return q if (a >= 0) == (b >= 0) else -q


_SYM_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Add": _sym_elementwise(lambda a, b: a + b),
    "Sub": _sym_elementwise(lambda a, b: a - b),
    "Mul": _sym_elementwise(lambda a, b: a * b),
    "Div": _sym_elementwise(_sym_div),
    "Equal": _sym_elementwise(lambda a, b: a == b),
}


def _sym_inputs(node: Node) -> bool:
    return any(isinstance(v, SymArray) for v in node.inputs)


def _sym_op(node: Node) -> list[Value] | None:
    """Run a shape-arithmetic node on SymArray inputs (None: the node has none, use the Tensor path)."""
    if not _sym_inputs(node) or any(isinstance(v, Tensor) and v._tracer is not None for v in node.inputs):
        return None  # no shape value, or one meets run-time data: the Tensor path (dims as run-time values)
    op = node.op_type
    ins = [None if v is None else node.static(i, "a shape value") for i, v in enumerate(node.inputs)]
    dt0 = next((v.dtype for v in node.inputs if isinstance(v, SymArray)), D.int64)
    if op in _SYM_BINARY:
        out = _SYM_BINARY[op](ins[0], ins[1])
        return [_wrap_static(out, D.bool_ if op == "Equal" else dt0)]
    if op == "Where":
        return [_wrap_static(np.where(np.asarray(ins[0]).astype(bool), ins[1], ins[2]), dt0)]
    if op in ("Identity", "Cast", "CastLike"):
        return [_wrap_static(ins[0], dt0)]
    if op == "Max" or op == "Min":
        res = ins[0]
        for other in ins[1:]:
            res = np.asarray(np.frompyfunc(lambda a, b: _sym_minmax(node, a, b, op == "Max"), 2, 1)(res, other),
                             dtype=object)
        return [_wrap_static(res, dt0)]
    return None  # the handler knows SymArrays itself (Gather, Concat, Slice, Unsqueeze, ...)


def _sym_minmax(node: Node, a: Any, b: Any, is_max: bool) -> Any:
    if isinstance(a, Sym) or isinstance(b, Sym):
        if a == b:
            return a
        raise node.unsupported(f"{'max' if is_max else 'min'} of the dims {a} and {b} depends on a dynamic dim")
    return max(a, b) if is_max else min(a, b)


def _np_on_static(node: Node, fn: Callable[..., np.ndarray], *arrays: np.ndarray) -> Value:
    dt0 = next((v.dtype for v in node.inputs if isinstance(v, (SymArray, Tensor))), D.int64)
    return _wrap_static(np.asarray(fn(*arrays), dtype=object) if any(a.dtype == object for a in arrays)
                        else np.asarray(fn(*arrays)), dt0)


# ---------------------------------------------------------------------------------------- handlers
Handler = Callable[[Node], list[Value]]
HANDLERS: dict[str, Handler] = {}


def handler(*op_types: str) -> Callable[[Handler], Handler]:
    def reg(fn: Handler) -> Handler:
        for t in op_types:
            HANDLERS[t] = fn
        return fn

    return reg


_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Equal": "eq", "Less": "lt", "Greater": "gt",
           "LessOrEqual": "le", "GreaterOrEqual": "ge", "And": "logical_and", "Or": "logical_or",
           "Xor": "logical_xor"}


@handler(*_BINARY)
def _binary(node: Node) -> list[Value]:
    sym = _sym_op(node)
    if sym is not None:
        return sym
    a, b = node.tensor(0), node.tensor(1)
    if a.dtype is not b.dtype:
        raise node.error(f"inputs have different element types {a.dtype} and {b.dtype}")
    return [apply(_BINARY[node.op_type], a, b)]


@handler("Div")
def _div(node: Node) -> list[Value]:
    sym = _sym_op(node)
    if sym is not None:
        return sym
    a, b = node.tensor(0), node.tensor(1)
    if a.dtype.is_floating_point:
        return [apply("div", a, b)]
    # integer division truncates toward zero (C); computed in float64, exact for |values| < 2**53
    q = _trunc(apply("div", _cast(a, D.float64), _cast(b, D.float64)))
    return [_cast(q, a.dtype)]


def _trunc(q: Tensor) -> Tensor:
    """q rounded toward zero (C's trunc), a floating tensor."""
    return apply("where", apply("lt", q, _scalar(0, q)), apply("ceil", q), apply("floor", q))


@handler("Mod")
def _mod(node: Node) -> list[Value]:
    fmod = int(node.attr("fmod", 0))
    if fmod not in (0, 1):
        raise node.error(f"fmod must be 0 or 1, got {fmod}")
    if _sym_inputs(node):
        if fmod:
            raise node.unsupported("Mod with fmod=1 on shape values (dynamic dims)")
        a, b = node.static(0, "a shape value"), node.static(1, "a shape value")
        return [_wrap_static(_sym_elementwise(lambda x, y: _sym_mod(node, x, y))(a, b),
                             next(v.dtype for v in node.inputs if isinstance(v, SymArray)))]
    a, b = node.tensor(0), node.tensor(1)
    if a.dtype is not b.dtype:
        raise node.error(f"inputs have different element types {a.dtype} and {b.dtype}")
    if not fmod:
        return [apply("remainder", a, b)]  # the sign of the divisor, like Python and numpy
    # C's fmod: the sign of the dividend, a - b * trunc(a / b), in float64 (exact for float32 and for
    # integers below 2**53), then back to the inputs' type
    a64, b64 = _cast(a, D.float64), _cast(b, D.float64)
    r = apply("sub", a64, apply("mul", b64, _trunc(apply("div", a64, b64))))
    return [_cast(r, a.dtype)]


def _sym_mod(node: Node, a: Any, b: Any) -> Any:
    """a % b with Python's sign rule when a or b is a dynamic dim: the remainder is the same for every
    value of the dims (the dim terms of a divide by b), else the node is unsupported."""
    if not isinstance(a, Sym) and not isinstance(b, Sym):
        return int(a) % int(b)
    if isinstance(b, Sym):
        if not isinstance(a, Sym) and a == 0:
            return 0
        if isinstance(a, Sym) and exact_div(a, b) is not None:
            return 0
    elif b > 0:
        q = floor_div(a, int(b))
        if q is not None:
            return a - int(b) * q
    raise node.unsupported(f"'{a} % {b}' depends on the value of a dynamic dim")


@handler("Pow")
def _pow(node: Node) -> list[Value]:
    a, b = node.tensor(0), node.tensor(1)
    if a.dtype.is_floating_point:
        return [apply("pow", a, _cast(b, a.dtype))]
    # an integer base: the power in float64 (exact below 2**53), then back to the base's type
    y = apply("pow", _cast(a, D.float64), _cast(b, D.float64))
    return [_cast(y, a.dtype)]


@handler("Max", "Min", "Sum", "Mean")
def _variadic(node: Node) -> list[Value]:
    sym = _sym_op(node) if node.op_type in ("Max", "Min") else None
    if sym is not None:
        return sym
    xs = [node.tensor(i) for i in range(len(node.inputs))]
    op = {"Max": "maximum", "Min": "minimum", "Sum": "add", "Mean": "add"}[node.op_type]
    y = xs[0]
    for x in xs[1:]:
        y = apply(op, y, x)
    if node.op_type == "Mean":
        y = apply("div", y, _scalar(len(xs), y))
    if len(xs) == 1:
        y = apply("identity", y) if y._tracer is not None else y
    return [y]


_UNARY = {"Abs": "abs", "Neg": "neg", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Erf": "erf", "Relu": "relu",
          "Sigmoid": "sigmoid", "Tanh": "tanh", "Floor": "floor", "Ceil": "ceil", "Reciprocal": "reciprocal",
          "Sin": "sin", "Cos": "cos", "Sign": "sign", "Not": "logical_not", "Round": "round"}


@handler(*_UNARY)
def _unary(node: Node) -> list[Value]:
    return [apply(_UNARY[node.op_type], node.tensor(0))]


@handler("IsNaN", "IsInf")
def _is_nan_inf(node: Node) -> list[Value]:
    x = node.tensor(0)
    if not x.dtype.is_floating_point:
        raise node.error(f"needs a floating-point input, got {x.dtype}")
    if node.op_type == "IsNaN":
        return [apply("ne", x, x)]
    pos, neg = node.attr("detect_positive", 1), node.attr("detect_negative", 1)
    if pos and neg:
        return [apply("eq", apply("abs", x), _scalar(math.inf, x))]
    if pos or neg:
        return [apply("eq", x, _scalar(math.inf if pos else -math.inf, x))]
    return [apply("lt", apply("abs", x), _scalar(-1, x))]  # detects neither: all false (NaN too)


@handler("LeakyRelu")
def _leaky_relu(node: Node) -> list[Value]:
    return [apply("leaky_relu", node.tensor(0), negative_slope=node.attr("alpha", 0.01))]


@handler("Elu")
def _elu(node: Node) -> list[Value]:
    return [apply("elu", node.tensor(0), alpha=node.attr("alpha", 1.0))]


@handler("Softplus")
def _softplus(node: Node) -> list[Value]:
    return [apply("softplus", node.tensor(0), beta=1.0, threshold=20.0)]


@handler("Gelu")
def _gelu(node: Node) -> list[Value]:
    approx = node.attr("approximate", "none")
    if approx not in ("none", "tanh"):
        raise node.error(f"approximate must be 'none' or 'tanh', got {approx!r}")
    return [apply("gelu", node.tensor(0), approximate=approx)]


@handler("Clip")
def _clip(node: Node) -> list[Value]:
    x = node.tensor(0)
    lo, hi = node.input(1), node.input(2)
    y = x
    if lo is not None and isinstance(lo, Tensor) and lo._tracer is not None:
        y = apply("maximum", y, lo)
        lo = None
    if hi is not None and isinstance(hi, Tensor) and hi._tracer is not None:
        hi_t = hi
        hi = None
    else:
        hi_t = None

    def scalar(v: Value) -> Any:
        if v is None:
            return None
        a = np.asarray(as_tensor(v)._data)
        if a.size != 1:
            raise node.error(f"min/max must be scalars, got shape {list(a.shape)}")
        return a.reshape(()).item()

    lo_v, hi_v = scalar(lo), scalar(hi)
    if lo_v is not None and hi_v is not None and y.dtype.is_floating_point and lo_v <= hi_v:
        # as graphc.nn's ReLU6 / Hardtanh: the op a convolution's epilogue takes (MobileNet's Conv + Clip(0, 6))
        y = apply("hardtanh", y, min_val=float(lo_v), max_val=float(hi_v))
    elif lo_v is not None or hi_v is not None:
        y = apply("clamp", y, min=lo_v, max=hi_v)
    if hi_t is not None:
        y = apply("minimum", y, hi_t)
    if y is x and x._tracer is not None:
        y = apply("identity", x)
    return [y]


@handler("Identity", "Dropout")
def _identity(node: Node) -> list[Value]:
    v = node.input(0)
    if node.op_type == "Dropout":
        training = node.static(2, "training_mode")
        if training is not None and bool(np.asarray(training).reshape(-1)[0]):
            raise node.unsupported("training_mode=True (graphc compiles inference graphs)")
        if node.n_outputs > 1 and node.outputs_used[1]:
            x = as_tensor(v, node)
            mask = apply("full", shape=tuple(x.shape), value=True, dtype=D.bool_) if x._tracer is not None else \
                Tensor._wrap(np.ones(tuple(x.shape), dtype=bool))
            return [_identity_value(v), mask]
    return [_identity_value(v)]


def _identity_value(v: Value) -> Value:
    if isinstance(v, Tensor) and v._tracer is not None:
        return apply("identity", v)
    return v


@handler("Cast", "CastLike")
def _cast_node(node: Node) -> list[Value]:
    if node.op_type == "Cast":
        dt = graphc_dtype(node.attr("to"), f"{node.where}: attribute 'to'")
    else:
        dt = node.tensor(1).dtype
    v = node.input(0)
    if isinstance(v, SymArray):
        if dt.is_floating_point or dt is D.bool_:
            return [as_tensor(v, node).to(dt) if not _has_sym(v.arr) else _raise(node.unsupported(
                f"a cast of the dynamic dims {v.arr.tolist()} to {dt}"))]
        return [SymArray(v.arr, dt)]
    x = node.tensor(0)
    if x.dtype is dt:
        return [_identity_value(x)]
    return [apply("cast", x, dtype=dt)]


def _raise(e: Exception) -> Any:
    raise e


@handler("Constant")
def _constant(node: Node) -> list[Value]:
    a = node.proto.attribute[0] if node.proto.attribute else None
    if a is None:
        raise node.error("has no value attribute")
    name = a.name
    v = node.attrs[name]
    if name == "value":
        graphc_dtype(a.t.data_type, node.where)
        arr = np.asarray(v)
    elif name == "value_float":
        arr = np.asarray(v, dtype=np.float32)
    elif name == "value_floats":
        arr = np.asarray(v, dtype=np.float32)
    elif name == "value_int":
        arr = np.asarray(v, dtype=np.int64)
    elif name == "value_ints":
        arr = np.asarray(v, dtype=np.int64)
    else:
        raise node.unsupported(f"a Constant given by '{name}' (graphc takes value, value_float(s), value_int(s))")
    return [Tensor._wrap(np.asarray(arr, order="C"))]


@handler("Shape")
def _shape_node(node: Node) -> list[Value]:
    v = node.input(0)
    shape = list(_shape(v))
    n = len(shape)
    start = node.attr("start", 0)
    end = node.attr("end", n)
    start = min(max(start + n if start < 0 else start, 0), n)
    end = min(max(end + n if end < 0 else end, 0), n)
    dims = shape[start:end] if start < end else []
    return [_wrap_static(np.asarray(dims, dtype=object).reshape(len(dims)), D.int64)]


@handler("Size")
def _size(node: Node) -> list[Value]:
    n: Any = 1
    for d in _shape(node.input(0)):
        n = n * d
    return [_wrap_static(np.asarray(n, dtype=object), D.int64)]


@handler("ConstantOfShape")
def _constant_of_shape(node: Node) -> list[Value]:
    shape = node.ints(0, "shape")
    value = node.attr("value")
    if value is None:
        value = np.zeros(1, dtype=np.float32)
    value = np.asarray(value)
    dt = D.from_numpy_dtype(value.dtype)
    fill = value.reshape(-1)[0].item()
    if all(is_static(d) for d in shape):
        return [Tensor._wrap(np.full(tuple(shape), fill, dtype=dt.np))]
    return [apply("full", shape=tuple(shape), value=fill, dtype=dt)]


@handler("Range")
def _range(node: Node) -> list[Value]:
    start, limit, delta = (node.static(i, n) for i, n in enumerate(("start", "limit", "delta")))
    dt = node.input(0).dtype if not isinstance(node.input(0), SymArray) else D.int64
    s, li, de = (np.asarray(a).reshape(()).item() if np.asarray(a).dtype != object else np.asarray(a).reshape(()).item()
                 for a in (start, limit, delta))
    if isinstance(li, Sym) or isinstance(s, Sym) or isinstance(de, Sym):
        if s == 0 and de == 1 and isinstance(li, Sym):
            return [apply("arange", start=0, end=li, step=1, dtype=dt)]
        raise node.unsupported("a range with a dynamic start or step, or a dynamic limit with start != 0 or "
                               "delta != 1")
    # ONNX: n = max(ceil((limit - start) / delta), 0) elements start + i * delta, computed in the input type
    n = max(int(math.ceil((li - s) / de)), 0)
    arr = (np.asarray(s, dtype=dt.np) + np.arange(n).astype(dt.np) * np.asarray(de, dtype=dt.np)).astype(dt.np)
    return [Tensor._wrap(arr)]


def _reshape_target(node: Node, in_shape: Sequence[Any], shape: list, allowzero: bool) -> list:
    out = []
    minus = -1
    for i, s in enumerate(shape):
        if not isinstance(s, Sym) and s == 0 and not allowzero:
            if i >= len(in_shape):
                raise node.error(f"shape {shape}: a 0 at position {i} copies a dim the {len(in_shape)}-d input "
                                 "does not have")
            out.append(in_shape[i])
        elif not isinstance(s, Sym) and s == -1:
            if minus >= 0:
                raise node.error(f"shape {shape} has more than one -1")
            minus = i
            out.append(-1)
        else:
            out.append(s)
    if minus >= 0:
        total: Any = 1
        for d in in_shape:
            total = total * d
        known: Any = 1
        for i, d in enumerate(out):
            if i != minus:
                known = known * d
        q = exact_div(total, known) if not (is_static(total) and is_static(known)) else (
            total // known if known and total % known == 0 else None)
        if q is None:
            raise node.error(f"cannot reshape {[str(d) for d in in_shape]} to {[str(d) for d in shape]}")
        out[minus] = q
    return out


@handler("Reshape")
def _reshape_node(node: Node) -> list[Value]:
    v = node.input(0)
    shape = node.ints(1, "shape")
    target = _reshape_target(node, _shape(v), shape, bool(node.attr("allowzero", 0)))
    if isinstance(v, SymArray):
        return [SymArray(v.arr.reshape([int(d) for d in target]), v.dtype)]
    _check_pinned(node, _shape(v), target)
    return [_reshape(node.tensor(0), target)]


def _check_pinned(node: Node, in_shape: Sequence[Any], target: Sequence[Any]) -> None:
    """A reshape whose element counts agree only at one value of a dynamic dim: an exporter folded that
    size to the example input's value (torch.onnx's TorchScript tracer does so in multi-head attention),
    so the model holds for that value alone. The error says which, and how to import it."""
    total, want = _prod(in_shape), _prod(target)
    if total == want or is_static(total):
        return
    for name in total.symbols:
        rest = exact_div(total, Sym.var(name))
        value = None if rest is None else exact_div(want, rest)
        if value is not None and is_static(value):
            raise node.unsupported(
                f"it reshapes {[str(d) for d in in_shape]} to {[str(d) for d in target]}, which holds only for "
                f"{name} = {value}: the model was exported with that size folded to a constant, so it runs at "
                f"{name} = {value} alone (as in onnxruntime); import it with dims={{'{name}': {value}}}, or export "
                "it again at the size you need")


@handler("Flatten")
def _flatten(node: Node) -> list[Value]:
    x = node.tensor(0)
    axis = node.attr("axis", 1)
    n = x.ndim
    if not -n <= axis <= n:
        raise node.error(f"axis {axis} out of range for a {n}-d input")
    axis = axis + n if axis < 0 else axis
    a: Any = 1
    for d in x.shape[:axis]:
        a = a * d
    b: Any = 1
    for d in x.shape[axis:]:
        b = b * d
    return [_reshape(x, (a, b))]


@handler("Transpose")
def _transpose(node: Node) -> list[Value]:
    x = node.tensor(0)
    perm = node.attr("perm", list(range(x.ndim))[::-1])
    if sorted(perm) != list(range(x.ndim)):
        raise node.error(f"perm {perm} is not a permutation of the {x.ndim} dims")
    if perm == list(range(x.ndim)):
        return [_identity_value(x)]
    return [apply("permute", x, dims=tuple(perm))]


def _axes(node: Node, input_index: int, attr: str = "axes") -> list[int] | None:
    """Axes from input input_index (newer opsets) or from the attribute (older ones)."""
    if attr in node.attrs:
        return list(node.attrs[attr])
    ax = node.ints(input_index, "axes")
    return ax


@handler("Unsqueeze")
def _unsqueeze(node: Node) -> list[Value]:
    v = node.input(0)
    axes = _axes(node, 1)
    if axes is None:
        raise node.error("needs axes")
    shape = list(_shape(v))
    n = len(shape) + len(axes)
    norm = sorted(a + n if a < 0 else a for a in axes)
    if len(set(norm)) != len(norm) or any(not 0 <= a < n for a in norm):
        raise node.error(f"axes {axes} invalid for an output of {n} dims")
    for a in norm:
        shape.insert(a, 1)
    if isinstance(v, SymArray):
        return [SymArray(v.arr.reshape(shape), v.dtype)]
    return [_reshape(node.tensor(0), shape)]


@handler("Squeeze")
def _squeeze(node: Node) -> list[Value]:
    v = node.input(0)
    shape = list(_shape(v))
    axes = _axes(node, 1)
    if axes is None:
        axes = [i for i, d in enumerate(shape) if is_static(d) and d == 1]
    norm = {_norm_axis(node, a, len(shape)) for a in axes}
    for a in norm:
        if not (is_static(shape[a]) and shape[a] == 1):
            raise node.error(f"cannot squeeze dim {a} of size {shape[a]}")
    out = [d for i, d in enumerate(shape) if i not in norm]
    if isinstance(v, SymArray):
        return [SymArray(v.arr.reshape(out), v.dtype)]
    return [_reshape(node.tensor(0), out)]


@handler("Concat")
def _concat(node: Node) -> list[Value]:
    vals = [v for v in node.inputs if v is not None]
    axis = node.attr("axis")
    if axis is None:
        raise node.error("needs the attribute axis")
    nd = len(_shape(vals[0]))
    ax = _norm_axis(node, axis, nd)
    if any(isinstance(v, SymArray) for v in vals) and all(isinstance(v, SymArray) or v._tracer is None
                                                          for v in vals):
        arrs = [node.static(i, "a shape value") for i, v in enumerate(node.inputs) if v is not None]
        return [_np_on_static(node, lambda *a: np.concatenate([np.asarray(x, dtype=object) for x in a], axis=ax),
                              *arrs)]
    ts = [as_tensor(v, node, i) for i, v in enumerate(vals)]
    ts = [t for t in ts if not (is_static(t.shape[ax]) and t.shape[ax] == 0)] or ts[:1]
    if len(ts) == 1:
        return [_identity_value(ts[0])]
    return [apply("concat", *ts, dim=ax)]


@handler("Split")
def _split(node: Node) -> list[Value]:
    x = node.tensor(0)
    ax = _norm_axis(node, node.attr("axis", 0), x.ndim)
    size = x.shape[ax]
    sizes = node.ints(1, "split") if "split" not in node.attrs else list(node.attrs["split"])
    n = node.n_outputs
    if sizes is None:
        if not is_static(size):
            raise node.unsupported(f"splitting the dynamic dim {size} into equal parts")
        num = node.attr("num_outputs", n)
        chunk = -(-int(size) // num)
        sizes = [min(chunk, int(size) - i * chunk) for i in range(num)]
    if len(sizes) != n:
        raise node.error(f"split gives {len(sizes)} sizes for {n} outputs")
    outs, start = [], 0
    for s in sizes:
        outs.append(apply("slice", x, dim=ax, start=start, end=start + s, step=1))
        start = start + s
    return outs


def _clamp_index(v: Any, size: Any, lo: int, hi_off: int) -> Any:
    """ONNX Slice's clamping of start/end to [lo, size + hi_off] after adding size to negatives."""
    if isinstance(size, Sym) or isinstance(v, Sym):
        if isinstance(v, Sym):
            return v
        if v >= 2**31 - 1 or v >= 2**62:
            return size + hi_off
        if v < 0:
            return size + v
        return v
    if v < 0:
        v += size
    return min(max(v, lo), size + hi_off)


@handler("Slice")
def _slice(node: Node) -> list[Value]:
    v = node.input(0)
    shape = list(_shape(v))
    if "starts" in node.attrs:
        raise node.unsupported("Slice with starts/ends attributes (opset < 10)")
    starts = node.ints(1, "starts")
    ends = node.ints(2, "ends")
    axes = node.ints(3, "axes")
    steps = node.ints(4, "steps")
    if axes is None:
        axes = list(range(len(starts)))
    if steps is None:
        steps = [1] * len(starts)
    bounds_static = all(is_static(b) for b in starts + ends)
    if bounds_static and (isinstance(v, SymArray) or (isinstance(v, Tensor) and v._tracer is None)):
        arr = node.static(0, "data")
        idx = [slice(None)] * arr.ndim
        for s, e, a, st in zip(starts, ends, axes, steps):
            a = _norm_axis(node, a, arr.ndim)
            size = arr.shape[a]
            if st > 0:
                s2, e2 = _clamp_index(s, size, 0, 0), _clamp_index(e, size, 0, 0)
            else:
                s2, e2 = _clamp_index(s, size, 0, -1), _clamp_index(e, size, -1, -1)
                e2 = None if e2 < 0 else e2
            idx[a] = slice(s2, e2, st)
        out = arr[tuple(idx)]
        return [_wrap_static(np.asarray(out), v.dtype)]
    x = node.tensor(0)
    y = x
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = _norm_axis(node, a, x.ndim)
        size = shape[a]
        if st == 0:
            raise node.error("a step of 0")
        if st > 0:
            s2, e2 = _clamp_index(s, size, 0, 0), _clamp_index(e, size, 0, 0)
            if is_static(s2) and is_static(e2) and e2 < s2:
                e2 = s2
            if s2 == 0 and e2 == size and st == 1:
                continue
            y = apply("slice", y, dim=a, start=s2, end=e2, step=st)
        else:
            if not is_static(size):
                raise node.unsupported(f"a negative step over the dynamic dim {size}")
            s2, e2 = _clamp_index(s, size, 0, -1), _clamp_index(e, size, -1, -1)
            index = np.arange(s2, e2, st, dtype=np.int64)
            y = apply("index_select", y, Tensor._wrap(index), dim=a)
    if y is x:
        y = _identity_value(x)
    return [y]


@handler("Gather")
def _gather(node: Node) -> list[Value]:
    v = node.input(0)
    axis = _norm_axis(node, node.attr("axis", 0), len(_shape(v)))
    idx_v = node.input(1)
    if (isinstance(v, SymArray) or v._tracer is None) and (isinstance(idx_v, SymArray) or idx_v._tracer is None):
        arr, idx = node.static(0, "data"), np.asarray(node.static(1, "indices"))
        if idx.dtype == object:
            raise node.unsupported("gather at dynamic indices")
        return [_np_on_static(node, lambda a, i: np.take(a, i.astype(np.int64), axis=axis), arr, idx)]
    x = node.tensor(0)
    idx = node.tensor(1)
    size = x.shape[axis]
    if idx._tracer is None:
        raw = idx._data.astype(np.int64)
        if is_static(size):
            if raw.size and (raw.min() < -size or raw.max() >= size):
                raise node.error(f"index out of range for a dim of size {size}")
            idx = Tensor._wrap(np.where(raw < 0, raw + int(size), raw))
        elif (raw < 0).any():
            raise node.unsupported("negative constant indices into a dynamic dim")
        else:
            idx = Tensor._wrap(raw)
    else:
        if idx.dtype not in (D.int64, D.int32):
            idx = _cast(idx, D.int64)
        if is_static(size):
            idx = apply("where", apply("lt", idx, _scalar(0, idx)), apply("add", idx, _scalar(int(size), idx)), idx)
    ishape = list(idx.shape)
    out_shape = list(x.shape[:axis]) + ishape + list(x.shape[axis + 1:])
    if idx._tracer is None and idx._data.size == 1 and is_static(size):
        # one constant index (torch.onnx's q/k/v split of a fused projection: Gather(qkv, 0/1/2)) is a slice,
        # a view the passes can fold (into the attention kernel's strides, say) where an index_select copies
        i = int(idx._data.reshape(()))
        return [_reshape(apply("slice", x, dim=axis, start=i, end=i + 1, step=1), out_shape)]
    if axis == 0 and x.ndim == 2 and x.dtype.is_floating_point:
        return [apply("embedding", idx, x)]
    flat = _reshape(idx, (math.prod(ishape) if all(is_static(d) for d in ishape) else _prod(ishape),))
    y = apply("index_select", x, flat, dim=axis)
    return [_reshape(y, out_shape)]


@handler("CumSum")
def _cumsum(node: Node) -> list[Value]:
    """graphc's cumsum along axis; reverse flips before and after, exclusive shifts the sums by one
    (a zero first, the last sum dropped: exact, unlike subtracting x). Integers accumulate in int64 and
    are cast back, which wraps as ONNX's int32 sum does."""
    from ..functions import flip

    x = node.tensor(0)
    ax = node.ints(1, "axis")
    if ax is None or len(ax) != 1 or isinstance(ax[0], Sym):
        raise node.error(f"axis must be one integer, got {ax}")
    if x.ndim == 0:
        raise node.error("the input must have at least one dim")
    axis = _norm_axis(node, ax[0], x.ndim)
    y = flip(x, [axis]) if node.attr("reverse", 0) else x
    y = apply("cumsum", y, dim=axis)
    if node.attr("exclusive", 0):
        y = apply("pad", y, pads=(0, 0) * (x.ndim - 1 - axis) + (1, -1), value=0.0)
    if node.attr("reverse", 0):
        y = flip(y, [axis])
    return [_cast(y, x.dtype)]


@handler("TopK")
def _topk(node: Node) -> list[Value]:
    """The k largest (largest=1) or smallest values along axis and their int64 indices, sorted (also for
    sorted=0, whose order ONNX leaves open); equal values in index order, as ONNX asks."""
    x = node.tensor(0)
    k = node.ints(1, "K") if node.input(1) is not None else [node.attr("k")]
    if not k or len(k) != 1 or k[0] is None:
        raise node.error(f"K must be one integer, got {k}")
    if isinstance(k[0], Sym):
        raise node.unsupported("a K given by a dynamic dim (the output shape must be known when the graph is built)")
    if x.ndim == 0:
        raise node.error("the input must have at least one dim")
    axis = _norm_axis(node, node.attr("axis", -1), x.ndim)
    n = x.shape[axis]
    if k[0] < 0 or (is_static(n) and k[0] > n):
        raise node.error(f"K={k[0]} is out of range for axis {axis} of size {n}")
    idx = apply("argsort", x, dim=axis, descending=bool(node.attr("largest", 1)), k=int(k[0]))
    return [apply("gather", x, idx, dim=axis), idx]


@handler("GatherElements")
def _gather_elements(node: Node) -> list[Value]:
    x, idx = node.tensor(0), node.tensor(1)
    axis = _norm_axis(node, node.attr("axis", 0), x.ndim)
    if idx.dtype not in (D.int64, D.int32):
        raise node.error(f"indices must be int32 or int64, got {idx.dtype}")
    idx = _cast(idx, D.int64)
    size = x.shape[axis]
    if idx._tracer is None:
        raw = idx._data
        if (raw < 0).any():
            if not is_static(size):
                raise node.unsupported("negative constant indices into a dynamic dim")
            idx = Tensor._wrap(np.where(raw < 0, raw + int(size), raw))
    elif is_static(size):
        idx = apply("where", apply("lt", idx, _scalar(0, idx)), apply("add", idx, _scalar(int(size), idx)), idx)
    return [apply("gather", x, idx, dim=axis)]


def _prod(dims: Sequence[Any]) -> Any:
    p: Any = 1
    for d in dims:
        p = p * d
    return p


def _broadcast(node: Node, a: Sequence[Any], b: Sequence[Any]) -> list:
    n = max(len(a), len(b))
    a = [1] * (n - len(a)) + list(a)
    b = [1] * (n - len(b)) + list(b)
    out = []
    for x, y in zip(a, b):
        if is_static(x) and x == 1:
            out.append(y)
        elif is_static(y) and y == 1:
            out.append(x)
        elif x == y:
            out.append(x)
        else:
            raise node.error(f"shapes {[str(d) for d in a]} and {[str(d) for d in b]} do not broadcast")
    return out


@handler("Expand")
def _expand(node: Node) -> list[Value]:
    x = node.tensor(0)
    shape = node.ints(1, "shape")
    out = _broadcast(node, x.shape, shape)
    if x.ndim < len(out):
        x = _reshape(x, [1] * (len(out) - x.ndim) + list(x.shape))
    if list(x.shape) == out:
        return [_identity_value(x)]
    if x._tracer is None and all(is_static(d) for d in out):
        return [Tensor._wrap(np.asarray(np.broadcast_to(x._data, tuple(out)), order="C"))]
    return [apply("expand", x, shape=tuple(out))]


@handler("Where")
def _where(node: Node) -> list[Value]:
    sym = _sym_op(node)
    if sym is not None:
        return sym
    c, a, b = node.tensor(0), node.tensor(1), node.tensor(2)
    return [apply("where", _cast(c, D.bool_), a, b)]


_REDUCE = {"ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "amax", "ReduceMin": "amin",
           "ReduceProd": "prod"}
_EMPTY_REDUCTION = {"ReduceSum": 0, "ReduceMean": math.nan, "ReduceMax": -math.inf, "ReduceMin": math.inf,
                    "ReduceProd": 1}


@handler(*_REDUCE)
def _reduce(node: Node) -> list[Value]:
    x = node.tensor(0)
    keep = bool(node.attr("keepdims", 1))
    axes = _axes(node, 1)
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return [_identity_value(x)]
        axes = list(range(x.ndim))
    dims = tuple(sorted({_norm_axis(node, a, x.ndim) for a in axes}))
    if x.ndim == 0:
        return [_identity_value(x)]
    empty = any(is_static(x.shape[d]) and x.shape[d] == 0 for d in dims)
    if empty:
        shape = [1 if i in dims else s for i, s in enumerate(x.shape) if keep or i not in dims]
        fill = _EMPTY_REDUCTION[node.op_type]
        if not x.dtype.is_floating_point and not math.isfinite(fill):
            info = np.iinfo(x.dtype.np) if x.dtype is not D.bool_ else None
            fill = (info.min if fill < 0 else info.max) if info is not None else (fill > 0)
        if all(is_static(d) for d in shape):
            return [Tensor._wrap(np.full(tuple(shape), fill, dtype=x.dtype.np))]
        return [apply("full", shape=tuple(shape), value=fill, dtype=x.dtype)]
    src = x
    if x.dtype is D.bool_ and node.op_type in ("ReduceMax", "ReduceMin"):
        src = _cast(x, D.uint8)
    y = apply(_REDUCE[node.op_type], src, dims=dims, keepdim=keep)
    return [_cast(y, x.dtype)]


@handler("Softmax", "LogSoftmax")
def _softmax(node: Node) -> list[Value]:
    x = node.tensor(0)
    axis = _norm_axis(node, node.attr("axis", -1), x.ndim)
    return [apply("softmax" if node.op_type == "Softmax" else "log_softmax", x, dim=axis)]


@handler("MatMul")
def _matmul(node: Node) -> list[Value]:
    a, b = node.tensor(0), node.tensor(1)
    return [apply("matmul", a, b)]


@handler("Gemm")
def _gemm(node: Node) -> list[Value]:
    a, b = node.tensor(0), node.tensor(1)
    c = node.input(2)
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    if a.ndim != 2 or b.ndim != 2:
        raise node.error(f"A and B must be 2-d, got {list(a.shape)} and {list(b.shape)}")
    if node.attr("transA", 0):
        a = apply("permute", a, dims=(1, 0))
    ct = None if c is None else node.tensor(2)
    n_out = b.shape[0] if node.attr("transB", 0) else b.shape[1]
    vector_bias = ct is not None and alpha == 1.0 and beta == 1.0 and ct.ndim == 1 and ct.shape[0] == n_out
    if node.attr("transB", 0):
        y = apply("linear", a, b, ct if vector_bias else None)
    else:
        y = apply("matmul", a, b)
        if vector_bias:
            y = apply("add", y, ct)
    if alpha != 1.0:
        y = apply("mul", y, _scalar(alpha, y))
    if ct is not None and not vector_bias and beta != 0.0:
        y = apply("add", y, ct if beta == 1.0 else apply("mul", ct, _scalar(beta, ct)))
    return [y]


def _spatial_attrs(node: Node, nsp: int, kernel: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    strides = list(node.attr("strides", [1] * nsp))
    dil = list(node.attr("dilations", [1] * nsp))
    pads = list(node.attr("pads", [0] * (2 * nsp)))
    if len(strides) != nsp or len(dil) != nsp or len(pads) != 2 * nsp or len(kernel) != nsp:
        raise node.error(f"kernel {list(kernel)}, strides {strides}, dilations {dil} and pads {pads} do not fit "
                         f"{nsp} spatial dims")
    return strides, dil, pads


def _auto_pads(node: Node, in_sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
               dil: Sequence[int], pads: list[int]) -> list[int]:
    """pads [b0, b1, ..., e0, e1, ...] after auto_pad (SAME_UPPER / SAME_LOWER / VALID / NOTSET)."""
    mode = node.attr("auto_pad", "NOTSET")
    nsp = len(kernel)
    if mode in ("NOTSET", ""):
        return pads
    if mode == "VALID":
        return [0] * (2 * nsp)
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        raise node.error(f"auto_pad {mode!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    out = [0] * (2 * nsp)
    for i in range(nsp):
        o = -(-in_sizes[i] // strides[i])
        total = max(0, (o - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - in_sizes[i])
        small, big = total // 2, total - total // 2
        out[i], out[nsp + i] = (small, big) if mode == "SAME_UPPER" else (big, small)
    return out


def _torch_pads(pads: Sequence[int], nsp: int) -> tuple[int, ...]:
    """ONNX [b0, b1, e0, e1] -> graphc's pad op order (last dim first: b_last, e_last, ...)."""
    out: list[int] = []
    for i in reversed(range(nsp)):
        out += [pads[i], pads[nsp + i]]
    return tuple(out)


@handler("Conv")
def _conv(node: Node) -> list[Value]:
    x, w = node.tensor(0), node.tensor(1)
    b = None if node.input(2) is None else node.tensor(2)
    nsp = w.ndim - 2
    if nsp not in (1, 2, 3):
        raise node.unsupported(f"a {nsp}-d convolution (graphc convolves over 1, 2 or 3 spatial dims)")
    kernel = node.attr("kernel_shape", [int(d) for d in w.shape[2:]])
    strides, dil, pads = _spatial_attrs(node, nsp, kernel)
    pads = _auto_pads(node, _static_dims(node, x), kernel, strides, dil, pads)
    group = node.attr("group", 1)
    if pads[:nsp] != pads[nsp:]:
        x = apply("pad", x, pads=_torch_pads(pads, nsp), value=0.0)
        sym = [0] * nsp
    else:
        sym = pads[:nsp]
    if nsp == 3:  # graphc.nn.functional.conv3d: 2-d convolutions per kernel depth tap, summed
        from ..nn import functional as F

        return [F.conv3d(x, w, b, stride=tuple(strides), padding=tuple(sym), dilation=tuple(dil), groups=group)]
    return [apply("conv", x, w, b, stride=tuple(strides), padding=tuple(sym), dilation=tuple(dil), groups=group)]


@handler("ConvTranspose")
def _conv_transpose(node: Node) -> list[Value]:
    x, w = node.tensor(0), node.tensor(1)
    b = None if node.input(2) is None else node.tensor(2)
    nsp = w.ndim - 2
    if nsp not in (1, 2):
        raise node.unsupported(f"a {nsp}-d transposed convolution (graphc's conv_transpose is 1-d or 2-d)")
    kernel = node.attr("kernel_shape", [int(d) for d in w.shape[2:]])
    strides, dil, pads = _spatial_attrs(node, nsp, kernel)
    out_pad = list(node.attr("output_padding", [0] * nsp))
    group = node.attr("group", 1)
    in_sizes = _static_dims(node, x)
    full = [(in_sizes[i] - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 for i in range(nsp)]
    out_shape = node.attr("output_shape")
    mode = node.attr("auto_pad", "NOTSET")
    if out_shape is not None or mode in ("SAME_UPPER", "SAME_LOWER"):
        if out_shape is None:
            out_shape = [in_sizes[i] * strides[i] for i in range(nsp)]
        out_shape = list(out_shape)[-nsp:]
        for i in range(nsp):
            total = full[i] + out_pad[i] - out_shape[i]
            small, big = total // 2, total - total // 2
            # ONNX: SAME_UPPER puts the larger half at the end; otherwise (and with output_shape) at the start
            pads[i], pads[nsp + i] = (small, big) if mode == "SAME_UPPER" else (big, small)
    elif mode == "VALID":
        pads = [0] * (2 * nsp)
    y = apply("conv_transpose", x, w, None, stride=tuple(strides), padding=(0,) * nsp,
              output_padding=(0,) * nsp, dilation=tuple(dil), groups=group)
    # crop the begin pads, crop or zero-extend the end to full + output_padding - end pads
    crop = []
    for i in reversed(range(nsp)):
        crop += [-pads[i], out_pad[i] - pads[nsp + i]]
    if any(crop):
        y = apply("pad", y, pads=tuple(crop), value=0.0)
    if b is not None:
        y = apply("add", y, _reshape(b, [int(b.shape[0])] + [1] * nsp))
    return [y]


def _pool_geometry(node: Node, x: Tensor) -> tuple[int, list[int], list[int], list[int], list[int], bool]:
    nsp = x.ndim - 2
    kernel = node.attr("kernel_shape")
    if kernel is None:
        raise node.error("needs kernel_shape")
    strides, dil, pads = _spatial_attrs(node, nsp, kernel)
    pads = _auto_pads(node, _static_dims(node, x), kernel, strides, dil, pads)
    return nsp, list(kernel), strides, dil, pads, bool(node.attr("ceil_mode", 0))


def _pool_out(n: int, k: int, s: int, d: int, pb: int, pe: int, ceil: bool) -> int:
    """ONNX's output size; with ceil_mode a last window that would start in the end padding is dropped."""
    eff = (k - 1) * d + 1
    num = n + pb + pe - eff
    if ceil:
        o = -(-num // s) + 1
        if (o - 1) * s >= n + pb:
            o -= 1
    else:
        o = num // s + 1
    return o


@handler("MaxPool")
def _max_pool(node: Node) -> list[Value]:
    x = node.tensor(0)
    if node.n_outputs > 1 and node.outputs_used[1]:
        raise node.unsupported("the Indices output of MaxPool")
    if node.attr("storage_order", 0):
        raise node.unsupported("storage_order=1")
    nsp, k, s, d, p, ceil = _pool_geometry(node, x)
    src = x if x.dtype.is_floating_point else _cast(x, D.float32)
    if not x.dtype.is_floating_point and x.dtype not in (D.uint8, D.int8, D.int16):
        raise node.unsupported(f"MaxPool on {x.dtype} (exact through float32 only for 8/16-bit integers)")
    y = _pool_nd(node, src, nsp, k, s, d, p, ceil, "max")
    return [_cast(y, x.dtype)]


@handler("AveragePool")
def _avg_pool(node: Node) -> list[Value]:
    x = node.tensor(0)
    nsp, k, s, d, p, ceil = _pool_geometry(node, x)
    return [_pool_nd(node, x, nsp, k, s, d, p, ceil, "avg", bool(node.attr("count_include_pad", 0)))]


def _pool_nd(node: Node, x: Tensor, nsp: int, k: list[int], s: list[int], d: list[int], p: list[int],
             ceil: bool, kind: str, include_pad: bool = False) -> Tensor:
    """Max / average pooling over 1-3 spatial dims with graphc's 2-d pools: 1-d as 2-d with a unit first
    dim, 3-d as a pool over (H, W) then one over D (both pools are separable: the max of maxes, and the
    count of valid cells of a 3-d window is the product of the per-dim counts)."""
    if nsp == 1:
        x2 = _reshape(x, [x.shape[0], x.shape[1], 1, x.shape[2]])
        y = _pool2d(node, x2, [1, k[0]], [1, s[0]], [1, d[0]], [0, p[0], 0, p[1]], ceil, kind, include_pad)
        return _reshape(y, [y.shape[0], y.shape[1], y.shape[3]])
    if nsp == 2:
        return _pool2d(node, x, k, s, d, p, ceil, kind, include_pad)
    if nsp == 3:
        n, c, dd, h, w = x.shape
        y = _pool2d(node, _reshape(x, [n, c * dd, h, w]), k[1:], s[1:], d[1:], [p[1], p[2], p[4], p[5]], ceil, kind,
                    include_pad)
        oh, ow = y.shape[2], y.shape[3]
        y = _reshape(y, [n, c, dd, oh * ow])
        y = _pool2d(node, y, [k[0], 1], [s[0], 1], [d[0], 1], [p[0], 0, p[3], 0], ceil, kind, include_pad)
        return _reshape(y, [n, c, y.shape[2], oh, ow])
    raise node.unsupported(f"pooling over {nsp} spatial dims (graphc pools 1-3)")


def _pool2d(node: Node, x: Tensor, k: list[int], s: list[int], d: list[int], p: list[int], ceil: bool, kind: str,
            include_pad: bool) -> Tensor:
    """A 2-d pool with ONNX semantics: graphc's own op when its (PyTorch) rules coincide with ONNX's,
    else explicit padding and, for averages, a depthwise convolution by a window of ones."""
    h, w = _static_dims(node, x)
    out = [_pool_out(n, k[i], s[i], d[i], p[i], p[2 + i], ceil) for i, n in enumerate((h, w))]
    if min(out) < 1:
        raise node.error(f"the pool's output would be empty ({out}) for input {[h, w]}")
    symmetric = p[0] == p[2] and p[1] == p[3] and all(p[i] <= k[i] // 2 for i in range(2))
    # how much padding the windows need at the end (ceil_mode windows may reach past the end padding)
    need = [(out[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 for i in range(2)]
    extra = [max(0, need[i] - ((h, w)[i] + p[i] + p[2 + i])) for i in range(2)]
    if kind == "max":
        if symmetric and not any(extra):
            return apply("max_pool2d", x, kernel=tuple(k), stride=tuple(s), padding=(p[0], p[1]), dilation=tuple(d),
                         ceil_mode=False)
        lowest = float(np.finfo(x.dtype.np).min) if x.dtype is not D.bfloat16 else -3.38e38
        xp = apply("pad", x, pads=(p[1], p[3] + extra[1], p[0], p[2] + extra[0]), value=lowest)
        return apply("max_pool2d", xp, kernel=tuple(k), stride=tuple(s), padding=(0, 0), dilation=tuple(d),
                     ceil_mode=False)
    if symmetric and not any(extra) and d == [1, 1]:
        return apply("avg_pool2d", x, kernel=tuple(k), stride=tuple(s), padding=(p[0], p[1]), ceil_mode=False,
                     count_include_pad=include_pad, divisor_override=None)
    # sum by a depthwise convolution of ones over x padded with zeros, divided by the count of the cells
    # counted (inside the input, or inside input + pads with count_include_pad)
    n, c = x.shape[0], x.shape[1]
    pads = (p[1], p[3] + extra[1], p[0], p[2] + extra[0])
    ones = Tensor._wrap(np.ones((1, 1, k[0], k[1]), dtype=x.dtype.np))
    xs = _reshape(x, [n * c, 1, h, w])
    total = apply("conv", apply("pad", xs, pads=pads, value=0.0), ones, None, stride=tuple(s), padding=(0, 0),
                  dilation=tuple(d), groups=1)
    mask = np.zeros((1, 1, h + p[0] + p[2] + extra[0], w + p[1] + p[3] + extra[1]), dtype=x.dtype.np)
    if include_pad:
        mask[..., : h + p[0] + p[2], : w + p[1] + p[3]] = 1
    else:
        mask[..., p[0]: p[0] + h, p[1]: p[1] + w] = 1
    count = apply("conv", Tensor._wrap(mask), ones, None, stride=tuple(s), padding=(0, 0), dilation=tuple(d),
                  groups=1)
    y = apply("div", total, count)
    return _reshape(y, [n, c, out[0], out[1]])


@handler("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(node: Node) -> list[Value]:
    x = node.tensor(0)
    dims = tuple(range(2, x.ndim))
    if node.op_type == "GlobalAveragePool" and x.ndim == 4 and x.dtype.is_floating_point and all(
            is_static(d) and d > 0 for d in x.shape[2:]):
        # graphc.nn's AdaptiveAvgPool2d(1): the op a convolution before it takes into its epilogue
        return [apply("adaptive_avg_pool2d", x, output_size=(1, 1))]
    return [apply("mean" if node.op_type == "GlobalAveragePool" else "amax", x, dims=dims, keepdim=True)]


@handler("BatchNormalization")
def _batch_norm(node: Node) -> list[Value]:
    if node.attr("training_mode", 0):
        raise node.unsupported("training_mode=1 (graphc compiles inference graphs: running statistics only)")
    if node.n_outputs > 1 and any(node.outputs_used[1:]):
        raise node.unsupported("the running mean / variance outputs (training mode)")
    x, scale, bias, mean, var = (node.tensor(i) for i in range(5))
    return [apply("batch_norm", x, mean, var, scale, bias, eps=node.attr("epsilon", 1e-5))]


@handler("LayerNormalization")
def _layer_norm(node: Node) -> list[Value]:
    x = node.tensor(0)
    scale = node.tensor(1)
    bias = None if node.input(2) is None else node.tensor(2)
    axis = _norm_axis(node, node.attr("axis", -1), x.ndim)
    eps = node.attr("epsilon", 1e-5)
    if node.attr("stash_type", 1) != 1:
        raise node.unsupported(f"stash_type {node.attr('stash_type')} (graphc normalises in float32)")
    normalized = list(x.shape[axis:])
    k = x.ndim - axis

    def full_shape(t: Tensor | None) -> Tensor | None:
        if t is None:
            return None
        if list(t.shape) == normalized:
            return t
        if t._tracer is None and all(is_static(dd) for dd in normalized):
            b = np.broadcast_to(t._data, tuple(normalized))
            return Tensor._wrap(np.asarray(b, order="C"))
        return apply("expand", _reshape(t, [1] * (k - t.ndim) + list(t.shape)), shape=tuple(normalized))

    outs: list[Value] = [apply("layer_norm", x, full_shape(scale), full_shape(bias), ndim=k, eps=eps)]
    if node.n_outputs > 1:
        dims = tuple(range(axis, x.ndim))
        xf = _cast(x, D.float32)
        mean = apply("mean", xf, dims=dims, keepdim=True)
        outs.append(mean)
        if node.n_outputs > 2:
            var = apply("var", xf, dims=dims, keepdim=True, correction=0)
            outs.append(apply("rsqrt", apply("add", var, _scalar(eps, var))))
    return outs


@handler("Tile")
def _tile(node: Node) -> list[Value]:
    x = node.tensor(0)
    reps = node.ints(1, "repeats")
    if x._tracer is None:
        return [Tensor._wrap(np.tile(x._data, reps))]
    y = x
    # tile = expand on an added dim before each dim, then merge them
    shape = []
    for dsz in x.shape:
        shape += [1, dsz]
    y = _reshape(x, shape)
    target = []
    for dsz, r in zip(x.shape, reps):
        target += [r, dsz]
    y = apply("expand", y, shape=tuple(target))
    return [_reshape(y, [r * dsz for dsz, r in zip(x.shape, reps)])]


@handler("Trilu")
def _trilu(node: Node) -> list[Value]:
    x = node.tensor(0)
    kk = node.ints(1, "k")
    k = 0 if kk is None else kk[0]
    rows, cols = x.shape[-2], x.shape[-1]
    if not (is_static(rows) and is_static(cols)):
        raise node.unsupported("Trilu over dynamic dims")
    r = np.arange(int(rows))[:, None]
    c = np.arange(int(cols))[None, :]
    keep = (c - r >= k) if node.attr("upper", 1) else (c - r <= k)
    if x._tracer is None:
        return [Tensor._wrap(np.where(keep, x._data, np.zeros((), x.dtype.np)))]
    return [apply("where", Tensor._wrap(keep), x, _scalar(0, x))]


# ---------------------------------------------------------------------------------------- importer
def _dim_name(raw: str, taken: set[str]) -> str:
    name = re.sub(r"\W", "_", raw) or "d"
    if name[0].isdigit():
        name = "d" + name
    from ..trace import Dim as _Dim

    try:
        _Dim(name)
    except ValueError:
        name = name + "_"
    return name


def _io_name(raw: str, taken: set[str]) -> str:
    from ..backend.base import sanitize

    base = sanitize(raw) if not raw.isidentifier() else raw
    name, i = base, 1
    while name in taken:
        name = f"{base}_{i}"
        i += 1
    taken.add(name)
    return name


def _scope(raw: str) -> str:
    parts = [p for p in raw.strip("/").split("/") if p]
    if len(parts) > 1:
        parts = parts[:-1]  # torch.onnx names nodes '/module/path/OpType_n'
    s = ".".join(parts)
    return re.sub(r"[^A-Za-z0-9_.]", "_", s)


def _fuse_attention(g: Graph) -> bool:
    """Exporters write scaled dot-product attention as MatMul(q * a, Transpose(k) * b) [/ c] [+ mask] ->
    Softmax(last axis) -> MatMul(., v); each such chain becomes graphc's one ``sdpa`` op (scale a*b/c, the
    additive mask as its mask), as graphc.nn's attention is, so an imported transformer gets the same
    attention kernel. A chain whose shapes sdpa does not take (batch dims that only broadcast) stays. GELU
    written out with Erf becomes graphc's gelu the same way (``gelu`` below)."""
    from ..passes.base import Rewriter, make_node, param_array, producer

    rw = Rewriter(g)

    def scalar(v: IRValue | None) -> float | None:
        a = param_array(g, v)
        if a is None:
            n = producer(v, "constant")
            a = None if n is None else np.asarray(n.attrs.get("value"))
        if a is None or a.size != 1 or a.dtype.kind != "f":
            return None
        return float(np.asarray(a).reshape(()))

    def scaled(v: IRValue) -> tuple[IRValue, float]:
        """v = x * c (either operand order) -> (x, c); else (v, 1)."""
        n = producer(v, "mul")
        if n is not None and rw.uses(v) == 1:
            for i in (0, 1):
                c = scalar(n.inputs[1 - i])
                if c is not None:
                    return n.inputs[i], c
        return v, 1.0

    def close(c: float | None, want: float) -> bool:
        return c is not None and abs(c - want) <= 1e-6 * abs(want)

    def gelu(n: IRNode) -> IRValue | None:
        """x * 0.5 * (1 + erf(x / sqrt(2))), in torch.onnx's order (Mul(Mul(x, Add(Erf(Div(x, 1.414)), 1)),
        0.5)) or with the 0.5 first, is graphc's gelu (which a GEMM's epilogue takes, as graphc.nn's GELU)."""
        for i in (0, 1):
            if not close(scalar(n.inputs[1 - i]), 0.5):
                continue
            inner = producer(n.inputs[i], "mul")
            if inner is None or rw.uses(n.inputs[i]) != 1:
                continue
            for j in (0, 1):
                x, a = inner.inputs[j], inner.inputs[1 - j]
                add = producer(a, "add")
                if add is None or rw.uses(a) != 1:
                    continue
                for m in (0, 1):
                    e = add.inputs[m]
                    erf = producer(e, "erf")
                    if erf is None or not close(scalar(add.inputs[1 - m]), 1.0) or rw.uses(e) != 1:
                        continue
                    dv = producer(erf.inputs[0], ("div", "mul"))
                    if dv is None or dv.inputs[0] is not x or rw.uses(erf.inputs[0]) != 1:
                        continue
                    c = scalar(dv.inputs[1])
                    if (dv.op == "div" and close(c, math.sqrt(2.0))) or (dv.op == "mul" and close(c, math.sqrt(0.5))):
                        node = make_node(g, "gelu", [x], {"approximate": "none"}, like=n)
                        if node.out.type == n.out.type:
                            rw.emit(node)
                            return node.out
        return None

    def visit(n: IRNode) -> IRValue | None:
        if n.op == "mul" and n.out.type.dtype.is_floating_point:
            return gelu(n)
        if n.op != "matmul" or not n.out.type.dtype.is_floating_point:
            return None
        p, v = n.inputs
        sm = producer(p, "softmax")
        if sm is None or rw.uses(p) != 1 or sm.attrs["dim"] != p.type.ndim - 1 or p.type.ndim < 3:
            return None
        scores, mask, scale = sm.inputs[0], None, 1.0
        add = producer(scores, "add")
        if add is not None and rw.uses(scores) == 1:
            for i in (0, 1):
                if producer(add.inputs[i], "matmul") is not None or producer(add.inputs[i], ("mul", "div")):
                    scores, mask = add.inputs[i], add.inputs[1 - i]
                    break
        if rw.uses(scores) != 1:
            return None
        div = producer(scores, ("mul", "div"))
        if div is not None:
            for i in ((0,) if div.op == "div" else (0, 1)):
                c = scalar(div.inputs[1 - i])
                if c is not None and c != 0 and producer(div.inputs[i], "matmul") is not None:
                    scale, scores = (1.0 / c if div.op == "div" else c), div.inputs[i]
                    break
        mm = producer(scores, "matmul")
        if mm is None or rw.uses(scores) != 1:
            return None
        q, sq = scaled(mm.inputs[0])
        kt, sk = scaled(mm.inputs[1])
        perm = producer(kt, "permute")
        nd = kt.type.ndim
        if perm is None or list(perm.attrs["dims"]) != [*range(nd - 2), nd - 1, nd - 2]:
            return None
        k = perm.inputs[0]
        if mask is not None and mask.type.dtype != q.type.dtype:
            return None
        try:
            node = make_node(g, "sdpa", [q, k, v, mask], {"scale": scale * sq * sk, "is_causal": False}, like=n)
        except ShapeError:
            return None
        if node.out.type != n.out.type:
            return None
        rw.emit(node)
        return node.out

    return rw.run(visit)


class Importer:
    """Builds one graphc Graph from one or more ONNX graphs (the conformance runner puts many test cases
    side by side in one graph, each with its own name prefix)."""

    def __init__(self, name: str, dims: Mapping[str, Any] | None = None):
        self.graph = Graph(name)
        self.tracer = _OnnxTracer(self.graph)
        self.dims = dict(dims or {})
        self._io_names: set[str] = set()
        self._dims_used: set[str] = set()

    def _dim(self, raw: str, where: str) -> Sym:
        name = _dim_name(raw, set())
        spec = self.dims.get(raw, self.dims.get(name))
        if spec is None:
            lo, hi = 1, DEFAULT_MAX
        elif isinstance(spec, Dim):
            lo, hi = spec.min, spec.max
        elif isinstance(spec, (tuple, list)) and len(spec) == 2:
            lo, hi = int(spec[0]), int(spec[1])
        elif isinstance(spec, int):
            lo, hi = spec, spec
        else:
            raise ValueError(f"dims[{raw!r}] must be (min, max), a graphc.Dim or an int, got {spec!r}")
        if lo == hi:
            self._dims_used.add(raw)
            return lo  # type: ignore[return-value]
        Dim(name, lo, hi)  # validates the range
        prev = self.graph.dims.get(name)
        if prev is not None and prev != (lo, hi):
            raise ValueError(f"{where}: dynamic dim {name} has two ranges {prev} and {(lo, hi)}")
        self.graph.dims[name] = (lo, hi)
        self._dims_used.add(raw)
        return Sym.var(name)

    def add(self, model: Any, label: str, prefix: str = "",
            constants: Mapping[str, Any] | None = None) -> list[tuple[str, Tensor]]:
        """Import model's graph; returns its outputs (name, value) without setting them on the graph.
        ``constants`` binds graph inputs (by ONNX name) to fixed values, which then fold like initializers."""
        constants = dict(constants or {})
        unknown = set(constants) - {vi.name for vi in model.graph.input}
        if unknown:
            raise ValueError(f"{label}: constants names {sorted(unknown)}, which are not inputs of the model")
        opset = _default_opset(model, label)
        g = model.graph
        env: dict[str, Value] = {}
        inits = {}
        for t in g.initializer:
            arr = _tensor_array(t, f"{label}: initializer '{t.name}'")
            tens = Tensor._wrap(arr)
            self.tracer.param_names[id(tens)] = prefix + t.name
            self.tracer._keep_alive.append(tens)
            inits[t.name] = tens
        if g.sparse_initializer:
            raise UnsupportedError(f"{label}: sparse initializers ({g.sparse_initializer[0].values.name}); see {DOCS}")
        env.update(inits)
        for vi in g.input:
            if vi.name in inits:
                continue
            where = f"{label}: input '{vi.name}'"
            if vi.name in constants:
                arr = np.asarray(constants[vi.name], order="C")
                D.from_numpy_dtype(arr.dtype)
                env[vi.name] = Tensor._wrap(arr)
                continue
            tt = vi.type
            if not tt.HasField("tensor_type"):
                raise UnsupportedError(f"{where} is a {tt.WhichOneof('value')}, not a tensor; see {DOCS}")
            dt = graphc_dtype(tt.tensor_type.elem_type, where)
            if not tt.tensor_type.HasField("shape"):
                raise OnnxImportError(f"{where} has no shape; graphc needs each input's rank")
            shape: list[Any] = []
            for i, d in enumerate(tt.tensor_type.shape.dim):
                if d.HasField("dim_value"):
                    shape.append(int(d.dim_value))
                else:
                    raw = d.dim_param or f"{vi.name}_d{i}"
                    shape.append(self._dim(raw, where))
            v = self.graph.add_input(_io_name(prefix + vi.name, self._io_names), TensorType(tuple(shape), dt))
            env[vi.name] = Tensor._symbolic(v, self.tracer)
        _ACTIVE.append(self.tracer)
        try:
            for proto in g.node:
                self._run_node(proto, env, opset, label, prefix)
        finally:
            _ACTIVE.pop()
        outs = []
        for vi in g.output:
            if vi.name not in env or env[vi.name] is None:
                raise OnnxImportError(f"{label}: graph output '{vi.name}' is not produced by any node")
            v = as_tensor(env[vi.name])
            outs.append((_io_name(prefix + vi.name, self._io_names), v))
        return outs

    def _run_node(self, proto: Any, env: dict[str, Value], opset: int, label: str, prefix: str) -> None:
        if proto.domain not in ("", "ai.onnx"):
            raise UnsupportedError(f"{label}: node '{proto.name or proto.output[0]}' ({proto.op_type}) is in the "
                                   f"domain '{proto.domain}'; graphc imports the default ONNX domain; see {DOCS}")
        inputs: list[Value] = []
        for n in proto.input:
            if not n:
                inputs.append(None)
            elif n not in env:
                raise OnnxImportError(f"{label}: node '{proto.name}' ({proto.op_type}) reads '{n}', which no "
                                      "earlier node or input defines (the graph must be topologically sorted)")
            else:
                inputs.append(env[n])
        node = Node(proto, inputs, opset, label)
        fn = HANDLERS.get(proto.op_type)
        if fn is None:
            raise UnsupportedError(f"{node.where}: graphc has no mapping for the ONNX op {proto.op_type}; "
                                   f"see {DOCS} for the ops graphc imports")
        self.tracer.scope.append(prefix + _scope(node.name))
        self.tracer.loc = f"{proto.op_type} {node.name}"[:120]
        try:
            outs = fn(node)
        except (UnsupportedError, OnnxImportError):
            raise
        except (ShapeError, TraceError, ValueError, IndexError, TypeError) as e:
            raise OnnxImportError(f"{node.where}: {e}") from e
        finally:
            self.tracer.scope.pop()
        if len(outs) < sum(1 for o in proto.output if o):
            raise node.unsupported(f"{len(proto.output)} outputs (graphc produces {len(outs)})")
        for name, v in zip(proto.output, outs):
            if name:
                env[name] = v

    def finish(self, outputs: list[tuple[str, Tensor]]) -> Graph:
        from ..ir.verify import verify

        results = []
        for oname, t in outputs:
            if t._tracer is None:
                results.append((oname, self.tracer.lift(t)))
            else:
                results.append((oname, t._value))
        self.graph.set_outputs(results)
        _fuse_attention(self.graph)
        unknown = set(self.dims) - self._dims_used - {_dim_name(k, set()) for k in self._dims_used}
        if unknown:
            have = ", ".join(sorted(self._dims_used)) or "none: every input dim is static"
            raise ValueError(f"dims names {sorted(unknown)}, which no input of the model has (its symbolic "
                             f"dims: {have})")
        verify(self.graph)
        return self.graph


def _default_opset(model: Any, label: str) -> int:
    opset = None
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            opset = int(imp.version)
    if opset is None:
        raise OnnxImportError(f"{label}: the model imports no version of the default ONNX opset")
    if opset < MIN_OPSET:
        raise UnsupportedError(f"{label}: opset {opset}; graphc imports opset {MIN_OPSET} and later (convert it with "
                               f"onnx.version_converter.convert_version(model, {MIN_OPSET})); see {DOCS}")
    return opset


def _graph_name(model: Any, label: str) -> str:
    from ..backend.base import default_model_name

    base = os.path.splitext(label)[0] if label.endswith(".onnx") else (model.graph.name or label)
    return default_model_name(base)


def from_onnx(model: Any, *, dims: Mapping[str, Any] | None = None, name: str | None = None,
              constants: Mapping[str, Any] | None = None) -> Graph:
    """Import an ONNX model (a path, bytes or an ``onnx.ModelProto``; opset 13 and later) as a graphc Graph,
    ready for :func:`graphc.compile`.

    Initializers become parameters under their ONNX names. Each symbolic input dim (``dim_param``) becomes a
    dynamic dim; ``dims`` gives their ranges, ``{"batch": (1, 64)}`` (default 1..256; a range of one value
    fixes the dim). Input and output names are kept where they are identifiers, else sanitised
    (``input.1`` -> ``input_1``). ``constants`` binds graph inputs (by ONNX name) to fixed arrays: an input
    that gives a shape, axes or slice bounds must be known when the graph is built.
    """
    proto, label = load(model)
    imp = Importer(name or _graph_name(proto, label), dims)
    outs = imp.add(proto, label, constants=constants)
    return imp.finish(outs)
