"""Tracing: run a module's real forward on symbolic tensors and record the ops into a Graph.

Every Tensor operation already goes through :func:`graphc.tensor.apply`; while a trace is active a
symbolic operand makes ``apply`` call :meth:`Tracer.record` instead of the numpy reference. Module
calls push their path (``encoder.layers.3.attn``) as the scope of the nodes recorded inside them, and
each node remembers the user's source line. Parameters and buffers become ``@name`` values keyed by
their state_dict names; other concrete tensors met in forward become ``@_const<n>`` values.

The hooks (:meth:`Tracer.call_module`, :meth:`Tracer.lift`, :meth:`Tracer.record`) are plain methods
so a subclass can change how modules or constants are captured.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _dtype as D
from .errors import ShapeError, TraceError
from .ir.graph import Graph, Value
from .ops.registry import OpDef, TensorType
from .sym import Sym, dim_ranges
from .tensor import _ACTIVE, Tensor, tensor

_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
DEFAULT_MAX = 256


@dataclass(frozen=True)
class Dim:
    """A named dynamic dimension with the inclusive range the compiled library accepts."""

    name: str
    min: int = 1
    max: int = DEFAULT_MAX

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"Dim name must be an identifier, got {self.name!r}")
        from ._dtype import ALL_DTYPES

        reserved = {"true", "false", "none", "inf", "nan"} | {d.short for d in ALL_DTYPES}
        if self.name in reserved:
            raise ValueError(f"Dim name {self.name!r} is reserved in the IR text form (a dtype or a literal)")
        if not 0 <= self.min <= self.max:
            raise ValueError(f"Dim {self.name}: need 0 <= min <= max, got min={self.min} max={self.max}")

    def __rmul__(self, factor: int) -> ScaledDim:
        """32 * Dim("h", 1, 8): an input size that is a multiple of 32 (32..256), as torch.export's
        derived dims; strided convs and pools then keep their output sizes polynomials of h."""
        if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
            raise TypeError(f"a Dim can be scaled by a positive int, got {factor!r}")
        return ScaledDim(self, factor)

    __mul__ = __rmul__


@dataclass(frozen=True)
class ScaledDim:
    """factor * dim: a dynamic input size that is always a multiple of factor."""

    dim: Dim
    factor: int


def check_param_name(name: str) -> None:
    """Refuse a parameter name that cannot be written into C sources and safetensors headers (UTF-8):
    a NUL or a lone surrogate (a str that no UTF-8 encoder accepts)."""
    bad = next((c for c in name if c == "\0" or "\ud800" <= c <= "\udfff"), None)
    if bad is not None:
        what = "a NUL character" if bad == "\0" else f"a lone surrogate (U+{ord(bad):04X})"
        raise ValueError(f"parameter name {name!r} contains {what}; graphc writes parameter names into C "
                         "sources and safetensors headers as UTF-8: rename the attribute or the "
                         "state_dict key")


def _traceback_location(tb: Any) -> str:
    """'file.py:LINE' of the innermost traceback entry outside the graphc package."""
    loc = ""
    while tb is not None:
        fn = os.path.abspath(tb.tb_frame.f_code.co_filename)
        if not fn.startswith(_PKG_DIR):
            loc = f"{os.path.basename(fn)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return loc


def user_location() -> str:
    """'file.py:LINE' of the innermost stack frame outside the graphc package."""
    f = sys._getframe(1)
    while f is not None:
        fn = os.path.abspath(f.f_code.co_filename)
        if not fn.startswith(_PKG_DIR):
            return f"{os.path.basename(fn)}:{f.f_lineno}"
        f = f.f_back
    return ""


class Tracer:
    """Records the ops a forward pass applies to symbolic tensors."""

    def __init__(self, graph: Graph, module: Any = None):
        self.graph = graph
        self.scope: list[str] = []
        self.module_paths: dict[int, str] = {}
        self.param_names: dict[int, str] = {}  # id(Tensor) -> state_dict name
        self._lifted: dict[int, Value] = {}
        self._keep_alive: list[Any] = []
        self._nconst = 0
        self._state: list[tuple[str, str, np.ndarray]] = []  # (kind, name, array) the forward may not write
        self._converted: list[tuple[Tensor, Any]] = []  # concrete tensors a write made symbolic
        self.wrote = False  # an in-place write happened (trace() then drops the values it replaced)
        if module is not None:
            for path, m in module.named_modules(remove_duplicate=False):
                self.module_paths.setdefault(id(m), path)
                for attr, v in vars(m).items():
                    if isinstance(v, Tensor) and v._tracer is None and v._data is not None:
                        self._state.append(("tensor attribute", f"{path}.{attr}" if path else attr, v._data))
            for name, p in module.named_parameters(remove_duplicate=False):
                self.param_names.setdefault(id(p), name)
            for name, b in module.named_buffers(remove_duplicate=False):
                if b is not None:
                    self.param_names.setdefault(id(b), name)
                    self._state.append(("buffer", name, b._data))
            for name, p in module.named_parameters(remove_duplicate=False):
                self._state.append(("parameter", name, p._data))

    # ---------------------------------------------------------------------------------- hooks
    def call_module(self, module: Any, forward: Any, args: tuple, kwargs: dict) -> Any:
        """Run a submodule's forward with its path pushed as the current scope."""
        path = self.module_paths.get(id(module))
        if path is None:
            path = (self.scope[-1] + "." if self.scope and self.scope[-1] else "") + type(module).__name__
        self.scope.append(path)
        try:
            return forward(*args, **kwargs)
        except TraceError as e:
            located = self.locate(e)
            if located is e:
                raise
            raise located.with_traceback(e.__traceback__) from None
        finally:
            self.scope.pop()

    def location(self) -> str:
        """The source line recorded with each node: 'file.py:LINE' of the user's code (importers that
        replay another framework's graph override it with the line that graph recorded)."""
        return user_location()

    @property
    def current_scope(self) -> str:
        return self.scope[-1] if self.scope else ""

    def lift(self, t: Tensor) -> Value:
        """The graph value for a concrete tensor used by a traced op (parameter, buffer or constant)."""
        key = id(t)
        v = self._lifted.get(key)
        if v is not None:
            return v
        data = np.asarray(t._data, order="C")
        ttype = TensorType(tuple(data.shape), D.from_numpy_dtype(data.dtype))
        name = self.param_names.get(key)
        if name is not None:
            check_param_name(name)
        if name is None:
            name = f"_const{self._nconst}"
            self._nconst += 1
        v = self.graph.add_param(name, ttype, data)
        self._lifted[key] = v
        self._keep_alive.append(t)  # ids stay unique while the trace runs
        return v

    def record(self, op: OpDef, inputs: Sequence[Tensor | None], attrs: dict[str, Any],
               out_type: TensorType) -> Tensor:
        vals: list[Value | None] = []
        for t in inputs:
            if t is None:
                vals.append(None)
            elif t._tracer is self:
                vals.append(t._value)
            elif t._tracer is None:
                vals.append(self.lift(t))
            else:
                raise self.error("a tensor from another trace was used", t)
        node = self.graph.add_node(op.name, vals, attrs, out_type, scope=self.current_scope,
                                   loc=self.location())
        return Tensor._symbolic(node.out, self)

    # ---------------------------------------------------------------------------- in-place writes
    def check_writable(self, root: Tensor, what: str) -> None:
        """Refuse a write into the traced module's state (graphc/functionalize.py)."""
        if root._tracer is not None or root._data is None:
            return
        for kind, name, arr in self._state:
            if arr is not None and np.may_share_memory(root._data, arr):
                raise self.error(
                    f"{what} writes into the {kind} '{name}' in place; a compiled model keeps no state "
                    "between calls, so the write would be lost: compute the new value out of place "
                    f"(y = {name.rsplit('.', 1)[-1]} + ...) or update the {kind} outside forward()")

    def make_symbolic(self, t: Tensor, lift: bool) -> None:
        """Turn a concrete tensor that a traced write reaches into a symbolic one (its current data as
        a constant when `lift`); trace() restores it afterwards."""
        if t._tracer is self:
            return
        if t._tracer is not None:
            raise self.error("an in-place write reached a tensor from another trace", t)
        value = self.lift(t) if lift else None
        self._converted.append((t, t._data))
        t._tracer, t._value, t._data = self, value, None

    def restore(self) -> None:
        """Give back their concrete data to the tensors made symbolic by writes during the trace."""
        for t, data in reversed(self._converted):
            t._tracer, t._value, t._data = None, None, data
        self._converted.clear()

    def constant(self, value: Any, dt: D.dtype) -> Tensor:
        node = self.graph.add_node("constant", [], {"value": value, "dtype": dt}, TensorType((), dt),
                                   scope=self.current_scope, loc=self.location())
        return Tensor._symbolic(node.out, self)

    # ---------------------------------------------------------------------------------- errors
    def _where(self, t: Tensor | None = None) -> str:
        parts = []
        if t is not None and t._value is not None and t._value.node is not None:
            n = t._value.node
            parts.append(f"the value {t._value.ref} comes from op '{n.op}'")
        scope = self.current_scope
        parts.append(f"in module '{scope}'" if scope else "in the top-level forward()")
        loc = self.location()
        if loc:
            parts.append(f"at {loc}")
        return " ".join(parts)

    def error(self, message: str, t: Tensor | None = None) -> TraceError:
        e = TraceError(f"{message} ({self._where(t)})")
        e._located = True
        return e

    def data_dependent(self, what: str, t: Tensor) -> TraceError:
        e = TraceError(
            f"data-dependent Python control flow: {what} needs the value of a traced tensor, which is "
            f"unknown while tracing ({self._where(t)}). graphc compiles one static graph: use "
            "graphc.where(cond, a, b) instead of if/else on tensor values, compute such values outside "
            "forward(), or make them module attributes"
        )
        e._located = True
        return e

    def locate(self, e: TraceError) -> TraceError:
        """Name the module and the user's source line in a TraceError raised without them (a dynamic
        dim used as an int or in a comparison: graphc.sym knows no tracer)."""
        if getattr(e, "_located", False):
            return e
        scope = self.current_scope
        where = f"in module '{scope}'" if scope else "in the top-level forward()"
        loc = _traceback_location(e.__traceback__)
        if loc:
            where += f" at {loc}"
        out = TraceError(f"{e} ({where})")
        out._located = True
        return out

    def wrap_error(self, e: ShapeError, opname: str) -> ShapeError:
        return ShapeError(f"{e} ({self._where()})")


