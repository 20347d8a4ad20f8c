//! The Prometheus exposition: built at each scrape from the aggregated state (counts, the CPU
//! window, the latest process-table read, the probes' health). Metric names are the public
//! interface (README lists them): keep them stable.

use beam_probes::Capability;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::aggregate::calls::{BUCKETS, Calls, Durations};
use crate::aggregate::counts::Aggregator;
use crate::aggregate::cpu::CpuWindow;
use crate::aggregate::health::Health;
use crate::aggregate::table::TableState;
use crate::control::adaptive::ControlState;
use crate::control::mode::Mode;
use crate::detect::{Findings, Kind, State};
use crate::export::alertmanager::AlertStats;
use crate::export::PidNames;
use beam_probes::roles::Role;
use beam_probes::ets::{EtsSnapshot, EtsTable};
use beam_probes::ports::PortSnapshot;
use beam_probes::snapshot::{ProcessRecord, Snapshot};
use std::sync::atomic::Ordering;

/// How many series the top-N families carry. Fixed, so cardinality is bounded.
pub const TOP_N: usize = 10;

type Labels = Vec<(String, String)>;

/// Facts fixed for the run, shown in `scope_probe_build_info`.
pub struct BuildLabels {
    pub otp_release: String,
    pub erts_version: String,
    pub source: &'static str,
    pub build: &'static str,
    pub mode: &'static str,
}

/// Which VM a scrape's series belong to: every series carries these labels, so one endpoint
/// serves several VMs (`--pid A --pid B`, `--all`) and Prometheus tells nodes apart.
#[derive(Debug, Clone)]
pub struct VmLabels {
    /// The node name (`a@host`, `nonode@nohost` when not distributed).
    pub node: String,
    pub os_pid: u32,
}

/// Everything a scrape needs besides the aggregator.
pub struct ScrapeInput<'a> {
    pub vm: &'a VmLabels,
    pub build: &'a BuildLabels,
    pub cpu: &'a CpuWindow,
    pub table: &'a TableState,
    pub health: &'a Health,
    pub control: &'a ControlState,
    pub findings: &'a Findings,
    pub alerts: Option<&'a AlertStats>,
    /// The recorder's counts, when a recording or the flight recorder runs.
    pub recording: Option<&'a crate::record::RecordingStats>,
    /// Calls paired from sends, per server.
    pub calls: &'a crate::aggregate::calls::Calls,
    /// Whether scope-probe observes a live VM.
    pub attached: bool,
    pub names: &'a dyn PidNames,
}

fn counter(registry: &mut Registry, name: &str, help: &str, v: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(v);
    registry.register(name, help, c);
}

fn counter_f64(registry: &mut Registry, name: &str, help: &str, v: f64) {
    let c = Counter::<f64, AtomicU64>::default();
    c.inc_by(v);
    registry.register(name, help, c);
}

const ATTACHED_HELP: &str = "Whether scope-probe is attached to the VM";

