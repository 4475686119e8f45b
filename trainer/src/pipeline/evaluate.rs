//! Stage `report`: every model on the test split (baselines, teacher, students, the bundles
//! through the edge runtime, the oracle), their costs, curves and explanations, written as
//! `report.html` / `report.json` (always re-run: cheap, and it measures).

use std::path::Path;
use std::time::Instant;

use ckd_core::NUM_LABELS;

use super::edge_eval::{cpu_name, dir_size, edge_eval, median, trainer_tract_eval};
use super::students::StudentRun;
use super::upstream::Upstream;
use super::{msg_err, stage_err, PipelineConfig, Result};
use crate::report::{self, CostRow, ModelResult, ReportInput, ReportJson, Role};
use crate::student::{self, Prepared, Teacher};
use crate::teacher::{self, explain, label};

/// Rows of 25 probabilities.
fn rows(probs: &[f32]) -> Vec<Vec<f32>> {
    probs.chunks(NUM_LABELS).map(<[f32]>::to_vec).collect()
}

/// Evaluates everything on the test split and writes the report into `cfg.out`.
pub(crate) fn write_report(
    cfg: &PipelineConfig,
    up: &Upstream,
    students: &[StudentRun],
    kd: &Path,
    bundles: &[std::path::PathBuf],
) -> Result<ReportJson> {
    const SR: &str = "report";
    let rdir = &cfg.out;
    let (train, val, test) = (&up.train, &up.val, &up.test);
    let (loaded, ev_test, device) = (&up.teacher, &up.ev_test, up.device);
    let (tdir, ldir, sdir) = (&up.teacher_dir, &up.labels_dir, &up.samples_dir);
    let oracle_path = &up.oracle;
    let test_labels: Vec<_> = test.iter().map(|s| s.labels).collect();
    let test_ids: Vec<String> = test.iter().map(|s| s.id.clone()).collect();
    // Baselines first: every model below is read against them.
    let mut models = crate::baselines::report_rows(train, val, test).map_err(stage_err(SR))?;
    let n_baselines = models.len();
    let teacher_probs = label::probs_for(ev_test, &test_ids).map_err(stage_err(SR))?;
    models.push(ModelResult {
        name: format!("teacher ({})", loaded.manifest.model_name),
        role: Role::Teacher,
        probs: rows(&teacher_probs),
        labels: test_labels.clone(),
        thresholds: loaded.manifest.thresholds.clone(),
    });
    let mut costs = Vec::new();
    let cpu = cpu_name();
    // Teacher latency: batch-1 forward of the prompt (features + head), median over samples.
    let lat_n = test.len().min(15);
    let mut tl = Vec::new();
    for s in test.iter().take(lat_n) {
        let p = loaded.prompts.encode(s).map_err(stage_err(SR))?;
        let t = Instant::now();
        let ids = candle_core::Tensor::from_vec(p.ids.clone(), (1, p.ids.len()), loaded.model.device())
            .map_err(stage_err(SR))?;
        let o = loaded.model.forward(&ids, None).map_err(stage_err(SR))?;
        let _ = loaded.head.logits(&o.last_hidden).map_err(stage_err(SR))?.to_vec2::<f32>().map_err(stage_err(SR))?;
        tl.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let label_t: [f64; 2] =
        std::fs::read(ldir.join("timing.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or([0.0; 2]);
    let teacher_size: u64 = loaded
        .manifest
        .files
        .iter()
        .map(|(rel, _)| std::fs::metadata(tdir.join(rel)).map_or(0, |m| m.len()))
        .sum::<u64>()
        + match &loaded.manifest.base {
            teacher::BaseRef::Gguf { path, .. } => std::fs::metadata(path).map_or(0, |m| m.len()),
            teacher::BaseRef::Safetensors { path, .. } => dir_size(path),
            teacher::BaseRef::Demo => 0,
        };
    costs.push(CostRow {
        model: models[n_baselines].name.clone(),
        role: Role::Teacher,
        precision: format!("{:?}", device.dtype()).to_lowercase(),
        size_bytes: teacher_size,
        latency_ms_median: median(tl),
        samples_per_s: if label_t[1] > 0.0 { test.len() as f64 / label_t[1] } else { 0.0 },
        device: format!("{} ({})", cfg.teacher.device, cpu),
    });
    for run in students {
        let (dir, name) = (&run.dir, run.display.as_str());
        let role = if run.distilled { Role::StudentDistilled } else { Role::Student };
        let st = student::load_student(dir).map_err(stage_err(SR))?;
        let p = Prepared::new(test, &st.encoder).map_err(stage_err(SR))?;
        let t = Instant::now();
        let probs = student::predict(&st.model, &p, st.encoder.pad_id, 32).map_err(stage_err(SR))?;
        let batch_secs = t.elapsed().as_secs_f64();
        let mut sl = Vec::new();
        for i in 0..lat_n {
            let one = Prepared {
                ids: vec![p.ids[i].clone()],
                texts: vec![p.texts[i].clone()],
                enc: vec![p.enc[i].clone()],
                labels: vec![p.labels[i]],
                subjects: vec![p.subjects[i]],
                spans: vec![p.spans[i].clone()],
                truncated: 0,
            };
            let t = Instant::now();
            student::predict(&st.model, &one, st.encoder.pad_id, 1).map_err(stage_err(SR))?;
            sl.push(t.elapsed().as_secs_f64() * 1e3);
        }
        if role == Role::StudentDistilled && run.fraction >= 1.0 {
            costs.push(CostRow {
                model: format!("{name} (candle)"),
                role,
                precision: "f32".into(),
                size_bytes: std::fs::metadata(dir.join("model.safetensors")).map_or(0, |m| m.len()),
                latency_ms_median: median(sl),
                samples_per_s: test.len() as f64 / batch_secs.max(1e-9),
                device: cpu.clone(),
            });
        }
        models.push(ModelResult {
            name: name.into(),
            role,
            probs: rows(&probs),
            labels: test_labels.clone(),
            thresholds: st.thresholds.clone(),
        });
    }
    // The f32 and int8 bundles through the edge runtime (the `ckd-edge` binary: the same code a
    // device runs), or, when that binary is absent, through tract inside the trainer.
    let kd_student = student::load_student(kd).map_err(stage_err(SR))?;
    let edge_bin = cfg.edge.bin.clone().or_else(|| {
        let exe = std::env::current_exe().ok()?;
        let p = exe.parent()?.join(format!("ckd-edge{}", std::env::consts::EXE_SUFFIX));
        p.is_file().then_some(p)
    });
    let test_jsonl = sdir.join("test.jsonl");
    for (dir, precision) in [(&bundles[0], "f32"), (&bundles[1], "int8")] {
        let (probs, lat, secs, via) = match &edge_bin {
            Some(bin) => {
                let (p, l, s) = edge_eval(bin, dir, &test_jsonl, test.len())?;
                (p, l, s, "ckd-edge")
            }
            None => {
                let (p, l, s) = trainer_tract_eval(dir, &kd_student.encoder, test)?;
                (p, l, s, "tract in the trainer; ckd-edge binary not found")
            }
        };
        costs.push(CostRow {
            model: format!("student (distilled, {precision} bundle, {via})"),
            role: if precision == "int8" { Role::StudentInt8 } else { Role::Other },
            precision: precision.into(),
            // The model: the graph and its tensors (ONNX external data).
            size_bytes: [ckd_core::bundle::MODEL_FILE, ckd_core::bundle::MODEL_DATA_FILE]
                .iter()
                .map(|f| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len()))
                .sum(),
            latency_ms_median: lat,
            samples_per_s: test.len() as f64 / secs.max(1e-9),
            device: format!("{cpu}, 1 thread"),
        });
        if precision == "int8" {
            models.push(ModelResult {
                name: format!("student (distilled, int8 bundle, {via})"),
                role: Role::StudentInt8,
                probs: rows(&probs),
                labels: test_labels.clone(),
                thresholds: kd_student.thresholds.clone(),
            });
        }
    }
    if let Some(op) = &oracle_path {
        let text = std::fs::read_to_string(op).map_err(stage_err(SR))?;
        let o = Teacher::from_jsonl(&text, op).map_err(stage_err(SR))?;
        let mut probs = Vec::new();
        for id in &test_ids {
            probs.extend_from_slice(o.probs.get(id).ok_or_else(|| msg_err(SR, format!("oracle has no sample {id}")))?);
        }
        let th = ckd_core::metrics::tune_thresholds_label_sets(&probs, &test_labels).map_err(stage_err(SR))?;
        models.push(ModelResult {
            name: "oracle (true generating probabilities)".into(),
            role: Role::Oracle,
            probs: rows(&probs),
            labels: test_labels.clone(),
            thresholds: th,
        });
    }
    // Curves and explanations.
    let mut curves = Vec::new();
    curves.push(
        report::read_curves(&tdir.join("curves.jsonl"), &models[n_baselines].name.clone()).map_err(stage_err(SR))?,
    );
    for run in students {
        curves.push(report::read_curves(&run.dir.join("curves.jsonl"), &run.display).map_err(stage_err(SR))?);
    }
    let by = ev_test.by_id();
    let mut explanations = Vec::new();
    for s in test {
        if explanations.len() >= 4 {
            break;
        }
        let Some(ev) = by.get(s.id.as_str()) else { continue };
        let ex = explain::explain(s, ev, &loaded.manifest.thresholds, 5).map_err(stage_err(SR))?;
        if ex.none_predicted {
            continue;
        }
        if let Some(p) = ex.phenotypes.first() {
            explanations.push(report::Explanation {
                sample_id: s.id.clone(),
                phenotype: p.phenotype.to_string(),
                prob: p.prob,
                concepts: ex.concepts.iter().map(|c| (format!("[{}] {}", c.field, c.text), c.weight)).collect(),
            });
        }
    }
    let synthetic = cfg.data.synth.is_some();
    let mut notes = Vec::new();
    if synthetic {
        notes.push("The data is a synthetic cohort generated by `ckd synth` (MIMIC-III layout, no real patients); the oracle row gives the true probabilities the generator drew the labels from, the ceiling any model can reach.".to_string());
    }
    if cfg.teacher.base == "demo" {
        notes.push(format!(
            "The teacher is the demo teacher: a small Qwen2-architecture model ({}) trained from random weights on this cohort, not Qwen2.5. Use a real Qwen2.5 GGUF or safetensors teacher (teacher.base in pipeline.toml) for the method as published.",
            loaded.manifest.model_name
        ));
    }
    notes.push(format!("Latencies measured on {cpu}; batch 1, median over {lat_n} test samples. They are not a benchmark (see BENCHMARKS.md)."));
    // Every model against the logistic regression (column), and the comparisons that say what
    // distillation added at each label fraction and what int8 cost.
    let lr_name = models.iter().find(|m| m.name.starts_with("logistic regression")).map(|m| m.name.clone());
    let mut comparisons = Vec::new();
    for pair in students.chunks(2) {
        if let [hard, kd] = pair {
            comparisons.push((kd.display.clone(), hard.display.clone()));
        }
    }
    if let Some(int8) = models.iter().find(|m| m.role == Role::StudentInt8) {
        comparisons.push((int8.name.clone(), "student (distilled, f32)".to_string()));
    }
    let input = ReportInput {
        title: cfg.title.clone(),
        data_description: format!(
            "{}: test split of {} samples ({} train, {} val)",
            if synthetic {
                "synthetic cohort"
            } else if cfg.data.mimic.is_some() {
                "MIMIC-III"
            } else {
                "CKD-EHR JSONL"
            },
            test.len(),
            train.len(),
            val.len()
        ),
        notes,
        models,
        curves,
        costs,
        explanations,
        provenance: vec![
            ("ckd".into(), env!("CARGO_PKG_VERSION").into()),
            ("samples.bin sha256".into(), up.samples_hash.clone()),
            ("teacher.json sha256".into(), up.teacher_json_hash.clone()),
            ("settings".into(), serde_json::to_string(cfg).unwrap_or_default()),
        ],
        subjects: test.iter().map(|s| s.subject).collect(),
        reference: lr_name,
        comparisons,
    };
    report::write(rdir, &input).map_err(stage_err(SR))
}
