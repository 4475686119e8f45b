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
//! `d` is absent at visit `i+1`. A drug qualifies when `n_with >= min_support`,
//! `n_without >= min_support` and `effect > min_effect`; the `top_k` largest effects are kept
//! (ties broken by drug name). This is a crude risk difference, not a causal estimate: sicker
//! patients get more drugs. It is computed from the training split only; clauses for any sample
//! depend on that sample's visit-`i` facts only, never on its labels.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::labels::{Label, LabelSet, NUM_LABELS, PHENOTYPES};
use crate::visit::Visit;

/// One knowledge clause: a phenotype and the drugs that may treat it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clause {
    /// The phenotype present at visit `i`.
    pub phenotype: Label,
    /// Drugs in decreasing order of effect.
    pub drugs: Vec<String>,
}

impl Clause {
    /// Appends `The medications that maybe have therapeutic effect on {short name} are {drugs}`.
    pub fn render_into(&self, out: &mut String) {
        out.push_str("The medications that maybe have therapeutic effect on ");
        out.push_str(PHENOTYPES.get(self.phenotype as usize).map_or("?", |p| p.short));
        out.push_str(" are ");
        for (i, d) in self.drugs.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(d);
        }
    }
}

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

impl Default for KnowledgeConfig {
    fn default() -> Self {
        KnowledgeConfig { top_k: 5, min_support: 5, min_effect: 0.0 }
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
        let drugs = (0..NUM_LABELS)
            .map(|di| {
                let mut v: Vec<DrugEffect> = per_drug[di]
                    .iter()
                    .filter_map(|(m, &(nw, rw))| {
                        let nwo = n_d[di] - nw;
                        let rwo = res_d[di] - rw;
                        if nw < config.min_support || nwo < config.min_support {
                            return None;
                        }
                        let effect = rw as f64 / nw as f64 - rwo as f64 / nwo as f64;
                        (effect > config.min_effect).then(|| DrugEffect {
                            drug: String::from(*m),
                            effect,
                            n_with: nw,
                            n_without: nwo,
                        })
                    })
                    .collect();
                v.sort_by(|a, b| b.effect.total_cmp(&a.effect).then_with(|| a.drug.cmp(&b.drug)));
                v.truncate(config.top_k);
                v
            })
            .collect();
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
        let t = KnowledgeTable::fit(pairs.iter().map(|(a, b)| (a, *b)), cfg);
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
        let t = KnowledgeTable::fit(pairs.iter().map(|(a, b)| (a, *b)), cfg);
        let names: Vec<_> = t.drugs[8].iter().map(|e| e.drug.as_str()).collect();
        assert_eq!(names, ["A", "B"]);
    }
}
