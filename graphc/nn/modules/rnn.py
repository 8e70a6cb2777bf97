"""RNN, LSTM and GRU (PyTorch's torch.nn.modules.rnn): the same parameters, names, initialisation and
reprs; num_layers, bidirectional, batch_first, bias, proj_size (LSTM), initial states and the
(output, h_n) / (output, (h_n, c_n)) results.

How it is compiled: for each layer and direction, the input projection of *all* time steps is one
``linear`` over the whole [T, N, F] sequence (one GEMM); the recurrence is then unrolled over the time
steps, each step one ``linear`` of the hidden state plus the gate arithmetic (which the C backend fuses
into one elementwise kernel). The IR has no loop construct, so the sequence length T must be static
when tracing (a dynamic batch is fine): the graph grows linearly with T (about a dozen nodes per step,
layer and direction), which stays modest for the sequence lengths of taggers and small speech or
time-series models. A dynamic T is refused with a clear error. A zero initial state (hx=None) skips
the first step's hidden-state product.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from ...errors import ShapeError, UnsupportedError
from ...sym import is_static
from ...tensor import Tensor, cat, stack
from .. import functional as F
from .. import init
from ..module import Module
from ..parameter import Parameter
from ._utils import check_dtype, check_tensor, new_param_data, shape_str

__all__ = ["RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell"]

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _step(mode: str, g: Tensor, gh: Tensor | None, h: Tensor | None, c: Tensor | None,
          w_hr: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """One time step from the input's gate pre-activations g = x W_ih^T + b_ih and the hidden state's
    gh = h W_hh^T + b_hh (None: a zero state without bias); h and c None are zero states."""
    if mode == "LSTM":
        gates = g if gh is None else g + gh
        i, f, gg, o = gates.chunk(4, -1)
        i, f, gg, o = i.sigmoid(), f.sigmoid(), gg.tanh(), o.sigmoid()
        c = i * gg if c is None else f * c + i * gg
        h = o * c.tanh()
        return (h if w_hr is None else F.linear(h, w_hr)), c
    if mode == "GRU":
        xr, xz, xn = g.chunk(3, -1)
        if gh is None:
            r, z, n = xr.sigmoid(), xz.sigmoid(), xn.tanh()
        else:
            hr, hz, hn = gh.chunk(3, -1)
            r, z = (xr + hr).sigmoid(), (xz + hz).sigmoid()
            n = (xn + r * hn).tanh()
        return ((1.0 - z) * n if h is None else (1.0 - z) * n + z * h), None
    pre = g if gh is None else g + gh
    return (pre.tanh() if mode == "RNN_TANH" else pre.relu()), None


class RNNBase(Module):
    """Parameters and the shared driver of RNN, LSTM and GRU (see the module docstring)."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        num_directions = 2 if bidirectional else 1
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError("dropout should be a number in range [0, 1] representing the probability of an "
                             "element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                          stacklevel=2)
        if not isinstance(hidden_size, int) or isinstance(hidden_size, bool) or hidden_size <= 0:
            raise ValueError(f"hidden_size must be a positive integer, got {hidden_size!r}")
        if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers <= 0:
            raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if mode not in _GATES:
            raise ValueError(f"Unrecognized RNN mode: {mode}")
        if proj_size and mode != "LSTM":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        gate_size = _GATES[mode] * hidden_size
        real_hidden = proj_size if proj_size > 0 else hidden_size
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            for direction in range(num_directions):
                layer_input = input_size if layer == 0 else real_hidden * num_directions
                suffix = "_reverse" if direction == 1 else ""
                shapes = [("weight_ih", (gate_size, layer_input)), ("weight_hh", (gate_size, real_hidden))]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if proj_size > 0:
                    shapes.append(("weight_hr", (proj_size, hidden_size)))
                names = []
                for base, shape in shapes:
                    name = f"{base}_l{layer}{suffix}"
                    setattr(self, name, Parameter(new_param_data(shape, device, dtype)))
                    names.append(name)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for name in self._flat_weights_names:
            init.uniform_(getattr(self, name), -stdv, stdv)

    def flatten_parameters(self) -> None:
        """A no-op (PyTorch packs cuDNN weights here)."""

    @property
    def all_weights(self) -> list[list[Parameter]]:
        return [[getattr(self, n) for n in names] for names in self._all_weights]

    @property
    def _flat_weights(self) -> list[Parameter]:
        return [getattr(self, n) for n in self._flat_weights_names]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s

    # ------------------------------------------------------------------------------------ forward
    def _err(self, msg: str) -> ShapeError:
        return ShapeError(f"{type(self).__name__}: {msg}")

    def _check_input(self, input: Any) -> tuple[Tensor, bool]:  # noqa: A002
        if not isinstance(input, Tensor):
            if type(input).__name__ == "PackedSequence":
                raise UnsupportedError(f"{type(self).__name__}: PackedSequence inputs are not supported by graphc; "
                                       "pass the padded [T, N, F] tensor")
            check_tensor(self, input)
        if input.ndim not in (2, 3):
            raise self._err(f"Expected input to be 2D or 3D, got {input.ndim}D instead (shape "
                            f"{shape_str(input.shape)})")
        check_dtype(self, input, self.weight_ih_l0)
        if input.shape[-1] != self.input_size:
            raise self._err(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got "
                            f"{input.shape[-1]} (shape {shape_str(input.shape)})")
        return input, input.ndim == 3

    def _state(self, hx: Any, what: str, size: int, n: Any, batched: bool, like: Tensor) -> Tensor | None:
        """An initial state as [D*num_layers, N, size] (None: zeros)."""
        if hx is None:
            return None
        hx = check_tensor(self, hx, what)
        check_dtype(self, hx, self.weight_ih_l0, what)
        layers = self.num_layers * (2 if self.bidirectional else 1)
        want = (layers, n, size) if batched else (layers, size)
        if hx.ndim != len(want) or tuple(hx.shape) != want:
            kind = "batched" if batched else "unbatched"
            raise self._err(f"Expected {what} size {shape_str(want)} for {kind} input, got {shape_str(hx.shape)}")
        return hx if batched else hx.unsqueeze(1)

    def _run(self, input: Tensor, h0: Any, c0: Any = None) -> tuple[Tensor, Tensor, Tensor | None]:  # noqa: A002
        x, batched = self._check_input(input)
        if not batched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        t_len, n = x.shape[0], x.shape[1]
        if not is_static(t_len):
            raise UnsupportedError(
                f"{type(self).__name__}: the sequence length {t_len} is dynamic; graphc unrolls the recurrence over "
                "the time steps, so trace with a static sequence length (the batch may stay dynamic)")
        real_hidden = self.proj_size if self.proj_size > 0 else self.hidden_size
        h0 = self._state(h0, "hidden[0]" if self.mode == "LSTM" else "hx", real_hidden, n, batched, x)
        if self.mode == "LSTM":
            c0 = self._state(c0, "hidden[1]", self.hidden_size, n, batched, x)
        dirs = 2 if self.bidirectional else 1
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for layer in range(self.num_layers):
            outs = []
            for direction in range(dirs):
                k = layer * dirs + direction
                h = None if h0 is None else h0[k]
                c = None if c0 is None else c0[k]
                y, h, c = self._direction(x, self._all_weights[k], h, c, reverse=direction == 1, steps=int(t_len))
                outs.append(y)
                hs.append(h)
                if c is not None:
                    cs.append(c)
            x = outs[0] if dirs == 1 else cat(outs, -1)
            if self.dropout > 0 and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, self.training)
        out = x
        if not batched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        h_n = stack(hs, 0)
        c_n = stack(cs, 0) if cs else None
        if not batched:
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if c_n is not None else None
        return out, h_n, c_n

    def _direction(self, x: Tensor, names: list[str], h: Tensor | None, c: Tensor | None, *, reverse: bool,
                   steps: int) -> tuple[Tensor, Tensor, Tensor | None]:
        w = {n.split("_l")[0]: getattr(self, n) for n in names}
        w_hh, b_ih, b_hh = w["weight_hh"], w.get("bias_ih"), w.get("bias_hh")
        gx = F.linear(x, w["weight_ih"], b_ih)  # every step's input projection in one GEMM: [T, N, G]
        outs: list[Tensor | None] = [None] * steps
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            gh = F.linear(h, w_hh, b_hh) if h is not None else F.bind_to_trace(b_hh, x)
            h, c = _step(self.mode, gx[t], gh, h, c, w.get("weight_hr"))
            outs[t] = h
        assert h is not None
        return stack(outs, 0), h, c  # type: ignore[arg-type]


