//! Detectors: conditions a BEAM user wants to be told about, each read from the aggregated
//! observations (the detectors are sinks of the fan-out) and evaluated once a second.
//!
//! A detector reports what it sees now as [`Observation`]s, one per subject (a process, a group
//! of processes, or the VM). It applies its own hysteresis: a subject already firing is still
//! reported until its disable level is crossed (as OTP's `system_monitor` does for
//! `long_message_queue`). The registry ([`Findings`]) adds the hold times: a subject must be
//! seen for `hold` before its finding fires, and not be seen for `clear` before it resolves.
//! When a finding starts firing, its detector's evidence capabilities are asked of the adaptive
//! controller (an escalation); the evidence it then gathers shows in the finding's next
//! evaluations.

pub mod cycle;
pub mod deadlock;
pub mod ets_growth;
pub mod gc_storm;
pub mod hot;
pub mod long_schedule;
pub mod mailbox;
pub mod memory;
pub mod port_queue;
pub mod saturation;
pub mod settings;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use beam_probes::Capability;
use serde::Serialize;

use crate::aggregate::lock;
use crate::control::adaptive::{ControlState, Escalator};
use crate::event::{Event, ProcRead, Sample, SharedTableRead};
use crate::export::PidNames;
use crate::pipeline::Sink;
pub use settings::Settings;

/// The kinds of finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    MailboxBuildup,
    MemoryGrowth,
    EtsGrowth,
    PortQueue,
    GcStorm,
    SchedulerSaturation,
    LongSchedule,
    HotProcess,
    MessageCycle,
    Deadlock,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::MailboxBuildup,
        Kind::MemoryGrowth,
        Kind::EtsGrowth,
        Kind::PortQueue,
        Kind::GcStorm,
        Kind::SchedulerSaturation,
        Kind::LongSchedule,
        Kind::HotProcess,
        Kind::MessageCycle,
        Kind::Deadlock,
    ];

    /// As metric labels, alert names and the configuration file spell it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::MailboxBuildup => "mailbox_buildup",
            Kind::MemoryGrowth => "memory_growth",
            Kind::EtsGrowth => "ets_growth",
            Kind::PortQueue => "port_queue",
            Kind::GcStorm => "gc_storm",
            Kind::SchedulerSaturation => "scheduler_saturation",
            Kind::LongSchedule => "long_schedule",
            Kind::HotProcess => "hot_process",
            Kind::MessageCycle => "message_cycle",
            Kind::Deadlock => "deadlock",
        }
    }

    /// The alert's name in Alertmanager (`BeamMailboxBuildup`).
    pub fn alert_name(self) -> String {
        let camel: String = self
            .name()
            .split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
            })
            .collect();
        format!("Beam{camel}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// What a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// The VM as a whole.
    Vm,
    /// One process (its pid term).
    Process(u64),
    /// Several processes together (a cycle), in a canonical order.
    Group(Vec<u64>),
    /// An ETS table (its name and id) and its owner's pid term.
    Table { name: String, id: String, owner: u64 },
    /// A port (`#Port<0.N>`, its name) and the process connected to it.
    Port { id: String, name: String, connected: Option<u64> },
}

/// What a detector sees now for one subject.
#[derive(Debug, Clone)]
pub struct Observation {
    pub kind: Kind,
    pub subject: Subject,
    pub severity: Severity,
    /// The measured quantity the threshold is about (queue length, bytes, share...).
    pub value: f64,
    /// One line a person reads in an alert, with the processes named.
    pub summary: String,
    /// The evidence, as (what, value) pairs: pids with identities, rates, top pairs...
    pub evidence: Vec<(&'static str, String)>,
}

/// What detectors read besides their own state.
pub struct Context<'a> {
    pub now: Instant,
    pub names: &'a dyn PidNames,
    pub control: &'a ControlState,
    /// Subjects firing now, per kind (for the detectors' hysteresis).
    pub firing: &'a HashMap<Kind, Vec<Subject>>,
}

impl Context<'_> {
    pub fn is_firing(&self, kind: Kind, subject: &Subject) -> bool {
        self.firing.get(&kind).is_some_and(|v| v.contains(subject))
    }

    /// `<0.80.0> (name)`, or the bare pid when it has no name.
    pub fn who(&self, pid: u64) -> String {
        self.names.who(pid)
    }
}

