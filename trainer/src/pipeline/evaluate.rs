//! Stage `report`: every model on the test split (baselines, teacher, students, the bundles
//! through the edge runtime, the oracle), their costs, curves and explanations, written as
//! `report.html` / `report.json` (always re-run: cheap, and it measures).

use std::path::{Path, PathBuf};
use std::time::Instant;

use ckd_core::visit::Sample;
use ckd_core::{LabelSet, NUM_LABELS};

use super::edge_eval::{cpu_name, dir_size, edge_eval, file_size, trainer_tract_eval};
use super::students::StudentRun;
use super::upstream::Upstream;
use super::{msg_err, stage_err, PipelineConfig, Result};
use crate::report::{self, CostRow, ModelResult, ReportInput, ReportJson, Role};
use crate::stats::median;
use crate::student::{self, SoftTargets, TokenizedSamples};
use crate::teacher::{self, explain, label, LoadedTeacher};

/// Stage name in errors.
const STAGE: &str = "report";

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
    bundles: &[PathBuf],
) -> Result<ReportJson> {
    let test = &up.test;
    let test_labels: Vec<_> = test.iter().map(|s| s.labels).collect();
    let test_ids: Vec<String> = test.iter().map(|s| s.id.clone()).collect();
    // Baselines first: every model below is read against them.
    let mut models = crate::baselines::report_rows(&up.train, &up.val, test).map_err(stage_err(STAGE))?;
    let n_baselines = models.len();
    let teacher_probs = label::probs_for(&up.ev_test, &test_ids).map_err(stage_err(STAGE))?;
    models.push(ModelResult {
        name: format!("teacher ({})", up.teacher.manifest.model_name),
        role: Role::Teacher,
        probs: rows(&teacher_probs),
        labels: test_labels.clone(),
        thresholds: up.teacher.manifest.thresholds.clone(),
    });
    let cpu = cpu_name();
    // Batch-1 latencies are medians over the first `lat_n` test samples.
    let lat_n = test.len().min(15);
    let mut costs = vec![teacher_cost(cfg, up, models[n_baselines].name.clone(), lat_n, &cpu)?];
    for run in students {
        let (model, cost) = evaluate_student(run, test, &test_labels, lat_n, &cpu)?;
        costs.extend(cost);
        models.push(model);
    }
    let (bundle_costs, int8_model) = evaluate_bundles(cfg, up, kd, bundles, &test_labels, &cpu)?;
    costs.extend(bundle_costs);
    models.extend(int8_model);
    if let Some(op) = &up.oracle {
        models.push(oracle_model(op, &test_ids, &test_labels)?);
    }
    let curves = read_curves(up, &models[n_baselines].name.clone(), students)?;
    let explanations = explanations(up)?;
    let notes = notes(cfg, &up.teacher, &cpu, lat_n);
    // Every model against the logistic regression (column), and the comparisons that say what
    // distillation added at each label fraction and what int8 cost.
    let lr_name = models.iter().find(|m| m.name.starts_with("logistic regression")).map(|m| m.name.clone());
    let comparisons = comparisons(&models, students);
    let input = ReportInput {
        title: cfg.title.clone(),
        data_description: data_description(cfg, up),
        notes,
        models,
        curves,
        costs,
        explanations,
        provenance: vec![
            ("ckd".into(), env!("CARGO_PKG_VERSION").into()),
            ("samples.bin sha256".into(), up.samples_hash.clone()),
            ("teacher.json sha256".into(), up.teacher_json_hash.clone()),
            ("settings".into(), super::settings_json(STAGE, cfg)?),
        ],
        subjects: test.iter().map(|s| s.subject).collect(),
        reference: lr_name,
        comparisons,
        explanation_scores: explanation_scores(cfg, up, kd, &bundles[1])?,
    };
    report::write(&cfg.out, &input).map_err(stage_err(STAGE))
}

