//! Writes MiniLM-L6-size bundles (random weights; see `ckd_benches::write_minilm_bundles`):
//! `minilm_bundle OUT_DIR [MAX_LEN]` (default 512) -> OUT_DIR/f32, OUT_DIR/int8, OUT_DIR/int8-emb.

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let out = args.next().context("usage: minilm_bundle OUT_DIR [MAX_LEN]")?;
    let max_len = match args.next() {
        Some(v) => v.parse().with_context(|| format!("MAX_LEN {v:?}"))?,
        None => 512,
    };
    ckd_benches::write_minilm_bundles(std::path::Path::new(&out), max_len)
}
