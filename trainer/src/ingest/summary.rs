//! The accounting of an ingest: per table, every row read is used or skipped for a named reason
//! ([`TableStats`]), the run's totals and warnings ([`IngestSummary`]), the check that a table
//! gave something usable ([`check_rows`]), and the result of an ingest ([`Ingested`]).

use std::collections::BTreeMap;
use std::path::Path;

use ckd_core::format::SampleFile;
use ckd_core::visit::Sample;
use serde::Serialize;

use super::IngestError;

/// Per-table accounting: every row read is either used or skipped for a named reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TableStats {
    /// Data rows read (header excluded).
    pub rows_read: u64,
    /// Rows that contributed to the output.
    pub rows_used: u64,
    /// Skipped rows by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    /// The first [`LINES_NAMED`] line numbers (1-based, header included) skipped for each
    /// reason, so that a skipped row can be found.
    pub first_lines: BTreeMap<&'static str, Vec<u64>>,
}

/// How many skipped lines per reason [`TableStats::first_lines`] names.
pub const LINES_NAMED: usize = 5;

impl TableStats {
    /// Counts a row skipped for `why` at `line`.
    pub(super) fn skip(&mut self, why: &'static str, line: u64) {
        *self.skipped.entry(why).or_default() += 1;
        let lines = self.first_lines.entry(why).or_default();
        if lines.len() < LINES_NAMED {
            lines.push(line);
        }
    }
}

/// Summary of an ingest run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestSummary {
    /// Accounting per input table (or the JSONL file).
    pub tables: BTreeMap<String, TableStats>,
    /// Admissions (MIMIC) or records (JSONL).
    pub admissions: u64,
    /// Patients.
    pub patients: u64,
    /// Samples per split.
    pub samples: BTreeMap<&'static str, u64>,
    /// Admissions that had no diagnosis rows (kept: their label set is empty).
    pub admissions_without_diagnoses: u64,
    /// Diagnosis codes whose three-digit category has no title in the ICD-9 table (rendered
    /// with the code's SHORT_TITLE from D_ICD_DIAGNOSES, or the code itself).
    pub diagnoses_without_category_title: u64,
    /// Procedure codes missing from D_ICD_PROCEDURES (rendered as the code itself).
    pub procedures_without_title: u64,
    /// What a small input lacks without being unusable (an optional table without data rows),
    /// one sentence each, naming the file.
    pub warnings: Vec<String>,
}

/// Tables without which no sample is right: ADMISSIONS orders the visits, DIAGNOSES_ICD gives
/// the labels. A table missing from this list may be a header only (with a warning).
const REQUIRED_TABLES: [&str; 2] = ["ADMISSIONS", "DIAGNOSES_ICD"];

/// What an optional table without data rows leaves out.
fn without_rows(table: &str) -> &'static str {
    match table {
        "PRESCRIPTIONS" => "no visit lists a medication",
        "PROCEDURES_ICD" => "no visit lists a procedure",
        "D_ICD_DIAGNOSES" => "diagnoses without a three-digit category title are written as codes",
        "D_ICD_PROCEDURES" => "procedures are written as codes",
        _ => "nothing is read from it",
    }
}

/// Checks a table's accounting once it has been read: a required table needs data rows, and a
/// table with data rows needs a usable one (else every row was skipped: the reasons are named).
/// An optional table without data rows gives a warning in `summary`.
pub(super) fn check_rows(
    file: &Path,
    table: &str,
    st: &TableStats,
    summary: &mut IngestSummary,
) -> Result<(), IngestError> {
    let required = REQUIRED_TABLES.contains(&table);
    let unusable = |msg: String| Err(IngestError::Unusable { file: file.to_path_buf(), msg });
    if st.rows_read == 0 {
        if required {
            return unusable("no data rows (a header only); this table is required".into());
        }
        summary.warnings.push(format!("{}: no data rows (a header only): {}", file.display(), without_rows(table)));
    } else if st.rows_used == 0 {
        let why: Vec<String> = st.skipped.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        return unusable(format!("none of its {} data rows is usable (skipped: {})", st.rows_read, why.join(", ")));
    }
    Ok(())
}

/// The output of an ingest: samples plus accounting.
pub struct Ingested {
    /// Samples and provenance, ready to be written as `samples.bin`.
    pub file: SampleFile,
    /// Accounting.
    pub summary: IngestSummary,
}

/// Label prevalence (fraction of samples with each label).
pub fn prevalence(samples: &[Sample]) -> Vec<f64> {
    let mut n = [0u64; ckd_core::NUM_LABELS];
    for s in samples {
        for l in s.labels.iter() {
            n[l as usize] += 1;
        }
    }
    n.iter().map(|&c| c as f64 / samples.len().max(1) as f64).collect()
}
