//! LoRA adapters (Hu et al. 2021) on frozen linear layers, PEFT-compatible on disk, and the SFT
//! loss on answer tokens.
//!
//! A [`LoraLinear`] holds a frozen base weight W [out, in] (and bias b [out]) as plain tensors,
//! never Vars, so they receive no gradient and no optimizer touches them. An adapter adds two
//! trainable Vars that live in the caller's [`VarMap`]: A = `lora_A.weight` [r, in] and
//! B = `lora_B.weight` [out, r], and the layer computes
//!
//! ```text
//! y = x Wᵀ + b + (alpha / r) · dropout(x) Aᵀ Bᵀ          x [.., in] -> y [.., out]
//! ```
//!
//! as PEFT's `lora.Linear` does (dropout on the adapter branch only; `use_rslora = false`).
//! Init as PEFT's `init_lora_weights = true`: A ~ U(-1/√in, 1/√in) (kaiming-uniform with
//! a = √5), B = 0, so a fresh adapter leaves the model's outputs unchanged. A is drawn from a
//! ChaCha8 stream keyed by (seed, full var name) as every seeded init here (`models::seeded`),
//! so initialization is deterministic and independent of creation order.
//!
//! Every op on the forward path has a backward in candle-core 0.11 (`matmul`, `t`, `reshape`,
//! `broadcast_add`, `affine`, `to_dtype`, and the dropout mask multiply).
//!
//! # Names (PEFT compatibility)
//!
//! Var names are the Hugging Face module path plus `lora_A.weight` / `lora_B.weight`, e.g.
//! `model.layers.3.self_attn.q_proj.lora_A.weight` (the [`VarBuilder`] handed to
//! [`LoraLinear::with_adapter`] is the module's path). On disk (`adapter_model.safetensors`)
//! every name carries PEFT's [`super::peft::PEFT_PREFIX`] `base_model.model.`, e.g.
//! `base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight`; PEFT's in-memory names
//! with the adapter name (`lora_A.default.weight`) are accepted on read. `adapter_config.json`
//! carries PEFT's `LoraConfig` fields. Features that change the forward pass or the base
//! weights (DoRA, rsLoRA, biases, `fan_in_fan_out`, rank/alpha patterns, extra saved modules,
//! ...) are refused with a message naming them, never ignored.
//!
//! Reading and writing those files is [`super::peft`]'s; this module never touches a file.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::models::common::DropoutRng;
use crate::models::qlinear::QuantWeight;

/// The linear modules of a Qwen2 decoder layer that can carry an adapter (PEFT names).
pub const PEFT_TARGET_MODULES: [&str; 7] =
    ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
/// Leaf name of the down-projection A [r, in].
pub const LORA_A: &str = "lora_A.weight";
/// Leaf name of the up-projection B [out, r].
pub const LORA_B: &str = "lora_B.weight";

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Errors of saving, loading and validating adapters.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    // File names as in `peft::ADAPTER_CONFIG_FILE` / `ADAPTER_WEIGHTS_FILE` (peft imports this module).
    #[error("adapter_config.json: {0}")]
    ConfigJson(#[from] serde_json::Error),
    #[error("adapter_model.safetensors: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    #[error("invalid LoRA config: {0}")]
    InvalidConfig(String),
    #[error("unsupported PEFT adapter: {}", .0.join("; "))]
    Unsupported(Vec<String>),
    #[error("adapter tensors do not match the config: {0}")]
    Tensors(Box<AdapterMismatch>),
    #[error("no LoRA tensors (`*.{LORA_A}` / `*.{LORA_B}`) in the adapter")]
    NoAdapter,
}

/// Everything wrong with a set of adapter tensors, listed in full (names sorted).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdapterMismatch {
    /// Names that are not `<module path>.lora_{A,B}.weight` of a targeted module.
    pub unknown: Vec<String>,
    /// Halves of A/B pairs that are absent.
    pub missing: Vec<String>,
    /// Names present twice (e.g. both `lora_A.weight` and `lora_A.default.weight`).
    pub duplicate: Vec<String>,
    /// Tensors whose shape is not [r, in] (A) or [out, r] (B), with a description.
    pub bad_shape: Vec<String>,
    /// Tensors that are not floating point.
    pub bad_dtype: Vec<(String, DType)>,
}

