//! Ingest under hostile but realistic input (issue 17): CRLF line numbers, impossible dates,
//! stray quotes under `--lenient`, non-UTF-8 JSONL lines and byte-order marks. Each case is an
//! edit of a copy of the real MIMIC-III demo tables (CRLF, as published) or a small JSONL file.
mod common;

use std::fs;
use std::path::{Path, PathBuf};

use ckd_trainer::ingest::{self, IngestConfig, IngestError};

const TABLES: [&str; 6] =
    ["ADMISSIONS", "DIAGNOSES_ICD", "PRESCRIPTIONS", "PROCEDURES_ICD", "D_ICD_DIAGNOSES", "D_ICD_PROCEDURES"];

/// A writable copy of the demo's six tables, or `None` when the demo is absent (outside CI).
fn demo_copy() -> Option<(tempfile::TempDir, PathBuf)> {
    let src = common::data_path("CKD_MIMIC_DEMO", "../shared/data/mimic-iii-demo")?;
    let d = tempfile::tempdir().unwrap();
    for t in TABLES {
        fs::copy(src.join(format!("{t}.csv")), d.path().join(format!("{t}.csv"))).unwrap();
    }
    let p = d.path().to_path_buf();
    Some((d, p))
}

fn strict() -> IngestConfig {
    IngestConfig { knowledge: None, ..Default::default() }
}

fn lenient() -> IngestConfig {
    IngestConfig { lenient: true, ..strict() }
}

/// Replaces field `field` (0-based) of data row `row` (1-based; line `row + 1`) of `table`,
/// keeping the file's line terminators.
fn edit_field(dir: &Path, table: &str, row: usize, field: usize, value: &str) {
    let p = dir.join(format!("{table}.csv"));
    let text = fs::read_to_string(&p).unwrap();
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
    let l = &mut lines[row];
    let (body, term) = l.split_at(l.trim_end_matches(['\r', '\n']).len());
    let mut fields: Vec<String> = body.split(',').map(str::to_string).collect();
    fields[field] = value.to_string();
    *l = fields.join(",") + term;
    fs::write(&p, lines.concat()).unwrap();
}

fn row_error(e: IngestError) -> (PathBuf, u64, String, String) {
    match e {
        IngestError::Row { file, line, column, msg } => (file, line, column, msg),
        other => panic!("expected a row error, got {other}"),
    }
}

fn ingest_err(dir: &Path, cfg: &IngestConfig) -> IngestError {
    match ingest::ingest_mimic(dir, cfg, &mut |_, _| {}) {
        Ok(_) => panic!("ingest of {} succeeded", dir.display()),
        Err(e) => e,
    }
}

/// Issue 17.1: the same bad value in data row 1 is reported at line 2 in the CRLF original and
/// in an LF copy.
#[test]
fn crlf_and_lf_files_report_the_same_line() {
    let Some((_d, dir)) = demo_copy() else { return };
    let adm = dir.join("ADMISSIONS.csv");
    assert!(fs::read_to_string(&adm).unwrap().contains("\r\n"), "the demo tables are CRLF");
    edit_field(&dir, "ADMISSIONS", 1, 3, "garbage");
    let (file, line, column, _) = row_error(ingest_err(&dir, &strict()));
    assert!(file.ends_with("ADMISSIONS.csv"));
    assert_eq!((line, column.as_str()), (2, "ADMITTIME"), "CRLF");
    fs::write(&adm, fs::read_to_string(&adm).unwrap().replace("\r\n", "\n")).unwrap();
    let (_, line, column, _) = row_error(ingest_err(&dir, &strict()));
    assert_eq!((line, column.as_str()), (2, "ADMITTIME"), "LF");
    // Further down a file too (PRESCRIPTIONS row 400, after rows with quoted fields).
    let (_d2, dir2) = demo_copy().unwrap();
    edit_field(&dir2, "PRESCRIPTIONS", 400, 2, "x1");
    let (_, line, column, _) = row_error(ingest_err(&dir2, &strict()));
    assert_eq!((line, column.as_str()), (401, "HADM_ID"));
}

/// Issue 17.2: impossible calendar dates, an unparsable DISCHTIME and a discharge before the
/// admission are errors naming line and column; `--lenient` skips and names the row.
#[test]
fn impossible_dates_and_discharge_before_admission_are_errors() {
    let Some((_d, dir)) = demo_copy() else { return };
    let base = ingest::ingest_mimic(&dir, &strict(), &mut |_, _| {}).unwrap();
    let cases = [
        (3, "2107-19-29 04:00:00", "ADMITTIME", "month 19"),
        (3, "2164-02-30 04:00:00", "ADMITTIME", "day 30"),
        (3, "0000-99-99 99:99:99", "ADMITTIME", "0000"),
        (4, "garbage", "DISCHTIME", "YYYY-MM-DD HH:MM:SS"),
        (4, "2101-01-01 00:00:00", "DISCHTIME", "before ADMITTIME"),
    ];
    for (field, value, column, what) in cases {
        let (_d, dir) = demo_copy().unwrap();
        edit_field(&dir, "ADMISSIONS", 7, field, value);
        let (_, line, col, msg) = row_error(ingest_err(&dir, &strict()));
        assert_eq!((line, col.as_str()), (8, column), "{value}: {msg}");
        assert!(msg.contains(what), "{value}: {msg}");
        let ing = ingest::ingest_mimic(&dir, &lenient(), &mut |_, _| {}).unwrap();
        let st = &ing.summary.tables["ADMISSIONS"];
        assert_eq!((st.rows_read, st.skipped["malformed row"]), (129, 1), "{value}");
        assert_eq!(st.first_lines["malformed row"], vec![8], "{value}");
        assert_eq!(ing.summary.admissions, base.summary.admissions - 1, "{value}");
    }
}

