"""The op registry (see registry.py for how to add an op) and the files that fill it."""

from . import elementwise, nn, reduce, shape  # noqa: F401  (registration side effects)
from .registry import OPS, Attr, OpDef, TensorType, broadcast_shapes, defop, get_op

__all__ = ["OPS", "Attr", "OpDef", "TensorType", "broadcast_shapes", "defop", "get_op"]
