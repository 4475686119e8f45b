//! The phenotype head on the frozen LLM: `logits = W h + b`, h = the final hidden state
//! (after the last RMSNorm) of the last prompt token, W [25, H], b [25]. Trained with BCE on
//! cached features (the LLM runs once per sample, not once per epoch).
//!
//! Training standardizes the features (train mean / std per dimension) for conditioning and folds
//! the standardization back into W and b when saving, so the saved head applies to raw features.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarMap;
use ckd_core::metrics;
use ckd_core::rng::splitmix64 as splitmix;
use ckd_core::{LabelSet, NUM_LABELS};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{io_err, pad_rows, PromptEncoder, Result, TeacherError};
use crate::distill::hard_loss;
use crate::models::qwen2::Qwen2ForCausalLM;
use crate::optim::{AdamW, AdamWConfig};
use crate::train_integrity::write_tensors;

/// The head: weight [25, H] and bias [25], f32.
#[derive(Debug, Clone)]
pub struct Head {
    /// [25, H].
    pub weight: Tensor,
    /// [25].
    pub bias: Tensor,
}

impl Head {
    /// Reads `head.safetensors` (`weight` [25, hidden], `bias` [25]) onto `device`.
    pub fn load(path: &Path, hidden: usize, device: &Device) -> Result<Self> {
        crate::io::check_regular(path).map_err(|e| super::fmt_err(path, e))?;
        let t = candle_core::safetensors::load(path, device)
            .map_err(|e| super::fmt_err(path, format!("reading the head: {e}")))?;
        let get = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let x = t.get(name).ok_or_else(|| super::fmt_err(path, format!("no tensor `{name}`")))?;
            if x.dims() != shape {
                return Err(super::fmt_err(path, format!("`{name}` has shape {:?}, expected {shape:?}", x.dims())));
            }
            Ok(x.to_dtype(DType::F32)?)
        };
        Ok(Self { weight: get("weight", &[NUM_LABELS, hidden])?, bias: get("bias", &[NUM_LABELS])? })
    }

    /// Writes `head.safetensors`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let m = HashMap::from([
            ("weight".to_string(), self.weight.to_device(&Device::Cpu)?),
            ("bias".to_string(), self.bias.to_device(&Device::Cpu)?),
        ]);
        write_tensors(path, &m)?;
        Ok(())
    }

    /// features [B, H] (any float dtype) -> logits [B, 25] f32.
    pub fn logits(&self, features: &Tensor) -> Result<Tensor> {
        let f = features.to_dtype(DType::F32)?.to_device(self.weight.device())?;
        Ok(f.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?)
    }
}

/// Final hidden states of the last prompt token for every sample, in order: [N * H] f32
/// row-major. Batches are length-sorted (less padding) and restored to input order.
pub fn features(
    model: &Qwen2ForCausalLM,
    prompts: &PromptEncoder,
    samples: &[ckd_core::visit::Sample],
    batch_size: usize,
    progress: &ProgressBar,
) -> Result<Vec<f32>> {
    let h = model.config().hidden_size;
    let pad = prompts.pad_id()?;
    let encoded = samples.iter().map(|s| prompts.encode(s).map(|p| p.ids)).collect::<Result<Vec<_>>>()?;
    let mut order: Vec<usize> = (0..samples.len()).collect();
    order.sort_by_key(|&i| encoded[i].len());
    let mut out = vec![0f32; samples.len() * h];
    progress.set_length(samples.len() as u64);
    for chunk in order.chunks(batch_size.max(1)) {
        let rows: Vec<&[u32]> = chunk.iter().map(|&i| encoded[i].as_slice()).collect();
        let (ids, mask) = pad_rows(&rows, pad, model.device())?;
        let o = model.forward(&ids, Some(&mask))?;
        let f = o.last_hidden.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
        for (row, &i) in f.iter().zip(chunk) {
            out[i * h..(i + 1) * h].copy_from_slice(row);
        }
        progress.inc(chunk.len() as u64);
    }
    Ok(out)
}

/// Cache key of features: the model's identity and the ordered sample ids and prompt settings.
pub fn cache_key(model_key: &str, samples: &[ckd_core::visit::Sample], max_len: usize) -> String {
    let mut h = Sha256::new();
    h.update(model_key.as_bytes());
    h.update((max_len as u64).to_le_bytes());
    for s in samples {
        h.update(s.id.as_bytes());
        h.update([0]);
        h.update(s.text().as_bytes());
        h.update([0]);
    }
    ckd_core::format::hex(&h.finalize())[..16].to_string()
}

