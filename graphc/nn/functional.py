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
    "group_norm", "rms_norm", "embedding", "one_hot", "dropout", "relu", "relu6", "leaky_relu", "gelu", "silu",
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
    """`inplace=True`: write the result into x (eager only; while tracing the result is rebound)."""
    if not inplace or _is_traced(x) or _is_traced(y):
        return y
    x.copy_(y)
    return x


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
        return apply("dropout", input, p=float(p))
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
def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Tensor:  # noqa: A002
    """Constant padding in F.pad's order (last dim first); negative pads crop."""
    if mode != "constant":
        raise UnsupportedError(f"pad: mode {mode!r} is not supported by graphc; only mode='constant'")
    pads = [int(p) for p in pad]
    if len(pads) % 2:
        raise ValueError(f"pad: padding length must be divisible by 2, got {len(pads)}")
    if len(pads) // 2 > input.ndim:
        raise ValueError(f"pad: padding length {len(pads)} is too large for a {input.ndim}-d input")
    if not any(pads):
        return input
    return apply("pad", input, pads=pads, value=0 if value is None else value)


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


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    d = input - target
    return _reduce(d * d, reduction, "mse_loss")


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    return _reduce((input - target).abs(), reduction, "l1_loss")


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


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, ignore_index: int = -100,  # noqa: A002
             reduction: str = "mean") -> Tensor:
    """Negative log likelihood of log-probabilities [N, C, *] or [C] at integer targets."""
    return _nll(input, target, weight, ignore_index, reduction, 0.0, "nll_loss")


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None, ignore_index: int = -100,  # noqa: A002
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """log_softmax over the class dim (1, or 0 for an unbatched [C] input) followed by nll_loss;
    targets are class indices or class probabilities."""
    cdim = 0 if input.ndim == 1 else 1
    return _nll(input.log_softmax(cdim), target, weight, ignore_index, reduction, label_smoothing, "cross_entropy")
