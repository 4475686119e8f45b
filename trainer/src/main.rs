//! `ckd`: the workstation command line. Thin: parses arguments, calls the library, prints
//! summaries, maps errors to exit codes (1 = error, 2 = usage, from clap).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use ckd_core::knowledge::KnowledgeTable;
use ckd_core::metrics::Report;
use ckd_core::visit::{Sample, Split};
use ckd_core::PHENOTYPES;
use ckd_trainer::ingest::{self, IngestConfig, IngestSummary};
use ckd_trainer::models::bert::Pooling;
use ckd_trainer::pipeline;
use ckd_trainer::progress;
use ckd_trainer::student::{self, Teacher, TrainConfig};
use ckd_trainer::teacher::label as teacher_label;
use ckd_trainer::{codegen, io, report, soft_labels, synth};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "ckd",
    version,
    about = "CKD-EHR: clinical knowledge distillation for next-visit phenotype prediction"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the pipeline on the built-in synthetic cohort (no downloads).
    Demo {
        /// Output directory.
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
        /// Patients in the synthetic cohort.
        #[arg(long, default_value_t = 4000)]
        patients: usize,
        /// Seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Write a synthetic cohort in the MIMIC-III CSV layout, with an oracle file.
    Synth {
        /// Number of patients.
        #[arg(long)]
        patients: usize,
        /// Seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Then ingest the cohort and report the knowledge clauses' precision and recall
        /// against the generator's drug effects (at the default false discovery rate and with
        /// the test off).
        #[arg(long)]
        knowledge_report: bool,
    },
    /// Turn MIMIC-III CSVs or CKD-EHR JSONL into next-visit samples.
    Ingest {
        /// MIMIC-III directory (ADMISSIONS, DIAGNOSES_ICD, ... as .csv or .csv.gz).
        #[arg(long, conflicts_with = "jsonl", required_unless_present = "jsonl")]
        mimic: Option<PathBuf>,
        /// CKD-EHR JSONL file.
        #[arg(long)]
        jsonl: Option<PathBuf>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Skip and count malformed rows instead of failing.
        #[arg(long)]
        lenient: bool,
        /// Seed of the patient-level split.
        #[arg(long, default_value_t = 42)]
        split_seed: u64,
        /// Fraction of patients in train.
        #[arg(long, default_value_t = 0.8)]
        train_frac: f64,
        /// Fraction of patients in val.
        #[arg(long, default_value_t = 0.1)]
        val_frac: f64,
        /// Leave out knowledge clauses (ablation).
        #[arg(long)]
        no_knowledge: bool,
        /// Minimum support of a drug in the knowledge statistic.
        #[arg(long, default_value_t = 5)]
        knowledge_min_support: u32,
    },
    /// Train the student (BERT) with hard labels and, optionally, teacher soft labels.
    Student {
        #[command(subcommand)]
        cmd: StudentCmd,
    },
    /// Evaluate a trained student on samples: every metric, overall and per label.
    Eval {
        /// Student directory (`ckd student train --out`).
        #[arg(long)]
        model: PathBuf,
        /// Samples: `samples.bin` (the `--split` part) or CKD-EHR JSONL (all records).
        #[arg(long)]
        data: PathBuf,
        /// Split of a `samples.bin` to evaluate.
        #[arg(long, default_value = "test")]
        split: SplitArg,
        /// Also evaluate these probabilities (JSON lines `{"id", "p"}`, e.g. the synthetic
        /// cohort's `oracle.jsonl`) on the same samples.
        #[arg(long)]
        oracle: Option<PathBuf>,
        /// Where to write the JSON report (default: MODEL/eval-SPLIT.json).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Export a trained student as a bundle (model.onnx + model.onnx.data + tokenizer.json +
    /// manifest.bin).
    Export {
        /// Student directory (`ckd student train --out`).
        #[arg(long)]
        model: PathBuf,
        /// Bundle directory to write.
        #[arg(long)]
        out: PathBuf,
        /// Precision of the exported model.
        #[arg(long, value_enum, default_value = "int8")]
        precision: ckd_trainer::export::Precision,
        /// Store the word embedding table as int8 (per-row scales): a quarter of its size, for
        /// devices short of memory (MiniLM: 47 -> 12 MB); a small accuracy cost, see BENCHMARKS.md.
        #[arg(long)]
        int8_embeddings: bool,
    },
    /// Pack a bundle directory into one file (`.ckdb`), which `ckd-edge` and the C library
    /// open like the directory.
    Pack {
        /// Bundle directory (`ckd export --out`).
        #[arg(long)]
        bundle: PathBuf,
        /// Single-file bundle to write (not inside --bundle).
        #[arg(long)]
        out: PathBuf,
        /// Replace --out if it exists.
        #[arg(long)]
        force: bool,
    },
    /// The teacher LLM: fine-tune + phenotype head, soft labels with evidence, shard merging.
    Teacher {
        #[command(subcommand)]
        cmd: TeacherCmd,
    },
    /// Show which concepts carried the teacher's evidence for one sample.
    Explain {
        /// Evidence file (`ckd teacher label` or `ckd teacher merge` output).
        #[arg(long)]
        evidence: PathBuf,
        /// Samples (`samples.bin` or CKD-EHR JSONL) holding the sample.
        #[arg(long)]
        data: PathBuf,
        /// Sample id.
        #[arg(long)]
        id: String,
        /// Teacher directory, for its decision thresholds (default 0.5).
        #[arg(long)]
        teacher: Option<PathBuf>,
        /// Concepts listed per phenotype.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run every stage on your data and teacher, as set in a TOML file; resumes where it stopped.
    Pipeline {
        /// pipeline.toml (see examples/pipeline.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// A grid of students with and without distillation (soft weights, temperature, attention
    /// granularities, knowledge ablation) at several label fractions and seeds, with bootstrap
    /// intervals: writes bench.json, bench.md and forest.svg; resumes where it stopped.
    Bench {
        /// pipeline.toml with an optional [bench] table; without it, the demo's synthetic cohort.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Output directory (without --config).
        #[arg(long, default_value = "runs/bench")]
        out: PathBuf,
        /// Patients of the synthetic cohort (without --config).
        #[arg(long, default_value_t = 4000)]
        patients: usize,
        /// Cohort seed (without --config).
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Training seeds 1..=N (overrides the grid's).
        #[arg(long)]
        seeds: Option<u64>,
        /// Label fractions, comma-separated (overrides the grid's), e.g. 1,0.1,0.01.
        #[arg(long, value_delimiter = ',')]
        fractions: Option<Vec<f64>>,
        /// Student epochs (overrides [student] epochs).
        #[arg(long)]
        epochs: Option<usize>,
        /// Soft-label weights, comma-separated (overrides the grid's).
        #[arg(long, value_delimiter = ',')]
        soft_weights: Option<Vec<f32>>,
        /// Attention settings among word, concept, field, all (overrides the grid's).
        #[arg(long, value_delimiter = ',')]
        attention: Option<Vec<String>>,
        /// Leave out the temperature settings.
        #[arg(long)]
        no_temperature: bool,
        /// Leave out the knowledge ablation.
        #[arg(long)]
        no_knowledge_ablation: bool,
    },
    /// Regenerate core/src/tables/ccs.rs from the HCUP-CCS definitions YAML.
    GenTables {
        /// hcup_ccs_2015_definitions.yaml
        #[arg(long)]
        ccs_yaml: PathBuf,
        /// Output Rust file.
        #[arg(long, default_value = "core/src/tables/ccs.rs")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum TeacherCmd {
    /// Fine-tune the LLM on the answers (LoRA, or the demo model from scratch), then train the
    /// phenotype head on its cached last-token features.
    Train(Box<TeacherTrainArgs>),
    /// Soft labels and attention evidence for samples (optionally one shard of them).
    Label {
        /// Teacher directory (`ckd teacher train --out`).
        #[arg(long)]
        teacher: PathBuf,
        /// Samples: `samples.bin` (the `--split` part) or CKD-EHR JSONL (all records).
        #[arg(long)]
        data: PathBuf,
        /// Split of a `samples.bin` to label.
        #[arg(long, default_value = "train")]
        split: SplitArg,
        /// Evidence file to write (resumed when it exists); with `--format hands`, the authors'
        /// soft-label file (the evidence file is kept beside it as `OUT.evidence.bin`).
        #[arg(long)]
        out: PathBuf,
        /// Output format: `evidence` (probabilities and attention evidence) or `hands` (the
        /// CKD-EHR authors' `hands_name_*.json`: one object per sample, in the data's order).
        #[arg(long, value_enum, default_value = "evidence", conflicts_with = "shard")]
        format: SoftFormat,
        /// Label only shard i of N (`i/N`, 0-based): a deterministic 1/N of the samples by id.
        #[arg(long, value_parser = ckd_trainer::teacher::label::parse_shard)]
        shard: Option<(u32, u32)>,
        /// Soft-label temperature.
        #[arg(long, default_value_t = 1.0)]
        temperature: f32,
        /// Final layers averaged for the attention evidence.
        #[arg(long, default_value_t = 4)]
        last_k: usize,
        /// Prompts per forward pass.
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: ckd_trainer::teacher::DeviceSpec,
        /// Use this base model file/directory instead of the path recorded in the teacher.
        #[arg(long)]
        base: Option<PathBuf>,
    },
    /// Merge shard files into one evidence file; fails unless every shard and sample is there once.
    Merge {
        /// Shard files.
        #[arg(required = true)]
        shards: Vec<PathBuf>,
        /// Merged evidence file; with `--format hands`, the authors' soft-label file (the merged
        /// evidence file is kept beside it as `OUT.evidence.bin`).
        #[arg(long)]
        out: PathBuf,
        /// Output format (see `ckd teacher label`); `hands` needs `--expect` (its order).
        #[arg(long, value_enum, default_value = "evidence")]
        format: SoftFormat,
        /// Check that exactly these samples are covered: `samples.bin` (with `--split`) or JSONL.
        #[arg(long)]
        expect: Option<PathBuf>,
        /// Split of `--expect`.
        #[arg(long, default_value = "train")]
        split: SplitArg,
    },
}

#[derive(clap::Args)]
struct TeacherTrainArgs {
    /// Training samples: `samples.bin` (its train split) or CKD-EHR JSONL.
    #[arg(long)]
    train: PathBuf,
    /// Validation samples: `samples.bin` (its val split) or CKD-EHR JSONL.
    #[arg(long)]
    val: PathBuf,
    /// Base: a Qwen2 GGUF file or HF safetensors directory, or `demo` (small model trained here).
    #[arg(long)]
    base: String,
    /// Teacher directory to write.
    #[arg(long)]
    out: PathBuf,
    /// Fine-tuning epochs (0 = head only).
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Peak fine-tuning learning rate.
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// Stop fine-tuning after this many steps.
    #[arg(long)]
    max_steps: Option<u64>,
    /// LoRA rank (pretrained bases).
    #[arg(long, default_value_t = 8)]
    lora_r: usize,
    /// LoRA alpha.
    #[arg(long, default_value_t = 16.0)]
    lora_alpha: f64,
    /// LoRA dropout.
    #[arg(long, default_value_t = 0.05)]
    lora_dropout: f64,
    /// Head training epochs (on cached features).
    #[arg(long, default_value_t = 60)]
    head_epochs: usize,
    /// Maximum prompt tokens (with the answer when fine-tuning).
    #[arg(long, default_value_t = 768)]
    max_len: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: ckd_trainer::teacher::DeviceSpec,
}

#[derive(Subcommand)]
enum StudentCmd {
    /// Train a student.
    Train(Box<TrainArgs>),
}

/// Format of the soft labels `ckd teacher label` / `merge` write.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SoftFormat {
    /// `CKDEVIDN` evidence file (probabilities and attention evidence).
    Evidence,
    /// The CKD-EHR authors' `hands_name_*.json`.
    Hands,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SplitArg {
    Train,
    Val,
    Test,
}

impl SplitArg {
    fn split(self) -> Split {
        match self {
            SplitArg::Train => Split::Train,
            SplitArg::Val => Split::Val,
            SplitArg::Test => Split::Test,
        }
    }
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Training samples: `samples.bin` (its train split) or CKD-EHR JSONL.
    #[arg(long)]
    train: PathBuf,
    /// Validation samples: `samples.bin` (its val split) or CKD-EHR JSONL.
    #[arg(long)]
    val: PathBuf,
    /// Teacher soft labels: an evidence file (`ckd teacher label`), JSON lines `{"id", "p"}`
    /// (`.jsonl`), or the authors' `hands_name_train.json` (`.json`; object i = training sample i).
    #[arg(long)]
    soft_labels: Option<PathBuf>,
    /// Start from a BERT checkpoint directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long, conflicts_with = "config")]
    init: Option<PathBuf>,
    /// Train from scratch with this size (a WordPiece vocabulary is trained on the training texts).
    #[arg(long, value_enum)]
    config: Option<student::Preset>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Continue from the last checkpoint in --out.
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Peak learning rate (the paper: 2e-5 for a pretrained BERT; from scratch use ~1e-3).
    #[arg(long, default_value_t = 2e-5)]
    lr: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Maximum tokens per input (truncated inputs are counted and reported).
    #[arg(long, default_value_t = 512)]
    max_len: usize,
    /// Early stopping: epochs without a better validation macro-F1 (0 = off).
    #[arg(long, default_value_t = 3)]
    patience: usize,
    /// Checkpoint every N steps (0 = at epoch ends only).
    #[arg(long, default_value_t = 0)]
    checkpoint_every: usize,
    /// Weight of the hard-label loss.
    #[arg(long, default_value_t = 0.9)]
    hard_weight: f32,
    /// Weight of the soft-label loss (used only with --soft-labels).
    #[arg(long, default_value_t = 0.1)]
    soft_weight: f32,
    /// Distillation temperature (1 = plain soft BCE).
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Attention-distillation weights (word, concept, field); need an evidence file.
    #[arg(long, default_value_t = 0.0)]
    attn_word: f32,
    #[arg(long, default_value_t = 0.0)]
    attn_concept: f32,
    #[arg(long, default_value_t = 0.0)]
    attn_field: f32,
    /// Fraction of training samples whose hard labels are used.
    #[arg(long, default_value_t = 1.0)]
    label_fraction: f64,
    /// Stop after this many steps in total, with a checkpoint (`--resume` continues).
    #[arg(long)]
    max_steps: Option<u64>,
    /// WordPiece vocabulary size when training from scratch.
    #[arg(long, default_value_t = 4000)]
    vocab_size: usize,
    /// Learning-rate multiplier of the classification head: at the encoder's rate a fresh head
    /// learns too slowly and the student stays at the label priors (README, "Student").
    #[arg(long, default_value_t = 100.0)]
    head_lr_scale: f64,
    /// What the head reads: the mean over the input's tokens, or the [CLS] row.
    #[arg(long, value_enum, default_value_t = Pooling::Mean)]
    pooling: Pooling,
}

/// Writes one line to stderr. A failing stderr (`2>/dev/full`, a closed pipe) is ignored: a
/// message must never turn into a panic or change the exit status.
fn note(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{args}");
}

/// `eprintln!` that never panics (see [`note`]).
macro_rules! note {
    ($($arg:tt)*) => { note(format_args!($($arg)*)) };
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Its own report of a failed write would be an `eprintln!`, which panics on a failing stderr.
        .log_internal_errors(false)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            note!("error: {}", ckd_core::error_chain::one_line(&*e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Synth { patients, seed, out, knowledge_report } => {
            run_synth(patients, seed, &out)?;
            if knowledge_report {
                run_knowledge_report(&out)?;
            }
        }
        Cmd::Ingest {
            mimic,
            jsonl,
            out,
            lenient,
            split_seed,
            train_frac,
            val_frac,
            no_knowledge,
            knowledge_min_support,
        } => {
            anyhow::ensure!(
                (0.0..=1.0).contains(&train_frac) && (0.0..=1.0).contains(&val_frac) && train_frac + val_frac <= 1.0,
                "--train-frac and --val-frac must be in [0, 1] and sum to at most 1"
            );
            let cfg = pipeline::IngestSpec {
                split_seed,
                train_frac,
                val_frac,
                knowledge: !no_knowledge,
                knowledge_min_support,
                lenient,
            }
            .to_config();
            match (mimic, jsonl) {
                (Some(dir), _) => run_ingest_mimic(&dir, &out, &cfg)?,
                (None, Some(file)) => {
                    let t = Instant::now();
                    let ing = ingest::ingest_jsonl(&file, &cfg)?;
                    write_ingest_outputs(&ing, &out)?;
                    print_summary(&ing.summary, &out, t.elapsed().as_secs_f64());
                }
                (None, None) => unreachable!("clap requires one of --mimic / --jsonl"),
            }
        }
        Cmd::Student { cmd: StudentCmd::Train(args) } => run_student_train(&args)?,
        Cmd::Eval { model, data, split, oracle, json } => {
            run_eval(&model, &data, split.split(), oracle.as_deref(), json.as_deref())?
        }
        Cmd::Export { model, out, precision, int8_embeddings } => {
            let build = ckd_trainer::export::BuildOptions {
                int8_embeddings,
                ..ckd_trainer::export::BuildOptions::new(precision)
            };
            let r = ckd_trainer::bundle::write_bundle_with(&model, &out, build)?;
            note!(
                "bundle {} ({}): {:?}; probe vs candle: max |logit diff| {:.2e}, max |prob diff| {:.2e}",
                r.dir.display(),
                precision.as_str(),
                r.bytes,
                r.export.probe.max_abs_logit_diff,
                r.export.probe.max_abs_prob_diff
            );
        }
        Cmd::Pack { bundle, out, force } => {
            let r = ckd_trainer::bundle::pack_bundle_with(&bundle, &out, force)?;
            note!("packed {} ({} bytes): {:?}", r.path.display(), r.bytes, r.files);
        }
        Cmd::GenTables { ccs_yaml, out } => {
            let yaml = std::fs::read_to_string(&ccs_yaml).with_context(|| format!("reading {}", ccs_yaml.display()))?;
            let src = codegen::ccs_table_source(&yaml)?;
            io::write_atomic(&out, src.as_bytes()).with_context(|| format!("writing {}", out.display()))?;
            note!("wrote {}", out.display());
        }
        Cmd::Demo { out, patients, seed } => run_pipeline(&pipeline::PipelineConfig::demo(out, patients, seed))?,
        Cmd::Pipeline { config } => {
            let text = std::fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
            let base = config.parent().map(Path::to_path_buf).unwrap_or_default();
            let cfg =
                pipeline::PipelineConfig::from_toml(&text, &base).with_context(|| format!("{}", config.display()))?;
            run_pipeline(&cfg)?
        }
        Cmd::Bench {
            config,
            out,
            patients,
            seed,
            seeds,
            fractions,
            epochs,
            soft_weights,
            attention,
            no_temperature,
            no_knowledge_ablation,
        } => {
            let (mut cfg, mut spec) = match config {
                Some(path) => {
                    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                    ckd_trainer::bench::from_toml(&text, &base).with_context(|| format!("{}", path.display()))?
                }
                None => (pipeline::PipelineConfig::demo(out, patients, seed), ckd_trainer::bench::BenchSpec::default()),
            };
            if let Some(n) = seeds {
                spec.seeds = (1..=n).collect();
            }
            if let Some(f) = fractions {
                spec.label_fractions = f;
            }
            if let Some(e) = epochs {
                cfg.student.epochs = e;
            }
            if let Some(w) = soft_weights {
                spec.soft_weights = w;
            }
            if let Some(a) = attention {
                spec.attention = a;
            }
            if no_temperature {
                spec.temperatures.clear();
            }
            if no_knowledge_ablation {
                spec.knowledge_ablation = false;
            }
            let o = ckd_trainer::bench::run(&cfg, &spec, &*progress::auto())?;
            println!("{}", o.markdown);
            note!(
                "bench: {} students trained in this run; bench.json, bench.md, forest.svg in {} ({:.0} s)",
                o.trained,
                o.dir.display(),
                o.seconds
            );
        }
        Cmd::Teacher { cmd: TeacherCmd::Train(a) } => run_teacher_train(&a)?,
        Cmd::Teacher {
            cmd:
                TeacherCmd::Label {
                    teacher,
                    data,
                    split,
                    out,
                    format,
                    shard,
                    temperature,
                    last_k,
                    batch_size,
                    device,
                    base,
                },
        } => {
            let t = ckd_trainer::teacher::load_teacher(&teacher, base.as_deref(), device)?;
            let (samples, _, _) = load_samples(&data, split.split())?;
            anyhow::ensure!(!samples.is_empty(), "{}: no samples to label", data.display());
            let cfg =
                teacher_label::LabelConfig { temperature, last_k_layers: last_k, batch_size, shard, save_every: 20 };
            let bar = progress::auto().bar("teacher labels");
            let o = match format {
                SoftFormat::Evidence => teacher_label::label(&t, &samples, &cfg, &out, &bar)?,
                SoftFormat::Hands => soft_labels::label_to_hands(&t, &samples, &cfg, &out, &bar)?,
            };
            bar.finish_and_clear();
            note!(
                "teacher label: {} samples in {}, {} kept from a previous run, {} labelled ({:.2} samples/s, {:.0} prompt tokens/s), {} prompts cut -> {}",
                o.in_shard,
                shard.map_or("all".to_string(), |(i, n)| format!("shard {i}/{n}")),
                o.resumed,
                o.labelled,
                o.labelled as f64 / o.seconds.max(1e-9),
                o.tokens as f64 / o.seconds.max(1e-9),
                o.truncated,
                out.display()
            );
        }
        Cmd::Teacher { cmd: TeacherCmd::Merge { shards, out, format, expect, split } } => {
            let files =
                shards.iter().map(|p| Ok((p.clone(), teacher_label::read_evidence(p)?))).collect::<Result<Vec<_>>>()?;
            let expected = expect.as_deref().map(|p| load_samples(p, split.split())).transpose()?.map(|e| e.0);
            let ids = expected.as_ref().map(|e| e.iter().map(|s| s.id.clone()).collect::<Vec<_>>());
            let merged = teacher_label::merge(&files, ids.as_deref())?;
            match (format, &expected) {
                (SoftFormat::Evidence, _) => teacher_label::write_evidence(&out, &merged)?,
                (SoftFormat::Hands, Some(samples)) => {
                    teacher_label::write_evidence(&soft_labels::evidence_beside(&out), &merged)?;
                    soft_labels::write_hands(&out, &merged, samples)?;
                }
                (SoftFormat::Hands, None) => anyhow::bail!("--format hands needs --expect (the records' order)"),
            }
            note!("teacher merge: {} shards, {} samples -> {}", files.len(), merged.records.len(), out.display());
        }
        Cmd::Explain { evidence, data, id, teacher, top, json } => {
            let ev = teacher_label::read_evidence(&evidence)?;
            let f = if data.extension().is_some_and(|e| e == "bin") {
                ingest::read_samples(&data)?
            } else {
                ingest::ingest_jsonl(&data, &IngestConfig { knowledge: None, ..Default::default() })?.file
            };
            let sample =
                f.samples.iter().find(|s| s.id == id).with_context(|| format!("{}: no sample {id}", data.display()))?;
            let rec = ev
                .by_id()
                .get(id.as_str())
                .copied()
                .with_context(|| format!("{}: no record for sample {id}", evidence.display()))?;
            let thresholds = match &teacher {
                Some(t) => {
                    let text = std::fs::read_to_string(t.join("teacher.json"))
                        .with_context(|| format!("reading {}", t.join("teacher.json").display()))?;
                    serde_json::from_str::<ckd_trainer::teacher::TeacherManifest>(&text)?.thresholds
                }
                None => vec![0.5; ckd_core::NUM_LABELS],
            };
            let ex = ckd_trainer::teacher::explain::explain(sample, rec, &thresholds, top)?;
            if json {
                println!("{}", io::pretty_json(&ex));
            } else {
                print!("{}", ckd_trainer::teacher::explain::format(&ex));
            }
        }
    }
    Ok(())
}

fn run_synth(patients: usize, seed: u64, out: &Path) -> Result<()> {
    let t = Instant::now();
    let cfg = synth::SynthConfig { patients, seed, ..Default::default() };
    let cohort = synth::generate(&cfg);
    let s = synth::write_cohort(&cohort, out)?;
    note!(
        "synth: {} patients, {} admissions, {} next-visit pairs -> {} ({:.1} s)",
        s.patients,
        s.admissions,
        s.pairs,
        out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run_knowledge_report(dir: &Path) -> Result<()> {
    use ckd_core::knowledge::{KnowledgeConfig, DEFAULT_FDR};
    let kc = KnowledgeConfig::default();
    let cfg = IngestConfig { knowledge: Some(kc), ..Default::default() };
    let ing = ingest::ingest_mimic(dir, &cfg, &mut |_, _| {})?;
    let train: Vec<&Sample> = ing.file.samples.iter().filter(|s| s.split == Split::Train).collect();
    let truth = synth::therapeutic_effects();
    println!(
        "knowledge clauses vs the generator ({} training pairs, {} true (phenotype, drug) pairs):",
        train.len(),
        truth.len()
    );
    for fdr in [DEFAULT_FDR, 1.0] {
        let t = KnowledgeTable::fit_with_fdr(train.iter().map(|s| (&s.visit, s.labels)), kc, fdr);
        let k = ckd_trainer::knowledge_truth::score(&t, &truth);
        println!(
            "  fdr {fdr}: {} pairs named, {} true: precision {}, recall {:.3}, recall of what {} per phenotype can hold {:.3}",
            k.emitted,
            k.true_positives,
            k.precision.map_or("n/a".into(), |p| format!("{p:.3}")),
            k.recall,
            kc.top_k,
            k.recall_reachable
        );
    }
    Ok(())
}

fn run_ingest_mimic(dir: &Path, out: &Path, cfg: &IngestConfig) -> Result<()> {
    let t = Instant::now();
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
    let mut progress = |table: &str, rows: u64| bar.set_message(format!("ingest {table}: {rows} rows"));
    let ing = ingest::ingest_mimic(dir, cfg, &mut progress)?;
    bar.finish_and_clear();
    write_ingest_outputs(&ing, out)?;
    print_summary(&ing.summary, out, t.elapsed().as_secs_f64());
    Ok(())
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

fn print_summary(s: &IngestSummary, out: &Path, secs: f64) {
    note!("{:<18} {:>10} {:>10} {:>10}  skipped because", "table", "read", "used", "skipped");
    for (name, t) in &s.tables {
        let skipped: u64 = t.skipped.values().sum();
        let why: Vec<String> = t
            .skipped
            .iter()
            .map(|(k, v)| {
                let lines: Vec<String> = t.first_lines.get(k).into_iter().flatten().map(u64::to_string).collect();
                let more = if *v > lines.len() as u64 { ", ..." } else { "" };
                format!("{k}: {v} (line {}{more})", lines.join(", "))
            })
            .collect();
        note!("{:<18} {:>10} {:>10} {:>10}  {}", name, t.rows_read, t.rows_used, skipped, why.join(", "));
    }
    note!(
        "{} patients, {} admissions -> samples: {:?}; admissions without diagnoses: {}; diagnoses without category title: {}; procedures without title: {}",
        s.patients,
        s.admissions,
        s.samples,
        s.admissions_without_diagnoses,
        s.diagnoses_without_category_title,
        s.procedures_without_title
    );
    note!("wrote {} ({:.1} s)", out.display(), secs);
}

/// Samples of `split` from a `samples.bin`, or every record of a CKD-EHR JSONL file, with the
/// source hash and the knowledge table their texts were rendered with.
fn load_samples(path: &Path, split: Split) -> Result<(Vec<Sample>, String, Option<KnowledgeTable>)> {
    let f = if path.extension().is_some_and(|e| e == "bin") {
        ingest::read_samples(path)?
    } else {
        ingest::ingest_jsonl(path, &IngestConfig { knowledge: None, ..Default::default() })?.file
    };
    let jsonl = f.samples.iter().any(|s| s.raw.is_some());
    let samples = f.samples.into_iter().filter(|s| jsonl || s.split == split).collect();
    Ok((samples, f.source_hash, f.knowledge))
}

fn load_teacher(path: &Path, train: &[Sample]) -> Result<Teacher> {
    if soft_labels::is_hands_file(path) {
        return Ok(soft_labels::read_hands(path, train)?);
    }
    if path.extension().is_some_and(|e| e == "jsonl") {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Teacher::from_jsonl(&text, path)?)
    } else {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let file =
            ckd_core::evidence::EvidenceFile::from_bytes(&bytes).with_context(|| format!("{}", path.display()))?;
        file.validate().with_context(|| format!("{}", path.display()))?;
        Ok(Teacher::from_evidence(file))
    }
}

fn run_student_train(a: &TrainArgs) -> Result<()> {
    let (train, train_hash, knowledge) = load_samples(&a.train, Split::Train)?;
    let (val, val_hash, _) = load_samples(&a.val, Split::Val)?;
    anyhow::ensure!(!train.is_empty(), "{}: no training samples", a.train.display());
    anyhow::ensure!(!val.is_empty(), "{}: no validation samples", a.val.display());
    let teacher = a.soft_labels.as_deref().map(|p| load_teacher(p, &train)).transpose()?;
    let uses_attn = a.attn_word > 0.0 || a.attn_concept > 0.0 || a.attn_field > 0.0;
    anyhow::ensure!(teacher.is_some() || !uses_attn, "attention distillation needs --soft-labels (an evidence file)");
    let distill = ckd_trainer::distill::DistillConfig {
        hard: a.hard_weight,
        soft: if teacher.is_some() { a.soft_weight } else { 0.0 },
        temperature: a.temperature,
        attn_word: a.attn_word,
        attn_concept: a.attn_concept,
        attn_field: a.attn_field,
        ..Default::default()
    };
    if a.init.is_some() && a.config.is_some() {
        anyhow::bail!("--init and --config exclude each other");
    }
    let cfg = TrainConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        seed: a.seed,
        checkpoint_every: a.checkpoint_every,
        patience: a.patience,
        distill,
        label_fraction: a.label_fraction,
        max_steps: a.max_steps,
        head_lr_scale: a.head_lr_scale,
        ..Default::default()
    };
    let bar = progress::auto().bar("student");
    let job = student::job::StudentJob {
        train: &train,
        val: &val,
        teacher: teacher.as_ref(),
        init: a.init.as_deref(),
        preset: a.config.unwrap_or(student::Preset::Tiny),
        pooling: a.pooling,
        vocab_size: a.vocab_size,
        max_len: a.max_len,
        cfg,
        resume: a.resume,
        out: &a.out,
        knowledge: knowledge.as_ref(),
        provenance: serde_json::json!({
            "train": {"path": a.train, "source_hash": train_hash},
            "val": {"path": a.val, "source_hash": val_hash},
        }),
    };
    let outcome = student::job::train_student(&job, &bar)?;
    bar.finish_and_clear();
    if !outcome.finished {
        note!(
            "student: stopped at step {} (--max-steps) with a checkpoint in {}; rerun with --resume to finish",
            outcome.steps,
            a.out.display()
        );
        return Ok(());
    }
    note!(
        "student: {} steps, best val macro-F1 {:.4} (epoch {}), {:.1} samples/s, {} train texts truncated{} -> {}",
        outcome.steps,
        outcome.best_val_macro_f1.unwrap_or(f64::NAN),
        outcome.best_epoch.map_or(0, |e| e + 1),
        outcome.samples_per_sec,
        outcome.truncated_train,
        if outcome.stopped_early { ", stopped early" } else { "" },
        a.out.display()
    );
    Ok(())
}

fn run_teacher_train(a: &TeacherTrainArgs) -> Result<()> {
    use ckd_trainer::teacher::{demo::DemoConfig, head::HeadConfig, sft::SftConfig, train};
    let (train_s, _, _) = load_samples(&a.train, Split::Train)?;
    let (val_s, _, _) = load_samples(&a.val, Split::Val)?;
    let base = if a.base == "demo" {
        train::BaseChoice::Demo(DemoConfig::default())
    } else {
        train::BaseChoice::Pretrained(PathBuf::from(&a.base))
    };
    let cfg = train::TrainTeacherConfig {
        base,
        lora: ckd_trainer::models::lora::LoraConfig {
            r: a.lora_r,
            alpha: a.lora_alpha,
            dropout: a.lora_dropout,
            ..Default::default()
        },
        sft: SftConfig {
            epochs: a.epochs,
            batch_size: a.batch_size,
            lr: a.lr,
            seed: a.seed,
            max_steps: a.max_steps,
            ..Default::default()
        },
        head: HeadConfig { epochs: a.head_epochs, seed: a.seed, ..Default::default() },
        max_len: a.max_len,
        device: a.device,
        feature_batch: a.batch_size,
        sft_val_limit: 64,
    };
    let (m, r) = train::train_teacher(&train_s, &val_s, &cfg, &a.out, &*progress::auto())?;
    note!(
        "teacher {}: {} fine-tuning steps ({} trainable parameters, {:.2} seq/s, {} prompts cut), head val macro-F1 {:.4}, macro-AUC {} -> {}",
        m.model_name,
        r.sft.steps,
        r.trainable_params,
        r.sft.samples_per_sec,
        r.sft.truncated,
        r.head.val_macro_f1,
        r.head.val_macro_auc.map_or("n/a".into(), |v| format!("{v:.4}")),
        a.out.display()
    );
    Ok(())
}

fn run_pipeline(cfg: &pipeline::PipelineConfig) -> Result<()> {
    let o = pipeline::run(cfg, &*progress::auto())?;
    println!("{}", o.summary);
    if !o.skipped.is_empty() {
        note!("(stages already up to date and skipped: {})", o.skipped.join(", "));
    }
    note!("report: {} and report.json ({:.0} s)", o.report_dir.join("report.html").display(), o.seconds);
    Ok(())
}

fn run_eval(model: &Path, data: &Path, split: Split, oracle: Option<&Path>, json: Option<&Path>) -> Result<()> {
    let st = student::load_student(model)?;
    let (samples, _, _) = load_samples(data, split)?;
    // Baselines are fitted on the file's own training split (samples.bin only), with the
    // validation split for thresholds and the refit unless validation is what is evaluated.
    let bin = data.extension().is_some_and(|e| e == "bin");
    let (train, val) = match split {
        Split::Test if bin => (load_samples(data, Split::Train)?.0, load_samples(data, Split::Val)?.0),
        Split::Val if bin => (load_samples(data, Split::Train)?.0, Vec::new()),
        _ => (Vec::new(), Vec::new()),
    };
    let oracle = oracle.map(|o| load_teacher(o, &samples)).transpose()?;
    let input = ckd_trainer::eval::EvalInput {
        student: &st,
        eval: &samples,
        train: &train,
        val: &val,
        oracle: oracle.as_ref(),
        data_description: format!("{} ({} split), {} samples", data.display(), split.name(), samples.len()),
    };
    let (r, truncated) = ckd_trainer::eval::evaluate(&input)?;
    println!("{}", report::summary_table(&r));
    if truncated > 0 {
        println!("{truncated} of {} texts were cut at the student's max_len ({})", samples.len(), st.config.max_len);
    }
    if let Some(m) = r.models.iter().find(|m| m.name == ckd_trainer::eval::STUDENT_ROW) {
        print_per_label(&m.metrics);
    }
    let out =
        serde_json::json!({"model": model, "data": data, "split": split.name(), "truncated": truncated, "report": r});
    let path = json.map(Path::to_path_buf).unwrap_or_else(|| model.join(format!("eval-{}.json", split.name())));
    io::write_atomic(&path, io::pretty_json(&out).as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    note!("wrote {}", path.display());
    Ok(())
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "   n/a".to_string(), |x| format!("{x:6.4}"))
}

fn print_per_label(r: &Report) {
    println!("per label (student):");
    println!(
        "{:<58} {:>7} {:>6} {:>6} {:>6} {:>7} {:>7} {:>6}",
        "phenotype", "support", "P", "R", "F1", "AUC", "AUPR", "thr"
    );
    for (i, l) in r.per_label.iter().enumerate() {
        println!(
            "{:<58} {:>7} {:6.3} {:6.3} {:6.3} {:>7} {:>7} {:6.3}",
            PHENOTYPES[i].name,
            l.support,
            l.precision,
            l.recall,
            l.f1,
            fmt_opt(l.auc),
            fmt_opt(l.aupr),
            l.threshold
        );
    }
}
