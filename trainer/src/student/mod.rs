//! Student training: the distillation loop around [`BertForMultiLabel`].
//!
//! One run = AdamW with warmup + linear decay, global-norm gradient clipping, length-bucketed
//! batches, real dropout; evaluation on validation after each epoch (macro-F1 at thresholds
//! tuned on validation, plus macro-AUC), early stopping on that macro-F1, and the best epoch's
//! weights kept. Deterministic on CPU for a seed: batch order is a function of
//! `(seed, epoch)`, dropout masks of `(seed, global step)`.
//!
//! Checkpoints (`DIR/checkpoint/step-N/` with weights, optimizer moments and loop state, made
//! current by atomically replacing `DIR/checkpoint/current.json`) are written every
//! `checkpoint_every` steps and at each epoch end; `resume` continues from the current one
//! exactly as if the run had not stopped.
//!
//! Where things are (every public item is re-exported here, `crate::student::Item`):
//! - `config`: [`Preset`] and [`TrainConfig`], the settings;
//! - `soft_targets`: [`SoftTargets`], the teacher's probabilities and evidence per sample;
//! - `data`: [`TokenizedSamples`], [`predict`], and [`keeps_label`] (the label-fraction draw);
//! - `training`: [`TrainLoop`] (a run's inputs), [`train`], [`TrainOutcome`] and the loop's parts;
//! - `loss`: the loss of one batch; `curve`: [`CurvePoint`] and `curves.jsonl`;
//! - `checkpoint`: checkpoints, [`named_vars`] and [`set_vars`];
//! - `saved`: the saved student directory ([`save_student`], [`load_student`], [`Student`]);
//! - `error`: [`StudentError`];
//! - [`job`]: a run wrapped with the tokenizer, the model's construction and the saved directory.
//!
//! [`BertForMultiLabel`]: crate::models::bert::BertForMultiLabel

mod checkpoint;
mod config;
mod curve;
mod data;
mod error;
pub mod job;
mod loss;
mod saved;
mod soft_targets;
mod training;

pub use checkpoint::{named_vars, set_vars};
pub use config::{Preset, TrainConfig};
pub use curve::CurvePoint;
pub use data::{keeps_label, predict, TokenizedSamples};
pub use error::StudentError;
pub use saved::{load_student, open_student, read_student_json, save_student, Student, StudentConfig, Training};
pub use soft_targets::SoftTargets;
pub use training::{train, TrainLoop, TrainOutcome};
