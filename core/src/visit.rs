//! Visits, samples and their text rendering in the CKD-EHR layout.
//!
//! Input text layout (one line, exactly as the CKD-EHR authors wrote it):
//!
//! ```text
//! The patient-acquired disease is {dx1, dx2, ...}. The patient had used the following medication: {m1, m2, ... | None}. The surgical operation performed by the patient: {p1, ... | None}. {K}
//! ```
//!
//! where `K` is `None.` or knowledge clauses joined by `; ` and ending with `.` (see
//! [`crate::knowledge`]). Braces are placeholders, not literal text. Items within a field are
//! joined by `, `; repeated items (several leaf codes of one three-digit category) appear once,
//! in first-seen order.
//!
//! [`render`] also returns the byte span of every concept and field, so that attention evidence
//! can be aggregated per concept and per field whatever the tokenizer (spans are UTF-8 byte
//! offsets into the rendered text; tokenizers report byte offsets too).

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::labels::{Label, LabelSet, PHENOTYPES};

/// A coded fact: an ICD-9 code (normalized, no dots) and the title it is rendered as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coded {
    /// Normalized ICD-9 code (see [`crate::icd::normalize`]); empty when unknown (JSONL input).
    pub code: String,
    /// Rendered title: the three-digit category title for diagnoses, the short title for procedures.
    pub title: String,
}

/// The facts of one hospital visit (admission).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visit {
    /// Diagnoses in SEQ_NUM order.
    pub diagnoses: Vec<Coded>,
    /// Drug names (PRESCRIPTIONS.DRUG), deduplicated in first-seen order.
    pub medications: Vec<String>,
    /// Procedures in SEQ_NUM order.
    pub procedures: Vec<Coded>,
}

impl Visit {
    /// Phenotypes present at this visit according to its diagnosis codes.
    pub fn phenotypes(&self) -> LabelSet {
        crate::icd::phenotypes_of(self.diagnoses.iter().map(|d| d.code.as_str()))
    }
}

/// Which split a sample belongs to. The split is assigned per patient (see [`crate::split`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Split {
    /// Training split: the only one knowledge statistics and training may look at.
    Train,
    /// Validation split: thresholds and early stopping.
    Val,
    /// Test split: reported metrics.
    Test,
}

impl Split {
    /// Lower-case name (`train`, `val`, `test`).
    pub fn name(&self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// A record read from CKD-EHR JSONL, kept verbatim so that writing it back is byte-identical.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRecord {
    /// `instruction` field.
    pub instruction: String,
    /// `input` field (the rendered visit text).
    pub input: String,
    /// `output` field (`Disease that the patient may acquire: ...`).
    pub output: String,
    /// The line exactly as read, with its terminator (see [`crate::jsonl`]).
    pub line: String,
}

/// One next-visit sample: the facts of visit `i` of a patient and the phenotypes of visit `i+1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unique id, `SUBJECT_ID-HADM_ID-NEXT_HADM_ID` for MIMIC-III data.
    pub id: String,
    /// Patient id (SUBJECT_ID); splits never share a subject.
    pub subject: u64,
    /// Split of this sample (assigned per subject).
    pub split: Split,
    /// Facts of visit `i`.
    pub visit: Visit,
    /// Knowledge clauses for visit `i` (computed from the training split only; empty = `None.`).
    pub knowledge: Vec<Clause>,
    /// Label: phenotypes of visit `i+1`.
    pub labels: LabelSet,
    /// The original JSONL record when the sample came from CKD-EHR JSONL; its `input` is then
    /// the sample's text verbatim.
    pub raw: Option<RawRecord>,
}

impl Sample {
    /// The model input text of this sample (the raw JSONL input when present, else [`render`]).
    pub fn text(&self) -> String {
        match &self.raw {
            Some(r) => r.input.clone(),
            None => render(&self.visit, &self.knowledge).text,
        }
    }

    /// The text with its concept and field spans: rendered from the visit, or, for a JSONL
    /// sample, parsed back from its input (`None` when that input is not in the CKD-EHR layout;
    /// an item containing `, ` is then split in two, see [`parse_spans`]). Every user of spans
    /// (teacher evidence, student attention targets) goes through here, so they agree.
    pub fn rendered(&self) -> Option<Rendered> {
        match &self.raw {
            Some(r) => parse_spans(&r.input),
            None => Some(render(&self.visit, &self.knowledge)),
        }
    }
}

/// The four input fields, in text order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Field {
    /// Diagnoses field.
    Diagnoses,
    /// Medications field.
    Medications,
    /// Procedures field.
    Procedures,
    /// Knowledge clauses.
    Knowledge,
}

