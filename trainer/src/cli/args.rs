//! The `ckd` command line's clap types: one `Args` struct per command, so that each handler
//! takes its command's arguments whole.

use std::path::PathBuf;

use ckd_core::visit::Split;
use ckd_trainer::models::bert::Pooling;
use ckd_trainer::student;
use clap::{Parser, Subcommand};

use super::parse;

#[derive(Parser)]
#[command(
    name = "ckd",
    version,
    about = "CKD-EHR: clinical knowledge distillation for next-visit phenotype prediction"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the pipeline on the built-in synthetic cohort (no downloads).
    Demo(DemoArgs),
    /// Write a synthetic cohort in the MIMIC-III CSV layout, with an oracle file.
    Synth(SynthArgs),
    /// Turn MIMIC-III CSVs or CKD-EHR JSONL into next-visit samples.
    Ingest(IngestArgs),
    /// Train the student (BERT) with hard labels and, optionally, teacher soft labels.
    Student {
        #[command(subcommand)]
        cmd: StudentCmd,
    },
    /// Evaluate a trained student on samples: every metric, overall and per label.
    Eval(EvalArgs),
    /// Export a trained student as a bundle (model.onnx + model.onnx.data + tokenizer.json +
    /// manifest.bin).
    Export(ExportArgs),
    /// Pack a bundle directory into one file (`.ckdb`), which `ckd-edge` and the C library
    /// open like the directory.
    Pack(PackArgs),
    /// The teacher LLM: fine-tune + phenotype head, soft labels with evidence, shard merging.
    Teacher {
        #[command(subcommand)]
        cmd: TeacherCmd,
    },
    /// Show which concepts carried the teacher's evidence for one sample.
    Explain(ExplainArgs),
    /// How true the edge runtime's explanations are on a synthetic cohort: runs `ckd-edge
    /// explain` on a split's visits and scores each explanation against the generator's oracle
    /// (does the top concept drive the phenotype, against chance; rank agreement).
    ExplainTruth(ExplainTruthArgs),
    /// The student's attention evidence per concept, scored: rank agreement with the teacher's
    /// evidence, and faithfulness to `ckd-edge explain`'s occlusion (deletion test, rank
    /// correlation).
    ExplainAttention(ExplainAttentionArgs),
    /// Run every stage on your data and teacher, as set in a TOML file; resumes where it stopped.
    Pipeline(PipelineArgs),
    /// A grid of students with and without distillation (soft weights, temperature, attention
    /// granularities, knowledge ablation) at several label fractions and seeds, with bootstrap
    /// intervals: writes bench.json, bench.md and forest.svg; resumes where it stopped.
    Bench(BenchArgs),
    /// Regenerate core/src/tables/ccs.rs from the HCUP-CCS definitions YAML.
    GenTables(GenTablesArgs),
}

#[derive(Subcommand)]
pub enum TeacherCmd {
    /// Fine-tune the LLM on the answers (LoRA, or the demo model from scratch), then train the
    /// phenotype head on its cached last-token features.
    Train(Box<TeacherTrainArgs>),
    /// Soft labels and attention evidence for samples (optionally one shard of them).
    Label(LabelArgs),
    /// Merge shard files into one evidence file; fails unless every shard and sample is there once.
    Merge(MergeArgs),
    /// Pooled hidden states of a frozen pretrained LLM for every split of a `samples.bin`
    /// (last token and mean over the visit's tokens, at chosen layers); resumable by chunk.
    States(StatesArgs),
    /// Zero-shot phenotype probabilities from a frozen pretrained LLM, no labels: each visit's 25
    /// scores (`--scoring`) centred, then standardized per phenotype across the visits. Writes
    /// JSON lines `{"id", "p"}` (soft labels for `ckd student train --soft-labels`) and, when the
    /// samples carry labels, `OUT.report.json`; resumable.
    ZeroShot(ZeroShotArgs),
}

/// A frozen base LLM: the file, where it runs and how its weights are held.
#[derive(clap::Args)]
pub struct FrozenBaseArgs {
    /// Base: a Qwen2 GGUF file or HF safetensors directory.
    #[arg(long)]
    pub base: PathBuf,
    /// Maximum prompt tokens (longer visit texts are cut at their end).
    #[arg(long, default_value_t = 768, value_parser = parse::max_len)]
    pub max_len: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: ckd_trainer::teacher::DeviceSpec,
    /// auto: a GGUF's own quantized weights where the CPU has int8 dot products (AVX-512 VNNI or
    /// AVX-VNNI), else f32; quantized: always; f32: every weight dequantized (the path LoRA
    /// fine-tuning uses).
    #[arg(long, default_value = "auto")]
    pub base_weights: ckd_trainer::teacher::BaseWeights,
}

