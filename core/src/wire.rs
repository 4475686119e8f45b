//! Wire protocol between a device that sends visits and a board that answers with predictions
//! (`firmware-examples/mcu-link` sends, `firmware-examples/bedside-monitor` answers).
//!
//! Encoding and decoding need no allocator: every size is bounded (`heapless`), so a Cortex-M
//! peripheral can use this module as it is. Only [`VisitSummary::to_visit`] and
//! [`VisitSummary::from_visit`] (the bridge to [`crate::visit::Visit`]) allocate.
//!
//! ## Frame
//!
//! One message is one frame. Before COBS, a frame's body is
//!
//! ```text
//! offset 0        version      u8, 1 or 2 (WIRE_VERSION)
//! offset 1        kind         u8, KIND_REQUEST (1), KIND_RESPONSE (2) or KIND_EXPLAIN_REQUEST (3)
//! offset 2..6     id           u32 little-endian, chosen by the sender, echoed by the answer
//! offset 6..n-4   payload      postcard: VisitSummary (request) or Reply (response)
//! offset n-4..n   crc          u32 little-endian, CRC-32 (IEEE, as zlib) of bytes 0..n-4
//! ```
//!
//! The body is COBS-encoded (no 0x00 inside) and followed by one 0x00 delimiter. Receivers skip
//! empty frames (consecutive 0x00), so a sender may send 0x00 first to resynchronize. Decoding
//! checks, in this order: COBS, minimum length, CRC, version, kind, payload (and that no bytes
//! follow it). A frame longer than the receiver's buffer is dropped up to its delimiter and
//! reported as [`WireError::Oversize`]. Version and kind errors know the request id (the CRC
//! passed), so the answer can echo it; answers to frames whose id cannot be trusted carry id
//! [`UNKNOWN_ID`] (senders should not use 0).
//!
//! ## Versions
//!
//! Version 2 adds explanations: a request of kind [`KIND_EXPLAIN_REQUEST`] asks for the
//! prediction and its evidence, answered by [`Reply::Explained`]. A frame carries the lowest
//! version that holds it: plain requests and answers are written as version 1, byte for byte as
//! before, so boards and devices of version 1 keep working with this build, and this build
//! decodes both versions. A version-1 frame cannot hold an explanation request or answer.
//!
//! ## Answer
//!
//! A [`Reply`] is a prediction or an error code. Probabilities are quantized to u16:
//! `q = round(p * 65535)`, `p = q / 65535` (error at most 1/131070 < 7.7e-6). The positive
//! set is a bitmask (bit `l` = label `l`, label order of [`crate::labels::PHENOTYPES`])
//! decided by the board with the bundle's thresholds on the unquantized probabilities.
//!
//! An explanation ([`WireEvidence`]) names, for the most probable phenotype, the request items
//! whose removal lowers its probability most (occlusion, `ckd_edge::Engine::occlude`), largest
//! effect first: each as its list and index in the request (a knowledge clause as list 3 and its
//! index among the clauses) and the effect quantized to i16: `q = round(e * 32767)`,
//! `e = q / 32767`, `e` in [-1, 1].

use heapless::{String as HString, Vec as HVec};
use serde::{Deserialize, Serialize};

use crate::labels::NUM_LABELS;

/// Newest protocol version (see "Versions" in the module docs).
pub const WIRE_VERSION: u8 = 2;
/// Oldest protocol version this build decodes.
pub const MIN_WIRE_VERSION: u8 = 1;
/// Frame kind of a request.
pub const KIND_REQUEST: u8 = 1;
/// Frame kind of a response.
pub const KIND_RESPONSE: u8 = 2;
/// Frame kind of a request for a prediction and its explanation (version 2).
pub const KIND_EXPLAIN_REQUEST: u8 = 3;
/// Concepts in [`WireEvidence::concepts`].
pub const EVIDENCE_K: usize = 5;
/// Id of answers to frames whose id could not be read (bad COBS, CRC, oversize).
pub const UNKNOWN_ID: u32 = 0;
/// Frame delimiter.
pub const DELIMITER: u8 = 0;

/// Most diagnoses per visit (MIMIC-III demo: at most 37 per admission).
pub const MAX_DIAGNOSES: usize = 40;
/// Most distinct drugs per visit. Busier visits must be cut by the sender (first-seen order);
/// at the bundle's usual `max_len` of 256 tokens, the text is already truncated before the
/// 64th drug.
pub const MAX_MEDICATIONS: usize = 64;
/// Most procedures per visit (MIMIC-III demo: at most 22).
pub const MAX_PROCEDURES: usize = 24;
/// Longest ICD-9 code in bytes (dots allowed; normalized codes have at most 5).
pub const MAX_CODE_LEN: usize = 8;
/// Longest title in bytes (MIMIC-III `SHORT_TITLE` has at most 24).
pub const MAX_TITLE_LEN: usize = 24;
/// Longest drug name in bytes (MIMIC-III demo `PRESCRIPTIONS.DRUG`: at most 41).
pub const MAX_DRUG_LEN: usize = 48;
/// Phenotypes in [`WirePrediction::top_k`].
pub const TOP_K: usize = 5;

/// Bytes before the payload.
pub const HEADER_LEN: usize = 6;
/// Bytes after the payload.
pub const CRC_LEN: usize = 4;

const fn coded_max(n: usize) -> usize {
    // Vec length varint (1 byte below 128) + per item: code length + code + title length + title.
    1 + n * (1 + MAX_CODE_LEN + 1 + MAX_TITLE_LEN)
}
/// Largest postcard payload of a [`VisitSummary`].
pub const MAX_REQUEST_PAYLOAD: usize =
    coded_max(MAX_DIAGNOSES) + 1 + MAX_MEDICATIONS * (1 + MAX_DRUG_LEN) + coded_max(MAX_PROCEDURES);
