//! The monitor (`scope-probe --pid PID`): wires the pipeline (sources -> fan-out -> aggregation
//! -> exporters), runs the mode's controller, serves metrics and the JSON API until told to
//! stop or the VM exits, then detaches.

mod session;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::aggregate::lock;
use crate::cli::MonitorArgs;
use crate::export::http::Vms;
use crate::export::web_config::WebConfig;
use crate::record::writer::WriterStats;
use session::{OpenedVm, VmSession, open_vm};

/// Where a session's observations go besides the metrics endpoint.
#[derive(Default)]
pub struct Outputs {
    /// Record everything to this file (`record`, `check --pid`).
    pub record: Option<RecordTo>,
}

pub struct RecordTo {
    pub path: PathBuf,
    /// Stop when the file reaches this size.
    pub max_size: Option<u64>,
}

/// The address the monitor serves on when none is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9568";

pub fn run(cli: MonitorArgs, matches: &clap::ArgMatches) -> Result<()> {
    run_session(cli, matches, Outputs::default())
}

/// Attaches to the VMs, runs until told to stop, the --duration ends, a limit is reached or the
/// VMs exit (with --all: until told to stop), then detaches: the monitor, and `record` with its
/// file.
pub fn run_session(mut cli: MonitorArgs, matches: &clap::ArgMatches, outputs: Outputs) -> Result<()> {
    // The configuration file first: a bad one stops everything before anything attaches.
    if let Some(path) = cli.config.clone() {
        crate::config::ConfigFile::read(&path)?.apply(&mut cli, matches);
    }
    if outputs.record.is_some() && cli.flight_recorder.is_some() {
        anyhow::bail!("--flight-recorder is for the monitor (scope-probe --pid PID --flight-recorder DIR), not for record");
    }
    if outputs.record.is_some() && cli.pid.len() > MAX_RECORDED_VMS {
        anyhow::bail!("record takes up to {MAX_RECORDED_VMS} VMs at once, not {}", cli.pid.len());
    }
    // The endpoint's TLS and users, read before anything attaches: a bad file stops here.
    let web = match &cli.web_config {
        Some(path) => WebConfig::read(path)?,
        None => WebConfig::default(),
    };
    crate::privileges::check()?;
    // The pids given are opened before anything binds or attaches: a wrong one stops here.
    let mut vms = Vec::new();
    for pid in cli.pid.iter().copied().collect::<std::collections::BTreeSet<u32>>() {
        vms.push(open_vm(&cli, pid)?);
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            // Attaches and detaches run on blocking threads: a few, let go soon when idle (each
            // keeps its stack and malloc's caches while it lives).
            .max_blocking_threads(4)
            .thread_keep_alive(Duration::from_secs(2))
            .enable_all()
            .build()
            .context("starting the async runtime")?;
    runtime.block_on(monitor(cli, vms, outputs, web))
}

/// VMs one recording can hold (those of a merged recording, see cmd/merge.rs).
const MAX_RECORDED_VMS: usize = 16;

/// Where one VM's part of a recording of several goes until they are merged into the file
/// asked for.
fn part_path(output: &std::path::Path, os_pid: u32) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{os_pid}.part"));
    output.with_file_name(name)
}

/// Outputs for VM `pid` of a recording of several: its part, noted in `parts`.
fn part_of(parts: &mut Vec<(u32, PathBuf)>, record: Option<&RecordTo>, pid: u32) -> Option<Outputs> {
    let to = record?;
    let path = part_path(&to.path, pid);
    parts.push((pid, path.clone()));
    Some(Outputs { record: Some(RecordTo { path, max_size: to.max_size }) })
}

/// Forgets the part of a VM that could not be attached to (it holds nothing worth merging).
fn drop_part(parts: &mut Vec<(u32, PathBuf)>, pid: u32) {
    if let Some(i) = parts.iter().position(|(p, _)| *p == pid) {
        let _ = std::fs::remove_file(&parts.remove(i).1);
    }
}

/// How often VMs are checked for exit, and with --all, looked for.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// With --all, VMs attached side by side at most.
const ATTACHING_AT_ONCE: usize = 2;
/// With --all, a VM that cannot be attached to is tried this many times (one that has just
/// started may not have its tables yet), then left alone.
const ATTACH_TRIES: u32 = 3;

