"""Building generated sources into a shared library, with a content-addressed cache.

* Compiler: ``$CC`` (default ``cc``), flags ``-O3 -fopenmp -fPIC -fvisibility=hidden`` and the target's
  (``TARGETS``): ``default`` compiles the generated code for ``-march=x86-64-v2`` and the runtime's kernels
  once per ISA level (``ISA_LEVELS``, ``-DGC_ISA=...``) into the same library, gc_dispatch.c picking one at
  create; ``x86-64-v2/v3/v4`` and ``native`` compile everything for that level, which create checks the
  CPU for (``portable`` = ``x86-64-v2``); off x86-64 no -march. ``$GRAPHC_CFLAGS`` adds flags (the tests
  use ``-Wall -Werror``).
* Every translation unit is compiled on its own, in parallel (the runtime's missing objects and the
  library's units in one pool, the biggest first); each runtime object is cached on its own
  (``runtime/<key>/``, key: its source, the headers, its command and the compiler) and linked into every
  library that calls it: the kernel files the generated sources call, directly or through other runtime
  files (:func:`needed_runtime`; gc_dispatch.c's variants of the others are weak, never picked): ResNet-18
  compiles 3 of the 8 kernel files (conv, gemm, pool), each for 3 ISA levels. The folder keeps every
  runtime source (an export's make and CMake build them all).
* Trust: every cache folder is built under a unique ``tmp-<pid>-<uuid>`` name, gets ``graphc-entry.json``
  (size and sha256 of each file) and is renamed into place whole; a hit is used only when every file
  matches its record (checked on each hit; in one process again only when a file's stat changed). A
  damaged entry (truncated, overwritten, emptied) is logged (logger ``graphc.cache``), moved aside and
  rebuilt, so damage never reaches a process or an export folder. A failed build stays as ``failed-<key>``.
* Cache key: sha256 over the generated sources, the runtime sources, the flags, the compiler's
  ``--version`` text, graphc's version and (baked weights) the weights file's hash. A hit returns the
  cached folder without running the compiler.
* Cache folder: ``cache_dir`` argument, else ``$GRAPHC_CACHE_DIR``, else ``~/.cache/graphc``.
* The backend (``options.backend``, looked up in the registry of backends) gives the commands of its
  units and of the link and what its key adds (``Backend.compile_command``, ``link_command``,
  ``cache_key_parts``): the CUDA backend (``cuda.py``) compiles its ``.cu`` units with ``$NVCC``, the
  runtime's safetensors reader and status strings and the baked weights with ``$CC``, and links with nvcc.
* ``openmp=False`` (``--no-openmp``, :func:`serial`): ``-pthread`` instead of ``-fopenmp`` in the compile and
  the link, a serial library for toolchains without OpenMP (no omp.h, no libgomp).
* ``sanitize=True`` (a debugging aid, C backend only): the library *and* the runtime are built with
  ``-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1`` (the
  same flags in the link), so the flags, hence the cache key, differ from the optimised build's. Such a
  library only loads into a program linked with ``-fsanitize=address`` (the exported ``main.c``: ``make``
  uses the flags when the library has them) or a process started with
  ``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import platform
import re
import shlex
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from .._resources import runtime_dir
from ..errors import CompileError
from .registry import DEFAULT_BACKEND, get_backend

CACHE_LAYOUT = "v1"
TEMPLATES_FOLDER = "templates"  # <layout>/templates/: the jinja2 bytecode of the templates (base.py)


@dataclass
class BuildOptions:
    """What the templates and the build need to know about a compile."""

    name: str
    weights: str = "embed"  # "embed" | "file"
    opt_level: int = 2
    target: str = "default"  # one of TARGETS
    threads: int | None = None
    version: str = ""
    cflags: list[str] = field(default_factory=list)
    ldflags: list[str] = field(default_factory=list)
    backend: str = DEFAULT_BACKEND
    runtime_sources: list[str] | None = None  # the runtime_c/*.c files linked (None: all)
    sanitize: bool = False  # ASan/UBSan build (SANITIZE_FLAGS), a debugging aid
    # A backend's own knobs (CUDA's arch and nvcc flags) are fields of its subclass of BuildOptions,
    # which its Backend.build_options returns (graphc/backend/cuda.py: CudaBuildOptions).

    def runtime_commands(self) -> list[tuple[str, str]]:
        """(object, the shell-quoted compiler arguments after $CC) of each runtime object, sources under runtime/: the
        exported Makefile's ``lib`` rule rebuilds the library the way build_library does."""
        files = runtime_files(self.runtime_sources)
        out = []
        for cmd, _, _ in _runtime_jobs(files, compiler(), runtime_flags(self.cflags), Path(".")):
            args = cmd[len(compiler()):]
            i = args.index("-c") + 1
            args[i] = "runtime/" + args[i]
            out.append((args[-1], shlex.join(["-Iruntime", *args])))
        return out

    def runtime_objects(self) -> list[dict[str, Any]]:
        """Each runtime object as the exported CMakeLists.txt builds it: ``name`` (the object's stem, dots
        as underscores), ``source`` (under runtime/), ``options`` and ``defines`` (-D without the -D), the
        compiler arguments of :meth:`runtime_commands` without -I, -c, -o and -fopenmp (CMake adds OpenMP)."""
        files = runtime_files(self.runtime_sources)
        out = []
        for cmd, _, _ in _runtime_jobs(files, compiler(), runtime_flags(self.cflags), Path(".")):
            args = cmd[len(compiler()):]
            i = args.index("-c")
            src, obj = args[i + 1], args[args.index("-o") + 1]
            rest = [a for j, a in enumerate(args) if j not in (i, i + 1) and a != "-o" and a != obj]
            out.append({"name": Path(obj).stem.replace(".", "_"), "source": f"runtime/{src}",
                        "defines": [a[2:] for a in rest if a.startswith("-D")],
                        "options": [a for a in rest if not a.startswith(("-D", "-I")) and a != "-fopenmp"]})
        return out

    @property
    def openmp(self) -> bool:
        """True when the library is compiled and linked with OpenMP (-fopenmp); False: a serial library
        (:func:`serial`, ``compile(..., openmp=False)``, a backend whose host code has none)."""
        return "-fopenmp" in self.cflags

    @property
    def sanitize_flags(self) -> list[str]:
        """The sanitizer flags of this build (empty unless sanitize): a program linking it needs them too."""
        return list(SANITIZE_FLAGS) if self.sanitize else []


