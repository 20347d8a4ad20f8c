//! `scope-probe replay`: what a recording holds, in order, filtered; or the VM's state at one
//! moment (`--at`).

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Result, bail};

use crate::cli::ReplayArgs;
use crate::record::format::{Owner, What};
use crate::record::model::{Recording, parse_time};
use crate::record::select::Filter;
use crate::units::{at, bytes, count, duration_ns};

/// The kinds a listing can show (`--kind`).
const KINDS: [&str; 12] =
    ["send", "schedule", "gc", "spawn", "exit", "dist_send", "dist_receive", "sample", "table", "proc", "window", "finding"];
/// Shown unless --kind says otherwise: CPU samples and /proc reads are many and dull in a list.
const DEFAULT_KINDS: [&str; 10] = ["send", "schedule", "gc", "spawn", "exit", "dist_send", "dist_receive", "table", "window", "finding"];

pub fn run(args: ReplayArgs) -> Result<()> {
    for k in &args.kind {
        if !KINDS.contains(&k.as_str()) {
            bail!("unknown kind {k:?} (kinds: {})", KINDS.join(", "));
        }
    }
    let rec = open(&args.recording)?;
    let filter = Filter::new(&rec, &args.select)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        if args.summary {
            serde_json::to_writer(&mut out, rec.meta())?;
            writeln!(out)?;
        } else {
            let kinds: Vec<&str> = if args.kind.is_empty() { DEFAULT_KINDS.to_vec() } else { args.kind.iter().map(String::as_str).collect() };
            json_lines(&mut out, &rec, &filter, &kinds, args.limit)?;
        }
        return Ok(out.flush()?);
    }
    summary(&mut out, &args.recording.display().to_string(), &rec)?;
    if args.summary {
        return Ok(out.flush()?);
    }
    match &args.at {
        Some(t) => state_at(&mut out, &rec, &filter, parse_time(t).map_err(anyhow::Error::msg)?)?,
        None => {
            let kinds: Vec<&str> =
                if args.kind.is_empty() { DEFAULT_KINDS.to_vec() } else { args.kind.iter().map(String::as_str).collect() };
            list(&mut out, &rec, &filter, &kinds, args.limit)?
        }
    }
    Ok(out.flush()?)
}

/// Reads a recording; a damaged tail is said once and what came before is used.
pub fn open(path: &std::path::Path) -> Result<Recording> {
    let rec = Recording::open(path)?;
    for d in &rec.damage {
        eprintln!("scope-probe: warning: {}: {d}", path.display());
    }
    Ok(rec)
}

