"""Reproducible random test inputs: the `rng` fixture, seeded from a stable hash of the test's id.

`hash()` of a string is salted per process, so it cannot seed a test that must be rerun on the same
numbers; zlib.crc32 of the pytest node id is the same on every run and machine. A failing test that
used `rng` reports its seed in a "random inputs" section of the failure.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

SEED_KEY = "rng seed"  # the item's user_properties entry the report hook reads


def seed_of(test_id: str) -> int:
    return zlib.crc32(test_id.encode())


def seeded(test_id: str) -> np.random.Generator:
    """A generator for `test_id` (a node id, or a label for inputs made at collection time)."""
    return np.random.default_rng(seed_of(test_id))


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded by the test's node id: each test its own inputs, the same on every run."""
    request.node.user_properties.append((SEED_KEY, seed_of(request.node.nodeid)))
    return seeded(request.node.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test that used `rng` names its seed: np.random.default_rng(SEED) gives its inputs."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for key, seed in item.user_properties:
            if key == SEED_KEY:
                report.sections.append(("random inputs", f"rng seed {seed} = zlib.crc32({item.nodeid!r}); "
                                        f"np.random.default_rng({seed}) reproduces them"))