/// The one series of a VM that stopped while observed under `--all`: attached 0 (its other
/// series are gone), so that `scope_probe_attached == 0` fires rather than a series going absent.
pub fn render_gone(vm: &VmLabels) -> String {
    let labels = [("node".into(), vm.node.clone().into()), ("os_pid".into(), vm.os_pid.to_string().into())];
    let mut r = Registry::with_labels(labels.into_iter());
    gauge(&mut r, "scope_probe_attached", ATTACHED_HELP, 0);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

fn gauge(registry: &mut Registry, name: &str, help: &str, v: i64) {
    let g = Gauge::<i64>::default();
    g.set(v);
    registry.register(name, help, g);
}

pub fn render(agg: &Aggregator, input: ScrapeInput<'_>) -> String {
    let vm = [("node".into(), input.vm.node.clone().into()), ("os_pid".into(), input.vm.os_pid.to_string().into())];
    let mut r = Registry::with_labels(vm.into_iter());
    let label = |pid: u64| (input.names.pid(pid), input.names.name(pid));
    let latest = input.table.latest.as_deref();
    let sampler_lost = input.health.sampler.as_ref().map(|s| {
        (s.lost_ring_buffer.load(Ordering::Relaxed), s.lost_channel.load(Ordering::Relaxed))
    });
    let t = &agg.totals;
    // Prometheus-client appends `_total` to counters.
    counter(&mut r, "beam_messages_sent", "Local process-to-process messages sent", t.sends);
    counter(&mut r, "beam_process_spawns", "Processes spawned", t.spawns);
    counter(&mut r, "beam_process_exits", "Processes that exited (left the process table)", t.exits);
    counter(&mut r, "beam_garbage_collections", "Garbage collections (collector invocations)", t.gcs);
    r.register("beam_garbage_collection_seconds", "Duration of garbage collections", agg.gc_seconds.clone());
    counter(&mut r, "beam_process_schedules", "Times a process was scheduled in and out again", t.schedules);
    counter_f64(
        &mut r,
        "beam_process_run_seconds",
        "Time processes spent scheduled in (on a scheduler)",
        t.run_ns as f64 / 1e9,
    );
    if let Some(snap) = latest.and_then(|l| l.snapshot.as_ref()) {
        render_snapshot(&mut r, snap, &label);
    }
    if let Some(ports) = latest.and_then(|l| l.ports.as_ref()) {
        render_ports(&mut r, ports, &label);
    }
    if let Some(memory) = latest.and_then(|l| l.memory.as_ref()) {
        render_memory(&mut r, memory);
    }
    if let Some(ets) = latest.and_then(|l| l.ets.as_ref()) {
        let procs = latest.and_then(|l| l.snapshot.as_ref()).map_or(&[][..], |s| &s.processes[..]);
        render_ets(&mut r, ets, procs, &label);
    }
    render_calls(&mut r, input.calls, input.names);

    let top_sent = Family::<Labels, Counter>::default();
    for (pid, sent) in agg.top_processes(TOP_N, |p| p.sent) {
        let (pid, name) = label(pid);
        top_sent.get_or_create(&vec![("pid".into(), pid), ("name".into(), name)]).inc_by(sent);
    }
    r.register(
        "beam_top_process_messages_sent",
        "Messages sent by the busiest senders (top 10 since attach)",
        top_sent,
    );
    let top_pairs = Family::<Labels, Counter>::default();
    for ((from, to), n) in agg.top_pairs(TOP_N) {
        let (from, from_name) = label(from);
        let (to, to_name) = label(to);
        top_pairs
            .get_or_create(&vec![
                ("sender".into(), from),
                ("sender_name".into(), from_name),
                ("receiver".into(), to),
                ("receiver_name".into(), to_name),
            ])
            .inc_by(n);
    }
    r.register(
        "beam_top_pair_messages_sent",
        "Messages between the busiest sender/receiver pairs (top 10 since attach)",
        top_pairs,
    );
    // Erlang distribution: messages to and from each other node (peer), counted on this side.
    for (name, help, pairs) in [
        ("beam_distribution_messages_sent", "Messages sent to processes of another node (peer)", &agg.dist_sent),
        ("beam_distribution_messages_received", "Messages received from processes of another node (peer)", &agg.dist_received),
    ] {
        let mut by_peer: std::collections::BTreeMap<u64, u64> = Default::default();
        for ((_, node, _), n) in pairs {
            *by_peer.entry(*node).or_default() += n;
        }
        let family = Family::<Labels, Counter>::default();
        for (node, n) in by_peer {
            family.get_or_create(&vec![("peer".into(), input.names.node(node))]).inc_by(n);
        }
        r.register(name, help, family);
    }
    let top_run = Family::<Labels, Counter<f64, AtomicU64>>::default();
    for (pid, ns) in agg.top_processes(TOP_N, |p| p.run_ns) {
        let (pid, name) = label(pid);
        top_run.get_or_create(&vec![("pid".into(), pid), ("name".into(), name)]).inc_by(ns as f64 / 1e9);
    }
    r.register(
        "beam_top_process_run_seconds",
        "Scheduled-in time of the busiest processes (top 10 since attach)",
        top_run,
    );

    // CPU: /proc per scheduler thread, RSS, and the sampler's one-minute window.
    let sched = Family::<Labels, Counter<f64, AtomicU64>>::default();
    let proc = input.table.proc.as_ref();
    for ((kind, n), secs) in proc.map(|p| &p.scheduler_cpu).into_iter().flatten() {
        let scheduler = n.map(|n| n.to_string()).unwrap_or_default();
        sched.get_or_create(&vec![("type".into(), kind.label().into()), ("scheduler".into(), scheduler)]).inc_by(*secs);
    }
    r.register(
        "beam_scheduler_cpu_seconds",
        "CPU time of the VM's threads by scheduler type (normal, dirty_cpu, dirty_io; other threads summed)",
        sched,
    );
    let runq = Family::<Labels, Gauge>::default();
    for (i, len) in proc.map(|p| &p.run_queues).into_iter().flatten().enumerate() {
        runq.get_or_create(&vec![("queue".into(), (i + 1).to_string())]).set(i64::from(*len));
    }
    r.register(
        "beam_run_queue_length",
        "Processes and ports waiting to run in each normal scheduler's run queue (read every second)",
        runq,
    );
    if let Some(rss) = proc.and_then(|p| p.resident_bytes) {
        gauge(&mut r, "beam_memory_resident_bytes", "Resident memory of the VM", rss as i64);
    }
    if sampler_lost.is_some() {
        counter(&mut r, "beam_cpu_samples", "CPU samples taken of the VM's threads", input.cpu.samples_total);
        let funcs = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for ((mfa, native), share) in input.cpu.top_functions(TOP_N) {
            let native = native.map(|n| n.to_string()).unwrap_or_default();
            funcs.get_or_create(&vec![("mfa".into(), mfa.to_string()), ("native".into(), native)]).set(share);
        }
        r.register(
            "beam_top_function_cpu_ratio",
            "Share of the last minute's CPU samples in this Erlang function (mfa; or what the thread was doing) and \
             C function (native, when the sample was in C code on its behalf) (top 10)",
            funcs,
        );
        let procs = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for (pid, share) in input.cpu.top_processes(TOP_N) {
            let (pid, name) = label(pid);
            procs.get_or_create(&vec![("pid".into(), pid), ("name".into(), name)]).set(share);
        }
        r.register(
            "beam_top_process_cpu_ratio",
            "Share of the last minute's CPU samples spent running this Erlang process (top 10)",
            procs,
        );
    }

    // The probe's own health.
    let events = Family::<Labels, Counter>::default();
    for (kind, n) in Capability::ALL.iter().zip(agg.events_by_kind) {
        events.get_or_create(&vec![("kind".into(), kind.name().into())]).inc_by(n);
    }
    r.register("scope_probe_events", "Events received from the probes", events);
    let lost = Family::<Labels, Counter>::default();
    let sampler_losses = [
        ("samples_ring_buffer_full", sampler_lost.map_or(0, |l| l.0)),
        ("samples_consumer_behind", sampler_lost.map_or(0, |l| l.1)),
    ];
    for (reason, n) in input.health.lost.iter().copied().chain(sampler_losses) {
        lost.get_or_create(&vec![("reason".into(), reason.into())]).inc_by(n);
    }
    r.register("scope_probe_events_lost", "Events lost before aggregation, by reason", lost);
    let hits = Family::<Labels, Counter>::default();
    for &(hook, n) in &input.health.hits {
        hits.get_or_create(&vec![("hook".into(), hook.into())]).inc_by(n);
    }
    r.register("scope_probe_probe_hits", "Probe hits in the observed VM, by hook (each costs VM time)", hits);
    let evicted = Family::<Labels, Counter>::default();
    for (table, n) in [("processes", agg.evictions.processes), ("pairs", agg.evictions.pairs)] {
        evicted.get_or_create(&vec![("table".into(), table.into())]).inc_by(n);
    }
    r.register("scope_probe_evictions", "Entries evicted from bounded aggregation tables", evicted);
    let hooks = Family::<Labels, Gauge>::default();
    for cap in Capability::ALL {
        hooks.get_or_create(&vec![("hook".into(), cap.name().into())]).set(i64::from(input.health.attached.contains(&cap)));
    }
    r.register("scope_probe_hook_attached", "Whether each per-event hook is attached (1) or not (0)", hooks);
    gauge(&mut r, "scope_probe_attached", ATTACHED_HELP, i64::from(input.attached));
    // A gauge fixed at 1 (not an OpenMetrics info metric): Prometheus' classic text parser and
    // promtool reject the `info` type.
    let b = input.build;
    let build = Family::<Labels, Gauge>::default();
    build
        .get_or_create(&vec![
            ("otp_release".into(), b.otp_release.clone()),
            ("erts_version".into(), b.erts_version.clone()),
            ("source".into(), b.source.into()),
            ("build".into(), b.build.into()),
            ("mode".into(), b.mode.into()),
        ])
        .set(1);
    r.register("scope_probe_build_info", "The observed VM's build and how scope-probe observes it", build);
    let sources = Family::<Labels, Gauge>::default();
    for plan in &input.health.plans {
        sources
            .get_or_create(&vec![
                ("capability".into(), plan.capability.name().into()),
                ("source".into(), plan.source.label().into()),
                ("reason".into(), plan.code.into()),
            ])
            .set(1);
    }
    r.register(
        "scope_probe_capability_source",
        "Where each capability's events come from (uprobe or usdt) and why, always 1",
        sources,
    );

    render_control(&mut r, input.control);
    render_findings(&mut r, input.findings, input.alerts);
    if let Some(rec) = input.recording {
        render_recording(&mut r, rec);
    }
    counter(
        &mut r,
        "scope_probe_snapshot_torn_records",
        "Process records skipped because they changed while being read",
        input.table.torn_total,
    );
    counter(&mut r, "scope_probe_ets_torn_tables", "ETS tables skipped because they changed while being read", input.table.ets_torn_total);
    counter(&mut r, "scope_probe_ports_torn", "Ports skipped because they changed while being read", input.table.ports_torn_total);

    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

/// Servers with call latency exported: the most called.
const TOP_SERVERS: usize = 20;

/// Call latency of the most called servers, and pools' hold times: histograms since attach,
/// made from counts kept in `aggregate::calls` (the series of a server that leaves the top
/// goes, as the other top-N series do).
#[derive(Debug)]
struct CallHistograms {
    families: Vec<HistogramFamily>,
}

/// A metric's name, help and series.
type HistogramFamily = (&'static str, &'static str, Vec<(Labels, HistogramCounts)>);

/// What a histogram series is encoded from: copied out of [`Durations`] at the scrape, without
/// the latest durations it keeps for quantiles.
#[derive(Debug)]
struct HistogramCounts {
    count: u64,
    sum_seconds: f64,
    buckets: [u64; BUCKETS.len() + 1],
}

impl From<&Durations> for HistogramCounts {
    fn from(d: &Durations) -> Self {
        HistogramCounts { count: d.count, sum_seconds: d.total_ns as f64 / 1e9, buckets: d.buckets }
    }
}

impl Collector for CallHistograms {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, series) in &self.families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (labels, d) in series {
                let mut buckets: Vec<(f64, u64)> = BUCKETS.iter().copied().zip(d.buckets.iter().copied()).collect();
                buckets.push((f64::INFINITY, d.buckets[BUCKETS.len()]));
                family.encode_family(labels)?.encode_histogram::<NoLabelSet>(d.sum_seconds, d.count, &buckets, None)?;
            }
        }
        Ok(())
    }
}

