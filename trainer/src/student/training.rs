//! The training loop: [`train`] runs (or resumes) one run described by a [`TrainLoop`] and
//! returns its [`TrainOutcome`]; here too are its parts: the checks and the optimizer before it,
//! one optimizer step, the curve window, the epoch end (validation, best weights, early
//! stopping, checkpoint), and the outcome. [`LoopState`] is what a checkpoint saves of it.

use std::path::Path;
use std::time::Instant;

use candle_core::Var;
use candle_nn::VarMap;
use ckd_core::metrics;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use super::checkpoint::{named_vars, set_vars, Checkpoint};
use super::config::TrainConfig;
use super::curve::{mean_point, write_curve, CurvePoint};
use super::data::{predict, TokenizedSamples};
use super::error::{io_err, Result, StudentError};
use super::loss::batch_loss;
use super::soft_targets::SoftTargets;
use crate::distill::LossParts;
use crate::models::bert::BertForMultiLabel;
use crate::models::common::DropoutRng;
use crate::optim::{clip_grad_norm, lr_at, AdamW};
use crate::text::TextEncoder;
use crate::train_integrity::write_tensors;

/// Loop state saved in checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct LoopState {
    /// Epoch in progress (0-based).
    pub(super) epoch: usize,
    /// Batches of `epoch` already done.
    pub(super) batch: usize,
    /// Optimizer steps done in total.
    pub(super) step: u64,
    /// Best validation macro-F1 so far.
    pub(super) best_f1: Option<f64>,
    /// Epoch of `best_f1`.
    pub(super) best_epoch: Option<usize>,
    /// Epochs ended since `best_f1` improved.
    pub(super) epochs_since_best: usize,
    /// Sum of the step losses of `epoch` so far.
    pub(super) epoch_loss_sum: f64,
    /// Number of steps in `epoch_loss_sum`.
    pub(super) epoch_loss_n: u64,
    /// Curve points so far.
    pub(super) curve: Vec<CurvePoint>,
    /// Whether early stopping fired.
    pub(super) stopped_early: bool,
    /// Whether the run is over (all epochs, or early stopping).
    pub(super) done: bool,
}

/// What a finished run produced.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOutcome {
    /// Steps run in total.
    pub steps: u64,
    /// Best validation macro-F1 and its epoch.
    pub best_val_macro_f1: Option<f64>,
    /// Epoch of the best weights.
    pub best_epoch: Option<usize>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Per-label thresholds tuned on validation with the best weights.
    pub thresholds: Vec<f32>,
    /// Training samples per second (steps run in this process only).
    pub samples_per_sec: f64,
    /// Training texts cut to `max_len`.
    pub truncated_train: usize,
    /// `false` when `max_steps` stopped the run before its end (resume to finish it).
    pub finished: bool,
}

/// Everything the loop needs: the model and its variables, the tokenized splits, the teacher's
/// soft targets, the settings, the run directory and the progress bar.
pub struct TrainLoop<'a> {
    /// Model being trained.
    pub model: &'a BertForMultiLabel,
    /// Its trainable weights.
    pub varmap: &'a VarMap,
    /// Tokenizer (pad id).
    pub encoder: &'a TextEncoder,
    /// Training samples.
    pub train: &'a TokenizedSamples,
    /// Validation samples.
    pub val: &'a TokenizedSamples,
    /// The teacher's soft targets, required when soft or attention weights are > 0.
    pub teacher: Option<&'a SoftTargets>,
    /// Settings.
    pub cfg: &'a TrainConfig,
    /// Where checkpoints and the best weights go.
    pub dir: &'a Path,
    /// Progress bar (hidden in tests).
    pub progress: &'a ProgressBar,
}

/// Validation macro-F1 (thresholds tuned on validation), macro-AUC and those thresholds.
fn validate(run: &TrainLoop<'_>) -> Result<(f64, Option<f64>, Vec<f32>)> {
    let probs = predict(run.model, run.val, run.encoder.pad_id, 32)?;
    let th = metrics::tune_thresholds_label_sets(&probs, &run.val.labels)?;
    let rep = metrics::evaluate_label_sets(&probs, &run.val.labels, &th, 10)?;
    Ok((rep.macro_f1, rep.macro_auc, th))
}

