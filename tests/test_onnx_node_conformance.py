"""The ONNX backend node tests of the supported ops, compiled to C and interpreted (tests/onnx_conformance.py),
and the pass tables in README.md and docs/importers.md kept true."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def test_onnx_node_tests_pass_compiled_and_interpreted(tmp_path, shared_cache):
    pytest.importorskip("onnx")
    import onnx_conformance as oc

    results = oc.run(oc.load_cases(), cache_dir=shared_cache)
    failed = [f"{r.case.name}: {r.reason}" for r in results if r.status == "failed"]
    assert not failed, "\n".join(failed)
    assert all(r.reason for r in results if r.status == "out of scope")
    text = oc.table(results)
    for path in (oc.ROOT / "README.md", oc.ROOT / "docs" / "importers.md"):
        body = path.read_text().split(oc.BEGIN, 1)[1].split(oc.END, 1)[0].strip()
        assert body == text.strip(), f"{path.name}: ONNX pass table out of date (onnx_conformance.py --write)"
    passed = {r.case.name for r in results if r.status == "passed"}
    for must in ("test_gemm_all_attributes", "test_conv_with_autopad_same", "test_layer_normalization_4d_axis0",
                 "test_maxpool_3d_dilations", "test_averagepool_2d_ceil", "test_slice_neg_steps", "test_shape"):
        assert must in passed