def compiler() -> list[str]:
    return shlex.split(os.environ.get("CC", "") or "cc")


@lru_cache(maxsize=8)
def compiler_version(cc: tuple[str, ...], what: str = "C compiler", hint: str = "set CC to a C compiler") -> str:
    """The ``--version`` text of a compiler (part of the cache key); what / hint word the error."""
    try:
        res = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CompileError(f"cannot run the {what} {' '.join(cc)!r}: {e} ({hint})") from None
    return res.stdout + res.stderr


# target -> what it compiles for. "default": one library for every x86-64 CPU from x86-64-v2 up (the
# generated code at x86-64-v2, the runtime's kernels once per ISA level, picked at create); the others
# build everything for one level and create refuses a CPU below it. "portable" is x86-64-v2's old name.
TARGETS = ("default", "x86-64-v2", "x86-64-v3", "x86-64-v4", "native", "portable")
# the kernel levels of a default-target library: GC_ISA suffix -> -march (runtime_c/gc_dispatch.c)
ISA_LEVELS = {"generic": "x86-64-v2", "avx2": "x86-64-v3", "avx512": "x86-64-v4"}
DISPATCH_FLAG = "-DGC_DISPATCH"
# runtime files compiled once, for the library's own flags: those that are not kernels, and gc_index.c,
# whose rows are libc memcpy calls (libc picks its own ISA): its three variants were the same code
_NOT_DISPATCHED = ("gc_dispatch.c", "gc_index.c", "gc_safetensors.c", "gc_status.c", "gc_threadpool.c")


