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

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use ckd_core::labels::{LabelSet, NUM_LABELS, PHENOTYPES};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

// ---------------------------------------------------------------------------------------------
// Label indices (label order of `ckd_core::PHENOTYPES`; a test checks the names).

const AKI: usize = 0;
const STROKE: usize = 1;
const AMI: usize = 2;
const DYSRHYTHMIA: usize = 3;
const CKD: usize = 4;
const COPD: usize = 5;
const COMPLICATION: usize = 6;
const CONDUCTION: usize = 7;
const CHF: usize = 8;
const CAD: usize = 9;
const DM_COMPLICATED: usize = 10;
const DM: usize = 11;
const LIPID: usize = 12;
const HTN: usize = 13;
const FLUID: usize = 14;
const GI_BLEED: usize = 15;
const HTN_COMPLICATED: usize = 16;
const LIVER: usize = 17;
const LOWER_RESP: usize = 18;
const UPPER_RESP: usize = 19;
const PLEURISY: usize = 20;
const PNEUMONIA: usize = 21;
const RESP_FAILURE: usize = 22;
const SEPSIS: usize = 23;
const SHOCK: usize = 24;

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
// Model parameters.

/// Number of latent patient types.
const TYPES: usize = 6;

/// `π`: cardiometabolic, renal, pulmonary, hepatic/GI, infection-prone, neuro/surgical/other.
const TYPE_WEIGHT: [f64; TYPES] = [0.26, 0.12, 0.14, 0.10, 0.14, 0.24];

/// `ρ_k`: probability of a second admission, per type (sicker types come back more often).
const TYPE_READMISSION: [f64; TYPES] = [0.16, 0.30, 0.22, 0.26, 0.10, 0.08];

/// `c`: probability of one more admission after the second, third, ...
const CONTINUE_READMISSION: f64 = 0.38;

/// `t_d`: first-visit marginal prevalence (MIMIC-III benchmark-like), label order.
const TARGET_PREVALENCE: [f64; NUM_LABELS] = [
    0.21,  // AKI
    0.075, // STROKE
    0.10,  // AMI
    0.33,  // DYSRHYTHMIA
    0.13,  // CKD
    0.13,  // COPD
    0.20,  // COMPLICATION
    0.07,  // CONDUCTION
    0.27,  // CHF
    0.31,  // CAD
    0.09,  // DM_COMPLICATED
    0.19,  // DM
    0.28,  // LIPID
    0.41,  // HTN
    0.27,  // FLUID
    0.07,  // GI_BLEED
    0.13,  // HTN_COMPLICATED
    0.08,  // LIVER
    0.05,  // LOWER_RESP
    0.04,  // UPPER_RESP
    0.08,  // PLEURISY
    0.14,  // PNEUMONIA
    0.18,  // RESP_FAILURE
    0.14,  // SEPSIS
    0.07,  // SHOCK
];

/// `r_{k,d}`: relative propensity of phenotype `d` in type `k` (1 = neutral), label order.
#[rustfmt::skip]
const TYPE_PROFILE: [[f64; NUM_LABELS]; TYPES] = [
    // AKI STRK AMI  DYS  CKD  COPD CMPL COND CHF  CAD  DMc  DM   LIP  HTN  FLU  GIB  HTNc LIV  LRD  URD  PLR  PNA  RF   SEP  SHK
    [1.0, 1.0, 3.0, 2.0, 0.8, 0.6, 1.2, 2.0, 2.0, 3.0, 1.2, 1.8, 2.5, 1.8, 0.7, 0.5, 0.8, 0.3, 0.6, 0.5, 0.8, 0.5, 0.6, 0.3, 0.6], // cardiometabolic
    [2.5, 0.6, 0.8, 1.0, 5.0, 0.6, 1.0, 1.0, 1.8, 1.2, 3.0, 0.8, 1.2, 0.3, 2.0, 1.0, 5.0, 0.5, 0.6, 0.5, 1.0, 0.8, 0.8, 1.0, 0.8], // renal
    [0.8, 0.5, 0.5, 1.2, 0.6, 5.0, 0.8, 0.8, 1.2, 0.8, 0.6, 1.0, 0.8, 1.0, 1.0, 0.5, 0.6, 0.4, 3.0, 2.5, 2.0, 2.5, 3.0, 1.0, 0.8], // pulmonary
    [1.5, 0.4, 0.3, 0.6, 0.5, 0.5, 1.2, 0.5, 0.4, 0.4, 0.6, 1.0, 0.4, 0.7, 1.8, 5.0, 0.5, 7.0, 0.6, 0.6, 1.2, 0.8, 1.0, 1.2, 1.2], // hepatic/GI
    [2.0, 0.5, 0.5, 1.2, 0.8, 1.0, 1.2, 0.6, 0.8, 0.6, 1.0, 1.0, 0.5, 0.8, 2.0, 0.8, 0.8, 1.0, 1.0, 0.8, 1.2, 2.5, 2.2, 6.0, 5.0], // infection-prone
    [0.5, 3.5, 0.5, 0.8, 0.5, 0.6, 2.5, 0.8, 0.5, 0.7, 0.5, 0.8, 1.0, 1.2, 0.7, 1.0, 0.5, 0.5, 1.0, 1.5, 1.0, 0.6, 0.8, 0.3, 0.4], // neuro/surgical/other
];

/// `W_{d,d}`: persistence of each phenotype into the next visit, label order. Chronic
/// phenotypes (`PHENOTYPES[d].chronic`) get 3.8–4.8 (they persist), acute ones 1.5–2.2 (with the
/// intercepts, most acute episodes resolve by the next visit; a test checks the split).
const TRANSITION_SELF: [f64; NUM_LABELS] = [
    1.9, // AKI
    1.8, // STROKE
    1.5, // AMI
    4.3, // DYSRHYTHMIA (chronic)
    4.8, // CKD (chronic)
    4.5, // COPD (chronic)
    1.5, // COMPLICATION
    4.0, // CONDUCTION (chronic)
    2.2, // CHF (acute in the benchmark, but recurs)
    4.5, // CAD (chronic)
    3.8, // DM_COMPLICATED (chronic)
    4.5, // DM (chronic)
    4.2, // LIPID (chronic)
    4.2, // HTN (chronic)
    1.7, // FLUID
    1.9, // GI_BLEED
    4.3, // HTN_COMPLICATED (chronic)
    2.2, // LIVER
    1.8, // LOWER_RESP
    2.1, // UPPER_RESP
    1.5, // PLEURISY
    1.6, // PNEUMONIA
    1.7, // RESP_FAILURE
    1.7, // SEPSIS
    1.5, // SHOCK
];

/// `W_{e,d}`, `e ≠ d`: (from phenotype at visit v, to phenotype at visit v+1, logit change).
#[rustfmt::skip]
const TRANSITION_CROSS: &[(usize, usize, f64)] = &[
    (DM, DM_COMPLICATED, 1.12), (DM_COMPLICATED, CKD, 0.84), (DM_COMPLICATED, HTN_COMPLICATED, 0.56),
    (DM_COMPLICATED, CAD, 0.42), (DM, CAD, 0.28),
    (CKD, AKI, 1.12), (CKD, FLUID, 0.84), (CKD, HTN_COMPLICATED, 1.68), (CKD, CHF, 0.42), (CKD, DM_COMPLICATED, 0.42),
    (HTN_COMPLICATED, CKD, 1.68), (HTN_COMPLICATED, CHF, 0.42), (HTN_COMPLICATED, HTN, -1.5),
    (HTN, HTN_COMPLICATED, 0.42), (HTN, CAD, 0.28), (HTN, STROKE, 0.42),
    (CHF, AKI, 0.7), (CHF, FLUID, 0.56), (CHF, DYSRHYTHMIA, 0.7), (CHF, RESP_FAILURE, 0.56), (CHF, PLEURISY, 0.56),
    (CHF, HTN_COMPLICATED, 0.28),
    (CAD, AMI, 1.26), (CAD, CHF, 0.56), (CAD, COMPLICATION, 0.28),
    (AMI, CHF, 1.12), (AMI, CAD, 2.1), (AMI, DYSRHYTHMIA, 0.56), (AMI, SHOCK, 0.42),
    (DYSRHYTHMIA, STROKE, 0.7), (DYSRHYTHMIA, CHF, 0.56), (DYSRHYTHMIA, CONDUCTION, 0.56),
    (CONDUCTION, DYSRHYTHMIA, 0.7),
    (COPD, RESP_FAILURE, 1.4), (COPD, PNEUMONIA, 0.98), (COPD, LOWER_RESP, 0.56), (COPD, PLEURISY, 0.28),
    (PNEUMONIA, SEPSIS, 0.7), (PNEUMONIA, RESP_FAILURE, 0.84), (PNEUMONIA, PLEURISY, 0.56),
    (RESP_FAILURE, PNEUMONIA, 0.84), (RESP_FAILURE, COMPLICATION, 0.42), (RESP_FAILURE, UPPER_RESP, 0.7),
    (RESP_FAILURE, LOWER_RESP, 0.42),
    (SEPSIS, SHOCK, 0.84), (SEPSIS, AKI, 0.84), (SEPSIS, PNEUMONIA, 0.42), (SEPSIS, COMPLICATION, 0.42),
    (SHOCK, AKI, 0.7), (SHOCK, SEPSIS, 0.42), (SHOCK, RESP_FAILURE, 0.42),
    (LIVER, GI_BLEED, 1.4), (LIVER, FLUID, 0.7), (LIVER, AKI, 0.7), (LIVER, SEPSIS, 0.42),
    (GI_BLEED, LIVER, 0.42), (GI_BLEED, FLUID, 0.28),
    (FLUID, AKI, 0.42),
    (AKI, CKD, 0.98), (AKI, FLUID, 0.56),
    (COMPLICATION, SEPSIS, 0.56),
    (STROKE, PNEUMONIA, 0.56), (STROKE, HTN, 0.28), (STROKE, DYSRHYTHMIA, 0.28),
    (PLEURISY, RESP_FAILURE, 0.42), (PLEURISY, PNEUMONIA, 0.42),
    (LOWER_RESP, PNEUMONIA, 0.42),
    (LIPID, CAD, 0.42),
    (UPPER_RESP, PNEUMONIA, 0.28),
];

/// `γ`: logit change per phenotype present at visit v (disease burden).
const BURDEN: f64 = 0.06;

/// `b_d`: transition intercepts, label order (calibrated by the ignored test
/// `calibrate_transition_bias` so that next-visit prevalences are close to `TARGET_PREVALENCE`).
const TRANSITION_BIAS: [f64; NUM_LABELS] = [
    -3.41, -3.10, -2.46, -2.76, -5.20, -3.73, -2.31, -4.22, -2.44, -3.48, -3.75, -3.36, -2.87, -2.13, -2.45, -3.42,
    -4.51, -3.12, -3.55, -3.88, -3.15, -2.92, -2.73, -2.62, -3.23,
];

/// Probability that a present phenotype contributes a second, different diagnosis code.
const SECOND_CODE_P: f64 = 0.25;

// ---------------------------------------------------------------------------------------------
// Catalogues.

