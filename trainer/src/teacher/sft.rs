//! Supervised fine-tuning of the teacher LLM on the CKD-EHR answers.
//!
//! Sequence = chat prompt ++ `{output}<|im_end|>\n`; the loss is the mean next-token NLL over
//! the answer tokens only ([`answer_token_loss`]): position t predicts token t + 1, so answer
//! tokens at indices `start..len` are predicted from positions `start - 1..len - 1`.
//! Trainable weights: the LoRA adapters (pretrained base) or every weight (the demo model, which
//! starts from random weights and has nothing to preserve).

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarMap;
use ckd_core::visit::Sample;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use super::{pad_rows, PromptEncoder, Result, TeacherError};
use crate::models::common::DropoutRng;
use crate::models::qwen2::Qwen2ForCausalLM;
use crate::optim::{clip_grad_norm, lr_at, AdamW, AdamWConfig};
use crate::student::CurvePoint;

/// Fine-tuning settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftConfig {
    /// Passes over the training samples (0 = no fine-tuning).
    pub epochs: usize,
    /// Sequences per step.
    pub batch_size: usize,
    /// Peak learning rate (warmup then linear decay).
    pub lr: f64,
    /// Fraction of steps spent warming up.
    pub warmup_frac: f64,
    /// Global gradient-norm clip (0 = off).
    pub clip_norm: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of batch order and dropout.
    pub seed: u64,
    /// Stop after this many steps (time-boxed runs).
    pub max_steps: Option<u64>,
    /// Log a curve point every N steps.
    pub log_every: usize,
    /// Weight of an auxiliary phenotype head (BCE on the last prompt token's final hidden state)
    /// trained jointly with the answer loss; 0 = off (the method as published). For the demo
    /// teacher only: a model trained from scratch in minutes has no pretrained features for the
    /// frozen head to read, and this makes its last-token state carry the phenotypes. The
    /// auxiliary head's weights (`aux_head.*`) are discarded; the frozen-feature head is trained
    /// afterwards as in the method.
    pub aux_head_weight: f64,
}

/// Name prefix of the auxiliary head's variables in the fine-tuning VarMap.
pub const AUX_PREFIX: &str = "aux_head.";

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            batch_size: 8,
            lr: 2e-4,
            warmup_frac: 0.05,
            clip_norm: 1.0,
            weight_decay: 0.0,
            seed: 42,
            max_steps: None,
            log_every: 10,
            aux_head_weight: 0.0,
        }
    }
}

/// What fine-tuning did.
#[derive(Debug, Clone, Serialize)]
pub struct SftOutcome {
    /// Optimizer steps.
    pub steps: u64,
    /// Mean answer-token NLL on the validation samples after each epoch.
    pub val_loss: Vec<f64>,
    /// Training sequences per second.
    pub samples_per_sec: f64,
    /// Training prompts cut to fit.
    pub truncated: usize,
    /// Loss curve.
    pub curve: Vec<CurvePoint>,
}

/// Encoded fine-tuning sequences: ids and first answer index.
struct Sequences {
    ids: Vec<Vec<u32>>,
    start: Vec<usize>,
    labels: Vec<[f32; ckd_core::NUM_LABELS]>,
    truncated: usize,
}

fn encode_all(prompts: &PromptEncoder, samples: &[Sample]) -> Result<Sequences> {
    let mut s = Sequences { ids: Vec::new(), start: Vec::new(), labels: Vec::new(), truncated: 0 };
    for x in samples {
        let (ids, start, cut) = prompts.encode_sft(x)?;
        s.ids.push(ids);
        s.start.push(start);
        s.labels.push(x.labels.to_dense());
        s.truncated += cut as usize;
    }
    Ok(s)
}

/// The auxiliary head (weight [25, H], bias [25]) and its loss weight.
type Aux = (Tensor, Tensor, f64);