# runtime files no run calls (the weights' parser, run at create; the status strings): -O2, which compiles
# gc_safetensors.c in 0.31 s of CPU instead of 0.50 (the kernels keep -O3: -O2 made ResNet-18 1.18x slower
# on AVX-512 and 1.98x on the generic level, -fno-tree-loop-vectorize 1.10x)
_CREATE_ONLY = ("gc_safetensors.c", "gc_status.c")


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def cflags(target: str = "default", opt_level: int = 2, *, openmp: bool = True) -> list[str]:
    opt = {0: "-O0", 1: "-O2"}.get(opt_level, "-O3")
    flags = [opt, "-std=gnu11", *(["-fopenmp"] if openmp else []), "-fPIC", "-fvisibility=hidden", "-fwrapv",
             "-fno-math-errno"]
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if target == "native":
        flags.append("-march=native")
    elif target.startswith("x86-64-") or target in ("default", "portable"):
        if is_x86():
            flags.append(f"-march={'x86-64-v2' if target in ('default', 'portable') else target}")
            if target == "default":
                flags.append(DISPATCH_FLAG)
        elif target.startswith("x86-64-"):
            raise ValueError(f"target {target!r} is an x86-64 level; this machine is {platform.machine()}")
    flags += shlex.split(os.environ.get("GRAPHC_CFLAGS", ""))
    return flags


def runtime_flags(flags: Sequence[str]) -> list[str]:
    """The runtime is hand-written and always built optimised, whatever the graph's opt_level (a
    sanitized build keeps -O1 for it too: optimised code hides the places a report names)."""
    if any(f.startswith("-fsanitize=") for f in flags):
        return list(flags)
    return ["-O3" if f in ("-O0", "-O1", "-O2") else f for f in flags]


# AddressSanitizer + UndefinedBehaviorSanitizer: a UB report aborts the program like an ASan report does
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-g"]


def sanitized(options: BuildOptions) -> BuildOptions:
    """The options of the ASan/UBSan build of the same library: -O1 and SANITIZE_FLAGS in the compile and
    the link (a separate cache entry, since the flags are part of the key)."""
    if not get_backend(options.backend).sanitizer_builds:
        raise ValueError(f"sanitize=True builds C libraries; backend {options.backend!r} has no sanitizer build")
    flags = [f for f in options.cflags if not re.fullmatch(r"-O[0-3sgz]?|-O(fast)?", f)]
    return replace(options, sanitize=True, cflags=["-O1", *SANITIZE_FLAGS, *flags],
                   ldflags=[*options.ldflags, SANITIZE_FLAGS[0]])


def serial(options: BuildOptions) -> BuildOptions:
    """The options of the same library without OpenMP (``compile(..., openmp=False)``, ``--no-openmp``): for
    toolchains without an OpenMP runtime. No -fopenmp (so no omp.h and no libgomp): the generated loops and
    the runtime's OpenMP loops run on the calling thread, a context's default thread count is 1, and
    set_num_threads still spreads the GEMM and convolution kernels over the runtime's own pthread pool
    (hence -pthread). A separate cache entry, since the flags are part of the key."""
    def swap(flags: list[str]) -> list[str]:
        return ["-pthread" if f == "-fopenmp" else f for f in flags]

    return replace(options, cflags=swap(options.cflags), ldflags=swap(options.ldflags))


def ldflags() -> list[str]:
    return ["-fopenmp", "-lm", "-Wl,--no-undefined"]


def baked_weights_name(name: str) -> str:
    """The safetensors blob that NAME_weights.S bakes into an embed-mode library (the export folder ships
    it so that make lib / CMake can rebuild the library; NAME.safetensors is the file of new weights)."""
    return f"{name}_weights.safetensors"


