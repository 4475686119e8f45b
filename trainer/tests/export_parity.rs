//! Parity of the ONNX export (`ckd_trainer::export`) with the candle model, run in tract.
//!
//! - f32 export vs candle: logits within [`F32_LOGIT_TOL`] absolute, on a tiny random model
//!   (several batch sizes and lengths, with padding, with and without pooler) and on the real
//!   all-MiniLM-L6-v2 with a fresh seeded head.
//! - int8 export vs f32 export: sigmoid probabilities within [`INT8_PROB_TOL`] per label.
//!
//! MiniLM comes from `scripts/fetch_models.sh` (`CKD_MINILM_DIR`: model.safetensors,
//! config.json, tokenizer.json). Unset or missing: the test fails under CI (`CI` set) and
//! prints "NOT RUN" otherwise.
//!
//! The helpers live in `support/export.rs`, shared with the export study tool
//! (`trainer/examples/export_study.rs`: tract profiles, int8 studies and timings, and the files
//! `scripts/ort_check.py` reads).

#[path = "support/export.rs"]
mod support;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use ckd_trainer::export::onnx::build_model;
use ckd_trainer::export::{
    build_onnx, candle_logits, export_student, export_tensors, max_diffs, probe_batch, BuildOptions, ExportError,
    Int8Form, LinearKinds, Precision, TractModel,
};
use ckd_trainer::models::bert::{Config, HeadConfig, Pooling};
use support::{
    minilm, minilm_with_head, pad_rows, probs_on, rows, tiny, tiny_pooled, train_tiny_student, MiniLm, ALL_FORMS,
};

/// f32 export vs candle, absolute logit difference.
const F32_LOGIT_TOL: f32 = 1e-4;
/// int8 export vs f32 export, absolute probability difference per label.
const INT8_PROB_TOL: f32 = 0.02;
/// int8 vs f32 on a trained student's test split: largest allowed macro-F1 drop, in points.
const INT8_MACRO_F1_DROP: f64 = 0.5;

/// Batch shapes (as row lengths) the tiny tests run: single rows, padded batches, full length.
const TINY_BATCHES: [&[usize]; 5] = [&[1], &[7], &[9, 3], &[5, 12, 1, 12], &[64, 20, 33]];

#[test]
fn tiny_f32_matches_candle() {
    for (use_pooler, pooling) in
        [(false, Pooling::Cls), (true, Pooling::Cls), (false, Pooling::Mean), (true, Pooling::Mean)]
    {
        let (cfg, head, model, tensors) = tiny_pooled(use_pooler, pooling, 7);
        let (bytes, stats) = build_onnx(&cfg, &head, &tensors, BuildOptions::new(Precision::F32)).unwrap();
        assert_eq!(stats.int8_linears, 0);
        assert_eq!(stats.f32_linears, 6 * cfg.num_hidden_layers + 1 + usize::from(use_pooler));
        // One plan for the symbolic shape serves every batch; a concrete-shape plan too.
        let symbolic = TractModel::load(&bytes, None).unwrap();
        for (i, lens) in TINY_BATCHES.iter().enumerate() {
            let (ids, mask, t) = pad_rows(&rows(lens, cfg.vocab_size, i as u64 + 1));
            let b = lens.len();
            let want = candle_logits(&model, &ids, &mask, b, t).unwrap();
            let got = symbolic.run(&ids, &mask, b, t).unwrap();
            let (d, _) = max_diffs(&want, &got);
            eprintln!("tiny f32 (pooler {use_pooler}, {pooling:?}) lens {lens:?}: max |logit diff| {d:.3e}");
            assert!(d < F32_LOGIT_TOL, "lens {lens:?}: {d}");
            let fixed = TractModel::load(&bytes, Some((b, t))).unwrap().run(&ids, &mask, b, t).unwrap();
            let (d, _) = max_diffs(&want, &fixed);
            assert!(d < F32_LOGIT_TOL, "lens {lens:?} (concrete shape): {d}");
        }
    }
}

