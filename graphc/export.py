"""Export folders and their weights: the manifest, the self-contained folder a compile writes into
``out_dir``, rebinding new weights to an optimised graph, :func:`write_weights` and :func:`load_compiled`.

An exported folder holds ``NAME.h``, ``libNAME.so``, ``NAME.safetensors`` (weights="file"), the generated
sources and the runtime's (``runtime/``), ``manifest.json``, ``NAME.gir`` (the optimised graph),
``NAME.source.gir`` (the traced graph, for new weights), ``main.c`` and a ``Makefile``. The manifest
records what a loader needs (inputs, outputs, dims, parameters, the build's options with what the
backend adds, ``Backend.manifest_options``), the memory plan and every file the export wrote
(``files["all"]``).

Writing into ``out_dir`` never loses what the user owns: a folder that is not empty and holds no graphc
manifest is refused (:class:`~graphc.errors.ExportError`, naming the folder and the files in the way) unless
``force=True`` (``--force``), which overwrites the files in the way and keeps the others. Re-exporting into a
graphc folder first removes the files the previous manifest lists (``files["all"]``; only those) so no stale
library of another model stays beside the new one. Every file is written to a unique temporary name in its
folder and renamed over the old one (a reader sees the old file or the new one, never a half-copied
library), and exports into one folder are serialised by a lock on the folder itself (``flock``), so two
processes exporting at once each leave a complete, consistent folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .backend.build import BuildOptions, baked_weights_name
from .backend.compiled import CompiledModel
from .backend.lowering import Program, fingerprint
from .backend.registry import get_backend
from .backend.weights import read_safetensors, record_weights_file, weights_metadata, write_safetensors
from .errors import ExportError, GraphcError
from .ir.graph import Graph
from .ir.printer import print_graph

__all__ = ["write_weights", "load_compiled", "read_manifest", "manifest", "export_folder", "optimized_weights"]


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
        g.param_data[pname] = np.asarray(arr, order="C")
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
    if target.resolve() == (directory / f"{name}.safetensors").resolve():
        record_weights_file(directory, target.name)  # the folder uses the new weights from now on
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
                    "backend": options.backend, "sanitize": options.sanitize, "openmp": options.openmp,
                    **get_backend(options.backend).manifest_options(options)},
        "memory_plan": {"arena_bytes": str(prog.plan.arena), "capacity_bytes": str(prog.plan.capacity),
                        "blocks": prog.memory_table(), "steps": prog.plan_labels,
                        # the kernels whose scratch only a run sizes (NAME_work(dims..., nthreads), in floats) and the
                        # step each runs at: that scratch lives in the arena's free bytes at its step
                        "work": [{"kernel": k.name, "step": i} for i, k in enumerate(prog.kernels) if k.work]},
        # the weights file the folder's loaders read (None: the weights baked into the library); new weights
        # written into an embed-mode export set it (record_weights_file)
        "weights_file": f"{prog.name}.safetensors" if options.weights == "file" else None,
        "files": {"sources": sorted(sources), "library": f"lib{prog.name}.so", "header": f"{prog.name}.h"},
        "exported": exported,
        "cache_dir": None if exported else str(cache_dir),
    }


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would race with other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def atomic_write(dst: Path, data: bytes | None = None, *, src: Path | None = None, executable: bool = False) -> None:
    """Write dst (data, or a copy of the file src) through a unique temporary file in dst's folder renamed
    over it: readers see the old file or the new one, never a part, and two writers never share a temporary
    name. The mode is 0666 (0777 when executable) less the umask, like a file the user creates."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if src is not None:
                with open(src, "rb") as s:
                    while chunk := s.read(1 << 20):
                        f.write(chunk)
            else:
                f.write(data or b"")
        os.chmod(tmp, (0o777 if executable else 0o666) & ~_umask())
        os.replace(tmp, dst)  # a new inode: processes that mapped the old file keep it
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def graphc_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest of a graphc export in out, or None (no manifest.json, or one graphc did not write)."""
    try:
        m = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if (isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("files"), dict)
            and "fingerprint" in m and "graphc_version" in m):
        return m
    return None


def listed_files(m: Mapping[str, Any]) -> list[str]:
    """The files an export's manifest says it wrote (folder-relative). Manifests from before
    ``files["all"]`` list the sources, the library and the header only."""
    files = m.get("files") or {}
    names = files.get("all")
    if not isinstance(names, list):
        names = [*(files.get("sources") or []), files.get("library"), files.get("header")]
    return [n for n in names if isinstance(n, str) and n]


def _inside(out: Path, rel: str) -> Path | None:
    """out/rel when rel is a plain relative path inside out (a manifest is not trusted to name others)."""
    p = Path(rel)
    if p.is_absolute() or not p.parts or any(part in ("", ".", "..") for part in p.parts):
        return None
    return out / p


@contextlib.contextmanager
def _folder_lock(out: Path) -> Iterator[None]:
    """An exclusive flock on the folder itself (nothing is left behind in it): one export at a time."""
    try:
        fd = os.open(out, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):  # a file system without flock: atomic renames still hold
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def export_transaction(out: Path, files: list[str], force: bool) -> Iterator[None]:
    """Prepare out for an export that writes ``files`` (folder-relative): create it, refuse a non-empty
    folder that is not a graphc export (unless force), remove the previous export's files that this one
    does not rewrite, all under the folder's lock, which the export's writes stay inside."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"out_dir {out} is a file, not a folder: give a folder to export into")
    out.mkdir(parents=True, exist_ok=True)
    with _folder_lock(out):
        previous = graphc_manifest(out)
        if previous is None:
            present = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
            if present and not force:
                clash = sorted({f.split("/")[0] for f in files} & {p.rstrip("/") for p in present})
                shown = clash or present
                more = f" and {len(shown) - 12} more" if len(shown) > 12 else ""
                what = "would overwrite" if clash else "holds"
                raise ExportError(
                    f"out_dir {out} is not empty and is not a graphc export (no graphc manifest.json); graphc "
                    f"{what} {', '.join(shown[:12])}{more}: export into an empty or new folder, or pass --force "
                    "(Python: force=True) to write into it anyway (the files in the way are overwritten, the others "
                    "kept)")
        else:
            keep = set(files)
            emptied: set[Path] = set()
            for rel in listed_files(previous):
                p = _inside(out, rel)
                if p is None or rel in keep or p.is_dir() or not (p.is_file() or p.is_symlink()):
                    continue
                p.unlink()
                emptied.add(p.parent)
            for d in sorted(emptied, key=lambda q: -len(q.parts)):
                if d != out:
                    with contextlib.suppress(OSError):
                        d.rmdir()  # only when the removal left it empty
        yield


