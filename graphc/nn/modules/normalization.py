"""BatchNorm1d/2d/3d, InstanceNorm1d/2d/3d, LayerNorm, GroupNorm, RMSNorm (PyTorch's batchnorm.py,
instancenorm.py and normalization.py)."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from typing import Any

from ... import _dtype as D
from ...errors import ShapeError
from ...tensor import Tensor, tensor
from .. import functional as F
from .. import init
from ..module import Module
from ..parameter import Parameter
from ._utils import check_dtype, check_ndim, check_size, check_tensor, new_param_data, shape_str

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
           "LayerNorm", "GroupNorm", "RMSNorm"]



def _affine_params(m: Module, shape: tuple[int, ...], affine: bool, bias: bool, device: Any, dtype: Any) -> None:
    """Register `weight` and `bias` of the given shape (None slots when not affine / no bias), as
    PyTorch's norm layers do; reset_parameters fills them with ones and zeros."""
    m.register_parameter("weight", Parameter(new_param_data(shape, device, dtype)) if affine else None)
    m.register_parameter("bias", Parameter(new_param_data(shape, device, dtype)) if affine and bias else None)


def _reset_affine(m: Module) -> None:
    if m.weight is not None:
        init.ones_(m.weight)
    if m.bias is not None:
        init.zeros_(m.bias)

class _BatchNorm(Module):
    _version = 2
    _layouts: dict[int, str] = {}

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device: Any = None, dtype: Any = None, *,
                 bias: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        _affine_params(self, (num_features,), affine, bias, device, dtype)
        if track_running_stats:
            self.register_buffer("running_mean", new_param_data((num_features,), device, dtype).zero_())
            self.register_buffer("running_var", new_param_data((num_features,), device, dtype).fill_(1))
            self.register_buffer("num_batches_tracked", tensor(0, dtype=D.int64, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        _reset_affine(self)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        # checkpoints from before num_batches_tracked existed (version < 2) load with the current count
        version = local_metadata.get("version", None)
        if (version is None or version < 2) and self.track_running_stats:
            key = prefix + "num_batches_tracked"
            if key not in state_dict:
                state_dict[key] = (self.num_batches_tracked if self.num_batches_tracked is not None
                                   else tensor(0, dtype=D.int64))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        x = check_ndim(self, input, self._layouts)
        check_dtype(self, x, self.weight if self.weight is not None else self.running_mean)
        check_size(self, x, 1, self.num_features, "channels", "num_features")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            if x._tracer is None:
                self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        tracked = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean if tracked else None, self.running_var if tracked else None,
                            self.weight, self.bias, use_batch, factor, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over [N, C] or [N, C, L]."""

    _layouts = {2: "(N, C)", 3: "(N, C, L)"}


class BatchNorm2d(_BatchNorm):
    """Batch norm over [N, C, H, W]."""

    _layouts = {4: "(N, C, H, W)"}


class BatchNorm3d(_BatchNorm):
    """Batch norm over [N, C, D, H, W]."""

    _layouts = {5: "(N, C, D, H, W)"}


class _InstanceNorm(_BatchNorm):
    """Instance norm: PyTorch's _InstanceNorm (affine and running statistics off by default). Each
    (sample, channel) is normalised over its spatial positions; in eval mode with
    track_running_stats=True the running statistics are used instead. Running statistics are not
    updated in training mode."""

    _spatial = 1

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = False,
                 track_running_stats: bool = False, device: Any = None, dtype: Any = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        # checkpoints from before version 2 may hold running stats the layer does not track
        if local_metadata.get("version", None) is None and not self.track_running_stats:
            for name in ("running_mean", "running_var"):
                state_dict.pop(prefix + name, None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        x = check_ndim(self, input, self._layouts)
        check_dtype(self, x, self.weight if self.weight is not None else self.running_mean)
        cdim = x.ndim - self._spatial - 1
        if x.shape[cdim] != self.num_features:
            if self.affine:
                raise ShapeError(f"{type(self).__name__}: expected input's size at dim={cdim} to match num_features "
                                 f"({self.num_features}), but got: {x.shape[cdim]} (shape {shape_str(x.shape)})")
            warnings.warn(f"input's size at dim={cdim} does not match num_features. You can silence this warning by "
                          "not passing in num_features, which is not used because affine=False", stacklevel=2)
        unbatched = x.ndim == self._spatial + 1
        if unbatched:
            x = x.unsqueeze(0)
        use_input_stats = self.training or not self.track_running_stats
        y = F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias, use_input_stats,
                            0.0 if self.momentum is None else self.momentum, self.eps)
        return y.squeeze(0) if unbatched else y


class InstanceNorm1d(_InstanceNorm):
    """Instance norm over [N, C, L] or [C, L]."""

    _layouts = {3: "(N, C, L)", 2: "(C, L)"}


class InstanceNorm2d(_InstanceNorm):
    """Instance norm over [N, C, H, W] or [C, H, W]."""

    _spatial = 2
    _layouts = {4: "(N, C, H, W)", 3: "(C, H, W)"}


class InstanceNorm3d(_InstanceNorm):
    """Instance norm over [N, C, D, H, W] or [C, D, H, W]."""

    _spatial = 3
    _layouts = {5: "(N, C, D, H, W)", 4: "(C, D, H, W)"}


def _shape_tuple(s: int | Sequence[int]) -> tuple[int, ...]:
    return (int(s),) if isinstance(s, numbers.Integral) else tuple(s)


def _check_trailing(m: Module, x: Tensor, ns: tuple[int, ...]) -> None:
    if x.ndim < len(ns) or tuple(x.shape[x.ndim - len(ns):]) != ns:
        from ...errors import ShapeError

        raise ShapeError(f"{type(m).__name__}: expected input with shape [*, {', '.join(map(str, ns))}] "
                         f"(normalized_shape={ns}), got {shape_str(x.shape)}")


class LayerNorm(Module):
    """Layer norm over the trailing normalized_shape dims; weight ones, bias zeros."""

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.normalized_shape = _shape_tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        _affine_params(self, self.normalized_shape, elementwise_affine, bias, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_affine(self)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        x = check_tensor(self, input)
        check_dtype(self, x, self.weight)
        _check_trailing(self, x, self.normalized_shape)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class GroupNorm(Module):
    """Group norm over [N, C, *] with num_groups groups of channels."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 bias: bool = True, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        if num_channels % num_groups != 0:
            raise ValueError("num_channels must be divisible by num_groups")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        _affine_params(self, (num_channels,), affine, bias, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_affine(self)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        x = check_tensor(self, input)
        if x.ndim < 2:
            from ...errors import ShapeError

            raise ShapeError(f"{type(self).__name__}: expected input with at least 2 dims (N, C, *), got "
                             f"{shape_str(x.shape)}")
        check_dtype(self, x, self.weight)
        check_size(self, x, 1, self.num_channels, "channels", "num_channels")
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


class RMSNorm(Module):
    """RMS norm over the trailing normalized_shape dims; eps None is the input dtype's machine epsilon."""

    def __init__(self, normalized_shape: int | Sequence[int], eps: float | None = None,
                 elementwise_affine: bool = True, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.normalized_shape = _shape_tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(new_param_data(self.normalized_shape, device, dtype))
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.elementwise_affine:
            init.ones_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = check_tensor(self, x)
        check_dtype(self, x, self.weight)
        _check_trailing(self, x, self.normalized_shape)
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
