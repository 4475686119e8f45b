//! The report's data: what the caller hands over ([`ReportInput`]: each model's predictions,
//! cost rows, explanations, provenance) and what `report.json` holds ([`ReportJson`], one
//! [`ModelReport`] per model), versioned by [`FORMAT_VERSION`].

use ckd_core::labels::{LabelSet, NUM_LABELS};
use ckd_core::metrics;
use serde::{Deserialize, Serialize};

use super::{Comparison, Curve, IntervalSettings, ModelIntervals, ReportError};

/// Version of the [`ReportJson`] layout; bumped on any incompatible change.
/// Version 2 added the bootstrap intervals (`intervals`, `models[].intervals`) and the
/// `baseline` role.
pub const FORMAT_VERSION: u32 = 2;

/// What a model is in the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A simple baseline (label prior, all-negative, logistic regression on the bag of
    /// concepts): what every model must beat.
    Baseline,
    /// The fine-tuned LLM teacher.
    Teacher,
    /// The student trained on hard labels only (no distillation).
    Student,
    /// The student distilled from the teacher, f32.
    StudentDistilled,
    /// The distilled student quantized to int8.
    StudentInt8,
    /// The synthetic cohort's oracle (the best any model can do on this data).
    Oracle,
    /// Anything else.
    Other,
}

impl Role {
    /// Human-readable name.
    pub fn describe(self) -> &'static str {
        match self {
            Role::Baseline => "baseline",
            Role::Teacher => "teacher",
            Role::Student => "student, no distillation",
            Role::StudentDistilled => "student, distilled (f32)",
            Role::StudentInt8 => "student, distilled (int8)",
            Role::Oracle => "oracle ceiling",
            Role::Other => "other",
        }
    }
}

/// One model's predictions on the evaluation samples.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelResult {
    /// Display name, unique within a report.
    pub name: String,
    /// Its role in the comparison.
    pub role: Role,
    /// Probabilities, shape `[N, NUM_LABELS]`, each in `[0, 1]`.
    pub probs: Vec<Vec<f32>>,
    /// Targets of the same `N` samples.
    pub labels: Vec<LabelSet>,
    /// Decision thresholds, length `NUM_LABELS` (`p >= threshold` is positive).
    pub thresholds: Vec<f32>,
}

impl ModelResult {
    /// A result from row-major probabilities of shape `[labels.len(), NUM_LABELS]` (the layout
    /// of the student's and teacher's `predict`). Errors name the model when the length is wrong.
    pub fn from_flat(
        name: impl Into<String>,
        role: Role,
        probs: &[f32],
        labels: Vec<LabelSet>,
        thresholds: Vec<f32>,
    ) -> Result<Self, ReportError> {
        let name = name.into();
        if probs.len() != labels.len() * NUM_LABELS {
            return Err(ReportError::Invalid(format!(
                "model {name:?}: {} probabilities for {} samples, expected {} ({NUM_LABELS} per sample)",
                probs.len(),
                labels.len(),
                labels.len() * NUM_LABELS
            )));
        }
        let probs = probs.chunks_exact(NUM_LABELS).map(<[f32]>::to_vec).collect();
        Ok(ModelResult { name, role, probs, labels, thresholds })
    }
}

/// Size and speed of one model form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostRow {
    /// Model name.
    pub model: String,
    /// Its role; the speed-up is teacher latency / student-int8 latency.
    pub role: Role,
    /// Numeric form, e.g. `bf16`, `f32`, `int8`.
    pub precision: String,
    /// Size of the weights on disk.
    pub size_bytes: u64,
    /// Median latency of one sample, milliseconds.
    pub latency_ms_median: f64,
    /// Batch throughput, samples per second.
    pub samples_per_s: f64,
    /// Where it was measured (CPU model and threads, or GPU).
    pub device: String,
}

/// Teacher vs student-int8 cost ratios.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Speedup {
    /// Teacher row's model name.
    pub teacher: String,
    /// Student int8 row's model name.
    pub student: String,
    /// Teacher median latency / student median latency; `None` if the student's is 0.
    pub latency: Option<f64>,
    /// Teacher size / student size; `None` if the student's size is 0.
    pub size: Option<f64>,
}

