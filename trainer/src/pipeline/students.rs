//! Stages `student-hard` and `student-kd`: at each label fraction, one student without and one
//! with distillation, same seeds (below 100% labels, distilled from a teacher that saw the same
//! labelled patients only); and the shared recipe that turns `[student]` settings into a
//! training job (`ckd bench` trains its grid through the same [`train_one`]).

use std::path::{Path, PathBuf};

use ckd_core::knowledge::KnowledgeTable;
use ckd_core::visit::Sample;

use super::fraction_teacher::{fraction_teacher, TeacherSource};
use super::stage::{key_of, log, Stages};
use super::upstream::Upstream;
use super::{stage_err, PipelineConfig, Result};
use crate::distill::DistillConfig;
use crate::student::job::{train_student, StudentJob};
use crate::student::{SoftTargets, TrainConfig};
use crate::teacher::train::Bars;

/// One student of the pipeline: with or without distillation, at a label fraction.
#[derive(Debug, Clone)]
pub(crate) struct StudentRun {
    pub distilled: bool,
    pub fraction: f64,
    /// Output directory name under the run (`student-hard`, `student-kd` at 100% labels, as
    /// before label fractions existed; `student-hard-10pct`... otherwise).
    pub dir_name: String,
    /// Row name in the report.
    pub display: String,
    pub dir: PathBuf,
}

impl StudentRun {
    pub fn new(distilled: bool, fraction: f64) -> Self {
        let kind = if distilled { "kd" } else { "hard" };
        let pct = fraction * 100.0;
        let pct_s = if (pct - pct.round()).abs() < 1e-9 { format!("{pct:.0}") } else { format!("{pct}") };
        let (dir_name, display) = if fraction >= 1.0 {
            (
                format!("student-{kind}"),
                if distilled { "student (distilled, f32)".to_string() } else { "student (hard labels)".to_string() },
            )
        } else {
            (
                format!("student-{kind}-{pct_s}pct"),
                if distilled {
                    format!("student (distilled, f32, {pct_s}% labels)")
                } else {
                    format!("student (hard labels, {pct_s}% labels)")
                },
            )
        };
        StudentRun { distilled, fraction, dir_name, display, dir: PathBuf::new() }
    }
}

/// The loss of a student without distillation: hard labels only.
pub(crate) fn hard_only(d: &DistillConfig) -> DistillConfig {
    DistillConfig { hard: 1.0, soft: 0.0, attn_word: 0.0, attn_concept: 0.0, attn_field: 0.0, ..d.clone() }
}

/// The loss of a student distilled from soft labels alone (a teacher without attention evidence).
pub(crate) fn soft_only(d: &DistillConfig) -> DistillConfig {
    DistillConfig { attn_word: 0.0, attn_concept: 0.0, attn_field: 0.0, ..d.clone() }
}

/// The training loop settings of a student from `[student]`, with its loss, label fraction and seed.
pub(crate) fn train_config(cfg: &PipelineConfig, distill: DistillConfig, fraction: f64, seed: u64) -> TrainConfig {
    let s = &cfg.student;
    TrainConfig {
        epochs: s.epochs,
        batch_size: s.batch_size,
        lr: s.lr,
        seed,
        patience: s.patience,
        distill,
        label_fraction: fraction,
        head_lr_scale: s.head_lr_scale,
        ..Default::default()
    }
}

/// What a student trains on.
#[derive(Clone)]
pub(crate) struct StudentData<'a> {
    /// Training samples.
    pub train: &'a [Sample],
    /// Validation samples.
    pub val: &'a [Sample],
    /// The knowledge table the texts were rendered with.
    pub knowledge: Option<&'a KnowledgeTable>,
    /// Identifies the samples in stage keys (the hash of `samples.bin`, plus any change made to
    /// the texts after it was read).
    pub samples_key: String,
    /// Provenance of the samples.
    pub provenance: serde_json::Value,
    /// Identifies the teacher outputs in stage keys.
    pub evidence_key: &'a str,
}

