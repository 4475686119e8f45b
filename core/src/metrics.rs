//! Evaluation metrics for multi-label phenotype prediction.
//!
//! Pure functions on slices; no I/O, no allocation beyond what a result needs, `no_std` + `alloc`.
//!
//! # Input convention
//!
//! * `probs: &[f32]` is row-major with shape `[N, L]`: entry `probs[i * L + l]` is the predicted
//!   probability (or any score, for the ranking metrics) of label `l` for sample `i`.
//! * `targets: &[u8]` has the same shape and holds `0` or `1`.
//! * `n_labels` is `L` (at least 1); `N = probs.len() / L` must be at least 1.
//! * `thresholds: &[f32]` has length `L`; label `l` of sample `i` is predicted positive iff
//!   `probs[i * L + l] >= thresholds[l]`.
//!
//! Wrappers taking `&[LabelSet]` (with `L = NUM_LABELS`) are provided for the common case:
//! [`targets_from_label_sets`], [`evaluate_label_sets`], [`tune_thresholds_label_sets`].
//!
//! Every function validates its input and returns a [`MetricsError`] instead of panicking:
//! mismatched lengths, NaN probabilities or thresholds, targets other than 0/1, no samples.
//! Infinite scores are accepted by the ranking metrics (AUC, AUPR) but not by calibration.
//! All accumulation is done in `f64` (counts in integers).
//!
//! # Conventions
//!
//! * **Zero division** (precision, recall, F1): a ratio whose denominator is 0 is `0.0`, like
//!   scikit-learn's `zero_division=0`. Per-label F1 is `2TP / (2TP + FP + FN)` (equal to the
//!   harmonic mean of P and R whenever that is defined), so it is `0.0` when there are neither
//!   true nor predicted positives.
//! * **Macro P/R/F1** is the unweighted mean of the per-label values over *all* `L` labels
//!   (labels with no support count with their zero-division value), as scikit-learn's
//!   `average='macro'`. Macro F1 is the mean of per-label F1, not the F1 of macro P and R.
//! * **Micro P/R/F1** sum TP, FP and FN over all labels first.
//! * **ROC-AUC** is the Mann–Whitney statistic: the fraction of (positive, negative) pairs
//!   where the positive scores higher, a tie counting 1/2. This equals the average-rank
//!   formula `(R+ - P(P+1)/2) / (P·N)` and the trapezoidal area under scikit-learn's ROC curve.
//!   It is computed exactly in integers and converted to `f64` once.
//! * **AUPR** is scikit-learn's `average_precision_score`: `Σ_n (R_n − R_{n−1}) · P_n` over the
//!   distinct score values taken as thresholds in decreasing order (tied scores form one
//!   threshold), with `R_0 = 0`.
//! * **Undefined labels**: AUC is undefined (`None`) for a label whose targets are all 0 or all
//!   1; AUPR is undefined (`None`) for a label with no positives (all positives gives 1.0).
//!   Macro averages are over the defined labels only and report how many there were; they are
//!   `None` when no label is defined. (scikit-learn raises for AUC and returns 0 with a warning
//!   for AP in these cases; this module neither fakes a value nor fails the whole evaluation.)
//!   Micro AUC/AUPR are computed on all `N·L` flattened (score, target) pairs, and are `None`
//!   under the same conditions applied to the flattened targets.
//! * **Calibration** (ECE) uses every (sample, label) entry, which must lie in `[0, 1]`.

use alloc::vec::Vec;
use core::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::labels::{LabelSet, NUM_LABELS};

/// Threshold used when nothing better is known (and by [`tune_thresholds`] for a label with
/// no positives).
pub const DEFAULT_THRESHOLD: f32 = 0.5;

/// Why a metric could not be computed from its input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// `n_labels` was 0.
    #[error("n_labels must be at least 1")]
    ZeroLabels,
    /// The input has no samples (`N = 0`).
    #[error("no samples: metrics need at least one row")]
    NoSamples,
    /// `probs.len()` is not a multiple of `n_labels`.
    #[error("probs has {len} entries, which is not a multiple of n_labels = {n_labels}")]
    ProbsNotMultiple {
        /// `probs.len()`.
        len: usize,
        /// `n_labels`.
        n_labels: usize,
    },
    /// `probs.len()` differs from what the other arguments imply (e.g. `labels.len() * L`).
    #[error("probs has {got} entries, expected {expected}")]
    ProbsLength {
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// `targets.len()` differs from `probs.len()`.
    #[error("targets has {got} entries, expected {expected} (the shape of probs)")]
    TargetsLength {
        /// Expected length (`probs.len()`).
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// `thresholds.len()` differs from `n_labels`.
    #[error("thresholds has {got} entries, expected n_labels = {expected}")]
    ThresholdsLength {
        /// Expected length (`n_labels`).
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A probability is NaN.
    #[error("probability of sample {sample}, label {label} (flat index {index}) is NaN")]
    NanProbability {
        /// Flat index into `probs`.
        index: usize,
        /// Sample (row).
        sample: usize,
        /// Label (column).
        label: usize,
    },
    /// A probability lies outside `[0, 1]` where a probability is required (calibration).
    #[error("probability {value} at flat index {index} is outside [0, 1]")]
    ProbabilityOutOfRange {
        /// Flat index into `probs`.
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// A target is neither 0 nor 1.
    #[error("target at flat index {index} is {value}, expected 0 or 1")]
    InvalidTarget {
        /// Flat index into `targets`.
        index: usize,
        /// The offending value.
        value: u8,
    },
    /// A threshold is NaN.
    #[error("threshold of label {label} is NaN")]
    NanThreshold {
        /// Label (column).
        label: usize,
    },
    /// `n_bins` was 0.
    #[error("the number of calibration bins must be at least 1")]
    ZeroBins,
}

// ---------------------------------------------------------------------------------------------
// Validation and small helpers
// ---------------------------------------------------------------------------------------------

/// Checks the shape and values of `probs`/`targets`; returns `N`.
fn validate(probs: &[f32], targets: &[u8], n_labels: usize) -> Result<usize, MetricsError> {
    if n_labels == 0 {
        return Err(MetricsError::ZeroLabels);
    }
    if !probs.len().is_multiple_of(n_labels) {
        return Err(MetricsError::ProbsNotMultiple { len: probs.len(), n_labels });
    }
    if targets.len() != probs.len() {
        return Err(MetricsError::TargetsLength { expected: probs.len(), got: targets.len() });
    }
    let n = probs.len() / n_labels;
    if n == 0 {
        return Err(MetricsError::NoSamples);
    }
    if let Some(index) = probs.iter().position(|p| p.is_nan()) {
        return Err(MetricsError::NanProbability { index, sample: index / n_labels, label: index % n_labels });
    }
    if let Some(index) = targets.iter().position(|&t| t > 1) {
        return Err(MetricsError::InvalidTarget { index, value: targets[index] });
    }
    Ok(n)
}

fn validate_thresholds(thresholds: &[f32], n_labels: usize) -> Result<(), MetricsError> {
    if thresholds.len() != n_labels {
        return Err(MetricsError::ThresholdsLength { expected: n_labels, got: thresholds.len() });
    }
    if let Some(label) = thresholds.iter().position(|t| t.is_nan()) {
        return Err(MetricsError::NanThreshold { label });
    }
    Ok(())
}

/// `num / den`, or 0 when `den == 0` (the zero-division convention).
fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn abs_f64(x: f64) -> f64 {
    if x < 0.0 {
        -x
    } else {
        x
    }
}

fn mean_defined(values: &[Option<f64>]) -> (Option<f64>, usize) {
    let mut sum = 0.0f64;
    let mut n = 0usize;
    for v in values.iter().flatten() {
        sum += *v;
        n += 1;
    }
    if n == 0 {
        (None, 0)
    } else {
        (Some(sum / n as f64), n)
    }
}

/// The (score, target) pairs of column `label`.
fn column(probs: &[f32], targets: &[u8], n_labels: usize, label: usize) -> Vec<(f32, u8)> {
    probs.iter().zip(targets.iter()).skip(label).step_by(n_labels).map(|(&p, &t)| (p, t)).collect()
}

/// Sorts by decreasing score. Scores are not NaN (validated), so `partial_cmp` is total up to
/// `-0.0 == 0.0`, which are then (correctly) one tie group.
fn sort_desc(pairs: &mut [(f32, u8)]) {
    pairs.sort_unstable_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal));
}

/// Groups of equal scores of a slice sorted by decreasing score: (score, positives, negatives).
fn tie_groups(sorted: &[(f32, u8)]) -> impl Iterator<Item = (f32, u64, u64)> + '_ {
    let mut rest = sorted;
    core::iter::from_fn(move || {
        let &(v, _) = rest.first()?;
        let len = rest.iter().position(|&(s, _)| s != v).unwrap_or(rest.len());
        let (group, tail) = rest.split_at(len);
        rest = tail;
        let pos = group.iter().filter(|&&(_, t)| t == 1).count() as u64;
        Some((v, pos, len as u64 - pos))
    })
}

