//! `cargo xtask bench`: what scope-probe costs the observed VM, as ratios against a baseline
//! measured in the same run on the same VM, and what scope-probe itself uses. Configurations
//! are interleaved round by round so drift (thermal, other load) hits all of them alike; the
//! median round is reported.

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
        }
    }
}

struct Row {
    workload: Workload,
    config: Config,
    rates: Vec<f64>,
    /// CPU seconds scope-probe used per second of measurement.
    probe_cpu: Vec<f64>,
}

pub fn run(bin: &Path, each: Duration, rounds: usize) -> Result<()> {
    crate::setup::require_root("the benchmark attaches probes to a BEAM")?;
    let mut beam = Beam::start();
    let ms = each.as_millis();
    // Warm up the JIT'd code and the schedulers.
    beam.call(&format!("scope_bench:pingpong({ms})"));
    beam.call(&format!("scope_bench:cpu({ms})"));
    let plan = [
        (Workload::PingPong, Config::Baseline),
        (Workload::PingPong, Config::Trace),
        (Workload::PingPong, Config::Sampler),
        (Workload::PingPong, Config::ErlangTrace),
        (Workload::Cpu, Config::Baseline),
        (Workload::Cpu, Config::Sampler),
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
    snapshot_bench(bin)
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
    let mut rows: Vec<Row> =
        plan.iter().map(|&(workload, config)| Row { workload, config, rates: vec![], probe_cpu: vec![] }).collect();
    for round in 1..=rounds.max(1) {
        for row in rows.iter_mut() {
            let (rate, cpu) = measure(beam, bin, row.workload, row.config, ms)?;
            eprintln!("xtask: round {round}: {:<10} {:<40} {:>12.0}/s", name(row.workload), row.config.label(), rate);
            row.rates.push(rate);
            row.probe_cpu.push(cpu);
        }
    }
    println!();
    println!("{vm}: {rounds} rounds of {ms} ms each, median; {}", machine());
    println!("| workload | configuration | rate | vs baseline | scope-probe CPU |");
    println!("|---|---|---:|---:|---:|");
    for w in [Workload::PingPong, Workload::Cpu] {
        let base = rows.iter().find(|r| r.workload == w && r.config == Config::Baseline).map(|r| median(&r.rates));
        for r in rows.iter().filter(|r| r.workload == w) {
            let rate = median(&r.rates);
            let cpu = if r.config == Config::Baseline || r.config == Config::ErlangTrace {
                "-".to_owned()
            } else {
                format!("{:.1}% of a core", median(&r.probe_cpu) * 100.0)
            };
            println!(
                "| {} | {} | {:.0} {} | {:.3} | {} |",
                name(w),
                r.config.label(),
                rate,
                unit(w),
                rate / base.unwrap_or(rate),
                cpu
            );
        }
    }
    Ok(())
}

/// The process table read from outside: time and memory of `scope-probe snapshot` on a VM with
/// 100,000 processes (goal: under 1 s and under 64 MiB).
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
    println!("process table, {N} idle processes, 3 runs, median; {}", machine());
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
    }
}

fn unit(w: Workload) -> &'static str {
    match w {
        Workload::PingPong => "round trips/s",
        Workload::Cpu => "units/s",
    }
}

fn measure(beam: &mut Beam, bin: &Path, w: Workload, config: Config, ms: u128) -> Result<(f64, f64)> {
    let pid = beam.os_pid.to_string();
    let source = match config {
        Config::TraceUprobe => "uprobe",
        _ => "usdt",
    };
    let probe = match config {
        Config::Trace | Config::TraceUprobe | Config::TraceUsdt => {
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let mut args = vec!["--pid", &pid, "--listen", &listen, "--frequency", "0"];
            if config != Config::Trace {
                args.extend(["--probe-source", source]);
            }
            Some(start_and_wait(bin, &args, Some(port))?)
        }
        Config::Sampler => {
            let secs = (ms / 1000 + 30).to_string() + "s";
            let args = ["profile", "--pid", &pid, "--duration", &secs, "-o", "/dev/null", "--format", "folded"];
            Some(start_and_wait(bin, &args, None)?)
        }
        _ => None,
    };
    let cpu_before = probe.as_ref().map(|p| cpu_seconds(p.id())).unwrap_or(0.0);
    let call = match (w, config) {
        (Workload::PingPong, Config::ErlangTrace) => format!("scope_bench:pingpong_traced({ms})"),
        (Workload::PingPong, _) => format!("scope_bench:pingpong({ms})"),
        (Workload::Cpu, _) => format!("scope_bench:cpu({ms})"),
    };
    let reply = beam.call(&call);
    let mut probe_cpu = 0.0;
    if let Some(mut p) = probe {
        probe_cpu = (cpu_seconds(p.id()) - cpu_before) / (ms as f64 / 1000.0);
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(p.id() as i32, libc::SIGTERM) };
        p.wait()?;
    }
    let rate = reply.values().next().context("no rate from the VM")?.parse().context("rate from the VM")?;
    Ok((rate, probe_cpu))
}

/// Starts scope-probe; waits until it serves metrics (monitor) or has printed its first line
/// (profile), i.e. until it has attached.
fn start_and_wait(bin: &Path, args: &[&str], port: Option<u16>) -> Result<Child> {
    let mut child = Command::new(bin).args(args).stderr(Stdio::piped()).spawn().context("starting scope-probe")?;
    match port {
        Some(port) => {
            for _ in 0..300 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(child);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            anyhow::bail!("scope-probe did not attach within 6 s")
        }
        None => {
            use std::io::BufRead;
            let stderr = child.stderr.take().context("stderr")?;
            let mut lines = std::io::BufReader::new(stderr).lines();
            let first = lines.next().context("scope-probe printed nothing")??;
            anyhow::ensure!(first.contains("profiling pid"), "scope-probe: {first}");
            // Keep draining so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            Ok(child)
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
