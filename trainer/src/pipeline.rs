//! `ckd pipeline` and `ckd demo`: every stage from data to report, resumable.
//!
//! Stages, each in its own directory under `out/`:
//!
//! | stage | output | inputs of its key |
//! |---|---|---|
//! | `cohort` (synthetic data only) | MIMIC-III CSVs + `oracle.jsonl` | synth settings |
//! | `samples` | `samples.bin`, JSONL splits, knowledge | data files' content, ingest settings |
//! | `teacher` | teacher directory | `samples.bin`, teacher settings |
//! | `labels` | `evidence-train.bin`, `evidence-test.bin` | `teacher.json`, samples, label settings |
//! | `student-hard`, `student-kd` | student directories | samples, (evidence), student settings |
//! | `bundle-f32`, `bundle-int8` | bundles | the distilled student |
//! | `report` | `report.html`, `report.json`, `plots/` | everything above |
//!
//! A stage's key is the SHA-256 of its settings and of the content hashes of its input files; it
//! is written to `stage.json` when the stage completes. A stage whose `stage.json` holds the same
//! key is skipped, so an interrupted run resumes at the first unfinished stage and a changed
//! setting or input re-runs exactly the stages downstream of it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use ckd_core::knowledge::{KnowledgeConfig, KnowledgeTable};
use ckd_core::split::SplitConfig;
use ckd_core::visit::{Sample, Split};
use ckd_core::NUM_LABELS;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::distill::DistillConfig;
use crate::export::tract_run::TractModel;
use crate::export::Precision;
use crate::ingest::{self, IngestConfig};
use crate::io::{pretty_json, write_atomic};
use crate::models::bert::{BertForMultiLabel, Config as BertConfig, HeadConfig as BertHead, Pooling};
use crate::models::lora::LoraConfig;
use crate::report::{self, CostRow, ModelResult, ReportInput, Role};
use crate::student::{self, Prepared, Preset, StudentConfig, Teacher, TrainConfig, TrainOutcome};
use crate::synth;
use crate::teacher::demo::DemoConfig;
use crate::teacher::head::HeadConfig;
use crate::teacher::label::{self, LabelConfig};
use crate::teacher::sft::SftConfig;
use crate::teacher::train::{train_teacher, Bars, BaseChoice, TrainTeacherConfig};
use crate::teacher::{self, explain, DeviceSpec};
use crate::text::TextEncoder;

/// Error of a pipeline stage: which stage, and why.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Settings are invalid.
    #[error("pipeline settings: {0}")]
    Config(String),
    /// A stage failed.
    #[error("stage `{stage}`: {source}")]
    Stage {
        /// Stage name.
        stage: &'static str,
        /// Cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

type Result<T, E = PipelineError> = std::result::Result<T, E>;

fn stage_err<E: std::error::Error + Send + Sync + 'static>(stage: &'static str) -> impl FnOnce(E) -> PipelineError {
    move |e| PipelineError::Stage { stage, source: Box::new(e) }
}

fn msg_err(stage: &'static str, msg: String) -> PipelineError {
    PipelineError::Stage { stage, source: msg.into() }
}

// ---------------------------------------------------------------------------------------------
// Settings (pipeline.toml)
// ---------------------------------------------------------------------------------------------

/// Where the data comes from: exactly one of the three.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// A MIMIC-III directory.
    pub mimic: Option<PathBuf>,
    /// A CKD-EHR JSONL file.
    pub jsonl: Option<PathBuf>,
    /// A synthetic cohort generated here.
    pub synth: Option<SynthSpec>,
}

/// Synthetic cohort settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthSpec {
    /// Patients.
    pub patients: usize,
    /// Seed.
    #[serde(default = "seven")]
    pub seed: u64,
}

fn seven() -> u64 {
    7
}

/// Ingest settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSpec {
    /// Patient-level split seed.
    pub split_seed: u64,
    /// Train fraction of patients.
    pub train_frac: f64,
    /// Validation fraction of patients.
    pub val_frac: f64,
    /// Add knowledge clauses.
    pub knowledge: bool,
    /// Minimum support of a drug in the knowledge statistic.
    pub knowledge_min_support: u32,
    /// Skip and count malformed rows instead of failing.
    pub lenient: bool,
}

impl Default for IngestSpec {
    fn default() -> Self {
        Self {
            split_seed: 42,
            train_frac: 0.8,
            val_frac: 0.1,
            knowledge: true,
            knowledge_min_support: 5,
            lenient: false,
        }
    }
}

/// Teacher settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TeacherSpec {
    /// `"demo"` (a small Qwen2-architecture model trained here) or a GGUF file / HF directory.
    pub base: String,
    /// Demo model size.
    pub demo: DemoConfig,
    /// LoRA settings (pretrained bases).
    pub lora: LoraConfig,
    /// Fine-tuning.
    pub sft: SftConfig,
    /// Head training.
    pub head: HeadConfig,
    /// Maximum prompt tokens.
    pub max_len: usize,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Prompts per forward pass (features, labelling).
    pub batch_size: usize,
    /// Soft-label temperature.
    pub temperature: f32,
    /// Final layers averaged for the evidence.
    pub last_k_layers: usize,
    /// Validation samples for the fine-tuning loss.
    pub sft_val_limit: usize,
    /// Soft labels of the training rows from this many out-of-fold heads (folds by patient;
    /// see `teacher::oof`); 0 = the final head's in-sample probabilities.
    pub oof_folds: usize,
}

