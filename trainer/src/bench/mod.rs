//! `ckd bench`: what distillation adds, measured. On one cohort (synthetic, MIMIC-III or CKD-EHR
//! JSONL) it runs the pipeline's shared stages (samples, teacher, soft labels, out-of-fold soft
//! labels: [`crate::pipeline::upstream`]) and then a grid of students:
//!
//! - settings: no distillation; soft BCE at several weights (hard weight `1 - w`, soft `w`);
//!   a temperature; the paper's soft 0.1 plus each attention granularity (word, concept,
//!   field) alone and all together; and, for the knowledge ablation, no distillation and soft
//!   0.1 on texts without knowledge clauses;
//! - at each label fraction (hard labels for that share of training patients, drawn per
//!   patient and seed; teacher soft labels for all; the teacher itself trained on all labels);
//! - at each seed (the seed draws the labelled patients, the initialisation and batch order);
//! - teachers besides the pipeline's, each seeing no label of an unlabelled patient: a frozen
//!   LLM's head and the demo recipe refitted on each fraction's labelled patients
//!   ([`crate::pipeline::fraction_teacher`]), and a frozen LLM's zero-shot probabilities
//!   ([`crate::pipeline::zero_shot_teacher`]).
//!
//! Every student is a resumable stage under `out/bench/` (keys as in the pipeline), so a
//! stopped run continues where it stopped and a grown grid trains only the new cells. Each
//! student's validation and test probabilities are kept beside it. [`summary`] turns them into
//! `bench.json`, `bench.md` and `forest.svg` ([`forest`]): per setting and fraction the test
//! macro-AUC averaged over seeds with a 95% patient-bootstrap interval, its paired difference
//! against no distillation, and the setting chosen on validation.

pub mod forest;
pub mod summary;

use std::path::{Path, PathBuf};
use std::time::Instant;

use ckd_core::visit::Sample;
use serde::{Deserialize, Serialize};

use crate::distill::DistillConfig;
use crate::io::{pretty_json, write_atomic};
use crate::pipeline::fraction_teacher::{self as teachers, FractionTeacher, TeacherSource};
use crate::pipeline::stage::{file_hash, key_of, log, Stages};
use crate::pipeline::students::{hard_only, train_config, train_one, StudentData};
use crate::pipeline::upstream;
pub use crate::pipeline::zero_shot_teacher::ZeroShotFiles;
use crate::pipeline::{logreg_teacher, zero_shot_teacher};
use crate::pipeline::{msg_err, pct, stage_err, PipelineConfig, PipelineError};
use crate::student::{self, SoftTargets, TokenizedSamples};
use crate::teacher::train::Bars;

