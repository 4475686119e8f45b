//! The model bundle manifest: what the edge runtime needs to trust a bundle directory.
//!
//! A bundle is a directory holding `model.onnx` (with its tensors in `model.onnx.data`),
//! `tokenizer.json` and `manifest.bin` (this
//! manifest in a versioned envelope, see [`crate::format`]). The manifest names every file with
//! its SHA-256, the label space, per-label thresholds, the tokenizer settings both sides must
//! share, and the provenance of the model. [`Manifest::verify_files`] checks the files against
//! it; callers read the bytes (this crate does no I/O).

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::format::{self, FormatError};
use crate::knowledge::KnowledgeTable;
use crate::labels::{LabelSpace, NUM_LABELS, PHENOTYPES};

/// Magic of `manifest.bin`.
pub const MANIFEST_MAGIC: &[u8; 8] = b"CKDBUNDL";
/// Version of `manifest.bin`.
pub const MANIFEST_VERSION: u16 = 1;
/// File name of the manifest inside a bundle.
pub const MANIFEST_FILE: &str = "manifest.bin";
/// File name of the ONNX model inside a bundle.
pub const MODEL_FILE: &str = "model.onnx";
/// File name of the model's tensors inside a bundle: ONNX external data that `model.onnx`
/// refers to (bundles written before it existed hold the tensors inside `model.onnx`).
pub const MODEL_DATA_FILE: &str = "model.onnx.data";
/// File name of the tokenizer inside a bundle.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Numeric precision of the exported model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precision {
    /// f32 weights and activations.
    F32,
    /// int8 matmuls (s8 per-channel weights, u8 dynamic activations), f32 elsewhere.
    Int8,
}

/// Tokenizer settings the trainer and the runtime must share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerSettings {
    /// Maximum tokens per input, special tokens included; longer inputs keep the first
    /// `max_len - 1` tokens and the final `[SEP]`, and are flagged as truncated.
    pub max_len: u32,
    /// `[PAD]` id.
    pub pad_id: u32,
    /// `[CLS]` id.
    pub cls_id: u32,
    /// `[SEP]` id.
    pub sep_id: u32,
}

impl TokenizerSettings {
    /// Applies the truncation rule to token ids that start with `[CLS]` and end with `[SEP]`
    /// (and their byte offsets, same length): keeps the first `max_len - 1` and the final
    /// `[SEP]` (offsets `(0, 0)`). Returns whether anything was cut. The trainer and the edge
    /// runtime both call this, so their inputs cannot drift apart.
    pub fn truncate(&self, ids: &mut Vec<u32>, offsets: &mut Vec<(usize, usize)>) -> bool {
        let max = (self.max_len as usize).max(2);
        if ids.len() <= max {
            return false;
        }
        ids.truncate(max - 1);
        offsets.truncate(max - 1);
        ids.push(self.sep_id);
        offsets.push((0, 0));
        true
    }
}

/// A file of the bundle and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name relative to the bundle directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
}

/// Where the model came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// Hash of the training data (the sample file's `source_hash`).
    pub data_hash: String,
    /// Training configuration (JSON text).
    pub training_config: String,
    /// Teacher identity (JSON text), empty when trained without a teacher.
    pub teacher: String,
    /// Tool and version that wrote the bundle.
    pub created_by: String,
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Official label names in label order (checked against this build's label space).
    pub labels: Vec<String>,
    /// Per-label decision thresholds on probabilities.
    pub thresholds: Vec<f32>,
    /// Precision of `model.onnx`.
    pub precision: Precision,
    /// Tokenizer settings.
    pub tokenizer: TokenizerSettings,
    /// Knowledge table the training texts were rendered with, so that `predict(&Visit)` renders
    /// the same clauses (`None`: clauses off, or texts came rendered, e.g. from JSONL).
    pub knowledge: Option<KnowledgeTable>,
    /// Every other file of the bundle.
    pub files: Vec<FileEntry>,
    /// Provenance.
    pub provenance: Provenance,
}

