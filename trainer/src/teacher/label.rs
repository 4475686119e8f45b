//! Soft labels and multi-granularity attention evidence (`ckd teacher label`), sharding and
//! merging.
//!
//! Per sample: probabilities `sigmoid(head(h_last) / T)` and the evidence: the attention of the
//! last prompt token over the prompt, averaged over heads and over the last K layers, restricted
//! to the tokens of the input text (their byte spans), then aggregated to words, concepts and
//! fields by [`SampleEvidence::from_tokens`] (normalized per granularity).
//!
//! Sharding: sample `id` belongs to shard `first 8 bytes of sha256(id), little-endian, mod N`,
//! which depends on nothing but the id (stable when the sample order or set changes).
//! A shard's output is rewritten atomically every few batches; re-running the same shard with
//! the same teacher on the same samples keeps the finished records and labels only the rest.
//! An existing output made by another teacher, shard or for other samples (another data file or
//! split) is refused, never mixed in.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use ckd_core::evidence::{DataIdentity, EvidenceFile, SampleEvidence, TeacherIdentity};
use ckd_core::visit::{Rendered, Sample};
use ckd_core::NUM_LABELS;
use indicatif::ProgressBar;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{io_err, pad_rows, LoadedTeacher, Prompt, Result, TeacherError};
use crate::io::write_atomic;

/// Labelling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelConfig {
    /// Temperature T of the soft labels.
    pub temperature: f32,
    /// Final layers averaged for the evidence.
    pub last_k_layers: usize,
    /// Prompts per forward pass.
    pub batch_size: usize,
    /// `(index, count)`: label only this shard.
    pub shard: Option<(u32, u32)>,
    /// Rewrite the output every N batches (0 = only at the end).
    pub save_every: usize,
}

impl Default for LabelConfig {
    fn default() -> Self {
        Self { temperature: 1.0, last_k_layers: 4, batch_size: 8, shard: None, save_every: 20 }
    }
}

