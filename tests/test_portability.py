"""Every kernel builds for gfx90a (hipcc) and sm_90 (nvcc), as the runtime compilers see it and alone."""

from __future__ import annotations

import shutil

import pytest

from cupy_getp.gpu import kernels, portability

needs_compilers = pytest.mark.skipif(not (shutil.which("hipcc") and shutil.which("nvcc")),
                                     reason="hipcc and nvcc needed (.ci/run installs Debian's hipcc)")


@needs_compilers
def test_every_kernel_builds_for_mi250_and_h100():
    results = portability.compile_all()
    assert len(results) == 2 * 2 * len(kernels.kernel_files()) >= 2 * 2 * 8
    failures = [f"{r.target.label} {r.variant} {r.file}:\n{r.log}" for r in results if not r.ok]
    assert not failures, "\n".join(failures)


@pytest.mark.skipif(not shutil.which("nvcc"), reason="nvcc needed")
def test_the_wgmma_kernels_build_for_sm90a_with_their_bodies_unserialised_and_unspilled():
    """Every entry point of the wgmma file compiles for sm_90a; ptxas serialises no wgmma (its C7514 note)
    and spills in no kernel (the SwiGLU epilogue of the 64-row exact tile did, ~140 bytes, until it went through
    shared memory)."""
    results = portability.compile_all(targets=(), sm90a=True)
    assert [r.file for r in results] == list(portability.SM90A_FILES)
    for r in results:
        assert r.ok, r.log
        assert "wgmma.mma_async" not in r.log
        entries, spilled, entry = [], set(), None
        for line in r.log.splitlines():
            if "Compiling entry function" in line:
                entry = line.split("'")[1]
                entries.append(entry)
            elif "bytes spill stores" in line and " 0 bytes spill stores" not in line:
                spilled.add(entry)
        assert sorted(entries) == sorted(kernels.ENTRY_POINTS["gemm_wgmma"])
        assert not spilled, spilled


@pytest.mark.skipif(not (shutil.which("nvcc") and shutil.which("readelf")), reason="nvcc and readelf needed")
def test_the_wgmma_parts_hold_each_kernel_once_with_the_whole_files_machine_code():
    """kernels.FAMILY_PARTS: gemm_wgmma as its parts (-DGETP_PART=k, built side by side at warm-up) has every entry
    point in exactly one part and no part empty, and each kernel's sm_90a machine code is the whole file's."""
    from concurrent.futures import ThreadPoolExecutor

    parts = kernels.family_parts("gemm_wgmma")
    assert len(parts) == kernels.FAMILY_PARTS["gemm_wgmma"] > 1
    with ThreadPoolExecutor() as pool:  # nvcc processes
        whole, *pieces = pool.map(lambda defines: portability.cubin_sections("gemm_wgmma", portability.SM90A.arch,
                                                                             defines), [(), *parts])
    part_of = {}
    for k, sections in enumerate(pieces):
        assert sections, f"part {k} has no kernel"
        for name, code in sections.items():
            assert name not in part_of, f"{name} in parts {part_of[name]} and {k}"
            part_of[name] = k
            assert code == whole[name], f"{name}: its machine code in part {k} is not the whole file's"
    assert sorted(part_of) == sorted(f".text.{name}" for name in kernels.ENTRY_POINTS["gemm_wgmma"])


@needs_compilers
def test_a_cuda_only_shuffle_fails_for_the_hip_target(tmp_path, monkeypatch):
    """The check is real: a kernel using __shfl_xor_sync directly (CUDA only on ROCm 5) fails for gfx90a."""
    (tmp_path / "common.h").write_text(kernels.kernel_dir().joinpath("common.h").read_text())
    (tmp_path / "bad.hip").write_text('#include "common.h"\nextern "C" __global__ void k(float* x) '
                                      '{ x[0] = __shfl_xor_sync(0xffffffffu, x[0], 1); }\n')
    monkeypatch.setattr(kernels, "kernel_dir", lambda: tmp_path)
    monkeypatch.setattr(portability, "kernel_dir", lambda: tmp_path)
    results = {(r.target.compiler, r.variant): r.ok for r in portability.compile_all()}
    assert results[("nvcc", "runtime")] and not results[("hipcc", "runtime")]


def test_runtime_source_inlines_the_header_and_names_files():
    source = kernels.assemble_source("moe", 64)
    assert source.startswith("#define WARP_SIZE 64\n")
    assert '#line 1 "kernels/common.h"' in source and '#line 1 "kernels/moe.hip"' in source
    assert '#include "common.h"' not in source
    names = set(kernels.families())
    assert {p.stem for p in kernels.kernel_files()} == names


@pytest.mark.skipif(not (shutil.which("nvcc") and shutil.which("readelf")), reason="nvcc and readelf needed")
def test_machine_code_digests_name_every_kernel_of_a_file_and_repeat():
    """`--digests`: one sha256 per entry point of the file (sm_90), the same on a second build, and different
    between kernels whose code differs."""
    first = portability.machine_code_digests(("rmsnorm",))
    assert sorted(key.split(":.text.")[1] for key in first) == sorted(kernels.ENTRY_POINTS["rmsnorm"])
    assert all(key.startswith("rmsnorm.hip:sm_90:") for key in first)
    assert portability.machine_code_digests(("rmsnorm",)) == first
    assert len(set(first.values())) == len(first)


def test_digests_are_not_written_over_an_existing_file(tmp_path):
    kept = tmp_path / "digests.txt"
    kept.write_text("before\n")
    assert portability.main(["--digests", str(kept)]) == 1  # it exists (or no nvcc here): exit 1, untouched
    assert kept.read_text() == "before\n"
