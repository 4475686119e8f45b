//! Ingest under hostile but realistic input: CRLF line numbers, impossible dates,
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

/// The same bad value in data row 1 is reported at line 2 in the CRLF original and in an LF
/// copy.
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

/// Impossible calendar dates, an unparsable DISCHTIME and a discharge before the admission are
/// errors naming line and column; `--lenient` skips and names the row.
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

/// One stray `"` opening a PRESCRIPTIONS DRUG field loses that one row under `--lenient`
/// (counted and named by line); every other row is read as in the unedited file.
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

/// Non-UTF-8 bytes on one JSONL line: the error names the file and line; `--lenient` skips,
/// counts and names that line only.
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

/// A UTF-8 byte-order mark at the start of a JSONL file or a CSV table is skipped.
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

/// Keeps the header and the first `rows` data rows of `table` (terminators kept).
fn keep_rows(dir: &Path, table: &str, rows: usize) {
    let p = dir.join(format!("{table}.csv"));
    let text = fs::read_to_string(&p).unwrap();
    fs::write(&p, text.split_inclusive('\n').take(rows + 1).collect::<String>()).unwrap();
}

fn unusable(e: IngestError) -> (PathBuf, String) {
    match e {
        IngestError::Unusable { file, msg } => (file, msg),
        other => panic!("expected an unusable-input error, got {other}"),
    }
}

/// A required table with a header only (DIAGNOSES_ICD: every label would be None; ADMISSIONS)
/// is an error naming the file; an optional one (PRESCRIPTIONS) is read with a warning naming
/// it.
#[test]
fn a_required_table_with_a_header_only_is_an_error_naming_it() {
    for table in ["DIAGNOSES_ICD", "ADMISSIONS"] {
        let Some((_d, dir)) = demo_copy() else { return };
        keep_rows(&dir, table, 0);
        let (file, msg) = unusable(ingest_err(&dir, &strict()));
        assert_eq!(file, dir.join(format!("{table}.csv")), "{msg}");
        assert!(msg.contains("no data rows"), "{msg}");
    }
    let Some((_d, dir)) = demo_copy() else { return };
    keep_rows(&dir, "PRESCRIPTIONS", 0);
    let ing = ingest::ingest_mimic(&dir, &strict(), &mut |_, _| {}).unwrap();
    let w = &ing.summary.warnings;
    assert!(w.len() == 1 && w[0].contains("PRESCRIPTIONS.csv") && w[0].contains("medication"), "{w:?}");
}

/// A table none of whose rows is usable is an error naming the file and why.
#[test]
fn a_table_whose_rows_are_all_unusable_is_an_error() {
    let Some((_d, dir)) = demo_copy() else { return };
    let p = dir.join("DIAGNOSES_ICD.csv");
    let rows = fs::read_to_string(&p).unwrap().lines().count() - 1;
    for row in 1..=rows {
        edit_field(&dir, "DIAGNOSES_ICD", row, 2, "999999999");
    }
    let (file, msg) = unusable(ingest_err(&dir, &strict()));
    assert_eq!(file, p);
    assert!(msg.contains(&format!("none of its {rows} data rows")) && msg.contains("unknown HADM_ID"), "{msg}");
    // Under --lenient, a table whose every row is malformed is the same error.
    let (_d2, dir2) = demo_copy().unwrap();
    let rx = dir2.join("PROCEDURES_ICD.csv");
    let rows = fs::read_to_string(&rx).unwrap().lines().count() - 1;
    for row in 1..=rows {
        edit_field(&dir2, "PROCEDURES_ICD", row, 3, "x");
    }
    let (file, msg) = unusable(ingest_err(&dir2, &lenient()));
    assert_eq!(file, rx);
    assert!(msg.contains("malformed row"), "{msg}");
}

