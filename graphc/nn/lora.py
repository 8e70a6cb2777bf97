"""LoRA adapters on Linear layers, in the layout of Hugging Face PEFT's ``lora.Linear``.

``LoraLinear`` wraps a :class:`~graphc.nn.Linear` (``base_layer``) and adds, per adapter name, a
low-rank update ``B @ A`` scaled by ``lora_alpha / r``::

    y = base_layer(x) + scaling[a] * lora_B[a](lora_A[a](lora_dropout[a](x)))     (active adapter a)

State-dict keys match PEFT (``base_layer.weight``, ``base_layer.bias``, ``lora_A.<name>.weight``,
``lora_B.<name>.weight``), so PEFT checkpoints of a single layer load directly. ``merge()`` folds the
update into ``base_layer.weight`` (then forward is the base layer alone, which is what a compiled
inference graph wants) and ``unmerge()`` takes it out again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..tensor import Tensor
from . import init
from .containers import ModuleDict
from .module import Module
from .modules.dropout import Dropout
from .modules.linear import Identity, Linear

__all__ = ["LoraLinear"]


class LoraLinear(Module):
    """A Linear with LoRA adapters.

    ``base_layer`` is a Linear, or ``(in_features, out_features)`` to build one (``bias`` applies then).
    The first adapter, ``adapter_name``, has rank ``r`` and scaling ``lora_alpha / r`` (``lora_alpha / sqrt(r)``
    with ``use_rslora``); A is kaiming_uniform(a=sqrt(5)) and B zeros, so a new adapter does not change
    the output. More adapters come from :meth:`add_adapter`; :meth:`set_adapter` picks the active one.
    """

    def __init__(self, base_layer: Linear | Sequence[int], r: int = 8, lora_alpha: float = 8,
                 adapter_name: str = "default", lora_dropout: float = 0.0, *, bias: bool = True,
                 use_rslora: bool = False, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        if not isinstance(base_layer, Linear):
            if not (isinstance(base_layer, (tuple, list)) and len(base_layer) == 2):
                raise TypeError("LoraLinear: base_layer must be a graphc.nn.Linear or (in_features, out_features), "
                                f"got {type(base_layer).__name__}")
            base_layer = Linear(int(base_layer[0]), int(base_layer[1]), bias=bias, device=device, dtype=dtype)
        self.base_layer = base_layer
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self.r: dict[str, int] = {}
        self.lora_alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}
        self.use_rslora = use_rslora
        self.lora_dropout = ModuleDict()
        self.lora_A = ModuleDict()
        self.lora_B = ModuleDict()
        self.merged_adapters: list[str] = []
        self.disable_adapters = False
        self._active_adapter = adapter_name
        self.add_adapter(adapter_name, r, lora_alpha, lora_dropout)

    # ------------------------------------------------------------------------------------ adapters
    def add_adapter(self, adapter_name: str, r: int = 8, lora_alpha: float = 8, lora_dropout: float = 0.0) -> None:
        """Add an adapter of rank r (A random, B zero); the active adapter does not change."""
        if not isinstance(adapter_name, str) or not adapter_name or "." in adapter_name:
            raise ValueError(f"LoraLinear: adapter name must be a non-empty string without '.', got {adapter_name!r}")
        if adapter_name in self.lora_A:
            raise ValueError(f"LoraLinear: adapter '{adapter_name}' already exists")
        if not isinstance(r, int) or r <= 0:
            raise ValueError(f"LoraLinear: `r` should be a positive integer value but the value passed is {r}")
        w = self.base_layer.weight
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = lora_alpha
        self.scaling[adapter_name] = lora_alpha / math.sqrt(r) if self.use_rslora else lora_alpha / r
        self.lora_dropout[adapter_name] = Dropout(p=lora_dropout) if lora_dropout > 0.0 else Identity()
        self.lora_A[adapter_name] = Linear(self.in_features, r, bias=False, device=w.device, dtype=w.dtype)
        self.lora_B[adapter_name] = Linear(r, self.out_features, bias=False, device=w.device, dtype=w.dtype)
        self.reset_lora_parameters(adapter_name)

    def reset_lora_parameters(self, adapter_name: str) -> None:
        init.kaiming_uniform_(self.lora_A[adapter_name].weight, a=math.sqrt(5))
        init.zeros_(self.lora_B[adapter_name].weight)

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an adapter (unmerging it first if it is merged)."""
        self._check_adapter(adapter_name)
        if adapter_name in self.merged_adapters:
            self._apply_delta(adapter_name, -1.0)
            self.merged_adapters.remove(adapter_name)
        for d in (self.lora_dropout, self.lora_A, self.lora_B):
            del d[adapter_name]
        for d in (self.r, self.lora_alpha, self.scaling):
            del d[adapter_name]
        if self._active_adapter == adapter_name:
            remaining = list(self.lora_A.keys())
            self._active_adapter = remaining[0] if remaining else ""

    def _check_adapter(self, name: str) -> None:
        if name not in self.lora_A:
            raise KeyError(f"LoraLinear: no adapter named '{name}' (adapters: {list(self.lora_A.keys())})")

    @property
    def active_adapter(self) -> str:
        return self._active_adapter

    @property
    def active_adapters(self) -> list[str]:
        return [self._active_adapter] if self._active_adapter else []

    def set_adapter(self, adapter_name: str) -> None:
        """Make adapter_name the adapter forward applies."""
        self._check_adapter(adapter_name)
        self._active_adapter = adapter_name

    # ------------------------------------------------------------------------------------ merging
    @property
    def merged(self) -> bool:
        return bool(self.merged_adapters)

    def get_delta_weight(self, adapter_name: str) -> np.ndarray:
        """scaling * B @ A as a float64 array [out_features, in_features]."""
        self._check_adapter(adapter_name)
        a = self.lora_A[adapter_name].weight.numpy().astype(np.float64)
        b = self.lora_B[adapter_name].weight.numpy().astype(np.float64)
        return (b @ a) * self.scaling[adapter_name]

    def _apply_delta(self, adapter_name: str, sign: float) -> None:
        w = self.base_layer.weight.numpy()
        w[...] = (w.astype(np.float64) + sign * self.get_delta_weight(adapter_name)).astype(w.dtype)

    def merge(self, safe_merge: bool = False, adapter_names: Sequence[str] | None = None) -> None:
        """Fold scaling * B @ A of the given adapters (default: the active one) into base_layer.weight."""
        names = list(self.active_adapters if adapter_names is None else adapter_names)
        for name in names:
            self._check_adapter(name)
            if name in self.merged_adapters:
                continue
            if safe_merge:
                w = self.base_layer.weight.numpy()
                new = w.astype(np.float64) + self.get_delta_weight(name)
                if not np.isfinite(new).all():
                    raise ValueError(f"NaNs detected in the merged weights. The adapter {name} seems to be broken")
            self._apply_delta(name, 1.0)
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Take every merged adapter back out of base_layer.weight (last merged first)."""
        while self.merged_adapters:
            self._apply_delta(self.merged_adapters.pop(), -1.0)

    # ------------------------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x)
        result = self.base_layer(x)
        if self.merged:
            return result
        for name in self.active_adapters:
            if name not in self.lora_A:
                continue
            h = self.lora_B[name](self.lora_A[name](self.lora_dropout[name](x)))
            result = result + h * self.scaling[name]
        return result

    def extra_repr(self) -> str:
        adapters = ", ".join(f"{n}(r={self.r[n]}, alpha={self.lora_alpha[n]})" for n in self.lora_A.keys())
        return f"adapters=[{adapters}], active_adapter={self._active_adapter!r}, merged={self.merged}"
