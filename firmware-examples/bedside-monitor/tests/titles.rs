//! The MIMIC-III demo's dictionaries load as the board's title tables (`--procedure-titles`,
//! `--diagnosis-titles`), with the titles `ckd ingest` renders.

use std::path::PathBuf;

/// The MIMIC-III demo directory from `CKD_MIMIC_DEMO` (scripts/test sets it), else `../shared`
/// beside the workspace. Missing: fails under CI, else says NOT RUN.
fn demo() -> Option<PathBuf> {
    let p = std::env::var_os("CKD_MIMIC_DEMO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/mimic-iii-demo"));
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!("CKD_MIMIC_DEMO / {} does not exist, and CI must run this test", p.display());
    }
    eprintln!("NOT RUN: {} not found (set CKD_MIMIC_DEMO)", p.display());
    None
}

#[test]
fn mimic_demo_dictionaries_load() {
    let Some(dir) = demo() else { return };
    for (name, code, title) in
        [("D_ICD_PROCEDURES.csv", "3995", "Hemodialysis"), ("D_ICD_DIAGNOSES.csv", "4280", "CHF NOS")]
    {
        let path = dir.join(name);
        let file = std::fs::File::open(&path).unwrap();
        let t = ckd_bedside_monitor::read_titles(name, std::io::BufReader::new(file)).unwrap();
        assert!(t.len() > 3000, "{name}: {} titles", t.len());
        assert_eq!(t.get(code).map(String::as_str), Some(title), "{name}");
    }
}