async fn monitor(cli: MonitorArgs, opened: Vec<OpenedVm>, outputs: Outputs, web: WebConfig) -> Result<()> {
    // SIGTERM and SIGINT are taken from here on: one that comes while the VMs are attached, or
    // the moment the endpoint is announced, stops the run cleanly instead of killing it.
    let signals = Signals::take();
    // Bind before attaching: a busy port must not leave probes behind. A recording serves
    // nothing unless asked to.
    let listen = match (cli.listen, &outputs.record) {
        (Some(a), _) => Some(a),
        (None, None) => Some(DEFAULT_LISTEN.parse().expect("a valid address")),
        (None, Some(_)) => None,
    };
    let listener = match listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} (use --listen to choose another address)"))?,
        ),
        None => None,
    };
    let instance = listener.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.to_string());
    let several = cli.all || opened.len() > 1;
    let served = Arc::new(Vms::default());
    let mut sessions: Vec<VmSession> = Vec::new();
    // A recording of several VMs: each to a part of its own, merged when they stop.
    let mut parts: Vec<(u32, PathBuf)> = Vec::new();
    for vm in opened {
        let own = if several { part_of(&mut parts, outputs.record.as_ref(), vm.target.pid) } else { None };
        match VmSession::start(&cli, vm, own.as_ref().unwrap_or(&outputs), instance.clone(), several) {
            Ok(s) => {
                served.add(s.app.clone());
                sessions.push(s);
            }
            Err(e) => {
                // Those attached already are let go before the error is told.
                for s in sessions {
                    let _ = s.stop("an attach failed");
                }
                for (_, p) in &parts {
                    let _ = std::fs::remove_file(p);
                }
                return Err(e);
            }
        }
    }
    if let Some(l) = &listener {
        let scheme = if web.tls.is_some() { "https" } else { "http" };
        eprintln!("scope-probe: metrics on {scheme}://{}/metrics{}", l.local_addr()?, web.describe());
    }
    if cli.all {
        eprintln!("scope-probe: watching for BEAM VMs (--all)");
    }
    let server = match listener {
        Some(l) => Some(serve(l, crate::export::http::router(served.clone()), &web)?),
        None => None,
    };
    // The recording's writers (one per VM recorded; under --all, more as VMs start).
    let stats: RecordingStats = Default::default();
    let add_stats = |s: &VmSession| {
        if let Some(r) = &s.recorder {
            lock(&stats).push(lock(r).writer().stats.clone());
        }
    };
    sessions.iter().for_each(add_stats);
    let progress = outputs.record.is_some().then(|| tokio::spawn(progress(stats.clone(), cli.duration)));
    let limit = outputs.record.as_ref().map(|r| (r.max_size.unwrap_or(u64::MAX), stats.clone()));

    let stop = wait_for_stop(signals, cli.duration, limit);
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(WATCH_EVERY);
    let mut tries: std::collections::HashMap<u32, u32> = Default::default();
    // With --all, VMs are attached side by side: one slow to open (a large binary, debug info to
    // fetch, a loaded machine) must not hold up the others.
    let mut attaching: tokio::task::JoinSet<(u32, Result<VmSession>)> = tokio::task::JoinSet::new();
    let mut attaching_pids: std::collections::HashSet<u32> = Default::default();
    let reason = loop {
        tokio::select! {
            reason = &mut stop => break reason,
            Some(done) = attaching.join_next(), if !attaching.is_empty() => {
                let (pid, started) = done?;
                attaching_pids.remove(&pid);
                match started {
                    Ok(s) => {
                        tries.remove(&pid);
                        served.add(s.app.clone());
                        add_stats(&s);
                        sessions.push(s);
                    }
                    Err(e) => {
                        drop_part(&mut parts, pid);
                        let n = tries.entry(pid).or_default();
                        *n += 1;
                        if *n == ATTACH_TRIES {
                            eprintln!("scope-probe: warning: leaving pid {pid} alone: {e:#}");
                        }
                    }
                }
                // A slot is free: the VMs waiting for one are looked for now, not at the tick.
            }
            _ = tick.tick() => {}
        }
        // VMs that stopped are let go: all of them off the endpoint at once, then detached.
        let (gone, alive): (Vec<VmSession>, Vec<VmSession>) = sessions.into_iter().partition(|s| !s.target.is_alive());
        sessions = alive;
        for s in &gone {
            served.remove(s.target.pid);
            if several {
                eprintln!("scope-probe: {} (pid {}) exited: detaching from it", s.app.vm.node, s.target.pid);
            }
        }
        for s in gone {
            // Detaching waits on the probe threads: off the async threads.
            tokio::task::spawn_blocking(move || s.stop("target exited")).await??;
            release_freed_memory();
        }
        if sessions.is_empty() && !cli.all {
            break "target exited";
        }
        if cli.all {
            let running = beam_probes::target::running_vms();
            tries.retain(|pid, _| running.contains(pid));
            for pid in running {
                let known = sessions.iter().any(|s| s.target.pid == pid) || attaching_pids.contains(&pid);
                if known || tries.get(&pid).is_some_and(|n| *n >= ATTACH_TRIES) {
                    continue;
                }
                // A few at a time: each attach reads binaries and builds tables, and many at once
                // would hold all that memory at once. The rest are taken as these finish.
                if attaching.len() >= ATTACHING_AT_ONCE {
                    break;
                }
                if outputs.record.is_some() && parts.len() >= MAX_RECORDED_VMS {
                    eprintln!("scope-probe: warning: a recording holds {MAX_RECORDED_VMS} VMs: leaving pid {pid} alone");
                    tries.insert(pid, ATTACH_TRIES);
                    continue;
                }
                // Opening reads the binary (and may fetch debug info): off the async threads.
                let own = part_of(&mut parts, outputs.record.as_ref(), pid).unwrap_or_default();
                let (c, i) = (cli.clone(), instance.clone());
                attaching_pids.insert(pid);
                attaching.spawn_blocking(move || (pid, open_vm(&c, pid).and_then(|vm| VmSession::start(&c, vm, &own, i, true))));
            }
        }
    };
    // Attaches still under way finish, then are let go with the rest.
    while let Some(done) = attaching.join_next().await {
        match done? {
            (_, Ok(s)) => sessions.push(s),
            (pid, Err(_)) => drop_part(&mut parts, pid),
        }
    }
    if let Some(p) = progress {
        p.abort();
        // The progress line is rewritten in place on a terminal: end it.
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!();
        }
    }
    let mut result = Ok(());
    for s in sessions {
        served.remove(s.target.pid);
        if let Err(e) = s.stop(reason) {
            result = Err(e);
        }
    }
    if let Some(s) = server {
        s.abort();
    }
    if let (Some(to), true) = (&outputs.record, several) {
        result = result.and_then(|()| finish_parts(&parts, &to.path));
    }
    result
}

