//! The bench's figures: per setting and label fraction, the test macro-AUC averaged over seeds
//! with a 95% patient-bootstrap interval, its paired difference against no distillation (and
//! against its twin: soft 0.1 for the attention settings, the with-knowledge setting for the
//! knowledge ablation), the baselines on the same resamples, and the setting chosen on
//! validation at each fraction. Written as `bench.json` (versioned) and `bench.md`.
//!
//! Every interval uses the same resamples: each resample's macro-AUC is computed once per
//! trained student and cached, then averaged over seeds (a resample on which any seed's AUC is
//! undefined is left out of that row).

use ckd_core::bootstrap::{self, Groups, Interval};
use ckd_core::metrics;
use ckd_core::visit::Sample;
use ckd_core::NUM_LABELS;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use super::{BenchSpec, Cell, Setting, NONE};
use crate::pipeline::fraction_teacher::{FractionTeacher, TeacherSource};
use crate::pipeline::upstream::Upstream;
use crate::pipeline::{msg_err, pct, stage_err, PipelineConfig, PipelineError};
use crate::report::intervals::{fmt_difference, fmt_interval, verdict};
use crate::report::{fmt3 as fmt_auc, macro_auc, targets};
use crate::student::{keeps_label, SoftTargets};
use crate::teacher::label;

type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Everything the summary reads.
pub struct SummaryInput<'a> {
    /// Run settings.
    pub cfg: &'a PipelineConfig,
    /// The grid.
    pub spec: &'a BenchSpec,
    /// The shared stages' outputs.
    pub up: &'a Upstream,
    /// The grid's settings.
    pub settings: &'a [Setting],
    /// Every trained student.
    pub cells: &'a [Cell],
    /// The LLM teacher at each fraction and seed (empty without `[bench] llm`).
    pub fraction_teachers: &'a [FractionTeacher],
}

/// A baseline or reference model on the test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineRow {
    /// Name.
    pub name: String,
    /// Share of training patients whose labels it was fitted on.
    pub label_fraction: f64,
    /// Test macro-AUC.
    pub test_macro_auc: Option<Interval>,
}

/// One setting at one label fraction, over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingRow {
    /// Setting name.
    pub setting: String,
    /// Label fraction.
    pub label_fraction: f64,
    /// Seeds it was trained with.
    pub seeds: Vec<u64>,
    /// Validation macro-AUC, mean over seeds (what the choice reads).
    pub val_macro_auc: Option<f64>,
    /// Test macro-AUC of each seed.
    pub test_macro_auc_per_seed: Vec<Option<f64>>,
    /// Test macro-AUC, mean over seeds, with its interval.
    pub test_macro_auc: Option<Interval>,
    /// Paired difference against `none` at the same fraction.
    pub vs_none: Option<Interval>,
    /// The setting `vs_twin` is taken against.
    pub twin: Option<String>,
    /// Paired difference against the twin.
    pub vs_twin: Option<Interval>,
    /// Paired difference against the logistic regression fitted on the same labelled patients
    /// (mean over the same seeds' draws).
    #[serde(default)]
    pub vs_logreg: Option<Interval>,
    /// For a setting distilled from the LLM: paired difference against the student distilled from
    /// the demo teacher retrained on the same labels (its setting chosen on validation).
    #[serde(default)]
    pub vs_demo_teacher: Option<Interval>,
    /// Mean training seconds per student.
    pub train_seconds: f64,
}

/// The setting chosen on validation at one fraction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Label fraction.
    pub label_fraction: f64,
    /// The distillation setting with the best mean validation macro-AUC.
    pub setting: String,
    /// Its mean validation macro-AUC.
    pub val_macro_auc: f64,
    /// Its test difference against `none`.
    pub vs_none: Option<Interval>,
    /// Whether the goal holds: at least +0.03 and the interval above 0.
    pub gain_of_003_met: bool,
}

