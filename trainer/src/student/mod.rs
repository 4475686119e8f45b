//! Student training: the distillation loop around [`BertForMultiLabel`].
//!
//! One run = AdamW with warmup + linear decay, global-norm gradient clipping, length-bucketed
//! batches, real dropout; evaluation on validation after each epoch (macro-F1 at thresholds
//! tuned on validation, plus macro-AUC), early stopping on that macro-F1, and the best epoch's
//! weights kept. Deterministic on CPU for a seed: batch order is a function of
//! `(seed, epoch)`, dropout masks of `(seed, global step)`.
//!
//! Checkpoints (`DIR/checkpoint/step-N/` with weights, optimizer moments and loop state, made
//! current by atomically replacing `DIR/checkpoint/current.json`) are written every
//! `checkpoint_every` steps and at each epoch end; `resume` continues from the current one
//! exactly as if the run had not stopped.
//!
//! [`job`] wraps a run with the tokenizer, the model's construction and the saved directory.

pub mod job;
mod training;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use ckd_core::evidence::{self, EvidenceFile, Granularity};
use ckd_core::knowledge::KnowledgeTable;
use ckd_core::metrics;
use ckd_core::visit::{self, Sample};
use ckd_core::{LabelSet, NUM_LABELS};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::distill::{self, AttnInputs, DistillConfig, GranularityInputs, LossParts};
use crate::io::{pretty_json, write_atomic};
use crate::models::bert::{BertError, BertForMultiLabel, Config, HeadConfig};
use crate::models::common::DropoutRng;
use crate::optim::{lr_at, AdamW, AdamWConfig};
use crate::text::{pad_batch, Encoded, TextEncoder, TextError};
use crate::train_integrity::{Seal, SealedKind, Verified, SUMS_FILE};

