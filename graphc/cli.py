"""The `graphc` command line: compile, run, bench, trace, show, cache.

Exit codes: 0 success, 1 a user error (one clear line on stderr; --debug shows the traceback),
2 a usage error (argparse).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .backend.build import TARGETS
from .drawing import graph_to_dot, memory_plan_svg
from .drawing import human_bytes as _human
from .errors import CompileError, GraphcError
from .modelfile import UserError, load_model_file, run_user_code, trace_model

EXAMPLES = {
    "compile": """examples:
  graphc compile examples/mlp/model.py -o out/mlp
  graphc compile model.py -o out/ --weights file --input x:f32[B,784] --dim B=1..64
  graphc compile model.py --emit-c -o src/            # C sources only
  graphc compile model.py --backend cuda -o out/      # a CUDA library (needs nvcc; runs on a GPU)
  graphc compile model.py --backend cuda --emit-c -o src/   # CUDA sources only (no nvcc needed)
  graphc compile graph.gir --weights-file graph.safetensors -o out/
  graphc compile model.py -o out/ --verify            # compare with the reference interpreter
  graphc compile model.py -o out/asan --sanitize      # ASan/UBSan build: cd out/asan && make && ./main
  graphc compile model.py -o out/ --no-openmp         # a serial library, for toolchains without OpenMP
  (the folder builds with make lib / make static, CMake (graphc::NAME) and pkg-config: docs/c-backend.md)""",
    "run": """examples:
  graphc run out/mlp                                  # random inputs
  graphc run out/mlp --input x=batch.npy --save outputs.npz""",
    "bench": """examples:
  graphc bench out/mlp --runs 200 --threads 2 --dim B=32
  graphc bench out/mlp --profile""",
    "trace": """examples:
  graphc trace examples/mlp/model.py                  # print the IR
  graphc trace graph.gir                              # parse and print back in canonical form
  graphc trace model.py -O2                           # the optimised graph
  graphc trace model.onnx --dim batch=1..64           # an ONNX file through graphc.from_onnx
  graphc trace torch_model.py                         # 'model' a torch.nn.Module: graphc.from_torch""",
    "cache": """examples:
  graphc cache info                                   # location, entries, total size, leftovers
  graphc cache clean --older-than 30d                 # entries unused for 30 days
  graphc cache clean                                  # everything (GRAPHC_CACHE_MAX_BYTES caps the size)""",
    "show": """examples:
  graphc show examples/mlp/model.py -o graph.svg      # needs Graphviz 'dot' for SVG/PNG
  graphc show examples/mlp/model.py -o graph.dot
  graphc show model.onnx -O2 -o graph.svg             # an ONNX file, after the passes
  graphc show out/mlp --memory -o plan.svg            # the arena's memory plan""",
}


