//! Alerts to Alertmanager (its v2 API, `POST /api/v2/alerts`): a finding that fires becomes an
//! alert whose annotations carry its evidence; it is re-sent while active (Alertmanager ends
//! alerts it stops hearing about) and sent with `endsAt` when the finding resolves. Delivery
//! runs on a thread of its own behind a bounded queue; a failed post is retried with backoff
//! and nothing is dropped silently: attempts, failures and drops are counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::detect::{Finding, Transition};

/// Transitions waiting for the delivery thread.
const QUEUE: usize = 1_000;
/// Alerts kept (active, and resolved ones not delivered yet).
const MAX_ALERTS: usize = 500;

/// Where and how alerts go.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// Alertmanager base URLs (`http://127.0.0.1:9093`); every alert goes to each.
    pub urls: Vec<String>,
    /// Labels added to every alert (`team=payments`).
    pub labels: BTreeMap<String, String>,
    /// The observed node's name (`a@host`) and this probe's endpoint (the `instance` label and
    /// the base of `generatorURL`).
    pub node: String,
    pub instance: String,
    /// How often active alerts are sent again.
    pub resend: Duration,
}

/// Delivery counters, exported as metrics.
#[derive(Debug, Default)]
pub struct AlertStats {
    /// Posts that Alertmanager accepted (each carries every alert pending then).
    pub posts: AtomicU64,
    /// Posts that failed (connection refused, timeout, an error status): retried.
    pub failed: AtomicU64,
    /// Transitions dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Alerts waiting to be delivered (active, or resolved and not delivered yet).
    pub pending: AtomicU64,
}

pub struct AlertClient {
    tx: Option<SyncSender<Transition>>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<AlertStats>,
}

impl AlertClient {
    pub fn start(settings: AlertSettings) -> anyhow::Result<AlertClient> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let stats = Arc::new(AlertStats::default());
        let thread = {
            let stats = stats.clone();
            std::thread::Builder::new().name("scope-probe-alerts".into()).spawn(move || deliver(settings, rx, &stats))?
        };
        Ok(AlertClient { tx: Some(tx), thread: Some(thread), stats })
    }

    /// A handle the detectors' thread can own.
    pub fn sender(&self) -> AlertSender {
        AlertSender { tx: self.tx.clone(), stats: self.stats.clone() }
    }
}

impl Drop for AlertClient {
    fn drop(&mut self) {
        // Closing the queue ends the thread after one last delivery attempt.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// See [`AlertClient::sender`].
#[derive(Clone)]
pub struct AlertSender {
    tx: Option<SyncSender<Transition>>,
    stats: Arc<AlertStats>,
}

impl AlertSender {
    /// Queues a transition (never blocks the detectors: a full queue drops, counted).
    pub fn notify(&self, t: Transition) {
        if let Some(tx) = &self.tx
            && let Err(TrySendError::Full(_)) = tx.try_send(t)
        {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// One finding as an Alertmanager alert.
fn alert(s: &AlertSettings, f: &Finding, ends: SystemTime) -> Value {
    let mut labels: BTreeMap<String, String> = s.labels.clone();
    labels.insert("alertname".into(), f.kind.alert_name());
    labels.insert("severity".into(), f.severity.name().into());
    labels.insert("node".into(), s.node.clone());
    labels.insert("instance".into(), s.instance.clone());
    labels.insert("kind".into(), f.kind.name().into());
    if let (Some(pid), Some(name)) = (&f.pid, &f.name) {
        labels.insert("pid".into(), pid.clone());
        if !name.is_empty() {
            labels.insert("name".into(), name.clone());
        }
    }
    // An ETS table's alert is one per table: its id tells two tables of one name apart.
    if let Some(t) = &f.table {
        labels.insert("table".into(), t.name.clone());
        labels.insert("table_id".into(), t.id.clone());
    }
    if let Some(p) = &f.port {
        labels.insert("port".into(), p.id.clone());
        labels.insert("port_name".into(), p.name.chars().take(64).collect());
    }
    let description: Vec<String> = f.evidence.iter().map(|e| format!("{}: {}", e.what, e.value)).collect();
    let mut annotations = json!({ "summary": f.summary, "description": description.join("\n") });
    if let Some(path) = &f.recording {
        annotations["recording"] = json!(path);
    }
    json!({
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(f.firing_since.unwrap_or(f.first_seen)),
        "endsAt": rfc3339(ends),
        "generatorURL": format!("http://{}/api/findings/{}", s.instance, f.id),
    })
}

fn deliver(s: AlertSettings, rx: Receiver<Transition>, stats: &AlertStats) {
    // Active findings, and resolved ones (with when) not delivered yet.
    let mut active: BTreeMap<u64, Finding> = BTreeMap::new();
    let mut resolved: BTreeMap<u64, (Finding, SystemTime)> = BTreeMap::new();
    let mut due = Instant::now();
    let mut backoff = Duration::from_secs(1);
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
    loop {
        let wait = due.saturating_duration_since(Instant::now());
        let closed = match rx.recv_timeout(wait) {
            Ok(t) => {
                match t {
                    Transition::Fired(f) | Transition::Updated(f) => {
                        if active.len() < MAX_ALERTS || active.contains_key(&f.id) {
                            active.insert(f.id, f);
                        } else {
                            stats.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Transition::Resolved(f) => {
                        active.remove(&f.id);
                        let at = f.resolved_at.unwrap_or_else(SystemTime::now);
                        if resolved.len() < MAX_ALERTS {
                            resolved.insert(f.id, (f, at));
                        } else {
                            stats.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                // A change goes out at once (unless backing off after a failure).
                if backoff <= Duration::from_secs(1) {
                    due = Instant::now();
                }
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        stats.pending.store((active.len() + resolved.len()) as u64, Ordering::Relaxed);
        if (Instant::now() >= due || closed) && !(active.is_empty() && resolved.is_empty()) {
            let now = SystemTime::now();
            // Active alerts end three resends from now unless heard of again.
            let ends = now + s.resend * 3;
            let body: Vec<Value> =
                active.values().map(|f| alert(&s, f, ends)).chain(resolved.values().map(|(f, at)| alert(&s, f, *at))).collect();
            let ok = !s.urls.is_empty()
                && s.urls.iter().all(|u| {
                    let url = format!("{}/api/v2/alerts", u.trim_end_matches('/'));
                    agent.post(&url).send_json(Value::Array(body.clone())).is_ok()
                });
            if ok {
                stats.posts.fetch_add(1, Ordering::Relaxed);
                resolved.clear();
                backoff = Duration::from_secs(1);
                due = Instant::now() + s.resend;
            } else {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                due = Instant::now() + backoff;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
            stats.pending.store((active.len() + resolved.len()) as u64, Ordering::Relaxed);
        } else if Instant::now() >= due {
            due = Instant::now() + s.resend;
        }
        if closed {
            return;
        }
    }
}
