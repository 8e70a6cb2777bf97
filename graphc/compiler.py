"""graphc.compile: from a module (or a Graph) to a standalone library, called from Python via cffi.

The pipeline: trace (``graphc.trace``) -> passes (``graphc.passes.optimize``) -> lowering and memory plan
(``backend/lowering.py``, ``backend/memplan.py``) -> the backend renders its sources (templates in
``templates/<backend>/``) -> build with a content-hash cache (``backend/build.py``, commands from the
backend) -> load (:class:`~graphc.backend.compiled.CompiledModel`). With ``out_dir`` the library is
exported as a self-contained folder (``graphc/export.py``); :func:`~graphc.export.load_compiled` reopens it.

Which backend prints and builds is a name looked up in the registry of backends
(``backend/registry.py``): ``backend="cuda"`` (``backend/cuda.py``, ``docs/cuda-backend.md``) prints the same
program as CUDA with the same ABI; ``emit_only=True`` needs neither nvcc nor a GPU, a build needs nvcc, a
call needs a GPU. Nothing here knows a backend by its name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .backend.base import default_model_name, model_name_problem, template_cache
from .backend.build import (
    CACHE_LAYOUT,
    IN_USE,
    TEMPLATES_FOLDER,
    BuildOptions,
    atomic_write,
    build_library,
    default_cache_dir,
    runtime_files,
    sanitized,
    serial,
    verified_file,
)
from .backend.compiled import CompiledModel
from .backend.lowering import Program, lower_program
from .backend.registry import get_backend
from .backend.weights import safetensors_digest, weights_metadata, write_safetensors
from .errors import ExportError
from .export import export_folder, manifest, optimized_weights, write_sources
from .ir.graph import Graph

__all__ = ["compile", "generate", "optimize_graph", "build_options", "MAX_THREADS"]


def _version() -> str:
    from . import __version__

    return __version__


def optimize_graph(g: Graph, opt_level: int, *, bake_weights: bool = True) -> Graph:
    """graphc.passes.optimize(graph, level) on a copy of g (none at level 0), then the IR verifier.
    ``bake_weights`` (weights="embed") lets passes fold weights into each other (LoRA merging); with a
    weights file they stay separate so that a new state_dict can swap them."""
    from .ir.verify import verify
    from .passes import optimize

    g = g.copy()
    if opt_level > 0:
        g = optimize(g, opt_level, bake_weights=bake_weights)
    verify(g)
    return g


# a context's most threads (GC_MAX_THREADS in runtime_c/graphc_rt.h)
MAX_THREADS = 1024

def _model_name(name: str | None, g: Graph) -> str:
    """The library's name: `name` when given (refused when it cannot name a model, see
    ``backend.base.model_name_problem``), else the graph's name made a valid one."""
    if name is not None:
        problem = model_name_problem(name)
        if problem:
            raise ValueError(f"model name {name!r}: {problem}; choose another (name=... or --name)")
        return name
    gname = g.name or "model"
    return gname if model_name_problem(gname) is None else default_model_name(gname)


def build_options(backend: str, *, name: str, weights: str = "embed", opt_level: int = 2, target: str = "default",
                  threads: int | None = None, arch: str | None = None) -> BuildOptions:
    """The flags and knobs of a build (``Backend.build_options``). arch (CUDA only): nvcc's -arch."""
    return get_backend(backend).build_options(name=name, weights=weights, opt_level=opt_level, target=target,
                                              threads=threads, version=_version(), arch=arch)


def generate(g: Graph, *, name: str | None = None, weights: str = "embed", opt_level: int = 2,
             target: str = "default", threads: int | None = None, backend: str = "c",
             arch: str | None = None, sanitize: bool = False,
             openmp: bool = True) -> tuple[Program, dict[str, str], BuildOptions]:
    """Lower an (already optimised) graph and render its sources without compiling (the compile-only path)."""
    be = get_backend(backend)
    name = _model_name(name, g)
    g.name = name
    options = build_options(backend, name=name, weights=weights, opt_level=opt_level, target=target, threads=threads,
                            arch=arch)
    if not openmp:
        options = serial(options)
    if sanitize:
        options = sanitized(options)
    prog = lower_program(g, be, name=name, fuse=opt_level >= 1, threads=threads)
    return prog, be.render_sources(prog, options), options


def _phase(timings: Any, phase: str, fn: Any) -> Any:
    """Run one phase of compile, through timings.run(phase, fn) when the caller times phases."""
    if timings is not None:
        return timings.run(phase, fn)
    return fn()