/// The int8 bundle's explanations of the test split through `ckd-edge explain`, scored against
/// the oracle (a synthetic cohort) and with the distilled student's attention evidence against
/// the teacher's; `None` when the `ckd-edge` binary is absent.
fn explanation_scores(
    cfg: &PipelineConfig,
    up: &Upstream,
    kd: &Path,
    bundle: &Path,
) -> Result<Option<report::ExplanationScores>> {
    use crate::{attention_evidence, explain_truth};
    let Some(bin) = edge_binary(cfg) else { return Ok(None) };
    let test = &up.test;
    let (explained, _, secs) = explain_truth::edge_explanations(&bin, bundle, test).map_err(stage_err(STAGE))?;
    let (resamples, seed) = (report::BOOTSTRAP_RESAMPLES, report::BOOTSTRAP_SEED);
    let truth = match &up.oracle {
        Some(_) => Some(explain_truth::score(test, &explained, resamples, seed).map_err(stage_err(STAGE))?),
        None => None,
    };
    let st = student::load_student(kd).map_err(stage_err(STAGE))?;
    let last_k = ATTENTION_LAYERS;
    let att = attention_evidence::concept_evidence(&st, test, last_k).map_err(stage_err(STAGE))?;
    let attention = attention_evidence::score(test, &att, Some(&up.ev_test), Some(&explained), resamples, seed)
        .map_err(stage_err(STAGE))?;
    let figure_svg = test
        .first()
        .and_then(|s| attention_evidence::evidence_figure(s, &att[0], last_k, Some(&up.ev_test), Some(&explained)));
    let description = format!(
        "The distilled student's int8 bundle on the {} test visits through `ckd-edge explain` (each concept left \
         out in turn: {:.1} s in all, {:.3} s a visit, one thread, bundle opening included); its attention: the \
         [CLS] row of the last {last_k} layers in f32.{}",
        test.len(),
        secs,
        secs / test.len().max(1) as f64,
        if truth.is_some() { " Truth: the synthetic generator's oracle with the same concept left out." } else { "" }
    );
    Ok(Some(report::ExplanationScores { description, truth, attention: Some(attention), figure_svg }))
}

/// Final layers whose `[CLS]` attention the explanation scores average (the attention loss's
/// default `last_k_layers`).
const ATTENTION_LAYERS: usize = 4;

