#!/usr/bin/env bash
# Side-by-side latency of one bundle in tract (through ckd-edge's Engine) and in onnxruntime
# (the Python package from PyPI), batch 1, sequence lengths 128/256/512 (issue 7).
#
#   scripts/compare_onnxruntime.sh --bundle DIR [--blocks 3] [--runs 7] [--warmup 5] [--seq 128,256,512]
#                                  [--kernels auto]
#
# --kernels: comma-separated values of CKD_EDGE_INT8_KERNEL for the tract side, each run in every
# block (`auto`: the best this CPU has; `avx512-vnni`, `avx2`: that fused int8 kernel; `tract`:
# tract's own int8 path). A kernel this CPU lacks makes the engine refuse to open.
#
# Interleaved: each of --blocks rounds runs the tract binary (all lengths, --runs each) and then
# onnxruntime (1 and 2 intra-op threads, all lengths, --runs each), so load from other processes
# hits both alike; a cell's figure is the median of its blocks x runs timings, each process first
# running --warmup untimed predictions per length (on this 2-core VM the first few 2-thread runs
# are up to 1.5x slower). tract runs on 1
# and 2 threads (edge_latency built with the `threads` feature). The tract side times
# Engine::predict_text (tokenization + plan + thresholds; the tokenization alone is printed too);
# onnxruntime times session.run on the same token ids. Needs a bundle whose maximum length covers
# the longest --seq (MiniLM: `edge_latency minilm-bundle`); builds the `edge_latency` bin in release
# unless EDGE_LATENCY names a binary.
# onnxruntime comes from the venv scripts/ort_ci.sh sets up (${CKD_VENV:-~/.cache/ckd-ehr/venv}).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ckd-ehr/target}"
venv="${CKD_VENV:-$HOME/.cache/ckd-ehr/venv}"

bundle="" blocks=3 runs=7 warmup=5 seq="128,256,512" kernels="auto"
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) bundle="$2"; shift 2 ;;
    --blocks) blocks="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --seq) seq="$2"; shift 2 ;;
    --kernels) kernels="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$bundle" ] || { echo "usage: $0 --bundle DIR [--blocks N] [--runs N] [--warmup N] [--seq 128,256,512]" >&2; exit 2; }
[ -x "$venv/bin/python" ] || { echo "no venv at $venv: run scripts/ort_ci.sh once" >&2; exit 1; }

# EDGE_LATENCY=path/to/edge_latency uses an existing build (say which profile when reporting).
bin="${EDGE_LATENCY:-}"
if [ -z "$bin" ]; then
  cargo build --quiet --release -p ckd-benches --features threads --bin edge_latency >&2
  bin="$CARGO_TARGET_DIR/release/edge_latency"
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/ckd-compare.XXXXXX")"
trap 'rm -rf "$work"' EXIT

for b in $(seq 1 "$blocks"); do
  for kern in ${kernels//,/ }; do
    echo "block $b/$blocks: tract, int8 kernel $kern" >&2
    CKD_EDGE_INT8_KERNEL="$kern" "$bin" time --bundle "$bundle" --seq "$seq" --runs "$runs" --warmup "$warmup" --ids-out "$work/ids.json" > "$work/tract.$kern.$b.json"
    CKD_EDGE_INT8_KERNEL="$kern" "$bin" time --bundle "$bundle" --seq "$seq" --runs "$runs" --warmup "$warmup" --threads 2 > "$work/tract2.$kern.$b.json"
  done
  echo "block $b/$blocks: onnxruntime" >&2
  "$venv/bin/python" scripts/ort_bench.py "$bundle" "$work/ids.json" --runs "$runs" --warmup "$warmup" > "$work/ort.$b.json"
done

"$venv/bin/python" - "$work" "$blocks" "$bundle" "$kernels" <<'PY'
import json, sys, statistics
from pathlib import Path
work, blocks, bundle, kernels = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4].split(",")
cells, tok, tokens, names = {}, {}, {}, {}
for b in range(1, blocks + 1):
    for kern in kernels:
        t = json.loads((work / f"tract.{kern}.{b}.json").read_text())
        names["tract"] = t["runtime"]
        for r in t["results"]:
            cells.setdefault((kern, 1, r["seq"]), []).extend(r["runs_ms"])
        for r in json.loads((work / f"tract2.{kern}.{b}.json").read_text())["results"]:
            cells.setdefault((kern, 2, r["seq"]), []).extend(r["runs_ms"])
            tok.setdefault(r["seq"], []).append(r["tokenize_ms"])
            tokens[r["seq"]] = r["tokens"]
    o = json.loads((work / f"ort.{b}.json").read_text())
    names["ort"] = o["runtime"]
    for r in o["results"]:
        cells.setdefault(("ort", r["threads"], r["seq"]), []).extend(r["runs_ms"])
med = lambda k: statistics.median(cells[k]) if k in cells else float("nan")
n = len(next(iter(cells.values())))
print(f"bundle {bundle} ({t['precision']}), batch 1, median of {n} runs ({blocks} interleaved blocks), ms")
print(f"runtimes: {names['tract']} (Engine::predict_text), {names['ort']} (session.run)")
print()
print("| seq (tokens) | int8 kernel (CKD_EDGE_INT8_KERNEL) | tract 1 thread | tract 2 threads | of which tokenize | onnxruntime 1 thread | onnxruntime 2 threads | tract / ort (1 thread) | tract / ort (2 threads) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for s in sorted(tokens):
    for kern in kernels:
        tr, tr2, o1, o2 = med((kern, 1, s)), med((kern, 2, s)), med(("ort", 1, s)), med(("ort", 2, s))
        print(f"| {s} ({tokens[s]}) | {kern} | {tr:.1f} | {tr2:.1f} | {statistics.median(tok[s]):.2f} | {o1:.1f} | {o2:.1f} | {tr / o1:.2f} | {tr2 / o2:.2f} |")
PY
