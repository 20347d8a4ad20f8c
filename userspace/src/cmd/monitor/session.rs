//! One VM's session of the monitor: everything attached to it (probes, sampler, table and
//! /proc reads, detectors, the adaptive controller, alerts, the recorder), started when the VM
//! is found and stopped when it exits or the monitor stops.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use beam_probes::{BeamTarget, CapabilityPlan, ProbeSource};

use super::Outputs;
use crate::aggregate::{self, State, counts::Aggregator, lock};
use crate::cli::MonitorArgs;
use crate::control::adaptive::{ControlState, Controller, Settings};
use crate::control::calibrate;
use crate::control::mode::Mode;
use crate::detect::{Detectors, Evaluator, Transition};
use crate::enrich::names::{EventNames, VmNames};
use crate::export::alertmanager::{AlertClient, AlertSettings};
use crate::export::http::App;
use crate::export::metrics::{BuildLabels, VmLabels};
use crate::pipeline::{FanOut, Sink};
use crate::record::FORMAT_NAME;
use crate::record::flight::{Flight, FlightSettings};
use crate::record::format::{Meta, VmMeta};
use crate::record::sink::Recorder;
use crate::record::writer::Writer;
use crate::source::cpu::CpuSource;
use crate::source::probes::ProbeThread;
use crate::source::table::TableSource;

/// A VM opened and its hooks resolved, not yet attached to.
pub struct OpenedVm {
    pub target: Arc<BeamTarget>,
    hooks: Vec<beam_probes::ResolvedHook>,
    plans: Vec<CapabilityPlan>,
}

pub fn open_vm(cli: &MonitorArgs, pid: u32) -> Result<OpenedVm> {
    let target = Arc::new(cli.debug_info.open(pid)?);
    let hooks = target.resolve_hooks()?;
    let plans = target.plan_sources(cli.probe_source.preference())?;
    Ok(OpenedVm { target, hooks, plans })
}

/// What a recording says about the session that made it.
fn recording_meta(cli: &MonitorArgs, target: &BeamTarget) -> Meta {
    Meta {
        format: FORMAT_NAME.into(),
        scope_probe: env!("CARGO_PKG_VERSION").into(),
        started_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
        started_monotonic_ns: crate::event::now_ns(),
        vm: VmMeta {
            os_pid: target.pid,
            node: crate::enrich::process_view::node_name(target),
            otp_release: target.otp_release.clone(),
            erts_version: target.erts_version.clone(),
            build: target.table.id.to_owned(),
        },
        mode: cli.mode.name().into(),
        overhead_budget: cli.overhead_budget,
        frequency: cli.frequency,
        gc_functions: target.table.hooks.iter().filter(|h| h.point == beam_probes::HookPoint::GcStart).map(|h| h.symbol.to_owned()).collect(),
        boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|b| b.trim().to_owned()).unwrap_or_default(),
        vms: Vec::new(),
        clock: None,
    }
}

/// Everything attached to one VM: its sources, state, detectors, controller, alerts and
/// recorder. Started when the VM is found, stopped when it exits or the monitor stops.
pub struct VmSession {
    pub target: Arc<BeamTarget>,
    state: State,
    pub app: Arc<App>,
    probe: ProbeThread,
    controller: Option<Controller>,
    table: TableSource,
    cpu: Option<CpuSource>,
    alerts: Option<AlertClient>,
    evaluator: Evaluator,
    pub recorder: Option<Arc<Mutex<Recorder>>>,
    flight: Option<Arc<Flight>>,
    record_path: Option<PathBuf>,
    started: std::time::Instant,
}

