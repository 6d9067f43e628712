"""The sampler against the original runtime's C code (tests/c/sampler_ref.c), compiled here."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from cupy_getp.sampler import Sampler, XorShift, sample_mult, sample_topp, softmax_f32

from conftest import ROOT

F32P = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")


@pytest.fixture(scope="module")
def libref(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the reference sampler")
    lib = tmp_path_factory.mktemp("cref") / "libsampler.so"
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(ROOT / "tests/c/sampler_ref.c"), "-lm"],
                   check=True)
    ref = ctypes.CDLL(str(lib))
    ref.random_u32.argtypes = [ctypes.POINTER(ctypes.c_ulonglong)]
    ref.random_u32.restype = ctypes.c_uint
    ref.random_f32.argtypes = [ctypes.POINTER(ctypes.c_ulonglong)]
    ref.random_f32.restype = ctypes.c_float
    ref.sample_mult.argtypes = [F32P, ctypes.c_int, ctypes.c_float]
    ref.sample_topp.argtypes = [F32P, ctypes.c_int, ctypes.c_float, ctypes.c_float]
    ref.softmax.argtypes = [F32P, ctypes.c_int]
    ref.sample.argtypes = [F32P, ctypes.c_int, ctypes.c_float, ctypes.c_float, ctypes.POINTER(ctypes.c_ulonglong)]
    return ref


@pytest.mark.parametrize("seed", [1, 42, 1234567890123, 2**64 - 1])
def test_xorshift_is_bit_exact(libref, seed):
    state = ctypes.c_ulonglong(seed)
    ours = XorShift(seed)
    for _ in range(1000):
        assert ours.u32() == libref.random_u32(ctypes.byref(state))
    assert ours.state == state.value
    for _ in range(100):
        assert ours.f32() == np.float32(libref.random_f32(ctypes.byref(state)))


def test_softmax_matches(libref):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(5000) * 4).astype(np.float32)
    c = x.copy()
    libref.softmax(c, c.size)
    np.testing.assert_allclose(softmax_f32(x), c, rtol=2e-6, atol=1e-12)


def _probabilities(rng, n, peaked):
    logits = rng.standard_normal(n).astype(np.float32) * (6 if peaked else 1)
    return softmax_f32(logits)


@pytest.mark.parametrize("n", [7, 1000, 201088])
def test_sample_mult_and_topp_match_exactly(libref, n):
    rng = np.random.default_rng(n)
    for trial in range(30):
        probs = _probabilities(rng, n, peaked=trial % 2 == 0)
        coin = np.float32(rng.random())
        assert sample_mult(probs, coin) == libref.sample_mult(probs, n, coin)
        for topp in (0.5, 0.9, 0.99):
            assert sample_topp(probs, topp, coin) == libref.sample_topp(probs, n, topp, coin), (trial, topp)


def test_sampler_sequence_matches_the_runtime(libref):
    """A whole decode's worth of draws: same tokens, same generator state."""
    rng = np.random.default_rng(5)
    for temperature, topp in ((1.0, 0.9), (0.7, 0.0), (1.3, 1.0)):
        ours, state = Sampler(temperature, topp, seed=1337), ctypes.c_ulonglong(1337)
        for _ in range(50):
            logits = (rng.standard_normal(2000) * 3).astype(np.float32)
            expected = libref.sample(logits.copy(), logits.size, temperature, topp, ctypes.byref(state))
            assert ours(logits) == expected
        assert ours.rng.state == state.value


def test_greedy_takes_the_first_maximum():
    logits = np.array([0.0, 5.0, 1.0, 5.0], np.float32)
    assert Sampler(0.0)(logits) == 1


def test_seed_zero_uses_the_clock(monkeypatch):
    monkeypatch.setattr("cupy_getp.sampler.clock_seed", lambda: 777)
    assert Sampler(1.0, seed=0).seed == 777
    assert Sampler(1.0, seed=5).seed == 5
