//! `scope-probe snapshot`: the process table once, as JSON (for scripts) or as a text table.

use std::io::Write;

use anyhow::Result;

use crate::cli::SnapshotArgs;
use crate::enrich::process_view;
use crate::enrich::symbolize::Symbolizer;

pub fn run(args: SnapshotArgs) -> Result<()> {
    crate::privileges::check_ptrace()?;
    let several = args.all_vms || args.pid.len() > 1;
    let pids = if args.all_vms { beam_probes::target::running_vms() } else { args.pid.clone() };
    if pids.is_empty() {
        anyhow::bail!("no BEAM VM is running on this host");
    }
    let mut views = Vec::new();
    for pid in pids {
        match view(&args, pid) {
            Ok(v) => views.push(v),
            // With --all-vms, a VM that exits or cannot be read is said and skipped.
            Err(e) if args.all_vms => eprintln!("scope-probe: warning: pid {pid}: {e:#}"),
            Err(e) => return Err(e),
        }
    }
    // Stdout is line-buffered: a write per line of 100,000 rows would dominate.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    if args.json {
        if several {
            serde_json::to_writer_pretty(&mut out, &views)?;
        } else {
            serde_json::to_writer_pretty(&mut out, &views[0])?;
        }
        writeln!(out)?;
        out.flush()?;
        return Ok(());
    }
    for (i, view) in views.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        table(&mut out, view)?;
    }
    out.flush()?;
    Ok(())
}

/// One VM's table, system processes left out unless asked, longest mailboxes first.
fn view(args: &SnapshotArgs, pid: u32) -> Result<process_view::ProcessTableView> {
    let target = args.debug_info.open(pid)?;
    target.require_process_table()?;
    let mut symbolizer = Symbolizer::new(&target)?;
    let mut view = process_view::read(&target, &mut symbolizer)?;
    if !args.all {
        view.processes.retain(|p| !p.system);
        // OTP's own trees (kernel_sup, logger_sup...) and loose processes go with them.
        view.supervision.trees.retain(|t| !t.system);
        let shown: std::collections::HashSet<&str> = view.processes.iter().map(|p| p.pid.as_str()).collect();
        view.supervision.unsupervised.retain(|p| shown.contains(p.as_str()));
        view.ets.tables.retain(|t| !t.owner_system);
    }
    view.processes.sort_by(|a, b| b.message_queue_len.cmp(&a.message_queue_len).then(a.number.cmp(&b.number)));
    // The ports too (every one: OTP's own are few). A port table that cannot be read is
    // said, and the process table still shown.
    if let Some(e) = &view.ports_error {
        eprintln!("scope-probe: warning: pid {pid}: ports not read: {e}");
    }
    Ok(view)
}

fn table(out: &mut impl Write, view: &process_view::ProcessTableView) -> Result<()> {
    writeln!(
        out,
        "node {} (os pid {})  OTP {} (ERTS {})  {} processes ({} shown){}",
        view.node,
        view.os_pid,
        view.otp_release,
        view.erts_version,
        view.process_count,
        view.processes.len(),
        if view.torn > 0 { format!(", {} changed while read", view.torn) } else { String::new() }
    )?;
    writeln!(
        out,
        "{:<14} {:<34} {:<36} {:>9} {:>10} {:>10} {:>14} {:<9}",
        "PID", "NAME / INITIAL CALL", "CURRENT FUNCTION", "MSGQ", "MEMORY", "HEAP", "REDUCTIONS", "STATUS"
    )?;
    for p in &view.processes {
        writeln!(
            out,
            "{:<14} {:<34} {:<36} {:>9} {:>10} {:>10} {:>14} {:<9}",
            p.pid,
            p.identity.as_deref().unwrap_or(""),
            p.current_function,
            p.message_queue_len,
            p.memory_bytes,
            p.heap_bytes,
            p.reductions,
            p.status.label()
        )?;
    }
    ets_table(out, &view.ets)?;
    if let Some(ports) = &view.ports {
        ports_table(out, ports)?;
    }
    memory_table(out, view)?;
    Ok(())
}

