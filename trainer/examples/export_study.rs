//! Studies of the ONNX export that print or write results for a person (or a script) to read;
//! the checks that must hold are `tests/export_parity.rs`, whose helpers (`tests/support/export.rs`)
//! this tool shares. Every subcommand reads its settings from environment variables:
//!
//! - `profile`: tract's per-node profile of the MiniLM-size exports (`CKD_PROFILE_SEQ`,
//!   `CKD_PROFILE_RUNS`, `CKD_PROFILE_TOP`, `CKD_PROFILE_ONLY`, `CKD_PROFILE_CONCRETE_ONLY`);
//! - `profile-foreign`: the same for an int8 ONNX made by others (`CKD_MINILM_INT8_ONNX`);
//! - `ort-files`: exports, inputs and tract's and candle's logits for `scripts/ort_check.py`
//!   (`CKD_EXPORT_DIR`, `CKD_ORT_MODEL`, `CKD_EXPORT_HEAD_SCALE`, `CKD_EXPORT_FORMS`;
//!   `scripts/ort_ci.sh` runs it);
//! - `trained-int8`: int8 vs f32 on a trained student (`CKD_STUDENT_DIR`, `CKD_SAMPLES`);
//! - `sensitivity`: which linears make MiniLM's int8 error;
//! - `bench-forms`: interleaved timing of the f32 export and the int8 forms (`CKD_BENCH_SEQ`,
//!   `CKD_PROFILE_RUNS`, `CKD_BENCH_SYMBOLIC`).
//!
//! A subcommand whose input is missing prints "NOT RUN" and exits 0, as the parity tests do
//! (a missing MiniLM, trained student or foreign ONNX is a panic instead when `CI` is set).
//! MiniLM comes from `CKD_MINILM_DIR` (`eval "$(scripts/fetch_models.sh)"`). Timings and
//! profiles want a release build:
//! `cargo run --release -p ckd-trainer --example export_study -- profile`.

#[path = "../tests/support/export.rs"]
mod support;

use std::collections::HashMap;

use anyhow::{Context, Result};
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use ckd_trainer::export::onnx::build_model;
use ckd_trainer::export::{
    build_onnx, candle_logits, max_diffs, model_tensors, BuildOptions, Int8Form, LinearKind, LinearKinds, LoadOptions,
    Precision, TractModel,
};
use ckd_trainer::models::bert::{BertForMultiLabel, Config, HeadConfig};
use ckd_trainer::models::checkpoint::read_safetensors;
use support::{
    env_flag, minilm, minilm_with_head, pad_rows, probs_on, required_path, required_path_quiet, rows, tiny,
    train_tiny_student, varmap_tensors, LogitsFn, ALL_FORMS, TRAINED_LIKE_HEAD_SCALE,
};

/// One subcommand's body.
type Command = fn() -> Result<()>;

/// The subcommands, with the function each runs.
const COMMANDS: [(&str, Command); 6] = [
    ("profile", profile),
    ("profile-foreign", profile_foreign),
    ("ort-files", ort_files),
    ("trained-int8", trained_int8),
    ("sensitivity", sensitivity),
    ("bench-forms", bench_forms),
];

