//! Commands that make or read data: `ckd synth`, `ckd ingest`, `ckd gen-tables`, `ckd explain`,
//! and the sample and soft-label readers the other commands share.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use ckd_core::knowledge::{KnowledgeConfig, KnowledgeTable, DEFAULT_FDR};
use ckd_core::visit::{Sample, Split};
use ckd_trainer::ingest::{self, IngestConfig};
use ckd_trainer::student::SoftTargets;
use ckd_trainer::teacher::label as teacher_label;
use ckd_trainer::{codegen, io, pipeline, soft_labels, synth};
use indicatif::{ProgressBar, ProgressStyle};

use super::args::{ExplainArgs, GenTablesArgs, IngestArgs, SynthArgs};
use super::print;

pub fn synth(a: &SynthArgs) -> Result<()> {
    let t = Instant::now();
    let cfg = synth::SynthConfig { patients: a.patients, seed: a.seed, ..Default::default() };
    let cohort = synth::generate(&cfg);
    let s = synth::write_cohort(&cohort, &a.out)?;
    note!(
        "synth: {} patients, {} admissions, {} next-visit pairs -> {} ({:.1} s)",
        s.patients,
        s.admissions,
        s.pairs,
        a.out.display(),
        t.elapsed().as_secs_f64()
    );
    if a.knowledge_report {
        knowledge_report(&a.out)?;
    }
    Ok(())
}

/// `ckd synth --knowledge-report`: the clauses' precision and recall against the generator.
fn knowledge_report(dir: &Path) -> Result<()> {
    let kc = KnowledgeConfig::default();
    let cfg = IngestConfig { knowledge: Some(kc), ..Default::default() };
    let ing = ingest::ingest_mimic(dir, &cfg, &mut |_, _| {})?;
    let train: Vec<&Sample> = ing.file.samples.iter().filter(|s| s.split == Split::Train).collect();
    let truth = synth::therapeutic_effects();
    outln!(
        "knowledge clauses vs the generator ({} training pairs, {} true (phenotype, drug) pairs):",
        train.len(),
        truth.len()
    )?;
    for fdr in [DEFAULT_FDR, 1.0] {
        let t = KnowledgeTable::fit_with_fdr(train.iter().map(|s| (&s.visit, s.labels)), kc, fdr);
        let k = ckd_trainer::knowledge_truth::score(&t, &truth);
        outln!(
            "  fdr {fdr}: {} pairs named, {} true: precision {}, recall {:.3}, recall of what {} per phenotype can hold {:.3}",
            k.emitted,
            k.true_positives,
            k.precision.map_or("n/a".into(), |p| format!("{p:.3}")),
            k.recall,
            kc.top_k,
            k.recall_reachable
        )?;
    }
    Ok(())
}

pub fn ingest(a: &IngestArgs) -> Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.train_frac) && (0.0..=1.0).contains(&a.val_frac) && a.train_frac + a.val_frac <= 1.0,
        "--train-frac and --val-frac must be in [0, 1] and sum to at most 1"
    );
    let cfg = pipeline::IngestSpec {
        split_seed: a.split_seed,
        train_frac: a.train_frac,
        val_frac: a.val_frac,
        knowledge: !a.no_knowledge,
        knowledge_min_support: a.knowledge_min_support,
        lenient: a.lenient,
        refuse_duplicates: a.refuse_duplicates,
    }
    .to_config();
    let t = Instant::now();
    let ing = match (&a.mimic, &a.jsonl) {
        (Some(dir), _) => {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            let mut progress = |table: &str, rows: u64| bar.set_message(format!("ingest {table}: {rows} rows"));
            let ing = ingest::ingest_mimic(dir, &cfg, &mut progress)?;
            bar.finish_and_clear();
            ing
        }
        (None, Some(file)) => ingest::ingest_jsonl(file, &cfg)?,
        (None, None) => unreachable!("clap requires one of --mimic / --jsonl"),
    };
    write_ingest_outputs(&ing, &a.out)?;
    print::ingest_summary(&ing.summary, &a.out, t.elapsed().as_secs_f64());
    warn_empty_splits(&ing.summary, a);
    Ok(())
}

/// Says which splits got no sample (on a small input the per-patient split can leave
/// validation and test empty, and every later command would then read nothing).
fn warn_empty_splits(s: &ingest::IngestSummary, a: &IngestArgs) {
    let empty: Vec<&str> =
        ["train", "val", "test"].into_iter().filter(|k| s.samples.get(k).is_none_or(|&n| n == 0)).collect();
    if empty.is_empty() {
        return;
    }
    let total: u64 = s.samples.values().sum();
    note!(
        "warning: no {} samples ({total} samples from {} patients in all; the split is per patient: --train-frac {}, \
         --val-frac {}, --split-seed {}): raise --val-frac and lower --train-frac, or try another --split-seed",
        empty.join(" and no "),
        s.patients,
        a.train_frac,
        a.val_frac,
        a.split_seed
    );
}

