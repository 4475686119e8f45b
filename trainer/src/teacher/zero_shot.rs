//! Zero-shot phenotype scores from a pretrained LLM: no labels, no training. Two scorings
//! ([`Scoring`]), both after the visit's chat prompt ([`PromptEncoder::encode`]):
//! - `names`: the authors' answer prefix (`Disease that the patient may acquire:`) followed by
//!   phenotype `j`'s name (the authors' spelling); the score is the mean log-probability of the
//!   name's tokens, i.e. the length-normalized log-likelihood of answering with that name first.
//! - `yes-no`: a second user turn asks one question per phenotype ([`YES_NO_TURN`]: "Will the
//!   patient have this disease at the next visit: {name}?", the name last so that the 25 rows
//!   share all but the name and the turn's end); the score is the log-odds of the
//!   answer's first token, `log(P(Yes) + P(yes)) - log(P(No) + P(no))`.
//!
//! Cost: the system prompt and instruction shared by every prompt are prefilled once
//! ([`states::prefill`]); each visit runs its own tokens and the continuations' shared prefix
//! once, then the 25 continuations packed into one row on that KV cache, each reading the cache
//! and itself only ([`Qwen2ForCausalLM::forward_packed`]: no padding). Tests check both scorings
//! against full forward passes.
//!
//! The raw score mixes what the visit shows with how readily the model says a name at all. The
//! visit-free score ([`visit_free_scores`], the same prompt around an empty visit) is a constant
//! per phenotype: subtracting it cannot change any phenotype's ranking of the visits, so it
//! leaves the macro-AUC as it is. What does change it is how readily the model answers at all
//! after a given visit: [`probabilities`] removes that by centring each visit's 25 scores
//! (chosen on the demo cohort's validation split: BENCHMARKS.md).
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

/// How a visit's 25 phenotypes are scored (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoring {
    /// Mean log-probability of the phenotype's name after the answer prefix.
    Names,
    /// Log-odds of `Yes` against `No` after a question per phenotype.
    YesNo,
}

impl Scoring {
    /// `names` or `yes-no`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Names => "names",
            Self::YesNo => "yes-no",
        }
    }
}

/// The assistant's reply and the follow-up user turn of [`Scoring::YesNo`], appended after the
/// visit's prompt (which ends with `<|im_start|>assistant\n`); `{name}` is the phenotype's name.
pub const YES_NO_TURN: &str = "I will answer questions about this patient's next visit.<|im_end|>\n<|im_start|>user\n\
     Answer Yes or No. Will the patient have this disease at the next visit: {name}?<|im_end|>\n<|im_start|>assistant\n";

/// What follows a visit's prompt: a prefix shared by the 25 phenotypes, then each one's tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Continuations {
    /// How the continuations are scored.
    pub scoring: Scoring,
    /// Tokens appended to every prompt (the answer prefix, or the question up to the name).
    pub prefix: Vec<u32>,
    /// Per phenotype (label order), the tokens that follow `prefix` (at least one each).
    pub names: Vec<Vec<u32>>,
    /// [`Scoring::YesNo`]: first tokens of `Yes`/`yes` and of `No`/`no` (deduplicated).
    pub answers: (Vec<u32>, Vec<u32>),
}

impl Continuations {
    /// [`Scoring::Names`]: tokenizes `OUTPUT_PREFIX + name` for every phenotype (authors'
    /// spelling); `prefix` is the longest token prefix all 25 share (so each name keeps the tokens
    /// the tokenizer gives it in context, whatever merges happen at the boundary).
    pub fn new(tok: &tokenizers::Tokenizer) -> Result<Self> {
        Self::with_scoring(tok, Scoring::Names)
    }

