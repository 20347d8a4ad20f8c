//! `cargo xtask bench`: what scope-probe costs the observed VM, as ratios against a baseline
//! measured in the same run on the same VM, and what scope-probe itself uses.
//!
//! Each round measures every configuration once, in an order rotated round by round (so no
//! configuration always runs first, right after the VM's warm-up, or last), and each
//! configuration's ratio is taken against the baseline of its own round: drift between rounds
//! (thermal, other load) cancels pair by pair. The table gives the median of those per-round
//! ratios with their spread. Timing starts only once scope-probe says it is attached (the
//! monitor's `metrics on` line, printed after its hooks are in; the profiler's `profiling pid`
//! line, printed after its sampler is), and the CPU scope-probe spent getting there is
//! reported apart from what it uses while measuring.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use scope_probe_tests::Beam;
use scope_probe_tests::probe::free_port;

#[derive(Clone, Copy, PartialEq)]
enum Workload {
    /// Message-bound: two processes ping-ponging (round trips/s).
    PingPong,
    /// CPU-bound: one burner per scheduler (work units/s).
    Cpu,
    /// Spawn-heavy: short-lived processes spawned as fast as possible (spawns/s).
    Spawn,
    /// GC-heavy: small-heap processes building and dropping lists (lists/s).
    Gc,
}

#[derive(Clone, Copy, PartialEq)]
enum Config {
    Baseline,
    /// The monitor with every per-event hook, sampler off.
    Trace,
    /// The CPU sampler alone at 99 Hz (`scope-probe profile`).
    Sampler,
    /// The BEAM's own tracer: send + receive of the workload's processes to a counter.
    ErlangTrace,
    /// Trace mode on the systemtap build, every capability from uprobes.
    TraceUprobe,
    /// Trace mode on the systemtap build, USDT wherever a probe serves (`--probe-source usdt`).
    TraceUsdt,
    /// The default: adaptive mode (sampler at 99 Hz, table reads, hooks in windows within 1%).
    Adaptive,
    /// Adaptive mode with a 5% budget.
    Adaptive5,
}

impl Config {
    fn label(self) -> &'static str {
        match self {
            Config::Baseline => "no probe (baseline)",
            Config::Trace => "scope-probe --mode trace --frequency 0",
            Config::Sampler => "scope-probe profile (sampler, 99 Hz)",
            Config::ErlangTrace => "erlang:trace send+receive",
            Config::TraceUprobe => "scope-probe --mode trace --frequency 0 --probe-source uprobe",
            Config::TraceUsdt => "scope-probe --mode trace --frequency 0 --probe-source usdt",
            Config::Adaptive => "scope-probe (default: --mode adaptive, 1% budget, sampler 99 Hz)",
            Config::Adaptive5 => "scope-probe --overhead-budget 5%",
        }
    }
}

struct Row {
    workload: Workload,
    config: Config,
    /// One per round.
    rates: Vec<f64>,
    /// CPU seconds scope-probe used per second of measurement (steady state), per round.
    probe_cpu: Vec<f64>,
    /// CPU seconds scope-probe used from start until attached, per round.
    attach_cpu: Vec<f64>,
    /// Its own estimate of what its hooks cost the VM (adaptive mode), per round.
    estimates: Vec<f64>,
}

/// What one measurement gives.
struct Measured {
    rate: f64,
    probe_cpu: f64,
    attach_cpu: f64,
    /// In adaptive mode, what the probe estimated its hooks cost (scope_probe_overhead_ratio).
    overhead_estimate: Option<f64>,
}

