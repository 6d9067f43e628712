#!/usr/bin/env bash
# One device session: environment, GPU tests, batched diffs, benchmarks; every log under $OUT (or ./gpu-out).
#   bash bench/gpu_session.sh [alltests|tests|wgtests|enginetests|diff|diag20b|quick|headline|servetests|serveload|tma|splitk|splitkdecode|s6a|s6b|s6final|s7a|s7b|s7c|s7d|s7e|mlp1stalls|attnstalls|s8a|s8b|s8c|s8f|s9a|s9b|s9c|s10a|s10b|s10c|stepkernels|s11a|rmsstalls|s13a|s13b|s13c|moeentry|s16a|s15a|s17a|s18a|s18b|s18d|s18e|s18f|s18m|s19a|s20a|s20b|s20c|qkvstalls|s21a|s21b|s21c|s22d|s23a|s23b|s23c|s24a|s24b|s24c|s25a|s25b|s25c|s25d|s26a|s26b|s27|s27a|s27b|s28a|s29a|s29b|s29c|s30a|s30b|s30c|s31a|s31b|s31c|s31d|s31e|s32a|s32b|s32c|s32d|s32h|s32i|s33a|s33b|s33h|s34a|s34c|s34d|s35a|s35b|s35c|s35d|s35h|s36a|s37a|s37b|s37h|s38h|s38x|s38y|s38t|s39a|s39h|s39x|warmbg|warmwait]...
#   (default: tests quick; the serve parts also need /work/wheels-serve carried as .whl-serve)
# Needs the tokenizer file carried as .carry/o200k_base.tiktoken.gz (that machine has no package registry).
set -uo pipefail
cd "$(dirname "$0")/.."
# Logs gather in one folder, packed into $OUT/logs.tgz at the end ($OUT takes few files).
FINAL=${OUT:-gpu-out}; OUT=/tmp/gpu-logs; rm -rf "$OUT"; mkdir -p "$OUT" "$FINAL"
trap 'tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs' EXIT
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 CUPY_GETP_O200K_BASE=$PWD/.carry/o200k_base.tiktoken.gz
export CUPY_CACHE_DIR=/tmp/cupy-cache
parts=${*:-tests quick}
grouped_tflops() {  # the grouped rows of a bench/gemm_tc.py log: path, experts, tile, rows, pieces, TFLOP/s mlp1 / mlp2,
  # padded rows of the used tiles (slots), ms of both
  python -c "import json,sys
for l in open(sys.argv[1]):
    try: r=json.loads(l)
    except Exception: print(l.strip()); continue
    if r.get('kernel')=='grouped': print(r['path'], r['experts'], r['block_m'], r['rows'], r['pieces'], r['mlp1_swiglu']['tflops'], r['mlp2']['tflops'], r.get('slots', ''), round(r['mlp1_swiglu']['ms'] + r['mlp2']['ms'], 4))" "$1"
}
onerow_bench() {  # bench/onerow.py [its options], its records as lines (onerow_records)
  timeout 200 python bench/onerow.py "$@" > "$OUT/onerow.txt" 2>&1; echo "onerow exit $?"
  onerow_records "$OUT/onerow.txt"
}
onerow_records() {  # onerow_records FILE: bench/onerow.py's records as lines: pieces, product, kernel choice, us a launch, GB/s, of copy
  python - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try: r = json.loads(line)
    except Exception: print(line.rstrip()); continue
    print(*(r.get(k) for k in ("pieces", "kind", "choice", "us_per_launch", "weight_gb_s", "of_copy")) if "kind" in r else r)
PY
}
bench_records() {  # bench_records FILE BENCH EXPR...: each EXPR (python, over the record r) of FILE's JSON records of BENCH
  python - "$@" <<'PY'
import json, sys
path, bench, *exprs = sys.argv[1:]
for line in open(path):
    try: r = json.loads(line)
    except Exception: continue
    if r.get("bench") == bench:
        for e in exprs: print(eval(e, {"r": r}))
PY
}
stalls_report() {  # stalls_report REPORT NAME: an ncu report's stall lines, and its SASS lines by samples (top 25)
  ncu --import "$1.ncu-rep" --page details --print-details all > "$OUT/$2-details.txt" 2>&1
  ncu --import "$1.ncu-rep" --page source --csv --print-source sass > "$OUT/$2-sass.csv" 2>&1
  grep -iE "stall|Warp Cycles|Eligible|Duration|Throughput|Registers|spill" "$OUT/$2-details.txt" | head -50
  python - "$OUT/$2-sass.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
head = next((i for i, r in enumerate(rows) if any("Sampling" in c for c in r)), None)
if head is None: print("no sampling column:", rows[:3]); sys.exit()
cols = rows[head]; col = next(i for i, c in enumerate(cols) if "Sampling (All" in c or "Sampling" in c)
src = next((i for i, c in enumerate(cols) if c.lower() in ("source", "sass")), 1)
def n(v):
    try: return float(v.replace(",", ""))
    except ValueError: return 0.0
body = [r for r in rows[head + 1:] if len(r) > col]
total = sum(n(r[col]) for r in body) or 1
print(cols[col], "total", total)
for r in sorted(body, key=lambda r: -n(r[col]))[:25]: print(round(100 * n(r[col]) / total, 1), "%", r[src][:110])
PY
}
splitk_tests() {  # splitk_tests SECONDS: the split-K GPU tests, their summary lines; returns pytest's status
  timeout "$1" python -m pytest -m gpu -q -rfE tests/test_gpu_gemm_wgmma_splitk.py > "$OUT/splitk-tests.log" 2>&1
  local rc=$?; grep -E "passed|failed|FAILED|ERROR|Error" "$OUT/splitk-tests.log" | tail -12; return $rc
}
headline_side() {  # headline_side SPLITK PRECISION NAME: getp_throughput, 20b (MAX_SECONDS: 60, PROFILE_ROWS, HEADLINE_BATCH:
  # request slots, default from free memory; HEADLINE_KV: the KV cache, fp32 by default), in TREE (.)
  (cd "${TREE:-.}" && PYTHONPATH=$PWD CUPY_GETP_WG_SPLITK=$1 timeout ${HEADLINE_SECONDS:-170} python \
    bench/getp_throughput.py --preset 20b --precision "$2" --max-seconds ${MAX_SECONDS:-60} \
    --profile-rows ${PROFILE_ROWS:-1,1024} --skip ${HEADLINE_SKIP:-drift,single,transformers} ${HEADLINE_BATCH:+--batch $HEADLINE_BATCH} \
    ${HEADLINE_KV:+--kv-cache $HEADLINE_KV} --out "$OUT/$3" > "$OUT/$3.txt" 2>&1)
  echo "$3 (CUPY_GETP_WG_SPLITK=$1, $2${HEADLINE_KV:+, $HEADLINE_KV KV cache}${TREE:+, $TREE}) exit $?"
  grep -E "^\| |tok_s|batch1" "$OUT/$3.txt" | cut -c1-300 | tail -9
  tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs  # what has run comes back even if the session is cut short
}
switch_tests() {  # the opt-in switches' tests (overlapped steps, the tall wide blocks), and the host's work between
  # steps on this CPU; sets overlap and wide to 1 where their tests passed, else 0
  PYTHONPATH=. timeout 60 python bench/scheduler_host.py 2>&1 | tee "$OUT/scheduler-host.txt"
  timeout ${TEST_SECONDS:-300} python -m pytest -m gpu -q -rfE tests/test_gpu_batch_attention.py \
    tests/test_gpu_batch_engine.py -k "embedding or stops" > "$OUT/overlap-tests.log" 2>&1
  local overlap_rc=$?; echo "overlap tests exit $overlap_rc"; grep -E "passed|failed|FAILED|ERROR" "$OUT/overlap-tests.log" | tail -6
  timeout ${WIDE_TEST_SECONDS:-150} python -m pytest -m gpu -q -rfE tests/test_gpu_gemm_wgmma.py -k tall_wide \
    > "$OUT/wide-tests.log" 2>&1
  local wide_rc=$?; echo "wide tests exit $wide_rc"; grep -E "passed|failed|FAILED|ERROR" "$OUT/wide-tests.log" | tail -6
  overlap=$([ $overlap_rc = 0 ] && echo 1 || echo 0); wide=$([ $wide_rc = 0 ] && echo 1 || echo 0)
}
headline_splitk() {  # the exact headline, split-K on then off
  for s in 1 0; do headline_side $s exact "headline-splitk$s"; done
}
kernel_durations() {  # kernel_durations CSV: an `ncu --csv --page raw --metrics gpu__time_duration.sum` log (other lines
  # skipped): launches, summed and largest us by kernel, largest sum first, and the total
  python - "$1" <<'PY'
import csv, sys
from collections import defaultdict
rows = list(csv.reader(line for line in open(sys.argv[1]) if line.startswith('"')))
head = next((i for i, r in enumerate(rows) if r[:1] == ["ID"]), None)
if head is None: print("no ncu table in", sys.argv[1]); sys.exit()
name, dur = rows[head].index("Kernel Name"), rows[head].index("gpu__time_duration.sum")
unit = rows[head + 1][dur]  # the units row
scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}[unit]
by = defaultdict(list)
for r in rows[head + 2:]:
    if len(r) > dur and r[0] != "ID": by[r[name].split("(")[0]].append(float(r[dur].replace(",", "")) * scale)
total = sum(map(sum, by.values()))
for k, v in sorted(by.items(), key=lambda kv: -sum(kv[1])):
    print(f"{k:44s} {len(v):4d} launches {sum(v):9.1f} us  ({100 * sum(v) / total:4.1f} %)  largest {max(v):7.1f}")
