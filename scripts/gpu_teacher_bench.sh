#!/usr/bin/env bash
# Times the candle Qwen2 teacher on a CUDA machine that has no Rust toolchain: runs the prebuilt
# `.gpu/teacher_gpu` (built elsewhere with `cargo build --release -p ckd-benches --bin teacher_gpu
# --features cuda` against CUDA 13.0, see benches/src/bin/teacher_gpu.rs) from the repo root.
#
# The binary links libcuda.so.1 (driver), libcublas.so.13 (+ libcublasLt.so.13) and
# libcurand.so.10 dynamically; this script finds them in the image (driver
# folders, CUDA toolkit, the nvidia-* Python wheels next to PyTorch) and sets LD_LIBRARY_PATH.
#
# Steps (each under `timeout`, the whole designed for < 6 minutes): nvidia-smi; library lookup and
# `ldd`; a smoke run of the tiny config (also loads and JIT-compiles every PTX module, which the
# driver caches for the next run); the 7B measurement (labelling + one LoRA SFT step), with
# nvidia-smi sampling memory every 200 ms in the background.
# Outputs go to $OUT (default ./gpu-out): smoke.json, teacher_gpu.json, teacher_gpu.log,
# nvsmi_mem.csv, env.txt.
#
# Usage: bash scripts/gpu_teacher_bench.sh [extra teacher_gpu args for the 7B run...]
# Environment: BIN (default .gpu/teacher_gpu), CONFIG (default 7b), T_SMOKE / T_MAIN (timeouts, s),
# CUDA_LIB_DIRS (extra library folders, searched first).
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
BIN=${BIN:-.gpu/teacher_gpu}
CONFIG=${CONFIG:-7b}
T_SMOKE=${T_SMOKE:-60}
T_MAIN=${T_MAIN:-270}
start=$(date +%s)
log() { echo "[$(($(date +%s) - start))s] $*"; }

log "== nvidia-smi"
timeout 20 nvidia-smi || log "nvidia-smi failed"
timeout 10 nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm,clocks.mem --format=csv

if [ ! -x "$BIN" ]; then
  chmod +x "$BIN" 2>/dev/null || { log "no binary at $BIN"; exit 2; }
fi

log "== CUDA libraries"
# What `readelf -d` lists (libcublas needs libcublasLt); cudart and nvrtc are dropped by --as-needed.
NEED="libcuda.so.1 libcublas.so.13 libcublasLt.so.13 libcurand.so.10"
CANDIDATES=""
# CUDA_LIB_DIRS: extra folders searched first (space-separated).
for d in ${CUDA_LIB_DIRS:-} /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 \
  /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13.0/lib64 \
  /opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib \
  /opt/torch/.venv/lib/python3.12/site-packages/nvidia/*/lib \
  /opt/torch/.venv/lib/python3.12/site-packages/torch/lib; do
  [ -d "$d" ] && CANDIDATES="$CANDIDATES $d"
done
LIBDIRS=""
add_dir() { case ":$LIBDIRS:" in *":$1:"*) ;; *) LIBDIRS="${LIBDIRS:+$LIBDIRS:}$1" ;; esac; }
for lib in $NEED; do
  found=""
  for d in $CANDIDATES; do
    if [ -e "$d/$lib" ]; then found="$d/$lib"; break; fi
  done
  if [ -z "$found" ]; then
    found=$(ldconfig -p 2>/dev/null | awk -v l="$lib" '$1 == l && /x86-64/ {print $NF; exit}')
  fi
  if [ -z "$found" ]; then
    found=$(timeout 30 find /opt /usr /usr/local /root -xdev -name "$lib" 2>/dev/null | head -n 1)
  fi
  if [ -n "$found" ]; then
    log "$lib -> $found"
    add_dir "$(dirname "$found")"
  else
    log "$lib NOT FOUND"
  fi
done
export LD_LIBRARY_PATH="$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
log "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
{
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  ldd "$BIN"
  ls /opt/torch/.venv/lib/python3.12/site-packages/nvidia/ 2>/dev/null
  /opt/torch/.venv/bin/python3 -m pip list 2>/dev/null | grep -i -E '^nvidia|^torch '
  nvcc --version 2>/dev/null | tail -n 2
  uname -a
  ldd --version | head -n 1
} >"$OUT/env.txt" 2>&1
ldd "$BIN" | grep -E 'cuda|cublas|curand|nvrtc|stdc|not found'
if ldd "$BIN" | grep -q 'not found'; then
  log "unresolved libraries: see above and $OUT/env.txt"
  exit 3
fi

export RUST_BACKTRACE=0
# candle loads its kernels as PTX that the driver compiles on first use; keep the compiled
# kernels in the driver's disk cache so the smoke run pays that once for the main run.
export CUDA_CACHE_MAXSIZE=${CUDA_CACHE_MAXSIZE:-2147483648}
log "== smoke: tiny config on cuda:0"
timeout "$T_SMOKE" "$BIN" --device cuda:0 --config tiny --dtype bf16 --label-shapes 2x64,4x128 \
  --train-shapes 2x128 --answer-tokens 16 --label-runs 2 --train-runs 1 --dropout-runs 1 \
  --json "$OUT/smoke.json" 2>&1 | tee "$OUT/smoke.log"
rc=${PIPESTATUS[0]}
log "smoke exit code $rc"
if [ "$rc" -ne 0 ]; then
  log "smoke failed: not running the $CONFIG measurement"
  exit 4
fi

log "== $CONFIG measurement"
timeout $((T_MAIN + 10)) nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu,clocks.sm \
  --format=csv,noheader,nounits -lms 200 >"$OUT/nvsmi_mem.csv" 2>/dev/null &
smi=$!
timeout "$T_MAIN" "$BIN" --device cuda:0 --config "$CONFIG" --dtype bf16 --json "$OUT/teacher_gpu.json" "$@" 2>&1 \
  | tee "$OUT/teacher_gpu.log"
rc=${PIPESTATUS[0]}
kill "$smi" 2>/dev/null
wait "$smi" 2>/dev/null
log "$CONFIG exit code $rc (124 = timed out)"
if [ -s "$OUT/nvsmi_mem.csv" ]; then
  awk -F', ' '{ if ($2 + 0 > m) m = $2 + 0 } END { printf "nvidia-smi peak memory.used: %d MiB (%.2f GiB)\n", m, m / 1024 }' \
    "$OUT/nvsmi_mem.csv" | tee -a "$OUT/teacher_gpu.log"
fi
log "done"
exit "$rc"
