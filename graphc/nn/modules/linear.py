"""Identity, Linear and Bilinear (PyTorch's torch.nn.modules.linear)."""

from __future__ import annotations

import math
from typing import Any

from ...tensor import Tensor
from .. import functional as F
from .. import init
from ..module import Module
from ..parameter import Parameter
from ._utils import check_dtype, check_size, check_tensor, new_param_data, shape_str

__all__ = ["Identity", "Linear", "Bilinear", "NonDynamicallyQuantizableLinear"]


class Identity(Module):
    """Returns its input; constructor arguments are accepted and ignored (as in PyTorch)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return input


class Linear(Module):
    """y = x @ weight.T + bias; weight [out_features, in_features] ~ kaiming_uniform(a=sqrt(5)),
    bias ~ U(-1/sqrt(in_features), 1/sqrt(in_features))."""

    in_features: int
    out_features: int
    weight: Parameter

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(new_param_data((out_features, in_features), device, dtype))
        if bias:
            self.bias = Parameter(new_param_data((out_features,), device, dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        x = check_tensor(self, input)
        if x.ndim == 0:
            raise _linear_rank_error(self, x)
        check_dtype(self, x, self.weight)
        check_size(self, x, -1, self.in_features, "features", "in_features")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _linear_rank_error(m: Module, x: Tensor) -> Exception:
    from ...errors import ShapeError

    return ShapeError(f"{type(m).__name__}: expected input with at least 1 dim [*, in_features], got "
                      f"{shape_str(x.shape)}")


class NonDynamicallyQuantizableLinear(Linear):
    """PyTorch's name for MultiheadAttention.out_proj; in graphc it is a plain Linear (kept as a subclass
    so reprs match PyTorch's)."""


class Bilinear(Module):
    """y = x1 @ weight[o] @ x2 + bias[o]; weight [out, in1, in2] and bias ~ U(-1/sqrt(in1), 1/sqrt(in1))."""

    def __init__(self, in1_features: int, in2_features: int, out_features: int, bias: bool = True,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.in1_features = in1_features
        self.in2_features = in2_features
        self.out_features = out_features
        self.weight = Parameter(new_param_data((out_features, in1_features, in2_features), device, dtype))
        if bias:
            self.bias = Parameter(new_param_data((out_features,), device, dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.weight.size(1))
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input1: Tensor, input2: Tensor) -> Tensor:
        for name, x, n, attr in (("input1", input1, self.in1_features, "in1_features"),
                                 ("input2", input2, self.in2_features, "in2_features")):
            check_tensor(self, x, name)
            if x.ndim == 0:
                raise _linear_rank_error(self, x)
            check_dtype(self, x, self.weight, name)
            check_size(self, x, -1, n, "features", attr, name)
        return F.bilinear(input1, input2, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")
