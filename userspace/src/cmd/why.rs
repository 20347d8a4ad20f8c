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
    requests(&mut out, &rec, &pids, &args.request_processes)?;
    // The process it waits on most, one level down.
    if let Some(on) = why.causes.iter().find_map(|c| c.waits_on).filter(|on| !pids.contains(on)) {
        let theirs = explain(&rec, &filter, &[on]);
        writeln!(out)?;
        writeln!(out, "{}, which it waits on:", rec.who(on))?;
        print(&mut out, &rec, &theirs, "  ", 3)?;
    }
    Ok(out.flush()?)
}

/// When the processes serve requests: how long those took, what their slowest waited on.
fn requests(out: &mut impl Write, rec: &Recording, pids: &[u64], request_processes: &[String]) -> Result<()> {
    let calls = crate::aggregate::calls::Calls::from_recording(rec, request_processes);
    let r = &calls.requests;
    let slowest: Vec<_> = r.slowest.iter().filter(|q| pids.contains(&q.pid)).collect();
    let Some(handler) = slowest.first().map(|q| q.handler.clone()) else { return Ok(()) };
    let ms = |ns: Option<u64>| ns.map_or("?".into(), |ns| format!("{:.1} ms", ns as f64 / 1e6));
    if let Some(d) = r.handlers.get(&handler) {
        let q = d.quantiles(&[0.5, 0.99]);
        writeln!(out)?;
        writeln!(out, "Requests of {handler}: {} measured, p50 {}, p99 {}", d.count, ms(q[0]), ms(q[1]))?;
    }
    // Where the slowest of these spent their time: the server they waited on most.
    let total: u64 = slowest.iter().map(|q| q.duration_ns).sum();
    let mut on: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    for w in slowest.iter().flat_map(|q| &q.waits) {
        *on.entry(w.server).or_default() += w.wait_ns;
    }
    if let Some((server, ns)) = on.into_iter().max_by_key(|&(s, ns)| (ns, std::cmp::Reverse(s)))
        && total > 0
    {
        let share = ns as f64 / total as f64 * 100.0;
        writeln!(out, "  the slowest waited {share:.0}% of their time on {} (calls paired from sends)", rec.who(server))?;
    }
    let view = crate::export::requests::RequestsView::new(r, 0, &|p| rec.pid(p), &|p| rec.identity(p).unwrap_or("").to_owned());
    for q in view.slowest.iter().filter(|q| slowest.iter().any(|s| rec.pid(s.pid) == q.pid)).take(5) {
        writeln!(out, "  {}", q.sentence())?;
    }
    Ok(())
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
