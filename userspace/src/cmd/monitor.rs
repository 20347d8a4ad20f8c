//! The monitor (`scope-probe --pid PID`): attaches, serves metrics and the JSON API until it is
//! told to stop or the VM exits, then detaches.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use beam_probes::BeamTarget;

use crate::aggregate::counts::Aggregator;
use crate::cli::MonitorArgs;
use crate::enrich;
use crate::export;
use crate::export::http::App;
use crate::export::metrics::BuildLabels;
use crate::source;
use crate::source::probes::{ProbeThread, Shared};

pub fn run(cli: MonitorArgs) -> Result<()> {
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
    plans: Vec<beam_probes::CapabilityPlan>,
) -> Result<()> {
    // Bind before attaching: a busy port must not leave probes behind.
    let listener = tokio::net::TcpListener::bind(cli.listen).await.with_context(|| {
        format!("cannot listen on {} (use --listen to choose another address)", cli.listen)
    })?;
    let shared = Arc::new(Shared::new(Aggregator::new(cli.max_processes, cli.max_pairs)));
    let started = std::time::Instant::now();
    let (probe, report) = ProbeThread::start(target.clone(), hooks, plans, cli.mode, shared.clone())?;
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
    let names: Vec<&str> = report.capabilities.iter().map(|c| c.name()).collect();
    eprintln!("scope-probe: hooks: {} ({})", names.join(", "), report.symbols.join(", "));
    for plan in report.plans.iter().filter(|p| report.capabilities.contains(&p.capability)) {
        eprintln!("scope-probe: source of {plan}");
    }
    if let Some(origin) = &target.debug_origin {
        let file = target.debug_file.as_ref().map(|f| format!(" ({})", f.display())).unwrap_or_default();
        eprintln!("scope-probe: debug info: {}{file}", origin.label());
    }
    let sampler = if cli.frequency > 0 { Some(start_cpu_sampling(&target, cli.frequency, &shared)?) } else { None };
    eprintln!("scope-probe: metrics on http://{}/metrics", listener.local_addr()?);

    let app = Arc::new(App {
        target: target.clone(),
        shared: shared.clone(),
        names: Mutex::new(Default::default()),
        build: BuildLabels {
            otp_release: target.otp_release.clone(),
            erts_version: target.erts_version.clone(),
            source,
            build: target.table.id,
            mode: cli.mode.name(),
        },
        snapshot_torn: Mutex::new(0),
    });
    let server = tokio::spawn(async move { axum::serve(listener, export::http::router(app)).await });

    let reason = wait_for_stop(cli.duration, &target).await;
    probe.stop()?;
    if let Some((sampler, consumer)) = sampler {
        sampler.stop()?;
        let _ = consumer.join();
    }
    server.abort();
    let agg = shared.agg.lock().unwrap_or_else(|e| e.into_inner());
    let health = shared.health.lock().unwrap_or_else(|e| e.into_inner());
    use crate::source::bpf::monitor::types::stat_id;
    let k = &health.kernel;
    let unpaired = k.get(stat_id::STAT_LOST_UNPAIRED);
    let lost = k.lost() - unpaired + agg.undecodable;
    eprintln!(
        "scope-probe: detached ({reason}): {} events ({} sends, {} schedules, {} GCs, {} spawns, {} exits), \
         {lost} lost, {unpaired} spans cut by attach/detach",
        agg.events_by_kind.iter().sum::<u64>(),
        agg.totals.sends,
        agg.totals.schedules,
        agg.totals.gcs,
        agg.totals.spawns,
        agg.totals.exits,
    );
    Ok(())
}

/// "uprobe", "usdt", or "usdt+uprobe" when capabilities use both.
fn source_summary(plans: &[beam_probes::CapabilityPlan]) -> &'static str {
    use beam_probes::ProbeSource;
    let usdt = plans.iter().any(|p| p.source == ProbeSource::Usdt);
    let uprobe = plans.iter().any(|p| p.source == ProbeSource::Uprobe);
    match (usdt, uprobe) {
        (true, true) => "usdt+uprobe",
        (true, false) => "usdt",
        _ => "uprobe",
    }
}

/// Starts the CPU sampler and a thread that folds its samples into the one-minute window.
fn start_cpu_sampling(
    target: &Arc<BeamTarget>,
    frequency: u64,
    shared: &Arc<Shared>,
) -> Result<(source::sampler::SamplerThread, std::thread::JoinHandle<()>)> {
    // The symbolizer (blazesym) is not Send: it is made on the thread that uses it.
    let (sym_tx, sym_rx) = std::sync::mpsc::channel();
    let (sampler, rx) = source::sampler::SamplerThread::start(target.clone(), frequency)?;
    *shared.sampler.lock().unwrap_or_else(|e| e.into_inner()) = Some(sampler.stats.clone());
    let (shared, target) = (shared.clone(), target.clone());
    let consumer = std::thread::Builder::new().name("scope-probe-cpu".into()).spawn(move || {
        let symbolizer = match enrich::symbolize::Symbolizer::new(&target) {
            Ok(s) => {
                let _ = sym_tx.send(Ok(s.jit_source().describe()));
                s
            }
            Err(e) => {
                let _ = sym_tx.send(Err(e));
                return;
            }
        };
        let mut builder = enrich::stack::StackBuilder::new(&target, symbolizer, false);
        let epoch = std::time::Instant::now();
        for s in rx {
            let stack = builder.build(&target, &s);
            let process = match stack.owner {
                enrich::stack::Owner::Process(p) => Some(p),
                enrich::stack::Owner::Thread(_) => None,
            };
            let second = epoch.elapsed().as_secs();
            shared.cpu.lock().unwrap_or_else(|e| e.into_inner()).add(second, stack.top_function(), process);
        }
    })?;
    let source = sym_rx.recv().context("the CPU sample thread ended early")??;
    eprintln!("scope-probe: CPU sampling at {frequency} Hz; JIT symbols: {source}");
    Ok((sampler, consumer))
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
