//! The MIMIC-III tables of an ingest, table by table: the code dictionaries, the admissions,
//! their diagnosis and procedure codes and their prescriptions; then one visit per admission and
//! one next-visit sample per pair of consecutive admissions of a patient. [`ingest_mimic`] and
//! [`ingest_mimic_bytes`] run them in that order and join their results into samples.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ckd_core::format::{hex, SampleFile};
use ckd_core::icd;
use ckd_core::split::SplitConfig;
use ckd_core::visit::{Coded, Sample, Visit};
use sha2::{Digest, Sha256};

use super::{
    attach_knowledge, check_rows, timestamp, IngestConfig, IngestError, IngestSummary, Ingested, MimicTables, Progress,
    Source, Table, TableStats,
};

/// A non-negative integer field (an id or SEQ_NUM); errors name `file`, `line` and `column`.
fn parse_id(file: &Path, line: u64, column: &str, s: &str) -> Result<u64, IngestError> {
    s.parse::<u64>().map_err(|_| IngestError::Row {
        file: file.to_path_buf(),
        line,
        column: column.into(),
        msg: format!("expected a non-negative integer, found {s:?}"),
    })
}

/// One admission as its rows are read: its patient, ADMITTIME, `(SEQ_NUM, code)` of its
/// diagnoses and procedures, and its drugs (indices into the interned names), each once.
pub(super) struct Admission {
    subject: u64,
    time: String,
    dx: Vec<(u32, String)>,
    px: Vec<(u32, String)>,
    meds: Vec<u32>,
}

/// The tables of one ingest as they are read: each table's bytes go into `hasher` (the source
/// hash) and its accounting into `summary`, in the order the tables are read.
pub(super) struct Tables<'a, 'p> {
    pub src: Source<'a>,
    pub hasher: Sha256,
    pub lenient: bool,
    pub progress: Progress<'p>,
    pub summary: IngestSummary,
}

