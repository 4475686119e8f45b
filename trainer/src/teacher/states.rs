//! Pooled hidden states of a frozen LLM: the representations a phenotype head can be fitted on.
//!
//! For each prompt (the teacher's ChatML prompt of a visit, [`PromptEncoder::encode`]) and each
//! requested layer `k` (a count of decoder layers; `k = L` is the final state after the last
//! RMSNorm, earlier `k` the raw residual stream), two pooled vectors of `H` floats:
//! - `last`: the state at the last prompt token (what the paper's head reads at `k = L`);
//! - `input-mean`: the mean of the states over the tokens of the visit text (`Prompt::input_spans`).
//!
//! Every prompt starts with the same system prompt and instruction, so the keys and values of
//! that shared prefix are computed once ([`shared_prefix`]) and each prompt runs only its own
//! tokens on a copy of that cache: the result is the same function as a full forward pass
//! (a test checks it against one), at roughly half the cost for the authors' prompt.
//!
//! Long runs write one verified file per chunk of prompts (`chunk-NNNNN-KEY.ckds`, an envelope of
//! `ckd_core::format`); the key hashes the model, the layers and the chunk's token ids, so an
//! interrupted run resumes at the first missing chunk and a changed input never reuses a stale
//! chunk.
//!
//! Layout of [`States::data`]: `[N, layers, 2, H]` row-major (sample, layer, pool, hidden).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ckd_core::visit::Sample;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{fmt_err, io_err, Prompt, PromptEncoder, Result, TeacherError};
use crate::models::qwen2::{KvCache, Qwen2ForCausalLM};

/// The two poolings, in storage order.
pub const POOLS: [&str; 2] = ["last", "input-mean"];

const MAGIC: &[u8; 8] = b"CKDSTATE";
const VERSION: u16 = 1;

/// One chunk file's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Chunk {
    key: String,
    layers: Vec<u32>,
    hidden: u32,
    ids: Vec<String>,
    data: Vec<f32>,
}

/// Pooled states of `n` samples.
#[derive(Debug, Clone, PartialEq)]
pub struct States {
    /// Sample ids, in order.
    pub ids: Vec<String>,
    /// Layer counts.
    pub layers: Vec<usize>,
    /// Hidden size.
    pub hidden: usize,
    /// `[N, layers, 2, H]`.
    pub data: Vec<f32>,
}

impl States {
    /// The features of one (layer, pool) pair for every sample: `[N * H]`.
    pub fn view(&self, layer: usize, pool: usize) -> Result<Vec<f32>> {
        let li = self.layers.iter().position(|&k| k == layer).ok_or_else(|| {
            TeacherError::Invalid(format!("layer {layer} was not extracted (have {:?})", self.layers))
        })?;
        if pool >= POOLS.len() {
            return Err(TeacherError::Invalid(format!("pool {pool}: expected 0 (last) or 1 (input-mean)")));
        }
        let (h, per) = (self.hidden, self.layers.len() * POOLS.len() * self.hidden);
        let off = (li * POOLS.len() + pool) * h;
        Ok(self.data.chunks_exact(per).flat_map(|row| row[off..off + h].iter().copied()).collect())
    }

    /// Rows of `ids` (each must be present), in that order, as a new `States`.
    pub fn select(&self, ids: &[String]) -> Result<States> {
        let per = self.layers.len() * POOLS.len() * self.hidden;
        let index: std::collections::HashMap<&str, usize> =
            self.ids.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
        let mut data = Vec::with_capacity(ids.len() * per);
        for id in ids {
            let i =
                *index.get(id.as_str()).ok_or_else(|| TeacherError::Invalid(format!("no states for sample {id}")))?;
            data.extend_from_slice(&self.data[i * per..(i + 1) * per]);
        }
        Ok(States { ids: ids.to_vec(), layers: self.layers.clone(), hidden: self.hidden, data })
    }
}

