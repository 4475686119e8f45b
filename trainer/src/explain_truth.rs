//! How true the edge runtime's explanations are, on a synthetic cohort whose generator knows
//! what drives each phenotype ([`crate::synth::oracle_probabilities`]).
//!
//! Input: `ckd-edge explain` records (the occlusion effect of each concept of a visit on each
//! phenotype, `Engine::occlude`) and the samples they explain. The truth: the same occlusion
//! applied to the generator's oracle. Leaving out concept `c` removes every item of its field
//! rendered as `c` (a diagnosis title, drug or procedure title; knowledge clauses have no
//! effect in the generator) and recomputes the oracle; its true effect on phenotype `d` is the
//! oracle's logit of `d` with the visit minus without the concept. A concept **drives** `d`
//! when that effect is at least [`DRIVER_LOGIT`]: above the burden term every phenotype adds to
//! every logit (0.06), below the smallest direct term of the generator (0.28).
//!
//! Scored pairs: each sample and each phenotype the bundle predicts positive for it whose
//! visit holds at least one driver of it (others are counted, not scored). Per pair:
//! - `top is driver`: the concept with the largest model effect drives `d`;
//! - `random is driver`: the share of the visit's concepts that drive `d` (the chance that a
//!   concept picked at random does), the baseline of the line above;
//! - `top is oracle top`: the model's top concept is the oracle's;
//! - Kendall's tau-b between the model's and the oracle's effects over the visit's concepts
//!   (where defined).
//!
//! Means over pairs with 95% intervals resampled by patient ([`ckd_core::bootstrap`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ckd_core::bootstrap::{interval, Groups, Interval};
use ckd_core::visit::{Field, Rendered, Sample, Visit};
use ckd_core::{LabelSet, NUM_LABELS, PHENOTYPES};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::stats::{kendall_tau_b, median};
use crate::synth::oracle_probabilities;

/// The smallest true logit effect that makes a concept a driver of a phenotype.
pub const DRIVER_LOGIT: f64 = 0.25;

/// What is wrong with the explanations or their samples.
#[derive(Debug, thiserror::Error)]
pub enum ExplainTruthError {
    /// A line of `ckd-edge explain` output that does not parse.
    #[error("{path}:{line}: {msg}")]
    Record {
        /// The file (or command) read.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// The `ckd-edge` binary could not be run, or failed.
    #[error("{bin}: {msg}")]
    Run {
        /// The binary.
        bin: PathBuf,
        /// What happened (its exit status and last error line).
        msg: String,
    },
    /// A sample has no explanation, or an explanation no sample.
    #[error("sample {id}: {msg}")]
    Sample {
        /// Sample id.
        id: String,
        /// What is wrong.
        msg: String,
    },
}

type Result<T> = std::result::Result<T, ExplainTruthError>;

/// One concept of an explanation: field, text and the effect on each phenotype (label order).
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptEffect {
    /// Field of the concept.
    pub field: Field,
    /// Its text.
    pub text: String,
    /// Probability with it minus without it, per phenotype.
    pub effect: [f32; NUM_LABELS],
}

/// One `ckd-edge explain` record.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    /// The input's `id`.
    pub id: String,
    /// The text the model read.
    pub text: String,
    /// Probability of each phenotype on the whole text, label order.
    pub probs: [f32; NUM_LABELS],
    /// Phenotypes at or above the bundle's thresholds.
    pub positive: LabelSet,
    /// Concepts in text order.
    pub concepts: Vec<ConceptEffect>,
}

/// Parses `ckd-edge explain` output (one JSON record per line; every record needs an `id`).
pub fn parse_explanations(text: &str, path: &Path) -> Result<Vec<Explained>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let err = |msg: String| ExplainTruthError::Record { path: path.to_path_buf(), line: i + 1, msg };
        let v: Value = serde_json::from_str(line).map_err(|e| err(format!("not JSON: {e}")))?;
        out.push(parse_record(&v).map_err(err)?);
    }
    Ok(out)
}

