//! How true the knowledge clauses are, on a synthetic cohort whose generator knows the truth:
//! precision and recall of a fitted [`KnowledgeTable`] against the generator's therapeutic drug
//! effects ([`crate::synth::therapeutic_effects`]).
//!
//! A clause pair `(phenotype d, drug m)` is a true positive when the generator gives `m` a
//! negative next-visit effect on `d`. Recall is reported twice: against every true pair, and
//! against what a table of `top_k` drugs per phenotype can hold (`min(top_k, true drugs of d)`
//! per phenotype), since a phenotype with seven true drugs can show at most five.

use ckd_core::knowledge::KnowledgeTable;
use ckd_core::NUM_LABELS;
use serde::{Deserialize, Serialize};

/// Precision and recall of one table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeScore {
    /// `(phenotype, drug)` pairs the table names.
    pub emitted: usize,
    /// Of them, true therapeutic effects.
    pub true_positives: usize,
    /// True pairs in the generator.
    pub truth: usize,
    /// True pairs a table of `top_k` per phenotype can hold.
    pub reachable: usize,
    /// `true_positives / emitted` (`None` when nothing is emitted).
    pub precision: Option<f64>,
    /// `true_positives / truth`.
    pub recall: f64,
    /// `true_positives / reachable`.
    pub recall_reachable: f64,
}

/// Scores `table` against `truth` (`(phenotype, drug)` pairs).
pub fn score(table: &KnowledgeTable, truth: &[(usize, &str)]) -> KnowledgeScore {
    let is_true = |d: usize, m: &str| truth.iter().any(|&(td, tm)| td == d && tm == m);
    let mut emitted = 0;
    let mut tp = 0;
    for (d, drugs) in table.drugs.iter().enumerate() {
        for e in drugs {
            emitted += 1;
            tp += usize::from(is_true(d, &e.drug));
        }
    }
    let top_k = table.config.top_k;
    let reachable: usize = (0..NUM_LABELS).map(|d| truth.iter().filter(|&&(td, _)| td == d).count().min(top_k)).sum();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    KnowledgeScore {
        emitted,
        true_positives: tp,
        truth: truth.len(),
        reachable,
        precision: (emitted > 0).then(|| ratio(tp, emitted)),
        recall: ratio(tp, truth.len()),
        recall_reachable: ratio(tp, reachable),
    }
}

#[cfg(test)]
mod tests {
    use ckd_core::knowledge::{DrugEffect, KnowledgeConfig};

    use super::*;

    fn effect(drug: &str) -> DrugEffect {
        DrugEffect { drug: drug.into(), effect: 0.1, n_with: 10, n_without: 10 }
    }

    #[test]
    fn hand_counted_table() {
        let mut t = KnowledgeTable::empty(KnowledgeConfig { top_k: 1, ..Default::default() });
        t.drugs[0] = vec![effect("A"), effect("B")];
        t.drugs[3] = vec![effect("C")];
        // Truth: (0, A), (0, Z), (3, Y), (7, Q).
        let truth = [(0, "A"), (0, "Z"), (3, "Y"), (7, "Q")];
        let s = score(&t, &truth);
        assert_eq!((s.emitted, s.true_positives, s.truth), (3, 1, 4));
        // top_k = 1: one reachable per phenotype with a true drug (0, 3, 7).
        assert_eq!(s.reachable, 3);
        assert_eq!(s.precision, Some(1.0 / 3.0));
        assert_eq!(s.recall, 0.25);
        assert!((s.recall_reachable - 1.0 / 3.0).abs() < 1e-12);
        let none = score(&KnowledgeTable::empty(KnowledgeConfig::default()), &truth);
        assert_eq!((none.precision, none.recall), (None, 0.0));
    }

    #[test]
    fn the_generator_has_true_effects_for_many_phenotypes() {
        let t = crate::synth::therapeutic_effects();
        let phenotypes: std::collections::BTreeSet<usize> = t.iter().map(|p| p.0).collect();
        assert!(t.len() >= 25 && phenotypes.len() >= 10, "{t:?}");
    }
}
