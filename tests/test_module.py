"""graphc.nn.Module, Parameter, Buffer and the containers, checked against PyTorch's behaviour.

The side-by-side tests build the same toy modules from graphc.nn and torch.nn (``_classes``) and
compare names, orders, reprs and exceptions.
"""

from __future__ import annotations

import copy
import re
import sys
from collections import OrderedDict

import numpy as np
import pytest

import graphc
from graphc import nn
from graphc.nn import Buffer, Module, Parameter


# ------------------------------------------------------------------------------------- toy modules
def _classes(nn_, lib):
    """Leaf / Ident / Net built from either graphc.nn (lib=graphc) or torch.nn (lib=torch)."""

    class Leaf(nn_.Module):
        def __init__(self, n=3):
            super().__init__()
            self.weight = nn_.Parameter(lib.ones(n, 2))
            self.bias = nn_.Parameter(lib.zeros(n))
            self.register_buffer("running", lib.zeros(n))
            self.register_buffer("scratch", lib.zeros(1), persistent=False)

        def extra_repr(self):
            return f"n={self.weight.shape[0]}"

        def forward(self, x):
            return x

    class Ident(nn_.Module):
        def forward(self, x):
            return x

    class Net(nn_.Module):
        def __init__(self):
            super().__init__()
            self.a = Leaf(3)
            self.body = nn_.Sequential(Leaf(2), Ident(), nn_.ModuleList([Leaf(1), Leaf(1)]))
            self.heads = nn_.ModuleDict({"x": Leaf(4), "y": Ident()})
            self.plist = nn_.ParameterList([lib.ones(2), lib.zeros(3)])
            self.pdict = nn_.ParameterDict({"q": lib.ones(1), "p": lib.ones(2)})
            self.scale = nn_.Parameter(lib.ones(1))
            self.register_buffer("steps", lib.tensor(0))
            self.tied = self.a  # the same module under a second name

        def forward(self, x):
            return x

    return Leaf, Ident, Net


Leaf, Ident, Net = _classes(nn, graphc)


def _torch():
    torch = pytest.importorskip("torch")
    return torch, _classes(torch.nn, torch)


def _norm(msg: str) -> str:
    """A torch message in graphc's spelling."""
    msg = re.sub(r"torch\.Size\((\[[^\]]*\])\)", r"\1", msg)
    return msg.replace("torch.", "graphc.").replace("torch ", "graphc ")


def _outcome(fn):
    try:
        r = fn()
    except Exception as e:  # noqa: BLE001 - the test compares the exception
        return type(e).__name__, _norm(str(e))
    return "ok", r


# ------------------------------------------------------------------------------------- Parameter
def test_parameter_shares_memory_and_is_a_tensor():
    t = graphc.zeros(2, 3)
    p = Parameter(t)
    assert isinstance(p, graphc.Tensor) and isinstance(p, Parameter)
    assert p.requires_grad and not Parameter(t, requires_grad=False).requires_grad
    p.numpy()[0, 0] = 5.0
    assert t.numpy()[0, 0] == 5.0  # one storage
    assert p.shape == (2, 3) and p.dtype is graphc.float32
    empty = Parameter()
    assert empty.shape == (0,) and empty.dtype is graphc.float32
    assert type(p + 1) is graphc.Tensor and type(p.detach()) is graphc.Tensor


def test_parameter_repr_matches_torch():
    assert repr(Parameter(graphc.ones(2))) == "Parameter containing:\ntensor([1., 1.], requires_grad=True)"
    torch = pytest.importorskip("torch")
    assert repr(Parameter(graphc.ones(2, 2))) == repr(torch.nn.Parameter(torch.ones(2, 2)))
    assert repr(Parameter(graphc.ones(3), requires_grad=False)) == repr(
        torch.nn.Parameter(torch.ones(3), requires_grad=False))


def test_parameter_deepcopy_copies_data():
    p = Parameter(graphc.ones(2), requires_grad=False)
    q = copy.deepcopy(p)
    assert type(q) is Parameter and q is not p and not q.requires_grad
    q.numpy()[0] = 7
    assert p.numpy()[0] == 1


def test_buffer_flags_and_registration():
    b = Buffer(graphc.zeros(3), persistent=False)
    assert isinstance(b, Buffer) and isinstance(b, graphc.Tensor) and not isinstance(graphc.zeros(3), Buffer)
    m = Module()
    m.stats = b
    m.kept = Buffer(graphc.ones(1))
    assert "stats" in m._buffers and "stats" in m._non_persistent_buffers_set
    assert list(m.state_dict()) == ["kept"]


