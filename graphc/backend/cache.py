"""Looking after the compile cache: what it holds (``graphc cache info``), removing entries (``graphc cache
clean``), the size cap and the leftovers of interrupted or failed builds.

Layout (``<cache>/v1/``, see build.py): ``<key>/`` a library's entry, ``runtime/<key>/`` one runtime
object, ``weights/NAME-<sha>.safetensors`` a weights file, ``templates/<key>.jbc`` the compiled bytecode
of a jinja2 template (base.py), ``failed-<key>/`` the sources of a failed build, ``tmp-<pid>-<uuid>/`` a
build under way. An entry's modification time is its last use (a hit
touches it).

* Size cap: ``$GRAPHC_CACHE_MAX_BYTES`` (bytes, or with a K/M/G suffix; ``0`` = no cap; default
  ``DEFAULT_MAX_BYTES``). After each build the least recently used entries are removed until the cache
  fits, never one this process built or used (``build.IN_USE``) nor one used in the last
  ``GRACE_SECONDS`` (another process may be loading it).
* Leftovers: a ``tmp-`` folder whose process is gone or that is older than ``STALE_SECONDS``, a
  ``failed-`` folder older than that, and the temporary files of interrupted writes, are removed after
  each build and by ``graphc cache clean``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import build
from .build import TEMPLATES_FOLDER

DEFAULT_MAX_BYTES = 5 << 30
GRACE_SECONDS = 120.0
STALE_SECONDS = 3600.0
_TMP = re.compile(r"tmp-(?:(\d+)-)?[0-9a-f]{32}")
_TMP_FILE = re.compile(r"\..*\.tmp-(\d+)-[0-9a-f]{32}|\.tmp-.*\.safetensors")


@dataclass
class Item:
    """One removable thing in the cache: an entry, a runtime object, a weights file or a leftover."""

    path: Path
    kind: str  # "library" | "runtime" | "weights" | "templates" | "failed" | "tmp" | "other"
    size: int
    used: float  # last use (modification time)


def max_bytes() -> int:
    """The cap from $GRAPHC_CACHE_MAX_BYTES (0: none)."""
    text = os.environ.get("GRAPHC_CACHE_MAX_BYTES", "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    m = re.fullmatch(r"(\d+)\s*([kKmMgGtT]?)i?[bB]?", text)
    if not m:
        raise ValueError(f"GRAPHC_CACHE_MAX_BYTES={text!r}: expected a number of bytes, e.g. 2000000000 or 2G")
    return int(m.group(1)) << (10 * " KMGT".index(m.group(2).upper() or " "))


def parse_age(text: str) -> float:
    """Seconds from "90s", "30m", "12h", "7d" or a plain number of days."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise ValueError(f"--older-than {text!r}: expected an age like 90s, 30m, 12h or 7d")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 86400}[m.group(2)]


def describe(cache: Path) -> str:
    """The text of ``graphc cache info``."""
    d = info(cache)
    kinds: dict = d["kinds"]  # type: ignore[assignment]
    cap = d["max_bytes"]
    lines = [f"location   {d['location']} (layout {d['layout']}{'' if cache.is_dir() else ', not created yet'})"]
    for kind, label, unit in (("library", "libraries", "entries"), ("runtime", "runtime", "objects"),
                              ("weights", "weights", "files"), ("templates", "templates", "files (compiled templates)"),
                              ("failed", "failed", "folders (failed builds)"),
                              ("tmp", "tmp", "folders/files (builds under way or interrupted)"),
                              ("other", "other", "items (other layouts, stray files)")):
        k = kinds.get(kind, {"count": 0, "bytes": 0})
        lines.append(f"{label:<10} {k['count']} {unit}, {human(k['bytes'])}")
    lines.append(f"total      {human(d['total_bytes'])} of a {human(cap) + ' cap' if cap else 'no cap'} "  # type: ignore[arg-type]
                 "(GRAPHC_CACHE_MAX_BYTES)")
    return "\n".join(lines)


def human(n: int) -> str:
    x = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if x < 1024 or unit == "TB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return str(n)


def _size(p: Path) -> int:
    try:
        if p.is_symlink() or not p.is_dir():
            return p.lstat().st_size
        return sum(f.lstat().st_size for f in p.rglob("*") if not f.is_dir())
    except OSError:
        return 0


def _mtime(p: Path) -> float:
    try:
        return p.lstat().st_mtime
    except OSError:
        return 0.0


def _item(p: Path, kind: str) -> Item:
    return Item(p, kind, _size(p), _mtime(p))


