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

mod csv_rows;
mod mimic;
mod timestamp;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use ckd_core::format::{hex, SampleFile};
use ckd_core::jsonl;
use ckd_core::knowledge::{KnowledgeConfig, KnowledgeTable};
use ckd_core::split::SplitConfig;
use ckd_core::visit::{self, Coded, RawRecord, Sample, Split, Visit};
use serde::Serialize;
use sha2::{Digest, Sha256};

use self::csv_rows::{CsvRows, Line};
use crate::io::{find_table, open_maybe_gz, pretty_json, sha256_hex};

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
        source: jsonl::JsonlError,
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

/// Settings of an ingest run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct IngestConfig {
    /// Skip and count malformed rows instead of failing.
    pub lenient: bool,
    /// Patient-level split.
    pub split: SplitConfig,
    /// Knowledge clauses (`None` turns them off, for ablations).
    pub knowledge: Option<KnowledgeConfig>,
    /// Refuse exact duplicate JSONL records instead of keeping them (with a warning) in the
    /// split of their first occurrence.
    pub refuse_duplicates: bool,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            lenient: false,
            split: SplitConfig::default(),
            knowledge: Some(KnowledgeConfig::default()),
            refuse_duplicates: false,
        }
    }
}

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
    fn skip(&mut self, why: &'static str, line: u64) {
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
fn check_rows(file: &Path, table: &str, st: &TableStats, summary: &mut IngestSummary) -> Result<(), IngestError> {
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

/// Progress callback: `(table, rows read so far)`, called every 65,536 rows and at the end.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64);

const PROGRESS_EVERY: u64 = 1 << 16;
const MAX_COLS: usize = 4;

/// The six tables [`ingest_mimic`] reads, held in memory as uncompressed CSV (for callers
/// without a directory: fuzzing, tests). [`ingest_mimic_bytes`] reads them exactly as
/// [`ingest_mimic`] reads the files of a directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct MimicTables<'a> {
    /// `ADMISSIONS.csv`.
    pub admissions: &'a [u8],
    /// `DIAGNOSES_ICD.csv`.
    pub diagnoses_icd: &'a [u8],
    /// `PROCEDURES_ICD.csv`.
    pub procedures_icd: &'a [u8],
    /// `PRESCRIPTIONS.csv`.
    pub prescriptions: &'a [u8],
    /// `D_ICD_DIAGNOSES.csv`.
    pub d_icd_diagnoses: &'a [u8],
    /// `D_ICD_PROCEDURES.csv`.
    pub d_icd_procedures: &'a [u8],
}

impl<'a> MimicTables<'a> {
    /// Table names, in the order of the fields.
    pub const NAMES: [&'static str; 6] =
        ["ADMISSIONS", "DIAGNOSES_ICD", "PROCEDURES_ICD", "PRESCRIPTIONS", "D_ICD_DIAGNOSES", "D_ICD_PROCEDURES"];

    /// The bytes of table `name` (one of [`Self::NAMES`]; any other name gives `None`).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        Some(match name {
            "ADMISSIONS" => self.admissions,
            "DIAGNOSES_ICD" => self.diagnoses_icd,
            "PROCEDURES_ICD" => self.procedures_icd,
            "PRESCRIPTIONS" => self.prescriptions,
            "D_ICD_DIAGNOSES" => self.d_icd_diagnoses,
            "D_ICD_PROCEDURES" => self.d_icd_procedures,
            _ => return None,
        })
    }
}

/// Where the tables of a MIMIC-III ingest come from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// Files of a directory (`.csv` or `.csv.gz`, see [`find_table`]).
    Dir(&'a Path),
    /// Bytes in memory; errors name the table as `<TABLE>.csv`.
    Memory(&'a MimicTables<'a>),
}

/// A CSV table opened for streaming with its column indices resolved.
struct Table<'a> {
    path: PathBuf,
    rows: CsvRows<Box<dyn BufRead + 'a>>,
    /// Fields in the header (every row must have as many).
    width: usize,
    cols: Vec<usize>,
    names: &'static [&'static str],
}

