"""Documentation generated from the code stays current."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_op_reference_is_current():
    from graphc.ops.doc import render

    assert (ROOT / "docs" / "ops.md").read_text() == render(), \
        "docs/ops.md is stale: run `python -m graphc.ops.doc > docs/ops.md`"


def test_readme_pytorch_three_lines_run_verbatim():
    """The README's "From PyTorch in three lines" block, run as written on a torch.nn.Module whose forward
    takes x, compiles and matches the module at the batch size the block runs (and one more)."""
    import re

    import numpy as np
    import pytest

    torch = pytest.importorskip("torch")
    text = (ROOT / "README.md").read_text()
    section = text.split("## From PyTorch in three lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len([ln for ln in code.splitlines() if ln.strip()]) == 3

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 7, stride=8)
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    torch.manual_seed(0)
    ns = {"model": Net().eval()}
    exec(compile(code, "README.md", "exec"), ns)
    assert tuple(ns["y"].shape) == (7, 3)
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        want = ns["model"](x).numpy()
    got = ns["lib"](x)
    np.testing.assert_allclose(got.numpy() if hasattr(got, "numpy") else got, want, atol=1e-4, rtol=1e-4)
