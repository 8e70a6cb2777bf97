"""Hardening of the generated libraries: sanitizers, valgrind, a fuzzed weights loader, the C input checks
and the arena plan, all through the real generated code.

* Sanitizers (``graphc.compile(..., sanitize=True)``): every example model and a few op-family graphs
  (conv/pool/sdpa/embedding/norms, concat/pad/slice with step/permute/gather, reductions, and a graph with
  two dynamic dims B and T) are exported as ASan/UBSan libraries; the folder's own ``main`` (its Makefile
  links it with the same flags, so ASan's runtime comes first) runs them at every dim's minimum and
  maximum with leak checking on. No report may appear, and the outputs match the optimised library's
  (called from Python with main's input pattern) to float32 round-off: -O1 and -O3 -march=native differ
  in FMA contraction and summation order, so bit equality is not expected.
  Why main.c and not Python: a sanitized .so cannot be dlopen'ed into an unsanitized Python (ASan aborts
  the process); Python under ``LD_PRELOAD=libasan.so`` works but runs numpy and cffi under ASan too
  (slow, and reports in them are not ours). A C program is the robust route.
* valgrind memcheck on the exported main of one small model, both weight modes, built with
  ``target="portable"`` (valgrind does not decode AVX-512).
* The weights loader through the generated ``NAME_create``: a file-mode export's safetensors file
  mutated (truncated at every header offset and through the data, bytes flipped in the header, the
  data_offsets, dtypes, shapes, metadata and names rewritten, names swapped, garbage appended). Each case
  is judged by an independent Python model of the format's rules: create succeeds exactly when the file
  is valid for this model, and then the library computes with exactly the file's (possibly mutated)
  weights; otherwise it returns FORMAT/MISMATCH with a message. The same corpus then runs through a C
  driver linked with the sanitized library: same status per file, no report.
* The C input checks: NULL context/dims/inputs/outputs and each single input or output pointer, each
  pointer misaligned for its dtype (UBSan would report the kernels' loads), every dim below its minimum,
  above its maximum, negative, INT64_MIN/MAX, bad thread counts, out-of-range introspection indices,
  through ``NAME_run_v`` from a C driver (plain and sanitized): a nonzero status and a message naming the
  problem, and the context still works afterwards.
* The arena plan of every example and the two-dim graph, for many sampled dims: blocks live at the same
  step never overlap, every block lies inside ``NAME_arena_bytes(dims)`` (what a run with those dims
  allocates) and inside the plan at the dims' maxima, and every block holds its values' bytes (numbers from the
  compiled library and the manifest; tests/test_backend_c.py checks one plan's polynomials symbolically).
  A sanitized build also poisons the arena bytes no live value holds; a kernel made to write one
  element past its output is shown to be reported.
* The newer code: one C host runs a copied (``NAME_create``, its file emptied right after) and a mapped
  (``NAME_create_ex(..., NAME_CREATE_MAP_WEIGHTS)``) context of one default-target library side by side,
  each on its own pool of two threads, through a GEMM, a custom op's C unit and the sort, argsort, topk,
  cumsum and cumprod kernels, with the per-kernel profile on; under ASan/UBSan at every ISA level the
  dispatch can pick here (and once with GRAPHC_PROFILE=1) and under valgrind memcheck at avx2 and
  generic, against the numpy interpreter. Under ThreadSanitizer: the thread pool alone, and the whole
  model as a serial library (openmp=False: the OpenMP runtime is not instrumented, so ThreadSanitizer
  cannot follow its barriers) whose GEMMs run on the pool.

Everything is built once per module (a thread pool of two over the compiles) in the build cache shared
with the other backend tests. Sanitizer tests skip only when gcc cannot build and run an ASan/UBSan (or
TSan) program here; valgrind tests only when valgrind is not installed.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import graphc
from graphc.backend import generate, load_compiled
from graphc.backend.build import SANITIZE_FLAGS
from graphc.ir import interpret, parse
from graphc.sym import Sym, evaluate, parse_dim
from tests.shared_build import sanitized_cache_dir, shared_cache_dir
from tests.test_backend_c import GB, i64, nn_graph, reduce_graph, shape_graph

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["mlp", "resnet", "transformer", "lora", "digits"]
STRICT = "-Wall -Wextra -Werror"
SAN_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=97",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98"}
REPORT = re.compile(r"ERROR: (Address|Leak)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer")


def _cache_dir() -> str:
    return shared_cache_dir()


def _probe_sanitizers() -> str | None:
    """None when gcc builds and runs a program and a shared library with ASan/UBSan, else why not."""
    if shutil.which("gcc") is None:
        return "no gcc"
    with tempfile.TemporaryDirectory() as d:
        Path(d, "lib.c").write_text("int f(int *p) { return p[0]; }\n")
        Path(d, "main.c").write_text("int f(int *p);\nint main(void) { int x = 0; return f(&x); }\n")
        for cmd in (["gcc", *SANITIZE_FLAGS, "-fPIC", "-shared", "lib.c", "-o", "libf.so"],
                    ["gcc", *SANITIZE_FLAGS, "main.c", "-L.", "-lf", "-Wl,-rpath,$ORIGIN", "-o", "probe"],
                    ["./probe"]):
            r = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
            if r.returncode != 0:
                return f"gcc cannot build and run ASan/UBSan programs here: {' '.join(cmd)}: {r.stderr[-300:]}"
    return None


_SAN_PROBLEM = _probe_sanitizers()
needs_sanitizers = pytest.mark.skipif(_SAN_PROBLEM is not None, reason=str(_SAN_PROBLEM))
needs_valgrind = pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")


# ------------------------------------------------------------------------------------------ models
def _example(name: str) -> dict[str, Any]:
    from tests.test_examples import load_example

    return load_example(name)


B, T = Sym.var("B"), Sym.var("T")


def bt_graph():
    """Two dynamic dims (B, T) through embedding, causal sdpa, matmul, softmax, concat, pad, slices
    (one with a step) and reductions: the memory plan's polynomials have B*T*T terms."""
    gb = GB("bt", dims={"B": (0, 8), "T": (2, 24)})  # B=0: empty tensors through every kernel
    x = gb.input("x", (B, T, 6))
    ids = gb.input("ids", (B, T), i64)
    h = gb("add", x, gb("embedding", ids, gb.param("emb.weight", (5, 6))))
    q = gb("permute", gb("reshape", h, shape=(B, T, 2, 3)), dims=(0, 2, 1, 3))
    a = gb("sdpa", q, q, q, scale=0.5, is_causal=True)
    a = gb("reshape", gb("permute", a, dims=(0, 2, 1, 3)), shape=(B, T, 6))
    s = gb("softmax", gb("matmul", h, gb("permute", a, dims=(0, 2, 1))), dim=2)  # [B,T,T]
    c = gb("tanh", gb("concat", gb("matmul", s, h), gb("pad", a, pads=(0, 0, 1, 0)), dim=1))  # [B,2T+1,6]
    sl = gb("slice", c, dim=1, start=1, end=T, step=1)
    sl2 = gb("slice", c, dim=2, start=0, end=6, step=2)
    gb.out("red", gb("add", gb("sum", sl, dims=(1,)), gb("mean", c, dims=(1,))))
    gb.out("m", gb("amax", sl2, dims=(1,)))
    gb.out("s", s)
    return gb.graph()


def rank10_graph():
    """Inputs and outputs of rank 10 (main.c once had room for 8 dims of a shape)."""
    gb = GB("rank10", dims={"B": (1, 4)})
    x = gb.input("x", (B, 2, 1, 3, 1, 2, 1, 2, 1, 2))
    gb.out("y", gb("sum", gb("exp", x), dims=(1, 3), keepdim=True))
    return gb.graph()


