//! `ckd-edge`: the edge runtime on the command line.
//!
//! - `ckd-edge predict --bundle B [--input FILE|-] [--lenient]`: JSONL in (one ckd-core `Visit`
//!   JSON object, or one CKD-EHR row `{instruction, input, output}` per line), JSONL out: one
//!   record per non-blank input line, in order, whose `line` is that input line's number.
//!   Blank and whitespace-only lines carry no request and get no record, with or without
//!   `--lenient` (a UTF-8 byte-order mark at the start is skipped too). A visit's titles are
//!   resolved from its codes as `ckd ingest` renders them (`Visit::resolve_titles`); its record
//!   lists under `unknown_codes` the items rendered as a bare code (`{"item": "diagnoses[0]",
//!   "code": "99999"}`), and an item with neither code nor title is a bad line. A bad line stops the
//!   run with an error naming the line; with `--lenient` it gives a `{"line": N, "error": ...}`
//!   record instead and the run goes on (exit status 0).
//! - `ckd-edge info --bundle B`: the verified manifest as JSON.
//! - `ckd-edge eval --bundle B --data FILE.jsonl [--json OUT]`: runs the bundle on CKD-EHR rows
//!   (such as the trainer's `test.jsonl`), one sample at a time, and computes the metrics of
//!   `ckd_core::metrics` at the bundle's thresholds against the rows' `output` labels, with the
//!   median latency per sample.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ckd_core::metrics::{self, Report};
use ckd_core::visit::Visit;
use ckd_core::{NUM_LABELS, PHENOTYPES};
use ckd_edge::{Engine, EngineOptions, Prediction};
use clap::{Parser, Subcommand};
use serde_json::{json, Map, Value};

/// Calibration bins of the ECE (as `ckd eval`).
const ECE_BINS: usize = 10;

#[derive(Parser)]
#[command(
    name = "ckd-edge",
    version,
    about = "ckd-ehr edge runtime: next-visit phenotype prediction from a model bundle"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Threads per prediction (tract's matrix products). More than 1 needs a build with the
    /// `threads` feature (`cargo build -p ckd-edge-c --features threads`).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
}

