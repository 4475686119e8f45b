//! Commands read exactly what they are given.
//!
//! - Every command that reads one split reads exactly that split, whatever the source: a
//!   `samples.bin` ingested from CKD-EHR JSONL carries per-record splits, and `ckd eval`,
//!   `ckd student train`, `ckd teacher train`, `ckd teacher label` and `ckd teacher merge --expect`
//!   read only the split they are asked for, never all the records. A CKD-EHR JSONL file given
//!   directly is one split file and is read whole.
//! - A student's files are verified against its `checksums.json` by every command that loads it:
//!   one flipped byte makes `ckd eval` and `ckd export` fail naming the file instead of
//!   evaluating or exporting the damaged weights.
//! - The same data and seed give the same student, byte for byte.
//! - `ckd eval` takes the student's role from its provenance (a distilled student is not labelled
//!   "student, no distillation") and writes a file only where `--out` asks (never
//!   `eval-test.json` into the model directory).
//!
//! The fixture (one ingest, one tiny student, one demo teacher) is built once and shared.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const ROWS: usize = 200;

fn ckd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ckd")).args(args).env("RUST_LOG", "warn").output().unwrap()
}

fn ok(args: &[&str]) -> Output {
    let o = ckd(args);
    assert!(o.status.success(), "ckd {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// 200 CKD-EHR rows whose inputs and labels vary with the row.
fn rows() -> String {
    let dx = ["Heart failure", "Acute kidney failure", "Pneumonia", "Diabetes", "Septicemia", "Hypertension"];
    let labels = ["Shock", "Pneumonia", "None", "Chronic kidney disease, Shock", "Essential hypertension"];
    (0..ROWS)
        .map(|i| {
            let input = format!(
                "The patient-acquired disease is {}, {}. The patient had used the following medication: Drug{}. \
                 The surgical operation performed by the patient: None. None.",
                dx[i % dx.len()],
                dx[(i / 3) % dx.len()],
                i % 11
            );
            let output = format!("Disease that the patient may acquire: {}", labels[i % labels.len()]);
            serde_json::json!({"instruction": "i", "input": input, "output": output}).to_string() + "\n"
        })
        .collect()
}

struct Fixture {
    dir: PathBuf,
    /// Lines of `train.jsonl`, `val.jsonl`, `test.jsonl` written by the ingest.
    counts: [usize; 3],
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    fn bin(&self) -> PathBuf {
        self.path("j/samples.bin")
    }
}

/// The JSONL ingest, a tiny student and a head-only demo teacher trained on its splits.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // Rebuilt by every run of this test binary.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli_inputs");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("rows.jsonl"), rows()).unwrap();
        ok(&["ingest", "--jsonl", s(&dir.join("rows.jsonl")), "--out", s(&dir.join("j"))]);
        let count = |n: &str| fs::read_to_string(dir.join("j").join(n)).unwrap().lines().count();
        let counts = [count("train.jsonl"), count("val.jsonl"), count("test.jsonl")];
        assert_eq!(counts.iter().sum::<usize>(), ROWS);
        assert!(counts.iter().all(|&c| c > 0 && c < ROWS / 2 + 70), "{counts:?}");
        let bin = dir.join("j/samples.bin");
        train_student(&bin, &dir.join("student"));
        ok(&[
            "teacher",
            "train",
            "--train",
            s(&bin),
            "--val",
            s(&bin),
            "--base",
            "demo",
            "--epochs",
            "0",
            "--head-epochs",
            "2",
            "--max-len",
            "96",
            "--out",
            s(&dir.join("teacher")),
        ]);
        Fixture { dir, counts }
    })
}

/// `ckd student train` of a tiny student from scratch on `bin`'s train and val splits.
fn train_student(bin: &Path, out: &Path) {
    ok(&[
        "student",
        "train",
        "--train",
        s(bin),
        "--val",
        s(bin),
        "--config",
        "tiny",
        "--vocab-size",
        "300",
        "--max-len",
        "64",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--lr",
        "1e-3",
        "--out",
        s(out),
    ]);
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
}

/// The sample count each model of an `ckd eval` report was scored on.
fn scored(report: &serde_json::Value) -> Vec<u64> {
    let models = report["report"]["models"].as_array().unwrap();
    assert!(!models.is_empty(), "no model scored");
    models.iter().map(|m| m["metrics"]["n_samples"].as_u64().unwrap()).collect()
}

