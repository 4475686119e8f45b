//! `ckd teacher train`: fine-tune (LoRA on a pretrained base, or the whole demo model), then
//! train the phenotype head on cached features, and write the teacher directory.

use std::path::{Path, PathBuf};

use candle_core::DType;
use candle_nn::{VarBuilder, VarMap};
use ckd_core::visit::Sample;
use indicatif::ProgressBar;
use serde::Serialize;

use super::demo::{self, DemoConfig};
use super::head::{self, HeadConfig};
use super::sft::{self, SftConfig};
use super::{
    io_err, label_space_hex, load_base, load_base_quantized, save_manifest, sha256_hex, BaseRef, BaseWeights,
    DeviceSpec, PromptEncoder, Result, TeacherDir, TeacherError, TeacherManifest, TEACHER_FORMAT, TEACHER_VERSION,
};
use crate::io::{pretty_json, write_atomic};
use crate::models::lora::LoraConfig;
use crate::models::peft;
use crate::models::qwen2::{self, Qwen2ForCausalLM};
use crate::student::CurvePoint;
use crate::train_integrity::write_tensors;

/// Which base to start from.
#[derive(Debug, Clone, PartialEq)]
pub enum BaseChoice {
    /// A GGUF file or HF safetensors directory (LoRA fine-tuning).
    Pretrained(PathBuf),
    /// The demo model, trained from scratch on the samples.
    Demo(DemoConfig),
}

/// Everything `ckd teacher train` needs.
#[derive(Debug, Clone)]
pub struct TrainTeacherConfig {
    /// Base.
    pub base: BaseChoice,
    /// LoRA settings (pretrained bases only).
    pub lora: LoraConfig,
    /// Fine-tuning.
    pub sft: SftConfig,
    /// Head training.
    pub head: HeadConfig,
    /// Maximum tokens of a prompt (with the answer, when fine-tuning).
    pub max_len: usize,
    /// Device.
    pub device: DeviceSpec,
    /// Prompts per forward pass when computing features.
    pub feature_batch: usize,
    /// Validation samples used for the fine-tuning loss.
    pub sft_val_limit: usize,
}

/// Progress bars for the stages (hidden ones in tests).
pub trait Bars {
    /// A bar for a stage named `name`.
    fn bar(&self, name: &str) -> ProgressBar;
}

/// No progress output.
pub struct Hidden;

impl Bars for Hidden {
    fn bar(&self, _: &str) -> ProgressBar {
        ProgressBar::hidden()
    }
}

/// What training produced (also in `teacher.json` under `training`).
#[derive(Debug, Clone, Serialize)]
pub struct TeacherReport {
    /// Fine-tuning.
    pub sft: sft::SftOutcome,
    /// Head.
    pub head: head::HeadOutcome,
    /// Whether train / val features came from the cache.
    pub features_cached: [bool; 2],
    /// Seconds: fine-tuning, features, head.
    pub seconds: [f64; 3],
    /// Trainable parameters in fine-tuning.
    pub trainable_params: usize,
}

/// A GGUF base that is not fine-tuned (`sft.epochs == 0`) runs on its own quantized weights where
/// [`BaseWeights::Auto`] says so, with no adapter (the manifest then has no LoRA config, and
/// [`super::load_teacher`] loads it the same way).
fn frozen_quantized(path: &Path, cfg: &TrainTeacherConfig) -> bool {
    path.is_file() && cfg.sft.epochs == 0 && BaseWeights::Auto.quantized_on(cfg.device)
}

