//! A tiny bundle for tests: a random-init student (H 16, 1 layer) with a WordPiece vocabulary
//! trained on a few rendered visits, a knowledge table with one clause, exported by
//! `ckd_trainer::bundle::write_bundle` as `ckd export` does.
#![allow(dead_code)]

use std::path::Path;

use ckd_core::knowledge::{DrugEffect, KnowledgeConfig, KnowledgeTable};
use ckd_core::visit::{render, Coded, Visit};
use ckd_trainer::export::Precision;
use ckd_trainer::models::bert::{BertForMultiLabel, HeadConfig};
use ckd_trainer::student::{self, Preset, StudentConfig};
use ckd_trainer::text::TextEncoder;

/// Maximum tokens of the test bundle (small, so busy visits are truncated).
pub const MAX_LEN: usize = 48;

fn coded(code: &str, title: &str) -> Coded {
    Coded { code: code.into(), title: title.into() }
}

/// Visits the vocabulary is trained on and the tests send.
pub fn visits() -> Vec<Visit> {
    vec![
        Visit {
            diagnoses: vec![coded("4280", "Heart failure"), coded("5849", "Acute kidney failure")],
            medications: vec!["Furosemide".into(), "Metoprolol Tartrate".into()],
            procedures: vec![coded("3995", "Hemodialysis")],
        },
        Visit {
            diagnoses: vec![coded("0389", "Unspecified septicemia"), coded("78552", "Septic shock")],
            medications: vec!["Vancomycin".into(), "Sodium Chloride 0.9%  Flush".into(), "Heparin".into()],
            procedures: vec![coded("9671", "Cont inv mec ven <96 hrs")],
        },
        Visit { diagnoses: vec![coded("25000", "Diabetes mellitus")], medications: vec![], procedures: vec![] },
        Visit {
            diagnoses: (0..30).map(|i| coded(&format!("4{:02}0", i), "")).collect(),
            medications: (0..40).map(|i| format!("Drug number {i}")).collect(),
            procedures: vec![],
        },
    ]
}

/// The knowledge table of the test bundle: Furosemide for CHF (label 8).
pub fn knowledge() -> KnowledgeTable {
    let mut k = KnowledgeTable::empty(KnowledgeConfig::default());
    k.drugs[8].push(DrugEffect { drug: "Furosemide".into(), effect: 0.2, n_with: 10, n_without: 10 });
    k
}

/// Writes the tiny bundle into `out` (a student directory is made in `work`).
pub fn tiny_bundle(work: &Path, out: &Path, precision: Precision) {
    let table = knowledge();
    let texts: Vec<String> = visits()
        .iter()
        .map(|v| {
            let v = ckd_core::wire::VisitSummary::from_visit(v).unwrap().to_visit().unwrap();
            render(&v, &table.clauses(v.phenotypes())).text
        })
        .collect();
    let enc = TextEncoder::train_wordpiece(texts.iter().map(|s| s.as_str()), 300, MAX_LEN).unwrap();
    let mut bert = Preset::Tiny.config(enc.vocab_size(), MAX_LEN);
    bert.hidden_size = 16;
    bert.num_hidden_layers = 1;
    bert.num_attention_heads = 2;
    bert.intermediate_size = 32;
    let (_model, varmap) =
        BertForMultiLabel::init(&bert, &HeadConfig::default(), &candle_core::Device::Cpu, 5).unwrap();
    let sc = StudentConfig { bert, head: HeadConfig::default(), max_len: MAX_LEN };
    let sdir = work.join("student");
    student::save_student(&sdir, &sc, &varmap, &enc, &[0.5; 25], Some(&table), &serde_json::json!({})).unwrap();
    ckd_trainer::bundle::write_bundle(&sdir, out, precision).unwrap();
}
