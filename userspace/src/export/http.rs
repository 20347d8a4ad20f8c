//! The HTTP endpoint: `/metrics` for Prometheus, `/api/processes` and `/api/pairs` as JSON for
//! scripts (and the tests), `/` as a short index. Bound to loopback unless told otherwise. One
//! endpoint serves every observed VM; each series and row names its VM (node, OS pid).

use std::sync::Arc;
use std::time::{Duration, Instant};

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
use crate::export::metrics::{self, BuildLabels, ScrapeInput, VmLabels};

/// What the endpoint knows of one observed VM.
pub struct App {
    pub vm: VmLabels,
    pub state: aggregate::State,
    pub control: Arc<std::sync::Mutex<ControlState>>,
    pub alerts: Option<Arc<AlertStats>>,
    pub recording: Option<crate::record::RecordingStats>,
    pub names: Arc<dyn PidNames>,
    pub build: BuildLabels,
}

/// The VMs the endpoint serves, as sessions start and stop, and those that stopped lately.
#[derive(Default)]
pub struct Vms {
    live: std::sync::RwLock<Vec<Arc<App>>>,
    gone: std::sync::Mutex<std::collections::VecDeque<(VmLabels, Instant)>>,
}

/// A VM that stopped reads `scope_probe_attached 0` this long (long enough for an alert's `for`
/// and a few scrapes), and at most this many are kept (VMs that come and go under `--all`).
const GONE_FOR: Duration = Duration::from_secs(600);
const GONE_MAX: usize = 32;

impl Vms {
    pub fn add(&self, app: Arc<App>) {
        // A new VM with a stopped one's pid (reused) is that pid's only series.
        lock(&self.gone).retain(|(vm, _)| vm.os_pid != app.vm.os_pid);
        self.live.write().unwrap_or_else(|e| e.into_inner()).push(app);
    }

    /// Takes the VM off the endpoint; its `scope_probe_attached` reads 0 for a while.
    pub fn remove(&self, os_pid: u32) {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        if let Some(app) = live.iter().find(|a| a.vm.os_pid == os_pid) {
            let mut gone = lock(&self.gone);
            if gone.len() == GONE_MAX {
                gone.pop_front();
            }
            gone.push_back((app.vm.clone(), Instant::now()));
        }
        live.retain(|a| a.vm.os_pid != os_pid);
    }

    fn list(&self) -> Vec<Arc<App>> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn gone(&self) -> Vec<VmLabels> {
        let mut gone = lock(&self.gone);
        gone.retain(|(_, at)| at.elapsed() < GONE_FOR);
        gone.iter().map(|(vm, _)| vm.clone()).collect()
    }
}

pub fn router(app: Arc<Vms>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(scrape))
        .route("/api/processes", get(processes))
        .route("/api/pairs", get(pairs))
        .route("/api/calls", get(calls))
        .route("/api/requests", get(requests))
        .route("/api/table", get(table))
        .route("/flamegraph.svg", get(flamegraph))
        .route("/flow.svg", get(flow))
        .route("/api/findings", get(findings))
        .route("/api/findings/{id}", get(finding))
        .with_state(app)
}

/// The live dashboard for a browser (it asks for HTML), the list of endpoints for others.
async fn index(headers: HeaderMap) -> Response {
    let html = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    if html {
        return axum::response::Html(DASHBOARD).into_response();
    }
    ENDPOINTS.into_response()
}

/// The dashboard: one self-contained page (no external script, style or font) that reads the
/// endpoints below every two seconds.
const DASHBOARD: &str = include_str!("dashboard.html");