/// Reads a recording of one VM: `report`, `diff`, `why` and `check` compare and rank the
/// processes of one node (a merged recording's nodes would mix in their tables and counters).
pub fn open_one_vm(path: &std::path::Path) -> Result<Recording> {
    let rec = open(path)?;
    let vms = &rec.meta().vms;
    if !vms.is_empty() {
        let nodes: Vec<&str> = vms.iter().map(|v| v.vm.node.as_str()).collect();
        anyhow::bail!(
            "{} is a merged recording of {} ({}): replay and export read it; this command reads one node's recording",
            path.display(),
            nodes.join(", "),
            vms.iter().map(|v| v.file.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(rec)
}

fn capability_name(index: u8) -> &'static str {
    beam_probes::Capability::ALL.get(usize::from(index)).map_or("?", |c| c.name())
}

/// What the recording is: the VM, the span, how it was observed, what it holds.
pub fn summary(out: &mut impl Write, name: &str, rec: &Recording) -> Result<()> {
    let m = rec.meta();
    // Indexed as `Capability::ALL`: send, schedule, gc, spawn, exit, distribution.
    let mut by_kind = [0u64; beam_probes::Capability::ALL.len()];
    for e in &rec.events {
        by_kind[e.what.capability().index()] += 1;
    }
    let started = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(m.started_unix.max(0.0));
    if m.vms.is_empty() {
        writeln!(
            out,
            "# {name}: {} of node {} (os pid {}), OTP {} (ERTS {}), build {}",
            m.format, m.vm.node, m.vm.os_pid, m.vm.otp_release, m.vm.erts_version, m.vm.build
        )?;
    } else {
        let nodes: Vec<String> =
            m.vms.iter().map(|v| format!("{} (os pid {}, OTP {}, +{:.3} s)", v.vm.node, v.vm.os_pid, v.vm.otp_release, v.offset_ns as f64 / 1e9)).collect();
        writeln!(out, "# {name}: {}, merged, of {} nodes: {}", m.format, m.vms.len(), nodes.join(", "))?;
        if let Some(clock) = &m.clock {
            writeln!(out, "# clocks: {clock}")?;
        }
    }
    writeln!(
        out,
        "# started {}, {:.1} s; mode {}{}; CPU sampling {}",
        humantime::format_rfc3339_seconds(started),
        rec.end as f64 / 1e9,
        m.mode,
        if m.mode == "adaptive" { format!(" (budget {:.1}%)", m.overhead_budget * 100.0) } else { String::new() },
        if m.frequency > 0 { format!("at {} Hz", m.frequency) } else { "off".into() },
    )?;
    writeln!(
        out,
        "# {} events ({} sends, {} schedules, {} GCs, {} spawns, {} exits, {} to or from other nodes), {} CPU samples, {} table reads, {} finding changes{}",
        count(rec.events.len() as u64),
        count(by_kind[0]),
        count(by_kind[1]),
        count(by_kind[2]),
        count(by_kind[3]),
        count(by_kind[4]),
        count(by_kind[5]),
        count(rec.samples.len() as u64),
        count(rec.tables.len() as u64),
        rec.findings.len(),
        if rec.lost > 0 { format!(", {} entries lost (the disk did not keep up)", count(rec.lost)) } else { String::new() },
    )?;
    let observed: Vec<String> =
        beam_probes::Capability::ALL.iter().map(|c| format!("{} {:.1} s", c.name(), rec.observed_seconds(c.index() as u8))).collect();
    writeln!(out, "# hooks attached (events exist only then): {}", observed.join(", "))?;
    Ok(())
}

/// The entries a listing shows, as (time, source, index), in time order: sources 0 events,
/// 1 samples, 2 table reads, 3 /proc reads, 4 windows, 5 findings.
fn order(rec: &Recording, f: &Filter, kinds: &[&str]) -> Vec<(u64, u8, usize)> {
    let want = |k: &str| kinds.contains(&k);
    let mut order: Vec<(u64, u8, usize)> = Vec::new();
    for (i, e) in rec.events.iter().enumerate() {
        let k = kind(&e.what);
        if want(k) && f.event(rec, e.t, &e.what) {
            order.push((e.t, 0, i));
        }
    }
    if want("sample") {
        for (i, s) in rec.samples.iter().enumerate() {
            let shown = match s.owner {
                Owner::Process(p) => f.process(rec, p),
                Owner::Thread(_) => f.pids.is_none(),
            };
            if f.time(s.t) && shown {
                order.push((s.t, 1, i));
            }
        }
    }
    if want("table") {
        order.extend(rec.tables.iter().enumerate().filter(|(_, t)| f.time(t.t)).map(|(i, t)| (t.t, 2, i)));
    }
    if want("proc") {
        order.extend(rec.procs.iter().enumerate().filter(|(_, p)| f.time(p.t)).map(|(i, p)| (p.t, 3, i)));
    }
    if want("window") {
        order.extend(rec.windows.iter().enumerate().filter(|(_, w)| f.time(w.t)).map(|(i, w)| (w.t, 4, i)));
    }
    if want("finding") {
        order.extend(rec.findings.iter().enumerate().filter(|(_, x)| f.time(x.t)).map(|(i, x)| (x.t, 5, i)));
    }
    order.sort_unstable();
    order
}

/// Entries of every kind in time order.
fn list(out: &mut impl Write, rec: &Recording, f: &Filter, kinds: &[&str], limit: usize) -> Result<()> {
    let order = order(rec, f, kinds);
    let total = order.len();
    let shown = if limit == 0 { total } else { total.min(limit) };
    writeln!(out, "{:>10}  {:<9} WHAT", "TIME", "KIND")?;
    for &(t, source, i) in &order[..shown] {
        let (k, what) = match source {
            0 => {
                let e = &rec.events[i];
                (kind(&e.what), event_text(rec, &e.what))
            }
            1 => ("sample", sample_text(rec, &rec.samples[i])),
            2 => ("table", table_text(rec, f, &rec.tables[i])),
            3 => {
                let p = &rec.procs[i];
                let cpu: f64 = p.cpu.iter().map(|c| c.2).sum();
                (
                    "proc",
                    format!(
                        "{:.2} CPU seconds on the schedulers so far, {} resident, run queues {:?}",
                        cpu,
                        p.resident_bytes.map(bytes).unwrap_or_else(|| "?".into()),
                        p.run_queues
                    ),
                )
            }
            4 => {
                let w = &rec.windows[i];
                let caps: Vec<&str> = w.capabilities.iter().map(|c| capability_name(*c)).collect();
                ("window", format!("{} {}", if w.open { "attached" } else { "detached" }, caps.join(", ")))
            }
            _ => ("finding", finding_text(&rec.findings[i].json)),
        };
        writeln!(out, "{:>10}  {k:<9} {what}", at(t))?;
    }
    if shown < total {
        writeln!(out, "# {} more (--limit 0 shows all)", count((total - shown) as u64))?;
    }
    if total == 0 {
        writeln!(out, "# nothing matches{}", if f.all { "" } else { " (OTP's own processes are hidden: --all shows them)" })?;
    }
    Ok(())
}

fn kind(w: &What) -> &'static str {
    match w {
        What::Send { .. } | What::SendToAlias { .. } => "send",
        What::Schedule { .. } => "schedule",
        What::Gc { .. } => "gc",
        What::Spawn { .. } => "spawn",
        What::Exit { .. } => "exit",
        What::DistSend { .. } => "dist_send",
        What::DistReceive { .. } => "dist_receive",
    }
}

fn event_text(rec: &Recording, w: &What) -> String {
    match *w {
        What::Send { from, to } => format!("{} -> {}", rec.who(from), rec.who(to)),
        What::SendToAlias { from, to } => format!("{} -> {} (to an alias)", rec.who(from), rec.who(to)),
        What::Schedule { pid, run_ns, reductions } => {
            format!("{} ran {}, {} reductions", rec.who(pid), duration_ns(run_ns), count(reductions))
        }
        What::Gc { pid, duration_ns: d } => format!("{} collected for {}", rec.who(pid), duration_ns(d)),
        What::Spawn { parent: Some(p), child } => format!("{} spawned {}", rec.who(p), rec.who(child)),
        What::Spawn { parent: None, child } => format!("{} spawned", rec.who(child)),
        What::Exit { pid } => format!("{} exited", rec.who(pid)),
        What::DistSend { from, node, to } => format!("{} -> {} on {}", rec.who(from), rec.name(to), rec.name(node)),
        What::DistReceive { to, node, from } => format!("{} on {} -> {}", rec.name(from), rec.name(node), rec.who(to)),
    }
}

fn sample_text(rec: &Recording, s: &crate::record::model::Sample) -> String {
    let owner = match s.owner {
        Owner::Process(p) => rec.who(p),
        Owner::Thread(label) => rec.name(label).to_owned(),
    };
    let leaf = s.erlang_leaf.map(|l| rec.name(l)).unwrap_or("");
    let native = s.native_leaf.map(|n| format!(" [{}]", rec.name(n))).unwrap_or_default();
    format!("{owner} {leaf}{native}")
}

fn table_text(rec: &Recording, f: &Filter, t: &crate::record::model::Table) -> String {
    let shown: Vec<_> = t.processes.iter().filter(|p| f.process(rec, p.pid)).collect();
    // Processes asked for: how each was at this read.
    if f.pids.is_some() {
        let rows: Vec<String> = shown
            .iter()
            .map(|p| {
                let current = p.current.map(|c| rec.name(c)).unwrap_or("?");
                format!("{} {}, mailbox {}, {}, in {current}", rec.who(p.pid), rec.name(p.status), count(p.message_queue_len), bytes(p.memory_bytes))
            })
            .collect();
        return if rows.is_empty() { "(not in this read)".into() } else { rows.join("; ") };
    }
    let longest = shown.iter().max_by_key(|p| p.message_queue_len);
    let largest = shown.iter().max_by_key(|p| p.memory_bytes);
    let mut s = format!("{} processes", count(t.processes.len() as u64));
    if let Some(p) = longest.filter(|p| p.message_queue_len > 0) {
        s += &format!("; longest mailbox {} {}", rec.who(p.pid), count(p.message_queue_len));
    }
    if let Some(p) = largest {
        s += &format!("; largest {} {}", rec.who(p.pid), bytes(p.memory_bytes));
    }
    s
}

/// One line for a finding's change: its state, kind, who and summary.
pub fn finding_text(json: &serde_json::Value) -> String {
    let s = |k: &str| json.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let who = match (s("pid"), s("name")) {
        ("", _) => String::new(),
        (pid, "") => format!(" {pid}"),
        (pid, name) => format!(" {pid} ({name})"),
    };
    format!("{} {}{who}: {}", s("state"), s("kind"), s("summary"))
}

/// The VM at one moment: the process table read before it (with what spawned and exited in
/// between, when those hooks were attached), memory and run queues, and who ran where.
fn state_at(out: &mut impl Write, rec: &Recording, f: &Filter, t: u64) -> Result<()> {
    if t > rec.end {
        bail!("{} is after the recording's end ({})", at(t), at(rec.end));
    }
    writeln!(out, "State at {}", at(t))?;
    let vms = &rec.meta().vms;
    if vms.is_empty() {
        return vm_state_at(out, rec, f, t, None);
    }
    // A merged recording: each node's state apart (its /proc, schedulers and table reads).
    let threads = rec.thread_vms();
    for (i, v) in vms.iter().enumerate() {
        writeln!(out, "\nNode {} (os pid {}):", v.vm.node, v.vm.os_pid)?;
        vm_state_at(out, rec, f, t, Some((i as u32, &threads)))?;
    }
    Ok(())
}

/// One VM's state at `t`: all of the recording's, or (`vm`) one VM's of a merged one, with
/// the VM of each thread.
fn vm_state_at(out: &mut impl Write, rec: &Recording, f: &Filter, t: u64, vm: Option<(u32, &HashMap<u32, u32>)>) -> Result<()> {
    let index = vm.map(|(i, _)| i);
    match rec.procs.iter().rev().find(|p| p.t <= t && index.is_none_or(|i| p.vm == i)) {
        Some(p) => writeln!(
            out,
            "VM: {} resident, run queues {:?} (/proc read at {})",
            p.resident_bytes.map(bytes).unwrap_or_else(|| "?".into()),
            p.run_queues,
            at(p.t)
        )?,
        None => writeln!(out, "VM: no /proc read before then")?,
    }
    running_at(out, rec, f, t, vm)?;
    let table = match index {
        Some(i) => rec.vm_table_at(i, t),
        None => rec.table_at(t),
    };
    let Some(table) = table else {
        writeln!(out, "No process-table read in the recording.")?;
        return Ok(());
    };
    let before = if table.t <= t {
        format!("{:.3} s before", (t - table.t) as f64 / 1e9)
    } else {
        format!("{:.3} s after: the first one", (table.t - t) as f64 / 1e9)
    };
    // Spawns and exits between the read and the moment, when their hooks saw them.
    let (lo, hi) = (table.t.min(t), table.t.max(t));
    let mut spawned = Vec::new();
    let mut exited = std::collections::HashSet::new();
    for e in rec.events.iter().filter(|e| e.t > lo && e.t <= hi) {
        match e.what {
            What::Spawn { child, .. } if table.t < t => spawned.push(child),
            What::Exit { pid } if table.t < t => {
                exited.insert(pid);
            }
            _ => {}
        }
    }
    // Spawned since and already gone again: not live at the moment.
    spawned.retain(|c| !exited.contains(c));
    let live = table.processes.iter().filter(|p| !exited.contains(&p.pid)).count() + spawned.len();
    let rows: Vec<_> = table.processes.iter().filter(|p| f.process(rec, p.pid) && !exited.contains(&p.pid)).collect();
    let hidden = table.processes.iter().filter(|p| p.system && !f.all).count();
    writeln!(
        out,
        "Processes: {} live (table read at {}, {before}){}{}",
        count(live as u64),
        at(table.t),
        if spawned.is_empty() && exited.is_empty() {
            String::new()
        } else {
            format!("; since then {} spawned and alive, {} exited", spawned.len(), exited.len())
        },
        if hidden > 0 { format!("; {hidden} of OTP's own hidden (--all shows them)") } else { String::new() },
    )?;
    let mut rows = rows;
    rows.sort_by(|a, b| b.message_queue_len.cmp(&a.message_queue_len).then(b.memory_bytes.cmp(&a.memory_bytes)));
    writeln!(out, "{:<16} {:<36} {:<18} {:>9} {:>10} {:>12}  CURRENT", "PID", "NAME", "STATUS", "MAILBOX", "MEMORY", "REDUCTIONS")?;
    for p in rows {
        let name = rec.identity(p.pid).unwrap_or("");
        writeln!(
            out,
            "{:<16} {:<36} {:<18} {:>9} {:>10} {:>12}  {}",
            rec.pid(p.pid),
            name,
            rec.name(p.status),
            count(p.message_queue_len),
            bytes(p.memory_bytes),
            count(p.reductions),
            p.current.map(|c| rec.name(c)).unwrap_or("")
        )?;
    }
    for c in spawned.iter().filter(|c| f.process(rec, **c)) {
        writeln!(out, "{:<16} {:<36} {:<18}", rec.pid(*c), rec.identity(*c).unwrap_or(""), "(spawned since)")?;
    }
    Ok(())
}

/// Who ran on each scheduler at `t`: the schedule slice that covers it (exact, when the
/// schedule hook was attached), else the CPU sample nearest it (within two sample periods).
fn running_at(out: &mut impl Write, rec: &Recording, f: &Filter, t: u64, vm: Option<(u32, &HashMap<u32, u32>)>) -> Result<()> {
    // Scheduler threads by their samples: tid -> (kind, number).
    let mut schedulers: HashMap<u32, (u8, u32)> = HashMap::new();
    for s in &rec.samples {
        let ours = vm.is_none_or(|(i, threads)| threads.get(&s.tid) == Some(&i));
        if let Some(k) = s.scheduler
            && ours
        {
            schedulers.entry(s.tid).or_insert(k);
        }
    }
    let period = if rec.meta().frequency > 0 { 2_000_000_000 / rec.meta().frequency } else { 0 };
    let mut rows: Vec<((u8, u32), String)> = Vec::new();
    for (&tid, &sched) in &schedulers {
        // The first slice on this thread to end at or after `t` covers it if it began before.
        let from = rec.events.partition_point(|e| e.t < t);
        let slice = rec.events[from..]
            .iter()
            .take_while(|e| e.t <= t + 1_000_000_000)
            .find_map(|e| match e.what {
                What::Schedule { pid, run_ns, .. } if e.tid == tid => Some((pid, e.t.saturating_sub(run_ns) <= t)),
                _ => None,
            })
            .and_then(|(pid, covers)| covers.then_some(pid));
        let text = if let Some(pid) = slice {
            format!("{} (its schedule slice)", rec.who(pid))
        } else {
            let i = rec.samples.partition_point(|s| s.t < t.saturating_sub(period));
            let near = rec.samples[i..].iter().take_while(|s| s.t <= t + period).filter(|s| s.tid == tid).min_by_key(|s| s.t.abs_diff(t));
            match near {
                Some(s) => {
                    let who = match s.owner {
                        Owner::Process(p) if !f.process(rec, p) => {
                            format!("{} (OTP's own)", rec.who(p))
                        }
                        Owner::Process(p) => rec.who(p),
                        Owner::Thread(l) => rec.name(l).to_owned(),
                    };
                    let leaf = s.erlang_leaf.map(|l| format!(" in {}", rec.name(l))).unwrap_or_default();
                    format!("{who}{leaf} (sample at {})", at(s.t))
                }
                None => "nothing sampled (idle)".into(),
            }
        };
        rows.push((sched, text));
    }
    rows.sort();
    if rows.is_empty() {
        writeln!(out, "Schedulers: no CPU samples in the recording")?;
    } else {
        writeln!(out, "Schedulers:")?;
        for ((kind, n), text) in rows {
            let kind = match kind {
                0 => "scheduler",
                1 => "dirty CPU",
                _ => "dirty I/O",
            };
            writeln!(out, "  {kind} {n:<3} {text}")?;
        }
    }
    Ok(())
}

/// The listing as JSON lines: times in seconds, pids as Erlang prints them, with names.
fn json_lines(out: &mut impl Write, rec: &Recording, f: &Filter, kinds: &[&str], limit: usize) -> Result<()> {
    use serde_json::{Value, json};
    let proc_ = |pid: u64| json!({"pid": rec.pid(pid), "name": rec.identity(pid)});
    let order = order(rec, f, kinds);
    let shown = if limit == 0 { order.len() } else { order.len().min(limit) };
    for &(t, source, i) in &order[..shown] {
        let mut v: Value = match source {
            0 => match rec.events[i].what {
                What::Send { from, to } => json!({"kind": "send", "from": proc_(from), "to": proc_(to)}),
                What::SendToAlias { from, to } => json!({"kind": "send", "from": proc_(from), "to": proc_(to), "alias": true}),
                What::Schedule { pid, run_ns, reductions } => json!({"kind": "schedule", "process": proc_(pid), "run_ns": run_ns, "reductions": reductions, "tid": rec.events[i].tid}),
                What::Gc { pid, duration_ns } => json!({"kind": "gc", "process": proc_(pid), "duration_ns": duration_ns}),
                What::Spawn { parent, child } => json!({"kind": "spawn", "parent": parent.map(proc_), "child": proc_(child)}),
                What::Exit { pid } => json!({"kind": "exit", "process": proc_(pid)}),
                What::DistSend { from, node, to } => {
                    json!({"kind": "dist_send", "from": proc_(from), "to": {"pid": rec.name(to), "node": rec.name(node)}})
                }
                What::DistReceive { to, node, from } => {
                    json!({"kind": "dist_receive", "from": {"pid": rec.name(from), "node": rec.name(node)}, "to": proc_(to)})
                }
            },
            1 => {
                let s = &rec.samples[i];
                let owner = match s.owner {
                    Owner::Process(p) => proc_(p),
                    Owner::Thread(l) => json!({"thread": rec.name(l)}),
                };
                let frames: Vec<&str> = s.frames.iter().map(|&id| rec.name(id)).collect();
                json!({"kind": "sample", "owner": owner, "frames": frames, "tid": s.tid})
            }
            2 => {
                let rows: Vec<Value> = rec.tables[i]
                    .processes
                    .iter()
                    .filter(|p| f.process(rec, p.pid))
                    .map(|p| json!({"pid": rec.pid(p.pid), "name": rec.identity(p.pid), "status": rec.name(p.status), "message_queue_len": p.message_queue_len, "memory_bytes": p.memory_bytes, "reductions": p.reductions, "current": p.current.map(|c| rec.name(c))}))
                    .collect();
                json!({"kind": "table", "processes": rows})
            }
            3 => {
                let p = &rec.procs[i];
                json!({"kind": "proc", "resident_bytes": p.resident_bytes, "run_queues": p.run_queues})
            }
            4 => {
                let w = &rec.windows[i];
                let caps: Vec<&str> = w.capabilities.iter().map(|c| capability_name(*c)).collect();
                json!({"kind": "window", "open": w.open, "capabilities": caps})
            }
            _ => json!({"kind": "finding", "finding": rec.findings[i].json}),
        };
        v["t"] = json!(t as f64 / 1e9);
        serde_json::to_writer(&mut *out, &v)?;
        writeln!(out)?;
    }
    Ok(())
}
