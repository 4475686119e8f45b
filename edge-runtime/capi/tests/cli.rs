//! The `ckd-edge` binary on the tiny test bundle (`edge-runtime/testdata/tiny`): JSONL in and
//! out for both input kinds, bad lines named (strict) or reported per line (`--lenient`),
//! non-UTF-8 input, `info`, and `eval` metrics equal to `ckd_core::metrics` on the engine's
//! own predictions.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ckd_core::metrics;
use ckd_edge::Engine;
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/tiny")
}

fn bundle() -> PathBuf {
    fixture().join("bundle")
}

fn run(args: &[&str], stdin: &[u8]) -> Output {
    run_with_stderr(args, stdin, Stdio::piped())
}

fn run_with_stderr(args: &[&str], stdin: &[u8], stderr: Stdio) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ckd-edge"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn rows() -> Vec<Value> {
    std::fs::read_to_string(fixture().join("rows.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn jsonl(out: &[u8]) -> Vec<Value> {
    String::from_utf8(out.to_vec()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

const VISIT: &str = r#"{"id": "v-1", "diagnoses": [{"code": "5856", "title": "Chronic kidney disease (CKD)"}, {"code": "4019", "title": "Essential hypertension"}], "medications": ["Furosemide"], "procedures": []}"#;

#[test]
fn predict_rows_and_visits() {
    let b = bundle();
    let engine = Engine::open(&b).unwrap();
    let rows = rows();
    let mut input = String::new();
    input.push_str(&serde_json::to_string(&rows[0]).unwrap());
    input.push_str("\n\n"); // a blank line is skipped but counted
    input.push_str(VISIT);
    input.push_str("\r\n");
    let short = r#"{"instruction": "i", "input": "Diseases: Essential hypertension. Medications: None. Surgical operations: None. Medical knowledge: None.", "output": ""}"#;
    input.push_str(short);
    let out = run(&["predict", "--bundle", b.to_str().unwrap()], input.as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recs = jsonl(&out.stdout);
    assert_eq!(recs.len(), 3);
    assert_eq!(recs.iter().map(|r| r["line"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 3, 4]);
    assert_eq!(recs[1]["id"], "v-1");

    let visit: ckd_core::Visit = serde_json::from_str(VISIT).unwrap();
    let short_text: Value = serde_json::from_str(short).unwrap();
    let want = [
        engine.predict_text(rows[0]["input"].as_str().unwrap()).unwrap(),
        engine.predict(&visit).unwrap(),
        engine.predict_text(short_text["input"].as_str().unwrap()).unwrap(),
    ];
    for (rec, p) in recs.iter().zip(&want) {
        let probs = rec["probabilities"].as_object().unwrap();
        assert_eq!(probs.len(), 25);
        for (l, ph) in ckd_core::PHENOTYPES.iter().enumerate() {
            assert_eq!(probs[ph.name].as_f64().unwrap() as f32, p.probs[l], "{}", ph.name);
        }
        let positives: Vec<&str> = rec["positives"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(positives, p.positive.names());
        assert_eq!(rec["top_k"].as_array().unwrap().len(), ckd_edge::TOP_K);
        assert_eq!(rec["top_k"][0]["label"], ckd_core::PHENOTYPES[p.top_k[0].0 as usize].name);
        assert_eq!(rec["truncated"], p.truncated);
        assert_eq!(rec["tokens"].as_u64().unwrap() as usize, p.tokens);
    }
    // The fixture's rows are longer than the bundle's 64 tokens; the short text is not.
    assert_eq!(recs[0]["truncated"], true);
    assert_eq!(recs[0]["tokens"], 64);
    assert_eq!(recs[2]["truncated"], false);
    // Same output from a file as from stdin.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("in.jsonl");
    std::fs::write(&f, &input).unwrap();
    let from_file = run(&["predict", "--bundle", b.to_str().unwrap(), "--input", f.to_str().unwrap()], b"");
    assert_eq!(from_file.stdout, out.stdout);
}

#[test]
fn bad_lines_are_named_or_reported() {
    let b = bundle();
    let good = serde_json::to_string(&rows()[1]).unwrap();
    let empty = r#"{"instruction": "i", "input": "   ", "output": ""}"#;
    let mut input = Vec::new();
    let empty_visit = br#"{"diagnoses": [], "medications": [], "procedures": []}"#;
    for l in [
        good.as_bytes(),
        b"not json",
        b"{\"input\": \"caf\xe9\"}",
        empty.as_bytes(),
        b"[1, 2]",
        br#"{"x": 1}"#,
        empty_visit,
    ] {
        input.extend_from_slice(l);
        input.push(b'\n');
    }
    let strict = run(&["predict", "--bundle", b.to_str().unwrap()], &input);
    assert!(!strict.status.success());
    let err = String::from_utf8_lossy(&strict.stderr);
    assert!(err.contains("line 2: not JSON"), "{err}");
    // The good line before the bad one was written.
    assert_eq!(jsonl(&strict.stdout).len(), 1);

    let lenient = run(&["predict", "--bundle", b.to_str().unwrap(), "--lenient"], &input);
    assert!(lenient.status.success(), "{}", String::from_utf8_lossy(&lenient.stderr));
    let recs = jsonl(&lenient.stdout);
    assert_eq!(recs.len(), 7);
    assert!(recs[0].get("error").is_none());
    let errors: Vec<String> = recs[1..].iter().map(|r| r["error"].as_str().unwrap().to_string()).collect();
    assert!(errors[0].starts_with("line 2: not JSON"), "{errors:?}");
    assert!(errors[1].contains("line 3: not valid UTF-8 (at byte 14)"), "{errors:?}");
    assert!(errors[2].contains("line 4: input 0: empty text"), "{errors:?}");
    assert!(errors[3].contains("line 5: expected a JSON object"), "{errors:?}");
    assert!(errors[4].contains("line 6: neither a CKD-EHR row"), "{errors:?}");
    // An empty visit is refused, not answered with the model's prior (positive for "Shock").
    assert_eq!(
        errors[5],
        "line 7: visit: no diagnoses, medications or procedures; an empty visit carries nothing to predict from"
    );
    assert_eq!(recs.iter().map(|r| r["line"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6, 7]);
}

#[test]
fn info_prints_the_manifest() {
    let b = bundle();
    let out = run(&["info", "--bundle", b.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["precision"], "int8");
    assert_eq!(v["labels"].as_array().unwrap().len(), 25);
    assert_eq!(v["tokenizer"]["max_len"], 64);
    assert_eq!(v["knowledge_table"], true);
    let files: Vec<&str> = v["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(files, ["model.onnx", "tokenizer.json"]);
}

#[test]
fn eval_computes_core_metrics_and_latency() {
    let b = bundle();
    let data = fixture().join("rows.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("eval.json");
    let out = run(
        &["eval", "--bundle", b.to_str().unwrap(), "--data", data.to_str().unwrap(), "--json", json.to_str().unwrap()],
        b"",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("24 samples (24 truncated)"), "{stdout}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["n_samples"], 24);
    assert!(v["latency"]["median_ms_per_sample"].as_f64().unwrap() > 0.0);

    let engine = Engine::open(&b).unwrap();
    let recs = ckd_core::jsonl::parse(&std::fs::read_to_string(&data).unwrap()).unwrap();
    let mut probs = Vec::new();
    for r in &recs {
        probs.extend_from_slice(&engine.predict_text(&r.input).unwrap().probs);
    }
    let labels: Vec<_> = recs.iter().map(|r| r.labels).collect();
    let want = metrics::evaluate_label_sets(&probs, &labels, &engine.manifest().thresholds, 10).unwrap();
    assert_eq!(v["metrics"], serde_json::to_value(&want).unwrap());

    // A row with a bad `output` is an error naming the file and line.
    let bad = dir.path().join("bad.jsonl");
    let mut text = std::fs::read_to_string(&data).unwrap();
    text.push_str("{\"instruction\": \"i\", \"input\": \"x\", \"output\": \"nope\"}\n");
    std::fs::write(&bad, text).unwrap();
    let out = run(&["eval", "--bundle", b.to_str().unwrap(), "--data", bad.to_str().unwrap()], b"");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.jsonl") && err.contains("line 25"), "{err}");
}

#[test]
fn corrupt_bundle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["manifest.bin", "model.onnx", "tokenizer.json"] {
        std::fs::copy(bundle().join(f), dir.path().join(f)).unwrap();
    }
    let tok = dir.path().join("tokenizer.json");
    let mut t = std::fs::read(&tok).unwrap();
    t.push(b' ');
    std::fs::write(&tok, t).unwrap();
    let out = run(&["info", "--bundle", dir.path().to_str().unwrap()], b"");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tokenizer.json: sha256 mismatch"), "{err}");
}

/// Blank and whitespace-only lines (LF or CRLF) get no record, with or without `--lenient`; the
/// records keep the input's line numbers; a byte-order mark is skipped.
#[test]
fn blank_lines_get_no_record_in_either_mode() {
    let b = bundle();
    let row = serde_json::to_string(&rows()[0]).unwrap();
    let input = format!("\u{feff}{row}\n\n  \t \n\r\n{VISIT}\n   ");
    for mode in [None, Some("--lenient")] {
        let mut args = vec!["predict", "--bundle", b.to_str().unwrap()];
        args.extend(mode);
        let out = run(&args, input.as_bytes());
        assert!(out.status.success(), "{mode:?}: {}", String::from_utf8_lossy(&out.stderr));
        let recs = jsonl(&out.stdout);
        assert_eq!(recs.iter().map(|r| r["line"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 5], "{mode:?}");
        assert!(recs.iter().all(|r| r.get("error").is_none()), "{mode:?}: {recs:?}");
    }
}

/// A failing stderr (`2>/dev/full`) is no panic: an error exits with status 1, as with a
/// working stderr.
#[test]
fn failing_stderr_keeps_the_exit_status() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("NOT RUN: no /dev/full");
        return;
    };
    let missing = tempfile::tempdir().unwrap().path().join("no-bundle");
    for args in
        [vec!["info", "--bundle", missing.to_str().unwrap()], vec!["predict", "--bundle", missing.to_str().unwrap()]]
    {
        let out = run_with_stderr(&args, b"", Stdio::from(full.try_clone().unwrap()));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
    }
}

/// Each cause is printed once, and a damaged single-file bundle is named.
#[test]
fn errors_print_each_cause_once_and_name_the_packed_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-bundle");
    let out = run(&["info", "--bundle", missing.to_str().unwrap()], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    let empty = dir.path().join("empty.ckdb");
    std::fs::write(&empty, b"").unwrap();
    let out = run(&["info", "--bundle", empty.to_str().unwrap()], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("empty.ckdb") && err.contains("packed bundle index"), "{err}");
    assert!(!err.contains("manifest.bin"), "{err}");
}

/// A reader that closes stdout before the first answer (`ckd-edge predict ... | head -0`) ends
/// the run with status 0 and no panic or error message (not exit 1, "Broken pipe").
#[test]
fn predict_ends_quietly_when_stdout_is_closed() {
    let b = bundle();
    let line = serde_json::to_string(&rows()[0]).unwrap();
    let input = format!("{line}\n").repeat(200);
    let input_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input_file.path(), input).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ckd-edge"))
        .args(["predict", "--bundle", b.to_str().unwrap(), "--input", input_file.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the only read end: every write now fails with EPIPE
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
}

/// A diagnosis given by code only is rendered with its category title (not dropped, which would
/// give the same answer as an empty visit); an item rendered as a bare code is listed in the
/// record's `unknown_codes`; an item with neither code nor title is an error naming it.
#[test]
fn coded_items_are_rendered_and_unknown_codes_reported() {
    let b = bundle();
    let visit = |dx: &str| format!(r#"{{"diagnoses": [{dx}], "medications": ["Furosemide"], "procedures": []}}"#);
    let lines = [
        visit(r#"{"code": "4280", "title": ""}"#),
        visit(r#"{"code": "428.0", "title": "Heart failure"}"#),
        visit(""),
        visit(r#"{"code": "00099"}"#),
        visit(r#"{"code": "4280"}, {"title": " "}"#),
    ];
    let out = run(&["predict", "--bundle", b.to_str().unwrap(), "--lenient"], lines.join("\n").as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recs = jsonl(&out.stdout);
    assert_eq!(recs.len(), 5);
    let (code_only, titled, empty) = (&recs[0], &recs[1], &recs[2]);
    assert_eq!(code_only["probabilities"], titled["probabilities"]);
    assert_eq!(code_only["tokens"], titled["tokens"]);
    assert!(code_only["tokens"].as_u64() > empty["tokens"].as_u64(), "{code_only} vs {empty}");
    assert_eq!(code_only["unknown_codes"], serde_json::json!([]));
    assert_eq!(recs[3]["unknown_codes"], serde_json::json!([{"item": "diagnoses[0]", "code": "00099"}]));
    assert!(recs[3].get("error").is_none(), "{}", recs[3]);
    let err = recs[4]["error"].as_str().unwrap();
    assert!(err.contains("line 5") && err.contains("diagnoses[1]: neither a code nor a title"), "{err}");
    // The library renders the same way.
    let engine = Engine::open(&b).unwrap();
    let v: ckd_core::Visit = serde_json::from_str(&lines[0]).unwrap();
    let p = engine.predict(&v).unwrap();
    assert_eq!(code_only["tokens"].as_u64().unwrap() as usize, p.tokens);
}

/// A line over `--max-line-bytes` is a bad line (an error record under `--lenient`, which then
/// reads on) and is never held whole; `--lenient` ends with a count.
#[test]
fn over_long_lines_are_bad_lines_and_lenient_counts() {
    let b = bundle();
    let good = r#"{"input": "Diseases: Essential hypertension. Medications: None. Surgical operations: None."}"#;
    let long = format!(r#"{{"input": "{}"}}"#, "word ".repeat(400));
    let input = format!("{good}\n{long}\r\n\n{good}\nnot json\n");
    let args = ["predict", "--bundle", b.to_str().unwrap(), "--max-line-bytes", "1000"];
    let strict = run(&args, input.as_bytes());
    let err = String::from_utf8_lossy(&strict.stderr);
    assert_eq!(strict.status.code(), Some(1), "{err}");
    assert!(err.contains("line 2: longer than 1000 bytes (--max-line-bytes)"), "{err}");
    assert_eq!(jsonl(&strict.stdout).len(), 1);

    let mut lenient_args = args.to_vec();
    lenient_args.push("--lenient");
    let out = run(&lenient_args, input.as_bytes());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let recs = jsonl(&out.stdout);
    assert_eq!(recs.iter().map(|r| r["line"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 4, 5]);
    assert!(recs[1]["error"].as_str().unwrap().contains("longer than 1000 bytes"), "{}", recs[1]);
    assert_eq!(recs[2]["probabilities"], recs[0]["probabilities"], "the line after the long one is read whole");
    assert!(err.contains("ckd-edge predict: 5 lines read, 2 predicted, 2 failed"), "{err}");
    // The default limit is 1 MiB, and a line ending exactly at it is read.
    let at = format!(r#"{{"input": "{}"}}"#, "a ".repeat(200));
    let limit = at.len().to_string();
    let ok = run(&["predict", "--bundle", b.to_str().unwrap(), "--max-line-bytes", &limit], at.as_bytes());
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let help = run(&["predict", "--help"], b"");
    assert!(String::from_utf8_lossy(&help.stdout).contains("1048576"));
}

/// An endless line (`--input /dev/zero`) is refused at the limit instead of filling memory.
#[test]
fn an_endless_line_stops_at_the_limit() {
    if !Path::new("/dev/zero").exists() {
        eprintln!("NOT RUN: no /dev/zero");
        return;
    }
    let b = bundle();
    let out = run(&["predict", "--bundle", b.to_str().unwrap(), "--input", "/dev/zero"], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("line 1: longer than 1048576 bytes"), "{err}");
}

/// Runs `ckd-edge args`, killed after 30 s (a hang fails the test instead of blocking it).
fn run_bounded(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ckd-edge"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed().as_secs() > 30 {
            child.kill().unwrap();
            panic!("ckd-edge {args:?} hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A bundle file (or the bundle) that is a FIFO is refused, saying what it is, instead of
/// blocking on the read.
#[test]
fn a_fifo_bundle_file_is_refused_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("bundle");
    std::fs::create_dir(&copy).unwrap();
    for e in std::fs::read_dir(bundle()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
    }
    let manifest = copy.join(ckd_core::bundle::MANIFEST_FILE);
    std::fs::remove_file(&manifest).unwrap();
    let fifo = dir.path().join("fifo.ckdb");
    for p in [&manifest, &fifo] {
        match Command::new("mkfifo").arg(p).status() {
            Ok(s) if s.success() => {}
            _ => {
                eprintln!("NOT RUN: mkfifo unavailable");
                return;
            }
        }
    }
    for (bundle, named) in [(&copy, &manifest), (&fifo, &fifo)] {
        let out = run_bounded(&["info", "--bundle", bundle.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(named.to_str().unwrap()) && err.contains("is a FIFO (named pipe), not a regular file"),
            "{err}"
        );
    }
}

/// `ckd-edge bench`: one row per path x token count, inputs of exactly the asked token count,
/// the kernels the engine picked (the stock path names tract), every timing in the JSON; a
/// token count over the bundle's maximum length is an error naming both.
#[test]
fn bench_times_each_path_and_token_count() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let b = bundle();
    let args = ["bench", "--bundle", b.to_str().unwrap(), "--seq", "16,30", "--runs", "4", "--warmup", "1", "--json"];
    let out = run(&[&args[..], &[json.to_str().unwrap()]].concat(), b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| fused") || l.starts_with("| stock")).collect();
    assert_eq!(rows.len(), 4, "{table}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let results = doc["results"].as_array().unwrap();
    let got: Vec<(&str, u64)> =
        results.iter().map(|r| (r["path"].as_str().unwrap(), r["tokens"].as_u64().unwrap())).collect();
    assert_eq!(got, [("fused", 16), ("fused", 30), ("stock", 16), ("stock", 30)]);
    for r in results {
        let runs = r["runs_ms"].as_array().unwrap();
        assert_eq!(runs.len(), 4);
        assert!(runs.iter().all(|x| x.as_f64().unwrap() > 0.0));
        let (min, p50, p99) =
            (r["min_ms"].as_f64().unwrap(), r["p50_ms"].as_f64().unwrap(), r["p99_ms"].as_f64().unwrap());
        assert!(min <= p50 && p50 <= p99, "{r}");
    }
    assert_eq!(results[2]["kernels"]["int8 linear"], "tract");
    assert!(doc["peak_rss_kb"].as_u64().is_some_and(|kb| kb > 0) || !cfg!(target_os = "linux"));

    let out = run(&["bench", "--bundle", b.to_str().unwrap(), "--seq", "5000", "--paths", "fused"], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot make a 5000-token input") && err.contains("truncates inputs at 64 tokens"), "{err}");
}

/// `explain`: the same prediction fields as `predict`, every concept with its span, and per
/// top phenotype the concepts ranked by `Engine::occlude`'s effects; a text not in the layout
/// is a bad line named by number (or an error record with `--lenient`).
#[test]
fn explain_ranks_concepts_by_occlusion() {
    let b = bundle();
    let engine = Engine::open(&b).unwrap();
    let input = format!("{VISIT}\n{}\n", serde_json::to_string(&rows()[1]).unwrap());
    let out = run(&["explain", "--bundle", b.to_str().unwrap(), "--top", "3"], input.as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recs = jsonl(&out.stdout);
    assert_eq!(recs.len(), 2);
    let predicted = jsonl(&run(&["predict", "--bundle", b.to_str().unwrap()], input.as_bytes()).stdout);
    for (rec, pred) in recs.iter().zip(&predicted) {
        for key in ["line", "probabilities", "positives", "top_k", "truncated", "tokens"] {
            assert_eq!(rec[key], pred[key], "{key}");
        }
        let o = engine.occlude_text(rec["text"].as_str().unwrap()).unwrap();
        let concepts = rec["concepts"].as_array().unwrap();
        assert_eq!(concepts.len(), o.concepts.len());
        for (i, c) in concepts.iter().enumerate() {
            assert_eq!(c["text"].as_str(), o.concept_text(i));
            assert_eq!(c["start"].as_u64(), Some(o.concepts[i].start as u64));
            let effect: Vec<f32> = c["effect"].as_array().unwrap().iter().map(|e| e.as_f64().unwrap() as f32).collect();
            assert_eq!(effect, o.concepts[i].effect);
        }
        let occlusion = rec["occlusion"].as_array().unwrap();
        assert!(occlusion.len() >= ckd_edge::TOP_K);
        for (entry, &(l, _)) in occlusion.iter().zip(&o.prediction.top_k) {
            assert_eq!(entry["label"], ckd_core::PHENOTYPES[l as usize].name);
            let got: Vec<u64> =
                entry["concepts"].as_array().unwrap().iter().map(|c| c["concept"].as_u64().unwrap()).collect();
            let want: Vec<u64> = o.ranked(l).into_iter().take(3).map(|i| i as u64).collect();
            assert_eq!(got, want);
        }
    }
    assert_eq!(recs[0]["id"], "v-1");
    assert!(recs[0]["unknown_codes"].is_array());
    let bad = r#"{"input": "Diseases: hypertension."}"#;
    let out = run(&["explain", "--bundle", b.to_str().unwrap()], bad.as_bytes());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1: text: not in the CKD-EHR layout"));
    let out = run(&["explain", "--bundle", b.to_str().unwrap(), "--lenient"], bad.as_bytes());
    assert!(out.status.success());
    assert!(jsonl(&out.stdout)[0]["error"].as_str().unwrap().contains("not in the CKD-EHR layout"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ckd-edge explain: 1 lines read, 0 explained, 1 failed"));
}
