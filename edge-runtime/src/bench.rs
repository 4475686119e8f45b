//! Latency measurement of an opened [`Engine`] on inputs of a chosen token count: what
//! `ckd-edge bench` prints on a device and what the side-by-side scripts time.
//!
//! [`text_of_len`] makes a CKD-EHR-like text that tokenizes to exactly `seq` tokens (or the
//! nearest count below it that the tokenizer allows); [`time_predictions`] runs
//! [`Engine::predict_text`] on it (tokenization, the plan and thresholding: one whole prediction)
//! and returns each run's milliseconds; [`Percentiles`] summarizes them.

use std::time::{Duration, Instant};

use crate::{EdgeError, Engine};

/// Words a CKD-EHR visit text is made of (diagnoses, drugs, procedures, one knowledge clause),
/// repeated to reach a token count.
pub const WORDS: &str = "The patient-acquired disease is Septicemia, Pneumonia, organism unspecified, Acute kidney \
failure, Other and unspecified disorders of metabolism. The patient had used the following medication: Vancomycin, \
Piperacillin-Tazobactam, Norepinephrine, Sodium Chloride 0.9% Flush, Heparin. The surgical operation performed by \
the patient: Insert endotracheal tube, Cont inv mec ven <96 hrs, Arterial catheterization. The medications that \
maybe have therapeutic effect on Septicemia (except in labor) are Vancomycin, Piperacillin-Tazobactam, \
Norepinephrine, Cefepime, Metronidazole.";

/// A text of [`WORDS`] (repeated) whose token ids under `engine`'s tokenizer number exactly
/// `seq`, or the largest count below `seq` that a whole number of words gives; with the ids.
/// Fails when the bundle truncates inputs below `seq` tokens.
pub fn text_of_len(engine: &Engine, seq: usize) -> Result<(String, Vec<u32>), EdgeError> {
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let text = |n: usize| (0..n).map(|i| words[i % words.len()]).collect::<Vec<_>>().join(" ");
    // Token counts grow with the word count (up to the bundle's truncation): find a word count
    // with more than `seq` tokens, then the largest one with at most `seq`.
    let (mut lo, mut hi) = (1usize, 1usize);
    loop {
        let (ids, truncated) = engine.tokenize(&text(hi))?;
        if ids.len() == seq {
            return Ok((text(hi), ids));
        }
        if ids.len() > seq {
            break;
        }
        if truncated {
            return Err(EdgeError::BenchLength { requested: seq, max: ids.len() });
        }
        lo = hi;
        hi *= 2;
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if engine.tokenize(&text(mid))?.0.len() <= seq {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let ids = engine.tokenize(&text(lo))?.0;
    Ok((text(lo), ids))
}

/// Milliseconds of each of up to `runs` predictions of `text`, after `warmup` untimed ones;
/// stops early (after at least `min(runs, 3)` timed runs) once `budget` has passed, so a slow
/// path does not hold a device for minutes.
pub fn time_predictions(
    engine: &Engine,
    text: &str,
    warmup: usize,
    runs: usize,
    budget: Duration,
) -> Result<Vec<f64>, EdgeError> {
    for _ in 0..warmup {
        engine.predict_text(text)?;
    }
    let start = Instant::now();
    let mut ms = Vec::with_capacity(runs);
    while ms.len() < runs {
        let t = Instant::now();
        engine.predict_text(text)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        if ms.len() >= runs.min(3) && start.elapsed() >= budget {
            break;
        }
    }
    Ok(ms)
}

/// Nearest-rank percentiles of a set of timings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// Number of timings.
    pub n: usize,
    /// Smallest.
    pub min: f64,
    /// 50th percentile (the median by nearest rank).
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile (the largest, for fewer than 100 timings).
    pub p99: f64,
}

impl Percentiles {
    /// Percentiles of `ms`; `None` when it is empty or holds a NaN.
    pub fn of(ms: &[f64]) -> Option<Self> {
        if ms.is_empty() || ms.iter().any(|x| x.is_nan()) {
            return None;
        }
        let mut s = ms.to_vec();
        s.sort_by(f64::total_cmp);
        // Nearest rank: the smallest value with at least p% of the values at or below it.
        let rank = |p: f64| s[((p / 100.0 * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        Some(Self { n: s.len(), min: s[0], p50: rank(50.0), p90: rank(90.0), p99: rank(99.0) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed nearest ranks: for 1..=10, p50 is the 5th value, p90 the 9th, p99 the 10th.
    #[test]
    fn percentiles_by_nearest_rank() {
        let ms: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        let p = Percentiles::of(&ms).unwrap();
        assert_eq!((p.n, p.min, p.p50, p.p90, p.p99), (10, 1.0, 5.0, 9.0, 10.0));
        let one = Percentiles::of(&[7.0]).unwrap();
        assert_eq!((one.min, one.p50, one.p90, one.p99), (7.0, 7.0, 7.0, 7.0));
        assert!(Percentiles::of(&[]).is_none());
        assert!(Percentiles::of(&[1.0, f64::NAN]).is_none());
    }
}
