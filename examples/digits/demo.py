"""graphc's demo: compile a trained digit classifier to a C library and check it against eager execution.

    python examples/digits/demo.py [OUT_DIR]       # OUT_DIR defaults to ./out/digits

1. loads model.py (a graphc.nn CNN) with the trained weights digits.safetensors;
2. classifies the 360 test images of digits_test.npz in eager mode (graphc's numpy-backed Tensors);
3. compiles the model with graphc.compile into OUT_DIR (a C shared library + header) and classifies
   the same images with it;
4. prints both accuracies, the largest logit difference and the per-image latency of the compiled
   library against eager graphc (and PyTorch, when it is installed).

It exits with status 1 if the compiled library's accuracy differs from eager execution's.
"""

from __future__ import annotations

import json
import runpy
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import graphc

HERE = Path(__file__).resolve().parent


def latency(fn: Callable[[np.ndarray], Any], images: np.ndarray, min_time: float = 0.3) -> float:
    """Median seconds to classify one image (batch of 1), cycling through the test images."""
    for x in images[:5]:  # warm-up
        fn(x[None])
    times: list[float] = []
    start = time.perf_counter()
    i = 0
    while len(times) < 50 or time.perf_counter() - start < min_time:
        x = images[i % len(images)][None]
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
        i += 1
    return float(np.median(times))


def torch_runner(state: dict[str, np.ndarray]) -> Callable[[np.ndarray], np.ndarray] | None:
    """The PyTorch twin (train.py's DigitsNet) with the same weights, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    sys.path.insert(0, str(HERE))
    from train import DigitsNet

    net = DigitsNet()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    net.eval()
    torch.set_num_threads(1)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()

    return run


def main(argv: list[str]) -> int:
    out_dir = Path(argv[1] if len(argv) > 1 else "out/digits")
    data = np.load(HERE / "digits_test.npz")
    images, labels = data["images"], data["labels"]

    # model.py follows graphc's model-file convention (docs/model-files.md): model, example_inputs,
    # dynamic and weights, the names `graphc compile examples/digits/model.py` reads
    spec = runpy.run_path(str(HERE / "model.py"))
    net = spec["model"]
    net.load_state_dict(graphc.load(str(HERE / spec["weights"])))
    net.eval()

    def eager(x: np.ndarray) -> np.ndarray:
        return net(graphc.from_numpy(x)).numpy()

    eager_logits = eager(images)
    eager_acc = float((eager_logits.argmax(1) == labels).mean())
    print(f"eager graphc:     accuracy {eager_acc:.4f} on {len(labels)} test images")

    t0 = time.perf_counter()
    compiled = graphc.compile(net, spec["example_inputs"], dynamic=spec["dynamic"], out_dir=str(out_dir), threads=1)
    files = json.loads((out_dir / "manifest.json").read_text())["files"]
    lib, header = out_dir / files["library"], out_dir / files["header"]
    print(f"compiled to C in {time.perf_counter() - t0:.1f} s: {lib} ({lib.stat().st_size // 1024} KB, weights "
          f"inside) and {header}")
    compiled_logits = np.asarray(compiled(images))
    compiled_acc = float((compiled_logits.argmax(1) == labels).mean())
    max_diff = float(np.abs(compiled_logits - eager_logits).max())
    changed = int((compiled_logits.argmax(1) != eager_logits.argmax(1)).sum())
    print(f"compiled C:       accuracy {compiled_acc:.4f}; max |logit difference| vs eager {max_diff:.2e}; "
          f"{changed} prediction(s) differ")

    state = {k: v.numpy() for k, v in net.state_dict().items()}
    runners: dict[str, Callable[[np.ndarray], Any]] = {"compiled C": compiled, "eager graphc": eager}
    torch_fn = torch_runner(state)
    if torch_fn is not None:
        torch_acc = float((torch_fn(images).argmax(1) == labels).mean())
        print(f"PyTorch eager:    accuracy {torch_acc:.4f}")
        runners["PyTorch eager"] = torch_fn
    else:
        print("PyTorch eager:    not installed (pip install torch to compare)")
    base = latency(compiled, images)
    print("\nlatency per image (batch 1, median; the compiled library and PyTorch on 1 thread):")
    for name, fn in runners.items():
        t = base if fn is compiled else latency(fn, images)
        ratio = "" if fn is compiled else f"  ({t / base:.1f}x the compiled library's)"
        print(f"  {name:<16}{t * 1e6:9.1f} us{ratio}")

    if compiled_acc != eager_acc:
        print(f"FAIL: the compiled library's accuracy ({compiled_acc:.4f}) differs from eager ({eager_acc:.4f})")
        return 1
    print("\nOK: the compiled C library classifies the test set exactly as eager execution does")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
