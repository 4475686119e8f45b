//! Criterion benchmarks of ckd-ehr live in `benches/benches/`; this library only holds shared
//! fixtures for them.

use std::path::Path;

/// Patients in a MIMIC-III-sized synthetic cohort (MIMIC-III v1.4 has 46,520 patients and
/// 58,976 admissions).
pub const MIMIC_PATIENTS: usize = 46_520;

/// Writes a synthetic cohort of `patients` patients into `dir` (seed 7).
pub fn write_cohort(patients: usize, dir: &Path) -> Result<(), ckd_trainer::synth::SynthError> {
    let cfg = ckd_trainer::synth::SynthConfig { patients, seed: 7, ..Default::default() };
    ckd_trainer::synth::write_cohort(&ckd_trainer::synth::generate(&cfg), dir).map(|_| ())
}

/// Test fixture for the edge runtime, C library and CLI: a tiny random-weight student (BERT
/// H 32, 2 layers, WordPiece vocabulary trained on a small synthetic cohort, max length 64 so
/// that long inputs are truncated, knowledge table included) exported as a bundle into
/// `dir/bundle` with `precision`, plus `dir/rows.jsonl`: 24 CKD-EHR rows of the cohort's
/// held-out samples. The classifier is scaled so probabilities spread over (0, 1), and the
/// thresholds vary per label, so decisions are not all alike. Deterministic for a given build.
pub fn write_tiny_bundle(dir: &Path, precision: ckd_trainer::export::Precision) -> anyhow::Result<()> {
    use ckd_core::visit::Split;
    use ckd_trainer::models::bert::{BertForMultiLabel, Config, HeadConfig};
    use ckd_trainer::student::{save_student, StudentConfig};

    let data = tempfile::tempdir()?;
    let cohort = ckd_trainer::synth::SynthConfig { patients: 400, seed: 9, ..Default::default() };
    ckd_trainer::synth::write_cohort(&ckd_trainer::synth::generate(&cohort), data.path())?;
    let ing = ckd_trainer::ingest::ingest_mimic(data.path(), &Default::default(), &mut |_, _| {})?;
    let texts: Vec<String> = ing.file.samples.iter().filter(|s| s.split == Split::Train).map(|s| s.text()).collect();
    let max_len = 64;
    let enc = ckd_trainer::text::TextEncoder::train_wordpiece(texts.iter().map(String::as_str), 400, max_len)?;
    let bert = Config { vocab_size: enc.vocab_size(), max_position_embeddings: max_len, ..Config::tiny() };
    let head = HeadConfig::default();
    let (_, varmap) = BertForMultiLabel::init(&bert, &head, &candle_core::Device::Cpu, 11)?;
    {
        let data = varmap.data().lock().map_err(|_| anyhow::anyhow!("varmap lock poisoned"))?;
        let w = data.get("classifier.weight").ok_or_else(|| anyhow::anyhow!("no classifier.weight"))?;
        w.set(&(w.as_tensor() * 40.0)?)?;
    }
    let thresholds: Vec<f32> = (0..ckd_core::NUM_LABELS).map(|l| 0.3 + 0.4 * (l % 5) as f32 / 4.0).collect();
    let student = data.path().join("student");
    let sc = StudentConfig { bert, head, max_len };
    save_student(&student, &sc, &varmap, &enc, &thresholds, ing.file.knowledge.as_ref(), &serde_json::json!({}))?;
    ckd_trainer::bundle::write_bundle(&student, &dir.join("bundle"), precision)?;
    let mut rows = String::new();
    for s in ing.file.samples.iter().filter(|s| s.split != Split::Train).take(24) {
        rows.push_str(&ckd_core::jsonl::to_line(
            ckd_core::jsonl::INSTRUCTION,
            &s.text(),
            &ckd_core::jsonl::render_output(s.labels),
        ));
    }
    std::fs::write(dir.join("rows.jsonl"), rows)?;
    Ok(())
}