/// ROC-AUC and average precision of one label (pairs sorted by decreasing score).
fn rank_metrics_sorted(sorted: &[(f32, u8)]) -> (Option<f64>, Option<f64>) {
    let n_pos = sorted.iter().filter(|&&(_, t)| t == 1).count() as u64;
    let n_neg = sorted.len() as u64 - n_pos;
    if n_pos == 0 {
        return (None, None);
    }
    // Mann–Whitney U, doubled so that ties (1/2 each) stay integral:
    // 2U = Σ_groups pos_g · (2 · negatives below g + neg_g).
    let mut u2: u128 = 0;
    let mut neg_seen: u64 = 0; // negatives at scores strictly above the current group
    let mut tp: u64 = 0;
    let mut fp: u64 = 0;
    let mut ap = 0.0f64;
    for (_, gp, gn) in tie_groups(sorted) {
        let neg_below = n_neg - neg_seen - gn;
        u2 += gp as u128 * (2 * neg_below as u128 + gn as u128);
        neg_seen += gn;
        tp += gp;
        fp += gn;
        if gp > 0 {
            // (R_n - R_{n-1}) · P_n
            ap += (gp as f64 / n_pos as f64) * (tp as f64 / (tp + fp) as f64);
        }
    }
    let auc = if n_neg == 0 { None } else { Some(u2 as f64 / (2.0 * n_pos as f64 * n_neg as f64)) };
    (auc, Some(ap))
}

// ---------------------------------------------------------------------------------------------
// Label sets
// ---------------------------------------------------------------------------------------------

/// Dense 0/1 targets of shape `[labels.len(), NUM_LABELS]`, row-major. Bits of a [`LabelSet`]
/// at or beyond [`NUM_LABELS`] are ignored.
pub fn targets_from_label_sets(labels: &[LabelSet]) -> Vec<u8> {
    let mut out = Vec::with_capacity(labels.len() * NUM_LABELS);
    for set in labels {
        out.extend((0..NUM_LABELS as u8).map(|l| u8::from(set.contains(l))));
    }
    out
}

fn check_label_set_shape(probs: &[f32], labels: &[LabelSet]) -> Result<(), MetricsError> {
    let expected = labels.len() * NUM_LABELS;
    if probs.len() != expected {
        return Err(MetricsError::ProbsLength { expected, got: probs.len() });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Thresholded metrics
// ---------------------------------------------------------------------------------------------

/// Confusion counts of one label at its threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// Predicted 1, target 1.
    pub true_pos: u64,
    /// Predicted 1, target 0.
    pub false_pos: u64,
    /// Predicted 0, target 1.
    pub false_neg: u64,
    /// Predicted 0, target 0.
    pub true_neg: u64,
}

impl Confusion {
    /// Number of positive targets (`TP + FN`).
    pub fn support(&self) -> u64 {
        self.true_pos + self.false_neg
    }

    /// `TP / (TP + FP)`, 0 when nothing is predicted positive.
    pub fn precision(&self) -> f64 {
        ratio(self.true_pos, self.true_pos + self.false_pos)
    }

    /// `TP / (TP + FN)` (true-positive rate), 0 when there are no positive targets.
    pub fn recall(&self) -> f64 {
        ratio(self.true_pos, self.true_pos + self.false_neg)
    }

    /// `2TP / (2TP + FP + FN)`, 0 when there are neither true nor predicted positives.
    pub fn f1(&self) -> f64 {
        ratio(2 * self.true_pos, 2 * self.true_pos + self.false_pos + self.false_neg)
    }

    /// `TN / (TN + FP)` (true-negative rate), 0 when there are no negative targets.
    pub fn specificity(&self) -> f64 {
        ratio(self.true_neg, self.true_neg + self.false_pos)
    }

    fn add(&mut self, o: &Confusion) {
        self.true_pos += o.true_pos;
        self.false_pos += o.false_pos;
        self.false_neg += o.false_neg;
        self.true_neg += o.true_neg;
    }
}

/// Per-label confusion counts, predicting positive iff `p >= thresholds[l]`.
pub fn confusion_matrices(
    probs: &[f32],
    targets: &[u8],
    n_labels: usize,
    thresholds: &[f32],
) -> Result<Vec<Confusion>, MetricsError> {
    validate(probs, targets, n_labels)?;
    validate_thresholds(thresholds, n_labels)?;
    let mut out = alloc::vec![Confusion::default(); n_labels];
    for (prow, trow) in probs.chunks_exact(n_labels).zip(targets.chunks_exact(n_labels)) {
        for (((&p, &t), &th), c) in prow.iter().zip(trow).zip(thresholds).zip(out.iter_mut()) {
            match (p >= th, t == 1) {
                (true, true) => c.true_pos += 1,
                (true, false) => c.false_pos += 1,
                (false, true) => c.false_neg += 1,
                (false, false) => c.true_neg += 1,
            }
        }
    }
    Ok(out)
}

/// Hamming accuracy: the fraction of the `N·L` (sample, label) entries whose thresholded
/// prediction equals the target.
pub fn hamming_accuracy(
    probs: &[f32],
    targets: &[u8],
    n_labels: usize,
    thresholds: &[f32],
) -> Result<f64, MetricsError> {
    let cms = confusion_matrices(probs, targets, n_labels, thresholds)?;
    let correct: u64 = cms.iter().map(|c| c.true_pos + c.true_neg).sum();
    Ok(ratio(correct, probs.len() as u64))
}

/// Precision, recall and F1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Prf {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
}

