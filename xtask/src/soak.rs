//! `cargo xtask soak`: scope-probe left running in its default mode with the flight recorder on,
//! against the real application of the benchmark (yaws under wrk) for 10 minutes: its memory
//! stays flat, nothing is lost, the recorder's directory stays within its bound, and what the
//! application pays is a ratio to a baseline taken just before (throughput and CPU per request).
//! Too long for CI; the results go to bench/results/soak.md and soak.json.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use scope_probe_tests::probe::free_port;
use serde_json::json;

use crate::bench::app::{App, NO_SPIN};
use crate::bench::report::{Report, Table};
use crate::bench::{median, peak_rss_mib, scrape, start_and_wait, status_mib, stop};

/// wrk runs in chunks this long; each ends with a reading of the probe.
const CHUNK: Duration = Duration::from_secs(10);
/// Memory after this long is the reference the rest of the run is held to.
const WARM_UP: Duration = Duration::from_secs(120);
/// How much the probe's resident memory may grow past the warm-up's (fragmentation, tables
/// filling up to their bounds) before it counts as growing.
const RSS_SLACK: f64 = 1.10;
/// The flight recorder's window in the soak: its directory must stay near what that holds.
const FLIGHT_WINDOW: &str = "2m";

pub fn run(bin: &Path, duration: Duration, out: &Path) -> Result<()> {
    crate::setup::require_root("the soak attaches probes to a BEAM")?;
    let app = App::start(&NO_SPIN)?;
    let pid = app.beam.os_pid.to_string();
    eprintln!("xtask: soak: baseline, 60 s of load without scope-probe");
    let mut base = Vec::new();
    for _ in 0..6 {
        base.push(app.load(CHUNK)?);
    }
    let base_rate = median(&base.iter().map(|l| l.rate()).collect::<Vec<_>>());
    let base_cpu = median(&base.iter().map(|l| l.cpu_per_request_us()).collect::<Vec<_>>());

    let flight = tempfile::tempdir()?;
    let listen = format!("127.0.0.1:{}", free_port());
    let flight_dir = flight.path().to_str().context("temporary directory")?;
    let args = ["--pid", &pid, "--listen", &listen, "--flight-recorder", flight_dir, "--flight-window", FLIGHT_WINDOW];
    let mut probe = start_and_wait(bin, &args, "metrics on http://")?;
    let probe_pid = probe.id();
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut loads = Vec::new();
    while started.elapsed() < duration {
        let load = app.load(CHUNK)?;
        let rss = status_mib(probe_pid, "VmRSS");
        let m = scrape(&listen)?;
        let sum = |name: &str, skip: &[&str]| -> f64 {
            m.all(name).iter().filter(|s| !s.labels.values().any(|v| skip.contains(&v.as_str()))).map(|s| s.value).sum()
        };
        let lost = sum("scope_probe_events_lost_total", &["read_fault", "unpaired", "pid_string"]);
        let events = sum("scope_probe_events_total", &[]);
        let escalations = sum("scope_probe_escalations_total", &[]);
        let flight_bytes = dir_bytes(flight.path());
        let t = started.elapsed().as_secs_f64();
        eprintln!(
            "xtask: soak {t:>4.0} s: {:.0} requests/s, {:.1} µs CPU per request, probe RSS {rss:.1} MiB, {events:.0} events, \
             {lost:.0} lost, {escalations:.0} windows, flight recorder {:.1} MiB",
            load.rate(),
            load.cpu_per_request_us(),
            flight_bytes as f64 / 1048576.0
        );
        samples.push(json!({"t": t, "rss_mib": rss, "events": events, "lost": lost, "windows": escalations, "flight_bytes": flight_bytes,
            "requests_per_second": load.rate(), "cpu_per_request_us": load.cpu_per_request_us()}));
        loads.push((t, rss, lost, flight_bytes, load));
    }
    let peak = peak_rss_mib(probe_pid);
    stop(&mut probe)?;

    let warm: Vec<f64> = loads.iter().filter(|l| l.0 <= WARM_UP.as_secs_f64() + CHUNK.as_secs_f64()).map(|l| l.1).collect();
    let reference = warm.iter().copied().fold(0.0, f64::max);
    let last = loads.last().map_or(0.0, |l| l.1);
    let lost = loads.last().map_or(0.0, |l| l.2);
    let flight_max = loads.iter().map(|l| l.3).max().unwrap_or(0);
    let rate = median(&loads.iter().map(|l| l.4.rate()).collect::<Vec<_>>());
    let cpu = median(&loads.iter().map(|l| l.4.cpu_per_request_us()).collect::<Vec<_>>());

    let mut report = Report::new();
    let mut table = Table::new(
        format!(
            "Soak: yaws under wrk for {}, scope-probe in its default mode with --flight-recorder (window {FLIGHT_WINDOW}), \
             read every {} s",
            humantime::format_duration(duration),
            CHUNK.as_secs()
        ),
        &["measure", "value"],
    );
    table.row(vec!["probe RSS after the warm-up (first 2 min, max)".into(), format!("{reference:.1} MiB")]);
    table.row(vec!["probe RSS at the end".into(), format!("{last:.1} MiB")]);
    table.row(vec!["probe peak RSS (VmHWM)".into(), format!("{peak:.1} MiB")]);
    table.row(vec!["events lost (full ring or table, consumer behind)".into(), format!("{lost:.0}")]);
    table.row(vec!["flight recorder directory, largest".into(), format!("{:.1} MiB", flight_max as f64 / 1048576.0)]);
    table.row(vec![
        "requests/s: baseline, with scope-probe (median of chunks)".into(),
        format!("{base_rate:.0}, {rate:.0} ({:.3})", rate / base_rate),
    ]);
    table.row(vec![
        "VM CPU per request: baseline, with scope-probe".into(),
        format!("{base_cpu:.1} µs, {cpu:.1} µs ({:.3})", cpu / base_cpu),
    ]);
    table.data = json!({"samples": samples, "baseline_rate": base_rate, "baseline_cpu_per_request_us": base_cpu, "peak_rss_mib": peak});
    report.add(table);
    let flat = last <= reference * RSS_SLACK;
    report.goal(&format!("probe RSS flat: the end within {RSS_SLACK} x the warm-up's"), format!("{reference:.1} -> {last:.1} MiB"), flat);
    report.goal("nothing lost", format!("{lost:.0} events"), lost == 0.0);
    let args = format!("soak --duration {}", humantime::format_duration(duration));
    report.write_as(out, "soak", &crate::bench::machine(), &args)?;
    ensure!(flat, "the probe's memory grew from {reference:.1} MiB after the warm-up to {last:.1} MiB");
    ensure!(lost == 0.0, "{lost:.0} events were lost");
    Ok(())
}

/// Bytes of the files under `dir` (the recorder's segments and the findings it kept).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