/// [`features`], read from `dir/{name}-{key}.safetensors` when present, else computed and written
/// there. Returns the features and whether they came from the cache.
pub fn cached_features(
    dir: &Path,
    name: &str,
    key: &str,
    compute: impl FnOnce() -> Result<Vec<f32>>,
    n: usize,
    hidden: usize,
) -> Result<(Vec<f32>, bool)> {
    let path = dir.join(format!("{name}-{key}.safetensors"));
    if path.is_file() {
        let t = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| super::fmt_err(&path, format!("reading cached features: {e}")))?;
        if let Some(f) = t.get("features") {
            if f.dims() == [n, hidden] {
                return Ok((f.flatten_all()?.to_vec1::<f32>()?, true));
            }
        }
    }
    let f = compute()?;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let t = Tensor::from_slice(&f, (n, hidden), &Device::Cpu)?;
    write_tensors(&path, &HashMap::from([("features".to_string(), t)]))?;
    Ok((f, false))
}

/// Head training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadConfig {
    /// Passes over the training features.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Adam learning rate (constant).
    pub lr: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// L2 penalty added to the loss: `l2 / 2 * sum(W^2) / 25` on the weights of the standardized
    /// features (with the mean BCE, as scikit-learn's `C = 1 / (l2 * n)` per label).
    #[serde(skip_serializing_if = "is_zero")]
    pub l2: f64,
    /// Seed of the initial weights and the batch order.
    pub seed: u64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self { epochs: 60, batch_size: 64, lr: 3e-3, weight_decay: 1e-2, l2: 0.0, seed: 42 }
    }
}

/// One epoch of head training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadEpoch {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Mean training BCE.
    pub train_loss: f64,
    /// Validation BCE.
    pub val_loss: f64,
    /// Validation macro-F1 at thresholds tuned on validation (as the student reports it).
    pub val_macro_f1: f64,
    /// Validation macro-AUC.
    pub val_macro_auc: Option<f64>,
}

/// What head training produced.
#[derive(Debug, Clone, Serialize)]
pub struct HeadOutcome {
    /// Epoch with the lowest validation BCE (its weights are kept).
    pub best_epoch: usize,
    /// Per-epoch figures.
    pub epochs: Vec<HeadEpoch>,
    /// Thresholds tuned on validation with the kept weights.
    pub thresholds: Vec<f32>,
    /// Validation report at those thresholds.
    pub val_macro_f1: f64,
    /// Validation macro-AUC.
    pub val_macro_auc: Option<f64>,
}

/// Trains the head on features `train` [N * H] / `val` [M * H] with their label sets. Keeps the
/// weights of the epoch with the lowest validation BCE (without the penalty). Deterministic for a
/// seed.
pub fn train_head(
    train: &[f32],
    train_labels: &[LabelSet],
    val: &[f32],
    val_labels: &[LabelSet],
    hidden: usize,
    cfg: &HeadConfig,
) -> Result<(Head, HeadOutcome)> {
    let n = train_labels.len();
    let m = val_labels.len();
    if n == 0 || m == 0 || train.len() != n * hidden || val.len() != m * hidden {
        return Err(TeacherError::Invalid(format!(
            "head: need train and val features of width {hidden} (got {} / {n} and {} / {m})",
            train.len(),
            val.len()
        )));
    }
    let dev = Device::Cpu;
    // Standardization statistics from the training features.
    let (mean, std) = standardization(train, n, hidden);
    let xt = standardize(train, n, hidden, &mean, &std)?;
    let xv = standardize(val, m, hidden, &mean, &std)?;
    let (yt, yv) = (dense_labels(train_labels)?, dense_labels(val_labels)?);

    let (varmap, w, b) = init_weights(cfg.seed, hidden)?;
    let mut opt = AdamW::new(&varmap, AdamWConfig { weight_decay: cfg.weight_decay, ..AdamWConfig::default() })?;
    let mut epochs = Vec::new();
    let mut best: Option<(f64, usize, Tensor, Tensor)> = None;
    let mut rng_state = cfg.seed;
    for epoch in 0..cfg.epochs.max(1) {
        let train_loss = train_epoch(&xt, &yt, (&w, &b), cfg, &mut opt, &mut rng_state)?;
        let e = validation_epoch(epoch, train_loss, &xv, &yv, val_labels, (&w, &b))?;
        let val_loss = e.val_loss;
        epochs.push(e);
        if best.as_ref().is_none_or(|(l, ..)| val_loss < *l) {
            best = Some((val_loss, epoch, w.copy()?, b.copy()?));
        }
    }
    let (_, best_epoch, bw, bb) = best.ok_or_else(|| TeacherError::Invalid("head: no epoch ran".into()))?;
    let head = fold_standardization(&bw, bb, &mean, &std)?;
    let vprobs = candle_nn::ops::sigmoid(&head.logits(&Tensor::from_slice(val, (m, hidden), &dev)?)?)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let thresholds = metrics::tune_thresholds_label_sets(&vprobs, val_labels)?;
    let rep = metrics::evaluate_label_sets(&vprobs, val_labels, &thresholds, 10)?;
    Ok((head, HeadOutcome { best_epoch, epochs, thresholds, val_macro_f1: rep.macro_f1, val_macro_auc: rep.macro_auc }))
}

