"""graphc.Tensor, dtype, device and Size against PyTorch (when installed) and numpy."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import ShapeError

rng = np.random.default_rng(0)


def arr(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# ----------------------------------------------------------------------------------------- dtypes
def test_dtype_objects():
    assert repr(graphc.float32) == "graphc.float32"
    assert graphc.float is graphc.float32 and graphc.long is graphc.int64 and graphc.half is graphc.float16
    assert graphc.double is graphc.float64
    assert graphc.float32.itemsize == 4 and graphc.bfloat16.itemsize == 2 and graphc.bool.itemsize == 1
    assert graphc.float16.is_floating_point and graphc.bfloat16.is_floating_point
    assert not graphc.int64.is_floating_point
    assert graphc.int8.np == np.int8
    assert graphc.promote_types(graphc.int64, graphc.float16) is graphc.float16
    assert graphc.promote_types(graphc.uint8, graphc.int8) is graphc.int16
    assert graphc.promote_types(graphc.bfloat16, graphc.float16) is graphc.float32


def test_dtype_names_and_errors():
    from graphc._dtype import as_dtype

    assert as_dtype("float32") is graphc.float32
    assert as_dtype("f32") is graphc.float32
    assert as_dtype("torch.int64") is graphc.int64
    assert as_dtype(np.float64) is graphc.float64
    with pytest.raises(ValueError, match="unknown dtype 'float33'"):
        as_dtype("float33")
    with pytest.raises(ValueError, match="unknown dtype"):
        graphc.zeros(2, dtype="complex64")


def test_dtype_matches_torch_promotion():
    torch = pytest.importorskip("torch")
    names = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64"]
    for a in names:
        for b in names:
            g = graphc.promote_types(getattr(graphc, a if a != "bool" else "bool"), getattr(graphc, b))
            t = torch.promote_types(getattr(torch, a), getattr(torch, b))
            assert str(t) == "torch." + g.name, (a, b)


# ----------------------------------------------------------------------------------------- devices
def test_device():
    d = graphc.device("cuda:1")
    assert d.type == "cuda" and d.index == 1
    assert graphc.device("cuda", 0) == graphc.device("cuda:0")
    assert graphc.device("cpu") == "cpu"
    assert repr(graphc.device("cpu")) == "device(type='cpu')"
    assert repr(graphc.device("cuda:0")) == "device(type='cuda', index=0)"
    assert str(graphc.device("cuda:0")) == "cuda:0"
    for bad in ("gpu", "cuda:x", "cuda:-1", "", "cpu:1:2"):
        with pytest.raises(ValueError):
            graphc.device(bad)


def test_device_matches_torch():
    torch = pytest.importorskip("torch")
    for s in ("cpu", "cuda", "cuda:0", "cuda:3"):
        assert repr(graphc.device(s)) == repr(torch.device(s))
        assert str(graphc.device(s)) == str(torch.device(s))
    with pytest.raises(RuntimeError):
        torch.device("gpu")
    with pytest.raises(ValueError):
        graphc.device("gpu")


# ----------------------------------------------------------------------------------------- creation
def test_inference_and_sharing():
    assert graphc.tensor([1.0, 2]).dtype is graphc.float32
    assert graphc.tensor([1, 2]).dtype is graphc.int64
    assert graphc.tensor([True]).dtype is graphc.bool
    assert graphc.tensor(3.5).shape == graphc.Size([])
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = graphc.from_numpy(a)
    t[0, 0] = 42
    assert a[0, 0] == 42
    assert t.numpy() is a
    c = graphc.tensor(a)
    c[0, 1] = -1
    assert a[0, 1] == 1  # tensor() copies
    s = graphc.as_tensor(a)
    assert s.data_ptr() == t.data_ptr()
    assert graphc.as_tensor(a, dtype=graphc.float64).data_ptr() != t.data_ptr()
    lt = graphc.LongTensor([1, 2])
    assert lt.dtype is graphc.int64 and lt.type() == "graphc.LongTensor"
    assert graphc.FloatTensor(2, 3).shape == (2, 3)
    assert graphc.zeros(2, 3).type() == "graphc.FloatTensor"


def test_creation_functions():
    assert graphc.zeros(2, 3).numpy().sum() == 0
    assert graphc.ones((2, 3), dtype=graphc.int32).dtype is graphc.int32
    assert graphc.full((2,), 7).dtype is graphc.int64
    assert graphc.full((2,), 7.0).dtype is graphc.float32
    assert graphc.arange(5).tolist() == [0, 1, 2, 3, 4]
    assert graphc.arange(0, 1, 0.25).dtype is graphc.float32
    x = graphc.randn(3, 4)
    assert graphc.zeros_like(x).shape == x.shape and graphc.ones_like(x).dtype is x.dtype
    graphc.manual_seed(3)
    a = graphc.rand(5)
    graphc.manual_seed(3)
    b = graphc.rand(5)
    assert graphc.equal(a, b)
    assert float(a.numpy().min()) >= 0 and float(a.numpy().max()) < 1
    with pytest.raises(RuntimeError, match="invalid size"):
        graphc.zeros(-1)


def test_tensor_metadata():
    t = graphc.randn(2, 3, 4)
    assert t.shape == graphc.Size([2, 3, 4]) and t.size() == (2, 3, 4) and t.size(-1) == 4
    assert t.ndim == 3 and t.dim() == 3 and t.numel() == 24
    assert repr(t.shape) == "graphc.Size([2, 3, 4])"
    assert t.device == graphc.device("cpu") and not t.requires_grad
    assert t.to(graphc.float64).dtype is graphc.float64
    assert t.long().dtype is graphc.int64 and t.float() is t
    assert t.to("cuda").device.type == "cuda"
    assert t.detach().data_ptr() == t.data_ptr()
    assert t.clone().data_ptr() != t.data_ptr()
    with pytest.raises(IndexError):
        t.size(3)


def test_repr_matches_torch():
    torch = pytest.importorskip("torch")
    cases = [[[1.0, 2.0], [3.0, 4.0]], [0.5, 1.0, 1.5], [1, 2, 3], [True, False], [1e-6, 1.0]]
    for c in cases:
        assert repr(graphc.tensor(c)) == repr(torch.tensor(c)), c
    assert repr(graphc.tensor([1, 2], dtype=graphc.int32)) == repr(torch.tensor([1, 2], dtype=torch.int32)).replace(
        "torch.", "graphc.")


# ----------------------------------------------------------------------------------------- math vs torch
UNARY = ["exp", "tanh", "sigmoid", "relu", "abs", "neg", "sin", "cos", "erf", "floor", "ceil", "sign"]


@pytest.mark.parametrize("name", UNARY)
def test_unary_vs_torch(name):
    torch = pytest.importorskip("torch")
    a = arr(3, 5)
    got = getattr(graphc.tensor(a), name)().numpy()
    want = getattr(torch.tensor(a), name)().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_positive_domain_unary_vs_torch():
    torch = pytest.importorskip("torch")
    a = np.abs(arr(4, 3)) + 0.1
    for name in ("log", "sqrt", "rsqrt", "reciprocal"):
        got = getattr(graphc.tensor(a), name)().numpy()
        want = getattr(torch.tensor(a), name)().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("shapes", [((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (5, 1)), ((), (2, 2))])
def test_binary_broadcast_vs_torch(shapes):
    torch = pytest.importorskip("torch")
    a, b = arr(*shapes[0]), arr(*shapes[1]) + 3.0
    ga, gb, ta, tb = graphc.tensor(a), graphc.tensor(b), torch.tensor(a), torch.tensor(b)
    for f in (lambda x, y: x + y, lambda x, y: x - y, lambda x, y: x * y, lambda x, y: x / y,
              lambda x, y: x.maximum(y), lambda x, y: (x > y), lambda x, y: x ** 2 + y,
              lambda x, y: 2.5 * x - y / 3, lambda x, y: x % y):
        np.testing.assert_allclose(np.asarray(f(ga, gb).numpy(), dtype=np.float64),
                                   np.asarray(f(ta, tb).numpy(), dtype=np.float64), rtol=1e-5, atol=1e-6)


def test_scalar_promotion_vs_torch():
    torch = pytest.importorskip("torch")
    cases = [
        (lambda m: m.tensor([1, 2]) * 2.5),
        (lambda m: m.tensor([1, 2]) / 2),
        (lambda m: m.tensor([1, 2]) + 1),
        (lambda m: m.tensor([True, False]) + 1),
        (lambda m: m.tensor([1.0], dtype=m.float16) * 3),
        (lambda m: m.tensor([1, 2], dtype=m.int32) + m.tensor(5)),
        (lambda m: m.tensor([1, 2], dtype=m.int32) + m.tensor([5])),
        (lambda m: m.tensor([7, -7]) // 2),
        (lambda m: m.tensor([1.0, 2.0]) > 1),
    ]
    for f in cases:
        g, t = f(graphc), f(torch)
        assert str(t.dtype) == "torch." + g.dtype.name
        np.testing.assert_allclose(g.numpy().astype(np.float64), t.numpy().astype(np.float64))


def test_reductions_vs_torch():
    torch = pytest.importorskip("torch")
    a = arr(3, 4, 5)
    g, t = graphc.tensor(a), torch.tensor(a)
    for f in (lambda x: x.sum(), lambda x: x.sum(1), lambda x: x.sum((0, 2), keepdim=True), lambda x: x.mean(-1),
              lambda x: x.amax(1), lambda x: x.max(), lambda x: x.max(2).values, lambda x: x.max(2).indices,
              lambda x: x.argmax(), lambda x: x.argmin(1, keepdim=True), lambda x: x.var(1), lambda x: x.std(),
              lambda x: x.softmax(1), lambda x: x.log_softmax(-1), lambda x: x.prod(0), lambda x: x.norm()):
        np.testing.assert_allclose(np.asarray(f(g).numpy(), np.float64), np.asarray(f(t).numpy(), np.float64),
                                   rtol=2e-5, atol=1e-5)
    assert graphc.tensor([1, 2, 3]).sum().dtype is graphc.int64
    with pytest.raises(RuntimeError, match="mean"):
        graphc.tensor([1, 2]).mean()


def test_shape_ops_vs_torch():
    torch = pytest.importorskip("torch")
    a = arr(2, 3, 4)
    g, t = graphc.tensor(a), torch.tensor(a)
    ops = [
        lambda x: x.reshape(4, -1), lambda x: x.view(-1), lambda x: x.permute(2, 0, 1), lambda x: x.transpose(0, 2),
        lambda x: x.flatten(1), lambda x: x.unsqueeze(1), lambda x: x[:, :1].squeeze(1), lambda x: x.squeeze(),
        lambda x: x[:, None, 1:3, ::2], lambda x: x[..., -1], lambda x: x[1], lambda x: x[-1, 2, 3],
        lambda x: x[:, [2, 0]], lambda x: x[:, 1:].expand(3, 2, 2, 4), lambda x: x.repeat(2, 1, 1),
        lambda x: x.mT, lambda x: x[0].t(), lambda x: x[0].T, lambda x: x.unflatten(2, (2, 2)),
        lambda x: x.narrow(2, 1, 2), lambda x: x.select(1, 2), lambda x: x[0].tril(), lambda x: x[0].triu(1),
        lambda x: x.masked_fill(x > 0, 0.5), lambda x: x.clamp(-0.5, 0.5), lambda x: x.clamp(min=0),
    ]
    for i, f in enumerate(ops):
        np.testing.assert_array_equal(f(g).numpy(), f(t).numpy(), err_msg=f"op {i}")
    for sp in ((g.split(2, dim=2), t.split(2, dim=2)), (g.chunk(3, 1), t.chunk(3, 1)),
               (g.split([1, 3], -1), t.split([1, 3], -1)), (g.unbind(1), t.unbind(1))):
        assert len(sp[0]) == len(sp[1])
        for x, y in zip(*sp):
            np.testing.assert_array_equal(x.numpy(), y.numpy())
    np.testing.assert_array_equal(graphc.cat([g, g], 1).numpy(), torch.cat([t, t], 1).numpy())
    np.testing.assert_array_equal(graphc.stack([g, g], -1).numpy(), torch.stack([t, t], -1).numpy())
    np.testing.assert_array_equal(graphc.where(g > 0, g, 0.0).numpy(), torch.where(t > 0, t, 0.0).numpy())


def test_matmul_vs_torch():
    torch = pytest.importorskip("torch")
    for sa, sb in [((3, 4), (4, 5)), ((4,), (4,)), ((4,), (4, 2)), ((2, 3, 4), (4,)), ((2, 1, 3, 4), (5, 4, 2))]:
        a, b = arr(*sa), arr(*sb)
        np.testing.assert_allclose((graphc.tensor(a) @ graphc.tensor(b)).numpy(),
                                   (torch.tensor(a) @ torch.tensor(b)).numpy(), rtol=1e-5, atol=1e-5)


def test_inplace_and_copy():
    t = graphc.zeros(2, 3)
    t.add_(1).mul_(3)
    assert t.numpy().tolist() == [[3, 3, 3], [3, 3, 3]]
    t.copy_(graphc.arange(3))
    assert t.numpy().tolist() == [[0, 1, 2], [0, 1, 2]]
    t += 1
    assert t.numpy()[0, 0] == 1
    t.zero_()
    assert t.numpy().sum() == 0
    t.fill_(2.5)
    assert t.numpy()[1, 1] == 2.5
    with pytest.raises(RuntimeError, match="broadcast"):
        t.copy_(graphc.zeros(4))


def test_scalar_conversions():
    t = graphc.tensor([2.5])
    assert float(t) == 2.5 and int(t) == 2 and t.item() == 2.5 and bool(t)
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(graphc.tensor([1.0, 2.0]))
    assert [1, 2, 3][graphc.tensor(1)] == 2
    assert graphc.tensor([[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]
    assert len(graphc.zeros(5, 2)) == 5
    assert graphc.equal(graphc.tensor([1, 2]), graphc.tensor([1, 2]))
    assert not graphc.equal(graphc.tensor([1, 2]), graphc.tensor([1, 3]))


def test_shape_errors_name_the_op():
    with pytest.raises(ShapeError, match=r"add: shapes \[3\] and \[4\] do not broadcast"):
        graphc.zeros(3) + graphc.zeros(4)
    with pytest.raises(ShapeError, match="matmul: inner dims differ"):
        graphc.zeros(2, 3) @ graphc.zeros(4, 5)
    with pytest.raises(RuntimeError, match="invalid for input of size 6"):
        graphc.zeros(2, 3).reshape(4, -1)
    with pytest.raises(IndexError, match="out of bounds"):
        graphc.zeros(2, 3)[5]
    with pytest.raises(IndexError, match="too many indices"):
        graphc.zeros(2)[0, 0]


def test_bfloat16_and_half():
    t = graphc.tensor([1.5, 2.25], dtype=graphc.bfloat16)
    assert t.dtype is graphc.bfloat16 and t.float().tolist() == [1.5, 2.25]
    h = graphc.tensor([1.0, 2.0]).half() * 2
    assert h.dtype is graphc.float16 and h.float().tolist() == [2.0, 4.0]


def test_never_pickles():
    import pickle

    with pytest.raises(TypeError, match="never unpickles"):
        pickle.dumps(graphc.zeros(2))