class Fuzzy(graphc.nn.Module):
    """Small, with two parameters of the same shape (a name swap is a valid file with other weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = graphc.nn.Linear(6, 6)
        self.fc2 = graphc.nn.Linear(6, 6)
        self.head = graphc.nn.Linear(6, 3)

    def forward(self, x):
        return self.head(graphc.tanh(self.fc2(graphc.relu(self.fc1(x)))))


def _fuzzy():
    graphc.manual_seed(3)
    return Fuzzy().eval(), (graphc.randn(2, 6),), {"x": {0: graphc.Dim("B", 1, 16)}}


def _models() -> dict[str, tuple[Any, dict[str, Any]]]:
    """name -> (graph, compile arguments) of every model the sanitizer test runs; the op-family graphs'
    optimised builds are those of tests/test_backend_c.py (same arguments and flags: shared cache entries)."""
    out: dict[str, tuple[Any, dict[str, Any]]] = {}
    for name in EXAMPLES:
        ns = _example(name)
        out[name] = (graphc.trace(ns["model"], ns["example_inputs"], ns.get("dynamic"), name=name), {})
    for name, g, level in (("nnops", nn_graph(), 1), ("shapes", shape_graph(), 1), ("reductions", reduce_graph(), 2)):
        out[name] = (g, {"opt_level": level})
    out["bt"] = (bt_graph(), {"weights": "file"})
    g = reduce_graph()
    g.dims["B"] = (0, 16)  # at B=0, amax over B has no value: the library must fail cleanly, like the reference
    out["reductions0"] = (g, {})
    out["rank10"] = (rank10_graph(), {})
    return out


def _compile_all(jobs: dict[str, Any]) -> dict[str, Any]:
    """Run name -> (callable, group) jobs, two at a time, with GRAPHC_CFLAGS=STRICT (the flags of
    tests/test_backend_c.py). The first job of each group runs alone first: it builds that group's runtime
    objects (once per flags) with both cores, instead of two jobs building the same ones side by side."""
    mp = pytest.MonkeyPatch()
    mp.setenv("GRAPHC_CFLAGS", os.environ.get("GRAPHC_TEST_CFLAGS", STRICT))
    try:
        out = {}
        for group in dict.fromkeys(g for _, g in jobs.values()):
            first = next(n for n, (_, g) in jobs.items() if g == group)
            out[first] = jobs[first][0]()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = {n: pool.submit(fn) for n, (fn, _) in jobs.items() if n not in out}
            out.update({n: f.result() for n, f in futures.items()})
    finally:
        mp.undo()
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every model compiled twice: the optimised library and the sanitized one, both exported."""
    base = tmp_path_factory.mktemp("hardening")
    models = _models()

    def plain(name):
        g, kw = models[name]
        return graphc.compile(g, name=name, cache_dir=_cache_dir(), out_dir=base / "plain" / name, **kw)

    def sanitized(name):
        g, kw = models[name]
        out = base / "san" / name
        graphc.compile(g, name=name, cache_dir=sanitized_cache_dir(), out_dir=out, sanitize=True,
                       emit_only=_SAN_PROBLEM is not None, **kw)
        return out

    jobs = {("san", n): (lambda n=n: sanitized(n), "san") for n in models}
    jobs.update({("plain", n): (lambda n=n: plain(n), "plain") for n in models})
    done = _compile_all(jobs)
    return {"models": models, "plain": {n: done["plain", n] for n in models}, "base": base,
            "san": {n: done["san", n] for n in models}}


# ------------------------------------------------------------------------------------------ helpers
def pattern(shape, k: int, dt: np.dtype) -> np.ndarray:
    """main.c's inputs: element i of input k is ((i*7 + k*3) % 17) / 8 - 1 (floats), (i + k) % 2 (others)."""
    i = np.arange(int(np.prod(shape)), dtype=np.int64)
    if np.issubdtype(dt, np.floating):
        return (((i * 7 + k * 3) % 17) / 8.0 - 1.0).astype(dt).reshape(shape)
    return ((i + k) % 2).astype(dt).reshape(shape)


def parse_main_output(text: str) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {}
    name = None
    for line in text.splitlines():
        m = re.match(r"^(\w+) \w+\[", line)
        if m:
            name = m.group(1)
            out[name] = []
        else:
            out[name].append(float(line))
    return {k: np.array(v) for k, v in out.items()}


def dim_points(model) -> list[dict[str, int]]:
    """All dims at their minima, all at their maxima, and (two dims or more) each one alone at its max."""
    lo = {n: a for n, (a, _) in model.dims.items()}
    hi = {n: b for n, (_, b) in model.dims.items()}
    pts = [lo, hi] + ([{**lo, n: hi[n]} for n in model.dims] if len(model.dims) > 1 else [])
    return [dict(p) for p in {tuple(sorted(p.items())): p for p in pts}.values()]


def pattern_inputs(model, dims: dict[str, int]) -> dict[str, np.ndarray]:
    return {s.name: pattern(s.resolve(dims), k, s.np) for k, s in enumerate(model.inputs)}


def run_sanitized(exe: Path, args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, **SAN_ENV)
    res = subprocess.run([str(exe), *args], cwd=exe.parent, capture_output=True, text=True, env=env, timeout=timeout)
    assert not REPORT.search(res.stderr), f"{exe.parent.name} {args}: sanitizer report\n{res.stderr[-6000:]}"
    return res


def make(folder: Path) -> Path:
    res = subprocess.run(["make", "-s", "main"], cwd=folder, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    return folder / "main"


# ------------------------------------------------------------------------------------------ (a) sanitizers
@needs_sanitizers
def test_sanitize_option_builds_an_asan_library(built):
    m = built["plain"]["mlp"]
    folder = built["san"]["mlp"]
    man = json.loads((folder / "manifest.json").read_text())
    assert man["options"]["sanitize"] is True and "-fsanitize=address,undefined" in man["options"]["cflags"]
    assert "-O1" in man["options"]["cflags"] and "-O3" not in man["options"]["cflags"]
    assert man["options"]["sanitize"] != m.manifest["options"].get("sanitize", False)
    deps = subprocess.run(["ldd", str(folder / "libmlp.so")], capture_output=True, text=True).stdout
    assert "libasan" in deps and "libubsan" in deps, deps
    assert "-fsanitize=address,undefined" in (folder / "Makefile").read_text()
    # a Python without ASan's runtime cannot load it: the model says how to run it instead of aborting
    sm = load_compiled(folder)
    assert sm.sanitized
    with pytest.raises(graphc.GraphcError, match=r"sanitizer build .*make && \./main.*LD_PRELOAD"):
        sm(np.zeros((1, 784), np.float32))


@needs_sanitizers
def test_every_model_clean_under_asan_ubsan(built, capsys):
    jobs = []
    for name, folder in built["san"].items():
        exe = make(folder)
        model = built["plain"][name]
        for dims in dim_points(model):
            jobs.append((name, exe, model, dims))

    def one(job):
        name, exe, model, dims = job
        res = run_sanitized(exe, ["-t", "1", *[f"{k}={v}" for k, v in dims.items()]])
        return job, res

    worst: dict[str, float] = {}
    failures = 0
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for (name, _, model, dims), res in pool.map(one, jobs):
            try:
                want = model.run(**pattern_inputs(model, dims))
            except graphc.backend.RuntimeErrorC as e:  # a run without a value (max over an empty dim)
                why = "the reduced dim is empty (size 0)"
                assert e.status == -1 and why in str(e) and res.returncode == 1 and why in res.stderr, \
                    (name, dims, str(e), res.stderr[-3000:])
                failures += 1
                continue
            assert res.returncode == 0, f"{name} {dims}: exit {res.returncode}\n{res.stderr[-4000:]}"
            got = parse_main_output(res.stdout)
            assert set(got) == set(want), name
            for k, w in want.items():
                g = got[k].astype(w.dtype).reshape(w.shape)
                if w.dtype.kind == "f":
                    scale = max(1.0, float(np.abs(w).max()) if w.size else 1.0)
                    err = float(np.abs(g.astype(np.float64) - w).max()) if w.size else 0.0
                    worst[name] = max(worst.get(name, 0.0), err / scale)
                    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6 * scale, err_msg=f"{name} {k} {dims}")
                else:
                    np.testing.assert_array_equal(g, w, err_msg=f"{name} {k} {dims}")
    assert set(worst) >= set(EXAMPLES) and failures == 1
    with capsys.disabled():
        print(f"\n[graphc] {len(jobs)} sanitized runs clean; largest difference from the -O3 library, relative to "
              f"the output's scale: " + ", ".join(f"{k} {v:.1e}" for k, v in sorted(worst.items())))


@needs_sanitizers
def test_sanitized_arena_reports_a_write_past_a_tensor(built, tmp_path):
    """The arena's dead and padding bytes are poisoned in a sanitized build: a kernel writing one element
    past its output, still inside the output's 64-byte-rounded block, is reported (use-after-poison)."""
    from graphc.backend import build_options
    from graphc.backend.build import build_library, sanitized

    folder = built["san"]["bt"]
    man = json.loads((folder / "manifest.json").read_text())
    files = {n: (folder / n).read_text() for n in man["files"]["sources"]}
    unit = next(n for n, t in files.items() if n.endswith(".c") and re.search(r"void bt_add\([^)]*\)\n\{", t))
    faulty = re.sub(r"(void bt_add\([^)]*\)\n\{\n.*?\n)\}\n", r"\1    add[B * T * 6] = 0.0f;\n}\n", files[unit],
                    count=1, flags=re.S)
    assert faulty != files[unit] and "add[i0]" in faulty, "the injection point moved: update this test"
    files[unit] = faulty
    mp = pytest.MonkeyPatch()
    mp.setenv("GRAPHC_CFLAGS", os.environ.get("GRAPHC_TEST_CFLAGS", STRICT))  # the runtime above, cached
    try:
        lib_dir, _ = build_library(files, sanitized(build_options("c", name="bt", weights="file")),
                                   cache_dir=sanitized_cache_dir())
    finally:
        mp.undo()
    copy = tmp_path / "bt"
    shutil.copytree(folder, copy)
    shutil.copyfile(lib_dir / "libbt.so", copy / "libbt.so")
    env = dict(os.environ, **SAN_ENV)
    res = subprocess.run([str(make(copy)), "-t", "1", "B=2", "T=5"], cwd=copy, capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode != 0 and "AddressSanitizer: use-after-poison" in res.stderr, res.stderr[-3000:]
    assert re.search(r"#0 .* in bt_add .*:\d+", res.stderr), res.stderr[-3000:]


@needs_sanitizers
def test_sanitized_library_from_python_under_ld_preload(built):
    """The documented Python route: LD_PRELOAD of libasan, leak checking off (the interpreter's own
    allocations are not ours)."""
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    plain = built["plain"]["mlp"]
    x = pattern((3, 784), 0, np.float32)
    code = ("import sys, numpy as np\nfrom graphc.backend import load_compiled\n"
            "m = load_compiled(sys.argv[1])\nassert m.sanitized\n"
            "np.save(sys.argv[2], m(np.load(sys.argv[3])))\n")
    np.save(built["base"] / "x.npy", x)
    env = dict(os.environ, LD_PRELOAD=libasan, ASAN_OPTIONS="detect_leaks=0",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-c", code, str(built["san"]["mlp"]), str(built["base"] / "y.npy"),
                          str(built["base"] / "x.npy")], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and not REPORT.search(res.stderr), res.stderr[-4000:]
    np.testing.assert_allclose(np.load(built["base"] / "y.npy"), plain(x), rtol=1e-4, atol=1e-5)


def test_cli_sanitize(tmp_path):
    env = dict(os.environ, GRAPHC_CACHE_DIR=sanitized_cache_dir(),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env["GRAPHC_CFLAGS"] = os.environ.get("GRAPHC_TEST_CFLAGS", STRICT)
    model = ROOT / "examples" / "mlp" / "model.py"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "graphc", "compile", str(model), *args], env=env,
                              capture_output=True, text=True, timeout=600)

    for bad in (["--verify"], ["--backend", "cuda"]):
        r = cli("--sanitize", "-o", str(tmp_path / "x"), *bad)
        assert r.returncode != 0 and "--sanitize builds a C library" in r.stderr, r.stderr
    if _SAN_PROBLEM is not None:
        r = cli("--sanitize", "--emit-c", "-o", str(tmp_path / "asan"))
        assert r.returncode == 0 and "fsanitize=address" in (tmp_path / "asan" / "Makefile").read_text()
        return
    r = cli("--sanitize", "-o", str(tmp_path / "asan"))
    assert r.returncode == 0, r.stderr
    res = run_sanitized(make(tmp_path / "asan"), ["-t", "1", "B=2"])
    assert res.returncode == 0 and res.stdout.startswith("output f32[2,10]"), res.stderr[-3000:]


