"""Prove that every kernels/*.hip builds for MI250 (gfx90a, hipcc) and H100 (sm_90, nvcc) on a CPU machine.

Two builds per file and compiler: the source exactly as the run-time compiler receives it
(`kernels.assemble_source`, with the device's warp size: 64 for gfx90a, 32 for sm_90), and the file on
its own (`-I kernels`, the shared constants of `constants.py` as -D options, common.h's defaults for the
rest). hipcc gets `-include hip/hip_runtime.h`, which hiprtc prepends by itself.

    python -m cupy_getp.gpu.portability [--require hipcc,nvcc]
    python -m cupy_getp.gpu.portability --digests FILE   # sha256 of every kernel's machine code (nvcc)

`--digests` proves that a change to kernel source leaves the machine code alone (a refactor, a helper moved to
common.h): it writes one line per kernel, "file:target:.text.<kernel> sha256" for sm_90 (every file) and sm_90a
(the SM90A_FILES), taken from nvcc's cubins; `diff` two such files from before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .constants import KERNEL_CONSTANTS
from .kernels import assemble_source, kernel_dir, kernel_files


@dataclass(frozen=True)
class Target:
    compiler: str  # executable
    label: str
    warp_size: int
    suffix: str  # what the compiler takes as a device-code source
    arch: str = "-arch=sm_90"  # nvcc's target

    def command(self, source: Path, output: Path, defines: tuple[str, ...] = ()) -> list[str]:
        if self.compiler == "hipcc":
            return ["hipcc", "--offload-arch=gfx90a", "--cuda-device-only", "-include", "hip/hip_runtime.h",
                    "-I", str(kernel_dir()), *defines, "-Werror", "-c", str(source), "-o", str(output)]
        return ["nvcc", "-x", "cu", self.arch, "-I", str(kernel_dir()), *defines, "-Werror", "all-warnings",
                "-Xptxas", "-v", "-c", str(source), "-o", str(output)]

    def env(self) -> dict:
        env = dict(os.environ)
        if self.compiler == "hipcc":
            env["HIP_PLATFORM"] = "amd"  # Debian's hipcc would otherwise pick nvcc when it is installed
        return env


TARGETS = (Target("hipcc", "gfx90a (MI250)", 64, ".hip"), Target("nvcc", "sm_90 (H100)", 32, ".cu"))
# The files whose kernels need the sm_90a features (wgmma), and that build: there they must compile with
# their bodies, without ptxas serialising the wgmma (its C7514 note) and without spilling the consumers'
# accumulators (a stack frame).
SM90A = Target("nvcc", "sm_90a (H100, wgmma)", 32, ".cu", "-gencode=arch=compute_90a,code=sm_90a")
SM90A_FILES = ("gemm_wgmma.hip",)


@dataclass
class Result:
    target: Target
    file: str
    variant: str  # "runtime" or "standalone"
    ok: bool
    log: str


def compile_all(targets=TARGETS, sm90a: bool = False) -> list[Result]:
    """Every file for every target (runtime and standalone), and with sm90a the SM90A_FILES at runtime for
    sm_90a."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        for target in targets:
            for path in kernel_files():
                assembled = tmpdir / f"{path.stem}.runtime{target.suffix}"
                assembled.write_text(assemble_source(path.stem, target.warp_size))
                standalone = tuple(f"-D{name}={value}" for name, value in KERNEL_CONSTANTS.items())
                for variant, source, defines in (("runtime", assembled, ()), ("standalone", path, standalone)):
                    proc = subprocess.run(target.command(source, tmpdir / f"{path.stem}.{variant}.o", defines),
                                          capture_output=True, text=True, env=target.env())
                    results.append(Result(target, path.name, variant, proc.returncode == 0,
                                          (proc.stdout + proc.stderr).strip()))
        for name in SM90A_FILES if sm90a else ():
            assembled = tmpdir / f"{Path(name).stem}.sm90a.cu"
            assembled.write_text(assemble_source(Path(name).stem, SM90A.warp_size))
            proc = subprocess.run(SM90A.command(assembled, tmpdir / "sm90a.o"), capture_output=True, text=True)
            log = (proc.stdout + proc.stderr).strip()
            results.append(Result(SM90A, name, "runtime", proc.returncode == 0 and "C7514" not in log, log))
    return results