/// Largest encoded request frame, COBS included, delimiter excluded: a receive buffer of this
/// size holds every valid request.
pub const MAX_REQUEST_FRAME: usize = cobs::max_encoding_length(HEADER_LEN + MAX_REQUEST_PAYLOAD + CRC_LEN);
/// Largest postcard payload of a [`WirePrediction`]: 25 u16 varints (3 bytes each at most) +
/// u32 varint + top-k vector + bool + u16 varint.
const MAX_PREDICTION_PAYLOAD: usize = NUM_LABELS * 3 + 5 + 1 + TOP_K + 1 + 3;
/// Largest postcard payload of a [`Reply`]: variant tag + prediction + the evidence's label and
/// vector length + per concept list, index and an i16 zigzag varint (3 bytes at most).
pub const MAX_RESPONSE_PAYLOAD: usize = 1 + MAX_PREDICTION_PAYLOAD + 1 + 1 + EVIDENCE_K * (1 + 1 + 3);
/// Largest encoded response frame, COBS included, delimiter excluded.
pub const MAX_RESPONSE_FRAME: usize = cobs::max_encoding_length(HEADER_LEN + MAX_RESPONSE_PAYLOAD + CRC_LEN);

/// Which list of a visit an item belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    /// A diagnosis code.
    Diagnosis,
    /// A drug name.
    Medication,
    /// A procedure code.
    Procedure,
}

impl core::fmt::Display for Item {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Item::Diagnosis => "diagnosis",
            Item::Medication => "medication",
            Item::Procedure => "procedure",
        })
    }
}

/// A coded item on the wire: an ICD-9 code and an optional title.
///
/// Diagnoses are rendered with the code's three-digit category title from ckd-core's table;
/// the wire title is used only for codes without a category title. Procedures are rendered with
/// the wire title. When the wire title is empty, the receiver's title table is used (see
/// [`VisitSummary::to_visit_with`]; ckd-core has no procedure table), else the code itself, as
/// `ckd ingest` falls back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCoded {
    /// ICD-9 code as the device stores it (`"428.0"` or `"4280"`).
    pub code: HString<MAX_CODE_LEN>,
    /// Title (may be empty).
    pub title: HString<MAX_TITLE_LEN>,
}

/// The facts of one visit, bounded for the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitSummary {
    /// Diagnoses in SEQ_NUM order.
    pub diagnoses: HVec<WireCoded, MAX_DIAGNOSES>,
    /// Drug names (PRESCRIPTIONS.DRUG), first-seen order.
    pub medications: HVec<HString<MAX_DRUG_LEN>, MAX_MEDICATIONS>,
    /// Procedures in SEQ_NUM order.
    pub procedures: HVec<WireCoded, MAX_PROCEDURES>,
}

/// A request: predict the next-visit phenotypes of `visit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Sender-chosen id, echoed by the answer (not 0, see [`UNKNOWN_ID`]).
    pub id: u32,
    /// The visit.
    pub visit: VisitSummary,
    /// Also explain the prediction ([`KIND_EXPLAIN_REQUEST`], a version-2 frame).
    pub explain: bool,
}

/// Error codes of a [`Reply::Error`]. Values are stable across versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum ErrorCode {
    /// The frame is not valid COBS.
    Cobs = 1,
    /// The frame is shorter than header + CRC.
    Truncated = 2,
    /// The frame is longer than the receiver's buffer.
    Oversize = 3,
    /// The CRC does not match.
    Crc = 4,
    /// Unsupported protocol version.
    Version = 5,
    /// The frame is not a request.
    Kind = 6,
    /// The payload does not decode (wrong layout, a list or string over its bound, bytes left over).
    Payload = 7,
    /// An item is invalid (e.g. an empty code); `index` says which.
    InvalidItem = 8,
    /// The model failed on this input.
    Model = 9,
}

/// A prediction on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePrediction {
    /// Quantized probability per phenotype, label order (see the module docs).
    pub probs: [u16; NUM_LABELS],
    /// Bit `l` set when phenotype `l` is at or above the bundle's threshold.
    pub positive: u32,
    /// The most probable phenotypes (label ids), most probable first.
    pub top_k: HVec<u8, TOP_K>,
    /// Whether the rendered text was cut to the bundle's maximum length.
    pub truncated: bool,
    /// Tokens fed to the model (saturates at 65535).
    pub tokens: u16,
}

/// One concept of an explanation: a request item (or knowledge clause) and its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireConcept {
    /// 0 diagnoses, 1 medications, 2 procedures (lists of the request), 3 knowledge clauses
    /// (of the rendered text).
    pub list: u8,
    /// Index in that list (the first of equal items; 255 and above saturate at 255).
    pub index: u8,
    /// Probability of [`WireEvidence::label`] with the concept minus without it, quantized
    /// ([`quantize_effect`]).
    pub effect: i16,
}

/// An explanation on the wire (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEvidence {
    /// The phenotype explained (the most probable one).
    pub label: u8,
    /// The concepts of largest effect on it, largest first.
    pub concepts: HVec<WireConcept, EVIDENCE_K>,
}

/// The payload of a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The prediction.
    Prediction(WirePrediction),
    /// The request failed.
    Error {
        /// What failed.
        code: ErrorCode,
        /// For [`ErrorCode::InvalidItem`]: the item's list (0 diagnosis, 1 medication, 2
        /// procedure) times 256 plus its index; 0 otherwise.
        detail: u16,
    },
    /// The prediction and its explanation (version 2; the answer to an explain request).
    Explained {
        /// The prediction.
        prediction: WirePrediction,
        /// Its explanation.
        evidence: WireEvidence,
    },
}

