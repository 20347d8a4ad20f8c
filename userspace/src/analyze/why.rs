//! Where a process's time went, from a recording: on a CPU (its samples, by function, the
//! collector apart), waiting for a call's reply (whom, from the monitors the table reads
//! saw), waiting for messages or sleeping (where, from the function each read found it in),
//! runnable but not running, collecting garbage (GC events while the hook was attached), and
//! its mailbox. Table reads are moments: each stands for the time between reads, so their
//! shares are estimates, said as such with how many reads they rest on.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::aggregate::calls::{Calls, ServerCalls};
use crate::record::format::{Owner, What};
use crate::record::model::Recording;
use crate::record::select::Filter;

/// One way the time went.
#[derive(Debug, Clone)]
pub struct Cause {
    pub what: String,
    /// Seconds, measured or estimated.
    pub seconds: f64,
    pub estimated: bool,
    pub evidence: Vec<String>,
    /// The process it waits on, when it waits on one.
    pub waits_on: Option<u64>,
}

#[derive(Debug)]
pub struct Why {
    pub seconds: f64,
    pub reads: usize,
    pub samples: usize,
    pub causes: Vec<Cause>,
    /// Longest mailbox at a read, and its length at the first and the last read.
    pub mailbox: Option<(u64, u64, u64)>,
}

/// What the pairing of sends says of a server's calls, a pool's in its own words.
fn call_evidence(rec: &Recording, server: u64, s: &ServerCalls, callers: &HashSet<u64>) -> Vec<String> {
    let ms = |ns: Option<u64>| ns.map_or("?".into(), |ns| format!("{:.1} ms", ns as f64 / 1e6));
    let (l, mine) = (&s.latency, s.callers.iter().filter(|(c, _)| callers.contains(c)).map(|(_, n)| n).sum::<u64>());
    let pool = rec.processes.get(&server).and_then(|p| p.initial_call.as_deref()).and_then(beam_probes::roles::role).filter(|r| *r == beam_probes::roles::Role::Pool);
    let mut out = vec![format!(
        "{} {} calls paired from sends ({mine} of them from here): waited p50 {}, p99 {}",
        if pool.is_some() { "a pool: callers waited at checkout," } else { "its callers," },
        l.count,
        ms(l.quantile(0.5)),
        ms(l.quantile(0.99))
    )];
    if pool.is_some() && s.hold.count > 0 {
        out.push(format!("held what they checked out p50 {}, p99 {} ({} checkins)", ms(s.hold.quantile(0.5)), ms(s.hold.quantile(0.99)), s.hold.count));
    }
    out
}

fn share(n: usize, of: usize) -> String {
    format!("{n} of {of} table reads")
}