/// A drug: its `PRESCRIPTIONS` columns and its model parameters.
struct DrugDef {
    /// `DRUG` (the name the input text shows).
    drug: &'static str,
    /// `DRUG_TYPE, DRUG_NAME_POE, DRUG_NAME_GENERIC, FORMULARY_DRUG_CD, GSN, NDC, PROD_STRENGTH,
    /// DOSE_VAL_RX, DOSE_UNIT_RX, FORM_VAL_DISP, FORM_UNIT_DISP, ROUTE` (one real MIMIC-III row).
    rx: [&'static str; 12],
    /// `β_j`.
    base: f64,
    /// `α_{j,d}`: (phenotype, rate).
    given: &'static [(usize, f64)],
    /// `U_{j,d}`: (phenotype, next-visit logit change).
    effect: &'static [(usize, f64)],
}

/// A procedure: its ICD-9 code and titles and its model parameters.
struct ProcedureDef {
    code: &'static str,
    short: &'static str,
    long: &'static str,
    base: f64,
    given: &'static [(usize, f64)],
    /// `R_{r,d}`.
    effect: &'static [(usize, f64)],
}

/// A noise diagnosis code (its category has no benchmark phenotype): emission parameters only.
struct NoiseDef {
    code: &'static str,
    base: f64,
    given: &'static [(usize, f64)],
}

macro_rules! drug {
    ($drug:expr, [$($f:expr),* $(,)?], $base:expr, [$(($gl:expr, $gp:expr)),* $(,)?],
     [$(($el:expr, $ew:expr)),* $(,)?]) => {
        DrugDef { drug: $drug, rx: [$($f),*], base: $base, given: &[$(($gl, $gp)),*],
                  effect: &[$(($el, $ew)),*] }
    };
}

macro_rules! procedure {
    ($code:expr, $short:expr, $long:expr, $base:expr, [$(($gl:expr, $gp:expr)),* $(,)?],
     [$(($el:expr, $ew:expr)),* $(,)?]) => {
        ProcedureDef { code: $code, short: $short, long: $long, base: $base,
                       given: &[$(($gl, $gp)),*], effect: &[$(($el, $ew)),*] }
    };
}

macro_rules! noise {
    ($code:expr, $base:expr, [$(($gl:expr, $gp:expr)),* $(,)?]) => {
        NoiseDef { code: $code, base: $base, given: &[$(($gl, $gp)),*] }
    };
}

#[rustfmt::skip]
static DRUGS: &[DrugDef] = &[
    drug!("Furosemide", ["MAIN", "Furosemide", "Furosemide", "FURO40I", "008205", "00517570425", "40mg/4mL Vial", "40", "mg", "1", "VIAL", "IV"],
        0.04, [(CHF, 0.75), (FLUID, 0.2), (CKD, 0.3), (HTN_COMPLICATED, 0.25), (LIVER, 0.2), (PLEURISY, 0.15), (RESP_FAILURE, 0.1)], [(CHF, -0.6), (FLUID, 0.35), (AKI, 0.2), (PLEURISY, -0.2)]),
    drug!("Metoprolol Tartrate", ["MAIN", "Metoprolol Tartrate", "Metoprolol Tartrate", "METO25", "050631", "51079025520", "25mg Tablet", "12.5", "mg", "0.5", "TAB", "PO"],
        0.04, [(DYSRHYTHMIA, 0.5), (CAD, 0.35), (AMI, 0.6), (HTN, 0.2), (CHF, 0.2)], [(DYSRHYTHMIA, -0.5), (AMI, -0.5), (CONDUCTION, 0.3)]),
    drug!("Insulin", ["MAIN", "Insulin", "Insulin", "INSULIN", "027413", "0", "Dummy Pkg for POE pump and PHA SS ordering", "0", "UNIT", "0", "VIAL", "SC"],
        0.15, [(DM, 0.8), (DM_COMPLICATED, 0.9)], [(DM_COMPLICATED, -0.4)]),
    drug!("Vancomycin", ["MAIN", "", "", "VANC1F", "043952", "00338355248", "1g Frozen Bag", "1000", "mg", "1", "BAG", "IV"],
        0.04, [(SEPSIS, 0.65), (PNEUMONIA, 0.45), (COMPLICATION, 0.25)], [(SEPSIS, -0.5), (PNEUMONIA, -0.3), (AKI, 0.45)]),
    drug!("Piperacillin-Tazobactam", ["MAIN", "", "", "ZOSY4.5I", "021187", "00206885516", "4.5 g Vial", "4.5", "gm", "1", "VIAL", "IV"],
        0.02, [(SEPSIS, 0.45), (PNEUMONIA, 0.4)], [(PNEUMONIA, -0.4), (SEPSIS, -0.3), (AKI, 0.15)]),
    drug!("CeftriaXONE", ["MAIN", "", "", "CEFX1F", "059424", "00338500241", "1g Frozen Bag", "1", "g", "1", "BAG", "IV"],
        0.02, [(PNEUMONIA, 0.3), (SEPSIS, 0.1)], [(PNEUMONIA, -0.35)]),
    drug!("Levofloxacin", ["MAIN", "Levofloxacin", "Levofloxacin", "LEV250", "029927", "00045152010", "250mg Tablet", "250", "mg", "1", "TAB", "PO"],
        0.01, [(PNEUMONIA, 0.25), (COPD, 0.12)], [(PNEUMONIA, -0.3), (DYSRHYTHMIA, 0.2)]),
    drug!("Pantoprazole", ["MAIN", "Pantoprazole", "Pantoprazole", "PANT40", "027462", "00008084199", "40mg Tablet", "40", "mg", "1", "TAB", "PO"],
        0.18, [(GI_BLEED, 0.85), (LIVER, 0.2), (RESP_FAILURE, 0.3)], [(GI_BLEED, -0.6)]),
    drug!("Atorvastatin", ["MAIN", "Atorvastatin", "Atorvastatin", "ATOR20", "029968", "00071015623", "20mg Tab", "20", "mg", "1", "TAB", "PO"],
        0.02, [(LIPID, 0.6), (CAD, 0.45), (AMI, 0.7), (STROKE, 0.4)], [(AMI, -0.3), (STROKE, -0.3), (CAD, -0.2)]),
    drug!("Lisinopril", ["MAIN", "Lisinopril", "Lisinopril", "LISI20", "000391", "00172376010", "20mg Tablet", "20", "mg", "1", "TAB", "PO"],
        0.01, [(HTN, 0.35), (CHF, 0.25), (DM, 0.15), (HTN_COMPLICATED, 0.1)], [(HTN_COMPLICATED, -0.3), (CHF, -0.3), (AKI, 0.25), (FLUID, 0.15)]),
    drug!("Amlodipine", ["MAIN", "Amlodipine", "Amlodipine", "AMLO5", "016926", "51079045120", "5mg Tablet", "5", "mg", "1", "TAB", "PO"],
        0.01, [(HTN, 0.25), (HTN_COMPLICATED, 0.3)], [(HTN_COMPLICATED, -0.2), (HTN, -0.1)]),
    drug!("Albuterol 0.083% Neb Soln", ["MAIN", "Albuterol 0.083% Neb Soln", "Albuterol 0.083% Neb Soln", "ALBU3H", "005039", "49502069724", "0.083%;3mL Vial", "1", "NEB", "1", "VIAL", "IH"],
        0.04, [(COPD, 0.7), (LOWER_RESP, 0.4), (PNEUMONIA, 0.3), (RESP_FAILURE, 0.3)], [(RESP_FAILURE, -0.3), (LOWER_RESP, -0.3)]),
    drug!("Ipratropium Bromide Neb", ["MAIN", "Ipratropium Bromide Neb", "Ipratropium Bromide Neb", "IPRA2H", "021700", "00487980125", "2.5mL Vial", "1", "NEB", "1", "VIAL", "IH"],
        0.02, [(COPD, 0.55), (RESP_FAILURE, 0.2)], [(RESP_FAILURE, -0.25)]),
    drug!("Prednisone", ["MAIN", "Prednisone", "Prednisone", "PRED20", "006751", "00054872625", "20mg Tab", "30", "mg", "1.5", "TAB", "PO"],
        0.02, [(COPD, 0.35), (LOWER_RESP, 0.2), (UPPER_RESP, 0.1)], [(RESP_FAILURE, -0.3), (DM, 0.3), (PNEUMONIA, 0.2)]),
    drug!("Norepinephrine", ["MAIN", "", "", "LEVO4I", "028633", "00703115303", "4mg/4mL Amp", "8", "mg", "2", "AMP", "IV DRIP"],
        0.005, [(SHOCK, 0.8), (SEPSIS, 0.3)], [(AKI, 0.3), (DYSRHYTHMIA, 0.2)]),
    drug!("Vasopressin", ["MAIN", "", "", "VASO20I", "006612", "54569391600", "20U/ML VIAL", "100", "UNIT", "5", "ml", "IV DRIP"],
        0.0, [(SHOCK, 0.35)], []),
    drug!("Heparin", ["MAIN", "Heparin", "Heparin Sodium", "HEPA5I", "006549", "63323026201", "5000 Units / mL- 1mL Vial", "5000", "UNIT", "1", "mL", "SC"],
        0.3, [(AMI, 0.6), (DYSRHYTHMIA, 0.2), (STROKE, 0.2)], [(GI_BLEED, 0.35), (AMI, -0.3), (STROKE, -0.15)]),
    drug!("Warfarin", ["MAIN", "Warfarin", "Warfarin", "WARF2", "006561", "00056017075", "2mg Tab", "2", "mg", "1", "TAB", "PO"],
        0.01, [(DYSRHYTHMIA, 0.35), (STROKE, 0.1)], [(STROKE, -0.5), (GI_BLEED, 0.4)]),
    drug!("Potassium Chloride", ["MAIN", "Potassium Chloride", "Potassium Chloride", "KCL20P", "001262", "00456066270", "20mEq Packet", "40", "mEq", "2", "PKT", "PO"],
        0.25, [(FLUID, 0.6)], [(FLUID, -0.4)]),
    drug!("Magnesium Sulfate", ["MAIN", "Magnesium Sulfate", "Magnesium Sulfate", "MAG2PM", "016546", "00409672924", "2 g / 50 mL Premix Bag", "2", "gm", "1", "BAG", "IV"],
        0.18, [(FLUID, 0.3), (DYSRHYTHMIA, 0.2)], [(DYSRHYTHMIA, -0.15)]),
    drug!("Amiodarone", ["MAIN", "Amiodarone", "Amiodarone", "AMID200", "000266", "51079090620", "200 mg Tab", "100", "mg", "0.5", "TAB", "PO"],
        0.005, [(DYSRHYTHMIA, 0.3), (AMI, 0.1)], [(DYSRHYTHMIA, -0.4), (LIVER, 0.3), (LOWER_RESP, 0.3), (CONDUCTION, 0.2)]),
    drug!("Aspirin", ["MAIN", "Aspirin", "Aspirin", "ASA81", "004380", "00904404073", "81mg Tab", "162", "mg", "2", "TAB", "PO"],
        0.05, [(CAD, 0.6), (AMI, 0.85), (STROKE, 0.5)], [(AMI, -0.4), (STROKE, -0.3), (GI_BLEED, 0.3)]),
    drug!("Clopidogrel Bisulfate", ["MAIN", "Clopidogrel Bisulfate", "Clopidogrel Bisulfate", "CLOP75", "038164", "63653117103", "75mg Tab", "75", "mg", "1", "TAB", "PO"],
        0.005, [(AMI, 0.5), (CAD, 0.2)], [(AMI, -0.4), (GI_BLEED, 0.2)]),
    drug!("Lactulose", ["MAIN", "Lactulose", "Lactulose", "LACT30L", "003067", "00054848616", "20g/30mL Cup", "30", "mL", "1", "UDCUP", "PO"],
        0.005, [(LIVER, 0.55)], [(LIVER, -0.4), (FLUID, 0.2)]),
    drug!("Rifaximin", ["MAIN", "Rifaximin", "Rifaximin", "RIFA200", "041880", "65649030105", "200mg Tablet", "400", "mg", "2", "TAB", "PO"],
        0.0, [(LIVER, 0.25)], [(LIVER, -0.3)]),
    drug!("Octreotide Acetate", ["MAIN", "", "", "OCTR100I", "006585", "00078018101", "100mcg/mL-1mL", "600", "mcg", "6", "ml", "IV DRIP"],
        0.0, [(GI_BLEED, 0.25), (LIVER, 0.1)], [(GI_BLEED, -0.3)]),
    drug!("Spironolactone", ["MAIN", "Spironolactone", "Spironolactone", "SPIR25", "006817", "51079010320", "25mg Tablet", "25", "mg", "1", "TAB", "PO"],
        0.005, [(LIVER, 0.25), (CHF, 0.15)], [(FLUID, 0.3), (CHF, -0.2), (LIVER, -0.1)]),
    drug!("Sevelamer", ["MAIN", "Sevelamer", "Sevelamer HCl", "SEVE800", "046485", "58468002101", "800mg Tab", "800", "mg", "1", "TAB", "PO"],
        0.0, [(CKD, 0.3)], [(FLUID, -0.2)]),
    drug!("Sodium Bicarbonate", ["MAIN", "", "", "NABC50I", "001185", "00409662502", "50mEq Vial", "150", "mEq", "3", "VIAL", "IV"],
        0.01, [(AKI, 0.3), (CKD, 0.2), (FLUID, 0.2)], [(FLUID, -0.2)]),
    drug!("Propofol", ["MAIN", "Propofol", "Propofol", "PROP100IG", "016796", "63323026965", "1000mg/100mL Vial", "1000", "mg", "1", "VIAL", "IV DRIP"],
        0.01, [(RESP_FAILURE, 0.55)], []),
    drug!("Fentanyl Citrate", ["MAIN", "Fentanyl Citrate", "Fentanyl", "FENT2.550", "041385", "10019003783", "2.5mg/50mL Solution", "2.5", "mg", "1", "BAG", "IV DRIP"],
        0.08, [(RESP_FAILURE, 0.4), (COMPLICATION, 0.2)], []),
    drug!("Midazolam", ["MAIN", "Midazolam", "Midazolam", "MIDA100", "003780", "10019002710", "100mg/100mL NS", "100", "mg", "1", "BAG", "IV DRIP"],
        0.03, [(RESP_FAILURE, 0.3)], []),
    drug!("Diltiazem", ["MAIN", "", "", "DILT500I", "016424", "10019051002", "50mg/10mL Vial", "125", "mg", "2.5", "VIAL", "IV"],
        0.005, [(DYSRHYTHMIA, 0.2)], [(DYSRHYTHMIA, -0.3), (CHF, 0.15)]),
    drug!("Digoxin", ["MAIN", "Digoxin", "Digoxin", "DIGO125", "000018", "00173024256", "0.125MG TAB", "0.0625", "mg", "0.5", "TAB", "PO"],
        0.0, [(DYSRHYTHMIA, 0.08), (CHF, 0.08)], [(DYSRHYTHMIA, -0.2), (CONDUCTION, 0.2)]),
    drug!("Nitroglycerin", ["MAIN", "", "", "NTG100PM", "015361", "00409148402", "100MG/250 PM", "100", "mg", "1", "BTL", "IV DRIP"],
        0.01, [(CAD, 0.15), (AMI, 0.3), (CHF, 0.1)], []),
    drug!("HydrALAzine", ["MAIN", "HydrALAzine", "HydrALAzine", "HYDZ50", "000287", "00182055589", "50 mg Tab", "100", "mg", "2", "TAB", "PO"],
        0.01, [(HTN_COMPLICATED, 0.15), (HTN, 0.1)], [(HTN_COMPLICATED, -0.15)]),
    drug!("MetFORMIN (Glucophage)", ["MAIN", "MetFORMIN (Glucophage)", "MetFORMIN (Glucophage)", "METF500", "", "0", "500mg Tablet", "500", "mg", "1", "TAB", "PO"],
        0.0, [(DM, 0.2)], [(DM_COMPLICATED, -0.3), (FLUID, 0.1)]),
    drug!("Guaifenesin", ["MAIN", "Guaifenesin", "Guaifenesin", "GUAI10", "000759", "00121174410", "10mL Cup", "5-10", "mL", "0.5-1", "UDCUP", "PO"],
        0.03, [(UPPER_RESP, 0.3), (LOWER_RESP, 0.2), (PNEUMONIA, 0.1)], []),
    drug!("Fluticasone Propionate NASAL", ["MAIN", "Fluticasone Propionate NASAL", "Fluticasone Propionate NASAL", "FLUT16N", "018368", "00054327099", "16g NASAL SPRAY", "2", "SPRY", "0.02", "AERO", "NU"],
        0.01, [(UPPER_RESP, 0.3), (COPD, 0.1)], [(UPPER_RESP, -0.3)]),
    drug!("Tiotropium Bromide", ["MAIN", "Tiotropium Bromide", "Tiotropium Bromide", "TIOT", "050714", "00597007575", "18mcg Capsule-Inhalation Device", "1", "CAP", "1", "CAP", "IH"],
        0.0, [(COPD, 0.35)], [(RESP_FAILURE, -0.2)]),
    drug!("Metronidazole", ["MAIN", "Metronidazole", "Metronidazole", "METR500", "009592", "51079012620", "500MG TAB", "500", "mg", "1", "TAB", "PO"],
        0.02, [(COMPLICATION, 0.15), (SEPSIS, 0.1), (LIVER, 0.05)], [(SEPSIS, -0.1)]),
    drug!("Meropenem", ["MAIN", "", "", "MERO500I", "026488", "00310032520", "500mg Vial", "500", "mg", "1", "VIAL", "IV"],
        0.002, [(SEPSIS, 0.15)], [(SEPSIS, -0.2)]),
    drug!("Calcium Gluconate", ["MAIN", "Calcium Gluconate", "Calcium Gluconate", "CALG1I", "001356", "63323031110", "1g/10mL Vial", "2", "gm", "2", "VIAL", "IV"],
        0.1, [(FLUID, 0.2)], []),
    drug!("Morphine Sulfate", ["MAIN", "Morphine Sulfate", "Morphine Sulfate (Syringe)", "MORP2I", "004070", "00409176230", "2mg Syringe", "2", "mg", "1", "SYR", "IV"],
        0.2, [(AMI, 0.3), (COMPLICATION, 0.3)], []),
    drug!("Lorazepam", ["MAIN", "Lorazepam", "Lorazepam", "LORA5", "003757", "00904150061", "0.5mg Tablet", "0.5", "mg", "1", "TAB", "PO"],
        0.1, [], []),
    drug!("Pneumococcal Vac Polyvalent", ["MAIN", "Pneumococcal Vac Polyvalent", "PNEUMOcoccal Vac Polyvalent", "PNEU25I", "048548", "00006494300", "25mcg/0.5mL Vial", "0.5", "mL", "1", "VIAL", "IM"],
        0.06, [(COPD, 0.2)], [(PNEUMONIA, -0.2)]),
    drug!("Influenza Virus Vaccine", ["MAIN", "Influenza Virus Vaccine", "Influenza Virus Vaccine", "INFV", "064182", "58160087546", "0.5mL Syringe", "0.5", "mL", "1", "SYR", "IM"],
        0.06, [(COPD, 0.1)], [(PNEUMONIA, -0.1)]),
    drug!("Gabapentin", ["MAIN", "Gabapentin", "Gabapentin", "GABA100", "021413", "00904563161", "100mg Capsule", "100", "mg", "1", "CAP", "PO"],
        0.08, [(DM_COMPLICATED, 0.2)], []),
    drug!("Acetaminophen", ["MAIN", "Acetaminophen", "Acetaminophen", "ACET325", "004489", "00182844789", "325mg Tablet", "325-650", "mg", "1-2", "TAB", "PO"],
        0.55, [], []),
    drug!("Docusate Sodium", ["MAIN", "Docusate Sodium", "Docusate Sodium", "DOCU100", "003009", "00904224461", "100mg Capsule", "100", "mg", "1", "CAP", "PO"],
        0.45, [], []),
    drug!("Senna", ["MAIN", "Senna", "Senna", "SENN187", "019964", "00904516561", "1 Tablet", "1", "TAB", "1", "TAB", "PO"],
        0.35, [], []),
    drug!("Sodium Chloride 0.9%  Flush", ["MAIN", "Sodium Chloride 0.9%  Flush", "Sodium Chloride 0.9%  Flush", "NACLFLUSH", "", "0", "Syringe", "3", "mL", "0.6", "SYR", "IV"],
        0.6, [], []),
    drug!("Bisacodyl", ["MAIN", "Bisacodyl", "Bisacodyl", "BISA5", "002947", "00536338101", "5 mg Tab", "10", "mg", "2", "TAB", "PO"],
        0.25, [], []),
    drug!("Ondansetron", ["MAIN", "Ondansetron", "Ondansetron", "ONDAN4I", "061716", "00781305714", "2mg/mL-2mL", "8", "mg", "2", "VIAL", "IV"],
        0.3, [], []),
    drug!("D5W", ["BASE", "", "", "MORPD5W", "", "0", "100mL Bottle", "100", "mL", "1", "BTL", "IV DRIP"],
        0.35, [], []),
    drug!("0.9% Sodium Chloride", ["BASE", "", "", "NS500", "001210", "00338004903", "500mL Bag", "500", "mL", "500", "mL", "IV"],
        0.4, [], []),
    drug!("Famotidine", ["MAIN", "", "", "FAMO20PM", "021732", "00006353750", "20mg Premix Bag", "20", "mg", "1", "BAG", "IV"],
        0.08, [], []),
    drug!("Zolpidem Tartrate", ["MAIN", "Zolpidem Tartrate", "Zolpidem Tartrate", "AMBI5", "019187", "00024540134", "5mg Tab", "5", "mg", "1", "TAB", "PO"],
        0.08, [], []),
    drug!("Multivitamins", ["MAIN", "Multivitamins", "Multivitamins", "MVI", "002532", "00904053061", "1 Tablet", "1", "TAB", "1", "TAB", "PO"],
        0.1, [], []),
    drug!("Levothyroxine Sodium", ["MAIN", "Levothyroxine Sodium", "Levothyroxine Sodium", "LEVO75", "006650", "00074518211", "75mcg Tab", "75", "mcg", "1", "TAB", "PO"],
        0.1, [], []),
];

#[rustfmt::skip]
static PROCEDURES: &[ProcedureDef] = &[
    procedure!("3893", "Venous cath NEC", "Venous catheterization, not elsewhere classified",
        0.06, [(SEPSIS, 0.3), (SHOCK, 0.4), (RESP_FAILURE, 0.2), (AKI, 0.1)], [(SEPSIS, 0.25)]),
    procedure!("9604", "Insert endotracheal tube", "Insertion of endotracheal tube",
        0.01, [(RESP_FAILURE, 0.5), (SHOCK, 0.2), (STROKE, 0.1)], [(PNEUMONIA, 0.2)]),
    procedure!("9671", "Cont inv mec ven <96 hrs", "Continuous invasive mechanical ventilation for less than 96 consecutive hours",
        0.005, [(RESP_FAILURE, 0.45)], [(PNEUMONIA, 0.15)]),
    procedure!("9672", "Cont inv mec ven 96+ hrs", "Continuous invasive mechanical ventilation for 96 consecutive hours or more",
        0.0, [(RESP_FAILURE, 0.3), (SEPSIS, 0.1)], [(PNEUMONIA, 0.4), (UPPER_RESP, 0.4), (COMPLICATION, 0.2)]),
    procedure!("311", "Temporary tracheostomy", "Temporary tracheostomy",
        0.0, [(RESP_FAILURE, 0.08)], [(UPPER_RESP, 0.8)]),
    procedure!("3961", "Extracorporeal circulat", "Extracorporeal circulation auxiliary to open heart surgery",
        0.005, [(CAD, 0.12), (AMI, 0.1)], [(COMPLICATION, 0.5), (AMI, -0.4), (DYSRHYTHMIA, 0.3)]),
    procedure!("3615", "1 int mam-cor art bypass", "Single internal mammary-coronary artery bypass",
        0.002, [(CAD, 0.08), (AMI, 0.08)], [(AMI, -0.3)]),
    procedure!("3722", "Left heart cardiac cath", "Left heart cardiac catheterization",
        0.005, [(AMI, 0.5), (CAD, 0.2)], []),
    procedure!("8856", "Coronar arteriogr-2 cath", "Coronary arteriography using two catheters",
        0.005, [(AMI, 0.45), (CAD, 0.2)], []),
    procedure!("3607", "Ins drug-elut coronry st", "Insertion of drug-eluting coronary artery stent(s)",
        0.0, [(AMI, 0.35), (CAD, 0.08)], [(AMI, -0.3), (COMPLICATION, 0.1)]),
    procedure!("0066", "PTCA", "Percutaneous transluminal coronary angioplasty [PTCA]",
        0.0, [(AMI, 0.35), (CAD, 0.05)], [(AMI, -0.2)]),
    procedure!("3995", "Hemodialysis", "Hemodialysis",
        0.0, [(CKD, 0.3), (AKI, 0.15)], [(FLUID, -0.4), (CKD, 0.4)]),
    procedure!("3895", "Ven cath renal dialysis", "Venous catheterization for renal dialysis",
        0.0, [(CKD, 0.08), (AKI, 0.12)], [(SEPSIS, 0.2)]),
    procedure!("4513", "Sm bowel endoscopy NEC", "Other endoscopy of small intestine",
        0.005, [(GI_BLEED, 0.45), (LIVER, 0.1)], [(GI_BLEED, -0.3)]),
    procedure!("4443", "Endosc control gast hem", "Endoscopic control of gastric or duodenal bleeding",
        0.0, [(GI_BLEED, 0.12)], [(GI_BLEED, -0.3)]),
    procedure!("4233", "Endosc destruc esoph les", "Endoscopic excision or destruction of lesion or tissue of esophagus",
        0.0, [(LIVER, 0.08), (GI_BLEED, 0.08)], [(GI_BLEED, -0.4)]),
    procedure!("5491", "Percu abdominal drainage", "Percutaneous abdominal drainage",
        0.0, [(LIVER, 0.35)], [(FLUID, 0.2), (SEPSIS, 0.1)]),
    procedure!("3491", "Thoracentesis", "Thoracentesis",
        0.0, [(PLEURISY, 0.35), (CHF, 0.03)], [(PLEURISY, -0.2)]),
    procedure!("3404", "Insert intercostal cath", "Insertion of intercostal catheter for drainage",
        0.002, [(PLEURISY, 0.2), (COMPLICATION, 0.05)], [(PLEURISY, -0.2)]),
    procedure!("9904", "Packed cell transfusion", "Transfusion of packed cells",
        0.04, [(GI_BLEED, 0.6), (COMPLICATION, 0.2), (SEPSIS, 0.1), (CKD, 0.1)], [(CHF, 0.2), (FLUID, 0.1)]),
    procedure!("9915", "Parent infus nutrit sub", "Parenteral infusion of concentrated nutritional substances",
        0.01, [(COMPLICATION, 0.1), (SEPSIS, 0.05)], [(SEPSIS, 0.3)]),
    procedure!("966", "Entral infus nutrit sub", "Enteral infusion of concentrated nutritional substances",
        0.01, [(STROKE, 0.2), (RESP_FAILURE, 0.2)], [(PNEUMONIA, 0.2)]),
    procedure!("3891", "Arterial catheterization", "Arterial catheterization",
        0.01, [(SHOCK, 0.25), (RESP_FAILURE, 0.1)], []),
    procedure!("8872", "Dx ultrasound-heart", "Diagnostic ultrasound of heart",
        0.01, [(CHF, 0.08), (AMI, 0.1)], []),
    procedure!("9962", "Heart countershock NEC", "Other electric countershock of heart",
        0.0, [(DYSRHYTHMIA, 0.06)], [(DYSRHYTHMIA, -0.3)]),
    procedure!("3783", "Int insert dual-cham dev", "Initial insertion of dual-chamber device",
        0.0, [(CONDUCTION, 0.25)], [(DYSRHYTHMIA, -0.1)]),
    procedure!("0017", "Infusion of vasopressor", "Infusion of vasopressor agent",
        0.0, [(SHOCK, 0.2)], []),
    procedure!("9390", "Non-invasive mech vent", "Non-invasive mechanical ventilation",
        0.0, [(COPD, 0.1), (CHF, 0.05), (RESP_FAILURE, 0.15)], []),
    procedure!("3324", "Closed bronchial biopsy", "Closed [endoscopic] biopsy of bronchus",
        0.0, [(LOWER_RESP, 0.15), (PNEUMONIA, 0.05)], []),
    procedure!("3761", "Pulsation balloon implan", "Implant of pulsation balloon",
        0.0, [(SHOCK, 0.1), (AMI, 0.05)], []),
    procedure!("9910", "Inject/inf thrombo agent", "Injection or infusion of thrombolytic agent",
        0.0, [(STROKE, 0.1)], [(STROKE, -0.2)]),
    procedure!("0331", "Spinal tap", "Spinal tap",
        0.01, [], []),
    procedure!("5110", "Endosc retro cholangiopa", "Endoscopic retrograde cholangiopancreatography [ERCP]",
        0.0, [(LIVER, 0.08)], []),
    procedure!("3897", "CV cath plcmt w guidance", "Central venous catheter placement with guidance",
        0.01, [(SEPSIS, 0.1), (SHOCK, 0.15)], [(SEPSIS, 0.15)]),
    procedure!("9955", "Vaccination NEC", "Prophylactic administration of vaccine against other diseases",
        0.02, [], []),
];
#[rustfmt::skip]
static NOISE_DIAGNOSES: &[NoiseDef] = &[
    noise!("2449", 0.2, []),
    noise!("311", 0.16, []),
    noise!("3051", 0.16, [(COPD, 0.3)]),
    noise!("V5861", 0.02, [(DYSRHYTHMIA, 0.25), (STROKE, 0.05)]),
    noise!("V4986", 0.04, [(SHOCK, 0.1), (SEPSIS, 0.08)]),
    noise!("5990", 0.12, [(SEPSIS, 0.15)]),
    noise!("4241", 0.04, [(CHF, 0.08)]),
    noise!("2809", 0.04, [(GI_BLEED, 0.1)]),
    noise!("32723", 0.04, [(COPD, 0.05)]),
    noise!("27800", 0.06, [(DM, 0.1)]),
    noise!("2639", 0.04, [(LIVER, 0.1)]),
    noise!("2930", 0.04, []),
    noise!("30390", 0.03, [(LIVER, 0.35)]),
    noise!("29181", 0.01, [(LIVER, 0.1)]),
    noise!("73300", 0.06, []),
    noise!("71590", 0.04, []),
    noise!("2749", 0.03, [(CKD, 0.05)]),
    noise!("60000", 0.06, []),
    noise!("4168", 0.01, [(COPD, 0.08), (CHF, 0.05)]),
    noise!("4439", 0.03, [(DM_COMPLICATED, 0.1)]),
    noise!("5070", 0.01, [(STROKE, 0.05), (RESP_FAILURE, 0.05)]),
    noise!("E8788", 0.02, [(COMPLICATION, 0.25)]),
    noise!("E8497", 0.02, []),
    noise!("E9342", 0.0, [(GI_BLEED, 0.1)]),
    noise!("V103", 0.04, []),
    noise!("V5867", 0.0, [(DM_COMPLICATED, 0.3), (DM, 0.15)]),
    noise!("3572", 0.0, [(DM_COMPLICATED, 0.15)]),
];

/// Diagnosis codes each phenotype is written with (code, relative weight). Every code maps to its
/// phenotype in `ICD9_CCS`, and no category mixes phenotypes (see the module doc).
#[rustfmt::skip]
static PHENOTYPE_CODES: [&[(&str, u32)]; NUM_LABELS] = [
    // 0 AKI
    &[("5849", 8), ("5845", 1), ("5848", 1), ("586", 1)],
    // 1 STROKE
    &[("43491", 4), ("431", 3), ("430", 1), ("4321", 1), ("43411", 2), ("43311", 1), ("436", 1)],
    // 2 AMI
    &[("41071", 6), ("41041", 2), ("41011", 1), ("41001", 1), ("41091", 1)],
    // 3 DYSRHYTHMIA
    &[("42731", 10), ("42732", 1), ("4271", 1), ("42789", 1), ("42761", 1), ("4270", 1)],
    // 4 CKD
    &[("5859", 3), ("5853", 3), ("5854", 2), ("5856", 3), ("5855", 1), ("5852", 1)],
    // 5 COPD
    &[("496", 6), ("49121", 2), ("4928", 2), ("49122", 1), ("49120", 1), ("4941", 1)],
    // 6 COMPLICATION
    &[("99811", 2), ("99859", 2), ("9971", 2), ("99731", 1), ("99812", 1), ("99702", 1), ("45829", 1), ("99883", 1), ("9982", 1)],
    // 7 CONDUCTION
    &[("4263", 2), ("4264", 2), ("4260", 1), ("42613", 1), ("42611", 1), ("42689", 1)],
    // 8 CHF
    &[("4280", 8), ("42833", 2), ("42823", 2), ("42832", 1), ("42822", 1), ("42843", 1)],
    // 9 CAD
    &[("41401", 10), ("412", 3), ("4139", 1), ("41400", 1), ("4111", 1)],
    // 10 DM_COMPLICATED
    &[("24940", 2), ("24960", 2), ("24980", 1), ("24950", 1), ("24901", 1), ("24910", 1)],
    // 11 DM
    &[("25000", 10), ("25001", 1)],
    // 12 LIPID
    &[("2724", 6), ("2720", 3), ("2722", 1), ("2721", 1)],
    // 13 HTN
    &[("4019", 12), ("4011", 1)],
    // 14 FLUID
    &[("2761", 4), ("2762", 3), ("2768", 2), ("2767", 2), ("2760", 1), ("27651", 1), ("2763", 1), ("27652", 1), ("2769", 1)],
    // 15 GI_BLEED
    &[("5789", 5), ("5780", 2), ("5781", 2), ("53100", 1), ("53240", 1), ("4560", 1)],
    // 16 HTN_COMPLICATED
    &[("40390", 4), ("40391", 4), ("40491", 1), ("40291", 1), ("40301", 1)],
    // 17 LIVER
    &[("5715", 3), ("5722", 2), ("5723", 2), ("5718", 1), ("570", 1), ("5738", 1)],
    // 18 LOWER_RESP
    &[("515", 2), ("514", 2), ("5168", 1), ("51631", 1)],
    // 19 UPPER_RESP
    &[("V440", 2), ("47830", 1), ("4779", 1), ("47819", 1), ("V550", 1), ("7847", 1)],
    // 20 PLEURISY
    &[("5119", 6), ("5110", 1), ("51189", 1), ("5109", 1)],
    // 21 PNEUMONIA
    &[("486", 8), ("4820", 1), ("48241", 1), ("48242", 1), ("4821", 1), ("4829", 1), ("485", 1), ("481", 1)],
    // 22 RESP_FAILURE
    &[("51881", 8), ("51882", 2), ("51884", 2), ("51883", 1), ("51851", 1), ("7991", 1), ("V4611", 1)],
    // 23 SEPSIS
    &[("0389", 8), ("99591", 3), ("99592", 4), ("03842", 1), ("03811", 1), ("03812", 1), ("0380", 1), ("03849", 1)],
    // 24 SHOCK
    &[("78552", 5), ("78551", 3), ("78559", 2), ("78550", 1)],
];

/// `D_ICD_DIAGNOSES` rows (code, short title, long title) of every code the generator can emit,
/// copied from the MIMIC-III v1.4 dictionary.
#[rustfmt::skip]
static DX_DICT: &[(&str, &str, &str)] = &[
    ("5849", "Acute kidney failure NOS", "Acute kidney failure, unspecified"),
    ("5845", "Ac kidny fail, tubr necr", "Acute kidney failure with lesion of tubular necrosis"),
    ("5848", "Acute kidney failure NEC", "Acute kidney failure with other specified pathological lesion in kidney"),
    ("586", "Renal failure NOS", "Renal failure, unspecified"),
    ("43491", "Crbl art ocl NOS w infrc", "Cerebral artery occlusion, unspecified with cerebral infarction"),
    ("431", "Intracerebral hemorrhage", "Intracerebral hemorrhage"),
    ("430", "Subarachnoid hemorrhage", "Subarachnoid hemorrhage"),
    ("4321", "Subdural hemorrhage", "Subdural hemorrhage"),
    ("43411", "Crbl emblsm w infrct", "Cerebral embolism with cerebral infarction"),
    ("43311", "Ocl crtd art w infrct", "Occlusion and stenosis of carotid artery with cerebral infarction"),
    ("436", "Cva", "Acute, but ill-defined, cerebrovascular disease"),
    ("41071", "Subendo infarct, initial", "Subendocardial infarction, initial episode of care"),
    ("41041", "AMI inferior wall, init", "Acute myocardial infarction of other inferior wall, initial episode of care"),
    ("41011", "AMI anterior wall, init", "Acute myocardial infarction of other anterior wall, initial episode of care"),
    ("41001", "AMI anterolateral, init", "Acute myocardial infarction of anterolateral wall, initial episode of care"),
    ("41091", "AMI NOS, initial", "Acute myocardial infarction of unspecified site, initial episode of care"),
    ("42731", "Atrial fibrillation", "Atrial fibrillation"),
    ("42732", "Atrial flutter", "Atrial flutter"),
    ("4271", "Parox ventric tachycard", "Paroxysmal ventricular tachycardia"),
    ("42789", "Cardiac dysrhythmias NEC", "Other specified cardiac dysrhythmias"),
    ("42761", "Atrial premature beats", "Supraventricular premature beats"),
    ("4270", "Parox atrial tachycardia", "Paroxysmal supraventricular tachycardia"),
    ("5859", "Chronic kidney dis NOS", "Chronic kidney disease, unspecified"),
    ("5853", "Chr kidney dis stage III", "Chronic kidney disease, Stage III (moderate)"),
    ("5854", "Chr kidney dis stage IV", "Chronic kidney disease, Stage IV (severe)"),
    ("5856", "End stage renal disease", "End stage renal disease"),
    ("5855", "Chron kidney dis stage V", "Chronic kidney disease, Stage V"),
    ("5852", "Chro kidney dis stage II", "Chronic kidney disease, Stage II (mild)"),
    ("496", "Chr airway obstruct NEC", "Chronic airway obstruction, not elsewhere classified"),
    ("49121", "Obs chr bronc w(ac) exac", "Obstructive chronic bronchitis with (acute) exacerbation"),
    ("4928", "Emphysema NEC", "Other emphysema"),
    ("49122", "Obs chr bronc w ac bronc", "Obstructive chronic bronchitis with acute bronchitis"),
    ("49120", "Obst chr bronc w/o exac", "Obstructive chronic bronchitis without exacerbation"),
    ("4941", "Bronchiectasis w ac exac", "Bronchiectasis with acute exacerbation"),
    ("99811", "Hemorrhage complic proc", "Hemorrhage complicating a procedure"),
    ("99859", "Other postop infection", "Other postoperative infection"),
    ("9971", "Surg compl-heart", "Cardiac complications, not elsewhere classified"),
    ("99731", "Ventltr assoc pneumonia", "Ventilator associated pneumonia"),
    ("99812", "Hematoma complic proc", "Hematoma complicating a procedure"),
    ("99702", "Iatrogen CV infarc/hmrhg", "Iatrogenic cerebrovascular infarction or hemorrhage"),
    ("45829", "Iatrogenc hypotnsion NEC", "Other iatrogenic hypotension"),
    ("99883", "Non-healing surgcl wound", "Non-healing surgical wound"),
    ("9982", "Accidental op laceration", "Accidental puncture or laceration during a procedure, not elsewhere classified"),
    ("4263", "Left bb block NEC", "Other left bundle branch block"),
    ("4264", "Rt bundle branch block", "Right bundle branch block"),
    ("4260", "Atriovent block complete", "Atrioventricular block, complete"),
    ("42613", "Av block-2nd degree NEC", "Other second degree atrioventricular block"),
    ("42611", "Atriovent block-1st degr", "First degree atrioventricular block"),
    ("42689", "Conduction disorder NEC", "Other specified conduction disorders"),
    ("4280", "CHF NOS", "Congestive heart failure, unspecified"),
    ("42833", "Ac on chr diast hrt fail", "Acute on chronic diastolic heart failure"),
    ("42823", "Ac on chr syst hrt fail", "Acute on chronic systolic heart failure"),
    ("42832", "Chr diastolic hrt fail", "Chronic diastolic heart failure"),
    ("42822", "Chr systolic hrt failure", "Chronic systolic heart failure"),
    ("42843", "Ac/chr syst/dia hrt fail", "Acute on chronic combined systolic and diastolic heart failure"),
    ("41401", "Crnry athrscl natve vssl", "Coronary atherosclerosis of native coronary artery"),
    ("412", "Old myocardial infarct", "Old myocardial infarction"),
    ("4139", "Angina pectoris NEC/NOS", "Other and unspecified angina pectoris"),
    ("41400", "Cor ath unsp vsl ntv/gft", "Coronary atherosclerosis of unspecified type of vessel, native or graft"),
    ("4111", "Intermed coronary synd", "Intermediate coronary syndrome"),
    ("24940", "Sec DM renl nt st uncntr", "Secondary diabetes mellitus with renal manifestations, not stated as uncontrolled, or unspecified"),
    ("24960", "Sec DM neuro nt st uncn", "Secondary diabetes mellitus with neurological manifestations, not stated as uncontrolled, or unspecified"),
    ("24980", "Sec DM oth nt st uncontr", "Secondary diabetes mellitus with other specified manifestations, not stated as uncontrolled, or unspecified"),
    ("24950", "Sec DM ophth nt st uncn", "Secondary diabetes mellitus with ophthalmic manifestations, not stated as uncontrolled, or unspecified"),
    ("24901", "Sec DM wo comp uncontrld", "Secondary diabetes mellitus without mention of complication, uncontrolled"),
    ("24910", "Sec DM keto nt st uncntr", "Secondary diabetes mellitus with ketoacidosis, not stated as uncontrolled, or unspecified"),
    ("25000", "DMII wo cmp nt st uncntr", "Diabetes mellitus without mention of complication, type II or unspecified type, not stated as uncontrolled"),
    ("25001", "DMI wo cmp nt st uncntrl", "Diabetes mellitus without mention of complication, type I [juvenile type], not stated as uncontrolled"),
    ("2724", "Hyperlipidemia NEC/NOS", "Other and unspecified hyperlipidemia"),
    ("2720", "Pure hypercholesterolem", "Pure hypercholesterolemia"),
    ("2722", "Mixed hyperlipidemia", "Mixed hyperlipidemia"),
    ("2721", "Pure hyperglyceridemia", "Pure hyperglyceridemia"),
    ("4019", "Hypertension NOS", "Unspecified essential hypertension"),
    ("4011", "Benign hypertension", "Benign essential hypertension"),
    ("2761", "Hyposmolality", "Hyposmolality and/or hyponatremia"),
    ("2762", "Acidosis", "Acidosis"),
    ("2768", "Hypopotassemia", "Hypopotassemia"),
    ("2767", "Hyperpotassemia", "Hyperpotassemia"),
    ("2760", "Hyperosmolality", "Hyperosmolality and/or hypernatremia"),
    ("27651", "Dehydration", "Dehydration"),
    ("2763", "Alkalosis", "Alkalosis"),
    ("27652", "Hypovolemia", "Hypovolemia"),
    ("2769", "Electrolyt/fluid dis NEC", "Electrolyte and fluid disorders not elsewhere classified"),
    ("5789", "Gastrointest hemorr NOS", "Hemorrhage of gastrointestinal tract, unspecified"),
    ("5780", "Hematemesis", "Hematemesis"),
    ("5781", "Blood in stool", "Blood in stool"),
    ("53100", "Ac stomach ulcer w hem", "Acute gastric ulcer with hemorrhage, without mention of obstruction"),
    ("53240", "Chr duoden ulcer w hem", "Chronic or unspecified duodenal ulcer with hemorrhage, without mention of obstruction"),
    ("4560", "Esophag varices w bleed", "Esophageal varices with bleeding"),
    ("40390", "Hy kid NOS w cr kid I-IV", "Hypertensive chronic kidney disease, unspecified, with chronic kidney disease stage I through stage IV, or unspecified"),
    ("40391", "Hyp kid NOS w cr kid V", "Hypertensive chronic kidney disease, unspecified, with chronic kidney disease stage V or end stage renal disease"),
    ("40491", "Hyp ht/kd NOS I-IV w hf", "Hypertensive heart and chronic kidney disease, unspecified, with heart failure and with chronic kidney disease stage I through stage IV, or unspecified"),
    ("40291", "Hyp ht dis NOS w ht fail", "Unspecified hypertensive heart disease with heart failure"),
    ("40301", "Mal hyp kid w cr kid V", "Hypertensive chronic kidney disease, malignant, with chronic kidney disease stage V or end stage renal disease"),
    ("5715", "Cirrhosis of liver NOS", "Cirrhosis of liver without mention of alcohol"),
    ("5722", "Hepatic encephalopathy", "Hepatic encephalopathy"),
    ("5723", "Portal hypertension", "Portal hypertension"),
    ("5718", "Chronic liver dis NEC", "Other chronic nonalcoholic liver disease"),
    ("570", "Acute necrosis of liver", "Acute and subacute necrosis of liver"),
    ("5738", "Liver disorders NEC", "Other specified disorders of liver"),
    ("515", "Postinflam pulm fibrosis", "Postinflammatory pulmonary fibrosis"),
    ("514", "Pulm congest/hypostasis", "Pulmonary congestion and hypostasis"),
    ("5168", "Alveol pneumonopathy NEC", "Other specified alveolar and parietoalveolar pneumonopathies"),
    ("51631", "Idiopath pulmon fibrosis", "Idiopathic pulmonary fibrosis"),
    ("V440", "Tracheostomy status", "Tracheostomy status"),
    ("47830", "Vocal cord paralysis NOS", "Paralysis of vocal cords or larynx, unspecified"),
    ("4779", "Allergic rhinitis NOS", "Allergic rhinitis, cause unspecified"),
    ("47819", "Nasal & sinus dis NEC", "Other disease of nasal cavity and sinuses"),
    ("V550", "Atten to tracheostomy", "Attention to tracheostomy"),
    ("7847", "Epistaxis", "Epistaxis"),
    ("5119", "Pleural effusion NOS", "Unspecified pleural effusion"),
    ("5110", "Pleurisy w/o effus or TB", "Pleurisy without mention of effusion or current tuberculosis"),
    ("51189", "Effusion NEC exc tb", "Other specified forms of effusion, except tuberculous"),
    ("5109", "Empyema w/o fistula", "Empyema without mention of fistula"),
    ("486", "Pneumonia, organism NOS", "Pneumonia, organism unspecified"),
    ("4820", "K. pneumoniae pneumonia", "Pneumonia due to Klebsiella pneumoniae"),
    ("48241", "Meth sus pneum d/t Staph", "Methicillin susceptible pneumonia due to Staphylococcus aureus"),
    ("48242", "Meth res pneu d/t Staph", "Methicillin resistant pneumonia due to Staphylococcus aureus"),
    ("4821", "Pseudomonal pneumonia", "Pneumonia due to Pseudomonas"),
    ("4829", "Bacterial pneumonia NOS", "Bacterial pneumonia, unspecified"),
    ("485", "Bronchopneumonia org NOS", "Bronchopneumonia, organism unspecified"),
    ("481", "Pneumococcal pneumonia", "Pneumococcal pneumonia [Streptococcus pneumoniae pneumonia]"),
    ("51881", "Acute respiratry failure", "Acute respiratory failure"),
    ("51882", "Other pulmonary insuff", "Other pulmonary insufficiency, not elsewhere classified"),
    ("51884", "Acute & chronc resp fail", "Acute and chronic respiratory failure"),
    ("51883", "Chronic respiratory fail", "Chronic respiratory failure"),
    ("51851", "Ac resp flr fol trma/srg", "Acute respiratory failure following trauma and surgery"),
    ("7991", "Respiratory arrest", "Respiratory arrest"),
    ("V4611", "Respirator depend status", "Dependence on respirator, status"),
    ("0389", "Septicemia NOS", "Unspecified septicemia"),
    ("99591", "Sepsis", "Sepsis"),
    ("99592", "Severe sepsis", "Severe sepsis"),
    ("03842", "E coli septicemia", "Septicemia due to escherichia coli [E. coli]"),
    ("03811", "Meth susc Staph aur sept", "Methicillin susceptible Staphylococcus aureus septicemia"),
    ("03812", "MRSA septicemia", "Methicillin resistant Staphylococcus aureus septicemia"),
    ("0380", "Streptococcal septicemia", "Streptococcal septicemia"),
    ("03849", "Gram-neg septicemia NEC", "Other septicemia due to gram-negative organisms"),
    ("78552", "Septic shock", "Septic shock"),
    ("78551", "Cardiogenic shock", "Cardiogenic shock"),
    ("78559", "Shock w/o trauma NEC", "Other shock without mention of trauma"),
    ("78550", "Shock NOS", "Shock, unspecified"),
    ("2449", "Hypothyroidism NOS", "Unspecified acquired hypothyroidism"),
    ("311", "Depressive disorder NEC", "Depressive disorder, not elsewhere classified"),
    ("3051", "Tobacco use disorder", "Tobacco use disorder"),
    ("V5861", "Long-term use anticoagul", "Long-term (current) use of anticoagulants"),
    ("V4986", "Do not resusctate status", "Do not resuscitate status"),
    ("5990", "Urin tract infection NOS", "Urinary tract infection, site not specified"),
    ("4241", "Aortic valve disorder", "Aortic valve disorders"),
    ("2809", "Iron defic anemia NOS", "Iron deficiency anemia, unspecified"),
    ("32723", "Obstructive sleep apnea", "Obstructive sleep apnea (adult)(pediatric)"),
    ("27800", "Obesity NOS", "Obesity, unspecified"),
    ("2639", "Protein-cal malnutr NOS", "Unspecified protein-calorie malnutrition"),
    ("2930", "Delirium d/t other cond", "Delirium due to conditions classified elsewhere"),
    ("30390", "Alcoh dep NEC/NOS-unspec", "Other and unspecified alcohol dependence, unspecified"),
    ("29181", "Alcohol withdrawal", "Alcohol withdrawal"),
    ("73300", "Osteoporosis NOS", "Osteoporosis, unspecified"),
    ("71590", "Osteoarthros NOS-unspec", "Osteoarthrosis, unspecified whether generalized or localized, site unspecified"),
    ("2749", "Gout NOS", "Gout, unspecified"),
    ("60000", "BPH w/o urinary obs/LUTS", "Hypertrophy (benign) of prostate without urinary obstruction and other lower urinary tract symptom (LUTS)"),
    ("4168", "Chr pulmon heart dis NEC", "Other chronic pulmonary heart diseases"),
    ("4439", "Periph vascular dis NOS", "Peripheral vascular disease, unspecified"),
    ("5070", "Food/vomit pneumonitis", "Pneumonitis due to inhalation of food or vomitus"),
    ("E8788", "Abn react-surg proc NEC", "Other specified surgical operations and procedures causing abnormal patient reaction, or later complication, without mention of misadventure at time of operation"),
    ("E8497", "Accid in resident instit", "Accidents occurring in residential institution"),
    ("E9342", "Adv eff anticoagulants", "Anticoagulants causing adverse effects in therapeutic use"),
    ("V103", "Hx of breast malignancy", "Personal history of malignant neoplasm of breast"),
    ("V5867", "Long-term use of insulin", "Long-term (current) use of insulin"),
    ("3572", "Neuropathy in diabetes", "Polyneuropathy in diabetes"),
];

// ---------------------------------------------------------------------------------------------
// Administrative columns (no effect on the model).

const INSURANCE: &[(&str, f64)] =
    &[("Medicare", 0.55), ("Private", 0.30), ("Medicaid", 0.10), ("Government", 0.03), ("Self Pay", 0.02)];
const LANGUAGE: &[(&str, f64)] = &[("ENGL", 0.65), ("", 0.25), ("SPAN", 0.05), ("RUSS", 0.03), ("PTUN", 0.02)];
const RELIGION: &[(&str, f64)] = &[
    ("CATHOLIC", 0.35),
    ("NOT SPECIFIED", 0.20),
    ("PROTESTANT QUAKER", 0.12),
    ("UNOBTAINABLE", 0.10),
    ("JEWISH", 0.08),
    ("OTHER", 0.10),
    ("EPISCOPALIAN", 0.05),
];
const MARITAL_STATUS: &[(&str, f64)] =
    &[("MARRIED", 0.45), ("SINGLE", 0.25), ("WIDOWED", 0.15), ("DIVORCED", 0.08), ("", 0.07)];
const ETHNICITY: &[(&str, f64)] = &[
    ("WHITE", 0.70),
    ("BLACK/AFRICAN AMERICAN", 0.10),
    ("UNKNOWN/NOT SPECIFIED", 0.10),
    ("HISPANIC OR LATINO", 0.04),
    ("ASIAN", 0.03),
    ("OTHER", 0.03),
];
const EMERGENCY_LOCATION: &[(&str, f64)] =
    &[("EMERGENCY ROOM ADMIT", 0.60), ("TRANSFER FROM HOSP/EXTRAM", 0.25), ("CLINIC REFERRAL/PREMATURE", 0.15)];
const DISCHARGE_LOCATION: &[(&str, f64)] =
    &[("HOME", 0.35), ("HOME HEALTH CARE", 0.25), ("SNF", 0.25), ("REHAB/DISTINCT PART HOSP", 0.15)];
/// Admitting diagnosis text: the first phenotype of this list present at the visit.
const ADMIT_TEXT: &[(usize, &str)] = &[
    (SEPSIS, "SEPSIS"),
    (SHOCK, "HYPOTENSION"),
    (AMI, "ST ELEVATION MYOCARDIAL INFARCTION\\CATH"),
    (STROKE, "INTRACRANIAL HEMORRHAGE"),
    (GI_BLEED, "GASTROINTESTINAL BLEED"),
    (RESP_FAILURE, "RESPIRATORY FAILURE"),
    (PNEUMONIA, "PNEUMONIA"),
    (CHF, "CONGESTIVE HEART FAILURE"),
    (LIVER, "LIVER FAILURE"),
    (AKI, "ACUTE RENAL FAILURE"),
    (COPD, "COPD EXACERBATION"),
    (CAD, "CORONARY ARTERY DISEASE\\CORONARY ARTERY BYPASS GRAFT /SDA"),
    (DYSRHYTHMIA, "ATRIAL FIBRILLATION"),
    (PLEURISY, "PLEURAL EFFUSION"),
    (FLUID, "HYPONATREMIA"),
];
const ADMIT_TEXT_OTHER: &[&str] =
    &["CHEST PAIN", "ABDOMINAL PAIN", "ALTERED MENTAL STATUS, FEVER", "S/P FALL", "SYNCOPE"];

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
        let subject_id = FIRST_SUBJECT_ID.wrapping_add(i as u32);
        let k = pick_index(&mut rng, &TYPE_WEIGHT);
        let insurance = pick(&mut rng, INSURANCE);
        let language = pick(&mut rng, LANGUAGE);
        let religion = pick(&mut rng, RELIGION);
        let marital_status = pick(&mut rng, MARITAL_STATUS);
        let ethnicity = pick(&mut rng, ETHNICITY);

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
            let idx = cohort.admissions.len() as u32;

