//! `ckd-edge explain`: a prediction with the occlusion of each concept of the visit
//! (`Engine::occlude`), one JSON record per input line.

use anyhow::Result;
use ckd_core::visit::Field;
use ckd_core::PHENOTYPES;
use ckd_edge::{Engine, Occlusion};
use serde_json::{json, Value};

use crate::{answer_lines, prediction_json, Item};

/// Explains each non-blank input line (a Visit or a CKD-EHR row, as `predict` reads them);
/// `top`: concepts listed per phenotype.
pub fn run(engine: &Engine, input: &str, lenient: bool, max_line: usize, top: usize) -> Result<()> {
    answer_lines(("explain", "explained"), input, lenient, max_line, |n, item| {
        let at_line = |e: &dyn std::fmt::Display| anyhow::anyhow!("line {n}: {e}");
        let (id, occlusion, bare) = match item {
            Item::Text { id, text } => (id, engine.occlude_text(&text).map_err(|e| at_line(&e))?, None),
            Item::Visit { id, visit } => {
                let (visit, bare) = visit.resolve_titles().map_err(|e| at_line(&e))?;
                (id, engine.occlude(&visit).map_err(|e| at_line(&e))?, Some(bare))
            }
        };
        let mut rec = explanation_json(n, id, &occlusion, top);
        if let Some(bare) = bare {
            rec["unknown_codes"] = json!(bare);
        }
        Ok(rec)
    })
}

/// The lower-case name of a field, as the JSON of a `Visit` spells it.
fn field_name(f: Field) -> &'static str {
    match f {
        Field::Diagnoses => "diagnoses",
        Field::Medications => "medications",
        Field::Procedures => "procedures",
        Field::Knowledge => "knowledge",
    }
}

/// The prediction's record (as `predict` writes it) plus `text`, `concepts` (text, field, byte
/// span and `effect`, the 25 effects in label order, of each, in text order) and `occlusion`: for each of the top phenotypes and any
/// other positive one, the `top` concepts of largest effect (probability with the concept
/// minus without it), largest first.
fn explanation_json(n: usize, id: Option<Value>, o: &Occlusion, top: usize) -> Value {
    let p = &o.prediction;
    let mut rec = prediction_json(n, id, p);
    let concepts: Vec<Value> = (0..o.concepts.len())
        .map(|i| {
            let c = &o.concepts[i];
            json!({
                "text": o.concept_text(i),
                "field": field_name(c.field),
                "start": c.start,
                "end": c.end,
                "effect": c.effect,
            })
        })
        .collect();
    let mut labels: Vec<u8> = p.top_k.iter().map(|&(l, _)| l).collect();
    labels.extend(p.positive.iter().filter(|l| !labels.contains(l)).collect::<Vec<_>>());
    let occlusion: Vec<Value> = labels
        .iter()
        .map(|&l| {
            let ranked: Vec<Value> = o
                .ranked(l)
                .into_iter()
                .take(top)
                .map(|i| json!({"concept": i, "text": o.concept_text(i), "effect": o.concepts[i].effect[l as usize]}))
                .collect();
            json!({
                "label": PHENOTYPES[l as usize].name,
                "probability": p.probs[l as usize],
                "positive": p.positive.contains(l),
                "concepts": ranked,
            })
        })
        .collect();
    rec["text"] = json!(o.text);
    rec["concepts"] = json!(concepts);
    rec["occlusion"] = json!(occlusion);
    rec
}
