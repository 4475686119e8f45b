//! Samples as the model reads them: [`TokenizedSamples`] (tokenized once, with ids, labels,
//! patients and text spans, all indexed alike), the padded batch tensors built from them,
//! [`predict`] (probabilities in sample order), and [`keeps_label`], the per-patient draw of
//! which samples keep their hard labels at a label fraction.

use candle_core::{Device, Tensor};
use ckd_core::visit::{self, Sample};
use ckd_core::{LabelSet, NUM_LABELS};
use sha2::{Digest, Sha256};

use super::error::Result;
use crate::models::bert::BertForMultiLabel;
use crate::text::{pad_batch, Encoded, TextEncoder};

/// Samples tokenized once, with everything a batch needs.
pub struct TokenizedSamples {
    /// Sample ids.
    pub ids: Vec<String>,
    /// Input texts.
    pub texts: Vec<String>,
    /// Encoded texts.
    pub enc: Vec<Encoded>,
    /// Labels (visit i+1).
    pub labels: Vec<LabelSet>,
    /// Patient of each sample (label fractions are drawn per patient).
    pub subjects: Vec<u64>,
    /// Concept and field spans of each text ([`Sample::rendered`]; `None` for a JSONL input
    /// that is not in the CKD-EHR layout): the units of the attention targets.
    pub spans: Vec<Option<visit::Rendered>>,
    /// Number of truncated texts.
    pub truncated: usize,
}

impl TokenizedSamples {
    /// Tokenizes `samples`.
    pub fn new(samples: &[Sample], encoder: &TextEncoder) -> Result<Self> {
        let mut p = TokenizedSamples {
            ids: Vec::new(),
            texts: Vec::new(),
            enc: Vec::new(),
            labels: Vec::new(),
            subjects: Vec::new(),
            spans: Vec::new(),
            truncated: 0,
        };
        for s in samples {
            let text = s.text();
            p.spans.push(s.rendered());
            let e = encoder.encode(&text)?;
            p.truncated += e.truncated as usize;
            p.ids.push(s.id.clone());
            p.texts.push(text);
            p.enc.push(e);
            p.labels.push(s.labels);
            p.subjects.push(s.subject);
        }
        Ok(p)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// `input_ids` [B, T] u32 and `attention_mask` [B, T] u32 for samples `idx` of `samples`, padded
/// with `pad_id` to the longest of them.
pub(super) fn batch_inputs(
    samples: &TokenizedSamples,
    idx: &[usize],
    pad_id: u32,
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    let items: Vec<&Encoded> = idx.iter().map(|&i| &samples.enc[i]).collect();
    let pb = pad_batch(&items, pad_id);
    let ids = Tensor::from_vec(pb.ids, (pb.batch, pb.len), dev)?;
    let mask = Tensor::from_vec(pb.mask, (pb.batch, pb.len), dev)?;
    Ok((ids, mask))
}

/// Sigmoid probabilities [N * 25] (row-major) for every sample, in order, eval mode, in batches
/// of `batch_size` (at least 1).
pub fn predict(
    model: &BertForMultiLabel,
    samples: &TokenizedSamples,
    pad_id: u32,
    batch_size: usize,
) -> Result<Vec<f32>> {
    let dev = Device::Cpu;
    let lengths: Vec<usize> = samples.enc.iter().map(|e| e.ids.len()).collect();
    // Sort by length for less padding, then restore order.
    let mut order: Vec<usize> = (0..samples.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut probs = vec![0f32; samples.len() * NUM_LABELS];
    for chunk in order.chunks(batch_size.max(1)) {
        let (ids, mask) = batch_inputs(samples, chunk, pad_id, &dev)?;
        let o = model.forward(&ids, &mask, None)?;
        let pr = candle_nn::ops::sigmoid(&o.logits)?.to_vec2::<f32>()?;
        for (row, &i) in pr.iter().zip(chunk) {
            probs[i * NUM_LABELS..(i + 1) * NUM_LABELS].copy_from_slice(row);
        }
    }
    Ok(probs)
}

/// Whether the samples of patient `id` keep their hard labels at `fraction` (stable hash of
/// seed and id; training passes the patient id, so a patient's samples are kept or dropped
/// together, as a label-scarce cohort would have them).
pub fn keeps_label(seed: u64, id: &str, fraction: f64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(id.as_bytes());
    let d = h.finalize();
    let u = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]) >> 11;
    (u as f64 / (1u64 << 53) as f64) < fraction
}
