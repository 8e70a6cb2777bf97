"""graphc.from_torch: a torch.nn.Module, captured with torch.export, as a graphc Graph.

Steps (docs/importers.md, "From PyTorch"):

1. ``torch.export.export`` captures the module in eval mode (non-strict), with the dynamic dims given
   in graphc's form (``{"x": {0: "B"}}``, ``graphc.Dim``) or torch's (``torch.export.Dim``,
   ``dynamic_shapes=``).
2. ``run_decompositions`` with :func:`decomposition_table`: torch's default (core ATen) table minus
   the ops graphc lowers as one kernel (linear, layer_norm, scaled_dot_product_attention, softmax,
   convolutions, group_norm, the activations, ...), so they arrive whole.
3. The ATen graph is replayed node by node inside graphc's tracer, each node through graphc's own
   Tensor methods and ``graphc.nn.functional`` (the table ``ATEN`` below; an ATen op with no entry
   falls back to the graphc method / function of the same name when its schema's arguments bind to
   that function's parameters). Every op therefore keeps its one definition, and graphc functions added
   later become importable without touching this file. Each node is recorded with the module path of
   torch's ``nn_module_stack`` and the innermost source line of its ``stack_trace`` outside torch.

Parameters and buffers keep their state_dict names; lifted tensor constants become parameters named
after their target. An op without a mapping raises one :class:`~graphc.errors.UnsupportedError` that
names it with its module path and line.
"""

from __future__ import annotations

import inspect
import math
import operator
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _dtype as D
from ..errors import GraphcError, ShapeError, TraceError, UnsupportedError
from ..ir.graph import Graph
from ..ir.printer import print_graph
from ..ops.registry import TensorType
from ..sym import Sym, is_static, prod
from ..tensor import _ACTIVE, Tensor, apply
from ..trace import DEFAULT_MAX, Tracer
from ..trace import Dim as GDim

DOC = "docs/importers.md"
_BIG = 2 ** 62  # slice ends at or above this mean "to the end" (torch writes sys.maxsize)


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - the importer is only reachable with torch installed
        raise GraphcError("graphc.from_torch needs PyTorch (pip install torch)") from None
    return torch


# ------------------------------------------------------------------------------ decomposition table
# ATen ops kept whole (graphc has one op / one kernel for them); torch's default table decomposes them.
KEEP = (
    "linear.default", "matmul.default", "t.default", "transpose.int", "layer_norm.default", "rms_norm.default",
    "group_norm.default", "scaled_dot_product_attention.default", "softmax.int", "log_softmax.int",
    "conv1d.default", "conv2d.default", "conv1d.padding", "conv2d.padding", "conv_transpose1d.default",
    "conv_transpose2d.input", "max_pool2d.default", "adaptive_avg_pool2d.default", "silu.default",
    "hardswish.default", "hardsigmoid.default", "mish.default", "relu6.default", "masked_fill.Scalar",
    "masked_fill.Tensor", "pad.default", "split.Tensor", "squeeze.dim", "var.dim", "std.dim", "std.correction",
    "where.ScalarOther", "where.ScalarSelf", "where.Scalar",
)


def decomposition_table() -> Any:
    """torch.export's default decomposition table without the ops graphc keeps whole (``KEEP``)."""
    torch = _torch()
    table = torch.export.default_decompositions()
    for name in KEEP:
        packet, _, overload = name.partition(".")
        op = getattr(getattr(torch.ops.aten, packet, None), overload, None)
        if op is not None:
            table.pop(op, None)
    return table


# ------------------------------------------------------------------------------------------ dtypes
def _dtype(tdt: Any) -> D.dtype:
    name = str(tdt).replace("torch.", "")
    try:
        return D.as_dtype(name)
    except (TypeError, ValueError):
        raise UnsupportedError(f"from_torch: dtype {tdt} has no graphc equivalent") from None


def _to_numpy(t: Any) -> np.ndarray:
    from ..tensor import _torch_to_numpy

    arr = _torch_to_numpy(t)
    if arr is None:
        arr = np.asarray(t)
    return np.asarray(arr, order="C")


# ---------------------------------------------------------------------------------- the op table
Handler = Callable[["_Converter", dict[str, Any]], Any]
ATEN: dict[str, Handler] = {}


def aten(*names: str) -> Callable[[Handler], Handler]:
    """Register a handler for ATen ops: 'add' (every overload) or 'add.Tensor' (one overload). The
    handler gets the op's arguments by their schema names, defaults filled in."""

    def deco(fn: Handler) -> Handler:
        for n in names:
            ATEN[n] = fn
        return fn

    return deco


def _skip(c: _Converter, a: dict[str, Any]) -> None:
    return None


for _n in ("_assert_tensor_metadata", "_assert_scalar", "_assert_async", "sym_constrain_range",
           "sym_constrain_range_for_size", "_functional_sym_constrain_range",
           "_functional_sym_constrain_range_for_size", "_functional_assert_async"):
    ATEN[_n] = _skip


def _ident(c: _Converter, a: dict[str, Any]) -> Any:
    return a["self"]


for _n in ("alias", "clone", "contiguous", "detach", "lift_fresh_copy", "lift_fresh", "dropout",
           "feature_dropout", "alpha_dropout"):
    ATEN[_n] = _ident


@aten("native_dropout")
def _native_dropout(c, a):
    if a.get("train"):
        raise UnsupportedError("from_torch: dropout in training mode (import the module in eval mode)")
    return a["input"], None


@aten("_to_copy", "to")
def _to_copy(c, a):
    x = a.get("self", a.get("input"))
    dt = a.get("dtype")
    if dt is None:
        return x
    return x.to(_dtype(dt))


@aten("type_as")
def _type_as(c, a):
    return a["self"].to(a["other"].dtype)


# --- arithmetic
def _alpha(v, alpha):
    return v if alpha is None or alpha == 1 else v * alpha


@aten("add")
def _add(c, a):
    return c.tensor(a["self"]) + _alpha(a["other"], a.get("alpha"))


@aten("sub")
def _sub(c, a):
    return c.tensor(a["self"]) - _alpha(a["other"], a.get("alpha"))


@aten("rsub")
def _rsub(c, a):
    return _alpha(a["self"], a.get("alpha")).__rsub__(a["other"]) if isinstance(a["self"], Tensor) else \
        a["other"] - _alpha(a["self"], a.get("alpha"))


@aten("mul")
def _mul(c, a):
    return c.tensor(a["self"]) * a["other"]


@aten("div")
def _div(c, a):
    mode = a.get("rounding_mode")
    x = c.tensor(a["self"])
    return x.div(a["other"], rounding_mode=mode) if mode is not None else x / a["other"]


