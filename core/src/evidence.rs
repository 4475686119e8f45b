//! Attention evidence shared by the teacher and the student, and its tokenizer-agnostic
//! aggregation.
//!
//! The teacher (a Qwen2 LLM, byte-level BPE) and the student (BERT, WordPiece) tokenize the same
//! input text differently, so token-level attention cannot be compared directly. Both sides
//! instead map token attention onto *units* defined on the text itself, by UTF-8 byte spans:
//!
//! | granularity | units                                                          |
//! |-------------|----------------------------------------------------------------|
//! | word        | [`word_spans`] of the text                                     |
//! | concept     | `Rendered::concepts` ([`crate::visit::render`] / [`crate::visit::parse_spans`]) |
//! | field       | `Rendered::fields` (diagnoses, medications, procedures, knowledge) |
//!
//! Tokenizers report byte offsets `(start, end)` per token; special tokens have empty spans.
//!
//! **Aggregation rule.** A token `t` with span `[a_t, b_t)` and weight `w_t` gives unit `u` with
//! span `[c_u, d_u)` the weight `w_t · M[t, u]` where
//!
//! ```text
//! M[t, u] = |[a_t, b_t) ∩ [c_u, d_u)| / (b_t − a_t)        (0 for empty token spans)
//! ```
//!
//! i.e. the fraction of the token's bytes that lie in the unit. A token straddling two units
//! splits its weight; the bytes of a token that lie in no unit (whitespace, layout prefixes)
//! carry their share of its weight nowhere. Hence, when weights are uniform per byte, the unit
//! distribution is the same whatever the tokenization (tested below). The unit distribution is
//! `r = w · M` normalized to sum 1 ([`aggregate`]). The student side computes the same thing
//! as a differentiable tensor product `a · M` with [`alignment`].
//!
//! **Empty evidence.** When no weight reaches any unit (all weights zero, or no token overlaps a
//! unit), [`aggregate`] returns all zeros rather than inventing a uniform distribution. Such a
//! vector is "no evidence": [`EvidenceFile::validate`] rejects records carrying one, and the
//! trainer's KL term treats a zero teacher row as contributing nothing.
//!
//! Units of one granularity never overlap, so the rows of `M` sum to at most 1. The functions
//! here do not require it; with overlapping units a token's weight is counted once per unit.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use sha2::{Digest, Sha256};

use crate::format::{decode, encode, hex, FormatError};
use crate::labels::NUM_LABELS;
use crate::visit::{Rendered, Sample};

/// Number of fields (the field granularity always has this many units).
pub const NUM_FIELDS: usize = 4;

/// Largest allowed `|Σ − 1|` of a stored distribution (f32 sums over a few hundred units).
pub const SUM_TOLERANCE: f32 = 1e-3;

/// Granularity of attention evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Granularity {
    /// Words of the text ([`word_spans`]).
    Word,
    /// Concepts: one diagnosis, drug, procedure or knowledge clause each.
    Concept,
    /// The four fields.
    Field,
}

impl Granularity {
    /// All granularities, finest first.
    pub const ALL: [Granularity; 3] = [Granularity::Word, Granularity::Concept, Granularity::Field];

    /// Lower-case name (`word`, `concept`, `field`).
    pub fn name(&self) -> &'static str {
        match self {
            Granularity::Word => "word",
            Granularity::Concept => "concept",
            Granularity::Field => "field",
        }
    }
}

