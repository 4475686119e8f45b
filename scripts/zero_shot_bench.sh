#!/usr/bin/env bash
# The zero-shot run of BENCHMARKS.md, end to end and resumable:
#   1. the demo's synthetic cohort (4,000 patients, seed 7) and its samples, as `ckd bench` makes them;
#   2. `ckd teacher zero-shot --scoring yes-no` on its train, val and test splits with the real
#      Qwen2.5-Coder-0.5B-Instruct GGUF (fetched by scripts/fetch_qwen.sh; about 11 s a visit on
#      2 cores without AVX-512, 1,168 visits). Each visit's raw scores are appended to
#      runs/zs/yes-no-SPLIT.jsonl.scores.jsonl as it finishes, so a stopped run resumes there;
#      raw scores kept in results/zero-shot/ are copied in first when runs/zs has none;
#   3. `ckd bench --config examples/pipeline-zero-shot.toml` (resumable stage by stage).
# Usage: scripts/zero_shot_bench.sh [--scores-only]   (CKD=path/to/ckd to use another binary)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ckd-ehr/target}"
gguf="${CKD_QWEN_GGUF:-${CKD_MODELS_DIR:-$HOME/.cache/ckd-ehr/models}/qwen2.5-coder-0.5b-instruct.gguf}"
if [ ! -f "$gguf" ]; then
  echo "zero_shot_bench: no GGUF at $gguf; run scripts/fetch_qwen.sh first" >&2
  exit 1
fi
if [ -z "${CKD:-}" ]; then
  cargo build --release -p ckd-trainer --bin ckd
  CKD="$CARGO_TARGET_DIR/release/ckd"
fi
mkdir -p runs/zs
[ -f runs/cohort/ADMISSIONS.csv ] || "$CKD" synth --patients 4000 --seed 7 --out runs/cohort
[ -f runs/samples/samples.bin ] || "$CKD" ingest --mimic runs/cohort --out runs/samples
for split in val test train; do
  scores="runs/zs/yes-no-$split.jsonl.scores.jsonl"
  kept="results/zero-shot/yes-no-$split.jsonl.scores.jsonl"
  if [ ! -s "$scores" ] && [ -s "$kept" ]; then
    cp "$kept" "$scores"
  fi
  echo "== zero-shot, $split split ($(date +%T))" >&2
  "$CKD" teacher zero-shot --base "$gguf" --data runs/samples/samples.bin --split "$split" \
    --scoring yes-no --out "runs/zs/yes-no-$split.jsonl"
done
[ "${1:-}" = "--scores-only" ] && exit 0
echo "== ckd bench ($(date +%T))" >&2
"$CKD" bench --config examples/pipeline-zero-shot.toml
