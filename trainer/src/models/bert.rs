//! BERT encoder with a multi-label classification head, written for training.
//!
//! Weight names are exactly those of Hugging Face checkpoints (`embeddings.word_embeddings.weight`,
//! `encoder.layer.{i}.attention.self.query.weight`, ..., `pooler.dense.weight`, and the head's
//! `classifier.weight`/`classifier.bias`). In the [`VarMap`] the model trains, names carry no
//! `bert.` prefix; [`BertForMultiLabel::from_checkpoint`] reads checkpoints with or without it.
//!
//! Every op on the forward path has a backward in candle-core 0.11: layer norm is written as
//! mean/variance with broadcast ops, softmax as `exp(x - max) / sum`, GELU is
//! `Tensor::gelu_erf` (exact erf GELU, `UnaryOp::GeluErf` has a backward), linears are
//! `matmul` + `broadcast_add`, embeddings are `index_select`. None of candle-nn's fused ops
//! (`ops::softmax_last_dim`, `ops::layer_norm`, `LayerNorm::forward`, `ops::sdpa`) is used: they
//! have no backward and the optimizer silently skips parameters without gradients.
//!
//! Shapes: B batch, T tokens, H hidden, N attention heads, Dh = H / N head size, I intermediate
//! size, L labels.
//!
//! Dropout is real in training and identity in eval. Its masks come from a caller-owned, seeded
//! [`DropoutRng`], never from a global RNG, so a CPU training run is a function of its seeds.
//! Fresh weights are drawn from a ChaCha8 stream per tensor (seed, name), so initialization is
//! deterministic and independent of the order in which tensors are created.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Shape, Tensor, Var, D};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Embedding, Init, Linear, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::seeded;

/// Value added to attention scores of padded keys. Finite, so a row whose keys are all padding
/// gives uniform weights instead of NaN; `exp(-1e9 + s - max)` underflows to exactly 0 in f32,
/// so padded keys contribute exactly nothing to real rows.
pub const MASK_NEG: f32 = -1.0e9;

/// Model names of the head's tensors (not present in base checkpoints).
const CLASSIFIER_PREFIX: &str = "classifier.";
const POOLER_PREFIX: &str = "pooler.";
/// The tensor whose name decides the checkpoint's prefix.
const WORD_EMBEDDINGS: &str = "embeddings.word_embeddings.weight";
/// Non-parameter buffers that HF checkpoints may carry.
const KNOWN_BUFFERS: [&str; 2] = ["embeddings.position_ids", "embeddings.token_type_ids"];

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Errors of building, loading and running the model.
#[derive(Debug, thiserror::Error)]
pub enum BertError {
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("BERT config.json: {0}")]
    ConfigJson(#[from] serde_json::Error),
    #[error("invalid BERT config: {0}")]
    InvalidConfig(String),
    #[error("not a BERT checkpoint: neither `{WORD_EMBEDDINGS}` nor `bert.{WORD_EMBEDDINGS}` is present")]
    NotBert,
    #[error("ambiguous checkpoint: both `{WORD_EMBEDDINGS}` and `bert.{WORD_EMBEDDINGS}` are present")]
    AmbiguousPrefix,
    #[error("checkpoint does not match the model: {0}")]
    Incompatible(Incompatibility),
    #[error("reading safetensors {path}: {source}")]
    Read { path: PathBuf, source: candle_core::Error },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("sequence of {len} tokens exceeds max_position_embeddings = {max}")]
    SequenceTooLong { len: usize, max: usize },
}

/// Everything that keeps a checkpoint from loading, listed in full (names sorted).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Incompatibility {
    /// Model tensor names the checkpoint lacks.
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
    /// Model name (without `bert.` prefix).
    pub name: String,
    pub expected: Vec<usize>,
    pub found: Vec<usize>,
}

impl Incompatibility {
    fn is_empty(&self) -> bool {
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

/// Activation of the intermediate layer. Only HF `"gelu"` (exact erf GELU) is supported; any
/// other value in `config.json` is a deserialization error that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HiddenAct {
    #[serde(rename = "gelu")]
    Gelu,
}

/// Position embedding kind. Only HF `"absolute"` is supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PositionEmbeddingType {
    #[serde(rename = "absolute")]
    Absolute,
}

/// Mirror of HF `BertConfig` (`config.json`). Fields HF files omit take HF's defaults
/// (those of bert-base-uncased); fields we do not use are ignored on read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub hidden_dropout_prob: f64,
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: u32,
    pub position_embedding_type: PositionEmbeddingType,
    /// Standard deviation of the normal init of fresh linear and embedding weights.
    pub initializer_range: f64,
}

impl Default for Config {
    /// HF `BertConfig()` defaults (bert-base-uncased).
    fn default() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: HiddenAct::Gelu,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            position_embedding_type: PositionEmbeddingType::Absolute,
            initializer_range: 0.02,
        }
    }
}

impl Config {
    /// A tiny random-init config for tests: vocab 128, H 32, 2 layers, 4 heads, I 64, 64 positions.
    pub fn tiny() -> Self {
        Self {
            vocab_size: 128,
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 64,
            max_position_embeddings: 64,
            ..Self::default()
        }
    }

    /// all-MiniLM-L6-v2 (H 384, 6 layers, 12 heads, I 1536, vocab 30522, 512 positions).
    pub fn minilm_l6() -> Self {
        Self {
            hidden_size: 384,
            num_hidden_layers: 6,
            num_attention_heads: 12,
            intermediate_size: 1536,
            ..Self::default()
        }
    }

    /// Parses an HF `config.json` and validates it.
    pub fn from_json(json: &str) -> Result<Self, BertError> {
        let cfg: Self = serde_json::from_str(json)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Head size Dh = H / N.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Checks the invariants the model relies on.
    pub fn validate(&self) -> Result<(), BertError> {
        let bad = |m: String| Err(BertError::InvalidConfig(m));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
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
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            ("attention_probs_dropout_prob", self.attention_probs_dropout_prob),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{name} = {p} is not in [0, 1)"));
            }
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return bad(format!("layer_norm_eps = {} must be > 0", self.layer_norm_eps));
        }
        if self.initializer_range.is_nan() || self.initializer_range <= 0.0 {
            return bad(format!("initializer_range = {} must be > 0", self.initializer_range));
        }
        Ok(())
    }
}

/// How the head reads one vector per sequence from the last hidden states.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The [CLS] row (position 0), as HF `BertForSequenceClassification`.
    #[default]
    Cls,
    /// The mean of the real (unmasked) positions' rows, [CLS] and [SEP] included (as
    /// sentence-transformers' mean pooling).
    Mean,
}

/// The classification head on top of the encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeadConfig {
    /// L, the number of independent sigmoid outputs.
    pub num_labels: usize,
    /// `false` (default): logits = classifier(dropout(h[CLS])). `true`: HF
    /// `BertForSequenceClassification`, logits = classifier(dropout(tanh(pooler.dense(h[CLS])))).
    /// With `false`, a checkpoint's `pooler.dense.*` is not loaded and is reported as ignored.
    pub use_pooler: bool,
    /// Dropout before the classifier; `None` = `Config::hidden_dropout_prob` (HF convention).
    pub classifier_dropout: Option<f64>,
    /// Which vector the head reads (configs written before this field read as [`Pooling::Cls`]).
    pub pooling: Pooling,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self { num_labels: ckd_core::NUM_LABELS, use_pooler: false, classifier_dropout: None, pooling: Pooling::Cls }
    }
}

