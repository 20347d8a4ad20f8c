//! The real scope-probe binary, attached to a real VM.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::held::Held;
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

/// A scope-probe command running in the background: its stderr collected, what it holds in
/// the kernel recorded once it is ready, and checked to be gone when it stops.
pub struct Running {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    /// What it held in the kernel (see [`crate::held`]), as last recorded.
    held: Held,
    /// The VM whose code its uprobes write breakpoints into, while it runs (0: none or done).
    vm_pid: u32,
}

/// How a probe is stopped.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// Sends this signal (SIGTERM, SIGINT).
    Signal(i32),
    /// Waits for it to stop by itself (`--duration`, the VM's exit), up to this long.
    OnItsOwn(Duration),
}

/// Probes of this test process observing each VM: a VM's code is checked for breakpoints once
/// the last of them has stopped.
static LIVE: Mutex<BTreeMap<u32, usize>> = Mutex::new(BTreeMap::new());

fn live(vm_pid: u32, delta: isize) -> usize {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let n = live.entry(vm_pid).or_default();
    *n = n.saturating_add_signed(delta);
    *n
}

impl Running {
    /// Starts `scope-probe ARGS` observing the VM `vm_pid`; waits (30 s at most) for a stderr
    /// line containing `ready`.
    pub fn start(args: &[&str], vm_pid: u32, ready: &str) -> Running {
        Running::start_under(&[], args, vm_pid, ready)
    }

