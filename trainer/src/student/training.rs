//! The parts of [`super::train`]'s loop: the checks and the optimizer before it, one optimizer
//! step, the curve window, the epoch end, and the outcome.

use std::time::Instant;

use candle_core::Var;

use super::{
    batch_loss, io_err, mean_point, named_vars, set_vars, validate, write_curve, Checkpoint, CurvePoint, LoopState,
    Result, Run, StudentError, TrainOutcome,
};
use crate::distill::LossParts;
use crate::models::common::DropoutRng;
use crate::optim::{clip_grad_norm, AdamW};
use crate::train_integrity::write_tensors;

/// Refuses a run that cannot train (distillation settings, empty splits, a zero batch size or
/// epoch count) and creates its directory.
pub(super) fn check_and_create(run: &Run<'_>) -> Result<()> {
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
pub(super) fn optimizer(run: &Run<'_>, resume: bool) -> Result<(AdamW, LoopState)> {
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
pub(super) struct Rate {
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
pub(super) fn optimizer_step(
    run: &Run<'_>,
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
pub(super) struct Window {
    pub parts: Vec<LossParts>,
    pub norm: f64,
}

impl Window {
    /// Adds a step; once `log_every` (at least 1) steps are in, appends their mean as a curve
    /// point of `st`, shows the mean loss and `rate` on the progress bar, and starts over.
    pub fn push(&mut self, parts: LossParts, norm: f64, run: &Run<'_>, st: &mut LoopState, rate: &Rate, lr: f64) {
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
pub(super) fn paused(run: &Run<'_>, st: &LoopState, rate: &Rate) -> TrainOutcome {
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
pub(super) fn end_epoch(run: &Run<'_>, opt: &AdamW, st: &mut LoopState, best_path: &std::path::Path) -> Result<()> {
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
pub(super) fn finish(run: &Run<'_>, st: &LoopState, best_path: &std::path::Path, rate: &Rate) -> Result<TrainOutcome> {
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
