//! Resident memory of the edge runtime: after opening a bundle and after one prediction of
//! `--tokens` tokens (Linux: `VmRSS` and its peak `VmHWM` from /proc/self/status), and the
//! wall time of `Engine::open_with` (drop the page cache first for a cold open).
//!
//! ```text
//! cargo run --release -p ckd-edge --example load_memory -- BUNDLE_DIR [TOKENS] [THREADS]
//! ```
//!
//! Like the `ckd-edge` CLI, it first calls `memory::use_mmap_for_large_allocations` (set
//! `CKD_DEFAULT_MALLOC=1` to skip that and see glibc's default behaviour).
//! `scripts/bench_edge.sh` measures the CLI's peak with GNU time; this shows where it is
//! reached.

use std::path::PathBuf;

use ckd_edge::{Engine, EngineOptions};

fn status(tag: &str) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |k: &str| s.lines().find_map(|l| l.strip_prefix(k)).map(str::trim).unwrap_or("n/a").to_string();
    println!("{tag:<24} VmRSS {:>12}  VmHWM {:>12}", get("VmRSS:"), get("VmHWM:"));
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir =
        PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!("usage: load_memory BUNDLE [TOKENS] [THREADS]"))?);
    let tokens: usize = args.next().map(|t| t.parse()).transpose()?.unwrap_or(128);
    let threads: usize = args.next().map(|t| t.parse()).transpose()?.unwrap_or(1);
    if std::env::var_os("CKD_DEFAULT_MALLOC").is_none() {
        println!("mmap threshold fixed: {}", ckd_edge::memory::use_mmap_for_large_allocations());
    }
    status("start");
    let t0 = std::time::Instant::now();
    let engine = Engine::open_with(&dir, &EngineOptions { threads, ..Default::default() })?;
    let open_ms = t0.elapsed().as_secs_f64() * 1e3;
    status("opened");
    if std::env::var_os("CKD_DEFAULT_MALLOC").is_none() {
        println!("freed memory reused: {}", ckd_edge::memory::reuse_freed_memory());
    }
    println!("open {open_ms:.1} ms");
    // "visit" tokenizes to about one token per word with a BERT WordPiece vocabulary.
    let text = vec!["visit"; tokens.saturating_sub(2).max(1)].join(" ");
    let p = engine.predict_text(&text)?;
    status(&format!("predicted ({} tokens)", p.tokens));
    Ok(())
}
