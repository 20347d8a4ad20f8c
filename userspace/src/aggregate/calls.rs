//! Call latency from the outside: a request from a caller to a server followed by the server's
//! send back to that caller, while the caller sent nothing else in between (a caller waiting in
//! a receive for its answer sends nothing), is one call; its latency runs from the request's
//! send to the reply's. No message contents are read: gen_server, gen_statem and any
//! request/reply pattern pair the same way. A cast answered later by an unrelated message
//! pairs too when the caller sent nothing meanwhile: that is the method's error, stated in the
//! README.
//!
//! A pool's callers wait at checkout (a call to the pool) and then hold what they checked out
//! until they give it back (their next message to the pool): the time from a reply to the
//! caller's next send to the same server is kept as its hold time, which the views show for
//! pools.
//!
//! Sends are seen only while the send hooks are attached: when they detach (the end of an
//! adaptive window) requests still in flight are forgotten, never paired across the gap.
//!
//! Request processes (`requests.rs`) are followed here too: their spans come from the same
//! sends, and the calls they wait on from this pairing.
//!
//! Bounded: callers with a request in flight, servers and the callers kept per server have a
//! cap each; what is dropped to stay within them is counted.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use beam_probes::Capability;

use crate::control::adaptive::Escalator;
use super::requests::Requests;
use crate::event::{Event, SharedTableRead, WindowChange, What};
use crate::enrich::names::EventNames;
use crate::pipeline::Sink;

/// Callers with a request in flight at most (the oldest give way).
const MAX_IN_FLIGHT: usize = 200_000;
/// Servers with latencies kept at most (the least called give way).
const MAX_SERVERS: usize = 4_096;
/// Latest latencies kept per server, for its quantiles.
const RECENT: usize = 4_096;
/// How long a table read that found callers waiting keeps asking for send windows.
const ESCALATE_FOR: std::time::Duration = std::time::Duration::from_secs(15);
/// Servers remembered per caller as having answered it (for hold times).
const ANSWERED: usize = 4;
/// Callers counted per server at most.
const MAX_CALLERS: usize = 64;
/// Upper bounds (seconds) of the latency histogram's buckets; one more bucket holds the rest.
pub const BUCKETS: [f64; 15] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Durations: count, sum, histogram since attach, and the latest ones for quantiles.
#[derive(Debug, Clone)]
pub struct Durations {
    pub count: u64,
    pub total_ns: u64,
    /// Per bucket of [`BUCKETS`] (not cumulative), the last one above them all.
    pub buckets: [u64; BUCKETS.len() + 1],
    /// The latest durations, oldest first.
    pub recent: VecDeque<u64>,
}

impl Default for Durations {
    fn default() -> Self {
        Durations { count: 0, total_ns: 0, buckets: [0; BUCKETS.len() + 1], recent: VecDeque::new() }
    }
}

impl Durations {
    pub fn add(&mut self, ns: u64) {
        self.count += 1;
        self.total_ns += ns;
        let secs = ns as f64 / 1e9;
        let b = BUCKETS.iter().position(|&le| secs <= le).unwrap_or(BUCKETS.len());
        self.buckets[b] += 1;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(ns);
    }

    /// The `q` quantile (0..=1) of the recent durations, in nanoseconds.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        self.quantiles(&[q])[0]
    }

    /// Several quantiles of the recent durations, sorted once.
    pub fn quantiles(&self, qs: &[f64]) -> Vec<Option<u64>> {
        let mut v: Vec<u64> = self.recent.iter().copied().collect();
        v.sort_unstable();
        qs.iter()
            .map(|q| {
                let last = v.len().checked_sub(1)?;
                Some(v[(last as f64 * q.clamp(0.0, 1.0)).round() as usize])
            })
            .collect()
    }

    pub fn mean_ns(&self) -> Option<u64> {
        (self.count > 0).then(|| self.total_ns / self.count)
    }
}

/// One server's calls.
#[derive(Debug, Default, Clone)]
pub struct ServerCalls {
    /// From each request to its reply.
    pub latency: Durations,
    /// From each reply to the caller's next message to the server (a pool's hold time).
    pub hold: Durations,
    /// Calls by caller (at most `MAX_CALLERS`; the rest under `other_callers`).
    pub callers: HashMap<u64, u64>,
    pub other_callers: u64,
}