pub fn run(bin: &Path, each: Duration, rounds: usize, only: Option<&str>) -> Result<()> {
    crate::setup::require_root("the benchmark attaches probes to a BEAM")?;
    match only {
        None => {}
        Some("snapshot") => return snapshot_bench(bin),
        Some("profile") => return profile_bench(bin),
        Some("adaptive") => return adaptive_bench(bin, rounds),
        Some("overhead") => {}
        Some(other) => anyhow::bail!("--only {other}: expected overhead, adaptive, snapshot or profile"),
    }
    let mut beam = Beam::start();
    let ms = each.as_millis();
    // Warm up the JIT'd code and the schedulers.
    beam.call(&format!("scope_bench:pingpong({ms})"));
    beam.call(&format!("scope_bench:cpu({ms})"));
    beam.call(&format!("scope_bench:spawns({ms})"));
    beam.call(&format!("scope_bench:gc({ms})"));
    let plan = [
        (Workload::PingPong, Config::Baseline),
        (Workload::PingPong, Config::Trace),
        (Workload::PingPong, Config::Sampler),
        (Workload::PingPong, Config::ErlangTrace),
        (Workload::PingPong, Config::Adaptive),
        (Workload::Cpu, Config::Baseline),
        (Workload::Cpu, Config::Sampler),
        (Workload::Cpu, Config::Adaptive),
        (Workload::Spawn, Config::Baseline),
        (Workload::Spawn, Config::Adaptive),
        (Workload::Gc, Config::Baseline),
        (Workload::Gc, Config::Adaptive),
    ];
    // SCOPE_PROBE_TEST_TARGET picks the VM like it does for the tests (e.g. trixie's OTP 27);
    // the systemtap and process-table benchmarks then stay out (they are about OTP 25).
    let otp = beam.call("erlang:system_info(otp_release)")["value"].trim_matches('"').to_owned();
    let target = scope_probe_tests::beam::test_target();
    let label = match &target {
        Some(t) => format!("OTP {otp}, test target {}", t.name),
        None => "stock Debian OTP 25".to_owned(),
    };
    run_rows(&mut beam, bin, &plan, rounds, ms, &label)?;
    drop(beam);
    if target.is_some() {
        return Ok(());
    }
    usdt_bench(bin, ms, rounds)?;
    if only == Some("overhead") {
        return Ok(());
    }
    adaptive_bench(bin, rounds)?;
    snapshot_bench(bin)?;
    profile_bench(bin)
}

/// The adaptive mode over longer runs, where its windows come and go: whether it keeps to its
/// budget on the costliest workload for hooks (ping-pong, 20 s per run: every hook hit is a
/// send or a schedule), and how close the rates it estimates from its windows come to the
/// exact count of trace mode on a paced workload.
fn adaptive_bench(bin: &Path, rounds: usize) -> Result<()> {
    let mut beam = Beam::start();
    let ms = 20_000;
    beam.call("scope_bench:pingpong(3000)");
    let plan = [(Workload::PingPong, Config::Baseline), (Workload::PingPong, Config::Adaptive), (Workload::PingPong, Config::Adaptive5)];
    run_rows(&mut beam, bin, &plan, rounds, ms, "stock Debian OTP 25, adaptive mode over 20 s runs")?;
    rates_bench(bin, &mut beam)
}

/// Sends paced at 20,000 a second for 30 s: the VM's own count against trace mode's count and
/// the adaptive mode's estimate (messages counted in its windows over the seconds its send
/// hook was attached), each from the probe's metrics.
fn rates_bench(bin: &Path, beam: &mut Beam) -> Result<()> {
    const RATE: u32 = 20_000;
    const MS: u32 = 30_000;
    let pid = beam.os_pid.to_string();
    println!();
    println!("message rate of a paced sender ({RATE}/s for {} s): the VM's count against the probe's; {}", MS / 1000, machine());
    println!("| configuration | VM's rate | probe's rate | error |");
    println!("|---|---:|---:|---:|");
    for (label, mode) in [("--mode trace (exact count)", "trace"), ("--mode adaptive (windows, 1% budget)", "adaptive")] {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut p = start_and_wait(bin, &["--pid", &pid, "--listen", &listen, "--mode", mode, "--frequency", "0"], "metrics on http://")?;
        let read = || -> Result<(f64, f64)> {
            let text = ureq::get(&format!("http://{listen}/metrics")).call()?.into_string()?;
            let m = scope_probe_tests::metrics::Metrics::parse(&text);
            Ok((
                m.get("beam_messages_sent_total", &[]).unwrap_or(0.0),
                m.get("scope_probe_observed_seconds_total", &[("capability", "send")]).unwrap_or(0.0),
            ))
        };
        let (n0, o0) = read()?;
        let started = std::time::Instant::now();
        let sent: f64 = beam.call(&format!("scope_bench:paced({RATE}, {MS})"))["sent"].parse()?;
        let wall = started.elapsed().as_secs_f64();
        // The last window's counts reach the metrics within a drain.
        std::thread::sleep(Duration::from_millis(500));
        let (n1, o1) = read()?;
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(p.id() as i32, libc::SIGTERM) };
        p.wait()?;
        let vm_rate = sent / (MS as f64 / 1000.0);
        let probe_rate = if mode == "trace" { (n1 - n0) / wall } else { (n1 - n0) / (o1 - o0).max(1e-9) };
        println!("| {label} | {vm_rate:.0}/s | {probe_rate:.0}/s | {:+.1}% |", (probe_rate / vm_rate - 1.0) * 100.0);
    }
    Ok(())
}

