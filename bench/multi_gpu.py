"""getp on several GPUs against one, both measured in the same run, through the command line a user runs.

    python bench/multi_gpu.py dp     # 20b: one GPU, then a replica a GPU (--gpus 0,1): 1024 requests, -n 1024
    python bench/multi_gpu.py ep     # 120b: one GPU with MXFP4 experts, then BF16 experts split over two
                                     # GPUs (--expert-parallel 2)

Requests cycle through data/input.txt (the headline workload of bench/getp_throughput.py). Each side is one
`cupy-getp getp` process; its three timing lines are the figures (tok/s: generated tokens over the inference
time); the two output files must be byte-identical (batch invariance). JSON lines to stdout and --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMES = {"warm_up_s": r"warm up elapsed time\(s\): ([0-9.]+)",
         "inference_s": r"^elapsed time\(s\): ([0-9.]+)",
         "tok_s": r"achieved throughput TPS \(tok/s\): ([0-9.]+)",
         "finish_s": r"finish elapsed time\(s\): ([0-9.]+)"}


def headline_input(path: Path, requests: int) -> None:
    prompts = (ROOT / "data/input.txt").read_text().splitlines()[1:]
    lines = [prompts[i % len(prompts)] for i in range(requests)]
    path.write_text(f"{requests}\n" + "\n".join(lines) + "\n")


def run_getp(name: str, model: str, input_path: Path, out: Path, steps: int, extra: list[str], timeout: int) -> dict:
    """One getp process: its timing lines as numbers, exit code, wall time and stderr's notes."""
    output = out / f"{name}.txt"
    command = [sys.executable, "-m", "cupy_getp", "getp", model, "-i", str(input_path), "-o", str(output),
               "-n", str(steps), "--engine", "cupy", *extra]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as e:
        code, stdout, stderr = "timeout", str(e.stdout or ""), str(e.stderr or "")
    record = {"side": name, "command": " ".join(["cupy-getp", *command[3:]]), "exit": code,
              "wall_s": round(time.perf_counter() - start, 1)}
    for key, pattern in TIMES.items():
        found = re.search(pattern, stdout, re.M)
        record[key] = float(found.group(1)) if found else None
    record["notes"] = [line for line in stderr.splitlines() if line.strip()][-8:]
    record["output"] = str(output) if output.exists() else None
    return record


def digest(path: str | None) -> str | None:
    """The output file's sha256, the file then removed (the logs keep the digest: outputs run to megabytes)."""
    if path is None:
        return None
    data = Path(path).read_bytes()
    Path(path).unlink()
    return hashlib.sha256(data).hexdigest()


def compare(name: str, model: str, sides: list[tuple[str, list[str]]], requests: int, steps: int, out: Path,
            timeout: int, share_side: tuple[str, list[str], int] | None = None) -> dict:
    """The two sides on the same input, output files compared; `share_side` (name, extra, requests): a third
    run on one GPU of one GPU's share of the requests (what each GPU of the second side runs at once)."""
    out.mkdir(parents=True, exist_ok=True)
    input_path = out / f"{name}-input.txt"
    headline_input(input_path, requests)
    records = [run_getp(f"{name}-{side}", model, input_path, out, steps, extra, timeout) for side, extra in sides]
    if share_side is not None:
        side, extra, share = share_side
        share_input = out / f"{name}-share-input.txt"
        headline_input(share_input, share)
        records.append({**run_getp(f"{name}-{side}", model, share_input, out, steps, extra, timeout),
                        "requests": share})
    for r in records:
        r["output_sha256"] = digest(r.pop("output"))
        print(json.dumps(r), flush=True)
    one, other = records[0]["tok_s"], records[1]["tok_s"]
    summary = {"bench": name, "model": model, "requests": requests, "steps": steps,
               "tok_s": {r["side"]: r["tok_s"] for r in records},
               "speedup": round(other / one, 3) if one and other else None,
               "outputs_identical": records[0]["output_sha256"] is not None
               and records[0]["output_sha256"] == records[1]["output_sha256"],
               "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(summary), flush=True)
    with open(out / "results.jsonl", "a") as f:
        for r in (*records, summary):
            f.write(json.dumps(r) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["dp", "ep"])
    parser.add_argument("--requests", type=int, default=1024)
    parser.add_argument("-n", "--steps", type=int, default=1024)
    parser.add_argument("--gpus", default="0,1")
    parser.add_argument("--share", action="store_true", help="dp: also one GPU on one GPU's share of the requests")
    parser.add_argument("--timeout", type=int, default=280, help="seconds a side may take")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()
    gpus = args.gpus.split(",")
    if args.which == "dp":
        sides = [("one-gpu", ["--gpus", gpus[0]]), (f"{len(gpus)}-gpus", ["--gpus", args.gpus])]
        share = ("one-gpu-share", ["--gpus", gpus[0]], -(-args.requests // len(gpus)))
        summary = compare("dp", "20b", sides, args.requests, args.steps, args.out, args.timeout,
                          share if args.share else None)
    else:
        sides = [("one-gpu-mxfp4", ["--gpus", gpus[0], "--experts", "mxfp4"]),
                 (f"{len(gpus)}-gpus-ep-bf16", ["--gpus", args.gpus, "--expert-parallel", str(len(gpus)),
                                                "--experts", "bf16"])]
        summary = compare("ep", "120b", sides, args.requests, args.steps, args.out, args.timeout)
    raise SystemExit(0 if summary["outputs_identical"] else 1)


if __name__ == "__main__":
    main()
