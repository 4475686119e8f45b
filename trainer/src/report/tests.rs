use std::path::Path;

use ckd_core::labels::{LabelSet, NUM_LABELS};
use ckd_core::metrics::{evaluate_label_sets, roc_auc, targets_from_label_sets, MetricsError};

use super::*;
use crate::attention_evidence::AttentionQuality;
use crate::explain_truth::ExplainTruth;
use crate::io::pretty_json;

mod fixture;

use fixture::{fake_input, fake_labels, fake_model};

fn flat(m: &ModelResult) -> Vec<f32> {
    m.probs.iter().flatten().copied().collect()
}

#[test]
fn json_has_every_model_and_metric_equal_to_core_metrics() {
    let input = fake_input();
    let r = build(&input).unwrap();
    assert_eq!(r.format_version, FORMAT_VERSION);
    assert_eq!(r.labels.len(), NUM_LABELS);
    assert_eq!(r.models.len(), 5);
    for (m, mr) in input.models.iter().zip(&r.models) {
        assert_eq!(mr.name, m.name);
        assert_eq!(mr.role, m.role);
        let expected = evaluate_label_sets(&flat(m), &m.labels, &m.thresholds, CALIBRATION_BINS).unwrap();
        assert_eq!(mr.metrics, expected);
        assert!(mr.metrics.micro_auc.is_some() && mr.metrics.macro_auc.is_some());
    }
    // Better models score higher (the fake data is informative; this guards against a mix-up).
    assert!(r.models[4].metrics.macro_auc > r.models[1].metrics.macro_auc);
    let json: serde_json::Value = serde_json::from_str(&pretty_json(&r)).unwrap();
    assert_eq!(json["format_version"], FORMAT_VERSION);
    for (i, m) in input.models.iter().enumerate() {
        let jm = &json["models"][i];
        assert_eq!(jm["name"], m.name.as_str());
        for key in ["hamming_accuracy", "micro_f1", "macro_f1", "micro_auc", "macro_auc", "ece", "per_label"] {
            assert!(!jm["metrics"][key].is_null(), "model {i} lacks {key}");
        }
        assert_eq!(jm["metrics"]["per_label"].as_array().unwrap().len(), NUM_LABELS);
    }
    assert_eq!(json["models"][3]["role"], "student_int8");
    let back: ReportJson = serde_json::from_str(&pretty_json(&r)).unwrap();
    assert_eq!(back.models.len(), 5);
    assert_eq!(back.speedup, r.speedup);
}

#[test]
fn roc_points_of_a_hand_made_case() {
    // Descending: .9 (pos), .8 tie (pos, neg), .3 (neg), .1 (neg). P = 2, N = 3.
    let scores = [0.8, 0.1, 0.9, 0.3, 0.8];
    let targets = [1, 0, 1, 0, 0];
    let pts = roc_points(&scores, &targets).unwrap();
    let expected = [(0.0, 0.0), (0.0, 0.5), (1.0 / 3.0, 1.0), (2.0 / 3.0, 1.0), (1.0, 1.0)];
    assert_eq!(pts.len(), expected.len(), "{pts:?}");
    for (p, e) in pts.iter().zip(expected) {
        assert!((p.0 - e.0).abs() < 1e-12 && (p.1 - e.1).abs() < 1e-12, "{pts:?}");
    }
    // Mann–Whitney by hand: .9 beats 3 negatives, .8 beats 2 and ties 1 → 5.5 / 6.
    assert!((trapezoid_area(&pts) - 5.5 / 6.0).abs() < 1e-12);
    // Single-class targets have no ROC curve.
    assert_eq!(roc_points(&[0.1, 0.2], &[0, 0]), None);
    assert_eq!(roc_points(&[0.1, 0.2], &[1, 1]), None);
}

