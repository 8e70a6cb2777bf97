"""The op registry: every IR op is defined exactly once, here.

How to add an op
----------------
Write, in one of the ``graphc/ops/*.py`` files, a *type rule* decorated with :func:`defop` and right
below it the op's *numpy reference* decorated with ``@<op>.reference``::

    @defop("leaky_relu", inputs=("x",), attrs={"negative_slope": Attr("float", 0.01)},
           family="elementwise", scalar="({0} > 0 ? {0} : {0} * {negative_slope})")
    def leaky_relu(x: TensorType, negative_slope: float) -> TensorType:
        return float_unary(x, "leaky_relu")

    @leaky_relu.reference
    def _(x, negative_slope):
        return np.where(x > 0, x, x * negative_slope)

* ``inputs`` names the tensor operands in order; ``name?`` marks a trailing optional operand and
  ``name*`` a variadic one (last). ``attrs`` maps attribute names to :class:`Attr` (kind + default).
* The type rule gets a :class:`TensorType` per operand (``None`` for a missing optional one) and the
  normalised attributes, and returns the output's TensorType or raises :class:`ShapeError`. Dims may be
  symbolic (:class:`graphc.sym.Sym`), so use ``==``, ``sym.prod`` and ``sym.exact_div`` on them, never
  ``int()``.
* The reference gets numpy arrays and the same attributes and returns one array. It *is* the op's
  semantics: eager Tensor math, the IR interpreter and the backends' tests all use it.
* ``family`` is the key the backends find the op's lowering rule by (``Backend.lowerings``, filled by
  ``@lowers("<family>")`` in ``graphc/backend/c.py`` and ``cuda.py``; a backend may override one op of a
  family with ``@lowers_op``). The rules print the family's backend-neutral analysis
  (``graphc/backend/analysis.py``: shapes, axis splits, parameters); the data-movement and creation
  families have one shared rule (``graphc/backend/common.py``). ``"elementwise"`` ops need no rule:
  fusion groups print their ``scalar`` formula, the C expression of one element in float32 spelling
  (``{0}``, ``{1}`` are the operands, ``{attr}`` the attributes; ``expf``/``fmaxf``... are respelled per
  dtype). ``"view"`` ops are reinterpretations of their operand (no kernel). The families and their
  rules are listed in ``docs/adding-an-op.md``, with the files each kind of op touches.
* The properties the backends and passes ask of an elementwise op live here too: ``integer_scalar``
  (the formula for integer dtypes when the float one does not apply), ``bool_closed`` (on bools the
  result is normalised to 0/1), ``commutative`` (CSE may swap its two operands), ``cost`` (one element's
  cost in additions: smaller loops of costly math get a parallel region) and ``helpers`` (functions
  the formula calls, spelled ``name(...)`` and printed ``gcx_<name>_<dtype>(...)``; they are defined
  once, for every backend, in ``templates/common/_scalar.j2``).
* The operand and result types are :class:`~graphc.ir.types.TensorType` (the IR's type, in
  ``graphc/ir/types.py``; ``graphc.ops.registry.TensorType`` is the same class).

Then add sample cases to the op table (``tests/op_table.py``, whose docstring lists what else a test
needs), and, when a Tensor method or ``graphc.nn.functional`` function should reach it, call
:func:`graphc.ops.apply` there. For an elementwise op that is all: no backend file changes. An op of a
new family adds its rules (and, if no existing one fits, its analysis): ``docs/adding-an-op.md``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._dtype import as_dtype, dtype
from ..errors import ShapeError
from ..ir.types import TensorType  # the IR's type; graphc.ops.registry.TensorType stays an alias
from ..sym import Dim, Sym

REQUIRED = object()


@dataclasses.dataclass(frozen=True)
class Attr:
    """An attribute's kind and default. Kinds: int, float, bool, str, dtype, ints, dims, floats,
    scalar (int/float/bool). A trailing '?' (``"int?"``) also allows None."""

    kind: str
    default: Any = REQUIRED

    def normalize(self, op: str, name: str, value: Any) -> Any:
        kind = self.kind.rstrip("?")
        if value is None:
            if self.kind.endswith("?"):
                return None
            raise ShapeError(f"{op}: attribute '{name}' must not be None")
        try:
            return _NORMALIZERS[kind](value)
        except (TypeError, ValueError) as e:
            raise ShapeError(f"{op}: attribute '{name}' expects {self.kind}, got {value!r} ({e})") from None


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError("not an int")
    return int(v)


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError("not a number")
    return float(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError("not a bool")
    return bool(v)


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("not a string")
    return v


def _dim(v: Any) -> Dim:
    if isinstance(v, Sym):
        return v
    return _int(v)


def _scalar(v: Any) -> int | float | bool:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    raise TypeError("not a scalar")


def _seq(conv: Callable[[Any], Any]) -> Callable[[Any], tuple]:
    def f(v: Any) -> tuple:
        if isinstance(v, (int, float, Sym)) and not isinstance(v, bool):
            v = (v,)
        if not isinstance(v, (list, tuple)):
            raise TypeError("not a sequence")
        return tuple(conv(x) for x in v)

    return f


_NORMALIZERS: dict[str, Callable[[Any], Any]] = {
    "int": _int, "float": _float, "bool": _bool, "str": _str, "dtype": as_dtype, "scalar": _scalar,
    "dim": _dim, "ints": _seq(_int), "dims": _seq(_dim), "floats": _seq(_float),
}


@dataclasses.dataclass(eq=False)
class OpDef:
    """One IR op: signature, attributes, type rule, numpy reference, and what the backends and passes
    need to know about it (its family and, for elementwise ops, the properties of its formula)."""

    name: str
    inputs: tuple[str, ...]
    attrs: dict[str, Attr]
    infer: Callable[..., TensorType]
    family: str
    scalar: str | None = None
    doc: str = ""
    ref: Callable[..., np.ndarray] | None = None
    integer_scalar: str | None = None
    bool_closed: bool = False
    commutative: bool = False
    cost: int = 1
    helpers: tuple[str, ...] = ()

    @property
    def lowering(self) -> str:
        """The family (the older name of the field)."""
        return self.family

    def reference(self, fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        self.ref = fn
        return fn

    # signature helpers ---------------------------------------------------------------------------
    @property
    def variadic(self) -> bool:
        return bool(self.inputs) and self.inputs[-1].endswith("*")

    @property
    def min_inputs(self) -> int:
        return sum(1 for n in self.inputs if not n.endswith(("?", "*")))

    @property
    def max_inputs(self) -> int | None:
        return None if self.variadic else len(self.inputs)

    def input_name(self, i: int) -> str:
        if self.variadic and i >= len(self.inputs) - 1:
            return f"{self.inputs[-1][:-1]}[{i - len(self.inputs) + 1}]"
        return self.inputs[i].rstrip("?")

    def check_arity(self, n: int) -> None:
        hi = self.max_inputs
        if n < self.min_inputs or (hi is not None and n > hi):
            want = f"{self.min_inputs}" if hi == self.min_inputs else (
                f"{self.min_inputs} to {hi}" if hi is not None else f"at least {self.min_inputs}")
            raise ShapeError(f"{self.name}: expects {want} operand(s) ({', '.join(self.inputs)}), got {n}")

    def bind_attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Check names, normalise values and fill defaults; returns attrs in declaration order."""
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise ShapeError(
                f"{self.name}: unknown attribute(s) {', '.join(sorted(unknown))}; "
                f"it takes {', '.join(self.attrs) or 'none'}"
            )
        out = {}
        for name, spec in self.attrs.items():
            if name in attrs:
                out[name] = spec.normalize(self.name, name, attrs[name])
            elif spec.default is REQUIRED:
                raise ShapeError(f"{self.name}: missing required attribute '{name}'")
            else:
                out[name] = spec.default
        return out

    def infer_type(self, types: Sequence[TensorType | None], attrs: dict[str, Any]) -> TensorType:
        self.check_arity(len(types))
        for i, t in enumerate(types):
            if t is None and not (self.inputs[min(i, len(self.inputs) - 1)].endswith("?")):
                raise ShapeError(f"{self.name}: operand '{self.input_name(i)}' is required")
        return self.infer(*types, **attrs)

    def __repr__(self) -> str:
        return f"<op {self.name}({', '.join(self.inputs)})>"


