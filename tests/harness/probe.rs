//! The real scope-probe binary, attached to a real VM.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::metrics::Metrics;

/// The binary under test: $SCOPE_PROBE_BIN (set by `cargo xtask test`), else the newest build
/// in target/.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SCOPE_PROBE_BIN") {
        return PathBuf::from(p);
    }
    let target = crate::workspace_root().join("target");
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("scope-probe"))
        .filter(|p| p.exists())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .expect("no scope-probe binary: run `cargo xtask test` (or cargo build -p scope-probe)")
}

/// A free loopback port (bound and released; good enough for tests run on one machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Runs scope-probe to completion with the given arguments.
pub fn run(args: &[&str]) -> Output {
    Command::new(binary()).args(args).output().expect("running scope-probe")
}

pub struct Probe {
    child: Child,
    pub port: u16,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Probe {
    /// Attaches to `pid` and waits until metrics are served.
    pub fn attach(pid: u32, extra: &[&str]) -> Probe {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(binary())
            .args(["--pid", &pid.to_string(), "--listen", &listen])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting scope-probe");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = BufReader::new(child.stderr.take().expect("stderr"));
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                if line.contains("metrics on http://") {
                    let _ = ready_tx.send(());
                }
                lines.lock().unwrap().push(line);
            }
        });
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            panic!("scope-probe did not attach: {:?}", stderr.lock().unwrap());
        }
        // The target's attach lines (see `TestTarget::attach_says`).
        let expected = crate::beam::test_target().and_then(|t| t.attach_says);
        if let Some(expected) = expected {
            let said = stderr.lock().unwrap().clone();
            assert!(said.iter().any(|l| l.contains(expected)), "expected {expected:?} in scope-probe's attach lines: {said:?}");
        }
        Probe { child, port, stderr }
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    fn get(&self, path: &str) -> String {
        ureq::get(&format!("http://127.0.0.1:{}{path}", self.port))
            .timeout(Duration::from_secs(30))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .into_string()
            .expect("response body")
    }

    pub fn metrics_text(&self) -> String {
        self.get("/metrics")
    }

    pub fn metrics(&self) -> Metrics {
        Metrics::parse(&self.metrics_text())
    }

    /// Per-process counters from /api/processes, keyed by "<0.N.S>".
    pub fn processes(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.get("/api/processes")).expect("JSON from /api/processes")
    }

    pub fn process(&self, pid: &str) -> Option<serde_json::Value> {
        self.processes().into_iter().find(|p| p["pid"] == pid)
    }

    /// SIGTERM, then wait; returns the exit status and everything it printed on stderr.
    pub fn stop(mut self) -> (ExitStatus, Vec<String>) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("waiting for scope-probe");
        std::thread::sleep(Duration::from_millis(100));
        (status, self.stderr())
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
