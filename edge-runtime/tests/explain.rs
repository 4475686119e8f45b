//! `Engine::occlude` / `Engine::occlude_text` on the tiny test bundle (`testdata/tiny`): the
//! concept spans are those of `ckd-core`, each effect equals a separate prediction on the text
//! without that concept, visits and their texts explain alike, concepts past the maximum length
//! have no effect, and bad inputs are typed errors.

use std::path::{Path, PathBuf};

use ckd_core::visit::{parse_spans, render, Coded, Field, Visit};
use ckd_core::NUM_LABELS;
use ckd_edge::{EdgeError, Engine};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/tiny")
}

fn engine() -> Engine {
    Engine::open(&fixture().join("bundle")).unwrap()
}

fn coded(title: &str) -> Coded {
    Coded { code: String::new(), title: title.into() }
}

/// A short visit (well under the bundle's 64 tokens) with one item per field.
fn short_visit() -> Visit {
    Visit {
        diagnoses: vec![coded("Essential hypertension"), coded("Chronic kidney disease (ckd)")],
        medications: vec!["Furosemide".into(), "Insulin".into()],
        procedures: vec![coded("Hemodialysis")],
    }
}

#[test]
fn effects_are_predictions_without_each_concept() {
    let engine = engine();
    let visit = short_visit();
    let o = engine.occlude(&visit).unwrap();
    let rendered = engine.render(&visit).unwrap();
    // The spans at the edge are ckd-core's, for the text the engine predicts on.
    assert_eq!(o.text, rendered.text);
    let spans: Vec<_> = o.concepts.iter().map(|c| (c.field, c.start, c.end)).collect();
    let want: Vec<_> = rendered.concepts.iter().map(|c| (c.field, c.start, c.end)).collect();
    assert_eq!(spans, want);
    assert!(spans.len() >= 5, "{spans:?}");
    assert_eq!(o.prediction, engine.predict(&visit).unwrap());
    assert!(!o.prediction.truncated, "the short visit fits the bundle");
    let mut moved = 0;
    for (i, c) in o.concepts.iter().enumerate() {
        let without = engine.predict_text(&rendered.without(i).unwrap().text).unwrap();
        for l in 0..NUM_LABELS {
            let want = o.prediction.probs[l] - without.probs[l];
            assert!((c.effect[l] - want).abs() < 1e-6, "concept {i} label {l}: {} vs {want}", c.effect[l]);
        }
        moved += usize::from(c.effect.iter().any(|&e| e != 0.0));
    }
    assert!(moved > 0, "some concept must move some probability");
    assert_eq!(o.concept_text(0), Some("Essential hypertension"));
    assert_eq!(o.concepts[4].field, Field::Procedures);
    // Ranking: largest effect on the label first.
    let top = o.prediction.top_k[0].0;
    let r = o.ranked(top);
    assert_eq!(r.len(), o.concepts.len());
    for w in r.windows(2) {
        assert!(o.concepts[w[0]].effect[top as usize] >= o.concepts[w[1]].effect[top as usize]);
    }
}

#[test]
fn a_text_explains_as_its_visit() {
    let engine = engine();
    let visit = short_visit();
    let from_visit = engine.occlude(&visit).unwrap();
    let from_text = engine.occlude_text(&from_visit.text).unwrap();
    assert_eq!(from_text, from_visit);
}

#[test]
fn concepts_past_the_maximum_length_have_no_effect() {
    let engine = engine();
    let rows = std::fs::read_to_string(fixture().join("rows.jsonl")).unwrap();
    let text = ckd_core::jsonl::parse(&rows).unwrap().remove(0).input;
    let o = engine.occlude_text(&text).unwrap();
    assert!(o.prediction.truncated, "the row is longer than 64 tokens");
    assert_eq!(o.concepts.len(), parse_spans(&text).unwrap().concepts.len());
    let last = o.concepts.last().unwrap();
    assert!(last.effect.iter().all(|&e| e == 0.0), "{:?}", last.effect);
    assert!(o.concepts[0].effect.iter().any(|&e| e != 0.0));
}

#[test]
fn bad_inputs_are_typed_errors() {
    let engine = engine();
    let e = engine.occlude_text("Diseases: Essential hypertension.").unwrap_err();
    assert!(matches!(e, EdgeError::Layout), "{e}");
    assert!(e.to_string().contains("not in the CKD-EHR layout"), "{e}");
    assert!(matches!(engine.occlude(&Visit::default()), Err(EdgeError::EmptyVisit)));
    let long = "a ".repeat(ckd_edge::MAX_INPUT_BYTES);
    assert!(matches!(engine.occlude_text(&long), Err(EdgeError::InputTooLong { .. })));
    // A visit of one item: leaving it out leaves every field `None`, still a valid text.
    let one = Visit { medications: vec!["Heparin".into()], ..Default::default() };
    let o = engine.occlude(&one).unwrap();
    assert_eq!(o.concepts.len(), render(&one, &[]).concepts.len());
    assert_eq!(o.concepts.len(), 1);
}
