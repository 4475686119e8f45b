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
//! ChaCha8 stream keyed by (seed, full var name) with the [`crate::models::bert`] convention,
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
//! every name carries PEFT's [`PEFT_PREFIX`] `base_model.model.`, e.g.
//! `base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight`; PEFT's in-memory names
//! with the adapter name (`lora_A.default.weight`) are accepted on read. `adapter_config.json`
//! carries PEFT's `LoraConfig` fields. Features that change the forward pass or the base
//! weights (DoRA, rsLoRA, biases, `fan_in_fan_out`, rank/alpha patterns, extra saved modules,
//! ...) are refused with a message naming them, never ignored.
//!
//! File I/O is confined to [`save_adapter`], [`load_adapter`], [`load_adapter_info`] and
//! [`adapter_hash`]; [`encode_adapter`] and [`decode_adapter`] do the work on bytes.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::models::bert::DropoutRng;

/// Weights file of a PEFT adapter directory.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Config file of a PEFT adapter directory.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// Prefix PEFT puts before the base model's module paths in saved adapters.
pub const PEFT_PREFIX: &str = "base_model.model.";
/// The linear modules of a Qwen2 decoder layer that can carry an adapter (PEFT names).
pub const PEFT_TARGET_MODULES: [&str; 7] =
    ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
