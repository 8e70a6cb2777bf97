"""Every registry op through the CUDA backend, on the CPU emulation of CUDA (tests/cuda_emu), against the
reference interpreter: the op table of tests/test_backend_ops.py (its cases, variants, libraries,
feeds and tolerances: static and dynamic shapes, parameters, float64 / int64 / int32 / bool variants,
NaN, infinities, signed zeros and subnormals) run on the generated CUDA instead of the generated C.

The CUDA backend must accept every case the C backend accepts (the same IR, the same dtypes); what both
refuse must be refused with "not supported by the CUDA backend: op X, dtype Y, at module path Z".
Libraries are built with the host compiler at -O0 (cases are small; building is most of the time) and
cached by content, in parallel. tests/test_backend_cuda.py runs the same graphs' sources through nvcc.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
from functools import lru_cache
from typing import Any

import numpy as np
import pytest

from graphc.backend.cuda import CudaBackend
from graphc.backend.lowering import lower_program
from graphc.errors import UnsupportedError
from graphc.ir import Graph, interpret, verify
from graphc.ops import OPS
from tests import test_backend_ops as table
from tests.cuda_emu import emulate
from tests.shared_build import shared_cache_dir

pytestmark = pytest.mark.skipif(not emulate.available(), reason="needs a C++ compiler (g++ or $CXX) and a C compiler")

UNSUPPORTED_RE = re.compile(r"^not supported by the CUDA backend: op (?P<op>\w+), "
                            r"dtype (?P<dtype>[a-z0-9]+(, [a-z0-9]+)*), at module path (?P<path>\S+)")


@lru_cache(maxsize=1)
def cuda_refusals() -> dict[str, str]:
    """case name -> the CUDA backend's UnsupportedError message, for the cases it refuses."""
    out: dict[str, str] = {}
    for c in table.all_cases():
        if c.error:
            continue
        g = Graph("probe")
        if c.dynamic:
            g.dims["B"] = (1, 16)
        table.add_case(g, c)
        verify(g)
        try:
            lower_program(g, CudaBackend(), name="probe")
        except UnsupportedError as e:
            out[c.name] = str(e)
    return out


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    """Every library of the op table built on the emulation (in parallel) and run at each batch size:
    library name -> (cases, {batch: got}, {batch: want}) or the exception that stopped it."""
    cache = shared_cache_dir()
    refused = cuda_refusals()
    plan = table.library_plan()
    libs: dict[str, list[Any]] = {}
    for c in table.all_cases():
        if table.buildable(c) and c.name not in refused:
            libs.setdefault(plan[c.op], []).append(c)

    def run(name: str, cases: list[Any]) -> Any:
        g = table.build_graph(f"ops_{name}", cases)
        model = emulate.build(g, cache, cxx_opt="-O0")
        got, want = {}, {}
        for b in table.BATCHES if g.dims else table.BATCHES[:1]:
            f = table.feeds(g, cases, b)
            with np.errstate(all="ignore"):
                want[b] = interpret(g, f)
            got[b] = model.run(**f)
        return cases, got, want

    out: dict[str, Any] = {}
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        futures = {name: pool.submit(run, name, cases) for name, cases in libs.items()}
        for name, f in futures.items():
            try:
                out[name] = f.result()
            except Exception as e:  # noqa: BLE001 - reported by every op of that library
                out[name] = e
    return out


@pytest.mark.parametrize("op", sorted(OPS))
def test_op_matches_interpreter_on_emulated_cuda(op: str, results: dict[str, Any]) -> None:
    refused = cuda_refusals()
    problems = []
    for c in table.all_cases():
        if c.op != op or c.error:
            continue
        msg = refused.get(c.name)
        if msg is None:
            continue
        if not c.unsupported:
            problems.append(f"{c.name}: the C backend runs it, the CUDA backend refuses: {msg}")
        m = UNSUPPORTED_RE.match(msg)
        if not m or m["op"] != op or m["path"] != c.scope:
            problems.append(f"{c.name}: the error does not name op, dtype and module path {c.scope}: {msg}")
    lib = results.get(table.library_plan()[op])
    if isinstance(lib, Exception):
        problems.append(f"library {table.library_plan()[op]} failed: {type(lib).__name__}: {lib}")
    elif lib is not None:
        cases, got, want = lib
        for c in cases:
            if c.op != op:
                continue
            for b in got:
                msg = table.compare(c, got[b][c.name], want[b][c.name], b)
                if msg:
                    problems.append(msg)
    assert not problems, f"{op}: {len(problems)} problem(s)\n" + "\n".join(problems)