impl<'a> Table<'a> {
    /// Opens `table` of `src` and adds its bytes to `hasher` (the source hash).
    fn open(
        src: Source<'a>,
        hasher: &mut Sha256,
        table: &'static str,
        names: &'static [&'static str],
    ) -> Result<Self, IngestError> {
        debug_assert!(names.len() <= MAX_COLS);
        let (path, rd): (PathBuf, Box<dyn BufRead + 'a>) = match src {
            Source::Dir(dir) => {
                let found = find_table(dir, table).map_err(|(file, source)| IngestError::Io { file, source })?;
                let path = found.ok_or_else(|| IngestError::MissingTable { dir: dir.to_path_buf(), table })?;
                let rd = open_maybe_gz(&path).map_err(|source| IngestError::Io { file: path.clone(), source })?;
                (path, rd)
            }
            Source::Memory(tables) => {
                (PathBuf::from(format!("{table}.csv")), Box::new(tables.get(table).unwrap_or_default()))
            }
        };
        let mut rows = CsvRows::new(rd);
        let header: Vec<Vec<u8>> =
            match rows.next_line().map_err(|source| IngestError::Io { file: path.clone(), source })? {
                None => {
                    let msg = format!("the file is empty (no header line; expected columns {})", names.join(", "));
                    return Err(IngestError::Unusable { file: path, msg });
                }
                Some((_, Line::Row(f))) => (0..f.len()).map(|i| f.get(i).unwrap_or_default().to_vec()).collect(),
                Some((line, Line::UnclosedQuote)) => {
                    return Err(IngestError::Row { file: path, line, column: "-".into(), msg: UNCLOSED_QUOTE.into() })
                }
            };
        // A CR-only file is one line to the reader: its header would swallow every row.
        if header.iter().any(|h| h.contains(&b'\r')) {
            return Err(IngestError::Row {
                file: path,
                line: 1,
                column: "-".into(),
                msg: "a carriage return inside the header line: are the line ends CR only? (convert them to LF \
                      or CRLF)"
                    .into(),
            });
        }
        let mut cols = Vec::with_capacity(names.len());
        for &n in names {
            let i = header
                .iter()
                .position(|h| h.trim_ascii().eq_ignore_ascii_case(n.as_bytes()))
                .ok_or(IngestError::MissingColumn { file: path.clone(), column: n })?;
            cols.push(i);
        }
        // The file as stored (compressed or not) goes into the source hash.
        match src {
            Source::Dir(_) => hash_file(hasher, &path)?,
            Source::Memory(tables) => hasher.update(tables.get(table).unwrap_or_default()),
        }
        Ok(Table { path, rows, width: header.len(), cols, names })
    }

    /// Streams rows; `f(fields, line, stats)` gets the selected columns in `names` order. A row
    /// with a stray quote, a wrong field count or bad UTF-8 in a selected column is an error,
    /// or with `lenient` a skipped "malformed row", as is a row `f` rejects with
    /// [`IngestError::Row`].
    fn for_each(
        &mut self,
        stats: &mut TableStats,
        lenient: bool,
        progress: &mut dyn FnMut(&str, u64),
        label: &str,
        mut f: impl FnMut(&[&str], u64, &mut TableStats) -> Result<(), IngestError>,
    ) -> Result<(), IngestError> {
        let n = self.cols.len();
        loop {
            let next = self.rows.next_line().map_err(|source| IngestError::Io { file: self.path.clone(), source })?;
            let Some((line, row)) = next else { break };
            stats.rows_read += 1;
            if stats.rows_read.is_multiple_of(PROGRESS_EVERY) {
                progress(label, stats.rows_read);
            }
            // At most MAX_COLS selected columns per table; no allocation per row.
            let mut fields: [&str; MAX_COLS] = [""; MAX_COLS];
            let bad: Option<(&str, String)> = match row {
                Line::UnclosedQuote => Some(("-", UNCLOSED_QUOTE.into())),
                Line::Row(r) if r.len() != self.width => {
                    Some(("-", format!("row has {} fields, header has {}", r.len(), self.width)))
                }
                Line::Row(r) => {
                    self.cols.iter().enumerate().find_map(|(k, &c)| match r.get(c).map(std::str::from_utf8) {
                        Some(Ok(s)) => {
                            fields[k] = s.trim();
                            None
                        }
                        _ => Some((self.names[k], "invalid UTF-8".to_string())),
                    })
                }
            };
            if let Some((column, msg)) = bad {
                if lenient {
                    stats.skip("malformed row", line);
                    continue;
                }
                return Err(IngestError::Row { file: self.path.clone(), line, column: column.into(), msg });
            }
            match f(&fields[..n], line, stats) {
                Ok(()) => {}
                Err(IngestError::Row { .. }) if lenient => stats.skip("malformed row", line),
                Err(e) => return Err(e),
            }
        }
        progress(label, stats.rows_read);
        Ok(())
    }
}

