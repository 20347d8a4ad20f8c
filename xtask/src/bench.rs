//! `cargo xtask bench`: what scope-probe costs the observed VM, as ratios against a baseline
//! measured in the same run on the same VM. Configurations are interleaved round by round so
//! that drift (thermal, other load) hits all of them alike; the median round is reported.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use scope_probe_tests::Beam;
use scope_probe_tests::probe::free_port;

#[derive(Clone, Copy)]
enum Config {
    Baseline,
    ProbeTrace,
    ErlangTrace,
}

impl Config {
    fn label(self) -> &'static str {
        match self {
            Config::Baseline => "no probe (baseline)",
            Config::ProbeTrace => "scope-probe --mode trace",
            Config::ErlangTrace => "erlang:trace send+receive",
        }
    }
}

const CONFIGS: [Config; 3] = [Config::Baseline, Config::ProbeTrace, Config::ErlangTrace];

pub fn run(bin: &Path, each: Duration, rounds: usize) -> Result<()> {
    crate::setup::require_root("the benchmark attaches probes to a BEAM")?;
    let mut beam = Beam::start();
    let ms = each.as_millis();
    // Warm up the JIT'd code and the schedulers.
    beam.call(&format!("scope_bench:pingpong({ms})"));
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); CONFIGS.len()];
    for round in 1..=rounds.max(1) {
        for (i, config) in CONFIGS.iter().enumerate() {
            let rate = measure(&mut beam, bin, *config, ms)?;
            eprintln!("xtask: round {round}: {:<28} {:>12.0} round trips/s", config.label(), rate);
            results[i].push(rate);
        }
    }
    let medians: Vec<f64> = results.iter_mut().map(|v| median(v)).collect();
    println!();
    println!("ping-pong (message-bound), {rounds} rounds of {ms} ms, median; {}", machine());
    println!("| configuration | round trips/s | vs baseline |");
    println!("|---|---:|---:|");
    for (config, rate) in CONFIGS.iter().zip(&medians) {
        println!("| {} | {:.0} | {:.3} |", config.label(), rate, rate / medians[0]);
    }
    Ok(())
}

fn measure(beam: &mut Beam, bin: &Path, config: Config, ms: u128) -> Result<f64> {
    let probe = match config {
        Config::ProbeTrace => Some(attach(bin, beam.os_pid)?),
        _ => None,
    };
    let call = match config {
        Config::ErlangTrace => format!("scope_bench:pingpong_traced({ms})"),
        _ => format!("scope_bench:pingpong({ms})"),
    };
    let reply = beam.call(&call);
    if let Some(mut p) = probe {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(p.id() as i32, libc::SIGTERM) };
        p.wait()?;
    }
    reply["round_trips_per_second"].parse().context("round trips from the VM")
}

/// Starts scope-probe and waits until it serves metrics (it has attached by then).
fn attach(bin: &Path, pid: u32) -> Result<Child> {
    let port = free_port();
    let child = Command::new(bin)
        .args(["--pid", &pid.to_string(), "--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .context("starting scope-probe")?;
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("scope-probe did not attach within 6 s")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
