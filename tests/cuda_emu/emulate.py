"""Build a graph's generated CUDA sources against the CPU emulation in this folder (cuda_runtime.h) and
open the result as a graphc CompiledModel: a test tool for machines without a GPU, not part of graphc.

The sources are exactly what ``graphc.backend.generate(..., backend="cuda")`` writes, with one textual
change: every kernel launch ``k<<<grid, block, smem, stream>>>(args)`` becomes
``gcx_emu_launch(k, grid, block, smem, stream, args)`` (standard C++ has no launch syntax). The model
and kernel units are compiled as one C++ translation unit by the host C++ compiler ($CXX, default g++),
the runtime's weights reader and status strings by $CC; the weights go into a safetensors file. Builds
are cached by content under ``cache_dir``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

from graphc.backend import _manifest, generate
from graphc.backend.compiled import CompiledModel
from graphc.backend.cuda import CudaBackend
from graphc.backend.weights import weights_metadata, write_safetensors
from graphc.ir import Graph

HERE = Path(__file__).resolve().parent
RUNTIME = HERE.parent.parent / "runtime_c"
RUNTIME_SOURCES = tuple(CudaBackend.runtime_sources or ())
LAUNCH = re.compile(r"(\w+)<<<(.+?)>>>\(", re.S)
# every grid-stride loop, row loop and GEMM tile loop strides: at most this many blocks per grid dim
MAX_BLOCKS = 3


def cxx() -> list[str]:
    return shlex.split(os.environ.get("CXX", "") or "g++")


def available() -> bool:
    return shutil.which(cxx()[0]) is not None and shutil.which(os.environ.get("CC") or "cc") is not None


def rewrite_launches(text: str) -> str:
    return LAUNCH.sub(lambda m: f"gcx_emu_launch({m.group(1)}, {m.group(2)}, ", text)


def _run(cmd: list[str], cwd: Path) -> None:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"emulated build failed in {cwd}:\n$ {shlex.join(cmd)}\n{res.stderr[-8000:]}")


def build(g: Graph, cache_dir: str | os.PathLike, *, opt_level: int = 2, cxx_opt: str = "-O1",
          **generate_args: Any) -> CompiledModel:
    """Lower g (already optimised) for the CUDA backend, build it on the emulation and open it. cxx_opt: the
    host compiler's optimisation (-O0 builds large graphs fastest, -O1 runs big tensors faster)."""
    prog, files, options = generate(g, backend="cuda", weights="file", opt_level=opt_level, **generate_args)
    flags = ["-std=c++17", cxx_opt, "-fPIC", "-fvisibility=hidden", f"-DGCX_MAX_BLOCKS={MAX_BLOCKS}", "-Wall",
             "-Wextra", "-Werror", "-Wno-unused-parameter"]
    h = hashlib.sha256()
    for part in [" ".join(cxx() + flags), (HERE / "cuda_runtime.h").read_text(),
                 *(f"{n}\0{files[n]}" for n in sorted(files)),
                 *(f"{n}\0{(RUNTIME / n).read_text()}" for n in (*RUNTIME_SOURCES, "graphc_rt.h"))]:
        h.update(part.encode())
    folder = Path(cache_dir) / "cuda-emu" / f"{prog.name}-{h.hexdigest()[:32]}"
    lib = folder / f"lib{prog.name}.so"
    if not lib.exists():
        tmp = folder.with_name(f"tmp-{uuid.uuid4().hex}")
        tmp.mkdir(parents=True)
        for n, text in files.items():
            (tmp / n).write_text(rewrite_launches(text) if n.endswith(".cu") else text)
        units = sorted(n for n in files if n.endswith(".cu"))
        (tmp / "all.cpp").write_text("".join(f'#include "{u}"\n' for u in units))
        cc = shlex.split(os.environ.get("CC") or "cc")
        for c in RUNTIME_SOURCES:
            _run([*cc, "-O1", "-fPIC", "-fvisibility=hidden", f"-I{RUNTIME}", "-c", str(RUNTIME / c), "-o", c + ".o"],
                 tmp)
        _run([*cxx(), *flags, f"-I{HERE}", "-I.", f"-I{RUNTIME}", "-c", "all.cpp", "-o", "all.o"], tmp)
        _run([*cxx(), "-shared", "-o", lib.name, "all.o", *(c + ".o" for c in RUNTIME_SOURCES)], tmp)
        try:
            os.rename(tmp, folder)
        except OSError:  # built concurrently
            shutil.rmtree(tmp, ignore_errors=True)
    weights = folder / f"{prog.name}.safetensors"
    if not weights.exists():
        part = weights.with_name(f".{uuid.uuid4().hex}.tmp")
        write_safetensors(part, {k: g.param_data[k] for k in g.params}, weights_metadata(prog.name, prog.fingerprint))
        os.replace(part, weights)
    manifest = _manifest(prog, options, files, True, folder)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return CompiledModel(folder, manifest, lib, weights)
