//! The demo report: `report.json`, `report.html` (self-contained, inline SVG) and `plots/*.svg`.
//!
//! The caller hands over what each model predicted on the same test samples ([`ModelResult`]:
//! probabilities `[N, 25]`, targets, thresholds), training curves, latency and size rows,
//! example explanations, notes and provenance ([`ReportInput`]). Every metric is computed here
//! with [`ckd_core::metrics::evaluate_label_sets`], so the numbers equal those of `ckd eval`.
//!
//! [`build`] validates the input and computes the versioned [`ReportJson`]; [`render_plots`] and
//! [`render_html`] turn a `ReportJson` (alone: the HTML can be rebuilt from `report.json`) into
//! SVG and HTML; [`write()`] does all of it and writes the files atomically; [`summary_table`] is
//! the aligned text table for the terminal.

mod html;
pub mod intervals;
mod plots;

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use ckd_core::labels::{LabelSet, LabelSpace, NUM_LABELS, PHENOTYPES};
use ckd_core::metrics::{self, MetricsError};
use serde::{Deserialize, Serialize};

use crate::io::{pretty_json, write_atomic};

pub use html::render_html;
pub use intervals::{fmt_difference, fmt_interval, verdict, Comparison, IntervalSettings, ModelIntervals};
pub use plots::{render_plots, Plot};

/// Version of the [`ReportJson`] layout; bumped on any incompatible change.
/// Version 2 added the bootstrap intervals (`intervals`, `models[].intervals`) and the
/// `baseline` role.
pub const FORMAT_VERSION: u32 = 2;

/// Number of equal-width calibration bins on `[0, 1]` (reliability diagram and ECE).
pub const CALIBRATION_BINS: usize = 10;

/// Largest step (in FPR or TPR) between two kept points of a stored ROC curve; finer detail is
/// dropped so the JSON and the SVG stay small. The AUC is always computed on the full curve.
pub const ROC_RESOLUTION: f64 = 0.002;

/// Why a report could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A model's predictions could not be evaluated (shape, NaN, out-of-range probability...).
    #[error("model {model:?}: {source}")]
    Metrics {
        /// The model's name.
        model: String,
        /// What the metrics code rejected.
        #[source]
        source: MetricsError,
    },
    /// Some input field is invalid; the message names it.
    #[error("report input: {0}")]
    Invalid(String),
    /// A line of a `curves.jsonl` could not be read.
    #[error("{path}, line {line}: {message}")]
    CurveLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The plotting library failed to draw a plot.
    #[error("plot {plot}: {message}")]
    Plot {
        /// Which plot.
        plot: &'static str,
        /// The plotting library's message.
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ReportError + '_ {
    move |source| ReportError::Io { path: path.to_path_buf(), source }
}

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
    /// Model name (as in [`ModelResult::name`]).
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
}

/// Resamples and seed of the bootstrap intervals.
pub const BOOTSTRAP_RESAMPLES: usize = ckd_core::bootstrap::DEFAULT_RESAMPLES;
/// Seed of the bootstrap draws (fixed, so a report is reproducible).
pub const BOOTSTRAP_SEED: u64 = 2026;

/// One model's evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Every metric, from `ckd_core::metrics::evaluate_label_sets` with [`CALIBRATION_BINS`] bins.
    pub metrics: metrics::Report,
    /// Micro-averaged ROC curve (FPR, TPR) over all `N·L` entries, thinned to
    /// [`ROC_RESOLUTION`]; `None` when the targets are all 0 or all 1.
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
    /// [`LabelSpace::hash`] of the label order used by every per-label list.
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
}

/// Points `(FPR, TPR)` of the ROC curve of `(score, target)` pairs: `(0, 0)`, then one point per
/// distinct score taken as threshold in decreasing order (tied scores move diagonally at once),
/// ending at `(1, 1)`. `None` when the targets are all 0 or all 1. Scores must not be NaN and
/// targets must be 0 or 1 (the caller validates; NaN sorts as a tie).
pub fn roc_points(scores: &[f32], targets: &[u8]) -> Option<Vec<(f64, f64)>> {
    let mut pairs: Vec<(f32, u8)> = scores.iter().copied().zip(targets.iter().copied()).collect();
    let n_pos = pairs.iter().filter(|p| p.1 == 1).count() as u64;
    let n_neg = pairs.len() as u64 - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    pairs.sort_unstable_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    let mut out = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut rest = &pairs[..];
    while let Some(&(v, _)) = rest.first() {
        let len = rest.iter().position(|p| p.0 != v).unwrap_or(rest.len());
        let (group, tail) = rest.split_at(len);
        tp += group.iter().filter(|p| p.1 == 1).count() as u64;
        fp += group.iter().filter(|p| p.1 != 1).count() as u64;
        out.push((fp as f64 / n_neg as f64, tp as f64 / n_pos as f64));
        rest = tail;
    }
    Some(out)
}