/// Error of student training or evaluation.
#[derive(Debug, thiserror::Error)]
pub enum StudentError {
    /// Tensor operation failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// Model construction or loading failed.
    #[error("model: {0}")]
    Bert(#[from] BertError),
    #[error(transparent)]
    Checkpoint(#[from] crate::models::checkpoint::CheckpointError),
    /// Loss computation failed.
    #[error("loss: {0}")]
    Distill(#[from] distill::DistillError),
    /// Tokenization failed.
    #[error("{0}")]
    Text(#[from] TextError),
    /// Metrics failed (bad probabilities, shapes).
    #[error("metrics: {0}")]
    Metrics(#[from] metrics::MetricsError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A JSON file is malformed.
    #[error("{path}: {msg}")]
    Json {
        /// File.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// Inputs are inconsistent (missing soft labels, empty split, bad settings).
    #[error("{0}")]
    Invalid(String),
    /// A checkpoint or tensor file is corrupt, or a step or the weights are not finite.
    #[error(transparent)]
    Integrity(#[from] crate::train_integrity::IntegrityError),
}

type Result<T> = std::result::Result<T, StudentError>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StudentError + '_ {
    move |source| StudentError::Io { path: path.to_path_buf(), source }
}

/// Model size presets for students trained from scratch (the vocabulary size comes from the
/// tokenizer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// H 64, 2 layers, 2 heads, I 256: the demo student.
    Tiny,
    /// H 128, 4 layers, 4 heads, I 512.
    Small,
    /// MiniLM-L6 shape: H 384, 6 layers, 12 heads, I 1536.
    Base,
}

impl Preset {
    /// BERT config of the preset for a vocabulary of `vocab_size` and `max_len` positions.
    pub fn config(self, vocab_size: usize, max_len: usize) -> Config {
        let base = match self {
            Preset::Tiny => Config {
                hidden_size: 64,
                num_hidden_layers: 2,
                num_attention_heads: 2,
                intermediate_size: 256,
                ..Config::default()
            },
            Preset::Small => Config {
                hidden_size: 128,
                num_hidden_layers: 4,
                num_attention_heads: 4,
                intermediate_size: 512,
                ..Config::default()
            },
            Preset::Base => Config::minilm_l6(),
        };
        Config { vocab_size, max_position_embeddings: max_len.max(2), ..base }
    }
}

/// Training settings (the paper: Adam 2e-5, batch 8, 10 epochs, max length 512).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Fraction of steps spent warming up.
    pub warmup_frac: f64,
    /// AdamW settings.
    pub adamw: AdamWConfig,
    /// Global gradient-norm clip (0 = off).
    pub clip_norm: f64,
    /// Seed of batch order, dropout and label subsampling.
    pub seed: u64,
    /// Checkpoint every N steps (0 = only at epoch ends).
    pub checkpoint_every: usize,
    /// Stop after this many epochs without a better validation macro-F1 (0 = never).
    pub patience: usize,
    /// Loss weights.
    pub distill: DistillConfig,
    /// Fraction of training samples whose hard labels are used (the rest learn from the
    /// teacher only); chosen by a hash of `(seed, id)`.
    pub label_fraction: f64,
    /// Log a loss curve point every N steps.
    pub log_every: usize,
    /// Stop (with a checkpoint) once this many steps are done in total; `--resume` continues.
    /// For time-boxed runs and for testing that resuming is exact.
    pub max_steps: Option<u64>,
    /// Learning-rate multiplier of the classification head (`classifier.*`, `pooler.*`).
    #[serde(default = "one")]
    pub head_lr_scale: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 8,
            lr: 2e-5,
            warmup_frac: 0.1,
            adamw: AdamWConfig::default(),
            clip_norm: 1.0,
            seed: 42,
            checkpoint_every: 0,
            patience: 3,
            distill: DistillConfig::default(),
            label_fraction: 1.0,
            log_every: 10,
            max_steps: None,
            head_lr_scale: 1.0,
        }
    }
}

/// Teacher outputs for the training samples: probabilities, and attention evidence when the
/// teacher produced it.
#[derive(Debug, Clone, Default)]
pub struct Teacher {
    /// Probabilities per sample id (25, label order).
    pub probs: HashMap<String, Vec<f32>>,
    /// Evidence per sample id (for attention distillation).
    pub evidence: HashMap<String, evidence::SampleEvidence>,
    /// Who produced them (for provenance).
    pub identity: Option<evidence::TeacherIdentity>,
}

impl Teacher {
    /// From an evidence file (`ckd teacher label` output).
    pub fn from_evidence(file: EvidenceFile) -> Self {
        let mut t = Teacher { identity: Some(file.teacher.clone()), ..Default::default() };
        for r in file.records {
            t.probs.insert(r.id.clone(), r.probs.clone());
            t.evidence.insert(r.id.clone(), r);
        }
        t
    }

    /// From JSON lines `{"id": "...", "p": [25 probabilities]}` (e.g. the synthetic cohort's
    /// `oracle.jsonl`). `name` is recorded as the teacher's identity.
    pub fn from_jsonl(text: &str, path: &Path) -> Result<Self> {
        #[derive(Deserialize)]
        struct Row {
            id: String,
            p: Vec<f32>,
        }
        let mut t = Teacher::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let r: Row = serde_json::from_str(line)
                .map_err(|e| StudentError::Json { path: path.to_path_buf(), msg: format!("line {}: {e}", i + 1) })?;
            if r.p.len() != NUM_LABELS || r.p.iter().any(|p| !(0.0..=1.0).contains(p)) {
                return Err(StudentError::Json {
                    path: path.to_path_buf(),
                    msg: format!("line {}: `p` must hold {NUM_LABELS} probabilities in [0, 1]", i + 1),
                });
            }
            t.probs.insert(r.id, r.p);
        }
        t.identity = Some(evidence::TeacherIdentity {
            model: format!("probabilities from {}", path.display()),
            config_hash: String::new(),
            adapter_hash: None,
            temperature: 1.0,
            last_k_layers: 0,
        });
        Ok(t)
    }
}

/// Samples tokenized once, with everything a batch needs.
pub struct Prepared {
    /// Sample ids.
    pub ids: Vec<String>,
    /// Input texts.
    pub texts: Vec<String>,
    /// Encoded texts.
    pub enc: Vec<Encoded>,
    /// Labels (visit i+1).
    pub labels: Vec<LabelSet>,
    /// Patient of each sample (label fractions are drawn per patient).
    pub subjects: Vec<u64>,
    /// Concept and field spans of each text ([`Sample::rendered`]; `None` for a JSONL input
    /// that is not in the CKD-EHR layout): the units of the attention targets.
    pub spans: Vec<Option<visit::Rendered>>,
    /// Number of truncated texts.
    pub truncated: usize,
}

impl Prepared {
    /// Tokenizes `samples`.
    pub fn new(samples: &[Sample], encoder: &TextEncoder) -> Result<Self> {
        let mut p = Prepared {
            ids: Vec::new(),
            texts: Vec::new(),
            enc: Vec::new(),
            labels: Vec::new(),
            subjects: Vec::new(),
            spans: Vec::new(),
            truncated: 0,
        };
        for s in samples {
            let text = s.text();
            p.spans.push(s.rendered());
            let e = encoder.encode(&text)?;
            p.truncated += e.truncated as usize;
            p.ids.push(s.id.clone());
            p.texts.push(text);
            p.enc.push(e);
            p.labels.push(s.labels);
            p.subjects.push(s.subject);
        }
        Ok(p)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// `input_ids` [B, T] u32 and `attention_mask` [B, T] u32 for samples `idx` of `p`.
fn batch_inputs(p: &Prepared, idx: &[usize], pad_id: u32, dev: &Device) -> Result<(Tensor, Tensor)> {
    let items: Vec<&Encoded> = idx.iter().map(|&i| &p.enc[i]).collect();
    let pb = pad_batch(&items, pad_id);
    let ids = Tensor::from_vec(pb.ids, (pb.batch, pb.len), dev)?;
    let mask = Tensor::from_vec(pb.mask, (pb.batch, pb.len), dev)?;
    Ok((ids, mask))
}

/// Sigmoid probabilities [N * 25] (row-major) for every sample, in order, eval mode.
pub fn predict(model: &BertForMultiLabel, p: &Prepared, pad_id: u32, batch_size: usize) -> Result<Vec<f32>> {
    let dev = Device::Cpu;
    let lengths: Vec<usize> = p.enc.iter().map(|e| e.ids.len()).collect();
    // Sort by length for less padding, then restore order.
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut probs = vec![0f32; p.len() * NUM_LABELS];
    for chunk in order.chunks(batch_size.max(1)) {
        let (ids, mask) = batch_inputs(p, chunk, pad_id, &dev)?;
        let o = model.forward(&ids, &mask, None)?;
        let pr = candle_nn::ops::sigmoid(&o.logits)?.to_vec2::<f32>()?;
        for (row, &i) in pr.iter().zip(chunk) {
            probs[i * NUM_LABELS..(i + 1) * NUM_LABELS].copy_from_slice(row);
        }
    }
    Ok(probs)
}

/// Whether the samples of patient `id` keep their hard labels at `fraction` (stable hash of
/// seed and id; training passes the patient id, so a patient's samples are kept or dropped
/// together, as a label-scarce cohort would have them).
pub fn keeps_label(seed: u64, id: &str, fraction: f64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(id.as_bytes());
    let d = h.finalize();
    let u = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]) >> 11;
    (u as f64 / (1u64 << 53) as f64) < fraction
}

/// One logged point of the loss curve or of the per-epoch validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CurvePoint {
    /// Training loss at a step (mean over the last `log_every` steps).
    Step {
        /// Global step (1-based).
        step: u64,
        /// Epoch (0-based).
        epoch: usize,
        /// Learning rate used.
        lr: f64,
        /// Total loss.
        loss: f32,
        /// Hard term.
        hard: Option<f32>,
        /// Soft term.
        soft: Option<f32>,
        /// Attention terms (word, concept, field).
        attn: [Option<f32>; 3],
        /// Gradient norm before clipping.
        grad_norm: f64,
    },
    /// Validation after an epoch.
    Epoch {
        /// Epoch (0-based).
        epoch: usize,
        /// Global step at the end of the epoch.
        step: u64,
        /// Validation macro-F1 at thresholds tuned on validation.
        val_macro_f1: f64,
        /// Validation macro ROC-AUC.
        val_macro_auc: Option<f64>,
        /// Mean training loss over the epoch.
        train_loss: f64,
    },
}