const UNCLOSED_QUOTE: &str = "a quoted field is not closed on this line (a stray `\"`?)";

/// The output of an ingest: samples plus accounting.
pub struct Ingested {
    /// Samples and provenance, ready to be written as `samples.bin`.
    pub file: SampleFile,
    /// Accounting.
    pub summary: IngestSummary,
}

/// Reads a MIMIC-III directory into samples. Reads ADMISSIONS, DIAGNOSES_ICD, PRESCRIPTIONS,
/// PROCEDURES_ICD, D_ICD_DIAGNOSES and D_ICD_PROCEDURES.
pub fn ingest_mimic(dir: &Path, cfg: &IngestConfig, progress: Progress<'_>) -> Result<Ingested, IngestError> {
    ingest_tables(Source::Dir(dir), cfg, progress)
}

/// [`ingest_mimic`] on tables held in memory (uncompressed CSV). The result is the one
/// [`ingest_mimic`] gives on a directory of the same files, except for the recorded source
/// (`mimic:memory`); errors name a table as `<TABLE>.csv` (e.g. `ADMISSIONS.csv:2`).
pub fn ingest_mimic_bytes(
    tables: &MimicTables<'_>,
    cfg: &IngestConfig,
    progress: Progress<'_>,
) -> Result<Ingested, IngestError> {
    ingest_tables(Source::Memory(tables), cfg, progress)
}

fn ingest_tables(src: Source<'_>, cfg: &IngestConfig, progress: Progress<'_>) -> Result<Ingested, IngestError> {
    let mut tables =
        mimic::Tables { src, hasher: Sha256::new(), lenient: cfg.lenient, progress, summary: IngestSummary::default() };
    // Dictionaries first: they are small.
    let dx_titles = tables.titles("D_ICD_DIAGNOSES")?;
    let px_titles = tables.titles("D_ICD_PROCEDURES")?;
    let (mut adm, admissions_path) = tables.admissions()?;
    for (table, is_dx) in [("DIAGNOSES_ICD", true), ("PROCEDURES_ICD", false)] {
        tables.codes(table, is_dx, &mut adm)?;
    }
    let drugs = tables.prescriptions(&mut adm)?;
    let mimic::Tables { hasher, mut summary, .. } = tables;

    let (visits, by_subject) = mimic::visits(adm, &dx_titles, &px_titles, &drugs, &mut summary);
    summary.admissions = visits.len() as u64;
    summary.patients = by_subject.len() as u64;
    let mut samples = mimic::next_visit_samples(&visits, by_subject, cfg.split);
    if samples.is_empty() {
        return Err(IngestError::Unusable {
            file: admissions_path,
            msg: format!(
                "no patient has two admissions ({} admissions of {} patients): there is no next-visit sample",
                summary.admissions, summary.patients
            ),
        });
    }
    let knowledge = cfg.knowledge.map(|kc| attach_knowledge(&mut samples, kc));
    for s in &samples {
        *summary.samples.entry(s.split.name()).or_default() += 1;
    }
    let file = SampleFile {
        source: match src {
            Source::Dir(dir) => format!("mimic:{}", dir.display()),
            Source::Memory(_) => "mimic:memory".into(),
        },
        source_hash: hex(&hasher.finalize()),
        split: cfg.split,
        knowledge,
        samples,
    };
    Ok(Ingested { file, summary })
}

/// Fits the knowledge table on the training samples only and attaches each sample's clauses,
/// which depend on its own visit-`i` facts only.
pub fn attach_knowledge(samples: &mut [Sample], cfg: KnowledgeConfig) -> KnowledgeTable {
    attach_knowledge_fdr(samples, cfg, ckd_core::knowledge::DEFAULT_FDR)
}

/// [`attach_knowledge`] at false discovery rate `fdr` (see `KnowledgeTable::fit_with_fdr`).
pub fn attach_knowledge_fdr(samples: &mut [Sample], cfg: KnowledgeConfig, fdr: f64) -> KnowledgeTable {
    let table = KnowledgeTable::fit_with_fdr(
        samples.iter().filter(|s| s.split == Split::Train).map(|s| (&s.visit, s.labels)),
        cfg,
        fdr,
    );
    for s in samples.iter_mut() {
        s.knowledge = table.clauses(s.visit.phenotypes());
    }
    table
}

