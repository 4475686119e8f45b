//! Zero-shot phenotype scores from a pretrained LLM: no labels, no training.
//!
//! A visit's chat prompt ([`PromptEncoder::encode`]) is followed by the authors' answer prefix
//! (`Disease that the patient may acquire:`); the score of phenotype `j` is the mean
//! log-probability of its name's tokens (the authors' spelling) as the continuation, i.e. the
//! length-normalized log-likelihood the model gives to answering with that name first.
//!
//! Cost: the system prompt and instruction shared by every prompt are prefilled once
//! ([`states::prefill`]); each visit runs its own tokens and the answer prefix once, then the 25
//! names as one right-padded batch on copies of that KV cache ([`KvCache::repeat_batch`]). A test
//! checks the scores against a full forward pass of each prompt + name.
//!
//! The raw score mixes what the visit shows with how readily the model says a name at all. The
//! visit-free score ([`visit_free_scores`], the same prompt around an empty visit) is a constant
//! per phenotype: subtracting it puts the 25 names on one scale ([`probabilities`]) but cannot
//! change any phenotype's ranking of the visits, so it leaves the macro-AUC as it is.
//!
//! Shapes: scores `[N * 25]` row-major, label order.

use candle_core::{DType, Tensor, D};
use ckd_core::labels::PHENOTYPES;
use ckd_core::visit::Sample;
use ckd_core::NUM_LABELS;
use indicatif::ProgressBar;

use super::states::{prefill, shared_prefix};
use super::{Prompt, PromptEncoder, Result, TeacherError};
use crate::models::qwen2::{KvCache, Qwen2ForCausalLM};

/// The answer prefix and the 25 names' continuation tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Continuations {
    /// Tokens of the answer prefix appended to every prompt.
    pub prefix: Vec<u32>,
    /// Per phenotype (label order), the tokens that follow `prefix` (at least one each).
    pub names: Vec<Vec<u32>>,
}

impl Continuations {
    /// Tokenizes `OUTPUT_PREFIX + name` for every phenotype (authors' spelling); `prefix` is the
    /// longest token prefix all 25 share (so each name keeps the tokens the tokenizer gives it in
    /// context, whatever merges happen at the boundary).
    pub fn new(tok: &tokenizers::Tokenizer) -> Result<Self> {
        let mut full = Vec::with_capacity(NUM_LABELS);
        for p in PHENOTYPES.iter() {
            let text = format!("{}{}", ckd_core::jsonl::OUTPUT_PREFIX, p.authors);
            let e = tok.encode(text.as_str(), false).map_err(|e| TeacherError::Tokenizer(e.to_string()))?;
            full.push(e.get_ids().to_vec());
        }
        let mut n = full[0].len();
        for f in &full {
            n = n.min(f.iter().zip(&full[0]).take_while(|(a, b)| a == b).count());
        }
        // Every name keeps at least one token of its own.
        n = n.min(full.iter().map(|f| f.len().saturating_sub(1)).min().unwrap_or(0));
        let prefix = full[0][..n].to_vec();
        let names = full.into_iter().map(|f| f[n..].to_vec()).collect();
        Ok(Self { prefix, names })
    }
}

/// Mean log-probability of each continuation in `names` after a sequence whose keys and values
/// are in `cache` (batch 1) and whose final normed hidden state at the last position is `last`
/// `[1, H]`. Returns one score per name.
pub fn continuation_scores(
    model: &Qwen2ForCausalLM,
    cache: &KvCache,
    last: &Tensor,
    names: &[Vec<u32>],
) -> Result<Vec<f32>> {
    if names.is_empty() || names.iter().any(Vec::is_empty) {
        return Err(TeacherError::Invalid("continuation scores: every name needs a token".into()));
    }
    // The first token of each name is predicted by the sequence's last position.
    let lp0 = log_probs(model, last)?;
    let mut sums: Vec<f64> = names.iter().map(|n| lp0[0][n[0] as usize] as f64).collect();
    // The rest: names[b][..len - 1] as one right-padded batch on the shared cache; position j
    // predicts token j + 1. Padding sits after every real token, so causality hides it.
    let longest = names.iter().map(Vec::len).max().unwrap_or(1);
    if longest > 1 {
        let (b, t) = (names.len(), longest - 1);
        let mut ids = vec![names[0][0]; b * t];
        for (r, n) in names.iter().enumerate() {
            ids[r * t..r * t + n.len() - 1].copy_from_slice(&n[..n.len() - 1]);
        }
        let x = Tensor::from_vec(ids, (b, t), model.device())?;
        let mut c = cache.repeat_batch(b)?;
        let hidden = model.forward_cached(&x, &mut c)?;
        let positions: Vec<(usize, usize)> =
            names.iter().enumerate().flat_map(|(r, n)| (0..n.len() - 1).map(move |j| (r, j))).collect();
        let lp = log_probs(model, &gather(&hidden, &positions)?)?;
        for (k, &(r, j)) in positions.iter().enumerate() {
            sums[r] += lp[k][names[r][j + 1] as usize] as f64;
        }
    }
    Ok(sums.iter().zip(names).map(|(s, n)| (*s / n.len() as f64) as f32).collect())
}

/// hidden `[B, T, H]` at `(row, t)` positions -> `[P, H]`.
fn gather(hidden: &Tensor, positions: &[(usize, usize)]) -> Result<Tensor> {
    let rows = positions.iter().map(|&(r, t)| hidden.get(r)?.get(t)).collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::stack(&rows, 0)?)
}