#[test]
fn tiny_int8_close_to_f32() {
    let (cfg, head, _, tensors) = tiny(false, 3);
    // Scale the classifier so the probabilities spread over (0, 1) instead of sitting at 0.5,
    // which would make the probability tolerance vacuous.
    let mut tensors = tensors;
    let w = (tensors["classifier.weight"].clone() * 50.0).unwrap();
    tensors.insert("classifier.weight".into(), w);
    let (f32_bytes, _) = build_onnx(&cfg, &head, &tensors, BuildOptions::new(Precision::F32)).unwrap();
    let (i8_bytes, stats) = build_onnx(&cfg, &head, &tensors, BuildOptions::new(Precision::Int8)).unwrap();
    assert_eq!(stats.int8_linears, 6 * cfg.num_hidden_layers);
    let (f, q) = (TractModel::load(&f32_bytes, None).unwrap(), TractModel::load(&i8_bytes, None).unwrap());
    let mut spread = (1f32, 0f32);
    for (i, lens) in TINY_BATCHES.iter().enumerate() {
        let (ids, mask, t) = pad_rows(&rows(lens, cfg.vocab_size, 100 + i as u64));
        let b = lens.len();
        let want = f.run(&ids, &mask, b, t).unwrap();
        let got = q.run(&ids, &mask, b, t).unwrap();
        for &l in &want {
            let p = 1.0 / (1.0 + (-l).exp());
            spread = (spread.0.min(p), spread.1.max(p));
        }
        let (dl, dp) = max_diffs(&want, &got);
        eprintln!("tiny int8 lens {lens:?}: max |logit diff| {dl:.3e}, max |prob diff| {dp:.3e}");
        assert!(dp < INT8_PROB_TOL, "lens {lens:?}: prob diff {dp}");
        assert!(dl > 0.0, "int8 identical to f32: quantization did not happen");
    }
    eprintln!("f32 probabilities span [{:.3}, {:.3}]", spread.0, spread.1);
    assert!(spread.0 < 0.2 && spread.1 > 0.8, "probabilities too concentrated: {spread:?}");
}

/// Op types of an exported model.
fn op_types(cfg: &Config, head: &HeadConfig, tensors: &HashMap<String, Tensor>, p: Precision) -> Vec<String> {
    let (m, _) = build_model(cfg, head, tensors, BuildOptions::new(p)).unwrap();
    m.graph.unwrap().node.into_iter().map(|n| n.op_type).collect()
}

#[test]
fn graph_forms() {
    let (cfg, head, _, tensors) = tiny(false, 1);
    let (m, _) = build_model(&cfg, &head, &tensors, BuildOptions::new(Precision::Int8)).unwrap();
    assert_eq!(m.opset_import[0].version, 17);
    let g = m.graph.unwrap();
    assert!(g.value_info.is_empty(), "no intermediate value_info");
    let names: Vec<&str> = g.input.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["input_ids", "attention_mask"]);
    assert_eq!(g.output.len(), 1);
    assert_eq!(g.output[0].name, "logits");
    // Embedding tables stay f32 (tract does not constant-fold results > 4 MiB).
    let word = g.initializer.iter().find(|t| t.name == "embeddings.word_embeddings.weight").unwrap();
    assert_eq!(word.data_type, 1);

    let count = |ops: &[String], op: &str| ops.iter().filter(|o| *o == op).count();
    let int8 = op_types(&cfg, &head, &tensors, Precision::Int8);
    let layers = cfg.num_hidden_layers;
    assert_eq!(count(&int8, "MatMulInteger"), 6 * layers);
    // One DynamicQuantizeLinear per distinct input: x (q, k, v), context, attention output,
    // intermediate activation; the last layer's query runs on the [CLS] row alone (one more).
    assert_eq!(count(&int8, "DynamicQuantizeLinear"), 4 * layers + 1);
    assert_eq!(count(&int8, "Slice"), 2, "positions, and the last layer's [CLS] row");
    assert_eq!(count(&int8, "QuantizeLinear") + count(&int8, "DequantizeLinear"), 0);
    assert_eq!(count(&int8, "LayerNormalization"), 1 + 2 * layers);
    assert_eq!(count(&int8, "Erf"), layers);
    // Attention matmuls (activation x activation) and the classifier stay f32.
    assert_eq!(count(&int8, "MatMul"), 2 * layers + 1);
    let f32_ops = op_types(&cfg, &head, &tensors, Precision::F32);
    assert_eq!(count(&f32_ops, "MatMul"), 8 * layers + 1);
    // Mixed precision: the feed-forward linears kept in f32, the attention linears int8.
    let opts = BuildOptions::int8(Int8Form::DynamicMatMulInteger, LinearKinds::FFN);
    let (m, stats) = build_model(&cfg, &head, &tensors, opts).unwrap();
    let mixed: Vec<String> = m.graph.unwrap().node.into_iter().map(|n| n.op_type).collect();
    assert_eq!((stats.int8_linears, stats.f32_linears), (4 * layers, 2 * layers + 1));
    assert_eq!(count(&mixed, "MatMulInteger"), 4 * layers);
    assert_eq!(count(&mixed, "DynamicQuantizeLinear"), 2 * layers + 1);
    assert_eq!(count(&mixed, "MatMul"), 4 * layers + 1);
    let (m, _) = build_model(
        &cfg,
        &head,
        &tensors,
        BuildOptions { keep_f32: LinearKinds::FFN, ..BuildOptions::new(Precision::F32) },
    )
    .unwrap();
    assert_eq!(m.graph.unwrap().node.iter().filter(|n| n.op_type == "MatMulInteger").count(), 0);
    assert_eq!(count(&f32_ops, "MatMulInteger") + count(&f32_ops, "DynamicQuantizeLinear"), 0);
}

