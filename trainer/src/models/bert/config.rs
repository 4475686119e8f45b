//! BERT `config.json` (HF `BertConfig`) and the multi-label head's settings, with validation.

use serde::{Deserialize, Serialize};

use super::BertError;
use crate::models::common::check_sizes;

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
        check_sizes(
            &[
                ("vocab_size", self.vocab_size),
                ("hidden_size", self.hidden_size),
                ("num_hidden_layers", self.num_hidden_layers),
                ("num_attention_heads", self.num_attention_heads),
                ("intermediate_size", self.intermediate_size),
                ("max_position_embeddings", self.max_position_embeddings),
                ("type_vocab_size", self.type_vocab_size),
            ],
            self.hidden_size,
            self.num_attention_heads,
        )
        .map_err(BertError::InvalidConfig)?;
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
    pub(crate) fn validate(&self) -> Result<(), BertError> {
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
