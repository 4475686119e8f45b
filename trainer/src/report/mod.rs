//! The demo report: `report.json`, `report.html` (self-contained, inline SVG) and `plots/*.svg`.
//!
//! The caller hands over what each model predicted on the same test samples ([`ModelResult`]:
//! probabilities `[N, 25]`, targets, thresholds), training curves, latency and size rows,
//! example explanations, notes and provenance ([`ReportInput`]). Every metric is computed here
//! with [`ckd_core::metrics::evaluate_label_sets`], so the numbers equal those of `ckd eval`.
//!
//! [`build`] validates the input and computes the versioned [`ReportJson`]; [`render_plots`] and
//! [`render_html`] turn a `ReportJson` (alone: the HTML can be rebuilt from `report.json`) into
//! SVG and HTML; [`write()`] does all of it and writes the files atomically; [`summary_table`] is
//! the aligned text table for the terminal.

mod build;
mod curves;
mod error;
mod evidence_svg;
mod html;
pub mod intervals;
mod plots;
mod roc;
mod table;
mod types;
mod write;

pub use build::{build, macro_auc, targets, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CALIBRATION_BINS, ROC_RESOLUTION};
pub use curves::{parse_curves, read_curves, Curve, CurvePoint, PointKind};
use error::io_err;
pub use error::ReportError;
pub use evidence_svg::{evidence_svg, EvidencePanel};
pub use html::render_html;
pub use intervals::{fmt_difference, fmt_interval, verdict, Comparison, IntervalSettings, ModelIntervals};
pub use plots::{render_plots, Plot};
pub use roc::{roc_points, thin_curve, trapezoid_area};
pub(crate) use table::{comparison_sentence, cost_rows, metrics_rows, speedup_sentence};
pub use table::{fmt3, summary_table};
pub use types::{
    CostRow, Explanation, ExplanationScores, ModelReport, ModelResult, ReportInput, ReportJson, Role, Speedup,
    FORMAT_VERSION,
};
pub use write::write;

#[cfg(test)]
mod tests;
