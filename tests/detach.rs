//! Detach, checked against what the kernel holds (tests/harness/held.rs): after every way
//! scope-probe stops, no BPF link or program of its remains anywhere on the machine and the
//! observed VM's code is again byte for byte its file (no uprobe breakpoint left), while the
//! VM keeps working. The last test proves the check can fail: a link kept alive on purpose
//! makes it report exactly that link and the breakpoints it keeps in the VM.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use scope_probe_tests::held::{self, Held};
use scope_probe_tests::probe::Stop;
use scope_probe_tests::{Beam, Probe};

/// Attaches the monitor in trace mode (every hook, and the CPU sampler), checks that what it
/// holds is visible where the check looks (links, programs, perf events, breakpoints in the
/// VM's code).
fn attach(beam: &Beam, extra: &[&str]) -> Probe {
    let probe = Probe::attach(beam.os_pid, &[&["--mode", "trace"], extra].concat());
    let held = probe.held();
    // Hooks are multi-uprobe BPF links (a perf event each on kernels without them); the
    // sampler holds a perf event per CPU.
    assert!(!held.programs.is_empty() && !held.links.is_empty(), "{held:?}");
    let breakpoints = held::breakpoints(beam.os_pid);
    assert!(!breakpoints.is_empty(), "the hooks' uprobes put no breakpoint in the VM's code");
    // Nothing else differs from the file: the comparison sees exactly the probes.
    assert_eq!(held::code_differences(beam.os_pid).len(), breakpoints.len());
    probe
}

/// The VM answers and its own tracing still counts exactly.
fn vm_unharmed(beam: &mut Beam) {
    let r = beam.call("scope_fixtures:sends(1000)");
    assert_eq!(r["traced"], "1000");
}

#[test]
fn duration_elapsed_lets_go_of_everything() {
    let mut beam = Beam::start();
    let probe = attach(&beam, &["--duration", "3s"]);
    let (status, stderr) = probe.finish(Stop::OnItsOwn(Duration::from_secs(20)));
    assert!(status.success(), "{stderr:?}");
    assert!(stderr.iter().any(|l| l.contains("detached (duration elapsed)")), "{stderr:?}");
    vm_unharmed(&mut beam);
}

#[test]
fn sigterm_lets_go_of_everything() {
    let mut beam = Beam::start();
    let probe = attach(&beam, &[]);
    vm_unharmed(&mut beam);
    let (status, stderr) = probe.finish(Stop::Signal(libc::SIGTERM));
    assert!(status.success(), "{stderr:?}");
    assert!(stderr.iter().any(|l| l.contains("detached (terminated)")), "{stderr:?}");
    vm_unharmed(&mut beam);
}

#[test]
fn sigint_lets_go_of_everything() {
    let mut beam = Beam::start();
    let probe = attach(&beam, &[]);
    let (status, stderr) = probe.finish(Stop::Signal(libc::SIGINT));
    assert!(status.success(), "{stderr:?}");
    assert!(stderr.iter().any(|l| l.contains("detached (interrupted)")), "{stderr:?}");
    vm_unharmed(&mut beam);
}

#[test]
fn target_exit_lets_go_of_everything() {
    let mut beam = Beam::start();
    let probe = attach(&beam, &[]);
    let _ = beam.call("spawn(fun() -> timer:sleep(100), erlang:halt() end)");
    let (status, stderr) = probe.finish(Stop::OnItsOwn(Duration::from_secs(20)));
    assert!(status.success(), "{stderr:?}");
    assert!(stderr.iter().any(|l| l.contains("detached (target exited)")), "{stderr:?}");
}

/// The adaptive mode attaches and detaches its hooks in windows (several a second on a quiet
/// VM): stopped at any moment, by SIGTERM or by --duration, nothing of it stays.
#[test]
fn adaptive_mode_lets_go_of_everything() {
    let mut beam = Beam::start();
    // A busy VM: windows are short and many.
    beam.call("scope_burn:start(scope_burner)");
    for (how, extra) in [(Stop::Signal(libc::SIGTERM), &[][..]), (Stop::OnItsOwn(Duration::from_secs(20)), &["--duration", "3s"][..])] {
        let probe = Probe::attach(beam.os_pid, &[&["--mode", "adaptive"], extra].concat());
        std::thread::sleep(Duration::from_millis(2500));
        let windows = probe.metrics().all("scope_probe_escalations_total").iter().map(|s| s.value).sum::<f64>();
        assert!(windows >= 1.0, "no window opened in 2.5 s:\n{}", probe.metrics_text());
        let (status, stderr) = probe.finish(how);
        assert!(status.success(), "{stderr:?}");
        vm_unharmed(&mut beam);
    }
}

