//! `ckd teacher zero-shot`: a frozen LLM's zero-shot scores per visit, kept line by line in
//! `OUT.scores.jsonl` (so an interrupted run resumes), turned into probabilities without labels
//! (`teacher::zero_shot::probabilities`) in `OUT`; when the samples carry labels, the macro-AUC of
//! the raw and the visit-centred scores and each phenotype's AUC, with 95% patient-bootstrap
//! intervals, printed (best and worst five) and written to `OUT.report.json`. With
//! `--evidence FILE`, also the teacher evidence file of `ckd teacher label` (probabilities and
//! the prompt attention of the last `--last-k-layers` layers), taken in the same pass.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use ckd_core::bootstrap::{self, Groups};
use ckd_core::evidence::{DataIdentity, EvidenceFile, TeacherIdentity};
use ckd_core::visit::Sample;
use ckd_core::{metrics, NUM_LABELS};
use ckd_trainer::models::qwen2::Qwen2ForCausalLM;
use ckd_trainer::teacher::{label, load_frozen, states, zero_shot, Prompt};
use ckd_trainer::{io, progress};

use super::args::ZeroShotArgs;
use super::data::load_samples;

pub fn run(a: &ZeroShotArgs) -> Result<()> {
    let (model, prompts, key) = load_frozen(&a.frozen.base, a.frozen.device, a.frozen.max_len, a.frozen.base_weights)?;
    let scoring = a.scoring.scoring();
    // Scores of one model under one scoring resume each other only.
    let key = match scoring {
        zero_shot::Scoring::Names => key,
        other => format!("{key}|{}", other.name()),
    };
    anyhow::ensure!(a.last_k_layers > 0, "--last-k-layers must be at least 1");
    let last_k = a.evidence.as_ref().map(|_| a.last_k_layers);
    let (mut samples, _, _) = load_samples(&a.data, a.split.split())?;
    if let Some(n) = a.limit {
        samples.truncate(n);
    }
    anyhow::ensure!(!samples.is_empty(), "{}: no {} samples", a.data.display(), a.split.split().name());
    let scores_path = PathBuf::from(format!("{}.scores.jsonl", a.out.display()));
    let mut done = read_scores(&scores_path, &key)?;
    let cont = zero_shot::Continuations::with_scoring(prompts.tokenizer(), scoring)?;
    let encoded = samples.iter().map(|s| prompts.encode(s)).collect::<Result<Vec<_>, _>>()?;
    // A visit is scored again when evidence is asked for and its line has none of this K.
    let todo: Vec<usize> = (0..samples.len())
        .filter(|&i| done.get(&samples[i].id).is_none_or(|d| last_k.is_some_and(|k| d.attention_k != Some(k))))
        .collect();
    note!(
        "zero-shot ({}): {} samples, {} already scored{}",
        scoring.name(),
        samples.len(),
        samples.len() - todo.len(),
        if last_k.is_some() { " with attention evidence" } else { "" }
    );
    let scoring_run = ScoringRun { model: &model, encoded: &encoded, cont: &cont, key: &key, last_k };
    scoring_run.score(&samples, &todo, &scores_path, &mut done)?;
    let free = zero_shot::visit_free_scores(&model, &prompts, &cont, &samples[0])?;
    let raw: Vec<f32> = samples.iter().flat_map(|s| done[&s.id].raw.clone()).collect();
    let p = zero_shot::probabilities(&raw)?;
    let mut text = String::new();
    for (s, row) in samples.iter().zip(p.chunks(NUM_LABELS)) {
        text.push_str(&serde_json::json!({"id": s.id, "p": row}).to_string());
        text.push('\n');
    }
    io::write_atomic(&a.out, text.as_bytes()).with_context(|| format!("writing {}", a.out.display()))?;
    note!("wrote {} ({} samples; raw scores in {})", a.out.display(), samples.len(), scores_path.display());
    if let (Some(path), Some(k)) = (&a.evidence, last_k) {
        let identity = TeacherIdentity {
            model: format!("zero-shot {} scores of {key}", scoring.name()),
            config_hash: key.clone(),
            adapter_hash: None,
            temperature: 1.0,
            last_k_layers: k as u32,
        };
        write_evidence(path, identity, &samples, &encoded, &p, &done)?;
    }
    if let Some(rep) = report(&samples, &raw, &p) {
        let path = PathBuf::from(format!("{}.report.json", a.out.display()));
        let rep = serde_json::json!({
            "scoring": scoring.name(),
            "split": a.split.split().name(),
            "samples": samples.len(),
            "visit_free_scores": free,
            "report": rep,
        });
        io::write_atomic(&path, io::pretty_json(&rep).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        note!("wrote {}", path.display());
    }
    Ok(())
}

/// One visit's line of `OUT.scores.jsonl`: its 25 raw scores and, when evidence was asked for,
/// the attention of the prompt's last token per prompt token, averaged over the last
/// `attention_k` layers.
struct Scored {
    raw: Vec<f32>,
    attention: Vec<f32>,
    attention_k: Option<usize>,
}

/// What scoring a visit needs: the model, the visits' prompts, the continuations, the run's key
/// and, for evidence, the number of final layers averaged.
struct ScoringRun<'a> {
    model: &'a Qwen2ForCausalLM,
    encoded: &'a [Prompt],
    cont: &'a zero_shot::Continuations,
    key: &'a str,
    last_k: Option<usize>,
}