/// `bench.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchJson {
    /// `"ckd-bench"`.
    pub format: String,
    /// Format version.
    pub version: u32,
    /// Producer.
    pub created_by: String,
    /// What was evaluated.
    pub data: String,
    /// Test samples and patients.
    pub test_samples: usize,
    /// Test patients (the resampling unit).
    pub test_patients: usize,
    /// How the figures were made.
    pub protocol: Vec<String>,
    /// The grid.
    pub spec: BenchSpec,
    /// The settings.
    pub settings: Vec<Setting>,
    /// Baselines, teacher and oracle.
    pub baselines: Vec<BaselineRow>,
    /// Students.
    pub rows: Vec<SettingRow>,
    /// Choices on validation.
    pub chosen: Vec<Choice>,
    /// On a synthetic cohort: the knowledge clauses against the generator's drug effects.
    pub knowledge_truth: Option<crate::knowledge_truth::KnowledgeScore>,
    /// This machine.
    pub machine: String,
    /// Wall seconds of the whole run.
    pub wall_seconds: f64,
}

const FORMAT: &str = "ckd-bench";
const VERSION: u32 = 1;
/// Stage name in errors.
const STAGE: &str = "bench";

/// A model's macro-AUC on the full test set and on each resample.
struct Cached {
    full: Option<f64>,
    draws: Vec<Option<f64>>,
}

/// Caches one model's AUCs and advances `bar` by one model.
fn cache(probs: &[f32], t: &[u8], draws: &[Vec<usize>], bar: &ProgressBar) -> Cached {
    let auc = |idx: &[usize]| -> Option<f64> {
        let mut p = Vec::with_capacity(idx.len() * NUM_LABELS);
        let mut y = Vec::with_capacity(idx.len() * NUM_LABELS);
        for &i in idx {
            p.extend_from_slice(&probs[i * NUM_LABELS..(i + 1) * NUM_LABELS]);
            y.extend_from_slice(&t[i * NUM_LABELS..(i + 1) * NUM_LABELS]);
        }
        metrics::roc_auc(&p, &y, NUM_LABELS).ok().and_then(|a| a.macro_avg)
    };
    let n = t.len() / NUM_LABELS;
    let all: Vec<usize> = (0..n).collect();
    let c = Cached { full: auc(&all), draws: draws.iter().map(|d| auc(d)).collect() };
    bar.inc(1);
    c
}

/// Mean over models, per resample (undefined when any is undefined).
fn mean_of(models: &[&Cached]) -> Cached {
    let mean = |v: Vec<Option<f64>>| -> Option<f64> {
        let v: Option<Vec<f64>> = v.into_iter().collect();
        v.filter(|v| !v.is_empty()).map(|v| v.iter().sum::<f64>() / v.len() as f64)
    };
    let n = models.first().map_or(0, |m| m.draws.len());
    Cached {
        full: mean(models.iter().map(|m| m.full).collect()),
        draws: (0..n).map(|d| mean(models.iter().map(|m| m.draws[d]).collect())).collect(),
    }
}

fn interval(c: &Cached) -> Option<Interval> {
    c.full.map(|e| bootstrap::interval_from(e, c.draws.iter().copied()))
}

fn difference(a: &Cached, b: &Cached) -> Option<Interval> {
    let e = a.full? - b.full?;
    Some(bootstrap::interval_from(e, a.draws.iter().zip(&b.draws).map(|(x, y)| Some((*x)? - (*y)?))))
}

/// The setting a row is compared with besides `none`.
fn twin_of(name: &str) -> Option<String> {
    if name.starts_with("soft 0.1 + attn") {
        Some("soft 0.1".into())
    } else if let Some(w) = name.strip_prefix("soft ").and_then(|r| r.strip_suffix(" (LR + zero-shot)")) {
        Some(format!("soft {w} (LR, same labels)"))
    } else {
        name.strip_suffix(", no knowledge").map(str::to_string)
    }
}

/// Test probabilities of the bag-of-concepts logistic regression fitted on `train` (thresholds
/// on `val`), refitted on `train` + `val` when `refit`.
fn logreg_probs(train: &[Sample], val: &[Sample], test: &[Sample], refit: bool) -> Result<Vec<f32>> {
    use crate::baselines::{logreg::LogRegConfig, BagOfConcepts};
    let texts = |s: &[Sample]| -> Vec<String> { s.iter().map(|x| x.text()).collect() };
    let labels = |s: &[Sample]| -> Vec<ckd_core::LabelSet> { s.iter().map(|x| x.labels).collect() };
    let (tt, tl, vt, vl) = (texts(train), labels(train), texts(val), labels(val));
    let m =
        BagOfConcepts::fit_with((&tt, &tl), (&vt, &vl), &LogRegConfig::default(), refit).map_err(stage_err("bench"))?;
    Ok(m.predict(&texts(test)))
}