/// Per-feature mean and standard deviation (population, at least 1e-6) of the `n` rows of
/// `train` [n * hidden], accumulated in f64.
fn standardization(train: &[f32], n: usize, hidden: usize) -> (Vec<f32>, Vec<f32>) {
    let mut mean = vec![0f64; hidden];
    let mut var = vec![0f64; hidden];
    for row in train.chunks(hidden) {
        for (j, &x) in row.iter().enumerate() {
            mean[j] += x as f64;
        }
    }
    mean.iter_mut().for_each(|x| *x /= n as f64);
    for row in train.chunks(hidden) {
        for (j, &x) in row.iter().enumerate() {
            var[j] += (x as f64 - mean[j]).powi(2);
        }
    }
    let std: Vec<f32> = var.iter().map(|v| ((v / n as f64).sqrt() as f32).max(1e-6)).collect();
    let mean: Vec<f32> = mean.iter().map(|&x| x as f32).collect();
    (mean, std)
}

/// `(x - mean) / std` of features `x` [rows * hidden], as a [rows, hidden] tensor.
fn standardize(x: &[f32], rows: usize, hidden: usize, mean: &[f32], std: &[f32]) -> Result<Tensor> {
    let dev = Device::Cpu;
    let t = Tensor::from_slice(x, (rows, hidden), &dev)?;
    let mu = Tensor::from_slice(mean, (1, hidden), &dev)?;
    let sd = Tensor::from_slice(std, (1, hidden), &dev)?;
    Ok(t.broadcast_sub(&mu)?.broadcast_div(&sd)?)
}

/// Label sets as 0/1 targets [N, 25].
fn dense_labels(labels: &[LabelSet]) -> Result<Tensor> {
    let dense: Vec<f32> = labels.iter().flat_map(|l| l.to_dense()).collect();
    Ok(Tensor::from_vec(dense, (labels.len(), NUM_LABELS), &Device::Cpu)?)
}

/// The head's variables, `head.weight` [25, hidden] ~ N(0, 0.01) from `seed` and `head.bias`
/// [25] at zero, with their tensors (the variables' storage: they see every update).
fn init_weights(seed: u64, hidden: usize) -> Result<(VarMap, Tensor, Tensor)> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let w0 = seeded_normal(seed, NUM_LABELS * hidden, 0.01);
    {
        let mut data = varmap.data().lock().map_err(|_| TeacherError::Invalid("VarMap lock poisoned".into()))?;
        data.insert(
            "head.weight".into(),
            candle_core::Var::from_tensor(&Tensor::from_vec(w0, (NUM_LABELS, hidden), &dev)?)?,
        );
        data.insert("head.bias".into(), candle_core::Var::from_tensor(&Tensor::zeros(NUM_LABELS, DType::F32, &dev)?)?);
    }
    let get = |name: &str| -> Result<Tensor> {
        let data = varmap.data().lock().map_err(|_| TeacherError::Invalid("VarMap lock poisoned".into()))?;
        Ok(data[name].as_tensor().clone())
    };
    let (w, b) = (get("head.weight")?, get("head.bias")?);
    Ok((varmap, w, b))
}

/// Logits `x W^T + b` [rows, 25] of standardized features `x` [rows, hidden].
fn forward(x: &Tensor, (w, b): (&Tensor, &Tensor)) -> Result<Tensor> {
    Ok(x.matmul(&w.t()?)?.broadcast_add(b)?)
}