fn parse_record(v: &Value) -> std::result::Result<Explained, String> {
    let str_field = |k: &str| v[k].as_str().map(str::to_string).ok_or_else(|| format!("no string `{k}`"));
    let positives = v["positives"].as_array().ok_or("no array `positives`")?;
    let mut positive = LabelSet::default();
    for p in positives {
        let name = p.as_str().ok_or("`positives`: not a string")?;
        let l = PHENOTYPES.iter().position(|ph| ph.name == name).ok_or(format!("`positives`: unknown {name:?}"))?;
        positive.insert(l as u8);
    }
    let mut probs = [0f32; NUM_LABELS];
    for (q, ph) in probs.iter_mut().zip(PHENOTYPES.iter()) {
        *q = v["probabilities"][ph.name].as_f64().ok_or(format!("`probabilities`: no {:?}", ph.name))? as f32;
    }
    let concepts = v["concepts"].as_array().ok_or("no array `concepts`")?;
    let concepts = concepts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let field = match c["field"].as_str() {
                Some("diagnoses") => Field::Diagnoses,
                Some("medications") => Field::Medications,
                Some("procedures") => Field::Procedures,
                Some("knowledge") => Field::Knowledge,
                other => return Err(format!("concepts[{i}].field: {other:?}")),
            };
            let text = c["text"].as_str().ok_or(format!("concepts[{i}].text: not a string"))?.to_string();
            let eff = c["effect"].as_array().filter(|a| a.len() == NUM_LABELS);
            let eff = eff.ok_or(format!("concepts[{i}].effect: not {NUM_LABELS} numbers"))?;
            let mut effect = [0f32; NUM_LABELS];
            for (e, x) in effect.iter_mut().zip(eff) {
                *e = x.as_f64().ok_or(format!("concepts[{i}].effect: not a number"))? as f32;
            }
            Ok(ConceptEffect { field, text, effect })
        })
        .collect::<std::result::Result<_, String>>()?;
    Ok(Explained { id: str_field("id")?, text: str_field("text")?, probs, positive, concepts })
}

/// Explains `samples` (their visits, ids kept) with `ckd-edge explain` (the binary `bin`) on
/// `bundle`; returns the records, their JSONL as written, and the wall seconds of the run
/// (bundle opening included).
pub fn edge_explanations(bin: &Path, bundle: &Path, samples: &[Sample]) -> Result<(Vec<Explained>, String, f64)> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let run_err = |msg: String| ExplainTruthError::Run { bin: bin.to_path_buf(), msg };
    let mut visits = Vec::new();
    for s in samples {
        let mut v = serde_json::to_value(&s.visit).map_err(|e| run_err(e.to_string()))?;
        v["id"] = serde_json::json!(s.id);
        visits.extend(v.to_string().into_bytes());
        visits.push(b'\n');
    }
    let t = std::time::Instant::now();
    let mut child = Command::new(bin)
        .args(["explain", "--top", "1", "--input", "-", "--bundle"])
        .arg(bundle)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| run_err(e.to_string()))?;
    let mut stdin = child.stdin.take().ok_or_else(|| run_err("no stdin".into()))?;
    // Written from another thread: the child's output is read meanwhile, so no pipe fills.
    let writer = std::thread::spawn(move || stdin.write_all(&visits));
    let out = child.wait_with_output().map_err(|e| run_err(e.to_string()))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(run_err(format!("explain failed ({}): {}", out.status, err.trim())));
    }
    writer
        .join()
        .map_err(|_| run_err("the thread writing the visits panicked".into()))?
        .map_err(|e| run_err(e.to_string()))?;
    let text = String::from_utf8(out.stdout).map_err(|_| run_err("explain wrote non-UTF-8".into()))?;
    Ok((parse_explanations(&text, Path::new("ckd-edge explain output"))?, text, secs))
}

/// The oracle's logits for a visit's facts.
fn oracle_logits(visit: &Visit) -> [f64; NUM_LABELS] {
    let drugs: Vec<&str> = visit.medications.iter().map(String::as_str).collect();
    let procs: Vec<&str> = visit.procedures.iter().map(|p| p.code.as_str()).collect();
    oracle_probabilities(visit.phenotypes(), &drugs, &procs).map(|p| (p / (1.0 - p)).ln())
}

