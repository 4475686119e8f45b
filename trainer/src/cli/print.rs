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
        "{} patients, {} admissions -> samples: {:?}; admissions without diagnoses: {}; diagnoses without category title: {}; procedures without title: {}",
        s.patients,
        s.admissions,
        s.samples,
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
