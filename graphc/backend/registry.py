"""The registry of backends: name -> :class:`~graphc.backend.base.Backend` subclass.

A backend registers itself with :func:`register_backend` where its class is defined; graphc's own
(``c``, ``cuda``) are imported on the first look-up. The compiler, the build, the loader and the CLI
find a backend's knobs here by the name a compile or a manifest gives, and never compare backend names
themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from .base import Backend

BACKENDS: dict[str, type[Backend]] = {}
_BUILTIN = ("c", "cuda")  # modules of graphc.backend that define one
DEFAULT_BACKEND = "c"  # compile(), the CLI and a manifest without "backend"

B = TypeVar("B", bound="type[Backend]")


def register_backend(cls: B) -> B:
    """Class decorator: make a backend available to ``graphc.compile(..., backend=cls.name)``."""
    BACKENDS[cls.name] = cls
    return cls


def _load_builtin() -> None:
    import importlib

    for mod in _BUILTIN:
        importlib.import_module(f"{__package__}.{mod}")


def backend_names() -> list[str]:
    """The registered backends' names, sorted (the CLI's --backend choices)."""
    _load_builtin()
    return sorted(BACKENDS)


def backend_class(name: str) -> type[Backend]:
    _load_builtin()
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; graphc has {', '.join(sorted(BACKENDS))}") from None


def get_backend(name: str) -> Backend:
    """A new instance of the backend called ``name`` (ValueError naming the known ones otherwise)."""
    return backend_class(name)()
