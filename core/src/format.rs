//! Versioned binary artifacts.
//!
//! Every binary file this project persists is an *envelope*:
//!
//! ```text
//! offset  size  field
//! 0       8     magic (ASCII, names the kind of file, e.g. b"CKDSAMPL")
//! 8       2     format version (u16 LE)
//! 10      8     label-space hash (u64 LE, `LabelSpace::hash`)
//! 18      8     payload length in bytes (u64 LE)
//! 26      32    SHA-256 of the payload
//! 58      ...   payload (postcard)
//! ```
//!
//! Decoding checks every field and says which one is wrong. Writing files atomically is the
//! caller's job (the trainer's `io` module); this module works on bytes only.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::knowledge::KnowledgeTable;
use crate::labels::LabelSpace;
use crate::split::SplitConfig;
use crate::visit::Sample;

/// Header length in bytes.
pub const HEADER_LEN: usize = 58;

/// Error decoding an artifact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Shorter than its header or its declared payload.
    #[error("truncated: {got} bytes, expected at least {need}")]
    Truncated {
        /// Bytes present.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Wrong magic: not this kind of file.
    #[error("not a {expected} file (magic {found:?})")]
    Magic {
        /// Expected magic as text.
        expected: String,
        /// Found magic, lossily as text.
        found: String,
    },
    /// A version this build cannot read.
    #[error("format version {found} is not supported (this build reads version {supported})")]
    Version {
        /// Version in the file.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// Made for another label space.
    #[error("label space differs: file has hash {found:016x}, this build has {expected:016x}")]
    LabelSpace {
        /// Hash in the file.
        found: u64,
        /// Hash of this build's label space.
        expected: u64,
    },
    /// Payload does not match its recorded SHA-256.
    #[error("payload checksum mismatch (file is corrupt)")]
    Checksum,
    /// Bytes after the declared payload.
    #[error("{0} unexpected bytes after the payload")]
    TrailingBytes(usize),
    /// The payload does not decode.
    #[error("payload does not decode: {0}")]
    Payload(String),
}

/// SHA-256 of bytes.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// Wraps a payload in an envelope.
pub fn encode_envelope(magic: &[u8; 8], version: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&LabelSpace.hash().to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&sha256(payload));
    out.extend_from_slice(payload);
    out
}

/// Checks an envelope and returns its payload.
pub fn decode_envelope<'a>(bytes: &'a [u8], magic: &[u8; 8], version: u16) -> Result<&'a [u8], FormatError> {
    if bytes.len() < HEADER_LEN {
        return Err(FormatError::Truncated { got: bytes.len(), need: HEADER_LEN });
    }
    if &bytes[..8] != magic {
        return Err(FormatError::Magic {
            expected: String::from_utf8_lossy(magic).into_owned(),
            found: String::from_utf8_lossy(&bytes[..8]).into_owned(),
        });
    }
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let found = u16_at(8);
    if found != version {
        return Err(FormatError::Version { found, supported: version });
    }
    let lh = u64_at(10);
    if lh != LabelSpace.hash() {
        return Err(FormatError::LabelSpace { found: lh, expected: LabelSpace.hash() });
    }
    let len = u64_at(18);
    let need = (HEADER_LEN as u64).saturating_add(len);
    if (bytes.len() as u64) < need {
        return Err(FormatError::Truncated { got: bytes.len(), need: need.min(usize::MAX as u64) as usize });
    }
    let end = need as usize;
    if bytes.len() > end {
        return Err(FormatError::TrailingBytes(bytes.len() - end));
    }
    let payload = &bytes[HEADER_LEN..end];
    if sha256(payload)[..] != bytes[26..58] {
        return Err(FormatError::Checksum);
    }
    Ok(payload)
}

