"""graphc.save / graphc.load: state_dicts in the safetensors format, written and read with json + numpy.

graphc never pickles. A file is::

    8 bytes   N, the header length (unsigned little-endian)
    N bytes   a JSON object {name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}
              with an optional "__metadata__": {str: str}; graphc pads it with spaces so that the
              tensor data starts 64-byte aligned from the start of the file
    the data  each tensor contiguous, little-endian, at [begin, end) counted from the end of the header

Files interoperate with the ``safetensors`` package in both directions. Reading validates every
field and raises ValueError naming the file and the byte offset or tensor name of the problem.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
import uuid
from collections.abc import Mapping
from typing import Any, BinaryIO, Union

import numpy as np

from . import _dtype as D
from ._device import as_device
from .tensor import Tensor, _torch_to_numpy

__all__ = ["save", "load", "save_file", "load_file", "load_metadata"]

PathLike = Union[str, "os.PathLike[str]"]

ALIGNMENT = 64  # tensor data starts at a multiple of this from the start of the file
MAX_HEADER_BYTES = 100_000_000  # the safetensors reference implementation's limit
_METADATA_KEY = "__metadata__"


# ------------------------------------------------------------------------------------------ writing
def _as_array(value: Any, key: str, what: str) -> np.ndarray:
    if isinstance(value, Tensor):
        return value._concrete(what)
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, np.generic):
        arr = np.asarray(value)
    else:
        arr = _torch_to_numpy(value)
        if arr is None:
            raise TypeError(
                f"{what}: the value of key {key!r} is a {type(value).__module__}.{type(value).__qualname__}; "
                "safetensors stores only tensors (graphc.Tensor, numpy array or torch.Tensor) and graphc never "
                "pickles other objects")
    if arr.dtype not in D._NP_TO_DTYPE:
        raise TypeError(f"{what}: the value of key {key!r} has dtype {arr.dtype}, which safetensors files from "
                        f"graphc do not hold (graphc dtypes: {', '.join(d.name for d in D.ALL_DTYPES)})")
    return arr


def _little_endian(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr, order="C")
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and sys.byteorder == "big"
                                       and arr.dtype.itemsize > 1):
        arr = arr.byteswap()
    return arr


def save_file(tensors: Mapping[str, Any], path: PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """Write ``{name: tensor}`` (graphc Tensors, numpy arrays or torch tensors) to a .safetensors file.

    Tensors keep the mapping's order in the header; their data is laid out by decreasing element
    size so that every tensor is naturally aligned. The file is written to a temporary name and
    renamed, so an interrupted save never leaves a half-written file under ``path``.
    """
    what = "graphc.save"
    if not isinstance(tensors, Mapping):
        hint = "; pass module.state_dict()" if hasattr(tensors, "state_dict") else ""
        raise TypeError(f"{what} writes a state_dict (a dict of str -> tensor), got {type(tensors).__name__}{hint}")
    if metadata is not None:
        if not isinstance(metadata, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                        for k, v in metadata.items()):
            raise TypeError(f"{what}: metadata must be a dict of str -> str, got {metadata!r}")
    arrays: list[tuple[str, np.ndarray]] = []
    for key, value in tensors.items():
        if not isinstance(key, str):
            raise TypeError(f"{what}: keys must be str, got {key!r} ({type(key).__name__})")
        if key == _METADATA_KEY:
            raise ValueError(f"{what}: {_METADATA_KEY!r} is reserved for the file's metadata and cannot name a tensor")
        arrays.append((key, _as_array(value, key, what)))
    # data order: larger elements first (stable), so each tensor starts at a multiple of its item size
    order = sorted(range(len(arrays)), key=lambda i: -arrays[i][1].dtype.itemsize)
    offsets: dict[int, tuple[int, int]] = {}
    pos = 0
    for i in order:
        n = arrays[i][1].nbytes
        offsets[i] = (pos, pos + n)
        pos += n
    header: dict[str, Any] = {}
    if metadata:
        header[_METADATA_KEY] = dict(metadata)
    for i, (key, arr) in enumerate(arrays):
        header[key] = {"dtype": D.safetensors_name(D.from_numpy_dtype(arr.dtype)), "shape": list(arr.shape),
                       "data_offsets": list(offsets[i])}
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * (-(8 + len(hbytes)) % ALIGNMENT)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{what}: the directory of {path!r} does not exist")
    # a fresh name in the same directory (open 'x' honours the umask, unlike mkstemp's 0600)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(struct.pack("<Q", len(hbytes)))
            f.write(hbytes)
            for i in order:
                arr = arrays[i][1]
                if arr.size:
                    f.write(memoryview(_little_endian(arr).reshape(-1).view(np.uint8)))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(obj: Mapping[str, Any], f: PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """Save a state_dict (``{name: tensor}``) to ``f`` in the safetensors format (never pickle).

    Values may be graphc Tensors, numpy arrays or torch tensors; anything else is a TypeError.
    ``metadata`` (str -> str) goes into the header's ``__metadata__``.
    """
    save_file(obj, f, metadata=metadata)


# ------------------------------------------------------------------------------------------ reading
class _Entry:
    __slots__ = ("name", "dtype", "shape", "begin", "end")

    def __init__(self, name: str, dtype: D.dtype, shape: tuple[int, ...], begin: int, end: int) -> None:
        self.name, self.dtype, self.shape, self.begin, self.end = name, dtype, shape, begin, end


def _bad(path: str, msg: str) -> ValueError:
    return ValueError(f"invalid safetensors file {path!r}: {msg}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


class _DuplicateKey(Exception):
    pass


def _is_uint(x: Any) -> bool:
    return type(x) is int and x >= 0


def _parse_header(path: str, f: BinaryIO, size: int) -> tuple[list[_Entry], dict[str, str] | None, int]:
    """Validate the header; returns the entries (file order), the metadata and the data start."""
    head = f.read(8)
    f.seek(0)
    kind = ("a zip archive" if head.startswith(b"PK\x03\x04") else
            "a pickle stream" if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
            else None)
    if kind is not None:
        raise ValueError(
            f"{path!r} is a torch.save pickle ({kind}), not a safetensors file; graphc never unpickles. "
            "Save a safetensors file with safetensors.torch.save_file(model.state_dict(), "
            "'model.safetensors') in PyTorch, or graphc.save(state_dict, 'model.safetensors')")
    if size < 8:
        raise _bad(path, f"the file has {size} bytes, fewer than the 8-byte header length at byte 0")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > MAX_HEADER_BYTES:
        raise _bad(path, f"the header length at byte 0 says {n} bytes, more than the {MAX_HEADER_BYTES}-byte limit")
    if 8 + n > size:
        raise _bad(path, f"the header length at byte 0 says {n} bytes, but the header would end at byte {8 + n}, "
                         f"past the end of the {size}-byte file")
    raw = f.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad(path, f"the header is not valid UTF-8 at byte {8 + e.start}") from None
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as e:
        raise _bad(path, f"the header (bytes 8..{8 + n}) names tensor {e.args[0]!r} twice") from None
    except json.JSONDecodeError as e:
        byte = 8 + len(text[:e.pos].encode("utf-8"))
        raise _bad(path, f"the header is not valid JSON at byte {byte}: {e.msg}") from None
    if not isinstance(header, dict):
        raise _bad(path, f"the header (bytes 8..{8 + n}) is a JSON {type(header).__name__}, not an object")
    data_start = 8 + n
    metadata = header.pop(_METADATA_KEY, None)
    if metadata is not None and (not isinstance(metadata, dict)
                                 or not all(isinstance(v, str) for v in metadata.values())):
        raise _bad(path, f"'{_METADATA_KEY}' in the header (bytes 8..{data_start}) must map str to str")
    entries: list[_Entry] = []
    for name, info in header.items():
        where = f"tensor {name!r} {_entry_location(text, name, data_start)}"
        if not isinstance(info, dict):
            raise _bad(path, f"{where} is a JSON {type(info).__name__}, not an object")
        missing = [k for k in ("dtype", "shape", "data_offsets") if k not in info]
        if missing:
            raise _bad(path, f"{where} lacks the field(s) {', '.join(missing)}")
        dt_name, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dt_name, str):
            raise _bad(path, f"{where}: dtype must be a string, got {dt_name!r}")
        try:
            dt = D.from_safetensors_name(dt_name)
        except ValueError as e:
            raise _bad(path, f"{where}: {e}") from None
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise _bad(path, f"{where}: shape must be a list of non-negative integers, got {shape!r}")
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_uint(o) for o in offs)):
            raise _bad(path, f"{where}: data_offsets must be [begin, end] with non-negative integers, got {offs!r}")
        begin, end = offs
        if end < begin:
            raise _bad(path, f"{where}: data_offsets [{begin}, {end}] end before they begin")
        nbytes = math.prod(shape) * dt.itemsize
        if end - begin != nbytes:
            raise _bad(path, f"{where}: shape {shape} of {dt_name} needs {nbytes} bytes, but data_offsets "
                             f"[{begin}, {end}] hold {end - begin}")
        entries.append(_Entry(name, dt, tuple(shape), begin, end))
    data_len = size - data_start
    expected = 0
    prev: _Entry | None = None
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        if e.begin < expected:
            raise _bad(path, f"tensor {e.name!r} (file bytes {data_start + e.begin}..{data_start + e.end}) overlaps "
                             f"tensor {prev.name!r} (file bytes {data_start + prev.begin}..{data_start + prev.end})")
        if e.begin > expected:
            raise _bad(path, f"{e.begin - expected} unused bytes at file byte {data_start + expected}, before "
                             f"tensor {e.name!r} (safetensors data must be contiguous)")
        if e.end > data_len:
            raise _bad(path, f"truncated: tensor {e.name!r} needs file bytes {data_start + e.begin}.."
                             f"{data_start + e.end}, but the file ends at byte {size}")
        expected = e.end
        prev = e
    if expected != data_len:
        raise _bad(path, f"{data_len - expected} bytes at file byte {data_start + expected} follow the last tensor's "
                         "data and belong to no tensor")
    return entries, metadata, data_start


def _entry_location(text: str, name: str, data_start: int) -> str:
    """'(header entry at byte B)': where the name's key starts in the file, or the header's range."""
    for quoted in (json.dumps(name), json.dumps(name, ensure_ascii=False)):
        i = text.find(quoted + ":")
        if i < 0:
            i = text.find(quoted + " :")
        if i >= 0:
            return f"(header entry at byte {8 + len(text[:i].encode('utf-8'))})"
    return f"(in the header, bytes 8..{data_start})"


def _open_checked(path: PathLike) -> tuple[str, BinaryIO, int]:
    p = os.fspath(path)
    f = open(p, "rb")  # noqa: SIM115 - closed by the callers
    size = os.fstat(f.fileno()).st_size
    return p, f, size


def load_file(path: PathLike, *, mmap: bool = False) -> dict[str, np.ndarray]:
    """Read a .safetensors file into ``{name: numpy array}`` in the header's order.

    Every array owns its memory, aligned and writable. With ``mmap=True`` the arrays are
    copy-on-write views of the mapped file (nothing is read until used; writes stay in memory).
    """
    p, f, size = _open_checked(path)
    with f:
        entries, _metadata, data_start = _parse_header(p, f, size)
        out: dict[str, np.ndarray] = {}
        if mmap:
            mm = np.memmap(p, mode="c", dtype=np.uint8) if size else np.zeros(0, np.uint8)
            for e in entries:
                arr = mm[data_start + e.begin:data_start + e.end].view(e.dtype.np).reshape(e.shape)
                out[e.name] = _native(arr)
            return out
        for e in entries:
            arr = np.empty(e.shape, dtype=e.dtype.np)
            if arr.nbytes:
                f.seek(data_start + e.begin)
                got = f.readinto(memoryview(arr.reshape(-1).view(np.uint8)))
                if got != arr.nbytes:  # the file shrank since it was validated
                    raise _bad(p, f"truncated: tensor {e.name!r} at file byte {data_start + e.begin} could be read "
                                  f"only {got} of {arr.nbytes} bytes")
            out[e.name] = _native(arr)
        return out


def _native(arr: np.ndarray) -> np.ndarray:
    if sys.byteorder == "big" and arr.dtype.itemsize > 1:
        return arr.byteswap()
    return arr


def load_metadata(path: PathLike) -> dict[str, str] | None:
    """The ``__metadata__`` of a .safetensors file (None if it has none); validates the header."""
    p, f, size = _open_checked(path)
    with f:
        return _parse_header(p, f, size)[1]


def load(f: PathLike, map_location: Any = None, *, mmap: bool = False, weights_only: bool = True) -> dict[str, Tensor]:
    """Load a state_dict saved by :func:`save` (or any .safetensors file) as ``{name: graphc.Tensor}``.

    ``map_location`` records a device on the tensors; ``mmap=True`` maps the file instead of reading
    it. ``weights_only`` is accepted for PyTorch compatibility: graphc only ever loads tensors.
    """
    dev = as_device(map_location) if map_location is not None and not callable(map_location) else None
    return {k: Tensor._wrap(v, dev) for k, v in load_file(f, mmap=mmap).items()}
