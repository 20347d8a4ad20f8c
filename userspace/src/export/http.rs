//! The HTTP endpoint: `/metrics` for Prometheus, `/api/processes` and `/api/pairs` as JSON for
//! scripts (and the tests), `/` as a short index. Bound to loopback unless told otherwise.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use beam_probes::BeamTarget;
use serde::Serialize;

use crate::aggregate::counts::ProcessStats;
use crate::source::probes::Shared;
use crate::export::metrics::{self, BuildLabels, ScrapeInput};
use crate::enrich::names::NameCache;
use crate::source::procstat;
use std::sync::atomic::Ordering;

pub struct App {
    pub target: Arc<BeamTarget>,
    pub shared: Arc<Shared>,
    pub names: Mutex<NameCache>,
    pub build: BuildLabels,
    /// Torn records over all snapshots taken for scrapes.
    pub snapshot_torn: Mutex<u64>,
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(scrape))
        .route("/api/processes", get(processes))
        .route("/api/pairs", get(pairs))
        .with_state(app)
}

async fn index() -> &'static str {
    "scope-probe\n\n/metrics        Prometheus metrics\n/api/processes  per-process counters (JSON)\n/api/pairs      per sender/receiver pair message counts (JSON)\n"
}

async fn scrape(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    // Prometheus asks for OpenMetrics; everything else gets the classic text format.
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let body = tokio::task::spawn_blocking(move || {
        // Read the process table before taking the aggregator lock: it is the slow part.
        let snapshot = beam_probes::snapshot::snapshot(&app.target.process_table()).ok();
        let snapshot_torn_total = {
            let mut t = app.snapshot_torn.lock().unwrap_or_else(|e| e.into_inner());
            *t += snapshot.as_ref().map_or(0, |s| s.torn);
            *t
        };
        let scheduler_cpu = procstat::scheduler_cpu(app.target.pid, &app.target.table.threads);
        let resident_bytes = procstat::resident_bytes(app.target.pid);
        let sampler_lost = app.shared.sampler.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|s| {
            (s.lost_ring_buffer.load(Ordering::Relaxed), s.lost_channel.load(Ordering::Relaxed))
        });
        let cpu = app.shared.cpu.lock().unwrap_or_else(|e| e.into_inner());
        let attached = app.target.is_alive();
        let health = app.shared.health.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut names = app.names.lock().unwrap_or_else(|e| e.into_inner());
        let agg = app.shared.agg.lock().unwrap_or_else(|e| e.into_inner());
        let target = &app.target;
        // Unregistered processes are named by their label or initial call where the
        // snapshot has them; processes gone since fall back to their registered name.
        let identities: std::collections::HashMap<u64, &str> = snapshot
            .iter()
            .flat_map(|s| &s.processes)
            .filter_map(|p| p.identity().map(|id| (p.term, id)))
            .collect();
        let mut label = |pid: u64| {
            let name = identities.get(&pid).map(|n| n.to_string()).unwrap_or_else(|| names.registered_name(target, pid));
            (target.format_pid(pid), name)
        };
        metrics::render(
            &agg,
            ScrapeInput {
                build: &app.build,
                cpu: &cpu,
                sampler_lost,
                scheduler_cpu: &scheduler_cpu,
                resident_bytes,
                health: &health,
                snapshot: snapshot.as_ref(),
                snapshot_torn_total,
                attached: attached && !health.attached.is_empty(),
                label: &mut label,
            },
        )
    })
    .await
    .unwrap_or_default();
    if openmetrics {
        ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
    } else {
        let body = metrics::to_classic_text(&body);
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
    }
}

#[derive(Serialize)]
struct ProcessRow {
    pid: String,
    name: String,
    #[serde(flatten)]
    stats: ProcessStats,
    parent: Option<String>,
}

async fn processes(State(app): State<Arc<App>>) -> Json<Vec<ProcessRow>> {
    let rows = tokio::task::spawn_blocking(move || {
        let mut names = app.names.lock().unwrap_or_else(|e| e.into_inner());
        let agg = app.shared.agg.lock().unwrap_or_else(|e| e.into_inner());
        let t = &app.target;
        let mut rows: Vec<ProcessRow> = agg
            .processes
            .iter()
            .map(|(pid, s)| ProcessRow {
                pid: t.format_pid(*pid),
                name: if s.exited { String::new() } else { names.registered_name(t, *pid) },
                stats: s.clone(),
                parent: s.parent.map(|p| t.format_pid(p)),
            })
            .collect();
        rows.sort_by(|a, b| a.pid.cmp(&b.pid));
        rows
    })
    .await
    .unwrap_or_default();
    Json(rows)
}

#[derive(Serialize)]
struct PairRow {
    sender: String,
    receiver: String,
    messages: u64,
}

async fn pairs(State(app): State<Arc<App>>) -> Json<Vec<PairRow>> {
    let agg = app.shared.agg.lock().unwrap_or_else(|e| e.into_inner());
    let t = &app.target;
    let rows = agg
        .top_pairs(usize::MAX)
        .into_iter()
        .map(|((from, to), messages)| PairRow { sender: t.format_pid(from), receiver: t.format_pid(to), messages })
        .collect();
    Json(rows)
}
