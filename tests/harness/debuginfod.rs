//! A real debuginfod server (elfutils, Debian's `debuginfod` package) serving the ELF/DWARF
//! files of one directory, for the tests of scope-probe's debuginfod client.
//!
//! debuginfod has no option to choose its listen address: it listens on every interface, on a
//! free port picked here, for the life of the test only.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BINARY: &str = "/usr/bin/debuginfod";

pub struct Debuginfod {
    child: Child,
    /// Base URL, what DEBUGINFOD_URLS takes.
    pub url: String,
    _state: tempfile::TempDir,
}

impl Debuginfod {
    /// Starts a server scanning `dir` (`-F`) and waits until it serves the debug info of
    /// `build_id` (its first scan takes a few seconds).
    pub fn serve(dir: &Path, build_id: &str) -> Debuginfod {
        let mut server = Self::start(dir);
        server.wait_until_served(&format!("buildid/{build_id}/debuginfo"), Duration::from_secs(120));
        server
    }

    /// Starts a server scanning `dir` and waits until it answers HTTP at all.
    pub fn serve_ready(dir: &Path) -> Debuginfod {
        let mut server = Self::start(dir);
        server.wait_until_served("metrics", Duration::from_secs(60));
        server
    }

    fn start(dir: &Path) -> Debuginfod {
        assert!(Path::new(BINARY).exists(), "{BINARY} is missing: `cargo xtask setup` installs the debuginfod package");
        let state = tempfile::tempdir().expect("temp dir for the server's database");
        let port = crate::probe::free_port();
        let child = Command::new(BINARY)
            .arg("-F")
            .arg(dir)
            .args(["-p", &port.to_string(), "-d"])
            .arg(state.path().join("debuginfod.sqlite"))
            // One scanner thread is plenty for one directory, and the machine has two cores.
            .args(["-c", "1", "--disable-source-scan"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting debuginfod");
        Debuginfod { child, url: format!("http://127.0.0.1:{port}"), _state: state }
    }

    /// Polls `path` until the server answers it with a success.
    fn wait_until_served(&mut self, path: &str, timeout: Duration) {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
        let probe = format!("{}/{path}", self.url);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("debuginfod exited early: {status}");
            }
            // The status is enough: the body is not read.
            if agent.get(&probe).call().is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "debuginfod did not serve {probe} within {timeout:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Debuginfod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
