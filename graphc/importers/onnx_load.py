"""Reading ONNX files safely: the protobuf, then every external-data tensor from files next to it.

``onnx.load`` would follow an external-data ``location`` anywhere on the disk. Here a location must be a
relative path that stays inside the model's folder (symlinks resolved), name a regular file, and the
``offset``/``length`` it gives must lie inside that file and match the tensor's size; every failure says
which tensor, file and byte offset. Nothing is unpickled: ONNX is protobuf and raw bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import GraphcError


class OnnxLoadError(GraphcError, ValueError):
    """An ONNX file or one of its external-data files is unreadable, unsafe or inconsistent."""


# bytes per element of the fixed-size ONNX element types (TensorProto.DataType)
_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16, 16: 2,
             17: 1, 18: 1, 19: 1, 20: 1, 23: 1}


def _tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of a graph: initializers, Constant values and sparse parts, and subgraphs'."""
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _tensors(a.g)
            for g in a.graphs:
                yield from _tensors(g)


def _external_info(t: Any) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def resolve_external_data(model: Any, base_dir: str | os.PathLike | None, label: str) -> None:
    """Replace every external-data reference in model by the bytes it points to (in place)."""
    from onnx import TensorProto

    base = Path(base_dir).resolve() if base_dir is not None else None
    for t in _tensors(model.graph):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        info = _external_info(t)
        where = f"{label}: initializer '{t.name}'"
        loc = info.get("location")
        if not loc:
            raise OnnxLoadError(f"{where} is stored externally but names no location")
        if base is None:
            raise OnnxLoadError(f"{where} is stored in the external file '{loc}': load the model from its path "
                                "(graphc.from_onnx('model.onnx')) so the file can be found next to it")
        if os.path.isabs(loc) or Path(loc).drive:
            raise OnnxLoadError(f"{where}: external-data location '{loc}' must be a path relative to the "
                                f"model's folder {base}")
        path = (base / loc).resolve()
        if path != base and base not in path.parents:
            raise OnnxLoadError(f"{where}: external-data location '{loc}' leads outside the model's folder "
                                f"{base} (to {path}); graphc reads external data only from that folder")
        if not path.is_file():
            raise OnnxLoadError(f"{where}: external-data file '{loc}' does not exist in {base} or is not a "
                                "regular file")
        try:
            offset = int(info.get("offset", "0"))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise OnnxLoadError(f"{where}: external-data offset/length must be integers, got "
                                f"offset={info.get('offset')!r} length={info.get('length')!r}") from None
        size = path.stat().st_size
        n = 1
        for d in t.dims:
            n *= int(d)
        item = _ITEMSIZE.get(t.data_type)
        expected = None if item is None else n * item
        if t.data_type in (21, 22, 25, 26):  # 4-bit / 2-bit packed types
            per = 2 if t.data_type in (21, 22) else 4
            expected = (n + per - 1) // per
        if offset < 0 or offset > size:
            raise OnnxLoadError(f"{where}: external-data offset {offset} is outside '{loc}' ({size} bytes)")
        if length is None:
            length = expected if expected is not None else size - offset
        if length < 0 or offset + length > size:
            raise OnnxLoadError(f"{where}: external data at offset {offset} with length {length} runs past the "
                                f"end of '{loc}' ({size} bytes)")
        if expected is not None and length != expected:
            raise OnnxLoadError(f"{where}: external data in '{loc}' at offset {offset} has {length} bytes, but a "
                                f"tensor of shape {list(t.dims)} needs {expected}")
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        if len(data) != length:
            raise OnnxLoadError(f"{where}: short read from '{loc}' at offset {offset}: {len(data)} of {length} "
                                "bytes")
        t.raw_data = data
        del t.external_data[:]
        t.data_location = TensorProto.DEFAULT


def load(src: Any) -> tuple[Any, str]:
    """(ModelProto with all data inline, label for messages) from a path, bytes or a ModelProto."""
    import onnx

    if isinstance(src, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(src)
        label = model.graph.name or "model"
        resolve_external_data(model, None, label)
        return model, label
    if isinstance(src, (bytes, bytearray)):
        model = onnx.ModelProto()
        try:
            model.ParseFromString(bytes(src))
        except Exception as e:  # protobuf's DecodeError
            raise OnnxLoadError(f"the bytes given are not an ONNX model ({e})") from None
        resolve_external_data(model, None, "model")
        return model, model.graph.name or "model"
    path = Path(os.fspath(src))
    if not path.is_file():
        raise OnnxLoadError(f"{path}: no such ONNX file")
    data = path.read_bytes()
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:
        raise OnnxLoadError(f"{path}: not an ONNX model: the protobuf does not parse ({e})") from None
    if not model.graph.node and not model.graph.output:
        raise OnnxLoadError(f"{path}: not an ONNX model (no graph in the file)")
    resolve_external_data(model, path.parent, path.name)
    return model, path.name
