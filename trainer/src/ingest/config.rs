//! The settings of an ingest run ([`IngestConfig`]): leniency, the patient-level split, the
//! knowledge clauses and what to do with duplicate JSONL records.

use ckd_core::knowledge::KnowledgeConfig;
use ckd_core::split::SplitConfig;
use serde::Serialize;

/// Settings of an ingest run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct IngestConfig {
    /// Skip and count malformed rows instead of failing.
    pub lenient: bool,
    /// Patient-level split.
    pub split: SplitConfig,
    /// Knowledge clauses (`None` turns them off, for ablations).
    pub knowledge: Option<KnowledgeConfig>,
    /// Refuse exact duplicate JSONL records instead of keeping them (with a warning) in the
    /// split of their first occurrence.
    pub refuse_duplicates: bool,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            lenient: false,
            split: SplitConfig::default(),
            knowledge: Some(KnowledgeConfig::default()),
            refuse_duplicates: false,
        }
    }
}
