//! The Qwen2 model on a GGUF file's own quantized weights, for inference on the CPU: every
//! projection and the token table(s) stay quantized ([`crate::models::qlinear`]); norms and
//! biases are read as f32, and activations run in f32. No f32 copy of any quantized weight is
//! kept (re-quantizing a weight for candle's tiles makes one transiently, one tensor at a time).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek};

use candle_core::quantized::{gguf_file, QTensor};
use candle_core::{DType, Device, Tensor};

use super::gguf::gguf_to_hf_name;
use super::{Attention, Config, DecoderLayer, Incompatibility, Mlp, Qwen2Error, Qwen2ForCausalLM, Qwen2Model, RmsNorm};
use super::{ShapeMismatch, TokenTable};
use crate::models::lora::LoraLinear;
use crate::models::qlinear::{Packing, QuantWeight};

/// The GGUF's tensors under HF names, still quantized.
struct QuantTensors(HashMap<String, QTensor>);

impl QuantTensors {
    fn take(&mut self, name: &str) -> Result<QTensor, Qwen2Error> {
        self.0.remove(name).ok_or_else(|| Qwen2Error::Gguf(format!("tensor `{name}` is missing")))
    }

    /// An f32 tensor (norm weights, biases: small).
    fn dense(&mut self, name: &str, device: &Device) -> Result<Tensor, Qwen2Error> {
        Ok(self.take(name)?.dequantize(device)?.to_dtype(DType::F32)?)
    }

    /// `{path}.weight` quantized (laid out for `packing`) and, when `bias`, `{path}.bias` as f32.
    fn linear(&mut self, path: &str, bias: bool, packing: Packing, device: &Device) -> Result<LoraLinear, Qwen2Error> {
        let w = QuantWeight::prepare(self.take(&format!("{path}.weight"))?, packing)?;
        let b = if bias { Some(self.dense(&format!("{path}.bias"), device)?) } else { None };
        Ok(LoraLinear::quantized(w, b))
    }
}

/// Reads every tensor of `content` (quantized, under HF names) and checks names and shapes
/// against `cfg` before anything is built: all problems are reported together.
fn read_checked<R: Read + Seek>(
    content: &gguf_file::Content,
    reader: &mut R,
    cfg: &Config,
    device: &Device,
) -> Result<QuantTensors, Qwen2Error> {
    let expected: BTreeMap<String, Vec<usize>> = cfg.expected_shapes();
    let mut problems = Incompatibility::default();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in &names {
        match gguf_to_hf_name(name).filter(|hf| expected.contains_key(hf)) {
            None => problems.unexpected.push(name.to_string()),
            Some(hf) => {
                let found = content.tensor_infos[*name].shape.dims().to_vec();
                if found != expected[&hf] {
                    let want = expected[&hf].clone();
                    problems.shape_mismatch.push(ShapeMismatch { name: hf, expected: want, found });
                }
            }
        }
    }
    let present: Vec<String> = names.iter().filter_map(|n| gguf_to_hf_name(n)).collect();
    problems.missing = expected.keys().filter(|k| !present.contains(k)).cloned().collect();
    if !problems.is_empty() {
        return Err(Qwen2Error::Incompatible(problems));
    }
    let mut out = HashMap::new();
    for name in names {
        let q = content.tensor(reader, name, device).map_err(|e| Qwen2Error::Gguf(format!("tensor `{name}`: {e}")))?;
        if let Some(hf) = gguf_to_hf_name(name) {
            out.insert(hf, q);
        }
    }
    Ok(QuantTensors(out))
}

fn layer(
    t: &mut QuantTensors,
    i: usize,
    cfg: &Config,
    packing: Packing,
    dev: &Device,
) -> Result<DecoderLayer, Qwen2Error> {
    let p = format!("model.layers.{i}");
    let a = format!("{p}.self_attn");
    let m = format!("{p}.mlp");
    Ok(DecoderLayer {
        self_attn: Attention {
            q_proj: t.linear(&format!("{a}.q_proj"), true, packing, dev)?,
            k_proj: t.linear(&format!("{a}.k_proj"), true, packing, dev)?,
            v_proj: t.linear(&format!("{a}.v_proj"), true, packing, dev)?,
            o_proj: t.linear(&format!("{a}.o_proj"), false, packing, dev)?,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim(),
            dropout_p: cfg.attention_dropout,
        },
        mlp: Mlp {
            gate_proj: t.linear(&format!("{m}.gate_proj"), false, packing, dev)?,
            up_proj: t.linear(&format!("{m}.up_proj"), false, packing, dev)?,
            down_proj: t.linear(&format!("{m}.down_proj"), false, packing, dev)?,
            act: cfg.hidden_act,
        },
        input_layernorm: RmsNorm::new(t.dense(&format!("{p}.input_layernorm.weight"), dev)?, cfg.rms_norm_eps),
        post_attention_layernorm: RmsNorm::new(
            t.dense(&format!("{p}.post_attention_layernorm.weight"), dev)?,
            cfg.rms_norm_eps,
        ),
    })
}

/// Builds the model of `cfg` from a GGUF's quantized tensors (f32 activations, inference only:
/// quantized projections take no adapter merge and pass no gradient).
pub fn quantized_model<R: Read + Seek>(
    content: &gguf_file::Content,
    reader: &mut R,
    cfg: &Config,
    packing: Packing,
    device: &Device,
) -> Result<Qwen2ForCausalLM, Qwen2Error> {
    cfg.validate()?;
    let mut t = read_checked(content, reader, cfg, device)?;
    let layers =
        (0..cfg.num_hidden_layers).map(|i| layer(&mut t, i, cfg, packing, device)).collect::<Result<Vec<_>, _>>()?;
    let model = Qwen2Model {
        embed_tokens: TokenTable::quantized(t.take("model.embed_tokens.weight")?)?,
        layers,
        norm: RmsNorm::new(t.dense("model.norm.weight", device)?, cfg.rms_norm_eps),
    };
    let lm_head = if cfg.tie_word_embeddings { None } else { Some(TokenTable::quantized(t.take("lm_head.weight")?)?) };
    Ok(Qwen2ForCausalLM { model, lm_head, cfg: cfg.clone() })
}
