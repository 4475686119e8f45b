//! Qwen2 decoder-only language model (HF `Qwen2ForCausalLM`), written for LoRA fine-tuning and for
//! reading the teacher's last-token state and attention.
//!
//! Weight names are exactly those of Hugging Face checkpoints: `model.embed_tokens.weight`,
//! `model.layers.{i}.input_layernorm.weight`, `model.layers.{i}.self_attn.{q,k,v}_proj.{weight,bias}`,
//! `model.layers.{i}.self_attn.o_proj.weight` (no bias), `model.layers.{i}.post_attention_layernorm.weight`,
//! `model.layers.{i}.mlp.{gate,up,down}_proj.weight`, `model.norm.weight` and `lm_head.weight`
//! (absent when `tie_word_embeddings`, then the LM head is `embed_tokens`). GGUF files (llama.cpp,
//! `qwen2` architecture) are read through [`gguf_to_hf_name`] and dequantized to f32.
//!
//! Every op on the forward path has a backward in candle-core 0.11: RMSNorm is
//! `x / sqrt(mean(x^2) + eps) * w` with broadcast ops (computed in f32, as HF does), RoPE is the
//! rotate-half (GPT-NeoX) form built from `narrow`/`cat`/`mul` with cos/sin tables computed for the
//! positions of the call, softmax is [`softmax_last_dim`] (`exp(x - max) / sum`, in f32), SiLU is
//! `Tensor::silu` (`UnaryOp::Silu` has a backward), linears are [`LoraLinear`]. None of candle-nn's
//! fused ops (`ops::softmax_last_dim`, `ops::rms_norm`, `RmsNorm::forward`, `rotary_emb::rope*`,
//! `ops::sdpa`) is used: they have no backward and the optimizer silently skips parameters without
//! gradients.
//!
//! Shapes: B batch, T tokens, H hidden, N attention heads, K key/value heads (N = K * R, grouped-query
//! attention: query head n reads key/value head n / R), D = H / N head size, I intermediate size,
//! V vocabulary.
//!
//! Padding convention: RIGHT padding. Row b holds its n_b >= 1 real tokens at positions 0..n_b and
//! padding after them; `attention_mask` is 1 on real tokens and 0 on padding. RoPE positions are
//! simply 0..T for every row, the last real token of row b is at `n_b - 1` ([`Qwen2Output::last_index`]),
//! and the mask is causal AND key-is-real, so real positions never see padding and the outputs of a
//! row at its real positions do not depend on how much padding follows (hidden states and attention
//! rows equal those of the row run alone, up to float rounding). Outputs at padded positions are
//! meaningless. A left-padded mask is rejected.
//!
//! Trainable parameters are only LoRA adapters ([`Qwen2ForCausalLM::with_lora`]); the base weights
//! are plain tensors held by [`LoraLinear`] and never receive gradients.
//!
//! Outputs: [`Qwen2ForCausalLM::forward_t`] returns the final hidden states, each row's last-token
//! hidden state (the phenotype head's feature) and, on request, each layer's attention row of the
//! last real token (eager attention). Logits are computed only where asked ([`Qwen2ForCausalLM::logits_at`]),
//! since [B, T, V] with V = 152k is large. Generation ([`Qwen2ForCausalLM::greedy_generate`]) uses a
//! caller-owned [`KvCache`]; training and labelling never cache.
//!
//! GGUF: metadata `qwen2.*` gives the config ([`gguf_config`]), tensors are renamed with
//! [`gguf_to_hf_name`] and dequantized to f32. llama.cpp permutes q/k rows only for the llama
//! architecture's interleaved RoPE; `qwen2` weights keep HF's layout (candle-transformers'
//! `quantized_qwen2` applies the rotate-half `rope`, not `rope_i`, to them), so no un-permutation is
//! needed. The embedded tokenizer is rebuilt as a `tokenizers::Tokenizer` ([`gguf_tokenizer`]); on
//! Qwen2.5-Coder-0.5B-Instruct it encodes like Qwen2.5's `tokenizer.json` (ids and offsets), checked
//! by the opt-in test `tests/qwen2_gguf.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::models::bert::{softmax_last_dim, DropoutRng, MASK_NEG};
use crate::models::lora::{LoraConfig, LoraError, LoraLinear};
use crate::models::seeded;

/// The default system prompt of the Qwen2.5 chat template.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

/// Start and end of a chat turn in the Qwen ChatML template.
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";
pub const ENDOFTEXT: &str = "<|endoftext|>";

/// The split regex of Qwen2's byte-level BPE pre-tokenizer (its `tokenizer.json`; llama.cpp `pre = "qwen2"`).
pub const QWEN2_SPLIT_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Errors of building, loading and running the model.
#[derive(Debug, thiserror::Error)]
pub enum Qwen2Error {
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("LoRA: {0}")]
    Lora(#[from] LoraError),
    #[error("Qwen2 config.json: {0}")]
    ConfigJson(#[from] serde_json::Error),
    #[error("invalid Qwen2 config: {0}")]
    InvalidConfig(String),
    #[error("checkpoint does not match the model: {0}")]
    Incompatible(Incompatibility),
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("reading safetensors {path}: {source}")]
    Read { path: PathBuf, source: candle_core::Error },
    #[error("safetensors index {path}: {message}")]
    ShardIndex { path: PathBuf, message: String },
    #[error("tensor `{name}` is listed in the index for shard {shard} but that shard does not contain it")]
    ShardMissingTensor { name: String, shard: PathBuf },
    #[error("GGUF: {0}")]
    Gguf(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("sequence of {len} tokens exceeds max_position_embeddings = {max}")]
    SequenceTooLong { len: usize, max: usize },
}

/// Everything that keeps a checkpoint from loading, listed in full (names sorted).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Incompatibility {
    /// HF tensor names the checkpoint lacks.
    pub missing: Vec<String>,
    /// Checkpoint tensor names the model has no place for.
    pub unexpected: Vec<String>,
    /// Tensors present on both sides with different shapes.
    pub shape_mismatch: Vec<ShapeMismatch>,
    /// Checkpoint tensors that are not floating point, with their dtype.
    pub bad_dtype: Vec<(String, DType)>,
}

/// One tensor whose checkpoint shape differs from the model's.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeMismatch {
    pub name: String,
    pub expected: Vec<usize>,
    pub found: Vec<usize>,
}

impl Incompatibility {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.shape_mismatch.is_empty()
            && self.bad_dtype.is_empty()
    }
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("missing tensors [{}]", self.missing.join(", ")));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected tensors [{}]", self.unexpected.join(", ")));
        }
        for m in &self.shape_mismatch {
            parts.push(format!("shape mismatch on {}: model {:?}, checkpoint {:?}", m.name, m.expected, m.found));
        }
        for (name, dtype) in &self.bad_dtype {
            parts.push(format!("{name} has non-float dtype {dtype:?}"));
        }
        f.write_str(&parts.join("; "))
    }
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// Activation of the MLP gate. Only HF `"silu"` is supported; any other value in `config.json` is
/// a deserialization error that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HiddenAct {
    #[serde(rename = "silu")]
    Silu,
}

/// A token id field that HF writes either as one id or as a list of ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            Self::One(id) => vec![*id],
            Self::Many(ids) => ids.clone(),
        }
    }
}

/// Mirror of HF `Qwen2Config` (`config.json`). Fields HF files omit take HF's defaults; fields we
/// do not use (`torch_dtype`, `initializer_range`, `max_window_layers`, `sliding_window`, ...) are
/// ignored on read. Features we do not implement are rejected by [`Config::validate`]:
/// `rope_scaling` must be null and `use_sliding_window` false.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub hidden_act: HiddenAct,
    /// Dropout on attention probabilities in training (0 in every released Qwen2).
    pub attention_dropout: f64,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<TokenIds>,
    pub use_sliding_window: bool,
    pub rope_scaling: Option<serde_json::Value>,
}

impl Default for Config {
    /// HF `Qwen2Config()` defaults.
    fn default() -> Self {
        Self {
            vocab_size: 151936,
            hidden_size: 4096,
            intermediate_size: 22016,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: 32,
            max_position_embeddings: 32768,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: false,
            hidden_act: HiddenAct::Silu,
            attention_dropout: 0.0,
            bos_token_id: None,
            eos_token_id: None,
            use_sliding_window: false,
            rope_scaling: None,
        }
    }
}

impl Config {
    /// A tiny config for tests: V 256, H 64, 2 layers, N 4 heads, K 2 KV heads (D 16), I 128,
    /// 128 positions, untied LM head.
    pub fn tiny() -> Self {
        Self {
            vocab_size: 256,
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 128,
            rope_theta: 10000.0,
            ..Self::default()
        }
    }

    /// Qwen2.5-7B(-Instruct): H 3584, 28 layers, 28 heads, 4 KV heads, I 18944, V 152064, untied.
    pub fn qwen2_5_7b() -> Self {
        Self {
            vocab_size: 152064,
            hidden_size: 3584,
            intermediate_size: 18944,
            num_hidden_layers: 28,
            num_attention_heads: 28,
            num_key_value_heads: 4,
            max_position_embeddings: 32768,
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: false,
            bos_token_id: Some(151643),
            eos_token_id: Some(TokenIds::One(151645)),
            ..Self::default()
        }
    }

    /// Qwen2.5(-Coder)-0.5B(-Instruct): H 896, 24 layers, 14 heads, 2 KV heads, I 4864, V 151936, tied.
    pub fn qwen2_5_0_5b() -> Self {
        Self {
            vocab_size: 151936,
            hidden_size: 896,
            intermediate_size: 4864,
            num_hidden_layers: 24,
            num_attention_heads: 14,
            num_key_value_heads: 2,
            max_position_embeddings: 32768,
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            bos_token_id: Some(151643),
            eos_token_id: Some(TokenIds::One(151645)),
            ..Self::default()
        }
    }