/// A response: the answer to request `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The request's id ([`UNKNOWN_ID`] when it could not be read).
    pub id: u32,
    /// The answer.
    pub reply: Reply,
}

/// What is wrong with a frame or a value to encode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame is not valid COBS.
    #[error("frame: invalid COBS encoding")]
    Cobs,
    /// The decoded frame is shorter than header + CRC.
    #[error("frame: {len} bytes after COBS, at least {min} needed")]
    Truncated {
        /// Decoded length.
        len: usize,
        /// Minimum length.
        min: usize,
    },
    /// The frame did not fit the receive buffer.
    #[error("frame: longer than the receive buffer of {max} bytes")]
    Oversize {
        /// Buffer size.
        max: usize,
    },
    /// The CRC does not match.
    #[error("frame: CRC-32 mismatch (frame says {expected:#010x}, content gives {found:#010x})")]
    Crc {
        /// CRC carried by the frame.
        expected: u32,
        /// CRC of the content.
        found: u32,
    },
    /// Unsupported protocol version.
    #[error("frame {id}: protocol version {found}, this build speaks {MIN_WIRE_VERSION} to {WIRE_VERSION}")]
    Version {
        /// Id of the frame.
        id: u32,
        /// Version in the frame.
        found: u8,
    },
    /// Unexpected frame kind.
    #[error("frame {id}: kind {found}, expected {expected}")]
    Kind {
        /// Id of the frame.
        id: u32,
        /// Kind in the frame.
        found: u8,
        /// Kind expected.
        expected: u8,
    },
    /// The payload does not decode.
    #[error("frame {id}: payload: {reason}")]
    Payload {
        /// Id of the frame.
        id: u32,
        /// What postcard said, or `trailing bytes`.
        reason: &'static str,
    },
    /// An item to put on the wire is over its bound.
    #[error("{item} {index}: {what}")]
    Bound {
        /// Which list.
        item: Item,
        /// Index in the list.
        index: usize,
        /// What is over its bound.
        what: &'static str,
    },
    /// An item is invalid (e.g. an empty code).
    #[error("{item} {index}: {what}")]
    InvalidItem {
        /// Which list.
        item: Item,
        /// Index in the list.
        index: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// The output buffer is too small for the encoded frame.
    #[error("output buffer of {len} bytes is too small for the frame")]
    BufferTooSmall {
        /// Size of the buffer given.
        len: usize,
    },
}

impl WireError {
    /// The id an answer to this error should carry.
    pub fn id(&self) -> u32 {
        match self {
            WireError::Version { id, .. } | WireError::Kind { id, .. } | WireError::Payload { id, .. } => *id,
            _ => UNKNOWN_ID,
        }
    }

    /// The error reply a receiver sends back for this error.
    pub fn reply(&self) -> Reply {
        let (code, detail) = match self {
            WireError::Cobs => (ErrorCode::Cobs, 0),
            WireError::Truncated { .. } => (ErrorCode::Truncated, 0),
            WireError::Oversize { .. } | WireError::BufferTooSmall { .. } => (ErrorCode::Oversize, 0),
            WireError::Crc { .. } => (ErrorCode::Crc, 0),
            WireError::Version { .. } => (ErrorCode::Version, 0),
            WireError::Kind { .. } => (ErrorCode::Kind, 0),
            WireError::Payload { .. } | WireError::Bound { .. } => (ErrorCode::Payload, 0),
            WireError::InvalidItem { item, index, .. } => (ErrorCode::InvalidItem, item_detail(*item, *index)),
        };
        Reply::Error { code, detail }
    }
}

/// The `detail` of an [`ErrorCode::InvalidItem`] reply (see [`Reply::Error`]).
pub fn item_detail(item: Item, index: usize) -> u16 {
    let list: u16 = match item {
        Item::Diagnosis => 0,
        Item::Medication => 1,
        Item::Procedure => 2,
    };
    list * 256 + (index.min(255) as u16)
}

/// Quantizes a probability to u16 (`round(p * 65535)`, clamped to [0, 1]; NaN gives 0).
pub fn quantize_prob(p: f32) -> u16 {
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
    (p * 65535.0 + 0.5) as u16
}

/// Quantizes an effect in [-1, 1] to i16 (`round(e * 32767)`, clamped; NaN gives 0).
pub fn quantize_effect(e: f32) -> i16 {
    let x = if e.is_nan() { 0.0 } else { e.clamp(-1.0, 1.0) * 32767.0 };
    // Rounds half away from zero (`f32::round`, which `no_std` lacks): `as` truncates.
    (if x >= 0.0 { x + 0.5 } else { x - 0.5 }) as i16
}

/// The effect a quantized value stands for.
pub fn dequantize_effect(q: i16) -> f32 {
    f32::from(q) / 32767.0
}

/// The probability a quantized value stands for.
pub fn dequantize_prob(q: u16) -> f32 {
    q as f32 / 65535.0
}

fn bounded<const N: usize>(s: &str, item: Item, index: usize, what: &'static str) -> Result<HString<N>, WireError> {
    HString::try_from(s).map_err(|_| WireError::Bound { item, index, what })
}

impl WireCoded {
    /// A coded item; fails when the code or title is over its bound.
    pub fn new(code: &str, title: &str, item: Item, index: usize) -> Result<Self, WireError> {
        Ok(WireCoded {
            code: bounded(code, item, index, "code longer than MAX_CODE_LEN")?,
            title: bounded(title, item, index, "title longer than MAX_TITLE_LEN")?,
        })
    }
}

