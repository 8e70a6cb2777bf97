"""graphc.fx: ``wrap`` as a no-op (torch.fx.wrap marks a function to stay a leaf in symbolic tracing;
graphc's tracer runs every function on symbolic tensors, so there is nothing to mark)."""

from __future__ import annotations

from typing import Any

__all__ = ["wrap"]


def wrap(fn_or_name: Any) -> Any:
    """Return the function (or name) unchanged; works at module level like torch.fx.wrap("len")."""
    return fn_or_name
