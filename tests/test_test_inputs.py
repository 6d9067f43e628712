"""The tests' random inputs are reproducible: one `rng` fixture (tests/seeding.py), seeded by a stable
hash of the test id, the same in every process; a failing test that used it prints its seed."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib

import numpy as np

from conftest import ROOT
from seeding import seeded

TESTS = ROOT / "tests"


def test_rng_is_seeded_by_the_crc32_of_the_test_id(rng, request):
    want = np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
    np.testing.assert_array_equal(rng.integers(0, 2**32, 8), want.integers(0, 2**32, 8))


def test_seeds_do_not_depend_on_the_process_hash_salt():
    """hash() of a str differs between processes; the seed must not."""
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); from seeding import seeded; "
            "print(seeded('t::x').integers(0, 2**32, 4))")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": salt}).stdout for salt in ("1", "2")}
    assert outputs == {f"{seeded('t::x').integers(0, 2**32, 4)}\n"}


def test_a_failing_randomized_test_prints_its_seed(tmp_path):
    (tmp_path / "conftest.py").write_text(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
                                          "from seeding import pytest_runtest_makereport, rng  # noqa: F401\n")
    (tmp_path / "test_draw.py").write_text("def test_fails(rng):\n    assert rng.random() > 2\n\n"
                                           "def test_passes(rng):\n    assert rng.random() < 2\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stdout
    seed = zlib.crc32(b"test_draw.py::test_fails")
    assert f"rng seed {seed}" in result.stdout
    assert str(zlib.crc32(b"test_draw.py::test_passes")) not in result.stdout


def test_one_rng_fixture_and_no_salted_seeds():
    """No test module defines its own `rng` fixture or seeds from hash()."""
    for path in TESTS.glob("*.py"):
        if path.name == "test_test_inputs.py":  # its own patterns below
            continue
        text = path.read_text()
        if path.name != "seeding.py":
            assert "def rng(" not in text, f"{path.name} defines a second rng fixture"
        assert "default_rng(abs(hash(" not in text and "default_rng(hash(" not in text, path.name
