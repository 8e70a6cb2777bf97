"""Module.state_dict / load_state_dict: PyTorch's key order and results, graphc's all-or-nothing loads."""

from __future__ import annotations

import re
from collections import OrderedDict

import numpy as np
import pytest

import graphc
from graphc import nn
from graphc.nn import Module, Parameter


def _classes(nn_, lib):
    class Lin(nn_.Module):
        def __init__(self, i=4, o=3):
            super().__init__()
            self.weight = nn_.Parameter(lib.arange(o * i, dtype=lib.float32).reshape(o, i))
            self.bias = nn_.Parameter(lib.zeros(o))

        def forward(self, x):
            return x

    class Norm(nn_.Module):  # BatchNorm's state: running stats and an int64 0-d counter
        def __init__(self, c=3):
            super().__init__()
            self.weight = nn_.Parameter(lib.ones(c))
            self.bias = nn_.Parameter(lib.zeros(c))
            self.register_buffer("running_mean", lib.zeros(c))
            self.register_buffer("running_var", lib.ones(c))
            self.register_buffer("num_batches_tracked", lib.tensor(0, dtype=lib.long))

    class Net(nn_.Module):
        def __init__(self):
            super().__init__()
            self.fc = Lin(4, 3)
            self.register_buffer("scale", lib.ones(1))
            self.register_buffer("cache", lib.zeros(2), persistent=False)
            self.gain = nn_.Parameter(lib.ones(2))
            self.norm = Norm(3)
            self.seq = nn_.Sequential(Lin(3, 3), Lin(3, 2))

    return Lin, Norm, Net


Lin, Norm, Net = _classes(nn, graphc)


def _snapshot(m):
    return {k: v.numpy().copy() for k, v in m.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------- state_dict
def test_state_dict_key_order():
    m = Net()
    # own parameters, then own persistent buffers, then children in registration order
    assert list(m.state_dict()) == [
        "gain", "scale", "fc.weight", "fc.bias", "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var",
        "norm.num_batches_tracked", "seq.0.weight", "seq.0.bias", "seq.1.weight", "seq.1.bias"]


def test_state_dict_order_matches_torch():
    torch = pytest.importorskip("torch")
    _, _, TNet = _classes(torch.nn, torch)
    assert list(Net().state_dict()) == list(TNet().state_dict())
    assert list(Net().state_dict(prefix="model.")) == list(TNet().state_dict(prefix="model."))
    bn = torch.nn.Sequential(torch.nn.BatchNorm1d(3))
    assert list(nn.Sequential(Norm()).state_dict()) == list(bn.state_dict())


def test_state_dict_values_share_memory_and_are_detached():
    m = Net()
    sd = m.state_dict()
    w = sd["fc.weight"]
    assert type(w) is graphc.Tensor and not w.requires_grad
    assert np.shares_memory(w.numpy(), m.fc.weight.numpy())
    w.numpy()[0, 0] = 42.0
    assert m.fc.weight.numpy()[0, 0] == 42.0
    kept = m.state_dict(keep_vars=True)
    assert kept["fc.weight"] is m.fc.weight and kept["scale"] is m.scale


def test_state_dict_shared_parameter_under_each_name_and_none_skipped():
    m = Net()
    m.seq[1].weight = m.seq[0].weight  # tied
    m.fc.bias = None
    sd = m.state_dict()
    assert "fc.bias" not in sd
    assert np.shares_memory(sd["seq.0.weight"].numpy(), sd["seq.1.weight"].numpy())
    assert len([n for n, _ in m.named_parameters()]) == len(sd) - 5  # buffers, and the tied one once


def test_state_dict_destination_prefix_metadata():
    m = Net()
    dest = OrderedDict()
    out = m.fc.state_dict(destination=dest, prefix="x.")
    assert out is dest and list(dest) == ["x.weight", "x.bias"]
    sd = m.state_dict()
    assert sd._metadata[""] == {"version": 1} and sd._metadata["seq.0"] == {"version": 1}


def test_state_dict_hooks():
    m = Net()
    calls = []
    m.fc.register_state_dict_pre_hook(lambda mod, prefix, keep_vars: calls.append(prefix))

    def post(mod, sd, prefix, meta):
        sd[prefix + "extra"] = graphc.ones(1)

    m.register_state_dict_post_hook(post)
    sd = m.state_dict()
    assert calls == ["fc."] and list(sd)[-1] == "extra"


class WithExtra(Module):
    def __init__(self):
        super().__init__()
        self.w = Parameter(graphc.ones(1))
        self.child = Lin(1, 1)
        self.note = {"step": 0}

    def get_extra_state(self):
        return dict(self.note)

    def set_extra_state(self, state):
        self.note = dict(state)


def test_extra_state_key_position_and_round_trip():
    m = WithExtra()
    m.note["step"] = 7
    sd = m.state_dict()
    assert list(sd) == ["w", "_extra_state", "child.weight", "child.bias"]
    assert sd["_extra_state"] == {"step": 7}
    other = WithExtra()
    assert repr(other.load_state_dict(sd)) == "<All keys matched successfully>"
    assert other.note == {"step": 7}
    del sd["_extra_state"]
    with pytest.raises(RuntimeError, match='Missing key\\(s\\) in state_dict: "_extra_state"'):
        WithExtra().load_state_dict(sd)
    # a module without extra state rejects the key
    with pytest.raises(RuntimeError, match='Unexpected key\\(s\\) in state_dict: "fc._extra_state"'):
        Net().load_state_dict({**Net().state_dict(), "fc._extra_state": 1})


def test_extra_state_matches_torch():
    torch = pytest.importorskip("torch")

    class TExtra(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))
            self.child = torch.nn.Linear(1, 1)

        def get_extra_state(self):
            return {"step": 0}

        def set_extra_state(self, state):
            pass

    assert list(WithExtra().state_dict()) == list(TExtra().state_dict())