# ------------------------------------------------------------------------------------------ (b) valgrind
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The small model exported three times: weights file and baked, both target="portable" (valgrind
    does not decode AVX-512), and a sanitized weights-file build (native, like the others' sanitized
    runtime)."""
    base = tmp_path_factory.mktemp("small")
    model, example, dynamic = _fuzzy()
    g = graphc.trace(model, example, dynamic, name="fz")
    kinds = {"file": {"weights": "file", "target": "portable"}, "embed": {"weights": "embed", "target": "portable"}}
    if _SAN_PROBLEM is None:
        kinds["san"] = {"weights": "file", "sanitize": True}

    def one(kind):
        cache = sanitized_cache_dir() if kinds[kind].get("sanitize") else _cache_dir()
        return graphc.compile(g, name="fz", cache_dir=cache, out_dir=base / kind, **kinds[kind])

    out = _compile_all({k: (lambda k=k: one(k), kinds[k].get("target", "native")) for k in kinds})
    return {**out, "base": base}


@needs_valgrind
@pytest.mark.parametrize("mode", ["file", "embed"])
def test_valgrind_memcheck_main(small, mode):
    m = small[mode]
    exe = make(m.directory)
    vg = ["valgrind", "--tool=memcheck", "--error-exitcode=99", "--leak-check=full",
          "--errors-for-leak-kinds=definite", "-q", str(exe), "-t", "1"]
    res = subprocess.run([*vg, "B=5"], cwd=m.directory, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-6000:]
    got = parse_main_output(res.stdout)["output"].astype(np.float32)
    want = m(pattern((5, 6), 0, np.float32))
    np.testing.assert_array_equal(got, want.reshape(-1))
    # an error path is clean too: create fails on a missing weights file, everything is released
    res = subprocess.run([*vg, "-w", "missing.safetensors"], cwd=m.directory, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 1 and "error: weights file 'missing.safetensors'" in res.stderr, res.stderr[-4000:]


# ------------------------------------------------------------------------------------------ (c) weights fuzz
DTYPES = {"F32": ("f32", 4), "F64": ("f64", 8), "F16": ("f16", 2), "BF16": ("bf16", 2), "I8": ("i8", 1),
          "I16": ("i16", 2), "I32": ("i32", 4), "I64": ("i64", 8), "U8": ("u8", 1), "BOOL": ("bool", 1)}
NP = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I8": np.int8, "I16": np.int16, "I32": np.int32,
      "I64": np.int64, "U8": np.uint8, "BOOL": np.bool_}


class Invalid(Exception):
    pass


def _no_dup(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise Invalid("duplicate key")
    return dict(pairs)


def judge(data: bytes, want: dict[str, tuple[str, list[int]]], model: str, fp: str) -> dict[str, np.ndarray]:
    """The safetensors rules graphc's loader enforces, written independently of it. Returns the tensors
    the model would compute with, or raises Invalid(why)."""
    if len(data) < 8:
        raise Invalid("shorter than 8 bytes")
    n = struct.unpack("<Q", data[:8])[0]
    if n > len(data) - 8:
        raise Invalid("header length past the end")
    try:
        text = data[8:8 + n].decode("utf-8")
        header = json.loads(text, object_pairs_hook=_no_dup)
    except (UnicodeDecodeError, ValueError) as e:
        raise Invalid(f"json: {e}") from None
    if not isinstance(header, dict):
        raise Invalid("header is not an object")
    area = data[8 + n:]
    meta = header.pop("__metadata__", None)
    if meta is not None and (not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values())):
        raise Invalid("metadata")
    spans = []
    tensors = {}
    for name, e in header.items():
        if "\0" in name or not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise Invalid(f"entry {name!r}")
        dt, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        ints = shape + offs if isinstance(shape, list) and isinstance(offs, list) else None
        if dt not in DTYPES or ints is None or not all(type(v) is int and 0 <= v < 2**63 for v in ints):
            raise Invalid(f"tensor {name!r} fields")
        if len(shape) > 8 or len(offs) != 2 or not offs[0] <= offs[1] <= len(area):
            raise Invalid(f"tensor {name!r} offsets")
        if int(np.prod(shape, dtype=object)) * DTYPES[dt][1] != offs[1] - offs[0]:
            raise Invalid(f"tensor {name!r} size")
        if offs[1] > offs[0]:
            spans.append((offs[0], offs[1]))
        tensors[name] = (dt, shape, offs)
    spans.sort()
    if any(b0 < a1 for (_, a1), (b0, _) in zip(spans, spans[1:])):
        raise Invalid("overlap")
    if not meta or "graphc.model" not in meta or "graphc.fingerprint" not in meta:
        raise Invalid("no graphc metadata")
    if meta["graphc.model"] != model or meta["graphc.fingerprint"] != fp:
        raise Invalid("other model")
    out = {}
    for pname, (dt, shape) in want.items():
        if pname not in tensors or DTYPES[tensors[pname][0]][0] != dt or tensors[pname][1] != shape:
            raise Invalid(f"param {pname}")
        b0, b1 = tensors[pname][2]
        if (8 + n + b0) % DTYPES[tensors[pname][0]][1]:
            raise Invalid("misaligned")
        out[pname] = np.frombuffer(area[b0:b1], NP[tensors[pname][0]]).reshape(shape)
    return out


def _header(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def _pack(header: dict, area: bytes, pad: bool = True) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-(8 + len(text)) % 64)
    return struct.pack("<Q", len(text)) + text + area


def mutations(data: bytes, seed: int = 7) -> list[tuple[str, bytes]]:
    """Named mutants of a valid weights file."""
    rnd = random.Random(seed)
    n = struct.unpack("<Q", data[:8])[0]
    header, area = _header(data)
    names = [k for k in header if k != "__metadata__"]
    cases: list[tuple[str, bytes]] = []
    # truncations: every byte of the length and header, then through the data area
    for cut in [*range(0, 8 + n + 2), *range(8 + n + 2, len(data), max(1, (len(data) - n) // 60)), len(data) - 1]:
        cases.append((f"truncate@{cut}", data[:cut]))
    # byte flips anywhere in the length field and the header text
    for pos in range(0, 8 + n):
        for x in (0x01, 0x20, 0x80):
            cases.append((f"flip@{pos}^{x:#x}", data[:pos] + bytes([data[pos] ^ x]) + data[pos + 1:]))
    # data area: a middle byte of one float of each tensor (a valid file with other weights)
    for k in names:
        b0, b1 = header[k]["data_offsets"]
        if b1 - b0 >= 4:
            pos = 8 + n + b0 + 4 * rnd.randrange((b1 - b0) // 4) + 2
            cases.append((f"data {k}", data[:pos] + bytes([data[pos] ^ 0x15]) + data[pos + 1:]))

    def variant(label, fn, pad=True):
        h = json.loads(json.dumps(header))
        fn(h)
        cases.append((label, _pack(h, area, pad)))

    big = 2**63 - 1
    for k in names:
        b0, b1 = header[k]["data_offsets"]
        shape = header[k]["shape"]
        for label, offs in (("+1", [b0 + 1, b1 + 1]), ("-1", [b0 - 1, b1 - 1]), ("swap", [b1, b0]),
                            ("short", [b0, b1 - 1]), ("long", [b0, b1 + 1]),
                            ("past end", [b0 + len(area), b1 + len(area)]),
                            ("huge", [b0, big]), ("wrap", [big, b1]), ("neg", [-4, b1]), ("float", [float(b0), b1]),
                            ("str", [str(b0), b1]), ("three", [b0, b1, b1]), ("one", [b0]), ("zero", [0, b1 - b0])):
            variant(f"offsets {k} {label}", lambda h, k=k, offs=offs: h[k].__setitem__("data_offsets", offs))
        for dt in ("F16", "F64", "I32", "BOOL", "f32", "", "F32 ", "X9", 5):
            variant(f"dtype {k} {dt!r}", lambda h, k=k, dt=dt: h[k].__setitem__("dtype", dt))
        new_shapes = [shape[::-1], shape + [1], [1] + shape, shape[:-1], [int(np.prod(shape))], [0] + shape,
                      [-1] + shape, [2**62, 4] + shape[1:], [2**40] * 3, [1] * 9 + shape, [], "abc", [1.5]]
        for s in new_shapes:
            variant(f"shape {k} {s}", lambda h, k=k, s=s: h[k].__setitem__("shape", s))
        variant(f"extra key {k}", lambda h, k=k: h[k].__setitem__("extra", 1))
        variant(f"drop dtype {k}", lambda h, k=k: h[k].pop("dtype"))
        variant(f"drop {k}", lambda h, k=k: h.pop(k))
        variant(f"rename {k}", lambda h, k=k: h.__setitem__(k + "x", h.pop(k)))
        variant(f"unpadded {k}", lambda h: None, pad=False)
    meta = header["__metadata__"]
    for key in list(meta):
        variant(f"meta drop {key}", lambda h, key=key: h["__metadata__"].pop(key))
        for v in ("", meta[key][:-1], meta[key] + "0", meta[key].upper(), "x" * 5000, 7, None):
            variant(f"meta {key}={str(v)[:20]!r}", lambda h, key=key, v=v: h["__metadata__"].__setitem__(key, v))
    variant("meta null", lambda h: h.__setitem__("__metadata__", None))
    variant("meta list", lambda h: h.__setitem__("__metadata__", ["a"]))
    variant("meta drop", lambda h: h.pop("__metadata__"))
    variant("meta extra", lambda h: h["__metadata__"].__setitem__("extra", "y"))
    # swaps of names: same shape (valid, other weights) and different shapes (mismatch)
    for a, b in itertools.combinations(names, 2):
        def swap(h, a=a, b=b):
            h[a], h[b] = h[b], h[a]
        variant(f"swap {a} {b}", swap)
    # duplicate names / keys, written by hand
    first = json.dumps({names[0]: header[names[0]]})[1:-1]
    text = json.dumps(header, separators=(",", ":"))
    cases.append(("dup tensor", _pack_text(text[:-1] + "," + first + "}", area)))
    cases.append(("dup meta", _pack_text(text[:-1] + ',"__metadata__":{}}', area)))
    # garbage appended, NUL and escapes in names, a header length pointing inside the data
    cases.append(("append", data + b"garbage" * 10))
    cases.append(("append 1", data + b"\0"))
    variant("nul name", lambda h: h.__setitem__(names[0] + "\0", h.pop(names[0])))
    variant("escaped name", lambda h: h.__setitem__("fc\u00e9", h.pop(names[0])))
    cases.append(("length+64", struct.pack("<Q", n + 64) + data[8:]))
    cases.append(("length max", struct.pack("<Q", 2**64 - 1) + data[8:]))
    cases.append(("length 2^63", struct.pack("<Q", 2**63) + data[8:]))
    cases.append(("empty header", _pack({}, area)))
    cases.append(("empty", b""))
    # random multi-byte mutations
    for i in range(150):
        d = bytearray(data)
        for _ in range(rnd.randint(1, 4)):
            d[rnd.randrange(8 + n)] = rnd.randrange(256)
        cases.append((f"random {i}", bytes(d)))
    return cases


def _pack_text(text: str, area: bytes) -> bytes:
    raw = text.encode()
    raw += b" " * (-(8 + len(raw)) % 64)
    return struct.pack("<Q", len(raw)) + raw + area


@pytest.fixture(scope="module")
def fuzz_export(small):
    m = small["file"]
    data = (m.directory / "fz.safetensors").read_bytes()
    files = []
    for i, (label, blob) in enumerate(mutations(data)):
        p = small["base"] / "corpus" / f"{i:04d}.safetensors"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(blob)
        files.append((label, p, blob))
    return {"model": m, "san": small["san"].directory if "san" in small else None, "files": files}


def _create(m, path: Path) -> tuple[int, str, Any]:
    lib, ffi = m._lib, m._lib.ffi
    out = ffi.new("fz_ctx **")
    err = ffi.new("char[]", 600)
    rc = lib.create(out, str(path).encode(), err, 600)
    return rc, ffi.string(err).decode(errors="replace"), (ffi.gc(out[0], lib.destroy) if rc == 0 else None)


def _run_ctx(m, ctx, x: np.ndarray) -> np.ndarray:
    ffi = m._lib.ffi
    y = np.empty((x.shape[0], 3), np.float32)
    keep = [ffi.from_buffer(x), ffi.from_buffer(y)]
    rc = m._lib.run_v(ctx, ffi.new("int64_t[]", [x.shape[0]]), ffi.new("void *[]", keep[:1]),
                      ffi.new("void *[]", keep[1:]))
    assert rc == 0
    return y


def test_weights_loader_fuzzed_through_create(fuzz_export):
    m = fuzz_export["model"]
    g = parse((m.directory / "fz.gir").read_text())
    want = {k: (v.type.dtype.short, [int(d) for d in v.type.shape]) for k, v in g.params.items()}
    x = pattern((4, 6), 0, np.float32)
    accepted = rejected = 0
    reasons = set()
    for label, path, blob in fuzz_export["files"]:
        try:
            params = judge(blob, want, "fz", m.fingerprint)
        except Invalid as e:
            params, why = None, str(e)
        rc, msg, ctx = _create(m, path)
        if params is None:
            assert rc in (-3, -4), f"{label}: judged invalid ({why}) but create returned {rc}: {msg}"
            assert msg.startswith(f"weights file '{path}': ") and len(msg) > len(str(path)) + 20, (label, msg)
            reasons.add(re.sub(r"'[^']*'|\d+", "_", msg.split(": ", 1)[1])[:40])
            rejected += 1
        else:
            assert rc == 0, f"{label}: a valid file for this model, create returned {rc}: {msg}"
            g.param_data.update(params)
            ref = interpret(g, {"x": x})["output"]
            np.testing.assert_allclose(_run_ctx(m, ctx, x), ref, rtol=1e-5, atol=1e-6,
                                       err_msg=label)
            accepted += 1
    assert accepted >= 10 and rejected >= 1000, (accepted, rejected)
    assert len(reasons) >= 25, sorted(reasons)  # the corpus reaches many different checks


CORPUS_DRIVER = r"""
#include <stdio.h>
#include <string.h>
#include "fz.h"

