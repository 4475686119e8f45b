//! The CKD-EHR authors' released file formats, exactly: their JSONL rows (their
//! spellings and instruction) ingest and come back byte-identical, what this project writes uses
//! their spellings and instruction, files written by earlier versions still read, and their
//! soft-label files (`hands_name_*.json`) pair with the JSONL by position, both ways.
//!
//! `tests/data/ckd_ehr_authors/` holds a few rows written for these tests in the authors' exact
//! format (Python `json.dumps` per line; `json.dump` of a list of dicts), not their data.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ckd_core::labels::{LabelSet, NUM_LABELS};
use ckd_core::visit::{Sample, Split, Visit};
use ckd_trainer::ingest::{self, IngestConfig};
use ckd_trainer::soft_labels::{self, SoftLabelError};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ckd_ehr_authors").join(name)
}

fn ckd(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ckd")).args(args).env("RUST_LOG", "warn").output().unwrap()
}

/// The authors' instruction, typed from their files (not built from the label table).
const AUTHORS_INSTRUCTION: &str = "Determine that the patient has one or more of the following diseases at the next \
    visit: Acute and unspecified renal failure, Acute cerebrovascular disease, Acute myocardial infarction, Cardiac \
    dysrhythmias, Chronic kidney disease, Chronic obstructive pulmonary disease, Complications of surgical/medical \
    care, Conduction disorders, Congestive heart failure; nonhypertensive, Coronary atherosclerosis and related, \
    Diabetes mellitus with complications, Diabetes mellitus without complication, Disorders of lipid metabolism, \
    Essential hypertension, Fluid and electrolyte disorders, Gastrointestinal hemorrhage, Hypertension with \
    complications, Other liver diseases, Other lower respiratory disease, Other upper respiratory disease, Pleurisy; \
    pneumothorax; pulmonary collapse, Pneumonia, Respiratory failure; insufficiency; arrest, Septicemia (except in \
    labor), Shock";

