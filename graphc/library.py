"""graphc.library: ops defined in user code, traced, checked against their reference and compiled
(the role of ``torch.library.custom_op`` and ONNX Runtime's custom ops). See docs/custom-ops.md.

An op is a name (``"mylib::softclip"``: a namespace and a name, so it never shadows a built-in op),
its tensor operands and attributes, a type rule (shape and dtype of the result; default: the first
operand's), a numpy reference (its semantics: eager calls, the IR interpreter, ``graphc compile
--verify`` and constant folding run it) and the C source of a function the compiled library calls
(optionally a CUDA source for the CUDA backend)::

    @graphc.library.custom_op("mylib::softclip", attrs={"limit": 1.0}, c_source=SOFTCLIP_C)
    def softclip(x, limit):                      # the numpy reference
        return (np.tanh(x / limit) * limit).astype(x.dtype)

    y = softclip(t, limit=2.0)                   # a graphc.Tensor: eager, or a node while tracing

The C function (named ``function=``, default the op's short name, ``softclip``) receives each operand's
data and shape, the output's, and the attributes in declaration order (:meth:`CustomOp.c_signature`
prints the prototype for given operand types)::

    int softclip(const float *x, const int64_t *x_shape, float *out, const int64_t *out_shape, double limit);

It returns 0, or anything else to make the run fail with an error naming the op. The source goes into the
generated code as its own translation unit, with the function renamed ``<model>_custom_<ns>_<name>``
(a macro), so its names never meet graphc's or another op's.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .ops.registry import OPS, Attr, OpDef, TensorType, defop

__all__ = ["CustomOp", "TensorType", "custom_op", "get", "remove"]

_NAME = re.compile(r"^([A-Za-z_]\w*)::([A-Za-z_]\w*)$")
_IDENT = re.compile(r"^[A-Za-z_]\w*$")
FAMILY = "custom"
# attribute kinds a C function can take, and their C parameter types
C_ATTR_TYPES = {"int": "int64_t", "float": "double", "bool": "int"}


@dataclass(eq=False)
class CustomOp:
    """A registered custom op: call it on tensors like a function (``op(x, limit=2.0)``)."""

    name: str  # "mylib::softclip"
    opdef: OpDef  # the registry record (its IR name is "mylib.softclip")
    c_source: str
    cuda_source: str | None
    function: str  # the function's name in the sources
    where: str  # the file and line that registered it
    attr_kinds: dict[str, str] = field(default_factory=dict)

    @property
    def ir_name(self) -> str:
        return self.opdef.name

    def __call__(self, *tensors: Any, **attrs: Any) -> Any:
        from .tensor import Tensor, apply, tensor

        ins = [t if isinstance(t, Tensor) or t is None else tensor(t) for t in tensors]
        return apply(self.opdef.name, *ins, **attrs)

    def reference(self, fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        """Replace the numpy reference."""
        self.opdef.ref = _checked_reference(self, fn)
        return fn

    def symbol(self, model: str) -> str:
        """The C name of the function in a model's library."""
        return f"{model}_custom_{self.ir_name.replace('.', '_')}"

    def c_signature(self, input_ctypes: Sequence[str], output_ctype: str, *, cuda: bool = False,
                    name: str | None = None) -> str:
        """The prototype graphc calls, for operands of the given C element types ("float", "int64_t", ...)."""
        params = [f"const {t} *{n}, const int64_t *{n}_shape" for n, t in zip(self.opdef.inputs, input_ctypes)]
        params.append(f"{output_ctype} *out, const int64_t *out_shape")
        params += [f"{C_ATTR_TYPES[k]} {a}" for a, k in self.attr_kinds.items()]
        if cuda:
            params.append("cudaStream_t stream")
        return f"int {name or self.function}({', '.join(params)})"

    def __repr__(self) -> str:
        return f"<custom op {self.name}({', '.join(self.opdef.inputs)})>"


CUSTOM_OPS: dict[str, CustomOp] = {}  # by IR name


def _caller() -> str:
    for fr in inspect.stack()[2:]:
        if fr.filename != __file__:
            return f"{os.path.basename(fr.filename)}:{fr.lineno}"
    return "<unknown>"


