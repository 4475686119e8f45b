//! The stages every run shares before students are trained (`ckd pipeline`, `ckd demo`,
//! `ckd bench`): the data (a synthetic cohort is generated), the samples, the teacher, its soft
//! labels and evidence, and the out-of-fold soft labels of the training rows.

use std::path::{Path, PathBuf};

use ckd_core::evidence::EvidenceFile;
use ckd_core::knowledge::KnowledgeTable;
use ckd_core::visit::{Sample, Split};
use ckd_core::NUM_LABELS;

use super::stage::{file_hash, key_of, log, Stages};
use super::{msg_err, stage_err, PipelineConfig, PipelineError, Result};
use crate::ingest;
use crate::knowledge_truth::KnowledgeScore;
use crate::report;
use crate::synth;
use crate::teacher::label::{self, LabelConfig};
use crate::teacher::train::{train_teacher, Bars, BaseChoice, TrainTeacherConfig};
use crate::teacher::{self, DeviceSpec, LoadedTeacher};

/// What the shared stages produced.
pub struct Upstream {
    /// Training, validation and test samples.
    pub train: Vec<Sample>,
    /// Validation samples.
    pub val: Vec<Sample>,
    /// Test samples.
    pub test: Vec<Sample>,
    /// The knowledge table the texts were rendered with.
    pub knowledge: Option<KnowledgeTable>,
    /// `samples/samples.bin` and its SHA-256.
    pub samples_bin: PathBuf,
    /// SHA-256 of `samples.bin`.
    pub samples_hash: String,
    /// `samples/` (holds `test.jsonl`).
    pub samples_dir: PathBuf,
    /// The teacher directory and its loaded model.
    pub teacher_dir: PathBuf,
    /// The loaded teacher.
    pub teacher: LoadedTeacher,
    /// SHA-256 of `teacher.json`.
    pub teacher_json_hash: String,
    /// Where the teacher ran.
    pub device: DeviceSpec,
    /// `labels/` (evidence files and `timing.json`).
    pub labels_dir: PathBuf,
    /// Teacher soft labels and evidence of the training rows (out-of-fold soft labels when
    /// `teacher.oof_folds > 0`).
    pub ev_train: EvidenceFile,
    /// SHA-256 of the file `ev_train` was read from.
    pub ev_train_hash: String,
    /// Teacher outputs on the test split.
    pub ev_test: EvidenceFile,
    /// The oracle file of a synthetic cohort.
    pub oracle: Option<PathBuf>,
    /// On a synthetic cohort: the knowledge clauses against the generator's drug effects.
    pub knowledge_score: Option<KnowledgeScore>,
}

fn split_of(samples: &[Sample], split: Split) -> Vec<Sample> {
    samples.iter().filter(|s| s.split == split).cloned().collect()
}

/// Runs (or skips, when current) the shared stages under `cfg.out`.
pub(crate) fn prepare(cfg: &PipelineConfig, bars: &dyn Bars, stages: &mut Stages) -> Result<Upstream> {
    let (data_dir, data_key, oracle) = data_stage(cfg, stages)?;
    let s = samples_stage(cfg, stages, &data_dir, data_key)?;
    let knowledge_score = knowledge_score(cfg, &s.knowledge);
    let (teacher_dir, device, teacher_json_hash) = teacher_stage(cfg, bars, stages, &s.train, &s.val, &s.hash)?;
    let l = labels_stage(cfg, bars, stages, &teacher_dir, device, &s, &teacher_json_hash)?;
    Ok(Upstream {
        train: s.train,
        val: s.val,
        test: s.test,
        knowledge: s.knowledge,
        samples_bin: s.bin,
        samples_hash: s.hash,
        samples_dir: s.dir,
        teacher_dir,
        teacher: l.loaded,
        teacher_json_hash,
        device,
        labels_dir: l.dir,
        ev_train: l.ev_train,
        ev_train_hash: l.ev_train_hash,
        ev_test: l.ev_test,
        oracle,
        knowledge_score,
    })
}

/// Stage 1, the data: generates the synthetic cohort (stage `cohort`) when `data.synth` is set.
/// Returns the MIMIC-layout directory to ingest (`None` for JSONL), the key of the data (what
/// stage `samples` depends on), and the oracle file of a synthetic cohort.
fn data_stage(cfg: &PipelineConfig, stages: &mut Stages) -> Result<(Option<PathBuf>, String, Option<PathBuf>)> {
    if let Some(s) = &cfg.data.synth {
        let dir = cfg.out.join("cohort");
        let key = key_of(&[("synth", super::settings_json("cohort", s)?), ("v", "1".into())]);
        stages.run("cohort", &dir, &key, || {
            let c = synth::generate(&synth::SynthConfig { patients: s.patients, seed: s.seed, ..Default::default() });
            let w = synth::write_cohort(&c, &dir).map_err(stage_err("cohort"))?;
            log(&format!("cohort: {} patients, {} admissions, {} next-visit pairs", w.patients, w.admissions, w.pairs));
            Ok(())
        })?;
        let oracle = dir.join("oracle.jsonl");
        Ok((Some(dir), key, Some(oracle)))
    } else if let Some(m) = &cfg.data.mimic {
        Ok((Some(m.clone()), mimic_key(m)?, None))
    } else {
        let j = cfg.data.jsonl.as_ref().ok_or_else(|| PipelineError::Config("no data".into()))?;
        Ok((None, key_of(&[("jsonl", file_hash("samples", j)?)]), None))
    }
}

