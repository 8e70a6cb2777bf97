"""Linear weights packed at create (gc_sgemm_pack_b into context-owned panels; the library's blob and the
weights file keep torch's [out, in] layout): a compiled model gives torch's results with the weights baked
in, read from a weights file, and after load_state_dict with new weights; small batches (the unpacked
GEMM paths) and large ones (the packed one) in one library; a weight shared by two layers is packed once;
1 and 2 threads agree to the bit."""

from __future__ import annotations

import re

import numpy as np
import pytest

import graphc

torch = pytest.importorskip("torch")


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(24, 40)
        self.mid = torch.nn.Linear(40, 40)
        self.mid2 = torch.nn.Linear(40, 40)
        self.mid2.weight = self.mid.weight  # tied: one packed copy for both
        self.out = torch.nn.Linear(40, 19)

    def forward(self, x):
        h = torch.nn.functional.gelu(self.fc1(x))
        h = self.mid2(torch.relu(self.mid(h))) + h
        return self.out(h)


def _net(seed: int) -> Net:
    torch.manual_seed(seed)
    return Net().eval()


def _packed_calls(cm) -> int:
    return sum(len(re.findall(r"\bgc_sgemm_ep_packed\(", text)) for text in cm.sources.values())


@pytest.mark.parametrize("weights", ["embed", "file"])
def test_packed_weights_match_torch(tmp_path, weights):
    net = _net(0)
    x = torch.randn(2, 3, 24)
    cm = graphc.compile(net, [x], {"x": {0: graphc.Dim("B", 1, 64)}}, name=f"packed_{weights}",
                        weights=weights, out_dir=tmp_path / "out")
    assert _packed_calls(cm) == 4
    model_c = next(text for name, text in cm.sources.items() if name.endswith("_model.c"))
    assert "#define NUM_PACKED 3" in model_c  # mid and mid2 share one packed copy
    rng = np.random.default_rng(1)
    for batch in (1, 30):  # M = 3 rows (unpacked small-M path) and 90 rows (packed panels)
        xb = rng.standard_normal((batch, 3, 24)).astype(np.float32)
        with torch.no_grad():
            want = net(torch.from_numpy(xb)).numpy()
        cm.set_num_threads(1)
        one = np.asarray(cm(xb))
        cm.set_num_threads(2)
        two = np.asarray(cm(xb))
        np.testing.assert_array_equal(one, two)
        np.testing.assert_allclose(one, want, rtol=1e-4, atol=1e-5)
    # new weights: load_state_dict writes a torch-layout weights file, the new context packs them again
    other = _net(7)
    # (the import keeps a tied parameter under its last name)
    cm.load_state_dict({k: v.detach().numpy() for k, v in other.state_dict().items() if k != "mid.weight"})
    xb = rng.standard_normal((30, 3, 24)).astype(np.float32)
    with torch.no_grad():
        want = other(torch.from_numpy(xb)).numpy()
    np.testing.assert_allclose(np.asarray(cm(xb)), want, rtol=1e-4, atol=1e-5)
    reloaded = graphc.load_compiled(tmp_path / "out")
    np.testing.assert_allclose(np.asarray(reloaded(xb)), want, rtol=1e-4, atol=1e-5)