/// The teacher's cost row (named `name`): batch-1 latency of the prompt forward (features +
/// head), median over the first `lat_n` test samples; throughput from the labelling stage's
/// test time (`labels/timing.json`, `[train, test]` seconds); size of its files and its base.
fn teacher_cost(cfg: &PipelineConfig, up: &Upstream, name: String, lat_n: usize, cpu: &str) -> Result<CostRow> {
    let test = &up.test;
    let tl = teacher_latencies_ms(&up.teacher, test, lat_n)?;
    // Written by the labels stage with its evidence files: unreadable is an error, not a 0.
    let timing = up.labels_dir.join("timing.json");
    let bad = |e: &dyn std::fmt::Display| msg_err(STAGE, format!("{}: {e}", timing.display()));
    let label_t: [f64; 2] =
        serde_json::from_slice(&std::fs::read(&timing).map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    Ok(CostRow {
        model: name,
        role: Role::Teacher,
        precision: format!("{:?}", up.device.dtype()).to_lowercase(),
        size_bytes: teacher_size(&up.teacher, &up.teacher_dir)?,
        latency_ms_median: median(tl),
        samples_per_s: if label_t[1] > 0.0 { test.len() as f64 / label_t[1] } else { 0.0 },
        device: format!("{} ({})", cfg.teacher.device, cpu),
    })
}

/// Milliseconds of one batch-1 forward (prompt encoding excluded) per sample, for the first
/// `lat_n` samples of `test`.
fn teacher_latencies_ms(loaded: &LoadedTeacher, test: &[Sample], lat_n: usize) -> Result<Vec<f64>> {
    let mut tl = Vec::new();
    for s in test.iter().take(lat_n) {
        let p = loaded.prompts.encode(s).map_err(stage_err(STAGE))?;
        let t = Instant::now();
        let ids = candle_core::Tensor::from_vec(p.ids.clone(), (1, p.ids.len()), loaded.model.device())
            .map_err(stage_err(STAGE))?;
        let o = loaded.model.forward(&ids, None).map_err(stage_err(STAGE))?;
        let _ =
            loaded.head.logits(&o.last_hidden).map_err(stage_err(STAGE))?.to_vec2::<f32>().map_err(stage_err(STAGE))?;
        tl.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(tl)
}

/// Bytes of the teacher's manifest files under `teacher_dir` plus its base model (the demo base
/// lives in those files); a file that cannot be read is an error.
fn teacher_size(loaded: &LoadedTeacher, teacher_dir: &Path) -> Result<u64> {
    let mut total = 0;
    for (rel, _) in &loaded.manifest.files {
        total += file_size(&teacher_dir.join(rel))?;
    }
    Ok(total
        + match &loaded.manifest.base {
            teacher::BaseRef::Gguf { path, .. } => file_size(path)?,
            teacher::BaseRef::Safetensors { path, .. } => dir_size(path)?,
            teacher::BaseRef::Demo => 0,
        })
}

/// One student on the test split: its model row, and its cost row (only for the distilled
/// student at 100% labels: batch-32 throughput, batch-1 latency over the first `lat_n` samples).
fn evaluate_student(
    run: &StudentRun,
    test: &[Sample],
    test_labels: &[LabelSet],
    lat_n: usize,
    cpu: &str,
) -> Result<(ModelResult, Option<CostRow>)> {
    let (dir, name) = (&run.dir, run.display.as_str());
    let role = if run.distilled { Role::StudentDistilled } else { Role::Student };
    let st = student::load_student(dir).map_err(stage_err(STAGE))?;
    let p = TokenizedSamples::new(test, &st.encoder).map_err(stage_err(STAGE))?;
    let t = Instant::now();
    let probs = student::predict(&st.model, &p, st.encoder.pad_id, 32).map_err(stage_err(STAGE))?;
    let batch_secs = t.elapsed().as_secs_f64();
    let mut sl = Vec::new();
    for i in 0..lat_n {
        let one = single(&p, i);
        let t = Instant::now();
        student::predict(&st.model, &one, st.encoder.pad_id, 1).map_err(stage_err(STAGE))?;
        sl.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let size_bytes = file_size(&dir.join("model.safetensors"))?;
    let cost = (role == Role::StudentDistilled && run.fraction >= 1.0).then(|| CostRow {
        model: format!("{name} (candle)"),
        role,
        precision: "f32".into(),
        size_bytes,
        latency_ms_median: median(sl),
        samples_per_s: test.len() as f64 / batch_secs.max(1e-9),
        device: cpu.to_string(),
    });
    let model = ModelResult {
        name: name.into(),
        role,
        probs: rows(&probs),
        labels: test_labels.to_vec(),
        thresholds: st.thresholds.clone(),
    };
    Ok((model, cost))
}

/// Sample `i` of `p` alone (a batch of one).
fn single(p: &TokenizedSamples, i: usize) -> TokenizedSamples {
    TokenizedSamples {
        ids: vec![p.ids[i].clone()],
        texts: vec![p.texts[i].clone()],
        enc: vec![p.enc[i].clone()],
        labels: vec![p.labels[i]],
        subjects: vec![p.subjects[i]],
        spans: vec![p.spans[i].clone()],
        truncated: 0,
    }
}

/// The f32 and int8 bundles (`bundles[0]`, `bundles[1]`) through the edge runtime (the
/// `ckd-edge` binary: the same code a device runs), or, when that binary is absent, through
/// tract inside the trainer. Returns a cost row per bundle (f32 first) and the int8 model row;
/// thresholds are those of the distilled student in `kd`.
fn evaluate_bundles(
    cfg: &PipelineConfig,
    up: &Upstream,
    kd: &Path,
    bundles: &[PathBuf],
    test_labels: &[LabelSet],
    cpu: &str,
) -> Result<(Vec<CostRow>, Option<ModelResult>)> {
    let test = &up.test;
    let kd_student = student::load_student(kd).map_err(stage_err(STAGE))?;
    let edge_bin = edge_binary(cfg);
    let test_jsonl = up.samples_dir.join("test.jsonl");
    let mut costs = Vec::new();
    let mut int8_model = None;
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
            size_bytes: file_size(&dir.join(ckd_core::bundle::MODEL_FILE))?
                + file_size(&dir.join(ckd_core::bundle::MODEL_DATA_FILE))?,
            latency_ms_median: lat,
            samples_per_s: test.len() as f64 / secs.max(1e-9),
            device: format!("{cpu}, 1 thread"),
        });
        if precision == "int8" {
            int8_model = Some(ModelResult {
                name: format!("student (distilled, int8 bundle, {via})"),
                role: Role::StudentInt8,
                probs: rows(&probs),
                labels: test_labels.to_vec(),
                thresholds: kd_student.thresholds.clone(),
            });
        }
    }
    Ok((costs, int8_model))
}

/// `edge.bin` when set, else a `ckd-edge` executable next to the running one, else `None`.
fn edge_binary(cfg: &PipelineConfig) -> Option<PathBuf> {
    cfg.edge.bin.clone().or_else(super::edge_eval::edge_binary_beside_exe)
}