impl HeadConfig {
    fn validate(&self) -> Result<(), BertError> {
        if self.num_labels == 0 {
            return Err(BertError::InvalidConfig("num_labels must be > 0".into()));
        }
        if let Some(p) = self.classifier_dropout {
            if !(0.0..1.0).contains(&p) {
                return Err(BertError::InvalidConfig(format!("classifier_dropout = {p} is not in [0, 1)")));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Differentiable building blocks
// ---------------------------------------------------------------------------------------------

/// Caller-owned dropout randomness. Masks are drawn in a fixed order (the order of the forward
/// pass), so the same seed and the same inputs give the same masks on every run.
#[derive(Debug, Clone)]
pub struct DropoutRng {
    rng: ChaCha8Rng,
}

impl DropoutRng {
    pub fn new(seed: u64) -> Self {
        Self { rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    pub fn from_rng(rng: ChaCha8Rng) -> Self {
        Self { rng }
    }

    /// Inverted dropout: each element is zeroed with probability `p` and the survivors are
    /// scaled by 1 / (1 - p). `p == 0` returns `xs` unchanged. Same shape as `xs`.
    pub fn apply(&mut self, xs: &Tensor, p: f64) -> candle_core::Result<Tensor> {
        if p <= 0.0 {
            return Ok(xs.clone());
        }
        let scale = (1.0 / (1.0 - p)) as f32;
        let p = p as f32;
        let n = xs.elem_count();
        let mask: Vec<f32> = (0..n).map(|_| if self.rng.random::<f32>() < p { 0.0 } else { scale }).collect();
        let mask = Tensor::from_vec(mask, xs.shape(), xs.device())?.to_dtype(xs.dtype())?;
        xs.mul(&mask)
    }
}

/// Applies dropout when a training RNG is given; identity otherwise.
fn dropout(xs: &Tensor, p: f64, rng: Option<&mut DropoutRng>) -> candle_core::Result<Tensor> {
    match rng {
        Some(rng) => rng.apply(xs, p),
        None => Ok(xs.clone()),
    }
}

/// Softmax over the last dim as `exp(x - max) / sum(exp(x - max))` (every op has a backward;
/// the max is detached, which leaves the gradient unchanged since softmax is shift invariant).
pub fn softmax_last_dim(xs: &Tensor) -> candle_core::Result<Tensor> {
    let max = xs.max_keepdim(D::Minus1)?.detach();
    let e = xs.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&s)
}

/// Layer norm over the last dim, HF convention: biased variance, eps inside the square root.
/// Parameters `weight`/`bias` are [H].
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn load(size: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        let weight = vb.get_with_hints(size, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(size, "bias", Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }

    /// [.., H] -> [.., H]: (x - mean) / sqrt(var + eps) * weight + bias.
    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mean = xs.mean_keepdim(D::Minus1)?;
        let xc = xs.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        xn.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// HF linear init: weight [out, in] ~ N(0, std), bias [out] = 0.
fn linear(in_dim: usize, out_dim: usize, std: f64, vb: VarBuilder) -> candle_core::Result<Linear> {
    let w = vb.get_with_hints((out_dim, in_dim), "weight", Init::Randn { mean: 0.0, stdev: std })?;
    let b = vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?;
    Ok(Linear::new(w, Some(b)))
}

/// HF embedding init: weight [n, H] ~ N(0, std).
fn embedding(n: usize, hidden: usize, std: f64, vb: VarBuilder) -> candle_core::Result<Embedding> {
    let w = vb.get_with_hints((n, hidden), "weight", Init::Randn { mean: 0.0, stdev: std })?;
    Ok(Embedding::new(w, hidden))
}

// ---------------------------------------------------------------------------------------------
// Modules (one struct per HF submodule)
// ---------------------------------------------------------------------------------------------

/// `embeddings.*`: word + position + token type, then LayerNorm and dropout.
#[derive(Debug, Clone)]
pub struct Embeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
    dropout_p: f64,
}

impl Embeddings {
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let std = cfg.initializer_range;
        let h = cfg.hidden_size;
        Ok(Self {
            word_embeddings: embedding(cfg.vocab_size, h, std, vb.pp("word_embeddings"))?,
            position_embeddings: embedding(cfg.max_position_embeddings, h, std, vb.pp("position_embeddings"))?,
            token_type_embeddings: embedding(cfg.type_vocab_size, h, std, vb.pp("token_type_embeddings"))?,
            layer_norm: LayerNorm::load(h, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
            dropout_p: cfg.hidden_dropout_prob,
        })
    }

    /// input_ids, token_type_ids: [B, T] integer -> [B, T, H]. Positions are 0..T.
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        rng: Option<&mut DropoutRng>,
    ) -> candle_core::Result<Tensor> {
        let (_b, t) = input_ids.dims2()?;
        let words = self.word_embeddings.forward(input_ids)?;
        let types = self.token_type_embeddings.forward(token_type_ids)?;
        let positions = self.position_embeddings.embeddings().narrow(0, 0, t)?;
        let xs = (words + types)?.broadcast_add(&positions)?;
        let xs = self.layer_norm.forward(&xs)?;
        dropout(&xs, self.dropout_p, rng)
    }
}

/// `attention.self.*`: multi-head scaled dot-product attention.
#[derive(Debug, Clone)]
pub struct SelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    num_heads: usize,
    head_dim: usize,
    dropout_p: f64,
}

impl SelfAttention {
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let (h, std) = (cfg.hidden_size, cfg.initializer_range);
        Ok(Self {
            query: linear(h, h, std, vb.pp("query"))?,
            key: linear(h, h, std, vb.pp("key"))?,
            value: linear(h, h, std, vb.pp("value"))?,
            num_heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            dropout_p: cfg.attention_probs_dropout_prob,
        })
    }

    /// [B, T, H] -> [B, N, T, Dh].
    fn split_heads(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        xs.reshape((b, t, self.num_heads, self.head_dim))?.transpose(1, 2)?.contiguous()
    }

    /// xs: [B, T, H], mask: additive [B, 1, 1, T] (0 real key, [`MASK_NEG`] padded key).
    /// Returns the context [B, T, H] and the attention probabilities [B, N, T, T] (rows over
    /// keys sum to 1; taken before attention dropout).
    pub fn forward_t(
        &self,
        xs: &Tensor,
        mask: &Tensor,
        rng: Option<&mut DropoutRng>,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (b, t, h) = xs.dims3()?;
        let q = self.split_heads(&self.query.forward(xs)?)?;
        let k = self.split_heads(&self.key.forward(xs)?)?;
        let v = self.split_heads(&self.value.forward(xs)?)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(mask)?;
        let probs = softmax_last_dim(&scores)?;
        let dropped = dropout(&probs, self.dropout_p, rng)?;
        let ctx = dropped.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b, t, h))?;
        Ok((ctx, probs))
    }
}

/// `attention.output.*` (HF `BertSelfOutput`): LayerNorm(dropout(dense(ctx)) + input).
#[derive(Debug, Clone)]
pub struct AttentionOutput {
    dense: Linear,
    layer_norm: LayerNorm,
    dropout_p: f64,
}

impl AttentionOutput {
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            dense: linear(h, h, cfg.initializer_range, vb.pp("dense"))?,
            layer_norm: LayerNorm::load(h, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
            dropout_p: cfg.hidden_dropout_prob,
        })
    }

    /// ctx, input: [B, T, H] -> [B, T, H].
    pub fn forward_t(&self, ctx: &Tensor, input: &Tensor, rng: Option<&mut DropoutRng>) -> candle_core::Result<Tensor> {
        let xs = dropout(&self.dense.forward(ctx)?, self.dropout_p, rng)?;
        self.layer_norm.forward(&(xs + input)?)
    }
}

