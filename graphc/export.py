"""Export folders and their weights: the manifest, the self-contained folder a compile writes into
``out_dir``, rebinding new weights to an optimised graph, :func:`write_weights` and :func:`load_compiled`.

An exported folder holds ``NAME.h``, ``libNAME.so``, ``NAME.safetensors`` (weights="file"), the generated
sources and the runtime's (``runtime/``), ``manifest.json``, ``NAME.gir`` (the optimised graph),
``NAME.source.gir`` (the traced graph, for new weights), ``main.c`` and a ``Makefile``. The manifest
records what a loader needs (inputs, outputs, dims, parameters, the build's options with what the
backend adds, ``Backend.manifest_options``) and the memory plan.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .backend.build import BuildOptions
from .backend.compiled import CompiledModel
from .backend.lowering import Program, fingerprint
from .backend.registry import get_backend
from .backend.weights import read_safetensors, weights_metadata, write_safetensors
from .errors import GraphcError
from .ir.graph import Graph
from .ir.printer import print_graph

__all__ = ["write_weights", "load_compiled", "manifest", "export_folder", "optimized_weights"]


def _as_param(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "_concrete"):
        return value._concrete("state_dict")
    if type(value).__module__.startswith("torch"):
        from .tensor import _torch_to_numpy

        return _torch_to_numpy(value)
    return np.asarray(value)


def optimized_weights(source: Graph, state_dict: Mapping[str, Any], opt_level: int, name: str, fp: str,
                      *, strict: bool = True, fallback: Path | None = None,
                      bake_weights: bool = True) -> dict[str, np.ndarray]:
    """The optimised graph's parameters for new weights of the source graph (checked, same fingerprint).
    Parameters missing from state_dict keep their current values only when strict is False (and for the
    constants the tracer lifted, ``_const<n>``, which no state_dict holds)."""
    from .compiler import optimize_graph

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
    from .ir import parse

    directory = Path(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    name = manifest["name"]
    src_path = directory / f"{name}.source.gir"
    source = parse(src_path.read_text(), source=str(src_path))
    target = Path(path) if path is not None else directory / f"{name}.safetensors"
    params = optimized_weights(source, state_dict, manifest["options"]["opt_level"], name, manifest["fingerprint"],
                               strict=strict, fallback=target if target.exists() else None,
                               bake_weights=manifest["options"]["weights"] == "embed")
    write_safetensors(target, params, weights_metadata(name, manifest["fingerprint"]))
    return target


def _io(infos: list) -> list[dict[str, Any]]:
    return [{"name": t.name, "dtype": t.dtype.name, "shape": [str(d) for d in t.shape]} for t in infos]


def manifest(prog: Program, options: BuildOptions, sources: Mapping[str, str], exported: bool,
             cache_dir: Path) -> dict[str, Any]:
    """manifest.json of a library: its signature, options, memory plan and files."""
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
                    **get_backend(options.backend).manifest_options(options)},
        "memory_plan": {"arena_bytes": str(prog.plan.arena), "capacity_bytes": str(prog.plan.capacity),
                        "blocks": prog.memory_table(), "steps": prog.plan_labels},
        "files": {"sources": sorted(sources), "library": f"lib{prog.name}.so", "header": f"{prog.name}.h"},
        "exported": exported,
        "cache_dir": None if exported else str(cache_dir),
    }


def write_extras(out: Path, prog: Program, manifest: Mapping[str, Any], source: Graph, g: Graph) -> None:
    """The optimised and the source graph and the manifest, into an export (or emit-only) folder."""
    (out / f"{prog.name}.gir").write_text(print_graph(g))
    (out / f"{prog.name}.source.gir").write_text(print_graph(source))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def write_sources(out: Path, prog: Program, sources: Mapping[str, str], manifest: Mapping[str, Any], source: Graph,
                  g: Graph) -> None:
    """An emit-only export: the generated sources, the graphs and the manifest, nothing built."""
    out.mkdir(parents=True, exist_ok=True)
    for n, text in sources.items():
        (out / n).write_text(text)
    write_extras(out, prog, manifest, source, g)


def export_folder(out: Path, built: Path, prog: Program, sources: Mapping[str, str], manifest: Mapping[str, Any],
                  source: Graph, g: Graph, weights_file: Path | None) -> Path:
    """Copy a built library (its cache folder ``built``) into the self-contained folder ``out``."""
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
    write_extras(out, prog, manifest, source, g)
    return out


def load_compiled(directory: str | Path, *, threads: int | None = None,
                  weights: str | Path | None = None) -> CompiledModel:
    """Open a folder exported by ``graphc.compile(..., out_dir=...)`` from Python."""
    directory = Path(directory)
    mpath = directory / "manifest.json"
    if not mpath.exists():
        raise FileNotFoundError(f"{directory} has no manifest.json: not a folder exported by graphc.compile")
    manifest = json.loads(mpath.read_text())
    name = manifest["name"]
    lib = directory / f"lib{name}.so"
    if weights is None and manifest["options"]["weights"] == "file":
        weights = directory / f"{name}.safetensors"
    return CompiledModel(directory, manifest, lib, None if weights is None else Path(weights), threads=threads,
                         rebind_weights=optimized_weights)