# ------------------------------------------------------------------------------------- registration
def test_assignment_routes_parameters_modules_buffers():
    m = Module()
    w = Parameter(graphc.ones(2))
    m.w = w
    m.sub = Ident()
    m.register_buffer("buf", graphc.zeros(2))
    m.plain = graphc.zeros(1)  # a plain tensor attribute is not state
    assert m._parameters == {"w": w} and list(m._modules) == ["sub"] and list(m._buffers) == ["buf"]
    assert "plain" in m.__dict__ and "w" not in m.__dict__
    assert m.w is w and m.sub is m._modules["sub"] and m.buf is m._buffers["buf"]
    # a tensor assigned to a buffer name replaces the buffer
    new = graphc.ones(2)
    m.buf = new
    assert m._buffers["buf"] is new
    # None keeps the slot
    m.w = None
    m.sub = None
    m.buf = None
    assert m._parameters == {"w": None} and m._modules == {"sub": None} and m._buffers == {"buf": None}
    assert m.w is None and list(m.parameters()) == [] and list(m.state_dict()) == []
    # a Parameter assigned over a module name moves the name to _parameters
    m.sub = Parameter(graphc.ones(1))
    assert "sub" in m._parameters and "sub" not in m._modules


def test_assignment_type_errors():
    m = Leaf()
    with pytest.raises(TypeError, match=re.escape(
            "cannot assign 'graphc.FloatTensor' as parameter 'weight' (graphc.nn.Parameter or None expected)")):
        m.weight = graphc.zeros(3, 2)
    m.child = Ident()
    with pytest.raises(TypeError, match=re.escape(
            "cannot assign 'int' as child module 'child' (graphc.nn.Module or None expected)")):
        m.child = 3
    with pytest.raises(TypeError, match=re.escape("cannot assign 'str' as buffer 'running'")):
        m.running = "x"


def test_register_name_checks():
    m = Leaf()
    cases = [
        (lambda: m.register_parameter("a.b", None), 'parameter name can\'t contain "."'),
        (lambda: m.register_parameter("", None), 'parameter name can\'t be empty string ""'),
        (lambda: m.register_buffer("a.b", None), 'buffer name can\'t contain "."'),
        (lambda: m.register_buffer("", None), 'buffer name can\'t be empty string ""'),
        (lambda: m.register_buffer("forward", None), "attribute 'forward' already exists"),
        (lambda: m.register_buffer("weight", graphc.zeros(1)), "attribute 'weight' already exists"),
        (lambda: m.register_parameter("running", None), "attribute 'running' already exists"),
        (lambda: m.add_module("running", Ident()), "attribute 'running' already exists"),
        (lambda: m.add_module("x.y", Ident()), 'module name can\'t contain ".", got: x.y'),
        (lambda: m.add_module("", Ident()), 'module name can\'t be empty string ""'),
    ]
    for call, message in cases:
        with pytest.raises(KeyError) as e:
            call()
        assert e.value.args[0] == message
    with pytest.raises(TypeError, match="parameter name should be a string. Got int"):
        m.register_parameter(1, None)
    with pytest.raises(TypeError, match="graphc.FloatTensor is not a Module subclass"):
        m.add_module("t", graphc.zeros(1))
    with pytest.raises(TypeError, match=re.escape("cannot assign 'graphc.FloatTensor' object to parameter 'p' "
                                                  "(graphc.nn.Parameter or None required)")):
        m.register_parameter("p", graphc.zeros(1))
    with pytest.raises(TypeError, match=re.escape("cannot assign 'list' object to buffer 'b'")):
        m.register_buffer("b", [1, 2])
    m.register_module("extra", Ident())
    assert m.extra is m._modules["extra"]


def test_registration_before_init():
    class Bad(Module):
        def __init__(self):
            self.w = Parameter(graphc.ones(1))

    with pytest.raises(AttributeError, match="cannot assign parameters before Module.__init__"):
        Bad()

    class Bad2(Module):
        def __init__(self):
            self.m = Ident()

    with pytest.raises(AttributeError, match="cannot assign module before Module.__init__"):
        Bad2()


