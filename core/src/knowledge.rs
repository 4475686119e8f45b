//! Knowledge clauses: the "medical knowledge-enhanced" part of the CKD-EHR input.
//!
//! For every phenotype `d` present at visit `i`, one clause names up to `top_k` drugs that, in
//! the training split, went with `d` resolving by visit `i+1`:
//!
//! ```text
//! The medications that maybe have therapeutic effect on {Phenotype} are {m1, ..., m5}
//! ```
//!
//! ## The statistic
//!
//! Over training-split pairs `(visit i, phenotypes of visit i+1)` where `d` is present at visit
//! `i` (from its diagnosis codes), for each drug `m` given at visit `i`:
//!
//! ```text
//! effect(d, m) = P(d absent at i+1 | d at i, m given) - P(d absent at i+1 | d at i, m not given)
//!              = r_with / n_with - r_without / n_without
//! ```
//!
//! where `n_with` / `n_without` count the pairs with / without `m`, and `r_*` those of them where
//! `d` is absent at visit `i+1`. A drug is tested when `n_with >= min_support` and
//! `n_without >= min_support`: a one-sided two-proportion z-test (pooled variance) of
//! `effect > 0`. Across every tested (phenotype, drug) pair the Benjamini-Hochberg procedure
//! keeps the false discovery rate at `fdr` ([`DEFAULT_FDR`], or the argument of [`KnowledgeTable::fit_with_fdr`]); a drug qualifies when its test is among those
//! rejected and `effect > min_effect`. The `top_k` largest effects are kept (ties broken by
//! drug name). On a small training split that often leaves no clause at all, which is the
//! honest answer (`fdr = 1` turns the test off: every positive effect qualifies, as before
//! version 2 of the table). This is a crude risk difference, not a causal estimate: sicker
//! patients get more drugs. It is computed from the training split only; clauses for any sample
//! depend on that sample's visit-`i` facts only, never on its labels.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::labels::{LabelSet, NUM_LABELS};
pub use crate::visit::Clause;
use crate::visit::Visit;

/// Settings of the statistic (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeConfig {
    /// Drugs kept per phenotype (the authors: 5).
    pub top_k: usize,
    /// Minimum pairs with and without the drug.
    pub min_support: u32,
    /// Minimum effect (risk difference) for a drug to qualify.
    pub min_effect: f64,
}

/// False discovery rate of the Benjamini-Hochberg control that [`KnowledgeTable::fit`] uses by
/// default. It is a fit argument, not part of [`KnowledgeConfig`]: the config travels inside
/// bundle manifests and sample files (postcard, not self-describing), whose layout is unchanged.
pub const DEFAULT_FDR: f64 = 0.05;

impl Default for KnowledgeConfig {
    fn default() -> Self {
        KnowledgeConfig { top_k: 5, min_support: 5, min_effect: 0.0 }
    }
}

/// One-sided p-value of `effect > 0` for `r_with / n_with` vs `r_without / n_without`: the
/// pooled two-proportion z statistic against the standard normal. 1 when the pooled variance
/// is 0 (every pair resolved, or none).
pub fn one_sided_p(r_with: u32, n_with: u32, r_without: u32, n_without: u32) -> f64 {
    let (nw, nwo) = (n_with as f64, n_without as f64);
    if nw == 0.0 || nwo == 0.0 {
        return 1.0;
    }
    let pooled = (r_with + r_without) as f64 / (nw + nwo);
    let var = pooled * (1.0 - pooled) * (1.0 / nw + 1.0 / nwo);
    if var <= 0.0 {
        return 1.0;
    }
    let z = (r_with as f64 / nw - r_without as f64 / nwo) / libm::sqrt(var);
    0.5 * libm::erfc(z / core::f64::consts::SQRT_2)
}

/// Benjamini-Hochberg: which of `p` are rejected at false discovery rate `q` (the largest `k`
/// with `p_(k) <= k q / m`, and every p-value at or below it).
pub fn benjamini_hochberg(p: &[f64], q: f64) -> Vec<bool> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut cut = None;
    for (rank, &i) in order.iter().enumerate() {
        if p[i] <= (rank + 1) as f64 * q / m as f64 {
            cut = Some(p[i]);
        }
    }
    match cut {
        Some(c) => p.iter().map(|&x| x <= c).collect(),
        None => alloc::vec![false; m],
    }
}

/// A drug's statistic for one phenotype.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrugEffect {
    /// Drug name.
    pub drug: String,
    /// Risk difference (see the module docs).
    pub effect: f64,
    /// Pairs with `d` at visit `i` and the drug given.
    pub n_with: u32,
    /// Pairs with `d` at visit `i` and the drug not given.
    pub n_without: u32,
}

/// The fitted knowledge table: up to `top_k` drugs per phenotype.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeTable {
    /// Settings used.
    pub config: KnowledgeConfig,
    /// Number of training pairs seen.
    pub n_pairs: u32,
    /// Per phenotype (label order): qualifying drugs, best first.
    pub drugs: Vec<Vec<DrugEffect>>,
}