# ------------------------------------------------------------------------------------- entry point
def _example_array(x: Any, what: str) -> np.ndarray:
    if isinstance(x, Tensor):
        return x._concrete(what)
    if isinstance(x, np.ndarray):
        return x
    mod = type(x).__module__
    if mod.startswith("torch"):
        return tensor(x).numpy()
    if isinstance(x, (tuple, list)) and len(x) == 2 and isinstance(x[0], (tuple, list)):
        shape, dt = x
        return np.zeros(tuple(shape), dtype=D.as_dtype(dt).np)
    raise TypeError(f"example input {what} must be a Tensor, a numpy array or (shape, dtype), got "
                    f"{type(x).__name__}")


def _dims_for(name: str, spec: Any, ndim: int) -> dict[int, Dim | ScaledDim]:
    if spec is None:
        return {}
    if isinstance(spec, int):
        spec = [spec]
    if isinstance(spec, (list, tuple)):
        spec = {d: ("B" if d == 0 else f"{name}_d{d}") for d in spec}
    if not isinstance(spec, Mapping):
        raise TypeError(f"dynamic[{name!r}] must map dims to names or Dim(...), got {spec!r}")
    out: dict[int, Dim] = {}
    for d, v in spec.items():
        if not isinstance(d, int) or not -ndim <= d < ndim:
            raise ValueError(f"dynamic[{name!r}]: dim {d!r} out of range for a {ndim}-d input")
        out[d % ndim] = v if isinstance(v, (Dim, ScaledDim)) else Dim(str(v))
    return out


