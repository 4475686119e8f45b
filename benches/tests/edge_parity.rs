//! The same visits through the trainer's path (candle) and the edge path (bundle in tract):
//! identical token ids, probabilities within 1e-4 (f32) and 0.02 (int8, with and without int8
//! embeddings); bundles with the tensors inside model.onnx still load; a bundle packed into one
//! file predicts as its directory; and a bundle that was tampered with is refused with a
//! message that says what is wrong.

use ckd_core::bundle::{FileEntry, Manifest, MANIFEST_FILE, MODEL_DATA_FILE, MODEL_FILE, TOKENIZER_FILE};
use ckd_core::visit::Split;
use ckd_edge::{EdgeError, Engine, EngineOptions};
use ckd_trainer::export::{BuildOptions, Precision};
use ckd_trainer::ingest::{ingest_mimic, IngestConfig};
use ckd_trainer::models::bert::{BertForMultiLabel, HeadConfig};
use ckd_trainer::student::{self, Preset, StudentConfig, TokenizedSamples, TrainConfig};
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
    let (tp, vp) = (TokenizedSamples::new(&train, &enc).unwrap(), TokenizedSamples::new(&val, &enc).unwrap());
    assert!(vp.truncated > 0, "fixture should include truncated inputs");
    let work = tempfile::tempdir().unwrap();
    let distill = ckd_trainer::distill::DistillConfig { hard: 1.0, soft: 0.0, ..Default::default() };
    let cfg = TrainConfig { epochs: 1, lr: 2e-3, patience: 0, distill, ..Default::default() };
    let run = student::TrainLoop {
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
    let knowledge = ing.file.knowledge.as_ref();
    student::save_student(sdir.path(), &sc, &varmap, &enc, &out.thresholds, knowledge, &serde_json::json!({})).unwrap();
    let student = sdir.path().to_path_buf();
    Fixture { _dirs: vec![data, work, sdir], student, val, knowledge: ing.file.knowledge }
}

#[test]
fn trainer_and_edge_agree_and_tampering_is_refused() {
    let f = fixture();
    let st = student::load_student(&f.student).unwrap();
    let prepared = TokenizedSamples::new(&f.val, &st.encoder).unwrap();
    let want = student::predict(&st.model, &prepared, st.encoder.pad_id, 8).unwrap();
    let bundles = tempfile::tempdir().unwrap();
    // (name, build, tolerance vs the candle model)
    let int8_emb = BuildOptions { int8_embeddings: true, ..BuildOptions::new(Precision::Int8) };
    let builds = [
        ("f32", BuildOptions::new(Precision::F32), 1e-4f32),
        ("int8", BuildOptions::new(Precision::Int8), 0.02),
        ("int8-emb", int8_emb, 0.02),
    ];
    for (name, build, tol) in builds {
        let dir = bundles.path().join(name);
        ckd_trainer::bundle::write_bundle_with(&f.student, &dir, build).unwrap();
        // The tensors live in model.onnx.data; model.onnx holds the graph (and small constants).
        let size = |f: &str| std::fs::metadata(dir.join(f)).unwrap().len();
        assert!(size(MODEL_DATA_FILE) > size(MODEL_FILE), "{name}: tensors not external");
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
        assert!(worst <= tol, "{name}: max |prob diff| {worst} > {tol}");
        eprintln!("{name}: max |prob diff| trainer vs edge = {worst:.2e}");
        assert!(matches!(engine.predict_text("  "), Err(EdgeError::EmptyInput { .. })));
    }

    // A bundle in the single-file layout (tensors inside model.onnx, no data file) loads and
    // gives the same probabilities as the f32 bundle.
    let single = bundles.path().join("single");
    std::fs::create_dir_all(&single).unwrap();
    ckd_trainer::export::export_student(&f.student, &single.join(MODEL_FILE), Precision::F32).unwrap();
    std::fs::copy(bundles.path().join("f32").join(TOKENIZER_FILE), single.join(TOKENIZER_FILE)).unwrap();
    let mut m = Manifest::from_bytes(&std::fs::read(bundles.path().join("f32").join(MANIFEST_FILE)).unwrap()).unwrap();
    m.files = [MODEL_FILE, TOKENIZER_FILE]
        .iter()
        .map(|n| FileEntry::of(n, &std::fs::read(single.join(n)).unwrap()))
        .collect();
    std::fs::write(single.join(MANIFEST_FILE), m.to_bytes().unwrap()).unwrap();
    let text = f.val[0].text();
    let a = Engine::open(&single).unwrap().predict_text(&text).unwrap();
    let b = Engine::open(&bundles.path().join("f32")).unwrap().predict_text(&text).unwrap();
    assert_eq!(a.probs, b.probs);

    // The int8-embeddings bundle packed into one file opens like the directory and predicts the
    // same; a damaged, truncated or foreign file is refused, saying what is wrong.
    let packed = bundles.path().join("int8-emb.ckdb");
    let r = ckd_trainer::bundle::pack_bundle(&bundles.path().join("int8-emb"), &packed).unwrap();
    assert_eq!(r.files[0].0, MANIFEST_FILE);
    assert_eq!(r.files.len(), 4, "{:?}", r.files);
    let from_dir = Engine::open(&bundles.path().join("int8-emb")).unwrap();
    let from_file = Engine::open(&packed).unwrap();
    assert_eq!(from_file.manifest(), from_dir.manifest());
    for s in f.val.iter().take(6) {
        assert_eq!(from_file.predict_text(&s.text()).unwrap().probs, from_dir.predict_text(&s.text()).unwrap().probs);
    }
    drop((from_dir, from_file));
    let mut bytes = std::fs::read(&packed).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0x01; // inside the last file (tokenizer.json)
    let damaged = bundles.path().join("damaged.ckdb");
    std::fs::write(&damaged, &bytes).unwrap();
    let e = Engine::open(&damaged).err().unwrap().to_string();
    assert!(e.contains("tokenizer.json: sha256 mismatch"), "{e}");
    std::fs::write(&damaged, &bytes[..n / 2]).unwrap();
    let e = Engine::open(&damaged).err().unwrap().to_string();
    assert!(e.contains("truncated"), "{e}");
    let e = Engine::open(&bundles.path().join("int8-emb").join(TOKENIZER_FILE)).err().unwrap().to_string();
    assert!(e.contains("not a CKDPACKD file"), "{e}");

    // More than one thread without the `threads` feature is refused, and says why.
    if !ckd_edge::THREADS_SUPPORTED {
        let opts = EngineOptions { threads: 2, ..Default::default() };
        let e = Engine::open_with(&bundles.path().join("f32"), &opts).err().unwrap().to_string();
        assert!(e.contains("threads") && e.contains("feature"), "{e}");
    }

    // Tampering: a changed or missing data file, a changed model file, a missing tokenizer, a
    // truncated manifest.
    let dir = bundles.path().join("int8-emb");
    let data = dir.join(MODEL_DATA_FILE);
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&data, &bytes).unwrap();
    let e = Engine::open(&dir).err().unwrap().to_string();
    assert!(e.contains("model.onnx.data: sha256 mismatch"), "{e}");
    std::fs::remove_file(&data).unwrap();
    let e = Engine::open(&dir).err().unwrap().to_string();
    assert!(e.contains("model.onnx.data: missing"), "{e}");
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
