//! 95% bootstrap intervals of each model's macro- and micro-AUC, resampled by patient, and the
//! paired interval of each model's macro-AUC difference against a reference model (the
//! student without distillation), all on the same resamples ([`ckd_core::bootstrap`]).

use ckd_core::bootstrap::{self, Groups, Interval};
use ckd_core::metrics;
use ckd_core::NUM_LABELS;
use serde::{Deserialize, Serialize};

use super::{ModelResult, ReportError};

/// Intervals of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelIntervals {
    /// Macro ROC-AUC.
    pub macro_auc: Option<Interval>,
    /// Micro ROC-AUC.
    pub micro_auc: Option<Interval>,
    /// Macro ROC-AUC of this model minus the reference's, paired; `None` for the reference
    /// itself or without one.
    pub macro_auc_vs_reference: Option<Interval>,
}

/// Settings of the intervals (`report.json` records them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntervalSettings {
    /// Resamples drawn.
    pub resamples: usize,
    /// Seed of the draws.
    pub seed: u64,
    /// Patients in the evaluation set (the resampling unit).
    pub patients: usize,
    /// The model the paired differences are taken against.
    pub reference: Option<String>,
}

/// Row-major probabilities and 0/1 targets of the samples `idx` (repeats kept).
fn subset(m: &ModelResult, idx: &[usize]) -> (Vec<f32>, Vec<u8>) {
    let mut p = Vec::with_capacity(idx.len() * NUM_LABELS);
    let mut t = Vec::with_capacity(idx.len() * NUM_LABELS);
    for &i in idx {
        p.extend_from_slice(&m.probs[i]);
        t.extend(m.labels[i].to_dense().iter().map(|&v| v as u8));
    }
    (p, t)
}

fn aucs(m: &ModelResult, idx: &[usize]) -> (Option<f64>, Option<f64>) {
    let (p, t) = subset(m, idx);
    match metrics::roc_auc(&p, &t, NUM_LABELS) {
        Ok(a) => (a.macro_avg, a.micro),
        Err(_) => (None, None),
    }
}

/// Intervals for every model (same order). `subjects[i]` is the patient of evaluation sample
/// `i`; every model must have been evaluated on the same samples.
pub fn compute(
    models: &[ModelResult],
    subjects: &[u64],
    reference: Option<&str>,
    resamples: usize,
    seed: u64,
) -> Result<(Vec<ModelIntervals>, IntervalSettings), ReportError> {
    for m in models {
        if m.probs.len() != subjects.len() {
            return Err(ReportError::Invalid(format!(
                "model {:?}: {} samples but {} patient ids for the intervals",
                m.name,
                m.probs.len(),
                subjects.len()
            )));
        }
    }
    let groups = Groups::by_subject(subjects);
    let draws = groups.resamples(resamples, seed);
    let n = subjects.len();
    let reference_model = match reference {
        Some(name) => Some(
            models
                .iter()
                .find(|m| m.name == name)
                .ok_or_else(|| ReportError::Invalid(format!("reference model {name:?} is not in the report")))?,
        ),
        None => None,
    };
    let out = models
        .iter()
        .map(|m| ModelIntervals {
            macro_auc: bootstrap::interval(n, &draws, |idx| aucs(m, idx).0),
            micro_auc: bootstrap::interval(n, &draws, |idx| aucs(m, idx).1),
            macro_auc_vs_reference: reference_model
                .filter(|r| r.name != m.name)
                .and_then(|r| bootstrap::paired_difference(n, &draws, |idx| aucs(m, idx).0, |idx| aucs(r, idx).0)),
        })
        .collect();
    let settings =
        IntervalSettings { resamples, seed, patients: groups.len(), reference: reference.map(str::to_string) };
    Ok((out, settings))
}

/// A paired comparison of two models' macro-AUC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The model whose gain is measured.
    pub model: String,
    /// The model it is compared with.
    pub against: String,
    /// Macro-AUC of `model` minus that of `against`, paired 95% interval.
    pub macro_auc_diff: Interval,
    /// [`verdict`] of the interval.
    pub verdict: String,
}

/// Paired comparisons `(model, against)` by name, on the same resamples as [`compute`].
pub fn compare(
    models: &[ModelResult],
    subjects: &[u64],
    pairs: &[(String, String)],
    resamples: usize,
    seed: u64,
) -> Result<Vec<Comparison>, ReportError> {
    let draws = Groups::by_subject(subjects).resamples(resamples, seed);
    let find = |name: &str| {
        models
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| ReportError::Invalid(format!("comparison names model {name:?}, which is not in the report")))
    };
    let mut out = Vec::with_capacity(pairs.len());
    for (a, b) in pairs {
        let (ma, mb) = (find(a)?, find(b)?);
        if let Some(d) =
            bootstrap::paired_difference(subjects.len(), &draws, |idx| aucs(ma, idx).0, |idx| aucs(mb, idx).0)
        {
            out.push(Comparison {
                model: a.clone(),
                against: b.clone(),
                verdict: verdict(&d).into(),
                macro_auc_diff: d,
            });
        }
    }
    Ok(out)
}

/// `0.712 [0.690, 0.735]`, or `N/A`.
pub fn fmt_interval(iv: Option<&Interval>) -> String {
    match iv {
        Some(i) => format!("{:.3} [{:.3}, {:.3}]", i.estimate, i.lo, i.hi),
        None => "N/A".into(),
    }
}

/// `+0.012 [-0.004, +0.027]`, or an empty string.
pub fn fmt_difference(iv: Option<&Interval>) -> String {
    match iv {
        Some(i) => format!("{:+.3} [{:+.3}, {:+.3}]", i.estimate, i.lo, i.hi),
        None => String::new(),
    }
}

/// "helps" / "hurts" / "no measurable effect", from a paired interval.
pub fn verdict(iv: &Interval) -> &'static str {
    if iv.above_zero() {
        "a measurable gain"
    } else if iv.below_zero() {
        "a measurable loss"
    } else {
        "no measurable effect"
    }
}
