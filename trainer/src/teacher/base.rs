//! Pretrained base LLMs: a GGUF file or an HF safetensors directory, loaded dense ([`load_base`],
//! for fine-tuning or running in the run dtype) or on a GGUF's quantized weights
//! ([`load_base_quantized`], CPU inference), and as a frozen feature model ([`load_frozen`]).
//! [`BaseWeights`] chooses between the two for a frozen base.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};

use super::{
    dense_kernel_description, file_sha256, fmt_err, io_err, BaseRef, DeviceSpec, PromptEncoder, Result, TeacherError,
};
use crate::models::checkpoint;
use crate::models::qwen2::{self, Config, Qwen2ForCausalLM};

/// A base LLM ready to fine-tune or run: weights (plain tensors, not Vars), config, tokenizer.
pub struct Base {
    /// Reference written into the manifest.
    pub base: BaseRef,
    /// Display name.
    pub name: String,
    /// Config.
    pub config: Config,
    /// Weights under HF names, on the target device in the run dtype.
    pub tensors: HashMap<String, Tensor>,
    /// Tokenizer.
    pub tokenizer: tokenizers::Tokenizer,
}

/// A GGUF file opened for reading: its parsed header, config, embedded tokenizer, display name and
/// SHA-256, with the reader positioned for its tensors.
struct GgufFile {
    reader: std::io::BufReader<std::fs::File>,
    content: candle_core::quantized::gguf_file::Content,
    config: Config,
    tokenizer: tokenizers::Tokenizer,
    name: String,
    sha256: String,
}

fn open_gguf(path: &Path) -> Result<GgufFile> {
    let sha256 = file_sha256(path)?;
    let mut reader = std::io::BufReader::new(crate::io::open_regular(path).map_err(io_err(path))?);
    let content = candle_core::quantized::gguf_file::Content::read(&mut reader).map_err(|e| fmt_err(path, e))?;
    let config = qwen2::gguf_config(&content)?;
    let tokenizer = qwen2::gguf_tokenizer(&content)?;
    let name = match content.metadata.get("general.name") {
        Some(candle_core::quantized::gguf_file::Value::String(s)) => s.clone(),
        _ => path.file_name().map_or("gguf".into(), |n| n.to_string_lossy().into_owned()),
    };
    Ok(GgufFile { reader, content, config, tokenizer, name, sha256 })
}

/// Loads a pretrained base: a `.gguf` file or an HF safetensors directory.
pub fn load_base(path: &Path, device: &Device, dtype: DType) -> Result<Base> {
    if let Some(what) = crate::io::not_regular(path).filter(|w| *w != "a directory") {
        return Err(fmt_err(path, format!("is {what}, not a GGUF file or a model directory")));
    }
    if path.is_file() {
        let mut g = open_gguf(path)?;
        let tensors = qwen2::read_gguf_tensors(&g.content, &mut g.reader, device)?
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_dtype(dtype)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        let base = BaseRef::Gguf { path: path.to_path_buf(), sha256: g.sha256 };
        Ok(Base { base, name: g.name, config: g.config, tensors, tokenizer: g.tokenizer })
    } else if path.is_dir() {
        let cfg_path = path.join("config.json");
        let cfg_text = crate::io::read_to_string_regular(&cfg_path).map_err(io_err(&cfg_path))?;
        let config = Config::from_json(&cfg_text)?;
        let files = checkpoint::safetensors_files(path)?;
        let mut h = Sha256::new();
        h.update(cfg_text.as_bytes());
        for f in &files.files {
            h.update(file_sha256(f)?.as_bytes());
        }
        let tensors = checkpoint::read_safetensors(path, device)?
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_dtype(dtype)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        let tokenizer = qwen2::read_tokenizer_json(&path.join("tokenizer.json"))?;
        let name = path.file_name().map_or("qwen2".into(), |n| n.to_string_lossy().into_owned());
        Ok(Base {
            base: BaseRef::Safetensors { path: path.to_path_buf(), sha256: ckd_core::format::hex(&h.finalize()) },
            name,
            config,
            tensors,
            tokenizer,
        })
    } else {
        Err(TeacherError::Invalid(format!("{}: no such GGUF file or model directory", path.display())))
    }
}

/// How a frozen base's weights are held for inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BaseWeights {
    /// A GGUF's own quantized weights where this CPU has candle's int8 tiles (x86 with AVX-512
    /// VNNI or AVX-VNNI: about 2x the f32 speed at under half the memory); f32 elsewhere, where
    /// candle's generic quantized dot products are about 25x slower than its f32 matmul.
    /// Safetensors weights run in the run dtype.
    #[default]
    Auto,
    /// A GGUF's own quantized weights whatever the CPU.
    Quantized,
    /// Every weight dequantized to the run dtype (what LoRA fine-tuning uses).
    F32,
}

