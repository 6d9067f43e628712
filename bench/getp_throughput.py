"""getp throughput of the batched GPU engine, with the baselines it replaces, in one run.

Headline workload: N requests cycled from data/input.txt, `-n` positions each, 20b shape (random
weights generated on the device), greedy. Prints tok/s, the batch used, device memory, time per step
against rows per step (a table, and a PNG when matplotlib is there), and the fraction of each step's
lower bound (bytes / copy bandwidth, FLOPs / peak) reached. Then, for ratios: batch-1 decode of the
batched engine (graph-replayed), the single-sequence engine on the 32 standard prompts, and Hugging Face
transformers' `generate` on the same shape at batch 32 and 128 when torch is importable.

    python bench/getp_throughput.py                  # the headline: 1024 requests, -n 1024
    python bench/getp_throughput.py --quick          # 256 requests, -n 256, fewer baselines
    python bench/getp_throughput.py --precision fp32 --skip single,transformers,decode

Results go to stdout (a table last) and --out (JSON lines, step log, plot).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cupy_getp.checkpoint import SyntheticStore, Weights  # noqa: E402
from cupy_getp.config import preset  # noqa: E402
from cupy_getp.engine.factory import create_engine  # noqa: E402
from cupy_getp.engine.scheduler import Scheduler, run_overlapped, run_scheduled  # noqa: E402
from cupy_getp.getp import encode_requests, read_requests, run_requests  # noqa: E402
from cupy_getp.kv_cache import KV_CACHE_DTYPES  # noqa: E402
from cupy_getp.sampler import Sampler  # noqa: E402
from cupy_getp.tokenizer import STOP_TOKENS, harmony_tokenizer  # noqa: E402
from timing import eager_step_profile, graph_replay_ms  # noqa: E402 (bench/ is on sys.path as a script)

FP32_PEAK = 67e12  # H100 SXM FP32 (CUDA cores), datasheet
BF16_PEAK = 790e12  # H100 BF16 dense tensor cores, measured on this workplace's H100s (8192 cube)
GREEDY = Sampler(0.0, 0.9, 1)


def log(record: dict, out: Path) -> None:
    print(json.dumps(record), flush=True)
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def copy_bandwidth() -> float:
    """Device-to-device copy of 1 GiB, bytes read + written per second (median of 10)."""
    import cupy

    a = cupy.ones(1 << 28, np.float32)
    b = cupy.empty_like(a)
    times = []
    for _ in range(12):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        b[...] = a
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end) / 1e3)
    del a, b
    return 2 * (1 << 30) / statistics.median(times[2:])


# -- step lower bound -----------------------------------------------------------------------------------
def step_bound(c, rows: int, context: float, precision: str, bandwidth: float, dense_bf16: bool,
               kv_item: int = 4) -> tuple[float, float]:
    """(bytes / bandwidth, FLOPs / peak) of one step of `rows` rows at mean context `context`. GEMMs on
    BF16 weights count `pieces` products on tensor cores in exact/fast; the rest runs on CUDA cores. kv_item: bytes
    of a KV cache element (4 FP32, 2 BF16)."""
    H, I, E, k, L = c.hidden_dim, c.intermediate_dim, c.n_experts, c.experts_per_token, c.n_layers
    dense = L * (H * c.qkv_dim + c.q_dim * H + H * E) + c.vocab_size * H  # weights
    expert = 3 * I * H  # mlp1 (2I x H) + mlp2 (H x I), BF16
    touched = E * (1 - (1 - 1 / E) ** (rows * k))  # expected distinct experts per layer
    windowed = sum(c.uses_sliding_window(layer) for layer in range(L))
    kv_positions = (L - windowed) * context + windowed * min(context, c.sliding_window)
    bytes_ = (2 if dense_bf16 else 4) * dense + 2 * L * touched * expert + rows * kv_positions * c.kv_dim * 2 * kv_item
    flops_dense, flops_moe = 2 * rows * dense, 2 * rows * L * k * expert
    flops_attn = 4 * rows * kv_positions * c.q_dim
    if precision == "fp32":
        return bytes_ / bandwidth, (flops_dense + flops_moe + flops_attn) / FP32_PEAK
    pieces = 1 if precision == "fast" else 3
    on_tensor_cores = flops_moe + (flops_dense if dense_bf16 else 0)
    on_cuda_cores = flops_dense + flops_moe + flops_attn - on_tensor_cores
    return bytes_ / bandwidth, pieces * on_tensor_cores / BF16_PEAK + on_cuda_cores / FP32_PEAK


# -- the headline ---------------------------------------------------------------------------------------
class _OutOfTime(Exception):
    """A headline run reached its time limit (reported as partial)."""


def headline(engine, prompts, steps, args, precision, bandwidth, out: Path, max_seconds: float) -> dict:
    batched = engine.batched(len(prompts), steps, slots=args.batch or None, precision=precision,
                             kv_cache=args.kv_cache)
    memory = engine.device.memory_in_use()
    scheduler = Scheduler(prompts, steps, batched.shape.n_slots, batched.shape.max_rows, batched.shape.max_chunk,
                          STOP_TOKENS)
    step_log = []  # (rows, bucket, mean position, seconds)
    tokens, begin = 0, time.perf_counter()
    end = begin

    def timed(rows, t0, run, count):
        """One step's tokens by run(), logged with its time since t0 and `count` new tokens; past max_seconds
        the run stops before the next step."""
        nonlocal tokens, end
        if end - begin > max_seconds:
            raise _OutOfTime
        t0 = time.perf_counter() if t0 is None else t0
        next_tokens = run()
        end = time.perf_counter()
        step_log.append((len(rows), batched.shape.bucket(len(rows)), float(rows.positions.mean()), end - t0))
        tokens += count
        return next_tokens

    def timed_step(rows):
        """getp's step (run_scheduled drives it), timed from its start."""
        return timed(rows, None, lambda: batched.next_tokens(rows), int(rows.wants_token.sum()))

    def timed_collect(pending):
        """Overlapped steps (the default; CUPY_GETP_OVERLAP=0 turns them off): a step's time is from the last
        step's tokens to its own (the host's work runs while the device computes); its tokens count where their
        request has not ended (a stop token ends one a step before its row run ahead is dropped)."""
        rows = pending.rows
        count = sum(1 for seq, wanted in zip(rows.owners, rows.wants_token.tolist()) if wanted and not seq.ended)
        return timed(rows, end, lambda: batched.collect(pending), count)

    try:
        if batched.overlap:
            run_overlapped(scheduler, batched.launch, timed_collect)
        else:
            run_scheduled(scheduler, timed_step)
        partial = False
    except _OutOfTime:
        partial = True
    elapsed = end - begin
    name = batched.precision + ("" if batched.shape.kv_cache == "fp32" else f"-kv{batched.shape.kv_cache}")
    (out / f"steps-{name}.jsonl").write_text("".join(json.dumps(s) + "\n" for s in step_log))
    dense_bf16 = engine.w.storage["w_qkv"] != "fp32"
    table = step_table(step_log, engine.config, batched.precision, bandwidth, dense_bf16,
                       np.dtype(batched.shape.kv_dtype).itemsize)
    plot(step_log, out / f"step_time_vs_rows-{name}.png")
    result = {
        "bench": "headline", "requests": len(prompts), "steps": steps, "tok_s": round(tokens / elapsed, 1),
        "tokens": tokens, "seconds": round(elapsed, 2), "partial": partial, "n_slots": batched.shape.n_slots,
        "max_rows": batched.shape.max_rows, "precision": batched.precision, "kv_cache": batched.shape.kv_cache,
        "graphs": batched.runner.use_graphs, "overlap": batched.overlap,
        "device_gib_in_use": round(memory / 2**30, 2),
        "weights_gib": round((engine.memory_after_warm_up - engine.memory_before) / 2**30, 2),
        "steps_run": len(step_log), "dense_storage": engine.w.describe_storage(), "per_bucket": table,
    }
    batched.free()
    return result


