//! Soft labels at a label fraction: the teacher's head learns from the labelled training
//! patients only, and the unlabelled rest of the training split gets its soft labels.
//!
//! At label fraction `f` a cohort has outcomes for a share `f` of its training patients. A
//! teacher whose head saw every training label would hand the student the other labels through
//! its soft labels (label leakage, not knowledge). Here:
//! - the head is trained on the features of labelled rows only (validation for early stopping,
//!   as every model of the bench uses it);
//! - unlabelled training rows, validation and test rows get that head's probabilities;
//! - labelled training rows get out-of-fold probabilities from heads trained on the other
//!   labelled patients ([`super::oof::out_of_fold`]; in-sample when fewer than two labelled
//!   patients exist, which exposes only the row's own label, the one its hard term sees anyway).
//!
//! Contract: the labels of unlabelled rows are not an input ([`Labelled`] holds `None` for them),
//! so no output can depend on them; `keeps_label` decides who is labelled, as for the student.
//!
//! Shapes: features `[N * H]` row-major; probabilities `[N * 25]` in label order.

use ckd_core::{LabelSet, NUM_LABELS};
use serde::{Deserialize, Serialize};

use super::head::{probabilities, train_head, HeadConfig};
use super::oof::out_of_fold;
use super::{Result, TeacherError};

/// A training row's label when its patient is labelled at this fraction, else `None`.
pub type Labelled = Option<LabelSet>;

/// Optimizer steps a head gets at least (small labelled sets get more epochs).
pub const MIN_HEAD_STEPS: usize = 600;

/// The inputs of [`soft_labels`].
pub struct SemiInput<'a> {
    /// Training features `[N * H]`.
    pub train: &'a [f32],
    /// One entry per training row.
    pub labels: &'a [Labelled],
    /// Patient of each training row.
    pub subjects: &'a [u64],
    /// Validation features `[M * H]` and labels (early stopping).
    pub val: &'a [f32],
    /// Validation labels.
    pub val_labels: &'a [LabelSet],
    /// Feature width.
    pub hidden: usize,
    /// Head settings (`epochs` is raised so that a head takes at least [`MIN_HEAD_STEPS`] steps).
    pub head: &'a HeadConfig,
    /// Folds of the out-of-fold labels of labelled rows.
    pub folds: usize,
    /// Seed of the fold assignment.
    pub seed: u64,
    /// Temperature of the probabilities.
    pub temperature: f32,
}

/// What [`soft_labels`] returns.
#[derive(Debug, Clone)]
pub struct SemiOutput {
    /// Probabilities of every training row `[N * 25]`.
    pub train: Vec<f32>,
    /// The head trained on every labelled row (for validation and test rows).
    pub head: super::head::Head,
    /// How the rows were labelled.
    pub protocol: SemiProtocol,
}

/// The protocol, as recorded beside the figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SemiProtocol {
    /// Labelled training rows and patients.
    pub labelled_rows: usize,
    /// Labelled patients.
    pub labelled_patients: usize,
    /// Unlabelled training rows (soft labels from the head on labelled rows).
    pub unlabelled_rows: usize,
    /// Folds used for the labelled rows (0: in-sample, fewer than two labelled patients).
    pub folds: usize,
    /// Epochs each head ran.
    pub head_epochs: usize,
}

fn gather(x: &[f32], rows: &[usize], hidden: usize) -> Vec<f32> {
    rows.iter().flat_map(|&i| x[i * hidden..(i + 1) * hidden].iter().copied()).collect()
}