#[derive(clap::Args)]
pub struct ZeroShotArgs {
    #[command(flatten)]
    pub frozen: FrozenBaseArgs,
    /// Samples: `samples.bin` (the `--split` part) or CKD-EHR JSONL (all records).
    #[arg(long)]
    pub data: PathBuf,
    /// Split of a `samples.bin`.
    #[arg(long, default_value = "test")]
    pub split: SplitArg,
    /// Output: JSON lines `{"id", "p"}`; raw scores are kept in `OUT.scores.jsonl`, from which an
    /// interrupted run resumes.
    #[arg(long)]
    pub out: PathBuf,
    /// Only the first N samples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// names: mean log-probability of each phenotype's name after the answer prefix; yes-no:
    /// log-odds of Yes against No after one question per phenotype.
    #[arg(long, value_enum, default_value_t = ZeroShotScoring::Names)]
    pub scoring: ZeroShotScoring,
    /// Also write the teacher evidence file (`ckd teacher label`'s format: the probabilities and
    /// the attention of the prompt's last token over the visit, by word, concept and field), for
    /// attention distillation and `ckd explain`. Visits scored without it are scored again.
    #[arg(long)]
    pub evidence: Option<PathBuf>,
    /// Final layers whose attention is averaged for `--evidence`.
    #[arg(long, default_value_t = 4)]
    pub last_k_layers: usize,
}

/// `ckd teacher zero-shot --scoring`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ZeroShotScoring {
    Names,
    YesNo,
}

impl ZeroShotScoring {
    pub fn scoring(self) -> ckd_trainer::teacher::zero_shot::Scoring {
        match self {
            Self::Names => ckd_trainer::teacher::zero_shot::Scoring::Names,
            Self::YesNo => ckd_trainer::teacher::zero_shot::Scoring::YesNo,
        }
    }
}

#[derive(clap::Args)]
pub struct StatesArgs {
    #[command(flatten)]
    pub frozen: FrozenBaseArgs,
    /// `samples.bin` (`ckd ingest` / `ckd demo`); its train, val and test splits are run.
    #[arg(long)]
    pub data: PathBuf,
    /// Directory of the chunk files (`train/`, `val/`, `test/`); existing chunks are kept.
    #[arg(long)]
    pub out: PathBuf,
    /// Layer counts whose states are pooled (`L` = the final, normed state).
    #[arg(long, value_delimiter = ',', default_values_t = [6, 12, 18, 24])]
    pub layers: Vec<usize>,
    /// Prompts per chunk file.
    #[arg(long, default_value_t = 32)]
    pub chunk: usize,
    /// Only the first N samples of each split (a quick look; the chunks stay valid for a full run).
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(clap::Args)]
pub struct TeacherTrainArgs {
    /// Training samples: `samples.bin` (its train split) or CKD-EHR JSONL.
    #[arg(long)]
    pub train: PathBuf,
    /// Validation samples: `samples.bin` (its val split) or CKD-EHR JSONL.
    #[arg(long)]
    pub val: PathBuf,
    /// Base: a Qwen2 GGUF file or HF safetensors directory, or `demo` (small model trained here).
    #[arg(long)]
    pub base: String,
    /// Teacher directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Fine-tuning epochs (0 = head only).
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Peak fine-tuning learning rate.
    #[arg(long, default_value_t = 2e-4, value_parser = parse::positive)]
    pub lr: f64,
    /// Stop fine-tuning after this many steps.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// LoRA rank (pretrained bases).
    #[arg(long, default_value_t = 8)]
    pub lora_r: usize,
    /// LoRA alpha.
    #[arg(long, default_value_t = 16.0)]
    pub lora_alpha: f64,
    /// LoRA dropout.
    #[arg(long, default_value_t = 0.05)]
    pub lora_dropout: f64,
    /// Head training epochs (on cached features).
    #[arg(long, default_value_t = 60)]
    pub head_epochs: usize,
    /// Maximum prompt tokens (with the answer when fine-tuning).
    #[arg(long, default_value_t = 768, value_parser = parse::max_len)]
    pub max_len: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: ckd_trainer::teacher::DeviceSpec,
}