class Phases:
    """Prints each phase with its time."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.times: dict[str, float] = {}

    def run(self, phase: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        dt = time.perf_counter() - t0
        self.times[phase] = dt
        if not self.quiet:
            print(f"  {phase:<10} {dt * 1000:9.1f} ms", flush=True)
        return out


def _load(args, need_weights: bool = True) -> Any:
    return load_model_file(args.model_file, model_name=args.model, inputs=args.input, dynamic=args.dynamic,
                           dims=args.dim, weights_file=args.weights_file, need_weights=need_weights)


def _trace_graph(lm, opt_level: int = 0):
    from .passes import optimize

    g = lm.graph if lm.graph is not None else run_user_code(lambda: trace_model(lm), lm.path, "forward()")
    return optimize(g, opt_level) if opt_level else g


# ------------------------------------------------------------------------------------------ compile
def cmd_compile(args) -> int:
    from .backend.registry import get_backend
    from .compiler import compile as gc_compile
    from .passes import optimize

    if args.name is not None:
        from .backend.base import model_name_problem

        problem = model_name_problem(args.name)
        if problem:
            raise UserError(f"--name {args.name}: {problem}")
    if args.output and Path(args.output).exists() and not Path(args.output).is_dir():
        raise UserError(f"-o {args.output}: is a file; compile writes a folder (give a new or an exported folder)")
    if args.threads is not None:
        _check_threads(args.threads)
    print(f"graphc {__version__}: compiling {args.model_file}")
    ph = Phases()
    lm = ph.run("load", _load, args)
    if lm.graph is not None:
        graph = lm.graph
    else:
        graph = ph.run("trace", lambda: run_user_code(lambda: trace_model(lm, args.name), lm.path, "forward()"))
    _check_dim_ranges(args.dim, graph)
    if args.name:
        graph.name = args.name
    be = get_backend(args.backend)
    if args.arch and "arch" not in be.option_names:
        raise UserError(f"--arch {args.arch}: the GPU architecture is an option of "
                        + " or ".join(f"--backend {n}" for n in _backends_with("arch")))
    if args.sanitize and (not be.sanitizer_builds or args.verify):
        raise UserError("--sanitize builds a C library for the exported main (make && ./main): it cannot go with "
                        + ("--verify, which loads the library into this process" if be.sanitizer_builds
                           else f"--backend {args.backend}"))
    optimized = ph.run("passes", optimize, graph, args.opt_level, bake_weights=args.weights == "embed")
    if not args.name:
        from .compiler import _model_name

        graph.name = _model_name(None, graph)
    out_dir = Path(args.output or f"out/{graph.name}")
    extra = {"arch": args.arch} if args.arch else {}
    if args.sanitize:
        extra["sanitize"] = True
    if not args.openmp:
        extra["openmp"] = False
    cm = gc_compile(graph, name=args.name, weights=args.weights, opt_level=args.opt_level, target=args.target,
                    threads=args.threads, cache_dir=args.cache_dir, out_dir=str(out_dir), backend=args.backend,
                    emit_only=args.emit_c, optimized=optimized, timings=ph, force=args.force, **extra)
    if args.verify and not args.emit_c:
        _verify(cm, graph)
    print(f"wrote {out_dir}/")
    for f in sorted(out_dir.iterdir()):
        if f.is_file():
            print(f"  {f.name:<32} {_human(f.stat().st_size):>10}")
    return 0


def _check_dim_ranges(items: list[str] | None, graph) -> None:
    """Every --dim NAME=MIN..MAX names a dynamic dim of the traced graph (not silently ignored)."""
    from .modelfile import parse_dim_range

    for it in items or []:
        name = parse_dim_range(it)[0]
        if name not in graph.dims:
            have = ", ".join(graph.dims) or "none: every dim is static"
            raise UserError(f"--dim {it}: the model has no dynamic dim '{name}' (its dynamic dims: {have})")


def _check_threads(n: int) -> None:
    from .compiler import MAX_THREADS

    if not 1 <= n <= MAX_THREADS:
        raise UserError(f"--threads {n}: the thread count must be 1..{MAX_THREADS}")


def _writable_file(path: str, flag: str, what: str) -> Path:
    """The file an option names: refused when it is a folder or its folder does not exist."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{flag} {path}: is a folder; {what}")
    if not p.parent.is_dir():
        raise UserError(f"{flag} {path}: folder {p.parent} does not exist")
    return p


def _write_atomic(path: Path, write, flag: str) -> None:
    """write(f) into memory, then the bytes under a temporary name beside path renamed over it
    (``build.atomic_write``: readers see the old file or the new one, never a part)."""
    import io

    from .backend.build import atomic_write

    buf = io.BytesIO()
    write(buf)
    try:
        atomic_write(path, buf.getvalue())
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write: {e.strerror or e}") from None


def _backends_with(option: str) -> list[str]:
    from .backend.registry import BACKENDS, backend_names

    return [n for n in backend_names() if option in BACKENDS[n].option_names]


def _verify(cm, graph) -> None:
    from .ir.interpreter import compare_outputs, interpret

    feeds = _read_inputs(cm, None, {d: min(max(3, lo), hi) for d, (lo, hi) in cm.dims.items()})
    got = cm.run(**feeds)
    want = interpret(graph, feeds)
    print("verify (compiled library vs reference interpreter, random inputs):")
    rows = compare_outputs(got, want)
    for r in rows:
        extra = f"; NaN on one side only at {r['nan_mismatch']} element(s)" if r["nan_mismatch"] else ""
        if "shape" in r:
            extra = f"; shape {r['shape'][0]} vs {r['shape'][1]}"
        print(f"  {r['name']:<20} max abs error {r['abs_err']:.3e} (max |ref| {r['scale']:.3e}){extra}")
    bad = [r for r in rows if not r["rel"] <= 1e-3]
    if bad:
        worst = max(r["rel"] for r in rows)
        nans = [r["name"] for r in bad if r["nan_mismatch"]]
        why = f"NaN on one side only in {', '.join(nans)}" if nans else f"max relative error {worst:.2e}"
        raise UserError(f"--verify: outputs differ from the reference interpreter ({why})")


