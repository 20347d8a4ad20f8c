//! The monitor (`scope-probe --pid PID`): wires the pipeline (sources -> fan-out -> aggregation
//! -> exporters), runs the mode's controller, serves metrics and the JSON API until told to
//! stop or the VM exits, then detaches.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use beam_probes::{BeamTarget, CapabilityPlan, ProbeSource};

use crate::aggregate::{self, State, counts::Aggregator, lock};
use crate::cli::MonitorArgs;
use crate::control::adaptive::{ControlState, Controller, Settings};
use crate::control::calibrate;
use crate::control::mode::Mode;
use crate::detect::{Detectors, Evaluator};
use crate::export::PidNames;
use crate::export::alertmanager::{AlertClient, AlertSettings};
use crate::enrich::names::VmNames;
use crate::export::http::App;
use crate::export::metrics::BuildLabels;
use crate::pipeline::{FanOut, Sink};
use crate::source::cpu::CpuSource;
use crate::source::probes::ProbeThread;
use crate::source::table::TableSource;

pub fn run(mut cli: MonitorArgs, matches: &clap::ArgMatches) -> Result<()> {
    // The configuration file first: a bad one stops everything before anything attaches.
    if let Some(path) = cli.config.clone() {
        crate::config::ConfigFile::read(&path)?.apply(&mut cli, matches);
    }
    crate::privileges::check()?;
    let pid = cli.pid.context("--pid is required")?;
    let target = Arc::new(cli.debug_info.open(pid)?);
    let hooks = target.resolve_hooks()?;
    let plans = target.plan_sources(cli.probe_source.preference())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(monitor(cli, target, hooks, plans))
}

async fn monitor(
    cli: MonitorArgs,
    target: Arc<BeamTarget>,
    hooks: Vec<beam_probes::ResolvedHook>,
    plans: Vec<CapabilityPlan>,
) -> Result<()> {
    // Bind before attaching: a busy port must not leave probes behind.
    let listener = tokio::net::TcpListener::bind(cli.listen).await.with_context(|| {
        format!("cannot listen on {} (use --listen to choose another address)", cli.listen)
    })?;
    let started = std::time::Instant::now();
    let state = State::new(Aggregator::new(cli.max_processes, cli.max_pairs));
    let control = Arc::new(Mutex::new(ControlState { mode: Some(cli.mode), budget: cli.overhead_budget, ..Default::default() }));
    let normal_schedulers = beam_probes::threads::vm_threads(&target)
        .iter()
        .filter(|t| matches!(t.role, beam_probes::threads::ThreadRole::Scheduler(beam_probes::threads::SchedulerKind::Normal, _)))
        .count();
    let gc_functions: Vec<String> = target
        .table
        .hooks
        .iter()
        .filter(|h| h.point == beam_probes::HookPoint::GcStart)
        .map(|h| h.symbol.to_owned())
        .collect();
    let detectors = Arc::new(Mutex::new(Detectors::new(&cli.detectors, cli.frequency, gc_functions, normal_schedulers)));
    let sinks: Vec<Arc<Mutex<dyn Sink>>> = vec![state.counts.clone(), state.cpu.clone(), state.table.clone(), detectors.clone()];
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
    )?;
    let source = source_summary(&report.plans);
    eprintln!(
        "scope-probe: attached to pid {} ({}) in {} ms: OTP {}, ERTS {}, build {} (offsets from {}), source {source}, mode {}",
        target.pid,
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
    let names: Arc<dyn PidNames> = Arc::new(VmNames::new(target.clone(), state.table.clone()));
    let alerts = if cli.alertmanagers.is_empty() {
        None
    } else {
        Some(AlertClient::start(AlertSettings {
            urls: cli.alertmanagers.clone(),
            labels: cli.alert_labels.iter().cloned().collect(),
            node: crate::enrich::process_view::node_name(target.pid),
            instance: listener.local_addr()?.to_string(),
            resend: cli.alert_resend,
        })?)
    };
    let evaluator = {
        let sender = alerts.as_ref().map(|a| a.sender());
        Evaluator::start(
            detectors.clone(),
            state.findings.clone(),
            cli.detectors.clone(),
            names.clone(),
            control.clone(),
            controller.as_ref().map(|c| c.escalator()),
            move |t| {
                if let Some(s) = &sender {
                    s.notify(t);
                }
            },
        )?
    };
    if !cli.alertmanagers.is_empty() {
        eprintln!("scope-probe: alerts to {}", cli.alertmanagers.join(", "));
    }
    eprintln!("scope-probe: metrics on http://{}/metrics", listener.local_addr()?);

    let app = Arc::new(App {
        state: state.clone(),
        control: control.clone(),
        alerts: alerts.as_ref().map(|a| a.stats.clone()),
        names: names.clone(),
        build: BuildLabels {
            otp_release: target.otp_release.clone(),
            erts_version: target.erts_version.clone(),
            source,
            build: target.table.id,
            mode: cli.mode.name(),
        },
    });
    let server = tokio::spawn(async move { axum::serve(listener, crate::export::http::router(app)).await });

    let reason = wait_for_stop(cli.duration, &target).await;
    // The detectors and the controller first (it closes its window), then the probes; alerts
    // last (their last delivery is tried on the way out).
    drop(evaluator);
    drop(controller);
    probe.stop()?;
    if let Some(cpu) = cpu {
        cpu.stop()?;
    }
    drop(table);
    drop(alerts);
    server.abort();
    summary(reason, &state);
    Ok(())
}

fn summary(reason: &str, state: &aggregate::State) {
    let agg = lock(&state.counts);
    let health = lock(&state.health);
    eprintln!(
        "scope-probe: detached ({reason}): {} events ({} sends, {} schedules, {} GCs, {} spawns, {} exits), \
         {} lost, {} spans cut by attach/detach",
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

/// Waits for Ctrl-C, SIGTERM, the end of --duration or the target's exit.
async fn wait_for_stop(duration: Option<Duration>, target: &BeamTarget) -> &'static str {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
    };
    let target_gone = async {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if !target.is_alive() {
                break;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = sigterm => "terminated",
        _ = deadline => "duration elapsed",
        _ = target_gone => "target exited",
    }
}