/// One condition, evaluated once a second over its own state (fed as a sink).
pub trait Detector: Send {
    fn kind(&self) -> Kind;
    /// The capabilities whose per-event hooks give this detector's evidence (asked of the
    /// adaptive controller while a finding of its kind is pending or firing).
    fn evidence_capabilities(&self) -> &'static [Capability] {
        &[]
    }
    /// Whether it has candidates it cannot confirm without its evidence capabilities (asked of
    /// the controller although nothing is observed yet).
    fn wants_evidence(&self) -> bool {
        false
    }
    fn events(&mut self, _batch: &[Event]) {}
    fn sample(&mut self, _sample: &Sample) {}
    fn table(&mut self, _read: &SharedTableRead) {}
    fn proc(&mut self, _read: &ProcRead) {}
    fn observe(&mut self, ctx: &Context<'_>) -> Vec<Observation>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Seen, not for `hold` yet.
    Pending,
    Firing,
    Resolved,
}

/// An ETS table a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableRef {
    pub name: String,
    /// `#Ref<0.N2.N1.N0>`, as `ets:info(T, id)` prints it.
    pub id: String,
}

/// A port a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortRef {
    /// `#Port<0.N>`.
    pub id: String,
    /// `port_info(P, name)`: the driver's name or the command spawned.
    pub name: String,
}

/// A finding, as `/api/findings`, the metrics and the alerts show it.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub id: u64,
    pub kind: Kind,
    pub state: State,
    pub severity: Severity,
    /// The process, when it is about one (`<0.80.0>`), and who it is.
    pub pid: Option<String>,
    pub name: Option<String>,
    /// The ETS table, when it is about one (its owner is `pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<TableRef>,
    /// The port, when it is about one (the process connected to it is `pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRef>,
    /// Every process it is about (a cycle, a deadlock).
    pub processes: Vec<Named>,
    pub value: f64,
    pub summary: String,
    pub evidence: Vec<Evidence>,
    #[serde(with = "unix_seconds")]
    pub first_seen: SystemTime,
    #[serde(with = "unix_seconds_opt")]
    pub firing_since: Option<SystemTime>,
    #[serde(with = "unix_seconds_opt")]
    pub resolved_at: Option<SystemTime>,
    /// The flight recorder's recording of the minutes around it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    #[serde(skip)]
    seen: Instant,
    #[serde(skip)]
    since: Instant,
}

mod unix_seconds {
    use std::time::{SystemTime, UNIX_EPOCH};
    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0))
    }
}

mod unix_seconds_opt {
    use std::time::{SystemTime, UNIX_EPOCH};
    pub fn serialize<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)),
            None => s.serialize_none(),
        }
    }
}

/// A process of a finding.
#[derive(Debug, Clone, Serialize)]
pub struct Named {
    pub pid: String,
    pub name: String,
}

/// One piece of a finding's evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    pub what: String,
    pub value: String,
}

/// A finding changed state: what the alert client sends.
#[derive(Debug, Clone)]
pub enum Transition {
    Fired(Finding),
    /// Still firing: the evidence may have changed (alerts are re-sent with it).
    Updated(Finding),
    Resolved(Finding),
}

/// Active and recent findings, bounded.
#[derive(Default)]
pub struct Findings {
    active: BTreeMap<(Kind, Subject), Finding>,
    recent: VecDeque<Finding>,
    /// Findings that fired, per kind, since start.
    pub fired: BTreeMap<Kind, u64>,
    /// Observations dropped because too many findings were active.
    pub dropped: u64,
}

/// Finding ids, unique across the VMs one scope-probe observes (the JSON API serves them all).
fn next_finding_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// At most this many findings are active (pending or firing) at once; resolved ones kept.
const MAX_ACTIVE: usize = 200;
const MAX_RECENT: usize = 100;

impl Findings {
    pub fn active(&self) -> impl Iterator<Item = &Finding> {
        self.active.values()
    }

    pub fn firing(&self) -> impl Iterator<Item = &Finding> {
        self.active.values().filter(|f| f.state == State::Firing)
    }

    pub fn recent(&self) -> impl Iterator<Item = &Finding> {
        self.recent.iter()
    }

    pub fn get(&self, id: u64) -> Option<&Finding> {
        self.active.values().chain(self.recent.iter()).find(|f| f.id == id)
    }

    /// Names the recording kept for a finding.
    pub fn set_recording(&mut self, id: u64, path: String) {
        if let Some(f) = self.active.values_mut().find(|f| f.id == id) {
            f.recording = Some(path);
        }
    }

    fn firing_subjects(&self) -> HashMap<Kind, Vec<Subject>> {
        let mut m: HashMap<Kind, Vec<Subject>> = HashMap::new();
        for ((kind, subject), f) in &self.active {
            if f.state == State::Firing {
                m.entry(*kind).or_default().push(subject.clone());
            }
        }
        m
    }