/// Precision, recall, F1 and support of one label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelPrf {
    /// Precision (0 when nothing is predicted positive).
    pub precision: f64,
    /// Recall (0 when there are no positive targets).
    pub recall: f64,
    /// F1 = `2TP / (2TP + FP + FN)` (0 when that denominator is 0).
    pub f1: f64,
    /// Number of positive targets.
    pub support: u64,
}

/// Per-label, micro and macro precision/recall/F1 at given thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrfReport {
    /// One entry per label.
    pub per_label: Vec<LabelPrf>,
    /// From TP/FP/FN summed over labels.
    pub micro: Prf,
    /// Unweighted means of the per-label values over all labels.
    pub macro_avg: Prf,
}

fn prf_from_confusions(cms: &[Confusion]) -> PrfReport {
    let per_label: Vec<LabelPrf> = cms
        .iter()
        .map(|c| LabelPrf { precision: c.precision(), recall: c.recall(), f1: c.f1(), support: c.support() })
        .collect();
    let mut total = Confusion::default();
    for c in cms {
        total.add(c);
    }
    let micro = Prf { precision: total.precision(), recall: total.recall(), f1: total.f1() };
    let l = per_label.len().max(1) as f64;
    let macro_avg = Prf {
        precision: per_label.iter().map(|x| x.precision).sum::<f64>() / l,
        recall: per_label.iter().map(|x| x.recall).sum::<f64>() / l,
        f1: per_label.iter().map(|x| x.f1).sum::<f64>() / l,
    };
    PrfReport { per_label, micro, macro_avg }
}

/// Per-label, micro and macro precision, recall and F1 at per-label thresholds (see the module
/// documentation for the zero-division convention).
pub fn precision_recall_f1(
    probs: &[f32],
    targets: &[u8],
    n_labels: usize,
    thresholds: &[f32],
) -> Result<PrfReport, MetricsError> {
    let cms = confusion_matrices(probs, targets, n_labels, thresholds)?;
    Ok(prf_from_confusions(&cms))
}

// ---------------------------------------------------------------------------------------------
// Ranking metrics
// ---------------------------------------------------------------------------------------------

/// A per-label score that may be undefined for some labels, with its macro and micro averages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AveragedScore {
    /// One entry per label; `None` where the score is undefined for that label.
    pub per_label: Vec<Option<f64>>,
    /// Mean over the labels where the score is defined; `None` if there are none.
    pub macro_avg: Option<f64>,
    /// Number of labels where the score is defined.
    pub n_defined: usize,
    /// The score over all `N·L` flattened (score, target) pairs; `None` if undefined there.
    pub micro: Option<f64>,
}

impl AveragedScore {
    fn from_parts(per_label: Vec<Option<f64>>, micro: Option<f64>) -> Self {
        let (macro_avg, n_defined) = mean_defined(&per_label);
        AveragedScore { per_label, macro_avg, n_defined, micro }
    }
}

/// ROC-AUC and AUPR of validated input, sharing one sort per label.
fn rank_metrics(probs: &[f32], targets: &[u8], n_labels: usize) -> (AveragedScore, AveragedScore) {
    let mut aucs = Vec::with_capacity(n_labels);
    let mut aps = Vec::with_capacity(n_labels);
    for l in 0..n_labels {
        let mut col = column(probs, targets, n_labels, l);
        sort_desc(&mut col);
        let (auc, ap) = rank_metrics_sorted(&col);
        aucs.push(auc);
        aps.push(ap);
    }
    let mut all: Vec<(f32, u8)> = probs.iter().copied().zip(targets.iter().copied()).collect();
    sort_desc(&mut all);
    let (micro_auc, micro_ap) = rank_metrics_sorted(&all);
    (AveragedScore::from_parts(aucs, micro_auc), AveragedScore::from_parts(aps, micro_ap))
}

/// ROC-AUC per label (Mann–Whitney, ties 1/2), macro over the labels with both classes
/// present, and micro over the flattened pairs. Scores need not be probabilities.
pub fn roc_auc(probs: &[f32], targets: &[u8], n_labels: usize) -> Result<AveragedScore, MetricsError> {
    validate(probs, targets, n_labels)?;
    Ok(rank_metrics(probs, targets, n_labels).0)
}

/// Average precision (AUPR, scikit-learn's `average_precision_score`) per label, macro over
/// the labels with at least one positive, and micro over the flattened pairs.
pub fn average_precision(probs: &[f32], targets: &[u8], n_labels: usize) -> Result<AveragedScore, MetricsError> {
    validate(probs, targets, n_labels)?;
    Ok(rank_metrics(probs, targets, n_labels).1)
}

/// ROC-AUC of a single label: `None` when `targets` are all 0 or all 1.
pub fn binary_roc_auc(scores: &[f32], targets: &[u8]) -> Result<Option<f64>, MetricsError> {
    validate(scores, targets, 1)?;
    let mut col: Vec<(f32, u8)> = scores.iter().copied().zip(targets.iter().copied()).collect();
    sort_desc(&mut col);
    Ok(rank_metrics_sorted(&col).0)
}

/// Average precision of a single label: `None` when there is no positive target.
pub fn binary_average_precision(scores: &[f32], targets: &[u8]) -> Result<Option<f64>, MetricsError> {
    validate(scores, targets, 1)?;
    let mut col: Vec<(f32, u8)> = scores.iter().copied().zip(targets.iter().copied()).collect();
    sort_desc(&mut col);
    Ok(rank_metrics_sorted(&col).1)
}

/// The CKD-EHR paper code's "AUC": ROC-AUC computed on the thresholded 0/1 predictions
/// (`p >= thresholds[l]`) instead of the probabilities, as their
/// `roc_auc_score(y_true, y_pred_binary, average='macro')` does.
///
/// **Kept only to compare with the numbers the paper reports**; it is not a ranking metric.
/// With ties counted 1/2 it equals, per label, the balanced accuracy `(TPR + TNR) / 2`.
/// Labels with a single class are undefined (`None`) and left out of the macro average
/// (scikit-learn would raise an error there).
pub fn paper_binary_auc(
    probs: &[f32],
    targets: &[u8],
    n_labels: usize,
    thresholds: &[f32],
) -> Result<AveragedScore, MetricsError> {
    validate(probs, targets, n_labels)?;
    validate_thresholds(thresholds, n_labels)?;
    let binary: Vec<f32> = probs
        .chunks_exact(n_labels)
        .flat_map(|row| row.iter().zip(thresholds).map(|(&p, &t)| if p >= t { 1.0 } else { 0.0 }))
        .collect();
    Ok(rank_metrics(&binary, targets, n_labels).0)
}

// ---------------------------------------------------------------------------------------------
// Calibration
// ---------------------------------------------------------------------------------------------

/// One bin of a reliability (calibration) diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// Lower edge (inclusive).
    pub lower: f64,
    /// Upper edge (exclusive, except for the last bin which includes 1.0).
    pub upper: f64,
    /// Mean predicted probability of the entries in the bin; `None` for an empty bin.
    pub mean_predicted: Option<f64>,
    /// Fraction of positive targets among the entries in the bin; `None` for an empty bin.
    pub observed_frequency: Option<f64>,
    /// Number of (sample, label) entries in the bin.
    pub count: u64,
}

/// Expected calibration error and the reliability diagram it was computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// `Σ_b (|B_b| / total) · |mean(p in b) − mean(y in b)|`.
    pub ece: f64,
    /// The `n_bins` equal-width bins on `[0, 1]`, in increasing order.
    pub bins: Vec<CalibrationBin>,
}