int main(int argc, char **argv)
{
    float x[4 * 6], y[4 * 3];
    for (int i = 0; i < 24; i++)
        x[i] = (float)((i * 7) % 17) / 8.0f - 1.0f;
    for (int a = 1; a < argc; a++) {
        char err[300];
        fz_ctx *ctx = NULL;
        const int rc = fz_create(&ctx, argv[a], err, sizeof err);
        if ((rc == 0) != (ctx != NULL) || (rc != 0 && !err[0]))
            return 3;
        if (rc == 0 && fz_run(ctx, 4, x, y) != 0)
            return 4;
        printf("%s %d\n", strrchr(argv[a], '/') + 1, rc);
        fz_destroy(ctx);
        /* a tiny error buffer truncates, never overflows; NULL is allowed */
        char small[5];
        memset(small, 'z', sizeof small);
        fz_ctx *c2 = NULL;
        if (fz_create(&c2, argv[a], small, 1) != rc || small[0] != '\0' || small[1] != 'z')
            return 5;
        fz_destroy(c2);
        c2 = NULL;
        if (fz_create(&c2, argv[a], NULL, 0) != rc)
            return 6;
        fz_destroy(c2);
    }
    return 0;
}
"""


@needs_sanitizers
def test_weights_corpus_under_sanitizers(fuzz_export):
    san = fuzz_export["san"]
    (san / "corpus.c").write_text(CORPUS_DRIVER)
    exe = san / "corpus"
    res = subprocess.run(["gcc", "-O1", *SANITIZE_FLAGS, "-Wall", "-Wextra", "-Werror", "-I.", "corpus.c", "-o",
                          "corpus", "-L.", "-lfz", "-Wl,-rpath,$ORIGIN"], cwd=san, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    files = [str(p) for _, p, _ in fuzz_export["files"]]
    res = run_sanitized(exe, files)
    assert res.returncode == 0, res.stderr[-4000:]
    got = dict(line.split() for line in res.stdout.splitlines())
    assert len(got) == len(files)
    m = fuzz_export["model"]
    for label, p, _ in fuzz_export["files"]:
        rc = _create(m, p)[0]
        assert int(got[p.name]) == rc, f"{label}: sanitized library {got[p.name]}, optimised one {rc}"


# ------------------------------------------------------------------------------------------ (d) input checks
CHECKS_DRIVER = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "NAME.h"

static int failures;
#define EXPECT(cond, ...) do { if (!(cond)) { failures++; printf("FAIL %d: ", __LINE__); printf(__VA_ARGS__); \
                                              printf("\n"); } } while (0)

static size_t numel(int64_t *shape, int nd)
{
    size_t c = 1;
    for (int i = 0; i < nd; i++)
        c *= (size_t)shape[i];
    return c;
}

static size_t esize(int dt)
{
    return dt == 1 || dt == 7 ? 8 : dt == 0 || dt == 6 ? 4 : dt == 2 || dt == 3 || dt == 5 ? 2 : 1;
}

int main(int argc, char **argv)
{
    char err[256];
    NAME_ctx *ctx = NULL;
    EXPECT(NAME_create(NULL, NULL, err, sizeof err) == -1 && strstr(err, "out is NULL"), "create(NULL): %s", err);
    const char *weights = argc > 1 && argv[1][0] ? argv[1] : NULL;
    if (NAME_create(&ctx, weights, err, sizeof err) != 0) { printf("create: %s\n", err); return 2; }
    if (argc > 2) { /* "threads": the default thread count only */
        printf("threads %d\n", NAME_get_num_threads(ctx));
        NAME_destroy(ctx);
        return 0;
    }
    const int nd = NAME_num_dims(), ni = NAME_num_inputs(), no = NAME_num_outputs();
    int64_t dims[UNAME_NUM_DIMS + 1], shape[16];
    void *in[UNAME_NUM_INPUTS + 1] = {0}, *out[UNAME_NUM_OUTPUTS + 1] = {0};
    for (int d = 0; d < nd; d++) dims[d] = NAME_dim_max(d);
    for (int k = 0; k < ni; k++) {
        EXPECT(NAME_input_shape(k, dims, shape) == 0, "input_shape %d", k);
        in[k] = calloc(numel(shape, NAME_input_ndim(k)) + 1, esize(NAME_input_dtype(k)));
    }
    for (int k = 0; k < no; k++) {
        EXPECT(NAME_output_shape(k, dims, shape) == 0, "output_shape %d", k);
        out[k] = calloc(numel(shape, NAME_output_ndim(k)) + 1, esize(NAME_output_dtype(k)));
    }
    const void *const *cin = (const void *const *)in;
    EXPECT(NAME_run_v(ctx, dims, cin, out) == 0, "valid run: %s", NAME_last_error(ctx));
    EXPECT(NAME_run_v(NULL, dims, cin, out) == -1, "NULL ctx");
    EXPECT(strcmp(NAME_last_error(NULL), "context is NULL") == 0, "last_error(NULL)");
    if (nd) {
        EXPECT(NAME_run_v(ctx, NULL, cin, out) == -1 && strstr(NAME_last_error(ctx), "dims is NULL"), "dims NULL");
        for (int d = 0; d < nd; d++) {
            const int64_t lo = NAME_dim_min(d), hi = NAME_dim_max(d);
            const int64_t bad[] = {lo - 1, hi + 1, -1, -hi, INT64_MIN, INT64_MAX, hi * 1000};
            for (unsigned j = 0; j < sizeof bad / sizeof bad[0]; j++) {
                if (bad[j] >= lo && bad[j] <= hi) continue;
                const int64_t keep = dims[d];
                dims[d] = bad[j];
                char want[128];
                snprintf(want, sizeof want, "dim %s=%lld is outside %lld..%lld", NAME_dim_name(d), (long long)bad[j],
                         (long long)lo, (long long)hi);
                EXPECT(NAME_run_v(ctx, dims, cin, out) == -1 && strcmp(NAME_last_error(ctx), want) == 0,
                       "dim %d=%lld: %s", d, (long long)bad[j], NAME_last_error(ctx));
                for (int k = 0; k < ni; k++)
                    EXPECT(NAME_input_shape(k, dims, shape) == -1, "input_shape with dim %lld", (long long)bad[j]);
                for (int k = 0; k < no; k++)
                    EXPECT(NAME_output_shape(k, dims, shape) == -1, "output_shape with dim %lld", (long long)bad[j]);
                dims[d] = keep;
            }
        }
        EXPECT(NAME_input_shape(0, NULL, shape) == -1, "input_shape(NULL dims)");
    }
    if (ni)
        EXPECT(NAME_run_v(ctx, dims, NULL, out) == -1 && !strcmp(NAME_last_error(ctx), "inputs is NULL"), "NULL");
    EXPECT(NAME_run_v(ctx, dims, cin, NULL) == -1 && !strcmp(NAME_last_error(ctx), "outputs is NULL"), "outputs NULL");
    for (int k = 0; k < ni; k++) {
        void *keep = in[k];
        in[k] = NULL;
        char want[128];
        snprintf(want, sizeof want, "input '%s' is NULL", NAME_input_name(k));
        EXPECT(NAME_run_v(ctx, dims, cin, out) == -1 && strcmp(NAME_last_error(ctx), want) == 0, "%s", want);
        in[k] = keep;
    }
    for (int k = 0; k < no; k++) {
        void *keep = out[k];
        out[k] = NULL;
        char want[128];
        snprintf(want, sizeof want, "output '%s' is NULL", NAME_output_name(k));
        EXPECT(NAME_run_v(ctx, dims, cin, out) == -1 && strcmp(NAME_last_error(ctx), want) == 0, "%s", want);
        out[k] = keep;
    }
    /* a pointer not aligned to its element size (a float at an odd address) is refused before any kernel
     * loads through it: UBSan would report the misaligned loads of the GEMM and the vector kernels */
    for (int k = 0; k < ni + no; k++) {
        const int isin = k < ni, j = isin ? k : k - ni;
        const size_t es = esize(isin ? NAME_input_dtype(j) : NAME_output_dtype(j));
        void **slot = isin ? &in[j] : &out[j];
        void *keep = *slot;
        for (size_t off = 1; off < es; off *= 2) {
            *slot = (char *)keep + off;
            char head[160], tail[96];
            snprintf(head, sizeof head, "%s '%s' (", isin ? "input" : "output",
                     isin ? NAME_input_name(j) : NAME_output_name(j));
            snprintf(tail, sizeof tail, ") at %p is aligned to %zu byte%s, its element size needs %zu", *slot, off,
                     off == 1 ? "" : "s", es);
            const int rc = NAME_run_v(ctx, dims, cin, out);
            const char *e = NAME_last_error(ctx);
            EXPECT(rc == -1 && strncmp(e, head, strlen(head)) == 0 && strstr(e, tail), "%s+%zu: %s", head, off, e);
        }
        *slot = keep;
    }
    EXPECT(NAME_set_num_threads(ctx, 0) == -1 && !strcmp(NAME_last_error(ctx), "the thread count must be 1..1024"),
           "threads 0: %s", NAME_last_error(ctx));
    EXPECT(NAME_set_num_threads(ctx, -5) == -1, "threads -5");
    EXPECT(NAME_set_num_threads(ctx, 1025) == -1 && NAME_set_num_threads(ctx, INT32_MAX) == -1, "threads 1025");
    EXPECT(NAME_get_num_threads(ctx) >= 1 && NAME_get_num_threads(ctx) <= 1024, "threads kept");
    EXPECT(NAME_set_num_threads(NULL, 2) == -1 && NAME_get_num_threads(NULL) == 0, "threads NULL ctx");
    EXPECT(NAME_input_name(-1) == NULL && NAME_input_name(ni) == NULL && NAME_output_name(no) == NULL, "names");
    EXPECT(NAME_input_dtype(ni) == -1 && NAME_output_ndim(-1) == -1 && NAME_dim_min(nd) == -1, "introspection");
    EXPECT(NAME_input_shape(ni, dims, shape) == -1 && NAME_output_shape(-1, dims, shape) == -1, "shape index");
    EXPECT(NAME_input_shape(0, dims, NULL) == -1 || ni == 0, "shape NULL");
    /* after all that the context still runs, at every dim's minimum too, and clears the message */
    EXPECT(NAME_set_num_threads(ctx, 3) == 0 && NAME_last_error(ctx)[0] == 0, "threads 3 clears the message");
    EXPECT(NAME_run_v(ctx, dims, cin, out) == 0 && NAME_last_error(ctx)[0] == 0, "run after: %s", NAME_last_error(ctx));
    for (int d = 0; d < nd; d++) dims[d] = NAME_dim_min(d);
    EXPECT(NAME_run_v(ctx, dims, cin, out) == 0, "run at minima: %s", NAME_last_error(ctx));
    NAME_destroy(ctx);
    NAME_destroy(NULL);
    for (int k = 0; k < ni; k++) free(in[k]);
    for (int k = 0; k < no; k++) free(out[k]);
    printf("%s %d\n", failures ? "FAILED" : "OK", failures);
    return failures != 0;
}
"""


