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
    /// The index of a single-file bundle is inconsistent (duplicate, overlapping or
    /// out-of-file entries, bytes after the last file).
    #[error("packed bundle index: {0}")]
    Packed(String),
    /// The index envelope of a single-file bundle is invalid (not a packed bundle, version,
    /// checksum, truncated, or an empty file). Distinct from [`BundleError::Format`], which is
    /// about `manifest.bin`.
    #[error("packed bundle index: {0}")]
    PackedFormat(FormatError),
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

/// Magic of a single-file bundle (a bundle directory packed into one file, `.ckdb`).
pub const PACKED_MAGIC: &[u8; 8] = b"CKDPACKD";
/// Version of the single-file bundle layout.
pub const PACKED_VERSION: u16 = 1;
/// Alignment of each file's bytes inside a single-file bundle.
pub const PACKED_ALIGN: u64 = 64;
/// Most files a single-file bundle may hold (a bundle has about five).
pub const MAX_PACKED_FILES: usize = 64;
/// Longest index envelope a single-file bundle may start with, in bytes (64 entries with long
/// names take a few KiB): a reader checks it before reading the index.
pub const MAX_PACKED_INDEX_BYTES: u64 = 1 << 20;

/// The index at the start of a single-file bundle.
///
/// Layout: the index in a versioned envelope ([`crate::format`]; its header gives its own
/// length), then, from the envelope's end rounded up to [`PACKED_ALIGN`], the files' bytes,
/// each at its `offset` (relative to that data start, aligned). The files are those of the
/// bundle directory: `manifest.bin` and every file the manifest lists, checked against it as
/// usual. The index only says where the bytes are; the manifest says what they must be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedIndex {
    /// The packed files, in order of their offsets.
    pub files: Vec<PackedEntry>,
}

/// One file inside a single-file bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedEntry {
    /// File name, as in the bundle directory.
    pub name: String,
    /// Start of the bytes, relative to the data start (a multiple of [`PACKED_ALIGN`]).
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

fn align_up(x: u64) -> u64 {
    x.div_ceil(PACKED_ALIGN) * PACKED_ALIGN
}

impl PackedIndex {
    /// The index of files of these names and sizes, packed in this order.
    pub fn layout(files: &[(String, u64)]) -> Self {
        let mut at = 0u64;
        let files = files
            .iter()
            .map(|(name, size)| {
                let e = PackedEntry { name: name.clone(), offset: at, size: *size };
                at = align_up(at + size);
                e
            })
            .collect();
        PackedIndex { files }
    }

    /// A whole single-file bundle of `files` (name, bytes), packed in this order (put
    /// `manifest.bin` first). Pure: the caller writes the bytes.
    pub fn pack(files: &[(&str, &[u8])]) -> Result<Vec<u8>, FormatError> {
        let sizes: Vec<(String, u64)> = files.iter().map(|(n, b)| (String::from(*n), b.len() as u64)).collect();
        let index = Self::layout(&sizes);
        let envelope = index.to_bytes()?;
        let start = Self::data_start(envelope.len() as u64) as usize;
        let total = start + index.files.last().map_or(0, |f| (f.offset + f.size) as usize);
        let mut packed = alloc::vec![0u8; total];
        packed[..envelope.len()].copy_from_slice(&envelope);
        for (entry, (_, bytes)) in index.files.iter().zip(files) {
            let at = start + entry.offset as usize;
            packed[at..at + bytes.len()].copy_from_slice(bytes);
        }
        Ok(packed)
    }