/// Baseline rows of the LLM teacher: its head at each fraction (mean over seeds), and at the
/// largest fraction every representation tried (first seed), each with its interval.
fn llm_teacher_rows(
    input: &SummaryInput<'_>,
    t: &[u8],
    draws: &[Vec<usize>],
    bar: &ProgressBar,
    push: &mut impl FnMut(String, f64, &Cached),
) {
    let fts = input.fraction_teachers;
    for (source, f) in [TeacherSource::Llm, TeacherSource::Demo, TeacherSource::LogReg, TeacherSource::LogRegZeroShot]
        .into_iter()
        .flat_map(|s| input.spec.label_fractions.iter().map(move |&f| (s, f)))
    {
        let at: Vec<&FractionTeacher> = fts.iter().filter(|x| x.fraction == f && x.source == source).collect();
        if at.is_empty() {
            continue;
        }
        let who = match source {
            TeacherSource::Llm => "LLM teacher head",
            TeacherSource::LogReg => "logistic-regression teacher (same labels)",
            TeacherSource::LogRegZeroShot => "logistic-regression + zero-shot teacher (same labels)",
            _ => "demo teacher (same labels)",
        };
        let per_seed: Vec<Cached> = at.iter().map(|x| cache(&x.test, t, draws, bar)).collect();
        let refs: Vec<&Cached> = per_seed.iter().collect();
        let mut reps: Vec<&str> = at.iter().map(|x| x.representation.as_str()).collect();
        reps.dedup();
        push(
            format!("{who} ({}% labels, mean of {} seeds; {})", pct(f), at.len(), reps.join(" / ")),
            f,
            &mean_of(&refs),
        );
    }
    // The zero-shot teacher reads no label: one row, whatever the fraction.
    if let Some(z) = fts.iter().find(|x| x.source == TeacherSource::ZeroShot) {
        push(format!("zero-shot LLM teacher ({})", z.representation), 0.0, &cache(&z.test, t, draws, bar));
    }
    let top = input.spec.label_fractions.iter().copied().fold(0.0, f64::max);
    if let Some(first) = fts.iter().find(|x| x.fraction == top && x.source == TeacherSource::Llm) {
        for c in &first.candidates {
            push(
                format!(
                    "LLM head on {} ({}% labels, seed {}; val macro-AUC {})",
                    c.name,
                    pct(top),
                    first.seed,
                    fmt_auc(c.val_macro_auc)
                ),
                top,
                &cache(&c.test, t, draws, bar),
            );
        }
    }
}

/// Models whose bootstrap [`summarize`] computes once the baselines are fitted, given
/// `baselines` of them among the baselines fitted on all labels.
fn models_to_resample(input: &SummaryInput<'_>, baselines: usize) -> u64 {
    let spec = input.spec;
    let below = spec.label_fractions.iter().filter(|f| **f < 1.0).count();
    let fractions: Vec<f64> = spec.label_fractions.clone();
    let teachers = input
        .fraction_teachers
        .iter()
        .filter(|x| {
            let fitted = matches!(
                x.source,
                TeacherSource::Llm | TeacherSource::Demo | TeacherSource::LogReg | TeacherSource::LogRegZeroShot
            );
            fitted && fractions.contains(&x.fraction)
        })
        .count();
    let top = fractions.iter().copied().fold(0.0, f64::max);
    let candidates = input
        .fraction_teachers
        .iter()
        .find(|x| x.fraction == top && x.source == TeacherSource::Llm)
        .map_or(0, |x| x.candidates.len());
    let oracle = usize::from(input.up.oracle.is_some());
    let zero_shot = usize::from(input.fraction_teachers.iter().any(|x| x.source == TeacherSource::ZeroShot));
    (baselines + 2 * below * spec.seeds.len() + teachers + candidates + 1 + oracle + zero_shot + input.cells.len())
        as u64
}