type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// The grid (`[bench]` in `pipeline.toml`; `ckd bench` flags override it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BenchSpec {
    /// Training seeds of every cell.
    pub seeds: Vec<u64>,
    /// Label fractions (hard labels for this share of training patients).
    pub label_fractions: Vec<f64>,
    /// Soft-label weights `w` (hard weight `1 - w`).
    pub soft_weights: Vec<f32>,
    /// Temperatures (other than 1) tried at soft weight `temperature_soft_weight`.
    pub temperatures: Vec<f32>,
    /// Soft weight of the temperature settings.
    pub temperature_soft_weight: f32,
    /// Attention granularities tried on top of soft 0.1: any of `word`, `concept`, `field`,
    /// `all` (the three together).
    pub attention: Vec<String>,
    /// Weight of each attention term that is on.
    pub attention_weight: f32,
    /// Train the no-distillation and soft-0.1 students on texts without knowledge clauses too.
    pub knowledge_ablation: bool,
    /// Bootstrap resamples (by patient) of every interval.
    pub resamples: usize,
    /// Seed of the resamples.
    pub bootstrap_seed: u64,
    /// A pretrained LLM (GGUF file or HF directory) as a frozen teacher: pooled states, and at
    /// each fraction and seed a head on the labelled patients only ([`crate::pipeline::fraction_teacher`]).
    pub llm: Option<PathBuf>,
    /// Layer counts whose states are pooled.
    pub llm_layers: Vec<usize>,
    /// Maximum prompt tokens of the LLM.
    pub llm_max_len: usize,
    /// Soft-label weights of the students distilled from the LLM teacher.
    pub llm_soft_weights: Vec<f32>,
    /// Soft-label weights of the students distilled from the pipeline's teacher recipe retrained
    /// on each fraction's labelled patients only (none by default).
    pub demo_teacher_soft_weights: Vec<f32>,
    /// Also run the pipeline teacher's settings below fraction 1, where that teacher (trained on
    /// every training label) leaks the unlabelled patients' labels: only to measure that leak.
    pub leaky_pipeline_teacher: bool,
    /// A frozen LLM's zero-shot probabilities of the three splits (`ckd teacher zero-shot`), as a
    /// teacher that reads no label ([`crate::pipeline::zero_shot_teacher`]).
    pub zero_shot: Option<ZeroShotFiles>,
    /// Soft-label weights of the students distilled from the zero-shot teacher; at weight 1 the
    /// hard-label term is off and the student learns from no training label at all.
    pub zero_shot_soft_weights: Vec<f32>,
    /// Soft-label weights of the students distilled from the bag-of-concepts logistic regression
    /// fitted on each fraction's labelled patients (none by default).
    pub logreg_teacher_soft_weights: Vec<f32>,
    /// Soft-label weights of the students distilled from that regression with the zero-shot
    /// score added to its logit (needs `zero_shot`; none by default). Each is compared with the
    /// regression alone at the same weight (its twin), which isolates what the LLM adds.
    pub logreg_zero_shot_soft_weights: Vec<f32>,
}

impl Default for BenchSpec {
    fn default() -> Self {
        BenchSpec {
            seeds: vec![1, 2, 3],
            label_fractions: vec![1.0, 0.1, 0.01],
            soft_weights: vec![0.1, 0.5, 1.0],
            temperatures: vec![2.0],
            temperature_soft_weight: 0.5,
            attention: vec!["word".into(), "concept".into(), "field".into(), "all".into()],
            attention_weight: 0.1,
            knowledge_ablation: true,
            resamples: ckd_core::bootstrap::DEFAULT_RESAMPLES,
            bootstrap_seed: 2026,
            llm: None,
            llm_layers: vec![6, 12, 18, 24],
            llm_max_len: 768,
            llm_soft_weights: vec![0.5, 1.0],
            demo_teacher_soft_weights: Vec::new(),
            leaky_pipeline_teacher: false,
            zero_shot: None,
            zero_shot_soft_weights: vec![0.5, 1.0],
            logreg_teacher_soft_weights: Vec::new(),
            logreg_zero_shot_soft_weights: Vec::new(),
        }
    }
}

/// Reads a `pipeline.toml` with an optional `[bench]` table (the grid); everything else is the
/// pipeline's settings, read as `ckd pipeline` reads them.
pub fn from_toml(text: &str, base_dir: &Path) -> Result<(PipelineConfig, BenchSpec)> {
    let cfg = PipelineConfig::from_toml(text, base_dir)?;
    let mut table: toml::Table = toml::from_str(text).map_err(|e| PipelineError::Config(e.to_string()))?;
    let spec = match table.remove("bench") {
        Some(v) => v.try_into::<BenchSpec>().map_err(|e| PipelineError::Config(format!("[bench]: {e}")))?,
        None => BenchSpec::default(),
    };
    let mut spec = spec;
    spec.llm = spec.llm.map(|p| resolve(&p, base_dir));
    if let Some(z) = &mut spec.zero_shot {
        for p in [&mut z.train, &mut z.val, &mut z.test] {
            *p = resolve(p, base_dir);
        }
    }
    spec.validate()?;
    Ok((cfg, spec))
}

