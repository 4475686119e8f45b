//! Writing a cohort in the MIMIC-III CSV layout (plus `oracle.jsonl`), each file atomically.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use super::catalogue::DRUGS;
use super::catalogue::{DX_DICT, PROCEDURES};
use super::{Cohort, SynthError, SynthSummary, MINUTES_PER_DAY};
use crate::io::AtomicFile;

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
/// atomically ([`AtomicFile`]: a temporary beside it, flushed and synced, renamed over `NAME`).
pub fn write_cohort(cohort: &Cohort, dir: &Path) -> Result<SynthSummary, SynthError> {
    fs::create_dir_all(dir).map_err(|source| SynthError::CreateDir { path: dir.to_path_buf(), source })?;
    write_csv(dir, COHORT_FILES[0], |w| write_admissions(cohort, w))?;
    let diagnoses = cohort.diagnoses.iter().map(|r| (r.admission, r.seq_num, r.code));
    write_csv(dir, COHORT_FILES[1], |w| write_codes(cohort, w, diagnoses))?;
    write_csv(dir, COHORT_FILES[2], |w| write_prescriptions(cohort, w))?;
    let procedures = cohort.procedures.iter().map(|r| (r.admission, r.seq_num, r.code));
    write_csv(dir, COHORT_FILES[3], |w| write_codes(cohort, w, procedures))?;
    write_csv(dir, COHORT_FILES[4], |w| write_dictionary(w, DX_DICT.iter().map(|&(c, s, l)| (c, s, l))))?;
    write_csv(dir, COHORT_FILES[5], |w| write_dictionary(w, PROCEDURES.iter().map(|r| (r.code, r.short, r.long))))?;
    write_file(dir, COHORT_FILES[6], |w| write_oracle(cohort, w))?;
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

/// One CSV file (CRLF line ends, as MIMIC-III's), written by `body` and committed atomically.
fn write_csv<F>(dir: &Path, name: &str, body: F) -> Result<(), SynthError>
where
    F: FnOnce(&mut Csv<'_>) -> csv::Result<()>,
{
    let path = dir.join(name);
    let mut file = AtomicFile::create(&path).map_err(|e| io_error(&path, e))?;
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(&mut file);
    body(&mut w)
        .and_then(|()| w.flush().map_err(csv::Error::from))
        .map_err(|source| SynthError::Csv { path: path.clone(), source })?;
    drop(w);
    file.commit().map_err(|e| io_error(&path, e))
}

/// One text file, written by `body` and committed atomically.
fn write_file<F>(dir: &Path, name: &str, body: F) -> Result<(), SynthError>
where
    F: FnOnce(&mut AtomicFile) -> io::Result<()>,
{
    let path = dir.join(name);
    let mut file = AtomicFile::create(&path).map_err(|e| io_error(&path, e))?;
    body(&mut file).map_err(|e| io_error(&path, e))?;
    file.commit().map_err(|e| io_error(&path, e))
}

/// The CSV writer of one cohort file.
type Csv<'a> = csv::Writer<&'a mut AtomicFile>;

/// Formats `v` in decimal into `buf`; returns the digits.
pub(super) fn fmt_u64(buf: &mut [u8; 20], mut v: u64) -> &[u8] {
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
pub(super) fn fmt_datetime(buf: &mut [u8; 19], minutes: i64) -> &[u8] {
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
pub(super) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month, day).
pub(super) fn civil_from_days(z: i64) -> (i64, u32, u32) {
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

fn write_admissions(c: &Cohort, w: &mut Csv<'_>) -> csv::Result<()> {
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

/// A `DIAGNOSES_ICD` or `PROCEDURES_ICD` table: one row per `(admission index, SEQ_NUM,
/// ICD9_CODE)` of `rows`, `ROW_ID` counting from 1.
fn write_codes<I>(c: &Cohort, w: &mut Csv<'_>, rows: I) -> csv::Result<()>
where
    I: Iterator<Item = (u32, u16, &'static str)>,
{
    w.write_record(CODES_HEADER)?;
    let mut n = [0u8; 20];
    for (i, (admission, seq_num, code)) in rows.enumerate() {
        let a = &c.admissions[admission as usize];
        w.write_field(fmt_u64(&mut n, i as u64 + 1))?;
        w.write_field(fmt_u64(&mut n, u64::from(a.subject_id)))?;
        w.write_field(fmt_u64(&mut n, u64::from(a.hadm_id)))?;
        w.write_field(fmt_u64(&mut n, u64::from(seq_num)))?;
        w.write_field(code)?;
        w.write_record(None::<&[u8]>)?;
    }
    Ok(())
}

fn write_prescriptions(c: &Cohort, w: &mut Csv<'_>) -> csv::Result<()> {
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

fn write_dictionary<'a, I>(w: &mut Csv<'_>, rows: I) -> csv::Result<()>
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
fn write_oracle(c: &Cohort, w: &mut AtomicFile) -> io::Result<()> {
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
