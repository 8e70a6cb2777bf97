"""Loading a model file for the command line (see docs/model-files.md).

A model file is ordinary Python that defines:

* ``model``: a module instance, or a function returning one;
* ``example_inputs``: a tuple of arrays/Tensors, or ``(shape, dtype)`` pairs where a shape may name a
  dynamic dim with a string (``(("B", 784), "float32")``);
* optionally ``dynamic`` (``{"x": {0: "B"}}``) and ``weights`` (a safetensors path relative to the file).

Command-line flags override each (``--model NAME``, ``--input x:f32[B,784]``, ``--dynamic x:0``,
``--weights-file``). A ``.gir`` text IR file (with a safetensors file of its parameters) is accepted
wherever a model file is.
"""

from __future__ import annotations

import re
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _dtype as D
from .errors import GraphcError


class UserError(GraphcError):
    """A mistake in the command line or the model file: reported as one clear line."""


@dataclass
class InputSpec:
    name: str
    dtype: D.dtype
    dims: list[int | str]

    def example(self, ranges: dict[str, tuple[int, int]]) -> np.ndarray:
        shape = []
        for d in self.dims:
            if isinstance(d, str):
                lo, hi = ranges.get(d, (1, 256))
                shape.append(min(max(2, lo), hi))
            else:
                shape.append(d)
        rng = np.random.default_rng(0)
        if self.dtype.is_floating_point:
            return rng.standard_normal(shape).astype(self.dtype.np)
        if self.dtype is D.bool_:
            return rng.integers(0, 2, size=shape).astype(bool)
        return rng.integers(0, 10, size=shape).astype(self.dtype.np)


_SPEC = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):([A-Za-z0-9_]+)\[([^\]]*)\]$")


def parse_input_spec(text: str) -> InputSpec:
    """'x:f32[B,784]' -> InputSpec('x', float32, ['B', 784])."""
    m = _SPEC.match(text.strip())
    if not m:
        raise UserError(f"--input '{text}': expected NAME:DTYPE[DIM,...], e.g. x:f32[B,784]")
    name, dt, dims_text = m.groups()
    try:
        dtype = D.as_dtype(dt)
    except (ValueError, TypeError):
        raise UserError(f"--input '{text}': unknown dtype '{dt}' (use f32, f64, f16, bf16, i64, i32, i8, u8, bool)"
                        ) from None
    dims: list[int | str] = []
    for d in (x.strip() for x in dims_text.split(",")) if dims_text.strip() else []:
        if d.isdigit():
            dims.append(int(d))
        elif d.isidentifier():
            dims.append(d)
        else:
            raise UserError(f"--input '{text}': bad dim '{d}' (a size or a dynamic dim name)")
    return InputSpec(name, dtype, dims)


def parse_dynamic_flag(text: str) -> tuple[str, int, str]:
    """'x:0' or 'x:0=B' -> (input, dim, dim name)."""
    m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*):(-?\d+)(?:=([A-Za-z_][A-Za-z0-9_]*))?$", text.strip())
    if not m:
        raise UserError(f"--dynamic '{text}': expected INPUT:DIM or INPUT:DIM=NAME, e.g. x:0=B")
    return m.group(1), int(m.group(2)), m.group(3) or ("B" if int(m.group(2)) == 0 else f"{m.group(1)}_d{m.group(2)}")


def parse_dim_range(text: str) -> tuple[str, int, int]:
    m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(\d+)\.\.(\d+)$", text.strip())
    if not m:
        raise UserError(f"--dim '{text}': expected NAME=MIN..MAX, e.g. B=1..64")
    lo, hi = int(m.group(2)), int(m.group(3))
    if lo > hi:
        raise UserError(f"--dim '{text}': MIN is larger than MAX")
    return m.group(1), lo, hi


@dataclass
class LoadedModel:
    path: Path
    module: Any = None  # a graphc Module, or None for a .gir file
    graph: Any = None  # the parsed Graph for a .gir file
    example_inputs: tuple = ()
    dynamic: dict[str, Any] = field(default_factory=dict)
    name: str = "model"


def _user_line(tb: Any, path: Path) -> str:
    """'file.py:LINE' of the user's code in a traceback: the innermost frame of the model file, else
    the innermost frame outside graphc, the standard library and installed packages."""
    import sysconfig

    pkg = str(Path(__file__).resolve().parent)
    lib = tuple(str(Path(sysconfig.get_paths()[k]).resolve()) for k in ("stdlib", "purelib", "platlib"))
    in_file = other = ""
    while tb is not None:
        fn = Path(tb.tb_frame.f_code.co_filename).resolve()
        if fn == path.resolve():
            in_file = f"{fn.name}:{tb.tb_lineno}"
        elif not str(fn).startswith(pkg) and not str(fn).startswith(lib) and not str(fn).startswith("<"):
            other = f"{fn.name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return in_file or other