/// `~/x` is `$HOME/x`; another relative path is relative to `base_dir`.
fn resolve(p: &Path, base_dir: &Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ if p.is_relative() => base_dir.join(p),
        _ => p.to_path_buf(),
    }
}

/// One setting of the grid: a loss and the texts it trains on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    /// Display name (`none`, `soft 0.5`, `soft 0.1 + attn word`, `none, no knowledge`...).
    pub name: String,
    /// Directory name under `bench/`.
    pub slug: String,
    /// The loss.
    pub distill: DistillConfig,
    /// Whether the texts keep their knowledge clauses.
    pub knowledge: bool,
    /// Where the soft labels come from.
    #[serde(default)]
    pub teacher: TeacherSource,
}

impl Setting {
    /// Whether the loss reads the teacher.
    pub fn distilled(&self) -> bool {
        self.distill.soft > 0.0 || self.distill.uses_attention()
    }
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c.to_ascii_lowercase() } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// Name of the setting every other is compared with.
pub const NONE: &str = "none";

impl BenchSpec {
    /// The frozen LLM of the grid, if any.
    pub fn llm_spec(&self) -> Option<teachers::LlmSpec> {
        let path = self.llm.clone()?;
        Some(teachers::LlmSpec {
            path,
            layers: self.llm_layers.clone(),
            max_len: self.llm_max_len,
            weights: Default::default(),
        })
    }

    /// Whether `setting` trains at `fraction`: a setting distilled from the pipeline teacher
    /// (every training label) only at fraction 1, unless [`Self::leaky_pipeline_teacher`].
    pub fn runs_at(&self, setting: &Setting, fraction: f64) -> bool {
        fraction >= 1.0
            || self.leaky_pipeline_teacher
            || setting.teacher != TeacherSource::Pipeline
            || !setting.distilled()
    }