const ENDPOINTS: &str = "scope-probe\n\n/                  the live dashboard (in a browser)\n/metrics           Prometheus metrics\n/api/processes     per-process counters (JSON)\n/api/pairs         per sender/receiver pair message counts (JSON)\n/api/calls         call latency per server: calls, p50, p99, top callers (JSON)\n/api/requests      request latency per handler, the slowest requests and what they waited on (JSON)\n/api/table         the latest process-table read: busiest processes, supervision tree, ETS tables, ports, memory by kind (JSON)\n/api/findings      the detectors' active and recent findings, with their evidence (JSON)\n/flamegraph.svg    the last minute's CPU samples as a flame graph (open it alone to zoom)\n/flow.svg?os_pid=N who sent to whom since attach, as a graph\n/api/findings/ID   one finding\n";

/// A row of the JSON API with the VM it belongs to.
#[derive(Serialize)]
struct OfVm<T> {
    node: String,
    os_pid: u32,
    #[serde(flatten)]
    row: T,
}

fn of_vm<T>(app: &App, row: T) -> OfVm<T> {
    OfVm { node: app.vm.node.clone(), os_pid: app.vm.os_pid, row }
}

#[derive(Serialize)]
struct FindingsBody {
    active: Vec<OfVm<crate::detect::Finding>>,
    recent: Vec<OfVm<crate::detect::Finding>>,
}

async fn findings(State(vms): State<Arc<Vms>>) -> Json<FindingsBody> {
    let mut body = FindingsBody { active: Vec::new(), recent: Vec::new() };
    for app in vms.list() {
        let f = lock(&app.state.findings);
        body.active.extend(f.active().map(|f| of_vm(&app, f.clone())));
        body.recent.extend(f.recent().map(|f| of_vm(&app, f.clone())));
    }
    Json(body)
}

async fn finding(State(vms): State<Arc<Vms>>, axum::extract::Path(id): axum::extract::Path<u64>) -> Response {
    // Finding ids are unique across the VMs.
    for app in vms.list() {
        if let Some(f) = lock(&app.state.findings).get(id) {
            return Json(of_vm(&app, f.clone())).into_response();
        }
    }
    (axum::http::StatusCode::NOT_FOUND, format!("no finding {id}\n")).into_response()
}

