//! The error of every teacher stage ([`TeacherError`]), its [`Result`], and the helpers that
//! name the file an I/O or format error is about.

use std::path::{Path, PathBuf};

use crate::models::checkpoint;
use crate::models::lora::LoraError;
use crate::models::qwen2::Qwen2Error;

/// Error of a teacher stage.
#[derive(Debug, thiserror::Error)]
pub enum TeacherError {
    /// Tensor operation failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// The Qwen2 model could not be built or run.
    #[error("model: {0}")]
    Qwen2(#[from] Qwen2Error),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// LoRA adapter problem.
    #[error("adapter: {0}")]
    Lora(#[from] LoraError),
    /// Loss computation failed.
    #[error("loss: {0}")]
    Distill(#[from] crate::distill::DistillError),
    /// Metrics failed.
    #[error("metrics: {0}")]
    Metrics(#[from] ckd_core::metrics::MetricsError),
    /// Tokenizer problem.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A file's content is malformed or inconsistent.
    #[error("{path}: {msg}")]
    Format {
        /// File.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// Invalid settings or inputs.
    #[error("{0}")]
    Invalid(String),
    /// A tensor file could not be written (see [`crate::train_integrity::write_tensors`]).
    #[error(transparent)]
    Integrity(#[from] crate::train_integrity::IntegrityError),
}

/// Result of teacher stages.
pub type Result<T, E = TeacherError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TeacherError + '_ {
    move |source| TeacherError::Io { path: path.to_path_buf(), source }
}

pub(crate) fn fmt_err(path: &Path, msg: impl std::fmt::Display) -> TeacherError {
    TeacherError::Format { path: path.to_path_buf(), msg: msg.to_string() }
}
