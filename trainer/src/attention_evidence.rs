//! The student's attention evidence per concept, and whether it is any good.
//!
//! Evidence: the student's `[CLS]` attention over its input tokens, averaged over heads and the
//! last K layers (K as in its training's attention loss, [`crate::distill::cls_attention`]), spread
//! onto the visit's concepts by byte overlap ([`ckd_core::evidence::aggregate`]): the same units
//! and the same aggregation as the teacher's evidence, so the two compare concept by concept.
//!
//! Scores, per sample, means with 95% intervals resampled by patient:
//! - **agreement with the teacher**: Kendall's tau-b between the student's and the teacher's
//!   concept distributions (the claim of attention distillation: the student attends like the
//!   teacher);
//! - **deletion test** (faithfulness): for the phenotype the model ranks first, the share of the
//!   visit's other concepts whose removal lowers its probability less than removing the
//!   concept of most attention (ties count half); 0.5 is chance;
//! - **attention vs occlusion**: Kendall's tau-b between the attention distribution and the
//!   occlusion effects on that phenotype.
//!
//! The occlusion effects come from `ckd-edge explain` on the student's bundle
//! ([`crate::explain_truth::Explained`]), the attention from the student itself in f32.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use ckd_core::bootstrap::{interval, Groups, Interval};
use ckd_core::evidence::{aggregate, unit_spans, EvidenceFile, Granularity};
use ckd_core::visit::Sample;
use serde::{Deserialize, Serialize};

use crate::explain_truth::{argmax, Explained};
use crate::stats::kendall_tau_b;
use crate::student::Student;

/// What stops the evidence or its scores.
#[derive(Debug, thiserror::Error)]
pub enum AttentionEvidenceError {
    /// A sample that cannot be scored.
    #[error("sample {id}: {msg}")]
    Sample {
        /// Sample id.
        id: String,
        /// What is wrong.
        msg: String,
    },
    /// The student's forward pass failed.
    #[error("student: {0}")]
    Model(String),
}

type Result<T> = std::result::Result<T, AttentionEvidenceError>;

fn model_err(e: impl std::fmt::Display) -> AttentionEvidenceError {
    AttentionEvidenceError::Model(e.to_string())
}

/// The student's concept distribution for each sample (in `Rendered::concepts` order; sums to
/// 1, or all zeros when no attention reaches a concept), its attention averaged over the last
/// `last_k` layers (at most all of them). One sample per forward pass, unpadded.
pub fn concept_evidence(student: &Student, samples: &[Sample], last_k: usize) -> Result<Vec<Vec<f32>>> {
    let layers = student.model.config().num_hidden_layers;
    let last_k = last_k.clamp(1, layers.max(1));
    let mut out = Vec::with_capacity(samples.len());
    for s in samples {
        let bad = |msg: String| AttentionEvidenceError::Sample { id: s.id.clone(), msg };
        let rendered = s.rendered().ok_or_else(|| bad("text not in the CKD-EHR layout".into()))?;
        let enc = student.encoder.encode(&rendered.text).map_err(|e| bad(e.to_string()))?;
        let t = enc.ids.len();
        let ids = Tensor::from_vec(enc.ids.clone(), (1, t), &Device::Cpu).map_err(model_err)?;
        let mask = Tensor::ones((1, t), candle_core::DType::U32, &Device::Cpu).map_err(model_err)?;
        let o = student.model.forward_t(&ids, &mask, None, None, true).map_err(model_err)?;
        let att = o.attentions.ok_or_else(|| model_err("no attentions returned"))?;
        let a = crate::distill::cls_attention(&att, last_k).map_err(model_err)?;
        let a: Vec<f32> = a.squeeze(0).and_then(|a| a.to_vec1()).map_err(model_err)?;
        out.push(aggregate(&enc.offsets, &a, &unit_spans(&rendered, Granularity::Concept)));
    }
    Ok(out)
}

