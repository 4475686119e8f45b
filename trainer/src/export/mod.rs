//! Export of a trained student to ONNX (opset 17), in f32 or int8, built in Rust from the
//! protobuf types of `tract_onnx::pb`; no Python in the export path.
//!
//! - [`build_onnx`]: pure function, model tensors -> ONNX bytes (graph in [`onnx`]).
//! - [`export_student`]: thin driver: reads a saved student directory, builds, checks the
//!   result in tract against the candle model on a fixed probe batch, writes the file
//!   atomically.
//! - [`tract_run`]: running and profiling an exported file in tract (tests, benches, reports).
//!
//! The int8 form is per-output-channel symmetric s8 weights, u8 activations from
//! `DynamicQuantizeLinear`, `MatMulInteger` with i32 accumulation, rescale and bias in f32;
//! see [`onnx`] for the graph and [`quantize`] for the weight quantizer.
//!
//! How tract runs it (tract 0.23.9; per-node profiles from [`tract_run::TractModel::profile`]):
//! `MatMulInteger` is decluttered into an integer `EinSum` and optimized into `OptMatMul` with
//! tract's integer kernels (`avx512vnni_mmm_i32_8x8` on AVX-512 VNNI, `avx2_mmm_i32_8x8` on
//! AVX2), the u8 activations offset to i8 and the zero point folded into the kernel epilogue.
//! Two things make the int8 file slow:
//! - `DynamicQuantizeLinear`: tract-onnx's `DynamicQuantizeLinearU8` is a scalar loop calling
//!   libm's `roundevenf` per element, about half the int8 run time at MiniLM size on VNNI
//!   hosts. The edge runtime registers a drop-in vectorized op with bit-identical results
//!   (`ckd_edge::ops::dynamic_quantize`) until the fix is upstream; the trainer runs stock tract.
//! - On AVX2 hosts without VNNI, `avx2_mmm_i32_8x8`: its i8 inner loop loads A with a legacy
//!   (non-VEX) SSE `movq` while the upper YMM halves are live. On Intel cores that is an
//!   SSE/AVX transition on every K step (0.3 GMAC/s measured on a Xeon with the ISA limited to
//!   AVX2, the 2.6 s MiniLM run); AMD cores have no such penalty (20 GMAC/s). Writing it
//!   `vmovq` removes the penalty; even then the kernel (i8 widened to i16, 8 of 16 lanes used)
//!   is about 2.4x slower per MAC than tract's f32 FMA kernel, so on AVX2-only hosts the f32
//!   file is the faster one whatever the int8 graph form.

pub mod graph;
pub mod onnx;
pub mod quantize;
pub mod tract_run;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::io::{sha256_hex, write_atomic};
use crate::models::bert::{inspect_checkpoint, BertError, BertForMultiLabel, Config, HeadConfig};
use crate::student::StudentConfig;

pub use onnx::{BuildOptions, GraphStats, Int8Form, LinearKind, LinearKinds, ATTENTION_MASK, INPUT_IDS, LOGITS};
pub use tract_run::{LoadOptions, Profile, TractModel};

/// Largest |logit| difference between the f32 export in tract and the candle model that
/// [`export_student`] accepts on its probe batch. The parity tests hold 1e-4; this guard only
/// catches a broken graph.
pub const PROBE_F32_MAX_LOGIT_DIFF: f32 = 1e-3;
/// Largest per-label probability difference between the int8 export in tract and the candle
/// model that [`export_student`] accepts on its probe batch. A guard against broken graphs,
/// not an accuracy goal: the trained demo student measures 0.005 on its test split, MiniLM
/// with a trained-like head up to 0.08 (see the export parity tests).
pub const PROBE_INT8_MAX_PROB_DIFF: f32 = 0.15;

/// Numeric precision of the exported encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    F32,
    /// Encoder linears as integer matmuls (dynamic u8 activations x per-channel s8 weights).
    Int8,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        }
    }
}

