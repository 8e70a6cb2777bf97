"""Every registry op compiled by the C backend and compared with the numpy reference interpreter.

The cases come from tests/op_table.py (SAMPLES): a new op is covered as soon as it has sample cases
there, and this file fails for an op without any. Each table case yields several variants:

==========  ==========================================================================================
static      the table's operands as graph inputs, exactly as listed (odd sizes, size 1, broadcasting)
dyn         a symbolic batch dim B (1..16), run at B=1 and B=7: a leading dim prepended to the tensor
            operands (elementwise, shape, matmul, linear, embedding) or the leading dim read as B
            (nn ops, reductions, softmax); the op's rule is in DYNAMIC below
param       weight-like operands (WEIGHTS: conv/linear weights, norm parameters, embedding tables) as
            parameters: baked into the library, and in a weights file for the linalg library
f64 i64     the case's float32 operands (and, for i32, its int64 ones) converted; a combination the
i32 bool    type rule refuses is skipped, one the backend refuses must raise UnsupportedError naming
            op, dtype and module path (elementwise and shape ops must support them all)
nan nan64   elementwise ops: NaN, +-inf, +-0, halves, huge and subnormal values on every float operand
            (a grid of all combinations; float32 and float64); other ops: NaN, +-inf, -0 and subnormals
            scattered through the data operand. NaN must come out where the reference has NaN.
==========  ==========================================================================================

The cases of an op family (elementwise, shape, reduce, linalg, nn, misc) are the outputs of one graph,
cut into libraries of at most MAX_CASES cases: ten libraries in all, about 35 s from a cold cache on
two cores. Graphs are compiled exactly as built (``optimized=`` skips the passes, which would fold
creation ops and drop identities) at -O3 with -Wall -Wextra -Werror.

Tolerances: float32 elementwise rtol 1e-6 (an ulp or so: the formulas are the reference's, only libm
differs); reductions, matmul, conv, norms, softmax, sdpa rtol 1e-5 and atol 1e-5 times the largest
expected magnitude; float64 1e-13 / 1e-12; integer and bool results exact.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pytest

import graphc
from graphc._dtype import as_dtype, from_numpy_dtype
from graphc.backend import generate
from graphc.backend.c import CBackend
from graphc.backend.lowering import lower_program
from graphc.errors import GraphcError, UnsupportedError
from graphc.ir import Graph, interpret, verify
from graphc.ops import OPS, get_op
from graphc.ops.registry import TensorType
from graphc.sym import Sym
from tests.op_table import SAMPLES
from tests.shared_build import shared_cache_dir

B = Sym.var("B")
BATCHES = (1, 7)
PREPEND, LEAD = "prepend", "lead"  # dyn: add a leading B dim / read the existing leading dim as B

# test family of each op (by its registry family, OpDef.family); a test family is one library
FAMILIES = {
    "elementwise": "elementwise",
    **dict.fromkeys(("view", "permute", "expand", "slice", "concat", "pad", "index_select", "gather",
                     "fill", "arange"), "shape"),
    **dict.fromkeys(("reduce", "argreduce", "softmax", "scan", "sort"), "reduce"),
    **dict.fromkeys(("matmul", "linear", "bilinear"), "linalg"),
    **dict.fromkeys(("conv", "pool", "adaptive_pool", "norm", "sdpa", "embedding"), "nn"),
}
# weights="file" for one library, baked for the others
WEIGHTS_MODE = {"linalg": "file"}

# operand positions that are weights in a model (passed as parameters in the "param" variant)
WEIGHTS: dict[str, tuple[int, ...]] = {
    "linear": (1, 2), "bilinear": (2, 3), "conv": (1, 2), "conv_transpose": (1, 2), "batch_norm": (1, 2, 3, 4),
    "layer_norm": (1, 2), "group_norm": (1, 2), "rms_norm": (1,), "embedding": (1,),
}

# dtype variants: which families must compile them whenever the op's type rule accepts them
DTYPE_VARIANTS = ("f64", "i64", "i32", "bool")
MUST_SUPPORT_DTYPES = ("elementwise", "shape")
# ops without a dynamic-batch variant, and why
NO_DYNAMIC = {"constant": "a 0-d tensor has no batch dim"}

SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1.5, 2.5, -2.5, 3.0, 1e30, -1e30, 1e-40,
           -1e-40, 100.0, -100.0]
SPECIAL_INJECT = [np.nan, np.inf, -np.inf, -0.0, 1e-40]  # into the data operand of the other ops
# ops whose result for an inf operand depends on the evaluation order (inf or NaN), hence no inf
ORDER_DEPENDENT_INF = {"bilinear": "x1 W x2: contracting x1 first meets inf - inf where x2 first does not"}


# ------------------------------------------------------------------------------------- dynamic batch
Rule = Callable[[list[Any], dict[str, Any]], "tuple[list[str | None], dict[str, Any]] | None"]
DYNAMIC: dict[str, Rule] = {}


def dynamic(*ops: str):
    def deco(fn: Rule) -> Rule:
        for op in ops:
            DYNAMIC[op] = fn
        return fn

    return deco


def _highest_rank(arrays):
    nd = max((a.ndim for a in arrays if a is not None), default=0)
    return [PREPEND if a is not None and a.ndim == nd else None for a in arrays]


@dynamic("matmul")
def _broadcasting_rule(arrays, attrs):
    """Elementwise ops and matmul's batch dims: B goes in front of the operands of the highest rank, the
    others broadcast against it."""
    return _highest_rank(arrays), attrs


@dynamic("reshape")
def _reshape_rule(arrays, attrs):
    return [PREPEND], {**attrs, "shape": [B, *attrs["shape"]]}


@dynamic("permute")
def _permute_rule(arrays, attrs):
    return [PREPEND], {**attrs, "dims": [0, *(d + 1 for d in attrs["dims"])]}


@dynamic("expand")
def _expand_rule(arrays, attrs):
    return [None], {**attrs, "shape": [B, *attrs["shape"]]}


@dynamic("slice", "index_select")
def _dim_shift_first(arrays, attrs):
    return [PREPEND] + [None] * (len(arrays) - 1), {**attrs, "dim": attrs["dim"] + 1}


@dynamic("concat", "gather")
def _dim_shift_all(arrays, attrs):
    return [PREPEND] * len(arrays), {**attrs, "dim": attrs["dim"] + 1}


@dynamic("pad", "dropout", "identity", "linear", "embedding")
def _prepend_first(arrays, attrs):
    return [PREPEND] + [None] * (len(arrays) - 1), attrs


@dynamic("bilinear")
def _bilinear_rule(arrays, attrs):
    return [PREPEND, PREPEND] + [None] * (len(arrays) - 2), attrs


@dynamic("full")
def _full_rule(arrays, attrs):
    return [], {**attrs, "shape": [B, *attrs["shape"]]}


@dynamic("arange")
def _arange_rule(arrays, attrs):
    if attrs.get("start", 0) != 0 or attrs.get("step", 1) != 1:
        return None  # a dynamic end needs start 0 and step 1
    return [], {**attrs, "end": B}


@dynamic("sum", "prod", "mean", "amax", "amin", "var", "argmax", "argmin", "softmax", "log_softmax", "cumsum",
         "cumprod", "argsort", "conv", "conv_transpose", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
         "batch_norm", "layer_norm", "group_norm", "rms_norm")
def _leading_is_batch(arrays, attrs):
    """The first operand's leading dim becomes B (reductions over dim 0 then reduce over B)."""
    if arrays[0].ndim == 0:
        return None
    return [LEAD] + [None] * (len(arrays) - 1), attrs