print(f"total: {sum(map(len, by.values()))} launches, {total:.1f} us of kernel time")
PY
}
step_kernels() {  # ncu: each kernel of one batch-1 step's graph replay (20b, exact), timed one by one as the graph
  # runs them (L2 not flushed, clocks left alone): where the one-row step's device time goes
  timeout 400 ncu --clock-control none --cache-control none --profile-from-start off --graph-profiling node \
    --metrics gpu__time_duration.sum --csv --page raw python bench/decode.py --presets 20b --steps 16 \
    --precision exact --profile-replay > "$OUT/step-kernels.csv" 2> "$OUT/step-kernels.err"
  echo "ncu exit $?"; tail -3 "$OUT/step-kernels.err"; kernel_durations "$OUT/step-kernels.csv"
}
batch_diff() {  # batch_diff [SECONDS]: `diff 7m --layers --batch 8 --steps 32` (two batched shapes bit for bit, against
  # numpy layer by layer) in this tree: its exit status and last lines
  timeout ${1:-120} python -m cupy_getp.cli diff 7m --layers --batch 8 --steps 32 > "$OUT/diff.txt" 2>&1
  echo "diff exit $?"; tail -4 "$OUT/diff.txt"
}
attention_bench() {  # attention_bench SECONDS [ARGS...]: bench/attention.py (1/64/512/1024 rows, contexts 512, 2048;
  # ARGS: more options, e.g. --kv-cache fp32,bf16) in TREE (.), its table
  local seconds=$1; shift
  (cd "${TREE:-.}" && PYTHONPATH=$PWD timeout "$seconds" python bench/attention.py "$@" --out "$OUT/attention.jsonl" \
    > "$OUT/attention.txt" 2>&1)
  echo "attention exit $?"
  grep -vE "^\{" "$OUT/attention.txt" | tail -40
}
attention_compare() {  # attention_compare OLD.jsonl NEW.jsonl: bench/attention.py's cases side by side: ms, of copy,
  # and whether the two digests (att and the partials) agree
  python - "$1" "$2" <<'PY'
import json, sys
def cases(path):
    out = {}
    for line in open(path):
        r = json.loads(line)
        if r.get("bench") == "attention":
            out[(r["layer"], r["kv_cache"], r["rows"], r["context"])] = r
    return out
old, new = cases(sys.argv[1]), cases(sys.argv[2])
print("layer kv rows context | ms old new | of copy old new | digests")
for key in sorted(set(old) & set(new)):
    o, n = old[key], new[key]
    same = "same" if o.get("digest") == n.get("digest") else f"DIFFER {o.get('digest')} {n.get('digest')}"
    print(*key, "|", o["ms"], n["ms"], f"({100 * (n['ms'] / o['ms'] - 1):+.1f} %)", "|", o["of_copy"], n["of_copy"], "|", same)
PY
}
kv_sides() {  # kv_sides PRECISION: the headline's first MAX_SECONDS (25) with an FP32 and a BF16 KV cache (KV_SIDES),
  # each with a PROFILE_ROWS (640) step kernel by kernel
  for kv in ${KV_SIDES:-fp32 bf16}; do HEADLINE_KV=$kv PROFILE_ROWS=${PROFILE_ROWS:-640} MAX_SECONDS=${MAX_SECONDS:-25} \
    headline_side 1 "$1" "$1-kv$kv"; done
}
fast_tall_sides() {  # the fast headline's first MAX_SECONDS with the 128-row sliced kernels and without
  # (TALL_SIDES: 1 0), each with a 640-row step kernel by kernel
  for tall in ${TALL_SIDES:-1 0}; do CUPY_GETP_WG_SLICED_TALL=$tall PROFILE_ROWS=640 MAX_SECONDS=${MAX_SECONDS:-25} \
    HEADLINE_SECONDS=${HEADLINE_SECONDS:-150} headline_side 1 fast "fast-tall$tall"; done
}
invariance_tests() {  # tests/test_gpu_invariance.py in this tree within INV_SECONDS (default 300): its result lines
  timeout ${INV_SECONDS:-300} python -m pytest -m gpu -v -rfE tests/test_gpu_invariance.py >> "$OUT/inv-tests.log" 2>&1
  grep -E "PASSED|FAILED|passed|failed|ERROR|differ" "$OUT/inv-tests.log" | tail -16
}
headline_sides() {  # the exact headline in the trees HEADLINE_SIDES (old new) (30 s each, the one-row step's profile)
  for side in ${HEADLINE_SIDES:-old new}; do TREE=$(tree_of $side) PROFILE_ROWS=${PROFILE_ROWS:-1} MAX_SECONDS=${MAX_SECONDS:-30} \
    HEADLINE_SECONDS=${HEADLINE_SECONDS:-175} headline_side 1 exact "headline-$side"; done
}
one_row_stalls() {  # ncu --set full: the first of getp's one-row step's products named by STALL_KERNELS (a regex; by
  # default qkv and mlp1 + SwiGLU as they were before the half blocks and grouped TMA; graph replay, exact), where
  # their warps wait, SASS line by line
  timeout 200 ncu --clock-control none --cache-control none --profile-from-start off --graph-profiling node \
    -k regex:"${STALL_KERNELS:-gemm_wg_tma_r8_p3_b1|gemm_wg_grouped_swiglu_r8_p3_b2}" --launch-count 2 --set full \
    -f -o /tmp/onerow \
    python bench/decode.py --presets 20b --steps 16 --precision exact --profile-replay > "$OUT/onerow-stalls.log" 2>&1
  echo "ncu exit $?"; stalls_report /tmp/onerow onerow
}
tree_of() {  # tree_of SIDE: where a side's commands run: new, this tree; any other, a tree carried as .carry/SIDE (old:
  # the tree before a change; `git archive REV cupy_getp kernels 'bench/*.py' pyproject.toml data | tar x -C .carry/old`)
  if [ "$1" = new ]; then echo .; else echo ".carry/$1"; fi
}
sides() {  # sides NAME SECONDS 'COMMAND' SIDE...: COMMAND (bash; PYTHONPATH its tree, SIDE its side) in each side's
  # tree, its output in NAME-SIDE.txt
  local name=$1 seconds=$2 cmd=$3 side; shift 3
  for side in "$@"; do
    (cd "$(tree_of $side)" && PYTHONPATH=$PWD SIDE=$side timeout "$seconds" bash -c "$cmd" >> "$OUT/$name-$side.txt" 2>&1)
    echo "$name ($side) exit $?"
  done
  tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
}
DECODE="python bench/decode.py --presets 20b --steps 128 --precision exact"  # batch-1 decode, 20b, exact
decode_figures() {  # decode_figures NAME...: getp tok/s and device ms a step of each $OUT/NAME.txt (a DECODE log)
  local name
  for name in "$@"; do grep -o '"device_ms_per_step_pos_136": [0-9.]*\|"tok_s_pos_8_136": [0-9.]*' \
    "$OUT/$name.txt" | tr '\n' ' '; echo "($name)"; done
}
decode_sides() {  # decode_sides [SIDE...]: batch-1 decode (DECODE) in each side's tree (default: old new), then
  # each side's getp tok/s and device ms a step
  local side sides_=${*:-old new}
  sides decode ${DECODE_SECONDS:-150} "$DECODE" $sides_
  decode_figures $(for side in $sides_; do echo "decode-$side"; done)
}
ablation_lines() {  # ablation_lines LOG: bench/step_ablation.py's records in LOG, a line each (left out or set: device
  # ms a step, launches, its cost or what the default saves)
  grep -o '"set": "[^"]*"\|"left_out": [^,]*\|"device_ms_per_step": [0-9.]*\|"its_cost_ms": [-0-9.]*\|"default_saves_ms": [-0-9.]*\|"launches_left_out": [0-9]*\|"launches": [0-9]*' \
    "$1" | paste -sd' ' | sed 's/ "left_out"/\n"left_out"/g; s/ "set"/\n"set"/g'
}
step_ablation() {  # where the one-row step's graph time goes (bench/step_ablation.py, this tree): a line a group
  timeout ${ABLATION_SECONDS:-300} python bench/step_ablation.py > "$OUT/ablation.txt" 2>&1
  echo "ablation exit $?"
  ablation_lines "$OUT/ablation.txt"
}
set_sides() {  # set_sides PRECISION ROWS: bench/step_ablation.py at ROWS decode rows, context 512, every group kept,
  # timed with each of SET (launch constants) against the default in one process
  local log="$OUT/set-$1-$2.txt"
  timeout ${SET_SECONDS:-200} python bench/step_ablation.py --precision $1 --rows $2 --context 512 --groups none \
    --set "${SET:-moe.ROUTER_MAX_ROWS=1,attention.ATTN_FUSED_MAX_ROWS=100000}" > "$log" 2>&1
  echo "set $1 $2 exit $?"
  ablation_lines "$log"
}
gpu_tests() {  # gpu_tests NAME SECONDS PYTEST_ARGS...: the gpu-marked tests in $OUT/NAME.log, its exit and summary lines
  local name=$1 seconds=$2; shift 2
  timeout "$seconds" python -m pytest -m gpu -q -rfE "$@" > "$OUT/$name.log" 2>&1
  echo "$name exit $?"; grep -E "passed|failed|FAILED|ERROR" "$OUT/$name.log" | tail -8
}
onerow_sides() {  # onerow_sides [SIDE...]: the one-row products (bench/onerow.py, 3 pieces) in each side's tree (default:
  # old new), their records
  local side sides_=${*:-old new}
  sides onerow 200 "python bench/onerow.py --pieces 3 --launches 24" $sides_
  for side in $sides_; do echo "onerow ($side)"; onerow_records "$OUT/onerow-$side.txt"; done
}
moeentry_sides() {  # moeentry_sides [SIDE...]: the MoE block's entry alone (bench/moe_entry.py: only the rmsnorm and moe
  # kernels built) in each side's tree (default: old new), us a layer at 1, 32 and 1024 rows
  local side sides_=${*:-old new}
  sides moeentry 120 "python bench/moe_entry.py --rows 1,32,1024" $sides_
  for side in $sides_; do grep -o '"kernels": "[^"]*", "rows": [0-9]*, "us_a_layer": [0-9.]*' \
    "$OUT/moeentry-$side.txt"; done
}
attention_sides() {  # attention_sides ROWS SIDE...: bench/attention.py at ROWS rows in each side's tree (attention-SIDE.txt)
  local rows=$1 side; shift
  sides attention 150 "python bench/attention.py --rows $rows --out $OUT/attention-\$SIDE.jsonl" "$@"
  for side in "$@"; do grep -vE "^\{" "$OUT/attention-$side.txt" | tail -8; done
}
grouped_sides() {  # grouped_sides SIDE...: bench/gemm_tc.py's grouped products (every row count) in each side's tree
  sides grouped 200 "python bench/gemm_tc.py --grouped-only --experts bf16,mxfp4" "$@"
  for side in "$@"; do echo "grouped ($side): path experts tile rows pieces TFLOP/s mlp1 mlp2"
    grouped_tflops "$OUT/grouped-$side.txt"; done
}
onerow_stalls() {  # where the one-row qkv product's warps wait (the TMA kernel, the default at one row): ncu's stalls
  timeout 200 ncu --clock-control none -k regex:^gemm_wg_tma_r8_p3_b1$ --launch-count 1 --set full -f \
    -o /tmp/onerow-qkv python bench/onerow.py --pieces 3 --launches 1 > "$OUT/onerow-stalls.log" 2>&1
  echo "ncu exit $?"; stalls_report /tmp/onerow-qkv onerow-qkv
}
on_big_card() {  # true on a card of over 100 GB (an H200: the 1024-row step's profile fits beside the headline's slots)
  [ "$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)" -gt 100000 ]
}
nccl_path() {  # CuPy's NCCL module needs libnccl.so.2: where CuPy finds none, take the one torch ships
  python -c "from cupy.cuda import nccl; assert nccl.available" 2>/dev/null && return 0
  local lib; lib=$(python -c "import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], 'lib'))" 2>/dev/null)
  [ -n "$lib" ] || lib=$(dirname "$(find / -name 'libnccl.so.2*' 2>/dev/null | head -1)")
  export LD_LIBRARY_PATH=$lib:${LD_LIBRARY_PATH:-}; echo "NCCL from $lib"
}
serve_wheels() {  # FastAPI, uvicorn, pydantic, openai, ... for the server (that machine has no registry)
  [ -d /tmp/serve-site ] || python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/serve-site .whl-serve/*.whl || return 1
  export PYTHONPATH=$PWD:/tmp/serve-site
}
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; git log --oneline -1;
  python -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)"; } > "$OUT/env.txt" 2>&1
for part in $parts; do
  case $part in
    invariance7m)  # getp's output across --batch 1 / 7 / default and a shuffled input, 7m, exact and fast (-n 256)
      { head -1 data/input.txt; tail -n +2 data/input.txt | shuf --random-source=<(yes); } > /tmp/shuffled.txt
      for precision in exact fast; do
        for batch in 1 7 0; do
          extra=""; [ "$batch" != 0 ] && extra="--batch $batch"
          timeout 120 python -m cupy_getp getp 7m -i data/input.txt -o "$OUT/inv-$precision-b$batch.txt" -n 256 \
            --precision $precision $extra > "$OUT/inv-$precision-b$batch.log" 2>&1 || echo "getp $precision $batch exit $?"
        done
        timeout 120 python -m cupy_getp getp 7m -i /tmp/shuffled.txt -o "$OUT/inv-$precision-shuf.txt" -n 256 \
          --precision $precision > "$OUT/inv-$precision-shuf.log" 2>&1 || echo "getp $precision shuffled exit $?"
        python - "$OUT" $precision <<'PY'
import sys
out, p = sys.argv[1], sys.argv[2]
def lines(name): return open(f"{out}/inv-{p}-{name}.txt").read().splitlines()
base = lines("b0")
for name in ("b1", "b7"):
    other = lines(name)
    print(p, name, "vs default:", sum(a != b for a, b in zip(base, other)), "of", len(base), "lines differ")
prompts = open("data/input.txt").read().splitlines()[1:]; shuffled = open("/tmp/shuffled.txt").read().splitlines()[1:]
got = dict(zip(shuffled, lines("shuf")))
print(p, "shuffled vs default:", sum(got[q] != l for q, l in zip(prompts, base)), "of", len(base), "lines differ")
PY
      done
      ;;
    attnbench)  # attention alone: fraction of the copy bandwidth at 1/64/512/1024 rows, contexts 512 and 2048
      attention_bench 150
      ;;
    attnncu)  # ncu of attn_rows_partial and the merge at 1024 rows, context 512, full layer
      timeout 150 ncu --clock-control none -k regex:attn_rows --launch-count 2 --section SpeedOfLight \
        --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis --section LaunchStats \
        --section SchedulerStats --section ComputeWorkloadAnalysis python bench/attention.py --reps 1 --warmup 1 \
        --no-copy --eager --rows 1024 --contexts 512 --layers full > "$OUT/attn-ncu.txt" 2>&1; echo "ncu exit $?"
      grep -E "attn_rows|Duration|Throughput|Achieved Occupancy|Theoretical Occupancy|Registers|Issued Ipc|No Eligible|Stall|Block Limit|Warp Cycles Per Issued" "$OUT/attn-ncu.txt" | head -60
      ;;
    attntests)  # attention against numpy on odd shapes, a row's bits whatever the other rows
      timeout 240 python -m pytest -m gpu -q -rfE tests/test_gpu_batch_attention.py > "$OUT/attn-tests.log" 2>&1
      grep -E "passed|failed|FAILED|ERROR" "$OUT/attn-tests.log" | tail -12
      ;;
    invtests)  # batch invariance end to end: getp's output across --batch, --chunk, shuffled input (INV_K: a -k filter)
      timeout ${INV_SECONDS:-420} python -m pytest -m gpu -v -rfE tests/test_gpu_invariance.py -k "${INV_K:-not nothing}" \
        >> "$OUT/inv-tests.log" 2>&1; grep -E "PASSED|FAILED|passed|failed|ERROR|differ" "$OUT/inv-tests.log" | tail -20
      ;;
    s3final)  # session 3's last run, after `invtests` (INV_SECONDS=260 bash bench/gpu_session.sh invtests s3final):
      # the headline in exact and fast with the step profile and batch-1 decode (one 20b engine), then the batched
      # engine's tests
      timeout 220 python bench/getp_throughput.py --preset 20b --precision exact,fast --max-seconds 90 \
        --profile-rows 1,1024 --skip drift,single,transformers --out "$OUT/headline" > "$OUT/headline.txt" 2>&1
      echo "headline exit $?"; grep -E "^\| |tok_s|batch1" "$OUT/headline.txt" | cut -c1-300 | tail -14
      timeout 120 python -m pytest -m gpu -q -rfE tests/test_gpu_batch_engine.py > "$OUT/engine-tests.log" 2>&1
      grep -E "passed|failed|FAILED|ERROR" "$OUT/engine-tests.log" | tail -8
      ;;
    s4a)  # session 4's first run (run 18, on main + branches wg-inflight and onemodel): the wgmma bits and the one-slot engine's
      # GPU tests; the one-slot engine's diff against numpy; batch-1 decode at 20b
      timeout 300 python -m pytest -m gpu -q -rfE --maxfail=30 --durations 15 tests/test_gpu_gemm_wgmma.py \
        tests/test_gpu_engine.py tests/test_gpu_batch_engine.py tests/test_gpu_experts.py tests/test_device_memory.py \
        tests/test_gpu_kernels.py tests/test_gpu_weight_storage.py > "$OUT/gpu-tests.log" 2>&1; grep -E "passed|failed|FAILED|ERROR" "$OUT/gpu-tests.log" | tail -30
      timeout 60 python -m cupy_getp diff 7m --layers --steps 32 > "$OUT/diff-7m.txt" 2>&1; echo "diff 7m exit $?"
      tail -3 "$OUT/diff-7m.txt"
      timeout 60 python -m cupy_getp diff 7m --layers --batch 8 --steps 32 > "$OUT/diff-batch-7m.txt" 2>&1
      echo "diff 7m --batch 8 exit $?"; tail -3 "$OUT/diff-batch-7m.txt"
      timeout 110 python bench/decode.py --presets 20b --steps 128 > "$OUT/decode.txt" 2>&1
      echo "decode exit $?"; tail -12 "$OUT/decode.txt" | cut -c1-1500
      ;;
    onerow)  # the one-row products at the 20b shape: every kernel choice with the same bits (bench/onerow.py)
      onerow_bench
      ;;
    tma)  # branch tma: the dense wgmma products with W by one TMA copy a stage, bit for bit the cp.async kernels'
      # (every tile, 1 to 1024 rows), then the one-row products, exact, with the `wg tma` choices (not after a
      # timeout: a TMA kernel that never completes its barrier would hang the bench as well)
      timeout 240 python -m pytest -m gpu -q -rfE tests/test_gpu_gemm_wgmma.py -k tma > "$OUT/tma-tests.log" 2>&1
      rc=$?; grep -E "passed|failed|FAILED|ERROR|Error" "$OUT/tma-tests.log" | tail -12
      if [ $rc = 124 ]; then echo "tma tests timed out (a hang?): onerow skipped"; tail -5 "$OUT/tma-tests.log"
      else onerow_bench --pieces 3; fi
      ;;
    splitk)  # branch splitk: the split-K twins (CUPY_GETP_WG_SPLITK=1) bit for bit the ordered sum of the unsplit kernels'
      # K slices, row-count invariant, counters reset (graph replays); then the one-row products with the `wg splitk`
      # choices, exact and fast (not after a timeout: a fixup that never sees its last block would hang the bench too)
      splitk_tests 300; rc=$?
      if [ $rc = 124 ]; then echo "splitk tests timed out (a hang?): onerow skipped"; tail -5 "$OUT/splitk-tests.log"
      else onerow_bench --pieces 3,1; fi
      ;;
    splitkdecode)  # after `splitk` passed: batch-1 decode at 20b (exact) with split-K and without, then getp's
      # batch invariance end to end with split-K on (INV_SECONDS)
      for s in 1 0; do
        CUPY_GETP_WG_SPLITK=$s timeout 150 $DECODE > "$OUT/decode-splitk$s.txt" 2>&1
        echo "CUPY_GETP_WG_SPLITK=$s decode exit $?"
        bench_records "$OUT/decode-splitk$s.txt" batch1_batched \
          '{k: v for k, v in r.items() if "tok_s" in k or "device_ms" in k or k == "products"}' \
          '{k: v for k, v in r["kernel_ms_by_kernel"].items() if k.startswith("gemm_wg")}'
      done
      CUPY_GETP_WG_SPLITK=1 timeout ${INV_SECONDS:-240} python -m pytest -m gpu -q -rfE tests/test_gpu_invariance.py \
        > "$OUT/inv-splitk.log" 2>&1; grep -E "passed|failed|FAILED|ERROR|differ" "$OUT/inv-splitk.log" | tail -12
      ;;
    onerowncu)  # ncu of the one-row wgmma qkv product (3 launches, exact)
      timeout 150 ncu --clock-control none -k regex:gemm_wg_r8_p3_b1 --launch-count 3 --section SpeedOfLight \
        --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis --section LaunchStats \
        --section SchedulerStats python bench/onerow.py --pieces 3 --launches 1 > "$OUT/onerow-ncu.txt" 2>&1
      echo "ncu exit $?"; grep -E "gemm_wg|Duration|Throughput|Issued Ipc|No Eligible|Stall|Warp Cycles Per Issued|Registers" \
        "$OUT/onerow-ncu.txt" | head -40
      ;;
    onerowstalls)  # where the one-row qkv product's warps wait, instruction by instruction (ncu full set, SASS page)
      onerow_stalls
      ;;
    mlp1stalls)  # where the grouped mlp1 + SwiGLU product's warps wait (exact, 64-row tiles: the 1024-row step's most)
      timeout 240 ncu --clock-control none -k regex:gemm_wg_grouped_swiglu_r64_p3_b2 --launch-count 1 --set full -f \
        -o /tmp/mlp1 python bench/gemm_tc.py --quick --grouped-only --repeats 1 > "$OUT/mlp1-stalls.log" 2>&1
      echo "ncu exit $?"; stalls_report /tmp/mlp1 mlp1
      ;;
    attnstalls)  # where attn_rows_partial's warps wait (1024 rows, context 512, full layer; ATTN_KV: the KV cache,
      # fp32 by default), instruction by instruction
      timeout 200 ncu --clock-control none -k regex:attn_rows_partial --launch-count 1 --set full -f -o /tmp/attn \
        python bench/attention.py --reps 1 --warmup 1 --no-copy --eager --rows 1024 --contexts 512 --layers full \
        --kv-cache ${ATTN_KV:-fp32} > "$OUT/attn-stalls.log" 2>&1
      echo "ncu exit $?"; stalls_report /tmp/attn attn
      ;;
    s9a)  # ninth session, run 1: the grouped mlp1's epilogue through shared memory: the grouped products' GPU tests
      # (bits against mma.sync, the oracles, MXFP4), their speed in the tree before it (.carry/old) and in this one
      timeout 240 python -m pytest -m gpu -q -rfE tests/test_gpu_gemm_wgmma.py tests/test_gpu_mxfp4.py \
        -k "grouped or mxfp4" > "$OUT/grouped-tests.log" 2>&1; echo "grouped tests exit $?"
      grep -E "passed|failed|FAILED|ERROR" "$OUT/grouped-tests.log" | tail -12
      grouped_sides old new
      ;;
    s9b)  # ninth session, run 2: the MXFP4 grouped tests run 46 did not reach, where the one-row qkv product's warps
      # wait (onerowstalls), the exact headline and batch-1 of this tree (20b; the 1024-row profile where it fits)
      timeout 150 python -m pytest -m gpu -q -rfE tests/test_gpu_mxfp4.py > "$OUT/mxfp4-tests.log" 2>&1
      echo "mxfp4 tests exit $?"; grep -E "passed|failed|FAILED|ERROR" "$OUT/mxfp4-tests.log" | tail -12
      onerow_stalls > "$OUT/onerow-stalls-report.txt"; tail -32 "$OUT/onerow-stalls-report.txt"
      on_big_card || export PROFILE_ROWS=${PROFILE_ROWS:-1}
      MAX_SECONDS=${MAX_SECONDS:-30} HEADLINE_SECONDS=${HEADLINE_SECONDS:-170} headline_side 1 exact headline
      ;;
    s9c)  # ninth session, run 3 (then `invtests`): the MXFP4 experts' tensor-core products (the grouped mlp1 among
      # them) bit for bit the BF16 experts', every kernel; diff --batch at 7m
      timeout 150 python -m pytest -m gpu -v -rfE tests/test_gpu_mxfp4.py -k tensor_core > "$OUT/mxfp4-tc-tests.log" 2>&1
      echo "mxfp4 tensor-core tests exit $?"; grep -E "PASSED|FAILED|passed|failed|ERROR" "$OUT/mxfp4-tc-tests.log" | tail -8
      timeout 90 python -m cupy_getp diff 7m --layers --batch 8 --steps 32 > "$OUT/diff-batch-7m.txt" 2>&1
      echo "diff 7m --batch 8 exit $?"; tail -3 "$OUT/diff-batch-7m.txt"
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      ;;
    s10a)  # branch row-stagger (on mb-pipeline, on onerow-inflight; .carry/old = main): exact tiles of <= 16 rows
      # with a stage's k16 steps in flight, MB = 2 tiles with their two feature blocks' k16 steps staggered, MB = 1
      # tiles of >= 32 rows with their two row halves staggered (the same bits): the wgmma and split-K GPU tests
      # (bits against mma.sync and the ordered sums), the one-row products and batch-1 decode in both trees
      timeout 200 python -m pytest -m gpu -q -rfE tests/test_gpu_gemm_wgmma.py -k "bits or row_count" \
        > "$OUT/stack-bits-tests.log" 2>&1; echo "wgmma bit tests exit $?"
      grep -E "passed|failed|FAILED|ERROR" "$OUT/stack-bits-tests.log" | tail -12
      splitk_tests 150
      onerow_sides
      sides decode 150 "$DECODE" old new
      for side in old new; do tail -2 "$OUT/decode-$side.txt" | cut -c1-400; done
      ;;
    s11a)  # tenth session: rmsnorm, RoPE + KV write and argmax with their loads in flight (.carry/old = the tree
      # before): their GPU tests, batch-1 decode in both trees, the step's kernels by ncu (this tree), diff --batch
      timeout 150 python -m pytest -m gpu -q -rfE tests/test_gpu_batch_attention.py -k "rmsnorm or rope or argmax" \
        > "$OUT/rows-tests.log" 2>&1; echo "rows kernel tests exit $?"
      grep -E "passed|failed|FAILED|ERROR" "$OUT/rows-tests.log" | tail -12
      decode_sides
      step_kernels
      batch_diff
      ;;
    s13a)  # eleventh session (.carry/old = main b6ebec5): router_rows (the router on the CUDA cores with its choice),
      # moe_align's block sized by its pairs, rmsnorm with S blocks a row at few rows: their GPU tests and the
      # engines' (one slot, rows), batch-1 decode in both trees
      timeout 300 python -m pytest -m gpu -q -rfE tests/test_gpu_batch_moe.py tests/test_gpu_engine.py \
        tests/test_gpu_batch_engine.py > "$OUT/s13-tests.log" 2>&1; echo "tests exit $?"
      timeout 60 python -m pytest -m gpu -q -rfE tests/test_gpu_batch_attention.py -k rmsnorm >> "$OUT/s13-tests.log" 2>&1
      echo "rmsnorm tests exit $?"; grep -E "passed|failed|FAILED|ERROR" "$OUT/s13-tests.log" | tail -14
      decode_sides
      ;;
    s13b)  # the same tree: the step's kernels by ncu, batch invariance end to end (INV_SECONDS), diff --batch
      step_kernels
      invariance_tests
      batch_diff
      ;;
    s13c)  # the same tree against main: the exact headline in both trees (30 s each, the 1-row step's profile)
      headline_sides
      ;;
    s16a)  # branch router-inflight (.carry/old = main): router_rows with 4 experts a warp, all their loads in flight
      # (the matvec's bits): its GPU tests, the MoE entry alone and batch-1 decode in both trees
      timeout 200 python -m pytest -m gpu -q -rfE tests/test_gpu_batch_moe.py > "$OUT/router-tests.log" 2>&1
      echo "router tests exit $?"; grep -E "passed|failed|FAILED|ERROR" "$OUT/router-tests.log" | tail -12
      moeentry_sides
      decode_sides
      ;;
    s15a)  # branch half-ring (.carry/old = main): wgmma tiles of 8 rows and one feature block two an SM (the same
      # bits): the wgmma and split-K GPU tests, the one-row products and batch-1 decode in both trees; then
      # s13b (ncu, invariance, diff --batch) and s13c (the headline) if it is kept
      timeout 330 python -m pytest -m gpu -q -rfE tests/test_gpu_gemm_wgmma.py > "$OUT/wg-tests.log" 2>&1
      echo "wgmma tests exit $?"; grep -E "passed|failed|FAILED|ERROR" "$OUT/wg-tests.log" | tail -12
      splitk_tests 150
      onerow_sides
      decode_sides
      ;;
    s17a)  # branch next-stack (.carry/old = main): router-inflight and half-ring together (each the same bits as
      # main): the wgmma, split-K and MoE GPU tests, the one-row products, the MoE entry alone and batch-1 decode
      # in both trees (one decode for both changes: onerow and moe_entry tell them apart); then s13b and s13c
      timeout 330 python -m pytest -m gpu -q -rfE tests/test_gpu_gemm_wgmma.py tests/test_gpu_batch_moe.py \
        > "$OUT/stack-tests.log" 2>&1; echo "tests exit $?"
      grep -E "passed|failed|FAILED|ERROR" "$OUT/stack-tests.log" | tail -12
      splitk_tests 150
      onerow_sides
      moeentry_sides
      decode_sides
      ;;
    s18a)  # twelfth session, three trees: old = main, mid = stack12 (router-inflight and half-ring on main c0d89fa),
      # new = pipe (stack12 + exact tiles of few rows with two stages' products in flight): the one-row products in
      # the three, the MoE entry alone in old and mid (pipe changes no router), batch-1 decode in old and new
      onerow_sides old mid new
      moeentry_sides old mid
      decode_sides old new
      ;;
    s18e)  # one call for the branch pipe (router-inflight, half-ring, exact tiles of few rows pipelined; .carry/old =
      # main): the wgmma bit and row-count tests, the router tests, the split-K tests; the one-row products, the MoE
      # entry alone and batch-1 decode in both trees
      timeout 200 python -m pytest -m gpu -q -rfE tests/test_gpu_gemm_wgmma.py -k "bits or row_count or share_an_sm" \
        > "$OUT/pipe-bits-tests.log" 2>&1; echo "wgmma bit tests exit $?"
      grep -E "passed|failed|FAILED|ERROR" "$OUT/pipe-bits-tests.log" | tail -8
      timeout 90 python -m pytest -m gpu -q -rfE tests/test_gpu_batch_moe.py -k router > "$OUT/router-tests.log" 2>&1
      echo "router tests exit $?"; grep -E "passed|failed|FAILED|ERROR" "$OUT/router-tests.log" | tail -6
      splitk_tests 120
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      onerow_sides
      moeentry_sides
      decode_sides
      ;;
    s18f)  # s18e by value, for a short call: the wgmma bit and row-count tests, the split-K tests, the one-row
      # products in both trees; then the router tests, the MoE entry alone and batch-1 decode in both trees
      timeout 170 python -m pytest -m gpu -q -rfE tests/test_gpu_gemm_wgmma.py -k "bits or row_count or share_an_sm" \
        > "$OUT/pipe-bits-tests.log" 2>&1; echo "wgmma bit tests exit $?"
      grep -E "passed|failed|FAILED|ERROR" "$OUT/pipe-bits-tests.log" | tail -8
      splitk_tests 90
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      onerow_sides
      timeout 60 python -m pytest -m gpu -q -rfE tests/test_gpu_batch_moe.py -k router > "$OUT/router-tests.log" 2>&1
      echo "router tests exit $?"; grep -E "passed|failed|FAILED|ERROR" "$OUT/router-tests.log" | tail -6
      moeentry_sides
      decode_sides
      ;;
    s19a)  # branch stack13 = pipe + attn-fused (.carry/old = main), one short call: the wgmma bit and row-count
      # tests, the attention tests (one launch against two, bit for bit; against numpy), batch-1 decode in both
      # trees; then (s18f's rest) the split-K and router tests, the one-row products
      timeout 170 python -m pytest -m gpu -q -rfE tests/test_gpu_gemm_wgmma.py -k "bits or row_count or share_an_sm" \
        > "$OUT/pipe-bits-tests.log" 2>&1; echo "wgmma bit tests exit $?"
      grep -E "passed|failed|FAILED|ERROR" "$OUT/pipe-bits-tests.log" | tail -8
      timeout 120 python -m pytest -m gpu -q -rfE tests/test_gpu_batch_attention.py -k "attention" \
        > "$OUT/attention-tests.log" 2>&1; echo "attention tests exit $?"
      grep -E "passed|failed|FAILED|ERROR" "$OUT/attention-tests.log" | tail -8
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      decode_sides
      splitk_tests 90
      timeout 60 python -m pytest -m gpu -q -rfE tests/test_gpu_batch_moe.py -k router > "$OUT/router-tests.log" 2>&1
      echo "router tests exit $?"; grep -E "passed|failed|FAILED|ERROR" "$OUT/router-tests.log" | tail -6
      onerow_sides
      ;;
    s20a)  # branch stack13d = router-inflight + pipe + attn-fused, without the paired ring (.carry/old = main): the
      # grouped bit tests (the pipelined 8-row tiles now on the whole ring), batch-1 decode in both trees, then
      # batch invariance end to end (INV_SECONDS)
      timeout 150 python -m pytest -m gpu -q -rfE tests/test_gpu_gemm_wgmma.py -k "grouped_bits" \
        > "$OUT/grouped-bits-tests.log" 2>&1; echo "grouped bit tests exit $?"
      grep -E "passed|failed|FAILED|ERROR" "$OUT/grouped-bits-tests.log" | tail -8
      decode_sides
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      invariance_tests
      ;;
    s20b)  # the same trees: diff --batch in this one, then the exact headline in both (s13c)
      batch_diff
      headline_sides
      ;;
    s20c)  # branch land13 = main + router-inflight + attn-fused (.carry/old = main): the MoE, engine, batched-engine
      # and attention GPU tests, batch-1 decode in both trees, the step's kernels by ncu, where one row's qkv and
      # mlp1 products wait (qkvstalls), diff --batch, then batch invariance end to end (INV_SECONDS)
      timeout 240 python -m pytest -m gpu -q -rfE tests/test_gpu_batch_moe.py tests/test_gpu_engine.py \
        tests/test_gpu_batch_engine.py tests/test_gpu_batch_attention.py > "$OUT/land-tests.log" 2>&1
      echo "tests exit $?"; grep -E "passed|failed|FAILED|ERROR" "$OUT/land-tests.log" | tail -12
      decode_sides
      step_kernels
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      batch_diff 60
      one_row_stalls
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      invariance_tests
      ;;
    qkvstalls)  # where one row's qkv and mlp1 products wait (one_row_stalls)
      one_row_stalls
      ;;
    s21a)  # branch deep-ring (.carry/old = main): the wgmma ring up to 16 stages (tiles of few rows: 8 rows, 3 pieces,
      # one block 8 -> 11): the wgmma bit and row-count tests, the one-row products and batch-1 decode in both trees
      timeout 200 python -m pytest -m gpu -q -rfE tests/test_gpu_gemm_wgmma.py -k "bits or row_count" \
        > "$OUT/ring-bits-tests.log" 2>&1; echo "wgmma bit tests exit $?"
      grep -E "passed|failed|FAILED|ERROR" "$OUT/ring-bits-tests.log" | tail -8
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      onerow_sides
      decode_sides
      ;;
    s21b)  # the same trees: the headline in both, exact then fast (fast's 64-row tiles of one piece: 8 -> 9 stages)
      for prec in exact fast; do for side in old new; do TREE=$(tree_of $side) PROFILE_ROWS=${PROFILE_ROWS:-1} \
        MAX_SECONDS=${MAX_SECONDS:-30} HEADLINE_SECONDS=${HEADLINE_SECONDS:-140} headline_side 1 $prec "headline-$prec-$side"
      done; done
      ;;
    s21c)  # three trees: old = main, mid = deep-ring (the ring up to 16 stages), new = half-blocks (deep-ring + dense
      # TMA tiles of <= 16 rows in half blocks where few feature tiles): the one-row products in the three trees
      # (first: they say whether the rest is worth it), the half-block, wgmma bit and row-count tests, batch-1
      # decode in the three
      onerow_sides old mid new
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      gpu_tests half-tests 260 tests/test_gpu_gemm_wgmma.py -k "half or bits or row_count"
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      decode_sides old mid new
      ;;
    s22d)  # old = main 9c13702, new = half blocks + programmatic dependent launch (run 75, when PDL was on by default;
      # now CUPY_GETP_PDL=1 asks for it): batch-1 decode in old, new and new without PDL, then new's graph vs eager
      # logits bits (its prompt fixed after this run) and the eager tests, the half-block and wgmma bit tests
      decode_sides old
      CUPY_GETP_PDL=1 sides decode 150 "$DECODE" new
      sides decode-nopdl 150 "$DECODE" new
      decode_figures decode-new decode-nopdl-new
      grep -o '"products": "[^"]*"' "$OUT/decode-new.txt" | head -1
      CUPY_GETP_PDL=1 gpu_tests engine-tests 100 tests/test_gpu_batch_engine.py -k "graph_steps or every_precision"
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      gpu_tests wg-tests 80 tests/test_gpu_gemm_wgmma.py -k "half or bits"
      ;;
    s23a)  # programmatic dependent launch (opt-in, CUPY_GETP_PDL=1), this tree: its logits bit test and the graph vs
      # eager lines, batch-1 decode without and with it, batch invariance with it (INV_SECONDS), diff --batch
      gpu_tests pdl-tests 120 tests/test_gpu_batch_engine.py -k "graph_steps or every_precision"
      sides decode 150 "$DECODE" new
      CUPY_GETP_PDL=1 sides decode-pdl 150 "$DECODE" new
      decode_figures decode-new decode-pdl-new
      CUPY_GETP_PDL=1 INV_SECONDS=${INV_SECONDS:-250} invariance_tests
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      batch_diff 60
      ;;
    s23c)  # branch grouped-tma (.carry/old = main): the grouped products of few rows read bf16 experts by TMA through a
      # paired map: its bit tests (against the cp.async kernels) and the grouped ones, the one-row products and
      # batch-1 decode in both trees
      gpu_tests grouped-tma-tests 200 tests/test_gpu_gemm_wgmma.py -k "grouped_tma or grouped_bits or wg_grouped_products"
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      onerow_sides
      decode_sides
      ;;
    s24a)  # branch s24 (grouped TMA + programmatic dependent launch on by default): the grouped TMA bit tests, the
      # graph vs eager logits bits and every precision (PDL on), the one-row products (the grouped ones with their
      # experts by cp.async and by TMA, one run), batch-1 decode with and without the grouped TMA kernels
      gpu_tests grouped-tma-tests 150 tests/test_gpu_gemm_wgmma.py -k "grouped_tma or grouped_bits or wg_grouped_products"
      gpu_tests pdl-tests 120 tests/test_gpu_batch_engine.py -k "graph_steps or every_precision"
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      onerow_sides new
      sides decode 150 "$DECODE" new
      CUPY_GETP_WG_TMA_GROUPED=0 sides decode-nogrouped 150 "$DECODE" new
      decode_figures decode-new decode-nogrouped-new
      ;;
    s24b)  # branch s24: the graph vs eager logits bits and every precision (PDL on; the test reading the logits on the
      # step's stream), batch invariance (INV_SECONDS), diff --batch, batch-1 decode without PDL
      gpu_tests pdl-tests 120 tests/test_gpu_batch_engine.py -k "graph_steps or every_precision"
      INV_SECONDS=${INV_SECONDS:-250} invariance_tests
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      batch_diff 60
      CUPY_GETP_PDL=0 sides decode-nopdl 150 "$DECODE" new
      decode_figures decode-nopdl-new
      ;;
    s24c)  # branch s24 against main (.carry/old): batch-1 decode in both, then this tree's exact headline
      decode_sides old new
      TREE=. PROFILE_ROWS=${PROFILE_ROWS:-1} MAX_SECONDS=${MAX_SECONDS:-30} HEADLINE_SECONDS=${HEADLINE_SECONDS:-175} \
        headline_side 1 exact headline-new
      ;;
    s25a)  # this tree: the one-row products with 3 pieces and with 1 (on an H200 qkv by TMA took 19.8 us with 3
      # pieces, 11.7 with 1, run 30: is a TMA product bounded by its consumers' chain of wgmmas?), then where one
      # row's grouped TMA mlp1 + SwiGLU and mlp2 wait (ncu --set full)
      sides onerow 240 "python bench/onerow.py --pieces 3,1 --launches 24" new
      onerow_records "$OUT/onerow-new.txt"
      STALL_KERNELS="gemm_wg_tma_grouped_swiglu_r8_p3_b2|gemm_wg_tma_grouped_r8_p3_b1" one_row_stalls
      ;;
    s25b)  # branch stage-overlap (.carry/old = main): exact tiles of few rows (BR MB <= 16) issue two stages' products
      # before adding the first (wg_overlapped_stages): the one-row products and batch-1 decode in both trees, the
      # wgmma and split-K bit tests (every tile against mma.sync's bits, row-count invariance)
      onerow_sides
      gpu_tests overlap-tests 260 tests/test_gpu_gemm_wgmma.py tests/test_gpu_gemm_wgmma_splitk.py
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      decode_sides
      ;;
    s26a)  # branch grouped-tma-tall (the grouped TMA kernels at every tile height): their bits against the cp.async
      # kernels', then the grouped products at 606 (an H100's headline steps) and 1024 rows, every tile height, W by
      # cp.async and by TMA
      gpu_tests s26-tests 240 tests/test_gpu_gemm_wgmma.py -k grouped
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      sides grouped 200 "python bench/gemm_tc.py --grouped-only --rows 606,1024" new
      echo "path experts tile rows pieces TFLOP/s mlp1 mlp2"; grouped_tflops "$OUT/grouped-new.txt"
      ;;
    s26b)  # the exact headline (30 s, 1024 requests) in main before (.carry/old) and this tree (HEADLINE_SIDES: others
      # carried as .carry/SIDE)
      for side in ${HEADLINE_SIDES:-old new}; do TREE=$(tree_of $side) PROFILE_ROWS=1 MAX_SECONDS=30 HEADLINE_SECONDS=170 \
        headline_side 1 exact "headline-$side"; done
      ;;
    s27)  # grouped tiles of 96 rows (the patch of the seventeenth session's closing note) in one call: the grouped bit
      # tests that run them (against the oracles; every tile against each other, mma.sync's and the cp.async kernels'
      # bits), then the exact headline in main (.carry/old) and this tree. A first call compiles gemm_wgmma (NVRTC)
      # inside TEST_SECONDS: 95 s was too little for it and the tests (run 90)
      gpu_tests s27-tests ${TEST_SECONDS:-200} tests/test_gpu_gemm_wgmma.py -k "${TEST_SELECTION:-grouped and (96 or bits)}"
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      headline_sides
      ;;
    s27a)  # this tree: the grouped bit tests (every tile, 96 rows among them where the patch is applied, against the
      # oracles, each other, mma.sync's and the cp.async kernels' bits), then the grouped products at 640 rows (an
      # H100's headline bucket) at every tile height, W by cp.async and by TMA
      gpu_tests s27-tests ${TEST_SECONDS:-290} tests/test_gpu_gemm_wgmma.py -k "${TEST_SELECTION:-grouped}"
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      sides grouped ${GROUPED_SECONDS:-200} "python bench/gemm_tc.py --grouped-only --rows 640" new
      echo "path experts tile rows pieces TFLOP/s mlp1 mlp2 slots ms"; grouped_tflops "$OUT/grouped-new.txt"
      ;;
    s29a)  # an H200 (its 1024 slots): the whole exact and fast headlines in this tree (1024 requests, -n 1024, no
      # 30-s cut), then attention alone (bench/attention.py). A fresh machine compiles every kernel inside the first
      # (exact) run's HEADLINE_SECONDS, hence its longer limit
      PROFILE_ROWS=1 MAX_SECONDS=${MAX_SECONDS:-200} HEADLINE_SECONDS=${HEADLINE_SECONDS:-330} headline_side 1 exact headline-exact
      PROFILE_ROWS=1 MAX_SECONDS=${MAX_SECONDS:-200} HEADLINE_SECONDS=200 headline_side 1 fast headline-fast
      attention_bench 150
      ;;
    s31a)  # an H200, first call: attention alone (it compiles only attention's kernels), then the whole exact
      # headline (1024 requests, -n 1024, its 1024 slots; a fresh machine compiles every kernel inside its limit)
      attention_bench ${ATTENTION_SECONDS:-110}
      PROFILE_ROWS=1 MAX_SECONDS=${MAX_SECONDS:-200} HEADLINE_SECONDS=${HEADLINE_SECONDS:-420} headline_side 1 exact headline-exact
      ;;
    s31b)  # an H200, the next call on the same machine (kernels cached): the whole fast headline
      PROFILE_ROWS=1 MAX_SECONDS=${MAX_SECONDS:-200} HEADLINE_SECONDS=${HEADLINE_SECONDS:-420} headline_side 1 fast headline-fast
      ;;
    s31c)  # an H100 (606 slots): where a 640-row step goes, exact and fast: each headline's first MAX_SECONDS, then one
      # eager step of 640 rows at context 512, timed kernel by kernel (and batch-1 decode after the exact one)
      PROFILE_ROWS=1,640 MAX_SECONDS=${MAX_SECONDS:-25} HEADLINE_SECONDS=${HEADLINE_SECONDS:-300} headline_side 1 exact headline-exact
      PROFILE_ROWS=640 MAX_SECONDS=${MAX_SECONDS:-25} HEADLINE_SECONDS=200 headline_side 1 fast headline-fast
      ;;
    s31d)  # the 128-row sliced kernels of `fast` (CUPY_GETP_WG_SLICED_TALL): the split-K tests (every mode and height
      # against the ordered sum of the slices and each other), then the fast headline's first MAX_SECONDS with them
      # and without, each with a 640-row step kernel by kernel
      gpu_tests splitk ${TEST_SECONDS:-240} tests/test_gpu_gemm_wgmma_splitk.py
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      fast_tall_sides
      ;;
    s32a)  # the BF16 KV cache, first call (a fresh machine): attention and RoPE + KV write over BF16 caches against
      # numpy, attention alone over both caches, then the fast headline with each (the first side compiles)
      gpu_tests kvattn ${TEST_SECONDS:-150} tests/test_gpu_batch_attention.py \
        -k "rope_kv_write or attention_rows or bit_identical or variant"
      attention_bench ${ATTENTION_SECONDS:-150} --kv-cache fp32,bf16
      HEADLINE_SECONDS=${HEADLINE_SECONDS:-240} kv_sides fast
      ;;
    s32b)  # the BF16 KV cache, second call: its invariance tests (7m, the tiny config; diff --batch against the numpy
      # engine that rounds its cache), then the exact headline with each cache
      gpu_tests kvinv ${INV_SECONDS:-240} tests/test_gpu_invariance.py -k bf16
      HEADLINE_SECONDS=${HEADLINE_SECONDS:-200} kv_sides exact
      ;;
    s32c)  # the whole headlines with a BF16 KV cache (its 1024 slots fit an H100), fast then exact, then the drift
      # part (fast, fp32 and the BF16 KV cache in exact and fast against exact with FP32 KV: identical lines)
      for prec in fast exact; do HEADLINE_KV=bf16 PROFILE_ROWS=1 MAX_SECONDS=${MAX_SECONDS:-200} \
        HEADLINE_SECONDS=${HEADLINE_SECONDS:-230} headline_side 1 $prec "headline-$prec-kvbf16"; done
      timeout ${DRIFT_SECONDS:-150} python bench/getp_throughput.py --preset 20b \
        --skip headline,profile,decode,single,transformers --out "$OUT/drift" > "$OUT/drift.txt" 2>&1
      echo "drift exit $?"; grep -E "precision drift" "$OUT/drift.txt" | cut -c1-1500
      ;;
    s32d)  # attention over a BF16 cache on the tensor cores (a fresh machine): its tests against numpy, attention
      # alone over both caches, the BF16 cache's invariance tests, then the fast headline's first 25 s with it
      gpu_tests kvattn ${TEST_SECONDS:-150} tests/test_gpu_batch_attention.py -k "bf16 or variant"
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      attention_bench 60 --kv-cache fp32,bf16 --layers full --contexts 512 --rows 64,512,1024
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      gpu_tests kvinv ${INV_SECONDS:-220} tests/test_gpu_invariance.py -k bf16
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      KV_SIDES=bf16 HEADLINE_SECONDS=${HEADLINE_SECONDS:-120} kv_sides fast
      ;;
    s32h)  # an H200 (1024 slots), first call: attention alone over both caches, then the whole exact headline
      attention_bench ${ATTENTION_SECONDS:-150} --kv-cache fp32,bf16
      PROFILE_ROWS=1 MAX_SECONDS=${MAX_SECONDS:-200} HEADLINE_SECONDS=${HEADLINE_SECONDS:-400} headline_side 1 exact headline-exact
      ;;
    s33a)  # first call (fresh machine): batch-1 decode in main (.carry/old) and this tree (run 113: with the dense TMA
      # products' weights into L2 before grid_begin, b6d64c1, since reverted), then this tree's tests: the dense TMA
      # products' bits and split-K, the attention kernels (the shared softmax)
      DECODE_SECONDS=${DECODE_SECONDS:-170} decode_sides old new
      gpu_tests wgtma ${TEST_SECONDS:-120} tests/test_gpu_gemm_wgmma.py tests/test_gpu_gemm_wgmma_splitk.py \
        -k "tma_dense_bits or half_blocks_give or splitk or sliced or row_count"
      gpu_tests attn ${TEST_SECONDS:-110} tests/test_gpu_batch_attention.py -k "attention_rows or bit_identical or variant"
      ;;
    s33b)  # second call: where the one-row step's graph time goes, the mma.sync products' tests (copy16_async),
      # attention alone in main (.carry/old) and this tree at 1024 rows, context 512, both caches
      step_ablation
      gpu_tests tc ${TC_SECONDS:-100} tests/test_gpu_gemm_tc.py
      sides attention 150 "python bench/attention.py --rows 1024 --contexts 512 --kv-cache fp32,bf16 \
        --out $OUT/attention-\$SIDE.jsonl" old new
      for side in old new; do grep -vE "^\{" "$OUT/attention-$side.txt" | tail -6; done
      ;;
    s34a)  # branch router-blocks carried as .carry/router (main is this tree): the MoE kernels' and rmsnorm's GPU tests
      # there (the router's parts against one block, the grouping in the router's launch against moe_align's, the
      # combine with the next rmsnorm against the two kernels), batch-1 decode in both trees, where the step's time
      # goes in the branch
      (cd .carry/router && PYTHONPATH=$PWD gpu_tests router ${TEST_SECONDS:-150} tests/test_gpu_batch_moe.py \
        tests/test_gpu_batch_attention.py -k "router or moe_align or combine or rmsnorm")
      DECODE_SECONDS=${DECODE_SECONDS:-170} decode_sides new router
      (cd .carry/router && PYTHONPATH=$PWD step_ablation)
      ;;
    s34c)  # after run 117 (the fused launches slower): the combine's tests (its loads ahead of its stores), the step
      # with each few-row fusion switched off against all on (bench/step_ablation.py --switches, one process), then
      # batch invariance end to end, all in the branch (.carry/router)
      (cd .carry/router && PYTHONPATH=$PWD gpu_tests combine ${TEST_SECONDS:-120} tests/test_gpu_batch_moe.py -k combine)
      off="CUPY_GETP_ROUTER_PARTS=0 CUPY_GETP_ROUTER_GROUPS=0 CUPY_GETP_COMBINE_NORM=0"
      all_off=$(echo $off | tr ' ' '+')
      (cd .carry/router && PYTHONPATH=$PWD timeout ${ABLATION_SECONDS:-200} python bench/step_ablation.py \
        --groups router,moe_align,moe_combine,rmsnorm --switches "$(echo $off | tr ' ' ','),$all_off" \
        > "$OUT/switches.txt" 2>&1; echo "switches exit $?")
      grep -o '"left_out": [^,]*\|"switched": "[^"]*"\|"device_ms_per_step": [0-9.]*\|"its_cost_ms": [-0-9.]*\|"saves_ms": [-0-9.]*' \
        "$OUT/switches.txt" | paste -sd' ' | sed 's/ "left_out"/\n"left_out"/g; s/ "switched"/\n"switched"/g'
      (cd .carry/router && PYTHONPATH=$PWD timeout ${INV_SECONDS:-240} python -m pytest -m gpu -q -rfE \
        tests/test_gpu_invariance.py > "$OUT/inv-tests.log" 2>&1; echo "invariance exit $?")
      grep -E "passed|failed|FAILED|ERROR|differ" "$OUT/inv-tests.log" | tail -12
      ;;
    s34d)  # main with the attention kernels' shared split prologue and epilogue (AttnSplit; the machine code of run
      # 118's branch): attention against numpy at every odd shape, FP32 and BF16 caches with small and large sinks,
      # rows bit-identical among other rows, the kernel variants
      gpu_tests attn ${TEST_SECONDS:-300} tests/test_gpu_batch_attention.py -k "attention_rows or bit_identical or variant"
      ;;
    s35a)  # the router's rows a block: its tests (several rows a block against one), then steps of 640 decode rows
      # at context 512, exact and fast, each timed with the router one row a block and with attention's merge in
      # its launch at every row count, against the default, in one process (bench/step_ablation.py --set)
      gpu_tests router ${TEST_SECONDS:-150} tests/test_gpu_batch_moe.py -k router
      for rows in ${SET_ROWS:-640}; do for precision in ${SET_PRECISIONS:-exact fast}; do set_sides $precision $rows; done; done
      ;;
    s35b)  # after s35a on the same machine: main's attention tests (owed since the twenty-fifth session), the
      # many-row steps at 1024 rows, then batch invariance end to end
      gpu_tests attn ${TEST_SECONDS:-200} tests/test_gpu_batch_attention.py -k "attention_rows or bit_identical or variant"
      for precision in ${SET_PRECISIONS:-exact fast}; do set_sides $precision 1024; done
      invariance_tests
      ;;
    s35c)  # where a step of 640 decode rows at context 512 spends its graph time, exact and fast (bench/step_ablation.py
      # --rows: each group's marginal cost; at many rows unembed_argmax also takes qkv, whose 128-row tiles are its)
      for precision in ${SET_PRECISIONS:-exact fast}; do
        log="$OUT/ablation-$precision-640.txt"
        timeout ${ABLATION_SECONDS:-200} python bench/step_ablation.py --precision $precision --rows 640 --context 512 \
          --groups rmsnorm,rope_kv_write,attention,router,moe_align,moe_combine,out_proj,mlp1,mlp2,unembed_argmax,small,products \
          > "$log" 2>&1; echo "ablation $precision exit $?"
        ablation_lines "$log"
      done
      ;;
    s35d)  # the router's rows of t through shared memory: its tests, then steps of 640 decode rows at context 512 (exact,
      # fast) and the one-row step (exact) timed without the staging, and without it and with a row a block, against
      # the default in one process; then batch invariance end to end
      gpu_tests router ${TEST_SECONDS:-150} tests/test_gpu_batch_moe.py -k router
      for precision in ${SET_PRECISIONS:-exact fast}; do
        SET="moe.ROUTER_STAGING=0,moe.ROUTER_STAGING=0+moe.ROUTER_MAX_ROWS=1" set_sides $precision 640; done
      timeout ${ABLATION_SECONDS:-150} python bench/step_ablation.py --groups router --set moe.ROUTER_STAGING=0 \
        > "$OUT/set-exact-1.txt" 2>&1; echo "set exact 1 exit $?"
      ablation_lines "$OUT/set-exact-1.txt"
      invariance_tests
      ;;
    s36a)  # the merge two dims a lane: the attention tests (the merge's pairs against one dim a lane bit for bit
      # among them), 640-row steps (exact, fast) timed with one dim a lane and with the merge writing the pieces at
      # every row count, against the default, in one process; then where the grouped mlp1's time goes at 640 rows
      # (ncu, routes spread evenly: bench/gemm_tc.py)
      gpu_tests attn ${TEST_SECONDS:-300} tests/test_gpu_batch_attention.py -k "merge or one_launch or attention_rows"
      for precision in ${SET_PRECISIONS:-exact fast}; do
        SET="attention.MERGE_PAIRS=0,attention.MERGE_SPLIT_MAX_ROWS=100000" set_sides $precision 640; done
      timeout ${NCU_SECONDS:-240} ncu --clock-control none -k regex:wg_tma_grouped_swiglu --launch-count 1 --set full -f \
        -o /tmp/mlp1 python bench/gemm_tc.py --grouped-only --rows 640 --repeats 1 > "$OUT/mlp1-640.log" 2>&1
      echo "ncu exit $?"; stalls_report /tmp/mlp1 mlp1-640
      ;;
    s37a)  # the tall wide blocks (grouped mlp1 and mlp2 of many rows in blocks of three consumers): their tests
      # against the two-consumer blocks' bits, then 1024-row steps (exact, fast) timed with them (WG_WIDE_TALL_ON=1)
      # against the default, in one process
      gpu_tests wide ${TEST_SECONDS:-300} tests/test_gpu_gemm_wgmma.py -k "tall_wide or wide_blocks or grouped_tma"
      for precision in ${SET_PRECISIONS:-exact fast}; do
        SET="gemm_tc.WG_WIDE_TALL_ON=${WIDE_TALL:-1}" set_sides $precision ${SET_ROWS:-1024}; done
      ;;
    s37b)  # after s37a on the same machine (an H200: 1024 slots with an FP32 cache): the whole exact headline, then
      # the whole fast one, with the tall wide blocks (CUPY_GETP_WG_WIDE_TALL=${WIDE_TALL:-1})
      for precision in ${HEADLINE_PRECISIONS:-exact fast}; do CUPY_GETP_WG_WIDE_TALL=${WIDE_TALL:-1} PROFILE_ROWS=1 \
        MAX_SECONDS=${MAX_SECONDS:-200} HEADLINE_SECONDS=${HEADLINE_SECONDS:-270} headline_side 1 $precision \
        headline-$precision-wide${WIDE_TALL:-1}; done
      ;;
    s37h)  # an H200, one call (~560 s on a fresh machine): the host's work between steps on this machine's CPU (this
      # tree, and .carry/old's where carried), the tall wide blocks' tests, a 1024-row exact step with them against
      # without (one process), then the whole exact headline with them
      for tree in $([ -d .carry/old ] && echo .carry/old) .; do PYTHONPATH=$tree timeout 60 python \
        bench/scheduler_host.py; done 2>&1 | tee "$OUT/scheduler-host.txt"
      gpu_tests wide ${TEST_SECONDS:-240} tests/test_gpu_gemm_wgmma.py -k "tall_wide or wide_blocks"
      SET_SECONDS=${SET_SECONDS:-150} SET="gemm_tc.WG_WIDE_TALL_ON=1" set_sides exact 1024
      CUPY_GETP_WG_WIDE_TALL=1 PROFILE_ROWS=1 MAX_SECONDS=${MAX_SECONDS:-200} HEADLINE_SECONDS=${HEADLINE_SECONDS:-200} \
        headline_side 1 exact headline-exact-wide1
      ;;
    s38h)  # overlapped steps (CUPY_GETP_OVERLAP=1: each greedy step launched before the last one's tokens are
      # read), after s37h on the same machine (an H200): their tests (the fed embedding; 7m getp lines with stops,
      # 4 slots, without and with), the whole exact headline with them, then the whole fast headline without and
      # with them (the tall wide blocks: CUPY_GETP_WG_WIDE_TALL=${WIDE_TALL:-0})
      gpu_tests overlap ${TEST_SECONDS:-240} tests/test_gpu_batch_attention.py tests/test_gpu_batch_engine.py \
        -k "embedding or stops"
      for side in "exact 1" "fast 0" "fast 1"; do
        read -r precision overlap <<< "$side"
        CUPY_GETP_OVERLAP=$overlap CUPY_GETP_WG_WIDE_TALL=${WIDE_TALL:-0} PROFILE_ROWS=1 MAX_SECONDS=${MAX_SECONDS:-200} \
          HEADLINE_SECONDS=${HEADLINE_SECONDS:-200} headline_side 1 $precision headline-$precision-overlap$overlap
      done
      ;;
    s38x)  # an H200, one call for both opt-in switches: the host's work between steps on this CPU; the overlap
      # tests, then the tall wide blocks' tests; then the whole exact and fast headlines with each switch whose
      # tests passed (CUPY_GETP_OVERLAP, CUPY_GETP_WG_WIDE_TALL)
      switch_tests
      for precision in ${HEADLINE_PRECISIONS:-exact fast}; do
        CUPY_GETP_OVERLAP=$overlap CUPY_GETP_WG_WIDE_TALL=$wide HEADLINE_SKIP=profile,decode,drift,single,transformers \
          MAX_SECONDS=${MAX_SECONDS:-200} HEADLINE_SECONDS=${HEADLINE_SECONDS:-170} headline_side 1 $precision \
          headline-$precision-overlap$overlap-wide$wide
      done
      ;;
    warmbg)  # every kernel family into CuPy's compile cache (bench/warm_cache.py: one process, the warm-up's threads),
      # in the background (warmwait: its end; later parts of the same call, and later calls on the same warm
      # machine, open the families from the cache)
      python bench/warm_cache.py > "$OUT/warm-cache.txt" 2>&1 & warm_pid=$!
      ;;
    warmwait)  # the end of warmbg's builds, and their seconds
      [ -n "${warm_pid:-}" ] && { wait "$warm_pid"; echo "warm cache exit $?"; cat "$OUT/warm-cache.txt"; }
      ;;
    s39a)  # attention with fewer instructions a KV byte (.carry/old: main before, with this tree's bench/attention.py):
      # its GPU tests (ATTN_TESTS: a -k filter; TEST_SECONDS 420; only TEST_FAMILIES built, not the minutes of
      # every family, run 131) and the opt-in TF32 kernel's; bench/attention.py in the trees
      # ATTN_SIDES (old new: the same digests, the same bits) and with CUPY_GETP_ATTN_TF32=1; then (part attnstalls
      # after it) where the new kernel's warps wait
      CUPY_GETP_TEST_FAMILIES=${TEST_FAMILIES:-attention,gemm_tc,softmax,rope,embedding,rmsnorm} \
        gpu_tests attn ${TEST_SECONDS:-420} tests/test_gpu_batch_attention.py \
        -k "${ATTN_TESTS:-attention_rows or copies_by_16 or one_launch or bit_identical or tf32 or nan_in_the_cache}"
      attention_sides ${ATTN_ROWS:-1,64,512,1024} ${ATTN_SIDES:-old new}
      CUPY_GETP_ATTN_TF32=1 sides attention-tf32 150 \
        "python bench/attention.py --rows ${ATTN_ROWS:-1,64,512,1024} --out $OUT/attention-tf32.jsonl" new
      grep -vE "^\{" "$OUT/attention-tf32-new.txt" | tail -18
      [ -f "$OUT/attention-old.jsonl" ] && { echo "old -> new (the CUDA-core kernel):"
        attention_compare "$OUT/attention-old.jsonl" "$OUT/attention-new.jsonl"; }
      echo "new -> TF32:"; attention_compare "$OUT/attention-new.jsonl" "$OUT/attention-tf32.jsonl"
      ;;
    s39h)  # the headline's first MAX_SECONDS (25) in PRECISIONS (exact fast) with attention on the CUDA cores and in
      # TF32 (CUPY_GETP_ATTN_TF32 0 then 1), one process a side
      for precision in ${PRECISIONS:-exact fast}; do
        for tf32 in 0 1; do
          CUPY_GETP_ATTN_TF32=$tf32 HEADLINE_SKIP=profile,decode,drift,single,transformers MAX_SECONDS=${MAX_SECONDS:-25} \
            HEADLINE_SECONDS=${HEADLINE_SECONDS:-150} headline_side 1 $precision headline-$precision-first-tf32$tf32
        done
      done
      ;;
    s39x)  # an H200: the whole headlines in HEADLINE_PRECISIONS (exact fast) as getp runs them now (overlapped steps;
      # CUPY_GETP_ATTN_TF32 as the caller sets it), nothing else
      for precision in ${HEADLINE_PRECISIONS:-exact fast}; do
        HEADLINE_SKIP=profile,decode,drift,single,transformers MAX_SECONDS=${MAX_SECONDS:-200} \
          HEADLINE_SECONDS=${HEADLINE_SECONDS:-330} headline_side 1 $precision headline-$precision
      done
      ;;
    s38t)  # the opt-in switches' tests alone (then s38y's sides: SIDES from what passed)
      switch_tests
      ;;
    s38y)  # after s38x on the same machine (or alone on any GPU): the exact headline's first MAX_SECONDS (25) with
      # neither switch, with overlapped steps, and with both (SIDES: overlap,wide pairs), one process each
      # (after s38t or s38x in the same call: a side whose switch failed its tests is skipped)
      for side in ${SIDES:-0,0 1,0 1,1}; do
        IFS=, read -r side_overlap side_wide <<< "$side"
        if [ "$side_overlap$side_wide" != 00 ] && [ "${overlap:-1}$side_overlap" = 01 -o "${wide:-1}$side_wide" = 01 ]; then
          echo "side $side skipped: its switch failed its tests"; continue
        fi
        CUPY_GETP_OVERLAP=$side_overlap CUPY_GETP_WG_WIDE_TALL=$side_wide \
          HEADLINE_SKIP=profile,decode,drift,single,transformers MAX_SECONDS=${MAX_SECONDS:-25} \
          HEADLINE_SECONDS=${HEADLINE_SECONDS:-120} headline_side 1 ${PRECISION:-exact} \
          headline-${PRECISION:-exact}-first-overlap$side_overlap-wide$side_wide
      done
      ;;
    s35h)  # an H200 with little device time left: the exact headline's first MAX_SECONDS (25) with 1024 slots and an
      # FP32 cache, nothing else
      timeout ${HEADLINE_SECONDS:-250} python bench/getp_throughput.py --preset 20b --precision exact \
        --max-seconds ${MAX_SECONDS:-25} --skip profile,decode,drift,single,transformers --out "$OUT/headline-exact" \
        > "$OUT/headline-exact.txt" 2>&1; echo "headline exact exit $?"
      grep -E "^\| |tok_s" "$OUT/headline-exact.txt" | cut -c1-300 | tail -6
      ;;
    s33h)  # an H200 (1024 slots with an FP32 cache), one call: the whole exact headline, then attention alone
      PROFILE_ROWS=1 MAX_SECONDS=${MAX_SECONDS:-200} HEADLINE_SECONDS=${HEADLINE_SECONDS:-380} headline_side 1 exact headline-exact
      attention_bench ${ATTENTION_SECONDS:-150}
      ;;
    s32i)  # an H200, second call: the whole fast headline, FP32 then BF16 KV cache
      for kv in fp32 bf16; do HEADLINE_KV=$kv PROFILE_ROWS=1 MAX_SECONDS=${MAX_SECONDS:-200} \
        HEADLINE_SECONDS=${HEADLINE_SECONDS:-250} headline_side 1 fast "headline-fast-kv$kv"; done
      ;;
    s31e)  # s31d's two parts the other way round (a machine whose kernels are cached): the fast headline with and
      # without the 128-row sliced kernels, then the split-K tests
      fast_tall_sides
      gpu_tests splitk ${TEST_SECONDS:-240} tests/test_gpu_gemm_wgmma_splitk.py
      ;;
    s29b)  # main (.carry/old) against this tree on one machine: the grouped products alone (bench/gemm_tc.py
      # --grouped-only, routes spread evenly) at ROWS (default 418, 606 and 640: the H100 headline's two waves)
      sides grouped ${GROUPED_SECONDS:-240} "python bench/gemm_tc.py --grouped-only --rows ${ROWS:-418,606,640}" old new
      for side in old new; do echo "($side) path experts tile rows pieces TFLOP/s mlp1 mlp2 slots ms"
        grouped_tflops "$OUT/grouped-$side.txt" | grep "^wg tma"; done
      ;;
    s30a)  # pad rows without expert products and narrowed additions (.carry/old = main before): moe_align's tests,
      # the grouped and dense wgmma bit tests (every tile height against the others and mma.sync's bits), then the
      # exact headline in this tree and main (MAX_SECONDS each)
      gpu_tests moe-align 120 tests/test_gpu_batch_moe.py -k "moe_align"
      gpu_tests wg-bits ${TEST_SECONDS:-200} tests/test_gpu_gemm_wgmma.py -k "grouped_bits or dense_bits_equal or row_count"
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      HEADLINE_SIDES="new old" MAX_SECONDS=${MAX_SECONDS:-25} HEADLINE_SECONDS=${HEADLINE_SECONDS:-150} headline_sides
      ;;
    s30b)  # after s30a on the same machine: the exact headline with pad rows alone (.carry/pads), diff --batch in this
      # tree, then the fast headline in this tree and main
      HEADLINE_SIDES="pads" MAX_SECONDS=${MAX_SECONDS:-25} HEADLINE_SECONDS=${HEADLINE_SECONDS:-150} headline_sides
      batch_diff ${DIFF_SECONDS:-120}
      for side in ${FAST_SIDES:-new old}; do TREE=$(tree_of $side) PROFILE_ROWS=1 MAX_SECONDS=25 HEADLINE_SECONDS=150 \
        headline_side 1 fast "fast-$side"; done
      ;;
    s30c)  # pad rows alone (.carry/pads; .carry/old = main before), when little device time is left: moe_align's
      # tests (this tree's moe.hip is the pads tree's), then the exact headline with pad rows and in main
      gpu_tests moe-align 90 tests/test_gpu_batch_moe.py -k "moe_align"
      HEADLINE_SIDES="pads old" MAX_SECONDS=${MAX_SECONDS:-20} HEADLINE_SECONDS=${HEADLINE_SECONDS:-150} headline_sides
      ;;
    s29c)  # pad rows without expert products (.carry/old = main before): moe_align's tests (pad rows among them),
      # the exact headline in both trees (MAX_SECONDS each, first this tree's), then diff --batch in this tree
      gpu_tests moe-align 120 tests/test_gpu_batch_moe.py -k "moe_align or pipeline or combine"
      HEADLINE_SIDES="new old" MAX_SECONDS=${MAX_SECONDS:-25} HEADLINE_SECONDS=${HEADLINE_SECONDS:-240} headline_sides
      batch_diff ${DIFF_SECONDS:-120}
      ;;
    s28a)  # how the 20b synthetic model's router spreads rows over the experts (bench/routing.py): the busiest quarter's
      # share of the routes and the padded tile rows a route at 64, 96 and 128 rows, against even routes
      timeout ${ROUTING_SECONDS:-280} python bench/routing.py ${ROUTING_ARGS:-} > "$OUT/routing.txt" 2>&1; echo "routing exit $?"
      python -c "import json,sys
for l in open(sys.argv[1]):
    try: r=json.loads(l)
    except Exception: print(l.rstrip()[:200]); continue
    print(*(f'{k}={v}' for k, v in r.items() if k != 'bench'))" "$OUT/routing.txt" | tail -30
      ;;
    s27b)  # the fast headline (30 s) in main before (.carry/old) and this tree, then the invariance and batch MoE tests
      for side in ${HEADLINE_SIDES:-old new}; do TREE=$(tree_of $side) PROFILE_ROWS=1 MAX_SECONDS=30 HEADLINE_SECONDS=150 \
        headline_side 1 fast "fast-$side"; done
      gpu_tests invariance 240 tests/test_gpu_invariance.py tests/test_gpu_batch_moe.py
      ;;
    s25c)  # branch s25 (stage-overlap + wide blocks; .carry/old = main): their bit tests (every wgmma tile against
      # mma.sync's bits and across row counts; the wide blocks against the two-consumer and cp.async kernels), then
      # the one-row products in both trees
      gpu_tests s25-tests 300 tests/test_gpu_gemm_wgmma.py -k "wide or grouped_tma or bits or row_count or half"
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      onerow_sides
      ;;
    s25d)  # branch s25 against main: batch-1 decode in main, in s25, and in s25 without the wide blocks
      decode_sides old new
      CUPY_GETP_WG_WIDE=0 sides decode-nowide 150 "$DECODE" new
      decode_figures decode-nowide-new
      ;;
    s23b)  # the exact headline without and with programmatic dependent launch, this tree
      for pdl in 0 1; do CUPY_GETP_PDL=$pdl TREE=. PROFILE_ROWS=${PROFILE_ROWS:-1} MAX_SECONDS=${MAX_SECONDS:-30} \
        HEADLINE_SECONDS=${HEADLINE_SECONDS:-175} headline_side 1 exact "headline-pdl$pdl"; done
      ;;
    s18m)  # old = main, mid = stack12 only: the one-row products, the MoE entry alone, batch-1 decode
      onerow_sides old mid
      moeentry_sides old mid
      decode_sides old mid
      ;;
    s18d)  # the same three trees: batch-1 decode
      decode_sides old mid new
      ;;
    s18b)  # this tree: the wgmma, MoE and split-K GPU tests (every tile against the oracles and mma.sync's bits)
      timeout 330 python -m pytest -m gpu -q -rfE tests/test_gpu_gemm_wgmma.py tests/test_gpu_batch_moe.py \
        > "$OUT/stack-tests.log" 2>&1; echo "tests exit $?"
      grep -E "passed|failed|FAILED|ERROR" "$OUT/stack-tests.log" | tail -12
      splitk_tests 150
      ;;
    moeentry)  # the MoE block's entry (rmsnorm, router, choice) alone, in a graph, in each side's tree (bench/moe_entry.py:
      # it builds only the rmsnorm and moe kernels, seconds a tree)
      moeentry_sides
      ;;
    rmsstalls)  # where one rmsnorm_split_rows launch of getp's one-row step waits (ncu --set full, its SASS lines)
      timeout 300 ncu --clock-control none --cache-control none --profile-from-start off --graph-profiling node \
        -k regex:rmsnorm_split --launch-count 1 --set full -f -o /tmp/rms python bench/decode.py --presets 20b \
        --steps 16 --precision exact --profile-replay > "$OUT/rms-stalls.log" 2>&1
      echo "ncu exit $?"; stalls_report /tmp/rms rms
      ;;
    stepkernels)  # ncu: each kernel of one batch-1 step's graph replay (20b, exact), one by one (step_kernels)
      step_kernels
      ;;
    s10c)  # the same branch: the rest of the wgmma tests (every tile against the oracles)
      timeout 300 python -m pytest -m gpu -q -rfE tests/test_gpu_gemm_wgmma.py -k "not (bits or row_count)" \
        > "$OUT/stack-tests.log" 2>&1; echo "wgmma tests exit $?"
      grep -E "passed|failed|FAILED|ERROR" "$OUT/stack-tests.log" | tail -12
      ;;
    s10b)  # the same branch, many rows: the grouped products in both trees, then the exact headline in both
      grouped_sides old new
      headline_sides
      ;;
    s8a)  # eighth session, run 1 (run 41): the attention in one launch (its GPU tests; bench/attention.py and
      # batch-1 decode against the tree before it, carried as .carry/old, in the same run)
      timeout 300 python -m pytest -m gpu -q -rfE tests/test_gpu_batch_attention.py > "$OUT/attn-tests.log" 2>&1
      echo "attention tests exit $?"; grep -E "passed|failed|FAILED|ERROR" "$OUT/attn-tests.log" | tail -12
      attention_sides 1,64,512,1024 old new
      for side in old new; do  # batch-1 decode (the attention's merge and the held rmsnorm rows at one row)
        (cd "$(tree_of $side)" && PYTHONPATH=$PWD SIDE=$side timeout 120 python bench/decode.py --presets 20b --steps 128 \
          --precision exact > "$OUT/decode-$side.txt" 2>&1); echo "decode ($side) exit $?"
        tail -2 "$OUT/decode-$side.txt" | cut -c1-600
      done
      ;;
    s8b)  # eighth session, run 2 (run 42, then `mlp1stalls attnncu`): bench/attention.py of both trees, 1024 rows
      attention_sides 64,1024 old new
      ;;
    s8c)  # eighth session, run 3 (run 43): attention's K loads by whole sectors: its GPU tests, then
      # bench/attention.py of both trees, twice
      timeout 240 python -m pytest -m gpu -q -rfE tests/test_gpu_batch_attention.py -k "attention" \
        > "$OUT/attn-tests.log" 2>&1; echo "attention tests exit $?"
      grep -E "passed|failed|FAILED|ERROR" "$OUT/attn-tests.log" | tail -12
      attention_sides 64,1024 old new old new
      ;;
    s8f)  # eighth session, last run (the kernels of the seventh session's last tree): getp's invariance end to end,
      # diff --batch, the exact headline and batch-1 of this tree (on an H200 only: the issue's card; the seventh
      # session's run 40 measured it on an 80 GB card), the split-K tests
      timeout ${INV_SECONDS:-200} python -m pytest -m gpu -q -rfE tests/test_gpu_invariance.py > "$OUT/inv-tests.log" 2>&1
      echo "invariance exit $?"; grep -E "passed|failed|FAILED|ERROR|differ" "$OUT/inv-tests.log" | tail -12
      timeout 90 python -m cupy_getp diff 7m --layers --batch 8 --steps 32 > "$OUT/diff-batch-7m.txt" 2>&1
      echo "diff 7m --batch 8 exit $?"; tail -3 "$OUT/diff-batch-7m.txt"
      tar czf "$FINAL/logs.tgz" -C /tmp gpu-logs
      if on_big_card; then MAX_SECONDS=${MAX_SECONDS:-30} HEADLINE_SECONDS=${HEADLINE_SECONDS:-150} headline_side 1 exact headline; fi
      splitk_tests ${SPLITK_SECONDS:-170}
      ;;
    s7a)  # seventh session, run 1: split-K's sliced mode (the split-K tests), then getp's invariance with split-K on
      splitk_tests 270; rc=$?
      if [ $rc = 0 ]; then
        CUPY_GETP_WG_SPLITK=1 timeout ${INV_SECONDS:-240} python -m pytest -m gpu -q -rfE tests/test_gpu_invariance.py \
          > "$OUT/inv-splitk.log" 2>&1; grep -E "passed|failed|FAILED|ERROR|differ" "$OUT/inv-splitk.log" | tail -12
      fi
      ;;
    s7c)  # seventh session, run 3: the sliced mode with 128-row tiles (the split-K tests), the 1024-row products
      # with split-K on and off (bench/onerow.py --rows 1024), then the exact headline with split-K on and off
      splitk_tests 200; rc=$?
      if [ $rc = 0 ]; then
        onerow_bench --rows 1024 --pieces 3 --launches 24 | grep -vE "mma.sync"
        headline_splitk
      fi
      ;;
    s7d)  # seventh session, last run: the split-K tests (qkv no longer split), then the exact headline on and off
      splitk_tests 200; rc=$?
      [ $rc = 0 ] && headline_splitk
      ;;
    s7e)  # seventh session, last run (little device time left): the exact headline, split-K on and off
      headline_splitk
      ;;
    s7b)  # seventh session, run 2: the exact headline with split-K on and off (s6b), then fast with split-K on
      headline_splitk
      headline_side 1 fast headline-fast
      ;;
    s4rest)  # the GPU tests run 18 did not reach (the batched engine's kernels, spread, experts, attention)
      timeout ${REST_SECONDS:-280} python -m pytest -m gpu -q -rfE --maxfail=30 --durations 10 \
        tests/test_gpu_weight_storage.py tests/test_gpu_batch_attention.py tests/test_gpu_spread.py \
        tests/test_gpu_gemm.py tests/test_gpu_gemm_tc.py tests/test_gpu_mxfp4.py tests/test_gpu_batch_moe.py \
        tests/test_gpu_expert_parallel.py > "$OUT/rest-tests.log" 2>&1
      grep -E "passed|failed|FAILED|ERROR" "$OUT/rest-tests.log" | tail -20
      ;;
    s4b)  # run 20 (f0d37c1, whose absent-row zeroing was reverted): the wgmma bits, the one-row products, then the
      # headline (exact, fast) with the 1- and 1024-row step profiles
      timeout 170 python -m pytest -m gpu -q -rfE --maxfail=10 tests/test_gpu_gemm_wgmma.py > "$OUT/wgmma-tests.log" 2>&1
      grep -E "passed|failed|FAILED|ERROR" "$OUT/wgmma-tests.log" | tail -10
      onerow_bench
      timeout 230 python bench/getp_throughput.py --preset 20b --precision exact,fast --max-seconds 90 \
        --profile-rows 1,1024 --skip drift,single,transformers --out "$OUT/headline" > "$OUT/headline.txt" 2>&1
      echo "headline exit $?"; grep -E "^\| |tok_s|batch1" "$OUT/headline.txt" | cut -c1-300 | tail -14
      ;;
    s4final)  # run 21: after INV_SECONDS=260 ... invtests: the grouped products' bits with one or two feature blocks,
      # batch-1 decode at 20b (the one-slot engine and the batched engine at one row)
      timeout 60 python -m pytest -m gpu -q -rfE tests/test_gpu_gemm_wgmma.py -k "grouped_bits or fill_the_gpu" \
        > "$OUT/wgmma-grouped.log" 2>&1; grep -E "passed|failed|FAILED|ERROR" "$OUT/wgmma-grouped.log" | tail -6
      timeout 90 python bench/decode.py --presets 20b --steps 128 > "$OUT/decode.txt" 2>&1
      echo "decode exit $?"; tail -2 "$OUT/decode.txt" | cut -c1-900
      ;;
    s3a)  # session 3's first run: the engine-level GPU tests (then invariance7m, profile20b)
      timeout 300 python -m pytest -m gpu -q -rfE --maxfail=30 tests/test_gpu_batch_engine.py tests/test_gpu_experts.py \
        tests/test_gpu_engine.py tests/test_gpu_expert_parallel.py tests/test_gpu_spread.py tests/test_gpu_batch_moe.py \
        tests/test_gpu_weight_storage.py 2>&1 | tee "$OUT/engine-tests.log" | grep -E "passed|failed|FAILED|ERROR" | tail -30
      ;;
    profile20b)  # per-kernel time of one eager step at 1/64/512/1024 rows (context 512) and batch-1 decode, exact
      timeout 200 python bench/getp_throughput.py --preset 20b --requests 1024 -n 1024 --precision exact \
        --profile-rows 1,64,512,1024 --skip headline,drift,single,transformers --out "$OUT/profile" \
        > "$OUT/profile.log" 2>&1; echo "profile exit $?"
      python - "$OUT/profile.log" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try: r = json.loads(line)
    except Exception: continue
    if r.get("bench") == "profile":
        k = r["per_kernel_ms"]; attn = sum(v for n, v in k.items() if n.startswith("attn_rows"))
        print("profile rows", r["rows"], "total ms", r["kernel_ms_total"], "attention ms", round(attn, 3),
              {n: v for n, v in list(k.items())[:6]})
    elif r.get("bench") in ("batch1_decode", "setup"): print(r)
PY
      ;;
    tests)
      timeout 240 python -m pytest -m gpu -q -rfE --maxfail=30 tests/test_gpu_batch_moe.py \
        tests/test_gpu_batch_attention.py tests/test_gpu_gemm.py tests/test_gpu_gemm_tc.py tests/test_gpu_weight_storage.py \
        tests/test_gpu_kernels.py 2>&1 | tee "$OUT/kernel-tests.log" | grep -E "passed|failed|FAILED|Error" | tail -40
      timeout 240 python -m pytest -m gpu -q -rfE -s tests/test_gpu_batch_engine.py 2>&1 | tee "$OUT/engine-tests.log" \
        | grep -vE "^\s*$" | tail -40
      ;;
    alltests)
      timeout 420 python -m pytest -m gpu -q -rfE -s 2>&1 | tee "$OUT/gpu-tests.log" \
        | grep -E "passed|failed|FAILED|ERROR|identical|differs" | tail -40
      ;;
    kerneltests)  # the single-sequence kernels (matvec, fused experts, router) that batch-1 decode uses
      timeout 90 python -m pytest -m gpu -q -rfE tests/test_gpu_kernels.py 2>&1 | tee "$OUT/kernel-tests.log" \
        | grep -E "passed|failed|FAILED|ERROR" | tail -20
      ;;
    mxkernels)  # MXFP4 experts: widening, generators, every grouped product vs bf16; the tc kernels; their speed
      timeout 150 python -m pytest -m gpu -v -rfE tests/test_gpu_kernels.py -k "mxfp4 or synthetic" 2>&1 \
        > "$OUT/mx-kernel-tests.log" 2>&1; tail -3 "$OUT/mx-kernel-tests.log"
      timeout 200 python -m pytest -m gpu -q -rfE tests/test_gpu_mxfp4.py tests/test_gpu_gemm_tc.py \
        tests/test_gpu_gemm_wgmma.py > "$OUT/mx-tc-tests.log" 2>&1; grep -E "passed|failed|FAILED|ERROR" "$OUT/mx-tc-tests.log" | tail -12
      timeout 120 python bench/gemm_tc.py --quick --grouped-only --experts bf16,mxfp4 > "$OUT/gemm_tc_mxfp4.txt" 2>&1
      grouped_tflops "$OUT/gemm_tc_mxfp4.txt"
      ;;
    experts)  # issue 16 on the device: widening, every grouped product vs bf16, their speed, engine-level
      # bit identity (7m, 20b cut, 120b shape), the pool-limited auto choice, diff with MXFP4 experts
      timeout 130 python -m pytest -m gpu -v -rfE tests/test_gpu_kernels.py -k "mxfp4 or synthetic" 2>&1 \
        > "$OUT/mx-kernel-tests.log" 2>&1; tail -2 "$OUT/mx-kernel-tests.log"
      timeout 100 python -m pytest -m gpu -q -rfE tests/test_gpu_mxfp4.py > "$OUT/mx-tests.log" 2>&1
      grep -E "passed|failed|FAILED|ERROR" "$OUT/mx-tests.log" | tail -8
      timeout 60 python bench/gemm_tc.py --quick --grouped-only --experts bf16,mxfp4 > "$OUT/gemm_tc_mxfp4.txt" 2>&1
      grouped_tflops "$OUT/gemm_tc_mxfp4.txt"
      timeout 330 python -m pytest -m gpu -v -rfE -s tests/test_gpu_experts.py tests/test_device_memory.py 2>&1 \
        > "$OUT/experts-tests.log" 2>&1; grep -E "PASS|FAIL|ERROR|SKIP|passed|failed|weights|experts:" "$OUT/experts-tests.log" | tail -30
      timeout 60 python -m cupy_getp diff 7m --layers --experts mxfp4 > "$OUT/diff-7m-mxfp4.txt" 2>&1
      echo "diff 7m mxfp4 exit $?"; tail -3 "$OUT/diff-7m-mxfp4.txt"
      timeout 90 python -m cupy_getp diff 7m --layers --batch 8 --experts mxfp4 > "$OUT/diff-batch-7m-mxfp4.txt" 2>&1
      echo "diff --batch 7m mxfp4 exit $?"; tail -3 "$OUT/diff-batch-7m-mxfp4.txt"
      ;;
    expertsbench)  # issue 16's figures: widening and tensor-core bit identity, then headline and batch-1 decode
      # with BF16 and MXFP4 experts (20b, same process) and the 120b with MXFP4, each headline capped
      timeout 150 python -m pytest -m gpu -q -rfE tests/test_gpu_kernels.py::test_mxfp4_widening_equals_numpys_dequantize_bit_for_bit \
        tests/test_gpu_mxfp4.py -k "widening or tensor_core" > "$OUT/mx-tests.log" 2>&1; tail -3 "$OUT/mx-tests.log"
      timeout 230 python bench/getp_throughput.py --preset 20b --experts bf16,mxfp4 --precision exact \
        --max-seconds ${HEADLINE_SECONDS:-50} --skip profile,drift,single,transformers --out "$OUT/experts-20b" 2>&1 \
        | tee "$OUT/experts-20b.txt" | grep -E "^\|" | head -12
      timeout 170 python bench/getp_throughput.py --preset 120b --experts mxfp4 --precision exact \
        --max-seconds ${HEADLINE_SECONDS_120B:-70} --skip profile,drift,single,transformers --out "$OUT/experts-120b" 2>&1 \
        | tee "$OUT/experts-120b.txt" | grep -E "^\|" | head -8
      ;;
    expertsfinal)  # after the faster widening: bit identity (kernels, engines, diff), grouped speed, batch-1 decode;
      # logs straight into $FINAL so a run cut short still returns them
      timeout 150 python -m pytest -m gpu -q -rfE tests/test_gpu_mxfp4.py tests/test_gpu_experts.py \
        > "$FINAL/final-mx-tests.log" 2>&1; tail -3 "$FINAL/final-mx-tests.log"
      timeout 45 python bench/gemm_tc.py --quick --grouped-only --experts bf16,mxfp4 --repeats 10 \
        > "$FINAL/final-gemm_tc_mxfp4.txt" 2>&1
      grouped_tflops "$FINAL/final-gemm_tc_mxfp4.txt"
      timeout 75 python bench/decode.py --presets 20b --experts bf16,mxfp4 --steps 128 > "$FINAL/final-decode.txt" 2>&1
      cut -c1-300 "$FINAL/final-decode.txt"
      timeout 100 python -m pytest -m gpu -q -rfE tests/test_gpu_kernels.py tests/test_gpu_gemm.py \
        > "$FINAL/final-kernel-tests.log" 2>&1; tail -3 "$FINAL/final-kernel-tests.log"
      ;;
    wgtests)  # the wgmma kernels (sm_90a): accuracy, row-count invariance, bit identity with mma.sync
      timeout 240 python -m pytest -m gpu -q -rfE tests/test_gpu_gemm_wgmma.py 2>&1 | tee "$OUT/wg-tests.log" \
        | grep -E "passed|failed|FAILED|ERROR" | tail -30
      ;;
    tctests)  # the tensor-core kernels first, then every other GPU test
      timeout 150 python -m pytest -m gpu -q -rfE tests/test_gpu_gemm_tc.py 2>&1 | tee "$OUT/tc-tests.log" \
        | grep -E "passed|failed|FAILED|ERROR" | tail -30
      ;;
    othertests)  # until DEADLINE seconds into the session (default 350)
      timeout $(( ${DEADLINE:-350} - SECONDS )) python -m pytest -m gpu -q -rfE -s --ignore tests/test_gpu_gemm_tc.py 2>&1 \
        | tee "$OUT/gpu-tests.log" | grep -E "passed|failed|FAILED|ERROR|identical|differs" | tail -40
      ;;
    tcbench)  # the tensor-core kernels alone, and the engine on the quick workload in every precision
      timeout 120 python bench/gemm_tc.py --quick 2>&1 | tee "$OUT/gemm_tc.txt" | tail -12
      timeout 240 python bench/getp_throughput.py --quick --precision exact,fast,fp32 --profile-rows 1,512 \
        --skip single,transformers,drift --out "$OUT/quick" 2>&1 | tee "$OUT/quick.txt" | tail -14
      ;;
    diff)
      timeout 120 python -m cupy_getp diff 7m --layers --batch 8 --steps 32 > "$OUT/diff-batch-7m.txt" 2>&1
      echo "diff 7m exit $?"
      tail -4 "$OUT/diff-batch-7m.txt"
      ;;
    enginetests)
      timeout 300 python -m pytest -m gpu -q -rfE -s tests/test_gpu_batch_engine.py tests/test_gpu_weight_storage.py 2>&1 \
        | tee "$OUT/engine-tests.log" | grep -E "passed|failed|FAILED|Error|identical|differs" | tail -40
      ;;
    diag20b)
      timeout 240 python -m cupy_getp diff 20b --layers --batch 32 --slots 32 --chunk 64 --reference cupy --steps 10 \
        > "$OUT/diff-batch-20b.txt" 2>&1; echo "diff 20b exit $?"
      grep -E "!|differ" "$OUT/diff-batch-20b.txt" | head -12; tail -8 "$OUT/diff-batch-20b.txt"
      ;;
    quick)
      timeout 90 python bench/gemm.py --quick 2>&1 | tee "$OUT/gemm.txt" | tail -25
      timeout 90 python bench/gemm_tc.py --quick 2>&1 | tee "$OUT/gemm_tc.txt" | tail -25
      timeout 200 python bench/getp_throughput.py --quick --skip transformers,single --max-seconds ${QUICK_SECONDS:-60} \
        --out "$OUT/quick" 2>&1 | tee "$OUT/quick.txt" | tail -30
      ;;
    headline)
      python bench/getp_throughput.py --max-seconds 400 --out "$OUT/headline" 2>&1 | tee "$OUT/headline.txt" | tail -40
      ;;
    headline3)  # issue 9's run: exact and fast whole, the CUDA-core path for FP32_SECONDS (partial)
      python bench/getp_throughput.py --precision exact,fast,fp32 --max-seconds 330,330,${FP32_SECONDS:-80} \
        --profile-rows 1,64,256,512 --skip single,transformers --out "$OUT/headline" 2>&1 | tee "$OUT/headline.txt" \
        | tail -60
      ;;
    s6a)  # sixth session, run 1 of 2: split-K on by default, att's pieces written by the merge, the combine with the
      # next rmsnorm: the kernels' bits against the unfused ones, the engine against numpy, diff --batch, then
      # batch-1 decode at 20b (exact) with split-K and without (the fusions in both)
      timeout 270 python -m pytest -m gpu -q -rfE tests/test_gpu_batch_attention.py tests/test_gpu_batch_moe.py \
        tests/test_gpu_gemm_wgmma_splitk.py tests/test_gpu_engine.py tests/test_gpu_gemm_wgmma.py -k "not grouped" \
        > "$OUT/s6-tests.log" 2>&1; echo "tests exit $?"; grep -E "passed|failed|FAILED|ERROR" "$OUT/s6-tests.log" | tail -12
      timeout 60 python -m cupy_getp diff 7m --layers --batch 8 --steps 32 > "$OUT/diff-batch-7m.txt" 2>&1
      echo "diff 7m --batch 8 exit $?"; tail -3 "$OUT/diff-batch-7m.txt"
      for s in 1 0; do
        CUPY_GETP_WG_SPLITK=$s timeout $([ $s = 1 ] && echo 170 || echo 100) python bench/decode.py --presets 20b \
          --steps 128 --precision exact > "$OUT/decode-splitk$s.txt" 2>&1; echo "CUPY_GETP_WG_SPLITK=$s decode exit $?"
        bench_records "$OUT/decode-splitk$s.txt" batch1_batched \
          '{k: v for k, v in r.items() if "tok_s" in k or "ms_per_step" in k or k == "launches_per_step"}'
      done
      ;;
    s6b)  # sixth session: the headline in exact (60 s) with the 1- and 1024-row step profiles, split-K on and off
      headline_splitk
      ;;
    s6final)  # sixth session, on the final tree (split-K opt-in, the merge writing att's pieces): attention and the
      # engine against numpy, then getp's batch invariance end to end. (Runs 33-34 measured a combine + next rmsnorm
      # kernel, commit 61595c7's part s6c: slower at one row, removed.)
      timeout 200 python -m pytest -m gpu -q -rfE tests/test_gpu_batch_attention.py tests/test_gpu_engine.py \
        > "$OUT/s6final-tests.log" 2>&1; echo "tests exit $?"; grep -E "passed|failed|FAILED|ERROR" "$OUT/s6final-tests.log" | tail -8
      timeout ${INV_SECONDS:-160} python -m pytest -m gpu -q -rfE tests/test_gpu_invariance.py > "$OUT/inv-tests.log" 2>&1
      echo "invariance exit $?"; grep -E "passed|failed|FAILED|ERROR|differ" "$OUT/inv-tests.log" | tail -12
      ;;
    s5tma)  # the TMA products by default (run 25): the headline in exact (60 s) with the 1- and 1024-row step profiles
      # and batch-1 decode, with them and without (CUPY_GETP_WG_TMA=0), in one run
      # (the first compiles every kernel on a fresh machine: ~125 s of warm-up; run 25's 170 s were too few)
      python -c "from cupy_getp.gpu.launch.tensor_map import wg_tma_enabled as e; print('TMA by default:', e())"
      for tma in 1 0; do
        CUPY_GETP_WG_TMA=$tma timeout $([ $tma = 1 ] && echo 270 || echo 170) python bench/getp_throughput.py --preset 20b --precision exact \
          --max-seconds 60 --profile-rows 1,1024 --skip drift,single,transformers --out "$OUT/headline-tma$tma" \
          > "$OUT/headline-tma$tma.txt" 2>&1
        echo "CUPY_GETP_WG_TMA=$tma exit $?"; grep -E "^\| |tok_s|batch1" "$OUT/headline-tma$tma.txt" | cut -c1-300 | tail -9
      done
      ;;
    nccl)  # CuPy's NCCL, or the one torch ships (put on LD_LIBRARY_PATH for this session's processes)
      nccl_path
      python -c "from cupy.cuda import nccl; import cupy; print('nccl', nccl.get_version(), 'gpus',
        cupy.cuda.runtime.getDeviceCount())" 2>&1 | tail -2
      ;;
    multitests)  # issue 19 on two GPUs: the 2-GPU tests, expert parallelism in one process, --gpus on one device
      nccl_path
      timeout ${MULTI_SECONDS:-300} python -m pytest -m gpu -q -rfE tests/test_gpu_multi_gpu.py \
        tests/test_gpu_expert_parallel.py tests/test_gpu_spread.py 2>&1 | tee "$OUT/multi-tests.log" \
        | grep -E "passed|failed|FAILED|ERROR|skipped" | tail -30
      ;;
    eplogits120b)  # 120b: BF16 experts split over 2 GPUs (NCCL) against one GPU's MXFP4 run, logits bit for bit
      nccl_path
      timeout 280 python -m cupy_getp.gpu.ep_check 120b --gpus 0,1 --experts bf16 --one-gpu-experts mxfp4 \
        --rows 8 --steps 3 > "$OUT/ep-logits-120b.json" 2> "$OUT/ep-logits-120b.err"; echo "ep_check 120b exit $?"
      cut -c1-1500 "$OUT/ep-logits-120b.json"; tail -3 "$OUT/ep-logits-120b.err"
      ;;
    dpbench)  # 20b headline on one GPU, then a replica on each of 2 (DP_REQUESTS requests, -n DP_STEPS; DP_SHARE=1: and
      # one GPU on half the requests, what each of the two runs at once)
      nccl_path
      python bench/multi_gpu.py dp --requests ${DP_REQUESTS:-1024} -n ${DP_STEPS:-1024} --timeout 250 ${DP_SHARE:+--share} \
        --out "$OUT/multi" 2>&1 | tee "$OUT/dp.txt" | tail -3 | cut -c1-1500
      ;;
    epbench)  # 120b: one GPU with MXFP4 experts, then BF16 experts over 2 GPUs (EP_REQUESTS requests, -n EP_STEPS)
      nccl_path
      python bench/multi_gpu.py ep --requests ${EP_REQUESTS:-256} -n ${EP_STEPS:-256} --timeout 250 \
        --out "$OUT/multi" 2>&1 | tee "$OUT/ep.txt" | tail -3 | cut -c1-1500
      ;;
    transformers)  # with the precision drift (both short)
      python bench/getp_throughput.py --skip headline,profile,decode,single --out "$OUT/transformers" 2>&1 \
        | tee "$OUT/transformers.txt" | tail -8
      ;;
    diff32)  # every row, layer by layer, with steps of up to 96 rows: the tensor-core path (exact)
      timeout 150 python -m cupy_getp diff 7m --layers --batch 32 --slots 32 --chunk 64 --steps 16 \
        > "$OUT/diff-batch-7m-32.txt" 2>&1; echo "diff 7m --batch 32 exit $?"
      tail -4 "$OUT/diff-batch-7m-32.txt"
      ;;
    difffast)  # how far fast drifts, layer by layer, from the single-sequence engine (exit 1 expected)
      timeout 200 python -m cupy_getp diff 20b --layers --batch 32 --slots 32 --chunk 64 --reference cupy --steps 4 \
        --precision fast > "$OUT/diff-batch-20b-fast.txt" 2>&1; echo "diff 20b fast exit $?"
      tail -6 "$OUT/diff-batch-20b-fast.txt"
      ;;
    servetests)  # the server's gpu tests (batched 7m suite, 20b smoke); needs the wheels of /work/wheels-serve as .whl-serve
      serve_wheels && timeout 540 python -m pytest -m gpu -q -rfE tests/test_serve.py 2>&1 | tee "$OUT/serve-tests.log" \
        | grep -E "passed|failed|FAILED|ERROR" | tail -30
      ;;
    serveload)  # issue 17's targets: 20b, all at once, then a rate keeping ~256 running (SERVE_N requests, -n SERVE_N)
      serve_wheels && for rate in inf ${SERVE_RATE:-40}; do
        timeout 900 python bench/serve_load.py --requests ${SERVE_N:-1024} -n ${SERVE_N:-1024} --rate $rate \
          --json "$OUT/serve-load-$rate.json" 2>&1 | tee "$OUT/serve-load-$rate.txt" | tail -8
      done
      ;;
  esac
done