/// Leaf name of the down-projection A [r, in].
pub const LORA_A: &str = "lora_A.weight";
/// Leaf name of the up-projection B [out, r].
pub const LORA_B: &str = "lora_B.weight";
/// `init_lora_weights` values that only affect the initialization of A/B (not the base
/// weights), so an adapter trained with them applies to the unchanged base model.
const BASE_PRESERVING_INITS: [&str; 3] = ["gaussian", "eva", "orthogonal"];

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
    #[error("{ADAPTER_CONFIG_FILE}: {0}")]
    ConfigJson(#[from] serde_json::Error),
    #[error("{ADAPTER_WEIGHTS_FILE}: {0}")]
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
    fn is_empty(&self) -> bool {
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

/// A frozen linear layer with an optional LoRA adapter (see the module docs for the formula).
#[derive(Debug, Clone)]
pub struct LoraLinear {
    /// [out, in]; detached (frozen) unless built by [`LoraLinear::trainable`].
    weight: Tensor,
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
        Self { weight: weight.detach(), bias: bias.map(|b| b.detach()), adapter: None }
    }

    /// Plain linear whose weight and bias stay tracked (full fine-tuning of a model trained from
    /// scratch, such as the demo teacher). weight [out, in], bias [out].
    pub fn trainable(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias, adapter: None }
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
        let (out_dim, in_dim) = self.weight.dims2()?;
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
        let (out_dim, in_dim) = self.weight.dims2()?;
        let dims = x.dims().to_vec();
        let Some((&last, lead)) = dims.split_last() else {
            candle_core::bail!("LoraLinear: input is a scalar, expected [.., {in_dim}]")
        };
        if last != in_dim {
            candle_core::bail!("LoraLinear: input {dims:?} does not end in in_features = {in_dim}")
        }
        let n: usize = lead.iter().product();
        let x2 = x.reshape((n, in_dim))?;
        let mut y = x2.matmul(&self.weight.t()?)?;
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
        let a = ad.a.detach().to_dtype(DType::F32)?;
        let b = ad.b.detach().to_dtype(DType::F32)?;
        let delta = b.matmul(&a)?.affine(ad.scale, 0.0)?.to_device(self.weight.device())?;
        let merged = (self.weight.to_dtype(DType::F32)? + delta)?.to_dtype(self.weight.dtype())?;
        self.weight = merged.detach();
        self.adapter = None;
        Ok(())
    }

    pub fn has_adapter(&self) -> bool {
        self.adapter.is_some()
    }

    /// The frozen base weight [out, in].
    pub fn weight(&self) -> &Tensor {
        &self.weight
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

fn mismatch<'a>(cfg: &LoraConfig, tensors: impl Iterator<Item = (&'a str, &'a Tensor)>) -> AdapterMismatch {
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

/// The two files of a PEFT adapter directory, as bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterFiles {
    /// `adapter_config.json`.
    pub config_json: String,
    /// `adapter_model.safetensors`.
    pub weights: Vec<u8>,
}

impl AdapterFiles {
    /// sha256 (lower-case hex) of the weights file: the adapter's identity.
    pub fn hash(&self) -> String {
        sha256_hex(&self.weights)
    }
}

/// An adapter read back from PEFT files.
#[derive(Debug, Clone)]
pub struct LoadedAdapter {
    pub config: LoraConfig,
    /// Our names (no `base_model.model.` prefix, no `.default`), on the CPU, as stored.
    pub tensors: HashMap<String, Tensor>,
    /// `base_model_name_or_path` of the config, if any.
    pub base_model_name_or_path: Option<String>,
    /// sha256 hex of `adapter_model.safetensors`.
    pub hash: String,
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// An f64 as JSON, written as an integer when it is one (PEFT writes `lora_alpha: 16`).
fn json_number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// PEFT `adapter_config.json` for `cfg` (keys sorted, as PEFT writes them).
pub fn peft_config_json(cfg: &LoraConfig, base_model_name: &str) -> String {
    let v = json!({
        "alpha_pattern": {},
        "base_model_name_or_path": base_model_name,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_to_transform": null,
        "lora_alpha": json_number(cfg.alpha),
        "lora_dropout": cfg.dropout,
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": cfg.r,
        "rank_pattern": {},
        "revision": null,
        "target_modules": cfg.target_modules,
        "task_type": "CAUSAL_LM",
        "use_dora": false,
        "use_rslora": false,
    });
    // json! objects are key-sorted maps; keep the order explicit should serde_json's
    // `preserve_order` feature be switched on by another crate.
    let sorted: BTreeMap<String, Value> = match v {
        Value::Object(m) => m.into_iter().collect(),
        other => return crate::io::pretty_json(&other),
    };
    crate::io::pretty_json(&sorted)
}

/// Parses a PEFT `adapter_config.json` into our config and `base_model_name_or_path`. Refuses
/// (listing every reason) what would change the forward pass or the base weights: a
/// `peft_type` other than LORA, a `task_type` other than CAUSAL_LM, `target_modules` given as a
/// pattern or naming other modules, `bias` other than "none", `fan_in_fan_out`, `use_dora`,
/// `use_rslora`, `lora_bias`, `use_qalora`, `modules_to_save`, `layers_to_transform`,
/// `layer_replication`, `rank_pattern`/`alpha_pattern`, `trainable_token_indices`,
/// `target_parameters`, and `init_lora_weights` schemes that rewrite the base weights
/// (PiSSA, OLoRA, LoftQ, CorDA, ...). Other keys are ignored.
pub fn parse_peft_config(json: &str) -> Result<(LoraConfig, Option<String>), LoraError> {
    let v: Value = serde_json::from_str(json)?;
    let Value::Object(obj) = v else {
        return Err(LoraError::InvalidConfig(format!("{ADAPTER_CONFIG_FILE} is not a JSON object")));
    };
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let invalid = |k: &str, want: &str| LoraError::InvalidConfig(format!("{k} = {} is not {want}", show(get(k))));
    let mut unsupported = Vec::new();

    match get("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        _ => unsupported.push(format!("peft_type = {}; only \"LORA\" is supported", show(get("peft_type")))),
    }
    match get("task_type") {
        None => {}
        Some(Value::String(s)) if s == "CAUSAL_LM" => {}
        Some(other) => unsupported.push(format!("task_type = {other}; only \"CAUSAL_LM\" is supported")),
    }
    let r = match get("r").and_then(Value::as_u64) {
        Some(r) if r > 0 => r as usize,
        _ => return Err(invalid("r", "a positive integer")),
    };
    let alpha = get("lora_alpha").and_then(Value::as_f64).ok_or_else(|| invalid("lora_alpha", "a number"))?;
    let dropout = match get("lora_dropout") {
        None => 0.0,
        Some(d) => d.as_f64().ok_or_else(|| invalid("lora_dropout", "a number"))?,
    };
    let target_modules = match get("target_modules") {
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str() {
                    Some(s) if PEFT_TARGET_MODULES.contains(&s) => out.push(s.to_string()),
                    Some(s) => unsupported.push(format!(
                        "target module {s:?}; only the decoder-layer linears {PEFT_TARGET_MODULES:?} can carry adapters"
                    )),
                    None => return Err(invalid("target_modules", "a list of module names")),
                }
            }
            out
        }
        Some(Value::String(s)) => {
            unsupported.push(format!(
                "target_modules = {s:?} is a pattern; only an explicit list of module names is supported"
            ));
            Vec::new()
        }
        _ => return Err(invalid("target_modules", "a list of module names")),
    };
    match get("bias") {
        None => {}
        Some(Value::String(s)) if s == "none" => {}
        Some(other) => unsupported.push(format!("bias = {other}; only \"none\" is supported (trained biases)")),
    }
    for (key, what) in [
        ("fan_in_fan_out", "fan_in_fan_out = true (transposed Conv1D weights)"),
        ("use_dora", "use_dora = true (DoRA changes the forward pass)"),
        ("use_rslora", "use_rslora = true (rsLoRA scale alpha/√r)"),
        ("lora_bias", "lora_bias = true (a trained bias on B)"),
        ("use_qalora", "use_qalora = true (QA-LoRA pooling)"),
    ] {
        match get(key) {
            None | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => unsupported.push(what.to_string()),
            Some(_) => return Err(invalid(key, "a boolean")),
        }
    }
    for key in ["modules_to_save", "trainable_token_indices", "target_parameters"] {
        let empty = match get(key) {
            None => true,
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            Some(_) => false,
        };
        if !empty {
            unsupported.push(format!("{key} = {} (extra trained parameters)", show(get(key))));
        }
    }
    for key in ["layers_to_transform", "layer_replication"] {
        if let Some(v) = get(key) {
            unsupported.push(format!("{key} = {v} (adapters on a subset or copies of the layers)"));
        }
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        match get(key) {
            None => {}
            Some(Value::Object(o)) if o.is_empty() => {}
            Some(v) => unsupported.push(format!("{key} = {v} (per-module ranks or alphas)")),
        }
    }
    match get("init_lora_weights") {
        None | Some(Value::Bool(_)) => {}
        Some(Value::String(s)) if BASE_PRESERVING_INITS.contains(&s.as_str()) => {}
        Some(other) => unsupported.push(format!(
            "init_lora_weights = {other} (an init that rewrites the base weights; the adapter needs that modified base)"
        )),
    }
    if !unsupported.is_empty() {
        return Err(LoraError::Unsupported(unsupported));
    }
    let base = get("base_model_name_or_path").and_then(Value::as_str).map(str::to_string);
    let cfg = LoraConfig { r, alpha, dropout, target_modules };
    cfg.validate()?;
    Ok((cfg, base))
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "null".to_string(), Value::to_string)
}