impl core::fmt::Display for Granularity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Byte spans of the words of `text`.
///
/// Segmentation rule (deterministic, independent of any tokenizer): a word is either a maximal
/// run of alphanumeric characters ([`char::is_alphanumeric`], Unicode), or a single character that
/// is neither alphanumeric nor whitespace (punctuation and symbols: `,` `.` `%` `-` `(` ...).
/// Whitespace ([`char::is_whitespace`]) separates words and belongs to none.
///
/// This is BERT's basic pre-tokenization (split on whitespace, then split off every punctuation
/// character), so a WordPiece token never straddles two words; BPE tokens that carry a leading
/// space (`" Heart"`) lose the space's share of their weight, as the module docs describe.
///
/// Example: `"Sodium Chloride 0.9%"` gives `Sodium`, `Chloride`, `0`, `.`, `9`, `%`.
pub fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut run: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() {
            if run.is_none() {
                run = Some(i);
            }
            continue;
        }
        if let Some(s) = run.take() {
            out.push((s, i));
        }
        if !c.is_whitespace() {
            out.push((i, i + c.len_utf8()));
        }
    }
    if let Some(s) = run {
        out.push((s, text.len()));
    }
    out
}

/// Unit spans of one granularity for a rendered (or parsed) text.
pub fn unit_spans(rendered: &Rendered, granularity: Granularity) -> Vec<(usize, usize)> {
    match granularity {
        Granularity::Word => word_spans(&rendered.text),
        Granularity::Concept => rendered.concepts.iter().map(|c| (c.start, c.end)).collect(),
        Granularity::Field => rendered.fields.to_vec(),
    }
}

/// Bytes shared by two half-open spans.
fn overlap(a: (usize, usize), b: (usize, usize)) -> usize {
    let lo = if a.0 > b.0 { a.0 } else { b.0 };
    let hi = if a.1 < b.1 { a.1 } else { b.1 };
    hi.saturating_sub(lo)
}

/// Alignment matrix between tokens and units, row-major `[T, U]`
/// (`T = token_spans.len()`, `U = unit_spans.len()`).
///
/// `M[t, u] = |token_t ∩ unit_u| / |token_t|` in bytes (see the module docs); rows of tokens
/// with empty spans (special tokens, padding) are zero. With non-overlapping units every row sums
/// to at most 1. The student loss computes its unit distribution as `normalize(a · M)`.
pub fn alignment(token_spans: &[(usize, usize)], unit_spans: &[(usize, usize)]) -> Vec<f32> {
    let u_len = unit_spans.len();
    let mut m = vec![0f32; token_spans.len() * u_len];
    for (t, &ts) in token_spans.iter().enumerate() {
        let len = ts.1.saturating_sub(ts.0);
        if len == 0 {
            continue;
        }
        let row = &mut m[t * u_len..(t + 1) * u_len];
        for (u, &us) in unit_spans.iter().enumerate() {
            let o = overlap(ts, us);
            if o > 0 {
                row[u] = o as f32 / len as f32;
            }
        }
    }
    m
}

/// Distributes token weights onto units and normalizes: `r_u = Σ_t w_t · M[t, u]`, returned as
/// `r / Σ_u r_u` (length `U = unit_spans.len()`).
///
/// Tokens with empty spans and tokens outside all units contribute nothing; a token straddling
/// several units splits its weight by byte overlap ([`alignment`]). Negative or non-finite weights
/// are treated as 0. Returns all zeros when no weight reaches a unit (see "Empty evidence" in the
/// module docs). Tokens beyond `token_weights.len()` (or weights beyond `token_spans.len()`) are
/// ignored.
pub fn aggregate(token_spans: &[(usize, usize)], token_weights: &[f32], unit_spans: &[(usize, usize)]) -> Vec<f32> {
    let mut r = vec![0f32; unit_spans.len()];
    for (&ts, &w) in token_spans.iter().zip(token_weights) {
        let len = ts.1.saturating_sub(ts.0);
        if len == 0 || !w.is_finite() || w <= 0.0 {
            continue;
        }
        for (u, &us) in unit_spans.iter().enumerate() {
            let o = overlap(ts, us);
            if o > 0 {
                r[u] += w * (o as f32 / len as f32);
            }
        }
    }
    normalize(&mut r);
    r
}

/// Normalizes in place to sum 1; leaves an all-zero (or non-positive-sum) vector as zeros.
fn normalize(r: &mut [f32]) {
    let s: f32 = r.iter().sum();
    if s > 0.0 && s.is_finite() {
        for x in r.iter_mut() {
            *x /= s;
        }
    } else {
        r.iter_mut().for_each(|x| *x = 0.0);
    }
}

