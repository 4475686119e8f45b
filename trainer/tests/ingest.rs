//! Ingest: hand-made MIMIC tables (golden text), bad input, the real MIMIC-III demo, JSONL
//! round trip, and the no-leakage property of knowledge clauses.
mod common;

use std::fs;
use std::io::Write;
use std::path::Path;

use ckd_core::knowledge::KnowledgeConfig;
use ckd_core::visit::Split;
use ckd_core::LabelSet;
use ckd_trainer::ingest::{self, IngestConfig, IngestError};

fn write(dir: &Path, name: &str, text: &str) {
    fs::write(dir.join(name), text).unwrap();
}

fn write_gz(dir: &Path, name: &str, text: &str) {
    let f = fs::File::create(dir.join(name)).unwrap();
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap();
}

/// Subject 1: three admissions listed out of time order; subject 2: one admission.
fn tiny_mimic(dir: &Path) {
    write(
        dir,
        "ADMISSIONS.csv",
        "ROW_ID,SUBJECT_ID,HADM_ID,ADMITTIME,DISCHTIME\n\
         1,1,300,2150-03-01 10:00:00,2150-03-05 10:00:00\n\
         2,1,100,2150-01-01 10:00:00,2150-01-05 10:00:00\n\
         3,1,200,2150-02-01 10:00:00,2150-02-05 10:00:00\n\
         4,2,400,2151-01-01 10:00:00,2151-01-02 10:00:00\n",
    );
    // Lower-case header, gzip, an empty code, codes with dots, SEQ_NUM out of order.
    write_gz(
        dir,
        "DIAGNOSES_ICD.csv.gz",
        "row_id,subject_id,hadm_id,seq_num,icd9_code\n\
         1,1,100,2,5849\n\
         2,1,100,1,428.0\n\
         3,1,100,3,4281\n\
         4,1,100,4,\n\
         5,1,200,1,0389\n\
         6,1,200,2,V4581\n\
         7,1,300,1,78552\n\
         8,2,400,1,4019\n\
         9,9,999,1,4019\n",
    );
    write(
        dir,
        "PRESCRIPTIONS.csv",
        "ROW_ID,SUBJECT_ID,HADM_ID,DRUG\n\
         1,1,100,Furosemide\n\
         2,1,100,\"Sodium Chloride 0.9%, Flush\"\n\
         3,1,100,Furosemide\n\
         4,1,200,Vancomycin\n\
         5,1,200,\n",
    );
    write(dir, "PROCEDURES_ICD.csv", "ROW_ID,SUBJECT_ID,HADM_ID,SEQ_NUM,ICD9_CODE\n1,1,200,1,9604\n2,1,200,2,9999\n");
    write(
        dir,
        "D_ICD_DIAGNOSES.csv",
        "ROW_ID,ICD9_CODE,SHORT_TITLE,LONG_TITLE\n1,4280,CHF NOS,\"Congestive heart failure, unspecified\"\n",
    );
    write(dir, "D_ICD_PROCEDURES.csv", "ROW_ID,ICD9_CODE,SHORT_TITLE,LONG_TITLE\n1,9604,Insert endotracheal tube,x\n");
}

fn no_knowledge() -> IngestConfig {
    IngestConfig { knowledge: None, ..Default::default() }
}

#[test]
fn tiny_mimic_golden() {
    let d = tempfile::tempdir().unwrap();
    tiny_mimic(d.path());
    let ing = ingest::ingest_mimic(d.path(), &no_knowledge(), &mut |_, _| {}).unwrap();
    let s = &ing.file.samples;
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].id, "1-100-200");
    assert_eq!(s[1].id, "1-200-300");
    assert_eq!(
        s[0].text(),
        "The patient-acquired disease is Heart failure, Acute kidney failure. The patient had used the following \
         medication: Furosemide, Sodium Chloride 0.9%, Flush. The surgical operation performed by the patient: None. None."
    );
    // Visit 200 has septicemia (0389) and V4581 (coronary atherosclerosis) -> labels of sample 0.
    assert_eq!(s[0].labels, LabelSet::from_labels([9, 23]));
    assert_eq!(
        s[1].text(),
        "The patient-acquired disease is Septicemia, Other postprocedural states. The patient had used the \
         following medication: Vancomycin. The surgical operation performed by the patient: Insert endotracheal \
         tube, 9999. None."
    );
    assert_eq!(s[1].labels, LabelSet::from_labels([24]));
    let t = &ing.summary.tables;
    let dx = &t["DIAGNOSES_ICD"];
    assert_eq!((dx.rows_read, dx.rows_used), (9, 7));
    assert_eq!(dx.skipped["empty code"], 1);
    assert_eq!(dx.skipped["unknown HADM_ID"], 1);
    let rx = &t["PRESCRIPTIONS"];
    assert_eq!((rx.rows_read, rx.rows_used), (5, 3));
    assert_eq!(rx.skipped["empty DRUG"], 1);
    assert_eq!(rx.skipped["repeated drug in admission"], 1);
    assert_eq!(ing.summary.procedures_without_title, 1);
    for (name, st) in t {
        assert_eq!(st.rows_read, st.rows_used + st.skipped.values().sum::<u64>(), "{name}");
    }
}

