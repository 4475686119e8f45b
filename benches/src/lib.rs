//! Criterion benchmarks of ckd-ehr live in `benches/benches/`; this library only holds shared
//! fixtures for them.

use std::path::Path;

/// Patients in a MIMIC-III-sized synthetic cohort (MIMIC-III v1.4 has 46,520 patients and
/// 58,976 admissions).
pub const MIMIC_PATIENTS: usize = 46_520;

/// Writes a synthetic cohort of `patients` patients into `dir` (seed 7).
pub fn write_cohort(patients: usize, dir: &Path) -> Result<(), ckd_trainer::synth::SynthError> {
    let cfg = ckd_trainer::synth::SynthConfig { patients, seed: 7, ..Default::default() };
    ckd_trainer::synth::write_cohort(&ckd_trainer::synth::generate(&cfg), dir).map(|_| ())
}