# ------------------------------------------------------------------------------------------ run / bench
def _read_inputs(cm, items: list[str] | None, dims: dict[str, int]) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--input '{item}': expected NAME=FILE.npy (or FILE.npz for all inputs)")
        name, path = item.split("=", 1)
        if not Path(path).exists():
            raise UserError(f"--input {name}: {path}: no such file")
        if Path(path).is_dir():
            raise UserError(f"--input {name}: {path} is a folder, expected a .npy file (or an .npz file)")
        try:
            data = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            why = " ".join(str(e).split())
            raise UserError(f"--input {name}: {path}: not a readable .npy or .npz file ({why})") from None
        if isinstance(data, np.lib.npyio.NpzFile):
            if name == "*":
                feeds.update({k: data[k] for k in data.files})
                continue
            if name not in data.files:
                raise UserError(f"--input {name}: {path} has no array '{name}' (it has {', '.join(data.files)})")
            data = data[name]
        feeds[name] = data
    rng = np.random.default_rng(0)
    for spec in cm.inputs:
        if spec.name in feeds:
            continue
        shape = []
        for d in spec.dims:
            if isinstance(d, str):
                lo, hi = cm.dims[d]
                shape.append(dims.get(d, min(max(1, lo), hi)))
            else:
                shape.append(d)
        feeds[spec.name] = (rng.standard_normal(shape) if spec.dtype.is_floating_point
                            else rng.integers(0, 2, size=shape)).astype(spec.dtype.np)
    unknown = set(feeds) - {s.name for s in cm.inputs}
    if unknown:
        raise UserError(f"unknown input(s) {sorted(unknown)}; the model takes {[s.name for s in cm.inputs]}")
    return feeds


def _dims_arg(items: list[str] | None, cm) -> dict[str, int]:
    """--dim NAME=VALUE for run/bench: NAME a dynamic dim of the library, VALUE in its range."""
    out = {}
    for it in items or []:
        if "=" not in it or not it.split("=", 1)[1].isdigit():
            raise UserError(f"--dim '{it}': expected NAME=VALUE, e.g. B=32")
        k, v = it.split("=", 1)
        if k not in cm.dims:
            have = ", ".join(f"{d}={lo}..{hi}" for d, (lo, hi) in cm.dims.items()) or "none: every dim is static"
            raise UserError(f"--dim {it}: {cm.name} has no dynamic dim '{k}' (its dynamic dims: {have})")
        lo, hi = cm.dims[k]
        if not lo <= int(v) <= hi:
            raise UserError(f"--dim {it}: {k} must be {lo}..{hi} for {cm.name}")
        out[k] = int(v)
    return out


def _check_save(path: str, outputs: list[str]) -> Path:
    """--save FILE, checked before the run: .npy for one output, .npz (every output by name) for any number."""
    p = _writable_file(path, "--save", "give a .npy or .npz file name")
    suffix = p.suffix.lower()
    if suffix == ".npy" and len(outputs) != 1:
        raise UserError(f"--save {path}: the model has {len(outputs)} outputs ({', '.join(outputs)}); a .npy file "
                        f"holds one array: save them to {p.with_suffix('.npz').name}")
    if suffix not in (".npy", ".npz"):
        raise UserError(f"--save {path}: give a .npy file (one output) or an .npz file (every output by name)")
    return p


def _save_outputs(p: Path, outs: dict[str, np.ndarray]) -> None:
    """Exactly the file named (numpy would append .npy/.npz to other names), replaced atomically."""
    if p.suffix.lower() == ".npy":
        (arr,) = outs.values()
        _write_atomic(p, lambda f: np.save(f, arr, allow_pickle=False), "--save")
    else:
        _write_atomic(p, lambda f: np.savez(f, **outs), "--save")


def _open(path: str):
    from .export import load_compiled

    p = Path(path)
    if not p.is_dir() or not (p / "manifest.json").exists():
        raise UserError(f"{path}: not an exported graphc folder (no manifest.json); run 'graphc compile' first")
    try:
        return load_compiled(str(p))
    except FileNotFoundError:
        raise
    except OSError as e:  # a library that does not load (dlopen's message names it)
        raise UserError(f"{path}: cannot open the library: {' '.join(str(e).split())}") from None