/// Trapezoidal area under a curve of `(x, y)` points with non-decreasing `x`.
pub fn trapezoid_area(points: &[(f64, f64)]) -> f64 {
    points.windows(2).map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0).sum()
}

/// Keeps the first and last points and every point at least `resolution` away (in either
/// coordinate) from the previously kept one.
pub fn thin_curve(points: &[(f64, f64)], resolution: f64) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (i, &p) in points.iter().enumerate() {
        let keep = match out.last() {
            None => true,
            Some(&(x, y)) => i + 1 == points.len() || (p.0 - x).abs() >= resolution || (p.1 - y).abs() >= resolution,
        };
        if keep {
            out.push(p);
        }
    }
    out
}

fn check_finite(what: &str, v: f64) -> Result<(), ReportError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(ReportError::Invalid(format!("{what} is {v}, expected a finite number >= 0")))
    }
}

fn evaluate_model(m: &ModelResult) -> Result<ModelReport, ReportError> {
    let invalid = |msg: String| ReportError::Invalid(format!("model {:?}: {msg}", m.name));
    if m.probs.len() != m.labels.len() {
        return Err(invalid(format!("{} probability rows but {} label sets", m.probs.len(), m.labels.len())));
    }
    if m.thresholds.len() != NUM_LABELS {
        return Err(invalid(format!("{} thresholds, expected {NUM_LABELS}", m.thresholds.len())));
    }
    let mut flat = Vec::with_capacity(m.probs.len() * NUM_LABELS);
    for (i, row) in m.probs.iter().enumerate() {
        if row.len() != NUM_LABELS {
            return Err(invalid(format!("probability row {i} has {} entries, expected {NUM_LABELS}", row.len())));
        }
        flat.extend_from_slice(row);
    }
    let metrics = metrics::evaluate_label_sets(&flat, &m.labels, &m.thresholds, CALIBRATION_BINS)
        .map_err(|source| ReportError::Metrics { model: m.name.clone(), source })?;
    let targets = metrics::targets_from_label_sets(&m.labels);
    let roc = roc_points(&flat, &targets).map(|pts| thin_curve(&pts, ROC_RESOLUTION));
    Ok(ModelReport { name: m.name.clone(), role: m.role, metrics, roc, intervals: None })
}

fn speedup(costs: &[CostRow]) -> Option<Speedup> {
    let teacher = costs.iter().find(|c| c.role == Role::Teacher)?;
    let student = costs.iter().find(|c| c.role == Role::StudentInt8)?;
    let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
    Some(Speedup {
        teacher: teacher.model.clone(),
        student: student.model.clone(),
        latency: ratio(teacher.latency_ms_median, student.latency_ms_median),
        size: ratio(teacher.size_bytes as f64, student.size_bytes as f64),
    })
}

