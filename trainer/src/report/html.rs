//! The self-contained `report.html`: inline CSS and SVG, no scripts, no external resources.
//! Every caller-given string is escaped.

use std::fmt::Write as _;

use super::{comparison_sentence, cost_rows, fmt3, metrics_rows, speedup_sentence, Plot, ReportJson};

/// Escapes text for HTML element content and double- or single-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:2em auto;\
max-width:1120px;padding:0 1em;color:#222;line-height:1.4}\
h1{margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}\
.notes{background:#fff4ce;border:2px solid #e0a800;border-radius:6px;padding:.6em 1em;margin:1em 0}\
.notes li{font-weight:600;margin:.2em 0}.data{color:#444}\
table{border-collapse:collapse;margin:.8em 0;font-size:.95em}\
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}\
svg{max-width:100%;height:auto;display:block}.small{color:#555;font-size:.9em}";

fn is_num(cell: &str) -> bool {
    cell == "N/A" || cell.parse::<f64>().is_ok()
}

/// An HTML table from rows (the first is the header); numeric cells are right-aligned.
fn table(out: &mut String, rows: &[Vec<String>]) {
    out.push_str("<table>\n");
    for (i, row) in rows.iter().enumerate() {
        out.push_str("<tr>");
        for cell in row {
            let (tag, class) = if i == 0 {
                ("th", "")
            } else if is_num(cell) {
                ("td", " class=\"num\"")
            } else {
                ("td", "")
            };
            let _ = write!(out, "<{tag}{class}>{}</{tag}>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn notes(out: &mut String, r: &ReportJson) {
    if r.notes.is_empty() {
        return;
    }
    out.push_str("<div class=\"notes\"><ul>\n");
    for n in &r.notes {
        let _ = writeln!(out, "<li>{}</li>", escape(n));
    }
    out.push_str("</ul></div>\n");
}

fn per_label_table(out: &mut String, r: &ReportJson) {
    out.push_str(
        "<details><summary>Per-label figures (F1 / ROC-AUC / support)</summary>\n<table>\n<tr><th>phenotype</th>",
    );
    for m in &r.models {
        let _ = write!(out, "<th>{} F1</th><th>{} AUC</th>", escape(&m.name), escape(&m.name));
    }
    out.push_str("<th>support</th></tr>\n");
    for (i, name) in r.labels.iter().enumerate() {
        let _ = write!(out, "<tr><td>{}</td>", escape(name));
        for m in &r.models {
            let lr = m.metrics.per_label.get(i);
            let _ = write!(
                out,
                "<td class=\"num\">{}</td><td class=\"num\">{}</td>",
                fmt3(lr.map(|x| x.f1)),
                fmt3(lr.and_then(|x| x.auc))
            );
        }
        let support = r.models.first().and_then(|m| m.metrics.per_label.get(i)).map_or(0, |x| x.support);
        let _ = writeln!(out, "<td class=\"num\">{support}</td></tr>");
    }
    out.push_str("</table></details>\n");
}

fn explanations(out: &mut String, r: &ReportJson) {
    out.push_str("<h2 id=\"explanations\">Example explanations</h2>\n");
    if r.explanations.is_empty() {
        out.push_str("<p class=\"small\">No explanations were given.</p>\n");
        return;
    }
    out.push_str(
        "<p class=\"small\">The teacher's attention evidence is one distribution per sample, shared by every \
         phenotype: the concepts it read most, not a per-phenotype attribution.</p>\n",
    );
    out.push_str("<table>\n<tr><th>sample</th><th>most probable phenotype</th><th>probability</th><th>concepts with the most attention evidence (weight)</th></tr>\n");
    for e in &r.explanations {
        let concepts: Vec<String> = e.concepts.iter().map(|(c, w)| format!("{} ({:.3})", escape(c), w)).collect();
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{:.3}</td><td>{}</td></tr>",
            escape(&e.sample_id),
            escape(&e.phenotype),
            e.prob,
            concepts.join("<br>")
        );
    }
    out.push_str("</table>\n");
}

/// The explanation-quality section, when measured.
fn explanation_scores(out: &mut String, r: &ReportJson) {
    let Some(x) = &r.explanation_scores else { return };
    out.push_str("<h2 id=\"explanation_quality\">How good the explanations are</h2>\n");
    let _ = writeln!(out, "<p class=\"data\">{}</p>", escape(&x.description));
    let ci = |i: &ckd_core::bootstrap::Interval| format!("{:.3} [{:.3}, {:.3}]", i.estimate, i.lo, i.hi);
    let mut rows = vec![vec!["measure".to_string(), "mean [95% CI]".to_string(), "reference".to_string()]];
    if let Some(t) = &x.truth {
        rows.push(vec![
            format!("occlusion: the top concept drives the phenotype ({} scored positive predictions)", t.scored_pairs),
            ci(&t.top_is_driver),
            format!("a random concept of the visit: {}", ci(&t.random_is_driver)),
        ]);
        rows.push(vec!["occlusion: the top concept is the oracle's".into(), ci(&t.top_is_oracle_top), String::new()]);
        if let Some(k) = &t.kendall_tau {
            rows.push(vec!["occlusion vs the oracle's effects (Kendall tau-b)".into(), ci(k), "0: unrelated".into()]);
        }
    }
    if let Some(a) = &x.attention {
        let opt = |i: &Option<ckd_core::bootstrap::Interval>| i.as_ref().map_or("not measured".into(), ci);
        rows.push(vec![
            "student attention vs the teacher's evidence (Kendall tau-b)".into(),
            opt(&a.teacher_agreement),
            "1: the same ranking".into(),
        ]);
        rows.push(vec![
            "deletion test: the concept of most attention vs the others".into(),
            opt(&a.deletion_share),
            "0.5: chance".into(),
        ]);
        rows.push(vec![
            "student attention vs occlusion (Kendall tau-b)".into(),
            opt(&a.attention_vs_occlusion),
            "0: unrelated".into(),
        ]);
    }
    table(out, &rows);
    if let Some(svg) = &x.figure_svg {
        out.push_str("<p class=\"small\">One test visit shaded by each kind of evidence (darker: more).</p>\n");
        out.push_str(svg);
    }
}

/// The whole page. `plots` are inlined in order, each under its own heading.
pub fn render_html(r: &ReportJson, plots: &[Plot]) -> String {
    let mut out = String::with_capacity(64 * 1024 + plots.iter().map(|p| p.svg.len()).sum::<usize>());
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&r.title),
        escape(&r.title)
    );
    notes(&mut out, r);
    if !r.data_description.is_empty() {
        let _ = writeln!(out, "<p class=\"data\"><b>Data:</b> {}</p>", escape(&r.data_description));
    }

    out.push_str("<h2 id=\"metrics\">Metrics on the test split</h2>\n");
    if r.models.is_empty() {
        out.push_str("<p class=\"small\">No models were evaluated.</p>\n");
    } else {
        table(&mut out, &metrics_rows(r));
        out.push_str(
            "<p class=\"small\">Hamming accuracy and F1 at each model's decision thresholds; ROC-AUC from the \
             probabilities (micro: over all sample-label pairs; macro: mean over the labels where it is defined). \
             ECE over all sample-label pairs with 10 bins. N/A: undefined (a label or the whole set has a single \
             class).</p>\n",
        );
        if let Some(iv) = &r.intervals {
            let _ = writeln!(
                out,
                "<p class=\"small\">Intervals: 95% percentile bootstrap, {} resamples of the {} patients (seed {}); \
                 paired intervals use the same resamples for both models.</p>",
                iv.resamples, iv.patients, iv.seed
            );
        }
        if !r.comparisons.is_empty() {
            out.push_str("<ul>\n");
            for c in &r.comparisons {
                let _ = writeln!(out, "<li>{}</li>", escape(&comparison_sentence(c)));
            }
            out.push_str("</ul>\n");
        }
        per_label_table(&mut out, r);
    }

    for p in plots {
        let id = p.file_name.trim_end_matches(".svg");
        let _ = writeln!(out, "<h2 id=\"{}\">{}</h2>", escape(id), escape(p.title));
        // Inline the <svg> element itself (drop any XML prolog).
        let svg = p.svg.find("<svg").map_or(p.svg.as_str(), |i| &p.svg[i..]);
        out.push_str(svg);
        out.push('\n');
    }
    if !r.curves.iter().any(|c| !c.points.is_empty()) {
        out.push_str(
            "<h2 id=\"training_curves\">Training curves</h2>\n<p class=\"small\">No training curves were given.</p>\n",
        );
    }

    out.push_str("<h2 id=\"costs\">Latency and size</h2>\n");
    if r.costs.is_empty() {
        out.push_str("<p class=\"small\">No latency or size measurements were given.</p>\n");
    } else {
        table(&mut out, &cost_rows(r));
        if let Some(s) = speedup_sentence(r) {
            let _ = writeln!(out, "<p><b>{}</b></p>", escape(&s));
        }
    }

    explanations(&mut out, r);
    explanation_scores(&mut out, r);

    if !r.provenance.is_empty() {
        out.push_str("<h2 id=\"provenance\">Provenance</h2>\n<table>\n");
        for (k, v) in &r.provenance {
            let _ = writeln!(out, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(v));
        }
        out.push_str("</table>\n");
    }
    let _ = writeln!(
        out,
        "<p class=\"small\">report.json format version {}; label space hash {:016x}.</p>\n</body>\n</html>",
        r.format_version, r.label_space_hash
    );
    out
}