#[test]
fn ckd_ingest_jsonl_of_the_authors_rows_is_byte_identical() {
    let src = data("name_val_excerpt.json");
    let out = tempfile::tempdir().unwrap();
    let o = ckd(&["ingest".as_ref(), "--jsonl".as_ref(), src.as_os_str(), "--out".as_ref(), out.path().as_os_str()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read(out.path().join("all.jsonl")).unwrap(), fs::read(&src).unwrap());
    // Every label spelled the authors' way was read (rows 3 and 6 use the spellings that
    // differ from ours: "Complications of surgical/medical care", "Coronary atherosclerosis and
    // related", "Congestive heart failure; nonhypertensive", "Septicemia (except in labor)").
    let ing = ingest::ingest_jsonl(&src, &IngestConfig::default()).unwrap();
    let labels: Vec<Vec<u8>> = ing.file.samples.iter().map(|s| s.labels.iter().collect()).collect();
    assert_eq!(
        labels,
        [
            vec![0, 12, 13],
            vec![14, 22, 23, 24],
            vec![3, 6, 8, 9],
            vec![4, 5, 8, 16, 21],
            vec![],
            vec![1, 2, 7, 10, 11, 15, 17, 18, 19, 20],
        ]
    );
    assert!(ing.file.samples.iter().all(|s| s.raw.as_ref().unwrap().instruction == AUTHORS_INSTRUCTION));
}

fn rendered_sample(labels: &[u8]) -> Sample {
    Sample {
        id: "1-2-3".into(),
        subject: 1,
        split: Split::Train,
        visit: Visit::default(),
        knowledge: Vec::new(),
        labels: LabelSet::from_labels(labels.iter().copied()),
        raw: None,
    }
}

#[test]
fn rendered_samples_are_written_with_the_authors_instruction_and_spellings() {
    let s = rendered_sample(&[6, 8, 9, 23]);
    let line = ingest::to_jsonl([&s]);
    let want = ckd_core::jsonl::to_line(
        AUTHORS_INSTRUCTION,
        &s.text(),
        "Disease that the patient may acquire: Complications of surgical/medical care, Congestive heart failure; \
         nonhypertensive, Coronary atherosclerosis and related, Septicemia (except in labor)",
    );
    assert_eq!(line, want);
    // And it reads back with the same labels.
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("rendered.jsonl");
    fs::write(&p, &line).unwrap();
    let back = ingest::ingest_jsonl(&p, &IngestConfig::default()).unwrap();
    assert_eq!(back.file.samples[0].labels, s.labels);
}

#[test]
fn jsonl_written_by_earlier_versions_still_reads_byte_identical() {
    // Our earlier instruction and short names ("Congestive heart failure", "Septicemia", ...).
    let old = ckd_core::jsonl::to_line(
        ckd_core::jsonl::LEGACY_INSTRUCTION,
        "The patient-acquired disease is Heart failure. The patient had used the following medication: None. The \
         surgical operation performed by the patient: None. None.",
        "Disease that the patient may acquire: Complications of surgical procedures or medical care, Congestive heart \
         failure, Coronary atherosclerosis and other heart disease, Septicemia",
    );
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("old.jsonl");
    fs::write(&p, &old).unwrap();
    let ing = ingest::ingest_jsonl(&p, &IngestConfig::default()).unwrap();
    assert_eq!(ing.file.samples[0].labels, LabelSet::from_labels([6, 8, 9, 23]));
    assert_eq!(ingest::to_jsonl(&ing.file.samples), old);
}

fn authors_samples() -> Vec<Sample> {
    ingest::ingest_jsonl(&data("name_val_excerpt.json"), &IngestConfig::default()).unwrap().file.samples
}

#[test]
fn the_authors_soft_labels_pair_with_their_jsonl_by_position() {
    let samples = authors_samples();
    let path = data("hands_name_val_excerpt.json");
    let t = soft_labels::read_authors_file(&path, &samples).unwrap();
    assert_eq!(t.probs.len(), samples.len());
    // Values from the file, in label order, rounded to f32.
    let first = &t.probs[&samples[0].id];
    assert_eq!(first.len(), NUM_LABELS);
    assert_eq!(first[0], 0.987_654_3_f32);
    assert_eq!(first[1], 0.011655_f32);
    assert_eq!(first[6], 0.879491_f32, "Complications of surgical/medical care");
    assert_eq!(t.probs[&samples[4].id][24], 0.0);
    assert_eq!(t.probs[&samples[5].id][24], 1.0);

    // One sample fewer than objects: refused, naming the file and both counts.
    let e = soft_labels::read_authors_file(&path, &samples[..5]).err().unwrap();
    assert!(matches!(e, SoftLabelError::Count { objects: 6, samples: 5, .. }), "{e}");
    assert!(e.to_string().contains("hands_name_val_excerpt.json"), "{e}");

    // A missing key, an unknown key, a value that is no probability: file, object, sample, key.
    let text = fs::read_to_string(&path).unwrap();
    let objects: Vec<&str> = text.trim_start_matches('[').trim_end_matches(']').split("}, {").collect();
    assert_eq!(objects.len(), 6);
    let with_object_2 = |f: &dyn Fn(&str) -> String| {
        let mut o: Vec<String> = objects.iter().map(|s| s.to_string()).collect();
        o[2] = f(&o[2]);
        format!("[{}]", o.join("}, {"))
    };
    let cases: [(String, &[&str]); 3] = [
        (
            with_object_2(&|o| o.replace("\"Shock\": ", "\"Gout\": ")),
            &["x.json", "object 2", "training sample L3", "\"Gout\""],
        ),
        (
            with_object_2(&|o| o.split(", \"Shock\"").next().unwrap().to_string()),
            &["x.json", "object 2", "training sample L3", "no probability for \"Shock\""],
        ),
        (
            with_object_2(&|o| o.replace("\"Pneumonia\": 0.", "\"Pneumonia\": 1.")),
            &["x.json", "object 2", "\"Pneumonia\"", "not a probability"],
        ),
    ];
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("x.json");
    for (text, want) in cases {
        fs::write(&bad, text).unwrap();
        let e = soft_labels::read_authors_file(&bad, &samples).err().unwrap().to_string();
        assert!(want.iter().all(|w| e.contains(w)), "{e}");
    }
}

/// `ckd student train --soft-labels hands_name_train.json` reads the authors' file with their
/// JSONL (and says which object is wrong when it is).
#[test]
fn ckd_student_train_takes_the_authors_soft_labels() {
    let train = data("name_val_excerpt.json");
    let d = tempfile::tempdir().unwrap();
    let run = |soft: &Path, out: &str| {
        let out = d.path().join(out);
        let args: Vec<&std::ffi::OsStr> = vec![
            "student".as_ref(),
            "train".as_ref(),
            "--train".as_ref(),
            train.as_os_str(),
            "--val".as_ref(),
            train.as_os_str(),
            "--soft-labels".as_ref(),
            soft.as_os_str(),
            "--config".as_ref(),
            "tiny".as_ref(),
            "--vocab-size".as_ref(),
            "300".as_ref(),
            "--max-len".as_ref(),
            "128".as_ref(),
            "--max-steps".as_ref(),
            "1".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ];
        ckd(&args)
    };
    let o = run(&data("hands_name_val_excerpt.json"), "ok");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = fs::read_to_string(data("hands_name_val_excerpt.json")).unwrap();
    let bad = d.path().join("hands_bad.json");
    fs::write(&bad, text.replacen("\"Shock\": ", "\"Shock\": -", 1)).unwrap();
    let o = run(&bad, "bad");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("hands_bad.json") && err.contains("object 0") && err.contains("\"Shock\""), "{err}");
}