/// Trains a teacher into `out` and returns its manifest and report.
pub fn train_teacher(
    train: &[Sample],
    val: &[Sample],
    cfg: &TrainTeacherConfig,
    out: &Path,
    bars: &dyn Bars,
) -> Result<(TeacherManifest, TeacherReport)> {
    if train.is_empty() || val.is_empty() {
        return Err(TeacherError::Invalid(format!(
            "teacher training needs training and validation samples (got {} and {})",
            train.len(),
            val.len()
        )));
    }
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let td = TeacherDir(out.to_path_buf());
    let dev = cfg.device.open()?;
    let t0 = std::time::Instant::now();

    // 1. Base model, trainable variables, tokenizer.
    let varmap = VarMap::new();
    let Start { mut model, config, tokenizer, base, name, lora: lora_cfg } = start(train, cfg, &varmap, &dev)?;
    let prompts = PromptEncoder::new(tokenizer, cfg.max_len)?;
    let trainable_params: usize = {
        let data = varmap.data().lock().map_err(|_| TeacherError::Invalid("VarMap lock poisoned".into()))?;
        data.values().map(|v| v.elem_count()).sum()
    };

    // 2. Fine-tuning.
    let bar = bars.bar("teacher fine-tuning");
    let sft_out = sft::finetune(&model, &varmap, &prompts, train, val, &cfg.sft, cfg.sft_val_limit, &bar)?;
    bar.finish_and_clear();
    let t_sft = t0.elapsed().as_secs_f64();

    // 3. Save what was trained, then freeze (merge adapters).
    let trained = Trained { varmap: &varmap, config: &config, prompts: &prompts, base: &base, name: &name };
    let (model_key, weight_files) = save_trained(&td, &trained, lora_cfg.as_ref(), &mut model)?;

    // 4. Features (cached) and head.
    let t1 = std::time::Instant::now();
    let (feats, cached) = split_features(&td, &trained, &model, [train, val], &model_key, cfg, bars)?;
    let t_feat = t1.elapsed().as_secs_f64();
    let t2 = std::time::Instant::now();
    let train_labels: Vec<_> = train.iter().map(|s| s.labels).collect();
    let val_labels: Vec<_> = val.iter().map(|s| s.labels).collect();
    let (hd, head_out) =
        head::train_head(&feats[0], &train_labels, &feats[1], &val_labels, config.hidden_size, &cfg.head)?;
    hd.save(&td.head())?;
    let t_head = t2.elapsed().as_secs_f64();

    // 5. Curves and manifest (written last).
    write_curves(&td, &sft_out, &head_out)?;
    let report = TeacherReport {
        sft: sft_out,
        head: head_out,
        features_cached: cached,
        seconds: [t_sft, t_feat, t_head],
        trainable_params,
    };
    let manifest = TeacherManifest {
        format: TEACHER_FORMAT.into(),
        version: TEACHER_VERSION,
        label_space_hash: label_space_hex(),
        model_name: name,
        base,
        lora: lora_cfg,
        max_len: cfg.max_len,
        instruction: Some(prompts.default_instruction().to_string()),
        thresholds: report.head.thresholds.clone(),
        files: Vec::new(),
        training: serde_json::json!({
            "sft_config": cfg.sft,
            "head_config": cfg.head,
            "train_samples": train.len(),
            "val_samples": val.len(),
            "report": report,
        }),
    };
    let manifest = save_manifest(out, manifest, &weight_files)?;
    Ok((manifest, report))
}

/// The model fine-tuning starts from, its tokenizer, what the manifest records of its base, its
/// display name, and the LoRA settings (`None`: no adapter, the whole model or nothing trains).
struct Start {
    model: Qwen2ForCausalLM,
    config: qwen2::Config,
    tokenizer: tokenizers::Tokenizer,
    base: BaseRef,
    name: String,
    lora: Option<LoraConfig>,
}

/// Step 1: the demo model from random weights (every weight a variable of `varmap`), a frozen
/// quantized GGUF base (see [`frozen_quantized`]), or a pretrained base with LoRA adapters (the
/// adapters are `varmap`'s variables).
fn start(train: &[Sample], cfg: &TrainTeacherConfig, varmap: &VarMap, dev: &candle_core::Device) -> Result<Start> {
    Ok(match &cfg.base {
        BaseChoice::Demo(d) => {
            let tok = demo::train_tokenizer(train, d.vocab_size)?;
            let config = d.qwen2(tok.get_vocab_size(true), cfg.max_len);
            let init = qwen2::init_random(&config, d.seed, dev)?;
            {
                let mut data =
                    varmap.data().lock().map_err(|_| TeacherError::Invalid("VarMap lock poisoned".into()))?;
                for (k, v) in init {
                    data.insert(k, candle_core::Var::from_tensor(&v)?);
                }
            }
            let model = Qwen2ForCausalLM::load_trainable(VarBuilder::from_varmap(varmap, DType::F32, dev), &config)?;
            let name = format!("demo-qwen2-h{}-l{}", d.hidden_size, d.layers);
            Start { model, config, tokenizer: tok, base: BaseRef::Demo, name, lora: None }
        }
        BaseChoice::Pretrained(path) if frozen_quantized(path, cfg) => {
            let q = load_base_quantized(path)?;
            Start { model: q.model, config: q.config, tokenizer: q.tokenizer, base: q.base, name: q.name, lora: None }
        }
        BaseChoice::Pretrained(path) => {
            let b = load_base(path, dev, cfg.device.dtype())?;
            let model = Qwen2ForCausalLM::from_tensors(b.tensors, &b.config, cfg.device.dtype(), dev)?;
            let model =
                model.with_lora(VarBuilder::from_varmap(varmap, cfg.device.dtype(), dev), &cfg.lora, cfg.sft.seed)?;
            Start {
                model,
                config: b.config,
                tokenizer: b.tokenizer,
                base: b.base,
                name: b.name,
                lora: Some(cfg.lora.clone()),
            }
        }
    })
}

