//! `ckd explain`: for one sample, the teacher's predicted phenotypes and the concepts that
//! carried the most attention evidence.
//!
//! The evidence is the attention of the last prompt token (the one the head reads), so it is one
//! distribution per sample, shared by every phenotype: it says what the teacher looked at, not why
//! one label in particular. To make it useful per phenotype, each listed concept is marked
//! `linked` when it is tied to that phenotype by the data itself: a diagnosis whose ICD-9 code
//! maps to the phenotype in the HCUP-CCS table, or a knowledge clause about the phenotype.

use ckd_core::evidence::SampleEvidence;
use ckd_core::visit::{Field, Sample};
use ckd_core::{icd, PHENOTYPES};
use serde::Serialize;

use super::label::rendered;
use super::Result;

/// One concept and its evidence weight.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConceptEvidence {
    /// Field of the concept.
    pub field: &'static str,
    /// Concept text (a diagnosis title, drug, procedure or knowledge clause).
    pub text: String,
    /// Share of the concept-level evidence (the concepts of a sample sum to 1).
    pub weight: f32,
    /// Whether the data ties this concept to the phenotype (see the module docs).
    pub linked: bool,
}

/// One phenotype of the explanation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhenotypeExplanation {
    /// Official name.
    pub phenotype: &'static str,
    /// Teacher probability.
    pub prob: f32,
    /// Decision threshold.
    pub threshold: f32,
    /// The concepts with the most evidence, most first.
    pub concepts: Vec<ConceptEvidence>,
}

/// Explanation of one sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// Sample id.
    pub id: String,
    /// Field-level evidence (diagnoses, medications, procedures, knowledge).
    pub fields: [f32; 4],
    /// Predicted phenotypes (probability >= threshold), most probable first; when none is
    /// predicted, the single most probable one.
    pub phenotypes: Vec<PhenotypeExplanation>,
    /// Whether no phenotype reached its threshold.
    pub none_predicted: bool,
}

fn field_name(f: Field) -> &'static str {
    match f {
        Field::Diagnoses => "diagnosis",
        Field::Medications => "medication",
        Field::Procedures => "procedure",
        Field::Knowledge => "knowledge",
    }
}

/// Builds the explanation of `sample` from its evidence record and the teacher's thresholds,
/// listing `top` concepts per phenotype.
pub fn explain(sample: &Sample, ev: &SampleEvidence, thresholds: &[f32], top: usize) -> Result<Explanation> {
    let r = rendered(sample)?;
    if ev.concepts.len() != r.concepts.len() {
        return Err(super::TeacherError::Invalid(format!(
            "sample {}: evidence has {} concepts, the text {}",
            sample.id,
            ev.concepts.len(),
            r.concepts.len()
        )));
    }
    let mut order: Vec<usize> = (0..ev.probs.len()).collect();
    order.sort_by(|&a, &b| ev.probs[b].total_cmp(&ev.probs[a]));
    let th = |l: usize| thresholds.get(l).copied().unwrap_or(0.5);
    let mut labels: Vec<usize> = order.iter().copied().filter(|&l| ev.probs[l] >= th(l)).collect();
    let none_predicted = labels.is_empty();
    if none_predicted {
        labels = order.into_iter().take(1).collect();
    }
    let mut ranked: Vec<usize> = (0..r.concepts.len()).collect();
    ranked.sort_by(|&a, &b| ev.concepts[b].total_cmp(&ev.concepts[a]));
    let mut knowledge_index = 0usize;
    let clause_of: Vec<Option<usize>> = r
        .concepts
        .iter()
        .map(|c| {
            (c.field == Field::Knowledge).then(|| {
                knowledge_index += 1;
                knowledge_index - 1
            })
        })
        .collect();
    let linked = |ci: usize, label: usize| -> bool {
        let c = &r.concepts[ci];
        let text = &r.text[c.start..c.end];
        match c.field {
            Field::Diagnoses => sample.visit.diagnoses.iter().any(|d| {
                d.title == text
                    && icd::normalize(&d.code).and_then(|n| icd::phenotype_of(&n)).is_some_and(|p| p as usize == label)
            }),
            Field::Knowledge => {
                clause_of[ci].and_then(|k| sample.knowledge.get(k)).is_some_and(|cl| cl.phenotype as usize == label)
            }
            _ => false,
        }
    };
    let phenotypes = labels
        .into_iter()
        .map(|l| PhenotypeExplanation {
            phenotype: PHENOTYPES[l].name,
            prob: ev.probs[l],
            threshold: th(l),
            concepts: ranked
                .iter()
                .take(top)
                .map(|&ci| {
                    let c = &r.concepts[ci];
                    ConceptEvidence {
                        field: field_name(c.field),
                        text: r.text[c.start..c.end].to_string(),
                        weight: ev.concepts[ci],
                        linked: linked(ci, l),
                    }
                })
                .collect(),
        })
        .collect();
    Ok(Explanation { id: sample.id.clone(), fields: ev.fields, phenotypes, none_predicted })
}

/// Plain-text rendering for the terminal.
pub fn format(e: &Explanation) -> String {
    let mut s = format!(
        "sample {}: evidence by field: diagnoses {:.2}, medications {:.2}, procedures {:.2}, knowledge {:.2}\n",
        e.id, e.fields[0], e.fields[1], e.fields[2], e.fields[3]
    );
    if e.none_predicted {
        s.push_str("no phenotype reaches its threshold; the most probable one:\n");
    }
    for p in &e.phenotypes {
        s.push_str(&format!("{} (p = {:.3}, threshold {:.3})\n", p.phenotype, p.prob, p.threshold));
        for c in &p.concepts {
            s.push_str(&format!(
                "    {:.3}  [{}] {}{}\n",
                c.weight,
                c.field,
                c.text,
                if c.linked { "  <- linked to this phenotype" } else { "" }
            ));
        }
    }
    s
}