#[test]
fn malformed_row_names_file_line_column_and_lenient_counts_it() {
    let d = tempfile::tempdir().unwrap();
    tiny_mimic(d.path());
    write(
        d.path(),
        "PROCEDURES_ICD.csv",
        "ROW_ID,SUBJECT_ID,HADM_ID,SEQ_NUM,ICD9_CODE\n1,1,200,1,9604\n2,1,2x0,2,9999\n3,1,200\n",
    );
    let e = ingest::ingest_mimic(d.path(), &no_knowledge(), &mut |_, _| {}).err().unwrap();
    match &e {
        IngestError::Row { file, line, column, .. } => {
            assert!(file.ends_with("PROCEDURES_ICD.csv"));
            assert_eq!((*line, column.as_str()), (3, "HADM_ID"));
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("PROCEDURES_ICD.csv:3: column HADM_ID"), "{e}");
    let cfg = IngestConfig { lenient: true, ..no_knowledge() };
    let ing = ingest::ingest_mimic(d.path(), &cfg, &mut |_, _| {}).unwrap();
    let px = &ing.summary.tables["PROCEDURES_ICD"];
    assert_eq!((px.rows_read, px.rows_used, px.skipped["malformed row"]), (3, 1, 2));
}

#[test]
fn missing_table_and_column_are_named() {
    let d = tempfile::tempdir().unwrap();
    tiny_mimic(d.path());
    fs::remove_file(d.path().join("PRESCRIPTIONS.csv")).unwrap();
    let e = ingest::ingest_mimic(d.path(), &no_knowledge(), &mut |_, _| {}).err().unwrap();
    assert!(e.to_string().contains("table PRESCRIPTIONS not found"), "{e}");
    tiny_mimic(d.path());
    write(d.path(), "ADMISSIONS.csv", "ROW_ID,SUBJECT_ID,HADM_ID\n1,1,1\n");
    let e = ingest::ingest_mimic(d.path(), &no_knowledge(), &mut |_, _| {}).err().unwrap();
    assert!(e.to_string().contains("ADMISSIONS.csv: header has no column ADMITTIME"), "{e}");
}

/// A table that is a device (here a symlink to /dev/zero) is named for what it is, not "not
/// found"; a 0-byte table is said to be empty, not blamed on its first column.
#[cfg(unix)]
#[test]
fn device_and_empty_tables_say_what_was_found() {
    let d = tempfile::tempdir().unwrap();
    tiny_mimic(d.path());
    fs::remove_file(d.path().join("ADMISSIONS.csv")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", d.path().join("ADMISSIONS.csv")).unwrap();
    let e = ingest::ingest_mimic(d.path(), &no_knowledge(), &mut |_, _| {}).err().unwrap();
    assert!(e.to_string().ends_with("ADMISSIONS.csv: is a character device, not a regular file"), "{e}");
    fs::remove_file(d.path().join("ADMISSIONS.csv")).unwrap();
    write(d.path(), "ADMISSIONS.csv", "");
    let e = ingest::ingest_mimic(d.path(), &no_knowledge(), &mut |_, _| {}).err().unwrap();
    assert!(
        e.to_string().ends_with(
            "ADMISSIONS.csv: the file is empty (no header line; expected columns SUBJECT_ID, HADM_ID, ADMITTIME, \
             DISCHTIME)"
        ),
        "{e}"
    );
    // A JSONL input that is a device is refused before it is read (reading /dev/zero never ends).
    let e = ingest::ingest_jsonl(Path::new("/dev/zero"), &no_knowledge()).err().unwrap();
    assert_eq!(e.to_string(), "/dev/zero: is a character device, not a regular file");
    // A JSONL line that is an array is named with file and line, as an array.
    let rows = d.path().join("rows.jsonl");
    fs::write(&rows, "\n[\"i\", \"t\", \"o\"]\n").unwrap();
    let e = ingest::ingest_jsonl(&rows, &no_knowledge()).err().unwrap();
    let want =
        format!("{}: line 2: not a CKD-EHR record: the line is a JSON array, expected an object", rows.display());
    assert!(e.to_string().starts_with(&want), "{e}");
}

#[test]
fn mimic_demo_and_jsonl_roundtrip() {
    let Some(dir) = common::data_path("CKD_MIMIC_DEMO", "../shared/data/mimic-iii-demo") else { return };
    let ing = ingest::ingest_mimic(&dir, &IngestConfig::default(), &mut |_, _| {}).unwrap();
    let s = &ing.file.samples;
    // README: 100 patients, 129 admissions; 14 patients have two or more admissions.
    assert_eq!(ing.summary.patients, 100);
    assert_eq!(ing.summary.admissions, 129);
    let mut subjects: Vec<u64> = s.iter().map(|x| x.subject).collect();
    subjects.dedup();
    assert_eq!(subjects.len(), 14);
    assert_eq!(s.len(), 129 - 100, "one sample per consecutive pair");
    for (name, st) in &ing.summary.tables {
        assert_eq!(st.rows_read, st.rows_used + st.skipped.values().sum::<u64>(), "{name}");
        assert!(st.rows_used > 0, "{name}");
    }
    assert_eq!(ing.summary.tables["DIAGNOSES_ICD"].rows_read, 1761);
    assert!(s.iter().all(|x| x.text().starts_with("The patient-acquired disease is ")));
    assert!(s.iter().any(|x| !x.labels.is_empty()));

    // Outputs, then JSONL -> ingest -> JSONL is byte-identical.
    let out = tempfile::tempdir().unwrap();
    ingest::write_outputs(&ing, out.path()).unwrap();
    for f in ingest::OUTPUT_FILES {
        assert!(out.path().join(f).is_file(), "{f}");
    }
    let back = ingest::read_samples(&out.path().join("samples.bin")).unwrap();
    assert_eq!(back, ing.file);
    let all = out.path().join("all.jsonl");
    let j = ingest::ingest_jsonl(&all, &IngestConfig::default()).unwrap();
    assert_eq!(j.file.samples.len(), s.len());
    for (a, b) in j.file.samples.iter().zip(s) {
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.text(), b.text());
    }
    let out2 = tempfile::tempdir().unwrap();
    ingest::write_outputs(&j, out2.path()).unwrap();
    assert_eq!(fs::read(&all).unwrap(), fs::read(out2.path().join("all.jsonl")).unwrap());
}

#[test]
fn jsonl_unknown_phenotype_is_an_error_with_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.jsonl");
    fs::write(
        &p,
        "{\"instruction\": \"i\", \"input\": \"t\", \"output\": \"Disease that the patient may acquire: Shock\"}\n\
         {\"instruction\": \"i\", \"input\": \"t\", \"output\": \"Disease that the patient may acquire: Gout\"}\n",
    )
    .unwrap();
    let e = ingest::ingest_jsonl(&p, &IngestConfig::default()).err().unwrap();
    assert!(e.to_string().contains("line 2") && e.to_string().contains("Gout"), "{e}");
    let ok = ingest::ingest_jsonl(&p, &IngestConfig { lenient: true, ..Default::default() }).unwrap();
    assert_eq!(ok.file.samples.len(), 1);
}