def test_init_rejects_arguments_like_torch():
    with pytest.raises(TypeError, match=re.escape("Module.__init__() takes 1 positional argument but 2 were given")):
        Module(3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'x'"):
        Module(x=1)


def test_getattr_and_delattr():
    m = Leaf()
    with pytest.raises(AttributeError, match="'Leaf' object has no attribute 'nothing'"):
        _ = m.nothing
    del m.weight
    del m.running
    m.child = Ident()
    del m.child
    assert "weight" not in m._parameters and "running" not in m._buffers and "child" not in m._modules
    del m.scratch
    assert "scratch" not in m._non_persistent_buffers_set
    m.plain = 1
    del m.plain
    assert not hasattr(m, "plain")


def test_dir_lists_state_names():
    m = Net()
    d = dir(m)
    assert {"a", "body", "scale", "steps", "forward", "training"} <= set(d)
    assert d == sorted(d)
    assert "0" not in dir(m.body) and "0" not in dir(m.plist)


def test_forward_missing_raises_torch_message():
    msg = 'Module [Module] is missing the required "forward" function'
    with pytest.raises(NotImplementedError, match=re.escape(msg)):
        Module()(1)
    with pytest.raises(NotImplementedError, match=re.escape('Module [ModuleList] is missing the required "forward"')):
        nn.ModuleList()(1)


def test_call_passes_args_and_kwargs():
    class Add(Module):
        def forward(self, x, y=0, *, z=0):
            return x + y + z

    assert Add()(1, 2, z=3) == 6


# ------------------------------------------------------------------------------------- submodule paths
def test_get_submodule_parameter_buffer():
    m = Net()
    assert m.get_submodule("") is m
    assert m.get_submodule("body.2.1") is m.body[2][1]
    assert m.get_parameter("body.0.weight") is m.body[0].weight
    assert m.get_parameter("scale") is m.scale
    assert m.get_buffer("a.running") is m.a.running
    with pytest.raises(AttributeError, match="Sequential has no attribute `7`"):
        m.get_submodule("body.7")
    with pytest.raises(AttributeError, match="`weight` is not an nn.Module"):
        m.get_submodule("a.weight.x")
    with pytest.raises(AttributeError, match="`running` is not an nn.Parameter"):
        m.get_parameter("a.running")
    with pytest.raises(AttributeError, match="`weight` is not a buffer"):
        m.get_buffer("a.weight")
    with pytest.raises(AttributeError, match="Leaf has no attribute `nope`"):
        m.get_buffer("a.nope")


def test_set_submodule():
    m = Net()
    new = Ident()
    m.set_submodule("body.0", new)
    assert m.body[0] is new
    m.set_submodule("heads.z", Ident())  # non-strict: adds
    assert "z" in m.heads
    with pytest.raises(AttributeError, match="ModuleDict has no attribute `w`"):
        m.set_submodule("heads.w", Ident(), strict=True)
    with pytest.raises(ValueError, match="Cannot set the submodule without a target name"):
        m.set_submodule("", Ident())
    with pytest.raises(ValueError, match="is not an nn.Module"):
        m.set_submodule("a", 3)
    with pytest.raises(AttributeError, match="`weight` is not an nn.Module"):
        m.set_submodule("a.weight", Ident())


def test_submodule_errors_match_torch():
    torch, (_, _, TNet) = _torch()
    g, t = Net(), TNet()
    calls = [
        lambda m: m.get_submodule("body.9"),
        lambda m: m.get_submodule("a.bias.x"),
        lambda m: m.get_parameter("a.running"),
        lambda m: m.get_parameter("a.zzz"),
        lambda m: m.get_buffer("a.weight"),
        lambda m: m.set_submodule("a.weight", type(m.body[1])()),
        lambda m: m.set_submodule("heads.q", type(m.body[1])(), strict=True),
        lambda m: m.register_buffer("a", None),
        lambda m: m.register_parameter("", None),
        lambda m: m.add_module("x.y", None),
        lambda m: m.add_module(3, None),
        lambda m: setattr(m, "scale", 3),
        lambda m: setattr(m, "a", 3),
        lambda m: m.train("yes"),
        lambda m: m.missing,
    ]
    for i, call in enumerate(calls):
        gk, gm = _outcome(lambda: call(g))  # noqa: B023
        tk, tm = _outcome(lambda: call(t))  # noqa: B023
        assert gk == tk != "ok", (i, gk, tk)
        assert gm == tm, (i, gm, tm)


# ------------------------------------------------------------------------------------- traversal
def test_named_members_order_duplicates_prefix_recurse():
    m = Net()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["scale", "a.weight", "a.bias", "body.0.weight", "body.0.bias", "body.2.0.weight",
                     "body.2.0.bias", "body.2.1.weight", "body.2.1.bias", "heads.x.weight", "heads.x.bias",
                     "plist.0", "plist.1", "pdict.p", "pdict.q"]
    dup = [n for n, _ in m.named_parameters(remove_duplicate=False)]
    assert dup[-2:] == ["tied.weight", "tied.bias"] and len(dup) == len(names) + 2
    assert [n for n, _ in m.named_parameters(prefix="net", recurse=False)] == ["net.scale"]
    assert [n for n, _ in m.a.named_buffers(prefix="a")] == ["a.running", "a.scratch"]
    assert [n for n, _ in m.named_buffers(recurse=False)] == ["steps"]
    assert len(list(m.parameters())) == len(names)
    assert all(isinstance(p, Parameter) for p in m.parameters())
    assert list(m.buffers())[0] is m.steps


def test_named_modules_and_children():
    m = Net()
    assert [n for n, _ in m.named_modules()] == ["", "a", "body", "body.0", "body.1", "body.2", "body.2.0",
                                                  "body.2.1", "heads", "heads.x", "heads.y", "plist", "pdict"]
    assert [n for n, _ in m.named_modules(remove_duplicate=False)][-1] == "tied"
    assert [n for n, _ in m.named_modules(prefix="root")][:2] == ["root", "root.a"]
    assert [n for n, _ in m.named_children()] == ["a", "body", "heads", "plist", "pdict"]  # tied: same module
    assert list(m.children())[0] is m.a
    assert len(list(m.modules())) == 13
    memo = {m.a}
    assert "a" not in [n for n, _ in m.named_modules(memo=memo)]


def test_traversal_matches_torch():
    torch, (_, _, TNet) = _torch()
    g, t = Net(), TNet()
    for fn in (lambda m: [n for n, _ in m.named_parameters()],
               lambda m: [n for n, _ in m.named_parameters(remove_duplicate=False)],
               lambda m: [n for n, _ in m.named_parameters(prefix="p", recurse=False)],
               lambda m: [n for n, _ in m.named_buffers()],
               lambda m: [n for n, _ in m.named_buffers(remove_duplicate=False)],
               lambda m: [n for n, _ in m.named_modules()],
               lambda m: [n for n, _ in m.named_modules(remove_duplicate=False, prefix="x")],
               lambda m: [n for n, _ in m.named_children()],
               lambda m: list(m.state_dict()),
               lambda m: list(m.state_dict(prefix="pre.")),
               lambda m: [type(x).__name__ for x in m.modules()],
               lambda m: sorted(set(dir(m)) & {"a", "body", "scale", "steps", "tied", "forward"})):
        assert fn(g) == fn(t)


def test_train_eval_propagate():
    m = Net()
    assert m.training and m.body[2][0].training
    assert m.eval() is m
    assert not any(x.training for x in m.modules())
    m.body.train()
    assert m.body[2][1].training and not m.a.training and not m.training
    with pytest.raises(ValueError, match="training mode is expected to be boolean"):
        m.train(1)


def test_apply_visits_children_first():
    m = Net()
    seen = []
    assert m.apply(lambda x: seen.append(x)) is m
    torch, (_, _, TNet) = _torch()
    tseen = []
    TNet().apply(lambda x: tseen.append(x))
    assert [type(x).__name__ for x in seen] == [type(x).__name__ for x in tseen]
    assert seen[-1] is m and seen.index(m.body[2][0]) < seen.index(m.body[2]) < seen.index(m.body)


def test_zero_grad_and_requires_grad():
    m = Leaf()
    m.weight.grad = graphc.ones(3, 2)
    m.zero_grad(set_to_none=False)
    assert np.all(m.weight.grad.numpy() == 0)
    m.zero_grad()
    assert m.weight.grad is None
    assert m.requires_grad_(False) is m
    assert not any(p.requires_grad for p in m.parameters())


# ------------------------------------------------------------------------------------- conversion
def test_to_double_keeps_parameter_identity():
    m = Net()
    w = m.a.weight
    steps = m.steps
    assert m.double() is m
    assert m.a.weight is w and isinstance(w, Parameter) and w.dtype is graphc.float64 and w.requires_grad
    assert m.steps.dtype is graphc.int64 and m.steps is steps  # integer buffers keep their dtype
    assert m.a.running.dtype is graphc.float64
    m.half()
    assert w.dtype is graphc.float16
    m.to(graphc.float32)
    assert w.dtype is graphc.float32 and m.plist[0].dtype is graphc.float32
    m.bfloat16()
    assert w.dtype is graphc.bfloat16
    m.float()
    assert w.dtype is graphc.float32
    m.to(dtype=graphc.float64, device="cpu")
    assert w.dtype is graphc.float64
    m.to(graphc.zeros(1, dtype=graphc.float16))
    assert w.dtype is graphc.float16
    with pytest.raises(TypeError, match="nn.Module.to only accepts floating point or complex dtypes, but got "
                                        "desired dtype=graphc.int64"):
        m.to(graphc.int64)


def test_to_converts_grads_and_devices():
    m = Leaf()
    m.weight.grad = graphc.ones(3, 2)
    m.double()
    assert m.weight.grad.dtype is graphc.float64
    m.cuda()
    assert m.weight.device == graphc.device("cuda") and m.running.device.type == "cuda"
    m.cuda(1)
    assert m.weight.device == graphc.device("cuda:1")
    m.to("cuda:0", graphc.float32)
    assert m.weight.device == graphc.device("cuda:0") and m.weight.dtype is graphc.float32
    m.cpu()
    assert m.weight.device == graphc.device("cpu") and m.bias.device.type == "cpu"
    m.type(graphc.float64)
    assert m.bias.dtype is graphc.float64


def test_deepcopy_module():
    m = Net()
    m.a.weight.numpy()[...] = 3.0
    c = copy.deepcopy(m)
    assert c.a is not m.a and c.tied is c.a  # sharing preserved within the copy
    assert isinstance(c.a.weight, Parameter) and c.a.weight is not m.a.weight
    assert np.all(c.a.weight.numpy() == 3.0)
    c.a.weight.numpy()[...] = 0.0
    assert np.all(m.a.weight.numpy() == 3.0)
    assert list(c.state_dict()) == list(m.state_dict())
    assert "scratch" in c.a._non_persistent_buffers_set


# ------------------------------------------------------------------------------------- hooks
def test_forward_hooks():
    m = Ident()
    log = []
    h1 = m.register_forward_pre_hook(lambda mod, args: (args[0] + 1,))
    h2 = m.register_forward_hook(lambda mod, args, out: out * 10)
    h3 = m.register_forward_pre_hook(lambda mod, args, kwargs: log.append(("kw", kwargs)), with_kwargs=True)
    h4 = m.register_forward_hook(lambda mod, args, out: log.append("first"), prepend=True)
    assert m(1) == 20
    assert log == [("kw", {}), "first"]
    for h in (h1, h2, h3, h4):
        h.remove()
    assert m(1) == 1 and not m._forward_hooks and not m._forward_pre_hooks_with_kwargs


def test_forward_hook_always_call_on_error():
    class Boom(Module):
        def forward(self, x):
            raise ValueError("boom")

    m = Boom()
    seen = []
    m.register_forward_hook(lambda mod, args, out: seen.append(out), always_call=True)
    with pytest.raises(ValueError, match="boom"):
        m(1)
    assert seen == [None]


def test_global_forward_hooks():
    seen = []
    with nn.register_module_forward_pre_hook(lambda mod, args: seen.append(type(mod).__name__)):
        nn.Sequential(Ident(), Ident())(1)
    nn.Sequential(Ident())(1)
    assert seen == ["Sequential", "Ident", "Ident"]


# ------------------------------------------------------------------------------------- tracing hook
class _RecordingTracer:
    def __init__(self):
        self.calls = []

    def call_module(self, module, forward, args, kwargs):
        self.calls.append((module, args, kwargs))
        return ("traced", forward(*args, **kwargs))


def test_call_hands_forward_to_active_tracer():
    active = sys.modules["graphc.tensor"]._ACTIVE  # the list graphc.trace pushes its Tracer onto
    tracer = _RecordingTracer()
    m = nn.Sequential(Ident())
    active.append(tracer)
    try:
        out = m(5)
        assert out == ("traced", ("traced", 5))
        assert [c[0] for c in tracer.calls] == [m, m[0]]
        assert tracer.calls[0][1:] == ((5,), {})
        # with hooks, the pre-hook's new args reach the tracer
        m.register_forward_pre_hook(lambda mod, args: (args[0] * 2,))
        tracer.calls.clear()
        m(5)
        assert tracer.calls[0][1] == (10,)
    finally:
        active.remove(tracer)
    assert m(5) == 10  # no tracer: plain forward


def test_trace_records_module_scopes():
    from graphc.trace import trace

    class Scale(Module):
        def __init__(self):
            super().__init__()
            self.w = Parameter(graphc.full((3,), 2.0))

        def forward(self, x):
            return x * self.w

    class Top(Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Scale(), Scale()])
            self.head = nn.Sequential(OrderedDict(scale=Scale()))

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return self.head(x)

    top = Top()
    g = trace(top, (graphc.ones(2, 3),))
    text = str(g)
    for name in ("@blocks.0.w", "@blocks.1.w", "@head.scale.w"):
        assert name in text
    scopes = [n.scope for n in g.nodes]
    assert scopes == ["blocks.0", "blocks.1", "head.scale"]
    assert top.training  # restored after the eval-mode trace