def run_user_code(fn: Any, path: Path, what: str) -> Any:
    """Run fn (the model file, its factory, its forward) with sys.argv set to [model file]; a failure
    of the user's code becomes one UserError naming the user's line (graphc's own errors pass)."""
    saved_argv = sys.argv
    sys.argv = [str(path)]
    try:
        return fn()
    except SyntaxError as e:
        if Path(e.filename or "").resolve() != path.resolve():
            raise UserError(f"{Path(e.filename or '?').name}:{e.lineno}: syntax error: {e.msg}") from None
        raise UserError(f"{path.name}:{e.lineno}: syntax error: {e.msg}") from None
    except (GraphcError, UserError):
        raise
    except SystemExit as e:
        where = _user_line(e.__traceback__, path) or path.name
        raise UserError(f"{where}: {what} called sys.exit({e.code!r}); a model file must only define "
                        "'model' and 'example_inputs' (put script code under `if __name__ == "
                        "'__main__':`, graphc runs the file as '__graphc_model__')") from None
    except Exception as e:  # the user's code failed: say where
        where = _user_line(e.__traceback__, path)
        if not where and isinstance(e, ValueError):
            raise  # graphc's own check of what the model file gave (one line from the CLI)
        where = where or path.name
        msg = " ".join(str(e).split())
        raise UserError(f"{where}: {what} raised {type(e).__name__}: {msg}") from e
    finally:
        sys.argv = saved_argv


def _call_or_get(ns: dict, name: str, path: Path) -> Any:
    if name not in ns:
        raise UserError(f"{path.name}: defines no '{name}' (define {name} = MyNet() or def {name}(): "
                        f"return MyNet(); or pass --model NAME)")
    obj = ns[name]
    from .importers import is_torch_module
    from .nn import Module

    if isinstance(obj, Module) or is_torch_module(obj):
        return obj
    if callable(obj) and not isinstance(obj, type):
        obj = obj()
    elif isinstance(obj, type):
        obj = obj()
    if not isinstance(obj, Module) and not is_torch_module(obj):
        raise UserError(f"{path.name}: '{name}' is a {type(obj).__name__}, not a graphc.nn.Module or a "
                        "torch.nn.Module")
    return obj


def trace_model(lm: LoadedModel, name: str | None = None) -> Any:
    """The graph of a loaded model file's module: graphc.trace for a graphc module, graphc.from_torch
    (torch.export) for a torch.nn.Module."""
    from .importers import from_torch, is_torch_module
    from .trace import trace

    if is_torch_module(lm.module):
        return from_torch(lm.module, lm.example_inputs, lm.dynamic, name=name or lm.name).graph
    return trace(lm.module, lm.example_inputs, lm.dynamic, name=name or lm.name)


def _examples_from(value: Any, path: Path) -> tuple[tuple, dict[str, dict[int, str]], list[str]]:
    """example_inputs as given in a model file -> (arrays, dynamic dims found in string shapes, names)."""
    from .tensor import Tensor

    if isinstance(value, (Tensor, np.ndarray)):
        value = (value,)
    if not isinstance(value, (tuple, list)):
        raise UserError(f"{path.name}: example_inputs must be a tuple of arrays/Tensors or (shape, dtype) pairs")
    out, dyn_pos = [], []
    for i, v in enumerate(value):
        if isinstance(v, (tuple, list)) and len(v) == 2 and isinstance(v[0], (tuple, list)):
            shape, dt = v
            spec = InputSpec(f"input{i}", D.as_dtype(dt), [s if isinstance(s, str) else int(s) for s in shape])
            out.append(spec.example({}))
            dyn_pos.append({j: s for j, s in enumerate(shape) if isinstance(s, str)})
        else:
            out.append(v)
            dyn_pos.append({})
    return tuple(out), {str(i): d for i, d in enumerate(dyn_pos) if d}, []