impl ScoringRun<'_> {
    /// Scores visits `todo` on the shared prefix's KV cache, appending each one's line to
    /// `path` as it finishes (so a stopped run resumes there) and to `done`.
    fn score(
        &self,
        samples: &[Sample],
        todo: &[usize],
        path: &std::path::Path,
        done: &mut HashMap<String, Scored>,
    ) -> Result<()> {
        let shared = states::shared_prefix(self.encoded);
        let cache = states::prefill(self.model, &self.encoded[0].ids, shared)?;
        note!("zero-shot: shared prefix {shared} tokens");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let bar = progress::auto().bar("zero-shot scores");
        bar.set_length(todo.len() as u64);
        let t0 = std::time::Instant::now();
        for &i in todo {
            let (raw, attention) = match self.last_k {
                Some(k) => zero_shot::prompt_scores_with_attention(self.model, &cache, &self.encoded[i], self.cont, k)?,
                None => (zero_shot::prompt_scores(self.model, &cache, &self.encoded[i], self.cont)?, Vec::new()),
            };
            let mut line = serde_json::json!({"key": self.key, "id": samples[i].id, "raw": raw});
            if let Some(k) = self.last_k {
                line["attention_k"] = serde_json::json!(k);
                line["attention"] = serde_json::json!(attention);
            }
            writeln!(file, "{line}")
                .and_then(|_| file.flush())
                .with_context(|| format!("writing {}", path.display()))?;
            done.insert(samples[i].id.clone(), Scored { raw, attention, attention_k: self.last_k });
            bar.inc(1);
        }
        bar.finish_and_clear();
        if !todo.is_empty() {
            note!("zero-shot: {:.2} s per visit", t0.elapsed().as_secs_f64() / todo.len() as f64);
        }
        Ok(())
    }
}

/// The evidence file (`ckd teacher label`'s format) of the zero-shot teacher: per sample its
/// probabilities `p` (`[N * 25]`) and the prompt attention aggregated to words, concepts and
/// fields, so every consumer of teacher evidence (students, `ckd explain`) reads it.
fn write_evidence(
    path: &std::path::Path,
    teacher: TeacherIdentity,
    samples: &[Sample],
    encoded: &[Prompt],
    p: &[f32],
    done: &HashMap<String, Scored>,
) -> Result<()> {
    let mut records = Vec::with_capacity(samples.len());
    for ((s, prompt), probs) in samples.iter().zip(encoded).zip(p.chunks(NUM_LABELS)) {
        let w = &done[&s.id].attention;
        anyhow::ensure!(
            w.len() == prompt.ids.len(),
            "sample {}: {} attention weights for a {}-token prompt (scores of another --max-len?)",
            s.id,
            w.len(),
            prompt.ids.len()
        );
        records.push(label::sample_record(s, prompt, probs.to_vec(), w)?);
    }
    let file = EvidenceFile { teacher, shard: None, records, data: Some(DataIdentity::of(samples)) };
    label::write_evidence(path, &file)?;
    note!("wrote {} (probabilities and prompt attention of {} samples)", path.display(), samples.len());
    Ok(())
}

