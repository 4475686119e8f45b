//! The report's files: `report.json`, `report.html` and `plots/*.svg`, each written atomically.

use std::path::Path;

use super::{build, io_err, render_html, render_plots, ReportError, ReportInput, ReportJson};
use crate::io::{pretty_json, write_atomic};

/// Builds the report and writes `dir/report.json`, `dir/report.html` and `dir/plots/*.svg`,
/// each atomically. Returns what was written to `report.json`.
pub fn write(dir: &Path, input: &ReportInput) -> Result<ReportJson, ReportError> {
    let report = build(input)?;
    let plots = render_plots(&report)?;
    let html = render_html(&report, &plots);
    for p in &plots {
        let path = dir.join("plots").join(p.file_name);
        write_atomic(&path, p.svg.as_bytes()).map_err(io_err(&path))?;
    }
    let path = dir.join("report.json");
    write_atomic(&path, pretty_json(&report).as_bytes()).map_err(io_err(&path))?;
    let path = dir.join("report.html");
    write_atomic(&path, html.as_bytes()).map_err(io_err(&path))?;
    Ok(report)
}
