//! GGUF files (llama.cpp `qwen2` architecture): tensor names to and from HF names, the config
//! from `qwen2.*` metadata, tensors dequantized to f32, and the whole model from one file.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};

use super::{gguf_tokenizer, Config, Incompatibility, Qwen2Error, Qwen2ForCausalLM, TokenIds};

/// Per-layer GGUF tensor stems and their HF module paths (relative to `model.layers.{i}.`).
const GGUF_LAYER_NAMES: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// Maps a llama.cpp GGUF tensor name to its HF name: `token_embd.weight` -> `model.embed_tokens.weight`,
/// `output_norm.weight` -> `model.norm.weight`, `output.weight` -> `lm_head.weight`,
/// `blk.{i}.{attn_norm|attn_q|attn_k|attn_v|attn_output|ffn_norm|ffn_gate|ffn_up|ffn_down}.{weight|bias}`
/// -> `model.layers.{i}.{input_layernorm|self_attn.q_proj|...|mlp.down_proj}.{weight|bias}`.
/// `None` for names with no HF counterpart. Weights keep HF's [out, in] layout: for the qwen2
/// architecture llama.cpp does not permute q/k rows (it uses NeoX-style RoPE, as HF does).
pub fn gguf_to_hf_name(name: &str) -> Option<String> {
    match name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (stem, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let (_, hf) = GGUF_LAYER_NAMES.iter().find(|(g, _)| *g == stem)?;
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// Inverse of [`gguf_to_hf_name`].
pub fn hf_to_gguf_name(name: &str) -> Option<String> {
    match name {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let (g, _) = GGUF_LAYER_NAMES.iter().find(|(_, h)| *h == module)?;
    Some(format!("blk.{layer}.{g}.{suffix}"))
}

pub(super) fn gguf_value<'a>(content: &'a gguf_file::Content, key: &str) -> Result<&'a gguf_file::Value, Qwen2Error> {
    content.metadata.get(key).ok_or_else(|| Qwen2Error::Gguf(format!("metadata key `{key}` is missing")))
}

/// An unsigned integer metadata value of any integer GGUF type.
fn gguf_usize(content: &gguf_file::Content, key: &str) -> Result<usize, Qwen2Error> {
    use gguf_file::Value as V;
    let v = gguf_value(content, key)?;
    let n: i128 = match v {
        V::U8(x) => (*x).into(),
        V::I8(x) => (*x).into(),
        V::U16(x) => (*x).into(),
        V::I16(x) => (*x).into(),
        V::U32(x) => (*x).into(),
        V::I32(x) => (*x).into(),
        V::U64(x) => (*x).into(),
        V::I64(x) => (*x).into(),
        other => return Err(Qwen2Error::Gguf(format!("`{key}` is {:?}, not an integer", other.value_type()))),
    };
    usize::try_from(n).map_err(|_| Qwen2Error::Gguf(format!("`{key}` = {n} is not a valid size")))
}

fn gguf_f64(content: &gguf_file::Content, key: &str) -> Result<f64, Qwen2Error> {
    match gguf_value(content, key)? {
        gguf_file::Value::F32(x) => Ok(f64::from(*x)),
        gguf_file::Value::F64(x) => Ok(*x),
        other => Err(Qwen2Error::Gguf(format!("`{key}` is {:?}, not a float", other.value_type()))),
    }
}

/// Reads the model config from GGUF metadata (`general.architecture` must be `qwen2`):
/// hidden_size = `qwen2.embedding_length`, num_hidden_layers = `qwen2.block_count`,
/// num_attention_heads = `qwen2.attention.head_count`, num_key_value_heads = `qwen2.attention.head_count_kv`,
/// intermediate_size = `qwen2.feed_forward_length`, max_position_embeddings = `qwen2.context_length`,
/// rms_norm_eps = `qwen2.attention.layer_norm_rms_epsilon`, rope_theta = `qwen2.rope.freq_base`
/// (10000 when absent, llama.cpp's default), vocab_size = rows of `token_embd.weight`,
/// tie_word_embeddings = `output.weight` absent, bos/eos from `tokenizer.ggml.{bos,eos}_token_id`.
/// The rope theta is stored as f32 in GGUF: 1e6 round-trips exactly.
pub fn gguf_config(content: &gguf_file::Content) -> Result<Config, Qwen2Error> {
    match gguf_value(content, "general.architecture")? {
        gguf_file::Value::String(s) if s == "qwen2" => {}
        other => return Err(Qwen2Error::Gguf(format!("general.architecture is {other:?}, expected \"qwen2\""))),
    }
    let embd = content
        .tensor_infos
        .get("token_embd.weight")
        .ok_or_else(|| Qwen2Error::Gguf("tensor `token_embd.weight` is missing".into()))?;
    let vocab_size = match embd.shape.dims() {
        [v, _] => *v,
        dims => return Err(Qwen2Error::Gguf(format!("token_embd.weight has shape {dims:?}, expected [V, H]"))),
    };
    let rope_theta = if content.metadata.contains_key("qwen2.rope.freq_base") {
        gguf_f64(content, "qwen2.rope.freq_base")?
    } else {
        10000.0
    };
    let opt_id = |key: &str| -> Result<Option<u32>, Qwen2Error> {
        if content.metadata.contains_key(key) {
            let id = gguf_usize(content, key)?;
            Ok(Some(u32::try_from(id).map_err(|_| Qwen2Error::Gguf(format!("`{key}` = {id} is too large")))?))
        } else {
            Ok(None)
        }
    };
    let cfg = Config {
        vocab_size,
        hidden_size: gguf_usize(content, "qwen2.embedding_length")?,
        intermediate_size: gguf_usize(content, "qwen2.feed_forward_length")?,
        num_hidden_layers: gguf_usize(content, "qwen2.block_count")?,
        num_attention_heads: gguf_usize(content, "qwen2.attention.head_count")?,
        num_key_value_heads: gguf_usize(content, "qwen2.attention.head_count_kv")?,
        max_position_embeddings: gguf_usize(content, "qwen2.context_length")?,
        rope_theta,
        rms_norm_eps: gguf_f64(content, "qwen2.attention.layer_norm_rms_epsilon")?,
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        bos_token_id: opt_id("tokenizer.ggml.bos_token_id")?,
        eos_token_id: opt_id("tokenizer.ggml.eos_token_id")?.map(TokenIds::One),
        ..Config::default()
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Reads and dequantizes every tensor of a GGUF file to f32 on `device`, under HF names. GGUF
/// names without an HF counterpart are reported as unexpected ([`Qwen2Error::Incompatible`]).
pub fn read_gguf_tensors<R: Read + Seek>(
    content: &gguf_file::Content,
    reader: &mut R,
    device: &Device,
) -> Result<HashMap<String, Tensor>, Qwen2Error> {
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let unexpected: Vec<String> =
        names.iter().filter(|n| gguf_to_hf_name(n).is_none()).map(|n| n.to_string()).collect();
    if !unexpected.is_empty() {
        return Err(Qwen2Error::Incompatible(Incompatibility { unexpected, ..Incompatibility::default() }));
    }
    let mut out = HashMap::new();
    for name in names {
        let q = content.tensor(reader, name, device).map_err(|e| Qwen2Error::Gguf(format!("tensor `{name}`: {e}")))?;
        let t = q.dequantize(device)?;
        if let Some(hf) = gguf_to_hf_name(name) {
            out.insert(hf, t);
        }
    }
    Ok(out)
}

/// A Qwen2 model read from a GGUF file.
#[derive(Debug, Clone)]
pub struct GgufQwen2 {
    pub config: Config,
    pub model: Qwen2ForCausalLM,
    /// The embedded tokenizer; `None` when the file has no `tokenizer.ggml.model`.
    pub tokenizer: Option<tokenizers::Tokenizer>,
}

/// Thin driver: reads a GGUF file, its config, its weights (dequantized, converted to `dtype`) and
/// its embedded tokenizer.
pub fn load_gguf(path: &Path, dtype: DType, device: &Device) -> Result<GgufQwen2, Qwen2Error> {
    let io = |source| Qwen2Error::Io { path: path.to_path_buf(), source };
    let mut file = std::io::BufReader::new(crate::io::open_regular(path).map_err(io)?);
    let content =
        gguf_file::Content::read(&mut file).map_err(|e| Qwen2Error::Gguf(format!("{}: {e}", path.display())))?;
    let config = gguf_config(&content)?;
    let tokenizer =
        if content.metadata.contains_key("tokenizer.ggml.model") { Some(gguf_tokenizer(&content)?) } else { None };
    let tensors = read_gguf_tensors(&content, &mut file, device)?;
    let model = Qwen2ForCausalLM::from_tensors(tensors, &config, dtype, device)?;
    Ok(GgufQwen2 { config, model, tokenizer })
}