fn hash_file(h: &mut Sha256, path: &Path) -> Result<(), IngestError> {
    let mut f = crate::io::open_regular(path).map_err(|source| IngestError::Io { file: path.to_path_buf(), source })?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|source| IngestError::Io { file: path.to_path_buf(), source })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(())
}

/// Reads CKD-EHR JSONL into samples. Each record is its own subject (the format carries no
/// patient id), with id `L<line>`; the split is assigned from the line number. An exact
/// duplicate of an earlier record (same instruction, input and output) takes the subject, hence
/// the split, of its first occurrence, so that no record is both trained and tested on; the
/// summary warns with their line numbers ([`IngestConfig::refuse_duplicates`]: an error). The text is
/// kept verbatim (knowledge clauses included), and the visit's items are recovered from it.
/// A UTF-8 byte-order mark at the start is skipped. A line that is not valid UTF-8 is an error
/// naming the line (with `lenient`, skipped as "invalid UTF-8"); the other lines are read.
pub fn ingest_jsonl(path: &Path, cfg: &IngestConfig) -> Result<Ingested, IngestError> {
    let bytes = crate::io::read_regular(path).map_err(|source| IngestError::Io { file: path.to_path_buf(), source })?;
    ingest_jsonl_bytes(path, &bytes, cfg)
}

/// [`ingest_jsonl`] on bytes in memory; `path` names them in errors, in the summary's table and
/// in the recorded source, as if they had been read from that file.
pub fn ingest_jsonl_bytes(path: &Path, bytes: &[u8], cfg: &IngestConfig) -> Result<Ingested, IngestError> {
    let body = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let mut summary = IngestSummary::default();
    let mut st = TableStats::default();
    let mut samples = Vec::new();
    for (i, raw) in body.split_inclusive(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        st.rows_read += 1;
        let raw = match std::str::from_utf8(raw) {
            Ok(r) => r,
            Err(_) if cfg.lenient => {
                st.skip("invalid UTF-8", line_no as u64);
                continue;
            }
            Err(e) => {
                return Err(IngestError::Row {
                    file: path.to_path_buf(),
                    line: line_no as u64,
                    column: "-".into(),
                    msg: format!("not valid UTF-8 (at byte {} of the line)", e.valid_up_to()),
                })
            }
        };
        let rec = match jsonl::parse_line(raw, line_no) {
            Ok(Some(r)) => r,
            Ok(None) => {
                st.skip("blank line", line_no as u64);
                continue;
            }
            Err(_) if cfg.lenient => {
                st.skip("malformed record", line_no as u64);
                continue;
            }
            Err(source) => return Err(IngestError::Jsonl { file: path.to_path_buf(), source }),
        };
        st.rows_used += 1;
        let visit = visit_from_text(&rec.input);
        let subject = line_no as u64;
        samples.push(Sample {
            id: format!("L{line_no}"),
            subject,
            split: cfg.split.assign(subject),
            visit,
            knowledge: Vec::new(),
            labels: rec.labels,
            raw: Some(RawRecord { instruction: rec.instruction, input: rec.input, output: rec.output, line: rec.line }),
        });
    }
    if st.rows_used == 0 {
        let why: Vec<String> = st.skipped.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let msg = if why.is_empty() {
            "no records (the file is empty)".to_string()
        } else {
            format!("no usable record in {} lines (skipped: {})", st.rows_read, why.join(", "))
        };
        return Err(IngestError::Unusable { file: path.to_path_buf(), msg });
    }
    link_duplicates(path, &mut samples, cfg.refuse_duplicates, &mut summary)?;
    summary.tables.insert(path.file_name().map_or("jsonl".into(), |n| n.to_string_lossy().into_owned()), st);
    summary.admissions = samples.len() as u64;
    summary.patients = samples.iter().map(|s| s.subject).collect::<std::collections::BTreeSet<_>>().len() as u64;
    for s in &samples {
        *summary.samples.entry(s.split.name()).or_default() += 1;
    }
    let file = SampleFile {
        source: format!("jsonl:{}", path.display()),
        source_hash: sha256_hex(bytes),
        split: cfg.split,
        knowledge: None,
        samples,
    };
    Ok(Ingested { file, summary })
}

