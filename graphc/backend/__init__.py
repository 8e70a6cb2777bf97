"""graphc.compile: from a module (or a Graph) to a standalone C or CUDA library, called from Python via cffi.

Pipeline: trace -> ``graphc.passes.optimize`` (when present) -> lowering and memory plan
(``lowering.py``, ``memplan.py``) -> jinja2 templates (``templates/<backend>/``) -> the C compiler with a
content-hash cache (``build.py``) -> :class:`CompiledModel` (``compiled.py``).

With ``out_dir`` the library is exported as a self-contained folder: ``NAME.h``, ``libNAME.so``,
``NAME.safetensors`` (weights="file"), the generated sources and the runtime's, ``manifest.json``,
``NAME.gir`` (optimised graph), ``NAME.source.gir`` (traced graph, for new weights), ``main.c`` and a
``Makefile``; :func:`load_compiled` reopens it.

``backend="cuda"`` (``graphc/backend/cuda.py``, ``docs/cuda-backend.md``) prints the same program as CUDA
with the same ABI; ``emit_only=True`` needs neither nvcc nor a GPU, a build needs nvcc, a call needs a GPU.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GraphcError
from ..ir.graph import Graph
from ..ir.printer import print_graph
from .base import Backend, Namespace, sanitize
from .build import BuildOptions, build_library, cflags, cuda_ldflags, default_cache_dir, ldflags, nvcc_flags, sanitized
from .c import CBackend
from .compiled import CompiledModel, RuntimeErrorC, load_compiled
from .cuda import CudaBackend, check_arch, default_arch
from .lowering import Program, fingerprint, lower_program
from .weights import read_safetensors, safetensors_digest, weights_metadata, write_safetensors

__all__ = ["compile", "load_compiled", "CompiledModel", "write_weights", "Backend", "CBackend", "CudaBackend",
           "Namespace", "RuntimeErrorC", "BACKENDS", "generate"]

BACKENDS: dict[str, type[Backend]] = {"c": CBackend, "cuda": CudaBackend}


def _version() -> str:
    from .. import __version__

    return __version__


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]()
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; graphc has {', '.join(sorted(BACKENDS))}") from None


def optimize_graph(g: Graph, opt_level: int, *, bake_weights: bool = True) -> Graph:
    """Run graphc.passes.optimize(graph, level) on a copy of g when the passes provide it.
    ``bake_weights`` (weights="embed") lets passes fold weights into each other (LoRA merging); with a
    weights file they stay separate so that a new state_dict can swap them."""
    g = g.copy()
    try:
        from .. import passes
    except ImportError:
        passes = None
    opt = getattr(passes, "optimize", None)
    if opt is not None and opt_level > 0:
        import inspect

        kw = {"bake_weights": bake_weights} if "bake_weights" in inspect.signature(opt).parameters else {}
        res = opt(g, opt_level, **kw)
        if isinstance(res, Graph):
            g = res
    from ..ir.verify import verify

    verify(g)
    return g


# a context's most threads (GC_MAX_THREADS in runtime_c/graphc_rt.h)
MAX_THREADS = 1024

# the runtime's prefixes: a model named like them would redefine GC_OK & co. in its header
_RESERVED_MODEL_NAMES = ("gc", "gcx", "graphc_rt")


def _model_name(name: str | None, g: Graph) -> str:
    if name is not None:
        if sanitize(name) != name or Namespace(_RESERVED_MODEL_NAMES).name(name) != name:
            raise ValueError(f"name must be a C identifier that is not a C keyword or a runtime prefix (gc, gc_*), "
                             f"got {name!r}")
        return name
    return Namespace(_RESERVED_MODEL_NAMES).name(sanitize(g.name or "model"))


def _as_param(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "_concrete"):
        return value._concrete("state_dict")
    if type(value).__module__.startswith("torch"):
        from ..tensor import _torch_to_numpy

        return _torch_to_numpy(value)
    return np.asarray(value)


def _optimized_weights(source: Graph, state_dict: Mapping[str, Any], opt_level: int, name: str, fp: str,
                       *, strict: bool = True, fallback: Path | None = None,
                       bake_weights: bool = True) -> dict[str, np.ndarray]:
    """The optimised graph's parameters for new weights of the source graph (checked, same fingerprint).
    Parameters missing from state_dict keep their current values only when strict is False (and for the
    constants the tracer lifted, ``_const<n>``, which no state_dict holds)."""
    g = source.copy()
    g.name = name
    unknown = sorted(set(state_dict) - set(g.params))
    if unknown and strict:
        raise KeyError(f"unexpected key(s) in state_dict: {', '.join(unknown)} (the model has "
                       f"{', '.join(g.params)})")
    old: dict[str, np.ndarray] = {}
    if fallback is not None and Path(fallback).exists():
        old = read_safetensors(fallback)[0]
    for pname, v in g.params.items():
        if pname in state_dict:
            arr = _as_param(state_dict[pname])
        elif strict and not pname.startswith("_const"):  # lifted constants are not in a state_dict
            raise KeyError(f"missing key in state_dict: '{pname}' ({v.type})")
        elif pname in g.param_data:
            arr = g.param_data[pname]
        elif pname in old:
            arr = old[pname]
        else:
            raise KeyError(f"missing key in state_dict: '{pname}' ({v.type})")
        want = tuple(int(d) for d in v.type.shape)
        if tuple(arr.shape) != want or arr.dtype != v.type.dtype.np:
            raise ValueError(f"state_dict['{pname}']: expected {v.type}, got {arr.dtype} array of shape "
                             f"{tuple(arr.shape)}")
        g.param_data[pname] = np.ascontiguousarray(arr)
    opt = optimize_graph(g, opt_level, bake_weights=bake_weights)
    opt.name = name
    if fingerprint(opt) != fp:
        raise GraphcError("the new weights change the optimised graph (its fingerprint differs): recompile the "
                          "model with graphc.compile instead")
    return {k: opt.param_data[k] for k in opt.params}


def write_weights(directory: str | os.PathLike, state_dict: Mapping[str, Any], *, path: str | os.PathLike | None = None,
                  strict: bool = True) -> Path:
    """Write NAME.safetensors for an exported folder from a (fine-tuned) state_dict of the same shapes.
    Returns the file's path (default: inside the folder)."""
    from ..ir import parse

    directory = Path(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    name = manifest["name"]
    src_path = directory / f"{name}.source.gir"
    source = parse(src_path.read_text(), source=str(src_path))
    target = Path(path) if path is not None else directory / f"{name}.safetensors"
    params = _optimized_weights(source, state_dict, manifest["options"]["opt_level"], name, manifest["fingerprint"],
                                strict=strict, fallback=target if target.exists() else None,
                                bake_weights=manifest["options"]["weights"] == "embed")
    write_safetensors(target, params, weights_metadata(name, manifest["fingerprint"]))
    return target


def build_options(backend: str, *, name: str, weights: str = "embed", opt_level: int = 2, target: str = "native",
                  threads: int | None = None, arch: str | None = None) -> BuildOptions:
    """The flags and knobs of a build. arch (CUDA only): nvcc's -arch, default cuda.default_arch()."""
    be = get_backend(backend)
    runtime = list(be.runtime_sources) if be.runtime_sources is not None else None
    if backend == "cuda":
        arch = check_arch(arch) if arch is not None else default_arch()
        return BuildOptions(name=name, weights=weights, opt_level=opt_level, target=target, threads=threads,
                            version=_version(), cflags=cflags(target, opt_level, openmp=False), ldflags=cuda_ldflags(),
                            backend=backend, runtime_sources=runtime, arch=arch, nvcc_flags=nvcc_flags(arch, opt_level))
    if arch is not None:
        raise ValueError(f"arch is an option of the CUDA backend, not of backend {backend!r}")
    return BuildOptions(name=name, weights=weights, opt_level=opt_level, target=target, threads=threads,
                        version=_version(), cflags=cflags(target, opt_level), ldflags=ldflags(), backend=backend,
                        runtime_sources=runtime)


def generate(g: Graph, *, name: str | None = None, weights: str = "embed", opt_level: int = 2,
             target: str = "native", threads: int | None = None, backend: str = "c",
             arch: str | None = None, sanitize: bool = False) -> tuple[Program, dict[str, str], BuildOptions]:
    """Lower an (already optimised) graph and render its sources without compiling (the compile-only path)."""
    be = get_backend(backend)
    name = _model_name(name, g)
    g.name = name
    options = build_options(backend, name=name, weights=weights, opt_level=opt_level, target=target, threads=threads,
                            arch=arch)
    if sanitize:
        options = sanitized(options)
    prog = lower_program(g, be, name=name, fuse=opt_level >= 1, threads=threads)
    return prog, be.render_sources(prog, options), options


def _io(infos: list) -> list[dict[str, Any]]:
    return [{"name": t.name, "dtype": t.dtype.name, "shape": [str(d) for d in t.shape]} for t in infos]


def _manifest(prog: Program, options: BuildOptions, sources: Mapping[str, str], exported: bool,
              cache_dir: Path) -> dict[str, Any]:
    return {
        "name": prog.name,
        "graphc_version": options.version,
        "fingerprint": prog.fingerprint,
        "inputs": _io(prog.inputs),
        "outputs": _io(prog.outputs),
        "dims": [{"name": d.name, "min": d.min, "max": d.max} for d in prog.dims],
        "params": [{"name": q.name, "dtype": q.dtype.name, "shape": list(q.shape)} for q in prog.params],
        "options": {"weights": options.weights, "opt_level": options.opt_level, "target": options.target,
                    "threads": options.threads, "cflags": options.cflags, "ldflags": options.ldflags,
                    "backend": options.backend, "sanitize": options.sanitize,
                    **({"arch": options.arch, "nvcc_flags": options.nvcc_flags} if options.backend == "cuda" else {})},
        "memory_plan": {"arena_bytes": str(prog.plan.arena), "capacity_bytes": str(prog.plan.capacity),
                        "blocks": prog.memory_table(), "steps": prog.plan_labels},
        "files": {"sources": sorted(sources), "library": f"lib{prog.name}.so", "header": f"{prog.name}.h"},
        "exported": exported,
        "cache_dir": None if exported else str(cache_dir),
    }


def _phase(timings: Any, phase: str, fn: Any) -> Any:
    """Run one phase of compile, through timings.run(phase, fn) when the caller times phases."""
    if timings is not None:
        return timings.run(phase, fn)
    return fn()


def compile(module_or_graph: Any, example_inputs: Any = None, dynamic: Mapping[str, Any] | None = None, *,  # noqa: A001
            name: str | None = None, weights: str = "embed", opt_level: int = 2, target: str = "native",
            threads: int | None = None, cache_dir: str | os.PathLike | None = None,
            out_dir: str | os.PathLike | None = None, backend: str = "c", optimized: Graph | None = None,
            emit_only: bool = False, timings: Any = None, arch: str | None = None,
            sanitize: bool = False) -> CompiledModel:
    """Compile a module (traced with example_inputs and dynamic, like graphc.trace) or a Graph into a
    shared library and return it as a callable :class:`CompiledModel`.

    weights: "embed" bakes them into the library, "file" writes NAME.safetensors that create() maps.
    opt_level: 0 (no passes, no fusion, -O0) .. 2 (default). target: "native" (-march=native) or
    "portable". threads: default thread count of each context (None: omp_get_max_threads()).
    cache_dir: build cache (default $GRAPHC_CACHE_DIR or ~/.cache/graphc). out_dir: export folder.
    optimized: the graph already optimised by the caller (skips the passes). emit_only: write the
    sources, manifest and graphs into out_dir without building (returns None). timings: an object whose
    ``run(phase, fn, *args)`` calls fn and records its time (the CLI's Phases).
    backend: "c" or "cuda" (a CUDA library: built with nvcc, run on the GPU, same ABI; see
    docs/cuda-backend.md). arch: nvcc's -arch for backend "cuda" ("native", "sm_80", ...; default: native
    when a GPU is visible, else the oldest architecture nvcc supports from sm_70 on).
    sanitize: a debugging aid (C backend): build the library and the runtime with AddressSanitizer and
    UndefinedBehaviorSanitizer at -O1 (``build.SANITIZE_FLAGS``, a cache entry of its own). Such a
    library loads only where ASan's runtime came first: the exported folder's ``main`` (``make`` links it
    with the same flags) or a Python started with ``LD_PRELOAD=$(gcc -print-file-name=libasan.so)
    ASAN_OPTIONS=detect_leaks=0``; elsewhere the returned model raises a GraphcError saying so when
    called (docs/c-backend.md, "Sanitizer builds").
    """
    if weights not in ("embed", "file"):
        raise ValueError(f"weights must be 'embed' or 'file', got {weights!r}")
    if opt_level not in (0, 1, 2, 3):
        raise ValueError(f"opt_level must be 0..3, got {opt_level!r}")
    if threads is not None and not 1 <= int(threads) <= MAX_THREADS:
        raise ValueError(f"threads must be 1..{MAX_THREADS}, got {threads!r}")
    if emit_only and out_dir is None:
        raise ValueError("emit_only writes the sources into out_dir: give out_dir")
    if isinstance(module_or_graph, Graph):
        source = module_or_graph.copy()
        if dynamic:
            raise ValueError("dynamic applies to tracing; a Graph declares its dims itself")
    else:
        if example_inputs is None:
            raise ValueError("compile needs example_inputs to trace a module")
        from ..trace import trace

        source = _phase(timings, "trace", lambda: trace(module_or_graph, example_inputs, dynamic, name=name))
    model_name = _model_name(name, source)
    source.name = model_name
    if optimized is not None:
        g = optimized.copy()
    else:
        g = _phase(timings, "passes", lambda: optimize_graph(source, opt_level, bake_weights=weights == "embed"))
    g.name = model_name
    prog, sources, options = _phase(timings, "codegen", lambda: generate(
        g, name=model_name, weights=weights, opt_level=opt_level, target=target, threads=threads, backend=backend,
        arch=arch, sanitize=sanitize))
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    exported = out_dir is not None
    manifest = _manifest(prog, options, sources, exported, cache)
    if emit_only:
        out = Path(out_dir)  # type: ignore[arg-type]
        out.mkdir(parents=True, exist_ok=True)
        for n, text in sources.items():
            (out / n).write_text(text)
        _write_extras(out, prog, manifest, source, g)
        return None  # type: ignore[return-value]
    params = {k: g.param_data[k] for k in g.params}
    meta = weights_metadata(model_name, prog.fingerprint)
    sha = _phase(timings, "weights", lambda: safetensors_digest(params, meta))
    final_w = cache / "v1" / "weights" / f"{model_name}-{sha[:32]}.safetensors"
    if weights == "file" and not final_w.exists():
        write_safetensors(final_w, params, meta)
    def blob(path: Path) -> None:
        write_safetensors(path, params, meta)

    phase = "CUDA compile" if backend == "cuda" else "C compile"
    folder, hit = _phase(timings, phase, lambda: build_library(sources, options, cache_dir=cache,
                                                             weights_sha=sha, write_blob=blob))
    if exported:
        folder = _export(Path(out_dir), folder, prog, sources, manifest, source, g,  # type: ignore[arg-type]
                         final_w if weights == "file" else None)
        if weights == "file":
            final_w = folder / f"{model_name}.safetensors"
    elif not (folder / "manifest.json").exists():
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    wpath = final_w if weights == "file" else None
    return _phase(timings, "open", lambda: CompiledModel(folder, manifest, folder / f"lib{model_name}.so", wpath,
                                                         source_graph=source, threads=threads, cache_hit=hit))


def _write_extras(out: Path, prog: Program, manifest: Mapping[str, Any], source: Graph, g: Graph) -> None:
    (out / f"{prog.name}.gir").write_text(print_graph(g))
    (out / f"{prog.name}.source.gir").write_text(print_graph(source))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def _export(out: Path, built: Path, prog: Program, sources: Mapping[str, str], manifest: Mapping[str, Any],
            source: Graph, g: Graph, weights_file: Path | None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    name = prog.name
    for n in sources:
        shutil.copyfile(built / n, out / n)
    rt = out / "runtime"
    rt.mkdir(exist_ok=True)
    for f in sorted((built / "runtime").iterdir()):
        shutil.copyfile(f, rt / f.name)
    lib = out / f"lib{name}.so"
    tmp = out / f".lib{name}.so.tmp"
    shutil.copyfile(built / f"lib{name}.so", tmp)
    os.replace(tmp, lib)  # a new inode: processes that mapped the old library keep it
    if weights_file is not None:
        shutil.copyfile(weights_file, out / f".{name}.safetensors.tmp")
        os.replace(out / f".{name}.safetensors.tmp", out / f"{name}.safetensors")
    _write_extras(out, prog, manifest, source, g)
    return out