/// Mean answer-token NLL of a batch of sequences `idx` (training mode when `dropout` is set),
/// plus `w * BCE` of the auxiliary head on the last prompt token when `aux` is given.
fn batch_loss(
    model: &Qwen2ForCausalLM,
    seqs: &Sequences,
    idx: &[usize],
    pad: u32,
    dropout: Option<&mut DropoutRng>,
    aux: Option<&Aux>,
) -> Result<Tensor> {
    let rows: Vec<&[u32]> = idx.iter().map(|&i| seqs.ids[i].as_slice()).collect();
    let (ids, mask) = pad_rows(&rows, pad, model.device())?;
    let out = model.forward_t(&ids, Some(&mask), dropout, false)?;
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    for (row, &i) in idx.iter().enumerate() {
        for (t, &tok) in seqs.ids[i].iter().enumerate().skip(seqs.start[i]) {
            positions.push((row, t - 1));
            targets.push(tok);
        }
    }
    let p = positions.len();
    let logits = model.logits_at(&out.hidden, &positions)?.unsqueeze(0)?;
    let targets = Tensor::from_vec(targets, (1, p), model.device())?;
    let ones = Tensor::ones((1, p), DType::F32, model.device())?;
    let nll = answer_token_loss(&logits, &targets, &ones)?;
    let Some((w, b, weight)) = aux else { return Ok(nll) };
    // The last prompt token of row r sits just before its first answer token.
    let last: Vec<(usize, usize)> = idx.iter().enumerate().map(|(row, &i)| (row, seqs.start[i] - 1)).collect();
    let h = crate::models::qwen2::gather_positions(&out.hidden, &last)?.to_dtype(DType::F32)?;
    let z = h.matmul(&w.t()?)?.broadcast_add(b)?;
    let y: Vec<f32> = idx.iter().flat_map(|&i| seqs.labels[i]).collect();
    let y = Tensor::from_vec(y, (idx.len(), ckd_core::NUM_LABELS), model.device())?;
    let bce = crate::distill::hard_loss(&z, &y, None)?;
    Ok((nll + bce.affine(*weight, 0.0)?)?)
}

/// Mean answer-token NLL over `samples` (eval mode).
pub fn eval_loss(model: &Qwen2ForCausalLM, prompts: &PromptEncoder, samples: &[Sample], batch: usize) -> Result<f64> {
    let seqs = encode_all(prompts, samples)?;
    let pad = prompts.pad_id()?;
    let (mut sum, mut n) = (0f64, 0usize);
    let idx: Vec<usize> = (0..samples.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let l = batch_loss(model, &seqs, chunk, pad, None, None)?.to_scalar::<f32>()? as f64;
        sum += l * chunk.len() as f64;
        n += chunk.len();
    }
    Ok(sum / n.max(1) as f64)
}