/// One sample's visit shaded by each kind of evidence given: the teacher's (its record in
/// `teacher`), the student's attention `student` (last `last_k` layers), and the occlusion
/// effects on its top phenotype (its record in `explained`; effects below 0 not shaded), as an
/// SVG ([`crate::report::evidence_svg`]). `None` when the text is not in the CKD-EHR layout.
pub fn evidence_figure(
    sample: &Sample,
    student: &[f32],
    last_k: usize,
    teacher: Option<&EvidenceFile>,
    explained: Option<&[Explained]>,
) -> Option<String> {
    use crate::report::{evidence_svg, EvidencePanel};
    let rendered = sample.rendered()?;
    let teacher_w = teacher.and_then(|t| t.records.iter().find(|r| r.id == sample.id)).map(|r| r.concepts.clone());
    let occlusion = explained.and_then(|e| e.iter().find(|e| e.id == sample.id)).map(|e| {
        let top = argmax(e.probs.iter().map(|&p| f64::from(p))).unwrap_or(0);
        let w: Vec<f32> = e.concepts.iter().map(|c| c.effect[top].max(0.0)).collect();
        (format!("occlusion: how much leaving each concept out lowers P({})", ckd_core::PHENOTYPES[top].name), w)
    });
    let student_title = format!("student: [CLS] attention, last {last_k} layers");
    let mut panels = Vec::new();
    if let Some(w) = &teacher_w {
        panels.push(EvidencePanel { title: "teacher: attention evidence", weights: w });
    }
    panels.push(EvidencePanel { title: &student_title, weights: student });
    if let Some((title, w)) = &occlusion {
        panels.push(EvidencePanel { title, weights: w });
    }
    Some(evidence_svg(&rendered, &panels))
}

/// The scores of [`score`] (see the module docs); `None` where the input was not given or the
/// statistic is undefined on every sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionQuality {
    /// Samples scored.
    pub samples: usize,
    /// Mean tau-b, student vs teacher concept evidence.
    pub teacher_agreement: Option<Interval>,
    /// Mean deletion-test share (chance 0.5).
    pub deletion_share: Option<Interval>,
    /// Mean tau-b, attention vs occlusion on the top phenotype.
    pub attention_vs_occlusion: Option<Interval>,
}

/// Per-sample values of the three scores.
fn per_sample(
    s: &Sample,
    att: &[f32],
    teacher: Option<&HashMap<&str, &[f32]>>,
    ex: Option<&HashMap<&str, &Explained>>,
) -> Result<[Option<f64>; 3]> {
    let bad = |msg: String| AttentionEvidenceError::Sample { id: s.id.clone(), msg };
    let att64: Vec<f64> = att.iter().map(|&x| f64::from(x)).collect();
    let agreement = match teacher {
        None => None,
        Some(t) => {
            let te = t.get(s.id.as_str()).ok_or_else(|| bad("no teacher evidence".into()))?;
            if te.len() != att.len() {
                return Err(bad(format!("teacher evidence has {} concepts, the text {}", te.len(), att.len())));
            }
            kendall_tau_b(&att64, &te.iter().map(|&x| f64::from(x)).collect::<Vec<_>>())
        }
    };
    let (mut deletion, mut vs_occlusion) = (None, None);
    if let Some(ex) = ex {
        let e = ex.get(s.id.as_str()).ok_or_else(|| bad("no explanation".into()))?;
        if e.concepts.len() != att.len() {
            return Err(bad(format!("explanation has {} concepts, the text {}", e.concepts.len(), att.len())));
        }
        let top = argmax(e.probs.iter().map(|&p| f64::from(p))).unwrap_or(0);
        let eff: Vec<f64> = e.concepts.iter().map(|c| f64::from(c.effect[top])).collect();
        if let (Some(a), true) = (argmax(att64.iter().copied()), eff.len() >= 2) {
            let beaten: f64 = (0..eff.len())
                .filter(|&c| c != a)
                .map(|c| {
                    if eff[c] < eff[a] {
                        1.0
                    } else if eff[c] == eff[a] {
                        0.5
                    } else {
                        0.0
                    }
                })
                .sum();
            deletion = Some(beaten / (eff.len() - 1) as f64);
        }
        vs_occlusion = kendall_tau_b(&att64, &eff);
    }
    Ok([agreement, deletion, vs_occlusion])
}

