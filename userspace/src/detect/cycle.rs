//! Message cycles: messages going round three or more processes (A -> B -> C -> A), each edge
//! above a rate. Request and reply between two processes is every call, so two-process cycles
//! are not reported. The pairs come from the send hook (in adaptive mode, from its windows:
//! rates are per second observed).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use beam_probes::Capability;

use super::settings::MessageCycle as Settings;
use super::{Context, Detector, Kind, Observation, Severity, Subject};
use crate::control::mode::Mode;
use crate::event::{Event, What};

/// Pairs kept per second.
const PAIRS: usize = 10_000;
/// Steps the cycle search may take per evaluation.
const SEARCH: usize = 100_000;
/// Cycles reported per evaluation.
const CYCLES: usize = 10;

pub struct MessageCycle {
    s: Settings,
    /// Per second: (second, messages per (sender, receiver)).
    buckets: VecDeque<(u64, HashMap<(u64, u64), u64>)>,
    /// (when, send seconds observed so far), to know how long the window was observed.
    observed: VecDeque<(Instant, f64)>,
}

impl MessageCycle {
    pub fn new(s: Settings) -> MessageCycle {
        MessageCycle { s, buckets: VecDeque::new(), observed: VecDeque::new() }
    }
}

/// Simple cycles of `min..=max` nodes in `edges`, each once (starting at its smallest node).
pub fn cycles(edges: &BTreeMap<u64, Vec<u64>>, min: usize, max: usize) -> Vec<Vec<u64>> {
    let mut out = Vec::new();
    let mut steps = 0;
    for &start in edges.keys() {
        let mut path = vec![start];
        let mut stack: Vec<(u64, usize)> = vec![(start, 0)];
        while let Some((node, i)) = stack.pop() {
            steps += 1;
            if steps > SEARCH || out.len() >= CYCLES {
                return out;
            }
            let next = edges.get(&node).and_then(|v| v.get(i)).copied();
            let Some(next) = next else {
                path.pop();
                continue;
            };
            stack.push((node, i + 1));
            if next == start && path.len() >= min.max(2) {
                out.push(path.clone());
            } else if next > start && !path.contains(&next) && path.len() < max {
                path.push(next);
                stack.push((next, 0));
            }
        }
    }
    out
}

impl Detector for MessageCycle {
    fn kind(&self) -> Kind {
        Kind::MessageCycle
    }

    fn evidence_capabilities(&self) -> &'static [Capability] {
        &[Capability::Send]
    }

    fn events(&mut self, batch: &[Event]) {
        for e in batch {
            let What::Send { from, to, .. } = e.what else { continue };
            if from == to {
                continue;
            }
            let second = e.ts_ns / 1_000_000_000;
            if self.buckets.back().is_none_or(|b| b.0 < second) {
                self.buckets.push_back((second, HashMap::new()));
            }
            let window = self.s.window.as_secs().max(1);
            while self.buckets.front().is_some_and(|b| b.0 + window <= second) {
                self.buckets.pop_front();
            }
            let b = self.buckets.back_mut().expect("pushed");
            if b.1.len() < PAIRS || b.1.contains_key(&(from, to)) {
                *b.1.entry((from, to)).or_default() += 1;
            }
        }
    }

    fn observe(&mut self, ctx: &Context<'_>) -> Vec<Observation> {
        // How long sends were observed over the window: all of it in trace mode, the windows'
        // time in adaptive mode.
        let window = self.s.window.as_secs_f64();
        let observed = if ctx.control.mode == Some(Mode::Trace) {
            window.min(self.buckets.len() as f64)
        } else {
            let total = ctx.control.observed_seconds[Capability::Send.index()];
            self.observed.push_back((ctx.now, total));
            while self.observed.front().is_some_and(|(t, _)| ctx.now.duration_since(*t).as_secs_f64() > window) {
                self.observed.pop_front();
            }
            let first = self.observed.front().map_or(total, |f| f.1);
            // The window's observed time, at least what the oldest bucket has seen.
            (total - first).max(if self.buckets.is_empty() { 0.0 } else { 0.1 })
        };
        if observed <= 0.0 {
            return Vec::new();
        }
        let mut counts: HashMap<(u64, u64), u64> = HashMap::new();
        for b in &self.buckets {
            for (k, n) in &b.1 {
                *counts.entry(*k).or_default() += n;
            }
        }
        let mut edges: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for ((from, to), n) in &counts {
            if *n as f64 / observed >= self.s.min_rate {
                edges.entry(*from).or_default().push(*to);
            }
        }
        for v in edges.values_mut() {
            v.sort_unstable();
        }
        cycles(&edges, 3, self.s.max_length)
            .into_iter()
            .map(|c| {
                let rates: Vec<f64> = (0..c.len())
                    .map(|i| counts.get(&(c[i], c[(i + 1) % c.len()])).copied().unwrap_or(0) as f64 / observed)
                    .collect();
                let slowest = rates.iter().copied().fold(f64::INFINITY, f64::min);
                let names: Vec<String> = c.iter().map(|p| ctx.who(*p)).collect();
                let path = format!("{} -> {}", names.join(" -> "), names[0]);
                Observation {
                    kind: Kind::MessageCycle,
                    subject: Subject::Group(c.clone()),
                    severity: Severity::Warning,
                    value: slowest,
                    summary: format!("messages go round {} processes: {path}, at least {slowest:.0}/s on each edge", c.len()),
                    evidence: vec![
                        ("cycle", path),
                        ("messages_per_second", rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")),
                        ("observed_seconds", format!("{observed:.1}")),
                    ],
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_three_cycles_not_request_reply() {
        let mut e: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        // 1 <-> 2 (a call), 3 -> 4 -> 5 -> 3 (a ring), 6 -> 7 (a chain).
        e.insert(1, vec![2]);
        e.insert(2, vec![1]);
        e.insert(3, vec![4]);
        e.insert(4, vec![5]);
        e.insert(5, vec![3]);
        e.insert(6, vec![7]);
        assert_eq!(cycles(&e, 3, 8), vec![vec![3, 4, 5]]);
        assert!(cycles(&e, 3, 2).is_empty());
        assert_eq!(cycles(&e, 2, 8), vec![vec![1, 2], vec![3, 4, 5]]);
    }
}