    /// Checks the grid.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(PipelineError::Config(format!("[bench] {m}")));
        if self.seeds.is_empty() {
            return bad("seeds is empty".into());
        }
        if self.label_fractions.is_empty() || self.label_fractions.iter().any(|f| !(*f > 0.0 && *f <= 1.0)) {
            return bad(format!("label_fractions = {:?}: each must be in (0, 1]", self.label_fractions));
        }
        if self.soft_weights.iter().chain([&self.temperature_soft_weight]).any(|w| !(*w > 0.0 && *w <= 1.0)) {
            return bad("soft weights must be in (0, 1]".into());
        }
        if self.temperatures.iter().any(|t| !(t.is_finite() && *t > 0.0)) {
            return bad(format!("temperatures = {:?} must be > 0", self.temperatures));
        }
        if let Some(a) = self.attention.iter().find(|a| !["word", "concept", "field", "all"].contains(&a.as_str())) {
            return bad(format!("attention {a:?}: expected word, concept, field or all"));
        }
        if !(self.attention_weight.is_finite() && self.attention_weight > 0.0) {
            return bad("attention_weight must be > 0".into());
        }
        let teacher_weights = [
            ("llm_soft_weights", &self.llm_soft_weights),
            ("demo_teacher_soft_weights", &self.demo_teacher_soft_weights),
            ("zero_shot_soft_weights", &self.zero_shot_soft_weights),
            ("logreg_teacher_soft_weights", &self.logreg_teacher_soft_weights),
            ("logreg_zero_shot_soft_weights", &self.logreg_zero_shot_soft_weights),
        ];
        for (name, weights) in teacher_weights {
            if weights.iter().any(|w| !(*w > 0.0 && *w <= 1.0)) {
                return bad(format!("{name} = {weights:?}: each must be in (0, 1]"));
            }
        }
        if self.zero_shot.is_none() && !self.logreg_zero_shot_soft_weights.is_empty() {
            return bad("logreg_zero_shot_soft_weights needs zero_shot (the probability files)".into());
        }
        if self.llm_layers.is_empty() || self.llm_layers.windows(2).any(|w| w[0] >= w[1]) || self.llm_layers[0] == 0 {
            return bad(format!("llm_layers = {:?}: increasing layer counts from 1", self.llm_layers));
        }
        if self.resamples < 100 {
            return bad(format!("resamples = {}: at least 100", self.resamples));
        }
        Ok(())
    }

    /// The settings of the grid, `none` first. `student_layers` caps the layers whose attention
    /// the attention terms average (`last_k_layers`), since a small student has fewer than the
    /// default 4.
    pub fn settings(&self, base: &DistillConfig, student_layers: usize) -> Vec<Setting> {
        let mk = |name: String, distill: DistillConfig, knowledge: bool| Setting {
            slug: slug(&name),
            name,
            distill,
            knowledge,
            teacher: TeacherSource::Pipeline,
        };
        let soft = |w: f32, t: f32| DistillConfig {
            hard: 1.0 - w,
            soft: w,
            temperature: t,
            attn_word: 0.0,
            attn_concept: 0.0,
            attn_field: 0.0,
            ..base.clone()
        };
        let mut out = vec![mk(NONE.into(), hard_only(base), true)];
        for &w in &self.soft_weights {
            out.push(mk(format!("soft {w}"), soft(w, 1.0), true));
        }
        for &t in &self.temperatures {
            out.push(mk(
                format!("soft {} T {t}", self.temperature_soft_weight),
                soft(self.temperature_soft_weight, t),
                true,
            ));
        }
        for a in &self.attention {
            let w = self.attention_weight;
            let on = |g: &str| if a == g || a == "all" { w } else { 0.0 };
            let d = DistillConfig {
                attn_word: on("word"),
                attn_concept: on("concept"),
                attn_field: on("field"),
                last_k_layers: base.last_k_layers.min(student_layers.max(1) as u32),
                ..soft(0.1, 1.0)
            };
            out.push(mk(format!("soft 0.1 + attn {a}"), d, true));
        }
        if self.knowledge_ablation {
            out.push(mk(format!("{NONE}, no knowledge"), hard_only(base), false));
            out.push(mk("soft 0.1, no knowledge".into(), soft(0.1, 1.0), false));
        }
        if self.llm.is_some() {
            for &w in &self.llm_soft_weights {
                out.push(Setting { teacher: TeacherSource::Llm, ..mk(format!("soft {w} (LLM)"), soft(w, 1.0), true) });
            }
        }
        for &w in &self.demo_teacher_soft_weights {
            let name = format!("soft {w} (demo teacher, same labels)");
            out.push(Setting { teacher: TeacherSource::Demo, ..mk(name, soft(w, 1.0), true) });
        }
        if self.zero_shot.is_some() {
            for &w in &self.zero_shot_soft_weights {
                let name =
                    if w >= 1.0 { format!("soft {w} (zero-shot, no labels)") } else { format!("soft {w} (zero-shot)") };
                out.push(Setting { teacher: TeacherSource::ZeroShot, ..mk(name, soft(w, 1.0), true) });
            }
        }
        for &w in &self.logreg_teacher_soft_weights {
            out.push(Setting { teacher: TeacherSource::LogReg, ..mk(logreg_setting(w, false), soft(w, 1.0), true) });
        }
        if self.zero_shot.is_some() {
            for &w in &self.logreg_zero_shot_soft_weights {
                let name = logreg_setting(w, true);
                out.push(Setting { teacher: TeacherSource::LogRegZeroShot, ..mk(name, soft(w, 1.0), true) });
            }
        }
        out
    }
}

/// Name of the setting distilled at weight `w` from the logistic regression on the same labels,
/// with the zero-shot score on its logit or not (the pair are each other's twins).
pub fn logreg_setting(w: f32, zero_shot: bool) -> String {
    if zero_shot {
        format!("soft {w} (LR + zero-shot)")
    } else {
        format!("soft {w} (LR, same labels)")
    }
}

