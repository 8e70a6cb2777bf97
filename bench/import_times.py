"""Import and compile times of the importer test models (tests/test_import_torch.py, test_import_onnx_models.py):
ResNet-18, MobileNetV2, TransformerEncoder, BertModel and GPT2LMHeadModel (small configs, random weights),
each through graphc.from_torch + graphc.compile and through torch.onnx.export + graphc.from_onnx +
graphc.compile, with the same dynamic dims as the tests.

    python bench/import_times.py                     # every model -> a markdown table on stdout
    python bench/import_times.py --models resnet18,bert

Compile times are for a model the cache has not seen (one fresh cache folder for the run; a small model is
compiled, and imported with from_torch, first, so neither the runtime's objects nor torch.export's one-time
setup count in the first model's times). Nothing asserts on times.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _hf_inputs(torch: Any, b: int, t: int, vocab: int) -> tuple[Any, Any]:
    ids = torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(b * 100 + t))
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, t // 2:] = 0
    return ids, mask


def models() -> dict[str, Callable[[], tuple[Any, tuple, dict, dict, dict]]]:
    """name -> () -> (torch module, example inputs, from_torch dynamic, ONNX dynamic_axes, from_onnx dims)."""
    import test_import_torch as tit
    import torch

    import graphc

    def cnn(builder: Callable[[], Any]) -> Callable[[], tuple]:
        def make() -> tuple:
            torch.manual_seed(0)
            m = builder().eval()
            tit._randomize_bn(m)
            return m, (torch.randn(2, 3, 32, 32),), {"x": {0: "B"}}, {"x": {0: "B"}}, {"B": (1, 4)}
        return make

    def encoder() -> tuple:
        torch.manual_seed(0)
        layer = torch.nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
        enc = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
        # the ONNX export holds for the example's T only (docs/importers.md): T fixed there, dynamic in from_torch
        return (enc, (torch.randn(2, 8, 32),), {"src": {0: "B", 1: graphc.Dim("T", max=32)}},
                {"src": {0: "B", 1: "T"}}, {"B": (1, 4), "T": 8})

    def hf(kind: str) -> Callable[[], tuple]:
        def make() -> tuple:
            import transformers as tr

            torch.manual_seed(0)
            if kind == "bert":
                cfg = tr.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64, max_position_embeddings=64)
                inner, fields = tr.BertModel(cfg).eval(), ["last_hidden_state", "pooler_output"]
            else:
                cfg = tr.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64, use_cache=False,
                                    bos_token_id=0, eos_token_id=0)
                inner, fields = tr.GPT2LMHeadModel(cfg).eval(), ["logits"]

            class AsTuple(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.m = inner

                def forward(self, input_ids: Any, attention_mask: Any) -> tuple:
                    out = self.m(input_ids=input_ids, attention_mask=attention_mask)
                    return tuple(out[f] for f in fields)

            dyn = {n: {0: "B", 1: "T"} for n in ("input_ids", "attention_mask")}
            return AsTuple().eval(), _hf_inputs(torch, 2, 8, 100), dyn, dyn, {"B": (1, 4), "T": (1, 32)}
        return make

    return {"resnet18": cnn(tit.resnet18), "mobilenet_v2": cnn(tit.mobilenet_v2), "transformer_encoder": encoder,
            "bert": hf("bert"), "gpt2": hf("gpt2")}


def measure(name: str, make: Callable[[], tuple], cache: Path, tmp: Path) -> dict[str, float]:
    import torch

    import graphc

    m, xs, dyn, axes, dims = make()
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    imp = graphc.from_torch(m, xs, dyn)
    t1 = time.perf_counter()
    graphc.compile(imp, cache_dir=cache)
    t2 = time.perf_counter()
    out.update(from_torch=t1 - t0, torch_compile=t2 - t1, **{f"torch_{k}": v for k, v in imp.times.items()})
    path = tmp / f"{name}.onnx"
    names = list(dyn)
    n_out = len(m(*xs)) if isinstance(m(*xs), tuple) else 1
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused encoder-layer op has no ONNX export
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            torch.onnx.export(m, xs, str(path), input_names=names, output_names=[f"out{i}" for i in range(n_out)],
                              dynamic_axes=axes, opset_version=17, dynamo=False)
            t1 = time.perf_counter()
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    g = graphc.from_onnx(path, dims=dims)
    t2 = time.perf_counter()
    graphc.compile(g, cache_dir=cache)
    t3 = time.perf_counter()
    out.update(onnx_export=t1 - t0, from_onnx=t2 - t1, onnx_compile=t3 - t2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,mobilenet_v2,transformer_encoder,bert,gpt2")
    args = ap.parse_args(argv)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    import numpy as np
    from run import cpu_info, versions  # bench/run.py

    import graphc

    table = models()
    with tempfile.TemporaryDirectory(prefix="graphc-import-times-") as d:
        tmp, cache = Path(d), Path(d) / "cache"
        t0 = time.perf_counter()
        warm = graphc.nn.Linear(4, 4)
        graphc.compile(warm, (np.zeros((1, 4), np.float32),), cache_dir=cache)
        print(f"runtime objects built in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        t0 = time.perf_counter()
        import torch

        graphc.from_torch(torch.nn.Linear(4, 4), (torch.zeros(1, 4),))  # torch.export's one-time setup
        print(f"first torch.export of the process: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        rows = []
        for name in [n for n in args.models.split(",") if n]:
            print(f"{name} ...", file=sys.stderr, flush=True)
            rows.append((name, measure(name, table[name], cache, tmp)))
    model, flags, _ = cpu_info()
    print(f"CPU: {model} ({' '.join(flags)}), {platform.machine()}; {versions()}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| model | from_torch s (export / decompose / convert) | compile s | torch.onnx.export s | from_onnx s "
          "| compile s |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, r in rows:
        print(f"| {name} | {r['from_torch']:.2f} ({r['torch_export']:.2f} / {r['torch_decompose']:.2f} / "
              f"{r['torch_convert']:.2f}) | {r['torch_compile']:.2f} | {r['onnx_export']:.2f} | {r['from_onnx']:.2f} "
              f"| {r['onnx_compile']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "bench"))
    raise SystemExit(main())