# ------------------------------------------------------------------------------------- loading
def test_load_copies_in_place_and_casts():
    m = Net()
    w = m.fc.weight
    sd = {k: np.full(v.shape, 2, dtype=np.float64) for k, v in m.state_dict().items()}
    sd["norm.num_batches_tracked"] = np.array(5)
    res = m.load_state_dict(sd)
    assert res.missing_keys == [] and res.unexpected_keys == [] and repr(res) == "<All keys matched successfully>"
    assert str(res) == "<All keys matched successfully>"
    assert m.fc.weight is w and w.dtype is graphc.float32 and np.all(w.numpy() == 2)
    assert m.norm.num_batches_tracked.dtype is graphc.int64 and m.norm.num_batches_tracked.item() == 5
    assert not np.shares_memory(w.numpy(), sd["fc.weight"])  # copied, not aliased


def test_load_accepts_graphc_numpy_and_torch_values():
    src = Net()
    for p in src.parameters():
        p.numpy()[...] = np.random.default_rng(0).standard_normal(p.shape)
    ref = _snapshot(src)
    # graphc Tensors
    m = Net()
    m.load_state_dict(src.state_dict())
    assert _same(_snapshot(m), ref)
    # numpy arrays
    m = Net()
    m.load_state_dict({k: v.copy() for k, v in ref.items()})
    assert _same(_snapshot(m), ref)
    # torch tensors (bfloat16 too)
    torch = pytest.importorskip("torch")
    m = Net()
    m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ref.items()})
    assert _same(_snapshot(m), ref)
    lin = Lin(2, 2)
    lin.load_state_dict({"weight": torch.tensor([[1.5, 2.0], [3.0, -1.0]], dtype=torch.bfloat16),
                         "bias": torch.zeros(2, dtype=torch.float64)})
    assert lin.weight.numpy().tolist() == [[1.5, 2.0], [3.0, -1.0]] and lin.weight.dtype is graphc.float32


