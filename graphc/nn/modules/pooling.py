"""MaxPool1d/2d/3d, AvgPool1d/2d/3d, AdaptiveAvgPool1d/2d, AdaptiveMaxPool1d/2d (PyTorch's
torch.nn.modules.pooling)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import UnsupportedError
from ...tensor import Tensor
from .. import functional as F
from ..module import Module
from ._utils import check_dtype, check_ndim

__all__ = ["MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d",
           "AdaptiveAvgPool2d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d"]

_Size = int | Sequence[int]
_L1 = {3: "(N, C, L)", 2: "(C, L)"}
_L2 = {4: "(N, C, H, W)", 3: "(C, H, W)"}
_L3 = {5: "(N, C, D, H, W)", 4: "(C, D, H, W)"}


def _check(m: Module, x: Any, layouts: dict[int, str]) -> Tensor:
    x = check_ndim(m, x, layouts)
    check_dtype(m, x, None)
    return x


class _MaxPoolNd(Module):
    def __init__(self, kernel_size: _Size, stride: _Size | None = None, padding: _Size = 0, dilation: _Size = 1,
                 return_indices: bool = False, ceil_mode: bool = False) -> None:
        super().__init__()
        if return_indices:
            raise UnsupportedError(f"{type(self).__name__}: return_indices=True is not supported by graphc "
                                      "(inference graphs do not carry argmax indices)")
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool1d(_MaxPoolNd):
    """Max pooling over [N, C, L] or [C, L]."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.max_pool1d(_check(self, input, _L1), self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode)


class MaxPool2d(_MaxPoolNd):
    """Max pooling over [N, C, H, W] or [C, H, W]."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.max_pool2d(_check(self, input, _L2), self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode)


class MaxPool3d(_MaxPoolNd):
    """Max pooling over [N, C, D, H, W] or [C, D, H, W]."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.max_pool3d(_check(self, input, _L3), self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode)


class AvgPool1d(Module):
    """Average pooling over [N, C, L] or [C, L]."""

    def __init__(self, kernel_size: _Size, stride: _Size | None = None, padding: _Size = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:
        super().__init__()
        self.kernel_size = _single(kernel_size)
        self.stride = _single(stride if stride is not None else kernel_size)
        self.padding = _single(padding)
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.avg_pool1d(_check(self, input, _L1), self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


def _single(v: Any) -> tuple:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


class AvgPool2d(Module):
    """Average pooling over [N, C, H, W] or [C, H, W]."""

    def __init__(self, kernel_size: _Size, stride: _Size | None = None, padding: _Size = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.avg_pool2d(_check(self, input, _L2), self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool3d(AvgPool2d):
    """Average pooling over [N, C, D, H, W] or [C, D, H, W]."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.avg_pool3d(_check(self, input, _L3), self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool1d(Module):
    """Adaptive average pooling of [N, C, L] or [C, L] to output_size."""

    def __init__(self, output_size: int | Sequence[int]) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.adaptive_avg_pool1d(_check(self, input, _L1), self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveAvgPool2d(Module):
    """Adaptive average pooling of [N, C, H, W] or [C, H, W] to output_size (None keeps that dim)."""

    def __init__(self, output_size: int | None | Sequence[int | None]) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.adaptive_avg_pool2d(_check(self, input, _L2), self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class _AdaptiveMaxPoolNd(Module):
    def __init__(self, output_size: Any, return_indices: bool = False) -> None:
        super().__init__()
        if return_indices:
            raise UnsupportedError(f"{type(self).__name__}: return_indices=True is not supported by graphc "
                                   "(inference graphs do not carry argmax indices)")
        self.output_size = output_size
        self.return_indices = return_indices

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    """Adaptive max pooling of [N, C, L] or [C, L] to output_size."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.adaptive_max_pool1d(_check(self, input, _L1), self.output_size)


class AdaptiveMaxPool2d(_AdaptiveMaxPoolNd):
    """Adaptive max pooling of [N, C, H, W] or [C, H, W] to output_size (None keeps that dim)."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.adaptive_max_pool2d(_check(self, input, _L2), self.output_size)
