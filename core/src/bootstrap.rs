//! Bootstrap intervals resampled by patient (cluster bootstrap), and paired differences.
//!
//! Samples of one patient are correlated (one sample per pair of consecutive visits), so an
//! interval that resamples samples independently is too narrow. Here each resample draws
//! `n_groups` patients with replacement and takes all of each drawn patient's samples (a
//! patient drawn twice contributes its samples twice). A statistic that is undefined on a
//! resample (e.g. an AUC with no positive) is left out; the interval is the 2.5th and 97.5th
//! percentile of the defined values (linear interpolation between order statistics, as numpy's
//! default `percentile`).
//!
//! A paired interval evaluates two models on the *same* resamples and takes the percentiles of
//! the difference, which is what "model A beats model B" needs: the two models' own intervals
//! may overlap while the paired one excludes 0.
//!
//! Deterministic for a seed (SplitMix64 draws), so reports are reproducible.

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

pub use crate::rng::SplitMix64;

/// Number of resamples the reports use.
pub const DEFAULT_RESAMPLES: usize = 1000;

/// A point estimate and its percentile interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The statistic on the full sample set.
    pub estimate: f64,
    /// Lower bound (2.5th percentile of the resampled statistics).
    pub lo: f64,
    /// Upper bound (97.5th percentile).
    pub hi: f64,
    /// Resamples on which the statistic was defined (out of the number drawn).
    pub n_defined: usize,
}

impl Interval {
    /// Whether the whole interval is above 0 (for a difference: a measurable gain).
    pub fn above_zero(&self) -> bool {
        self.lo > 0.0
    }

    /// Whether the whole interval is below 0.
    pub fn below_zero(&self) -> bool {
        self.hi < 0.0
    }
}

/// Sample indices grouped by patient: `groups[g]` lists the indices of patient `g`'s samples.
/// Built from one patient id per sample; group order is first-seen order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups {
    groups: Vec<Vec<usize>>,
}

impl Groups {
    /// Groups sample `i` with every other sample of patient `subjects[i]`.
    pub fn by_subject(subjects: &[u64]) -> Self {
        let mut order: Vec<usize> = (0..subjects.len()).collect();
        // Stable sort by subject, then assign groups in first-seen order of the subjects.
        order.sort_by_key(|&i| subjects[i]);
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for &i in &order {
            match groups.last_mut() {
                Some((_, g)) if subjects[g[0]] == subjects[i] => g.push(i),
                _ => groups.push((i, alloc::vec![i])),
            }
        }
        groups.sort_by_key(|(first, _)| *first);
        Groups { groups: groups.into_iter().map(|(_, g)| g).collect() }
    }

    /// Number of patients.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there are no patients.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The sample indices of one resample (patients drawn with replacement).
    pub fn resample(&self, rng: &mut SplitMix64) -> Vec<usize> {
        let mut idx = Vec::new();
        for _ in 0..self.groups.len() {
            idx.extend_from_slice(&self.groups[rng.below(self.groups.len())]);
        }
        idx
    }

    /// `n` resamples drawn from `seed` (the same seed gives the same resamples, which is what
    /// makes two models' intervals paired).
    pub fn resamples(&self, n: usize, seed: u64) -> Vec<Vec<usize>> {
        let mut rng = SplitMix64::new(seed);
        (0..n).map(|_| self.resample(&mut rng)).collect()
    }
}

/// Median of unsorted values (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile_sorted(&v, 0.5)
}

/// Linear-interpolation percentile (`q` in `[0, 1]`) of sorted values; NaN when empty.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = pos as usize; // floor, pos >= 0
            let hi = (lo + 1).min(n - 1);
            let frac = pos - lo as f64;
            sorted[lo] + (sorted[hi] - sorted[lo]) * frac
        }
    }
}

/// The 95% percentile interval of `stat` over `resamples`; `estimate` is `stat` on all
/// `n_samples` samples. `None` when the statistic is undefined on the full set.
pub fn interval<F>(n_samples: usize, resamples: &[Vec<usize>], stat: F) -> Option<Interval>
where
    F: Fn(&[usize]) -> Option<f64>,
{
    let all: Vec<usize> = (0..n_samples).collect();
    let estimate = stat(&all)?;
    Some(interval_from(estimate, resamples.iter().map(|r| stat(r))))
}

/// The 95% percentile interval of statistics already computed on each resample (`None` where
/// undefined on that resample), around `estimate`. For statistics that are combined from cached
/// per-resample values, e.g. the mean over several models' AUCs on each resample.
pub fn interval_from(estimate: f64, per_resample: impl IntoIterator<Item = Option<f64>>) -> Interval {
    let mut vals: Vec<f64> = per_resample.into_iter().flatten().filter(|v| v.is_finite()).collect();
    vals.sort_by(f64::total_cmp);
    Interval {
        estimate,
        lo: percentile_sorted(&vals, 0.025),
        hi: percentile_sorted(&vals, 0.975),
        n_defined: vals.len(),
    }
}