/// Soft labels for every training row from heads that learn from labelled rows only.
pub fn soft_labels(inp: &SemiInput<'_>) -> Result<SemiOutput> {
    let (n, h) = (inp.labels.len(), inp.hidden);
    if inp.subjects.len() != n || inp.train.len() != n * h {
        return Err(TeacherError::Invalid(format!(
            "soft labels: {} patient ids and {} values for {n} rows of width {h}",
            inp.subjects.len(),
            inp.train.len()
        )));
    }
    let lab: Vec<usize> = (0..n).filter(|&i| inp.labels[i].is_some()).collect();
    if lab.is_empty() {
        return Err(TeacherError::Invalid("soft labels: no labelled training row".into()));
    }
    let labels: Vec<LabelSet> = lab.iter().filter_map(|&i| inp.labels[i]).collect();
    let subjects: Vec<u64> = lab.iter().map(|&i| inp.subjects[i]).collect();
    let mut patients = subjects.clone();
    patients.sort_unstable();
    patients.dedup();
    let batches = lab.len().div_ceil(inp.head.batch_size.max(1));
    let epochs = inp.head.epochs.max(MIN_HEAD_STEPS.div_ceil(batches));
    let cfg = HeadConfig { epochs, ..inp.head.clone() };
    let x_lab = gather(inp.train, &lab, h);
    let (head, _) = train_head(&x_lab, &labels, inp.val, inp.val_labels, h, &cfg)?;
    let mut train = probabilities(&head, inp.train, h, inp.temperature)?;
    let folds = inp.folds.min(patients.len());
    if folds >= 2 {
        let (p, _) = out_of_fold(
            &x_lab,
            &labels,
            &subjects,
            inp.val,
            inp.val_labels,
            h,
            &cfg,
            folds,
            inp.seed,
            inp.temperature,
        )?;
        for (r, &i) in lab.iter().enumerate() {
            train[i * NUM_LABELS..(i + 1) * NUM_LABELS].copy_from_slice(&p[r * NUM_LABELS..(r + 1) * NUM_LABELS]);
        }
    }
    let protocol = SemiProtocol {
        labelled_rows: lab.len(),
        labelled_patients: patients.len(),
        unlabelled_rows: n - lab.len(),
        folds: if folds >= 2 { folds } else { 0 },
        head_epochs: epochs,
    };
    Ok(SemiOutput { train, head, protocol })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 40 patients with 2 rows each; features carry label 0 (and noise); patients 0..10 labelled.
    fn cohort() -> (Vec<f32>, Vec<LabelSet>, Vec<u64>, usize) {
        let h = 6;
        let mut x = Vec::new();
        let mut y = Vec::new();
        let mut s = Vec::new();
        for i in 0..80u64 {
            let on = (i * 7 + 3) % 5 < 2;
            let noise = ((i * 2654435761) % 97) as f32 / 97.0;
            x.extend([if on { 1.0 } else { -1.0 }, noise, 0.5 - noise, (i % 3) as f32, 0.1, -0.2]);
            y.push(LabelSet::from_labels(if on { vec![0u8, 3] } else { vec![3u8] }));
            s.push(i / 2);
        }
        (x, y, s, h)
    }

    fn run(labels: &[Labelled], x: &[f32], s: &[u64], h: usize, val: (&[f32], &[LabelSet])) -> SemiOutput {
        let head = HeadConfig { epochs: 5, ..HeadConfig::default() };
        soft_labels(&SemiInput {
            train: x,
            labels,
            subjects: s,
            val: val.0,
            val_labels: val.1,
            hidden: h,
            head: &head,
            folds: 3,
            seed: 7,
            temperature: 1.0,
        })
        .unwrap()
    }

    #[test]
    fn unlabelled_labels_cannot_change_any_output() {
        let (x, y, s, h) = cohort();
        let labelled = |subject: u64| subject < 10;
        let val = (&x[..20 * h], &y[..20]);
        let mask =
            |y: &[LabelSet]| -> Vec<Labelled> { y.iter().zip(&s).map(|(l, &p)| labelled(p).then_some(*l)).collect() };
        let a = run(&mask(&y), &x, &s, h, val);
        // Every unlabelled row's label replaced (flipped and shuffled): bit-identical outputs.
        let mut y2 = y.clone();
        for (i, l) in y2.iter_mut().enumerate() {
            if !labelled(s[i]) {
                *l = LabelSet::from_labels(vec![(i % NUM_LABELS) as u8]);
            }
        }
        let b = run(&mask(&y2), &x, &s, h, val);
        assert_eq!(a.train, b.train);
        assert_eq!(a.head.weight.to_vec2::<f32>().unwrap(), b.head.weight.to_vec2::<f32>().unwrap());
        assert_eq!(a.protocol, b.protocol);
        assert_eq!(a.protocol.labelled_rows, 20);
        assert_eq!(a.protocol.labelled_patients, 10);
        assert_eq!(a.protocol.unlabelled_rows, 60);
        assert_eq!(a.protocol.folds, 3);
        // A labelled row's own label does change outputs (the labels are used).
        let mut y3 = y.clone();
        y3[0] = LabelSet::from_labels(vec![24u8]);
        let c = run(&mask(&y3), &x, &s, h, val);
        assert_ne!(a.train, c.train);
        // The head learned label 0 from the labelled rows: unlabelled rows ranked by it.
        let (mut pos, mut neg, mut np, mut nn) = (0f32, 0f32, 0, 0);
        for (l, row) in y.iter().zip(a.train.chunks_exact(NUM_LABELS)).skip(20) {
            if l.contains(0) {
                pos += row[0];
                np += 1;
            } else {
                neg += row[0];
                nn += 1;
            }
        }
        assert!(pos / np as f32 > neg / nn as f32 + 0.1, "{} vs {}", pos / np as f32, neg / nn as f32);
    }

    #[test]
    fn one_labelled_patient_is_in_sample_and_none_is_an_error() {
        let (x, y, s, h) = cohort();
        let val = (&x[..20 * h], &y[..20]);
        let one: Vec<Labelled> = y.iter().zip(&s).map(|(l, &p)| (p == 3).then_some(*l)).collect();
        let o = run(&one, &x, &s, h, val);
        assert_eq!((o.protocol.labelled_patients, o.protocol.folds), (1, 0));
        assert!(o.protocol.head_epochs >= MIN_HEAD_STEPS);
        let none: Vec<Labelled> = vec![None; y.len()];
        let head = HeadConfig::default();
        let e = soft_labels(&SemiInput {
            train: &x,
            labels: &none,
            subjects: &s,
            val: val.0,
            val_labels: val.1,
            hidden: h,
            head: &head,
            folds: 3,
            seed: 1,
            temperature: 1.0,
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("no labelled"), "{e}");
    }
}