/// Serializes a value with postcard into an envelope.
pub fn encode<T: Serialize>(magic: &[u8; 8], version: u16, value: &T) -> Result<Vec<u8>, FormatError> {
    let payload = postcard::to_allocvec(value).map_err(|e| FormatError::Payload(alloc::format!("{e}")))?;
    Ok(encode_envelope(magic, version, &payload))
}

/// Checks an envelope and deserializes its postcard payload.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], magic: &[u8; 8], version: u16) -> Result<T, FormatError> {
    let payload = decode_envelope(bytes, magic, version)?;
    postcard::from_bytes(payload).map_err(|e| FormatError::Payload(alloc::format!("{e}")))
}

/// Magic of the sample file.
pub const SAMPLES_MAGIC: &[u8; 8] = b"CKDSAMPL";
/// Version of the sample file.
pub const SAMPLES_VERSION: u16 = 1;

/// Contents of a sample file (`samples.bin`), written by `ckd ingest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleFile {
    /// Where the samples came from (`mimic:<dir>`, `jsonl:<file>`), for provenance.
    pub source: String,
    /// SHA-256 (hex) over the input files' bytes, in a fixed order.
    pub source_hash: String,
    /// Split settings used.
    pub split: SplitConfig,
    /// Knowledge table fitted on the training split (`None` when clauses are off or came with
    /// the input).
    pub knowledge: Option<KnowledgeTable>,
    /// All samples, in input order.
    pub samples: Vec<Sample>,
}

impl SampleFile {
    /// Encodes into an envelope.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        encode(SAMPLES_MAGIC, SAMPLES_VERSION, self)
    }

    /// Decodes and checks an envelope.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FormatError> {
        decode(bytes, SAMPLES_MAGIC, SAMPLES_VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn envelope_roundtrip_and_errors() {
        let b = encode_envelope(b"TESTTEST", 3, b"hello");
        assert_eq!(b.len(), HEADER_LEN + 5);
        assert_eq!(decode_envelope(&b, b"TESTTEST", 3), Ok(&b"hello"[..]));
        assert!(matches!(decode_envelope(&b, b"OTHERMAG", 3), Err(FormatError::Magic { .. })));
        assert_eq!(decode_envelope(&b, b"TESTTEST", 4), Err(FormatError::Version { found: 3, supported: 4 }));
        assert!(matches!(decode_envelope(&b[..20], b"TESTTEST", 3), Err(FormatError::Truncated { .. })));
        assert!(matches!(decode_envelope(&b[..HEADER_LEN + 2], b"TESTTEST", 3), Err(FormatError::Truncated { .. })));
        let mut c = b.clone();
        *c.last_mut().unwrap() ^= 1;
        assert_eq!(decode_envelope(&c, b"TESTTEST", 3), Err(FormatError::Checksum));
        let mut d = b.clone();
        d[10] ^= 1;
        assert!(matches!(decode_envelope(&d, b"TESTTEST", 3), Err(FormatError::LabelSpace { .. })));
        let mut e = b.clone();
        e.push(0);
        assert_eq!(decode_envelope(&e, b"TESTTEST", 3), Err(FormatError::TrailingBytes(1)));
    }

    #[test]
    fn sample_file_roundtrip() {
        use crate::visit::{Coded, Split, Visit};
        let f = SampleFile {
            source: "test".into(),
            source_hash: hex(&sha256(b"x")),
            split: SplitConfig::default(),
            knowledge: None,
            samples: vec![Sample {
                id: "1-2-3".into(),
                subject: 1,
                split: Split::Train,
                visit: Visit {
                    diagnoses: vec![Coded { code: "4280".into(), title: "Heart failure".into() }],
                    medications: vec!["Furosemide".into()],
                    procedures: vec![],
                },
                knowledge: vec![],
                labels: crate::LabelSet::from_labels([8]),
                raw: None,
            }],
        };
        let b = f.to_bytes().unwrap();
        assert_eq!(SampleFile::from_bytes(&b).unwrap(), f);
        assert_eq!(hex(&[0x0f, 0xa0]), "0fa0");
    }
}
