//! The logistic-regression teacher of `ckd bench` (`pipeline/logreg_teacher.rs`) on a small
//! synthetic cohort: no label of an unlabelled patient changes any output (bit-identical), the
//! labelled rows are labelled out of fold, an informative zero-shot score gets a weight and lifts
//! validation, and an uninformative one is turned off (weight 0: the regression alone).

use ckd_core::visit::{Sample, Split};
use ckd_core::{LabelSet, NUM_LABELS};
use ckd_trainer::ingest::{ingest_mimic, IngestConfig};
use ckd_trainer::pipeline::fraction_teacher::{labelled, TeacherSource};
use ckd_trainer::pipeline::logreg_teacher::{logreg_teacher, LogRegInput};
use ckd_trainer::report::macro_auc;
use ckd_trainer::synth::{generate, write_cohort, SynthConfig};

fn splits() -> (Vec<Sample>, Vec<Sample>, Vec<Sample>) {
    let d = tempfile::tempdir().unwrap();
    let c = generate(&SynthConfig { patients: 600, seed: 11, ..Default::default() });
    write_cohort(&c, d.path()).unwrap();
    let s = ingest_mimic(d.path(), &IngestConfig::default(), &mut |_, _| {}).unwrap().file.samples;
    let of = |sp: Split| s.iter().filter(|x| x.split == sp).cloned().collect::<Vec<_>>();
    (of(Split::Train), of(Split::Val), of(Split::Test))
}

/// Zero-shot probabilities that know the labels (`signal` > 0) or know nothing (0.5 everywhere).
fn zero_shot(set: &[Sample], signal: f32) -> Vec<f32> {
    set.iter().flat_map(|s| s.labels.to_dense().map(|y| 0.5 + signal * (y - 0.5))).collect()
}

fn input<'a>(
    (train, val, test): (&'a [Sample], &'a [Sample], &'a [Sample]),
    labels: &'a [Option<LabelSet>],
    zs: Option<&'a [Vec<f32>; 3]>,
) -> LogRegInput<'a> {
    LogRegInput { train, val, test, labelled: labels, zero_shot: zs, folds: 3, fraction: 0.3, seed: 4 }
}

#[test]
fn unlabelled_labels_never_reach_the_logreg_teacher() {
    let (train, val, test) = splits();
    let labels = labelled(&train, 0.3, 4);
    let n_lab = labels.iter().filter(|l| l.is_some()).count();
    assert!(n_lab > 10 && n_lab < train.len(), "{n_lab} of {}", train.len());
    let zs = [zero_shot(&train, 0.4), zero_shot(&val, 0.4), zero_shot(&test, 0.4)];
    let a = logreg_teacher(&input((&train, &val, &test), &labels, Some(&zs))).unwrap();
    // Every training sample's own label replaced: only `labels` carries the labelled ones.
    let mut scrambled = train.clone();
    for (i, s) in scrambled.iter_mut().enumerate() {
        s.labels = LabelSet::from_labels(vec![(i % NUM_LABELS) as u8]);
    }
    let b = logreg_teacher(&input((&scrambled, &val, &test), &labels, Some(&zs))).unwrap();
    assert_eq!((a.train, a.val, a.test), (b.train.clone(), b.val.clone(), b.test.clone()));
    assert_eq!(a.protocol, b.protocol);
    assert_eq!((a.protocol.labelled_rows, a.protocol.unlabelled_rows), (n_lab, train.len() - n_lab));
    assert_eq!(a.protocol.folds, 3);
    assert_eq!(a.source, TeacherSource::LogRegZeroShot);
    // A labelled row's label does reach it.
    let mut flipped = labels.clone();
    let i = flipped.iter().position(|l| l.is_some()).unwrap();
    flipped[i] = Some(LabelSet::from_labels((0..NUM_LABELS as u8).collect::<Vec<u8>>()));
    let c = logreg_teacher(&input((&train, &val, &test), &flipped, Some(&zs))).unwrap();
    assert_ne!(c.test, b.test);
    // Out of fold: a labelled row's soft label is not the full fit's (which saw its label).
    let full = logreg_teacher(&input((&train, &val, &test), &labels, None)).unwrap();
    assert_eq!(full.source, TeacherSource::LogReg);
    let j = labels.iter().position(|l| l.is_some()).unwrap();
    let u = labels.iter().position(|l| l.is_none()).unwrap();
    let row = |v: &[f32], r: usize| v[r * NUM_LABELS..(r + 1) * NUM_LABELS].to_vec();
    let refit = logreg_teacher(&LogRegInput { folds: 1, ..input((&train, &val, &test), &labels, None) }).unwrap();
    assert_eq!(refit.protocol.folds, 0);
    assert_ne!(row(&full.train, j), row(&refit.train, j), "labelled row {j} was labelled in sample");
    assert_eq!(row(&full.train, u), row(&refit.train, u), "unlabelled row {u} comes from the full fit");
}

#[test]
fn validation_weighs_the_zero_shot_score() {
    let (train, val, test) = splits();
    let labels = labelled(&train, 0.3, 4);
    let sets = (&train[..], &val[..], &test[..]);
    let alone = logreg_teacher(&input(sets, &labels, None)).unwrap();
    let knows = [zero_shot(&train, 0.4), zero_shot(&val, 0.4), zero_shot(&test, 0.4)];
    let with = logreg_teacher(&input(sets, &labels, Some(&knows))).unwrap();
    assert!(!with.representation.contains("+ 0 x"), "{}", with.representation);
    assert!(macro_auc(&with.val, &val).unwrap() > macro_auc(&alone.val, &val).unwrap() + 0.05);
    let blind = [zero_shot(&train, 0.0), zero_shot(&val, 0.0), zero_shot(&test, 0.0)];
    let off = logreg_teacher(&input(sets, &labels, Some(&blind))).unwrap();
    assert!(off.representation.ends_with("+ 0 x zero-shot"), "{}", off.representation);
    assert_eq!((off.val, off.test), (alone.val, alone.test));
    let none = vec![None; train.len()];
    let e = logreg_teacher(&input(sets, &none, None)).unwrap_err().to_string();
    assert!(e.contains("no labelled training patient"), "{e}");
}