OPS: dict[str, OpDef] = {}


def defop(name: str, inputs: Sequence[str], attrs: dict[str, Attr] | None = None, *, family: str | None = None,
          scalar: str | None = None, integer_scalar: str | None = None, bool_closed: bool = False,
          commutative: bool = False, cost: int = 1, helpers: Sequence[str] = (),
          lowering: str | None = None) -> Callable[[Callable[..., TensorType]], OpDef]:
    """Register an op; decorates its type rule (see the module docstring). ``lowering`` is the older
    name of ``family``."""
    if name in OPS:
        raise ValueError(f"op {name!r} is defined twice")
    if (family is None) == (lowering is None):
        raise ValueError(f"op {name!r}: give its family (family=...)")
    family = family if family is not None else lowering
    ins = tuple(inputs)
    for i, n in enumerate(ins):
        if n.endswith("*") and i != len(ins) - 1:
            raise ValueError(f"op {name!r}: only the last operand may be variadic")

    def deco(infer: Callable[..., TensorType]) -> OpDef:
        op = OpDef(name=name, inputs=ins, attrs=dict(attrs or {}), infer=infer, family=family,  # type: ignore[arg-type]
                   scalar=scalar, doc=(infer.__doc__ or "").strip(), integer_scalar=integer_scalar,
                   bool_closed=bool_closed, commutative=commutative, cost=cost, helpers=tuple(helpers))
        OPS[name] = op
        return op

    return deco


