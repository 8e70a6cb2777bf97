"""Documentation generated from the code stays current."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_op_reference_is_current():
    from graphc.ops.doc import render

    assert (ROOT / "docs" / "ops.md").read_text() == render(), \
        "docs/ops.md is stale: run `python -m graphc.ops.doc > docs/ops.md`"
