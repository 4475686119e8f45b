//! [`EdgeError`], the one error type of the edge runtime, and the conversion of tract's errors
//! into it.

use std::path::PathBuf;

use ckd_core::bundle::{BundleError, TOKENIZER_FILE};

/// Error of the edge runtime. Every variant says what and where.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// A bundle file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The bundle is invalid (manifest, label space, checksums).
    #[error("bundle {bundle}: {source}")]
    Bundle {
        /// Bundle directory.
        bundle: PathBuf,
        /// What is wrong.
        source: BundleError,
    },
    /// The tokenizer file does not load or does not match the manifest's settings.
    #[error("bundle {bundle}: {TOKENIZER_FILE}: {msg}")]
    Tokenizer {
        /// Bundle directory.
        bundle: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The ONNX model does not load or run.
    #[error("model: {0}")]
    Model(String),
    /// The input text is empty (or whitespace only).
    #[error("input {index}: empty text")]
    EmptyInput {
        /// Index of the input in the batch.
        index: usize,
    },
    /// A visit with no diagnosis, medication or procedure. The model's answer to it would be its
    /// prior alone, and a threshold tuned on validation can sit below a label's prior (an empty
    /// visit came back positive for "Shock"), so it is refused rather than predicted.
    #[error("visit: no diagnoses, medications or procedures; an empty visit carries nothing to predict from")]
    EmptyVisit,
    /// A visit item that would vanish from the text (no code and no title, an empty drug name).
    #[error("visit: {0}")]
    Visit(#[from] ckd_core::visit::EmptyItem),
    /// The input text is longer than [`MAX_INPUT_BYTES`](crate::MAX_INPUT_BYTES).
    #[error("input {index}: {bytes} bytes of text, over the maximum of {max}")]
    InputTooLong {
        /// Index of the input in the batch.
        index: usize,
        /// Its length in bytes.
        bytes: usize,
        /// The maximum.
        max: usize,
    },
    /// An [`EngineOptions`](crate::EngineOptions) value this build cannot honour.
    #[error("engine options: {0}")]
    Options(String),
    /// A benchmark asked for an input longer than the bundle accepts ([`crate::bench`]).
    #[error("cannot make a {requested}-token input: the bundle truncates inputs at {max} tokens")]
    BenchLength {
        /// Token count asked for.
        requested: usize,
        /// The bundle's maximum, special tokens included.
        max: usize,
    },
    /// A text to explain is not in the CKD-EHR layout, so its concepts are unknown.
    #[error("text: not in the CKD-EHR layout (`The patient-acquired disease is ...`): its concepts cannot be found")]
    Layout,
    /// Tokenization failed.
    #[error("input {index}: tokenizer: {msg}")]
    Encode {
        /// Index of the input in the batch.
        index: usize,
        /// What the tokenizer said.
        msg: String,
    },
}

/// Any tract (anyhow) error as [`EdgeError::Model`], its causes included (`{:#}`).
pub(crate) fn model_err(e: impl std::fmt::Display) -> EdgeError {
    EdgeError::Model(format!("{e:#}"))
}