#[test]
fn roc_area_equals_core_micro_auc() {
    let input = fake_input();
    for m in &input.models {
        let probs = flat(m);
        let targets = targets_from_label_sets(&m.labels);
        let full = roc_points(&probs, &targets).unwrap();
        let auc = roc_auc(&probs, &targets, NUM_LABELS).unwrap().micro.unwrap();
        assert!((trapezoid_area(&full) - auc).abs() < 1e-9, "{}: {} vs {auc}", m.name, trapezoid_area(&full));
        // The stored curve is thinned but keeps its ends and stays close in area.
        let stored = thin_curve(&full, ROC_RESOLUTION);
        assert_eq!(stored.first(), Some(&(0.0, 0.0)));
        assert_eq!(stored.last(), Some(&(1.0, 1.0)));
        assert!((trapezoid_area(&stored) - auc).abs() < 0.01);
    }
}

#[test]
fn thinning_drops_only_close_points() {
    let pts = [(0.0, 0.0), (0.0001, 0.0), (0.0002, 0.5), (0.0003, 0.5001), (1.0, 1.0)];
    assert_eq!(thin_curve(&pts, 0.01), vec![(0.0, 0.0), (0.0002, 0.5), (1.0, 1.0)]);
}

#[test]
fn calibration_bins_hand_computed() {
    // Sample 0: label 0 at .95 (positive), others .05. Sample 1: label 1 at .75 (negative),
    // label 2 positive at .05, others .05.
    let mut p0 = vec![0.05f32; NUM_LABELS];
    p0[0] = 0.95;
    let mut p1 = vec![0.05f32; NUM_LABELS];
    p1[1] = 0.75;
    let labels = vec![LabelSet::from_labels([0]), LabelSet::from_labels([2])];
    let input = ReportInput {
        models: vec![ModelResult {
            name: "m".into(),
            role: Role::Other,
            probs: vec![p0, p1],
            labels,
            thresholds: vec![0.5; NUM_LABELS],
        }],
        ..ReportInput::default()
    };
    let r = build(&input).unwrap();
    let bins = &r.models[0].metrics.calibration;
    assert_eq!(bins.len(), CALIBRATION_BINS);
    let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-6;
    // Bin 0: 48 entries at .05, one positive (label 2 of sample 1).
    assert_eq!(bins[0].count, 48);
    assert!(close(bins[0].mean_predicted, 0.05) && close(bins[0].observed_frequency, 1.0 / 48.0));
    assert_eq!((bins[7].count, bins[9].count), (1, 1));
    assert!(close(bins[7].mean_predicted, 0.75) && close(bins[7].observed_frequency, 0.0));
    assert!(close(bins[9].mean_predicted, 0.95) && close(bins[9].observed_frequency, 1.0));
    for b in [1, 2, 3, 4, 5, 6, 8] {
        assert_eq!((bins[b].count, bins[b].mean_predicted), (0, None), "bin {b}");
    }
    // ECE = (|48·.05 − 1| + .75 + .05) / 50 = 2.2 / 50.
    assert!((r.models[0].metrics.ece - 2.2 / 50.0).abs() < 1e-6);
}