/// Identity of the teacher that produced an evidence file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherIdentity {
    /// Model name (e.g. `Qwen2.5-Coder-0.5B-Instruct`).
    pub model: String,
    /// Hash (hex) of the teacher's model configuration.
    pub config_hash: String,
    /// Hash (hex) of the LoRA adapter and head weights, when fine-tuned.
    pub adapter_hash: Option<String>,
    /// Temperature the attention / probabilities were taken at.
    pub temperature: f32,
    /// Number of final layers averaged for the attention evidence.
    pub last_k_layers: u32,
}

/// Teacher outputs for one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleEvidence {
    /// Sample id ([`crate::visit::Sample::id`]).
    pub id: String,
    /// Teacher sigmoid probabilities, [`NUM_LABELS`] of them, in label order.
    pub probs: Vec<f32>,
    /// Word distribution, indexed like [`word_spans`] of the sample's text; sums to 1.
    pub words: Vec<f32>,
    /// Concept distribution, indexed like `Rendered::concepts` of the sample's text; sums to 1
    /// (empty when the text has no concepts).
    pub concepts: Vec<f32>,
    /// Field distribution, indexed by [`crate::visit::Field::index`]; sums to 1.
    pub fields: [f32; NUM_FIELDS],
}

impl SampleEvidence {
    /// Builds a record from one teacher forward pass: token byte spans (into `rendered.text`)
    /// and token weights (attention of the prediction position, averaged over heads and the last
    /// K layers), aggregated per granularity with [`aggregate`].
    pub fn from_tokens(
        id: String,
        probs: Vec<f32>,
        rendered: &Rendered,
        token_spans: &[(usize, usize)],
        token_weights: &[f32],
    ) -> Self {
        let words = aggregate(token_spans, token_weights, &unit_spans(rendered, Granularity::Word));
        let concepts = aggregate(token_spans, token_weights, &unit_spans(rendered, Granularity::Concept));
        let f = aggregate(token_spans, token_weights, &rendered.fields);
        let mut fields = [0f32; NUM_FIELDS];
        fields.copy_from_slice(&f);
        SampleEvidence { id, probs, words, concepts, fields }
    }

    /// The distribution of one granularity.
    pub fn distribution(&self, granularity: Granularity) -> &[f32] {
        match granularity {
            Granularity::Word => &self.words,
            Granularity::Concept => &self.concepts,
            Granularity::Field => &self.fields,
        }
    }

    /// Checks probabilities (count, range) and distributions (finite, non-negative, sum 1 within
    /// [`SUM_TOLERANCE`]; an empty distribution is allowed, an all-zero non-empty one is not).
    pub fn validate(&self) -> Result<(), EvidenceError> {
        let err = |problem| Err(EvidenceError { id: self.id.clone(), problem });
        if self.probs.len() != NUM_LABELS {
            return err(Problem::ProbsLen { got: self.probs.len() });
        }
        for (i, &p) in self.probs.iter().enumerate() {
            if !(0.0..=1.0).contains(&p) {
                return err(Problem::ProbOutOfRange { label: i, value: p });
            }
        }
        for g in Granularity::ALL {
            let d = self.distribution(g);
            if d.is_empty() {
                continue;
            }
            for (i, &x) in d.iter().enumerate() {
                if !x.is_finite() || x < 0.0 {
                    return err(Problem::BadWeight { granularity: g, unit: i, value: x });
                }
            }
            let s: f32 = d.iter().sum();
            let dev = if s > 1.0 { s - 1.0 } else { 1.0 - s };
            if dev > SUM_TOLERANCE {
                return err(Problem::NotNormalized { granularity: g, sum: s });
            }
        }
        Ok(())
    }

