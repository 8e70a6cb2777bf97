"""Where the jinja2 templates and the hand-written C runtime live (installed wheel or source tree)."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _find(folder: str) -> Path:
    for cand in (_PKG / "_data" / folder, _PKG.parent / folder):
        if cand.is_dir():
            return cand
    raise FileNotFoundError(
        f"graphc installation is incomplete: cannot find the '{folder}' folder "
        f"(looked in {_PKG / '_data'} and {_PKG.parent})"
    )


def templates_dir() -> Path:
    return _find("templates")


def runtime_dir() -> Path:
    return _find("runtime_c")
