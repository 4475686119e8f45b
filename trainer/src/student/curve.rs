//! The loss curve of a run: [`CurvePoint`]s (training-loss means every `log_every` steps and a
//! validation point per epoch), kept in the loop state and written to `DIR/curves.jsonl`, one
//! JSON object a line tagged by `kind` (`step` or `epoch`; the report reads them back).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{io_err, Result, StudentError};
use crate::distill::LossParts;
use crate::io::write_atomic;

/// One logged point of the loss curve or of the per-epoch validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CurvePoint {
    /// Training loss at a step (mean over the last `log_every` steps).
    Step {
        /// Global step (1-based).
        step: u64,
        /// Epoch (0-based).
        epoch: usize,
        /// Learning rate used.
        lr: f64,
        /// Total loss.
        loss: f32,
        /// Hard term.
        hard: Option<f32>,
        /// Soft term.
        soft: Option<f32>,
        /// Attention terms (word, concept, field).
        attn: [Option<f32>; 3],
        /// Gradient norm before clipping.
        grad_norm: f64,
    },
    /// Validation after an epoch.
    Epoch {
        /// Epoch (0-based).
        epoch: usize,
        /// Global step at the end of the epoch.
        step: u64,
        /// Validation macro-F1 at thresholds tuned on validation.
        val_macro_f1: f64,
        /// Validation macro ROC-AUC.
        val_macro_auc: Option<f64>,
        /// Mean training loss over the epoch.
        train_loss: f64,
    },
}

/// The curve point of a window of steps `w` (at least one) ending at `step`: each loss term's
/// mean over the steps that have it, and the mean gradient norm (`norm_sum` / steps).
pub(super) fn mean_point(w: &[LossParts], norm_sum: f64, step: u64, epoch: usize, lr: f64) -> CurvePoint {
    let n = w.len() as f32;
    let mean = |f: &dyn Fn(&LossParts) -> Option<f32>| -> Option<f32> {
        let v: Vec<f32> = w.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f32>() / v.len() as f32)
    };
    CurvePoint::Step {
        step,
        epoch,
        lr,
        loss: w.iter().map(|p| p.total_value).sum::<f32>() / n,
        hard: mean(&|p| p.hard),
        soft: mean(&|p| p.soft),
        attn: [mean(&|p| p.attn_word), mean(&|p| p.attn_concept), mean(&|p| p.attn_field)],
        grad_norm: norm_sum / w.len() as f64,
    }
}

/// Writes `curve` to `DIR/curves.jsonl` (one JSON point a line), atomically.
pub(super) fn write_curve(dir: &Path, curve: &[CurvePoint]) -> Result<()> {
    let mut s = String::new();
    for p in curve {
        s.push_str(&serde_json::to_string(p).map_err(|e| StudentError::Invalid(e.to_string()))?);
        s.push('\n');
    }
    let path = dir.join("curves.jsonl");
    write_atomic(&path, s.as_bytes()).map_err(io_err(&path))
}
