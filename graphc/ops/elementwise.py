"""Elementwise ops: unary math, binary arithmetic/comparison with broadcasting, where, clamp, cast.

Binary ops require operands of one dtype; the Tensor front end inserts ``cast`` nodes to promote
(PyTorch's rules), so every backend sees uniform types.
"""

from __future__ import annotations

import math

import numpy as np

from .._dtype import bool_, dtype
from ..errors import ShapeError
from .registry import Attr, TensorType, broadcast_shapes, defop, float_only, same_dtype

# --------------------------------------------------------------------------------------------- erf
# numpy has no erf: libm's (math.erf, within an ulp in float64) element by element. A fitted formula
# is not a reference: the Numerical Recipes erfc fit used before had an absolute error near 1e-7, so
# erf(0) was -3e-8 and float32 results near 0 were off by tens of ulps.
_erf = np.frompyfunc(math.erf, 1, 1)


def np_erf(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    out = np.asarray(_erf(x.astype(np.float64)), dtype=np.float64)
    return out.astype(x.dtype, copy=False)


def _f(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Keep the input's dtype (numpy may widen small float types)."""
    return np.asarray(y).astype(x.dtype, copy=False)


def _float_unary(op: str):
    def rule(x: TensorType, **_: object) -> TensorType:
        float_only(op, x)
        return x

    return rule


def _any_unary(op: str):
    def rule(x: TensorType, **_: object) -> TensorType:
        if x.dtype is bool_:
            raise ShapeError(f"{op}: not defined for bool tensors")
        return x

    return rule


def _unary(name: str, fn, scalar: str, *, floating: bool = True, attrs: dict | None = None, **props):
    """An elementwise op of one operand; props are the formula's (defop's integer_scalar, cost, ...)."""
    op = defop(name, ("x",), attrs, family="elementwise", scalar=scalar, **props)(
        (_float_unary if floating else _any_unary)(name))
    op.reference(lambda x, **a: _f(x, fn(x, **a)))
    return op


_unary("neg", lambda x: -x, "(-{0})", floating=False, bool_closed=True)
_unary("abs", np.abs, "fabsf({0})", floating=False, integer_scalar="({0} < 0 ? -{0} : {0})", bool_closed=True)
_unary("exp", np.exp, "expf({0})", cost=8)
_unary("log", np.log, "logf({0})", cost=8)
_unary("log2", np.log2, "log2f({0})")
_unary("log1p", np.log1p, "log1pf({0})")
_unary("expm1", np.expm1, "expm1f({0})")
_unary("sqrt", np.sqrt, "sqrtf({0})")
_unary("rsqrt", lambda x: 1.0 / np.sqrt(x), "(1.0f / sqrtf({0}))")
_unary("reciprocal", lambda x: 1.0 / x, "(1.0f / {0})")
_unary("sin", np.sin, "sinf({0})", cost=8)
_unary("cos", np.cos, "cosf({0})", cost=8)
_unary("tanh", np.tanh, "tanhf({0})", cost=10)
_unary("erf", np_erf, "erff({0})", cost=10)
_unary("floor", np.floor, "floorf({0})")
_unary("ceil", np.ceil, "ceilf({0})")
_unary("round", np.round, "nearbyintf({0})")  # half to even, like PyTorch
# NaN propagates (like numpy and PyTorch): the comparisons below are false for NaN, which then falls through
_unary("sign", np.sign, "({0} > 0 ? 1 : ({0} < 0 ? -1 : {0}))", floating=False, bool_closed=True)
_unary("relu", lambda x: np.maximum(x, 0), "({0} < 0 ? 0 : {0})", floating=False, bool_closed=True)
_unary("sigmoid", lambda x: 1.0 / (1.0 + np.exp(-x)), "(1.0f / (1.0f + expf(-{0})))", cost=9)
_unary("silu", lambda x: x / (1.0 + np.exp(-x)), "({0} / (1.0f + expf(-{0})))", cost=9)
_unary("softplus", lambda x, beta, threshold: np.where(x * beta > threshold, x, np.log1p(np.exp(x * beta)) / beta),
       "({0} * {beta} > {threshold} ? {0} : log1pf(expf({0} * {beta})) / {beta})",
       attrs={"beta": Attr("float", 1.0), "threshold": Attr("float", 20.0)}, cost=12)
_unary("leaky_relu", lambda x, negative_slope: np.where(x > 0, x, x * negative_slope),
       "({0} > 0 ? {0} : {0} * {negative_slope})", attrs={"negative_slope": Attr("float", 0.01)})
_unary("elu", lambda x, alpha: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))),
       "({0} > 0 ? {0} : {alpha} * expm1f({0}))", attrs={"alpha": Attr("float", 1.0)}, cost=8)
_unary("hardtanh", lambda x, min_val, max_val: np.clip(x, min_val, max_val),
       "fminf(fmaxf({0}, {min_val}), {max_val})",
       attrs={"min_val": Attr("float", -1.0), "max_val": Attr("float", 1.0)})


def _gelu(x: np.ndarray, approximate: str) -> np.ndarray:
    x64 = x.astype(np.float64)
    if approximate == "tanh":
        y = 0.5 * x64 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    else:
        y = 0.5 * x64 * (1.0 + np_erf(x64 / math.sqrt(2.0)))
    return y