/// Probabilities of one trained student (`predictions.json` beside it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellPredictions {
    /// `"ckd-bench-predictions"`.
    pub format: String,
    /// Format version.
    pub version: u32,
    /// Validation probabilities, `[N_val * 25]`, in the validation split's order.
    pub val: Vec<f32>,
    /// Test probabilities, `[N_test * 25]`.
    pub test: Vec<f32>,
    /// Seconds the student took to train.
    pub train_seconds: f64,
}

const PRED_FORMAT: &str = "ckd-bench-predictions";
const PRED_VERSION: u32 = 1;

/// One trained cell.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Index into the settings.
    pub setting: usize,
    /// Label fraction.
    pub fraction: f64,
    /// Seed.
    pub seed: u64,
    /// Its probabilities.
    pub preds: CellPredictions,
}

/// What `ckd bench` produced.
#[derive(Debug, Clone)]
pub struct BenchOutcome {
    /// `bench.json`, `bench.md`, `forest.svg` are here.
    pub dir: PathBuf,
    /// The Markdown table.
    pub markdown: String,
    /// Students trained in this run (the rest were current).
    pub trained: usize,
    /// Wall seconds.
    pub seconds: f64,
}

/// The samples without their knowledge clauses (texts rendered from the visit alone).
fn without_knowledge(samples: &[Sample]) -> Vec<Sample> {
    samples.iter().map(|s| Sample { knowledge: Vec::new(), raw: None, ..s.clone() }).collect()
}

/// Runs (or resumes) the bench described by `cfg.bench`.
pub fn run(cfg: &PipelineConfig, spec: &BenchSpec, bars: &dyn Bars) -> Result<BenchOutcome> {
    cfg.validate()?;
    spec.validate()?;
    let t_all = Instant::now();
    let mut stages = Stages::default();
    let up = upstream::prepare(cfg, bars, &mut stages)?;
    let settings = spec.settings(&cfg.student.distill, student_layers(cfg)?);
    let teacher = SoftTargets::from_evidence(up.ev_train.clone());
    let bare = [without_knowledge(&up.train), without_knowledge(&up.val), without_knowledge(&up.test)];
    let with_k = StudentData::of(&up);
    let no_k = StudentData {
        train: &bare[0],
        val: &bare[1],
        knowledge: None,
        samples_key: format!("{} without knowledge clauses", up.samples_hash),
        provenance: serde_json::json!({"samples": up.samples_bin, "samples_sha256": up.samples_hash, "knowledge": "removed"}),
        evidence_key: &up.ev_train_hash,
    };
    let fraction_teachers = fraction_teachers(cfg, spec, &up, &settings, bars, &mut stages)?;
    let fraction_soft: Vec<SoftTargets> = fraction_teachers.iter().map(|(t, _)| t.teacher()).collect();
    let grid = Grid {
        cfg,
        spec,
        up: &up,
        bars,
        with_k,
        no_k,
        bare_test: &bare[2],
        teacher: &teacher,
        fraction_teachers: &fraction_teachers,
        fraction_soft: &fraction_soft,
        dir: cfg.out.join("bench"),
    };
    let (cells, trained) = grid.train_all(&settings, &mut stages)?;
    let fts: Vec<FractionTeacher> = fraction_teachers.into_iter().map(|(t, _)| t).collect();
    let input =
        summary::SummaryInput { cfg, spec, up: &up, settings: &settings, cells: &cells, fraction_teachers: &fts };
    let markdown = write_summary(&input, t_all.elapsed().as_secs_f64(), bars)?;
    Ok(BenchOutcome { dir: cfg.out.clone(), markdown, trained, seconds: t_all.elapsed().as_secs_f64() })
}

