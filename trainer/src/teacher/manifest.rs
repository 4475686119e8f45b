//! `teacher.json`, the manifest of a trained teacher directory: its format and version, the base
//! model it was trained on ([`BaseRef`]), and the SHA-256 of every weight file.
//! [`TeacherManifest::parse`] reads and checks it; [`save_manifest`] writes it last.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{file_sha256, fmt_err, io_err, label_space_hex, Result, TeacherDir};
use crate::io::{pretty_json, write_atomic};
use crate::models::lora::LoraConfig;

/// The base LLM of a teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BaseRef {
    /// One GGUF file (weights dequantized; tokenizer and chat template embedded).
    Gguf {
        /// File.
        path: PathBuf,
        /// SHA-256 (hex) of the file.
        sha256: String,
    },
    /// An HF directory: `config.json`, `tokenizer.json`, `model.safetensors` or sharded.
    Safetensors {
        /// Directory.
        path: PathBuf,
        /// SHA-256 (hex) of `config.json` plus every weight file, in name order.
        sha256: String,
    },
    /// The demo's small Qwen2-architecture model, trained from scratch on the cohort; its
    /// weights are `model.safetensors` in the teacher directory.
    Demo,
}

/// `teacher.json`: what a trained teacher directory holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherManifest {
    /// Always [`TEACHER_FORMAT`].
    pub format: String,
    /// [`TEACHER_VERSION`].
    pub version: u32,
    /// Label-space hash (hex) the head was trained for.
    pub label_space_hash: String,
    /// Human-readable model name.
    pub model_name: String,
    /// Base model.
    pub base: BaseRef,
    /// LoRA settings, when adapters were trained (`adapter/` holds them).
    pub lora: Option<LoraConfig>,
    /// Maximum prompt tokens (longer inputs are cut at the end of the input, see
    /// [`PromptEncoder`](super::PromptEncoder)).
    pub max_len: usize,
    /// The instruction of the prompts of samples that carry none of their own (rendered from
    /// MIMIC-III or the cohort; JSONL records keep theirs): the authors' instruction
    /// (`ckd_core::jsonl::INSTRUCTION`) from format v2 on. Absent in v1, whose teachers were
    /// prompted with `ckd_core::jsonl::LEGACY_INSTRUCTION` ([`TeacherManifest::prompt_instruction`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
    /// Per-label decision thresholds tuned on validation (head probabilities at temperature 1).
    pub thresholds: Vec<f32>,
    /// SHA-256 of every weight file of the directory (`head.safetensors`, `adapter/...`,
    /// `model.safetensors`), by relative path.
    pub files: Vec<(String, String)>,
    /// Fine-tuning and head training reports.
    pub training: serde_json::Value,
}

/// Name of the teacher manifest format.
pub const TEACHER_FORMAT: &str = "ckd-teacher";
/// Version of the teacher manifest format written.
///
/// - v2: `instruction` records the instruction of prompts for samples without one of their own,
///   the CKD-EHR authors' (`Determine that the patient has one or more of the following diseases
///   at the next visit: ` + the 25 names); fine-tuning answers of such samples use the authors'
///   spellings.
/// - v1 (still read): no `instruction` field; those prompts used
///   `ckd_core::jsonl::LEGACY_INSTRUCTION` (and answers this project's short names), and a v1
///   teacher keeps being prompted that way, as it was trained.
pub const TEACHER_VERSION: u32 = 2;

impl TeacherManifest {
    /// Parses and checks `teacher.json` (versions 1 and 2, this build's label space). `path`
    /// is used in errors only.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let m: TeacherManifest = serde_json::from_str(text).map_err(|e| fmt_err(path, e))?;
        if m.format != TEACHER_FORMAT || !(1..=TEACHER_VERSION).contains(&m.version) {
            return Err(fmt_err(
                path,
                format!(
                    "format {} v{} (this build reads {TEACHER_FORMAT} v1 to v{TEACHER_VERSION})",
                    m.format, m.version
                ),
            ));
        }
        match (m.version, &m.instruction) {
            (1, Some(_)) => return Err(fmt_err(path, "a v1 manifest has no `instruction` field")),
            (v, None) if v >= 2 => return Err(fmt_err(path, format!("v{v} manifest without `instruction`"))),
            _ => {}
        }
        if m.label_space_hash != label_space_hex() {
            return Err(fmt_err(
                path,
                format!("label space {} differs from this build's {}", m.label_space_hash, label_space_hex()),
            ));
        }
        Ok(m)
    }

    /// The instruction this teacher was trained with for samples without their own.
    pub fn prompt_instruction(&self) -> &str {
        self.instruction.as_deref().unwrap_or(ckd_core::jsonl::LEGACY_INSTRUCTION)
    }
}

/// Writes `teacher.json` last (atomically), after computing the hashes of the weight files that
/// the stages already wrote into `dir`.
pub fn save_manifest(dir: &Path, mut manifest: TeacherManifest, weight_files: &[&str]) -> Result<TeacherManifest> {
    manifest.files = weight_files
        .iter()
        .map(|rel| Ok((rel.to_string(), file_sha256(&dir.join(rel))?)))
        .collect::<Result<Vec<_>>>()?;
    let p = TeacherDir(dir.to_path_buf()).manifest();
    write_atomic(&p, pretty_json(&manifest).as_bytes()).map_err(io_err(&p))?;
    Ok(manifest)
}
