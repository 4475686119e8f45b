//! The teacher: a Qwen2 LLM (a real Qwen2.5 GGUF / HF checkpoint, or the demo's small
//! Qwen2-architecture model trained on the cohort), fine-tuned on the CKD-EHR answers, then
//! frozen with a phenotype head on the last prompt token's final hidden state. It produces the
//! soft labels and the attention evidence the student learns from.
//!
//! Stages (each a function of its inputs; files are read and written by the thin drivers here):
//! - [`sft`]: supervised fine-tuning on the answer tokens (`Disease that the patient may
//!   acquire: ...`): LoRA adapters on a pretrained base, or every weight of the demo model.
//! - [`head`]: features (final hidden state of the last prompt token, LLM frozen) computed once
//!   and cached, then `Linear(H -> 25)` trained with BCE on them.
//! - [`label`]: soft labels (sigmoid(head / T)) and multi-granularity attention evidence, per
//!   sample, sharded (`--shard i/N`) and resumable; [`label::merge`] joins shards.
//! - [`explain`]: which concepts carried the evidence of a sample.
//!
//! A trained teacher is a directory ([`TeacherDir`]): `teacher.json` (manifest), `config.json`
//! (Qwen2 config), `tokenizer.json`, `head.safetensors`, and `adapter/` (PEFT adapter) or
//! `model.safetensors` (demo weights), plus `curves.jsonl`.

pub mod demo;
pub mod explain;
pub mod head;
pub mod label;
pub mod oof;
pub mod prompt;
pub mod semi;
pub mod sft;
pub mod states;
pub mod train;
pub mod zero_shot;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use ckd_core::evidence::TeacherIdentity;
use ckd_core::visit::Sample;
use ckd_core::LabelSpace;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::io::{pretty_json, write_atomic};
use crate::models::checkpoint;
use crate::models::lora::{LoraConfig, LoraError};
use crate::models::peft;
use crate::models::qwen2::{self, Config, Qwen2Error, Qwen2ForCausalLM};
use prompt::{chat_answer, chat_prompt};

/// Error of a teacher stage.
#[derive(Debug, thiserror::Error)]
pub enum TeacherError {
    /// Tensor operation failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// The Qwen2 model could not be built or run.
    #[error("model: {0}")]
    Qwen2(#[from] Qwen2Error),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// LoRA adapter problem.
    #[error("adapter: {0}")]
    Lora(#[from] LoraError),
    /// Loss computation failed.
    #[error("loss: {0}")]
    Distill(#[from] crate::distill::DistillError),
    /// Metrics failed.
    #[error("metrics: {0}")]
    Metrics(#[from] ckd_core::metrics::MetricsError),
    /// Tokenizer problem.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A file's content is malformed or inconsistent.
    #[error("{path}: {msg}")]
    Format {
        /// File.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// Invalid settings or inputs.
    #[error("{0}")]
    Invalid(String),
    /// A tensor file could not be written (see [`crate::train_integrity::write_tensors`]).
    #[error(transparent)]
    Integrity(#[from] crate::train_integrity::IntegrityError),
}

/// Result of teacher stages.
pub type Result<T, E = TeacherError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TeacherError + '_ {
    move |source| TeacherError::Io { path: path.to_path_buf(), source }
}

pub(crate) fn fmt_err(path: &Path, msg: impl std::fmt::Display) -> TeacherError {
    TeacherError::Format { path: path.to_path_buf(), msg: msg.to_string() }
}

/// Where the teacher runs: `cpu`, `cuda` (= `cuda:0`) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// CPU.
    Cpu,
    /// CUDA device ordinal (needs the `cuda` cargo feature).
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(format!("device `{s}`: expected cpu, cuda or cuda:N")),
            },
        }
    }
}

impl DeviceSpec {
    /// Opens the device. CUDA without the `cuda` feature is an error that says so.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(n) => {
                if !cfg!(feature = "cuda") {
                    return Err(TeacherError::Invalid(format!(
                        "device cuda:{n}: this build has no CUDA support (rebuild with `--features cuda`)"
                    )));
                }
                Ok(Device::new_cuda(n)?)
            }
        }
    }

    /// The dtype the teacher runs in on this device: f32 on CPU, bf16 on CUDA.
    pub fn dtype(self) -> DType {
        match self {
            Self::Cpu => DType::F32,
            Self::Cuda(_) => DType::BF16,
        }
    }
}