#[test]
fn html_has_one_svg_per_plot_and_escapes_text() {
    let mut input = fake_input();
    input.models[0].name = "<script>alert(1)</script>".into();
    input.curves[0].model = input.models[0].name.clone();
    input.notes.push("a & b <script>x</script>".into());
    input.provenance.push(("k\"".into(), "<img src=x onerror=alert(1)>".into()));
    let r = build(&input).unwrap();
    let plots = render_plots(&r).unwrap();
    assert_eq!(
        plots.iter().map(|p| p.file_name).collect::<Vec<_>>(),
        ["per_label_f1.svg", "roc.svg", "calibration.svg", "training_curves.svg"]
    );
    for p in &plots {
        assert!(p.svg.trim_start().starts_with("<svg"), "{}", p.file_name);
        assert_eq!(p.svg.matches("<svg").count(), 1);
        assert!(p.svg.trim_end().ends_with("</svg>"), "{}", p.file_name);
        assert!(!p.svg.contains("<script"), "{}", p.file_name);
    }
    let html = render_html(&r, &plots);
    assert_eq!(html.matches("<svg").count(), plots.len() + 1, "the plots and the evidence figure");
    assert!(html.contains("How good the explanations are") && html.contains("made-up explanation scores"));
    assert!(html.contains("0.700 [0.650, 0.750]") && html.contains("not measured"));
    assert!(!html.contains("<script"), "unescaped script tag");
    assert!(!html.contains("<img"), "unescaped img tag");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("a &amp; b"));
    assert!(html.contains("k&quot;"));
    // Self-contained: nothing is loaded from elsewhere.
    for needle in ["<link", "src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(needle), "{needle}");
    }
    // Notes come before the first result table.
    let note = html.find("The data is synthetic.").unwrap();
    assert!(note < html.find("<table").unwrap());
    // Axis titles, and one legend entry per model in the ROC plot.
    assert!(plots[1].svg.contains("False positive rate") && plots[1].svg.contains("True positive rate"));
    assert!(plots[1].svg.contains("student KD int8 (micro AUC "));
    assert!(plots[0].svg.contains("Chronic kidney disease"));
    assert!(plots[2].svg.contains("perfectly calibrated"));
}

#[test]
fn training_curves_plot_is_left_out_without_curves() {
    let mut input = fake_input();
    input.curves.clear();
    input.explanation_scores = None;
    let r = build(&input).unwrap();
    let plots = render_plots(&r).unwrap();
    assert_eq!(plots.len(), 3);
    let html = render_html(&r, &plots);
    assert_eq!(html.matches("<svg").count(), 3);
    assert!(!html.contains("How good the explanations are"), "no section without scores");
    assert!(html.contains("No training curves were given."));
}

#[test]
fn undefined_auc_shows_na() {
    // No sample has any label: every AUC is undefined.
    let labels = vec![LabelSet::EMPTY; 4];
    let mut m = fake_model("empty", Role::Student, &labels, 1.0, 9);
    m.labels = labels;
    let input = ReportInput { models: vec![m], ..ReportInput::default() };
    let r = build(&input).unwrap();
    assert_eq!((r.models[0].metrics.micro_auc, r.models[0].metrics.macro_auc), (None, None));
    assert_eq!(r.models[0].roc, None);
    let summary = summary_table(&r);
    let row = summary.lines().find(|l| l.starts_with("empty")).unwrap();
    assert_eq!(row.matches("N/A").count(), 2, "{row}");
    let html = render_html(&r, &render_plots(&r).unwrap());
    assert!(html.contains("<td class=\"num\">N/A</td>"));
    let json: serde_json::Value = serde_json::from_str(&pretty_json(&r)).unwrap();
    assert!(json["models"][0]["metrics"]["micro_auc"].is_null());
}

#[test]
fn speedup_and_summary_table() {
    let r = build(&fake_input()).unwrap();
    let s = r.speedup.as_ref().unwrap();
    assert_eq!((s.teacher.as_str(), s.student.as_str()), ("teacher", "student KD int8"));
    assert_eq!((s.latency, s.size), (Some(20.0), Some(40.0)));
    let t = summary_table(&r);
    assert!(t.contains("NOTE: The data is synthetic."));
    assert!(t.contains("20.0x lower median latency, 40.0x smaller"));
    // The five model rows are aligned: equal length, numbers right-aligned in equal columns.
    let rows: Vec<&str> = t.lines().filter(|l| input_names().iter().any(|n| l.starts_with(n))).collect();
    assert_eq!(rows.len(), 5 + 2, "{t}"); // 5 metric rows + 2 cost rows
    let metric_rows = &rows[..5];
    assert!(metric_rows.iter().all(|l| l.len() == metric_rows[0].len()), "{t}");
    let m0 = &r.models[0].metrics;
    assert!(metric_rows[0].contains(&format!("{:.3}", m0.macro_f1)));
    // No speed-up without both rows; a zero student latency gives N/A.
    let mut input = fake_input();
    input.costs.truncate(1);
    assert_eq!(build(&input).unwrap().speedup, None);
    let mut input = fake_input();
    input.costs[1].latency_ms_median = 0.0;
    assert_eq!(build(&input).unwrap().speedup.unwrap().latency, None);
}