/// An exact duplicate record is kept in the split of its first occurrence (never in both train
/// and test), with a warning naming the lines; `refuse_duplicates` refuses it.
#[test]
fn jsonl_duplicates_stay_on_one_side_of_the_split() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("dup.jsonl");
    let line = |i: usize| {
        format!(
            "{{\"instruction\": \"i\", \"input\": \"The patient-acquired disease is D{i}.\", \
             \"output\": \"Disease that the patient may acquire: Shock\"}}\n"
        )
    };
    // Lines 1..=60 distinct, lines 61..=120 repeat them in order.
    let text: String = (0..120).map(|i| line(i % 60)).collect();
    fs::write(&p, text).unwrap();
    let cfg = IngestConfig { knowledge: None, ..Default::default() };
    let ing = ingest::ingest_jsonl(&p, &cfg).unwrap();
    let s = &ing.file.samples;
    assert_eq!(s.len(), 120);
    for k in 0..60 {
        assert_eq!(s[k + 60].split, s[k].split, "line {} and its duplicate, line {}", k + 1, k + 61);
        assert_eq!(s[k + 60].subject, s[k].subject);
    }
    assert_eq!(ing.summary.patients, 60);
    let w = ing.summary.warnings.join("\n");
    assert!(w.contains("60 exact duplicate record(s)") && w.contains("line 61 = line 1"), "{w}");
    // A file with no duplicate says nothing of them.
    let q = d.path().join("distinct.jsonl");
    fs::write(&q, (0..60).map(line).collect::<String>()).unwrap();
    assert!(ingest::ingest_jsonl(&q, &cfg).unwrap().summary.warnings.is_empty());

    let e = ingest::ingest_jsonl(&p, &IngestConfig { refuse_duplicates: true, ..cfg }).err().unwrap().to_string();
    assert!(e.contains("dup.jsonl:61") && e.contains("line 1 "), "{e}");
}