    /// The index in its envelope.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        format::encode(PACKED_MAGIC, PACKED_VERSION, self)
    }

    /// Length of the index envelope from its first [`format::HEADER_LEN`] bytes (so a reader
    /// knows how much to read), or the envelope's error when they are not a packed bundle's.
    pub fn envelope_len(header: &[u8]) -> Result<u64, FormatError> {
        if header.len() < format::HEADER_LEN {
            return Err(FormatError::Truncated { got: header.len(), need: format::HEADER_LEN });
        }
        // Checks magic, version and label space on the header alone (an empty payload would
        // fail only on length, which is checked after).
        match format::decode_envelope(&header[..format::HEADER_LEN], PACKED_MAGIC, PACKED_VERSION) {
            Ok(_) | Err(FormatError::Truncated { .. }) => {}
            Err(e) => return Err(e),
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[18..26]);
        Ok((format::HEADER_LEN as u64).saturating_add(u64::from_le_bytes(b)))
    }

    /// Where the files' bytes start in a packed file whose index envelope is `envelope_len`
    /// bytes long.
    pub fn data_start(envelope_len: u64) -> u64 {
        align_up(envelope_len)
    }

    /// Decodes the index envelope (exactly its bytes) of a packed file of `file_len` bytes and
    /// checks it, in time linear in its entries: at most [`MAX_PACKED_INDEX_BYTES`] and
    /// [`MAX_PACKED_FILES`], plain unique names, `manifest.bin` present, every file aligned and
    /// inside the file, no two overlapping, and nothing after the last file (the file ends where
    /// its last file ends, as [`PackedIndex::pack`] writes it).
    pub fn from_bytes(envelope: &[u8], file_len: u64) -> Result<Self, BundleError> {
        let bad = |msg: String| BundleError::Packed(msg);
        if envelope.len() as u64 > MAX_PACKED_INDEX_BYTES {
            return Err(bad(alloc::format!(
                "index of {} bytes, over the maximum of {MAX_PACKED_INDEX_BYTES}",
                envelope.len()
            )));
        }
        let index: PackedIndex =
            format::decode(envelope, PACKED_MAGIC, PACKED_VERSION).map_err(BundleError::PackedFormat)?;
        if index.files.len() > MAX_PACKED_FILES {
            return Err(bad(alloc::format!("{} files, over the maximum of {MAX_PACKED_FILES}", index.files.len())));
        }
        let start = Self::data_start(envelope.len() as u64);
        let mut names = alloc::collections::BTreeSet::new();
        let mut end_prev = 0u64;
        for f in &index.files {
            let n = f.name.as_str();
            if n.is_empty() || n == "." || n == ".." || n.contains(['/', '\\', '\0']) {
                return Err(bad(alloc::format!("entry {n:?} is not a plain file name")));
            }
            if !names.insert(n) {
                return Err(bad(alloc::format!("{n} is packed twice")));
            }
            if f.offset % PACKED_ALIGN != 0 || f.offset < end_prev {
                return Err(bad(alloc::format!("{n}: offset {} is unaligned or overlaps the previous file", f.offset)));
            }
            let end = f.offset.checked_add(f.size).and_then(|e| e.checked_add(start));
            match end {
                Some(e) if e <= file_len => end_prev = f.offset + f.size,
                _ => {
                    return Err(bad(alloc::format!(
                        "{n}: bytes {}..+{} run past the end of the file ({file_len} bytes): truncated?",
                        start.saturating_add(f.offset),
                        f.size
                    )))
                }
            }
        }
        if index.get(MANIFEST_FILE).is_none() {
            return Err(BundleError::MissingFile(String::from(MANIFEST_FILE)));
        }
        let end = start + end_prev;
        if end < file_len {
            return Err(bad(alloc::format!(
                "{} bytes after the last file (the file is {file_len} bytes, its files end at {end})",
                file_len - end
            )));
        }
        Ok(index)
    }

    /// The entry of `name`.
    pub fn get(&self, name: &str) -> Option<&PackedEntry> {
        self.files.iter().find(|f| f.name == name)
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

    /// An index of many entries (here 200,000 empty ones) is refused at once, and the checks
    /// are linear in the number of entries, not quadratic.
    #[test]
    fn packed_index_entry_count_is_capped() {
        let many = |n: usize| {
            let mut files: Vec<(String, u64)> = (0..n).map(|i| (alloc::format!("f{i}"), 0)).collect();
            files.push((MANIFEST_FILE.into(), 0));
            PackedIndex::layout(&files)
        };
        let ok = many(MAX_PACKED_FILES - 1);
        assert!(PackedIndex::from_bytes(
            &ok.to_bytes().unwrap(),
            PackedIndex::data_start(ok.to_bytes().unwrap().len() as u64)
        )
        .is_ok());
        let env = many(200_000).to_bytes().unwrap();
        let e = PackedIndex::from_bytes(&env, 1 << 40).unwrap_err().to_string();
        assert!(e.contains("over the maximum of"), "{e}");
        let env = many(MAX_PACKED_FILES).to_bytes().unwrap();
        let e = PackedIndex::from_bytes(&env, 1 << 40).unwrap_err().to_string();
        assert!(
            e.contains(&alloc::format!("{} files, over the maximum of {MAX_PACKED_FILES}", MAX_PACKED_FILES + 1)),
            "{e}"
        );
    }

    #[test]
    fn packed_index_layout_and_checks() {
        let idx =
            PackedIndex::layout(&[(MANIFEST_FILE.into(), 100), (MODEL_FILE.into(), 64), (TOKENIZER_FILE.into(), 1)]);
        let offsets: Vec<u64> = idx.files.iter().map(|f| f.offset).collect();
        assert_eq!(offsets, [0, 128, 192]);
        let env = idx.to_bytes().unwrap();
        assert_eq!(PackedIndex::envelope_len(&env).unwrap(), env.len() as u64);
        let start = PackedIndex::data_start(env.len() as u64);
        assert_eq!(start % PACKED_ALIGN, 0);
        assert!(start >= env.len() as u64);
        let full = start + 193;
        assert_eq!(PackedIndex::from_bytes(&env, full).unwrap(), idx);
        // One byte short: the last file runs past the end.
        assert!(matches!(PackedIndex::from_bytes(&env, full - 1), Err(BundleError::Packed(_))));
        // One byte more: trailing bytes after the last file are refused, and say so.
        let e = PackedIndex::from_bytes(&env, full + 1).unwrap_err();
        assert!(matches!(e, BundleError::Packed(_)) && e.to_string().contains("1 bytes after the last file"), "{e}");
        // A damaged envelope is the index's error, not manifest.bin's.
        let mut bad_env = env.clone();
        *bad_env.last_mut().unwrap() ^= 1;
        let e = PackedIndex::from_bytes(&bad_env, full).unwrap_err();
        assert!(matches!(e, BundleError::PackedFormat(_)), "{e:?}");
        assert!(e.to_string().starts_with("packed bundle index: ") && !e.to_string().contains(MANIFEST_FILE), "{e}");
        // Not a packed bundle.
        assert!(matches!(PackedIndex::envelope_len(&manifest().to_bytes().unwrap()), Err(FormatError::Magic { .. })));
        // Overlap, duplicates, no manifest, bad names.
        let mut o = idx.clone();
        o.files[2].offset = 128;
        assert!(matches!(PackedIndex::from_bytes(&o.to_bytes().unwrap(), full), Err(BundleError::Packed(_))));
        let mut d = idx.clone();
        d.files[2].name = MODEL_FILE.into();
        assert!(matches!(PackedIndex::from_bytes(&d.to_bytes().unwrap(), full), Err(BundleError::Packed(_))));
        let mut m = idx.clone();
        m.files.remove(0);
        assert_eq!(
            PackedIndex::from_bytes(&m.to_bytes().unwrap(), full),
            Err(BundleError::MissingFile(MANIFEST_FILE.into()))
        );
        // pack: the index, then each file at its offset.
        let packed =
            PackedIndex::pack(&[(MANIFEST_FILE, &[1u8; 100]), (MODEL_FILE, &[2u8; 64]), (TOKENIZER_FILE, &[3])])
                .unwrap();
        assert_eq!(packed.len() as u64, full);
        assert_eq!(&packed[..env.len()], &env[..]);
        assert_eq!(packed[start as usize + 128], 2);
        assert_eq!(packed[full as usize - 1], 3);
        let mut n = idx;
        n.files[1].name = "../x".into();
        // A bad name in the index is the index's fault, not manifest.bin's.
        let e = PackedIndex::from_bytes(&n.to_bytes().unwrap(), full).unwrap_err();
        assert_eq!(e, BundleError::Packed("entry \"../x\" is not a plain file name".into()));
        assert_eq!(e.to_string(), "packed bundle index: entry \"../x\" is not a plain file name");
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