fn render_calls(r: &mut Registry, calls: &Calls, names: &dyn PidNames) {
    let (mut latency, mut hold) = (Vec::new(), Vec::new());
    for (server, s) in calls.busiest(TOP_SERVERS) {
        let labels: Labels = vec![("server".into(), names.pid(server)), ("name".into(), names.name(server))];
        if names.role(server) == Some(Role::Pool) && s.hold.count > 0 {
            hold.push((labels.clone(), HistogramCounts::from(&s.hold)));
        }
        latency.push((labels, HistogramCounts::from(&s.latency)));
    }
    let requests = calls
        .requests
        .busiest(TOP_SERVERS)
        .into_iter()
        .map(|(handler, d)| (vec![("handler".into(), handler.to_string())], HistogramCounts::from(d)))
        .collect();
    r.register_collector(Box::new(CallHistograms {
        families: vec![
            (
                "beam_top_server_call_duration_seconds",
                "How long callers of the most called servers waited for their answer (request to reply, paired from sends)",
                latency,
            ),
            ("beam_top_pool_hold_duration_seconds", "How long callers held what they checked out of a pool (its answer to their next message to it)", hold),
            (
                "beam_request_duration_seconds",
                "How long requests took, by handler (the initial call of the processes that serve them), from request processes' spans",
                requests,
            ),
        ],
    }));
    counter(r, "beam_calls_dropped", "Requests and servers forgotten to keep call pairing bounded", calls.dropped);
    counter(
        r,
        "beam_calls_unpaired_replies",
        "Replies to an alias whose request was not seen (sent before the send hooks were attached)",
        calls.unpaired_replies,
    );
    counter(r, "beam_requests_dropped", "Request processes and handlers not followed to keep request timing bounded", calls.requests.dropped);
}

