"""torch.return_types: the named tuples of PyTorch's functions that return values and indices
(``graphc.sort(x).values``, ``x.topk(3).indices``; a tuple too, so ``v, i = x.sort()`` unpacks)."""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["sort", "topk"]


class sort(NamedTuple):  # noqa: N801 - PyTorch's name
    values: Any
    indices: Any


class topk(NamedTuple):  # noqa: N801
    values: Any
    indices: Any
