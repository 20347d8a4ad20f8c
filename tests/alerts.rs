//! Alerts through a real Alertmanager (Debian's package) to a webhook: the mailbox finding
//! arrives as an alert with its labels and evidence within a stated time, is delivered again
//! after Alertmanager was stopped and started, and resolves when the mailbox drains.

use std::time::{Duration, Instant};

use scope_probe_tests::servers::{Webhook, alertmanager_to};
use scope_probe_tests::{Beam, Probe};

const CONFIG: &str = r#"
snapshot_interval = "1s"
[alerts]
resend = "2s"
[alerts.labels]
team = "beam-test"
[detectors.mailbox_buildup]
hold = "2s"
clear = "3s"
enable_length = 5000
disable_length = 500
"#;

/// The webhook notifications for the mailbox alert of `pid`, with their status.
fn notifications(hook: &Webhook, pid: &str) -> Vec<(String, serde_json::Value)> {
    hook.received()
        .into_iter()
        .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["labels"]["alertname"] == "BeamMailboxBuildup" && a["labels"]["pid"] == pid)
        .map(|a| (a["status"].as_str().unwrap_or("").to_owned(), a))
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < timeout, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    started.elapsed()
}

/// The alert arrives within 30 s of attaching (a 2 s hold, 1 s table reads, Alertmanager's 1 s
/// group wait), carrying the finding's labels and evidence.
#[test]
fn mailbox_alert_is_delivered_survives_alertmanager_restarts_and_resolves() {
    let hook = Webhook::start();
    let mut am = alertmanager_to(&hook);
    let mut beam = Beam::start();
    let m = beam.call("scope_detect:mailbox_growth(scope_alerted, 100)");
    let pid = m["pid"].clone();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), CONFIG).unwrap();
    let probe = Probe::attach(beam.os_pid, &["--config", config.path().to_str().unwrap(), "--alertmanager", &am.base()]);

    let took = wait_for("a firing mailbox alert", Duration::from_secs(30), || {
        notifications(&hook, &pid).iter().any(|(s, _)| s == "firing")
    });
    eprintln!("alert delivered {took:?} after attach");
    let (_, alert) = notifications(&hook, &pid).into_iter().find(|(s, _)| s == "firing").unwrap();
    let l = &alert["labels"];
    assert_eq!(l["name"], "scope_alerted", "{alert:#}");
    assert_eq!(l["kind"], "mailbox_buildup");
    assert_eq!(l["team"], "beam-test", "labels from the configuration file");
    assert!(l["node"].as_str().is_some_and(|n| !n.is_empty()), "{alert:#}");
    assert!(l["severity"] == "warning" || l["severity"] == "critical");
    let a = &alert["annotations"];
    assert!(a["summary"].as_str().unwrap().contains("scope_alerted"), "{alert:#}");
    assert!(a["description"].as_str().unwrap().contains("message_queue_len:"), "{alert:#}");
    assert!(alert["generatorURL"].as_str().unwrap().contains("/api/findings/"), "{alert:#}");

    // Alertmanager goes away: the probe keeps its alert and retries (counted).
    am.kill();
    let before = hook.received().len();
    wait_for("a failed post counted", Duration::from_secs(20), || {
        probe.metrics().get("scope_probe_alert_post_failures_total", &[]).unwrap_or(0.0) >= 1.0
    });
    // It comes back with nothing (fresh storage): the alert is delivered again.
    am.restart("/-/ready");
    wait_for("the alert again after Alertmanager's restart", Duration::from_secs(70), || {
        hook.received()[before..].iter().any(|n| {
            n["alerts"].as_array().into_iter().flatten().any(|a| a["labels"]["pid"] == pid.as_str() && a["status"] == "firing")
        })
    });

    // The mailbox drains: the finding resolves and so does the alert.
    beam.call("scope_detect:drain(scope_alerted)");
    wait_for("a resolved mailbox alert", Duration::from_secs(40), || {
        notifications(&hook, &pid).iter().any(|(s, _)| s == "resolved")
    });
    let m = probe.metrics();
    assert!(m.value("scope_probe_alert_posts_total") >= 2.0);
    assert_eq!(m.value("scope_probe_alerts_dropped_total"), 0.0);
    let _ = probe.stop();
}
