//! `pipeline.toml`: the settings of `ckd pipeline`, `ckd demo` and `ckd bench`, with the defaults
//! the demo uses, and the library configs they turn into (one place, so the CLI and the pipeline
//! cannot drift).

use std::path::{Path, PathBuf};

use ckd_core::knowledge::KnowledgeConfig;
use ckd_core::split::SplitConfig;
use serde::{Deserialize, Serialize};

use super::{PipelineError, Result};
use crate::distill::DistillConfig;
use crate::ingest::IngestConfig;
use crate::models::bert::Pooling;
use crate::models::lora::LoraConfig;
use crate::student::Preset;
use crate::teacher::demo::DemoConfig;
use crate::teacher::head::HeadConfig;
use crate::teacher::sft::SftConfig;
use crate::teacher::DeviceSpec;

/// Where the data comes from: exactly one of the three.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// A MIMIC-III directory.
    pub mimic: Option<PathBuf>,
    /// A CKD-EHR JSONL file.
    pub jsonl: Option<PathBuf>,
    /// A synthetic cohort generated here.
    pub synth: Option<SynthSpec>,
}

/// Synthetic cohort settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthSpec {
    /// Patients.
    pub patients: usize,
    /// Seed.
    #[serde(default = "seven")]
    pub seed: u64,
}

fn seven() -> u64 {
    7
}

/// Ingest settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSpec {
    /// Patient-level split seed.
    pub split_seed: u64,
    /// Train fraction of patients.
    pub train_frac: f64,
    /// Validation fraction of patients.
    pub val_frac: f64,
    /// Add knowledge clauses.
    pub knowledge: bool,
    /// Minimum support of a drug in the knowledge statistic.
    pub knowledge_min_support: u32,
    /// Skip and count malformed rows instead of failing.
    pub lenient: bool,
    /// Refuse exact duplicate JSONL records instead of keeping each in the split of its first
    /// occurrence (`ckd ingest --refuse-duplicates`). Left out of the stage key while false, so
    /// runs made before the setting existed keep their samples stage.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refuse_duplicates: bool,
}

impl Default for IngestSpec {
    fn default() -> Self {
        Self {
            split_seed: 42,
            train_frac: 0.8,
            val_frac: 0.1,
            knowledge: true,
            knowledge_min_support: 5,
            lenient: false,
            refuse_duplicates: false,
        }
    }
}

impl IngestSpec {
    /// The ingest library's settings (`ckd ingest` builds the same from its flags).
    pub fn to_config(&self) -> IngestConfig {
        IngestConfig {
            lenient: self.lenient,
            split: SplitConfig { seed: self.split_seed, train: self.train_frac, val: self.val_frac },
            knowledge: self
                .knowledge
                .then_some(KnowledgeConfig { min_support: self.knowledge_min_support, ..Default::default() }),
            refuse_duplicates: self.refuse_duplicates,
        }
    }
}

/// Teacher settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TeacherSpec {
    /// `"demo"` (a small Qwen2-architecture model trained here) or a GGUF file / HF directory.
    pub base: String,
    /// Demo model size.
    pub demo: DemoConfig,
    /// LoRA settings (pretrained bases).
    pub lora: LoraConfig,
    /// Fine-tuning.
    pub sft: SftConfig,
    /// Head training.
    pub head: HeadConfig,
    /// Maximum prompt tokens.
    pub max_len: usize,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Prompts per forward pass (features, labelling).
    pub batch_size: usize,
    /// Soft-label temperature.
    pub temperature: f32,
    /// Final layers averaged for the evidence.
    pub last_k_layers: usize,
    /// Validation samples for the fine-tuning loss.
    pub sft_val_limit: usize,
    /// Soft labels of the training rows from this many out-of-fold heads (folds by patient;
    /// see `teacher::oof`); 0 = the final head's in-sample probabilities.
    pub oof_folds: usize,
}

impl Default for TeacherSpec {
    fn default() -> Self {
        Self {
            base: "demo".into(),
            demo: DemoConfig::default(),
            lora: LoraConfig::default(),
            sft: SftConfig::default(),
            head: HeadConfig::default(),
            max_len: 768,
            device: "cpu".into(),
            batch_size: 8,
            temperature: 1.0,
            last_k_layers: 4,
            sft_val_limit: 64,
            oof_folds: 5,
        }
    }
}

/// Student settings (both students: without and with distillation, same seeds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StudentSpec {
    /// Size when trained from scratch.
    pub preset: Preset,
    /// What the head reads ([CLS] or the mean over tokens).
    pub pooling: Pooling,
    /// A BERT checkpoint directory to start from instead (config.json, model.safetensors,
    /// tokenizer.json).
    pub init: Option<PathBuf>,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Maximum tokens.
    pub max_len: usize,
    /// WordPiece vocabulary size (from scratch).
    pub vocab_size: usize,
    /// Seed.
    pub seed: u64,
    /// Early-stopping patience (0 = off).
    pub patience: usize,
    /// Loss weights of the distilled student (the other one uses hard labels only).
    pub distill: DistillConfig,
    /// Learning-rate multiplier of the classification head (see `TrainConfig::head_lr_scale`).
    pub head_lr_scale: f64,
    /// Shares of the training samples that keep their hard labels; at each, one student
    /// without and one with distillation (teacher soft labels for every sample) are trained.
    pub label_fractions: Vec<f64>,
}