/// `attention.*`: self-attention and its output projection.
#[derive(Debug, Clone)]
pub struct Attention {
    self_attention: SelfAttention,
    output: AttentionOutput,
}

impl Attention {
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        Ok(Self {
            self_attention: SelfAttention::load(vb.pp("self"), cfg)?,
            output: AttentionOutput::load(vb.pp("output"), cfg)?,
        })
    }

    /// xs: [B, T, H], mask [B, 1, 1, T] -> ([B, T, H], probabilities [B, N, T, T]).
    pub fn forward_t(
        &self,
        xs: &Tensor,
        mask: &Tensor,
        mut rng: Option<&mut DropoutRng>,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (ctx, probs) = self.self_attention.forward_t(xs, mask, rng.as_deref_mut())?;
        Ok((self.output.forward_t(&ctx, xs, rng)?, probs))
    }
}

/// `intermediate.*`: GELU(dense(x)), [B, T, H] -> [B, T, I].
#[derive(Debug, Clone)]
pub struct Intermediate {
    dense: Linear,
    act: HiddenAct,
}

impl Intermediate {
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        Ok(Self {
            dense: linear(cfg.hidden_size, cfg.intermediate_size, cfg.initializer_range, vb.pp("dense"))?,
            act: cfg.hidden_act,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let xs = self.dense.forward(xs)?;
        match self.act {
            HiddenAct::Gelu => xs.gelu_erf(),
        }
    }
}

/// `output.*` (HF `BertOutput`): LayerNorm(dropout(dense(x)) + input), [B, T, I] -> [B, T, H].
#[derive(Debug, Clone)]
pub struct Output {
    dense: Linear,
    layer_norm: LayerNorm,
    dropout_p: f64,
}

impl Output {
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        Ok(Self {
            dense: linear(cfg.intermediate_size, cfg.hidden_size, cfg.initializer_range, vb.pp("dense"))?,
            layer_norm: LayerNorm::load(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
            dropout_p: cfg.hidden_dropout_prob,
        })
    }

    /// xs: [B, T, I], input: [B, T, H] -> [B, T, H].
    pub fn forward_t(&self, xs: &Tensor, input: &Tensor, rng: Option<&mut DropoutRng>) -> candle_core::Result<Tensor> {
        let xs = dropout(&self.dense.forward(xs)?, self.dropout_p, rng)?;
        self.layer_norm.forward(&(xs + input)?)
    }
}

/// `encoder.layer.{i}.*`.
#[derive(Debug, Clone)]
pub struct Layer {
    attention: Attention,
    intermediate: Intermediate,
    output: Output,
}

impl Layer {
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        Ok(Self {
            attention: Attention::load(vb.pp("attention"), cfg)?,
            intermediate: Intermediate::load(vb.pp("intermediate"), cfg)?,
            output: Output::load(vb.pp("output"), cfg)?,
        })
    }

    /// xs: [B, T, H], mask [B, 1, 1, T] -> ([B, T, H], probabilities [B, N, T, T]).
    pub fn forward_t(
        &self,
        xs: &Tensor,
        mask: &Tensor,
        mut rng: Option<&mut DropoutRng>,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (attn, probs) = self.attention.forward_t(xs, mask, rng.as_deref_mut())?;
        let inter = self.intermediate.forward(&attn)?;
        Ok((self.output.forward_t(&inter, &attn, rng)?, probs))
    }
}

/// `encoder.*`: the stack of layers.
#[derive(Debug, Clone)]
pub struct Encoder {
    layers: Vec<Layer>,
}

impl Encoder {
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let vb = vb.pp("layer");
        let layers =
            (0..cfg.num_hidden_layers).map(|i| Layer::load(vb.pp(i), cfg)).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    /// xs: [B, T, H], mask [B, 1, 1, T] -> ([B, T, H], per-layer probabilities [B, N, T, T]
    /// when `keep_attentions`, else empty).
    pub fn forward_t(
        &self,
        xs: &Tensor,
        mask: &Tensor,
        mut rng: Option<&mut DropoutRng>,
        keep_attentions: bool,
    ) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        let mut xs = xs.clone();
        let mut attentions = Vec::new();
        for layer in &self.layers {
            let (next, probs) = layer.forward_t(&xs, mask, rng.as_deref_mut())?;
            xs = next;
            if keep_attentions {
                attentions.push(probs);
            }
        }
        Ok((xs, attentions))
    }
}

/// HF `BertModel` without the pooler: embeddings and encoder.
#[derive(Debug, Clone)]
pub struct BertModel {
    embeddings: Embeddings,
    encoder: Encoder,
    cfg: Config,
}

impl BertModel {
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        Ok(Self {
            embeddings: Embeddings::load(vb.pp("embeddings"), cfg)?,
            encoder: Encoder::load(vb.pp("encoder"), cfg)?,
            cfg: cfg.clone(),
        })
    }

    /// input_ids [B, T] (u32 or i64), attention_mask [B, T] (1 real, 0 pad; any dtype),
    /// token_type_ids [B, T] or `None` (all 0). Returns the last hidden state [B, T, H] and,
    /// when `keep_attentions`, one [B, N, T, T] probability tensor per layer.
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
        mut rng: Option<&mut DropoutRng>,
        keep_attentions: bool,
    ) -> Result<(Tensor, Vec<Tensor>), BertError> {
        let (b, t) = input_ids
            .dims2()
            .map_err(|_| BertError::InvalidInput(format!("input_ids must be [B, T], got {:?}", input_ids.dims())))?;
        if t == 0 {
            return Err(BertError::InvalidInput("empty sequence (T = 0)".into()));
        }
        if t > self.cfg.max_position_embeddings {
            return Err(BertError::SequenceTooLong { len: t, max: self.cfg.max_position_embeddings });
        }
        if !matches!(input_ids.dtype(), DType::U32 | DType::I64) {
            return Err(BertError::InvalidInput(format!("input_ids must be u32 or i64, got {:?}", input_ids.dtype())));
        }
        if attention_mask.dims() != [b, t] {
            return Err(BertError::InvalidInput(format!(
                "attention_mask {:?} does not match input_ids [{b}, {t}]",
                attention_mask.dims()
            )));
        }
        let zeros;
        let token_type_ids = match token_type_ids {
            Some(tt) => {
                if tt.dims() != [b, t] {
                    return Err(BertError::InvalidInput(format!(
                        "token_type_ids {:?} does not match input_ids [{b}, {t}]",
                        tt.dims()
                    )));
                }
                tt
            }
            None => {
                zeros = input_ids.zeros_like()?;
                &zeros
            }
        };
        // (1 - m) * MASK_NEG as m * (-MASK_NEG) + MASK_NEG: exactly 0 for m = 1.
        let mask =
            attention_mask.to_dtype(DType::F32)?.affine(-(MASK_NEG as f64), MASK_NEG as f64)?.reshape((b, 1, 1, t))?;
        let xs = self.embeddings.forward_t(input_ids, token_type_ids, rng.as_deref_mut())?;
        Ok(self.encoder.forward_t(&xs, &mask, rng, keep_attentions)?)
    }
}

