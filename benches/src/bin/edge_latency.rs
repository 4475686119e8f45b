//! Latency of a bundle through the edge runtime (`ckd_edge::Engine`, tract), for the
//! side-by-side comparison with onnxruntime (`scripts/compare_onnxruntime.sh`).
//!
//! ```text
//! edge_latency time --bundle DIR [--seq 128,256,512] [--runs 7] [--warmup 2] [--threads 1] [--ids-out FILE]
//! edge_latency profile --bundle DIR [--seq 512] [--runs 7] [--top 20] [--threads 1]
//! edge_latency minilm-bundle --minilm DIR --out DIR [--precision int8|f32] [--head-scale 10] [--int8-embeddings]
//! ```
//!
//! `time` opens the bundle once, makes for each length T a text that tokenizes to exactly T
//! tokens (or the nearest below), and times `Engine::predict_text` on it (batch 1: tokenization,
//! the tract plan and thresholding) and `Engine::tokenize` alone. It prints one JSON object on
//! stdout: `{"runtime": "tract (ckd-edge)", "threads": N, "results": [{"seq", "tokens",
//! "runs_ms", "median_ms", "tokenize_ms"}], "kernels": {op: kernel}}`. `--ids-out` writes the token ids of each length
//! (`{"128": [ids...], ...}`) so onnxruntime runs exactly the same inputs.
//!
//! `profile` prints where one prediction's time goes (`Engine::profile_text`): milliseconds per
//! operator kind and the slowest nodes.
//!
//! `minilm-bundle` writes a bundle of all-MiniLM-L6-v2 (`CKD_MINILM_DIR` layout) with a fresh
//! seeded head whose weights are multiplied by `--head-scale` (10 gives logits of std about
//! 1.2, like a trained head) and max length 512.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::Device;
use ckd_core::bootstrap::median;
use ckd_edge::{Engine, EngineOptions};
use ckd_trainer::export::{model_tensors, BuildOptions, Precision};
use ckd_trainer::models::bert::{BertForMultiLabel, Config, HeadConfig};
use ckd_trainer::models::checkpoint::read_safetensors;
use ckd_trainer::student::{save_student, StudentConfig};
use ckd_trainer::text::TextEncoder;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Latency of a bundle in the edge runtime (tract)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Time Engine::predict_text at batch 1 for each sequence length.
    Time {
        #[arg(long)]
        bundle: PathBuf,
        /// Token counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "128,256,512")]
        seq: Vec<usize>,
        #[arg(long, default_value_t = 7)]
        runs: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Threads of the engine (more than 1 needs `--features threads`).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Write the token ids of each length here (JSON).
        #[arg(long)]
        ids_out: Option<PathBuf>,
    },
    /// Per-node profile of one prediction of a SEQ-token text.
    Profile {
        #[arg(long)]
        bundle: PathBuf,
        #[arg(long, default_value_t = 512)]
        seq: usize,
        #[arg(long, default_value_t = 7)]
        runs: usize,
        /// Slowest nodes to list.
        #[arg(long, default_value_t = 20)]
        top: usize,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Write a bundle of all-MiniLM-L6-v2 with a fresh seeded head.
    MinilmBundle {
        /// Directory with model.safetensors, config.json, tokenizer.json.
        #[arg(long)]
        minilm: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "int8")]
        precision: Precision,
        #[arg(long, default_value_t = 10.0)]
        head_scale: f64,
        /// Store the word embeddings as int8 (`ckd export --int8-embeddings`).
        #[arg(long)]
        int8_embeddings: bool,
    },
}