def _flatten(name: str, x: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(x, (tuple, list)) and not (len(x) == 2 and isinstance(x[0], (tuple, list))
                                            and not isinstance(x[1], (tuple, list, Tensor, np.ndarray))):
        for i, y in enumerate(x):
            _flatten(f"{name}_{i}", y, out)
    elif isinstance(x, Mapping):
        for k, y in x.items():
            _flatten(f"{name}_{k}", y, out)
    else:
        out.append((name, x))


def _rebuild(x: Any, it) -> Any:
    if isinstance(x, (tuple, list)) and not (len(x) == 2 and isinstance(x[0], (tuple, list))
                                            and not isinstance(x[1], (tuple, list, Tensor, np.ndarray))):
        return type(x)(_rebuild(y, it) for y in x)
    if isinstance(x, Mapping):
        return {k: _rebuild(y, it) for k, y in x.items()}
    return next(it)


def _collect_outputs(out: Any, name: str, acc: list[tuple[str, Any]]) -> None:
    if isinstance(out, Tensor):
        acc.append((name, out))
    elif isinstance(out, (tuple, list)):
        for i, y in enumerate(out):
            _collect_outputs(y, f"{name}{i}" if name == "output" else f"{name}_{i}", acc)
    elif isinstance(out, Mapping):
        for k, y in out.items():
            _collect_outputs(y, str(k) if name == "output" else f"{name}_{k}", acc)
    elif out is None:
        return
    else:
        raise TraceError(f"forward() returned a {type(out).__name__} at '{name}'; graphc outputs must be "
                         "tensors, or tuples/lists/dicts of tensors")


def input_names(module: Any, n: int) -> list[str]:
    """Names for the first n positional arguments of module.forward."""
    try:
        sig = inspect.signature(getattr(module, "forward", module))  # a plain callable has no .forward
    except (TypeError, ValueError):
        return [f"input{i}" for i in range(n)]
    names = []
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
        elif p.kind == p.VAR_POSITIONAL:
            names += [f"{p.name}{i}" for i in range(n - len(names))]
            break
    return (names + [f"input{i}" for i in range(len(names), n)])[:n]


def _check_arity(module: Any, n: int) -> None:
    """One clear line when example_inputs does not fit forward()'s positional parameters."""
    fn = getattr(module, "forward", module)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    pos = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p.name for p in pos if p.default is p.empty]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())
    what = f"{type(module).__name__}.forward" if hasattr(module, "forward") else getattr(fn, "__name__", "model")
    if n < len(required):
        raise ValueError(f"too few example_inputs: {what}({', '.join(p.name for p in pos)}) needs "
                        f"{len(required)} positional input(s), example_inputs gives {n} (missing "
                        f"{', '.join(repr(r) for r in required[n:])})")
    if n > len(pos) and not varargs:
        raise ValueError(f"too many example_inputs: {what}({', '.join(p.name for p in pos)}) takes "
                        f"{len(pos)} positional input(s), example_inputs gives {n}")