impl VisitSummary {
    /// Appends a diagnosis (`title` may be empty, see [`WireCoded`]).
    pub fn push_diagnosis(&mut self, code: &str, title: &str) -> Result<(), WireError> {
        let index = self.diagnoses.len();
        let c = WireCoded::new(code, title, Item::Diagnosis, index)?;
        self.diagnoses.push(c).map_err(|_| WireError::Bound {
            item: Item::Diagnosis,
            index,
            what: "over MAX_DIAGNOSES",
        })
    }

    /// Appends a drug name.
    pub fn push_medication(&mut self, drug: &str) -> Result<(), WireError> {
        let index = self.medications.len();
        let d = bounded(drug, Item::Medication, index, "name longer than MAX_DRUG_LEN")?;
        self.medications.push(d).map_err(|_| WireError::Bound {
            item: Item::Medication,
            index,
            what: "over MAX_MEDICATIONS",
        })
    }

    /// Appends a procedure (`title` may be empty, see [`WireCoded`]).
    pub fn push_procedure(&mut self, code: &str, title: &str) -> Result<(), WireError> {
        let index = self.procedures.len();
        let c = WireCoded::new(code, title, Item::Procedure, index)?;
        self.procedures.push(c).map_err(|_| WireError::Bound {
            item: Item::Procedure,
            index,
            what: "over MAX_PROCEDURES",
        })
    }

    /// The visit this summary stands for, with titles resolved as [`WireCoded`] says. Codes
    /// are normalized ([`crate::icd::normalize`]); an empty code is an error naming the item.
    pub fn to_visit(&self) -> Result<crate::visit::Visit, WireError> {
        self.to_visit_with(|_| None, |_| None)
    }

    /// As [`VisitSummary::to_visit`], with title tables for codes sent without a title (the
    /// board's copies of `D_ICD_DIAGNOSES` / `D_ICD_PROCEDURES` short titles, keyed by
    /// normalized code), so the text matches what `ckd ingest` rendered in training:
    /// diagnoses: category title, else wire title, else `dx_title(code)`, else the code;
    /// procedures: wire title, else `proc_title(code)`, else the code.
    pub fn to_visit_with<D, P>(&self, dx_title: D, proc_title: P) -> Result<crate::visit::Visit, WireError>
    where
        D: Fn(&str) -> Option<alloc::string::String>,
        P: Fn(&str) -> Option<alloc::string::String>,
    {
        use crate::icd;
        use crate::visit::{Coded, Visit};
        use alloc::string::{String, ToString};
        let code_of = |c: &WireCoded, item: Item, index: usize| {
            icd::normalize(&c.code).ok_or(WireError::InvalidItem { item, index, what: "empty code" })
        };
        let mut diagnoses = alloc::vec::Vec::with_capacity(self.diagnoses.len());
        for (i, d) in self.diagnoses.iter().enumerate() {
            let code = code_of(d, Item::Diagnosis, i)?;
            let title = match icd::category_of(&code).and_then(icd::category_title) {
                Some(t) => t.to_string(),
                None if !d.title.trim().is_empty() => d.title.trim().to_string(),
                None => dx_title(&code).unwrap_or_else(|| code.clone()),
            };
            diagnoses.push(Coded { code, title });
        }
        let mut procedures = alloc::vec::Vec::with_capacity(self.procedures.len());
        for (i, p) in self.procedures.iter().enumerate() {
            let code = code_of(p, Item::Procedure, i)?;
            let title = if p.title.trim().is_empty() {
                proc_title(&code).unwrap_or_else(|| code.clone())
            } else {
                p.title.trim().to_string()
            };
            procedures.push(Coded { code, title });
        }
        let mut medications: alloc::vec::Vec<String> = alloc::vec::Vec::with_capacity(self.medications.len());
        for (i, m) in self.medications.iter().enumerate() {
            if m.trim().is_empty() {
                return Err(WireError::InvalidItem { item: Item::Medication, index: i, what: "empty drug name" });
            }
            if !medications.iter().any(|x| x == m.as_str()) {
                medications.push(m.to_string());
            }
        }
        Ok(Visit { diagnoses, medications, procedures })
    }

    /// The summary of a visit: diagnosis titles are sent only for codes without a category
    /// title, procedure titles always. Fails on the first item over its bound (no silent cut).
    pub fn from_visit(visit: &crate::visit::Visit) -> Result<Self, WireError> {
        use crate::icd;
        let mut s = VisitSummary::default();
        for d in &visit.diagnoses {
            let has_category = icd::category_of(&d.code).and_then(icd::category_title).is_some();
            s.push_diagnosis(&d.code, if has_category { "" } else { &d.title })?;
        }
        for m in &visit.medications {
            s.push_medication(m)?;
        }
        for p in &visit.procedures {
            s.push_procedure(&p.code, &p.title)?;
        }
        Ok(s)
    }
}

/// A postcard flavor that CRCs every byte and COBS-encodes it into the output slice.
struct FrameFlavor<'a> {
    cobs: cobs::CobsEncoder<'a>,
    crc: crc32fast::Hasher,
}

impl postcard::ser_flavors::Flavor for FrameFlavor<'_> {
    type Output = Self;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.crc.update(data);
        self.cobs.push(data).map_err(|_| postcard::Error::SerializeBufferFull)
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn finalize(self) -> postcard::Result<Self> {
        Ok(self)
    }
}