def _export_names(prog: Program, sources: Mapping[str, str], runtime: list[str], weights: bool,
                  baked: bool) -> list[str]:
    name = prog.name
    names = [*sources, *(f"runtime/{r}" for r in runtime), f"lib{name}.so", f"{name}.gir", f"{name}.source.gir",
             "manifest.json"]
    if weights:
        names.append(f"{name}.safetensors")
    if baked:
        names.append(baked_weights_name(name))
    return sorted(set(names))


def write_extras(out: Path, prog: Program, manifest: dict[str, Any], source: Graph, g: Graph,
                 files: list[str]) -> None:
    """The optimised and the source graph and, last, the manifest (listing ``files``) of an export."""
    atomic_write(out / f"{prog.name}.gir", print_graph(g).encode())
    atomic_write(out / f"{prog.name}.source.gir", print_graph(source).encode())
    manifest.setdefault("files", {})["all"] = files
    atomic_write(out / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())


def write_sources(out: Path, prog: Program, sources: Mapping[str, str], manifest: dict[str, Any], source: Graph,
                  g: Graph, *, force: bool = False, write_baked: Callable[[Path], Any] | None = None,
                  runtime: Mapping[str, bytes] | None = None) -> None:
    """An emit-only export: the generated sources, the runtime's (``runtime/``), the graphs and the manifest
    (and the blob of baked weights, ``write_baked``, which NAME_weights.S includes), nothing built: the
    folder's Makefile (make lib) or CMakeLists.txt builds the library."""
    runtime = runtime or {}
    files = sorted({*sources, f"{prog.name}.gir", f"{prog.name}.source.gir", "manifest.json",
                    *(f"runtime/{r}" for r in runtime),
                    *([baked_weights_name(prog.name)] if write_baked is not None else [])})
    with export_transaction(out, files, force):
        for n, text in sources.items():
            atomic_write(out / n, text.encode())
        if runtime:
            (out / "runtime").mkdir(exist_ok=True)
        for n, data in runtime.items():
            atomic_write(out / "runtime" / n, data)
        if write_baked is not None:
            write_baked(out / baked_weights_name(prog.name))
        write_extras(out, prog, manifest, source, g, files)


