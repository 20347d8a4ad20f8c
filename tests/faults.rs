//! Faults scope-probe must live through without harm or silent loss: its consumer stalled while
//! the VM bursts (the ring buffer overflows), an Alertmanager that fails, a disk that fills up
//! under a recording, and a VM that loads and purges code and churns through 100,000 processes
//! while profiled and read.

use std::time::Duration;

use scope_probe_tests::{Beam, Probe, wait_stable};

const DRAIN: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_millis(500);

/// The probe stopped (SIGSTOP) while the VM sends a million messages under every hook: the
/// kernel-side ring fills and the rest is dropped there, counted by reason; after SIGCONT the
/// counts add up (every send hit was delivered or counted lost) and the next burst is counted
/// exactly again.
#[test]
fn a_stalled_consumer_loses_only_what_it_counts() {
    let mut beam = Beam::start();
    let probe = Probe::attach(beam.os_pid, &["--mode", "trace", "--frequency", "0"]);
    // SAFETY: kill with a valid pid and signal.
    unsafe { libc::kill(probe.os_pid() as i32, libc::SIGSTOP) };
    let r = beam.call("scope_fixtures:sends(1000000)");
    assert_eq!(r["traced"], "1000000");
    // SAFETY: as above.
    unsafe { libc::kill(probe.os_pid() as i32, libc::SIGCONT) };
    let read = |probe: &Probe| {
        let m = probe.metrics();
        let get = |name: &str, labels: &[(&str, &str)]| m.get(name, labels).unwrap_or(0.0);
        (
            get("scope_probe_probe_hits_total", &[("hook", "send")]),
            get("scope_probe_events_total", &[("kind", "send")]),
            get("scope_probe_events_lost_total", &[("reason", "ring_buffer_full")]),
            get("scope_probe_events_lost_total", &[("reason", "read_fault")]),
        )
    };
    let (hits, delivered, lost_full, lost_read) = wait_stable(DRAIN, SETTLE, || read(&probe));
    eprintln!("stalled: {hits} send hits, {delivered} delivered, {lost_full} lost (ring full), {lost_read} lost (read fault)");
    assert!(hits >= 1_000_000.0, "every send hit counted in the kernel: {hits}");
    assert!(lost_full > 0.0, "a million sends under every hook overflow a stalled 16 MiB ring: {lost_full}");
    assert!(delivered < hits, "{delivered} delivered of {hits}");
    assert!(hits - delivered <= lost_full + lost_read, "each send hit is delivered or counted lost: {hits} hits, {delivered} delivered, {lost_full} + {lost_read} lost");
    // It goes on: the next burst is counted exactly.
    let r = beam.call("scope_fixtures:sends(20000)");
    let labels = [("sender", r["a"].as_str()), ("receiver", r["b"].as_str())];
    assert_eq!(wait_stable(DRAIN, SETTLE, || probe.metrics().get("beam_top_pair_messages_sent_total", &labels)), Some(20000.0));
    let (status, stderr) = probe.stop();
    assert!(status.success(), "{stderr:?}");
}

/// A tmpfs of its own, unmounted when dropped.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir.path()).status();
        assert!(ok.is_ok_and(|s| s.success()), "mounting a tmpfs (as root)");
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0.path()).status();
    }
}

/// The disk fills under a recording: scope-probe stops at once (not when --duration ends) with
/// the error on one line and a non-zero exit, detaches, and the file holds whole blocks that
/// replay reads without complaint.
#[test]
fn a_full_disk_ends_the_recording_with_a_readable_file() {
    let mut beam = Beam::start();
    beam.call("scope_burn:start(scope_burner)");
    let disk = SmallDisk::mount("256k");
    let file = disk.0.path().join("run.scope");
    let started = std::time::Instant::now();
    let rec = scope_probe_tests::probe::Running::start(
        &["record", "--pid", &beam.os_pid.to_string(), "--mode", "trace", "--duration", "60s", "-o", file.to_str().unwrap()],
        beam.os_pid,
        "recording to",
    );
    let (status, stderr) = rec.finish(scope_probe_tests::probe::Stop::OnItsOwn(Duration::from_secs(50)));
    let took = started.elapsed();
    assert_eq!(status.code(), Some(1), "{stderr:?}");
    assert!(took < Duration::from_secs(30), "stopped when the disk filled, not at the end: {took:?}");
    assert!(stderr.iter().any(|l| l.contains("detached (recording failed)")), "{stderr:?}");
    let errors: Vec<&String> = stderr.iter().filter(|l| l.contains("error:")).collect();
    assert!(errors.len() == 1 && errors[0].contains("No space left on device"), "{stderr:?}");
    let out = scope_probe_tests::probe::run(&["replay", file.to_str().unwrap(), "--kind", "table"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !said.contains("damaged"), "{said}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("schedules"), "the events before the disk filled");
    let r = beam.call("scope_fixtures:sends(1000)");
    assert_eq!(r["traced"], "1000", "the VM is unharmed");
}

/// Code loaded and purged over and over and 100,000 processes spawned and killed while the
/// monitor (adaptive) runs, `profile` samples and `snapshot` reads the table again and again:
/// every command succeeds, torn reads are counted (not fatal), the JIT code that went away is
/// no crash for the symbolizer, and the VM is unharmed.
#[test]
fn code_and_process_churn_while_profiled_and_read() {
    let mut beam = Beam::start();
    let pid = beam.os_pid.to_string();
    let monitor = Probe::attach(beam.os_pid, &["--mode", "adaptive", "--snapshot-interval", "500ms"]);
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("cpu.folded");
    let profile = scope_probe_tests::probe::Running::start(
        &["profile", "--pid", &pid, "--duration", "8s", "-o", folded.to_str().unwrap()],
        beam.os_pid,
        "profiling pid",
    );
    beam.call("scope_churn:start()");
    let started = std::time::Instant::now();
    let (mut snapshots, mut torn) = (0, 0u64);
    while started.elapsed() < Duration::from_secs(6) {
        let out = scope_probe_tests::probe::run(&["snapshot", "--pid", &pid, "--json", "--all"]);
        assert!(out.status.success(), "snapshot under churn: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        torn += v["torn"].as_u64().unwrap_or(0);
        snapshots += 1;
    }
    assert_eq!(beam.call("scope_churn:done()")["churned"], "100000");
    let loaded: u64 = beam.call("scope_churn:stop()")["loaded"].parse().unwrap();
    assert!(loaded >= 10, "code was loaded and purged while profiled: {loaded} times");
    let (status, stderr) = profile.finish(scope_probe_tests::probe::Stop::OnItsOwn(Duration::from_secs(30)));
    assert!(status.success(), "profile under churn: {stderr:?}");
    assert!(std::fs::read_to_string(&folded).unwrap().lines().count() > 0, "samples were written");
    let m = monitor.metrics();
    assert!(m.value("scope_probe_attached") == 1.0, "the monitor is still attached");
    let monitor_torn = m.value("scope_probe_snapshot_torn_records_total");
    eprintln!("{snapshots} snapshots and {loaded} modules loaded and purged under churn, {torn} torn records in them; the monitor counted {monitor_torn} torn");
    let (status, stderr) = monitor.stop();
    assert!(status.success(), "the monitor under churn: {stderr:?}");
    let r = beam.call("scope_fixtures:sends(1000)");
    assert_eq!(r["traced"], "1000", "the VM is unharmed");
}
