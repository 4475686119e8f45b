//! The same visits through the trainer's path (candle) and the edge path (bundle in tract):
//! identical token ids, probabilities within 1e-4 (f32) and 0.02 (int8); and a bundle that was
//! tampered with is refused with a message that says what is wrong.

use ckd_core::visit::Split;
use ckd_edge::{EdgeError, Engine};
use ckd_trainer::export::Precision;
use ckd_trainer::ingest::{ingest_mimic, IngestConfig};
use ckd_trainer::models::bert::{BertForMultiLabel, HeadConfig};
use ckd_trainer::student::{self, Prepared, Preset, StudentConfig, TrainConfig};
use ckd_trainer::synth::{generate, write_cohort, SynthConfig};
use ckd_trainer::text::TextEncoder;

struct Fixture {
    _dirs: Vec<tempfile::TempDir>,
    student: std::path::PathBuf,
    val: Vec<ckd_core::Sample>,
    knowledge: Option<ckd_core::knowledge::KnowledgeTable>,
}

/// A tiny student trained for a few steps on a small synthetic cohort, saved like `ckd student train`.
fn fixture() -> Fixture {
    let data = tempfile::tempdir().unwrap();
    write_cohort(&generate(&SynthConfig { patients: 1200, seed: 9, ..Default::default() }), data.path()).unwrap();
    let ing = ingest_mimic(data.path(), &IngestConfig::default(), &mut |_, _| {}).unwrap();
    let train: Vec<_> = ing.file.samples.iter().filter(|s| s.split == Split::Train).take(64).cloned().collect();
    let val: Vec<_> = ing.file.samples.iter().filter(|s| s.split != Split::Train).take(24).cloned().collect();
    let texts: Vec<String> = train.iter().map(|s| s.text()).collect();
    // max_len 64 makes some inputs truncated, so the shared truncation rule is exercised.
    let enc = TextEncoder::train_wordpiece(texts.iter().map(|s| s.as_str()), 500, 64).unwrap();
    let bert = Preset::Tiny.config(enc.vocab_size(), 64);
    let (model, varmap) = BertForMultiLabel::init(&bert, &HeadConfig::default(), &candle_core::Device::Cpu, 3).unwrap();
    let (tp, vp) = (Prepared::new(&train, &enc).unwrap(), Prepared::new(&val, &enc).unwrap());
    assert!(vp.truncated > 0, "fixture should include truncated inputs");
    let work = tempfile::tempdir().unwrap();
    let distill = ckd_trainer::distill::DistillConfig { hard: 1.0, soft: 0.0, ..Default::default() };
    let cfg = TrainConfig { epochs: 1, lr: 2e-3, patience: 0, distill, ..Default::default() };
    let run = student::Run {
        model: &model,
        varmap: &varmap,
        encoder: &enc,
        train: &tp,
        val: &vp,
        teacher: None,
        cfg: &cfg,
        dir: work.path(),
        progress: &indicatif::ProgressBar::hidden(),
    };
    let out = student::train(&run, false).unwrap();
    let sdir = tempfile::tempdir().unwrap();
    let sc = StudentConfig { bert, head: HeadConfig::default(), max_len: 64 };
    student::save_student(sdir.path(), &sc, &varmap, &enc, &out.thresholds, &serde_json::json!({})).unwrap();
    std::fs::write(sdir.path().join("knowledge.json"), serde_json::to_string(&ing.file.knowledge).unwrap()).unwrap();
    let student = sdir.path().to_path_buf();
    Fixture { _dirs: vec![data, work, sdir], student, val, knowledge: ing.file.knowledge }
}

#[test]
fn trainer_and_edge_agree_and_tampering_is_refused() {
    let f = fixture();
    let st = student::load_student(&f.student).unwrap();
    let prepared = Prepared::new(&f.val, &st.encoder).unwrap();
    let want = student::predict(&st.model, &prepared, st.encoder.pad_id, 8).unwrap();
    let bundles = tempfile::tempdir().unwrap();
    for (precision, tol) in [(Precision::F32, 1e-4f32), (Precision::Int8, 0.02)] {
        let dir = bundles.path().join(precision.as_str());
        ckd_trainer::bundle::write_bundle(&f.student, &dir, precision).unwrap();
        let engine = Engine::open(&dir).unwrap();
        assert!(engine.manifest().knowledge == f.knowledge, "knowledge table differs after the bundle round trip");
        let texts: Vec<String> = f.val.iter().map(|s| s.text()).collect();
        for (i, t) in texts.iter().enumerate() {
            let (ids, truncated) = engine.tokenize(t).unwrap();
            assert_eq!(ids, prepared.enc[i].ids, "token ids differ for sample {i}");
            assert_eq!(truncated, prepared.enc[i].truncated);
        }
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        let batch = engine.predict_batch(&refs).unwrap();
        let mut worst = 0f32;
        for (i, p) in batch.iter().enumerate() {
            for l in 0..25 {
                worst = worst.max((p.probs[l] - want[i * 25 + l]).abs());
            }
            // Batched equals one at a time (int8: within its tolerance, since dynamic activation
            // scales are per tensor, so the batch's other rows shift them); predict(&Visit)
            // renders the same text.
            let single = engine.predict_text(refs[i]).unwrap();
            assert!(single.probs.iter().zip(&p.probs).all(|(a, b)| (a - b).abs() <= tol.max(1e-5)));
            let by_visit = engine.predict(&f.val[i].visit).unwrap();
            assert_eq!(by_visit.probs, single.probs);
            assert_eq!(p.top_k.len(), ckd_edge::TOP_K);
            assert!(p.top_k.windows(2).all(|w| w[0].1 >= w[1].1));
        }
        assert!(worst <= tol, "{}: max |prob diff| {worst} > {tol}", precision.as_str());
        eprintln!("{}: max |prob diff| trainer vs edge = {worst:.2e}", precision.as_str());
        assert!(matches!(engine.predict_text("  "), Err(EdgeError::EmptyInput { .. })));
    }

    // Tampering: a changed model file, a missing tokenizer, a truncated manifest.
    let dir = bundles.path().join("f32");
    let model = dir.join("model.onnx");
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&model, &bytes).unwrap();
    let e = Engine::open(&dir).err().unwrap().to_string();
    assert!(e.contains("model.onnx: sha256 mismatch"), "{e}");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let e = Engine::open(&dir).err().unwrap().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    let man = bundles.path().join("int8/manifest.bin");
    let m = std::fs::read(&man).unwrap();
    std::fs::write(&man, &m[..m.len() - 3]).unwrap();
    let e = Engine::open(&bundles.path().join("int8")).err().unwrap().to_string();
    assert!(e.contains("manifest.bin: truncated"), "{e}");
}
