//! Teachers at a label fraction: soft labels that carry what a teacher knows, not the labels of
//! patients the student is not given.
//!
//! A setting of the grid distils from one [`TeacherSource`]:
//! - `pipeline`: the pipeline's teacher, trained on every training label. At a fraction below 1
//!   it would hand the student the other patients' labels (leakage), so its settings run at
//!   fraction 1 only (unless the grid asks for the leaky comparison).
//! - `llm`: a frozen pretrained LLM ([`crate::teacher::states`]). At each fraction and seed a head
//!   is fitted on the pooled states of the labelled patients only, for each extracted (layer,
//!   pooling) and L2 penalty ([`HEAD_L2`]); the one with the best validation macro-AUC is kept;
//!   its soft labels follow [`crate::teacher::semi`] (out-of-fold for labelled rows, the head's for unlabelled rows).
//! - `demo`: the pipeline's teacher recipe (`[teacher]`, the demo model trained from scratch)
//!   retrained at each fraction and seed on the labelled patients only; its last-token features
//!   then go through the same [`crate::teacher::semi`] protocol. It knows only those labels.
//!
//! - `zero_shot`: a frozen LLM's zero-shot probabilities, read from files
//!   ([`super::zero_shot_teacher`]); no label reaches it at any fraction.
//! - `log_reg` and `log_reg_zero_shot`: the bag-of-concepts logistic regression on the labelled
//!   patients, without and with the zero-shot score on its logit ([`super::logreg_teacher`]);
//!   fitted in seconds, so not kept as stages.
//!
//! Each fitted (source, fraction, seed) is a resumable stage under `out/bench/teachers/`, written as
//! `soft.json` with its probabilities for the training, validation and test rows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ckd_core::visit::Sample;
use ckd_core::{LabelSet, NUM_LABELS};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::stage::{file_hash, key_of, log, Stages};
use super::upstream::Upstream;
use super::{msg_err, pct, settings_json, stage_err, PipelineConfig, PipelineError};
use crate::io::{pretty_json, write_atomic};
use crate::report::{fmt3 as fmt_auc, macro_auc};
use crate::student::{keeps_label, SoftTargets};
use crate::teacher::head::{probabilities, train_head, HeadConfig};
use crate::teacher::semi::{self, SemiInput, SemiProtocol};
use crate::teacher::states::{self, States, StatesConfig, POOLS};
use crate::teacher::train::Bars;

type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Where a setting's soft labels come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeacherSource {
    /// The pipeline's teacher (all training labels).
    #[default]
    Pipeline,
    /// A frozen pretrained LLM with a head on the labelled patients only.
    Llm,
    /// The pipeline's teacher recipe retrained on the labelled patients only.
    Demo,
    /// A frozen LLM's zero-shot probabilities ([`super::zero_shot_teacher`]): no labels.
    ZeroShot,
    /// The bag-of-concepts logistic regression on the labelled patients only
    /// ([`super::logreg_teacher`]).
    LogReg,
    /// That regression with the zero-shot score added to its logit, weighted on validation.
    LogRegZeroShot,
}

/// One candidate representation's head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// `layer K, last` or `layer K, input-mean`.
    pub name: String,
    /// Validation macro-AUC of its head (what the choice reads).
    pub val_macro_auc: Option<f64>,
    /// Its test probabilities `[N_test * 25]` (reported, never used to choose).
    pub test: Vec<f32>,
}

/// The L2 penalties ([`HeadConfig::l2`]) each LLM representation's head is tried with.
pub const HEAD_L2: &[f64] = &[0.0, 0.3, 1.0, 3.0, 10.0];

/// Soft labels of one teacher at one fraction and seed (`soft.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FractionTeacher {
    /// `"ckd-bench-teacher"`.
    pub format: String,
    /// Format version.
    pub version: u32,
    /// Source.
    pub source: TeacherSource,
    /// Label fraction.
    pub fraction: f64,
    /// Seed of the labelled draw.
    pub seed: u64,
    /// The representation chosen on validation.
    pub representation: String,
    /// Every representation tried.
    pub candidates: Vec<Candidate>,
    /// How the training rows were labelled.
    pub protocol: SemiProtocol,
    /// Training sample ids (order of `train`).
    pub ids: Vec<String>,
    /// Training rows' soft labels `[N * 25]`.
    pub train: Vec<f32>,
    /// Validation probabilities.
    pub val: Vec<f32>,
    /// Test probabilities.
    pub test: Vec<f32>,
}

pub(crate) const FORMAT: &str = "ckd-bench-teacher";
pub(crate) const VERSION: u32 = 1;