/// The recorder: what it wrote and dropped; the flight recorder's disk and kept recordings.
fn render_recording(r: &mut Registry, rec: &crate::record::RecordingStats) {
    let w = &rec.writer;
    counter(r, "scope_probe_recording_entries", "Entries written to the recording", w.entries.load(Ordering::Relaxed));
    counter(r, "scope_probe_recording_bytes", "Bytes written to the recording (compressed)", w.bytes.load(Ordering::Relaxed));
    counter(
        r,
        "scope_probe_recording_dropped",
        "Entries dropped because the recording's writer queue was full (counted in the file too)",
        w.dropped.load(Ordering::Relaxed),
    );
    if let Some(f) = &rec.flight {
        gauge(r, "scope_probe_flight_segment_bytes", "Bytes the flight recorder's segments take on disk", f.segment_bytes.load(Ordering::Relaxed) as i64);
        counter(r, "scope_probe_flight_kept", "Recordings the flight recorder kept around findings", f.kept.load(Ordering::Relaxed));
        counter(r, "scope_probe_flight_errors", "Flight recorder errors (rotating, keeping; said on stderr)", f.errors.load(Ordering::Relaxed));
    }
}

/// The detectors' findings (always one series per kind, 0 when quiet) and the alerts' delivery.
fn render_findings(r: &mut Registry, f: &Findings, alerts: Option<&AlertStats>) {
    let active = Family::<Labels, Gauge>::default();
    for kind in Kind::ALL {
        let n = f.firing().filter(|x| x.kind == kind).count();
        active.get_or_create(&vec![("kind".into(), kind.name().into())]).set(n as i64);
    }
    r.register("beam_findings", "Findings firing now, per kind", active);
    let each = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for x in f.active().filter(|x| x.state == State::Firing) {
        each.get_or_create(&vec![
            ("kind".into(), x.kind.name().into()),
            ("severity".into(), x.severity.name().into()),
            ("pid".into(), x.pid.clone().unwrap_or_default()),
            ("name".into(), x.name.clone().unwrap_or_default()),
            ("id".into(), x.id.to_string()),
        ])
        .set(x.value);
    }
    r.register(
        "beam_finding_value",
        "Each firing finding's measured value (queue length, bytes, share...); at most 200 series",
        each,
    );
    let fired = Family::<Labels, Counter>::default();
    for kind in Kind::ALL {
        fired.get_or_create(&vec![("kind".into(), kind.name().into())]).inc_by(f.fired.get(&kind).copied().unwrap_or(0));
    }
    r.register("beam_findings_fired", "Findings that started firing since start, per kind", fired);
    counter(r, "scope_probe_findings_dropped", "Observations dropped because too many findings were active", f.dropped);
    if let Some(a) = alerts {
        counter(r, "scope_probe_alert_posts", "Posts of alerts that Alertmanager accepted", a.posts.load(Ordering::Relaxed));
        counter(
            r,
            "scope_probe_alert_post_failures",
            "Posts of alerts that failed (retried with backoff)",
            a.failed.load(Ordering::Relaxed),
        );
        counter(
            r,
            "scope_probe_alerts_dropped",
            "Alert changes dropped because the delivery queue was full",
            a.dropped.load(Ordering::Relaxed),
        );
        gauge(r, "scope_probe_alerts_pending", "Alerts waiting to be delivered", a.pending.load(Ordering::Relaxed) as i64);
    }
}