/// Serializes an adapter (our names, see [`check_adapter_tensors`]) to PEFT's two files:
/// tensors under `base_model.model.<name>` with safetensors metadata `{"format": "pt"}` (as
/// PEFT/transformers write), in their own dtype; the config from [`peft_config_json`].
/// Deterministic: the same tensors and config give the same bytes.
pub fn encode_adapter(
    tensors: &HashMap<String, Tensor>,
    cfg: &LoraConfig,
    base_model_name: &str,
) -> Result<AdapterFiles, LoraError> {
    cfg.validate()?;
    check_adapter_tensors(cfg, tensors)?;
    let mut named = BTreeMap::new();
    for (name, t) in tensors {
        named.insert(format!("{PEFT_PREFIX}{name}"), t.detach().to_device(&Device::Cpu)?.contiguous()?);
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let weights = safetensors::serialize(&named, Some(metadata))?;
    Ok(AdapterFiles { config_json: peft_config_json(cfg, base_model_name), weights })
}

/// Our name for a PEFT tensor name: strips `base_model.model.` and the adapter name in
/// `lora_{A,B}.default.weight`. `None` when the prefix is absent.
fn from_peft_name(peft: &str) -> Option<String> {
    let rest = peft.strip_prefix(PEFT_PREFIX)?;
    for half in ["lora_A", "lora_B"] {
        if let Some(stem) = rest.strip_suffix(&format!(".{half}.default.weight")) {
            return Some(format!("{stem}.{half}.weight"));
        }
    }
    Some(rest.to_string())
}

/// Reads PEFT's two files from bytes (see [`parse_peft_config`] for what is refused). Tensor
/// names map back to ours; problems are reported with the names as written in the file.
pub fn decode_adapter(config_json: &str, weights: &[u8]) -> Result<LoadedAdapter, LoraError> {
    let (config, base_model_name_or_path) = parse_peft_config(config_json)?;
    let raw = candle_core::safetensors::load_buffer(weights, &Device::Cpu)?;
    let mut file_names: Vec<&String> = raw.keys().collect();
    file_names.sort();
    let mut problems = AdapterMismatch::default();
    let mut original: HashMap<String, String> = HashMap::new();
    let mut tensors = HashMap::new();
    for file_name in file_names {
        let Some(ours) = from_peft_name(file_name) else {
            problems.unknown.push(file_name.clone());
            continue;
        };
        if let Some(first) = original.get(&ours) {
            problems.duplicate.push(format!("{first} / {file_name}"));
            continue;
        }
        original.insert(ours.clone(), file_name.clone());
        tensors.insert(ours, raw[file_name].clone());
    }
    let m = mismatch(&config, tensors.iter().map(|(k, v)| (k.as_str(), v)));
    let file_name = |ours: &str| original.get(ours).cloned().unwrap_or_else(|| format!("{PEFT_PREFIX}{ours}"));
    problems.unknown.extend(m.unknown.iter().map(|n| file_name(n)));
    problems.missing.extend(m.missing.iter().map(|n| file_name(n)));
    problems.bad_shape.extend(m.bad_shape.iter().map(|s| format!("{PEFT_PREFIX}{s}")));
    problems.bad_dtype.extend(m.bad_dtype.iter().map(|(n, d)| (file_name(n), *d)));
    problems.unknown.sort();
    if !problems.is_empty() {
        return Err(LoraError::Tensors(Box::new(problems)));
    }
    if tensors.is_empty() {
        return Err(LoraError::NoAdapter);
    }
    Ok(LoadedAdapter { config, tensors, base_model_name_or_path, hash: sha256_hex(weights) })
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LoraError + '_ {
    move |source| LoraError::Io { path: path.to_path_buf(), source }
}

/// Writes the adapter variables of `varmap` (see [`adapter_tensors`]) as a PEFT adapter in
/// `dir`: `adapter_model.safetensors` then `adapter_config.json`, each atomically (temp file,
/// fsync, rename). Returns the adapter hash (sha256 hex of the weights file).
pub fn save_adapter(dir: &Path, varmap: &VarMap, cfg: &LoraConfig, base_model_name: &str) -> Result<String, LoraError> {
    let files = encode_adapter(&adapter_tensors(varmap)?, cfg, base_model_name)?;
    let weights_path = dir.join(ADAPTER_WEIGHTS_FILE);
    crate::io::write_atomic(&weights_path, &files.weights).map_err(io_err(&weights_path))?;
    let config_path = dir.join(ADAPTER_CONFIG_FILE);
    crate::io::write_atomic(&config_path, files.config_json.as_bytes()).map_err(io_err(&config_path))?;
    Ok(files.hash())
}

/// Reads a PEFT adapter directory: config, tensors (our names, CPU), base model name, hash.
pub fn load_adapter_info(dir: &Path) -> Result<LoadedAdapter, LoraError> {
    let config_path = dir.join(ADAPTER_CONFIG_FILE);
    let config_json = std::fs::read_to_string(&config_path).map_err(io_err(&config_path))?;
    let weights_path = dir.join(ADAPTER_WEIGHTS_FILE);
    let weights = std::fs::read(&weights_path).map_err(io_err(&weights_path))?;
    decode_adapter(&config_json, &weights)
}

/// Reads a PEFT adapter directory: its config and tensors (our names, on the CPU).
pub fn load_adapter(dir: &Path) -> Result<(LoraConfig, HashMap<String, Tensor>), LoraError> {
    let a = load_adapter_info(dir)?;
    Ok((a.config, a.tensors))
}

/// The adapter's identity: sha256 hex of `dir/adapter_model.safetensors`.
pub fn adapter_hash(dir: &Path) -> Result<String, LoraError> {
    let path = dir.join(ADAPTER_WEIGHTS_FILE);
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    Ok(sha256_hex(&bytes))
}

// ---------------------------------------------------------------------------------------------
// SFT loss
// ---------------------------------------------------------------------------------------------

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

    fn cpu() -> Device {
        Device::Cpu
    }

    fn t2(rows: &[&[f32]]) -> Tensor {
        let r = rows.len();
        let c = rows[0].len();
        Tensor::from_vec(rows.concat(), (r, c), &cpu()).unwrap()
    }

    fn var_of(vm: &VarMap, name: &str) -> Var {
        vm.data().lock().unwrap().get(name).unwrap().clone()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Deterministic test input with values in [-1, 1).
    fn input(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        Tensor::from_vec(v, shape, &cpu()).unwrap()
    }

    /// W [3, 2] = [[1, 0], [0, 1], [1, 1]], b = [0.5, -0.5, 0].
    fn small_layer() -> LoraLinear {
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
            LoraLinear::frozen(layer.weight().clone(), layer.bias().cloned())
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
        assert!(grads.get(layer.weight()).is_none() && grads.get(layer.bias().unwrap()).is_none());
        assert!(grads.get(&w).is_none());

        // B != 0: A receives a non-zero gradient too; the optimizer finds a gradient for every
        // Var of the map and leaves the base weight alone.
        vb_.set(&input(&[3, 2], 13)).unwrap();
        let grads = loss(&layer).backward().unwrap();
        let ga = grads.get(va.as_tensor()).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(ga > 0.0);
        let mut opt = crate::optim::AdamW::new(&vm, crate::optim::AdamWConfig::default()).unwrap();
        assert_eq!(opt.vars().len(), 2);
        let before = layer.weight().to_vec2::<f32>().unwrap();
        let a_before = va.as_tensor().to_vec2::<f32>().unwrap();
        opt.step(&grads, 1e-2).unwrap();
        assert_eq!(layer.weight().to_vec2::<f32>().unwrap(), before);
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
        let w_before = layer.weight().clone();
        layer.merge().unwrap();
        assert!(!layer.has_adapter() && layer.lora_a().is_none() && layer.scale().is_none());
        let after = layer.forward(&x).unwrap();
        assert!(max_abs_diff(&before, &after) < 1e-5, "{}", max_abs_diff(&before, &after));
        assert!(max_abs_diff(&w_before, layer.weight()) > 1e-3);
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
        assert_eq!(merged.weight().dtype(), DType::F32);
        assert_eq!(merged.forward(&t2(&[&[1., 2.]])).unwrap().to_vec2::<f32>().unwrap(), [[-0.5f32, -2.5, 3.0]]);
    }

    /// Two layers × {q_proj, v_proj}, r = 2, with non-zero B. Returns the VarMap and config.
    fn trained_adapter() -> (VarMap, LoraConfig) {
        let cfg = LoraConfig { r: 2, alpha: 4.0, dropout: 0.1, target_modules: vec!["q_proj".into(), "v_proj".into()] };
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &cpu());
        for i in 0..2 {
            for (j, m) in cfg.target_modules.iter().enumerate() {
                let p = format!("model.layers.{i}.self_attn.{m}");
                let out = if m == "q_proj" { 6 } else { 4 };
                let l = LoraLinear::frozen(Tensor::zeros((out, 6), DType::F32, &cpu()).unwrap(), None)
                    .with_adapter_seeded(vb.pp(&p), cfg.r, cfg.alpha, cfg.dropout, 9)
                    .unwrap();
                assert!(l.has_adapter());
                var_of(&vm, &format!("{p}.lora_B.weight")).set(&input(&[out, 2], (10 * i + j) as u64)).unwrap();
            }
        }
        // A non-adapter variable is not part of the adapter.
        vm.get((2,), "score.weight", Init::Const(1.0), DType::F32, &cpu()).unwrap();
        (vm, cfg)
    }

    fn rewrite_weights(dir: &Path, rename: impl Fn(&str) -> Option<String>) {
        let bytes = std::fs::read(dir.join(ADAPTER_WEIGHTS_FILE)).unwrap();
        let raw = candle_core::safetensors::load_buffer(&bytes, &cpu()).unwrap();
        let renamed: BTreeMap<String, Tensor> =
            raw.iter().filter_map(|(k, v)| rename(k).map(|n| (n, v.clone()))).collect();
        std::fs::write(dir.join(ADAPTER_WEIGHTS_FILE), safetensors::serialize(&renamed, None).unwrap()).unwrap();
    }

    #[test]
    fn peft_round_trip() {
        let (vm, cfg) = trained_adapter();
        let d = tempfile::tempdir().unwrap();
        let hash = save_adapter(d.path(), &vm, &cfg, "Qwen/Qwen2.5-7B-Instruct").unwrap();
        assert_eq!(hash, adapter_hash(d.path()).unwrap());
        assert_eq!(hash, sha256_hex(&std::fs::read(d.path().join(ADAPTER_WEIGHTS_FILE)).unwrap()));
        assert_eq!(hash.len(), 64);
        // Deterministic bytes: saving again gives the same hash.
        let d2 = tempfile::tempdir().unwrap();
        assert_eq!(save_adapter(d2.path(), &vm, &cfg, "Qwen/Qwen2.5-7B-Instruct").unwrap(), hash);

        // Config: PEFT's keys and values.
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(d.path().join(ADAPTER_CONFIG_FILE)).unwrap()).unwrap();
        for key in [
            "peft_type",
            "task_type",
            "r",
            "lora_alpha",
            "lora_dropout",
            "target_modules",
            "bias",
            "base_model_name_or_path",
            "fan_in_fan_out",
            "inference_mode",
            "modules_to_save",
            "init_lora_weights",
            "use_rslora",
            "use_dora",
            "layers_to_transform",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert_eq!(json["peft_type"], "LORA");
        assert_eq!(json["task_type"], "CAUSAL_LM");
        assert_eq!(json["r"], 2);
        assert_eq!(json["lora_alpha"], 4);
        assert_eq!(json["bias"], "none");
        assert_eq!(json["target_modules"], json!(["q_proj", "v_proj"]));
        assert_eq!(json["modules_to_save"], Value::Null);

        // Weights: PEFT names with the prefix, only the adapter's tensors.
        let bytes = std::fs::read(d.path().join(ADAPTER_WEIGHTS_FILE)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names = st.names();
        names.sort();
        assert_eq!(names.len(), 8);
        assert_eq!(names[0], "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
        assert!(names.iter().all(|n| n.starts_with(PEFT_PREFIX)));

        // Load: identical config and tensors.
        let loaded = load_adapter_info(d.path()).unwrap();
        assert_eq!(loaded.config, cfg);
        assert_eq!(loaded.base_model_name_or_path.as_deref(), Some("Qwen/Qwen2.5-7B-Instruct"));
        assert_eq!(loaded.hash, hash);
        let ours = adapter_tensors(&vm).unwrap();
        assert_eq!(ours.len(), 8);
        assert_eq!(loaded.tensors.len(), 8);
        for (k, v) in &ours {
            assert_eq!(max_abs_diff(v, &loaded.tensors[k]), 0.0, "{k}");
        }

        // Loaded tensors in a fresh VarMap are picked up by with_adapter (no re-init).
        let vm2 = VarMap::new();
        insert_adapter(&vm2, &loaded.tensors, DType::F32, &cpu()).unwrap();
        let vb2 = VarBuilder::from_varmap(&vm2, DType::F32, &cpu());
        let p = "model.layers.1.self_attn.v_proj";
        let l = LoraLinear::frozen(Tensor::zeros((4, 6), DType::F32, &cpu()).unwrap(), None)
            .with_adapter_seeded(vb2.pp(p), 2, 4.0, 0.0, 123)
            .unwrap();
        assert_eq!(max_abs_diff(l.lora_b().unwrap(), &ours[&format!("{p}.lora_B.weight")]), 0.0);
        assert_eq!(max_abs_diff(l.lora_a().unwrap(), &ours[&format!("{p}.lora_A.weight")]), 0.0);

        // PEFT's in-memory names (`.default.`) load to the same tensors.
        let dd = tempfile::tempdir().unwrap();
        save_adapter(dd.path(), &vm, &cfg, "base").unwrap();
        rewrite_weights(dd.path(), |k| Some(k.replace(".lora_A.weight", ".lora_A.default.weight")));
        let (c, t) = load_adapter(dd.path()).unwrap();
        assert_eq!(c, cfg);
        for (k, v) in &ours {
            assert_eq!(max_abs_diff(v, &t[k]), 0.0, "{k}");
        }
    }

    #[test]
    fn bad_adapters_are_refused_with_names() {
        let (vm, cfg) = trained_adapter();
        let d = tempfile::tempdir().unwrap();
        save_adapter(d.path(), &vm, &cfg, "base").unwrap();
        let missing = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight";

        // Missing tensor.
        rewrite_weights(d.path(), |k| (k != missing).then(|| k.to_string()));
        let err = load_adapter(d.path()).unwrap_err();
        match &err {
            LoraError::Tensors(m) => assert_eq!(m.missing, vec![missing.to_string()]),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains(missing), "{err}");

        // Unknown tensor (a DoRA magnitude vector) and a name without the prefix.
        save_adapter(d.path(), &vm, &cfg, "base").unwrap();
        rewrite_weights(d.path(), |k| {
            Some(if k.ends_with("layers.0.self_attn.q_proj.lora_A.weight") {
                k.replace("lora_A.weight", "lora_magnitude_vector")
            } else if k.ends_with("layers.0.self_attn.v_proj.lora_A.weight") {
                k.trim_start_matches(PEFT_PREFIX).to_string()
            } else {
                k.to_string()
            })
        });
        let err = load_adapter(d.path()).unwrap_err().to_string();
        assert!(err.contains("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"), "{err}");
        assert!(
            err.contains(
                "unknown tensors [base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector, \
             model.layers.0.self_attn.v_proj.lora_A.weight]"
            ),
            "{err}"
        );
        assert!(
            err.contains("missing tensors [base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"),
            "{err}"
        );

        // Both `.default.` and plain names for one tensor.
        save_adapter(d.path(), &vm, &cfg, "base").unwrap();
        let bytes = std::fs::read(d.path().join(ADAPTER_WEIGHTS_FILE)).unwrap();
        let mut raw: BTreeMap<String, Tensor> =
            candle_core::safetensors::load_buffer(&bytes, &cpu()).unwrap().into_iter().collect();
        let a0 = raw["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].clone();
        raw.insert("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight".into(), a0);
        std::fs::write(d.path().join(ADAPTER_WEIGHTS_FILE), safetensors::serialize(&raw, None).unwrap()).unwrap();
        assert!(matches!(load_adapter(d.path()), Err(LoraError::Tensors(m)) if m.duplicate.len() == 1));

        // Unsupported configs: each is refused with its reason.
        save_adapter(d.path(), &vm, &cfg, "base").unwrap();
        let cfg_path = d.path().join(ADAPTER_CONFIG_FILE);
        let base_json: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
        for (key, value, expect) in [
            ("use_dora", json!(true), "DoRA"),
            ("bias", json!("all"), "bias"),
            ("fan_in_fan_out", json!(true), "fan_in_fan_out"),
            ("use_rslora", json!(true), "rsLoRA"),
            ("modules_to_save", json!(["lm_head"]), "modules_to_save"),
            ("target_modules", json!("all-linear"), "pattern"),
            ("target_modules", json!(["q_proj", "lm_head"]), "lm_head"),
            ("init_lora_weights", json!("pissa"), "pissa"),
            ("rank_pattern", json!({"q_proj": 4}), "rank_pattern"),
            ("layers_to_transform", json!([0]), "layers_to_transform"),
            ("peft_type", json!("IA3"), "IA3"),
        ] {
            let mut j = base_json.clone();
            j[key] = value;
            std::fs::write(&cfg_path, j.to_string()).unwrap();
            let err = load_adapter(d.path()).unwrap_err();
            assert!(matches!(err, LoraError::Unsupported(_)), "{key}: {err}");
            assert!(err.to_string().contains(expect), "{key}: {err}");
        }
        // Invalid values.
        let mut j = base_json.clone();
        j["r"] = json!(0);
        std::fs::write(&cfg_path, j.to_string()).unwrap();
        assert!(matches!(load_adapter(d.path()), Err(LoraError::InvalidConfig(_))));
        // r in the config disagrees with the tensors.
        let mut j = base_json.clone();
        j["r"] = json!(4);
        std::fs::write(&cfg_path, j.to_string()).unwrap();
        let err = load_adapter(d.path()).unwrap_err().to_string();
        assert!(err.contains("expected [r = 4, in]"), "{err}");
        // Missing files are I/O errors naming the path.
        let empty = tempfile::tempdir().unwrap();
        let err = load_adapter(empty.path()).unwrap_err().to_string();
        assert!(err.contains(ADAPTER_CONFIG_FILE), "{err}");

        // Saving refuses a VarMap whose adapters do not fit the config, or that has none.
        let only_q = LoraConfig { target_modules: vec!["q_proj".into()], ..cfg.clone() };
        assert!(
            matches!(save_adapter(d.path(), &vm, &only_q, "base"), Err(LoraError::Tensors(m)) if m.unknown.len() == 4)
        );
        assert!(matches!(save_adapter(d.path(), &VarMap::new(), &cfg, "base"), Err(LoraError::NoAdapter)));
    }

    #[test]
    fn parses_a_python_written_config() {
        // adapter_config.json as PEFT 0.13 writes it for Qwen2.5 (extra keys are ignored).
        let json = r#"{
          "alpha_pattern": {}, "auto_mapping": null,
          "base_model_name_or_path": "Qwen/Qwen2.5-7B-Instruct", "bias": "none",
          "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true,
          "layer_replication": null, "layers_pattern": null, "layers_to_transform": null,
          "loftq_config": {}, "lora_alpha": 16, "lora_dropout": 0.05, "megatron_config": null,
          "megatron_core": "megatron.core", "modules_to_save": null, "peft_type": "LORA", "r": 8,
          "rank_pattern": {}, "revision": null,
          "target_modules": ["up_proj", "o_proj", "q_proj", "k_proj", "down_proj", "v_proj", "gate_proj"],
          "task_type": "CAUSAL_LM", "use_dora": false, "use_rslora": false,
          "exclude_modules": null, "lora_bias": false, "trainable_token_indices": null
        }"#;
        let (cfg, base) = parse_peft_config(json).unwrap();
        assert_eq!(base.as_deref(), Some("Qwen/Qwen2.5-7B-Instruct"));
        assert_eq!((cfg.r, cfg.alpha, cfg.dropout, cfg.target_modules.len()), (8, 16.0, 0.05, 7));
        assert_eq!(cfg.scale(), 2.0);
        // Our writer's output parses back to the same config.
        let (back, _) = parse_peft_config(&peft_config_json(&cfg, "b")).unwrap();
        assert_eq!(back, cfg);
        let d = LoraConfig::default();
        assert_eq!((d.r, d.alpha, d.dropout, d.target_modules.len()), (8, 16.0, 0.05, 7));
        d.validate().unwrap();
        assert!(LoraConfig { target_modules: vec!["q_proj".into(), "q_proj".into()], ..d.clone() }.validate().is_err());
        assert!(LoraConfig { dropout: 1.0, ..d.clone() }.validate().is_err());
        // serde round trip of our own config.
        let s = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<LoraConfig>(&s).unwrap(), d);
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
