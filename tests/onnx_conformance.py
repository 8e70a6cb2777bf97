"""The ONNX backend node tests through graphc.from_onnx: interpreted and compiled to C.

``python tests/onnx_conformance.py`` prints the pass table (op, cases, passed, out of scope with reasons)
as markdown; ``--write`` puts it between the markers in README.md and docs/importers.md.
tests/test_onnx_node_conformance.py runs the same cases and checks the tables.

Every node test of a supported op (``onnx.backend.test.loader.load_model_tests(kind="node")``, built in
memory, each with its input and expected output protobufs) is imported; the cases graphc supports are put
side by side in a few graphs (each case's inputs and outputs under its own prefix), which are compiled
into one C library each, so hundreds of cases cost a handful of compiles. Outputs are compared with the
tolerances of onnx's own backend test runner (rtol 1e-3, atol 1e-7, NaN equal to NaN, the same dtype),
from the C library and from graphc's reference interpreter. A case graphc cannot import (an element
type graphc lacks, training mode, an attribute graphc does not do) is reported as out of scope with the
importer's reason, never counted as passed.
"""

from __future__ import annotations

import os
import re
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# the ops the importer targets, in the order of the table
OPS = ["Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Mod", "Pow", "Sqrt", "Exp", "Log", "Erf", "Relu", "LeakyRelu",
       "Sigmoid", "Tanh", "Gelu", "Softmax", "LogSoftmax", "Conv", "ConvTranspose", "MaxPool", "AveragePool",
       "GlobalAveragePool", "BatchNormalization", "LayerNormalization", "Reshape", "Transpose", "Flatten", "Concat",
       "Split", "Slice", "Gather", "GatherElements", "Unsqueeze", "Squeeze", "Expand", "ReduceMean", "ReduceSum",
       "ReduceMax", "Where", "Clip", "Identity", "Cast", "Shape", "ConstantOfShape", "Range", "CumSum", "TopK",
       "IsNaN", "IsInf"]

RTOL, ATOL = 1e-3, 1e-7  # onnx.backend.test.runner's defaults (TestCase.rtol / atol)
BATCH = 120  # cases per compiled library
BEGIN, END = "<!-- onnx-conformance:begin -->", "<!-- onnx-conformance:end -->"


@dataclass
class Case:
    name: str
    op: str
    model: Any
    inputs: list[Any]
    outputs: list[Any]
    rtol: float = RTOL
    atol: float = ATOL
    # graph inputs bound to the test data's values (shapes, axes, slice bounds: graphc builds a static graph)
    constants: dict[str, np.ndarray] = field(default_factory=dict)

    def feeds(self) -> dict[str, Any]:
        """{ONNX input name: array} of the graph inputs (initializers excluded)."""
        inits = {t.name for t in self.model.graph.initializer}
        names = [vi.name for vi in self.model.graph.input if vi.name not in inits]
        return dict(zip(names, self.inputs))


def _array(x: Any) -> Any:
    from onnx import TensorProto, numpy_helper

    return numpy_helper.to_array(x) if isinstance(x, TensorProto) else x


@dataclass
class Result:
    case: Case
    status: str = "pending"  # passed / out of scope / failed
    reason: str = ""
    stages: dict[str, str] = field(default_factory=dict)


def _base_name(name: str) -> str:
    return re.sub(r"_expanded(_ver\d+)?$", "", name)


def load_cases(ops: Iterable[str] = OPS) -> list[Case]:
    """The node test cases of ops (an expanded variant belongs to the op its base test exercises); one
    Case per data set."""
    from onnx.backend.test.loader import load_model_tests

    wanted = set(ops)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tests = load_model_tests(kind="node")
    op_of: dict[str, str] = {}
    for t in tests:
        nodes = t.model.graph.node
        if len(nodes) == 1 and not t.name.endswith(("_expanded",)) and "_expanded_ver" not in t.name:
            op_of[t.name] = nodes[0].op_type
    cases = []
    for t in tests:
        op = op_of.get(t.name) or op_of.get(_base_name(t.name))
        if op not in wanted:
            continue
        for i, (ins, outs) in enumerate(t.data_sets or [([], [])]):
            name = t.name if len(t.data_sets or []) <= 1 else f"{t.name}[{i}]"
            cases.append(Case(name, op, t.model, [_array(x) for x in ins], [_array(x) for x in outs], t.rtol,
                              t.atol))
    return cases


def _short(e: BaseException) -> str:
    msg = str(e).split("; see docs/importers.md")[0]
    msg = re.sub(r"^[^:]*: node '[^']*' \([A-Za-z]+, opset \d+\): ", "", msg)
    return msg.splitlines()[0][:160] if msg else type(e).__name__


