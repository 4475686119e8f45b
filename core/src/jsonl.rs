//! The CKD-EHR authors' released JSONL format: one object per line with `instruction`, `input`
//! and `output`, where `output` is `Disease that the patient may acquire: {names in label order}`
//! (names joined by `, `) or `Disease that the patient may acquire: None`.
//!
//! Round trip: [`parse_line`] keeps each line verbatim (with its terminator) in
//! [`JsonlRecord::line`], and [`write_record`] writes that back, so reading then writing a file
//! gives the same bytes. New records are written in the canonical style of Python's
//! `json.dumps` defaults (`", "` / `": "` separators, non-ASCII as `\uXXXX`), see [`to_line`].
//!
//! Spellings: `output` may name a phenotype in any spelling of [`crate::labels::Phenotype`]
//! (official, the authors', or this project's earlier short names); new records are written with
//! the authors' spellings and the authors' [`INSTRUCTION`], so they can replace the authors' files.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use serde::Deserialize;

use crate::labels::{LabelSet, LabelSpace, PHENOTYPES};

/// Prefix of the `output` field.
pub const OUTPUT_PREFIX: &str = "Disease that the patient may acquire: ";

/// Start of the authors' instruction; the 25 phenotypes follow in label order, in the authors'
/// spelling, joined by `, ` (so the LLM is shown the label vocabulary).
pub const INSTRUCTION_PREFIX: &str =
    "Determine that the patient has one or more of the following diseases at the next visit: ";

/// The CKD-EHR authors' instruction: [`INSTRUCTION_PREFIX`] followed by
/// [`crate::labels::Phenotype::authors`] of every label joined by `, ` (a test checks it against
/// the table). Written for records rendered by this project.
pub const INSTRUCTION: &str = "Determine that the patient has one or more of the following diseases at the next visit: \
Acute and unspecified renal failure, Acute cerebrovascular disease, Acute myocardial infarction, Cardiac dysrhythmias, \
Chronic kidney disease, Chronic obstructive pulmonary disease, Complications of surgical/medical care, Conduction \
disorders, Congestive heart failure; nonhypertensive, Coronary atherosclerosis and related, Diabetes mellitus with \
complications, Diabetes mellitus without complication, Disorders of lipid metabolism, Essential hypertension, Fluid and \
electrolyte disorders, Gastrointestinal hemorrhage, Hypertension with complications, Other liver diseases, Other lower \
respiratory disease, Other upper respiratory disease, Pleurisy; pneumothorax; pulmonary collapse, Pneumonia, \
Respiratory failure; insufficiency; arrest, Septicemia (except in labor), Shock";

/// The instruction earlier versions of this project wrote (and prompted teachers of format v1 with).
pub const LEGACY_INSTRUCTION: &str =
    "Based on the patient's diseases, medications and surgical operations in this hospital visit, \
and the medical knowledge provided, predict which diseases the patient may acquire at the next visit.";

/// Error in a JSONL line. `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonlError {
    /// The line is not a JSON object with string fields `instruction`, `input`, `output`.
    #[error("line {line}: not a CKD-EHR record: {msg}")]
    Json {
        /// 1-based line number.
        line: usize,
        /// What serde_json said.
        msg: String,
    },
    /// `output` does not start with the expected prefix.
    #[error("line {line}: field `output` does not start with {OUTPUT_PREFIX:?}")]
    OutputPrefix {
        /// 1-based line number.
        line: usize,
    },
    /// `output` names a phenotype that is not in the label space.
    #[error("line {line}: field `output`: unknown phenotype name {name:?}")]
    UnknownName {
        /// 1-based line number.
        line: usize,
        /// The offending name.
        name: String,
    },
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonlRecord {
    /// `instruction` field.
    pub instruction: String,
    /// `input` field.
    pub input: String,
    /// `output` field.
    pub output: String,
    /// Labels parsed from `output`.
    pub labels: LabelSet,
    /// The line exactly as read, including its terminator (`\n`, `\r\n`, or none at EOF).
    pub line: String,
}

#[derive(Deserialize)]
struct Wire {
    instruction: String,
    input: String,
    output: String,
}

