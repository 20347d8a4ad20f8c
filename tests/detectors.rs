//! Each detector against a fixture that creates its condition in a real VM
//! (tests/fixtures/scope_detect.erl): it fires for the right processes, named, with its
//! evidence; and a quiet workload running as long fires nothing. The monitor runs in its
//! default mode (adaptive) with hold times and windows shortened by a configuration file.

use std::time::Duration;

use scope_probe_tests::{Beam, Probe};

/// Short holds and windows, so that each condition fires within seconds.
const CONFIG: &str = r#"
snapshot_interval = "1s"

[detectors.mailbox_buildup]
hold = "2s"
clear = "3s"
enable_length = 5000
disable_length = 500

[detectors.memory_growth]
hold = "2s"
min_bytes = 8000000
growth_ratio = 0.5
min_new_highs = 3
window = "20s"

[detectors.ets_growth]
hold = "2s"
min_bytes = 4000000
growth_ratio = 0.5
min_new_highs = 3
window = "20s"

[detectors.port_queue]
hold = "2s"
enable_bytes = 100000
disable_bytes = 10000

[detectors.gc_storm]
hold = "2s"
enable_share = 0.3
window = "8s"

[detectors.scheduler_saturation]
hold = "2s"
enable_utilisation = 0.8
min_run_queue = 1.0
window = "8s"

[detectors.long_schedule]
threshold = "50ms"

[detectors.hot_process]
hold = "2s"
enable_share = 0.5
window = "8s"

[detectors.message_cycle]
hold = "2s"
min_rate = 20.0
window = "10s"

[detectors.deadlock]
hold = "2s"
"#;

fn attach(beam: &Beam, extra: &[&str]) -> (Probe, tempfile::NamedTempFile) {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), CONFIG).unwrap();
    let probe = Probe::attach(beam.os_pid, &[&["--config", config.path().to_str().unwrap()], extra].concat());
    (probe, config)
}

fn evidence<'a>(f: &'a serde_json::Value, what: &str) -> &'a str {
    f["evidence"]
        .as_array()
        .and_then(|e| e.iter().find(|x| x["what"] == what))
        .and_then(|x| x["value"].as_str())
        .unwrap_or_else(|| panic!("no {what} in the evidence of {f:#}"))
}

fn pids(list: &str) -> Vec<String> {
    list.trim_matches('"').split(',').map(str::to_owned).collect()
}

const FIRE: Duration = Duration::from_secs(40);

