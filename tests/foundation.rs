//! The foundation's counts against the VM's own truth (erlang:trace in the fixtures), on the
//! stock OTP build of this machine. Each test starts its own VM and its own scope-probe.

use std::process::Command;
use std::time::Duration;

use scope_probe_tests::{Beam, Metrics, Probe, wait_stable};

const DRAIN: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_millis(500);

fn u64_field(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// Exactly N messages from A to B after attach: the pair count equals N and equals what
/// erlang:trace saw.
#[test]
fn sends_between_two_processes_match_trace_exactly() {
    const N: u64 = 100_000;
    let mut beam = Beam::start();
    let probe = Probe::attach(beam.os_pid, &["--mode", "trace"]);
    let r = beam.call(&format!("scope_fixtures:sends({N})"));
    let (a, b) = (r["a"].as_str(), r["b"].as_str());
    let traced: u64 = r["traced"].parse().unwrap();
    assert_eq!(traced, N, "the VM's own trace saw a different count");

    let pair = |m: &Metrics| m.get("beam_top_pair_messages_sent_total", &[("sender", a), ("receiver", b)]);
    let count = wait_stable(DRAIN, SETTLE, || pair(&probe.metrics()));
    assert_eq!(count, Some(N as f64), "A->B pair in /metrics");

    let m = probe.metrics();
    assert!(m.value("beam_messages_sent_total") >= N as f64);
    assert_eq!(m.get("scope_probe_events_lost_total", &[("reason", "ring_buffer_full")]), Some(0.0));
    assert_eq!(m.value("scope_probe_attached"), 1.0);
    let sender = m
        .get("beam_top_process_messages_sent_total", &[("pid", a)])
        .expect("A is among the busiest senders");
    assert_eq!(sender, N as f64);
    let (status, stderr) = probe.stop();
    assert!(status.success(), "scope-probe exit: {status:?} {stderr:?}");
    assert!(stderr.iter().any(|l| l.contains("detached")), "{stderr:?}");
}

/// gen_server calls: the requests go to the server's pid, the replies to an alias of the
/// caller (OTP 24+), a send path of its own in the VM. Both directions are counted exactly.
#[test]
fn gen_server_replies_to_aliases_match_trace_exactly() {
    const N: u64 = 20_000;
    let mut beam = Beam::start();
    let probe = Probe::attach(beam.os_pid, &["--mode", "trace"]);
    let r = beam.call(&format!("scope_fixtures:calls({N})"));
    let (server, caller) = (r["server"].as_str(), r["caller"].as_str());
    let traced: u64 = r["traced_replies"].parse().unwrap();
    assert_eq!(traced, N, "the VM's own trace saw a different count of replies");
    let pair = |m: &Metrics, from: &str, to: &str| m.get("beam_top_pair_messages_sent_total", &[("sender", from), ("receiver", to)]);
    let replies = wait_stable(DRAIN, SETTLE, || pair(&probe.metrics(), server, caller));
    assert_eq!(replies, Some(N as f64), "server -> caller (the replies, to an alias) in /metrics");
    assert_eq!(pair(&probe.metrics(), caller, server), Some(N as f64), "caller -> server (the requests)");
    let m = probe.metrics();
    let hits = m.get("scope_probe_probe_hits_total", &[("hook", "send_alias")]);
    assert!(hits.is_some_and(|h| h >= N as f64), "alias-send hook hits: {hits:?}");
    let (status, stderr) = probe.stop();
    assert!(status.success(), "scope-probe exit: {status:?} {stderr:?}");
}

/// K processes spawned and exited: counted per parent and matched against trace `procs`.
#[test]
fn spawns_and_exits_match_trace() {
    const K: usize = 500;
    let mut beam = Beam::start();
    let probe = Probe::attach(beam.os_pid, &["--mode", "trace"]);
    let before = probe.metrics();
    let r = beam.call(&format!("scope_fixtures:spawns({K})"));
    let spawner = r["spawner"].clone();
    let traced_spawns: usize = r["traced_spawns"].parse().unwrap();
    let traced_exits: usize = r["traced_exits"].parse().unwrap();
    assert_eq!((traced_spawns, traced_exits), (K, K), "the VM's own trace");

    let children = || {
        let rows = probe.processes();
        let kids: Vec<_> = rows.into_iter().filter(|p| p["parent"] == spawner.as_str()).collect();
        let exited = kids.iter().filter(|p| p["exited"] == true).count();
        (kids.len(), exited)
    };
    let (spawned, exited) = wait_stable(DRAIN, SETTLE, children);
    assert_eq!(spawned, traced_spawns, "children of the spawner seen by scope-probe");
    assert_eq!(exited, traced_exits, "exits of those children seen by scope-probe");

    let after = probe.metrics();
    let delta = |name: &str| after.value(name) - before.value(name);
    assert!(delta("beam_process_spawns_total") >= K as f64);
    assert!(delta("beam_process_exits_total") >= K as f64);
}

/// M garbage collections forced on an idle process: its GC count equals the traced
/// gc_*_start events, with positive, plausible durations.
#[test]
fn forced_garbage_collections_match_trace() {
    const M: u64 = 300;
    let mut beam = Beam::start();
    let probe = Probe::attach(beam.os_pid, &["--mode", "trace"]);
    let r = beam.call(&format!("scope_fixtures:forced_gcs({M})"));
    let pid = r["pid"].clone();
    let traced: u64 = r["traced"].parse().unwrap();
    assert_eq!(traced, M, "the VM's own trace");

    let gcs = wait_stable(DRAIN, SETTLE, || probe.process(&pid).map(|p| (u64_field(&p, "gcs"), u64_field(&p, "gc_ns"))));
    let (count, total_ns) = gcs.expect("the collected process is known to scope-probe");
    assert_eq!(count, traced, "GCs of {pid}");
    let mean_us = total_ns as f64 / count as f64 / 1e3;
    // A GC of a tiny idle heap takes microseconds; zero or milliseconds would mean bad pairing.
    assert!(mean_us > 0.0 && mean_us < 2_000.0, "mean GC duration {mean_us} µs");

    let m = probe.metrics();
    assert!(m.value("beam_garbage_collection_seconds_count") >= M as f64);
    assert!(m.value("beam_garbage_collection_seconds_sum") > 0.0);
    assert_eq!(m.value("beam_garbage_collection_seconds_count"), m.value("beam_garbage_collections_total"));
}

/// Schedules of a process woken R times: scope-probe's count of its completed schedule slices
/// agrees with the traced `in` events within ±2 + 0.5%. Why a tolerance: trace delivers `in`
/// when a slice starts, scope-probe counts a slice when it ends (erts_schedule entry); the
/// worker's last slice (exiting) and a slice in flight when tracing was switched on can fall on
/// either side. Everything in between is counted once by both.
#[test]
fn schedules_agree_with_trace_running() {
    const R: u64 = 3_000;
    let mut beam = Beam::start();
    let probe = Probe::attach(beam.os_pid, &["--mode", "trace"]);
    let r = beam.call(&format!("scope_fixtures:schedules({R})"));
    let pid = r["pid"].clone();
    let traced: u64 = r["traced_in"].parse().unwrap();
    assert!(traced >= R, "each message wakes the worker: traced {traced}");

    let ours = wait_stable(DRAIN, SETTLE, || probe.process(&pid).map(|p| u64_field(&p, "schedules")))
        .expect("the worker is known to scope-probe");
    let tolerance = 2 + traced / 200;
    assert!(
        ours.abs_diff(traced) <= tolerance,
        "schedules of {pid}: scope-probe {ours}, trace {traced} (tolerance {tolerance})"
    );
    let run_ns = u64_field(&probe.process(&pid).unwrap(), "run_ns");
    assert!(run_ns > 0, "run time of a busy process");
}

/// Registered names label the top-N series; live process count matches the VM.
#[test]
fn names_and_process_count_come_from_the_vm() {
    let mut beam = Beam::start();
    let probe = Probe::attach(beam.os_pid, &["--mode", "trace"]);
    beam.call("scope_fixtures:named(scope_named_sink)");
    beam.call("[scope_named_sink ! hello || _ <- lists:seq(1, 20000)]");
    let named = wait_stable(DRAIN, SETTLE, || {
        probe.metrics().all("beam_top_pair_messages_sent_total").iter().any(|s| {
            s.labels.get("receiver_name").map(String::as_str) == Some("scope_named_sink") && s.value == 20000.0
        })
    });
    assert!(named, "a pair series labelled with the receiver's registered name:\n{}", probe.metrics_text());

    let vm_count: f64 = beam.call("erlang:system_info(process_count)")["value"].parse().unwrap();
    let ours = probe.metrics().value("beam_processes");
    assert!((ours - vm_count).abs() <= 2.0, "beam_processes {ours} vs process_count {vm_count}");
}

/// A live scrape passes `promtool check metrics`.
#[test]
fn live_scrape_passes_promtool() {
    let mut beam = Beam::start();
    let probe = Probe::attach(beam.os_pid, &["--mode", "trace"]);
    beam.call("scope_fixtures:sends(1000)");
    beam.call("scope_fixtures:forced_gcs(10)");
    let text = probe.metrics_text();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- scrape ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