/// The mode and what the hooks cost (the adaptive controller's view).
fn render_control(r: &mut Registry, c: &ControlState) {
    let mode = Family::<Labels, Gauge>::default();
    for m in Mode::ALL {
        mode.get_or_create(&vec![("mode".into(), m.name().into())]).set(i64::from(c.mode == Some(m)));
    }
    r.register("scope_probe_mode", "The mode scope-probe runs in (1) and the others (0)", mode);
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(c.budget);
    r.register("scope_probe_overhead_budget_ratio", "Share of the VM's CPU time per-event hooks may cost (adaptive mode)", g);
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(c.overhead_ratio);
    r.register(
        "scope_probe_overhead_ratio",
        "Estimated cost of the per-event hooks over the VM's CPU time, last minute (hook hits x calibrated cost per hit)",
        g,
    );
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(c.hit_seconds);
    r.register("scope_probe_hook_hit_seconds", "What one hook hit costs the VM, calibrated at start-up", g);
    counter_f64(r, "scope_probe_hook_cost_seconds", "Estimated VM time the per-event hooks cost since start", c.hook_cost_seconds);
    let esc = Family::<Labels, Counter>::default();
    for (reason, n) in &c.escalations {
        esc.get_or_create(&vec![("reason".into(), reason.clone())]).inc_by(*n);
    }
    r.register(
        "scope_probe_escalations",
        "Windows with per-event hooks attached, by reason (survey: the periodic rate window; else the detector that asked)",
        esc,
    );
    let observed = Family::<Labels, Counter<f64, AtomicU64>>::default();
    for cap in Capability::ALL {
        // In trace mode every hook is attached all the time: nothing to divide by here.
        observed.get_or_create(&vec![("capability".into(), cap.name().into())]).inc_by(c.observed_seconds[cap.index()]);
    }
    r.register(
        "scope_probe_observed_seconds",
        "Seconds each capability's hooks were attached in adaptive windows: rate(beam_..._total) / rate(this) is the rate while observed",
        observed,
    );
}

