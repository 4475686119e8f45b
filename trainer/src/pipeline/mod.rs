//! `ckd pipeline` and `ckd demo`: every stage from data to report, resumable.
//!
//! Stages, each in its own directory under `out/`:
//!
//! | stage | output | inputs of its key |
//! |---|---|---|
//! | `cohort` (synthetic data only) | MIMIC-III CSVs + `oracle.jsonl` | synth settings |
//! | `samples` | `samples.bin`, JSONL splits, knowledge | data files' content, ingest settings |
//! | `teacher` | teacher directory | `samples.bin`, teacher settings |
//! | `labels` | `evidence-train.bin`, `evidence-test.bin` | `teacher.json`, samples, label settings |
//! | `labels-oof` | out-of-fold `evidence-train.bin` | the evidence, head settings, folds, seed |
//! | `student-hard`, `student-kd` | student directories | samples, (evidence), student settings |
//! | `bundle-f32`, `bundle-int8` | bundles | the distilled student |
//! | `report` | `report.html`, `report.json`, `plots/` | everything above |
//!
//! Keys and skipping: [`stage`]. The stages up to `labels-oof` ([`upstream`]) are shared with
//! `ckd bench` ([`crate::bench`]).
//!
//! Files: [`config`] (settings), [`stage`] (bookkeeping), [`upstream`] (data to soft labels),
//! [`students`], `evaluate` (the report stage), `edge_eval` (bundles through `ckd-edge`).

pub mod config;
mod edge_eval;
pub use edge_eval::edge_binary_beside_exe;
mod evaluate;
pub mod fraction_teacher;
pub mod logreg_teacher;
pub(crate) mod stage;
pub(crate) mod students;
pub mod upstream;
pub mod zero_shot_teacher;

use std::path::PathBuf;
use std::time::Instant;

pub use config::{DataSpec, EdgeSpec, IngestSpec, PipelineConfig, StudentSpec, SynthSpec, TeacherSpec};
pub(crate) use edge_eval::cpu_name;

use crate::export::Precision;
use crate::report;
use crate::teacher::train::Bars;
use stage::{file_hash, key_of, log, Stages};

/// Error of a pipeline stage: which stage, and why.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Settings are invalid.
    #[error("pipeline settings: {0}")]
    Config(String),
    /// A stage failed.
    #[error("stage `{stage}`: {source}")]
    Stage {
        /// Stage name.
        stage: &'static str,
        /// Cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

type Result<T, E = PipelineError> = std::result::Result<T, E>;

pub(crate) fn stage_err<E: std::error::Error + Send + Sync + 'static>(
    stage: &'static str,
) -> impl FnOnce(E) -> PipelineError {
    move |e| PipelineError::Stage { stage, source: Box::new(e) }
}

/// A label fraction as a percentage: `10`, `0.5`.
pub(crate) fn pct(f: f64) -> String {
    let p = f * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}")
    } else {
        format!("{p}")
    }
}

pub(crate) fn msg_err(stage: &'static str, msg: String) -> PipelineError {
    PipelineError::Stage { stage, source: msg.into() }
}

/// Settings as the JSON text a stage key hashes. Serializing them cannot fail for the settings
/// types this crate defines; if it ever does, the stage fails rather than hashing an empty text
/// that other settings would share.
pub(crate) fn settings_json<T: serde::Serialize + ?Sized>(stage: &'static str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| msg_err(stage, format!("settings of the stage key: {e}")))
}

/// What a run reports back.
#[derive(Debug, Clone)]
pub struct PipelineOutcome {
    /// Report directory.
    pub report_dir: PathBuf,
    /// The summary table (also printed by the command).
    pub summary: String,
    /// Stages skipped because their outputs were current.
    pub skipped: Vec<&'static str>,
    /// Wall seconds of the whole run.
    pub seconds: f64,
}

/// Runs (or resumes) the whole pipeline.
pub fn run(cfg: &PipelineConfig, bars: &dyn Bars) -> Result<PipelineOutcome> {
    cfg.validate()?;
    let t_all = Instant::now();
    let mut stages = Stages::default();
    let up = upstream::prepare(cfg, bars, &mut stages)?;
    let students = students::train_students(cfg, &up, bars, &mut stages)?;

    // Bundles of the distilled student at 100% labels.
    let kd = &students
        .iter()
        .find(|r| r.distilled && r.fraction >= 1.0)
        .ok_or_else(|| PipelineError::Config("no distilled student at 100% labels".into()))?
        .dir;
    let kd_hash = file_hash("student-kd", &kd.join("model.safetensors"))?;
    let mut bundles = Vec::new();
    for precision in [Precision::F32, Precision::Int8] {
        let stage: &'static str = if precision == Precision::F32 { "bundle-f32" } else { "bundle-int8" };
        let dir = cfg.out.join(stage);
        let key = key_of(&[("student", kd_hash.clone()), ("precision", precision.as_str().into())]);
        stages.run(stage, &dir, &key, || {
            let r = crate::bundle::write_bundle(kd, &dir, precision).map_err(stage_err(stage))?;
            let data = r.export.external_data.as_ref().map_or(0, |d| d.bytes);
            log(&format!(
                "{stage}: {} bytes of ONNX (graph {}, tensors {data}), probe max |prob diff| vs candle {:.2e}",
                r.export.bytes + data,
                r.export.bytes,
                r.export.probe.max_abs_prob_diff
            ));
            Ok(())
        })?;
        bundles.push(dir);
    }

    let rj = evaluate::write_report(cfg, &up, &students, kd, &bundles)?;
    let summary = report::summary_table(&rj);
    Ok(PipelineOutcome {
        report_dir: cfg.out.clone(),
        summary,
        skipped: stages.skipped,
        seconds: t_all.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stage key's settings that cannot be written as JSON fail the stage, naming it, instead
    /// of hashing an empty text.
    #[test]
    fn settings_that_cannot_be_json_fail_the_stage() {
        let mut bad = std::collections::HashMap::new();
        bad.insert((1u8, 2u8), 3u8);
        let e = settings_json("cohort", &bad).unwrap_err().to_string();
        assert!(e.contains("stage `cohort`") && e.contains("key must be a string"), "{e}");
        assert_eq!(settings_json("cohort", &[1, 2]).unwrap(), "[1,2]");
    }
}
