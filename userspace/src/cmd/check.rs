//! `scope-probe check`: hypotheses against a recording, or a live VM recorded for --duration;
//! each confirmed or refuted with its evidence. Exit status 0 when every one holds, 1 when one
//! is refuted or cannot be told, so that it fits CI.

use std::io::Write;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches};

use crate::analyze::check::{Verdict, check, parse};
use crate::cli::{CheckArgs, Cli, Command};

/// Whether every assertion held (the caller exits 1 otherwise).
pub fn run(args: CheckArgs) -> Result<bool> {
    // Every assertion is read before anything is recorded: a typo fails at once.
    let mut assertions = Vec::new();
    for text in &args.asserts {
        assertions.push(parse(text).with_context(|| format!("--assert {text:?}"))?);
    }
    let (path, _temp) = match (&args.recording, args.pid) {
        (Some(p), _) => (p.clone(), None),
        (None, Some(pid)) => {
            let temp = tempfile::Builder::new()
                .prefix("scope-probe-check-")
                .suffix(".scope")
                .tempfile()
                .context("creating a temporary recording")?;
            record_live(&args, pid, temp.path())?;
            (temp.path().to_owned(), Some(temp))
        }
        (None, None) => anyhow::bail!("give a recording, or --pid for a live VM"),
    };
    let rec = crate::cmd::replay::open_one_vm(&path)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut all = true;
    for a in &assertions {
        let o = check(&rec, a);
        let word = match o.verdict {
            Verdict::Confirmed => "CONFIRMED",
            Verdict::Refuted => "REFUTED",
            Verdict::Undecided => "UNDECIDED",
        };
        all &= o.verdict == Verdict::Confirmed;
        writeln!(out, "{word:<10} {}", a.text)?;
        for e in &o.evidence {
            writeln!(out, "           {e}")?;
        }
    }
    out.flush()?;
    Ok(all)
}

/// Records the live VM into `path` as `scope-probe record` would.
fn record_live(args: &CheckArgs, pid: u32, path: &std::path::Path) -> Result<()> {
    let mut argv: Vec<String> =
        ["scope-probe", "record", "--pid", &pid.to_string(), "--mode", args.mode.name(), "-o"].iter().map(|s| s.to_string()).collect();
    argv.push(path.display().to_string());
    argv.extend(["--duration".into(), humantime::format_duration(args.duration).to_string()]);
    if let Some(f) = &args.debug_info.debug_file {
        argv.extend(["--debug-file".into(), f.display().to_string()]);
    }
    if args.debug_info.no_debuginfod {
        argv.push("--no-debuginfod".into());
    }
    let matches = Cli::command().try_get_matches_from(&argv)?;
    let cli = Cli::from_arg_matches(&matches)?;
    match cli.command {
        Some(Command::Record(r)) => crate::cmd::record::run(r, matches.subcommand_matches("record").expect("record's own arguments")),
        _ => unreachable!("the arguments name the record command"),
    }
}
