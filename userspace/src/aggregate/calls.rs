//! Call latency from the outside: a request from a caller to a server followed by the server's
//! send back to that caller, while the caller sent nothing else in between (a caller waiting in
//! a receive for its answer sends nothing), is one call; its latency runs from the request's
//! send to the reply's. No message contents are read: gen_server, gen_statem and any
//! request/reply pattern pair the same way. A cast answered later by an unrelated message
//! pairs too when the caller sent nothing meanwhile: that is the method's error, stated in the
//! README.
//!
//! Bounded: callers with a request in flight, servers and the callers kept per server have a
//! cap each; what is dropped to stay within them is counted.

use std::collections::{HashMap, VecDeque};

use crate::event::{Event, What};
use crate::pipeline::Sink;

/// Callers with a request in flight at most (the oldest give way).
const MAX_IN_FLIGHT: usize = 200_000;
/// Servers with latencies kept at most (the least called give way).
const MAX_SERVERS: usize = 4_096;
/// Latest latencies kept per server, for its quantiles.
const RECENT: usize = 4_096;
/// Callers counted per server at most.
const MAX_CALLERS: usize = 64;

/// One server's calls.
#[derive(Debug, Default, Clone)]
pub struct ServerCalls {
    pub calls: u64,
    pub total_ns: u64,
    /// The latest latencies, oldest first.
    pub recent: VecDeque<u64>,
    /// Calls by caller (at most `MAX_CALLERS`; the rest under `other_callers`).
    pub callers: HashMap<u64, u64>,
    pub other_callers: u64,
}

impl ServerCalls {
    /// The `q` quantile (0..=1) of the recent latencies, in nanoseconds.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let mut v: Vec<u64> = self.recent.iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        Some(v[i])
    }

    /// The callers that called most, most first.
    pub fn top_callers(&self, n: usize) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self.callers.iter().map(|(&c, &n)| (c, n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

#[derive(Debug, Default)]
pub struct Calls {
    /// Per caller: its last send (to whom, when), until answered or replaced.
    in_flight: HashMap<u64, (u64, u64)>,
    pub servers: HashMap<u64, ServerCalls>,
    /// Requests forgotten to stay within bounds, and servers dropped.
    pub dropped: u64,
}

impl Calls {
    fn send(&mut self, from: u64, to: u64, ts: u64) {
        // A reply: `from` answers `to`, whose last send went to `from`.
        if let Some(&(server, sent)) = self.in_flight.get(&to)
            && server == from
            && ts >= sent
        {
            self.in_flight.remove(&to);
            self.record(from, to, ts - sent);
            // An answer is no request: the caller's next request must not read as the server
            // calling it. The server's own last request, if any, stays as it was.
            return;
        }
        // Anything else is `from`'s last send now: a request, or what shows it is not waiting.
        if self.in_flight.len() >= MAX_IN_FLIGHT && !self.in_flight.contains_key(&from) {
            // Forget the oldest request: it is the least likely to be answered.
            if let Some((&oldest, _)) = self.in_flight.iter().min_by_key(|(_, (_, t))| *t) {
                self.in_flight.remove(&oldest);
                self.dropped += 1;
            }
        }
        self.in_flight.insert(from, (to, ts));
    }

    fn record(&mut self, server: u64, caller: u64, ns: u64) {
        if !self.servers.contains_key(&server) && self.servers.len() >= MAX_SERVERS {
            if let Some((&least, _)) = self.servers.iter().min_by_key(|(_, s)| s.calls) {
                self.servers.remove(&least);
                self.dropped += 1;
            }
        }
        let s = self.servers.entry(server).or_default();
        s.calls += 1;
        s.total_ns += ns;
        if s.recent.len() == RECENT {
            s.recent.pop_front();
        }
        s.recent.push_back(ns);
        let room = s.callers.len() < MAX_CALLERS;
        match s.callers.get_mut(&caller) {
            Some(n) => *n += 1,
            None if room => {
                s.callers.insert(caller, 1);
            }
            None => s.other_callers += 1,
        }
    }

    /// A process that exited neither calls nor answers any more.
    fn exit(&mut self, pid: u64) {
        self.in_flight.remove(&pid);
    }

    /// The servers most called, most first.
    pub fn busiest(&self, n: usize) -> Vec<(u64, &ServerCalls)> {
        let mut v: Vec<(u64, &ServerCalls)> = self.servers.iter().map(|(&p, s)| (p, s)).collect();
        v.sort_by(|a, b| b.1.calls.cmp(&a.1.calls).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

impl Sink for Calls {
    fn events(&mut self, batch: &[Event]) {
        for e in batch {
            match e.what {
                What::Send { from, to } => self.send(from, to, e.ts_ns),
                What::Exit { pid } => self.exit(pid),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Calls;

    #[test]
    fn a_request_and_its_answer_are_a_call() {
        let mut c = Calls::default();
        c.send(1, 2, 1_000);
        c.send(2, 1, 3_000);
        assert_eq!(c.servers[&2].calls, 1);
        assert_eq!(c.servers[&2].quantile(0.5), Some(2_000));
        assert_eq!(c.servers[&2].top_callers(5), vec![(1, 1)]);
    }

    #[test]
    fn a_caller_that_sent_something_else_meanwhile_was_not_waiting() {
        let mut c = Calls::default();
        c.send(1, 2, 1_000);
        c.send(1, 3, 1_500);
        c.send(2, 1, 3_000);
        assert!(c.servers.is_empty());
    }

    #[test]
    fn the_next_request_is_not_the_server_calling_back() {
        let mut c = Calls::default();
        c.send(1, 2, 1_000);
        c.send(2, 1, 3_000);
        c.send(1, 2, 10_000);
        c.send(2, 1, 10_500);
        assert!(!c.servers.contains_key(&1), "{:?}", c.servers);
        assert_eq!(c.servers[&2].calls, 2);
        assert_eq!(c.servers[&2].quantile(1.0), Some(2_000));
    }

    #[test]
    fn an_answer_counts_once() {
        let mut c = Calls::default();
        c.send(1, 2, 1_000);
        c.send(2, 1, 3_000);
        c.send(2, 1, 4_000);
        assert_eq!(c.servers[&2].calls, 1);
    }
}