@dynamic("sdpa")
def _sdpa_rule(arrays, attrs):
    q = arrays[0]
    acts: list[str | None] = [LEAD, LEAD, LEAD]
    if len(arrays) > 3:
        m = arrays[3]
        acts.append(LEAD if m is not None and m.ndim == q.ndim and m.shape[0] == q.shape[0] else None)
    return acts, attrs


def dynamic_rule(op: str) -> Rule | None:
    if op in DYNAMIC:
        return DYNAMIC[op]
    if OPS[op].lowering == "elementwise":
        return _broadcasting_rule
    return None


# ------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    op: str
    index: int  # the table case it comes from (-1: made here)
    variant: str
    arrays: list[Any]  # operands (numpy arrays; None for an absent optional one)
    attrs: dict[str, Any]
    acts: list[str | None] = field(default_factory=list)  # dyn action per operand
    params: tuple[int, ...] = ()  # operands passed as parameters
    unsupported: str = ""  # the backend's UnsupportedError, when it refuses the case
    error: str = ""  # anything else that went wrong while building the case

    @property
    def name(self) -> str:
        return f"{self.op}_{self.index}_{self.variant}" if self.index >= 0 else f"{self.op}_{self.variant}"

    @property
    def scope(self) -> str:
        return f"ops.{self.op}.case{self.index}.{self.variant}" if self.index >= 0 else f"ops.{self.op}.{self.variant}"

    @property
    def family(self) -> str:
        return family_of(self.op)

    @property
    def dynamic(self) -> bool:
        return any(self.acts) or _has_sym(self.attrs)


