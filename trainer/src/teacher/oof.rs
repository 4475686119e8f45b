//! Out-of-fold teacher probabilities for the student's training rows.
//!
//! A head trained on the training split and then asked about those same rows returns its
//! in-sample memory, which is closer to the hard labels than anything the teacher would say
//! about a new patient; distilling from that teaches the student little it could not get from
//! the labels. Here the training patients are split into `k` folds (by a hash of the patient id,
//! so a patient's samples share a fold); for each fold a head is trained on the cached features
//! of the other folds (validation split for its early stopping, as [`train_head`]) and labels only
//! that fold's rows. The head trains in seconds on cached features; the LLM runs once per sample.
//!
//! Contract: the probability of training row `i` comes from a head whose training rows exclude
//! every row of `i`'s patient ([`fold_of`] is what decides, and the tests check it).

use ckd_core::{LabelSet, NUM_LABELS};
use sha2::{Digest, Sha256};

use super::head::{probabilities, train_head, HeadConfig};
use super::{Result, TeacherError};

/// The protocol, as recorded beside the soft labels.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OofProtocol {
    /// Number of folds (heads).
    pub folds: usize,
    /// Seed of the fold assignment.
    pub seed: u64,
    /// Rows per fold.
    pub rows_per_fold: Vec<usize>,
    /// Patients per fold.
    pub patients_per_fold: Vec<usize>,
}

impl OofProtocol {
    /// One line for provenance (`model` field of the evidence file's teacher identity).
    pub fn describe(&self) -> String {
        format!(
            "soft labels out-of-fold: {} heads on cached features, folds by patient (seed {}), each fold labelled by the head that did not see it",
            self.folds, self.seed
        )
    }
}

/// Fold of a patient: a stable hash of `(seed, subject)` modulo `k`.
pub fn fold_of(subject: u64, k: usize, seed: u64) -> usize {
    let mut h = Sha256::new();
    h.update(b"ckd-oof");
    h.update(seed.to_le_bytes());
    h.update(subject.to_le_bytes());
    let d = h.finalize();
    (u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]) % k.max(1) as u64) as usize
}

/// Out-of-fold probabilities `[N * 25]` for training rows with features `train` `[N * H]`,
/// labels and patients; `val` / `val_labels` drive each head's early stopping.
#[allow(clippy::too_many_arguments)]
pub fn out_of_fold(
    train: &[f32],
    train_labels: &[LabelSet],
    subjects: &[u64],
    val: &[f32],
    val_labels: &[LabelSet],
    hidden: usize,
    cfg: &HeadConfig,
    k: usize,
    seed: u64,
    temperature: f32,
) -> Result<(Vec<f32>, OofProtocol)> {
    let n = train_labels.len();
    if k < 2 || subjects.len() != n || train.len() != n * hidden {
        return Err(TeacherError::Invalid(format!(
            "out-of-fold labels: need k >= 2 (got {k}) and one patient id and {hidden} features per row ({} ids, {} values for {n} rows)",
            subjects.len(),
            train.len()
        )));
    }
    let folds: Vec<usize> = subjects.iter().map(|&s| fold_of(s, k, seed)).collect();
    let mut out = vec![0f32; n * NUM_LABELS];
    let mut rows_per_fold = vec![0; k];
    let mut patients_per_fold = vec![0; k];
    for (f, (rows, patients)) in rows_per_fold.iter_mut().zip(patients_per_fold.iter_mut()).enumerate() {
        let (inside, outside): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| folds[i] == f);
        *rows = inside.len();
        let mut pats: Vec<u64> = inside.iter().map(|&i| subjects[i]).collect();
        pats.sort_unstable();
        pats.dedup();
        *patients = pats.len();
        if inside.is_empty() {
            continue;
        }
        if outside.is_empty() {
            return Err(TeacherError::Invalid(format!("out-of-fold labels: fold {f} holds every training patient")));
        }
        let gather = |idx: &[usize]| -> Vec<f32> {
            idx.iter().flat_map(|&i| train[i * hidden..(i + 1) * hidden].iter().copied()).collect()
        };
        let labels: Vec<LabelSet> = outside.iter().map(|&i| train_labels[i]).collect();
        let (head, _) = train_head(&gather(&outside), &labels, val, val_labels, hidden, cfg)?;
        let p = probabilities(&head, &gather(&inside), hidden, temperature)?;
        for (r, &i) in inside.iter().enumerate() {
            out[i * NUM_LABELS..(i + 1) * NUM_LABELS].copy_from_slice(&p[r * NUM_LABELS..(r + 1) * NUM_LABELS]);
        }
    }
    Ok((out, OofProtocol { folds: k, seed, rows_per_fold, patients_per_fold }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Features that are the labels themselves (a head can memorize them): in-sample the head
    /// would reproduce each row's own label; out of fold, a row whose label is unique to its
    /// patient (label 24 here, noise) cannot be recovered, which shows no row was labelled by a
    /// head that trained on it.
    #[test]
    fn no_row_is_labelled_by_a_head_that_saw_its_patient() {
        let hidden = NUM_LABELS + 1;
        let n = 60;
        let mut feats = Vec::new();
        let mut labels = Vec::new();
        let mut subjects = Vec::new();
        for i in 0..n {
            let subject = (i / 2) as u64;
            // Label 0 follows feature 0 for everyone; label 24 is on for patient 7 only, marked by
            // feature 25 that only patient 7 has.
            let y0 = i % 3 == 0;
            let mine = subject == 7;
            let mut f = vec![0f32; hidden];
            f[0] = if y0 { 1.0 } else { -1.0 };
            f[NUM_LABELS] = if mine { 5.0 } else { 0.0 };
            feats.extend(f);
            let mut l = Vec::new();
            if y0 {
                l.push(0u8);
            }
            if mine {
                l.push(24);
            }
            labels.push(LabelSet::from_labels(l));
            subjects.push(subject);
        }
        let cfg = HeadConfig { epochs: 60, ..HeadConfig::default() };
        let val = feats[..10 * hidden].to_vec();
        let (p, proto) = out_of_fold(&feats, &labels, &subjects, &val, &labels[..10], hidden, &cfg, 5, 3, 1.0).unwrap();
        assert_eq!(proto.rows_per_fold.iter().sum::<usize>(), n);
        // Patients never straddle folds (the fold is a function of the patient id alone).
        for w in subjects.windows(2) {
            if w[0] == w[1] {
                assert_eq!(fold_of(w[0], 5, 3), fold_of(w[1], 5, 3));
            }
        }
        // Label 0 is learnable from other patients: out-of-fold it is still predicted.
        let (mut pos, mut neg) = (0f32, 0f32);
        for (l, row) in labels.iter().zip(p.chunks_exact(NUM_LABELS)) {
            if l.contains(0) {
                pos += row[0];
            } else {
                neg += row[0];
            }
        }
        assert!(pos / 20.0 > neg / 40.0 + 0.05, "label 0: {} vs {}", pos / 20.0, neg / 40.0);
        // Label 24 of patient 7 is only in its own rows: the head that labels them never saw it.
        for i in [14, 15] {
            assert!(p[i * NUM_LABELS + 24] < 0.5, "row {i}: {}", p[i * NUM_LABELS + 24]);
        }
        assert!(out_of_fold(&feats, &labels, &subjects, &val, &labels[..10], hidden, &cfg, 1, 3, 1.0).is_err());
    }
}
