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

/// An "Alertmanager" that misbehaves on command (a few lines of Python's http.server): it
/// answers 500, or takes longer than scope-probe waits, or accepts and keeps what it got.
struct Faulty {
    child: std::process::Child,
    mode: tempfile::NamedTempFile,
    got: tempfile::NamedTempFile,
    port: u16,
}

const FAULTY: &str = r#"
import http.server, sys, time
mode, got, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        m = open(mode).read().strip()
        if m == "slow":
            time.sleep(8)
        if m != "ok":
            self.send_response(500); self.end_headers(); return
        with open(got, "ab") as f:
            f.write(body + b"\n")
        self.send_response(200); self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

impl Faulty {
    fn start(mode: &str) -> Faulty {
        let (m, got) = (tempfile::NamedTempFile::new().unwrap(), tempfile::NamedTempFile::new().unwrap());
        std::fs::write(m.path(), mode).unwrap();
        let port = scope_probe_tests::probe::free_port();
        let child = std::process::Command::new("python3")
            .args(["-c", FAULTY, m.path().to_str().unwrap(), got.path().to_str().unwrap(), &port.to_string()])
            .spawn()
            .unwrap();
        wait_for("the faulty server", Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        Faulty { child, mode: m, got, port }
    }

    fn set(&self, mode: &str) {
        std::fs::write(self.mode.path(), mode).unwrap();
    }

    fn received(&self) -> String {
        std::fs::read_to_string(self.got.path()).unwrap()
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Slow (longer than the 5 s post timeout), then answering 500: each failure is counted, the
/// retries back off (no retry storm: a handful of posts over ~10 s), the alert waits in the
/// bounded queue, and once the server answers it is delivered.
#[test]
fn a_slow_or_failing_alertmanager_is_retried_with_backoff() {
    let faulty = Faulty::start("slow");
    let mut beam = Beam::start();
    beam.call("scope_detect:mailbox_growth(scope_alerted_faulty, 100)");
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), CONFIG).unwrap();
    let url = format!("http://127.0.0.1:{}", faulty.port);
    let probe = Probe::attach(beam.os_pid, &["--config", config.path().to_str().unwrap(), "--alertmanager", &url]);
    let failures = |probe: &Probe| probe.metrics().get("scope_probe_alert_post_failures_total", &[]).unwrap_or(0.0);
    wait_for("a timed-out post counted", Duration::from_secs(40), || failures(&probe) >= 1.0);
    faulty.set("fail");
    wait_for("a refused post counted", Duration::from_secs(20), || failures(&probe) >= 2.0);
    let faulted = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    let m = probe.metrics();
    let during = failures(&probe);
    assert!(during <= 5.0, "retries back off: {during} failures");
    assert!(m.value("scope_probe_alerts_pending") >= 1.0, "the alert waits to be delivered");
    faulty.set("ok");
    let took = wait_for("the alert once the server answers", Duration::from_secs(70), || faulty.received().contains("BeamMailboxBuildup"));
    eprintln!("{during} failures; delivered {:?} after the faults ended ({:?} after the first refusal)", took, faulted.elapsed());
    let m = probe.metrics();
    assert!(m.value("scope_probe_alert_posts_total") >= 1.0);
    assert_eq!(m.value("scope_probe_alerts_dropped_total"), 0.0);
    let _ = probe.stop();
}
