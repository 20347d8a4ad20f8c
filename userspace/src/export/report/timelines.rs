//! Timelines: mailbox length and memory of the processes that peaked highest (from the
//! process-table reads), the VM's resident memory and its schedulers' CPU (cores busy between
//! consecutive /proc reads).

use std::collections::HashMap;
use std::fmt::Write;

use super::chart::{Series, Unit, line_chart};
use crate::record::model::Recording;
use crate::record::select::Filter;
use crate::units::count;

/// Processes drawn per chart (the highest peaks).
const TOP: usize = 6;

pub fn section(out: &mut String, rec: &Recording, f: &Filter) {
    out.push_str("<section id=\"sp-timelines\"><h2>Timelines</h2>");
    let (x0, x1) = (f.from as f64 / 1e9, f.to as f64 / 1e9);
    let tables: Vec<_> = rec.tables.iter().filter(|x| f.time(x.t)).collect();
    if tables.is_empty() {
        out.push_str("<p class=\"sp-none\">No process-table read in the span: no mailbox or process memory to draw.</p>");
    } else {
        let gaps: Vec<f64> = tables.windows(2).map(|w| (w[1].t - w[0].t) as f64 / 1e9).collect();
        let every =
            if gaps.is_empty() { String::new() } else { format!(", about every {:.1} s", gaps.iter().sum::<f64>() / gaps.len() as f64) };
        let _ = write!(
            out,
            "<p class=\"sp-note\">From {} process-table reads{every}; a line has a point per read that saw the process.</p>",
            count(tables.len() as u64)
        );
        let mut peak: HashMap<u64, (u64, u64)> = HashMap::new();
        for t in &tables {
            for p in t.processes.iter().filter(|p| f.process(rec, p.pid)) {
                let e = peak.entry(p.pid).or_default();
                e.0 = e.0.max(p.message_queue_len);
                e.1 = e.1.max(p.memory_bytes);
            }
        }
        let top = |key: fn(&(u64, u64)) -> u64| -> Vec<u64> {
            let mut v: Vec<(u64, u64)> = peak.iter().map(|(p, x)| (*p, key(x))).filter(|(_, k)| *k > 0).collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            v.into_iter().take(TOP).map(|(p, _)| p).collect()
        };
        let series = |pids: &[u64], value: fn(&crate::record::format::ProcessRow) -> u64| -> Vec<Series> {
            pids.iter()
                .map(|&pid| Series {
                    name: rec.who(pid),
                    points: tables
                        .iter()
                        .filter_map(|t| t.processes.iter().find(|p| p.pid == pid).map(|p| (t.t as f64 / 1e9, value(p) as f64)))
                        .collect(),
                })
                .collect()
        };
        let queues = top(|x| x.0);
        if queues.is_empty() {
            out.push_str("<p class=\"sp-none\">No process shown had a message waiting in any table read.</p>");
        } else {
            let title = format!("Mailbox length (messages waiting) of the {} longest", queues.len());
            line_chart(out, "sp-chart-mailbox", &title, Unit::Messages, x0, x1, &series(&queues, |p| p.message_queue_len));
        }
        let memory = top(|x| x.1);
        if !memory.is_empty() {
            let title = format!("Process memory (process_info memory) of the {} largest", memory.len());
            line_chart(out, "sp-chart-memory", &title, Unit::Bytes, x0, x1, &series(&memory, |p| p.memory_bytes));
        }
    }
    vm(out, rec, f, x0, x1);
    out.push_str("</section>\n");
}

/// The VM as a whole, from /proc: resident memory, and cores busy per kind of scheduler.
fn vm(out: &mut String, rec: &Recording, f: &Filter, x0: f64, x1: f64) {
    let procs: Vec<_> = rec.procs.iter().filter(|p| f.time(p.t)).collect();
    if procs.is_empty() {
        out.push_str("<p class=\"sp-none\">No /proc read in the span: no VM memory or scheduler CPU to draw.</p>");
        return;
    }
    let rss: Vec<(f64, f64)> = procs.iter().filter_map(|p| p.resident_bytes.map(|b| (p.t as f64 / 1e9, b as f64))).collect();
    if !rss.is_empty() {
        line_chart(
            out,
            "sp-chart-rss",
            "VM resident memory",
            Unit::Bytes,
            x0,
            x1,
            &[Series { name: "resident (RSS)".into(), points: rss }],
        );
    }
    // CPU seconds so far per kind of thread: normal, dirty CPU, dirty I/O schedulers, other.
    const KINDS: [&str; 4] = ["normal schedulers", "dirty CPU schedulers", "dirty I/O schedulers", "other VM threads"];
    let mut lines: Vec<Vec<(f64, f64)>> = vec![Vec::new(); KINDS.len()];
    let mut threads = [0usize; 4];
    for w in procs.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b.t <= a.t {
            continue;
        }
        let secs = (b.t - a.t) as f64 / 1e9;
        for (k, line) in lines.iter_mut().enumerate() {
            let sum = |p: &crate::record::model::Proc| p.cpu.iter().filter(|c| usize::from(c.0).min(3) == k).map(|c| c.2).sum::<f64>();
            line.push((b.t as f64 / 1e9, ((sum(b) - sum(a)) / secs).max(0.0)));
        }
    }
    if let Some(last) = procs.last() {
        for (k, n) in threads.iter_mut().enumerate() {
            *n = last.cpu.iter().filter(|c| usize::from(c.0).min(3) == k).count();
        }
    }
    let series: Vec<Series> = lines
        .into_iter()
        .enumerate()
        .filter(|(k, l)| *k == 0 || l.iter().any(|p| p.1 >= 0.005))
        .map(|(k, points)| {
            let name = if k < 3 { format!("{} ({} threads)", KINDS[k], threads[k]) } else { KINDS[k].to_owned() };
            Series { name, points }
        })
        .collect();
    if series.iter().all(|s| s.points.is_empty()) {
        out.push_str("<p class=\"sp-muted\">Scheduler CPU needs two /proc reads; the span has one.</p>");
    } else {
        line_chart(out, "sp-chart-cpu", "Scheduler CPU (cores busy between /proc reads)", Unit::Cores, x0, x1, &series);
    }
}