    /// The continuations of `scoring`.
    pub fn with_scoring(tok: &tokenizers::Tokenizer, scoring: Scoring) -> Result<Self> {
        let encode = |text: &str| -> Result<Vec<u32>> {
            let e = tok.encode(text, false).map_err(|e| TeacherError::Tokenizer(e.to_string()))?;
            Ok(e.get_ids().to_vec())
        };
        let mut full = Vec::with_capacity(NUM_LABELS);
        for p in PHENOTYPES.iter() {
            full.push(encode(&match scoring {
                Scoring::Names => format!("{}{}", ckd_core::jsonl::OUTPUT_PREFIX, p.authors),
                Scoring::YesNo => YES_NO_TURN.replace("{name}", p.authors),
            })?);
        }
        let mut n = full[0].len();
        for f in &full {
            n = n.min(f.iter().zip(&full[0]).take_while(|(a, b)| a == b).count());
        }
        // Every name keeps at least one token of its own.
        n = n.min(full.iter().map(|f| f.len().saturating_sub(1)).min().unwrap_or(0));
        let prefix = full[0][..n].to_vec();
        let names = full.into_iter().map(|f| f[n..].to_vec()).collect();
        let answers = match scoring {
            Scoring::Names => (Vec::new(), Vec::new()),
            Scoring::YesNo => {
                let first = |words: [&str; 2]| -> Result<Vec<u32>> {
                    let mut ids = Vec::new();
                    for w in words {
                        if let Some(&t) = encode(w)?.first() {
                            if !ids.contains(&t) {
                                ids.push(t);
                            }
                        }
                    }
                    Ok(ids)
                };
                let (yes, no) = (first(["Yes", "yes"])?, first(["No", "no"])?);
                if yes.is_empty() || no.is_empty() || yes.iter().any(|t| no.contains(t)) {
                    return Err(TeacherError::Tokenizer(format!(
                        "yes/no scoring: the answers' first tokens do not tell Yes {yes:?} from No {no:?}"
                    )));
                }
                (yes, no)
            }
        };
        Ok(Self { scoring, prefix, names, answers })
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
    // The rest: names[r][..len - 1], packed as one row on the shared cache; position j of a
    // name predicts its token j + 1.
    let rows: Vec<&[u32]> = names.iter().map(|n| &n[..n.len() - 1]).collect();
    if rows.iter().any(|r| !r.is_empty()) {
        let (hidden, starts) = packed(model, cache, &rows)?;
        let positions: Vec<(usize, usize)> =
            rows.iter().enumerate().flat_map(|(r, row)| (0..row.len()).map(move |j| (r, j))).collect();
        let at: Vec<usize> = positions.iter().map(|&(r, j)| starts[r] + j).collect();
        let lp = log_probs(model, &gather(&hidden, &at)?)?;
        for (k, &(r, j)) in positions.iter().enumerate() {
            sums[r] += lp[k][names[r][j + 1] as usize] as f64;
        }
    }
    Ok(sums.iter().zip(names).map(|(s, n)| (*s / n.len() as f64) as f32).collect())
}

/// Log-odds of the answers `yes` against `no` (token ids; each side's probabilities summed) at
/// the last token of each row of `rows`, run as one right-padded batch after a sequence whose
/// keys and values are in `cache` (batch 1). Returns one score per row.
pub fn answer_scores(
    model: &Qwen2ForCausalLM,
    cache: &KvCache,
    rows: &[Vec<u32>],
    (yes, no): (&[u32], &[u32]),
) -> Result<Vec<f32>> {
    if rows.is_empty() || rows.iter().any(Vec::is_empty) || yes.is_empty() || no.is_empty() {
        return Err(TeacherError::Invalid("answer scores: every row and answer needs a token".into()));
    }
    let slices: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
    let (hidden, starts) = packed(model, cache, &slices)?;
    let last: Vec<usize> = rows.iter().enumerate().map(|(r, row)| starts[r] + row.len() - 1).collect();
    let lp = log_probs(model, &gather(&hidden, &last)?)?;
    let lse = |row: &[f32], ids: &[u32]| -> f64 {
        let m = ids.iter().map(|&i| row[i as usize] as f64).fold(f64::NEG_INFINITY, f64::max);
        m + ids.iter().map(|&i| (row[i as usize] as f64 - m).exp()).sum::<f64>().ln()
    };
    Ok(lp.iter().map(|row| (lse(row, yes) - lse(row, no)) as f32).collect())
}

/// The final hidden states `[1, T, H]` of `rows` (empty rows allowed) packed one after another
/// on the batch-1 `cache` ([`Qwen2ForCausalLM::forward_packed`]: each row sees the cache and
/// itself only, no padding), and where each row starts in T.
fn packed(model: &Qwen2ForCausalLM, cache: &KvCache, rows: &[&[u32]]) -> Result<(Tensor, Vec<usize>)> {
    let mut ids = Vec::new();
    let mut segments = Vec::new();
    let mut starts = Vec::with_capacity(rows.len());
    for (r, row) in rows.iter().enumerate() {
        starts.push(ids.len());
        ids.extend_from_slice(row);
        segments.extend(std::iter::repeat_n(r, row.len()));
    }
    let x = Tensor::from_slice(&ids, (1, ids.len()), model.device())?;
    Ok((model.forward_packed(&x, &segments, cache)?, starts))
}

/// hidden `[1, T, H]` at positions `at` -> `[P, H]`.
fn gather(hidden: &Tensor, at: &[usize]) -> Result<Tensor> {
    let idx = Tensor::from_vec(at.iter().map(|&t| t as u32).collect::<Vec<_>>(), at.len(), hidden.device())?;
    Ok(hidden.get(0)?.index_select(&idx, 0)?)
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
    Ok(scores_on(model, cache, prompt, cont, None)?.0)
}

/// [`prompt_scores`] and the attention evidence of the prompt: the attention of its last token
/// (`<|im_start|>assistant\n`'s end, before any continuation) over the prompt's tokens, averaged
/// over heads and the last `last_k` layers, one weight per token of `prompt.ids` (the weights
/// `ckd teacher label` takes from a full forward, [`super::label::last_token_weights`]).
pub fn prompt_scores_with_attention(
    model: &Qwen2ForCausalLM,
    cache: &KvCache,
    prompt: &Prompt,
    cont: &Continuations,
    last_k: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (scores, attn) = scores_on(model, cache, prompt, cont, Some(last_k))?;
    Ok((scores, attn.unwrap_or_default()))
}

fn scores_on(
    model: &Qwen2ForCausalLM,
    cache: &KvCache,
    prompt: &Prompt,
    cont: &Continuations,
    last_k: Option<usize>,
) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
    let start = cache.len();
    let mut ids = prompt.ids.clone();
    ids.extend_from_slice(&cont.prefix);
    // The attention row of the prompt's last token needs that token outside the cache.
    let own_from = if last_k.is_some() { prompt.ids.len() } else { ids.len() };
    if start >= own_from {
        return Err(TeacherError::Invalid(format!(
            "shared prefix of {start} tokens leaves nothing of a {own_from}-token prompt"
        )));
    }
    let own = &ids[start..];
    let mut c = cache.clone();
    let x = Tensor::from_slice(own, (1, own.len()), model.device())?;
    let (hidden, attn) = match last_k {
        None => (model.forward_cached(&x, &mut c)?, None),
        Some(k) => {
            let (hidden, layers) = model.forward_cached_attention(&x, &mut c, prompt.ids.len() - 1 - start)?;
            let mut w = super::label::last_token_weights(&layers, k)?.swap_remove(0);
            w.truncate(prompt.ids.len());
            (hidden, Some(w))
        }
    };
    let scores = match cont.scoring {
        Scoring::Names => {
            let last = hidden.get(0)?.get(own.len() - 1)?.unsqueeze(0)?;
            continuation_scores(model, &c, &last, &cont.names)?
        }
        Scoring::YesNo => answer_scores(model, &c, &cont.names, (&cont.answers.0, &cont.answers.1))?,
    };
    Ok((scores, attn))
}