def get_op(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, OPS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ShapeError(f"unknown op '{name}'{hint}") from None


# ------------------------------------------------------------------------------ shared type rules
def broadcast_shapes(op: str, *shapes: Sequence[Dim]) -> tuple[Dim, ...]:
    """numpy/PyTorch broadcasting over (possibly symbolic) dims."""
    nd = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for i in range(nd):
        dim: Dim = 1
        for s in shapes:
            j = i - (nd - len(s))
            if j < 0:
                continue
            d = s[j]
            if d == 1:
                continue
            if dim == 1:
                dim = d
            elif d != dim:
                raise ShapeError(
                    f"{op}: shapes {' and '.join('[' + ','.join(map(str, s)) + ']' for s in shapes)} "
                    f"do not broadcast (dim {i - nd}: {dim} vs {d})"
                )
        out.append(dim)
    return tuple(out)


def same_dtype(op: str, *types: TensorType) -> dtype:
    dt = types[0].dtype
    for t in types[1:]:
        if t.dtype is not dt:
            raise ShapeError(
                f"{op}: operands must have the same dtype, got {', '.join(str(t.dtype) for t in types)} "
                "(insert a cast)"
            )
    return dt


def float_only(op: str, t: TensorType) -> None:
    if not t.dtype.is_floating_point:
        raise ShapeError(f"{op}: expects a floating-point tensor, got {t.dtype}")


def norm_dim(op: str, dim: int, ndim: int, what: str = "dim") -> int:
    lo, hi = (-ndim, ndim - 1) if ndim else (-1, 0)
    if not lo <= dim <= hi:
        raise ShapeError(f"{op}: {what} {dim} out of range for a {ndim}-d tensor (expected {lo}..{hi})")
    return dim % ndim if ndim else 0