/// Parses the labels of an `output` field. `line` is used in errors only.
pub fn parse_output(output: &str, line: usize) -> Result<LabelSet, JsonlError> {
    let body = output.strip_prefix(OUTPUT_PREFIX).ok_or(JsonlError::OutputPrefix { line })?;
    let body = body.trim();
    let mut set = LabelSet::EMPTY;
    if body == "None" || body.is_empty() {
        return Ok(set);
    }
    for name in body.split(", ") {
        let l =
            LabelSpace.parse(name).map_err(|_| JsonlError::UnknownName { line, name: String::from(name.trim()) })?;
        set.insert(l);
    }
    Ok(set)
}

/// Renders an `output` field: the authors' spellings in label order joined by `, `, or `None`.
pub fn render_output(labels: LabelSet) -> String {
    let mut s = String::from(OUTPUT_PREFIX);
    if labels.is_empty() {
        s.push_str("None");
    }
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(PHENOTYPES[l as usize].authors);
    }
    s
}

/// Parses one line (given with its terminator, as produced by [`lines`]). Returns `Ok(None)` for
/// a blank line. `line_no` is 1-based and used in errors.
pub fn parse_line(raw: &str, line_no: usize) -> Result<Option<JsonlRecord>, JsonlError> {
    let body = raw.trim_end_matches(['\n', '\r']);
    if body.trim().is_empty() {
        return Ok(None);
    }
    if let Some(kind) = not_an_object(body) {
        let msg = format!("the line is {kind}, expected an object with string fields instruction, input, output");
        return Err(JsonlError::Json { line: line_no, msg });
    }
    let w: Wire = serde_json::from_str(body).map_err(|e| JsonlError::Json { line: line_no, msg: format!("{e}") })?;
    let labels = parse_output(&w.output, line_no)?;
    Ok(Some(JsonlRecord {
        instruction: w.instruction,
        input: w.input,
        output: w.output,
        labels,
        line: String::from(raw),
    }))
}

/// What kind of JSON value `body` starts with when it is not an object (`a JSON array`, ...);
/// `None` for an object or for text that is not JSON at all (the parser names its error). A
/// record must be an object: serde would read an array of three strings as one.
fn not_an_object(body: &str) -> Option<&'static str> {
    match body.trim_start().bytes().next()? {
        b'[' => Some("a JSON array"),
        b'"' => Some("a JSON string"),
        b'-' | b'0'..=b'9' => Some("a JSON number"),
        b't' | b'f' => Some("a JSON boolean"),
        b'n' => Some("JSON null"),
        _ => None,
    }
}

/// Splits text into lines that keep their terminators (the last may have none).
pub fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n')
}

/// Parses a whole JSONL text. Blank lines are skipped (the only bytes a round trip loses).
pub fn parse(text: &str) -> Result<Vec<JsonlRecord>, JsonlError> {
    let mut out = Vec::new();
    for (i, l) in lines(text).enumerate() {
        if let Some(r) = parse_line(l, i + 1)? {
            out.push(r);
        }
    }
    Ok(out)
}

/// Canonical line (with `\n`) for a new record, as Python's `json.dumps` writes it by default.
pub fn to_line(instruction: &str, input: &str, output: &str) -> String {
    let mut s = String::with_capacity(instruction.len() + input.len() + output.len() + 48);
    s.push_str("{\"instruction\": ");
    push_json_str(&mut s, instruction);
    s.push_str(", \"input\": ");
    push_json_str(&mut s, input);
    s.push_str(", \"output\": ");
    push_json_str(&mut s, output);
    s.push_str("}\n");
    s
}

/// Appends a record: its original line when it was read from a file, else nothing to do for the
/// caller but call [`to_line`]. Kept as one function so writers cannot forget the verbatim path.
pub fn write_record(out: &mut String, rec: &JsonlRecord) {
    out.push_str(&rec.line);
}

