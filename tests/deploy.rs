//! The files shipped under deploy/: the Prometheus rules pass promtool's checks and their unit
//! tests, the example configurations are valid, and every panel of the Grafana dashboard finds
//! data in a real Prometheus scraping a real probe.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use scope_probe_tests::servers::{deploy, prometheus};
use scope_probe_tests::{Beam, Probe};

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rules_and_configurations_pass_their_checkers() {
    let rules = deploy("prometheus/scope-probe.rules.yml");
    run("promtool", &["check", "rules", rules.to_str().unwrap()]);
    // promtool test rules reads rule_files relative to the test file.
    let tests = deploy("prometheus/scope-probe.rules.test.yml");
    run("promtool", &["test", "rules", tests.to_str().unwrap()]);
    run("promtool", &["check", "config", deploy("prometheus/prometheus.yml").to_str().unwrap()]);
    run("amtool", &["check-config", deploy("alertmanager/alertmanager.yml").to_str().unwrap()]);
}

/// Every target of every panel, run against a Prometheus that scraped a probe of a VM with a
/// flooded mailbox (so that a finding fires) for a while: each returns at least one series.
#[test]
fn every_dashboard_panel_has_data() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/scope-probe.json")).unwrap()).unwrap();
    // Two distributed nodes, one streaming messages to the other (the distribution panel), one
    // probe observing both (the node selector).
    let sname = |s: &str| format!("{s}_{}", std::process::id());
    let mut beam = Beam::start_with(Path::new("erl"), &["-sname", &sname("scope_dashboard")], &[]);
    let mut peer = Beam::start_with(Path::new("erl"), &["-sname", &sname("scope_dashboard_peer")], &[]);
    peer.call("scope_dist:sink(scope_dist_sink)");
    let peer_node = peer.call("node()")["value"].trim_matches('\'').to_owned();
    beam.call(&format!("scope_dist:stream('{peer_node}', scope_dist_sink, 200)"));
    beam.call("scope_detect:mailbox_growth(scope_dashboard, 100)");
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "snapshot_interval = \"1s\"\n[detectors.mailbox_buildup]\nhold = \"1s\"\nenable_length = 2000\n").unwrap();
    let probe = Probe::attach_several(&[beam.os_pid, peer.os_pid], &["--config", config.path().to_str().unwrap()]);
    let target = format!("127.0.0.1:{}", probe.port);
    let prom = prometheus(&[target], &[deploy("prometheus/scope-probe.rules.yml")]);
    let query = |expr: &str| -> serde_json::Value {
        let url = format!("/api/v1/query?query={}", urlencode(expr));
        prom.get_json(&url)
    };
    let exprs: Vec<(String, String)> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("").to_owned();
            p["targets"].as_array().cloned().unwrap_or_default().into_iter().map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_owned()))
        })
        .collect();
    assert!(exprs.len() >= 20, "{exprs:?}");
    // The probe's first windows, rates over several scrapes, a finding firing: give it 40 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut missing;
    loop {
        std::thread::sleep(Duration::from_secs(2));
        missing = Vec::new();
        for (title, expr) in &exprs {
            // The dashboard's variables: every probe, and a rate window of several scrapes.
            let e = expr.replace("$instance", ".*").replace("$node", ".*").replace("$__rate_interval", "20s");
            let r = query(&e);
            assert_eq!(r["status"], "success", "{title}: {e}: {r}");
            // A trace-mode target of an adaptive probe is empty by design; its adaptive twin
            // has the data.
            let empty = r["data"]["result"].as_array().is_none_or(|v| v.is_empty());
            if empty && !e.contains("mode=\"trace\"") {
                missing.push(format!("{title}: {e}"));
            }
        }
        if missing.is_empty() || Instant::now() > deadline {
            break;
        }
    }
    assert!(missing.is_empty(), "panels without data:\n{}", missing.join("\n"));
    // The node selector's values: both VMs of the one probe, by node name.
    let nodes = query("count by (node) (scope_probe_attached)");
    let nodes: Vec<&str> = nodes["data"]["result"].as_array().unwrap().iter().filter_map(|r| r["metric"]["node"].as_str()).collect();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert!(nodes.contains(&peer_node.as_str()), "{nodes:?} has {peer_node}");
    // The recording rules evaluate too (their group runs every 30 s).
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let r = query("beam:messages_sent:rate_observed5m");
        if !r["data"]["result"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the recording rule gave nothing: {r}");
        std::thread::sleep(Duration::from_secs(1));
    }
    let _ = probe.stop();
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The Kubernetes DaemonSet validates against the API's schemas (kubernetes-validate, strict:
/// no unknown field), and the systemd unit passes systemd's own checks (with ExecStart pointing
/// at the built binary: the check wants it to exist).
#[test]
fn daemonset_and_systemd_unit_validate() {
    let python = scope_probe_tests::workspace_root().join(".cache/python-kubernetes-validate");
    assert!(python.exists(), "{} is missing: `cargo xtask setup` installs kubernetes-validate there", python.display());
    let daemonset = deploy("kubernetes/scope-probe-daemonset.yaml");
    let out = Command::new("/usr/bin/python3")
        .env("PYTHONPATH", &python)
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(&daemonset)
        .output()
        .expect("running kubernetes-validate");
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubernetes-validate: {said}");
    assert!(said.contains("passed for resource daemonset/scope-probe"), "{said}");

    let unit = std::fs::read_to_string(deploy("systemd/scope-probe.service")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("scope-probe.service");
    let binary = scope_probe_tests::probe::binary();
    std::fs::write(&copy, unit.replace("/usr/local/bin/scope-probe", binary.to_str().unwrap())).unwrap();
    // systemd-analyze exits 0 on an unknown key or a bad value (it ignores them): it must say
    // nothing at all.
    let out = Command::new("systemd-analyze").arg("verify").arg(&copy).output().expect("running systemd-analyze");
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
    // What the unit runs is what the README says: every VM, on loopback.
    let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).expect("an ExecStart line");
    assert!(exec.contains("--all") && exec.contains("127.0.0.1:"), "{exec}");
}