    /// Folds one evaluation's observations in; returns the transitions.
    fn update(&mut self, now: Instant, observed: Vec<Observation>, names: &dyn PidNames, holds: &Settings) -> Vec<Transition> {
        let mut out = Vec::new();
        let wall = SystemTime::now();
        for o in observed {
            let key = (o.kind, o.subject.clone());
            let processes: Vec<u64> = match &o.subject {
                Subject::Vm => Vec::new(),
                Subject::Process(p) => vec![*p],
                Subject::Group(g) => g.clone(),
                Subject::Table { owner, .. } => vec![*owner],
                Subject::Port { connected, .. } => connected.iter().copied().collect(),
            };
            // A table's or a port's finding is about its owner too: alerts carry it as `pid`.
            let about_one = matches!(o.subject, Subject::Process(_) | Subject::Table { .. } | Subject::Port { .. });
            let table = match &o.subject {
                Subject::Table { name, id, .. } => Some(TableRef { name: name.clone(), id: id.clone() }),
                _ => None,
            };
            let port = match &o.subject {
                Subject::Port { id, name, .. } => Some(PortRef { id: id.clone(), name: name.clone() }),
                _ => None,
            };
            let named: Vec<Named> = processes.iter().map(|p| Named { pid: names.pid(*p), name: names.name(*p) }).collect();
            let evidence: Vec<Evidence> = o.evidence.into_iter().map(|(k, v)| Evidence { what: k.to_owned(), value: v }).collect();
            match self.active.get_mut(&key) {
                Some(f) => {
                    f.seen = now;
                    f.value = o.value;
                    f.severity = o.severity;
                    f.summary = o.summary;
                    f.evidence = evidence;
                    f.processes = named;
                    if f.state == State::Pending && now.duration_since(f.since) >= holds.hold(o.kind) {
                        f.state = State::Firing;
                        f.firing_since = Some(wall);
                        *self.fired.entry(o.kind).or_default() += 1;
                        out.push(Transition::Fired(f.clone()));
                    } else if f.state == State::Firing {
                        out.push(Transition::Updated(f.clone()));
                    }
                }
                None => {
                    if self.active.len() >= MAX_ACTIVE {
                        self.dropped += 1;
                        continue;
                    }
                    let mut f = Finding {
                        id: next_finding_id(),
                        kind: o.kind,
                        state: State::Pending,
                        severity: o.severity,
                        pid: named.first().filter(|_| about_one).map(|n| n.pid.clone()),
                        name: named.first().filter(|_| about_one).map(|n| n.name.clone()),
                        table,
                        port,
                        processes: named,
                        value: o.value,
                        summary: o.summary,
                        evidence,
                        first_seen: wall,
                        firing_since: None,
                        resolved_at: None,
                        recording: None,
                        seen: now,
                        since: now,
                    };
                    if holds.hold(o.kind).is_zero() {
                        f.state = State::Firing;
                        f.firing_since = Some(wall);
                        *self.fired.entry(o.kind).or_default() += 1;
                        out.push(Transition::Fired(f.clone()));
                    }
                    self.active.insert(key, f);
                }
            }
        }
        // Not seen for `clear`: resolved (firing ones) or forgotten (pending ones).
        let gone: Vec<(Kind, Subject)> = self
            .active
            .iter()
            .filter(|((kind, _), f)| f.seen < now && now.duration_since(f.seen) >= holds.clear(*kind))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            let Some(mut f) = self.active.remove(&key) else {
                continue;
            };
            if f.state == State::Firing {
                f.state = State::Resolved;
                f.resolved_at = Some(wall);
                out.push(Transition::Resolved(f.clone()));
                if self.recent.len() >= MAX_RECENT {
                    self.recent.pop_front();
                }
                self.recent.push_back(f);
            }
        }
        out
    }
}

/// The detectors, as one sink of the fan-out.
pub struct Detectors {
    detectors: Vec<Box<dyn Detector>>,
}

