//! Deadlock potential: processes each blocked in a call to the next, round a cycle (A calls B,
//! B calls C, C calls A: with infinite timeouts none ever answers). A caller blocked in a call
//! waits in `gen:do_call/4` (a build fact) and monitors the process it called; the table
//! source reads those monitors (pids only, no message), and the cycles among the blocked
//! callers are the findings.

use std::collections::BTreeMap;

use super::cycle::cycles;
use super::settings::Deadlock as Settings;
use super::{Context, Detector, Kind, Observation, Severity, Subject};
use crate::event::SharedTableRead;

/// The longest cycle looked for.
const MAX_LENGTH: usize = 16;

pub struct Deadlock {
    _s: Settings,
    /// Caller -> the processes it waits on, as of the last table read.
    waits: BTreeMap<u64, Vec<u64>>,
}

impl Deadlock {
    pub fn new(s: Settings) -> Deadlock {
        Deadlock { _s: s, waits: BTreeMap::new() }
    }
}

impl Detector for Deadlock {
    fn kind(&self) -> Kind {
        Kind::Deadlock
    }

    fn table(&mut self, read: &SharedTableRead) {
        self.waits = read.waits.iter().cloned().collect();
    }

    fn observe(&mut self, ctx: &Context<'_>) -> Vec<Observation> {
        // Edges between blocked callers only: a caller waiting on a server that is itself
        // free is a slow call, not a deadlock.
        let edges: BTreeMap<u64, Vec<u64>> = self
            .waits
            .iter()
            .map(|(c, targets)| {
                let mut t: Vec<u64> = targets.iter().copied().filter(|t| self.waits.contains_key(t)).collect();
                t.sort_unstable();
                t.dedup();
                (*c, t)
            })
            .collect();
        cycles(&edges, 2, MAX_LENGTH)
            .into_iter()
            .map(|c| {
                let names: Vec<String> = c.iter().map(|p| ctx.who(*p)).collect();
                let path = format!("{} -> {}", names.join(" -> "), names[0]);
                Observation {
                    kind: Kind::Deadlock,
                    subject: Subject::Group(c.clone()),
                    severity: Severity::Critical,
                    value: c.len() as f64,
                    summary: format!("{} processes each wait on a call to the next: {path}", c.len()),
                    evidence: vec![("cycle", path)],
                }
            })
            .collect()
    }
}
