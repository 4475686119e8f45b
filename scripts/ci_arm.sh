#!/usr/bin/env bash
# ARM builds and tests of the edge runtime (called by .ci/run): cross-compiles the C library
# (libckd_edge_c.a / .so), the `ckd-edge` CLI and ckd-edge's unit tests for
# aarch64-unknown-linux-gnu and armv7-unknown-linux-gnueabihf (dev profile: dependencies at
# opt-level 3, no LTO), then, under qemu-user, for each emulated CPU:
# - runs ckd-edge's unit tests, among them the int8 kernel, fused-op and whole-bundle tests
#   (every kernel the CPU has, bit for bit against the formula and against tract's own int8
#   plan),
# - checks the int8 kernel `ckd-edge info` names on the tiny test bundle
#   (edge-runtime/testdata/tiny): `neon` on a Cortex-A72 (no dot product), `neon-dotprod` on a
#   Cortex-A76 and on qemu's `max`, `armv7-neon` on 32-bit ARM (qemu-arm has no armv7-A CPU
#   without NEON that runs these binaries: the fallback is not exercised here),
# - compares the CLI's predictions with the x86_64 CLI's: at most 0.02 per probability (the int8
#   tolerance), same truncation and token counts,
# - runs `ckd-edge bench` (the command a device maker runs on a board) on both int8 paths.
#
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
# The unit-test binaries of ckd-edge, one per target (their paths from cargo's JSON messages).
mapfile -t test_bins < <(CARGO_TARGET_DIR="$arm_dir" cargo test -p ckd-edge --lib --no-run \
  --target "${targets[0]}" --target "${targets[1]}" --message-format=json |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "ckd_edge":
        print(m["executable"])')
cargo build -p ckd-edge-c --bin ckd-edge
test_bin() { printf '%s\n' "${test_bins[@]}" | grep "/$1/" || { echo "ci_arm: no $1 test binary in: ${test_bins[*]}" >&2; exit 1; }; }
a64_tests=$(test_bin "${targets[0]}")
a32_tests=$(test_bin "${targets[1]}")

bundle=edge-runtime/testdata/tiny/bundle
rows=edge-runtime/testdata/tiny/rows.jsonl
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$CARGO_TARGET_DIR/debug/ckd-edge" predict --bundle "$bundle" --input "$rows" >"$out/x86_64.jsonl"

# One emulated CPU: name, qemu command, sysroot, test binary, CLI, the int8 kernel it must pick.
check_cpu() {
  local name=$1 qemu=$2 cpu=$3 sysroot=$4 tests=$5 cli=$6 kernel=$7
  local run=("$qemu" -cpu "$cpu" -L "$sysroot")
  echo "ci_arm: $name ($qemu -cpu $cpu): unit tests" >&2
  "${run[@]}" "$tests" --quiet >"$out/$name.tests" 2>&1 ||
    { cat "$out/$name.tests" >&2; exit 1; }
  grep -h "test result" "$out/$name.tests" | sed "s/^/ci_arm: $name: /"
  local picked
  picked=$("${run[@]}" "$cli" info --bundle "$bundle" | python3 -c 'import json, sys; print(json.load(sys.stdin)["kernels"]["int8 linear"])')
  [ "$picked" = "$kernel" ] || { echo "ci_arm: $name: int8 kernel '$picked', expected '$kernel'" >&2; exit 1; }
  echo "ci_arm: $name: int8 kernel $picked"
  "${run[@]}" "$cli" predict --bundle "$bundle" --input "$rows" >"$out/$name.jsonl"
  # The board command, fused and stock paths side by side (qemu's timings mean nothing).
  "${run[@]}" "$cli" bench --bundle "$bundle" --seq 16,64 --runs 3 --warmup 1 --json "$out/$name.bench.json" >/dev/null
  python3 - "$out/$name.bench.json" "$kernel" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["results"]
got = sorted((r["path"], r["kernels"]["int8 linear"], r["tokens"]) for r in rows)
want = sorted((p, k, t) for p, k in [("fused", sys.argv[2]), ("stock", "tract")] for t in (16, 64))
assert got == want, f"ckd-edge bench rows {got}, expected {want}"
PY
  echo "ci_arm: $name: ckd-edge bench ran both int8 paths"
}
a64="$arm_dir/${targets[0]}/debug/ckd-edge"
a32="$arm_dir/${targets[1]}/debug/ckd-edge"
check_cpu aarch64-a72 qemu-aarch64 cortex-a72 /usr/aarch64-linux-gnu "$a64_tests" "$a64" neon
check_cpu aarch64-a76 qemu-aarch64 cortex-a76 /usr/aarch64-linux-gnu "$a64_tests" "$a64" neon-dotprod
check_cpu aarch64-max qemu-aarch64 max /usr/aarch64-linux-gnu "$a64_tests" "$a64" neon-dotprod
check_cpu armv7 qemu-arm max /usr/arm-linux-gnueabihf "$a32_tests" "$a32" armv7-neon
names="aarch64-a72 aarch64-a76 aarch64-max armv7"

python3 - "$out" $names <<'PY'
import json, sys
d = sys.argv[1]
load = lambda name: [json.loads(l) for l in open(f"{d}/{name}.jsonl")]
ref = load("x86_64")
assert len(ref) == 24, f"x86_64: {len(ref)} records"
for arch in sys.argv[2:]:
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