def cmd_run(args) -> int:
    if args.threads is not None:
        _check_threads(args.threads)
    cm = _open(args.folder)
    if cm.manifest["options"]["weights"] == "embed" and cm.weights_path is not None:
        print(f"weights: {cm.weights_path.name} (new weights written for this export; the ones baked into "
              f"lib{cm.name}.so are not used)")
    save = _check_save(args.save, cm.output_names) if args.save else None
    if args.threads is not None:
        cm.set_num_threads(args.threads)
    feeds = _read_inputs(cm, args.input, _dims_arg(args.dim, cm))
    outs = cm.run(**feeds)
    if save is not None:
        _save_outputs(save, outs)
        print(f"saved {', '.join(outs)} to {args.save}")
    np.set_printoptions(precision=5, suppress=True, threshold=64, edgeitems=4)
    for k, v in outs.items():
        print(f"{k}: {v.dtype}{list(v.shape)}")
        print(v)
    return 0


def cmd_bench(args) -> int:
    if args.threads is not None:
        _check_threads(args.threads)
    if args.runs < 1:
        raise UserError(f"--runs {args.runs}: bench times at least 1 run")
    if args.warmup < 0:
        raise UserError(f"--warmup {args.warmup}: the warm-up run count must be 0 or more")
    cm = _open(args.folder)
    if args.threads is not None:
        cm.set_num_threads(args.threads)
    feeds = _read_inputs(cm, None, _dims_arg(args.dim, cm))
    for _ in range(args.warmup):
        cm.run(**feeds)
    if args.profile:
        cm.enable_profile()
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        cm.run(**feeds)
        times.append(time.perf_counter() - t0)
    t = np.array(times) * 1e3
    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feeds.items())
    print(f"{cm.name}: {args.runs} runs after {args.warmup} warm-up, threads={cm.get_num_threads()}, inputs {shapes}")
    print(f"  median {np.median(t):.4f} ms   min {t.min():.4f} ms   max {t.max():.4f} ms   "
          f"mean {t.mean():.4f} ms")
    if args.profile:
        from .backend.compiled import profile_table

        rows = cm.profile()
        print(f"\nper-kernel profile ({rows[0]['runs'] if rows else 0} runs; the timer adds a little to each "
              "kernel):")
        print(profile_table(rows))
    return 0


# ------------------------------------------------------------------------------------------ trace / show
def cmd_trace(args) -> int:
    out = _writable_file(args.output, "-o", "trace writes the IR text to a file (e.g. -o graph.gir)") \
        if args.output else None
    lm = _load(args, need_weights=args.opt_level > 0)
    g = _trace_graph(lm, args.opt_level)
    _check_dim_ranges(args.dim, g)
    text = str(g)
    if out is not None:
        _write_atomic(out, lambda f: f.write(text.encode()), "-o")
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def _render(dot_text: str, out: Path) -> None:
    import shutil
    import subprocess

    fmt = out.suffix.lstrip(".").lower()
    if fmt in ("dot", "gv"):
        out.write_text(dot_text)
        return
    if fmt not in ("svg", "png", "pdf"):
        raise UserError(f"-o {out}: unknown format '.{fmt}' (use .dot, .svg, .png or .pdf)")
    dot = shutil.which("dot")
    if dot is None:
        dot_path = out.with_suffix(".dot")
        dot_path.write_text(dot_text)
        raise UserError(f"drawing {out.name} needs Graphviz's 'dot' program, which is not installed "
                        f"(apt-get install graphviz); wrote the DOT source to {dot_path} instead")
    r = subprocess.run([dot, f"-T{fmt}", "-o", str(out)], input=dot_text, text=True, capture_output=True)
    if r.returncode:
        raise UserError(f"dot failed: {r.stderr.strip()}")