/// A MiniLM-L6-size student (H 384, 6 layers, 12 heads, I 1536, vocab 30522, random weights,
/// seed 5) exported as bundles `dir/f32`, `dir/int8` and `dir/int8-emb` (int8 with int8 word
/// embeddings) with `max_len` tokens. The tokenizer
/// is all-MiniLM-L6-v2's `tokenizer.json` when `CKD_MINILM_DIR` holds one (scripts/fetch_models.sh),
/// else a WordPiece trained on a small synthetic cohort. For latency, memory and size figures:
/// timing does not depend on the weights' values.
pub fn write_minilm_bundles(dir: &Path, max_len: usize) -> anyhow::Result<()> {
    use ckd_trainer::export::Precision;
    use ckd_trainer::models::bert::{BertForMultiLabel, Config, HeadConfig};
    use ckd_trainer::student::{save_student, StudentConfig};
    use ckd_trainer::text::TextEncoder;

    let work = tempfile::tempdir()?;
    let real = std::env::var_os("CKD_MINILM_DIR").map(|d| Path::new(&d).join("tokenizer.json")).filter(|p| p.exists());
    let enc = match real {
        Some(p) => TextEncoder::from_file(&p, max_len)?,
        None => {
            let cohort = ckd_trainer::synth::SynthConfig { patients: 400, seed: 9, ..Default::default() };
            ckd_trainer::synth::write_cohort(&ckd_trainer::synth::generate(&cohort), work.path())?;
            let ing = ckd_trainer::ingest::ingest_mimic(work.path(), &Default::default(), &mut |_, _| {})?;
            let texts: Vec<String> = ing.file.samples.iter().map(|s| s.text()).collect();
            TextEncoder::train_wordpiece(texts.iter().map(String::as_str), 4000, max_len)?
        }
    };
    let bert = Config { max_position_embeddings: max_len.max(512), ..Config::minilm_l6() };
    let head = HeadConfig::default();
    let (_, varmap) = BertForMultiLabel::init(&bert, &head, &candle_core::Device::Cpu, 5)?;
    let student = work.path().join("student");
    let sc = StudentConfig { bert, head, max_len };
    save_student(&student, &sc, &varmap, &enc, &[0.5; ckd_core::NUM_LABELS], None, &serde_json::json!({}))?;
    for p in [Precision::F32, Precision::Int8] {
        ckd_trainer::bundle::write_bundle(&student, &dir.join(p.as_str()), p)?;
    }
    let int8_emb = ckd_trainer::export::BuildOptions {
        int8_embeddings: true,
        ..ckd_trainer::export::BuildOptions::new(Precision::Int8)
    };
    ckd_trainer::bundle::write_bundle_with(&student, &dir.join("int8-emb"), int8_emb)?;
    Ok(())
}

/// A visit text of exactly `tokens` tokens (`[CLS]` and `[SEP]` included) for `engine`'s
/// tokenizer, or `None` when no prefix of the filler text has that many.
pub fn text_of_tokens(engine: &ckd_edge::Engine, tokens: usize) -> Option<String> {
    let sentence = "Diseases: chronic kidney disease, essential hypertension, type 2 diabetes mellitus \
        with renal complications, congestive heart failure. Medications: furosemide, insulin, \
        lisinopril, atorvastatin, aspirin. Surgical operations: hemodialysis. ";
    let filler = sentence.repeat(1 + tokens / 8);
    let words: Vec<&str> = filler.split_whitespace().collect();
    let count = |n: usize| engine.tokenize(&words[..n].join(" ")).map(|(ids, _)| ids.len()).unwrap_or(0);
    // Token count grows with the word count: the largest n with count(n) <= tokens, then pad.
    let (mut lo, mut hi) = (1usize, words.len());
    if count(hi) < tokens {
        return None;
    }
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if count(mid) <= tokens {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let mut text = words[..lo].join(" ");
    // Top up one-token words ("a") to hit the count exactly.
    while engine.tokenize(&text).ok()?.0.len() < tokens {
        text.push_str(" a");
    }
    (engine.tokenize(&text).ok()?.0.len() == tokens).then_some(text)
}
