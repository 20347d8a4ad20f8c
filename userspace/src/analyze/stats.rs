//! A recording summed up per process identity and per function, as rates: what `diff` compares.
//! Processes are keyed by who they are (registered name, label, initial call), not by pid:
//! pids differ from run to run, and many short-lived workers of one kind are one row.

use std::collections::HashMap;

use beam_probes::Capability;

use crate::record::format::{Owner, What};
use crate::record::model::Recording;
use crate::record::select::Filter;

/// What a process is called across recordings.
pub fn key(rec: &Recording, pid: u64) -> String {
    match rec.identity(pid) {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => "(unnamed)".to_owned(),
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Gc {
    /// Collections per observed second, and seconds collecting per observed second.
    pub per_second: f64,
    pub seconds_per_second: f64,
    /// The longest collection, ns.
    pub longest_ns: u64,
}

#[derive(Debug, Default)]
pub struct Stats {
    /// Seconds each capability's hooks were attached within it.
    pub observed: HashMap<Capability, f64>,
    /// Cores: CPU samples in each Erlang function (or what the thread did), over the span.
    pub cpu_functions: HashMap<String, f64>,
    pub cpu_processes: HashMap<String, f64>,
    /// Messages per observed second between two kinds of process.
    pub pairs: HashMap<(String, String), f64>,
    pub gc: HashMap<String, Gc>,
    /// Seconds scheduled in per observed second.
    pub run: HashMap<String, f64>,
    /// The longest mailbox and the most memory each kind of process had at a table read.
    pub mailbox_peak: HashMap<String, u64>,
    pub memory_peak: HashMap<String, u64>,
    /// The schedulers' CPU (cores, from /proc), resident memory at its peak, mean run queue.
    pub scheduler_cores: Option<f64>,
    pub resident_peak: Option<u64>,
    pub run_queue_mean: Option<f64>,
}

impl Stats {
    pub fn of(rec: &Recording, f: &Filter) -> Stats {
        let seconds = (f.to.saturating_sub(f.from)) as f64 / 1e9;
        let mut s = Stats::default();
        for c in Capability::ALL {
            s.observed.insert(c, rec.observed_seconds_between(c.index() as u8, f.from, f.to));
        }
        let frequency = rec.meta().frequency as f64;
        if frequency > 0.0 && seconds > 0.0 {
            let core = 1.0 / frequency / seconds;
            for smp in rec.samples.iter().filter(|x| f.time(x.t)) {
                let function = match (smp.erlang_leaf, smp.owner) {
                    (Some(l), _) => rec.name(l).to_owned(),
                    // What a thread did, whichever scheduler it was: `[scheduler N: spin]`.
                    (None, Owner::Thread(label)) => without_numbers(rec.name(label)),
                    (None, Owner::Process(_)) => "(unknown function)".to_owned(),
                };
                if let Owner::Process(pid) = smp.owner {
                    if !f.process(rec, pid) {
                        continue;
                    }
                    *s.cpu_processes.entry(key(rec, pid)).or_default() += core;
                } else if f.pids.is_some() {
                    continue;
                }
                *s.cpu_functions.entry(function).or_default() += core;
            }
        }
        // Events are counted per second their hooks were attached.
        let per = |c: Capability| s.observed.get(&c).copied().filter(|o| *o > 0.0);
        let (send_s, gc_s, run_s) = (per(Capability::Send), per(Capability::Gc), per(Capability::Schedule));
        for e in rec.events.iter().filter(|e| f.event(rec, e.t, &e.what)) {
            match e.what {
                What::Send { from, to } | What::SendToAlias { from, to } => {
                    if let Some(o) = send_s {
                        *s.pairs.entry((key(rec, from), key(rec, to))).or_default() += 1.0 / o;
                    }
                }
                What::Gc { pid, duration_ns } => {
                    if let Some(o) = gc_s {
                        let g = s.gc.entry(key(rec, pid)).or_default();
                        g.per_second += 1.0 / o;
                        g.seconds_per_second += duration_ns as f64 / 1e9 / o;
                        g.longest_ns = g.longest_ns.max(duration_ns);
                    }
                }
                What::Schedule { pid, run_ns, .. } => {
                    if let Some(o) = run_s {
                        *s.run.entry(key(rec, pid)).or_default() += run_ns as f64 / 1e9 / o;
                    }
                }
                What::Spawn { .. } | What::Exit { .. } | What::DistSend { .. } | What::DistReceive { .. } => {}
            }
        }
        for t in rec.tables.iter().filter(|t| f.time(t.t)) {
            for p in t.processes.iter().filter(|p| f.process(rec, p.pid)) {
                let k = key(rec, p.pid);
                let m = s.mailbox_peak.entry(k.clone()).or_default();
                *m = (*m).max(p.message_queue_len);
                let m = s.memory_peak.entry(k).or_default();
                *m = (*m).max(p.memory_bytes);
            }
        }
        let procs: Vec<_> = rec.procs.iter().filter(|p| f.time(p.t)).collect();
        if let (Some(a), Some(b)) = (procs.first(), procs.last())
            && b.t > a.t
        {
            let busy = |p: &crate::record::model::Proc| p.cpu.iter().filter(|c| c.0 < 3).map(|c| c.2).sum::<f64>();
            s.scheduler_cores = Some((busy(b) - busy(a)).max(0.0) / ((b.t - a.t) as f64 / 1e9));
        }
        s.resident_peak = procs.iter().filter_map(|p| p.resident_bytes).max();
        let queues: Vec<f64> = procs.iter().map(|p| p.run_queues.iter().sum::<u32>() as f64).collect();
        if !queues.is_empty() {
            s.run_queue_mean = Some(queues.iter().sum::<f64>() / queues.len() as f64);
        }
        s
    }
}

/// `[scheduler 2: spin]` -> `[scheduler N: spin]`: thread states compare across schedulers.
fn without_numbers(label: &str) -> String {
    let mut out = String::with_capacity(label.len());
    let mut in_number = false;
    for c in label.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}
