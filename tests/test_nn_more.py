"""The nn layers and functions of issue 10 against PyTorch (when installed): interpolate (every mode,
align_corners, size and scale_factor), the padding modes, pixel (un)shuffle, unfold, adaptive max
pooling, 3-d convolution and pooling, instance norm, PReLU, the activations, the loss layers, RNN /
LSTM / GRU and the Transformer decoder. Each layer is built with the same arguments as its torch twin,
loads the twin's state_dict (same keys, same order), has the same repr and matches it in eval mode,
eagerly; two libraries (a vision stack and a sequence stack, dynamic batch) compare the compiled C
code with PyTorch, and the vision stack also runs through the CUDA emulation."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
import graphc.nn as gnn
import graphc.nn.functional as F
from graphc import ShapeError, UnsupportedError
from tests.shared_build import shared_cache_dir
from tests.test_layers import arr, compare, randomize, twins

rng = np.random.default_rng(10)
pytestmark = [pytest.mark.filterwarnings("ignore:Using padding='same'"),
              pytest.mark.filterwarnings("ignore:dropout option adds dropout")]


def _torch():
    return pytest.importorskip("torch")


def close(g, t, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(g.numpy(), t.detach().numpy(), rtol=rtol, atol=atol)


def G(a):  # noqa: N802
    return graphc.tensor(a)


def T(a):  # noqa: N802
    return _torch().from_numpy(np.ascontiguousarray(a))


# ------------------------------------------------------------------------------------ interpolate
INTERP = [((2, 3, 5, 7), {"scale_factor": 2}), ((2, 3, 5, 7), {"size": (8, 3)}),
          ((1, 2, 5, 7), {"scale_factor": (1.7, 0.6)}), ((1, 2, 6, 4), {"scale_factor": 1 / 3}),
          ((1, 2, 5), {"scale_factor": 3}), ((2, 2, 5), {"size": 15}), ((1, 2, 3, 4, 5), {"scale_factor": 2}),
          ((1, 1, 4, 4), {"size": 1}), ((1, 2, 1, 3), {"size": (3, 3)})]


@pytest.mark.parametrize("shape,kws", INTERP, ids=[f"{len(s) - 2}d-{i}" for i, (s, _) in enumerate(INTERP)])
def test_interpolate_every_mode(shape, kws):
    torch = _torch()
    x = arr(*shape)
    nsp = len(shape) - 2
    modes = ["nearest", "nearest-exact", *{1: ["linear"], 2: ["bilinear", "bicubic"], 3: ["trilinear"]}[nsp]]
    if nsp < 3:
        modes.append("area")
    for dt, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        xd = x.astype(dt)
        for mode in modes:
            for ac in ([None] if mode in ("nearest", "nearest-exact", "area") else [False, True]):
                for rsf in ([None, True] if "scale_factor" in kws else [None]):
                    kw = dict(kws, mode=mode, align_corners=ac, recompute_scale_factor=rsf)
                    close(F.interpolate(G(xd), **kw), torch.nn.functional.interpolate(T(xd), **kw), rtol=tol,
                          atol=tol)


def test_interpolate_errors():
    torch = _torch()
    xi = rng.integers(0, 255, size=(1, 2, 3, 5)).astype(np.uint8)  # the nearest modes take any dtype
    np.testing.assert_array_equal(F.interpolate(G(xi), scale_factor=(1.5, 0.7)).numpy(),
                                  torch.nn.functional.interpolate(T(xi), scale_factor=(1.5, 0.7)).numpy())
    with pytest.raises(ValueError, match="mode 'bilinear' expects a floating-point input, got uint8"):
        F.interpolate(G(xi), scale_factor=2, mode="bilinear")
    x = G(arr(1, 2, 4, 4))
    with pytest.raises(ValueError, match="align_corners option can only be set with the interpolating modes"):
        F.interpolate(x, scale_factor=2, align_corners=True)
    with pytest.raises(ValueError, match="only one of size or scale_factor should be defined"):
        F.interpolate(x, size=3, scale_factor=2)
    with pytest.raises(ValueError, match="either size or scale_factor should be defined"):
        F.interpolate(x)
    with pytest.raises(ValueError, match="got 4D input, but trilinear mode needs 5D input"):
        F.interpolate(x, scale_factor=2, mode="trilinear")
    with pytest.raises(ValueError, match=r"only 3D, 4D and 5D input tensors .* got a 2-d input"):
        F.interpolate(G(arr(2, 4)), scale_factor=2)
    with pytest.raises(UnsupportedError, match="antialias=True is not supported"):
        F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True)
    with pytest.raises(ValueError, match="mode 'cubic' is not one of"):
        F.interpolate(x, scale_factor=2, mode="cubic")


# ------------------------------------------------------------------------------------------- pad
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular", "constant"])
def test_pad_modes(mode):
    torch = _torch()
    x = arr(2, 3, 4, 5)
    for p in [(1, 2), (1, 2, 0, 1), (2, 1, 3, 0), (-1, 2, 1, 1), (3, 3, 1, 2)]:
        if len(p) == 2 and mode != "constant":
            xx = x[0]  # 1-d padding of a 3-d input
        else:
            xx = x
        close(F.pad(G(xx), p, mode), torch.nn.functional.pad(T(xx), p, mode))
    x3 = arr(2, 3, 4, 5, 6)
    close(F.pad(G(x3), (1, 2, 0, 3, 2, 1), mode), torch.nn.functional.pad(T(x3), (1, 2, 0, 3, 2, 1), mode))
    xi = rng.integers(-9, 9, size=(2, 3, 4)).astype(np.int64)
    np.testing.assert_array_equal(F.pad(G(xi), (2, 1), mode).numpy(), torch.nn.functional.pad(T(xi), (2, 1), mode))


def test_pad_errors():
    x = G(arr(1, 2, 3))
    with pytest.raises(ValueError, match=r"padding size should be less than the corresponding input dimension .* "
                                         r"padding \(3, 3\) at dimension 2"):
        F.pad(x, (3, 3), "reflect")
    with pytest.raises(ValueError, match="would wrap around more than once"):
        F.pad(x, (4, 0), "circular")
    with pytest.raises(ValueError, match=r"got 2 pad values for a 4-d input"):
        F.pad(G(arr(1, 2, 3, 4)), (1, 1), "replicate")
    with pytest.raises(ValueError, match="unrecognised padding mode 'mirror'"):
        F.pad(x, (1, 1), "mirror")


# --------------------------------------------------------------------- layout, pooling, 3-d, norms
def test_pixel_shuffle_unfold_adaptive_max_prelu():
    torch = _torch()
    tf = torch.nn.functional
    x = arr(2, 8, 3, 5)
    close(F.pixel_shuffle(G(x), 2), tf.pixel_shuffle(T(x), 2))
    close(F.pixel_shuffle(G(x[0]), 2), tf.pixel_shuffle(T(x[0]), 2))
    x5 = arr(2, 2, 9, 3, 4)
    close(F.pixel_shuffle(G(x5), 3), tf.pixel_shuffle(T(x5), 3))
    x = arr(2, 3, 6, 4)
    close(F.pixel_unshuffle(G(x), 2), tf.pixel_unshuffle(T(x), 2))
    for kw in [{"kernel_size": 3}, {"kernel_size": (2, 3), "dilation": (1, 2), "padding": 1, "stride": (2, 1)}]:
        close(F.unfold(G(x), **kw), tf.unfold(T(x), **kw))
        close(F.unfold(G(x[0]), **kw), tf.unfold(T(x[0]), **kw))
    x = arr(2, 3, 7, 6)
    for o in [1, 3, (2, 4), (None, 5), (7, 6), (5, 4)]:
        close(F.adaptive_max_pool2d(G(x), o), tf.adaptive_max_pool2d(T(x), o))
    close(F.adaptive_max_pool1d(G(x[0]), 4), tf.adaptive_max_pool1d(T(x[0]), 4))
    w = arr(3)
    close(F.prelu(G(x), G(w)), tf.prelu(T(x), T(w)))
    close(F.prelu(G(x), G(w[:1])), tf.prelu(T(x), T(w[:1])))
    with pytest.raises(ValueError, match="pixel_shuffle expects its input's 'channel' dimension to be divisible"):
        F.pixel_shuffle(G(arr(1, 6, 2, 2)), 2)
    with pytest.raises(ValueError, match=r"prelu: mismatch in the number of parameters \(2\)"):
        F.prelu(G(x), G(arr(2)))
    with pytest.raises(NotImplementedError, match="return_indices=True is not supported"):
        F.adaptive_max_pool2d(G(x), 2, return_indices=True)


@pytest.mark.parametrize("ws,kw", [((6, 4, 3, 3, 3), {}),
                                   ((6, 2, 2, 3, 1), {"stride": (2, 1, 2), "padding": (1, 0, 1), "dilation": (1, 2, 1),
                                                      "groups": 2}),
                                   ((4, 4, 2, 2, 3), {"padding": "same"}), ((4, 4, 3, 2, 2), {"padding": "valid"})])
def test_conv3d(ws, kw):
    torch = _torch()
    x, w, b = arr(2, 4, 5, 6, 7), arr(*ws), arr(ws[0])
    close(F.conv3d(G(x), G(w), G(b), **kw), torch.nn.functional.conv3d(T(x), T(w), T(b), **kw), rtol=1e-4, atol=1e-4)
    close(F.conv3d(G(x[0]), G(w), None, **kw), torch.nn.functional.conv3d(T(x[0]), T(w), None, **kw), rtol=1e-4,
          atol=1e-4)


def test_pool3d():
    torch = _torch()
    x = arr(2, 3, 5, 6, 7)
    for kw in [{"kernel_size": 2}, {"kernel_size": 3, "stride": 2, "padding": 1},
               {"kernel_size": (3, 2, 3), "stride": (2, 1, 2), "padding": (1, 1, 0), "ceil_mode": True},
               {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False},
               {"kernel_size": 2, "divisor_override": 3}]:
        close(F.avg_pool3d(G(x), **kw), torch.nn.functional.avg_pool3d(T(x), **kw))
        kwm = {k: v for k, v in kw.items() if k not in ("count_include_pad", "divisor_override")}
        close(F.max_pool3d(G(x), **kwm), torch.nn.functional.max_pool3d(T(x), **kwm))
    kw = {"kernel_size": (2, 3, 2), "dilation": (2, 1, 1), "stride": 1}
    close(F.max_pool3d(G(x[0]), **kw), torch.nn.functional.max_pool3d(T(x[0]), **kw))


ACTS = ["relu6", "hardsigmoid", "mish", "elu", "selu", "softplus", "celu", "logsigmoid", "silu"]


def test_activations_match_torch():
    torch = _torch()
    for dt, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        x = (rng.standard_normal((3, 60)) * 8).astype(dt)
        x[0, :4] = [0.0, -3.0, 3.0, 25.0]
        for name in ACTS:
            close(getattr(F, name)(G(x)), getattr(torch.nn.functional, name)(T(x)), rtol=tol, atol=tol)
        close(F.softplus(G(x), beta=2.0, threshold=5.0), torch.nn.functional.softplus(T(x), 2.0, 5.0), rtol=tol,
              atol=tol)
        close(F.elu(G(x), alpha=0.5), torch.nn.functional.elu(T(x), 0.5), rtol=tol, atol=tol)
        y = G(x.copy())
        assert F.relu6(y, inplace=True) is y
        close(y, torch.nn.functional.relu6(T(x)), rtol=tol, atol=tol)


# ------------------------------------------------------------------------------------------ layers
CASES = [
    ("Conv3d", (4, 6, 3), {"padding": 1}, [(2, 4, 5, 6, 7), (4, 3, 4, 5)]),
    ("Conv3d", (4, 6, (2, 3, 1)), {"stride": 2, "groups": 2, "bias": False, "dilation": (2, 1, 1)}, [(1, 4, 6, 5, 5)]),
    ("Conv3d", (3, 4, 3), {"padding": 1, "padding_mode": "replicate"}, [(1, 3, 4, 5, 6)]),
    ("Conv2d", (3, 4, 3), {"padding": 1, "padding_mode": "reflect"}, [(2, 3, 6, 7)]),
    ("Conv2d", (3, 4, (3, 2)), {"padding": "same", "padding_mode": "circular"}, [(2, 3, 6, 7)]),
    ("Conv1d", (3, 4, 3), {"padding": 2, "padding_mode": "replicate"}, [(2, 3, 9)]),
    ("BatchNorm3d", (3,), {}, [(2, 3, 2, 4, 5)]),
    ("InstanceNorm1d", (3,), {}, [(2, 3, 7), (3, 7)]),
    ("InstanceNorm2d", (3,), {"affine": True}, [(2, 3, 4, 5), (3, 4, 5)]),
    ("InstanceNorm2d", (3,), {"track_running_stats": True, "eps": 1e-3}, [(2, 3, 4, 5)]),
    ("InstanceNorm3d", (2,), {"affine": True, "track_running_stats": True}, [(2, 2, 3, 4, 5)]),
    ("MaxPool3d", (3, 2, 1), {"ceil_mode": True}, [(2, 3, 6, 7, 5), (3, 5, 5, 5)]),
    ("MaxPool3d", (2,), {}, [(1, 2, 4, 6, 5)]),
    ("AvgPool3d", (3, 2, 1), {"count_include_pad": False}, [(2, 3, 6, 7, 5)]),
    ("AvgPool3d", ((2, 2, 3),), {"divisor_override": 5}, [(1, 2, 4, 6, 6)]),
    ("AdaptiveMaxPool2d", ((3, None),), {}, [(2, 3, 7, 5), (3, 4, 4)]),
    ("AdaptiveMaxPool2d", (2,), {}, [(2, 3, 8, 6)]),
    ("AdaptiveMaxPool1d", (3,), {}, [(2, 3, 10)]),
    ("PixelShuffle", (2,), {}, [(2, 8, 3, 4)]),
    ("PixelUnshuffle", (2,), {}, [(2, 2, 6, 4)]),
    ("Upsample", (), {"scale_factor": 2}, [(2, 3, 4, 5), (1, 2, 5)]),
    ("Upsample", (), {"size": (7, 3), "mode": "bilinear", "align_corners": True}, [(2, 3, 4, 5)]),
    ("Upsample", (), {"scale_factor": 1.5, "mode": "bicubic"}, [(2, 3, 4, 5)]),
    ("Upsample", (), {"scale_factor": (2, 1, 3), "mode": "trilinear"}, [(1, 2, 3, 4, 2)]),
    ("UpsamplingNearest2d", (), {"scale_factor": 3}, [(1, 2, 3, 4)]),
    ("UpsamplingBilinear2d", ((5, 6),), {}, [(1, 2, 3, 4)]),
    ("Unfold", ((2, 3),), {"padding": 1, "stride": 2}, [(2, 3, 6, 7)]),
    ("Fold", ((6, 7), (2, 3)), {"padding": 1, "stride": 2}, [(2, 18, 16), (12, 16)]),
    ("Fold", ((5, 5), 2), {"dilation": 2, "stride": (2, 1)}, [(1, 8, 6)]),
    ("ZeroPad2d", ((1, 2, 0, 3),), {}, [(2, 3, 4, 5), (3, 4, 5)]),
    ("ZeroPad1d", (2,), {}, [(2, 3, 4)]),
    ("ConstantPad1d", (2, 3.5), {}, [(2, 3, 4)]),
    ("ConstantPad2d", ((1, 0, 2, 1), -1.0), {}, [(2, 3, 4, 5)]),
    ("ConstantPad3d", (1, 0.5), {}, [(1, 2, 3, 4, 5)]),
    ("ReflectionPad1d", ((1, 2),), {}, [(2, 3, 4), (3, 4)]),
    ("ReflectionPad2d", (2,), {}, [(2, 3, 4, 5)]),
    ("ReplicationPad1d", (3,), {}, [(2, 3, 4)]),
    ("ReplicationPad2d", ((1, 2, 3, 0),), {}, [(2, 3, 4, 5), (3, 4, 5)]),
    ("ReplicationPad3d", (1,), {}, [(1, 2, 3, 4, 5)]),
    ("CircularPad2d", ((1, 2, 2, 1),), {}, [(2, 3, 4, 5)]),
    ("PReLU", (), {}, [(2, 3, 4), (5,)]),
    ("PReLU", (3,), {"init": 0.1}, [(2, 3, 4, 5), (2, 3)]),
    ("ReLU6", (), {"inplace": True}, [(3, 4)]),
    ("Hardsigmoid", (), {}, [(3, 4)]),
    ("Mish", (), {}, [(3, 4)]),
    ("ELU", (), {"alpha": 0.3, "inplace": True}, [(3, 4)]),
    ("SELU", (), {}, [(3, 4)]),
    ("Softplus", (), {"beta": 0.5, "threshold": 4.0}, [(3, 4)]),
    ("Unflatten", (-1, (2, 3)), {}, [(4, 5, 6)]),
    ("Dropout1d", (0.3,), {}, [(2, 3, 4)]),
    ("Dropout2d", (), {}, [(2, 3, 4, 5)]),
    ("Dropout3d", (0.2,), {"inplace": True}, [(1, 2, 3, 4, 5)]),
    ("AlphaDropout", (0.2,), {}, [(3, 4)]),
    ("FeatureAlphaDropout", (0.2,), {}, [(2, 3, 4, 5)]),
    ("ChannelShuffle", (3,), {}, [(2, 6, 4, 5), (2, 6, 5)]),
    ("Softmax2d", (), {}, [(2, 3, 4, 5), (3, 4, 5)]),
    ("Threshold", (0.1, 20.0), {}, [(3, 4)]),
    ("Hardshrink", (), {}, [(3, 4)]),
    ("Softshrink", (0.3,), {}, [(3, 4)]),
    ("RReLU", (0.1, 0.3), {}, [(3, 4)]),
]


@pytest.mark.parametrize("name,args,kwargs,shapes", CASES, ids=[f"{c[0]}{i}" for i, c in enumerate(CASES)])
def test_layer_matches_torch(name, args, kwargs, shapes):
    t, g = twins(name, *args, **kwargs)
    for shape in shapes:
        compare(t, g, arr(*shape) * 3, rtol=1e-5, atol=2e-5)


def test_layer_errors():
    with pytest.raises(ShapeError, match=r"Conv3d: expected input with 5 dims \(N, C, D, H, W\) or 4"):
        gnn.Conv3d(3, 4, 3)(G(arr(3, 8, 8)))
    with pytest.raises(ShapeError, match=r"InstanceNorm2d: expected input's size at dim=1 to match num_features"):
        gnn.InstanceNorm2d(3, affine=True)(G(arr(2, 4, 5, 5)))
    with pytest.raises(ShapeError, match=r"MaxPool3d: expected input with 5 dims"):
        gnn.MaxPool3d(2)(G(arr(2, 3, 4)))
    with pytest.raises(NotImplementedError, match="AdaptiveMaxPool2d: return_indices=True is not supported"):
        gnn.AdaptiveMaxPool2d(2, return_indices=True)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        gnn.Conv2d(3, 4, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match=r"fold: .* calculated number of sliding blocks 3 \* 3 = 9, but got "
                                         r"input.size\(2\)=8"):
        gnn.Fold((4, 4), 2)(G(arr(1, 8, 8)))


# ------------------------------------------------------------------------------------------ losses
LOSSES = [
    ("CrossEntropyLoss", {}, "index"), ("CrossEntropyLoss", {"reduction": "sum", "label_smoothing": 0.1}, "index"),
    ("CrossEntropyLoss", {"ignore_index": 1, "reduction": "none"}, "index"), ("CrossEntropyLoss", {}, "probs"),
    ("CrossEntropyLoss", {"weight": "C"}, "index"), ("NLLLoss", {}, "index"),
    ("NLLLoss", {"weight": "C", "reduction": "sum"}, "index"), ("MSELoss", {}, "same"),
    ("MSELoss", {"reduction": "none"}, "same"), ("L1Loss", {"reduction": "sum"}, "same"),
    ("BCEWithLogitsLoss", {}, "binary"), ("BCEWithLogitsLoss", {"pos_weight": "C", "reduction": "none"}, "binary"),
    ("BCEWithLogitsLoss", {"weight": "C", "reduction": "sum"}, "binary"), ("BCELoss", {}, "prob_binary"),
    ("SmoothL1Loss", {"beta": 0.5}, "same"), ("HuberLoss", {"delta": 0.7, "reduction": "sum"}, "same"),
    ("MSELoss", {"size_average": False}, "same"),
]


@pytest.mark.parametrize("name,kw,target", LOSSES, ids=[f"{c[0]}{i}" for i, c in enumerate(LOSSES)])
def test_loss_layers(name, kw, target):
    torch = _torch()
    C = 4
    for shape in [(5, C), (2, C, 3, 2)]:
        w = np.abs(arr(C)) + 0.2
        if target in ("binary", "prob_binary") and len(shape) == 4:
            w = w[:, None, None]  # per class along dim 1 (broadcasts against [N, C, H, W])
        tkw = {k: (torch.from_numpy(w) if v == "C" else v) for k, v in kw.items()}
        gkw = {k: (graphc.tensor(w) if v == "C" else v) for k, v in kw.items()}
        t = getattr(torch.nn, name)(**tkw)
        g = getattr(gnn, name)(**gkw)
        assert repr(g) == repr(t)
        assert list(g.state_dict()) == list(t.state_dict())
        x = arr(*shape) * 2
        if target == "index":
            y = rng.integers(0, C, size=(shape[0], *shape[2:])).astype(np.int64)
        elif target == "probs":
            y = np.exp(arr(*shape))
            y = (y / y.sum(1, keepdims=True)).astype(np.float32)
        elif target == "binary":
            y = (rng.random(shape) < 0.5).astype(np.float32)
        elif target == "prob_binary":
            x = 1 / (1 + np.exp(-x))
            y = rng.random(shape).astype(np.float32)
        else:
            y = arr(*shape)
        compare(t, g, x, y, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------- recurrent
RNNS = [
    ("LSTM", (3, 5), {}), ("LSTM", (3, 5, 2), {"batch_first": True, "bidirectional": True}),
    ("LSTM", (3, 5), {"proj_size": 2, "bias": False}), ("LSTM", (4, 3, 2), {"dropout": 0.3}),
    ("GRU", (3, 5), {}), ("GRU", (3, 4, 2), {"bidirectional": True, "batch_first": True}),
    ("GRU", (3, 4), {"bias": False}), ("RNN", (3, 4, 2), {"nonlinearity": "relu", "bidirectional": True}),
    ("RNN", (3, 4), {"batch_first": True}),
]


@pytest.mark.parametrize("name,args,kw", RNNS, ids=[f"{c[0]}{i}" for i, c in enumerate(RNNS)])
def test_recurrent_layers(name, args, kw):
    torch = _torch()
    t, g = twins(name, *args, **kw)
    dirs = 2 if kw.get("bidirectional") else 1
    layers = args[2] if len(args) > 2 else 1
    hid = kw.get("proj_size") or args[1]
    bf = kw.get("batch_first", False)
    for T_, N in [(6, 3), (1, 1)]:
        x = arr(N, T_, args[0]) if bf else arr(T_, N, args[0])
        h0, c0 = arr(dirs * layers, N, hid), arr(dirs * layers, N, args[1])
        states = [None, (h0, c0)] if name == "LSTM" else [None, h0]
        for hx in states:
            with torch.no_grad():
                if hx is None:
                    ref = t(T(x))
                    out = g(G(x))
                elif name == "LSTM":
                    ref = t(T(x), (T(h0), T(c0)))
                    out = g(G(x), (G(h0), G(c0)))
                else:
                    ref = t(T(x), T(h0))
                    out = g(G(x), G(h0))
            close(out[0], ref[0])
            if name == "LSTM":
                close(out[1][0], ref[1][0])
                close(out[1][1], ref[1][1])
            else:
                close(out[1], ref[1])
    xu = arr(5, args[0])  # unbatched
    with torch.no_grad():
        ref = t(T(xu))
    out = g(G(xu))
    close(out[0], ref[0])
    close(out[1][0] if name == "LSTM" else out[1], ref[1][0] if name == "LSTM" else ref[1])


@pytest.mark.parametrize("name,kw", [("LSTMCell", {}), ("GRUCell", {}), ("GRUCell", {"bias": False}),
                                     ("RNNCell", {"nonlinearity": "relu"}), ("RNNCell", {})])
def test_recurrent_cells(name, kw):
    torch = _torch()
    t, g = twins(name, 3, 5, **kw)
    for lead in [(4,), ()]:
        x, h, c = arr(*lead, 3), arr(*lead, 5), arr(*lead, 5)
        with torch.no_grad():
            if name == "LSTMCell":
                for hx in (None, (h, c)):
                    ref = t(T(x), None if hx is None else (T(h), T(c)))
                    out = g(G(x), None if hx is None else (G(h), G(c)))
                    close(out[0], ref[0])
                    close(out[1], ref[1])
            else:
                close(g(G(x)), t(T(x)))
                close(g(G(x), G(h)), t(T(x), T(h)))


def test_recurrent_errors():
    m = gnn.LSTM(3, 4)
    with pytest.raises(ShapeError, match=r"LSTM: input.size\(-1\) must be equal to input_size. Expected 3, got 5"):
        m(G(arr(2, 1, 5)))
    with pytest.raises(ShapeError, match=r"LSTM: Expected hidden\[0\] size \[1, 2, 4\] for batched input"):
        m(G(arr(3, 2, 3)), (G(arr(1, 3, 4)), G(arr(1, 3, 4))))
    with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
        gnn.RNNBase("GRU", 3, 4, proj_size=2)
    with pytest.raises(UnsupportedError, match="LSTM: the sequence length T is dynamic; graphc unrolls"):
        graphc.trace(m, (G(arr(5, 2, 3)),), dynamic={"input": {0: "T"}})


# ------------------------------------------------------------------------------------- transformer
@pytest.mark.parametrize("kw", [{}, {"batch_first": True, "norm_first": True, "activation": "gelu"},
                                {"batch_first": True, "bias": False}])
def test_transformer_decoder_layer_and_stack(kw):
    torch = _torch()
    E, H, L, S, n = 8, 2, 5, 6, 3
    t, g = twins("TransformerDecoderLayer", E, H, 16, 0.1, **kw)
    bf = kw.get("batch_first", False)
    tgt, mem = (arr(n, L, E), arr(n, S, E)) if bf else (arr(L, n, E), arr(S, n, E))
    causal = torch.nn.Transformer.generate_square_subsequent_mask(L).numpy()
    kpm = rng.random((n, S)) < 0.3
    kpm[:, 0] = False
    for masks in ({}, {"tgt_mask": causal, "tgt_is_causal": True}, {"memory_key_padding_mask": kpm},
                  {"tgt_mask": causal, "memory_mask": arr(L, S)}):
        tm = {k: T(v) if isinstance(v, np.ndarray) else v for k, v in masks.items()}
        gm = {k: G(v) if isinstance(v, np.ndarray) else v for k, v in masks.items()}
        with torch.no_grad():
            ref = t(T(tgt), T(mem), **tm)
        close(g(G(tgt), G(mem), **gm), ref)
    td = torch.nn.TransformerDecoder(t, 2, norm=torch.nn.LayerNorm(E))
    gd = gnn.TransformerDecoder(g, 2, norm=gnn.LayerNorm(E))
    randomize(td)
    assert list(gd.state_dict()) == list(td.state_dict())
    gd.load_state_dict(td.state_dict())
    assert repr(gd) == repr(td)
    td.eval()
    gd.eval()
    with torch.no_grad():
        ref = td(T(tgt), T(mem), tgt_mask=T(causal))
    close(gd(G(tgt), G(mem), tgt_mask=G(causal)), ref)


def test_transformer():
    torch = _torch()
    t, g = twins("Transformer", 8, 2, 2, 1, 16, 0.0, batch_first=True)
    src, tgt = arr(2, 6, 8), arr(2, 4, 8)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(4)
    with torch.no_grad():
        ref = t(T(src), T(tgt), tgt_mask=causal)
    close(g(G(src), G(tgt), tgt_mask=G(causal.numpy())), ref)
    graphc.manual_seed(0)
    w = gnn.Transformer(16, 2, 1, 1, 32).encoder.layers[0].linear1.weight.numpy()
    assert abs(np.abs(w).max() - np.sqrt(6 / 48)) < 0.02  # xavier_uniform_ bound
    with pytest.raises(RuntimeError, match="the batch number of src .* and tgt .* must be equal"):
        g(G(arr(2, 6, 8)), G(arr(3, 4, 8)))


# ------------------------------------------------------------------------------------ compiled
class VisionStack(gnn.Module):
    """The new image layers in one graph (dynamic batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.pad = gnn.ReflectionPad2d(1)
        self.conv = gnn.Conv2d(3, 8, 3, padding=1, padding_mode="replicate")
        self.inorm = gnn.InstanceNorm2d(8, affine=True)
        self.prelu = gnn.PReLU(8)
        self.shuffle = gnn.PixelShuffle(2)
        self.unshuffle = gnn.PixelUnshuffle(2)
        self.amax = gnn.AdaptiveMaxPool2d((3, 5))
        self.up = gnn.Upsample(scale_factor=1.5, mode="bicubic")
        self.conv3 = gnn.Conv3d(2, 4, 3, padding=(1, 0, 1), stride=(1, 2, 1))
        self.bn3 = gnn.BatchNorm3d(4)
        self.pool3 = gnn.MaxPool3d(2, ceil_mode=True)
        self.avg3 = gnn.AvgPool3d(3, 2, 1, count_include_pad=False)

    def forward(self, x, v):
        y = self.prelu(self.inorm(self.conv(self.pad(x))))  # [B, 8, 8, 8]
        s = self.shuffle(y)  # [B, 2, 16, 16]
        outs = {
            "shuffle": self.unshuffle(s),
            "amax": self.amax(y),
            "bicubic": self.up(x),
            "bilinear": F.interpolate(y, size=(5, 11), mode="bilinear", align_corners=True),
            "nearest": F.interpolate(x, scale_factor=(2, 0.5)),
            "area": F.interpolate(x, size=(3, 4), mode="area"),
            "circ": F.pad(x, (2, 1, 1, 2), mode="circular"),
            "unfold": F.unfold(x, (2, 3), padding=1, stride=(2, 1)),
            "fold": F.fold(F.unfold(x, (2, 3), padding=1, stride=(2, 1)), (6, 6), (2, 3), padding=1, stride=(2, 1)),
            "acts": F.hardsigmoid(x) + F.mish(x) * F.relu6(x * 4) - F.selu(x) + F.softplus(x, 2.0) + F.elu(x, 0.4),
            "shrink": F.hardshrink(x) + F.softshrink(x, 0.3) * F.threshold(x, 0.1, 2.0) + F.rrelu(x),
            "chshuffle": F.channel_shuffle(y, 4),
        }
        z = self.bn3(self.conv3(v))
        outs["pool3"] = self.pool3(z)
        outs["avg3"] = self.avg3(z)
        outs["tri"] = F.interpolate(v, scale_factor=(1.5, 2, 1), mode="trilinear")
        return outs


class SequenceStack(gnn.Module):
    """LSTM / GRU / RNN, a Transformer decoder and the losses in one graph (dynamic batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = gnn.LSTM(6, 5, 2, batch_first=True, bidirectional=True)
        self.gru = gnn.GRU(6, 4)
        self.rnn = gnn.RNN(6, 3, nonlinearity="relu")
        layer = gnn.TransformerDecoderLayer(10, 2, 12, batch_first=True)
        self.dec = gnn.TransformerDecoder(layer, 2, norm=gnn.LayerNorm(10))
        self.ce = gnn.CrossEntropyLoss(label_smoothing=0.1)
        self.bce = gnn.BCEWithLogitsLoss(pos_weight=graphc.tensor(np.linspace(0.5, 2, 10, dtype=np.float32)))
        self.mse = gnn.MSELoss(reduction="none")
        self.cell = gnn.LSTMCell(10, 4)
        self.gcell = gnn.GRUCell(6, 3)

    def forward(self, x, h0, c0, labels):
        out, (h, c) = self.lstm(x, (h0, c0))  # [B, T, 10]
        g, gh = self.gru(x.transpose(0, 1))
        r, rh = self.rnn(x.transpose(0, 1))
        d = self.dec(out, out[:, :3])
        t = out.shape[1]
        return {"out": out, "h": h, "c": c, "gru": g, "gru_h": gh, "rnn": r, "rnn_h": rh, "dec": d,
                "ce": self.ce(d.reshape(-1, 10), labels.reshape(-1)), "bce": self.bce(d, out.sigmoid()),
                "mse": self.mse(d, out), "t": d[:, t - 1], "cell": self.cell(d[:, 0], self.cell(d[:, 1]))[1],
                "gcell": self.gcell(x[:, 0], self.gcell(x[:, 1]))}


def _torch_vision():
    torch = _torch()
    nn, tf = torch.nn, torch.nn.functional

    class TV(nn.Module):
        def __init__(self):
            super().__init__()
            self.pad = nn.ReflectionPad2d(1)
            self.conv = nn.Conv2d(3, 8, 3, padding=1, padding_mode="replicate")
            self.inorm = nn.InstanceNorm2d(8, affine=True)
            self.prelu = nn.PReLU(8)
            self.shuffle = nn.PixelShuffle(2)
            self.unshuffle = nn.PixelUnshuffle(2)
            self.amax = nn.AdaptiveMaxPool2d((3, 5))
            self.up = nn.Upsample(scale_factor=1.5, mode="bicubic")
            self.conv3 = nn.Conv3d(2, 4, 3, padding=(1, 0, 1), stride=(1, 2, 1))
            self.bn3 = nn.BatchNorm3d(4)
            self.pool3 = nn.MaxPool3d(2, ceil_mode=True)
            self.avg3 = nn.AvgPool3d(3, 2, 1, count_include_pad=False)

        def forward(self, x, v):
            y = self.prelu(self.inorm(self.conv(self.pad(x))))
            s = self.shuffle(y)
            outs = {
                "shuffle": self.unshuffle(s), "amax": self.amax(y), "bicubic": self.up(x),
                "bilinear": tf.interpolate(y, size=(5, 11), mode="bilinear", align_corners=True),
                "nearest": tf.interpolate(x, scale_factor=(2, 0.5)),
                "area": tf.interpolate(x, size=(3, 4), mode="area"),
                "circ": tf.pad(x, (2, 1, 1, 2), mode="circular"),
                "unfold": tf.unfold(x, (2, 3), padding=1, stride=(2, 1)),
                "fold": tf.fold(tf.unfold(x, (2, 3), padding=1, stride=(2, 1)), (6, 6), (2, 3), padding=1,
                                stride=(2, 1)),
                "acts": tf.hardsigmoid(x) + tf.mish(x) * tf.relu6(x * 4) - tf.selu(x) + tf.softplus(x, 2.0)
                + tf.elu(x, 0.4),
                "shrink": tf.hardshrink(x) + tf.softshrink(x, 0.3) * tf.threshold(x, 0.1, 2.0) + tf.rrelu(x),
                "chshuffle": tf.channel_shuffle(y, 4),
            }
            z = self.bn3(self.conv3(v))
            outs["pool3"] = self.pool3(z)
            outs["avg3"] = self.avg3(z)
            outs["tri"] = tf.interpolate(v, scale_factor=(1.5, 2, 1), mode="trilinear")
            return outs

    return TV()


def _torch_sequence():
    torch = _torch()
    nn = torch.nn

    class TS(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(6, 5, 2, batch_first=True, bidirectional=True)
            self.gru = nn.GRU(6, 4)
            self.rnn = nn.RNN(6, 3, nonlinearity="relu")
            layer = nn.TransformerDecoderLayer(10, 2, 12, batch_first=True)
            self.dec = nn.TransformerDecoder(layer, 2, norm=nn.LayerNorm(10))
            self.ce = nn.CrossEntropyLoss(label_smoothing=0.1)
            self.bce = nn.BCEWithLogitsLoss(pos_weight=torch.linspace(0.5, 2, 10))
            self.mse = nn.MSELoss(reduction="none")
            self.cell = nn.LSTMCell(10, 4)
            self.gcell = nn.GRUCell(6, 3)

        def forward(self, x, h0, c0, labels):
            out, (h, c) = self.lstm(x, (h0, c0))
            g, gh = self.gru(x.transpose(0, 1))
            r, rh = self.rnn(x.transpose(0, 1))
            d = self.dec(out, out[:, :3])
            t = out.shape[1]
            return {"out": out, "h": h, "c": c, "gru": g, "gru_h": gh, "rnn": r, "rnn_h": rh, "dec": d,
                    "ce": self.ce(d.reshape(-1, 10), labels.reshape(-1)), "bce": self.bce(d, out.sigmoid()),
                    "mse": self.mse(d, out), "t": d[:, t - 1], "cell": self.cell(d[:, 0], self.cell(d[:, 1]))[1],
                    "gcell": self.gcell(x[:, 0], self.gcell(x[:, 1]))}

    return TS()


def _twin_models(tm, gm):
    randomize(tm)
    assert list(gm.state_dict()) == list(tm.state_dict())
    gm.load_state_dict(tm.state_dict())
    tm.eval()
    gm.eval()


def _cache() -> str:
    return shared_cache_dir()


def _check_outputs(got: dict, ref: dict, rtol=1e-5, atol=1e-5) -> None:
    assert set(got) == set(ref)
    for k, v in ref.items():
        np.testing.assert_allclose(np.asarray(got[k]), v.detach().numpy(), rtol=rtol, atol=atol, err_msg=k)


def test_compiled_vision_stack_matches_torch():
    torch = _torch()
    tm, gm = _torch_vision(), VisionStack()
    _twin_models(tm, gm)
    ex = (arr(2, 3, 6, 6), arr(2, 2, 4, 7, 6))
    lib = graphc.compile(gm, tuple(G(a) for a in ex), dynamic={"x": {0: "B"}, "v": {0: "B"}}, cache_dir=_cache())
    for b in (1, 3):
        x, v = arr(b, 3, 6, 6), arr(b, 2, 4, 7, 6)
        with torch.no_grad():
            ref = tm(T(x), T(v))
        _check_outputs({k: t.numpy() for k, t in gm(G(x), G(v)).items()}, ref)
        _check_outputs(lib.run(x=x, v=v), ref)


def test_emulated_cuda_vision_stack_matches_the_interpreter():
    from graphc.backend import optimize_graph
    from graphc.ir import interpret
    from tests.cuda_emu import emulate

    if not emulate.available():
        pytest.skip("needs a C++ compiler (g++ or $CXX) and a C compiler")
    graphc.manual_seed(3)
    gm = VisionStack().eval()
    ex = (G(arr(2, 3, 6, 6)), G(arr(2, 2, 4, 7, 6)))
    g = optimize_graph(graphc.trace(gm, ex, dynamic={"x": {0: "B"}, "v": {0: "B"}}), 2)
    lib = emulate.build(g, _cache(), cxx_opt="-O0")
    x, v = arr(3, 3, 6, 6), arr(3, 2, 4, 7, 6)
    want = interpret(g, x=x, v=v)
    got = lib.run(x=x, v=v)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_compiled_sequence_stack_matches_torch():
    torch = _torch()
    tm, gm = _torch_sequence(), SequenceStack()
    _twin_models(tm, gm)
    T_ = 5

    def inputs(b):
        return arr(b, T_, 6), arr(4, b, 5), arr(4, b, 5), rng.integers(0, 10, size=(b, T_)).astype(np.int64)

    names = ("x", "h0", "c0", "labels")
    dyn = {"x": {0: "B"}, "h0": {1: "B"}, "c0": {1: "B"}, "labels": {0: "B"}}
    lib = graphc.compile(gm, tuple(G(a) for a in inputs(2)), dynamic=dyn, cache_dir=_cache())
    for b in (1, 3):
        ins = inputs(b)
        with torch.no_grad():
            ref = tm(*(T(a) for a in ins))
        _check_outputs({k: t.numpy() for k, t in gm(*(G(a) for a in ins)).items()}, ref)
        _check_outputs(lib.run(**dict(zip(names, ins))), ref)


def test_float64_layers():
    torch = _torch()
    for name, args, kw, shape in [("LSTM", (3, 4, 2), {"bidirectional": True}, (5, 2, 3)),
                                  ("GRU", (3, 4), {}, (5, 2, 3)),
                                  ("Conv3d", (2, 3, 2), {"padding": 1}, (2, 2, 3, 4, 5)),
                                  ("InstanceNorm2d", (3,), {"affine": True}, (2, 3, 4, 5)),
                                  ("Upsample", (), {"scale_factor": 1.5, "mode": "bicubic"}, (1, 2, 4, 5)),
                                  ("ReflectionPad2d", (2,), {}, (1, 2, 4, 5)), ("PReLU", (2,), {}, (3, 2, 4)),
                                  ("AdaptiveMaxPool2d", (3,), {}, (1, 2, 5, 7))]:
        t, g = twins(name, *args, **kw)
        t, g = t.double(), g.double()
        x = arr(*shape).astype(np.float64)
        with torch.no_grad():
            ref = t(T(x))
        out = g(G(x))
        if isinstance(ref, tuple):
            ref, out = ref[0], out[0]
        assert out.dtype is graphc.float64
        close(out, ref, rtol=1e-12, atol=1e-12)


class _Resize(gnn.Module):
    def forward(self, x, v):
        return {"nearest": F.interpolate(x, scale_factor=2), "bilinear": F.interpolate(x, scale_factor=(3, 2),
                                                                                       mode="bilinear"),
                "exact": F.interpolate(x, scale_factor=3, mode="nearest-exact"),
                "linear": F.interpolate(v, scale_factor=4, mode="linear"),
                "to_skip": F.interpolate(F.max_pool2d(x, 2), size=x.shape[-2:], mode="bilinear")}


def test_interpolate_dynamic_spatial_dims():
    """Integer scale factors over symbolic H and W (a model traced for every image size), traced and
    compiled, against PyTorch at sizes other than the example's."""
    torch = _torch()
    tf = torch.nn.functional
    dyn = {"x": {0: "B", 2: 2 * graphc.Dim("h", 1, 8), 3: 2 * graphc.Dim("w", 1, 8)}, "v": {0: "B", 2: "L"}}
    ex = (G(arr(2, 3, 4, 6)), G(arr(2, 3, 7)))
    g = graphc.trace(_Resize(), ex, dynamic=dyn)
    assert all(not all(isinstance(d, int) for d in v.type.shape) for _, v in g.outputs)
    lib = graphc.compile(_Resize(), ex, dynamic=dyn, cache_dir=_cache())
    for b, h, w, n in [(1, 2, 4, 1), (3, 6, 10, 5)]:
        x, v = arr(b, 3, h, w), arr(b, 3, n)
        ref = {"nearest": tf.interpolate(T(x), scale_factor=2),
               "bilinear": tf.interpolate(T(x), scale_factor=(3, 2), mode="bilinear"),
               "exact": tf.interpolate(T(x), scale_factor=3, mode="nearest-exact"),
               "linear": tf.interpolate(T(v), scale_factor=4, mode="linear"),
               "to_skip": tf.interpolate(tf.max_pool2d(T(x), 2), size=x.shape[-2:], mode="bilinear")}
        _check_outputs(lib.run(x=x, v=v), ref)
        _check_outputs({k: t.numpy() for k, t in _Resize()(G(x), G(v)).items()}, ref)
    with pytest.raises(ValueError, match="with dynamic spatial dims .* integer scale_factor"):
        graphc.trace(gnn.Upsample(scale_factor=1.5, mode="bilinear"), (ex[0],), dynamic={"input": {2: "H"}})
    with pytest.raises(ValueError, match="with dynamic spatial dims .* got mode='bilinear', align_corners=True"):
        graphc.trace(gnn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), (ex[0],),
                     dynamic={"input": {2: "H"}})


