"""Seeded random numbers for initialisation (graphc.manual_seed, graphc.Generator)."""

from __future__ import annotations

from typing import Any

import numpy as np


class Generator:
    """A seedable source of random numbers (numpy's PCG64 underneath)."""

    def __init__(self, device: Any = "cpu"):
        self._seed = 0
        self._rng = np.random.Generator(np.random.PCG64(0))

    def manual_seed(self, seed: int) -> Generator:
        self._seed = int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self._seed))
        return self

    def initial_seed(self) -> int:
        return self._seed

    @property
    def rng(self) -> np.random.Generator:
        return self._rng


default_generator = Generator()


def manual_seed(seed: int) -> Generator:
    """Seed the default generator (all of graphc's random creation and init functions use it)."""
    return default_generator.manual_seed(seed)


def seed() -> int:
    s = int(np.random.SeedSequence().entropy % (2**63))
    default_generator.manual_seed(s)
    return s


def initial_seed() -> int:
    return default_generator.initial_seed()


def _gen(generator: Generator | None) -> np.random.Generator:
    return (generator or default_generator).rng