/// Metrics read from the process table (no probe in the VM): counts, mailboxes, heaps.
fn render_snapshot(r: &mut Registry, snap: &Snapshot, label: &dyn Fn(u64) -> (String, String)) {
    let procs = &snap.processes;
    gauge(r, "beam_processes", "Live processes (process table entries)", procs.len() as i64);
    let max_q = procs.iter().map(|p| p.message_queue_len).max().unwrap_or(0);
    let total_q: u64 = procs.iter().map(|p| p.message_queue_len).sum();
    let heap: u64 = procs.iter().map(|p| p.total_heap_words * 8).sum();
    let memory: u64 = procs.iter().map(|p| p.memory_bytes).sum();
    gauge(r, "beam_process_message_queue_length_max", "Longest message queue of any process", max_q as i64);
    gauge(r, "beam_processes_queued_messages", "Messages queued in all processes", total_q as i64);
    gauge(r, "beam_processes_heap_bytes", "Heap of all processes (young + old + fragments)", heap as i64);
    gauge(
        r,
        "beam_processes_memory_bytes",
        "Memory of all processes as process_info(P, memory) counts it (heaps, queued message data, process structs)",
        memory as i64,
    );
    let mut top = |name: &str, help: &str, key: &dyn Fn(&ProcessRecord) -> u64| {
        let mut v: Vec<&ProcessRecord> = procs.iter().filter(|p| key(p) > 0).collect();
        v.sort_by(|a, b| key(b).cmp(&key(a)).then(a.term.cmp(&b.term)));
        let family = Family::<Labels, Gauge>::default();
        for p in v.into_iter().take(TOP_N) {
            // The snapshot knows who it is already (registered name, else label, else
            // initial call).
            let (pid, looked_up) = label(p.term);
            let name = p.identity().map(str::to_owned).unwrap_or(looked_up);
            family.get_or_create(&vec![("pid".into(), pid), ("name".into(), name)]).set(key(p) as i64);
        }
        r.register(name, help, family);
    };
    top(
        "beam_top_process_message_queue_length",
        "Message queue length of the 10 processes with the longest queues",
        &|p| p.message_queue_len,
    );
    top("beam_top_process_heap_bytes", "Heap of the 10 processes with the largest heaps", &|p| p.total_heap_words * 8);
    top(
        "beam_top_process_memory_bytes",
        "Memory of the 10 processes holding the most, as process_info(P, memory) counts it",
        &|p| p.memory_bytes,
    );
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(snap.elapsed.as_secs_f64());
    r.register("scope_probe_snapshot_seconds", "Time the last process-table snapshot took", g);
}

