//! Request latency as the views show it: per handler, and the slowest requests with what they
//! waited on. One shape for `/api/requests`, the HTML report and `why`, built from the
//! aggregated requests and a way to name pids (live, or a recording's).

use serde::Serialize;

use crate::aggregate::requests::Requests;

#[derive(Debug, Serialize)]
pub struct RequestsView {
    /// Handlers by requests measured, most first.
    pub handlers: Vec<HandlerRow>,
    /// Longest first.
    pub slowest: Vec<SlowRequest>,
    /// Request processes followed now.
    pub following: usize,
    /// Request processes and handlers refused to stay within bounds.
    pub dropped: u64,
}

#[derive(Debug, Serialize)]
pub struct HandlerRow {
    /// The request processes' initial call.
    pub handler: String,
    pub requests: u64,
    pub mean_seconds: Option<f64>,
    pub p50_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct SlowRequest {
    pub pid: String,
    pub handler: String,
    /// When it started, seconds on the monotonic clock of the probe (live) or since the
    /// recording's start.
    pub started_seconds: f64,
    pub duration_seconds: f64,
    /// On a scheduler, and collecting garbage (absent: those hooks were not attached all
    /// through the request).
    pub cpu_seconds: Option<f64>,
    pub gc_seconds: Option<f64>,
    /// The servers it waited on longest.
    pub waited_on: Vec<WaitRow>,
}

#[derive(Debug, Serialize)]
pub struct WaitRow {
    pub server: String,
    /// Registered name, label or initial call ("" when not known).
    pub name: String,
    pub calls: u64,
    pub seconds: f64,
    /// Of the request's duration.
    pub share: f64,
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

impl RequestsView {
    pub fn new(r: &Requests, handlers: usize, pid: &dyn Fn(u64) -> String, name: &dyn Fn(u64) -> String) -> RequestsView {
        let handlers = r
            .busiest(handlers)
            .into_iter()
            .map(|(h, d)| {
                let q = d.quantiles(&[0.5, 0.99]);
                HandlerRow {
                    handler: h.to_string(),
                    requests: d.count,
                    mean_seconds: d.mean_ns().map(secs),
                    p50_seconds: q[0].map(secs),
                    p99_seconds: q[1].map(secs),
                }
            })
            .collect();
        let slowest = r
            .slowest
            .iter()
            .map(|q| SlowRequest {
                pid: pid(q.pid),
                handler: q.handler.to_string(),
                started_seconds: secs(q.started_ns),
                duration_seconds: secs(q.duration_ns),
                cpu_seconds: q.cpu_ns.map(secs),
                gc_seconds: q.gc_ns.map(secs),
                waited_on: q
                    .waits
                    .iter()
                    .map(|w| WaitRow {
                        server: pid(w.server),
                        name: name(w.server),
                        calls: w.calls,
                        seconds: secs(w.wait_ns),
                        share: if q.duration_ns == 0 { 0.0 } else { (w.wait_ns as f64 / q.duration_ns as f64).min(1.0) },
                    })
                    .collect(),
            })
            .collect();
        RequestsView { handlers, slowest, following: r.following(), dropped: r.dropped }
    }
}

impl SlowRequest {
    /// One line: `<0.90.0> (yaws_server:acceptor0/2) took 20.4 ms: waited 96% of it on <0.88.0>
    /// (scope_db) (1 call), 0.2 ms on CPU`.
    pub fn sentence(&self) -> String {
        let mut s = format!("{} ({}) took {}", self.pid, self.handler, ms(self.duration_seconds));
        // Waits under 1% of the request say nothing of why it was slow.
        let waits: Vec<String> = self
            .waited_on
            .iter()
            .filter(|w| w.share >= 0.01)
            .map(|w| {
                let who = if w.name.is_empty() { w.server.clone() } else { format!("{} ({})", w.server, w.name) };
                let calls = if w.calls == 1 { "1 call".to_owned() } else { format!("{} calls", w.calls) };
                format!("{:.0}% of it on {who} ({calls})", w.share * 100.0)
            })
            .collect();
        if !waits.is_empty() {
            s += &format!(": waited {}", waits.join(", "));
        }
        if let Some(cpu) = self.cpu_seconds {
            s += &format!("{} {} on CPU", if waits.is_empty() { ":" } else { "," }, ms(cpu));
        }
        if let Some(gc) = self.gc_seconds.filter(|&g| g > 0.0) {
            s += &format!(", {} in GC", ms(gc));
        }
        s
    }
}

fn ms(seconds: f64) -> String {
    format!("{:.1} ms", seconds * 1e3)
}