class _DynPad(gnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = gnn.Conv2d(3, 4, 3, padding=2, padding_mode="reflect")

    def forward(self, x):
        return {"reflect": F.pad(x, (2, 1, 3, 0), "reflect"), "replicate": F.pad(x, (0, 2, 1, 3), "replicate"),
                "circular": F.pad(x, (1, 2, 2, 1), "circular"), "conv": self.conv(x),
                "gmax": F.adaptive_max_pool2d(x, 1)}


def test_pad_modes_dynamic_spatial_dims():
    torch = _torch()
    tf = torch.nn.functional
    m = _DynPad().eval()
    tconv = torch.nn.Conv2d(3, 4, 3, padding=2, padding_mode="reflect")
    m.conv.load_state_dict(tconv.state_dict())
    dyn = {"x": {0: "B", 2: graphc.Dim("H", 4, 16), 3: graphc.Dim("W", 4, 16)}}
    lib = graphc.compile(m, (G(arr(2, 3, 5, 6)),), dynamic=dyn, cache_dir=_cache())
    for shape in [(1, 3, 4, 4), (3, 3, 7, 9)]:
        x = arr(*shape)
        with torch.no_grad():
            ref = {"reflect": tf.pad(T(x), (2, 1, 3, 0), "reflect"),
                   "replicate": tf.pad(T(x), (0, 2, 1, 3), "replicate"),
                   "circular": tf.pad(T(x), (1, 2, 2, 1), "circular"), "conv": tconv(T(x)),
                   "gmax": tf.adaptive_max_pool2d(T(x), 1)}
        _check_outputs(lib.run(x=x), ref)
        _check_outputs({k: t.numpy() for k, t in m(G(x)).items()}, ref)



class _TrainDrop(gnn.Module):
    def forward(self, x):
        return F.dropout2d(x, 0.5, training=True)


def test_feature_dropout_in_training_drops_whole_channels():
    graphc.manual_seed(0)
    m = gnn.Dropout2d(0.5)
    y = m(graphc.ones(8, 16, 3, 3)).numpy()
    per_channel = y.reshape(8, 16, 9)
    assert ((per_channel == 0).all(-1) | (per_channel == 2).all(-1)).all()
    assert 0.3 < (per_channel[..., 0] == 0).mean() < 0.7
    a = gnn.AlphaDropout(0.2)
    graphc.manual_seed(1)
    z = a(graphc.randn(200, 200)).numpy()
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05  # SELU's fixed point is kept
    with pytest.raises(graphc.TraceError, match="dropout2d: training-mode dropout is random and cannot be traced"):
        graphc.trace(_TrainDrop(), (G(arr(1, 2, 3, 3)),))
