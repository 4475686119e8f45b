//! The committed corpus replays without a panic, and a short mutation run from it (fixed
//! seed, fixed number of inputs) finds none. CI also runs `ckd-fuzz` for a time budget.

use std::path::Path;
use std::time::Duration;

use ckd_fuzz::{
    bundle_file_target, bundle_target, fuzz, jsonl_target, manifest_target, mimic_csv_target, read_corpus, wire_target,
    BaseBundle, Budget, BundleFile,
};

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let c = read_corpus(&Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(name)).unwrap();
    assert!(c.len() >= 3, "corpus/{name} has {} inputs: regenerate it (see examples/write_corpus.rs)", c.len());
    c
}

fn budget(iterations: u64) -> Budget {
    // Iteration-bound: the time limit is only a guard.
    Budget { iterations, time: Duration::from_secs(3600) }
}

fn no_crash(r: ckd_fuzz::Report) {
    assert!(r.crashes.is_empty(), "crashes: {:?}", r.crashes);
    assert!(r.classes >= 2, "only {} outcome classes: the corpus does not exercise the target", r.classes);
}

#[test]
fn wire_corpus_and_mutations() {
    let crashes = tempfile::tempdir().unwrap();
    no_crash(fuzz("wire", &corpus("wire"), wire_target, budget(20_000), 1, 8192, crashes.path()));
}

#[test]
fn manifest_corpus_and_mutations() {
    let crashes = tempfile::tempdir().unwrap();
    no_crash(fuzz("manifest", &corpus("manifest"), manifest_target, budget(3_000), 2, 1 << 16, crashes.path()));
}

#[test]
fn bundle_corpus_and_mutations() {
    let base = BaseBundle::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/bundle-base")).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let crashes = tempfile::tempdir().unwrap();
    let f = |d: &[u8]| bundle_target(d, &base, scratch.path());
    no_crash(fuzz("bundle", &corpus("bundle"), f, budget(150), 3, 1 << 20, crashes.path()));
}

#[test]
fn a_panicking_target_is_caught_and_its_input_saved() {
    let crashes = tempfile::tempdir().unwrap();
    let target = |d: &[u8]| {
        assert!(!d.contains(&0xAB), "found the byte");
        String::from("ok")
    };
    let r = fuzz("selftest", &[vec![1, 2, 3]], target, budget(5_000), 4, 64, crashes.path());
    assert!(!r.crashes.is_empty(), "the mutator never produced 0xAB in 5000 inputs");
    let (path, msg) = &r.crashes[0];
    assert!(std::fs::read(path).unwrap().contains(&0xAB));
    assert!(msg.contains("found the byte"), "{msg}");
}

#[test]
fn bundle_tokenizer_corpus_and_mutations() {
    let base = BaseBundle::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/bundle-base")).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let crashes = tempfile::tempdir().unwrap();
    let f = |d: &[u8]| bundle_file_target(BundleFile::Tokenizer, d, &base, scratch.path());
    no_crash(fuzz("bundle-tokenizer", &corpus("bundle-tokenizer"), f, budget(150), 5, 1 << 20, crashes.path()));
}

#[test]
fn mimic_csv_corpus_and_mutations() {
    let crashes = tempfile::tempdir().unwrap();
    no_crash(fuzz("mimic-csv", &corpus("mimic-csv"), mimic_csv_target, budget(20_000), 6, 1 << 16, crashes.path()));
}

#[test]
fn jsonl_corpus_and_mutations() {
    let crashes = tempfile::tempdir().unwrap();
    no_crash(fuzz("jsonl", &corpus("jsonl"), jsonl_target, budget(20_000), 7, 1 << 16, crashes.path()));
}
