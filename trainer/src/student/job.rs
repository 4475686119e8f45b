//! One student training job as a library call (`ckd student train`, `ckd pipeline`, `ckd bench`):
//! the tokenizer (the checkpoint's, or WordPiece trained on the training texts), the model
//! (from a checkpoint or a preset), the training loop, then the saved student directory.

use std::path::Path;

use candle_core::Device;
use ckd_core::knowledge::KnowledgeTable;
use ckd_core::visit::Sample;
use indicatif::ProgressBar;

use super::error::io_err;
use super::{
    save_student, train, Preset, SoftTargets, StudentConfig, StudentError, TokenizedSamples, TrainConfig, TrainLoop,
    TrainOutcome,
};
use crate::io::write_atomic;
use crate::models::bert::{BertForMultiLabel, Config as BertConfig, HeadConfig as BertHead, Pooling};
use crate::text::TextEncoder;

/// One student training job.
pub struct StudentJob<'a> {
    /// Training samples.
    pub train: &'a [Sample],
    /// Validation samples.
    pub val: &'a [Sample],
    /// The teacher's soft targets (required when the loss gives them weight).
    pub teacher: Option<&'a SoftTargets>,
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

/// Trains a student and, when the run finished, saves it into `job.out`. Returns the outcome
/// (`finished == false`, nothing saved, when `max_steps` paused the run).
pub fn train_student(job: &StudentJob<'_>, bar: &ProgressBar) -> Result<TrainOutcome, StudentError> {
    let head = BertHead { pooling: job.pooling, ..BertHead::default() };
    let dev = Device::Cpu;
    std::fs::create_dir_all(job.out).map_err(io_err(job.out))?;
    let (encoder, bert_cfg, model, varmap, init) = match job.init {
        Some(dir) => {
            let cp = dir.join("config.json");
            let text = std::fs::read_to_string(&cp).map_err(io_err(&cp))?;
            let bert_cfg = BertConfig::from_json(&text)?;
            let encoder =
                TextEncoder::from_file(&dir.join("tokenizer.json"), job.max_len.min(bert_cfg.max_position_embeddings))?;
            let tensors = crate::models::checkpoint::read_safetensors(&dir.join("model.safetensors"), &dev)?;
            let loaded = BertForMultiLabel::from_checkpoint(&tensors, &bert_cfg, &head, &dev, job.cfg.seed)?;
            tracing::info!("init from {}: {}", dir.display(), loaded.report);
            (encoder, bert_cfg, loaded.model, loaded.varmap, format!("checkpoint {}", dir.display()))
        }
        None => {
            let tokenizer_path = job.out.join("tokenizer.json");
            let encoder = if job.resume && tokenizer_path.is_file() {
                TextEncoder::from_file(&tokenizer_path, job.max_len)?
            } else {
                let texts: Vec<String> = job.train.iter().map(|s| s.text()).collect();
                TextEncoder::train_wordpiece(texts.iter().map(String::as_str), job.vocab_size, job.max_len)?
            };
            write_atomic(&tokenizer_path, encoder.to_json()?.as_bytes()).map_err(io_err(&tokenizer_path))?;
            let bert_cfg = job.preset.config(encoder.vocab_size(), job.max_len);
            let (model, varmap) = BertForMultiLabel::init(&bert_cfg, &head, &dev, job.cfg.seed)?;
            (encoder, bert_cfg, model, varmap, format!("from scratch ({:?})", job.preset))
        }
    };
    let train_samples = TokenizedSamples::new(job.train, &encoder)?;
    let val_samples = TokenizedSamples::new(job.val, &encoder)?;
    let train_loop = TrainLoop {
        model: &model,
        varmap: &varmap,
        encoder: &encoder,
        train: &train_samples,
        val: &val_samples,
        teacher: job.teacher,
        cfg: &job.cfg,
        dir: job.out,
        progress: bar,
    };
    let outcome = train(&train_loop, job.resume)?;
    if !outcome.finished {
        return Ok(outcome);
    }
    let provenance = serde_json::json!({
        "created_by": format!("ckd {}", env!("CARGO_PKG_VERSION")),
        "data": job.provenance,
        "train_samples": train_samples.len(),
        "val_samples": val_samples.len(),
        "train_truncated": train_samples.truncated,
        "init": init,
        "teacher": job.teacher.and_then(|t| t.identity.clone()),
        "train_config": job.cfg,
        "outcome": outcome,
    });
    let scfg = StudentConfig { bert: bert_cfg, head, max_len: encoder.max_len() };
    save_student(job.out, &scfg, &varmap, &encoder, &outcome.thresholds, job.knowledge, &provenance)?;
    Ok(outcome)
}