#[derive(Subcommand)]
pub enum StudentCmd {
    /// Train a student.
    Train(Box<TrainArgs>),
}

/// Format of the soft labels `ckd teacher label` / `merge` write.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SoftFormat {
    /// `CKDEVIDN` evidence file (probabilities and attention evidence).
    Evidence,
    /// The CKD-EHR authors' `hands_name_*.json`.
    #[value(name = "hands")]
    Authors,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SplitArg {
    Train,
    Val,
    Test,
}

impl SplitArg {
    pub fn split(self) -> Split {
        match self {
            SplitArg::Train => Split::Train,
            SplitArg::Val => Split::Val,
            SplitArg::Test => Split::Test,
        }
    }
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Training samples: `samples.bin` (its train split) or CKD-EHR JSONL.
    #[arg(long)]
    pub train: PathBuf,
    /// Validation samples: `samples.bin` (its val split) or CKD-EHR JSONL.
    #[arg(long)]
    pub val: PathBuf,
    /// Teacher soft labels: an evidence file (`ckd teacher label`), JSON lines `{"id", "p"}`
    /// (`.jsonl`), or the authors' `hands_name_train.json` (`.json`; object i = training sample i).
    #[arg(long)]
    pub soft_labels: Option<PathBuf>,
    /// Start from a BERT checkpoint directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long, conflicts_with = "config")]
    pub init: Option<PathBuf>,
    /// Train from scratch with this size (a WordPiece vocabulary is trained on the training texts).
    #[arg(long, value_enum)]
    pub config: Option<student::Preset>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the last checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Peak learning rate (the paper: 2e-5 for a pretrained BERT; from scratch use ~1e-3).
    #[arg(long, default_value_t = 2e-5, value_parser = parse::positive)]
    pub lr: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Maximum tokens per input (truncated inputs are counted and reported).
    #[arg(long, default_value_t = 512, value_parser = parse::max_len)]
    pub max_len: usize,
    /// Early stopping: epochs without a better validation macro-F1 (0 = off).
    #[arg(long, default_value_t = 3)]
    pub patience: usize,
    /// Checkpoint every N steps (0 = at epoch ends only).
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: usize,
    /// Weight of the hard-label loss.
    #[arg(long, default_value_t = 0.9, value_parser = parse::weight)]
    pub hard_weight: f32,
    /// Weight of the soft-label loss (used only with --soft-labels).
    #[arg(long, default_value_t = 0.1, value_parser = parse::weight)]
    pub soft_weight: f32,
    /// Distillation temperature (1 = plain soft BCE).
    #[arg(long, default_value_t = 1.0, value_parser = parse::positive_f32)]
    pub temperature: f32,
    /// Attention-distillation weights (word, concept, field); need an evidence file.
    #[arg(long, default_value_t = 0.0, value_parser = parse::weight)]
    pub attn_word: f32,
    #[arg(long, default_value_t = 0.0, value_parser = parse::weight)]
    pub attn_concept: f32,
    #[arg(long, default_value_t = 0.0, value_parser = parse::weight)]
    pub attn_field: f32,
    /// Fraction of training samples whose hard labels are used.
    #[arg(long, default_value_t = 1.0, value_parser = parse::fraction)]
    pub label_fraction: f64,
    /// Stop after this many steps in total, with a checkpoint (`--resume` continues).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// WordPiece vocabulary size when training from scratch.
    #[arg(long, default_value_t = 4000, value_parser = parse::vocab_size)]
    pub vocab_size: usize,
    /// Learning-rate multiplier of the classification head: at the encoder's rate a fresh head
    /// learns too slowly and the student stays at the label priors (README, "Student").
    #[arg(long, default_value_t = 100.0, value_parser = parse::positive)]
    pub head_lr_scale: f64,
    /// What the head reads: the mean over the input's tokens, or the [CLS] row.
    #[arg(long, value_enum, default_value_t = Pooling::Mean)]
    pub pooling: Pooling,
}