#[test]
fn student_train_reads_the_train_and_val_splits_of_a_jsonl_ingest() {
    let f = fixture();
    let prov = json(&f.path("student/provenance.json"));
    assert_eq!(prov["train_samples"], f.counts[0], "{prov}");
    assert_eq!(prov["val_samples"], f.counts[1], "{prov}");
}

#[test]
fn eval_scores_exactly_the_requested_split() {
    let f = fixture();
    for (split, n) in [("test", f.counts[2]), ("val", f.counts[1])] {
        let out = f.path(&format!("eval-{split}.json"));
        ok(&["eval", "--model", s(&f.path("student")), "--data", s(&f.bin()), "--split", split, "--json", s(&out)]);
        let r = json(&out);
        assert_eq!(scored(&r), vec![n as u64; scored(&r).len()], "{split}: every model scores the split only");
        let desc = r["report"]["data_description"].as_str().unwrap();
        assert!(desc.ends_with(&format!("({split} split), {n} samples")), "{desc}");
    }
}

#[test]
fn teacher_train_reads_the_train_and_val_splits_of_a_jsonl_ingest() {
    let f = fixture();
    let t = json(&f.path("teacher/teacher.json"));
    assert_eq!(t["training"]["train_samples"], f.counts[0], "{}", t["training"]);
    assert_eq!(t["training"]["val_samples"], f.counts[1], "{}", t["training"]);
}