@aten("pow")
def _pow(c, a):
    base, exp = a["self"], a["exponent"]
    if not isinstance(base, Tensor):
        return c.tensor(exp).__rpow__(base)
    return base ** exp


@aten("bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not")
def _bitwise(c, a):
    x = c.tensor(a["self"])
    op = c.node_target_name.split(".")[0].replace("bitwise_", "")
    if x.dtype is not D.bool_ or (op != "not" and isinstance(a["other"], Tensor) and a["other"].dtype is not D.bool_):
        raise UnsupportedError(f"from_torch: bitwise_{op} on {x.dtype} (graphc has the logical ops on bool only)")
    if op == "not":
        return x.logical_not()
    return getattr(x, f"logical_{op}")(c.tensor(a["other"], like=x))


@aten("eq", "ne", "lt", "le", "gt", "ge")
def _cmp(c, a):
    op = c.node_target_name.split(".")[0]
    return getattr(c.tensor(a["self"]), f"__{op}__")(a["other"])


@aten("clamp", "clip")
def _clamp(c, a):
    x, lo, hi = a["self"], a.get("min"), a.get("max")
    if isinstance(lo, Tensor) or isinstance(hi, Tensor):
        if lo is not None:
            x = x.maximum(c.tensor(lo, like=x))
        if hi is not None:
            x = x.minimum(c.tensor(hi, like=x))
        return x
    return x.clamp(lo, hi)


@aten("clamp_min")
def _clamp_min(c, a):
    return a["self"].clamp(a["min"], None)


@aten("clamp_max")
def _clamp_max(c, a):
    return a["self"].clamp(None, a["max"])


@aten("where")
def _where(c, a):
    from ..tensor import where

    cond, x, y = a["condition"], a.get("self"), a.get("other")
    if x is None and y is None:
        raise UnsupportedError("from_torch: where(condition) with one argument has a data-dependent shape")
    return where(cond, x, y)


@aten("masked_fill")
def _masked_fill(c, a):
    v = a["value"]
    if isinstance(v, Tensor):
        from ..tensor import where

        return where(a["mask"], v.to(a["self"].dtype), a["self"])
    return a["self"].masked_fill(a["mask"], v)


# --- linear algebra
@aten("linear")
def _linear(c, a):
    from ..nn import functional as F

    return F.linear(a["input"], a["weight"], a.get("bias"))


@aten("addmm")
def _addmm(c, a):
    beta, alpha = a.get("beta", 1), a.get("alpha", 1)
    out = a["mat1"].matmul(a["mat2"])  # canonicalize turns matmul(x, W) + b into linear
    if alpha != 1:
        out = out * alpha
    bias = a["self"]
    return out + (bias if beta == 1 else bias * beta)


@aten("mm", "bmm", "matmul")
def _mm(c, a):
    return a["self"].matmul(a.get("mat2", a.get("other")))


@aten("baddbmm")
def _baddbmm(c, a):
    out = a["batch1"].matmul(a["batch2"])
    if a.get("alpha", 1) != 1:
        out = out * a["alpha"]
    beta = a.get("beta", 1)
    return out if beta == 0 else out + (a["self"] if beta == 1 else a["self"] * beta)


# --- convolutions, norms, pooling
def _conv_fn(nsp: int, transposed: bool) -> Any:
    from ..nn import functional as F

    name = ("conv_transpose" if transposed else "conv") + f"{nsp}d"
    fn = getattr(F, name, None)
    if fn is None:
        raise UnsupportedError(f"from_torch: {nsp}-d {'transposed ' if transposed else ''}convolution "
                               f"(graphc.nn.functional has no {name})")
    return fn


@aten("convolution", "_convolution")
def _convolution(c, a):
    x, w = a["input"], a["weight"]
    nsp = w.ndim - 2
    if a["transposed"]:
        return _conv_fn(nsp, True)(x, w, a.get("bias"), a["stride"], a["padding"], a["output_padding"],
                                   a["groups"], a["dilation"])
    if any(p for p in a.get("output_padding") or ()):
        raise UnsupportedError("from_torch: output_padding on a convolution that is not transposed")
    return _conv_fn(nsp, False)(x, w, a.get("bias"), a["stride"], a["padding"], a["dilation"], a["groups"])


@aten("conv1d", "conv2d", "conv3d")
def _convnd(c, a):
    nsp = int(c.node_target_name[4])
    return _conv_fn(nsp, False)(a["input"], a["weight"], a.get("bias"), a["stride"], a["padding"],
                                a["dilation"], a["groups"])


