"""Input checks shared by the layers: errors name the layer, the expected layout and what came in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ... import _dtype as D
from ...errors import ShapeError
from ...sym import Dim
from ...tensor import Tensor, empty


def shape_str(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def layer_name(module: Any) -> str:
    return type(module).__name__


def check_tensor(module: Any, x: Any, what: str = "input") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{layer_name(module)}: {what} must be a graphc.Tensor, got {type(x).__name__}")
    return x


def check_ndim(module: Any, x: Any, layouts: Mapping[int, str], what: str = "input") -> Tensor:
    """layouts: {ndim: "(N, C, H, W)"}, in the order they are listed in the message."""
    x = check_tensor(module, x, what)
    if x.ndim not in layouts:
        opts = list(layouts.items())
        first = f"{opts[0][0]} dims {opts[0][1]}"
        rest = "".join(f" or {n} {lay}" for n, lay in opts[1:])
        raise ShapeError(f"{layer_name(module)}: expected {what} with {first}{rest}, got {shape_str(x.shape)}")
    return x


def check_size(module: Any, x: Tensor, dim: int, expected: Dim, meaning: str, attr: str,
               what: str = "input") -> None:
    got = x.shape[dim]
    if got != expected:
        raise ShapeError(f"{layer_name(module)}: expected {what} with {expected} {meaning} ({attr}={expected}) in dim "
                         f"{dim}, got {got} (shape {shape_str(x.shape)})")


def check_dtype(module: Any, x: Tensor, like: Tensor | None, what: str = "input") -> None:
    """x must be floating point and, when the layer has parameters, of their dtype."""
    if not x.dtype.is_floating_point:
        want = like.dtype.name if like is not None else "floating-point"
        raise ShapeError(f"{layer_name(module)}: expected a floating-point {what} ({want}), got dtype {x.dtype.name}")
    if like is not None and x.dtype is not like.dtype:
        raise ShapeError(f"{layer_name(module)}: {what} dtype {x.dtype.name} does not match the layer's parameter "
                         f"dtype {like.dtype.name}; convert the input with .to(graphc.{like.dtype.name}) or the layer "
                         f"with .to(graphc.{x.dtype.name})")


def new_param_data(shape: Sequence[int], device: Any = None, dtype: Any = None) -> Tensor:
    """Uninitialised (zero) storage for a parameter, honouring factory kwargs like PyTorch."""
    dt = D.as_dtype(dtype) if dtype is not None else D.get_default_dtype()
    return empty(*shape, dtype=dt, device=device)


def ntuple(v: Any, n: int) -> tuple:
    if isinstance(v, (list, tuple)):
        return tuple(v)
    return (v,) * n
