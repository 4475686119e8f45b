//! `ckd eval`: a trained student on evaluation samples, beside the baselines (fitted on the same
//! file's training and validation splits, when it has them) and an optional oracle, every row
//! with bootstrap intervals by patient and the paired macro-AUC difference against the logistic
//! regression. Files are read by the caller; this takes samples.

use ckd_core::{metrics, Sample};

use crate::baselines;
use crate::report::{self, ModelResult, ReportInput, ReportJson, Role};
use crate::student::{self, SoftTargets, Student, StudentError, TokenizedSamples, Training};

/// Error of an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The student could not run.
    #[error("{0}")]
    Student(#[from] StudentError),
    /// A baseline could not be fitted.
    #[error("{0}")]
    Baseline(#[from] baselines::BaselineError),
    /// The report could not be built.
    #[error("{0}")]
    Report(#[from] report::ReportError),
    /// The oracle misses a sample.
    #[error("oracle: no probabilities for sample {0}")]
    OracleMissing(String),
    /// Nothing to evaluate.
    #[error("no samples to evaluate")]
    Empty,
}

/// What `ckd eval` compares.
pub struct EvalInput<'a> {
    /// The student.
    pub student: &'a Student,
    /// Samples evaluated.
    pub eval: &'a [Sample],
    /// Training samples for the baselines (empty: no baselines).
    pub train: &'a [Sample],
    /// Validation samples for the baselines' thresholds.
    pub val: &'a [Sample],
    /// Oracle probabilities (synthetic cohorts).
    pub oracle: Option<&'a SoftTargets>,
    /// Description of the data, for the report.
    pub data_description: String,
}

/// Name of the student row.
pub const STUDENT_ROW: &str = "student";

/// Runs the evaluation. Returns the report (baselines, student, oracle) and the number of
/// evaluated texts cut at the student's `max_len`. The student row's role is its
/// [`Training`]: distilled, hard labels only, or "other" when its provenance does not say.
pub fn evaluate(input: &EvalInput<'_>) -> Result<(ReportJson, usize), EvalError> {
    if input.eval.is_empty() {
        return Err(EvalError::Empty);
    }
    let st = input.student;
    let p = TokenizedSamples::new(input.eval, &st.encoder)?;
    let probs = student::predict(&st.model, &p, st.encoder.pad_id, 32)?;
    let mut models = Vec::new();
    let mut reference = None;
    if !input.train.is_empty() {
        models = baselines::report_rows(input.train, input.val, input.eval)?;
        reference = models.iter().find(|m| m.name.starts_with("logistic regression")).map(|m| m.name.clone());
    }
    let role = match st.training {
        Training::Distilled => Role::StudentDistilled,
        Training::HardLabels => Role::Student,
        Training::Unknown => Role::Other,
    };
    models.push(ModelResult::from_flat(STUDENT_ROW, role, &probs, p.labels.clone(), st.thresholds.clone())?);
    if let Some(o) = input.oracle {
        let mut op = Vec::with_capacity(probs.len());
        for id in &p.ids {
            op.extend_from_slice(o.probs.get(id).ok_or_else(|| EvalError::OracleMissing(id.clone()))?);
        }
        let th = metrics::tune_thresholds_label_sets(&op, &p.labels).map_err(StudentError::from)?;
        models.push(ModelResult::from_flat("oracle", Role::Oracle, &op, p.labels.clone(), th)?);
    }
    let r = report::build(&ReportInput {
        title: "ckd eval".into(),
        data_description: input.data_description.clone(),
        models,
        subjects: input.eval.iter().map(|s| s.subject).collect(),
        reference,
        ..Default::default()
    })?;
    Ok((r, p.truncated))
}