/// The teachers retrained on each fraction's labels, for every teacher source the settings use
/// besides the pipeline's (in the settings' order), at every fraction and seed; each with the
/// key of its soft labels. The LLM teacher's states are computed first (heads on the labelled
/// patients only).
fn fraction_teachers(
    cfg: &PipelineConfig,
    spec: &BenchSpec,
    up: &upstream::Upstream,
    settings: &[Setting],
    bars: &dyn Bars,
    stages: &mut Stages,
) -> Result<Vec<(FractionTeacher, String)>> {
    let llm = teachers::llm_states(cfg, &spec.llm_spec(), up, bars)?;
    let mut fraction_teachers: Vec<(FractionTeacher, String)> = Vec::new();
    let mut sources: Vec<TeacherSource> = Vec::new();
    for s in settings.iter().map(|s| s.teacher).filter(|s| *s != TeacherSource::Pipeline) {
        if !sources.contains(&s) {
            sources.push(s);
        }
    }
    let reads_zero_shot = sources.iter().any(|s| matches!(s, TeacherSource::ZeroShot | TeacherSource::LogRegZeroShot));
    let zero_shot = match (&spec.zero_shot, reads_zero_shot) {
        (Some(files), true) => Some((files, zero_shot_teacher::read_splits(files, up)?)),
        _ => None,
    };
    for source in sources {
        for &fraction in &spec.label_fractions {
            for &seed in &spec.seeds {
                let labelled = || teachers::labelled(&up.train, fraction, seed);
                let t = match (source, &zero_shot) {
                    (TeacherSource::ZeroShot, Some((files, (splits, hash)))) => {
                        let t = zero_shot_teacher::zero_shot_teacher(files, splits, up, &labelled(), fraction, seed);
                        (t, hash.clone())
                    }
                    (TeacherSource::LogReg | TeacherSource::LogRegZeroShot, _) => {
                        let zs = zero_shot.as_ref().filter(|_| source == TeacherSource::LogRegZeroShot);
                        let labels = labelled();
                        let t = logreg_teacher::logreg_teacher(&logreg_teacher::LogRegInput {
                            train: &up.train,
                            val: &up.val,
                            test: &up.test,
                            labelled: &labels,
                            zero_shot: zs.map(|(_, (splits, _))| splits),
                            folds: cfg.teacher.oof_folds.max(2),
                            fraction,
                            seed,
                        })?;
                        log(&format!(
                            "{source:?} teacher @ {}% seed {seed}: {} labelled patients, {}, val macro-AUC {}",
                            pct(fraction),
                            t.protocol.labelled_patients,
                            t.representation,
                            crate::report::fmt3(crate::report::macro_auc(&t.val, &up.val))
                        ));
                        let hash = soft_labels_hash(&t);
                        (t, hash)
                    }
                    _ => teachers::fraction_teacher(cfg, up, source, llm.as_ref(), fraction, seed, bars, stages)?,
                };
                fraction_teachers.push(t);
            }
        }
    }
    Ok(fraction_teachers)
}

/// SHA-256 over a teacher's training soft labels (the key its students are trained under).
fn soft_labels_hash(t: &FractionTeacher) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for x in &t.train {
        h.update(x.to_le_bytes());
    }
    ckd_core::format::hex(&h.finalize())
}

/// What every cell of the grid reads: the data with and without knowledge clauses (and the
/// test split without them), the pipeline teacher, the teachers of each fraction (with their
/// soft labels' keys, and as soft labels), and `out/bench/`.
struct Grid<'a> {
    cfg: &'a PipelineConfig,
    spec: &'a BenchSpec,
    up: &'a upstream::Upstream,
    bars: &'a dyn Bars,
    with_k: StudentData<'a>,
    no_k: StudentData<'a>,
    bare_test: &'a [Sample],
    teacher: &'a SoftTargets,
    fraction_teachers: &'a [(FractionTeacher, String)],
    fraction_soft: &'a [SoftTargets],
    dir: PathBuf,
}

