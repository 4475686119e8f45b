//! `bedside-monitor`: opens a ckd bundle and answers visit requests framed with the ckd wire
//! protocol on a serial device (`--device /dev/ttyUSB0`), or on stdin/stdout (`--device -`).
//! A terminal device is put in raw mode at `--baud`. Logs go to stderr: request ids and error
//! codes only, never visit contents.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Answers ckd wire-protocol requests on a serial device with predictions from a bundle")]
struct Args {
    /// Bundle directory (manifest.bin, model.onnx, model.onnx.data, tokenizer.json) or a
    /// single-file bundle (`ckd pack`).
    #[arg(long)]
    bundle: PathBuf,
    /// Serial device, or `-` for stdin/stdout.
    #[arg(long, default_value = "-")]
    device: String,
    /// Line speed for a terminal device.
    #[arg(long, default_value_t = 115_200)]
    baud: u32,
    /// MIMIC-III `D_ICD_DIAGNOSES.csv` (ICD9_CODE, SHORT_TITLE): titles for diagnosis codes
    /// without a category title that a device sends without a title.
    #[arg(long)]
    diagnosis_titles: Option<PathBuf>,
    /// MIMIC-III `D_ICD_PROCEDURES.csv` (ICD9_CODE, SHORT_TITLE): titles for procedure codes a
    /// device sends without a title (as in training; without it such procedures are rendered
    /// as their code).
    #[arg(long)]
    procedure_titles: Option<PathBuf>,
    /// Log one line per frame to stderr.
    #[arg(long)]
    verbose: bool,
}

fn run(args: &Args) -> anyhow::Result<ckd_bedside_monitor::Stats> {
    let engine = ckd_edge::Engine::open(&args.bundle).with_context(|| "opening the bundle")?;
    // Predictions reuse the memory they free (main fixed a low mmap threshold for loading).
    ckd_edge::memory::reuse_freed_memory();
    let table = |path: &Option<PathBuf>| -> anyhow::Result<HashMap<String, String>> {
        let Some(path) = path else { return Ok(HashMap::new()) };
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(ckd_bedside_monitor::read_titles(&path.display().to_string(), std::io::BufReader::new(file))?)
    };
    let titles = ckd_bedside_monitor::Titles {
        diagnoses: table(&args.diagnosis_titles)?,
        procedures: table(&args.procedure_titles)?,
    };
    let verbose = args.verbose;
    let log = move |o: &ckd_bedside_monitor::Outcome| {
        if let Some(code) = o.error {
            eprintln!("request {}: error {code:?}: {}", o.id, o.reason);
        } else if verbose {
            eprintln!("request {}: answered", o.id);
        }
    };
    if args.device == "-" {
        eprintln!("bedside-monitor: ready on stdin/stdout");
        let stats = ckd_bedside_monitor::serve(
            &engine,
            &titles,
            "stdin",
            std::io::stdin().lock(),
            std::io::stdout().lock(),
            log,
        )?;
        return Ok(stats);
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&args.device)
        .with_context(|| format!("opening {}", args.device))?;
    if rustix::termios::isatty(&file) {
        let mut t =
            rustix::termios::tcgetattr(&file).with_context(|| format!("{}: reading terminal settings", args.device))?;
        t.make_raw();
        t.set_speed(args.baud).with_context(|| format!("{}: baud rate {}", args.device, args.baud))?;
        rustix::termios::tcsetattr(&file, rustix::termios::OptionalActions::Now, &t)
            .with_context(|| format!("{}: setting raw mode", args.device))?;
    }
    let writer = file.try_clone().with_context(|| format!("{}: second handle", args.device))?;
    eprintln!("bedside-monitor: ready on {}", args.device);
    Ok(ckd_bedside_monitor::serve(&engine, &titles, &args.device, file, writer, log)?)
}

fn main() -> ExitCode {
    // Large tensors freed while loading go back to the system at once (lower peak RSS).
    ckd_edge::memory::use_mmap_for_large_allocations();
    let args = Args::parse();
    match run(&args) {
        Ok(stats) => {
            eprintln!("bedside-monitor: end of input; {} answered, {} error responses", stats.answered, stats.errors);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bedside-monitor: {e:#}");
            ExitCode::FAILURE
        }
    }
}
