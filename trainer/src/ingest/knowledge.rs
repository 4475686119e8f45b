//! Knowledge clauses of an ingest: the table is fitted on the training samples only, and each
//! sample gets the clauses of its own visit-`i` facts.

use ckd_core::knowledge::{KnowledgeConfig, KnowledgeTable};
use ckd_core::visit::{Sample, Split};

/// Fits the knowledge table on the training samples only and attaches each sample's clauses,
/// which depend on its own visit-`i` facts only.
pub fn attach_knowledge(samples: &mut [Sample], cfg: KnowledgeConfig) -> KnowledgeTable {
    attach_knowledge_fdr(samples, cfg, ckd_core::knowledge::DEFAULT_FDR)
}

/// [`attach_knowledge`] at false discovery rate `fdr` (see `KnowledgeTable::fit_with_fdr`).
pub fn attach_knowledge_fdr(samples: &mut [Sample], cfg: KnowledgeConfig, fdr: f64) -> KnowledgeTable {
    let table = KnowledgeTable::fit_with_fdr(
        samples.iter().filter(|s| s.split == Split::Train).map(|s| (&s.visit, s.labels)),
        cfg,
        fdr,
    );
    for s in samples.iter_mut() {
        s.knowledge = table.clauses(s.visit.phenotypes());
    }
    table
}