impl VmSession {
    /// Attaches to the VM and starts its sources. `instance` is the endpoint's address (the
    /// alerts' instance label); with `several` VMs, the flight recorder keeps each VM's
    /// segments in a directory of its own.
    pub fn start(cli: &MonitorArgs, vm: OpenedVm, outputs: &Outputs, instance: Option<String>, several: bool) -> Result<VmSession> {
        let OpenedVm { target, hooks, plans } = vm;
        let started = std::time::Instant::now();
        let node = crate::enrich::process_view::node_name(&target);
        let state = State::new(Aggregator::new(cli.max_processes, cli.max_pairs));
        let control = Arc::new(Mutex::new(ControlState { mode: Some(cli.mode), budget: cli.overhead_budget, ..Default::default() }));
        let normal_schedulers = beam_probes::threads::vm_threads(&target)
            .iter()
            .filter(|t| matches!(t.role, beam_probes::threads::ThreadRole::Scheduler(beam_probes::threads::SchedulerKind::Normal, _)))
            .count();
        let gc_functions: Vec<String> =
            target.table.hooks.iter().filter(|h| h.point == beam_probes::HookPoint::GcStart).map(|h| h.symbol.to_owned()).collect();
        let detectors = Arc::new(Mutex::new(Detectors::new(&cli.detectors, cli.frequency, gc_functions, normal_schedulers)));
        let names: Arc<dyn EventNames> = Arc::new(VmNames::new(target.clone(), state.table.clone()));
        let mut sinks: Vec<Arc<Mutex<dyn Sink>>> = vec![state.counts.clone(), state.cpu.clone(), state.table.clone(), state.calls.clone(), detectors.clone()];
        // The recorder: a file (`record`), or the flight recorder's segments.
        let meta = recording_meta(cli, &target);
        let flight_dir = cli.flight_recorder.as_ref().map(|d| if several { d.join(format!("{node}-{}", target.pid)) } else { d.clone() });
        let (recorder, flight) = if let Some(to) = &outputs.record {
            let writer = Writer::create(&to.path, meta)?;
            (Some(Arc::new(Mutex::new(Recorder::new(writer, names.clone())))), None)
        } else if let Some(dir) = &flight_dir {
            let settings =
                FlightSettings { dir: dir.clone(), window: cli.flight_window, max_bytes: cli.flight_max_size, max_kept: cli.flight_keep };
            let (flight, recorder) = Flight::start(settings, |path| Ok(Recorder::new(Writer::create(path, meta)?, names.clone())))?;
            (Some(recorder), Some(Arc::new(flight)))
        } else {
            (None, None)
        };
        if let Some(r) = &recorder {
            sinks.push(r.clone());
        }
        let fanout = FanOut::new(sinks);

        // The hook cost is measured before anything is attached to the VM.
        if cli.mode == Mode::Adaptive {
            let mut c = lock(&control);
            match calibrate::hit_seconds(target.table) {
                Ok(s) => {
                    c.hit_seconds = s;
                    c.calibration = "calibrated".into();
                }
                Err(e) => {
                    c.hit_seconds = calibrate::DEFAULT_HIT_SECONDS;
                    c.calibration = format!("not calibrated ({e:#}), assumed");
                }
            }
        }
        let (probe, report) = ProbeThread::start(
            target.clone(),
            hooks,
            plans,
            cli.mode.initial_capabilities(),
            fanout.clone(),
            state.health.clone(),
            cli.mode.event_ring_bytes(),
        )?;
        let source = source_summary(&report.plans);
        eprintln!(
            "scope-probe: attached to pid {} ({}, {}) in {} ms: OTP {}, ERTS {}, build {} (offsets from {}), source {source}, mode {}",
            target.pid,
            node,
            target.exe.display(),
            started.elapsed().as_millis(),
            target.otp_release,
            target.erts_version,
            target.table.id,
            target.offsets.label(),
            cli.mode.name(),
        );
        match cli.mode {
            Mode::Trace => {
                let names: Vec<&str> = report.capabilities.iter().map(|c| c.name()).collect();
                eprintln!("scope-probe: hooks: {} ({})", names.join(", "), report.symbols.join(", "));
                for plan in report.plans.iter().filter(|p| report.capabilities.contains(&p.capability)) {
                    eprintln!("scope-probe: source of {plan}");
                }
            }
            Mode::Sample => eprintln!("scope-probe: hooks: none (mode sample: CPU sampling, process-table reads, /proc)"),
            Mode::Adaptive => {
                let c = lock(&control);
                eprintln!(
                    "scope-probe: hooks: in windows within a {:.1}% overhead budget (a hook hit costs {:.2} µs here, {})",
                    c.budget * 100.0,
                    c.hit_seconds * 1e6,
                    c.calibration
                );
                for plan in &report.plans {
                    eprintln!("scope-probe: source of {plan}");
                }
            }
        }
        if let Some(origin) = &target.debug_origin {
            let file = target.debug_file.as_ref().map(|f| format!(" ({})", f.display())).unwrap_or_default();
            eprintln!("scope-probe: debug info: {}{file}", origin.label());
        }
        let controller = match cli.mode {
            Mode::Adaptive => {
                let settings = Settings { budget: cli.overhead_budget, ..Settings::default() };
                Some(Controller::start(target.pid, settings, probe.commands(), state.health.clone(), control.clone())?)
            }
            Mode::Trace | Mode::Sample => None,
        };
        let table = TableSource::start(target.clone(), cli.snapshot_interval, fanout.clone())?;
        let cpu = if cli.frequency > 0 {
            let cpu = CpuSource::start(&target, cli.frequency, fanout.clone())?;
            lock(&state.health).sampler = Some(cpu.stats.clone());
            eprintln!("scope-probe: CPU sampling at {} Hz; JIT symbols: {}", cli.frequency, cpu.jit_source);
            Some(cpu)
        } else {
            None
        };
        let alerts = if cli.alertmanagers.is_empty() {
            None
        } else {
            Some(AlertClient::start(AlertSettings {
                urls: cli.alertmanagers.clone(),
                labels: cli.alert_labels.iter().cloned().collect(),
                node: node.clone(),
                instance: instance.unwrap_or_else(|| format!("pid {}", target.pid)),
                resend: cli.alert_resend,
            })?)
        };
        {
            let mut calls = lock(&state.calls);
            calls.escalator = controller.as_ref().map(|c| c.escalator());
            calls.names = Some(names.clone());
            calls.requests.extra = cli.request_processes.clone();
        }
        let evaluator = {
            let sender = alerts.as_ref().map(|a| a.sender());
            Evaluator::start(
                detectors.clone(),
                state.findings.clone(),
                cli.detectors.clone(),
                names.clone(),
                control.clone(),
                controller.as_ref().map(|c| c.escalator()),
                notify(sender, recorder.clone(), flight.clone(), state.findings.clone()),
            )?
        };
        if !cli.alertmanagers.is_empty() {
            eprintln!("scope-probe: alerts to {}", cli.alertmanagers.join(", "));
        }
        if let Some(to) = &outputs.record {
            eprintln!("scope-probe: recording to {}", to.path.display());
        }
        if let Some(dir) = &flight_dir {
            eprintln!(
                "scope-probe: flight recorder in {}: the last {} (at most {} on disk), kept around findings",
                dir.display(),
                humantime::format_duration(cli.flight_window),
                crate::units::bytes(cli.flight_max_size)
            );
        }
        let app = Arc::new(App {
            vm: VmLabels { node, os_pid: target.pid },
            state: state.clone(),
            control: control.clone(),
            alerts: alerts.as_ref().map(|a| a.stats.clone()),
            recording: recorder.as_ref().map(|r| crate::record::RecordingStats {
                writer: lock(r).writer().stats.clone(),
                flight: flight.as_ref().map(|f| f.stats.clone()),
            }),
            names: names.clone(),
            build: BuildLabels {
                otp_release: target.otp_release.clone(),
                erts_version: target.erts_version.clone(),
                source,
                build: target.table.id,
                mode: cli.mode.name(),
            },
        });
        Ok(VmSession {
            target,
            state,
            app,
            probe,
            controller,
            table,
            cpu,
            alerts,
            evaluator,
            recorder,
            flight,
            record_path: outputs.record.as_ref().map(|r| r.path.clone()),
            started,
        })
    }

