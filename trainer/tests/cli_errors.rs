//! The `ckd` binary's error output: each cause printed once, a failing stderr is no panic (an
//! error still exits 1, a success 0), and I/O errors name their path.

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

/// `ckd ingest --jsonl` with an unknown name prints the cause once.
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

/// `2>/dev/full` on an error path exits 1 (not 101, a panic); on success, 0.
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

/// `ckd ingest` warns of exact duplicate records with their lines; `--refuse-duplicates` refuses them.
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

/// An output that cannot be written names its path.
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

/// `ckd pack --out` never writes inside the bundle it reads, and replaces an existing file only
/// with `--force`.
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
    let err = String::from_utf8_lossy(&ok.stderr);
    assert_eq!(ok.status.code(), Some(0), "{err}");
    // One line per packed file, not Rust `Debug` (`[("manifest.bin", 2044), ...]`).
    assert!(!err.contains("[(\""), "{err}");
    let manifest_len = fs::metadata(b.join("manifest.bin")).unwrap().len();
    assert!(
        err.lines().any(|l| l.starts_with("  manifest.bin ") && l.ends_with(&format!("({manifest_len} bytes)"))),
        "{err}"
    );
    let first = fs::read(&packed).unwrap();
    let again = ckd(&["pack", "--bundle", bs, "--out", ps], Stdio::piped());
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = ckd(&["pack", "--bundle", bs, "--out", ps, "--force"], Stdio::piped());
    assert_eq!(forced.status.code(), Some(0));
    assert_eq!(fs::read(&packed).unwrap(), first);
}

/// `ckd ingest --out` replaces an earlier output whole and refuses to replace an unrelated
/// directory.
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
/// 0 and no panic (not exit 101, `failed printing to stdout`); a full stdout is an error that
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

/// Values that make no sense are refused at parse time (exit 2, before any data is read),
/// naming the flag and the allowed range.
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

