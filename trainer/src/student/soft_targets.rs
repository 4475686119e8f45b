//! The teacher's outputs a student learns from: [`SoftTargets`], per training sample id, its 25
//! probabilities (label order) for the soft-label loss and, when the teacher produced them, its
//! attention evidence for the attention losses. Read from an evidence file or from JSON lines.

use std::collections::HashMap;
use std::path::Path;

use ckd_core::evidence::{self, EvidenceFile};
use ckd_core::NUM_LABELS;
use serde::Deserialize;

use super::error::{Result, StudentError};

/// Teacher outputs for the training samples: probabilities, and attention evidence when the
/// teacher produced it.
#[derive(Debug, Clone, Default)]
pub struct SoftTargets {
    /// Probabilities per sample id (25, label order).
    pub probs: HashMap<String, Vec<f32>>,
    /// Evidence per sample id (for attention distillation).
    pub evidence: HashMap<String, evidence::SampleEvidence>,
    /// Who produced them (for provenance).
    pub identity: Option<evidence::TeacherIdentity>,
}

impl SoftTargets {
    /// From an evidence file (`ckd teacher label` output).
    pub fn from_evidence(file: EvidenceFile) -> Self {
        let mut t = SoftTargets { identity: Some(file.teacher.clone()), ..Default::default() };
        for r in file.records {
            t.probs.insert(r.id.clone(), r.probs.clone());
            t.evidence.insert(r.id.clone(), r);
        }
        t
    }

    /// From JSON lines `{"id": "...", "p": [25 probabilities]}` (e.g. the synthetic cohort's
    /// `oracle.jsonl`). The identity recorded is "probabilities from PATH".
    pub fn from_jsonl(text: &str, path: &Path) -> Result<Self> {
        #[derive(Deserialize)]
        struct Row {
            id: String,
            p: Vec<f32>,
        }
        let mut t = SoftTargets::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let r: Row = serde_json::from_str(line)
                .map_err(|e| StudentError::Json { path: path.to_path_buf(), msg: format!("line {}: {e}", i + 1) })?;
            if r.p.len() != NUM_LABELS || r.p.iter().any(|p| !(0.0..=1.0).contains(p)) {
                return Err(StudentError::Json {
                    path: path.to_path_buf(),
                    msg: format!("line {}: `p` must hold {NUM_LABELS} probabilities in [0, 1]", i + 1),
                });
            }
            t.probs.insert(r.id, r.p);
        }
        t.identity = Some(evidence::TeacherIdentity {
            model: format!("probabilities from {}", path.display()),
            config_hash: String::new(),
            adapter_hash: None,
            temperature: 1.0,
            last_k_layers: 0,
        });
        Ok(t)
    }
}