/// `profile` holds perf events and a BPF program per CPU; stopped early by SIGINT it still
/// writes what it sampled, and lets go of everything like the monitor.
#[test]
fn profile_lets_go_of_everything_when_interrupted() {
    let mut beam = Beam::start();
    beam.call("scope_burn:start(scope_burner)");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cpu.folded");
    let profile = scope_probe_tests::probe::Running::start(
        &["profile", "--pid", &beam.os_pid.to_string(), "--duration", "60s", "-o", out.to_str().unwrap()],
        beam.os_pid,
        "profiling pid",
    );
    std::thread::sleep(Duration::from_secs(2));
    let held = Held::of(profile.os_pid());
    assert!(!held.programs.is_empty() && held.perf_events > 0, "{held:?}");
    let (status, stderr) = profile.finish(Stop::Signal(libc::SIGINT));
    assert!(status.success(), "{stderr:?}");
    let folded = std::fs::read_to_string(&out).unwrap();
    assert!(folded.contains("scope_burn:burn/2"), "the samples taken before the interrupt are written: {folded}");
    assert!(stderr.iter().any(|l| l.contains("interrupted")), "{stderr:?}");
    vm_unharmed(&mut beam);
}

/// The check can fail: this test takes scope-probe's links into its own process (as root,
/// `pidfd_getfd`), so the kernel keeps them, and the programs and uprobes behind them, after
/// scope-probe exits. The check must name exactly those links and find the breakpoints still
/// in the VM's code; once the stolen links are closed, it passes.
#[test]
fn a_link_kept_alive_fails_the_check() {
    let beam = Beam::start();
    let mut probe = attach(&beam, &["--frequency", "0"]);
    let stolen: Vec<_> = held::link_fds(probe.os_pid())
        .into_iter()
        .map(|fd| held::steal_fd(probe.os_pid(), fd).expect("pidfd_getfd as root"))
        .collect();
    assert!(!stolen.is_empty());
    let status = probe.finish_unchecked(Stop::Signal(libc::SIGTERM));
    assert!(status.success());
    let held = probe.held_at_stop().clone();

    let left = held.released().expect_err("links kept alive by another process must fail the check");
    assert_eq!(left.links, held.links, "every stolen link is reported, and nothing else");
    assert!(!left.programs.is_empty(), "their programs stay loaded");
    let code = Held::released_code(beam.os_pid).expect_err("their uprobes stay in the VM's code");
    assert!(code.breakpoints.iter().all(|&(_, _, m)| m == 0xcc), "{code}");
    assert!(code.to_string().contains("differs from its file"), "{code}");

    drop(stolen);
    held.released().unwrap_or_else(|left| panic!("after closing the stolen links: {left}"));
    Held::released_code(beam.os_pid).unwrap_or_else(|left| panic!("after closing the stolen links: {left}"));
}

/// No uprobe of ours is registered through tracefs either (libbpf uses perf events; a legacy
/// fallback would leave named entries there if the process died before removing them).
fn no_tracefs_uprobes() {
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if let Ok(events) = std::fs::read_to_string(format!("{root}/uprobe_events")) {
            assert!(!events.lines().any(|l| l.contains("libbpf") || l.contains("beam.smp")), "{root}/uprobe_events: {events}");
            return;
        }
    }
}

/// SIGKILL cannot be caught, so nothing of scope-probe's own runs: what it holds must go with
/// its process whatever it was doing. Killed while attaching (at several moments), while
/// running every hook, inside an adaptive window and while recording, it leaves no BPF link,
/// program, breakpoint or tracefs uprobe behind, and the VM works and traces exactly.
#[test]
fn sigkill_at_any_stage_leaves_nothing() {
    let mut beam = Beam::start();
    beam.call("scope_burn:start(scope_burner)");
    let pid = beam.os_pid.to_string();
    // Attaching: killed 20 ms to 600 ms after start (the attach takes ~0.2-0.7 s).
    for ms in [20, 80, 200, 400, 600] {
        let port = scope_probe_tests::probe::free_port().to_string();
        let mut child = std::process::Command::new(scope_probe_tests::probe::binary())
            .args(["--pid", &pid, "--mode", "trace", "--listen", &format!("127.0.0.1:{port}")])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let held = Held::of(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        held.released().unwrap_or_else(|left| panic!("killed {ms} ms into attaching: {left}"));
        Held::released_code(beam.os_pid).unwrap_or_else(|left| panic!("killed {ms} ms into attaching: {left}"));
        no_tracefs_uprobes();
        vm_unharmed(&mut beam);
    }
    // Running, every hook attached.
    let probe = attach(&beam, &[]);
    let (status, _) = probe.finish(Stop::Signal(libc::SIGKILL));
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    no_tracefs_uprobes();
    vm_unharmed(&mut beam);
    // Inside an adaptive window: killed while the window's hooks are attached.
    let probe = Probe::attach(beam.os_pid, &["--mode", "adaptive"]);
    let start = std::time::Instant::now();
    while held::breakpoints(beam.os_pid).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "no window opened:\n{}", probe.metrics_text());
        std::thread::sleep(Duration::from_millis(5));
    }
    let (status, _) = probe.finish(Stop::Signal(libc::SIGKILL));
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    no_tracefs_uprobes();
    vm_unharmed(&mut beam);
    // Recording.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.scope");
    let rec = scope_probe_tests::probe::Running::start(
        &["record", "--pid", &pid, "--mode", "trace", "-o", out.to_str().unwrap()],
        beam.os_pid,
        "recording to",
    );
    std::thread::sleep(Duration::from_secs(1));
    let (status, _) = rec.finish(Stop::Signal(libc::SIGKILL));
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    no_tracefs_uprobes();
    vm_unharmed(&mut beam);
}