def compile(module_or_graph: Any, example_inputs: Any = None, dynamic: Mapping[str, Any] | None = None, *,  # noqa: A001
            name: str | None = None, weights: str = "embed", opt_level: int = 2, target: str = "default",
            threads: int | None = None, cache_dir: str | os.PathLike | None = None,
            out_dir: str | os.PathLike | None = None, backend: str = "c", optimized: Graph | None = None,
            emit_only: bool = False, timings: Any = None, arch: str | None = None,
            sanitize: bool = False, force: bool = False, openmp: bool = True) -> CompiledModel:
    """Compile a module (traced with example_inputs and dynamic, like graphc.trace) or a Graph into a
    shared library and return it as a callable :class:`CompiledModel`.

    weights: "embed" bakes them into the library, "file" writes NAME.safetensors that create() maps.
    opt_level: 0 (no passes, no fusion, -O0) .. 2 (default). target: "default" (one library for
    every x86-64 CPU: the kernels compiled per ISA level, the CPU's best picked at create; GRAPHC_ISA lowers
    it), "x86-64-v2"/"x86-64-v3"/"x86-64-v4"/"native" (that level only; create refuses a CPU without it)
    or "portable" (= x86-64-v2). threads: default thread count of each context (None: omp_get_max_threads()).
    cache_dir: build cache (default $GRAPHC_CACHE_DIR or ~/.cache/graphc). out_dir: export folder: new,
    empty or a previous graphc export (whose files are replaced); force=True writes into any other folder,
    overwriting the files in the way (``graphc/export.py``).
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
    openmp=False: a serial library for toolchains without OpenMP (no -fopenmp, omp.h or libgomp; the
    default thread count is 1; ``build.serial``).
    """
    from .importers import as_imported

    imported = as_imported(module_or_graph, example_inputs, dynamic, name=name)  # a torch module, from_torch's result
    if imported is not None:
        compiled = compile(imported.graph, name=name, weights=weights, opt_level=opt_level, target=target,
                           threads=threads, cache_dir=cache_dir, out_dir=out_dir, backend=backend, optimized=optimized,
                           emit_only=emit_only, timings=timings, arch=arch, sanitize=sanitize, force=force,
                           openmp=openmp)
        return compiled if compiled is None else imported.wrap(compiled)
    if weights not in ("embed", "file"):
        raise ValueError(f"weights must be 'embed' or 'file', got {weights!r}")
    if opt_level not in (0, 1, 2, 3):
        raise ValueError(f"opt_level must be 0..3, got {opt_level!r}")
    if threads is not None and not 1 <= int(threads) <= MAX_THREADS:
        raise ValueError(f"threads must be 1..{MAX_THREADS}, got {threads!r}")
    if emit_only and out_dir is None:
        raise ValueError("emit_only writes the sources into out_dir: give out_dir")
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ExportError(f"out_dir {os.fspath(out_dir)}: is a file; an export is a folder")
    if name is not None and model_name_problem(name):
        raise ValueError(f"model name {name!r}: {model_name_problem(name)}; choose another (name=... or --name)")
    if isinstance(module_or_graph, Graph):
        source = module_or_graph.copy()
        if dynamic:
            raise ValueError("dynamic applies to tracing; a Graph declares its dims itself")
    else:
        if example_inputs is None:
            raise ValueError("compile needs example_inputs to trace a module")
        from .trace import trace

        source = _phase(timings, "trace", lambda: trace(module_or_graph, example_inputs, dynamic, name=name))
    model_name = _model_name(name, source)
    source.name = model_name
    if optimized is not None:
        g = optimized.copy()
    else:
        g = _phase(timings, "passes", lambda: optimize_graph(source, opt_level, bake_weights=weights == "embed"))
    g.name = model_name
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    with template_cache(None if emit_only else cache / CACHE_LAYOUT / TEMPLATES_FOLDER):  # the templates' bytecode
        prog, sources, options = _phase(timings, "codegen", lambda: generate(
            g, name=model_name, weights=weights, opt_level=opt_level, target=target, threads=threads,
            backend=backend, arch=arch, sanitize=sanitize, openmp=openmp))
    exported = out_dir is not None
    man = manifest(prog, options, sources, exported, cache)
    meta = weights_metadata(model_name, prog.fingerprint)

    def blob(path: Path) -> None:
        write_safetensors(path, params, meta)

    if emit_only:  # the baked weights' blob too, when the graph holds every parameter (make lib needs it)
        baked = weights == "embed" and all(k in g.param_data for k in g.params)
        params = {k: g.param_data[k] for k in g.params} if baked else {}
        write_sources(Path(out_dir), prog, sources, man, source, g, force=force,  # type: ignore[arg-type]
                      write_baked=blob if baked else None, runtime=runtime_files(options.runtime_sources))
        return None  # type: ignore[return-value]
    params = {k: g.param_data[k] for k in g.params}
    sha = _phase(timings, "weights", lambda: safetensors_digest(params, meta))
    final_w = cache / CACHE_LAYOUT / "weights" / f"{model_name}-{sha[:32]}.safetensors"
    if weights == "file" and not verified_file(final_w, sha):  # kept by content: an overwritten file is rewritten
        write_safetensors(final_w, params, meta)
        IN_USE.add(str(final_w))

    phase = f"{get_backend(backend).display_name} compile"
    folder, hit = _phase(timings, phase, lambda: build_library(sources, options, cache_dir=cache,
                                                             weights_sha=sha, write_blob=blob))
    if exported:
        folder = export_folder(Path(out_dir), folder, prog, sources, man, source, g,  # type: ignore[arg-type]
                               final_w if weights == "file" else None, force=force,
                               write_baked=blob if weights == "embed" else None)
        if weights == "file":
            final_w = folder / f"{model_name}.safetensors"
    elif not (folder / "manifest.json").exists():
        atomic_write(folder / "manifest.json", (json.dumps(man, indent=1) + "\n").encode())
    wpath = final_w if weights == "file" else None
    return _phase(timings, "open", lambda: CompiledModel(folder, man, folder / f"lib{model_name}.so", wpath,
                                                         source_graph=source, threads=threads, cache_hit=hit,
                                                         rebind_weights=optimized_weights))