/// Memory by kind, as `erlang:memory()` groups it, each kind's share of the total.
fn memory_table(out: &mut impl Write, view: &process_view::ProcessTableView) -> Result<()> {
    writeln!(out)?;
    let Some(m) = &view.memory else {
        writeln!(out, "Memory: not read ({})", view.memory_error.as_deref().unwrap_or("unknown"))?;
        return Ok(());
    };
    writeln!(out, "Memory (as erlang:memory() groups it)")?;
    writeln!(out, "{:<16} {:>14} {:>7}", "KIND", "BYTES", "SHARE")?;
    for (kind, bytes) in m.kinds() {
        let share = if m.total > 0 { format!("{:.1}%", bytes as f64 * 100.0 / m.total as f64) } else { String::new() };
        writeln!(out, "{kind:<16} {bytes:>14} {share:>7}")?;
    }
    Ok(())
}

/// The ETS tables, largest first (with `--all`, OTP's own too).
fn ets_table(out: &mut impl Write, ets: &process_view::EtsView) -> Result<()> {
    writeln!(out)?;
    if let Some(e) = &ets.error {
        writeln!(out, "ETS tables: not read ({e})")?;
        return Ok(());
    }
    writeln!(out, "{} ETS tables{}", ets.tables.len(), if ets.torn > 0 { format!(", {} changed while read", ets.torn) } else { String::new() })?;
    writeln!(out, "{:<28} {:<38} {:<14} {:<34} {:<13} {:<9} {:>10} {:>12}", "NAME", "ID", "OWNER", "OWNER IDENTITY", "TYPE", "PROTECT", "SIZE", "MEMORY")?;
    for r in &ets.tables {
        let t = &r.table;
        writeln!(
            out,
            "{:<28} {:<38} {:<14} {:<34} {:<13} {:<9} {:>10} {:>12}",
            t.name,
            t.id,
            t.owner.to_string(),
            r.owner_identity.as_deref().unwrap_or(""),
            t.table_type.label(),
            t.protection.label(),
            t.size,
            t.memory_bytes
        )?;
    }
    Ok(())
}

/// The ports after the processes: who owns each, what is queued in the VM (the driver's
/// queue) and, for sockets, in the kernel.
fn ports_table(out: &mut impl Write, ports: &beam_probes::ports::PortSnapshot) -> Result<()> {
    writeln!(
        out,
        "\n{} ports{}",
        ports.ports.len(),
        if ports.torn > 0 { format!(", {} changed while read", ports.torn) } else { String::new() }
    )?;
    writeln!(
        out,
        "{:<16} {:<20} {:<14} {:<22} {:>10} {:<5} {:>12} {:>12} {:<45} {:>10} {:>10}",
        "PORT", "NAME", "DRIVER", "CONNECTED", "QUEUE", "BUSY", "IN", "OUT", "SOCKET (LOCAL -> PEER, STATE)", "SEND-Q", "RECV-Q"
    )?;
    for p in &ports.ports {
        let owner = match &p.connected_name {
            Some(n) => format!("{} {n}", p.connected),
            None => p.connected.clone(),
        };
        let (socket, sendq, recvq) = match &p.socket {
            Some(s) => (
                format!(
                    "{} -> {} {}",
                    s.local.as_deref().unwrap_or("?"),
                    s.peer.as_deref().unwrap_or("*"),
                    s.state.unwrap_or("")
                ),
                s.send_queue.to_string(),
                s.recv_queue.to_string(),
            ),
            None => (p.os_pid.map(|o| format!("os pid {o}")).unwrap_or_default(), String::new(), String::new()),
        };
        let name: String = p.name.chars().take(20).collect();
        writeln!(
            out,
            "{:<16} {:<20} {:<14} {:<22} {:>10} {:<5} {:>12} {:>12} {:<45} {:>10} {:>10}",
            p.id,
            name,
            p.driver,
            owner,
            p.queue_bytes,
            if p.busy { "busy" } else { "" },
            p.bytes_in,
            p.bytes_out,
            socket,
            sendq,
            recvq
        )?;
    }
    Ok(())
}