    /// Parses an HF `config.json` and validates it.
    pub fn from_json(json: &str) -> Result<Self, Qwen2Error> {
        let cfg: Self = serde_json::from_str(json)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Head size D = H / N.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Checks the invariants the model relies on.
    pub fn validate(&self) -> Result<(), Qwen2Error> {
        let bad = |m: String| Err(Qwen2Error::InvalidConfig(m));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return bad(format!("{name} must be > 0"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!("head size {} must be even for RoPE", self.head_dim()));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.rope_theta.is_nan() || self.rope_theta <= 0.0 {
            return bad(format!("rope_theta = {} must be > 0", self.rope_theta));
        }
        if self.rms_norm_eps.is_nan() || self.rms_norm_eps <= 0.0 {
            return bad(format!("rms_norm_eps = {} must be > 0", self.rms_norm_eps));
        }
        if !(0.0..1.0).contains(&self.attention_dropout) {
            return bad(format!("attention_dropout = {} is not in [0, 1)", self.attention_dropout));
        }
        if self.use_sliding_window {
            return bad("use_sliding_window = true is not supported".into());
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return bad("rope_scaling is not supported (must be null)".into());
        }
        Ok(())
    }

    /// Every tensor of an HF checkpoint of this config, with its shape: weights are [out, in],
    /// biases \[out\], norms \[H\], embeddings [V, H]. `lm_head.weight` only when the head is untied.
    pub fn expected_shapes(&self) -> BTreeMap<String, Vec<usize>> {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let kv = self.num_key_value_heads * self.head_dim();
        let mut m = BTreeMap::new();
        m.insert("model.embed_tokens.weight".to_string(), vec![v, h]);
        m.insert("model.norm.weight".to_string(), vec![h]);
        if !self.tie_word_embeddings {
            m.insert("lm_head.weight".to_string(), vec![v, h]);
        }
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let entries: [(&str, Vec<usize>); 12] = [
                ("input_layernorm.weight", vec![h]),
                ("post_attention_layernorm.weight", vec![h]),
                ("self_attn.q_proj.weight", vec![h, h]),
                ("self_attn.q_proj.bias", vec![h]),
                ("self_attn.k_proj.weight", vec![kv, h]),
                ("self_attn.k_proj.bias", vec![kv]),
                ("self_attn.v_proj.weight", vec![kv, h]),
                ("self_attn.v_proj.bias", vec![kv]),
                ("self_attn.o_proj.weight", vec![h, h]),
                ("mlp.gate_proj.weight", vec![i, h]),
                ("mlp.up_proj.weight", vec![i, h]),
                ("mlp.down_proj.weight", vec![h, i]),
            ];
            for (name, shape) in entries {
                m.insert(format!("{p}.{name}"), shape);
            }
        }
        m
    }
}

// ---------------------------------------------------------------------------------------------
// Differentiable building blocks
// ---------------------------------------------------------------------------------------------

/// RMSNorm over the last dim, HF convention: computed in f32 as x / sqrt(mean(x^2) + eps), cast
/// back to the input dtype, then multiplied by `weight` \[H\].
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> Self {
        Self { weight, eps }
    }

    pub fn load(vb: VarBuilder, size: usize, eps: f64) -> candle_core::Result<Self> {
        Ok(Self { weight: vb.get(size, "weight")?, eps })
    }

    /// [.., H] -> [.., H].
    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let dtype = xs.dtype();
        let x = xs.to_dtype(DType::F32)?;
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = x.broadcast_div(&(ms + self.eps)?.sqrt()?)?.to_dtype(dtype)?;
        xn.broadcast_mul(&self.weight)
    }
}

/// Rotary position embedding tables for positions `offset..offset + t`, HF convention:
/// `inv_freq[j] = theta^(-2j / D)` for j < D/2, `angle[p, j] = p * inv_freq[j]`, and
/// cos/sin [t, D] = cos/sin of cat(angle, angle) along the last dim. Computed in f64, returned in `dtype`.
pub fn rope_tables(
    theta: f64,
    head_dim: usize,
    offset: usize,
    t: usize,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv: Vec<f64> = (0..half).map(|j| theta.powf(-((2 * j) as f64) / head_dim as f64)).collect();
    let mut cos = Vec::with_capacity(t * head_dim);
    let mut sin = Vec::with_capacity(t * head_dim);
    for p in offset..offset + t {
        for _ in 0..2 {
            for f in &inv {
                let a = p as f64 * f;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
    }
    let cos = Tensor::from_vec(cos, (t, head_dim), device)?.to_dtype(dtype)?;
    let sin = Tensor::from_vec(sin, (t, head_dim), device)?.to_dtype(dtype)?;
    Ok((cos, sin))
}

/// Applies RoPE in the rotate-half form: x * cos + rotate_half(x) * sin with
/// rotate_half(x) = cat(-x[.., D/2..], x[.., ..D/2]). x [B, heads, T, D], cos/sin [T, D].
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let half = d / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// Additive attention mask [B, 1, Tq, Tk] in f32: query i (absolute position `offset + i`) may
/// read key j when j <= offset + i and j < `real_keys[b]`; 0 where allowed, [`MASK_NEG`] elsewhere.
fn causal_padding_mask(
    real_keys: &[usize],
    tq: usize,
    tk: usize,
    offset: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let mut m = Vec::with_capacity(real_keys.len() * tq * tk);
    for &n in real_keys {
        for i in 0..tq {
            for j in 0..tk {
                m.push(if j <= offset + i && j < n { 0.0 } else { MASK_NEG });
            }
        }
    }
    Tensor::from_vec(m, (real_keys.len(), 1, tq, tk), device)
}

fn maybe_dropout(xs: &Tensor, p: f64, rng: Option<&mut DropoutRng>) -> candle_core::Result<Tensor> {
    match rng {
        Some(rng) if p > 0.0 => rng.apply(xs, p),
        _ => Ok(xs.clone()),
    }
}

// ---------------------------------------------------------------------------------------------
// Modules (one struct per HF submodule)
// ---------------------------------------------------------------------------------------------

fn frozen_linear(vb: &VarBuilder, out_dim: usize, in_dim: usize, bias: bool) -> candle_core::Result<LoraLinear> {
    let w = vb.get((out_dim, in_dim), "weight")?;
    let b = if bias { Some(vb.get(out_dim, "bias")?) } else { None };
    Ok(LoraLinear::frozen(w, b))
}

/// Past keys/values of one layer for incremental decoding: k, v [B, K, T_past, D] (after RoPE).
type LayerKv = (Tensor, Tensor);

/// `model.layers.{i}.self_attn.*`: grouped-query attention with q/k/v biases and RoPE.
#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: LoraLinear,
    k_proj: LoraLinear,
    v_proj: LoraLinear,
    o_proj: LoraLinear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    dropout_p: f64,
}

impl Attention {
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim());
        let kv = cfg.num_key_value_heads * d;
        Ok(Self {
            q_proj: frozen_linear(&vb.pp("q_proj"), h, h, true)?,
            k_proj: frozen_linear(&vb.pp("k_proj"), kv, h, true)?,
            v_proj: frozen_linear(&vb.pp("v_proj"), kv, h, true)?,
            o_proj: frozen_linear(&vb.pp("o_proj"), h, h, false)?,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: d,
            dropout_p: cfg.attention_dropout,
        })
    }

    /// xs [B, T, H] (already normed); mask additive f32 [B, 1, T, T_past + T]; cos/sin [T, D] for
    /// positions T_past..T_past + T; `past` = keys/values of earlier positions (updated in place to
    /// include this call's). Returns the output [B, T, H] and the attention probabilities
    /// [B, N, T, T_past + T] (f32, rows over keys sum to 1, taken before attention dropout).
    fn forward_t(
        &self,
        xs: &Tensor,
        mask: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        past: Option<&mut Option<LayerKv>>,
        mut rng: Option<&mut DropoutRng>,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (b, t, h) = xs.dims3()?;
        let (n, k, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let r = n / k;
        let q = self.q_proj.forward_t(xs, rng.as_deref_mut())?;
        let kx = self.k_proj.forward_t(xs, rng.as_deref_mut())?;
        let v = self.v_proj.forward_t(xs, rng.as_deref_mut())?;
        let q = apply_rope(&q.reshape((b, t, n, d))?.transpose(1, 2)?.contiguous()?, cos, sin)?;
        let mut kx = apply_rope(&kx.reshape((b, t, k, d))?.transpose(1, 2)?.contiguous()?, cos, sin)?;
        let mut v = v.reshape((b, t, k, d))?.transpose(1, 2)?.contiguous()?;
        if let Some(slot) = past {
            if let Some((pk, pv)) = slot.as_ref() {
                kx = Tensor::cat(&[pk, &kx], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            *slot = Some((kx.clone(), v.clone()));
        }
        let tk = kx.dim(2)?;
        // Grouped-query attention without copying K/V: query heads n = kv * R + r share KV head kv,
        // so q [B, N, T, D] is viewed as [B, K, R * T, D] against k [B, K, Tk, D].
        let qg = q.reshape((b, k, r * t, d))?;
        let scale = 1.0 / (d as f64).sqrt();
        let scores = (qg.matmul(&kx.t()?)? * scale)?.reshape((b, n, t, tk))?;
        let scores = scores.to_dtype(DType::F32)?.broadcast_add(mask)?;
        let probs = softmax_last_dim(&scores)?;
        let dropped = maybe_dropout(&probs, self.dropout_p, rng.as_deref_mut())?.to_dtype(xs.dtype())?;
        let ctx = dropped.reshape((b, k, r * t, tk))?.matmul(&v)?.reshape((b, n, t, d))?;
        let ctx = ctx.transpose(1, 2)?.contiguous()?.reshape((b, t, h))?;
        Ok((self.o_proj.forward_t(&ctx, rng)?, probs))
    }
}

/// `model.layers.{i}.mlp.*`: down(silu(gate(x)) * up(x)), [B, T, H] -> [B, T, H].
#[derive(Debug, Clone)]
pub struct Mlp {
    gate_proj: LoraLinear,
    up_proj: LoraLinear,
    down_proj: LoraLinear,
    act: HiddenAct,
}

impl Mlp {
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: frozen_linear(&vb.pp("gate_proj"), i, h, false)?,
            up_proj: frozen_linear(&vb.pp("up_proj"), i, h, false)?,
            down_proj: frozen_linear(&vb.pp("down_proj"), h, i, false)?,
            act: cfg.hidden_act,
        })
    }

    pub fn forward_t(&self, xs: &Tensor, mut rng: Option<&mut DropoutRng>) -> candle_core::Result<Tensor> {
        let gate = self.gate_proj.forward_t(xs, rng.as_deref_mut())?;
        let gate = match self.act {
            HiddenAct::Silu => gate.silu()?,
        };
        let up = self.up_proj.forward_t(xs, rng.as_deref_mut())?;
        self.down_proj.forward_t(&(gate * up)?, rng)
    }
}

