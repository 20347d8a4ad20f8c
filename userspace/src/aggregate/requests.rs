//! Request latency from the outside, for servers that serve each request in a process of its
//! own: request processes are known by their initial call (`beam_probes::roles`, or the user's
//! `--request-process`), and a request spans either the process's life (Cowboy's request
//! processes) or, for acceptors that serve one connection after another (yaws'), the time from
//! their report to the server that spawned them that they accepted a connection to their next
//! report to it. Per handler: a histogram of request durations; and the slowest requests, each
//! with the CPU and GC it took and the calls it waited on (from the call pairing).
//!
//! Spans need the spawn, exit and send hooks: in adaptive mode only requests that started and
//! ended inside one window are measured (short requests are seen more often than long ones);
//! what is in flight when a window closes is forgotten.
//!
//! Bounded: request processes followed, handlers and the slowest kept have a cap each; what is
//! refused is counted.

use std::collections::HashMap;
use std::sync::Arc;

use beam_probes::Capability;
use beam_probes::roles::{RequestSpan, Role};
use serde::Serialize;

use super::calls::Durations;

/// Request processes followed at most.
const MAX_LIVE: usize = 100_000;
/// Handlers with durations kept at most.
const MAX_HANDLERS: usize = 256;
/// Slowest requests kept.
pub const SLOWEST: usize = 20;
/// Servers kept per request as waited on (the longest waits).
const WAITS: usize = 4;

/// Where a request process is in its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Serving a request since this time.
    Serving(u64),
    /// Between requests: its next report to its server starts one.
    Idle,
    /// Not known (followed since a table read, or after a report): its server's next message
    /// to it says it is idle.
    Unknown,
}

#[derive(Debug, Clone)]
struct Live {
    handler: Arc<str>,
    span: RequestSpan,
    /// The server that spawned it, once known (its spawn, or its first ancestor met as a
    /// receiver of its sends).
    server: Option<u64>,
    ancestor: Option<String>,
    /// When it was last known alive (its spawn, a table read that saw it).
    alive_at: u64,
    phase: Phase,
    cpu_ns: u64,
    gc_ns: u64,
    /// Whether the schedule and GC hooks were attached all through the current request.
    cpu_seen: bool,
    gc_seen: bool,
    waits: Vec<Wait>,
}

/// Calls one request waited on, to one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Wait {
    pub server: u64,
    pub calls: u64,
    pub wait_ns: u64,
}

/// One finished request, as the slowest are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub pid: u64,
    pub handler: Arc<str>,
    pub started_ns: u64,
    pub duration_ns: u64,
    /// On a scheduler (`None`: the schedule hooks were not attached all through it).
    pub cpu_ns: Option<u64>,
    pub gc_ns: Option<u64>,
    /// The servers it waited on longest, longest first.
    pub waits: Vec<Wait>,
}

#[derive(Debug, Default)]
pub struct Requests {
    live: HashMap<u64, Live>,
    pub handlers: HashMap<Arc<str>, Durations>,
    /// Longest first.
    pub slowest: Vec<Request>,
    /// Request processes and handlers refused to stay within bounds.
    pub dropped: u64,
    /// Initial calls of the user's request processes (`--request-process`), spanning their life.
    pub extra: Vec<String>,
    /// Capabilities whose hooks are attached now.
    open: Vec<Capability>,
}

impl Requests {
    /// What a process with this initial call is, as a request process.
    pub fn span_of(&self, initial_call: &str) -> Option<RequestSpan> {
        if self.extra.iter().any(|e| e == initial_call) {
            return Some(RequestSpan::Lifetime);
        }
        match beam_probes::roles::role(initial_call) {
            Some(Role::Request(span)) => Some(span),
            _ => None,
        }
    }

    /// Request processes now being followed.
    pub fn following(&self) -> usize {
        self.live.len()
    }

    /// Follows `pid` from `alive_at`, in `phase`.
    fn follow(&mut self, pid: u64, handler: &str, span: RequestSpan, known: (Option<u64>, Option<String>), phase: Phase, alive_at: u64) {
        if self.live.len() >= MAX_LIVE && !self.live.contains_key(&pid) {
            self.dropped += 1;
            return;
        }
        let (cpu_seen, gc_seen) = (self.open.contains(&Capability::Schedule), self.open.contains(&Capability::Gc));
        let (server, ancestor) = known;
        let waits = Vec::new();
        let live = Live { handler: handler.into(), span, server, ancestor, alive_at, phase, cpu_ns: 0, gc_ns: 0, cpu_seen, gc_seen, waits };
        self.live.insert(pid, live);
    }

    /// A process was spawned to run `call` (its initial call, when the probe could tell).
    pub fn spawned(&mut self, parent: Option<u64>, child: u64, call: Option<&str>, ts: u64) {
        let Some((call, span)) = call.and_then(|c| Some((c, self.span_of(c)?))) else { return };
        let phase = match span {
            RequestSpan::Lifetime => Phase::Serving(ts),
            RequestSpan::ToServer => Phase::Idle,
        };
        self.follow(child, call, span, (parent, None), phase, ts);
    }