def _attr_spec(op: str, name: str, spec: Any) -> tuple[Attr, str]:
    if not _IDENT.match(name):
        raise ValueError(f"custom_op {op}: attribute name {name!r} is not an identifier")
    if isinstance(spec, Attr):
        kind = spec.kind
        attr = spec
    elif isinstance(spec, str):
        kind, attr = spec, Attr(spec)
    elif isinstance(spec, bool):
        kind, attr = "bool", Attr("bool", spec)
    elif isinstance(spec, int):
        kind, attr = "int", Attr("int", spec)
    elif isinstance(spec, float):
        kind, attr = "float", Attr("float", spec)
    else:
        raise ValueError(f"custom_op {op}: attribute {name!r} must be given by a default (an int, float or bool) "
                         f"or a kind ('int', 'float', 'bool'), got {spec!r}")
    if kind not in C_ATTR_TYPES:
        raise ValueError(f"custom_op {op}: attribute {name!r} has kind {kind!r}; custom ops take int, float and bool "
                         "attributes (what a C function can take by value)")
    return attr, kind


def _checked_reference(op: CustomOp, fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def ref(*arrays: Any, **attrs: Any) -> np.ndarray:
        out = np.asarray(fn(*arrays, **attrs))
        want = op.opdef.infer(*[TensorType(tuple(a.shape), _dt(a)) for a in arrays], **attrs)
        if tuple(out.shape) != tuple(want.shape):
            raise ValueError(f"custom op {op.name}: the reference returned shape {list(out.shape)}, its type rule "
                             f"says {list(want.shape)} ({op.where})")
        return out.astype(want.dtype.np, copy=False)

    ref.__name__ = getattr(fn, "__name__", "reference")
    return ref


def _dt(a: np.ndarray):
    from ._dtype import from_numpy_dtype

    return from_numpy_dtype(a.dtype)


def custom_op(name: str, reference: Callable[..., np.ndarray] | None = None, *, c_source: str,
              inputs: Sequence[str] = ("x",), attrs: dict[str, Any] | None = None,
              shape: Callable[..., TensorType] | None = None, cuda_source: str | None = None,
              function: str | None = None, doc: str = "") -> Any:
    """Register an op defined in user code; returns the :class:`CustomOp` (or, without ``reference``, a
    decorator that takes the numpy reference and returns it).

    * ``name``: ``"namespace::name"``; printed in the IR as ``namespace.name``.
    * ``inputs``: the tensor operands' names (the C function's parameter names too).
    * ``attrs``: attribute name -> default value (int, float or bool) or kind (``"int"``, ...: required).
    * ``shape``: the type rule, ``shape(*TensorType, **attrs) -> TensorType`` (raise ``graphc.ShapeError``
      for operands the op does not take); default: the output has the first operand's shape and dtype.
    * ``reference``: ``reference(*numpy arrays, **attrs) -> array``, the op's semantics.
    * ``c_source``: C99 defining ``int <function>(...)`` (see :meth:`CustomOp.c_signature`);
      ``cuda_source``: CUDA C++ defining the same function with a trailing ``cudaStream_t stream``, which
      receives device pointers and launches its kernels on that stream.
    """
    m = _NAME.match(name) if isinstance(name, str) else None
    if m is None:
        raise ValueError(f"custom_op: the name must be 'namespace::name' (identifiers, like torch.library's "
                         f"'mylib::softclip'), got {name!r}")
    ir_name = f"{m[1]}.{m[2]}"
    if ir_name in CUSTOM_OPS:
        raise ValueError(f"custom_op: an op named {name!r} is already registered (at {CUSTOM_OPS[ir_name].where}); "
                         f"pick another name, or graphc.library.remove({name!r}) first to redefine it")
    if ir_name in OPS:
        raise ValueError(f"custom_op: {name!r} would replace the built-in op {ir_name!r}")
    ins = tuple(inputs)
    if not ins or not all(isinstance(i, str) and _IDENT.match(i) for i in ins) or len(set(ins)) != len(ins):
        raise ValueError(f"custom_op {name}: inputs must be distinct identifiers, got {list(ins)}")
    if "out" in ins or "stream" in ins:
        raise ValueError(f"custom_op {name}: 'out' and 'stream' are the C function's own parameters")
    if not isinstance(c_source, str) or not c_source.strip():
        raise ValueError(f"custom_op {name}: c_source must be the C source of the op's function")
    fn_name = function or m[2]
    if not _IDENT.match(fn_name):
        raise ValueError(f"custom_op {name}: function {fn_name!r} is not a C identifier")
    specs = {a: _attr_spec(name, a, s) for a, s in (attrs or {}).items()}
    clash = set(specs) & set(ins)
    if clash:
        raise ValueError(f"custom_op {name}: {sorted(clash)} name both an input and an attribute")
    where = _caller()

    def deco(ref: Callable[..., np.ndarray]) -> CustomOp:
        def rule(*types: TensorType, **kw: Any) -> TensorType:
            out = shape(*types, **kw) if shape is not None else types[0]
            if not isinstance(out, TensorType):
                raise TypeError(f"custom op {name}: the shape rule must return a graphc.library.TensorType, got "
                                f"{type(out).__name__} ({where})")
            return out

        rule.__doc__ = doc or (ref.__doc__ or f"custom op {name} (graphc.library.custom_op at {where})")
        opdef = defop(ir_name, ins, {a: s[0] for a, s in specs.items()}, family=FAMILY)(rule)
        op = CustomOp(name, opdef, c_source, cuda_source, fn_name, where, {a: s[1] for a, s in specs.items()})
        opdef.ref = _checked_reference(op, ref)
        CUSTOM_OPS[ir_name] = op
        return op

    return deco(reference) if reference is not None else deco


def get(name: str) -> CustomOp:
    """The custom op registered under name ("mylib::softclip" or its IR name "mylib.softclip")."""
    key = name.replace("::", ".")
    if key not in CUSTOM_OPS:
        known = ", ".join(o.name for o in CUSTOM_OPS.values()) or "none"
        raise KeyError(f"no custom op named {name!r} (registered: {known})")
    return CUSTOM_OPS[key]


def remove(name: str) -> None:
    """Unregister a custom op (to redefine it, e.g. when a notebook cell runs again). Built-in ops stay."""
    op = get(name)
    del CUSTOM_OPS[op.ir_name]
    OPS.pop(op.ir_name, None)


def is_custom(opname: str) -> bool:
    return opname in CUSTOM_OPS


# ------------------------------------------------------------------------------------- compiling
def call_fields(kb: Any, n: Any, *, cuda: bool = False) -> dict[str, Any]:
    """What a backend's "custom" rule prints for one node: the renamed function's prototype, its operands'
    and output's pointers and shapes (C expressions, dims symbolic or not) and the attributes' literals.
    The CUDA backend refuses an op without cuda_source (an UnsupportedError naming op and module path)."""
    from ._dtype import float64 as f64
    from ._dtype import int64 as i64

    op = CUSTOM_OPS[n.op]
    if cuda:
        kb.require(op.cuda_source is not None,
                   f"custom op {op.name} has no CUDA source: pass cuda_source= to graphc.library.custom_op "
                   f"({op.where})")
    ins = [kb.input(v) for v in n.inputs]
    out = kb.output(n.out)
    in_ct = [kb.ctype(v.type.dtype) for v in n.inputs]
    out_ct = kb.ctype(n.out.type.dtype)
    symbol = kb.lower.ns.name(op.symbol(kb.lower.name), ("custom op", op.ir_name))  # unique in the program
    shapes = [[kb.dim(d) for d in v.type.shape] for v in [*n.inputs, n.out]]
    lits = []
    for a, kind in op.attr_kinds.items():
        v = n.attrs[a]
        lits.append(str(int(v)) if kind == "bool" else kb.literal(v, f64 if kind == "float" else i64))
    if not cuda:
        kb.fails(f"custom op {op.name}: its C function returned an error")
    return {"op": op.name, "symbol": symbol, "proto": op.c_signature(in_ct, out_ct, cuda=cuda, name=symbol),
            "unit_proto": op.c_signature(in_ct, out_ct, cuda=cuda), "ins": ins, "out": out, "shapes": shapes,
            "attrs": lits, "unit": symbol + kb.backend.source_suffix, "cuda": cuda}


def render_units(backend: Any, program: Any) -> dict[str, str]:
    """The translation unit of each custom op the program calls: its source as given, after the prototype
    (so a definition that does not match it is a compile error) and a macro renaming its function."""
    from .errors import UnsupportedError

    seen: dict[str, tuple[str, Any]] = {}
    for k in program.kernels:
        d = k.data
        if "unit_proto" not in d or "symbol" not in d:
            continue
        prev = seen.get(d["unit"])
        if prev is not None and prev[0] != d["unit_proto"]:
            raise UnsupportedError(
                f"not supported by the {backend.display_name} backend: custom op {d['op']} is called with two "
                f"C signatures in one model ({prev[0]} and {d['unit_proto']}); its C function takes one set of "
                "operand dtypes (cast the operands)")
        seen[d["unit"]] = (d["unit_proto"], d)
    out = {}
    for unit, (proto, d) in sorted(seen.items()):
        op = get(d["op"])
        which = "c_source" if d["cuda"] is False else "cuda_source"
        source = op.c_source if which == "c_source" else op.cuda_source
        out[unit] = backend.render("custom_unit" + backend.template_suffix, op=op, unit=unit, proto=proto,
                                   symbol=d["symbol"], source=(source or "").rstrip() + "\n",
                                   line_name=f"{op.name} ({which})")
    return out
