"""The suite's shared build cache (tests/shared_build.py says why): ``shared_cache`` is its folder, and a
session started without $GRAPHC_CACHE_DIR compiles into it too (not into ~/.cache/graphc), so the tests
that compile with the default cache and those given the shared one build the runtime once."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import pytest

from tests.shared_build import shared_cache_dir

os.environ.setdefault("GRAPHC_CACHE_DIR", shared_cache_dir())


def _pin_libgomp() -> None:
    """Many runtime tests dlopen an OpenMP build and drop it when their fixture ends; when that library was
    libgomp's last user, the loader unmapped libgomp while its idle team still spun in it, and the next
    test died with SIGSEGV (tests/test_runtime_act.py run alone: 3 of 6 runs; a full run hid it because
    torch keeps libgomp loaded). Loading it once here with RTLD_NODELETE keeps it mapped for the session."""
    name = ctypes.util.find_library("gomp") or "libgomp.so.1"
    try:
        ctypes.CDLL(name, mode=os.RTLD_GLOBAL | getattr(os, "RTLD_NODELETE", 0))
    except OSError:  # no OpenMP runtime on this machine: the OpenMP builds are not run either
        pass


_pin_libgomp()


@pytest.fixture(scope="session")
def shared_cache() -> str:
    """The graphc build cache shared by the tests that do not test the cache itself."""
    return shared_cache_dir()
