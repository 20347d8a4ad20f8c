//! The adaptive mode's overhead controller. Cheap sources run all the time; the per-event hooks
//! are attached only in windows, sized so that what they cost the VM stays within the budget:
//!
//! - a window's cost is its hook hits (counted by the probes) times the cost of one hit
//!   (calibrated at start-up, `control::calibrate`);
//! - the VM's own CPU time over the same minute (from /proc) is what that cost is a share of:
//!   `scope_probe_overhead_ratio` = hook cost / VM CPU time, over the last minute;
//! - the budget is a bucket that fills at `budget` times the VM's CPU rate and that each
//!   window empties by its cost: a window opens only while the bucket is not in debt, so the
//!   cost over time is the budget whatever the windows cost;
//! - windows repeat every `period` (a survey: every capability, so rates stay known); each
//!   window is resized from the last so that one costs about a period's worth of budget;
//! - a detector that wants evidence asks for capabilities with a reason
//!   ([`Escalator::escalate`]): a window with them opens as soon as the bucket holds its cost.
//!
//! Rates seen in windows are counted in the same counters as in trace mode; with
//! `scope_probe_observed_seconds_total` per capability, PromQL divides one by the other to get
//! the rate while observed (README, "Modes").

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use beam_probes::Capability;

use crate::aggregate::health::Health;
use crate::aggregate::lock;
use crate::control::mode::Mode;
use crate::source::probes::{Command, ProbeCommands};
use crate::source::procstat;

/// The controller's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Share of the VM's CPU time the hooks may cost, over any minute.
    pub budget: f64,
    /// How often a survey window opens.
    pub period: Duration,
    /// The shortest window (attaching takes a few milliseconds itself).
    pub min_window: Duration,
    /// Whether survey windows open at all (`top --calls` opens only the windows it asks for).
    pub surveys: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { budget: 0.01, period: Duration::from_secs(10), min_window: Duration::from_millis(20), surveys: true }
    }
}

/// What the controller tells the exporters.
#[derive(Debug, Clone, Default)]
pub struct ControlState {
    pub mode: Option<Mode>,
    pub budget: f64,
    /// Seconds one hook hit costs the VM, and how that was found.
    pub hit_seconds: f64,
    pub calibration: String,
    /// Hook cost over the VM's CPU time, last minute.
    pub overhead_ratio: f64,
    /// Windows opened, by reason (`survey`, or the detector that asked).
    pub escalations: BTreeMap<String, u64>,
    /// Seconds each capability was attached.
    pub observed_seconds: [f64; Capability::ALL.len()],
    /// Seconds the VM's threads ran, and what the hooks cost it, since start.
    pub vm_cpu_seconds: f64,
    pub hook_cost_seconds: f64,
}

/// An escalation asked for by a detector.
#[derive(Debug, Clone)]
struct Request {
    reason: String,
    capabilities: Vec<Capability>,
    until: Instant,
}

pub struct Controller {
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Handle for detectors: asks the controller for evidence.
#[derive(Clone)]
pub struct Escalator {
    requests: Arc<Mutex<Vec<Request>>>,
}

impl std::fmt::Debug for Escalator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Escalator")
    }
}

impl Escalator {
    /// Asks for `capabilities` to be observed for a while, for `reason` (a detector's kind).
    /// A request already pending for the same reason is extended, not repeated.
    pub fn escalate(&self, reason: &str, capabilities: &[Capability], duration: Duration) {
        let mut r = lock(&self.requests);
        let until = Instant::now() + duration;
        match r.iter_mut().find(|q| q.reason == reason) {
            Some(q) => {
                q.until = q.until.max(until);
                for c in capabilities {
                    if !q.capabilities.contains(c) {
                        q.capabilities.push(*c);
                    }
                }
            }
            None => r.push(Request { reason: reason.to_owned(), capabilities: capabilities.to_vec(), until }),
        }
    }
}