/// A registered process whose mailbox grows by ~2,000 messages a second: it fires with its
/// name, length, growth and the sender that floods it (from the send windows the finding asks
/// for); once drained, it resolves; and the memory detector, whose condition is not met,
/// does not fire for it.
#[test]
fn mailbox_buildup_fires_with_its_senders_and_resolves_when_drained() {
    let mut beam = Beam::start();
    let m = beam.call("scope_detect:mailbox_growth(scope_flooded, 100)");
    let (probe, _config) = attach(&beam, &[]);
    let f = probe.wait_finding("mailbox_buildup", "firing", FIRE, |f| f["pid"] == m["pid"] && f["name"] == "scope_flooded");
    let len: f64 = evidence(&f, "message_queue_len").parse().unwrap();
    let vm: f64 = beam.call(&format!("element(2, process_info({}, message_queue_len))", "whereis(scope_flooded)"))["value"].parse().unwrap();
    assert!(len >= 5000.0 && len <= vm, "queue {len} (the VM now: {vm})");
    let growth: f64 = evidence(&f, "growth_per_second").parse().unwrap();
    assert!(growth > 500.0 && growth < 4000.0, "growth {growth}/s for ~2,000/s sent");
    // The sender shows once a send window has run for the finding.
    let f = probe.wait_finding("mailbox_buildup", "firing", FIRE, |f| {
        f["evidence"].as_array().unwrap().iter().any(|e| e["what"] == "top_senders")
    });
    assert!(evidence(&f, "top_senders").contains(m["sender"].as_str()), "{f:#}");
    let m2 = probe.metrics();
    assert_eq!(m2.get("beam_findings", &[("kind", "mailbox_buildup")]), Some(1.0));
    // The finding asks the controller for send windows, which open when the budget allows.
    let deadline = std::time::Instant::now() + FIRE;
    while probe.metrics().get("scope_probe_escalations_total", &[("reason", "mailbox_buildup")]).unwrap_or(0.0) < 1.0 {
        assert!(std::time::Instant::now() < deadline, "no escalation for the finding:\n{}", probe.metrics_text());
        std::thread::sleep(Duration::from_millis(500));
    }

    beam.call("scope_detect:drain(scope_flooded)");
    let deadline = std::time::Instant::now() + FIRE;
    loop {
        let all = probe.findings();
        let resolved = all["recent"].as_array().unwrap().iter().any(|f| f["kind"] == "mailbox_buildup" && f["state"] == "resolved");
        if resolved {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not resolved after the drain: {all:#}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let all = probe.findings();
    assert!(!all["recent"].as_array().unwrap().iter().chain(all["active"].as_array().unwrap()).any(|f| f["kind"] == "memory_growth" && f["pid"] == m["pid"] && f["state"] == "firing"), "{all:#}");
    let _ = probe.stop();
}

/// A process whose heap grows in steps while its mailbox stays empty: memory growth fires for
/// it, mailbox buildup does not.
#[test]
fn memory_growth_fires_for_a_leaking_heap_and_not_the_mailbox_detector() {
    let mut beam = Beam::start();
    let leak = beam.call("scope_detect:heap_leak(200000, 500)");
    let (probe, _config) = attach(&beam, &[]);
    let f = probe.wait_finding("memory_growth", "firing", FIRE, |f| f["pid"] == leak["pid"]);
    assert_eq!(evidence(&f, "message_queue_len"), "0");
    let bytes: f64 = evidence(&f, "memory_bytes").parse().unwrap();
    let peak = format!("proplists:get_value(peak_memory, element(2, process_info(list_to_pid(\"{}\"), dictionary)))", leak["pid"]);
    let vm: f64 = beam.call(&peak)["value"].parse().unwrap();
    assert!(bytes >= 8e6 && bytes <= vm * 1.05, "memory {bytes} (the VM's peak so far: {vm})");
    let all = probe.findings();
    assert!(!all["active"].as_array().unwrap().iter().any(|f| f["kind"] == "mailbox_buildup"), "{all:#}");
    let _ = probe.stop();
}

/// An ETS table that keeps growing (a cache nobody evicts from): the finding names the table,
/// its id and its owner, with the owner as the alert's pid; its numbers are the table's.
#[test]
fn ets_growth_names_the_table_and_its_owner() {
    let mut beam = Beam::start();
    let leak = beam.call("scope_ets:grow(1000, 100)");
    let (probe, _config) = attach(&beam, &[]);
    let f = probe.wait_finding("ets_growth", "firing", FIRE, |f| f["table"]["id"] == leak["id"].trim_matches('"'));
    assert_eq!(f["table"]["name"], "scope_ets_growing");
    assert_eq!(f["pid"], leak["pid"].as_str(), "the owner is the finding's process");
    assert_eq!(f["name"], "scope_ets_leaker");
    assert_eq!(evidence(&f, "type"), "set");
    let tab = "hd([T || T <- ets:all(), ets:info(T, name) =:= scope_ets_growing])";
    // The table only grows: what the finding saw is at most what the VM has now.
    let now = beam.call(&format!("[{{memory, ets:info({tab}, memory) * erlang:system_info(wordsize)}}, {{size, ets:info({tab}, size)}}]"));
    let (bytes, objects): (u64, u64) = (evidence(&f, "memory_bytes").parse().unwrap(), evidence(&f, "objects").parse().unwrap());
    assert!(bytes >= 4_000_000 && bytes <= now["memory"].parse().unwrap(), "memory {bytes} vs the VM's {now:?}");
    assert!(objects > 0 && objects <= now["size"].parse().unwrap(), "objects {objects} vs the VM's {now:?}");
    let all = probe.findings();
    assert!(!all["active"].as_array().unwrap().iter().any(|f| f["kind"] == "memory_growth" && f["pid"] == leak["pid"]), "the table is not the process's heap: {all:#}");
    let _ = probe.stop();
}

/// A TCP socket whose peer never reads, its sender blocked on the busy port: the finding names
/// the port, the process connected to it (the alert's pid), the peer, and the bytes queued as
/// `erlang:port_info(P, queue_size)` says.
#[test]
fn port_queue_names_a_stuck_socket_and_its_owner() {
    let mut beam = Beam::start();
    let r = beam.call("scope_ports:start()");
    let client = r["client"].clone();
    let (probe, _config) = attach(&beam, &[]);
    let f = probe.wait_finding("port_queue", "firing", FIRE, |f| f["port"]["id"] == client.as_str());
    assert_eq!(f["pid"], r["sender"].as_str(), "the connected process is the finding's process");
    assert_eq!(f["port"]["name"], "tcp_inet");
    assert_eq!(evidence(&f, "busy"), "true", "{f:#}");
    assert_eq!(evidence(&f, "peer"), r["client_peer"].as_str());
    let queue = beam.call(&format!("element(2, erlang:port_info(list_to_port(\"{client}\"), queue_size))"));
    assert_eq!(evidence(&f, "queue_bytes"), queue["value"].as_str(), "the sender is blocked: the queue stands still");
    let _ = probe.stop();
}

#[test]
fn gc_storm_names_the_collecting_process() {
    let mut beam = Beam::start();
    let g = beam.call("scope_detect:gc_storm()");
    let (probe, _config) = attach(&beam, &[]);
    let f = probe.wait_finding("gc_storm", "firing", FIRE, |_| true);
    let share: f64 = evidence(&f, "gc_share").parse().unwrap();
    assert!(share >= 0.3, "{f:#}");
    assert!(evidence(&f, "top_processes").starts_with(g["pid"].as_str()), "the collector's process first: {f:#}");
    let _ = probe.stop();
}

#[test]
fn message_cycle_of_three_processes_is_found() {
    let mut beam = Beam::start();
    let r = beam.call("scope_detect:message_ring(3, 600)");
    let ring = pids(&r["pids"]);
    let (probe, _config) = attach(&beam, &[]);
    let f = probe.wait_finding("message_cycle", "firing", FIRE, |_| true);
    let members: Vec<&str> = f["processes"].as_array().unwrap().iter().map(|p| p["pid"].as_str().unwrap()).collect();
    let mut want: Vec<&str> = ring.iter().map(String::as_str).collect();
    let mut got = members.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "{f:#}");
    let _ = probe.stop();
}

#[test]
fn deadlock_of_gen_server_calls_in_a_ring_is_found() {
    let mut beam = Beam::start();
    let r = beam.call("scope_detect:call_ring(3)");
    let ring = pids(&r["pids"]);
    let (probe, _config) = attach(&beam, &["--frequency", "0"]);
    let f = probe.wait_finding("deadlock", "firing", FIRE, |_| true);
    let mut got: Vec<String> = f["processes"].as_array().unwrap().iter().map(|p| p["pid"].as_str().unwrap().to_owned()).collect();
    let mut want = ring.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{f:#}");
    assert!(f["processes"].as_array().unwrap().iter().all(|p| p["name"] == "scope_detect:init/1"), "named by initial call: {f:#}");
    let _ = probe.stop();
}

#[test]
fn long_schedule_is_confirmed_by_the_schedule_hook() {
    let mut beam = Beam::start();
    let l = beam.call("scope_detect:long_schedule(150)");
    let (probe, _config) = attach(&beam, &[]);
    let f = probe.wait_finding("long_schedule", "firing", FIRE, |f| f["pid"] == l["pid"]);
    let ms: f64 = evidence(&f, "longest_slice_ms").parse().unwrap();
    assert!(ms >= 50.0, "{f:#}");
    let m = probe.metrics();
    assert!(m.get("scope_probe_escalations_total", &[("reason", "long_schedule")]).unwrap_or(0.0) >= 1.0, "{}", probe.metrics_text());
    let _ = probe.stop();
}

/// More burners than schedulers: the VM is saturated, and the burners are hot.
#[test]
fn saturated_schedulers_and_hot_processes() {
    let mut beam = Beam::start();
    let schedulers: usize = beam.call("erlang:system_info(schedulers_online)")["value"].parse().unwrap();
    let b = beam.call(&format!("scope_detect:burners({})", schedulers * 3));
    let burners = pids(&b["pids"]);
    let (probe, _config) = attach(&beam, &[]);
    let f = probe.wait_finding("scheduler_saturation", "firing", FIRE, |_| true);
    let waiting: f64 = evidence(&f, "run_queue_average").parse().unwrap();
    assert!(waiting >= 1.0, "{f:#}");
    beam.call(&format!("scope_detect:stop(\"{}\")", burners[1..].join(",")));
    let f = probe.wait_finding("hot_process", "firing", FIRE, |f| f["pid"] == burners[0].as_str());
    assert!(evidence(&f, "top_functions").contains("scope_detect:burn/0"), "{f:#}");
    let _ = probe.stop();
}

/// A healthy server's workload for as long as the others take to fire: nothing fires.
#[test]
fn a_quiet_workload_fires_nothing() {
    let mut beam = Beam::start();
    beam.call("scope_detect:quiet()");
    let (probe, _config) = attach(&beam, &[]);
    std::thread::sleep(Duration::from_secs(25));
    let all = probe.findings();
    assert!(all["active"].as_array().unwrap().iter().all(|f| f["state"] != "firing"), "{all:#}");
    assert!(all["recent"].as_array().unwrap().is_empty(), "{all:#}");
    let m = probe.metrics();
    let fired: f64 = m.all("beam_findings_fired_total").iter().map(|s| s.value).sum();
    assert_eq!(fired, 0.0, "{}", probe.metrics_text());
    let _ = probe.stop();
}