def _compare(got: np.ndarray, want: Any, rtol: float, atol: float) -> str:
    want = np.asarray(want)
    got = np.asarray(got)
    if want.dtype == object:
        return "expected output is not a tensor"
    if got.dtype != want.dtype:
        return f"dtype {got.dtype}, expected {want.dtype}"
    if got.shape != want.shape:
        return f"shape {got.shape}, expected {want.shape}"
    if want.dtype.kind in "biu":
        return "" if np.array_equal(got, want) else f"values differ ({int((got != want).sum())} elements)"
    g64, w64 = got.astype(np.float64), want.astype(np.float64)
    ok = np.isclose(g64, w64, rtol=rtol, atol=atol, equal_nan=True)
    if ok.all():
        return ""
    err = np.abs(g64 - w64)[~ok]
    return f"{int((~ok).sum())} of {ok.size} elements off (max abs error {np.nanmax(err):.3g})"


def _import_case(imp: Any, case: Case, prefix: str) -> tuple[list[tuple[str, Any]], dict[str, str]]:
    """Import case into imp under prefix; returns its outputs and {graph input name: ONNX input name}."""
    before = len(imp.graph.inputs)
    outs = imp.add(case.model, case.name, prefix, constants=case.constants)
    onnx_names = [n for n in case.feeds() if n not in case.constants]
    added = [v.name for v in imp.graph.inputs[before:]]
    return outs, dict(zip(added, onnx_names))