/// Length of the token prefix shared by every prompt, cut before the first token of any
/// prompt's visit text (so every input token is in each prompt's own part) and before each
/// prompt's last token (so every prompt has at least one token of its own).
pub fn shared_prefix(prompts: &[Prompt]) -> usize {
    let Some(first) = prompts.first() else { return 0 };
    let mut n = first.ids.len();
    for p in prompts {
        let common = first.ids.iter().zip(&p.ids).take_while(|(a, b)| a == b).count();
        let input = p.input_spans.iter().position(Option::is_some).unwrap_or(p.ids.len());
        n = n.min(common).min(input).min(p.ids.len().saturating_sub(1));
    }
    n
}

/// Keys and values of the shared prefix `ids[..len]` (an empty cache when `len` is 0).
pub fn prefill(model: &Qwen2ForCausalLM, ids: &[u32], len: usize) -> Result<KvCache> {
    let mut cache = KvCache::new();
    if len > 0 {
        let x = Tensor::from_slice(&ids[..len], (1, len), model.device())?;
        model.forward_cached(&x, &mut cache)?;
    }
    Ok(cache)
}

/// Pooled states `[layers, 2, H]` of one prompt whose first `prefix.len()` tokens are in `prefix`.
pub fn pooled(model: &Qwen2ForCausalLM, prefix: &KvCache, prompt: &Prompt, layers: &[usize]) -> Result<Vec<f32>> {
    let start = prefix.len();
    if start >= prompt.ids.len() {
        return Err(TeacherError::Invalid(format!(
            "shared prefix of {start} tokens leaves nothing of a {}-token prompt",
            prompt.ids.len()
        )));
    }
    let own = &prompt.ids[start..];
    let x = Tensor::from_slice(own, (1, own.len()), model.device())?;
    let mut cache = prefix.clone();
    let states = model.forward_cached_layers(&x, &mut cache, layers)?;
    let input: Vec<u32> =
        prompt.input_spans[start..].iter().enumerate().filter_map(|(t, s)| s.is_some().then_some(t as u32)).collect();
    let mut out = Vec::new();
    for s in states {
        let s = s.squeeze(0)?.to_dtype(candle_core::DType::F32)?.to_device(&Device::Cpu)?; // [T_own, H]
        out.extend(s.get(own.len() - 1)?.to_vec1::<f32>()?);
        let mean = if input.is_empty() {
            // A prompt with no visit text (impossible for rendered samples): the last state.
            s.get(own.len() - 1)?
        } else {
            s.index_select(&Tensor::new(input.as_slice(), &Device::Cpu)?, 0)?.mean(0)?
        };
        out.extend(mean.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// Key of one chunk: the model, the layers and every prompt's token ids.
fn chunk_key(model_key: &str, layers: &[usize], prompts: &[&Prompt]) -> String {
    let mut h = Sha256::new();
    h.update(b"ckd-states-v1");
    h.update(model_key.as_bytes());
    for &k in layers {
        h.update((k as u64).to_le_bytes());
    }
    for p in prompts {
        h.update((p.ids.len() as u64).to_le_bytes());
        for &id in &p.ids {
            h.update(id.to_le_bytes());
        }
        for s in &p.input_spans {
            h.update([s.is_some() as u8]);
        }
    }
    ckd_core::format::hex(&h.finalize())[..16].to_string()
}

fn chunk_path(dir: &Path, index: usize, key: &str) -> PathBuf {
    dir.join(format!("chunk-{index:05}-{key}.ckds"))
}

fn read_chunk(path: &Path, key: &str, ids: &[String], layers: &[usize], hidden: usize) -> Result<Vec<f32>> {
    let bytes = crate::io::read_regular(path).map_err(io_err(path))?;
    let c: Chunk = ckd_core::format::decode(&bytes, MAGIC, VERSION).map_err(|e| fmt_err(path, e))?;
    let want_layers: Vec<u32> = layers.iter().map(|&k| k as u32).collect();
    if c.key != key || c.ids != ids || c.layers != want_layers || c.hidden as usize != hidden {
        return Err(fmt_err(path, "made for other prompts, layers or model (delete it to recompute)"));
    }
    if c.data.len() != ids.len() * layers.len() * POOLS.len() * hidden {
        return Err(fmt_err(path, format!("{} values for {} samples", c.data.len(), ids.len())));
    }
    Ok(c.data)
}

/// Extraction settings.
#[derive(Debug, Clone, PartialEq)]
pub struct StatesConfig {
    /// Layer counts (increasing, in 1..=L).
    pub layers: Vec<usize>,
    /// Prompts per chunk file.
    pub chunk: usize,
}

/// What an extraction did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatesOutcome {
    /// Chunks computed in this run, and read back from earlier runs.
    pub computed: usize,
    /// Chunks found done.
    pub reused: usize,
    /// Prompt tokens run in this run (the shared prefix counted once).
    pub tokens: usize,
    /// Tokens of the shared prefix.
    pub prefix: usize,
    /// Prompts cut to the encoder's maximum length.
    pub truncated: usize,
    /// Seconds spent computing.
    pub seconds: f64,
}

/// Pooled states of `samples` (in order), resumable through chunk files in `dir`.
/// `model_key` identifies the weights (e.g. the GGUF's SHA-256).
pub fn extract(
    model: &Qwen2ForCausalLM,
    prompts: &PromptEncoder,
    samples: &[Sample],
    cfg: &StatesConfig,
    dir: &Path,
    model_key: &str,
    progress: &ProgressBar,
) -> Result<(States, StatesOutcome)> {
    let hidden = model.config().hidden_size;
    let n_layers = model.config().num_hidden_layers;
    if cfg.chunk == 0 || cfg.layers.is_empty() || cfg.layers.windows(2).any(|w| w[0] >= w[1]) {
        return Err(TeacherError::Invalid(format!("states: chunk {} / layers {:?}", cfg.chunk, cfg.layers)));
    }
    if let Some(k) = cfg.layers.iter().find(|&&k| k == 0 || k > n_layers) {
        return Err(TeacherError::Invalid(format!("layer {k} is not in 1..={n_layers}")));
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let encoded = samples.iter().map(|s| prompts.encode(s)).collect::<Result<Vec<_>>>()?;
    let mut outcome = StatesOutcome { truncated: encoded.iter().filter(|p| p.truncated).count(), ..Default::default() };
    let prefix_len = shared_prefix(&encoded);
    outcome.prefix = prefix_len;
    let per = cfg.layers.len() * POOLS.len() * hidden;
    let mut data = Vec::with_capacity(samples.len() * per);
    let mut cache: Option<KvCache> = None;
    progress.set_length(samples.len() as u64);
    let t0 = std::time::Instant::now();
    for (ci, (chunk, ps)) in samples.chunks(cfg.chunk).zip(encoded.chunks(cfg.chunk)).enumerate() {
        let refs: Vec<&Prompt> = ps.iter().collect();
        let key = chunk_key(model_key, &cfg.layers, &refs);
        let ids: Vec<String> = chunk.iter().map(|s| s.id.clone()).collect();
        let path = chunk_path(dir, ci, &key);
        if path.is_file() {
            data.extend(read_chunk(&path, &key, &ids, &cfg.layers, hidden)?);
            outcome.reused += 1;
            progress.inc(chunk.len() as u64);
            continue;
        }
        if cache.is_none() {
            cache = Some(prefill(model, &encoded[0].ids, prefix_len)?);
            outcome.tokens += prefix_len;
        }
        let prefix = cache.as_ref().ok_or_else(|| TeacherError::Invalid("no prefix cache".into()))?;
        let mut rows = Vec::with_capacity(chunk.len() * per);
        for p in ps {
            rows.extend(pooled(model, prefix, p, &cfg.layers)?);
            outcome.tokens += p.ids.len() - prefix_len;
            progress.inc(1);
        }
        let c = Chunk {
            key,
            layers: cfg.layers.iter().map(|&k| k as u32).collect(),
            hidden: hidden as u32,
            ids,
            data: rows,
        };
        let bytes = ckd_core::format::encode(MAGIC, VERSION, &c).map_err(|e| fmt_err(&path, e))?;
        crate::io::write_atomic(&path, &bytes).map_err(io_err(&path))?;
        data.extend(c.data);
        outcome.computed += 1;
    }
    outcome.seconds = t0.elapsed().as_secs_f64();
    let states =
        States { ids: samples.iter().map(|s| s.id.clone()).collect(), layers: cfg.layers.clone(), hidden, data };
    Ok((states, outcome))
}
