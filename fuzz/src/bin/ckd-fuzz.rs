//! `ckd-fuzz`: replays the committed corpus of each target, then mutates it for a time budget.
//! Exit status 1 when an input panicked (written under `--crashes`), 2 on a setup error.
//!
//! `cargo run -p ckd-fuzz -- --secs 10 wire manifest bundle`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ckd_fuzz::{
    bundle_file_target, bundle_packed_target, bundle_target, fuzz, jsonl_target, manifest_target, mimic_csv_target,
    read_corpus, wire_target, BaseBundle, Budget, BundleFile, Target,
};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Stable-toolchain mutation fuzzing of ckd's wire decoder, bundle loader and ingest readers")]
struct Args {
    /// Targets (wire, manifest, bundle, bundle-tokenizer, bundle-packed, mimic-csv, jsonl); when
    /// none, those CI runs (all of them).
    targets: Vec<String>,
    /// Seconds of mutation per target (after the corpus replay).
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Most mutated inputs per target.
    #[arg(long, default_value_t = u64::MAX)]
    iterations: u64,
    /// RNG seed (default: from the clock; printed so a run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Corpus root (one subdirectory per target, plus `bundle-base`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus"))]
    corpus: PathBuf,
    /// Where crashing inputs are written.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/crashes"))]
    crashes: PathBuf,
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("ckd-fuzz: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<bool> {
    let targets: Vec<Target> = if args.targets.is_empty() {
        Target::CI.to_vec()
    } else {
        args.targets
            .iter()
            .map(|t| {
                Target::from_name(t).ok_or_else(|| {
                    let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
                    anyhow::anyhow!("unknown target {t:?} ({})", names.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    });
    let budget = Budget { iterations: args.iterations, time: Duration::from_secs_f64(args.secs.max(0.0)) };
    let mut clean = true;
    for t in targets {
        let corpus = read_corpus(&args.corpus.join(t.name()))?;
        let report = match t {
            Target::Wire => fuzz(t.name(), &corpus, wire_target, budget, seed, 8192, &args.crashes),
            Target::Manifest => fuzz(t.name(), &corpus, manifest_target, budget, seed, 1 << 16, &args.crashes),
            Target::Bundle | Target::BundleTokenizer => {
                let base = BaseBundle::read(&args.corpus.join("bundle-base"))?;
                let scratch = tempfile::tempdir()?;
                let f = |d: &[u8]| match t {
                    Target::Bundle => bundle_target(d, &base, scratch.path()),
                    _ => bundle_file_target(BundleFile::Tokenizer, d, &base, scratch.path()),
                };
                fuzz(t.name(), &corpus, f, budget, seed, 1 << 20, &args.crashes)
            }
            Target::MimicCsv => fuzz(t.name(), &corpus, mimic_csv_target, budget, seed, 1 << 16, &args.crashes),
            Target::Jsonl => fuzz(t.name(), &corpus, jsonl_target, budget, seed, 1 << 16, &args.crashes),
            Target::BundlePacked => {
                let scratch = tempfile::tempdir()?;
                let f = |d: &[u8]| bundle_packed_target(d, scratch.path());
                fuzz(t.name(), &corpus, f, budget, seed, 1 << 20, &args.crashes)
            }
        };
        println!(
            "{}: seed {seed}, {} corpus inputs replayed, {} runs, {} outcome classes, {} crashes",
            t.name(),
            report.replayed,
            report.execs,
            report.classes,
            report.crashes.len()
        );
        for (path, msg) in &report.crashes {
            println!("  CRASH {}: {msg}", path.display());
            clean = false;
        }
    }
    Ok(clean)
}