#[derive(Subcommand)]
enum Cmd {
    /// Predict for each JSONL line (a Visit object or a CKD-EHR row); JSONL out on stdout.
    Predict {
        /// Bundle directory (manifest.bin, model.onnx, model.onnx.data, tokenizer.json) or a
        /// single-file bundle (`ckd pack`).
        #[arg(long)]
        bundle: PathBuf,
        /// Input JSONL file, or `-` for stdin.
        #[arg(long, default_value = "-")]
        input: String,
        /// On a bad line, write an error record and go on instead of stopping.
        #[arg(long)]
        lenient: bool,
    },
    /// Print the bundle's verified manifest as JSON.
    Info {
        /// Bundle directory or single-file bundle.
        #[arg(long)]
        bundle: PathBuf,
    },
    /// Evaluate the bundle on CKD-EHR JSONL rows with labels.
    Eval {
        /// Bundle directory or single-file bundle.
        #[arg(long)]
        bundle: PathBuf,
        /// CKD-EHR JSONL rows ({instruction, input, output}), e.g. the trainer's test.jsonl.
        #[arg(long)]
        data: PathBuf,
        /// Also write the metrics and latency as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    // Large tensors freed while loading go back to the system at once (lower peak RSS).
    ckd_edge::memory::use_mmap_for_large_allocations();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            note(format_args!("ckd-edge: error: {}", ckd_core::error_chain::one_line(&*e)));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Writes one line to stderr. A failing stderr (`2>/dev/full`, a closed pipe) is ignored: a
/// message must never turn into a panic or change the exit status.
fn note(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{args}");
}

fn run(cli: Cli) -> Result<()> {
    let opts = EngineOptions { threads: cli.threads, ..Default::default() };
    match cli.cmd {
        Cmd::Predict { bundle, input, lenient } => predict(&open(&bundle, &opts)?, &input, lenient),
        Cmd::Info { bundle } => info(&bundle, &opts),
        Cmd::Eval { bundle, data, json } => eval(&bundle, &opts, &data, json.as_deref()),
    }
}

fn open(bundle: &Path, opts: &EngineOptions) -> Result<Engine> {
    Engine::open_with(bundle, opts).with_context(|| format!("opening bundle {}", bundle.display()))
}

fn read_input(input: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if input == "-" {
        std::io::stdin().lock().read_to_end(&mut bytes).context("reading stdin")?;
    } else {
        bytes = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    }
    Ok(bytes)
}

/// Lines of `bytes` without terminators (`\n` or `\r\n`), with 1-based numbers; blank and
/// whitespace-only lines skipped (their numbers too), a UTF-8 byte-order mark at the start
/// skipped.
fn numbered_lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
}

fn utf8_line(n: usize, line: &[u8]) -> Result<&str> {
    std::str::from_utf8(line).map_err(|e| anyhow::anyhow!("line {n}: not valid UTF-8 (at byte {})", e.valid_up_to()))
}

/// One input line: an optional id and the model text (a CKD-EHR row's `input`, or a visit
/// rendered by the engine).
enum Item {
    Text { id: Option<Value>, text: String },
    Visit { id: Option<Value>, visit: Visit },
}

fn parse_item(n: usize, line: &str) -> Result<Item> {
    let v: Value = serde_json::from_str(line).map_err(|e| anyhow::anyhow!("line {n}: not JSON: {e}"))?;
    let Value::Object(obj) = &v else { bail!("line {n}: expected a JSON object (a Visit or a CKD-EHR row)") };
    let id = obj.get("id").cloned();
    if let Some(input) = obj.get("input") {
        let Some(text) = input.as_str() else { bail!("line {n}: field `input` is not a string") };
        return Ok(Item::Text { id, text: text.to_string() });
    }
    let visit: Visit = serde_json::from_value(v)
        .map_err(|e| anyhow::anyhow!("line {n}: neither a CKD-EHR row (no `input` field) nor a Visit: {e}"))?;
    Ok(Item::Visit { id, visit })
}

fn prediction_json(n: usize, id: Option<Value>, p: &Prediction) -> Value {
    let mut probs = Map::new();
    for (ph, &q) in PHENOTYPES.iter().zip(&p.probs) {
        probs.insert(ph.name.into(), json!(q));
    }
    let positives: Vec<&str> = p.positive.iter().map(|l| PHENOTYPES[l as usize].name).collect();
    let top: Vec<Value> =
        p.top_k.iter().map(|&(l, q)| json!({"label": PHENOTYPES[l as usize].name, "probability": q})).collect();
    let mut out = json!({
        "line": n,
        "probabilities": probs,
        "positives": positives,
        "top_k": top,
        "truncated": p.truncated,
        "tokens": p.tokens,
    });
    if let Some(id) = id {
        out["id"] = id;
    }
    out
}

/// One JSON line per non-blank input line. A reader that closes stdout (`ckd-edge predict ... |
/// head -1`) ends the run with success: nobody is left to read the rest.
fn predict(engine: &Engine, input: &str, lenient: bool) -> Result<()> {
    let bytes = read_input(input)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let written = |r: std::io::Result<()>| -> Result<bool> {
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(e).context("writing stdout"),
        }
    };
    for (n, line) in numbered_lines(&bytes) {
        let rec = (|| -> Result<Value> {
            let line = utf8_line(n, line)?;
            let at_line = |e: &dyn std::fmt::Display| anyhow::anyhow!("line {n}: {e}");
            match parse_item(n, line)? {
                Item::Text { id, text } => {
                    Ok(prediction_json(n, id, &engine.predict_text(&text).map_err(|e| at_line(&e))?))
                }
                Item::Visit { id, visit } => {
                    let (visit, bare) = visit.resolve_titles().map_err(|e| at_line(&e))?;
                    let mut rec = prediction_json(n, id, &engine.predict(&visit).map_err(|e| at_line(&e))?);
                    rec["unknown_codes"] = json!(bare);
                    Ok(rec)
                }
            }
        })();
        let rec = match rec {
            Ok(r) => r,
            Err(e) if lenient => json!({"line": n, "error": ckd_core::error_chain::one_line(&*e)}),
            Err(e) => {
                written(out.flush())?;
                return Err(e.context(format!("input {input}")));
            }
        };
        let mut line = serde_json::to_vec(&rec)?;
        line.push(b'\n');
        if !written(out.write_all(&line))? {
            return Ok(());
        }
    }
    written(out.flush())?;
    Ok(())
}