            // Emissions given S_v.
            let mut drugs = 0u128;
            for (j, drug) in DRUGS.iter().enumerate() {
                if bernoulli(&mut rng, emission_probability(drug.base, drug.given, s)) {
                    drugs |= 1 << j;
                }
            }
            let mut procedures = 0u64;
            for (r, proc_) in PROCEDURES.iter().enumerate() {
                if bernoulli(&mut rng, emission_probability(proc_.base, proc_.given, s)) {
                    procedures |= 1 << r;
                }
            }
            codes.clear();
            for d in s.iter() {
                let list = PHENOTYPE_CODES[d as usize];
                let first = pick_code(&mut rng, list);
                codes.push(first);
                if list.len() > 1 && bernoulli(&mut rng, SECOND_CODE_P) {
                    loop {
                        let second = pick_code(&mut rng, list);
                        if second != first {
                            codes.push(second);
                            break;
                        }
                    }
                }
            }
            for m in NOISE_DIAGNOSES {
                if bernoulli(&mut rng, emission_probability(m.base, m.given, s)) {
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
            for (seq, code) in codes.iter().enumerate() {
                cohort.diagnoses.push(DiagnosisRow { admission: idx, seq_num: seq as u16 + 1, code });
            }

            // Times.
            let los_days = (1.2 + 0.05 * s.len() as f64 + 0.7 * normal(&mut rng)).exp();
            let los = ((los_days * MINUTES_PER_DAY as f64) as i64).clamp(360, 200 * MINUTES_PER_DAY);
            let disch = admit + los;
            let admit_day = admit.div_euclid(MINUTES_PER_DAY);
            let disch_day = disch.div_euclid(MINUTES_PER_DAY);

            let mut m = drugs;
            while m != 0 {
                let j = m.trailing_zeros() as u8;
                m &= m - 1;
                let rows = 1 + bernoulli(&mut rng, 0.35) as usize + bernoulli(&mut rng, 0.10) as usize;
                for _ in 0..rows {
                    let start_day = rng.random_range(admit_day..=disch_day);
                    let end_day = (start_day + 1 + rng.random_range(0..3)).min(disch_day + 1);
                    cohort.prescriptions.push(PrescriptionRow { admission: idx, drug: j, start_day, end_day });
                }
            }
            let mut m = procedures;
            let mut seq = 0u16;
            while m != 0 {
                let r = m.trailing_zeros() as usize;
                m &= m - 1;
                seq += 1;
                cohort.procedures.push(ProcedureRow { admission: idx, seq_num: seq, code: PROCEDURES[r].code });
            }

            // Administrative columns.
            let elective_p = if procedures & cabg_mask != 0 { 0.65 } else { 0.05 };
            let (admission_type, admission_location) = if bernoulli(&mut rng, elective_p) {
                ("ELECTIVE", "PHYS REFERRAL/NORMAL DELI")
            } else if bernoulli(&mut rng, 0.03) {
                ("URGENT", "TRANSFER FROM HOSP/EXTRAM")
            } else {
                ("EMERGENCY", pick(&mut rng, EMERGENCY_LOCATION))
            };
            let ed_min = if admission_location == "EMERGENCY ROOM ADMIT" {
                let reg = admit - rng.random_range(60..480);
                Some((reg, admit + rng.random_range(0..120)))
            } else {
                None
            };
            let last = v + 1 == visits;
            let has = |d: usize| s.contains(d as u8) as u8 as f64;
            let death_z = -4.0
                + 1.8 * has(SHOCK)
                + 0.9 * has(SEPSIS)
                + 0.9 * has(RESP_FAILURE)
                + 0.5 * has(AMI)
                + 0.7 * has(STROKE)
                + 0.4 * has(LIVER);
            let died = last && bernoulli(&mut rng, sigmoid(death_z));
            let discharge_location = if died { "DEAD/EXPIRED" } else { pick(&mut rng, DISCHARGE_LOCATION) };
            let diagnosis = match ADMIT_TEXT.iter().find(|(d, _)| s.contains(*d as u8)) {
                Some(&(_, text)) => text,
                None => ADMIT_TEXT_OTHER[rng.random_range(0..ADMIT_TEXT_OTHER.len())],
            };

            cohort.admissions.push(Admission {
                subject_id,
                hadm_id: 0, // assigned below
                admit_min: admit,
                disch_min: disch,
                ed_min,
                died,
                admission_type,
                admission_location,
                discharge_location,
                insurance,
                language,
                religion,
                marital_status,
                ethnicity,
                diagnosis,
                patient_type: k as u8,
                phenotypes: s,
                drugs,
                procedures,
            });

            // Transition to S_{v+1}: a function of (S_v, D_v, P_v) only.
            if !last {
                let p = model.next_probabilities(s, drugs, procedures);
                cohort.oracle.push(OracleRow { admission: idx, next_admission: idx + 1, p });
                let mut next = LabelSet::EMPTY;
                for (d, pd) in p.iter().enumerate() {
                    if bernoulli(&mut rng, *pd) {
                        next.insert(d as u8);
                    }
                }
                s = next;
                let gap_days = 1.0 + 300.0 * -(1.0 - rng.random::<f64>()).ln();
                admit = disch + ((gap_days * MINUTES_PER_DAY as f64) as i64).min(3000 * MINUTES_PER_DAY);
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

/// ROC-AUC as the Mann–Whitney statistic with average ranks for ties; `None` without both classes.
fn roc_auc(scores: &[f64], targets: &[bool]) -> Option<f64> {
    let pos = targets.iter().filter(|t| **t).count();
    let neg = targets.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            if targets[o] {
                rank_sum += avg_rank;
            }
        }
        i = j + 1;
    }
    let pos = pos as f64;
    Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg as f64))
}