/// Issue 17.3: one stray `"` opening a PRESCRIPTIONS DRUG field loses that one row under
/// `--lenient` (counted and named by line); every other row is read as before.
#[test]
fn lenient_counts_and_names_every_lost_row() {
    let Some((_d, dir)) = demo_copy() else { return };
    let base = ingest::ingest_mimic(&dir, &lenient(), &mut |_, _| {}).unwrap();
    let rx0 = &base.summary.tables["PRESCRIPTIONS"];
    assert_eq!(rx0.rows_read, 10_398);
    assert!(!rx0.skipped.contains_key("malformed row"));
    // Data row 200's DRUG is `D5 1/2NS`; the next `"` in the file is 128 lines below.
    edit_field(&dir, "PRESCRIPTIONS", 200, 7, "\"D5 1/2NS");
    let (file, line, column, msg) = row_error(ingest_err(&dir, &strict()));
    assert!(file.ends_with("PRESCRIPTIONS.csv"));
    assert_eq!((line, column.as_str()), (201, "-"), "{msg}");
    assert!(msg.contains("quote"), "{msg}");

    let ing = ingest::ingest_mimic(&dir, &lenient(), &mut |_, _| {}).unwrap();
    let rx = &ing.summary.tables["PRESCRIPTIONS"];
    assert_eq!(rx.rows_read, 10_398, "every row is read");
    assert_eq!(rx.skipped["malformed row"], 1);
    assert_eq!(rx.first_lines["malformed row"], vec![201]);
    assert_eq!(rx.rows_read, rx.rows_used + rx.skipped.values().sum::<u64>());
    assert!(rx.rows_used + 1 >= rx0.rows_used && rx.rows_used <= rx0.rows_used);
}

/// The first few lines of each skip reason are named, not only counted.
#[test]
fn skipped_rows_are_named_by_their_first_lines() {
    let Some((_d, dir)) = demo_copy() else { return };
    for row in [3, 5, 9, 11, 20, 30, 31] {
        edit_field(&dir, "PROCEDURES_ICD", row, 2, "bad");
    }
    let ing = ingest::ingest_mimic(&dir, &lenient(), &mut |_, _| {}).unwrap();
    let px = &ing.summary.tables["PROCEDURES_ICD"];
    assert_eq!(px.skipped["malformed row"], 7);
    assert_eq!(px.first_lines["malformed row"], vec![4, 6, 10, 12, 21], "the first five");
}

fn jsonl_row(input: &str) -> String {
    format!(
        "{{\"instruction\": \"i\", \"input\": \"{input}\", \"output\": \"Disease that the patient may acquire: None\"}}\n"
    )
}

/// Issue 17.4: non-UTF-8 bytes on one JSONL line: the error names the file and line;
/// `--lenient` skips, counts and names that line only.
#[test]
fn jsonl_non_utf8_line_is_named_and_lenient_skips_it() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("rows.jsonl");
    let mut bytes = jsonl_row("one").into_bytes();
    bytes.extend_from_slice(
        &jsonl_row("tw\u{7f}o").into_bytes().iter().map(|&b| if b == 0x7f { 0xff } else { b }).collect::<Vec<u8>>(),
    );
    bytes.extend_from_slice(jsonl_row("three").as_bytes());
    fs::write(&p, &bytes).unwrap();
    let e = ingest::ingest_jsonl(&p, &strict()).err().expect("invalid UTF-8 is an error");
    let text = e.to_string();
    assert!(text.contains("rows.jsonl") && text.contains(":2") && text.contains("UTF-8"), "{text}");
    let ing = ingest::ingest_jsonl(&p, &lenient()).unwrap();
    assert_eq!(ing.file.samples.len(), 2);
    let st = &ing.summary.tables["rows.jsonl"];
    assert_eq!((st.rows_read, st.rows_used, st.skipped["invalid UTF-8"]), (3, 2, 1));
    assert_eq!(st.first_lines["invalid UTF-8"], vec![2]);
    assert_eq!(ing.file.samples[1].id, "L3", "ids keep the input's line numbers");
}

/// Issue 17.4: a UTF-8 byte-order mark at the start of a JSONL file or a CSV table is skipped.
#[test]
fn byte_order_mark_is_skipped_in_jsonl_and_csv() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("bom.jsonl");
    fs::write(&p, format!("\u{feff}{}{}", jsonl_row("one"), jsonl_row("two"))).unwrap();
    let ing = ingest::ingest_jsonl(&p, &strict()).unwrap();
    assert_eq!(ing.file.samples.len(), 2);
    assert!(!ingest::to_jsonl(&ing.file.samples).starts_with('\u{feff}'));

    let Some((_d, dir)) = demo_copy() else { return };
    let base = ingest::ingest_mimic(&dir, &strict(), &mut |_, _| {}).unwrap();
    for t in TABLES {
        let f = dir.join(format!("{t}.csv"));
        let mut b = b"\xef\xbb\xbf".to_vec();
        b.extend(fs::read(&f).unwrap());
        fs::write(&f, b).unwrap();
    }
    let ing = ingest::ingest_mimic(&dir, &strict(), &mut |_, _| {}).unwrap();
    assert_eq!(ing.file.samples, base.file.samples);
    assert_eq!(ing.summary.tables, base.summary.tables);
}
