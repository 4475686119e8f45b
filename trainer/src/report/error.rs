//! Why a report could not be built or written ([`ReportError`]); every variant names the model,
//! field, file or plot at fault.

use std::io;
use std::path::{Path, PathBuf};

use ckd_core::metrics::MetricsError;

/// Why a report could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A model's predictions could not be evaluated (shape, NaN, out-of-range probability...).
    #[error("model {model:?}: {source}")]
    Metrics {
        /// The model's name.
        model: String,
        /// What the metrics code rejected.
        #[source]
        source: MetricsError,
    },
    /// Some input field is invalid; the message names it.
    #[error("report input: {0}")]
    Invalid(String),
    /// A line of a `curves.jsonl` could not be read.
    #[error("{path}, line {line}: {message}")]
    CurveLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The plotting library failed to draw a plot.
    #[error("plot {plot}: {message}")]
    Plot {
        /// Which plot.
        plot: &'static str,
        /// The plotting library's message.
        message: String,
    },
}

/// Maps an I/O error on `path` to [`ReportError::Io`].
pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ReportError + '_ {
    move |source| ReportError::Io { path: path.to_path_buf(), source }
}
