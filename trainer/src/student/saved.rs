//! A trained student's directory: [`save_student`] writes it sealed (checksums last),
//! [`open_student`] / [`read_student_json`] read its files verified, [`load_student`] builds the
//! inference [`Student`]; [`StudentConfig`] is its `config.json`, [`Training`] what its
//! `provenance.json` says about distillation.

use std::path::Path;

use candle_core::Device;
use candle_nn::VarMap;
use ckd_core::knowledge::KnowledgeTable;
use serde::{Deserialize, Serialize};

use super::checkpoint::named_vars;
use super::error::{io_err, Result, StudentError};
use crate::io::pretty_json;
use crate::models::bert::{BertForMultiLabel, Config, HeadConfig};
use crate::text::TextEncoder;
use crate::train_integrity::{Seal, SealedKind, Verified, SUMS_FILE};

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
    /// provenance (as [`super::job::train_student`] writes it).
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