#[test]
fn missing_or_misshapen_tensors_are_named() {
    let (cfg, head, _, tensors) = tiny(false, 1);
    let mut missing = tensors.clone();
    missing.remove("encoder.layer.1.intermediate.dense.weight");
    let err = build_onnx(&cfg, &head, &missing, BuildOptions::new(Precision::F32)).unwrap_err();
    assert!(matches!(&err, ExportError::MissingTensor(n) if n == "encoder.layer.1.intermediate.dense.weight"), "{err}");
    let mut bad = tensors.clone();
    bad.insert("classifier.bias".into(), Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap());
    let err = build_onnx(&cfg, &head, &bad, BuildOptions::new(Precision::Int8)).unwrap_err();
    assert!(err.to_string().contains("classifier.bias"), "{err}");
}

#[test]
fn export_student_writes_checked_files() {
    let (cfg, head, _, tensors) = tiny(true, 5);
    let dir = tempfile::tempdir().unwrap();
    let student = dir.path().join("student");
    std::fs::create_dir_all(&student).unwrap();
    let sc = ckd_trainer::student::StudentConfig { bert: cfg.clone(), head: head.clone(), max_len: 48 };
    // The two files an export reads, sealed as `save_student` seals them.
    let seal = |t: &HashMap<String, Tensor>| {
        let mut seal = ckd_trainer::train_integrity::Seal::new(&student);
        seal.bytes("config.json", serde_json::to_string(&sc).unwrap().as_bytes()).unwrap();
        seal.tensors("model.safetensors", t).unwrap();
        seal.finish().unwrap();
    };
    seal(&tensors);
    for p in [Precision::F32, Precision::Int8] {
        let out = dir.path().join(format!("bundle/model.{}.onnx", p.as_str()));
        let r = export_student(&student, &out, p).unwrap();
        eprintln!("{r:?}");
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(r.bytes, bytes.len());
        assert_eq!(r.probe.shape, [2, 48]);
        match p {
            Precision::F32 => assert!(r.probe.max_abs_logit_diff < F32_LOGIT_TOL),
            Precision::Int8 => assert!(r.probe.max_abs_prob_diff < INT8_PROB_TOL),
        }
    }
    // A broken checkpoint is an error that names the tensor, and nothing is written.
    let mut broken = tensors.clone();
    broken.remove("encoder.layer.0.attention.self.key.bias");
    seal(&broken);
    let out = dir.path().join("broken.onnx");
    let err = export_student(&student, &out, Precision::F32).unwrap_err();
    assert!(err.to_string().contains("encoder.layer.0.attention.self.key.bias"), "{err}");
    assert!(!out.exists());
    // A file that differs from its checksum by one byte is refused, naming the file.
    seal(&tensors);
    let st = student.join("model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    *bytes.last_mut().unwrap() ^= 0x01;
    std::fs::write(&st, &bytes).unwrap();
    let err = export_student(&student, &out, Precision::F32).unwrap_err().to_string();
    assert!(err.contains(st.to_str().unwrap()) && err.contains("sha256"), "{err}");
    assert!(!out.exists());
}

#[test]
fn probe_batch_is_padded_and_in_vocab() {
    let cfg = Config::tiny();
    let (ids, mask) = probe_batch(&cfg, 10);
    assert_eq!(ids.len(), 20);
    assert_eq!(mask[..10], [1; 10]);
    assert_eq!(mask[10..], [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]);
    assert!(ids.iter().all(|&i| (0..cfg.vocab_size as i64).contains(&i)));
}

// ---------------------------------------------------------------------------------------------
// A tiny student trained on a synthetic cohort (`support::train_tiny_student`)
// ---------------------------------------------------------------------------------------------

/// The int8 bundle of a trained student predicts like the f32 bundle on the test split of its
/// synthetic cohort: probabilities within [`INT8_PROB_TOL`] per label, and macro-F1 (at
/// the student's tuned thresholds) no more than [`INT8_MACRO_F1_DROP`] lower.
#[test]
fn trained_tiny_student_int8_bundle_within_goals() {
    use ckd_trainer::student::{load_student, TokenizedSamples};
    let t = train_tiny_student();
    let st = load_student(&t.dir).unwrap();
    let p = TokenizedSamples::new(&t.test, &st.encoder).unwrap();
    let l = st.config.head.num_labels;
    let bundles = tempfile::tempdir().unwrap();
    let mut probs = Vec::new();
    let int8_emb = BuildOptions { int8_embeddings: true, ..BuildOptions::new(Precision::Int8) };
    let builds = [
        ("f32", BuildOptions::new(Precision::F32)),
        ("int8", BuildOptions::new(Precision::Int8)),
        ("int8 + int8 embeddings", int8_emb),
    ];
    for (name, build) in builds {
        let dir = bundles.path().join(name);
        let r = ckd_trainer::bundle::write_bundle_with(&t.dir, &dir, build).unwrap();
        eprintln!("{name} bundle: files {:?}", r.bytes);
        let model = TractModel::load_path(&dir.join(ckd_core::bundle::MODEL_FILE)).unwrap();
        probs.push(probs_on(&p, st.encoder.pad_id, l, &|ids, mask, b, t| model.run(ids, mask, b, t).unwrap()));
    }
    let candle = student_probs(&st, &p);
    let report = |pr: &[f32]| ckd_core::metrics::evaluate_label_sets(pr, &p.labels, &st.thresholds, 10).unwrap();
    let f = report(&probs[0]);
    let max_diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    let vs_candle = max_diff(&probs[0], &candle);
    let spread = probs[0].iter().fold((1f32, 0f32), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    eprintln!(
        "{} test samples: f32 bundle vs candle max |prob diff| {vs_candle:.2e}; f32 macro-F1 {:.4}, micro-F1 {:.4}; \
         f32 probabilities span [{:.3}, {:.3}]",
        p.len(),
        f.macro_f1,
        f.micro_f1,
        spread.0,
        spread.1
    );
    assert!(p.len() >= 200, "test split too small for a macro-F1 comparison: {}", p.len());
    // The student must have learned something, else the comparison says nothing.
    assert!(f.macro_f1 > 0.15, "f32 macro-F1 {} too low: the student did not learn", f.macro_f1);
    // Low-prevalence labels: a trained student's probabilities span about (0.04, 0.4) here.
    assert!(spread.0 < 0.1 && spread.1 > 0.35, "probabilities too concentrated: {spread:?}");
    assert!(vs_candle < 1e-4, "f32 bundle vs candle: {vs_candle}");
    for ((name, _), q) in builds.iter().zip(&probs).skip(1) {
        let r = report(q);
        let dp = max_diff(&probs[0], q);
        let drop = 100.0 * (f.macro_f1 - r.macro_f1);
        eprintln!(
            "{name} vs f32: max |prob diff| {dp:.5}; macro-F1 {:.4} (drop {drop:+.3} points); micro-F1 {:.4}",
            r.macro_f1, r.micro_f1
        );
        assert!(dp < INT8_PROB_TOL, "{name} vs f32 probabilities differ by {dp} >= {INT8_PROB_TOL}");
        assert!(dp > 0.0, "{name} identical to f32: quantization did not happen");
        assert!(
            drop <= INT8_MACRO_F1_DROP,
            "{name}: macro-F1 is {drop} points lower than f32 (> {INT8_MACRO_F1_DROP})"
        );
    }
}

/// Probabilities of the candle student on `p`.
fn student_probs(st: &ckd_trainer::student::Student, p: &ckd_trainer::student::TokenizedSamples) -> Vec<f32> {
    ckd_trainer::student::predict(&st.model, p, st.encoder.pad_id, 16).unwrap()
}

// ---------------------------------------------------------------------------------------------
// all-MiniLM-L6-v2
// ---------------------------------------------------------------------------------------------

/// Bounds of int8 vs f32 on MiniLM with the trained-like head, per int8 form (max over the 4
/// sentences, alone and as a padded batch, 25 labels), above what tract's AVX-512 and AVX2
/// kernels measure (BENCHMARKS.md; the float parts round differently per kernel, and per-tensor
/// quantization amplifies that). MiniLM's activations have outlier channels (intermediate
/// inputs up to |28|, output.dense inputs up to |25| against a 99.9th percentile of 8 and 2),
/// so a per-tensor u8 scale is coarse; [`INT8_PROB_TOL`] holds on the trained demo student
/// (`export_study trained-int8`) and on MiniLM with a fresh head, not here. These bounds
/// guard against regressions.
fn minilm_trained_like_bound(form: Int8Form) -> f32 {
    match form {
        Int8Form::DynamicMatMulInteger | Int8Form::ExpandedPerTensor => 0.12,
        Int8Form::ExpandedPerRow => 0.06,
    }
}

/// (worst f32 vs candle logit diff, worst int8 vs f32 prob diff per form) over the padded batch
/// of all sentences and each sentence alone.
fn minilm_parity(m: &MiniLm) -> (f32, Vec<(Int8Form, f32)>) {
    let (f32_bytes, _) = build_onnx(&m.cfg, &m.head, &m.tensors, BuildOptions::new(Precision::F32)).unwrap();
    let f = TractModel::load(&f32_bytes, None).unwrap();
    let int8: Vec<(Int8Form, TractModel)> = ALL_FORMS
        .iter()
        .map(|&form| {
            let (b, _) = build_onnx(&m.cfg, &m.head, &m.tensors, BuildOptions::int8(form, LinearKinds::NONE)).unwrap();
            (form, TractModel::load(&b, None).unwrap())
        })
        .collect();
    let mut cases: Vec<Vec<Vec<i64>>> = vec![m.rows.clone()];
    cases.extend(m.rows.iter().map(|r| vec![r.clone()]));
    let mut worst_f32 = 0f32;
    let mut worst_int8 = vec![0f32; int8.len()];
    for rows in &cases {
        let (ids, mask, t) = pad_rows(rows);
        let b = rows.len();
        let want = candle_logits(&m.model, &ids, &mask, b, t).unwrap();
        let got = f.run(&ids, &mask, b, t).unwrap();
        let (d, _) = max_diffs(&want, &got);
        worst_f32 = worst_f32.max(d);
        let mut line = format!("  [{b}, {t}]: f32 vs candle max |logit diff| {d:.3e}; int8 vs f32 max |prob diff|");
        for (i, (form, q)) in int8.iter().enumerate() {
            let (_, dp) = max_diffs(&got, &q.run(&ids, &mask, b, t).unwrap());
            worst_int8[i] = worst_int8[i].max(dp);
            line.push_str(&format!(" {form:?} {dp:.4}"));
        }
        eprintln!("{line}");
    }
    (worst_f32, ALL_FORMS.iter().copied().zip(worst_int8).collect())
}

#[test]
fn minilm_export_parity() {
    let Some(fresh) = minilm_with_head(1.0) else { return };
    let lens: Vec<usize> = fresh.rows.iter().map(Vec::len).collect();
    eprintln!("token counts: {lens:?}");
    let default_form = BuildOptions::new(Precision::Int8).int8_form;
    for (what, m) in [("fresh head", fresh), ("trained-like head", minilm().unwrap())] {
        eprintln!("MiniLM, {what}:");
        let (f32_diff, int8) = minilm_parity(&m);
        eprintln!("  worst: f32 {f32_diff:.3e}; int8 {int8:?}");
        assert!(f32_diff < F32_LOGIT_TOL, "{what}: f32 logits differ by {f32_diff}");
        for (form, d) in int8 {
            if what == "fresh head" {
                if form == default_form {
                    assert!(d < INT8_PROB_TOL, "{what}: int8 {form:?} probabilities differ by {d}");
                }
            } else {
                let bound = minilm_trained_like_bound(form);
                assert!(d < bound, "{what}: int8 {form:?} probabilities differ by {d} >= {bound}");
            }
        }
    }
    // The library driver (its own probe batch and checks) on the trained-like head.
    let m = minilm().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for p in [Precision::F32, Precision::Int8] {
        let r = export_tensors(&m.cfg, &m.head, &m.tensors, 128, &dir.path().join("m.onnx"), p).unwrap();
        eprintln!("export_tensors {}: {:?}", p.as_str(), r.probe);
    }
}