def export_folder(out: Path, built: Path, prog: Program, sources: Mapping[str, str], manifest: dict[str, Any],
                  source: Graph, g: Graph, weights_file: Path | None, *, force: bool = False,
                  write_baked: Callable[[Path], Any] | None = None) -> Path:
    """Copy a built library (its cache folder ``built``) into the self-contained folder ``out``
    (``manifest["files"]["all"]`` is set to the files written). write_baked(path) writes the blob an
    embed-mode library bakes (``NAME_weights.safetensors``, what make lib / CMake assemble)."""
    name = prog.name
    runtime = sorted(f.name for f in (built / "runtime").iterdir())
    files = _export_names(prog, sources, runtime, weights_file is not None, write_baked is not None)
    with export_transaction(out, files, force):
        for n in sources:
            atomic_write(out / n, src=built / n)
        rt = out / "runtime"
        rt.mkdir(exist_ok=True)
        for f in runtime:
            atomic_write(rt / f, src=built / "runtime" / f)
        if weights_file is not None:
            atomic_write(out / f"{name}.safetensors", src=weights_file)
        if write_baked is not None:
            write_baked(out / baked_weights_name(name))  # atomic (a new file renamed into place)
        atomic_write(out / f"lib{name}.so", src=built / f"lib{name}.so", executable=True)
        write_extras(out, prog, manifest, source, g, files)
    return out