/// Runs `ckd` with a time limit: a command that would block reading a FIFO must not hang the
/// test; it is killed, and the test fails.
fn ckd_bounded(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ckd"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("ckd {args:?} hung (reading a FIFO?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Data files that are a FIFO or a device are refused saying what they are (a device is not
/// reported as "missing"), never read (a FIFO would block, `/dev/zero` would never end).
#[cfg(unix)]
#[test]
fn non_regular_data_files_are_refused_saying_what_they_are() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("pipe.jsonl");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo");
    let fs_ = fifo.to_str().unwrap();
    let out_dir = d.path().join("out");
    let good = jsonl(d.path(), "good.jsonl", &["Shock", "None"]);
    let out = ckd_bounded(&["ingest", "--jsonl", fs_, "--out", out_dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{fs_}: is a FIFO (named pipe), not a regular file")), "{err}");
    let out = ckd_bounded(&["ingest", "--jsonl", &good, "--out", out_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let samples = out_dir.join("samples.bin");
    // An evidence file that is a FIFO (`ckd explain`, `ckd teacher merge`).
    let args = ["explain", "--evidence", fs_, "--data", samples.to_str().unwrap(), "--id", "L1"];
    let out = ckd_bounded(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is a FIFO (named pipe), not a regular file"), "{err}");
    let out = ckd_bounded(&["teacher", "merge", fs_, "--out", d.path().join("m.bin").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is a FIFO (named pipe), not a regular file"), "{err}");
    // Small files read whole: a pipeline config, the CCS table, a teacher's tokenizer.
    let out_rs = d.path().join("x.rs");
    for args in
        [vec!["pipeline", "--config", fs_], vec!["gen-tables", "--ccs-yaml", fs_, "--out", out_rs.to_str().unwrap()]]
    {
        let out = ckd_bounded(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(fs_) && err.contains("is a FIFO (named pipe), not a regular file"), "{args:?}: {err}");
    }
    // A samples file that is a character device.
    let ev = evidence_file(d.path(), 1);
    let out = ckd_bounded(&["explain", "--evidence", ev.to_str().unwrap(), "--data", "/dev/zero", "--id", "s0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/dev/zero: is a character device, not a regular file"), "{err}");
}

/// Of two concurrent `ckd ingest` into one `--out`, a run that finds another writing the same
/// output says so (not "Directory not empty (os error 39)") and leaves it alone.
#[test]
fn a_second_ingest_into_a_busy_output_says_another_run_holds_it() {
    let d = tempfile::tempdir().unwrap();
    let good = jsonl(d.path(), "good.jsonl", &["Shock", "None"]);
    let out_dir = d.path().join("out");
    // The first run's staging directory, locked as a live run holds it.
    let staging = d.path().join(".out.staging");
    fs::create_dir(&staging).unwrap();
    let held = fs::File::open(&staging).unwrap();
    held.try_lock().unwrap();
    let out = ckd(&["ingest", "--jsonl", &good, "--out", out_dir.to_str().unwrap()], Stdio::piped());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("another run is writing this output now"), "{err}");
    assert!(staging.is_dir() && !out_dir.exists(), "the other run's files are left alone");
    drop(held);
    let out = ckd(&["ingest", "--jsonl", &good, "--out", out_dir.to_str().unwrap()], Stdio::piped());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `ckd explain --list` prints the ids that can be explained (the data's samples with an
/// evidence record), and an unknown id points to it.
#[test]
fn explain_lists_the_ids_it_can_explain() {
    let d = tempfile::tempdir().unwrap();
    let good = jsonl(d.path(), "good.jsonl", &["Shock", "None", "Shock"]);
    let out_dir = d.path().join("out");
    let out = ckd(&["ingest", "--jsonl", &good, "--out", out_dir.to_str().unwrap()], Stdio::piped());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let samples = out_dir.join("samples.bin");
    let ev = evidence_of(d.path(), &["L3".into(), "L1".into(), "elsewhere".into()]);
    let base = ["explain", "--evidence", ev.to_str().unwrap(), "--data", samples.to_str().unwrap()];
    let out = ckd(&[&base[..], &["--list"]].concat(), Stdio::piped());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "L1\nL3\n");
    let out = ckd(&[&base[..], &["--id", "10006-142345"]].concat(), Stdio::piped());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no sample 10006-142345 (`ckd explain --list` prints the ids)"), "{err}");
    // --id or --list, not both, not neither.
    assert_eq!(ckd(&base, Stdio::piped()).status.code(), Some(2));
    assert_eq!(ckd(&[&base[..], &["--list", "--id", "L1"]].concat(), Stdio::piped()).status.code(), Some(2));
}

/// Logs to a file or a pipe carry no colour codes, and other crates' INFO lines stay out by
/// default while ours stay in.
#[test]
fn logs_to_a_pipe_are_plain_text() {
    let d = tempfile::tempdir().unwrap();
    let out_dir = d.path().join("cohort");
    let out = ckd(&["synth", "--patients", "30", "--out", out_dir.to_str().unwrap()], Stdio::piped());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains('\u{1b}'), "ANSI escape in {err:?}");
    assert!(err.lines().any(|l| l.contains(" INFO ckd_trainer::")), "{err}");
}

/// The same shard given twice to `ckd teacher merge` is one summary line (the count and the
/// first five ids), not one line per sample.
#[test]
fn merge_summarises_repeated_samples() {
    let d = tempfile::tempdir().unwrap();
    let p = evidence_file(d.path(), 40);
    let ps = p.to_str().unwrap();
    let out = ckd(&["teacher", "merge", ps, ps, "--out", d.path().join("m.bin").to_str().unwrap()], Stdio::piped());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.lines().count() <= 4, "{err}");
    assert!(err.contains("40 sample(s) appear more than once: s0 in "), "{err}");
}

/// An unsharded evidence file `all.bin` in `dir` with records `s0`..`s{n-1}`.
fn evidence_file(dir: &Path, n: usize) -> std::path::PathBuf {
    let ids: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    evidence_of(dir, &ids)
}

/// An unsharded evidence file `all.bin` in `dir` with a record for each of `ids`.
fn evidence_of(dir: &Path, ids: &[String]) -> std::path::PathBuf {
    let file = ckd_core::evidence::EvidenceFile {
        teacher: ckd_core::evidence::TeacherIdentity {
            model: "m".into(),
            config_hash: "c".repeat(64),
            adapter_hash: None,
            temperature: 1.0,
            last_k_layers: 1,
        },
        shard: None,
        records: ids.iter().map(|id| record(id)).collect(),
        data: None,
    };
    let p = dir.join("all.bin");
    fs::write(&p, file.to_bytes().unwrap()).unwrap();
    p
}

fn record(id: &str) -> ckd_core::evidence::SampleEvidence {
    ckd_core::evidence::SampleEvidence {
        id: id.into(),
        probs: vec![0.5; ckd_core::NUM_LABELS],
        words: vec![0.25; 4],
        concepts: vec![1.0],
        fields: [0.25; 4],
    }
}