/// The base LLM of a teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BaseRef {
    /// One GGUF file (weights dequantized; tokenizer and chat template embedded).
    Gguf {
        /// File.
        path: PathBuf,
        /// SHA-256 (hex) of the file.
        sha256: String,
    },
    /// An HF directory: `config.json`, `tokenizer.json`, `model.safetensors` or sharded.
    Safetensors {
        /// Directory.
        path: PathBuf,
        /// SHA-256 (hex) of `config.json` plus every weight file, in name order.
        sha256: String,
    },
    /// The demo's small Qwen2-architecture model, trained from scratch on the cohort; its
    /// weights are `model.safetensors` in the teacher directory.
    Demo,
}

/// `teacher.json`: what a trained teacher directory holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherManifest {
    /// Always [`TEACHER_FORMAT`].
    pub format: String,
    /// [`TEACHER_VERSION`].
    pub version: u32,
    /// Label-space hash (hex) the head was trained for.
    pub label_space_hash: String,
    /// Human-readable model name.
    pub model_name: String,
    /// Base model.
    pub base: BaseRef,
    /// LoRA settings, when adapters were trained (`adapter/` holds them).
    pub lora: Option<LoraConfig>,
    /// Maximum prompt tokens (longer inputs are cut at the end of the input, see [`PromptEncoder`]).
    pub max_len: usize,
    /// The instruction of the prompts of samples that carry none of their own (rendered from
    /// MIMIC-III or the cohort; JSONL records keep theirs): the authors' instruction
    /// (`ckd_core::jsonl::INSTRUCTION`) from format v2 on. Absent in v1, whose teachers were
    /// prompted with `ckd_core::jsonl::LEGACY_INSTRUCTION` ([`TeacherManifest::prompt_instruction`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
    /// Per-label decision thresholds tuned on validation (head probabilities at temperature 1).
    pub thresholds: Vec<f32>,
    /// SHA-256 of every weight file of the directory (`head.safetensors`, `adapter/...`,
    /// `model.safetensors`), by relative path.
    pub files: Vec<(String, String)>,
    /// Fine-tuning and head training reports.
    pub training: serde_json::Value,
}

/// Name of the teacher manifest format.
pub const TEACHER_FORMAT: &str = "ckd-teacher";
/// Version of the teacher manifest format written.
///
/// - v2: `instruction` records the instruction of prompts for samples without one of their own,
///   the CKD-EHR authors' (`Determine that the patient has one or more of the following diseases
///   at the next visit: ` + the 25 names); fine-tuning answers of such samples use the authors'
///   spellings.
/// - v1 (still read): no `instruction` field; those prompts used
///   `ckd_core::jsonl::LEGACY_INSTRUCTION` (and answers this project's short names), and a v1
///   teacher keeps being prompted that way, as it was trained.
pub const TEACHER_VERSION: u32 = 2;

impl TeacherManifest {
    /// Parses and checks `teacher.json` (versions 1 and 2, this build's label space). `path`
    /// is used in errors only.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let m: TeacherManifest = serde_json::from_str(text).map_err(|e| fmt_err(path, e))?;
        if m.format != TEACHER_FORMAT || !(1..=TEACHER_VERSION).contains(&m.version) {
            return Err(fmt_err(
                path,
                format!(
                    "format {} v{} (this build reads {TEACHER_FORMAT} v1 to v{TEACHER_VERSION})",
                    m.format, m.version
                ),
            ));
        }
        match (m.version, &m.instruction) {
            (1, Some(_)) => return Err(fmt_err(path, "a v1 manifest has no `instruction` field")),
            (v, None) if v >= 2 => return Err(fmt_err(path, format!("v{v} manifest without `instruction`"))),
            _ => {}
        }
        if m.label_space_hash != label_space_hex() {
            return Err(fmt_err(
                path,
                format!("label space {} differs from this build's {}", m.label_space_hash, label_space_hex()),
            ));
        }
        Ok(m)
    }

    /// The instruction this teacher was trained with for samples without their own.
    pub fn prompt_instruction(&self) -> &str {
        self.instruction.as_deref().unwrap_or(ckd_core::jsonl::LEGACY_INSTRUCTION)
    }
}

/// Paths inside a teacher directory.
#[derive(Debug, Clone)]
pub struct TeacherDir(pub PathBuf);

impl TeacherDir {
    /// `teacher.json`.
    pub fn manifest(&self) -> PathBuf {
        self.0.join("teacher.json")
    }
    /// `config.json` (Qwen2 config, HF layout).
    pub fn config(&self) -> PathBuf {
        self.0.join("config.json")
    }
    /// `tokenizer.json`.
    pub fn tokenizer(&self) -> PathBuf {
        self.0.join("tokenizer.json")
    }
    /// `head.safetensors` (`weight` [25, H], `bias` [25]).
    pub fn head(&self) -> PathBuf {
        self.0.join("head.safetensors")
    }
    /// `adapter/` (PEFT files).
    pub fn adapter(&self) -> PathBuf {
        self.0.join("adapter")
    }
    /// `model.safetensors` (demo teacher weights).
    pub fn weights(&self) -> PathBuf {
        self.0.join("model.safetensors")
    }
    /// `features/` (cached head features).
    pub fn features(&self) -> PathBuf {
        self.0.join("features")
    }
    /// `curves.jsonl`.
    pub fn curves(&self) -> PathBuf {
        self.0.join("curves.jsonl")
    }
}

