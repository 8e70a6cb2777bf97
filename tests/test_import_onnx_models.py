"""The issue's test models through torch.onnx.export (the TorchScript exporter) + graphc.from_onnx, compiled
and compared with PyTorch itself (float32, 1e-4) at two batch sizes and, for the sequence models, two
sequence lengths: a ResNet-18 and a MobileNetV2-style network written in torch.nn, torch.nn.TransformerEncoder,
and transformers' BertModel and GPT2LMHeadModel with small configs and random weights (nothing downloads).
The exported graphs compute their shapes at run time (Shape -> Gather -> Unsqueeze -> Concat -> Reshape,
Range over a dynamic length, masks built by Equal/Where/Expand/ConstantOfShape), which the importer follows
symbolically. Each export, import and compile is timed and printed (pytest -s shows them).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

import graphc

sys.path.insert(0, str(Path(__file__).parent))

TOL = 1e-4


def _torch():
    pytest.importorskip("onnx")
    return pytest.importorskip("torch")


def _close(got, want, what: str) -> None:
    got = np.asarray(got)
    want = want.detach().numpy()
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs torch {want.shape}"
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    assert err <= TOL * scale, f"{what}: max abs error {err:.3g} vs torch"


class _Timer:
    def __init__(self, what: str):
        self.what = what
        self.parts: list[str] = []

    def run(self, stage: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self.parts.append(f"{stage} {time.perf_counter() - t0:.2f}s")
        return out

    def report(self) -> None:
        print(f"\n[onnx models] {self.what}: {', '.join(self.parts)}")


def _export(timer: _Timer, module, args, path, names, outputs, dynamic_axes) -> Path:
    torch = _torch()
    with torch.no_grad():
        timer.run("export", torch.onnx.export, module, args, str(path), input_names=names, output_names=outputs,
                  dynamic_axes=dynamic_axes, opset_version=17, dynamo=False)
    return path


def _compile(timer: _Timer, path, dims, cache):
    g = timer.run("import", graphc.from_onnx, path, dims=dims)
    return g, timer.run("compile", graphc.compile, g, cache_dir=cache)


@pytest.fixture(scope="module")
def cache(shared_cache):
    return shared_cache


# ------------------------------------------------------------------------------------ CNNs
@pytest.mark.parametrize("builder", ["resnet18", "mobilenet_v2"])
def test_cnn_through_onnx(builder, tmp_path, cache):
    torch = _torch()
    import test_import_torch as tit

    torch.manual_seed(0)
    model = getattr(tit, builder)().eval()
    tit._randomize_bn(model)
    timer = _Timer(builder)
    path = _export(timer, model, (torch.randn(2, 3, 32, 32),), tmp_path / "m.onnx", ["x"], ["y"], {"x": {0: "B"}})
    _, lib = _compile(timer, path, {"B": (1, 4)}, cache)
    timer.report()
    for b in (1, 3):
        x = torch.randn(b, 3, 32, 32)
        with torch.no_grad():
            want = model(x)
        _close(lib(x.numpy()), want, f"{builder} B={b}")


# ------------------------------------------------------------------------------------ TransformerEncoder
def test_transformer_encoder_through_onnx(tmp_path, cache):
    """The TorchScript exporter folds multi-head attention's sequence length to the example's (the view to
    [T, B*heads, head_dim] gets a constant T), so an export holds for one T (onnxruntime refuses others too):
    a dynamic T is refused with the error that says so, and each T is its own export with a dynamic batch."""
    torch = _torch()
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
    enc = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        for t in (5, 12):
            timer = _Timer(f"TransformerEncoder T={t}")
            path = _export(timer, enc, (torch.randn(2, t, 32),), tmp_path / f"enc{t}.onnx", ["src"], ["y"],
                           {"src": {0: "B", 1: "T"}})
            if t == 5:
                with pytest.raises(graphc.UnsupportedError, match=r"Reshape.*holds only for T = 5.*dims=\{'T': 5\}"):
                    graphc.from_onnx(path, dims={"B": (1, 4)})
            g, lib = _compile(timer, path, {"B": (1, 4), "T": t}, cache)
            timer.report()
            assert g.dims == {"B": (1, 4)}
            for b in (1, 3):
                x = torch.randn(b, t, 32)
                with torch.no_grad():
                    want = enc(x)
                _close(lib(x.numpy()), want, f"TransformerEncoder B={b} T={t}")
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


# ------------------------------------------------------------------------------------ transformers
def _hf_inputs(torch, b: int, t: int, vocab: int):
    g = torch.Generator().manual_seed(b * 100 + t)
    ids = torch.randint(0, vocab, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, t // 2:] = 0  # padding in the first sequence
    return ids, mask


def _hf_case(name: str, model, fields: list[str], tmp_path, cache):
    torch = _torch()

    class AsTuple(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, input_ids, attention_mask):
            out = self.m(input_ids=input_ids, attention_mask=attention_mask)
            return tuple(out[f] for f in fields)

    wrapped = AsTuple().eval()
    names = ["input_ids", "attention_mask"]
    timer = _Timer(name)
    path = _export(timer, wrapped, _hf_inputs(torch, 2, 8, 100), tmp_path / "m.onnx", names, fields,
                   {n: {0: "B", 1: "T"} for n in names})
    g, lib = _compile(timer, path, {"B": (1, 4), "T": (1, 32)}, cache)
    timer.report()
    assert g.dims == {"B": (1, 4), "T": (1, 32)}
    for b, t in ((1, 5), (3, 12)):
        ids, mask = _hf_inputs(torch, b, t, 100)
        with torch.no_grad():
            want = wrapped(ids, mask)
        got = lib(ids.numpy(), mask.numpy())
        got = got if isinstance(got, (tuple, list)) else (got,)
        assert len(got) == len(want)
        for f, x, w in zip(fields, got, want):
            _close(x, w, f"{name} {f} B={b} T={t}")


def test_bert_through_onnx(tmp_path, cache):
    torch = _torch()
    tr = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tr.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    _hf_case("BertModel", tr.BertModel(cfg).eval(), ["last_hidden_state", "pooler_output"], tmp_path, cache)


def test_gpt2_through_onnx(tmp_path, cache):
    torch = _torch()
    tr = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tr.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64, use_cache=False,
                        bos_token_id=0, eos_token_id=0)
    _hf_case("GPT2LMHeadModel", tr.GPT2LMHeadModel(cfg).eval(), ["logits"], tmp_path, cache)