/// Gives each exact duplicate among JSONL `samples` (subject = line number, in line order) the
/// subject and split of its first occurrence, and warns naming the lines; with `refuse`, the
/// first duplicate is an error naming both lines.
fn link_duplicates(
    path: &Path,
    samples: &mut [Sample],
    refuse: bool,
    summary: &mut IngestSummary,
) -> Result<(), IngestError> {
    let mut first: HashMap<[u8; 32], (u64, Split)> = HashMap::new();
    let mut repeats: Vec<(u64, u64)> = Vec::new();
    for s in samples.iter_mut() {
        let Some(raw) = &s.raw else { continue };
        let mut h = Sha256::new();
        for part in [&raw.instruction, &raw.input, &raw.output] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        let (subject, split) = *first.entry(h.finalize().into()).or_insert((s.subject, s.split));
        if subject == s.subject {
            continue;
        }
        if refuse {
            return Err(IngestError::Row {
                file: path.to_path_buf(),
                line: s.subject,
                column: "-".into(),
                msg: format!("exact duplicate of the record on line {subject} (refused: --refuse-duplicates)"),
            });
        }
        repeats.push((s.subject, subject));
        (s.subject, s.split) = (subject, split);
    }
    if !repeats.is_empty() {
        let named: Vec<String> =
            repeats.iter().take(LINES_NAMED).map(|(l, f)| format!("line {l} = line {f}")).collect();
        let more = if repeats.len() > LINES_NAMED { ", ..." } else { "" };
        summary.warnings.push(format!(
            "{}: {} exact duplicate record(s) ({}{more}), each kept in the split of its first occurrence; \
             --refuse-duplicates refuses them",
            path.display(),
            repeats.len(),
            named.join(", ")
        ));
    }
    Ok(())
}

/// Items of a CKD-EHR input text (titles only; codes are unknown).
fn visit_from_text(text: &str) -> Visit {
    let mut v = Visit::default();
    if let Some(r) = visit::parse_spans(text) {
        for c in &r.concepts {
            let item = text[c.start..c.end].to_string();
            match c.field {
                visit::Field::Diagnoses => v.diagnoses.push(Coded { code: String::new(), title: item }),
                visit::Field::Medications => v.medications.push(item),
                visit::Field::Procedures => v.procedures.push(Coded { code: String::new(), title: item }),
                visit::Field::Knowledge => {}
            }
        }
    }
    v
}

/// JSONL text of samples: the original line for samples read from JSONL, else the canonical
/// line of the rendered sample.
pub fn to_jsonl<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> String {
    let mut out = String::new();
    for s in samples {
        match &s.raw {
            Some(r) => out.push_str(&r.line),
            None => out.push_str(&jsonl::to_line(jsonl::INSTRUCTION, &s.text(), &jsonl::render_output(s.labels))),
        }
    }
    out
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

/// Files written by [`write_outputs`].
pub const OUTPUT_FILES: [&str; 7] =
    ["samples.bin", "all.jsonl", "train.jsonl", "val.jsonl", "test.jsonl", "knowledge.json", "summary.json"];

/// Writes an ingest's outputs into `out` (each file atomically): `samples.bin` (versioned
/// binary), `all.jsonl` (every sample in input order), `train.jsonl` / `val.jsonl` /
/// `test.jsonl`, `knowledge.json` (the fitted table, `null` when off) and `summary.json`.
pub fn write_outputs(ing: &Ingested, out: &Path) -> Result<(), IngestError> {
    let io_err = |file: PathBuf| move |source: std::io::Error| IngestError::Io { file, source };
    let write = |name: &str, bytes: &[u8]| {
        let p = out.join(name);
        crate::io::write_atomic(&p, bytes).map_err(io_err(p))
    };
    let bin = ing.file.to_bytes().map_err(|source| IngestError::Format { file: out.join("samples.bin"), source })?;
    write("samples.bin", &bin)?;
    write("all.jsonl", to_jsonl(&ing.file.samples).as_bytes())?;
    for split in [Split::Train, Split::Val, Split::Test] {
        let text = to_jsonl(ing.file.samples.iter().filter(|s| s.split == split));
        write(&format!("{}.jsonl", split.name()), text.as_bytes())?;
    }
    write("knowledge.json", pretty_json(&ing.file.knowledge).as_bytes())?;
    write("summary.json", pretty_json(&ing.summary).as_bytes())?;
    Ok(())
}

/// Reads and checks a `samples.bin`.
pub fn read_samples(path: &Path) -> Result<SampleFile, IngestError> {
    let bytes = crate::io::read_regular(path).map_err(|source| IngestError::Io { file: path.to_path_buf(), source })?;
    SampleFile::from_bytes(&bytes).map_err(|source| IngestError::Format { file: path.to_path_buf(), source })
}