def test_load_torch_batchnorm_state():
    torch = pytest.importorskip("torch")
    bn = torch.nn.BatchNorm1d(3)
    bn.train()
    bn(torch.randn(8, 3))
    bn(torch.randn(8, 3))
    m = Norm(3)
    m.load_state_dict(bn.state_dict())
    assert m.num_batches_tracked.item() == 2 and m.num_batches_tracked.dtype is graphc.int64
    np.testing.assert_array_equal(m.running_mean.numpy(), bn.running_mean.numpy())


def test_strict_error_message_exact():
    class Tiny(Module):
        def __init__(self):
            super().__init__()
            self.a = Parameter(graphc.zeros(1))
            self.b = Parameter(graphc.zeros(1))
            self.fc = Lin(4, 4)

    m = Tiny()
    with pytest.raises(RuntimeError) as e:
        m.load_state_dict({"c": np.zeros(1), "fc.weight": np.zeros((3, 4)), "fc.bias": np.zeros(4)})
    assert str(e.value) == (
        'Error(s) in loading state_dict for Tiny:\n\tMissing key(s) in state_dict: "a", "b". \n\t'
        'Unexpected key(s) in state_dict: "c". \n\tsize mismatch for fc.weight: copying a param with shape '
        "[3, 4] from checkpoint, the shape in current model is [4, 4].")


def test_failed_load_leaves_module_unchanged():
    m = Net()
    before = _snapshot(m)
    good = {k: np.full(v.shape, 9, dtype=v.dtype) for k, v in before.items()}
    bad_shape = dict(good, **{"seq.1.bias": np.zeros(5, np.float32)})
    with pytest.raises(RuntimeError, match="size mismatch for seq.1.bias"):
        m.load_state_dict(bad_shape)
    assert _same(_snapshot(m), before)
    missing = {k: v for k, v in good.items() if k != "norm.running_var"}
    with pytest.raises(RuntimeError, match='Missing key\\(s\\) in state_dict: "norm.running_var"'):
        m.load_state_dict(missing)
    assert _same(_snapshot(m), before)
    with pytest.raises(RuntimeError, match="size mismatch"):
        m.load_state_dict(bad_shape, strict=False)  # shape errors raise in non-strict mode too
    assert _same(_snapshot(m), before)
    with pytest.raises(RuntimeError, match="expected a graphc Tensor, numpy array or torch.Tensor"):
        m.load_state_dict(dict(good, gain=[1.0, 2.0]))
    assert _same(_snapshot(m), before)
    # the same loads after fixing the problem write everything
    m.load_state_dict(good)
    assert _same(_snapshot(m), good)


def test_pytorch_would_have_partially_loaded():
    # documents the deliberate difference: torch copies matching keys before raising
    torch = pytest.importorskip("torch")
    _, _, TNet = _classes(torch.nn, torch)
    t = TNet()
    sd = {k: torch.full_like(v, 42) for k, v in t.state_dict().items()}
    sd["seq.1.bias"] = torch.zeros(5)
    with pytest.raises(RuntimeError):
        t.load_state_dict(sd)
    assert torch.all(t.fc.weight == 42)
    g = Net()
    before = _snapshot(g)
    with pytest.raises(RuntimeError):
        g.load_state_dict({k: v.numpy() for k, v in sd.items()})
    assert _same(_snapshot(g), before)


def test_non_strict_result_matches_torch():
    torch = pytest.importorskip("torch")
    _, _, TNet = _classes(torch.nn, torch)
    g, t = Net(), TNet()
    tsd = t.state_dict()
    partial = {k: v for k, v in tsd.items() if not k.startswith("seq.1")}
    partial["seq.7.weight"] = torch.zeros(1)
    partial["stray"] = torch.zeros(1)
    partial["fc.nested.x"] = torch.zeros(1)
    gres = g.load_state_dict(partial, strict=False)
    tres = t.load_state_dict(partial, strict=False)
    assert gres == tres
    assert repr(gres) == repr(tres) and type(gres).__name__ == type(tres).__name__
    assert gres.missing_keys == ["seq.1.weight", "seq.1.bias"]
    with pytest.raises(RuntimeError) as ge:
        Net().load_state_dict(partial)
    with pytest.raises(RuntimeError) as te:
        TNet().load_state_dict(partial)
    assert str(ge.value) == str(te.value)
    assert repr(Net().load_state_dict(tsd)) == repr(TNet().load_state_dict(tsd))