/// Loop state saved in checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct LoopState {
    epoch: usize,
    /// Batches of `epoch` already done.
    batch: usize,
    step: u64,
    best_f1: Option<f64>,
    best_epoch: Option<usize>,
    epochs_since_best: usize,
    epoch_loss_sum: f64,
    epoch_loss_n: u64,
    curve: Vec<CurvePoint>,
    stopped_early: bool,
    done: bool,
}

/// What a finished run produced.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOutcome {
    /// Steps run in total.
    pub steps: u64,
    /// Best validation macro-F1 and its epoch.
    pub best_val_macro_f1: Option<f64>,
    /// Epoch of the best weights.
    pub best_epoch: Option<usize>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Per-label thresholds tuned on validation with the best weights.
    pub thresholds: Vec<f32>,
    /// Training samples per second (steps run in this process only).
    pub samples_per_sec: f64,
    /// Training texts cut to `max_len`.
    pub truncated_train: usize,
    /// `false` when `max_steps` stopped the run before its end (resume to finish it).
    pub finished: bool,
}

/// Everything the loop needs.
pub struct Run<'a> {
    /// Model being trained.
    pub model: &'a BertForMultiLabel,
    /// Its trainable weights.
    pub varmap: &'a VarMap,
    /// Tokenizer (pad id).
    pub encoder: &'a TextEncoder,
    /// Training samples.
    pub train: &'a Prepared,
    /// Validation samples.
    pub val: &'a Prepared,
    /// Teacher outputs, required when soft or attention weights are > 0.
    pub teacher: Option<&'a Teacher>,
    /// Settings.
    pub cfg: &'a TrainConfig,
    /// Where checkpoints and the best weights go.
    pub dir: &'a Path,
    /// Progress bar (hidden in tests).
    pub progress: &'a ProgressBar,
}

