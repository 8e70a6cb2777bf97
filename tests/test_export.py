"""The export folder as a user's project sees it: what ``graphc compile -o DIR`` may overwrite or remove,
exports racing into one folder, new weights of an embed-mode export, the build files users integrate
(Makefile, CMake, pkg-config, static library), serial (no OpenMP) libraries and compiler errors.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc import nn
from graphc.errors import ExportError
from tests.shared_build import shared_cache_dir

ROOT = Path(__file__).resolve().parent.parent


def _cache_dir() -> str:
    return shared_cache_dir()


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: graphc.Tensor) -> graphc.Tensor:
        return self.fc2(graphc.relu(self.fc1(x)))


def small(seed: int = 0) -> Small:
    graphc.manual_seed(seed)
    return Small().eval()


EXAMPLE = (graphc.randn(2, 8),)
DYNAMIC = {"x": {0: graphc.Dim("B", 1, 16)}}


def export(model: nn.Module, out: Path, name: str = "small", **kw):
    return graphc.compile(model, EXAMPLE, DYNAMIC, name=name, out_dir=out, cache_dir=_cache_dir(), **kw)


def eager(model: nn.Module, x: np.ndarray) -> np.ndarray:
    return model(graphc.tensor(x)).numpy()


def xs(b: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((b, 8)).astype(np.float32)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["GRAPHC_CACHE_DIR"] = _cache_dir()
    env.pop("GRAPHC_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "graphc", *map(str, args)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)


# ------------------------------------------------------------------------ 1. what an export may touch
def _user_project(d: Path) -> dict[str, bytes]:
    d.mkdir(parents=True, exist_ok=True)
    (d / "Makefile").write_text("all:\n\techo the user's own Makefile\n")
    (d / "main.c").write_text("int main(void) { return 0; } /* the user's */\n")
    (d / "manifest.json").write_text(json.dumps({"name": "my-web-app", "version": "1.0"}))
    (d / "runtime").mkdir()
    (d / "runtime" / "notes.txt").write_text("the user's\n")
    (d / "model.py").write_text("# the user's model file\n")
    return snapshot(d)


def test_refuses_a_folder_that_is_not_a_graphc_export(tmp_path):
    d = tmp_path / "project"
    before = _user_project(d)
    with pytest.raises(ExportError) as e:
        export(small(), d)
    msg = str(e.value)
    assert str(d) in msg and "Makefile" in msg and "main.c" in msg and "manifest.json" in msg
    assert "--force" in msg and "\n" not in msg
    assert snapshot(d) == before  # nothing written, nothing removed
    with pytest.raises(ExportError):
        export(small(), d, emit_only=True)
    assert snapshot(d) == before
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        export(small(), tmp_path / "afile")


def test_force_writes_into_the_folder_and_keeps_the_other_files(tmp_path):
    d = tmp_path / "project"
    _user_project(d)
    m = export(small(), d, force=True)
    x = xs()
    np.testing.assert_allclose(m(x), eager(small(), x), rtol=1e-5, atol=1e-6)
    assert (d / "model.py").read_text() == "# the user's model file\n"
    assert (d / "runtime" / "notes.txt").read_text() == "the user's\n"
    assert json.loads((d / "manifest.json").read_text())["name"] == "small"
    # from now on it is a graphc export: no --force needed, and the user's files are still not listed
    export(small(), d)
    assert (d / "model.py").exists() and (d / "runtime" / "notes.txt").exists()


def test_empty_and_new_folders_need_no_force(tmp_path):
    (tmp_path / "empty").mkdir()
    export(small(), tmp_path / "empty")
    export(small(), tmp_path / "new" / "deeper")
    assert (tmp_path / "new" / "deeper" / "libsmall.so").exists()


def test_reexport_removes_the_previous_exports_files_only(tmp_path):
    d = tmp_path / "out"
    export(small(), d, name="alpha", weights="file")
    listed = json.loads((d / "manifest.json").read_text())["files"]["all"]
    assert "libalpha.so" in listed and "alpha.safetensors" in listed and "manifest.json" in listed
    assert any(f.startswith("runtime/") for f in listed)
    assert sorted(listed) == sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
    (d / "notes.txt").write_text("mine\n")  # a file the manifest does not list
    (d / "runtime" / "mine.c").write_text("/* mine */\n")
    m = export(small(1), d, name="beta")
    assert not (d / "libalpha.so").exists() and not (d / "alpha.h").exists()
    assert not (d / "alpha.safetensors").exists() and not (d / "alpha_model.c").exists()
    assert (d / "notes.txt").read_text() == "mine\n" and (d / "runtime" / "mine.c").exists()
    x = xs()
    np.testing.assert_allclose(m(x), eager(small(1), x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(graphc.load_compiled(d)(x), eager(small(1), x), rtol=1e-5, atol=1e-6)


def test_a_manifest_naming_files_outside_the_folder_removes_nothing_there(tmp_path):
    d = tmp_path / "out"
    export(small(), d)
    outside = tmp_path / "precious.txt"
    outside.write_text("keep\n")
    man = json.loads((d / "manifest.json").read_text())
    man["files"]["all"] += ["../precious.txt", str(outside), "runtime/../../precious.txt"]
    (d / "manifest.json").write_text(json.dumps(man))
    export(small(), d, name="other")
    assert outside.read_text() == "keep\n"


def test_cli_refuses_the_current_folder_of_a_project(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "model.py").write_text((ROOT / "examples" / "mlp" / "model.py").read_text())
    (proj / "Makefile").write_text("all:\n\techo mine\n")
    before = snapshot(proj)
    r = cli("compile", "model.py", "-o", ".", cwd=proj)
    assert r.returncode == 1, r.stdout + r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "not a graphc export" in err[0] and "Makefile" in err[0] and "--force" in err[0]
    assert snapshot(proj) == before
    r = cli("compile", "model.py", "-o", ".", "--force", cwd=proj)
    assert r.returncode == 0, r.stderr
    assert (proj / "model.py").read_text() == before["model.py"].decode()
    assert json.loads((proj / "manifest.json").read_text())["name"]


# ------------------------------------------------------------------------ 2. exports racing into one folder
RACER = """
import sys
import graphc
from graphc import nn
out, seed, n, cache = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
graphc.manual_seed(seed)
m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
for _ in range(n):
    graphc.compile(m, (graphc.randn(2, 8),), name="race", out_dir=out, cache_dir=cache)
