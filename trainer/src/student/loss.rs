//! The loss of one training batch: the student's forward pass in training mode, its hard-label
//! targets, the teacher's soft targets and attention evidence for the batch, combined by
//! [`distill::total_loss`]. Fails when a weighted term lacks its teacher data.

use candle_core::{Device, Tensor};
use ckd_core::evidence::{self, Granularity};
use ckd_core::NUM_LABELS;

use super::data::{batch_inputs, keeps_label};
use super::error::{Result, StudentError};
use super::training::TrainLoop;
use crate::distill::{self, AttnInputs, GranularityInputs, LossParts};
use crate::models::common::DropoutRng;

/// Attention-loss inputs for the training batch `idx` (student CLS attention `attention` over
/// `t_len` tokens): per granularity of positive weight, the teacher's evidence distribution
/// mapped onto the batch's tokens. `None` when no attention weight is on.
fn attention_inputs(run: &TrainLoop<'_>, idx: &[usize], t_len: usize, attention: Tensor) -> Result<Option<AttnInputs>> {
    let d = &run.cfg.distill;
    if !d.uses_attention() {
        return Ok(None);
    }
    let teacher = run.teacher.ok_or_else(|| StudentError::Invalid("attention distillation needs a teacher".into()))?;
    let p = run.train;
    let mut ev = Vec::with_capacity(idx.len());
    let mut rendered = Vec::with_capacity(idx.len());
    for &i in idx {
        let e = teacher
            .evidence
            .get(&p.ids[i])
            .ok_or_else(|| StudentError::Invalid(format!("teacher evidence has no record for sample {}", p.ids[i])))?;
        let r = p.spans[i]
            .as_ref()
            .ok_or_else(|| StudentError::Invalid(format!("sample {}: text is not in the CKD-EHR layout", p.ids[i])))?;
        ev.push(e);
        rendered.push(r);
    }
    let spans: Vec<Vec<(usize, usize)>> = idx.iter().map(|&i| p.enc[i].offsets.clone()).collect();
    let build = |g: Granularity, w: f32| -> Result<Option<GranularityInputs>> {
        if w <= 0.0 {
            return Ok(None);
        }
        let units: Vec<Vec<(usize, usize)>> = rendered.iter().map(|r| evidence::unit_spans(r, g)).collect();
        let teach: Vec<&[f32]> = ev.iter().map(|e| e.distribution(g)).collect();
        Ok(Some(GranularityInputs::build(&spans, &units, &teach, t_len, &Device::Cpu)?))
    };
    Ok(Some(AttnInputs {
        word: build(Granularity::Word, d.attn_word)?,
        concept: build(Granularity::Concept, d.attn_concept)?,
        field: build(Granularity::Field, d.attn_field)?,
        attention,
    }))
}

/// Loss of the training batch `idx` in training mode (dropout from `dropout`): the hard term
/// (masked to the samples that keep their labels when `label_fraction` < 1), the soft term and
/// the attention terms, as weighted by `cfg.distill`.
pub(super) fn batch_loss(run: &TrainLoop<'_>, idx: &[usize], dropout: &mut DropoutRng) -> Result<LossParts> {
    let dev = Device::Cpu;
    let p = run.train;
    let cfg = run.cfg;
    let (ids, mask) = batch_inputs(p, idx, run.encoder.pad_id, &dev)?;
    let want_attn = cfg.distill.uses_attention();
    let out = run.model.forward_t(&ids, &mask, None, Some(dropout), want_attn)?;
    let targets: Vec<f32> = idx.iter().flat_map(|&i| p.labels[i].to_dense()).collect();
    let targets = Tensor::from_vec(targets, (idx.len(), NUM_LABELS), &dev)?;
    let label_mask = if cfg.label_fraction < 1.0 {
        let m: Vec<f32> = idx
            .iter()
            .map(|&i| keeps_label(cfg.seed, &p.subjects[i].to_string(), cfg.label_fraction) as u8 as f32)
            .collect();
        Some(Tensor::from_vec(m, idx.len(), &dev)?)
    } else {
        None
    };
    let teacher_probs = if cfg.distill.soft > 0.0 {
        let t =
            run.teacher.ok_or_else(|| StudentError::Invalid("soft-label loss needs teacher probabilities".into()))?;
        let mut v = Vec::with_capacity(idx.len() * NUM_LABELS);
        for &i in idx {
            let pr = t.probs.get(&p.ids[i]).ok_or_else(|| {
                StudentError::Invalid(format!("teacher has no probabilities for sample {}", p.ids[i]))
            })?;
            v.extend_from_slice(pr);
        }
        Some(Tensor::from_vec(v, (idx.len(), NUM_LABELS), &dev)?)
    } else {
        None
    };
    let attn = match (&out.attentions, want_attn) {
        (Some(layers), true) => {
            let a = distill::cls_attention(layers, cfg.distill.last_k_layers as usize)?;
            let t_len = ids.dim(1)?;
            attention_inputs(run, idx, t_len, a)?
        }
        _ => None,
    };
    let parts = distill::total_loss(
        &cfg.distill,
        &out.logits,
        &targets,
        label_mask.as_ref(),
        teacher_probs.as_ref(),
        attn.as_ref(),
    )?;
    Ok(parts)
}