# ------------------------------------------------------------------------------------- repr
def test_repr_tree():
    m = Net()
    expected = """Net(
  (a): Leaf(n=3)
  (body): Sequential(
    (0): Leaf(n=2)
    (1): Ident()
    (2): ModuleList(
      (0-1): 2 x Leaf(n=1)
    )
  )
  (heads): ModuleDict(
    (x): Leaf(n=4)
    (y): Ident()
  )
  (plist): ParameterList(
      (0): Parameter containing: [graphc.float32 of size 2]
      (1): Parameter containing: [graphc.float32 of size 3]
  )
  (pdict): ParameterDict(
      (p): Parameter containing: [graphc.FloatTensor of size 2]
      (q): Parameter containing: [graphc.FloatTensor of size 1]
  )
  (tied): Leaf(n=3)
)"""
    assert repr(m) == expected


def test_repr_matches_torch():
    torch, (TLeaf, TIdent, TNet) = _torch()
    assert repr(Net()) == _norm(repr(TNet()))

    def multi(base):
        class Multi(base):
            def extra_repr(self):
                return "line one\nline two"

        return Multi

    Multi, TMulti = multi(Module), multi(torch.nn.Module)

    for g, t in [(Multi(), TMulti()), (nn.ModuleList(), torch.nn.ModuleList()),
                 (nn.Sequential(), torch.nn.Sequential()),
                 (nn.ModuleList([Leaf(1), Leaf(2), Leaf(2), Ident()]),
                  torch.nn.ModuleList([TLeaf(1), TLeaf(2), TLeaf(2), TIdent()])),
                 (nn.Sequential(nn.Sequential(Multi())), torch.nn.Sequential(torch.nn.Sequential(TMulti())))]:
        assert repr(g) == _norm(repr(t))