/// Metrics read from the ETS tables' headers (no probe in the VM): counts, memory, the largest.
fn render_ets(r: &mut Registry, ets: &EtsSnapshot, procs: &[ProcessRecord], label: &dyn Fn(u64) -> (String, String)) {
    gauge(r, "beam_ets_tables", "ETS tables", ets.tables.len() as i64);
    let bytes: u64 = ets.tables.iter().map(|t| t.memory_bytes).sum();
    gauge(r, "beam_ets_memory_bytes", "Memory of all ETS tables, as ets:info(T, memory) counts it (in bytes)", bytes as i64);
    let owners: std::collections::HashMap<u64, &ProcessRecord> = procs.iter().map(|p| (p.term, p)).collect();
    let mut top = |name: &str, help: &str, key: &dyn Fn(&EtsTable) -> u64| {
        let mut v: Vec<&EtsTable> = ets.tables.iter().filter(|t| key(t) > 0).collect();
        v.sort_by(|a, b| key(b).cmp(&key(a)).then(a.id.cmp(&b.id)));
        let family = Family::<Labels, Gauge>::default();
        for t in v.into_iter().take(TOP_N) {
            let (owner, looked_up) = label(t.owner_term);
            let owner_name = owners.get(&t.owner_term).and_then(|p| p.identity()).map(str::to_owned).unwrap_or(looked_up);
            let labels = vec![("table".into(), t.name.clone()), ("id".into(), t.id.clone()), ("owner".into(), owner), ("owner_name".into(), owner_name)];
            family.get_or_create(&labels).set(key(t) as i64);
        }
        r.register(name, help, family);
    };
    top("beam_top_ets_table_memory_bytes", "Memory of the 10 ETS tables holding the most (in bytes)", &|t| t.memory_bytes);
    top("beam_top_ets_table_size", "Objects in the 10 ETS tables holding the most", &|t| t.size);
}

/// Memory by kind, as `erlang:memory()` groups it (read from the allocators' counters).
fn render_memory(r: &mut Registry, memory: &beam_probes::vm_memory::VmMemory) {
    let family = Family::<Labels, Gauge>::default();
    for (kind, bytes) in memory.kinds() {
        family.get_or_create(&vec![("kind".into(), kind.into())]).set(bytes as i64);
    }
    r.register("beam_memory_bytes", "The VM's memory by kind, as erlang:memory() groups it (in bytes)", family);
}

