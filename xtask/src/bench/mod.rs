//! `cargo xtask bench`: what scope-probe costs the observed VM, against a baseline and against
//! its peers (the BEAM's own tracer, `perf record` with `+JPperf`), measured in the same run on
//! the same machine, and what scope-probe itself uses; written as markdown and JSON under
//! bench/results/.
//!
//! Each round measures every configuration once, in an order rotated round by round (so no
//! configuration always runs first, right after the VM's warm-up, or last), and each
//! configuration's ratio is taken against the baseline of its own round: drift between rounds
//! (thermal, other load) cancels pair by pair. The tables give the median of those per-round
//! ratios with their spread. Timing starts only once scope-probe says it is attached (the
//! monitor's `metrics on` line, printed after its hooks are in; the profiler's `profiling pid`
//! line, printed after its sampler is), and the CPU scope-probe spent getting there is
//! reported apart from what it uses while measuring.

pub(crate) mod app;
pub(crate) mod report;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use report::{Report, Table};
use scope_probe_tests::Beam;
use scope_probe_tests::probe::free_port;
use serde_json::json;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Workload {
    /// Message-bound: two processes ping-ponging (round trips/s).
    PingPong,
    /// CPU-bound: one burner per scheduler (work units/s).
    Cpu,
    /// Spawn-heavy: short-lived processes spawned as fast as possible (spawns/s).
    Spawn,
    /// GC-heavy: small-heap processes building and dropping lists (lists/s).
    Gc,
    /// Process-heavy: round trips to each of 100,000 processes in turn (round trips/s).
    Fanout,
    /// The real application: yaws under wrk (requests/s).
    Http,
    /// Call-heavy: 8 callers of one gen_server (calls/s), what the call view pairs.
    Calls,
}

const WORKLOADS: [Workload; 7] =
    [Workload::PingPong, Workload::Cpu, Workload::Spawn, Workload::Gc, Workload::Fanout, Workload::Http, Workload::Calls];

#[derive(Clone, Copy, PartialEq, Debug)]
enum Config {
    Baseline,
    /// The default: adaptive mode (sampler at 99 Hz, table reads, hooks in windows within 1%).
    Adaptive,
    /// Sampler and table reads, never a per-event hook.
    Sample,
    /// The monitor with every per-event hook, sampler off.
    Trace,
    /// The CPU sampler alone at 99 Hz (`scope-probe profile`).
    Profile,
    /// The BEAM's own tracer with trace mode's detail: send, running, GC, procs of every process.
    ErlangTrace,
    /// The same workload on a VM started with `+JPperf true`, nothing attached.
    JpBaseline,
    /// `perf record -F 99 -g` on that VM.
    Perf,
    /// Trace mode on the systemtap build, every capability from uprobes.
    TraceUprobe,
    /// Trace mode on the systemtap build, USDT wherever a probe serves (`--probe-source usdt`).
    TraceUsdt,
    /// Adaptive mode with a 5% budget.
    Adaptive5,
}

/// What every workload is measured under.
const PEERS: [Config; 8] = [
    Config::Baseline,
    Config::Adaptive,
    Config::Sample,
    Config::Trace,
    Config::Profile,
    Config::ErlangTrace,
    Config::JpBaseline,
    Config::Perf,
];

impl Config {
    fn label(self) -> &'static str {
        match self {
            Config::Baseline => "no probe (baseline)",
            Config::Adaptive => "scope-probe (default: adaptive, 1% budget)",
            Config::Sample => "scope-probe --mode sample",
            Config::Trace => "scope-probe --mode trace --frequency 0",
            Config::Profile => "scope-probe profile (99 Hz)",
            Config::ErlangTrace => "erlang:trace, same detail",
            Config::JpBaseline => "VM with +JPperf true, nothing attached",
            Config::Perf => "perf record -F 99 -g, VM with +JPperf true",
            Config::TraceUprobe => "scope-probe --mode trace --frequency 0 --probe-source uprobe",
            Config::TraceUsdt => "scope-probe --mode trace --frequency 0 --probe-source usdt",
            Config::Adaptive5 => "scope-probe --overhead-budget 5%",
        }
    }

    fn is_scope_probe(self) -> bool {
        !matches!(self, Config::Baseline | Config::ErlangTrace | Config::JpBaseline | Config::Perf)
    }

    /// Runs on the VM started with `+JPperf true`.
    fn on_jp_vm(self) -> bool {
        matches!(self, Config::JpBaseline | Config::Perf)
    }
}

struct Row {
    workload: Workload,
    config: Config,
    /// One per round.
    rates: Vec<f64>,
    /// CPU seconds the tool (scope-probe or perf) used per second of measurement, per round.
    tool_cpu: Vec<f64>,
    /// Its peak resident memory, MiB, per round.
    tool_rss: Vec<f64>,
    /// CPU seconds scope-probe used from start until attached, per round.
    attach_cpu: Vec<f64>,
    /// The VM's CPU time per operation, µs (the real application), per round.
    cpu_per_op: Vec<f64>,
    /// Its own estimate of what its hooks cost the VM (adaptive mode), per round.
    estimates: Vec<f64>,
}

impl Row {
    fn ratios(&self, base: &Row) -> Vec<f64> {
        self.rates.iter().zip(&base.rates).map(|(x, b)| x / b).collect()
    }
}