/// `pooler.dense`: tanh(dense(h[CLS])), [B, H] -> [B, H].
#[derive(Debug, Clone)]
pub struct Pooler {
    dense: Linear,
}

impl Pooler {
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self { dense: linear(h, h, cfg.initializer_range, vb.pp("dense"))? })
    }

    pub fn forward(&self, cls: &Tensor) -> candle_core::Result<Tensor> {
        self.dense.forward(cls)?.tanh()
    }
}

/// The multi-label head: [CLS] row or masked mean ([`Pooling`]) -> optional `pooler` ->
/// dropout -> `classifier`.
#[derive(Debug, Clone)]
pub struct ClassificationHead {
    pooler: Option<Pooler>,
    classifier: Linear,
    dropout_p: f64,
    pooling: Pooling,
}

impl ClassificationHead {
    /// `vb` is the model root: the pooler lives at `pooler.*`, the classifier at `classifier.*`.
    pub fn load(vb: VarBuilder, cfg: &Config, head: &HeadConfig) -> candle_core::Result<Self> {
        let pooler = if head.use_pooler { Some(Pooler::load(vb.pp("pooler"), cfg)?) } else { None };
        let classifier = linear(cfg.hidden_size, head.num_labels, cfg.initializer_range, vb.pp("classifier"))?;
        let dropout_p = head.classifier_dropout.unwrap_or(cfg.hidden_dropout_prob);
        Ok(Self { pooler, classifier, dropout_p, pooling: head.pooling })
    }

    /// hidden [B, T, H], attention_mask [B, T] (1 real, 0 padding) -> logits [B, L].
    pub fn forward_t(
        &self,
        hidden: &Tensor,
        attention_mask: &Tensor,
        rng: Option<&mut DropoutRng>,
    ) -> candle_core::Result<Tensor> {
        let cls = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                // sum_t(h[b, t] * m[b, t]) / sum_t(m[b, t]); a row of only padding divides by 1.
                let m = attention_mask.to_dtype(DType::F32)?.unsqueeze(2)?; // [B, T, 1]
                let sum = hidden.broadcast_mul(&m)?.sum(1)?; // [B, H]
                let n = m.sum(1)?.clamp(1f32, f32::MAX)?; // [B, 1]
                sum.broadcast_div(&n)?
            }
        };
        let cls = match &self.pooler {
            Some(p) => p.forward(&cls)?,
            None => cls,
        };
        self.classifier.forward(&dropout(&cls, self.dropout_p, rng)?)
    }
}

/// What one forward pass returns.
#[derive(Debug, Clone)]
pub struct BertOutput {
    /// [B, L] pre-sigmoid scores.
    pub logits: Tensor,
    /// [B, T, H] output of the last encoder layer (values at padded positions are meaningless).
    pub last_hidden_state: Tensor,
    /// One [B, N, T, T] tensor per layer (query rows, key columns; each row sums to 1; taken
    /// before attention dropout) when requested, else `None`.
    pub attentions: Option<Vec<Tensor>>,
}

/// BERT encoder + multi-label head.
#[derive(Debug, Clone)]
pub struct BertForMultiLabel {
    bert: BertModel,
    head: ClassificationHead,
    cfg: Config,
    head_cfg: HeadConfig,
}

/// A model loaded from a checkpoint, with the store that owns its trainable weights.
pub struct LoadedBert {
    pub model: BertForMultiLabel,
    /// Every trainable tensor, under its unprefixed HF name. Pass `varmap.all_vars()` to the
    /// optimizer; `varmap.save(..)` writes a checkpoint this module reads back.
    pub varmap: VarMap,
    pub report: LoadReport,
}

impl BertForMultiLabel {
    /// Builds the model from `vb` rooted at the unprefixed HF names.
    pub fn load(vb: VarBuilder, cfg: &Config, head: &HeadConfig) -> Result<Self, BertError> {
        cfg.validate()?;
        head.validate()?;
        Ok(Self {
            bert: BertModel::load(vb.clone(), cfg)?,
            head: ClassificationHead::load(vb, cfg, head)?,
            cfg: cfg.clone(),
            head_cfg: head.clone(),
        })
    }

    /// A freshly initialized model (HF init: N(0, initializer_range) for linear and embedding
    /// weights, zero biases, LayerNorm ones/zeros) whose weights are Vars in the returned
    /// [`VarMap`]. Deterministic: tensor `name` is drawn from ChaCha8(`seed`) on the stream
    /// FNV-1a(`name`).
    pub fn init(cfg: &Config, head: &HeadConfig, device: &Device, seed: u64) -> Result<(Self, VarMap), BertError> {
        let varmap = VarMap::new();
        let backend = SeededInit { varmap: varmap.clone(), seed };
        let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone());
        let model = Self::load(vb, cfg, head)?;
        Ok((model, varmap))
    }

    /// Builds a trainable model from checkpoint tensors (HF names, with or without `bert.`).
    ///
    /// The layout is decided by [`inspect_checkpoint`]. Every encoder tensor must be present
    /// with the model's shape; extra tensors are errors except known non-parameters (buffers
    /// `embeddings.position_ids`/`token_type_ids`, pre-training heads `cls.*`, and
    /// `pooler.dense.*` when the head does not use the pooler), which the report lists as
    /// ignored. Head modules (`classifier`, and `pooler` when used) load when all their tensors
    /// are present and keep their seeded fresh init when all are absent (listed in
    /// `report.fresh_init`); a partial head module is an error. Legacy `LayerNorm.gamma/beta`
    /// names are renamed to `weight/bias` and listed. Float tensors of other dtypes are
    /// converted to f32 (listed). All problems are reported together in
    /// [`BertError::Incompatible`].
    pub fn from_checkpoint(
        tensors: &HashMap<String, Tensor>,
        cfg: &Config,
        head: &HeadConfig,
        device: &Device,
        seed: u64,
    ) -> Result<LoadedBert, BertError> {
        let layout = inspect_checkpoint(tensors.keys().map(String::as_str))?;
        let (model, varmap) = Self::init(cfg, head, device, seed)?;
        let expected: BTreeMap<String, Var> = {
            let data = varmap.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };

        let mut report = LoadReport { layout, ..LoadReport::default() };
        let mut problems = Incompatibility::default();
        let mut provided: BTreeMap<String, (&str, &Tensor)> = BTreeMap::new();
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        for name in names {
            let tensor = &tensors[name];
            match map_checkpoint_name(name, layout.prefix, head) {
                Mapped::Ignored(reason) => report.ignored.push((name.clone(), reason)),
                Mapped::Param { target, renamed } => {
                    if !expected.contains_key(&target) || provided.contains_key(&target) {
                        problems.unexpected.push(name.clone());
                        continue;
                    }
                    if renamed {
                        report.renamed.push((name.clone(), target.clone()));
                    }
                    provided.insert(target, (name.as_str(), tensor));
                }
                Mapped::Unexpected => problems.unexpected.push(name.clone()),
            }
        }

        let is_head = |n: &str| n.starts_with(CLASSIFIER_PREFIX) || n.starts_with(POOLER_PREFIX);
        for group in [CLASSIFIER_PREFIX, POOLER_PREFIX] {
            let members: Vec<&String> = expected.keys().filter(|n| n.starts_with(group)).collect();
            let present = members.iter().filter(|n| provided.contains_key(n.as_str())).count();
            if present == 0 {
                report.fresh_init.extend(members.into_iter().cloned());
            } else {
                problems.missing.extend(members.into_iter().filter(|n| !provided.contains_key(n.as_str())).cloned());
            }
        }
        problems.missing.extend(expected.keys().filter(|n| !is_head(n) && !provided.contains_key(n.as_str())).cloned());
        problems.missing.sort();

        let mut values: Vec<(&Var, Tensor, String)> = Vec::new();
        for (target, (src, tensor)) in &provided {
            let var = &expected[target];
            if !tensor.dtype().is_float() {
                problems.bad_dtype.push((src.to_string(), tensor.dtype()));
                continue;
            }
            if tensor.dims() != var.dims() {
                problems.shape_mismatch.push(ShapeMismatch {
                    name: target.clone(),
                    expected: var.dims().to_vec(),
                    found: tensor.dims().to_vec(),
                });
                continue;
            }
            if tensor.dtype() != DType::F32 {
                report.converted.push((src.to_string(), tensor.dtype()));
            }
            values.push((var, tensor.to_dtype(DType::F32)?.to_device(device)?, target.clone()));
        }
        if !problems.is_empty() {
            return Err(BertError::Incompatible(problems));
        }
        for (var, value, target) in values {
            var.set(&value)?;
            report.loaded.push(target);
        }
        Ok(LoadedBert { model, varmap, report })
    }

    /// Eval-mode forward (no dropout, no attentions). See [`Self::forward_t`].
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
    ) -> Result<BertOutput, BertError> {
        self.forward_t(input_ids, attention_mask, token_type_ids, None, false)
    }

    /// input_ids [B, T] (u32 or i64), attention_mask [B, T] (1 real token, 0 padding),
    /// token_type_ids [B, T] or `None` (all segment 0). `dropout = Some(rng)` is training mode
    /// (dropout masks drawn from `rng`), `None` is eval mode. `output_attentions` returns the
    /// per-layer attention probabilities. [CLS] must be at position 0.
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
        mut dropout: Option<&mut DropoutRng>,
        output_attentions: bool,
    ) -> Result<BertOutput, BertError> {
        let (hidden, attentions) = self.bert.forward_t(
            input_ids,
            attention_mask,
            token_type_ids,
            dropout.as_deref_mut(),
            output_attentions,
        )?;
        let logits = self.head.forward_t(&hidden, attention_mask, dropout)?;
        Ok(BertOutput { logits, last_hidden_state: hidden, attentions: output_attentions.then_some(attentions) })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn head_config(&self) -> &HeadConfig {
        &self.head_cfg
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoint layout and loading
// ---------------------------------------------------------------------------------------------

/// Where a checkpoint keeps the encoder's tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointPrefix {
    /// `embeddings.*`, `encoder.*`, `pooler.*` at the top level (HF `BertModel`).
    #[default]
    None,
    /// `bert.embeddings.*`, ...; heads (`classifier.*`, `cls.*`) at the top level
    /// (HF `BertFor*` task models).
    Bert,
}

impl CheckpointPrefix {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Bert => "bert.",
        }
    }
}