/// `model.layers.{i}.*`: pre-norm attention and MLP blocks with residuals.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        Ok(Self {
            self_attn: Attention::load(vb.pp("self_attn"), cfg)?,
            mlp: Mlp::load(vb.pp("mlp"), cfg)?,
            input_layernorm: RmsNorm::load(vb.pp("input_layernorm"), cfg.hidden_size, cfg.rms_norm_eps)?,
            post_attention_layernorm: RmsNorm::load(
                vb.pp("post_attention_layernorm"),
                cfg.hidden_size,
                cfg.rms_norm_eps,
            )?,
        })
    }

    /// xs [B, T, H] -> ([B, T, H], probabilities [B, N, T, Tk]); see [`Attention::forward_t`].
    fn forward_t(
        &self,
        xs: &Tensor,
        mask: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        past: Option<&mut Option<LayerKv>>,
        mut rng: Option<&mut DropoutRng>,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let normed = self.input_layernorm.forward(xs)?;
        let (attn, probs) = self.self_attn.forward_t(&normed, mask, cos, sin, past, rng.as_deref_mut())?;
        let xs = (xs + attn)?;
        let mlp = self.mlp.forward_t(&self.post_attention_layernorm.forward(&xs)?, rng)?;
        Ok(((xs + mlp)?, probs))
    }

    fn projections(&self) -> [(&'static str, &LoraLinear); 7] {
        [
            ("q_proj", &self.self_attn.q_proj),
            ("k_proj", &self.self_attn.k_proj),
            ("v_proj", &self.self_attn.v_proj),
            ("o_proj", &self.self_attn.o_proj),
            ("gate_proj", &self.mlp.gate_proj),
            ("up_proj", &self.mlp.up_proj),
            ("down_proj", &self.mlp.down_proj),
        ]
    }

    fn projections_mut(&mut self) -> [(&'static str, &mut LoraLinear); 7] {
        [
            ("q_proj", &mut self.self_attn.q_proj),
            ("k_proj", &mut self.self_attn.k_proj),
            ("v_proj", &mut self.self_attn.v_proj),
            ("o_proj", &mut self.self_attn.o_proj),
            ("gate_proj", &mut self.mlp.gate_proj),
            ("up_proj", &mut self.mlp.up_proj),
            ("down_proj", &mut self.mlp.down_proj),
        ]
    }
}

/// Module path (relative to the model root) of projection `name` in layer `layer`.
fn projection_path(layer: usize, name: &str) -> String {
    let block = if ["gate_proj", "up_proj", "down_proj"].contains(&name) { "mlp" } else { "self_attn" };
    format!("model.layers.{layer}.{block}.{name}")
}

/// HF `Qwen2Model` (`model.*`): token embedding, decoder layers, final norm.
#[derive(Debug, Clone)]
pub struct Qwen2Model {
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
}

impl Qwen2Model {
    /// `vb` is rooted at `model.`.
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let embed_tokens = vb.pp("embed_tokens").get((cfg.vocab_size, cfg.hidden_size), "weight")?;
        let lvb = vb.pp("layers");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::load(lvb.pp(i), cfg))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let norm = RmsNorm::load(vb.pp("norm"), cfg.hidden_size, cfg.rms_norm_eps)?;
        Ok(Self { embed_tokens, layers, norm })
    }
}

/// Incremental-decoding state: the keys/values of every layer for the positions seen so far.
/// Owned by the caller, never by the model, so the model stays a pure function of its inputs.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
    len: usize,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What one forward pass returns.
#[derive(Debug, Clone)]
pub struct Qwen2Output {
    /// [B, T, H] final hidden states after `model.norm` (meaningless at padded positions).
    pub hidden: Tensor,
    /// Index of the last real token of each row (n_b - 1), length B.
    pub last_index: Vec<usize>,
    /// [B, H] `hidden` at each row's last real token: the feature of the phenotype head.
    pub last_hidden: Tensor,
    /// When requested: one [B, N, T] f32 tensor per layer (first layer first), the attention
    /// probabilities of the query at each row's last real token over all key positions (per head,
    /// rows sum to 1, exactly 0 on padded keys; taken before attention dropout). The caller
    /// averages over heads and over the last layers as it needs.
    pub last_token_attentions: Option<Vec<Tensor>>,
}

/// HF `Qwen2ForCausalLM`: [`Qwen2Model`] and the LM head (tied or not).
#[derive(Debug, Clone)]
pub struct Qwen2ForCausalLM {
    model: Qwen2Model,
    /// [V, H]; `None` when tied to `model.embed_tokens.weight`.
    lm_head: Option<Tensor>,
    cfg: Config,
}

impl Qwen2ForCausalLM {
    /// Builds the model from `vb` rooted at the HF names (`model.*`, `lm_head.*`). The base weights
    /// are taken as they come from `vb`; build `vb` from plain tensors ([`Self::from_tensors`]) so
    /// that they are not Vars. The model dtype is the dtype of `vb`.
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self, Qwen2Error> {
        cfg.validate()?;
        let model = Qwen2Model::load(vb.pp("model"), cfg)?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(vb.pp("lm_head").get((cfg.vocab_size, cfg.hidden_size), "weight")?)
        };
        Ok(Self { model, lm_head, cfg: cfg.clone() })
    }

    /// Like [`Self::load`], but every projection keeps the tensor `vb` returns instead of a
    /// detached copy, so with a VarMap-backed `vb` all weights train (full fine-tuning of a model
    /// trained from scratch; pretrained bases use LoRA instead).
    pub fn load_trainable(vb: VarBuilder, cfg: &Config) -> Result<Self, Qwen2Error> {
        let mut m = Self::load(vb.clone(), cfg)?;
        for (i, layer) in m.model.layers.iter_mut().enumerate() {
            for (name, slot) in layer.projections_mut() {
                let pvb = vb.pp(projection_path(i, name));
                let w = pvb.get(slot.weight().dims(), "weight")?;
                let b = match slot.bias() {
                    Some(b) => Some(pvb.get(b.dims(), "bias")?),
                    None => None,
                };
                *slot = LoraLinear::trainable(w, b);
            }
        }
        Ok(m)
    }

    /// Builds a frozen model from checkpoint tensors under HF names, converted to `dtype` on `device`.
    /// Every tensor of [`Config::expected_shapes`] must be present with its shape and a float dtype,
    /// and no other tensor may be present (with tied embeddings, `lm_head.weight` is unexpected);
    /// all problems are reported together in [`Qwen2Error::Incompatible`].
    pub fn from_tensors(
        tensors: HashMap<String, Tensor>,
        cfg: &Config,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, Qwen2Error> {
        cfg.validate()?;
        check_tensors(&tensors, cfg)?;
        let vb = VarBuilder::from_tensors(tensors, dtype, device);
        Self::load(vb, cfg)
    }

    /// Attaches LoRA adapters to every projection named in `lora.target_modules` (PEFT names:
    /// `q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj`) of every layer.
    /// The adapters' A/B come from `vb` under `model.layers.{i}.{self_attn|mlp}.{name}.lora_A.weight`
    /// / `lora_B.weight` (the names [`crate::models::lora`] saves with PEFT's prefix): with a
    /// VarMap-backed `vb` they are trainable Vars, freshly initialized from `seed` (A seeded
    /// kaiming-uniform, B = 0) unless the VarMap already holds them. `vb` must have the model's
    /// dtype and device. An invalid config or a projection that already has an adapter is an error.
    pub fn with_lora(mut self, vb: VarBuilder, lora: &LoraConfig, seed: u64) -> Result<Self, Qwen2Error> {
        lora.validate()?;
        for (i, layer) in self.model.layers.iter_mut().enumerate() {
            for (name, slot) in layer.projections_mut() {
                if !lora.targets(name) {
                    continue;
                }
                let path = projection_path(i, name);
                if slot.has_adapter() {
                    return Err(Qwen2Error::InvalidConfig(format!("{path} already has a LoRA adapter")));
                }
                *slot = slot.clone().with_adapter_seeded(vb.pp(path), lora.r, lora.alpha, lora.dropout, seed)?;
            }
        }
        Ok(self)
    }

    /// Folds every adapter into its base weight (W += scale * B A) and drops it.
    pub fn merge_lora(&mut self) -> Result<(), Qwen2Error> {
        for layer in &mut self.model.layers {
            for (_, slot) in layer.projections_mut() {
                if slot.has_adapter() {
                    slot.merge()?;
                }
            }
        }
        Ok(())
    }

    /// Module paths of the projections that carry an adapter (sorted).
    pub fn lora_modules(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, layer) in self.model.layers.iter().enumerate() {
            for (name, slot) in layer.projections() {
                if slot.has_adapter() {
                    out.push(projection_path(i, name));
                }
            }
        }
        out.sort();
        out
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The model's dtype (that of its weights).
    pub fn dtype(&self) -> DType {
        self.model.embed_tokens.dtype()
    }

    pub fn device(&self) -> &Device {
        self.model.embed_tokens.device()
    }

    /// Eval-mode forward without attentions. See [`Self::forward_t`].
    pub fn forward(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Qwen2Output, Qwen2Error> {
        self.forward_t(input_ids, attention_mask, None, false)
    }

    /// input_ids [B, T] u32; attention_mask [B, T] (1 real, 0 pad; any numeric dtype; RIGHT padding,
    /// each row with >= 1 real token) or `None` (all real). `dropout = Some(rng)` is training mode
    /// (LoRA and attention dropout drawn from `rng`), `None` is eval mode. `output_attentions`
    /// returns the last-token attention rows of every layer. No logits are computed: use
    /// [`Self::logits_at`] or [`Self::lm_logits`].
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        mut dropout: Option<&mut DropoutRng>,
        output_attentions: bool,
    ) -> Result<Qwen2Output, Qwen2Error> {
        let (b, t) = self.check_ids(input_ids)?;
        let lengths = match attention_mask {
            Some(m) => right_padded_lengths(m, b, t)?,
            None => vec![t; b],
        };
        let device = input_ids.device();
        let mask = causal_padding_mask(&lengths, t, t, 0, device)?;
        let (cos, sin) = rope_tables(self.cfg.rope_theta, self.cfg.head_dim(), 0, t, self.dtype(), device)?;
        let mut xs = self.embed(input_ids)?;
        let last_index: Vec<usize> = lengths.iter().map(|n| n - 1).collect();
        let mut attentions = Vec::new();
        for layer in &self.model.layers {
            let (next, probs) = layer.forward_t(&xs, &mask, &cos, &sin, None, dropout.as_deref_mut())?;
            xs = next;
            if output_attentions {
                let rows = (0..b)
                    .map(|row| probs.narrow(0, row, 1)?.narrow(2, last_index[row], 1)?.squeeze(2))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                attentions.push(Tensor::cat(&rows, 0)?);
            }
        }
        let hidden = self.model.norm.forward(&xs)?;
        let pairs: Vec<(usize, usize)> = last_index.iter().copied().enumerate().collect();
        let last_hidden = gather_positions(&hidden, &pairs)?;
        Ok(Qwen2Output {
            hidden,
            last_index,
            last_hidden,
            last_token_attentions: output_attentions.then_some(attentions),
        })
    }

    /// Incremental eval forward for generation: input_ids [B, T_new] u32 (no padding) continue the
    /// sequences whose keys/values are in `cache` (empty for the first call). Returns the final
    /// hidden states [B, T_new, H] of the new positions and appends them to `cache`.
    pub fn forward_cached(&self, input_ids: &Tensor, cache: &mut KvCache) -> Result<Tensor, Qwen2Error> {
        let (b, t) = self.check_ids(input_ids)?;
        let offset = cache.len;
        if offset + t > self.cfg.max_position_embeddings {
            return Err(Qwen2Error::SequenceTooLong { len: offset + t, max: self.cfg.max_position_embeddings });
        }
        if cache.layers.is_empty() {
            cache.layers = vec![None; self.model.layers.len()];
        } else if cache.layers.len() != self.model.layers.len() {
            return Err(Qwen2Error::InvalidInput(format!(
                "KV cache has {} layers, the model {}",
                cache.layers.len(),
                self.model.layers.len()
            )));
        }
        let device = input_ids.device();
        let mask = causal_padding_mask(&vec![offset + t; b], t, offset + t, offset, device)?;
        let (cos, sin) = rope_tables(self.cfg.rope_theta, self.cfg.head_dim(), offset, t, self.dtype(), device)?;
        let mut xs = self.embed(input_ids)?;
        for (layer, slot) in self.model.layers.iter().zip(cache.layers.iter_mut()) {
            xs = layer.forward_t(&xs, &mask, &cos, &sin, Some(slot), None)?.0;
        }
        cache.len = offset + t;
        Ok(self.model.norm.forward(&xs)?)
    }

    /// LM head: hidden [.., H] (any rank >= 1) -> logits [.., V] (in the model dtype).
    pub fn lm_logits(&self, hidden: &Tensor) -> Result<Tensor, Qwen2Error> {
        let w = self.lm_head.as_ref().unwrap_or(&self.model.embed_tokens);
        let dims = hidden.dims().to_vec();
        let Some((&h, lead)) = dims.split_last() else {
            return Err(Qwen2Error::InvalidInput("hidden is a scalar, expected [.., H]".into()));
        };
        let n: usize = lead.iter().product();
        let logits = hidden.reshape((n, h))?.matmul(&w.t()?)?;
        let mut out = lead.to_vec();
        out.push(self.cfg.vocab_size);
        Ok(logits.reshape(out)?)
    }

    /// Logits at selected positions: hidden [B, T, H], `positions` = (row, t) pairs -> [P, V].
    /// Computing [B, T, V] for V = 152k is wasteful; select the positions that predict answer
    /// tokens (position t predicts token t + 1).
    pub fn logits_at(&self, hidden: &Tensor, positions: &[(usize, usize)]) -> Result<Tensor, Qwen2Error> {
        let sel = gather_positions(hidden, positions)?;
        self.lm_logits(&sel)
    }

    /// Greedy decoding with a [`KvCache`]: feeds `prompt` once, then one token per step, and stops
    /// after `max_new_tokens` or at the first token in `stop` (not included). Returns the new tokens.
    pub fn greedy_generate(&self, prompt: &[u32], max_new_tokens: usize, stop: &[u32]) -> Result<Vec<u32>, Qwen2Error> {
        if prompt.is_empty() {
            return Err(Qwen2Error::InvalidInput("empty prompt".into()));
        }
        let device = self.device().clone();
        let mut cache = KvCache::new();
        let mut input = Tensor::from_slice(prompt, (1, prompt.len()), &device)?;
        let mut out = Vec::new();
        while out.len() < max_new_tokens {
            let hidden = self.forward_cached(&input, &mut cache)?;
            let t = hidden.dim(1)?;
            let logits = self.lm_logits(&hidden.narrow(1, t - 1, 1)?.flatten_all()?)?;
            let next = logits.to_dtype(DType::F32)?.argmax(0)?.to_scalar::<u32>()?;
            if stop.contains(&next) {
                break;
            }
            out.push(next);
            input = Tensor::from_slice(&[next], (1, 1), &device)?;
        }
        Ok(out)
    }

    /// [B, T] u32 ids -> [B, T, H] embeddings.
    fn embed(&self, input_ids: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let flat = self.model.embed_tokens.index_select(&input_ids.flatten_all()?, 0)?;
        flat.reshape((b, t, self.cfg.hidden_size))
    }

    fn check_ids(&self, input_ids: &Tensor) -> Result<(usize, usize), Qwen2Error> {
        let (b, t) = input_ids
            .dims2()
            .map_err(|_| Qwen2Error::InvalidInput(format!("input_ids must be [B, T], got {:?}", input_ids.dims())))?;
        if b == 0 || t == 0 {
            return Err(Qwen2Error::InvalidInput(format!("empty input_ids [{b}, {t}]")));
        }
        if input_ids.dtype() != DType::U32 {
            return Err(Qwen2Error::InvalidInput(format!("input_ids must be u32, got {:?}", input_ids.dtype())));
        }
        if t > self.cfg.max_position_embeddings {
            return Err(Qwen2Error::SequenceTooLong { len: t, max: self.cfg.max_position_embeddings });
        }
        let max_id = input_ids.flatten_all()?.max(0)?.to_scalar::<u32>()?;
        if max_id as usize >= self.cfg.vocab_size {
            return Err(Qwen2Error::InvalidInput(format!("token id {max_id} >= vocab_size {}", self.cfg.vocab_size)));
        }
        Ok((b, t))
    }
}

