"""graphc.save / graphc.load (safetensors written with json + numpy): round trips, interop with the
safetensors package and torch, and validation of corrupt files."""

from __future__ import annotations

import json
import os
import random
import re
import struct

import ml_dtypes
import numpy as np
import pytest

import graphc
from graphc import nn
from graphc import serialization as S

ALL_NP = [np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64, np.float16, ml_dtypes.bfloat16, np.float32,
          np.float64]


def _sample(dt, shape, seed=0):
    rng = np.random.default_rng(seed)
    if dt is np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.dtype(dt).kind in "iu":
        return rng.integers(0, 100, size=shape).astype(dt)
    return rng.standard_normal(shape).astype(dt)


def _header(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    return n, json.loads(raw[8:8 + n]), raw


# ------------------------------------------------------------------------------------- round trips
def test_round_trip_every_dtype_and_shape(tmp_path):
    tensors = {f"t_{np.dtype(dt).name}_{i}": _sample(dt, shape, i)
               for i, shape in enumerate([(), (0,), (3,), (2, 3), (2, 0, 4), (1, 2, 3, 2)]) for dt in ALL_NP}
    path = tmp_path / "all.safetensors"
    graphc.save({k: graphc.from_numpy(v) if v.ndim else v for k, v in tensors.items()}, path)
    loaded = graphc.load(path)
    assert list(loaded) == list(tensors)  # header order is the state_dict's order
    for k, v in tensors.items():
        t = loaded[k]
        assert isinstance(t, graphc.Tensor) and t.numpy().dtype == v.dtype and t.shape == v.shape
        assert np.array_equal(t.numpy(), v)
        assert t.numpy().flags.writeable and t.numpy().flags.aligned


def test_layout_alignment_and_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    S.save_file({"b": np.ones(3, np.uint8), "a": np.ones(5, np.float64), "c": np.ones(1, np.float16)}, path,
                metadata={"format": "pt", "note": "ünïcode"})
    n, header, raw = _header(path)
    assert (8 + n) % 64 == 0  # tensor data starts 64-byte aligned
    assert header["__metadata__"] == {"format": "pt", "note": "ünïcode"}
    assert S.load_metadata(path) == {"format": "pt", "note": "ünïcode"}
    # data is ordered by element size, so every tensor is naturally aligned
    offs = {k: header[k]["data_offsets"] for k in "abc"}
    assert offs == {"a": [0, 40], "c": [40, 42], "b": [42, 45]}
    assert len(raw) == 8 + n + 45


def test_non_contiguous_and_zero_dim(tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    view = base[::2, 1::2].T  # strided, transposed
    t = graphc.tensor(3.25)
    path = tmp_path / "nc.safetensors"
    graphc.save({"view": view, "scalar": t, "tview": graphc.from_numpy(base).t()}, path)
    out = S.load_file(path)
    assert np.array_equal(out["view"], view) and out["view"].flags.c_contiguous
    assert out["scalar"].shape == () and out["scalar"] == 3.25
    assert np.array_equal(out["tview"], base.T)


def test_empty_dict(tmp_path):
    path = tmp_path / "empty.safetensors"
    graphc.save({}, path)
    assert graphc.load(path) == {}
    assert S.load_metadata(path) is None
    import safetensors.numpy as sn

    assert sn.load_file(str(path)) == {}


def test_mmap_load_is_copy_on_write(tmp_path):
    path = tmp_path / "w.safetensors"
    S.save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "i": np.arange(3)}, path)
    out = graphc.load(path, mmap=True)
    assert np.array_equal(out["w"].numpy(), np.arange(6).reshape(2, 3))
    out["w"].numpy()[0, 0] = 100.0  # writes stay in memory
    assert S.load_file(path)["w"][0, 0] == 0.0


def test_map_location_records_device(tmp_path):
    path = tmp_path / "d.safetensors"
    graphc.save({"w": graphc.ones(2)}, path)
    assert graphc.load(path, map_location="cuda")["w"].device == graphc.device("cuda")
    assert graphc.load(path)["w"].device == graphc.device("cpu")


