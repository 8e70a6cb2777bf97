"""The IR's type: :class:`TensorType`, a shape of (possibly symbolic) dims and a dtype.

It depends on nothing but dtypes and symbolic dims, so the op registry (``graphc/ops/registry.py``, whose
type rules take and return TensorTypes), the IR and the backends all import it from here
(``graphc.ops.registry.TensorType`` stays an alias).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from .._dtype import dtype
from ..sym import Dim, is_static

__all__ = ["TensorType"]


class TensorType(NamedTuple):
    """The static type of a value: a shape of (possibly symbolic) dims and a dtype."""

    shape: tuple[Dim, ...]
    dtype: dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(is_static(d) for d in self.shape)

    def __str__(self) -> str:
        return f"{self.dtype.short}[{','.join(str(d) for d in self.shape)}]"

    def with_shape(self, shape: Sequence[Dim]) -> TensorType:
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dt: dtype) -> TensorType:
        return TensorType(self.shape, dt)