/// What one measurement gives.
#[derive(Default)]
struct Measured {
    rate: f64,
    tool_cpu: f64,
    tool_rss: f64,
    attach_cpu: f64,
    cpu_per_op: Option<f64>,
    /// In adaptive mode, what the probe estimated its hooks cost (scope_probe_overhead_ratio).
    overhead_estimate: Option<f64>,
}

/// A VM under a workload: a bare one, or the real application's.
enum Vm {
    Bare(Beam),
    App(app::App),
}

impl Vm {
    fn beam(&mut self) -> &mut Beam {
        match self {
            Vm::Bare(b) => b,
            Vm::App(a) => &mut a.beam,
        }
    }
}

/// The VM measured, and its twin started with `+JPperf true` for perf.
struct Vms {
    plain: Vm,
    jp: Option<Vm>,
}

pub fn run(bin: &Path, each: Duration, rounds: usize, only: Option<&str>, out: &Path) -> Result<()> {
    crate::setup::require_root("the benchmark attaches probes to a BEAM")?;
    let mut report = Report::new();
    let ms = each.as_millis();
    let rounds = rounds.max(1);
    let target = scope_probe_tests::beam::test_target();
    match only {
        None => {}
        Some("snapshot") => return snapshot_bench(bin, &mut report),
        Some("profile") => return profile_bench(bin, &mut report),
        Some("adaptive") => return adaptive_bench(bin, rounds, &mut report).map(|_| ()),
        Some("events") => return event_rate_bench(bin, &mut report),
        Some("start") => return first_metric_bench(bin, &mut report),
        Some("app") => return app_bench(bin, rounds, ms, &mut report).map(|_| ()),
        Some("calls") => return calls_bench(bin, rounds, ms, &mut report).map(|_| ()),
        Some("overhead") => {}
        Some(other) => anyhow::bail!("--only {other}: expected overhead, app, calls, adaptive, events, start, snapshot or profile"),
    }
    let mut rows = workloads_bench(bin, rounds, ms, &mut report)?;
    // SCOPE_PROBE_TEST_TARGET picks the VM like it does for the tests (e.g. trixie's OTP 27);
    // the rest is about the host's OTP 25 and stays out.
    if target.is_some() {
        return Ok(());
    }
    rows.extend(processes_bench(bin, rounds, ms, &mut report)?);
    rows.extend(app_bench(bin, rounds, ms, &mut report)?);
    rows.extend(calls_bench(bin, rounds, ms, &mut report)?);
    usdt_bench(bin, ms, rounds, &mut report)?;
    if only == Some("overhead") {
        return Ok(());
    }
    let long = adaptive_bench(bin, rounds, &mut report)?;
    let events = event_rate_bench_value(bin, &mut report)?;
    let first = first_metric_value(bin, &mut report)?;
    let snapshot_rss = snapshot_value(bin, &mut report)?;
    let profile_rss = profile_value(bin, &mut report)?;
    goals(&rows, &long, events, first, snapshot_rss.max(profile_rss), &mut report);
    let args = format!("bench --each {} --rounds {rounds}", humantime::format_duration(each));
    report.write(out, &machine(), &args)
}

/// The synthetic workloads on the stock VM.
fn workloads_bench(bin: &Path, rounds: usize, ms: u128, report: &mut Report) -> Result<Vec<Row>> {
    let mut vms = Vms { plain: Vm::Bare(Beam::start()), jp: Some(Vm::Bare(Beam::start_with(Path::new("erl"), &["+JPperf", "true"], &[]))) };
    let otp = vms.plain.beam().call("erlang:system_info(otp_release)")["value"].trim_matches('"').to_owned();
    // Warm up the JIT'd code and the schedulers.
    for vm in [Some(&mut vms.plain), vms.jp.as_mut()].into_iter().flatten() {
        for w in &WORKLOADS[..4] {
            run_workload(vm, *w, ms)?;
        }
    }
    let plan: Vec<(Workload, Config)> = WORKLOADS[..4].iter().flat_map(|&w| PEERS.iter().map(move |&c| (w, c))).collect();
    let label = match scope_probe_tests::beam::test_target() {
        Some(t) => format!("OTP {otp}, test target {}", t.name),
        None => format!("stock Debian OTP {otp}"),
    };
    run_rows(&mut vms, bin, &plan, rounds, ms, &format!("{label}, synthetic workloads"), report)
}

/// A VM holding 100,000 processes, each reached in turn: the table reads and the per-process
/// state of every tool grow with it.
fn processes_bench(bin: &Path, rounds: usize, ms: u128, report: &mut Report) -> Result<Vec<Row>> {
    let mut plain = Beam::start();
    let mut jp = Beam::start_with(Path::new("erl"), &["+JPperf", "true"], &[]);
    for b in [&mut plain, &mut jp] {
        b.call("scope_bench:procs(100000)");
        b.call(&format!("scope_bench:fanout({ms})"));
    }
    let mut vms = Vms { plain: Vm::Bare(plain), jp: Some(Vm::Bare(jp)) };
    let plan: Vec<(Workload, Config)> = PEERS.iter().map(|&c| (Workload::Fanout, c)).collect();
    run_rows(&mut vms, bin, &plan, rounds, ms, "stock Debian OTP 25 holding 100,000 processes", report)
}