def step_table(step_log, c, precision, bandwidth, dense_bf16, kv_item: int = 4) -> list[dict]:
    """Median step time per bucket of rows, with the bound and the fraction of it reached."""
    by_bucket: dict[int, list] = {}
    for rows, bucket, pos, seconds in step_log:
        by_bucket.setdefault(bucket, []).append((rows, pos, seconds))
    table = []
    for bucket, entries in sorted(by_bucket.items()):
        seconds = statistics.median(e[2] for e in entries)
        rows = statistics.median(e[0] for e in entries)
        context = statistics.mean(e[1] for e in entries) + 1
        memory_s, compute_s = step_bound(c, bucket, context, precision, bandwidth, dense_bf16, kv_item)
        table.append({"bucket": bucket, "steps": len(entries), "rows": rows, "ms": round(1e3 * seconds, 3),
                      "tok_s": round(rows / seconds, 1), "bound_ms": round(1e3 * max(memory_s, compute_s), 3),
                      "bound": "memory" if memory_s > compute_s else "compute",
                      "of_bound": round(max(memory_s, compute_s) / seconds, 3)})
    return table


def plot(step_log, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = [s[0] for s in step_log]
    ms = [1e3 * s[3] for s in step_log]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(rows, ms, s=4, alpha=0.4)
    ax.set_xlabel("rows in the step")
    ax.set_ylabel("step time (ms)")
    ax.set_title("batched getp, 20b shape: time per step against rows per step")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# -- baselines ------------------------------------------------------------------------------------------
def batch1_decode(engine, prompt, precision, kv_cache="fp32") -> dict:
    """One request, graph-replayed steps: tok/s at positions 8..264 and 1792..2048."""
    n_ctx = engine.config.seq_len
    batched = engine.batched(1, n_ctx, slots=1, precision=precision, kv_cache=kv_cache)
    times = []
    token = prompt[0]
    for pos in range(n_ctx):
        t0 = time.perf_counter()
        v = batched.step(np.array([0], np.int32), np.array([pos], np.int32), np.array([token], np.int32))
        token = int(batched.tokens(v, 1)[0])
        times.append(time.perf_counter() - t0)
    device_ms = graph_replay_ms(batched, 264)
    batched.free()
    return {"bench": "batch1_decode", "tok_s_pos_8_264": round(1 / statistics.median(times[8:264]), 1),
            "tok_s_pos_1792_2048": round(1 / statistics.median(times[1792:2048]), 1),
            "ms_per_step_pos_8_264": round(1e3 * statistics.median(times[8:264]), 3),
            "device_ms_per_step_pos_264": device_ms}


def profile_step(engine, rows: int, context: int, precision, kv_cache="fp32") -> dict:
    """Device time per kernel of one eager step of `rows` decode rows at position `context`."""
    batched = engine.batched(rows, context + 1, slots=rows, precision=precision, kv_cache=kv_cache)
    v = batched.model.view(batched.shape.bucket(rows))
    args = (np.arange(rows, dtype=np.int32), np.full(rows, context, np.int32), np.full(rows, 13225, np.int32))
    batched.step(*args)  # graphs captured, caches warm
    times, _ = eager_step_profile(batched, lambda: batched.step(*args))
    batched.free()
    total = sum(times.values())
    top = sorted(times.items(), key=lambda kv: -kv[1])
    return {"bench": "profile", "rows": rows, "bucket": v.R, "context": context, "precision": batched.precision,
            "kv_cache": kv_cache,
            "kernel_ms_total": round(total, 3),
            "per_kernel_ms": {name: round(ms, 3) for name, ms in top}}


# The drift part's runs against `exact` (FP32 KV cache): name -> (precision, KV cache)
DRIFT_RUNS = {"fast": ("fast", "fp32"), "fp32": ("fp32", "fp32"), "bf16kv": ("exact", "bf16"),
              "fast_bf16kv": ("fast", "bf16")}


def precision_drift(engine, prompts, steps) -> dict:
    """`fast` (1 BF16 piece), `fp32` and the BF16 KV cache (in exact and fast) against `exact` (3 pieces, FP32 KV
    cache) on the standard prompts: identical lines and the max logit difference over the first step's rows."""
    from cupy_getp.gpu.batch import default_precision
    from cupy_getp.getp import run_batched

    if default_precision(engine.device) == "fp32":
        return {"bench": "precision_drift", "skipped": "no tensor cores"}
    lines, logits = {}, {}
    # 64 rows (over SKINNY_ROWS: the tensor-core path), each a different token at position 0 (every prompt
    # starts with the same harmony token: its middle and last tokens differ).
    tokens = np.array([p[len(p) // 2] for p in prompts] + [p[-1] for p in prompts], np.int32)
    rows = len(tokens)
    for name, (precision, kv_cache) in {"exact": ("exact", "fp32"), **DRIFT_RUNS}.items():
        batched = engine.batched(rows, steps, precision=precision, kv_cache=kv_cache)
        v = batched.step(np.arange(rows, dtype=np.int32), np.zeros(rows, np.int32), tokens)
        logits[name] = v.logits[:rows].get(stream=engine.device.stream)  # the engine's stream, not the null one
        batched.free()
        batched = engine.batched(len(prompts), steps, precision=precision, kv_cache=kv_cache)
        lines[name] = run_batched(batched, GREEDY, prompts, steps)
        batched.free()
    result = {"bench": "precision_drift", "requests": len(prompts), "steps": steps,
              "distinct_tokens_pos0": int(np.unique(tokens).size),
              "logit_scale_pos0": float(np.abs(logits["exact"]).max())}
    for name in DRIFT_RUNS:
        same = sum(a == b for a, b in zip(lines[name], lines["exact"]))
        result[f"{name}_lines_identical_to_exact"] = f"{same}/{len(prompts)}"
        result[f"{name}_max_logit_diff_pos0"] = float(np.max(np.abs(logits[name] - logits["exact"])))
    return result


def single_sequence(engine, prompts, steps) -> dict:
    begin = time.perf_counter()
    lines = run_requests(engine, GREEDY, prompts, steps)
    elapsed = time.perf_counter() - begin
    tokens = sum(map(len, lines))
    return {"bench": "single_sequence", "requests": len(prompts), "steps": steps,
            "tok_s": round(tokens / elapsed, 1), "tokens": tokens}


def batched_same(engine, prompts, steps, precision) -> dict:
    batched = engine.batched(len(prompts), steps, precision=precision)
    from cupy_getp.getp import run_batched

    begin = time.perf_counter()
    lines = run_batched(batched, GREEDY, prompts, steps)
    elapsed = time.perf_counter() - begin
    batched.free()
    return {"bench": "batched_same_workload", "requests": len(prompts), "steps": steps,
            "tok_s": round(sum(map(len, lines)) / elapsed, 1)}


def transformers_generate(c, prompts, batch: int, new_tokens: int) -> dict:
    """HF transformers GptOss with random bf16 weights of the same shape: `generate` at one batch."""
    import torch
    from transformers import GptOssConfig, GptOssForCausalLM

    config = GptOssConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_dim, num_local_experts=c.n_experts,
                          num_experts_per_tok=c.experts_per_token, intermediate_size=c.intermediate_dim,
                          num_hidden_layers=c.n_layers, head_dim=c.head_dim, num_attention_heads=c.n_attn_heads,
                          num_key_value_heads=c.n_kv_heads, sliding_window=c.sliding_window,
                          max_position_embeddings=c.seq_len * 64, pad_token_id=0,
                          tie_word_embeddings=False)
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: an fp32 20b (84 GB) does not fit an H100
    try:
        with torch.device("cuda"):
            model = GptOssForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(default_dtype)
    cycled = [prompts[i % len(prompts)] for i in range(batch)]
    width = max(map(len, cycled))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in cycled], device="cuda")
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in cycled], device="cuda")
    with torch.no_grad():
        model.generate(input_ids=ids[:, :4], attention_mask=mask[:, :4], max_new_tokens=4, do_sample=False)
        torch.cuda.synchronize()
        begin = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                             min_new_tokens=new_tokens)
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - begin
    generated = (out.shape[1] - width) * batch
    del model
    torch.cuda.empty_cache()
    return {"bench": "transformers_generate", "batch": batch, "new_tokens": new_tokens,
            "tok_s": round(generated / elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 requests, -n 256")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("-n", "--steps", type=int, default=None)
    parser.add_argument("--preset", default="20b")
    parser.add_argument("--batch", type=int, default=0, help="request slots (0: from free memory)")
    parser.add_argument("--precision", default=None, help="exact, fast or fp32 (default: the engine's); "
                                                          "a comma list runs the headline once for each")
    parser.add_argument("--max-seconds", default="420", help="stop a headline run here (reported as partial); "
                                                                "a comma list: one per --precision")
    parser.add_argument("--profile-rows", default="1,64,256,512", help="comma list of step sizes to profile")
    parser.add_argument("--skip", default="", help="comma list of: headline, profile, decode, single, drift, "
                                                   "transformers")
    parser.add_argument("--experts", default="auto", help="expert storage (bf16, mxfp4, auto); a comma list runs "
                                                          "everything once for each, in this process")
    parser.add_argument("--kv-cache", default="fp32", choices=tuple(KV_CACHE_DTYPES),
                        help="the KV cache's element (getp's --kv-cache) of the headline, profile and decode parts")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    n_requests = args.requests or (256 if args.quick else 1024)
    steps = args.steps or (256 if args.quick else 1024)
    args.out.mkdir(parents=True, exist_ok=True)

    standard = encode_requests(harmony_tokenizer(), read_requests(ROOT / "data" / "input.txt"), steps, "input.txt")
    prompts = [standard[i % len(standard)] for i in range(n_requests)]
    weights = Weights(SyntheticStore(preset(args.preset), seed=42, name=args.preset))
    precisions = [p or None for p in (args.precision or "").split(",")]
    limits = [float(x) for x in args.max_seconds.split(",")]
    results = []
    storages = args.experts.split(",")
    for experts in storages:
        # each storage's step logs and plots apart (their names hold the precision only)
        steps_dir = args.out if len(storages) == 1 else args.out / f"experts-{experts}"
        steps_dir.mkdir(parents=True, exist_ok=True)
        results += bench_storage(weights, experts, prompts, standard, steps, precisions, limits, skip, args,
                                 steps_dir)
    if "transformers" not in skip:  # no expert storage there: once
        try:
            import torch  # noqa: F401
        except ImportError:
            log({"bench": "transformers_generate", "skipped": "torch not importable"}, args.out)
        else:
            for batch in (32, 128):
                results.append(transformers_generate(weights.config, standard, batch, 112 if not args.quick else 32))
                log(results[-1], args.out)
    print_summary(results)


def bench_storage(weights, experts: str, prompts, standard, steps: int, precisions: list, limits: list[float],
                  skip: set, args, steps_dir: Path) -> list[dict]:
    """Every engine part not skipped, on one engine with this expert storage; its results (also logged). The
    headline runs once per precision (the time limit of the same place in `limits`, else its last), the other
    parts in the first precision."""
    engine = create_engine(weights, "cupy", experts=experts)
    begin = time.perf_counter()
    engine.warm_up()
    bandwidth = copy_bandwidth()
    log({"bench": "setup", "device": engine.device.describe(), "preset": args.preset,
         "warm_up_s": round(time.perf_counter() - begin, 2), "copy_gb_s": round(bandwidth / 1e9, 1),
         "experts": engine.experts.describe(), "weights_gib": round(engine.w.nbytes() / 2**30, 2),
         "date": time.strftime("%Y-%m-%d")}, args.out)
    results = []
    if "headline" not in skip:
        for i, precision in enumerate(precisions):
            results.append(headline(engine, prompts, steps, args, precision, bandwidth, steps_dir,
                                    limits[min(i, len(limits) - 1)]))
            log(results[-1], args.out)
    precision = precisions[0]
    if "profile" not in skip:
        for rows in map(int, args.profile_rows.split(",")):
            results.append(profile_step(engine, rows, min(512, steps - 1), precision, args.kv_cache))
            log(results[-1], args.out)
    if "drift" not in skip:
        results.append(precision_drift(engine, standard, 256))
        log(results[-1], args.out)
    if "decode" not in skip:
        results.append(batch1_decode(engine, standard[0], precision, args.kv_cache))
        log(results[-1], args.out)
    if "single" not in skip:
        short = 128
        results.append(single_sequence(engine, standard, short))
        log(results[-1], args.out)
        results.append(batched_same(engine, standard, short, precision))
        log(results[-1], args.out)
    engine.finish()
    for r in results:
        r["experts"] = experts
    return results


def print_summary(results) -> None:
    print("\n| bench | tok/s | notes |\n|---|---|---|")
    for r in results:
        if r["bench"] == "headline":
            note = (f"{r['requests']} requests, -n {r['steps']}, {r['n_slots']} slots, precision {r['precision']}, "
                    f"{r['kv_cache']} KV cache, {r['device_gib_in_use']} GiB in use"
                    f"{', PARTIAL' if r['partial'] else ''}")
            print(f"| headline ({r['experts']} experts) | {r['tok_s']} | {note} |")
            print("\n| rows bucket | steps | median rows | ms/step | tok/s | bound ms | bound | of bound |")
            print("|---|---|---|---|---|---|---|---|")
            for b in r["per_bucket"]:
                print(f"| {b['bucket']} | {b['steps']} | {b['rows']} | {b['ms']} | {b['tok_s']} | {b['bound_ms']} | "
                      f"{b['bound']} | {b['of_bound']} |")
            print()
        elif r["bench"] == "profile":
            top = ", ".join(f"{k} {v}" for k, v in list(r["per_kernel_ms"].items())[:8])
            print(f"| profile {r['rows']} rows @ {r['context']} | {r['kernel_ms_total']} ms | {top} |")
        elif r["bench"] == "precision_drift":
            print(f"| precision drift | | {json.dumps(r)} |")
        elif r["bench"] == "batch1_decode":
            print(f"| batch-1 decode ({r['experts']} experts) | {r['tok_s_pos_8_264']} / {r['tok_s_pos_1792_2048']} | positions 8-264 / "
                  f"1792-2048; {r['ms_per_step_pos_8_264']} ms a step, {r['device_ms_per_step_pos_264']} ms of it "
                  f"on the device (graph replays) |")
        else:
            print(f"| {r['bench']} | {r['tok_s']} | {r.get('requests', r.get('batch'))} |")


if __name__ == "__main__":
    main()