    /// A table read at `at` saw a process with this initial call and first ancestor (a pid as
    /// Erlang prints it, or a registered name): an acceptor spawned before the hooks were
    /// attached is followed from its server's next message to it.
    pub fn seen(&mut self, pid: u64, initial_call: &str, ancestor: Option<&str>, at: u64) {
        if let Some(l) = self.live.get_mut(&pid) {
            l.alive_at = l.alive_at.max(at);
            return;
        }
        if let Some(RequestSpan::ToServer) = self.span_of(initial_call) {
            self.follow(pid, initial_call, RequestSpan::ToServer, (None, ancestor.map(str::to_owned)), Phase::Unknown, at);
        }
    }

    /// After a table read at `at` (each process it saw told to [`Requests::seen`]): a process
    /// known alive only before it and not in it is gone, its exit unseen (no exit hook then).
    pub fn table_read(&mut self, at: u64) {
        self.live.retain(|_, l| l.alive_at >= at);
    }

    /// A send from `from` to `to`; `to_text` tells how Erlang prints `to` (asked only while a
    /// sender's server is not known yet).
    pub fn send(&mut self, from: u64, to: u64, ts: u64, to_text: impl FnOnce(u64) -> String) {
        // The server's message to its acceptor: it is idle, its next report starts a request.
        if let Some(l) = self.live.get_mut(&to)
            && l.span == RequestSpan::ToServer
            && l.server == Some(from)
            && l.phase == Phase::Unknown
        {
            l.phase = Phase::Idle;
        }
        let Some(l) = self.live.get_mut(&from) else { return };
        if l.span != RequestSpan::ToServer {
            return;
        }
        if l.server.is_none() && l.ancestor.as_deref().is_some_and(|a| a == to_text(to)) {
            l.server = Some(to);
        }
        if l.server != Some(to) {
            return;
        }
        match l.phase {
            Phase::Idle => self.start(from, ts),
            Phase::Serving(_) => {
                self.finish(from, ts);
                if let Some(l) = self.live.get_mut(&from) {
                    l.phase = Phase::Unknown;
                }
            }
            Phase::Unknown => {}
        }
    }

    fn start(&mut self, pid: u64, ts: u64) {
        let (cpu_seen, gc_seen) = (self.open.contains(&Capability::Schedule), self.open.contains(&Capability::Gc));
        if let Some(l) = self.live.get_mut(&pid) {
            *l = Live { phase: Phase::Serving(ts), cpu_ns: 0, gc_ns: 0, cpu_seen, gc_seen, waits: Vec::new(), ..l.clone() };
        }
    }

    pub fn exit(&mut self, pid: u64, ts: u64) {
        self.finish(pid, ts);
        self.live.remove(&pid);
    }

    pub fn ran(&mut self, pid: u64, run_ns: u64) {
        if let Some(l) = self.live.get_mut(&pid) {
            l.cpu_ns += run_ns;
        }
    }

    pub fn collected(&mut self, pid: u64, ns: u64) {
        if let Some(l) = self.live.get_mut(&pid) {
            l.gc_ns += ns;
        }
    }

    /// A call of `caller` to `server` was answered after `ns`.
    pub fn waited(&mut self, caller: u64, server: u64, ns: u64) {
        let Some(l) = self.live.get_mut(&caller) else { return };
        if !matches!(l.phase, Phase::Serving(_)) {
            return;
        }
        match l.waits.iter_mut().find(|w| w.server == server) {
            Some(w) => {
                w.calls += 1;
                w.wait_ns += ns;
            }
            None => l.waits.push(Wait { server, calls: 1, wait_ns: ns }),
        }
    }

    /// The request `pid` serves, if any, ends at `ts`.
    fn finish(&mut self, pid: u64, ts: u64) {
        let Some(l) = self.live.get_mut(&pid) else { return };
        let Phase::Serving(started) = l.phase else { return };
        l.phase = Phase::Idle;
        let duration_ns = ts.saturating_sub(started);
        let mut waits = std::mem::take(&mut l.waits);
        waits.sort_by(|a, b| b.wait_ns.cmp(&a.wait_ns).then(a.server.cmp(&b.server)));
        waits.truncate(WAITS);
        let request = Request {
            pid,
            handler: l.handler.clone(),
            started_ns: started,
            duration_ns,
            cpu_ns: l.cpu_seen.then_some(l.cpu_ns),
            gc_ns: l.gc_seen.then_some(l.gc_ns),
            waits,
        };
        if !self.handlers.contains_key(&request.handler) && self.handlers.len() >= MAX_HANDLERS {
            self.dropped += 1;
            return;
        }
        self.handlers.entry(request.handler.clone()).or_default().add(duration_ns);
        let at = self.slowest.partition_point(|r| r.duration_ns >= duration_ns);
        if at < SLOWEST {
            self.slowest.insert(at, request);
            self.slowest.truncate(SLOWEST);
        }
    }