/// hidden [B, T, H], (row, t) pairs -> [P, H] (differentiable gather via `index_select`).
pub fn gather_positions(hidden: &Tensor, positions: &[(usize, usize)]) -> Result<Tensor, Qwen2Error> {
    let (b, t, _) = hidden.dims3()?;
    let mut idx = Vec::with_capacity(positions.len());
    for &(row, pos) in positions {
        if row >= b || pos >= t {
            return Err(Qwen2Error::InvalidInput(format!("position ({row}, {pos}) outside [{b}, {t}]")));
        }
        idx.push((row * t + pos) as u32);
    }
    let n = idx.len();
    let idx = Tensor::from_vec(idx, n, hidden.device())?;
    Ok(hidden.flatten_to(1)?.index_select(&idx, 0)?)
}

/// Real lengths n_b of a right-padded mask [B, T] (values 0/1): each row must be 1^n 0^(T-n), n >= 1.
fn right_padded_lengths(mask: &Tensor, b: usize, t: usize) -> Result<Vec<usize>, Qwen2Error> {
    if mask.dims() != [b, t] {
        return Err(Qwen2Error::InvalidInput(format!(
            "attention_mask {:?} does not match input_ids [{b}, {t}]",
            mask.dims()
        )));
    }
    let rows = mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let mut lengths = Vec::with_capacity(b);
    for (row, vals) in rows.iter().enumerate() {
        let n = vals.iter().take_while(|&&v| v == 1.0).count();
        if n == 0 {
            return Err(Qwen2Error::InvalidInput(format!("attention_mask row {row} has no real token at position 0")));
        }
        if vals[n..].iter().any(|&v| v != 0.0) {
            return Err(Qwen2Error::InvalidInput(format!(
                "attention_mask row {row} is not right-padded 1..1 0..0 (values must be 0/1)"
            )));
        }
        lengths.push(n);
    }
    Ok(lengths)
}

/// Checks checkpoint tensors (HF names) against `cfg`: missing, unexpected, shape and dtype problems.
fn check_tensors(tensors: &HashMap<String, Tensor>, cfg: &Config) -> Result<(), Qwen2Error> {
    let expected = cfg.expected_shapes();
    let mut problems = Incompatibility::default();
    for (name, shape) in &expected {
        match tensors.get(name) {
            None => problems.missing.push(name.clone()),
            Some(t) if !t.dtype().is_float() => problems.bad_dtype.push((name.clone(), t.dtype())),
            Some(t) if t.dims() != shape.as_slice() => problems.shape_mismatch.push(ShapeMismatch {
                name: name.clone(),
                expected: shape.clone(),
                found: t.dims().to_vec(),
            }),
            Some(_) => {}
        }
    }
    problems.unexpected = tensors.keys().filter(|k| !expected.contains_key(*k)).cloned().collect();
    problems.unexpected.sort();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Qwen2Error::Incompatible(problems))
    }
}