fn input_names() -> Vec<String> {
    fake_input().models.iter().map(|m| m.name.clone()).collect()
}

#[test]
fn bad_input_names_model_and_field() {
    let mut input = fake_input();
    input.models[2].probs[7].pop();
    let e = build(&input).unwrap_err().to_string();
    assert!(e.contains("student KD f32") && e.contains("row 7"), "{e}");

    let mut input = fake_input();
    input.models[1].probs[3][4] = f32::NAN;
    match build(&input).unwrap_err() {
        ReportError::Metrics { model, source: MetricsError::NanProbability { sample, label, .. } } => {
            assert_eq!((model.as_str(), sample, label), ("student (no KD)", 3, 4));
        }
        e => panic!("unexpected {e}"),
    }

    let mut input = fake_input();
    input.models[0].probs[0][0] = 1.5;
    assert!(matches!(build(&input), Err(ReportError::Metrics { .. })));

    let mut input = fake_input();
    input.models[0].thresholds.pop();
    assert!(build(&input).unwrap_err().to_string().contains("24 thresholds"));

    let mut input = fake_input();
    input.models[1].labels.pop();
    assert!(build(&input).unwrap_err().to_string().contains("label sets"));

    let mut input = fake_input();
    input.models[1].name = "teacher".into();
    assert!(build(&input).unwrap_err().to_string().contains("two models are named \"teacher\""));

    let mut input = fake_input();
    input.costs[0].latency_ms_median = f64::NAN;
    assert!(build(&input).unwrap_err().to_string().contains("cost row \"teacher\": latency_ms_median"));

    let mut input = fake_input();
    input.explanations[0].concepts[1].1 = f32::INFINITY;
    assert!(build(&input).unwrap_err().to_string().contains("explanation 0"));
}

#[test]
fn reads_the_student_trainers_curves_jsonl() {
    use crate::student::CurvePoint as S;
    let records = [
        S::Step {
            step: 1,
            epoch: 0,
            lr: 1e-4,
            loss: 0.7,
            hard: Some(0.6),
            soft: None,
            attn: [None; 3],
            grad_norm: 1.0,
        },
        S::Step {
            step: 2,
            epoch: 0,
            lr: 1e-4,
            loss: 0.5,
            hard: Some(0.4),
            soft: None,
            attn: [None; 3],
            grad_norm: 1.0,
        },
        S::Epoch { epoch: 0, step: 2, val_macro_f1: 0.31, val_macro_auc: Some(0.8), train_loss: 0.6 },
        S::Epoch { epoch: 1, step: 4, val_macro_f1: 0.42, val_macro_auc: None, train_loss: 0.4 },
    ];
    let mut text: String = records.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
    text.push('\n'); // a trailing blank line is fine
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("curves.jsonl");
    std::fs::write(&path, &text).unwrap();
    let c = read_curves(&path, "student").unwrap();
    assert_eq!(c.model, "student");
    assert_eq!(c.points.len(), 4);
    assert_eq!((c.points[0].kind, c.points[0].step, c.points[0].loss), (PointKind::Step, 1, Some(0.7)));
    assert_eq!(c.points[1].epoch, Some(0));
    let e = &c.points[3];
    assert_eq!((e.kind, e.step, e.epoch), (PointKind::Epoch, 4, Some(1)));
    assert_eq!((e.loss, e.val_macro_f1, e.val_macro_auc), (Some(0.4), Some(0.42), None));

    let bad = format!("{text}{{\"kind\": \"epoch\", \"epoch\": 2}}\n");
    let e = parse_curves(&bad, Path::new("x/curves.jsonl"), "s").unwrap_err().to_string();
    assert!(e.starts_with("x/curves.jsonl, line 6:") && e.contains("step"), "{e}");
    let e = parse_curves("{\"kind\": \"eval\", \"step\": 1}", Path::new("c"), "s").unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("\"eval\""), "{e}");
    let missing = d.path().join("none.jsonl");
    assert!(matches!(read_curves(&missing, "s"), Err(ReportError::Io { .. })));
}