struct Checkpoint;

impl Checkpoint {
    fn root(dir: &Path) -> PathBuf {
        dir.join("checkpoint")
    }

    fn save(dir: &Path, varmap: &VarMap, opt: &AdamW, st: &LoopState) -> Result<()> {
        let root = Self::root(dir);
        let name = format!("step-{}", st.step);
        let d = root.join(&name);
        std::fs::create_dir_all(&d).map_err(io_err(&d))?;
        // Each file with its SHA-256, the list written last (verified on resume).
        let mut seal = crate::train_integrity::Seal::new(&d);
        seal.tensors("model.safetensors", &named_vars(varmap)?)?;
        seal.tensors("optim.safetensors", &opt.state())?;
        let json = serde_json::to_vec_pretty(st).map_err(|e| StudentError::Invalid(e.to_string()))?;
        seal.bytes("state.json", &json)?;
        seal.finish()?;
        let cur = root.join("current.json");
        write_atomic(&cur, format!("{{\"dir\": \"{name}\"}}\n").as_bytes()).map_err(io_err(&cur))?;
        // Older checkpoints are no longer current: remove them.
        if let Ok(rd) = std::fs::read_dir(&root) {
            for e in rd.flatten() {
                let n = e.file_name();
                if n.to_string_lossy().starts_with("step-") && n != name.as_str() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }

    fn load(dir: &Path, varmap: &VarMap, opt: &mut AdamW) -> Result<Option<LoopState>> {
        let root = Self::root(dir);
        let cur = root.join("current.json");
        let Ok(text) = std::fs::read_to_string(&cur) else { return Ok(None) };
        #[derive(Deserialize)]
        struct Cur {
            dir: String,
        }
        let c: Cur =
            serde_json::from_str(&text).map_err(|e| StudentError::Json { path: cur.clone(), msg: e.to_string() })?;
        let d = root.join(c.dir);
        let sp = d.join("state.json");
        // Every file checked against the checksums written with it (and tensors for finite values).
        let files = crate::train_integrity::Verified::open(&d)?;
        let st: LoopState = serde_json::from_slice(&files.bytes("state.json")?)
            .map_err(|e| StudentError::Json { path: sp.clone(), msg: e.to_string() })?;
        let w = files.tensors("model.safetensors")?;
        set_vars(varmap, &w)?;
        let o = files.tensors("optim.safetensors")?;
        opt.load_state(&o, st.step)?;
        Ok(Some(st))
    }
}

/// Every variable of `varmap` by name.
pub fn named_vars(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    let data = varmap.data().lock().map_err(|_| StudentError::Invalid("VarMap lock poisoned".into()))?;
    Ok(data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect())
}

/// Sets every variable of `varmap` from `tensors` (all must be present with the same shape).
pub fn set_vars(varmap: &VarMap, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let data = varmap.data().lock().map_err(|_| StudentError::Invalid("VarMap lock poisoned".into()))?;
    for (k, v) in data.iter() {
        let t = tensors.get(k).ok_or_else(|| StudentError::Invalid(format!("checkpoint has no tensor {k}")))?;
        if t.dims() != v.dims() {
            return Err(StudentError::Invalid(format!(
                "checkpoint tensor {k}: shape {:?} vs {:?}",
                t.dims(),
                v.dims()
            )));
        }
        v.set(t)?;
    }
    Ok(())
}

/// Attention-loss inputs for a batch, when any attention weight is on.
fn attention_inputs(run: &Run<'_>, idx: &[usize], t_len: usize, attention: Tensor) -> Result<Option<AttnInputs>> {
    let d = &run.cfg.distill;
    if !d.uses_attention() {
        return Ok(None);
    }
    let teacher = run.teacher.ok_or_else(|| StudentError::Invalid("attention distillation needs a teacher".into()))?;
    let p = run.train;
    let mut ev = Vec::with_capacity(idx.len());
    let mut rendered = Vec::with_capacity(idx.len());
    for &i in idx {
        let e = teacher
            .evidence
            .get(&p.ids[i])
            .ok_or_else(|| StudentError::Invalid(format!("teacher evidence has no record for sample {}", p.ids[i])))?;
        let r = p.spans[i]
            .as_ref()
            .ok_or_else(|| StudentError::Invalid(format!("sample {}: text is not in the CKD-EHR layout", p.ids[i])))?;
        ev.push(e);
        rendered.push(r);
    }
    let spans: Vec<Vec<(usize, usize)>> = idx.iter().map(|&i| p.enc[i].offsets.clone()).collect();
    let build = |g: Granularity, w: f32| -> Result<Option<GranularityInputs>> {
        if w <= 0.0 {
            return Ok(None);
        }
        let units: Vec<Vec<(usize, usize)>> = rendered.iter().map(|r| evidence::unit_spans(r, g)).collect();
        let teach: Vec<&[f32]> = ev.iter().map(|e| e.distribution(g)).collect();
        Ok(Some(GranularityInputs::build(&spans, &units, &teach, t_len, &Device::Cpu)?))
    };
    Ok(Some(AttnInputs {
        word: build(Granularity::Word, d.attn_word)?,
        concept: build(Granularity::Concept, d.attn_concept)?,
        field: build(Granularity::Field, d.attn_field)?,
        attention,
    }))
}

/// Loss of one batch in training mode.
fn batch_loss(run: &Run<'_>, idx: &[usize], dropout: &mut DropoutRng) -> Result<LossParts> {
    let dev = Device::Cpu;
    let p = run.train;
    let cfg = run.cfg;
    let (ids, mask) = batch_inputs(p, idx, run.encoder.pad_id, &dev)?;
    let want_attn = cfg.distill.uses_attention();
    let out = run.model.forward_t(&ids, &mask, None, Some(dropout), want_attn)?;
    let targets: Vec<f32> = idx.iter().flat_map(|&i| p.labels[i].to_dense()).collect();
    let targets = Tensor::from_vec(targets, (idx.len(), NUM_LABELS), &dev)?;
    let label_mask = if cfg.label_fraction < 1.0 {
        let m: Vec<f32> = idx
            .iter()
            .map(|&i| keeps_label(cfg.seed, &p.subjects[i].to_string(), cfg.label_fraction) as u8 as f32)
            .collect();
        Some(Tensor::from_vec(m, idx.len(), &dev)?)
    } else {
        None
    };
    let teacher_probs = if cfg.distill.soft > 0.0 {
        let t =
            run.teacher.ok_or_else(|| StudentError::Invalid("soft-label loss needs teacher probabilities".into()))?;
        let mut v = Vec::with_capacity(idx.len() * NUM_LABELS);
        for &i in idx {
            let pr = t.probs.get(&p.ids[i]).ok_or_else(|| {
                StudentError::Invalid(format!("teacher has no probabilities for sample {}", p.ids[i]))
            })?;
            v.extend_from_slice(pr);
        }
        Some(Tensor::from_vec(v, (idx.len(), NUM_LABELS), &dev)?)
    } else {
        None
    };
    let attn = match (&out.attentions, want_attn) {
        (Some(layers), true) => {
            let a = distill::cls_attention(layers, cfg.distill.last_k_layers as usize)?;
            let t_len = ids.dim(1)?;
            attention_inputs(run, idx, t_len, a)?
        }
        _ => None,
    };
    let parts = distill::total_loss(
        &cfg.distill,
        &out.logits,
        &targets,
        label_mask.as_ref(),
        teacher_probs.as_ref(),
        attn.as_ref(),
    )?;
    Ok(parts)
}

/// Validation macro-F1 (thresholds tuned on validation) and macro-AUC.
fn validate(run: &Run<'_>) -> Result<(f64, Option<f64>, Vec<f32>)> {
    let probs = predict(run.model, run.val, run.encoder.pad_id, 32)?;
    let th = metrics::tune_thresholds_label_sets(&probs, &run.val.labels)?;
    let rep = metrics::evaluate_label_sets(&probs, &run.val.labels, &th, 10)?;
    Ok((rep.macro_f1, rep.macro_auc, th))
}

/// Runs (or resumes) training. Returns when all epochs ran or early stopping fired; the model's
/// variables then hold the best epoch's weights (also in `DIR/best.safetensors`).
pub fn train(run: &Run<'_>, resume: bool) -> Result<TrainOutcome> {
    let cfg = run.cfg;
    training::check_and_create(run)?;
    let (mut opt, mut st) = training::optimizer(run, resume)?;
    let vars = opt.vars();
    let best_path = run.dir.join("best.safetensors");
    let lengths: Vec<usize> = run.train.enc.iter().map(|e| e.ids.len()).collect();
    let batches_per_epoch = run.train.len().div_ceil(cfg.batch_size);
    let total_steps = (batches_per_epoch * cfg.epochs) as u64;
    let warmup = (total_steps as f64 * cfg.warmup_frac).round() as u64;
    run.progress.set_length(total_steps);
    run.progress.set_position(st.step);
    let mut rate = training::Rate { t0: std::time::Instant::now(), steps: 0, samples: 0 };
    let mut window = training::Window::default();

    while !st.done && st.epoch < cfg.epochs {
        let batches = crate::text::length_buckets(&lengths, cfg.batch_size, cfg.seed ^ (st.epoch as u64 + 1), true);
        while st.batch < batches.len() {
            let idx = &batches[st.batch];
            let lr = lr_at(st.step, total_steps, warmup, cfg.lr);
            let (parts, norm) = training::optimizer_step(run, &mut opt, &vars, &mut st, idx, lr)?;
            rate.steps += 1;
            rate.samples += idx.len() as u64;
            window.push(parts, norm, run, &mut st, &rate, lr);
            run.progress.set_position(st.step);
            if cfg.checkpoint_every > 0
                && st.step.is_multiple_of(cfg.checkpoint_every as u64)
                && st.batch < batches.len()
            {
                Checkpoint::save(run.dir, run.varmap, &opt, &st)?;
            }
            if cfg.max_steps.is_some_and(|m| st.step >= m) && st.batch < batches.len() {
                Checkpoint::save(run.dir, run.varmap, &opt, &st)?;
                write_curve(run.dir, &st.curve)?;
                return Ok(training::paused(run, &st, &rate));
            }
        }
        // Epoch end: validate, keep the best, maybe stop.
        training::end_epoch(run, &opt, &mut st, &best_path)?;
    }
    // Restore the best weights and tune thresholds with them.
    training::finish(run, &st, &best_path, &rate)
}

fn mean_point(w: &[LossParts], norm_sum: f64, step: u64, epoch: usize, lr: f64) -> CurvePoint {
    let n = w.len() as f32;
    let mean = |f: &dyn Fn(&LossParts) -> Option<f32>| -> Option<f32> {
        let v: Vec<f32> = w.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f32>() / v.len() as f32)
    };
    CurvePoint::Step {
        step,
        epoch,
        lr,
        loss: w.iter().map(|p| p.total_value).sum::<f32>() / n,
        hard: mean(&|p| p.hard),
        soft: mean(&|p| p.soft),
        attn: [mean(&|p| p.attn_word), mean(&|p| p.attn_concept), mean(&|p| p.attn_field)],
        grad_norm: norm_sum / w.len() as f64,
    }
}

fn write_curve(dir: &Path, curve: &[CurvePoint]) -> Result<()> {
    let mut s = String::new();
    for p in curve {
        s.push_str(&serde_json::to_string(p).map_err(|e| StudentError::Invalid(e.to_string()))?);
        s.push('\n');
    }
    let path = dir.join("curves.jsonl");
    write_atomic(&path, s.as_bytes()).map_err(io_err(&path))
}

/// A trained student as saved on disk: `config.json` ({bert, head, max_len}),
/// `model.safetensors`, `tokenizer.json`, `thresholds.json`, `knowledge.json`, `provenance.json`,
/// sealed by `checksums.json` (see [`crate::train_integrity`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudentConfig {
    /// Encoder config (HF layout).
    pub bert: Config,
    /// Head config.
    pub head: HeadConfig,
    /// Maximum tokens per input.
    pub max_len: usize,
}