/// Computes every figure; `bar` counts the models whose bootstrap is done (its length is set
/// once the baselines are fitted).
pub fn summarize(input: &SummaryInput<'_>, wall_seconds: f64, bar: &ProgressBar) -> Result<BenchJson> {
    let (up, spec) = (input.up, input.spec);
    let test = &up.test;
    let t = targets(test);
    let subjects: Vec<u64> = test.iter().map(|s| s.subject).collect();
    let groups = Groups::by_subject(&subjects);
    let draws = groups.resamples(spec.resamples, spec.bootstrap_seed);
    let (baselines, logreg) = baseline_rows(input, &t, &draws, bar)?;
    let (mut rows, means) = setting_rows(input, &t, &draws, bar);
    fill_differences(input, &mut rows, &means, &logreg);
    let chosen = choose(input, &rows);
    Ok(BenchJson {
        format: FORMAT.into(),
        version: VERSION,
        created_by: format!("ckd {}", env!("CARGO_PKG_VERSION")),
        data: data_description(input),
        test_samples: test.len(),
        test_patients: groups.len(),
        protocol: protocol(input),
        spec: spec.clone(),
        settings: input.settings.to_vec(),
        baselines,
        rows,
        chosen,
        knowledge_truth: up.knowledge_score.clone(),
        machine: crate::pipeline::cpu_name(),
        wall_seconds,
    })
}

/// The baseline rows, in order: the baselines fitted on all training labels (not
/// `all-negative`), the logistic regression on each fraction's labelled patients, the LLM
/// teacher's heads, the pipeline teacher and the oracle. Also returns the logistic regression's
/// cached AUCs per fraction (what `vs_logreg` is taken against). Sets `bar`'s length once the
/// baselines are fitted.
#[allow(clippy::type_complexity)]
fn baseline_rows(
    input: &SummaryInput<'_>,
    t: &[u8],
    draws: &[Vec<usize>],
    bar: &ProgressBar,
) -> Result<(Vec<BaselineRow>, Vec<(f64, Cached)>)> {
    let up = input.up;
    // Baselines: fitted on all training labels, and the logistic regression also on each
    // fraction's labelled patients (mean over the seeds' draws, like the students).
    let mut baselines = Vec::new();
    let mut push = |name: String, fraction: f64, c: &Cached| {
        baselines.push(BaselineRow { name, label_fraction: fraction, test_macro_auc: interval(c) })
    };
    bar.set_message("fitting the baselines");
    let rows = crate::baselines::report_rows(&up.train, &up.val, &up.test).map_err(stage_err(STAGE))?;
    let fitted: Vec<_> = rows.iter().filter(|m| m.name != "all-negative").collect();
    bar.set_length(models_to_resample(input, fitted.len()));
    bar.set_message(format!("models, {} resamples each", draws.len()));
    let mut logreg: Vec<(f64, Cached)> = Vec::new();
    for m in fitted {
        let flat: Vec<f32> = m.probs.concat();
        let c = cache(&flat, t, draws, bar);
        push(m.name.clone(), 1.0, &c);
        if m.name.starts_with("logistic regression") {
            logreg.push((1.0, c));
        }
    }
    logreg_fraction_rows(input, t, draws, bar, &mut push, &mut logreg)?;
    llm_teacher_rows(input, t, draws, bar, &mut push);
    teacher_and_oracle_rows(input, t, draws, bar, &mut push)?;
    Ok((baselines, logreg))
}