impl AdapterMismatch {
    pub(crate) fn is_empty(&self) -> bool {
        self.unknown.is_empty()
            && self.missing.is_empty()
            && self.duplicate.is_empty()
            && self.bad_shape.is_empty()
            && self.bad_dtype.is_empty()
    }
}

impl fmt::Display for AdapterMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.unknown.is_empty() {
            parts.push(format!("unknown tensors [{}]", self.unknown.join(", ")));
        }
        if !self.missing.is_empty() {
            parts.push(format!("missing tensors [{}]", self.missing.join(", ")));
        }
        if !self.duplicate.is_empty() {
            parts.push(format!("duplicate tensors [{}]", self.duplicate.join(", ")));
        }
        parts.extend(self.bad_shape.iter().cloned());
        for (name, dtype) in &self.bad_dtype {
            parts.push(format!("{name} has non-float dtype {dtype:?}"));
        }
        f.write_str(&parts.join("; "))
    }
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// LoRA hyper-parameters (PEFT `LoraConfig`: `r`, `lora_alpha`, `lora_dropout`,
/// `target_modules`). Scale = alpha / r.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoraConfig {
    /// Rank r of A [r, in] and B [out, r].
    pub r: usize,
    /// Scaling numerator: the adapter's output is multiplied by alpha / r.
    pub alpha: f64,
    /// Dropout probability on the adapter branch's input, in [0, 1).
    pub dropout: f64,
    /// PEFT module names that get adapters, a subset of [`PEFT_TARGET_MODULES`].
    pub target_modules: Vec<String>,
}

impl Default for LoraConfig {
    /// r = 8, alpha = 16, dropout = 0.05, all seven linear modules of a decoder layer.
    fn default() -> Self {
        Self { r: 8, alpha: 16.0, dropout: 0.05, target_modules: PEFT_TARGET_MODULES.map(String::from).to_vec() }
    }
}

impl LoraConfig {
    /// alpha / r.
    pub fn scale(&self) -> f64 {
        self.alpha / self.r.max(1) as f64
    }

    /// Whether the module with PEFT name `module` (e.g. `q_proj`) gets an adapter.
    pub fn targets(&self, module: &str) -> bool {
        self.target_modules.iter().any(|m| m == module)
    }