impl FractionTeacher {
    /// The soft labels as the student reads them.
    pub fn teacher(&self) -> SoftTargets {
        let mut t = SoftTargets::default();
        for (i, id) in self.ids.iter().enumerate() {
            t.probs.insert(id.clone(), self.train[i * NUM_LABELS..(i + 1) * NUM_LABELS].to_vec());
        }
        t.identity = Some(ckd_core::evidence::TeacherIdentity {
            model: format!(
                "{:?} teacher at {}% labels (seed {}), {}",
                self.source,
                pct(self.fraction),
                self.seed,
                self.representation
            ),
            config_hash: String::new(),
            adapter_hash: None,
            temperature: 1.0,
            last_k_layers: 0,
        });
        t
    }
}

/// A frozen LLM whose pooled states feed the [`TeacherSource::Llm`] heads.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmSpec {
    /// GGUF file or HF directory.
    pub path: PathBuf,
    /// Layer counts whose states are pooled.
    pub layers: Vec<usize>,
    /// Maximum prompt tokens.
    pub max_len: usize,
    /// How the base's weights are held (a GGUF's quantized weights by default).
    pub weights: crate::teacher::BaseWeights,
}

/// The LLM's pooled states of the three splits.
pub struct LlmStates {
    /// Train, validation, test.
    pub splits: [States; 3],
    /// SHA-256 over the three splits' values (stage keys).
    pub hash: String,
}

/// Extracts (or reads back, chunk by chunk) the LLM's states of every split into
/// `out/llm-states/{train,val,test}` (the layout `ckd teacher states --out out/llm-states` writes).
pub(crate) fn llm_states(
    cfg: &PipelineConfig,
    spec: &Option<LlmSpec>,
    up: &Upstream,
    bars: &dyn Bars,
) -> Result<Option<LlmStates>> {
    const STAGE: &str = "llm-states";
    let Some(spec) = spec else { return Ok(None) };
    let (model, prompts, key) =
        crate::teacher::load_frozen(&spec.path, up.device, spec.max_len, spec.weights).map_err(stage_err(STAGE))?;
    let scfg = StatesConfig { layers: spec.layers.clone(), chunk: 32 };
    let dir = cfg.out.join("llm-states");
    let mut h = Sha256::new();
    let mut out = Vec::new();
    for (name, set) in [("train", &up.train), ("val", &up.val), ("test", &up.test)] {
        let bar = bars.bar(&format!("LLM states ({name})"));
        let (st, o) =
            states::extract(&model, &prompts, set, &scfg, &dir.join(name), &key, &bar).map_err(stage_err(STAGE))?;
        bar.finish_and_clear();
        log(&format!(
            "LLM states ({name}): {} samples, {} chunks computed ({:.0} tokens/s), {} reused, {} prompts cut",
            set.len(),
            o.computed,
            o.tokens as f64 / o.seconds.max(1e-9),
            o.reused,
            o.truncated
        ));
        for x in &st.data {
            h.update(x.to_le_bytes());
        }
        out.push(st);
    }
    let splits: [States; 3] = out.try_into().map_err(|_| msg_err(STAGE, "three splits expected".into()))?;
    Ok(Some(LlmStates { splits, hash: ckd_core::format::hex(&h.finalize()) }))
}

/// The teacher of `source` at `fraction` / `seed` (`llm` must be given for [`TeacherSource::Llm`]):
/// stage `bench-teacher` in `out/bench/teachers/{source}-{pct}pct-seed{seed}/`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fraction_teacher(
    cfg: &PipelineConfig,
    up: &Upstream,
    source: TeacherSource,
    llm: Option<&LlmStates>,
    fraction: f64,
    seed: u64,
    bars: &dyn Bars,
    stages: &mut Stages,
) -> Result<(FractionTeacher, String)> {
    const STAGE: &str = "bench-teacher";
    let name = match source {
        TeacherSource::Llm => "llm",
        TeacherSource::Demo => "demo",
        TeacherSource::Pipeline => {
            return Err(msg_err(STAGE, "the pipeline teacher is not refitted per fraction".into()))
        }
        TeacherSource::ZeroShot | TeacherSource::LogReg | TeacherSource::LogRegZeroShot => {
            return Err(msg_err(STAGE, format!("the {source:?} teacher is not a fitted stage")))
        }
    };
    let dir = cfg.out.join("bench").join("teachers").join(format!("{name}-{}pct-seed{seed}", pct(fraction)));
    let path = dir.join("soft.json");
    let features = match (source, llm) {
        (TeacherSource::Llm, Some(l)) => l.hash.clone(),
        (TeacherSource::Llm, None) => {
            return Err(msg_err(STAGE, "the LLM teacher needs an LLM (`[bench] llm`)".into()))
        }
        _ => settings_json(STAGE, &(&cfg.teacher, "demo teacher v1"))?,
    };
    let mut parts = vec![
        ("features", features),
        ("samples", up.samples_hash.clone()),
        ("head", settings_json(STAGE, &cfg.teacher.head)?),
        ("draw", format!("{fraction} {seed} {} {}", cfg.teacher.oof_folds, semi::MIN_HEAD_STEPS)),
    ];
    if source == TeacherSource::Llm {
        parts.push(("penalties", format!("{HEAD_L2:?}")));
    }
    let key = key_of(&parts);
    stages.run(STAGE, &dir, &key, || {
        let t = match llm.filter(|_| source == TeacherSource::Llm) {
            Some(l) => fit_llm_teacher(cfg, up, l, fraction, seed)?,
            None => fit_demo_teacher(cfg, up, fraction, seed, &dir, bars)?,
        };
        log(&format!(
            "{name} teacher @ {}% seed {seed}: {} labelled patients, {} (val macro-AUC {}), test {}",
            pct(fraction),
            t.protocol.labelled_patients,
            t.representation,
            fmt_auc(macro_auc(&t.val, &up.val)),
            fmt_auc(macro_auc(&t.test, &up.test))
        ));
        write_atomic(&path, pretty_json(&t).as_bytes()).map_err(stage_err(STAGE))
    })?;
    let hash = file_hash(STAGE, &path)?;
    Ok((read(&path, up)?, hash))
}