/// A student loaded for inference.
pub struct Student {
    /// Model.
    pub model: BertForMultiLabel,
    /// Tokenizer.
    pub encoder: TextEncoder,
    /// Config.
    pub config: StudentConfig,
    /// Per-label thresholds.
    pub thresholds: Vec<f32>,
    /// How it was trained, from its `provenance.json`.
    pub training: Training,
}

/// How a saved student was trained, as its `provenance.json` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Training {
    /// With a teacher and a soft-label or attention loss of positive weight.
    Distilled,
    /// From hard labels only (no teacher, or every distillation weight 0).
    HardLabels,
    /// The provenance does not say (no `provenance.json`, or no teacher or distillation
    /// weights in it).
    Unknown,
}

impl Training {
    /// Reads `teacher` (null: none) and `train_config.distill`'s loss weights from a student's
    /// provenance (as [`job::train_student`] writes it).
    pub fn from_provenance(p: &serde_json::Value) -> Self {
        let (Some(teacher), Some(d)) = (p.get("teacher"), p.pointer("/train_config/distill")) else {
            return Training::Unknown;
        };
        if teacher.is_null() {
            return Training::HardLabels;
        }
        let weights: Option<Vec<f64>> = ["soft", "attn_word", "attn_concept", "attn_field"]
            .iter()
            .map(|k| d.get(*k).and_then(serde_json::Value::as_f64))
            .collect();
        match weights {
            Some(w) if w.iter().any(|&x| x > 0.0) => Training::Distilled,
            Some(_) => Training::HardLabels,
            None => Training::Unknown,
        }
    }
}