class RNN(RNNBase):
    """Elman RNN: h' = tanh (or relu)(x W_ih^T + b_ih + h W_hh^T + b_hh)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Any = None, dtype: Any = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, num_layers,
                         bias, batch_first, dropout, bidirectional, 0, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:  # noqa: A002
        out, h_n, _ = self._run(input, hx)
        return out, h_n


class LSTM(RNNBase):
    """LSTM (gates i, f, g, o; optional projection of h with proj_size); returns (output, (h_n, c_n))."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None  # noqa: A002
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise self._err("hx must be a tuple (h_0, c_0) of tensors")
        out, h_n, c_n = self._run(input, *(hx if hx is not None else (None, None)))
        assert c_n is not None
        return out, (h_n, c_n)


class GRU(RNNBase):
    """GRU (gates r, z, n; n = tanh(x W_in + b_in + r * (h W_hn + b_hn))); returns (output, h_n)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0,
                         device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:  # noqa: A002
        out, h_n, _ = self._run(input, hx)
        return out, h_n


class RNNCellBase(Module):
    """One step of an RNN / LSTM / GRU: weight_ih [G, I], weight_hh [G, H], bias_ih/bias_hh [G]."""

    _mode = "RNN_TANH"

    def __init__(self, input_size: int, hidden_size: int, bias: bool, num_chunks: int, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.weight_ih = Parameter(new_param_data((num_chunks * hidden_size, input_size), device, dtype))
        self.weight_hh = Parameter(new_param_data((num_chunks * hidden_size, hidden_size), device, dtype))
        if bias:
            self.bias_ih = Parameter(new_param_data((num_chunks * hidden_size,), device, dtype))
            self.bias_hh = Parameter(new_param_data((num_chunks * hidden_size,), device, dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for p in self.parameters():
            init.uniform_(p, -stdv, stdv)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        nl = getattr(self, "nonlinearity", "tanh")
        if nl != "tanh":
            s += f", nonlinearity={nl}"
        return s

    def _cell(self, input: Any, hx: Any, cx: Any = None) -> tuple[Tensor, Tensor | None]:  # noqa: A002
        name = type(self).__name__
        x = check_tensor(self, input)
        if x.ndim not in (1, 2):
            raise ShapeError(f"{name}: Expected input to be 1D or 2D, got {x.ndim}D instead (shape "
                             f"{shape_str(x.shape)})")
        check_dtype(self, x, self.weight_ih)
        if x.shape[-1] != self.input_size:
            raise ShapeError(f"{name}: input has inconsistent input_size: got {x.shape[-1]} expected "
                             f"{self.input_size}")
        batched = x.ndim == 2
        if not batched:
            x = x.unsqueeze(0)
        states = []
        for what, st in (("hx", hx), ("cx", cx)):
            if st is None:
                states.append(None)
                continue
            st = check_tensor(self, st, what)
            want = (x.shape[0], self.hidden_size) if batched else (self.hidden_size,)
            if tuple(st.shape) != want:
                raise ShapeError(f"{name}: Expected {what} of shape {shape_str(want)}, got {shape_str(st.shape)}")
            states.append(st if batched else st.unsqueeze(0))
        h, c = states
        g = F.linear(x, self.weight_ih, self.bias_ih)
        gh = F.linear(h, self.weight_hh, self.bias_hh) if h is not None else F.bind_to_trace(self.bias_hh, x)
        h, c = _step(self._mode, g, gh, h, c)
        if not batched:
            h = h.squeeze(0)
            c = c.squeeze(0) if c is not None else None
        return h, c


class RNNCell(RNNCellBase):
    """h' = tanh (or relu)(x W_ih^T + b_ih + h W_hh^T + b_hh)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device: Any = None, dtype: Any = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)
        self.nonlinearity = nonlinearity
        self._mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:  # noqa: A002
        return self._cell(input, hx)[0]


class LSTMCell(RNNCellBase):
    """One LSTM step; returns (h', c')."""

    _mode = "LSTM"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None  # noqa: A002
                ) -> tuple[Tensor, Tensor]:
        h0, c0 = (None, None) if hx is None else hx
        h, c = self._cell(input, h0, c0)
        assert c is not None
        return h, c


class GRUCell(RNNCellBase):
    """One GRU step; returns h'."""

    _mode = "GRU"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:  # noqa: A002
        return self._cell(input, hx)[0]