def test_save_rejects_non_tensors(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(TypeError, match="the value of key 'step' is a builtins.int; safetensors stores only tensors"):
        graphc.save({"w": graphc.ones(1), "step": 3}, path)
    with pytest.raises(TypeError, match="the value of key 'nested' is a builtins.dict"):
        graphc.save({"nested": {"a": graphc.ones(1)}}, path)
    with pytest.raises(TypeError, match="got Sequential; pass module.state_dict\\(\\)"):
        graphc.save(nn.Sequential(), path)
    with pytest.raises(TypeError, match="keys must be str"):
        graphc.save({1: graphc.ones(1)}, path)
    with pytest.raises(TypeError, match="dtype complex64"):
        graphc.save({"c": np.ones(2, np.complex64)}, path)
    with pytest.raises(TypeError, match="metadata must be a dict of str -> str"):
        graphc.save({"w": graphc.ones(1)}, path, metadata={"n": 1})
    with pytest.raises(ValueError, match="reserved"):
        graphc.save({"__metadata__": graphc.ones(1)}, path)
    assert not path.exists() and os.listdir(tmp_path) == []  # nothing half-written


def test_module_state_dict_round_trip(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Module(), nn.Module())
            self.w = nn.Parameter(graphc.randn(3, 4))
            self.register_buffer("count", graphc.tensor(5))

    a, b = Net(), Net()
    graphc.save(a.state_dict(), tmp_path / "net.safetensors")
    res = b.load_state_dict(graphc.load(tmp_path / "net.safetensors"))
    assert repr(res) == "<All keys matched successfully>"
    assert np.array_equal(a.w.numpy(), b.w.numpy()) and b.count.item() == 5


# ------------------------------------------------------------------------------------- interop
def test_interop_with_safetensors_numpy(tmp_path):
    sn = pytest.importorskip("safetensors.numpy")
    data = {f"x{i}": _sample(dt, (2, 3), i) for i, dt in enumerate(ALL_NP) if dt is not ml_dtypes.bfloat16}
    ours = tmp_path / "ours.safetensors"
    S.save_file(data, ours, metadata={"k": "v"})
    theirs_read = sn.load_file(str(ours))
    assert theirs_read.keys() == data.keys()
    for k, v in data.items():
        assert theirs_read[k].dtype == v.dtype and np.array_equal(theirs_read[k], v)
    theirs = tmp_path / "theirs.safetensors"
    sn.save_file(data, str(theirs), metadata={"k": "v"})
    back = S.load_file(theirs)
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in data.items())
    assert S.load_metadata(theirs) == {"k": "v"}