/// yaws from Debian's packages under wrk, with the VM's CPU per request beside the throughput
/// (the load generator shares the machine, so throughput moves more than CPU per request).
fn app_bench(bin: &Path, rounds: usize, ms: u128, report: &mut Report) -> Result<Vec<Row>> {
    let jp: Vec<&str> = app::NO_SPIN.iter().copied().chain(["+JPperf", "true"]).collect();
    let mut vms = Vms { plain: Vm::App(app::App::start(&app::NO_SPIN)?), jp: Some(Vm::App(app::App::start(&jp)?)) };
    let plan: Vec<(Workload, Config)> = PEERS.iter().map(|&c| (Workload::Http, c)).collect();
    // wrk's throughput on a 2-core machine moves by tens of percent over a few seconds: the
    // application gets 10 s runs at least.
    run_rows(
        &mut vms,
        bin,
        &plan,
        rounds,
        ms.max(10_000),
        "yaws 2.1.1 (Debian's erlang-yaws) on OTP 25 (+sbwt none) under wrk, 16 connections",
        report,
    )
}

/// gen_server calls, callers blocked in them: in adaptive mode the table reads find the callers
/// waiting and ask for send windows to pair their calls (the call view), within the budget.
fn calls_bench(bin: &Path, rounds: usize, ms: u128, report: &mut Report) -> Result<Vec<Row>> {
    let mut beam = Beam::start();
    // Warm up the JIT'd code and the schedulers.
    beam.call(&format!("scope_bench:calls({ms})"));
    let mut vms = Vms { plain: Vm::Bare(beam), jp: None };
    let plan: Vec<(Workload, Config)> =
        [Config::Baseline, Config::Adaptive, Config::Sample, Config::Trace].iter().map(|&c| (Workload::Calls, c)).collect();
    run_rows(&mut vms, bin, &plan, rounds, ms, "stock Debian OTP 25, gen_server calls (the call view's windows)", report)
}

/// The adaptive mode over longer runs, where its windows come and go: whether it keeps to its
/// budget on the costliest workload for hooks (ping-pong, 20 s per run: every hook hit is a
/// send or a schedule), and how close the rates it estimates from its windows come to the
/// exact count of trace mode on a paced workload.
fn adaptive_bench(bin: &Path, rounds: usize, report: &mut Report) -> Result<Vec<Row>> {
    let mut beam = Beam::start();
    let ms = 20_000;
    beam.call("scope_bench:pingpong(3000)");
    let mut vms = Vms { plain: Vm::Bare(beam), jp: None };
    let plan = [(Workload::PingPong, Config::Baseline), (Workload::PingPong, Config::Adaptive), (Workload::PingPong, Config::Adaptive5)];
    let rows = run_rows(&mut vms, bin, &plan, rounds, ms, "stock Debian OTP 25, adaptive mode over 20 s runs", report)?;
    rates_bench(bin, vms.plain.beam(), report)?;
    Ok(rows)
}

/// Sends paced at 20,000 a second for 30 s: the VM's own count against trace mode's count and
/// the adaptive mode's estimate (messages counted in its windows over the seconds its send
/// hook was attached), each from the probe's metrics.
fn rates_bench(bin: &Path, beam: &mut Beam, report: &mut Report) -> Result<()> {
    const RATE: u32 = 20_000;
    const MS: u32 = 30_000;
    let pid = beam.os_pid.to_string();
    let mut table = Table::new(
        format!("Message rate of a paced sender ({RATE}/s for {} s): the VM's count against the probe's", MS / 1000),
        &["configuration", "VM's rate", "probe's rate", "error"],
    );
    let mut data = Vec::new();
    for (label, mode) in [("--mode trace (exact count)", "trace"), ("--mode adaptive (windows, 1% budget)", "adaptive")] {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut p = start_and_wait(bin, &["--pid", &pid, "--listen", &listen, "--mode", mode, "--frequency", "0"], "metrics on http://")?;
        let read = || -> Result<(f64, f64)> {
            let m = scrape(&listen)?;
            Ok((
                m.get("beam_messages_sent_total", &[]).unwrap_or(0.0),
                m.get("scope_probe_observed_seconds_total", &[("capability", "send")]).unwrap_or(0.0),
            ))
        };
        let (n0, o0) = read()?;
        let started = Instant::now();
        let sent: f64 = beam.call(&format!("scope_bench:paced({RATE}, {MS})"))["sent"].parse()?;
        let wall = started.elapsed().as_secs_f64();
        // The last window's counts reach the metrics within a drain.
        std::thread::sleep(Duration::from_millis(500));
        let (n1, o1) = read()?;
        stop(&mut p)?;
        let vm_rate = sent / (MS as f64 / 1000.0);
        let probe_rate = if mode == "trace" { (n1 - n0) / wall } else { (n1 - n0) / (o1 - o0).max(1e-9) };
        let error = probe_rate / vm_rate - 1.0;
        table.row(vec![label.into(), format!("{vm_rate:.0}/s"), format!("{probe_rate:.0}/s"), format!("{:+.1}%", error * 100.0)]);
        data.push(json!({"mode": mode, "vm_rate": vm_rate, "probe_rate": probe_rate, "error": error}));
    }
    table.data = json!(data);
    report.add(table);
    Ok(())
}