/// Changing the visit-(i+1) labels of val/test samples changes no text anywhere, and the
/// knowledge table depends on the training split only.
#[test]
fn knowledge_clauses_do_not_leak_labels() {
    let Some(dir) = common::data_path("CKD_MIMIC_DEMO", "../shared/data/mimic-iii-demo") else { return };
    // A split that puts most demo pairs in val/test, and a support low enough for clauses.
    let split = ckd_core::split::SplitConfig { seed: 3, train: 0.5, val: 0.25 };
    let kc = KnowledgeConfig { min_support: 1, ..Default::default() };
    let cfg = IngestConfig { split, knowledge: Some(kc), ..Default::default() };
    let ing = ingest::ingest_mimic(&dir, &cfg, &mut |_, _| {}).unwrap();
    let mut a = ing.file.samples.clone();
    assert!(a.iter().any(|s| s.split != Split::Train) && a.iter().any(|s| s.split == Split::Train));
    // The 100-patient demo supports no clause at the default FDR; the test is about leakage, so
    // the significance test is off (fdr = 1) here.
    ingest::attach_knowledge_fdr(&mut a, kc, 1.0);
    assert!(a.iter().any(|s| !s.knowledge.is_empty()), "the test needs some clauses");
    let mut b = a.clone();
    for (i, s) in b.iter_mut().enumerate() {
        if s.split != Split::Train {
            s.labels = LabelSet((0x1ff_ffff ^ s.labels.0).wrapping_add(i as u32) & 0x1ff_ffff);
        }
    }
    let ta = ingest::attach_knowledge_fdr(&mut a, kc, 1.0);
    let tb = ingest::attach_knowledge_fdr(&mut b, kc, 1.0);
    assert_eq!(ta, tb);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.text(), y.text());
    }
    // Whereas changing training labels does change the table (the test can fail).
    let mut c = a.clone();
    for s in c.iter_mut().filter(|s| s.split == Split::Train) {
        s.labels = LabelSet::EMPTY;
    }
    assert_ne!(ingest::attach_knowledge_fdr(&mut c, kc, 1.0), ta);
}

/// The six tables of a directory as bytes, for `ingest_mimic_bytes` (uncompressed files only).
fn read_tables(dir: &Path) -> Vec<Vec<u8>> {
    ingest::MimicTables::NAMES.iter().map(|n| fs::read(dir.join(format!("{n}.csv"))).unwrap()).collect()
}

fn tables(t: &[Vec<u8>]) -> ingest::MimicTables<'_> {
    ingest::MimicTables {
        admissions: &t[0],
        diagnoses_icd: &t[1],
        procedures_icd: &t[2],
        prescriptions: &t[3],
        d_icd_diagnoses: &t[4],
        d_icd_procedures: &t[5],
    }
}