_KIND = {str: "a string", int: "an integer", list: "a list", dict: "an object"}
_IO_KEYS = {"name": str, "dtype": str, "shape": list}
_DIM_KEYS = {"name": str, "min": int, "max": int}
# what load_compiled reads: key -> the type of its value (a dict: the keys of each list item)
_MANIFEST_KEYS: dict[str, Any] = {"name": str, "fingerprint": str, "inputs": _IO_KEYS, "outputs": _IO_KEYS,
                                  "dims": _DIM_KEYS, "options": dict}


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest.json of an exported folder, checked for what loading it reads: a damaged or
    hand-edited one is one ValueError naming the file and the key (never a KeyError later)."""
    from .backend.base import model_name_problem

    mpath = Path(directory) / "manifest.json"
    if not mpath.exists():
        raise FileNotFoundError(f"{directory} has no manifest.json: not a folder exported by graphc.compile")
    try:
        m = json.loads(mpath.read_bytes())
    except (ValueError, OSError) as e:
        raise ValueError(f"{mpath}: damaged manifest, not readable JSON ({e}); export the model again") from None

    def bad(where: str, why: str) -> ValueError:
        return ValueError(f"{mpath}: damaged manifest: {where} {why}; export the model again")

    if not isinstance(m, dict):
        raise bad("the top level", "is not an object")
    for key, kind in _MANIFEST_KEYS.items():
        if key not in m:
            raise bad(f"key '{key}'", "is missing")
        if isinstance(kind, dict):
            if not isinstance(m[key], list):
                raise bad(f"'{key}'", "is not a list")
            for i, item in enumerate(m[key]):
                if not isinstance(item, dict):
                    raise bad(f"'{key}[{i}]'", "is not an object")
                for k, t in kind.items():
                    if k not in item:
                        raise bad(f"key '{key}[{i}].{k}'", "is missing")
                    if not isinstance(item[k], t) or isinstance(item[k], bool):
                        raise bad(f"'{key}[{i}].{k}'", f"is not {_KIND[t]}")
        elif not isinstance(m[key], kind):
            raise bad(f"'{key}'", f"is not {_KIND[kind]}")
    if model_name_problem(m["name"]) is not None:
        raise bad("'name'", f"is {m['name']!r}, not a model name")
    if m["options"].get("weights") not in ("embed", "file"):
        raise bad("'options.weights'", "is not 'embed' or 'file'")
    wf = m.get("weights_file")
    if wf is not None and (not isinstance(wf, str) or _inside(Path(directory), wf) is None or "/" in wf):
        raise bad("'weights_file'", f"is {wf!r}, not the name of a file in the folder")
    return m


def folder_weights(directory: str | Path, manifest: Mapping[str, Any]) -> Path | None:
    """The weights file an export folder's loaders read: ``manifest["weights_file"]`` (weights="file", or
    new weights written into an embed-mode export), None for the weights baked into the library. A file
    the manifest names but the folder lacks is a FileNotFoundError saying what to do."""
    name = manifest["name"]
    wf = manifest.get("weights_file")
    if wf is None and manifest["options"]["weights"] == "file":
        wf = f"{name}.safetensors"  # a manifest from before "weights_file"
    if wf is None:
        return None
    path = Path(directory) / wf
    if not path.is_file():
        if manifest["options"]["weights"] == "embed":
            raise FileNotFoundError(
                f"{directory}: {wf} is missing: the manifest says this export uses the new weights written to it "
                f"(write_weights / load_state_dict) instead of the ones baked into lib{name}.so; write them again, "
                "or pass weights= to load_compiled")
        raise FileNotFoundError(f"{directory}: {wf} is missing (lib{name}.so has no baked weights); export the model "
                                "again, write it with graphc.write_weights, or pass weights= to load_compiled")
    return path


def load_compiled(directory: str | Path, *, threads: int | None = None,
                  weights: str | Path | None = None, map_weights: bool = False) -> CompiledModel:
    """Open a folder exported by ``graphc.compile(..., out_dir=...)`` from Python. weights: a safetensors file
    to use instead of the folder's (default: ``manifest["weights_file"]``, i.e. NAME.safetensors for
    weights="file" and for an embed-mode export that new weights were written into, else the weights baked
    into the library). Each context reads the weights file into memory of its own; map_weights=True maps it
    instead (see CompiledModel)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    name = manifest["name"]
    lib = directory / f"lib{name}.so"
    for need in (lib, directory / f"{name}_cffi.h"):
        if not need.is_file():
            raise FileNotFoundError(f"{directory}: {need.name} is missing (the manifest names model {name!r}); "
                                    "export the model again")
    from ._dtype import as_dtype
    from .sym import parse_dim

    try:
        for spec in manifest["inputs"] + manifest["outputs"]:
            as_dtype(spec["dtype"])
            for d in spec["shape"]:
                parse_dim(str(d))
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{directory / 'manifest.json'}: damaged manifest: input/output "
                         f"'{spec['name']}': {e}; export the model again") from None
    if weights is None:
        weights = folder_weights(directory, manifest)
    return CompiledModel(directory, manifest, lib, None if weights is None else Path(weights), threads=threads,
                         rebind_weights=optimized_weights, map_weights=map_weights)
