//! Training settings: model-size [`Preset`]s for students trained from scratch and the loop's
//! [`TrainConfig`] (serialized into every student's `provenance.json`, so field names and
//! serde defaults are part of the saved format).

use serde::{Deserialize, Serialize};

use crate::distill::DistillConfig;
use crate::models::bert::Config;
use crate::optim::AdamWConfig;

/// Model size presets for students trained from scratch (the vocabulary size comes from the
/// tokenizer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// H 64, 2 layers, 2 heads, I 256: the demo student.
    Tiny,
    /// H 128, 4 layers, 4 heads, I 512.
    Small,
    /// MiniLM-L6 shape: H 384, 6 layers, 12 heads, I 1536.
    Base,
}

impl Preset {
    /// BERT config of the preset for a vocabulary of `vocab_size` and `max_len` positions.
    pub fn config(self, vocab_size: usize, max_len: usize) -> Config {
        let base = match self {
            Preset::Tiny => Config {
                hidden_size: 64,
                num_hidden_layers: 2,
                num_attention_heads: 2,
                intermediate_size: 256,
                ..Config::default()
            },
            Preset::Small => Config {
                hidden_size: 128,
                num_hidden_layers: 4,
                num_attention_heads: 4,
                intermediate_size: 512,
                ..Config::default()
            },
            Preset::Base => Config::minilm_l6(),
        };
        Config { vocab_size, max_position_embeddings: max_len.max(2), ..base }
    }
}

/// Training settings (the paper: Adam 2e-5, batch 8, 10 epochs, max length 512).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Fraction of steps spent warming up.
    pub warmup_frac: f64,
    /// AdamW settings.
    pub adamw: AdamWConfig,
    /// Global gradient-norm clip (0 = off).
    pub clip_norm: f64,
    /// Seed of batch order, dropout and label subsampling.
    pub seed: u64,
    /// Checkpoint every N steps (0 = only at epoch ends).
    pub checkpoint_every: usize,
    /// Stop after this many epochs without a better validation macro-F1 (0 = never).
    pub patience: usize,
    /// Loss weights.
    pub distill: DistillConfig,
    /// Fraction of training samples whose hard labels are used (the rest learn from the
    /// teacher only); chosen by a hash of `(seed, id)`.
    pub label_fraction: f64,
    /// Log a loss curve point every N steps.
    pub log_every: usize,
    /// Stop (with a checkpoint) once this many steps are done in total; `--resume` continues.
    /// For time-boxed runs and for testing that resuming is exact.
    pub max_steps: Option<u64>,
    /// Learning-rate multiplier of the classification head (`classifier.*`, `pooler.*`).
    #[serde(default = "one")]
    pub head_lr_scale: f64,
}

/// Serde default of [`TrainConfig::head_lr_scale`] (configs written before it existed).
fn one() -> f64 {
    1.0
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 8,
            lr: 2e-5,
            warmup_frac: 0.1,
            adamw: AdamWConfig::default(),
            clip_norm: 1.0,
            seed: 42,
            checkpoint_every: 0,
            patience: 3,
            distill: DistillConfig::default(),
            label_fraction: 1.0,
            log_every: 10,
            max_steps: None,
            head_lr_scale: 1.0,
        }
    }
}