/// The in-memory entry points (the fuzz targets' way in) read bytes as the directory and file
/// readers read files: same samples, accounting and source hash; errors name the table.
#[test]
fn bytes_entry_points_read_like_the_file_readers() {
    let d = tempfile::tempdir().unwrap();
    tiny_mimic(d.path());
    // ingest_mimic_bytes takes uncompressed CSV: write DIAGNOSES_ICD as plain text too.
    let dx = {
        let mut s = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(fs::File::open(d.path().join("DIAGNOSES_ICD.csv.gz")).unwrap()),
            &mut s,
        )
        .unwrap();
        s
    };
    fs::remove_file(d.path().join("DIAGNOSES_ICD.csv.gz")).unwrap();
    write(d.path(), "DIAGNOSES_ICD.csv", &dx);
    let raw = read_tables(d.path());
    for cfg in [no_knowledge(), IngestConfig::default()] {
        let from_dir = ingest::ingest_mimic(d.path(), &cfg, &mut |_, _| {}).unwrap();
        let from_bytes = ingest::ingest_mimic_bytes(&tables(&raw), &cfg, &mut |_, _| {}).unwrap();
        assert_eq!(from_bytes.file.source, "mimic:memory");
        assert_eq!(from_bytes.file.source_hash, from_dir.file.source_hash);
        assert_eq!(from_bytes.file.samples, from_dir.file.samples);
        assert_eq!(from_bytes.file.knowledge, from_dir.file.knowledge);
        assert_eq!(from_bytes.summary.tables, from_dir.summary.tables);
    }
    // A bad row: the same error, the table named as `<TABLE>.csv`.
    let mut bad = raw.clone();
    bad[0] = b"ROW_ID,SUBJECT_ID,HADM_ID,ADMITTIME,DISCHTIME\r\n1,1,300,2150-13-01 10:00:00,2150-03-05 10:00:00\r\n"
        .to_vec();
    let e = ingest::ingest_mimic_bytes(&tables(&bad), &no_knowledge(), &mut |_, _| {}).err().unwrap();
    assert!(e.to_string().starts_with("ADMISSIONS.csv:2: column ADMITTIME: "), "{e}");
    // A missing table is an empty one: said to be empty, not blamed on a column.
    let mut empty = raw.clone();
    empty[3].clear();
    let e = ingest::ingest_mimic_bytes(&tables(&empty), &no_knowledge(), &mut |_, _| {}).err().unwrap();
    assert!(
        e.to_string().starts_with("PRESCRIPTIONS.csv: the file is empty (no header line; expected columns "),
        "{e}"
    );

    // JSONL: bytes and file give the same result, errors name the path given.
    let jsonl = "\u{feff}{\"instruction\": \"i\", \"input\": \"t\", \"output\": \"Disease that the patient may acquire: Shock\"}\r\n\
                 \n\
                 {\"instruction\": \"i\", \"input\": \"u\", \"output\": \"Disease that the patient may acquire: None\"}";
    let p = d.path().join("x.jsonl");
    write(d.path(), "x.jsonl", jsonl);
    let from_file = ingest::ingest_jsonl(&p, &IngestConfig::default()).unwrap();
    let from_bytes = ingest::ingest_jsonl_bytes(&p, jsonl.as_bytes(), &IngestConfig::default()).unwrap();
    assert_eq!(from_bytes.file, from_file.file);
    assert_eq!(from_bytes.summary.tables, from_file.summary.tables);
    assert_eq!(from_bytes.file.samples.len(), 2);
    let e = ingest::ingest_jsonl_bytes(Path::new("in.jsonl"), b"{\"instruction\": 1}\n", &IngestConfig::default())
        .err()
        .unwrap();
    assert!(e.to_string().starts_with("in.jsonl: line 1: "), "{e}");

    // The real demo tables (CRLF, quoted fields): bytes and directory agree.
    let Some(demo) = common::data_path("CKD_MIMIC_DEMO", "../shared/data/mimic-iii-demo") else { return };
    let raw = read_tables(&demo);
    let from_dir = ingest::ingest_mimic(&demo, &IngestConfig::default(), &mut |_, _| {}).unwrap();
    let from_bytes = ingest::ingest_mimic_bytes(&tables(&raw), &IngestConfig::default(), &mut |_, _| {}).unwrap();
    assert_eq!(from_bytes.file.source_hash, from_dir.file.source_hash);
    assert_eq!(from_bytes.file.samples, from_dir.file.samples);
    assert_eq!(from_bytes.summary.tables, from_dir.summary.tables);
}