pub use crate::io::sha256_hex;

/// SHA-256 (hex) of a file ([`crate::io::file_sha256`]), the error naming the file.
pub fn file_sha256(path: &Path) -> Result<String> {
    crate::io::file_sha256(path).map_err(io_err(path))
}

/// The label-space hash as the manifests write it.
pub fn label_space_hex() -> String {
    format!("{:016x}", LabelSpace.hash())
}

// ---------------------------------------------------------------------------------------------
// Prompts
// ---------------------------------------------------------------------------------------------

/// One tokenized prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// Token ids of the chat prompt (ends with `<|im_start|>assistant\n`).
    pub ids: Vec<u32>,
    /// Per token, its byte span in the sample's input text, or `None` for tokens outside it
    /// (template, instruction, special tokens).
    pub input_spans: Vec<Option<(usize, usize)>>,
    /// Whether the input was cut to fit `max_len`.
    pub truncated: bool,
}

/// Tokenizes CKD-EHR chat prompts (and answers, for fine-tuning) with the teacher's tokenizer.
pub struct PromptEncoder {
    tok: tokenizers::Tokenizer,
    max_len: usize,
    instruction: String,
}

/// The instruction of a sample's prompt: its raw JSONL instruction when present, else `default`.
pub fn instruction_of<'a>(sample: &'a Sample, default: &'a str) -> &'a str {
    sample.raw.as_ref().map_or(default, |r| r.instruction.as_str())
}

impl PromptEncoder {
    /// `max_len` bounds the prompt (plus answer, in [`Self::encode_sft`]) in tokens. Samples
    /// without an instruction of their own get the authors' (`ckd_core::jsonl::INSTRUCTION`);
    /// see [`Self::with_instruction`].
    pub fn new(mut tok: tokenizers::Tokenizer, max_len: usize) -> Result<Self> {
        tok.with_padding(None);
        tok.with_truncation(None).map_err(|e| TeacherError::Tokenizer(e.to_string()))?;
        Ok(Self { tok, max_len, instruction: ckd_core::jsonl::INSTRUCTION.to_string() })
    }

    /// The same encoder with another instruction for samples without their own (a v1 teacher's).
    pub fn with_instruction(mut self, instruction: &str) -> Self {
        self.instruction = instruction.to_string();
        self
    }

    /// The instruction used for samples without their own.
    pub fn default_instruction(&self) -> &str {
        &self.instruction
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tok
    }

    /// Maximum tokens.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token id of `<|endoftext|>` (used as padding; masked everywhere).
    pub fn pad_id(&self) -> Result<u32> {
        self.tok
            .token_to_id(qwen2::ENDOFTEXT)
            .ok_or_else(|| TeacherError::Tokenizer(format!("the tokenizer has no {}", qwen2::ENDOFTEXT)))
    }

    /// The sample's instruction (its raw JSONL instruction when present, else
    /// [`Self::default_instruction`]).
    pub fn instruction<'a>(&'a self, sample: &'a Sample) -> &'a str {
        instruction_of(sample, &self.instruction)
    }

    /// Tokenizes the chat prompt of `input` within `budget` tokens: when longer, tokens are
    /// dropped from the end of the input (the template after it is kept, so the last prompt
    /// token is always `\n` after `assistant`).
    fn encode_prompt(&self, instruction: &str, input: &str, budget: usize) -> Result<Prompt> {
        let p = chat_prompt(instruction, input);
        let enc = self.tok.encode(p.text.as_str(), false).map_err(|e| TeacherError::Tokenizer(e.to_string()))?;
        let ids = enc.get_ids();
        let offsets = enc.get_offsets();
        let r = &p.input_range;
        let spans: Vec<Option<(usize, usize)>> = offsets
            .iter()
            .map(|&(a, b)| {
                let (a, b) = (a.max(r.start), b.min(r.end));
                (a < b).then(|| (a - r.start, b - r.start))
            })
            .collect();
        if ids.len() <= budget {
            return Ok(Prompt { ids: ids.to_vec(), input_spans: spans, truncated: false });
        }
        // Tokens after the input (the template's tail) are kept whole.
        let tail_start = offsets.iter().position(|&(a, _)| a >= r.end).unwrap_or(ids.len());
        let tail = ids.len() - tail_start;
        let first_input = spans.iter().position(Option::is_some).unwrap_or(tail_start);
        if budget < first_input + tail + 1 {
            return Err(TeacherError::Invalid(format!(
                "max length {budget} cannot hold the prompt template ({} tokens) and any input",
                first_input + tail
            )));
        }
        let keep = budget - tail;
        let mut out_ids = ids[..keep].to_vec();
        out_ids.extend_from_slice(&ids[tail_start..]);
        let mut out_spans = spans[..keep].to_vec();
        out_spans.extend_from_slice(&spans[tail_start..]);
        Ok(Prompt { ids: out_ids, input_spans: out_spans, truncated: true })
    }

