//! GC storm: garbage collection taking a large share of the schedulers' work, by the CPU
//! samples (no hook): a sample is in the collector when one of its C frames is a collector
//! entry point of this build (the GC hook functions of its table). The evidence: the share, and
//! the processes whose collections take the most; while it fires, GC windows from the
//! controller add how many collections they run and how long they take.

use std::collections::{HashMap, VecDeque};

use beam_probes::Capability;

use super::settings::GcStorm as Settings;
use super::{Context, Detector, Kind, Observation, Severity, Subject};
use crate::enrich::stack::Owner;
use crate::event::{Event, Sample, What};

pub struct GcStorm {
    s: Settings,
    gc_functions: Vec<String>,
    /// One bucket per second: (second, samples of processes, of those in GC, GC samples per
    /// process).
    buckets: VecDeque<(u64, u64, u64, HashMap<u64, u64>)>,
    /// Collections seen in windows, per process: (count, total ns).
    collections: HashMap<u64, (u64, u64)>,
}

impl GcStorm {
    pub fn new(s: Settings, gc_functions: Vec<String>) -> GcStorm {
        GcStorm { s, gc_functions, buckets: VecDeque::new(), collections: HashMap::new() }
    }
}

impl Detector for GcStorm {
    fn kind(&self) -> Kind {
        Kind::GcStorm
    }

    fn evidence_capabilities(&self) -> &'static [Capability] {
        &[Capability::Gc]
    }

    fn sample(&mut self, sample: &Sample) {
        let Owner::Process(pid) = sample.stack.owner else { return };
        let second = sample.ts_ns / 1_000_000_000;
        if self.buckets.back().is_none_or(|b| b.0 != second) {
            self.buckets.push_back((second, 0, 0, HashMap::new()));
        }
        let window = self.s.window.as_secs().max(1);
        while self.buckets.front().is_some_and(|b| b.0 + window <= second) {
            self.buckets.pop_front();
        }
        let in_gc = sample.stack.frames.iter().any(|f| self.gc_functions.iter().any(|g| **f == **g));
        let b = self.buckets.back_mut().expect("pushed");
        b.1 += 1;
        if in_gc {
            b.2 += 1;
            *b.3.entry(pid).or_default() += 1;
        }
    }

    fn events(&mut self, batch: &[Event]) {
        for e in batch {
            if let What::Gc { pid, duration_ns } = e.what
                && (self.collections.len() < 10_000 || self.collections.contains_key(&pid))
            {
                let c = self.collections.entry(pid).or_default();
                c.0 += 1;
                c.1 += duration_ns;
            }
        }
    }

    fn observe(&mut self, ctx: &Context<'_>) -> Vec<Observation> {
        let samples: u64 = self.buckets.iter().map(|b| b.1).sum();
        let in_gc: u64 = self.buckets.iter().map(|b| b.2).sum();
        // Too few samples of processes say nothing about where their time goes.
        if samples < 50 {
            return Vec::new();
        }
        let share = in_gc as f64 / samples as f64;
        let subject = Subject::Vm;
        let limit = if ctx.is_firing(Kind::GcStorm, &subject) { self.s.disable_share } else { self.s.enable_share };
        if share < limit {
            self.collections.clear();
            return Vec::new();
        }
        let mut per: HashMap<u64, u64> = HashMap::new();
        for b in &self.buckets {
            for (p, n) in &b.3 {
                *per.entry(*p).or_default() += n;
            }
        }
        let mut top: Vec<(u64, u64)> = per.into_iter().collect();
        top.sort_by_key(|t| std::cmp::Reverse(t.1));
        let list: Vec<String> = top
            .iter()
            .take(5)
            .map(|(p, n)| {
                let gcs = self
                    .collections
                    .get(p)
                    .map(|(c, ns)| format!(", {c} collections seen, {:.2} ms each", *ns as f64 / 1e6 / (*c).max(1) as f64))
                    .unwrap_or_default();
                format!("{} {:.0}% of GC samples{gcs}", ctx.who(*p), *n as f64 * 100.0 / in_gc.max(1) as f64)
            })
            .collect();
        let worst = top.first().map(|(p, _)| ctx.who(*p)).unwrap_or_default();
        vec![Observation {
            kind: Kind::GcStorm,
            subject,
            severity: Severity::Warning,
            value: share,
            summary: format!("{:.0}% of the processes' CPU samples are in the garbage collector (most: {worst})", share * 100.0),
            evidence: vec![("gc_share", format!("{share:.2}")), ("samples", samples.to_string()), ("top_processes", list.join("; "))],
        }]
    }
}
