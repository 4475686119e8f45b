//! `firmware-examples/c-demo/main.c` compiled with the system C compiler (`cc`) against the
//! static library of this crate, run on the tiny test bundle: same probabilities and decisions
//! as the Rust engine; non-UTF-8 and empty input and a missing bundle give the library's error
//! codes and messages.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ckd_edge::Engine;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The static library cargo built for this test run: `<target>/<profile>/deps/libckd_edge_c.a`,
/// beside this test's executable (`<target>/<profile>/deps/c_demo-*`). `cargo test` leaves it
/// there; only `cargo build` also copies it up to `<target>/<profile>/` (which a clean CI
/// machine does not have, and which may be older than this test run's library).
fn static_lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let lib = deps.join("libckd_edge_c.a");
    assert!(lib.exists(), "{} not found", lib.display());
    lib
}

fn compile(dir: &Path) -> PathBuf {
    let exe = dir.join("c-demo");
    let out = Command::new("cc")
        .arg("-std=c99")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-I")
        .arg(repo().join("edge-runtime/capi/include"))
        .arg(repo().join("firmware-examples/c-demo/main.c"))
        .arg(static_lib())
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe)
        .output()
        .expect("running cc (the system C compiler)");
    assert!(out.status.success(), "cc failed:\n{}", String::from_utf8_lossy(&out.stderr));
    exe
}

fn run(exe: &Path, bundle: &Path, stdin: &[u8]) -> Output {
    let mut child = Command::new(exe)
        .arg(bundle)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn c_program_matches_the_rust_engine() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile(dir.path());
    let bundle = repo().join("edge-runtime/testdata/tiny/bundle");
    let engine = Engine::open(&bundle).unwrap();
    let rows =
        ckd_core::jsonl::parse(&std::fs::read_to_string(repo().join("edge-runtime/testdata/tiny/rows.jsonl")).unwrap())
            .unwrap();
    let short =
        "Diseases: Essential hypertension. Medications: None. Surgical operations: None. Medical knowledge: None.";
    for text in [rows[0].input.as_str(), rows[5].input.as_str(), short] {
        let out = run(&exe, &bundle, text.as_bytes());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let want = engine.predict_text(text).unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = stdout.lines().collect();
        let occlusion = engine.occlude_text(text).ok();
        let n_explained = occlusion.as_ref().map_or(0, |o| o.concepts.len().min(3));
        assert_eq!(lines.len(), 27 + n_explained, "{stdout}");
        for (l, line) in lines[..25].iter().enumerate() {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f[0], l.to_string());
            let p: f32 = f[1].parse().unwrap();
            assert!((p - want.probs[l]).abs() <= 1e-6, "label {l}: C {p} vs Rust {}", want.probs[l]);
            assert_eq!(f[2] == "1", want.positive.contains(l as u8), "label {l}");
            assert_eq!(f[3], ckd_core::PHENOTYPES[l].name);
        }
        assert_eq!(lines[25], format!("truncated\t{}", u8::from(want.truncated)));
        // The explanation through ckd_explain_text: the engine's occlusion, top label's 3 largest.
        match &occlusion {
            None => assert_eq!(lines[26], "concepts\tnone"),
            Some(o) => {
                assert_eq!(lines[26], format!("concepts\t{}", o.concepts.len()));
                let top = o.prediction.top_k[0].0;
                for (line, &i) in lines[27..].iter().zip(&o.ranked(top)) {
                    let f: Vec<&str> = line.split('\t').collect();
                    let c = &o.concepts[i];
                    assert_eq!(
                        (f[0], f[1], f[2]),
                        ("concept", c.start.to_string().as_str(), c.end.to_string().as_str())
                    );
                    let e: f32 = f[3].parse().unwrap();
                    assert!((e - c.effect[top as usize]).abs() <= 1e-6, "concept {i}: C {e}");
                }
            }
        }
    }

    let bad = run(&exe, &bundle, b"Diseases: caf\xe9.");
    assert_eq!(bad.status.code(), Some(3));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("error 2") && err.contains("not valid UTF-8 (at byte 13)"), "{err}");

    let empty = run(&exe, &bundle, b" \n");
    assert_eq!(empty.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("error 4: input 0: empty text"));

    let missing = run(&exe, &dir.path().join("nope"), b"x");
    assert_eq!(missing.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope/manifest.bin"));
}