/// Writes an ingest's outputs so that `out` is replaced whole: built beside it, then swapped in
/// (an earlier output is replaced, any other non-empty directory refused).
fn write_ingest_outputs(ing: &ingest::Ingested, out: &Path) -> Result<()> {
    // summary.json is written last: it marks a complete output.
    let mut names = vec!["summary.json"];
    names.extend(ingest::OUTPUT_FILES);
    let stage = ckd_trainer::staged_dir::StagedDir::new(out, &names)
        .with_context(|| format!("output directory {}", out.display()))?;
    ingest::write_outputs(ing, stage.path())?;
    stage.commit().with_context(|| format!("replacing {}", out.display()))?;
    Ok(())
}

pub fn gen_tables(a: &GenTablesArgs) -> Result<()> {
    let yaml = io::read_to_string_regular(&a.ccs_yaml).with_context(|| format!("reading {}", a.ccs_yaml.display()))?;
    let src = codegen::ccs_table_source(&yaml)?;
    io::write_atomic(&a.out, src.as_bytes()).with_context(|| format!("writing {}", a.out.display()))?;
    note!("wrote {}", a.out.display());
    Ok(())
}

pub fn explain(a: &ExplainArgs) -> Result<()> {
    let ev = teacher_label::read_evidence(&a.evidence)?;
    let f = read_sample_file(&a.data)?;
    let by = ev.by_id();
    let Some(id) = &a.id else {
        // `--list`: the samples of the data that have a record, in the data's order.
        let ids: String =
            f.samples.iter().filter(|s| by.contains_key(s.id.as_str())).map(|s| format!("{}\n", s.id)).collect();
        return Ok(print::out_text(&ids)?);
    };
    let hint = "(`ckd explain --list` prints the ids)";
    let sample = f
        .samples
        .iter()
        .find(|s| &s.id == id)
        .with_context(|| format!("{}: no sample {id} {hint}", a.data.display()))?;
    let rec = by
        .get(id.as_str())
        .copied()
        .with_context(|| format!("{}: no record for sample {id} {hint}", a.evidence.display()))?;
    let thresholds = match &a.teacher {
        Some(t) => {
            let text = io::read_to_string_regular(&t.join("teacher.json"))
                .with_context(|| format!("reading {}", t.join("teacher.json").display()))?;
            serde_json::from_str::<ckd_trainer::teacher::TeacherManifest>(&text)?.thresholds
        }
        None => vec![0.5; ckd_core::NUM_LABELS],
    };
    let ex = ckd_trainer::teacher::explain::explain(sample, rec, &thresholds, a.top)?;
    if a.json {
        print::out_text(&io::pretty_json(&ex))?;
    } else {
        print::out_text(&ckd_trainer::teacher::explain::format(&ex))?;
    }
    Ok(())
}

/// Every sample of a `samples.bin`, or every record of a CKD-EHR JSONL file (rendered without
/// knowledge clauses: the records carry their own).
fn read_sample_file(path: &Path) -> Result<ckd_core::format::SampleFile> {
    Ok(if is_sample_bin(path) {
        ingest::read_samples(path)?
    } else {
        ingest::ingest_jsonl(path, &IngestConfig { knowledge: None, ..Default::default() })?.file
    })
}

/// Whether `path` is read as a `samples.bin` (else as CKD-EHR JSONL).
pub fn is_sample_bin(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "bin")
}

/// The samples of `split`, with the source hash and the knowledge table their texts were
/// rendered with. A `samples.bin` gives exactly the samples its ingest put in `split`, whatever
/// it was ingested from (MIMIC-III, the cohort or JSONL). A CKD-EHR JSONL file given directly is
/// one split file (the authors release `train`/`val`/`test` files, `ckd ingest` writes them):
/// every record is read, and `split` only names it.
pub fn load_samples(path: &Path, split: Split) -> Result<(Vec<Sample>, String, Option<KnowledgeTable>)> {
    let f = read_sample_file(path)?;
    let whole_file = !is_sample_bin(path);
    let samples = f.samples.into_iter().filter(|s| whole_file || s.split == split).collect();
    Ok((samples, f.source_hash, f.knowledge))
}

/// Per-sample probabilities for `samples` from a file: an evidence file (`ckd teacher label`),
/// JSON lines `{"id", "p"}` (`.jsonl`, e.g. the synthetic cohort's oracle), or the authors'
/// `hands_name_*.json` (object i = sample i).
pub fn read_soft_labels(path: &Path, samples: &[Sample]) -> Result<SoftTargets> {
    if soft_labels::is_authors_file(path) {
        return Ok(soft_labels::read_authors_file(path, samples)?);
    }
    if path.extension().is_some_and(|e| e == "jsonl") {
        let bytes = io::read_regular(path).with_context(|| format!("reading {}", path.display()))?;
        let text = String::from_utf8(bytes).with_context(|| format!("reading {}", path.display()))?;
        Ok(SoftTargets::from_jsonl(&text, path)?)
    } else {
        let bytes = io::read_regular(path).with_context(|| format!("reading {}", path.display()))?;
        let file =
            ckd_core::evidence::EvidenceFile::from_bytes(&bytes).with_context(|| format!("{}", path.display()))?;
        file.validate().with_context(|| format!("{}", path.display()))?;
        Ok(SoftTargets::from_evidence(file))
    }
}