impl Field {
    /// All fields in text order.
    pub const ALL: [Field; 4] = [Field::Diagnoses, Field::Medications, Field::Procedures, Field::Knowledge];

    /// Index in [`Field::ALL`].
    pub fn index(&self) -> usize {
        *self as usize
    }
}

/// One knowledge clause: a phenotype and the drugs that may treat it (chosen by
/// [`crate::knowledge::KnowledgeTable`]; rendered here, with the rest of the text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clause {
    /// The phenotype present at visit `i`.
    pub phenotype: Label,
    /// Drugs in decreasing order of effect.
    pub drugs: Vec<String>,
}

impl Clause {
    /// Appends `The medications that maybe have therapeutic effect on {short name} are {drugs}`.
    pub fn render_into(&self, out: &mut String) {
        out.push_str("The medications that maybe have therapeutic effect on ");
        out.push_str(PHENOTYPES.get(self.phenotype as usize).map_or("?", |p| p.short));
        out.push_str(" are ");
        for (i, d) in self.drugs.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(d);
        }
    }
}

/// A concept (one diagnosis, drug, procedure or knowledge clause) and where it is in the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConceptSpan {
    /// Field the concept belongs to.
    pub field: Field,
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
}

/// Text of a visit with its concept and field spans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    /// The one-line input text.
    pub text: String,
    /// Concepts in text order.
    pub concepts: Vec<ConceptSpan>,
    /// Byte span of each field's content (the list or `None`), indexed by [`Field::index`].
    pub fields: [(usize, usize); 4],
}

/// Prefix of the diagnoses field.
pub const DX_PREFIX: &str = "The patient-acquired disease is ";
/// Prefix of the medications field (after the diagnoses' `. `).
pub const MED_PREFIX: &str = ". The patient had used the following medication: ";
/// Prefix of the procedures field.
pub const PROC_PREFIX: &str = ". The surgical operation performed by the patient: ";
/// Separator before the knowledge field.
pub const KNOW_PREFIX: &str = ". ";
/// Text of an empty list.
pub const NONE: &str = "None";

/// Renders a visit and its knowledge clauses in the CKD-EHR layout (see the module docs).
pub fn render(visit: &Visit, knowledge: &[Clause]) -> Rendered {
    let mut text = String::with_capacity(256);
    let mut concepts = Vec::new();
    let mut fields = [(0, 0); 4];

    text.push_str(DX_PREFIX);
    let dx = dedup(visit.diagnoses.iter().map(|d| d.title.as_str()));
    fields[0] = push_list(&mut text, &mut concepts, Field::Diagnoses, &dx);
    text.push_str(MED_PREFIX);
    let meds = dedup(visit.medications.iter().map(|m| m.as_str()));
    fields[1] = push_list(&mut text, &mut concepts, Field::Medications, &meds);
    text.push_str(PROC_PREFIX);
    let procs = dedup(visit.procedures.iter().map(|p| p.title.as_str()));
    fields[2] = push_list(&mut text, &mut concepts, Field::Procedures, &procs);
    text.push_str(KNOW_PREFIX);
    let start = text.len();
    if knowledge.is_empty() {
        text.push_str(NONE);
    } else {
        for (i, c) in knowledge.iter().enumerate() {
            if i > 0 {
                text.push_str("; ");
            }
            let s = text.len();
            c.render_into(&mut text);
            concepts.push(ConceptSpan { field: Field::Knowledge, start: s, end: text.len() });
        }
    }
    fields[3] = (start, text.len());
    text.push('.');
    Rendered { text, concepts, fields }
}

fn dedup<'a, I: Iterator<Item = &'a str>>(it: I) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for s in it {
        let s = s.trim();
        if !s.is_empty() && !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

fn push_list(text: &mut String, concepts: &mut Vec<ConceptSpan>, field: Field, items: &[&str]) -> (usize, usize) {
    let start = text.len();
    if items.is_empty() {
        text.push_str(NONE);
    }
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        let s = text.len();
        text.push_str(item);
        concepts.push(ConceptSpan { field, start: s, end: text.len() });
    }
    (start, text.len())
}

