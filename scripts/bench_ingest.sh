#!/usr/bin/env bash
# Wall time and peak memory of `ckd ingest` on a MIMIC-III-sized synthetic cohort
# (46,520 patients). Prints the median of 3 runs. Needs /usr/bin/time (Debian package `time`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ckd-ehr/target}"
patients="${1:-46520}"
cargo build --release -p ckd-trainer --bin ckd
ckd="$CARGO_TARGET_DIR/release/ckd"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
/usr/bin/time -f "synth: %e s wall, %M KiB peak RSS" "$ckd" synth --patients "$patients" --seed 7 --out "$work/cohort"
for i in 1 2 3; do
  /usr/bin/time -f "%e %M" -o "$work/t$i" "$ckd" ingest --mimic "$work/cohort" --out "$work/out" 2>/dev/null
  cat "$work/t$i"
done | sort -n | awk '{w[NR]=$1; m[NR]=$2} END {printf "ingest (median of %d): %.2f s wall, %.0f MiB peak RSS\n", NR, w[2], m[2]/1024}'
