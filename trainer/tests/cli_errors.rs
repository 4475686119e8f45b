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

/// Issue 30.4: `ckd ingest` warns of exact duplicate records with their lines;
/// `--refuse-duplicates` refuses them.
#[test]
fn ingest_warns_of_duplicates_or_refuses_them() {
    let d = tempfile::tempdir().unwrap();
    let dup = jsonl(d.path(), "dup.jsonl", &["Shock", "None", "Shock"]);
    let out_dir = d.path().join("out");
    let out = ckd(&["ingest", "--jsonl", &dup, "--out", out_dir.to_str().unwrap()], Stdio::piped());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("warning:") && err.contains("line 3 = line 1"), "{err}");
    let refused = d.path().join("refused");
    let args = ["ingest", "--jsonl", &dup, "--refuse-duplicates", "--out", refused.to_str().unwrap()];
    let out = ckd(&args, Stdio::piped());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("dup.jsonl:3") && err.contains("line 1"), "{err}");
    assert!(!refused.exists());
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

/// A copy of the tiny test bundle (a real bundle directory).
fn tiny_bundle(dir: &Path) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../edge-runtime/testdata/tiny/bundle");
    let b = dir.join("bundle");
    fs::create_dir(&b).unwrap();
    for e in fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), b.join(e.file_name())).unwrap();
    }
    b
}

/// Issue 17.7: `ckd pack --out` never writes inside the bundle it reads, and replaces an
/// existing file only with `--force`.
#[test]
fn pack_refuses_its_own_input_and_existing_outputs() {
    let d = tempfile::tempdir().unwrap();
    let b = tiny_bundle(d.path());
    let bs = b.to_str().unwrap();
    let model = fs::read(b.join("model.onnx")).unwrap();
    for inside in [b.join("model.onnx"), b.join("manifest.bin"), b.join("new.ckdb"), b.join("sub/x.ckdb")] {
        let out = ckd(&["pack", "--bundle", bs, "--out", inside.to_str().unwrap(), "--force"], Stdio::piped());
        assert_eq!(out.status.code(), Some(1), "{}", inside.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("inside the bundle directory"), "{err}");
    }
    assert_eq!(fs::read(b.join("model.onnx")).unwrap(), model, "the bundle is untouched");
    assert!(!b.join("new.ckdb").exists() && !b.join("sub").exists());

    let packed = d.path().join("b.ckdb");
    let ps = packed.to_str().unwrap();
    let ok = ckd(&["pack", "--bundle", bs, "--out", ps], Stdio::piped());
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    let first = fs::read(&packed).unwrap();
    let again = ckd(&["pack", "--bundle", bs, "--out", ps], Stdio::piped());
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = ckd(&["pack", "--bundle", bs, "--out", ps, "--force"], Stdio::piped());
    assert_eq!(forced.status.code(), Some(0));
    assert_eq!(fs::read(&packed).unwrap(), first);
}

/// Issue 17.7: `ckd ingest --out` replaces an earlier output whole and refuses to replace an
/// unrelated directory.
#[test]
fn ingest_replaces_its_output_whole_and_refuses_other_directories() {
    let d = tempfile::tempdir().unwrap();
    let good = jsonl(d.path(), "good.jsonl", &["Shock", "None"]);
    let out_dir = d.path().join("out");
    let os = out_dir.to_str().unwrap();
    assert!(ckd(&["ingest", "--jsonl", &good, "--out", os], Stdio::piped()).status.success());
    fs::write(out_dir.join("leftover.txt"), b"x").unwrap();
    assert!(ckd(&["ingest", "--jsonl", &good, "--out", os], Stdio::piped()).status.success());
    assert!(!out_dir.join("leftover.txt").exists(), "the old output was replaced whole");
    assert!(out_dir.join("samples.bin").is_file());
    let leftovers: Vec<_> = fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "no staging directory left: {leftovers:?}");

    let mine = d.path().join("mine");
    fs::create_dir(&mine).unwrap();
    fs::write(mine.join("notes.txt"), b"keep").unwrap();
    let out = ckd(&["ingest", "--jsonl", &good, "--out", mine.to_str().unwrap()], Stdio::piped());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(fs::read(mine.join("notes.txt")).unwrap(), b"keep");
}

