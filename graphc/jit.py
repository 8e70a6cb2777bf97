"""graphc.jit: the torch.jit names that inference code touches, as no-ops (graphc traces instead of
scripting). ``is_tracing()`` is True while graphc traces a forward pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .functions import is_tracing

__all__ = ["is_scripting", "is_tracing", "unused", "ignore", "export", "_overload_method", "annotate", "script",
           "Final"]

F = TypeVar("F", bound=Callable[..., Any])


def is_scripting() -> bool:
    """False: graphc never runs TorchScript."""
    return False


def unused(fn: F) -> F:
    """No-op decorator (torch.jit.unused keeps a method out of TorchScript)."""
    return fn


def ignore(drop: Any = False, **kwargs: Any) -> Any:
    """No-op decorator, with or without arguments (``@ignore``, ``@ignore(drop=True)``)."""
    if callable(drop):
        return drop
    return lambda fn: fn


def export(fn: F) -> F:
    """No-op decorator."""
    return fn


def _overload_method(fn: F) -> F:
    """No-op decorator (TorchScript's method overload declarations)."""
    return fn


def annotate(the_type: Any, the_value: Any) -> Any:
    """The value itself (torch.jit.annotate only informs TorchScript's type checker)."""
    return the_value


def script(obj: Any, *args: Any, **kwargs: Any) -> Any:
    """The function or module itself: graphc traces the Python code, so nothing needs scripting."""
    return obj


try:  # typing.Final is what torch.jit.Final aliases
    from typing import Final
except ImportError:  # pragma: no cover - Python < 3.8
    Final = Any  # type: ignore[assignment]
