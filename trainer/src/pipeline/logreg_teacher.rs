//! The bag-of-concepts logistic regression as a teacher at a label fraction, alone or with a
//! frozen LLM's zero-shot score added to its logit: the pair isolates what the LLM knows beyond
//! the words of the visit and the labelled patients.
//!
//! At a fraction and seed:
//! 1. One regression per phenotype ([`BagOfConcepts`], tf-idf of the visit's concepts) on the
//!    labelled patients only, at each C of [`C_GRID`]; validation macro-AUC chooses C.
//! 2. Logits `l` of validation, test and the unlabelled training rows from that fit; labelled
//!    training rows get out-of-fold logits (folds by patient, [`fold_of`]; in-sample when fewer
//!    than two labelled patients, or for a fold that holds every labelled patient).
//! 3. With zero-shot probabilities `q`: `z = logit(q)` (the zero-shot teacher's standardized,
//!    visit-centred score) and the soft label is `sigmoid(l + w z)`, the one weight `w` of
//!    [`W_GRID`] chosen on validation macro-AUC (0 included: validation may turn it off). Without,
//!    `sigmoid(l)`.
//!
//! No label of an unlabelled patient is read (the tests replace them and compare bits).

use std::collections::HashSet;

use ckd_core::visit::Sample;
use ckd_core::{LabelSet, NUM_LABELS};

use super::fraction_teacher::{FractionTeacher, TeacherSource, FORMAT, VERSION};
use super::{msg_err, pct, stage_err, PipelineError};
use crate::baselines::logreg::LogRegConfig;
use crate::baselines::BagOfConcepts;
use crate::report::macro_auc;
use crate::teacher::oof::fold_of;
use crate::teacher::semi::SemiProtocol;

type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Stage name in errors.
const STAGE: &str = "bench-logreg-teacher";

/// Inverse regularization strengths tried (scikit-learn's `C`).
pub const C_GRID: &[f64] = &[0.1, 1.0, 10.0];

/// Weights of the zero-shot score tried.
pub const W_GRID: &[f32] = &[0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0];

/// Probabilities are clamped to `[EPS, 1 - EPS]` before a logit.
const EPS: f32 = 1e-4;

/// What the teacher reads: the splits, the fraction's labels and, optionally, zero-shot
/// probabilities `[train, val, test]` (`[N * 25]` each, in the splits' order).
pub struct LogRegInput<'a> {
    /// Training rows (texts and patients; labels are read through `labelled` only).
    pub train: &'a [Sample],
    /// Validation rows (labels choose C and w).
    pub val: &'a [Sample],
    /// Test rows.
    pub test: &'a [Sample],
    /// One entry per training row: its label when its patient is labelled.
    pub labelled: &'a [Option<LabelSet>],
    /// Zero-shot probabilities of the three splits.
    pub zero_shot: Option<&'a [Vec<f32>; 3]>,
    /// Folds of the labelled rows' out-of-fold logits.
    pub folds: usize,
    /// Label fraction and seed (recorded; the seed also assigns folds).
    pub fraction: f64,
    /// Seed of the labelled draw.
    pub seed: u64,
}