/// One example explanation: a sample's most probable predicted phenotype and the concepts with
/// the most attention evidence (the sample's, shared by every phenotype).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// Sample id.
    pub sample_id: String,
    /// Phenotype name.
    pub phenotype: String,
    /// Predicted probability.
    pub prob: f32,
    /// (concept text, weight), most important first.
    pub concepts: Vec<(String, f32)>,
}

/// Everything the report shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportInput {
    /// Title of the page.
    pub title: String,
    /// What the evaluation data is (shown next to every result).
    pub data_description: String,
    /// Caveats shown prominently before the results (e.g. "the data is synthetic").
    pub notes: Vec<String>,
    /// Models in display order.
    pub models: Vec<ModelResult>,
    /// Training curves.
    pub curves: Vec<Curve>,
    /// Latency and size rows.
    pub costs: Vec<CostRow>,
    /// Example explanations.
    pub explanations: Vec<Explanation>,
    /// (key, value) pairs: seeds, commits, paths, configs.
    pub provenance: Vec<(String, String)>,
    /// Patient id of each evaluation sample (same order as every model's rows), for the
    /// bootstrap intervals; empty = no intervals.
    pub subjects: Vec<u64>,
    /// Name of the model the paired differences are taken against (e.g. the student without
    /// distillation).
    pub reference: Option<String>,
    /// Paired comparisons `(model, against)` to state in the report (e.g. distilled vs not, at
    /// each label fraction); needs `subjects`.
    pub comparisons: Vec<(String, String)>,
    /// How good the explanations are, when measured.
    pub explanation_scores: Option<ExplanationScores>,
}

/// How good the int8 student's explanations are: occlusion against the synthetic generator's
/// truth ([`crate::explain_truth`]) and the student's attention evidence against the teacher's
/// and against occlusion ([`crate::attention_evidence`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplanationScores {
    /// What was explained, with what, and what it cost.
    pub description: String,
    /// Occlusion scored against the generator (synthetic cohorts only).
    pub truth: Option<crate::explain_truth::ExplainTruth>,
    /// The student's attention evidence scored.
    pub attention: Option<crate::attention_evidence::AttentionQuality>,
    /// One test visit shaded by each kind of evidence (an SVG document).
    pub figure_svg: Option<String>,
}

/// One model's evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Every metric, from `ckd_core::metrics::evaluate_label_sets` with
    /// [`CALIBRATION_BINS`](super::CALIBRATION_BINS) bins.
    pub metrics: metrics::Report,
    /// Micro-averaged ROC curve (FPR, TPR) over all `N·L` entries, thinned to
    /// [`ROC_RESOLUTION`](super::ROC_RESOLUTION); `None` when the targets are all 0 or all 1.
    pub roc: Option<Vec<(f64, f64)>>,
    /// 95% bootstrap intervals (by patient), when the input gave patient ids.
    #[serde(default)]
    pub intervals: Option<ModelIntervals>,
}

/// The content of `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportJson {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// [`LabelSpace::hash`](ckd_core::labels::LabelSpace::hash) of the label order used by every per-label list.
    pub label_space_hash: u64,
    /// Short phenotype names in label order.
    pub labels: Vec<String>,
    /// Title.
    pub title: String,
    /// What the evaluation data is.
    pub data_description: String,
    /// Caveats.
    pub notes: Vec<String>,
    /// One entry per model, in input order.
    pub models: Vec<ModelReport>,
    /// Training curves.
    pub curves: Vec<Curve>,
    /// Latency and size rows.
    pub costs: Vec<CostRow>,
    /// Teacher vs student int8, when both rows exist.
    pub speedup: Option<Speedup>,
    /// Example explanations.
    pub explanations: Vec<Explanation>,
    /// (key, value) pairs.
    pub provenance: Vec<(String, String)>,
    /// How the intervals were drawn, when there are any.
    #[serde(default)]
    pub intervals: Option<IntervalSettings>,
    /// The paired comparisons asked for.
    #[serde(default)]
    pub comparisons: Vec<Comparison>,
    /// How good the explanations are, when measured.
    #[serde(default)]
    pub explanation_scores: Option<ExplanationScores>,
}