/// Random weights under HF names for tests and smoke runs, drawn from ChaCha8(`seed`) on the stream
/// FNV-1a(name): linear weights and embeddings ~ N(0, 0.02), biases ~ N(0, 0.02), RMSNorm weights
/// 1 + N(0, 0.1) (not exactly 1, so that a norm loaded in the wrong place shows).
pub fn init_random(cfg: &Config, seed: u64, device: &Device) -> Result<HashMap<String, Tensor>, Qwen2Error> {
    let mut out = HashMap::new();
    for (name, shape) in cfg.expected_shapes() {
        let mut rng = seeded::rng_for(seed, &name);
        let n: usize = shape.iter().product();
        let (mean, std) = if name.ends_with("norm.weight") { (1.0, 0.1) } else { (0.0, 0.02) };
        let vals = seeded::normal_samples(&mut rng, n, mean, std);
        out.insert(name, Tensor::from_vec(vals, shape, device)?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Chat template
// ---------------------------------------------------------------------------------------------

/// A rendered chat prompt and where the record's `input` lies in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatPrompt {
    /// The full prompt, ending with `<|im_start|>assistant\n` (generation prompt).
    pub text: String,
    /// Byte range of `input` inside `text` (`text[input_range] == input`), so token offsets of the
    /// prompt map back to the input text.
    pub input_range: std::ops::Range<usize>,
}

/// Renders the Qwen2.5 ChatML prompt with the default system prompt for one user turn whose content
/// is `instruction + "\n" + input` (as the CKD-EHR authors prompted):
/// `<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{instruction}\n{input}<|im_end|>\n<|im_start|>assistant\n`.
pub fn chat_prompt(instruction: &str, input: &str) -> ChatPrompt {
    let head = format!("{IM_START}system\n{DEFAULT_SYSTEM_PROMPT}{IM_END}\n{IM_START}user\n{instruction}\n");
    let start = head.len();
    let text = format!("{head}{input}{IM_END}\n{IM_START}assistant\n");
    ChatPrompt { text, input_range: start..start + input.len() }
}

/// The assistant completion that follows [`chat_prompt`] in a training sequence: `{output}<|im_end|>\n`
/// (as the chat template renders an assistant turn).
pub fn chat_answer(output: &str) -> String {
    format!("{output}{IM_END}\n")
}

// ---------------------------------------------------------------------------------------------
// Safetensors (single file or sharded)
// ---------------------------------------------------------------------------------------------

/// The files of a safetensors checkpoint and, when sharded, its index's weight map.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointFiles {
    /// Shard (or single) files, sorted.
    pub files: Vec<PathBuf>,
    /// name -> shard path, from `weight_map` of the index; `None` without an index.
    pub weight_map: Option<BTreeMap<String, PathBuf>>,
}

/// The files of a checkpoint at `path`: a `.safetensors` file; a `*.index.json` (its
/// `weight_map`'s files, relative to its folder); or a folder with `model.safetensors.index.json`
/// or `model.safetensors`.
pub fn safetensors_files(path: &Path) -> Result<CheckpointFiles, Qwen2Error> {
    let index = if path.is_dir() {
        let idx = path.join("model.safetensors.index.json");
        if idx.is_file() {
            idx
        } else {
            return Ok(CheckpointFiles { files: vec![path.join("model.safetensors")], weight_map: None });
        }
    } else if path.to_string_lossy().ends_with(".json") {
        path.to_path_buf()
    } else {
        return Ok(CheckpointFiles { files: vec![path.to_path_buf()], weight_map: None });
    };
    let text = std::fs::read_to_string(&index).map_err(|source| Qwen2Error::Io { path: index.clone(), source })?;
    let bad = |message: String| Qwen2Error::ShardIndex { path: index.clone(), message };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no `weight_map` object".into()))?;
    let dir = index.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut weight_map = BTreeMap::new();
    let mut files = BTreeSet::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| bad(format!("weight_map[{name}] is not a string")))?;
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(bad(format!("weight_map[{name}] = {file} is not a file name")));
        }
        files.insert(dir.join(file));
        weight_map.insert(name.clone(), dir.join(file));
    }
    Ok(CheckpointFiles { files: files.into_iter().collect(), weight_map: Some(weight_map) })
}