fn read(path: &Path, up: &Upstream) -> Result<FractionTeacher> {
    const STAGE: &str = "bench-teacher";
    let bytes = std::fs::read(path).map_err(|e| msg_err(STAGE, format!("{}: {e}", path.display())))?;
    let t: FractionTeacher =
        serde_json::from_slice(&bytes).map_err(|e| msg_err(STAGE, format!("{}: {e}", path.display())))?;
    let sizes_ok = t.train.len() == up.train.len() * NUM_LABELS
        && t.val.len() == up.val.len() * NUM_LABELS
        && t.test.len() == up.test.len() * NUM_LABELS
        && t.ids.len() == up.train.len();
    if t.format != FORMAT || t.version != VERSION || !sizes_ok {
        return Err(msg_err(STAGE, format!("{}: not a {FORMAT} v{VERSION} file for these splits", path.display())));
    }
    Ok(t)
}

/// The labelled rows' labels at `fraction` / `seed` (`None` for unlabelled patients), drawn as
/// the student draws them.
pub fn labelled(train: &[Sample], fraction: f64, seed: u64) -> Vec<Option<LabelSet>> {
    train.iter().map(|s| keeps_label(seed, &s.subject.to_string(), fraction).then_some(s.labels)).collect()
}

/// The pipeline's teacher recipe trained on the labelled rows only (into `dir/model`), its
/// last-token features of every split, and the [`semi`] protocol on them.
fn fit_demo_teacher(
    cfg: &PipelineConfig,
    up: &Upstream,
    fraction: f64,
    seed: u64,
    dir: &Path,
    bars: &dyn Bars,
) -> Result<FractionTeacher> {
    const STAGE: &str = "bench-teacher";
    let labels = labelled(&up.train, fraction, seed);
    let rows: Vec<Sample> = up.train.iter().zip(&labels).filter(|(_, l)| l.is_some()).map(|(s, _)| s.clone()).collect();
    if rows.is_empty() {
        return Err(msg_err(STAGE, format!("no labelled training patient at {}% (seed {seed})", pct(fraction))));
    }
    let teacher_dir = dir.join("model");
    let tcfg = crate::pipeline::upstream::teacher_config(cfg, up.device);
    crate::teacher::train::train_teacher(&rows, &up.val, &tcfg, &teacher_dir, bars).map_err(stage_err(STAGE))?;
    let t = crate::teacher::load_teacher(&teacher_dir, None, up.device).map_err(stage_err(STAGE))?;
    let mut feats = Vec::new();
    for (name, set) in [("train", &up.train), ("val", &up.val), ("test", &up.test)] {
        let bar = bars.bar(&format!("demo teacher features ({name})"));
        let f = crate::teacher::head::features(&t.model, &t.prompts, set, cfg.teacher.batch_size, &bar)
            .map_err(stage_err(STAGE))?;
        bar.finish_and_clear();
        feats.push(f);
    }
    let h = t.model.config().hidden_size;
    let f = [&feats[0][..], &feats[1][..], &feats[2][..]];
    let mut out = semi_teacher(cfg, up, &cfg.teacher.head, f, h, &labels, fraction, seed)?;
    out.source = TeacherSource::Demo;
    Ok(out)
}