/// Validates the input and computes every metric. Errors name the model and field at fault:
/// duplicate model names, rows that are not `NUM_LABELS` wide, NaN or out-of-range
/// probabilities, wrong threshold counts, negative or non-finite costs, non-finite
/// explanation numbers.
pub fn build(input: &ReportInput) -> Result<ReportJson, ReportError> {
    for (i, m) in input.models.iter().enumerate() {
        if input.models[..i].iter().any(|o| o.name == m.name) {
            return Err(ReportError::Invalid(format!("two models are named {:?}", m.name)));
        }
    }
    let mut models = input.models.iter().map(evaluate_model).collect::<Result<Vec<_>, _>>()?;
    let intervals = if input.subjects.is_empty() {
        None
    } else {
        let (per_model, settings) = intervals::compute(
            &input.models,
            &input.subjects,
            input.reference.as_deref(),
            BOOTSTRAP_RESAMPLES,
            BOOTSTRAP_SEED,
        )?;
        for (m, iv) in models.iter_mut().zip(per_model) {
            m.intervals = Some(iv);
        }
        Some(settings)
    };
    let comparisons = if input.comparisons.is_empty() {
        Vec::new()
    } else if input.subjects.is_empty() {
        return Err(ReportError::Invalid("comparisons need the patient ids (`subjects`)".into()));
    } else {
        intervals::compare(&input.models, &input.subjects, &input.comparisons, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)?
    };
    for c in &input.costs {
        check_finite(&format!("cost row {:?}: latency_ms_median", c.model), c.latency_ms_median)?;
        check_finite(&format!("cost row {:?}: samples_per_s", c.model), c.samples_per_s)?;
    }
    for (i, e) in input.explanations.iter().enumerate() {
        let bad = !e.prob.is_finite() || e.concepts.iter().any(|(_, w)| !w.is_finite());
        if bad {
            return Err(ReportError::Invalid(format!(
                "explanation {i} (sample {:?}): probability or a concept weight is not finite",
                e.sample_id
            )));
        }
    }
    Ok(ReportJson {
        format_version: FORMAT_VERSION,
        label_space_hash: LabelSpace.hash(),
        labels: PHENOTYPES.iter().map(|p| p.short.to_string()).collect(),
        title: input.title.clone(),
        data_description: input.data_description.clone(),
        notes: input.notes.clone(),
        models,
        curves: input.curves.clone(),
        costs: input.costs.clone(),
        speedup: speedup(&input.costs),
        explanations: input.explanations.clone(),
        provenance: input.provenance.clone(),
        intervals,
        comparisons,
    })
}

/// Builds the report and writes `dir/report.json`, `dir/report.html` and `dir/plots/*.svg`,
/// each atomically. Returns what was written to `report.json`.
pub fn write(dir: &Path, input: &ReportInput) -> Result<ReportJson, ReportError> {
    let report = build(input)?;
    let plots = render_plots(&report)?;
    let html = render_html(&report, &plots);
    for p in &plots {
        let path = dir.join("plots").join(p.file_name);
        write_atomic(&path, p.svg.as_bytes()).map_err(io_err(&path))?;
    }
    let path = dir.join("report.json");
    write_atomic(&path, pretty_json(&report).as_bytes()).map_err(io_err(&path))?;
    let path = dir.join("report.html");
    write_atomic(&path, html.as_bytes()).map_err(io_err(&path))?;
    Ok(report)
}

/// 0/1 targets of `samples`, row-major.
pub fn targets(samples: &[ckd_core::visit::Sample]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.labels.to_dense().iter().map(|&v| v as u8).collect::<Vec<_>>()).collect()
}

/// Macro-AUC of row-major `probs` on `samples`.
pub fn macro_auc(probs: &[f32], samples: &[ckd_core::visit::Sample]) -> Option<f64> {
    metrics::roc_auc(probs, &targets(samples), NUM_LABELS).ok().and_then(|a| a.macro_avg)
}

/// A metric to 3 decimals, or `N/A` when undefined.
pub fn fmt3(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.3}"),
        _ => "N/A".to_string(),
    }
}

/// Bytes as MB (10^6) with 1 decimal.
pub(crate) fn fmt_mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

/// The rows of the metrics table: header, then one row per model.
pub(crate) fn metrics_rows(r: &ReportJson) -> Vec<Vec<String>> {
    let with_ci = r.intervals.is_some();
    let mut header: Vec<String> =
        ["model", "role", "N", "Hamming acc", "micro F1", "macro F1", "micro AUC", "macro AUC", "ECE"]
            .map(String::from)
            .to_vec();
    if with_ci {
        header[6] = "micro AUC [95% CI]".into();
        header[7] = "macro AUC [95% CI]".into();
        if r.intervals.as_ref().is_some_and(|s| s.reference.is_some()) {
            // Before ECE, so the last column stays numeric and the rows stay aligned.
            header.insert(8, "macro AUC - ref [paired 95% CI]".into());
        }
    }
    let mut rows = vec![header];
    for m in &r.models {
        let x = &m.metrics;
        let iv = m.intervals.as_ref();
        let (micro, macro_) = if with_ci {
            (fmt_interval(iv.and_then(|i| i.micro_auc.as_ref())), fmt_interval(iv.and_then(|i| i.macro_auc.as_ref())))
        } else {
            (fmt3(x.micro_auc), fmt3(x.macro_auc))
        };
        let mut row = vec![
            m.name.clone(),
            m.role.describe().to_string(),
            x.n_samples.to_string(),
            fmt3(Some(x.hamming_accuracy)),
            fmt3(Some(x.micro_f1)),
            fmt3(Some(x.macro_f1)),
            micro,
            macro_,
            fmt3(Some(x.ece)),
        ];
        if r.intervals.as_ref().is_some_and(|s| s.reference.is_some()) {
            let d = iv.and_then(|i| i.macro_auc_vs_reference.as_ref());
            row.insert(8, if d.is_none() { "(ref)".into() } else { fmt_difference(d) });
        }
        rows.push(row);
    }
    rows
}

