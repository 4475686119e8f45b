//! Writes the report of a made-up input (the one the report's unit tests read:
//! `src/report/tests/fixture.rs`) into DIR, for a person to look at how a report renders, and
//! prints its terminal table.
//!
//! `cargo run -p ckd-trainer --example example_report -- DIR`

use ckd_core::labels::{LabelSet, NUM_LABELS};
use ckd_trainer::attention_evidence::AttentionQuality;
use ckd_trainer::explain_truth::ExplainTruth;
use ckd_trainer::report::{
    summary_table, write, CostRow, Curve, CurvePoint, Explanation, ExplanationScores, ModelResult, PointKind,
    ReportInput, Role,
};

#[path = "../src/report/tests/fixture.rs"]
mod fixture;

fn main() -> anyhow::Result<()> {
    let Some(dir) = std::env::args_os().nth(1) else {
        anyhow::bail!("usage: example_report DIR");
    };
    let r = write(std::path::Path::new(&dir), &fixture::fake_input())?;
    println!("{}", summary_table(&r));
    Ok(())
}
