//! `ckd explain`: for one sample, the teacher's predicted phenotypes and the concepts that
//! carried the most attention evidence.
//!
//! The evidence is the attention of the last prompt token (the one the head reads), so it is one
//! distribution per sample, shared by every phenotype: it says what the teacher looked at, not why
//! one label in particular. So the concepts are listed once per sample, and each names the
//! listed phenotypes the data itself ties it to (`linked_to`): a diagnosis whose ICD-9 code maps
//! to the phenotype in the HCUP-CCS table, or a knowledge clause about the phenotype.

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
    /// The listed phenotypes the data ties this concept to (see the module docs).
    pub linked_to: Vec<&'static str>,
}

/// One listed phenotype of the explanation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhenotypeExplanation {
    /// Official name.
    pub phenotype: &'static str,
    /// Teacher probability.
    pub prob: f32,
    /// Decision threshold.
    pub threshold: f32,
    /// Texts of the listed concepts (see [`Explanation::concepts`]) that the data ties to this
    /// phenotype, most evidence first.
    pub linked_concepts: Vec<String>,
}

/// Explanation of one sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// Sample id.
    pub id: String,
    /// Field-level evidence (diagnoses, medications, procedures, knowledge).
    pub fields: [f32; 4],
    /// The concepts with the most attention evidence, most first. One list for the sample: the
    /// evidence is shared by every phenotype, not a per-phenotype attribution.
    pub concepts: Vec<ConceptEvidence>,
    /// Always true: says so in the JSON too, where the field names alone might suggest otherwise.
    pub evidence_shared_by_phenotypes: bool,
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
    let names: Vec<(usize, &'static str)> = labels.iter().map(|&l| (l, PHENOTYPES[l].name)).collect();
    let concepts: Vec<ConceptEvidence> = ranked
        .iter()
        .take(top)
        .map(|&ci| {
            let c = &r.concepts[ci];
            ConceptEvidence {
                field: field_name(c.field),
                text: r.text[c.start..c.end].to_string(),
                weight: ev.concepts[ci],
                linked_to: names.iter().filter(|(l, _)| linked(ci, *l)).map(|(_, n)| *n).collect(),
            }
        })
        .collect();
    let phenotypes = names
        .iter()
        .map(|&(l, name)| PhenotypeExplanation {
            phenotype: name,
            prob: ev.probs[l],
            threshold: th(l),
            linked_concepts: concepts.iter().filter(|c| c.linked_to.contains(&name)).map(|c| c.text.clone()).collect(),
        })
        .collect();
    Ok(Explanation {
        id: sample.id.clone(),
        fields: ev.fields,
        concepts,
        evidence_shared_by_phenotypes: true,
        phenotypes,
        none_predicted,
    })
}

/// Plain-text rendering for the terminal: the sample's evidence once, then the phenotypes with
/// the listed concepts the data ties to each.
pub fn format(e: &Explanation) -> String {
    let mut s = format!(
        "sample {}: evidence by field: diagnoses {:.2}, medications {:.2}, procedures {:.2}, knowledge {:.2}\n",
        e.id, e.fields[0], e.fields[1], e.fields[2], e.fields[3]
    );
    s.push_str(
        "concepts with the most attention evidence (one distribution for the sample, shared by every phenotype \
         below: what the teacher read, not why it chose one phenotype):\n",
    );
    for c in &e.concepts {
        s.push_str(&format!("    {:.3}  [{}] {}\n", c.weight, c.field, c.text));
    }
    s.push_str(if e.none_predicted {
        "no phenotype reaches its threshold; the most probable one:\n"
    } else {
        "predicted phenotypes:\n"
    });
    for p in &e.phenotypes {
        s.push_str(&format!("  {} (p = {:.3}, threshold {:.3})", p.phenotype, p.prob, p.threshold));
        if p.linked_concepts.is_empty() {
            s.push_str("; no listed concept is tied to it by the data\n");
        } else {
            s.push_str(&format!("; tied to it by the data: {}\n", p.linked_concepts.join("; ")));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared evidence is printed once, not repeated under every phenotype as if it were
    /// per phenotype; each phenotype names only the concepts tied to it.
    #[test]
    fn shared_evidence_is_printed_once() {
        let concept = |text: &str, weight, linked_to| ConceptEvidence {
            field: "diagnosis",
            text: text.into(),
            weight,
            linked_to,
        };
        let (a, b) = (PHENOTYPES[0].name, PHENOTYPES[1].name);
        let e = Explanation {
            id: "1-2-3".into(),
            fields: [0.5, 0.2, 0.2, 0.1],
            concepts: vec![concept("Heart failure", 0.4, vec![a]), concept("Pneumonia", 0.3, vec![])],
            evidence_shared_by_phenotypes: true,
            phenotypes: vec![
                PhenotypeExplanation {
                    phenotype: a,
                    prob: 0.9,
                    threshold: 0.5,
                    linked_concepts: vec!["Heart failure".into()],
                },
                PhenotypeExplanation { phenotype: b, prob: 0.7, threshold: 0.5, linked_concepts: vec![] },
            ],
            none_predicted: false,
        };
        let text = format(&e);
        assert_eq!(text.matches("Pneumonia").count(), 1, "{text}");
        assert!(text.contains("shared by every phenotype"), "{text}");
        assert!(
            text.contains(&format!("  {a} (p = 0.900, threshold 0.500); tied to it by the data: Heart failure\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("  {b} (p = 0.700, threshold 0.500); no listed concept is tied to it")),
            "{text}"
        );
    }
}
