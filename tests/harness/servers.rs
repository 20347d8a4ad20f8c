//! Real Prometheus and Alertmanager servers (Debian's packages) for the tests, on loopback
//! ports of their own, with their data in temporary directories; stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::probe::free_port;

pub struct Server {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    program: &'static str,
    args: Vec<String>,
}

impl Server {
    fn start(program: &'static str, args: Vec<String>, port: u16, dir: tempfile::TempDir, ready: &str) -> Server {
        let mut s = Server { child: None, port, dir, program, args };
        s.restart(ready);
        s
    }

    /// Starts it again (after [`Server::kill`]), with the same port and data.
    pub fn restart(&mut self, ready: &str) {
        let log = std::fs::File::create(self.dir.path().join("log")).unwrap();
        let child = Command::new(self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} (cargo xtask setup installs it): {e}", self.program));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while ureq::get(&self.url(ready)).timeout(Duration::from_secs(1)).call().is_err() {
            assert!(Instant::now() < deadline, "{} did not get ready: {}", self.program, self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn base(&self) -> String {
        self.url("")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let body = ureq::get(&self.url(path))
            .timeout(Duration::from_secs(10))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()))
            .into_string()
            .unwrap();
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Prometheus scraping `targets` (as job `scope-probe`) every second, with `rules` loaded.
pub fn prometheus(targets: &[String], rules: &[PathBuf]) -> Server {
    prometheus_with(targets, rules, "")
}

/// The same, with more of the scrape job's configuration (`scrape`: YAML lines indented for
/// the job, e.g. `scheme`, `tls_config`, `basic_auth`).
pub fn prometheus_with(targets: &[String], rules: &[PathBuf], scrape: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    let rule_files: Vec<String> = rules.iter().map(|r| format!("  - {}\n", r.display())).collect();
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{}scrape_configs:\n  - job_name: scope-probe\n{scrape}    static_configs:\n      - targets: [{}]\n",
            rule_files.concat(),
            targets.join(", ")
        ),
    )
    .unwrap();
    let port = free_port();
    let args = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.path().join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ];
    Server::start("/usr/bin/prometheus", args, port, dir, "/-/ready")
}

/// The files under `deploy/` in this checkout.
pub fn deploy(path: &str) -> PathBuf {
    crate::workspace_root().join("deploy").join(path)
}

/// An HTTP endpoint that records the JSON bodies POSTed to it (Alertmanager's webhook
/// notifications), answering 200.
pub struct Webhook {
    pub port: u16,
    received: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Webhook {
    pub fn start() -> Webhook {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Default::default();
        let store = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_ok()
                    && let Ok(v) = serde_json::from_slice(&body)
                {
                    store.lock().unwrap().push(v);
                }
                let _ = reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Webhook { port, received }
    }

    pub fn received(&self) -> Vec<serde_json::Value> {
        self.received.lock().unwrap().clone()
    }
}

/// Alertmanager notifying `webhook` of every alert at once (grouping waits of a second).
pub fn alertmanager_to(webhook: &Webhook) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: hook\n  group_by: ['...']\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: http://127.0.0.1:{}/\n        send_resolved: true\n",
            webhook.port
        ),
    )
    .unwrap();
    let port = free_port();
    let args = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.path={}", dir.path().join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".into(),
    ];
    Server::start("/usr/bin/prometheus-alertmanager", args, port, dir, "/-/ready")
}