impl ServerCalls {
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
    /// Per caller: the servers that answered it last (at most `ANSWERED`, latest last), and
    /// when, each until the caller sends to it again: a pool's caller calls the worker it
    /// checked out before it checks it back in.
    answered: HashMap<u64, Vec<(u64, u64)>>,
    pub servers: HashMap<u64, ServerCalls>,
    /// Requests forgotten to stay within bounds, and servers dropped.
    pub dropped: u64,
    /// Replies to an alias whose request was not seen (sent before a window opened).
    pub unpaired_replies: u64,
    /// In adaptive mode: asks for send windows while table reads find callers waiting.
    pub escalator: Option<Escalator>,
    /// Request processes' spans, and the calls they waited on.
    pub requests: Requests,
    /// What spawned processes run, and how pids print (live only).
    pub names: Option<Arc<dyn EventNames>>,
}


impl Calls {
    /// Pairs the sends of a recording (its events and windows, each in time order), as the
    /// live sink pairs them.
    /// Pairs the sends of a recording (its events, windows and table reads, each in time
    /// order), as the live sink pairs them, and follows its request processes.
    pub fn from_recording(rec: &crate::record::model::Recording, request_processes: &[String]) -> Calls {
        use crate::record::format::What as W;
        let mut calls = Calls::default();
        calls.requests.extra = request_processes.to_vec();
        let send = Capability::Send.index() as u8;
        let mut windows = rec.windows.iter().peekable();
        let mut tables = rec.tables.iter().peekable();
        let text = |id: Option<u32>| id.map(|id| rec.name(id));
        for e in &rec.events {
            while let Some(w) = windows.next_if(|w| w.t <= e.t) {
                let caps: Vec<Capability> = w.capabilities.iter().filter_map(|&i| Capability::ALL.get(usize::from(i)).copied()).collect();
                if !w.open && w.capabilities.contains(&send) {
                    calls.forget();
                }
                calls.requests.window(&caps, w.open);
            }
            while let Some(t) = tables.next_if(|t| t.t <= e.t) {
                for p in &t.processes {
                    if let Some(call) = text(p.initial_call) {
                        calls.requests.seen(p.pid, call, text(p.ancestor), t.t);
                    }
                }
                calls.requests.table_read(t.t);
            }
            match e.what {
                W::Send { from, to } => calls.send(from, to, e.t, |p| rec.pid(p)),
                W::SendToAlias { from, to } => calls.reply(from, to, e.t),
                W::Exit { pid } => calls.exit(pid, e.t),
                W::Spawn { parent, child } => calls.requests.spawned(parent, child, rec.spawned.get(&child).map(String::as_str), e.t),
                W::Schedule { pid, run_ns, .. } => calls.requests.ran(pid, run_ns),
                W::Gc { pid, duration_ns } => calls.requests.collected(pid, duration_ns),
                _ => {}
            }
        }
        calls
    }

    /// Sends unseen from now on: nothing in flight can be paired with what comes later.
    fn forget(&mut self) {
        self.in_flight.clear();
        self.answered.clear();
    }

    /// A send to an alias: a reply (OTP 24+ calls get theirs that way), never a request. One
    /// whose request went unseen (sent before a window opened) pairs with nothing.
    fn reply(&mut self, from: u64, to: u64, ts: u64) {
        if !self.answer(from, to, ts) {
            self.unpaired_replies += 1;
        }
    }

    /// Pairs `from`'s send to `to` with `to`'s request, if `to`'s last send went to `from`.
    fn answer(&mut self, from: u64, to: u64, ts: u64) -> bool {
        let Some(&(server, sent)) = self.in_flight.get(&to) else { return false };
        if server != from || ts < sent {
            return false;
        }
        self.in_flight.remove(&to);
        self.record(from, to, ts - sent);
        if self.answered.len() < MAX_IN_FLIGHT || self.answered.contains_key(&to) {
            let servers = self.answered.entry(to).or_default();
            servers.retain(|(s, _)| *s != from);
            if servers.len() == ANSWERED {
                servers.remove(0);
            }
            servers.push((from, ts));
        } else {
            self.dropped += 1;
        }
        true
    }