    /// Checks r > 0, alpha finite and > 0, dropout in [0, 1), and a non-empty, duplicate-free
    /// subset of [`PEFT_TARGET_MODULES`].
    pub fn validate(&self) -> Result<(), LoraError> {
        let bad = |m: String| Err(LoraError::InvalidConfig(m));
        if self.r == 0 {
            return bad("r must be > 0".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return bad(format!("alpha = {} must be finite and > 0", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout = {} is not in [0, 1)", self.dropout));
        }
        if self.target_modules.is_empty() {
            return bad("target_modules is empty".into());
        }
        for (i, m) in self.target_modules.iter().enumerate() {
            if !PEFT_TARGET_MODULES.contains(&m.as_str()) {
                return bad(format!("target module {m:?} is not one of {PEFT_TARGET_MODULES:?}"));
            }
            if self.target_modules[..i].contains(m) {
                return bad(format!("target module {m:?} is listed twice"));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// LoraLinear
// ---------------------------------------------------------------------------------------------

/// The trainable part of a [`LoraLinear`].
#[derive(Debug, Clone)]
struct Adapter {
    /// [r, in], a Var's tensor.
    a: Tensor,
    /// [out, r], a Var's tensor.
    b: Tensor,
    /// alpha / r.
    scale: f64,
    /// Dropout probability on the adapter branch's input.
    dropout: f64,
}

/// The base weight W [out, in] of a [`LoraLinear`].
#[derive(Debug, Clone)]
enum BaseWeight {
    /// A plain tensor (any float dtype; trainable only when built by [`LoraLinear::trainable`]).
    Dense(Tensor),
    /// Quantized, frozen, f32 activations ([`QuantWeight`]).
    Quantized(QuantWeight),
}

impl BaseWeight {
    fn dims(&self) -> candle_core::Result<(usize, usize)> {
        match self {
            BaseWeight::Dense(w) => w.dims2(),
            BaseWeight::Quantized(q) => Ok(q.dims()),
        }
    }
}

/// A frozen linear layer with an optional LoRA adapter (see the module docs for the formula).
#[derive(Debug, Clone)]
pub struct LoraLinear {
    /// [out, in]; detached (frozen) unless built by [`LoraLinear::trainable`].
    weight: BaseWeight,
    /// [out]; detached like `weight`.
    bias: Option<Tensor>,
    adapter: Option<Adapter>,
}

/// The adapter tensor `name` under `vb` with `shape`. When the backend already holds it (a
/// VarMap that was filled by [`insert_adapter`], or a checkpoint-backed builder) it is returned
/// unchanged. Otherwise it is created through the backend with `Init::Const(0)` (a new Var in a
/// VarMap) and, when `bound` is given, overwritten in place with U(-bound, bound) draws from
/// ChaCha8(seed) on stream fnv1a(full name), so the Var in the map holds the seeded values.
fn adapter_tensor(
    vb: &VarBuilder,
    shape: (usize, usize),
    name: &str,
    bound: Option<f64>,
    seed: u64,
) -> candle_core::Result<Tensor> {
    if vb.contains_tensor(name) {
        return vb.get_with_hints(shape, name, Init::Const(0.0));
    }
    let t = vb.get_with_hints(shape, name, Init::Const(0.0))?;
    if let Some(bound) = bound {
        let prefix = vb.prefix();
        let full = if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(super::seeded::fnv1a(&full));
        let n = shape.0 * shape.1;
        let vals: Vec<f32> = (0..n).map(|_| (-bound + 2.0 * bound * rng.random::<f64>()) as f32).collect();
        let src = Tensor::from_vec(vals, shape, &Device::Cpu)?.to_dtype(t.dtype())?.to_device(t.device())?;
        // In-place write into the storage the Var shares with `t`.
        t.slice_set(&src, 0, 0)?;
    }
    Ok(t)
}

impl LoraLinear {
    /// Plain frozen linear (no adapter). weight [out, in], bias [out]. Both are detached, so
    /// even a Var's tensor passed here is frozen.
    pub fn frozen(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight: BaseWeight::Dense(weight.detach()), bias: bias.map(|b| b.detach()), adapter: None }
    }

    /// Frozen linear on a quantized weight [out, in] (inference only: activations run in f32),
    /// bias [out] f32.
    pub fn quantized(weight: QuantWeight, bias: Option<Tensor>) -> Self {
        Self { weight: BaseWeight::Quantized(weight), bias: bias.map(|b| b.detach()), adapter: None }
    }

    /// Plain linear whose weight and bias stay tracked (full fine-tuning of a model trained from
    /// scratch, such as the demo teacher). weight [out, in], bias [out].
    pub fn trainable(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight: BaseWeight::Dense(weight), bias, adapter: None }
    }

    /// [`LoraLinear::with_adapter_seeded`] with seed 0.
    pub fn with_adapter(self, vb: VarBuilder, r: usize, alpha: f64, dropout: f64) -> candle_core::Result<Self> {
        self.with_adapter_seeded(vb, r, alpha, dropout, 0)
    }

    /// Adds an adapter whose A/B are obtained from `vb` as `lora_A.weight` [r, in] and
    /// `lora_B.weight` [out, r] (`vb` is the module's path, e.g.
    /// `model.layers.0.self_attn.q_proj`). With a VarMap-backed `vb` they are trainable Vars.
    ///
    /// Fresh tensors are initialized as PEFT does: A ~ U(-1/√in, 1/√in) drawn from ChaCha8
    /// seeded with `seed` on the stream fnv1a(`<vb prefix>.lora_A.weight`), B = 0. So the same
    /// (seed, name) gives the same A on every run and platform, whatever the creation order.
    /// Tensors the backend already holds (e.g. an adapter put into the VarMap with
    /// [`insert_adapter`], or a builder over checkpoint tensors) are used as they are.
    /// Scale = alpha / r; `dropout` applies to the adapter branch's input in training.
    pub fn with_adapter_seeded(
        mut self,
        vb: VarBuilder,
        r: usize,
        alpha: f64,
        dropout: f64,
        seed: u64,
    ) -> candle_core::Result<Self> {
        if r == 0 {
            candle_core::bail!("LoRA rank r must be > 0 ({})", vb.prefix())
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            candle_core::bail!("LoRA alpha = {alpha} must be finite and > 0 ({})", vb.prefix())
        }
        if !(0.0..1.0).contains(&dropout) {
            candle_core::bail!("LoRA dropout = {dropout} is not in [0, 1) ({})", vb.prefix())
        }
        let (out_dim, in_dim) = self.weight.dims()?;
        let a = adapter_tensor(&vb, (r, in_dim), LORA_A, Some(1.0 / (in_dim as f64).sqrt()), seed)?;
        let b = adapter_tensor(&vb, (out_dim, r), LORA_B, None, seed)?;
        self.adapter = Some(Adapter { a, b, scale: alpha / r as f64, dropout });
        Ok(self)
    }

    /// x [.., in] -> [.., out] (any rank >= 1):
    /// y = x Wᵀ + b + (alpha / r) · dropout(x) Aᵀ Bᵀ. `dropout` = `Some(rng)` is training
    /// (masks drawn from `rng`), `None` is eval. x must have W's dtype; the adapter branch runs
    /// in the adapter's dtype and is cast back.
    pub fn forward_t(&self, x: &Tensor, dropout: Option<&mut DropoutRng>) -> candle_core::Result<Tensor> {
        let (out_dim, in_dim) = self.weight.dims()?;
        let dims = x.dims().to_vec();
        let Some((&last, lead)) = dims.split_last() else {
            candle_core::bail!("LoraLinear: input is a scalar, expected [.., {in_dim}]")
        };
        if last != in_dim {
            candle_core::bail!("LoraLinear: input {dims:?} does not end in in_features = {in_dim}")
        }
        let n: usize = lead.iter().product();
        let x2 = x.reshape((n, in_dim))?;
        let mut y = match &self.weight {
            BaseWeight::Dense(w) => x2.matmul(&w.t()?)?,
            BaseWeight::Quantized(q) => q.forward(&x2)?.to_dtype(x2.dtype())?,
        };
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        if let Some(ad) = &self.adapter {
            let h = match dropout {
                Some(rng) => rng.apply(&x2, ad.dropout)?,
                None => x2,
            };
            let h = if h.dtype() == ad.a.dtype() { h } else { h.to_dtype(ad.a.dtype())? };
            let delta = h.matmul(&ad.a.t()?)?.matmul(&ad.b.t()?)?.affine(ad.scale, 0.0)?;
            let delta = if delta.dtype() == y.dtype() { delta } else { delta.to_dtype(y.dtype())? };
            y = (y + delta)?;
        }
        let mut out_dims = lead.to_vec();
        out_dims.push(out_dim);
        y.reshape(out_dims)
    }

    /// Eval forward (no dropout).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_t(x, None)
    }

    /// Folds the adapter into the base weight, W += (alpha / r) B A (computed in f32, stored in
    /// W's dtype), and drops it. The adapter's Vars stay in their VarMap but no longer affect
    /// this layer. No-op without an adapter; on error the layer is unchanged.
    pub fn merge(&mut self) -> candle_core::Result<()> {
        let Some(ad) = &self.adapter else {
            return Ok(());
        };
        let BaseWeight::Dense(weight) = &self.weight else {
            candle_core::bail!("cannot merge a LoRA adapter into quantized weights: load the base in f32")
        };
        let a = ad.a.detach().to_dtype(DType::F32)?;
        let b = ad.b.detach().to_dtype(DType::F32)?;
        let delta = b.matmul(&a)?.affine(ad.scale, 0.0)?.to_device(weight.device())?;
        let merged = (weight.to_dtype(DType::F32)? + delta)?.to_dtype(weight.dtype())?;
        self.weight = BaseWeight::Dense(merged.detach());
        self.adapter = None;
        Ok(())
    }

    pub fn has_adapter(&self) -> bool {
        self.adapter.is_some()
    }

    /// The base weight [out, in] when it is a plain tensor; `None` when quantized.
    pub fn weight(&self) -> Option<&Tensor> {
        match &self.weight {
            BaseWeight::Dense(w) => Some(w),
            BaseWeight::Quantized(_) => None,
        }
    }

    /// (out, in).
    pub fn dims(&self) -> candle_core::Result<(usize, usize)> {
        self.weight.dims()
    }

    /// The frozen base bias [out].
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// A [r, in] (the Var's tensor), when an adapter is attached.
    pub fn lora_a(&self) -> Option<&Tensor> {
        self.adapter.as_ref().map(|a| &a.a)
    }

    /// B [out, r] (the Var's tensor), when an adapter is attached.
    pub fn lora_b(&self) -> Option<&Tensor> {
        self.adapter.as_ref().map(|a| &a.b)
    }

    /// alpha / r, when an adapter is attached.
    pub fn scale(&self) -> Option<f64> {
        self.adapter.as_ref().map(|a| a.scale)
    }
}

// ---------------------------------------------------------------------------------------------
// Adapter tensors and PEFT files
// ---------------------------------------------------------------------------------------------

/// Which half of a pair a name is, and its module path (`model.layers.0.self_attn.q_proj`).
fn split_lora_name(name: &str) -> Option<(&str, usize)> {
    if let Some(stem) = name.strip_suffix(LORA_A).and_then(|s| s.strip_suffix('.')) {
        return Some((stem, 0));
    }
    name.strip_suffix(LORA_B).and_then(|s| s.strip_suffix('.')).map(|stem| (stem, 1))
}

/// Checks `tensors` (our names) against `cfg`: every name is `<path>.<module>.lora_{A,B}.weight`
/// with `<module>` in `cfg.target_modules`, A and B come in pairs, A is [r, in], B is [out, r],
/// all are floating point, and there is at least one pair.
pub fn check_adapter_tensors(cfg: &LoraConfig, tensors: &HashMap<String, Tensor>) -> Result<(), LoraError> {
    let m = mismatch(cfg, tensors.iter().map(|(k, v)| (k.as_str(), v)));
    if !m.is_empty() {
        return Err(LoraError::Tensors(Box::new(m)));
    }
    if tensors.is_empty() {
        return Err(LoraError::NoAdapter);
    }
    Ok(())
}

pub(crate) fn mismatch<'a>(cfg: &LoraConfig, tensors: impl Iterator<Item = (&'a str, &'a Tensor)>) -> AdapterMismatch {
    let mut m = AdapterMismatch::default();
    let mut pairs: BTreeMap<&str, [Option<&Tensor>; 2]> = BTreeMap::new();
    for (name, t) in tensors {
        let Some((stem, half)) = split_lora_name(name) else {
            m.unknown.push(name.to_string());
            continue;
        };
        let module = stem.rsplit('.').next().unwrap_or(stem);
        if !cfg.targets(module) {
            m.unknown.push(name.to_string());
            continue;
        }
        if !t.dtype().is_float() {
            m.bad_dtype.push((name.to_string(), t.dtype()));
        }
        pairs.entry(stem).or_default()[half] = Some(t);
    }
    for (stem, [a, b]) in pairs {
        match a {
            None => m.missing.push(format!("{stem}.{LORA_A}")),
            Some(a) if a.rank() != 2 || a.dims()[0] != cfg.r => {
                m.bad_shape.push(format!("{stem}.{LORA_A} has shape {:?}, expected [r = {}, in]", a.dims(), cfg.r))
            }
            Some(_) => {}
        }
        match b {
            None => m.missing.push(format!("{stem}.{LORA_B}")),
            Some(b) if b.rank() != 2 || b.dims()[1] != cfg.r => {
                m.bad_shape.push(format!("{stem}.{LORA_B} has shape {:?}, expected [out, r = {}]", b.dims(), cfg.r))
            }
            Some(_) => {}
        }
    }
    m.unknown.sort();
    m.missing.sort();
    m.bad_shape.sort();
    m.bad_dtype.sort_by(|a, b| a.0.cmp(&b.0));
    m
}

/// The adapter tensors of `varmap` (names ending in `.lora_A.weight` / `.lora_B.weight`; other
/// variables are not part of an adapter and are left out), current values, detached.
pub fn adapter_tensors(varmap: &VarMap) -> Result<HashMap<String, Tensor>, LoraError> {
    let data = varmap.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
    Ok(data
        .iter()
        .filter(|(k, _)| split_lora_name(k).is_some())
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect())
}

/// Puts adapter tensors (our names, e.g. from [`load_adapter`]) into `varmap` as Vars of
/// `dtype` on `device`, so that [`LoraLinear::with_adapter`] picks them up instead of a fresh
/// init (to continue training, or to evaluate). An existing Var of the same name is overwritten
/// and must have the same shape.
pub fn insert_adapter(
    varmap: &VarMap,
    tensors: &HashMap<String, Tensor>,
    dtype: DType,
    device: &Device,
) -> Result<(), LoraError> {
    let mut data = varmap.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let t = tensors[name].to_dtype(dtype)?.to_device(device)?;
        match data.get(name) {
            Some(var) => {
                if var.dims() != t.dims() {
                    return Err(LoraError::Tensors(Box::new(AdapterMismatch {
                        bad_shape: vec![format!(
                            "{name} has shape {:?}, the VarMap's variable has {:?}",
                            t.dims(),
                            var.dims()
                        )],
                        ..AdapterMismatch::default()
                    })));
                }
                var.set(&t)?;
            }
            None => {
                data.insert(name.clone(), Var::from_tensor(&t)?);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn cpu() -> Device {
        Device::Cpu
    }

    pub(crate) fn t2(rows: &[&[f32]]) -> Tensor {
        let r = rows.len();
        let c = rows[0].len();
        Tensor::from_vec(rows.concat(), (r, c), &cpu()).unwrap()
    }

    pub(crate) fn var_of(vm: &VarMap, name: &str) -> Var {
        vm.data().lock().unwrap().get(name).unwrap().clone()
    }

    pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Deterministic test input with values in [-1, 1).
    pub(crate) fn input(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        Tensor::from_vec(v, shape, &cpu()).unwrap()
    }

    /// W [3, 2] = [[1, 0], [0, 1], [1, 1]], b = [0.5, -0.5, 0].
    pub(crate) fn small_layer() -> LoraLinear {
        LoraLinear::frozen(
            t2(&[&[1., 0.], &[0., 1.], &[1., 1.]]),
            Some(Tensor::new(&[0.5f32, -0.5, 0.], &cpu()).unwrap()),
        )
    }

    #[test]
    fn forward_by_hand() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &cpu());
        // r = 1, alpha = 2: scale 2.
        let layer = small_layer().with_adapter(vb.pp("layer"), 1, 2.0, 0.0).unwrap();
        assert!(layer.has_adapter());
        let x = t2(&[&[1., 2.], &[-1., 0.5]]);
        // Base: x Wᵀ + b. Row 0: [1, 2, 3] + b = [1.5, 1.5, 3]. Row 1: [-1, 0.5, -0.5] + b = [-0.5, 0, -0.5].
        let base = [[1.5f32, 1.5, 3.0], [-0.5, 0.0, -0.5]];
        assert_eq!(layer.forward(&x).unwrap().to_vec2::<f32>().unwrap(), base);
        assert_eq!(
            LoraLinear::frozen(layer.weight().unwrap().clone(), layer.bias().cloned())
                .forward(&x)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap(),
            base
        );
        // A init: U(-1/√2, 1/√2), not constant.
        let a = layer.lora_a().unwrap().to_vec2::<f32>().unwrap();
        let bound = 1.0 / 2f32.sqrt();
        assert!(a[0].iter().all(|v| v.abs() <= bound) && a[0][0] != a[0][1], "{a:?}");
        assert_eq!(layer.lora_b().unwrap().to_vec2::<f32>().unwrap(), vec![vec![0f32]; 3]);

        // A = [[1, -1]], B = [[1], [2], [0]]. x Aᵀ = [1 - 2, -1 - 0.5] = [-1, -1.5];
        // times Bᵀ: row 0 [-1, -2, 0], row 1 [-1.5, -3, 0]; times scale 2: [-2, -4, 0], [-3, -6, 0].
        // y = base + that = [[-0.5, -2.5, 3], [-3.5, -6, -0.5]].
        var_of(&vm, "layer.lora_A.weight").set(&t2(&[&[1., -1.]])).unwrap();
        var_of(&vm, "layer.lora_B.weight").set(&t2(&[&[1.], &[2.], &[0.]])).unwrap();
        let y = layer.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(y, [[-0.5f32, -2.5, 3.0], [-3.5, -6.0, -0.5]]);

        // Rank 3 [2, 1, 2] and rank 1 give the same rows.
        let y3 = layer.forward(&x.reshape((2, 1, 2)).unwrap()).unwrap();
        assert_eq!(y3.dims(), [2, 1, 3]);
        assert_eq!(y3.reshape((2, 3)).unwrap().to_vec2::<f32>().unwrap(), y);
        let y1 = layer.forward(&Tensor::new(&[1f32, 2.], &cpu()).unwrap()).unwrap();
        assert_eq!(y1.to_vec1::<f32>().unwrap(), y[0]);
        assert!(layer.forward(&Tensor::zeros((2, 3), DType::F32, &cpu()).unwrap()).is_err());
    }

    #[test]
    fn seeded_init_is_deterministic_and_keyed_by_name() {
        let make = |seed: u64, path: &str| {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &cpu());
            let w = Tensor::zeros((5, 6), DType::F32, &cpu()).unwrap();
            let l = LoraLinear::frozen(w, None).with_adapter_seeded(vb.pp(path), 4, 8.0, 0.0, seed).unwrap();
            // The VarMap holds the seeded values (in-place init of the Var).
            let in_map = var_of(&vm, &format!("{path}.lora_A.weight")).as_tensor().to_vec2::<f32>().unwrap();
            let a = l.lora_a().unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(a, in_map);
            assert_eq!(l.scale(), Some(2.0));
            a
        };
        let p = "model.layers.0.self_attn.q_proj";
        assert_eq!(make(1, p), make(1, p));
        assert_ne!(make(1, p), make(2, p));
        assert_ne!(make(1, p), make(1, "model.layers.1.self_attn.q_proj"));
        let bound = 1.0 / 6f32.sqrt();
        assert!(make(3, p).iter().flatten().all(|v| v.abs() <= bound));
        // with_adapter is seed 0.
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &cpu());
        let l = LoraLinear::frozen(Tensor::zeros((5, 6), DType::F32, &cpu()).unwrap(), None)
            .with_adapter(vb.pp(p), 4, 8.0, 0.0)
            .unwrap();
        assert_eq!(l.lora_a().unwrap().to_vec2::<f32>().unwrap(), make(0, p));
        // Bad hyper-parameters.
        let w = || LoraLinear::frozen(Tensor::zeros((5, 6), DType::F32, &cpu()).unwrap(), None);
        assert!(w().with_adapter(vb.pp("x"), 0, 8.0, 0.0).is_err());
        assert!(w().with_adapter(vb.pp("y"), 2, 8.0, 1.0).is_err());
        assert!(w().with_adapter(vb.pp("z"), 2, f64::NAN, 0.0).is_err());
    }

    #[test]
    fn gradients_reach_a_and_b_only() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &cpu());
        let w = input(&[3, 4], 10);
        let bias = input(&[3], 11);
        let layer = LoraLinear::frozen(w.clone(), Some(bias.clone())).with_adapter(vb.pp("l"), 2, 4.0, 0.1).unwrap();
        let x = input(&[2, 5, 4], 12);
        let (va, vb_) = (var_of(&vm, "l.lora_A.weight"), var_of(&vm, "l.lora_B.weight"));
        let loss = |layer: &LoraLinear| {
            let mut rng = DropoutRng::new(5);
            layer.forward_t(&x, Some(&mut rng)).unwrap().sqr().unwrap().sum_all().unwrap()
        };
        // B = 0: dL/dA = scale · Bᵀ (dL/dy)ᵀ h = 0 exactly; dL/dB = scale · (dL/dy)ᵀ (h Aᵀ) != 0.
        let grads = loss(&layer).backward().unwrap();
        let ga = grads.get(va.as_tensor()).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        let gb = grads.get(vb_.as_tensor()).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(ga, 0.0);
        assert!(gb > 0.0);
        assert!(grads.get(layer.weight().unwrap()).is_none() && grads.get(layer.bias().unwrap()).is_none());
        assert!(grads.get(&w).is_none());

