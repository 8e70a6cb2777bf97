"""What the test files share to keep the suite's time down (``pytest -q -n 2``: well under 20 minutes on
two cores), without changing what any test checks.

* :func:`shared_cache_dir` / the ``shared_cache`` fixture: one graphc build cache for every test that does
  not test the cache itself (``$GRAPHC_TEST_CACHE_DIR``, else ``$GRAPHC_CACHE_DIR``, else
  ``<tmp>/graphc-test-cache-<uid>``). The cache is content-addressed (sources, runtime, flags, compiler),
  so an entry is never stale, and its runtime objects (three ISA levels of up to 12 kernel files; gc_conv.c
  alone is ~20 s of CPU) are built once for the session's workers instead of once per test folder. Tests
  of the cache, of isolation between caches or of a first build keep their own ``tmp_path`` caches.
* :func:`run_gcc`: a gcc command of the runtime tests (kernels built straight from runtime_c/ into a
  library or a driver program) run through a store of its outputs keyed by the command, the compiler's
  version and the bytes of every input (the sources, every file of runtime_c/ and of the folders the
  command includes from). Each build happens once for both xdist workers and the test files that use the
  same flags; the caller gets a fresh copy of the output and the compiler's stderr, as if it had run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "runtime_c"


def shared_cache_dir() -> str:
    """The graphc build cache the tests share (across xdist workers and sessions: it is content-addressed)."""
    return (os.environ.get("GRAPHC_TEST_CACHE_DIR") or os.environ.get("GRAPHC_CACHE_DIR")
            or os.path.join(tempfile.gettempdir(), f"graphc-test-cache-{os.getuid()}"))


# ---------------------------------------------------------------------------------- gcc output store
def sanitized_cache_dir() -> str:
    """The cache of the ASan/UBSan/TSan builds (a folder of its own: building a sanitized gc_conv.c takes
    minutes of CPU per ISA level, and a cache's runtime objects are built under one lock, which kept the
    other worker's unrelated builds waiting on the shared cache)."""
    return os.path.join(shared_cache_dir(), "sanitized")


@lru_cache(maxsize=8)
def _compiler_id(cc: str) -> bytes:
    res = subprocess.run([cc, "--version"], capture_output=True)
    return res.stdout + res.stderr


def _folder_bytes(folder: Path, suffixes: tuple[str, ...] | None) -> list[bytes]:
    out = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return out
    for p in entries:
        if p.is_file() and (suffixes is None or p.suffix in suffixes):
            out += [p.name.encode(), p.read_bytes()]
    return out


def _key(cmd: Sequence[str], out: str, cwd: Path) -> str:
    """The command, the compiler's --version and the bytes of what it reads. A file is keyed by its name
    and bytes, not its folder: the same driver written into each test's tmp_path is one build."""
    h = hashlib.sha256()

    def add(b: bytes) -> None:
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)

    add(_compiler_id(cmd[0]))
    folders = {RUNTIME.resolve(): None}  # every runtime file: a source may include another .c
    for arg in cmd:
        if arg.startswith("-L"):
            raise ValueError("run_gcc keys no libraries: link with -L elsewhere")
        p = cwd / arg
        if arg == out:
            add(b"\0OUT")
        elif arg.startswith("-I"):
            add(b"-I")
            folders.setdefault((cwd / arg[2:]).resolve(), (".h",))
        elif not arg.startswith("-") and p.is_file():
            add(b"\0FILE" + p.name.encode())
            add(p.read_bytes())
            folders.setdefault(p.resolve().parent, (".h",))  # "..." includes from the source's folder
        else:
            add(arg.encode())
    for folder, suffixes in sorted(folders.items(), key=lambda kv: str(kv[0])):
        add(b"\0DIR")
        for b in _folder_bytes(folder, suffixes):
            add(b)
    return h.hexdigest()[:40]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def run_gcc(cmd: Sequence[str], *, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)`` for a compiler command with one
    ``-o OUTPUT``, through the shared store: the first worker to need an output builds it (the others
    wait for it), a failed build is never stored. Returns the compiler's result (a stored build's
    returncode 0 and stderr); OUTPUT is a copy, so a test may change it."""
    cmd = [str(c) for c in cmd]
    base = Path(cwd) if cwd is not None else Path.cwd()
    out = cmd[cmd.index("-o") + 1]
    target = base / out
    key = _key(cmd, out, base)
    store = Path(shared_cache_dir()) / "test-gcc"
    entry = store / key
    with _locked(store / f"{key}.lock"):
        if not (entry / "ok").exists():
            tmp = store / f"tmp-{os.getpid()}-{uuid.uuid4().hex}"
            tmp.mkdir(parents=True)
            try:
                built = tmp / Path(out).name
                res = subprocess.run([str(built) if c == out else c for c in cmd], cwd=base, capture_output=True,
                                     text=True)
                if res.returncode != 0:
                    return subprocess.CompletedProcess(cmd, res.returncode, res.stdout, res.stderr)
                (tmp / "stderr").write_text(res.stderr)
                (tmp / "stdout").write_text(res.stdout)
                (tmp / "ok").write_text("")
                shutil.rmtree(entry, ignore_errors=True)
                os.rename(tmp, entry)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)  # gone already when it was renamed into place
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(entry / Path(out).name, target)
    return subprocess.CompletedProcess(cmd, 0, (entry / "stdout").read_text(), (entry / "stderr").read_text())
