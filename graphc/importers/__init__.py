"""Importers: models written for other frameworks, turned into graphc IR (see docs/importers.md).

* :func:`from_onnx` (``importers/onnx.py``): an ONNX file or ModelProto (opset 13+), interpreted node by
  node the same way; returns a plain Graph.
* :func:`from_torch` (``importers/torch.py``): a ``torch.nn.Module`` captured with ``torch.export``;
  the exported ATen graph is replayed node by node through graphc's own Tensor functions inside
  graphc's tracer, so each op keeps one definition and the IR keeps the user's module paths and lines.

An importer returns an object with a ``graph`` (the graphc :class:`~graphc.ir.graph.Graph`) and a
``wrap(compiled)`` method that gives the compiled library the calling convention of the original model
(argument order, keyword arguments, structured outputs). ``graphc.compile`` accepts such objects, and a
torch module directly (:func:`as_imported`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["from_torch", "from_onnx", "as_imported", "is_torch_module"]


def is_torch_module(obj: Any) -> bool:
    """True for a torch.nn.Module instance (without importing torch when it is not loaded)."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def from_torch(module: Any, example_inputs: Any = (), dynamic: Any = None, **kwargs: Any) -> Any:
    """Import a torch.nn.Module (see :func:`graphc.importers.torch.from_torch`)."""
    from .torch import from_torch as _from_torch

    return _from_torch(module, example_inputs, dynamic, **kwargs)


def from_onnx(model: Any, **kwargs: Any) -> Any:
    """Import an ONNX model as a graphc Graph (see :func:`graphc.importers.onnx.from_onnx`)."""
    from .onnx import from_onnx as _from_onnx

    return _from_onnx(model, **kwargs)


def as_imported(obj: Any, example_inputs: Any = None, dynamic: Any = None, *, name: str | None = None) -> Any:
    """What graphc.compile should compile for obj: the object itself when an importer returned it
    (it has ``graph`` and ``wrap``), a torch module imported with from_torch, else None."""
    if hasattr(obj, "graph") and callable(getattr(obj, "wrap", None)):
        if example_inputs is not None or dynamic:
            raise ValueError("an imported model has its inputs and dims already; compile it without "
                             "example_inputs and dynamic")
        return obj
    if is_torch_module(obj):
        if example_inputs is None:
            raise ValueError("compile needs example_inputs to import a torch module")
        return from_torch(obj, example_inputs, dynamic, name=name)
    return None