// `ckd demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Output directory (default `runs/demo`, or `runs/demo-qwen` with `--teacher qwen`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The teacher: `demo` (a small model trained from scratch on the cohort, no download) or
    /// `qwen` (the real Qwen2.5-Coder-0.5B-Instruct GGUF, frozen, with a head trained on the
    /// labels; fetched by `scripts/fetch_qwen.sh`).
    #[arg(long, value_enum, default_value_t = DemoTeacher::Demo)]
    pub teacher: DemoTeacher,
    /// The GGUF of `--teacher qwen` (default: where `scripts/fetch_qwen.sh` puts it,
    /// `$CKD_MODELS_DIR` or `~/.cache/ckd-ehr/models`, `qwen2.5-coder-0.5b-instruct.gguf`).
    #[arg(long)]
    pub gguf: Option<PathBuf>,
    /// Patients in the synthetic cohort.
    #[arg(long, default_value_t = 4000)]
    pub patients: usize,
    /// Seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// The teacher of `ckd demo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoTeacher {
    /// The demo teacher, trained from scratch on the cohort.
    Demo,
    /// The real Qwen2.5 GGUF, frozen.
    Qwen,
}

// `ckd synth`.
#[derive(clap::Args)]
pub struct SynthArgs {
    /// Number of patients.
    #[arg(long)]
    pub patients: usize,
    /// Seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Then ingest the cohort and report the knowledge clauses' precision and recall
    /// against the generator's drug effects (at the default false discovery rate and with
    /// the test off).
    #[arg(long)]
    pub knowledge_report: bool,
}

// `ckd ingest`.
#[derive(clap::Args)]
pub struct IngestArgs {
    /// MIMIC-III directory (ADMISSIONS, DIAGNOSES_ICD, ... as .csv or .csv.gz).
    #[arg(long, conflicts_with = "jsonl", required_unless_present = "jsonl")]
    pub mimic: Option<PathBuf>,
    /// CKD-EHR JSONL file.
    #[arg(long)]
    pub jsonl: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Skip and count malformed rows instead of failing.
    #[arg(long)]
    pub lenient: bool,
    /// Refuse exact duplicate JSONL records (naming both lines) instead of keeping each in the
    /// split of its first occurrence with a warning.
    #[arg(long, requires = "jsonl")]
    pub refuse_duplicates: bool,
    /// Seed of the patient-level split.
    #[arg(long, default_value_t = 42)]
    pub split_seed: u64,
    /// Fraction of patients in train.
    #[arg(long, default_value_t = 0.8)]
    pub train_frac: f64,
    /// Fraction of patients in val.
    #[arg(long, default_value_t = 0.1)]
    pub val_frac: f64,
    /// Leave out knowledge clauses (ablation).
    #[arg(long)]
    pub no_knowledge: bool,
    /// Minimum support of a drug in the knowledge statistic.
    #[arg(long, default_value_t = 5)]
    pub knowledge_min_support: u32,
}

// `ckd eval`.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// Student directory (`ckd student train --out`).
    #[arg(long)]
    pub model: PathBuf,
    /// Samples: `samples.bin` (the `--split` part) or CKD-EHR JSONL (all records).
    #[arg(long)]
    pub data: PathBuf,
    /// Split of a `samples.bin` to evaluate.
    #[arg(long, default_value = "test")]
    pub split: SplitArg,
    /// Also evaluate these probabilities (JSON lines `{"id", "p"}`, e.g. the synthetic
    /// cohort's `oracle.jsonl`) on the same samples.
    #[arg(long)]
    pub oracle: Option<PathBuf>,
    /// Also write the JSON report to this file (`--json` is an alias). Without it the report is
    /// only printed; nothing is written into the model directory.
    #[arg(long, visible_alias = "json")]
    pub out: Option<PathBuf>,
}

// `ckd export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// Student directory (`ckd student train --out`).
    #[arg(long)]
    pub model: PathBuf,
    /// Bundle directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Precision of the exported model.
    #[arg(long, value_enum, default_value = "int8")]
    pub precision: ckd_trainer::export::Precision,
    /// Store the word embedding table as int8 (per-row scales): a quarter of its size (MiniLM:
    /// 47 -> 12 MB) at a small accuracy cost (BENCHMARKS.md). The default with `--precision
    /// int8`; this flag asks for it with `--precision f32` too.
    #[arg(long, conflicts_with = "f32_embeddings")]
    pub int8_embeddings: bool,
    /// Keep the word embedding table in f32 in an int8 export (the int8 form that the ONNX
    /// export specifies: only the encoder's linears in int8).
    #[arg(long)]
    pub f32_embeddings: bool,
}

impl ExportArgs {
    /// Whether the word embeddings are stored as int8 (see the flags).
    pub fn int8_embeddings(&self) -> bool {
        self.int8_embeddings || (self.precision == ckd_trainer::export::Precision::Int8 && !self.f32_embeddings)
    }
}

