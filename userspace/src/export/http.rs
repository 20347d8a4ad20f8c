//! The HTTP endpoint: `/metrics` for Prometheus, `/api/processes` and `/api/pairs` as JSON for
//! scripts (and the tests), `/` as a short index. Bound to loopback unless told otherwise.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::aggregate::counts::ProcessStats;
use crate::aggregate::{self, lock};
use crate::control::adaptive::ControlState;
use crate::export::alertmanager::AlertStats;
use crate::export::PidNames;
use crate::export::metrics::{self, BuildLabels, ScrapeInput};

pub struct App {
    pub state: aggregate::State,
    pub control: Arc<std::sync::Mutex<ControlState>>,
    pub alerts: Option<Arc<AlertStats>>,
    pub recording: Option<crate::record::RecordingStats>,
    pub names: Arc<dyn PidNames>,
    pub build: BuildLabels,
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(scrape))
        .route("/api/processes", get(processes))
        .route("/api/pairs", get(pairs))
        .route("/api/findings", get(findings))
        .route("/api/findings/{id}", get(finding))
        .with_state(app)
}

async fn index() -> &'static str {
    "scope-probe\n\n/metrics           Prometheus metrics\n/api/processes     per-process counters (JSON)\n/api/pairs         per sender/receiver pair message counts (JSON)\n/api/findings      the detectors' active and recent findings, with their evidence (JSON)\n/api/findings/ID   one finding\n"
}

#[derive(Serialize)]
struct FindingsBody {
    active: Vec<crate::detect::Finding>,
    recent: Vec<crate::detect::Finding>,
}

async fn findings(State(app): State<Arc<App>>) -> Json<FindingsBody> {
    let f = lock(&app.state.findings);
    Json(FindingsBody { active: f.active().cloned().collect(), recent: f.recent().cloned().collect() })
}

async fn finding(State(app): State<Arc<App>>, axum::extract::Path(id): axum::extract::Path<u64>) -> Response {
    match lock(&app.state.findings).get(id) {
        Some(f) => Json(f.clone()).into_response(),
        None => (axum::http::StatusCode::NOT_FOUND, format!("no finding {id}\n")).into_response(),
    }
}

async fn scrape(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    // Prometheus asks for OpenMetrics; everything else gets the classic text format.
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let body = tokio::task::spawn_blocking(move || {
        let st = &app.state;
        // The table's lock is not held while rendering: naming pids reads it too.
        let table = lock(&st.table).clone();
        let cpu = lock(&st.cpu);
        let health = lock(&st.health).clone();
        let attached = table.proc.as_ref().is_some_and(|p| p.alive);
        let control = lock(&app.control).clone();
        let findings = lock(&st.findings);
        let agg = lock(&st.counts);
        metrics::render(
            &agg,
            ScrapeInput {
                build: &app.build,
                cpu: &cpu,
                table: &table,
                health: &health,
                control: &control,
                findings: &findings,
                alerts: app.alerts.as_deref(),
                recording: app.recording.as_ref(),
                attached,
                names: &*app.names,
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
        let agg = lock(&app.state.counts);
        let n = &app.names;
        let mut rows: Vec<ProcessRow> = agg
            .processes
            .iter()
            .map(|(pid, s)| ProcessRow {
                pid: n.pid(*pid),
                name: if s.exited { String::new() } else { n.name(*pid) },
                stats: s.clone(),
                parent: s.parent.map(|p| n.pid(p)),
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
    let agg = lock(&app.state.counts);
    let n = &app.names;
    let rows = agg
        .top_pairs(usize::MAX)
        .into_iter()
        .map(|((from, to), messages)| PairRow { sender: n.pid(from), receiver: n.pid(to), messages })
        .collect();
    Json(rows)
}
