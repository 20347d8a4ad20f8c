//! Scheduler saturation: the normal schedulers work all the time (by the CPU samples of their
//! threads: running a process or a port, or scheduling, rather than spinning or sleeping for
//! want of work) while processes wait in their run queues (read from the VM every second).
//! Busy schedulers with empty queues are a VM doing its work; waiting processes are what
//! makes it saturated.

use std::collections::{HashMap, VecDeque};

use super::settings::SchedulerSaturation as Settings;
use super::{Context, Detector, Kind, Observation, Severity, Subject};
use crate::enrich::stack::Owner;
use crate::event::{ProcRead, Sample};
use beam_probes::threads::SchedulerKind;

pub struct SchedulerSaturation {
    s: Settings,
    frequency: u64,
    schedulers: usize,
    /// Per second: (second, working samples of normal schedulers, all of their samples,
    /// samples per process).
    buckets: VecDeque<(u64, u64, u64, HashMap<u64, u64>)>,
    /// (seconds, total run-queue length, per queue) of the recent reads.
    queues: VecDeque<(f64, u64, Vec<u32>)>,
}

impl SchedulerSaturation {
    pub fn new(s: Settings, frequency: u64, schedulers: usize) -> SchedulerSaturation {
        SchedulerSaturation { s, frequency, schedulers: schedulers.max(1), buckets: VecDeque::new(), queues: VecDeque::new() }
    }
}

impl Detector for SchedulerSaturation {
    fn kind(&self) -> Kind {
        Kind::SchedulerSaturation
    }

    fn sample(&mut self, sample: &Sample) {
        if !matches!(sample.stack.scheduler, Some((SchedulerKind::Normal, _))) {
            return;
        }
        let second = sample.ts_ns / 1_000_000_000;
        if self.buckets.back().is_none_or(|b| b.0 != second) {
            self.buckets.push_back((second, 0, 0, HashMap::new()));
        }
        let window = self.s.window.as_secs().max(1);
        while self.buckets.front().is_some_and(|b| b.0 + window <= second) {
            self.buckets.pop_front();
        }
        let b = self.buckets.back_mut().expect("pushed");
        b.2 += 1;
        if sample.stack.working {
            b.1 += 1;
        }
        if let Owner::Process(p) = sample.stack.owner
            && (b.3.len() < 1000 || b.3.contains_key(&p))
        {
            *b.3.entry(p).or_default() += 1;
        }
    }

    fn proc(&mut self, read: &ProcRead) {
        let t = read.ts_ns as f64 / 1e9;
        self.queues.push_back((t, read.run_queues.iter().map(|&l| u64::from(l)).sum(), read.run_queues.clone()));
        let window = self.s.window.as_secs_f64();
        while self.queues.front().is_some_and(|q| t - q.0 > window) {
            self.queues.pop_front();
        }
    }

    fn observe(&mut self, ctx: &Context<'_>) -> Vec<Observation> {
        let (Some(first), Some(last)) = (self.buckets.front(), self.buckets.back()) else { return Vec::new() };
        let seconds = (last.0 - first.0 + 1) as f64;
        if seconds < self.s.window.as_secs_f64() * 0.8 || self.queues.is_empty() {
            return Vec::new();
        }
        // Samples a fully busy set of normal schedulers would have given.
        let possible = self.frequency as f64 * seconds * self.schedulers as f64;
        let working: u64 = self.buckets.iter().map(|b| b.1).sum();
        let utilisation = (working as f64 / possible).min(1.0);
        let waiting = self.queues.iter().map(|q| q.1 as f64).sum::<f64>() / self.queues.len() as f64;
        let subject = Subject::Vm;
        let over = if ctx.is_firing(Kind::SchedulerSaturation, &subject) {
            utilisation >= self.s.disable_utilisation
        } else {
            utilisation >= self.s.enable_utilisation && waiting >= self.s.min_run_queue
        };
        if !over {
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
        let list: Vec<String> =
            top.iter().take(5).map(|(p, n)| format!("{} {:.0}%", ctx.who(*p), *n as f64 * 100.0 / working.max(1) as f64)).collect();
        let queues = self.queues.back().map(|q| q.2.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", ")).unwrap_or_default();
        vec![Observation {
            kind: Kind::SchedulerSaturation,
            subject,
            severity: if waiting >= 10.0 * self.schedulers as f64 { Severity::Critical } else { Severity::Warning },
            value: utilisation,
            summary: format!(
                "the {} normal schedulers worked {:.0}% of the last {seconds:.0} s with {waiting:.1} processes waiting on average",
                self.schedulers,
                utilisation * 100.0
            ),
            evidence: vec![
                ("utilisation", format!("{utilisation:.2}")),
                ("run_queue_average", format!("{waiting:.1}")),
                ("run_queues_now", queues),
                ("top_processes", list.join(", ")),
            ],
        }]
    }
}
