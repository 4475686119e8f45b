//! The simplest baselines every evaluation shows beside the teacher and students
//! (DESIGN.md, "How a model is judged"):
//!
//! - **prior**: each label's training frequency for every sample (ROC-AUC 0.5 by construction;
//!   its calibration and Hamming accuracy are what a model must beat without looking at a visit);
//! - **all-negative**: probability 0 everywhere, the CKD-EHR paper's accuracy floor (Hamming
//!   accuracy of predicting nothing);
//! - **logistic regression** per label on the tf-idf bag of concepts ([`bag`], [`logreg`]),
//!   `C = 1`: fitted on the training split, thresholds tuned on validation, then refitted on
//!   training + validation (the thresholds kept), so it sees the same labelled data as a student
//!   that early-stops and tunes thresholds on validation.

pub mod bag;
pub mod logreg;

use ckd_core::metrics;
use ckd_core::{LabelSet, NUM_LABELS};

use self::bag::Tfidf;
use self::logreg::{LogReg, LogRegConfig, SparseRow};

/// Error of a baseline fit.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// No training samples.
    #[error("baseline: no training samples")]
    Empty,
    /// Texts and labels differ in length.
    #[error("baseline: {texts} texts but {labels} label sets")]
    Mismatch {
        /// Texts given.
        texts: usize,
        /// Label sets given.
        labels: usize,
    },
    /// Threshold tuning failed.
    #[error("baseline thresholds: {0}")]
    Metrics(#[from] metrics::MetricsError),
}

/// Per-label training frequencies, as probabilities.
pub fn prior(train: &[LabelSet]) -> Vec<f32> {
    let n = train.len().max(1) as f32;
    (0..NUM_LABELS).map(|l| train.iter().filter(|s| s.contains(l as u8)).count() as f32 / n).collect()
}

/// `rows` copies of `probs` (one row of `NUM_LABELS`), row-major.
pub fn constant_rows(probs: &[f32], rows: usize) -> Vec<f32> {
    probs.iter().copied().cycle().take(probs.len() * rows).collect()
}

/// One logistic regression per label on a shared tf-idf vocabulary.
#[derive(Debug, Clone)]
pub struct BagOfConcepts {
    /// The features.
    pub tfidf: Tfidf,
    /// One model per label, in label order.
    pub models: Vec<LogReg>,
    /// Decision thresholds tuned on validation.
    pub thresholds: Vec<f32>,
}

/// Fits one model per label, the labels spread over the available cores.
fn fit_labels(rows: &[SparseRow], labels: &[LabelSet], n_features: usize, cfg: &LogRegConfig) -> Vec<LogReg> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, NUM_LABELS);
    let mut out: Vec<Option<LogReg>> = vec![None; NUM_LABELS];
    std::thread::scope(|s| {
        let chunks: Vec<_> = out
            .chunks_mut(NUM_LABELS.div_ceil(threads))
            .enumerate()
            .map(|(ci, chunk)| {
                s.spawn(move || {
                    for (k, slot) in chunk.iter_mut().enumerate() {
                        let l = (ci * NUM_LABELS.div_ceil(threads) + k) as u8;
                        let y: Vec<bool> = labels.iter().map(|s| s.contains(l)).collect();
                        *slot = Some(logreg::fit(rows, &y, n_features, cfg));
                    }
                })
            })
            .collect();
        for c in chunks {
            // A panic inside a fit is a bug; propagate it rather than return a partial model.
            if let Err(p) = c.join() {
                std::panic::resume_unwind(p);
            }
        }
    });
    out.into_iter().flatten().collect()
}

impl BagOfConcepts {
    /// Fits on `train`, tunes thresholds on `val`, refits on both (see the module docs).
    pub fn fit(
        train: (&[String], &[LabelSet]),
        val: (&[String], &[LabelSet]),
        cfg: &LogRegConfig,
    ) -> Result<Self, BaselineError> {
        Self::fit_with(train, val, cfg, true)
    }