def cmd_show(args) -> int:
    target = Path(args.target)
    if args.memory:
        if not (target / "manifest.json").exists():
            raise UserError(f"{target}: --memory needs an exported folder with manifest.json (run graphc compile)")
        out = _writable_file(args.output or "plan.svg", "-o", "give an .svg file name")
        if out.suffix.lower() != ".svg":
            raise UserError(f"-o {out}: the memory plan is drawn as .svg")
        from .export import read_manifest

        manifest = read_manifest(target)
        try:
            svg = memory_plan_svg(manifest)
        except ValueError as e:
            raise UserError(f"{target / 'manifest.json'}: {e}") from None
        _write_atomic(out, lambda f: f.write(svg.encode()), "-o")
        print(f"wrote {out}")
        return 0
    if target.is_dir():
        gir = sorted(target.glob("*.gir"))
        gir = [p for p in gir if not p.name.endswith(".source.gir")] or gir
        if not gir:
            raise UserError(f"{target}: no model file or .gir graph to show")
        from .ir import parse

        g = parse(gir[0].read_text(), source=str(gir[0]))
    else:
        if args.output:
            _writable_file(args.output, "-o", "give a .dot, .svg, .png or .pdf file name")
        args.model_file = args.target
        g = _trace_graph(_load(args, need_weights=args.opt_level > 0), args.opt_level)
        _check_dim_ranges(args.dim, g)
    out = _writable_file(args.output or f"{g.name}.svg", "-o", "give a .dot, .svg, .png or .pdf file name")
    _render(graph_to_dot(g, params=args.params), out)
    print(f"wrote {out}")
    return 0


# ------------------------------------------------------------------------------------------ cache
def cmd_cache(args) -> int:
    from .backend import cache
    from .backend.build import default_cache_dir

    root = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if args.action == "info":
        print(cache.describe(root))
        return 0
    age = cache.parse_age(args.older_than) if args.older_than else None
    removed = cache.clean(root, older_than=age, leftovers_only=args.leftovers)
    print(f"removed {len(removed)} item(s), {cache.human(sum(it.size for it in removed))} from {root}")
    return 0


# ------------------------------------------------------------------------------------------ parser
def _model_args(p: argparse.ArgumentParser, file_arg: bool = True) -> None:
    if file_arg:
        p.add_argument("model_file", help="a model .py file (see docs/model-files.md; its 'model' a graphc.nn or a "
                       "torch.nn.Module), an .onnx file or a .gir text IR file")
    p.add_argument("--model", default="model", metavar="NAME", help="the variable holding the module (default: model)")
    p.add_argument("--input", action="append", metavar="SPEC", help="input spec NAME:DTYPE[DIMS], e.g. x:f32[B,784]")
    p.add_argument("--dynamic", action="append", metavar="INPUT:DIM[=NAME]", help="make a dim dynamic, e.g. x:0=B")
    p.add_argument("--dim", action="append", metavar="NAME=MIN..MAX", help="range of a dynamic dim, e.g. B=1..64")
    p.add_argument("--weights-file", metavar="FILE", help="safetensors weights to load into the model")
    p.add_argument("-O", dest="opt_level", type=int, choices=range(4), default=None, metavar="{0,1,2,3}",
                   help="optimisation level (-O0 keeps the graph as traced)")