def _checks(folder: Path, name: str, sanitize: bool) -> None:
    src = folder / "checks.c"
    src.write_text(CHECKS_DRIVER.replace("UNAME", name.upper()).replace("NAME", name))
    flags = ["-O1", *SANITIZE_FLAGS] if sanitize else ["-O2"]
    res = subprocess.run(["gcc", *flags, "-Wall", "-Wextra", "-Werror", "-I.", "checks.c", "-o", "checks", "-L.",
                          f"-l{name}", "-Wl,-rpath,$ORIGIN"], cwd=folder, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    man = json.loads((folder / "manifest.json").read_text())
    args = [f"{name}.safetensors" if man["options"]["weights"] == "file" else ""]
    res = run_sanitized(folder / "checks", args) if sanitize else subprocess.run(
        [str(folder / "checks"), *args], cwd=folder, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip().endswith("OK 0"), f"{name}: {res.stdout}{res.stderr[-3000:]}"
    # a huge OMP_NUM_THREADS (the default thread count) is clamped: OpenMP could not start that many threads
    res = subprocess.run([str(folder / "checks"), *args, "threads"], cwd=folder, capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, OMP_NUM_THREADS="100000", **SAN_ENV))
    assert res.returncode == 0 and res.stdout.strip() == "threads 1024", res.stdout + res.stderr[-2000:]


@pytest.mark.parametrize("name", ["bt", "shapes", "mlp"])
def test_run_v_rejects_bad_arguments(built, name):
    _checks(built["plain"][name].directory, built["plain"][name].name, sanitize=False)
    if _SAN_PROBLEM is None:
        _checks(built["san"][name], name, sanitize=True)


def test_thread_count_limit_is_one_number():
    from graphc.backend import MAX_THREADS

    header = (ROOT / "runtime_c" / "graphc_rt.h").read_text()
    assert f"#define GC_MAX_THREADS {MAX_THREADS}\n" in header
    assert f'#define GC_MAX_THREADS_MESSAGE "the thread count must be 1..{MAX_THREADS}"' in header
    with pytest.raises(ValueError, match=f"threads must be 1..{MAX_THREADS}, got {MAX_THREADS + 1}"):
        graphc.compile(bt_graph(), threads=MAX_THREADS + 1)


def test_dim_maxima_that_overflow_sizes_are_rejected():
    """B up to 2**58 made the arena 2**64 bytes: the C literal wrapped to 0, create allocated 64 bytes
    and a run wrote past them (heap corruption). Such ranges are now refused when lowering."""
    gb = GB("huge", dims={"B": (1, 2**58)})
    x = gb.input("x", (B, 16))
    gb.out("y", gb("sum", gb("exp", gb("exp", x)), dims=(1,)))
    with pytest.raises(graphc.errors.UnsupportedError,
                       match=r"model 'huge': the arena of intermediates takes 18446744073709551616 bytes at the dims' "
                             r"maxima \(B=288230376151711744\), more than the 4503599627370496"):
        generate(gb.graph())
    gb = GB("wide", dims={"B": (1, 2**50)})
    gb.out("y", gb("exp", gb.input("x", (B, 64))))
    with pytest.raises(graphc.errors.UnsupportedError, match=r"input 'x' takes 288230376151711744 bytes"):
        generate(gb.graph())


def test_negative_sizes_for_dims_in_range_are_rejected():
    """A slice 1:T with T allowed to be 0 has T-1 = -1 rows: once it compiled, and the kernels and the
    memory plan worked with a negative size. Lowering now names the node and the dims."""
    g = bt_graph()
    g.dims["T"] = (0, 24)
    with pytest.raises(graphc.errors.UnsupportedError, match=r"model 'bt': node %slice = slice\(\.\.\.\) has type "
                                                             r"f32\[B,T-1,6\], a negative size T-1 = -1 at T=0 "
                                                             r"\(T in 0\.\.24\): raise the dims' minima"):
        generate(g)


def test_kernel_names_are_unique():
    """Kernel names were keyed by id() of a builder freed right after use: the next builder with the same
    hint got the same id, hence the same name (two C functions of one name: the compile failed)."""
    from graphc.backend import CBackend
    from graphc.backend.lowering import KernelBuilder, Lowering

    lower = Lowering(bt_graph(), CBackend(), name="t")
    names = [KernelBuilder(lower, [], "step", "t_same").name for _ in range(5)]
    assert names == ["t_same", "t_same_1", "t_same_2", "t_same_3", "t_same_4"]


# ------------------------------------------------------------------------------------------ (e) arena plan
def _samples(dims: dict[str, tuple[int, int]], n: int, seed: int) -> list[dict[str, int]]:
    rnd = random.Random(seed)
    names = list(dims)
    pts = [dict(zip(names, c)) for c in itertools.product(*[(lo, hi) for lo, hi in dims.values()])]
    pts += [{k: rnd.randint(*dims[k]) for k in names} for _ in range(n)]
    return pts


def _plan_checks(model) -> int:
    """Sampled-dims check of a compiled model's memory plan (manifest) against its library and graph."""
    plan = model.manifest["memory_plan"]
    blocks = [dict(b, off=parse_dim(b["offset"]), sz=parse_dim(b["size"])) for b in plan["blocks"]]
    capacity = parse_dim(plan["capacity_bytes"])
    maxima = {n: hi for n, (_, hi) in model.dims.items()}
    cap_max = evaluate(capacity, maxima)
    # the exact bytes of every value stored in the arena, from the optimised graph
    g = parse((model.directory / f"{model.name}.gir").read_text()) if (model.directory / f"{model.name}.gir").exists() \
        else None
    prog = generate(g, name=model.name, weights=model.manifest["options"]["weights"])[0] if g is not None else None
    assert prog is None or prog.memory_table() == plan["blocks"], "the plan is not reproducible from the graph"
    exact = {}
    if prog is not None:
        for key, blk in prog.plan.location.items():
            if not isinstance(key, str):
                exact.setdefault(blk.name, []).append(key)
    checked = 0
    for env in _samples(model.dims, 60, seed=len(blocks)):
        arena = model.arena_bytes(**env)
        ev = [(b, evaluate(b["off"], env), evaluate(b["sz"], env)) for b in blocks]
        for b, off, size in ev:
            assert off >= 0 and size >= 0 and off % 64 == 0, (b, env)
            assert off + size <= arena, f"{model.name}: block {b['value']} [{off}, {off + size}) past " \
                                        f"arena_bytes({env}) = {arena}"
            assert off + size <= cap_max, f"{model.name}: block {b['value']} past the plan at the maxima {cap_max}"
            for v in exact.get(b["value"], []):
                need = evaluate(_numel(v.type.shape) * v.type.dtype.itemsize, env)
                assert need <= size, f"{model.name}: {v.name} needs {need} bytes, block {b['value']} has {size}"
        for (a, ao, asz), (b, bo, bsz) in itertools.combinations(ev, 2):
            if a["first"] <= b["last"] and b["first"] <= a["last"] and asz and bsz:
                assert ao + asz <= bo or bo + bsz <= ao, \
                    f"{model.name} {env}: {a['value']} [{ao}, {ao + asz}) and {b['value']} [{bo}, {bo + bsz}) " \
                    f"are live together (steps {a['first']}..{a['last']}, {b['first']}..{b['last']}) and overlap"
        checked += 1
    return checked


def _numel(shape) -> Any:
    out: Any = 1
    for d in shape:
        out = out * d
    return out


def test_arena_plan_holds_for_sampled_dims(built):
    total = 0
    for name in [*EXAMPLES, "bt", "nnops"]:
        total += _plan_checks(built["plain"][name])
    assert total >= 7 * 60


def test_hardening_example_list_is_complete():
    on_disk = sorted(p.parent.name for p in (ROOT / "examples").glob("*/model.py"))
    assert on_disk == sorted(EXAMPLES), "a new example: add it to EXAMPLES in tests/test_hardening.py"


# ------------------------------------------------------------------------------------------ (f) newer code
# The code added since the sections above: the weights copy made by NAME_create and the mapping of
# NAME_create_ex(..., NAME_CREATE_MAP_WEIGHTS), a custom op's C unit, the sort/argsort/topk/cumsum/cumprod
# kernels, the per-context thread pool, the ISA dispatch of a default-target library and the per-kernel
# profile, through one model and one C host, under ASan/UBSan (every ISA level) and valgrind memcheck;
# under ThreadSanitizer the thread pool alone, and the model as a serial (openmp=False) library: the
# OpenMP runtime is not instrumented, so ThreadSanitizer cannot follow an OpenMP library's barriers.
SOFTSIGN_C = r"""
int softsign(const float *x, const int64_t *x_shape, float *out, const int64_t *out_shape, double scale)
{
    const int64_t n = x_shape[0] * x_shape[1];
    (void)out_shape;
    for (int64_t i = 0; i < n; i++)
        out[i] = (float)(scale * x[i] / (1.0 + fabs((double)x[i])));
    return 0;
}
"""


class NewOps(graphc.nn.Module):
    """A GEMM big enough for two threads (B=32: 32x128x64), a custom op, the sort and scan kernels."""

    def __init__(self, softsign) -> None:
        super().__init__()
        self.up = graphc.nn.Linear(16, 128)
        self.down = graphc.nn.Linear(128, 64)
        self.softsign = softsign

    def forward(self, x):
        h = self.softsign(self.down(graphc.relu(self.up(x))), scale=2.0)
        values, order = graphc.sort(x, dim=1, descending=True)
        top, where = graphc.topk(h, 5, dim=1)
        return (h, values, order, graphc.argsort(x, dim=0), top, where, graphc.cumsum(x, dim=1),
                graphc.cumprod(x + 0.5, dim=0))


def new_pattern(shape) -> np.ndarray:
    """NEW_DRIVER's input: element i is ((i * 5) % 7) / 4 - 0.75 (ties along both dims: the sorts' order)."""
    i = np.arange(int(np.prod(shape)), dtype=np.int64)
    return (((i * 5) % 7) / 4.0 - 0.75).astype(np.float32).reshape(shape)


@pytest.fixture(scope="module")
def newops(tmp_path_factory):
    """NewOps exported as a default-target (ISA dispatch) weights-file library, plain and sanitized."""
    from graphc import library

    base = tmp_path_factory.mktemp("newops")
    op = library.custom_op("hardening::softsign", lambda x, scale: scale * x / (1 + np.abs(x)),
                           attrs={"scale": 1.0}, c_source=SOFTSIGN_C)
    try:
        graphc.manual_seed(5)
        g = graphc.trace(NewOps(op).eval(), (graphc.randn(4, 16),), {"x": {0: graphc.Dim("B", 0, 32)}},
                         name="newops")
        kinds = {"plain": {}, **({"san": {"sanitize": True}} if _SAN_PROBLEM is None else {})}

        def one(kind):
            cache = sanitized_cache_dir() if kinds[kind].get("sanitize") else _cache_dir()
            return graphc.compile(g, name="newops", cache_dir=cache, out_dir=base / kind, weights="file",
                                  **kinds[kind])

        out = _compile_all({k: (lambda k=k: one(k), k) for k in kinds})
        refs = {b: interpret(g, {"x": new_pattern((b, 16))}) for b in (0, 1, 7, 32)}
        yield {**out, "base": base, "refs": refs, "graph": g}
    finally:
        library.remove("hardening::softsign")


NEW_DRIVER = r"""
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "newops.h"

#define RUNS 3
typedef struct host {
    newops_ctx *ctx;
    int64_t dims[1];
    void *in[1];
    void *out[2][NEWOPS_NUM_OUTPUTS];
    size_t bytes[NEWOPS_NUM_OUTPUTS];
    int failed;
} host;

static size_t esize(int dt) { return dt == NEWOPS_I64 || dt == NEWOPS_F64 ? 8 : 4; }

/* RUNS runs, each equal to the previous one byte for byte (the pool's task split depends on no timing) */
static void *runs(void *vh)
{
    host *h = vh;
    for (int r = 0; r < RUNS; r++) {
        if (newops_run_v(h->ctx, h->dims, (const void *const *)h->in, h->out[r % 2]) != 0) {
            fprintf(stderr, "run: %s\n", newops_last_error(h->ctx));
            h->failed = 1;
            return NULL;
        }
        for (int k = 0; r > 0 && k < NEWOPS_NUM_OUTPUTS; k++)
            h->failed |= memcmp(h->out[0][k], h->out[1][k], h->bytes[k]) != 0;
    }
    return NULL;
}

static int setup(host *h, newops_ctx *ctx, int64_t b, const float *x)
{
    int64_t shape[8];
    memset(h, 0, sizeof *h);
    h->ctx = ctx;
    h->dims[0] = b;
    h->in[0] = (void *)x;
    for (int k = 0; k < NEWOPS_NUM_OUTPUTS; k++) {
        if (newops_output_shape(k, h->dims, shape) != 0)
            return 1;
        h->bytes[k] = esize(newops_output_dtype(k));
        for (int d = 0; d < newops_output_ndim(k); d++)
            h->bytes[k] *= (size_t)shape[d];
        h->out[0][k] = malloc(h->bytes[k]);
        h->out[1][k] = malloc(h->bytes[k]);
    }
    return newops_set_num_threads(ctx, 2) != 0 || newops_profile_enable(ctx, 1) != 0;
}

/* every kernel timed in every run; k out of range is -1 */
static int profile_ok(const newops_ctx *ctx)
{
    int k = 0;
    for (;; k++) {
        const char *name = NULL, *scope = NULL, *ops = NULL;
        double seconds = -1.0, flops = -1.0, bytes = -1.0;
        const int64_t n = newops_profile(ctx, k, &name, &scope, &ops, &seconds, &flops, &bytes);
        if (n < 0)
            break;
        if (n != RUNS || !name || !scope || !ops || seconds < 0.0 || flops < 0.0 || bytes < 0.0)
            return 0;
    }
    return k > 0 && newops_profile(ctx, -1, NULL, NULL, NULL, NULL, NULL, NULL) == -1 &&
           newops_profile(NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL) == -1 &&
           newops_profile_enable(NULL, 1) == NEWOPS_ERR_INVALID_ARGUMENT ? k : 0;
}

/* argv: the export's weights file, a copy of it (truncated once its context is created), B, output file */
int main(int argc, char **argv)
{
    if (argc != 5)
        return 9;
    char err[300];
    newops_ctx *ctx[2] = {NULL, NULL};
    if (newops_create_ex(&ctx[0], argv[1], 4u, err, sizeof err) != NEWOPS_ERR_INVALID_ARGUMENT || ctx[0]) {
        fprintf(stderr, "an unknown flag was accepted\n");
        return 10;
    }
    if (newops_create(&ctx[0], argv[2], err, sizeof err) != 0 ||
        newops_create_ex(&ctx[1], argv[1], NEWOPS_CREATE_MAP_WEIGHTS, err, sizeof err) != 0) {
        fprintf(stderr, "create: %s\n", err);
        return 2;
    }
    if (truncate(argv[2], 0) != 0) /* the copied context keeps its weights */
        return 11;
    const int64_t b = atoll(argv[3]);
    float *x = malloc((size_t)b * 16 * sizeof *x + 8);
    for (int64_t i = 0; i < b * 16; i++)
        x[i] = (float)((i * 5) % 7) / 4.0f - 0.75f;
    host h[2];
    pthread_t t[2];
    for (int c = 0; c < 2; c++)
        if (setup(&h[c], ctx[c], b, x) != 0)
            return 3;
    /* the copied and the mapped context run side by side, each on its own pool of two threads */
    for (int c = 0; c < 2; c++)
        if (pthread_create(&t[c], NULL, runs, &h[c]) != 0)
            return 4;
    for (int c = 0; c < 2; c++)
        pthread_join(t[c], NULL);
    if (h[0].failed || h[1].failed)
        return 5;
    for (int k = 0; k < NEWOPS_NUM_OUTPUTS; k++)
        if (memcmp(h[0].out[0][k], h[1].out[0][k], h[0].bytes[k]) != 0)
            return 6;
    const int kernels = profile_ok(ctx[0]);
    if (!kernels || profile_ok(ctx[1]) != kernels)
        return 7;
    /* a float input at an odd address is refused before the GEMM loads through it */
    h[0].in[0] = (char *)x + 1;
    if (newops_run_v(ctx[0], h[0].dims, (const void *const *)h[0].in, h[0].out[0]) != NEWOPS_ERR_INVALID_ARGUMENT ||
        !strstr(newops_last_error(ctx[0]), "input 'x' (f32) at ") ||
        !strstr(newops_last_error(ctx[0]), " is aligned to 1 byte, its element size needs 4"))
        return 8;
    FILE *f = fopen(argv[4], "wb");
    for (int k = 0; f && k < NEWOPS_NUM_OUTPUTS; k++)
        fwrite(h[1].out[0][k], 1, h[1].bytes[k], f);
    if (!f || fclose(f) != 0)
        return 12;
    printf("isa %s kernels %d\n", newops_isa(), kernels);
    for (int c = 0; c < 2; c++) {
        newops_destroy(ctx[c]);
        for (int k = 0; k < NEWOPS_NUM_OUTPUTS; k++) {
            free(h[c].out[0][k]);
            free(h[c].out[1][k]);
        }
    }
    free(x);
    return 0;
}
"""


def _new_driver(folder: Path, sanitize: bool) -> Path:
    (folder / "host.c").write_text(NEW_DRIVER)
    flags = ["-O1", *SANITIZE_FLAGS] if sanitize else ["-O2", "-g"]
    res = subprocess.run(["gcc", *flags, "-Wall", "-Wextra", "-Werror", "-I.", "host.c", "-o", "host", "-L.",
                          "-lnewops", "-Wl,-rpath,$ORIGIN", "-lpthread"], cwd=folder, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return folder / "host"


def _check_new_outputs(model, b: int, raw: bytes, want: dict[str, np.ndarray], label: str) -> None:
    got, pos = {}, 0
    for s in model.outputs:
        shape = s.resolve({"B": b})
        n = int(np.prod(shape)) * np.dtype(s.np).itemsize
        got[s.name] = np.frombuffer(raw[pos:pos + n], s.np).reshape(shape)
        pos += n
    assert pos == len(raw) and set(got) == set(want), label
    for k, w in want.items():
        if w.dtype.kind == "f":
            np.testing.assert_allclose(got[k], w, rtol=1e-5, atol=1e-6, err_msg=f"{label} {k}")
        else:
            np.testing.assert_array_equal(got[k], w, err_msg=f"{label} {k}")


def _host_runs(newops, kind: str, cases, runner) -> list[str]:
    """Run the C host of export `kind` for each (isa, B) case through runner(cmd, env, label) and check
    its outputs against the numpy interpreter; returns the ISA levels the library reported."""
    from tests.test_runtime_isa import narrowed

    folder = newops[kind].directory
    exe = _new_driver(folder, sanitize=kind == "san")
    levels = []
    for i, (isa, b) in enumerate(cases):
        label = f"{kind} GRAPHC_ISA={isa} B={b}"
        scratch = folder / f"copy{i}.safetensors"
        shutil.copyfile(folder / "newops.safetensors", scratch)
        out = folder / f"out{i}.bin"
        env = {k: v for k, v in os.environ.items() if k != "GRAPHC_ISA"}
        env.update(SAN_ENV, GRAPHC_ADAPTIVE_THREADS="0", **({"GRAPHC_ISA": isa} if isa else {}))
        res = runner([str(exe), "newops.safetensors", scratch.name, str(b), out.name], env, label, folder)
        assert res.returncode == 0 and res.stdout.startswith("isa "), f"{label}: exit {res.returncode}\n" \
                                                                       f"{res.stdout}{res.stderr[-6000:]}"
        level = res.stdout.split()[1]
        if isa:
            assert level == narrowed(isa), (label, res.stdout)
        levels.append(level)
        _check_new_outputs(newops["plain"], b, out.read_bytes(), newops["refs"][b], label)
        assert scratch.stat().st_size == 0  # the copied context ran on weights whose file was emptied
    return levels


@needs_sanitizers
def test_newer_code_clean_under_asan_ubsan(newops):
    """The copied and the mapped context of a default-target library side by side on two host threads,
    each with a pool of two, at every ISA level this CPU has, B at 0 (empty tensors through every new
    kernel), 1 and its maximum; a profile run (GRAPHC_PROFILE=1: destroy prints the table); the C input
    checks. No report, leaks checked, outputs equal numpy's."""
    def sanitized_runner(cmd, env, label, cwd):
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
        assert not REPORT.search(res.stderr), f"{label}: sanitizer report\n{res.stderr[-6000:]}"
        return res

    levels = _host_runs(newops, "san", [(None, 32), ("generic", 1), ("generic", 32), ("avx2", 32), ("avx2", 1),
                                        ("avx512", 32), ("avx2", 0)], sanitized_runner)
    assert "generic" in levels
    exe = newops["san"].directory / "host"
    shutil.copyfile(newops["san"].directory / "newops.safetensors", exe.parent / "copyp.safetensors")
    res = sanitized_runner([str(exe), "newops.safetensors", "copyp.safetensors", "7", "outp.bin"],
                           dict(os.environ, GRAPHC_PROFILE="1", GRAPHC_ADAPTIVE_THREADS="0", **SAN_ENV), "profile",
                           exe.parent)
    assert res.returncode == 0 and res.stderr.count("graphc profile of newops: 3 runs") == 2, res.stderr[-3000:]
    # a bad GRAPHC_ISA fails create cleanly (the first context's error path, nothing leaked)
    shutil.copyfile(newops["san"].directory / "newops.safetensors", exe.parent / "copyp.safetensors")
    res = sanitized_runner([str(exe), "newops.safetensors", "copyp.safetensors", "7", "outp.bin"],
                           dict(os.environ, GRAPHC_ISA="avx9000", **SAN_ENV), "bad isa", exe.parent)
    assert res.returncode == 2 and "GRAPHC_ISA='avx9000' is not one of generic, avx2, avx512" in res.stderr, \
        res.stderr[-3000:]
    # the input checks of section (d), a misaligned pointer of each dtype among them, on this library too
    _checks(newops["plain"].directory, "newops", sanitize=False)
    _checks(newops["san"].directory, "newops", sanitize=True)


@needs_valgrind
def test_newer_code_valgrind_memcheck(newops):
    """The same host and checks under memcheck on the optimised default-target library, at the avx2 and
    generic levels (valgrind does not decode AVX-512): no invalid access, no use of uninitialised memory,
    no definite leak."""
    def runner(cmd, env, label, cwd):
        vg = ["valgrind", "--tool=memcheck", "--error-exitcode=99", "--leak-check=full",
              "--errors-for-leak-kinds=definite", "--fair-sched=yes", "-q"]
        return subprocess.run([*vg, *cmd], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)

    _host_runs(newops, "plain", [("avx2", 32), ("generic", 7), ("avx2", 0)], runner)


POOL_DRIVER = r"""
#include <stdio.h>
#include <time.h>
#include "graphc_rt.h"

typedef struct job { int64_t *out; int64_t mul; } job;
static void task(void *a, int64_t i) { const job *j = a; j->out[i] = i * j->mul + 1; }

int main(void)
{
    static int64_t buf[512];
    int failures = 0;
    gc_pool *p = gc_pool_new();
    if (!p)
        return 2;
    gc_pool_enter(p);
    for (int r = 0; r < 3000; r++) {
        const int64_t n = 1 + (r * 37) % 300;
        const job j = {buf, r};
        gc_parallel_for(n, 2, task, (void *)&j);  /* the caller and one worker */
        for (int64_t i = 0; i < n; i++)
            failures += buf[i] != i * r + 1;
        if (r % 500 == 499) {  /* the worker goes to sleep on the condition variable; the next job wakes it */
            const struct timespec pause = {0, 5000000};
            nanosleep(&pause, NULL);
        }
    }
    gc_pool_enter(NULL);
    gc_pool_free(p);
    gc_pool_free(gc_pool_new());  /* a pool that never started a worker */
    printf("failures %d\n", failures);
    return failures != 0;
}
"""


def _probe_tsan() -> str | None:
    if shutil.which("gcc") is None:
        return "no gcc"
    with tempfile.TemporaryDirectory() as d:
        Path(d, "t.c").write_text("#include <pthread.h>\nstatic void *f(void *a) { return a; }\n"
                                  "int main(void) {\n    pthread_t t;\n    pthread_create(&t, 0, f, 0);\n"
                                  "    return pthread_join(t, 0);\n}\n")
        for cmd in (["gcc", "-fsanitize=thread", "t.c", "-o", "t", "-lpthread"], ["./t"]):
            r = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
            if r.returncode != 0:
                return f"gcc cannot build and run ThreadSanitizer programs here: {' '.join(cmd)}: {r.stderr[-300:]}"
    return None


_TSAN_PROBLEM = _probe_tsan()


@pytest.mark.skipif(_TSAN_PROBLEM is not None, reason=str(_TSAN_PROBLEM))
def test_thread_pool_under_tsan(tmp_path):
    """gc_threadpool.c with two threads under ThreadSanitizer: thousands of jobs of 1..300 tasks, workers
    spinning, sleeping and woken, the pool freed with and without workers. No data race may be reported
    (the job's fields were plain variables a late worker read while the next job was written), and every
    task ran exactly once per job."""
    (tmp_path / "pool.c").write_text(POOL_DRIVER)
    rt = ROOT / "runtime_c"
    res = subprocess.run(["gcc", "-O1", "-g", "-fsanitize=thread", "-Wall", "-Wextra", "-Werror", f"-I{rt}", "pool.c",
                          str(rt / "gc_threadpool.c"), "-o", "pool", "-lpthread"], cwd=tmp_path, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([str(tmp_path / "pool")], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, TSAN_OPTIONS="halt_on_error=1:exitcode=66"))
    assert res.returncode == 0 and res.stdout.strip() == "failures 0", res.stdout + res.stderr[-6000:]
    assert "ThreadSanitizer" not in res.stderr, res.stderr[-6000:]


@pytest.mark.skipif(_TSAN_PROBLEM is not None, reason=str(_TSAN_PROBLEM))
def test_newer_code_under_tsan_without_openmp(newops, tmp_path):
    """The whole model under ThreadSanitizer: a serial library (openmp=False, so no libgomp, whose
    uninstrumented barriers ThreadSanitizer cannot follow) built with -fsanitize=thread, its GEMMs on the
    runtime's pool. The C host's copied and mapped contexts run side by side on two host threads, each
    with a pool of two: no race reported, outputs equal numpy's."""
    from graphc.backend import build_options
    from graphc.backend.build import build_library, serial

    mp = pytest.MonkeyPatch()
    mp.setenv("GRAPHC_CFLAGS", os.environ.get("GRAPHC_TEST_CFLAGS", STRICT) + " -fsanitize=thread -g")
    try:  # the sources as an export ships them, built (not loaded: this Python has no TSan runtime) and cached
        out = tmp_path / "tsan"
        graphc.compile(newops["graph"], name="newops", weights="file", openmp=False, target="x86-64-v2",
                       out_dir=out, emit_only=True, cache_dir=sanitized_cache_dir())
        man = json.loads((out / "manifest.json").read_text())
        files = {n: (out / n).read_text() for n in man["files"]["sources"]}
        lib_dir, _ = build_library(files, serial(build_options("c", name="newops", weights="file",
                                                               target="x86-64-v2")), cache_dir=sanitized_cache_dir())
    finally:
        mp.undo()
    shutil.copyfile(lib_dir / "libnewops.so", out / "libnewops.so")
    shutil.copyfile(newops["plain"].directory / "newops.safetensors", out / "newops.safetensors")
    (out / "host.c").write_text(NEW_DRIVER)
    res = subprocess.run(["gcc", "-O1", "-g", "-fsanitize=thread", *STRICT.split(), "-I.", "host.c", "-o", "host",
                          "-L.", "-lnewops", "-Wl,-rpath,$ORIGIN", "-lpthread"], cwd=out, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    for b in (32, 1):
        shutil.copyfile(out / "newops.safetensors", out / "copy.safetensors")
        env = dict(os.environ, GRAPHC_ADAPTIVE_THREADS="0", TSAN_OPTIONS="halt_on_error=1:exitcode=66")
        res = subprocess.run([str(out / "host"), "newops.safetensors", "copy.safetensors", str(b), "out.bin"],
                             cwd=out, capture_output=True, text=True, timeout=300, env=env)
        assert res.returncode == 0 and "ThreadSanitizer" not in res.stderr, f"B={b}: exit {res.returncode}\n" \
                                                                             f"{res.stderr[-6000:]}"
        assert res.stdout.startswith("isa fixed kernels "), res.stdout
        _check_new_outputs(newops["plain"], b, (out / "out.bin").read_bytes(), newops["refs"][b], f"tsan B={b}")