impl Tables<'_, '_> {
    /// Streams `columns` of `table` through `f(path, fields, line, stats)` (see
    /// [`Table::for_each`]; progress is labelled with the table's name), then checks the table's
    /// accounting and records it in the summary. Returns the table's path.
    fn read(
        &mut self,
        table: &'static str,
        columns: &'static [&'static str],
        mut f: impl FnMut(&Path, &[&str], u64, &mut TableStats) -> Result<(), IngestError>,
    ) -> Result<PathBuf, IngestError> {
        let mut t = Table::open(self.src, &mut self.hasher, table, columns)?;
        let path = t.path.clone();
        let mut st = TableStats::default();
        t.for_each(&mut st, self.lenient, &mut *self.progress, table, |fields, line, st| f(&path, fields, line, st))?;
        check_rows(&t.path, table, &st, &mut self.summary)?;
        self.summary.tables.insert(table.into(), st);
        Ok(path)
    }

    /// A code dictionary (`D_ICD_DIAGNOSES` or `D_ICD_PROCEDURES`): normalized ICD-9 code ->
    /// short title (a later row of the same code wins); a row with an empty code is skipped.
    pub fn titles(&mut self, table: &'static str) -> Result<HashMap<String, String>, IngestError> {
        let mut titles: HashMap<String, String> = HashMap::new();
        self.read(table, &["ICD9_CODE", "SHORT_TITLE"], |_, f, line, st| {
            match icd::normalize(f[0]) {
                Some(c) => {
                    titles.insert(c, f[1].to_string());
                    st.rows_used += 1;
                }
                None => st.skip("empty code", line),
            }
            Ok(())
        })?;
        Ok(titles)
    }

    /// `ADMISSIONS`: HADM_ID -> admission (no codes yet), and the table's path. ADMITTIME and
    /// DISCHTIME must be real instants, the discharge not before the admission; a repeated
    /// HADM_ID is skipped.
    pub fn admissions(&mut self) -> Result<(HashMap<u64, Admission>, PathBuf), IngestError> {
        let mut adm: HashMap<u64, Admission> = HashMap::new();
        let path =
            self.read("ADMISSIONS", &["SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME"], |path, f, line, st| {
                let subject = parse_id(path, line, "SUBJECT_ID", f[0])?;
                let hadm = parse_id(path, line, "HADM_ID", f[1])?;
                // Real instants only (they are what admissions are ordered by), and a discharge
                // that does not precede its admission.
                let row_err = |column: &str, msg: String| IngestError::Row {
                    file: path.to_path_buf(),
                    line,
                    column: column.into(),
                    msg,
                };
                timestamp::check(f[2]).map_err(|m| row_err("ADMITTIME", m))?;
                timestamp::check(f[3]).map_err(|m| row_err("DISCHTIME", m))?;
                if f[3] < f[2] {
                    return Err(row_err("DISCHTIME", format!("{} is before ADMITTIME {}", f[3], f[2])));
                }
                if adm.contains_key(&hadm) {
                    st.skip("duplicate HADM_ID", line);
                    return Ok(());
                }
                adm.insert(
                    hadm,
                    Admission { subject, time: f[2].to_string(), dx: Vec::new(), px: Vec::new(), meds: Vec::new() },
                );
                st.rows_used += 1;
                Ok(())
            })?;
        Ok((adm, path))
    }

    /// `DIAGNOSES_ICD` (`is_dx`) or `PROCEDURES_ICD`: appends each row's `(SEQ_NUM, code)` to its
    /// admission's diagnoses or procedures (an empty SEQ_NUM sorts last). Rows with an empty
    /// code or an unknown HADM_ID are skipped.
    pub fn codes(
        &mut self,
        table: &'static str,
        is_dx: bool,
        adm: &mut HashMap<u64, Admission>,
    ) -> Result<(), IngestError> {
        self.read(table, &["HADM_ID", "SEQ_NUM", "ICD9_CODE"], |path, f, line, st| {
            let hadm = parse_id(path, line, "HADM_ID", f[0])?;
            // SEQ_NUM is empty for some MIMIC rows; those sort last.
            let seq = if f[1].is_empty() { u32::MAX } else { parse_id(path, line, "SEQ_NUM", f[1])? as u32 };
            let Some(code) = icd::normalize(f[2]) else {
                st.skip("empty code", line);
                return Ok(());
            };
            let Some(a) = adm.get_mut(&hadm) else {
                st.skip("unknown HADM_ID", line);
                return Ok(());
            };
            if is_dx { &mut a.dx } else { &mut a.px }.push((seq, code));
            st.rows_used += 1;
            Ok(())
        })?;
        Ok(())
    }

    /// `PRESCRIPTIONS`: interns drug names in first-seen order (returned; an admission's `meds`
    /// index them) and adds each drug once per admission. Rows with an empty DRUG, an unknown
    /// HADM_ID or a drug the admission already has are skipped.
    pub fn prescriptions(&mut self, adm: &mut HashMap<u64, Admission>) -> Result<Vec<String>, IngestError> {
        let mut drugs: Vec<String> = Vec::new();
        let mut drug_ids: HashMap<String, u32> = HashMap::new();
        self.read("PRESCRIPTIONS", &["HADM_ID", "DRUG"], |path, f, line, st| {
            let hadm = parse_id(path, line, "HADM_ID", f[0])?;
            if f[1].is_empty() {
                st.skip("empty DRUG", line);
                return Ok(());
            }
            let Some(a) = adm.get_mut(&hadm) else {
                st.skip("unknown HADM_ID", line);
                return Ok(());
            };
            let id = match drug_ids.get(f[1]) {
                Some(&id) => id,
                None => {
                    let id = drugs.len() as u32;
                    drugs.push(f[1].to_string());
                    drug_ids.insert(f[1].to_string(), id);
                    id
                }
            };
            if a.meds.contains(&id) {
                st.skip("repeated drug in admission", line);
            } else {
                a.meds.push(id);
                st.rows_used += 1;
            }
            Ok(())
        })?;
        Ok(drugs)
    }
}

/// Admissions by patient: `(ADMITTIME, HADM_ID)` of each, unsorted.
pub(super) type BySubject = BTreeMap<u64, Vec<(String, u64)>>;

/// One visit per admission (codes in SEQ_NUM order; a diagnosis titled by its ICD-9 category,
/// else its dictionary title, else its code; a procedure by its dictionary title, else its
/// code), and each patient's admissions. Counts admissions without diagnoses and the titles
/// that fell back in `summary`.
pub(super) fn visits(
    adm: HashMap<u64, Admission>,
    dx_titles: &HashMap<String, String>,
    px_titles: &HashMap<String, String>,
    drugs: &[String],
    summary: &mut IngestSummary,
) -> (HashMap<u64, Visit>, BySubject) {
    let mut visits: HashMap<u64, Visit> = HashMap::with_capacity(adm.len());
    let mut by_subject: BySubject = BTreeMap::new();
    for (hadm, mut a) in adm {
        a.dx.sort_by_key(|(s, _)| *s);
        a.px.sort_by_key(|(s, _)| *s);
        if a.dx.is_empty() {
            summary.admissions_without_diagnoses += 1;
        }
        let diagnoses =
            a.dx.into_iter()
                .map(|(_, code)| {
                    let title = match icd::category_of(&code).and_then(icd::category_title) {
                        Some(t) => t.to_string(),
                        None => {
                            summary.diagnoses_without_category_title += 1;
                            dx_titles.get(&code).cloned().unwrap_or_else(|| code.clone())
                        }
                    };
                    Coded { code, title }
                })
                .collect();
        let procedures =
            a.px.into_iter()
                .map(|(_, code)| {
                    let title = px_titles.get(&code).cloned().unwrap_or_else(|| {
                        summary.procedures_without_title += 1;
                        code.clone()
                    });
                    Coded { code, title }
                })
                .collect();
        let medications = a.meds.iter().map(|&i| drugs[i as usize].clone()).collect();
        visits.insert(hadm, Visit { diagnoses, medications, procedures });
        by_subject.entry(a.subject).or_default().push((a.time, hadm));
    }
    (visits, by_subject)
}