/// Reads every tensor of a checkpoint (see [`safetensors_files`]) onto `device`. With an index,
/// every tensor it lists must be in the shard it names ([`Qwen2Error::ShardMissingTensor`]).
pub fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, Qwen2Error> {
    let CheckpointFiles { files, weight_map } = safetensors_files(path)?;
    let mut out = HashMap::new();
    let mut by_file: HashMap<PathBuf, BTreeSet<String>> = HashMap::new();
    for file in &files {
        let tensors = candle_core::safetensors::load(file, device)
            .map_err(|source| Qwen2Error::Read { path: file.clone(), source })?;
        by_file.insert(file.clone(), tensors.keys().cloned().collect());
        for (name, t) in tensors {
            if out.insert(name.clone(), t).is_some() {
                return Err(Qwen2Error::ShardIndex {
                    path: file.clone(),
                    message: format!("tensor `{name}` is present in more than one shard"),
                });
            }
        }
    }
    if let Some(map) = weight_map {
        for (name, shard) in map {
            if !by_file.get(&shard).is_some_and(|names| names.contains(&name)) {
                return Err(Qwen2Error::ShardMissingTensor { name, shard });
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// GGUF (llama.cpp `qwen2` architecture)
// ---------------------------------------------------------------------------------------------

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

fn gguf_value<'a>(content: &'a gguf_file::Content, key: &str) -> Result<&'a gguf_file::Value, Qwen2Error> {
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
    let mut file = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
    let content =
        gguf_file::Content::read(&mut file).map_err(|e| Qwen2Error::Gguf(format!("{}: {e}", path.display())))?;
    let config = gguf_config(&content)?;
    let tokenizer =
        if content.metadata.contains_key("tokenizer.ggml.model") { Some(gguf_tokenizer(&content)?) } else { None };
    let tensors = read_gguf_tensors(&content, &mut file, device)?;
    let model = Qwen2ForCausalLM::from_tensors(tensors, &config, dtype, device)?;
    Ok(GgufQwen2 { config, model, tokenizer })
}

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_NORMAL: i64 = 1;
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
    tokenizers::Tokenizer::from_file(path).map_err(|e| Qwen2Error::Tokenizer(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::IndexOp;
    use candle_nn::VarMap;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Tolerance of comparisons between two f32 evaluations of the same function (different batch
    /// composition, padding, file format or op grouping).
    const TOL: f32 = 1e-5;

    fn dev() -> Device {
        Device::Cpu
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    fn tiny_model(cfg: &Config, seed: u64) -> (Qwen2ForCausalLM, HashMap<String, Tensor>) {
        let tensors = init_random(cfg, seed, &dev()).unwrap();
        let model = Qwen2ForCausalLM::from_tensors(tensors.clone(), cfg, DType::F32, &dev()).unwrap();
        (model, tensors)
    }

    /// Right-pads `seqs` to `t` (pad id 0, mask 0): ids [B, t] u32, mask [B, t] u32.
    fn padded(seqs: &[&[u32]], t: usize) -> (Tensor, Tensor) {
        let (mut ids, mut mask) = (vec![], vec![]);
        for s in seqs {
            for i in 0..t {
                ids.push(s.get(i).copied().unwrap_or(0));
                mask.push(u32::from(i < s.len()));
            }
        }
        let b = seqs.len();
        (Tensor::from_vec(ids, (b, t), &dev()).unwrap(), Tensor::from_vec(mask, (b, t), &dev()).unwrap())
    }

    fn one_row(seq: &[u32]) -> Tensor {
        Tensor::from_slice(seq, (1, seq.len()), &dev()).unwrap()
    }

    const SEQ_A: [u32; 5] = [3, 17, 200, 42, 9];
    const SEQ_B: [u32; 11] = [151, 7, 99, 250, 1, 64, 5, 77, 120, 8, 31];

    /// Mean next-token cross entropy over the real positions t < n_b - 1 (position t predicts
    /// token t + 1): log-softmax written as lse(x) - x[target], lse = max + log(sum(exp(x - max))).
    fn sft_loss(model: &Qwen2ForCausalLM, seqs: &[&[u32]], t: usize, rng: &mut DropoutRng) -> Tensor {
        let (ids, mask) = padded(seqs, t);
        let out = model.forward_t(&ids, Some(&mask), Some(rng), false).unwrap();
        let mut pos = vec![];
        let mut targets = vec![];
        for (row, s) in seqs.iter().enumerate() {
            for i in 0..s.len() - 1 {
                pos.push((row, i));
                targets.push(s[i + 1] as usize);
            }
        }
        let logits = model.logits_at(&out.hidden, &pos).unwrap();
        let v = model.config().vocab_size;
        let mut onehot = vec![0f32; pos.len() * v];
        for (k, &tg) in targets.iter().enumerate() {
            onehot[k * v + tg] = 1.0;
        }
        let onehot = Tensor::from_vec(onehot, (pos.len(), v), &dev()).unwrap();
        let max = logits.max_keepdim(1).unwrap().detach();
        let lse = (logits.broadcast_sub(&max).unwrap().exp().unwrap().sum_keepdim(1).unwrap().log().unwrap() + &max)
            .unwrap()
            .squeeze(1)
            .unwrap();
        let picked = (logits * onehot).unwrap().sum(1).unwrap();
        (lse - picked).unwrap().mean_all().unwrap()
    }

    #[test]
    fn config_json_roundtrip_and_rejects_unsupported_features() {
        // Qwen2.5-0.5B-Instruct config.json.
        let json = r#"{"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
            "bos_token_id": 151643, "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 896,
            "initializer_range": 0.02, "intermediate_size": 4864, "max_position_embeddings": 32768,
            "max_window_layers": 21, "model_type": "qwen2", "num_attention_heads": 14,
            "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
            "torch_dtype": "bfloat16", "transformers_version": "4.43.1", "use_cache": true,
            "use_sliding_window": false, "vocab_size": 151936}"#;
        assert_eq!(Config::from_json(json).unwrap(), Config::qwen2_5_0_5b());
        let cfg = Config::from_json(r#"{"eos_token_id": [151645, 151643]}"#).unwrap();
        assert_eq!(cfg.eos_token_id.unwrap().to_vec(), vec![151645, 151643]);
        assert_eq!(Config::from_json("{}").unwrap(), Config::default());
        let err = Config::from_json(r#"{"hidden_act": "gelu"}"#).unwrap_err();
        assert!(err.to_string().contains("gelu"), "{err}");
        for bad in [
            r#"{"rope_scaling": {"type": "yarn", "factor": 4.0}}"#,
            r#"{"use_sliding_window": true}"#,
            r#"{"num_attention_heads": 32, "num_key_value_heads": 5}"#,
        ] {
            assert!(matches!(Config::from_json(bad), Err(Qwen2Error::InvalidConfig(_))), "{bad}");
        }
        assert!(Config::from_json(r#"{"rope_scaling": null}"#).is_ok());
        for cfg in [Config::tiny(), Config::qwen2_5_7b(), Config::qwen2_5_0_5b()] {
            cfg.validate().unwrap();
            let back: Config = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
            assert_eq!(back, cfg);
        }
        assert_eq!(Config::qwen2_5_7b().head_dim(), 128);
        assert_eq!(Config::qwen2_5_0_5b().head_dim(), 64);
        // 0.5B: 290 tensors with tied embeddings (2 + 12 per layer).
        assert_eq!(Config::qwen2_5_0_5b().expected_shapes().len(), 2 + 12 * 24);
    }

    #[test]
    fn rmsnorm_and_rope_match_formulas() {
        // RMSNorm([1, 2, 3, 6]) with weight 2: mean of squares (1 + 4 + 9 + 36) / 4 = 12.5.
        let norm = RmsNorm::new(Tensor::full(2f32, 4, &dev()).unwrap(), 1e-6);
        let x = Tensor::new(&[[1f32, 2., 3., 6.]], &dev()).unwrap();
        let got: Vec<f32> = norm.forward(&x).unwrap().i(0).unwrap().to_vec1().unwrap();
        for (g, xi) in got.iter().zip([1f32, 2., 3., 6.]) {
            assert!((g - xi / (12.5f32 + 1e-6).sqrt() * 2.).abs() < 1e-6);
        }
        // RoPE equals candle's fused rotate-half `rope` (forward only) with the half tables, and
        // the score between a rotated query at position p and key at position s depends on p - s only.
        let (b, n, t, d) = (2, 3, 7, 8);
        let x = Tensor::randn(0f32, 1., (b, n, t, d), &dev()).unwrap();
        let (cos, sin) = rope_tables(10000.0, d, 0, t, DType::F32, &dev()).unwrap();
        let ours = apply_rope(&x, &cos, &sin).unwrap();
        let fused = candle_nn::rotary_emb::rope(
            &x,
            &cos.narrow(1, 0, d / 2).unwrap().contiguous().unwrap(),
            &sin.narrow(1, 0, d / 2).unwrap().contiguous().unwrap(),
        )
        .unwrap();
        assert!(max_abs_diff(&ours, &fused) < 1e-6);
        // Position 0 is the identity.
        assert!(max_abs_diff(&ours.i((.., .., 0..1)).unwrap(), &x.i((.., .., 0..1)).unwrap()) < 1e-7);
        let q = Tensor::randn(0f32, 1., (1, 1, 1, d), &dev()).unwrap();
        let k = Tensor::randn(0f32, 1., (1, 1, 1, d), &dev()).unwrap();
        let score = |p: usize, s: usize| -> f32 {
            let (cp, sp) = rope_tables(10000.0, d, p, 1, DType::F32, &dev()).unwrap();
            let (cs, ss) = rope_tables(10000.0, d, s, 1, DType::F32, &dev()).unwrap();
            let qr = apply_rope(&q, &cp, &sp).unwrap();
            let kr = apply_rope(&k, &cs, &ss).unwrap();
            (qr * kr).unwrap().sum_all().unwrap().to_scalar().unwrap()
        };
        assert!((score(5, 2) - score(13, 10)).abs() < 1e-5);
        assert!((score(5, 2) - score(5, 3)).abs() > 1e-4);
    }

    /// With LoRA on all seven projections, one backward of an SFT loss reaches every adapter.
    /// B starts at 0, which makes dL/dA = scale * (dL/dy)^T-weighted products with B exactly 0 at
    /// step 0 (A only influences the output through B). So: step 0 checks B gradients non-zero and
    /// A gradients present; after setting every B to non-zero values, all A gradients are non-zero.
    /// The base weights are not Vars and get no gradient.
    #[test]
    fn every_lora_parameter_receives_a_gradient() {
        let cfg = Config::tiny();
        let (model, _) = tiny_model(&cfg, 1);
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev());
        let lora = LoraConfig { r: 4, alpha: 8.0, dropout: 0.1, ..LoraConfig::default() };
        let model = model.with_lora(vb, &lora, 7).unwrap();
        assert_eq!(model.lora_modules().len(), 7 * cfg.num_hidden_layers);
        assert_eq!(varmap.all_vars().len(), 2 * 7 * cfg.num_hidden_layers);
        let names: Vec<String> = {
            let mut n: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
            n.sort();
            n
        };
        assert!(names.contains(&"model.layers.1.mlp.down_proj.lora_A.weight".to_string()), "{names:?}");
        assert!(names.contains(&"model.layers.0.self_attn.q_proj.lora_B.weight".to_string()), "{names:?}");

        let grad_sums = |seed: u64| -> Vec<(String, Option<f32>)> {
            let mut rng = DropoutRng::new(seed);
            let loss = sft_loss(&model, &[&SEQ_A, &SEQ_B], 12, &mut rng);
            let grads = loss.backward().unwrap();
            let layer0 = &model.model.layers[0];
            for base in [layer0.self_attn.q_proj.weight(), layer0.mlp.down_proj.weight(), &model.model.embed_tokens] {
                assert!(!base.is_variable());
                assert!(grads.get(base).is_none());
            }
            let data = varmap.data().lock().unwrap();
            names
                .iter()
                .map(|n| {
                    let g = grads.get(data[n].as_tensor());
                    (n.clone(), g.map(|g| g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()))
                })
                .collect()
        };
        for (name, g) in grad_sums(3) {
            let g = g.unwrap_or_else(|| panic!("{name} has no gradient"));
            if name.ends_with("lora_B.weight") {
                assert!(g > 0.0, "{name}: zero gradient");
            } else {
                assert_eq!(g, 0.0, "{name}: A's gradient must be exactly 0 while B = 0");
            }
        }
        {
            let data = varmap.data().lock().unwrap();
            for (name, var) in data.iter().filter(|(n, _)| n.ends_with("lora_B.weight")) {
                let vals = seeded::normal_samples(
                    &mut ChaCha8Rng::seed_from_u64(seeded::fnv1a(name)),
                    var.elem_count(),
                    0.0,
                    0.1,
                );
                var.set(&Tensor::from_vec(vals, var.shape(), &dev()).unwrap()).unwrap();
            }
        }
        for (name, g) in grad_sums(4) {
            let g = g.unwrap_or_else(|| panic!("{name} has no gradient"));
            assert!(g > 0.0, "{name}: zero gradient");
        }
    }

    #[test]
    fn lora_starts_as_identity_and_merge_preserves_outputs() {
        let cfg = Config::tiny();
        let (base, _) = tiny_model(&cfg, 1);
        let (ids, mask) = padded(&[&SEQ_A, &SEQ_B], 11);
        let want = base.forward(&ids, Some(&mask)).unwrap().last_hidden;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev());
        let lora =
            LoraConfig { r: 2, alpha: 4.0, dropout: 0.0, target_modules: vec!["q_proj".into(), "up_proj".into()] };
        let mut model = base.clone().with_lora(vb.clone(), &lora, 1).unwrap();
        assert_eq!(model.lora_modules().len(), 2 * cfg.num_hidden_layers);
        assert_eq!(max_abs_diff(&model.forward(&ids, Some(&mask)).unwrap().last_hidden, &want), 0.0);
        for (name, var) in varmap.data().lock().unwrap().iter() {
            let vals =
                seeded::normal_samples(&mut ChaCha8Rng::seed_from_u64(seeded::fnv1a(name)), var.elem_count(), 0.0, 0.2);
            var.set(&Tensor::from_vec(vals, var.shape(), &dev()).unwrap()).unwrap();
        }
        let adapted = model.forward(&ids, Some(&mask)).unwrap().last_hidden;
        assert!(max_abs_diff(&adapted, &want) > 1e-3);
        model.merge_lora().unwrap();
        assert!(model.lora_modules().is_empty());
        let merged = model.forward(&ids, Some(&mask)).unwrap().last_hidden;
        assert!(max_abs_diff(&adapted, &merged) < TOL);
        // Attaching twice, or an unknown module, is an error.
        let twice = base.clone().with_lora(vb.clone(), &lora, 1).unwrap().with_lora(vb.clone(), &lora, 1);
        assert!(matches!(twice, Err(Qwen2Error::InvalidConfig(m)) if m.contains("already has")));
        let unknown = LoraConfig { target_modules: vec!["qkv".into()], ..LoraConfig::default() };
        assert!(matches!(base.with_lora(vb, &unknown, 1), Err(Qwen2Error::Lora(_))));
    }

    #[test]
    fn batch_equals_single() {
        let cfg = Config::tiny();
        let (model, _) = tiny_model(&cfg, 2);
        let t = 14;
        let (ids, mask) = padded(&[&SEQ_A, &SEQ_B], t);
        let batch = model.forward_t(&ids, Some(&mask), None, true).unwrap();
        assert_eq!(batch.last_index, vec![SEQ_A.len() - 1, SEQ_B.len() - 1]);
        let batch_att = batch.last_token_attentions.unwrap();
        assert_eq!(batch_att.len(), cfg.num_hidden_layers);
        assert_eq!(batch_att[0].dims(), &[2, cfg.num_attention_heads, t]);
        for (row, seq) in [&SEQ_A[..], &SEQ_B[..]].iter().enumerate() {
            let one = model.forward_t(&one_row(seq), None, None, true).unwrap();
            let n = seq.len();
            assert_eq!(one.last_index, vec![n - 1]);
            let d = max_abs_diff(&batch.last_hidden.i(row..row + 1).unwrap(), &one.last_hidden);
            assert!(d < TOL, "row {row}: last hidden differs by {d}");
            let d = max_abs_diff(&batch.hidden.i((row..row + 1, 0..n)).unwrap(), &one.hidden);
            assert!(d < TOL, "row {row}: hidden differs by {d}");
            for (layer, (ba, oa)) in batch_att.iter().zip(one.last_token_attentions.unwrap()).enumerate() {
                let d = max_abs_diff(&ba.i((row..row + 1, .., 0..n)).unwrap(), &oa);
                assert!(d < TOL, "row {row} layer {layer}: attention differs by {d}");
                let leak: f32 = ba.i((row, .., n..)).unwrap().sum_all().unwrap().to_scalar().unwrap();
                assert_eq!(leak, 0.0, "attention on padding");
                let sums: Vec<f32> = oa.sum(2).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
            }
            // The row's last hidden state is the hidden state at its last real position.
            let d = max_abs_diff(&one.last_hidden, &one.hidden.i((.., n - 1)).unwrap());
            assert_eq!(d, 0.0);
        }
    }

    #[test]
    fn causal_positions_ignore_later_tokens() {
        let (model, _) = tiny_model(&Config::tiny(), 3);
        let a = model.forward(&one_row(&SEQ_B), None).unwrap().hidden;
        for t in [0, 4, 9] {
            let mut changed = SEQ_B;
            for v in changed.iter_mut().skip(t + 1) {
                *v = (*v + 101) % 256;
            }
            let b = model.forward(&one_row(&changed), None).unwrap().hidden;
            let d = max_abs_diff(&a.i((.., 0..=t)).unwrap(), &b.i((.., 0..=t)).unwrap());
            assert!(d < 1e-6, "t = {t}: prefix changed by {d}");
            let d = max_abs_diff(&a.i((.., t + 1..)).unwrap(), &b.i((.., t + 1..)).unwrap());
            assert!(d > 1e-4, "t = {t}: later positions did not change");
        }
    }

    #[test]
    fn kv_cache_and_greedy_generation_match_full_forward() {
        let (model, _) = tiny_model(&Config::tiny(), 4);
        let full = model.forward(&one_row(&SEQ_B), None).unwrap().hidden;
        let mut cache = KvCache::new();
        let first = model.forward_cached(&one_row(&SEQ_B[..6]), &mut cache).unwrap();
        let mut parts = vec![first];
        for &tok in &SEQ_B[6..] {
            parts.push(model.forward_cached(&one_row(&[tok]), &mut cache).unwrap());
        }
        assert_eq!(cache.len(), SEQ_B.len());
        let inc = Tensor::cat(&parts, 1).unwrap();
        assert!(max_abs_diff(&full, &inc) < TOL);
        // Greedy decoding with the cache equals argmax over full recomputation at every step.
        let got = model.greedy_generate(&SEQ_A, 6, &[]).unwrap();
        let mut seq = SEQ_A.to_vec();
        for _ in 0..6 {
            let out = model.forward(&one_row(&seq), None).unwrap();
            let logits = model.logits_at(&out.hidden, &[(0, seq.len() - 1)]).unwrap();
            seq.push(logits.squeeze(0).unwrap().argmax(0).unwrap().to_scalar::<u32>().unwrap());
        }
        assert_eq!(got, seq[SEQ_A.len()..]);
        // Stop tokens end generation and are not returned.
        let stopped = model.greedy_generate(&SEQ_A, 6, &[got[2]]).unwrap();
        assert_eq!(stopped, got[..got.iter().position(|&x| x == got[2]).unwrap()]);
    }

    #[test]
    fn logits_at_selects_rows_of_the_full_logits() {
        for tie in [false, true] {
            let cfg = Config { tie_word_embeddings: tie, ..Config::tiny() };
            let (model, tensors) = tiny_model(&cfg, 5);
            assert_eq!(tensors.contains_key("lm_head.weight"), !tie);
            let (ids, mask) = padded(&[&SEQ_A, &SEQ_B], 11);
            let out = model.forward(&ids, Some(&mask)).unwrap();
            let all = model.lm_logits(&out.hidden).unwrap();
            assert_eq!(all.dims(), &[2, 11, 256]);
            let sel = model.logits_at(&out.hidden, &[(1, 10), (0, 2)]).unwrap();
            assert_eq!(max_abs_diff(&sel.i(0).unwrap(), &all.i((1, 10)).unwrap()), 0.0);
            assert_eq!(max_abs_diff(&sel.i(1).unwrap(), &all.i((0, 2)).unwrap()), 0.0);
            assert!(matches!(model.logits_at(&out.hidden, &[(2, 0)]), Err(Qwen2Error::InvalidInput(_))));
        }
    }

    /// A bf16 model (norms and softmax in f32 inside) stays close to the f32 one: bf16 keeps 8
    /// mantissa bits, so hidden states agree to a few 1e-2 at this size.
    #[test]
    fn bf16_model_is_close_to_f32() {
        let cfg = Config::tiny();
        let tensors = init_random(&cfg, 9, &dev()).unwrap();
        let f32m = Qwen2ForCausalLM::from_tensors(tensors.clone(), &cfg, DType::F32, &dev()).unwrap();
        let bf16m = Qwen2ForCausalLM::from_tensors(tensors, &cfg, DType::BF16, &dev()).unwrap();
        assert_eq!(bf16m.dtype(), DType::BF16);
        let (ids, mask) = padded(&[&SEQ_A, &SEQ_B], 11);
        let a = f32m.forward_t(&ids, Some(&mask), None, true).unwrap();
        let b = bf16m.forward_t(&ids, Some(&mask), None, true).unwrap();
        assert_eq!(b.last_hidden.dtype(), DType::BF16);
        let d = max_abs_diff(&a.last_hidden, &b.last_hidden.to_dtype(DType::F32).unwrap());
        assert!(d < 0.1, "bf16 last hidden differs by {d}");
        let att = &b.last_token_attentions.unwrap()[1];
        assert_eq!(att.dtype(), DType::F32);
        assert!(max_abs_diff(&a.last_token_attentions.unwrap()[1], att) < 0.02);
    }

    #[test]
    fn rejects_bad_inputs() {
        let (model, _) = tiny_model(&Config::tiny(), 1);
        let (ids4, _) = padded(&[&SEQ_A[..4]], 4);
        let left = Tensor::new(&[[0u32, 1, 1, 1]], &dev()).unwrap();
        assert!(
            matches!(model.forward(&ids4, Some(&left)), Err(Qwen2Error::InvalidInput(m)) if m.contains("right-padded") || m.contains("position 0"))
        );
        let holes = Tensor::new(&[[1u32, 0, 1, 0]], &dev()).unwrap();
        assert!(matches!(model.forward(&ids4, Some(&holes)), Err(Qwen2Error::InvalidInput(_))));
        let short = Tensor::new(&[[1u32, 1, 1]], &dev()).unwrap();
        assert!(matches!(model.forward(&ids4, Some(&short)), Err(Qwen2Error::InvalidInput(_))));
        let long = Tensor::zeros((1, 129), DType::U32, &dev()).unwrap();
        assert!(matches!(model.forward(&long, None), Err(Qwen2Error::SequenceTooLong { len: 129, max: 128 })));
        let oov = Tensor::new(&[[1u32, 256]], &dev()).unwrap();
        assert!(matches!(model.forward(&oov, None), Err(Qwen2Error::InvalidInput(m)) if m.contains("256")));
        let i64_ids = Tensor::new(&[[1i64, 2]], &dev()).unwrap();
        assert!(matches!(model.forward(&i64_ids, None), Err(Qwen2Error::InvalidInput(_))));
    }

    fn incompatibility<T>(r: Result<T, Qwen2Error>) -> Incompatibility {
        match r {
            Err(Qwen2Error::Incompatible(i)) => i,
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("loaded a bad checkpoint"),
        }
    }

    #[test]
    fn bad_checkpoints_are_errors_that_name_the_tensors() {
        let cfg = Config::tiny();
        let good = init_random(&cfg, 1, &dev()).unwrap();
        let load = |t: &HashMap<String, Tensor>, cfg: &Config| {
            Qwen2ForCausalLM::from_tensors(t.clone(), cfg, DType::F32, &dev()).map(|_| ())
        };
        let mut missing = good.clone();
        missing.remove("model.layers.1.self_attn.k_proj.bias");
        let i = incompatibility(load(&missing, &cfg));
        assert_eq!(i.missing, vec!["model.layers.1.self_attn.k_proj.bias"]);
        assert!(Qwen2Error::Incompatible(i).to_string().contains("model.layers.1.self_attn.k_proj.bias"));

        let mut extra = good.clone();
        extra.insert("model.layers.1.self_attn.o_proj.bias".into(), Tensor::zeros(64, DType::F32, &dev()).unwrap());
        let i = incompatibility(load(&extra, &cfg));
        assert_eq!(i.unexpected, vec!["model.layers.1.self_attn.o_proj.bias"]);
        assert!(i.missing.is_empty());

        // Tied config: lm_head.weight is unexpected; untied config without it: missing.
        let tied = Config { tie_word_embeddings: true, ..cfg.clone() };
        assert_eq!(incompatibility(load(&good, &tied)).unexpected, vec!["lm_head.weight"]);
        let mut no_head = good.clone();
        no_head.remove("lm_head.weight");
        assert_eq!(incompatibility(load(&no_head, &cfg)).missing, vec!["lm_head.weight"]);
        load(&no_head, &tied).unwrap();

        let mut shape = good.clone();
        shape.insert("model.norm.weight".into(), Tensor::ones(65, DType::F32, &dev()).unwrap());
        let i = incompatibility(load(&shape, &cfg));
        assert_eq!(
            i.shape_mismatch,
            vec![ShapeMismatch { name: "model.norm.weight".into(), expected: vec![64], found: vec![65] }]
        );
        let mut ints = good.clone();
        ints.insert("model.norm.weight".into(), Tensor::ones(64, DType::U32, &dev()).unwrap());
        assert_eq!(incompatibility(load(&ints, &cfg)).bad_dtype, vec![("model.norm.weight".to_string(), DType::U32)]);

        // A bf16 checkpoint loads and runs in f32 (converted).
        let bf16: HashMap<String, Tensor> =
            good.iter().map(|(k, v)| (k.clone(), v.to_dtype(DType::BF16).unwrap())).collect();
        let m = Qwen2ForCausalLM::from_tensors(bf16, &cfg, DType::F32, &dev()).unwrap();
        assert_eq!(m.dtype(), DType::F32);
        m.forward(&one_row(&SEQ_A), None).unwrap();
    }

    #[test]
    fn sharded_safetensors_load_like_a_single_file() {
        let cfg = Config::tiny();
        let tensors = init_random(&cfg, 6, &dev()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let single = dir.path().join("single.safetensors");
        candle_core::safetensors::save(&tensors, &single).unwrap();

        let sharded = dir.path().join("sharded");
        std::fs::create_dir(&sharded).unwrap();
        let write_shards = |drop_from_shard: Option<&str>, drop_from_index: Option<&str>| {
            let mut shards: [HashMap<String, Tensor>; 2] = Default::default();
            let mut map = serde_json::Map::new();
            for (name, t) in &tensors {
                let k = usize::from(name.starts_with("model.layers.1") || name == "lm_head.weight");
                let file = format!("model-0000{}-of-00002.safetensors", k + 1);
                if Some(name.as_str()) != drop_from_index {
                    map.insert(name.clone(), file.clone().into());
                }
                if Some(name.as_str()) != drop_from_shard {
                    shards[k].insert(name.clone(), t.clone());
                }
            }
            for (k, shard) in shards.iter().enumerate() {
                let path = sharded.join(format!("model-0000{}-of-00002.safetensors", k + 1));
                candle_core::safetensors::save(shard, path).unwrap();
            }
            let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
            std::fs::write(sharded.join("model.safetensors.index.json"), index.to_string()).unwrap();
        };
        write_shards(None, None);
        let found = safetensors_files(&sharded).unwrap();
        assert_eq!(found.files.len(), 2);
        assert_eq!(found.weight_map.unwrap().len(), tensors.len());
        let a = read_safetensors(&single, &dev()).unwrap();
        let b = read_safetensors(&sharded, &dev()).unwrap();
        let c = read_safetensors(&sharded.join("model.safetensors.index.json"), &dev()).unwrap();
        assert_eq!(a.len(), tensors.len());
        for (name, t) in &a {
            assert_eq!(max_abs_diff(t, &b[name]), 0.0, "{name}");
            assert_eq!(max_abs_diff(t, &c[name]), 0.0, "{name}");
        }
        let ma = Qwen2ForCausalLM::from_tensors(a, &cfg, DType::F32, &dev()).unwrap();
        let mb = Qwen2ForCausalLM::from_tensors(b, &cfg, DType::F32, &dev()).unwrap();
        let x = one_row(&SEQ_B);
        assert_eq!(max_abs_diff(&ma.forward(&x, None).unwrap().hidden, &mb.forward(&x, None).unwrap().hidden), 0.0);

        // Listed in the index but absent from its shard: an error naming the tensor and shard.
        let gone = "model.layers.1.mlp.up_proj.weight";
        write_shards(Some(gone), None);
        match read_safetensors(&sharded, &dev()) {
            Err(e @ Qwen2Error::ShardMissingTensor { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(gone) && msg.contains("model-00002-of-00002.safetensors"), "{msg}");
            }
            other => panic!("expected ShardMissingTensor, got {:?}", other.map(|m| m.len())),
        }
        // Absent from index and shards: the model reports it missing.
        write_shards(Some(gone), Some(gone));
        let partial = read_safetensors(&sharded, &dev()).unwrap();
        let i = incompatibility(Qwen2ForCausalLM::from_tensors(partial, &cfg, DType::F32, &dev()));
        assert_eq!(i.missing, vec![gone]);
        // A broken index is a typed error.
        std::fs::write(sharded.join("model.safetensors.index.json"), "{\"metadata\": {}}").unwrap();
        assert!(matches!(read_safetensors(&sharded, &dev()), Err(Qwen2Error::ShardIndex { .. })));
    }

    #[test]
    fn gguf_names_map_both_ways() {
        let cfg = Config::tiny();
        for name in cfg.expected_shapes().keys() {
            let g = hf_to_gguf_name(name).unwrap_or_else(|| panic!("{name} has no GGUF name"));
            assert_eq!(gguf_to_hf_name(&g).as_deref(), Some(name.as_str()));
        }
        assert_eq!(gguf_to_hf_name("blk.3.attn_q.bias").unwrap(), "model.layers.3.self_attn.q_proj.bias");
        assert_eq!(gguf_to_hf_name("blk.0.ffn_norm.weight").unwrap(), "model.layers.0.post_attention_layernorm.weight");
        assert_eq!(gguf_to_hf_name("output.weight").unwrap(), "lm_head.weight");
        for bad in ["rope_freqs.weight", "blk.x.attn_q.weight", "blk.0.attn_q.scale", "blk.0.attn_qkv.weight"] {
            assert_eq!(gguf_to_hf_name(bad), None, "{bad}");
        }
    }

    /// Writes a GGUF v2 file (F32 tensors under GGUF names, qwen2 metadata) for `tensors`.
    fn write_gguf(path: &Path, cfg: &Config, tensors: &HashMap<String, Tensor>, extra: &[(&str, gguf_file::Value)]) {
        use gguf_file::Value as V;
        let u = |x: usize| V::U32(x as u32);
        let mut md: Vec<(&str, V)> = vec![
            ("general.architecture", V::String("qwen2".into())),
            ("qwen2.block_count", u(cfg.num_hidden_layers)),
            ("qwen2.context_length", u(cfg.max_position_embeddings)),
            ("qwen2.embedding_length", u(cfg.hidden_size)),
            ("qwen2.feed_forward_length", u(cfg.intermediate_size)),
            ("qwen2.attention.head_count", u(cfg.num_attention_heads)),
            ("qwen2.attention.head_count_kv", u(cfg.num_key_value_heads)),
            ("qwen2.rope.freq_base", V::F32(cfg.rope_theta as f32)),
            ("qwen2.attention.layer_norm_rms_epsilon", V::F32(cfg.rms_norm_eps as f32)),
        ];
        md.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        let q: Vec<(String, QTensor)> = names
            .iter()
            .map(|n| (hf_to_gguf_name(n).unwrap(), QTensor::quantize(&tensors[*n], GgmlDType::F32).unwrap()))
            .collect();
        let md_refs: Vec<(&str, &V)> = md.iter().map(|(k, v)| (*k, v)).collect();
        let q_refs: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut f = std::fs::File::create(path).unwrap();
        gguf_file::write(&mut f, &md_refs, &q_refs).unwrap();
    }

    #[test]
    fn gguf_gives_the_same_logits_as_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        for tie in [false, true] {
            let cfg = Config { tie_word_embeddings: tie, rope_theta: 1_000_000.0, ..Config::tiny() };
            let tensors = init_random(&cfg, 8, &dev()).unwrap();
            let st = dir.path().join(format!("m{tie}.safetensors"));
            candle_core::safetensors::save(&tensors, &st).unwrap();
            let gg = dir.path().join(format!("m{tie}.gguf"));
            let extra = [("tokenizer.ggml.eos_token_id", gguf_file::Value::U32(7))];
            write_gguf(&gg, &cfg, &tensors, &extra);

            let from_st =
                Qwen2ForCausalLM::from_tensors(read_safetensors(&st, &dev()).unwrap(), &cfg, DType::F32, &dev())
                    .unwrap();
            let loaded = load_gguf(&gg, DType::F32, &dev()).unwrap();
            assert!(loaded.tokenizer.is_none());
            // rms_norm_eps goes through f32 in GGUF; everything else round-trips exactly.
            let want_cfg = Config {
                rms_norm_eps: f64::from(cfg.rms_norm_eps as f32),
                eos_token_id: Some(TokenIds::One(7)),
                ..cfg.clone()
            };
            assert_eq!(loaded.config, want_cfg);
            let (ids, mask) = padded(&[&SEQ_A, &SEQ_B], 11);
            let a = from_st.forward(&ids, Some(&mask)).unwrap();
            let b = loaded.model.forward(&ids, Some(&mask)).unwrap();
            let la = from_st.lm_logits(&a.hidden).unwrap();
            let lb = loaded.model.lm_logits(&b.hidden).unwrap();
            let d = max_abs_diff(&la, &lb);
            assert!(d < TOL, "tie = {tie}: logits differ by {d}");
        }
        // Wrong architecture and missing metadata are typed errors that name the key.
        let cfg = Config::tiny();
        let tensors = init_random(&cfg, 8, &dev()).unwrap();
        let gg = dir.path().join("llama.gguf");
        write_gguf(&gg, &cfg, &tensors, &[("general.architecture", gguf_file::Value::String("llama".into()))]);
        // The later duplicate key wins on read.
        assert!(matches!(load_gguf(&gg, DType::F32, &dev()), Err(Qwen2Error::Gguf(m)) if m.contains("llama")));
        let mut f = std::fs::File::open(dir.path().join("mfalse.gguf")).unwrap();
        let mut content = gguf_file::Content::read(&mut f).unwrap();
        content.metadata.remove("qwen2.attention.head_count_kv");
        assert!(matches!(gguf_config(&content), Err(Qwen2Error::Gguf(m)) if m.contains("head_count_kv")));
    }

    /// GPT-2's byte-to-unicode table: printable bytes map to themselves, the rest to U+0100 onward.
    fn byte_chars() -> Vec<char> {
        let mut direct: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
        let mut table = vec!['\0'; 256];
        for &b in &direct {
            table[b as usize] = char::from_u32(b).unwrap();
        }
        let mut n = 0;
        for b in 0..256u32 {
            if !direct.contains(&b) {
                table[b as usize] = char::from_u32(256 + n).unwrap();
                n += 1;
                direct.push(b);
            }
        }
        table
    }

    #[test]
    fn gguf_tokenizer_is_byte_level_bpe_with_special_tokens() {
        use gguf_file::Value as V;
        let mut tokens: Vec<String> = byte_chars().iter().map(|c| c.to_string()).collect();
        let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d"];
        for m in merges {
            tokens.push(m.replace(' ', ""));
        }
        let mut types = vec![TOKEN_NORMAL as i32; tokens.len()];
        for (tok, ty) in
            [("<|endoftext|>", 3), ("<|im_start|>", 3), ("<|im_end|>", 3), ("<tool_call>", 4), ("[PAD300]", 5)]
        {
            tokens.push(tok.into());
            types.push(ty);
        }
        let strs = |v: &[String]| V::Array(v.iter().map(|s| V::String(s.clone())).collect());
        let md = [
            ("tokenizer.ggml.model", V::String("gpt2".into())),
            ("tokenizer.ggml.pre", V::String("qwen2".into())),
            ("tokenizer.ggml.tokens", strs(&tokens)),
            ("tokenizer.ggml.token_type", V::Array(types.iter().map(|&t| V::I32(t)).collect())),
            ("tokenizer.ggml.merges", strs(&merges.map(String::from))),
        ];
        let md_refs: Vec<(&str, &V)> = md.iter().map(|(k, v)| (*k, v)).collect();
        let mut buf = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut buf, &md_refs, &[]).unwrap();
        buf.set_position(0);
        let content = gguf_file::Content::read(&mut buf).unwrap();
        let tok = gguf_tokenizer(&content).unwrap();

        let id = |s: &str| tok.token_to_id(s).unwrap();
        let text = "<|im_start|>hello world<|im_end|>\n";
        let enc = tok.encode(text, false).unwrap();
        assert_eq!(enc.get_tokens(), &["<|im_start|>", "hello", "Ġworld", "<|im_end|>", "Ċ"]);
        assert_eq!(enc.get_ids(), &[id("<|im_start|>"), 256 + 3, 256 + 8, id("<|im_end|>"), u32::from(b'\n')]);
        // Offsets are byte offsets into the original text.
        assert_eq!(enc.get_offsets()[2], (17, 23));
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);
        assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), "hello world\n");
        // Non-ASCII text goes through bytes; the unused placeholder is not a token.
        let enc = tok.encode("héllo <tool_call>", false).unwrap();
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), "héllo <tool_call>");
        assert_eq!(tok.token_to_id("[PAD300]"), None);
        assert_eq!(id("<|im_end|>"), 256 + 9 + 2);

        let mut bad = content;
        bad.metadata.insert("tokenizer.ggml.pre".into(), V::String("llama-bpe".into()));
        assert!(matches!(gguf_tokenizer(&bad), Err(Qwen2Error::Tokenizer(m)) if m.contains("llama-bpe")));
    }

    #[test]
    fn chat_template_golden() {
        let instruction = "Predict the diseases of the next visit.";
        let input = "The patient-acquired disease is {Acute renal failure}.";
        let p = chat_prompt(instruction, input);
        let golden =
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
                      <|im_start|>user\nPredict the diseases of the next visit.\n\
                      The patient-acquired disease is {Acute renal failure}.<|im_end|>\n<|im_start|>assistant\n";
        assert_eq!(p.text, golden);
        assert_eq!(&p.text[p.input_range.clone()], input);
        assert_eq!(p.input_range.start, golden.find("The patient").unwrap());
        assert_eq!(
            chat_answer("Disease that the patient may acquire: None"),
            "Disease that the patient may acquire: None<|im_end|>\n"
        );
    }
}
