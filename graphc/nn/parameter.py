"""graphc.nn.Parameter and graphc.nn.Buffer: the tensors a Module registers as its state.

A Parameter is a :class:`graphc.Tensor` subclass that shares the memory of the tensor it is built
from (as ``torch.nn.Parameter`` does), so ``Parameter(t)`` and ``t`` see the same numbers. Assigning a
Parameter to a Module attribute registers it; assigning a :class:`Buffer` registers a buffer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._device import device
from .._dtype import get_default_dtype
from ..tensor import Tensor, _torch_to_numpy

__all__ = ["Parameter", "Buffer", "is_lazy"]


def _source(data: Any, what: str) -> tuple[np.ndarray, device]:
    """The array (shared, not copied) and device of the data a Parameter/Buffer is built from."""
    if data is None:
        return np.empty((0,), dtype=get_default_dtype().np), device("cpu")
    if isinstance(data, Tensor):
        return data._concrete(what), data._device
    if isinstance(data, np.ndarray):
        return data, device("cpu")
    arr = _torch_to_numpy(data)
    if arr is not None:
        return arr, device("cpu")
    raise TypeError(f"{what}: expected a graphc.Tensor (or a numpy array), got {type(data).__name__}")


class Parameter(Tensor):
    """A Tensor that is a module parameter: assigning it to a Module attribute registers it.

    ``Parameter(data=None, requires_grad=True)`` shares ``data``'s memory; ``data=None`` gives an
    empty float tensor, as in PyTorch. Operations on a Parameter return plain Tensors.
    """

    def __new__(cls, data: Any = None, requires_grad: bool = True) -> Parameter:
        arr, dev = _source(data, "Parameter()")
        p = object.__new__(cls)
        p._init(arr, dev, requires_grad=bool(requires_grad))
        return p

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        # everything happens in __new__; Tensor.__init__ (the legacy constructor) must not run
        pass

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __deepcopy__(self, memo: dict) -> Parameter:
        if id(self) in memo:
            return memo[id(self)]
        result = type(self)(Tensor._wrap(self._concrete("deepcopy").copy(), self._device), self.requires_grad)
        result.__dict__.update(self.__dict__)
        memo[id(self)] = result
        return result


class _BufferMeta(type):
    # isinstance(t, Buffer) is True for the tensors Buffer() returns (they carry the _is_buffer flag)
    def __instancecheck__(cls, instance: Any) -> bool:
        if cls is Buffer and isinstance(instance, Tensor) and instance.__dict__.get("_is_buffer", False):
            return True
        return super().__instancecheck__(instance)


class Buffer(Tensor, metaclass=_BufferMeta):
    """A tensor that is module state but not a parameter (BatchNorm's running_mean, ...).

    As in PyTorch, ``Buffer(data, persistent=True)`` returns a plain Tensor sharing ``data``'s memory,
    flagged so that assigning it to a Module attribute registers a buffer (persistent or not).
    """

    persistent: bool

    def __new__(cls, data: Any = None, *, persistent: bool = True) -> Tensor:  # type: ignore[misc]
        arr, dev = _source(data, "Buffer()")
        requires_grad = bool(getattr(data, "requires_grad", False))
        t = Tensor._wrap(arr, dev, requires_grad)
        t.persistent = persistent  # type: ignore[attr-defined]
        t._is_buffer = True  # type: ignore[attr-defined]
        return t


def is_lazy(param: Any) -> bool:
    """graphc has no lazy (uninitialised) parameters; kept for code written against PyTorch."""
    return False