impl Default for TeacherSpec {
    fn default() -> Self {
        Self {
            base: "demo".into(),
            demo: DemoConfig::default(),
            lora: LoraConfig::default(),
            sft: SftConfig::default(),
            head: HeadConfig::default(),
            max_len: 768,
            device: "cpu".into(),
            batch_size: 8,
            temperature: 1.0,
            last_k_layers: 4,
            sft_val_limit: 64,
            oof_folds: 5,
        }
    }
}

/// Student settings (both students: without and with distillation, same seeds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StudentSpec {
    /// Size when trained from scratch.
    pub preset: Preset,
    /// What the head reads ([CLS] or the mean over tokens).
    pub pooling: Pooling,
    /// A BERT checkpoint directory to start from instead (config.json, model.safetensors,
    /// tokenizer.json).
    pub init: Option<PathBuf>,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Maximum tokens.
    pub max_len: usize,
    /// WordPiece vocabulary size (from scratch).
    pub vocab_size: usize,
    /// Seed.
    pub seed: u64,
    /// Early-stopping patience (0 = off).
    pub patience: usize,
    /// Loss weights of the distilled student (the other one uses hard labels only).
    pub distill: DistillConfig,
    /// Learning-rate multiplier of the classification head (see `TrainConfig::head_lr_scale`).
    pub head_lr_scale: f64,
    /// Shares of the training samples that keep their hard labels; at each, one student
    /// without and one with distillation (teacher soft labels for every sample) are trained.
    pub label_fractions: Vec<f64>,
}

impl Default for StudentSpec {
    fn default() -> Self {
        Self {
            preset: Preset::Tiny,
            // Mean pooling and a fast head: measured on the demo cohort, the [CLS] student and a
            // head at the encoder's learning rate stay at the label priors (README, "Student").
            pooling: Pooling::Mean,
            init: None,
            epochs: 8,
            batch_size: 16,
            lr: 1e-3,
            max_len: 256,
            vocab_size: 4000,
            seed: 42,
            patience: 0,
            distill: DistillConfig::default(),
            head_lr_scale: 100.0,
            label_fractions: vec![1.0],
        }
    }
}

/// Edge evaluation settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeSpec {
    /// The `ckd-edge` binary (default: next to the running `ckd`).
    pub bin: Option<PathBuf>,
}

/// `pipeline.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Output directory.
    pub out: PathBuf,
    /// Data.
    pub data: DataSpec,
    /// Ingest.
    #[serde(default)]
    pub ingest: IngestSpec,
    /// Teacher.
    #[serde(default)]
    pub teacher: TeacherSpec,
    /// Students.
    #[serde(default)]
    pub student: StudentSpec,
    /// Edge evaluation.
    #[serde(default)]
    pub edge: EdgeSpec,
    /// Title of the report.
    #[serde(default = "default_title")]
    pub title: String,
}

fn default_title() -> String {
    "CKD-EHR pipeline report".into()
}

