//! scope-probe: zero-instrumentation monitoring of a running BEAM with eBPF.
//!
//! The program is a pipeline: sources (BPF probes, the CPU sampler, the process table and
//! /proc), each stamping what it observes with the VM and the time -> one fan-out ->
//! aggregation (and detectors) -> exporters (Prometheus metrics, JSON API). `control` decides
//! which hooks are attached when; `cmd` has one module per subcommand.

mod aggregate;
mod analyze;
mod cli;
mod cmd;
mod config;
mod control;
mod detect;
mod enrich;
mod event;
mod export;
mod pipeline;
mod privileges;
mod record;
mod source;
mod units;

use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    limit_malloc_arenas();
    // Before anything else runs: what is never needed is never held.
    if let Err(e) = privileges::drop_unneeded() {
        eprintln!("scope-probe: error: {e:#}");
        return ExitCode::FAILURE;
    }
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli, &matches) {
        Ok(code) => code,
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

/// Two malloc arenas instead of glibc's eight per core. Each VM a session attaches to starts
/// half a dozen threads whose symbols, tables and buffers are freed when it detaches; spread
/// over one arena per thread, what they freed stayed resident (under --all, 100 attach/detach
/// cycles grew the probe by ~90 MiB; with two arenas it stays within a few MiB).
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn run(cli: Cli, matches: &clap::ArgMatches) -> Result<ExitCode> {
    // `check` says with its status whether the hypotheses held.
    if let Some(Command::Check(args)) = cli.command {
        return Ok(if cmd::check::run(args)? { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    match cli.command {
        Some(Command::Config(args)) => cmd::config(args),
        Some(Command::Profile(args)) => cmd::profile::run(args),
        Some(Command::Snapshot(args)) => cmd::snapshot::run(args),
        Some(Command::Top(args)) => cmd::top::run(args),
        Some(Command::Record(args)) => cmd::record::run(args, matches.subcommand_matches("record").unwrap_or(matches)),
        Some(Command::Replay(args)) => cmd::replay::run(args),
        Some(Command::Export(args)) => cmd::export::run(args),
        Some(Command::Report(args)) => cmd::report::run(args),
        Some(Command::Diff(args)) => cmd::diff::run(args),
        Some(Command::Merge(args)) => cmd::merge::run(args),
        Some(Command::Why(args)) => cmd::why::run(args),
        Some(Command::Check(_)) => unreachable!("handled above"),
        Some(Command::Monitor(args)) => cmd::monitor::run(args, matches.subcommand_matches("monitor").unwrap_or(matches)),
        None => cmd::monitor::run(cli.monitor, matches),
    }
    .map(|()| ExitCode::SUCCESS)
}
