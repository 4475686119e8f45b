//! The synthetic cohort goes through the MIMIC-III ingest: every consecutive admission pair
//! becomes one sample whose id is an `oracle.jsonl` id and whose labels are the next visit's
//! phenotypes.

use std::collections::HashMap;

use ckd_trainer::ingest::{ingest_mimic, IngestConfig};
use ckd_trainer::synth::{generate, write_cohort, SynthConfig};

#[test]
fn synthetic_cohort_ingests_into_one_sample_per_oracle_pair() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig { patients: 400, seed: 17, readmission_scale: 2.0, ..Default::default() };
    let cohort = generate(&cfg);
    let summary = write_cohort(&cohort, dir.path()).unwrap();
    let mut progress = |_: &str, _: u64| {};
    let ing = ingest_mimic(dir.path(), &IngestConfig::default(), &mut progress).unwrap();
    let samples = &ing.file.samples;
    assert_eq!(samples.len(), summary.pairs);

    // Expected labels per sample id, from the in-memory cohort.
    let mut expected = HashMap::new();
    for o in &cohort.oracle {
        let a = &cohort.admissions[o.admission as usize];
        let b = &cohort.admissions[o.next_admission as usize];
        expected.insert(format!("{}-{}-{}", a.subject_id, a.hadm_id, b.hadm_id), b.phenotypes);
    }
    for s in samples {
        let labels = expected.get(&s.id).unwrap_or_else(|| panic!("sample {} has no oracle row", s.id));
        assert_eq!(s.labels, *labels, "{}", s.id);
    }
    let oracle = std::fs::read_to_string(dir.path().join("oracle.jsonl")).unwrap();
    assert_eq!(oracle.lines().count(), samples.len());
}