impl PipelineConfig {
    /// Parses `pipeline.toml` text; relative paths are taken relative to `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Self> {
        let mut c: Self = toml::from_str(text).map_err(|e| PipelineError::Config(e.to_string()))?;
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base_dir.join(&*p);
            }
        };
        fix(&mut c.out);
        for p in [&mut c.data.mimic, &mut c.data.jsonl, &mut c.student.init, &mut c.edge.bin].into_iter().flatten() {
            fix(p);
        }
        if c.teacher.base != "demo" {
            let mut p = PathBuf::from(&c.teacher.base);
            fix(&mut p);
            c.teacher.base = p.to_string_lossy().into_owned();
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks the settings that serde cannot.
    pub fn validate(&self) -> Result<()> {
        let n = [self.data.mimic.is_some(), self.data.jsonl.is_some(), self.data.synth.is_some()]
            .iter()
            .filter(|&&b| b)
            .count();
        if n != 1 {
            return Err(PipelineError::Config("[data] needs exactly one of `mimic`, `jsonl`, `synth`".into()));
        }
        let i = &self.ingest;
        if !((0.0..=1.0).contains(&i.train_frac)
            && (0.0..=1.0).contains(&i.val_frac)
            && i.train_frac + i.val_frac < 1.0)
        {
            return Err(PipelineError::Config(
                "[ingest] train_frac + val_frac must be < 1 (a test split is needed)".into(),
            ));
        }
        self.teacher.device.parse::<DeviceSpec>().map_err(PipelineError::Config)?;
        self.student.distill.validate().map_err(|e| PipelineError::Config(e.to_string()))?;
        let f = &self.student.label_fractions;
        if !f.contains(&1.0) || f.iter().any(|x| !(*x > 0.0 && *x <= 1.0)) {
            return Err(PipelineError::Config(format!(
                "[student] label_fractions = {f:?}: each must be in (0, 1], and 1.0 must be among them (its distilled student is exported)"
            )));
        }
        if self.student.distill.soft <= 0.0 && !self.student.distill.uses_attention() {
            return Err(PipelineError::Config(
                "[student.distill] gives the teacher no weight (soft and attn_* all 0)".into(),
            ));
        }
        Ok(())
    }

    /// The demo: a synthetic cohort of `patients`, the demo teacher, tiny students; sized to run
    /// in minutes on 2 CPU cores.
    pub fn demo(out: PathBuf, patients: usize, seed: u64) -> Self {
        Self {
            out,
            data: DataSpec { synth: Some(SynthSpec { patients, seed }), ..Default::default() },
            ingest: IngestSpec::default(),
            teacher: TeacherSpec {
                sft: SftConfig {
                    epochs: 1,
                    batch_size: 8,
                    lr: 2e-3,
                    warmup_frac: 0.05,
                    aux_head_weight: 1.0,
                    ..Default::default()
                },
                ..Default::default()
            },
            student: StudentSpec { label_fractions: vec![1.0, 0.1], ..StudentSpec::default() },
            edge: EdgeSpec::default(),
            title: "ckd demo: synthetic cohort, demo teacher".into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stage bookkeeping
// ---------------------------------------------------------------------------------------------

/// SHA-256 (hex) over labelled parts.
fn key_of(parts: &[(&str, String)]) -> String {
    let mut h = Sha256::new();
    for (k, v) in parts {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    ckd_core::format::hex(&h.finalize())
}

fn file_hash(stage: &'static str, p: &Path) -> Result<String> {
    teacher::file_sha256(p).map_err(stage_err(stage))
}

#[derive(Serialize, Deserialize)]
struct StageRecord {
    key: String,
    seconds: f64,
}

/// Whether `dir/stage.json` records `key`.
fn is_done(dir: &Path, key: &str) -> bool {
    std::fs::read(dir.join("stage.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<StageRecord>(&b).ok())
        .is_some_and(|r| r.key == key)
}

fn mark_done(stage: &'static str, dir: &Path, key: &str, seconds: f64) -> Result<()> {
    let p = dir.join("stage.json");
    write_atomic(&p, pretty_json(&StageRecord { key: key.into(), seconds }).as_bytes()).map_err(stage_err(stage))
}

/// Drops `dir/stage.json` before a stage re-runs, so a crash mid-stage never looks finished.
fn invalidate(stage: &'static str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(stage_err(stage))?;
    match std::fs::remove_file(dir.join("stage.json")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(stage_err(stage)(e)),
        _ => Ok(()),
    }
}

/// Terminal progress bars for the stages.
pub struct TermBars;

impl Bars for TermBars {
    fn bar(&self, name: &str) -> ProgressBar {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(&format!("{name:>26} {{bar:30}} {{pos}}/{{len}} {{msg}} ETA {{eta}}"))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    }
}

/// What a run reports back.
#[derive(Debug, Clone)]
pub struct PipelineOutcome {
    /// Report directory.
    pub report_dir: PathBuf,
    /// The summary table (also printed by the command).
    pub summary: String,
    /// Stages skipped because their outputs were current.
    pub skipped: Vec<&'static str>,
    /// Wall seconds of the whole run.
    pub seconds: f64,
}

// ---------------------------------------------------------------------------------------------
// Student training as a library call (the `ckd student train` command uses it too)
// ---------------------------------------------------------------------------------------------

/// One student training job.
pub struct StudentJob<'a> {
    /// Training samples.
    pub train: &'a [Sample],
    /// Validation samples.
    pub val: &'a [Sample],
    /// Teacher outputs (required when the loss gives them weight).
    pub teacher: Option<&'a Teacher>,
    /// Start from a BERT checkpoint directory instead of a preset.
    pub init: Option<&'a Path>,
    /// Preset when training from scratch.
    pub preset: Preset,
    /// What the head reads.
    pub pooling: Pooling,
    /// WordPiece vocabulary size (from scratch).
    pub vocab_size: usize,
    /// Maximum tokens.
    pub max_len: usize,
    /// Loop settings.
    pub cfg: TrainConfig,
    /// Continue from the checkpoint in `out`.
    pub resume: bool,
    /// Output directory.
    pub out: &'a Path,
    /// Knowledge table the texts were rendered with (saved beside the student).
    pub knowledge: Option<&'a KnowledgeTable>,
    /// Extra provenance (data paths and hashes).
    pub provenance: serde_json::Value,
}

/// One student of the pipeline: with or without distillation, at a label fraction.
#[derive(Debug, Clone)]
struct StudentRun {
    distilled: bool,
    fraction: f64,
    /// Output directory name under the run (`student-hard`, `student-kd` at 100% labels, as
    /// before label fractions existed; `student-hard-10pct`... otherwise).
    dir_name: String,
    /// Row name in the report.
    display: String,
    dir: PathBuf,
}

impl StudentRun {
    fn new(distilled: bool, fraction: f64) -> Self {
        let kind = if distilled { "kd" } else { "hard" };
        let pct = fraction * 100.0;
        let pct_s = if (pct - pct.round()).abs() < 1e-9 { format!("{pct:.0}") } else { format!("{pct}") };
        let (dir_name, display) = if fraction >= 1.0 {
            (
                format!("student-{kind}"),
                if distilled { "student (distilled, f32)".to_string() } else { "student (hard labels)".to_string() },
            )
        } else {
            (
                format!("student-{kind}-{pct_s}pct"),
                if distilled {
                    format!("student (distilled, f32, {pct_s}% labels)")
                } else {
                    format!("student (hard labels, {pct_s}% labels)")
                },
            )
        };
        StudentRun { distilled, fraction, dir_name, display, dir: PathBuf::new() }
    }
}

/// Trains and saves a student. Returns the outcome and the number of truncated training texts.
pub fn train_student(job: &StudentJob<'_>, bar: &ProgressBar) -> Result<TrainOutcome, student::StudentError> {
    let head = BertHead { pooling: job.pooling, ..BertHead::default() };
    let dev = Device::Cpu;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| student::StudentError::Io { path: p, source }
    };
    std::fs::create_dir_all(job.out).map_err(io(job.out))?;
    let (encoder, bert_cfg, model, varmap, init) = match job.init {
        Some(dir) => {
            let cp = dir.join("config.json");
            let text = std::fs::read_to_string(&cp).map_err(io(&cp))?;
            let bert_cfg = BertConfig::from_json(&text)?;
            let encoder =
                TextEncoder::from_file(&dir.join("tokenizer.json"), job.max_len.min(bert_cfg.max_position_embeddings))?;
            let tensors = crate::models::bert::read_safetensors(&dir.join("model.safetensors"), &dev)?;
            let loaded = BertForMultiLabel::from_checkpoint(&tensors, &bert_cfg, &head, &dev, job.cfg.seed)?;
            tracing::info!("init from {}: {}", dir.display(), loaded.report);
            (encoder, bert_cfg, loaded.model, loaded.varmap, format!("checkpoint {}", dir.display()))
        }
        None => {
            let tp = job.out.join("tokenizer.json");
            let encoder = if job.resume && tp.is_file() {
                TextEncoder::from_file(&tp, job.max_len)?
            } else {
                let texts: Vec<String> = job.train.iter().map(|s| s.text()).collect();
                TextEncoder::train_wordpiece(texts.iter().map(String::as_str), job.vocab_size, job.max_len)?
            };
            write_atomic(&tp, encoder.to_json()?.as_bytes()).map_err(io(&tp))?;
            let bert_cfg = job.preset.config(encoder.vocab_size(), job.max_len);
            let (model, varmap) = BertForMultiLabel::init(&bert_cfg, &head, &dev, job.cfg.seed)?;
            (encoder, bert_cfg, model, varmap, format!("from scratch ({:?})", job.preset))
        }
    };
    let tp = Prepared::new(job.train, &encoder)?;
    let vp = Prepared::new(job.val, &encoder)?;
    let run = student::Run {
        model: &model,
        varmap: &varmap,
        encoder: &encoder,
        train: &tp,
        val: &vp,
        teacher: job.teacher,
        cfg: &job.cfg,
        dir: job.out,
        progress: bar,
    };
    let outcome = student::train(&run, job.resume)?;
    if !outcome.finished {
        return Ok(outcome);
    }
    let provenance = serde_json::json!({
        "created_by": format!("ckd {}", env!("CARGO_PKG_VERSION")),
        "data": job.provenance,
        "train_samples": tp.len(),
        "val_samples": vp.len(),
        "train_truncated": tp.truncated,
        "init": init,
        "teacher": job.teacher.and_then(|t| t.identity.clone()),
        "train_config": job.cfg,
        "outcome": outcome,
    });
    let scfg = StudentConfig { bert: bert_cfg, head, max_len: encoder.max_len() };
    student::save_student(job.out, &scfg, &varmap, &encoder, &outcome.thresholds, &provenance)?;
    let kp = job.out.join("knowledge.json");
    write_atomic(&kp, pretty_json(&job.knowledge).as_bytes()).map_err(io(&kp))?;
    Ok(outcome)
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

fn split_of(samples: &[Sample], split: Split) -> Vec<Sample> {
    samples.iter().filter(|s| s.split == split).cloned().collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

fn rows(probs: &[f32]) -> Vec<Vec<f32>> {
    probs.chunks(NUM_LABELS).map(<[f32]>::to_vec).collect()
}

/// A short description of this machine's CPU for the cost table.
fn cpu_name() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model}, {threads} threads")
}

/// Probabilities [N * 25] of a bundle on `test.jsonl` through the `ckd-edge` binary
/// (`predict`), with the median batch-1 latency in ms and the wall seconds of `eval`.
fn edge_eval(bin: &Path, bundle: &Path, test_jsonl: &Path, n: usize) -> Result<(Vec<f32>, f64, f64)> {
    const SR: &str = "report";
    let run = |args: &[&std::ffi::OsStr]| -> Result<std::process::Output> {
        let o = std::process::Command::new(bin)
            .args(args)
            .output()
            .map_err(|e| msg_err(SR, format!("{}: {e}", bin.display())))?;
        if !o.status.success() {
            return Err(msg_err(
                SR,
                format!("{} failed: {}", bin.display(), String::from_utf8_lossy(&o.stderr).trim()),
            ));
        }
        Ok(o)
    };
    let o = run(&[
        "predict".as_ref(),
        "--bundle".as_ref(),
        bundle.as_os_str(),
        "--input".as_ref(),
        test_jsonl.as_os_str(),
    ])?;
    let mut probs = Vec::with_capacity(n * NUM_LABELS);
    for line in String::from_utf8_lossy(&o.stdout).lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(stage_err(SR))?;
        let map = v["probabilities"]
            .as_object()
            .ok_or_else(|| msg_err(SR, format!("ckd-edge output without probabilities: {line}")))?;
        for ph in ckd_core::PHENOTYPES.iter() {
            let p = map
                .get(ph.name)
                .and_then(serde_json::Value::as_f64)
                .ok_or_else(|| msg_err(SR, format!("ckd-edge output lacks {}", ph.name)))?;
            probs.push(p as f32);
        }
    }
    if probs.len() != n * NUM_LABELS {
        return Err(msg_err(SR, format!("ckd-edge predicted {} samples, expected {n}", probs.len() / NUM_LABELS)));
    }
    let tmp = bundle.join("eval-test.json");
    let t = Instant::now();
    run(&[
        "eval".as_ref(),
        "--bundle".as_ref(),
        bundle.as_os_str(),
        "--data".as_ref(),
        test_jsonl.as_os_str(),
        "--json".as_ref(),
        tmp.as_os_str(),
    ])?;
    let secs = t.elapsed().as_secs_f64();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&tmp).map_err(stage_err(SR))?).map_err(stage_err(SR))?;
    let lat = v["latency"]["median_ms_per_sample"]
        .as_f64()
        .ok_or_else(|| msg_err(SR, "ckd-edge eval JSON without latency".into()))?;
    Ok((probs, lat, secs))
}

/// The same through tract inside the trainer (stock tract ops), for when `ckd-edge` is absent.
fn trainer_tract_eval(bundle: &Path, enc: &TextEncoder, test: &[Sample]) -> Result<(Vec<f32>, f64, f64)> {
    const SR: &str = "report";
    let m = TractModel::load_path(&bundle.join(ckd_core::bundle::MODEL_FILE)).map_err(stage_err(SR))?;
    let mut probs = Vec::with_capacity(test.len() * NUM_LABELS);
    let mut lat = Vec::new();
    let t_all = Instant::now();
    for s in test {
        let e = enc.encode(&s.text()).map_err(stage_err(SR))?;
        let ids: Vec<i64> = e.ids.iter().map(|&x| x as i64).collect();
        let mask = vec![1i64; ids.len()];
        let t = Instant::now();
        let logits = m.run(&ids, &mask, 1, ids.len()).map_err(stage_err(SR))?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        probs.extend(logits.iter().map(|&z| 1.0 / (1.0 + (-z).exp())));
    }
    Ok((probs, median(lat), t_all.elapsed().as_secs_f64()))
}

/// Runs (or resumes) the whole pipeline.
pub fn run(cfg: &PipelineConfig, bars: &dyn Bars) -> Result<PipelineOutcome> {
    cfg.validate()?;
    let t_all = Instant::now();
    let out = &cfg.out;
    let mut skipped = Vec::new();
    // Progress notes; a failing stderr must not stop (or panic) the run.
    let log = |s: &str| {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "[ckd] {s}");
    };

    // 1. Data.
    let (data_dir, data_key, oracle_path) = if let Some(s) = &cfg.data.synth {
        const ST: &str = "cohort";
        let dir = out.join("cohort");
        let key = key_of(&[("synth", serde_json::to_string(s).unwrap_or_default()), ("v", "1".into())]);
        if is_done(&dir, &key) {
            skipped.push(ST);
        } else {
            invalidate(ST, &dir)?;
            let t = Instant::now();
            let c = synth::generate(&synth::SynthConfig { patients: s.patients, seed: s.seed, ..Default::default() });
            let w = synth::write_cohort(&c, &dir).map_err(stage_err(ST))?;
            log(&format!("cohort: {} patients, {} admissions, {} next-visit pairs", w.patients, w.admissions, w.pairs));
            mark_done(ST, &dir, &key, t.elapsed().as_secs_f64())?;
        }
        let oracle = dir.join("oracle.jsonl");
        (Some(dir), key, Some(oracle))
    } else if let Some(m) = &cfg.data.mimic {
        let mut parts = Vec::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(m)
            .map_err(|e| msg_err("samples", format!("{}: {e}", m.display())))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        for p in entries {
            parts.push((
                p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                file_hash("samples", &p)?,
            ));
        }
        let parts: Vec<(&str, String)> = parts.iter().map(|(a, b)| (a.as_str(), b.clone())).collect();
        (Some(m.clone()), key_of(&parts), None)
    } else {
        let j = cfg.data.jsonl.as_ref().ok_or_else(|| PipelineError::Config("no data".into()))?;
        (None, key_of(&[("jsonl", file_hash("samples", j)?)]), None)
    };

    // 2. Samples.
    const SS: &str = "samples";
    let sdir = out.join("samples");
    let ingest_cfg = IngestConfig {
        lenient: cfg.ingest.lenient,
        split: SplitConfig { seed: cfg.ingest.split_seed, train: cfg.ingest.train_frac, val: cfg.ingest.val_frac },
        knowledge: cfg
            .ingest
            .knowledge
            .then_some(KnowledgeConfig { min_support: cfg.ingest.knowledge_min_support, ..Default::default() }),
    };
    let skey = key_of(&[("data", data_key), ("ingest", serde_json::to_string(&cfg.ingest).unwrap_or_default())]);
    if is_done(&sdir, &skey) {
        skipped.push(SS);
    } else {
        invalidate(SS, &sdir)?;
        let t = Instant::now();
        let ing = match (&data_dir, &cfg.data.jsonl) {
            (Some(d), _) => ingest::ingest_mimic(d, &ingest_cfg, &mut |_, _| {}).map_err(stage_err(SS))?,
            (None, Some(j)) => ingest::ingest_jsonl(j, &ingest_cfg).map_err(stage_err(SS))?,
            (None, None) => return Err(PipelineError::Config("no data".into())),
        };
        ingest::write_outputs(&ing, &sdir).map_err(stage_err(SS))?;
        log(&format!("samples: {} next-visit samples", ing.file.samples.len()));
        mark_done(SS, &sdir, &skey, t.elapsed().as_secs_f64())?;
    }
    let samples_bin = sdir.join("samples.bin");
    let sfile = ingest::read_samples(&samples_bin).map_err(stage_err(SS))?;
    let samples_hash = file_hash(SS, &samples_bin)?;
    let knowledge = sfile.knowledge.clone();
    let (train, val, test) = (
        split_of(&sfile.samples, Split::Train),
        split_of(&sfile.samples, Split::Val),
        split_of(&sfile.samples, Split::Test),
    );
    if train.is_empty() || val.is_empty() || test.is_empty() {
        return Err(msg_err(
            SS,
            format!("need samples in every split (train {}, val {}, test {})", train.len(), val.len(), test.len()),
        ));
    }
    log(&format!("splits: {} train, {} val, {} test", train.len(), val.len(), test.len()));

    // 3. Teacher.
    const ST: &str = "teacher";
    let tdir = out.join("teacher");
    let device: DeviceSpec = cfg.teacher.device.parse().map_err(PipelineError::Config)?;
    let base = if cfg.teacher.base == "demo" {
        BaseChoice::Demo(cfg.teacher.demo.clone())
    } else {
        BaseChoice::Pretrained(PathBuf::from(&cfg.teacher.base))
    };
    let tspec = TrainTeacherConfig {
        base,
        lora: cfg.teacher.lora.clone(),
        sft: cfg.teacher.sft.clone(),
        head: cfg.teacher.head.clone(),
        max_len: cfg.teacher.max_len,
        device,
        feature_batch: cfg.teacher.batch_size,
        sft_val_limit: cfg.teacher.sft_val_limit,
    };
    let base_hash = match &tspec.base {
        BaseChoice::Demo(_) => String::new(),
        BaseChoice::Pretrained(p) if p.is_file() => file_hash(ST, p)?,
        BaseChoice::Pretrained(p) => p.display().to_string(),
    };
    let tkey = key_of(&[
        ("samples", samples_hash.clone()),
        ("base", base_hash),
        (
            "teacher",
            serde_json::to_string(&(
                &cfg.teacher.base,
                &cfg.teacher.demo,
                &cfg.teacher.lora,
                &cfg.teacher.sft,
                &cfg.teacher.head,
                cfg.teacher.max_len,
                cfg.teacher.sft_val_limit,
            ))
            .unwrap_or_default(),
        ),
    ]);
    if is_done(&tdir, &tkey) {
        skipped.push(ST);
    } else {
        invalidate(ST, &tdir)?;
        let t = Instant::now();
        let (_, rep) = train_teacher(&train, &val, &tspec, &tdir, bars).map_err(stage_err(ST))?;
        log(&format!(
            "teacher: {} fine-tuning steps ({:.1} seq/s), head val macro-F1 {:.3}, macro-AUC {}",
            rep.sft.steps,
            rep.sft.samples_per_sec,
            rep.head.val_macro_f1,
            report::fmt3(rep.head.val_macro_auc)
        ));
        mark_done(ST, &tdir, &tkey, t.elapsed().as_secs_f64())?;
    }
    let teacher_json_hash = file_hash(ST, &tdir.join("teacher.json"))?;

    // 4. Soft labels + evidence for train (distillation) and test (teacher evaluation).
    const SL: &str = "labels";
    let ldir = out.join("labels");
    let lcfg = LabelConfig {
        temperature: cfg.teacher.temperature,
        last_k_layers: cfg.teacher.last_k_layers,
        batch_size: cfg.teacher.batch_size,
        shard: None,
        save_every: 20,
    };
    let lkey = key_of(&[
        ("teacher", teacher_json_hash.clone()),
        ("samples", samples_hash.clone()),
        ("label", format!("{} {} {}", lcfg.temperature, lcfg.last_k_layers, lcfg.batch_size)),
    ]);
    let loaded = teacher::load_teacher(&tdir, None, device).map_err(stage_err(SL))?;
    let mut label_secs = [0f64; 2];
    if is_done(&ldir, &lkey) {
        skipped.push(SL);
    } else {
        invalidate(SL, &ldir)?;
        let t = Instant::now();
        for (k, (name, set)) in [("train", &train), ("test", &test)].into_iter().enumerate() {
            let p = ldir.join(format!("evidence-{name}.bin"));
            let bar = bars.bar(&format!("teacher labels ({name})"));
            let o = label::label(&loaded, set, &lcfg, &p, &bar).map_err(stage_err(SL))?;
            bar.finish_and_clear();
            label_secs[k] = o.seconds;
            log(&format!(
                "labels ({name}): {} samples, {:.1} samples/s, {:.0} prompt tokens/s, {} prompts cut",
                o.in_shard,
                o.labelled as f64 / o.seconds.max(1e-9),
                o.tokens as f64 / o.seconds.max(1e-9),
                o.truncated
            ));
        }
        write_atomic(&ldir.join("timing.json"), pretty_json(&label_secs).as_bytes()).map_err(stage_err(SL))?;
        mark_done(SL, &ldir, &lkey, t.elapsed().as_secs_f64())?;
    }
    let mut ev_train = label::read_evidence(&ldir.join("evidence-train.bin")).map_err(stage_err(SL))?;
    let ev_test = label::read_evidence(&ldir.join("evidence-test.bin")).map_err(stage_err(SL))?;
    let mut ev_hash = file_hash(SL, &ldir.join("evidence-train.bin"))?;
    if cfg.teacher.oof_folds > 0 {
        // Out-of-fold soft labels for the training rows (attention evidence stays the teacher's).
        const SO: &str = "labels-oof";
        let odir = out.join("labels-oof");
        let okey = key_of(&[
            ("evidence", ev_hash.clone()),
            (
                "oof",
                format!(
                    "{} {:?} {} {}",
                    cfg.teacher.oof_folds, cfg.teacher.head, cfg.teacher.temperature, cfg.student.seed
                ),
            ),
        ]);
        let opath = odir.join("evidence-train.bin");
        if is_done(&odir, &okey) {
            skipped.push(SO);
        } else {
            invalidate(SO, &odir)?;
            let t = Instant::now();
            let h = loaded.model.config().hidden_size;
            let mut feats = Vec::new();
            for (name, set) in [("train", &train), ("val", &val)] {
                let bar = bars.bar(&format!("teacher features ({name})"));
                let f = teacher::head::features(&loaded.model, &loaded.prompts, set, cfg.teacher.batch_size, &bar)
                    .map_err(stage_err(SO))?;
                bar.finish_and_clear();
                feats.push(f);
            }
            let train_labels: Vec<_> = train.iter().map(|s| s.labels).collect();
            let val_labels: Vec<_> = val.iter().map(|s| s.labels).collect();
            let subjects: Vec<u64> = train.iter().map(|s| s.subject).collect();
            let (probs, proto) = teacher::oof::out_of_fold(
                &feats[0],
                &train_labels,
                &subjects,
                &feats[1],
                &val_labels,
                h,
                &cfg.teacher.head,
                cfg.teacher.oof_folds,
                cfg.student.seed,
                cfg.teacher.temperature,
            )
            .map_err(stage_err(SO))?;
            let by_id: std::collections::HashMap<&str, usize> =
                train.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
            for r in &mut ev_train.records {
                let i = *by_id.get(r.id.as_str()).ok_or_else(|| msg_err(SO, format!("no training sample {}", r.id)))?;
                r.probs = probs[i * NUM_LABELS..(i + 1) * NUM_LABELS].to_vec();
            }
            ev_train.teacher.model = format!("{} [{}]", ev_train.teacher.model, proto.describe());
            label::write_evidence(&opath, &ev_train).map_err(stage_err(SO))?;
            write_atomic(&odir.join("protocol.json"), pretty_json(&proto).as_bytes()).map_err(stage_err(SO))?;
            log(&format!("labels-oof: {} heads, rows per fold {:?}", proto.folds, proto.rows_per_fold));
            mark_done(SO, &odir, &okey, t.elapsed().as_secs_f64())?;
        }
        ev_train = label::read_evidence(&opath).map_err(stage_err(SO))?;
        ev_hash = file_hash(SO, &opath)?;
    }

    // 5. Students: hard labels only, then distilled (same seeds).
    let teacher_outputs = Teacher::from_evidence(ev_train.clone());
    // At each label fraction (hard labels for that share of the training patients, teacher soft
    // labels for all), a student without and one with distillation.
    let mut students: Vec<StudentRun> = Vec::new();
    for &fraction in &cfg.student.label_fractions {
        for distilled in [false, true] {
            let run = StudentRun::new(distilled, fraction);
            let (name, stage) = (run.dir_name.as_str(), if distilled { "student-kd" } else { "student-hard" });
            let dir = out.join(name);
            let distill = if distilled {
                cfg.student.distill.clone()
            } else {
                DistillConfig {
                    hard: 1.0,
                    soft: 0.0,
                    attn_word: 0.0,
                    attn_concept: 0.0,
                    attn_field: 0.0,
                    ..cfg.student.distill.clone()
                }
            };
            let tc = TrainConfig {
                epochs: cfg.student.epochs,
                batch_size: cfg.student.batch_size,
                lr: cfg.student.lr,
                seed: cfg.student.seed,
                patience: cfg.student.patience,
                distill,
                label_fraction: fraction,
                head_lr_scale: cfg.student.head_lr_scale,
                ..Default::default()
            };
            let key = key_of(&[
                ("samples", samples_hash.clone()),
                ("evidence", if distilled { ev_hash.clone() } else { String::new() }),
                ("student", serde_json::to_string(&(&cfg.student, &tc)).unwrap_or_default()),
            ]);
            if is_done(&dir, &key) {
                skipped.push(stage);
            } else {
                invalidate(stage, &dir)?;
                let t = Instant::now();
                let bar = bars.bar(&run.display);
                let job = StudentJob {
                    train: &train,
                    val: &val,
                    teacher: distilled.then_some(&teacher_outputs),
                    init: cfg.student.init.as_deref(),
                    preset: cfg.student.preset,
                    pooling: cfg.student.pooling,
                    vocab_size: cfg.student.vocab_size,
                    max_len: cfg.student.max_len,
                    cfg: tc,
                    resume: false,
                    out: &dir,
                    knowledge: knowledge.as_ref(),
                    provenance: serde_json::json!({"samples": samples_bin, "samples_sha256": samples_hash}),
                };
                let o = train_student(&job, &bar).map_err(stage_err(stage))?;
                bar.finish_and_clear();
                log(&format!(
                    "{}: {} steps, {:.1} samples/s, best val macro-F1 {:.3}",
                    run.display,
                    o.steps,
                    o.samples_per_sec,
                    o.best_val_macro_f1.unwrap_or(f64::NAN)
                ));
                mark_done(stage, &dir, &key, t.elapsed().as_secs_f64())?;
            }
            students.push(StudentRun { dir, ..run });
        }
    }

    // 6. Bundles of the distilled student.
    let kd = &students
        .iter()
        .find(|r| r.distilled && r.fraction >= 1.0)
        .ok_or_else(|| PipelineError::Config("no distilled student at 100% labels".into()))?
        .dir;
    let kd_hash = file_hash("student-kd", &kd.join("model.safetensors"))?;
    let mut bundles = Vec::new();
    for precision in [Precision::F32, Precision::Int8] {
        let stage: &'static str = if precision == Precision::F32 { "bundle-f32" } else { "bundle-int8" };
        let dir = out.join(stage);
        let key = key_of(&[("student", kd_hash.clone()), ("precision", precision.as_str().into())]);
        if is_done(&dir, &key) {
            skipped.push(stage);
        } else {
            invalidate(stage, &dir)?;
            let t = Instant::now();
            let r = crate::bundle::write_bundle(kd, &dir, precision).map_err(stage_err(stage))?;
            let data = r.export.external_data.as_ref().map_or(0, |d| d.bytes);
            log(&format!(
                "{stage}: {} bytes of ONNX (graph {}, tensors {data}), probe max |prob diff| vs candle {:.2e}",
                r.export.bytes + data,
                r.export.bytes,
                r.export.probe.max_abs_prob_diff
            ));
            mark_done(stage, &dir, &key, t.elapsed().as_secs_f64())?;
        }
        bundles.push(dir);
    }

    // 7. Evaluation on the test split and the report (always re-run: cheap, and it measures).
    const SR: &str = "report";
    let rdir = out.clone();
    let test_labels: Vec<_> = test.iter().map(|s| s.labels).collect();
    let test_ids: Vec<String> = test.iter().map(|s| s.id.clone()).collect();
    // Baselines first: every model below is read against them.
    let mut models = crate::baselines::report_rows(&train, &val, &test).map_err(stage_err(SR))?;
    let n_baselines = models.len();
    let teacher_probs = label::probs_for(&ev_test, &test_ids).map_err(stage_err(SR))?;
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
    for run in &students {
        let (dir, name) = (&run.dir, run.display.as_str());
        let role = if run.distilled { Role::StudentDistilled } else { Role::Student };
        let st = student::load_student(dir).map_err(stage_err(SR))?;
        let p = Prepared::new(&test, &st.encoder).map_err(stage_err(SR))?;
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
                let (p, l, s) = trainer_tract_eval(dir, &kd_student.encoder, &test)?;
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
    for run in &students {
        curves.push(report::read_curves(&run.dir.join("curves.jsonl"), &run.display).map_err(stage_err(SR))?);
    }
    let by = ev_test.by_id();
    let mut explanations = Vec::new();
    for s in &test {
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
                concepts: p.concepts.iter().map(|c| (format!("[{}] {}", c.field, c.text), c.weight)).collect(),
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
            ("samples.bin sha256".into(), samples_hash),
            ("teacher.json sha256".into(), teacher_json_hash),
            ("settings".into(), serde_json::to_string(cfg).unwrap_or_default()),
        ],
        subjects: test.iter().map(|s| s.subject).collect(),
        reference: lr_name,
        comparisons,
    };
    let rj = report::write(&rdir, &input).map_err(stage_err(SR))?;
    let summary = report::summary_table(&rj);
    Ok(PipelineOutcome { report_dir: rdir, summary, skipped, seconds: t_all.elapsed().as_secs_f64() })
}
