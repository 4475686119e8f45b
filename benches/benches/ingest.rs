//! Synthetic cohort generation and ingest of a MIMIC-III-sized cohort, CSV to samples
//! (knowledge clauses included). Patients: `CKD_BENCH_PATIENTS` (default 46,520, MIMIC-III's
//! count). Peak memory is measured by `scripts/bench_ingest.sh` (criterion measures time only).

use ckd_trainer::ingest::{ingest_mimic, IngestConfig};
use ckd_trainer::synth::{generate, SynthConfig};
use criterion::{criterion_group, criterion_main, Criterion};

fn patients() -> usize {
    std::env::var("CKD_BENCH_PATIENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(ckd_benches::MIMIC_PATIENTS)
}

fn synth(c: &mut Criterion) {
    let patients = patients();
    let mut g = c.benchmark_group("synth");
    g.sample_size(10);
    g.bench_function(format!("generate/{patients}_patients"), |b| {
        b.iter(|| generate(&SynthConfig { patients, seed: 7, ..Default::default() }))
    });
    g.finish();
}

fn ingest(c: &mut Criterion) {
    let patients = patients();
    let dir = tempfile::tempdir().expect("temp dir");
    ckd_benches::write_cohort(patients, dir.path()).expect("synthetic cohort");
    let mut g = c.benchmark_group("ingest");
    g.sample_size(10);
    g.bench_function(format!("mimic_csv_to_samples/{patients}_patients"), |b| {
        b.iter(|| ingest_mimic(dir.path(), &IngestConfig::default(), &mut |_, _| {}).expect("ingest"))
    });
    g.finish();
}

criterion_group!(benches, synth, ingest);
criterion_main!(benches);
