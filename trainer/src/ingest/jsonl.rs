//! CKD-EHR JSONL -> samples: one record a line, each its own subject with the split of its line
//! number, exact duplicates linked to their first occurrence, the visit's items recovered from
//! the text.

use std::collections::HashMap;
use std::path::Path;

use ckd_core::format::SampleFile;
use ckd_core::jsonl;
use ckd_core::visit::{self, Coded, RawRecord, Sample, Split, Visit};
use sha2::{Digest, Sha256};

use super::{IngestConfig, IngestError, IngestSummary, Ingested, TableStats, LINES_NAMED};
use crate::io::sha256_hex;

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
