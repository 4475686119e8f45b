//! The CKD-EHR authors' soft-label files (`hands_name_train.json`, `hands_name_val.json`): one
//! JSON array holding one object per record of the JSONL file it belongs to, in that file's
//! order; each object maps the 25 phenotype names (the authors' spellings) to the teacher's
//! probability of that phenotype.
//!
//! Reading ([`parse`]) is strict: every object names each of the 25 labels exactly once, in any
//! spelling of [`crate::labels::Phenotype`], with a number in `[0, 1]`; anything else is a
//! [`AuthorsSoftLabelError`] naming the object's 0-based index (its position in the array, which is the
//! position of its JSONL record) and the key. Writing ([`render`]) uses the authors' spellings in
//! label order, Python `json.dumps` separators (`", "`, `": "`), one object per line.
//!
//! Values: `f32`, written as the shortest decimal that reads back as the same `f32`.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::fmt::Write as _;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

use crate::labels::{LabelSpace, NUM_LABELS, PHENOTYPES};

/// Probabilities of one record, in label order.
pub type Row = [f32; NUM_LABELS];

/// What is wrong with a soft-label file. `index` is the 0-based position of the object in the
/// array (= the position of its record in the JSONL file).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthorsSoftLabelError {
    /// Not a JSON array of objects (serde_json's message carries line and column).
    #[error("not a JSON array of objects (one per JSONL record): {msg}")]
    Json {
        /// What serde_json said.
        msg: String,
    },
    /// A key is no spelling of any phenotype.
    #[error("object {index}: key {key:?} is not a phenotype name")]
    UnknownName {
        /// 0-based object index.
        index: usize,
        /// The key.
        key: String,
    },
    /// Two keys name the same phenotype (the same key twice, or two spellings of it).
    #[error("object {index}: keys {first:?} and {second:?} both name phenotype {name:?}")]
    Duplicate {
        /// 0-based object index.
        index: usize,
        /// The first key.
        first: String,
        /// The second key.
        second: String,
        /// Official name of the phenotype.
        name: &'static str,
    },
    /// A phenotype has no key.
    #[error("object {index}: no probability for {name:?}")]
    Missing {
        /// 0-based object index.
        index: usize,
        /// The authors' spelling of the missing phenotype.
        name: &'static str,
    },
    /// A value is not a number in `[0, 1]`.
    #[error("object {index}: {key:?} is {value}, not a probability (a number in [0, 1])")]
    NotProbability {
        /// 0-based object index.
        index: usize,
        /// The key (read) or the authors' spelling (written).
        key: String,
        /// The value as JSON text (or as the number that was to be written).
        value: String,
    },
}

impl AuthorsSoftLabelError {
    /// The 0-based index of the object the error is about (`None` for a malformed file).
    pub fn index(&self) -> Option<usize> {
        match self {
            AuthorsSoftLabelError::Json { .. } => None,
            AuthorsSoftLabelError::UnknownName { index, .. }
            | AuthorsSoftLabelError::Duplicate { index, .. }
            | AuthorsSoftLabelError::Missing { index, .. }
            | AuthorsSoftLabelError::NotProbability { index, .. } => Some(*index),
        }
    }
}

/// One JSON object with its entries in file order (duplicate keys kept, so they can be refused).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object mapping phenotype names to probabilities")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Entries, A::Error> {
                let mut v = Vec::with_capacity(NUM_LABELS);
                while let Some(e) = m.next_entry::<String, serde_json::Value>()? {
                    v.push(e);
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses a soft-label file: one [`Row`] per object, in array order. A UTF-8 byte-order mark
/// at the start is skipped.
pub fn parse(text: &str) -> Result<Vec<Row>, AuthorsSoftLabelError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let objects: Vec<Entries> =
        serde_json::from_str(text).map_err(|e| AuthorsSoftLabelError::Json { msg: format!("{e}") })?;
    objects.into_iter().enumerate().map(|(index, o)| row(index, o)).collect()
}

fn row(index: usize, o: Entries) -> Result<Row, AuthorsSoftLabelError> {
    let mut probs = [0f32; NUM_LABELS];
    let mut key_of: [Option<String>; NUM_LABELS] = Default::default();
    for (key, value) in o.0 {
        let l = LabelSpace.parse(&key).map_err(|_| AuthorsSoftLabelError::UnknownName { index, key: key.clone() })?
            as usize;
        let p = value.as_f64().filter(|p| (0.0..=1.0).contains(p)).ok_or_else(|| {
            AuthorsSoftLabelError::NotProbability { index, key: key.clone(), value: value.to_string() }
        })?;
        if let Some(first) = key_of[l].take() {
            return Err(AuthorsSoftLabelError::Duplicate { index, first, second: key, name: PHENOTYPES[l].name });
        }
        probs[l] = p as f32;
        key_of[l] = Some(key);
    }
    if let Some(l) = key_of.iter().position(Option::is_none) {
        return Err(AuthorsSoftLabelError::Missing { index, name: PHENOTYPES[l].authors });
    }
    Ok(probs)
}