    /// Checks that the distributions index the given numbers of words and concepts (those of
    /// [`word_spans`] and `Rendered::concepts` of the sample's text).
    pub fn check_units(&self, n_words: usize, n_concepts: usize) -> Result<(), EvidenceError> {
        let e = |granularity, expected, got| EvidenceError {
            id: self.id.clone(),
            problem: Problem::UnitCount { granularity, expected, got },
        };
        if self.words.len() != n_words {
            return Err(e(Granularity::Word, n_words, self.words.len()));
        }
        if self.concepts.len() != n_concepts {
            return Err(e(Granularity::Concept, n_concepts, self.concepts.len()));
        }
        Ok(())
    }
}

/// What is wrong with an evidence record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    /// Not [`NUM_LABELS`] probabilities.
    #[error("{got} probabilities, expected {NUM_LABELS}")]
    ProbsLen {
        /// Number present.
        got: usize,
    },
    /// A probability outside `[0, 1]` (or NaN).
    #[error("probability of label {label} is {value}, outside [0, 1]")]
    ProbOutOfRange {
        /// Label index.
        label: usize,
        /// Value found.
        value: f32,
    },
    /// A negative or non-finite distribution weight.
    #[error("{granularity} weight of unit {unit} is {value}")]
    BadWeight {
        /// Granularity of the distribution.
        granularity: Granularity,
        /// Unit index.
        unit: usize,
        /// Value found.
        value: f32,
    },
    /// A distribution that does not sum to 1.
    #[error("{granularity} distribution sums to {sum}, not 1")]
    NotNormalized {
        /// Granularity of the distribution.
        granularity: Granularity,
        /// Its sum.
        sum: f32,
    },
    /// A distribution over the wrong number of units for the sample's text.
    #[error("{granularity} distribution has {got} units, the text has {expected}")]
    UnitCount {
        /// Granularity of the distribution.
        granularity: Granularity,
        /// Units in the text.
        expected: usize,
        /// Units in the record.
        got: usize,
    },
    /// The same sample id appears twice in a file.
    #[error("duplicate record id")]
    DuplicateId,
    /// The teacher identity or shard is invalid.
    #[error("invalid file header: {0}")]
    Header(&'static str),
}

/// An invalid evidence record: which record, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("evidence record {id:?}: {problem}")]
pub struct EvidenceError {
    /// Sample id of the record (empty for file-level problems).
    pub id: String,
    /// What is wrong.
    pub problem: Problem,
}

/// Magic of the evidence file.
pub const EVIDENCE_MAGIC: &[u8; 8] = b"CKDEVIDN";
/// Version of the evidence file written by this build (version 1, without [`DataIdentity`],
/// is still read).
pub const EVIDENCE_VERSION: u16 = 2;

/// Identity of the samples a labelling run was given (all of them, before sharding): the same
/// samples give the same identity whatever their order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataIdentity {
    /// Number of samples.
    pub samples: u64,
    /// SHA-256 (hex) over the sorted per-sample SHA-256 of id, split and model input text.
    pub hash: String,
}

impl DataIdentity {
    /// Identity of `samples`.
    pub fn of(samples: &[Sample]) -> Self {
        let mut each: Vec<[u8; 32]> = samples
            .iter()
            .map(|s| {
                let mut h = Sha256::new();
                for part in [s.id.as_bytes(), s.split.name().as_bytes(), s.text().as_bytes()] {
                    h.update((part.len() as u64).to_le_bytes());
                    h.update(part);
                }
                h.finalize().into()
            })
            .collect();
        each.sort_unstable();
        let mut h = Sha256::new();
        each.iter().for_each(|d| h.update(d));
        Self { samples: samples.len() as u64, hash: hex(&h.finalize()) }
    }

    /// `N samples, hash <first 12 hex digits>`, for messages.
    pub fn short(&self) -> String {
        alloc::format!("{} samples, hash {}", self.samples, &self.hash[..self.hash.len().min(12)])
    }
}

/// Contents of an evidence file: teacher soft labels and attention evidence for many samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceFile {
    /// Teacher that produced the records.
    pub teacher: TeacherIdentity,
    /// `(index, count)` when the file is one shard of a sharded run (`index < count`).
    pub shard: Option<(u32, u32)>,
    /// One record per sample.
    pub records: Vec<SampleEvidence>,
    /// Samples the run was given (`None` in a version-1 file, which did not record them).
    pub data: Option<DataIdentity>,
}

