"""What the host and the kernels share is stated once: the constants of cupy_getp/gpu/constants.py are
emitted into every assembled source and defined by no kernel file; `kernels.ENTRY_POINTS` is exactly the
set of kernels the sources declare (after the preprocessor: macro-made names included); launch helpers
check their arguments with the project's errors, never a bare `assert`."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess

import pytest

from cupy_getp.gpu import constants, kernels

from conftest import ROOT

_DECLARATION = re.compile(r'extern "C" __global__ void\s+')


def _skip_balanced(text: str, i: int) -> int:
    """Index just past the parenthesised group starting at text[i] == '('."""
    depth = 0
    for j in range(i, len(text)):
        depth += {"(": 1, ")": -1}.get(text[j], 0)
        if depth == 0:
            return j + 1
    raise ValueError("unbalanced parentheses")


def preprocessed(family: str, warp_size: int) -> str:
    """The assembled source after the preprocessor (CUDA side)."""
    source = kernels.assemble_source(family, warp_size)
    return subprocess.run(["cpp", "-P", "-D__CUDA_ARCH__=900", "-"], input=source, capture_output=True, text=True,
                          check=True).stdout


def declared_kernels(family: str, warp_size: int) -> dict[str, int]:
    """Kernel name -> number of parameters, from the preprocessed assembled source (CUDA side)."""
    return {name: count for name, count, _ in kernel_definitions(preprocessed(family, warp_size))}


def kernel_definitions(text: str):
    """(name, number of parameters, the body's text from its first statement) of each kernel in `text`."""
    for match in _DECLARATION.finditer(text):
        i = match.end()
        while True:  # attributes before the name: __launch_bounds__(...), __attribute__((...))
            attr = re.match(r"\s*(__launch_bounds__|__attribute__)\s*", text[i:])
            if not attr:
                break
            i = _skip_balanced(text, i + attr.end())
        name = re.match(r"\s*(\w+)\s*", text[i:])
        i += name.end()
        params = text[i + 1:_skip_balanced(text, i) - 1]
        depth, count = 0, 1 if params.strip() else 0
        for ch in params:
            depth += {"(": 1, ")": -1, "<": 1, ">": -1}.get(ch, 0)
            count += ch == "," and depth == 0
        body = text[text.index("{", _skip_balanced(text, i)) + 1:]
        yield name.group(1), count, body.lstrip()


needs_cpp = pytest.mark.skipif(not shutil.which("cpp"), reason="the C preprocessor (cpp) is needed")


@needs_cpp
@pytest.mark.parametrize("family", kernels.families())
def test_entry_points_are_exactly_the_declared_kernels(family):
    for warp_size in (32, 64):
        assert sorted(declared_kernels(family, warp_size)) == sorted(kernels.ENTRY_POINTS[family])


@needs_cpp
@pytest.mark.parametrize("family", kernels.families())
def test_every_kernel_waits_for_the_kernels_ahead_first(family):
    """Programmatic dependent launch (gpu/launch/pdl.py) lets a kernel start before the one ahead has finished:
    each kernel's first statement is grid_begin(), or, for the TMA products, the product whose producer calls it
    once its first weight copies are issued (wg_produce_tma) and whose consumers call it first (the grouped TMA
    products wait first: their tiles' experts come from the kernel ahead)."""
    text = preprocessed(family, 32)
    for name, _, body in kernel_definitions(text):
        if "_tma_" in name and re.match(r"wg_dense_tma(_splitk)?<", body):
            continue  # the dense TMA products: their producer and consumers wait (below)
        assert body.startswith("grid_begin();"), f"{name} starts with {body[:60]!r}"
    if family == "gemm_wgmma":  # the source: the preprocessor here leaves out the sm_90a bodies
        text = (kernels.kernel_dir() / "gemm_wgmma.hip").read_text()
        producer = text[text.index("void wg_produce_tma"):]
        assert re.search(r"wg_tma_w\(.*?\}\s*\}\s*grid_begin\(\);", producer, re.DOTALL), "producer's wait"
        assert "if constexpr (WgByTma<WRowOf>::value) grid_begin();" in text, "the consumers' wait"


def test_every_family_has_its_entry_points():
    assert set(kernels.ENTRY_POINTS) == set(kernels.families())
    names = [n for family in kernels.ENTRY_POINTS.values() for n in family]
    assert len(names) == len(set(names)), "a kernel name in two families"


def test_shared_constants_are_emitted_once_and_defined_by_no_kernel_file():
    files = {p.name: p.read_text() for p in [*kernels.kernel_files(), kernels.kernel_dir() / "common.h"]}
    for name, value in constants.KERNEL_CONSTANTS.items():
        for file, text in files.items():
            assert not re.search(rf"#\s*define\s+{name}\b", text), f"{file} defines {name}: constants.py does"
        assert any(re.search(rf"\b{name}\b", text) for text in files.values()), f"no kernel uses {name}"
        source = kernels.assemble_source("moe", 64)
        assert re.findall(rf"^#define {name} (.*)$", source, re.MULTILINE) == [str(value)]


def test_a_missing_constant_stops_the_build():
    """common.h refuses to compile without the emitted constants (no silent second default)."""
    assert re.search(r"#ifndef BLOCK_SIZE\s*\n\s*#error", (kernels.kernel_dir() / "common.h").read_text())


def test_launch_helpers_have_no_bare_asserts():
    """Checks must survive `python -O`: KernelArgumentError / KernelDtypeError with a message."""
    gpu = ROOT / "cupy_getp" / "gpu"
    for path in [gpu / "kernels.py", *(gpu / "launch").glob("*.py")]:
        asserts = [node.lineno for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Assert)]
        assert not asserts, f"{path.relative_to(ROOT)}: assert at lines {asserts}"