/// Log-softmax over the vocabulary of the LM head's logits for hidden `[P, H]` -> P rows.
fn log_probs(model: &Qwen2ForCausalLM, hidden: &Tensor) -> Result<Vec<Vec<f32>>> {
    let logits = model.lm_logits(hidden)?.to_dtype(DType::F32)?;
    // Stable log-sum-exp: max + log(sum(exp(x - max))).
    let max = logits.max_keepdim(D::Minus1)?;
    let lse = (logits.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?.log()? + &max)?;
    Ok(logits.broadcast_sub(&lse)?.to_vec2::<f32>()?)
}

/// Scores `[25]` of one prompt whose first `cache.len()` tokens are in `cache` (the shared
/// prefix; may be empty).
pub fn prompt_scores(
    model: &Qwen2ForCausalLM,
    cache: &KvCache,
    prompt: &Prompt,
    cont: &Continuations,
) -> Result<Vec<f32>> {
    let start = cache.len();
    let mut ids = prompt.ids.clone();
    ids.extend_from_slice(&cont.prefix);
    if start >= ids.len() {
        return Err(TeacherError::Invalid(format!(
            "shared prefix of {start} tokens leaves nothing of a {}-token prompt",
            ids.len()
        )));
    }
    let own = &ids[start..];
    let mut c = cache.clone();
    let x = Tensor::from_slice(own, (1, own.len()), model.device())?;
    let hidden = model.forward_cached(&x, &mut c)?;
    let last = hidden.get(0)?.get(own.len() - 1)?.unsqueeze(0)?;
    continuation_scores(model, &c, &last, &cont.names)
}

/// Raw zero-shot scores `[N * 25]` of `samples`.
pub fn score_samples(
    model: &Qwen2ForCausalLM,
    prompts: &PromptEncoder,
    samples: &[Sample],
    progress: &ProgressBar,
) -> Result<Vec<f32>> {
    let cont = Continuations::new(prompts.tokenizer())?;
    let encoded = samples.iter().map(|s| prompts.encode(s)).collect::<Result<Vec<_>>>()?;
    let n = shared_prefix(&encoded);
    let cache = match encoded.first() {
        Some(p) => prefill(model, &p.ids, n)?,
        None => return Ok(Vec::new()),
    };
    progress.set_length(samples.len() as u64);
    let mut out = Vec::with_capacity(samples.len() * NUM_LABELS);
    for p in &encoded {
        out.extend(prompt_scores(model, &cache, p, &cont)?);
        progress.inc(1);
    }
    Ok(out)
}

/// Scores `[25]` of the same prompt around an empty visit (`None.` for every field): how readily
/// the model names each phenotype when the visit shows nothing.
pub fn visit_free_scores(model: &Qwen2ForCausalLM, prompts: &PromptEncoder, like: &Sample) -> Result<Vec<f32>> {
    let mut empty = like.clone();
    empty.visit = Default::default();
    empty.knowledge.clear();
    empty.raw = None;
    let p = prompts.encode(&empty)?;
    prompt_scores(model, &KvCache::new(), &p, &Continuations::new(prompts.tokenizer())?)
}

/// Probabilities `[N * 25]` from raw scores `[N * 25]` without labels: each phenotype's score
/// minus its visit-free score (`free`, `[25]`), standardized across the N visits, through a
/// sigmoid. Monotone per phenotype, so each phenotype's ranking (its AUC) is that of
/// `raw - free`; the level carries no prevalence (none is known without labels).
pub fn probabilities(raw: &[f32], free: &[f32]) -> Result<Vec<f32>> {
    if free.len() != NUM_LABELS || !raw.len().is_multiple_of(NUM_LABELS) || raw.is_empty() {
        return Err(TeacherError::Invalid(format!(
            "zero-shot probabilities: {} scores and {} visit-free scores",
            raw.len(),
            free.len()
        )));
    }
    let n = raw.len() / NUM_LABELS;
    let mut out = vec![0f32; raw.len()];
    for j in 0..NUM_LABELS {
        let col: Vec<f64> = (0..n).map(|i| (raw[i * NUM_LABELS + j] - free[j]) as f64).collect();
        let mean = col.iter().sum::<f64>() / n as f64;
        let sd = (col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        for (i, x) in col.iter().enumerate() {
            let z = if sd > 0.0 { (x - mean) / sd } else { 0.0 };
            out[i * NUM_LABELS + j] = (1.0 / (1.0 + (-z).exp())) as f32;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed: two visits, phenotype 0 scores -1 and -3 with visit-free -2: corrected +1
    /// and -1, standardized +1 and -1, sigmoid 0.731 and 0.269; constant columns give 0.5.
    #[test]
    fn probabilities_standardize_each_phenotype_without_labels() {
        let mut raw = vec![-5.0f32; 2 * NUM_LABELS];
        raw[0] = -1.0;
        raw[NUM_LABELS] = -3.0;
        let mut free = vec![-4.0f32; NUM_LABELS];
        free[0] = -2.0;
        let p = probabilities(&raw, &free).unwrap();
        assert!((p[0] - 0.731_058_6).abs() < 1e-6 && (p[NUM_LABELS] - 0.268_941_4).abs() < 1e-6);
        assert!(p[1..NUM_LABELS].iter().all(|&x| x == 0.5));
        assert!(probabilities(&raw, &free[..3]).is_err());
    }
}