fn time(
    bundle: &Path,
    seqs: &[usize],
    runs: usize,
    warmup: usize,
    threads: usize,
    ids_out: Option<&Path>,
) -> Result<()> {
    let t0 = Instant::now();
    let engine = Engine::open_with(bundle, &EngineOptions { threads, ..Default::default() })
        .with_context(|| format!("opening {}", bundle.display()))?;
    let open_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut results = Vec::new();
    let mut ids_of = BTreeMap::new();
    for &seq in seqs {
        let (text, ids) = ckd_edge::bench::text_of_len(&engine, seq)?;
        let runs_ms = ckd_edge::bench::time_predictions(&engine, &text, warmup, runs.max(1), Duration::MAX)?;
        let mut tok_ms = Vec::with_capacity(runs);
        for _ in 0..runs.max(1) {
            let t = Instant::now();
            engine.tokenize(&text)?;
            tok_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        results.push(serde_json::json!({
            "seq": seq, "tokens": ids.len(), "runs_ms": runs_ms, "median_ms": median(&runs_ms),
            "tokenize_ms": median(&tok_ms),
        }));
        ids_of.insert(seq.to_string(), ids);
    }
    if let Some(p) = ids_out {
        std::fs::write(p, serde_json::to_string(&ids_of)?).with_context(|| format!("writing {}", p.display()))?;
    }
    let doc = serde_json::json!({
        "runtime": "tract (ckd-edge)", "threads": threads.max(1), "open_ms": open_ms,
        "precision": format!("{:?}", engine.manifest().precision), "results": results,
        "kernels": engine.kernels().into_iter().map(|(op, k)| (op.to_string(), serde_json::json!(k))).collect::<serde_json::Map<_, _>>(),
    });
    println!("{doc}");
    Ok(())
}

fn profile(bundle: &Path, seq: usize, runs: usize, top: usize, threads: usize) -> Result<()> {
    let engine = Engine::open_with(bundle, &EngineOptions { threads, ..Default::default() })
        .with_context(|| format!("opening {}", bundle.display()))?;
    let (text, ids) = ckd_edge::bench::text_of_len(&engine, seq)?;
    let nodes = engine.profile_text(&text, runs)?;
    let total: f64 = nodes.iter().map(|n| n.ms).sum();
    println!("{}: {} tokens, {threads} thread(s), sum of node medians {total:.2} ms", bundle.display(), ids.len());
    let mut by_op: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for n in &nodes {
        let e = by_op.entry(n.op.as_str()).or_default();
        e.0 += n.ms;
        e.1 += 1;
    }
    let mut by_op: Vec<_> = by_op.into_iter().collect();
    by_op.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    for (op, (ms, count)) in by_op.iter().filter(|(_, (ms, _))| *ms >= 0.005) {
        println!("  {op:<36} {ms:>9.3} ms {:>5.1}%  x{count}", 100.0 * ms / total);
    }
    println!("slowest nodes:");
    for n in nodes.iter().take(top) {
        println!("  {:>9.3} ms  {:<28} {}", n.ms, n.op, n.node);
    }
    Ok(())
}

fn minilm_bundle(minilm: &Path, out: &Path, build: BuildOptions, head_scale: f64) -> Result<()> {
    let dev = Device::Cpu;
    let cfg_path = minilm.join("config.json");
    let cfg = Config::from_json(&std::fs::read_to_string(&cfg_path).with_context(|| cfg_path.display().to_string())?)?;
    let head = HeadConfig::default();
    let ckpt = model_tensors(read_safetensors(&minilm.join("model.safetensors"), &dev)?)?;
    let loaded = BertForMultiLabel::from_checkpoint(&ckpt, &cfg, &head, &dev, 2024)?;
    {
        let data = loaded.varmap.data().lock().map_err(|_| anyhow::anyhow!("varmap lock poisoned"))?;
        let w = data.get("classifier.weight").context("no classifier.weight")?;
        w.set(&(w.as_tensor() * head_scale)?)?;
    }
    let max_len = cfg.max_position_embeddings;
    let enc = TextEncoder::from_file(&minilm.join("tokenizer.json"), max_len)?;
    let work = tempfile::tempdir()?;
    let student = work.path().join("student");
    let sc = StudentConfig { bert: cfg, head, max_len };
    save_student(&student, &sc, &loaded.varmap, &enc, &[0.5; ckd_core::NUM_LABELS], None, &serde_json::json!({}))?;
    let r = ckd_trainer::bundle::write_bundle_with(&student, out, build)?;
    eprintln!("wrote {} ({build:?}): {:?}", out.display(), r.bytes);
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Time { bundle, seq, runs, warmup, threads, ids_out } => {
            time(&bundle, &seq, runs, warmup, threads, ids_out.as_deref())
        }
        Cmd::Profile { bundle, seq, runs, top, threads } => profile(&bundle, seq, runs, top, threads),
        Cmd::MinilmBundle { minilm, out, precision, head_scale, int8_embeddings } => {
            let build = BuildOptions { int8_embeddings, ..BuildOptions::new(precision) };
            minilm_bundle(&minilm, &out, build, head_scale)
        }
    }
}