/// `ckd teacher merge --format hands --expect DATA`: shards of evidence -> the authors' file, in
/// the order of DATA; reading it back gives each sample its own probabilities.
#[test]
fn ckd_teacher_merge_writes_the_authors_format_in_the_data_order() {
    use ckd_core::evidence::{EvidenceFile, SampleEvidence, TeacherIdentity};
    use ckd_trainer::teacher::label::{read_evidence, shard_of, write_evidence};
    let samples = authors_samples();
    let jsonl = data("name_val_excerpt.json");
    let d = tempfile::tempdir().unwrap();
    let teacher = TeacherIdentity {
        model: "m".into(),
        config_hash: "c".repeat(64),
        adapter_hash: None,
        temperature: 1.0,
        last_k_layers: 4,
    };
    // Sample k gets probabilities (k + l / 25) / 8 for label l: distinct per sample and label.
    let probs = |k: usize| (0..NUM_LABELS).map(|l| (k as f32 + l as f32 / 25.0) / 8.0).collect::<Vec<f32>>();
    let mut shards = Vec::new();
    for i in 0..2 {
        let records = samples
            .iter()
            .enumerate()
            .filter(|(_, s)| shard_of(&s.id, 2) == i)
            .map(|(k, s)| SampleEvidence {
                id: s.id.clone(),
                probs: probs(k),
                words: vec![1.0],
                concepts: vec![1.0],
                fields: [0.25; 4],
            })
            .collect();
        let p = d.path().join(format!("shard-{i}.bin"));
        write_evidence(&p, &EvidenceFile { teacher: teacher.clone(), shard: Some((i, 2)), records, data: None })
            .unwrap();
        shards.push(p);
    }
    let out = d.path().join("hands_name_val.json");
    let merge = |extra: &[&std::ffi::OsStr]| {
        let mut args: Vec<&std::ffi::OsStr> = vec!["teacher".as_ref(), "merge".as_ref()];
        args.extend(shards.iter().map(|p| p.as_os_str()));
        args.extend(["--format".as_ref(), "hands".as_ref(), "--out".as_ref(), out.as_os_str()]);
        args.extend_from_slice(extra);
        ckd(&args)
    };
    let o = merge(&[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--expect"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = merge(&["--expect".as_ref(), jsonl.as_os_str()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let back = soft_labels::read_authors_file(&out, &samples).unwrap();
    for (k, s) in samples.iter().enumerate() {
        assert_eq!(back.probs[&s.id], probs(k), "{}", s.id);
    }
    assert_eq!(read_evidence(&soft_labels::evidence_beside(&out)).unwrap().records.len(), samples.len());
}