fn event_rate_bench(bin: &Path, report: &mut Report) -> Result<()> {
    event_rate_bench_value(bin, report).map(|_| ())
}

/// The largest event rate userspace takes in with nothing lost: trace mode (every hook) on a
/// VM whose paced sender steps up until the probe loses events or the VM cannot send faster
/// with the hooks in. Returns (the largest zero-loss rate, whether the VM was the limit).
fn event_rate_bench_value(bin: &Path, report: &mut Report) -> Result<(f64, bool)> {
    let mut beam = Beam::start();
    let pid = beam.os_pid.to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut p = start_and_wait(bin, &["--pid", &pid, "--listen", &listen, "--mode", "trace", "--frequency", "0"], "metrics on http://")?;
    // Losses for want of capacity (a full ring or table, a consumer behind); the others
    // (a read fault, an unpaired schedule at a window's edge) are about the VM, not the rate.
    const NOT_CAPACITY: [&str; 3] = ["read_fault", "unpaired", "pid_string"];
    let read = || -> Result<(f64, f64)> {
        let m = scrape(&listen)?;
        let events = m.all("scope_probe_events_total").iter().map(|s| s.value).sum::<f64>();
        let lost = m
            .all("scope_probe_events_lost_total")
            .iter()
            .filter(|s| !s.labels.get("reason").is_some_and(|r| NOT_CAPACITY.contains(&r.as_str())))
            .map(|s| s.value)
            .sum::<f64>();
        Ok((events, lost))
    };
    let mut table = Table::new(
        "Events through userspace: trace mode (every hook, sampler off) on a paced sender stepping up, 3 s a step",
        &["sends asked", "sends done", "events received", "events lost (full ring or table, consumer behind)"],
    );
    let (mut best, mut vm_limited, mut data) = (0.0f64, false, Vec::new());
    for rate in [50_000u32, 100_000, 200_000, 400_000, 800_000, 1_600_000] {
        let (e0, l0) = read()?;
        let started = Instant::now();
        let sent: f64 = beam.call(&format!("scope_bench:paced({rate}, 3000)"))["sent"].parse()?;
        std::thread::sleep(Duration::from_millis(300));
        let (e1, l1) = read()?;
        let wall = started.elapsed().as_secs_f64();
        let (events, lost) = ((e1 - e0) / wall, l1 - l0);
        let done = sent / 3.0;
        table.row(vec![format!("{rate}/s"), format!("{done:.0}/s"), format!("{events:.0}/s"), format!("{lost:.0}")]);
        data.push(json!({"asked": rate, "sends": done, "events_per_second": events, "lost": lost}));
        if lost > 0.0 {
            break;
        }
        best = best.max(events);
        if done < f64::from(rate) * 0.8 {
            vm_limited = true;
            break;
        }
    }
    stop(&mut p)?;
    table.data = json!({"steps": data, "zero_loss_events_per_second": best, "limited_by_vm": vm_limited});
    report.add(table);
    Ok((best, vm_limited))
}

fn first_metric_bench(bin: &Path, report: &mut Report) -> Result<()> {
    first_metric_value(bin, report).map(|_| ())
}

/// From starting `scope-probe --pid P` (the default mode) to the first scrape that carries the
/// VM's metrics (a `beam_` series), median of 3.
fn first_metric_value(bin: &Path, report: &mut Report) -> Result<f64> {
    let beam = Beam::start();
    let pid = beam.os_pid.to_string();
    let mut runs = Vec::new();
    for _ in 0..3 {
        let listen = format!("127.0.0.1:{}", free_port());
        let started = Instant::now();
        let mut child = Command::new(bin).args(["--pid", &pid, "--listen", &listen]).stderr(Stdio::null()).spawn()?;
        let took = loop {
            if let Ok(m) = scrape(&listen)
                && m.samples.iter().any(|s| s.name.starts_with("beam_"))
            {
                break started.elapsed().as_secs_f64();
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "no beam_ metric within 30 s");
            anyhow::ensure!(child.try_wait()?.is_none(), "scope-probe exited before its first metric");
            std::thread::sleep(Duration::from_millis(10));
        };
        stop(&mut child)?;
        runs.push(took);
    }
    let first = median(&runs);
    let mut table =
        Table::new("Time to first metric: `scope-probe --pid P` started to a scrape with the VM's metrics, 3 runs", &["measure", "value"]);
    table.row(vec!["median".into(), format!("{first:.2} s")]);
    table.row(vec!["min-max".into(), format!("{:.2}-{:.2} s", min(&runs), max(&runs))]);
    table.data = json!({"seconds": runs});
    report.add(table);
    Ok(first)
}

fn profile_bench(bin: &Path, report: &mut Report) -> Result<()> {
    profile_value(bin, report).map(|_| ())
}

