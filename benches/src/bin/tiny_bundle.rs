//! Writes the edge runtime's test fixture (see `ckd_benches::write_tiny_bundle`):
//! `tiny_bundle OUT_DIR [f32|int8]` (default int8) -> OUT_DIR/bundle, OUT_DIR/rows.jsonl.

use anyhow::{bail, Context, Result};
use ckd_trainer::export::Precision;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let out = args.next().context("usage: tiny_bundle OUT_DIR [f32|int8]")?;
    let precision = match args.next().as_deref() {
        None | Some("int8") => Precision::Int8,
        Some("f32") => Precision::F32,
        Some(p) => bail!("unknown precision {p:?} (f32 or int8)"),
    };
    ckd_benches::write_tiny_bundle(std::path::Path::new(&out), precision)
}