/// At each fraction below 1, the logistic regression fitted on the labelled training patients
/// alone (what every learner at f sees), and, for reference, refitted with the validation labels
/// too (as the 100% row is), each the mean over the seeds' draws; the former is appended to
/// `logreg`. A seed that labels no patient is skipped (its two models still advance `bar`).
fn logreg_fraction_rows(
    input: &SummaryInput<'_>,
    t: &[u8],
    draws: &[Vec<usize>],
    bar: &ProgressBar,
    push: &mut impl FnMut(String, f64, &Cached),
    logreg: &mut Vec<(f64, Cached)>,
) -> Result<()> {
    let (up, spec) = (input.up, input.spec);
    for &f in spec.label_fractions.iter().filter(|f| **f < 1.0) {
        let (mut alone, mut refit) = (Vec::new(), Vec::new());
        for &seed in &spec.seeds {
            let labelled: Vec<Sample> =
                up.train.iter().filter(|s| keeps_label(seed, &s.subject.to_string(), f)).cloned().collect();
            if labelled.is_empty() {
                bar.inc(2);
                continue;
            }
            for (out, with_val) in [(&mut alone, false), (&mut refit, true)] {
                out.push(cache(&logreg_probs(&labelled, &up.val, &up.test, with_val)?, t, draws, bar));
            }
        }
        if !alone.is_empty() {
            let m = mean_of(&alone.iter().collect::<Vec<_>>());
            let n = alone.len();
            push(format!("logistic regression ({}% labels, mean of {n} seeds)", pct(f)), f, &m);
            logreg.push((f, m));
            let r = mean_of(&refit.iter().collect::<Vec<_>>());
            push(
                format!(
                    "logistic regression ({}% labels refitted with all validation labels, mean of {n} seeds)",
                    pct(f)
                ),
                f,
                &r,
            );
        }
    }
    Ok(())
}

/// The pipeline teacher's row and, on a synthetic cohort, the oracle's (a test sample missing
/// from the oracle file is an error).
fn teacher_and_oracle_rows(
    input: &SummaryInput<'_>,
    t: &[u8],
    draws: &[Vec<usize>],
    bar: &ProgressBar,
    push: &mut impl FnMut(String, f64, &Cached),
) -> Result<()> {
    let up = input.up;
    let ids: Vec<String> = up.test.iter().map(|s| s.id.clone()).collect();
    let teacher_probs = label::probs_for(&up.ev_test, &ids).map_err(stage_err(STAGE))?;
    push(format!("teacher ({})", up.teacher.manifest.model_name), 1.0, &cache(&teacher_probs, t, draws, bar));
    if let Some(op) = &up.oracle {
        let text = std::fs::read_to_string(op).map_err(stage_err(STAGE))?;
        let o = SoftTargets::from_jsonl(&text, op).map_err(stage_err(STAGE))?;
        let mut probs = Vec::with_capacity(ids.len() * NUM_LABELS);
        for id in &ids {
            probs.extend_from_slice(
                o.probs.get(id).ok_or_else(|| msg_err(STAGE, format!("oracle has no sample {id}")))?,
            );
        }
        push("oracle (true generating probabilities)".into(), 1.0, &cache(&probs, t, draws, bar));
    }
    Ok(())
}

/// One row per (fraction, setting) that ran, fractions outer, settings in grid order, with its
/// seeds' validation and per-seed test figures; beside each, (setting, fraction, the mean over
/// its seeds of the cached AUCs). Intervals and differences are left `None`
/// ([`fill_differences`] sets them).
fn setting_rows(
    input: &SummaryInput<'_>,
    t: &[u8],
    draws: &[Vec<usize>],
    bar: &ProgressBar,
) -> (Vec<SettingRow>, Vec<(String, f64, Cached)>) {
    let cached: Vec<Cached> = input.cells.iter().map(|c| cache(&c.preds.test, t, draws, bar)).collect();
    let mut rows = Vec::new();
    let mut means: Vec<(String, f64, Cached)> = Vec::new();
    for &f in &input.spec.label_fractions {
        for (si, s) in input.settings.iter().enumerate() {
            let idx: Vec<usize> = (0..input.cells.len())
                .filter(|&i| input.cells[i].setting == si && input.cells[i].fraction == f)
                .collect();
            if idx.is_empty() {
                continue; // a setting that does not run at this fraction (the pipeline teacher below 100%)
            }
            let refs: Vec<&Cached> = idx.iter().map(|&i| &cached[i]).collect();
            let val: Vec<Option<f64>> =
                idx.iter().map(|&i| macro_auc(&input.cells[i].preds.val, &input.up.val)).collect();
            let val_mean: Option<Vec<f64>> = val.into_iter().collect();
            rows.push(SettingRow {
                setting: s.name.clone(),
                label_fraction: f,
                seeds: idx.iter().map(|&i| input.cells[i].seed).collect(),
                val_macro_auc: val_mean.filter(|v| !v.is_empty()).map(|v| v.iter().sum::<f64>() / v.len() as f64),
                test_macro_auc_per_seed: refs.iter().map(|c| c.full).collect(),
                test_macro_auc: None,
                vs_none: None,
                twin: twin_of(&s.name),
                vs_twin: None,
                vs_logreg: None,
                vs_demo_teacher: None,
                train_seconds: idx.iter().map(|&i| input.cells[i].preds.train_seconds).sum::<f64>()
                    / idx.len().max(1) as f64,
            });
            means.push((s.name.clone(), f, mean_of(&refs)));
        }
    }
    (rows, means)
}