#[test]
fn write_creates_json_html_and_plots() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("runs/demo");
    let r = write(&dir, &fake_input()).unwrap();
    let back: ReportJson = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(back.models.len(), r.models.len());
    assert_eq!(back.models[2].metrics.per_label, r.models[2].metrics.per_label);
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    let mut names: Vec<String> =
        std::fs::read_dir(dir.join("plots")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["calibration.svg", "per_label_f1.svg", "roc.svg", "training_curves.svg"]);
    let mut top: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    top.sort();
    assert_eq!(top, ["plots", "report.html", "report.json"]);
}

#[test]
fn from_flat_splits_rows_and_checks_length() {
    let m = fake_model("m", Role::Student, &fake_labels(6, 3), 1.0, 1);
    let flat_probs = flat(&m);
    let back = ModelResult::from_flat("m", Role::Student, &flat_probs, m.labels.clone(), m.thresholds.clone()).unwrap();
    assert_eq!(back, m);
    let e = ModelResult::from_flat("m", Role::Student, &flat_probs[1..], m.labels.clone(), m.thresholds.clone())
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"m\"") && e.contains("149 probabilities for 6 samples, expected 150"), "{e}");
}

#[test]
fn empty_report_renders() {
    let input = ReportInput { title: "t".into(), notes: vec!["synthetic".into()], ..ReportInput::default() };
    let r = build(&input).unwrap();
    assert!(r.models.is_empty() && r.speedup.is_none());
    let plots = render_plots(&r).unwrap();
    assert_eq!(plots.len(), 3);
    let html = render_html(&r, &plots);
    assert!(html.contains("No models were evaluated.") && html.contains("<li>synthetic</li>"));
    let s = summary_table(&r);
    assert!(s.contains("NOTE: synthetic") && s.contains("(no models evaluated)"), "{s}");
}

/// Intervals by patient: each model's macro-AUC interval contains its estimate, the reference
/// model has no paired difference, the oracle (better scores) is measurably above it, and the
/// terminal table shows both.
#[test]
fn intervals_by_patient_and_paired_differences() {
    let input = fake_input();
    let r = build(&input).unwrap();
    let s = r.intervals.as_ref().expect("settings");
    assert_eq!((s.resamples, s.patients), (BOOTSTRAP_RESAMPLES, 150));
    for m in &r.models {
        let iv = m.intervals.as_ref().unwrap().macro_auc.unwrap();
        assert!(iv.lo <= iv.estimate && iv.estimate <= iv.hi, "{}: {iv:?}", m.name);
        assert_eq!(Some(iv.estimate), m.metrics.macro_auc);
        assert!(iv.hi - iv.lo > 0.0 && iv.hi - iv.lo < 0.2, "{}: {iv:?}", m.name);
    }
    let by = |n: &str| r.models.iter().find(|m| m.name == n).unwrap().intervals.clone().unwrap();
    assert!(by("student (no KD)").macro_auc_vs_reference.is_none());
    let d = by("oracle").macro_auc_vs_reference.unwrap();
    assert!(d.above_zero(), "{d:?}");
    let table = summary_table(&r);
    assert!(table.contains("macro AUC [95% CI]") && table.contains("ref = student (no KD)"), "{table}");
    // Same input, same intervals (seeded).
    assert_eq!(build(&input).unwrap().models[0].intervals, r.models[0].intervals);
    // Wrong number of patient ids is an error naming the model.
    let mut bad = fake_input();
    bad.subjects.pop();
    assert!(matches!(build(&bad), Err(ReportError::Invalid(m)) if m.contains("patient ids")));
}
