"""graphc.utils.checkpoint: activation checkpointing only saves memory during training; for inference
(and for graphc, which has no autograd) ``checkpoint(fn, *args)`` is ``fn(*args)``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["checkpoint", "checkpoint_sequential"]


def checkpoint(function: Callable[..., Any], *args: Any, use_reentrant: bool | None = None,
               context_fn: Any = None, determinism_check: str = "default", debug: bool = False,
               preserve_rng_state: bool = True, **kwargs: Any) -> Any:
    """Call function(*args, **kwargs)."""
    return function(*args, **kwargs)


def checkpoint_sequential(functions: Sequence[Callable[..., Any]] | Any, segments: int, input: Any,  # noqa: A002
                          use_reentrant: bool | None = None, **kwargs: Any) -> Any:
    """Run the modules (a Sequential or a list) one after the other on input."""
    fns = list(functions.children()) if hasattr(functions, "children") else list(functions)
    for fn in fns:
        input = fn(input)
    return input
