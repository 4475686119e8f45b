//! `ckd-edge`: the edge runtime on the command line.
//!
//! - `ckd-edge predict --bundle B [--input FILE|-] [--lenient]`: JSONL in (one ckd-core `Visit`
//!   JSON object, or one CKD-EHR row `{instruction, input, output}` per line), JSONL out: one
//!   record per non-blank input line, in order, whose `line` is that input line's number.
//!   Blank and whitespace-only lines carry no request and get no record, with or without
//!   `--lenient` (a UTF-8 byte-order mark at the start is skipped too). A visit's titles are
//!   resolved from its codes as `ckd ingest` renders them (`Visit::resolve_titles`); its record
//!   lists under `unknown_codes` the items rendered as a bare code (`{"item": "diagnoses[0]",
//!   "code": "99999"}`); an item with neither code nor title, and a visit with no item at all,
//!   are bad lines. A line over
//!   `--max-line-bytes` (default 1 MiB) is a bad line, and no more of it is read or held. A bad
//!   line stops the run with an error naming the line; with `--lenient` it gives a
//!   `{"line": N, "error": ...}` record instead and the run goes on (exit status 0), ending with
//!   `ckd-edge predict: L lines read, P predicted, F failed` on stderr.
//! - `ckd-edge explain --bundle B [--input FILE|-] [--top N]`: the same input as `predict`; each
//!   record is the prediction's plus `text`, `concepts` (each diagnosis, drug, procedure and
//!   knowledge clause with its byte span) and `occlusion`: per top or positive phenotype, the
//!   concepts whose removal lowers its probability most (`explain.rs`). One prediction per
//!   concept plus one.
//! - `ckd-edge info --bundle B`: the verified manifest as JSON.
//! - `ckd-edge eval --bundle B --data FILE.jsonl [--json OUT]`: runs the bundle on CKD-EHR rows
//!   (such as the trainer's `test.jsonl`), one sample at a time, and computes the metrics of
//!   `ckd_core::metrics` at the bundle's thresholds against the rows' `output` labels, with the
//!   median latency per sample.
//! - `ckd-edge bench --bundle B [--seq 128,256,512] [--thread-counts 1,2] [--paths fused,stock]`: the
//!   latency of one prediction at each token count, thread count and int8 path, as percentiles,
//!   with the kernels picked, the open time and the resident memory (`bench.rs`).

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ckd_core::bootstrap::median;
use ckd_core::metrics::{self, Report};
use ckd_core::visit::Visit;
use ckd_core::{NUM_LABELS, PHENOTYPES};
use ckd_edge::{Engine, EngineOptions, Prediction};
use clap::{Parser, Subcommand};
use serde_json::{json, Map, Value};

