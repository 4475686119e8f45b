#!/usr/bin/env bash
# ARM builds of the edge runtime (called by .ci/run): cross-compiles the C library
# (libckd_edge_c.a / .so) and the `ckd-edge` CLI for aarch64-unknown-linux-gnu and
# armv7-unknown-linux-gnueabihf (dev profile: dependencies at opt-level 3, no LTO), then runs
# both ARM CLIs under qemu-user on the tiny test bundle (edge-runtime/testdata/tiny) and
# compares their predictions with the x86_64 CLI's: at most 0.02 per probability (the int8
# tolerance), same truncation and token counts.
#
# Needs, and installs when missing: the rustup targets, the Debian cross linkers
# gcc-aarch64-linux-gnu and gcc-arm-linux-gnueabihf, and qemu-user (apt-get, as root or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ckd-ehr/target}"
# The ARM builds get their own target directory (host build scripts and proc macros are built
# again there), so they never wait on, or invalidate, the x86_64 build's lock and artifacts.
arm_dir="${CKD_ARM_TARGET_DIR:-$CARGO_TARGET_DIR/arm}"
targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf)
{ command -v qemu-aarch64 >/dev/null && command -v qemu-arm >/dev/null; } || need+=(qemu-user)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "ci_arm: installing ${need[*]}" >&2
  $sudo apt-get install -y -q "${need[@]}" >/dev/null ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${need[@]}" >/dev/null; }
fi
for t in "${targets[@]}"; do
  rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc

CARGO_TARGET_DIR="$arm_dir" cargo build -p ckd-edge-c --target "${targets[0]}" --target "${targets[1]}"
cargo build -p ckd-edge-c --bin ckd-edge

bundle=edge-runtime/testdata/tiny/bundle
rows=edge-runtime/testdata/tiny/rows.jsonl
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$CARGO_TARGET_DIR/debug/ckd-edge" predict --bundle "$bundle" --input "$rows" >"$out/x86_64.jsonl"
qemu-aarch64 -L /usr/aarch64-linux-gnu "$arm_dir/${targets[0]}/debug/ckd-edge" \
  predict --bundle "$bundle" --input "$rows" >"$out/aarch64.jsonl"
qemu-arm -L /usr/arm-linux-gnueabihf "$arm_dir/${targets[1]}/debug/ckd-edge" \
  predict --bundle "$bundle" --input "$rows" >"$out/armv7.jsonl"

python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
load = lambda name: [json.loads(l) for l in open(f"{d}/{name}.jsonl")]
ref = load("x86_64")
assert len(ref) == 24, f"x86_64: {len(ref)} records"
for arch in ["aarch64", "armv7"]:
    got = load(arch)
    assert len(got) == len(ref), f"{arch}: {len(got)} records, x86_64 {len(ref)}"
    worst = 0.0
    for a, b in zip(ref, got):
        assert (a["line"], a["truncated"], a["tokens"]) == (b["line"], b["truncated"], b["tokens"]), (arch, a["line"])
        assert a["probabilities"].keys() == b["probabilities"].keys()
        worst = max(worst, max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in a["probabilities"]))
    print(f"ci_arm: {arch} vs x86_64: {len(got)} predictions, max |prob diff| {worst:.2e}")
    assert worst <= 0.02, f"{arch}: max |prob diff| {worst} > 0.02"
PY
ls -l "$arm_dir"/{aarch64-unknown-linux-gnu,armv7-unknown-linux-gnueabihf}/debug/{ckd-edge,libckd_edge_c.a,libckd_edge_c.so} | awk '{print "ci_arm: " $5 "\t" $9}'