/// Raw zero-shot scores `[N * 25]` of `samples` under `cont`.
pub fn score_samples(
    model: &Qwen2ForCausalLM,
    prompts: &PromptEncoder,
    cont: &Continuations,
    samples: &[Sample],
    progress: &ProgressBar,
) -> Result<Vec<f32>> {
    let encoded = samples.iter().map(|s| prompts.encode(s)).collect::<Result<Vec<_>>>()?;
    let n = shared_prefix(&encoded);
    let cache = match encoded.first() {
        Some(p) => prefill(model, &p.ids, n)?,
        None => return Ok(Vec::new()),
    };
    progress.set_length(samples.len() as u64);
    let mut out = Vec::with_capacity(samples.len() * NUM_LABELS);
    for p in &encoded {
        out.extend(prompt_scores(model, &cache, p, cont)?);
        progress.inc(1);
    }
    Ok(out)
}

/// Scores `[25]` of the same prompt around an empty visit (`None.` for every field): how readily
/// the model names each phenotype when the visit shows nothing.
pub fn visit_free_scores(
    model: &Qwen2ForCausalLM,
    prompts: &PromptEncoder,
    cont: &Continuations,
    like: &Sample,
) -> Result<Vec<f32>> {
    let mut empty = like.clone();
    empty.visit = Default::default();
    empty.knowledge.clear();
    empty.raw = None;
    let p = prompts.encode(&empty)?;
    prompt_scores(model, &KvCache::new(), &p, cont)
}

