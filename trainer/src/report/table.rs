//! The report as text: number formats, the rows of the metrics and cost tables (shared with the
//! HTML page), the comparison and speed-up sentences, and the aligned terminal summary.

use std::fmt::Write as _;

use super::{fmt_difference, fmt_interval, Comparison, ReportJson};

/// A metric to 3 decimals, or `N/A` when undefined.
pub fn fmt3(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.3}"),
        _ => "N/A".to_string(),
    }
}

/// Bytes as MB (10^6) with 1 decimal.
pub(crate) fn fmt_mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

/// The rows of the metrics table: header, then one row per model.
pub(crate) fn metrics_rows(r: &ReportJson) -> Vec<Vec<String>> {
    let with_ci = r.intervals.is_some();
    let mut header: Vec<String> =
        ["model", "role", "N", "Hamming acc", "micro F1", "macro F1", "micro AUC", "macro AUC", "ECE"]
            .map(String::from)
            .to_vec();
    if with_ci {
        header[6] = "micro AUC [95% CI]".into();
        header[7] = "macro AUC [95% CI]".into();
        if r.intervals.as_ref().is_some_and(|s| s.reference.is_some()) {
            // Before ECE, so the last column stays numeric and the rows stay aligned.
            header.insert(8, "macro AUC - ref [paired 95% CI]".into());
        }
    }
    let mut rows = vec![header];
    for m in &r.models {
        let x = &m.metrics;
        let iv = m.intervals.as_ref();
        let (micro, macro_) = if with_ci {
            (fmt_interval(iv.and_then(|i| i.micro_auc.as_ref())), fmt_interval(iv.and_then(|i| i.macro_auc.as_ref())))
        } else {
            (fmt3(x.micro_auc), fmt3(x.macro_auc))
        };
        let mut row = vec![
            m.name.clone(),
            m.role.describe().to_string(),
            x.n_samples.to_string(),
            fmt3(Some(x.hamming_accuracy)),
            fmt3(Some(x.micro_f1)),
            fmt3(Some(x.macro_f1)),
            micro,
            macro_,
            fmt3(Some(x.ece)),
        ];
        if r.intervals.as_ref().is_some_and(|s| s.reference.is_some()) {
            let d = iv.and_then(|i| i.macro_auc_vs_reference.as_ref());
            row.insert(8, if d.is_none() { "(ref)".into() } else { fmt_difference(d) });
        }
        rows.push(row);
    }
    rows
}

/// The rows of the latency and size table: header, then one row per cost row.
pub(crate) fn cost_rows(r: &ReportJson) -> Vec<Vec<String>> {
    let mut rows = vec![["model", "precision", "size (MB)", "median latency (ms)", "samples/s", "device"]
        .map(String::from)
        .to_vec()];
    for c in &r.costs {
        rows.push(vec![
            c.model.clone(),
            c.precision.clone(),
            fmt_mb(c.size_bytes),
            format!("{:.2}", c.latency_ms_median),
            format!("{:.1}", c.samples_per_s),
            c.device.clone(),
        ]);
    }
    rows
}

/// `model vs against: macro-AUC +0.012 [-0.004, +0.027] (paired 95% CI): no measurable effect`.
pub(crate) fn comparison_sentence(c: &Comparison) -> String {
    format!(
        "Paired difference, {} vs {}: macro-AUC {} (95% CI, by patient): {}.",
        c.model,
        c.against,
        fmt_difference(Some(&c.macro_auc_diff)),
        c.verdict
    )
}

/// One sentence on the teacher vs student-int8 speed-up, when both cost rows exist.
pub(crate) fn speedup_sentence(r: &ReportJson) -> Option<String> {
    let s = r.speedup.as_ref()?;
    let x = |v: Option<f64>| v.map_or("N/A".to_string(), |v| format!("{v:.1}x"));
    Some(format!(
        "Speed-up of {} over {}: {} lower median latency, {} smaller.",
        s.student,
        s.teacher,
        x(s.latency),
        x(s.size)
    ))
}

/// Appends `rows` (header first, then a dashed rule) as left-aligned columns, numeric columns
/// right-aligned, two spaces apart.
fn text_table(out: &mut String, rows: &[Vec<String>]) {
    let ncol = rows.iter().map(Vec::len).max().unwrap_or(0);
    let cell = |r: &Vec<String>, c: usize| r.get(c).map_or("", String::as_str).to_string();
    let widths: Vec<usize> =
        (0..ncol).map(|c| rows.iter().map(|r| cell(r, c).chars().count()).max().unwrap_or(0)).collect();
    // A column whose data cells are all numbers (or N/A) is right-aligned, header included.
    let numeric: Vec<bool> = (0..ncol)
        .map(|c| rows.len() > 1 && rows[1..].iter().all(|r| cell(r, c) == "N/A" || cell(r, c).parse::<f64>().is_ok()))
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for c in 0..ncol {
            let text = cell(row, c);
            let pad = " ".repeat(widths[c].saturating_sub(text.chars().count()));
            if numeric[c] {
                line.push_str(&pad);
                line.push_str(&text);
            } else {
                line.push_str(&text);
                line.push_str(&pad);
            }
            line.push_str("  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * ncol.saturating_sub(1)));
            out.push('\n');
        }
    }
}

/// The aligned plain-text summary for the terminal: notes, the metrics table, the cost table and
/// the speed-up.
pub fn summary_table(r: &ReportJson) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", r.title);
    for n in &r.notes {
        let _ = writeln!(out, "NOTE: {n}");
    }
    if !r.data_description.is_empty() {
        let _ = writeln!(out, "Data: {}", r.data_description);
    }
    out.push('\n');
    if r.models.is_empty() {
        out.push_str("(no models evaluated)\n");
    } else {
        text_table(&mut out, &metrics_rows(r));
    }
    if let Some(reference) = r.intervals.as_ref().and_then(|s| s.reference.as_ref()) {
        let _ = writeln!(out, "ref = {reference}");
    }
    if let Some(s) = &r.intervals {
        let _ = writeln!(
            out,
            "Intervals: 95% bootstrap over the {} patients ({} resamples, seed {}); paired ones use the same resamples.",
            s.patients, s.resamples, s.seed
        );
    }
    for c in &r.comparisons {
        let _ = writeln!(out, "{}", comparison_sentence(c));
    }
    if !r.costs.is_empty() {
        out.push('\n');
        text_table(&mut out, &cost_rows(r));
    }
    if let Some(s) = speedup_sentence(r) {
        out.push('\n');
        out.push_str(&s);
        out.push('\n');
    }
    out
}