/// Writes a trained student into `dir` (each file atomically), sealed: the checksum list is
/// written last, so a directory whose writing stopped part way is refused by [`load_student`].
/// `knowledge` is the table the student's texts were rendered with (`null` when none).
pub fn save_student(
    dir: &Path,
    cfg: &StudentConfig,
    varmap: &VarMap,
    encoder: &TextEncoder,
    thresholds: &[f32],
    knowledge: Option<&KnowledgeTable>,
    provenance: &serde_json::Value,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let sums = dir.join(SUMS_FILE);
    if let Err(e) = std::fs::remove_file(&sums) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(io_err(&sums)(e));
        }
    }
    let mut seal = Seal::new(dir);
    seal.tensors("model.safetensors", &named_vars(varmap)?)?;
    seal.bytes("config.json", pretty_json(cfg).as_bytes())?;
    seal.bytes("tokenizer.json", encoder.to_json()?.as_bytes())?;
    seal.bytes("thresholds.json", pretty_json(&thresholds).as_bytes())?;
    seal.bytes("knowledge.json", pretty_json(&knowledge).as_bytes())?;
    seal.bytes("provenance.json", pretty_json(provenance).as_bytes())?;
    seal.finish()?;
    Ok(())
}

/// Opens a student directory for reading: every file read through the result is checked
/// against the `checksums.json` [`save_student`] wrote (a missing list, or a file changed by
/// one bit, is an error naming the file). Every reader of a saved student goes through it:
/// [`load_student`] (`ckd eval`, the pipeline, the bench), the export and the bundle writer.
pub fn open_student(dir: &Path) -> Result<Verified> {
    Ok(Verified::open_kind(dir, SealedKind::Student)?)
}

