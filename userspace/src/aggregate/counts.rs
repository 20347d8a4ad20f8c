//! Aggregation of events into totals, per-process and per-pair counters, with bounded memory:
//! when a table is full the least useful tenth is evicted (exited processes first, then the
//! quietest), and every eviction is counted. Totals never lose anything to eviction.

use std::collections::HashMap;

use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;

use beam_probes::Capability;

use crate::event::{Event, RemotePid, What};
use crate::pipeline::Sink;

/// Buckets of the GC duration histogram, in seconds (10 µs .. 5 s).
pub const GC_BUCKETS: [f64; 12] = [1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 5.0];

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessStats {
    pub sent: u64,
    pub received: u64,
    pub schedules: u64,
    pub run_ns: u64,
    pub reductions: u64,
    pub gcs: u64,
    pub gc_ns: u64,
    /// Parent, when the spawn was seen (the API names it as a pid, not as this term).
    #[serde(skip)]
    pub parent: Option<u64>,
    pub spawned: bool,
    pub exited: bool,
    /// Sequence number of the last event that touched it (for eviction).
    #[serde(skip)]
    last_seen: u64,
}

impl ProcessStats {
    fn activity(&self) -> u64 {
        self.sent + self.received + self.schedules + self.gcs
    }
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Totals {
    pub sends: u64,
    pub schedules: u64,
    pub run_ns: u64,
    pub gcs: u64,
    pub spawns: u64,
    pub exits: u64,
    /// Messages to and from other nodes.
    pub dist_sent: u64,
    pub dist_received: u64,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Evictions {
    pub processes: u64,
    pub pairs: u64,
}

/// A local process, another node (its name atom) and a process there.
pub type DistPair = (u64, u64, RemotePid);

pub struct Aggregator {
    pub totals: Totals,
    pub events_by_kind: [u64; Capability::ALL.len()],
    pub gc_seconds: Histogram,
    pub processes: HashMap<u64, ProcessStats>,
    pub pairs: HashMap<(u64, u64), u64>,
    /// Messages between a local process and one of another node, by (local pid, the other
    /// node's name atom, the remote pid): sent and received. Bounded with the local pairs.
    pub dist_sent: HashMap<DistPair, u64>,
    pub dist_received: HashMap<DistPair, u64>,
    pub evictions: Evictions,
    max_processes: usize,
    max_pairs: usize,
    seq: u64,
}

impl Aggregator {
    pub fn new(max_processes: usize, max_pairs: usize) -> Self {
        Aggregator {
            totals: Totals::default(),
            events_by_kind: [0; Capability::ALL.len()],
            gc_seconds: Histogram::new(GC_BUCKETS),
            processes: HashMap::new(),
            pairs: HashMap::new(),
            dist_sent: HashMap::new(),
            dist_received: HashMap::new(),
            evictions: Evictions::default(),
            max_processes: max_processes.max(10),
            max_pairs: max_pairs.max(10),
            seq: 0,
        }
    }

    fn process(&mut self, pid: u64) -> &mut ProcessStats {
        self.seq += 1;
        if !self.processes.contains_key(&pid) && self.processes.len() >= self.max_processes {
            self.evict_processes();
        }
        let seq = self.seq;
        let p = self.processes.entry(pid).or_default();
        p.last_seen = seq;
        p
    }

    /// Drops a tenth of the process table: exited first, then the least active, oldest first.
    fn evict_processes(&mut self) {
        let n = (self.max_processes / 10).max(1);
        let mut order: Vec<(bool, u64, u64, u64)> =
            self.processes.iter().map(|(pid, p)| (!p.exited, p.activity(), p.last_seen, *pid)).collect();
        order.sort_unstable();
        for (_, _, _, pid) in order.into_iter().take(n) {
            self.processes.remove(&pid);
            self.evictions.processes += 1;
        }
    }

    fn evict_pairs(&mut self) {
        let n = (self.max_pairs / 10).max(1);
        let mut order: Vec<(u64, (u64, u64))> = self.pairs.iter().map(|(k, v)| (*v, *k)).collect();
        order.select_nth_unstable(n - 1);
        for (_, key) in order.into_iter().take(n) {
            self.pairs.remove(&key);
            self.evictions.pairs += 1;
        }
    }

    pub fn apply(&mut self, event: &Event) {
        self.events_by_kind[event.what.capability().index()] += 1;
        match event.what {
            What::Send { from, to, .. } => {
                self.totals.sends += 1;
                self.process(from).sent += 1;
                self.process(to).received += 1;
                if !self.pairs.contains_key(&(from, to)) && self.pairs.len() >= self.max_pairs {
                    self.evict_pairs();
                }
                *self.pairs.entry((from, to)).or_default() += 1;
            }
            What::Schedule { pid, run_ns, reductions } => {
                self.totals.schedules += 1;
                self.totals.run_ns += run_ns;
                let p = self.process(pid);
                p.schedules += 1;
                p.run_ns += run_ns;
                p.reductions += reductions;
            }
            What::Gc { pid, duration_ns } => {
                self.totals.gcs += 1;
                self.gc_seconds.observe(duration_ns as f64 / 1e9);
                let p = self.process(pid);
                p.gcs += 1;
                p.gc_ns += duration_ns;
            }
            What::Spawn { parent, child, .. } => {
                self.totals.spawns += 1;
                let c = self.process(child);
                c.parent = parent;
                c.spawned = true;
            }
            What::Exit { pid } => {
                self.totals.exits += 1;
                self.process(pid).exited = true;
            }
            What::DistSend { from, node, to } => {
                self.totals.dist_sent += 1;
                self.process(from).sent += 1;
                Self::count_dist(&mut self.dist_sent, (from, node, to), self.max_pairs, &mut self.evictions.pairs);
            }
            What::DistReceive { to, node, from } => {
                self.totals.dist_received += 1;
                self.process(to).received += 1;
                Self::count_dist(&mut self.dist_received, (to, node, from), self.max_pairs, &mut self.evictions.pairs);
            }
        }
    }

    /// Counts a cross-node pair; at the bound, the least busy tenth goes (counted).
    fn count_dist(map: &mut HashMap<DistPair, u64>, key: DistPair, max: usize, evicted: &mut u64) {
        if !map.contains_key(&key) && map.len() >= max {
            let n = (max / 10).max(1);
            let mut order: Vec<(u64, DistPair)> = map.iter().map(|(k, v)| (*v, *k)).collect();
            order.select_nth_unstable(n - 1);
            for (_, k) in order.into_iter().take(n) {
                map.remove(&k);
                *evicted += 1;
            }
        }
        *map.entry(key).or_default() += 1;
    }

    /// The `n` processes with the largest `key`, largest first (ties by pid for stability).
    pub fn top_processes(&self, n: usize, key: impl Fn(&ProcessStats) -> u64) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> =
            self.processes.iter().map(|(pid, p)| (key(p), *pid)).filter(|(k, _)| *k > 0).collect();
        v.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        v.truncate(n);
        v.into_iter().map(|(k, pid)| (pid, k)).collect()
    }

    pub fn top_pairs(&self, n: usize) -> Vec<((u64, u64), u64)> {
        let mut v: Vec<((u64, u64), u64)> = self.pairs.iter().map(|(k, c)| (*k, *c)).collect();
        v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

impl Sink for Aggregator {
    fn events(&mut self, batch: &[Event]) {
        for e in batch {
            self.apply(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(what: What) -> Event {
        Event { vm: 1, ts_ns: 0, tid: 0, what }
    }

    #[test]
    fn counts_pairs_and_totals() {
        let mut a = Aggregator::new(100, 100);
        for _ in 0..5 {
            a.apply(&ev(What::Send { from: 0x13, to: 0x23, alias: false }));
        }
        a.apply(&ev(What::Send { from: 0x23, to: 0x13, alias: false }));
        assert_eq!(a.totals.sends, 6);
        assert_eq!(a.pairs[&(0x13, 0x23)], 5);
        assert_eq!(a.top_pairs(1), vec![((0x13, 0x23), 5)]);
        assert_eq!(a.processes[&0x13].sent, 5);
        assert_eq!(a.processes[&0x13].received, 1);
    }

    #[test]
    fn eviction_is_bounded_counted_and_keeps_totals() {
        let mut a = Aggregator::new(100, 50);
        for i in 0..1000u64 {
            a.apply(&ev(What::Send { from: i << 4 | 3, to: (i + 1) << 4 | 3, alias: false }));
        }
        assert!(a.processes.len() <= 100);
        assert!(a.pairs.len() <= 50);
        assert_eq!(a.totals.sends, 1000);
        assert!(a.evictions.processes > 0 && a.evictions.pairs > 0);
    }

    #[test]
    fn exited_processes_are_evicted_first() {
        let mut a = Aggregator::new(10, 10);
        for i in 0..10u64 {
            a.apply(&ev(What::Schedule { pid: i, run_ns: 1, reductions: 1 }));
        }
        a.apply(&ev(What::Exit { pid: 9 }));
        a.apply(&ev(What::Schedule { pid: 100, run_ns: 1, reductions: 1 }));
        assert!(!a.processes.contains_key(&9));
        assert!(a.processes.contains_key(&0));
    }
}
