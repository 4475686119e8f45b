#!/usr/bin/env bash
# Edge runtime footprint: peak RSS (GNU time's "Maximum resident set size") of the release
# `ckd-edge` CLI predicting on MiniLM-L6-size bundles (int8 with int8 word embeddings, int8,
# f32; random weights, max_len 512; see `ckd_benches::write_minilm_bundles`), and the stripped
# size of the CLI and of the C
# library (libckd_edge_c.so). Latency is the criterion bench: cargo bench -p ckd-benches --bench edge.
#
# Usage: scripts/bench_edge.sh [WORK_DIR]   (default: a temporary directory)
# CKD_MINILM_DIR (scripts/fetch_models.sh) gives the real MiniLM tokenizer; without it a
# small WordPiece is used (a smaller tokenizer.json, so a slightly lower RSS).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ckd-ehr/target}"
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
[ -x /usr/bin/time ] || { echo "bench_edge: needs GNU time (/usr/bin/time, Debian package time)" >&2; exit 1; }

cargo build --release -p ckd-edge-c
[ -d "$work/bundles/int8-emb" ] || cargo run -q --release -p ckd-benches --bin minilm_bundle -- "$work/bundles" 512
cli="$CARGO_TARGET_DIR/release/ckd-edge"

# Inputs: one row of 512 tokens (a fixture row's text repeated, truncated by the bundle's
# max_len: the largest input), one short row (the first 80 words of a fixture row, about 128
# tokens) and the 24 CKD-EHR rows of the tiny fixture (about 100-200 words each).
python3 -c 'import json, sys; r = json.loads(open(sys.argv[1]).readline()); r["input"] = " ".join([r["input"]] * 6); print(json.dumps(r))' \
  edge-runtime/testdata/tiny/rows.jsonl >"$work/one.jsonl"
python3 -c 'import json, sys; r = json.loads(open(sys.argv[1]).readline()); r["input"] = " ".join(r["input"].split()[:80]); print(json.dumps(r))' \
  edge-runtime/testdata/tiny/rows.jsonl >"$work/short.jsonl"
cp edge-runtime/testdata/tiny/rows.jsonl "$work/all.jsonl"

echo "| bundle | model.onnx + model.onnx.data MB | input | peak RSS MB |"
echo "| --- | --- | --- | --- |"
for p in int8-emb int8 f32; do
  mb=$(awk -v a="$(stat -c %s "$work/bundles/$p/model.onnx")" -v b="$(stat -c %s "$work/bundles/$p/model.onnx.data")" 'BEGIN { printf "%.1f", (a + b) / 1e6 }')
  for input in short one all; do
    /usr/bin/time -v "$cli" predict --bundle "$work/bundles/$p" --input "$work/$input.jsonl" \
      >"$work/out-$p-$input.jsonl" 2>"$work/time-$p-$input.txt"
    kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/time-$p-$input.txt")
    tokens=$(head -n 1 "$work/out-$p-$input.jsonl" | python3 -c 'import json, sys; print(json.load(sys.stdin)["tokens"])')
    echo "| $p | $mb | $(wc -l <"$work/$input.jsonl") row(s), first $tokens tokens | $(awk -v k="$kb" 'BEGIN { printf "%.1f", k / 1024 }') |"
  done
done
for p in int8-emb int8; do
  /usr/bin/time -v "$cli" info --bundle "$work/bundles/$p" >/dev/null 2>"$work/time-info.txt"
  echo "| $p | | open only (info) | $(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$work/time-info.txt") |"
done

echo
echo "| artifact (release, x86_64) | size MB | stripped MB |"
echo "| --- | --- | --- |"
for f in ckd-edge libckd_edge_c.so libckd_edge_c.a; do
  src="$CARGO_TARGET_DIR/release/$f"
  cp "$src" "$work/$f.stripped"
  strip "$work/$f.stripped" 2>/dev/null || strip --strip-debug "$work/$f.stripped"
  printf '| %s | %.2f | %.2f |\n' "$f" "$(awk -v b="$(stat -c %s "$src")" 'BEGIN { print b / 1e6 }')" \
    "$(awk -v b="$(stat -c %s "$work/$f.stripped")" 'BEGIN { print b / 1e6 }')"
done