/// The JSON file `name` of a student directory opened with [`open_student`], verified.
pub fn read_student_json<T: serde::de::DeserializeOwned>(files: &Verified, dir: &Path, name: &str) -> Result<T> {
    let bytes = files.bytes(name)?;
    serde_json::from_slice(&bytes).map_err(|e| StudentError::Json { path: dir.join(name), msg: e.to_string() })
}

/// Loads a student saved by [`save_student`], every file verified against its checksum list.
pub fn load_student(dir: &Path) -> Result<Student> {
    let files = open_student(dir)?;
    let cfg: StudentConfig = read_student_json(&files, dir, "config.json")?;
    let thresholds: Vec<f32> = read_student_json(&files, dir, "thresholds.json")?;
    if thresholds.len() != cfg.head.num_labels {
        return Err(StudentError::Invalid(format!(
            "{}: {} thresholds for {} labels",
            dir.join("thresholds.json").display(),
            thresholds.len(),
            cfg.head.num_labels
        )));
    }
    let tp = dir.join("tokenizer.json");
    let tok = String::from_utf8(files.bytes("tokenizer.json")?)
        .map_err(|e| StudentError::Json { path: tp.clone(), msg: e.to_string() })?;
    let encoder = TextEncoder::from_json(&tok, &tp, cfg.max_len)?;
    let tensors = files.tensors("model.safetensors")?;
    let loaded = BertForMultiLabel::from_checkpoint(&tensors, &cfg.bert, &cfg.head, &Device::Cpu, 0)?;
    if !loaded.report.fresh_init.is_empty() {
        return Err(StudentError::Invalid(format!(
            "{}: tensors missing from a trained student: {:?}",
            dir.display(),
            loaded.report.fresh_init
        )));
    }
    let training = if files.has("provenance.json") {
        Training::from_provenance(&read_student_json(&files, dir, "provenance.json")?)
    } else {
        Training::Unknown
    };
    Ok(Student { model: loaded.model, encoder, config: cfg, thresholds, training })
}

#[cfg(test)]
mod tests {
    use super::Training;
    use serde_json::json;

    #[test]
    fn training_kind_is_read_from_the_provenance() {
        let p = |teacher: serde_json::Value, soft: f64, attn: f64| {
            json!({"teacher": teacher, "train_config": {"distill": {
                "hard": 0.9, "soft": soft, "attn_word": 0.0, "attn_concept": attn, "attn_field": 0.0}}})
        };
        let t = json!({"model": "qwen"});
        assert_eq!(Training::from_provenance(&p(t.clone(), 0.1, 0.0)), Training::Distilled);
        assert_eq!(Training::from_provenance(&p(t.clone(), 0.0, 0.5)), Training::Distilled);
        assert_eq!(Training::from_provenance(&p(t, 0.0, 0.0)), Training::HardLabels);
        assert_eq!(Training::from_provenance(&p(serde_json::Value::Null, 0.1, 0.0)), Training::HardLabels);
        assert_eq!(Training::from_provenance(&json!({"teacher": null})), Training::Unknown);
        assert_eq!(Training::from_provenance(&json!({})), Training::Unknown);
    }
}
