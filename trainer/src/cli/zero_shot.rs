//! `ckd teacher zero-shot`: a frozen LLM's zero-shot scores per visit, kept line by line in
//! `OUT.scores.jsonl` (so an interrupted run resumes), turned into probabilities without labels
//! (`teacher::zero_shot::probabilities`) in `OUT`; when the samples carry labels, the macro-AUC of
//! the raw and the visit-centred scores with 95% patient-bootstrap intervals, and the phenotypes it
//! ranks best and worst.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use ckd_core::bootstrap::{self, Groups};
use ckd_core::visit::Sample;
use ckd_core::{metrics, NUM_LABELS};
use ckd_trainer::teacher::{load_frozen, states, zero_shot};
use ckd_trainer::{io, progress};

use super::args::ZeroShotArgs;
use super::data::load_samples;

pub fn run(a: &ZeroShotArgs) -> Result<()> {
    let (model, prompts, key) = load_frozen(&a.frozen.base, a.frozen.device, a.frozen.max_len, a.frozen.base_weights)?;
    let (mut samples, _, _) = load_samples(&a.data, a.split.split())?;
    if let Some(n) = a.limit {
        samples.truncate(n);
    }
    anyhow::ensure!(!samples.is_empty(), "{}: no {} samples", a.data.display(), a.split.split().name());
    let scores_path = PathBuf::from(format!("{}.scores.jsonl", a.out.display()));
    let mut done = read_scores(&scores_path, &key)?;
    let cont = zero_shot::Continuations::new(prompts.tokenizer())?;
    let encoded = samples.iter().map(|s| prompts.encode(s)).collect::<Result<Vec<_>, _>>()?;
    let shared = states::shared_prefix(&encoded);
    let cache = states::prefill(&model, &encoded[0].ids, shared)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&scores_path)
        .with_context(|| format!("opening {}", scores_path.display()))?;
    let todo: Vec<usize> = (0..samples.len()).filter(|&i| !done.contains_key(&samples[i].id)).collect();
    note!(
        "zero-shot: {} samples, {} already scored, shared prefix {shared} tokens",
        samples.len(),
        samples.len() - todo.len()
    );
    let bar = progress::auto().bar("zero-shot scores");
    bar.set_length(todo.len() as u64);
    let t0 = std::time::Instant::now();
    for &i in &todo {
        let raw = zero_shot::prompt_scores(&model, &cache, &encoded[i], &cont)?;
        let line = serde_json::json!({"key": key, "id": samples[i].id, "raw": raw});
        writeln!(file, "{line}")
            .and_then(|_| file.flush())
            .with_context(|| format!("writing {}", scores_path.display()))?;
        done.insert(samples[i].id.clone(), raw);
        bar.inc(1);
    }
    bar.finish_and_clear();
    if !todo.is_empty() {
        note!("zero-shot: {:.2} s per visit", t0.elapsed().as_secs_f64() / todo.len() as f64);
    }
    let free = zero_shot::visit_free_scores(&model, &prompts, &samples[0])?;
    let raw: Vec<f32> = samples.iter().flat_map(|s| done[&s.id].clone()).collect();
    let p = zero_shot::probabilities(&raw, &free)?;
    let mut text = String::new();
    for (s, row) in samples.iter().zip(p.chunks(NUM_LABELS)) {
        text.push_str(&serde_json::json!({"id": s.id, "p": row}).to_string());
        text.push('\n');
    }
    io::write_atomic(&a.out, text.as_bytes()).with_context(|| format!("writing {}", a.out.display()))?;
    report(&samples, &raw, &p);
    note!("wrote {} ({} samples; raw scores in {})", a.out.display(), samples.len(), scores_path.display());
    Ok(())
}

/// Raw scores already computed for `key` (one JSON object per line); a line of another model is
/// an error (the file belongs to another run), a truncated last line is dropped.
fn read_scores(path: &std::path::Path, key: &str) -> Result<HashMap<String, Vec<f32>>> {
    let mut out = HashMap::new();
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(out) };
    for (n, line) in text.lines().enumerate() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        anyhow::ensure!(
            v["key"] == key,
            "{} line {}: scores of another model or prompt; remove the file or choose another --out",
            path.display(),
            n + 1
        );
        let raw: Vec<f32> =
            serde_json::from_value(v["raw"].clone()).with_context(|| format!("{} line {}", path.display(), n + 1))?;
        anyhow::ensure!(
            raw.len() == NUM_LABELS,
            "{} line {}: {} scores, expected {NUM_LABELS}",
            path.display(),
            n + 1,
            raw.len()
        );
        out.insert(v["id"].as_str().unwrap_or_default().to_string(), raw);
    }
    Ok(out)
}

/// Macro-AUC of the raw and visit-centred scores with patient-bootstrap intervals, and the five
/// best and worst phenotypes, when the samples carry labels.
fn report(samples: &[Sample], raw: &[f32], p: &[f32]) {
    let targets: Vec<u8> = samples.iter().flat_map(|s| s.labels.to_dense().map(|v| v as u8)).collect();
    let subjects: Vec<u64> = samples.iter().map(|s| s.subject).collect();
    let res = Groups::by_subject(&subjects).resamples(1000, 7);
    let auc = |scores: &[f32], idx: &[usize]| -> Option<f64> {
        let s: Vec<f32> =
            idx.iter().flat_map(|&i| scores[i * NUM_LABELS..(i + 1) * NUM_LABELS].iter().copied()).collect();
        let t: Vec<u8> =
            idx.iter().flat_map(|&i| targets[i * NUM_LABELS..(i + 1) * NUM_LABELS].iter().copied()).collect();
        metrics::roc_auc(&s, &t, NUM_LABELS).ok().and_then(|a| a.macro_avg)
    };
    // Each visit's scores minus their mean over the 25 names: removes how readily the model
    // answers at all after this visit (the visit-free correction, a constant per phenotype,
    // cannot change a phenotype's ranking, so its macro-AUC is the raw one).
    let centred: Vec<f32> = raw
        .chunks(NUM_LABELS)
        .flat_map(|r| {
            let m = r.iter().sum::<f32>() / NUM_LABELS as f32;
            r.iter().map(move |x| x - m)
        })
        .collect();
    let named = [
        ("raw (mean log-probability of the name; the same ranking as the written probabilities)", raw),
        ("visit-centred (minus the visit's mean over the 25 names)", &centred[..]),
    ];
    for (name, scores) in named {
        match bootstrap::interval(samples.len(), &res, |idx| auc(scores, idx)) {
            Some(iv) => note!("zero-shot {name}: macro-AUC {:.3} [{:.3}, {:.3}]", iv.estimate, iv.lo, iv.hi),
            None => note!("zero-shot {name}: macro-AUC undefined (no label with both classes)"),
        }
    }
    let Ok(per) = metrics::roc_auc(p, &targets, NUM_LABELS) else { return };
    let mut named: Vec<(f64, &str)> = per
        .per_label
        .iter()
        .enumerate()
        .filter_map(|(j, a)| a.map(|a| (a, ckd_core::labels::PHENOTYPES[j].authors)))
        .collect();
    named.sort_by(|a, b| b.0.total_cmp(&a.0));
    let fmt = |v: &[(f64, &str)]| v.iter().map(|(a, n)| format!("{n} {a:.2}")).collect::<Vec<_>>().join("; ");
    note!("zero-shot best five: {}", fmt(&named[..named.len().min(5)]));
    note!("zero-shot worst five: {}", fmt(&named[named.len().saturating_sub(5)..]));
}
