//! A made-up report input (fake models of graded skill on fake labels, curves, costs, an
//! explanation): the report's unit tests read it, and `examples/example_report.rs` (which
//! includes this file with `#[path]`) writes it for a person to look at. Names come from the
//! includer: `super::*` must bring the report types, `ExplainTruth`, `AttentionQuality`,
//! `LabelSet` and `NUM_LABELS`.

use super::*;

/// Deterministic pseudo-random numbers (64-bit LCG) so tests need no RNG crate state.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub fn fake_labels(n: usize, seed: u64) -> Vec<LabelSet> {
    let mut rng = Lcg(seed);
    (0..n)
        .map(|_| {
            // Label l has prevalence between 3% and 40%.
            LabelSet::from_labels((0..NUM_LABELS as u8).filter(|&l| rng.next() < 0.03 + 0.015 * l as f64))
        })
        .collect()
}

/// Probabilities `sigmoid(skill · (2y − 1) + noise − 1.5)`, rounded to 1/50 so that ties occur.
pub fn fake_model(name: &str, role: Role, labels: &[LabelSet], skill: f64, seed: u64) -> ModelResult {
    let mut rng = Lcg(seed);
    let probs = labels
        .iter()
        .map(|set| {
            (0..NUM_LABELS as u8)
                .map(|l| {
                    let y = if set.contains(l) { 1.0 } else { -1.0 };
                    let noise = (0..4).map(|_| rng.next() - 0.5).sum::<f64>() * 2.5;
                    let p = 1.0 / (1.0 + (-(skill * y + noise - 1.5)).exp());
                    ((p * 50.0).round() / 50.0) as f32
                })
                .collect()
        })
        .collect();
    ModelResult { name: name.into(), role, probs, labels: labels.to_vec(), thresholds: vec![0.4; NUM_LABELS] }
}

pub fn curve(model: &str, epochs: usize, scale: f64) -> Curve {
    let mut points = Vec::new();
    for e in 0..epochs {
        for s in 0..5u64 {
            let step = e as u64 * 5 + s + 1;
            points.push(CurvePoint {
                kind: PointKind::Step,
                step,
                epoch: Some(e),
                loss: Some(scale / (1.0 + step as f64 * 0.1)),
                val_macro_f1: None,
                val_macro_auc: None,
            });
        }
        points.push(CurvePoint {
            kind: PointKind::Epoch,
            step: (e as u64 + 1) * 5,
            epoch: Some(e),
            loss: Some(scale / (1.0 + e as f64)),
            val_macro_f1: Some(0.3 + 0.1 * e as f64 / scale),
            val_macro_auc: Some(0.7),
        });
    }
    Curve { model: model.into(), points }
}

pub fn fake_input() -> ReportInput {
    let labels = fake_labels(300, 11);
    ReportInput {
        title: "ckd demo report".into(),
        data_description: "synthetic cohort, 300 test samples".into(),
        notes: vec![
            "The data is synthetic.".into(),
            "The teacher is a small Qwen2-architecture model trained on the synthetic cohort, not Qwen2.5-7B.".into(),
        ],
        models: vec![
            fake_model("teacher", Role::Teacher, &labels, 2.5, 1),
            fake_model("student (no KD)", Role::Student, &labels, 1.5, 2),
            fake_model("student KD f32", Role::StudentDistilled, &labels, 2.0, 3),
            fake_model("student KD int8", Role::StudentInt8, &labels, 1.9, 4),
            fake_model("oracle", Role::Oracle, &labels, 3.5, 5),
        ],
        curves: vec![curve("teacher", 3, 1.0), curve("student KD f32", 4, 1.4)],
        costs: vec![
            CostRow {
                model: "teacher".into(),
                role: Role::Teacher,
                precision: "f32".into(),
                size_bytes: 1_000_000_000,
                latency_ms_median: 100.0,
                samples_per_s: 12.5,
                device: "CPU, 2 threads".into(),
            },
            CostRow {
                model: "student KD int8".into(),
                role: Role::StudentInt8,
                precision: "int8".into(),
                size_bytes: 25_000_000,
                latency_ms_median: 5.0,
                samples_per_s: 400.0,
                device: "CPU, 2 threads".into(),
            },
        ],
        explanations: vec![Explanation {
            sample_id: "p12-v3".into(),
            phenotype: "Chronic kidney disease".into(),
            prob: 0.91,
            concepts: vec![("Hypertensive chronic kidney disease".into(), 0.42), ("furosemide".into(), 0.17)],
        }],
        provenance: vec![("seed".into(), "7".into()), ("commit".into(), "abc123".into())],
        subjects: (0..300u64).map(|i| i / 2).collect(),
        reference: Some("student (no KD)".into()),
        comparisons: vec![("student KD f32".into(), "student (no KD)".into())],
        explanation_scores: Some(fake_explanation_scores()),
    }
}

/// Made-up explanation scores (the numbers mean nothing).
pub fn fake_explanation_scores() -> ExplanationScores {
    use ckd_core::bootstrap::Interval;
    let i = |estimate: f64| Interval { estimate, lo: estimate - 0.05, hi: estimate + 0.05, n_defined: 1000 };
    ExplanationScores {
        description: "made-up explanation scores".into(),
        truth: Some(ExplainTruth {
            samples: 300,
            median_concepts: 19.0,
            positive_pairs: 900,
            scored_pairs: 700,
            top_is_driver: i(0.7),
            random_is_driver: i(0.08),
            top_minus_random: i(0.62),
            top_is_oracle_top: i(0.6),
            kendall_tau: Some(i(0.2)),
            tau_pairs: 700,
            driver_logit: 0.25,
        }),
        attention: Some(AttentionQuality {
            samples: 300,
            teacher_agreement: Some(i(0.61)),
            deletion_share: Some(i(0.67)),
            attention_vs_occlusion: None,
        }),
        figure_svg: Some("<svg xmlns=\"http://www.w3.org/2000/svg\"><text>visit</text></svg>".into()),
    }
}
