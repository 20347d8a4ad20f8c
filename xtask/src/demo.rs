//! The demo: the bundled order-processing workload (tests/fixtures/scope_demo.erl) in a real
//! BEAM, scope-probe attached to it, and a summary of what it serves every few seconds.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use scope_probe_tests::beam::fixtures_ebin;
use scope_probe_tests::metrics::Metrics;

pub fn run(bin: &Path, duration: Duration, listen: &str) -> Result<()> {
    let mut vm = Command::new("erl")
        .args(["-noshell", "-pa"])
        .arg(fixtures_ebin())
        .args(["-eval", "scope_demo:start()"])
        .stdout(Stdio::null())
        .spawn()
        .context("starting the demo VM (erl)")?;
    // erl execs into beam.smp: the child is the VM.
    let pid = vm.id();
    std::thread::sleep(Duration::from_millis(1500));
    eprintln!("xtask: demo BEAM running as pid {pid}; attaching: scope-probe --pid {pid} --listen {listen}");
    let mut probe = Command::new(bin);
    probe.args(["--pid", &pid.to_string(), "--listen", listen]);
    if !duration.is_zero() {
        probe.args(["--duration", &humantime::format_duration(duration).to_string()]);
    }
    let mut probe = probe.spawn().context("starting scope-probe")?;
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(5));
        if probe.try_wait()?.is_some() {
            break;
        }
        if let Ok(text) = scrape(listen) {
            summarize(&Metrics::parse(&text), started.elapsed());
        }
    }
    let status = probe.wait()?;
    let _ = vm.kill();
    let _ = vm.wait();
    anyhow::ensure!(status.success(), "scope-probe exited with {status}");
    eprintln!(
        "xtask: demo done. Run it yourself: sudo target/release/scope-probe --pid <beam.smp pid>; \
         also `scope-probe top --pid ...`, `scope-probe profile --pid ... -o cpu.svg`"
    );
    Ok(())
}

fn scrape(listen: &str) -> Result<String> {
    Ok(ureq::get(&format!("http://{listen}/metrics")).timeout(Duration::from_secs(5)).call()?.into_string()?)
}

fn summarize(m: &Metrics, elapsed: Duration) {
    let v = |n: &str| m.get(n, &[]).unwrap_or(0.0);
    eprintln!(
        "-- {:>3}s: {} processes, {} messages, {} GCs ({:.1} ms), {} spawns, {} exits, {} schedules",
        elapsed.as_secs(),
        v("beam_processes"),
        v("beam_messages_sent_total"),
        v("beam_garbage_collections_total"),
        v("beam_garbage_collection_seconds_sum") * 1e3,
        v("beam_process_spawns_total"),
        v("beam_process_exits_total"),
        v("beam_process_schedules_total"),
    );
    let top = |metric: &str, label: &str| {
        let mut v = m.all(metric);
        v.sort_by(|a, b| b.value.total_cmp(&a.value));
        v.first().map(|s| (s.labels.get(label).cloned().unwrap_or_default(), s.labels.get("name").cloned(), s.value))
    };
    if let Some((pid, name, q)) = top("beam_top_process_message_queue_length", "pid") {
        eprintln!("   longest mailbox: {} {pid}: {q} messages", name.unwrap_or_default());
    }
    if let Some((pid, name, bytes)) = top("beam_top_process_memory_bytes", "pid") {
        eprintln!("   most memory: {} {pid}: {:.1} MiB", name.unwrap_or_default(), bytes / (1 << 20) as f64);
    }
    let mut functions = m.all("beam_top_function_cpu_ratio");
    functions.sort_by(|a, b| b.value.total_cmp(&a.value));
    if let Some(s) = functions.first() {
        let mfa = s.labels.get("mfa").cloned().unwrap_or_default();
        // Code in C on the process's behalf (a BIF, the collector) is named beside its caller.
        let native = s.labels.get("native").filter(|n| !n.is_empty()).map(|n| format!(" in {n}")).unwrap_or_default();
        eprintln!("   hottest function (last minute): {mfa}{native} ({:.0}% of CPU samples)", s.value * 100.0);
    }
    let mut pairs = m.all("beam_top_pair_messages_sent_total");
    pairs.sort_by(|a, b| b.value.total_cmp(&a.value));
    for s in pairs.iter().take(3) {
        let l = |k: &str| {
            let pid = s.labels.get(k).cloned().unwrap_or_default();
            let name = s.labels.get(&format!("{k}_name")).cloned().unwrap_or_default();
            if name.is_empty() { pid } else { format!("{name} {pid}") }
        };
        eprintln!("   {:>8} msgs  {} -> {}", s.value, l("sender"), l("receiver"));
    }
}