/// Results on stdout: a reader that has gone (`ckd ... | head -0`) ends the command with status
/// 0 and no panic (it was exit 101, `failed printing to stdout`); a full stdout is an error that
/// says so (exit 1).
#[test]
fn closed_or_full_stdout_is_no_panic() {
    let d = tempfile::tempdir().unwrap();
    let out_dir = d.path().join("cohort");
    let args = ["synth", "--patients", "60", "--seed", "3", "--out", out_dir.to_str().unwrap(), "--knowledge-report"];
    let mut child = Command::new(env!("CARGO_BIN_EXE_ckd"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked") && !err.contains("error:"), "{err}");

    let Ok(full) = fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("NOT RUN (full stdout): no /dev/full");
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_ckd")).args(args).stdout(full).stderr(Stdio::piped()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("writing to standard output") && !err.contains("panicked"), "{err}");
}

/// Issue 30.7: values that make no sense are refused at parse time (exit 2, before any data is
/// read), naming the flag and the allowed range.
#[test]
fn nonsense_numbers_are_refused_naming_the_flag_and_range() {
    let d = tempfile::tempdir().unwrap();
    let data = jsonl(d.path(), "rows.jsonl", &["Shock", "None"]);
    let out = d.path().join("out");
    let base = ["student", "train", "--train", &data, "--val", &data, "--out", out.to_str().unwrap()];
    let cases: [(&[&str], &str, &str); 9] = [
        (&["--max-len", "0"], "--max-len", "at least 3"),
        (&["--label-fraction", "2"], "--label-fraction", "(0, 1]"),
        (&["--label-fraction", "0"], "--label-fraction", "(0, 1]"),
        (&["--vocab-size", "1"], "--vocab-size", "at least 32"),
        (&["--lr", "NaN"], "--lr", "finite number > 0"),
        (&["--lr=-1e-3"], "--lr", "finite number > 0"),
        (&["--head-lr-scale", "inf"], "--head-lr-scale", "finite number > 0"),
        (&["--temperature", "0"], "--temperature", "finite number > 0"),
        (&["--soft-weight=-0.1"], "--soft-weight", "finite number >= 0"),
    ];
    for (extra, flag, range) in cases {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let o = ckd(&args, Stdio::piped());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(flag) && err.contains(range), "{extra:?}: {err}");
    }
    assert!(!out.exists(), "nothing was trained");
    let teacher = ["teacher", "train", "--train", &data, "--val", &data, "--base", "demo", "--out"];
    for (extra, flag) in [(["--max-len", "0"], "--max-len"), (["--lr", "NaN"], "--lr")] {
        let args: Vec<&str> = teacher.iter().copied().chain([out.to_str().unwrap()]).chain(extra).collect();
        let o = ckd(&args, Stdio::piped());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(flag), "{extra:?}: {err}");
    }
}

/// `ckd demo --teacher qwen` without the GGUF names the script that fetches it, and writes nothing.
#[test]
fn demo_with_qwen_names_the_fetch_script_when_the_gguf_is_missing() {
    let d = tempfile::tempdir().unwrap();
    let out_dir = d.path().join("run");
    let run = |extra: &[&str], models: &Path| {
        let mut args = vec!["demo", "--teacher", "qwen", "--out", out_dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_ckd")).args(&args).env("CKD_MODELS_DIR", models).output().unwrap()
    };
    let missing = d.path().join("nowhere.gguf");
    for extra in [vec![], vec!["--gguf", missing.to_str().unwrap()]] {
        let out = run(&extra, d.path());
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("scripts/fetch_qwen.sh") && err.contains(".gguf"), "{err}");
        assert!(!out_dir.exists());
    }
    let out = ckd(&["demo", "--gguf", "x.gguf", "--out", out_dir.to_str().unwrap()], Stdio::piped());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--teacher qwen"));
}
