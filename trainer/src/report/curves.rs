//! Training curves: a trainer's `curves.jsonl` (one `{"kind": "step" | "epoch", ...}` object a
//! line) parsed into [`Curve`]s of finite losses and validation metrics; errors name the line.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{io_err, ReportError};

/// Whether a curve point is a training-loss log or an end-of-epoch validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointKind {
    /// A training-loss log at a step.
    Step,
    /// Validation after an epoch.
    Epoch,
}

/// One point of a training curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Which record it came from.
    pub kind: PointKind,
    /// Global step (1-based).
    pub step: u64,
    /// Epoch (0-based), when known.
    pub epoch: Option<usize>,
    /// Training loss: at a `Step`, the mean over the logging window; at an `Epoch`, the mean
    /// over the epoch.
    pub loss: Option<f64>,
    /// Validation macro-F1 (`Epoch` only).
    pub val_macro_f1: Option<f64>,
    /// Validation macro ROC-AUC (`Epoch` only).
    pub val_macro_auc: Option<f64>,
}

/// The training curve of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// Model name (as in [`ModelResult::name`](super::ModelResult::name)).
    pub model: String,
    /// Points in file order.
    pub points: Vec<CurvePoint>,
}

/// One `curves.jsonl` record as the student trainer writes it (`{"kind": "step" | "epoch", ...}`);
/// other fields are ignored, so a writer may add its own.
#[derive(Deserialize)]
struct RawPoint {
    kind: String,
    step: u64,
    epoch: Option<usize>,
    loss: Option<f64>,
    train_loss: Option<f64>,
    val_macro_f1: Option<f64>,
    val_macro_auc: Option<f64>,
}

/// Parses `curves.jsonl` text (one JSON object per line, blank lines skipped). `path` only
/// names the source in errors.
pub fn parse_curves(text: &str, path: &Path, model: &str) -> Result<Curve, ReportError> {
    let mut points = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let err = |message: String| ReportError::CurveLine { path: path.to_path_buf(), line: i + 1, message };
        if line.trim().is_empty() {
            continue;
        }
        let raw: RawPoint = serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
        let point = match raw.kind.as_str() {
            "step" => CurvePoint {
                kind: PointKind::Step,
                step: raw.step,
                epoch: raw.epoch,
                loss: raw.loss.or(raw.train_loss),
                val_macro_f1: None,
                val_macro_auc: None,
            },
            "epoch" => CurvePoint {
                kind: PointKind::Epoch,
                step: raw.step,
                epoch: raw.epoch,
                loss: raw.train_loss.or(raw.loss),
                val_macro_f1: raw.val_macro_f1,
                val_macro_auc: raw.val_macro_auc,
            },
            other => return Err(err(format!("unknown record kind {other:?} (expected \"step\" or \"epoch\")"))),
        };
        let finite = [point.loss, point.val_macro_f1, point.val_macro_auc].iter().flatten().all(|v| v.is_finite());
        if !finite {
            return Err(err("a loss or metric is not finite".into()));
        }
        points.push(point);
    }
    Ok(Curve { model: model.to_string(), points })
}

/// Reads a trainer's `curves.jsonl` (see [`parse_curves`]).
pub fn read_curves(path: &Path, model: &str) -> Result<Curve, ReportError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    parse_curves(&text, path, model)
}
