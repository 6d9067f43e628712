"""Load on `cupy-getp serve`, in the manner of vLLM's serving benchmark, beside getp on the same requests.

N requests, prompts cycled from a getp input file, arrive all at once (--rate inf) or as a Poisson
process of --rate requests per second; each streams greedily until a stop token or the context (-n),
exactly getp's work. Reported: output tok/s, time to first token (TTFT) and inter-token latency (ITL),
median and p99, the server's mean step time (from /metrics), then getp's tok/s on the same requests in
the same run (after the server has stopped, so that both have the device to themselves).

    python bench/serve_load.py                                        # 20b, 1024 requests at once, -n 1024
    python bench/serve_load.py --requests 1024 --rate 40              # a rate that keeps ~256 running
    python bench/serve_load.py --model 7m --engine numpy -n 64 --requests 8   # a CPU check

The server is started here (a subprocess on a free 127.0.0.1 port); --json FILE saves the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import httpx  # noqa: E402

from cupy_getp.getp import GetpHooks, GetpOptions, getp, read_requests  # noqa: E402
from cupy_getp.sampler import Sampler  # noqa: E402
from cupy_getp.tokenizer import harmony_tokenizer  # noqa: E402
from serve_helpers import LiveServer, metric  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="20b")
    p.add_argument("--engine", default="auto")
    p.add_argument("-n", "--steps", type=int, default=1024, help="context: positions per request")
    p.add_argument("--requests", type=int, default=1024)
    p.add_argument("--rate", type=float, default=math.inf, help="requests per second (Poisson); inf = all at once")
    p.add_argument("--prompts", type=Path, default=ROOT / "data" / "input.txt", help="a getp input file")
    p.add_argument("--batch", type=int, default=0)
    p.add_argument("--precision", default=None)
    p.add_argument("--seed", type=int, default=0, help="arrival times")
    p.add_argument("--skip-getp", action="store_true")
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


class Timing:
    """One request's times: sent, and the arrival of each token."""

    def __init__(self):
        self.sent = time.perf_counter()
        self.arrivals: list[float] = []
        self.tokens = 0


async def one_request(http: httpx.AsyncClient, url: str, model: str, prompt: str, delay: float) -> Timing:
    await asyncio.sleep(delay)
    timing = Timing()
    body = {"model": model, "prompt": prompt, "stream": True, "temperature": 0, "return_token_ids": True}
    async with http.stream("POST", f"{url}/v1/completions", json=body) as response:
        if response.status_code != 200:
            raise SystemExit(f"error: {prompt[:40]!r}: {response.status_code} {(await response.aread()).decode()}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            ids = chunk["choices"][0].get("token_ids", []) if chunk.get("choices") else []
            if ids:
                timing.arrivals.append(time.perf_counter())
                timing.tokens += len(ids)
    return timing


def arrival_delays(n: int, rate: float, seed: int) -> list[float]:
    if math.isinf(rate):
        return [0.0] * n
    rng, t, delays = random.Random(seed), 0.0, []
    for _ in range(n):
        delays.append(t)
        t += rng.expovariate(rate)
    return delays


async def load(url: str, model: str, prompts: list[str], rate: float, seed: int) -> tuple[list[Timing], float]:
    limits = httpx.Limits(max_connections=len(prompts) + 8, max_keepalive_connections=len(prompts) + 8)
    async with httpx.AsyncClient(timeout=httpx.Timeout(None), limits=limits) as http:
        start = time.perf_counter()
        timings = await asyncio.gather(*(one_request(http, url, model, p, d)
                                         for p, d in zip(prompts, arrival_delays(len(prompts), rate, seed))))
        return timings, time.perf_counter() - start


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"median_ms": None, "p99_ms": None}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return {"median_ms": 1e3 * statistics.median(ordered), "p99_ms": 1e3 * p99}


def summarize(timings: list[Timing], seconds: float, metrics_text: str) -> dict:
    tokens = sum(t.tokens for t in timings)
    ttft = [t.arrivals[0] - t.sent for t in timings if t.arrivals]
    itl = [b - a for t in timings for a, b in zip(t.arrivals, t.arrivals[1:])]
    steps = metric(metrics_text, "cupy_getp_step_seconds_count") or 0
    step_sum = metric(metrics_text, "cupy_getp_step_seconds_sum") or 0
    return {"requests": len(timings), "seconds": seconds, "output_tokens": tokens, "output_tok_s": tokens / seconds,
            "ttft": percentiles(ttft), "itl": percentiles(itl),
            "mean_step_ms": 1e3 * step_sum / steps if steps else None}


def server_args(a) -> list[str]:
    args = [a.model, "--engine", a.engine, "-n", str(a.steps), "-t", "0", "--max-queue", str(a.requests),
            "--batch", str(a.batch), "--log-level", "warning"]
    return args + (["--precision", a.precision] if a.precision else [])


def getp_throughput(a, prompts: list[str], work: Path) -> dict:
    (work / "in.txt").write_text(f"{len(prompts)}\n" + "".join(p + "\n" for p in prompts))
    report = getp(a.model, work / "in.txt", work / "out.txt", tokenizer=harmony_tokenizer(),
                  sampler=Sampler(0.0, 0.9, 1),
                  options=GetpOptions(engine=a.engine, steps=a.steps, batch=a.batch or None, precision=a.precision),
                  hooks=GetpHooks(echo=lambda line: None))
    return {"tokens": report.generated, "seconds": report.inference_s, "tok_s": report.generated / report.inference_s}


def raise_open_files_limit() -> None:
    """One socket a request on each side: 1024 at once pass the usual soft limit of 1024 descriptors (the
    server, started from here, inherits the raised limit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv=None) -> None:
    import tempfile

    a = parse_args(argv)
    raise_open_files_limit()
    pool = read_requests(a.prompts)
    prompts = [pool[i % len(pool)] for i in range(a.requests)]
    with LiveServer(*server_args(a), start_timeout=900) as server:
        timings, seconds = asyncio.run(load(server.url, a.model, prompts, a.rate, a.seed))
        result = summarize(timings, seconds, httpx.get(f"{server.url}/metrics").text)
    result.update(model=a.model, engine=a.engine, steps=a.steps, rate=a.rate)
    if not a.skip_getp:
        with tempfile.TemporaryDirectory() as work:
            result["getp"] = getp_throughput(a, prompts, Path(work))
        result["serve_over_getp"] = result["output_tok_s"] / result["getp"]["tok_s"]
    print(report(result))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")


def report(r: dict) -> str:
    ms = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    arrivals = "all at once" if math.isinf(r["rate"]) else f"{r['rate']:g}/s (Poisson)"
    lines = [f"serve {r['model']} ({r['engine']}), -n {r['steps']}, {r['requests']} requests, {arrivals}",
             f"  output tok/s     {r['output_tok_s']:.1f} ({r['output_tokens']} tokens in {r['seconds']:.2f} s)",
             f"  TTFT ms          median {ms(r['ttft']['median_ms'])}, p99 {ms(r['ttft']['p99_ms'])}",
             f"  ITL ms           median {ms(r['itl']['median_ms'])}, p99 {ms(r['itl']['p99_ms'])}",
             f"  mean step ms     {ms(r['mean_step_ms'])}"]
    if "getp" in r:
        g = r["getp"]
        lines.append(f"  getp tok/s       {g['tok_s']:.1f} ({g['tokens']} tokens in {g['seconds']:.2f} s); "
                     f"serve / getp = {r['serve_over_getp']:.1%}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