impl KnowledgeTable {
    /// An empty table (clauses off).
    pub fn empty(config: KnowledgeConfig) -> Self {
        KnowledgeTable { config, n_pairs: 0, drugs: (0..NUM_LABELS).map(|_| Vec::new()).collect() }
    }

    /// Fits the table on training pairs `(visit i, phenotypes of visit i+1)`. Callers pass the
    /// training split only.
    pub fn fit<'a, I>(pairs: I, config: KnowledgeConfig) -> Self
    where
        I: IntoIterator<Item = (&'a Visit, LabelSet)>,
    {
        Self::fit_with_fdr(pairs, config, DEFAULT_FDR)
    }

    /// [`KnowledgeTable::fit`] at false discovery rate `fdr` (`1` turns the test off: every
    /// positive effect with the support qualifies, the rule before the test existed).
    pub fn fit_with_fdr<'a, I>(pairs: I, config: KnowledgeConfig, fdr: f64) -> Self
    where
        I: IntoIterator<Item = (&'a Visit, LabelSet)>,
    {
        // Per phenotype: pairs with d at i, of them resolved; per drug: (with, resolved with).
        let mut n_d = [0u32; NUM_LABELS];
        let mut res_d = [0u32; NUM_LABELS];
        let mut per_drug: Vec<BTreeMap<&'a str, (u32, u32)>> = (0..NUM_LABELS).map(|_| BTreeMap::new()).collect();
        let mut n_pairs = 0u32;
        let mut meds: Vec<&'a str> = Vec::new();
        for (visit, next) in pairs {
            n_pairs += 1;
            meds.clear();
            for m in &visit.medications {
                if !meds.contains(&m.as_str()) {
                    meds.push(m.as_str());
                }
            }
            for d in visit.phenotypes().iter() {
                let di = d as usize;
                let resolved = !next.contains(d);
                n_d[di] += 1;
                res_d[di] += resolved as u32;
                for m in &meds {
                    let e = per_drug[di].entry(m).or_insert((0, 0));
                    e.0 += 1;
                    e.1 += resolved as u32;
                }
            }
        }
        // Every tested (phenotype, drug) pair with its statistic, then one BH pass over all.
        let mut tested: Vec<(usize, f64, DrugEffect)> = Vec::new();
        for (di, drugs) in per_drug.iter().enumerate() {
            for (m, &(nw, rw)) in drugs {
                let nwo = n_d[di] - nw;
                let rwo = res_d[di] - rw;
                if nw < config.min_support || nwo < config.min_support {
                    continue;
                }
                let effect = rw as f64 / nw as f64 - rwo as f64 / nwo as f64;
                let p = one_sided_p(rw, nw, rwo, nwo);
                tested.push((di, p, DrugEffect { drug: String::from(*m), effect, n_with: nw, n_without: nwo }));
            }
        }
        let ps: Vec<f64> = tested.iter().map(|(_, p, _)| *p).collect();
        let keep = if fdr >= 1.0 { alloc::vec![true; ps.len()] } else { benjamini_hochberg(&ps, fdr) };
        let mut drugs: Vec<Vec<DrugEffect>> = (0..NUM_LABELS).map(|_| Vec::new()).collect();
        for ((di, _, e), k) in tested.into_iter().zip(keep) {
            if k && e.effect > config.min_effect {
                drugs[di].push(e);
            }
        }
        for v in &mut drugs {
            v.sort_by(|a, b| b.effect.total_cmp(&a.effect).then_with(|| a.drug.cmp(&b.drug)));
            v.truncate(config.top_k);
        }
        KnowledgeTable { config, n_pairs, drugs }
    }

    /// Clauses for a visit with phenotypes `present`: one per present phenotype (label order)
    /// that has at least one qualifying drug.
    pub fn clauses(&self, present: LabelSet) -> Vec<Clause> {
        present
            .iter()
            .filter_map(|d| {
                let ds = self.drugs.get(d as usize)?;
                (!ds.is_empty()).then(|| Clause { phenotype: d, drugs: ds.iter().map(|e| e.drug.clone()).collect() })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::visit::Coded;
    use alloc::vec;

    fn v(codes: &[&str], meds: &[&str]) -> Visit {
        Visit {
            diagnoses: codes.iter().map(|c| Coded { code: (*c).into(), title: String::new() }).collect(),
            medications: meds.iter().map(|m| (*m).into()).collect(),
            procedures: vec![],
        }
    }

    #[test]
    fn hand_computed_effect() {
        // CHF (label 8, code 4280) at visit i in 6 pairs. Furosemide given in 3: resolved in 2.
        // Not given in 3: resolved in 1. effect = 2/3 - 1/3 = 1/3.
        // Aspirin given in all 6: n_without = 0 < min_support -> excluded.
        let chf: LabelSet = LabelSet::from_labels([8]);
        let none = LabelSet::EMPTY;
        let pairs = [
            (v(&["4280"], &["Furosemide", "Aspirin"]), none),
            (v(&["4280"], &["Furosemide", "Aspirin"]), none),
            (v(&["4280"], &["Furosemide", "Aspirin"]), chf),
            (v(&["4280"], &["Aspirin"]), none),
            (v(&["4280"], &["Aspirin"]), chf),
            (v(&["4280"], &["Aspirin"]), chf),
        ];
        let cfg = KnowledgeConfig { top_k: 5, min_support: 3, min_effect: 0.0 };
        let t = KnowledgeTable::fit_with_fdr(pairs.iter().map(|(a, b)| (a, *b)), cfg, 1.0);
        assert_eq!(t.n_pairs, 6);
        assert_eq!(t.drugs[8].len(), 1);
        assert_eq!(t.drugs[8][0].drug, "Furosemide");
        assert!((t.drugs[8][0].effect - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!((t.drugs[8][0].n_with, t.drugs[8][0].n_without), (3, 3));
        let c = t.clauses(LabelSet::from_labels([8, 3]));
        assert_eq!(c, vec![Clause { phenotype: 8, drugs: vec!["Furosemide".into()] }]);
        let mut s = String::new();
        c[0].render_into(&mut s);
        assert_eq!(s, "The medications that maybe have therapeutic effect on Congestive heart failure are Furosemide");
    }

    #[test]
    fn top_k_and_ties() {
        let d = LabelSet::from_labels([8]);
        let mut pairs = Vec::new();
        for i in 0..20 {
            let meds: &[&str] = if i < 10 { &["B", "A", "C"] } else { &[] };
            pairs.push((v(&["4280"], meds), if i < 10 { LabelSet::EMPTY } else { d }));
        }
        let cfg = KnowledgeConfig { top_k: 2, min_support: 1, min_effect: 0.0 };
        let t = KnowledgeTable::fit_with_fdr(pairs.iter().map(|(a, b)| (a, *b)), cfg, 1.0);
        let names: Vec<_> = t.drugs[8].iter().map(|e| e.drug.as_str()).collect();
        assert_eq!(names, ["A", "B"]);
    }

    /// Hand-computed: 30/40 resolved with the drug vs 10/40 without: pooled 0.5, var
    /// 0.25 * (2/40) = 0.0125, z = 0.5 / 0.1118 = 4.4721, p = 0.5 erfc(z / sqrt 2) = 3.87e-6
    /// (scipy.stats.norm.sf(4.47214) = 3.872e-06).
    #[test]
    fn z_test_hand_computed() {
        let p = one_sided_p(30, 40, 10, 40);
        assert!((p - 3.872e-6).abs() < 1e-8, "{p}");
        assert!((one_sided_p(5, 10, 5, 10) - 0.5).abs() < 1e-12);
        assert_eq!(one_sided_p(10, 10, 10, 10), 1.0);
        assert!(one_sided_p(2, 10, 8, 10) > 0.99);
    }

    /// BH on p = [0.01, 0.04, 0.03, 0.2] at q = 0.05 (m = 4): sorted 0.01 <= 0.0125, 0.03 > 0.025,
    /// 0.04 > 0.0375, 0.2 > 0.05: only 0.01 is rejected. At q = 0.1 the bounds are 0.025, 0.05,
    /// 0.075, 0.1: 0.04 <= 0.075 at rank 3, so 0.01, 0.03, 0.04 are.
    #[test]
    fn benjamini_hochberg_hand_computed() {
        let p = [0.01, 0.04, 0.03, 0.2];
        assert_eq!(benjamini_hochberg(&p, 0.05), vec![true, false, false, false]);
        assert_eq!(benjamini_hochberg(&p, 0.1), vec![true, true, true, false]);
        assert_eq!(benjamini_hochberg(&[], 0.05), Vec::<bool>::new());
    }

    /// With the test on, a drug with a real effect on many pairs qualifies and a noise drug with
    /// a positive but unsupported effect does not; with fdr = 1 both do.
    #[test]
    fn only_supported_effects_qualify() {
        let d = LabelSet::from_labels([8]);
        let mut pairs = Vec::new();
        for i in 0..200 {
            let real = i % 2 == 0; // resolves 80% with, 20% without
            let noise = i % 3 == 0;
            let mut meds: Vec<&str> = Vec::new();
            if real {
                meds.push("Real");
            }
            if noise {
                meds.push("Noise");
            }
            let resolved = if real { i % 10 < 8 } else { i % 10 < 2 };
            pairs.push((v(&["4280"], &meds), if resolved { LabelSet::EMPTY } else { d }));
        }
        let fit = |fdr| {
            let cfg = KnowledgeConfig { top_k: 5, min_support: 5, min_effect: 0.0 };
            let t = KnowledgeTable::fit_with_fdr(pairs.iter().map(|(a, b)| (a, *b)), cfg, fdr);
            t.drugs[8].iter().map(|e| e.drug.clone()).collect::<Vec<_>>()
        };
        assert_eq!(fit(0.05), vec!["Real".to_string()]);
        let all = fit(1.0);
        assert!(all.contains(&"Real".to_string()));
    }
}
