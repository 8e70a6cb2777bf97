"""The compile cache: damaged entries are rebuilt (never loaded, linked or exported), its files follow the
umask, `graphc cache info|clean`, the size cap and the cleanup of tmp-/failed- leftovers.

A damaged library crashes the process that loads it (SIGBUS, SIGSEGV), so every load after damage runs in
a subprocess: a signal there is the failure, not the end of the test run. Each test compiles a model of
its own seed (its own cache entry) into one cache shared by the module, so the runtime is built once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import graphc
import graphc.export
from graphc.backend.build import ENTRY_RECORD, is_x86

ROOT = Path(__file__).resolve().parent.parent
TARGET = "x86-64-v2" if is_x86() else "default"  # the runtime's kernels once, not once per ISA level

MODEL = textwrap.dedent("""
    import json, sys
    import numpy as np
    import graphc
    from graphc import nn

    def model(seed):
        m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        rng = np.random.default_rng(seed)
        m.load_state_dict({k: rng.standard_normal(v.shape).astype(np.float32) for k, v in m.state_dict().items()})
        return m

    def main(seed, cache, weights, out_dir, target):
        m = model(seed)
        x = np.random.default_rng(100 + seed).standard_normal((3, 8)).astype(np.float32)
        cm = graphc.compile(m, [x], name=f"m{seed}", cache_dir=cache, weights=weights, target=target,
                            out_dir=out_dir or None)
        if out_dir:
            cm = graphc.load_compiled(out_dir)
        want = m(graphc.from_numpy(x)).numpy()
        got = cm(x)
        print(json.dumps({"hit": cm.cache_hit, "err": float(np.max(np.abs(got - want))), "dir": str(cm.directory),
                          "weights": None if cm.weights_path is None else str(cm.weights_path)}))

    if __name__ == "__main__":
        main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
""")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("script") / "compile_model.py"
    p.write_text(MODEL)
    return p


def compile_in_subprocess(script: Path, seed: int, cache: Path, weights: str = "embed", out_dir: Path | None = None,
                          *, env: dict | None = None) -> tuple[dict, str]:
    """Compile and run the seed's model in a fresh process: (its report, its stderr). A crash fails."""
    e = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {}))
    r = subprocess.run([sys.executable, str(script), str(seed), str(cache), weights, str(out_dir or ""), TARGET],
                       capture_output=True, text=True, timeout=900, env=e)
    assert r.returncode == 0, f"the compile/run process failed with {r.returncode}:\n{r.stdout}\n{r.stderr[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


def entry_of(script: Path, seed: int, cache: Path, weights: str = "embed") -> dict:
    info, _ = compile_in_subprocess(script, seed, cache, weights)
    assert info["err"] < 1e-4
    return info


def record(folder: Path) -> dict:
    return json.loads((folder / ENTRY_RECORD).read_text())["files"]


# ------------------------------------------------------------------------------------- damaged entries
def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    for i in range(len(data) // 4, 3 * len(data) // 4):  # code and data alike
        data[i] ^= 0xFF
    p.write_bytes(bytes(data))


def _empty(p: Path) -> None:
    p.write_bytes(b"")


@pytest.mark.parametrize("seed,damage", [(1, _truncate), (2, _flip), (3, _empty)],
                         ids=["truncated", "flipped", "empty"])
def test_damaged_library_is_rebuilt(script, cache, seed, damage, tmp_path):
    info = entry_of(script, seed, cache)
    folder = Path(info["dir"])
    lib = folder / f"libm{seed}.so"
    rec = record(folder)
    assert rec[lib.name]["size"] == lib.stat().st_size
    damage(lib)  # in place: the same path, other bytes
    again, err = compile_in_subprocess(script, seed, cache)  # SIGBUS / SIGSEGV / OSError before
    assert not again["hit"] and again["err"] < 1e-4
    assert "cannot be trusted" in err and lib.name in err
    assert record(folder)[lib.name] == rec[lib.name]  # the same library again (the build is deterministic)
    hit, _ = compile_in_subprocess(script, seed, cache)
    assert hit["hit"] and hit["err"] < 1e-4


def test_damage_is_never_copied_into_the_export(script, cache, tmp_path):
    info = entry_of(script, 4, cache)
    lib = Path(info["dir"]) / "libm4.so"
    good = record(Path(info["dir"]))[lib.name]
    _truncate(lib)
    out = tmp_path / "export"
    again, _ = compile_in_subprocess(script, 4, cache, out_dir=out)
    assert again["err"] < 1e-4
    assert (out / lib.name).stat().st_size == good["size"]


def test_damaged_runtime_objects_are_rebuilt(script, cache):
    info = entry_of(script, 5, cache)
    rt = Path(info["dir"]).parent / "runtime"
    objs = sorted(rt.glob("*/*.o"))
    assert objs and all(record(o.parent)[o.name]["size"] == o.stat().st_size for o in objs)
    for o in objs:
        _truncate(o)
    # another model (a new entry) links the runtime again: a link error for every later compile before
    again, err = compile_in_subprocess(script, 6, cache)
    assert not again["hit"] and again["err"] < 1e-4
    assert "cannot be trusted" in err
    for o in sorted(rt.glob("*/*.o")):
        assert record(o.parent)[o.name]["size"] == o.stat().st_size


def test_overwritten_weights_file_is_rewritten(script, cache):
    info = entry_of(script, 7, cache, "file")
    w = Path(info["weights"])
    good = w.read_bytes()
    head = 8 + int.from_bytes(good[:8], "little")
    w.write_bytes(good[:head] + b"\xff" * (len(good) - head))  # the same header, NaN data
    again, err = compile_in_subprocess(script, 7, cache, "file")  # NaN outputs before
    assert again["err"] < 1e-4 and "sha256" in err
    assert w.read_bytes() == good


def test_two_processes_compile_one_model_at_once(script, cache):
    e = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, str(script), "8", str(cache), "embed", "", TARGET],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1])["err"] < 1e-4
    folder = Path(json.loads(outs[0][0].strip().splitlines()[-1])["dir"])
    from graphc.backend.build import entry_problem

    assert entry_problem(folder, ("libm8.so",)) is None
    assert not [p for p in folder.parent.iterdir() if p.name.startswith("tmp-")]