    /// Hooks attached or detached: a request whose end can no longer be seen is forgotten, and
    /// one that ran while the schedule or GC hooks were away has no CPU or GC time.
    pub fn window(&mut self, capabilities: &[Capability], open: bool) {
        if open {
            for c in capabilities {
                if !self.open.contains(c) {
                    self.open.push(*c);
                }
            }
            return;
        }
        self.open.retain(|c| !capabilities.contains(c));
        let ends_unseen = |span: RequestSpan| match span {
            RequestSpan::Lifetime => capabilities.contains(&Capability::Exit),
            RequestSpan::ToServer => capabilities.contains(&Capability::Send) || capabilities.contains(&Capability::Exit),
        };
        self.live.retain(|_, l| !(ends_unseen(l.span) && l.span == RequestSpan::Lifetime));
        for l in self.live.values_mut() {
            if ends_unseen(l.span) {
                l.phase = Phase::Unknown;
            }
            l.cpu_seen &= !capabilities.contains(&Capability::Schedule);
            l.gc_seen &= !capabilities.contains(&Capability::Gc);
        }
    }

    /// Handlers by requests measured, most first.
    pub fn busiest(&self, n: usize) -> Vec<(&Arc<str>, &Durations)> {
        let mut v: Vec<(&Arc<str>, &Durations)> = self.handlers.iter().collect();
        v.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::Requests;
    use beam_probes::Capability;

    const ACCEPTOR: &str = "yaws_server:acceptor0/2";

    #[test]
    fn a_request_process_spans_its_life() {
        let mut r = Requests { extra: vec!["my_handler:init/2".into()], ..Requests::default() };
        r.spawned(Some(1), 2, Some("my_handler:init/2"), 1_000);
        r.spawned(Some(1), 3, Some("other:init/1"), 1_000);
        r.ran(2, 300);
        r.waited(2, 9, 4_000);
        r.exit(2, 11_000);
        r.exit(3, 12_000);
        assert_eq!(r.handlers.len(), 1);
        assert_eq!(r.handlers["my_handler:init/2"].quantile(0.5), Some(10_000));
        let slow = &r.slowest[0];
        assert_eq!((slow.pid, slow.duration_ns, slow.cpu_ns), (2, 10_000, None), "no schedule hooks: no CPU");
        assert_eq!(slow.waits, vec![super::Wait { server: 9, calls: 1, wait_ns: 4_000 }]);
    }

    #[test]
    fn an_acceptor_serves_from_report_to_report() {
        let mut r = Requests::default();
        r.window(&[Capability::Send, Capability::Schedule], true);
        r.spawned(Some(1), 2, Some(ACCEPTOR), 0);
        r.send(2, 1, 1_000, |_| unreachable!("its server is known from its spawn")); // accepted
        r.ran(2, 500);
        r.send(2, 7, 1_500, |_| unreachable!()); // a call elsewhere: not its server
        r.send(2, 1, 5_000, |_| unreachable!()); // done
        r.send(2, 1, 6_000, |_| unreachable!()); // after a report: not known to be idle
        r.send(2, 1, 8_000, |_| unreachable!());
        r.send(1, 2, 9_000, |_| unreachable!()); // the server hands it the next connection
        r.send(2, 1, 10_000, |_| unreachable!());
        r.exit(2, 12_000);
        let d = &r.handlers[ACCEPTOR];
        assert_eq!(d.count, 2);
        assert_eq!(r.slowest.iter().map(|q| q.duration_ns).collect::<Vec<_>>(), vec![4_000, 2_000]);
        assert_eq!(r.slowest[0].cpu_ns, Some(500));
    }

    #[test]
    fn an_acceptor_seen_in_a_table_finds_its_server_by_its_ancestor() {
        let mut r = Requests::default();
        r.seen(2, ACCEPTOR, Some("<0.90.0>"), 0);
        let text = |p: u64| format!("<0.{p}.0>");
        r.send(2, 5, 1_000, text); // not its server
        r.send(2, 90, 2_000, text); // its server, phase not known: no request
        r.send(90, 2, 3_000, text); // handed a connection
        r.send(2, 90, 4_000, text); // accepted
        r.send(2, 90, 7_000, text); // done
        assert_eq!(r.slowest.iter().map(|q| q.duration_ns).collect::<Vec<_>>(), vec![3_000]);
    }

    #[test]
    fn a_process_missing_from_a_table_read_is_gone() {
        let mut r = Requests::default();
        r.seen(2, ACCEPTOR, None, 1_000);
        r.seen(3, ACCEPTOR, None, 1_000);
        r.spawned(Some(1), 4, Some(ACCEPTOR), 2_500); // after the read began: not in it
        r.seen(2, ACCEPTOR, None, 2_000);
        r.table_read(2_000);
        assert_eq!(r.following(), 2, "3 is gone, 4 came after the read");
    }

    #[test]
    fn a_window_closing_forgets_requests_in_flight() {
        let mut r = Requests::default();
        r.spawned(Some(1), 2, Some(ACCEPTOR), 0);
        r.send(2, 1, 1_000, |_| String::new());
        r.window(&[Capability::Send], false);
        r.send(2, 1, 90_000, |_| String::new());
        assert!(r.handlers.is_empty());
    }
}