mod bench;
mod explain;

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
        /// On a bad line, write an error record and go on instead of stopping; end with a
        /// one-line count on stderr.
        #[arg(long)]
        lenient: bool,
        /// Longest input line, in bytes; a longer line is a bad line (read no further).
        #[arg(long, default_value_t = DEFAULT_MAX_LINE_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
        max_line_bytes: u64,
    },
    /// Explain each JSONL line's prediction: the effect of leaving out each concept of the
    /// visit (diagnosis, drug, procedure, knowledge clause) on each top phenotype; JSONL out.
    Explain {
        /// Bundle directory or single-file bundle.
        #[arg(long)]
        bundle: PathBuf,
        /// Input JSONL file (Visit objects or CKD-EHR rows), or `-` for stdin.
        #[arg(long, default_value = "-")]
        input: String,
        /// Concepts listed per phenotype, largest effect first.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// On a bad line, write an error record and go on instead of stopping.
        #[arg(long)]
        lenient: bool,
        /// Longest input line, in bytes; a longer line is a bad line (read no further).
        #[arg(long, default_value_t = DEFAULT_MAX_LINE_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
        max_line_bytes: u64,
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
        /// Longest data line, in bytes; a longer line is an error.
        #[arg(long, default_value_t = DEFAULT_MAX_LINE_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
        max_line_bytes: u64,
    },
    /// Time predictions on this device: every int8 path x thread count x token count, as
    /// latency percentiles, with the kernels picked, the open time and resident memory.
    Bench {
        /// Bundle directory or single-file bundle (its maximum length must cover `--seq`).
        #[arg(long)]
        bundle: PathBuf,
        /// Token counts; each input is made to tokenize to exactly that many tokens.
        #[arg(long, value_delimiter = ',', default_value = "128,256,512")]
        seq: Vec<usize>,
        /// Thread counts (more than 1 needs the `threads` feature); default 1.
        #[arg(long = "thread-counts", value_delimiter = ',', default_value = "1")]
        thread_counts: Vec<usize>,
        /// int8 paths: `fused` (ckd-edge's kernels) and `stock` (tract's own int8 path).
        #[arg(long, value_delimiter = ',', default_value = "fused,stock")]
        paths: Vec<bench::Int8Path>,
        /// Untimed predictions before each token count.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Timed predictions per token count (at most).
        #[arg(long, default_value_t = 21)]
        runs: usize,
        /// Seconds per token count after which timing stops (after at least 3 runs).
        #[arg(long, default_value_t = 20.0)]
        max_secs: f64,
        /// Also write every timing as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// Default of `--max-line-bytes` (1 MiB).
const DEFAULT_MAX_LINE_BYTES: u64 = 1 << 20;

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
        Cmd::Predict { bundle, input, lenient, max_line_bytes } => {
            predict(&open(&bundle, &opts)?, &input, lenient, as_len(max_line_bytes))
        }
        Cmd::Explain { bundle, input, top, lenient, max_line_bytes } => {
            explain::run(&open(&bundle, &opts)?, &input, lenient, as_len(max_line_bytes), top)
        }
        Cmd::Info { bundle } => info(&bundle, &opts),
        Cmd::Eval { bundle, data, json, max_line_bytes } => {
            eval(&bundle, &opts, &data, json.as_deref(), as_len(max_line_bytes))
        }
        Cmd::Bench { bundle, seq, thread_counts, paths, warmup, runs, max_secs, json } => {
            let budget = Duration::try_from_secs_f64(max_secs).context("--max-secs: not a duration")?;
            bench::run(&bench::Options { bundle, seq, threads: thread_counts, paths, warmup, runs, budget, json })
        }
    }
}

/// Opens a bundle, then lets predictions reuse freed memory (`main` fixed a low mmap
/// threshold for loading; `ckd_edge::memory`).
fn open(bundle: &Path, opts: &EngineOptions) -> Result<Engine> {
    let engine = Engine::open_with(bundle, opts).with_context(|| format!("opening bundle {}", bundle.display()))?;
    ckd_edge::memory::reuse_freed_memory();
    Ok(engine)
}

fn as_len(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A line of input, or the start of one longer than the limit (the rest of which is skipped).
enum Line {
    Bytes(Vec<u8>),
    TooLong,
}

/// Reads lines (without `\n` or `\r\n`) with 1-based numbers, at most `max` bytes each, holding
/// no more than one line in memory. Blank and whitespace-only lines are skipped (their numbers
/// too); a UTF-8 byte-order mark at the start is skipped.
struct Lines<R: BufRead> {
    r: R,
    max: usize,
    number: usize,
    /// The current line went over `max` and was reported: skip to its end first.
    skipping: bool,
}

impl<R: BufRead> Lines<R> {
    fn new(r: R, max: usize) -> Self {
        Self { r, max, number: 0, skipping: false }
    }

    /// Lines read so far (blank ones included).
    fn count(&self) -> usize {
        self.number
    }

    /// Appends the rest of the current line to `buf` (nothing when `buf` is `None`) up to
    /// `max` bytes. Returns whether anything was read, and whether the limit was passed (then
    /// reading stopped there).
    fn read_line(&mut self, mut buf: Option<&mut Vec<u8>>) -> std::io::Result<(bool, bool)> {
        let mut any = false;
        loop {
            let avail = self.r.fill_buf()?;
            if avail.is_empty() {
                return Ok((any, false));
            }
            any = true;
            let newline = avail.iter().position(|&b| b == b'\n');
            let part = newline.unwrap_or(avail.len());
            if let Some(b) = buf.as_deref_mut() {
                // One byte of slack for the `\r` of a `\r\n` line end.
                if b.len() + part > self.max.saturating_add(1) {
                    self.r.consume(part);
                    return Ok((true, true));
                }
                b.extend_from_slice(&avail[..part]);
            }
            let used = newline.map_or(part, |i| i + 1);
            self.r.consume(used);
            if newline.is_some() {
                return Ok((true, false));
            }
        }
    }

    /// The next non-blank line with its number, or `None` at the end of the input.
    fn next_line(&mut self) -> std::io::Result<Option<(usize, Line)>> {
        if std::mem::take(&mut self.skipping) {
            self.read_line(None)?;
        }
        loop {
            let mut buf = Vec::new();
            let (any, too_long) = self.read_line(Some(&mut buf))?;
            if !any {
                return Ok(None);
            }
            self.number += 1;
            if buf.ends_with(b"\r") {
                buf.pop();
            }
            if too_long || buf.len() > self.max {
                self.skipping = too_long;
                return Ok(Some((self.number, Line::TooLong)));
            }
            if self.number == 1 && buf.starts_with(b"\xef\xbb\xbf") {
                buf.drain(..3);
            }
            if !buf.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some((self.number, Line::Bytes(buf))));
            }
        }
    }
}