/// Errors of exporting a model.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {msg}")]
    Json { path: PathBuf, msg: String },
    #[error("model: {0}")]
    Bert(#[from] BertError),
    #[error(transparent)]
    Checkpoint(#[from] crate::models::checkpoint::CheckpointError),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// The student directory is incomplete, damaged or invalid.
    #[error("student: {0}")]
    Student(#[from] crate::student::StudentError),
    #[error("tensor `{0}` is missing")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch { name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("tensor `{name}` has a non-finite value at flat index {index}")]
    NonFinite { name: String, index: usize },
    #[error("ONNX graph: {0}")]
    Graph(String),
    #[error("tract: {0}")]
    Tract(String),
    #[error("{0}")]
    Invalid(String),
    #[error("exported {precision} model disagrees with the candle model on the probe batch: {what}")]
    Parity { precision: &'static str, what: String },
}

/// Builds the ONNX bytes of a BERT multi-label model. `tensors` holds the model's tensors under
/// their model names (no `bert.` prefix); see [`onnx::build_model`]. Pure: no I/O.
pub fn build_onnx(
    cfg: &Config,
    head: &HeadConfig,
    tensors: &HashMap<String, Tensor>,
    opts: BuildOptions,
) -> Result<(Vec<u8>, GraphStats), ExportError> {
    let (model, stats) = onnx::build_model(cfg, head, tensors, opts)?;
    Ok((model.encode_to_vec(), stats))
}

/// The probe check of an export: the exported file in tract vs the candle model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeCheck {
    /// Shape of the probe batch [batch, seq] (second row padded).
    pub shape: [usize; 2],
    pub max_abs_logit_diff: f32,
    pub max_abs_prob_diff: f32,
}

/// What [`export_student`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportReport {
    pub path: PathBuf,
    pub precision: Precision,
    pub bytes: usize,
    /// SHA-256 (hex) of the written file.
    pub sha256: String,
    /// The external data file, when written ([`ExportOptions::external_data`]).
    pub external_data: Option<ExternalData>,
    /// Whether the word embedding table is stored as int8 ([`BuildOptions::int8_embeddings`]).
    pub int8_embeddings: bool,
    pub nodes: usize,
    pub int8_linears: usize,
    pub f32_linears: usize,
    pub num_labels: usize,
    pub probe: ProbeCheck,
}

/// An external data file written by an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExternalData {
    pub path: PathBuf,
    pub bytes: usize,
    /// SHA-256 (hex).
    pub sha256: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io { path: path.to_path_buf(), source }
}