/// Scores the student's evidence `attention` (from [`concept_evidence`], one per sample) against
/// the teacher's evidence and the occlusion explanations, when given (matched by sample id).
pub fn score(
    samples: &[Sample],
    attention: &[Vec<f32>],
    teacher: Option<&EvidenceFile>,
    explained: Option<&[Explained]>,
    resamples: usize,
    seed: u64,
) -> Result<AttentionQuality> {
    let t: Option<HashMap<&str, &[f32]>> =
        teacher.map(|f| f.records.iter().map(|r| (r.id.as_str(), r.concepts.as_slice())).collect());
    let e: Option<HashMap<&str, &Explained>> = explained.map(|x| x.iter().map(|e| (e.id.as_str(), e)).collect());
    let values: Vec<[Option<f64>; 3]> =
        samples.iter().zip(attention).map(|(s, a)| per_sample(s, a, t.as_ref(), e.as_ref())).collect::<Result<_>>()?;
    let subjects: Vec<u64> = samples.iter().map(|s| s.subject).collect();
    let rs = Groups::by_subject(&subjects).resamples(resamples, seed);
    let mean_of = |k: usize| {
        let values = &values;
        interval(values.len(), &rs, move |idx: &[usize]| {
            let v: Vec<f64> = idx.iter().filter_map(|&i| values[i][k]).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        })
    };
    Ok(AttentionQuality {
        samples: samples.len(),
        teacher_agreement: mean_of(0),
        deletion_share: mean_of(1),
        attention_vs_occlusion: mean_of(2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain_truth::ConceptEffect;
    use ckd_core::visit::{render, Coded, Field, Split, Visit};
    use ckd_core::{LabelSet, NUM_LABELS};

    fn sample(id: &str, subject: u64) -> Sample {
        let visit = Visit {
            diagnoses: vec![Coded { code: "5856".into(), title: "Chronic kidney disease (ckd)".into() }],
            medications: vec!["Heparin".into(), "Insulin".into()],
            procedures: vec![],
        };
        Sample {
            id: id.into(),
            subject,
            split: Split::Test,
            visit,
            knowledge: vec![],
            labels: LabelSet::default(),
            raw: None,
        }
    }

    fn explained(s: &Sample, effects: [f32; 3]) -> Explained {
        let r = render(&s.visit, &[]);
        let mut probs = [0.1f32; NUM_LABELS];
        probs[4] = 0.9;
        let concepts = (0..3)
            .map(|i| {
                let mut effect = [0f32; NUM_LABELS];
                effect[4] = effects[i];
                ConceptEffect { field: Field::Diagnoses, text: r.concept_text(i).unwrap().into(), effect }
            })
            .collect();
        Explained { id: s.id.clone(), text: r.text, probs, positive: LabelSet::default(), concepts }
    }

    /// Hand-computed: a attends most to concept 0, whose removal lowers the top phenotype most
    /// (share 1); b attends most to concept 2, which beats one of two others (0.5 with a tie
    /// counting half: effects 0.2, 0.1, 0.1 -> concept 2 ties concept 1, loses to 0: 0.25).
    #[test]
    fn deletion_share_and_rank_agreement() {
        let (a, b) = (sample("a", 1), sample("b", 2));
        let att = vec![vec![0.6, 0.3, 0.1], vec![0.2, 0.3, 0.5]];
        let ex = vec![explained(&a, [0.3, 0.2, 0.1]), explained(&b, [0.2, 0.1, 0.1])];
        let q = score(&[a.clone(), b.clone()], &att, None, Some(&ex), 100, 3).unwrap();
        assert!(q.teacher_agreement.is_none());
        assert!((q.deletion_share.unwrap().estimate - (1.0 + 0.25) / 2.0).abs() < 1e-12);
        // tau: a is perfectly concordant (1); b: att (0.2, 0.3, 0.5) vs eff (0.2, 0.1, 0.1):
        // pairs (0,1) D, (0,2) D, (1,2) tie in eff -> -2 / sqrt(3 * 2).
        let want = (1.0 - 2.0 / 6f64.sqrt()) / 2.0;
        assert!((q.attention_vs_occlusion.unwrap().estimate - want).abs() < 1e-12);
        let err = score(&[a], &att[..1], None, Some(&ex[1..]), 10, 1).unwrap_err();
        assert!(err.to_string().contains("sample a: no explanation"), "{err}");
    }
}
