//! Bag of concepts with tf-idf weights: the features of the logistic-regression baseline.
//!
//! A document is a sample's input text; its terms are its concepts, read from the CKD-EHR
//! layout ([`ckd_core::visit::parse_spans`]): each diagnosis title, drug, procedure title and
//! knowledge clause is one term, prefixed by its field (`dx:`, `med:`, `proc:`, `kn:`) so that a
//! drug named in a clause and the same drug given are different features. A text that does not
//! follow the layout falls back to its lower-cased words (`w:` prefix).
//!
//! Weights follow scikit-learn's `TfidfVectorizer(norm="l2", use_idf=True, smooth_idf=True,
//! sublinear_tf=False)`: `tf` = raw count of the term in the document,
//! `idf(t) = ln((1 + n) / (1 + df(t))) + 1` over the `n` fitting documents, then each row is
//! scaled to unit L2 norm. Terms not seen while fitting are dropped at transform time.

use std::collections::{BTreeMap, HashMap};

use ckd_core::visit::{self, Field};

use super::logreg::SparseRow;

/// The terms of one input text (see the module docs), in text order, repeats kept.
pub fn concepts(text: &str) -> Vec<String> {
    match visit::parse_spans(text) {
        Some(r) => r
            .concepts
            .iter()
            .map(|c| {
                let prefix = match c.field {
                    Field::Diagnoses => "dx:",
                    Field::Medications => "med:",
                    Field::Procedures => "proc:",
                    Field::Knowledge => "kn:",
                };
                format!("{prefix}{}", r.text[c.start..c.end].trim())
            })
            .collect(),
        None => text
            .split(|ch: char| !ch.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(|w| format!("w:{}", w.to_lowercase()))
            .collect(),
    }
}

/// A fitted tf-idf vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct Tfidf {
    /// Term -> feature index; indices follow the terms' sorted order (as scikit-learn's).
    pub vocab: HashMap<String, u32>,
    /// Inverse document frequency per feature index.
    pub idf: Vec<f64>,
}

impl Tfidf {
    /// Fits the vocabulary and idf on term lists (one per document).
    pub fn fit(docs: &[Vec<String>]) -> Self {
        let mut df: BTreeMap<&str, u32> = BTreeMap::new();
        for d in docs {
            let mut seen: Vec<&str> = d.iter().map(String::as_str).collect();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                *df.entry(t).or_default() += 1;
            }
        }
        let n = docs.len() as f64;
        let mut vocab = HashMap::with_capacity(df.len());
        let mut idf = Vec::with_capacity(df.len());
        for (i, (t, c)) in df.into_iter().enumerate() {
            vocab.insert(t.to_string(), i as u32);
            idf.push(((1.0 + n) / (1.0 + c as f64)).ln() + 1.0);
        }
        Tfidf { vocab, idf }
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.idf.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.idf.is_empty()
    }

    /// The L2-normalized tf-idf row of a document, sorted by feature index.
    pub fn transform(&self, doc: &[String]) -> SparseRow {
        let mut counts: BTreeMap<u32, f64> = BTreeMap::new();
        for t in doc {
            if let Some(&j) = self.vocab.get(t) {
                *counts.entry(j).or_default() += 1.0;
            }
        }
        let vals: Vec<(u32, f64)> = counts.into_iter().map(|(j, tf)| (j, tf * self.idf[j as usize])).collect();
        let norm = vals.iter().map(|(_, v)| v * v).sum::<f64>().sqrt();
        vals.into_iter().map(|(j, v)| (j, if norm > 0.0 { (v / norm) as f32 } else { 0.0 })).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concepts_of_a_rendered_visit() {
        let text = "The patient-acquired disease is Heart failure, Acute kidney failure. \
                    The patient had used the following medication: Furosemide. \
                    The surgical operation performed by the patient: None. \
                    The medications that maybe have therapeutic effect on Shock are Furosemide.";
        assert_eq!(
            concepts(text),
            [
                "dx:Heart failure",
                "dx:Acute kidney failure",
                "med:Furosemide",
                "kn:The medications that maybe have therapeutic effect on Shock are Furosemide"
            ]
        );
        assert_eq!(concepts("Not, the layout"), ["w:not", "w:the", "w:layout"]);
    }

    /// Hand-computed: 3 documents {a, b}, {a}, {b, b, c}. df: a 2, b 2, c 1; n = 3.
    /// idf(a) = idf(b) = ln(4/3) + 1 = 1.28768; idf(c) = ln(4/2) + 1 = 1.69315.
    /// Row 3: b tf 2 -> 2.57536, c 1.69315; norm 3.08208 -> (0.83559, 0.54935).
    /// scikit-learn: TfidfVectorizer(analyzer=lambda d: d).fit_transform([["a","b"],["a"],["b","b","c"]])
    /// gives the same rows.
    #[test]
    fn tfidf_matches_hand_computation() {
        let docs: Vec<Vec<String>> = [vec!["a", "b"], vec!["a"], vec!["b", "b", "c"]]
            .iter()
            .map(|d| d.iter().map(|s| s.to_string()).collect())
            .collect();
        let t = Tfidf::fit(&docs);
        assert_eq!(t.vocab["a"], 0);
        assert_eq!(t.vocab["c"], 2);
        assert!((t.idf[0] - 1.287_682).abs() < 1e-6);
        assert!((t.idf[2] - 1.693_147).abs() < 1e-6);
        let r = t.transform(&docs[2]);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].0, r[1].0), (1, 2));
        assert!((r[0].1 - 0.835_59).abs() < 1e-5 && (r[1].1 - 0.549_35).abs() < 1e-5, "{r:?}");
        let r = t.transform(&docs[0]);
        assert!((r[0].1 - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!(t.transform(&["unseen".to_string()]).is_empty());
    }
}