impl<'a> Grid<'a> {
    /// Trains (or finds current) every cell, fractions outer, then settings that run at the
    /// fraction, then seeds; logs each with an estimate of the time left. Returns the cells in
    /// that order and how many were trained in this run.
    fn train_all(&self, settings: &[Setting], stages: &mut Stages) -> Result<(Vec<Cell>, usize)> {
        let spec = self.spec;
        let runs = |s: &Setting, f: f64| spec.runs_at(s, f);
        let total = spec
            .label_fractions
            .iter()
            .map(|&f| settings.iter().filter(|s| runs(s, f)).count() * spec.seeds.len())
            .sum::<usize>();
        if settings.iter().any(|s| spec.label_fractions.iter().any(|&f| !runs(s, f))) {
            log("bench: settings distilled from the pipeline teacher (trained on every training label) run at 100% labels only; below it they would leak the unlabelled patients' labels");
        }
        let mut cells = Vec::with_capacity(total);
        let mut trained = 0;
        let t_grid = Instant::now();
        for &fraction in &spec.label_fractions {
            for (si, setting) in settings.iter().enumerate().filter(|(_, s)| runs(s, fraction)) {
                for &seed in &spec.seeds {
                    let (data, test, cell_teacher) = self.cell_inputs(setting, fraction, seed)?;
                    let dir = self.dir.join(format!("{}-{}pct-seed{seed}", setting.slug, pct(fraction)));
                    let display = format!("{} @ {}% seed {seed}", setting.name, pct(fraction));
                    let distill = setting.distill.clone();
                    let tc = train_config(self.cfg, distill, fraction, seed);
                    let t = Instant::now();
                    let ran = train_one(
                        self.cfg,
                        &data,
                        cell_teacher,
                        tc,
                        "bench-student",
                        &display,
                        &dir,
                        self.bars,
                        stages,
                    )?;
                    let train_seconds = t.elapsed().as_secs_f64();
                    let preds = predictions(&dir, &data, test, ran.then_some(train_seconds), stages)?;
                    if ran {
                        trained += 1;
                    }
                    let done = cells.len() + 1;
                    let left = if trained > 0 {
                        let per = t_grid.elapsed().as_secs_f64() / trained as f64;
                        format!("; about {:.0} min left", per * (total - done) as f64 / 60.0)
                    } else {
                        String::new()
                    };
                    log(&format!(
                        "bench {done}/{total}: {display}: val macro-AUC {}, test {}{}{left}",
                        crate::report::fmt3(crate::report::macro_auc(&preds.val, data.val)),
                        crate::report::fmt3(crate::report::macro_auc(&preds.test, test)),
                        if ran { format!(" ({train_seconds:.0} s)") } else { " (current, not retrained)".into() },
                    ));
                    cells.push(Cell { setting: si, fraction, seed, preds });
                }
            }
        }
        Ok((cells, trained))
    }

    /// The data (its evidence key the cell teacher's), test split and teacher of `setting`'s
    /// student at `fraction` and `seed`. A missing fraction teacher is an error.
    fn cell_inputs(
        &self,
        setting: &Setting,
        fraction: f64,
        seed: u64,
    ) -> Result<(StudentData<'a>, &'a [Sample], &'a SoftTargets)> {
        let (data, test): (&StudentData<'a>, &'a [Sample]) =
            if setting.knowledge { (&self.with_k, &self.up.test) } else { (&self.no_k, self.bare_test) };
        let (cell_teacher, evidence_key) = match setting.teacher {
            TeacherSource::Pipeline => (self.teacher, self.up.ev_train_hash.as_str()),
            source => {
                let i = self
                    .fraction_teachers
                    .iter()
                    .position(|(t, _)| t.source == source && t.fraction == fraction && t.seed == seed)
                    .ok_or_else(|| msg_err("bench", format!("no {source:?} teacher at {fraction} seed {seed}")))?;
                (&self.fraction_soft[i], self.fraction_teachers[i].1.as_str())
            }
        };
        Ok((StudentData { evidence_key, ..data.clone() }, test, cell_teacher))
    }
}