/// `scope-probe profile` on a VM whose JIT has over 100,000 symbols (50,000 generated functions
/// besides OTP's), while a server burns CPU in BIFs: scope-probe's peak memory (goal: 64 MiB),
/// and what the profile attributed. Returns the peak memory, MiB.
fn profile_value(bin: &Path, report: &mut Report) -> Result<f64> {
    let mut beam = Beam::start();
    beam.call("scope_bench:many_functions(50, 1000)");
    beam.call("scope_cpu:bif_server()");
    let mut runs = Vec::new();
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("cpu.svg");
    for _ in 0..3 {
        let o = Command::new("/usr/bin/time")
            .args(["-f", "%M"])
            .arg(bin)
            .args(["profile", "--pid", &beam.os_pid.to_string(), "--duration", "10s", "-o"])
            .arg(&out)
            .output()
            .context("running /usr/bin/time scope-probe profile")?;
        let stderr = String::from_utf8_lossy(&o.stderr);
        anyhow::ensure!(o.status.success(), "profile failed: {stderr}");
        let peak_kib: f64 = stderr.lines().last().and_then(|l| l.trim().parse().ok()).context("peak RSS from /usr/bin/time")?;
        // "... JIT symbols: <source> (N known)" and "... N samples, M attributed to processes (K with whole ...".
        // The last occurrence: the summary line, not the progress lines before it.
        let number_before = |text: &str, marker: &str| -> f64 {
            text.rfind(marker)
                .and_then(|i| text[..i].split_whitespace().last())
                .and_then(|n| n.trim_start_matches('(').parse().ok())
                .unwrap_or(0.0)
        };
        let symbols = number_before(&stderr, "known)");
        let samples = number_before(&stderr, "samples,");
        let attributed = number_before(&stderr, "attributed to processes");
        let whole = number_before(&stderr, "with whole Erlang stacks");
        runs.push([peak_kib / 1024.0, symbols, samples, attributed, whole]);
    }
    let med = |i: usize| median(&runs.iter().map(|r| r[i]).collect::<Vec<_>>());
    let mut table = Table::new(
        "`scope-probe profile`, 10 s at 99 Hz, a BIF-heavy server on a VM with 50,000 generated functions, 3 runs, median",
        &["measure", "value"],
    );
    table.row(vec!["JIT symbols known".into(), format!("{:.0}", med(1))]);
    table.row(vec!["peak memory of scope-probe".into(), format!("{:.1} MiB", med(0))]);
    table.row(vec!["samples".into(), format!("{:.0}", med(2))]);
    table.row(vec!["attributed to processes".into(), format!("{:.0} ({:.0}%)", med(3), 100.0 * med(3) / med(2).max(1.0))]);
    table.row(vec!["of those, with the whole Erlang stack".into(), format!("{:.0} ({:.0}%)", med(4), 100.0 * med(4) / med(3).max(1.0))]);
    table.data = json!({"peak_rss_mib": med(0), "symbols": med(1), "samples": med(2), "attributed": med(3), "whole_stacks": med(4)});
    report.add(table);
    Ok(med(0))
}

/// The same ping-pong on the systemtap build (`cargo xtask otp-usdt`): its baseline, uprobe
/// sources and USDT sources, interleaved like the rest. A USDT hit costs the VM more than the
/// trap: with a probe's semaphore raised, the VM formats the pid strings (`%T`) at every site.
fn usdt_bench(bin: &Path, ms: u128, rounds: usize, report: &mut Report) -> Result<()> {
    let usdt = crate::otp_usdt::provision(false)?;
    let copy = scope_probe_tests::otp_copy::OtpCopy::with_beam(&usdt);
    let mut beam = copy.start();
    beam.call(&format!("scope_bench:pingpong({ms})"));
    let mut vms = Vms { plain: Vm::Bare(beam), jp: None };
    let plan = [(Workload::PingPong, Config::Baseline), (Workload::PingPong, Config::TraceUprobe), (Workload::PingPong, Config::TraceUsdt)];
    run_rows(&mut vms, bin, &plan, rounds, ms, "systemtap OTP 25 build (cargo xtask otp-usdt)", report)?;
    Ok(())
}

