//! Knowledge-distillation losses for the BERT student.
//!
//! Total loss (shapes: `B` batch, `L` = 25 labels, `T` student tokens, `U_g` units):
//!
//! ```text
//! total = w_hard · hard + w_soft · soft + Σ_{g ∈ word, concept, field} w_g · KL_g
//!
//! hard  = masked mean BCE-with-logits(z_s, y)                    [loss::hard_loss]
//! soft  = mean BCE-with-logits(z_s, p_t)                  (T = 1) [loss::soft_loss]
//!       = T² · mean BCE-with-logits(z_s / T, σ(logit(p_t) / T)) (T ≠ 1) [loss::soft_loss_temperature]
//! KL_g  = mean_b KL(p_g || normalize(a · M_g))                    [loss::attention_kl]
//! ```
//!
//! The paper's default is `0.9 · hard + 0.1 · soft` with no attention terms
//! ([`DistillConfig::default`]). The attention terms use the tokenizer-agnostic evidence of
//! `ckd_core::evidence`: the teacher's attention aggregated onto words, concepts and fields of the
//! input text, compared with the student's `[CLS]` attention mapped onto the same units through
//! the alignment matrix `M_g` (built from the student's token byte offsets).
//!
//! Semi-supervised runs ("hard labels for 10% of samples, teacher soft labels for all") pass a
//! per-sample label mask: the hard term then averages over labelled samples only.

pub mod attention;
pub mod loss;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

pub use attention::{cls_attention, AttnInputs, GranularityInputs};
pub use loss::{
    attention_kl, bce_with_logits, hard_loss, soft_loss, soft_loss_temperature, student_unit_distribution,
    teacher_logits,
};

/// Error computing a distillation loss.
#[derive(Debug, thiserror::Error)]
pub enum DistillError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Inputs with inconsistent shapes.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// Invalid configuration.
    #[error("invalid distillation config: {0}")]
    Config(String),
    /// A term has a positive weight but its inputs were not given.
    #[error("the {term} loss has weight {weight} but its inputs were not provided")]
    MissingInput {
        /// Name of the term (`soft`, `attention word`, ...).
        term: &'static str,
        /// Its weight.
        weight: f32,
    },
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, DistillError>;

/// Weights and settings of the distillation loss (serde; every field optional in files, with the
/// defaults below; unknown fields are refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistillConfig {
    /// Weight of the hard-label BCE (paper: 0.9).
    pub hard: f32,
    /// Weight of the soft-label BCE against the teacher (paper: 0.1).
    pub soft: f32,
    /// Distillation temperature: 1.0 = plain soft BCE; any other value > 0 uses the
    /// `T²`-scaled variant ([`loss::soft_loss_temperature`]).
    pub temperature: f32,
    /// Weight of the word-level attention KL (0 = off).
    pub attn_word: f32,
    /// Weight of the concept-level attention KL (0 = off).
    pub attn_concept: f32,
    /// Weight of the field-level attention KL (0 = off).
    pub attn_field: f32,
    /// Number of final student layers whose `[CLS]` attention is averaged ([`cls_attention`]).
    pub last_k_layers: u32,
}

impl Default for DistillConfig {
    fn default() -> Self {
        DistillConfig {
            hard: 0.9,
            soft: 0.1,
            temperature: 1.0,
            attn_word: 0.0,
            attn_concept: 0.0,
            attn_field: 0.0,
            last_k_layers: 4,
        }
    }
}

impl DistillConfig {
    /// Checks weights (finite, ≥ 0, at least one > 0), temperature (finite, > 0) and
    /// `last_k_layers ≥ 1`.
    pub fn validate(&self) -> Result<()> {
        let weights = [
            ("hard", self.hard),
            ("soft", self.soft),
            ("attn_word", self.attn_word),
            ("attn_concept", self.attn_concept),
            ("attn_field", self.attn_field),
        ];
        for (name, w) in weights {
            if !(w.is_finite() && w >= 0.0) {
                return Err(DistillError::Config(format!("weight {name} = {w} must be finite and >= 0")));
            }
        }
        if weights.iter().all(|&(_, w)| w == 0.0) {
            return Err(DistillError::Config("every loss weight is 0".into()));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(DistillError::Config(format!("temperature = {} must be finite and > 0", self.temperature)));
        }
        if self.last_k_layers == 0 {
            return Err(DistillError::Config("last_k_layers must be >= 1".into()));
        }
        Ok(())
    }