def test_size_mismatch_message_matches_torch():
    torch = pytest.importorskip("torch")
    _, _, TNet = _classes(torch.nn, torch)
    sd = dict(TNet().state_dict())
    sd["fc.weight"] = torch.zeros(2, 4)
    sd["norm.num_batches_tracked"] = torch.zeros(3, dtype=torch.long)
    with pytest.raises(RuntimeError) as ge:
        Net().load_state_dict(sd)
    with pytest.raises(RuntimeError) as te:
        TNet().load_state_dict(sd)
    assert str(ge.value) == re.sub(r"torch\.Size\((\[[^\]]*\])\)", r"\1", str(te.value))


def test_load_zero_dim_from_one_element():
    m = Norm()
    sd = {k: v.numpy().copy() for k, v in m.state_dict().items()}
    sd["num_batches_tracked"] = np.array([4])
    m.load_state_dict(sd)
    assert m.num_batches_tracked.shape == () and m.num_batches_tracked.item() == 4


def test_load_rejects_non_mapping_and_reports_none_slots():
    with pytest.raises(TypeError, match="Expected state_dict to be dict-like, got <class 'list'>"):
        Net().load_state_dict([("gain", np.ones(2))])
    m = Lin()
    m.bias = None
    with pytest.raises(RuntimeError, match='Unexpected key\\(s\\) in state_dict: "bias"'):
        m.load_state_dict({"weight": np.zeros((3, 4)), "bias": np.zeros(3)})


def test_non_persistent_buffer_not_expected():
    m = Net()
    sd = m.state_dict()
    assert "cache" not in sd
    with pytest.raises(RuntimeError, match='Unexpected key\\(s\\) in state_dict: "cache"'):
        m.load_state_dict({**sd, "cache": np.zeros(2)})


def test_load_read_only_parameter_is_an_error_not_a_partial_write():
    m = Lin(2, 2)
    ro = np.zeros((2, 2), np.float32)
    ro.flags.writeable = False
    m.weight = Parameter(graphc.Tensor._wrap(ro))
    before = m.bias.numpy().copy()
    with pytest.raises(RuntimeError, match="read-only"):
        m.load_state_dict({"weight": np.ones((2, 2)), "bias": np.ones(2)})
    assert np.array_equal(m.bias.numpy(), before)
    m.load_state_dict({"weight": np.ones((2, 2)), "bias": np.ones(2)}, assign=True)
    assert np.all(m.weight.numpy() == 1)


def test_assign_replaces_tensors_keeping_parameter_ness():
    m = Net()
    m.fc.weight.requires_grad_(False)
    old_w = m.fc.weight
    new_w = graphc.full((3, 4), 3.0, dtype=graphc.float64)
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    sd["fc.weight"] = new_w
    sd["norm.running_mean"] = np.full(3, 7.0, np.float32)
    sd["gain"] = Parameter(graphc.ones(2))
    m.load_state_dict(sd, assign=True)
    assert m.fc.weight is not old_w and isinstance(m.fc.weight, Parameter)
    assert m.fc.weight.dtype is graphc.float64  # assign keeps the state_dict's properties
    assert not m.fc.weight.requires_grad  # ... except requires_grad, which stays the module's
    assert np.shares_memory(m.fc.weight.numpy(), new_w.numpy())
    assert m.gain is sd["gain"] and m.gain.requires_grad
    assert type(m.norm.running_mean) is graphc.Tensor and m.norm.running_mean.numpy()[0] == 7.0
    assert "running_mean" in m.norm._buffers and "running_mean" not in m.norm._non_persistent_buffers_set