def test_two_cold_processes_build_the_runtime_once(script, tmp_path):
    """Two compiles into an empty cache at once: one builds the runtime's objects, the other waits for
    them (before, both compiled all of them, doubling a cold compile on a busy machine)."""
    log = tmp_path / "cc.log"
    cc = tmp_path / "cc.sh"
    cc.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec cc "$@"\n')
    cc.chmod(0o755)
    e = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), CC=str(cc))
    cold = tmp_path / "cold"
    procs = [subprocess.Popen([sys.executable, str(script), str(seed), str(cold), "embed", "", TARGET],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e) for seed in (50, 51)]
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1])["err"] < 1e-4
    runtime = [line.split(" -o ")[-1] for line in log.read_text().splitlines() if " -c gc_" in line]
    assert runtime and len(runtime) == len(set(runtime)), sorted(runtime)


def test_entry_without_a_record_is_rebuilt(script, cache):
    info = entry_of(script, 9, cache)
    folder = Path(info["dir"])
    (folder / ENTRY_RECORD).unlink()  # an entry of an older graphc, or a half-deleted one
    again, _ = compile_in_subprocess(script, 9, cache)
    assert not again["hit"] and again["err"] < 1e-4 and (folder / ENTRY_RECORD).exists()


# ------------------------------------------------------------------------------------- file modes
def _model(seed: int):
    from graphc import nn

    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    rng = np.random.default_rng(seed)
    m.load_state_dict({k: rng.standard_normal(v.shape).astype(np.float32) for k, v in m.state_dict().items()})
    return m, rng.standard_normal((3, 8)).astype(np.float32)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_written_weights_follow_the_umask(cache, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        m, x = _model(20 + umask)
        cm = graphc.compile(m, [x], name=f"u{umask}", cache_dir=cache, weights="file", target=TARGET)
        assert cm.weights_path.stat().st_mode & 0o777 == mode  # the cache's copy
        assert (cm.directory / "manifest.json").stat().st_mode & 0o777 == mode
        m2, _ = _model(40 + umask)
        cm.load_state_dict(m2.state_dict())  # a new weights file in the cache
        assert cm.weights_path.stat().st_mode & 0o777 == mode
        np.testing.assert_allclose(cm(x), m2(graphc.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)
        out = tmp_path / "export"
        em = graphc.compile(m, [x], name=f"u{umask}", cache_dir=cache, weights="file", target=TARGET, out_dir=out)
        assert (out / f"u{umask}.safetensors").stat().st_mode & 0o777 == mode
        em.load_state_dict(m2.state_dict())  # rewrites the export's file
        assert (out / f"u{umask}.safetensors").stat().st_mode & 0o777 == mode
        target = graphc.export.write_weights(out, m.state_dict())
        assert target.stat().st_mode & 0o777 == mode
        np.testing.assert_allclose(graphc.load_compiled(out)(x), m(graphc.from_numpy(x)).numpy(), rtol=1e-5,
                                   atol=1e-5)
    finally:
        os.umask(old)


# ------------------------------------------------------------------------------------- housekeeping
def _seeded(script: Path, cache: Path, tmp_path: Path) -> Path:
    """A fresh cache holding the module cache's runtime objects (no runtime build)."""
    new = tmp_path / "cache"
    import shutil

    if not (cache / "v1" / "runtime").is_dir():
        entry_of(script, 0, cache)
    shutil.copytree(cache / "v1" / "runtime", new / "v1" / "runtime")
    return new


def _cli(*args: str) -> subprocess.CompletedProcess:
    e = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.pop("GRAPHC_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "graphc", *args], capture_output=True, text=True, env=e, timeout=600)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _leftovers(v1: Path) -> dict[str, Path]:
    """tmp-/failed- folders of each kind: a dead process's, a live young one, an old one."""
    old = time.time() - 2 * 3600
    made = {"tmp_dead": v1 / f"tmp-{_dead_pid()}-{'a' * 32}", "tmp_live": v1 / f"tmp-{os.getpid()}-{'b' * 32}",
            "tmp_old": v1 / f"tmp-{os.getpid()}-{'c' * 32}", "failed_old": v1 / ("failed-" + "d" * 40),
            "failed_new": v1 / ("failed-" + "e" * 40),
            "weights_tmp": v1 / "weights" / f".x.tmp-{_dead_pid()}-{'f' * 32}"}
    for k, p in made.items():
        if k == "weights_tmp":
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"partial")
        else:
            p.mkdir(parents=True)
            (p / "model.c").write_text("int x;\n")
    for k in ("tmp_old", "failed_old"):
        os.utime(made[k], (old, old))
    return made


def test_cache_info_and_clean(script, cache, tmp_path):
    new = _seeded(script, cache, tmp_path)
    infos = [entry_of(script, s, new) for s in (30, 31)]
    weights = entry_of(script, 32, new, "file")
    made = _leftovers(new / "v1")
    r = _cli("cache", "info", "--cache-dir", str(new))
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert str(new) in text and re.search(r"libraries\s+3 entries", text), text
    assert re.search(r"weights\s+1 files", text) and re.search(r"failed\s+2 folders", text), text
    assert re.search(r"tmp\s+4 folders/files", text) and "total" in text, text
    # --older-than: only the entry unused for long, and the stale leftovers
    old = time.time() - 10 * 86400
    os.utime(infos[0]["dir"], (old, old))
    r = _cli("cache", "clean", "--older-than", "7d", "--cache-dir", str(new))
    assert r.returncode == 0, r.stderr
    assert not Path(infos[0]["dir"]).exists() and Path(infos[1]["dir"]).exists() and Path(weights["weights"]).exists()
    assert {k for k, p in made.items() if p.exists()} == {"tmp_live", "failed_new"}
    again, _ = compile_in_subprocess(script, 31, new)
    assert again["hit"] and again["err"] < 1e-4
    r = _cli("cache", "clean", "--cache-dir", str(new))
    assert r.returncode == 0 and "removed" in r.stdout, r.stderr
    assert {p.name for p in (new / "v1").iterdir()} <= {"runtime", "weights", "templates", made["tmp_live"].name}
    assert not list((new / "v1" / "templates").iterdir())
    assert not [q for q in (new / "v1" / "runtime").iterdir() if q.name != ".lock"]
    assert not list((new / "v1" / "weights").iterdir())
    r = _cli("cache", "clean", "--older-than", "soon", "--cache-dir", str(new))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "--older-than" in r.stderr


def test_stale_leftovers_are_removed_after_a_build(script, cache, tmp_path):
    new = _seeded(script, cache, tmp_path)
    made = _leftovers(new / "v1")
    entry_of(script, 33, new)
    assert {k for k, p in made.items() if p.exists()} == {"tmp_live", "failed_new"}


def test_size_cap_evicts_least_recently_used_never_in_use(script, cache, tmp_path, monkeypatch):
    new = _seeded(script, cache, tmp_path)
    others = [Path(entry_of(script, s, new)["dir"]) for s in (34, 35)]  # built by other processes
    for i, d in enumerate(others):
        t = time.time() - 86400 * (2 - i)  # 34 used two days ago, 35 one day ago
        os.utime(d, (t, t))
    size = sum(f.stat().st_size for f in others[0].rglob("*") if f.is_file())
    mine = []
    for s in (36, 37):
        m, x = _model(s)
        mine.append(graphc.compile(m, [x], name=f"m{s}", cache_dir=new, target=TARGET))
        old = time.time() - 3 * 86400
        os.utime(mine[-1].directory, (old, old))  # the oldest of all, but in use by this process
    total = sum(f.stat().st_size for f in new.rglob("*") if f.is_file())
    # the next entry (of about the same size) makes the cache half an entry too big
    monkeypatch.setenv("GRAPHC_CACHE_MAX_BYTES", str(total + size // 2))
    m, x = _model(38)
    cm = graphc.compile(m, [x], name="m38", cache_dir=new, target=TARGET)
    assert not others[0].exists() and others[1].exists()  # the least recently used of the others
    assert all(c.directory.exists() for c in [*mine, cm])
    np.testing.assert_allclose(cm(x), m(graphc.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("GRAPHC_CACHE_MAX_BYTES", "1")  # nothing fits: all but what this process uses goes
    m, x = _model(39)
    graphc.compile(m, [x], name="m39", cache_dir=new, target=TARGET)
    assert not others[1].exists() and all(c.directory.exists() for c in [*mine, cm])
    assert list((new / "v1" / "runtime").iterdir())  # the runtime objects this process linked stay
    monkeypatch.setenv("GRAPHC_CACHE_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="GRAPHC_CACHE_MAX_BYTES"):
        from graphc.backend.cache import max_bytes

        max_bytes()


# ------------------------------------------------------------------------------------- determinism, templates
def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_parallel_builds_give_the_same_bytes(tmp_path):
    """Two cold builds (runtime objects and the library's units compiled in one pool of os.cpu_count()
    workers, in whatever order they finish) into two empty caches: the same library, byte for byte, and
    the same runtime objects."""
    m, x = _model(60)
    built = [graphc.compile(m, [x], name="m60", cache_dir=tmp_path / f"c{i}", target=TARGET) for i in range(2)]
    assert not any(cm.cache_hit for cm in built)
    libs = [_files(cm.directory) for cm in built]
    for files in libs:
        files.pop("manifest.json")  # it names the cache folder
    assert "libm60.so" in libs[0] and libs[0] == libs[1]
    runtimes = [_files(tmp_path / f"c{i}" / "v1" / "runtime") for i in range(2)]
    assert any(k.endswith(".o") for k in runtimes[0]) and runtimes[0] == runtimes[1]
    np.testing.assert_allclose(built[1](x), m(graphc.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)


def test_template_bytecode_is_kept_and_verified(cache, tmp_path, monkeypatch, caplog):
    """The templates' jinja2 bytecode is kept in the cache (templates/), loaded by a new environment (no
    template parsed again), and a file that does not match its sha256 is compiled again and rewritten;
    the sources, hence the library, are the same either way."""
    import jinja2

    from graphc.backend import base

    new = tmp_path / "cache"
    m, x = _model(61)

    def build(folder: Path):  # one call site: the sources name it
        return graphc.compile(m, [x], name="m61", cache_dir=folder, target=TARGET)

    monkeypatch.setattr(base, "_ENVIRONMENTS", {})  # the templates loaded again, as in a new process
    first = build(cache)  # the runtime objects of `cache`
    kept = sorted((cache / "v1" / "templates").glob("*.jbc"))
    assert kept, "no template bytecode kept"
    shutil.copytree(cache / "v1" / "runtime", new / "v1" / "runtime")
    parsed: list[str] = []
    real_parse = jinja2.Environment._parse

    def parse(self, source, name, filename):
        parsed.append(name)
        return real_parse(self, source, name, filename)

    monkeypatch.setattr(jinja2.Environment, "_parse", parse)
    monkeypatch.setattr(base, "_ENVIRONMENTS", {})  # a new process's environments
    cold = build(new)
    assert parsed and not cold.cache_hit
    jbc = sorted((new / "v1" / "templates").glob("*.jbc"))
    assert len(jbc) == len(set(parsed))
    parsed.clear()
    monkeypatch.setattr(base, "_ENVIRONMENTS", {})
    assert build(new).cache_hit
    assert parsed == []  # every template from its bytecode
    data = bytearray(jbc[0].read_bytes())
    data[-10] ^= 0xFF  # payload damaged, its recorded sha256 kept
    jbc[0].write_bytes(bytes(data))
    monkeypatch.setattr(base, "_ENVIRONMENTS", {})
    with caplog.at_level("WARNING", logger="graphc.cache"):
        again = build(new)
    assert again.cache_hit and len(parsed) == 1  # the same sources: the same library
    assert "does not match its sha256" in caplog.text and jbc[0].name in caplog.text
    digest, _, payload = jbc[0].read_bytes().partition(b"\n")
    assert digest == hashlib.sha256(payload).hexdigest().encode()
    assert _files(again.directory)["libm61.so"] == _files(cold.directory)["libm61.so"]
    np.testing.assert_allclose(first(x), m(graphc.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)


def test_the_build_pool_is_bounded_by_the_usable_cpus(monkeypatch):
    """The compile pool has as many workers as CPUs the process may run on (a container's or taskset's
    affinity mask), not os.cpu_count()'s every CPU of the machine."""
    from graphc.backend import build

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 5}, raising=False)
    assert build.usable_cpus() == 2

    def unavailable(pid):
        raise OSError("no affinity here")

    monkeypatch.setattr(os, "sched_getaffinity", unavailable, raising=False)
    assert build.usable_cpus() == (os.cpu_count() or 1)
