//! A trained teacher loaded for inference ([`load_teacher`]): the manifest and every weight
//! file's hash checked, the base's hash checked against the manifest's, LoRA adapters merged,
//! the head and the prompt encoder with the instruction the teacher was trained with.

use std::collections::HashMap;
use std::path::Path;

use ckd_core::evidence::TeacherIdentity;
use sha2::{Digest, Sha256};

use super::{
    dense_kernel_description, file_sha256, fmt_err, head, io_err, load_base, load_base_quantized, sha256_hex, BaseRef,
    BaseWeights, DeviceSpec, PromptEncoder, Result, TeacherDir, TeacherManifest,
};
use crate::models::checkpoint;
use crate::models::peft;
use crate::models::qwen2::{self, Config, Qwen2ForCausalLM};

/// A trained teacher loaded for inference: LLM (adapters merged), head, prompt encoder.
pub struct LoadedTeacher {
    /// Manifest.
    pub manifest: TeacherManifest,
    /// LLM, frozen.
    pub model: Qwen2ForCausalLM,
    /// Head weight [25, H] and bias [25], f32 on the model's device.
    pub head: head::Head,
    /// Prompt encoder.
    pub prompts: PromptEncoder,
    /// Hash (hex) of the model config (`config.json`).
    pub config_hash: String,
    /// Hash (hex) over the manifest's weight-file hashes (adapter or demo weights, and head).
    pub weights_hash: String,
    /// The weights' layout and the matmul kernels they run on, for progress lines.
    pub kernel: String,
}

impl LoadedTeacher {
    /// The identity written into evidence files.
    pub fn identity(&self, temperature: f32, last_k_layers: u32) -> TeacherIdentity {
        TeacherIdentity {
            model: self.manifest.model_name.clone(),
            config_hash: self.config_hash.clone(),
            adapter_hash: Some(self.weights_hash.clone()),
            temperature,
            last_k_layers,
        }
    }
}

/// Loads a teacher directory written by [`train_teacher`](super::train::train_teacher), checking
/// its manifest and every weight file's hash. The base of a GGUF / safetensors teacher is read from the path recorded
/// in the manifest (or `base_override`) and its hash must match.
pub fn load_teacher(dir: &Path, base_override: Option<&Path>, device: DeviceSpec) -> Result<LoadedTeacher> {
    let td = TeacherDir(dir.to_path_buf());
    let mpath = td.manifest();
    let text = crate::io::read_to_string_regular(&mpath).map_err(io_err(&mpath))?;
    let manifest = TeacherManifest::parse(&text, &mpath)?;
    let mut all = Sha256::new();
    for (rel, want) in &manifest.files {
        let p = dir.join(rel);
        let got = file_sha256(&p)?;
        if &got != want {
            return Err(fmt_err(&p, format!("sha256 {got} differs from the manifest's {want}")));
        }
        all.update(rel.as_bytes());
        all.update(got.as_bytes());
    }
    let weights_hash = ckd_core::format::hex(&all.finalize());
    let dev = device.open()?;
    let dtype = device.dtype();
    let cfg_path = td.config();
    let cfg_text = crate::io::read_to_string_regular(&cfg_path).map_err(io_err(&cfg_path))?;
    let config = Config::from_json(&cfg_text)?;
    let (tensors, tokenizer) = match &manifest.base {
        BaseRef::Demo => {
            let t = checkpoint::read_safetensors(&td.weights(), &dev)?;
            let t = t.into_iter().map(|(k, v)| Ok((k, v.to_dtype(dtype)?))).collect::<Result<HashMap<_, _>>>()?;
            (t, qwen2::read_tokenizer_json(&td.tokenizer())?)
        }
        BaseRef::Gguf { path, sha256 } if manifest.lora.is_none() && BaseWeights::Auto.quantized_on(device) => {
            // A frozen GGUF teacher runs on the file's quantized weights, as in training.
            let p = base_override.unwrap_or(path);
            let q = load_base_quantized(p)?;
            check_base_hash(p, &q.base, sha256)?;
            let head = head::Head::load(&td.head(), config.hidden_size, &dev)?;
            let prompts =
                PromptEncoder::new(q.tokenizer, manifest.max_len)?.with_instruction(manifest.prompt_instruction());
            let config_hash = sha256_hex(cfg_text.as_bytes());
            let kernel = format!("quantized weights, {}", crate::models::qlinear::kernel_description(q.packing));
            return Ok(LoadedTeacher { manifest, model: q.model, head, prompts, config_hash, weights_hash, kernel });
        }
        BaseRef::Gguf { path, sha256 } | BaseRef::Safetensors { path, sha256 } => {
            let p = base_override.unwrap_or(path);
            let b = load_base(p, &dev, dtype)?;
            check_base_hash(p, &b.base, sha256)?;
            (b.tensors, b.tokenizer)
        }
    };
    let mut model = Qwen2ForCausalLM::from_tensors(tensors, &config, dtype, &dev)?;
    if let Some(lcfg) = &manifest.lora {
        let (saved_cfg, adapter) = peft::load_adapter(&td.adapter())?;
        if &saved_cfg != lcfg {
            return Err(fmt_err(&td.adapter(), "adapter config differs from teacher.json"));
        }
        let adapter =
            adapter.into_iter().map(|(k, v)| Ok((k, v.to_dtype(dtype)?.to_device(&dev)?))).collect::<Result<_>>()?;
        let vb = candle_nn::VarBuilder::from_tensors(adapter, dtype, &dev);
        model = model.with_lora(vb, lcfg, 0)?;
        model.merge_lora()?;
    }
    let head = head::Head::load(&td.head(), config.hidden_size, &dev)?;
    let prompts = PromptEncoder::new(tokenizer, manifest.max_len)?.with_instruction(manifest.prompt_instruction());
    let kernel = dense_kernel_description(&dev, dtype);
    let config_hash = sha256_hex(cfg_text.as_bytes());
    Ok(LoadedTeacher { manifest, model, head, prompts, config_hash, weights_hash, kernel })
}

/// The base file `p` is the one the teacher was trained on (`want` = the manifest's hash).
fn check_base_hash(p: &Path, got: &BaseRef, want: &str) -> Result<()> {
    let got = match got {
        BaseRef::Gguf { sha256, .. } | BaseRef::Safetensors { sha256, .. } => sha256.as_str(),
        BaseRef::Demo => "",
    };
    if got != want {
        return Err(fmt_err(p, format!("base model hash {got} differs from the teacher's {want}")));
    }
    Ok(())
}