/// What the tensor names of a checkpoint say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckpointLayout {
    pub prefix: CheckpointPrefix,
    /// `{prefix}pooler.dense.weight` is present.
    pub has_pooler: bool,
    /// `classifier.weight` is present.
    pub has_classifier: bool,
}

/// Decides the layout from tensor names alone: the prefix is `bert.` exactly when
/// `bert.embeddings.word_embeddings.weight` is present and `embeddings.word_embeddings.weight`
/// is not; the reverse means no prefix; both or neither are errors.
pub fn inspect_checkpoint<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<CheckpointLayout, BertError> {
    let names: BTreeSet<&str> = names.into_iter().collect();
    let prefixed = format!("bert.{WORD_EMBEDDINGS}");
    let prefix = match (names.contains(WORD_EMBEDDINGS), names.contains(prefixed.as_str())) {
        (true, false) => CheckpointPrefix::None,
        (false, true) => CheckpointPrefix::Bert,
        (true, true) => return Err(BertError::AmbiguousPrefix),
        (false, false) => return Err(BertError::NotBert),
    };
    let pooler = format!("{}pooler.dense.weight", prefix.as_str());
    Ok(CheckpointLayout {
        prefix,
        has_pooler: names.contains(pooler.as_str()),
        has_classifier: names.contains("classifier.weight"),
    })
}

/// Why a checkpoint tensor was not loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    /// A non-parameter buffer (`embeddings.position_ids`, `embeddings.token_type_ids`).
    Buffer,
    /// A pre-training head (`cls.*`).
    PretrainingHead,
    /// `pooler.dense.*` while the head reads [CLS] directly (`HeadConfig::use_pooler = false`).
    UnusedPooler,
}

/// What [`BertForMultiLabel::from_checkpoint`] did, for logs and checks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    pub layout: CheckpointLayout,
    /// Model names set from the checkpoint (sorted).
    pub loaded: Vec<String>,
    /// Model names absent from the checkpoint that keep their seeded fresh init (head only).
    pub fresh_init: Vec<String>,
    /// Checkpoint names not loaded, and why.
    pub ignored: Vec<(String, IgnoreReason)>,
    /// (checkpoint name, model name) for legacy `gamma`/`beta` LayerNorm names.
    pub renamed: Vec<(String, String)>,
    /// Checkpoint names converted to f32, with their stored dtype.
    pub converted: Vec<(String, DType)>,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loaded {} tensors (prefix {:?}); fresh init: [{}]; ignored: [{}]",
            self.loaded.len(),
            self.layout.prefix.as_str(),
            self.fresh_init.join(", "),
            self.ignored.iter().map(|(n, r)| format!("{n} ({r:?})")).collect::<Vec<_>>().join(", ")
        )?;
        if !self.renamed.is_empty() {
            write!(f, "; renamed {} legacy LayerNorm tensors", self.renamed.len())?;
        }
        if !self.converted.is_empty() {
            write!(f, "; converted {} tensors to f32", self.converted.len())?;
        }
        Ok(())
    }
}

enum Mapped {
    Param { target: String, renamed: bool },
    Ignored(IgnoreReason),
    Unexpected,
}

/// Maps a checkpoint name to a model name. With prefix `bert.`, encoder/pooler/buffer names
/// must carry it and head names (`classifier.*`, `cls.*`) must not; without prefix, no name may
/// start with `bert.`. Whether a `Param` target exists in the model is checked by the caller.
fn map_checkpoint_name(name: &str, prefix: CheckpointPrefix, head: &HeadConfig) -> Mapped {
    let is_top_level_head = |n: &str| n.starts_with(CLASSIFIER_PREFIX) || n.starts_with("cls.");
    let inner = match prefix {
        CheckpointPrefix::Bert => match name.strip_prefix("bert.") {
            Some(rest) if !is_top_level_head(rest) => rest,
            Some(_) => return Mapped::Unexpected,
            None if is_top_level_head(name) => name,
            None => return Mapped::Unexpected,
        },
        CheckpointPrefix::None => {
            if name.starts_with("bert.") {
                return Mapped::Unexpected;
            }
            name
        }
    };
    if KNOWN_BUFFERS.contains(&inner) {
        return Mapped::Ignored(IgnoreReason::Buffer);
    }
    if inner.starts_with("cls.") {
        return Mapped::Ignored(IgnoreReason::PretrainingHead);
    }
    let (target, renamed) = if let Some(stem) = inner.strip_suffix("LayerNorm.gamma") {
        (format!("{stem}LayerNorm.weight"), true)
    } else if let Some(stem) = inner.strip_suffix("LayerNorm.beta") {
        (format!("{stem}LayerNorm.bias"), true)
    } else {
        (inner.to_string(), false)
    };
    if !head.use_pooler && (target == "pooler.dense.weight" || target == "pooler.dense.bias") {
        return Mapped::Ignored(IgnoreReason::UnusedPooler);
    }
    Mapped::Param { target, renamed }
}