/// The lines of `input` (`-`: stdin).
fn input_lines(input: &str, max: usize) -> Result<Lines<Box<dyn BufRead>>> {
    let r: Box<dyn BufRead> = if input == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(BufReader::new(std::fs::File::open(input).with_context(|| format!("reading {input}"))?))
    };
    Ok(Lines::new(r, max))
}

/// A line's bytes, or the error of an over-long line.
fn line_bytes(n: usize, line: &Line, max: usize) -> Result<&[u8]> {
    match line {
        Line::Bytes(b) => Ok(b),
        Line::TooLong => bail!("line {n}: longer than {max} bytes (--max-line-bytes)"),
    }
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

/// `ckd-edge predict`: one prediction record per non-blank input line (see [`answer_lines`]).
fn predict(engine: &Engine, input: &str, lenient: bool, max_line: usize) -> Result<()> {
    answer_lines(("predict", "predicted"), input, lenient, max_line, |n, item| {
        let at_line = |e: &dyn std::fmt::Display| anyhow::anyhow!("line {n}: {e}");
        match item {
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
    })
}

/// One JSON line per non-blank input line, `answer(line number, item)` making each record. A
/// reader that closes stdout (`ckd-edge predict ... | head -1`) ends the run with success:
/// nobody is left to read the rest. With `lenient`, a failing line gives an error record and
/// the run ends with a one-line count on stderr, `ckd-edge {cmd}: L lines read, A {done}, F
/// failed` (`cmd`: the subcommand and its past participle).
fn answer_lines(
    (cmd, done): (&str, &str),
    input: &str,
    lenient: bool,
    max_line: usize,
    answer: impl Fn(usize, Item) -> Result<Value>,
) -> Result<()> {
    let mut lines = input_lines(input, max_line)?;
    let (mut answered, mut failed) = (0usize, 0usize);
    let summary = |lines: &Lines<_>, answered, failed| {
        if lenient {
            note(format_args!("ckd-edge {cmd}: {} lines read, {answered} {done}, {failed} failed", lines.count()));
        }
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let written = |r: std::io::Result<()>| -> Result<bool> {
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(e).context("writing stdout"),
        }
    };
    while let Some((n, line)) = lines.next_line().with_context(|| format!("reading {input}"))? {
        let rec = line_bytes(n, &line, max_line)
            .and_then(|bytes| utf8_line(n, bytes))
            .and_then(|line| parse_item(n, line))
            .and_then(|item| answer(n, item));
        let rec = match rec {
            Ok(r) => {
                answered += 1;
                r
            }
            Err(e) if lenient => {
                failed += 1;
                json!({"line": n, "error": ckd_core::error_chain::one_line(&*e)})
            }
            Err(e) => {
                written(out.flush())?;
                return Err(e.context(format!("input {input}")));
            }
        };
        let mut line = serde_json::to_vec(&rec)?;
        line.push(b'\n');
        if !written(out.write_all(&line))? {
            summary(&lines, answered, failed);
            return Ok(());
        }
    }
    written(out.flush())?;
    summary(&lines, answered, failed);
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
        "kernels": engine.kernels().into_iter().map(|(op, k)| (op.to_string(), json!(k))).collect::<Map<String, Value>>(),
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

fn eval(bundle: &Path, opts: &EngineOptions, data: &Path, json_out: Option<&Path>, max_line: usize) -> Result<()> {
    let engine = open(bundle, opts)?;
    let file = std::fs::File::open(data).with_context(|| format!("reading {}", data.display()))?;
    let mut lines = Lines::new(BufReader::new(file), max_line);
    let mut probs = Vec::new();
    let mut labels = Vec::new();
    let mut times_ms = Vec::new();
    let mut truncated = 0usize;
    while let Some((n, line)) = lines.next_line().with_context(|| format!("reading {}", data.display()))? {
        let line =
            line_bytes(n, &line, max_line).and_then(|l| utf8_line(n, l)).with_context(|| data.display().to_string())?;
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
    let median_ms = median(&times_ms);
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