/// One sample per pair of consecutive admissions of a patient (patients by SUBJECT_ID,
/// admissions by `(ADMITTIME, HADM_ID)`): visit `i` as input, the phenotypes of visit `i+1` as
/// labels, id `<subject>-<hadm i>-<hadm i+1>`, the split assigned per patient.
pub(super) fn next_visit_samples(
    visits: &HashMap<u64, Visit>,
    by_subject: BySubject,
    split: SplitConfig,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    for (subject, mut adms) in by_subject {
        adms.sort();
        let split = split.assign(subject);
        for w in adms.windows(2) {
            let (h0, h1) = (w[0].1, w[1].1);
            let labels = visits[&h1].phenotypes();
            samples.push(Sample {
                id: format!("{subject}-{h0}-{h1}"),
                subject,
                split,
                visit: visits[&h0].clone(),
                knowledge: Vec::new(),
                labels,
                raw: None,
            });
        }
    }
    samples
}

/// Reads a MIMIC-III directory into samples. Reads ADMISSIONS, DIAGNOSES_ICD, PRESCRIPTIONS,
/// PROCEDURES_ICD, D_ICD_DIAGNOSES and D_ICD_PROCEDURES.
pub fn ingest_mimic(dir: &Path, cfg: &IngestConfig, progress: Progress<'_>) -> Result<Ingested, IngestError> {
    ingest_tables(Source::Dir(dir), cfg, progress)
}

/// [`ingest_mimic`] on tables held in memory (uncompressed CSV). The result is the one
/// [`ingest_mimic`] gives on a directory of the same files, except for the recorded source
/// (`mimic:memory`); errors name a table as `<TABLE>.csv` (e.g. `ADMISSIONS.csv:2`).
pub fn ingest_mimic_bytes(
    tables: &MimicTables<'_>,
    cfg: &IngestConfig,
    progress: Progress<'_>,
) -> Result<Ingested, IngestError> {
    ingest_tables(Source::Memory(tables), cfg, progress)
}

fn ingest_tables(src: Source<'_>, cfg: &IngestConfig, progress: Progress<'_>) -> Result<Ingested, IngestError> {
    let mut tables =
        Tables { src, hasher: Sha256::new(), lenient: cfg.lenient, progress, summary: IngestSummary::default() };
    // Dictionaries first: they are small.
    let dx_titles = tables.titles("D_ICD_DIAGNOSES")?;
    let px_titles = tables.titles("D_ICD_PROCEDURES")?;
    let (mut adm, admissions_path) = tables.admissions()?;
    for (table, is_dx) in [("DIAGNOSES_ICD", true), ("PROCEDURES_ICD", false)] {
        tables.codes(table, is_dx, &mut adm)?;
    }
    let drugs = tables.prescriptions(&mut adm)?;
    let Tables { hasher, mut summary, .. } = tables;

    let (visits, by_subject) = visits(adm, &dx_titles, &px_titles, &drugs, &mut summary);
    summary.admissions = visits.len() as u64;
    summary.patients = by_subject.len() as u64;
    let mut samples = next_visit_samples(&visits, by_subject, cfg.split);
    if samples.is_empty() {
        return Err(IngestError::Unusable {
            file: admissions_path,
            msg: format!(
                "no patient has two admissions ({} admissions of {} patients): there is no next-visit sample",
                summary.admissions, summary.patients
            ),
        });
    }
    let knowledge = cfg.knowledge.map(|kc| attach_knowledge(&mut samples, kc));
    for s in &samples {
        *summary.samples.entry(s.split.name()).or_default() += 1;
    }
    let file = SampleFile {
        source: match src {
            Source::Dir(dir) => format!("mimic:{}", dir.display()),
            Source::Memory(_) => "mimic:memory".into(),
        },
        source_hash: hex(&hasher.finalize()),
        split: cfg.split,
        knowledge,
        samples,
    };
    Ok(Ingested { file, summary })
}