fn run_rows(
    vms: &mut Vms,
    bin: &Path,
    plan: &[(Workload, Config)],
    rounds: usize,
    ms: u128,
    vm: &str,
    report: &mut Report,
) -> Result<Vec<Row>> {
    let mut rows: Vec<Row> = plan
        .iter()
        .map(|&(workload, config)| Row {
            workload,
            config,
            rates: vec![],
            tool_cpu: vec![],
            tool_rss: vec![],
            attach_cpu: vec![],
            cpu_per_op: vec![],
            estimates: vec![],
        })
        .collect();
    for round in 0..rounds {
        for i in rotated(rows.len(), round) {
            let row = &mut rows[i];
            let m = measure(vms, bin, row.workload, row.config, ms)?;
            eprintln!("xtask: round {}: {:<12} {:<45} {:>12.0}/s", round + 1, name(row.workload), row.config.label(), m.rate);
            row.rates.push(m.rate);
            row.tool_cpu.push(m.tool_cpu);
            row.tool_rss.push(m.tool_rss);
            row.attach_cpu.push(m.attach_cpu);
            row.cpu_per_op.extend(m.cpu_per_op);
            row.estimates.extend(m.overhead_estimate);
        }
    }
    let mut table = Table::new(
        format!(
            "{vm}: {rounds} rounds of {ms} ms each, order rotated per round; ratio = median of the per-round ratios to that \
             round's baseline (min-max)"
        ),
        &[
            "workload",
            "configuration",
            "rate (median)",
            "vs baseline",
            "spread",
            "tool's CPU (steady)",
            "tool's peak RSS",
            "attach CPU",
            "VM CPU per op",
            "its cost estimate",
        ],
    );
    let mut data = Vec::new();
    for w in WORKLOADS {
        let Some(base) = rows.iter().find(|r| r.workload == w && r.config == Config::Baseline) else { continue };
        for r in rows.iter().filter(|r| r.workload == w) {
            let ratios = r.ratios(base);
            let tool = r.config.is_scope_probe() || r.config == Config::Perf;
            let dash = || "-".to_owned();
            table.row(vec![
                name(w).into(),
                r.config.label().into(),
                format!("{:.0} {}", median(&r.rates), unit(w)),
                format!("{:.3}", median(&ratios)),
                format!("{:.3}-{:.3}", min(&ratios), max(&ratios)),
                if tool { format!("{:.1}% of a core", median(&r.tool_cpu) * 100.0) } else { dash() },
                if tool { format!("{:.0} MiB", median(&r.tool_rss)) } else { dash() },
                if r.config.is_scope_probe() { format!("{:.0} ms", median(&r.attach_cpu) * 1000.0) } else { dash() },
                if r.cpu_per_op.is_empty() { dash() } else { format!("{:.1} µs", median(&r.cpu_per_op)) },
                if r.estimates.is_empty() { dash() } else { format!("{:.2}%", median(&r.estimates) * 100.0) },
            ]);
            data.push(json!({
                "workload": name(w),
                "config": r.config.label(),
                "rates": r.rates,
                "ratios": ratios,
                "ratio": median(&ratios),
                "tool_cpu": r.tool_cpu,
                "tool_rss_mib": r.tool_rss,
                "attach_cpu": r.attach_cpu,
                "vm_cpu_per_op_us": r.cpu_per_op,
                "cost_estimates": r.estimates,
            }));
        }
    }
    table.data = json!(data);
    report.add(table);
    Ok(rows)
}

/// The goals of the issue that set them, against what this run measured. `rows` are the 3 s
/// runs of every workload, `long` the 20 s runs of the adaptive mode (its steady state: over
/// 3 s, its start-up (first table read, JIT symbols, first window) weighs in).
fn goals(rows: &[Row], long: &[Row], (events, vm_limited): (f64, bool), first: f64, rss: f64, report: &mut Report) {
    let ratio_in = |rows: &[Row], w: Workload, c: Config| -> Option<f64> {
        let base = rows.iter().find(|r| r.workload == w && r.config == Config::Baseline)?;
        rows.iter().find(|r| r.workload == w && r.config == c).map(|r| median(&r.ratios(base)))
    };
    let ratio_of = |w, c| ratio_in(rows, w, c);
    let adaptive: Vec<(Workload, f64)> = WORKLOADS.iter().filter_map(|&w| Some((w, ratio_of(w, Config::Adaptive)?))).collect();
    let (worst_w, worst) = adaptive.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap_or((Workload::PingPong, 0.0));
    let steady = ratio_in(long, Workload::PingPong, Config::Adaptive).unwrap_or(0.0);
    report.goal(
        "adaptive ≥ 0.99 of baseline on every workload",
        format!(
            "ping-pong over 20 s runs {steady:.3}; 3 s runs: lowest {worst:.3} ({}); {}",
            name(worst_w),
            adaptive.iter().map(|(w, r)| format!("{} {r:.3}", name(*w))).collect::<Vec<_>>().join(", ")
        ),
        worst >= 0.99 && steady >= 0.99,
    );
    let (trace, erlang) =
        (ratio_of(Workload::Http, Config::Trace).unwrap_or(0.0), ratio_of(Workload::Http, Config::ErlangTrace).unwrap_or(0.0));
    let per_op = |c: Config| rows.iter().find(|r| r.workload == Workload::Http && r.config == c).map_or(0.0, |r| median(&r.cpu_per_op));
    report.goal(
        "trace mode ahead of erlang:trace for the same detail on the real application",
        format!(
            "yaws: trace mode {trace:.3} of baseline ({:.1} µs VM CPU per request), erlang:trace {erlang:.3} ({:.1} µs)",
            per_op(Config::Trace),
            per_op(Config::ErlangTrace)
        ),
        trace > erlang && per_op(Config::Trace) < per_op(Config::ErlangTrace),
    );
    let cpu_of = |rows: &[Row]| rows.iter().filter(|r| r.config == Config::Adaptive).map(|r| median(&r.tool_cpu)).fold(0.0, f64::max);
    let (long_cpu, short_cpu) = (cpu_of(long), cpu_of(rows));
    report.goal(
        "scope-probe ≤ 2% of one core (default mode)",
        format!("{:.1}% over 20 s runs; up to {:.1}% over 3 s runs, start-up included", long_cpu * 100.0, short_cpu * 100.0),
        long_cpu <= 0.02,
    );
    let monitor_rss = rows.iter().filter(|r| r.config.is_scope_probe()).map(|r| median(&r.tool_rss)).fold(0.0, f64::max);
    let rss = rss.max(monitor_rss);
    report.goal("scope-probe ≤ 64 MiB RSS", format!("at most {rss:.0} MiB (every mode, snapshot at 100k processes, profile)"), rss <= 64.0);
    report.goal(
        "≥ 1 M events/s through userspace",
        format!("{events:.0}/s with nothing lost{}", if vm_limited { " (the VM could send no faster with every hook in)" } else { "" }),
        events >= 1e6,
    );
    report.goal("first metric ≤ 2 s", format!("{first:.2} s"), first <= 2.0);
}