/// Computes the summary (`wall_seconds`: the run so far) and writes `bench.json`, `bench.md` and
/// `forest.svg` into `cfg.out`. Returns the Markdown.
fn write_summary(input: &summary::SummaryInput<'_>, wall_seconds: f64, bars: &dyn Bars) -> Result<String> {
    let out = &input.cfg.out;
    let bar = bars.bar("bench summary");
    let s = summary::summarize(input, wall_seconds, &bar)?;
    bar.finish_and_clear();
    let svg = forest::render(&s).map_err(|e| msg_err("bench", e))?;
    write_atomic(&out.join("bench.json"), pretty_json(&s).as_bytes()).map_err(stage_err("bench"))?;
    let markdown = summary::markdown(&s);
    write_atomic(&out.join("bench.md"), markdown.as_bytes()).map_err(stage_err("bench"))?;
    write_atomic(&out.join("forest.svg"), svg.as_bytes()).map_err(stage_err("bench"))?;
    Ok(markdown)
}

/// Encoder layers of the students `[student]` describes (the preset's, or the checkpoint's).
fn student_layers(cfg: &PipelineConfig) -> Result<usize> {
    match &cfg.student.init {
        Some(dir) => {
            let p = dir.join("config.json");
            let text = std::fs::read_to_string(&p).map_err(|e| msg_err("bench", format!("{}: {e}", p.display())))?;
            let c = crate::models::bert::Config::from_json(&text).map_err(stage_err("bench"))?;
            Ok(c.num_hidden_layers)
        }
        None => Ok(cfg.student.preset.config(cfg.student.vocab_size, cfg.student.max_len).num_hidden_layers),
    }
}

/// Stage `bench-predictions`: the student in `dir` on validation and test, into
/// `dir/predictions.json` (keyed on the weights).
fn predictions(
    dir: &Path,
    data: &StudentData<'_>,
    test: &[Sample],
    train_seconds: Option<f64>,
    stages: &mut Stages,
) -> Result<CellPredictions> {
    const STAGE: &str = "bench-predictions";
    let path = dir.join("predictions.json");
    let key =
        key_of(&[("student", file_hash(STAGE, &dir.join("model.safetensors"))?), ("test", test.len().to_string())]);
    let predictions_dir = dir.join("predictions");
    stages.run(STAGE, &predictions_dir, &key, || {
        let st = student::load_student(dir).map_err(stage_err(STAGE))?;
        let run = |set: &[Sample]| -> Result<Vec<f32>> {
            let p = TokenizedSamples::new(set, &st.encoder).map_err(stage_err(STAGE))?;
            student::predict(&st.model, &p, st.encoder.pad_id, 32).map_err(stage_err(STAGE))
        };
        let preds = CellPredictions {
            format: PRED_FORMAT.into(),
            version: PRED_VERSION,
            val: run(data.val)?,
            test: run(test)?,
            train_seconds: train_seconds.unwrap_or(0.0),
        };
        write_atomic(&path, pretty_json(&preds).as_bytes()).map_err(stage_err(STAGE))
    })?;
    let bytes = std::fs::read(&path).map_err(|e| msg_err(STAGE, format!("{}: {e}", path.display())))?;
    let p: CellPredictions =
        serde_json::from_slice(&bytes).map_err(|e| msg_err(STAGE, format!("{}: {e}", path.display())))?;
    if p.format != PRED_FORMAT || p.version != PRED_VERSION {
        return Err(msg_err(STAGE, format!("{}: not a {PRED_FORMAT} v{PRED_VERSION} file", path.display())));
    }
    if p.val.len() != data.val.len() * ckd_core::NUM_LABELS || p.test.len() != test.len() * ckd_core::NUM_LABELS {
        return Err(msg_err(STAGE, format!("{}: sizes do not match the splits", path.display())));
    }
    Ok(p)
}
