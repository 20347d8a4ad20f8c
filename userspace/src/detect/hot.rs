//! Hot process: a process taking most of a core, by the CPU samples of the last window (no
//! hook: the sampler attributes every scheduler sample to the process it runs). The evidence:
//! its share of a core and the functions its samples are in.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::settings::HotProcess as Settings;
use super::{Context, Detector, Kind, Observation, Severity, Subject};
use crate::enrich::stack::Owner;
use crate::event::Sample;

/// Functions kept per process per second (the busiest).
const FUNCTIONS: usize = 50;

pub struct HotProcess {
    s: Settings,
    frequency: u64,
    /// One bucket per second: samples per process, and per (process, function).
    buckets: VecDeque<(u64, HashMap<u64, u64>, HashMap<(u64, Arc<str>), u64>)>,
}

impl HotProcess {
    pub fn new(s: Settings, frequency: u64) -> HotProcess {
        HotProcess { s, frequency, buckets: VecDeque::new() }
    }
}

impl Detector for HotProcess {
    fn kind(&self) -> Kind {
        Kind::HotProcess
    }

    fn sample(&mut self, sample: &Sample) {
        let Owner::Process(pid) = sample.stack.owner else { return };
        let second = sample.ts_ns / 1_000_000_000;
        if self.buckets.back().is_none_or(|b| b.0 != second) {
            self.buckets.push_back((second, HashMap::new(), HashMap::new()));
        }
        let window = self.s.window.as_secs().max(1);
        while self.buckets.front().is_some_and(|b| b.0 + window <= second) {
            self.buckets.pop_front();
        }
        let b = self.buckets.back_mut().expect("pushed");
        *b.1.entry(pid).or_default() += 1;
        let (f, _) = sample.stack.top_function();
        if b.2.len() < FUNCTIONS || b.2.contains_key(&(pid, f.clone())) {
            *b.2.entry((pid, f)).or_default() += 1;
        }
    }

    fn observe(&mut self, ctx: &Context<'_>) -> Vec<Observation> {
        let (Some(first), Some(last)) = (self.buckets.front(), self.buckets.back()) else { return Vec::new() };
        let seconds = (last.0 - first.0 + 1) as f64;
        // A full window only: a share over two seconds of samples says little.
        if seconds < self.s.window.as_secs_f64() * 0.8 {
            return Vec::new();
        }
        let possible = self.frequency as f64 * seconds;
        let mut per: HashMap<u64, u64> = HashMap::new();
        let mut functions: HashMap<(u64, Arc<str>), u64> = HashMap::new();
        for b in &self.buckets {
            for (p, n) in &b.1 {
                *per.entry(*p).or_default() += n;
            }
            for (k, n) in &b.2 {
                *functions.entry(k.clone()).or_default() += n;
            }
        }
        let mut out = Vec::new();
        for (pid, n) in per {
            let share = n as f64 / possible;
            let subject = Subject::Process(pid);
            let limit = if ctx.is_firing(Kind::HotProcess, &subject) { self.s.disable_share } else { self.s.enable_share };
            if share < limit {
                continue;
            }
            let mut top: Vec<(&Arc<str>, u64)> = functions.iter().filter(|((p, _), _)| *p == pid).map(|((_, f), n)| (f, *n)).collect();
            top.sort_by_key(|t| std::cmp::Reverse(t.1));
            let list: Vec<String> = top.iter().take(5).map(|(f, k)| format!("{f} {:.0}%", *k as f64 * 100.0 / n as f64)).collect();
            let who = ctx.who(pid);
            out.push(Observation {
                kind: Kind::HotProcess,
                subject,
                severity: Severity::Warning,
                value: share,
                summary: format!("{who} used {:.0}% of a core over {seconds:.0} s", share * 100.0),
                evidence: vec![
                    ("process", who),
                    ("core_share", format!("{share:.2}")),
                    ("samples", n.to_string()),
                    ("top_functions", list.join(", ")),
                ],
            });
        }
        out
    }
}
