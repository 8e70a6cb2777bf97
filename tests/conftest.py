"""The suite's shared build cache (tests/shared_build.py says why): ``shared_cache`` is its folder, and a
session started without $GRAPHC_CACHE_DIR compiles into it too (not into ~/.cache/graphc), so the tests
that compile with the default cache and those given the shared one build the runtime once."""

from __future__ import annotations

import os

import pytest

from tests.shared_build import shared_cache_dir

os.environ.setdefault("GRAPHC_CACHE_DIR", shared_cache_dir())


@pytest.fixture(scope="session")
def shared_cache() -> str:
    """The graphc build cache shared by the tests that do not test the cache itself."""
    return shared_cache_dir()
