"""Activation layers and MultiheadAttention (PyTorch's torch.nn.modules.activation)."""

from __future__ import annotations

import math
from typing import Any

from ... import _dtype as D
from ...errors import ShapeError, UnsupportedError
from ...tensor import Tensor, where
from .. import functional as F
from .. import init
from ..module import Module
from ..parameter import Parameter
from ._utils import check_dtype, check_tensor, new_param_data, shape_str
from .linear import NonDynamicallyQuantizableLinear

__all__ = [
    "ReLU", "ReLU6", "LeakyReLU", "GELU", "SiLU", "Sigmoid", "Tanh", "ELU", "SELU", "CELU", "Softplus", "Hardtanh",
    "Mish", "Hardswish", "Hardsigmoid", "LogSigmoid", "Softsign", "Tanhshrink", "GLU", "Softmax", "LogSoftmax",
    "Softmin", "MultiheadAttention", "PReLU", "Softmax2d", "Threshold", "Hardshrink", "Softshrink", "RReLU",
]


def _inplace_repr(inplace: bool, sep: str = "") -> str:
    return f"{sep}inplace=True" if inplace else ""


class _InplaceAct(Module):
    _fn: Any = None

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return type(self)._fn(check_tensor(self, input), inplace=self.inplace)

    def extra_repr(self) -> str:
        return _inplace_repr(self.inplace)


class ReLU(_InplaceAct):
    """max(x, 0)."""

    _fn = staticmethod(F.relu)


class SiLU(_InplaceAct):
    """x * sigmoid(x)."""

    _fn = staticmethod(F.silu)


class Mish(_InplaceAct):
    """x * tanh(softplus(x))."""

    _fn = staticmethod(F.mish)


class Hardswish(_InplaceAct):
    """x * relu6(x + 3) / 6."""

    _fn = staticmethod(F.hardswish)

    def extra_repr(self) -> str:
        return ""


class Hardsigmoid(_InplaceAct):
    """relu6(x + 3) / 6."""

    _fn = staticmethod(F.hardsigmoid)

    def extra_repr(self) -> str:
        return ""


class SELU(_InplaceAct):
    """scale * elu(x, alpha) with the self-normalising constants."""

    _fn = staticmethod(F.selu)


class _Plain(Module):
    _fn: Any = None

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return type(self)._fn(check_tensor(self, input))


class Sigmoid(_Plain):
    """1 / (1 + exp(-x))."""

    _fn = staticmethod(F.sigmoid)


class Tanh(_Plain):
    """tanh(x)."""

    _fn = staticmethod(F.tanh)


class LogSigmoid(_Plain):
    """log(sigmoid(x))."""

    _fn = staticmethod(F.logsigmoid)


class Softsign(_Plain):
    """x / (1 + |x|)."""

    _fn = staticmethod(F.softsign)


class Tanhshrink(_Plain):
    """x - tanh(x)."""

    _fn = staticmethod(F.tanhshrink)


class Hardtanh(Module):
    """clamp(x, min_val, max_val)."""

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False,
                 min_value: float | None = None, max_value: float | None = None) -> None:
        super().__init__()
        if min_value is not None:
            min_val = min_value
        if max_value is not None:
            max_val = max_value
        self.min_val = min_val
        self.max_val = max_val
        self.inplace = inplace
        if self.max_val <= self.min_val:
            raise AssertionError(f"max_val ({self.max_val}) must be greater than min_val ({self.min_val})")

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.hardtanh(check_tensor(self, input), self.min_val, self.max_val, self.inplace)

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}{_inplace_repr(self.inplace, ', ')}"


class ReLU6(Hardtanh):
    """min(max(x, 0), 6)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__(0.0, 6.0, inplace)

    def extra_repr(self) -> str:
        return _inplace_repr(self.inplace)


class LeakyReLU(Module):
    """x if x > 0 else negative_slope * x."""

    def __init__(self, negative_slope: float = 1e-2, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.leaky_relu(check_tensor(self, input), self.negative_slope, self.inplace)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}{_inplace_repr(self.inplace, ', ')}"


class ELU(Module):
    """x if x > 0 else alpha * (exp(x) - 1)."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha = alpha
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.elu(check_tensor(self, input), self.alpha, self.inplace)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}{_inplace_repr(self.inplace, ', ')}"