/// Recovers field and concept spans from a text in the CKD-EHR layout (for JSONL input, where
/// only the text is known). Items are split on `, ` (clauses on `; `), so an item that itself
/// contains `, ` is split in two: a documented limit of the layout. Returns `None` when the
/// text does not follow the layout.
pub fn parse_spans(text: &str) -> Option<Rendered> {
    let dx_start = DX_PREFIX.len();
    if !text.starts_with(DX_PREFIX) {
        return None;
    }
    let med_at = text.find(MED_PREFIX)?;
    let proc_at = med_at + text[med_at..].find(PROC_PREFIX)?;
    let know_start = proc_at + PROC_PREFIX.len();
    // The procedures list ends at the first ". " after its prefix that precedes the knowledge
    // field; knowledge is the rest without its final '.'.
    let rest = &text[know_start..];
    let k_rel = rest.find(KNOW_PREFIX)?;
    let proc_end = know_start + k_rel;
    let k_start = proc_end + KNOW_PREFIX.len();
    let k_end = text.strip_suffix('.').map(|t| t.len())?;
    if k_end < k_start {
        return None;
    }
    let mut concepts = Vec::new();
    let fields = [
        (dx_start, med_at),
        (med_at + MED_PREFIX.len(), proc_at),
        (proc_at + PROC_PREFIX.len(), proc_end),
        (k_start, k_end),
    ];
    for (fi, &(s, e)) in fields.iter().enumerate() {
        let field = Field::ALL[fi];
        let body = &text[s..e];
        if body == NONE {
            continue;
        }
        let sep = if field == Field::Knowledge { "; " } else { ", " };
        let mut off = s;
        for part in body.split(sep) {
            concepts.push(ConceptSpan { field, start: off, end: off + part.len() });
            off += part.len() + sep.len();
        }
    }
    Some(Rendered { text: String::from(text), concepts, fields })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn coded(code: &str, title: &str) -> Coded {
        Coded { code: code.into(), title: title.into() }
    }

    fn visit() -> Visit {
        Visit {
            diagnoses: vec![
                coded("4280", "Heart failure"),
                coded("4281", "Heart failure"),
                coded("5849", "Acute kidney failure"),
            ],
            medications: vec!["Furosemide".into(), "Sodium Chloride 0.9%  Flush".into()],
            procedures: vec![],
        }
    }

    #[test]
    fn golden_without_knowledge() {
        let r = render(&visit(), &[]);
        assert_eq!(
            r.text,
            "The patient-acquired disease is Heart failure, Acute kidney failure. \
             The patient had used the following medication: Furosemide, Sodium Chloride 0.9%  Flush. \
             The surgical operation performed by the patient: None. None."
        );
        assert_eq!(r.concepts.len(), 4);
        assert_eq!(&r.text[r.concepts[1].start..r.concepts[1].end], "Acute kidney failure");
        assert_eq!(&r.text[r.fields[3].0..r.fields[3].1], "None");
        assert_eq!(&r.text[r.fields[2].0..r.fields[2].1], "None");
    }

    #[test]
    fn golden_with_knowledge() {
        let k = vec![
            Clause { phenotype: 8, drugs: vec!["Furosemide".into(), "Metoprolol Tartrate".into()] },
            Clause { phenotype: 0, drugs: vec!["Sodium Bicarbonate".into()] },
        ];
        let r = render(&visit(), &k);
        assert!(r.text.ends_with(
            "None. The medications that maybe have therapeutic effect on Congestive heart failure are \
             Furosemide, Metoprolol Tartrate; The medications that maybe have therapeutic effect on \
             Acute and unspecified renal failure are Sodium Bicarbonate."
        ));
        let kc: Vec<_> = r.concepts.iter().filter(|c| c.field == Field::Knowledge).collect();
        assert_eq!(kc.len(), 2);
        assert!(r.text[kc[1].start..kc[1].end].starts_with("The medications"));
    }

    #[test]
    fn sample_spans_come_from_the_visit_not_the_text() {
        // A title containing ", " is one concept when rendered; parsing the text back would
        // split it (the teacher's evidence and the student's targets must use the same units).
        let mut v = visit();
        v.diagnoses.push(coded("486", "Pneumonia, organism unspecified"));
        let s = Sample {
            id: "1-2-3".into(),
            subject: 1,
            split: Split::Train,
            visit: v.clone(),
            knowledge: vec![],
            labels: LabelSet::default(),
            raw: None,
        };
        let r = s.rendered().unwrap();
        assert_eq!(r, render(&v, &[]));
        assert_eq!(r.concepts.len(), 5);
        assert_eq!(parse_spans(&r.text).unwrap().concepts.len(), 6);
    }

    #[test]
    fn parse_spans_roundtrips_render() {
        let k = vec![Clause { phenotype: 8, drugs: vec!["Furosemide".into()] }];
        for kn in [vec![], k] {
            let r = render(&visit(), &kn);
            let p = parse_spans(&r.text).expect("layout");
            assert_eq!(p, r);
        }
        assert!(parse_spans("something else").is_none());
    }
}
