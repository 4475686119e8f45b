//! `Engine` on the tiny test bundle (`edge-runtime/testdata/tiny`, see its README): bad inputs
//! (empty text, over-long text truncated and flagged) and bad bundles (corrupt or truncated
//! files, wrong label-space hash, wrong label names), and batch vs single predictions.

use std::path::{Path, PathBuf};

use ckd_core::bundle::{Manifest, MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE};
use ckd_edge::{EdgeError, Engine, EngineOptions};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/tiny")
}

/// A copy of the tiny bundle in a temporary directory, to damage.
fn copy_bundle() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in [MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE] {
        std::fs::copy(fixture().join("bundle").join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn open_err(dir: &Path) -> String {
    match Engine::open(dir) {
        Ok(_) => panic!("{} opened", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn row_texts() -> Vec<String> {
    let text = std::fs::read_to_string(fixture().join("rows.jsonl")).unwrap();
    ckd_core::jsonl::parse(&text).unwrap().into_iter().map(|r| r.input).collect()
}

#[test]
fn inputs_empty_long_and_batched() {
    let engine = Engine::open(&fixture().join("bundle")).unwrap();
    assert_eq!(engine.manifest().tokenizer.max_len, 64);
    for empty in ["", " ", "\n\t "] {
        assert!(matches!(engine.predict_text(empty), Err(EdgeError::EmptyInput { index: 0 })), "{empty:?}");
    }
    let e = engine.predict_batch(&["Diseases: Essential hypertension.", ""]).err().unwrap();
    assert!(matches!(e, EdgeError::EmptyInput { index: 1 }), "{e}");
    // A visit with no item is refused, not answered with the model's prior (it came back
    // positive for "Shock"); one item is enough.
    let e = engine.predict(&ckd_core::visit::Visit::default()).err().unwrap();
    assert!(matches!(e, EdgeError::EmptyVisit), "{e}");
    assert!(e.to_string().contains("no diagnoses, medications or procedures"), "{e}");
    let one = ckd_core::visit::Visit { medications: vec!["Heparin".into()], ..Default::default() };
    engine.predict(&one).unwrap();

    // Over-long: cut to max_len tokens, ending in [SEP], flagged.
    let texts = row_texts();
    let long = texts.iter().map(|t| t.repeat(10)).next().unwrap();
    let p = engine.predict_text(&long).unwrap();
    assert!(p.truncated);
    assert_eq!(p.tokens, 64);
    let (ids, truncated) = engine.tokenize(&long).unwrap();
    assert!(truncated);
    assert_eq!(ids.len(), 64);
    assert_eq!(ids[63], engine.manifest().tokenizer.sep_id);
    assert_eq!(ids[0], engine.manifest().tokenizer.cls_id);
    let short = engine.predict_text("Diseases: Essential hypertension. Medications: None.").unwrap();
    assert!(!short.truncated);
    assert!(short.tokens < 64);
    assert!(short.probs.iter().all(|p| (0.0..=1.0).contains(p)));
    // Decisions are the bundle's thresholds applied to the probabilities.
    for (l, (&q, &t)) in short.probs.iter().zip(&engine.manifest().thresholds).enumerate() {
        assert_eq!(short.positive.contains(l as u8), q >= t, "label {l}");
    }

    // A batch (padded, int8 activation scales shared by the batch) is within the int8
    // tolerance of one call per text.
    let refs: Vec<&str> = texts.iter().map(String::as_str).chain(["Diseases: Essential hypertension."]).collect();
    let batch = engine.predict_batch(&refs).unwrap();
    assert_eq!(batch.len(), refs.len());
    for (t, b) in refs.iter().zip(&batch) {
        let one = engine.predict_text(t).unwrap();
        let d = one.probs.iter().zip(&b.probs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(d <= 0.02, "batch vs single: {d}");
        assert_eq!((one.truncated, one.tokens), (b.truncated, b.tokens));
    }
    assert!(engine.predict_batch(&[]).unwrap().is_empty());
}

#[test]
fn damaged_bundles_are_refused_with_a_reason() {
    // Model file changed.
    let d = copy_bundle();
    let model = d.path().join(MODEL_FILE);
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x01;
    std::fs::write(&model, &bytes).unwrap();
    assert!(open_err(d.path()).contains("model.onnx: sha256 mismatch"));

    // Model file truncated.
    let d = copy_bundle();
    let model = d.path().join(MODEL_FILE);
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    assert!(open_err(d.path()).contains("model.onnx: sha256 mismatch"));

    // Manifest truncated, or empty.
    let d = copy_bundle();
    let man = d.path().join(MANIFEST_FILE);
    let m = std::fs::read(&man).unwrap();
    std::fs::write(&man, &m[..m.len() - 1]).unwrap();
    assert!(open_err(d.path()).contains("manifest.bin: truncated"));
    std::fs::write(&man, b"").unwrap();
    assert!(open_err(d.path()).contains("manifest.bin: truncated"));

    // Manifest made for another label space: header bytes 10..18 hold the label-space hash.
    let mut other = m.clone();
    other[10] ^= 0xff;
    std::fs::write(&man, &other).unwrap();
    let e = open_err(d.path());
    assert!(e.contains("manifest.bin: label space differs"), "{e}");

    // A well-formed manifest with other label names (the hash matches this build).
    let mut manifest = Manifest::from_bytes(&m).unwrap();
    manifest.labels.swap(0, 1);
    std::fs::write(&man, manifest.to_bytes().unwrap()).unwrap();
    let e = open_err(d.path());
    assert!(e.contains("label 0 is \"Acute cerebrovascular disease\""), "{e}");

    // Tokenizer missing.
    let d = copy_bundle();
    std::fs::remove_file(d.path().join(TOKENIZER_FILE)).unwrap();
    let e = open_err(d.path());
    assert!(e.contains("tokenizer.json") && e.contains("No such file"), "{e}");

    // A model that is not ONNX, with a manifest that vouches for it: refused by tract, no panic.
    let d = copy_bundle();
    let man = d.path().join(MANIFEST_FILE);
    let mut manifest = Manifest::from_bytes(&std::fs::read(&man).unwrap()).unwrap();
    let junk = b"definitely not an onnx protobuf".to_vec();
    std::fs::write(d.path().join(MODEL_FILE), &junk).unwrap();
    manifest.files[0] = ckd_core::bundle::FileEntry::of(MODEL_FILE, &junk);
    std::fs::write(&man, manifest.to_bytes().unwrap()).unwrap();
    let e = open_err(d.path());
    assert!(e.starts_with("model: "), "{e}");
}

/// Two threads (the `threads` feature) predict what one thread predicts; without the feature,
/// asking for two is an error that names the feature.
#[test]
fn threads_match_one_thread_or_are_refused() {
    let dir = fixture().join("bundle");
    let two = Engine::open_with(&dir, &EngineOptions { threads: 2, ..Default::default() });
    if !ckd_edge::THREADS_SUPPORTED {
        let e = two.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("`threads` feature"), "{e}");
        return;
    }
    let (one, two) = (Engine::open(&dir).unwrap(), two.unwrap());
    let texts = row_texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (a, b) = (one.predict_batch(&refs).unwrap(), two.predict_batch(&refs).unwrap());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let d = x.probs.iter().zip(&y.probs).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        assert!(d <= 1e-5, "row {i}: 1 vs 2 threads differ by {d}");
    }
}

#[test]
fn profile_lists_every_plan_node_slowest_first() {
    let engine = Engine::open(&fixture().join("bundle")).unwrap();
    let nodes = engine.profile_text("Diseases: Essential hypertension. Medications: Heparin.", 2).unwrap();
    assert!(nodes.iter().any(|n| n.op.contains("MatMul")), "{nodes:?}");
    assert!(nodes.iter().all(|n| n.ms >= 0.0 && n.ms.is_finite()));
    assert!(nodes.windows(2).all(|w| w[0].ms >= w[1].ms), "sorted slowest first");
    assert!(matches!(engine.profile_text(" ", 1), Err(EdgeError::EmptyInput { index: 0 })));
}

/// The fused ops split their rows over the engine's pool: the same bits as on one thread,
/// including uneven splits (rows not a multiple of the threads or of the kernel's tile).
#[cfg(feature = "threads")]
#[test]
fn fused_ops_give_the_same_bits_on_two_threads() {
    use ckd_edge::ops::attention::{attend, Dims};
    use ckd_edge::ops::qlinear::PackedLinear;
    use tract_onnx::prelude::multithread::{multithread_tract_scope, Executor};
    let two = Executor::multithread(2);
    let (m, k, n) = (45, 40, 100);
    let w: Vec<i8> = (0..k * n).map(|i| ((i * 37) % 255) as u8 as i8).collect();
    let a: Vec<u8> = (0..m * k).map(|i| ((i * 13) % 256) as u8).collect();
    let lin = PackedLinear::new(&w, k, n, &vec![0.01; n], &vec![0.5; n]).unwrap();
    let (mut one_out, mut two_out) = (vec![0f32; m * n], vec![0f32; m * n]);
    lin.run(&a, m, 0.02, 100, &mut one_out).unwrap();
    multithread_tract_scope(two.clone(), || lin.run(&a, m, 0.02, 100, &mut two_out)).unwrap();
    assert_eq!(one_out, two_out, "int8 linear");
    let d = Dims { batch: 2, q_rows: 37, kv_rows: 37, heads: 3, head_dim: 8 };
    let x = |seed: usize| -> Vec<f32> {
        (0..2 * 37 * 24).map(|i| (((i * 7919 + seed) % 1000) as f32 - 500.0) * 0.004).collect()
    };
    let (q, kk, v) = (x(1), x(2), x(3));
    let (mut one_att, mut two_att) = (vec![0f32; q.len()], vec![0f32; q.len()]);
    attend(&d, 0.35, &q, &kk, &v, &mut one_att).unwrap();
    multithread_tract_scope(two, || attend(&d, 0.35, &q, &kk, &v, &mut two_att)).unwrap();
    assert_eq!(one_att, two_att, "attention");
}

/// A text over `MAX_INPUT_BYTES` is refused before any work, and within it
/// only a prefix is tokenized, with the same tokens and truncation flag as the whole text.
#[test]
fn long_inputs_are_bounded_and_tokenized_as_a_whole() {
    let engine = Engine::open(&fixture().join("bundle")).unwrap();
    let tok = tokenizers::Tokenizer::from_file(fixture().join("bundle").join(TOKENIZER_FILE)).unwrap();
    let whole = |text: &str| {
        let enc = tok.encode(text, true).unwrap();
        let (mut ids, mut offsets) = (enc.get_ids().to_vec(), enc.get_offsets().to_vec());
        let truncated = engine.manifest().tokenizer.truncate(&mut ids, &mut offsets);
        (ids, truncated)
    };
    let row = row_texts().remove(0);
    let texts = [
        row.clone(),
        row.repeat(40),
        format!("{} {}", "x".repeat(700), row.repeat(3)),
        format!("{}{}", "y".repeat(3000), row),
        "Heart failure ".repeat(5),
        format!("{} Heart", "  ".repeat(400)),
    ];
    for t in &texts {
        assert_eq!(engine.tokenize(t).unwrap(), whole(t), "{} bytes: {:?}...", t.len(), &t[..t.len().min(40)]);
    }
    let over = "a ".repeat(ckd_edge::MAX_INPUT_BYTES / 2 + 1);
    let e = engine.predict_text(&over).unwrap_err();
    assert!(matches!(e, EdgeError::InputTooLong { index: 0, .. }), "{e}");
    assert!(e.to_string().contains(&format!("over the maximum of {}", ckd_edge::MAX_INPUT_BYTES)), "{e}");
    let at_max = "a ".repeat(ckd_edge::MAX_INPUT_BYTES / 2);
    assert!(engine.predict_text(&at_max).unwrap().truncated);
}
