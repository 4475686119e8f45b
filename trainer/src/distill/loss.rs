//! Distillation loss terms (candle, differentiable elementwise compositions only).
//!
//! Shapes: `B` batch, `L` labels (25), `T` student tokens, `U` units of one granularity.
//! Every function here is built from ops that have a backward pass in candle-core 0.11
//! (`relu`, `abs`, `neg`, `exp`, `log`, `affine`, binary/broadcast arithmetic, `sum`, `matmul`,
//! `narrow`, `squeeze`/`unsqueeze`); inputs that come from the teacher, labels or masks are
//! treated as constants (`maximum`/`minimum`/`gt` are only applied to those).

use candle_core::{DType, Tensor, D};

use super::{DistillError, Result};

/// Teacher probabilities are clamped to `[PROB_CLAMP, 1 − PROB_CLAMP]` before taking logits.
pub const PROB_CLAMP: f64 = 1e-6;

/// Epsilon inside the logarithms of the attention KL: `ln(p + KL_EPS)`, `ln(s + KL_EPS)`.
pub const KL_EPS: f64 = 1e-8;

/// Floor of denominators that may be zero (no labelled sample, no evidence, no covered unit);
/// their numerators are then zero too, so the term is 0.
const DENOM_FLOOR: f64 = 1e-12;

fn check_same_shape(what: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(DistillError::Shape(format!("{what}: {:?} vs {:?}", a.dims(), b.dims())));
    }
    Ok(())
}

/// Elementwise binary cross-entropy with logits, unreduced, numerically stable:
///
/// ```text
/// l(z, y) = max(z, 0) − z·y + ln(1 + exp(−|z|))
/// ```
///
/// (equal to `−y ln σ(z) − (1−y) ln(1−σ(z))`; `exp` only sees non-positive arguments, so no
/// overflow for any `|z|`). `logits` and `targets`: `[B, L]` (any equal shapes); `targets` in
/// `[0, 1]` (hard labels or teacher probabilities). Returns the same shape.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    check_same_shape("bce logits vs targets", logits, targets)?;
    let y = targets.to_dtype(logits.dtype())?;
    let pos = logits.relu()?;
    let zy = (logits * &y)?;
    let softplus = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok(((pos - zy)? + softplus)?)
}

/// Hard-label loss: mean BCE with logits over labelled samples.
///
/// `logits`, `targets`: `[B, L]`; `label_mask`: optional `[B]`, 1 for samples that have hard
/// labels and 0 for those that do not (values in `[0, 1]` act as sample weights). Returns a
/// scalar:
///
/// ```text
/// hard = Σ_b m_b Σ_l bce(z_bl, y_bl) / (L · Σ_b m_b)       (m = 1 when no mask)
/// ```
///
/// and 0 (with zero gradient) when no sample is labelled.
pub fn hard_loss(logits: &Tensor, targets: &Tensor, label_mask: Option<&Tensor>) -> Result<Tensor> {
    let l = bce_with_logits(logits, targets)?;
    let Some(mask) = label_mask else {
        return Ok(l.mean_all()?);
    };
    let (b, n_labels) = l.dims2()?;
    if mask.dims() != [b] {
        return Err(DistillError::Shape(format!("label mask {:?}, expected [{b}]", mask.dims())));
    }
    let m = mask.to_dtype(l.dtype())?.detach();
    let num = l.broadcast_mul(&m.unsqueeze(1)?)?.sum_all()?;
    let den = m.sum_all()?.affine(n_labels as f64, 0.0)?.maximum(DENOM_FLOOR)?;
    Ok(num.div(&den)?)
}

/// Soft-label loss: mean BCE with logits against the teacher's probabilities `p_t`
/// (`[B, L]`, constants): `soft = mean_{b,l} bce(z_bl, p_t,bl)`.
pub fn soft_loss(logits: &Tensor, teacher_probs: &Tensor) -> Result<Tensor> {
    Ok(bce_with_logits(logits, &teacher_probs.detach())?.mean_all()?)
}

/// Teacher logits recovered from probabilities: `logit(p) = ln p − ln(1 − p)` with `p` clamped to
/// `[PROB_CLAMP, 1 − PROB_CLAMP]` (in f32: logits lie in about `[−13.82, 13.80]`).
/// `[B, L]` -> `[B, L]`, constant.
pub fn teacher_logits(teacher_probs: &Tensor) -> Result<Tensor> {
    let p = teacher_probs.detach().clamp(PROB_CLAMP, 1.0 - PROB_CLAMP)?;
    Ok((p.log()? - p.affine(-1.0, 1.0)?.log()?)?)
}

