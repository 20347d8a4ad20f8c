//! scope-probe: zero-instrumentation monitoring of a running BEAM with eBPF.
//!
//! The program is a pipeline: sources (BPF probes, the CPU sampler, the process table and
//! /proc), each stamping what it observes with the VM and the time -> one fan-out ->
//! aggregation (and detectors) -> exporters (Prometheus metrics, JSON API). `control` decides
//! which hooks are attached when; `cmd` has one module per subcommand.

mod aggregate;
mod cli;
mod cmd;
mod control;
mod detect;
mod enrich;
mod event;
mod export;
mod pipeline;
mod privileges;
mod source;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // Output piped into `head` and the like: stop quietly, as other tools do.
        Err(e) if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("scope-probe: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Profile(args)) => cmd::profile::run(args),
        Some(Command::Snapshot(args)) => cmd::snapshot::run(args),
        Some(Command::Top(args)) => cmd::top::run(args),
        Some(Command::Monitor(args)) => cmd::monitor::run(args),
        None => cmd::monitor::run(cli.monitor),
    }
}