/// Reads every tensor of a safetensors file onto `device` (thin I/O driver for
/// [`BertForMultiLabel::from_checkpoint`]).
pub fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, BertError> {
    candle_core::safetensors::load(path, device).map_err(|source| BertError::Read { path: path.to_path_buf(), source })
}

/// [`VarBuilder`] backend that creates each requested tensor as a Var in `varmap`, drawn
/// deterministically from (seed, name). Supports the `Init::Const` and `Init::Randn` hints.
struct SeededInit {
    varmap: VarMap,
    seed: u64,
}

impl SimpleBackend for SeededInit {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let mut data = self.varmap.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", var.shape())
            }
            return Ok(var.as_tensor().clone());
        }
        let tensor = match h {
            Init::Const(v) => Tensor::full(v as f32, s, dev)?,
            Init::Randn { mean, stdev } => {
                let vals = seeded::normal_samples(&mut seeded::rng_for(self.seed, name), s.elem_count(), mean, stdev);
                Tensor::from_vec(vals, s, dev)?
            }
            other => candle_core::bail!("unsupported init {other:?} for {name}"),
        };
        let var = Var::from_tensor(&tensor.to_dtype(dtype)?)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{name}: tensors of a seeded init must be requested with a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap.data().lock().map(|d| d.contains_key(name)).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::IndexOp;

    const TOL: f32 = 1e-5;

    fn dev() -> Device {
        Device::Cpu
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    /// [1, T] inputs for one sequence: ids, mask of ones, token types (second half = 1).
    fn single(ids: &[u32]) -> (Tensor, Tensor, Tensor) {
        let t = ids.len();
        let tt: Vec<u32> = (0..t).map(|i| u32::from(i >= t / 2)).collect();
        (
            Tensor::from_slice(ids, (1, t), &dev()).unwrap(),
            Tensor::ones((1, t), DType::U32, &dev()).unwrap(),
            Tensor::from_vec(tt, (1, t), &dev()).unwrap(),
        )
    }

    /// Right-pads sequences to `t` (pad id 0, mask 0, token type 0): [B, t] each.
    fn padded(seqs: &[&[u32]], t: usize) -> (Tensor, Tensor, Tensor) {
        let (mut ids, mut mask, mut tt) = (vec![], vec![], vec![]);
        for s in seqs {
            let n = s.len();
            for i in 0..t {
                ids.push(if i < n { s[i] } else { 0 });
                mask.push(u32::from(i < n));
                tt.push(u32::from(i < n && i >= n / 2));
            }
        }
        let b = seqs.len();
        (
            Tensor::from_vec(ids, (b, t), &dev()).unwrap(),
            Tensor::from_vec(mask, (b, t), &dev()).unwrap(),
            Tensor::from_vec(tt, (b, t), &dev()).unwrap(),
        )
    }

    const SEQ_A: [u32; 5] = [101, 7, 42, 99, 102];
    const SEQ_B: [u32; 9] = [101, 3, 17, 64, 5, 77, 120, 8, 102];

    fn tiny_model(use_pooler: bool) -> (BertForMultiLabel, VarMap) {
        let head = HeadConfig { use_pooler, ..HeadConfig::default() };
        BertForMultiLabel::init(&Config::tiny(), &head, &dev(), 1).unwrap()
    }

    #[test]
    fn softmax_layernorm_gelu_match_formulas() {
        // softmax([1, 2, 3]) = e^i / (e + e^2 + e^3).
        let x = Tensor::new(&[[1f32, 2., 3.]], &dev()).unwrap();
        let got: Vec<f32> = softmax_last_dim(&x).unwrap().i(0).unwrap().to_vec1().unwrap();
        let z: f32 = (1..=3).map(|i| (i as f32).exp()).sum();
        for (i, g) in got.iter().enumerate() {
            assert!((g - ((i + 1) as f32).exp() / z).abs() < 1e-6);
        }
        // Fully masked row stays finite (uniform).
        let m = Tensor::new(&[[MASK_NEG, MASK_NEG]], &dev()).unwrap();
        let got: Vec<f32> = softmax_last_dim(&m).unwrap().i(0).unwrap().to_vec1().unwrap();
        assert_eq!(got, vec![0.5, 0.5]);
        // LayerNorm([1, 2, 3, 6]) with weight 2, bias 1: mean 3, var (4+1+0+9)/4 = 3.5.
        let ln = LayerNorm {
            weight: Tensor::full(2f32, 4, &dev()).unwrap(),
            bias: Tensor::ones(4, DType::F32, &dev()).unwrap(),
            eps: 1e-12,
        };
        let x = Tensor::new(&[[1f32, 2., 3., 6.]], &dev()).unwrap();
        let got: Vec<f32> = ln.forward(&x).unwrap().i(0).unwrap().to_vec1().unwrap();
        for (g, xi) in got.iter().zip([1f32, 2., 3., 6.]) {
            assert!((g - ((xi - 3.) / 3.5f32.sqrt() * 2. + 1.)).abs() < 1e-5);
        }
        // GELU(x) = x * Phi(x): Phi(1) = 0.8413447, Phi(-1) = 0.1586553, Phi(2) = 0.9772499.
        let x = Tensor::new(&[1f32, -1., 2.], &dev()).unwrap();
        let got: Vec<f32> = x.gelu_erf().unwrap().to_vec1().unwrap();
        for (g, want) in got.iter().zip([0.841_344_7f32, -0.158_655_3, 1.954_499_8]) {
            assert!((g - want).abs() < 1e-6, "{g} vs {want}");
        }
    }

    #[test]
    fn config_json_roundtrip_and_rejects_unknown_activation() {
        let json = r#"{"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1,
            "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 384,
            "initializer_range": 0.02, "intermediate_size": 1536, "layer_norm_eps": 1e-12,
            "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
            "num_hidden_layers": 6, "pad_token_id": 0, "position_embedding_type": "absolute",
            "type_vocab_size": 2, "use_cache": true, "vocab_size": 30522}"#;
        assert_eq!(Config::from_json(json).unwrap(), Config::minilm_l6());
        // Omitted fields take HF defaults.
        assert_eq!(Config::from_json("{}").unwrap(), Config::default());
        let err = Config::from_json(r#"{"hidden_act": "relu"}"#).unwrap_err();
        assert!(err.to_string().contains("relu"), "{err}");
        let err = Config::from_json(r#"{"hidden_size": 30, "num_attention_heads": 4}"#);
        assert!(matches!(err, Err(BertError::InvalidConfig(_))));
        let back: Config = serde_json::from_str(&serde_json::to_string(&Config::tiny()).unwrap()).unwrap();
        assert_eq!(back, Config::tiny());
    }

    #[test]
    fn init_is_seeded_and_follows_hf_convention() {
        let (_, a) = tiny_model(true);
        let (_, b) = tiny_model(true);
        let (_, c) = BertForMultiLabel::init(
            &Config::tiny(),
            &HeadConfig { use_pooler: true, ..HeadConfig::default() },
            &dev(),
            2,
        )
        .unwrap();
        let get = |vm: &VarMap, n: &str| vm.data().lock().unwrap()[n].as_tensor().clone();
        let w = "encoder.layer.0.attention.self.query.weight";
        assert_eq!(max_abs_diff(&get(&a, w), &get(&b, w)), 0.0);
        assert!(max_abs_diff(&get(&a, w), &get(&c, w)) > 0.0);
        let wv: Vec<f32> = get(&a, w).flatten_all().unwrap().to_vec1().unwrap();
        let std = (wv.iter().map(|v| v * v).sum::<f32>() / wv.len() as f32).sqrt();
        assert!((std - 0.02).abs() < 0.004, "std {std}");
        let ones: Vec<f32> = get(&a, "embeddings.LayerNorm.weight").to_vec1().unwrap();
        assert!(ones.iter().all(|&v| v == 1.0));
        let zeros: Vec<f32> = get(&a, "classifier.bias").to_vec1().unwrap();
        assert!(zeros.iter().all(|&v| v == 0.0));
        // The VarMap holds exactly the HF parameter set: 5 embedding tensors, 16 per layer,
        // pooler 2, classifier 2.
        assert_eq!(a.all_vars().len(), 5 + 16 * 2 + 2 + 2);
        let (_, no_pooler) = tiny_model(false);
        assert!(!no_pooler.data().lock().unwrap().keys().any(|k| k.starts_with("pooler.")));
    }

    /// Every trainable tensor gets a gradient, and all but one a non-zero one. The exception,
    /// `attention.self.key.bias`, is exactly zero in exact arithmetic: it adds q . b_k to every
    /// score of a query row, and softmax is invariant to a per-row shift.
    #[test]
    fn every_parameter_receives_a_gradient() {
        let (model, varmap) = tiny_model(true);
        let (ids, mask, tt) = padded(&[&SEQ_A, &SEQ_B], 9);
        let mut rng = DropoutRng::new(3);
        let out = model.forward_t(&ids, &mask, Some(&tt), Some(&mut rng), true).unwrap();
        let w = Tensor::randn(0f32, 1., out.logits.shape(), &dev()).unwrap();
        let loss = (out.logits * w).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let mut no_grad = vec![];
        let mut zero_grad = vec![];
        let data = varmap.data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for name in names {
            match grads.get(data[name].as_tensor()) {
                None => no_grad.push(name.clone()),
                Some(g) => {
                    let s: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
                    if s.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
                        && !name.ends_with("attention.self.key.bias")
                    {
                        zero_grad.push(name.clone());
                    }
                }
            }
        }
        assert!(no_grad.is_empty(), "parameters without gradient: {no_grad:?}");
        assert!(zero_grad.is_empty(), "parameters with zero gradient: {zero_grad:?}");
    }

    #[test]
    fn batch_equals_single() {
        let (model, _) = tiny_model(false);
        let (ids, mask, tt) = padded(&[&SEQ_A, &SEQ_B], 9);
        let batch = model.forward(&ids, &mask, Some(&tt)).unwrap();
        for (row, seq) in [&SEQ_A[..], &SEQ_B[..]].iter().enumerate() {
            let (ids1, mask1, tt1) = single(seq);
            let one = model.forward(&ids1, &mask1, Some(&tt1)).unwrap();
            let d = max_abs_diff(&batch.logits.i(row..row + 1).unwrap(), &one.logits);
            assert!(d < TOL, "row {row}: logits differ by {d}");
            let n = seq.len();
            let hb = batch.last_hidden_state.i((row..row + 1, 0..n)).unwrap();
            let d = max_abs_diff(&hb, &one.last_hidden_state);
            assert!(d < TOL, "row {row}: hidden differs by {d}");
        }
    }

    #[test]
    fn padding_does_not_change_outputs() {
        let (model, _) = tiny_model(true);
        let (ids, mask, tt) = single(&SEQ_B);
        let plain = model.forward_t(&ids, &mask, Some(&tt), None, true).unwrap();
        let (ids, mask, tt) = padded(&[&SEQ_B], 20);
        let pad = model.forward_t(&ids, &mask, Some(&tt), None, true).unwrap();
        let d = max_abs_diff(&plain.logits, &pad.logits);
        assert!(d < TOL, "logits differ by {d}");
        let n = SEQ_B.len();
        let d = max_abs_diff(&plain.last_hidden_state, &pad.last_hidden_state.i((.., 0..n)).unwrap());
        assert!(d < TOL, "hidden differs by {d}");
        // Attention: real queries put exactly zero weight on padded keys.
        let (pa, pp) = (&plain.attentions.unwrap()[1], &pad.attentions.unwrap()[1]);
        assert_eq!(pp.dims(), &[1, 4, 20, 20]);
        let d = max_abs_diff(pa, &pp.i((.., .., 0..n, 0..n)).unwrap());
        assert!(d < TOL, "attention differs by {d}");
        let leak: f32 = pp.i((.., .., 0..n, n..)).unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert_eq!(leak, 0.0);
    }

    #[test]
    fn dropout_is_seeded_and_eval_ignores_it() {
        let (model, varmap) = tiny_model(false);
        let (ids, mask, tt) = padded(&[&SEQ_A, &SEQ_B], 9);
        let run = |seed: u64| {
            let mut rng = DropoutRng::new(seed);
            model.forward_t(&ids, &mask, Some(&tt), Some(&mut rng), false).unwrap().logits
        };
        assert_eq!(max_abs_diff(&run(5), &run(5)), 0.0);
        assert!(max_abs_diff(&run(5), &run(6)) > 1e-4);
        let eval = model.forward(&ids, &mask, Some(&tt)).unwrap().logits;
        assert!(max_abs_diff(&eval, &run(5)) > 1e-4);
        // Eval equals a model with the same weights and all dropout probabilities 0, in eval
        // and in train mode.
        let cfg0 = Config { hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0, ..Config::tiny() };
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev());
        let no_drop = BertForMultiLabel::load(vb, &cfg0, &HeadConfig::default()).unwrap();
        let e0 = no_drop.forward(&ids, &mask, Some(&tt)).unwrap().logits;
        assert_eq!(max_abs_diff(&eval, &e0), 0.0);
        let mut rng = DropoutRng::new(5);
        let t0 = no_drop.forward_t(&ids, &mask, Some(&tt), Some(&mut rng), false).unwrap().logits;
        assert_eq!(max_abs_diff(&eval, &t0), 0.0);
    }

    #[test]
    fn rejects_bad_inputs() {
        let (model, _) = tiny_model(false);
        let ids = Tensor::zeros((1, 65), DType::U32, &dev()).unwrap();
        let mask = Tensor::ones((1, 65), DType::U32, &dev()).unwrap();
        assert!(matches!(model.forward(&ids, &mask, None), Err(BertError::SequenceTooLong { len: 65, max: 64 })));
        let ids = Tensor::zeros((1, 4), DType::U32, &dev()).unwrap();
        let mask = Tensor::ones((1, 5), DType::U32, &dev()).unwrap();
        assert!(matches!(model.forward(&ids, &mask, None), Err(BertError::InvalidInput(_))));
    }

    /// Writes `tensors` to a safetensors file and reads it back through the I/O driver.
    fn roundtrip(dir: &Path, file: &str, tensors: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
        let path = dir.join(file);
        candle_core::safetensors::save(tensors, &path).unwrap();
        read_safetensors(&path, &dev()).unwrap()
    }

    fn varmap_tensors(varmap: &VarMap) -> HashMap<String, Tensor> {
        let data = varmap.data().lock().unwrap();
        data.iter().map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap())).collect()
    }

    fn incompatibility(r: Result<LoadedBert, BertError>) -> Incompatibility {
        match r {
            Err(BertError::Incompatible(i)) => i,
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("loaded a bad checkpoint"),
        }
    }

    #[test]
    fn loads_checkpoints_with_and_without_prefix() {
        let cfg = Config::tiny();
        let head = HeadConfig { use_pooler: true, ..HeadConfig::default() };
        let (source, varmap) = BertForMultiLabel::init(&cfg, &head, &dev(), 11).unwrap();
        let (ids, mask, tt) = padded(&[&SEQ_A, &SEQ_B], 9);
        let want = source.forward(&ids, &mask, Some(&tt)).unwrap().logits;
        let dir = tempfile::tempdir().unwrap();

        let mut plain = varmap_tensors(&varmap);
        plain.insert(
            "embeddings.position_ids".into(),
            Tensor::arange(0i64, 64, &dev()).unwrap().reshape((1, 64)).unwrap(),
        );
        let prefixed: HashMap<String, Tensor> = plain
            .iter()
            .map(|(k, v)| {
                let k = if k.starts_with("classifier.") { k.clone() } else { format!("bert.{k}") };
                (k, v.clone())
            })
            .collect();
        let plain = roundtrip(dir.path(), "plain.safetensors", &plain);
        let prefixed = roundtrip(dir.path(), "prefixed.safetensors", &prefixed);

        for (tensors, prefix) in [(&plain, CheckpointPrefix::None), (&prefixed, CheckpointPrefix::Bert)] {
            let loaded = BertForMultiLabel::from_checkpoint(tensors, &cfg, &head, &dev(), 99).unwrap();
            assert_eq!(loaded.report.layout.prefix, prefix);
            assert!(loaded.report.layout.has_pooler && loaded.report.layout.has_classifier);
            assert!(loaded.report.fresh_init.is_empty(), "{}", loaded.report);
            assert_eq!(loaded.report.loaded.len(), varmap.all_vars().len());
            let pos_ids = format!("{}embeddings.position_ids", prefix.as_str());
            assert_eq!(loaded.report.ignored, vec![(pos_ids, IgnoreReason::Buffer)]);
            let got = loaded.model.forward(&ids, &mask, Some(&tt)).unwrap().logits;
            assert_eq!(max_abs_diff(&got, &want), 0.0);
        }

        // Base checkpoint (no classifier): the head is freshly initialized and reported.
        let mut base = plain.clone();
        base.retain(|k, _| !k.starts_with("classifier."));
        let loaded = BertForMultiLabel::from_checkpoint(&base, &cfg, &head, &dev(), 99).unwrap();
        assert_eq!(loaded.report.fresh_init, vec!["classifier.bias", "classifier.weight"]);
        assert!(!loaded.report.layout.has_classifier);

        // Head without pooler: the checkpoint's pooler is ignored and reported.
        let loaded = BertForMultiLabel::from_checkpoint(&plain, &cfg, &HeadConfig::default(), &dev(), 99).unwrap();
        let ignored: Vec<&str> = loaded.report.ignored.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(ignored, vec!["embeddings.position_ids", "pooler.dense.bias", "pooler.dense.weight"]);

        // Legacy gamma/beta names are renamed and reported.
        let mut legacy = prefixed.clone();
        let t = legacy.remove("bert.embeddings.LayerNorm.weight").unwrap();
        legacy.insert("bert.embeddings.LayerNorm.gamma".into(), t);
        let loaded = BertForMultiLabel::from_checkpoint(&legacy, &cfg, &head, &dev(), 99).unwrap();
        assert_eq!(
            loaded.report.renamed,
            vec![("bert.embeddings.LayerNorm.gamma".to_string(), "embeddings.LayerNorm.weight".to_string())]
        );
        let got = loaded.model.forward(&ids, &mask, Some(&tt)).unwrap().logits;
        assert_eq!(max_abs_diff(&got, &want), 0.0);
    }

    #[test]
    fn bad_checkpoints_are_errors_that_name_the_tensors() {
        let cfg = Config::tiny();
        let head = HeadConfig::default();
        let (_, varmap) = BertForMultiLabel::init(&cfg, &head, &dev(), 11).unwrap();
        let good = varmap_tensors(&varmap);
        let load = |t: &HashMap<String, Tensor>| BertForMultiLabel::from_checkpoint(t, &cfg, &head, &dev(), 1);

        let mut missing = good.clone();
        missing.remove("encoder.layer.1.output.dense.weight");
        let i = incompatibility(load(&missing));
        assert_eq!(i.missing, vec!["encoder.layer.1.output.dense.weight"]);
        assert!(i.unexpected.is_empty() && i.shape_mismatch.is_empty());
        let msg = BertError::Incompatible(i).to_string();
        assert!(msg.contains("encoder.layer.1.output.dense.weight"), "{msg}");

        let mut extra = good.clone();
        extra.insert("encoder.layer.9.output.dense.weight".into(), Tensor::zeros(3, DType::F32, &dev()).unwrap());
        extra.insert("bert.embeddings.extra".into(), Tensor::zeros(3, DType::F32, &dev()).unwrap());
        let i = incompatibility(load(&extra));
        assert_eq!(i.unexpected, vec!["bert.embeddings.extra", "encoder.layer.9.output.dense.weight"]);
        assert!(i.missing.is_empty());

        let mut shape = good.clone();
        shape.insert("embeddings.LayerNorm.weight".into(), Tensor::ones(33, DType::F32, &dev()).unwrap());
        let i = incompatibility(load(&shape));
        assert_eq!(
            i.shape_mismatch,
            vec![ShapeMismatch { name: "embeddings.LayerNorm.weight".into(), expected: vec![32], found: vec![33] }]
        );
        let msg = BertError::Incompatible(i).to_string();
        assert!(msg.contains("embeddings.LayerNorm.weight") && msg.contains("[32]") && msg.contains("[33]"), "{msg}");

        // A partial head is missing its other half, not freshly initialized.
        let mut partial = good.clone();
        partial.remove("classifier.bias");
        assert_eq!(incompatibility(load(&partial)).missing, vec!["classifier.bias"]);

        // In a `bert.`-prefixed checkpoint, an unprefixed encoder tensor is unexpected and the
        // prefixed one is missing.
        let mut mixed: HashMap<String, Tensor> = good
            .iter()
            .map(|(k, v)| (if k.starts_with("classifier.") { k.clone() } else { format!("bert.{k}") }, v.clone()))
            .collect();
        let t = mixed.remove("bert.encoder.layer.0.intermediate.dense.bias").unwrap();
        mixed.insert("encoder.layer.0.intermediate.dense.bias".into(), t);
        let i = incompatibility(load(&mixed));
        assert_eq!(i.missing, vec!["encoder.layer.0.intermediate.dense.bias"]);
        assert_eq!(i.unexpected, vec!["encoder.layer.0.intermediate.dense.bias"]);

        // Layout errors.
        let mut both = good.clone();
        both.insert("bert.embeddings.word_embeddings.weight".into(), good["embeddings.word_embeddings.weight"].clone());
        assert!(matches!(load(&both), Err(BertError::AmbiguousPrefix)));
        let mut none = good.clone();
        none.remove("embeddings.word_embeddings.weight");
        assert!(matches!(load(&none), Err(BertError::NotBert)));
    }
}