// ---------------------------------------------------------------------------------------------
// Writing.

const ADMISSIONS_HEADER: [&str; 19] = [
    "ROW_ID",
    "SUBJECT_ID",
    "HADM_ID",
    "ADMITTIME",
    "DISCHTIME",
    "DEATHTIME",
    "ADMISSION_TYPE",
    "ADMISSION_LOCATION",
    "DISCHARGE_LOCATION",
    "INSURANCE",
    "LANGUAGE",
    "RELIGION",
    "MARITAL_STATUS",
    "ETHNICITY",
    "EDREGTIME",
    "EDOUTTIME",
    "DIAGNOSIS",
    "HOSPITAL_EXPIRE_FLAG",
    "HAS_CHARTEVENTS_DATA",
];
const CODES_HEADER: [&str; 5] = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"];
const PRESCRIPTIONS_HEADER: [&str; 19] = [
    "ROW_ID",
    "SUBJECT_ID",
    "HADM_ID",
    "ICUSTAY_ID",
    "STARTDATE",
    "ENDDATE",
    "DRUG_TYPE",
    "DRUG",
    "DRUG_NAME_POE",
    "DRUG_NAME_GENERIC",
    "FORMULARY_DRUG_CD",
    "GSN",
    "NDC",
    "PROD_STRENGTH",
    "DOSE_VAL_RX",
    "DOSE_UNIT_RX",
    "FORM_VAL_DISP",
    "FORM_UNIT_DISP",
    "ROUTE",
];
const DICTIONARY_HEADER: [&str; 4] = ["ROW_ID", "ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"];

