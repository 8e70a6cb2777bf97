"""graphc.dtype: the element types, with PyTorch's names, reprs and promotion rules."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


class dtype:  # noqa: N801 - PyTorch's spelling
    """An element type. Singletons: compare with ``is`` or ``==``."""

    __slots__ = ("name", "short", "itemsize", "is_floating_point", "is_signed", "_np", "c_type", "_rank")

    def __init__(self, name: str, short: str, np_type: Any, c_type: str, floating: bool, signed: bool, rank: int,
                 itemsize: int = 0):
        self.name = name
        self.short = short  # the IR's spelling: f32, i64, ...
        self._np = None if np_type is None else np.dtype(np_type)  # None: loaded on first use (bfloat16)
        self.itemsize = itemsize or self._np.itemsize  # type: ignore[union-attr]
        self.is_floating_point = floating
        self.is_signed = signed
        self.c_type = c_type
        self._rank = rank  # order within its category for promotion

    @property
    def np(self) -> np.dtype:
        """The numpy dtype (bfloat16's is ml_dtypes', imported on first use: it takes about 0.5 s)."""
        if self._np is None:
            self._np = _lazy_numpy_type(self.name)
        return self._np

    @property
    def is_complex(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"graphc.{self.name}"

    def __reduce__(self):
        return (_by_name, (self.name,))

    def to_real(self) -> dtype:
        return self


def _by_name(name: str) -> dtype:
    return _NAMES[name]


def _lazy_numpy_type(name: str) -> np.dtype:
    import ml_dtypes  # ~0.5 s of CPU to import (its casts and ufuncs): only a bfloat16 tensor needs it

    return np.dtype(getattr(ml_dtypes, name))


class _NumpyTypes(dict):
    """numpy dtype -> graphc dtype. bfloat16's entry appears once ml_dtypes is imported (an array of that
    type, or a use of graphc.bfloat16.np, implies it), so importing graphc does not import ml_dtypes."""

    def _complete(self) -> None:
        if bfloat16._np is not None or "ml_dtypes" in sys.modules:
            dict.__setitem__(self, bfloat16.np, bfloat16)

    def get(self, key: Any, default: Any = None) -> Any:
        if not dict.__contains__(self, key):
            self._complete()
        return dict.get(self, key, default)

    def __contains__(self, key: object) -> bool:
        if not dict.__contains__(self, key):
            self._complete()
        return dict.__contains__(self, key)

    def __missing__(self, key: Any) -> dtype:
        self._complete()
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        raise KeyError(key)


bool_ = dtype("bool", "bool", np.bool_, "uint8_t", False, False, 0)
uint8 = dtype("uint8", "u8", np.uint8, "uint8_t", False, False, 1)
int8 = dtype("int8", "i8", np.int8, "int8_t", False, True, 2)
int16 = dtype("int16", "i16", np.int16, "int16_t", False, True, 3)
int32 = dtype("int32", "i32", np.int32, "int32_t", False, True, 4)
int64 = dtype("int64", "i64", np.int64, "int64_t", False, True, 5)
float16 = dtype("float16", "f16", np.float16, "uint16_t", True, True, 6)
bfloat16 = dtype("bfloat16", "bf16", None, "uint16_t", True, True, 7, itemsize=2)
float32 = dtype("float32", "f32", np.float32, "float", True, True, 8)
float64 = dtype("float64", "f64", np.float64, "double", True, True, 9)

ALL_DTYPES = (bool_, uint8, int8, int16, int32, int64, float16, bfloat16, float32, float64)

_NAMES: dict[str, dtype] = {d.name: d for d in ALL_DTYPES}
_ALIASES = {
    "float": float32, "double": float64, "half": float16, "long": int64, "int": int32, "short": int16,
    "bool_": bool_, "b": bool_,
}
for _d in ALL_DTYPES:
    _ALIASES[_d.short] = _d
_SAFETENSORS = {
    bool_: "BOOL", uint8: "U8", int8: "I8", int16: "I16", int32: "I32", int64: "I64",
    float16: "F16", bfloat16: "BF16", float32: "F32", float64: "F64",
}
_FROM_SAFETENSORS = {v: k for k, v in _SAFETENSORS.items()}
_NP_TO_DTYPE = _NumpyTypes({d._np: d for d in ALL_DTYPES if d._np is not None})

_default_dtype = float32


def safetensors_name(dt: dtype) -> str:
    return _SAFETENSORS[dt]


def from_safetensors_name(name: str) -> dtype:
    try:
        return _FROM_SAFETENSORS[name]
    except KeyError:
        raise ValueError(f"unsupported safetensors dtype {name!r} (graphc reads {sorted(_FROM_SAFETENSORS)})") from None


def get_default_dtype() -> dtype:
    return _default_dtype


def set_default_dtype(d: dtype) -> None:
    global _default_dtype
    d = as_dtype(d)
    if not d.is_floating_point:
        raise TypeError(f"only floating-point types are supported as the default type, got {d}")
    _default_dtype = d


def as_dtype(x: Any) -> dtype:
    """Accept a graphc dtype, a name ('float32', 'f32', 'float'), a numpy dtype/type or a torch dtype."""
    if isinstance(x, dtype):
        return x
    if isinstance(x, str):
        key = x[6:] if x.startswith("torch.") else x[7:] if x.startswith("graphc.") else x
        d = _NAMES.get(key) or _ALIASES.get(key)
        if d is None:
            raise ValueError(
                f"unknown dtype {x!r}; graphc knows {', '.join(d.name for d in ALL_DTYPES)} "
                "(and the aliases float, double, half, long, int, short, f32, i64, ...)"
            )
        return d
    if x is float:
        return _default_dtype
    if x is int:
        return int64
    if x is bool:
        return bool_
    mod = type(x).__module__
    if mod.startswith("torch"):
        return as_dtype(str(x))
    try:
        npd = np.dtype(x)
    except TypeError:
        raise TypeError(f"cannot interpret {x!r} as a graphc dtype") from None
    d = _NP_TO_DTYPE.get(npd)
    if d is None:
        raise TypeError(f"numpy dtype {npd} has no graphc equivalent")
    return d


def from_numpy_dtype(npd: np.dtype) -> dtype:
    d = _NP_TO_DTYPE.get(np.dtype(npd))
    if d is None:
        raise TypeError(f"numpy dtype {npd} has no graphc equivalent")
    return d


def _category(d: dtype) -> int:
    return 2 if d.is_floating_point else (0 if d is bool_ else 1)


def promote_types(a: dtype, b: dtype) -> dtype:
    """PyTorch's torch.promote_types for the dtypes graphc has."""
    if a is b:
        return a
    if {a, b} == {float16, bfloat16}:
        return float32
    if {a, b} == {uint8, int8}:
        return int16
    ca, cb = _category(a), _category(b)
    if ca != cb:
        return a if ca > cb else b
    return a if a._rank > b._rank else b


def result_type_with_scalar(t: dtype, scalar: Any) -> dtype:
    """dtype of `tensor op python_scalar` (scalars are 'weak': they only lift the category)."""
    if isinstance(scalar, bool):
        return t
    if isinstance(scalar, int):
        return t if t is not bool_ else int64
    if isinstance(scalar, float):
        return t if t.is_floating_point else _default_dtype
    raise TypeError(f"unsupported scalar type {type(scalar).__name__}")