def load_model_file(path: str | Path, *, model_name: str = "model", inputs: list[str] | None = None,
                    dynamic: list[str] | None = None, dims: list[str] | None = None,
                    weights_file: str | None = None, need_weights: bool = True) -> LoadedModel:
    """Run a model file (or parse a .gir file) and gather what `graphc compile` needs."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{path}: no such file")
    if p.is_dir():
        raise UserError(f"{path}: is a folder, expected a model .py file or a .gir file")
    ranges = dict((n, (lo, hi)) for n, lo, hi in (parse_dim_range(d) for d in (dims or [])))
    if p.suffix == ".gir":
        return _load_gir(p, weights_file, ranges, need_weights)
    if p.suffix == ".onnx":
        _onnx_flags(p, model_name, inputs, dynamic, weights_file)
        return _load_onnx(p, ranges)
    sys_path_added = str(p.parent.resolve())
    sys.path.insert(0, sys_path_added)
    try:
        ns = run_user_code(lambda: runpy.run_path(str(p), run_name="__graphc_model__"), p,
                           "running the model file")
    finally:
        if sys.path and sys.path[0] == sys_path_added:
            sys.path.pop(0)
    module = run_user_code(lambda: _call_or_get(ns, model_name, p), p, f"calling '{model_name}'")
    from .trace import Dim, input_names

    dyn: dict[str, Any] = {}
    if inputs:
        specs = [parse_input_spec(s) for s in inputs]
        names = input_names(module, len(specs))
        by_name = {s.name: s for s in specs}
        if set(by_name) != set(names):
            raise UserError(f"--input names {sorted(by_name)} do not match forward()'s arguments {names}")
        specs = [by_name[n] for n in names]
        examples = tuple(s.example(ranges) for s in specs)
        for s in specs:
            sym = {j: d for j, d in enumerate(s.dims) if isinstance(d, str)}
            if sym:
                dyn[s.name] = sym
    else:
        if "example_inputs" not in ns:
            raise UserError(f"{p.name}: defines no 'example_inputs' (a tuple of arrays, or pass "
                            "--input NAME:DTYPE[DIMS])")
        examples, dyn_pos, _ = _examples_from(ns["example_inputs"], p)
        names = input_names(module, len(examples))
        for k, d in dyn_pos.items():
            dyn[names[int(k)]] = d
        dyn.update(ns.get("dynamic") or {})
    for flag in dynamic or []:
        inp, d, dname = parse_dynamic_flag(flag)
        dyn.setdefault(inp, {})
        if isinstance(dyn[inp], dict):
            dyn[inp][d] = dname
    # apply --dim ranges
    for spec in dyn.values():
        if isinstance(spec, dict):
            for d, v in list(spec.items()):
                name = v.name if isinstance(v, Dim) else str(v)
                if name in ranges:
                    spec[d] = Dim(name, *ranges[name])
    wfile = weights_file or ns.get("weights")
    if wfile:
        wpath = Path(wfile) if Path(wfile).is_absolute() or weights_file else p.parent / wfile
        if not wpath.exists():
            raise UserError(f"{p.name}: weights file {wfile} not found")
        from .serialization import load

        try:
            sd = load(str(wpath))
        except ValueError as e:
            raise UserError(f"{wpath.name}: {e}") from None
        from .importers import is_torch_module

        if is_torch_module(module):
            import torch

            sd = {k: torch.from_numpy(np.asarray(v.numpy() if hasattr(v, "numpy") else v, order="C"))
                  for k, v in sd.items()}
        try:
            module.load_state_dict(sd)
        except RuntimeError as e:
            raise UserError(f"{wpath.name}: does not fit the model: {' '.join(str(e).split())}") from None
    from .backend.base import default_model_name

    # named after the file (model.py: after its folder), by the rule graphc.trace names a class by
    name = default_model_name(p.resolve().parent.name if p.stem == "model" else p.stem)
    return LoadedModel(p, module=module, example_inputs=examples, dynamic=dyn, name=name)


def _onnx_flags(p: Path, model_name: str, inputs: list[str] | None, dynamic: list[str] | None,
                weights_file: str | None) -> None:
    """The flags that describe a model file's Python objects have no meaning for an ONNX file (its inputs,
    dims and weights are in the file): refused with one line instead of being ignored."""
    given = [f for f, v in (("--input", inputs), ("--dynamic", dynamic), ("--weights-file", weights_file),
                            ("--model", model_name != "model")) if v]
    if given:
        raise UserError(f"{p.name}: {', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to an ONNX "
                        "file: its inputs, dynamic dims (symbolic dims, ranges with --dim NAME=MIN..MAX) and "
                        "weights (initializers) come from the file")


def _load_onnx(p: Path, ranges: dict[str, tuple[int, int]]) -> LoadedModel:
    """An ONNX file through graphc.from_onnx; --dim NAME=MIN..MAX gives the range of a symbolic dim."""
    from .errors import GraphcError
    from .importers.onnx import from_onnx

    try:
        g = from_onnx(p, dims=ranges)
    except (GraphcError, ValueError) as e:
        msg = str(e)
        raise UserError(msg if msg.startswith(p.name) or msg.startswith(str(p)) else f"{p.name}: {msg}") from None
    return LoadedModel(p, graph=g, name=g.name)


def _load_gir(p: Path, weights_file: str | None, ranges: dict[str, tuple[int, int]],
              need_weights: bool) -> LoadedModel:
    from .ir.parser import parse_file

    wpath = Path(weights_file) if weights_file else p.with_suffix(".safetensors")
    if weights_file and not wpath.exists():
        raise UserError(f"--weights-file {weights_file}: no such file")
    g = parse_file(str(p), weights=str(wpath) if wpath.exists() else None)
    missing = [n for n in g.params if n not in g.param_data]
    if missing and need_weights:
        raise UserError(f"{p.name}: parameters {', '.join(missing[:5])} have no data: pass --weights-file "
                        f"(looked for {wpath.name})")
    for n, (lo, hi) in ranges.items():
        if n in g.dims:
            g.dims[n] = (lo, hi)
    return LoadedModel(p, graph=g, name=g.name)