/// `scope-probe profile` on a VM whose JIT has over 100,000 symbols (50,000 generated functions
/// besides OTP's), while a server burns CPU in BIFs: scope-probe's peak memory (goal: 64 MiB),
/// and what the profile attributed.
fn profile_bench(bin: &Path) -> Result<()> {
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
    println!();
    println!("scope-probe profile, 10 s at 99 Hz, a BIF-heavy server on a VM with 50,000 generated functions, 3 runs, median; {}", machine());
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| JIT symbols known | {:.0} |", med(1));
    println!("| peak memory of scope-probe | {:.1} MiB |", med(0));
    println!("| samples | {:.0} |", med(2));
    println!("| attributed to processes | {:.0} ({:.0}%) |", med(3), 100.0 * med(3) / med(2).max(1.0));
    println!("| of those, with the whole Erlang stack | {:.0} ({:.0}%) |", med(4), 100.0 * med(4) / med(3).max(1.0));
    Ok(())
}

/// The same ping-pong on the systemtap build (`cargo xtask otp-usdt`): its baseline, uprobe
/// sources and USDT sources, interleaved like the rest. A USDT hit costs the VM more than the
/// trap: with a probe's semaphore raised, the VM formats the pid strings (`%T`) at every site.
fn usdt_bench(bin: &Path, ms: u128, rounds: usize) -> Result<()> {
    let usdt = crate::otp_usdt::provision(false)?;
    let copy = scope_probe_tests::otp_copy::OtpCopy::with_beam(&usdt);
    let mut beam = copy.start();
    beam.call(&format!("scope_bench:pingpong({ms})"));
    let plan = [
        (Workload::PingPong, Config::Baseline),
        (Workload::PingPong, Config::TraceUprobe),
        (Workload::PingPong, Config::TraceUsdt),
    ];
    run_rows(&mut beam, bin, &plan, rounds, ms, "systemtap OTP 25 build (cargo xtask otp-usdt)")
}

fn run_rows(
    beam: &mut Beam,
    bin: &Path,
    plan: &[(Workload, Config)],
    rounds: usize,
    ms: u128,
    vm: &str,
) -> Result<()> {
    let mut rows: Vec<Row> = plan
        .iter()
        .map(|&(workload, config)| Row { workload, config, rates: vec![], probe_cpu: vec![], attach_cpu: vec![], estimates: vec![] })
        .collect();
    let rounds = rounds.max(1);
    for round in 0..rounds {
        for i in rotated(rows.len(), round) {
            let row = &mut rows[i];
            let m = measure(beam, bin, row.workload, row.config, ms)?;
            eprintln!("xtask: round {}: {:<10} {:<40} {:>12.0}/s", round + 1, name(row.workload), row.config.label(), m.rate);
            row.rates.push(m.rate);
            row.probe_cpu.push(m.probe_cpu);
            row.attach_cpu.push(m.attach_cpu);
            row.estimates.extend(m.overhead_estimate);
        }
    }
    println!();
    println!(
        "{vm}: {rounds} rounds of {ms} ms each, order rotated per round; ratio = median of the per-round ratios to that \
         round's baseline (min-max); {}",
        machine()
    );
    println!("| workload | configuration | rate (median) | vs baseline | spread | scope-probe CPU (steady) | attach CPU | its cost estimate |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for w in [Workload::PingPong, Workload::Cpu, Workload::Spawn, Workload::Gc] {
        let Some(base) = rows.iter().find(|r| r.workload == w && r.config == Config::Baseline) else { continue };
        for r in rows.iter().filter(|r| r.workload == w) {
            let ratios: Vec<f64> = r.rates.iter().zip(&base.rates).map(|(x, b)| x / b).collect();
            let probe = r.config != Config::Baseline && r.config != Config::ErlangTrace;
            let dash = || "-".to_owned();
            println!(
                "| {} | {} | {:.0} {} | {:.3} | {:.3}-{:.3} | {} | {} | {} |",
                name(w),
                r.config.label(),
                median(&r.rates),
                unit(w),
                median(&ratios),
                ratios.iter().copied().fold(f64::INFINITY, f64::min),
                ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                if probe { format!("{:.1}% of a core", median(&r.probe_cpu) * 100.0) } else { dash() },
                if probe { format!("{:.0} ms", median(&r.attach_cpu) * 1000.0) } else { dash() },
                if r.estimates.is_empty() { dash() } else { format!("{:.2}%", median(&r.estimates) * 100.0) },
            );
        }
    }
    Ok(())
}

/// The order of `n` configurations in round `round`: rotated by one each round.
fn rotated(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + round) % n)
}