@defop("gelu", ("x",), {"approximate": Attr("str", "none")}, family="elementwise",
       scalar="gelu_{approximate}({0})", cost=12, helpers=("gelu_none", "gelu_tanh"))
def gelu(x: TensorType, approximate: str) -> TensorType:
    """GELU, exact (erf) or its tanh approximation."""
    float_only("gelu", x)
    if approximate not in ("none", "tanh"):
        raise ShapeError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return x


@gelu.reference
def _(x, approximate):
    return _f(x, _gelu(x, approximate))


@defop("logical_not", ("x",), family="elementwise", scalar="(!{0})")
def logical_not(x: TensorType) -> TensorType:
    return x.with_dtype(bool_)


@logical_not.reference
def _(x):
    return np.logical_not(x)


@defop("cast", ("x",), {"dtype": Attr("dtype")}, family="elementwise", scalar="cast")
def cast(x: TensorType, dtype: dtype) -> TensorType:
    """Convert the element type (float->int truncates toward zero, like PyTorch)."""
    return x.with_dtype(dtype)


@cast.reference
def _(x, dtype):
    with np.errstate(invalid="ignore"):
        return x.astype(dtype.np)


@defop("clamp", ("x",), {"min": Attr("scalar?", None), "max": Attr("scalar?", None)},
       family="elementwise", scalar="clamp", bool_closed=True)
def clamp(x: TensorType, min, max) -> TensorType:  # noqa: A002
    if min is None and max is None:
        raise ShapeError("clamp: at least one of min and max must be given")
    if x.dtype is bool_:
        raise ShapeError("clamp: not defined for bool tensors")
    return x


@clamp.reference
def _(x, min, max):  # noqa: A002
    y = x
    if min is not None:
        y = np.maximum(y, np.asarray(min, dtype=x.dtype))
    if max is not None:
        y = np.minimum(y, np.asarray(max, dtype=x.dtype))
    return y


# ------------------------------------------------------------------------------------- binary
def _binary(name: str, fn, scalar: str, *, out_bool: bool = False, floating: bool = False,
            no_bool: bool = False, **props):
    """An elementwise op of two broadcast operands; props are the formula's (defop's commutative, ...)."""
    def rule(a: TensorType, b: TensorType) -> TensorType:
        dt = same_dtype(name, a, b)
        if floating:
            float_only(name, a)
        if no_bool and dt is bool_:
            raise ShapeError(f"{name}: not defined for bool tensors (use logical_and/or/xor)")
        return TensorType(broadcast_shapes(name, a.shape, b.shape), bool_ if out_bool else dt)

    op = defop(name, ("a", "b"), family="elementwise", scalar=scalar, **props)(rule)

    def ref(a, b):
        with np.errstate(all="ignore"):
            out = fn(a, b)
        return np.asarray(out) if out_bool else _f(a, out)

    op.reference(ref)
    return op


def _remainder(a, b):
    return np.mod(a, b)  # Python / PyTorch semantics: sign of the divisor


_binary("add", np.add, "({0} + {1})", commutative=True, bool_closed=True)
_binary("sub", np.subtract, "({0} - {1})", no_bool=True)
_binary("mul", np.multiply, "({0} * {1})", commutative=True, bool_closed=True)
_binary("div", np.true_divide, "({0} / {1})", floating=True)
_binary("pow", np.power, "powf({0}, {1})", floating=True, cost=16)
_binary("remainder", _remainder, "remainder", no_bool=True)
_binary("maximum", np.maximum, "fmaxf({0}, {1})", integer_scalar="({0} > {1} ? {0} : {1})", commutative=True,
        bool_closed=True)
_binary("minimum", np.minimum, "fminf({0}, {1})", integer_scalar="({0} < {1} ? {0} : {1})", commutative=True,
        bool_closed=True)
_binary("eq", np.equal, "({0} == {1})", out_bool=True, commutative=True)
_binary("ne", np.not_equal, "({0} != {1})", out_bool=True, commutative=True)
_binary("lt", np.less, "({0} < {1})", out_bool=True)
_binary("le", np.less_equal, "({0} <= {1})", out_bool=True)
_binary("gt", np.greater, "({0} > {1})", out_bool=True)
_binary("ge", np.greater_equal, "({0} >= {1})", out_bool=True)
_binary("logical_and", np.logical_and, "({0} && {1})", out_bool=True, commutative=True)
_binary("logical_or", np.logical_or, "({0} || {1})", out_bool=True, commutative=True)
_binary("logical_xor", np.logical_xor, "(!{0} != !{1})", out_bool=True, commutative=True)


@defop("where", ("cond", "a", "b"), family="elementwise", scalar="({0} ? {1} : {2})")
def where(cond: TensorType, a: TensorType, b: TensorType) -> TensorType:
    """Select a where cond else b (broadcasting all three)."""
    if cond.dtype is not bool_:
        raise ShapeError(f"where: condition must be bool, got {cond.dtype}")
    dt = same_dtype("where", a, b)
    return TensorType(broadcast_shapes("where", cond.shape, a.shape, b.shape), dt)


@where.reference
def _(cond, a, b):
    return np.where(cond, a, b)