# ------------------------------------------------------------------------------------- containers
def test_sequential_api():
    a, b, c = Ident(), Leaf(1), Ident()
    s = nn.Sequential(a, b, c)
    assert len(s) == 3 and s[0] is a and s[-1] is c and list(s) == [a, b, c]
    sl = s[1:]
    assert isinstance(sl, nn.Sequential) and list(sl._modules) == ["1", "2"] and sl[0] is b
    with pytest.raises(IndexError, match="index 3 is out of range"):
        s[3]
    d = Ident()
    s[1] = d
    assert s[1] is d
    s.append(b)
    assert s[3] is b and list(s._modules) == ["0", "1", "2", "3"]
    s.insert(0, Leaf(2))
    assert s[1] is a and len(s) == 5
    s.insert(-1, Ident())
    assert s[-1] is b and len(s) == 6
    with pytest.raises(IndexError, match="Index out of range: 9"):
        s.insert(9, Ident())
    assert s.pop(0).weight.shape == (2, 2)
    assert list(s._modules) == [str(i) for i in range(5)]
    del s[1:3]
    assert len(s) == 3 and list(s._modules) == ["0", "1", "2"]
    s.extend([Ident(), Ident()])
    assert len(s) == 5
    both = nn.Sequential(a) + nn.Sequential(c)
    assert list(both) == [a, c]
    with pytest.raises(ValueError, match="add operator supports only objects of Sequential class"):
        nn.Sequential() + [a]
    s2 = nn.Sequential(a)
    s2 += nn.Sequential(c)
    assert list(s2) == [a, c]
    assert list(nn.Sequential(a) * 2) == [a, a]