/// The files [`write_cohort`] writes, in order.
pub const COHORT_FILES: [&str; 7] = [
    "ADMISSIONS.csv",
    "DIAGNOSES_ICD.csv",
    "PRESCRIPTIONS.csv",
    "PROCEDURES_ICD.csv",
    "D_ICD_DIAGNOSES.csv",
    "D_ICD_PROCEDURES.csv",
    "oracle.jsonl",
];

/// Writes the cohort's files (see [`COHORT_FILES`]) into `dir` (created if missing), each
/// atomically: written to `NAME.tmp`, flushed and synced, then renamed over `NAME`.
pub fn write_cohort(cohort: &Cohort, dir: &Path) -> Result<SynthSummary, SynthError> {
    fs::create_dir_all(dir).map_err(|source| SynthError::CreateDir { path: dir.to_path_buf(), source })?;
    write_csv(dir, COHORT_FILES[0], |w| write_admissions(cohort, w))?;
    write_csv(dir, COHORT_FILES[1], |w| write_diagnoses(cohort, w))?;
    write_csv(dir, COHORT_FILES[2], |w| write_prescriptions(cohort, w))?;
    write_csv(dir, COHORT_FILES[3], |w| write_procedures(cohort, w))?;
    write_csv(dir, COHORT_FILES[4], |w| write_dictionary(w, DX_DICT.iter().map(|&(c, s, l)| (c, s, l))))?;
    write_csv(dir, COHORT_FILES[5], |w| write_dictionary(w, PROCEDURES.iter().map(|r| (r.code, r.short, r.long))))?;
    write_file(dir, COHORT_FILES[6], |w| write_oracle(cohort, w))?;
    sync_dir(dir)?;
    let summary = cohort.summary();
    tracing::info!(
        dir = %dir.display(),
        patients = summary.patients,
        admissions = summary.admissions,
        pairs = summary.pairs,
        "wrote synthetic cohort"
    );
    Ok(summary)
}