// `ckd pack`.
#[derive(clap::Args)]
pub struct PackArgs {
    /// Bundle directory (`ckd export --out`).
    #[arg(long)]
    pub bundle: PathBuf,
    /// Single-file bundle to write (not inside --bundle).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

// `ckd explain`.
#[derive(clap::Args)]
pub struct ExplainArgs {
    /// Evidence file (`ckd teacher label` or `ckd teacher merge` output).
    #[arg(long)]
    pub evidence: PathBuf,
    /// Samples (`samples.bin` or CKD-EHR JSONL) holding the sample.
    #[arg(long)]
    pub data: PathBuf,
    /// Sample id: `SUBJECT-HADM-NEXT_HADM` for MIMIC-III and the synthetic cohort (the visit
    /// and the next one), `L<line>` for CKD-EHR JSONL; `--list` prints them.
    #[arg(long, required_unless_present = "list", conflicts_with = "list")]
    pub id: Option<String>,
    /// Print the ids of the samples that have an evidence record, one per line, and stop.
    #[arg(long)]
    pub list: bool,
    /// Teacher directory, for its decision thresholds (default 0.5).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Concepts listed per phenotype.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

// `ckd explain-truth`.
#[derive(clap::Args)]
pub struct ExplainTruthArgs {
    /// `samples.bin` of a synthetic cohort (`ckd synth` then `ckd ingest`; the visits keep
    /// their codes).
    #[arg(long)]
    pub data: PathBuf,
    /// Split to explain.
    #[arg(long, default_value = "test")]
    pub split: SplitArg,
    /// Bundle (directory or packed file) to explain with.
    #[arg(long)]
    pub bundle: PathBuf,
    /// The `ckd-edge` binary (default: the one next to `ckd`).
    #[arg(long)]
    pub edge_bin: Option<PathBuf>,
    /// Bootstrap resamples (by patient) for the intervals.
    #[arg(long, default_value_t = ckd_core::bootstrap::DEFAULT_RESAMPLES)]
    pub resamples: usize,
    /// Also write the scores as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also keep `ckd-edge explain`'s records (JSONL) here.
    #[arg(long)]
    pub keep_explanations: Option<PathBuf>,
}

// `ckd explain-attention`.
#[derive(clap::Args)]
pub struct ExplainAttentionArgs {
    /// Student directory (`ckd student train --out`).
    #[arg(long)]
    pub model: PathBuf,
    /// `samples.bin` holding the samples.
    #[arg(long)]
    pub data: PathBuf,
    /// Split to score.
    #[arg(long, default_value = "test")]
    pub split: SplitArg,
    /// Teacher evidence for the split (`ckd teacher label` output): scores the agreement.
    #[arg(long)]
    pub teacher_evidence: Option<PathBuf>,
    /// `ckd-edge explain` records of this student's bundle for the split (`ckd explain-truth
    /// --keep-explanations`): scores faithfulness.
    #[arg(long)]
    pub explanations: Option<PathBuf>,
    /// Also draw one sample's visit shaded by each kind of evidence (teacher, student,
    /// occlusion) as an SVG here.
    #[arg(long)]
    pub figure: Option<PathBuf>,
    /// The sample drawn by `--figure` (default: the first of the split).
    #[arg(long, requires = "figure")]
    pub figure_id: Option<String>,
    /// Final layers whose `[CLS]` attention is averaged (as the attention loss's
    /// `last_k_layers`; at most the model's layers).
    #[arg(long, default_value_t = 4)]
    pub last_k_layers: usize,
    /// Bootstrap resamples (by patient) for the intervals.
    #[arg(long, default_value_t = ckd_core::bootstrap::DEFAULT_RESAMPLES)]
    pub resamples: usize,
    /// Also write the scores as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

// `ckd pipeline`.
#[derive(clap::Args)]
pub struct PipelineArgs {
    /// pipeline.toml (see examples/pipeline.toml).
    #[arg(long)]
    pub config: PathBuf,
}

// `ckd bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// pipeline.toml with an optional [bench] table; without it, the demo's synthetic cohort.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output directory (without --config).
    #[arg(long, default_value = "runs/bench")]
    pub out: PathBuf,
    /// Patients of the synthetic cohort (without --config).
    #[arg(long, default_value_t = 4000)]
    pub patients: usize,
    /// Cohort seed (without --config).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Training seeds 1..=N (overrides the grid's).
    #[arg(long)]
    pub seeds: Option<u64>,
    /// Label fractions, comma-separated (overrides the grid's), e.g. 1,0.1,0.01.
    #[arg(long, value_delimiter = ',')]
    pub fractions: Option<Vec<f64>>,
    /// Student epochs (overrides [student] epochs).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Soft-label weights, comma-separated (overrides the grid's).
    #[arg(long, value_delimiter = ',')]
    pub soft_weights: Option<Vec<f32>>,
    /// Attention settings among word, concept, field, all (overrides the grid's); `none` (or an
    /// empty value) for no attention settings.
    #[arg(long, value_delimiter = ',')]
    pub attention: Option<Vec<String>>,
    /// A pretrained LLM (Qwen2 GGUF file or HF directory) as a frozen teacher whose heads learn
    /// from the labelled patients only (overrides `[bench] llm`).
    #[arg(long)]
    pub llm: Option<PathBuf>,
    /// Soft-label weights of the students distilled from the LLM (overrides the grid's).
    #[arg(long, value_delimiter = ',')]
    pub llm_soft_weights: Option<Vec<f32>>,
    /// Layer counts whose LLM states are pooled (overrides the grid's).
    #[arg(long, value_delimiter = ',')]
    pub llm_layers: Option<Vec<usize>>,
    /// Also run the pipeline teacher's settings below 100% labels (that teacher saw every
    /// training label: this measures label leakage, not knowledge).
    #[arg(long)]
    pub leaky_pipeline_teacher: bool,
    /// Leave out the temperature settings.
    #[arg(long)]
    pub no_temperature: bool,
    /// Leave out the knowledge ablation.
    #[arg(long)]
    pub no_knowledge_ablation: bool,
}

// `ckd gen-tables`.
#[derive(clap::Args)]
pub struct GenTablesArgs {
    /// hcup_ccs_2015_definitions.yaml
    #[arg(long)]
    pub ccs_yaml: PathBuf,
    /// Output Rust file.
    #[arg(long, default_value = "core/src/tables/ccs.rs")]
    pub out: PathBuf,
}

// `ckd teacher label`.
#[derive(clap::Args)]
pub struct LabelArgs {
    /// Teacher directory (`ckd teacher train --out`).
    #[arg(long)]
    pub teacher: PathBuf,
    /// Samples: `samples.bin` (the `--split` part) or CKD-EHR JSONL (all records).
    #[arg(long)]
    pub data: PathBuf,
    /// Split of a `samples.bin` to label.
    #[arg(long, default_value = "train")]
    pub split: SplitArg,
    /// Evidence file to write (resumed when it exists); with `--format hands`, the authors'
    /// soft-label file (the evidence file is kept beside it as `OUT.evidence.bin`).
    #[arg(long)]
    pub out: PathBuf,
    /// Output format: `evidence` (probabilities and attention evidence) or `hands` (the
    /// CKD-EHR authors' `hands_name_*.json`: one object per sample, in the data's order).
    #[arg(long, value_enum, default_value = "evidence", conflicts_with = "shard")]
    pub format: SoftFormat,
    /// Label only shard i of N (`i/N`, 0-based): a deterministic 1/N of the samples by id.
    #[arg(long, value_parser = ckd_trainer::teacher::label::parse_shard)]
    pub shard: Option<(u32, u32)>,
    /// Soft-label temperature.
    #[arg(long, default_value_t = 1.0, value_parser = parse::positive_f32)]
    pub temperature: f32,
    /// Final layers averaged for the attention evidence.
    #[arg(long, default_value_t = 4)]
    pub last_k: usize,
    /// Prompts per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: ckd_trainer::teacher::DeviceSpec,
    /// Use this base model file/directory instead of the path recorded in the teacher.
    #[arg(long)]
    pub base: Option<PathBuf>,
}

// `ckd teacher merge`.
#[derive(clap::Args)]
pub struct MergeArgs {
    /// Shard files.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// Merged evidence file; with `--format hands`, the authors' soft-label file (the merged
    /// evidence file is kept beside it as `OUT.evidence.bin`).
    #[arg(long)]
    pub out: PathBuf,
    /// Output format (see `ckd teacher label`); `hands` needs `--expect` (its order).
    #[arg(long, value_enum, default_value = "evidence")]
    pub format: SoftFormat,
    /// Check that exactly these samples are covered: `samples.bin` (with `--split`) or JSONL.
    #[arg(long)]
    pub expect: Option<PathBuf>,
    /// Split of `--expect`.
    #[arg(long, default_value = "train")]
    pub split: SplitArg,
}
