#!/usr/bin/env bash
# The ONNX exports in onnxruntime (issue 5): the same files tract runs must give the same
# outputs in onnxruntime, the Python package from PyPI:
#   f32 : max |logit diff| onnxruntime vs tract < 1e-4
#   int8: max |probability diff| onnxruntime vs tract < 0.02
# on two models: a tiny student trained on a synthetic cohort (in the test process), and
# all-MiniLM-L6-v2 (CKD_MINILM_DIR, from scripts/fetch_models.sh) with a fresh seeded head.
# Exits non-zero on any tolerance breach (scripts/ort_check.py decides).
#
# MiniLM runs with the fresh head (logits of std about 0.12), not the x10 "trained-like" head:
# with that head the int8 file's outputs differ between onnxruntime and tract by 0.066 (and
# from f32 by 0.083), because MiniLM's per-tensor int8 activations are chaotic (a 1e-7
# relative perturbation of the input moves the int8 probabilities by 0.08: one u8 code flip
# perturbs the next quantized tensor by a step, which flips more codes there, and so on), so
# two correct runtimes disagree by about the int8 error itself. See BENCHMARKS.md (issue 5).
# CKD_ORT_MINILM_HEAD_SCALE=10 reproduces that.
#
# The files come from `export_study ort-files` (trainer/examples/export_study.rs), built by
# `cargo build --workspace --example export_study` (dev profile; `--workspace` so the
# dependencies' features, and hence the build, are the ones scripts/test's `cargo test
# --workspace` already made).
# onnxruntime and numpy are pinned and installed once into a venv at
# ${CKD_VENV:-$HOME/.cache/ckd-ehr/venv}. With CKD_SKIP_FETCH set nothing is downloaded: a venv
# without the pinned packages then means "NOT RUN" (a failure when CI is set).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ckd-ehr/target}"

ORT_VERSION=1.32.0
NUMPY_VERSION=2.4.6
venv="${CKD_VENV:-$HOME/.cache/ckd-ehr/venv}"
python="${PYTHON:-python3}"
log() { echo "ort_ci: $*" >&2; }

venv_ready() {
  [ -x "$venv/bin/python" ] && "$venv/bin/python" - "$ORT_VERSION" "$NUMPY_VERSION" <<'PY' 2>/dev/null
import sys
import numpy, onnxruntime
sys.exit(0 if (onnxruntime.__version__, numpy.__version__) == (sys.argv[1], sys.argv[2]) else 1)
PY
}

if ! venv_ready; then
  if [ -n "${CKD_SKIP_FETCH:-}" ]; then
    msg="no venv with onnxruntime==$ORT_VERSION numpy==$NUMPY_VERSION at $venv and CKD_SKIP_FETCH is set"
    if [ -n "${CI:-}" ]; then
      log "FAIL: $msg"
      exit 1
    fi
    log "NOT RUN: $msg"
    exit 0
  fi
  log "installing onnxruntime==$ORT_VERSION numpy==$NUMPY_VERSION into $venv"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "onnxruntime==$ORT_VERSION" "numpy==$NUMPY_VERSION" >&2
  venv_ready || { log "FAIL: the venv at $venv still lacks the pinned packages"; exit 1; }
fi

if [ -z "${CKD_MINILM_DIR:-}" ]; then
  if [ -z "${CKD_SKIP_FETCH:-}" ]; then
    eval "$(scripts/fetch_models.sh)"
  elif [ -n "${CI:-}" ]; then
    log "FAIL: CKD_MINILM_DIR is unset (run scripts/fetch_models.sh)"
    exit 1
  fi
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/ckd-ort.XXXXXX")"
trap 'rm -rf "$work"' EXIT

models=(student)
if [ -n "${CKD_MINILM_DIR:-}" ]; then
  models+=(minilm)
else
  log "NOT RUN for MiniLM: CKD_MINILM_DIR is unset"
fi

cargo build --quiet --workspace --example export_study >&2
study="$CARGO_TARGET_DIR/debug/examples/export_study"

status=0
for m in "${models[@]}"; do
  log "$m: writing the exports and tract's outputs"
  CKD_EXPORT_DIR="$work/$m" CKD_ORT_MODEL="$m" CKD_EXPORT_HEAD_SCALE="${CKD_ORT_MINILM_HEAD_SCALE:-1}" \
    "$study" ort-files >&2
  log "$m: onnxruntime vs tract"
  if ! "$venv/bin/python" scripts/ort_check.py "$work/$m"; then
    log "FAIL: $m: onnxruntime and tract disagree beyond the tolerances"
    status=1
  fi
done
exit "$status"