/// Lines already computed for `key` (one JSON object per line; a later line of a sample
/// replaces an earlier one); a line of another model is an error (the file belongs to another
/// run), a truncated last line is dropped.
fn read_scores(path: &std::path::Path, key: &str) -> Result<HashMap<String, Scored>> {
    let mut out = HashMap::new();
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(out) };
    for (n, line) in text.lines().enumerate() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let at = || format!("{} line {}", path.display(), n + 1);
        anyhow::ensure!(
            v["key"] == key,
            "{}: scores of another model or prompt; remove the file or choose another --out",
            at()
        );
        let raw: Vec<f32> = serde_json::from_value(v["raw"].clone()).with_context(at)?;
        anyhow::ensure!(raw.len() == NUM_LABELS, "{}: {} scores, expected {NUM_LABELS}", at(), raw.len());
        let attention: Vec<f32> = match v.get("attention") {
            Some(a) => serde_json::from_value(a.clone()).with_context(at)?,
            None => Vec::new(),
        };
        let attention_k = v.get("attention_k").and_then(serde_json::Value::as_u64).map(|k| k as usize);
        anyhow::ensure!(attention_k.is_some() == v.get("attention").is_some(), "{}: attention without its K", at());
        out.insert(v["id"].as_str().unwrap_or_default().to_string(), Scored { raw, attention, attention_k });
    }
    Ok(out)
}

/// Macro-AUC of the raw and visit-centred scores, and each phenotype's AUC, with
/// patient-bootstrap intervals (1,000 resamples), printed and returned as JSON; `None` when no
/// phenotype has both classes among the samples.
fn report(samples: &[Sample], raw: &[f32], p: &[f32]) -> Option<serde_json::Value> {
    let targets: Vec<u8> = samples.iter().flat_map(|s| s.labels.to_dense().map(|v| v as u8)).collect();
    let subjects: Vec<u64> = samples.iter().map(|s| s.subject).collect();
    let res = Groups::by_subject(&subjects).resamples(1000, 7);
    let rows = |m: &[f32], idx: &[usize], j: Option<usize>| -> (Vec<f32>, Vec<u8>, usize) {
        let (lo, k) = match j {
            Some(j) => (j, 1),
            None => (0, NUM_LABELS),
        };
        let pick = |v: &[f32], i: usize| v[i * NUM_LABELS + lo..i * NUM_LABELS + lo + k].to_vec();
        let s = idx.iter().flat_map(|&i| pick(m, i)).collect();
        let t = idx.iter().flat_map(|&i| targets[i * NUM_LABELS + lo..i * NUM_LABELS + lo + k].to_vec()).collect();
        (s, t, k)
    };
    let auc = |m: &[f32], idx: &[usize], j: Option<usize>| -> Option<f64> {
        let (s, t, k) = rows(m, idx, j);
        metrics::roc_auc(&s, &t, k).ok().and_then(|a| a.macro_avg)
    };
    // The visit-free correction, a constant per phenotype, cannot change a phenotype's ranking,
    // so its macro-AUC is the raw one; centring each visit's scores can.
    let centred = zero_shot::centred(raw);
    let json = |iv: &bootstrap::Interval| serde_json::json!({"auc": iv.estimate, "lo": iv.lo, "hi": iv.hi});
    let mut out = serde_json::Map::new();
    for (key, name, scores) in
        [("raw", "raw", raw), ("centred", "visit-centred (the ranking of the written probabilities)", &centred[..])]
    {
        let iv = bootstrap::interval(samples.len(), &res, |idx| auc(scores, idx, None))?;
        note!("zero-shot {name}: macro-AUC {:.3} [{:.3}, {:.3}]", iv.estimate, iv.lo, iv.hi);
        out.insert(format!("macro_{key}"), json(&iv));
    }
    let mut per: Vec<(bootstrap::Interval, &str)> = (0..NUM_LABELS)
        .filter_map(|j| {
            let iv = bootstrap::interval(samples.len(), &res, |idx| auc(p, idx, Some(j)))?;
            Some((iv, ckd_core::labels::PHENOTYPES[j].authors))
        })
        .collect();
    per.sort_by(|a, b| b.0.estimate.total_cmp(&a.0.estimate));
    let fmt = |v: &[(bootstrap::Interval, &str)]| {
        v.iter().map(|(iv, n)| format!("{n} {:.2}", iv.estimate)).collect::<Vec<_>>().join("; ")
    };
    note!("zero-shot best five: {}", fmt(&per[..per.len().min(5)]));
    note!("zero-shot worst five: {}", fmt(&per[per.len().saturating_sub(5)..]));
    let below = per.iter().filter(|(iv, _)| iv.hi < 0.5).count();
    note!("zero-shot: {} of {} phenotypes with an interval below 0.5", below, per.len());
    let per: Vec<serde_json::Value> = per
        .iter()
        .map(|(iv, n)| {
            let mut v = json(iv);
            v["phenotype"] = serde_json::json!(n);
            v
        })
        .collect();
    out.insert("per_phenotype".into(), serde_json::Value::Array(per));
    Some(serde_json::Value::Object(out))
}
