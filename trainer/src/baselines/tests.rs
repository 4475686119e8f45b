//! Baselines against scikit-learn (fixture made once by `scripts/gen_logreg_fixture.py`) and
//! on hand-made label sets.

use super::*;

#[derive(serde::Deserialize)]
struct Fit {
    coef: Vec<f64>,
    intercept: f64,
    proba_first5: Vec<f64>,
}

#[derive(serde::Deserialize)]
struct Fixture {
    docs: Vec<Vec<String>>,
    labels: Vec<Vec<u8>>,
    vocab: Vec<String>,
    idf: Vec<f64>,
    fits: Vec<Fit>,
    #[serde(rename = "C")]
    c: f64,
}

fn fixture() -> Fixture {
    serde_json::from_str(include_str!("../../tests/data/logreg_sklearn.json")).expect("fixture parses")
}

/// tf-idf vocabulary order and idf equal scikit-learn's `TfidfVectorizer`.
#[test]
fn tfidf_matches_scikit_learn() {
    let f = fixture();
    let t = Tfidf::fit(&f.docs);
    assert_eq!(t.len(), f.vocab.len());
    for (i, term) in f.vocab.iter().enumerate() {
        assert_eq!(t.vocab[term], i as u32, "{term}");
        assert!((t.idf[i] - f.idf[i]).abs() < 1e-12, "{term}: {} vs {}", t.idf[i], f.idf[i]);
    }
}

/// Coefficients and intercepts within 1e-3 of scikit-learn's `LogisticRegression(C=1)` (fitted
/// there to tol 1e-10), probabilities within 1e-4.
#[test]
fn logistic_regression_matches_scikit_learn() {
    let f = fixture();
    let t = Tfidf::fit(&f.docs);
    let rows: Vec<SparseRow> = f.docs.iter().map(|d| t.transform(d)).collect();
    let cfg = LogRegConfig { c: f.c, tol: 1e-7, max_iter: 5000, ..Default::default() };
    for (j, want) in f.fits.iter().enumerate() {
        let y: Vec<bool> = f.labels.iter().map(|l| l[j] == 1).collect();
        let m = logreg::fit(&rows, &y, t.len(), &cfg);
        assert!(m.converged, "label {j}: {} iterations", m.iterations);
        let worst = m.coef.iter().zip(&want.coef).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-3, "label {j}: max coefficient difference {worst}");
        assert!((m.intercept - want.intercept).abs() < 1e-3, "label {j}: {} vs {}", m.intercept, want.intercept);
        for (i, p) in want.proba_first5.iter().enumerate() {
            assert!((m.predict(&rows[i]) - p).abs() < 1e-4, "label {j} row {i}");
        }
    }
}

fn set(labels: &[u8]) -> LabelSet {
    LabelSet::from_labels(labels.iter().copied())
}

#[test]
fn prior_is_the_training_frequency() {
    let p = prior(&[set(&[0, 3]), set(&[0]), set(&[]), set(&[24, 0])]);
    assert_eq!(p[0], 0.75);
    assert_eq!(p[3], 0.25);
    assert_eq!(p[24], 0.25);
    assert_eq!(p[1], 0.0);
    let rows = constant_rows(&p, 3);
    assert_eq!(rows.len(), 3 * NUM_LABELS);
    assert_eq!(&rows[NUM_LABELS..2 * NUM_LABELS], &p[..]);
}

/// On texts where one concept decides label 2, the regression ranks every such text above the
/// others, and unseen concepts are ignored rather than an error.
#[test]
fn bag_of_concepts_learns_a_deciding_concept() {
    let text = |dx: &str, med: &str| {
        format!(
            "The patient-acquired disease is {dx}. The patient had used the following medication: {med}. \
             The surgical operation performed by the patient: None. None."
        )
    };
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    for i in 0..40 {
        let shock = i % 3 == 0;
        texts.push(text(if shock { "Shock" } else { "Asthma" }, if i % 2 == 0 { "Aspirin" } else { "Heparin" }));
        labels.push(if shock { set(&[2]) } else { set(&[]) });
    }
    let (tr, va) = texts.split_at(30);
    let (ltr, lva) = labels.split_at(30);
    let m = BagOfConcepts::fit((tr, ltr), (va, lva), &LogRegConfig::default()).unwrap();
    let p = m.predict(&[text("Shock", "Aspirin"), text("Asthma", "Aspirin"), text("Unseen", "Unseen")]);
    assert!(p[2] > 0.6 && p[NUM_LABELS + 2] < 0.2, "{} {}", p[2], p[NUM_LABELS + 2]);
    assert!(p[2 * NUM_LABELS + 2] > p[NUM_LABELS + 2] && p[2 * NUM_LABELS + 2] < p[2]);
    assert!(matches!(
        BagOfConcepts::fit((&texts[..2], &labels[..1]), (va, lva), &LogRegConfig::default()),
        Err(BaselineError::Mismatch { .. })
    ));
}