def test_sequential_ordered_dict_and_forward():
    class AddOne(Module):
        def forward(self, x):
            return x + 1

    s = nn.Sequential(OrderedDict([("first", AddOne()), ("second", AddOne())]))
    assert list(s._modules) == ["first", "second"] and s.first is s[0]
    assert s(1) == 3
    assert s[1:]._modules.keys() == {"second"}


def test_modulelist_api():
    a, b, c = Ident(), Ident(), Leaf(1)
    ml = nn.ModuleList([a, b])
    ml.append(c)
    assert len(ml) == 3 and ml[-1] is c and list(ml) == [a, b, c]
    assert isinstance(ml[:2], nn.ModuleList) and list(ml[:2]) == [a, b]
    ml.insert(1, Leaf(2))
    assert ml[2] is b and len(ml) == 4
    ml += [Ident()]
    assert len(ml) == 5
    ml.extend([Ident()])
    assert len(ml) == 6
    del ml[0]
    assert list(ml._modules) == [str(i) for i in range(5)]
    assert ml.pop(-1) is not None and len(ml) == 4
    ml[0] = a
    assert ml[0] is a
    assert len(ml + nn.ModuleList([a])) == 5
    with pytest.raises(IndexError, match="index 10 is out of range"):
        ml[10]
    with pytest.raises(TypeError, match="ModuleList.extend should be called with an iterable, but got int"):
        ml.extend(3)
    with pytest.raises(TypeError, match="is not a Module subclass"):
        ml.append(3)


