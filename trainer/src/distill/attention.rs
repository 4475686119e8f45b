//! Student attention and the batched inputs of the multi-granularity attention loss.
//!
//! Shapes: `B` batch, `H` heads, `T` student tokens (padded), `U` units (padded per batch).

use candle_core::{Device, Tensor};

use ckd_core::evidence::alignment;

use super::{DistillError, Result};

/// Attention of the classification token over the input tokens, averaged over heads and the
/// last `last_k` layers:
///
/// ```text
/// a_bt = (1 / (K·H)) Σ_{l ∈ last K layers} Σ_h A^l_{b,h,0,t}
/// ```
///
/// `layers`: per-layer attention probabilities `[B, H, T, T]` (query × key, rows softmax-
/// normalized, first layer first). Returns `[B, T]`; every row sums to 1 when each layer's rows
/// do (padding keys then carry ~0). Differentiable (narrow, sum, affine, add). Errors when
/// `last_k` is 0 or exceeds the number of layers, or shapes are not `[B, H, T, T]` alike.
pub fn cls_attention(layers: &[Tensor], last_k: usize) -> Result<Tensor> {
    if last_k == 0 || last_k > layers.len() {
        return Err(DistillError::Config(format!(
            "last_k_layers = {last_k}, but the model returned {} attention layers",
            layers.len()
        )));
    }
    let mut acc: Option<Tensor> = None;
    let mut dims: Option<Vec<usize>> = None;
    for l in &layers[layers.len() - last_k..] {
        let (_, _, tq, tk) = l.dims4()?;
        if tq != tk || dims.as_ref().is_some_and(|d| d[..] != *l.dims()) {
            return Err(DistillError::Shape(format!("attention layer {:?}, expected [B, H, T, T] alike", l.dims())));
        }
        dims = Some(l.dims().to_vec());
        // [B, H, T, T] -> query row 0 -> [B, H, 1, T] -> mean over heads -> [B, T]
        let row = l.narrow(2, 0, 1)?.mean(1)?.squeeze(1)?;
        acc = Some(match acc {
            None => row,
            Some(a) => (a + row)?,
        });
    }
    let sum = acc.ok_or_else(|| DistillError::Config("no attention layers".into()))?;
    Ok(sum.affine(1.0 / last_k as f64, 0.0)?)
}

/// Inputs of the attention loss for one granularity (see [`super::loss::attention_kl`]).
#[derive(Debug, Clone)]
pub struct GranularityInputs {
    /// Alignment `M`: `[B, T, U]` token-to-unit overlap fractions.
    pub alignment: Tensor,
    /// Unit mask `m`: `[B, U]`, 1 for units that exist and that at least one student token covers.
    pub unit_mask: Tensor,
    /// Teacher unit distribution `p`: `[B, U]`, zero-padded.
    pub teacher: Tensor,
}

impl GranularityInputs {
    /// Builds the batched tensors (f32) from per-sample data.
    ///
    /// `token_spans[b]`: byte spans of sample `b`'s student tokens, at most `t_len` of them
    /// (missing positions are padding: empty spans); `unit_spans[b]`: its units (`word_spans`,
    /// concepts or fields of the text); `teacher[b]`: the teacher distribution over those units
    /// (same length). `U` is the largest unit count in the batch (at least 1). A unit is masked
    /// out when it is padding or when no student token overlaps it (e.g. cut by truncation).
    pub fn build(
        token_spans: &[Vec<(usize, usize)>],
        unit_spans: &[Vec<(usize, usize)>],
        teacher: &[&[f32]],
        t_len: usize,
        device: &Device,
    ) -> Result<Self> {
        let b = token_spans.len();
        if unit_spans.len() != b || teacher.len() != b {
            return Err(DistillError::Shape(format!(
                "batch sizes differ: {b} token span lists, {} unit span lists, {} teacher rows",
                unit_spans.len(),
                teacher.len()
            )));
        }
        let u_len = unit_spans.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut m_all = vec![0f32; b * t_len * u_len];
        let mut mask = vec![0f32; b * u_len];
        let mut p_all = vec![0f32; b * u_len];
        for i in 0..b {
            let (toks, units, p) = (&token_spans[i], &unit_spans[i], teacher[i]);
            if toks.len() > t_len {
                return Err(DistillError::Shape(format!("sample {i}: {} tokens > T = {t_len}", toks.len())));
            }
            if p.len() != units.len() {
                return Err(DistillError::Shape(format!(
                    "sample {i}: teacher distribution over {} units, text has {}",
                    p.len(),
                    units.len()
                )));
            }
            let n = units.len();
            let m = alignment(toks, units);
            for t in 0..toks.len() {
                let dst = (i * t_len + t) * u_len;
                m_all[dst..dst + n].copy_from_slice(&m[t * n..(t + 1) * n]);
            }
            for u in 0..n {
                let covered = (0..toks.len()).any(|t| m[t * n + u] > 0.0);
                mask[i * u_len + u] = if covered { 1.0 } else { 0.0 };
                p_all[i * u_len + u] = p[u];
            }
        }
        Ok(GranularityInputs {
            alignment: Tensor::from_vec(m_all, (b, t_len, u_len), device)?,
            unit_mask: Tensor::from_vec(mask, (b, u_len), device)?,
            teacher: Tensor::from_vec(p_all, (b, u_len), device)?,
        })
    }
}

/// Student attention and the per-granularity inputs of the attention loss.
#[derive(Debug, Clone)]
pub struct AttnInputs {
    /// Student `[CLS]`-row attention `a`: `[B, T]` (from [`cls_attention`]).
    pub attention: Tensor,
    /// Word granularity, required when its weight is > 0.
    pub word: Option<GranularityInputs>,
    /// Concept granularity, required when its weight is > 0.
    pub concept: Option<GranularityInputs>,
    /// Field granularity, required when its weight is > 0.
    pub field: Option<GranularityInputs>,
}