def items(cache: Path) -> Iterator[Item]:
    """Everything under the cache folder, each layout's folders and files classified."""
    if not cache.is_dir():
        return
    for layout in sorted(cache.iterdir()):
        if not layout.is_dir() or layout.name != build.CACHE_LAYOUT:
            yield _item(layout, "other")  # another layout (an older graphc) or a stray file
            continue
        for p in sorted(layout.iterdir()):
            n = p.name
            if n == "runtime" and p.is_dir():
                for q in sorted(p.iterdir()):
                    if q.name != ".lock":  # build.py's lock of the runtime builders
                        yield _item(q, "tmp" if _TMP.fullmatch(q.name) else "runtime")
            elif n in ("weights", TEMPLATES_FOLDER) and p.is_dir():
                kind = "weights" if n == "weights" else "templates"
                for q in sorted(p.iterdir()):
                    yield _item(q, "tmp" if _TMP_FILE.fullmatch(q.name) else kind)
            elif _TMP.fullmatch(n) or _TMP_FILE.fullmatch(n):
                yield _item(p, "tmp")
            elif n.startswith("failed-"):
                yield _item(p, "failed")
            elif n.startswith("runtime-"):
                yield _item(p, "runtime")  # the layout of graphc before per-object runtime entries
            else:
                yield _item(p, "library")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def is_stale(item: Item, now: float | None = None) -> bool:
    """A leftover nobody will finish: a tmp- folder or file of a dead process or older than STALE_SECONDS,
    a failed- folder older than that."""
    now = time.time() if now is None else now
    if item.kind not in ("tmp", "failed"):
        return False
    if now - item.used > STALE_SECONDS:
        return True
    if item.kind == "tmp":
        m = _TMP.fullmatch(item.path.name) or _TMP_FILE.fullmatch(item.path.name)
        pid = m.group(1) if m and m.groups() else None
        return pid is not None and int(pid) != os.getpid() and not _pid_alive(int(pid))
    return False


def _remove(p: Path) -> bool:
    try:
        if p.is_dir() and not p.is_symlink():
            # renamed first: a reader never sees a half-removed entry under its name
            aside = p.with_name(f"tmp-{os.getpid()}-{os.urandom(16).hex()}")
            os.rename(p, aside)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            p.unlink()
        return True
    except FileNotFoundError:
        return False
    except OSError:
        return False


def _in_use(item: Item) -> bool:
    return str(item.path) in build.IN_USE


def clean_leftovers(cache: Path) -> list[Item]:
    """Remove the stale tmp- and failed- leftovers; returns what was removed."""
    now = time.time()
    return [it for it in items(cache) if is_stale(it, now) and _remove(it.path)]


def clean(cache: Path, older_than: float | None = None, leftovers_only: bool = False) -> list[Item]:
    """``graphc cache clean``: every entry (or those last used more than older_than seconds ago; none with
    leftovers_only) and the stale leftovers. Builds under way in live processes are left alone, and so
    is what this process uses."""
    now = time.time()
    removed = []
    for it in items(cache):
        if it.kind in ("tmp", "failed"):
            drop = is_stale(it, now) or (it.kind == "failed" and not leftovers_only and older_than is None)
        elif leftovers_only or _in_use(it):
            drop = False
        else:
            drop = older_than is None or now - it.used > older_than
        if drop and _remove(it.path):
            removed.append(it)
    return removed


def enforce_limit(cache: Path, limit: int | None = None) -> list[Item]:
    """Remove stale leftovers, then the least recently used entries until the cache is at most `limit`
    bytes (default max_bytes(); 0: no cap). Never what this process uses or what was used in the last
    GRACE_SECONDS."""
    removed = clean_leftovers(cache)
    limit = max_bytes() if limit is None else limit
    if limit <= 0:
        return removed
    now = time.time()
    everything = list(items(cache))
    total = sum(it.size for it in everything)
    for it in sorted((it for it in everything
                      if it.kind in ("library", "runtime", "weights", "templates", "failed", "other")),
                     key=lambda it: it.used):
        if total <= limit:
            break
        if _in_use(it) or now - it.used < GRACE_SECONDS or it.kind == "other":
            continue
        if _remove(it.path):
            build.log.debug("graphc compile cache: over %d bytes, removed %s (last used %s)", limit, it.path,
                            time.ctime(it.used))
            total -= it.size
            removed.append(it)
    return removed


def info(cache: Path) -> dict[str, object]:
    """What ``graphc cache info`` prints: the location, the cap, and per kind the count and bytes."""
    kinds: dict[str, list[int]] = {}
    for it in items(cache):
        k = kinds.setdefault(it.kind, [0, 0])
        k[0] += 1
        k[1] += it.size
    return {"location": str(cache), "layout": build.CACHE_LAYOUT, "max_bytes": max_bytes(),
            "total_bytes": sum(v[1] for v in kinds.values()),
            "kinds": {k: {"count": v[0], "bytes": v[1]} for k, v in sorted(kinds.items())}}
