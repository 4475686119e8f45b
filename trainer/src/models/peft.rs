//! PEFT adapter files: `adapter_config.json` (PEFT's `LoraConfig` fields) and
//! `adapter_model.safetensors` (names under [`PEFT_PREFIX`]), written and read so that an adapter
//! trained here loads in PEFT and one trained with PEFT loads here. Features that change the
//! forward pass or the base weights are refused with a message naming them, never ignored.
//!
//! File I/O is confined to [`save_adapter`], [`load_adapter`], [`load_adapter_info`] and
//! [`adapter_hash`]; [`encode_adapter`] and [`decode_adapter`] do the work on bytes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::io::sha256_hex;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde_json::{json, Map, Value};

use crate::models::lora::{
    adapter_tensors, check_adapter_tensors, mismatch, AdapterMismatch, LoraConfig, LoraError, PEFT_TARGET_MODULES,
};

/// Weights file of a PEFT adapter directory.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Config file of a PEFT adapter directory.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// Prefix PEFT puts before the base model's module paths in saved adapters.
pub const PEFT_PREFIX: &str = "base_model.model.";
/// `init_lora_weights` values that only affect the initialization of A/B (not the base
/// weights), so an adapter trained with them applies to the unchanged base model.
const BASE_PRESERVING_INITS: [&str; 3] = ["gaussian", "eva", "orthogonal"];

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
    // Every refusal, in the order the keys are checked; a malformed value is an error at once.
    let mut unsupported = Vec::new();
    check_kind(&obj, &mut unsupported);
    let (r, alpha, dropout) = lora_numbers(&obj)?;
    let target_modules = target_modules(&obj, &mut unsupported)?;
    check_flags(&obj, &mut unsupported)?;
    check_extras(&obj, &mut unsupported);
    if !unsupported.is_empty() {
        return Err(LoraError::Unsupported(unsupported));
    }
    let base = field(&obj, "base_model_name_or_path").and_then(Value::as_str).map(str::to_string);
    let cfg = LoraConfig { r, alpha, dropout, target_modules };
    cfg.validate()?;
    Ok((cfg, base))
}

/// Key `k` of an `adapter_config.json` object (`null` reads as absent).
fn field<'a>(obj: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    obj.get(k).filter(|v| !v.is_null())
}

/// "`k` = <its value> is not `want`".
fn invalid(obj: &Map<String, Value>, k: &str, want: &str) -> LoraError {
    LoraError::InvalidConfig(format!("{k} = {} is not {want}", show(field(obj, k))))
}

/// `peft_type` must be LORA and `task_type` (when given) CAUSAL_LM.
fn check_kind(obj: &Map<String, Value>, unsupported: &mut Vec<String>) {
    match field(obj, "peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        _ => unsupported.push(format!("peft_type = {}; only \"LORA\" is supported", show(field(obj, "peft_type")))),
    }
    match field(obj, "task_type") {
        None => {}
        Some(Value::String(s)) if s == "CAUSAL_LM" => {}
        Some(other) => unsupported.push(format!("task_type = {other}; only \"CAUSAL_LM\" is supported")),
    }
}

/// `r` (a positive integer), `lora_alpha` (a number) and `lora_dropout` (a number, 0 when
/// absent).
fn lora_numbers(obj: &Map<String, Value>) -> Result<(usize, f64, f64), LoraError> {
    let r = match field(obj, "r").and_then(Value::as_u64) {
        Some(r) if r > 0 => r as usize,
        _ => return Err(invalid(obj, "r", "a positive integer")),
    };
    let alpha =
        field(obj, "lora_alpha").and_then(Value::as_f64).ok_or_else(|| invalid(obj, "lora_alpha", "a number"))?;
    let dropout = match field(obj, "lora_dropout") {
        None => 0.0,
        Some(d) => d.as_f64().ok_or_else(|| invalid(obj, "lora_dropout", "a number"))?,
    };
    Ok((r, alpha, dropout))
}

/// `target_modules`: an explicit list, each one of [`PEFT_TARGET_MODULES`] (the others refused
/// one by one); a pattern string is refused.
fn target_modules(obj: &Map<String, Value>, unsupported: &mut Vec<String>) -> Result<Vec<String>, LoraError> {
    Ok(match field(obj, "target_modules") {
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str() {
                    Some(s) if PEFT_TARGET_MODULES.contains(&s) => out.push(s.to_string()),
                    Some(s) => unsupported.push(format!(
                        "target module {s:?}; only the decoder-layer linears {PEFT_TARGET_MODULES:?} can carry adapters"
                    )),
                    None => return Err(invalid(obj, "target_modules", "a list of module names")),
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
        _ => return Err(invalid(obj, "target_modules", "a list of module names")),
    })
}

/// `bias` must be "none", and the boolean options that change the forward pass must be false.
fn check_flags(obj: &Map<String, Value>, unsupported: &mut Vec<String>) -> Result<(), LoraError> {
    match field(obj, "bias") {
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
        match field(obj, key) {
            None | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => unsupported.push(what.to_string()),
            Some(_) => return Err(invalid(obj, key, "a boolean")),
        }
    }
    Ok(())
}

/// No extra trained parameters, no adapters on a subset or copies of the layers, no per-module
/// ranks or alphas, and no `init_lora_weights` that rewrites the base weights.
fn check_extras(obj: &Map<String, Value>, unsupported: &mut Vec<String>) {
    for key in ["modules_to_save", "trainable_token_indices", "target_parameters"] {
        let empty = match field(obj, key) {
            None => true,
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            Some(_) => false,
        };
        if !empty {
            unsupported.push(format!("{key} = {} (extra trained parameters)", show(field(obj, key))));
        }
    }
    for key in ["layers_to_transform", "layer_replication"] {
        if let Some(v) = field(obj, key) {
            unsupported.push(format!("{key} = {v} (adapters on a subset or copies of the layers)"));
        }
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        match field(obj, key) {
            None => {}
            Some(Value::Object(o)) if o.is_empty() => {}
            Some(v) => unsupported.push(format!("{key} = {v} (per-module ranks or alphas)")),
        }
    }
    match field(obj, "init_lora_weights") {
        None | Some(Value::Bool(_)) => {}
        Some(Value::String(s)) if BASE_PRESERVING_INITS.contains(&s.as_str()) => {}
        Some(other) => unsupported.push(format!(
            "init_lora_weights = {other} (an init that rewrites the base weights; the adapter needs that modified base)"
        )),
    }
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
    let config_json = crate::io::read_to_string_regular(&config_path).map_err(io_err(&config_path))?;
    let weights_path = dir.join(ADAPTER_WEIGHTS_FILE);
    let weights = crate::io::read_regular(&weights_path).map_err(io_err(&weights_path))?;
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
    let bytes = crate::io::read_regular(&path).map_err(io_err(&path))?;
    Ok(sha256_hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::lora::tests::{cpu, input, max_abs_diff, var_of};
    use crate::models::lora::{insert_adapter, LoraLinear};
    use candle_core::DType;
    use candle_nn::{Init, VarBuilder};

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
}
