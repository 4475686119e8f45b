//! Where the MIMIC-III tables come from (a directory of `.csv` / `.csv.gz` files, or
//! [`MimicTables`] in memory) and [`Table`], one table streamed row by row with its columns
//! resolved by header name; each table's bytes go into the source hash.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::csv_rows::{CsvRows, Line};
use super::{IngestError, TableStats};
use crate::io::{find_table, open_maybe_gz};

/// Progress callback: `(table, rows read so far)`, called every 65,536 rows and at the end.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64);

const PROGRESS_EVERY: u64 = 1 << 16;
const MAX_COLS: usize = 4;

/// The six tables [`ingest_mimic`](super::ingest_mimic) reads, held in memory as uncompressed CSV (for callers
/// without a directory: fuzzing, tests). [`ingest_mimic_bytes`](super::ingest_mimic_bytes) reads them exactly as
/// [`ingest_mimic`](super::ingest_mimic) reads the files of a directory.
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
pub(super) enum Source<'a> {
    /// Files of a directory (`.csv` or `.csv.gz`, see [`find_table`]).
    Dir(&'a Path),
    /// Bytes in memory; errors name the table as `<TABLE>.csv`.
    Memory(&'a MimicTables<'a>),
}

/// A CSV table opened for streaming with its column indices resolved.
pub(super) struct Table<'a> {
    pub(super) path: PathBuf,
    rows: CsvRows<Box<dyn BufRead + 'a>>,
    /// Fields in the header (every row must have as many).
    width: usize,
    cols: Vec<usize>,
    names: &'static [&'static str],
}

impl<'a> Table<'a> {
    /// Opens `table` of `src` and adds its bytes to `hasher` (the source hash).
    pub(super) fn open(
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
    pub(super) fn for_each(
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

/// Adds the bytes of the file at `path` to `h`.
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
