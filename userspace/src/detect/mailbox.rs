//! Mailbox buildup: a process whose queue is over the threshold and growing. The lengths come
//! from the process-table reads (exact, counted in the queues); growth is the slope of the
//! process's length over its recent reads. The evidence: who it is, where it is, how fast the
//! queue grows and when it reaches the limit at that rate, its memory, and (from send windows
//! the controller opens for it) who sends to it.

use std::collections::{HashMap, VecDeque};

use beam_probes::Capability;

use super::settings::Mailbox;
use super::{Context, Detector, Kind, Observation, Severity, Subject, slope};
use crate::event::{Event, SharedTableRead, What};

/// Reads of a process's queue kept: enough for a slope over a minute at the default interval.
const HISTORY: usize = 12;
/// At most this many processes tracked (the longest queues), and senders kept per process.
const TRACKED: usize = 1_000;
const SENDERS: usize = 1_000;

pub struct MailboxBuildup {
    s: Mailbox,
    /// Per process: (seconds, queue length, memory bytes) of its recent reads.
    history: HashMap<u64, VecDeque<(f64, f64, u64)>>,
    current: HashMap<u64, String>,
    /// Messages seen sent to each tracked process, by sender, while the send hook was attached.
    senders: HashMap<u64, HashMap<u64, u64>>,
}

impl MailboxBuildup {
    pub fn new(s: Mailbox) -> MailboxBuildup {
        MailboxBuildup { s, history: HashMap::new(), current: HashMap::new(), senders: HashMap::new() }
    }

    fn tracked_floor(&self) -> u64 {
        self.s.disable_length.min(self.s.enable_length)
    }
}

impl Detector for MailboxBuildup {
    fn kind(&self) -> Kind {
        Kind::MailboxBuildup
    }

    fn evidence_capabilities(&self) -> &'static [Capability] {
        &[Capability::Send]
    }

    fn table(&mut self, read: &SharedTableRead) {
        let Some(snap) = &read.snapshot else { return };
        let t = read.ts_ns as f64 / 1e9;
        let floor = self.tracked_floor();
        let mut long: Vec<(usize, u64, u64)> = snap
            .processes
            .iter()
            .enumerate()
            .filter(|(_, p)| p.message_queue_len >= floor)
            .map(|(i, p)| (i, p.term, p.message_queue_len))
            .collect();
        long.sort_by_key(|(_, _, q)| std::cmp::Reverse(*q));
        long.truncate(TRACKED);
        let seen: std::collections::HashSet<u64> = long.iter().map(|(_, p, _)| *p).collect();
        self.history.retain(|p, _| seen.contains(p));
        self.senders.retain(|p, _| seen.contains(p));
        self.current.clear();
        for (i, pid, q) in long {
            let h = self.history.entry(pid).or_default();
            h.push_back((t, q as f64, snap.processes[i].memory_bytes));
            if h.len() > HISTORY {
                h.pop_front();
            }
            if let Some(c) = read.current.get(i) {
                self.current.insert(pid, c.to_string());
            }
        }
    }

    fn events(&mut self, batch: &[Event]) {
        for e in batch {
            if let What::Send { from, to, .. } = e.what
                && self.history.contains_key(&to)
            {
                let senders = self.senders.entry(to).or_default();
                if senders.len() < SENDERS || senders.contains_key(&from) {
                    *senders.entry(from).or_default() += 1;
                }
            }
        }
    }

    fn observe(&mut self, ctx: &Context<'_>) -> Vec<Observation> {
        let mut out = Vec::new();
        for (&pid, h) in &self.history {
            let Some(&(_, len, memory)) = h.back() else { continue };
            let subject = Subject::Process(pid);
            let firing = ctx.is_firing(Kind::MailboxBuildup, &subject);
            let points: Vec<(f64, f64)> = h.iter().map(|(t, q, _)| (*t, *q)).collect();
            let growth = slope(&points).unwrap_or(0.0);
            let over = if firing { len >= self.s.disable_length as f64 } else { len >= self.s.enable_length as f64 && growth > 0.0 };
            if !over {
                continue;
            }
            let who = ctx.who(pid);
            let mut evidence = vec![
                ("process", who.clone()),
                ("message_queue_len", format!("{len:.0}")),
                ("growth_per_second", format!("{growth:.1}")),
                ("memory_bytes", memory.to_string()),
            ];
            if let Some(c) = self.current.get(&pid) {
                evidence.push(("current_function", c.clone()));
            }
            let until = (growth > 0.0 && len < self.s.limit as f64).then(|| (self.s.limit as f64 - len) / growth);
            if let Some(secs) = until {
                evidence.push(("seconds_until_limit", format!("{secs:.0}")));
            }
            if let Some(senders) = self.senders.get(&pid) {
                let mut top: Vec<(&u64, &u64)> = senders.iter().collect();
                top.sort_by(|a, b| b.1.cmp(a.1));
                let list: Vec<String> = top.iter().take(5).map(|(p, n)| format!("{} x{n}", ctx.who(**p))).collect();
                if !list.is_empty() {
                    evidence.push(("top_senders", list.join(", ")));
                }
            }
            let rate = if growth > 0.0 { format!(", growing by {growth:.0}/s") } else { String::new() };
            let limit = until.map(|s| format!(" ({} messages in {s:.0} s at this rate)", self.s.limit)).unwrap_or_default();
            out.push(Observation {
                kind: Kind::MailboxBuildup,
                subject,
                severity: if until.is_some_and(|s| s < 300.0) { Severity::Critical } else { Severity::Warning },
                value: len,
                summary: format!("{who} has {len:.0} messages queued{rate}{limit}"),
                evidence,
            });
        }
        out
    }
}
