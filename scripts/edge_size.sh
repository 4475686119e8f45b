#!/usr/bin/env bash
# What a device maker ships, and how big it is: the `ckd-edge` CLI, `libckd_edge_c.so`, and the C
# demo (firmware-examples/c-demo/main.c) linked statically against `libckd_edge_c.a`, built with
# the `edge` profile of the root Cargo.toml (`cargo build --profile edge -p ckd-edge-c`), then
# stripped. Prints a table of bytes per artifact.
#
# Usage: scripts/edge_size.sh [--check] [--target TRIPLE] [--profile NAME]
#   --check           fail (exit 1) when a stripped x86_64 artifact is larger than its limit in
#                     edge-runtime/capi/size-limits.txt (bytes; the size reached plus 10%)
#   --target TRIPLE   cross-build (e.g. aarch64-unknown-linux-gnu; needs the linker that
#                     scripts/ci_arm.sh installs); its artifacts go to $CARGO_TARGET_DIR/arm
#   --profile NAME    another cargo profile, for comparison (default: edge)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ckd-ehr/target}"
check=0 target="" profile=edge
while [ $# -gt 0 ]; do
  case "$1" in
    --check) check=1 ;;
    --target) target="$2"; shift ;;
    --profile) profile="$2"; shift ;;
    *) echo "edge_size: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

target_dir="$CARGO_TARGET_DIR" cc=cc strip=strip
args=(build -q --profile "$profile" -p ckd-edge-c)
if [ -n "$target" ]; then
  target_dir="$CARGO_TARGET_DIR/arm"
  case "$target" in
    aarch64-unknown-linux-gnu) cc=aarch64-linux-gnu-gcc; strip=aarch64-linux-gnu-strip ;;
    armv7-unknown-linux-gnueabihf) cc=arm-linux-gnueabihf-gcc; strip=arm-linux-gnueabihf-strip ;;
    *) echo "edge_size: no C toolchain known for $target" >&2; exit 2 ;;
  esac
  triple_env=$(echo "$target" | tr 'a-z-' 'A-Z_')
  export "CARGO_TARGET_${triple_env}_LINKER=$cc" "CC_$(echo "$target" | tr '-' '_')=$cc"
  args+=(--target "$target")
fi
CARGO_TARGET_DIR="$target_dir" cargo "${args[@]}"
# cargo's directory for a profile: `dev` builds go to debug/, every other profile to its name.
dir_name="$profile"
[ "$profile" = dev ] && dir_name=debug
out="$target_dir/${target:+$target/}$dir_name"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$cc" -std=c99 -Os -I edge-runtime/capi/include firmware-examples/c-demo/main.c "$out/libckd_edge_c.a" \
  -lpthread -ldl -lm -o "$work/c-demo.built"
cp "$work/c-demo.built" "$work/c-demo"
cp "$out/ckd-edge" "$work/ckd-edge"
cp "$out/libckd_edge_c.so" "$work/libckd_edge_c.so"
"$strip" "$work/ckd-edge" "$work/c-demo"
# The library keeps its dynamic symbol table (the C ABI); only debug and local symbols go.
"$strip" --strip-unneeded "$work/libckd_edge_c.so"

limits=edge-runtime/capi/size-limits.txt
status=0
echo "| artifact (${target:-$(uname -m)}, profile $profile) | built bytes | stripped bytes | stripped MB |"
echo "| --- | --- | --- | --- |"
for a in ckd-edge libckd_edge_c.so c-demo; do
  built=$([ "$a" = c-demo ] && stat -c %s "$work/c-demo.built" || stat -c %s "$out/$a")
  s=$(stat -c %s "$work/$a")
  printf '| %s | %s | %s | %.2f |\n' "$a" "$built" "$s" "$(awk -v b="$s" 'BEGIN { print b / 1e6 }')"
  if [ "$check" = 1 ] && [ -z "$target" ]; then
    limit=$(awk -v a="$a" '$1 == a { print $2 }' "$limits")
    if [ -z "$limit" ]; then
      echo "edge_size: no limit for $a in $limits" >&2; status=1
    elif [ "$s" -gt "$limit" ]; then
      echo "edge_size: $a is $s bytes stripped, over its limit of $limit ($limits)" >&2; status=1
    fi
  fi
done
exit "$status"