def test_moduledict_api():
    md = nn.ModuleDict({"b": Ident(), "a": Leaf(1)})
    assert list(md) == ["b", "a"] and list(md.keys()) == ["b", "a"]  # insertion order kept
    assert "a" in md and "z" not in md and len(md) == 2
    md.update([("c", Ident())])
    md["d"] = Ident()
    assert list(md.keys()) == ["b", "a", "c", "d"]
    assert [k for k, _ in md.items()] == list(md.keys()) and len(list(md.values())) == 4
    popped = md.pop("a")
    assert isinstance(popped, Leaf) and "a" not in md
    del md["b"]
    assert list(md) == ["c", "d"]
    md.clear()
    assert len(md) == 0
    with pytest.raises(ValueError, match="has length 3; 2 is required"):
        md.update([("a", Ident(), 1)])
    with pytest.raises(TypeError, match="ModuleDict.update should be called with an iterable"):
        md.update(3)


def test_parameterlist_and_dict():
    pl = nn.ParameterList([graphc.zeros(2)])
    pl.append(graphc.ones(3))
    pl.extend([Parameter(graphc.ones(1))])
    assert len(pl) == 3 and all(isinstance(p, Parameter) for p in pl)
    assert list(pl.state_dict()) == ["0", "1", "2"]
    assert isinstance(pl[1:], nn.ParameterList) and len(pl[1:]) == 2
    pl[0] = graphc.full((2,), 5.0)
    assert isinstance(pl[0], Parameter) and pl[0].numpy()[0] == 5
    with pytest.raises(TypeError, match="ParameterList.extend should be called with an iterable"):
        pl.extend(graphc.ones(2))
    with pytest.raises(RuntimeError, match="ParameterList should not be called"):
        pl()
    pd = nn.ParameterDict({"b": graphc.ones(1), "a": graphc.zeros(2)})
    assert list(pd) == ["a", "b"]  # a plain dict is inserted in sorted order, as in PyTorch
    pd["c"] = graphc.ones(3)
    assert isinstance(pd["c"], Parameter) and "c" in pd and len(pd) == 3
    assert list(pd.state_dict()) == ["a", "b", "c"]
    assert pd.get("zz") is None and pd.pop("a").shape == (2,)
    assert pd.popitem()[0] == "c" and list(pd.keys()) == ["b"]
    assert pd.setdefault("d", graphc.ones(1)) is pd["d"]
    merged = pd | nn.ParameterDict(OrderedDict(e=graphc.ones(1)))
    assert list(merged) == ["b", "d", "e"] and merged["b"] is pd["b"]
    pd.clear()
    assert len(pd) == 0
    with pytest.raises(TypeError, match="not a string"):
        pd[1] = graphc.ones(1)


def test_container_state_dict_layout_matches_torch():
    torch, (TLeaf, TIdent, _) = _torch()

    def build(nn_, Leaf_, Ident_, lib):
        class Outer(nn_.Module):
            def __init__(self):
                super().__init__()
                self.layers = nn_.Sequential(Leaf_(1), Ident_(), Leaf_(2))
                self.blocks = nn_.ModuleList([Leaf_(1)])
                self.params = nn_.ParameterList([lib.ones(1), lib.ones(2)])
                self.named = nn_.ParameterDict(OrderedDict(k=lib.ones(1)))
                self.heads = nn_.ModuleDict(OrderedDict(z=Leaf_(1), a=Leaf_(1)))

        return Outer()

    g = build(nn, Leaf, Ident, graphc)
    t = build(torch.nn, TLeaf, TIdent, torch)
    keys = list(g.state_dict())
    assert keys == list(t.state_dict())
    assert keys[:6] == ["layers.0.weight", "layers.0.bias", "layers.0.running", "layers.2.weight", "layers.2.bias",
                        "layers.2.running"]
    assert "params.0" in keys and "named.k" in keys and keys[-1] == "heads.a.running"