fn io_error(path: &Path, source: io::Error) -> SynthError {
    SynthError::Io { path: path.to_path_buf(), source }
}

fn write_csv<F>(dir: &Path, name: &str, body: F) -> Result<(), SynthError>
where
    F: FnOnce(&mut csv::Writer<File>) -> csv::Result<()>,
{
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let file = File::create(&tmp).map_err(|e| io_error(&path, e))?;
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).buffer_capacity(1 << 16).from_writer(file);
    let written = body(&mut w).and_then(|()| w.flush().map_err(csv::Error::from));
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(SynthError::Csv { path, source });
    }
    match w.into_inner() {
        Ok(file) => commit(file, &tmp, &path),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(io_error(&path, e.into_error()))
        }
    }
}

fn write_file<F>(dir: &Path, name: &str, body: F) -> Result<(), SynthError>
where
    F: FnOnce(&mut BufWriter<File>) -> io::Result<()>,
{
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let file = File::create(&tmp).map_err(|e| io_error(&path, e))?;
    let mut w = BufWriter::with_capacity(1 << 16, file);
    if let Err(e) = body(&mut w).and_then(|()| w.flush()) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(&path, e));
    }
    match w.into_inner() {
        Ok(file) => commit(file, &tmp, &path),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(io_error(&path, e.into_error()))
        }
    }
}

/// `sync_all` then rename `tmp` over `path`.
fn commit(file: File, tmp: &Path, path: &Path) -> Result<(), SynthError> {
    let synced = file.sync_all();
    drop(file);
    if let Err(e) = synced.and_then(|()| fs::rename(tmp, path)) {
        let _ = fs::remove_file(tmp);
        return Err(io_error(path, e));
    }
    Ok(())
}

