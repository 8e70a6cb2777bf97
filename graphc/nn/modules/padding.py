"""The padding layers (PyTorch's torch.nn.modules.padding): constant/zero, reflection, replication and
circular padding of the last 1, 2 or 3 dims, through F.pad."""

from __future__ import annotations

from collections.abc import Sequence

from ...tensor import Tensor
from .. import functional as F
from ..module import Module
from ._utils import check_tensor

__all__ = [
    "ConstantPad1d", "ConstantPad2d", "ConstantPad3d", "ZeroPad1d", "ZeroPad2d", "ZeroPad3d", "ReflectionPad1d",
    "ReflectionPad2d", "ReflectionPad3d", "ReplicationPad1d", "ReplicationPad2d", "ReplicationPad3d",
    "CircularPad1d", "CircularPad2d", "CircularPad3d",
]


def _pads(padding: int | Sequence[int], n: int) -> tuple[int, ...]:
    if isinstance(padding, (list, tuple)):
        if len(padding) != 2 * n:
            raise ValueError(f"padding must be an int or a tuple of {2 * n} ints, got {tuple(padding)}")
        return tuple(int(p) for p in padding)
    return (int(padding),) * (2 * n)


class _PadNd(Module):
    _n = 1
    _mode = "constant"

    def __init__(self, padding: int | Sequence[int]) -> None:
        super().__init__()
        self.padding = _pads(padding, self._n)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.pad(check_tensor(self, input), self.padding, self._mode)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class _ConstantPadNd(_PadNd):
    def __init__(self, padding: int | Sequence[int], value: float) -> None:
        super().__init__(padding)
        self.value = value

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.pad(check_tensor(self, input), self.padding, "constant", self.value)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, value={self.value}"


class ConstantPad1d(_ConstantPadNd):
    """Pads the last dim with value."""


class ConstantPad2d(_ConstantPadNd):
    """Pads the last 2 dims with value."""

    _n = 2


class ConstantPad3d(_ConstantPadNd):
    """Pads the last 3 dims with value."""

    _n = 3


class _ZeroPad(_ConstantPadNd):
    def __init__(self, padding: int | Sequence[int]) -> None:
        super().__init__(padding, 0.0)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class ZeroPad1d(_ZeroPad):
    """Pads the last dim with zeros."""


class ZeroPad2d(_ZeroPad):
    """Pads the last 2 dims with zeros."""

    _n = 2


class ZeroPad3d(_ZeroPad):
    """Pads the last 3 dims with zeros."""

    _n = 3


class ReflectionPad1d(_PadNd):
    """Reflection (mirrored, without repeating the edge) padding of the last 1 dim."""

    _n = 1
    _mode = "reflect"


class ReflectionPad2d(_PadNd):
    """Reflection (mirrored, without repeating the edge) padding of the last 2 dims."""

    _n = 2
    _mode = "reflect"


class ReflectionPad3d(_PadNd):
    """Reflection (mirrored, without repeating the edge) padding of the last 3 dims."""

    _n = 3
    _mode = "reflect"


class ReplicationPad1d(_PadNd):
    """Edge-replicating padding of the last 1 dim."""

    _n = 1
    _mode = "replicate"


class ReplicationPad2d(_PadNd):
    """Edge-replicating padding of the last 2 dims."""

    _n = 2
    _mode = "replicate"


class ReplicationPad3d(_PadNd):
    """Edge-replicating padding of the last 3 dims."""

    _n = 3
    _mode = "replicate"


class CircularPad1d(_PadNd):
    """Circular (wrap-around) padding of the last 1 dim."""

    _n = 1
    _mode = "circular"


class CircularPad2d(_PadNd):
    """Circular (wrap-around) padding of the last 2 dims."""

    _n = 2
    _mode = "circular"


class CircularPad3d(_PadNd):
    """Circular (wrap-around) padding of the last 3 dims."""

    _n = 3
    _mode = "circular"
