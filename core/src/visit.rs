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

/// A coded fact: an ICD-9 code (normalized, no dots) and the title it is rendered as. In JSON
/// either may be left out (read as empty); [`Visit::resolve_titles`] fills an empty title.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coded {
    /// Normalized ICD-9 code (see [`crate::icd::normalize`]); empty when unknown (JSONL input).
    #[serde(default)]
    pub code: String,
    /// Rendered title: the three-digit category title for diagnoses, the short title for procedures.
    #[serde(default)]
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

    /// The visit with codes normalized and every title as `ckd ingest` renders MIMIC-III (and
    /// the bedside monitor a wire visit): a diagnosis takes its code's ICD-9 category title,
    /// else its own title, else its bare code; a procedure its own title, else its bare code.
    /// Returns the items rendered as a bare code (no title given and none known here). An item
    /// with neither code nor title, or an empty drug name, is an error naming the item (it
    /// would otherwise vanish from the text). Resolving a resolved visit changes nothing.
    pub fn resolve_titles(&self) -> Result<(Visit, Vec<BareCode>), EmptyItem> {
        let mut bare = Vec::new();
        let mut resolve = |field: &'static str, items: &[Coded]| {
            let mut out = Vec::with_capacity(items.len());
            for (index, c) in items.iter().enumerate() {
                let code = crate::icd::normalize(&c.code).unwrap_or_default();
                let category = match field {
                    "diagnoses" => crate::icd::category_of(&code).and_then(crate::icd::category_title),
                    _ => None,
                };
                let title = match (category, c.title.trim()) {
                    (Some(t), _) => String::from(t),
                    (None, t) if !t.is_empty() => String::from(t),
                    (None, _) if !code.is_empty() => {
                        bare.push(BareCode { item: alloc::format!("{field}[{index}]"), code: code.clone() });
                        code.clone()
                    }
                    (None, _) => return Err(EmptyItem { field, index, what: "neither a code nor a title" }),
                };
                out.push(Coded { code, title });
            }
            Ok(out)
        };
        let diagnoses = resolve("diagnoses", &self.diagnoses)?;
        let procedures = resolve("procedures", &self.procedures)?;
        if let Some(index) = self.medications.iter().position(|m| m.trim().is_empty()) {
            return Err(EmptyItem { field: "medications", index, what: "an empty drug name" });
        }
        Ok((Visit { diagnoses, medications: self.medications.clone(), procedures }, bare))
    }
}

/// A coded item rendered as its bare code: no title was given and none is known for the code
/// (a diagnosis whose code has no ICD-9 category title, a procedure without a title).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BareCode {
    /// The item, as `diagnoses[0]` or `procedures[2]` (0-based).
    pub item: String,
    /// Its normalized code.
    pub code: String,
}