def default_cache_dir() -> Path:
    env = os.environ.get("GRAPHC_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "graphc"


def runtime_files(names: Sequence[str] | None = None) -> dict[str, bytes]:
    """The runtime's sources (all, or the named .c files and every header)."""
    rt = runtime_dir()
    return {p.name: p.read_bytes() for p in sorted(rt.iterdir())
            if p.suffix == ".h" or (p.suffix == ".c" and (names is None or p.name in names))}



_IDENT = re.compile(rb"\bgc_[A-Za-z0-9_]+\b")
# a definition at the start of a line: "void gc_conv2d(const ..." (not a prototype, which ends in ";")
_DEFINITION = re.compile(rb"^[A-Za-z_][\w \t\*]*?\b(gc_[A-Za-z0-9_]+)\s*\([^;{]*?\)\s*\{", re.M)
# always linked: the dispatch table, the weights reader, the status strings and the thread pool
_ALWAYS = ("gc_dispatch.c", "gc_safetensors.c", "gc_status.c", "gc_threadpool.c")


@lru_cache(maxsize=4)
def _runtime_symbols(files: tuple[tuple[str, bytes], ...]) -> tuple[dict[bytes, set[str]], dict[str, set[bytes]]]:
    """(symbol -> the runtime .c files that define it, file -> the gc_ symbols it names)."""
    defined: dict[bytes, set[str]] = {}
    named: dict[str, set[bytes]] = {}
    for n, text in files:
        if not n.endswith(".c"):
            continue
        named[n] = set(_IDENT.findall(text))
        if n == "gc_dispatch.c":
            continue  # it defines every kernel's plain name: what it calls is found from the kernel files
        for m in _DEFINITION.finditer(text):
            defined.setdefault(m.group(1), set()).add(n)
    return defined, named


def needed_runtime(sources: Mapping[str, str]) -> list[str]:
    """The runtime .c files a library's sources call into, with those they call in turn (and _ALWAYS):
    a model without attention, norms or reductions compiles and links no such kernels (gc_dispatch.c's
    variants are weak, so its table for the others stays empty)."""
    files = runtime_files()
    defined, named = _runtime_symbols(tuple(files.items()))
    want = [n for n in _ALWAYS if n in files]
    todo = set()
    for n, text in sources.items():  # the library's code, not the Makefile's object lists or main.c
        if n.endswith((".c", ".h", ".S")) and n != "main.c":
            todo |= set(_IDENT.findall(text.encode()))
    for n in want:
        todo |= named.get(n, set()) if n != "gc_dispatch.c" else set()
    seen: set[bytes] = set()
    while todo:
        sym = todo.pop()
        if sym in seen:
            continue
        seen.add(sym)
        for f in sorted(defined.get(sym, ())):
            if f not in want:
                want.append(f)
                todo |= named[f] - seen
    return sorted(want)


def _digest(parts: Sequence[bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def _run(cmd: list[str], cwd: Path, what: str, tool: str = "C compiler") -> None:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        out = res.stderr.strip() or res.stdout.strip()
        raise CompileError(f"the {tool} failed on {what} (in {cwd}):\n$ {shlex.join(cmd)}\n{out}", out)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: a container's or taskset's limit), which
    os.cpu_count() (every CPU of the machine) overstates."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _parallel(jobs: list[tuple]) -> None:
    """Run the compile jobs in a pool of usable_cpus() threads, each waiting on its compiler process;
    every job writes its own file, so the results do not depend on the order they finish in."""
    workers = max(1, min(len(jobs), usable_cpus()))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(_run, *job) for job in jobs]
        errors: list[CompileError] = []
        for f in futures:
            try:
                f.result()
            except CompileError as e:
                errors.append(e)
    if errors:
        raise CompileError("\n\n".join(map(str, errors)), errors[0].output)


# compiler macro -> the feature name gc_dispatch.c checks (__builtin_cpu_supports spelling)
_ISA_MACROS = {"__SSE3__": "sse3", "__SSSE3__": "ssse3", "__SSE4_1__": "sse4.1", "__SSE4_2__": "sse4.2",
               "__POPCNT__": "popcnt", "__AVX__": "avx", "__AVX2__": "avx2", "__FMA__": "fma", "__BMI__": "bmi",
               "__BMI2__": "bmi2", "__AVX512F__": "avx512f", "__AVX512VL__": "avx512vl", "__AVX512BW__": "avx512bw",
               "__AVX512DQ__": "avx512dq", "__AVX512CD__": "avx512cd"}


@lru_cache(maxsize=32)
def required_isa(cc: tuple[str, ...], flags: tuple[str, ...]) -> str:
    """The x86 features code compiled with these flags may use (space-separated), from the compiler's
    predefined macros: what create checks the CPU for. Empty off x86."""
    if not is_x86():
        return ""
    compiler_version(cc)  # a missing compiler is a CompileError saying so
    keep = [f for f in flags if f.startswith(("-m", "-D", "-U"))]
    res = subprocess.run([*cc, *keep, "-dM", "-E", "-x", "c", os.devnull], capture_output=True, text=True)
    defined = {line.split()[1] for line in res.stdout.splitlines() if line.startswith("#define ")}
    return " ".join(name for macro, name in _ISA_MACROS.items() if macro in defined)


def _baseline(flags: Sequence[str]) -> list[str]:
    """flags without the ISA ones: gc_dispatch.c checks the CPU before any newer instruction may run."""
    return [f for f in flags if not f.startswith("-m")] + (["-march=x86-64"] if is_x86() else [])


def _runtime_jobs(files: Mapping[str, bytes], cc: list[str], flags: list[str], tmp: Path) -> list[tuple]:
    """The compile jobs of the runtime: each kernel file once (or once per ISA level with GC_ISA in a
    default-target build), gc_dispatch.c for baseline x86-64 with the features the library requires."""
    jobs = []
    dispatch = DISPATCH_FLAG in flags
    for n in files:
        if not n.endswith(".c"):
            continue
        stem = Path(n).stem
        if n == "gc_dispatch.c":
            req = required_isa(tuple(cc), tuple(flags))
            jobs.append(([*cc, *_baseline(flags), f'-DGC_REQUIRED_ISA="{req}"', "-c", n, "-o", stem + ".o"], tmp,
                         f"runtime_c/{n}"))
        elif dispatch and n not in _NOT_DISPATCHED:
            for isa, march in ISA_LEVELS.items():
                fl = [f for f in flags if not f.startswith("-march=")] + [f"-march={march}", f"-DGC_ISA={isa}"]
                jobs.append(([*cc, *fl, "-c", n, "-o", f"{stem}.{isa}.o"], tmp, f"runtime_c/{n} ({isa})"))
        else:
            fl = ["-O2" if f == "-O3" else f for f in flags] if n in _CREATE_ONLY else flags
            jobs.append(([*cc, *fl, "-c", n, "-o", stem + ".o"], tmp, f"runtime_c/{n}"))
    return jobs


def _runtime_plan(cache: Path, cc: list[str], flags: list[str], names: Sequence[str] | None = None
                  ) -> tuple[list[Path], list[tuple], Callable[[], None], Callable[[], None]]:
    """The runtime's object files (all, or the named ones), each cached on its own under
    ``runtime/<key>/`` (key: its source, every header, its compile command and the compiler's version), so
    a kernel edited or a model of other runtime files rebuilds only what changed.

    Returns (object paths, the compile jobs of the objects missing or damaged, publish, discard): run the
    jobs (alongside the library's own units), then ``publish()`` installs their objects; ``discard()``
    removes the build folder after a failure."""
    files = runtime_files(names)
    headers = [k.encode() + b"\0" + v for k, v in files.items() if k.endswith(".h")]
    tmp = _tmp_dir(cache)
    version = compiler_version(tuple(cc)).encode()
    objs, missing = [], []
    for cmd, _, what in _runtime_jobs(files, cc, flags, tmp):
        src = cmd[cmd.index("-c") + 1]
        key = _digest([b"runtime-object", src.encode() + b"\0" + files[src], *headers, "\0".join(cmd).encode(),
                       version])
        final = cache / CACHE_LAYOUT / "runtime" / key[:32]
        objs.append(final / cmd[-1])
        if not _entry_ok(final, (cmd[-1],)):
            missing.append(((cmd, tmp, what), final))
    jobs = [job for job, _ in missing]

    def publish() -> None:
        for (cmd, _, _), final in missing:
            if not (tmp / cmd[-1]).exists():
                continue  # its compile failed
            folder = _tmp_dir(cache)
            folder.mkdir(parents=True)
            os.replace(tmp / cmd[-1], folder / cmd[-1])
            _install(folder, final)
        shutil.rmtree(tmp, ignore_errors=True)

    def discard() -> None:
        shutil.rmtree(tmp, ignore_errors=True)

    if missing:
        tmp.mkdir(parents=True)
        for n, data in files.items():
            (tmp / n).write_bytes(data)
    return objs, jobs, publish, discard


# ------------------------------------------------------------------------------------------ entries
# Every cache folder (a library's entry, each runtime object) is built under a unique tmp-<pid>-<uuid>
# name and renamed into place whole; ENTRY_RECORD inside it lists the size and sha256 of each of its
# files, and a hit is trusted only when every file still matches (a truncated or overwritten library
# would crash the process that loads it). A damaged entry is moved aside and rebuilt.
ENTRY_RECORD = "graphc-entry.json"
log = logging.getLogger("graphc.cache")
# folder -> the stat of its files when they last matched their record (hashing again only when one changed)
_VERIFIED: dict[str, tuple] = {}
_VERIFIED_LOCK = threading.Lock()
# cache folders this process built or used: never evicted by this process (cache_limit)
IN_USE: set[str] = set()


def _tmp_dir(cache: Path) -> Path:
    return cache / CACHE_LAYOUT / f"tmp-{os.getpid()}-{uuid.uuid4().hex}"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file under a unique temporary name beside it and rename it into place (readers see the old
    file or the new one, never a part; the mode follows the umask like any new file's)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _stats(folder: Path, names: Sequence[str]) -> tuple | None:
    try:
        return tuple((n, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                     for n in names for st in [os.stat(folder / n)])
    except OSError:
        return None


def _record(folder: Path) -> None:
    """Write ENTRY_RECORD: the size and sha256 of every file under folder."""
    files = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ENTRY_RECORD}
    atomic_write(folder / ENTRY_RECORD, (json.dumps({"files": files}, indent=1, sort_keys=True) + "\n").encode())


def entry_problem(folder: Path, required: Sequence[str] = ()) -> str | None:
    """Why a cache folder cannot be trusted (None: every file matches its record, the required ones
    included)."""
    try:
        record = json.loads((folder / ENTRY_RECORD).read_text())
        files = record["files"]
        if not isinstance(files, dict) or not all(isinstance(v["size"], int) and isinstance(v["sha256"], str)
                                                  for v in files.values()):
            raise ValueError("not a map of files to their size and sha256")  # an explicit check: python -O
    except FileNotFoundError:
        return f"no {ENTRY_RECORD}"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable {ENTRY_RECORD} ({e.__class__.__name__})"
    absent = [n for n in required if n not in files]
    if absent:
        return f"{absent[0]} is not in its record"
    names = sorted(files)
    now = _stats(folder, names)
    if now is None:
        return "a recorded file is missing"
    with _VERIFIED_LOCK:
        if _VERIFIED.get(str(folder)) == now:
            return None
    for (n, _, _, size, _, _) in now:
        if size != files[n]["size"]:
            return f"{n} is {size} bytes, {files[n]['size']} recorded"
        if file_sha256(folder / n) != files[n]["sha256"]:
            return f"{n} does not match its recorded sha256"
    with _VERIFIED_LOCK:
        _VERIFIED[str(folder)] = now
    return None


def _entry_ok(folder: Path, required: Sequence[str]) -> bool:
    """True when the folder is a trustworthy entry; a damaged one is moved aside (and said so)."""
    if not folder.exists():
        return False
    why = entry_problem(folder, required)
    if why is None:
        IN_USE.add(str(folder))
        _touch(folder)
        return True
    (log.debug if why == f"no {ENTRY_RECORD}" else log.warning)(
        "graphc compile cache: %s cannot be trusted (%s): rebuilding it", folder, why)
    _discard(folder)
    return False


def _touch(folder: Path) -> None:
    """Mark a folder used now (the size cap evicts the least recently used)."""
    try:
        os.utime(folder)
    except OSError:
        pass


def _discard(folder: Path) -> None:
    """Move a folder out of its name (another process may be reading it) and remove it."""
    with _VERIFIED_LOCK:
        _VERIFIED.pop(str(folder), None)
    layout = folder.parent.parent if folder.parent.name == "runtime" else folder.parent
    aside = layout / f"tmp-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        os.rename(folder, aside)
    except OSError:
        return  # already gone (another process discarded it)
    shutil.rmtree(aside, ignore_errors=True)


def _install(tmp: Path, final: Path) -> None:
    """Record tmp's files and rename it to final. When another process installed final first, its entry
    is used if it verifies (else replaced)."""
    _record(tmp)
    final.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            os.rename(tmp, final)
            IN_USE.add(str(final))
            return
        except OSError:
            if entry_problem(final) is None:
                shutil.rmtree(tmp, ignore_errors=True)
                IN_USE.add(str(final))
                return
            _discard(final)
    shutil.rmtree(tmp, ignore_errors=True)
    raise CompileError(f"cannot install {final} in the compile cache (another process keeps replacing it)")


def verified_file(path: Path, sha256: str) -> bool:
    """True when the file exists and its sha256 is the one given (a file the cache keeps by content, like
    the weights files: overwritten ones are rewritten, never reused)."""
    now = _stats(path.parent, (path.name,))
    if now is None:
        return False
    with _VERIFIED_LOCK:
        if _VERIFIED.get(str(path)) == (now, sha256):
            return True
    if file_sha256(path) != sha256:
        log.warning("graphc compile cache: %s does not match its sha256: writing it again", path)
        return False
    _touch(path)
    now = _stats(path.parent, (path.name,))
    with _VERIFIED_LOCK:
        _VERIFIED[str(path)] = (now, sha256)
    IN_USE.add(str(path))
    return True


def cache_key(sources: Mapping[str, str], flags: Sequence[str], cc: Sequence[str], version: str,
              weights_sha: str | None, extra: Sequence[str] = ()) -> str:
    parts = [b"graphc-lib", version.encode(), " ".join([*cc, *flags]).encode(),
             compiler_version(tuple(cc)).encode(), (weights_sha or "").encode(), *(e.encode() for e in extra)]
    parts += [k.encode() + b"\0" + v for k, v in runtime_files().items()]
    parts += [k.encode() + b"\0" + sources[k].encode() for k in sorted(sources)]
    return _digest(parts)


def _entry(sources: Mapping[str, str], options: BuildOptions, cache: Path, weights_sha: str | None) -> Path:
    extra = get_backend(options.backend).cache_key_parts(options)
    key = cache_key(sources, options.cflags, compiler(), options.version,
                    weights_sha if options.weights == "embed" else None, extra)
    return cache / CACHE_LAYOUT / key[:40]


def is_built(sources: Mapping[str, str], options: BuildOptions, cache_dir: str | os.PathLike,
             weights_sha: str | None = None) -> bool:
    """True when the cache already holds this library, intact (no compiler run needed)."""
    final = _entry(sources, options, Path(cache_dir), weights_sha)
    return final.exists() and entry_problem(final, (f"lib{options.name}.so",)) is None


def _runtime_lock(cache: Path) -> Any:
    """An exclusive lock on ``runtime/.lock`` (released when the returned file is closed)."""
    folder = cache / CACHE_LAYOUT / "runtime"
    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / ".lock", "a+b")  # noqa: SIM115 (held until the runtime objects are installed)
    try:
        import fcntl

        fcntl.flock(f, fcntl.LOCK_EX)
    except (ImportError, OSError):
        pass  # no flock (another OS, some network file systems): concurrent builders only waste time
    return f


def _job_cost(job: tuple) -> int:
    """The size of a job's source (the biggest units first keep every core busy to the end)."""
    cmd, cwd = job[0], job[1]
    try:
        return (Path(cwd) / cmd[cmd.index("-c") + 1]).stat().st_size
    except (ValueError, OSError):
        return 0


def build_library(sources: Mapping[str, str], options: BuildOptions, *, cache_dir: str | os.PathLike | None = None,
                  weights_sha: str | None = None,
                  write_blob: Callable[[Path], Any] | None = None) -> tuple[Path, bool]:
    """Compile `sources` (file name -> text) into lib<name>.so inside a cache folder.

    Baked weights: ``weights_sha`` (part of the key) and ``write_blob(path)``, called only when the
    library must be built, writes the safetensors blob that the assembler includes.
    Returns (folder, cache_hit). The folder holds the sources, ``runtime/`` and the library. A hit is an
    entry whose files all match their recorded size and sha256 (ENTRY_RECORD); a damaged one is rebuilt.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cc = compiler()
    flags = list(options.cflags)
    name = options.name
    final = _entry(sources, options, cache, weights_sha)
    lib = final / f"lib{name}.so"
    if _entry_ok(final, (lib.name,)):
        return final, True
    be = get_backend(options.backend)
    rt_names = options.runtime_sources if options.runtime_sources is not None else needed_runtime(sources)
    rt_objs, rt_jobs, rt_publish, rt_discard = _runtime_plan(cache, cc, runtime_flags(flags), rt_names)
    rt_lock = None
    if rt_jobs:  # one builder of runtime objects at a time (threads, processes): the others wait, then reuse
        rt_discard()
        rt_lock = _runtime_lock(cache)
        rt_objs, rt_jobs, rt_publish, rt_discard = _runtime_plan(cache, cc, runtime_flags(flags), rt_names)
    tmp = _tmp_dir(cache)
    (tmp / "runtime").mkdir(parents=True)
    for n, text in sources.items():
        (tmp / n).write_text(text)
    for n, data in runtime_files(options.runtime_sources).items():  # every source: an export's make builds them all
        (tmp / "runtime" / n).write_bytes(data)
    blob = tmp / baked_weights_name(name)
    if options.weights == "embed":
        if write_blob is None:
            raise ValueError("baked weights need write_blob")
        write_blob(blob)
    units = sorted(n for n in sources if n.endswith(be.unit_suffixes) and n != "main.c")
    jobs = []
    for n in units:
        cmd, tool = be.compile_command(n, cc, flags, options)
        jobs.append((cmd, tmp, n, tool))
    objs = [n + ".o" for n in units] + [str(o) for o in rt_objs]
    link, link_tool = be.link_command(lib.name, objs, cc, flags, options)
    try:
        try:
            # the runtime's missing objects and the library's units in one pool, the biggest first
            _parallel(sorted(rt_jobs + jobs, key=_job_cost, reverse=True))
        except CompileError:
            rt_publish()  # the runtime objects that did build are kept
            raise
        except BaseException:
            rt_discard()
            raise
        else:
            rt_publish()
        finally:
            if rt_lock is not None:
                rt_lock.close()
        _run(link, tmp, f"lib{name}.so (link)", link_tool)
    except CompileError as e:
        # keep the sources for inspection under a stable name (a retry replaces them)
        failed = final.with_name("failed-" + final.name)
        shutil.rmtree(failed, ignore_errors=True)
        try:
            os.rename(tmp, failed)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CompileError(str(e).replace(str(tmp), str(failed)), e.output.replace(str(tmp), str(failed))) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for n in units:
        (tmp / (n + ".o")).unlink()
    if blob.exists():
        blob.unlink()
    _install(tmp, final)
    try:
        from .cache import enforce_limit

        enforce_limit(cache)  # the size cap and stale leftovers, never a reason for a compile to fail
    except (OSError, ValueError) as e:
        log.warning("graphc compile cache: cannot apply the size cap in %s: %s", cache, e)
    return final, False