def build_parser() -> argparse.ArgumentParser:
    from .backend.registry import BACKENDS, DEFAULT_BACKEND, backend_names

    ap = argparse.ArgumentParser(prog="graphc", description="Compile neural-network modules into standalone C "
                                 "libraries.", formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"graphc {__version__}")
    ap.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, epilog=EXAMPLES.get(name),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
        return p

    p = add("compile", "trace, optimise and compile a model into a C library")
    _model_args(p)
    p.add_argument("-o", "--output", metavar="DIR", help="output folder (default: out/NAME)")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty folder that is not a graphc export (overwrites the files in the way)")
    p.add_argument("--backend", choices=backend_names(), default=DEFAULT_BACKEND,
                   help="; ".join(f"{n}: {BACKENDS[n].description}" for n in backend_names()))
    p.add_argument("--arch", metavar="SM", help="with --backend cuda: nvcc's -arch, e.g. sm_80 or native (default: "
                   "native when a GPU is visible, else the oldest architecture nvcc supports from sm_70 on)")
    p.add_argument("--weights", choices=["embed", "file"], default="embed",
                   help="bake weights into the library, or write NAME.safetensors next to it")
    p.add_argument("--name", help="library name (default: from the model file)")
    p.add_argument("--target", choices=list(TARGETS), default="default",
                   help="default: one library for every x86-64 CPU (kernels per ISA, picked at create); "
                   "x86-64-v2/v3/v4 or native: only that ISA level, which create checks (portable = x86-64-v2)")
    p.add_argument("--threads", type=int, help="default thread count of a context")
    p.add_argument("--emit-c", action="store_true", help="write the sources only (C, or CUDA with --backend cuda), "
                   "do not build")
    p.add_argument("--verify", action="store_true", help="compare the library with the reference interpreter")
    p.add_argument("--sanitize", action="store_true",
                   help="debugging aid: build the library and the runtime with AddressSanitizer and "
                        "UndefinedBehaviorSanitizer (-O1 -g); run it through the exported main (make && ./main)")
    p.add_argument("--no-openmp", dest="openmp", action="store_false",
                   help="a serial library for toolchains without OpenMP (no -fopenmp, omp.h or libgomp; one thread "
                   "by default)")
    p.add_argument("--cache-dir", help="compile cache folder (default: $GRAPHC_CACHE_DIR or ~/.cache/graphc)")
    p.set_defaults(func=cmd_compile)

    p = add("run", "run an exported library on inputs (random when none are given)")
    p.add_argument("folder")
    p.add_argument("--input", action="append", metavar="NAME=FILE", help="an input from .npy (or NAME in .npz)")
    p.add_argument("--dim", action="append", metavar="NAME=VALUE", help="value of a dynamic dim for random inputs")
    p.add_argument("--save", metavar="FILE", help="save the outputs: FILE.npy (one output) or FILE.npz (each by "
                   "name); exactly that file")
    p.add_argument("--threads", type=int)
    p.set_defaults(func=cmd_run)

    p = add("bench", "time an exported library")
    p.add_argument("folder")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int)
    p.add_argument("--dim", action="append", metavar="NAME=VALUE", help="value of a dynamic dim, e.g. B=32")
    p.add_argument("--profile", action="store_true", help="time every kernel: time per run, share, GFLOP/s, "
                   "GB/s, op and module path (C hosts: GRAPHC_PROFILE=1)")
    p.set_defaults(func=cmd_bench)

    p = add("trace", "print the IR of a model file, or parse a .gir file and print it back")
    _model_args(p)
    p.add_argument("-o", "--output", metavar="FILE", help="write the IR to FILE")
    p.set_defaults(func=cmd_trace)

    p = add("show", "draw the graph (DOT/SVG/PNG) or an exported library's memory plan")
    p.add_argument("target", help="a model .py file, an .onnx file, a .gir file, or an exported folder")
    _model_args(p, file_arg=False)
    p.add_argument("-o", "--output", metavar="FILE", help="output file (.dot, .svg, .png)")
    p.add_argument("--memory", action="store_true", help="draw the memory plan of an exported folder")
    p.add_argument("--params", action="store_true", help="draw parameters as nodes of their own")
    p.set_defaults(func=cmd_show)

    p = add("cache", "show what the compile cache holds (info) or remove entries and leftovers (clean)")
    p.add_argument("action", choices=["info", "clean"])
    p.add_argument("--older-than", metavar="AGE", help="clean: only entries unused for AGE (90s, 30m, 12h, 7d)")
    p.add_argument("--leftovers", action="store_true", help="clean: only failed builds and interrupted tmp- folders")
    p.add_argument("--cache-dir", help="compile cache folder (default: $GRAPHC_CACHE_DIR or ~/.cache/graphc)")
    p.set_defaults(func=cmd_cache)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not args.command:
        ap.print_help()
        return 2
    if getattr(args, "opt_level", None) is None:
        args.opt_level = 2 if args.command == "compile" else 0
    debug = args.debug or bool(os.environ.get("GRAPHC_DEBUG"))
    try:
        return args.func(args)
    except (UserError, GraphcError, ValueError, FileNotFoundError) as e:
        if debug:
            raise
        msg = " ".join(str(e).split()) if isinstance(e, UserError) else (str(e).splitlines() or [""])[0]
        if isinstance(e, CompileError) and e.first_errors():
            # the compiler's own first error lines: the summary alone does not say what went wrong
            msg += "".join(f"\n  {line}" for line in e.first_errors())
            msg += "\n  (the whole output and the command: graphc --debug ...)"
        print(f"graphc: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `graphc run ... | head`: the reader left; no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