fn encode_frame<T: Serialize>(
    (version, kind): (u8, u8),
    id: u32,
    payload: &T,
    out: &mut [u8],
) -> Result<usize, WireError> {
    let len = out.len();
    let too_small = |_| WireError::BufferTooSmall { len };
    let mut f = FrameFlavor { cobs: cobs::CobsEncoder::new(out), crc: crc32fast::Hasher::new() };
    let id = id.to_le_bytes();
    postcard::ser_flavors::Flavor::try_extend(&mut f, &[version, kind, id[0], id[1], id[2], id[3]])
        .map_err(too_small)?;
    let f = postcard::serialize_with_flavor::<T, FrameFlavor<'_>, FrameFlavor<'_>>(payload, f).map_err(too_small)?;
    let crc = f.crc.finalize().to_le_bytes();
    let mut cobs = f.cobs;
    cobs.push(&crc).map_err(|_| WireError::BufferTooSmall { len })?;
    let n = cobs.finalize();
    // `out` is borrowed by the encoder until finalize; write the delimiter after.
    match out.get_mut(n) {
        Some(b) => *b = DELIMITER,
        None => return Err(WireError::BufferTooSmall { len }),
    }
    Ok(n + 1)
}

/// Encodes a request frame into `out` (delimiter included); returns its length. A buffer of
/// [`MAX_REQUEST_FRAME`] + 1 bytes always suffices.
pub fn encode_request(req: &Request, out: &mut [u8]) -> Result<usize, WireError> {
    let header = if req.explain { (2, KIND_EXPLAIN_REQUEST) } else { (1, KIND_REQUEST) };
    encode_frame(header, req.id, &req.visit, out)
}

/// Encodes a response frame into `out` (delimiter included); returns its length. A buffer of
/// [`MAX_RESPONSE_FRAME`] + 1 bytes always suffices.
pub fn encode_response(resp: &Response, out: &mut [u8]) -> Result<usize, WireError> {
    let version = if matches!(resp.reply, Reply::Explained { .. }) { 2 } else { 1 };
    encode_frame((version, KIND_RESPONSE), resp.id, &resp.reply, out)
}

/// A frame whose COBS, length, CRC, version and kind checked out.
#[derive(Debug, PartialEq, Eq)]
pub struct OpenFrame<'a> {
    /// The frame's id.
    pub id: u32,
    /// Its protocol version.
    pub version: u8,
    /// Its kind.
    pub kind: u8,
    /// The payload (postcard bytes).
    pub payload: &'a [u8],
}

/// COBS-decodes `frame` in place and checks length, CRC, version and kind (one of `kinds`;
/// [`KIND_EXPLAIN_REQUEST`] needs version 2); the payload is a sub-slice of `frame`. `frame` is
/// the bytes between delimiters (a trailing delimiter is allowed).
pub fn open_frame<'a>(frame: &'a mut [u8], kinds: &[u8]) -> Result<OpenFrame<'a>, WireError> {
    let frame = match frame.iter().position(|&b| b == DELIMITER) {
        Some(end) => &mut frame[..end],
        None => frame,
    };
    if frame.is_empty() {
        return Err(WireError::Truncated { len: 0, min: HEADER_LEN + CRC_LEN });
    }
    let n = cobs::decode_in_place(frame).map_err(|_| WireError::Cobs)?;
    let body = frame.get(..n).ok_or(WireError::Cobs)?;
    if n < HEADER_LEN + CRC_LEN {
        return Err(WireError::Truncated { len: n, min: HEADER_LEN + CRC_LEN });
    }
    let (content, crc) = body.split_at(n - CRC_LEN);
    let expected = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let found = crc32fast::hash(content);
    if expected != found {
        return Err(WireError::Crc { expected, found });
    }
    let id = u32::from_le_bytes([content[2], content[3], content[4], content[5]]);
    let (version, kind) = (content[0], content[1]);
    if !(MIN_WIRE_VERSION..=WIRE_VERSION).contains(&version) {
        return Err(WireError::Version { id, found: version });
    }
    if !kinds.contains(&kind) || (kind == KIND_EXPLAIN_REQUEST && version < 2) {
        return Err(WireError::Kind { id, found: kind, expected: kinds.first().copied().unwrap_or(0) });
    }
    Ok(OpenFrame { id, version, kind, payload: &content[HEADER_LEN..] })
}

fn payload<'de, T: Deserialize<'de>>(id: u32, bytes: &'de [u8]) -> Result<T, WireError> {
    let (v, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| WireError::Payload { id, reason: postcard_reason(e) })?;
    if !rest.is_empty() {
        return Err(WireError::Payload { id, reason: "trailing bytes after the payload" });
    }
    Ok(v)
}

fn postcard_reason(e: postcard::Error) -> &'static str {
    use postcard::Error as E;
    match e {
        E::DeserializeUnexpectedEnd => "ends early",
        E::DeserializeBadVarint => "bad varint",
        E::DeserializeBadBool => "bad bool",
        E::DeserializeBadUtf8 | E::DeserializeBadChar => "bad UTF-8",
        E::DeserializeBadEnum => "bad enum tag",
        E::DeserializeBadEncoding => "bad encoding",
        E::SerdeDeCustom => "a list or string over its bound, or an invalid value",
        _ => "does not decode",
    }
}

/// Decodes a request frame (see [`open_frame`]; `frame` is modified in place).
pub fn decode_request(frame: &mut [u8]) -> Result<Request, WireError> {
    let f = open_frame(frame, &[KIND_REQUEST, KIND_EXPLAIN_REQUEST])?;
    Ok(Request { id: f.id, visit: payload(f.id, f.payload)?, explain: f.kind == KIND_EXPLAIN_REQUEST })
}