impl Detectors {
    pub fn new(settings: &Settings, frequency: u64, gc_functions: Vec<String>, normal_schedulers: usize) -> Detectors {
        let mut detectors: Vec<Box<dyn Detector>> = Vec::new();
        let s = settings;
        if s.mailbox_buildup.enabled {
            detectors.push(Box::new(mailbox::MailboxBuildup::new(s.mailbox_buildup.clone())));
        }
        if s.memory_growth.enabled {
            detectors.push(Box::new(memory::MemoryGrowth::new(s.memory_growth.clone())));
        }
        if s.port_queue.enabled {
            detectors.push(Box::new(port_queue::PortQueue::new(s.port_queue.clone())));
        }
        if s.ets_growth.enabled {
            detectors.push(Box::new(ets_growth::EtsGrowth::new(s.ets_growth.clone())));
        }
        if s.hot_process.enabled && frequency > 0 {
            detectors.push(Box::new(hot::HotProcess::new(s.hot_process.clone(), frequency)));
        }
        if s.gc_storm.enabled && frequency > 0 {
            detectors.push(Box::new(gc_storm::GcStorm::new(s.gc_storm.clone(), gc_functions)));
        }
        if s.scheduler_saturation.enabled && frequency > 0 {
            detectors.push(Box::new(saturation::SchedulerSaturation::new(s.scheduler_saturation.clone(), frequency, normal_schedulers)));
        }
        if s.long_schedule.enabled {
            detectors.push(Box::new(long_schedule::LongSchedule::new(s.long_schedule.clone(), frequency)));
        }
        if s.message_cycle.enabled {
            detectors.push(Box::new(cycle::MessageCycle::new(s.message_cycle.clone())));
        }
        if s.deadlock.enabled {
            detectors.push(Box::new(deadlock::Deadlock::new(s.deadlock.clone())));
        }
        Detectors { detectors }
    }
}

impl Sink for Detectors {
    fn events(&mut self, batch: &[Event]) {
        for d in &mut self.detectors {
            d.events(batch);
        }
    }
    fn sample(&mut self, sample: &Sample) {
        for d in &mut self.detectors {
            d.sample(sample);
        }
    }
    fn table(&mut self, read: &SharedTableRead) {
        for d in &mut self.detectors {
            d.table(read);
        }
    }
    fn proc(&mut self, read: &ProcRead) {
        for d in &mut self.detectors {
            d.proc(read);
        }
    }
}

/// Evaluates the detectors once a second on a thread of its own; hands transitions to
/// `notify` (the alert client) and asks the controller for evidence.
pub struct Evaluator {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often detectors are evaluated.
pub const EVERY: Duration = Duration::from_secs(1);

impl Evaluator {
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        detectors: Arc<Mutex<Detectors>>,
        findings: Arc<Mutex<Findings>>,
        settings: Settings,
        names: Arc<dyn PidNames>,
        control: Arc<Mutex<ControlState>>,
        escalator: Option<Escalator>,
        mut notify: impl FnMut(Transition) + Send + 'static,
    ) -> anyhow::Result<Evaluator> {
        use std::sync::atomic::Ordering;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new().name("scope-probe-detect".into()).spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EVERY);
                    let now = Instant::now();
                    let firing = lock(&findings).firing_subjects();
                    let control = lock(&control).clone();
                    let ctx = Context { now, names: &*names, control: &control, firing: &firing };
                    let (observed, wanted) = {
                        let mut d = lock(&detectors);
                        let mut observed = Vec::new();
                        let mut wanted: Vec<(Kind, &'static [Capability])> = Vec::new();
                        for det in d.detectors.iter_mut() {
                            let o = det.observe(&ctx);
                            if (!o.is_empty() || det.wants_evidence()) && !det.evidence_capabilities().is_empty() {
                                wanted.push((det.kind(), det.evidence_capabilities()));
                            }
                            observed.extend(o);
                        }
                        (observed, wanted)
                    };
                    // Evidence for what is pending or firing: the controller opens windows for
                    // it within the budget.
                    if let Some(e) = &escalator {
                        for (kind, caps) in wanted {
                            e.escalate(kind.name(), caps, Duration::from_secs(10));
                        }
                    }
                    let transitions = lock(&findings).update(now, observed, &*names, &settings);
                    for t in transitions {
                        notify(t);
                    }
                }
            })?
        };
        Ok(Evaluator { stop, thread: Some(thread) })
    }
}

impl Drop for Evaluator {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The slope of `(seconds, value)` points by least squares (value per second), or `None` for
/// fewer than two distinct times.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + (x - mx) * (y - my), b + (x - mx) * (x - mx)));
    (den > 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_names_and_slopes() {
        assert_eq!(Kind::MailboxBuildup.alert_name(), "BeamMailboxBuildup");
        assert_eq!(Kind::GcStorm.alert_name(), "BeamGcStorm");
        assert_eq!(slope(&[(0.0, 10.0), (1.0, 20.0), (2.0, 30.0)]), Some(10.0));
        assert_eq!(slope(&[(1.0, 5.0)]), None);
    }
}