/// Fine-tunes `model`, whose trainable weights are exactly the Vars of `varmap` (adapters, or
/// all weights). Validation loss is measured on at most `val_limit` validation samples after each
/// epoch.
#[allow(clippy::too_many_arguments)]
pub fn finetune(
    model: &Qwen2ForCausalLM,
    varmap: &VarMap,
    prompts: &PromptEncoder,
    train: &[Sample],
    val: &[Sample],
    cfg: &SftConfig,
    val_limit: usize,
    progress: &ProgressBar,
) -> Result<SftOutcome> {
    if cfg.epochs == 0 {
        return Ok(SftOutcome {
            steps: 0,
            val_loss: Vec::new(),
            samples_per_sec: 0.0,
            truncated: 0,
            curve: Vec::new(),
        });
    }
    if train.is_empty() || cfg.batch_size == 0 {
        return Err(TeacherError::Invalid("fine-tuning needs training samples and a batch size > 0".into()));
    }
    let seqs = encode_all(prompts, train)?;
    let pad = prompts.pad_id()?;
    let lengths: Vec<usize> = seqs.ids.iter().map(Vec::len).collect();
    let aux = aux_head(model, varmap, cfg)?;
    let mut opt = AdamW::new(varmap, AdamWConfig { weight_decay: cfg.weight_decay, ..AdamWConfig::default() })?;
    let vars = opt.vars();
    if vars.is_empty() {
        return Err(TeacherError::Invalid("fine-tuning: the model has no trainable weights".into()));
    }
    let per_epoch = train.len().div_ceil(cfg.batch_size) as u64;
    let total = cfg.max_steps.map_or(per_epoch * cfg.epochs as u64, |m| m.min(per_epoch * cfg.epochs as u64));
    let warmup = (total as f64 * cfg.warmup_frac).round() as u64;
    progress.set_length(total);
    let val = &val[..val.len().min(val_limit)];
    let mut s = Steps::new(total, cfg.log_every);
    let mut val_loss = Vec::new();
    'epochs: for epoch in 0..cfg.epochs {
        let batches = crate::text::length_buckets(&lengths, cfg.batch_size, cfg.seed ^ (epoch as u64 + 1), true);
        for idx in &batches {
            if s.step >= total {
                break 'epochs;
            }
            let lr = lr_at(s.step, total, warmup, cfg.lr);
            let mut rng = DropoutRng::new(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ s.step);
            let loss = batch_loss(model, &seqs, idx, pad, Some(&mut rng), aux.as_ref())?;
            let mut grads = loss.backward()?;
            let norm = clip_grad_norm(&mut grads, &vars, cfg.clip_norm)?;
            opt.step(&grads, lr)?;
            s.record(idx.len(), &loss, norm, (epoch, lr), progress)?;
        }
        if !val.is_empty() {
            val_loss.push(eval_loss(model, prompts, val, cfg.batch_size)?);
        }
    }
    Ok(SftOutcome {
        steps: s.step,
        val_loss,
        samples_per_sec: s.samples_done as f64 / s.t0.elapsed().as_secs_f64().max(1e-9),
        truncated: seqs.truncated,
        curve: s.curve,
    })
}

/// With `aux_head_weight > 0`: a phenotype head on the hidden states ([25, H] weight, [25]
/// bias, both zero), added to `varmap` under [`AUX_PREFIX`] so that it trains with the model;
/// its tensors and the weight of its loss.
fn aux_head(model: &Qwen2ForCausalLM, varmap: &VarMap, cfg: &SftConfig) -> Result<Option<Aux>> {
    if cfg.aux_head_weight > 0.0 {
        let h = model.config().hidden_size;
        let dev = model.device();
        // Zero init: deterministic, and the gradient is still non-zero (hidden states are not).
        let w = candle_core::Var::from_tensor(&Tensor::zeros((ckd_core::NUM_LABELS, h), DType::F32, dev)?)?;
        let b = candle_core::Var::from_tensor(&Tensor::zeros(ckd_core::NUM_LABELS, DType::F32, dev)?)?;
        let (wt, bt) = (w.as_tensor().clone(), b.as_tensor().clone());
        let mut data = varmap.data().lock().map_err(|_| TeacherError::Invalid("VarMap lock poisoned".into()))?;
        data.insert(format!("{AUX_PREFIX}weight"), w);
        data.insert(format!("{AUX_PREFIX}bias"), b);
        Ok(Some((wt, bt, cfg.aux_head_weight)))
    } else {
        Ok(None)
    }
}

/// Fine-tuning's running state: steps and samples done since `t0`, the curve, and the loss and
/// gradient-norm sums of the steps since its last point.
struct Steps {
    step: u64,
    samples_done: usize,
    curve: Vec<CurvePoint>,
    win_loss: f32,
    win_norm: f64,
    win_n: usize,
    t0: std::time::Instant,
    /// Steps of the whole run, and steps per curve point (at least 1).
    total: u64,
    log_every: usize,
}

impl Steps {
    fn new(total: u64, log_every: usize) -> Self {
        Steps {
            step: 0,
            samples_done: 0,
            curve: Vec::new(),
            win_loss: 0.0,
            win_norm: 0.0,
            win_n: 0,
            t0: std::time::Instant::now(),
            total,
            log_every,
        }
    }

