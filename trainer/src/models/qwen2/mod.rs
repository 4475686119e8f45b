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

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;

use crate::models::checkpoint::CheckpointError;
pub use crate::models::checkpoint::{Incompatibility, ShapeMismatch};
use crate::models::common::{dropout, softmax_last_dim, DropoutRng, MASK_NEG};
use crate::models::lora::{LoraConfig, LoraError, LoraLinear};
use crate::models::qlinear::TokenTable;
use crate::models::seeded;

mod config;
mod gguf;
mod quantized;
#[cfg(test)]
mod tests;
mod tokenizer;

pub use config::{Config, HiddenAct, TokenIds};
pub use gguf::{gguf_config, gguf_to_hf_name, hf_to_gguf_name, load_gguf, read_gguf_tensors, GgufQwen2};
pub use quantized::quantized_model;
pub use tokenizer::{gguf_tokenizer, read_tokenizer_json, ENDOFTEXT, IM_END, IM_START, QWEN2_SPLIT_REGEX};

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
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("GGUF: {0}")]
    Gguf(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("sequence of {len} tokens exceeds max_position_embeddings = {max}")]
    SequenceTooLong { len: usize, max: usize },
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
        let dropped = dropout(&probs, self.dropout_p, rng.as_deref_mut())?.to_dtype(xs.dtype())?;
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
    embed_tokens: TokenTable,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
}

