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

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, Init, Linear, VarBuilder, VarMap};

use super::checkpoint::CheckpointError;
pub use super::checkpoint::{Incompatibility, ShapeMismatch};
use super::common::{dropout, softmax_last_dim, DropoutRng, MASK_NEG};
use super::seeded::SeededInit;

mod config;
mod load;
#[cfg(test)]
mod tests;

pub use config::{Config, HeadConfig, HiddenAct, Pooling, PositionEmbeddingType};
pub use load::{inspect_checkpoint, CheckpointLayout, CheckpointPrefix, IgnoreReason, LoadReport};

/// The tensor whose name decides the checkpoint's prefix.
const WORD_EMBEDDINGS: &str = "embeddings.word_embeddings.weight";

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
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("sequence of {len} tokens exceeds max_position_embeddings = {max}")]
    SequenceTooLong { len: usize, max: usize },
}

/// Everything that keeps a checkpoint from loading, listed in full (names sorted).
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