/// The order of `n` configurations in round `round`: rotated by one each round.
fn rotated(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + round) % n)
}

fn snapshot_bench(bin: &Path, report: &mut Report) -> Result<()> {
    snapshot_value(bin, report).map(|_| ())
}

/// The process table read from outside: time and memory of `scope-probe snapshot` on a VM with
/// 100,000 processes started by proc_lib (each with a dictionary holding its identity, which
/// the snapshot reads) (goal: under 1 s and under 64 MiB). Returns the peak memory, MiB.
fn snapshot_value(bin: &Path, report: &mut Report) -> Result<f64> {
    const N: u32 = 100_000;
    let mut beam = Beam::start();
    beam.call(&format!("scope_table:many({N})"));
    let mut runs = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        // GNU time reports the child's own peak RSS (%M, KiB); a wait4 rusage from here would
        // also count this process's pages copied at fork.
        let out = Command::new("/usr/bin/time")
            .args(["-f", "%M"])
            .arg(bin)
            .args(["snapshot", "--pid", &beam.os_pid.to_string(), "--json", "--all"])
            .output()
            .context("running /usr/bin/time scope-probe snapshot")?;
        anyhow::ensure!(out.status.success(), "snapshot failed: {}", String::from_utf8_lossy(&out.stderr));
        let peak_kib: f64 = String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .context("peak RSS from /usr/bin/time")?;
        let wall = started.elapsed().as_secs_f64();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).context("snapshot JSON")?;
        let count = json["process_count"].as_u64().unwrap_or(0);
        anyhow::ensure!(count >= u64::from(N), "snapshot saw {count} processes, expected at least {N}");
        runs.push((json["snapshot_seconds"].as_f64().unwrap_or(0.0), wall, peak_kib / 1024.0));
    }
    let med = |i: usize| median(&runs.iter().map(|r| [r.0, r.1, r.2][i]).collect::<Vec<_>>());
    let mut table = Table::new(
        format!("The process table, {N} idle proc_lib processes (identity and memory read), 3 runs, median"),
        &["measure", "value"],
    );
    table.row(vec!["reading the table (snapshot_seconds)".into(), format!("{:.3} s", med(0))]);
    table.row(vec![
        "whole `scope-probe snapshot --json --all` (attach, JIT symbols, JSON of every process)".into(),
        format!("{:.3} s", med(1)),
    ]);
    table.row(vec!["peak memory of scope-probe".into(), format!("{:.1} MiB", med(2))]);
    table.data = json!({"table_seconds": med(0), "command_seconds": med(1), "peak_rss_mib": med(2)});
    report.add(table);
    Ok(med(2))
}

fn name(w: Workload) -> &'static str {
    match w {
        Workload::PingPong => "ping-pong",
        Workload::Cpu => "cpu-bound",
        Workload::Spawn => "spawn-heavy",
        Workload::Gc => "gc-heavy",
        Workload::Fanout => "100k processes",
        Workload::Http => "yaws (real app)",
        Workload::Calls => "gen_server calls",
    }
}

fn unit(w: Workload) -> &'static str {
    match w {
        Workload::PingPong | Workload::Fanout => "round trips/s",
        Workload::Cpu => "units/s",
        Workload::Spawn => "spawns/s",
        Workload::Gc => "lists/s",
        Workload::Http => "requests/s",
        Workload::Calls => "calls/s",
    }
}

/// Runs the workload for `ms`: its rate, and for the real application the VM's CPU per request.
fn run_workload(vm: &mut Vm, w: Workload, ms: u128) -> Result<(f64, Option<f64>)> {
    if let Vm::App(app) = vm {
        let load = app.load(Duration::from_millis(ms as u64))?;
        return Ok((load.rate(), Some(load.cpu_per_request_us())));
    }
    let call = match w {
        Workload::PingPong => format!("scope_bench:pingpong({ms})"),
        Workload::Cpu => format!("scope_bench:cpu({ms})"),
        Workload::Spawn => format!("scope_bench:spawns({ms})"),
        Workload::Gc => format!("scope_bench:gc({ms})"),
        Workload::Fanout => format!("scope_bench:fanout({ms})"),
        Workload::Calls => format!("scope_bench:calls({ms})"),
        Workload::Http => anyhow::bail!("the HTTP workload runs on the application's VM"),
    };
    let reply = vm.beam().call(&call);
    let rate = reply.values().next().context("no rate from the VM")?.parse().context("rate from the VM")?;
    Ok((rate, None))
}