/// A visit item that would vanish from the rendered text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}[{index}]: {what}")]
pub struct EmptyItem {
    /// `diagnoses`, `medications` or `procedures`.
    pub field: &'static str,
    /// 0-based index in the field.
    pub index: usize,
    /// What is missing.
    pub what: &'static str,
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

/// The opening words of every knowledge clause.
pub const CLAUSE_OPENING: &str = "The medications that maybe have therapeutic effect on ";

/// What separates two knowledge clauses: `; ` and the next clause's opening words.
const CLAUSE_SEPARATOR: &str = "; The medications that maybe have therapeutic effect on ";

impl Clause {
    /// Appends `The medications that maybe have therapeutic effect on {short name} are {drugs}`.
    pub fn render_into(&self, out: &mut String) {
        out.push_str(CLAUSE_OPENING);
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
    let dx = dedup(visit.diagnoses.iter().map(|d| d.title.as_str()));
    let meds = dedup(visit.medications.iter().map(|m| m.as_str()));
    let procs = dedup(visit.procedures.iter().map(|p| p.title.as_str()));
    let clauses: Vec<String> = knowledge
        .iter()
        .map(|c| {
            let mut s = String::new();
            c.render_into(&mut s);
            s
        })
        .collect();
    let know: Vec<&str> = clauses.iter().map(String::as_str).collect();
    render_lists([&dx, &meds, &procs, &know])
}

/// The text before each field's list, indexed by [`Field::index`].
const FIELD_PREFIXES: [&str; 4] = [DX_PREFIX, MED_PREFIX, PROC_PREFIX, KNOW_PREFIX];

/// The layout of the module docs from each field's items (already deduplicated and trimmed),
/// indexed by [`Field::index`]: items joined by `, ` (knowledge clauses by `; `), an empty list
/// as `None`, a final `.`.
fn render_lists(lists: [&[&str]; 4]) -> Rendered {
    let mut text = String::with_capacity(256);
    let mut concepts = Vec::new();
    let mut fields = [(0, 0); 4];
    for (fi, field) in Field::ALL.into_iter().enumerate() {
        text.push_str(FIELD_PREFIXES[fi]);
        fields[fi] = push_list(&mut text, &mut concepts, field, lists[fi]);
    }
    text.push('.');
    Rendered { text, concepts, fields }
}

impl Rendered {
    /// The text of concept `i` (`None` when there is no such concept).
    pub fn concept_text(&self, i: usize) -> Option<&str> {
        self.concepts.get(i).and_then(|c| self.text.get(c.start..c.end))
    }

    /// The same visit with concept `i` left out, re-rendered in the layout (its field reads
    /// `None` when it was the field's only item); every other concept, knowledge clauses
    /// included, stays as it was. `None` when there is no concept `i`. This is the occlusion
    /// of one concept: the teacher's evidence, the student's attention targets and the edge
    /// runtime's explanations all count concepts by these spans.
    pub fn without(&self, i: usize) -> Option<Rendered> {
        if i >= self.concepts.len() {
            return None;
        }
        let mut lists: [Vec<&str>; 4] = Default::default();
        for (j, c) in self.concepts.iter().enumerate() {
            if j != i {
                lists[c.field.index()].push(self.text.get(c.start..c.end)?);
            }
        }
        Some(render_lists([&lists[0], &lists[1], &lists[2], &lists[3]]))
    }
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
    let sep = if field == Field::Knowledge { "; " } else { ", " };
    let start = text.len();
    if items.is_empty() {
        text.push_str(NONE);
    }
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            text.push_str(sep);
        }
        let s = text.len();
        text.push_str(item);
        concepts.push(ConceptSpan { field, start: s, end: text.len() });
    }
    (start, text.len())
}