/// The paired 95% interval of `stat_a - stat_b` over the same `resamples`.
pub fn paired_difference<A, B>(n_samples: usize, resamples: &[Vec<usize>], stat_a: A, stat_b: B) -> Option<Interval>
where
    A: Fn(&[usize]) -> Option<f64>,
    B: Fn(&[usize]) -> Option<f64>,
{
    interval(n_samples, resamples, |idx| Some(stat_a(idx)? - stat_b(idx)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn interval_from_cached_values_skips_undefined_and_non_finite() {
        // 0..=100 with gaps: the percentiles of 0, 1, ..., 100 are 2.5 and 97.5.
        let vals = (0..=100).map(|v| Some(v as f64)).chain([None, Some(f64::NAN)]);
        let iv = interval_from(50.0, vals);
        assert_eq!(iv.n_defined, 101);
        assert!((iv.lo - 2.5).abs() < 1e-12 && (iv.hi - 97.5).abs() < 1e-12);
        assert_eq!(iv.estimate, 50.0);
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4], [2.5, 50, 97.5]) = [1.075, 2.5, 3.925]
        let v = [1.0, 2.0, 3.0, 4.0];
        assert!((percentile_sorted(&v, 0.025) - 1.075).abs() < 1e-12);
        assert!((percentile_sorted(&v, 0.5) - 2.5).abs() < 1e-12);
        assert!((percentile_sorted(&v, 0.975) - 3.925).abs() < 1e-12);
        assert!(percentile_sorted(&[], 0.5).is_nan());
    }

    #[test]
    fn median_of_unsorted_values() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn groups_keep_patients_together() {
        let g = Groups::by_subject(&[7, 3, 7, 9, 3]);
        assert_eq!(g.groups, vec![vec![0, 2], vec![1, 4], vec![3]]);
        let mut rng = SplitMix64::new(1);
        for _ in 0..50 {
            let r = g.resample(&mut rng);
            // Each drawn patient brings all of its samples: 0 and 2 appear equally often, so do 1 and 4.
            let c = |x: usize| r.iter().filter(|&&i| i == x).count();
            assert_eq!(c(0), c(2));
            assert_eq!(c(1), c(4));
        }
    }

    #[test]
    fn resamples_are_seeded() {
        let g = Groups::by_subject(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(g.resamples(5, 9), g.resamples(5, 9));
        assert_ne!(g.resamples(5, 9), g.resamples(5, 10));
    }

    /// Known case: the mean of n i.i.d. Bernoulli(1/2) values, one sample per patient. The
    /// bootstrap distribution of the mean of 0/1 data with k ones is Binomial(n, k/n) / n, so the
    /// 95% interval is close to estimate -+ 1.96 * sqrt(p (1 - p) / n).
    #[test]
    fn interval_of_a_mean_matches_the_normal_approximation() {
        let n = 400;
        let x: Vec<f64> = (0..n).map(|i| (i % 2) as f64).collect();
        let subjects: Vec<u64> = (0..n as u64).collect();
        let rs = Groups::by_subject(&subjects).resamples(2000, 42);
        let mean = |idx: &[usize]| Some(idx.iter().map(|&i| x[i]).sum::<f64>() / idx.len() as f64);
        let iv = interval(n, &rs, mean).unwrap();
        let half = 1.96 * (0.25f64 / n as f64).sqrt(); // 0.049
        assert_eq!(iv.estimate, 0.5);
        assert!((iv.lo - (0.5 - half)).abs() < 0.008, "{iv:?}");
        assert!((iv.hi - (0.5 + half)).abs() < 0.008, "{iv:?}");
        assert_eq!(iv.n_defined, 2000);
    }

    #[test]
    fn paired_difference_of_identical_models_is_zero_and_shifted_model_is_above() {
        let n = 100;
        let subjects: Vec<u64> = (0..n as u64).map(|i| i / 2).collect();
        let rs = Groups::by_subject(&subjects).resamples(200, 1);
        let a: Vec<f64> = (0..n).map(|i| ((i * 37) % 11) as f64).collect();
        let stat = |v: &[f64], idx: &[usize]| Some(idx.iter().map(|&i| v[i]).sum::<f64>() / idx.len() as f64);
        let d = paired_difference(n, &rs, |i| stat(&a, i), |i| stat(&a, i)).unwrap();
        assert_eq!((d.estimate, d.lo, d.hi), (0.0, 0.0, 0.0));
        let b: Vec<f64> = a.iter().map(|v| v + 0.25).collect();
        let d = paired_difference(n, &rs, |i| stat(&b, i), |i| stat(&a, i)).unwrap();
        assert!(d.above_zero() && (d.lo - 0.25).abs() < 1e-12 && (d.hi - 0.25).abs() < 1e-12);
    }

    #[test]
    fn undefined_resamples_are_left_out() {
        let rs = Groups::by_subject(&[1, 2, 3]).resamples(100, 3);
        // Defined only when sample 0 is drawn.
        let iv = interval(3, &rs, |idx| idx.contains(&0).then_some(1.0)).unwrap();
        assert!(iv.n_defined > 50 && iv.n_defined < 100, "{iv:?}");
        assert!(interval(3, &rs, |_| None).is_none());
    }
}