    /// The same, run by `wrapper` (e.g. `setpriv` and its options, which then execs
    /// scope-probe in the same process).
    pub fn start_under(wrapper: &[&str], args: &[&str], vm_pid: u32, ready: &str) -> Running {
        let mut cmd = match wrapper.split_first() {
            Some((program, options)) => {
                let mut c = Command::new(program);
                c.args(options).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        let mut child = cmd.args(args).stderr(Stdio::piped()).spawn().expect("starting scope-probe");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = BufReader::new(child.stderr.take().expect("stderr"));
        let lines = stderr.clone();
        let ready = ready.to_owned();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                if line.contains(&ready) {
                    let _ = ready_tx.send(());
                }
                lines.lock().unwrap().push(line);
            }
        });
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            panic!("scope-probe {args:?} did not get ready: {:?}", stderr.lock().unwrap());
        }
        let held = Held::of(child.id());
        live(vm_pid, 1);
        Running { child, stderr, held, vm_pid }
    }

    /// The OS pid of scope-probe itself.
    pub fn os_pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// What it holds in the kernel now, with what it held before.
    pub fn held(&self) -> Held {
        self.held.clone().union(&Held::of(self.child.id()))
    }

    /// Stops it as `how` says and waits for it; then asserts that every BPF link and program
    /// it held is gone from the kernel and, once no other probe of this test process observes
    /// the VM, that the VM's code is back to what its file holds (no uprobe breakpoint left).
    pub fn finish(mut self, how: Stop) -> (ExitStatus, Vec<String>) {
        let status = self.finish_unchecked(how);
        let stderr = self.stderr();
        if let Err(left) = self.held.released() {
            panic!("scope-probe exited ({status:?}) but left behind {left}\nstderr: {stderr:?}");
        }
        let vm = std::mem::take(&mut self.vm_pid);
        if live(vm, -1) == 0
            && let Err(left) = Held::released_code(vm)
        {
            panic!("scope-probe exited ({status:?}) but left behind {left}\nstderr: {stderr:?}");
        }
        (status, stderr)
    }

    /// Stops it and waits, recording what it held; checks nothing (the harness's own test of
    /// the check uses it).
    pub fn finish_unchecked(&mut self, how: Stop) -> ExitStatus {
        self.held = self.held();
        let status = match how {
            Stop::Signal(sig) => {
                // SAFETY: plain kill(2) on our own child.
                unsafe { libc::kill(self.child.id() as i32, sig) };
                self.child.wait().expect("waiting for scope-probe")
            }
            Stop::OnItsOwn(limit) => {
                let deadline = std::time::Instant::now() + limit;
                loop {
                    if let Some(status) = self.child.try_wait().expect("waiting for scope-probe") {
                        break status;
                    }
                    if std::time::Instant::now() > deadline {
                        let _ = self.child.kill();
                        panic!("scope-probe did not stop by itself within {limit:?}: {:?}", self.stderr());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        // Let the stderr reader take the last lines.
        std::thread::sleep(Duration::from_millis(100));
        status
    }

    /// What it held, as last recorded (after [`Running::finish_unchecked`]: everything).
    pub fn held_at_stop(&self) -> &Held {
        &self.held
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.vm_pid != 0 {
            live(self.vm_pid, -1);
        }
    }
}

/// The monitor (`scope-probe --pid`) attached to a VM, serving metrics on a port of its own.
pub struct Probe {
    run: Running,
    pub port: u16,
    /// The OS pid of the observed VM.
    pub vm_pid: u32,
}

impl std::ops::Deref for Probe {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.run
    }
}

impl std::ops::DerefMut for Probe {
    fn deref_mut(&mut self) -> &mut Running {
        &mut self.run
    }
}

impl Probe {
    /// Attaches to `pid` and waits until metrics are served (scope-probe says so once its
    /// hooks are attached).
    pub fn attach(pid: u32, extra: &[&str]) -> Probe {
        Probe::attach_under(&[], pid, extra)
    }

    /// The same, run by `wrapper` (see [`Running::start_under`]).
    pub fn attach_under(wrapper: &[&str], pid: u32, extra: &[&str]) -> Probe {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let pid_arg = pid.to_string();
        let args = [&["--pid", pid_arg.as_str(), "--listen", &listen][..], extra].concat();
        let run = Running::start_under(wrapper, &args, pid, "metrics on http://");
        // The target's attach lines (see `TestTarget::attach_says`).
        let expected = crate::beam::test_target().and_then(|t| t.attach_says);
        if let Some(expected) = expected {
            let said = run.stderr();
            assert!(said.iter().any(|l| l.contains(expected)), "expected {expected:?} in scope-probe's attach lines: {said:?}");
        }
        // In trace mode every hook is in from the start; the adaptive mode attaches its hooks
        // in windows, the sample mode never (their BPF programs are loaded all the same).
        if extra.windows(2).any(|w| w == ["--mode", "trace"]) {
            assert!(!run.held.links.is_empty(), "scope-probe says it attached, yet holds no BPF link: {:?}", run.held);
        } else {
            assert!(!run.held.programs.is_empty(), "scope-probe says it attached, yet holds no BPF program: {:?}", run.held);
        }
        Probe { run, port, vm_pid: pid }
    }

    /// Observes several VMs at once (`--pid A --pid B ...`), or every VM on the host (`--all`)
    /// when `pids` is empty; waits until metrics are served.
    pub fn attach_several(pids: &[u32], extra: &[&str]) -> Probe {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args: Vec<String> = if pids.is_empty() {
            vec!["--all".into()]
        } else {
            pids.iter().flat_map(|p| ["--pid".to_owned(), p.to_string()]).collect()
        };
        args.extend(["--listen".to_owned(), listen]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let vm_pid = pids.first().copied().unwrap_or(0);
        Probe { run: Running::start(&args, vm_pid, "metrics on http://"), port, vm_pid }
    }

    pub fn get(&self, path: &str) -> String {
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

    /// Sender/receiver pairs from /api/pairs.
    pub fn pairs(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.get("/api/pairs")).expect("JSON from /api/pairs")
    }

    pub fn process(&self, pid: &str) -> Option<serde_json::Value> {
        self.processes().into_iter().find(|p| p["pid"] == pid)
    }

    /// The detectors' findings (/api/findings): `{"active": [...], "recent": [...]}`.
    pub fn findings(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/api/findings")).expect("JSON from /api/findings")
    }

    /// Waits (up to `timeout`) for an active finding of `kind` in the `state` given that
    /// `accept` takes; returns it, or panics with what there was.
    pub fn wait_finding(
        &self,
        kind: &str,
        state: &str,
        timeout: Duration,
        accept: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let all = self.findings();
            let found = all["active"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|f| f["kind"] == kind && f["state"] == state && accept(f))
                .cloned();
            if let Some(f) = found {
                return f;
            }
            if std::time::Instant::now() > deadline {
                panic!("no {state} {kind} finding within {timeout:?}; findings: {all:#}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// SIGTERM, then wait; returns the exit status and everything it printed on stderr, and
    /// asserts that nothing it held in the kernel is left (see [`Running::finish`]).
    pub fn stop(self) -> (ExitStatus, Vec<String>) {
        self.run.finish(Stop::Signal(libc::SIGTERM))
    }

    pub fn finish(self, how: Stop) -> (ExitStatus, Vec<String>) {
        self.run.finish(how)
    }
}