    /// Detaches from the VM and finishes its recording.
    pub fn stop(self, reason: &str) -> Result<()> {
        // The detectors and the controller first (it closes its window), then the probes; alerts
        // last (their last delivery is tried on the way out).
        drop(self.evaluator);
        drop(self.controller);
        self.probe.stop()?;
        if let Some(cpu) = self.cpu {
            cpu.stop()?;
        }
        drop(self.table);
        drop(self.alerts);
        summary(reason, &self.app.vm, &self.state);
        // The recording last: it has everything the sources delivered.
        if let Some(f) = self.flight.and_then(Arc::into_inner) {
            f.finish()?;
        }
        if let Some(r) = self.recorder {
            let mut r = lock(&r);
            r.finish()?;
            if let Some(path) = &self.record_path {
                let s = &r.writer().stats;
                eprintln!(
                    "scope-probe: recorded {} to {}: {} entries, {}{}",
                    humantime::format_duration(Duration::from_secs(self.started.elapsed().as_secs())),
                    path.display(),
                    s.entries.load(Ordering::Relaxed),
                    crate::units::bytes(s.bytes.load(Ordering::Relaxed)),
                    match s.dropped.load(Ordering::Relaxed) {
                        0 => String::new(),
                        n => format!(", {n} dropped (the disk did not keep up; counted in the file)"),
                    }
                );
            }
        }
        Ok(())
    }
}