/// Metrics read from the port table (no probe in the VM): counts, queues, busy ports.
fn render_ports(r: &mut Registry, ports: &PortSnapshot, label: &dyn Fn(u64) -> (String, String)) {
    gauge(r, "beam_ports", "Open ports (sockets, spawned programs, drivers)", ports.ports.len() as i64);
    let queued: u64 = ports.ports.iter().map(|p| p.queue_bytes).sum();
    gauge(r, "beam_ports_queued_bytes", "Bytes queued in all ports' driver queues (port_info(P, queue_size))", queued as i64);
    gauge(r, "beam_ports_busy", "Ports whose driver says busy: processes sending to them are suspended", ports.ports.iter().filter(|p| p.busy).count() as i64);
    let family = Family::<Labels, Gauge>::default();
    for p in ports.ports.iter().filter(|p| p.queue_bytes > 0 || p.busy).take(TOP_N) {
        let (connected, name) = match p.connected_pid {
            Some(pid) => label(pid.term),
            None => (p.connected.clone(), String::new()),
        };
        let peer = p.socket.as_ref().and_then(|s| s.peer.clone()).unwrap_or_default();
        let labels = vec![
            ("port".into(), p.id.clone()),
            ("port_name".into(), p.name.chars().take(64).collect()),
            ("connected".into(), connected),
            ("connected_name".into(), p.connected_name.clone().unwrap_or(name)),
            ("peer".into(), peer),
        ];
        family.get_or_create(&labels).set(p.queue_bytes as i64);
    }
    r.register("beam_top_port_queue_bytes", "Bytes queued in the 10 ports with the fullest queues (and busy ones)", family);
}

/// One exposition of several VMs' renderings: each family once (its HELP, TYPE and UNIT from
/// the first rendering that has it), with every VM's series under it.
pub fn merge(renderings: &[String]) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut families: std::collections::HashMap<&str, (Vec<&str>, Vec<&str>)> = Default::default();
    for text in renderings {
        let mut current: Option<&str> = None;
        let mut fresh = false;
        for line in text.lines() {
            if line == "# EOF" {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ").or(line.strip_prefix("# TYPE ")).or(line.strip_prefix("# UNIT ")) {
                let name = rest.split_once(' ').map_or(rest, |(n, _)| n);
                if current != Some(name) {
                    current = Some(name);
                    fresh = !families.contains_key(name);
                    if fresh {
                        order.push(name);
                    }
                }
                let family = families.entry(name).or_default();
                if fresh {
                    family.0.push(line);
                }
            } else if let Some(name) = current {
                families.entry(name).or_default().1.push(line);
            }
        }
    }
    let mut out = String::new();
    for name in order {
        let (head, samples) = &families[name];
        for line in head.iter().chain(samples) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

/// Converts prometheus-client's OpenMetrics text into the classic Prometheus text format
/// (version 0.0.4) for clients that do not ask for OpenMetrics (curl, promtool, older agents):
/// counter families are named with their `_total` suffix there, and there is no `# EOF`.
pub fn to_classic_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            help = Some(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = if kind == "counter" && !name.ends_with("_total") { format!("{name}_total") } else { name.to_owned() };
            if let Some(h) = help.take() {
                let text = h.strip_prefix("# HELP ").and_then(|r| r.split_once(' ')).map(|(_, t)| t).unwrap_or("");
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_renderings_keep_each_family_once() {
        let a = "# HELP x Xs.\n# TYPE x counter\nx_total{node=\"a\"} 1\n# HELP g G.\n# TYPE g gauge\ng{node=\"a\"} 2\n# EOF\n";
        let b = "# HELP x Xs.\n# TYPE x counter\nx_total{node=\"b\"} 3\n# HELP h H.\n# TYPE h gauge\nh{node=\"b\"} 4\n# EOF\n";
        assert_eq!(
            merge(&[a.into(), b.into()]),
            "# HELP x Xs.\n# TYPE x counter\nx_total{node=\"a\"} 1\nx_total{node=\"b\"} 3\n# HELP g G.\n# TYPE g gauge\n\
             g{node=\"a\"} 2\n# HELP h H.\n# TYPE h gauge\nh{node=\"b\"} 4\n# EOF\n"
        );
        assert_eq!(merge(&[]), "# EOF\n");
    }

    #[test]
    fn classic_text_names_counters_with_total() {
        let om = "# HELP a_b Things.\n# TYPE a_b counter\na_b_total 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            to_classic_text(om),
            "# HELP a_b_total Things.\n# TYPE a_b_total counter\na_b_total 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