def text_sections(cubin: Path) -> dict[str, bytes]:
    """The .text.<kernel> sections of an ELF cubin (offsets and sizes as readelf lists them)."""
    listing = subprocess.run(["readelf", "-SW", str(cubin)], capture_output=True, text=True, check=True).stdout
    blob, sections = cubin.read_bytes(), {}
    for line in listing.splitlines():
        if " .text." in line:  # [Nr] Name Type Address Off Size ...
            name, _, _, off, size = line[line.index(".text."):].split()[:5]
            sections[name] = blob[int(off, 16):int(off, 16) + int(size, 16)]
    return sections


def cubin_sections(stem: str, arch: str, defines: tuple[str, ...] = ()) -> dict[str, bytes]:
    """nvcc's machine code of kernels/<stem>.hip as the run-time compiler receives it (warp 32), with `defines`
    (-DNAME=VALUE): ".text.<kernel>" -> its bytes. arch: "-arch=sm_90" or SM90A.arch."""
    with tempfile.TemporaryDirectory() as tmp:
        source, cubin = Path(tmp) / f"{stem}.cu", Path(tmp) / f"{stem}.cubin"
        source.write_text(assemble_source(stem, 32))
        subprocess.run(["nvcc", "-x", "cu", arch, "-cubin", "-I", str(kernel_dir()), *defines, str(source), "-o",
                        str(cubin)], capture_output=True, check=True)
        return text_sections(cubin)


def machine_code_digests(stems: tuple[str, ...] | None = None) -> dict[str, str]:
    """"file:target:.text.<kernel>" -> sha256 of its machine code, for sm_90 (every file, or `stems`) and
    sm_90a (the SM90A_FILES among them), as the run-time compiler receives the source."""
    files = [p for p in kernel_files() if stems is None or p.stem in stems]
    jobs = [(p.stem, "sm_90", "-arch=sm_90") for p in files]
    jobs += [(p.stem, "sm_90a", SM90A.arch) for p in files if p.name in SM90A_FILES]
    digests = {}
    for stem, label, arch in jobs:
        for name, code in cubin_sections(stem, arch).items():
            digests[f"{stem}.hip:{label}:{name}"] = hashlib.sha256(code).hexdigest()
    return digests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require", default="", help="compilers that must be present, e.g. hipcc,nvcc")
    parser.add_argument("--digests", metavar="FILE", help="write every kernel's machine-code sha256 (nvcc) to FILE")
    args = parser.parse_args(argv)
    if args.digests:
        return write_digests(Path(args.digests))
    required = {c for c in args.require.split(",") if c}
    targets, missing = [], []
    for target in TARGETS:
        (targets if shutil.which(target.compiler) else missing).append(target)
    for target in missing:
        print(f"skipped {target.label}: {target.compiler} not found")
    if required & {t.compiler for t in missing}:
        print(f"error: required compiler missing: {', '.join(sorted(required & {t.compiler for t in missing}))}")
        return 1
    results = compile_all(targets, sm90a=bool(shutil.which("nvcc")))
    for r in results:
        print(f"{'ok  ' if r.ok else 'FAIL'} {r.target.label:15} {r.variant:10} kernels/{r.file}")
        if not r.ok:
            print("     " + r.log.replace("\n", "\n     "))
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed}/{len(results)} builds ok")
    return 1 if failed else 0


def write_digests(path: Path) -> int:
    if not (shutil.which("nvcc") and shutil.which("readelf")):
        print("error: --digests needs nvcc and readelf")
        return 1
    if path.exists():
        print(f"error: {path} exists: not overwritten")
        return 1
    digests = machine_code_digests()
    text = "".join(f"{key} {value}\n" for key, value in sorted(digests.items()))
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)
    print(f"{len(digests)} kernels' machine code digested into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