/// Temperature-scaled soft loss (Hinton et al. 2015, per label as independent Bernoullis):
///
/// ```text
/// soft_T = T² · mean_{b,l} bce(z_s / T, σ(z_t / T)),     z_t = logit(clamp(p_t))
/// ```
///
/// The `T²` factor keeps gradient magnitudes comparable across temperatures. At `T = 1` this
/// equals [`soft_loss`] up to the clamp of `p_t`. `temperature` must be finite and > 0.
pub fn soft_loss_temperature(logits: &Tensor, teacher_probs: &Tensor, temperature: f64) -> Result<Tensor> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(DistillError::Config(format!("temperature must be finite and > 0, got {temperature}")));
    }
    let inv_t = 1.0 / temperature;
    let zt = teacher_logits(teacher_probs)?.affine(inv_t, 0.0)?;
    // σ(x) = 1 / (1 + exp(−x)); |x| ≤ 13.8 / T, so exp cannot overflow.
    let q = (zt.neg()?.exp()? + 1.0)?.recip()?;
    let zs = logits.affine(inv_t, 0.0)?;
    Ok(bce_with_logits(&zs, &q)?.mean_all()?.affine(temperature * temperature, 0.0)?)
}

fn check_attn(attention: &Tensor, alignment: &Tensor, unit_mask: &Tensor) -> Result<(usize, usize, usize)> {
    let (b, t) = attention.dims2()?;
    let (b2, t2, u) = alignment.dims3()?;
    if b2 != b || t2 != t || unit_mask.dims() != [b, u] {
        return Err(DistillError::Shape(format!(
            "attention {:?}, alignment {:?}, unit mask {:?}: expected [B, T], [B, T, U], [B, U]",
            attention.dims(),
            alignment.dims(),
            unit_mask.dims()
        )));
    }
    Ok((b, t, u))
}

/// Student unit distribution for one granularity:
///
/// ```text
/// r = a · M            ([B, 1, T] × [B, T, U] -> [B, U], batched matmul)
/// s_bu = m_bu r_bu / Σ_u' m_bu' r_bu'
/// ```
///
/// `attention` `a`: `[B, T]` (student `[CLS]`-row attention, see
/// [`super::attention::cls_attention`]); `alignment` `M`: `[B, T, U]` (core's
/// `ckd_core::evidence::alignment` per sample, zero rows for special/padding tokens, zero
/// columns for padding units); `unit_mask` `m`: `[B, U]` (1 = real unit). Differentiable in `a`.
/// Rows with no mass on any unit are all zeros. Equals core's `aggregate` on the same inputs.
pub fn student_unit_distribution(attention: &Tensor, alignment: &Tensor, unit_mask: &Tensor) -> Result<Tensor> {
    check_attn(attention, alignment, unit_mask)?;
    let m = unit_mask.to_dtype(attention.dtype())?.detach();
    let mt = alignment.to_dtype(attention.dtype())?.detach();
    let r = attention.unsqueeze(1)?.matmul(&mt)?.squeeze(1)?;
    let rm = (r * m)?;
    let den = (rm.sum_keepdim(D::Minus1)? + DENOM_FLOOR)?;
    Ok(rm.broadcast_div(&den)?)
}

/// Attention-distillation KL for one granularity, a scalar:
///
/// ```text
/// p'_bu = m_bu p_bu / Σ_u' m_bu' p_bu'                  (teacher, renormalized over real units)
/// s     = student_unit_distribution(a, M, m)
/// KL_b  = Σ_u p'_bu (ln(p'_bu + ε) − ln(s_bu + ε))      ε = KL_EPS
/// loss  = Σ_b KL_b / max(1, #{b : Σ_u m_bu p_bu > 0})
/// ```
///
/// `teacher` `p`: `[B, U]` (from the evidence file, zero-padded), constant. Renormalizing `p`
/// over the masked units means units the student cannot see (cut by truncation, so masked out)
/// do not count against it. A sample whose teacher row has no mass on real units ("no evidence",
/// see `ckd_core::evidence`) contributes 0 and is left out of the mean. Differentiable in `a`.
pub fn attention_kl(attention: &Tensor, alignment: &Tensor, unit_mask: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    let (b, _, u) = check_attn(attention, alignment, unit_mask)?;
    if teacher.dims() != [b, u] {
        return Err(DistillError::Shape(format!("teacher distribution {:?}, expected [{b}, {u}]", teacher.dims())));
    }
    let dt = attention.dtype();
    let s = student_unit_distribution(attention, alignment, unit_mask)?;
    let m = unit_mask.to_dtype(dt)?.detach();
    let pm = (teacher.to_dtype(dt)?.detach() * &m)?;
    let p_mass = pm.sum_keepdim(D::Minus1)?;
    let p = pm.broadcast_div(&p_mass.maximum(DENOM_FLOOR)?)?;
    let log_ratio = ((&p + KL_EPS)?.log()? - (s + KL_EPS)?.log()?)?;
    let kl = (p * log_ratio)?.sum(D::Minus1)?;
    let has = p_mass.squeeze(1)?.gt(0.0)?.to_dtype(dt)?;
    let n = has.sum_all()?.maximum(1.0)?;
    Ok(kl.sum_all()?.div(&n)?)
}

/// Scalar value of a 0-d tensor as `f32` (for logging).
pub fn scalar(t: &Tensor) -> Result<f32> {
    Ok(t.to_dtype(DType::F32)?.to_scalar::<f32>()?)
}