/// Sets each row's interval and its paired differences against `none`, its twin and the
/// logistic regression at its fraction; and, for the LLM settings, against the demo-teacher
/// setting with the best validation macro-AUC at the same fraction. `means[i]` belongs to
/// `rows[i]`.
fn fill_differences(
    input: &SummaryInput<'_>,
    rows: &mut [SettingRow],
    means: &[(String, f64, Cached)],
    logreg: &[(f64, Cached)],
) {
    let find = |name: &str, f: f64| means.iter().find(|(n, g, _)| n == name && *g == f).map(|(_, _, c)| c);
    for (row, (_, f, c)) in rows.iter_mut().zip(means) {
        row.test_macro_auc = interval(c);
        if row.setting != NONE {
            row.vs_none = find(NONE, *f).and_then(|n| difference(c, n));
        }
        if let Some(tw) = &row.twin {
            row.vs_twin = find(tw, *f).and_then(|n| difference(c, n));
        }
        row.vs_logreg = logreg.iter().find(|(g, _)| g == f).and_then(|(_, l)| difference(c, l));
    }
    let source_of = |name: &str| input.settings.iter().find(|s| s.name == name).map(|s| s.teacher);
    for &f in &input.spec.label_fractions {
        let demo = rows
            .iter()
            .filter(|r| r.label_fraction == f && source_of(&r.setting) == Some(TeacherSource::Demo))
            .filter_map(|r| r.val_macro_auc.map(|v| (r.setting.clone(), v)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let Some(demo) = demo.and_then(|(n, _)| find(&n, f)) else { continue };
        for (row, (_, g, c)) in rows.iter_mut().zip(means) {
            if *g == f && matches!(source_of(&row.setting), Some(TeacherSource::Llm | TeacherSource::ZeroShot)) {
                row.vs_demo_teacher = difference(c, demo);
            }
        }
    }
}

/// At each fraction, the distilled with-knowledge setting with the best mean validation
/// macro-AUC (fractions without one are left out).
fn choose(input: &SummaryInput<'_>, rows: &[SettingRow]) -> Vec<Choice> {
    let names: Vec<&str> =
        input.settings.iter().filter(|s| s.distilled() && s.knowledge).map(|s| s.name.as_str()).collect();
    let mut chosen = Vec::new();
    for &f in &input.spec.label_fractions {
        let best = rows
            .iter()
            .filter(|r| r.label_fraction == f && names.contains(&r.setting.as_str()))
            .filter_map(|r| r.val_macro_auc.map(|v| (r, v)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((r, v)) = best {
            chosen.push(Choice {
                label_fraction: f,
                setting: r.setting.clone(),
                val_macro_auc: v,
                vs_none: r.vs_none,
                gain_of_003_met: r.vs_none.is_some_and(|d| d.estimate >= 0.03 && d.above_zero()),
            });
        }
    }
    chosen
}

/// `bench.json`'s `data`: the source and the split sizes.
fn data_description(input: &SummaryInput<'_>) -> String {
    let up = input.up;
    format!(
        "{}: {} train, {} val, {} test samples",
        if input.cfg.data.synth.is_some() {
            format!("synthetic cohort ({} patients)", input.cfg.data.synth.as_ref().map_or(0, |s| s.patients))
        } else if input.cfg.data.mimic.is_some() {
            "MIMIC-III".into()
        } else {
            "CKD-EHR JSONL".into()
        },
        up.train.len(),
        up.val.len(),
        up.test.len()
    )
}

/// `bench.json`'s `protocol`: how the figures were made, one non-empty paragraph each.
fn protocol(input: &SummaryInput<'_>) -> Vec<String> {
    let (up, spec) = (input.up, input.spec);
    let protocol = vec![
        format!(
            "Teacher: {}, trained on all training labels; the students' soft labels for training rows are {}.",
            up.teacher.manifest.model_name,
            if input.cfg.teacher.oof_folds > 0 {
                format!("out-of-fold ({} heads on the teacher's features, folds by patient)", input.cfg.teacher.oof_folds)
            } else {
                "the teacher head's in-sample probabilities".into()
            }
        ),
        "Label fraction f: hard labels for a share f of training patients (drawn per patient from the seed), teacher soft labels for every training row; validation keeps all its labels (thresholds, best epoch, the choice of setting).".into(),
        if spec.leaky_pipeline_teacher {
            "The pipeline teacher's settings also ran below 100% labels: that teacher saw every training label, so those rows measure label leakage, not knowledge.".into()
        } else {
            "Settings distilled from the pipeline teacher (every training label) ran at 100% labels only.".into()
        },
        if spec.llm.is_some() {
            format!(
                "LLM teacher: frozen {} (pooled states at layers {:?}, last token and mean over the visit's tokens); at each fraction and seed a head per representation is fitted on the labelled patients only, the best on validation is kept, and its soft labels are out-of-fold ({} folds by patient) for labelled rows and the head's for unlabelled rows: no unlabelled patient's label reaches the teacher or the student.",
                spec.llm.as_ref().map_or(String::new(), |p| p.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned())),
                spec.llm_layers,
                input.cfg.teacher.oof_folds.max(2)
            )
        } else {
            String::new()
        },
        match &spec.zero_shot {
            Some(z) => format!(
                "Zero-shot teacher: a frozen LLM's own probabilities ({}; `ckd teacher zero-shot`, read from {}), the same at every fraction: it reads no label. At soft weight 1 the student's hard-label term is off, so that student learns from no training label (validation labels still choose its epoch and thresholds).",
                z.scoring,
                z.train.display()
            ),
            None => String::new(),
        },
        format!(
            "Students: {:?} preset, {:?} pooling, {} epochs, lr {}, head lr x{}; soft w means hard weight 1 - w, soft weight w; attention weight {}.",
            input.cfg.student.preset,
            input.cfg.student.pooling,
            input.cfg.student.epochs,
            input.cfg.student.lr,
            input.cfg.student.head_lr_scale,
            spec.attention_weight
        ),
        format!(
            "Intervals: 95% percentile intervals over {} resamples of test patients (seed {}); a setting's figure is the mean over its seeds on each resample; differences are paired on the same resamples.",
            spec.resamples, spec.bootstrap_seed
        ),
        "Baselines at 100% are fitted on train + validation labels as in every report; below 100% the logistic regression is fitted on that fraction's labelled training patients alone (validation tunes only its thresholds), which is the row every 'vs LR, same labels' difference is taken against; the same model refitted with all validation labels is shown beside it.".into(),
    ];
    protocol.into_iter().filter(|p| !p.is_empty()).collect()
}

/// One line per fraction and LLM teacher (its head; its zero-shot probabilities): does its
/// student (the setting with the best validation macro-AUC) beat the logistic regression on the
/// same labels?
fn llm_answers(s: &mut String, b: &BenchJson) {
    use std::fmt::Write as _;
    for (source, title) in [
        (TeacherSource::Llm, "The LLM teacher's student against the same labels"),
        (TeacherSource::ZeroShot, "The zero-shot LLM teacher's student against the same labels"),
        (
            TeacherSource::LogRegZeroShot,
            "The logistic regression + zero-shot teacher's student against the same labels",
        ),
    ] {
        let names: Vec<&str> = b.settings.iter().filter(|x| x.teacher == source).map(|x| x.name.as_str()).collect();
        if names.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n## {title}\n");
        let mut fractions: Vec<f64> = b.rows.iter().map(|r| r.label_fraction).collect();
        fractions.dedup();
        for f in fractions {
            let best = b
                .rows
                .iter()
                .filter(|r| r.label_fraction == f && names.contains(&r.setting.as_str()))
                .filter_map(|r| r.val_macro_auc.map(|v| (r, v)))
                .max_by(|x, y| x.1.total_cmp(&y.1));
            if let Some((r, _)) = best {
                let demo = match r.vs_demo_teacher.as_ref() {
                    Some(d) => format!("{} ({})", fmt_difference(Some(d)), verdict(d)),
                    None => "not in this run".to_string(),
                };
                let _ = writeln!(
                    s,
                    "- {}% labels: `{}` (chosen on validation) vs the logistic regression on the same labelled patients: {} ({}); vs the student without distillation: {} ({}); vs the student of the demo teacher retrained on the same labels: {demo}.",
                    pct(f),
                    r.setting,
                    fmt_difference(r.vs_logreg.as_ref()),
                    r.vs_logreg.as_ref().map_or("no interval", verdict),
                    fmt_difference(r.vs_none.as_ref()),
                    r.vs_none.as_ref().map_or("no interval", verdict),
                );
                if let (Some(t), Some(d)) = (&r.twin, &r.vs_twin) {
                    let _ = writeln!(
                        s,
                        "  - vs `{t}` (the same teacher without the LLM): {} ({}).",
                        fmt_difference(Some(d)),
                        verdict(d)
                    );
                }
            }
        }
    }
}

/// `bench.md`: the tables and the plain statements.
pub fn markdown(b: &BenchJson) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "# ckd bench\n\n{}; {} test patients. {}\n", b.data, b.test_patients, b.protocol.join(" "));
    let _ = writeln!(
        s,
        "| model | labels | val macro-AUC | test macro-AUC [95%] | vs none [95%, paired] | vs LR, same labels [95%, paired] | vs twin [95%, paired] |"
    );
    let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- | --- |");
    for r in &b.baselines {
        let _ = writeln!(
            s,
            "| {} | {}% | | {} | | | |",
            r.name,
            pct(r.label_fraction),
            fmt_interval(r.test_macro_auc.as_ref())
        );
    }
    for r in &b.rows {
        let twin = match (&r.twin, &r.vs_twin) {
            (Some(t), Some(d)) => format!("{} (vs {t})", fmt_difference(Some(d))),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "| {} ({} seeds) | {}% | {} | {} | {} | {} | {} |",
            r.setting,
            r.seeds.len(),
            pct(r.label_fraction),
            fmt_auc(r.val_macro_auc),
            fmt_interval(r.test_macro_auc.as_ref()),
            fmt_difference(r.vs_none.as_ref()),
            fmt_difference(r.vs_logreg.as_ref()),
            twin
        );
    }
    llm_answers(&mut s, b);
    let _ = writeln!(s, "\n## Chosen on validation\n");
    for c in &b.chosen {
        let d = c.vs_none.as_ref();
        let _ = writeln!(
            s,
            "- {}% labels: `{}` (val {:.3}); test vs none {}: {}. Goal (at least +0.03, interval above 0): {}.",
            pct(c.label_fraction),
            c.setting,
            c.val_macro_auc,
            fmt_difference(d),
            d.map_or("no interval", verdict),
            if c.gain_of_003_met { "met" } else { "not met" }
        );
    }
    let _ = writeln!(s, "\n## Twins: attention granularities, knowledge clauses, the zero-shot term\n");
    for r in b.rows.iter().filter(|r| r.twin.is_some()) {
        if let (Some(t), Some(d)) = (&r.twin, &r.vs_twin) {
            let _ = writeln!(
                s,
                "- {}% labels, `{}` vs `{t}`: {} ({}).",
                pct(r.label_fraction),
                r.setting,
                fmt_difference(Some(d)),
                verdict(d)
            );
        }
    }
    if let Some(k) = &b.knowledge_truth {
        let _ = writeln!(
            s,
            "\nKnowledge clauses against the generator's drug effects: {} (phenotype, drug) pairs named, {} true: precision {}, recall {:.3} of {} true pairs ({:.3} of the {} a table can hold).",
            k.emitted,
            k.true_positives,
            k.precision.map_or("n/a".into(), |p| format!("{p:.3}")),
            k.recall,
            k.truth,
            k.recall_reachable,
            k.reachable
        );
    }
    let _ = writeln!(s, "\nMachine: {}; wall time {:.0} s.", b.machine, b.wall_seconds);
    s
}
