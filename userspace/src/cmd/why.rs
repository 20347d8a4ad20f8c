//! `scope-probe why run.scope <process>`: where that process's time went, ranked, with the
//! evidence; and, when it waits on another process, where that one's time went.

use std::io::Write;

use anyhow::{Result, bail};

use crate::analyze::why::{Why, explain};
use crate::cli::WhyArgs;
use crate::record::model::Recording;
use crate::record::select::Filter;

pub fn run(args: WhyArgs) -> Result<()> {
    let rec = crate::cmd::replay::open_one_vm(&args.recording)?;
    let pids = rec.matching(&args.target);
    if pids.is_empty() {
        bail!(
            "no process in {} is {:?}: give a pid as <0.80.0>, or part of a registered name, label, initial call or module \
             (`scope-probe replay {} --at 0` lists them)",
            args.recording.display(),
            args.target,
            args.recording.display()
        );
    }
    let mut select = args.select.clone();
    select.processes.clear();
    let filter = Filter::new(&rec, &select)?;
    let why = explain(&rec, &filter, &pids);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let who = if pids.len() == 1 { rec.who(pids[0]) } else { format!("{} processes matching {:?}", pids.len(), args.target) };
    writeln!(out, "Why {who}: {:.1} s recorded, {} process-table reads, {} CPU samples of it", why.seconds, why.reads, why.samples)?;
    print(&mut out, &rec, &why, "  ", 8)?;
    // The process it waits on most, one level down.
    if let Some(on) = why.causes.iter().find_map(|c| c.waits_on).filter(|on| !pids.contains(on)) {
        let theirs = explain(&rec, &filter, &[on]);
        writeln!(out)?;
        writeln!(out, "{}, which it waits on:", rec.who(on))?;
        print(&mut out, &rec, &theirs, "  ", 3)?;
    }
    Ok(out.flush()?)
}

fn print(out: &mut impl Write, rec: &Recording, why: &Why, indent: &str, n: usize) -> Result<()> {
    if why.causes.is_empty() {
        writeln!(out, "{indent}nothing recorded about it (no samples, no table read saw it, no events)")?;
    }
    let total: f64 = why.causes.iter().map(|c| c.seconds).sum();
    for (i, c) in why.causes.iter().take(n).enumerate() {
        let share = if total > 0.0 { c.seconds / total * 100.0 } else { 0.0 };
        writeln!(out, "{indent}{}. {}: {}{:.2} s ({share:.0}%)", i + 1, c.what, if c.estimated { "~" } else { "" }, c.seconds)?;
        for e in &c.evidence {
            writeln!(out, "{indent}     {e}")?;
        }
    }
    if let Some((peak, first, last)) = why.mailbox {
        let trend = if last > first { format!(", growing ({first} at the first read, {last} at the last)") } else { String::new() };
        writeln!(out, "{indent}mailbox: at most {peak} messages at a table read{trend}")?;
    }
    let _ = rec;
    Ok(())
}