/// Decodes a response frame (see [`open_frame`]; `frame` is modified in place).
pub fn decode_response(frame: &mut [u8]) -> Result<Response, WireError> {
    let OpenFrame { id, version, payload: bytes, .. } = open_frame(frame, &[KIND_RESPONSE])?;
    let reply: Reply = payload(id, bytes)?;
    if version < 2 && matches!(reply, Reply::Explained { .. }) {
        return Err(WireError::Payload { id, reason: "an explanation in a version-1 frame" });
    }
    Ok(Response { id, reply })
}

/// Splits a byte stream into frames with a fixed buffer of `N` bytes (no allocation).
///
/// Feed bytes one at a time with [`Deframer::push`]; at each delimiter it yields the frame
/// (still COBS-encoded; pass it to [`decode_request`] / [`decode_response`]), skipping empty
/// frames. A frame longer than `N` is dropped up to its delimiter and yields
/// [`WireError::Oversize`].
#[derive(Debug)]
pub struct Deframer<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflow: bool,
}

impl<const N: usize> Default for Deframer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Deframer<N> {
    /// An empty deframer.
    pub const fn new() -> Self {
        Deframer { buf: [0; N], len: 0, overflow: false }
    }

    /// Feeds one byte; returns a complete frame (or the oversize error) at a delimiter.
    pub fn push(&mut self, byte: u8) -> Option<Result<&mut [u8], WireError>> {
        if byte == DELIMITER {
            let (len, overflow) = (self.len, self.overflow);
            self.len = 0;
            self.overflow = false;
            if overflow {
                return Some(Err(WireError::Oversize { max: N }));
            }
            if len == 0 {
                return None;
            }
            return Some(Ok(&mut self.buf[..len]));
        }
        if self.overflow {
            return None;
        }
        match self.buf.get_mut(self.len) {
            Some(slot) => {
                *slot = byte;
                self.len += 1;
            }
            None => self.overflow = true,
        }
        None
    }