/// Renders rows as a soft-label file (`[` and `]` on their own lines, one object per line,
/// keys = the authors' spellings in label order). A value outside `[0, 1]` (or NaN) is refused,
/// so that what is written can be read back.
pub fn render<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Result<String, AuthorsSoftLabelError> {
    let mut s = String::from("[");
    for (index, r) in rows.into_iter().enumerate() {
        s.push_str(if index == 0 { "\n{" } else { ",\n{" });
        for (l, (&p, ph)) in r.iter().zip(PHENOTYPES.iter()).enumerate() {
            if !(0.0..=1.0).contains(&p) {
                return Err(AuthorsSoftLabelError::NotProbability {
                    index,
                    key: ph.authors.into(),
                    value: format!("{p}"),
                });
            }
            if l > 0 {
                s.push_str(", ");
            }
            crate::jsonl::push_json_str(&mut s, ph.authors);
            // `{:?}` of an f32: the shortest decimal that parses back to it, always with `.` or
            // an exponent (so Python reads a float).
            let _ = write!(s, ": {p:?}");
        }
        s.push('}');
    }
    s.push_str("\n]\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authors_object(values: &[&str]) -> String {
        let body: Vec<String> = PHENOTYPES.iter().zip(values).map(|(p, v)| format!("\"{}\": {v}", p.authors)).collect();
        format!("{{{}}}", body.join(", "))
    }

    #[test]
    fn reads_the_authors_layout_and_writes_it_back() {
        // The layout of `json.dump(list_of_dicts, f)`: one line, authors' keys in label order.
        let a: Vec<String> = (0..NUM_LABELS).map(|i| format!("0.{:02}", i * 4)).collect();
        let b: Vec<String> = (0..NUM_LABELS).map(|i| if i % 2 == 0 { "1.0".into() } else { "0.0".into() }).collect();
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let b: Vec<&str> = b.iter().map(String::as_str).collect();
        let text = format!("[{}, {}]", authors_object(&a), authors_object(&b));
        let rows = parse(&text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][0], 0.0);
        assert_eq!(rows[0][9], 0.36);
        assert_eq!(rows[0][24], 0.96);
        assert_eq!(rows[1][..3], [1.0, 0.0, 1.0]);
        let out = render(&rows).unwrap();
        assert!(out.starts_with("[\n{\"Acute and unspecified renal failure\": 0.0, "), "{out}");
        assert!(out.contains("\"Complications of surgical/medical care\": 0.24, "), "{out}");
        assert!(out.ends_with("\"Shock\": 1.0}\n]\n"), "{out}");
        assert_eq!(parse(&out).unwrap(), rows);
        assert_eq!(render([]).unwrap(), "[\n]\n");
        assert_eq!(parse("[\n]\n").unwrap(), Vec::<Row>::new());
    }

    #[test]
    fn f32_values_survive_the_round_trip_exactly() {
        let mut r = [0f32; NUM_LABELS];
        for (i, v) in r.iter_mut().enumerate() {
            *v = 1.0 / (i as f32 + 3.0) + 1e-7 * i as f32;
        }
        r[0] = 1e-9;
        r[1] = 0.99999994;
        r[2] = 1.0;
        assert_eq!(parse(&render([&r]).unwrap()).unwrap(), [r]);
    }

    #[test]
    fn any_spelling_and_any_key_order_is_read() {
        let body: Vec<String> =
            PHENOTYPES.iter().enumerate().rev().map(|(i, p)| format!("\"{}\": 0.{i:02}", p.name)).collect();
        let rows = parse(&format!("\u{feff}[{{{}}}]", body.join(","))).unwrap();
        assert_eq!(rows[0][23], 0.23);
        let body: Vec<String> = PHENOTYPES.iter().map(|p| format!("\"{}\": 0.5", p.short)).collect();
        assert_eq!(parse(&format!("[{{{}}}]", body.join(","))).unwrap()[0], [0.5; NUM_LABELS]);
    }

    #[test]
    fn errors_name_the_object_and_key() {
        let ok = authors_object(&["0.5"; NUM_LABELS]);
        let missing = ok.replace("\"Shock\": 0.5", "").replace(", }", "}");
        assert_eq!(
            parse(&format!("[{ok}, {missing}]")),
            Err(AuthorsSoftLabelError::Missing { index: 1, name: "Shock" })
        );
        assert_eq!(parse(&format!("[{ok}, {missing}]")).unwrap_err().index(), Some(1));
        assert_eq!(parse("[").unwrap_err().index(), None);
        let unknown = ok.replace("\"Shock\"", "\"Gout\"");
        assert_eq!(
            parse(&format!("[{unknown}]")),
            Err(AuthorsSoftLabelError::UnknownName { index: 0, key: "Gout".into() })
        );
        let twice = ok.replace("\"Shock\": 0.5", "\"Shock\": 0.5, \"Shock\": 0.25");
        assert!(matches!(
            parse(&format!("[{ok}, {ok}, {twice}]")),
            Err(AuthorsSoftLabelError::Duplicate { index: 2, name: "Shock", .. })
        ));
        let two_spellings = ok.replace("\"Shock\": 0.5", "\"Septicemia\": 0.5");
        assert_eq!(
            parse(&format!("[{two_spellings}]")),
            Err(AuthorsSoftLabelError::Duplicate {
                index: 0,
                first: "Septicemia (except in labor)".into(),
                second: "Septicemia".into(),
                name: "Septicemia (except in labor)"
            })
        );
        for (bad, shown) in [("1.5", "1.5"), ("-0.1", "-0.1"), ("\"0.5\"", "\"0.5\""), ("null", "null")] {
            let o = ok.replace("\"Shock\": 0.5", &format!("\"Shock\": {bad}"));
            assert_eq!(
                parse(&format!("[{o}]")),
                Err(AuthorsSoftLabelError::NotProbability { index: 0, key: "Shock".into(), value: shown.into() }),
                "{bad}"
            );
        }
        for bad in ["", "{}", "[1]", "[{\"Shock\": NaN}]", "[{}"] {
            assert!(matches!(parse(bad), Err(AuthorsSoftLabelError::Json { .. })), "{bad:?}");
        }
        let mut r = [0.5f32; NUM_LABELS];
        r[3] = f32::NAN;
        assert!(matches!(render([&r]), Err(AuthorsSoftLabelError::NotProbability { index: 0, .. })));
    }
}