def test_assign_matches_torch_parameter_types():
    torch = pytest.importorskip("torch")
    _, _, TNet = _classes(torch.nn, torch)
    g, t = Net(), TNet()
    g.load_state_dict({k: v.clone() for k, v in g.state_dict().items()}, assign=True)
    t.load_state_dict({k: v.clone() for k, v in t.state_dict().items()}, assign=True)
    assert [n for n, _ in g.named_parameters()] == [n for n, _ in t.named_parameters()]
    assert [n for n, _ in g.named_buffers()] == [n for n, _ in t.named_buffers()]


def test_load_state_dict_hooks_and_override_point():
    class Versioned(Module):
        _version = 2

        def __init__(self):
            super().__init__()
            self.register_buffer("count", graphc.tensor(0))
            self.w = Parameter(graphc.zeros(2))

        def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                                  unexpected_keys, error_msgs):
            # BatchNorm's pattern: checkpoints older than version 2 lack the counter
            if (local_metadata.get("version") or 0) < 2 and prefix + "count" not in state_dict:
                state_dict[prefix + "count"] = graphc.tensor(0)
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                          unexpected_keys, error_msgs)

    outer = nn.Sequential(Versioned())
    outer.load_state_dict({"0.w": np.ones(2)})  # old checkpoint: no metadata, no count
    assert np.all(outer[0].w.numpy() == 1)
    new_sd = outer.state_dict()
    assert new_sd._metadata["0"]["version"] == 2
    del new_sd["0.count"]
    with pytest.raises(RuntimeError, match='Missing key\\(s\\) in state_dict: "0.count"'):
        outer.load_state_dict(new_sd)

    # post-hooks may clear the incompatible keys, which lets a strict load pass
    m = Lin()

    def forgive(module, keys):
        keys.missing_keys.clear()

    m.register_load_state_dict_post_hook(forgive)
    res = m.load_state_dict({"weight": np.ones((3, 4))})
    assert res.missing_keys == [] and np.all(m.weight.numpy() == 1)
    # pre-hooks see (and may edit) the module's slice of the state_dict
    seen = []
    n = Lin()
    n.register_load_state_dict_pre_hook(lambda mod, sd, prefix, *rest: seen.append(sorted(sd)))
    nn.Sequential(n).load_state_dict({"0.weight": np.ones((3, 4)), "0.bias": np.ones(3)})
    assert seen == [["0.bias", "0.weight"]]


def test_deferred_write_via_defer_load():
    class Custom(Module):
        def __init__(self):
            super().__init__()
            self.value = 0
            self.p = Parameter(graphc.zeros(1))

        def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                                  unexpected_keys, error_msgs):
            v = state_dict.pop(prefix + "custom", None)
            if v is not None:
                self._defer_load(local_metadata, lambda: setattr(self, "value", int(v)))
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                          unexpected_keys, error_msgs)

    m = nn.Sequential(Custom(), Lin())
    with pytest.raises(RuntimeError):
        m.load_state_dict({"0.custom": 5, "0.p": np.ones(1)})  # 1.weight/1.bias missing
    assert m[0].value == 0 and m[0].p.item() == 0
    m.load_state_dict({"0.custom": 5, "0.p": np.ones(1)}, strict=False)
    assert m[0].value == 5 and m[0].p.item() == 1


def test_round_trip_into_torch_module():
    torch = pytest.importorskip("torch")
    _, _, TNet = _classes(torch.nn, torch)
    g = Net()
    for i, p in enumerate(g.parameters()):
        p.numpy()[...] = i + 0.5
    g.norm.num_batches_tracked.fill_(3)
    t = TNet()
    res = t.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in g.state_dict().items()})
    assert repr(res) == "<All keys matched successfully>"
    for (name, gp), (tname, tp) in zip(g.named_parameters(), t.named_parameters()):
        assert name == tname and np.array_equal(gp.numpy(), tp.detach().numpy())
    assert t.norm.num_batches_tracked.item() == 3