/// ADMISSIONS with CR-only line ends (which would read as one line: 0 admissions, exit 0) is an
/// error naming the file and the cause.
#[test]
fn cr_only_line_ends_are_an_error_naming_the_file() {
    let Some((_d, dir)) = demo_copy() else { return };
    let p = dir.join("ADMISSIONS.csv");
    fs::write(&p, fs::read_to_string(&p).unwrap().replace("\r\n", "\r")).unwrap();
    let (file, line, _, msg) = row_error(ingest_err(&dir, &strict()));
    assert_eq!((file, line), (p, 1));
    assert!(msg.contains("CR only"), "{msg}");
}

/// Inputs that give no sample are an error naming the file: an empty or blank JSONL file, one
/// whose every line is skipped under --lenient, and tables where no patient has a second
/// admission.
#[test]
fn no_sample_at_all_is_an_error_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("empty.jsonl");
    for text in ["", "\n\n"] {
        fs::write(&p, text).unwrap();
        let (file, msg) = unusable(ingest::ingest_jsonl(&p, &strict()).err().expect("no record is an error"));
        assert_eq!(file, p, "{msg}");
    }
    fs::write(&p, "{\"instruction\": 1}\nnot json\n").unwrap();
    let (file, msg) = unusable(ingest::ingest_jsonl(&p, &lenient()).err().expect("no usable record"));
    assert_eq!(file, p);
    assert!(msg.contains("malformed record: 2"), "{msg}");

    let header = |t: &str| match t {
        "ADMISSIONS" => {
            "SUBJECT_ID,HADM_ID,ADMITTIME,DISCHTIME\n1,10,2100-01-01 00:00:00,2100-01-02 00:00:00\n\
                         2,20,2100-01-01 00:00:00,2100-01-02 00:00:00\n"
        }
        "DIAGNOSES_ICD" | "PROCEDURES_ICD" => "HADM_ID,SEQ_NUM,ICD9_CODE\n10,1,4280\n20,1,4280\n",
        "PRESCRIPTIONS" => "HADM_ID,DRUG\n10,Heparin\n",
        _ => "ICD9_CODE,SHORT_TITLE\n4280,CHF NOS\n",
    };
    let t: Vec<&str> = ingest::MimicTables::NAMES.iter().map(|n| header(n)).collect();
    let tables = ingest::MimicTables {
        admissions: t[0].as_bytes(),
        diagnoses_icd: t[1].as_bytes(),
        procedures_icd: t[2].as_bytes(),
        prescriptions: t[3].as_bytes(),
        d_icd_diagnoses: t[4].as_bytes(),
        d_icd_procedures: t[5].as_bytes(),
    };
    let e = ingest::ingest_mimic_bytes(&tables, &strict(), &mut |_, _| {}).err().expect("no sample is an error");
    let (file, msg) = unusable(e);
    assert_eq!(file, Path::new("ADMISSIONS.csv"));
    assert!(msg.contains("no patient has two admissions"), "{msg}");
}

/// `ckd ingest` exits 1 on a header-only DIAGNOSES_ICD naming it, and on the demo (whose val
/// and test splits are empty at the default fractions) says so and names the flags.
#[test]
fn ckd_ingest_refuses_empty_tables_and_warns_of_empty_splits() {
    let Some((d, dir)) = demo_copy() else { return };
    let ckd = |src: &Path, out: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ckd"))
            .args(["ingest", "--mimic", src.to_str().unwrap(), "--out", d.path().join(out).to_str().unwrap()])
            .output()
            .unwrap()
    };
    let o = ckd(&dir, "ok");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let samples: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(d.path().join("ok/summary.json")).unwrap()).unwrap();
    let empty: Vec<&str> = ["val", "test"].into_iter().filter(|k| samples["samples"][k].as_u64().is_none()).collect();
    assert!(!empty.is_empty(), "the demo's default split leaves val or test empty: {}", samples["samples"]);
    assert!(err.contains(&format!("warning: no {} samples", empty.join(" and no "))), "{err}");
    assert!(err.contains("--val-frac") && err.contains("--split-seed"), "{err}");

    keep_rows(&dir, "DIAGNOSES_ICD", 0);
    let o = ckd(&dir, "bad");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("DIAGNOSES_ICD.csv") && err.contains("no data rows"), "{err}");
    assert!(!d.path().join("bad").exists());
}
