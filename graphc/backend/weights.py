"""Weights files: safetensors written for a compiled model, and read back.

The file is a plain safetensors file (other tools read it): tensors are stored contiguously in order of
decreasing element size, then name, so each one is aligned to its element size, and the JSON header is
padded with spaces so that the data area starts at a multiple of 64 bytes. ``__metadata__`` carries
``graphc.model`` (the library's name) and ``graphc.fingerprint`` (sha256 of the printed optimised graph):
the library refuses a file whose metadata, names, dtypes or shapes do not match.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._dtype import from_numpy_dtype, from_safetensors_name, safetensors_name

DATA_ALIGN = 64


def _as_array(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "_concrete"):  # graphc.Tensor
        return x._concrete("weights")
    if type(x).__module__.startswith("torch"):
        from ..tensor import _torch_to_numpy

        return _torch_to_numpy(x)
    return np.asarray(x)


def safetensors_header(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> tuple[bytes, list[str]]:
    """The 8-byte length + padded JSON header, and the tensor names in data order."""
    order = sorted(tensors, key=lambda k: (-tensors[k].dtype.itemsize, k))
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    off = 0
    for k in order:
        a = tensors[k]
        nbytes = a.size * a.dtype.itemsize
        header[k] = {"dtype": safetensors_name(from_numpy_dtype(a.dtype)), "shape": list(a.shape),
                     "data_offsets": [off, off + nbytes]}
        off += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-(8 + len(text))) % DATA_ALIGN)
    return struct.pack("<Q", len(text)) + text, order


def safetensors_digest(tensors: Mapping[str, Any], metadata: Mapping[str, str]) -> str:
    """sha256 of the file write_safetensors would write, without writing it."""
    arrays = {k: np.asarray(_as_array(v), order="C") for k, v in tensors.items()}
    head, order = safetensors_header(arrays, metadata)
    h = hashlib.sha256(head)
    for k in order:
        if arrays[k].size:
            h.update(arrays[k].reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, str]) -> str:
    """Write a safetensors file atomically (a new inode: mappings of the old file stay valid), with the
    mode of a new file under the umask. Returns the file's sha256."""
    arrays = {k: np.asarray(_as_array(v), order="C") for k, v in tensors.items()}
    head, order = safetensors_header(arrays, metadata)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    # a unique temporary name, created like any new file (0666 less the umask; mkstemp would give 0600)
    tmp = str(path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            h.update(head)
            for k in order:
                a = arrays[k]
                if a.size:
                    raw = a.reshape(-1).view(np.uint8)
                    f.write(raw.data)
                    h.update(raw.data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return h.hexdigest()


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file into numpy arrays (memory-mapped, read-only) and its metadata."""
    path = Path(path)
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    if raw.size < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    n = struct.unpack("<Q", bytes(raw[:8]))[0]
    if 8 + n > raw.size:
        raise ValueError(f"{path}: header length {n} exceeds the file size")
    header = json.loads(bytes(raw[8:8 + n]))
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    base = 8 + n
    for k, spec in header.items():
        dt = from_safetensors_name(spec["dtype"]).np
        a, b = spec["data_offsets"]
        out[k] = raw[base + a:base + b].view(dt).reshape(spec["shape"])
    return out, meta


def weights_metadata(name: str, fingerprint: str) -> dict[str, str]:
    return {"graphc.fingerprint": fingerprint, "graphc.model": name}


def record_weights_file(directory: str | os.PathLike, filename: str) -> dict[str, Any] | None:
    """Make an export folder use the weights file ``filename`` (inside it) from now on: its manifest.json
    gets ``"weights_file": filename`` and lists the file (a re-export removes it). Called by graphc's
    writers of new weights (write_weights, CompiledModel.load_state_dict) for an embed-mode export, whose
    loaders (load_compiled, graphc run, main.c) then read the file instead of the weights baked into the
    library. Returns the new manifest (None: the folder has no readable manifest, nothing written)."""
    mpath = Path(directory) / "manifest.json"
    try:
        m = json.loads(mpath.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict):
        return None
    files = m.setdefault("files", {})
    listed = files.get("all")
    if isinstance(listed, list) and filename not in listed:
        files["all"] = sorted([*listed, filename])
    if m.get("weights_file") == filename and isinstance(listed, list) and filename in listed:
        return m
    m["weights_file"] = filename
    tmp = mpath.with_name(f".{mpath.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(m, indent=1) + "\n")
        os.replace(tmp, mpath)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return m