/// What is wrong with a bundle.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BundleError {
    /// The manifest envelope is invalid (magic, version, label-space hash, checksum).
    #[error("{MANIFEST_FILE}: {0}")]
    Format(#[from] FormatError),
    /// The label names differ from this build's label space.
    #[error("{MANIFEST_FILE}: label {index} is {found:?}, this build expects {expected:?}")]
    Labels {
        /// Index of the first difference (or the count when lengths differ).
        index: usize,
        /// Name in the manifest.
        found: String,
        /// Name in this build.
        expected: String,
    },
    /// Thresholds are missing or out of [0, 1].
    #[error("{MANIFEST_FILE}: thresholds: {0}")]
    Thresholds(String),
    /// A file named by the manifest is missing.
    #[error("{0}: missing from the bundle")]
    MissingFile(String),
    /// A file's content does not match the manifest.
    #[error("{name}: sha256 mismatch (expected {expected}, found {found}): the bundle is corrupt or was edited")]
    Checksum {
        /// File name.
        name: String,
        /// Hex SHA-256 in the manifest.
        expected: String,
        /// Hex SHA-256 of the file.
        found: String,
    },
    /// A manifest entry names something other than a plain file name of the bundle directory.
    #[error("{MANIFEST_FILE}: file name {0:?} is not a plain name inside the bundle")]
    BadFileName(String),
    /// A required file has no manifest entry.
    #[error("{MANIFEST_FILE}: no entry for required file {0}")]
    Unlisted(&'static str),
}

impl FileEntry {
    /// Entry for `name` with content `bytes`.
    pub fn of(name: &str, bytes: &[u8]) -> Self {
        FileEntry { name: String::from(name), size: bytes.len() as u64, sha256: format::sha256(bytes) }
    }
}

impl Manifest {
    /// Official label names of this build, in order.
    pub fn current_labels() -> Vec<String> {
        PHENOTYPES.iter().map(|p| String::from(p.name)).collect()
    }

    /// Encodes into a versioned envelope.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        format::encode(MANIFEST_MAGIC, MANIFEST_VERSION, self)
    }

    /// Decodes an envelope and checks the label space and thresholds.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BundleError> {
        let m: Manifest = format::decode(bytes, MANIFEST_MAGIC, MANIFEST_VERSION)?;
        m.check()?;
        Ok(m)
    }

    /// Checks labels (names and order), thresholds and required entries.
    pub fn check(&self) -> Result<(), BundleError> {
        let names: Vec<&str> = LabelSpace.names().collect();
        for i in 0..names.len().max(self.labels.len()) {
            let found = self.labels.get(i).map(String::as_str).unwrap_or("<none>");
            let expected = names.get(i).copied().unwrap_or("<none>");
            if found != expected {
                return Err(BundleError::Labels { index: i, found: found.into(), expected: expected.into() });
            }
        }
        if self.thresholds.len() != NUM_LABELS {
            return Err(BundleError::Thresholds(alloc::format!(
                "{} values for {NUM_LABELS} labels",
                self.thresholds.len()
            )));
        }
        if let Some((i, t)) = self.thresholds.iter().enumerate().find(|(_, t)| !(0.0..=1.0).contains(*t)) {
            return Err(BundleError::Thresholds(alloc::format!("label {i}: {t} is not in [0, 1]")));
        }
        for f in &self.files {
            let n = f.name.as_str();
            if n.is_empty() || n == "." || n == ".." || n.contains(['/', '\\', '\0']) {
                return Err(BundleError::BadFileName(f.name.clone()));
            }
        }
        for req in [MODEL_FILE, TOKENIZER_FILE] {
            if !self.files.iter().any(|f| f.name == req) {
                return Err(BundleError::Unlisted(req));
            }
        }
        Ok(())
    }

    /// Checks one file's content against its entry.
    pub fn verify_file(&self, name: &str, bytes: &[u8]) -> Result<(), BundleError> {
        self.verify_digest(name, bytes.len() as u64, format::sha256(bytes))
    }

    /// Checks one file's size and SHA-256 (computed by the caller, e.g. streaming a large file)
    /// against its entry.
    pub fn verify_digest(&self, name: &str, size: u64, found: [u8; 32]) -> Result<(), BundleError> {
        let e = self.files.iter().find(|f| f.name == name).ok_or(BundleError::MissingFile(String::from(name)))?;
        if found != e.sha256 || size != e.size {
            return Err(BundleError::Checksum {
                name: String::from(name),
                expected: format::hex(&e.sha256),
                found: format::hex(&found),
            });
        }
        Ok(())
    }

    /// Checks every listed file; `read(name)` returns its bytes or `None` when missing.
    pub fn verify_files<F: FnMut(&str) -> Option<Vec<u8>>>(&self, mut read: F) -> Result<(), BundleError> {
        for f in &self.files {
            let bytes = read(&f.name).ok_or_else(|| BundleError::MissingFile(f.name.clone()))?;
            self.verify_file(&f.name, &bytes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn manifest() -> Manifest {
        Manifest {
            labels: Manifest::current_labels(),
            thresholds: vec![0.5; NUM_LABELS],
            precision: Precision::Int8,
            tokenizer: TokenizerSettings { max_len: 256, pad_id: 0, cls_id: 2, sep_id: 3 },
            knowledge: None,
            files: vec![FileEntry::of(MODEL_FILE, b"onnx"), FileEntry::of(TOKENIZER_FILE, b"{}")],
            provenance: Provenance::default(),
        }
    }

    #[test]
    fn roundtrip_and_file_checks() {
        let m = manifest();
        let b = m.to_bytes().unwrap();
        let back = Manifest::from_bytes(&b).unwrap();
        assert_eq!(back, m);
        let files = |n: &str| match n {
            MODEL_FILE => Some(b"onnx".to_vec()),
            TOKENIZER_FILE => Some(b"{}".to_vec()),
            _ => None,
        };
        back.verify_files(files).unwrap();
        let e = back.verify_file(MODEL_FILE, b"onnX").unwrap_err();
        assert!(matches!(e, BundleError::Checksum { .. }), "{e}");
        let e = back.verify_files(|n| if n == MODEL_FILE { None } else { files(n) }).unwrap_err();
        assert_eq!(e, BundleError::MissingFile(MODEL_FILE.into()));
        back.verify_digest(MODEL_FILE, 4, format::sha256(b"onnx")).unwrap();
        let e = back.verify_digest(MODEL_FILE, 5, format::sha256(b"onnx")).unwrap_err();
        assert!(matches!(e, BundleError::Checksum { .. }), "size counts too: {e}");
    }

    #[test]
    fn truncation_keeps_sep() {
        let t = TokenizerSettings { max_len: 4, pad_id: 0, cls_id: 2, sep_id: 3 };
        let (mut ids, mut off) = (vec![2, 10, 11, 12, 13, 3], vec![(0, 0), (0, 1), (1, 2), (2, 3), (3, 4), (0, 0)]);
        assert!(t.truncate(&mut ids, &mut off));
        assert_eq!(ids, [2, 10, 11, 3]);
        assert_eq!(off, [(0, 0), (0, 1), (1, 2), (0, 0)]);
        assert!(!t.truncate(&mut ids, &mut off));
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        let mut m = manifest();
        m.labels.swap(0, 1);
        let e = Manifest::from_bytes(&m.to_bytes().unwrap()).unwrap_err();
        assert!(matches!(e, BundleError::Labels { index: 0, .. }), "{e}");
        let mut m = manifest();
        m.thresholds[3] = 1.5;
        assert!(matches!(Manifest::from_bytes(&m.to_bytes().unwrap()), Err(BundleError::Thresholds(_))));
        let mut m = manifest();
        m.files.retain(|f| f.name != TOKENIZER_FILE);
        assert_eq!(Manifest::from_bytes(&m.to_bytes().unwrap()), Err(BundleError::Unlisted(TOKENIZER_FILE)));
        for bad in ["../model.onnx", "/etc/passwd", "a\\b", "..", ""] {
            let mut m = manifest();
            m.files.push(FileEntry::of(bad, b"x"));
            assert_eq!(Manifest::from_bytes(&m.to_bytes().unwrap()), Err(BundleError::BadFileName(bad.into())));
        }
        let mut b = manifest().to_bytes().unwrap();
        b[8] = 9; // format version
        assert!(matches!(Manifest::from_bytes(&b), Err(BundleError::Format(FormatError::Version { .. }))));
        assert!(matches!(Manifest::from_bytes(&b[..30]), Err(BundleError::Format(FormatError::Truncated { .. }))));
    }
}