"""


def test_concurrent_exports_and_a_reader_see_only_whole_files(tmp_path):
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    # both variants built once (the cache), so the racing exports are copies only
    libs, manifests = set(), set()
    for seed in (1, 2):
        d = tmp_path / f"ref{seed}"
        subprocess.run([sys.executable, str(script), str(d), str(seed), "1", _cache_dir()], env=env, check=True)
        libs.add(hashlib.sha256((d / "librace.so").read_bytes()).hexdigest())
        manifests.add(json.loads((d / "manifest.json").read_text())["fingerprint"])
    assert len(libs) == 2  # the baked weights differ
    out = tmp_path / "shared"
    procs = [subprocess.Popen([sys.executable, str(script), str(out), str(seed), "12", _cache_dir()], env=env,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    seen, reads = set(), 0
    while any(p.poll() is None for p in procs):
        try:
            lib = (out / "librace.so").read_bytes()
            man = (out / "manifest.json").read_text()
        except FileNotFoundError:
            continue
        reads += 1
        digest = hashlib.sha256(lib).hexdigest()
        assert digest in libs, f"a reader saw a partial library ({len(lib)} bytes)"
        assert json.loads(man)["fingerprint"] in manifests  # a whole manifest, never a part
        seen.add(digest)
    errs = [p.stderr.read() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert reads > 0
    assert hashlib.sha256((out / "librace.so").read_bytes()).hexdigest() in libs
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # no temporary left behind
    m = graphc.load_compiled(out)
    assert m(xs(2)).shape == (2, 4)



# ------------------------------------------------------------------------ 6. compiler errors
def test_cli_shows_the_compilers_first_error_lines(tmp_path):
    bad = tmp_path / "broken_toolchain.h"
    bad.write_text("this_is_not_c graphc_test_marker;\n")
    env_cflags = os.environ.get("GRAPHC_CFLAGS", "")
    os.environ["GRAPHC_CFLAGS"] = f"{env_cflags} -include {bad}".strip()
    try:
        r = cli("compile", ROOT / "examples" / "mlp" / "model.py", "-o", tmp_path / "out")
    finally:
        if env_cflags:
            os.environ["GRAPHC_CFLAGS"] = env_cflags
        else:
            del os.environ["GRAPHC_CFLAGS"]
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("graphc: error: the C compiler failed on")
    shown = "\n".join(lines[1:])
    assert "error:" in shown and "graphc_test_marker" in shown and str(bad) in shown
    assert len(lines) <= 12  # the first error lines, not the whole output