fn fit_llm_teacher(
    cfg: &PipelineConfig,
    up: &Upstream,
    llm: &LlmStates,
    fraction: f64,
    seed: u64,
) -> Result<FractionTeacher> {
    const STAGE: &str = "bench-teacher";
    let labels = labelled(&up.train, fraction, seed);
    let rows: Vec<usize> = (0..labels.len()).filter(|&i| labels[i].is_some()).collect();
    if rows.is_empty() {
        return Err(msg_err(STAGE, format!("no labelled training patient at {}% (seed {seed})", pct(fraction))));
    }
    let y: Vec<LabelSet> = rows.iter().filter_map(|&i| labels[i]).collect();
    let val_labels: Vec<LabelSet> = up.val.iter().map(|s| s.labels).collect();
    let [tr, va, te] = &llm.splits;
    let h = tr.hidden;
    let steps = rows.len().div_ceil(cfg.teacher.head.batch_size.max(1));
    let head_cfg = HeadConfig {
        epochs: cfg.teacher.head.epochs.max(semi::MIN_HEAD_STEPS.div_ceil(steps)),
        ..cfg.teacher.head.clone()
    };
    // 1. Each representation's head at each penalty on the labelled rows; the choice reads
    //    validation only.
    let mut candidates = Vec::new();
    let mut views = HashMap::new();
    for &layer in &tr.layers {
        for (p, pool) in POOLS.iter().enumerate() {
            let v = [tr.view(layer, p), va.view(layer, p), te.view(layer, p)];
            let [vt, vv, vte] = v.map(|x| x.map_err(stage_err(STAGE)));
            let (vt, vv, vte) = (vt?, vv?, vte?);
            let xl: Vec<f32> = rows.iter().flat_map(|&i| vt[i * h..(i + 1) * h].iter().copied()).collect();
            for &l2 in HEAD_L2 {
                let name = format!("layer {layer}, {pool}, l2 {l2}");
                let hc = HeadConfig { l2, ..head_cfg.clone() };
                let (head, _) = train_head(&xl, &y, &vv, &val_labels, h, &hc).map_err(stage_err(STAGE))?;
                let pv = probabilities(&head, &vv, h, 1.0).map_err(stage_err(STAGE))?;
                let test = probabilities(&head, &vte, h, 1.0).map_err(stage_err(STAGE))?;
                candidates.push(Candidate { name: name.clone(), val_macro_auc: macro_auc(&pv, &up.val), test });
                views.insert(name, (layer, p, l2));
            }
        }
    }
    let best = candidates
        .iter()
        .filter_map(|c| c.val_macro_auc.map(|v| (c, v)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c.name.clone())
        .or_else(|| candidates.first().map(|c| c.name.clone()))
        .ok_or_else(|| msg_err(STAGE, "no representation to choose from".into()))?;
    let &(layer, p, l2) = views.get(&best).ok_or_else(|| msg_err(STAGE, format!("no view {best}")))?;
    let [vt, vv, vte] = [tr.view(layer, p), va.view(layer, p), te.view(layer, p)].map(|x| x.map_err(stage_err(STAGE)));
    let (vt, vv, vte) = (vt?, vv?, vte?);
    let head = HeadConfig { l2, ..cfg.teacher.head.clone() };
    let mut t = semi_teacher(cfg, up, &head, [&vt, &vv, &vte], h, &labels, fraction, seed)?;
    t.representation = best;
    t.candidates = candidates;
    Ok(t)
}

/// Soft labels from features `[train, val, test]` of width `h` under the [`semi`] protocol.
#[allow(clippy::too_many_arguments)]
fn semi_teacher(
    cfg: &PipelineConfig,
    up: &Upstream,
    head: &HeadConfig,
    [vt, vv, vte]: [&[f32]; 3],
    h: usize,
    labels: &[Option<LabelSet>],
    fraction: f64,
    seed: u64,
) -> Result<FractionTeacher> {
    const STAGE: &str = "bench-teacher";
    let val_labels: Vec<LabelSet> = up.val.iter().map(|s| s.labels).collect();
    let subjects: Vec<u64> = up.train.iter().map(|s| s.subject).collect();
    let o = semi::soft_labels(&SemiInput {
        train: vt,
        labels,
        subjects: &subjects,
        val: vv,
        val_labels: &val_labels,
        hidden: h,
        head,
        folds: cfg.teacher.oof_folds.max(2),
        seed,
        temperature: cfg.teacher.temperature,
    })
    .map_err(stage_err(STAGE))?;
    let val = probabilities(&o.head, vv, h, cfg.teacher.temperature).map_err(stage_err(STAGE))?;
    let test = probabilities(&o.head, vte, h, cfg.teacher.temperature).map_err(stage_err(STAGE))?;
    Ok(FractionTeacher {
        format: FORMAT.into(),
        version: VERSION,
        source: TeacherSource::Llm,
        fraction,
        seed,
        representation: "final layer, last token".into(),
        candidates: Vec::new(),
        protocol: o.protocol,
        ids: up.train.iter().map(|s| s.id.clone()).collect(),
        train: o.train,
        val,
        test,
    })
}