/// The true effect of each concept of `rendered` (a rendering of `visit`) on each phenotype's
/// oracle logit: with the visit minus without the concept's items (see the module docs).
pub fn oracle_effects(visit: &Visit, rendered: &Rendered) -> Vec<[f64; NUM_LABELS]> {
    let full = oracle_logits(visit);
    (0..rendered.concepts.len())
        .map(|i| {
            let field = rendered.concepts[i].field;
            let text = rendered.concept_text(i).unwrap_or("").trim();
            let mut v = visit.clone();
            match field {
                Field::Diagnoses => v.diagnoses.retain(|d| d.title.trim() != text),
                Field::Medications => v.medications.retain(|m| m.trim() != text),
                Field::Procedures => v.procedures.retain(|p| p.title.trim() != text),
                Field::Knowledge => return [0.0; NUM_LABELS],
            }
            let without = oracle_logits(&v);
            core::array::from_fn(|d| full[d] - without[d])
        })
        .collect()
}

/// One scored (sample, phenotype) pair.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pair {
    top_is_driver: bool,
    random_is_driver: f64,
    top_is_oracle_top: bool,
    tau: Option<f64>,
}

/// The scores of [`score`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainTruth {
    /// Samples explained.
    pub samples: usize,
    /// Median number of concepts per visit.
    pub median_concepts: f64,
    /// Positive predictions (sample, phenotype) in all.
    pub positive_pairs: usize,
    /// Of them, scored: the visit holds a driver of the phenotype.
    pub scored_pairs: usize,
    /// The model's top concept drives the phenotype.
    pub top_is_driver: Interval,
    /// A concept of the visit picked at random drives it (the chance level).
    pub random_is_driver: Interval,
    /// `top_is_driver - random_is_driver`, paired on the same resamples.
    pub top_minus_random: Interval,
    /// The model's top concept is the oracle's.
    pub top_is_oracle_top: Interval,
    /// Mean Kendall tau-b between the model's and the oracle's effects.
    pub kendall_tau: Option<Interval>,
    /// Pairs where tau is defined.
    pub tau_pairs: usize,
    /// The driver threshold, in logits ([`DRIVER_LOGIT`]).
    pub driver_logit: f64,
}

/// Index of the largest value (the first of equal ones).
pub fn argmax(v: impl Iterator<Item = f64>) -> Option<usize> {
    v.enumerate()
        .fold(None, |best: Option<(usize, f64)>, (i, x)| match best {
            Some((_, b)) if b >= x => best,
            _ => Some((i, x)),
        })
        .map(|(i, _)| i)
}

/// The pairs of one sample.
fn sample_pairs(sample: &Sample, ex: &Explained) -> Result<(Vec<Pair>, usize)> {
    let bad = |msg: String| ExplainTruthError::Sample { id: sample.id.clone(), msg };
    let rendered = sample.rendered().ok_or_else(|| bad("its text is not in the CKD-EHR layout".into()))?;
    if rendered.text != ex.text {
        return Err(bad(
            "the bundle read a different text than training rendered (knowledge table or titles differ)".into()
        ));
    }
    if rendered.concepts.len() != ex.concepts.len() {
        return Err(bad(format!("{} concepts explained, {} rendered", ex.concepts.len(), rendered.concepts.len())));
    }
    let truth = oracle_effects(&sample.visit, &rendered);
    let n = truth.len();
    let mut pairs = Vec::new();
    for d in ex.positive.iter().map(usize::from) {
        let model: Vec<f64> = ex.concepts.iter().map(|c| f64::from(c.effect[d])).collect();
        let oracle: Vec<f64> = truth.iter().map(|t| t[d]).collect();
        let drivers = oracle.iter().filter(|&&x| x >= DRIVER_LOGIT).count();
        if drivers == 0 {
            continue;
        }
        let (top, oracle_top) = (argmax(model.iter().copied()), argmax(oracle.iter().copied()));
        pairs.push(Pair {
            top_is_driver: top.is_some_and(|t| oracle[t] >= DRIVER_LOGIT),
            random_is_driver: drivers as f64 / n as f64,
            top_is_oracle_top: top.is_some() && top == oracle_top,
            tau: kendall_tau_b(&model, &oracle),
        });
    }
    Ok((pairs, ex.positive.len()))
}