def family_of(op: str) -> str:
    return FAMILIES.get(OPS[op].family, "misc")


def _has_sym(x: Any) -> bool:
    if isinstance(x, Sym):
        return True
    if isinstance(x, dict):
        return any(_has_sym(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return any(_has_sym(v) for v in x)
    return False


_NP = {"f64": np.float64, "i64": np.int64, "i32": np.int32, "bool": np.bool_}
_GC = {"f64": graphc.float64, "i64": graphc.int64, "i32": graphc.int32, "bool": graphc.bool}


def _convert(a: Any, variant: str) -> Any:
    if a is None:
        return None
    if a.dtype == np.float32:
        if variant == "f64":
            return a.astype(np.float64)
        if variant == "bool":
            return a > 0
        with np.errstate(invalid="ignore"):  # -inf masks (the type rules refuse integer ones)
            return np.rint(a * 3).astype(_NP[variant])  # a few distinct small integers
    if a.dtype == np.int64 and variant == "i32":
        return a.astype(np.int32)
    return a


def _dtype_variant(op: str, arrays, attrs, variant: str):
    if not OPS[op].inputs and "dtype" in attrs:  # creation ops: the dtype attribute
        return arrays, {**attrs, "dtype": _GC[variant]}
    conv = [_convert(a, variant) for a in arrays]
    if all(a is b for a, b in zip(conv, arrays)):
        return None
    return conv, attrs


def _special_operands(arrays, dt) -> list[Any] | None:
    """Every float operand gets the special values along its own axis of a grid (outer products)."""
    fl = [j for j, a in enumerate(arrays) if a is not None and a.dtype.kind == "f"]
    if not fl:
        return None
    n = len(SPECIAL)
    grid = (n,) * len(fl)
    rng = np.random.default_rng(len(fl))
    out = []
    for j, a in enumerate(arrays):
        if j in fl:
            shape = [1] * len(fl)
            shape[fl.index(j)] = n
            out.append(np.array(SPECIAL, dt).reshape(shape))
        elif a is None:
            out.append(None)
        elif a.dtype == np.bool_:
            out.append(rng.random(grid) > 0.5)
        else:
            out.append(rng.integers(-3, 4, grid).astype(a.dtype))
    return out


def table_cases(op: str) -> list[Case]:
    """All variants of the table's cases of one op (before asking the backend)."""
    out: list[Case] = []
    rule = dynamic_rule(op)
    weights = WEIGHTS.get(op, ())
    for i, (arrays, attrs) in enumerate(SAMPLES.get(op, [])):
        arrays = list(arrays)
        out.append(Case(op, i, "static", arrays, dict(attrs)))
        dyn = rule(arrays, dict(attrs)) if rule is not None else None
        if dyn is not None:
            acts, dattrs = dyn
            out.append(Case(op, i, "dyn", arrays, dattrs, list(acts)))
        present = tuple(j for j in weights if j < len(arrays) and arrays[j] is not None)
        if present:
            acts, pattrs = dyn if dyn is not None else ([None] * len(arrays), dict(attrs))
            out.append(Case(op, i, "param", arrays, pattrs, list(acts), present))
        for variant in DTYPE_VARIANTS:
            conv = _dtype_variant(op, arrays, dict(attrs), variant)
            if conv is not None:
                out.append(Case(op, i, variant, conv[0], conv[1]))
    if OPS[op].lowering == "elementwise":
        seen = []
        for arrays, attrs in SAMPLES.get(op, []):
            if attrs in seen or (op == "cast" and as_dtype(attrs["dtype"]) not in (
                    graphc.float32, graphc.float64, graphc.bool)):
                continue  # NaN/inf to an integer is undefined (C and numpy disagree by design)
            seen.append(attrs)
            for variant, dt in (("nan", np.float32), ("nan64", np.float64)):
                ops_ = _special_operands(list(arrays), dt)
                if ops_ is not None:
                    out.append(Case(op, -1, f"{variant}{len(seen) - 1}", ops_, dict(attrs)))
    else:
        for i, (arrays, attrs) in enumerate(SAMPLES.get(op, [])):
            if arrays and arrays[0] is not None and arrays[0].dtype == np.float32:
                out.append(Case(op, i, "nan", [_inject_special(arrays[0], op), *arrays[1:]], dict(attrs)))
    return out


def _inject_special(a: np.ndarray, op: str) -> np.ndarray:
    """a with every fifth element (in a scattered pattern) replaced by NaN, +-inf, -0 and a subnormal in
    turn. No huge finite values: where they overflow depends on the accumulation's precision (the
    references accumulate in float64), which is not what these cases check."""
    vals = [v for v in SPECIAL_INJECT if not (np.isinf(v) and op in ORDER_DEPENDENT_INF)]
    out = a.copy()
    flat = out.reshape(-1)
    pos = [p for p in range(flat.size) if (p * 7) % 5 == 1]
    for k, p in enumerate(pos):
        flat[p] = vals[k % len(vals)]
    return out


# ------------------------------------------------------------------------------------- graphs
def _dtype_of(a: np.ndarray):
    return from_numpy_dtype(a.dtype)


def add_case(g: Graph, case: Case) -> None:
    """The case's operands (inputs or parameters), its node and its output, into g."""
    ins = []
    for j, a in enumerate(case.arrays):
        if a is None:
            ins.append(None)
            continue
        t = TensorType(tuple(a.shape), _dtype_of(a))
        if j in case.params:
            ins.append(g.add_param(f"{case.name}.w{j}", t, np.ascontiguousarray(a)))
            continue
        act = case.acts[j] if j < len(case.acts) else None
        if act == PREPEND:
            t = t.with_shape((B, *a.shape))
        elif act == LEAD:
            t = t.with_shape((B, *a.shape[1:]))
        ins.append(g.add_input(f"{case.name}_x{j}", t))
    op = get_op(case.op)
    attrs = op.bind_attrs(case.attrs)
    t = op.infer_type([None if v is None else v.type for v in ins], attrs)
    n = g.add_node(case.op, ins, attrs, t, scope=case.scope)
    g.outputs.append((case.name, n.out))


def build_graph(name: str, cases: list[Case]) -> Graph:
    g = Graph(name)
    if any(c.dynamic for c in cases):
        g.dims["B"] = (1, 16)
    for c in cases:
        add_case(g, c)
    if g.dims and not any(d == B for v in g.inputs for d in v.type.shape):
        g.add_input("batch_carrier", TensorType((B,), graphc.float32))  # B is read off the inputs
    verify(g)
    return g


def _vary(a: np.ndarray, k: int) -> np.ndarray:
    """The k-th sample of a batch: k = 0 is the table's; floats scaled (signs and domains kept),
    integers and bools rotated (index ranges kept)."""
    if k == 0:
        return a
    if a.dtype.kind == "f":
        return (a * (1 + k / 4)).astype(a.dtype)
    return np.roll(a.ravel(), k).reshape(a.shape)


def feeds(g: Graph, cases: list[Case], b: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for c in cases:
        for j, a in enumerate(c.arrays):
            if a is None or j in c.params:
                continue
            act = c.acts[j] if j < len(c.acts) else None
            if act == PREPEND:
                x = np.stack([_vary(a, k) for k in range(b)])
            elif act == LEAD:
                n = a.shape[0]
                x = np.stack([_vary(a[r % n], r // n) for r in range(b)])
            else:
                x = a
            out[f"{c.name}_x{j}"] = np.array(x, order="C")
    if any(v.name == "batch_carrier" for v in g.inputs):
        out["batch_carrier"] = np.zeros(b, np.float32)
    return out


def probe(case: Case) -> None:
    """Ask the type rule and the backend about one case alone; mark what they refuse."""
    g = Graph("probe")
    if case.dynamic:
        g.dims["B"] = (1, 16)
    try:
        add_case(g, case)
        verify(g)
    except (GraphcError, ValueError) as e:
        if case.variant in DTYPE_VARIANTS:
            raise LookupError("the type rule refuses this dtype") from e
        case.error = f"{type(e).__name__}: {e}"
        return
    try:
        lower_program(g, CBackend(), name="probe")
    except UnsupportedError as e:
        case.unsupported = str(e)


@lru_cache(maxsize=1)
def all_cases() -> tuple[Case, ...]:
    out = []
    for op in sorted(OPS):
        for c in table_cases(op):
            try:
                probe(c)
            except LookupError:
                continue
            out.append(c)
    return tuple(out)


# ------------------------------------------------------------------------------------- building
# cases per library, at most: gcc's register allocation over the run function grows about
# quadratically with the inputs and outputs (784 cases, 1570 of them: 23 s for NAME_model.c alone)
MAX_CASES = 160


def buildable(c: Case) -> bool:
    return not c.unsupported and not c.error


@lru_cache(maxsize=1)
def library_plan() -> dict[str, str]:
    """op -> library name: the ops of a family, in order, cut into libraries of at most MAX_CASES cases."""
    plan: dict[str, str] = {}
    count: dict[str, int] = {}
    chunk: dict[str, int] = {}
    for op in sorted(OPS):
        fam = family_of(op)
        n = sum(1 for c in all_cases() if c.op == op and buildable(c))
        if count.get(fam, 0) and count[fam] + n > MAX_CASES:
            chunk[fam] = chunk.get(fam, 0) + 1
            count[fam] = 0
        count[fam] = count.get(fam, 0) + n
        plan[op] = f"{fam}{chunk.get(fam, 0)}"
    return plan


@dataclass
class Library:
    name: str
    family: str
    cases: list[Case]
    graph: Graph | None = None
    error: str = ""
    got: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    want: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)


@pytest.fixture(scope="session")
def cache_dir():
    """The backend tests' build cache (see tests/test_backend_c.py): runtime objects build once."""
    return shared_cache_dir()


class Libraries:
    """The libraries of the cases, each built when a test first needs it and run at every batch size."""

    def __init__(self, cache_dir: str):
        self.cache_dir = cache_dir
        self.built: dict[str, Library] = {}

    def of(self, op: str) -> Library:
        name = library_plan()[op]
        if name in self.built:
            return self.built[name]
        ops = {o for o, lib in library_plan().items() if lib == name}
        cases = [c for c in all_cases() if c.op in ops and buildable(c)]
        lib = self.built[name] = Library(name, family_of(op), cases)
        if not cases:
            return lib
        mode = WEIGHTS_MODE.get(lib.family, "embed")
        try:
            lib.graph = g = build_graph(f"ops_{name}", cases)
            with strict_cflags():
                model = graphc.compile(g, optimized=g, cache_dir=self.cache_dir, weights=mode, backend="c")
            if mode == "file":
                assert model.weights_path is not None and model.weights_path.exists()
            for b in BATCHES if g.dims else BATCHES[:1]:
                f = feeds(g, cases, b)
                with np.errstate(all="ignore"):
                    lib.want[b] = interpret(g, f)
                lib.got[b] = model.run(**f)
        except Exception as e:  # reported by every op of the library
            lib.error = f"{type(e).__name__}: {e}"
        return lib


@contextlib.contextmanager
def strict_cflags():
    """Generated code compiles without warnings (like tests/test_backend_c.py)."""
    saved = os.environ.get("GRAPHC_CFLAGS")
    os.environ["GRAPHC_CFLAGS"] = os.environ.get("GRAPHC_TEST_CFLAGS", "-Wall -Wextra -Werror")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("GRAPHC_CFLAGS", None)
        else:
            os.environ["GRAPHC_CFLAGS"] = saved


@pytest.fixture(scope="session")
def libraries(cache_dir):
    return Libraries(cache_dir)


# ------------------------------------------------------------------------------------- comparing
def tolerance(case: Case, dt: np.dtype) -> tuple[float, float]:
    """(rtol, atol relative to the largest magnitude) for a float output."""
    elementwise = OPS[case.op].lowering == "elementwise" or family_of(case.op) == "shape"
    if dt == np.float64:
        return (1e-13, 0.0) if elementwise else (1e-12, 1e-12)
    return (1e-6, 0.0) if elementwise else (1e-5, 1e-5)


def compare(case: Case, got: np.ndarray, want: np.ndarray, b: int) -> str:
    """'' when they agree, else one line: how many elements differ and the worst few."""
    where = f"{case.name} (B={b})"
    if got.dtype != want.dtype or got.shape != want.shape:
        return f"{where}: got {got.dtype}{list(got.shape)}, expected {want.dtype}{list(want.shape)}"
    if want.dtype.kind == "f":
        rtol, atol = tolerance(case, want.dtype)
        finite = np.abs(want[np.isfinite(want)])
        atol *= max(1.0, float(finite.max())) if finite.size else 1.0
        with np.errstate(all="ignore"):
            err = np.abs(got.astype(np.float64) - want) - rtol * np.abs(want.astype(np.float64))
            same = (got == want) | (np.isnan(got) & np.isnan(want)) | (err <= atol)
        what = f"rtol {rtol:g}, atol {atol:.3g}"
    else:
        same = got == want
        what = "exact"
    if same.all():
        return ""
    bad = np.argwhere(~same)
    if want.dtype.kind == "f":
        with np.errstate(all="ignore"):
            rel = np.abs(got.astype(np.float64) - want) / np.maximum(np.abs(want), np.finfo(want.dtype).tiny)
        rel[np.isnan(rel)] = np.inf
        bad = bad[np.argsort(-rel[tuple(bad.T)], kind="stable")]
    pts = []
    for i in bad[:4]:
        i = tuple(int(k) for k in i)
        arg = ""
        if case.index < 0 and case.variant.startswith("nan"):  # the special operands of that element
            at = [a[tuple(k if s > 1 else 0 for k, s in zip(i[len(i) - a.ndim:], a.shape))]
                  for a in case.arrays if a is not None and a.dtype.kind == "f"]
            arg = " at " + ", ".join(repr(float(v)) for v in at)
        pts.append(f"{i}{arg}: got {got[i]!r}, expected {want[i]!r}")
    return f"{where}: {len(bad)}/{want.size} differ ({what}); " + "; ".join(pts)


UNSUPPORTED_RE = re.compile(r"^not supported by the C backend: op (?P<op>\w+), "
                            r"dtype (?P<dtype>[a-z0-9]+(, [a-z0-9]+)*), at module path (?P<path>\S+)")


# ------------------------------------------------------------------------------------- tests
def test_every_op_has_samples():
    missing = sorted(set(OPS) - set(SAMPLES))
    assert not missing, f"ops without sample cases in tests/op_table.py (the backend tests need them): {missing}"


def test_every_op_has_a_dynamic_batch_rule():
    missing = sorted(op for op in OPS if dynamic_rule(op) is None and op not in NO_DYNAMIC)
    assert not missing, (f"ops without a dynamic-batch rule in tests/test_backend_ops.py (DYNAMIC): {missing}; "
                         "add one (which operands get a leading B dim) or list the op in NO_DYNAMIC with a reason")


@pytest.mark.parametrize("op", sorted(OPS))
def test_op_matches_interpreter(op, libraries):
    cases = [c for c in all_cases() if c.op == op]
    assert cases, f"op {op} has no sample cases in tests/op_table.py"
    problems = [f"{c.name}: {c.error}" for c in cases if c.error]
    lib = libraries.of(op)
    if lib.error:
        problems.append(f"library {lib.name} failed: {lib.error}")
    for c in cases:
        if c.unsupported:
            m = UNSUPPORTED_RE.match(c.unsupported)
            if c.variant not in DTYPE_VARIANTS:
                problems.append(f"{c.name}: the backend refuses a float32 table case: {c.unsupported}")
            elif c.family in MUST_SUPPORT_DTYPES:
                problems.append(f"{c.name}: the backend refuses a dtype it claims for {c.family} ops: "
                                f"{c.unsupported}")
            elif not m or m["op"] != op or m["path"] != c.scope:
                problems.append(f"{c.name}: the error does not name op, dtype and module path {c.scope}: "
                                f"{c.unsupported}")
            continue
        if c.error or lib.error:
            continue
        for b, got in lib.got.items():
            msg = compare(c, got[c.name], lib.want[b][c.name], b)
            if msg:
                problems.append(msg)
    assert not problems, f"{op}: {len(problems)} problem(s)\n" + "\n".join(problems)


def test_variants_cover_every_op():
    """Every op compiles in at least its static table cases, and the variants are present."""
    cases = all_cases()
    by_op: dict[str, set[str]] = {}
    for c in cases:
        if not c.unsupported and not c.error:
            by_op.setdefault(c.op, set()).add(c.variant)
    for op in OPS:
        vs = by_op.get(op, set())
        assert "static" in vs, f"{op}: no table case compiles"
        if op not in NO_DYNAMIC:
            assert "dyn" in vs, f"{op}: no dynamic-batch case"
        if op in WEIGHTS:
            assert "param" in vs, f"{op}: no case with weights as parameters"
        if OPS[op].lowering == "elementwise" and any(a.dtype.kind == "f" for arrays, _ in SAMPLES[op] for a in arrays):
            assert any(v.startswith("nan") for v in vs), f"{op}: no NaN/inf case"
    for dt in DTYPE_VARIANTS:
        assert any(c.variant == dt and c.family == "shape" and not c.unsupported for c in cases), dt
        assert any(c.variant == dt and c.family == "elementwise" and not c.unsupported for c in cases), dt


def test_unsupported_dtype_names_op_dtype_and_module_path(tmp_path):
    """Combinations the backend does not run fail at compile time with one clear line."""
    def one(build):
        g = Graph("bad")
        x = g.add_input("x", TensorType((2, 3, 4, 5), graphc.float64))
        g.set_outputs([("y", build(g, x))])
        verify(g)
        return g

    def node(g, op, ins, scope, **attrs):
        o = get_op(op)
        attrs = o.bind_attrs(attrs)
        return g.add_node(op, ins, attrs, o.infer_type([v.type for v in ins], attrs), scope=scope).out

    cases = {
        ("softmax", "float64", "head.attn"): lambda g, x: node(g, "softmax", [x], "head.attn", dim=1),
        ("layer_norm", "float64", "enc.ln"): lambda g, x: node(g, "layer_norm", [x], "enc.ln", ndim=1),
        ("max_pool2d", "float64", "pool"): lambda g, x: node(g, "max_pool2d", [x], "pool", kernel=[2, 2],
                                                             stride=[2, 2]),
        ("cast", "float16, float64", "half"): lambda g, x: node(g, "cast", [node(g, "cast", [x], "half",
                                                                                 dtype="f16")], "back",
                                                                dtype="f64"),
    }
    for (op, dts, path), build in cases.items():
        with pytest.raises(UnsupportedError) as e:
            generate(one(build))
        m = UNSUPPORTED_RE.match(str(e.value))
        assert m and (m["op"], m["dtype"], m["path"]) == (op, dts, path), str(e.value)
    # graphc.compile stops there too, before the C compiler runs
    with pytest.raises(UnsupportedError, match=r"^not supported by the C backend: op softmax, dtype float64, "
                                               r"at module path head\.attn"):
        graphc.compile(one(cases[("softmax", "float64", "head.attn")]), cache_dir=tmp_path, backend="c")
    assert not any(tmp_path.iterdir())