    /// Counts a step just taken on `samples` sequences (its loss and gradient norm) in `epoch` at
    /// rate `lr`; every `log_every` steps appends the window's mean as a curve point and shows it
    /// (on `progress`, or through `tracing` when that is hidden).
    fn record(
        &mut self,
        samples: usize,
        loss: &Tensor,
        norm: f64,
        (epoch, lr): (usize, f64),
        progress: &ProgressBar,
    ) -> Result<()> {
        self.step += 1;
        self.samples_done += samples;
        self.win_loss += loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        self.win_norm += norm;
        self.win_n += 1;
        if self.win_n >= self.log_every.max(1) {
            let l = self.win_loss / self.win_n as f32;
            self.curve.push(CurvePoint::Step {
                step: self.step,
                epoch,
                lr,
                loss: l,
                hard: None,
                soft: None,
                attn: [None; 3],
                grad_norm: self.win_norm / self.win_n as f64,
            });
            let sps = self.samples_done as f64 / self.t0.elapsed().as_secs_f64().max(1e-9);
            progress.set_message(format!("epoch {} answer NLL {l:.3} {sps:.1} seq/s", epoch + 1));
            if progress.is_hidden() {
                tracing::info!(step = self.step, total = self.total, loss = l, seq_per_s = sps, "teacher fine-tuning");
            }
            (self.win_loss, self.win_norm, self.win_n) = (0.0, 0.0, 0);
        }
        progress.set_position(self.step);
        Ok(())
    }
}

/// A VarMap holding every tensor of `tensors` as a trainable Var (full fine-tuning).
pub fn trainable(tensors: &std::collections::HashMap<String, Tensor>, device: &Device) -> Result<VarMap> {
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().map_err(|_| TeacherError::Invalid("VarMap lock poisoned".into()))?;
        for (k, v) in tensors {
            data.insert(k.clone(), candle_core::Var::from_tensor(&v.to_device(device)?)?);
        }
    }
    Ok(varmap)
}