def test_interop_with_torch_modules_both_ways(tmp_path):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")

    def build(nn_, lib):
        class Net(nn_.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn_.Sequential(nn_.Module())
                self.w = nn_.Parameter(lib.zeros(4, 3))
                self.h = nn_.Parameter(lib.zeros(3, dtype=lib.bfloat16))
                self.register_buffer("n", lib.tensor(0))
                self.register_buffer("hbuf", lib.zeros(2, 2, dtype=lib.float16))

        return Net()

    g, t = build(nn, graphc), build(torch.nn, torch)
    g.w.numpy()[...] = np.arange(12).reshape(4, 3)
    g.h.numpy()[...] = np.array([1.5, -2.25, 3.0], dtype=ml_dtypes.bfloat16)
    g.n.fill_(7)
    g.hbuf.fill_(0.5)
    # graphc.save -> safetensors.torch -> torch module
    graphc.save(g.state_dict(), tmp_path / "g.safetensors")
    res = t.load_state_dict(st.load_file(str(tmp_path / "g.safetensors")))
    assert repr(res) == "<All keys matched successfully>"
    assert torch.equal(t.w.detach(), torch.arange(12.0).reshape(4, 3)) and t.n.item() == 7
    assert t.h.dtype == torch.bfloat16 and t.h.detach().float().tolist() == [1.5, -2.25, 3.0]
    # torch -> safetensors.torch.save_file -> graphc.load -> graphc module
    with torch.no_grad():
        t.w.mul_(2)
        t.h.add_(1)
    st.save_file(t.state_dict(), str(tmp_path / "t.safetensors"))
    g2 = build(nn, graphc)
    assert repr(g2.load_state_dict(graphc.load(tmp_path / "t.safetensors"))) == "<All keys matched successfully>"
    assert np.array_equal(g2.w.numpy(), t.w.detach().numpy())
    assert g2.h.numpy().astype(np.float32).tolist() == [2.5, -1.25, 4.0] and g2.n.item() == 7
    # graphc.save straight from torch tensors
    graphc.save(t.state_dict(), tmp_path / "t2.safetensors")
    back = st.load_file(str(tmp_path / "t2.safetensors"))
    assert all(torch.equal(back[k], v) for k, v in t.state_dict().items())


# ------------------------------------------------------------------------------------- validation
def _write(path, header_obj=None, data=b"", raw_header=None, length=None):
    hb = raw_header if raw_header is not None else json.dumps(header_obj).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb) if length is None else length) + hb + data)
    return path


def _err(path):
    with pytest.raises(ValueError) as e:
        graphc.load(path)
    msg = str(e.value)
    assert str(path) in msg
    return msg


F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("case, pattern", [
    (lambda p: p.write_bytes(b"\x01\x00"), r"has 2 bytes, fewer than the 8-byte header length at byte 0"),
    (lambda p: _write(p, {"a": F32}, b"\0" * 8, length=1000), r"header length at byte 0 says 1000 bytes.*past the end"),
    (lambda p: _write(p, raw_header=b'{"a": \xff}'), r"not valid UTF-8 at byte 14"),
    (lambda p: _write(p, raw_header=b'{"a": {"dtype": "F32",}}'), r"not valid JSON at byte 30"),
    (lambda p: _write(p, raw_header=b"[1, 2]"), r"is a JSON list, not an object"),
    (lambda p: _write(p, {"a": {"dtype": "F32", "shape": [2]}}), r"tensor 'a' \(header entry at byte 9\) lacks the "
                                                                  r"field\(s\) data_offsets"),
    (lambda p: _write(p, {"a": dict(F32, dtype="C64")}, b"\0" * 8),
     r"tensor 'a' .*unsupported safetensors dtype 'C64'"),
    (lambda p: _write(p, {"a": dict(F32, shape=[3])}, b"\0" * 8), r"shape \[3\] of F32 needs 12 bytes, but "
                                                                   r"data_offsets \[0, 8\] hold 8"),
    (lambda p: _write(p, {"a": dict(F32, shape=[-2])}, b"\0" * 8), r"shape must be a list of non-negative integers"),
    (lambda p: _write(p, {"a": dict(F32, data_offsets=[8, 0])}, b"\0" * 8), r"end before they begin"),
    (lambda p: _write(p, {"a": dict(F32, data_offsets=[0, 8.0])}, b"\0" * 8), r"data_offsets must be \[begin, end\]"),
    (lambda p: _write(p, {"a": F32, "b": dict(F32, data_offsets=[4, 12])}, b"\0" * 12),
     r"tensor 'b' \(file bytes \d+\.\.\d+\) overlaps tensor 'a'"),
    (lambda p: _write(p, {"a": dict(F32, data_offsets=[4, 12])}, b"\0" * 12), r"4 unused bytes at file byte \d+"),
    (lambda p: _write(p, {"a": F32}, b"\0" * 5), r"truncated: tensor 'a' needs file bytes \d+\.\.\d+, but the file "
                                                  r"ends at byte \d+"),
    (lambda p: _write(p, {"a": F32}, b"\0" * 12), r"4 bytes at file byte \d+ follow the last tensor's data"),
    (lambda p: _write(p, raw_header=b'{"a": 1, "a": 2}'), r"names tensor 'a' twice"),
    (lambda p: _write(p, {"__metadata__": {"k": 1}}), r"'__metadata__' .* must map str to str"),
    (lambda p: _write(p, {"a": 5}), r"tensor 'a' \(header entry at byte 9\) is a JSON int, not an object"),
    (lambda p: _write(p, {}, length=2**62), r"more than the 100000000-byte limit"),
])
def test_corrupt_files_raise_value_error_with_location(tmp_path, case, pattern):
    path = tmp_path / "bad.safetensors"
    case(path)
    msg = _err(path)
    assert re.search(pattern, msg), msg