# ------------------------------------------------------------------------------------- nn.init
def test_init_fans_and_gains_match_torch():
    torch = pytest.importorskip("torch")
    for shape in [(3, 4), (8, 2, 3), (6, 4, 3, 3), (2, 0)]:
        assert nn.init._calculate_fan_in_and_fan_out(graphc.zeros(*shape)) == \
            torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(*shape))
    for args in [("linear",), ("conv2d",), ("sigmoid",), ("tanh",), ("relu",), ("leaky_relu",), ("leaky_relu", 0.2),
                 ("leaky_relu", 5**0.5), ("selu",)]:
        assert nn.init.calculate_gain(*args) == pytest.approx(torch.nn.init.calculate_gain(*args))
    for bad in [("gelu",), ("leaky_relu", True)]:
        gk, gm = _outcome(lambda: nn.init.calculate_gain(*bad))  # noqa: B023
        tk, tm = _outcome(lambda: torch.nn.init.calculate_gain(*bad))  # noqa: B023
        assert (gk, gm) == (tk, tm) and gk == "ValueError"
    gk, gm = _outcome(lambda: nn.init.xavier_uniform_(graphc.zeros(3)))
    tk, tm = _outcome(lambda: torch.nn.init.xavier_uniform_(torch.zeros(3)))
    assert (gk, gm) == (tk, tm) and gk == "ValueError"


def test_init_distributions_bounds_and_seeding():
    w = graphc.zeros(64, 32)
    graphc.manual_seed(0)
    nn.init.kaiming_uniform_(w, a=5**0.5)
    first = w.numpy().copy()
    bound = 1 / np.sqrt(32)  # nn.Linear's default: gain sqrt(2/(1+5)) * sqrt(3/fan_in)
    assert np.abs(first).max() <= bound and np.abs(first).max() > 0.9 * bound
    graphc.manual_seed(0)
    nn.init.kaiming_uniform_(w, a=5**0.5)
    assert np.array_equal(w.numpy(), first)  # graphc.manual_seed makes init reproducible
    g = graphc.Generator().manual_seed(3)
    nn.init.xavier_uniform_(w, gain=2.0, generator=g)
    a = 2.0 * np.sqrt(6.0 / 96)
    assert np.abs(w.numpy()).max() <= a and np.abs(w.numpy()).max() > 0.9 * a
    nn.init.xavier_normal_(w)
    assert w.numpy().std() == pytest.approx(np.sqrt(2.0 / 96), rel=0.1)
    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert w.numpy().std() == pytest.approx(np.sqrt(2.0 / 64), rel=0.1)
    nn.init.normal_(w, 3.0, 0.5)
    assert w.numpy().mean() == pytest.approx(3.0, abs=0.05)
    nn.init.uniform_(w, -1, 2)
    assert w.numpy().min() >= -1 and w.numpy().max() <= 2
    for std, a_, b_ in [(0.02, -0.04, 0.04), (1.0, -2.0, 2.0), (1.0, 0.5, 0.6)]:
        nn.init.trunc_normal_(w, std=std, a=a_, b=b_)
        assert w.numpy().min() >= a_ and w.numpy().max() <= b_ and len(np.unique(w.numpy())) > 100
    nn.init.trunc_normal_(w, std=0.02)  # timm's default (a, b) = (-2, 2) is 100 std wide: plain normal
    assert w.numpy().std() == pytest.approx(0.02, rel=0.1)
    nn.init.constant_(w, 0.25)
    assert np.all(w.numpy() == 0.25)
    nn.init.zeros_(w)
    assert not w.numpy().any()
    nn.init.ones_(w)
    assert np.all(w.numpy() == 1)
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        nn.init.kaiming_uniform_(w, mode="fan_avg")


def test_init_structured_and_parameters():
    p = Parameter(graphc.zeros(3, 5))
    assert nn.init.eye_(p) is p and np.array_equal(p.numpy(), np.eye(3, 5))
    conv = graphc.zeros(4, 2, 3, 3)
    nn.init.dirac_(conv, groups=2)
    assert conv.numpy()[0, 0, 1, 1] == 1 and conv.numpy()[2, 0, 1, 1] == 1 and conv.numpy().sum() == 4
    q = graphc.zeros(4, 6)
    nn.init.orthogonal_(q, gain=2.0)
    np.testing.assert_allclose(q.numpy() @ q.numpy().T, 4 * np.eye(4), atol=1e-5)
    s = graphc.zeros(10, 4)
    nn.init.sparse_(s, 0.3)
    assert all((s.numpy()[:, c] == 0).sum() >= 3 for c in range(4))
    with pytest.warns(UserWarning, match="zero-element"):
        nn.init.kaiming_uniform_(graphc.zeros(0, 3))
