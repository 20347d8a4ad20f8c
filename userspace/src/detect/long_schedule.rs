//! Long schedule: a process that ran without yielding for longer than the threshold (OTP's
//! `system_monitor` `long_schedule`). Only the schedule hook measures a slice; the samples
//! point at candidates for free (the same process on the same scheduler in consecutive samples
//! spanning the threshold), and a candidate asks the controller for schedule windows, which
//! confirm or not. A process that yields and is scheduled straight back looks the same to the
//! sampler, so nothing fires on samples alone.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use beam_probes::Capability;

use super::settings::LongSchedule as Settings;
use super::{Context, Detector, Kind, Observation, Severity, Subject};
use crate::enrich::stack::Owner;
use crate::event::{Event, Sample, What};

/// Slices remembered (the longest per process).
const SLICES: usize = 1_000;
/// Functions remembered per process (from samples).
const FUNCTIONS: usize = 1_000;

pub struct LongSchedule {
    s: Settings,
    /// A sample period, to tell consecutive samples of a thread.
    period_ns: u64,
    /// Per thread: the process its last sample ran, since when (ns) and the last sample (ns).
    runs: HashMap<u32, (u64, u64, u64)>,
    /// Processes seen running that long in consecutive samples, and when.
    candidates: HashMap<u64, Instant>,
    /// Long slices measured by the schedule hook: process -> (longest ns, count, thread, when).
    slices: HashMap<u64, (u64, u64, u32, Instant)>,
    /// What each process's samples were in, for the evidence.
    functions: VecDeque<(u64, Arc<str>)>,
}

impl LongSchedule {
    pub fn new(s: Settings, frequency: u64) -> LongSchedule {
        LongSchedule {
            s,
            period_ns: 1_000_000_000u64.checked_div(frequency).unwrap_or(0),
            runs: HashMap::new(),
            candidates: HashMap::new(),
            slices: HashMap::new(),
            functions: VecDeque::new(),
        }
    }
}

impl Detector for LongSchedule {
    fn kind(&self) -> Kind {
        Kind::LongSchedule
    }

    fn evidence_capabilities(&self) -> &'static [Capability] {
        &[Capability::Schedule]
    }

    fn wants_evidence(&self) -> bool {
        !self.candidates.is_empty()
    }

    fn sample(&mut self, sample: &Sample) {
        let threshold = self.s.threshold.as_nanos() as u64;
        let now = sample.ts_ns;
        match sample.stack.owner {
            Owner::Process(pid) => {
                let run = self.runs.entry(sample.tid).or_insert((pid, now, now));
                // The same process, and no sample of this thread missed in between.
                if run.0 == pid && now - run.2 <= self.period_ns * 2 {
                    run.2 = now;
                } else {
                    *run = (pid, now, now);
                }
                if run.2 - run.1 >= threshold && self.candidates.len() < SLICES {
                    self.candidates.insert(pid, Instant::now());
                }
                if self.functions.len() >= FUNCTIONS {
                    self.functions.pop_front();
                }
                self.functions.push_back((pid, sample.stack.top_function().0));
            }
            Owner::Thread(_) => {
                self.runs.remove(&sample.tid);
            }
        }
    }

    fn events(&mut self, batch: &[Event]) {
        let threshold = self.s.threshold.as_nanos() as u64;
        for e in batch {
            if let What::Schedule { pid, run_ns, .. } = e.what
                && run_ns >= threshold
                && (self.slices.len() < SLICES || self.slices.contains_key(&pid))
            {
                let s = self.slices.entry(pid).or_insert((0, 0, e.tid, Instant::now()));
                s.0 = s.0.max(run_ns);
                s.1 += 1;
                s.2 = e.tid;
                s.3 = Instant::now();
            }
        }
    }

    fn observe(&mut self, ctx: &Context<'_>) -> Vec<Observation> {
        // Candidates and slices are kept as long as a finding would take to clear.
        let keep = self.s.clear.max(Duration::from_secs(10));
        self.candidates.retain(|_, t| ctx.now.duration_since(*t) < keep);
        self.slices.retain(|_, s| ctx.now.duration_since(s.3) < keep);
        self.slices
            .iter()
            .map(|(&pid, &(longest, count, tid, _))| {
                let who = ctx.who(pid);
                let mut top: HashMap<&Arc<str>, u64> = HashMap::new();
                for (_, f) in self.functions.iter().filter(|(p, _)| *p == pid) {
                    *top.entry(f).or_default() += 1;
                }
                let mut top: Vec<(&Arc<str>, u64)> = top.into_iter().collect();
                top.sort_by_key(|t| std::cmp::Reverse(t.1));
                let functions: Vec<String> = top.iter().take(3).map(|(f, _)| f.to_string()).collect();
                let ms = longest as f64 / 1e6;
                Observation {
                    kind: Kind::LongSchedule,
                    subject: Subject::Process(pid),
                    severity: if ms >= 1000.0 { Severity::Critical } else { Severity::Warning },
                    value: ms / 1e3,
                    summary: format!("{who} ran {ms:.0} ms without yielding (threshold {} ms)", self.s.threshold.as_millis()),
                    evidence: vec![
                        ("process", who),
                        ("longest_slice_ms", format!("{ms:.1}")),
                        ("long_slices", count.to_string()),
                        ("scheduler_thread", tid.to_string()),
                        ("sampled_in", functions.join(", ")),
                    ],
                }
            })
            .collect()
    }
}