def test_truncated_file_names_the_offset(tmp_path):
    path = tmp_path / "t.safetensors"
    S.save_file({"w": np.ones((4, 4), np.float32)}, path)
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    path.write_bytes(raw[:-10])
    msg = _err(path)
    assert f"needs file bytes {8 + n}..{8 + n + 64}, but the file ends at byte {len(raw) - 10}" in msg


def test_fuzzed_files_are_rejected_or_read_like_safetensors(tmp_path):
    """Mutate a valid file at random (fixed seed): graphc must raise ValueError (never another
    exception) exactly when the reference safetensors reader rejects the file, and agree on the data."""
    sn = pytest.importorskip("safetensors.numpy")
    base = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.arange(3), "h": np.ones(5, np.float16),
            "s": np.array(2.0), "e": np.zeros((0, 2), np.int8)}
    good = tmp_path / "good.safetensors"
    S.save_file(base, good, metadata={"a": "b"})
    raw = good.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    rng = random.Random(1234)
    path = tmp_path / "mut.safetensors"
    outcomes = {"ok": 0, "err": 0}
    for _ in range(1500):
        d = bytearray(raw)
        kind = rng.choice(["flip", "byte", "truncate", "length", "append", "data"])
        if kind == "flip":
            d[rng.randrange(8, 8 + n)] ^= 1 << rng.randrange(8)
        elif kind == "byte":
            d[rng.randrange(0, 8 + n)] = rng.randrange(256)
        elif kind == "truncate":
            d = d[:rng.randrange(len(d))]
        elif kind == "length":
            d[0:8] = struct.pack("<Q", rng.choice([0, 1, n - 1, n + 1, len(d), 2**63, rng.randrange(2**64)]))
        elif kind == "append":
            d += bytes(rng.randrange(1, 70))
        else:
            d[rng.randrange(8 + n, len(d))] = rng.randrange(256)
        path.write_bytes(bytes(d))
        try:
            ours = S.load_file(path)
        except ValueError as e:
            assert str(path) in str(e)
            ours = None
        try:
            theirs = sn.load(bytes(d))
        except Exception:  # noqa: BLE001 - the reference's own error types
            theirs = None
        assert (ours is None) == (theirs is None), (kind, ours is None)
        if kind == "data":
            assert ours is not None  # data bytes never make a file invalid
        if ours is not None:
            outcomes["ok"] += 1
            assert ours.keys() == theirs.keys()
            for k in ours:
                assert ours[k].dtype == theirs[k].dtype and ours[k].tobytes() == theirs[k].tobytes()
        else:
            outcomes["err"] += 1
    assert outcomes["ok"] > 100 and outcomes["err"] > 500


def test_save_honours_umask_and_missing_directory(tmp_path):
    old = os.umask(0o022)
    try:
        graphc.save({"w": graphc.ones(1)}, tmp_path / "p.safetensors")
    finally:
        os.umask(old)
    assert (tmp_path / "p.safetensors").stat().st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["p.safetensors"]  # no temporary left behind
    with pytest.raises(FileNotFoundError, match="does not exist"):
        graphc.save({"w": graphc.ones(1)}, tmp_path / "nope" / "p.safetensors")
