#!/usr/bin/env bash
# Soak test (issue 17): the bedside monitor over a pseudo-terminal, then the C library from 4
# threads, one request in ten corrupt; no request lost or answered twice, every corrupt one
# answered with an error, resident memory growth under 2 MiB after warm-up, latency percentiles
# printed. The checks are in the two drivers:
#   firmware-examples/bedside-monitor/examples/soak.rs   (pty: random bytes, truncated frames,
#                                                         bad CRC, oversize frames)
#   firmware-examples/c-demo/soak.c                      (C API: invalid UTF-8, cut characters,
#                                                         blank text, short buffer, NULL)
#
# Usage: scripts/soak.sh [--short] [--bundle DIR]
#   full (default): 100,000 frames over the pty; 4 threads x 100,000 calls of the C library.
#   --short (CI):    10,000 frames;               4 threads x 10,000 calls.
#   --bundle:        the bundle served (default: the tiny test bundle edge-runtime/testdata/tiny).
# Bounded: each driver has a wall-clock limit (and runs under `timeout`), and every answer must
# come within 30 s. Exit status 0 when every check passed.
#
# Build: the dev profile (dependencies at opt-level 3, this workspace's crates at 1), and the whole
# workspace's libraries, binaries and examples in one command, so that features resolve as in
# `cargo test --workspace --all-targets` and, after `scripts/test`, nothing is rebuilt (a build of
# only the two packages resolves some dependencies' features differently and rebuilds them).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ckd-ehr/target}"

mode=full
bundle=edge-runtime/testdata/tiny/bundle
while (($#)); do
  case "$1" in
    --short) mode=short ;;
    --bundle) bundle="$2"; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "soak: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$mode" = short ]; then
  pty_requests=10000 c_requests=10000 limit=300
else
  pty_requests=100000 c_requests=100000 limit=3600
fi

start=$(date +%s)
# The monitor, the pty driver (an example) and the C library (libckd_edge_c.a), see "Build" above.
cargo build -q --workspace --lib --bins --examples
dir="$CARGO_TARGET_DIR/debug"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -std=c11 -O2 -Wall -Wextra -Werror -pthread -I edge-runtime/capi/include firmware-examples/c-demo/soak.c \
  "$dir/libckd_edge_c.a" -lpthread -ldl -lm -Wl,-z,noexecstack -o "$work/soak-c"
echo "soak: $mode form, bundle $bundle, built in $(( $(date +%s) - start )) s"

status=0
timeout --kill-after=10 "$limit" "$dir/examples/soak" --monitor "$dir/bedside-monitor" --bundle "$bundle" \
  --requests "$pty_requests" --max-secs "$((limit - 10))" || status=1
timeout --kill-after=10 "$limit" "$work/soak-c" "$bundle" "$c_requests" 4 || status=1
echo "soak: $mode form $([ $status = 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - start )) s"
exit $status
