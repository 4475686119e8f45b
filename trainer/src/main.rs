//! `ckd`: the workstation command line. Thin: parses arguments ([`cli::args`]), dispatches each
//! command to its handler ([`cli::data`], [`cli::train`], [`cli::evaluate`]) and maps errors to
//! exit codes (1 = error, 2 = usage, from clap). A reader that closes stdout early (`| head`)
//! ends the command with status 0 and no message.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

#[macro_use]
mod cli;

use cli::args::{Cli, Cmd, StudentCmd, TeacherCmd};
use cli::{data, evaluate, train, zero_shot};

/// The log filter when `RUST_LOG` is not set: this project's crates (`ckd`, `ckd_trainer`,
/// `ckd_core`, `ckd_edge`: a directive's target matches by prefix) at INFO, every other crate
/// (candle, tract, tokenizers) at WARN.
const DEFAULT_LOG_FILTER: &str = "warn,ckd=info";

fn main() -> ExitCode {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal; a log file or a pipe gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        // Its own report of a failed write would be an `eprintln!`, which panics on a failing stderr.
        .log_internal_errors(false)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if reader_gone(&e) => ExitCode::SUCCESS,
        Err(e) => {
            note!("error: {}", ckd_core::error_chain::one_line(&*e));
            ExitCode::FAILURE
        }
    }
}

/// Whether `e` is a write to stdout that failed because the reader closed the pipe.
fn reader_gone(e: &anyhow::Error) -> bool {
    e.downcast_ref::<cli::print::StdoutError>().is_some_and(|s| s.0.kind() == std::io::ErrorKind::BrokenPipe)
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Demo(a) => evaluate::demo(&a),
        Cmd::Synth(a) => data::synth(&a),
        Cmd::Ingest(a) => data::ingest(&a),
        Cmd::Student { cmd: StudentCmd::Train(a) } => train::student_train(&a),
        Cmd::Eval(a) => evaluate::eval(&a),
        Cmd::Export(a) => train::export(&a),
        Cmd::Pack(a) => train::pack(&a),
        Cmd::Teacher { cmd: TeacherCmd::Train(a) } => train::teacher_train(&a),
        Cmd::Teacher { cmd: TeacherCmd::Label(a) } => train::teacher_label(&a),
        Cmd::Teacher { cmd: TeacherCmd::Merge(a) } => train::teacher_merge(&a),
        Cmd::Teacher { cmd: TeacherCmd::States(a) } => train::teacher_states(&a),
        Cmd::Teacher { cmd: TeacherCmd::ZeroShot(a) } => zero_shot::run(&a),
        Cmd::Explain(a) => data::explain(&a),
        Cmd::ExplainTruth(a) => evaluate::explain_truth(&a),
        Cmd::ExplainAttention(a) => evaluate::explain_attention(&a),
        Cmd::Pipeline(a) => evaluate::pipeline(&a),
        Cmd::Bench(a) => evaluate::bench(&a),
        Cmd::GenTables(a) => data::gen_tables(&a),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    /// The default filter passes this project's INFO lines and keeps other crates' INFO out.
    #[test]
    fn default_filter_keeps_third_party_info_out() {
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(super::DEFAULT_LOG_FILTER)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "ckd_trainer::synth::files", "ours: trainer");
            tracing::info!(target: "ckd::cli::data", "ours: binary");
            tracing::info!(target: "ckd_edge::plan", "ours: edge");
            tracing::info!(target: "tract_linalg::frame", "theirs: info");
            tracing::info!(target: "candle_core::cuda", "theirs: info");
            tracing::warn!(target: "tract_core", "theirs: warning");
        });
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        for want in ["ours: trainer", "ours: binary", "ours: edge", "theirs: warning"] {
            assert!(text.contains(want), "{want} missing from {text}");
        }
        assert!(!text.contains("theirs: info"), "{text}");
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