/// Calibration over all `N·L` (sample, label) entries with `n_bins` equal-width bins on
/// `[0, 1]`. Entry `p` goes to bin `floor(p · n_bins)` (computed in `f64`), and `p == 1.0` to
/// the last bin. Every probability must lie in `[0, 1]`.
pub fn calibration(probs: &[f32], targets: &[u8], n_labels: usize, n_bins: usize) -> Result<Calibration, MetricsError> {
    validate(probs, targets, n_labels)?;
    if n_bins == 0 {
        return Err(MetricsError::ZeroBins);
    }
    if let Some(index) = probs.iter().position(|&p| !(0.0..=1.0).contains(&p)) {
        return Err(MetricsError::ProbabilityOutOfRange { index, value: probs[index] });
    }
    let mut sum_p = alloc::vec![0.0f64; n_bins];
    let mut sum_y = alloc::vec![0u64; n_bins];
    let mut count = alloc::vec![0u64; n_bins];
    for (&p, &y) in probs.iter().zip(targets) {
        let p = p as f64;
        // p ∈ [0, 1], so the truncating cast is floor; clamp puts p == 1.0 in the last bin.
        let b = ((p * n_bins as f64) as usize).min(n_bins - 1);
        sum_p[b] += p;
        sum_y[b] += y as u64;
        count[b] += 1;
    }
    let total = probs.len() as f64;
    let mut ece = 0.0f64;
    let mut bins = Vec::with_capacity(n_bins);
    for b in 0..n_bins {
        let c = count[b];
        let (mean_predicted, observed_frequency) = if c == 0 {
            (None, None)
        } else {
            // (|B|/total) · |Σp/|B| − Σy/|B|| = |Σp − Σy| / total
            ece += abs_f64(sum_p[b] - sum_y[b] as f64) / total;
            (Some(sum_p[b] / c as f64), Some(sum_y[b] as f64 / c as f64))
        };
        bins.push(CalibrationBin {
            lower: b as f64 / n_bins as f64,
            upper: (b + 1) as f64 / n_bins as f64,
            mean_predicted,
            observed_frequency,
            count: c,
        });
    }
    Ok(Calibration { ece, bins })
}

/// Expected calibration error only; see [`calibration`].
pub fn expected_calibration_error(
    probs: &[f32],
    targets: &[u8],
    n_labels: usize,
    n_bins: usize,
) -> Result<f64, MetricsError> {
    Ok(calibration(probs, targets, n_labels, n_bins)?.ece)
}

// ---------------------------------------------------------------------------------------------
// Threshold tuning
// ---------------------------------------------------------------------------------------------

/// Per-label thresholds maximizing each label's F1 on the given (validation) data.
///
/// Candidates are the distinct predicted probabilities of the label (so `p >= t` with `t` one
/// of them reproduces exactly the evaluated prediction). F1 values are compared exactly (as
/// fractions of integers). Among candidates with equal F1 the one closest to 0.5 wins, and
/// among those equally close, the larger. A label with no positive target gets
/// [`DEFAULT_THRESHOLD`] (0.5). Deterministic.
pub fn tune_thresholds(probs: &[f32], targets: &[u8], n_labels: usize) -> Result<Vec<f32>, MetricsError> {
    validate(probs, targets, n_labels)?;
    let mut out = Vec::with_capacity(n_labels);
    for l in 0..n_labels {
        let mut col = column(probs, targets, n_labels, l);
        sort_desc(&mut col);
        let n_pos = col.iter().filter(|&&(_, t)| t == 1).count() as u64;
        if n_pos == 0 {
            out.push(DEFAULT_THRESHOLD);
            continue;
        }
        // Best so far: (threshold, 2TP, 2TP + FP + FN).
        let mut best: Option<(f32, u128, u128)> = None;
        let (mut tp, mut fp) = (0u64, 0u64);
        for (t, gp, gn) in tie_groups(&col) {
            tp += gp;
            fp += gn;
            let num = 2 * tp as u128;
            let den = (2 * tp + fp + (n_pos - tp)) as u128;
            let better = match best {
                None => true,
                Some((bt, bnum, bden)) => match (num * bden).cmp(&(bnum * den)) {
                    Ordering::Greater => true,
                    Ordering::Less => false,
                    Ordering::Equal => {
                        let d = abs_f64(t as f64 - 0.5);
                        let bd = abs_f64(bt as f64 - 0.5);
                        d < bd || (d == bd && t > bt)
                    }
                },
            };
            if better {
                best = Some((t, num, den));
            }
        }
        out.push(best.map_or(DEFAULT_THRESHOLD, |b| b.0));
    }
    Ok(out)
}

/// [`tune_thresholds`] for targets given as label sets (`L = NUM_LABELS`).
pub fn tune_thresholds_label_sets(probs: &[f32], labels: &[LabelSet]) -> Result<Vec<f32>, MetricsError> {
    check_label_set_shape(probs, labels)?;
    tune_thresholds(probs, &targets_from_label_sets(labels), NUM_LABELS)
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

/// Metrics of one label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelReport {
    /// Precision at `threshold`.
    pub precision: f64,
    /// Recall at `threshold`.
    pub recall: f64,
    /// F1 at `threshold`.
    pub f1: f64,
    /// Number of positive targets.
    pub support: u64,
    /// ROC-AUC from the probabilities; `None` when the label has a single class.
    pub auc: Option<f64>,
    /// Average precision; `None` when the label has no positive target.
    pub aupr: Option<f64>,
    /// The decision threshold used (`p >= threshold` is positive).
    pub threshold: f32,
}

/// Every metric of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Number of samples `N`.
    pub n_samples: usize,
    /// Number of labels `L`.
    pub n_labels: usize,
    /// Fraction of correct (sample, label) entries at the thresholds.
    pub hamming_accuracy: f64,
    /// Micro-averaged precision.
    pub micro_precision: f64,
    /// Micro-averaged recall.
    pub micro_recall: f64,
    /// Micro-averaged F1.
    pub micro_f1: f64,
    /// Macro-averaged precision (over all labels).
    pub macro_precision: f64,
    /// Macro-averaged recall (over all labels).
    pub macro_recall: f64,
    /// Macro-averaged F1 (mean of per-label F1, over all labels).
    pub macro_f1: f64,
    /// ROC-AUC over the flattened pairs.
    pub micro_auc: Option<f64>,
    /// Mean ROC-AUC over the labels where it is defined.
    pub macro_auc: Option<f64>,
    /// Number of labels with a defined ROC-AUC.
    pub n_auc_defined: usize,
    /// Average precision over the flattened pairs.
    pub micro_aupr: Option<f64>,
    /// Mean average precision over the labels where it is defined.
    pub macro_aupr: Option<f64>,
    /// Number of labels with a defined average precision.
    pub n_aupr_defined: usize,
    /// Expected calibration error over all entries.
    pub ece: f64,
    /// The reliability diagram the ECE was computed from.
    pub calibration: Vec<CalibrationBin>,
    /// Macro [`paper_binary_auc`] (for comparison with the CKD-EHR paper only).
    pub paper_binary_auc: Option<f64>,
    /// One entry per label.
    pub per_label: Vec<LabelReport>,
}

