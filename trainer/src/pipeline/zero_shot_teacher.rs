//! The zero-shot teacher of `ckd bench`: a frozen LLM's own judgement of each visit's
//! phenotypes (`ckd teacher zero-shot`), read from its probability files. No label reaches it at
//! any fraction, so the same probabilities serve every fraction and seed; only the students'
//! hard-label term sees the fraction's labelled patients.
//!
//! Files: JSON lines `{"id", "p"}` (25 probabilities in label order), one per split, holding
//! exactly that split's samples; anything else is an error naming the file and the sample.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use ckd_core::visit::Sample;
use ckd_core::NUM_LABELS;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::fraction_teacher::{FractionTeacher, TeacherSource, FORMAT, VERSION};
use super::upstream::Upstream;
use super::{msg_err, PipelineError};
use crate::student::SoftTargets;
use crate::teacher::semi::SemiProtocol;

type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Stage name in errors.
const STAGE: &str = "bench-zero-shot";

/// The probability files of the three splits (`[bench] zero_shot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZeroShotFiles {
    /// Training split (the students' soft labels).
    pub train: PathBuf,
    /// Validation split (reported; never used to train).
    pub val: PathBuf,
    /// Test split (the teacher's row).
    pub test: PathBuf,
    /// How the scores were made, for the report (e.g. `yes/no, visit-centred`).
    #[serde(default = "default_scoring")]
    pub scoring: String,
}

fn default_scoring() -> String {
    "zero-shot".into()
}

/// The probabilities of `files`, checked against the splits. Returns `[train, val, test]`
/// (`[N * 25]` each, in the splits' order) and a SHA-256 over the three files' bytes.
pub fn read_splits(files: &ZeroShotFiles, up: &Upstream) -> Result<([Vec<f32>; 3], String)> {
    let mut h = Sha256::new();
    let mut out: Vec<Vec<f32>> = Vec::with_capacity(3);
    for (name, path, set) in
        [("train", &files.train, &up.train), ("val", &files.val, &up.val), ("test", &files.test, &up.test)]
    {
        let bytes = crate::io::read_regular(path).map_err(|e| msg_err(STAGE, format!("{}: {e}", path.display())))?;
        h.update(&bytes);
        out.push(split_probs(&bytes, path, name, set)?);
    }
    let splits: [Vec<f32>; 3] = out.try_into().map_err(|_| msg_err(STAGE, "three splits expected".into()))?;
    Ok((splits, ckd_core::format::hex(&h.finalize())))
}

/// `[N * 25]` in `set`'s order from the JSON lines in `bytes` (the file `path` of split `name`).
fn split_probs(bytes: &[u8], path: &Path, name: &str, set: &[Sample]) -> Result<Vec<f32>> {
    let text = std::str::from_utf8(bytes).map_err(|e| msg_err(STAGE, format!("{}: not UTF-8: {e}", path.display())))?;
    let t = SoftTargets::from_jsonl(text, path).map_err(|e| msg_err(STAGE, e.to_string()))?;
    let probs: &HashMap<String, Vec<f32>> = &t.probs;
    let mut out = Vec::with_capacity(set.len() * NUM_LABELS);
    for s in set {
        let p = probs.get(&s.id).ok_or_else(|| {
            msg_err(
                STAGE,
                format!(
                    "{}: no probabilities for {name} sample {} (score the {name} split with `ckd teacher zero-shot --split {name}`)",
                    path.display(),
                    s.id
                ),
            )
        })?;
        out.extend_from_slice(p);
    }
    let ours: HashSet<&str> = set.iter().map(|s| s.id.as_str()).collect();
    if let Some(extra) = probs.keys().find(|id| !ours.contains(id.as_str())) {
        return Err(msg_err(
            STAGE,
            format!(
                "{}: sample {extra} is not in the {name} split (scores of another cohort or split?)",
                path.display()
            ),
        ));
    }
    Ok(out)
}

/// The zero-shot teacher at `fraction` / `seed`: the same probabilities at every cell. The
/// protocol records the fraction's labelled patients (the students' hard term), none of whose
/// labels the teacher reads.
pub fn zero_shot_teacher(
    files: &ZeroShotFiles,
    splits: &[Vec<f32>; 3],
    up: &Upstream,
    labelled: &[Option<ckd_core::LabelSet>],
    fraction: f64,
    seed: u64,
) -> FractionTeacher {
    let rows = labelled.iter().filter(|l| l.is_some()).count();
    let patients: HashSet<u64> =
        up.train.iter().zip(labelled).filter(|(_, l)| l.is_some()).map(|(s, _)| s.subject).collect();
    FractionTeacher {
        format: FORMAT.into(),
        version: VERSION,
        source: TeacherSource::ZeroShot,
        fraction,
        seed,
        representation: format!("{}, no labels", files.scoring),
        candidates: Vec::new(),
        protocol: SemiProtocol {
            labelled_rows: rows,
            labelled_patients: patients.len(),
            unlabelled_rows: labelled.len() - rows,
            folds: 0,
            head_epochs: 0,
        },
        ids: up.train.iter().map(|s| s.id.clone()).collect(),
        train: splits[0].clone(),
        val: splits[1].clone(),
        test: splits[2].clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str) -> Sample {
        Sample {
            id: id.into(),
            subject: 1,
            split: ckd_core::visit::Split::Train,
            visit: Default::default(),
            knowledge: vec![],
            labels: Default::default(),
            raw: None,
        }
    }

    fn line(id: &str, p: f32) -> String {
        format!("{}\n", serde_json::json!({"id": id, "p": vec![p; NUM_LABELS]}))
    }

    #[test]
    fn probabilities_follow_the_split_order_whatever_the_file_order() {
        let set = [sample("a"), sample("b")];
        let text = line("b", 0.25) + &line("a", 0.75);
        let p = split_probs(text.as_bytes(), Path::new("zs.jsonl"), "train", &set).unwrap();
        assert_eq!(p.len(), 2 * NUM_LABELS);
        assert_eq!((p[0], p[NUM_LABELS]), (0.75, 0.25));
    }

    #[test]
    fn a_missing_or_foreign_sample_is_an_error_naming_file_and_sample() {
        let set = [sample("a"), sample("b")];
        let missing = split_probs(line("a", 0.5).as_bytes(), Path::new("zs-val.jsonl"), "val", &set).unwrap_err();
        let m = missing.to_string();
        assert!(m.contains("zs-val.jsonl") && m.contains("val sample b") && m.contains("--split val"), "{m}");
        let text = line("a", 0.5) + &line("b", 0.5) + &line("z", 0.5);
        let foreign = split_probs(text.as_bytes(), Path::new("zs.jsonl"), "test", &set).unwrap_err().to_string();
        assert!(foreign.contains("sample z is not in the test split"), "{foreign}");
        let bad = split_probs(b"{\"id\": \"a\", \"p\": [2.0]}\n", Path::new("zs.jsonl"), "test", &set).unwrap_err();
        assert!(bad.to_string().contains("line 1"), "{bad}");
    }
}