/// The key of a MIMIC-III directory: (file name, SHA-256) of each regular file in it, in path
/// order.
fn mimic_key(m: &Path) -> Result<String> {
    let mut parts = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(m)
        .map_err(|e| msg_err("samples", format!("{}: {e}", m.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for p in entries {
        parts.push((
            p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            file_hash("samples", &p)?,
        ));
    }
    let parts: Vec<(&str, String)> = parts.iter().map(|(a, b)| (a.as_str(), b.clone())).collect();
    Ok(key_of(&parts))
}

/// What stage `samples` gave: `samples/`, its `samples.bin` and that file's SHA-256, the
/// knowledge table, and the three splits (each non-empty).
struct SamplesStage {
    dir: PathBuf,
    bin: PathBuf,
    hash: String,
    knowledge: Option<KnowledgeTable>,
    train: Vec<Sample>,
    val: Vec<Sample>,
    test: Vec<Sample>,
}

/// Stage 2, the samples: ingests `data_dir` (MIMIC layout) or `data.jsonl` into `samples/`,
/// then reads them back split by split. A split without samples is an error.
fn samples_stage(
    cfg: &PipelineConfig,
    stages: &mut Stages,
    data_dir: &Option<PathBuf>,
    data_key: String,
) -> Result<SamplesStage> {
    const STAGE: &str = "samples";
    let samples_dir = cfg.out.join("samples");
    let ingest_cfg = cfg.ingest.to_config();
    let skey = key_of(&[("data", data_key), ("ingest", super::settings_json(STAGE, &cfg.ingest)?)]);
    stages.run(STAGE, &samples_dir, &skey, || {
        let ing = match (data_dir, &cfg.data.jsonl) {
            (Some(d), _) => ingest::ingest_mimic(d, &ingest_cfg, &mut |_, _| {}).map_err(stage_err(STAGE))?,
            (None, Some(j)) => ingest::ingest_jsonl(j, &ingest_cfg).map_err(stage_err(STAGE))?,
            (None, None) => return Err(PipelineError::Config("no data".into())),
        };
        ingest::write_outputs(&ing, &samples_dir).map_err(stage_err(STAGE))?;
        log(&format!("samples: {} next-visit samples", ing.file.samples.len()));
        Ok(())
    })?;
    let samples_bin = samples_dir.join("samples.bin");
    let sfile = ingest::read_samples(&samples_bin).map_err(stage_err(STAGE))?;
    let samples_hash = file_hash(STAGE, &samples_bin)?;
    let knowledge = sfile.knowledge.clone();
    let (train, val, test) = (
        split_of(&sfile.samples, Split::Train),
        split_of(&sfile.samples, Split::Val),
        split_of(&sfile.samples, Split::Test),
    );
    if train.is_empty() || val.is_empty() || test.is_empty() {
        return Err(msg_err(
            STAGE,
            format!("need samples in every split (train {}, val {}, test {})", train.len(), val.len(), test.len()),
        ));
    }
    log(&format!("splits: {} train, {} val, {} test", train.len(), val.len(), test.len()));
    Ok(SamplesStage { dir: samples_dir, bin: samples_bin, hash: samples_hash, knowledge, train, val, test })
}

/// On a synthetic cohort with a knowledge table: its clauses scored against the generator's
/// drug effects (logged).
fn knowledge_score(cfg: &PipelineConfig, knowledge: &Option<KnowledgeTable>) -> Option<KnowledgeScore> {
    match (knowledge, &cfg.data.synth) {
        (Some(k), Some(_)) => {
            let s = crate::knowledge_truth::score(k, &crate::synth::therapeutic_effects());
            log(&format!(
                "knowledge clauses vs the generator: {} (phenotype, drug) pairs, precision {}, recall {:.3} ({:.3} of what {} per phenotype can hold)",
                s.emitted,
                s.precision.map_or("n/a".into(), |p| format!("{p:.3}")),
                s.recall,
                s.recall_reachable,
                k.config.top_k
            ));
            Some(s)
        }
        _ => None,
    }
}

/// Stage 3, the teacher: trained into `teacher/` on `train` (`val` for its head). Returns
/// `teacher/`, the device it runs on and the SHA-256 of its `teacher.json`.
fn teacher_stage(
    cfg: &PipelineConfig,
    bars: &dyn Bars,
    stages: &mut Stages,
    train: &[Sample],
    val: &[Sample],
    samples_hash: &str,
) -> Result<(PathBuf, DeviceSpec, String)> {
    const STAGE: &str = "teacher";
    let teacher_dir = cfg.out.join("teacher");
    let device: DeviceSpec = cfg.teacher.device.parse().map_err(PipelineError::Config)?;
    let tspec = teacher_config(cfg, device);
    let base_hash = match &tspec.base {
        BaseChoice::Demo(_) => String::new(),
        BaseChoice::Pretrained(p) if p.is_file() => file_hash(STAGE, p)?,
        BaseChoice::Pretrained(p) => p.display().to_string(),
    };
    let tkey = key_of(&[
        ("samples", samples_hash.to_string()),
        ("base", base_hash),
        (
            "teacher",
            super::settings_json(
                STAGE,
                &(
                    &cfg.teacher.base,
                    &cfg.teacher.demo,
                    &cfg.teacher.lora,
                    &cfg.teacher.sft,
                    &cfg.teacher.head,
                    cfg.teacher.max_len,
                    cfg.teacher.sft_val_limit,
                ),
            )?,
        ),
    ]);
    stages.run(STAGE, &teacher_dir, &tkey, || {
        let (_, rep) = train_teacher(train, val, &tspec, &teacher_dir, bars).map_err(stage_err(STAGE))?;
        log(&format!(
            "teacher: {} fine-tuning steps ({:.1} seq/s), head val macro-F1 {:.3}, macro-AUC {}",
            rep.sft.steps,
            rep.sft.samples_per_sec,
            rep.head.val_macro_f1,
            report::fmt3(rep.head.val_macro_auc)
        ));
        Ok(())
    })?;
    let teacher_json_hash = file_hash(STAGE, &teacher_dir.join("teacher.json"))?;
    Ok((teacher_dir, device, teacher_json_hash))
}

/// What stage `labels` (and `labels-oof`) gave: `labels/`, the loaded teacher, the evidence of
/// the training rows (out-of-fold when `teacher.oof_folds > 0`) with the SHA-256 of its file,
/// and the evidence of the test rows.
struct LabelsStage {
    dir: PathBuf,
    loaded: LoadedTeacher,
    ev_train: EvidenceFile,
    ev_train_hash: String,
    ev_test: EvidenceFile,
}

/// Stage 4: soft labels + evidence for train (distillation) and test (teacher evaluation) from
/// the teacher in `teacher_dir`, with the seconds each took in `labels/timing.json`; then, when
/// `teacher.oof_folds > 0`, the out-of-fold soft labels of the training rows.
fn labels_stage(
    cfg: &PipelineConfig,
    bars: &dyn Bars,
    stages: &mut Stages,
    teacher_dir: &Path,
    device: DeviceSpec,
    s: &SamplesStage,
    teacher_json_hash: &str,
) -> Result<LabelsStage> {
    const STAGE: &str = "labels";
    let (train, val, test) = (&s.train, &s.val, &s.test);
    let labels_dir = cfg.out.join("labels");
    let lcfg = LabelConfig {
        temperature: cfg.teacher.temperature,
        last_k_layers: cfg.teacher.last_k_layers,
        batch_size: cfg.teacher.batch_size,
        shard: None,
        save_every: 20,
    };
    let lkey = key_of(&[
        ("teacher", teacher_json_hash.to_string()),
        ("samples", s.hash.clone()),
        ("label", format!("{} {} {}", lcfg.temperature, lcfg.last_k_layers, lcfg.batch_size)),
    ]);
    let loaded = teacher::load_teacher(teacher_dir, None, device).map_err(stage_err(STAGE))?;
    stages.run(STAGE, &labels_dir, &lkey, || {
        let mut label_secs = [0f64; 2];
        for (k, (name, set)) in [("train", train), ("test", test)].into_iter().enumerate() {
            let p = labels_dir.join(format!("evidence-{name}.bin"));
            let bar = bars.bar(&format!("teacher labels ({name})"));
            let o = label::label(&loaded, set, &lcfg, &p, &bar).map_err(stage_err(STAGE))?;
            bar.finish_and_clear();
            label_secs[k] = o.seconds;
            log(&format!(
                "labels ({name}): {} samples, {:.1} samples/s, {:.0} prompt tokens/s, {} prompts cut",
                o.in_shard,
                o.labelled as f64 / o.seconds.max(1e-9),
                o.tokens as f64 / o.seconds.max(1e-9),
                o.truncated
            ));
        }
        crate::io::write_atomic(&labels_dir.join("timing.json"), crate::io::pretty_json(&label_secs).as_bytes())
            .map_err(stage_err(STAGE))
    })?;
    let mut ev_train = label::read_evidence(&labels_dir.join("evidence-train.bin")).map_err(stage_err(STAGE))?;
    let ev_test = label::read_evidence(&labels_dir.join("evidence-test.bin")).map_err(stage_err(STAGE))?;
    let mut ev_hash = file_hash(STAGE, &labels_dir.join("evidence-train.bin"))?;
    if cfg.teacher.oof_folds > 0 {
        let oof_dir = cfg.out.join("labels-oof");
        let opath = oof_dir.join("evidence-train.bin");
        out_of_fold(cfg, &loaded, train, val, &mut ev_train, &ev_hash, bars, stages)?;
        ev_train = label::read_evidence(&opath).map_err(stage_err("labels-oof"))?;
        ev_hash = file_hash("labels-oof", &opath)?;
    }
    Ok(LabelsStage { dir: labels_dir, loaded, ev_train, ev_train_hash: ev_hash, ev_test })
}

/// The teacher library's settings from `[teacher]` (`ckd teacher train` builds the same).
pub fn teacher_config(cfg: &PipelineConfig, device: DeviceSpec) -> TrainTeacherConfig {
    let base = if cfg.teacher.base == "demo" {
        BaseChoice::Demo(cfg.teacher.demo.clone())
    } else {
        BaseChoice::Pretrained(PathBuf::from(&cfg.teacher.base))
    };
    TrainTeacherConfig {
        base,
        lora: cfg.teacher.lora.clone(),
        sft: cfg.teacher.sft.clone(),
        head: cfg.teacher.head.clone(),
        max_len: cfg.teacher.max_len,
        device,
        feature_batch: cfg.teacher.batch_size,
        sft_val_limit: cfg.teacher.sft_val_limit,
    }
}

/// Stage `labels-oof`: out-of-fold soft labels for the training rows (attention evidence stays
/// the teacher's), written to `labels-oof/evidence-train.bin`.
#[allow(clippy::too_many_arguments)]
fn out_of_fold(
    cfg: &PipelineConfig,
    loaded: &LoadedTeacher,
    train: &[Sample],
    val: &[Sample],
    ev_train: &mut EvidenceFile,
    ev_hash: &str,
    bars: &dyn Bars,
    stages: &mut Stages,
) -> Result<()> {
    const STAGE: &str = "labels-oof";
    let oof_dir = cfg.out.join(STAGE);
    let okey = key_of(&[
        ("evidence", ev_hash.to_string()),
        (
            "oof",
            format!(
                "{} {:?} {} {}",
                cfg.teacher.oof_folds, cfg.teacher.head, cfg.teacher.temperature, cfg.student.seed
            ),
        ),
    ]);
    stages.run(STAGE, &oof_dir, &okey, || {
        let h = loaded.model.config().hidden_size;
        let mut feats = Vec::new();
        for (name, set) in [("train", train), ("val", val)] {
            let bar = bars.bar(&format!("teacher features ({name})"));
            let f = teacher::head::features(&loaded.model, &loaded.prompts, set, cfg.teacher.batch_size, &bar)
                .map_err(stage_err(STAGE))?;
            bar.finish_and_clear();
            feats.push(f);
        }
        let train_labels: Vec<_> = train.iter().map(|s| s.labels).collect();
        let val_labels: Vec<_> = val.iter().map(|s| s.labels).collect();
        let subjects: Vec<u64> = train.iter().map(|s| s.subject).collect();
        let (probs, proto) = teacher::oof::out_of_fold(
            &feats[0],
            &train_labels,
            &subjects,
            &feats[1],
            &val_labels,
            h,
            &cfg.teacher.head,
            cfg.teacher.oof_folds,
            cfg.student.seed,
            cfg.teacher.temperature,
        )
        .map_err(stage_err(STAGE))?;
        let by_id: std::collections::HashMap<&str, usize> =
            train.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
        for r in &mut ev_train.records {
            let i = *by_id.get(r.id.as_str()).ok_or_else(|| msg_err(STAGE, format!("no training sample {}", r.id)))?;
            r.probs = probs[i * NUM_LABELS..(i + 1) * NUM_LABELS].to_vec();
        }
        ev_train.teacher.model = format!("{} [{}]", ev_train.teacher.model, proto.describe());
        label::write_evidence(&oof_dir.join("evidence-train.bin"), ev_train).map_err(stage_err(STAGE))?;
        crate::io::write_atomic(&oof_dir.join("protocol.json"), crate::io::pretty_json(&proto).as_bytes())
            .map_err(stage_err(STAGE))?;
        log(&format!("labels-oof: {} heads, rows per fold {:?}", proto.folds, proto.rows_per_fold));
        Ok(())
    })?;
    Ok(())
}