impl<'a> StudentData<'a> {
    /// The samples and teacher outputs of the shared stages.
    pub fn of(up: &'a Upstream) -> Self {
        StudentData {
            train: &up.train,
            val: &up.val,
            knowledge: up.knowledge.as_ref(),
            samples_key: up.samples_hash.clone(),
            provenance: serde_json::json!({"samples": up.samples_bin, "samples_sha256": up.samples_hash}),
            evidence_key: &up.ev_train_hash,
        }
    }
}

/// Trains one student into `dir` as stage `stage` (skipped when its key is current). The key
/// covers the samples, the teacher outputs when the loss uses them, `[student]` and `tc`.
/// Returns whether it trained.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_one(
    cfg: &PipelineConfig,
    data: &StudentData<'_>,
    teacher: &SoftTargets,
    tc: TrainConfig,
    stage: &'static str,
    display: &str,
    dir: &Path,
    bars: &dyn Bars,
    stages: &mut Stages,
) -> Result<bool> {
    let uses_teacher = tc.distill.soft > 0.0 || tc.distill.uses_attention();
    let key = key_of(&[
        ("samples", data.samples_key.clone()),
        ("evidence", if uses_teacher { data.evidence_key.to_string() } else { String::new() }),
        ("student", super::settings_json(stage, &(&cfg.student, &tc))?),
    ]);
    stages.run(stage, dir, &key, || {
        let bar = bars.bar(display);
        let job = StudentJob {
            train: data.train,
            val: data.val,
            teacher: uses_teacher.then_some(teacher),
            init: cfg.student.init.as_deref(),
            preset: cfg.student.preset,
            pooling: cfg.student.pooling,
            vocab_size: cfg.student.vocab_size,
            max_len: cfg.student.max_len,
            cfg: tc,
            resume: false,
            out: dir,
            knowledge: data.knowledge,
            provenance: data.provenance.clone(),
        };
        let o = train_student(&job, &bar).map_err(stage_err(stage))?;
        bar.finish_and_clear();
        log(&format!(
            "{display}: {} steps, {:.1} samples/s, best val macro-F1 {:.3}",
            o.steps,
            o.samples_per_sec,
            o.best_val_macro_f1.unwrap_or(f64::NAN)
        ));
        Ok(())
    })
}

/// The pipeline's students: at each of `[student] label_fractions`, without and with
/// distillation. At 100% labels the distilled student learns from the pipeline's teacher (soft
/// labels and attention evidence). Below 100% that teacher saw the labels the student is not
/// given, so the distilled student learns instead from the teacher recipe retrained on the
/// labelled patients only ([`super::fraction_teacher`], soft labels only): no label of an
/// unlabelled patient reaches it.
pub(crate) fn train_students(
    cfg: &PipelineConfig,
    up: &Upstream,
    bars: &dyn Bars,
    stages: &mut Stages,
) -> Result<Vec<StudentRun>> {
    let teacher = SoftTargets::from_evidence(up.ev_train.clone());
    let data = StudentData::of(up);
    let seed = cfg.student.seed;
    let mut students = Vec::new();
    for &fraction in &cfg.student.label_fractions {
        for distilled in [false, true] {
            let run = StudentRun::new(distilled, fraction);
            let stage = if distilled { "student-kd" } else { "student-hard" };
            let dir: PathBuf = cfg.out.join(&run.dir_name);
            if distilled && fraction < 1.0 {
                let (ft, hash) = fraction_teacher(cfg, up, TeacherSource::Demo, None, fraction, seed, bars, stages)?;
                let distill = soft_only(&cfg.student.distill);
                let tc = train_config(cfg, distill, fraction, seed);
                let data = StudentData { evidence_key: &hash, ..data.clone() };
                train_one(cfg, &data, &ft.teacher(), tc, stage, &run.display, &dir, bars, stages)?;
            } else {
                let distill = if distilled { cfg.student.distill.clone() } else { hard_only(&cfg.student.distill) };
                let tc = train_config(cfg, distill, fraction, seed);
                train_one(cfg, &data, &teacher, tc, stage, &run.display, &dir, bars, stages)?;
            }
            students.push(StudentRun { dir, ..run });
        }
    }
    Ok(students)
}