        // B != 0: A receives a non-zero gradient too; the optimizer finds a gradient for every
        // Var of the map and leaves the base weight alone.
        vb_.set(&input(&[3, 2], 13)).unwrap();
        let grads = loss(&layer).backward().unwrap();
        let ga = grads.get(va.as_tensor()).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(ga > 0.0);
        let mut opt = crate::optim::AdamW::new(&vm, crate::optim::AdamWConfig::default()).unwrap();
        assert_eq!(opt.vars().len(), 2);
        let before = layer.weight().unwrap().to_vec2::<f32>().unwrap();
        let a_before = va.as_tensor().to_vec2::<f32>().unwrap();
        opt.step(&grads, 1e-2).unwrap();
        assert_eq!(layer.weight().unwrap().to_vec2::<f32>().unwrap(), before);
        assert_ne!(va.as_tensor().to_vec2::<f32>().unwrap(), a_before);
        // The layer sees the updated Var (shared storage).
        assert_eq!(layer.lora_a().unwrap().to_vec2::<f32>().unwrap(), va.as_tensor().to_vec2::<f32>().unwrap());

        // A Var passed to `frozen` is detached: no gradient flows to it.
        let wv = Var::from_tensor(&w).unwrap();
        let frozen = LoraLinear::frozen(wv.as_tensor().clone(), None);
        let g = frozen.forward(&x).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(g.get(wv.as_tensor()).is_none());
    }

    #[test]
    fn merge_preserves_outputs() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &cpu());
        let mut layer = LoraLinear::frozen(input(&[6, 8], 20), Some(input(&[6], 21)))
            .with_adapter(vb.pp("m"), 3, 6.0, 0.3)
            .unwrap();
        var_of(&vm, "m.lora_B.weight").set(&input(&[6, 3], 22)).unwrap();
        let x = input(&[2, 4, 8], 23);
        let before = layer.forward(&x).unwrap();
        let w_before = layer.weight().unwrap().clone();
        layer.merge().unwrap();
        assert!(!layer.has_adapter() && layer.lora_a().is_none() && layer.scale().is_none());
        let after = layer.forward(&x).unwrap();
        assert!(max_abs_diff(&before, &after) < 1e-5, "{}", max_abs_diff(&before, &after));
        assert!(max_abs_diff(&w_before, layer.weight().unwrap()) > 1e-3);
        // Merging again is a no-op.
        layer.merge().unwrap();
        assert_eq!(max_abs_diff(&after, &layer.forward(&x).unwrap()), 0.0);
    }

    #[test]
    fn dropout_is_seeded_and_train_only() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &cpu());
        let layer = LoraLinear::frozen(input(&[4, 8], 30), None).with_adapter(vb.pp("d"), 2, 2.0, 0.5).unwrap();
        var_of(&vm, "d.lora_B.weight").set(&input(&[4, 2], 31)).unwrap();
        let x = input(&[3, 8], 32);
        let run = |seed: u64| layer.forward_t(&x, Some(&mut DropoutRng::new(seed))).unwrap();
        assert_eq!(max_abs_diff(&run(7), &run(7)), 0.0);
        assert!(max_abs_diff(&run(7), &run(8)) > 0.0);
        assert!(max_abs_diff(&run(7), &layer.forward(&x).unwrap()) > 0.0);
        // Eval is deterministic and equals forward_t(None).
        assert_eq!(max_abs_diff(&layer.forward_t(&x, None).unwrap(), &layer.forward(&x).unwrap()), 0.0);
    }

    #[test]
    fn adapter_in_another_dtype() {
        // Base in f32, adapter Vars in f64 (as when the base runs in bf16 and the adapter in
        // f32): the adapter branch is cast and the result is the f32 one.
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &cpu());
        let layer = small_layer().with_adapter(vb.pp("layer"), 1, 2.0, 0.0).unwrap();
        assert_eq!(layer.lora_a().unwrap().dtype(), DType::F64);
        var_of(&vm, "layer.lora_A.weight").set(&t2(&[&[1., -1.]]).to_dtype(DType::F64).unwrap()).unwrap();
        var_of(&vm, "layer.lora_B.weight").set(&t2(&[&[1.], &[2.], &[0.]]).to_dtype(DType::F64).unwrap()).unwrap();
        let y = layer.forward(&t2(&[&[1., 2.]])).unwrap();
        assert_eq!(y.dtype(), DType::F32);
        assert_eq!(y.to_vec2::<f32>().unwrap(), [[-0.5f32, -2.5, 3.0]]);
        let mut merged = layer.clone();
        merged.merge().unwrap();
        assert_eq!(merged.weight().unwrap().dtype(), DType::F32);
        assert_eq!(merged.forward(&t2(&[&[1., 2.]])).unwrap().to_vec2::<f32>().unwrap(), [[-0.5f32, -2.5, 3.0]]);
    }
}