fn info(bundle: &Path, opts: &EngineOptions) -> Result<()> {
    let engine = open(bundle, opts)?;
    let m = engine.manifest();
    let files: Vec<Value> = m
        .files
        .iter()
        .map(|f| json!({"name": f.name, "size": f.size, "sha256": ckd_core::format::hex(&f.sha256)}))
        .collect();
    let thresholds: Map<String, Value> =
        m.labels.iter().zip(&m.thresholds).map(|(l, t)| (l.clone(), json!(t))).collect();
    let out = json!({
        "bundle": bundle,
        "precision": format!("{:?}", m.precision).to_lowercase(),
        "labels": m.labels,
        "thresholds": thresholds,
        "tokenizer": {
            "max_len": m.tokenizer.max_len,
            "pad_id": m.tokenizer.pad_id,
            "cls_id": m.tokenizer.cls_id,
            "sep_id": m.tokenizer.sep_id,
        },
        "knowledge_table": m.knowledge.is_some(),
        "files": files,
        "provenance": {
            "data_hash": m.provenance.data_hash,
            "training_config": m.provenance.training_config,
            "teacher": m.provenance.teacher,
            "created_by": m.provenance.created_by,
        },
    });
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{}", serde_json::to_string_pretty(&out)?) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e).context("writing to stdout"),
        _ => {}
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

fn eval(bundle: &Path, opts: &EngineOptions, data: &Path, json_out: Option<&Path>) -> Result<()> {
    let engine = open(bundle, opts)?;
    let bytes = std::fs::read(data).with_context(|| format!("reading {}", data.display()))?;
    let mut probs = Vec::new();
    let mut labels = Vec::new();
    let mut times_ms = Vec::new();
    let mut truncated = 0usize;
    for (n, line) in numbered_lines(&bytes) {
        let line = utf8_line(n, line).with_context(|| data.display().to_string())?;
        let rec = ckd_core::jsonl::parse_line(line, n)
            .with_context(|| data.display().to_string())?
            .with_context(|| format!("{}: line {n}: blank", data.display()))?;
        let t0 = Instant::now();
        let p = engine.predict_text(&rec.input).map_err(|e| anyhow::anyhow!("{}: line {n}: {e}", data.display()))?;
        times_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        probs.extend_from_slice(&p.probs);
        labels.push(rec.labels);
        truncated += usize::from(p.truncated);
    }
    if labels.is_empty() {
        bail!("{}: no rows", data.display());
    }
    let report = metrics::evaluate_label_sets(&probs, &labels, &engine.manifest().thresholds, ECE_BINS)
        .context("computing metrics")?;
    let total_ms: f64 = times_ms.iter().sum();
    let median_ms = median(&mut times_ms);
    // A closed stdout (`ckd-edge eval ... | head`) ends the table, not the run: the JSON below
    // is still written.
    match print_report(&report, truncated, median_ms) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e).context("writing the report"),
        _ => {}
    }
    if let Some(path) = json_out {
        let out = json!({
            "bundle": bundle,
            "data": data,
            "precision": format!("{:?}", engine.manifest().precision).to_lowercase(),
            "n_samples": labels.len(),
            "truncated": truncated,
            "latency": {
                "median_ms_per_sample": median_ms,
                "mean_ms_per_sample": total_ms / labels.len() as f64,
                "batch_size": 1,
                "threads": opts.threads.max(1),
            },
            "metrics": report,
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        note(format_args!("wrote {}", path.display()));
    }
    Ok(())
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |x| format!("{x:.4}"))
}

fn print_report(r: &Report, truncated: usize, median_ms: f64) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} samples ({truncated} truncated), median latency {median_ms:.2} ms/sample (batch 1)",
        r.n_samples
    )?;
    writeln!(
        out,
        "hamming {:.4}  micro-F1 {:.4}  macro-F1 {:.4}  micro-AUC {}  macro-AUC {}  macro-AUPR {}  ECE {:.4}",
        r.hamming_accuracy,
        r.micro_f1,
        r.macro_f1,
        fmt_opt(r.micro_auc),
        fmt_opt(r.macro_auc),
        fmt_opt(r.macro_aupr),
        r.ece
    )?;
    writeln!(out, "{:<58} {:>7} {:>6} {:>6} {:>6} {:>7}", "phenotype", "support", "P", "R", "F1", "AUC")?;
    for (ph, l) in PHENOTYPES.iter().zip(&r.per_label).take(NUM_LABELS) {
        writeln!(
            out,
            "{:<58} {:>7} {:6.3} {:6.3} {:6.3} {:>7}",
            ph.name,
            l.support,
            l.precision,
            l.recall,
            l.f1,
            fmt_opt(l.auc)
        )?;
    }
    Ok(())
}