/// JSON string literal as Python's `json.dumps(ensure_ascii=True)` writes it.
pub(crate) fn push_json_str(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            '\u{08}' => s.push_str("\\b"),
            '\u{0c}' => s.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    let _ = write!(s, "\\u{:04x}", u);
                }
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_roundtrip() {
        let l = LabelSet::from_labels([5, 6, 8, 9, 23, 24]);
        let o = render_output(l);
        assert_eq!(
            o,
            "Disease that the patient may acquire: Chronic obstructive pulmonary disease, Complications of \
             surgical/medical care, Congestive heart failure; nonhypertensive, Coronary atherosclerosis and related, \
             Septicemia (except in labor), Shock"
        );
        assert_eq!(parse_output(&o, 1), Ok(l));
        assert_eq!(parse_output("Disease that the patient may acquire: None", 1), Ok(LabelSet::EMPTY));
        assert_eq!(
            parse_output("Disease that the patient may acquire: Shock, Gout", 7),
            Err(JsonlError::UnknownName { line: 7, name: "Gout".into() })
        );
        assert_eq!(parse_output("Diseases: Shock", 3), Err(JsonlError::OutputPrefix { line: 3 }));
    }

    #[test]
    fn outputs_written_by_earlier_versions_still_read() {
        // What `render_output` wrote before it used the authors' spellings (short names).
        let old = "Disease that the patient may acquire: Chronic obstructive pulmonary disease, Complications of \
                   surgical procedures or medical care, Congestive heart failure, Coronary atherosclerosis and other \
                   heart disease, Septicemia, Shock";
        assert_eq!(parse_output(old, 1), Ok(LabelSet::from_labels([5, 6, 8, 9, 23, 24])));
    }

    #[test]
    fn instruction_is_the_authors_with_their_label_list() {
        let names: Vec<&str> = LabelSpace.authors_names().collect();
        assert_eq!(INSTRUCTION, format!("{INSTRUCTION_PREFIX}{}", names.join(", ")));
        assert!(
            INSTRUCTION.ends_with("Respiratory failure; insufficiency; arrest, Septicemia (except in labor), Shock")
        );
        assert_ne!(INSTRUCTION, LEGACY_INSTRUCTION);
    }

    #[test]
    fn canonical_line_matches_python_json_dumps() {
        // python3 -c 'import json;print(json.dumps({"instruction":"a\"b","input":"é\n€😀","output":"x"}))'
        assert_eq!(
            to_line("a\"b", "é\n€😀", "x"),
            "{\"instruction\": \"a\\\"b\", \"input\": \"\\u00e9\\n\\u20ac\\ud83d\\ude00\", \"output\": \"x\"}\n"
        );
    }

    #[test]
    fn read_write_same_bytes() {
        let text = "{\"instruction\":\"i\",\"input\":\"t\",\"output\":\"Disease that the patient may acquire: Shock\"}\r\n\
                    {\"instruction\": \"i\", \"input\": \"caf\\u00e9\", \"output\": \"Disease that the patient may acquire: None\"}";
        let recs = parse(text).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].input, "café");
        let mut out = String::new();
        for r in &recs {
            write_record(&mut out, r);
        }
        assert_eq!(out, text);
        // Canonical records also round-trip through to_line.
        assert_eq!(to_line(&recs[1].instruction, &recs[1].input, &recs[1].output), format!("{}\n", recs[1].line));
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("\n{\"instruction\": 1}\n").unwrap_err();
        assert!(matches!(e, JsonlError::Json { line: 2, .. }), "{e:?}");
        // A line that is not an object says what it is (not "expected a string" for an array of
        // strings), and an array of three strings is not read as a record.
        let obj =
            "{\"instruction\": \"i\", \"input\": \"t\", \"output\": \"Disease that the patient may acquire: None\"}";
        for (line, kind) in [
            ("[1, 2]", "a JSON array"),
            ("[\"i\", \"t\", \"Disease that the patient may acquire: None\"]", "a JSON array"),
            ("\"text\"", "a JSON string"),
            ("-3", "a JSON number"),
            ("true", "a JSON boolean"),
            ("null", "JSON null"),
        ] {
            let e = parse(&format!("{obj}\n{line}\n")).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "line 2: not a CKD-EHR record: the line is {kind}, expected an object with string fields \
                     instruction, input, output"
                )
            );
        }
    }
}