/// The mean of `f` over the pairs of the samples `idx` (repeats counted); `None` when no pair
/// has a value.
fn mean_over(per_sample: &[Vec<Pair>], idx: &[usize], f: impl Fn(&Pair) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = idx.iter().flat_map(|&i| per_sample[i].iter().filter_map(&f)).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Scores explanations of `samples` (matched by id; each sample needs one) against the oracle,
/// with `resamples` patient-bootstrap resamples from `seed`.
pub fn score(samples: &[Sample], explained: &[Explained], resamples: usize, seed: u64) -> Result<ExplainTruth> {
    let by_id: HashMap<&str, &Explained> = explained.iter().map(|e| (e.id.as_str(), e)).collect();
    let mut per_sample = Vec::with_capacity(samples.len());
    let mut positive_pairs = 0;
    for s in samples {
        let ex = by_id
            .get(s.id.as_str())
            .ok_or_else(|| ExplainTruthError::Sample { id: s.id.clone(), msg: "no explanation".into() })?;
        let (pairs, positives) = sample_pairs(s, ex)?;
        positive_pairs += positives;
        per_sample.push(pairs);
    }
    let subjects: Vec<u64> = samples.iter().map(|s| s.subject).collect();
    let rs = Groups::by_subject(&subjects).resamples(resamples, seed);
    let n = samples.len();
    let none = || ExplainTruthError::Sample { id: "(all)".into(), msg: "no positive prediction has a driver".into() };
    let top = |p: &Pair| Some(f64::from(u8::from(p.top_is_driver)));
    let random = |p: &Pair| Some(p.random_is_driver);
    let diff = |p: &Pair| Some(f64::from(u8::from(p.top_is_driver)) - p.random_is_driver);
    let oracle_top = |p: &Pair| Some(f64::from(u8::from(p.top_is_oracle_top)));
    let concepts: Vec<f64> = explained.iter().map(|e| e.concepts.len() as f64).collect();
    Ok(ExplainTruth {
        samples: n,
        median_concepts: median(concepts),
        positive_pairs,
        scored_pairs: per_sample.iter().map(Vec::len).sum(),
        top_is_driver: interval(n, &rs, |idx| mean_over(&per_sample, idx, top)).ok_or_else(none)?,
        random_is_driver: interval(n, &rs, |idx| mean_over(&per_sample, idx, random)).ok_or_else(none)?,
        top_minus_random: interval(n, &rs, |idx| mean_over(&per_sample, idx, diff)).ok_or_else(none)?,
        top_is_oracle_top: interval(n, &rs, |idx| mean_over(&per_sample, idx, oracle_top)).ok_or_else(none)?,
        kendall_tau: interval(n, &rs, |idx| mean_over(&per_sample, idx, |p| p.tau)),
        tau_pairs: per_sample.iter().flatten().filter(|p| p.tau.is_some()).count(),
        driver_logit: DRIVER_LOGIT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckd_core::visit::{render, Coded, Split};

    fn coded(code: &str, title: &str) -> Coded {
        Coded { code: code.into(), title: title.into() }
    }

    /// A CKD visit with a drug of no effect in the generator (`Acetaminophen`).
    fn sample(id: &str, subject: u64) -> Sample {
        let visit = Visit {
            diagnoses: vec![
                coded("5856", "Chronic kidney disease (ckd)"),
                coded("V1582", "Personal history of tobacco use"),
            ],
            medications: vec!["Acetaminophen".into()],
            procedures: vec![],
        };
        Sample {
            id: id.into(),
            subject,
            split: Split::Test,
            visit,
            knowledge: vec![],
            labels: LabelSet::default(),
            raw: None,
        }
    }

    #[test]
    fn oracle_effects_follow_the_generator() {
        let s = sample("a", 1);
        let r = s.rendered().unwrap();
        let t = oracle_effects(&s.visit, &r);
        assert_eq!(t.len(), 3);
        let ckd = PHENOTYPES.iter().position(|p| p.name.starts_with("Chronic kidney")).unwrap();
        // CKD persists (W_{CKD,CKD} = 4.8, plus the burden 0.06); the other two move nothing.
        assert!((t[0][ckd] - (4.8 + 0.06)).abs() < 1e-9, "{}", t[0][ckd]);
        assert!(t[1].iter().chain(&t[2]).all(|&x| x.abs() < 1e-12));
    }

    fn explained(s: &Sample, effects: [f32; 3], positive: u8) -> Explained {
        let r = render(&s.visit, &[]);
        let concepts = (0..3)
            .map(|i| {
                let mut effect = [0f32; NUM_LABELS];
                effect[positive as usize] = effects[i];
                ConceptEffect { field: r.concepts[i].field, text: r.concept_text(i).unwrap().into(), effect }
            })
            .collect();
        let mut probs = [0.1f32; NUM_LABELS];
        probs[positive as usize] = 0.9;
        Explained { id: s.id.clone(), text: r.text, probs, positive: LabelSet::from_labels([positive]), concepts }
    }

    #[test]
    fn scores_count_drivers_against_chance() {
        let ckd = PHENOTYPES.iter().position(|p| p.name.starts_with("Chronic kidney")).unwrap() as u8;
        let (a, b) = (sample("a", 1), sample("b", 2));
        // a: the model's top concept is the CKD diagnosis (the driver); b: the drug.
        let ex = vec![explained(&a, [0.3, 0.1, 0.0], ckd), explained(&b, [0.0, 0.1, 0.2], ckd)];
        let s = score(&[a.clone(), b], &ex, 200, 7).unwrap();
        assert_eq!((s.samples, s.positive_pairs, s.scored_pairs), (2, 2, 2));
        assert_eq!(s.top_is_driver.estimate, 0.5);
        assert!((s.random_is_driver.estimate - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.top_is_oracle_top.estimate, 0.5);
        // tau: a ranks (0.3, 0.1, 0) against the truth (4.86, 0, 0): C 2, D 0, ties 0 and 1 -> 2 / sqrt(3 * 2);
        // b ranks (0, 0.1, 0.2): C 0, D 2 -> -2 / sqrt(6); mean 0.
        assert!(s.kendall_tau.unwrap().estimate.abs() < 1e-12);
        // A missing explanation or a text the bundle rendered differently is an error.
        assert!(score(std::slice::from_ref(&a), &[], 10, 1)
            .unwrap_err()
            .to_string()
            .contains("sample a: no explanation"));
        let mut other = explained(&a, [0.3, 0.1, 0.0], ckd);
        other.text.push(' ');
        assert!(score(&[a], &[other], 10, 1).unwrap_err().to_string().contains("different text"));
    }

    #[test]
    fn records_parse_and_bad_ones_are_named() {
        let probs: serde_json::Map<String, Value> =
            PHENOTYPES.iter().map(|p| (p.name.to_string(), 0.25.into())).collect();
        let probs = serde_json::to_string(&probs).unwrap();
        let line = r#"{"id": "x", "text": "t", "positives": ["Shock"], "probabilities": PROBS, "concepts": [{"field": "medications", "text": "Heparin", "effect": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0.5]}]}"#;
        let line = line.replace("PROBS", &probs);
        let e = parse_explanations(&line, Path::new("f.jsonl")).unwrap();
        assert_eq!(e[0].concepts[0].effect[24], 0.5);
        assert_eq!(e[0].probs, [0.25; NUM_LABELS]);
        assert_eq!(e[0].positive, LabelSet::from_labels([24]));
        let bad = line.replace("\"medications\"", "\"drugs\"");
        let err = parse_explanations(&format!("\n{bad}"), Path::new("f.jsonl")).unwrap_err().to_string();
        assert!(err.starts_with("f.jsonl:2: concepts[0].field"), "{err}");
    }
}
