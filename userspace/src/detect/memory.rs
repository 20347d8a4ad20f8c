//! Memory growth: a process whose memory (as `process_info(P, memory)` counts it) keeps growing
//! across reads. Heaps grow in steps as the VM resizes them and shrink at collections, so the
//! test is not a slope: over the window the process set a new high at least `min_new_highs`
//! times and ends at least `growth_ratio` above where the window started. A broker's queue
//! process can grow this way while its mailbox stays near empty; this detector, not the
//! mailbox one, is the one that fires then.

use std::collections::{HashMap, VecDeque};

use super::settings::Memory;
use super::{Context, Detector, Kind, Observation, Severity, Subject};
use crate::event::SharedTableRead;

/// At most this many processes tracked (the largest).
const TRACKED: usize = 200;
/// Reads kept per process.
const HISTORY: usize = 120;

pub struct MemoryGrowth {
    s: Memory,
    /// Per process: (seconds, memory bytes, heap bytes, queue length).
    history: HashMap<u64, VecDeque<(f64, u64, u64, u64)>>,
    current: HashMap<u64, String>,
}

impl MemoryGrowth {
    pub fn new(s: Memory) -> MemoryGrowth {
        MemoryGrowth { s, history: HashMap::new(), current: HashMap::new() }
    }
}

/// How a series of byte counts grew over its window, when it grew as the settings ask.
pub(super) struct Growth {
    pub highs: u32,
    /// Seconds between the first and the last read (at least 1).
    pub span: f64,
    pub per_minute: f64,
}

/// Whether bytes read at (seconds, bytes) grew enough: by `growth_ratio` over the window,
/// setting `min_new_highs` new highs, ending above `min_bytes`. Hysteresis: a finding already
/// firing holds while the bytes stay above where the window started (nothing given back).
pub(super) fn growth(s: &Memory, firing: bool, reads: impl Iterator<Item = (f64, u64)> + Clone) -> Option<Growth> {
    let first = reads.clone().next()?;
    let last = reads.clone().last()?;
    let highs = new_highs(reads.map(|r| r.1));
    let grown = last.1 as f64 >= first.1 as f64 * (1.0 + s.growth_ratio);
    let big = last.1 >= s.min_bytes;
    let over = if firing { big && last.1 > first.1 } else { big && grown && highs >= s.min_new_highs };
    let span = (last.0 - first.0).max(1.0);
    over.then(|| Growth { highs, span, per_minute: (last.1 as f64 - first.1 as f64) / span * 60.0 })
}

/// New highs in a series, after its first value.
fn new_highs(values: impl Iterator<Item = u64>) -> u32 {
    let mut high = None;
    let mut n = 0;
    for v in values {
        match high {
            None => high = Some(v),
            Some(h) if v > h => {
                high = Some(v);
                n += 1;
            }
            _ => {}
        }
    }
    n
}

impl Detector for MemoryGrowth {
    fn kind(&self) -> Kind {
        Kind::MemoryGrowth
    }

    fn table(&mut self, read: &SharedTableRead) {
        let Some(snap) = &read.snapshot else { return };
        let t = read.ts_ns as f64 / 1e9;
        // The largest processes, and those tracked already while they stay sizeable.
        let floor = self.s.min_bytes / 4;
        let mut big: Vec<usize> = (0..snap.processes.len()).filter(|&i| snap.processes[i].memory_bytes >= floor).collect();
        big.sort_by_key(|&i| std::cmp::Reverse(snap.processes[i].memory_bytes));
        big.truncate(TRACKED);
        let seen: std::collections::HashSet<u64> = big.iter().map(|&i| snap.processes[i].term).collect();
        self.history.retain(|p, _| seen.contains(p));
        self.current.clear();
        let window = self.s.window.as_secs_f64();
        for i in big {
            let p = &snap.processes[i];
            let h = self.history.entry(p.term).or_default();
            h.push_back((t, p.memory_bytes, p.total_heap_words * 8, p.message_queue_len));
            while h.len() > HISTORY || h.front().is_some_and(|f| t - f.0 > window) {
                h.pop_front();
            }
            if let Some(c) = read.current.get(i) {
                self.current.insert(p.term, c.to_string());
            }
        }
    }

    fn observe(&mut self, ctx: &Context<'_>) -> Vec<Observation> {
        let mut out = Vec::new();
        for (&pid, h) in &self.history {
            let (Some(first), Some(last)) = (h.front(), h.back()) else { continue };
            let subject = Subject::Process(pid);
            let firing = ctx.is_firing(Kind::MemoryGrowth, &subject);
            let Some(Growth { highs, span, per_minute }) = growth(&self.s, firing, h.iter().map(|r| (r.0, r.1))) else { continue };
            let who = ctx.who(pid);
            let mut evidence = vec![
                ("process", who.clone()),
                ("memory_bytes", last.1.to_string()),
                ("memory_bytes_at_window_start", first.1.to_string()),
                ("growth_bytes_per_minute", format!("{per_minute:.0}")),
                ("new_highs", highs.to_string()),
                ("heap_bytes", last.2.to_string()),
                ("message_queue_len", last.3.to_string()),
            ];
            if let Some(c) = self.current.get(&pid) {
                evidence.push(("current_function", c.clone()));
            }
            out.push(Observation {
                kind: Kind::MemoryGrowth,
                subject,
                severity: Severity::Warning,
                value: last.1 as f64,
                summary: format!(
                    "{who} grew from {:.1} MiB to {:.1} MiB in {span:.0} s ({:.1} MiB/min)",
                    first.1 as f64 / 1048576.0,
                    last.1 as f64 / 1048576.0,
                    per_minute / 1048576.0
                ),
                evidence,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highs_count_steps_up_not_dips() {
        assert_eq!(new_highs([10, 10, 20, 15, 20, 30].into_iter()), 2);
        assert_eq!(new_highs([30, 20, 10].into_iter()), 0);
    }
}