    /// Whether any attention term is on.
    pub fn uses_attention(&self) -> bool {
        self.attn_word > 0.0 || self.attn_concept > 0.0 || self.attn_field > 0.0
    }
}

/// The total loss and each term's unweighted value (for logging). A term is `None` when its
/// weight is 0 (it is then not computed).
#[derive(Debug, Clone)]
pub struct LossParts {
    /// Weighted sum of the terms: a scalar tensor to call `backward` on.
    pub total: Tensor,
    /// Value of `total`.
    pub total_value: f32,
    /// Hard-label BCE (0 when the batch has no labelled sample).
    pub hard: Option<f32>,
    /// Soft-label BCE (temperature-scaled when `temperature ≠ 1`).
    pub soft: Option<f32>,
    /// Word-level attention KL.
    pub attn_word: Option<f32>,
    /// Concept-level attention KL.
    pub attn_concept: Option<f32>,
    /// Field-level attention KL.
    pub attn_field: Option<f32>,
}

/// Computes the distillation loss of one batch (see the module docs for the formula).
///
/// `logits`: student logits `[B, L]`; `targets`: hard labels `[B, L]` (0/1); `label_mask`:
/// optional `[B]` (1 = sample has hard labels); `teacher_probs`: teacher sigmoid probabilities
/// `[B, L]`, required when `cfg.soft > 0`; `attention`: required when an attention weight is > 0,
/// with the granularities whose weight is > 0. Missing inputs for a weighted term are an error,
/// never silently skipped.
pub fn total_loss(
    cfg: &DistillConfig,
    logits: &Tensor,
    targets: &Tensor,
    label_mask: Option<&Tensor>,
    teacher_probs: Option<&Tensor>,
    attention: Option<&AttnInputs>,
) -> Result<LossParts> {
    cfg.validate()?;
    let mut total: Option<Tensor> = None;
    let mut add = |term: &Tensor, w: f32| -> Result<f32> {
        let weighted = term.affine(f64::from(w), 0.0)?;
        total = Some(match total.take() {
            None => weighted,
            Some(t) => (t + weighted)?,
        });
        loss::scalar(term)
    };

    let hard = if cfg.hard > 0.0 { Some(add(&hard_loss(logits, targets, label_mask)?, cfg.hard)?) } else { None };
    let soft = if cfg.soft > 0.0 {
        let p = teacher_probs.ok_or(DistillError::MissingInput { term: "soft", weight: cfg.soft })?;
        if p.dims() != logits.dims() {
            return Err(DistillError::Shape(format!("teacher probs {:?} vs logits {:?}", p.dims(), logits.dims())));
        }
        let term = if cfg.temperature == 1.0 {
            soft_loss(logits, p)?
        } else {
            soft_loss_temperature(logits, p, f64::from(cfg.temperature))?
        };
        Some(add(&term, cfg.soft)?)
    } else {
        None
    };
    type Pick = fn(&AttnInputs) -> Option<&GranularityInputs>;
    let grans: [(&'static str, f32, Pick); 3] = [
        ("attention word", cfg.attn_word, |a| a.word.as_ref()),
        ("attention concept", cfg.attn_concept, |a| a.concept.as_ref()),
        ("attention field", cfg.attn_field, |a| a.field.as_ref()),
    ];
    let mut attn = [None; 3];
    for (slot, (term, weight, pick)) in attn.iter_mut().zip(grans) {
        if weight <= 0.0 {
            continue;
        }
        let a = attention.ok_or(DistillError::MissingInput { term, weight })?;
        let g = pick(a).ok_or(DistillError::MissingInput { term, weight })?;
        let kl = attention_kl(&a.attention, &g.alignment, &g.unit_mask, &g.teacher)?;
        *slot = Some(add(&kl, weight)?);
    }

    let total = total.ok_or_else(|| DistillError::Config("every loss weight is 0".into()))?;
    Ok(LossParts {
        total_value: loss::scalar(&total)?,
        total,
        hard,
        soft,
        attn_word: attn[0],
        attn_concept: attn[1],
        attn_field: attn[2],
    })
}

#[cfg(test)]
mod tests;