impl Default for StudentSpec {
    fn default() -> Self {
        Self {
            preset: Preset::Tiny,
            // Mean pooling and a fast head: measured on the demo cohort, the [CLS] student and a
            // head at the encoder's learning rate stay at the label priors (README, "Student").
            pooling: Pooling::Mean,
            init: None,
            epochs: 8,
            batch_size: 16,
            lr: 1e-3,
            max_len: 256,
            vocab_size: 4000,
            seed: 42,
            patience: 0,
            distill: DistillConfig::default(),
            head_lr_scale: 100.0,
            label_fractions: vec![1.0],
        }
    }
}

/// Edge evaluation settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeSpec {
    /// The `ckd-edge` binary (default: next to the running `ckd`).
    pub bin: Option<PathBuf>,
}

/// `pipeline.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Output directory.
    pub out: PathBuf,
    /// Data.
    pub data: DataSpec,
    /// Ingest.
    #[serde(default)]
    pub ingest: IngestSpec,
    /// Teacher.
    #[serde(default)]
    pub teacher: TeacherSpec,
    /// Students.
    #[serde(default)]
    pub student: StudentSpec,
    /// Edge evaluation.
    #[serde(default)]
    pub edge: EdgeSpec,
    /// Title of the report.
    #[serde(default = "default_title")]
    pub title: String,
}

fn default_title() -> String {
    "CKD-EHR pipeline report".into()
}

impl PipelineConfig {
    /// Parses `pipeline.toml` text; relative paths are taken relative to `base_dir`. A `[bench]`
    /// table is `ckd bench`'s grid ([`crate::bench::from_toml`]) and is not read here.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Self> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| PipelineError::Config(e.to_string()))?;
        table.remove("bench");
        let mut c: Self =
            toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| PipelineError::Config(e.to_string()))?;
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base_dir.join(&*p);
            }
        };
        fix(&mut c.out);
        for p in [&mut c.data.mimic, &mut c.data.jsonl, &mut c.student.init, &mut c.edge.bin].into_iter().flatten() {
            fix(p);
        }
        if c.teacher.base != "demo" {
            let mut p = PathBuf::from(&c.teacher.base);
            fix(&mut p);
            c.teacher.base = p.to_string_lossy().into_owned();
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks the settings that serde cannot.
    pub fn validate(&self) -> Result<()> {
        let n = [self.data.mimic.is_some(), self.data.jsonl.is_some(), self.data.synth.is_some()]
            .iter()
            .filter(|&&b| b)
            .count();
        if n != 1 {
            return Err(PipelineError::Config("[data] needs exactly one of `mimic`, `jsonl`, `synth`".into()));
        }
        let i = &self.ingest;
        if !((0.0..=1.0).contains(&i.train_frac)
            && (0.0..=1.0).contains(&i.val_frac)
            && i.train_frac + i.val_frac < 1.0)
        {
            return Err(PipelineError::Config(
                "[ingest] train_frac + val_frac must be < 1 (a test split is needed)".into(),
            ));
        }
        self.teacher.device.parse::<DeviceSpec>().map_err(PipelineError::Config)?;
        self.student.distill.validate().map_err(|e| PipelineError::Config(e.to_string()))?;
        let f = &self.student.label_fractions;
        if !f.contains(&1.0) || f.iter().any(|x| !(*x > 0.0 && *x <= 1.0)) {
            return Err(PipelineError::Config(format!(
                "[student] label_fractions = {f:?}: each must be in (0, 1], and 1.0 must be among them (its distilled student is exported)"
            )));
        }
        if self.student.distill.soft <= 0.0 && !self.student.distill.uses_attention() {
            return Err(PipelineError::Config(
                "[student.distill] gives the teacher no weight (soft and attn_* all 0)".into(),
            ));
        }
        Ok(())
    }

    /// The demo: a synthetic cohort of `patients`, the demo teacher, tiny students; sized to run
    /// in minutes on 2 CPU cores.
    pub fn demo(out: PathBuf, patients: usize, seed: u64) -> Self {
        Self {
            out,
            data: DataSpec { synth: Some(SynthSpec { patients, seed }), ..Default::default() },
            ingest: IngestSpec::default(),
            teacher: TeacherSpec {
                sft: SftConfig {
                    epochs: 1,
                    batch_size: 8,
                    lr: 2e-3,
                    warmup_frac: 0.05,
                    aux_head_weight: 1.0,
                    ..Default::default()
                },
                ..Default::default()
            },
            student: StudentSpec { label_fractions: vec![1.0, 0.1], ..StudentSpec::default() },
            edge: EdgeSpec::default(),
            title: "ckd demo: synthetic cohort, demo teacher".into(),
        }
    }

    /// The demo with a real pretrained LLM as its teacher (`path`: GGUF or HF directory), frozen
    /// (no fine-tuning: a CPU cannot afford it), a head trained on its final last-token state.
    /// Students at 100% labels only: a label-scarce student needs the teacher refitted on its
    /// labelled patients, which with an LLM costs a second pass over every prompt (`ckd bench
    /// --config examples/pipeline-qwen.toml` does that, with cached states).
    pub fn demo_frozen_llm(out: PathBuf, patients: usize, seed: u64, path: &std::path::Path) -> Self {
        let mut cfg = Self::demo(out, patients, seed);
        cfg.teacher.base = path.display().to_string();
        cfg.teacher.sft.epochs = 0;
        cfg.student.label_fractions = vec![1.0];
        cfg.title = "ckd demo: synthetic cohort, frozen Qwen2.5 teacher".into();
        cfg
    }
}
