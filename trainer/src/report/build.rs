//! From [`ReportInput`] to [`ReportJson`]: the input validated, every model evaluated with
//! [`ckd_core::metrics::evaluate_label_sets`] (plus its thinned ROC curve and, given patient ids,
//! bootstrap intervals and paired comparisons), and the teacher vs student-int8 speed-up.

use ckd_core::labels::{LabelSpace, NUM_LABELS, PHENOTYPES};
use ckd_core::metrics;

use super::{
    intervals, roc_points, thin_curve, CostRow, ModelReport, ModelResult, ReportError, ReportInput, ReportJson, Role,
    Speedup, FORMAT_VERSION,
};

/// Number of equal-width calibration bins on `[0, 1]` (reliability diagram and ECE).
pub const CALIBRATION_BINS: usize = 10;

/// Largest step (in FPR or TPR) between two kept points of a stored ROC curve; finer detail is
/// dropped so the JSON and the SVG stay small. The AUC is always computed on the full curve.
pub const ROC_RESOLUTION: f64 = 0.002;

/// Resamples and seed of the bootstrap intervals.
pub const BOOTSTRAP_RESAMPLES: usize = ckd_core::bootstrap::DEFAULT_RESAMPLES;
/// Seed of the bootstrap draws (fixed, so a report is reproducible).
pub const BOOTSTRAP_SEED: u64 = 2026;

/// `v` is finite and `>= 0`; the error names `what`.
fn check_finite(what: &str, v: f64) -> Result<(), ReportError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(ReportError::Invalid(format!("{what} is {v}, expected a finite number >= 0")))
    }
}

/// Every metric of one model, after checking its shapes; errors name the model.
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

/// Teacher vs student-int8 ratios, when both cost rows exist.
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
        explanation_scores: input.explanation_scores.clone(),
    })
}

/// 0/1 targets of `samples`, row-major.
pub fn targets(samples: &[ckd_core::visit::Sample]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.labels.to_dense().iter().map(|&v| v as u8).collect::<Vec<_>>()).collect()
}

/// Macro-AUC of row-major `probs` on `samples`.
pub fn macro_auc(probs: &[f32], samples: &[ckd_core::visit::Sample]) -> Option<f64> {
    metrics::roc_auc(probs, &targets(samples), NUM_LABELS).ok().and_then(|a| a.macro_avg)
}