/// Mean cross-entropy over answer tokens (LoRA SFT).
///
/// logits [B, T, V]; targets [B, T] integer (u32, or i64/u8): `targets[b, t]` is the token
/// `logits[b, t]` must predict (the caller has already shifted by one); every target must be
/// in [0, V), masked positions included (put e.g. the pad id there). mask [B, T]: 1 on answer
/// tokens, 0 elsewhere (other non-negative values weight the tokens).
///
/// ```text
/// nll[b, t] = log Σ_v exp(x[b, t, v] - m) - (x[b, t, targets[b, t]] - m),   m = max_v x (detached)
/// loss      = Σ mask · nll / Σ mask                                        (scalar, f32)
/// ```
///
/// Computed in f32 from differentiable ops (`max` detached, `exp`, `sum`, `log`, `gather`,
/// whose backward is a scatter-add); candle-nn's fused softmax has no backward. An all-zero
/// mask is an error (a mean over no tokens).
pub fn answer_token_loss(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    if targets.dims() != [b, t] || mask.dims() != [b, t] {
        candle_core::bail!(
            "answer_token_loss: logits {:?} need targets and mask [{b}, {t}], got {:?} and {:?}",
            logits.dims(),
            targets.dims(),
            mask.dims()
        )
    }
    if !matches!(targets.dtype(), DType::U32 | DType::I64 | DType::U8) {
        candle_core::bail!("answer_token_loss: targets must be integer (u32), got {:?}", targets.dtype())
    }
    let ids = targets.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?;
    if let Some(bad) = ids.iter().find(|&&i| i < 0 || i as usize >= v) {
        candle_core::bail!("answer_token_loss: target id {bad} is outside the vocabulary [0, {v})")
    }
    let mask = mask.to_dtype(DType::F32)?.detach();
    let count = mask.sum_all()?.to_scalar::<f32>()? as f64;
    if count.is_nan() || count <= 0.0 {
        candle_core::bail!("answer_token_loss: the mask selects no answer token (sum = {count})")
    }
    let x = logits.to_dtype(DType::F32)?;
    let max = x.max_keepdim(D::Minus1)?.detach();
    let xm = x.broadcast_sub(&max)?;
    let lse = xm.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let picked = xm.gather(&targets.unsqueeze(D::Minus1)?.contiguous()?, D::Minus1)?;
    let nll = (lse - picked)?.squeeze(D::Minus1)?;
    (nll * mask)?.sum_all()?.affine(1.0 / count, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn cpu() -> Device {
        Device::Cpu
    }

    #[test]
    fn answer_token_loss_by_hand() {
        // Row t=0: logits [0, 0, 0], target 1 -> nll = ln 3 = 1.0986123.
        // Row t=1: logits [0, ln 2, 0] -> softmax [1/4, 1/2, 1/4], target 1 -> nll = ln 2 = 0.6931472.
        // Row t=2: logits [1000, 1000, 1000] (stability), target 0 -> nll = ln 3.
        let ln2 = 2f32.ln();
        let logits = Tensor::from_vec(vec![0., 0., 0., 0., ln2, 0., 1000., 1000., 1000.], (1, 3, 3), &cpu()).unwrap();
        let targets = Tensor::new(&[[1u32, 1, 0]], &cpu()).unwrap();
        let loss = |mask: &[f32]| {
            let m = Tensor::from_vec(mask.to_vec(), (1, 3), &cpu()).unwrap();
            answer_token_loss(&logits, &targets, &m).unwrap().to_scalar::<f32>().unwrap()
        };
        // mask [1, 1, 0]: (ln 3 + ln 2) / 2 = ln 6 / 2 = 0.8958797.
        assert!((loss(&[1., 1., 0.]) - 0.895_879_7).abs() < 1e-6);
        assert!((loss(&[0., 1., 0.]) - std::f32::consts::LN_2).abs() < 1e-6);
        assert!((loss(&[0., 0., 1.]) - 3f32.ln()).abs() < 1e-6);
        // (ln 3 + ln 2 + ln 3) / 3 = ln 18 / 3 = 0.9634573.
        assert!((loss(&[1., 1., 1.]) - 0.963_457_3).abs() < 1e-6);

        // Gradient for mask [0, 1, 0]: d/dlogits[t=1] = softmax - onehot = [0.25, -0.5, 0.25];
        // masked rows get 0.
        let v = Var::from_tensor(&logits).unwrap();
        let m = Tensor::new(&[[0f32, 1., 0.]], &cpu()).unwrap();
        let g = answer_token_loss(v.as_tensor(), &targets, &m).unwrap().backward().unwrap();
        let g = g.get(v.as_tensor()).unwrap().to_vec3::<f32>().unwrap();
        let want = [[0f32, 0., 0.], [0.25, -0.5, 0.25], [0., 0., 0.]];
        for (row, w) in g[0].iter().zip(want) {
            for (a, b) in row.iter().zip(w) {
                assert!((a - b).abs() < 1e-6, "{g:?}");
            }
        }

        // Batch of 2: the mean runs over selected tokens of both rows.
        let logits2 = Tensor::cat(&[&logits, &logits], 0).unwrap();
        let targets2 = Tensor::cat(&[&targets, &targets], 0).unwrap();
        let m2 = Tensor::new(&[[1f32, 0., 0.], [0., 1., 0.]], &cpu()).unwrap();
        let l2 = answer_token_loss(&logits2, &targets2, &m2).unwrap().to_scalar::<f32>().unwrap();
        assert!((l2 - 0.895_879_7).abs() < 1e-6);

        // Errors: no answer token, target out of range, shape mismatch, float targets.
        let zero = Tensor::zeros((1, 3), DType::F32, &cpu()).unwrap();
        assert!(answer_token_loss(&logits, &targets, &zero).is_err());
        let bad = Tensor::new(&[[1u32, 3, 0]], &cpu()).unwrap();
        let ones = Tensor::ones((1, 3), DType::F32, &cpu()).unwrap();
        assert!(answer_token_loss(&logits, &bad, &ones).is_err());
        assert!(answer_token_loss(&logits, &Tensor::new(&[[1u32, 1]], &cpu()).unwrap(), &ones).is_err());
        assert!(answer_token_loss(&logits, &ones, &ones).is_err());
    }
}
