"""graphc.device: where a tensor lives. Eager math runs on numpy, so 'cpu' holds data; 'cuda' and
'meta' are accepted as PyTorch accepts them (a compile target, or shape-only tensors)."""

from __future__ import annotations

import re
from typing import Any

_KNOWN = ("cpu", "cuda", "meta")
_RE = re.compile(r"^([a-z_]+)(?::(\d+))?$")


class device:  # noqa: N801 - PyTorch's spelling
    __slots__ = ("type", "index")

    def __init__(self, type: Any, index: int | None = None):  # noqa: A002 - PyTorch's signature
        if isinstance(type, device):
            if index is not None:
                raise ValueError("device(device, index) is not allowed: pass a type string with an index")
            self.type, self.index = type.type, type.index
            return
        if isinstance(type, int) and index is None:
            raise ValueError(f"device({type}) would mean cuda:{type}; graphc needs an explicit 'cuda:{type}'")
        if not isinstance(type, str):
            raise TypeError(f"device() expects a string such as 'cpu' or 'cuda:0', got {type!r}")
        m = _RE.match(type.strip())
        if not m or m.group(1) not in _KNOWN:
            raise ValueError(
                f"Expected one of {', '.join(_KNOWN)} device type at start of device string: {type!r}"
            )
        t, idx = m.group(1), m.group(2)
        if idx is not None:
            if index is not None:
                raise ValueError(f"device string {type!r} already has an index; do not pass index={index}")
            index = int(idx)
        if index is not None:
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                raise ValueError(f"Device index must not be negative, got {index!r}")
            if t == "cpu" and index != 0:
                raise ValueError(f"CPU device index must be 0 or absent, got {index}")
        self.type, self.index = t, index

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = device(other)
            except (ValueError, TypeError):
                return False
        return isinstance(other, device) and self.type == other.type and self.index == other.index

    def __hash__(self) -> int:
        return hash((self.type, self.index))

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"


def as_device(x: Any) -> device:
    if x is None:
        return device("cpu")
    if isinstance(x, device):
        return x
    if isinstance(x, str):
        return device(x)
    if type(x).__module__.startswith("torch"):
        return device(str(x))
    raise TypeError(f"cannot interpret {x!r} as a device")