/// Parses `i/N` (0-based index, count > 0, i < N).
pub fn parse_shard(s: &str) -> std::result::Result<(u32, u32), String> {
    let bad = || format!("shard `{s}`: expected i/N with 0 <= i < N, e.g. 0/4");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (u32, u32) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// The shard (of `count`) that sample `id` belongs to.
pub fn shard_of(id: &str, count: u32) -> u32 {
    let d = Sha256::digest(id.as_bytes());
    let v = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    (v % count.max(1) as u64) as u32
}

/// Text with concept and field spans of a sample (parsed back for JSONL input).
pub fn rendered(sample: &Sample) -> Result<Rendered> {
    sample.rendered().ok_or_else(|| {
        TeacherError::Invalid(format!(
            "sample {} (line {}): the input does not follow the CKD-EHR layout, so concepts and fields \
             cannot be located for the evidence",
            sample.id,
            sample.raw.as_ref().map_or("?", |r| r.line.as_str())
        ))
    })
}

/// Token weights of the last prompt token: attention rows `layers[l]` [B, N, T] averaged over
/// heads and over the last `k` layers -> [B, T] f32 on the CPU.
pub fn last_token_weights(layers: &[Tensor], k: usize) -> Result<Vec<Vec<f32>>> {
    if layers.is_empty() || k == 0 {
        return Err(TeacherError::Invalid("evidence needs at least one attention layer and K >= 1".into()));
    }
    let k = k.min(layers.len());
    let mut sum: Option<Tensor> = None;
    for l in &layers[layers.len() - k..] {
        let m = l.to_dtype(DType::F32)?.mean(1)?;
        sum = Some(match sum {
            Some(s) => (s + m)?,
            None => m,
        });
    }
    let avg = sum.ok_or_else(|| TeacherError::Invalid("no layers".into()))?.affine(1.0 / k as f64, 0.0)?;
    Ok(avg.to_device(&Device::Cpu)?.to_vec2::<f32>()?)
}

/// The evidence record of `sample`: its probabilities and the token weights of its `prompt`
/// (one per prompt token, e.g. [`last_token_weights`]), kept on the input text's tokens and
/// aggregated to words, concepts and fields ([`SampleEvidence::from_tokens`]); validated.
pub fn sample_record(sample: &Sample, prompt: &Prompt, probs: Vec<f32>, weights: &[f32]) -> Result<SampleEvidence> {
    let r = rendered(sample)?;
    let (spans, w): (Vec<(usize, usize)>, Vec<f32>) =
        prompt.input_spans.iter().zip(weights).filter_map(|(sp, &w)| sp.map(|sp| (sp, w))).unzip();
    let rec = SampleEvidence::from_tokens(sample.id.clone(), probs, &r, &spans, &w);
    rec.validate().map_err(|e| TeacherError::Invalid(format!("evidence of sample {}: {e}", sample.id)))?;
    Ok(rec)
}

/// What a labelling run did.
#[derive(Debug, Clone, Serialize)]
pub struct LabelOutcome {
    /// Samples in this shard.
    pub in_shard: usize,
    /// Records already present in the output (kept).
    pub resumed: usize,
    /// Records labelled now.
    pub labelled: usize,
    /// Prompts cut to the teacher's max length.
    pub truncated: usize,
    /// Prompt tokens processed now.
    pub tokens: u64,
    /// Wall seconds of the labelling.
    pub seconds: f64,
}

/// Labels the samples of the configured shard into `out` (an evidence file), resuming from
/// `out` when it exists with the same teacher identity, shard and samples ([`check_resumable`]).
pub fn label(
    teacher: &LoadedTeacher,
    samples: &[Sample],
    cfg: &LabelConfig,
    out: &Path,
    progress: &ProgressBar,
) -> Result<LabelOutcome> {
    if !(cfg.temperature.is_finite() && cfg.temperature > 0.0) {
        return Err(TeacherError::Invalid(format!("temperature {} must be finite and > 0", cfg.temperature)));
    }
    let identity = teacher.identity(cfg.temperature, cfg.last_k_layers as u32);
    let mine: Vec<&Sample> = match cfg.shard {
        Some((i, n)) => samples.iter().filter(|s| shard_of(&s.id, n) == i).collect(),
        None => samples.iter().collect(),
    };
    let data = DataIdentity::of(samples);
    let mut file =
        EvidenceFile { teacher: identity.clone(), shard: cfg.shard, records: Vec::new(), data: Some(data.clone()) };
    if out.is_file() {
        let bytes = crate::io::read_regular(out).map_err(io_err(out))?;
        let old = EvidenceFile::from_bytes(&bytes).map_err(|e| super::fmt_err(out, e))?;
        check_resumable(out, &old, &file, &mine)?;
        file.records = old.records;
    }
    let done: HashSet<String> = file.records.iter().map(|r| r.id.clone()).collect();
    let resumed = mine.iter().filter(|s| done.contains(&s.id)).count();
    let todo: Vec<&Sample> = mine.iter().copied().filter(|s| !done.contains(&s.id)).collect();

    let pad = teacher.prompts.pad_id()?;
    let encoded = todo.iter().map(|s| teacher.prompts.encode(s)).collect::<Result<Vec<_>>>()?;
    let truncated = encoded.iter().filter(|p| p.truncated).count();
    let mut order: Vec<usize> = (0..todo.len()).collect();
    order.sort_by_key(|&i| encoded[i].ids.len());
    progress.set_length(mine.len() as u64);
    progress.set_position(resumed as u64);
    let t0 = std::time::Instant::now();
    let mut tokens = 0u64;
    let device = teacher.model.device().clone();
    for (b, chunk) in order.chunks(cfg.batch_size.max(1)).enumerate() {
        let rows: Vec<&[u32]> = chunk.iter().map(|&i| encoded[i].ids.as_slice()).collect();
        tokens += rows.iter().map(|r| r.len() as u64).sum::<u64>();
        let (ids, mask) = pad_rows(&rows, pad, &device)?;
        let o = teacher.model.forward_t(&ids, Some(&mask), None, true)?;
        let logits = teacher.head.logits(&o.last_hidden)?.affine(1.0 / cfg.temperature as f64, 0.0)?;
        let probs = candle_nn::ops::sigmoid(&logits)?.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
        let layers = o.last_token_attentions.as_deref().unwrap_or(&[]);
        let weights = last_token_weights(layers, cfg.last_k_layers)?;
        for (row, &i) in chunk.iter().enumerate() {
            file.records.push(sample_record(todo[i], &encoded[i], probs[row].clone(), &weights[row])?);
        }
        progress.inc(chunk.len() as u64);
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        progress.set_message(format!(
            "{:.1} samples/s, {:.0} tokens/s",
            file.records.len().saturating_sub(resumed) as f64 / secs,
            tokens as f64 / secs
        ));
        if cfg.save_every > 0 && (b + 1) % cfg.save_every == 0 {
            write_evidence(out, &file)?;
        }
    }
    write_evidence(out, &file)?;
    Ok(LabelOutcome {
        in_shard: mine.len(),
        resumed,
        labelled: todo.len(),
        truncated,
        tokens,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Checks that `old` (the existing file at `out`) was made by the same run as `new` would be:
/// the same teacher identity and shard, the same samples when `old` records them (version 2),
/// and, in any case, only records of samples in `mine` (the samples of this shard).
pub fn check_resumable(out: &Path, old: &EvidenceFile, new: &EvidenceFile, mine: &[&Sample]) -> Result<()> {
    const FIX: &str = "remove it or choose another --out";
    if old.teacher != new.teacher || old.shard != new.shard {
        return Err(super::fmt_err(
            out,
            format!("exists but was written by another teacher, temperature, K or shard: {FIX}"),
        ));
    }
    if let (Some(was), Some(now)) = (&old.data, &new.data) {
        if was != now {
            return Err(super::fmt_err(
                out,
                format!(
                    "exists but was made for other samples ({}; these are {}): another data file or split? {FIX}",
                    was.short(),
                    now.short()
                ),
            ));
        }
    }
    let ids: HashSet<&str> = mine.iter().map(|s| s.id.as_str()).collect();
    let foreign: Vec<&str> = old.records.iter().map(|r| r.id.as_str()).filter(|id| !ids.contains(id)).collect();
    if !foreign.is_empty() {
        let head: Vec<&str> = foreign.iter().take(5).copied().collect();
        return Err(super::fmt_err(
            out,
            format!(
                "exists but {} of its {} records are not among the samples to label (e.g. {}): it was made for \
                 another data file or split? {FIX}",
                foreign.len(),
                old.records.len(),
                head.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Writes an evidence file atomically.
pub fn write_evidence(path: &Path, file: &EvidenceFile) -> Result<()> {
    let bytes = file.to_bytes().map_err(|e| super::fmt_err(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    write_atomic(path, &bytes).map_err(io_err(path))
}

/// Reads and validates an evidence file.
pub fn read_evidence(path: &Path) -> Result<EvidenceFile> {
    let bytes = crate::io::read_regular(path).map_err(io_err(path))?;
    let f = EvidenceFile::from_bytes(&bytes).map_err(|e| super::fmt_err(path, e))?;
    f.validate().map_err(|e| super::fmt_err(path, e))?;
    Ok(f)
}

/// Why shards cannot be merged. Every problem found is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot merge evidence shards:\n  {}", .problems.join("\n  "))]
pub struct MergeError {
    /// One line per problem.
    pub problems: Vec<String>,
}

/// Merges shard files (with their paths, for messages) into one unsharded file. Checks: one
/// teacher identity; one data identity (the samples the shards were cut from); the same shard count N everywhere and every index 0..N exactly once (or a
/// single unsharded file); every record in the shard its id hashes to; every id exactly once;
/// and, with `expected`, exactly the expected ids. Records come out in `expected` order (else
/// sorted by id).
pub fn merge(files: &[(PathBuf, EvidenceFile)], expected: Option<&[String]>) -> Result<EvidenceFile, MergeError> {
    let mut problems = Vec::new();
    let Some((first_path, first)) = files.first() else {
        return Err(MergeError { problems: vec!["no input files".into()] });
    };
    for (p, f) in files {
        if f.teacher != first.teacher {
            problems.push(format!(
                "{}: teacher {} / {} differs from {}'s {} / {}",
                p.display(),
                f.teacher.model,
                short(&f.teacher),
                first_path.display(),
                first.teacher.model,
                short(&first.teacher)
            ));
        }
    }
    for (p, f) in files {
        if f.data != first.data {
            let name =
                |d: &Option<DataIdentity>| d.as_ref().map_or("samples not recorded (version 1)".into(), |d| d.short());
            problems.push(format!(
                "{}: made for {}, but {} for {}",
                p.display(),
                name(&f.data),
                first_path.display(),
                name(&first.data)
            ));
        }
    }
    let count = first.shard.map(|s| s.1);
    let mut seen_index: BTreeMap<u32, &Path> = BTreeMap::new();
    for (p, f) in files {
        match (f.shard, count) {
            (None, None) if files.len() == 1 => {}
            (None, _) => problems.push(format!("{}: not a shard (no shard header) among several files", p.display())),
            (Some((_, n)), Some(c)) if n != c => {
                problems.push(format!("{}: shard count {n}, but {} has {c}", p.display(), first_path.display()))
            }
            (Some((i, _)), _) => {
                if let Some(prev) = seen_index.insert(i, p) {
                    problems.push(format!("shard {i} given twice: {} and {}", prev.display(), p.display()));
                }
            }
        }
    }
    if let Some(n) = count {
        let missing: Vec<String> = (0..n).filter(|i| !seen_index.contains_key(i)).map(|i| i.to_string()).collect();
        if !missing.is_empty() {
            problems.push(format!("missing shard(s) {} of {n}", missing.join(", ")));
        }
    }
    let mut by_id: BTreeMap<&str, (&SampleEvidence, &Path)> = BTreeMap::new();
    let (mut misplaced, mut repeated) = (Vec::new(), Vec::new());
    for (p, f) in files {
        for r in &f.records {
            if let Some((i, n)) = f.shard {
                if shard_of(&r.id, n) != i {
                    misplaced.push(format!("{} in {} belongs to shard {}/{n}", r.id, p.display(), shard_of(&r.id, n)));
                }
            }
            if let Err(e) = r.validate() {
                problems.push(format!("{}: {e}", p.display()));
            }
            if let Some((_, prev)) = by_id.insert(&r.id, (r, p)) {
                repeated.push(format!("{} in {} and {}", r.id, prev.display(), p.display()));
            }
        }
    }
    problems.extend(summary(&misplaced, "record(s) are in the wrong shard"));
    problems.extend(summary(&repeated, "sample(s) appear more than once"));
    let records: Vec<SampleEvidence> = match expected {
        Some(ids) => {
            let want: HashSet<&str> = ids.iter().map(String::as_str).collect();
            let missing: Vec<&str> = ids.iter().map(String::as_str).filter(|id| !by_id.contains_key(id)).collect();
            if !missing.is_empty() {
                let head: Vec<&str> = missing.iter().take(5).copied().collect();
                problems.push(format!("{} expected sample(s) have no record, e.g. {}", missing.len(), head.join(", ")));
            }
            let extra: Vec<&str> = by_id.keys().copied().filter(|id| !want.contains(id)).collect();
            if !extra.is_empty() {
                let head: Vec<&str> = extra.iter().take(5).copied().collect();
                problems.push(format!(
                    "{} record(s) are not among the expected samples, e.g. {}",
                    extra.len(),
                    head.join(", ")
                ));
            }
            ids.iter().filter_map(|id| by_id.get(id.as_str()).map(|(r, _)| (*r).clone())).collect()
        }
        None => by_id.values().map(|(r, _)| (*r).clone()).collect(),
    };
    if !problems.is_empty() {
        return Err(MergeError { problems });
    }
    Ok(EvidenceFile { teacher: first.teacher.clone(), shard: None, records, data: first.data.clone() })
}

/// One line for a list of like problems: the count and the first five, or nothing when empty.
fn summary(items: &[String], what: &str) -> Option<String> {
    let more = if items.len() > 5 { ", ..." } else { "" };
    (!items.is_empty()).then(|| format!("{} {what}: {}{more}", items.len(), items[..items.len().min(5)].join("; ")))
}

fn short(t: &TeacherIdentity) -> String {
    format!(
        "config {} weights {} T {} K {}",
        &t.config_hash[..t.config_hash.len().min(12)],
        t.adapter_hash.as_deref().map_or("-", |h| &h[..h.len().min(12)]),
        t.temperature,
        t.last_k_layers
    )
}

/// Probabilities of `records` in the order of `ids` ([N * 25]); a missing id is an error.
pub fn probs_for(file: &EvidenceFile, ids: &[String]) -> Result<Vec<f32>> {
    let by = file.by_id();
    let mut out = Vec::with_capacity(ids.len() * NUM_LABELS);
    for id in ids {
        let r =
            by.get(id.as_str()).ok_or_else(|| TeacherError::Invalid(format!("no teacher record for sample {id}")))?;
        out.extend_from_slice(&r.probs);
    }
    Ok(out)
}
