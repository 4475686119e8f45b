//! `ckd-edge bench`: what this device does with a bundle. For each int8 path (ckd-edge's fused
//! kernels, tract's stock int8 path), each thread count and each token count, the latency of one
//! whole prediction (tokenization, the plan, thresholding) as nearest-rank percentiles, the
//! kernels the engine picked, the time to open the bundle, and the process's resident memory.
//! Markdown on stdout (paste it into a report), `--json FILE` for machines.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ckd_edge::bench::{text_of_len, time_predictions, Percentiles};
use ckd_edge::EngineOptions;
use serde_json::{json, Value};

/// The options of `ckd-edge bench` (clap's `Bench` subcommand).
pub struct Options {
    pub bundle: PathBuf,
    pub seq: Vec<usize>,
    pub threads: Vec<usize>,
    pub paths: Vec<Int8Path>,
    pub warmup: usize,
    pub runs: usize,
    pub budget: Duration,
    pub json: Option<PathBuf>,
}

/// Which int8 path runs the linears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Int8Path {
    /// ckd-edge's fused int8 kernels (the default engine).
    Fused,
    /// tract's own int8 path (`EngineOptions::int8_kernel = false`).
    Stock,
}

impl Int8Path {
    fn name(self) -> &'static str {
        match self {
            Self::Fused => "fused",
            Self::Stock => "stock",
        }
    }
}

/// `VmRSS` and `VmHWM` (peak) of this process in kB, where /proc tells (Linux).
fn rss_kb() -> (Option<u64>, Option<u64>) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |k: &str| {
        s.lines().find_map(|l| l.strip_prefix(k)).and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
    };
    (get("VmRSS:"), get("VmHWM:"))
}

fn mb(kb: Option<u64>) -> String {
    kb.map_or("n/a".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// Runs the grid and prints it; every configuration opens the bundle afresh.
pub fn run(o: &Options) -> Result<()> {
    if o.seq.is_empty() || o.threads.is_empty() || o.paths.is_empty() || o.runs == 0 {
        bail!("bench: --seq, --threads and --paths need at least one value, --runs at least 1");
    }
    if o.threads.iter().any(|&t| t > 1) && !ckd_edge::THREADS_SUPPORTED {
        bail!("bench: more than 1 thread needs a build with the `threads` feature (cargo build -p ckd-edge-c --features threads)");
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "ckd-edge bench: {} ({} {}, {cpus} CPUs), bundle {}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS,
        o.bundle.display()
    );
    println!();
    println!("| path | int8 kernel | threads | tokens | runs | p50 ms | p90 ms | p99 ms | min ms | open ms | RSS MB |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut rows = Vec::new();
    for &path in &o.paths {
        for &threads in &o.threads {
            rows.extend(configuration(o, path, threads)?);
        }
    }
    let (rss, hwm) = rss_kb();
    println!();
    println!("peak RSS of this process: {} MB (now {} MB)", mb(hwm), mb(rss));
    if let Some(file) = &o.json {
        let doc = json!({
            "version": env!("CARGO_PKG_VERSION"), "arch": std::env::consts::ARCH, "cpus": cpus,
            "bundle": o.bundle, "results": rows, "peak_rss_kb": hwm,
        });
        std::fs::write(file, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}

/// One path at one thread count: opens the bundle, then times each token count.
fn configuration(o: &Options, path: Int8Path, threads: usize) -> Result<Vec<Value>> {
    let opts = EngineOptions { threads, int8_kernel: path == Int8Path::Fused };
    let t0 = Instant::now();
    let engine = super::open(&o.bundle, &opts)?;
    let open_ms = t0.elapsed().as_secs_f64() * 1e3;
    let kernels = engine.kernels();
    let int8 = kernels.iter().find(|(op, _)| *op == "int8 linear").map_or("n/a", |(_, k)| *k);
    let mut rows = Vec::new();
    for &seq in &o.seq {
        let (text, ids) = text_of_len(&engine, seq)?;
        let ms = time_predictions(&engine, &text, o.warmup, o.runs, o.budget)?;
        let p = Percentiles::of(&ms).context("bench: no timings")?;
        let (rss, _) = rss_kb();
        println!(
            "| {} | {int8} | {threads} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {open_ms:.0} | {} |",
            path.name(),
            ids.len(),
            p.n,
            p.p50,
            p.p90,
            p.p99,
            p.min,
            mb(rss)
        );
        rows.push(json!({
            "path": path.name(), "kernels": kernels.iter().map(|(op, k)| (op.to_string(), json!(k))).collect::<serde_json::Map<_, _>>(),
            "threads": threads, "tokens": ids.len(), "runs_ms": ms, "p50_ms": p.p50, "p90_ms": p.p90,
            "p99_ms": p.p99, "min_ms": p.min, "open_ms": open_ms, "rss_kb": rss,
        }));
    }
    Ok(rows)
}