/// Runs (or resumes) training. Returns when all epochs ran or early stopping fired; the model's
/// variables then hold the best epoch's weights (also in `DIR/best.safetensors`).
pub fn train(run: &TrainLoop<'_>, resume: bool) -> Result<TrainOutcome> {
    let cfg = run.cfg;
    check_and_create(run)?;
    let (mut opt, mut st) = optimizer(run, resume)?;
    let vars = opt.vars();
    let best_path = run.dir.join("best.safetensors");
    let lengths: Vec<usize> = run.train.enc.iter().map(|e| e.ids.len()).collect();
    let batches_per_epoch = run.train.len().div_ceil(cfg.batch_size);
    let total_steps = (batches_per_epoch * cfg.epochs) as u64;
    let warmup = (total_steps as f64 * cfg.warmup_frac).round() as u64;
    run.progress.set_length(total_steps);
    run.progress.set_position(st.step);
    let mut rate = Rate { t0: Instant::now(), steps: 0, samples: 0 };
    let mut window = Window::default();

    while !st.done && st.epoch < cfg.epochs {
        let batches = crate::text::length_buckets(&lengths, cfg.batch_size, cfg.seed ^ (st.epoch as u64 + 1), true);
        while st.batch < batches.len() {
            let idx = &batches[st.batch];
            let lr = lr_at(st.step, total_steps, warmup, cfg.lr);
            let (parts, norm) = optimizer_step(run, &mut opt, &vars, &mut st, idx, lr)?;
            rate.steps += 1;
            rate.samples += idx.len() as u64;
            window.push(parts, norm, run, &mut st, &rate, lr);
            run.progress.set_position(st.step);
            if cfg.checkpoint_every > 0
                && st.step.is_multiple_of(cfg.checkpoint_every as u64)
                && st.batch < batches.len()
            {
                Checkpoint::save(run.dir, run.varmap, &opt, &st)?;
            }
            if cfg.max_steps.is_some_and(|m| st.step >= m) && st.batch < batches.len() {
                Checkpoint::save(run.dir, run.varmap, &opt, &st)?;
                write_curve(run.dir, &st.curve)?;
                return Ok(paused(run, &st, &rate));
            }
        }
        // Epoch end: validate, keep the best, maybe stop.
        end_epoch(run, &opt, &mut st, &best_path)?;
    }
    // Restore the best weights and tune thresholds with them.
    finish(run, &st, &best_path, &rate)
}

/// Refuses a run that cannot train (distillation settings, empty splits, a zero batch size or
/// epoch count) and creates its directory.
fn check_and_create(run: &TrainLoop<'_>) -> Result<()> {
    let cfg = run.cfg;
    cfg.distill.validate()?;
    if run.train.is_empty() || run.val.is_empty() {
        return Err(StudentError::Invalid(format!(
            "need training and validation samples (got {} and {})",
            run.train.len(),
            run.val.len()
        )));
    }
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(StudentError::Invalid("batch size and epochs must be > 0".into()));
    }
    std::fs::create_dir_all(run.dir).map_err(io_err(run.dir))
}

/// The optimizer over the run's variables (head and pooler at `head_lr_scale` times the rate),
/// and the loop state: the checkpoint's when `resume` and there is one (which also restores the
/// variables and the optimizer), else a fresh one.
fn optimizer(run: &TrainLoop<'_>, resume: bool) -> Result<(AdamW, LoopState)> {
    let cfg = run.cfg;
    let mut opt = AdamW::new(run.varmap, cfg.adamw)?;
    if cfg.head_lr_scale != 1.0 {
        opt.scale_lr("classifier.", cfg.head_lr_scale);
        opt.scale_lr("pooler.", cfg.head_lr_scale);
    }
    let mut st = LoopState::default();
    if resume {
        if let Some(s) = Checkpoint::load(run.dir, run.varmap, &mut opt)? {
            st = s;
        }
    }
    Ok((opt, st))
}

/// Steps and samples trained in this call (not counting a resumed checkpoint's), since `t0`.
struct Rate {
    pub t0: Instant,
    pub steps: u64,
    pub samples: u64,
}

impl Rate {
    /// Samples per second since `t0`.
    pub fn per_sec(&self) -> f64 {
        self.samples as f64 / self.t0.elapsed().as_secs_f64().max(1e-9)
    }
}

/// One optimizer step on the training batch `idx` at learning rate `lr`: loss, backward, clip to
/// `clip_norm`, refuse a non-finite loss or gradient, update. Advances `st` (step, batch, epoch
/// loss). Returns the loss parts (the autograd graph dropped) and the gradient norm before
/// clipping.
fn optimizer_step(
    run: &TrainLoop<'_>,
    opt: &mut AdamW,
    vars: &[Var],
    st: &mut LoopState,
    idx: &[usize],
    lr: f64,
) -> Result<(LossParts, f64)> {
    let cfg = run.cfg;
    let mut dropout = DropoutRng::new(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ st.step);
    let mut parts = batch_loss(run, idx, &mut dropout)?;
    let mut grads = parts.total.backward()?;
    // `total` owns the step's whole autograd graph (every intermediate activation);
    // the loss window must keep only its value, or ten steps' activations stay
    // alive at once (what made MiniLM training run out of memory).
    parts.total = parts.total.detach();
    let norm = clip_grad_norm(&mut grads, vars, cfg.clip_norm)?;
    // A non-finite loss or gradient would poison every weight: stop here instead.
    crate::train_integrity::ensure_finite_step(st.step + 1, parts.total_value, norm)?;
    opt.step(&grads, lr)?;
    st.step += 1;
    st.batch += 1;
    st.epoch_loss_sum += parts.total_value as f64;
    st.epoch_loss_n += 1;
    Ok((parts, norm))
}