async fn scrape(State(vms): State<Arc<Vms>>, headers: HeaderMap) -> Response {
    // Prometheus asks for OpenMetrics; everything else gets the classic text format.
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let body = tokio::task::spawn_blocking(move || {
        let apps = vms.list();
        let mut renderings: Vec<String> = apps.iter().map(|app| render(app)).collect();
        renderings.extend(vms.gone().iter().map(metrics::render_gone));
        // How many VMs are observed, the one series without a VM's labels (with --all, possibly 0).
        renderings.push(format!(
            "# HELP scope_probe_vms VMs observed now\n# TYPE scope_probe_vms gauge\nscope_probe_vms {}\n# EOF\n",
            apps.len()
        ));
        metrics::merge(&renderings)
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

/// One VM's series.
fn render(app: &App) -> String {
    let st = &app.state;
    // The table's lock is not held while rendering: naming pids reads it too.
    let table = lock(&st.table).clone();
    let cpu = lock(&st.cpu);
    let health = lock(&st.health).clone();
    let attached = table.proc.as_ref().is_some_and(|p| p.alive);
    let control = lock(&app.control).clone();
    let findings = lock(&st.findings);
    let agg = lock(&st.counts);
    let calls = lock(&st.calls);
    metrics::render(
        &agg,
        ScrapeInput {
            vm: &app.vm,
            build: &app.build,
            cpu: &cpu,
            table: &table,
            health: &health,
            control: &control,
            findings: &findings,
            alerts: app.alerts.as_deref(),
            recording: app.recording.as_ref(),
            calls: &calls,
            attached,
            names: &*app.names,
        },
    )
}

#[derive(Serialize)]
struct ProcessRow {
    pid: String,
    name: String,
    #[serde(flatten)]
    stats: ProcessStats,
    parent: Option<String>,
}

async fn processes(State(vms): State<Arc<Vms>>) -> Json<Vec<OfVm<ProcessRow>>> {
    let rows = tokio::task::spawn_blocking(move || {
        let mut all = Vec::new();
        for app in vms.list() {
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
            all.extend(rows.into_iter().map(|r| of_vm(&app, r)));
        }
        all
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
    /// For a pair across nodes: the other node, and whether this VM sent or received (the
    /// remote pid as that node prints it, so both sides of a flow name the same pids).
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    direction: Option<&'static str>,
}

#[derive(Serialize)]
struct CallRow {
    server: String,
    /// The server's name (registered name, label or initial call); "" when not known.
    name: String,
    /// `pool` for pools scope-probe knows (their latency is the wait at checkout).
    role: Option<beam_probes::roles::Role>,
    calls: u64,
    mean_seconds: Option<f64>,
    p50_seconds: Option<f64>,
    p99_seconds: Option<f64>,
    /// For pools: how long callers held what they checked out.
    hold_p50_seconds: Option<f64>,
    hold_p99_seconds: Option<f64>,
    /// (caller, calls), most first.
    top_callers: Vec<(String, u64)>,
}

/// The busiest servers' call latency (see `aggregate::calls` for the method).
async fn calls(State(vms): State<Arc<Vms>>) -> Json<Vec<OfVm<CallRow>>> {
    let mut rows = Vec::new();
    for app in vms.list() {
        let calls = lock(&app.state.calls);
        let n = &app.names;
        let secs = |ns: u64| ns as f64 / 1e9;
        rows.extend(calls.busiest(50).into_iter().map(|(server, s)| {
            let role = n.role(server);
            let latency = s.latency.quantiles(&[0.5, 0.99]);
            let hold = if role == Some(beam_probes::roles::Role::Pool) { s.hold.quantiles(&[0.5, 0.99]) } else { vec![None, None] };
            of_vm(
                &app,
                CallRow {
                    server: n.pid(server),
                    name: n.name(server),
                    role,
                    calls: s.latency.count,
                    mean_seconds: s.latency.mean_ns().map(secs),
                    p50_seconds: latency[0].map(secs),
                    p99_seconds: latency[1].map(secs),
                    hold_p50_seconds: hold[0].map(secs),
                    hold_p99_seconds: hold[1].map(secs),
                    top_callers: s.top_callers(5).into_iter().map(|(c, k)| (n.pid(c), k)).collect(),
                },
            )
        }));
    }
    Json(rows)
}

/// The latest read of a VM's process table: its busiest processes by mailbox and by memory,
/// and its supervision tree.
#[derive(Serialize)]
struct TableView {
    /// Seconds since the read (on the monotonic clock).
    age_seconds: f64,
    processes: usize,
    /// The `TABLE_ROWS` longest mailboxes, then the largest memory, without repeats.
    busiest: Vec<TableRow>,
    supervision: beam_probes::supervision::Tree,
    /// ETS tables, largest first (at most `TABLE_ROWS`), and how many and how much in all.
    ets: crate::enrich::process_view::EtsView,
    ets_tables: usize,
    ets_memory_bytes: u64,
    /// Ports, the fullest queues first (at most `TABLE_ROWS`), and how many in all.
    ports: Vec<beam_probes::ports::PortRecord>,
    port_count: usize,
    /// Memory by kind (`erlang:memory()`'s names and order), empty when not read.
    memory: Vec<MemoryKind>,
}

#[derive(Serialize)]
struct MemoryKind {
    kind: &'static str,
    bytes: u64,
}

#[derive(Serialize)]
struct TableRow {
    pid: String,
    name: Option<String>,
    message_queue_len: u64,
    memory_bytes: u64,
    reductions: u64,
    status: String,
    current: Option<String>,
    system: bool,
}

/// Rows of `/api/table` by mailbox, and as many again by memory.
const TABLE_ROWS: usize = 50;

async fn table(State(vms): State<Arc<Vms>>) -> Json<Vec<OfVm<TableView>>> {
    let rows = tokio::task::spawn_blocking(move || {
        let mut all = Vec::new();
        for app in vms.list() {
            let Some(read) = lock(&app.state.table).latest.clone() else { continue };
            let Some(snap) = &read.snapshot else { continue };
            let ps = &snap.processes;
            let mut order: Vec<usize> = (0..ps.len()).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(ps[i].message_queue_len));
            let mut picked: Vec<usize> = order.iter().copied().take(TABLE_ROWS).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(ps[i].memory_bytes));
            for i in order {
                if picked.len() >= 2 * TABLE_ROWS {
                    break;
                }
                if !picked.contains(&i) {
                    picked.push(i);
                }
            }
            let busiest = picked
                .into_iter()
                .map(|i| {
                    let p = &ps[i];
                    TableRow {
                        pid: p.pid.to_string(),
                        name: p.identity().map(str::to_owned),
                        message_queue_len: p.message_queue_len,
                        memory_bytes: p.memory_bytes,
                        reductions: p.reductions,
                        status: p.status.label().to_owned(),
                        current: read.current.get(i).map(|c| c.to_string()),
                        system: p.system,
                    }
                })
                .collect();
            let mut supervision = beam_probes::supervision::Tree::of_records(ps);
            supervision.trees.retain(|t| !t.system);
            supervision.unsupervised.clear();
            let age_seconds = crate::event::now_ns().saturating_sub(read.ts_ns) as f64 / 1e9;
            let mut ets = match &read.ets {
                Some(e) => crate::enrich::process_view::EtsView::of(e, ps),
                None => crate::enrich::process_view::EtsView::unread("not read".into()),
            };
            let (ets_tables, ets_memory_bytes) = (ets.tables.len(), ets.tables.iter().map(|t| t.table.memory_bytes).sum());
            ets.tables.truncate(TABLE_ROWS);
            let port_count = read.ports.as_ref().map_or(0, |p| p.ports.len());
            let ports = read.ports.as_ref().map(|p| p.ports.iter().take(TABLE_ROWS).cloned().collect()).unwrap_or_default();
            let memory = read.memory.iter().flat_map(|m| m.kinds()).map(|(kind, bytes)| MemoryKind { kind, bytes }).collect();
            all.push(of_vm(
                &app,
                TableView { age_seconds, processes: ps.len(), busiest, supervision, ets, ets_tables, ets_memory_bytes, ports, port_count, memory },
            ));
        }
        all
    })
    .await
    .unwrap_or_default();
    Json(rows)
}

/// The last minute's CPU samples of every VM as a flame graph (inferno's SVG, interactive when
/// opened alone): each VM's node a root frame when there are several, then each process.
async fn flamegraph(State(vms): State<Arc<Vms>>) -> Response {
    let svg = tokio::task::spawn_blocking(move || {
        let apps = vms.list();
        let mut p = crate::aggregate::stacks::Profile::default();
        for app in &apps {
            let stacks = lock(&app.state.cpu).stacks();
            for ((process, frames), n) in stacks {
                let mut all: Vec<Arc<str>> = Vec::with_capacity(frames.len() + 2);
                if apps.len() > 1 {
                    all.push(Arc::from(app.vm.node.as_str()));
                }
                if let Some(pid) = process {
                    // As the report's flame graph names its root frames.
                    all.push(Arc::from(app.names.who(pid)));
                    p.attributed += n;
                }
                all.extend(frames);
                p.samples += n;
                *p.stacks.entry(all).or_default() += n;
            }
        }
        let nodes: Vec<&str> = apps.iter().map(|a| a.vm.node.as_str()).collect();
        p.title = format!("CPU of {}, the last minute", nodes.join(", "));
        p.notes.push("each process is a root frame; click to zoom when opened alone".into());
        let mut out = Vec::new();
        crate::export::flamegraph::write(&p, &mut out).map(|()| out)
    })
    .await;
    match svg {
        Ok(Ok(svg)) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
        // Still an image (the dashboard shows it as one), saying why there is no graph.
        Ok(Err(e)) => ([(header::CONTENT_TYPE, "image/svg+xml")], message_svg(&format!("{e:#}"))).into_response(),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// An image that says why there is no graph (the dashboard shows the graphs as images).
fn message_svg(text: &str) -> String {
    let text = text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1200\" height=\"40\"><text x=\"10\" y=\"25\" font-family=\"sans-serif\" font-size=\"14\">{text}</text></svg>"
    )
}

/// Who sent to whom in one VM (`?os_pid=`, else the first) since attach, as counted by the
/// send hook (in adaptive mode, in its windows): the report's message-flow drawing, alone.
async fn flow(State(vms): State<Arc<Vms>>, axum::extract::RawQuery(q): axum::extract::RawQuery) -> Response {
    let os_pid: Option<u32> = q.as_deref().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("os_pid="))).and_then(|v| v.parse().ok());
    let apps = vms.list();
    let Some(app) = apps.iter().find(|a| os_pid.is_none_or(|p| p == a.vm.os_pid)).cloned() else {
        return (axum::http::StatusCode::NOT_FOUND, "no such VM\n").into_response();
    };
    let svg = tokio::task::spawn_blocking(move || {
        let counts = lock(&app.state.counts).pairs.clone();
        let g = crate::export::report::flow::graph_of(counts);
        // Rates per second the send hook was attached: adaptive windows, or since it was attached.
        let send = beam_probes::Capability::Send.index();
        let mut observed = lock(&app.control).observed_seconds[send];
        if observed <= 0.0 {
            let h = lock(&app.state.health);
            if let (Some(at), None) = (h.attached_at[send], h.detached_at[send]) {
                observed = at.elapsed().as_secs_f64();
            }
        }
        let rate = |n: u64| if observed > 0.0 { n as f64 / observed } else { 0.0 };
        let n = &app.names;
        let names = |pid: u64| {
            let name = n.name(pid);
            (if name.is_empty() { n.pid(pid) } else { name }, n.who(pid))
        };
        if g.edges.is_empty() {
            return message_svg("no message between processes seen yet (the send hook attaches in windows in adaptive mode)");
        }
        crate::export::report::flow::svg(&g, &rate, &names, &|pid| n.pid(pid))
    })
    .await
    .unwrap_or_default();
    ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()
}

/// Request latency by handler and the slowest requests (see `aggregate::requests`).
async fn requests(State(vms): State<Arc<Vms>>) -> Json<Vec<OfVm<crate::export::requests::RequestsView>>> {
    let mut rows = Vec::new();
    for app in vms.list() {
        let calls = lock(&app.state.calls);
        let n = &app.names;
        rows.push(of_vm(&app, crate::export::requests::RequestsView::new(&calls.requests, 50, &|p| n.pid(p), &|p| n.name(p))));
    }
    Json(rows)
}

async fn pairs(State(vms): State<Arc<Vms>>) -> Json<Vec<OfVm<PairRow>>> {
    let mut rows = Vec::new();
    for app in vms.list() {
        let agg = lock(&app.state.counts);
        let n = &app.names;
        rows.extend(agg.top_pairs(usize::MAX).into_iter().map(|((from, to), messages)| {
            of_vm(&app, PairRow { sender: n.pid(from), receiver: n.pid(to), messages, peer: None, direction: None })
        }));
        for ((local, node, remote), messages) in &agg.dist_sent {
            let (sender, receiver, peer) = (n.pid(*local), remote.to_string(), Some(n.node(*node)));
            rows.push(of_vm(&app, PairRow { sender, receiver, messages: *messages, peer, direction: Some("sent") }));
        }
        for ((local, node, remote), messages) in &agg.dist_received {
            let (sender, receiver, peer) = (remote.to_string(), n.pid(*local), Some(n.node(*node)));
            rows.push(of_vm(&app, PairRow { sender, receiver, messages: *messages, peer, direction: Some("received") }));
        }
    }
    Json(rows)
}