#[test]
fn teacher_label_and_merge_read_exactly_the_requested_split() {
    let f = fixture();
    let ev = f.path("test-evidence.bin");
    let o = ok(&[
        "teacher",
        "label",
        "--teacher",
        s(&f.path("teacher")),
        "--data",
        s(&f.bin()),
        "--split",
        "test",
        "--out",
        s(&ev),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("teacher label: {} samples in all", f.counts[2])), "{err}");
    // `--expect` of the same split: exactly the labelled samples, so the merge succeeds.
    let merged = f.path("merged.bin");
    ok(&["teacher", "merge", s(&ev), "--out", s(&merged), "--expect", s(&f.bin()), "--split", "test"]);
    // Another split's samples are not what was labelled.
    let o = ckd(&["teacher", "merge", s(&ev), "--out", s(&merged), "--expect", s(&f.bin()), "--split", "val"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A JSONL file given directly is one split file: all its records, whatever `--split` says.
#[test]
fn a_jsonl_file_given_directly_is_read_whole() {
    let f = fixture();
    let test_jsonl = f.path("j/test.jsonl");
    let out = f.path("eval-direct.json");
    ok(&["eval", "--model", s(&f.path("student")), "--data", s(&test_jsonl), "--split", "test", "--json", s(&out)]);
    let r = json(&out);
    assert_eq!(scored(&r), vec![f.counts[2] as u64; scored(&r).len()]);
}

/// A copy of the fixture's student in a directory of its own.
fn student_copy(name: &str) -> PathBuf {
    let f = fixture();
    let dst = f.path(name);
    let _ = fs::remove_dir_all(&dst);
    fs::create_dir_all(&dst).unwrap();
    for e in fs::read_dir(f.path("student")).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
    dst
}

fn assert_refused(args: &[&str], names: &str) {
    let o = ckd(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "ckd {args:?}: {err}");
    assert!(err.contains(names), "ckd {args:?} should name {names}: {err}");
}

#[test]
fn eval_and_export_refuse_a_student_with_a_flipped_byte() {
    let f = fixture();
    let st = student_copy("student-flipped");
    let weights = st.join("model.safetensors");
    let mut bytes = fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(&weights, &bytes).unwrap();
    let json = f.path("eval-flipped.json");
    assert_refused(&["eval", "--model", s(&st), "--data", s(&f.bin()), "--json", s(&json)], s(&weights));
    assert!(!json.exists());
    let bundle = f.path("bundle-flipped");
    assert_refused(&["export", "--model", s(&st), "--out", s(&bundle)], s(&weights));
    assert!(!bundle.exists(), "nothing exported");
}

#[test]
fn a_student_without_its_checksum_list_or_with_an_edited_file_is_refused() {
    let f = fixture();
    let st = student_copy("student-edited");
    let thresholds = st.join("thresholds.json");
    let text = fs::read_to_string(&thresholds).unwrap();
    fs::write(&thresholds, text.replacen('0', "1", 1)).unwrap();
    assert_refused(&["eval", "--model", s(&st), "--data", s(&f.bin())], s(&thresholds));
    fs::remove_file(st.join("checksums.json")).unwrap();
    assert_refused(&["eval", "--model", s(&st), "--data", s(&f.bin())], "checksums.json");
}

/// A student trained from scratch twice on the same data with the same seed is the same, byte
/// for byte (its WordPiece vocabulary numbers tied pieces the same way in every run).
#[test]
fn student_training_is_reproducible() {
    let f = fixture();
    let again = f.path("student-again");
    let _ = fs::remove_dir_all(&again);
    train_student(&f.bin(), &again);
    for name in ["tokenizer.json", "model.safetensors", "thresholds.json"] {
        let (a, b) = (fs::read(f.path("student").join(name)).unwrap(), fs::read(again.join(name)).unwrap());
        assert!(a == b, "{name} differs between two identical trainings");
    }
}

/// The role of the student row of an `ckd eval` report.
fn student_role(report: &serde_json::Value) -> String {
    let models = report["report"]["models"].as_array().unwrap();
    let st = models.iter().find(|m| m["name"] == "student").unwrap_or_else(|| panic!("no student row: {report}"));
    st["role"].as_str().unwrap().to_string()
}

/// The student row's role comes from the student's provenance; `ckd eval` writes
/// nothing into the model directory, and writes its JSON only where `--out` asks.
#[test]
fn eval_role_follows_provenance_and_writes_only_where_asked() {
    let f = fixture();
    let listing = |d: &Path| {
        let mut v: Vec<_> = fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
        v.sort();
        v
    };
    let before = listing(&f.path("student"));
    let o = ok(&["eval", "--model", s(&f.path("student")), "--data", s(&f.bin())]);
    assert_eq!(listing(&f.path("student")), before, "ckd eval wrote into the model directory");
    let printed = String::from_utf8_lossy(&o.stdout);
    assert!(printed.contains("student, no distillation"), "{printed}");

    // A student distilled from the fixture's teacher is labelled as distilled.
    let ev = f.path("train-evidence.bin");
    let teacher = f.path("teacher");
    ok(&["teacher", "label", "--teacher", s(&teacher), "--data", s(&f.bin()), "--split", "train", "--out", s(&ev)]);
    let kd = f.path("student-kd");
    let _ = fs::remove_dir_all(&kd);
    ok(&[
        "student",
        "train",
        "--train",
        s(&f.bin()),
        "--val",
        s(&f.bin()),
        "--config",
        "tiny",
        "--vocab-size",
        "300",
        "--max-len",
        "64",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--lr",
        "1e-3",
        "--soft-labels",
        s(&ev),
        "--soft-weight",
        "0.5",
        "--hard-weight",
        "0.5",
        "--out",
        s(&kd),
    ]);
    let out = f.path("eval-kd.json");
    let o = ok(&["eval", "--model", s(&kd), "--data", s(&f.bin()), "--out", s(&out)]);
    let printed = String::from_utf8_lossy(&o.stdout);
    assert!(printed.contains("student, distilled") && !printed.contains("no distillation"), "{printed}");
    let r = json(&out);
    assert_eq!(student_role(&r), "student_distilled");
    assert_eq!(r["training"], "distilled");
    assert!(!kd.join("eval-test.json").exists());
    let plain = f.path("eval-plain.json");
    ok(&["eval", "--model", s(&f.path("student")), "--data", s(&f.bin()), "--out", s(&plain)]);
    assert_eq!(student_role(&json(&plain)), "student");
}

#[test]
fn an_int8_export_stores_int8_word_embeddings_unless_asked_for_f32() {
    let f = fixture();
    let data = |name: &str, extra: &[&str]| -> u64 {
        let out = f.path(name);
        let _ = fs::remove_dir_all(&out);
        let student = f.path("student");
        let mut args = vec!["export", "--model", s(&student), "--out", s(&out)];
        args.extend_from_slice(extra);
        let o = ok(&args);
        let words = if extra.contains(&"--f32-embeddings") { "f32" } else { "int8" };
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("word embeddings {words}")), "{args:?}: {err}");
        fs::metadata(out.join("model.onnx.data")).unwrap().len()
    };
    let (int8, f32) = (data("bundle-default", &[]), data("bundle-f32-emb", &["--f32-embeddings"]));
    assert!(int8 < f32, "int8 word embeddings: {int8} bytes of tensors, f32: {f32}");
    assert_eq!(
        ckd(&["export", "--model", "x", "--out", "y", "--int8-embeddings", "--f32-embeddings"]).status.code(),
        Some(2)
    );
}