fn logit(p: f32) -> f32 {
    let p = p.clamp(EPS, 1.0 - EPS);
    (p / (1.0 - p)).ln()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn all(set: &[Sample]) -> Vec<&Sample> {
    set.iter().collect()
}

fn texts(s: &[&Sample]) -> Vec<String> {
    s.iter().map(|x| x.text()).collect()
}

/// A regression on `rows` (texts and labels) at `c`, validation tuning only its thresholds.
fn fit(rows: &[(&Sample, LabelSet)], val: &[Sample], c: f64) -> Result<BagOfConcepts> {
    let t: Vec<String> = rows.iter().map(|(s, _)| s.text()).collect();
    let y: Vec<LabelSet> = rows.iter().map(|(_, l)| *l).collect();
    let vt: Vec<String> = val.iter().map(|s| s.text()).collect();
    let vl: Vec<LabelSet> = val.iter().map(|s| s.labels).collect();
    let cfg = LogRegConfig { c, ..LogRegConfig::default() };
    BagOfConcepts::fit_with((&t, &y), (&vt, &vl), &cfg, false).map_err(stage_err(STAGE))
}

/// The teacher of `inp` (module docs); `source` is [`TeacherSource::LogReg`] without zero-shot
/// probabilities and [`TeacherSource::LogRegZeroShot`] with them.
pub fn logreg_teacher(inp: &LogRegInput<'_>) -> Result<FractionTeacher> {
    let labelled: Vec<(usize, LabelSet)> =
        inp.labelled.iter().enumerate().filter_map(|(i, l)| l.map(|l| (i, l))).collect();
    if labelled.is_empty() {
        return Err(msg_err(
            STAGE,
            format!("no labelled training patient at {}% (seed {})", pct(inp.fraction), inp.seed),
        ));
    }
    let rows: Vec<(&Sample, LabelSet)> = labelled.iter().map(|&(i, l)| (&inp.train[i], l)).collect();
    // 1. C on validation.
    let mut best: Option<(f64, f64, BagOfConcepts)> = None;
    for &c in C_GRID {
        let m = fit(&rows, inp.val, c)?;
        let v = macro_auc(&m.predict(&inp.val.iter().map(|s| s.text()).collect::<Vec<_>>()), inp.val).unwrap_or(0.0);
        if best.as_ref().is_none_or(|b| v > b.0) {
            best = Some((v, c, m));
        }
    }
    let (_, c, model) = best.ok_or_else(|| msg_err(STAGE, "empty C grid".into()))?;
    let logits =
        |m: &BagOfConcepts, set: &[&Sample]| -> Vec<f32> { m.predict(&texts(set)).into_iter().map(logit).collect() };
    let (lv, lte) = (logits(&model, &all(inp.val)), logits(&model, &all(inp.test)));
    // 2. Training rows: the full fit for unlabelled rows, out-of-fold for labelled ones.
    let mut lt = logits(&model, &all(inp.train));
    let patients: HashSet<u64> = rows.iter().map(|(s, _)| s.subject).collect();
    let k = inp.folds.min(patients.len());
    let mut used_folds = 0;
    if k >= 2 {
        for f in 0..k {
            let fold = |s: &Sample| fold_of(s.subject, k, inp.seed) == f;
            let others: Vec<(&Sample, LabelSet)> = rows.iter().filter(|(s, _)| !fold(s)).copied().collect();
            let mine: Vec<usize> = labelled.iter().map(|&(i, _)| i).filter(|&i| fold(&inp.train[i])).collect();
            if others.is_empty() || mine.is_empty() {
                continue;
            }
            used_folds += 1;
            let m = fit(&others, inp.val, c)?;
            let l = logits(&m, &mine.iter().map(|&i| &inp.train[i]).collect::<Vec<_>>());
            for (r, &i) in mine.iter().enumerate() {
                lt[i * NUM_LABELS..(i + 1) * NUM_LABELS].copy_from_slice(&l[r * NUM_LABELS..(r + 1) * NUM_LABELS]);
            }
        }
    }
    // 3. The zero-shot score's weight on validation.
    let (w, z) = match inp.zero_shot {
        Some(zs) => {
            let z: [Vec<f32>; 3] = [0, 1, 2].map(|s| zs[s].iter().copied().map(logit).collect());
            let mix = |l: &[f32], z: &[f32], w: f32| -> Vec<f32> {
                l.iter().zip(z).map(|(a, b)| sigmoid(a + w * b)).collect()
            };
            let mut best = (f64::NEG_INFINITY, 0.0f32);
            for &w in W_GRID {
                let v = macro_auc(&mix(&lv, &z[1], w), inp.val).unwrap_or(0.0);
                if v > best.0 {
                    best = (v, w);
                }
            }
            (best.1, Some(z))
        }
        None => (0.0, None),
    };
    let probs = |l: &[f32], s: usize| -> Vec<f32> {
        match &z {
            Some(z) => l.iter().zip(&z[s]).map(|(a, b)| sigmoid(a + w * b)).collect(),
            None => l.iter().copied().map(sigmoid).collect(),
        }
    };
    let n_lab = labelled.len();
    Ok(FractionTeacher {
        format: FORMAT.into(),
        version: VERSION,
        source: if inp.zero_shot.is_some() { TeacherSource::LogRegZeroShot } else { TeacherSource::LogReg },
        fraction: inp.fraction,
        seed: inp.seed,
        representation: match inp.zero_shot {
            Some(_) => format!("bag of concepts, C {c}, + {w} x zero-shot"),
            None => format!("bag of concepts, C {c}"),
        },
        candidates: Vec::new(),
        protocol: SemiProtocol {
            labelled_rows: n_lab,
            labelled_patients: patients.len(),
            unlabelled_rows: inp.train.len() - n_lab,
            folds: used_folds,
            head_epochs: 0,
        },
        ids: inp.train.iter().map(|s| s.id.clone()).collect(),
        train: probs(&lt, 0),
        val: probs(&lv, 1),
        test: probs(&lte, 2),
    })
}