/// Makes the renames durable (directories can be synced on Unix only).
fn sync_dir(dir: &Path) -> Result<(), SynthError> {
    #[cfg(unix)]
    {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Formats `v` in decimal into `buf`; returns the digits.
fn fmt_u64(buf: &mut [u8; 20], mut v: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

/// Formats minutes since 1970-01-01 as `YYYY-MM-DD HH:MM:00` (years 0000..=9999).
fn fmt_datetime(buf: &mut [u8; 19], minutes: i64) -> &[u8] {
    let day = minutes.div_euclid(MINUTES_PER_DAY);
    let min_of_day = minutes.rem_euclid(MINUTES_PER_DAY);
    let (y, m, d) = civil_from_days(day);
    let y = y.clamp(0, 9999) as u64;
    let put = |buf: &mut [u8; 19], at: usize, v: u64, width: usize| {
        let mut v = v;
        for k in (0..width).rev() {
            buf[at + k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(buf, 0, y, 4);
    buf[4] = b'-';
    put(buf, 5, u64::from(m), 2);
    buf[7] = b'-';
    put(buf, 8, u64::from(d), 2);
    buf[10] = b' ';
    put(buf, 11, (min_of_day / 60) as u64, 2);
    buf[13] = b':';
    put(buf, 14, (min_of_day % 60) as u64, 2);
    buf[16] = b':';
    buf[17] = b'0';
    buf[18] = b'0';
    &buf[..]
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn write_admissions(c: &Cohort, w: &mut csv::Writer<File>) -> csv::Result<()> {
    w.write_record(ADMISSIONS_HEADER)?;
    let mut n = [0u8; 20];
    let mut t = [0u8; 19];
    for (i, a) in c.admissions.iter().enumerate() {
        w.write_field(fmt_u64(&mut n, i as u64 + 1))?;
        w.write_field(fmt_u64(&mut n, u64::from(a.subject_id)))?;
        w.write_field(fmt_u64(&mut n, u64::from(a.hadm_id)))?;
        w.write_field(fmt_datetime(&mut t, a.admit_min))?;
        w.write_field(fmt_datetime(&mut t, a.disch_min))?;
        if a.died {
            w.write_field(fmt_datetime(&mut t, a.disch_min))?;
        } else {
            w.write_field("")?;
        }
        w.write_field(a.admission_type)?;
        w.write_field(a.admission_location)?;
        w.write_field(a.discharge_location)?;
        w.write_field(a.insurance)?;
        w.write_field(a.language)?;
        w.write_field(a.religion)?;
        w.write_field(a.marital_status)?;
        w.write_field(a.ethnicity)?;
        match a.ed_min {
            Some((reg, out)) => {
                w.write_field(fmt_datetime(&mut t, reg))?;
                w.write_field(fmt_datetime(&mut t, out))?;
            }
            None => {
                w.write_field("")?;
                w.write_field("")?;
            }
        }
        w.write_field(a.diagnosis)?;
        w.write_field(if a.died { "1" } else { "0" })?;
        w.write_field("1")?;
        w.write_record(None::<&[u8]>)?;
    }
    Ok(())
}

fn write_diagnoses(c: &Cohort, w: &mut csv::Writer<File>) -> csv::Result<()> {
    w.write_record(CODES_HEADER)?;
    let mut n = [0u8; 20];
    for (i, r) in c.diagnoses.iter().enumerate() {
        let a = &c.admissions[r.admission as usize];
        w.write_field(fmt_u64(&mut n, i as u64 + 1))?;
        w.write_field(fmt_u64(&mut n, u64::from(a.subject_id)))?;
        w.write_field(fmt_u64(&mut n, u64::from(a.hadm_id)))?;
        w.write_field(fmt_u64(&mut n, u64::from(r.seq_num)))?;
        w.write_field(r.code)?;
        w.write_record(None::<&[u8]>)?;
    }
    Ok(())
}

fn write_procedures(c: &Cohort, w: &mut csv::Writer<File>) -> csv::Result<()> {
    w.write_record(CODES_HEADER)?;
    let mut n = [0u8; 20];
    for (i, r) in c.procedures.iter().enumerate() {
        let a = &c.admissions[r.admission as usize];
        w.write_field(fmt_u64(&mut n, i as u64 + 1))?;
        w.write_field(fmt_u64(&mut n, u64::from(a.subject_id)))?;
        w.write_field(fmt_u64(&mut n, u64::from(a.hadm_id)))?;
        w.write_field(fmt_u64(&mut n, u64::from(r.seq_num)))?;
        w.write_field(r.code)?;
        w.write_record(None::<&[u8]>)?;
    }
    Ok(())
}

fn write_prescriptions(c: &Cohort, w: &mut csv::Writer<File>) -> csv::Result<()> {
    w.write_record(PRESCRIPTIONS_HEADER)?;
    let mut n = [0u8; 20];
    let mut t = [0u8; 19];
    for (i, r) in c.prescriptions.iter().enumerate() {
        let a = &c.admissions[r.admission as usize];
        let drug = &DRUGS[r.drug as usize];
        w.write_field(fmt_u64(&mut n, i as u64 + 1))?;
        w.write_field(fmt_u64(&mut n, u64::from(a.subject_id)))?;
        w.write_field(fmt_u64(&mut n, u64::from(a.hadm_id)))?;
        w.write_field("")?; // ICUSTAY_ID
        w.write_field(fmt_datetime(&mut t, r.start_day * MINUTES_PER_DAY))?;
        w.write_field(fmt_datetime(&mut t, r.end_day * MINUTES_PER_DAY))?;
        w.write_field(drug.rx[0])?; // DRUG_TYPE
        w.write_field(drug.drug)?;
        for field in &drug.rx[1..] {
            w.write_field(field)?;
        }
        w.write_record(None::<&[u8]>)?;
    }
    Ok(())
}

fn write_dictionary<'a, I>(w: &mut csv::Writer<File>, rows: I) -> csv::Result<()>
where
    I: Iterator<Item = (&'a str, &'a str, &'a str)>,
{
    w.write_record(DICTIONARY_HEADER)?;
    let mut n = [0u8; 20];
    for (i, (code, short, long)) in rows.enumerate() {
        w.write_field(fmt_u64(&mut n, i as u64 + 1))?;
        w.write_field(code)?;
        w.write_field(short)?;
        w.write_field(long)?;
        w.write_record(None::<&[u8]>)?;
    }
    Ok(())
}

/// `{"id":"SUBJECT-HADM-NEXT_HADM","p":[...]}` per pair; floats in Rust's shortest
/// round-trip form (valid JSON, deterministic).
fn write_oracle(c: &Cohort, w: &mut BufWriter<File>) -> io::Result<()> {
    for o in &c.oracle {
        let a = &c.admissions[o.admission as usize];
        let b = &c.admissions[o.next_admission as usize];
        write!(w, "{{\"id\":\"{}-{}-{}\",\"p\":[", a.subject_id, a.hadm_id, b.hadm_id)?;
        for (d, p) in o.p.iter().enumerate() {
            if d > 0 {
                w.write_all(b",")?;
            }
            write!(w, "{p}")?;
        }
        w.write_all(b"]}\n")?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use ckd_core::icd;
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    fn tmpdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ckd-synth-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
        let mut r = csv::Reader::from_path(path).unwrap();
        let header = r.headers().unwrap().iter().map(String::from).collect();
        let rows = r.records().map(|rec| rec.unwrap().iter().map(String::from).collect()).collect();
        (header, rows)
    }

    /// What the files say, re-derived the way an ingest would.
    struct Parsed {
        /// SUBJECT_ID -> [(ADMITTIME, DISCHTIME, HADM_ID)] sorted by ADMITTIME.
        stays: BTreeMap<u64, Vec<(String, String, u64)>>,
        dx: HashMap<u64, Vec<String>>,
        rx: HashMap<u64, Vec<String>>,
        px: HashMap<u64, Vec<String>>,
        oracle: Vec<(String, Vec<f64>)>,
    }

    fn parse(dir: &Path) -> Parsed {
        let (_, adm) = read_csv(&dir.join("ADMISSIONS.csv"));
        let mut stays: BTreeMap<u64, Vec<(String, String, u64)>> = BTreeMap::new();
        for row in adm {
            stays.entry(row[1].parse().unwrap()).or_default().push((
                row[3].clone(),
                row[4].clone(),
                row[2].parse().unwrap(),
            ));
        }
        for v in stays.values_mut() {
            v.sort();
        }
        let group = |name: &str, key: usize, val: usize| {
            let (_, rows) = read_csv(&dir.join(name));
            let mut m: HashMap<u64, Vec<String>> = HashMap::new();
            for row in rows {
                m.entry(row[key].parse().unwrap()).or_default().push(row[val].clone());
            }
            m
        };
        let oracle = fs::read_to_string(dir.join("oracle.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let id = v["id"].as_str().unwrap().to_string();
                let p = v["p"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
                (id, p)
            })
            .collect();
        Parsed {
            stays,
            dx: group("DIAGNOSES_ICD.csv", 2, 4),
            rx: group("PRESCRIPTIONS.csv", 2, 7),
            px: group("PROCEDURES_ICD.csv", 2, 4),
            oracle,
        }
    }

    fn phenotypes_from_codes(p: &Parsed, hadm: u64) -> LabelSet {
        icd::phenotypes_of(p.dx.get(&hadm).into_iter().flatten().map(String::as_str))
    }

    #[test]
    fn label_constants_follow_label_order() {
        let expect = [
            (AKI, "Acute and unspecified renal failure"),
            (STROKE, "Acute cerebrovascular disease"),
            (AMI, "Acute myocardial infarction"),
            (DYSRHYTHMIA, "Cardiac dysrhythmias"),
            (CKD, "Chronic kidney disease"),
            (COPD, "Chronic obstructive pulmonary disease and bronchiectasis"),
            (COMPLICATION, "Complications of surgical procedures or medical care"),
            (CONDUCTION, "Conduction disorders"),
            (CHF, "Congestive heart failure; nonhypertensive"),
            (CAD, "Coronary atherosclerosis and other heart disease"),
            (DM_COMPLICATED, "Diabetes mellitus with complications"),
            (DM, "Diabetes mellitus without complication"),
            (LIPID, "Disorders of lipid metabolism"),
            (HTN, "Essential hypertension"),
            (FLUID, "Fluid and electrolyte disorders"),
            (GI_BLEED, "Gastrointestinal hemorrhage"),
            (HTN_COMPLICATED, "Hypertension with complications and secondary hypertension"),
            (LIVER, "Other liver diseases"),
            (LOWER_RESP, "Other lower respiratory disease"),
            (UPPER_RESP, "Other upper respiratory disease"),
            (PLEURISY, "Pleurisy; pneumothorax; pulmonary collapse"),
            (PNEUMONIA, "Pneumonia (except that caused by tuberculosis or sexually transmitted disease)"),
            (RESP_FAILURE, "Respiratory failure; insufficiency; arrest (adult)"),
            (SEPSIS, "Septicemia (except in labor)"),
            (SHOCK, "Shock"),
        ];
        for (i, (d, name)) in expect.iter().enumerate() {
            assert_eq!(*d, i);
            assert_eq!(PHENOTYPES[*d].name, *name);
        }
    }

    #[test]
    fn chronic_phenotypes_persist_acute_ones_mostly_resolve() {
        for (d, ph) in PHENOTYPES.iter().enumerate() {
            let w = TRANSITION_SELF[d];
            if ph.chronic {
                assert!(w >= 3.5, "{}: chronic but persistence {w}", ph.name);
            } else {
                assert!(w <= 2.2, "{}: acute but persistence {w}", ph.name);
            }
        }
        for &(e, d, _) in TRANSITION_CROSS {
            assert_ne!(e, d, "self terms belong in TRANSITION_SELF");
        }
    }

    /// Every phenotype code maps to its phenotype, every noise code to none, and every
    /// three-digit category the generator can emit maps to exactly one phenotype or to none:
    /// the category titles of a visit determine its phenotype set.
    #[test]
    fn emitted_codes_are_title_identifiable() {
        let mut by_category: BTreeMap<&str, BTreeSet<Option<u8>>> = BTreeMap::new();
        for (d, list) in PHENOTYPE_CODES.iter().enumerate() {
            assert!(!list.is_empty(), "{} has no code", PHENOTYPES[d].name);
            for &(code, weight) in *list {
                assert!(weight > 0, "{code}");
                assert_eq!(icd::phenotype_of(code), Some(d as u8), "{code}");
                let cat = icd::category_of(code).unwrap();
                assert!(icd::category_title(cat).is_some(), "no title for category {cat}");
                by_category.entry(cat).or_default().insert(Some(d as u8));
            }
        }
        for m in NOISE_DIAGNOSES {
            assert_eq!(icd::phenotype_of(m.code), None, "{}", m.code);
            let cat = icd::category_of(m.code).unwrap();
            assert!(icd::category_title(cat).is_some(), "no title for category {cat}");
            // Strict: no benchmark code at all shares the noise code's category.
            assert!(
                ckd_core::tables::ccs::ICD9_CCS.iter().all(|(c, _)| icd::category_of(c) != Some(cat)),
                "noise code {} shares category {cat} with a benchmark code",
                m.code
            );
            by_category.entry(cat).or_default().insert(None);
        }
        let mut by_title: BTreeMap<&str, BTreeSet<Option<u8>>> = BTreeMap::new();
        for (cat, labels) in &by_category {
            assert_eq!(labels.len(), 1, "category {cat} is ambiguous: {labels:?}");
            let title = icd::category_title(cat).unwrap();
            by_title.entry(title).or_default().extend(labels);
        }
        // The input text shows titles: distinct categories must not share a title either.
        for (title, labels) in &by_title {
            assert_eq!(labels.len(), 1, "title {title:?} is ambiguous: {labels:?}");
        }
        // Categories that ICD9_CCS splits between phenotypes, used here with one phenotype only.
        let split: Vec<&str> = by_category
            .keys()
            .copied()
            .filter(|cat| {
                let ls: BTreeSet<u8> = ckd_core::tables::ccs::ICD9_CCS
                    .iter()
                    .filter(|(c, _)| icd::category_of(c) == Some(*cat))
                    .map(|(_, l)| *l)
                    .collect();
                ls.len() > 1
            })
            .collect();
        assert_eq!(split, ["249", "250", "276", "401", "518", "785", "995"]);
    }

    #[test]
    fn catalogues_are_consistent() {
        let dict: BTreeSet<&str> = DX_DICT.iter().map(|r| r.0).collect();
        assert_eq!(dict.len(), DX_DICT.len(), "duplicate code in DX_DICT");
        let mut emitted: BTreeSet<&str> = PHENOTYPE_CODES.iter().flat_map(|l| l.iter().map(|c| c.0)).collect();
        emitted.extend(NOISE_DIAGNOSES.iter().map(|m| m.code));
        assert_eq!(dict, emitted, "DX_DICT must list exactly the emittable codes");
        for (code, short, long) in DX_DICT {
            assert!(!short.is_empty() && !long.is_empty(), "{code}");
        }
        assert!(DRUGS.len() <= 128 && PROCEDURES.len() <= 64);
        let names: BTreeSet<&str> = DRUGS.iter().map(|j| j.drug).collect();
        assert_eq!(names.len(), DRUGS.len(), "duplicate drug");
        let codes: BTreeSet<&str> = PROCEDURES.iter().map(|r| r.code).collect();
        assert_eq!(codes.len(), PROCEDURES.len(), "duplicate procedure code");
        let shorts: BTreeSet<&str> = PROCEDURES.iter().map(|r| r.short).collect();
        assert_eq!(shorts.len(), PROCEDURES.len(), "procedure short titles must be distinct");
        let probs = DRUGS
            .iter()
            .flat_map(|j| std::iter::once(j.base).chain(j.given.iter().map(|g| g.1)))
            .chain(PROCEDURES.iter().flat_map(|r| std::iter::once(r.base).chain(r.given.iter().map(|g| g.1))))
            .chain(NOISE_DIAGNOSES.iter().flat_map(|m| std::iter::once(m.base).chain(m.given.iter().map(|g| g.1))));
        for p in probs {
            assert!((0.0..1.0).contains(&p), "{p}");
        }
        // Informative drugs exist, and every drug effect is on a phenotype.
        assert!(DRUGS.iter().filter(|j| !j.effect.is_empty()).count() >= 25);
        assert!(DRUGS.iter().filter(|j| j.given.is_empty()).count() >= 10);
    }

    #[test]
    fn dates_round_trip_and_format() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for day in [-1000, 0, 59, 60, 11_016, 47_482, 47_483, 80_000] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        let mut b = [0u8; 19];
        let t = days_from_civil(2164, 10, 23) * MINUTES_PER_DAY + 21 * 60 + 9;
        assert_eq!(fmt_datetime(&mut b, t), b"2164-10-23 21:09:00");
        let t = days_from_civil(2100, 2, 28) * MINUTES_PER_DAY + 24 * 60;
        assert_eq!(fmt_datetime(&mut b, t), b"2100-03-01 00:00:00"); // 2100 is not a leap year
        let mut n = [0u8; 20];
        assert_eq!(fmt_u64(&mut n, 0), b"0");
        assert_eq!(fmt_u64(&mut n, 100_001), b"100001");
        assert_eq!(fmt_u64(&mut n, u64::MAX), u64::MAX.to_string().as_bytes());
    }

    fn write(cfg: &SynthConfig, tag: &str) -> (PathBuf, SynthSummary) {
        let dir = tmpdir(tag);
        let summary = write_cohort(&generate(cfg), &dir).unwrap();
        (dir, summary)
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let cfg = SynthConfig { patients: 300, seed: 7, readmission_scale: 2.0, ..Default::default() };
        let (a, _) = write(&cfg, "det-a");
        let (b, _) = write(&cfg, "det-b");
        let (c, _) = write(&SynthConfig { seed: 8, ..cfg.clone() }, "det-c");
        for name in COHORT_FILES {
            let x = fs::read(a.join(name)).unwrap();
            assert_eq!(x, fs::read(b.join(name)).unwrap(), "{name} differs for the same seed");
            assert!(!a.join(format!("{name}.tmp")).exists());
            if !name.starts_with("D_ICD") {
                assert_ne!(x, fs::read(c.join(name)).unwrap(), "{name} equal for another seed");
            }
        }
        assert_eq!(generate(&cfg), generate(&cfg));
        for d in [a, b, c] {
            fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn files_have_mimic_layout() {
        let cfg = SynthConfig { patients: 200, seed: 3, readmission_scale: 2.0, ..Default::default() };
        let (dir, s) = write(&cfg, "layout");
        let header = |name: &str| {
            let bytes = fs::read(dir.join(name)).unwrap();
            let end = bytes.windows(2).position(|w| w == b"\r\n").unwrap();
            String::from_utf8(bytes[..end].to_vec()).unwrap()
        };
        // Headers exactly as in MIMIC-III v1.4 (and the demo in shared/data).
        assert_eq!(
            header("ADMISSIONS.csv"),
            "ROW_ID,SUBJECT_ID,HADM_ID,ADMITTIME,DISCHTIME,DEATHTIME,ADMISSION_TYPE,\
             ADMISSION_LOCATION,DISCHARGE_LOCATION,INSURANCE,LANGUAGE,RELIGION,MARITAL_STATUS,\
             ETHNICITY,EDREGTIME,EDOUTTIME,DIAGNOSIS,HOSPITAL_EXPIRE_FLAG,HAS_CHARTEVENTS_DATA"
        );
        assert_eq!(header("DIAGNOSES_ICD.csv"), "ROW_ID,SUBJECT_ID,HADM_ID,SEQ_NUM,ICD9_CODE");
        assert_eq!(header("PROCEDURES_ICD.csv"), "ROW_ID,SUBJECT_ID,HADM_ID,SEQ_NUM,ICD9_CODE");
        assert_eq!(
            header("PRESCRIPTIONS.csv"),
            "ROW_ID,SUBJECT_ID,HADM_ID,ICUSTAY_ID,STARTDATE,ENDDATE,DRUG_TYPE,DRUG,\
             DRUG_NAME_POE,DRUG_NAME_GENERIC,FORMULARY_DRUG_CD,GSN,NDC,PROD_STRENGTH,\
             DOSE_VAL_RX,DOSE_UNIT_RX,FORM_VAL_DISP,FORM_UNIT_DISP,ROUTE"
        );
        assert_eq!(header("D_ICD_DIAGNOSES.csv"), "ROW_ID,ICD9_CODE,SHORT_TITLE,LONG_TITLE");
        assert_eq!(header("D_ICD_PROCEDURES.csv"), "ROW_ID,ICD9_CODE,SHORT_TITLE,LONG_TITLE");

        let (_, adm) = read_csv(&dir.join("ADMISSIONS.csv"));
        assert_eq!(adm.len(), s.admissions);
        let time_ok =
            |t: &str| t.len() == 19 && t.as_bytes()[4] == b'-' && t.as_bytes()[10] == b' ' && t.ends_with(":00");
        let hadm: BTreeSet<&str> = adm.iter().map(|r| r[2].as_str()).collect();
        assert_eq!(hadm.len(), adm.len(), "HADM_ID not unique");
        for (i, r) in adm.iter().enumerate() {
            assert_eq!(r.len(), 19);
            assert_eq!(r[0], (i + 1).to_string());
            assert!(time_ok(&r[3]) && time_ok(&r[4]), "{r:?}");
            assert!(r[3] < r[4], "discharge before admission: {r:?}");
            assert!(r[5].is_empty() || r[5] == r[4]);
            assert_eq!(r[17] == "1", !r[5].is_empty());
        }
        // The drug with two spaces survives, and a title with a comma is quoted and read back.
        let (_, rx) = read_csv(&dir.join("PRESCRIPTIONS.csv"));
        assert_eq!(rx.len(), s.prescription_rows);
        assert!(rx.iter().any(|r| r[7] == "Sodium Chloride 0.9%  Flush"));
        assert!(rx.iter().all(|r| r.len() == 19 && time_ok(&r[4]) && r[4] <= r[5]));
        let (_, d) = read_csv(&dir.join("D_ICD_DIAGNOSES.csv"));
        assert!(d.iter().any(|r| r[1] == "5849" && r[3] == "Acute kidney failure, unspecified"));
        let raw = fs::read_to_string(dir.join("D_ICD_DIAGNOSES.csv")).unwrap();
        assert!(raw.contains("\"Acute kidney failure, unspecified\""));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn times_strictly_increase_per_patient() {
        let cfg = SynthConfig { patients: 2000, seed: 11, readmission_scale: 3.0, ..Default::default() };
        let (dir, s) = write(&cfg, "times");
        let p = parse(&dir);
        assert_eq!(p.stays.len(), cfg.patients);
        let mut multi = 0;
        for stays in p.stays.values() {
            assert!(stays.len() <= cfg.max_visits);
            multi += (stays.len() > 1) as usize;
            for w in stays.windows(2) {
                assert!(w[0].0 < w[0].1 && w[0].1 < w[1].0, "overlap: {w:?}");
            }
        }
        assert!(multi > 500, "{multi}");
        assert_eq!(s.pairs, s.admissions - s.patients);
        // The in-memory cohort agrees: file order is time order within a patient.
        let c = generate(&cfg);
        for w in c.admissions.windows(2) {
            if w[0].subject_id == w[1].subject_id {
                assert!(w[0].admit_min < w[0].disch_min && w[0].disch_min < w[1].admit_min);
                if let Some((reg, _)) = w[1].ed_min {
                    assert!(w[0].disch_min < reg);
                }
            }
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn written_codes_are_in_dictionaries_and_categories_are_pure() {
        let cfg = SynthConfig { patients: 3000, seed: 5, ..Default::default() };
        let (dir, _) = write(&cfg, "codes");
        let (_, dx) = read_csv(&dir.join("DIAGNOSES_ICD.csv"));
        let (_, ddx) = read_csv(&dir.join("D_ICD_DIAGNOSES.csv"));
        let known: BTreeSet<&str> = ddx.iter().map(|r| r[1].as_str()).collect();
        let mut by_category: BTreeMap<String, BTreeSet<Option<u8>>> = BTreeMap::new();
        for r in &dx {
            assert!(known.contains(r[4].as_str()), "{} not in D_ICD_DIAGNOSES", r[4]);
            let cat = icd::category_of(&r[4]).unwrap().to_string();
            by_category.entry(cat).or_default().insert(icd::phenotype_of(&r[4]));
        }
        for (cat, labels) in &by_category {
            assert_eq!(labels.len(), 1, "category {cat} maps to {labels:?}");
        }
        let (_, px) = read_csv(&dir.join("PROCEDURES_ICD.csv"));
        let (_, dpx) = read_csv(&dir.join("D_ICD_PROCEDURES.csv"));
        let known: BTreeSet<&str> = dpx.iter().map(|r| r[1].as_str()).collect();
        assert!(!px.is_empty());
        for r in &px {
            assert!(known.contains(r[4].as_str()), "{} not in D_ICD_PROCEDURES", r[4]);
        }
        // Every admission has at least one diagnosis; SEQ_NUM runs 1..n per admission.
        let mut seqs: HashMap<&str, Vec<u32>> = HashMap::new();
        for r in &dx {
            seqs.entry(r[2].as_str()).or_default().push(r[3].parse().unwrap());
        }
        let (_, adm) = read_csv(&dir.join("ADMISSIONS.csv"));
        assert_eq!(seqs.len(), adm.len());
        for s in seqs.values() {
            assert!(s.iter().enumerate().all(|(i, x)| *x == i as u32 + 1));
        }
        fs::remove_dir_all(dir).unwrap();
    }

    /// The oracle, re-derived from the written files: pairs are exactly the consecutive
    /// admissions, `p` is the model's function of the visit's written facts, and the sampled
    /// next-visit labels (re-derived from the written codes) match `p` on average.
    #[test]
    fn oracle_is_calibrated_against_rederived_labels() {
        let cfg = SynthConfig { patients: 4000, seed: 2024, readmission_scale: 3.0, ..Default::default() };
        let (dir, summary) = write(&cfg, "oracle");
        let p = parse(&dir);
        let mut ids = Vec::new();
        for (subject, stays) in &p.stays {
            for w in stays.windows(2) {
                ids.push((format!("{subject}-{}-{}", w[0].2, w[1].2), w[0].2, w[1].2));
            }
        }
        assert_eq!(ids.len(), p.oracle.len());
        assert!(ids.len() > 2500, "{}", ids.len());
        let oracle: HashMap<&str, &Vec<f64>> = p.oracle.iter().map(|(id, v)| (id.as_str(), v)).collect();
        let empty = Vec::new();
        let mut sum_y = [0.0f64; NUM_LABELS];
        let mut sum_p = [0.0f64; NUM_LABELS];
        let mut var = [0.0f64; NUM_LABELS];
        let mut scores = vec![Vec::new(); NUM_LABELS];
        let mut targets = vec![Vec::new(); NUM_LABELS];
        for (id, hadm, next) in &ids {
            let probs = oracle.get(id.as_str()).unwrap_or_else(|| panic!("no oracle row for {id}"));
            assert_eq!(probs.len(), NUM_LABELS);
            // Markov in the observed facts: recompute from what visit i's rows show.
            let s = phenotypes_from_codes(&p, *hadm);
            let drugs: Vec<&str> = p.rx.get(hadm).unwrap_or(&empty).iter().map(String::as_str).collect();
            let procs: Vec<&str> = p.px.get(hadm).unwrap_or(&empty).iter().map(String::as_str).collect();
            let expect = oracle_probabilities(s, &drugs, &procs);
            let y = phenotypes_from_codes(&p, *next);
            for d in 0..NUM_LABELS {
                let pd = probs[d];
                assert!(pd > 0.0 && pd < 1.0, "{id}: p[{d}] = {pd}");
                assert!((pd - expect[d]).abs() < 1e-12, "{id}: p[{d}] {pd} vs {}", expect[d]);
                let yd = y.contains(d as u8);
                sum_y[d] += yd as u8 as f64;
                sum_p[d] += pd;
                var[d] += pd * (1.0 - pd);
                scores[d].push(pd);
                targets[d].push(yd);
            }
        }
        let n = ids.len() as f64;
        for d in 0..NUM_LABELS {
            let z = (sum_y[d] - sum_p[d]) / var[d].sqrt();
            assert!(
                z.abs() < 4.5,
                "{}: observed {:.4} vs oracle mean {:.4} (z = {z:.2})",
                PHENOTYPES[d].name,
                sum_y[d] / n,
                sum_p[d] / n
            );
        }
        let aucs: Vec<f64> = (0..NUM_LABELS).filter_map(|d| roc_auc(&scores[d], &targets[d])).collect();
        assert_eq!(aucs.len(), NUM_LABELS);
        let macro_auc = aucs.iter().sum::<f64>() / aucs.len() as f64;
        eprintln!("oracle macro AUC {macro_auc:.4} on {} pairs", ids.len());
        assert!((0.72..0.95).contains(&macro_auc), "macro AUC {macro_auc}");
        // serde_json may parse a float one ulp off, which can reorder near-ties.
        assert!((summary.oracle_macro_auc.unwrap() - macro_auc).abs() < 1e-4);
        for a in &aucs {
            assert!(*a > 0.55 && *a < 0.99, "{aucs:?}");
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn mimic_like_visit_counts_and_prevalence() {
        let c = generate(&SynthConfig { patients: 20_000, seed: 1, ..Default::default() });
        let s = c.summary();
        let per_patient = s.admissions as f64 / s.patients as f64;
        assert!((1.2..1.36).contains(&per_patient), "{per_patient}");
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for a in &c.admissions {
            *counts.entry(a.subject_id).or_default() += 1;
        }
        let single = counts.values().filter(|n| **n == 1).count() as f64 / s.patients as f64;
        assert!((0.78..0.88).contains(&single), "{single}");
        assert!(counts.values().any(|n| *n >= 5));
        for l in &s.prevalence {
            eprintln!("{:<60} all {:.3} next {:.3} oracle {:.3}", l.label, l.admissions, l.next_visit, l.oracle_mean);
            assert!((0.02..0.6).contains(&l.admissions), "{}: {}", l.label, l.admissions);
            assert!((0.01..0.65).contains(&l.next_visit), "{}: {}", l.label, l.next_visit);
        }
        let prev = |d: usize| s.prevalence[d].admissions;
        for d in [HTN, DYSRHYTHMIA, CHF, FLUID, CAD] {
            assert!((0.18..0.5).contains(&prev(d)), "{}: {}", PHENOTYPES[d].name, prev(d));
        }
        for d in [SHOCK, GI_BLEED, UPPER_RESP] {
            assert!((0.015..0.1).contains(&prev(d)), "{}: {}", PHENOTYPES[d].name, prev(d));
        }
        // Comorbidity clusters: CKD goes with hypertension with complications.
        let both = c
            .admissions
            .iter()
            .filter(|a| a.phenotypes.contains(CKD as u8) && a.phenotypes.contains(HTN_COMPLICATED as u8))
            .count() as f64
            / s.admissions as f64;
        assert!(both > 1.5 * prev(CKD) * prev(HTN_COMPLICATED), "{both}");
    }

    #[test]
    fn drugs_change_next_visit_risk() {
        let chf = LabelSet::from_labels([CHF as u8]);
        let without = oracle_probabilities(chf, &[], &[]);
        let with = oracle_probabilities(chf, &["Furosemide"], &[]);
        assert!(with[CHF] < without[CHF]);
        assert!(with[FLUID] > without[FLUID]);
        let vanc = oracle_probabilities(LabelSet::EMPTY, &["Vancomycin"], &[]);
        let none = oracle_probabilities(LabelSet::EMPTY, &["Acetaminophen", "Unknown drug"], &[]);
        assert!(vanc[AKI] > none[AKI]);
        assert_eq!(none, oracle_probabilities(LabelSet::EMPTY, &[], &[]));
        let vent = oracle_probabilities(LabelSet::EMPTY, &[], &["9672"]);
        assert!(vent[PNEUMONIA] > none[PNEUMONIA]);
    }

    #[test]
    fn empty_and_tiny_configs() {
        let c = generate(&SynthConfig { patients: 0, ..Default::default() });
        assert!(c.admissions.is_empty() && c.oracle.is_empty());
        let s = c.summary();
        assert_eq!(s.oracle_macro_auc, None);
        let c = generate(&SynthConfig { patients: 50, max_visits: 1, readmission_scale: 5.0, ..Default::default() });
        assert_eq!(c.admissions.len(), 50);
        assert!(c.oracle.is_empty());
    }

    #[test]
    fn write_errors_name_the_path() {
        let dir = tmpdir("err");
        fs::create_dir_all(&dir).unwrap();
        let blocker = dir.join("not-a-dir");
        fs::write(&blocker, b"x").unwrap();
        let c = generate(&SynthConfig { patients: 5, ..Default::default() });
        let err = write_cohort(&c, &blocker.join("out")).unwrap_err();
        assert!(matches!(err, SynthError::CreateDir { .. }), "{err:?}");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
        // A directory where a file should go: the error names that file.
        let out = dir.join("out");
        fs::create_dir_all(out.join("ADMISSIONS.csv")).unwrap();
        let err = write_cohort(&c, &out).unwrap_err();
        assert!(err.to_string().contains("ADMISSIONS.csv"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    /// Development tool: iterates `b_d ← b_d + logit(t_d) − logit(mean oracle p_d)` and prints
    /// the calibrated `TRANSITION_BIAS`. Run with
    /// `cargo test --release -p ckd-trainer --lib synth::tests::calibrate -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn calibrate_transition_bias() {
        let logit = |p: f64| (p / (1.0 - p)).ln();
        let mut bias = TRANSITION_BIAS;
        let cfg = SynthConfig { patients: 200_000, seed: 99, ..Default::default() };
        for it in 0..10 {
            let c = generate_with(&cfg, &Model::with_bias(bias));
            let s = c.summary();
            let mut worst = 0.0f64;
            for d in 0..NUM_LABELS {
                let m = s.prevalence[d].oracle_mean;
                worst = worst.max((m - TARGET_PREVALENCE[d]).abs());
                bias[d] += 0.8 * (logit(TARGET_PREVALENCE[d]) - logit(m));
            }
            eprintln!("iteration {it}: worst |prevalence - target| {worst:.4}, AUC {:?}", s.oracle_macro_auc);
        }
        let c = generate_with(&cfg, &Model::with_bias(bias));
        for (d, ph) in PHENOTYPES.iter().enumerate() {
            let scores: Vec<f64> = c.oracle.iter().map(|o| o.p[d]).collect();
            let targets: Vec<bool> =
                c.oracle.iter().map(|o| c.admissions[o.next_admission as usize].phenotypes.contains(d as u8)).collect();
            let p1: Vec<f64> = c
                .oracle
                .iter()
                .filter(|o| c.admissions[o.admission as usize].phenotypes.contains(d as u8))
                .map(|o| o.p[d])
                .collect();
            eprintln!(
                "{:<58} AUC {:.3}  mean p | present {:.3}",
                ph.name,
                roc_auc(&scores, &targets).unwrap_or(f64::NAN),
                p1.iter().sum::<f64>() / p1.len().max(1) as f64
            );
        }
        let rounded: Vec<String> = bias.iter().map(|b| format!("{:.2}", b)).collect();
        eprintln!("TRANSITION_BIAS = [{}]", rounded.join(", "));
    }
}