/// Model tensors of a checkpoint under their model names: a `bert.` prefix, when the
/// checkpoint has one, is dropped from the encoder tensors.
pub fn model_tensors(tensors: HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>, ExportError> {
    let layout = inspect_checkpoint(tensors.keys().map(String::as_str))?;
    let prefix = layout.prefix.as_str();
    Ok(tensors
        .into_iter()
        .map(|(k, v)| match k.strip_prefix(prefix) {
            Some(s) if !prefix.is_empty() => (s.to_string(), v),
            _ => (k, v),
        })
        .collect())
}

/// A deterministic probe batch for `cfg`: 2 rows of `seq` tokens, the second padded to about
/// half. Token ids are spread over the vocabulary; position 0 is id 101 when the vocabulary has
/// it ([CLS] in BERT vocabularies), else 1.
pub fn probe_batch(cfg: &Config, seq: usize) -> (Vec<i64>, Vec<i64>) {
    let seq = seq.clamp(1, cfg.max_position_embeddings);
    let v = cfg.vocab_size as u64;
    let cls = if v > 101 { 101 } else { 1 % v as i64 };
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut ids = Vec::with_capacity(2 * seq);
    let mut mask = Vec::with_capacity(2 * seq);
    for (row, len) in [seq, seq.div_ceil(2)].into_iter().enumerate() {
        for i in 0..seq {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407 + row as u64);
            let id = if i == 0 { cls } else { ((state >> 33) % v) as i64 };
            let real = i < len;
            ids.push(if real { id } else { 0 });
            mask.push(i64::from(real));
        }
    }
    (ids, mask)
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Max |a - b| over logits and over their sigmoids.
pub fn max_diffs(a: &[f32], b: &[f32]) -> (f32, f32) {
    a.iter()
        .zip(b)
        .fold((0f32, 0f32), |(dl, dp), (x, y)| ((x - y).abs().max(dl), (sigmoid(*x) - sigmoid(*y)).abs().max(dp)))
}

/// Logits [batch * L] of the candle model for i64 inputs [batch, seq].
pub fn candle_logits(
    model: &BertForMultiLabel,
    ids: &[i64],
    mask: &[i64],
    batch: usize,
    seq: usize,
) -> Result<Vec<f32>, ExportError> {
    let dev = Device::Cpu;
    let ids = Tensor::from_slice(ids, (batch, seq), &dev)?;
    let mask = Tensor::from_slice(mask, (batch, seq), &dev)?;
    let out = model.forward(&ids, &mask, None)?;
    Ok(out.logits.flatten_all()?.to_vec1::<f32>()?)
}

/// Exports the student saved in `dir` (`config.json` {bert, head, max_len},
/// `model.safetensors`, both checked against the directory's `checksums.json`, see
/// [`crate::student::save_student`]) to the ONNX file `out`, written atomically. Before writing, the
/// built file is run in tract on a probe batch and compared with the candle model; a
/// disagreement beyond [`PROBE_F32_MAX_LOGIT_DIFF`] (f32) or [`PROBE_INT8_MAX_PROB_DIFF`]
/// (int8) is an error and nothing is written.
pub fn export_student(dir: &Path, out: &Path, precision: Precision) -> Result<ExportReport, ExportError> {
    export_student_with(dir, out, &ExportOptions::new(precision))
}

/// [`export_student`] with every option.
pub fn export_student_with(dir: &Path, out: &Path, opts: &ExportOptions) -> Result<ExportReport, ExportError> {
    // Read through the student's checksum list: damaged weights are never exported.
    let files = crate::student::open_student(dir)?;
    let cfg: StudentConfig = crate::student::read_student_json(&files, dir, "config.json")?;
    let tensors = model_tensors(files.tensors("model.safetensors").map_err(crate::student::StudentError::from)?)?;
    export_tensors_with(&cfg.bert, &cfg.head, &tensors, cfg.max_len, out, opts)
}

/// How [`export_tensors_with`] builds and writes a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// The graph to build.
    pub build: BuildOptions,
    /// Write the tensors of at least [`EXTERNAL_MIN_BYTES`] to `<out>.data` as ONNX external
    /// data (see [`graph::externalize`]) and keep only the graph in `out`. Readers then load
    /// tensor by tensor instead of holding the whole protobuf: what keeps the edge runtime's
    /// peak memory near the model's size. Bundles are written this way.
    pub external_data: bool,
}

impl ExportOptions {
    /// The default build of `precision`, in one file.
    pub fn new(precision: Precision) -> Self {
        Self { build: BuildOptions::new(precision), external_data: false }
    }
}

/// Initializers of at least this many bytes go to the external data file
/// ([`ExportOptions::external_data`]); smaller ones (scalars, shapes, most biases) stay inline.
/// (The threshold of the ONNX Python tooling's `convert_model_to_external_data`.)
pub const EXTERNAL_MIN_BYTES: usize = 1024;

/// Name of the external data file of the model file `model`: `<file name>.data`, beside it.
pub fn external_data_name(model: &Path) -> String {
    format!("{}.data", model.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())
}

/// [`export_student`] from tensors already in memory (model names). `probe_len` is the probe
/// batch's sequence length (clamped to the model's positions).
pub fn export_tensors(
    cfg: &Config,
    head: &HeadConfig,
    tensors: &HashMap<String, Tensor>,
    probe_len: usize,
    out: &Path,
    precision: Precision,
) -> Result<ExportReport, ExportError> {
    export_tensors_with(cfg, head, tensors, probe_len, out, &ExportOptions::new(precision))
}