/// Explains the time of `pids` (several when a name or module matched several processes:
/// their time adds up) over the filter's span.
pub fn explain(rec: &Recording, f: &Filter, pids: &[u64]) -> Why {
    let set: HashSet<u64> = pids.iter().copied().collect();
    let span = f.to.saturating_sub(f.from) as f64 / 1e9;
    let meta = rec.meta();
    let mut causes = Vec::new();

    // On a CPU, by its samples: each stands for one sampling period.
    let period = if meta.frequency > 0 { 1.0 / meta.frequency as f64 } else { 0.0 };
    let gc_functions: HashSet<&str> = meta.gc_functions.iter().map(String::as_str).collect();
    let mut functions: BTreeMap<String, usize> = BTreeMap::new();
    let (mut samples, mut gc_samples) = (0usize, 0usize);
    for s in rec.samples.iter().filter(|s| f.time(s.t)) {
        let Owner::Process(p) = s.owner else { continue };
        if !set.contains(&p) {
            continue;
        }
        samples += 1;
        let in_gc = s.frames.iter().any(|&id| gc_functions.iter().any(|g| rec.name(id).starts_with(g)));
        if in_gc {
            gc_samples += 1;
        }
        let leaf = s.erlang_leaf.map(|l| rec.name(l).to_owned()).unwrap_or_else(|| "(unknown function)".into());
        let leaf = match s.native_leaf {
            Some(n) => format!("{leaf} [{}]", rec.name(n)),
            None => leaf,
        };
        *functions.entry(leaf).or_default() += 1;
    }
    if samples > 0 {
        let mut top: Vec<(String, usize)> = functions.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut evidence: Vec<String> =
            top.iter().take(5).map(|(name, n)| format!("{name}: {:.2} s ({n} samples)", *n as f64 * period)).collect();
        if gc_samples > 0 {
            evidence
                .push(format!("of which collecting garbage: {:.2} s ({gc_samples} samples in the collector)", gc_samples as f64 * period));
        }
        causes.push(Cause {
            what: "running on a CPU".into(),
            seconds: samples as f64 * period,
            estimated: false,
            evidence,
            waits_on: None,
        });
    }

    // The table reads: what state it was in, and where.
    let reads: Vec<_> = rec.tables.iter().filter(|t| f.time(t.t)).collect();
    let mut waiting_on: HashMap<u64, (usize, BTreeMap<String, usize>)> = HashMap::new();
    let mut waiting_in: BTreeMap<String, usize> = BTreeMap::new();
    let (mut runnable, mut collecting, mut suspended, mut seen) = (0usize, 0usize, 0usize, 0usize);
    let mut queue: Vec<u64> = Vec::new();
    for t in &reads {
        let waits: HashMap<u64, &Vec<u64>> = t.waits.iter().map(|(p, on)| (*p, on)).collect();
        for p in t.processes.iter().filter(|p| set.contains(&p.pid)) {
            seen += 1;
            queue.push(p.message_queue_len);
            let current = p.current.map(|c| rec.name(c).to_owned()).unwrap_or_else(|| "(unknown function)".into());
            match rec.name(p.status) {
                "runnable" => runnable += 1,
                "garbage_collecting" => collecting += 1,
                "suspended" => suspended += 1,
                "waiting" => match waits.get(&p.pid).and_then(|on| on.first()) {
                    Some(&on) => {
                        let e = waiting_on.entry(on).or_default();
                        e.0 += 1;
                        *e.1.entry(current).or_default() += 1;
                    }
                    None => *waiting_in.entry(current).or_default() += 1,
                },
                // Running: its samples say it better.
                _ => {}
            }
        }
    }
    // A read stands for its share of the span (several processes: of their summed time).
    let per_read = if seen > 0 { span * pids.len().max(1) as f64 / seen as f64 } else { 0.0 };
    let calls = if waiting_on.is_empty() { None } else { Some(Calls::from_recording(rec, &[])) };
    for (on, (n, places)) in &waiting_on {
        let places: Vec<String> = places.iter().map(|(c, k)| format!("in {c} at {k}")).collect();
        let mut evidence = vec![format!("{}: a call to it pending, monitoring it ({})", share(*n, seen), places.join(", "))];
        if let Some(s) = calls.as_ref().and_then(|c| c.servers.get(on)) {
            evidence.extend(call_evidence(rec, *on, s, &set));
        }
        causes.push(Cause {
            what: format!("waiting for a reply from {}", rec.who(*on)),
            seconds: *n as f64 * per_read,
            estimated: true,
            evidence,
            waits_on: Some(*on),
        });
    }
    for (place, n) in &waiting_in {
        let what =
            if place.starts_with("timer:sleep") { format!("sleeping in {place}") } else { format!("waiting for messages in {place}") };
        causes.push(Cause { what, seconds: *n as f64 * per_read, estimated: true, evidence: vec![share(*n, seen)], waits_on: None });
    }
    if runnable > 0 {
        let queues: Vec<f64> = rec.procs.iter().filter(|p| f.time(p.t)).map(|p| p.run_queues.iter().sum::<u32>() as f64).collect();
        let mut evidence = vec![share(runnable, seen)];
        if !queues.is_empty() {
            evidence.push(format!(
                "the run queues held {:.1} on average (at most {})",
                queues.iter().sum::<f64>() / queues.len() as f64,
                queues.iter().copied().fold(0.0, f64::max)
            ));
        }
        causes.push(Cause {
            what: "runnable, waiting for a scheduler".into(),
            seconds: runnable as f64 * per_read,
            estimated: true,
            evidence,
            waits_on: None,
        });
    }
    if suspended > 0 {
        causes.push(Cause {
            what: "suspended".into(),
            seconds: suspended as f64 * per_read,
            estimated: true,
            evidence: vec![share(suspended, seen)],
            waits_on: None,
        });
    }

    // Collections, from GC events while the hook was attached.
    let gc_observed = rec.observed_seconds_between(beam_probes::Capability::Gc.index() as u8, f.from, f.to);
    let (mut gcs, mut gc_ns, mut longest) = (0u64, 0u64, 0u64);
    for e in rec.events.iter().filter(|e| f.time(e.t)) {
        if let What::Gc { pid, duration_ns } = e.what
            && set.contains(&pid)
        {
            gcs += 1;
            gc_ns += duration_ns;
            longest = longest.max(duration_ns);
        }
    }
    if gcs > 0 && gc_observed > 0.0 {
        let per_second = gc_ns as f64 / 1e9 / gc_observed;
        causes.push(Cause {
            what: "collecting garbage".into(),
            seconds: per_second * span,
            estimated: gc_observed < span * 0.99,
            evidence: vec![format!(
                "{gcs} collections in the {gc_observed:.1} s the GC hook was attached, {:.2} ms in all, the longest {:.2} ms{}",
                gc_ns as f64 / 1e6,
                longest as f64 / 1e6,
                if collecting > 0 { format!("; {}: collecting", share(collecting, seen)) } else { String::new() }
            )],
            waits_on: None,
        });
    }
    causes.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then_with(|| a.what.cmp(&b.what)));
    let mailbox = queue.iter().max().map(|m| (*m, queue[0], *queue.last().expect("not empty")));
    Why { seconds: span, reads: reads.len(), samples, causes, mailbox }
}