impl Qwen2Model {
    /// `vb` is rooted at `model.`.
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let embed_tokens = TokenTable::Dense(vb.pp("embed_tokens").get((cfg.vocab_size, cfg.hidden_size), "weight")?);
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
    lm_head: Option<TokenTable>,
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
            Some(TokenTable::Dense(vb.pp("lm_head").get((cfg.vocab_size, cfg.hidden_size), "weight")?))
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
                let w = pvb.get(slot.dims()?, "weight")?;
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
        let n = self.model.layers.len();
        let mut states = self.forward_cached_layers(input_ids, cache, &[n])?;
        states.pop().ok_or_else(|| Qwen2Error::InvalidInput("no state returned".into()))
    }

    /// [`Self::forward_cached`] returning the hidden states [B, T_new, H] after each of `layers`
    /// (a count of decoder layers, in increasing order: `k` is the residual stream after layer `k`,
    /// `num_hidden_layers` is the final state after `model.norm`). Earlier layers' states are
    /// the raw residual stream (no norm), as HF's `output_hidden_states` returns them.
    pub fn forward_cached_layers(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        layers: &[usize],
    ) -> Result<Vec<Tensor>, Qwen2Error> {
        Ok(self.cached_pass(input_ids, cache, layers, None)?.0)
    }

    /// [`Self::forward_cached`] that also returns, per decoder layer, the attention
    /// probabilities of new position `row` (`0 <= row < T_new`) over every key, cached ones
    /// first: [B, N, T_past + T_new] f32 (rows sum to 1; keys after `row` get 0). The same
    /// rows as `Qwen2Output::last_token_attentions` of a full forward whose last token is `row`.
    pub fn forward_cached_attention(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        row: usize,
    ) -> Result<(Tensor, Vec<Tensor>), Qwen2Error> {
        let (_, t) = self.check_ids(input_ids)?;
        if row >= t {
            return Err(Qwen2Error::InvalidInput(format!("attention row {row} of {t} new positions")));
        }
        let n = self.model.layers.len();
        let (mut states, attn) = self.cached_pass(input_ids, cache, &[n], Some(row))?;
        let hidden = states.pop().ok_or_else(|| Qwen2Error::InvalidInput("no state returned".into()))?;
        Ok((hidden, attn))
    }

    /// The cached forward: states after `layers`, and with `attn_row`, each layer's attention
    /// row of that new position ([`Self::forward_cached_attention`]).
    fn cached_pass(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        layers: &[usize],
        attn_row: Option<usize>,
    ) -> Result<(Vec<Tensor>, Vec<Tensor>), Qwen2Error> {
        let n_layers = self.model.layers.len();
        if layers.is_empty()
            || layers.windows(2).any(|w| w[0] >= w[1])
            || layers.iter().any(|&k| k == 0 || k > n_layers)
        {
            return Err(Qwen2Error::InvalidInput(format!(
                "layers {layers:?}: expected increasing counts in 1..={n_layers}"
            )));
        }
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
        let mut out = Vec::with_capacity(layers.len());
        let mut attn = Vec::new();
        for (i, (layer, slot)) in self.model.layers.iter().zip(cache.layers.iter_mut()).enumerate() {
            let (next, probs) = layer.forward_t(&xs, &mask, &cos, &sin, Some(slot), None)?;
            xs = next;
            if let Some(r) = attn_row {
                attn.push(probs.narrow(2, r, 1)?.squeeze(2)?);
            }
            if i + 1 < n_layers && layers.contains(&(i + 1)) {
                out.push(xs.clone());
            }
        }
        cache.len = offset + t;
        if layers.last() == Some(&n_layers) {
            out.push(self.model.norm.forward(&xs)?);
        }
        Ok((out, attn))
    }

    /// Several continuations of the batch-1 sequence in `cache`, packed into one row without
    /// padding: `input_ids` [1, T] holds the segments one after another, `segments[i]` is token
    /// i's segment (contiguous runs). Token i sits at position `cache.len()` + its index within
    /// its segment and reads every cached key and the earlier tokens of its own segment only,
    /// so each segment's hidden states are those of running it alone on a copy of the cache.
    /// `cache` is left as it was. Returns the final hidden states [1, T, H].
    pub fn forward_packed(
        &self,
        input_ids: &Tensor,
        segments: &[usize],
        cache: &KvCache,
    ) -> Result<Tensor, Qwen2Error> {
        let (b, t) = self.check_ids(input_ids)?;
        if b != 1 || segments.len() != t {
            return Err(Qwen2Error::InvalidInput(format!(
                "packed forward: input_ids [{b}, {t}] with {} segment ids, expected [1, T] and T ids",
                segments.len()
            )));
        }
        if cache.layers.iter().flatten().any(|(k, _)| k.dim(0).ok() != Some(1)) {
            return Err(Qwen2Error::InvalidInput("packed forward: the cache must hold one sequence".into()));
        }
        // Index within the segment; a segment id seen before but not just before is a split run.
        let mut pos = vec![0usize; t];
        let mut seen = std::collections::HashSet::new();
        for i in 0..t {
            if i > 0 && segments[i] == segments[i - 1] {
                pos[i] = pos[i - 1] + 1;
            } else if !seen.insert(segments[i]) {
                return Err(Qwen2Error::InvalidInput(format!(
                    "packed forward: segment {} is not contiguous",
                    segments[i]
                )));
            }
        }
        let offset = cache.len;
        let longest = pos.iter().max().map_or(0, |p| p + 1);
        if offset + longest > self.cfg.max_position_embeddings {
            return Err(Qwen2Error::SequenceTooLong { len: offset + longest, max: self.cfg.max_position_embeddings });
        }
        let device = input_ids.device();
        let tk = offset + t;
        let mut m = Vec::with_capacity(t * tk);
        for i in 0..t {
            m.extend((0..tk).map(|j| {
                if j < offset || (j - offset <= i && segments[j - offset] == segments[i]) {
                    0.0
                } else {
                    MASK_NEG
                }
            }));
        }
        let mask = Tensor::from_vec(m, (1, 1, t, tk), device)?;
        let (cos, sin) = rope_tables(self.cfg.rope_theta, self.cfg.head_dim(), offset, longest, self.dtype(), device)?;
        let idx = Tensor::from_vec(pos.iter().map(|&p| p as u32).collect::<Vec<_>>(), t, device)?;
        let (cos, sin) = (cos.index_select(&idx, 0)?, sin.index_select(&idx, 0)?);
        let mut xs = self.embed(input_ids)?;
        for (i, layer) in self.model.layers.iter().enumerate() {
            let mut slot = cache.layers.get(i).cloned().flatten();
            xs = layer.forward_t(&xs, &mask, &cos, &sin, Some(&mut slot), None)?.0;
        }
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
        let logits = w.logits(&hidden.reshape((n, h))?)?;
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
        let flat = self.model.embed_tokens.rows(&input_ids.flatten_all()?)?;
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
    let problems = Incompatibility::between(&cfg.expected_shapes(), tensors);
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