/// [`export_tensors`] with every option. The probe check compares probabilities (int8 guard)
/// whenever the build is lossy: int8 linears or int8 embeddings. With external data, the
/// data file is written (atomically) before the model file that refers to it.
pub fn export_tensors_with(
    cfg: &Config,
    head: &HeadConfig,
    tensors: &HashMap<String, Tensor>,
    probe_len: usize,
    out: &Path,
    opts: &ExportOptions,
) -> Result<ExportReport, ExportError> {
    let precision = opts.build.precision;
    let (mut model, stats) = onnx::build_model(cfg, head, tensors, opts.build)?;
    let bytes = model.encode_to_vec();
    let probe = probe_check(cfg, head, tensors, &bytes, probe_len.min(64))?;
    let lossy = precision == Precision::Int8 || opts.build.int8_embeddings;
    if !lossy && probe.max_abs_logit_diff > PROBE_F32_MAX_LOGIT_DIFF {
        return Err(ExportError::Parity {
            precision: precision.as_str(),
            what: format!("max |logit diff| {} > {PROBE_F32_MAX_LOGIT_DIFF}", probe.max_abs_logit_diff),
        });
    }
    if lossy && probe.max_abs_prob_diff > PROBE_INT8_MAX_PROB_DIFF {
        return Err(ExportError::Parity {
            precision: precision.as_str(),
            what: format!("max |prob diff| {} > {PROBE_INT8_MAX_PROB_DIFF}", probe.max_abs_prob_diff),
        });
    }
    let (bytes, data) = if opts.external_data {
        drop(bytes);
        let name = external_data_name(out);
        let blob = graph::externalize(&mut model, &name, EXTERNAL_MIN_BYTES);
        let path = out.with_file_name(&name);
        write_atomic(&path, &blob).map_err(io_err(&path))?;
        let data = ExternalData { path, bytes: blob.len(), sha256: sha256_hex(&blob) };
        (model.encode_to_vec(), Some(data))
    } else {
        (bytes, None)
    };
    write_atomic(out, &bytes).map_err(io_err(out))?;
    Ok(ExportReport {
        path: out.to_path_buf(),
        precision,
        bytes: bytes.len(),
        sha256: sha256_hex(&bytes),
        external_data: data,
        int8_embeddings: opts.build.int8_embeddings,
        nodes: stats.nodes,
        int8_linears: stats.int8_linears,
        f32_linears: stats.f32_linears,
        num_labels: head.num_labels,
        probe,
    })
}

/// Runs `onnx` in tract and the candle model built from `tensors` on [`probe_batch`].
pub fn probe_check(
    cfg: &Config,
    head: &HeadConfig,
    tensors: &HashMap<String, Tensor>,
    onnx: &[u8],
    seq: usize,
) -> Result<ProbeCheck, ExportError> {
    let (ids, mask) = probe_batch(cfg, seq);
    let seq = ids.len() / 2;
    let loaded = BertForMultiLabel::from_checkpoint(tensors, cfg, head, &Device::Cpu, 0)?;
    if !loaded.report.fresh_init.is_empty() {
        return Err(ExportError::MissingTensor(loaded.report.fresh_init.join(", ")));
    }
    let want = candle_logits(&loaded.model, &ids, &mask, 2, seq)?;
    let got = TractModel::load(onnx, None)?.run(&ids, &mask, 2, seq)?;
    if got.len() != want.len() {
        return Err(ExportError::Tract(format!("{} logits, expected {}", got.len(), want.len())));
    }
    let (dl, dp) = max_diffs(&want, &got);
    Ok(ProbeCheck { shape: [2, seq], max_abs_logit_diff: dl, max_abs_prob_diff: dp })
}