impl Controller {
    pub fn start(
        vm: u32,
        settings: Settings,
        commands: ProbeCommands,
        health: Arc<Mutex<Health>>,
        state: Arc<Mutex<ControlState>>,
    ) -> Result<Controller> {
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::Builder::new()
                .name("scope-probe-control".into())
                .spawn(move || {
                    let mut c = Loop::new(vm, settings, commands, health, state, requests);
                    while !stop.load(Ordering::Relaxed) {
                        c.tick();
                        // Ticks are fine-grained only while a window is open (it ends on time).
                        std::thread::sleep(if c.window.is_some() { TICK } else { IDLE_TICK });
                    }
                    c.close_window();
                })
                .context("starting the overhead controller")?
        };
        Ok(Controller { requests, stop, thread: Some(thread) })
    }

    pub fn escalator(&self) -> Escalator {
        Escalator { requests: self.requests.clone() }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const TICK: Duration = Duration::from_millis(5);
const IDLE_TICK: Duration = Duration::from_millis(25);
/// The overhead is reported over this long.
const MINUTE: Duration = Duration::from_secs(60);

/// An open window.
struct Window {
    opened: Instant,
    /// Observed time is published as the window goes (a scrape during a window sees its
    /// events and its time together); up to here it has been.
    accounted: Instant,
    length: Duration,
    capabilities: Vec<Capability>,
    hits_before: [u64; Capability::ALL.len()],
}

struct Loop {
    vm: u32,
    settings: Settings,
    commands: ProbeCommands,
    health: Arc<Mutex<Health>>,
    state: Arc<Mutex<ControlState>>,
    requests: Arc<Mutex<Vec<Request>>>,
    window: Option<Window>,
    next_survey: Instant,
    /// A request has had a window since the last survey (requests and due surveys take turns).
    request_served: bool,
    /// The length the next window gets, and what it should cost at the last window's rate.
    next_length: Duration,
    next_cost: f64,
    /// The budget not spent yet, in seconds of hook cost (negative: in debt).
    bucket: f64,
    last_tick: Instant,
    /// (when, VM CPU seconds so far, hook cost so far), once a second, for the last minute.
    history: VecDeque<(Instant, f64, f64)>,
    vm_cpu_start: f64,
    hook_cost: f64,
    last_history: Instant,
}

impl Loop {
    fn new(
        vm: u32,
        settings: Settings,
        commands: ProbeCommands,
        health: Arc<Mutex<Health>>,
        state: Arc<Mutex<ControlState>>,
        requests: Arc<Mutex<Vec<Request>>>,
    ) -> Loop {
        let now = Instant::now();
        let vm_cpu_start = procstat::process_cpu_seconds(vm).unwrap_or(0.0);
        Loop {
            vm,
            settings,
            commands,
            health,
            state,
            requests,
            window: None,
            // The first survey comes soon: rates are unknown until then.
            next_survey: now + Duration::from_millis(500),
            request_served: false,
            next_length: settings.min_window,
            next_cost: 0.0,
            bucket: 0.0,
            last_tick: now,
            history: VecDeque::from([(now, 0.0, 0.0)]),
            vm_cpu_start,
            hook_cost: 0.0,
            last_history: now,
        }
    }

    fn vm_cpu(&self) -> f64 {
        procstat::process_cpu_seconds(self.vm).map_or(0.0, |c| c - self.vm_cpu_start)
    }

    fn hits(&self) -> [u64; Capability::ALL.len()] {
        lock(&self.health).hits_by_capability
    }

    /// Hook cost over VM CPU, over the last minute.
    fn overhead(&self) -> f64 {
        let (Some(first), Some(last)) = (self.history.front(), self.history.back()) else { return 0.0 };
        let cpu = last.1 - first.1;
        if cpu <= 0.0 { 0.0 } else { (last.2 - first.2) / cpu }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last_tick).as_secs_f64();
        self.last_tick = now;
        let refill = self.settings.budget * self.cpu_rate().max(0.01);
        let cap = refill * self.settings.period.as_secs_f64() * 2.0;
        self.bucket = (self.bucket + refill * dt).min(cap);
        if now.duration_since(self.last_history) >= Duration::from_secs(1) {
            self.last_history = now;
            self.history.push_back((now, self.vm_cpu(), self.hook_cost));
            while self.history.front().is_some_and(|h| now.duration_since(h.0) > MINUTE) {
                self.history.pop_front();
            }
            let overhead = self.overhead();
            let mut st = lock(&self.state);
            st.overhead_ratio = overhead;
            st.vm_cpu_seconds = self.history.back().map_or(0.0, |h| h.1);
            st.hook_cost_seconds = self.hook_cost;
        }
        if let Some(w) = &mut self.window {
            let mut st = lock(&self.state);
            for c in &w.capabilities {
                st.observed_seconds[c.index()] += now.saturating_duration_since(w.accounted).as_secs_f64();
            }
            drop(st);
            w.accounted = w.accounted.max(now);
        }
        if let Some(w) = &self.window {
            // A window also ends early when it has cost what it may: the VM got busier since
            // the window was sized (or it was sized on a quiet VM).
            let spent = self.hits().iter().zip(w.hits_before).map(|(a, b)| a.saturating_sub(b)).sum::<u64>() as f64
                * lock(&self.state).hit_seconds;
            let may = (self.next_cost * 2.0).max(self.bucket).max(self.settings.budget * 0.01);
            if now.duration_since(w.opened) >= w.length || spent > may {
                self.close_window();
            }
            return;
        }
        if self.bucket < 0.0 {
            return;
        }
        lock(&self.requests).retain(|r| r.until > now);
        let requests: Vec<Request> = lock(&self.requests).clone();
        let survey_due = self.settings.surveys && now >= self.next_survey;
        if !requests.is_empty() && (!survey_due || !self.request_served) {
            // A detector waits for evidence: a due survey waits until it has had a window, so
            // that the budget fills up for it instead of being spent on surveys as fast as it
            // comes in (on a busy VM a request starved behind them). Then the survey goes
            // first: a request that lasts (a detector re-asks while its condition holds) must
            // not starve the other capabilities either.
            if self.bucket >= self.next_cost {
                self.request_served = true;
                self.open_window(requests);
            }
        } else if survey_due {
            self.next_survey = now + self.settings.period;
            self.request_served = false;
            self.open_window(Vec::new());
        }
    }

    fn open_window(&mut self, requests: Vec<Request>) {
        let mut capabilities: Vec<Capability> = Capability::ALL.to_vec();
        let reasons: Vec<String> = if requests.is_empty() {
            vec!["survey".into()]
        } else {
            capabilities.retain(|c| requests.iter().any(|r| r.capabilities.contains(c)));
            requests.iter().map(|r| r.reason.clone()).collect()
        };
        {
            let mut st = lock(&self.state);
            for r in reasons {
                *st.escalations.entry(r).or_default() += 1;
            }
        }
        let hits_before = self.hits();
        let _ = self.commands.send(Command::Attach(capabilities.clone()));
        // The window counts from when the hooks are in (the probe thread confirms through its
        // health), so that observed time is time attached.
        let asked = Instant::now();
        while asked.elapsed() < Duration::from_secs(1) {
            if capabilities.iter().all(|c| lock(&self.health).attached.contains(c)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let opened = capabilities.iter().filter_map(|c| lock(&self.health).attached_at[c.index()]).max();
        let opened = opened.unwrap_or_else(Instant::now);
        self.window = Some(Window { opened, accounted: opened, length: self.next_length, capabilities, hits_before });
    }

    fn close_window(&mut self) {
        let Some(w) = self.window.take() else { return };
        let _ = self.commands.send(Command::Detach(w.capabilities.clone()));
        let asked = Instant::now();
        while asked.elapsed() < Duration::from_secs(1) {
            if !w.capabilities.iter().any(|c| lock(&self.health).attached.contains(c)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // Observed from the moment the breakpoints went in to the moment they came out.
        let closed = w.capabilities.iter().filter_map(|c| lock(&self.health).detached_at[c.index()]).max();
        let observed = closed.unwrap_or_else(Instant::now).saturating_duration_since(w.opened);
        let hits_after = self.hits();
        let hits: u64 = hits_after.iter().zip(w.hits_before).map(|(a, b)| a.saturating_sub(b)).sum();
        let hit_seconds = lock(&self.state).hit_seconds;
        let cost = hits as f64 * hit_seconds;
        self.hook_cost += cost;
        {
            let mut st = lock(&self.state);
            for c in &w.capabilities {
                st.observed_seconds[c.index()] += closed.unwrap_or_else(Instant::now).saturating_duration_since(w.accounted).as_secs_f64();
            }
            st.hook_cost_seconds = self.hook_cost;
        }
        self.bucket -= cost;
        // Size the next window so that it costs about a period's worth of budget.
        let period = self.settings.period.as_secs_f64();
        let allowed = self.settings.budget * self.cpu_rate().max(0.01) * period;
        let observed = observed.as_secs_f64();
        let length = if cost > 0.0 {
            observed * allowed / cost
        } else {
            // Nothing hit: the hooks cost nothing here; the next window may be long.
            period
        };
        let length = length.clamp(self.settings.min_window.as_secs_f64(), period);
        self.next_length = Duration::from_secs_f64(length);
        self.next_cost = if observed > 0.0 { cost / observed * length } else { 0.0 };
        if std::env::var_os("SCOPE_PROBE_DEBUG_CONTROL").is_some() {
            eprintln!(
                "scope-probe: window {:?} {observed:.3}s: {hits} hits, cost {cost:.4}s, VM CPU {:.2}/s, bucket {:.4}s, next {length:.3}s",
                w.capabilities,
                self.cpu_rate(),
                self.bucket
            );
        }
    }

    /// The VM's CPU seconds per second, over the last minute (since start at first).
    fn cpu_rate(&self) -> f64 {
        match (self.history.front(), self.history.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1) / b.0.duration_since(a.0).as_secs_f64(),
            _ => 0.0,
        }
    }
}
