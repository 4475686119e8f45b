//! ckd-trainer: the workstation side of ckd-ehr.
//!
//! Ingest (MIMIC-III, CKD-EHR JSONL) and the synthetic cohort, the table generators, the
//! student model and its distillation losses, teacher soft labels in the authors' file format,
//! tokenization and batching. Library functions
//! return typed errors; the `ckd` binary maps them to exit codes.

pub mod attention_evidence;
pub mod baselines;
pub mod bench;
pub mod bundle;
pub mod codegen;
pub mod distill;
pub mod eval;
pub mod explain_truth;
pub mod export;
pub mod ingest;
pub mod io;
pub mod knowledge_truth;
pub mod models;
pub mod optim;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod soft_labels;
pub mod staged_dir;
pub(crate) mod stats;
pub mod student;
pub mod synth;
pub mod teacher;
pub mod text;
pub mod train_integrity;