/// Payload of a version-1 evidence file.
#[derive(Deserialize)]
struct EvidenceFileV1 {
    teacher: TeacherIdentity,
    shard: Option<(u32, u32)>,
    records: Vec<SampleEvidence>,
}

impl EvidenceFile {
    /// Encodes into an envelope ([`crate::format`]) of [`EVIDENCE_VERSION`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        encode(EVIDENCE_MAGIC, EVIDENCE_VERSION, self)
    }

    /// Decodes and checks an envelope of version 2 or 1 (then `data` is `None`); the records'
    /// contents are checked by [`Self::validate`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FormatError> {
        match decode(bytes, EVIDENCE_MAGIC, EVIDENCE_VERSION) {
            Err(FormatError::Version { found: 1, .. }) => {
                let v1: EvidenceFileV1 = decode(bytes, EVIDENCE_MAGIC, 1)?;
                Ok(Self { teacher: v1.teacher, shard: v1.shard, records: v1.records, data: None })
            }
            other => other,
        }
    }

    /// Checks the header (temperature finite and > 0, shard index < count), every record
    /// ([`SampleEvidence::validate`]) and that ids are unique. Returns the first problem found.
    pub fn validate(&self) -> Result<(), EvidenceError> {
        let header = |msg| Err(EvidenceError { id: String::new(), problem: Problem::Header(msg) });
        let t = self.teacher.temperature;
        if !(t.is_finite() && t > 0.0) {
            return header("teacher temperature must be finite and > 0");
        }
        if let Some((i, n)) = self.shard {
            if i >= n {
                return header("shard index must be < shard count");
            }
        }
        let mut seen = BTreeMap::new();
        for r in &self.records {
            r.validate()?;
            if seen.insert(r.id.as_str(), ()).is_some() {
                return Err(EvidenceError { id: r.id.clone(), problem: Problem::DuplicateId });
            }
        }
        Ok(())
    }

    /// Records by sample id.
    pub fn by_id(&self) -> BTreeMap<&str, &SampleEvidence> {
        self.records.iter().map(|r| (r.id.as_str(), r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::visit::{parse_spans, render, Coded, Visit};
    use alloc::string::ToString;

    const TOL: f32 = 1e-6;

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
        }
    }

    fn words(text: &str) -> Vec<&str> {
        word_spans(text).into_iter().map(|(s, e)| &text[s..e]).collect()
    }

    #[test]
    fn word_segmentation() {
        assert_eq!(words("Sodium Chloride 0.9%  Flush"), ["Sodium", "Chloride", "0", ".", "9", "%", "Flush"]);
        assert_eq!(
            words("The patient-acquired disease is None."),
            ["The", "patient", "-", "acquired", "disease", "is", "None", "."]
        );
        assert_eq!(words(""), Vec::<&str>::new());
        assert_eq!(words("  \t "), Vec::<&str>::new());
        // Non-ASCII: alphanumerics join (é, ß), symbols stand alone (µ is alphanumeric, ° is not).
        assert_eq!(words("Café 5µg °C"), ["Café", "5µg", "°", "C"]);
        assert_eq!(word_spans("ab, c"), [(0, 2), (2, 3), (4, 5)]);
    }

    #[test]
    fn alignment_hand_computed() {
        // Units: "abcd" [0,4), "efgh" [5,9). Tokens: "ab" [0,2) -> all in u0; "cd ef" [2,7):
        // 2 bytes in u0, 2 in u1, 1 (space) nowhere -> 2/5, 2/5; special [0,0) -> zero row;
        // "x" [9,10) outside all units -> zero row.
        let units = [(0, 4), (5, 9)];
        let toks = [(0, 2), (2, 7), (0, 0), (9, 10)];
        let m = alignment(&toks, &units);
        close(&m, &[1.0, 0.0, 0.4, 0.4, 0.0, 0.0, 0.0, 0.0], TOL);
        // Weights 0.5, 0.25, 0.2 (special), 0.05 (outside):
        // r0 = 0.5 + 0.25*0.4 = 0.6, r1 = 0.25*0.4 = 0.1 -> normalized 6/7, 1/7.
        let a = aggregate(&toks, &[0.5, 0.25, 0.2, 0.05], &units);
        close(&a, &[6.0 / 7.0, 1.0 / 7.0], TOL);
    }

    #[test]
    fn aggregate_edge_cases() {
        let units = [(0, 4), (5, 9)];
        // All weight on special / outside tokens -> no evidence -> zeros.
        assert_eq!(aggregate(&[(0, 0), (9, 10)], &[0.7, 0.3], &units), [0.0, 0.0]);
        assert_eq!(aggregate(&[], &[], &units), [0.0, 0.0]);
        assert_eq!(aggregate(&[(0, 4)], &[1.0], &[]), Vec::<f32>::new());
        // Negative and NaN weights count as 0.
        close(&aggregate(&[(0, 4), (5, 9), (5, 9)], &[1.0, -3.0, f32::NAN], &units), &[1.0, 0.0], TOL);
        // A token covering both units whole: split 4/9 and 4/9 -> 1/2 each after normalization.
        close(&aggregate(&[(0, 9)], &[1.0], &units), &[0.5, 0.5], TOL);
    }

    /// Deterministic xorshift64* for the property test (no test dependencies in core).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Random tokenization of `text`: cuts at random char boundaries, some special tokens with
    /// empty spans interleaved, some bytes skipped entirely (untokenized whitespace).
    fn random_tokens(text: &str, rng: &mut Rng) -> Vec<(usize, usize)> {
        let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
        let mut toks = vec![(0, 0)];
        let mut i = 0;
        while i + 1 < bounds.len() {
            let j = (i + 1 + rng.below(6)).min(bounds.len() - 1);
            toks.push((bounds[i], bounds[j]));
            if rng.below(7) == 0 {
                toks.push((bounds[j], bounds[j]));
            }
            i = j;
        }
        toks.push((text.len(), text.len()));
        toks
    }

    #[test]
    fn property_tokenization_invariance() {
        let visit = Visit {
            diagnoses: vec![
                Coded { code: "4280".into(), title: "Heart failure".into() },
                Coded { code: "5849".into(), title: "Acute kidney failure".into() },
            ],
            medications: vec!["Furosemide".into(), "Sodium Chloride 0.9%  Flush".into(), "Café µg".into()],
            procedures: vec![Coded { code: "3893".into(), title: "Venous cath NEC".into() }],
        };
        let k = vec![crate::knowledge::Clause { phenotype: 8, drugs: vec!["Furosemide".into()] }];
        let r = render(&visit, &k);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for g in Granularity::ALL {
            let units = unit_spans(&r, g);
            // Reference: one token per byte, each of weight 1 (uniform per byte).
            let bytes: Vec<(usize, usize)> = (0..r.text.len()).map(|i| (i, i + 1)).collect();
            let reference = aggregate(&bytes, &vec![1.0; bytes.len()], &units);
            let s: f32 = reference.iter().sum();
            assert!((s - 1.0).abs() < 1e-5);
            for _ in 0..50 {
                let toks = random_tokens(&r.text, &mut rng);
                // Weight uniform per byte: a token's weight is its byte length (special tokens 0
                // here; any weight on them must be ignored, so give them some).
                let w: Vec<f32> = toks.iter().map(|&(s, e)| if e > s { (e - s) as f32 } else { 3.0 }).collect();
                close(&aggregate(&toks, &w, &units), &reference, 1e-5);
            }
        }
    }

    #[test]
    fn alignment_matches_aggregate() {
        let text = "The patient-acquired disease is Heart failure. x";
        let units = word_spans(text);
        let mut rng = Rng(42);
        let toks = random_tokens(text, &mut rng);
        let w: Vec<f32> = (0..toks.len()).map(|_| (rng.below(100) + 1) as f32).collect();
        let m = alignment(&toks, &units);
        let u = units.len();
        let mut r = vec![0f32; u];
        for (t, wt) in w.iter().enumerate() {
            let row = &m[t * u..(t + 1) * u];
            assert!(row.iter().sum::<f32>() <= 1.0 + 1e-6);
            for (ru, mu) in r.iter_mut().zip(row) {
                *ru += wt * mu;
            }
        }
        normalize(&mut r);
        close(&r, &aggregate(&toks, &w, &units), 1e-6);
    }

    fn record() -> SampleEvidence {
        let r = parse_spans(
            "The patient-acquired disease is Heart failure. The patient had used the following medication: \
             Furosemide, Heparin. The surgical operation performed by the patient: None. None.",
        )
        .expect("layout");
        let ws = word_spans(&r.text);
        // Teacher "tokens" = words, weights 1, 2, 3, ...
        let w: Vec<f32> = (1..=ws.len()).map(|i| i as f32).collect();
        SampleEvidence::from_tokens("1-2-3".to_string(), vec![0.25; NUM_LABELS], &r, &ws, &w)
    }

    #[test]
    fn from_tokens_fields_and_concepts() {
        let e = record();
        assert_eq!(e.validate(), Ok(()));
        assert_eq!(e.concepts.len(), 3);
        let r = parse_spans(
            "The patient-acquired disease is Heart failure. The patient had used the following medication: \
             Furosemide, Heparin. The surgical operation performed by the patient: None. None.",
        )
        .expect("layout");
        assert_eq!(e.check_units(word_spans(&r.text).len(), r.concepts.len()), Ok(()));
        // Words 0..: The patient - acquired disease is Heart failure . The patient had used the
        // following medication : Furosemide , Heparin . The surgical operation performed by the
        // patient : None . None .  -> weights 1-based by index.
        // Concepts: Heart(7) + failure(8) = 15; Furosemide = 18; Heparin = 20. Sum 53.
        close(&e.concepts, &[15.0 / 53.0, 18.0 / 53.0, 20.0 / 53.0], TOL);
        // Fields: dx 15; meds 18 + 19 (",") + 20 = 57; procs "None" (word 29) = 30; knowledge
        // "None" (word 31) = 32.
        let tot = 15.0 + 57.0 + 30.0 + 32.0;
        close(&e.fields, &[15.0 / tot, 57.0 / tot, 30.0 / tot, 32.0 / tot], TOL);
    }

    fn file() -> EvidenceFile {
        EvidenceFile {
            teacher: TeacherIdentity {
                model: "Qwen2.5-Coder-0.5B-Instruct".into(),
                config_hash: "abc123".into(),
                adapter_hash: Some("def456".into()),
                temperature: 1.0,
                last_k_layers: 4,
            },
            shard: Some((0, 2)),
            records: vec![record()],
            data: Some(DataIdentity { samples: 1, hash: "00ff".into() }),
        }
    }

    #[test]
    fn file_roundtrip() {
        let f = file();
        assert_eq!(f.validate(), Ok(()));
        let b = f.to_bytes().unwrap();
        assert_eq!(&b[..8], EVIDENCE_MAGIC);
        assert_eq!(EvidenceFile::from_bytes(&b).unwrap(), f);
        assert!(matches!(crate::format::SampleFile::from_bytes(&b), Err(FormatError::Magic { .. })));
        assert_eq!(f.by_id().get("1-2-3").map(|r| r.id.as_str()), Some("1-2-3"));
    }

    #[test]
    fn version_1_file_reads_without_data_identity() {
        #[derive(Serialize)]
        struct V1<'a> {
            teacher: &'a TeacherIdentity,
            shard: Option<(u32, u32)>,
            records: &'a [SampleEvidence],
        }
        let f = file();
        let b = encode(EVIDENCE_MAGIC, 1, &V1 { teacher: &f.teacher, shard: f.shard, records: &f.records }).unwrap();
        assert_eq!(EvidenceFile::from_bytes(&b).unwrap(), EvidenceFile { data: None, ..f });
        let b3 = crate::format::encode_envelope(EVIDENCE_MAGIC, 3, b"");
        assert_eq!(EvidenceFile::from_bytes(&b3), Err(FormatError::Version { found: 3, supported: 2 }));
    }

    #[test]
    fn data_identity_names_the_samples_not_their_order() {
        use crate::visit::{Coded, Split, Visit};
        let sample = |id: &str, split: Split, title: &str| Sample {
            id: id.into(),
            subject: 1,
            split,
            visit: Visit {
                diagnoses: vec![Coded { code: "4280".into(), title: title.into() }],
                medications: vec![],
                procedures: vec![],
            },
            knowledge: vec![],
            labels: crate::LabelSet::from_labels([8]),
            raw: None,
        };
        let a = sample("1-2-3", Split::Train, "Heart failure");
        let b = sample("4-5-6", Split::Train, "Heart failure");
        let id = DataIdentity::of(&[a.clone(), b.clone()]);
        assert_eq!(id, DataIdentity::of(&[b.clone(), a.clone()]));
        assert_eq!(id.samples, 2);
        assert_ne!(id, DataIdentity::of(core::slice::from_ref(&a)));
        // Same ids, another split or another text: another identity.
        assert_ne!(id, DataIdentity::of(&[a.clone(), sample("4-5-6", Split::Test, "Heart failure")]));
        assert_ne!(id, DataIdentity::of(&[a, sample("4-5-6", Split::Train, "Asthma")]));
    }

    #[test]
    fn validate_names_record_and_problem() {
        let bad = |f: &dyn Fn(&mut SampleEvidence)| {
            let mut e = record();
            e.id = "9-9-9".into();
            f(&mut e);
            let err = e.validate().unwrap_err();
            assert_eq!(err.id, "9-9-9");
            err.problem
        };
        assert_eq!(
            bad(&|e| {
                e.probs.pop();
            }),
            Problem::ProbsLen { got: 24 }
        );
        assert_eq!(bad(&|e| e.probs[3] = 1.5), Problem::ProbOutOfRange { label: 3, value: 1.5 });
        assert!(matches!(bad(&|e| e.probs[0] = f32::NAN), Problem::ProbOutOfRange { label: 0, .. }));
        assert_eq!(
            bad(&|e| e.fields = [0.5, 0.5, 0.5, 0.0]),
            Problem::NotNormalized { granularity: Granularity::Field, sum: 1.5 }
        );
        assert!(matches!(
            bad(&|e| e.words.iter_mut().for_each(|x| *x = 0.0)),
            Problem::NotNormalized { granularity: Granularity::Word, .. }
        ));
        assert_eq!(
            bad(&|e| e.concepts[1] = -0.1),
            Problem::BadWeight { granularity: Granularity::Concept, unit: 1, value: -0.1 }
        );
        // Empty concept list is fine (a text without concepts).
        let mut e = record();
        e.concepts.clear();
        assert_eq!(e.validate(), Ok(()));
        assert_eq!(
            e.check_units(e.words.len(), 3).unwrap_err().problem,
            Problem::UnitCount { granularity: Granularity::Concept, expected: 3, got: 0 }
        );
        let msg = alloc::format!("{}", bad(&|e| e.probs[3] = 1.5));
        assert!(msg.contains("label 3"), "{msg}");

        let mut f = file();
        f.records.push(record());
        assert_eq!(f.validate().unwrap_err(), EvidenceError { id: "1-2-3".into(), problem: Problem::DuplicateId });
        let mut f = file();
        f.shard = Some((2, 2));
        assert!(matches!(f.validate().unwrap_err().problem, Problem::Header(_)));
        let mut f = file();
        f.teacher.temperature = 0.0;
        assert!(matches!(f.validate().unwrap_err().problem, Problem::Header(_)));
    }
}