/// What step 3 saves: the trained variables, the model config, the prompts (their tokenizer and
/// instruction), the base and the model's name.
struct Trained<'a> {
    varmap: &'a VarMap,
    config: &'a qwen2::Config,
    prompts: &'a PromptEncoder,
    base: &'a BaseRef,
    name: &'a str,
}

/// Step 3: writes `config.json`, `tokenizer.json` and the trained weights (the whole demo model,
/// or the LoRA adapter, which is then merged into `model`; nothing for a frozen base). Returns
/// the key the cached features are stored under (a hash of the config, the weights, the base and
/// the prompt instruction) and the files the manifest lists.
fn save_trained(
    td: &TeacherDir,
    t: &Trained<'_>,
    lora_cfg: Option<&LoraConfig>,
    model: &mut Qwen2ForCausalLM,
) -> Result<(String, Vec<&'static str>)> {
    let base = t.base;
    let cfg_json = pretty_json(t.config);
    write_atomic(&td.config(), cfg_json.as_bytes()).map_err(io_err(&td.config()))?;
    let tok_json = t.prompts.tokenizer().to_string(true).map_err(|e| TeacherError::Tokenizer(e.to_string()))?;
    write_atomic(&td.tokenizer(), tok_json.as_bytes()).map_err(io_err(&td.tokenizer()))?;
    let mut weight_files: Vec<&str> = vec!["head.safetensors", "tokenizer.json"];
    let model_key = match lora_cfg {
        // A frozen pretrained base: nothing was trained; the file's hash names the weights.
        None if *base != BaseRef::Demo => format!("quantized {base:?}"),
        None => {
            let mut tensors = crate::student::named_vars(t.varmap).map_err(|e| TeacherError::Invalid(e.to_string()))?;
            tensors.retain(|k, _| !k.starts_with(sft::AUX_PREFIX));
            let sha256 = write_tensors(&td.weights(), &tensors)?;
            weight_files.push("model.safetensors");
            sha256
        }
        Some(l) => {
            let dir = td.adapter();
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            let h = peft::save_adapter(&dir, t.varmap, l, t.name)?;
            weight_files.push("adapter/adapter_model.safetensors");
            weight_files.push("adapter/adapter_config.json");
            model.merge_lora()?;
            h
        }
    };
    // The features depend on the prompts too: the instruction is part of the key.
    let model_key =
        sha256_hex(format!("{cfg_json}{model_key}{:?}{}", base, t.prompts.default_instruction()).as_bytes());
    Ok((model_key, weight_files))
}

/// Step 4's features of the training and validation samples (`sets`: `[train, val]`; each
/// samples x `t.config.hidden_size`, row-major), read from the feature cache when there (keyed
/// by `model_key`, the samples and `max_len`), else computed and cached; with whether each came
/// from the cache.
fn split_features(
    td: &TeacherDir,
    t: &Trained<'_>,
    model: &Qwen2ForCausalLM,
    sets: [&[Sample]; 2],
    model_key: &str,
    cfg: &TrainTeacherConfig,
    bars: &dyn Bars,
) -> Result<(Vec<Vec<f32>>, [bool; 2])> {
    let (h, prompts) = (t.config.hidden_size, t.prompts);
    let mut cached = [false; 2];
    let mut feats = Vec::new();
    for (k, (split, samples)) in ["train", "val"].into_iter().zip(sets).enumerate() {
        let key = head::cache_key(model_key, samples, cfg.max_len);
        let bar = bars.bar(&format!("teacher features ({split})"));
        let (f, hit) = head::cached_features(
            &td.features(),
            split,
            &key,
            || head::features(model, prompts, samples, cfg.feature_batch, &bar),
            samples.len(),
            h,
        )?;
        bar.finish_and_clear();
        cached[k] = hit;
        feats.push(f);
    }
    Ok((feats, cached))
}

/// Writes `curves.jsonl`: the fine-tuning curve, then one point per head epoch (at the last
/// fine-tuning step).
fn write_curves(td: &TeacherDir, sft_out: &sft::SftOutcome, head_out: &head::HeadOutcome) -> Result<()> {
    let mut curve = sft_out.curve.clone();
    let sft_steps = sft_out.steps;
    for e in &head_out.epochs {
        curve.push(CurvePoint::Epoch {
            epoch: e.epoch,
            step: sft_steps,
            val_macro_f1: e.val_macro_f1,
            val_macro_auc: e.val_macro_auc,
            train_loss: e.train_loss,
        });
    }
    let mut lines = String::new();
    for p in &curve {
        lines.push_str(&serde_json::to_string(p).map_err(|e| TeacherError::Invalid(e.to_string()))?);
        lines.push('\n');
    }
    write_atomic(&td.curves(), lines.as_bytes()).map_err(io_err(&td.curves()))
}