/// The process table read from outside: time and memory of `scope-probe snapshot` on a VM with
/// 100,000 processes started by proc_lib (each with a dictionary holding its identity, which
/// the snapshot reads) (goal: under 1 s and under 64 MiB).
fn snapshot_bench(bin: &Path) -> Result<()> {
    const N: u32 = 100_000;
    let mut beam = Beam::start();
    beam.call(&format!("scope_table:many({N})"));
    let mut runs = Vec::new();
    for _ in 0..3 {
        let started = std::time::Instant::now();
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
    println!();
    println!("process table, {N} idle proc_lib processes (identity and memory read), 3 runs, median; {}", machine());
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| reading the table (snapshot_seconds) | {:.3} s |", med(0));
    println!("| whole `scope-probe snapshot --json --all` (attach, JIT symbols, JSON of every process) | {:.3} s |", med(1));
    println!("| peak memory of scope-probe | {:.1} MiB |", med(2));
    Ok(())
}

fn name(w: Workload) -> &'static str {
    match w {
        Workload::PingPong => "ping-pong",
        Workload::Cpu => "cpu-bound",
        Workload::Spawn => "spawn-heavy",
        Workload::Gc => "gc-heavy",
    }
}

fn unit(w: Workload) -> &'static str {
    match w {
        Workload::PingPong => "round trips/s",
        Workload::Cpu => "units/s",
        Workload::Spawn => "spawns/s",
        Workload::Gc => "lists/s",
    }
}

fn measure(beam: &mut Beam, bin: &Path, w: Workload, config: Config, ms: u128) -> Result<Measured> {
    let pid = beam.os_pid.to_string();
    let mut metrics_at: Option<String> = None;
    let source = match config {
        Config::TraceUprobe => "uprobe",
        _ => "usdt",
    };
    let probe = match config {
        Config::Trace | Config::TraceUprobe | Config::TraceUsdt => {
            let listen = format!("127.0.0.1:{}", free_port());
            let mut args = vec!["--pid", &pid, "--listen", &listen, "--mode", "trace", "--frequency", "0"];
            if config != Config::Trace {
                args.extend(["--probe-source", source]);
            }
            Some(start_and_wait(bin, &args, "metrics on http://")?)
        }
        Config::Adaptive | Config::Adaptive5 => {
            let listen = format!("127.0.0.1:{}", free_port());
            metrics_at = Some(listen.clone());
            let mut args = vec!["--pid", &pid, "--listen", &listen];
            if config == Config::Adaptive5 {
                args.extend(["--overhead-budget", "5%"]);
            }
            Some(start_and_wait(bin, &args, "metrics on http://")?)
        }
        Config::Sampler => {
            let secs = (ms / 1000 + 30).to_string() + "s";
            let args = ["profile", "--pid", &pid, "--duration", &secs, "-o", "/dev/null", "--format", "folded"];
            Some(start_and_wait(bin, &args, "profiling pid")?)
        }
        _ => None,
    };
    let attach_cpu = probe.as_ref().map(|p| cpu_seconds(p.id())).unwrap_or(0.0);
    let call = match (w, config) {
        (Workload::PingPong, Config::ErlangTrace) => format!("scope_bench:pingpong_traced({ms})"),
        (Workload::PingPong, _) => format!("scope_bench:pingpong({ms})"),
        (Workload::Cpu, _) => format!("scope_bench:cpu({ms})"),
        (Workload::Spawn, _) => format!("scope_bench:spawns({ms})"),
        (Workload::Gc, _) => format!("scope_bench:gc({ms})"),
    };
    let reply = beam.call(&call);
    let overhead_estimate = metrics_at.and_then(|addr| {
        let text = ureq::get(&format!("http://{addr}/metrics")).call().ok()?.into_string().ok()?;
        scope_probe_tests::metrics::Metrics::parse(&text).get("scope_probe_overhead_ratio", &[])
    });
    let mut probe_cpu = 0.0;
    if let Some(mut p) = probe {
        probe_cpu = (cpu_seconds(p.id()) - attach_cpu) / (ms as f64 / 1000.0);
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(p.id() as i32, libc::SIGTERM) };
        p.wait()?;
    }
    let rate = reply.values().next().context("no rate from the VM")?.parse().context("rate from the VM")?;
    Ok(Measured { rate, probe_cpu, attach_cpu, overhead_estimate })
}

/// Starts scope-probe and waits (10 s at most) until it prints the line that says it is
/// attached; keeps draining its stderr afterwards so it never blocks on a full pipe.
fn start_and_wait(bin: &Path, args: &[&str], attached: &str) -> Result<Child> {
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
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat.rsplit_once(')').map(|(_, a)| a.split_whitespace().collect()).unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / ticks
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {cpu}, kernel {}", kernel.trim())
}