/// Computes every metric into a [`Report`]. `thresholds` has length `n_labels`; `ece_bins` is
/// the number of calibration bins (probabilities must lie in `[0, 1]`).
pub fn evaluate(
    probs: &[f32],
    targets: &[u8],
    n_labels: usize,
    thresholds: &[f32],
    ece_bins: usize,
) -> Result<Report, MetricsError> {
    let n_samples = validate(probs, targets, n_labels)?;
    validate_thresholds(thresholds, n_labels)?;
    let cal = calibration(probs, targets, n_labels, ece_bins)?;
    let cms = confusion_matrices(probs, targets, n_labels, thresholds)?;
    let prf = prf_from_confusions(&cms);
    let correct: u64 = cms.iter().map(|c| c.true_pos + c.true_neg).sum();
    let (auc, ap) = rank_metrics(probs, targets, n_labels);
    let paper = paper_binary_auc(probs, targets, n_labels, thresholds)?;
    let per_label = (0..n_labels)
        .map(|l| {
            let p = prf.per_label[l];
            LabelReport {
                precision: p.precision,
                recall: p.recall,
                f1: p.f1,
                support: p.support,
                auc: auc.per_label[l],
                aupr: ap.per_label[l],
                threshold: thresholds[l],
            }
        })
        .collect();
    Ok(Report {
        n_samples,
        n_labels,
        hamming_accuracy: ratio(correct, probs.len() as u64),
        micro_precision: prf.micro.precision,
        micro_recall: prf.micro.recall,
        micro_f1: prf.micro.f1,
        macro_precision: prf.macro_avg.precision,
        macro_recall: prf.macro_avg.recall,
        macro_f1: prf.macro_avg.f1,
        micro_auc: auc.micro,
        macro_auc: auc.macro_avg,
        n_auc_defined: auc.n_defined,
        micro_aupr: ap.micro,
        macro_aupr: ap.macro_avg,
        n_aupr_defined: ap.n_defined,
        ece: cal.ece,
        calibration: cal.bins,
        paper_binary_auc: paper.macro_avg,
        per_label,
    })
}

