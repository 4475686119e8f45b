//! The `ckd` binary's error output (issue 17): each cause printed once, a failing stderr is no
//! panic (an error still exits 1, a success 0), and I/O errors name their path.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn ckd(args: &[&str], stderr: Stdio) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ckd")).args(args).stdout(Stdio::piped()).stderr(stderr).output().unwrap()
}

fn jsonl(dir: &Path, name: &str, outputs: &[&str]) -> String {
    let p = dir.join(name);
    let text: String = outputs
        .iter()
        .map(|o| {
            format!(
                "{{\"instruction\": \"i\", \"input\": \"t\", \"output\": \"Disease that the patient may acquire: {o}\"}}\n"
            )
        })
        .collect();
    fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// Issue 17.8: `ckd ingest --jsonl` with an unknown name printed the cause twice.
#[test]
fn each_cause_is_printed_once() {
    let d = tempfile::tempdir().unwrap();
    let bad = jsonl(d.path(), "bad.jsonl", &["Shock", "Gout"]);
    let out_dir = d.path().join("out");
    let out = ckd(&["ingest", "--jsonl", &bad, "--out", out_dir.to_str().unwrap()], Stdio::piped());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("unknown phenotype name").count(), 1, "{err}");
    assert!(err.contains("bad.jsonl") && err.contains("line 2"), "{err}");
}

/// Issue 17.9: `2>/dev/full` on an error path exits 1 (not 101, a panic); on success, 0.
#[test]
fn failing_stderr_keeps_the_exit_status() {
    let Ok(full) = fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("NOT RUN: no /dev/full");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let bad = jsonl(d.path(), "bad.jsonl", &["Gout"]);
    let good = jsonl(d.path(), "good.jsonl", &["Shock", "None"]);
    let out_dir = d.path().join("out");
    let out =
        ckd(&["ingest", "--jsonl", &bad, "--out", out_dir.to_str().unwrap()], Stdio::from(full.try_clone().unwrap()));
    assert_eq!(out.status.code(), Some(1), "error path");
    let out =
        ckd(&["ingest", "--jsonl", &good, "--out", out_dir.to_str().unwrap()], Stdio::from(full.try_clone().unwrap()));
    assert_eq!(out.status.code(), Some(0), "success path: the summary goes to a full stderr");
    assert!(out_dir.join("samples.bin").is_file());
    let missing = d.path().join("no-bundle");
    let out = ckd(
        &["pack", "--bundle", missing.to_str().unwrap(), "--out", d.path().join("b.ckdb").to_str().unwrap()],
        Stdio::from(full),
    );
    assert_eq!(out.status.code(), Some(1), "pack error path");
}

/// Issue 17.10: an output that cannot be written names its path.
#[test]
fn io_errors_name_the_path() {
    let d = tempfile::tempdir().unwrap();
    let good = jsonl(d.path(), "good.jsonl", &["Shock"]);
    let blocker = d.path().join("a-file");
    fs::write(&blocker, b"x").unwrap();
    let out_dir = blocker.join("out");
    let out = ckd(&["ingest", "--jsonl", &good, "--out", out_dir.to_str().unwrap()], Stdio::piped());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(out_dir.to_str().unwrap()), "{err}");
}
