//! The Qwen2 tokenizer: its special tokens, its pre-tokenizer regex, the byte-level BPE rebuilt
//! from a GGUF file's embedded vocabulary, and `tokenizer.json` reading.

use std::path::Path;

use candle_core::quantized::gguf_file;

use super::gguf::gguf_value;
use super::Qwen2Error;

/// Start and end of a chat turn in the Qwen ChatML template.
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";
pub const ENDOFTEXT: &str = "<|endoftext|>";

/// The split regex of Qwen2's byte-level BPE pre-tokenizer (its `tokenizer.json`; llama.cpp `pre = "qwen2"`).
pub const QWEN2_SPLIT_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp token types (`tokenizer.ggml.token_type`).
pub(super) const TOKEN_NORMAL: i64 = 1;
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;
const TOKEN_UNUSED: i64 = 5;

/// Builds the byte-level BPE tokenizer embedded in a GGUF file (`tokenizer.ggml.model = "gpt2"`,
/// `tokenizer.ggml.pre = "qwen2"`) as a `tokenizers::Tokenizer` equivalent to Qwen2's
/// `tokenizer.json`: NFC normalizer; pre-tokenizer Split([`QWEN2_SPLIT_REGEX`], isolated) then
/// ByteLevel (no prefix space, no regex); BPE over the normal tokens (type 1) and
/// `tokenizer.ggml.merges`; control tokens (type 3, e.g. `<|im_start|>`) as special added tokens
/// and user-defined ones (type 4, e.g. `<tool_call>`) as non-special added tokens; unused
/// placeholder rows (type 5, `[PAD…]`) are left out; ByteLevel decoder and post-processor.
/// Any other model, pre-tokenizer or token type is an error.
pub fn gguf_tokenizer(content: &gguf_file::Content) -> Result<tokenizers::Tokenizer, Qwen2Error> {
    use gguf_file::Value as V;
    let bad = |m: String| Qwen2Error::Tokenizer(m);
    match gguf_value(content, "tokenizer.ggml.model")? {
        V::String(s) if s == "gpt2" => {}
        other => return Err(bad(format!("tokenizer.ggml.model is {other:?}, only \"gpt2\" is supported"))),
    }
    match gguf_value(content, "tokenizer.ggml.pre")? {
        V::String(s) if s == "qwen2" => {}
        other => return Err(bad(format!("tokenizer.ggml.pre is {other:?}, only \"qwen2\" is supported"))),
    }
    let strings = |key: &str| -> Result<Vec<&str>, Qwen2Error> {
        gguf_value(content, key)?
            .to_vec()
            .map_err(|_| bad(format!("`{key}` is not an array")))?
            .iter()
            .map(|v| v.to_string().map(String::as_str).map_err(|_| bad(format!("`{key}` holds a non-string"))))
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types: Vec<i64> = gguf_value(content, "tokenizer.ggml.token_type")?
        .to_vec()
        .map_err(|_| bad("`tokenizer.ggml.token_type` is not an array".into()))?
        .iter()
        .map(|v| match v {
            V::I32(x) => Ok(i64::from(*x)),
            V::U32(x) => Ok(i64::from(*x)),
            other => Err(bad(format!("token type {:?} is not an i32", other.value_type()))),
        })
        .collect::<Result<_, _>>()?;
    if types.len() != tokens.len() {
        return Err(bad(format!("{} tokens but {} token types", tokens.len(), types.len())));
    }
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, (tok, ty)) in tokens.iter().zip(&types).enumerate() {
        match *ty {
            TOKEN_NORMAL => {
                vocab.insert(tok.to_string(), id.into());
            }
            TOKEN_CONTROL | TOKEN_USER_DEFINED => added.push(serde_json::json!({
                "id": id, "content": tok, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": *ty == TOKEN_CONTROL,
            })),
            TOKEN_UNUSED => {}
            other => return Err(bad(format!("token {id} `{tok}` has unsupported type {other}"))),
        }
    }
    let merges: Vec<[&str; 2]> = merges
        .iter()
        .map(|m| m.split_once(' ').map(|(a, b)| [a, b]).ok_or_else(|| bad(format!("merge `{m}` is not `a b`"))))
        .collect::<Result<_, _>>()?;
    let byte_level =
        serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT_REGEX}, "behavior": "Isolated", "invert": false},
            byte_level.clone(),
        ]},
        "post_processor": byte_level.clone(),
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    });
    let bytes = serde_json::to_vec(&json)?;
    tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| bad(e.to_string()))
}

/// Reads a `tokenizer.json` (thin I/O driver).
pub fn read_tokenizer_json(path: &Path) -> Result<tokenizers::Tokenizer, Qwen2Error> {
    crate::io::check_regular(path).map_err(|e| Qwen2Error::Tokenizer(format!("{}: {e}", path.display())))?;
    tokenizers::Tokenizer::from_file(path).map_err(|e| Qwen2Error::Tokenizer(format!("{}: {e}", path.display())))
}
