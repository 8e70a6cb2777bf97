"""docs/guarantees.md proves each promise by naming tests as ``tests/file.py::test_name`` (or
``tests/file.py::TestClass::test_name``): every such reference must name a file that exists and defines
that test function or class (read with ast, nothing is imported), so a renamed or deleted test fails here
instead of leaving a promise unproven."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "guarantees.md"
REF = re.compile(r"\b(tests/[\w./-]+\.py)::([A-Za-z_]\w*(?:::[A-Za-z_]\w*)*)")


def references(text: str) -> list[tuple[str, str]]:
    return [(m[1], m[2]) for m in REF.finditer(text)]


def defines(tree: ast.Module, parts: list[str]) -> bool:
    """Whether the module defines parts[0] at top level (and, for Class::method, the method in it)."""
    scope: list[ast.stmt] = tree.body
    for i, name in enumerate(parts):
        found = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                      and n.name == name), None)
        if found is None or (i < len(parts) - 1 and not isinstance(found, ast.ClassDef)):
            return False
        scope = found.body
    return True


def test_every_referenced_test_exists():
    refs = references(DOC.read_text())
    assert len(refs) >= 40, "docs/guarantees.md should name the tests behind its promises"
    trees: dict[str, ast.Module] = {}
    missing = []
    for path, name in refs:
        f = ROOT / path
        if not f.is_file():
            missing.append(f"{path}::{name}: no such file")
            continue
        tree = trees.setdefault(path, ast.parse(f.read_text(), filename=path))
        if not name.split("::")[-1].startswith(("test", "Test")) or not defines(tree, name.split("::")):
            missing.append(f"{path}::{name}: no such test")
    assert not missing, "docs/guarantees.md names tests that do not exist:\n" + "\n".join(missing)


def test_every_section_names_a_test():
    """A promise is only made with a test behind it: each section of the doc names at least one."""
    sections = re.split(r"^## ", DOC.read_text(), flags=re.M)[1:]
    assert len(sections) >= 6
    bare = [s.splitlines()[0] for s in sections if not references(s)]
    assert not bare, f"sections of docs/guarantees.md without a test: {bare}"


def test_the_reference_pattern():
    text = ("see `tests/a.py::test_x`, tests/sub/b.py::TestC::test_y and tests/c.py::test_z[param] "
            "but not tests/d.txt::test_w")
    assert references(text) == [("tests/a.py", "test_x"), ("tests/sub/b.py", "TestC::test_y"),
                                ("tests/c.py", "test_z")]
    tree = ast.parse("def test_x():\n    pass\nclass TestC:\n    def test_y(self):\n        pass\n")
    assert defines(tree, ["test_x"]) and defines(tree, ["TestC", "test_y"]) and defines(tree, ["TestC"])
    assert not defines(tree, ["test_y"]) and not defines(tree, ["test_x", "test_y"])