/// The oracle's model row: the generating probabilities of every test sample read from the
/// JSONL at `op`, thresholds tuned on the test labels. A sample missing from the file is an error.
fn oracle_model(op: &Path, test_ids: &[String], test_labels: &[LabelSet]) -> Result<ModelResult> {
    let text = std::fs::read_to_string(op).map_err(stage_err(STAGE))?;
    let o = SoftTargets::from_jsonl(&text, op).map_err(stage_err(STAGE))?;
    let mut probs = Vec::new();
    for id in test_ids {
        probs.extend_from_slice(o.probs.get(id).ok_or_else(|| msg_err(STAGE, format!("oracle has no sample {id}")))?);
    }
    let th = ckd_core::metrics::tune_thresholds_label_sets(&probs, test_labels).map_err(stage_err(STAGE))?;
    Ok(ModelResult {
        name: "oracle (true generating probabilities)".into(),
        role: Role::Oracle,
        probs: rows(&probs),
        labels: test_labels.to_vec(),
        thresholds: th,
    })
}

/// Training curves: the teacher's (named `teacher_name`) first, then each student's in order.
fn read_curves(up: &Upstream, teacher_name: &str, students: &[StudentRun]) -> Result<Vec<report::Curve>> {
    let mut curves = Vec::new();
    curves.push(report::read_curves(&up.teacher_dir.join("curves.jsonl"), teacher_name).map_err(stage_err(STAGE))?);
    for run in students {
        curves.push(report::read_curves(&run.dir.join("curves.jsonl"), &run.display).map_err(stage_err(STAGE))?);
    }
    Ok(curves)
}

/// Up to 4 teacher explanations: the first test samples (in order) that have evidence and a
/// predicted phenotype, each with its top phenotype and top-5 concepts.
fn explanations(up: &Upstream) -> Result<Vec<report::Explanation>> {
    let loaded = &up.teacher;
    let by = up.ev_test.by_id();
    let mut explanations = Vec::new();
    for s in &up.test {
        if explanations.len() >= 4 {
            break;
        }
        let Some(ev) = by.get(s.id.as_str()) else { continue };
        let ex = explain::explain(s, ev, &loaded.manifest.thresholds, 5).map_err(stage_err(STAGE))?;
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
    Ok(explanations)
}

/// The report's notes: the synthetic cohort, the demo teacher (each when it applies), and where
/// latencies were measured.
fn notes(cfg: &PipelineConfig, loaded: &LoadedTeacher, cpu: &str, lat_n: usize) -> Vec<String> {
    let mut notes = Vec::new();
    if cfg.data.synth.is_some() {
        notes.push("The data is a synthetic cohort generated by `ckd synth` (MIMIC-III layout, no real patients); the oracle row gives the true probabilities the generator drew the labels from, the ceiling any model can reach.".to_string());
    }
    if cfg.teacher.base == "demo" {
        notes.push(format!(
            "The teacher is the demo teacher: a small Qwen2-architecture model ({}) trained from random weights on this cohort, not Qwen2.5. Use a real Qwen2.5 GGUF or safetensors teacher (teacher.base in pipeline.toml) for the method as published.",
            loaded.manifest.model_name
        ));
    }
    notes.push(format!("Latencies measured on {cpu}; batch 1, median over {lat_n} test samples. They are not a benchmark (see BENCHMARKS.md)."));
    notes
}

/// (model, against) pairs: each distilled student against the hard-label student trained on the
/// same fraction (`students` holds them as consecutive [hard, kd] pairs), then the int8 bundle
/// against the f32 student when there is one.
fn comparisons(models: &[ModelResult], students: &[StudentRun]) -> Vec<(String, String)> {
    let mut comparisons = Vec::new();
    for pair in students.chunks(2) {
        if let [hard, kd] = pair {
            comparisons.push((kd.display.clone(), hard.display.clone()));
        }
    }
    if let Some(int8) = models.iter().find(|m| m.role == Role::StudentInt8) {
        comparisons.push((int8.name.clone(), "student (distilled, f32)".to_string()));
    }
    comparisons
}

/// What the test data is, with the split sizes.
fn data_description(cfg: &PipelineConfig, up: &Upstream) -> String {
    format!(
        "{}: test split of {} samples ({} train, {} val)",
        if cfg.data.synth.is_some() {
            "synthetic cohort"
        } else if cfg.data.mimic.is_some() {
            "MIMIC-III"
        } else {
            "CKD-EHR JSONL"
        },
        up.test.len(),
        up.train.len(),
        up.val.len()
    )
}