/// Each visit's 25 scores minus their mean (`[N * 25]` -> `[N * 25]`): how readily the model
/// answers at all after this visit, removed.
pub fn centred(raw: &[f32]) -> Vec<f32> {
    raw.chunks(NUM_LABELS)
        .flat_map(|r| {
            let m = r.iter().sum::<f32>() / r.len() as f32;
            r.iter().map(move |x| x - m)
        })
        .collect()
}

/// Probabilities `[N * 25]` from raw scores `[N * 25]` without labels: the [`centred`] scores,
/// standardized per phenotype across the N visits, through a sigmoid. Monotone per phenotype,
/// so each phenotype's ranking (its AUC) is that of the centred scores; the level carries no
/// prevalence (none is known without labels).
pub fn probabilities(raw: &[f32]) -> Result<Vec<f32>> {
    if !raw.len().is_multiple_of(NUM_LABELS) || raw.is_empty() {
        return Err(TeacherError::Invalid(format!(
            "zero-shot probabilities: {} scores, not a positive multiple of {NUM_LABELS}",
            raw.len()
        )));
    }
    let c = centred(raw);
    let n = raw.len() / NUM_LABELS;
    let mut out = vec![0f32; raw.len()];
    for j in 0..NUM_LABELS {
        let col: Vec<f64> = (0..n).map(|i| c[i * NUM_LABELS + j] as f64).collect();
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

    /// Hand-computed: two visits whose scores are -5 but for phenotype 0 (+20 on the first, -30
    /// on the second) and phenotype 1 (+20 on the second). Means -4 and -5, so centred: visit 1
    /// is (+24, -1, -1, ...), visit 2 (-25, +25, 0, ...). Per phenotype, two different values
    /// standardize to +1 and -1 (sigmoid 0.731 / 0.269); a constant column gives 0.5.
    #[test]
    fn probabilities_centre_each_visit_and_standardize_each_phenotype() {
        let mut raw = vec![-5.0f32; 2 * NUM_LABELS];
        raw[0] = 20.0;
        raw[NUM_LABELS] = -30.0;
        raw[NUM_LABELS + 1] = 20.0;
        let c = centred(&raw);
        assert_eq!((c[0], c[1], c[2]), (24.0, -1.0, -1.0));
        assert_eq!((c[NUM_LABELS], c[NUM_LABELS + 1], c[NUM_LABELS + 2]), (-25.0, 25.0, 0.0));
        let p = probabilities(&raw).unwrap();
        let (hi, lo) = (0.731_058_6f32, 0.268_941_4f32);
        let near = |a: f32, b: f32| (a - b).abs() < 1e-6;
        assert!(near(p[0], hi) && near(p[NUM_LABELS], lo));
        assert!(near(p[1], lo) && near(p[NUM_LABELS + 1], hi));
        assert!(near(p[2], lo) && near(p[NUM_LABELS + 2], hi));
        let same = probabilities(&[vec![1.0f32; NUM_LABELS], vec![1.0f32; NUM_LABELS]].concat()).unwrap();
        assert!(same.iter().all(|&x| x == 0.5));
        assert!(probabilities(&raw[..3]).is_err() && probabilities(&[]).is_err());
    }
}
