#!/usr/bin/env bash
# The CPU teacher beside llama.cpp (issue 31), on the same GGUF and the same token ids of the
# first N training prompts of the demo cohort (4,000 synthetic patients, seed 7): prefill only,
# the last-token state, one prompt per pass from an empty cache, at 1 and 2 threads. Rounds are
# interleaved (ours, llama.cpp, ours, ...), each in a fresh process; prints prompt tokens/s
# (median over rounds), the ratio, each side's peak RSS, and the cosine between the two sides'
# last-token states (prompt by prompt: min and median).
#
# llama.cpp is PyPI's `llama-cpp-python` (pinned below), built from source once with native CPU
# flags (about 15-20 minutes on 2 cores) into a venv at ${CKD_LLAMA_VENV:-~/.cache/ckd-ehr/venv-llama}.
# Ours is the `teacher_speed` example (release) with the weights laid out as WAY (default `tiles`:
# the GGUF's quantized weights on candle's VNNI tiles; `native`, `f32` to compare).
#
# usage: scripts/bench_teacher_cpu.sh [N=64] [ROUNDS=3] [WAY=tiles]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ckd-ehr/target}"
n="${1:-64}"; rounds="${2:-3}"; way="${3:-tiles}"
LLAMA_VERSION=0.3.36
NUMPY_VERSION=2.4.6
venv="${CKD_LLAMA_VENV:-$HOME/.cache/ckd-ehr/venv-llama}"
gguf="${CKD_QWEN_GGUF:-${CKD_MODELS_DIR:-$HOME/.cache/ckd-ehr/models}/qwen2.5-coder-0.5b-instruct.gguf}"
work="${CKD_BENCH_DIR:-$HOME/.cache/ckd-ehr/bench-teacher}"
log() { echo "bench_teacher_cpu: $*" >&2; }

[ -f "$gguf" ] || { log "no GGUF at $gguf: run scripts/fetch_qwen.sh first"; exit 2; }
if ! "$venv/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_VERSION')" 2>/dev/null; then
  log "building llama-cpp-python $LLAMA_VERSION from source into $venv (native flags; 15-20 min on 2 cores)"
  python3 -m venv "$venv"
  CMAKE_ARGS="-DGGML_NATIVE=ON" "$venv/bin/pip" install -q "llama-cpp-python==$LLAMA_VERSION" "numpy==$NUMPY_VERSION"
fi
log "building the release binaries"
cargo build -q --release --workspace --bin ckd --example teacher_speed
bin="$CARGO_TARGET_DIR/release"
mkdir -p "$work"
if [ ! -f "$work/data/samples.bin" ]; then
  log "writing the demo cohort (4,000 patients, seed 7) into $work"
  rm -rf "$work/cohort" "$work/data"
  "$bin/ckd" synth --patients 4000 --seed 7 --out "$work/cohort" >&2
  "$bin/ckd" ingest --mimic "$work/cohort" --out "$work/data" >&2
fi
results="$work/results.jsonl"
: > "$results"
for r in $(seq 1 "$rounds"); do
  for t in 1 2; do
    log "round $r/$rounds, $t thread(s)"
    RAYON_NUM_THREADS=$t "$bin/examples/teacher_speed" "$gguf" "$work/data/samples.bin" "$n" 1 "$way" "$work/ours-$t" >> "$results"
    "$venv/bin/python" scripts/bench_teacher_cpu.py "$gguf" "$work/ours-$t.ids.json" "$t" 1 "$work/llama-$t.f32" >> "$results"
  done
done
"$venv/bin/python" - "$results" "$work" "$way" <<'PY'
import json, sys
import numpy as np
rows = [json.loads(l) for l in open(sys.argv[1])]
work, way = sys.argv[2], sys.argv[3]
print(f"| threads | ours ({way}) tokens/s | llama.cpp tokens/s | ratio | ours peak RSS MB | llama.cpp peak RSS MB | state cosine min / median |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for t in (1, 2):
    ours = [r for r in rows if r["side"] == "ckd" and r["threads"] == t]
    ll = [r for r in rows if r["side"] == "llama.cpp" and r["threads"] == t]
    med = lambda xs: float(np.median([x["tokens_per_s"] for x in xs]))
    a = np.fromfile(f"{work}/ours-{t}.{way}.f32", np.float32).reshape(ours[0]["prompts"], -1)
    b = np.fromfile(f"{work}/llama-{t}.f32", np.float32).reshape(a.shape[0], -1)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    print(f"| {t} | {med(ours):.1f} | {med(ll):.1f} | {med(ours) / med(ll):.2f} | "
          f"{max(x['peak_rss_mb'] for x in ours):.0f} | {max(x['peak_rss_mb'] for x in ll):.0f} | "
          f"{cos.min():.4f} / {np.median(cos):.4f} |")
print(f"\n{ours[0]['prompts']} prompts, {ours[0]['tokens']} tokens; kernel: {ours[0]['kernel']}; "
      f"llama-cpp-python {ll[0]['version']}; rounds per cell: {len(ours)}")
PY