@aten("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def _conv_transposend(c, a):
    nsp = int(c.node_target_name[len("conv_transpose")])
    return _conv_fn(nsp, True)(a["input"], a["weight"], a.get("bias"), a["stride"], a["padding"],
                               a["output_padding"], a["groups"], a["dilation"])


@aten("_native_batch_norm_legit_no_training")
def _bn_eval(c, a):
    from ..nn import functional as F

    y = F.batch_norm(a["input"], a["running_mean"], a["running_var"], a.get("weight"), a.get("bias"),
                     False, a["momentum"], a["eps"])
    return y, None, None


@aten("batch_norm", "_native_batch_norm_legit", "native_batch_norm", "_batch_norm_with_update")
def _bn(c, a):
    from ..nn import functional as F

    if a.get("training", True) or a.get("running_mean") is None:
        raise UnsupportedError("from_torch: batch_norm with batch statistics (training mode, or no running "
                               "statistics); graphc compiles inference graphs: import the module in eval mode")
    y = F.batch_norm(a["input"], a["running_mean"], a["running_var"], a.get("weight"), a.get("bias"),
                     False, a.get("momentum", 0.1), a["eps"])
    return y if c.node_target_name.startswith("batch_norm") else (y, None, None)


@aten("layer_norm")
def _layer_norm(c, a):
    from ..nn import functional as F

    return F.layer_norm(a["input"], a["normalized_shape"], a.get("weight"), a.get("bias"), a["eps"])


@aten("native_layer_norm")
def _native_layer_norm(c, a):
    return _layer_norm(c, a), None, None


@aten("rms_norm")
def _rms_norm(c, a):
    from ..nn import functional as F

    return F.rms_norm(a["input"], a["normalized_shape"], a.get("weight"), a.get("eps"))


@aten("group_norm")
def _group_norm(c, a):
    from ..nn import functional as F

    return F.group_norm(a["input"], a["num_groups"], a.get("weight"), a.get("bias"), a["eps"])


@aten("native_group_norm")
def _native_group_norm(c, a):
    from ..nn import functional as F

    return F.group_norm(a["input"], a["group"], a.get("weight"), a.get("bias"), a["eps"]), None, None


@aten("embedding")
def _embedding(c, a):
    from ..nn import functional as F

    return F.embedding(a["indices"], a["weight"])


def _pool_check(a: dict[str, Any], what: str) -> None:
    if a.get("ceil_mode"):
        raise UnsupportedError(f"from_torch: {what} with ceil_mode=True")


@aten("max_pool2d", "max_pool2d_with_indices", "max_pool1d", "max_pool1d_with_indices")
def _max_pool(c, a):
    from ..nn import functional as F

    name = c.node_target_name.split(".")[0]
    _pool_check(a, name)
    fn = F.max_pool1d if name.startswith("max_pool1d") else F.max_pool2d
    y = fn(a["self"], a["kernel_size"], a["stride"] or None, a["padding"], a["dilation"])
    return (y, None) if name.endswith("with_indices") else y


@aten("avg_pool2d", "avg_pool1d")
def _avg_pool(c, a):
    from ..nn import functional as F

    name = c.node_target_name.split(".")[0]
    _pool_check(a, name)
    if a.get("divisor_override") is not None:
        raise UnsupportedError(f"from_torch: {name} with divisor_override")
    fn = F.avg_pool1d if name == "avg_pool1d" else F.avg_pool2d
    return fn(a["self"], a["kernel_size"], a["stride"] or None, a["padding"],
              count_include_pad=a.get("count_include_pad", True))


@aten("max_pool3d", "max_pool3d_with_indices")
def _max_pool3d(c, a):
    from ..nn import functional as F

    y = F.max_pool3d(a["self"], a["kernel_size"], a["stride"] or None, a["padding"], a["dilation"],
                     ceil_mode=bool(a.get("ceil_mode", False)))
    return (y, None) if c.node_target_name.startswith("max_pool3d_with_indices") else y


@aten("avg_pool3d")
def _avg_pool3d(c, a):
    from ..nn import functional as F

    return F.avg_pool3d(a["self"], a["kernel_size"], a["stride"] or None, a["padding"],
                        ceil_mode=bool(a.get("ceil_mode", False)), count_include_pad=a.get("count_include_pad", True),
                        divisor_override=a.get("divisor_override"))


@aten("adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_avg_pool1d")
def _adaptive_avg_pool(c, a):
    from ..nn import functional as F

    fn = F.adaptive_avg_pool1d if c.node_target_name.startswith("adaptive_avg_pool1d") else F.adaptive_avg_pool2d
    return fn(a["self"], a["output_size"])


# --- softmax, attention, activations
@aten("softmax", "_softmax", "log_softmax", "_log_softmax")
def _softmax(c, a):
    x = a["self"]
    dt = a.get("dtype")
    if dt is not None:
        x = x.to(_dtype(dt))
    log = "log_softmax" in c.node_target_name
    return x.log_softmax(a["dim"]) if log else x.softmax(a["dim"])


@aten("scaled_dot_product_attention")
def _sdpa(c, a):
    from ..nn import functional as F

    if a.get("dropout_p"):
        raise UnsupportedError("from_torch: scaled_dot_product_attention with dropout_p > 0 (import in eval mode)")
    return F.scaled_dot_product_attention(a["query"], a["key"], a["value"], a.get("attn_mask"), 0.0,
                                          a.get("is_causal", False), a.get("scale"), a.get("enable_gqa", False))


@aten("gelu")
def _gelu(c, a):
    from ..nn import functional as F

    return F.gelu(a["self"], approximate=a.get("approximate", "none"))


@aten("hardtanh")
def _hardtanh(c, a):
    from ..nn import functional as F

    return F.hardtanh(a["self"], a.get("min_val", -1.0), a.get("max_val", 1.0))


@aten("leaky_relu")
def _leaky_relu(c, a):
    from ..nn import functional as F

    return F.leaky_relu(a["self"], a.get("negative_slope", 0.01))


@aten("elu")
def _elu(c, a):
    from ..nn import functional as F

    x, alpha, scale, in_scale = a["self"], a.get("alpha", 1.0), a.get("scale", 1.0), a.get("input_scale", 1.0)
    if in_scale != 1:
        x = x * in_scale
    y = F.elu(x, alpha)
    return y if scale == 1 else y * scale


# --- views and shapes
@aten("view", "_unsafe_view", "reshape")
def _view(c, a):
    return a["self"].reshape(*a.get("size", a.get("shape")))


@aten("permute")
def _permute(c, a):
    return a["self"].permute(*a["dims"])


@aten("transpose")
def _transpose(c, a):
    return a["self"].transpose(a["dim0"], a["dim1"])


@aten("t", "numpy_T")
def _t(c, a):
    return a["self"].t()


@aten("expand")
def _expand(c, a):
    return a["self"].expand(*a["size"])


@aten("expand_as")
def _expand_as(c, a):
    return a["self"].expand_as(a["other"])


@aten("unsqueeze")
def _unsqueeze(c, a):
    return a["self"].unsqueeze(a["dim"])


@aten("squeeze")
def _squeeze(c, a):
    x = a["self"]
    dims = a.get("dim")
    if dims is None:
        return x.squeeze()
    for d in sorted((dims if isinstance(dims, (list, tuple)) else [dims]), key=lambda d: -(d % max(x.ndim, 1))):
        x = x.squeeze(d)
    return x


@aten("flatten")
def _flatten(c, a):
    return a["self"].flatten(a.get("start_dim", 0), a.get("end_dim", -1))


@aten("unflatten")
def _unflatten(c, a):
    return a["self"].unflatten(a["dim"], a["sizes"])


@aten("slice")
def _slice(c, a):
    x, dim = a["self"], a.get("dim", 0)
    start, end, step = a.get("start"), a.get("end"), a.get("step", 1)
    if isinstance(end, int) and end >= _BIG:
        end = None
    if isinstance(start, int) and start <= -_BIG:
        start = None
    idx = (slice(None),) * (dim % x.ndim) + (slice(start, end, step),)
    return x[idx]


@aten("select")
def _select(c, a):
    return a["self"].select(a["dim"], a["index"])


@aten("narrow")
def _narrow(c, a):
    return a["self"].narrow(a["dim"], a["start"], a["length"])


@aten("split", "split_with_sizes")
def _split(c, a):
    sizes = a.get("split_size", a.get("split_sizes", a.get("split_size_or_sections")))
    return list(a["self"].split(sizes, a.get("dim", 0)))


@aten("chunk")
def _chunk(c, a):
    return list(a["self"].chunk(a["chunks"], a.get("dim", 0)))


@aten("unbind")
def _unbind(c, a):
    return list(a["self"].unbind(a.get("dim", 0)))


@aten("cat", "concat", "concatenate")
def _cat(c, a):
    from ..tensor import cat

    ts = [t for t in a["tensors"] if not (t.ndim == 1 and is_static(t.shape[0]) and t.shape[0] == 0)]
    return cat(ts, a.get("dim", 0))


@aten("stack")
def _stack(c, a):
    from ..tensor import stack

    return stack(list(a["tensors"]), a.get("dim", 0))


@aten("index_select")
def _index_select(c, a):
    return apply("index_select", a["self"], a["index"].to(D.int64), dim=a["dim"] % a["self"].ndim)


@aten("gather")
def _gather(c, a):
    return apply("gather", a["self"], a["index"].to(D.int64), dim=a["dim"] % a["self"].ndim)


@aten("index")
def _index(c, a):
    x, indices = a["self"], list(a["indices"])
    while indices and indices[-1] is None:
        indices.pop()
    pos = [i for i, t in enumerate(indices) if t is not None]
    if any(t.dtype is D.bool_ for t in indices if t is not None):
        raise UnsupportedError("from_torch: boolean-mask indexing (x[mask]) has a data-dependent shape; use "
                               "torch.where instead")
    if len(pos) == 1:
        idx = tuple(slice(None) if t is None else t for t in indices)
        return x[idx]
    if pos != list(range(pos[0], pos[-1] + 1)):
        raise UnsupportedError("from_torch: advanced indexing with index tensors separated by a slice")
    # adjacent index tensors (broadcast together): index_select along the first indexed dim, then one
    # gather per further dim (index_select and gather count negative indices from the end, as torch)
    from ..ops.registry import broadcast_shapes

    first, last = pos[0], pos[-1]
    bshape = broadcast_shapes("index", *(indices[d].shape for d in pos))
    n = prod(bshape)
    flat = [indices[d].to(D.int64).expand(*bshape).reshape(n) for d in pos]
    y = apply("index_select", x, flat[0], dim=first)
    for k in range(1, len(flat)):
        want = list(y.shape)
        want[first + 1] = 1
        gi = flat[k].reshape(*([1] * first), n, *([1] * (y.ndim - first - 1))).expand(*want)
        y = apply("gather", y, gi, dim=first + 1).squeeze(first + 1)
    return y.reshape(*x.shape[:first], *bshape, *x.shape[last + 1:])


@aten("constant_pad_nd")
def _constant_pad(c, a):
    from ..nn import functional as F

    return F.pad(a["self"], list(a["pad"]), "constant", a.get("value", 0.0))


@aten("pad")
def _pad(c, a):
    from ..nn import functional as F

    return F.pad(a["self"], list(a["pad"]), a.get("mode", "constant"), a.get("value"))


@aten("tril", "triu")
def _tri(c, a):
    return getattr(a["self"], c.node_target_name.split(".")[0])(a.get("diagonal", 0))


# --- reductions
def _dims(a: dict[str, Any], x: Tensor) -> Any:
    d = a.get("dim")
    if d is None or (isinstance(d, (list, tuple)) and len(d) == 0):
        return None
    return tuple(d) if isinstance(d, (list, tuple)) else d


@aten("sum", "mean", "prod")
def _sum(c, a):
    x = a["self"]
    dt = a.get("dtype")
    if dt is not None:
        x = x.to(_dtype(dt))
    name = c.node_target_name.split(".")[0]
    return getattr(x, name)(_dims(a, x), keepdim=a.get("keepdim", False))


@aten("amax", "amin")
def _amax(c, a):
    x = a["self"]
    return getattr(x, c.node_target_name.split(".")[0])(_dims(a, x), keepdim=a.get("keepdim", False))


@aten("max", "min")
def _max(c, a):
    x = a["self"]
    name = c.node_target_name.split(".")[0]
    if "other" in a:
        return getattr(x, "maximum" if name == "max" else "minimum")(a["other"])
    if a.get("dim") is None:
        return getattr(x, "amax" if name == "max" else "amin")()
    r = getattr(x, name)(a["dim"], keepdim=a.get("keepdim", False))
    return r[0], r[1]


@aten("argmax", "argmin")
def _argmax(c, a):
    return getattr(a["self"], c.node_target_name.split(".")[0])(a.get("dim"), keepdim=a.get("keepdim", False))


@aten("var", "std")
def _var(c, a):
    x = a["self"]
    corr = a.get("correction")
    if corr is None:
        corr = 1 if a.get("unbiased", True) else 0
    return getattr(x, c.node_target_name.split(".")[0])(_dims(a, x), keepdim=a.get("keepdim", False),
                                                         correction=corr)


@aten("any", "all")
def _any(c, a):
    x = a["self"]
    return getattr(x, c.node_target_name.split(".")[0])(_dims(a, x), keepdim=a.get("keepdim", False))


# --- creation
@aten("arange")
def _arange(c, a):
    from ..tensor import arange

    start, end, step = a.get("start", 0), a.get("end"), a.get("step", 1)
    return arange(start, end, step, dtype=c.out_dtype())


@aten("full")
def _full(c, a):
    from ..tensor import full

    return full(tuple(a["size"]), a["fill_value"], dtype=c.out_dtype())


@aten("zeros", "ones")
def _zeros(c, a):
    from ..tensor import full

    return full(tuple(a["size"]), 0 if c.node_target_name.startswith("zeros") else 1, dtype=c.out_dtype())


@aten("scalar_tensor")
def _scalar_tensor(c, a):
    from ..tensor import full

    return full((), a["s"], dtype=c.out_dtype())


@aten("full_like", "zeros_like", "ones_like", "empty_like")
def _full_like(c, a):
    from ..tensor import full

    name = c.node_target_name.split(".")[0]
    value = {"zeros_like": 0, "ones_like": 1, "empty_like": 0}.get(name, a.get("fill_value"))
    return full(tuple(a["self"].shape), value, dtype=c.out_dtype())


@aten("new_zeros", "new_ones", "new_full", "new_empty")
def _new_full(c, a):
    from ..tensor import full

    name = c.node_target_name.split(".")[0]
    value = {"new_zeros": 0, "new_ones": 1, "new_empty": 0}.get(name, a.get("fill_value"))
    return full(tuple(a["size"]), value, dtype=c.out_dtype())


# --- symbolic sizes
@aten("sym_size")
def _sym_size(c, a):
    return a["self"].shape[a["dim"]]


@aten("sym_numel")
def _sym_numel(c, a):
    return a["self"].numel()


_PY_OPS: dict[Any, Callable[..., Any]] = {
    operator.getitem: operator.getitem, operator.add: operator.add, operator.sub: operator.sub,
    operator.mul: operator.mul, operator.floordiv: operator.floordiv, operator.mod: operator.mod,
    operator.neg: operator.neg, operator.truediv: operator.truediv, math.ceil: math.ceil,
    math.floor: math.floor,
}


# ------------------------------------------------------------------------------------ the replay
class _ImportTracer(Tracer):
    """graphc's tracer, with the module path and source line of the ATen node being replayed."""

    def __init__(self, graph: Graph):
        super().__init__(graph)
        self.loc = ""

    def location(self) -> str:
        return self.loc


_TORCH_DIR: str | None = None


def _torch_dir() -> str:
    global _TORCH_DIR
    if _TORCH_DIR is None:
        _TORCH_DIR = os.path.dirname(os.path.abspath(_torch().__file__)) + os.sep
    return _TORCH_DIR


_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def source_line(node: Any) -> str:
    """'file.py:LINE' of the innermost frame of a node's stack_trace outside torch."""
    trace = node.meta.get("stack_trace") or ""
    tdir = _torch_dir()
    loc = ""
    for fn, line in _FRAME.findall(trace):
        if not os.path.abspath(fn).startswith(tdir):
            loc = f"{os.path.basename(fn)}:{line}"
    return loc


def module_path(node: Any) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return str(path)


def _sympy_to_dim(expr: Any, names: Mapping[str, str]) -> Any:
    """A sympy size expression (s0, 2*s0, s0 + 1) as a graphc dim; None when it is not a polynomial."""
    import sympy

    if expr.is_Integer:
        return int(expr)
    if expr.is_Symbol:
        return Sym.var(names.get(str(expr), str(expr)))
    if isinstance(expr, (sympy.Add, sympy.Mul)):
        parts = [_sympy_to_dim(x, names) for x in expr.args]
        if any(p is None for p in parts):
            return None
        out = parts[0]
        for p in parts[1:]:
            out = out + p if isinstance(expr, sympy.Add) else out * p
        return out
    if isinstance(expr, sympy.Pow) and expr.exp.is_Integer and int(expr.exp) > 0:
        base = _sympy_to_dim(expr.base, names)
        if base is None:
            return None
        out = base
        for _ in range(int(expr.exp) - 1):
            out = out * base
        return out
    return None


class _Converter:
    def __init__(self, ep: Any, name: str, dim_names: Mapping[str, str], input_order: Sequence[str]):
        self.ep = ep
        self.graph = Graph(name)
        self.tracer = _ImportTracer(self.graph)
        self.dim_names = dict(dim_names)
        self.input_order = list(input_order)
        self.explicit: dict[str, tuple[int, int]] = {}
        self.env: dict[str, Any] = {}
        self.lazy: dict[str, tuple[str, Any]] = {}  # placeholder -> (param name, torch tensor)
        self.node: Any = None
        self.node_target_name = ""

    # ------------------------------------------------------------------------------ helpers
    def tensor(self, x: Any, like: Tensor | None = None) -> Tensor:
        """x as a graphc Tensor (a Python scalar becomes a 0-d tensor of torch's result dtype)."""
        if isinstance(x, Tensor):
            return x
        if isinstance(x, Sym):
            raise UnsupportedError(f"from_torch: {self.node_target_name} uses a dynamic size as a tensor value"
                                   f"{self.where()}")
        from ..tensor import tensor

        dt = like.dtype if like is not None else self.out_dtype()
        return tensor(x, dtype=dt)

    def out_dtype(self) -> D.dtype:
        val = self.node.meta.get("val")
        if isinstance(val, (list, tuple)):
            val = val[0]
        return _dtype(val.dtype)

    def where(self) -> str:
        path, loc = module_path(self.node), source_line(self.node)
        parts = [f"module '{path}'" if path else "the top-level forward()"]
        if loc:
            parts.append(f"at {loc}")
        return f" (in {' '.join(parts)})"

    def dim(self, d: Any) -> Any:
        torch = _torch()
        if isinstance(d, torch.SymInt):
            out = _sympy_to_dim(d.node.expr, self.dim_names)
            if out is None:
                raise UnsupportedError(f"from_torch: size expression {d} is not a polynomial in the dynamic dims")
            return out
        return int(d)

    # ------------------------------------------------------------------------------ values
    def value(self, a: Any) -> Any:
        torch = _torch()
        if isinstance(a, torch.fx.Node):
            if a.name in self.lazy:
                pname, t = self.lazy.pop(a.name)
                self.env[a.name] = self.param(pname, t)
            return self.env[a.name]
        if isinstance(a, (list, tuple)):
            return type(a)(self.value(x) for x in a)
        if isinstance(a, dict):
            return {k: self.value(v) for k, v in a.items()}
        if isinstance(a, torch.dtype):
            return a
        if isinstance(a, (torch.device, torch.layout, torch.memory_format)):
            return None
        if isinstance(a, torch.Tensor):  # a tensor literal in the graph: a constant
            return Tensor._wrap(_to_numpy(a))
        return a

    def param(self, name: str, t: Any) -> Tensor:
        arr = _to_numpy(t)
        clean = re.sub(r"[^A-Za-z0-9_.]", "_", name)
        v = self.graph.add_param(clean, TensorType(tuple(arr.shape), D.from_numpy_dtype(arr.dtype)), arr)
        return Tensor._symbolic(v, self.tracer)

    # ------------------------------------------------------------------------------ the graph
    def handler(self, node: Any) -> Handler | None:
        target = node.target
        if node.op != "call_function":
            return None
        if target in _PY_OPS:
            return None
        ns = getattr(target, "namespace", None)
        if ns != "aten":
            return None
        full = target.name().split("::", 1)[1] if hasattr(target, "name") else str(target)
        packet = full.split(".")[0]
        return ATEN.get(full) or ATEN.get(packet) or _generic(target, packet)

    def unsupported(self) -> list[Any]:
        bad = []
        for n in self.ep.graph.nodes:
            if n.op == "call_function" and n.target not in _PY_OPS and self.handler(n) is None:
                bad.append(n)
        return bad

    def run(self) -> Graph:
        torch = _torch()
        bad = self.unsupported()
        if bad:
            first = bad[0]
            self.node = first
            others = sorted({str(n.target) for n in bad[1:]} - {str(first.target)})
            more = f"; also unsupported: {', '.join(others)}" if others else ""
            raise UnsupportedError(f"from_torch: ATen op {first.target} is not supported by graphc{self.where()}"
                                   f"{more}. {DOC} lists the supported ops and how to add one")
        sig = self.ep.graph_signature
        kinds = {s.arg.name: s for s in sig.input_specs if hasattr(s.arg, "name")}
        inputs: dict[str, Any] = {}
        for n in self.ep.graph.nodes:
            if n.op != "placeholder":
                continue
            spec = kinds.get(n.name)
            kind = spec.kind.name if spec is not None else "USER_INPUT"
            if kind == "USER_INPUT":
                inputs[n.name] = n
            elif kind in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
                tgt = spec.target
                t = self.ep.state_dict.get(tgt) if kind != "CONSTANT_TENSOR" else None
                if t is None:
                    t = self.ep.constants.get(tgt)
                if t is None:
                    raise GraphcError(f"from_torch: no data for {kind.lower()} '{tgt}'")
                self.lazy[n.name] = (tgt, t)
            else:
                raise UnsupportedError(f"from_torch: graph input '{n.name}' of kind {kind} (custom objects and "
                                       "tokens are not supported)")
        order = sorted(inputs, key=lambda k: self.input_order.index(k) if k in self.input_order else len(inputs))
        for k in order:
            n = inputs[k]
            val = n.meta.get("val")
            if not isinstance(val, torch.Tensor):
                raise UnsupportedError(f"from_torch: input '{k}' is a {type(val).__name__}; graphc inputs are "
                                       "tensors (pass other values as constants)")
            shape = tuple(self.dim(d) for d in val.shape)
            v = self.graph.add_input(k, TensorType(shape, _dtype(val.dtype)))
            self.env[k] = Tensor._symbolic(v, self.tracer)
        _ACTIVE.append(self.tracer)
        try:
            for n in self.ep.graph.nodes:
                if n.op == "call_function":
                    self.env[n.name] = self.call(n)
                elif n.op == "output":
                    self.set_outputs(n)
                elif n.op == "get_attr":
                    self.env[n.name] = self.value(getattr(self.ep.graph_module, n.target))
        finally:
            _ACTIVE.pop()
        _dim_ranges(self.ep, self.dim_names, self.graph, self.explicit)
        from ..ir.verify import verify

        verify(self.graph)
        return self.graph

    def call(self, n: Any) -> Any:
        self.node = n
        self.tracer.scope[:] = [module_path(n)]
        self.tracer.loc = source_line(n)
        if n.target in _PY_OPS:
            return _PY_OPS[n.target](*self.value(list(n.args)))
        target = n.target
        self.node_target_name = target.name().split("::", 1)[1]
        args = bind_schema(target, self.value(list(n.args)), self.value(dict(n.kwargs)))
        h = self.handler(n)
        try:
            out = h(self, args)
        except (ShapeError, TraceError, ValueError, TypeError, IndexError, RuntimeError) as e:
            if isinstance(e, UnsupportedError):
                raise UnsupportedError(f"{e}{self.where()}; see {DOC}") from None
            raise type(e)(f"from_torch: {target} failed{self.where()}: {e}") from e
        return self.check(n, out)

    def check(self, n: Any, out: Any) -> Any:
        """Compare a replayed node's type with the one torch recorded (cast a differing dtype)."""
        torch = _torch()
        val = n.meta.get("val")
        if isinstance(out, Tensor) and isinstance(val, torch.Tensor):
            want = tuple(self.dim(d) for d in val.shape)
            if tuple(out.shape) != want:
                raise ShapeError(f"from_torch: {n.target} gave shape [{', '.join(map(str, out.shape))}] in graphc "
                                 f"but [{', '.join(map(str, want))}] in torch{self.where()}")
            dt = _dtype(val.dtype)
            if out.dtype is not dt:
                out = out.to(dt)
        return out

    def set_outputs(self, n: Any) -> None:
        sig = self.ep.graph_signature
        outs = []
        user = [s for s in sig.output_specs if s.kind.name == "USER_OUTPUT"]
        other = [s for s in sig.output_specs if s.kind.name != "USER_OUTPUT"]
        if other:
            raise UnsupportedError(f"from_torch: the module mutates {other[0].kind.name.lower()} "
                                   f"'{other[0].target}' in forward(); graphc compiles pure inference graphs")
        vals = n.args[0]
        names = output_names(self.ep, len(user))
        for oname, a in zip(names, vals):
            v = self.value(a)
            if not isinstance(v, Tensor):
                raise UnsupportedError(f"from_torch: output '{oname}' is a {type(v).__name__}, not a tensor")
            outs.append((oname, v._value if v._tracer is self.tracer else self.tracer.lift(v)))
        self.graph.set_outputs(outs)


def _generic(target: Any, packet: str) -> Handler | None:
    """A handler for an ATen op with no table entry: graphc's Tensor method or nn.functional function of
    the same name, when every argument of the ATen schema binds to one of its parameters by name."""
    from ..nn import functional as F

    fn = getattr(Tensor, packet, None)
    if fn is None:
        fn = getattr(F, packet, None)
    if fn is None or not callable(fn):
        return None
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    schema = target._schema
    names = [a.name for a in schema.arguments]
    if not names:
        return None
    accepts = set(params) | {"self"}
    has_var_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    defaults = {a.name: a.default_value for a in schema.arguments if a.has_default_value()}
    if not has_var_kw and any(n not in accepts and n not in defaults for n in names[1:]):
        return None

    def call(c: _Converter, a: dict[str, Any]) -> Any:
        first = a[names[0]]
        kw = {}
        for n in names[1:]:
            if n in defaults and a.get(n) == defaults[n]:
                continue
            if n not in params and not has_var_kw:
                raise UnsupportedError(f"from_torch: {target} with {n}={a.get(n)!r} (graphc's {packet} has no "
                                       f"{n})")
            kw[n] = a.get(n)
        return fn(first, **kw)

    return call


def bind_schema(target: Any, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """An ATen call's arguments by schema name, defaults filled in."""
    out: dict[str, Any] = {}
    for i, arg in enumerate(target._schema.arguments):
        if i < len(args) and not arg.kwarg_only:
            out[arg.name] = args[i]
        elif arg.name in kwargs:
            out[arg.name] = kwargs[arg.name]
        elif arg.has_default_value():
            out[arg.name] = arg.default_value
        else:
            out[arg.name] = None
    return out


def _key_name(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def output_names(ep: Any, n: int) -> list[str]:
    """graphc output names from the exported module's output structure: field / key names for
    dataclasses (ModelOutput) and dicts, output0.. for tuples, 'output' for one tensor."""
    import torch.utils._pytree as pytree

    spec = ep.call_spec.out_spec
    if spec is None:
        return ["output"] if n == 1 else [f"output{i}" for i in range(n)]
    tree = pytree.tree_unflatten(list(range(spec.num_leaves)), spec)
    leaves = pytree.tree_flatten_with_path(tree)[0]
    names = []
    for path, _ in leaves:
        if not path:
            names.append("output")
            continue
        parts = [_key_name(k) for k in path]
        if parts[0].isdigit():
            parts[0] = f"output{parts[0]}"
        names.append(re.sub(r"[^A-Za-z0-9_]", "_", "_".join(parts)))
    seen: set[str] = set()
    out = []
    for nm in names:
        base, k = nm, 1
        while nm in seen:
            nm = f"{base}_{k}"
            k += 1
        seen.add(nm)
        out.append(nm)
    return out


# --------------------------------------------------------------------------------- the result
@dataclass
class TorchImport:
    """What :func:`from_torch` returns: the graph, and how to call its compiled library like the module."""

    graph: Graph
    input_names: list[str]
    signature: inspect.Signature | None
    out_spec: Any
    exported: Any = field(repr=False)
    times: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        return print_graph(self.graph)

    @property
    def output_names(self) -> list[str]:
        return [n for n, _ in self.graph.outputs]

    def bind(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The graph inputs of a call with the module's positional and keyword arguments."""
        named: dict[str, Any] = {}
        if self.signature is not None:
            try:
                bound = self.signature.bind_partial(*args, **kwargs)
            except TypeError as e:
                raise TypeError(f"{self.graph.name}: {e}") from None
            for k, v in bound.arguments.items():
                p = self.signature.parameters[k]
                if p.kind == p.VAR_KEYWORD:
                    named.update(v)
                elif p.kind == p.VAR_POSITIONAL:
                    named.update({f"{k}_{i}": x for i, x in enumerate(v)})
                else:
                    named[k] = v
        else:
            named.update(zip(self.input_names, args))
            named.update(kwargs)
        extra = [k for k, v in named.items() if k not in self.input_names and v is not None]
        if extra:
            raise ValueError(f"{self.graph.name}: argument(s) {extra} were not given when the model was imported; "
                             f"the compiled model takes {self.input_names} (import it with them in example_inputs)")
        missing = [k for k in self.input_names if named.get(k) is None]
        if missing:
            raise ValueError(f"{self.graph.name}: missing input(s) {missing} (the compiled model takes "
                             f"{self.input_names})")
        return {k: named[k] for k in self.input_names}

    def wrap(self, compiled: Any) -> TorchCompiled:
        return TorchCompiled(compiled, self)


class TorchCompiled:
    """A compiled imported module, called like the module: positional arguments in forward()'s order,
    keyword arguments by name, numpy arrays or torch CPU tensors; the outputs come back in the module's
    structure (tensor, tuple, dict, a transformers ModelOutput), as torch tensors when an input was one."""

    def __init__(self, compiled: Any, imported: TorchImport):
        self.compiled = compiled
        self.imported = imported
        # positional calls in the graph's input order skip binding by name (it costs as much as running
        # a small model)
        params = list(imported.signature.parameters.values()) if imported.signature is not None else []
        positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        n = len(imported.input_names)
        self._direct = positional[:n] == imported.input_names
        spec = imported.out_spec
        self._leaf = spec is None or spec.num_leaves == 1 and spec.is_leaf()

    def __getattr__(self, name: str) -> Any:
        if name in ("compiled", "imported"):
            raise AttributeError(name)
        return getattr(self.compiled, name)

    def __repr__(self) -> str:
        return f"<TorchCompiled {self.compiled!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not kwargs and self._direct and len(args) == len(self.imported.input_names):
            as_torch = any(type(v).__module__.startswith("torch") for v in args)
            out = self.compiled(*args)
            flat = list(out) if isinstance(out, tuple) else [out]
        else:
            named = self.imported.bind(args, kwargs)
            as_torch = any(type(v).__module__.startswith("torch") for v in named.values())
            outs = self.compiled.run(**named)
            flat = [outs[n] for n in self.imported.output_names]
        if as_torch:
            torch = _torch()
            flat = [torch.from_numpy(x) for x in flat]
        spec = self.imported.out_spec
        if self._leaf:
            return flat[0]
        if spec is None:
            return tuple(flat)
        import torch.utils._pytree as pytree

        return pytree.tree_unflatten(flat, spec)


# ------------------------------------------------------------------------------- entry point
def _example(x: Any, what: str) -> Any:
    torch = _torch()
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.asarray(x, order="C"))
    if isinstance(x, Tensor):
        return torch.from_numpy(np.asarray(x._concrete(what), order="C"))
    if isinstance(x, (list, tuple)):
        return type(x)(_example(y, what) for y in x)
    if isinstance(x, Mapping):
        return {k: _example(v, what) for k, v in x.items()}
    return x


def _torch_dim(v: Any, dims: dict[str, Any], what: str) -> Any:
    """One dim of the dynamic spec as a torch.export Dim (shared per name)."""
    torch = _torch()
    if isinstance(v, str):  # a name without a range: torch works the range out (Dim.AUTO)
        GDim(v)  # checks the name
        return torch.export.Dim.AUTO
    if isinstance(v, GDim):
        prev = dims.get(v.name)
        if prev is None:
            prev = dims[v.name] = (v, torch.export.Dim(v.name, min=v.min, max=v.max))
        elif prev[0] != v:
            raise ValueError(f"dynamic dim {v.name} is declared with two ranges: {prev[0].min}..{prev[0].max} and "
                             f"{v.min}..{v.max}")
        return prev[1]
    return v  # torch's own (Dim, Dim.AUTO, Dim.DYNAMIC, None, derived dims)


def dynamic_shapes_for(names: Sequence[str], dynamic: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """graphc's ``dynamic`` (or torch's dict form) -> torch.export's dynamic_shapes."""
    if not dynamic:
        return None
    unknown = set(dynamic) - set(names)
    if unknown:
        raise ValueError(f"dynamic names unknown input(s) {sorted(unknown)}; the inputs are {list(names)}")
    dims: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for n in names:
        spec = dynamic.get(n)
        if spec is None:
            out[n] = None
            continue
        if isinstance(spec, int):
            spec = [spec]
        if isinstance(spec, (list, tuple)) and all(isinstance(d, int) for d in spec):
            spec = {d: ("B" if d == 0 else f"{n}_d{d}") for d in spec}
        if isinstance(spec, Mapping):
            out[n] = {d: _torch_dim(v, dims, n) for d, v in spec.items()}
        else:
            out[n] = spec
    return out


def _normalized_spec(names: Sequence[str], dynamic: Any) -> Any:
    """The dynamic spec with graphc's list / int shorthands spelled out as {dim: name}."""
    if not isinstance(dynamic, Mapping):
        return dynamic
    out = {}
    for n, spec in dynamic.items():
        if isinstance(spec, int):
            spec = [spec]
        if isinstance(spec, (list, tuple)) and all(isinstance(d, int) for d in spec):
            spec = {d: ("B" if d == 0 else f"{n}_d{d}") for d in spec}
        if isinstance(spec, Mapping):
            spec = {d: (v.name if isinstance(v, GDim) else v) for d, v in spec.items()}
        out[n] = spec
    return out


def _explicit_ranges(dynamic: Any) -> dict[str, tuple[int, int]]:
    """The dims declared with a range: graphc.Dim, or torch.export.Dim with min / max."""
    out: dict[str, tuple[int, int]] = {}
    specs = dynamic.values() if isinstance(dynamic, Mapping) else (dynamic or ())
    for spec in specs:
        if not isinstance(spec, Mapping):
            continue
        for v in spec.values():
            if isinstance(v, GDim):
                out[v.name] = (v.min, v.max)
            elif hasattr(v, "__name__") and hasattr(v, "min") and hasattr(v, "max"):
                lo, hi = v.min, v.max
                out[v.__name__] = (int(lo) if isinstance(lo, int) else 0,
                                   int(hi) if isinstance(hi, int) and hi < 2 ** 62 else DEFAULT_MAX)
    return out


def _dim_names(ep: Any, dynamic_shapes: Any) -> dict[str, str]:
    """torch's symbol (s43) -> the user's dim name (B), read off the user inputs' example shapes."""
    torch = _torch()
    names: dict[str, str] = {}
    if not isinstance(dynamic_shapes, Mapping):
        return names
    ph = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    for arg, spec in dynamic_shapes.items():
        node = ph.get(arg)
        if node is None or not isinstance(spec, Mapping):
            continue
        val = node.meta.get("val")
        for d, dim in spec.items():
            name = dim if isinstance(dim, str) else getattr(dim, "__name__", None)
            if name is None or not isinstance(val, torch.Tensor):
                continue
            s = val.shape[d]
            if isinstance(s, torch.SymInt) and s.node.expr.is_Symbol and name.isidentifier():
                names.setdefault(str(s.node.expr), name)
    return names


def _dim_ranges(ep: Any, names: Mapping[str, str], graph: Graph,
                explicit: Mapping[str, tuple[int, int]]) -> None:
    """graph.dims from torch's range constraints (explicit: the ranges the user gave with graphc.Dim or
    torch.export.Dim min/max)."""
    import sympy

    for sym, vr in ep.range_constraints.items():
        gname = names.get(str(sym), str(sym))
        if gname not in graph.symbols():
            continue
        lo = int(vr.lower) if isinstance(vr.lower, sympy.Integer) else 0
        hi = int(vr.upper) if isinstance(vr.upper, sympy.Integer) else DEFAULT_MAX  # int_oo: graphc's default
        if lo == 2 and gname not in explicit:
            # torch assumes a dynamic size is not 0 or 1 while tracing (so that broadcasting stays
            # general); graphc's symbolic dims make the same assumption and the code is valid at 1
            lo = 1
        if gname in explicit:
            lo, hi = max(lo, explicit[gname][0]), min(hi, explicit[gname][1])
        graph.dims[gname] = (max(lo, 0), max(hi, lo))


def from_torch(module: Any, example_inputs: Any = (), dynamic: Mapping[str, Any] | None = None, *,
               kwargs: Mapping[str, Any] | None = None, dynamic_shapes: Any = None, name: str | None = None,
               decompositions: Any = None, strict: bool = False) -> TorchImport:
    """Import a torch.nn.Module as a graphc graph (see the module docstring and docs/importers.md).

    example_inputs: a tensor, a tuple of positional arguments, or a dict of keyword arguments (torch
    tensors, numpy arrays or graphc Tensors); ``kwargs`` adds keyword arguments to a tuple. dynamic:
    graphc's form, ``{"x": {0: "B"}}`` / ``{"x": {0: graphc.Dim("B", max=64)}}`` / ``{"x": 0}``, where a
    value may also be a ``torch.export.Dim``; or give torch's ``dynamic_shapes`` as is. decompositions:
    the table for run_decompositions (default :func:`decomposition_table`).
    """
    torch = _torch()
    from ..trace import _default_name

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"from_torch expects a torch.nn.Module, got {type(module).__name__}")
    if dynamic and dynamic_shapes is not None:
        raise ValueError("give the dynamic dims once: dynamic= (graphc's form) or dynamic_shapes= (torch's)")
    if isinstance(example_inputs, Mapping):
        args, kw = (), dict(example_inputs)
    elif isinstance(example_inputs, (tuple, list)):
        args, kw = tuple(example_inputs), {}
    else:
        args, kw = (example_inputs,), {}
    kw.update(kwargs or {})
    args = tuple(_example(a, "example input") for a in args)
    kw = {k: _example(v, f"example input '{k}'") for k, v in kw.items()}
    try:
        sig: inspect.Signature | None = inspect.signature(module.forward)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        try:
            bound = sig.bind_partial(*args, **kw)
        except TypeError as e:
            raise TypeError(f"from_torch: example_inputs do not fit {type(module).__name__}.forward: {e}") from None
        given = list(bound.arguments)
        order = [p for p in sig.parameters]
    else:
        given = [f"input{i}" for i in range(len(args))] + list(kw)
        order = given
    ds = dynamic_shapes_for(given, dynamic)
    names_from = dynamic if dynamic else dynamic_shapes
    if dynamic_shapes is not None:
        ds = dynamic_shapes
    times: dict[str, float] = {}
    was_training = module.training
    module.eval()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # torch's own pytree code warns about its own deprecated API on every export: nothing a user can act on
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        try:
            with torch.no_grad():
                ep = torch.export.export(module, args, kw or None, dynamic_shapes=ds, strict=strict)
        except Exception as e:
            lines = [ln for ln in str(e).strip().splitlines() if ln.strip()][:6]
            raise GraphcError(f"from_torch: torch.export could not capture {type(module).__name__} (see {DOC}, "
                              f"'When torch.export fails'): {type(e).__name__}: " + "\n".join(lines)) from e
        finally:
            module.train(was_training)
        t1 = time.perf_counter()
        ep = ep.run_decompositions(decompositions if decompositions is not None else decomposition_table())
    t2 = time.perf_counter()
    times["export"], times["decompose"] = t1 - t0, t2 - t1
    dim_names = _dim_names(ep, _normalized_spec(given, names_from))
    gname = name or _default_name(module)
    conv = _Converter(ep, gname, dim_names, order)
    conv.explicit = _explicit_ranges(names_from)
    g = conv.run()
    times["convert"] = time.perf_counter() - t2
    user_inputs = [v.name for v in g.inputs]
    out_spec = ep.call_spec.out_spec
    return TorchImport(graph=g, input_names=user_inputs, signature=sig, out_spec=out_spec, exported=ep, times=times)