    fn send(&mut self, from: u64, to: u64, ts: u64, pid_text: impl FnOnce(u64) -> String) {
        self.requests.send(from, to, ts, pid_text);
        // A reply: `from` answers `to`, whose last send went to `from`. An answer is no
        // request: the caller's next request must not read as the server calling it. The
        // server's own last request, if any, stays as it was.
        if self.answer(from, to, ts) {
            return;
        }
        // Back to the server that answered it last: what it held since then is given back.
        if let Some(servers) = self.answered.get_mut(&from)
            && let Some(i) = servers.iter().position(|(s, _)| *s == to)
        {
            let (server, answered) = servers.remove(i);
            if servers.is_empty() {
                self.answered.remove(&from);
            }
            if let Some(s) = self.servers.get_mut(&server) {
                s.hold.add(ts.saturating_sub(answered));
            }
        }
        // Anything else is `from`'s last send now: a request, or what shows it is not waiting.
        make_room(&mut self.in_flight, from, &mut self.dropped);
        self.in_flight.insert(from, (to, ts));
    }

    fn record(&mut self, server: u64, caller: u64, ns: u64) {
        if !self.servers.contains_key(&server)
            && self.servers.len() >= MAX_SERVERS
            && let Some((&least, _)) = self.servers.iter().min_by_key(|(_, s)| s.latency.count)
        {
            self.servers.remove(&least);
            self.dropped += 1;
        }
        self.requests.waited(caller, server, ns);
        let s = self.servers.entry(server).or_default();
        s.latency.add(ns);
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
    fn exit(&mut self, pid: u64, ts: u64) {
        self.in_flight.remove(&pid);
        self.answered.remove(&pid);
        self.requests.exit(pid, ts);
    }

    /// The servers most called, most first.
    pub fn busiest(&self, n: usize) -> Vec<(u64, &ServerCalls)> {
        let mut v: Vec<(u64, &ServerCalls)> = self.servers.iter().map(|(&p, s)| (p, s)).collect();
        v.sort_by(|a, b| b.1.latency.count.cmp(&a.1.latency.count).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

/// Makes room for `key` in `map`: when the map is full (and `key` not in it) its oldest entry,
/// the least likely to be answered, gives way (counted in `dropped`).
fn make_room(map: &mut HashMap<u64, (u64, u64)>, key: u64, dropped: &mut u64) {
    if map.len() < MAX_IN_FLIGHT || map.contains_key(&key) {
        return;
    }
    if let Some((&oldest, _)) = map.iter().min_by_key(|(_, (_, t))| *t) {
        map.remove(&oldest);
        *dropped += 1;
    }
}

impl Sink for Calls {
    fn events(&mut self, batch: &[Event]) {
        let names = self.names.clone();
        for e in batch {
            match e.what {
                What::Send { from, to, alias: false } => {
                    self.send(from, to, e.ts_ns, |p| names.as_ref().map(|n| n.pid(p)).unwrap_or_default())
                }
                What::Send { from, to, alias: true } => self.reply(from, to, e.ts_ns),
                What::Exit { pid } => self.exit(pid, e.ts_ns),
                What::Spawn { parent, child, call } => {
                    let call = names.as_ref().and_then(|n| n.spawned_as(&call));
                    self.requests.spawned(parent, child, call.as_deref(), e.ts_ns);
                }
                What::Schedule { pid, run_ns, .. } => self.requests.ran(pid, run_ns),
                What::Gc { pid, duration_ns } => self.requests.collected(pid, duration_ns),
                _ => {}
            }
        }
    }

    fn table(&mut self, read: &SharedTableRead) {
        if let Some(snapshot) = &read.snapshot {
            for p in &snapshot.processes {
                if let Some(call) = &p.initial_call {
                    self.requests.seen(p.term, call, p.ancestor.as_deref(), read.ts_ns);
                }
            }
            self.requests.table_read(read.ts_ns);
        }
        let Some(e) = &self.escalator else { return };
        // Callers blocked in a call right now: their calls are worth pairing. A window of
        // sends opens for them as the budget allows (they stay asked for while calls go on).
        if !read.waits.is_empty() {
            e.escalate("calls", &[Capability::Send], ESCALATE_FOR);
        }
        // Request processes to time: their spans need their sends, spawns and exits.
        if self.requests.following() > 0 || !self.requests.extra.is_empty() {
            e.escalate("requests", &[Capability::Send, Capability::Spawn, Capability::Exit], ESCALATE_FOR);
        }
    }

    fn window(&mut self, change: &WindowChange) {
        if !change.open && change.capabilities.contains(&Capability::Send) {
            self.forget();
        }
        self.requests.window(&change.capabilities, change.open);
    }
}

#[cfg(test)]
mod tests {
    use super::Calls;

    #[test]
    fn a_request_and_its_answer_are_a_call() {
        let mut c = Calls::default();
        c.send(1, 2, 1_000, |_| String::new());
        c.send(2, 1, 3_000, |_| String::new());
        assert_eq!(c.servers[&2].latency.count, 1);
        assert_eq!(c.servers[&2].latency.quantile(0.5), Some(2_000));
        assert_eq!(c.servers[&2].top_callers(5), vec![(1, 1)]);
    }

    #[test]
    fn a_caller_that_sent_something_else_meanwhile_was_not_waiting() {
        let mut c = Calls::default();
        c.send(1, 2, 1_000, |_| String::new());
        c.send(1, 3, 1_500, |_| String::new());
        c.send(2, 1, 3_000, |_| String::new());
        assert!(c.servers.is_empty());
    }

    #[test]
    fn the_next_request_is_not_the_server_calling_back() {
        let mut c = Calls::default();
        c.send(1, 2, 1_000, |_| String::new());
        c.send(2, 1, 3_000, |_| String::new());
        c.send(1, 2, 10_000, |_| String::new());
        c.send(2, 1, 10_500, |_| String::new());
        assert!(!c.servers.contains_key(&1), "{:?}", c.servers);
        assert_eq!(c.servers[&2].latency.count, 2);
        assert_eq!(c.servers[&2].latency.quantile(1.0), Some(2_000));
    }

    #[test]
    fn a_pool_hold_runs_from_the_answer_to_the_callers_return() {
        let mut c = Calls::default();
        c.send(1, 2, 1_000, |_| String::new()); // checkout
        c.send(2, 1, 3_000, |_| String::new()); // the worker, given
        c.send(1, 9, 4_000, |_| String::new()); // using it
        c.send(9, 1, 5_000, |_| String::new());
        c.send(1, 2, 8_000, |_| String::new()); // checkin
        assert_eq!(c.servers[&2].hold.quantile(0.5), Some(5_000));
        assert_eq!(c.servers[&9].latency.quantile(0.5), Some(1_000));
    }

    #[test]
    fn latencies_fall_in_their_buckets() {
        let mut c = Calls::default();
        c.send(1, 2, 0, |_| String::new());
        c.send(2, 1, 2_000_000, |_| String::new()); // 2 ms: the 2.5 ms bucket
        let b = &c.servers[&2].latency.buckets;
        assert_eq!(b[super::BUCKETS.iter().position(|&x| x == 0.0025).unwrap()], 1);
        assert_eq!(b.iter().sum::<u64>(), 1);
    }

    #[test]
    fn a_window_closing_forgets_what_is_in_flight() {
        use crate::event::WindowChange;
        use crate::pipeline::Sink;
        let mut c = Calls::default();
        c.send(1, 2, 1_000, |_| String::new());
        c.window(&WindowChange { vm: 1, ts_ns: 2_000, capabilities: vec![beam_probes::Capability::Send], open: false });
        c.send(2, 1, 9_000_000, |_| String::new());
        assert!(c.servers.is_empty());
    }

    #[test]
    fn a_reply_to_an_alias_whose_request_went_unseen_is_no_request() {
        let mut c = Calls::default();
        c.reply(2, 1, 1_000); // the request was sent before the window opened
        c.send(1, 2, 1_020, |_| String::new()); // the caller's next request
        c.reply(2, 1, 9_000);
        assert!(!c.servers.contains_key(&1), "the caller answered nobody: {:?}", c.servers);
        assert_eq!(c.servers[&2].latency.quantile(0.5), Some(7_980));
        assert_eq!(c.unpaired_replies, 1);
    }

    #[test]
    fn an_answer_counts_once() {
        let mut c = Calls::default();
        c.send(1, 2, 1_000, |_| String::new());
        c.send(2, 1, 3_000, |_| String::new());
        c.send(2, 1, 4_000, |_| String::new());
        assert_eq!(c.servers[&2].latency.count, 1);
    }
}