def run(cases: list[Case], *, compiled: bool = True, cache_dir: str | None = None,
        log: Any = None) -> list[Result]:
    """Import every case alone (the out-of-scope verdict), then import the supported ones side by side in
    graphs of BATCH cases, interpret and compile each graph once, and compare every output."""
    from graphc.errors import UnsupportedError
    from graphc.importers.onnx import Importer, NeedsConstant, OnnxImportError
    from graphc.ir.interpreter import interpret

    results = [Result(c) for c in cases]
    ok: list[Result] = []
    for r in results:
        c = r.case
        reason = _dtype_scope(c)
        if reason:
            r.status, r.reason = "out of scope", reason
            continue
        try:
            _bind_constants(c, Importer, NeedsConstant)
        except UnsupportedError as e:
            r.status, r.reason = "out of scope", _short(e)
            continue
        except (OnnxImportError, Exception) as e:  # noqa: BLE001 - every failure is reported, not raised
            r.status, r.reason = "failed", f"import: {type(e).__name__}: {_short(e)}"
            continue
        ok.append(r)
    for start in range(0, len(ok), BATCH):
        _run_batch(ok[start:start + BATCH], start // BATCH, compiled, cache_dir, log, interpret)
    return results


def _bind_constants(c: Case, importer: Any, needs_constant: type) -> None:
    """Import c alone, binding each graph input a node needs at import (a shape, axes, slice bounds) to
    the test data's value, as a model exporter would have made it a constant."""
    feeds = c.feeds()
    while True:
        try:
            imp = importer("case")
            g = imp.finish(imp.add(c.model, c.name, constants=c.constants))
            half = sorted({v.type.dtype.name for v in [*g.inputs, *g.params.values(), *(n.out for n in g.nodes)]
                           if v.type.dtype.name in ("float16", "bfloat16")})
            if half:
                from graphc.errors import UnsupportedError

                raise UnsupportedError(f"the C backend has no {'/'.join(half)} kernels")
            return
        except needs_constant as e:
            if e.input_name not in feeds or e.input_name in c.constants:
                raise
            c.constants[e.input_name] = np.asarray(feeds[e.input_name])


def _dtype_scope(c: Case) -> str:
    """Cases whose inputs or expected outputs have an element type graphc lacks."""
    from graphc.importers.onnx import ONNX_DTYPES, type_name

    g = c.model.graph
    for vi in list(g.input) + list(g.output):
        tt = vi.type
        if not tt.HasField("tensor_type"):
            return f"{vi.name} is a {tt.WhichOneof('value')}, not a tensor"
        code = tt.tensor_type.elem_type
        if code not in ONNX_DTYPES:
            return f"element type {type_name(code)} (not a graphc dtype)"
    return ""


def _run_batch(batch: list[Result], index: int, compiled: bool, cache_dir: str | None, log: Any,
               interpret: Any) -> None:
    import graphc
    from graphc.importers.onnx import Importer

    imp = Importer(f"onnx_conformance_{index}")
    per_case = []
    all_outs = []
    for k, r in enumerate(batch):
        prefix = f"c{k}_"
        outs, in_map = _import_case(imp, r.case, prefix)
        per_case.append((r, outs, in_map))
        all_outs += outs
    g = imp.finish(all_outs)
    feeds: dict[str, np.ndarray] = {}
    for r, _, in_map in per_case:
        onnx_feeds = r.case.feeds()
        for gname, oname in in_map.items():
            feeds[gname] = np.asarray(onnx_feeds[oname])
    t0 = time.perf_counter()
    try:
        interp = interpret(g, feeds)
    except Exception as e:  # noqa: BLE001
        interp = None
        interp_error = f"{type(e).__name__}: {_short(e)}"
    t_interp = time.perf_counter() - t0
    lib_out = None
    lib_error = ""
    t_compile = 0.0
    if compiled:
        t0 = time.perf_counter()
        try:
            lib = graphc.compile(g, name=f"onnx_conformance_{index}", cache_dir=cache_dir)
            t_compile = time.perf_counter() - t0
            lib_out = lib.run(**feeds)
        except Exception as e:  # noqa: BLE001
            lib_error = f"{type(e).__name__}: {_short(e)}"
    if log is not None:
        log(f"batch {index}: {len(batch)} cases, {len(g.nodes)} nodes, interpreter {t_interp:.1f}s, "
            f"compile {t_compile:.1f}s{' (failed: ' + lib_error + ')' if lib_error else ''}")
    if (interp is None or lib_error) and len(batch) > 1:
        # a failure anywhere in the batch: find the case(s) by halves
        mid = len(batch) // 2
        _run_batch(batch[:mid], index * 2 + 1000, compiled, cache_dir, log, interpret)
        _run_batch(batch[mid:], index * 2 + 1001, compiled, cache_dir, log, interpret)
        return
    for r, outs, _ in per_case:
        problems = []
        if interp is None:
            problems.append(f"interpreter: {interp_error}")
        if compiled and lib_error:
            problems.append(f"compiled: {lib_error}")
        for (oname, _), want in zip(outs, r.case.outputs):
            if interp is not None:
                msg = _compare(interp[oname], want, r.case.rtol, r.case.atol)
                if msg:
                    problems.append(f"interpreter {oname}: {msg}")
            if lib_out is not None:
                msg = _compare(lib_out[oname], want, r.case.rtol, r.case.atol)
                if msg:
                    problems.append(f"compiled {oname}: {msg}")
        if problems:
            r.status, r.reason = "failed", "; ".join(problems)[:300]
        else:
            r.status = "passed"


def table(results: list[Result]) -> str:
    """The markdown pass table: per op, cases, passed, and the out-of-scope cases with their reasons."""
    by_op: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        by_op[r.case.op].append(r)
    lines = ["| ONNX op | cases | passed | failed | out of scope (reason: cases) |",
             "|---|---:|---:|---:|---|"]
    tot = defaultdict(int)
    for op in OPS:
        rs = by_op.get(op, [])
        passed = sum(r.status == "passed" for r in rs)
        failed = sum(r.status == "failed" for r in rs)
        scope: dict[str, int] = defaultdict(int)
        for r in rs:
            if r.status == "out of scope":
                scope[_reason_class(r.reason)] += 1
        tot["cases"] += len(rs)
        tot["passed"] += passed
        tot["failed"] += failed
        tot["scope"] += sum(scope.values())
        why = "; ".join(f"{k}: {v}" for k, v in sorted(scope.items())) or "-"
        lines.append(f"| {op} | {len(rs)} | {passed} | {failed} | {why} |")
    lines.append(f"| **total** | {tot['cases']} | {tot['passed']} | {tot['failed']} | {tot['scope']} |")
    return "\n".join(lines)


def _reason_class(reason: str) -> str:
    """The reason without case-specific detail, so the table groups cases."""
    m = re.match(r"element type (\w+)", reason)
    if m:
        return f"element type {m.group(1)}"
    return re.sub(r"\s*\(.*$", "", reason).replace("|", "/")


def write_tables(text: str) -> None:
    for path in (ROOT / "README.md", ROOT / "docs" / "importers.md"):
        s = path.read_text()
        if BEGIN not in s:
            raise SystemExit(f"{path}: no {BEGIN} marker")
        head, rest = s.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv: list[str]) -> int:
    t0 = time.perf_counter()
    cases = load_cases()
    results = run(cases, cache_dir=os.environ.get("GRAPHC_CACHE_DIR"), log=lambda m: print(m, file=sys.stderr))
    text = table(results)
    print(text)
    for r in results:
        if r.status == "failed" or "-v" in argv:
            print(f"{r.status:13s} {r.case.name}: {r.reason}", file=sys.stderr)
    print(f"{len(cases)} cases in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    if "--write" in argv:
        write_tables(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main(sys.argv[1:]))