/// What each finding's change does: the alert client hears of it, the recording keeps it, and
/// the flight recorder keeps the minutes around a finding that fires (the alert names them).
fn notify(
    alerts: Option<crate::export::alertmanager::AlertSender>,
    recorder: Option<Arc<Mutex<Recorder>>>,
    flight: Option<Arc<Flight>>,
    findings: Arc<Mutex<crate::detect::Findings>>,
) -> impl FnMut(Transition) + Send + 'static {
    // A firing finding is updated every second: the recording keeps one update in ten seconds.
    let mut last_recorded: std::collections::HashMap<u64, std::time::Instant> = Default::default();
    move |mut t| {
        if let (Transition::Fired(f), Some(flight)) = (&mut t, &flight) {
            match flight.keep(f.kind.name()) {
                Ok(path) => {
                    let path = path.display().to_string();
                    eprintln!("scope-probe: {} fired: kept the flight recorder's window in {path}", f.kind.name());
                    lock(&findings).set_recording(f.id, path.clone());
                    f.recording = Some(path);
                }
                Err(e) => {
                    eprintln!("scope-probe: warning: flight recorder: keeping the window: {e:#}")
                }
            }
        }
        if let Some(r) = &recorder {
            let f = match &t {
                Transition::Fired(f) | Transition::Resolved(f) => Some(f),
                Transition::Updated(f) => {
                    let due = last_recorded.get(&f.id).is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
                    due.then_some(f)
                }
            };
            if let Some(f) = f {
                last_recorded.insert(f.id, std::time::Instant::now());
                if let Ok(json) = serde_json::to_string(f) {
                    lock(r).finding(json);
                }
            }
            if let Transition::Resolved(f) = &t {
                last_recorded.remove(&f.id);
            }
        }
        if let Some(a) = &alerts {
            a.notify(t);
        }
    }
}

fn summary(reason: &str, vm: &VmLabels, state: &aggregate::State) {
    let agg = lock(&state.counts);
    let health = lock(&state.health);
    eprintln!(
        "scope-probe: detached ({reason}) from pid {} ({}): {} events ({} sends, {} schedules, {} GCs, {} spawns, {} exits), \
         {} lost, {} spans cut by attach/detach",
        vm.os_pid,
        vm.node,
        agg.events_by_kind.iter().sum::<u64>(),
        agg.totals.sends,
        agg.totals.schedules,
        agg.totals.gcs,
        agg.totals.spawns,
        agg.totals.exits,
        health.lost_total(),
        health.unpaired,
    );
}

/// "uprobe", "usdt", or "usdt+uprobe" when capabilities use both.
fn source_summary(plans: &[CapabilityPlan]) -> &'static str {
    let usdt = plans.iter().any(|p| p.source == ProbeSource::Usdt);
    let uprobe = plans.iter().any(|p| p.source == ProbeSource::Uprobe);
    match (usdt, uprobe) {
        (true, true) => "usdt+uprobe",
        (true, false) => "usdt",
        _ => "uprobe",
    }
}