/// One pass over the standardized training features `xt` / targets `yt` in an order shuffled
/// from `rng_state` (advanced), one optimizer step per batch of `batch_size`; the loss is the
/// mean BCE plus the `l2` penalty. Returns the mean loss over the batches.
fn train_epoch(
    xt: &Tensor,
    yt: &Tensor,
    (w, b): (&Tensor, &Tensor),
    cfg: &HeadConfig,
    opt: &mut AdamW,
    rng_state: &mut u64,
) -> Result<f64> {
    let dev = Device::Cpu;
    let mut order: Vec<usize> = (0..xt.dim(0)?).collect();
    shuffle(&mut order, rng_state);
    let mut loss_sum = 0f64;
    let mut batches = 0usize;
    for chunk in order.chunks(cfg.batch_size.max(1)) {
        let idx = Tensor::from_vec(chunk.iter().map(|&i| i as u32).collect::<Vec<_>>(), chunk.len(), &dev)?;
        let x = xt.index_select(&idx, 0)?;
        let y = yt.index_select(&idx, 0)?;
        let mut loss = hard_loss(&forward(&x, (w, b))?, &y, None)?;
        if cfg.l2 > 0.0 {
            loss = (loss + (w.sqr()?.sum_all()? * (0.5 * cfg.l2 / NUM_LABELS as f64))?)?;
        }
        loss_sum += loss.to_scalar::<f32>()? as f64;
        batches += 1;
        let grads = loss.backward()?;
        opt.step(&grads, cfg.lr)?;
    }
    Ok(loss_sum / batches.max(1) as f64)
}

/// Epoch `epoch`'s figures: its mean training loss, and the validation BCE, macro-F1
/// (thresholds tuned on validation) and macro-AUC of the head on the standardized `xv`.
fn validation_epoch(
    epoch: usize,
    train_loss: f64,
    xv: &Tensor,
    yv: &Tensor,
    val_labels: &[LabelSet],
    wb: (&Tensor, &Tensor),
) -> Result<HeadEpoch> {
    let vl = forward(xv, wb)?;
    let val_loss = hard_loss(&vl, yv, None)?.to_scalar::<f32>()? as f64;
    let probs = candle_nn::ops::sigmoid(&vl)?.flatten_all()?.to_vec1::<f32>()?;
    let th = metrics::tune_thresholds_label_sets(&probs, val_labels)?;
    let rep = metrics::evaluate_label_sets(&probs, val_labels, &th, 10)?;
    Ok(HeadEpoch { epoch, train_loss, val_loss, val_macro_f1: rep.macro_f1, val_macro_auc: rep.macro_auc })
}

/// The head on raw features from weights `bw` [25, hidden] / `bb` [25] trained on standardized
/// ones: W' = W / std, b' = b - W' mean.
fn fold_standardization(bw: &Tensor, bb: Tensor, mean: &[f32], std: &[f32]) -> Result<Head> {
    let dev = Device::Cpu;
    let hidden = mean.len();
    let sd = Tensor::from_slice(std, (1, hidden), &dev)?;
    let mu = Tensor::from_slice(mean, (hidden, 1), &dev)?;
    let weight = bw.broadcast_div(&sd)?;
    let bias = (bb - weight.matmul(&mu)?.squeeze(D::Minus1)?)?;
    Ok(Head { weight, bias })
}

/// Probabilities sigmoid(logits / T) [N * 25] of features [N * H].
pub fn probabilities(head: &Head, features: &[f32], hidden: usize, temperature: f32) -> Result<Vec<f32>> {
    let n = features.len() / hidden.max(1);
    let f = Tensor::from_slice(features, (n, hidden), &Device::Cpu)?;
    let l = head.logits(&f)?.affine(1.0 / temperature as f64, 0.0)?;
    Ok(candle_nn::ops::sigmoid(&l)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?)
}

/// N(0, std) draws from a seeded SplitMix64 + Box-Muller (deterministic across platforms).
fn seeded_normal(seed: u64, n: usize, std: f64) -> Vec<f32> {
    let mut s = seed ^ 0x5DEE_CE66_D1CE_4E5B;
    let mut uniform = || (splitmix(&mut s) >> 11) as f64 / (1u64 << 53) as f64;
    (0..n)
        .map(|_| {
            let (u1, u2) = (1.0 - uniform(), uniform());
            (std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

/// Fisher-Yates with SplitMix64 draws.
pub(crate) fn shuffle(v: &mut [usize], state: &mut u64) {
    for i in (1..v.len()).rev() {
        let j = (splitmix(state) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}