/// The rows of the latency and size table: header, then one row per cost row.
pub(crate) fn cost_rows(r: &ReportJson) -> Vec<Vec<String>> {
    let mut rows = vec![["model", "precision", "size (MB)", "median latency (ms)", "samples/s", "device"]
        .map(String::from)
        .to_vec()];
    for c in &r.costs {
        rows.push(vec![
            c.model.clone(),
            c.precision.clone(),
            fmt_mb(c.size_bytes),
            format!("{:.2}", c.latency_ms_median),
            format!("{:.1}", c.samples_per_s),
            c.device.clone(),
        ]);
    }
    rows
}

/// `model vs against: macro-AUC +0.012 [-0.004, +0.027] (paired 95% CI): no measurable effect`.
pub(crate) fn comparison_sentence(c: &Comparison) -> String {
    format!(
        "Paired difference, {} vs {}: macro-AUC {} (95% CI, by patient): {}.",
        c.model,
        c.against,
        fmt_difference(Some(&c.macro_auc_diff)),
        c.verdict
    )
}

/// One sentence on the teacher vs student-int8 speed-up, when both cost rows exist.
pub(crate) fn speedup_sentence(r: &ReportJson) -> Option<String> {
    let s = r.speedup.as_ref()?;
    let x = |v: Option<f64>| v.map_or("N/A".to_string(), |v| format!("{v:.1}x"));
    Some(format!(
        "Speed-up of {} over {}: {} lower median latency, {} smaller.",
        s.student,
        s.teacher,
        x(s.latency),
        x(s.size)
    ))
}

fn text_table(out: &mut String, rows: &[Vec<String>]) {
    let ncol = rows.iter().map(Vec::len).max().unwrap_or(0);
    let cell = |r: &Vec<String>, c: usize| r.get(c).map_or("", String::as_str).to_string();
    let widths: Vec<usize> =
        (0..ncol).map(|c| rows.iter().map(|r| cell(r, c).chars().count()).max().unwrap_or(0)).collect();
    // A column whose data cells are all numbers (or N/A) is right-aligned, header included.
    let numeric: Vec<bool> = (0..ncol)
        .map(|c| rows.len() > 1 && rows[1..].iter().all(|r| cell(r, c) == "N/A" || cell(r, c).parse::<f64>().is_ok()))
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for c in 0..ncol {
            let text = cell(row, c);
            let pad = " ".repeat(widths[c].saturating_sub(text.chars().count()));
            if numeric[c] {
                line.push_str(&pad);
                line.push_str(&text);
            } else {
                line.push_str(&text);
                line.push_str(&pad);
            }
            line.push_str("  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * ncol.saturating_sub(1)));
            out.push('\n');
        }
    }
}

/// The aligned plain-text summary for the terminal: notes, the metrics table, the cost table and
/// the speed-up.
pub fn summary_table(r: &ReportJson) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", r.title);
    for n in &r.notes {
        let _ = writeln!(out, "NOTE: {n}");
    }
    if !r.data_description.is_empty() {
        let _ = writeln!(out, "Data: {}", r.data_description);
    }
    out.push('\n');
    if r.models.is_empty() {
        out.push_str("(no models evaluated)\n");
    } else {
        text_table(&mut out, &metrics_rows(r));
    }
    if let Some(reference) = r.intervals.as_ref().and_then(|s| s.reference.as_ref()) {
        let _ = writeln!(out, "ref = {reference}");
    }
    if let Some(s) = &r.intervals {
        let _ = writeln!(
            out,
            "Intervals: 95% bootstrap over the {} patients ({} resamples, seed {}); paired ones use the same resamples.",
            s.patients, s.resamples, s.seed
        );
    }
    for c in &r.comparisons {
        let _ = writeln!(out, "{}", comparison_sentence(c));
    }
    if !r.costs.is_empty() {
        out.push('\n');
        text_table(&mut out, &cost_rows(r));
    }
    if let Some(s) = speedup_sentence(r) {
        out.push('\n');
        out.push_str(&s);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