def trace(module: Any, example_inputs: Any, dynamic: Mapping[str, Any] | None = None, *,
          name: str | None = None, eval_mode: bool = True) -> Graph:
    """Trace ``module(*example_inputs)`` into a verified Graph.

    ``dynamic`` maps an input name to the dims that stay symbolic: ``{"x": {0: "B"}}``,
    ``{"x": {0: graphc.Dim("B", max=64)}}`` or ``{"x": 0}`` (dim 0 named ``B``). One name used by
    several inputs is one dim. The module is traced in eval mode (inference graph) and restored after.
    """
    from .ir.verify import verify

    if isinstance(example_inputs, (Tensor, np.ndarray)) or not isinstance(example_inputs, (tuple, list)):
        example_inputs = (example_inputs,)
    dynamic = dict(dynamic or {})
    _check_arity(module, len(example_inputs))
    names = input_names(module, len(example_inputs))
    unknown = set(dynamic) - set(names)
    flat: list[tuple[str, Any]] = []
    for n, x in zip(names, example_inputs):
        _flatten(n, x, flat)
    flat_names = {n for n, _ in flat}
    unknown -= flat_names
    if unknown:
        raise ValueError(f"dynamic names unknown input(s) {sorted(unknown)}; the inputs are {names}")
    g = Graph(name or _default_name(module))
    tracer = Tracer(g, module)
    symbolic: list[Tensor] = []
    for n, x in flat:
        arr = _example_array(x, f"'{n}'")
        dims = _dims_for(n, dynamic.get(n), arr.ndim)
        shape: list[Any] = list(arr.shape)
        for d, dim in dims.items():
            factor = 1
            if isinstance(dim, ScaledDim):
                dim, factor = dim.dim, dim.factor
                if arr.shape[d] % factor:
                    raise ValueError(f"input '{n}' dim {d} is {arr.shape[d]} in the example, not a multiple of "
                                     f"{factor} as {factor}*{dim.name} declares")
            prev = g.dims.get(dim.name)
            if prev is not None and prev != (dim.min, dim.max):
                raise ValueError(f"dynamic dim {dim.name} is declared with two ranges: {prev} and "
                                 f"{(dim.min, dim.max)}")
            if not dim.min <= arr.shape[d] // factor <= dim.max:
                raise ValueError(f"input '{n}' dim {d} is {arr.shape[d]} in the example, outside the range "
                                 f"{dim.min * factor}..{dim.max * factor} of dynamic dim "
                                 f"{f'{factor}*' if factor > 1 else ''}{dim.name}")
            g.dims[dim.name] = (dim.min, dim.max)
            shape[d] = Sym.var(dim.name) * factor
        v = g.add_input(n, TensorType(tuple(shape), D.from_numpy_dtype(arr.dtype)))
        symbolic.append(Tensor._symbolic(v, tracer))
    args = _rebuild(list(example_inputs), iter(symbolic))
    was_training = getattr(module, "training", False)
    if eval_mode and hasattr(module, "eval"):
        module.eval()
    _ACTIVE.append(tracer)
    outs: list[tuple[str, Any]] = []
    try:
        with dim_ranges(g.dims):
            out = module(*args)
        _collect_outputs(out, "output", outs)
        # read the outputs' values before tensors that writes made symbolic get their data back
        outs = [(n, Tensor._symbolic(t._value, tracer) if t._tracer is tracer else t) for n, t in outs]
    except TraceError as e:  # modules that do not go through Tracer.call_module
        located = tracer.locate(e)
        if located is e:
            raise
        raise located.with_traceback(e.__traceback__) from None
    finally:
        _ACTIVE.pop()
        tracer.restore()
        if eval_mode and was_training and hasattr(module, "train"):
            module.train(True)
    if not outs:
        raise TraceError("forward() returned no tensor")
    results = []
    for oname, t in outs:
        if t._tracer is None:
            results.append((oname, tracer.lift(t)))
        elif t._tracer is tracer:
            results.append((oname, t._value))
        else:
            raise TraceError(f"output '{oname}' belongs to another trace")
    g.set_outputs(results)
    if tracer.wrote:
        from .passes.cleanup import dce

        dce(g)  # the values that writes replaced (and the views replayed but never read)
    verify(g)
    return g


def _default_name(module: Any) -> str:
    """The class name as the user wrote it, lower-cased (GPT -> gpt, ResNet -> resnet, my_net -> my_net)."""
    from .backend.base import default_model_name

    return default_model_name(type(module).__name__)