    /// Bytes of the frame in progress.
    pub fn pending(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn summary() -> VisitSummary {
        let mut v = VisitSummary::default();
        v.push_diagnosis("428.0", "").unwrap();
        v.push_diagnosis("5849", "").unwrap();
        v.push_diagnosis("0000", "Made-up title").unwrap();
        v.push_medication("Furosemide").unwrap();
        v.push_medication("Sodium Chloride 0.9%  Flush").unwrap();
        v.push_procedure("3961", "Extracorporeal circulat").unwrap();
        v.push_procedure("9904", "").unwrap();
        v
    }

    fn frame_of(req: &Request) -> Vec<u8> {
        let mut out = vec![0u8; MAX_REQUEST_FRAME + 1];
        let n = encode_request(req, &mut out).unwrap();
        out.truncate(n);
        out
    }

    /// A request filled to every bound (longest strings, most items).
    fn full_summary() -> VisitSummary {
        let mut v = VisitSummary::default();
        let code = "E849.7xx";
        let title = "T".repeat(MAX_TITLE_LEN);
        for _ in 0..MAX_DIAGNOSES {
            v.push_diagnosis(code, &title).unwrap();
        }
        for _ in 0..MAX_MEDICATIONS {
            v.push_medication(&"d".repeat(MAX_DRUG_LEN)).unwrap();
        }
        for _ in 0..MAX_PROCEDURES {
            v.push_procedure(code, &title).unwrap();
        }
        v
    }

    #[test]
    fn request_roundtrip_and_layout() {
        let req = Request { id: 0x0102_0304, visit: summary(), explain: false };
        let mut f = frame_of(&req);
        assert_eq!(f.last(), Some(&DELIMITER));
        assert!(!f[..f.len() - 1].contains(&DELIMITER), "COBS leaves no 0x00 inside a frame");
        let back = decode_request(&mut f).unwrap();
        assert_eq!(back, req);
        // Layout: decode COBS by hand and read the header and CRC.
        let mut raw = frame_of(&req);
        let n = cobs::decode_in_place(&mut raw[..]).unwrap();
        assert_eq!(&raw[..6], &[1, KIND_REQUEST, 4, 3, 2, 1], "a plain request is a version-1 frame");
        let crc = u32::from_le_bytes(raw[n - 4..n].try_into().unwrap());
        assert_eq!(crc, crc32fast::hash(&raw[..n - 4]));
        // An explanation request: version 2, its own kind, the same payload.
        let explain = Request { explain: true, ..req.clone() };
        let mut raw2 = frame_of(&explain);
        let n2 = cobs::decode_in_place(&mut raw2[..]).unwrap();
        assert_eq!(&raw2[..6], &[2, KIND_EXPLAIN_REQUEST, 4, 3, 2, 1]);
        assert_eq!(&raw2[6..n2 - 4], &raw[6..n - 4]);
        assert_eq!(decode_request(&mut frame_of(&explain)).unwrap(), explain);
    }

    #[test]
    fn bounds_hold_for_the_largest_request() {
        let req = Request { id: u32::MAX, visit: full_summary(), explain: true };
        let mut f = frame_of(&req);
        assert!(f.len() <= MAX_REQUEST_FRAME + 1, "{} > {}", f.len(), MAX_REQUEST_FRAME + 1);
        assert_eq!(decode_request(&mut f).unwrap(), req);
        let mut short = vec![0u8; 100];
        assert_eq!(encode_request(&req, &mut short), Err(WireError::BufferTooSmall { len: 100 }));
        let mut v = full_summary();
        assert!(matches!(
            v.push_diagnosis("4280", ""),
            Err(WireError::Bound { item: Item::Diagnosis, index: MAX_DIAGNOSES, .. })
        ));
        assert!(matches!(
            v.push_medication(&"x".repeat(MAX_DRUG_LEN + 1)),
            Err(WireError::Bound { item: Item::Medication, .. })
        ));
    }

    #[test]
    fn response_roundtrip_and_bound() {
        let pred = WirePrediction {
            probs: [u16::MAX; NUM_LABELS],
            positive: (1 << NUM_LABELS) - 1,
            top_k: HVec::from_slice(&[24, 3, 2, 1, 0]).unwrap(),
            truncated: true,
            tokens: u16::MAX,
        };
        let concept = WireConcept { list: 3, index: 255, effect: i16::MIN };
        let evidence = WireEvidence { label: 24, concepts: HVec::from_slice(&[concept; EVIDENCE_K]).unwrap() };
        let explained = Reply::Explained { prediction: pred.clone(), evidence };
        for reply in [Reply::Prediction(pred), Reply::Error { code: ErrorCode::InvalidItem, detail: 513 }, explained] {
            let version = if matches!(reply, Reply::Explained { .. }) { 2 } else { 1 };
            let resp = Response { id: u32::MAX, reply };
            let mut out = [0u8; MAX_RESPONSE_FRAME + 1];
            let n = encode_response(&resp, &mut out).unwrap();
            assert_eq!(decode_response(&mut out[..n].to_vec()).unwrap(), resp);
            cobs::decode_in_place(&mut out[..n - 1]).unwrap();
            assert_eq!(out[0], version, "{:?}", resp.reply);
        }
    }

    /// The bytes of an explained answer (version 2) and of a plain one (version 1, the bytes
    /// version-1 boards sent), fixed: a change to either breaks the devices that read them. Both
    /// strings were also produced by a separate encoder written from the module docs (Python:
    /// LEB128 and zigzag varints, `zlib.crc32`, COBS by hand).
    #[test]
    fn golden_frames() {
        let mut probs = [0u16; NUM_LABELS];
        probs[4] = quantize_prob(0.9);
        let prediction = WirePrediction {
            probs,
            positive: 1 << 4,
            top_k: HVec::from_slice(&[4, 0, 1, 2, 3]).unwrap(),
            truncated: false,
            tokens: 42,
        };
        let concepts = [
            WireConcept { list: 0, index: 1, effect: quantize_effect(0.25) },
            WireConcept { list: 1, index: 0, effect: quantize_effect(-0.01) },
        ];
        let evidence = WireEvidence { label: 4, concepts: HVec::from_slice(&concepts).unwrap() };
        let hex = |reply: Reply| {
            let mut out = [0u8; MAX_RESPONSE_FRAME + 1];
            let n = encode_response(&Response { id: 3, reply }, &mut out).unwrap();
            out[..n].iter().map(|b| alloc::format!("{b:02x}")).collect::<alloc::string::String>()
        };
        assert_eq!(
            hex(Reply::Prediction(prediction.clone())),
            "040102030101010101010104e6cc03010101010101010101010101010101010101010410050404010203062ad494506e00"
        );
        assert_eq!(
            hex(Reply::Explained { prediction, evidence }),
            "040202030101020201010104e6cc03010101010101010101010101010101010101010410050404010203042a\
             0402060180800101078f050eb1727500"
        );
    }

    #[test]
    fn quantization_error_is_within_half_a_step() {
        for i in 0..=1000 {
            let p = i as f32 / 1000.0;
            assert!((dequantize_prob(quantize_prob(p)) - p).abs() <= 0.5 / 65535.0 + 1e-7);
        }
        assert_eq!(quantize_prob(f32::NAN), 0);
        assert_eq!(quantize_prob(2.0), u16::MAX);
        for i in -1000..=1000 {
            let e = i as f32 / 1000.0;
            assert!((dequantize_effect(quantize_effect(e)) - e).abs() <= 0.5 / 32767.0 + 1e-7);
        }
        assert_eq!((quantize_effect(f32::NAN), quantize_effect(-2.0), quantize_effect(2.0)), (0, -32767, 32767));
    }

    #[test]
    fn malformed_frames_give_typed_errors() {
        let req = Request { id: 9, visit: summary(), explain: false };
        let good = frame_of(&req);
        // Truncated: cut the COBS bytes (a cut inside a COBS block is invalid COBS; one at a
        // block boundary decodes and then fails the CRC or length).
        for cut in 1..good.len() - 1 {
            let mut f = good[..cut].to_vec();
            let e = decode_request(&mut f).unwrap_err();
            assert!(matches!(e, WireError::Cobs | WireError::Crc { .. } | WireError::Truncated { .. }), "{cut}: {e}");
        }
        // Any flipped bit is caught (CRC-32 detects every single-bit error).
        for i in 0..good.len() - 1 {
            for bit in 0..8 {
                let mut f = good.clone();
                f[i] ^= 1 << bit;
                assert!(decode_request(&mut f).is_err(), "flip {i}.{bit} went undetected");
            }
        }
        // Wrong version or kind, with a valid CRC: the id is known.
        let raw = |version: u8, kind: u8, payload: &[u8]| {
            let mut body = vec![version, kind, 5, 0, 0, 0];
            body.extend_from_slice(payload);
            let crc = crc32fast::hash(&body);
            body.extend_from_slice(&crc.to_le_bytes());
            let mut out = vec![0u8; cobs::max_encoding_length(body.len())];
            let n = cobs::encode(&body, &mut out);
            out.truncate(n);
            out
        };
        let e = decode_request(&mut raw(3, KIND_REQUEST, &[0, 0, 0])).unwrap_err();
        assert_eq!(e, WireError::Version { id: 5, found: 3 });
        assert!(decode_request(&mut raw(2, KIND_REQUEST, &[0, 0, 0])).is_ok(), "version 2 holds plain requests too");
        assert_eq!(
            decode_request(&mut raw(1, KIND_EXPLAIN_REQUEST, &[0, 0, 0])),
            Err(WireError::Kind { id: 5, found: KIND_EXPLAIN_REQUEST, expected: KIND_REQUEST }),
            "version 1 has no explanation request"
        );
        // An explained answer (variant 2) in a version-1 frame is refused.
        let mut v1_explained = vec![2u8];
        v1_explained.extend(core::iter::repeat_n(0u8, NUM_LABELS));
        v1_explained.extend([0, 0, 0, 0, 0, 0]);
        assert_eq!(
            decode_response(&mut raw(1, KIND_RESPONSE, &v1_explained)),
            Err(WireError::Payload { id: 5, reason: "an explanation in a version-1 frame" })
        );
        assert!(decode_response(&mut raw(2, KIND_RESPONSE, &v1_explained)).is_ok());
        assert_eq!(e.reply(), Reply::Error { code: ErrorCode::Version, detail: 0 });
        assert_eq!(e.id(), 5);
        assert_eq!(
            decode_request(&mut raw(1, KIND_RESPONSE, &[0, 0, 0])),
            Err(WireError::Kind { id: 5, found: KIND_RESPONSE, expected: KIND_REQUEST })
        );
        // Payloads: empty visit decodes; trailing bytes, over-long lists and strings do not.
        assert_eq!(decode_request(&mut raw(1, KIND_REQUEST, &[0, 0, 0])).unwrap().visit, VisitSummary::default());
        assert!(matches!(decode_request(&mut raw(1, KIND_REQUEST, &[0, 0, 0, 0])), Err(WireError::Payload { .. })));
        assert!(matches!(decode_request(&mut raw(1, KIND_REQUEST, &[0, 0])), Err(WireError::Payload { .. })));
        assert!(matches!(
            decode_request(&mut raw(1, KIND_REQUEST, &[(MAX_DIAGNOSES + 1) as u8])),
            Err(WireError::Payload { .. })
        ));
        let mut long = vec![1u8, MAX_CODE_LEN as u8 + 1];
        long.extend(core::iter::repeat_n(b'1', MAX_CODE_LEN + 1));
        long.extend([0, 0, 0]);
        assert!(matches!(decode_request(&mut raw(1, KIND_REQUEST, &long)), Err(WireError::Payload { .. })));
        // Too short after COBS, and garbage.
        assert!(matches!(decode_request(&mut [2, 1, 0]), Err(WireError::Truncated { len: 1, .. })));
        assert!(matches!(decode_request(&mut []), Err(WireError::Truncated { len: 0, .. })));
        assert_eq!(decode_request(&mut [9, 1, 1]), Err(WireError::Cobs));
    }

    #[test]
    fn deframer_splits_skips_empty_and_reports_oversize() {
        let a = frame_of(&Request { id: 1, visit: summary(), explain: true });
        let b = frame_of(&Request { id: 2, visit: VisitSummary::default(), explain: false });
        let mut stream = vec![0, 0];
        stream.extend(core::iter::repeat_n(7u8, 300));
        stream.push(0);
        stream.extend(&a);
        stream.extend(&b);
        let mut d: Deframer<256> = Deframer::new();
        let mut got = Vec::new();
        for &byte in &stream {
            if let Some(r) = d.push(byte) {
                got.push(r.and_then(decode_request).map(|r| r.id));
            }
        }
        assert_eq!(got, [Err(WireError::Oversize { max: 256 }), Ok(1), Ok(2)]);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn to_visit_resolves_titles_like_ingest() {
        let v = summary().to_visit().unwrap();
        assert_eq!(v.diagnoses[0].code, "4280");
        assert_eq!(v.diagnoses[0].title, "Heart failure");
        assert_eq!(v.diagnoses[1].title, "Acute kidney failure");
        assert_eq!(v.diagnoses[2].title, "Made-up title");
        assert_eq!(v.procedures[0].title, "Extracorporeal circulat");
        assert_eq!(v.procedures[1].title, "9904");
        assert_eq!(v.medications, ["Furosemide", "Sodium Chloride 0.9%  Flush"]);
        assert_eq!(VisitSummary::from_visit(&v).unwrap().to_visit().unwrap(), v);
        // Title tables fill only what the wire left empty.
        let table = |c: &str| (c == "9904" || c == "0000").then(|| alloc::string::String::from("From table"));
        let t = summary().to_visit_with(table, table).unwrap();
        assert_eq!(t.procedures[1].title, "From table");
        assert_eq!(t.procedures[0].title, "Extracorporeal circulat");
        assert_eq!(t.diagnoses[2].title, "Made-up title");
        assert_eq!(t.diagnoses[0].title, "Heart failure");
        let mut s = VisitSummary::default();
        s.push_diagnosis("0000", "").unwrap();
        assert_eq!(s.to_visit_with(table, |_| None).unwrap().diagnoses[0].title, "From table");
        let mut bad = summary();
        bad.push_procedure(" . ", "x").unwrap();
        let e = bad.to_visit().unwrap_err();
        assert_eq!(e, WireError::InvalidItem { item: Item::Procedure, index: 2, what: "empty code" });
        assert_eq!(e.reply(), Reply::Error { code: ErrorCode::InvalidItem, detail: 2 * 256 + 2 });
    }
}