/// The steps since the last curve point: their loss parts and the sum of their gradient norms.
#[derive(Default)]
struct Window {
    pub parts: Vec<LossParts>,
    pub norm: f64,
}

impl Window {
    /// Adds a step; once `log_every` (at least 1) steps are in, appends their mean as a curve
    /// point of `st`, shows the mean loss and `rate` on the progress bar, and starts over.
    pub fn push(&mut self, parts: LossParts, norm: f64, run: &TrainLoop<'_>, st: &mut LoopState, rate: &Rate, lr: f64) {
        self.norm += norm;
        self.parts.push(parts);
        if self.parts.len() >= run.cfg.log_every.max(1) {
            st.curve.push(mean_point(&self.parts, self.norm, st.step, st.epoch, lr));
            let loss = self.parts.iter().map(|p| p.total_value).sum::<f32>() / self.parts.len() as f32;
            let sps = rate.per_sec();
            run.progress.set_message(format!("epoch {} loss {loss:.4} {sps:.1} samples/s", st.epoch + 1));
            self.parts.clear();
            self.norm = 0.0;
        }
    }
}

/// The outcome of a run stopped by `max_steps` before its epoch ended (not finished; no
/// thresholds).
fn paused(run: &TrainLoop<'_>, st: &LoopState, rate: &Rate) -> TrainOutcome {
    TrainOutcome {
        steps: st.step,
        best_val_macro_f1: st.best_f1,
        best_epoch: st.best_epoch,
        stopped_early: false,
        thresholds: Vec::new(),
        samples_per_sec: rate.per_sec(),
        truncated_train: run.train.truncated,
        finished: false,
    }
}

/// Epoch end: validates (a curve point), saves the weights to `best_path` when the validation
/// macro-F1 improved, moves `st` to the next epoch, decides early stopping (`patience` epochs
/// without improvement) or the end, then checkpoints and writes the curve.
fn end_epoch(run: &TrainLoop<'_>, opt: &AdamW, st: &mut LoopState, best_path: &Path) -> Result<()> {
    let cfg = run.cfg;
    let (f1, auc, _) = validate(run)?;
    let train_loss = st.epoch_loss_sum / st.epoch_loss_n.max(1) as f64;
    st.curve.push(CurvePoint::Epoch {
        epoch: st.epoch,
        step: st.step,
        val_macro_f1: f1,
        val_macro_auc: auc,
        train_loss,
    });
    if st.best_f1.is_none_or(|b| f1 > b) {
        st.best_f1 = Some(f1);
        st.best_epoch = Some(st.epoch);
        st.epochs_since_best = 0;
        write_tensors(best_path, &named_vars(run.varmap)?)?;
    } else {
        st.epochs_since_best += 1;
    }
    st.epoch += 1;
    st.batch = 0;
    st.epoch_loss_sum = 0.0;
    st.epoch_loss_n = 0;
    if cfg.patience > 0 && st.epochs_since_best >= cfg.patience && st.epoch < cfg.epochs {
        st.stopped_early = true;
        st.done = true;
    }
    if st.epoch >= cfg.epochs {
        st.done = true;
    }
    Checkpoint::save(run.dir, run.varmap, opt, st)?;
    write_curve(run.dir, &st.curve)
}

/// The outcome of a finished run: restores the best weights from `best_path`, tunes the
/// thresholds on validation with them, and writes the curve.
fn finish(run: &TrainLoop<'_>, st: &LoopState, best_path: &Path, rate: &Rate) -> Result<TrainOutcome> {
    let best = crate::train_integrity::read_tensors(best_path)?;
    set_vars(run.varmap, &best)?;
    let (_, _, thresholds) = validate(run)?;
    write_curve(run.dir, &st.curve)?;
    Ok(TrainOutcome {
        steps: st.step,
        best_val_macro_f1: st.best_f1,
        best_epoch: st.best_epoch,
        stopped_early: st.stopped_early,
        thresholds,
        samples_per_sec: if rate.steps > 0 { rate.per_sec() } else { 0.0 },
        truncated_train: run.train.truncated,
        finished: true,
    })
}
