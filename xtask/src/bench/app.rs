//! The real application of the benchmark and the soak: yaws, the web server of Debian's
//! `erlang-yaws` package, embedded in a VM and serving a small dynamic page (an appmod that does
//! a little Erlang work per request), under HTTP load from wrk (Debian's `wrk`), over
//! keep-alive connections on 127.0.0.1.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use scope_probe_tests::Beam;
use scope_probe_tests::probe::free_port;

/// The schedulers' busy wait off, so that the VM's CPU time is work (with it, a scheduler that
/// runs out of work spins, and CPU per request follows how often that happens).
pub const NO_SPIN: [&str; 6] = ["+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none"];

/// Where `erlang-yaws` puts its code.
const YAWS_EBIN: &str = "/usr/lib/yaws/ebin";

pub struct App {
    pub beam: Beam,
    url: String,
    _dir: tempfile::TempDir,
}

/// What one load run did.
pub struct Load {
    pub requests: f64,
    pub seconds: f64,
    /// CPU seconds the VM used meanwhile (user + system, from /proc).
    pub vm_cpu: f64,
}

impl Load {
    pub fn rate(&self) -> f64 {
        self.requests / self.seconds.max(1e-9)
    }

    /// The VM's CPU time per request, in microseconds.
    pub fn cpu_per_request_us(&self) -> f64 {
        self.vm_cpu / self.requests.max(1.0) * 1e6
    }
}

impl App {
    /// Starts a VM (with `erl_args`, e.g. `+JPperf true`) and yaws in it.
    pub fn start(erl_args: &[&str]) -> Result<App> {
        ensure!(Path::new(YAWS_EBIN).exists(), "{YAWS_EBIN} is missing: `cargo xtask setup` installs erlang-yaws");
        ensure!(Path::new("/usr/bin/wrk").exists(), "/usr/bin/wrk is missing: `cargo xtask setup` installs wrk");
        let args: Vec<&str> = ["-pa", YAWS_EBIN].into_iter().chain(erl_args.iter().copied()).collect();
        let mut beam = Beam::start_with(Path::new("erl"), &args, &[]);
        let dir = tempfile::tempdir()?;
        let port = free_port();
        beam.call(&format!("scope_bench:yaws({port}, \"{}\")", dir.path().display()));
        let app = App { beam, url: format!("http://127.0.0.1:{port}/hello"), _dir: dir };
        // Warm up: connections, the appmod's code, the schedulers.
        app.load(Duration::from_secs(2))?;
        Ok(app)
    }

    /// wrk for `length` (whole seconds, at least one): one thread, 16 keep-alive connections.
    pub fn load(&self, length: Duration) -> Result<Load> {
        let secs = length.as_secs().max(1);
        let cpu0 = super::cpu_seconds(self.beam.os_pid);
        let started = std::time::Instant::now();
        let out = Command::new("/usr/bin/wrk").args(["-t1", "-c16", &format!("-d{secs}s"), &self.url]).output().context("running wrk")?;
        let seconds = started.elapsed().as_secs_f64();
        let vm_cpu = super::cpu_seconds(self.beam.os_pid) - cpu0;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(out.status.success(), "wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
        // "  146357 requests in 3.10s, 17.45MB read"
        let Some(requests) = text.lines().find(|l| l.contains(" requests in ")).and_then(|l| l.split_whitespace().next()) else {
            bail!("no request count in wrk's output: {text}");
        };
        // A server answering errors would look fast: wrk reports them on their own line.
        ensure!(!text.contains("Non-2xx or 3xx responses"), "yaws answered errors under load: {text}");
        let requests: f64 = requests.parse().context("wrk's request count")?;
        // wrk's own measure of its run ("in 3.10s", "in 1.00m"), else ours.
        let said = text.split(" requests in ").nth(1).and_then(|t| t.split(',').next()).and_then(|d| match d.strip_suffix('m') {
            Some(m) => m.parse::<f64>().ok().map(|m| m * 60.0),
            None => d.strip_suffix('s').and_then(|s| s.parse().ok()),
        });
        Ok(Load { requests, seconds: said.unwrap_or(seconds), vm_cpu })
    }
}
