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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
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
        Cmd::Pipeline(a) => evaluate::pipeline(&a),
        Cmd::Bench(a) => evaluate::bench(&a),
        Cmd::GenTables(a) => data::gen_tables(&a),
    }
}