/// [`evaluate`] with targets given as label sets (`L = NUM_LABELS`, so `probs.len()` must be
/// `labels.len() * NUM_LABELS`).
pub fn evaluate_label_sets(
    probs: &[f32],
    labels: &[LabelSet],
    thresholds: &[f32],
    ece_bins: usize,
) -> Result<Report, MetricsError> {
    check_label_set_shape(probs, labels)?;
    evaluate(probs, &targets_from_label_sets(labels), NUM_LABELS, thresholds, ece_bins)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const EPS: f64 = 1e-12;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        abs_f64(a - b) <= tol
    }

    #[track_caller]
    fn assert_close(a: f64, b: f64, tol: f64) {
        assert!(close(a, b, tol), "{a} != {b} (tol {tol})");
    }

    /// Tiny deterministic LCG (Numerical Recipes constants).
    struct Lcg(u64);
    impl Lcg {
        fn next_u32(&mut self) -> u32 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
        /// A value on the grid {0, 0.01, ..., 1} (so ties happen).
        fn grid(&mut self) -> f32 {
            (self.next_u32() % 101) as f32 / 100.0
        }
        fn bit(&mut self, p_one: u32) -> u8 {
            u8::from(self.next_u32() % 100 < p_one)
        }
    }

    /// O(n²) Mann–Whitney: fraction of (pos, neg) pairs ordered correctly, ties 1/2.
    fn naive_auc(s: &[f32], y: &[u8]) -> Option<f64> {
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for (i, &si) in s.iter().enumerate() {
            for (j, &sj) in s.iter().enumerate() {
                if y[i] == 1 && y[j] == 0 {
                    den += 1.0;
                    if si > sj {
                        num += 1.0;
                    } else if si == sj {
                        num += 0.5;
                    }
                }
            }
        }
        if den == 0.0 {
            None
        } else {
            Some(num / den)
        }
    }

    /// O(n²) average precision straight from the definition over distinct thresholds.
    fn naive_ap(s: &[f32], y: &[u8]) -> Option<f64> {
        let n_pos = y.iter().filter(|&&t| t == 1).count();
        if n_pos == 0 {
            return None;
        }
        let mut ts: Vec<f32> = s.to_vec();
        ts.sort_by(|a, b| b.partial_cmp(a).unwrap());
        ts.dedup();
        let (mut ap, mut prev_r) = (0.0, 0.0);
        for t in ts {
            let sel = s.iter().zip(y).filter(|(&p, _)| p >= t);
            let (n_sel, tp) = sel.fold((0usize, 0usize), |(n, tp), (_, &yy)| (n + 1, tp + yy as usize));
            let r = tp as f64 / n_pos as f64;
            ap += (r - prev_r) * (tp as f64 / n_sel as f64);
            prev_r = r;
        }
        Some(ap)
    }

    // ---- hand-computed cases ---------------------------------------------------------------

    #[test]
    fn auc_sklearn_doc_example() {
        // sklearn roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
        let auc = binary_roc_auc(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]).unwrap();
        assert_close(auc.unwrap(), 0.75, EPS);
    }

    #[test]
    fn ap_sklearn_doc_example() {
        // sklearn average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.8333...
        // thresholds 0.8: R=.5 P=1; 0.4: R=.5 P=.5; 0.35: R=1 P=2/3 → .5·1 + .5·2/3 = 5/6.
        let ap = binary_average_precision(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]).unwrap();
        assert_close(ap.unwrap(), 5.0 / 6.0, EPS);
    }

    #[test]
    fn ties_count_half() {
        assert_close(binary_roc_auc(&[0.5, 0.5], &[0, 1]).unwrap().unwrap(), 0.5, EPS);
        // One threshold, R = 1, P = 1/2.
        assert_close(binary_average_precision(&[0.5, 0.5], &[0, 1]).unwrap().unwrap(), 0.5, EPS);
        // Partial tie: pos {0.7, 0.5}, neg {0.5, 0.2}: pairs 1 + 1 + 0.5 + 1 = 3.5 of 4.
        let auc = binary_roc_auc(&[0.7, 0.5, 0.5, 0.2], &[1, 1, 0, 0]).unwrap().unwrap();
        assert_close(auc, 3.5 / 4.0, EPS);
        // -0.0 and 0.0 are the same score.
        assert_close(binary_roc_auc(&[-0.0, 0.0], &[1, 0]).unwrap().unwrap(), 0.5, EPS);
    }

    /// 3 samples × 2 labels, thresholds [0.5, 0.75].
    /// probs   = [[0.9, 0.2], [0.6, 0.7], [0.3, 0.8]]
    /// targets = [[1,   0  ], [0,   1  ], [1,   1  ]]
    /// label 0: preds 1,1,0 vs 1,0,1 → TP 1, FP 1, FN 1, TN 0 → P .5, R .5, F1 .5, support 2
    /// label 1: preds 0,0,1 vs 0,1,1 → TP 1, FP 0, FN 1, TN 1 → P 1, R .5, F1 2/3, support 2
    /// micro: TP 2, FP 1, FN 2 → P 2/3, R 1/2, F1 4/7
    /// macro: P .75, R .5, F1 (1/2 + 2/3)/2 = 7/12
    /// hamming: correct entries (0,0), (0,1), (2,1) → 3/6
    /// paper binary AUC: label 0 (TPR .5 + TNR 0)/2 = .25, label 1 (.5 + 1)/2 = .75 → .5
    const P3: [f32; 6] = [0.9, 0.2, 0.6, 0.7, 0.3, 0.8];
    const T3: [u8; 6] = [1, 0, 0, 1, 1, 1];
    const TH3: [f32; 2] = [0.5, 0.75];

    #[test]
    fn prf_hand_example() {
        let r = precision_recall_f1(&P3, &T3, 2, &TH3).unwrap();
        let l0 = r.per_label[0];
        let l1 = r.per_label[1];
        assert_close(l0.precision, 0.5, EPS);
        assert_close(l0.recall, 0.5, EPS);
        assert_close(l0.f1, 0.5, EPS);
        assert_eq!(l0.support, 2);
        assert_close(l1.precision, 1.0, EPS);
        assert_close(l1.recall, 0.5, EPS);
        assert_close(l1.f1, 2.0 / 3.0, EPS);
        assert_eq!(l1.support, 2);
        assert_close(r.micro.precision, 2.0 / 3.0, EPS);
        assert_close(r.micro.recall, 0.5, EPS);
        assert_close(r.micro.f1, 4.0 / 7.0, EPS);
        assert_close(r.macro_avg.precision, 0.75, EPS);
        assert_close(r.macro_avg.recall, 0.5, EPS);
        assert_close(r.macro_avg.f1, 7.0 / 12.0, EPS);
        assert_close(hamming_accuracy(&P3, &T3, 2, &TH3).unwrap(), 0.5, EPS);
        let cms = confusion_matrices(&P3, &T3, 2, &TH3).unwrap();
        assert_eq!(cms[1], Confusion { true_pos: 1, false_pos: 0, false_neg: 1, true_neg: 1 });
    }

    #[test]
    fn threshold_is_inclusive() {
        // p == t is predicted positive.
        let c = confusion_matrices(&[0.5, 0.49], &[1, 0], 1, &[0.5]).unwrap();
        assert_eq!(c[0], Confusion { true_pos: 1, false_pos: 0, false_neg: 0, true_neg: 1 });
    }

    #[test]
    fn zero_division_is_zero() {
        // label 0: no positives, none predicted; label 1: no positives, all predicted.
        let probs = [0.1, 0.9, 0.2, 0.8];
        let targets = [0, 0, 0, 0];
        let r = precision_recall_f1(&probs, &targets, 2, &[0.5, 0.5]).unwrap();
        for l in r.per_label {
            assert_eq!((l.precision, l.recall, l.f1, l.support), (0.0, 0.0, 0.0, 0));
        }
        assert_eq!(r.micro, Prf { precision: 0.0, recall: 0.0, f1: 0.0 });
        assert_eq!(r.macro_avg, Prf { precision: 0.0, recall: 0.0, f1: 0.0 });
        // Macro averages over all labels, including one without support:
        // label 0 perfect (P=R=F1=1), label 1 no support and nothing predicted (0) → macro .5.
        let r = precision_recall_f1(&[0.9, 0.1, 0.1, 0.1], &[1, 0, 0, 0], 2, &[0.5, 0.5]).unwrap();
        assert_close(r.macro_avg.f1, 0.5, EPS);
        assert_close(r.micro.f1, 1.0, EPS);
    }

    #[test]
    fn ece_hand_example() {
        // 5 entries, 2 bins. bin [0, .5): p .1, .3 (mean .2), y 0, 1 (mean .5) → |.3|, n 2
        // bin [.5, 1]: p .7, .9, 1.0 (mean 2.6/3), y 1, 1, 1 → |.4/3|, n 3 (1.0 in last bin)
        // ECE = 2/5·.3 + 3/5·.4/3 = .12 + .08 = .2
        let probs = [0.1, 0.3, 0.7, 0.9, 1.0];
        let targets = [0, 1, 1, 1, 1];
        let c = calibration(&probs, &targets, 1, 2).unwrap();
        assert_close(c.ece, 0.2, 1e-6);
        assert_eq!(c.bins.len(), 2);
        assert_eq!(c.bins[0].count, 2);
        assert_eq!(c.bins[1].count, 3);
        assert_close(c.bins[0].mean_predicted.unwrap(), 0.2, 1e-6);
        assert_close(c.bins[0].observed_frequency.unwrap(), 0.5, EPS);
        assert_close(c.bins[1].mean_predicted.unwrap(), 2.6 / 3.0, 1e-6);
        assert_close(c.bins[1].observed_frequency.unwrap(), 1.0, EPS);
        assert_close(c.bins[1].lower, 0.5, EPS);
        assert_close(c.bins[1].upper, 1.0, EPS);
        // Same data in a 5 x 1 vs 1 x 5 layout gives the same ECE (it is over all entries).
        let c5 = expected_calibration_error(&probs, &targets, 5, 2).unwrap();
        assert_close(c5, c.ece, EPS);
        // Empty bins are reported as such and do not contribute.
        let c10 = calibration(&[0.05, 0.95], &[0, 1], 1, 10).unwrap();
        assert_close(c10.ece, 0.05, 1e-6);
        assert_eq!(c10.bins.iter().filter(|b| b.count == 0).count(), 8);
        assert_eq!(c10.bins[4].mean_predicted, None);
        // Perfectly calibrated constant predictor.
        let c = calibration(&[0.5, 0.5, 0.5, 0.5], &[1, 0, 1, 0], 1, 10).unwrap();
        assert_close(c.ece, 0.0, EPS);
    }

    #[test]
    fn paper_binary_auc_is_balanced_accuracy() {
        let r = paper_binary_auc(&P3, &T3, 2, &TH3).unwrap();
        assert_close(r.per_label[0].unwrap(), 0.25, EPS);
        assert_close(r.per_label[1].unwrap(), 0.75, EPS);
        assert_close(r.macro_avg.unwrap(), 0.5, EPS);
        // And on random data, per label, against the confusion counts.
        let mut rng = Lcg(7);
        let (n, l) = (200, 4);
        let probs: Vec<f32> = (0..n * l).map(|_| rng.grid()).collect();
        let targets: Vec<u8> = (0..n * l).map(|_| rng.bit(30)).collect();
        let th = [0.3, 0.5, 0.7, 0.9];
        let r = paper_binary_auc(&probs, &targets, l, &th).unwrap();
        let cms = confusion_matrices(&probs, &targets, l, &th).unwrap();
        for (auc, c) in r.per_label.iter().zip(&cms) {
            assert_close(auc.unwrap(), (c.recall() + c.specificity()) / 2.0, 1e-12);
        }
    }

    // ---- properties -------------------------------------------------------------------------

    #[test]
    fn perfect_and_reversed_ranking() {
        let s = [0.1, 0.2, 0.3, 0.6, 0.7, 0.9];
        let y = [0, 0, 0, 1, 1, 1];
        assert_close(binary_roc_auc(&s, &y).unwrap().unwrap(), 1.0, EPS);
        assert_close(binary_average_precision(&s, &y).unwrap().unwrap(), 1.0, EPS);
        let y_rev = [1, 1, 1, 0, 0, 0];
        assert_close(binary_roc_auc(&s, &y_rev).unwrap().unwrap(), 0.0, EPS);
        // Reversed AP: positives last → P at recall 1/3, 2/3, 1 is 1/4, 2/5, 3/6.
        let ap = binary_average_precision(&s, &y_rev).unwrap().unwrap();
        assert_close(ap, (0.25 + 0.4 + 0.5) / 3.0, EPS);
    }

    #[test]
    fn auc_and_ap_match_naive_definitions() {
        let mut rng = Lcg(42);
        for trial in 0..20 {
            let n = 5 + trial * 7;
            let s: Vec<f32> = (0..n).map(|_| rng.grid()).collect();
            let y: Vec<u8> = (0..n).map(|_| rng.bit(35)).collect();
            let auc = binary_roc_auc(&s, &y).unwrap();
            let ap = binary_average_precision(&s, &y).unwrap();
            match (auc, naive_auc(&s, &y)) {
                (Some(a), Some(b)) => assert_close(a, b, 1e-12),
                (a, b) => assert_eq!(a, b),
            }
            match (ap, naive_ap(&s, &y)) {
                (Some(a), Some(b)) => assert_close(a, b, 1e-12),
                (a, b) => assert_eq!(a, b),
            }
        }
    }

    #[test]
    fn invariant_to_strictly_monotone_transform() {
        let mut rng = Lcg(1234);
        let (n, l) = (150, 3);
        let probs: Vec<f32> = (0..n * l).map(|_| rng.grid()).collect();
        let targets: Vec<u8> = (0..n * l).map(|_| rng.bit(40)).collect();
        let cube: Vec<f32> = probs.iter().map(|&p| (p as f64 * p as f64 * p as f64) as f32).collect();
        // Sigmoid-like increasing map onto (0, 1), and an affine map leaving [0, 1].
        let squash: Vec<f32> = probs.iter().map(|&p| (p as f64 / (p as f64 + 0.3)) as f32).collect();
        let affine: Vec<f32> = probs.iter().map(|&p| 3.0 * p - 7.0).collect();
        let base_auc = roc_auc(&probs, &targets, l).unwrap();
        let base_ap = average_precision(&probs, &targets, l).unwrap();
        assert!(base_auc.micro.is_some() && base_auc.n_defined == l);
        for t in [&cube, &squash, &affine] {
            assert_eq!(roc_auc(t, &targets, l).unwrap(), base_auc);
            assert_eq!(average_precision(t, &targets, l).unwrap(), base_ap);
        }
        // A non-monotone change does alter it (the test can fail).
        let flipped: Vec<f32> = probs.iter().map(|&p| 1.0 - p).collect();
        assert_ne!(roc_auc(&flipped, &targets, l).unwrap(), base_auc);
    }

    #[test]
    fn single_class_labels_are_undefined_and_excluded() {
        // 4 samples × 3 labels. label 0: sklearn example (AUC .75, AP 5/6); label 1 all 0;
        // label 2 all 1.
        let probs = [0.1, 0.5, 0.2, 0.4, 0.6, 0.3, 0.35, 0.7, 0.9, 0.8, 0.1, 0.4];
        let targets = [0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 0, 1];
        let auc = roc_auc(&probs, &targets, 3).unwrap();
        assert_eq!(auc.per_label[1], None);
        assert_eq!(auc.per_label[2], None);
        assert_eq!(auc.n_defined, 1);
        assert_close(auc.macro_avg.unwrap(), 0.75, EPS);
        let ap = average_precision(&probs, &targets, 3).unwrap();
        assert_eq!(ap.per_label[1], None);
        assert_close(ap.per_label[2].unwrap(), 1.0, EPS); // all positive: defined, 1
        assert_eq!(ap.n_defined, 2);
        assert_close(ap.macro_avg.unwrap(), (5.0 / 6.0 + 1.0) / 2.0, EPS);
        // Nothing defined at all.
        let auc = roc_auc(&[0.3, 0.4], &[0, 0], 1).unwrap();
        assert_eq!((auc.macro_avg, auc.micro, auc.n_defined), (None, None, 0));
        let ap = average_precision(&[0.3, 0.4], &[0, 0], 1).unwrap();
        assert_eq!((ap.macro_avg, ap.micro, ap.n_defined), (None, None, 0));
    }

    #[test]
    fn micro_and_macro_differ() {
        // label 0: scores [.1, .4, .35, .8] → AUC .75; label 1: [.05, .1, .15, .2] → AUC 1.
        // Macro .875. Micro over 8 pairs: pos {.35, .8, .15, .2}, neg {.1, .4, .05, .1}:
        // .35 beats 3, .8 beats 4, .15 beats 3, .2 beats 3 → 13/16 = .8125.
        let probs = [0.1, 0.05, 0.4, 0.1, 0.35, 0.15, 0.8, 0.2];
        let targets = [0, 0, 0, 0, 1, 1, 1, 1];
        let auc = roc_auc(&probs, &targets, 2).unwrap();
        assert_close(auc.per_label[0].unwrap(), 0.75, EPS);
        assert_close(auc.per_label[1].unwrap(), 1.0, EPS);
        assert_close(auc.macro_avg.unwrap(), 0.875, EPS);
        assert_close(auc.micro.unwrap(), 13.0 / 16.0, EPS);
        // Micro AP from the definition on the flattened pairs.
        let ap = average_precision(&probs, &targets, 2).unwrap();
        assert_close(ap.micro.unwrap(), naive_ap(&probs, &targets).unwrap(), EPS);
        assert_close(ap.macro_avg.unwrap(), (5.0 / 6.0 + 1.0) / 2.0, EPS);
        assert!(!close(ap.micro.unwrap(), ap.macro_avg.unwrap(), 1e-3));
    }

    // ---- threshold tuning ---------------------------------------------------------------

    #[test]
    fn tuner_hand_cases() {
        // t=.8: F1 2/3; t=.4: 1/2; t=.35: 4/5; t=.1: 2/3 → .35
        let t = tune_thresholds(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1], 1).unwrap();
        assert_eq!(t, vec![0.35]);
        // Tie: descending labels [1, 0, 0, 1] give F1 2/3 at the top and at the bottom score.
        // Scores .9 .8 .7 .2 → .2 is closer to .5 than .9.
        let t = tune_thresholds(&[0.9, 0.8, 0.7, 0.2], &[1, 0, 0, 1], 1).unwrap();
        assert_eq!(t, vec![0.2]);
        // Scores .6 .3 .2 .1 → .6 is closer to .5 than .1.
        let t = tune_thresholds(&[0.6, 0.3, 0.2, 0.1], &[1, 0, 0, 1], 1).unwrap();
        assert_eq!(t, vec![0.6]);
        // No positives → 0.5; all positives → the smallest score (F1 = 1).
        let t = tune_thresholds(&[0.2, 0.9, 0.7, 0.3], &[0, 1, 0, 1], 2).unwrap();
        assert_eq!(t, vec![0.5, 0.3]);
    }

    #[test]
    fn tuner_maximizes_f1() {
        let mut rng = Lcg(99);
        let (n, l) = (120, 5);
        let probs: Vec<f32> = (0..n * l).map(|_| rng.grid()).collect();
        let targets: Vec<u8> = (0..n * l).map(|_| rng.bit(25)).collect();
        let tuned = tune_thresholds(&probs, &targets, l).unwrap();
        let tuned_f1 = precision_recall_f1(&probs, &targets, l, &tuned).unwrap();
        // Brute force over every candidate (all grid values and beyond).
        for label in 0..l {
            let mut th = vec![0.5f32; l];
            let mut best = 0.0f64;
            for k in 0..=102 {
                th[label] = k as f32 / 100.0;
                let f1 = precision_recall_f1(&probs, &targets, l, &th).unwrap().per_label[label].f1;
                best = best.max(f1);
            }
            assert!(best > 0.0);
            assert_close(tuned_f1.per_label[label].f1, best, 1e-12);
        }
        // Deterministic.
        assert_eq!(tune_thresholds(&probs, &targets, l).unwrap(), tuned);
    }

    // ---- report --------------------------------------------------------------------------

    #[test]
    fn evaluate_bundles_the_individual_metrics() {
        let mut rng = Lcg(5);
        let (n, l) = (80, 3);
        let probs: Vec<f32> = (0..n * l).map(|_| rng.grid()).collect();
        let mut targets: Vec<u8> = (0..n * l).map(|_| rng.bit(30)).collect();
        for row in targets.chunks_exact_mut(l) {
            row[2] = 0; // label 2 undefined for AUC and AUPR
        }
        let th = [0.4, 0.5, 0.6];
        let r = evaluate(&probs, &targets, l, &th, 10).unwrap();
        let prf = precision_recall_f1(&probs, &targets, l, &th).unwrap();
        let auc = roc_auc(&probs, &targets, l).unwrap();
        let ap = average_precision(&probs, &targets, l).unwrap();
        assert_eq!(r.n_samples, n);
        assert_eq!(r.n_labels, l);
        assert_eq!(r.hamming_accuracy, hamming_accuracy(&probs, &targets, l, &th).unwrap());
        assert_eq!(
            (r.micro_precision, r.micro_recall, r.micro_f1),
            (prf.micro.precision, prf.micro.recall, prf.micro.f1)
        );
        assert_eq!(r.macro_f1, prf.macro_avg.f1);
        assert_eq!((r.micro_auc, r.macro_auc, r.n_auc_defined), (auc.micro, auc.macro_avg, 2));
        assert_eq!((r.micro_aupr, r.macro_aupr, r.n_aupr_defined), (ap.micro, ap.macro_avg, 2));
        assert_eq!(r.ece, expected_calibration_error(&probs, &targets, l, 10).unwrap());
        assert_eq!(r.calibration.len(), 10);
        assert_eq!(r.calibration.iter().map(|b| b.count).sum::<u64>(), (n * l) as u64);
        assert_eq!(r.paper_binary_auc, paper_binary_auc(&probs, &targets, l, &th).unwrap().macro_avg);
        assert_eq!(r.per_label.len(), l);
        assert_eq!(r.per_label[2].auc, None);
        assert_eq!(r.per_label[1].threshold, 0.5);
        assert_eq!(r.per_label[0].support, prf.per_label[0].support);
        // Serde round trip (postcard is bit-exact for floats; serde_json without its
        // `float_roundtrip` feature may differ in the last ulp, so JSON is checked loosely).
        let bytes = postcard::to_allocvec(&r).unwrap();
        let back: Report = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, r);
        let json = serde_json::to_string(&r).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.per_label.len(), l);
        assert_eq!(back.per_label[2].auc, None);
        assert_close(back.macro_auc.unwrap(), r.macro_auc.unwrap(), 1e-15);
        assert_close(back.ece, r.ece, 1e-15);
    }

    #[test]
    fn label_set_wrappers() {
        let labels = [LabelSet::from_labels([0, 24]), LabelSet::from_labels([3])];
        let t = targets_from_label_sets(&labels);
        assert_eq!(t.len(), 2 * NUM_LABELS);
        assert_eq!((t[0], t[24], t[1], t[NUM_LABELS + 3]), (1, 1, 0, 1));
        assert_eq!(t.iter().map(|&x| x as usize).sum::<usize>(), 3);
        let mut probs = vec![0.2f32; 2 * NUM_LABELS];
        probs[0] = 0.9;
        probs[NUM_LABELS + 3] = 0.8;
        let th = [0.5f32; NUM_LABELS];
        let r = evaluate_label_sets(&probs, &labels, &th, 10).unwrap();
        assert_eq!(r, evaluate(&probs, &t, NUM_LABELS, &th, 10).unwrap());
        assert_eq!(r.per_label[0].precision, 1.0);
        assert_eq!(r.per_label[24].recall, 0.0);
        let tuned = tune_thresholds_label_sets(&probs, &labels).unwrap();
        assert_eq!(tuned.len(), NUM_LABELS);
        assert_eq!(tuned[1], DEFAULT_THRESHOLD);
        assert_eq!(
            evaluate_label_sets(&probs[1..], &labels, &th, 10),
            Err(MetricsError::ProbsLength { expected: 2 * NUM_LABELS, got: 2 * NUM_LABELS - 1 })
        );
    }

    // ---- errors -------------------------------------------------------------------------

    #[test]
    fn errors_on_bad_input() {
        let th = [0.5f32, 0.5];
        assert_eq!(
            roc_auc(&[0.1, 0.2, 0.3], &[0, 1, 0], 2),
            Err(MetricsError::ProbsNotMultiple { len: 3, n_labels: 2 })
        );
        assert_eq!(roc_auc(&[0.1, 0.2], &[0, 1, 0], 2), Err(MetricsError::TargetsLength { expected: 2, got: 3 }));
        assert_eq!(roc_auc(&[0.1], &[0], 0), Err(MetricsError::ZeroLabels));
        assert_eq!(roc_auc(&[], &[], 2), Err(MetricsError::NoSamples));
        assert_eq!(
            average_precision(&[0.1, 0.2, f32::NAN, 0.4], &[0, 1, 0, 1], 2),
            Err(MetricsError::NanProbability { index: 2, sample: 1, label: 0 })
        );
        assert_eq!(
            precision_recall_f1(&[0.1, 0.2], &[0, 2], 2, &th),
            Err(MetricsError::InvalidTarget { index: 1, value: 2 })
        );
        assert_eq!(
            hamming_accuracy(&[0.1, 0.2], &[0, 1], 2, &[0.5]),
            Err(MetricsError::ThresholdsLength { expected: 2, got: 1 })
        );
        assert_eq!(
            paper_binary_auc(&[0.1, 0.2], &[0, 1], 2, &[0.5, f32::NAN]),
            Err(MetricsError::NanThreshold { label: 1 })
        );
        assert_eq!(calibration(&[0.1, 0.2], &[0, 1], 2, 0), Err(MetricsError::ZeroBins));
        assert_eq!(
            calibration(&[0.1, 1.5], &[0, 1], 2, 10),
            Err(MetricsError::ProbabilityOutOfRange { index: 1, value: 1.5 })
        );
        assert_eq!(
            evaluate(&[0.1, -0.2], &[0, 1], 2, &th, 10),
            Err(MetricsError::ProbabilityOutOfRange { index: 1, value: -0.2 })
        );
        assert_eq!(
            tune_thresholds(&[f32::NAN], &[1], 1),
            Err(MetricsError::NanProbability { index: 0, sample: 0, label: 0 })
        );
        assert!(binary_roc_auc(&[0.1, 0.2], &[1]).is_err());
        assert!(binary_average_precision(&[f32::NAN], &[1]).is_err());
        // Infinite scores are fine for ranking.
        let auc = binary_roc_auc(&[f32::NEG_INFINITY, f32::INFINITY], &[0, 1]).unwrap();
        assert_eq!(auc, Some(1.0));
    }
}