/// A recording of several VMs, each recorded to a part: the parts merged into the file asked
/// for (one alone is that file), then removed.
fn finish_parts(parts: &[(u32, PathBuf)], output: &std::path::Path) -> Result<()> {
    let paths: Vec<PathBuf> = parts.iter().map(|(_, p)| p.clone()).collect();
    match paths.as_slice() {
        [] => anyhow::bail!("no BEAM VM was recorded: {} not written", output.display()),
        [one] => std::fs::rename(one, output).with_context(|| format!("moving {} to {}", one.display(), output.display()))?,
        _ => {
            crate::cmd::merge::merge(&paths, output)
                .with_context(|| format!("merging the VMs' recordings into {} (they are kept beside it)", output.display()))?;
            for p in &paths {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    Ok(())
}

/// Serves the endpoint on `listener`: over TLS and behind basic auth when the web
/// configuration asks.
fn serve(listener: tokio::net::TcpListener, router: axum::Router, web: &WebConfig) -> Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let router = match &web.auth {
        Some(auth) => router.layer(axum::middleware::from_fn_with_state(auth.clone(), crate::export::web_config::require_auth)),
        None => router,
    };
    Ok(match &web.tls {
        Some(tls) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_config(tls.clone());
            let server = axum_server::from_tcp_rustls(listener.into_std()?, config)?;
            tokio::spawn(async move { server.serve(router.into_make_service()).await })
        }
        None => tokio::spawn(async move { axum::serve(listener, router).await }),
    })
}

/// Hands memory freed by a detached VM back to the system (see `malloc_arenas` in main.rs).
fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free memory to the system.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The recording's progress on stderr: one line rewritten each second on a terminal, a line
/// every ten seconds otherwise.
async fn progress(stats: RecordingStats, duration: Option<Duration>) {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(if tty { 1 } else { 10 }));
    tick.tick().await;
    loop {
        tick.tick().await;
        let elapsed = started.elapsed().as_secs();
        let of = duration.map(|d| format!("/{}s", d.as_secs())).unwrap_or_default();
        let sum = |f: fn(&WriterStats) -> &std::sync::atomic::AtomicU64| lock(&stats).iter().map(|s| f(s).load(Ordering::Relaxed)).sum::<u64>();
        let dropped = match sum(|s| &s.dropped) {
            0 => String::new(),
            n => format!(", {n} dropped"),
        };
        let line = format!(
            "scope-probe: recording {elapsed}s{of}: {} entries, {}{dropped}",
            sum(|s| &s.entries),
            crate::units::bytes(sum(|s| &s.bytes))
        );
        if tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }
}

/// Waits for Ctrl-C, SIGTERM, the end of --duration, the recording's size limit or its failure.
/// The writers of a recording (one per VM recorded; under --all, more as VMs start).
type RecordingStats = Arc<Mutex<Vec<Arc<WriterStats>>>>;

/// The stop signals, handled from when they are taken.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn take() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals { term: signal(SignalKind::terminate()).ok(), int: signal(SignalKind::interrupt()).ok() }
    }
}

async fn received(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

async fn wait_for_stop(
    mut signals: Signals,
    duration: Option<Duration>,
    limit: Option<(u64, RecordingStats)>,
) -> &'static str {
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
    };
    // The recording's size limit, or its writer stopped by an error (a full disk): nothing
    // more could be written, so the run ends at once and says why.
    let full = async {
        match limit {
            Some((max, stats)) => loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let stats = lock(&stats);
                // The error itself is the run's result (see `VmSession::stop`).
                if stats.iter().any(|s| s.failure().is_some()) {
                    break "recording failed";
                }
                if stats.iter().map(|s| s.bytes.load(Ordering::Relaxed)).sum::<u64>() >= max {
                    break "size limit reached";
                }
            },
            None => std::future::pending::<&'static str>().await,
        }
    };
    tokio::select! {
        _ = received(&mut signals.int) => "interrupted",
        why = full => why,
        _ = received(&mut signals.term) => "terminated",
        _ = deadline => "duration elapsed",
    }
}