    /// The prompt of a sample for labelling / features.
    pub fn encode(&self, sample: &Sample) -> Result<Prompt> {
        self.encode_prompt(self.instruction(sample), &sample.text(), self.max_len)
    }

    /// A fine-tuning sequence: prompt ids followed by the answer's ids (`{output}<|im_end|>\n`),
    /// and the index of the first answer token. The prompt is cut so that the whole answer fits.
    pub fn encode_sft(&self, sample: &Sample) -> Result<(Vec<u32>, usize, bool)> {
        let output = match &sample.raw {
            Some(r) => r.output.clone(),
            None => ckd_core::jsonl::render_output(sample.labels),
        };
        let ans = self
            .tok
            .encode(chat_answer(&output).as_str(), false)
            .map_err(|e| TeacherError::Tokenizer(e.to_string()))?;
        let ans = ans.get_ids();
        if ans.len() + 8 > self.max_len {
            return Err(TeacherError::Invalid(format!(
                "sample {}: the answer alone takes {} tokens of max length {}",
                sample.id,
                ans.len(),
                self.max_len
            )));
        }
        let p = self.encode_prompt(self.instruction(sample), &sample.text(), self.max_len - ans.len())?;
        let start = p.ids.len();
        let mut ids = p.ids;
        ids.extend_from_slice(ans);
        Ok((ids, start, p.truncated))
    }
}

/// Right-pads rows with `pad`: ids [B, T] u32 and mask [B, T] u32 (1 real, 0 pad).
pub fn pad_rows(rows: &[&[u32]], pad: u32, device: &Device) -> Result<(Tensor, Tensor)> {
    let t = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    if t == 0 {
        return Err(TeacherError::Invalid("empty batch".into()));
    }
    let mut ids = Vec::with_capacity(rows.len() * t);
    let mut mask = Vec::with_capacity(rows.len() * t);
    for r in rows {
        ids.extend_from_slice(r);
        ids.extend(std::iter::repeat_n(pad, t - r.len()));
        mask.extend(std::iter::repeat_n(1u32, r.len()));
        mask.extend(std::iter::repeat_n(0u32, t - r.len()));
    }
    Ok((Tensor::from_vec(ids, (rows.len(), t), device)?, Tensor::from_vec(mask, (rows.len(), t), device)?))
}

// ---------------------------------------------------------------------------------------------
// Loading bases and trained teachers
// ---------------------------------------------------------------------------------------------

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

/// A pretrained base as a frozen model for features ([`states`]): the model on `device`, the
/// prompt encoder (the authors' instruction, `max_len` tokens), and a key naming the weights
/// (`gguf:SHA256` or `safetensors:SHA256` in the run dtype; [`QuantizedBase::key`] for a GGUF on
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

/// Loads a teacher directory written by [`save_teacher`], checking its manifest and every
/// weight file's hash. The base of a GGUF / safetensors teacher is read from the path recorded
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

/// One line naming the kernels a model on dense `dtype` weights runs on `dev`.
pub fn dense_kernel_description(dev: &Device, dtype: DType) -> String {
    let on =
        if dev.is_cpu() { "the CPU (candle's dense matmul, gemm crate)" } else { "the GPU (candle's CUDA matmul)" };
    format!("dense {} weights on {on}", format!("{dtype:?}").to_lowercase())
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

/// Writes `teacher.json` last (atomically), after computing the hashes of the weight files that
/// the stages already wrote into `dir`.
pub fn save_manifest(dir: &Path, mut manifest: TeacherManifest, weight_files: &[&str]) -> Result<TeacherManifest> {
    manifest.files = weight_files
        .iter()
        .map(|rel| Ok((rel.to_string(), file_sha256(&dir.join(rel))?)))
        .collect::<Result<Vec<_>>>()?;
    let p = TeacherDir(dir.to_path_buf()).manifest();
    write_atomic(&p, pretty_json(&manifest).as_bytes()).map_err(io_err(&p))?;
    Ok(manifest)
}

#[cfg(test)]
mod tests;
