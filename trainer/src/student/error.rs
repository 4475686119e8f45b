//! The error of every student operation ([`StudentError`]) and the module's `Result`.
//!
//! Contract: a file that cannot be read or written is [`StudentError::Io`] naming the path;
//! a malformed JSON file is [`StudentError::Json`] naming the path; inconsistent inputs or
//! settings are [`StudentError::Invalid`]; the other variants wrap the lower layers' errors.

use std::path::{Path, PathBuf};

use ckd_core::metrics;

use crate::distill;
use crate::models::bert::BertError;
use crate::text::TextError;

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

pub(super) type Result<T> = std::result::Result<T, StudentError>;

/// Maps an I/O error on `path` to [`StudentError::Io`].
pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StudentError + '_ {
    move |source| StudentError::Io { path: path.to_path_buf(), source }
}