    /// As [`Self::fit`]; with `refit` false the model is the one fitted on `train` alone
    /// (validation only tunes its thresholds), so its coefficients see no validation label.
    pub fn fit_with(
        train: (&[String], &[LabelSet]),
        val: (&[String], &[LabelSet]),
        cfg: &LogRegConfig,
        refit: bool,
    ) -> Result<Self, BaselineError> {
        for (t, l) in [train, val] {
            if t.len() != l.len() {
                return Err(BaselineError::Mismatch { texts: t.len(), labels: l.len() });
            }
        }
        if train.0.is_empty() {
            return Err(BaselineError::Empty);
        }
        let docs = |texts: &[String]| -> Vec<Vec<String>> { texts.iter().map(|t| bag::concepts(t)).collect() };
        let (train_docs, val_docs) = (docs(train.0), docs(val.0));
        // 1. Train only: thresholds on validation.
        let tfidf = Tfidf::fit(&train_docs);
        let rows: Vec<SparseRow> = train_docs.iter().map(|d| tfidf.transform(d)).collect();
        let first = BagOfConcepts { models: fit_labels(&rows, train.1, tfidf.len(), cfg), tfidf, thresholds: vec![] };
        let thresholds = if val.0.is_empty() {
            vec![metrics::DEFAULT_THRESHOLD; NUM_LABELS]
        } else {
            metrics::tune_thresholds_label_sets(&first.predict_docs(&val_docs), val.1)?
        };
        if !refit {
            return Ok(BagOfConcepts { thresholds, ..first });
        }
        // 2. Refit on train + val.
        let all_docs: Vec<Vec<String>> = train_docs.into_iter().chain(val_docs).collect();
        let all_labels: Vec<LabelSet> = train.1.iter().chain(val.1).copied().collect();
        let tfidf = Tfidf::fit(&all_docs);
        let rows: Vec<SparseRow> = all_docs.iter().map(|d| tfidf.transform(d)).collect();
        let models = fit_labels(&rows, &all_labels, tfidf.len(), cfg);
        Ok(BagOfConcepts { tfidf, models, thresholds })
    }

    fn predict_docs(&self, docs: &[Vec<String>]) -> Vec<f32> {
        let mut out = Vec::with_capacity(docs.len() * NUM_LABELS);
        for d in docs {
            let row = self.tfidf.transform(d);
            out.extend(self.models.iter().map(|m| m.predict(&row) as f32));
        }
        out
    }

    /// Probabilities `[texts.len() * NUM_LABELS]`, row-major.
    pub fn predict(&self, texts: &[String]) -> Vec<f32> {
        let docs: Vec<Vec<String>> = texts.iter().map(|t| bag::concepts(t)).collect();
        self.predict_docs(&docs)
    }
}

#[cfg(test)]
mod tests;

/// The three baseline rows of a report on `eval` samples: label prior, all-negative, and the
/// logistic regression on the bag of concepts, fitted as the module docs say.
pub fn report_rows(
    train: &[ckd_core::Sample],
    val: &[ckd_core::Sample],
    eval: &[ckd_core::Sample],
) -> Result<Vec<crate::report::ModelResult>, BaselineError> {
    use crate::report::{ModelResult, Role};
    let texts = |s: &[ckd_core::Sample]| -> Vec<String> { s.iter().map(|x| x.text()).collect() };
    let labels = |s: &[ckd_core::Sample]| -> Vec<LabelSet> { s.iter().map(|x| x.labels).collect() };
    let (tr_t, tr_l, va_t, va_l) = (texts(train), labels(train), texts(val), labels(val));
    let eval_labels = labels(eval);
    let rows = |p: Vec<f32>| -> Vec<Vec<f32>> { p.chunks_exact(NUM_LABELS).map(<[f32]>::to_vec).collect() };
    let pri = prior(&tr_l);
    let prior_th = if va_l.is_empty() {
        vec![metrics::DEFAULT_THRESHOLD; NUM_LABELS]
    } else {
        metrics::tune_thresholds_label_sets(&constant_rows(&pri, va_l.len()), &va_l)?
    };
    let lr = BagOfConcepts::fit((&tr_t, &tr_l), (&va_t, &va_l), &LogRegConfig::default())?;
    Ok(vec![
        ModelResult {
            name: "label prior".into(),
            role: Role::Baseline,
            probs: rows(constant_rows(&pri, eval.len())),
            labels: eval_labels.clone(),
            thresholds: prior_th,
        },
        ModelResult {
            name: "all-negative".into(),
            role: Role::Baseline,
            probs: rows(vec![0.0; eval.len() * NUM_LABELS]),
            labels: eval_labels.clone(),
            thresholds: vec![metrics::DEFAULT_THRESHOLD; NUM_LABELS],
        },
        ModelResult {
            name: format!("logistic regression (bag of concepts, {} features)", lr.tfidf.len()),
            role: Role::Baseline,
            probs: rows(lr.predict(&texts(eval))),
            labels: eval_labels,
            thresholds: lr.thresholds.clone(),
        },
    ])
}