fn measure(vms: &mut Vms, bin: &Path, w: Workload, config: Config, ms: u128) -> Result<Measured> {
    let vm = if config.on_jp_vm() { vms.jp.as_mut().context("no +JPperf VM for this workload")? } else { &mut vms.plain };
    let pid = vm.beam().os_pid.to_string();
    let mut metrics_at: Option<String> = None;
    let perf_data = tempfile::NamedTempFile::new()?;
    let tool = match config {
        Config::Trace | Config::TraceUprobe | Config::TraceUsdt => {
            let listen = format!("127.0.0.1:{}", free_port());
            let mut args = vec!["--pid", &pid, "--listen", &listen, "--mode", "trace", "--frequency", "0"];
            match config {
                Config::TraceUprobe => args.extend(["--probe-source", "uprobe"]),
                Config::TraceUsdt => args.extend(["--probe-source", "usdt"]),
                _ => {}
            }
            Some(start_and_wait(bin, &args, "metrics on http://")?)
        }
        Config::Adaptive | Config::Adaptive5 | Config::Sample => {
            let listen = format!("127.0.0.1:{}", free_port());
            metrics_at = Some(listen.clone());
            let mut args = vec!["--pid", &pid, "--listen", &listen];
            match config {
                Config::Adaptive5 => args.extend(["--overhead-budget", "5%"]),
                Config::Sample => args.extend(["--mode", "sample"]),
                _ => {}
            }
            Some(start_and_wait(bin, &args, "metrics on http://")?)
        }
        Config::Profile => {
            let secs = (ms / 1000 + 30).to_string() + "s";
            let args = ["profile", "--pid", &pid, "--duration", &secs, "-o", "/dev/null", "--format", "folded"];
            Some(start_and_wait(bin, &args, "profiling pid")?)
        }
        Config::Perf => {
            let child = Command::new("perf")
                .args(["record", "-F", "99", "-g", "-q", "-p", &pid, "-o"])
                .arg(perf_data.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting perf record (Debian's linux-perf)")?;
            // perf says nothing once attached; its perf events are open well within this.
            std::thread::sleep(Duration::from_millis(300));
            Some(child)
        }
        Config::ErlangTrace => {
            vm.beam().call("scope_bench:trace_start()");
            None
        }
        Config::Baseline | Config::JpBaseline => None,
    };
    let attach_cpu = tool.as_ref().map(|p| cpu_seconds(p.id())).unwrap_or(0.0);
    let (rate, cpu_per_op) = run_workload(vm, w, ms)?;
    if config == Config::ErlangTrace {
        vm.beam().call("scope_bench:trace_stop()");
    }
    let overhead_estimate = metrics_at.and_then(|addr| scrape(&addr).ok()).and_then(|m| m.get("scope_probe_overhead_ratio", &[]));
    let mut m = Measured { rate, cpu_per_op, attach_cpu, overhead_estimate, ..Measured::default() };
    if let Some(mut p) = tool {
        m.tool_cpu = (cpu_seconds(p.id()) - attach_cpu) / (ms as f64 / 1000.0);
        m.tool_rss = peak_rss_mib(p.id());
        if config == Config::Perf {
            // SAFETY: plain kill(2) on our own child; perf ends its recording on SIGINT.
            unsafe { libc::kill(p.id() as i32, libc::SIGINT) };
            p.wait()?;
        } else {
            stop(&mut p)?;
        }
    }
    Ok(m)
}

pub(crate) fn scrape(listen: &str) -> Result<scope_probe_tests::metrics::Metrics> {
    let text = ureq::get(&format!("http://{listen}/metrics")).call()?.into_string()?;
    Ok(scope_probe_tests::metrics::Metrics::parse(&text))
}

/// SIGTERM and wait.
pub(crate) fn stop(p: &mut Child) -> Result<()> {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(p.id() as i32, libc::SIGTERM) };
    p.wait()?;
    Ok(())
}

/// Peak resident memory of a live process (VmHWM), MiB.
pub(crate) fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM")
}

/// A memory figure of /proc/PID/status (`VmRSS`, `VmHWM`...), MiB.
pub(crate) fn status_mib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Starts scope-probe and waits (10 s at most) until it prints the line that says it is
/// attached; keeps draining its stderr afterwards so it never blocks on a full pipe.
pub(crate) fn start_and_wait(bin: &Path, args: &[&str], attached: &str) -> Result<Child> {
    use std::io::BufRead;
    let mut child = Command::new(bin).args(args).stderr(Stdio::piped()).spawn().context("starting scope-probe")?;
    let stderr = child.stderr.take().context("stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let attached = attached.to_owned();
    std::thread::spawn(move || {
        let mut said = Vec::new();
        let mut lines = std::io::BufReader::new(stderr).lines().map_while(Result::ok);
        let ready = lines.by_ref().any(|line| {
            let ready = line.contains(&attached);
            said.push(line);
            ready
        });
        let _ = tx.send(if ready { Ok(()) } else { Err(said) });
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => Ok(child),
        Ok(Err(said)) => {
            let _ = child.wait();
            anyhow::bail!("scope-probe exited before attaching: {}", said.join("\n"))
        }
        Err(_) => {
            let _ = child.kill();
            anyhow::bail!("scope-probe did not attach within 10 s")
        }
    }
}

/// User + system CPU seconds of a process.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat.rsplit_once(')').map(|(_, a)| a.split_whitespace().collect()).unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / ticks
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {cpu}, kernel {}", kernel.trim())
}
