//! Ingest: MIMIC-III CSVs or CKD-EHR JSONL -> next-visit samples.
//!
//! MIMIC-III: admissions are ordered by `(ADMITTIME, HADM_ID)` within `SUBJECT_ID`; each
//! consecutive pair `(i, i+1)` gives one sample whose input is visit `i` and whose labels are the
//! benchmark phenotypes of visit `i+1`'s diagnosis codes. Diagnoses are rendered as ICD-9
//! three-digit category titles, medications as `PRESCRIPTIONS.DRUG` deduplicated in first-seen
//! order, procedures as `D_ICD_PROCEDURES.SHORT_TITLE`.
//!
//! Tables are streamed row by row (`.csv` or `.csv.gz`, header names in any case), so the full
//! MIMIC-III fits in memory easily: only per-admission code lists and interned drug names are
//! kept. Each row is one line (see `csv_rows`: exact line numbers in CRLF and LF files, a
//! stray quote cannot swallow the rows after it). A malformed row is an error naming file,
//! line and column; with `lenient` it is skipped and counted. Every row read is accounted for
//! in [`TableStats`] as used or skipped with a reason, and the first lines skipped for each
//! reason are named.
//!
//! An input that gives nothing is an error naming the file ([`IngestError::Unusable`]), never an
//! empty output: a required table (ADMISSIONS, DIAGNOSES_ICD) with no data rows, any table with
//! data rows none of which is usable, and tables or a JSONL file that give no sample. An
//! optional table with no data rows is read as such, with a warning in the summary.
//!
//! [`ingest_mimic_bytes`] and [`ingest_jsonl_bytes`] read the same from bytes held in memory
//! (the `mimic-csv` and `jsonl` fuzz targets of `fuzz/` go in through them).

mod config;
mod csv_rows;
mod error;
mod jsonl;
mod knowledge;
mod mimic;
mod output;
mod summary;
mod table;
mod timestamp;

pub use config::IngestConfig;
pub use error::IngestError;
pub use jsonl::{ingest_jsonl, ingest_jsonl_bytes};
pub use knowledge::{attach_knowledge, attach_knowledge_fdr};
pub use mimic::{ingest_mimic, ingest_mimic_bytes};
pub use output::{read_samples, to_jsonl, write_outputs, OUTPUT_FILES};
use summary::check_rows;
pub use summary::{prevalence, IngestSummary, Ingested, TableStats, LINES_NAMED};
pub use table::{MimicTables, Progress};
use table::{Source, Table};