fn main() -> std::process::ExitCode {
    let arg = std::env::args().nth(1).unwrap_or_default();
    match COMMANDS.iter().find(|(name, _)| *name == arg) {
        Some((_, run)) => match run() {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("export_study {arg}: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
        None => {
            let names: Vec<&str> = COMMANDS.iter().map(|(n, _)| *n).collect();
            eprintln!(
                "usage: export_study {{{}}} (settings in environment variables: see trainer/examples/export_study.rs)",
                names.join("|")
            );
            std::process::ExitCode::from(2)
        }
    }
}

/// MiniLM (`CKD_MINILM_DIR`) with its head, or a model of its size with seeded random weights
/// when it is unset (for timings, which do not depend on the values).
fn minilm_or_random() -> Result<(Config, HeadConfig, HashMap<String, Tensor>)> {
    Ok(match minilm() {
        Some(m) => (m.cfg, m.head, m.tensors),
        None => {
            let cfg = Config::minilm_l6();
            let head = HeadConfig::default();
            let (_, vm) = BertForMultiLabel::init(&cfg, &head, &Device::Cpu, 1)?;
            (cfg, head, varmap_tensors(&vm))
        }
    })
}

/// Per-node tract profiles of the MiniLM-size exports at batch 1, seq 128 (`CKD_PROFILE_SEQ`), one thread, for
/// the investigation of tract's int8 path. Random weights when `CKD_MINILM_DIR` is unset
/// (timing does not depend on the values).
fn profile() -> Result<()> {
    let (cfg, head, tensors) = minilm_or_random()?;
    let t: usize = std::env::var("CKD_PROFILE_SEQ").ok().and_then(|v| v.parse().ok()).unwrap_or(128);
    let b = 1usize;
    let (ids, mask) = {
        let (ids, _, _) = pad_rows(&rows(&[t], cfg.vocab_size, 9));
        (ids, vec![1i64; t])
    };
    let runs: usize = std::env::var("CKD_PROFILE_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    let forms: Vec<(&str, BuildOptions)> = vec![
        ("f32", BuildOptions::new(Precision::F32)),
        ("int8 DynamicMatMulInteger", BuildOptions::int8(Int8Form::DynamicMatMulInteger, LinearKinds::NONE)),
        ("int8 ExpandedPerTensor", BuildOptions::int8(Int8Form::ExpandedPerTensor, LinearKinds::NONE)),
        ("int8 ExpandedPerRow", BuildOptions::int8(Int8Form::ExpandedPerRow, LinearKinds::NONE)),
    ];
    let only: Option<String> = std::env::var("CKD_PROFILE_ONLY").ok();
    let forms: Vec<_> =
        forms.into_iter().filter(|(n, _)| only.as_ref().is_none_or(|o| n.contains(o.as_str()))).collect();
    for (name, opts) in forms {
        let (bytes, _) = build_onnx(&cfg, &head, &tensors, opts)?;
        let shapes: &[Option<(usize, usize)>] =
            if env_flag("CKD_PROFILE_CONCRETE_ONLY") { &[Some((b, t))] } else { &[Some((b, t)), None] };
        for &shape in shapes {
            let m = TractModel::load_opts(&bytes, &LoadOptions { shape, ..LoadOptions::default() })?;
            let p = m.profile(&ids, &mask, b, t, 2, runs)?;
            let which = if shape.is_some() { format!("concrete [1, {t}]") } else { "symbolic [batch, seq]".into() };
            eprintln!(
                "=== {name}, plan for {which} ===\n{}",
                p.summary(std::env::var("CKD_PROFILE_TOP").ok().and_then(|v| v.parse().ok()).unwrap_or(12))
            );
        }
    }
    Ok(())
}

/// Per-node tract profile of an int8 ONNX made by others (`CKD_MINILM_INT8_ONNX`, the
/// onnxruntime-style dynamic-int8 all-MiniLM-L6-v2), batch 1, seq 128, for comparison with
/// our int8 form.
fn profile_foreign() -> Result<()> {
    use prost::Message;
    let Some(path) = required_path("CKD_MINILM_INT8_ONNX") else { return Ok(()) };
    let bytes = std::fs::read(&path)?;
    let m = tract_onnx::pb::ModelProto::decode(&bytes[..])?;
    let g = m.graph.context("the model has no graph")?;
    let mut ops: HashMap<String, usize> = HashMap::new();
    for n in &g.node {
        *ops.entry(n.op_type.clone()).or_default() += 1;
    }
    let mut ops: Vec<_> = ops.into_iter().collect();
    ops.sort();
    eprintln!("opset {:?}, inputs {:?}", m.opset_import, g.input.iter().map(|i| &i.name).collect::<Vec<_>>());
    eprintln!("ops: {ops:?}");
    for n in g.node.iter().filter(|n| n.op_type == "MatMulInteger").take(2) {
        let dims: Vec<_> = n
            .input
            .iter()
            .map(|i| g.initializer.iter().find(|t| &t.name == i).map(|t| (i.clone(), t.dims.clone(), t.data_type)))
            .collect();
        eprintln!("MatMulInteger {:?} inputs {dims:?}", n.name);
    }
    let (b, t) = (1usize, 128usize);
    let ids: Vec<i64> = (0..t as i64).map(|i| if i == 0 { 101 } else { 1000 + i * 37 }).collect();
    let mask = vec![1i64; t];
    let runs: usize = std::env::var("CKD_PROFILE_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let n_inputs = g.input.len();
    let model = TractModel::load_opts(&bytes, &LoadOptions { shape: Some((b, t)), n_inputs, ignore_value_info: true })?;
    let p = model.profile(&ids, &mask, b, t, 1, runs)?;
    eprintln!(
        "=== {} (concrete [1, 128]) ===\n{}",
        path.display(),
        p.summary(std::env::var("CKD_PROFILE_TOP").ok().and_then(|v| v.parse().ok()).unwrap_or(12))
    );
    Ok(())
}

/// Writes exports, a padded input batch and the tract and candle logits to `CKD_EXPORT_DIR`,
/// for `scripts/ort_check.py` (the same files in onnxruntime; `scripts/ort_ci.sh` runs both).
/// The model, by `CKD_ORT_MODEL`:
/// - `student`: a trained student on 16 of its test samples: `CKD_STUDENT_DIR` and
///   `CKD_SAMPLES` when set, else the tiny student [`train_tiny_student`] trains here;
/// - `minilm`: all-MiniLM-L6-v2 (`CKD_MINILM_DIR`; a failure under CI when missing) with a fresh
///   head scaled by `CKD_EXPORT_HEAD_SCALE` (default [`TRAINED_LIKE_HEAD_SCALE`]) on the test
///   sentences;
/// - unset: the trained student when `CKD_STUDENT_DIR` is set, else MiniLM when
///   `CKD_MINILM_DIR` is set (head scale default 1), else a tiny random model.
fn ort_files() -> Result<()> {
    let Some(out) = std::env::var_os("CKD_EXPORT_DIR").map(PathBuf::from) else {
        eprintln!("NOT RUN: CKD_EXPORT_DIR is unset");
        return Ok(());
    };
    std::fs::create_dir_all(&out)?;
    let which = std::env::var("CKD_ORT_MODEL").unwrap_or_default();
    let head_scale = |default: f64| -> f64 {
        std::env::var("CKD_EXPORT_HEAD_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
    };
    let given = required_path_quiet("CKD_STUDENT_DIR").zip(required_path_quiet("CKD_SAMPLES"));
    let mut trained = None;
    let student = match (which.as_str(), given) {
        ("student", None) => {
            let t = train_tiny_student();
            let test = t.test.iter().take(16).cloned().collect();
            let dir = t.dir.clone();
            trained = Some(t);
            Some((dir, test))
        }
        ("student", Some((dir, samples))) | ("", Some((dir, samples))) => {
            use ckd_core::visit::Split;
            let file = ckd_trainer::ingest::read_samples(&samples)?;
            Some((dir, file.samples.into_iter().filter(|s| s.split == Split::Test).take(16).collect::<Vec<_>>()))
        }
        ("minilm", _) | ("", None) => None,
        (other, _) => panic!("CKD_ORT_MODEL={other}: expected student or minilm"),
    };
    let (cfg, head, model, tensors, rws) = if let Some((dir, test)) = student {
        let st = ckd_trainer::student::load_student(&dir)?;
        let p = ckd_trainer::student::TokenizedSamples::new(&test, &st.encoder)?;
        let rws = p.enc.iter().map(|e| e.ids.iter().map(|&x| i64::from(x)).collect()).collect();
        let tensors = model_tensors(read_safetensors(&dir.join("model.safetensors"), &Device::Cpu)?)?;
        eprintln!("trained student {}", dir.display());
        (st.config.bert, st.config.head, st.model, tensors, rws)
    } else if which == "minilm" {
        let scale = head_scale(TRAINED_LIKE_HEAD_SCALE);
        let m = minilm_with_head(scale).context("CKD_ORT_MODEL=minilm needs CKD_MINILM_DIR")?;
        eprintln!("MiniLM, head scale {scale}");
        (m.cfg, m.head, m.model, m.tensors, m.rows)
    } else {
        let scale = head_scale(1.0);
        match minilm_with_head(scale) {
            Some(m) => {
                eprintln!("MiniLM, head scale {scale}");
                (m.cfg, m.head, m.model, m.tensors, m.rows)
            }
            None => {
                let (cfg, head, model, tensors) = tiny(false, 11);
                let r = rows(&[9, 3, 12], cfg.vocab_size, 5);
                (cfg, head, model, tensors, r)
            }
        }
    };
    drop(trained);
    let (ids, mask, t) = pad_rows(&rws);
    let b = rws.len();
    let candle = candle_logits(&model, &ids, &mask, b, t)?;
    let mut outputs = serde_json::Map::new();
    outputs.insert("candle".into(), serde_json::json!(candle));
    for p in [Precision::F32, Precision::Int8] {
        use prost::Message as _;
        let (mut model, _) = build_model(&cfg, &head, &tensors, BuildOptions::new(p))?;
        let bytes = model.encode_to_vec();
        // Written in the bundle layout (tensors as ONNX external data beside the graph), so
        // onnxruntime reads the same form the edge runtime ships; tract runs the same graph.
        let name = format!("model.{}.onnx", p.as_str());
        let data = ckd_trainer::export::external_data_name(std::path::Path::new(&name));
        let blob = ckd_trainer::export::graph::externalize(&mut model, &data, ckd_trainer::export::EXTERNAL_MIN_BYTES);
        std::fs::write(out.join(&data), &blob)?;
        std::fs::write(out.join(&name), model.encode_to_vec())?;
        let got = TractModel::load(&bytes, None)?.run(&ids, &mask, b, t)?;
        outputs.insert(format!("tract_{}", p.as_str()), serde_json::json!(got));
    }
    let doc = serde_json::json!({
        "batch": b, "seq": t, "num_labels": head.num_labels,
        "input_ids": ids, "attention_mask": mask, "logits": outputs,
    });
    std::fs::write(out.join("check.json"), serde_json::to_string(&doc)?)?;
    // Every int8 form too when `CKD_EXPORT_FORMS` is set, for timing them in onnxruntime
    // (`ort_check.py --bench`).
    let forms = if env_flag("CKD_EXPORT_FORMS") { &ALL_FORMS[..] } else { &[] };
    for &f in forms {
        let (bytes, _) = build_onnx(&cfg, &head, &tensors, BuildOptions::int8(f, LinearKinds::NONE))?;
        std::fs::write(out.join(format!("form.{f:?}.onnx")), &bytes)?;
    }
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// int8 vs f32 on a trained student and the test split of its samples:
/// per-label probability difference and macro-F1 at the student's thresholds, for every int8
/// form. Needs `CKD_STUDENT_DIR` (a `ckd student train` output) and `CKD_SAMPLES`
/// (`samples.bin`); NOT RUN otherwise.
fn trained_int8() -> Result<()> {
    use ckd_core::visit::Split;
    use ckd_trainer::student::{load_student, TokenizedSamples};
    let (Some(dir), Some(samples)) = (required_path("CKD_STUDENT_DIR"), required_path("CKD_SAMPLES")) else {
        return Ok(());
    };
    let st = load_student(&dir)?;
    let file = ckd_trainer::ingest::read_samples(&samples)?;
    let test: Vec<_> = file.samples.into_iter().filter(|s| s.split == Split::Test).collect();
    let p = TokenizedSamples::new(&test, &st.encoder)?;
    let tensors = model_tensors(read_safetensors(&dir.join("model.safetensors"), &Device::Cpu)?)?;
    let cfg = &st.config;
    let l = cfg.head.num_labels;
    // Batches of 16 in length order (as `student::predict`), padded with the tokenizer's pad id.
    let run_all = |f: &LogitsFn| -> Vec<f32> { probs_on(&p, st.encoder.pad_id, l, f) };
    let candle = run_all(&|ids, mask, b, t| candle_logits(&st.model, ids, mask, b, t).unwrap());
    let report = |probs: &[f32]| ckd_core::metrics::evaluate_label_sets(probs, &p.labels, &st.thresholds, 10);
    let base = report(&candle)?;
    eprintln!("{} test samples; candle macro-F1 {:.4}", p.len(), base.macro_f1);
    let logit_std = {
        let lg: Vec<f64> = candle.iter().map(|&q| f64::from((q / (1.0 - q)).ln())).collect();
        let m = lg.iter().sum::<f64>() / lg.len() as f64;
        (lg.iter().map(|x| (x - m).powi(2)).sum::<f64>() / lg.len() as f64).sqrt()
    };
    eprintln!("logit std {logit_std:.3}");
    let mut forms = vec![("f32".to_string(), BuildOptions::new(Precision::F32))];
    for f in ALL_FORMS {
        forms.push((format!("int8 {f:?}"), BuildOptions::int8(f, LinearKinds::NONE)));
    }
    let mut f32_probs = Vec::new();
    for (name, opts) in forms {
        let (bytes, _) = build_onnx(&cfg.bert, &cfg.head, &tensors, opts)?;
        let m = TractModel::load(&bytes, None)?;
        let probs = run_all(&|ids, mask, b, t| m.run(ids, mask, b, t).unwrap());
        let vs_candle = probs.iter().zip(&candle).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let r = report(&probs)?;
        if name == "f32" {
            f32_probs = probs.clone();
        }
        let diffs: Vec<f32> = probs.iter().zip(&f32_probs).map(|(a, b)| (a - b).abs()).collect();
        let vs_f32 = diffs.iter().copied().fold(0f32, f32::max);
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        let mut sorted = diffs.clone();
        sorted.sort_by(f32::total_cmp);
        let p99 = sorted[(sorted.len() * 99) / 100];
        eprintln!(
            "{name:<30} max |prob - candle| {vs_candle:.5}; vs f32 export: max {vs_f32:.5} mean {mean:.6} p99 {p99:.5}; macro-F1 {:.4} (delta vs f32 {:+.2} points)",
            r.macro_f1,
            100.0 * (r.macro_f1 - base.macro_f1)
        );
    }
    Ok(())
}

/// Mixed-precision candidates measured against the all-int8 forms (for MiniLM's int8 error).
const MIXED_CANDIDATES: [(&str, BuildOptions); 4] = [
    ("int8 DQL, FFN f32", BuildOptions::int8(Int8Form::DynamicMatMulInteger, LinearKinds::FFN)),
    ("int8 per-row, FFN f32", BuildOptions::int8(Int8Form::ExpandedPerRow, LinearKinds::FFN)),
    (
        "int8 DQL, output.dense f32",
        BuildOptions::int8(Int8Form::DynamicMatMulInteger, LinearKinds::NONE.with(LinearKind::Output)),
    ),
    (
        "int8 per-row, output.dense f32",
        BuildOptions::int8(Int8Form::ExpandedPerRow, LinearKinds::NONE.with(LinearKind::Output)),
    ),
];

/// Which linears make MiniLM's int8 error (trained-like head; worst int8 vs f32 probability
/// difference over the test sentences, alone and batched, in tract): each kind quantized
/// alone (the others f32), each kind kept f32 (the others int8), and [`MIXED_CANDIDATES`].
fn sensitivity() -> Result<()> {
    let Some(m) = minilm() else { return Ok(()) };
    let f32_bytes = build_onnx(&m.cfg, &m.head, &m.tensors, BuildOptions::new(Precision::F32))?.0;
    let f = TractModel::load(&f32_bytes, None)?;
    let mut cases: Vec<Vec<Vec<i64>>> = vec![m.rows.clone()];
    cases.extend(m.rows.iter().map(|r| vec![r.clone()]));
    let want: Vec<Vec<f32>> = cases
        .iter()
        .map(|rows| {
            let (ids, mask, t) = pad_rows(rows);
            f.run(&ids, &mask, rows.len(), t)
        })
        .collect::<std::result::Result<_, _>>()?;
    let worst = |opts: BuildOptions| -> Result<f32> {
        let (bytes, _) = build_onnx(&m.cfg, &m.head, &m.tensors, opts)?;
        let q = TractModel::load(&bytes, None)?;
        let mut acc = 0f32;
        for (rows, w) in cases.iter().zip(&want) {
            let (ids, mask, t) = pad_rows(rows);
            acc = acc.max(max_diffs(w, &q.run(&ids, &mask, rows.len(), t)?).1);
        }
        Ok(acc)
    };
    for form in [Int8Form::DynamicMatMulInteger, Int8Form::ExpandedPerRow] {
        eprintln!("{form:?}: all int8 {:.4}", worst(BuildOptions::int8(form, LinearKinds::NONE))?);
        for k in LinearKind::ALL {
            let only = LinearKind::ALL.iter().filter(|&&o| o != k).fold(LinearKinds::NONE, |s, &o| s.with(o));
            let alone = worst(BuildOptions::int8(form, only))?;
            let kept = worst(BuildOptions::int8(form, LinearKinds::NONE.with(k)))?;
            eprintln!("  {:<24} int8 alone {alone:.4}  kept f32 (rest int8) {kept:.4}", k.suffix());
        }
    }
    for (name, opts) in MIXED_CANDIDATES {
        eprintln!("{name:<32} {:.4}", worst(opts)?);
    }
    Ok(())
}

/// Interleaved timing of the f32 export and every int8 form at MiniLM size (batch 1, seq 128,
/// one thread, plans optimized for the concrete shape): each round runs every model once, so
/// load from other processes hits all forms alike. Prints median and min per form.
fn bench_forms() -> Result<()> {
    let (cfg, head, tensors) = minilm_or_random()?;
    let t: usize = std::env::var("CKD_BENCH_SEQ").ok().and_then(|v| v.parse().ok()).unwrap_or(128);
    let (ids, _, _) = pad_rows(&rows(&[t], cfg.vocab_size, 9));
    let mask = vec![1i64; t];
    let rounds: usize = std::env::var("CKD_PROFILE_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    let symbolic = env_flag("CKD_BENCH_SYMBOLIC");
    let mut models = vec![];
    let mut forms = vec![("f32".to_string(), BuildOptions::new(Precision::F32))];
    for f in [Int8Form::DynamicMatMulInteger, Int8Form::ExpandedPerTensor, Int8Form::ExpandedPerRow] {
        forms.push((format!("int8 {f:?}"), BuildOptions::int8(f, LinearKinds::NONE)));
    }
    for (name, opts) in MIXED_CANDIDATES {
        forms.push((name.to_string(), opts));
    }
    for (name, opts) in &forms {
        let (bytes, _) = build_onnx(&cfg, &head, &tensors, *opts)?;
        let shape = if symbolic { None } else { Some((1, t)) };
        let t0 = std::time::Instant::now();
        let m = TractModel::load_opts(&bytes, &LoadOptions { shape, ..LoadOptions::default() })?;
        let load_ms = t0.elapsed().as_secs_f64() * 1e3;
        m.run(&ids, &mask, 1, t)?;
        eprintln!("  load + optimize {name}: {load_ms:.0} ms ({} bytes)", bytes.len());
        models.push((name.clone(), m, Vec::new()));
    }
    for _ in 0..rounds {
        for (_, m, times) in models.iter_mut() {
            let t0 = std::time::Instant::now();
            m.run(&ids, &mask, 1, t)?;
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    eprintln!(
        "tract, batch 1, seq {t}, 1 thread, {} plan, {rounds} interleaved rounds",
        if symbolic { "symbolic" } else { "concrete" }
    );
    for (name, _, times) in models.iter_mut() {
        times.sort_by(f64::total_cmp);
        eprintln!("  {name:<30} median {:>7.2} ms  min {:>7.2} ms", times[times.len() / 2], times[0]);
    }
    Ok(())
}