impl BaseWeights {
    /// Whether a GGUF base on `device` runs on its quantized weights.
    pub fn quantized_on(self, device: DeviceSpec) -> bool {
        device == DeviceSpec::Cpu
            && match self {
                Self::Auto => crate::models::qlinear::vnni_level().is_some(),
                Self::Quantized => true,
                Self::F32 => false,
            }
    }
}

impl std::str::FromStr for BaseWeights {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "quantized" => Ok(Self::Quantized),
            "f32" => Ok(Self::F32),
            _ => Err(format!("base weights `{s}`: expected auto, quantized or f32")),
        }
    }
}

/// A GGUF base on its own quantized weights (CPU, inference only), as [`Base`] holds a
/// dequantized one.
pub struct QuantizedBase {
    /// Reference written into the manifest.
    pub base: BaseRef,
    /// Display name.
    pub name: String,
    /// Config.
    pub config: Config,
    /// The model ([`crate::models::qlinear`] layers).
    pub model: Qwen2ForCausalLM,
    /// Tokenizer.
    pub tokenizer: tokenizers::Tokenizer,
    /// How the weights were laid out for this CPU's kernels.
    pub packing: crate::models::qlinear::Packing,
}

impl QuantizedBase {
    /// Names the weights and their layout, for feature caches: `gguf:SHA256:quantized-tiles`
    /// or `gguf:SHA256:quantized-native`.
    pub fn key(&self) -> String {
        use crate::models::qlinear::Packing;
        let layout = match self.packing {
            Packing::Tiles => "tiles",
            Packing::Native => "native",
        };
        match &self.base {
            BaseRef::Gguf { sha256, .. } => format!("gguf:{sha256}:quantized-{layout}"),
            BaseRef::Safetensors { sha256, .. } => format!("safetensors:{sha256}:quantized-{layout}"),
            BaseRef::Demo => format!("demo:quantized-{layout}"),
        }
    }
}

/// Loads a GGUF base on its quantized weights, laid out for this CPU ([`Packing::detect`]), and
/// logs the kernels it will run on.
///
/// [`Packing::detect`]: crate::models::qlinear::Packing::detect
pub fn load_base_quantized(path: &Path) -> Result<QuantizedBase> {
    use crate::models::qlinear::{kernel_description, Packing};
    let mut g = open_gguf(path)?;
    let packing = Packing::detect();
    let model = qwen2::quantized_model(&g.content, &mut g.reader, &g.config, packing, &Device::Cpu)?;
    tracing::info!("{}: quantized weights, {}", path.display(), kernel_description(packing));
    let base = BaseRef::Gguf { path: path.to_path_buf(), sha256: g.sha256 };
    Ok(QuantizedBase { base, name: g.name, config: g.config, model, tokenizer: g.tokenizer, packing })
}

/// A pretrained base as a frozen model for features ([`states`](super::states)): the model on
/// `device`, the prompt encoder (the authors' instruction, `max_len` tokens), and a key naming
/// the weights (`gguf:SHA256` or `safetensors:SHA256` in the run dtype; [`QuantizedBase::key`] for a GGUF on
/// its quantized weights, which [`BaseWeights::quantized_on`] decides).
pub fn load_frozen(
    path: &Path,
    device: DeviceSpec,
    max_len: usize,
    weights: BaseWeights,
) -> Result<(Qwen2ForCausalLM, PromptEncoder, String)> {
    if path.is_file() && weights.quantized_on(device) {
        let q = load_base_quantized(path)?;
        let key = q.key();
        return Ok((q.model, PromptEncoder::new(q.tokenizer, max_len)?, key));
    }
    let dev = device.open()?;
    let dtype = device.dtype();
    let b = load_base(path, &dev, dtype)?;
    let key = match &b.base {
        BaseRef::Gguf { sha256, .. } => format!("gguf:{sha256}"),
        BaseRef::Safetensors { sha256, .. } => format!("safetensors:{sha256}"),
        BaseRef::Demo => "demo".to_string(),
    };
    let model = Qwen2ForCausalLM::from_tensors(b.tensors, &b.config, dtype, &dev)?;
    tracing::info!("{}: {}", path.display(), dense_kernel_description(&dev, dtype));
    Ok((model, PromptEncoder::new(b.tokenizer, max_len)?, key))
}
