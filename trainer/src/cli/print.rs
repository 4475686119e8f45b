//! What the command line prints: messages to stderr that never panic, results to stdout that
//! end the command quietly when the reader has gone (`ckd explain ... | head -1`), and the
//! tables of ingest and evaluation.

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use ckd_core::metrics::Report;
use ckd_core::PHENOTYPES;
use ckd_trainer::ingest::IngestSummary;

/// Writes one line to stderr. A failing stderr (`2>/dev/full`, a closed pipe) is ignored: a
/// message must never turn into a panic or change the exit status.
pub fn note(args: fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{args}");
}

/// `eprintln!` that never panics (see [`note`]).
macro_rules! note {
    ($($arg:tt)*) => { $crate::cli::print::note(format_args!($($arg)*)) };
}

/// A failed write to stdout. `main` ends the command with status 0 and no message when the
/// kind is `BrokenPipe` (the reader closed the pipe, as `head` does) and reports any other
/// (`>/dev/full`) as an error.
#[derive(Debug, thiserror::Error)]
#[error("writing to standard output: {0}")]
pub struct StdoutError(#[from] pub std::io::Error);

/// Writes `args` and a newline to stdout, flushed.
pub fn out(args: fmt::Arguments<'_>) -> Result<(), StdoutError> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{args}")?;
    Ok(o.flush()?)
}

/// Writes `text` to stdout as it is (no newline added), flushed.
pub fn out_text(text: &str) -> Result<(), StdoutError> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())?;
    Ok(o.flush()?)
}

/// `println!` that returns [`StdoutError`] instead of panicking: `outln!(...)?`.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::print::out(format_args!($($arg)*)) };
}

/// Samples per split as text, in split order: `train 166, val 17, test 17`.
pub fn split_counts(counts: &std::collections::BTreeMap<&'static str, u64>) -> String {
    let order = ["train", "val", "test"];
    let rank = |k: &str| order.iter().position(|o| *o == k).unwrap_or(order.len());
    let mut v: Vec<(&&str, &u64)> = counts.iter().collect();
    v.sort_by_key(|(k, _)| rank(k));
    v.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
}

/// A size for people: `512 B`, `2.0 KiB`, `11.3 MiB`, `1.20 GiB`.
pub fn human_size(bytes: u64) -> String {
    const K: f64 = 1024.0;
    let b = bytes as f64;
    if b < K {
        format!("{bytes} B")
    } else if b < K * K {
        format!("{:.1} KiB", b / K)
    } else if b < K * K * K {
        format!("{:.1} MiB", b / (K * K))
    } else {
        format!("{:.2} GiB", b / (K * K * K))
    }
}

/// One line per file of a bundle (indented name, size for people, exact bytes), for `ckd
/// export` and `ckd pack`.
pub fn file_lines(files: &[(String, u64)]) -> Vec<String> {
    let width = files.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    files.iter().map(|(n, b)| format!("  {n:<width$}  {:>10}  ({b} bytes)", human_size(*b))).collect()
}

/// The per-table counts of an ingest (stderr).
pub fn ingest_summary(s: &IngestSummary, out: &Path, secs: f64) {
    note!("{:<18} {:>10} {:>10} {:>10}  skipped because", "table", "read", "used", "skipped");
    for (name, t) in &s.tables {
        let skipped: u64 = t.skipped.values().sum();
        let why: Vec<String> = t
            .skipped
            .iter()
            .map(|(k, v)| {
                let lines: Vec<String> = t.first_lines.get(k).into_iter().flatten().map(u64::to_string).collect();
                let more = if *v > lines.len() as u64 { ", ..." } else { "" };
                format!("{k}: {v} (line {}{more})", lines.join(", "))
            })
            .collect();
        note!("{:<18} {:>10} {:>10} {:>10}  {}", name, t.rows_read, t.rows_used, skipped, why.join(", "));
    }
    note!(
        "{} patients, {} admissions -> samples: {}; admissions without diagnoses: {}; diagnoses without category title: {}; procedures without title: {}",
        s.patients,
        s.admissions,
        split_counts(&s.samples),
        s.admissions_without_diagnoses,
        s.diagnoses_without_category_title,
        s.procedures_without_title
    );
    for w in &s.warnings {
        note!("warning: {w}");
    }
    note!("wrote {} ({:.1} s)", out.display(), secs);
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "   n/a".to_string(), |x| format!("{x:6.4}"))
}

/// The student's metrics per label (stdout).
pub fn per_label(r: &Report) -> Result<(), StdoutError> {
    outln!("per label (student):")?;
    outln!(
        "{:<58} {:>7} {:>6} {:>6} {:>6} {:>7} {:>7} {:>6}",
        "phenotype",
        "support",
        "P",
        "R",
        "F1",
        "AUC",
        "AUPR",
        "thr"
    )?;
    for (i, l) in r.per_label.iter().enumerate() {
        outln!(
            "{:<58} {:>7} {:6.3} {:6.3} {:6.3} {:>7} {:>7} {:6.3}",
            PHENOTYPES[i].name,
            l.support,
            l.precision,
            l.recall,
            l.f1,
            fmt_opt(l.auc),
            fmt_opt(l.aupr),
            l.threshold
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes and counts are printed for people, not as Rust `Debug` (`[("manifest.bin", 2044)]`).
    #[test]
    fn sizes_and_counts_read_as_text() {
        let files = vec![("manifest.bin".to_string(), 2044), ("model.onnx.data".to_string(), 11_842_560)];
        assert_eq!(
            file_lines(&files),
            ["  manifest.bin        2.0 KiB  (2044 bytes)", "  model.onnx.data    11.3 MiB  (11842560 bytes)"]
        );
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(3 << 30), "3.00 GiB");
        let counts = [("test", 17), ("train", 166), ("val", 17)].into_iter().collect();
        assert_eq!(split_counts(&counts), "train 166, val 17, test 17");
    }
}