class CELU(ELU):
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.celu(check_tensor(self, input), self.alpha, self.inplace)


class GELU(Module):
    """x * Phi(x), exact or with the tanh approximation."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.gelu(check_tensor(self, input), approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Softplus(Module):
    """log(1 + exp(beta * x)) / beta, linear above threshold."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = beta
        self.threshold = threshold

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.softplus(check_tensor(self, input), self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class PReLU(Module):
    """x where x >= 0, weight * x elsewhere; weight [num_parameters] (1, or one per channel), init 0.25."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25, device: Any = None, dtype: Any = None) -> None:
        self.num_parameters = num_parameters
        super().__init__()
        self.init = init
        self.weight = Parameter(new_param_data((num_parameters,), device, dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.constant_(self.weight, self.init)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.prelu(check_tensor(self, input), self.weight)

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"


class Softmax2d(Module):
    """Softmax over the channels of [N, C, H, W] or [C, H, W]."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        x = check_tensor(self, input)
        if x.ndim not in (3, 4):
            raise ShapeError(f"Softmax2d: expected input with 3 or 4 dims (C, H, W) or (N, C, H, W), got "
                             f"{shape_str(x.shape)}")
        return F.softmax(x, -3)


class Threshold(Module):
    """x where x > threshold, else value."""

    def __init__(self, threshold: float, value: float, inplace: bool = False) -> None:
        super().__init__()
        self.threshold = threshold
        self.value = value
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.threshold(check_tensor(self, input), self.threshold, self.value, self.inplace)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, value={self.value}{_inplace_repr(self.inplace, ', ')}"


class Hardshrink(Module):
    """x where |x| > lambd, else 0."""

    def __init__(self, lambd: float = 0.5) -> None:
        super().__init__()
        self.lambd = lambd

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.hardshrink(check_tensor(self, input), self.lambd)

    def extra_repr(self) -> str:
        return f"{self.lambd}"


class Softshrink(Hardshrink):
    """x -/+ lambd outside [-lambd, lambd], 0 inside."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.softshrink(check_tensor(self, input), self.lambd)


class RReLU(Module):
    """Randomised leaky ReLU: slope (lower + upper) / 2 in eval/traced graphs, random in training."""

    def __init__(self, lower: float = 1.0 / 8, upper: float = 1.0 / 3, inplace: bool = False) -> None:
        super().__init__()
        self.lower = lower
        self.upper = upper
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.rrelu(check_tensor(self, input), self.lower, self.upper, self.training, self.inplace)

    def extra_repr(self) -> str:
        return f"lower={self.lower}, upper={self.upper}{_inplace_repr(self.inplace, ', ')}"


class GLU(Module):
    """a * sigmoid(b) for the two halves of dim."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.glu(check_tensor(self, input), self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class _SoftmaxBase(Module):
    _fn: Any = None

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return type(self)._fn(check_tensor(self, input), self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Softmax(_SoftmaxBase):
    """exp(x) / sum(exp(x)) along dim."""

    _fn = staticmethod(F.softmax)


class LogSoftmax(_SoftmaxBase):
    """log(softmax(x)) along dim."""

    _fn = staticmethod(F.log_softmax)


class Softmin(_SoftmaxBase):
    """softmax(-x) along dim."""

    _fn = staticmethod(F.softmin)


# ------------------------------------------------------------------------------ multi-head attention
def _canonical_mask(m: Module, mask: Tensor | None, name: str, like: Tensor) -> Tensor | None:
    """PyTorch's convention for MultiheadAttention masks: bool True = masked out (-inf); floats are added."""
    if mask is None:
        return None
    check_tensor(m, mask, name)
    mask = F.bind_to_trace(mask, like)
    dt = like.dtype
    if mask.dtype is D.bool_:
        return where(mask, float("-inf"), 0.0).to(dt)
    if not mask.dtype.is_floating_point:
        raise ShapeError(f"{type(m).__name__}: only bool and floating types of {name} are supported, got "
                         f"{mask.dtype.name}")
    return mask.to(dt)


class MultiheadAttention(Module):
    """PyTorch's MultiheadAttention: packed in_proj_weight [3E, E] (separate q/k/v_proj_weight when kdim or
    vdim differ), in_proj_bias [3E], out_proj Linear. Inputs are (L, N, E), or (N, L, E) with
    batch_first, or unbatched (L, E). Returns (output, attention weights or None)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, device: Any = None, dtype: Any = None) -> None:
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be greater than 0, got embed_dim={embed_dim} and "
                             f"num_heads={num_heads} instead")
        if add_bias_kv:
            raise UnsupportedError("MultiheadAttention: add_bias_kv=True is not supported by graphc")
        if add_zero_attn:
            raise UnsupportedError("MultiheadAttention: add_zero_attn=True is not supported by graphc")
        super().__init__()
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != embed_dim:
            raise AssertionError("embed_dim must be divisible by num_heads")
        if not self._qkv_same_embed_dim:
            self.q_proj_weight = Parameter(new_param_data((embed_dim, embed_dim), device, dtype))
            self.k_proj_weight = Parameter(new_param_data((embed_dim, self.kdim), device, dtype))
            self.v_proj_weight = Parameter(new_param_data((embed_dim, self.vdim), device, dtype))
            self.register_parameter("in_proj_weight", None)
        else:
            self.in_proj_weight = Parameter(new_param_data((3 * embed_dim, embed_dim), device, dtype))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(new_param_data((3 * embed_dim,), device, dtype))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias, device=device, dtype=dtype)
        self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            init.xavier_uniform_(self.q_proj_weight)
            init.xavier_uniform_(self.k_proj_weight)
            init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)

    # ------------------------------------------------------------------------------------ checks
    def _err(self, msg: str) -> ShapeError:
        return ShapeError(f"MultiheadAttention: {msg}")

    def _check_inputs(self, query: Any, key: Any, value: Any, key_padding_mask: Tensor | None,
                      attn_mask: Tensor | None) -> bool:
        for name, t in (("query", query), ("key", key), ("value", value)):
            check_tensor(self, t, name)
            check_dtype(self, t, self.out_proj.weight, name)
        if query.ndim not in (2, 3):
            raise self._err(f"query should be unbatched 2D or batched 3D tensor but received {query.ndim}-D query "
                            f"tensor of shape {shape_str(query.shape)}")
        batched = query.ndim == 3
        lay = ("(N, L, E)" if self.batch_first else "(L, N, E)") if batched else "(L, E)"
        for name, t in (("key", key), ("value", value)):
            if t.ndim != query.ndim:
                raise self._err(f"for {'batched' if batched else 'unbatched'} {query.ndim}-D query, expected {name} "
                                f"to be {query.ndim}-D {lay}, got {shape_str(t.shape)}")
        for name, t, n, attr in (("query", query, self.embed_dim, "embed_dim"), ("key", key, self.kdim, "kdim"),
                                 ("value", value, self.vdim, "vdim")):
            if t.shape[-1] != n:
                raise self._err(f"expected {name} with {n} features ({attr}={n}) in its last dim, got "
                                f"{shape_str(t.shape)}")
        if key.shape[:-1] != value.shape[:-1]:
            raise self._err(f"key {shape_str(key.shape)} and value {shape_str(value.shape)} must have the same "
                            "sequence and batch dims")
        if key_padding_mask is not None:
            want = 2 if batched else 1
            if key_padding_mask.ndim != want:
                kind = "batched" if batched else "unbatched"
                raise self._err(f"expected key_padding_mask to be {want}-D ({'(N, S)' if batched else '(S)'}) for "
                                f"{kind} query, got {shape_str(key_padding_mask.shape)}")
        if attn_mask is not None and attn_mask.ndim not in (2, 3):
            raise self._err(f"attn_mask's dimension {attn_mask.ndim} is not supported (expected 2-D (L, S) or 3-D "
                            f"(N*num_heads, L, S)), got {shape_str(attn_mask.shape)}")
        return batched

    # ----------------------------------------------------------------------------------- forward
    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        e = self.embed_dim
        b = F.bind_to_trace(self.in_proj_bias, query)  # slices of it stay in the graph, on @...in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:e], b[e:2 * e], b[2 * e:])
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            if query is key and key is value:  # self-attention: one packed projection
                q, k, v = F.linear(query, w, self.in_proj_bias).chunk(3, -1)
                return q, k, v
            w = F.bind_to_trace(w, query)
            wq, wk, wv = w[:e], w[e:2 * e], w[2 * e:]
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        return F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        """Attention of query over key/value. Masks: bool True (or -inf) excludes a key; float masks add.
        key_padding_mask (N, S); attn_mask (L, S) or (N*num_heads, L, S). is_causal is a hint that
        attn_mask is the causal mask (it is then required, as in PyTorch)."""
        batched = self._check_inputs(query, key, value, key_padding_mask, attn_mask)
        kpm = _canonical_mask(self, key_padding_mask, "key_padding_mask", query)
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use the Transformer module "
                               "method `generate_square_subsequent_mask` to create this mask.")
        use_causal = is_causal and kpm is None and not need_weights
        amask = None if use_causal else _canonical_mask(self, attn_mask, "attn_mask", query)
        # work batch-first: [N, L, E]
        same_kv = key is value
        same_qk = query is key
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if kpm is not None:
                kpm = kpm.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        if same_kv:
            value = key
            if same_qk:
                key = value = query
        n, tgt, _ = query.shape
        src = key.shape[1]
        h, d = self.num_heads, self.head_dim
        if kpm is not None and tuple(kpm.shape) != (n, src):
            raise self._err(f"expected key_padding_mask of shape {shape_str((n, src))} (batch, source length), got "
                            f"{shape_str(kpm.shape)}")
        mask = None
        if amask is not None:
            if amask.ndim == 2:
                if tuple(amask.shape) != (tgt, src):
                    raise self._err(f"the shape of the 2D attn_mask is {shape_str(amask.shape)}, but should be "
                                    f"{shape_str((tgt, src))}")
                mask = amask.reshape(1, 1, tgt, src)
            else:
                if tuple(amask.shape) != (n * h, tgt, src):
                    raise self._err(f"the shape of the 3D attn_mask is {shape_str(amask.shape)}, but should be "
                                    f"{shape_str((n * h, tgt, src))}")
                mask = amask.reshape(n, h, tgt, src)
        if kpm is not None:
            kmask = kpm.reshape(n, 1, 1, src)
            mask = kmask if mask is None else mask + kmask
        q, k, v = self._project(query, key, value)
        q = q.reshape(n, tgt, h, d).transpose(1, 2)
        k = k.reshape(n, src, h, d).transpose(1, 2)
        v = v.reshape(n, src, h, d).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            s = (q * math.sqrt(1.0 / d)).matmul(k.transpose(-2, -1))
            if mask is not None:
                s = s + mask
            attn = s.softmax(-1)
            if p > 0.0:
                attn = F.dropout(attn, p, training=True)
            out = attn.matmul(v)
            weights = attn.mean(1) if average_attn_weights else attn
        else:
            out = F.scaled_dot_product_attention(q, k, v, mask, p, use_causal)
        out = out.transpose(1, 2).reshape(n, tgt, self.embed_dim)
        out = self.out_proj(out)
        if not batched:
            out = out.squeeze(0)
            if weights is not None:
                weights = weights.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights
