//! Synthetic MIMIC-III-shaped cohort with a known next-visit oracle (`ckd synth`).
//!
//! [`generate`] draws a cohort in memory (pure and deterministic: the same [`SynthConfig`]
//! gives the same bytes); [`write_cohort`] writes it in the MIMIC-III CSV layout, so that the
//! ingest is the only path from a cohort to samples, plus `oracle.jsonl`, the exact probability
//! of every phenotype at visit `v+1` given what visit `v` shows.
//!
//! # Files
//!
//! `ADMISSIONS.csv`, `DIAGNOSES_ICD.csv`, `PRESCRIPTIONS.csv`, `PROCEDURES_ICD.csv`,
//! `D_ICD_DIAGNOSES.csv`, `D_ICD_PROCEDURES.csv`: UPPERCASE headers, the columns and column order
//! of MIMIC-III v1.4 (as in `shared/data/mimic-iii-demo`), `ROW_ID` first, CRLF line ends, times
//! `YYYY-MM-DD HH:MM:SS` (prescription dates at `00:00:00`), codes without dots, fields quoted by
//! the `csv` crate where needed. The dictionaries list every code the generator can emit (a
//! superset of the codes used) with their real ICD-9-CM short and long titles (copied from the
//! MIMIC-III dictionary at development time; nothing is read at run time).
//!
//! `oracle.jsonl`: one line per pair of consecutive admissions of a patient (ordered by
//! `ADMITTIME`): `{"id":"SUBJECT_ID-HADM_ID-NEXT_HADM_ID","p":[p_0, …, p_24]}` with `p` in label
//! order ([`ckd_core::PHENOTYPES`]).
//!
//! # Generative model
//!
//! Notation: labels `d ∈ {0..25}`; for visit `v` of a patient, `S_v` is the phenotype set,
//! `D_v` the set of catalogue drugs given, `P_v` the set of catalogue procedures, `σ(z) = 1/(1+e^-z)`.
//! All numbers live in the tables of this file (`TARGET_PREVALENCE`, `TYPE_PROFILE`,
//! `TRANSITION_*`, `DRUGS`, `PROCEDURES`, `NOISE_DIAGNOSES`).
//!
//! 1. **Latent type.** `k ~ Categorical(π)` over six patient types (cardiometabolic, renal,
//!    pulmonary, hepatic/GI, infection-prone, neuro/surgical/other), `π = TYPE_WEIGHT`.
//! 2. **Number of admissions.** With probability `1 - min(0.95, s·ρ_k)` the patient has one
//!    admission (`s` = [`SynthConfig::readmission_scale`], `ρ = TYPE_READMISSION`); otherwise
//!    `V = 2 + G` with `P(G ≥ g) = c^g` (`c = CONTINUE_READMISSION`), capped at
//!    [`SynthConfig::max_visits`]. With the defaults, 46,520 patients give ≈ 59,000 admissions
//!    (MIMIC-III: 58,976), 83 % of patients with a single one.
//! 3. **First visit.** `S_1,d ~ Bernoulli(q_{k,d})` independently, with
//!    `q_{k,d} = min(0.95, t_d · r_{k,d} / Σ_k' π_k' r_{k',d})`, where `t = TARGET_PREVALENCE`
//!    (MIMIC-like marginals) and `r = TYPE_PROFILE` (relative propensities). Without clipping the
//!    first-visit marginal of `d` is exactly `t_d`; the types create comorbidity clusters.
//!    The type shapes nothing else (not the transitions, not the emissions below).
//! 4. **Emissions given `S_v`** (the same at every visit):
//!    * phenotype codes: for each `d ∈ S_v`, one code drawn from `PHENOTYPE_CODES[d]` with the
//!      listed weights, and with probability `SECOND_CODE_P` a second, different one;
//!    * noise codes `m` (no benchmark phenotype): present with probability
//!      `1 - (1-β_m) Π_{d∈S_v} (1-α_{m,d})` (noisy-OR; `β` base rate, `α` per-phenotype rate);
//!      if a visit has no code at all, one noise code is drawn uniformly;
//!    * drugs `j`: given with probability `1 - (1-β_j) Π_{d∈S_v} (1-α_{j,d})`; a drug that is given
//!      gets 1 to 3 `PRESCRIPTIONS` rows (`1 + Bernoulli(0.35) + Bernoulli(0.10)`);
//!    * procedures `r`: performed with probability `1 - (1-β_r) Π_{d∈S_v} (1-α_{r,d})`.
//!    * in-hospital death, only at a patient's last admission, with probability `σ(x)`,
//!      `x = -4 + 1.8 I(shock) + 0.9 I(septicemia) + 0.9 I(respiratory failure) + 0.5 I(AMI)`
//!      `+ 0.7 I(cerebrovascular) + 0.4 I(liver)` (`I(d)` = 1 if `d ∈ S_v`);
//!    * administrative columns: `ADMISSION_TYPE` is ELECTIVE with probability 0.65 when a
//!      cardiac surgery procedure (3961, 3615) is performed, else 0.05; `DIAGNOSIS` names the
//!      first present phenotype of a priority list; the other columns (locations, insurance,
//!      ...) are drawn from fixed MIMIC-like lists. None of them enters the transition.
//! 5. **Transition** (Markov in the observed facts of visit `v`):
//!    `z_{v+1,d} = b_d + γ·|S_v| + Σ_{e∈S_v} W_{e,d} + Σ_{j∈D_v} U_{j,d} + Σ_{r∈P_v} R_{r,d}`,
//!    `p_{v+1,d} = σ(z_{v+1,d})`, and `S_{v+1,d} ~ Bernoulli(p_{v+1,d})` independently.
//!    `b = TRANSITION_BIAS` (calibrated so that next-visit prevalences are MIMIC-like),
//!    `γ = BURDEN` (sicker patients come back sicker), `W_{d,d}` the persistence of `d`
//!    (large for the chronic phenotypes of [`ckd_core::PHENOTYPES`], small for the acute ones),
//!    `W_{e,d}` (`e ≠ d`) clinical progressions (`TRANSITION_CROSS`, e.g. CKD → AKI,
//!    liver disease → GI hemorrhage, sepsis → shock), `U` the drug effects (a drug that treats
//!    `d` lowers `z_d`; some drugs raise other risks: vancomycin → AKI, heparin/warfarin/aspirin →
//!    GI hemorrhage, amiodarone → liver and lung disease, steroids → diabetes and pneumonia, loop
//!    diuretic → electrolyte disorders), `R` the procedure effects (e.g. long ventilation →
//!    pneumonia and tracheostomy status, central lines and TPN → septicemia, cardiac surgery →
//!    complications of care). Catalogue items without an entry, noise codes, times and
//!    administrative columns have no effect.
//!
//! **Oracle.** `oracle.jsonl` holds `p_{v+1}` exactly. It is the Bayes-optimal next-visit
//! predictor given visit `v` as the project's input text shows it, because (a) `S_v` is a
//! function of the visit's three-digit category titles: every category the generator emits maps
//! to a single phenotype or to none (categories that `ICD9_CCS` splits between phenotypes, such as
//! 250, 276, 401, 518, 785, 995, are used only with codes of one phenotype; a test checks it),
//! and every emitted phenotype code maps to its phenotype through `ICD9_CCS`; (b) drugs are
//! identified by `DRUG` and procedures by their distinct short titles; (c) given
//! `(S_v, D_v, P_v)` the next visit does not depend on the latent type, on earlier visits, or on
//! how many admissions the patient has (that number is drawn before any visit and is
//! independent of the visits given the type).
//!
//! # Identifiers and times
//!
//! `SUBJECT_ID = 10001 + patient index`; `HADM_ID`s are a random permutation of
//! `100001 ..= 100000 + number of admissions` (not ordered by time, as in MIMIC); `ROW_ID`s
//! count from 1 in file order. Times are on MIMIC's shifted calendar: the first admission
//! starts at a uniform minute of the years 2100–2189, lengths of stay are log-normal
//! (`exp(1.2 + 0.05|S_v| + 0.7 ε)` days, at least 6 hours), gaps between a discharge and the
//! next admission are `1 + Exp(mean 300)` days (at most 3000), so admission times strictly increase per patient
//! and every admission starts after the previous discharge.

use std::io;
use std::path::PathBuf;

use ckd_core::labels::{LabelSet, NUM_LABELS, PHENOTYPES};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

mod catalogue;
mod files;
mod params;
#[cfg(test)]
mod tests;

use catalogue::*;
use files::days_from_civil;
pub use files::{write_cohort, COHORT_FILES};
use params::*;

// ---------------------------------------------------------------------------------------------
// Configuration, cohort, summary, errors.

/// Parameters of [`generate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SynthConfig {
    /// Number of patients (`SUBJECT_ID`s). Default: 46,520 (MIMIC-III).
    pub patients: usize,
    /// Seed of the ChaCha8 generator; the whole cohort is a function of the config.
    pub seed: u64,
    /// Most admissions per patient (at least 1). Default 8.
    pub max_visits: usize,
    /// Multiplies every type's probability of a second admission (clipped at 0.95).
    /// Default 1.0 (MIMIC-like: ≈ 1.27 admissions per patient); tests raise it to get more pairs.
    pub readmission_scale: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig { patients: 46_520, seed: 0, max_visits: 8, readmission_scale: 1.0 }
    }
}

/// One admission (one `ADMISSIONS` row) with the facts the generator drew for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    /// `SUBJECT_ID`.
    pub subject_id: u32,
    /// `HADM_ID`.
    pub hadm_id: u32,
    /// `ADMITTIME`, minutes since 1970-01-01 00:00 (on MIMIC's shifted calendar).
    pub admit_min: i64,
    /// `DISCHTIME`, minutes since 1970-01-01 00:00; `> admit_min`.
    pub disch_min: i64,
    /// `EDREGTIME` and `EDOUTTIME` (minutes), for admissions through the emergency room.
    pub ed_min: Option<(i64, i64)>,
    /// Died in hospital (`DEATHTIME = DISCHTIME`, `HOSPITAL_EXPIRE_FLAG = 1`); only a last admission.
    pub died: bool,
    /// `ADMISSION_TYPE`.
    pub admission_type: &'static str,
    /// `ADMISSION_LOCATION`.
    pub admission_location: &'static str,
    /// `DISCHARGE_LOCATION`.
    pub discharge_location: &'static str,
    /// `INSURANCE`.
    pub insurance: &'static str,
    /// `LANGUAGE` (may be empty).
    pub language: &'static str,
    /// `RELIGION`.
    pub religion: &'static str,
    /// `MARITAL_STATUS` (may be empty).
    pub marital_status: &'static str,
    /// `ETHNICITY`.
    pub ethnicity: &'static str,
    /// `DIAGNOSIS` (free-text admitting diagnosis).
    pub diagnosis: &'static str,
    /// Latent patient type (0..6); not written to any file.
    pub patient_type: u8,
    /// Phenotypes of this visit (`S_v`); equal to `phenotypes_of` its diagnosis codes.
    pub phenotypes: LabelSet,
    /// Catalogue drugs given (bit `j` = `DRUGS[j]`).
    pub drugs: u128,
    /// Catalogue procedures performed (bit `r` = `PROCEDURES[r]`).
    pub procedures: u64,
}

/// One `DIAGNOSES_ICD` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiagnosisRow {
    /// Index into [`Cohort::admissions`].
    pub admission: u32,
    /// `SEQ_NUM` (1-based within the admission).
    pub seq_num: u16,
    /// `ICD9_CODE` (normalized, no dot).
    pub code: &'static str,
}

/// One `PRESCRIPTIONS` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrescriptionRow {
    /// Index into [`Cohort::admissions`].
    pub admission: u32,
    /// Index into the drug catalogue (see [`drug_names`]).
    pub drug: u8,
    /// `STARTDATE`, days since 1970-01-01.
    pub start_day: i64,
    /// `ENDDATE`, days since 1970-01-01 (`>= start_day`).
    pub end_day: i64,
}

/// One `PROCEDURES_ICD` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcedureRow {
    /// Index into [`Cohort::admissions`].
    pub admission: u32,
    /// `SEQ_NUM` (1-based within the admission).
    pub seq_num: u16,
    /// `ICD9_CODE` of the procedure (no dot).
    pub code: &'static str,
}

/// Oracle of one consecutive admission pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OracleRow {
    /// Index of visit `v` in [`Cohort::admissions`].
    pub admission: u32,
    /// Index of visit `v+1` in [`Cohort::admissions`].
    pub next_admission: u32,
    /// `P(phenotype d at v+1 | visit v)`, label order, each in (0, 1).
    pub p: [f64; NUM_LABELS],
}

/// A generated cohort, in memory. Rows are in file order: admissions grouped by patient and
/// ordered by time, the other tables grouped by admission in that order.
#[derive(Debug, Clone, PartialEq)]
pub struct Cohort {
    /// The config it was generated from.
    pub config: SynthConfig,
    /// Number of patients.
    pub patients: usize,
    /// `ADMISSIONS` rows.
    pub admissions: Vec<Admission>,
    /// `DIAGNOSES_ICD` rows.
    pub diagnoses: Vec<DiagnosisRow>,
    /// `PRESCRIPTIONS` rows.
    pub prescriptions: Vec<PrescriptionRow>,
    /// `PROCEDURES_ICD` rows.
    pub procedures: Vec<ProcedureRow>,
    /// One row per consecutive admission pair (same patient, ordered by time).
    pub oracle: Vec<OracleRow>,
}

/// Prevalence of one label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelPrevalence {
    /// Official phenotype name.
    pub label: &'static str,
    /// Fraction of all admissions with the phenotype.
    pub admissions: f64,
    /// Fraction of next visits (visit `v+1` of the pairs, i.e. the sample labels) with it.
    pub next_visit: f64,
    /// Mean oracle probability over the pairs (matches `next_visit` up to sampling noise).
    pub oracle_mean: f64,
}

/// What [`write_cohort`] wrote (also available as [`Cohort::summary`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SynthSummary {
    /// Number of patients.
    pub patients: usize,
    /// `ADMISSIONS` rows.
    pub admissions: usize,
    /// `DIAGNOSES_ICD` rows.
    pub diagnosis_rows: usize,
    /// `PRESCRIPTIONS` rows.
    pub prescription_rows: usize,
    /// `PROCEDURES_ICD` rows.
    pub procedure_rows: usize,
    /// Consecutive admission pairs (= samples, = `oracle.jsonl` lines).
    pub pairs: usize,
    /// Macro ROC-AUC of the oracle on the pairs' next-visit labels (the ceiling for any model);
    /// `None` when no label has both classes.
    pub oracle_macro_auc: Option<f64>,
    /// Per-label prevalence, label order.
    pub prevalence: Vec<LabelPrevalence>,
}

/// Error writing a cohort; names the file.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// Creating the output directory failed.
    #[error("cannot create output directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Writing, syncing or renaming a file failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file (its final name).
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The CSV writer failed.
    #[error("cannot write CSV {}: {source}", path.display())]
    Csv {
        /// The file (its final name).
        path: PathBuf,
        /// The CSV error.
        source: csv::Error,
    },
}

// ---------------------------------------------------------------------------------------------
// The model.

/// Dense form of the transition parameters (`b`, `W`, `U`, `R`) and the first-visit `q`.
struct Model {
    first: [[f64; NUM_LABELS]; TYPES],
    bias: [f64; NUM_LABELS],
    w: [[f64; NUM_LABELS]; NUM_LABELS],
    drug_effect: Vec<[f64; NUM_LABELS]>,
    procedure_effect: Vec<[f64; NUM_LABELS]>,
}

impl Model {
    fn standard() -> Model {
        Model::with_bias(TRANSITION_BIAS)
    }

    fn with_bias(bias: [f64; NUM_LABELS]) -> Model {
        let mut first = [[0.0; NUM_LABELS]; TYPES];
        for d in 0..NUM_LABELS {
            let norm: f64 = (0..TYPES).map(|k| TYPE_WEIGHT[k] * TYPE_PROFILE[k][d]).sum();
            for k in 0..TYPES {
                first[k][d] = (TARGET_PREVALENCE[d] * TYPE_PROFILE[k][d] / norm).min(0.95);
            }
        }
        let mut w = [[0.0; NUM_LABELS]; NUM_LABELS];
        for d in 0..NUM_LABELS {
            w[d][d] = TRANSITION_SELF[d];
        }
        for &(e, d, x) in TRANSITION_CROSS {
            w[e][d] += x;
        }
        let dense = |effect: &[(usize, f64)]| {
            let mut v = [0.0; NUM_LABELS];
            for &(d, x) in effect {
                v[d] += x;
            }
            v
        };
        Model {
            first,
            bias,
            w,
            drug_effect: DRUGS.iter().map(|j| dense(j.effect)).collect(),
            procedure_effect: PROCEDURES.iter().map(|r| dense(r.effect)).collect(),
        }
    }

    /// `p_{v+1} = σ(b + γ|S| + Σ_{e∈S} W_e + Σ_{j∈D} U_j + Σ_{r∈P} R_r)`.
    fn next_probabilities(&self, s: LabelSet, drugs: u128, procedures: u64) -> [f64; NUM_LABELS] {
        let mut z = self.bias;
        let burden = BURDEN * s.len() as f64;
        for zd in z.iter_mut() {
            *zd += burden;
        }
        for e in s.iter() {
            add(&mut z, &self.w[e as usize]);
        }
        let mut m = drugs;
        while m != 0 {
            add(&mut z, &self.drug_effect[m.trailing_zeros() as usize]);
            m &= m - 1;
        }
        let mut m = procedures;
        while m != 0 {
            add(&mut z, &self.procedure_effect[m.trailing_zeros() as usize]);
            m &= m - 1;
        }
        z.map(sigmoid)
    }
}

fn add(z: &mut [f64; NUM_LABELS], x: &[f64; NUM_LABELS]) {
    for (a, b) in z.iter_mut().zip(x) {
        *a += b;
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Noisy-OR emission probability `1 - (1-β) Π_{d∈S} (1-α_d)`.
fn emission_probability(base: f64, given: &[(usize, f64)], s: LabelSet) -> f64 {
    let mut q = 1.0 - base;
    for &(d, a) in given {
        if s.contains(d as u8) {
            q *= 1.0 - a;
        }
    }
    1.0 - q
}

/// Names (`PRESCRIPTIONS.DRUG`) of the drug catalogue, in catalogue order (bit order of
/// [`Admission::drugs`], index of [`PrescriptionRow::drug`]).
pub fn drug_names() -> impl Iterator<Item = &'static str> {
    DRUGS.iter().map(|j| j.drug)
}

/// ICD-9 codes of the procedure catalogue, in catalogue order (bit order of
/// [`Admission::procedures`]).
pub fn procedure_codes() -> impl Iterator<Item = &'static str> {
    PROCEDURES.iter().map(|r| r.code)
}

/// The oracle for a visit described by its facts: `P(phenotype d at the next visit)` in label
/// order, given the visit's phenotypes, its drugs (`PRESCRIPTIONS.DRUG` names, duplicates
/// allowed) and its procedure codes (`PROCEDURES_ICD.ICD9_CODE`). Names outside the catalogues
/// have no effect in the model and are ignored. Equal to the `oracle.jsonl` row of a pair whose
/// first visit has these facts.
pub fn oracle_probabilities(phenotypes: LabelSet, drugs: &[&str], procedure_codes: &[&str]) -> [f64; NUM_LABELS] {
    let mut dm = 0u128;
    for name in drugs {
        if let Some(j) = DRUGS.iter().position(|x| x.drug == *name) {
            dm |= 1 << j;
        }
    }
    let mut pm = 0u64;
    for code in procedure_codes {
        if let Some(r) = PROCEDURES.iter().position(|x| x.code == *code) {
            pm |= 1 << r;
        }
    }
    Model::standard().next_probabilities(phenotypes, dm, pm)
}

// ---------------------------------------------------------------------------------------------
// Sampling.

fn bernoulli(rng: &mut ChaCha8Rng, p: f64) -> bool {
    rng.random::<f64>() < p
}

/// Index drawn with probability proportional to `weights`.
fn pick_index(rng: &mut ChaCha8Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[(T, f64)]) -> T {
    let total: f64 = items.iter().map(|x| x.1).sum();
    let mut u = rng.random::<f64>() * total;
    for &(x, w) in items {
        if u < w {
            return x;
        }
        u -= w;
    }
    items[items.len() - 1].0
}

fn pick_code(rng: &mut ChaCha8Rng, codes: &[(&'static str, u32)]) -> &'static str {
    let total: u32 = codes.iter().map(|c| c.1).sum();
    let mut u = rng.random_range(0..total);
    for &(c, w) in codes {
        if u < w {
            return c;
        }
        u -= w;
    }
    codes[codes.len() - 1].0
}

/// Standard normal (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

const MINUTES_PER_DAY: i64 = 1440;
const FIRST_SUBJECT_ID: u32 = 10_001;
const FIRST_HADM_ID: u32 = 100_001;
const PROCEDURE_CABG: [&str; 2] = ["3961", "3615"];

/// Draws a cohort. Pure and deterministic: the result is a function of `cfg` only.
pub fn generate(cfg: &SynthConfig) -> Cohort {
    generate_with(cfg, &Model::standard())
}

fn generate_with(cfg: &SynthConfig, model: &Model) -> Cohort {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let max_visits = cfg.max_visits.max(1);
    let scale = if cfg.readmission_scale.is_finite() { cfg.readmission_scale.max(0.0) } else { 1.0 };
    let cap = cfg.patients + cfg.patients / 3;
    let mut cohort = Cohort {
        config: cfg.clone(),
        patients: cfg.patients,
        admissions: Vec::with_capacity(cap),
        diagnoses: Vec::with_capacity(cap * 8),
        prescriptions: Vec::with_capacity(cap * 16),
        procedures: Vec::with_capacity(cap),
        oracle: Vec::with_capacity(cfg.patients / 3),
    };
    let cabg_mask: u64 =
        PROCEDURES.iter().enumerate().filter(|(_, r)| PROCEDURE_CABG.contains(&r.code)).fold(0, |m, (i, _)| m | 1 << i);
    let first_day = days_from_civil(2100, 1, 1);
    let last_first_day = days_from_civil(2190, 1, 1);
    let mut codes: Vec<&'static str> = Vec::with_capacity(64);

    for i in 0..cfg.patients {
        let who = draw_patient(&mut rng, i);
        let k = who.patient_type as usize;
        let mut visits = 1;
        if max_visits > 1 && bernoulli(&mut rng, (scale * TYPE_READMISSION[k]).min(0.95)) {
            visits = 2;
            while visits < max_visits && bernoulli(&mut rng, CONTINUE_READMISSION) {
                visits += 1;
            }
        }
        let mut admit =
            rng.random_range(first_day..last_first_day) * MINUTES_PER_DAY + rng.random_range(0..MINUTES_PER_DAY);
        let mut s = LabelSet::EMPTY;
        for d in 0..NUM_LABELS {
            if bernoulli(&mut rng, model.first[k][d]) {
                s.insert(d as u8);
            }
        }
        for v in 0..visits {
            let last = v + 1 == visits;
            draw_visit(&mut rng, &mut cohort, &who, VisitState { s, admit, last, cabg_mask }, &mut codes);
            if !last {
                (s, admit) = transition(&mut rng, model, &mut cohort);
            }
        }
    }

    // HADM_IDs: a random permutation, so that they do not follow time.
    let n = cohort.admissions.len();
    let mut ids: Vec<u32> = (0..n as u32).collect();
    for a in (1..n).rev() {
        let b = rng.random_range(0..=a);
        ids.swap(a, b);
    }
    for (adm, id) in cohort.admissions.iter_mut().zip(ids) {
        adm.hadm_id = FIRST_HADM_ID.wrapping_add(id);
    }
    cohort
}

/// A patient's fixed columns: the latent type and the demographics every admission repeats.
struct PatientDraw {
    subject_id: u32,
    patient_type: u8,
    insurance: &'static str,
    language: &'static str,
    religion: &'static str,
    marital_status: &'static str,
    ethnicity: &'static str,
}

/// Patient `i`'s type `k ~ π` and demographics (in this draw order).
fn draw_patient(rng: &mut ChaCha8Rng, i: usize) -> PatientDraw {
    let k = pick_index(rng, &TYPE_WEIGHT);
    PatientDraw {
        subject_id: FIRST_SUBJECT_ID.wrapping_add(i as u32),
        patient_type: k as u8,
        insurance: pick(rng, INSURANCE),
        language: pick(rng, LANGUAGE),
        religion: pick(rng, RELIGION),
        marital_status: pick(rng, MARITAL_STATUS),
        ethnicity: pick(rng, ETHNICITY),
    }
}

/// What a visit is drawn from: its phenotypes `S_v`, admission time (minutes), whether it is
/// the patient's last, and the bit mask of the CABG procedures (which make elective admissions
/// likely).
#[derive(Clone, Copy)]
struct VisitState {
    s: LabelSet,
    admit: i64,
    last: bool,
    cabg_mask: u64,
}

/// Draws visit `S_v`'s emissions (drugs, procedures, diagnosis codes), times and administrative
/// columns, and appends its rows to `cohort` (its admission last). `codes` is scratch space.
fn draw_visit(
    rng: &mut ChaCha8Rng,
    cohort: &mut Cohort,
    who: &PatientDraw,
    st: VisitState,
    codes: &mut Vec<&'static str>,
) {
    let (s, admit) = (st.s, st.admit);
    let idx = cohort.admissions.len() as u32;
    let mut drugs = 0u128;
    for (j, drug) in DRUGS.iter().enumerate() {
        if bernoulli(rng, emission_probability(drug.base, drug.given, s)) {
            drugs |= 1 << j;
        }
    }
    let mut procedures = 0u64;
    for (r, proc_) in PROCEDURES.iter().enumerate() {
        if bernoulli(rng, emission_probability(proc_.base, proc_.given, s)) {
            procedures |= 1 << r;
        }
    }
    draw_diagnosis_codes(rng, s, codes);
    for (seq, code) in codes.iter().enumerate() {
        cohort.diagnoses.push(DiagnosisRow { admission: idx, seq_num: seq as u16 + 1, code });
    }

    let los_days = (1.2 + 0.05 * s.len() as f64 + 0.7 * normal(rng)).exp();
    let los = ((los_days * MINUTES_PER_DAY as f64) as i64).clamp(360, 200 * MINUTES_PER_DAY);
    let disch = admit + los;
    push_prescriptions(rng, cohort, idx, drugs, admit.div_euclid(MINUTES_PER_DAY), disch.div_euclid(MINUTES_PER_DAY));
    let mut m = procedures;
    let mut seq = 0u16;
    while m != 0 {
        let r = m.trailing_zeros() as usize;
        m &= m - 1;
        seq += 1;
        cohort.procedures.push(ProcedureRow { admission: idx, seq_num: seq, code: PROCEDURES[r].code });
    }

    let adm = draw_administrative(rng, st, procedures);
    cohort.admissions.push(Admission {
        subject_id: who.subject_id,
        hadm_id: 0, // assigned once every admission is drawn
        admit_min: admit,
        disch_min: disch,
        ed_min: adm.ed_min,
        died: adm.died,
        admission_type: adm.admission_type,
        admission_location: adm.admission_location,
        discharge_location: adm.discharge_location,
        insurance: who.insurance,
        language: who.language,
        religion: who.religion,
        marital_status: who.marital_status,
        ethnicity: who.ethnicity,
        diagnosis: adm.diagnosis,
        patient_type: who.patient_type,
        phenotypes: s,
        drugs,
        procedures,
    });
}

/// Diagnosis codes of a visit with phenotypes `s`, into `codes` (cleared first), in a random
/// order: one or two codes per phenotype, noise diagnoses, and one noise code when none.
fn draw_diagnosis_codes(rng: &mut ChaCha8Rng, s: LabelSet, codes: &mut Vec<&'static str>) {
    codes.clear();
    for d in s.iter() {
        let list = PHENOTYPE_CODES[d as usize];
        let first = pick_code(rng, list);
        codes.push(first);
        if list.len() > 1 && bernoulli(rng, SECOND_CODE_P) {
            loop {
                let second = pick_code(rng, list);
                if second != first {
                    codes.push(second);
                    break;
                }
            }
        }
    }
    for m in NOISE_DIAGNOSES {
        if bernoulli(rng, emission_probability(m.base, m.given, s)) {
            codes.push(m.code);
        }
    }
    if codes.is_empty() {
        codes.push(NOISE_DIAGNOSES[rng.random_range(0..NOISE_DIAGNOSES.len())].code);
    }
    for a in (1..codes.len()).rev() {
        let b = rng.random_range(0..=a);
        codes.swap(a, b);
    }
}

/// One to three prescription rows per drug of `drugs` (bit `j` = `DRUGS[j]`), each starting on a
/// day of the stay `[admit_day, disch_day]` and lasting one to three days.
fn push_prescriptions(
    rng: &mut ChaCha8Rng,
    cohort: &mut Cohort,
    idx: u32,
    drugs: u128,
    admit_day: i64,
    disch_day: i64,
) {
    let mut m = drugs;
    while m != 0 {
        let j = m.trailing_zeros() as u8;
        m &= m - 1;
        let rows = 1 + bernoulli(rng, 0.35) as usize + bernoulli(rng, 0.10) as usize;
        for _ in 0..rows {
            let start_day = rng.random_range(admit_day..=disch_day);
            let end_day = (start_day + 1 + rng.random_range(0..3)).min(disch_day + 1);
            cohort.prescriptions.push(PrescriptionRow { admission: idx, drug: j, start_day, end_day });
        }
    }
}

/// A visit's administrative columns.
struct AdministrativeDraw {
    admission_type: &'static str,
    admission_location: &'static str,
    ed_min: Option<(i64, i64)>,
    died: bool,
    discharge_location: &'static str,
    diagnosis: &'static str,
}

/// Admission type and location (elective mostly with CABG), emergency-room times, in-hospital
/// death (last visits only; more likely with shock, sepsis, respiratory failure, AMI, stroke,
/// liver disease), discharge location and the admitting diagnosis text.
fn draw_administrative(rng: &mut ChaCha8Rng, st: VisitState, procedures: u64) -> AdministrativeDraw {
    let (s, admit) = (st.s, st.admit);
    let elective_p = if procedures & st.cabg_mask != 0 { 0.65 } else { 0.05 };
    let (admission_type, admission_location) = if bernoulli(rng, elective_p) {
        ("ELECTIVE", "PHYS REFERRAL/NORMAL DELI")
    } else if bernoulli(rng, 0.03) {
        ("URGENT", "TRANSFER FROM HOSP/EXTRAM")
    } else {
        ("EMERGENCY", pick(rng, EMERGENCY_LOCATION))
    };
    let ed_min = if admission_location == "EMERGENCY ROOM ADMIT" {
        let reg = admit - rng.random_range(60..480);
        Some((reg, admit + rng.random_range(0..120)))
    } else {
        None
    };
    let has = |d: usize| s.contains(d as u8) as u8 as f64;
    let death_z = -4.0
        + 1.8 * has(SHOCK)
        + 0.9 * has(SEPSIS)
        + 0.9 * has(RESP_FAILURE)
        + 0.5 * has(AMI)
        + 0.7 * has(STROKE)
        + 0.4 * has(LIVER);
    let died = st.last && bernoulli(rng, sigmoid(death_z));
    let discharge_location = if died { "DEAD/EXPIRED" } else { pick(rng, DISCHARGE_LOCATION) };
    let diagnosis = match ADMIT_TEXT.iter().find(|(d, _)| s.contains(*d as u8)) {
        Some(&(_, text)) => text,
        None => ADMIT_TEXT_OTHER[rng.random_range(0..ADMIT_TEXT_OTHER.len())],
    };
    AdministrativeDraw { admission_type, admission_location, ed_min, died, discharge_location, diagnosis }
}

/// The transition from the last drawn admission (a function of `(S_v, D_v, P_v)` only): records
/// the oracle's probabilities, draws `S_{v+1}` and the next admission time (an exponential gap
/// of mean 300 days plus one, capped at 3,000).
fn transition(rng: &mut ChaCha8Rng, model: &Model, cohort: &mut Cohort) -> (LabelSet, i64) {
    let idx = cohort.admissions.len() as u32 - 1;
    let a = &cohort.admissions[idx as usize];
    let (s, drugs, procedures, disch) = (a.phenotypes, a.drugs, a.procedures, a.disch_min);
    let p = model.next_probabilities(s, drugs, procedures);
    cohort.oracle.push(OracleRow { admission: idx, next_admission: idx + 1, p });
    let mut next = LabelSet::EMPTY;
    for (d, pd) in p.iter().enumerate() {
        if bernoulli(rng, *pd) {
            next.insert(d as u8);
        }
    }
    let gap_days = 1.0 + 300.0 * -(1.0 - rng.random::<f64>()).ln();
    (next, disch + ((gap_days * MINUTES_PER_DAY as f64) as i64).min(3000 * MINUTES_PER_DAY))
}

// ---------------------------------------------------------------------------------------------
// Summary.

impl Cohort {
    /// Counts, per-label prevalences and the oracle's macro ROC-AUC on the pairs.
    pub fn summary(&self) -> SynthSummary {
        let n_adm = self.admissions.len().max(1) as f64;
        let n_pairs = self.oracle.len().max(1) as f64;
        let mut prevalence = Vec::with_capacity(NUM_LABELS);
        let mut aucs = Vec::with_capacity(NUM_LABELS);
        let mut scores = Vec::with_capacity(self.oracle.len());
        let mut targets = Vec::with_capacity(self.oracle.len());
        for (d, ph) in PHENOTYPES.iter().enumerate() {
            let l = d as u8;
            let adm = self.admissions.iter().filter(|a| a.phenotypes.contains(l)).count();
            scores.clear();
            targets.clear();
            for o in &self.oracle {
                scores.push(o.p[d]);
                targets.push(self.admissions[o.next_admission as usize].phenotypes.contains(l));
            }
            let next = targets.iter().filter(|t| **t).count();
            if let Some(auc) = roc_auc(&scores, &targets) {
                aucs.push(auc);
            }
            prevalence.push(LabelPrevalence {
                label: ph.name,
                admissions: adm as f64 / n_adm,
                next_visit: next as f64 / n_pairs,
                oracle_mean: scores.iter().sum::<f64>() / n_pairs,
            });
        }
        SynthSummary {
            patients: self.patients,
            admissions: self.admissions.len(),
            diagnosis_rows: self.diagnoses.len(),
            prescription_rows: self.prescriptions.len(),
            procedure_rows: self.procedures.len(),
            pairs: self.oracle.len(),
            oracle_macro_auc: if aucs.is_empty() { None } else { Some(aucs.iter().sum::<f64>() / aucs.len() as f64) },
            prevalence,
        }
    }
}

/// ROC-AUC of one label ([`ckd_core::metrics::binary_roc_auc`]); `None` without both classes.
fn roc_auc(scores: &[f64], targets: &[bool]) -> Option<f64> {
    let scores: Vec<f32> = scores.iter().map(|&s| s as f32).collect();
    let targets: Vec<u8> = targets.iter().map(|&t| u8::from(t)).collect();
    ckd_core::metrics::binary_roc_auc(&scores, &targets).ok().flatten()
}

/// The generator's true therapeutic drug effects: `(phenotype, drug)` for every drug whose
/// next-visit logit change `U_{j,d}` on phenotype `d` is negative (it lowers the chance that `d`
/// is present at the next visit). What the knowledge clauses should name
/// ([`knowledge_truth::score`]).
pub fn therapeutic_effects() -> Vec<(usize, &'static str)> {
    let mut out = Vec::new();
    for j in DRUGS {
        for &(d, w) in j.effect {
            if w < 0.0 {
                out.push((d, j.drug));
            }
        }
    }
    out.sort();
    out
}
