//! Why an ingest failed ([`IngestError`]); every variant names the file, and a row's error its
//! line and column.

use std::path::PathBuf;

/// Error of an ingest run.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A required table is missing from the directory.
    #[error("{dir}: table {table} not found (looked for {table}.csv, {table}.csv.gz and lower-case names)")]
    MissingTable {
        /// Directory searched.
        dir: PathBuf,
        /// Table name.
        table: &'static str,
    },
    /// A required column is missing from a table's header.
    #[error("{file}: header has no column {column}")]
    MissingColumn {
        /// File.
        file: PathBuf,
        /// Column name.
        column: &'static str,
    },
    /// A malformed row (use `--lenient` to skip and count such rows).
    #[error("{file}:{line}: column {column}: {msg}")]
    Row {
        /// File.
        file: PathBuf,
        /// 1-based line number.
        line: u64,
        /// Column name (or `-` when the row as a whole is malformed).
        column: String,
        /// What is wrong.
        msg: String,
    },
    /// A malformed JSONL line.
    #[error("{file}: {source}")]
    Jsonl {
        /// File.
        file: PathBuf,
        /// The error, with its line number.
        source: ckd_core::jsonl::JsonlError,
    },
    /// A binary file is not a valid sample file.
    #[error("{file}: {source}")]
    Format {
        /// File.
        file: PathBuf,
        /// What is wrong.
        source: ckd_core::format::FormatError,
    },
    /// A table or file gives nothing to ingest: a required table without data rows, a table
    /// none of whose rows is usable, or no sample at all.
    #[error("{file}: {msg}")]
    Unusable {
        /// File.
        file: PathBuf,
        /// What is missing.
        msg: String,
    },
    /// Reading failed.
    #[error("{file}: {source}")]
    Io {
        /// File.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}
