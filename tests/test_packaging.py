"""A non-editable install ships the templates, the C runtime and the IR grammar inside the package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_templates_runtime_and_grammar(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = tmp_path.glob("graphc-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("templates", "runtime_c"):
        src = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*")
                     if p.is_file() and p.suffix in (".j2", ".c", ".h"))
        assert src, folder
        missing = [s for s in src if f"graphc/_data/{s}" not in names]
        assert not missing, f"not in the wheel: {missing}"
    assert "graphc/ir/grammar.lark" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "graphc = graphc.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_resources_resolve_in_the_source_tree():
    from graphc._resources import runtime_dir, templates_dir

    assert (templates_dir() / "c" / "model.c.j2").exists()
    assert (runtime_dir() / "graphc_rt.h").exists()
