//! Teacher soft labels in the CKD-EHR authors' file format (`hands_name_train.json`,
//! `hands_name_val.json`, see [`ckd_core::authors_soft_labels`]), both ways:
//! - read for `ckd student train --soft-labels FILE.json` ([`read_authors_file`]): object `i` of the
//!   array belongs to the `i`-th training sample (the `i`-th record of a JSONL `--train`, or of
//!   the `train.jsonl` that `ckd ingest` wrote beside a `samples.bin`);
//! - written by `ckd teacher label --format hands` and `ckd teacher merge --format hands`
//!   ([`label_to_authors_file`], [`write_authors_file`]): one object per sample, in the samples' order.
//!
//! The format has no ids, so the pairing is by position only: a count that differs from the
//! samples' is an error, never a partial pairing.

use std::path::{Path, PathBuf};

use ckd_core::authors_soft_labels::{self, AuthorsSoftLabelError, Row};
use ckd_core::evidence::{EvidenceFile, TeacherIdentity};
use ckd_core::visit::Sample;
use ckd_core::NUM_LABELS;
use indicatif::ProgressBar;

use crate::io::write_atomic;
use crate::student::SoftTargets;
use crate::teacher::label::{self, LabelConfig, LabelOutcome};
use crate::teacher::{LoadedTeacher, TeacherError};

/// Error reading or writing a soft-label file in the authors' format.
#[derive(Debug, thiserror::Error)]
pub enum SoftLabelError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file's content is malformed (the message names the object index and key).
    #[error("{path}: {source}{sample}")]
    Malformed {
        /// File.
        path: PathBuf,
        /// What is wrong.
        source: AuthorsSoftLabelError,
        /// ` (training sample ID)` for the object's index when there is such a sample, else empty.
        sample: String,
    },
    /// The file holds another number of objects than there are samples.
    #[error(
        "{path}: {objects} soft-label objects for {samples} training samples (object i belongs to the i-th \
         record of the JSONL the file was made for; both must hold the same records in the same order)"
    )]
    Count {
        /// File.
        path: PathBuf,
        /// Objects in the file.
        objects: usize,
        /// Training samples.
        samples: usize,
    },
    /// Labelling or reading the evidence failed.
    #[error(transparent)]
    Teacher(#[from] TeacherError),
}

/// Whether `--soft-labels PATH` names a file in the authors' format (a `.json` file; evidence
/// files are `.bin`, JSON lines `.jsonl`).
pub fn is_authors_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Pairs the rows of a soft-label file's `text` with `samples` by position. `path` is used in
/// errors and the teacher's identity only.
pub fn teacher_from_authors_text(text: &str, path: &Path, samples: &[Sample]) -> Result<SoftTargets, SoftLabelError> {
    let rows = authors_soft_labels::parse(text).map_err(|source| {
        let sample = source
            .index()
            .and_then(|i| samples.get(i))
            .map_or(String::new(), |s| format!(" (training sample {})", s.id));
        SoftLabelError::Malformed { path: path.to_path_buf(), source, sample }
    })?;
    if rows.len() != samples.len() {
        return Err(SoftLabelError::Count { path: path.to_path_buf(), objects: rows.len(), samples: samples.len() });
    }
    let mut t = SoftTargets::default();
    for (s, r) in samples.iter().zip(rows) {
        t.probs.insert(s.id.clone(), r.to_vec());
    }
    t.identity = Some(TeacherIdentity {
        model: format!("soft labels in the CKD-EHR authors' format from {}", path.display()),
        config_hash: String::new(),
        adapter_hash: None,
        temperature: 1.0,
        last_k_layers: 0,
    });
    Ok(t)
}

/// Reads a soft-label file and pairs it with `samples` ([`teacher_from_authors_text`]).
pub fn read_authors_file(path: &Path, samples: &[Sample]) -> Result<SoftTargets, SoftLabelError> {
    let text = crate::io::read_regular(path)
        .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
        .map_err(|source| SoftLabelError::Io { path: path.to_path_buf(), source })?;
    teacher_from_authors_text(&text, path, samples)
}

/// The authors' format of the probabilities of `file` for `samples`, in their order. A sample
/// without a record is an error naming it.
pub fn authors_file_text(file: &EvidenceFile, samples: &[Sample]) -> Result<String, SoftLabelError> {
    let ids: Vec<String> = samples.iter().map(|s| s.id.clone()).collect();
    let flat = label::probs_for(file, &ids)?;
    let rows: Vec<Row> = flat
        .chunks_exact(NUM_LABELS)
        .map(|c| {
            let mut r = [0f32; NUM_LABELS];
            r.copy_from_slice(c);
            r
        })
        .collect();
    authors_soft_labels::render(&rows).map_err(|e| TeacherError::Invalid(format!("evidence probabilities: {e}")).into())
}

/// Writes [`authors_file_text`] to `path` atomically.
pub fn write_authors_file(path: &Path, file: &EvidenceFile, samples: &[Sample]) -> Result<(), SoftLabelError> {
    let text = authors_file_text(file, samples)?;
    write_atomic(path, text.as_bytes()).map_err(|source| SoftLabelError::Io { path: path.to_path_buf(), source })
}

/// The evidence file kept beside a soft-label file `out` (`OUT.evidence.bin`): the labelling
/// resumes from it and it carries the attention evidence the authors' format has no room for.
pub fn evidence_beside(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_os_string();
    name.push(".evidence.bin");
    PathBuf::from(name)
}

/// `ckd teacher label --format hands`: labels every sample into [`evidence_beside`]`(out)`
/// (resuming from it), then writes the authors' format to `out`. Sharding is refused: a shard
/// holds some samples only, and the format pairs by position.
pub fn label_to_authors_file(
    teacher: &LoadedTeacher,
    samples: &[Sample],
    cfg: &LabelConfig,
    out: &Path,
    progress: &ProgressBar,
) -> Result<LabelOutcome, SoftLabelError> {
    if let Some((i, n)) = cfg.shard {
        return Err(TeacherError::Invalid(format!(
            "shard {i}/{n}: the authors' format pairs soft labels with records by position, so it holds every \
             sample; label shards as evidence files and join them with `ckd teacher merge --format hands --expect`"
        ))
        .into());
    }
    let evidence = evidence_beside(out);
    let o = label::label(teacher, samples, cfg, &evidence, progress)?;
    write_authors_file(out, &label::read_evidence(&evidence)?, samples)?;
    Ok(o)
}
