"""graphc.nn.functional: PyTorch's functional API over graphc's ops.

Every function here is a thin front end: it checks and resolves its arguments the way
``torch.nn.functional`` does (int-or-tuple sizes, ``padding='same'``, unbatched inputs, bool masks)
and then calls the registry ops through :func:`graphc.tensor.apply` or Tensor methods, so eager
results, traced graphs and compiled code share one definition of the math.

Training-only behaviour (random dropout, batch statistics with running-stat updates) runs eagerly;
traced graphs are inference graphs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _dtype as D
from ..errors import TraceError, UnsupportedError
from ..sym import Dim, is_static, prod
from ..tensor import Tensor, apply, arange, where

__all__ = [
    "linear", "bilinear", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "max_pool1d", "max_pool2d",
    "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "batch_norm", "layer_norm",
    "group_norm", "rms_norm", "embedding", "one_hot", "cosine_similarity", "dropout", "relu", "relu6", "leaky_relu",
    "gelu", "silu",
    "sigmoid", "tanh", "elu", "selu", "celu", "softplus", "hardtanh", "softmax", "log_softmax", "softmin", "mish",
    "hardswish", "hardsigmoid", "logsigmoid", "softsign", "tanhshrink", "glu", "normalize", "pad",
    "scaled_dot_product_attention", "cross_entropy", "nll_loss", "mse_loss", "l1_loss",
]

_Size = int | Sequence[int]


# ------------------------------------------------------------------------------------------ helpers
def _ntuple(fn: str, name: str, v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return (int(v),) * n
    if isinstance(v, (list, tuple)):
        if len(v) == 1 and n > 1:
            return (int(v[0]),) * n
        if len(v) == n and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in v):
            return tuple(int(x) for x in v)
    raise ValueError(f"{fn}: {name} must be an int or a tuple of {n} ints, got {v!r}")


def _is_traced(x: Tensor) -> bool:
    return x._tracer is not None


def _check_tensor(fn: str, name: str, x: Any) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: {name} must be a graphc.Tensor, got {type(x).__name__}")
    return x


def _fmt(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _batched(fn: str, x: Tensor, nsp: int, layout: str) -> tuple[Tensor, bool]:
    """Accept [N, C, *S] or unbatched [C, *S]; returns the batched tensor and whether to squeeze."""
    _check_tensor(fn, "input", x)
    if x.ndim == nsp + 2:
        return x, False
    if x.ndim == nsp + 1:
        return x.unsqueeze(0), True
    raise ValueError(f"{fn}: expected a {nsp + 1}-d (unbatched) or {nsp + 2}-d (batched) input {layout}, got "
                     f"input of shape {_fmt(x.shape)}")


def _unbatch(y: Tensor, squeeze: bool) -> Tensor:
    return y.squeeze(0) if squeeze else y


def bind_to_trace(t: Tensor | None, like: Tensor) -> Tensor | None:
    """When `like` is being traced and `t` is concrete (a parameter, buffer or constant), the symbolic
    stand-in for t, so that ops applied to it (slicing a packed weight, reshaping a norm's weight,
    converting a mask) are recorded in the graph and keep the state_dict name instead of being
    computed eagerly into an anonymous constant."""
    if t is None or like._tracer is None or t._tracer is not None:
        return t
    return Tensor._symbolic(like._tracer.lift(t), like._tracer)


def _inplace(x: Tensor, y: Tensor, inplace: bool) -> Tensor:
    """`inplace=True`: write the result into x and return x, eagerly and while tracing (the write
    reaches x's aliases and views; see graphc/functionalize.py)."""
    if not inplace:
        return y
    return x._write(y, "inplace=True")


# ------------------------------------------------------------------------------------------ linear
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:  # noqa: A002
    """y = input @ weight.T + bias."""
    return apply("linear", input, weight, bias)


def bilinear(input1: Tensor, input2: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y[..., o] = input1 @ weight[o] @ input2 + bias[o]."""
    return apply("bilinear", input1, input2, weight, bias)


# ------------------------------------------------------------------------------------- convolution
def _conv(fn: str, nsp: int, input: Tensor, weight: Tensor, bias: Tensor | None, stride: Any, padding: Any,  # noqa: A002
          dilation: Any, groups: int) -> Tensor:
    x, squeeze = _batched(fn, input, nsp, "(N, C, L)" if nsp == 1 else "(N, C, H, W)")
    _check_tensor(fn, "weight", weight)
    if weight.ndim != nsp + 2:
        raise ValueError(f"{fn}: weight must be {nsp + 2}-d, got shape {_fmt(weight.shape)}")
    s = _ntuple(fn, "stride", stride, nsp)
    d = _ntuple(fn, "dilation", dilation, nsp)
    if isinstance(padding, str):
        if padding == "valid":
            p: tuple[int, ...] = (0,) * nsp
        elif padding == "same":
            if any(v != 1 for v in s):
                raise ValueError(f"{fn}: padding='same' is not supported for strided convolutions")
            total = [d[i] * (weight.shape[2 + i] - 1) for i in range(nsp)]
            p = tuple(t // 2 for t in total)
            extra = [t - 2 * (t // 2) for t in total]  # odd totals put the extra column on the right
            if any(extra):
                pads: list[int] = []
                for i in reversed(range(nsp)):
                    pads += [0, extra[i]]
                x = apply("pad", x, pads=pads, value=0.0)
        else:
            raise ValueError(f"{fn}: invalid padding string {padding!r}, should be one of 'valid', 'same'")
    else:
        p = _ntuple(fn, "padding", padding, nsp)
    y = apply("conv", x, weight, bias, stride=s, padding=p, dilation=d, groups=groups)
    return _unbatch(y, squeeze)


def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: _Size = 1,  # noqa: A002
           padding: _Size | str = 0, dilation: _Size = 1, groups: int = 1) -> Tensor:
    """1-d convolution over input [N, C, L] or [C, L]; padding may be 'valid' or 'same'."""
    return _conv("conv1d", 1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: _Size = 1,  # noqa: A002
           padding: _Size | str = 0, dilation: _Size = 1, groups: int = 1) -> Tensor:
    """2-d convolution over input [N, C, H, W] or [C, H, W]; padding may be 'valid' or 'same'."""
    return _conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups)


def _conv_transpose(fn: str, nsp: int, input: Tensor, weight: Tensor, bias: Tensor | None, stride: Any,  # noqa: A002
                    padding: Any, output_padding: Any, groups: int, dilation: Any) -> Tensor:
    x, squeeze = _batched(fn, input, nsp, "(N, C, L)" if nsp == 1 else "(N, C, H, W)")
    _check_tensor(fn, "weight", weight)
    if weight.ndim != nsp + 2:
        raise ValueError(f"{fn}: weight must be {nsp + 2}-d, got shape {_fmt(weight.shape)}")
    if isinstance(padding, str):
        raise ValueError(f"{fn}: string padding {padding!r} is not supported by transposed convolution")
    y = apply("conv_transpose", x, weight, bias, stride=_ntuple(fn, "stride", stride, nsp),
              padding=_ntuple(fn, "padding", padding, nsp),
              output_padding=_ntuple(fn, "output_padding", output_padding, nsp),
              dilation=_ntuple(fn, "dilation", dilation, nsp), groups=groups)
    return _unbatch(y, squeeze)


def conv_transpose1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: _Size = 1,  # noqa: A002
                     padding: _Size = 0, output_padding: _Size = 0, groups: int = 1, dilation: _Size = 1) -> Tensor:
    """Transposed 1-d convolution; weight [C, OC/groups, K]."""
    return _conv_transpose("conv_transpose1d", 1, input, weight, bias, stride, padding, output_padding, groups,
                           dilation)


def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: _Size = 1,  # noqa: A002
                     padding: _Size = 0, output_padding: _Size = 0, groups: int = 1, dilation: _Size = 1) -> Tensor:
    """Transposed 2-d convolution; weight [C, OC/groups, KH, KW]."""
    return _conv_transpose("conv_transpose2d", 2, input, weight, bias, stride, padding, output_padding, groups,
                           dilation)


def _depth_major(x: Tensor) -> Tensor:
    """[N, C, D, H, W] -> [N, D, C, H, W]."""
    return x.permute(0, 2, 1, 3, 4)


def conv3d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: _Size = 1,  # noqa: A002
           padding: _Size | str = 0, dilation: _Size = 1, groups: int = 1) -> Tensor:
    """3-d convolution over [N, C, D, H, W] or [C, D, H, W], composed of 2-d convolutions: the depth
    dim goes into the batch (one strided slice of the depth-padded input per kernel depth tap, each
    convolved with that tap's [OC, C/groups, KH, KW] weights) and the taps are summed."""
    fn = "conv3d"
    x, squeeze = _batched(fn, input, 3, "(N, C, D, H, W)")
    _check_tensor(fn, "weight", weight)
    if weight.ndim != 5:
        raise ValueError(f"{fn}: weight must be 5-d [OC, C/groups, KD, KH, KW], got shape {_fmt(weight.shape)}")
    s = _ntuple(fn, "stride", stride, 3)
    d = _ntuple(fn, "dilation", dilation, 3)
    ks = [int(k) for k in weight.shape[2:]]
    if isinstance(padding, str):
        if padding == "valid":
            lo, hi = [0, 0, 0], [0, 0, 0]
        elif padding == "same":
            if any(v != 1 for v in s):
                raise ValueError(f"{fn}: padding='same' is not supported for strided convolutions")
            total = [d[i] * (ks[i] - 1) for i in range(3)]
            lo = [t // 2 for t in total]
            hi = [t - t // 2 for t in total]
        else:
            raise ValueError(f"{fn}: invalid padding string {padding!r}, should be one of 'valid', 'same'")
    else:
        lo = list(_ntuple(fn, "padding", padding, 3))
        hi = list(lo)
    if x.shape[1] != weight.shape[1] * groups:
        raise ValueError(f"{fn}: input {_fmt(x.shape)} has {x.shape[1]} channels, weight {_fmt(weight.shape)} with "
                         f"groups={groups} expects {weight.shape[1] * groups}")
    dd, hh, ww = _spatial_static(fn, x, 3)
    # depth padding and any asymmetric part of H/W padding as a pad op; the symmetric H/W part goes to conv
    sym = [min(lo[i], hi[i]) for i in (1, 2)]
    extra = [lo[2] - sym[1], hi[2] - sym[1], lo[1] - sym[0], hi[1] - sym[0], lo[0], hi[0]]
    if any(extra):
        x = apply("pad", x, pads=extra, value=0.0)
    od = (dd + lo[0] + hi[0] - d[0] * (ks[0] - 1) - 1) // s[0] + 1
    if od < 1:
        raise ValueError(f"{fn}: input {_fmt(input.shape)} with padding {padding} is smaller than the dilated "
                         f"kernel {ks} (dilation {list(d)})")
    xm = _depth_major(x)  # [N, Dp, C, H', W']
    n = x.shape[0]
    w = bind_to_trace(weight, x)
    b = bind_to_trace(bias, x)
    y = None
    for kd in range(ks[0]):
        start = kd * d[0]
        xs = apply("slice", xm, dim=1, start=start, end=start + s[0] * (od - 1) + 1, step=s[0])
        xs = xs.reshape(n * od, xs.shape[2], xs.shape[3], xs.shape[4])
        part = apply("conv", xs, w[:, :, kd], b if kd == 0 else None, stride=s[1:], padding=sym, dilation=d[1:],
                     groups=groups)
        y = part if y is None else y + part
    assert y is not None
    y = y.reshape(n, od, y.shape[1], y.shape[2], y.shape[3]).permute(0, 2, 1, 3, 4)
    return _unbatch(y, squeeze)


# ------------------------------------------------------------------------------------------ pooling
def _stride(fn: str, stride: Any, kernel: tuple[int, ...], n: int) -> tuple[int, ...]:
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        return kernel
    return _ntuple(fn, "stride", stride, n)


def _no_indices(fn: str, return_indices: bool) -> None:
    if return_indices:
        raise UnsupportedError(f"{fn}: return_indices=True is not supported by graphc (inference graphs "
                                  "do not carry argmax indices)")


def _as2d_pool(fn: str, input: Tensor) -> tuple[Tensor, bool]:  # noqa: A002
    """[N, C, L] or [C, L] -> [N, C, 1, L]."""
    x, squeeze = _batched(fn, input, 1, "(N, C, L)")
    return x.unsqueeze(2), squeeze


def max_pool2d(input: Tensor, kernel_size: _Size, stride: _Size | None = None, padding: _Size = 0,  # noqa: A002
               dilation: _Size = 1, ceil_mode: bool = False, return_indices: bool = False) -> Tensor:
    """Max pooling over [N, C, H, W] or [C, H, W] (padding counts as -inf)."""
    fn = "max_pool2d"
    _no_indices(fn, return_indices)
    x, squeeze = _batched(fn, input, 2, "(N, C, H, W)")
    k = _ntuple(fn, "kernel_size", kernel_size, 2)
    y = apply(fn, x, kernel=k, stride=_stride(fn, stride, k, 2), padding=_ntuple(fn, "padding", padding, 2),
              dilation=_ntuple(fn, "dilation", dilation, 2), ceil_mode=bool(ceil_mode))
    return _unbatch(y, squeeze)


def max_pool1d(input: Tensor, kernel_size: _Size, stride: _Size | None = None, padding: _Size = 0,  # noqa: A002
               dilation: _Size = 1, ceil_mode: bool = False, return_indices: bool = False) -> Tensor:
    """Max pooling over [N, C, L] or [C, L] (through max_pool2d with a unit height)."""
    fn = "max_pool1d"
    _no_indices(fn, return_indices)
    x, squeeze = _as2d_pool(fn, input)
    k = _ntuple(fn, "kernel_size", kernel_size, 1)
    y = apply("max_pool2d", x, kernel=(1, *k), stride=(1, *_stride(fn, stride, k, 1)),
              padding=(0, *_ntuple(fn, "padding", padding, 1)), dilation=(1, *_ntuple(fn, "dilation", dilation, 1)),
              ceil_mode=bool(ceil_mode))
    return _unbatch(y.squeeze(2), squeeze)


def avg_pool2d(input: Tensor, kernel_size: _Size, stride: _Size | None = None, padding: _Size = 0,  # noqa: A002
               ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    """Average pooling over [N, C, H, W] or [C, H, W]."""
    fn = "avg_pool2d"
    x, squeeze = _batched(fn, input, 2, "(N, C, H, W)")
    k = _ntuple(fn, "kernel_size", kernel_size, 2)
    y = apply(fn, x, kernel=k, stride=_stride(fn, stride, k, 2), padding=_ntuple(fn, "padding", padding, 2),
              ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad), divisor_override=divisor_override)
    return _unbatch(y, squeeze)


def avg_pool1d(input: Tensor, kernel_size: _Size, stride: _Size | None = None, padding: _Size = 0,  # noqa: A002
               ceil_mode: bool = False, count_include_pad: bool = True) -> Tensor:
    """Average pooling over [N, C, L] or [C, L] (through avg_pool2d with a unit height)."""
    fn = "avg_pool1d"
    x, squeeze = _as2d_pool(fn, input)
    k = _ntuple(fn, "kernel_size", kernel_size, 1)
    y = apply("avg_pool2d", x, kernel=(1, *k), stride=(1, *_stride(fn, stride, k, 1)),
              padding=(0, *_ntuple(fn, "padding", padding, 1)), ceil_mode=bool(ceil_mode),
              count_include_pad=bool(count_include_pad))
    return _unbatch(y.squeeze(2), squeeze)


def _pool3d_prepare(fn: str, input: Tensor, kernel_size: Any, stride: Any, padding: Any,  # noqa: A002
                    dilation: Any, ceil_mode: bool) -> tuple[Tensor, bool, tuple, tuple, tuple, tuple, int]:
    from ..ops.nn import pool_out_size

    x, squeeze = _batched(fn, input, 3, "(N, C, D, H, W)")
    k = _ntuple(fn, "kernel_size", kernel_size, 3)
    s = _stride(fn, stride, k, 3)
    p = _ntuple(fn, "padding", padding, 3)
    dl = _ntuple(fn, "dilation", dilation, 3)
    if any(pp > kk // 2 for pp, kk in zip(p, k)):
        raise ValueError(f"{fn}: pad should be at most half of effective kernel size, but got pad={list(p)}, "
                         f"kernel_size={list(k)}")
    dd = _spatial_static(fn, x, 3)[0]
    od = pool_out_size(dd, k[0], s[0], p[0], dl[0], ceil_mode)
    if od < 1:
        raise ValueError(f"{fn}: output depth {od} is too small for input {_fmt(input.shape)}")
    return x, squeeze, k, s, p, dl, od


def _depth_taps(xm: Tensor, k: int, s: int, p: int, dl: int, od: int, value: float) -> list[Tensor]:
    """The k strided depth slices ([N, OD, ...]) of xm [N, D, ...] padded with value (p in front, as
    much as the last window needs behind)."""
    depth = xm.shape[1]
    need = (od - 1) * s + dl * (k - 1) + 1
    back = max(0, need - depth - p)
    if p or back:
        xm = apply("pad", xm, pads=[0, 0] * (xm.ndim - 2) + [p, back], value=value)
    return [apply("slice", xm, dim=1, start=j * dl, end=j * dl + s * (od - 1) + 1, step=s) for j in range(k)]


def max_pool3d(input: Tensor, kernel_size: _Size, stride: _Size | None = None, padding: _Size = 0,  # noqa: A002
               dilation: _Size = 1, ceil_mode: bool = False, return_indices: bool = False) -> Tensor:
    """Max pooling over [N, C, D, H, W] or [C, D, H, W]: max_pool2d over each depth slice, then the
    elementwise maximum of the strided depth slices (padding counts as -inf)."""
    fn = "max_pool3d"
    _no_indices(fn, return_indices)
    x, squeeze, k, s, p, dl, od = _pool3d_prepare(fn, input, kernel_size, stride, padding, dilation, ceil_mode)
    n, c, dd, h, w = x.shape
    y = apply("max_pool2d", _depth_major(x).reshape(n * dd, c, h, w), kernel=k[1:], stride=s[1:], padding=p[1:],
              dilation=dl[1:], ceil_mode=bool(ceil_mode))
    y = y.reshape(n, dd, c, y.shape[2], y.shape[3])
    out = None
    for t in _depth_taps(y, k[0], s[0], p[0], dl[0], od, float("-inf")):
        out = t if out is None else apply("maximum", out, t)
    assert out is not None
    return _unbatch(out.permute(0, 2, 1, 3, 4), squeeze)


def avg_pool3d(input: Tensor, kernel_size: _Size, stride: _Size | None = None, padding: _Size = 0,  # noqa: A002
               ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    """Average pooling over [N, C, D, H, W] or [C, D, H, W]: PyTorch's divisor is a product of one
    factor per dim (with or without the padding), so it is avg_pool2d over each depth slice followed by
    the depth windows' sums over their depth divisors."""
    from ..ops.nn import _avg_divisors

    fn = "avg_pool3d"
    if divisor_override is not None and divisor_override == 0:
        raise ValueError(f"{fn}: divisor must be not zero")
    x, squeeze, k, s, p, _, od = _pool3d_prepare(fn, input, kernel_size, stride, padding, 1, ceil_mode)
    n, c, dd, h, w = x.shape
    if dd < k[0] or h < k[1] or w < k[2]:  # PyTorch's avg_pool3d refuses these even when padded
        raise ValueError(f"{fn}: input image (T: {dd} H: {h} W: {w}) smaller than kernel size (kT: {k[0]} kH: {k[1]} "
                         f"kW: {k[2]})")
    y = apply("avg_pool2d", _depth_major(x).reshape(n * dd, c, h, w), kernel=k[1:], stride=s[1:], padding=p[1:],
              ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad),
              divisor_override=None if divisor_override is None else 1)
    y = y.reshape(n, dd, c, y.shape[2], y.shape[3])
    total = None
    for t in _depth_taps(y, k[0], s[0], p[0], 1, od, 0.0):
        total = t if total is None else total + t
    assert total is not None
    if divisor_override is not None:
        out = total / float(divisor_override)
    else:
        with_pad, inside = _avg_divisors(int(dd), od, k[0], s[0], p[0])
        div = (with_pad if count_include_pad else inside).astype(x.dtype.np).reshape(1, od, 1, 1, 1)
        out = total / Tensor._wrap(div, x.device)
    return _unbatch(out.permute(0, 2, 1, 3, 4), squeeze)


def _adaptive_size(fn: str, output_size: Any, spatial: Sequence[Dim], n: int) -> tuple[int, ...]:
    if output_size is None or isinstance(output_size, (int, np.integer)):
        output_size = (output_size,) * n
    if not isinstance(output_size, (list, tuple)) or len(output_size) != n:
        raise ValueError(f"{fn}: output_size must be an int or a tuple of {n} (int or None), got {output_size!r}")
    out = []
    for o, s in zip(output_size, spatial):
        o = s if o is None else o
        if not is_static(o):
            raise ValueError(f"{fn}: output_size None keeps the input size {o}, which is dynamic")
        out.append(int(o))
    return tuple(out)


def adaptive_avg_pool2d(input: Tensor, output_size: int | None | Sequence[int | None]) -> Tensor:  # noqa: A002
    """Adaptive average pooling to output_size (None keeps that input dim)."""
    fn = "adaptive_avg_pool2d"
    x, squeeze = _batched(fn, input, 2, "(N, C, H, W)")
    y = apply(fn, x, output_size=_adaptive_size(fn, output_size, x.shape[2:], 2))
    return _unbatch(y, squeeze)


def adaptive_avg_pool1d(input: Tensor, output_size: int | Sequence[int]) -> Tensor:  # noqa: A002
    """Adaptive average pooling over [N, C, L] or [C, L]."""
    fn = "adaptive_avg_pool1d"
    x, squeeze = _as2d_pool(fn, input)
    (o,) = _adaptive_size(fn, output_size, x.shape[3:], 1)
    y = apply("adaptive_avg_pool2d", x, output_size=(1, o))
    return _unbatch(y.squeeze(2), squeeze)


# ------------------------------------------------------------------------------------ normalisation
def _reduce_dims_except_channel(x: Tensor) -> tuple[int, ...]:
    return (0, *range(2, x.ndim))


def _channel_view(t: Tensor, ndim: int) -> Tensor:
    return t.reshape([1, -1] + [1] * (ndim - 2))


def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,  # noqa: A002
               weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
               momentum: float | None = 0.1, eps: float = 1e-5) -> Tensor:
    """Batch norm over [N, C, *]. Eval mode normalises with the running statistics (the batch_norm op);
    training mode (or no running statistics) uses the batch's, and in training updates the running
    statistics in place (eagerly) with ``momentum`` (None: cumulative average is the caller's job)."""
    fn = "batch_norm"
    _check_tensor(fn, "input", input)
    if input.ndim < 2:
        raise ValueError(f"{fn}: expected input of shape [N, C, *] (at least 2 dims), got {_fmt(input.shape)}")
    use_batch = training or running_mean is None or running_var is None
    if not use_batch:
        return apply("batch_norm", input, running_mean, running_var, weight, bias, eps=eps)
    size = prod(s for i, s in enumerate(input.shape) if i != 1)
    if training and is_static(size) and size == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {_fmt(input.shape)}")
    weight, bias = bind_to_trace(weight, input), bind_to_trace(bias, input)
    dims = _reduce_dims_except_channel(input)
    mean = input.mean(dims, keepdim=True)
    var = input.var(dims, keepdim=True, correction=0)
    y = (input - mean) * (var + eps).rsqrt()
    if weight is not None:
        y = y * _channel_view(weight, input.ndim)
    if bias is not None:
        y = y + _channel_view(bias, input.ndim)
    if training and running_mean is not None and running_var is not None:
        if _is_traced(input):
            raise TraceError("batch_norm: training mode updates the running statistics and cannot be traced; "
                             "trace the model in eval mode")
        m = 0.1 if momentum is None else momentum
        n = int(size)
        unbiased = input.var(dims, correction=1) if n > 1 else input.var(dims, correction=0)
        running_mean.mul_(1 - m).add_(mean.reshape(-1).to(running_mean.dtype) * m)
        running_var.mul_(1 - m).add_(unbiased.to(running_var.dtype) * m)
    return y


def _normalized_shape(fn: str, x: Tensor, normalized_shape: Any) -> tuple[int, ...]:
    if isinstance(normalized_shape, (int, np.integer)):
        normalized_shape = (int(normalized_shape),)
    ns = tuple(normalized_shape)
    if not ns or x.ndim < len(ns) or tuple(x.shape[x.ndim - len(ns):]) != ns:
        raise ValueError(f"{fn}: given normalized_shape={list(ns)}, expected input with shape [*, "
                         f"{', '.join(map(str, ns))}], but got input of size {_fmt(x.shape)}")
    return ns


def layer_norm(input: Tensor, normalized_shape: _Size, weight: Tensor | None = None,  # noqa: A002
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Layer norm over the trailing normalized_shape dims."""
    ns = _normalized_shape("layer_norm", _check_tensor("layer_norm", "input", input), normalized_shape)
    return apply("layer_norm", input, weight, bias, ndim=len(ns), eps=eps)


def group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,  # noqa: A002
               eps: float = 1e-5) -> Tensor:
    """Group norm over [N, C, *]."""
    _check_tensor("group_norm", "input", input)
    if input.ndim < 2:
        raise RuntimeError(f"group_norm: expected at least 2 dims [N, C, *], but got input of size "
                           f"{_fmt(input.shape)}")
    return apply("group_norm", input, weight, bias, num_groups=num_groups, eps=eps)


def instance_norm(input: Tensor, running_mean: Tensor | None = None,  # noqa: A002
                  running_var: Tensor | None = None, weight: Tensor | None = None, bias: Tensor | None = None,
                  use_input_stats: bool = True, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Instance norm over [N, C, *]: each (sample, channel) normalised over its spatial positions (the
    group_norm op with one group per channel); use_input_stats=False normalises with the running
    statistics (the batch_norm op). Running statistics are not updated (inference semantics)."""
    fn = "instance_norm"
    _check_tensor(fn, "input", input)
    if input.ndim < 3:
        raise ValueError(f"{fn}: expected input of shape [N, C, *] with at least one spatial dim, got "
                         f"{_fmt(input.shape)}")
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise ValueError(f"{fn}: Expected running_mean and running_var to be defined when use_input_stats is "
                             "false")
        return apply("batch_norm", input, running_mean, running_var, weight, bias, eps=eps)
    c = input.shape[1]
    if not is_static(c):
        raise ValueError(f"{fn}: the channel dim of input {_fmt(input.shape)} must be static")
    return apply("group_norm", input, weight, bias, num_groups=int(c), eps=eps)


def _finfo_eps(dt: D.dtype) -> float:
    import ml_dtypes

    return float(ml_dtypes.finfo(dt.np).eps)


def rms_norm(input: Tensor, normalized_shape: _Size, weight: Tensor | None = None,  # noqa: A002
             eps: float | None = None) -> Tensor:
    """RMS norm over the trailing normalized_shape dims; eps None is the input dtype's machine epsilon."""
    ns = _normalized_shape("rms_norm", _check_tensor("rms_norm", "input", input), normalized_shape)
    if eps is None:
        eps = _finfo_eps(input.dtype) if input.dtype.is_floating_point else _finfo_eps(D.float32)
    return apply("rms_norm", input, weight, ndim=len(ns), eps=eps)


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> Tensor:  # noqa: A002
    """input / max(||input||_p along dim, eps)."""
    if p == 2:
        n = (input * input).sum(dim, keepdim=True).sqrt()
    elif p == 1:
        n = input.abs().sum(dim, keepdim=True)
    elif p == math.inf:
        n = input.abs().amax(dim, keepdim=True)
    else:
        n = input.abs().pow(float(p)).sum(dim, keepdim=True).pow(1.0 / p)
    return input / n.clamp(min=eps)


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """sum(x1 * x2) / (max(||x1||, eps) * max(||x2||, eps)) along dim, after broadcasting x1 and x2
    (PyTorch's formula: each operand is divided by its clamped norm first)."""
    a, b = _check_tensor("cosine_similarity", "x1", x1), _check_tensor("cosine_similarity", "x2", x2)
    from ..functions import broadcast_tensors

    a, b = broadcast_tensors(a, b)
    na = (a * a).sum(dim, keepdim=True).sqrt().clamp(min=eps)
    nb = (b * b).sum(dim, keepdim=True).sqrt().clamp(min=eps)
    return ((a / na) * (b / nb)).sum(dim)


# ---------------------------------------------------------------------------------------- embedding
def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None, max_norm: float | None = None,  # noqa: A002
              norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """Rows of weight picked by integer indices; padding_idx only matters for training (its row is
    returned as stored)."""
    if padding_idx is not None:
        n = weight.shape[0]
        if not -n <= padding_idx < n:
            raise AssertionError(f"embedding: padding_idx {padding_idx} must be within num_embeddings ({n})")
    if max_norm is not None:
        raise UnsupportedError("embedding: max_norm renormalises the table in place during the forward pass; "
                                  "graphc does not support it (renormalise the weight beforehand)")
    return apply("embedding", input, weight)


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot encoding along a new last dim (num_classes=-1 needs concrete values)."""
    if num_classes < 0:
        num_classes = int(tensor.max().item()) + 1
    classes = arange(num_classes)
    return (tensor.unsqueeze(-1) == classes).to(D.int64)


# ------------------------------------------------------------------------------------------ dropout
def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:  # noqa: A002
    """Inference: the dropout op (an identity). Training: zero elements with probability p and scale the
    rest by 1/(1-p), with graphc's random generator (eager only)."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return _inplace(input, apply("dropout", input, p=float(p)), inplace)
    if _is_traced(input):
        raise TraceError("dropout: training-mode dropout is random and cannot be traced; call it with "
                         "training=self.training (graphc.trace puts the model in eval mode)")
    from ..random import _gen

    arr = input.numpy()
    if p == 1.0:
        out = np.zeros_like(arr)
    else:
        keep = _gen(None).random(arr.shape) >= p
        out = (arr * keep / (1.0 - p)).astype(arr.dtype)
    return _inplace(input, Tensor._wrap(out, input.device), inplace)


# -------------------------------------------------------------------------------------- activations
def relu(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    return _inplace(input, apply("relu", input), inplace)


def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Tensor:  # noqa: A002
    if min_val > max_val:
        raise ValueError("hardtanh: min_val cannot be greater than max_val")
    return _inplace(input, apply("hardtanh", input, min_val=float(min_val), max_val=float(max_val)), inplace)


def relu6(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    return hardtanh(input, 0.0, 6.0, inplace)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:  # noqa: A002
    return _inplace(input, apply("leaky_relu", input, negative_slope=float(negative_slope)), inplace)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:  # noqa: A002
    return apply("gelu", input, approximate=approximate)


def silu(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    return _inplace(input, apply("silu", input), inplace)


def sigmoid(input: Tensor) -> Tensor:  # noqa: A002
    return input.sigmoid()


def tanh(input: Tensor) -> Tensor:  # noqa: A002
    return input.tanh()


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:  # noqa: A002
    return _inplace(input, apply("elu", input, alpha=float(alpha)), inplace)


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def selu(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    return _inplace(input, apply("elu", input, alpha=_SELU_ALPHA) * _SELU_SCALE, inplace)


def celu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:  # noqa: A002
    return _inplace(input, apply("elu", input / alpha, alpha=1.0) * alpha if alpha != 1.0 else
                    apply("elu", input, alpha=1.0), inplace)


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:  # noqa: A002
    return apply("softplus", input, beta=float(beta), threshold=float(threshold))


def mish(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    return _inplace(input, input * softplus(input).tanh(), inplace)


def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    return _inplace(input, hardtanh(input + 3.0, 0.0, 6.0) / 6.0, inplace)


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    return _inplace(input, input * hardtanh(input + 3.0, 0.0, 6.0) / 6.0, inplace)


def logsigmoid(input: Tensor) -> Tensor:  # noqa: A002
    return -softplus(-input)


def softsign(input: Tensor) -> Tensor:  # noqa: A002
    return input / (input.abs() + 1.0)


def tanhshrink(input: Tensor) -> Tensor:  # noqa: A002
    return input - input.tanh()


def glu(input: Tensor, dim: int = -1) -> Tensor:  # noqa: A002
    a, b = input.chunk(2, dim)
    return a * b.sigmoid()


def _softmax_dim(ndim: int) -> int:
    return 0 if ndim in (0, 1, 3) else 1  # PyTorch's legacy implicit dim


def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:  # noqa: A002
    return input.softmax(_softmax_dim(input.ndim) if dim is None else dim, dtype=dtype)


def log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:  # noqa: A002
    return input.log_softmax(_softmax_dim(input.ndim) if dim is None else dim, dtype=dtype)


def softmin(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:  # noqa: A002
    return softmax(-input, dim, dtype=dtype)


# -------------------------------------------------------------------------------------------- pad
_PAD_MODES = ("constant", "reflect", "replicate", "circular")


def _pad_index(mode: str, size: int, lo: int, hi: int) -> np.ndarray:
    """Source index along one dim for each output position of a reflect/replicate/circular pad."""
    if mode == "circular":  # wraps over the dim after negative pads crop it (PyTorch)
        start, size = max(0, -lo), size - max(0, -lo) - max(0, -hi)
        j = np.arange(size + max(lo, 0) + max(hi, 0)) - max(lo, 0)
        return (start + np.mod(j, size)).astype(np.int64)
    j = np.arange(size + lo + hi) - lo
    if mode == "replicate":
        return np.clip(j, 0, size - 1).astype(np.int64)
    j = np.abs(j)  # reflect: mirror at the first and the last element, which are not repeated
    return np.where(j > size - 1, 2 * (size - 1) - j, j).astype(np.int64)


def _pad_dynamic(x: Tensor, d: int, mode: str, lo: int, hi: int) -> Tensor:
    """A reflect/replicate/circular pad of a symbolic dim: slices of single rows (reflect), the edge
    rows expanded (replicate) or the wrapped-around ends (circular), concatenated around x."""
    if lo < 0 or hi < 0:
        raise ValueError(f"pad: negative padding ({lo}, {hi}) of the dynamic dim {d} is not supported")
    n = x.shape[d]

    def rows(start: Any, end: Any) -> Tensor:
        return apply("slice", x, dim=d, start=start, end=end, step=1)

    def rep(row: Tensor, k: int) -> Tensor:
        shape = list(row.shape)
        shape[d] = k
        return row.expand(*shape)

    if mode == "replicate":
        left = [rep(rows(0, 1), lo)] if lo else []
        right = [rep(rows(n - 1, n), hi)] if hi else []
    elif mode == "circular":
        left = [rows(n - lo, n)] if lo else []
        right = [rows(0, hi)] if hi else []
    else:  # reflect: rows lo, ..., 1 before and n-2, ..., n-1-hi after
        left = [rows(k, k + 1) for k in range(lo, 0, -1)]
        right = [rows(n - 2 - k, n - 1 - k) for k in range(hi)]
    return apply("concat", *left, x, *right, dim=d)


def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Tensor:  # noqa: A002
    """F.pad: pads in F.pad's order (last dim first); negative pads crop. mode 'constant' fills with
    value; 'reflect', 'replicate' and 'circular' pad the last 1, 2 or 3 dims of a batched or unbatched
    input by picking source indices (index_select along each padded dim)."""
    _check_tensor("pad", "input", input)
    pads = [int(p) for p in pad]
    if len(pads) % 2:
        raise ValueError(f"pad: padding length must be divisible by 2, got {len(pads)}")
    if len(pads) // 2 > input.ndim:
        raise ValueError(f"pad: padding length {len(pads)} is too large for a {input.ndim}-d input")
    if mode not in _PAD_MODES:
        raise ValueError(f"pad: unrecognised padding mode {mode!r}; expected one of {', '.join(_PAD_MODES)}")
    if mode == "constant":
        if not any(pads):
            return input
        return apply("pad", input, pads=pads, value=0 if value is None else value)
    if value is not None and value != 0:
        raise ValueError(f"pad: padding mode {mode!r} doesn't take in value argument")
    npad = len(pads) // 2
    if npad not in (1, 2, 3) or input.ndim not in (npad + 1, npad + 2):
        raise ValueError(f"pad: mode {mode!r} pads the last 1, 2 or 3 dims with 2, 4 or 6 pad values of a 2-d or "
                         f"3-d, 3-d or 4-d, 4-d or 5-d input; got {len(pads)} pad values for a {input.ndim}-d "
                         f"input of shape {_fmt(input.shape)}")
    y = input
    for i in range(npad):
        d = input.ndim - 1 - i
        lo, hi = pads[2 * i], pads[2 * i + 1]
        if lo == 0 and hi == 0:
            continue
        n = input.shape[d]
        if not is_static(n):
            y = _pad_dynamic(y, d, mode, lo, hi)
            continue
        if mode == "reflect" and (lo >= n or hi >= n):
            raise ValueError(f"pad: padding size should be less than the corresponding input dimension for mode "
                             f"'reflect', but got padding ({lo}, {hi}) at dimension {d} of input "
                             f"{_fmt(input.shape)}")
        if mode == "circular" and (lo > n or hi > n):
            raise ValueError(f"pad: padding ({lo}, {hi}) at dimension {d} of input {_fmt(input.shape)} would wrap "
                             "around more than once in mode 'circular'")
        if n + lo + hi < 0 or (mode == "circular" and n - max(0, -lo) - max(0, -hi) <= 0 and (lo > 0 or hi > 0)):
            raise ValueError(f"pad: padding ({lo}, {hi}) at dimension {d} leaves nothing of input "
                             f"{_fmt(input.shape)}")
        idx = _pad_index(mode, int(n), lo, hi)
        y = apply("index_select", y, Tensor._wrap(idx, input.device), dim=d)
    return y


# ------------------------------------------------------------------------------ resampling and layout
def _spatial_static(fn: str, x: Tensor, nsp: int) -> list[int]:
    sp = list(x.shape[x.ndim - nsp:])
    for s in sp:
        if not is_static(s):
            raise ValueError(f"{fn}: dynamic spatial dims are not supported (input {_fmt(x.shape)}); only the "
                             "batch dim may be dynamic")
    return [int(s) for s in sp]


def _along(x: Tensor, dim: int, taps: list[tuple[np.ndarray, np.ndarray | None]]) -> Tensor:
    """sum_k x.index_select(dim, idx_k) * w_k, w_k broadcast along dim (None: weight 1)."""
    n = x.shape[dim]
    if len(taps) == 1 and taps[0][1] is None and len(taps[0][0]) == n and (taps[0][0] == np.arange(n)).all():
        return x  # the identity (same size, nearest)
    out = None
    for idx, w in taps:
        if w is not None and not w.any():
            continue
        y = apply("index_select", x, Tensor._wrap(idx.astype(np.int64), x.device), dim=dim)
        if w is not None and not (w == 1).all():
            shape = (len(w),) + (1,) * (x.ndim - 1 - dim)
            y = y * Tensor._wrap(w.astype(x.dtype.np).reshape(shape), x.device)
        out = y if out is None else out + y
    assert out is not None, "interpolation weights sum to 1, so some tap is non-zero"
    return out


def _interp_scale(n_in: int, n_out: int, align_corners: bool, scale: float | None, ft: type) -> np.floating:
    """PyTorch's area_pixel_compute_scale in the kernel's opmath type ft (float32 for float32 inputs)."""
    if align_corners:
        return ft((n_in - 1) / (n_out - 1)) if n_out > 1 else ft(0)
    if scale is not None and scale > 0:
        return ft(1.0 / scale)
    return ft(ft(n_in) / ft(n_out))


def _taps(mode: str, n_in: int, n_out: int, align_corners: bool, scale: float | None, dt: D.dtype
          ) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The (source index, weight) pairs of one spatial dim, computed as PyTorch's CPU kernels do: nearest
    indices in float32, linear and cubic weights in the input's opmath type (float64 for float64)."""
    if mode in ("nearest", "nearest-exact"):
        f32 = np.float32
        s = _interp_scale(n_in, n_out, False, scale, f32)
        dst = np.arange(n_out, dtype=f32)
        src = np.floor(dst * s) if mode == "nearest" else np.floor((dst + f32(0.5)) * s)
        return [(np.minimum(src.astype(np.int64), n_in - 1), None)]
    ft: type = np.float64 if dt is D.float64 else np.float32
    s = _interp_scale(n_in, n_out, align_corners, scale, ft)
    cubic = mode == "bicubic"
    dst = np.arange(n_out, dtype=ft)
    if align_corners:
        real = s * dst
    else:
        real = s * (dst + ft(0.5)) - ft(0.5)
        if not cubic:
            real = np.maximum(real, ft(0))
    i0 = np.minimum(np.floor(real).astype(np.int64), n_in - 1)
    lam = np.clip(real - i0.astype(ft), 0, 1).astype(ft)
    if not cubic:
        i1 = i0 + (i0 < n_in - 1)
        return [(i0, ft(1) - lam), (i1, lam)]
    a = ft(-0.75)

    def c1(t: np.ndarray) -> np.ndarray:  # |t| <= 1
        return ((a + 2) * t - (a + 3)) * t * t + 1

    def c2(t: np.ndarray) -> np.ndarray:  # 1 < |t| < 2
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a

    ws = [c2(lam + 1), c1(lam), c1(1 - lam), c2(2 - lam)]
    return [(np.clip(i0 - 1 + k, 0, n_in - 1), ws[k].astype(ft)) for k in range(4)]


_INTERP_DIMS = {"linear": 1, "bilinear": 2, "bicubic": 2, "trilinear": 3}


def interpolate(input: Tensor, size: int | Sequence[int] | None = None,  # noqa: A002
                scale_factor: float | Sequence[float] | None = None, mode: str = "nearest",
                align_corners: bool | None = None, recompute_scale_factor: bool | None = None,
                antialias: bool = False) -> Tensor:
    """F.interpolate over [N, C, *S] (S of 1, 2 or 3 dims): modes nearest, nearest-exact, linear,
    bilinear, bicubic, trilinear (separable: per spatial dim, a weighted sum of index_selects with the
    weights PyTorch's kernels use) and area (adaptive average pooling)."""
    fn = "interpolate"
    _check_tensor(fn, "input", input)
    modes = ("nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear", "area")
    if mode not in modes:
        raise ValueError(f"{fn}: mode {mode!r} is not one of {', '.join(modes)}")
    if mode in ("nearest", "nearest-exact", "area"):
        if align_corners is not None:
            raise ValueError("align_corners option can only be set with the interpolating modes: "
                             "linear | bilinear | bicubic | trilinear")
    elif align_corners is None:
        align_corners = False
    if antialias:
        raise UnsupportedError(f"{fn}: antialias=True is not supported by graphc")
    if input.ndim not in (3, 4, 5):
        raise ValueError(f"{fn}: only 3D, 4D and 5D input tensors [N, C, *spatial] are supported, got a "
                         f"{input.ndim}-d input of shape {_fmt(input.shape)}")
    nsp = input.ndim - 2
    want = _INTERP_DIMS.get(mode)
    if want is not None and want != nsp:
        raise ValueError(f"{fn}: got {input.ndim}D input, but {mode} mode needs {want + 2}D input")
    if not input.dtype.is_floating_point and mode not in ("nearest", "nearest-exact"):
        raise ValueError(f"{fn}: mode {mode!r} expects a floating-point input, got {input.dtype.name} (the "
                         "nearest modes take any dtype)")
    if (size is None) == (scale_factor is None):
        raise ValueError("only one of size or scale_factor should be defined" if size is not None else
                         "either size or scale_factor should be defined")
    if not all(is_static(d) for d in input.shape[2:]):
        if size is not None:  # a size that is a whole multiple of the input's (skip.shape[-2:] and the like)
            sizes = list(size) if isinstance(size, (list, tuple)) else [size] * nsp
            factors = [next((f for f in range(1, 9) if o == n * f), None) for o, n in zip(sizes, input.shape[2:])]
            if len(sizes) == nsp and None not in factors:
                return _interpolate_dynamic(input, factors, mode, bool(align_corners), False)
        return _interpolate_dynamic(input, scale_factor, mode, bool(align_corners), size is not None)
    sp = _spatial_static(fn, input, nsp)
    scales: list[float | None]
    if size is not None:
        out = list(size) if isinstance(size, (list, tuple)) else [size] * nsp
        if len(out) != nsp:
            raise ValueError(f"{fn}: input and output must have the same number of spatial dimensions, but got "
                             f"input with spatial dimensions of {sp} and output size of {list(out)}")
        out = [int(o) for o in out]
        scales = [None] * nsp
    else:
        sf = list(scale_factor) if isinstance(scale_factor, (list, tuple)) else [scale_factor] * nsp
        if len(sf) != nsp:
            raise ValueError(f"{fn}: input and scale_factor must have the same number of spatial dimensions, but "
                             f"got input with spatial dimensions of {sp} and scale_factor of shape {sf}")
        sf = [float(s) for s in sf]
        out = [int(math.floor(float(n) * s)) for n, s in zip(sp, sf)]
        scales = [None] * nsp if recompute_scale_factor else list(sf)
    if min(out) < 1:
        raise ValueError(f"{fn}: output size {out} must be positive (input spatial size {sp})")
    if mode == "area":
        if nsp == 3:
            raise UnsupportedError(f"{fn}: mode 'area' on 5-d inputs is not supported by graphc")
        return (adaptive_avg_pool1d(input, out[0]) if nsp == 1 else adaptive_avg_pool2d(input, out))
    y = input
    for i in range(nsp):
        y = _along(y, 2 + i, _taps(mode, sp[i], out[i], bool(align_corners), scales[i], input.dtype))
    return y


def _interpolate_dynamic(x: Tensor, scale_factor: Any, mode: str, align_corners: bool, by_size: bool) -> Tensor:
    """interpolate over symbolic spatial dims: integer scale factors, where the source positions repeat
    with the period of the factor. nearest: each element repeated s times (unsqueeze, expand,
    reshape); linear modes without align_corners: output s*i + r is a fixed blend of x[i - 1], x[i],
    x[i + 1] (the input padded by replication, as PyTorch clamps its source indices)."""
    fn = "interpolate"
    nsp = x.ndim - 2
    sf = list(scale_factor) if isinstance(scale_factor, (list, tuple)) else [scale_factor] * nsp
    ok_mode = mode in ("nearest", "nearest-exact") or (mode in ("linear", "bilinear", "trilinear")
                                                         and not align_corners)
    if by_size or not ok_mode or len(sf) != nsp or any(float(f) != int(f) or f < 1 for f in sf):
        raise ValueError(f"{fn}: with dynamic spatial dims (input {_fmt(x.shape)}) graphc supports integer "
                         "scale_factor values with mode 'nearest', 'nearest-exact' or a linear mode without "
                         f"align_corners; got mode={mode!r}, align_corners={align_corners}, "
                         f"{'size' if by_size else f'scale_factor={scale_factor}'}")
    ft = np.float64 if x.dtype is D.float64 else np.float32
    y = x
    for i, f in enumerate(int(v) for v in sf):
        d = 2 + i
        if f == 1:
            continue
        n = y.shape[d]
        if mode.startswith("nearest"):
            parts = [y] * f
        else:
            xp = apply("concat", apply("slice", y, dim=d, start=0, end=1, step=1), y,
                       apply("slice", y, dim=d, start=n - 1, end=n, step=1), dim=d)

            def win(k: int, src: Tensor = xp, size: Any = n, dim: int = d) -> Tensor:
                return apply("slice", src, dim=dim, start=k, end=size + k, step=1)

            parts = []
            for r in range(f):
                delta = float(ft(1.0 / f) * ft(r + 0.5) - ft(0.5))  # the source offset of output s*i + r
                if delta == 0:
                    parts.append(y)
                elif delta < 0:
                    parts.append(win(0) * (-delta) + win(1) * (1 + delta))
                else:
                    parts.append(win(1) * (1 - delta) + win(2) * delta)
        z = apply("concat", *(p.unsqueeze(d + 1) for p in parts), dim=d + 1)
        shape = list(y.shape)
        shape[d] = n * f
        y = z.reshape(shape)
    return y


def upsample(input: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest",  # noqa: A002
             align_corners: bool | None = None) -> Tensor:
    """Deprecated alias of interpolate."""
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input: Tensor, size: Any = None, scale_factor: Any = None) -> Tensor:  # noqa: A002
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input: Tensor, size: Any = None, scale_factor: Any = None) -> Tensor:  # noqa: A002
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)


def pixel_shuffle(input: Tensor, upscale_factor: int) -> Tensor:  # noqa: A002
    """[*, C*r*r, H, W] -> [*, C, H*r, W*r] (a reshape and a permute)."""
    _check_tensor("pixel_shuffle", "input", input)
    r = int(upscale_factor)
    if input.ndim < 3:
        raise ValueError(f"pixel_shuffle expects input to have at least 3 dimensions, but got input with "
                         f"{input.ndim} dimension(s)")
    if r <= 0:
        raise ValueError(f"pixel_shuffle expects a positive upscale_factor, but got {r}")
    *lead, c, h, w = input.shape
    if not is_static(c) or c % (r * r):
        raise ValueError(f"pixel_shuffle expects its input's 'channel' dimension to be divisible by the square of "
                         f"upscale_factor, but input.size(-3)={c} is not divisible by {r * r}")
    nl = len(lead)
    y = input.reshape(*lead, c // (r * r), r, r, h, w)
    y = y.permute(*range(nl), nl, nl + 3, nl + 1, nl + 4, nl + 2)
    return y.reshape(*lead, c // (r * r), h * r, w * r)


def pixel_unshuffle(input: Tensor, downscale_factor: int) -> Tensor:  # noqa: A002
    """[*, C, H*r, W*r] -> [*, C*r*r, H, W] (a reshape and a permute)."""
    _check_tensor("pixel_unshuffle", "input", input)
    r = int(downscale_factor)
    if input.ndim < 3:
        raise ValueError(f"pixel_unshuffle expects input to have at least 3 dimensions, but got input with "
                         f"{input.ndim} dimension(s)")
    if r <= 0:
        raise ValueError(f"pixel_unshuffle expects a positive downscale_factor, but got {r}")
    *lead, c, h, w = input.shape
    for name, n in (("height", h), ("width", w)):
        if not is_static(n) or n % r:
            raise ValueError(f"pixel_unshuffle expects {name} to be divisible by downscale_factor, but input.size"
                             f"({-2 if name == 'height' else -1})={n} is not divisible by {r}")
    nl = len(lead)
    y = input.reshape(*lead, c, h // r, r, w // r, r)
    y = y.permute(*range(nl), nl, nl + 2, nl + 4, nl + 1, nl + 3)
    return y.reshape(*lead, c * r * r, h // r, w // r)


def unfold(input: Tensor, kernel_size: _Size, dilation: _Size = 1, padding: _Size = 0,  # noqa: A002
           stride: _Size = 1) -> Tensor:
    """im2col: [N, C, H, W] (or [C, H, W]) -> [N, C*kh*kw, L] with the blocks of the sliding window
    (strided slices of the zero-padded input, stacked)."""
    fn = "unfold"
    x, squeeze = _batched(fn, input, 2, "(N, C, H, W)")
    k = _ntuple(fn, "kernel_size", kernel_size, 2)
    d = _ntuple(fn, "dilation", dilation, 2)
    p = _ntuple(fn, "padding", padding, 2)
    s = _ntuple(fn, "stride", stride, 2)
    if min(k) < 1 or min(d) < 1 or min(s) < 1 or min(p) < 0:
        raise ValueError(f"{fn}: kernel_size, dilation and stride must be positive and padding non-negative, got "
                         f"kernel_size={k}, dilation={d}, padding={p}, stride={s}")
    h, w = _spatial_static(fn, x, 2)
    oh = (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    ow = (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"{fn}: the sliding blocks {k} (dilation {d}, padding {p}) do not fit input "
                         f"{_fmt(input.shape)}: the computed output blocks are {oh} x {ow}")
    if any(p):
        x = apply("pad", x, pads=[p[1], p[1], p[0], p[0]], value=0.0)
    cols = []
    for a in range(k[0]):
        for b in range(k[1]):
            c = x[:, :, a * d[0]: a * d[0] + s[0] * (oh - 1) + 1: s[0], b * d[1]: b * d[1] + s[1] * (ow - 1) + 1: s[1]]
            cols.append(c.unsqueeze(2))
    n, ch = x.shape[0], x.shape[1]
    y = cols[0] if len(cols) == 1 else apply("concat", *cols, dim=2)
    return _unbatch(y.reshape(n, ch * k[0] * k[1], oh * ow), squeeze)


def fold(input: Tensor, output_size: _Size, kernel_size: _Size, dilation: _Size = 1,  # noqa: A002
         padding: _Size = 0, stride: _Size = 1) -> Tensor:
    """col2im, the adjoint of unfold: [N, C*kh*kw, L] (or [C*kh*kw, L]) -> [N, C, H, W], overlapping
    blocks summed. A transposed convolution with one-hot kernels (groups=C) places each column's values
    at their window positions; rows and columns no window reaches are zero padding."""
    fn = "fold"
    _check_tensor(fn, "input", input)
    if input.ndim not in (2, 3):
        raise ValueError(f"{fn}: expected a 2-d (unbatched) or 3-d (batched) input [N, C*kh*kw, L], got "
                         f"{_fmt(input.shape)}")
    x, squeeze = (input.unsqueeze(0), True) if input.ndim == 2 else (input, False)
    out = _ntuple(fn, "output_size", output_size, 2)
    k = _ntuple(fn, "kernel_size", kernel_size, 2)
    d = _ntuple(fn, "dilation", dilation, 2)
    p = _ntuple(fn, "padding", padding, 2)
    s = _ntuple(fn, "stride", stride, 2)
    kk = k[0] * k[1]
    ckk, n_blocks = x.shape[1], x.shape[2]
    if not is_static(ckk) or ckk % kk:
        raise ValueError(f"{fn}: expected size of input's dimension 1 to be divisible by the product of kernel_size, "
                         f"but got input.size(1)={ckk} and kernel_size={k}")
    blocks = [(out[i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(2)]
    if min(blocks) < 1 or n_blocks != blocks[0] * blocks[1]:
        raise ValueError(f"{fn}: given output_size={out}, kernel_size={k}, dilation={d}, padding={p}, stride={s}, "
                         f"expected size of input's dimension 2 to match the calculated number of sliding blocks "
                         f"{blocks[0]} * {blocks[1]} = {blocks[0] * blocks[1]}, but got input.size(2)={n_blocks}")
    c = ckk // kk
    w = np.zeros((ckk, 1, k[0], k[1]), dtype=x.dtype.np)
    for ch in range(c):
        for a in range(k[0]):
            for b in range(k[1]):
                w[ch * kk + a * k[1] + b, 0, a, b] = 1
    y = apply("conv_transpose", x.reshape(x.shape[0], ckk, blocks[0], blocks[1]), Tensor._wrap(w, x.device), None,
              stride=s, padding=p, output_padding=(0, 0), dilation=d, groups=c)
    extra = [out[i] - y.shape[2 + i] for i in range(2)]
    if any(extra):
        y = apply("pad", y, pads=[0, extra[1], 0, extra[0]], value=0.0)
    return _unbatch(y, squeeze)


def prelu(input: Tensor, weight: Tensor) -> Tensor:  # noqa: A002
    """x where x >= 0, weight * x elsewhere; weight has 1 element or one per channel (dim 1)."""
    _check_tensor("prelu", "input", input)
    _check_tensor("prelu", "weight", weight)
    nw = weight.numel() if weight.ndim else 1
    w = bind_to_trace(weight, input)
    if nw != 1:
        c = input.shape[1] if input.ndim >= 2 else 1
        if weight.ndim != 1 or c != nw:
            raise ValueError(f"prelu: mismatch in the number of parameters ({nw}) and the input channel size ({c}) "
                             f"of input {_fmt(input.shape)}")
        w = w.reshape([-1] + [1] * (input.ndim - 2))
    elif input.ndim >= 1:
        w = w.reshape([1] * input.ndim) if w.ndim else w
    return where(input >= 0, input, input * w)


def adaptive_max_pool2d(input: Tensor, output_size: int | None | Sequence[int | None],  # noqa: A002
                        return_indices: bool = False) -> Tensor:
    """Adaptive max pooling (max over the bins [floor(i*H/OH), ceil((i+1)*H/OH))): max_pool2d when the
    bins tile the input evenly, else the max of each bin of rows, then of each bin of columns (a max over
    a rectangle is the max over its rows of the max over its columns)."""
    fn = "adaptive_max_pool2d"
    _no_indices(fn, return_indices)
    x, squeeze = _batched(fn, input, 2, "(N, C, H, W)")
    if output_size == 1 or output_size == (1, 1) or output_size == [1, 1]:  # global max (any size, dynamic too)
        return _unbatch(x.amax((2, 3), keepdim=True), squeeze)
    sp = _spatial_static(fn, x, 2)
    out = _adaptive_size(fn, output_size, sp, 2)
    if min(out) < 1 or min(sp) < 1:
        raise ValueError(f"{fn}: output_size {out} and the input's spatial size {sp} must be positive")
    if all(n % o == 0 for n, o in zip(sp, out)):
        k = tuple(n // o for n, o in zip(sp, out))
        y = apply("max_pool2d", x, kernel=k, stride=k, padding=(0, 0), dilation=(1, 1), ceil_mode=False)
        return _unbatch(y, squeeze)
    y = x
    for i, (n, o) in enumerate(zip(sp, out)):
        dim = 2 + i
        if n == o:
            continue
        parts = []
        for j in range(o):
            lo, hi = (j * n) // o, -((-(j + 1) * n) // o)
            parts.append(apply("slice", y, dim=dim, start=lo, end=hi, step=1).amax(dim, keepdim=True))
        y = parts[0] if len(parts) == 1 else apply("concat", *parts, dim=dim)
    return _unbatch(y, squeeze)


def adaptive_max_pool1d(input: Tensor, output_size: int | Sequence[int],  # noqa: A002
                        return_indices: bool = False) -> Tensor:
    """Adaptive max pooling over [N, C, L] or [C, L]."""
    fn = "adaptive_max_pool1d"
    _no_indices(fn, return_indices)
    x, squeeze = _as2d_pool(fn, input)
    (o,) = _adaptive_size(fn, output_size, x.shape[3:], 1)
    return _unbatch(adaptive_max_pool2d(x, (1, o)).squeeze(2), squeeze)


# -------------------------------------------------------------------------------------- attention
def _attn_mask(mask: Tensor, dt: D.dtype) -> Tensor:
    """A bool mask (True = attend) becomes the additive 0 / -inf mask of the query's dtype."""
    if mask.dtype is D.bool_:
        return where(mask, 0.0, float("-inf")).to(dt)
    if not mask.dtype.is_floating_point:
        raise TypeError(f"scaled_dot_product_attention: attn_mask must be bool or floating point, got {mask.dtype}")
    return mask.to(dt)


def _broadcast_batch(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    from ..ops.registry import broadcast_shapes

    batch = broadcast_shapes("scaled_dot_product_attention", q.shape[:-2], k.shape[:-2], v.shape[:-2])

    def ex(t: Tensor) -> Tensor:
        return t.expand(*batch, *t.shape[-2:]) if tuple(t.shape[:-2]) != tuple(batch) else t

    return ex(q), ex(k), ex(v)


def _repeat_heads(t: Tensor, rep: int) -> Tensor:
    """[..., Hk, T, D] -> [..., Hk*rep, T, D], each head repeated rep times (repeat_interleave)."""
    shape = list(t.shape)
    x = t.unsqueeze(-3)
    return x.expand(*shape[:-2], rep, *shape[-2:]).reshape(*shape[:-3], shape[-3] * rep, *shape[-2:])


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
                                 dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False) -> Tensor:
    """softmax(query @ key^T * scale + mask) @ value (PyTorch's math semantics; see ops/nn.py sdpa).

    Bool masks mark the positions that take part (True); float masks are added to the scores.
    ``is_causal`` masks key j for query i when j > i. ``enable_gqa`` repeats key/value heads
    (dim -3) to the query's head count. dropout_p > 0 drops attention weights (eager only)."""
    fn = "scaled_dot_product_attention"
    for name, t in (("query", query), ("key", key), ("value", value)):
        _check_tensor(fn, name, t)
        if t.ndim < 2:
            raise ValueError(f"{fn}: {name} must have at least 2 dims [..., L, E], got {_fmt(t.shape)}")
    if attn_mask is not None and is_causal:
        raise RuntimeError(f"{fn}: explicit attn_mask should not be set when is_causal=True")
    if scale is None:
        e = query.shape[-1]
        if not is_static(e):
            raise ValueError(f"{fn}: the head size {e} is dynamic; pass scale explicitly")
        scale = 1.0 / math.sqrt(e)
    q, k, v = query, key, value
    if q.dtype is not k.dtype or q.dtype is not v.dtype:
        raise RuntimeError(f"{fn}: expected query, key and value to have the same dtype, but got query.dtype: "
                           f"{q.dtype}, key.dtype: {k.dtype} and value.dtype: {v.dtype} instead.")
    if enable_gqa and q.ndim >= 3:
        hq, hk, hv = q.shape[-3], k.shape[-3], v.shape[-3]
        shared = v is k
        if hk != hq:
            if hq % hk:
                raise RuntimeError(f"{fn}: number of query heads {hq} must be a multiple of key heads {hk}")
            k = _repeat_heads(k, hq // hk)
        if shared:
            v = k
        elif hv != hq:
            if hq % hv:
                raise RuntimeError(f"{fn}: number of query heads {hq} must be a multiple of value heads {hv}")
            v = _repeat_heads(v, hq // hv)
    q, k, v = _broadcast_batch(q, k, v)
    mask = None if attn_mask is None else _attn_mask(bind_to_trace(attn_mask, q), q.dtype)
    if dropout_p > 0.0:
        if _is_traced(q):
            raise TraceError(f"{fn}: dropout_p > 0 is random and cannot be traced; pass "
                             "dropout_p=p if self.training else 0.0")
        s = q.matmul(k.transpose(-2, -1)) * scale
        if mask is not None:
            s = s + mask
        if is_causal:
            tq, tk = s.shape[-2], s.shape[-1]
            s = s.masked_fill(arange(tk).reshape(1, -1) > arange(tq).reshape(-1, 1), float("-inf"))
        w = dropout(s.softmax(-1), dropout_p, training=True)
        return w.matmul(v)
    return apply("sdpa", q, k, v, mask, scale=float(scale), is_causal=bool(is_causal))


# ------------------------------------------------------------------------------------------- losses
def _reduce(loss: Tensor, reduction: str, fn: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{fn}: {reduction!r} is not a valid value for reduction ('none', 'mean', 'sum')")


def _legacy_reduction(fn: str, size_average: Any, reduce: Any, reduction: str) -> str:
    """PyTorch's deprecated size_average/reduce arguments mapped onto reduction."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return ("mean" if size_average else "sum") if reduce else "none"


def _weighted(loss: Tensor, weight: Tensor | None) -> Tensor:
    return loss if weight is None else loss * bind_to_trace(weight, loss)


def mse_loss(input: Tensor, target: Tensor, size_average: Any = None, reduce: Any = None,  # noqa: A002
             reduction: str = "mean", weight: Tensor | None = None) -> Tensor:
    d = input - target
    return _reduce(_weighted(d * d, weight), _legacy_reduction("mse_loss", size_average, reduce, reduction),
                   "mse_loss")


def l1_loss(input: Tensor, target: Tensor, size_average: Any = None, reduce: Any = None,  # noqa: A002
            reduction: str = "mean", weight: Tensor | None = None) -> Tensor:
    return _reduce(_weighted((input - target).abs(), weight),
                   _legacy_reduction("l1_loss", size_average, reduce, reduction), "l1_loss")


def _class_dim_last(x: Tensor) -> Tensor:
    """[N, C, d1, ...] -> [N, d1, ..., C]; [C] and [N, C] unchanged."""
    if x.ndim <= 2:
        return x
    return x.permute(0, *range(2, x.ndim), 1)


def _nll(logp: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int, reduction: str,
         label_smoothing: float, fn: str) -> Tensor:
    if target.dtype.is_floating_point:  # class probabilities
        lp = _class_dim_last(logp)
        tg = _class_dim_last(target)
        if label_smoothing > 0:
            tg = tg * (1 - label_smoothing) + label_smoothing / lp.shape[-1]
        per = lp * tg if weight is None else lp * tg * weight
        loss = -per.sum(-1)
        if reduction == "mean":
            n = prod(loss.shape)
            return loss.sum() / float(n) if lp.ndim > 1 else loss.sum()
        return _reduce(loss, reduction, fn)
    lp = _class_dim_last(logp)  # [..., C]
    c = lp.shape[-1]
    tgt = target.to(D.int64)
    valid = tgt != ignore_index
    safe = where(valid, tgt, 0)
    hot = (safe.unsqueeze(-1) == arange(c)).to(lp.dtype)  # [..., C]
    w_cls = hot if weight is None else hot * weight
    wt = w_cls.sum(-1) * valid.to(lp.dtype)  # per-element class weight, 0 when ignored
    nll = -(lp * w_cls).sum(-1) * valid.to(lp.dtype)
    if label_smoothing > 0:
        smooth = -(lp if weight is None else lp * weight).sum(-1) * valid.to(lp.dtype)
        if reduction == "mean":
            denom = wt.sum()
            return (nll.sum() / denom) * (1 - label_smoothing) + (smooth.sum() / denom) * (label_smoothing / c)
        loss = nll * (1 - label_smoothing) + smooth * (label_smoothing / c)
        return _reduce(loss, reduction, fn)
    if reduction == "mean":
        return nll.sum() / wt.sum()
    return _reduce(nll, reduction, fn)


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average: Any = None,  # noqa: A002
             ignore_index: int = -100, reduce: Any = None, reduction: str = "mean") -> Tensor:
    """Negative log likelihood of log-probabilities [N, C, *] or [C] at integer targets."""
    reduction = _legacy_reduction("nll_loss", size_average, reduce, reduction)
    return _nll(input, target, bind_to_trace(weight, input), ignore_index, reduction, 0.0, "nll_loss")


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average: Any = None,  # noqa: A002
                  ignore_index: int = -100, reduce: Any = None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """log_softmax over the class dim (1, or 0 for an unbatched [C] input) followed by nll_loss;
    targets are class indices or class probabilities."""
    reduction = _legacy_reduction("cross_entropy", size_average, reduce, reduction)
    cdim = 0 if input.ndim == 1 else 1
    return _nll(input.log_softmax(cdim), target, bind_to_trace(weight, input), ignore_index, reduction,
                label_smoothing, "cross_entropy")


def _check_same_size(fn: str, input: Tensor, target: Tensor) -> None:  # noqa: A002
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(f"{fn}: Target size ({_fmt(target.shape)}) must be the same as input size "
                         f"({_fmt(input.shape)})")


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Tensor | None = None,  # noqa: A002
                                     size_average: Any = None, reduce: Any = None, reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """(1 - t) * x + (1 + (pos_weight - 1) * t) * softplus(-x), times weight; softplus is linear past its
    threshold, so large |x| stay finite as in PyTorch's log-sum-exp form."""
    fn = "binary_cross_entropy_with_logits"
    reduction = _legacy_reduction(fn, size_average, reduce, reduction)
    _check_same_size(fn, input, target)
    sp = softplus(-input)
    if pos_weight is not None:
        sp = sp * ((bind_to_trace(pos_weight, input) - 1.0) * target + 1.0)
    loss = (1.0 - target) * input + sp
    if weight is not None:
        loss = loss * bind_to_trace(weight, input)
    return _reduce(loss, reduction, fn)


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,  # noqa: A002
                         size_average: Any = None, reduce: Any = None, reduction: str = "mean") -> Tensor:
    """-(t * log(x) + (1 - t) * log(1 - x)) with each log clamped at -100, as PyTorch."""
    fn = "binary_cross_entropy"
    reduction = _legacy_reduction(fn, size_average, reduce, reduction)
    _check_same_size(fn, input, target)
    loss = -(target * input.log().clamp(min=-100.0) + (1.0 - target) * (1.0 - input).log().clamp(min=-100.0))
    if weight is not None:
        loss = loss * bind_to_trace(weight, input)
    return _reduce(loss, reduction, fn)


def smooth_l1_loss(input: Tensor, target: Tensor, size_average: Any = None, reduce: Any = None,  # noqa: A002
                   reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """0.5 d^2 / beta where |d| < beta, |d| - 0.5 beta elsewhere (beta 0: L1)."""
    reduction = _legacy_reduction("smooth_l1_loss", size_average, reduce, reduction)
    if beta < 0:
        raise ValueError("smooth_l1_loss does not support negative values for beta.")
    d = (input - target).abs()
    loss = d if beta == 0 else where(d < beta, d * d * (0.5 / beta), d - 0.5 * beta)
    return _reduce(loss, reduction, "smooth_l1_loss")


def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0,  # noqa: A002
               weight: Tensor | None = None) -> Tensor:
    """0.5 d^2 where |d| < delta, delta (|d| - 0.5 delta) elsewhere."""
    if delta <= 0:
        raise ValueError("huber_loss does not support non-positive values for delta.")
    d = (input - target).abs()
    loss = where(d < delta, d * d * 0.5, (d - 0.5 * delta) * delta)
    if weight is not None:
        loss = loss * bind_to_trace(weight, input)
    return _reduce(loss, reduction, "huber_loss")


__all__ += [
    "interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "pixel_shuffle", "pixel_unshuffle", "unfold",
    "fold",
    "prelu", "adaptive_max_pool1d", "adaptive_max_pool2d", "conv3d", "max_pool3d", "avg_pool3d", "instance_norm",
    "binary_cross_entropy_with_logits", "binary_cross_entropy", "smooth_l1_loss", "huber_loss",
]


# ----------------------------------------------------------------- more dropout forms and activations
def _feature_dropout(fn: str, input: Tensor, p: float, training: bool, inplace: bool, nsp: int | None,  # noqa: A002
                     alpha: bool = False) -> Tensor:
    """Dropout of whole channels (nsp spatial dims after [N, C]; None: elementwise) or alpha dropout.
    Inference: the dropout op (an identity). Training: eager only, graphc's random generator."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return apply("dropout", input, p=float(p))
    if _is_traced(input):
        raise TraceError(f"{fn}: training-mode dropout is random and cannot be traced; call it with "
                         "training=self.training (graphc.trace puts the model in eval mode)")
    from ..random import _gen

    arr = input.numpy()
    if nsp is None:
        shape = arr.shape
    else:
        if arr.ndim not in (nsp + 1, nsp + 2):
            raise ValueError(f"{fn}: expected a {nsp + 1}-d (unbatched) or {nsp + 2}-d (batched) input, got "
                             f"{_fmt(input.shape)}")
        shape = arr.shape[: arr.ndim - nsp] + (1,) * nsp
    keep = _gen(None).random(shape) >= p
    if alpha:
        a_ = -1.7580993408473766  # -SELU_SCALE * SELU_ALPHA
        a = 1.0 / math.sqrt((a_ * a_ * p + 1) * (1 - p)) if p < 1 else 0.0
        out = a * np.where(keep, arr, a_) + (-a * a_ * p if p < 1 else 0.0)
    else:
        out = np.zeros_like(arr) if p == 1.0 else arr * keep / (1.0 - p)
    return _inplace(input, Tensor._wrap(np.asarray(out).astype(arr.dtype), input.device), inplace)


def dropout1d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:  # noqa: A002
    return _feature_dropout("dropout1d", input, p, training, inplace, 1)


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:  # noqa: A002
    return _feature_dropout("dropout2d", input, p, training, inplace, 2)


def dropout3d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:  # noqa: A002
    return _feature_dropout("dropout3d", input, p, training, inplace, 3)


def alpha_dropout(input: Tensor, p: float = 0.5, training: bool = False, inplace: bool = False) -> Tensor:  # noqa: A002
    return _feature_dropout("alpha_dropout", input, p, training, inplace, None, alpha=True)


def feature_alpha_dropout(input: Tensor, p: float = 0.5, training: bool = False,  # noqa: A002
                          inplace: bool = False) -> Tensor:
    nsp = max(input.ndim - 2, 1)
    return _feature_dropout("feature_alpha_dropout", input, p, training, inplace, nsp, alpha=True)


def channel_shuffle(input: Tensor, groups: int) -> Tensor:  # noqa: A002
    """[N, C, *] with C = g * k: channel g*k + j moves to j*g + g' order (reshape, transpose, reshape)."""
    _check_tensor("channel_shuffle", "input", input)
    if input.ndim < 3:
        raise ValueError(f"channel_shuffle expects input to have at least 3 dimensions, but got input with "
                         f"{input.ndim} dimension(s)")
    c = input.shape[1]
    if groups <= 0 or not is_static(c) or c % groups:
        raise ValueError(f"channel_shuffle: number of channels ({c}) must be divisible by groups ({groups})")
    n, rest = input.shape[0], list(input.shape[2:])
    y = input.reshape(n, groups, c // groups, *rest).transpose(1, 2)
    return y.reshape(n, c, *rest)


def threshold(input: Tensor, threshold: float, value: float, inplace: bool = False) -> Tensor:  # noqa: A002
    """x where x > threshold, else value."""
    return _inplace(input, where(input > threshold, input, float(value)), inplace)


def hardshrink(input: Tensor, lambd: float = 0.5) -> Tensor:  # noqa: A002
    """x where |x| > lambd, else 0."""
    return where(input.abs() > lambd, input, 0.0)


def softshrink(input: Tensor, lambd: float = 0.5) -> Tensor:  # noqa: A002
    """x - lambd above lambd, x + lambd below -lambd, 0 between."""
    if lambd < 0:
        raise ValueError(f"lambda must be greater or equal to 0, but found to be {lambd}.")
    return where(input > lambd, input - lambd, where(input < -lambd, input + lambd, 0.0))


def rrelu(input: Tensor, lower: float = 1.0 / 8, upper: float = 1.0 / 3, training: bool = False,  # noqa: A002
          inplace: bool = False) -> Tensor:
    """Inference: leaky_relu with slope (lower + upper) / 2. Training: a random slope per element in
    [lower, upper] (eager only)."""
    if not training:
        return leaky_relu(input, (lower + upper) / 2, inplace)
    if _is_traced(input):
        raise TraceError("rrelu: training mode is random and cannot be traced; call it with training=self.training")
    from ..random import _gen

    arr = input.numpy()
    slope = _gen(None).uniform(lower, upper, size=arr.shape)
    out = np.where(arr >= 0, arr, arr * slope).astype(arr.dtype)
    return _inplace(input, Tensor._wrap(out, input.device), inplace)


__all__ += ["dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout", "channel_shuffle",
            "threshold", "hardshrink", "softshrink", "rrelu"]


def __getattr__(name: str):
    from .._missing import missing

    raise missing("graphc.nn.functional", name, globals())