/// Recovers field and concept spans from a text in the CKD-EHR layout (for JSONL input, where
/// only the text is known). Items are split on `, ` (clauses on a `; ` that opens a clause), so an item that itself
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
        // Clauses are cut only at a `; ` that starts the next clause (a phenotype's short name
        // may hold `; ` itself: "Respiratory failure; insufficiency; arrest"); the cut takes
        // the next clause's opening words, which belong to its span.
        let (sep, opening) = match field {
            Field::Knowledge => (CLAUSE_SEPARATOR, CLAUSE_OPENING.len()),
            _ => (", ", 0),
        };
        let mut off = s;
        for (k, part) in body.split(sep).enumerate() {
            let start = if k > 0 { off - opening } else { off };
            concepts.push(ConceptSpan { field, start, end: off + part.len() });
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

    #[test]
    fn titles_resolve_from_codes_as_ingest_renders_them() {
        let v = Visit {
            diagnoses: vec![coded("428.0", ""), coded("", "Gout"), coded("4019", "Hypertension (local name)")],
            medications: vec!["Furosemide".into()],
            procedures: vec![coded("3995", ""), coded("", "Hemodialysis")],
        };
        let (r, bare) = v.resolve_titles().unwrap();
        let titles = |c: &[Coded]| c.iter().map(|x| x.title.clone()).collect::<Vec<_>>();
        assert_eq!(titles(&r.diagnoses), ["Heart failure", "Gout", "Essential hypertension"]);
        assert_eq!(r.diagnoses[0].code, "4280");
        assert_eq!(titles(&r.procedures), ["3995", "Hemodialysis"]);
        assert_eq!(bare, [BareCode { item: "procedures[0]".into(), code: "3995".into() }]);
        assert_eq!(r.resolve_titles().unwrap().0, r, "resolving twice changes nothing");
        assert!(render(&r, &[]).text.starts_with("The patient-acquired disease is Heart failure, Gout,"));
        // A code with no category title is rendered bare and reported.
        let v = Visit { diagnoses: vec![coded("ZZZ9", "")], ..Default::default() };
        let (r, bare) = v.resolve_titles().unwrap();
        assert_eq!((r.diagnoses[0].title.as_str(), bare[0].item.as_str()), ("ZZZ9", "diagnoses[0]"));
        // Nothing to render is an error naming the item.
        let v = Visit { diagnoses: vec![coded("4280", ""), coded(" ", " ")], ..Default::default() };
        assert_eq!(v.resolve_titles().unwrap_err().to_string(), "diagnoses[1]: neither a code nor a title");
        let v = Visit { medications: vec!["a".into(), " ".into()], ..Default::default() };
        assert_eq!(v.resolve_titles().unwrap_err().to_string(), "medications[1]: an empty drug name");
        // JSON may leave out either field of an item.
        let j: Visit = serde_json::from_str(
            r#"{"diagnoses": [{"code": "4280"}, {"title": "Gout"}], "medications": [], "procedures": []}"#,
        )
        .unwrap();
        assert_eq!(j.diagnoses, [coded("4280", ""), coded("", "Gout")]);
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
    fn a_concept_left_out_renders_as_the_visit_without_it() {
        let k = vec![Clause { phenotype: 8, drugs: vec!["Furosemide".into()] }];
        let r = render(&visit(), &k);
        // Concepts: Heart failure, Acute kidney failure, Furosemide, Sodium Chloride.., clause.
        assert_eq!(r.concepts.len(), 5);
        assert_eq!(r.concept_text(1), Some("Acute kidney failure"));
        let mut v = visit();
        v.diagnoses.retain(|d| d.title != "Acute kidney failure");
        assert_eq!(r.without(1).unwrap(), render(&v, &k));
        // A field's only item leaves `None`; the clause goes like any concept.
        assert_eq!(r.without(4).unwrap(), render(&visit(), &[]));
        let mut one = visit();
        one.medications.truncate(1);
        let r1 = render(&one, &[]);
        assert!(r1.without(2).unwrap().text.contains("medication: None. The surgical"));
        // Parsed texts give the same occlusions as rendered visits.
        let p = parse_spans(&r.text).unwrap();
        for i in 0..r.concepts.len() {
            assert_eq!(p.without(i), r.without(i), "concept {i}");
        }
        assert_eq!(r.without(5), None);
        assert_eq!(r.concept_text(5), None);
    }

    #[test]
    fn parse_spans_roundtrips_render() {
        let k = vec![Clause { phenotype: 8, drugs: vec!["Furosemide".into()] }];
        // Short names holding `; ` (Pleurisy, Respiratory failure) stay one clause each.
        let semi: Vec<_> = PHENOTYPES.iter().enumerate().filter(|(_, p)| p.short.contains("; ")).collect();
        assert_eq!(semi.len(), 2);
        let k3 = semi
            .iter()
            .map(|&(i, _)| Clause { phenotype: i as Label, drugs: vec!["Heparin".into(), "Senna".into()] })
            .chain([Clause { phenotype: 0, drugs: vec!["Insulin".into()] }])
            .collect::<Vec<_>>();
        for kn in [vec![], k, k3] {
            let r = render(&visit(), &kn);
            let p = parse_spans(&r.text).expect("layout");
            assert_eq!(p, r);
        }
        assert!(parse_spans("something else").is_none());
    }
}
