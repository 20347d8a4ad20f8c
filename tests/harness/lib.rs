//! Test harness: real BEAM processes driven through a controller module, a real scope-probe
//! attached to them, and readers for what it serves. No mocks: ground truth comes from the
//! VM's own tracing inside the fixtures (tests/fixtures).

pub mod beam;
pub mod chroot;
pub mod debuginfod;
pub mod fixtures;
pub mod held;
pub mod metrics;
pub mod otp_copy;
pub mod probe;
pub mod servers;
pub mod tmux;

pub use beam::Beam;
pub use metrics::Metrics;
pub use probe::Probe;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The workspace root (the tests crate lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_owned()
}

/// Polls `f` until it returns the same value twice `settle` apart, or `timeout` passes; returns
/// the last value. Used to wait for events to drain before comparing counts.
pub fn wait_stable<T: PartialEq + Clone>(timeout: Duration, settle: Duration, mut f: impl FnMut() -> T) -> T {
    let deadline = Instant::now() + timeout;
    let mut last = f();
    loop {
        std::thread::sleep(settle);
        let now = f();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// The host's Debian codename (`VERSION_CODENAME` in /etc/os-release, e.g. `bookworm`): the
/// name its cached builds go under, next to the chroot suites'.
pub fn host_suite() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VERSION_CODENAME=").map(|v| v.trim_matches('"').to_owned())))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "host".into())
}

/// `.cache/otp-debug/<suite>/beam.smp`: the beam.smp with DWARF that `cargo xtask otp-debug
/// [--suite <suite>]` builds from that suite's Debian source.
pub fn otp_debug_beam(suite: &str) -> PathBuf {
    workspace_root().join(".cache/otp-debug").join(suite).join("beam.smp")
}

/// That build stripped like Debian's dh_strip strips it, made when its build-id is not the
/// packaged binary's (forky's: see beam_probes/notes).
pub fn otp_debug_stripped(suite: &str) -> PathBuf {
    otp_debug_beam(suite).with_file_name("beam.smp.stripped")
}

/// The folder holding that build's split debug file, laid out like `/usr/lib/debug`
/// (`.build-id/xx/rest.debug`).
pub fn otp_debug_dir(suite: &str) -> PathBuf {
    otp_debug_beam(suite).with_file_name("debug")
}
