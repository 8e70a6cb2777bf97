"""The backends: code generators that print a lowered program and the knobs of their toolchains.

``base.py`` (the :class:`Backend` class: dialect knobs, templates, toolchain, the sources' layout),
``registry.py`` (the backends by name), ``c.py`` and ``cuda.py`` (the two backends: their rules and
knobs, importing nothing from each other), ``lowering.py`` / ``fusion.py`` / ``memplan.py`` (the
backend-neutral lowering, elementwise fusion groups and memory plan), ``analysis.py`` (each op family's
analysis, computed once for whichever backend prints it), ``common.py`` (the rules every backend shares),
``build.py`` (compiling with a content-addressed cache),
``compiled.py`` (loading a library through cffi), ``weights.py`` (safetensors).

The pipeline that drives them lives above this package: ``graphc/compiler.py`` (graphc.compile) and
``graphc/export.py`` (export folders, new weights); the names ``graphc.backend.compile``,
``load_compiled``, ``write_weights``, ``generate`` ... still resolve here, loaded on first use, so that
nothing in this package imports the modules above it.
"""

from __future__ import annotations

from typing import Any

from .base import Backend, Namespace, sanitize
from .c import CBackend
from .compiled import CompiledModel, RuntimeErrorC
from .cuda import CudaBackend
from .registry import BACKENDS, get_backend, register_backend

__all__ = ["compile", "load_compiled", "CompiledModel", "write_weights", "Backend", "CBackend", "CudaBackend",
           "Namespace", "RuntimeErrorC", "BACKENDS", "generate", "get_backend", "register_backend", "sanitize"]

# names of the pipeline modules, kept here for the code that imported them from graphc.backend
_COMPILER = {"compile": "compile", "generate": "generate", "optimize_graph": "optimize_graph",
             "build_options": "build_options", "MAX_THREADS": "MAX_THREADS", "_model_name": "_model_name"}
_EXPORT = {"load_compiled": "load_compiled", "write_weights": "write_weights", "_manifest": "manifest",
           "_optimized_weights": "optimized_weights"}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _COMPILER:
        return getattr(importlib.import_module("graphc.compiler"), _COMPILER[name])
    if name in _EXPORT:
        return getattr(importlib.import_module("graphc.export"), _EXPORT[name])
    raise AttributeError(f"module 'graphc.backend' has no attribute {name!r}")
