//! Several VMs observed by one scope-probe: two builds at once, each counted exactly against
//! its own trace; `--all` picking up a VM that starts and letting go of one that stops; and
//! attaching to and detaching from VMs a hundred times without growing.

use std::path::Path;
use std::time::{Duration, Instant};

use scope_probe_tests::chroot::{provisioned, start_beam_in_chroot};
use scope_probe_tests::{Beam, Metrics, Probe, wait_stable};

const DRAIN: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_millis(500);

/// The memory test holds this alone: `--all` observes every VM on the host, so the VMs of the
/// tests beside it (burners, recordings, chroots) would be in its readings. The others share it.
static ALONE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn beside_others() -> std::sync::RwLockReadGuard<'static, ()> {
    ALONE.read().unwrap_or_else(|e| e.into_inner())
}

/// The host's OTP 25 and trixie's OTP 27 (in its chroot) at once, in trace mode: each VM's
/// pair count equals what its own erlang:trace saw, under that VM's node and OS pid, and no
/// count leaks into the other VM's series.
#[test]
fn two_builds_at_once_are_each_counted_exactly() {
    let _shared = beside_others();
    let root = provisioned("trixie").unwrap_or_else(|e| panic!("the trixie chroot is missing: {e}"));
    let mut host = Beam::start_with(Path::new("/usr/bin/erl"), &[], &[]);
    let mut trixie = start_beam_in_chroot(&root, &[]);
    let probe = Probe::attach_several(&[host.os_pid, trixie.os_pid], &["--mode", "trace"]);
    let said = probe.stderr();
    for (vm, build) in [(host.os_pid, "build otp25"), (trixie.os_pid, "build otp27")] {
        assert!(
            said.iter().any(|l| l.contains(&format!("attached to pid {vm} ")) && l.contains(build)),
            "{vm} with {build}: {said:?}"
        );
    }
    let mut expected = Vec::new();
    for (beam, n) in [(&mut host, 20_000u64), (&mut trixie, 30_000)] {
        let r = beam.call(&format!("scope_fixtures:sends({n})"));
        assert_eq!(r["traced"].parse::<u64>().unwrap(), n, "the VM's own trace");
        expected.push((beam.os_pid.to_string(), r["a"].clone(), r["b"].clone(), n));
    }
    for (os_pid, a, b, n) in &expected {
        let labels = [("os_pid", os_pid.as_str()), ("sender", a.as_str()), ("receiver", b.as_str())];
        let pair = |m: &Metrics| m.get("beam_top_pair_messages_sent_total", &labels);
        assert_eq!(wait_stable(DRAIN, SETTLE, || pair(&probe.metrics())), Some(*n as f64), "pair of VM {os_pid} in /metrics");
        let rows: Vec<_> = probe
            .pairs()
            .into_iter()
            .filter(|r| r["os_pid"].as_u64() == os_pid.parse().ok() && r["sender"] == a.as_str() && r["receiver"] == b.as_str())
            .collect();
        assert_eq!(rows.len(), 1, "one row for the pair in /api/pairs: {rows:?}");
        assert_eq!(rows[0]["messages"], *n, "/api/pairs");
        assert_eq!(rows[0]["node"], "nonode@nohost");
    }
    // Each VM's series are its own: sends counted per VM (the totals hold the pair's).
    let m = probe.metrics();
    for (os_pid, _, _, n) in &expected {
        let sent = m.get("beam_messages_sent_total", &[("os_pid", os_pid.as_str())]).expect("each VM's sends");
        assert!(sent >= *n as f64 && sent < (n + 5_000) as f64, "VM {os_pid} sent {sent}, its pair {n}");
        assert_eq!(m.get("scope_probe_attached", &[("os_pid", os_pid.as_str())]), Some(1.0));
    }
    assert_eq!(m.value("scope_probe_vms"), 2.0);
    let (status, stderr) = probe.stop();
    assert!(status.success(), "{status:?} {stderr:?}");
    assert_eq!(stderr.iter().filter(|l| l.contains("detached (terminated)")).count(), 2, "{stderr:?}");
}

/// One set of BPF programs and one sampler serve every VM: with two VMs each burning CPU in a
/// process of its own name, under every hook (trace mode), the probe holds each program once
/// and one perf event per CPU (not one per CPU and VM), and each VM's samples and events land
/// in its own series: its burner is there, the other VM's is not.
#[test]
fn one_set_of_probes_serves_every_vm() {
    let _shared = beside_others();
    let mut a = Beam::start_with(Path::new("/usr/bin/erl"), &[], &[]);
    let mut b = Beam::start_with(Path::new("/usr/bin/erl"), &[], &[]);
    a.call("scope_burn:start(scope_burner_a, 50, 50)");
    b.call("scope_burn:start(scope_burner_b, 50, 50)");
    let probe = Probe::attach_several(&[a.os_pid, b.os_pid], &["--mode", "trace", "--frequency", "99"]);
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let online: usize = online
        .trim()
        .split(',')
        .map(|r| r.split_once('-').map_or(1, |(x, y)| y.parse::<usize>().unwrap() - x.parse::<usize>().unwrap() + 1))
        .sum();
    let held = scope_probe_tests::held::Held::of(probe.os_pid());
    assert_eq!(held.perf_events, online, "one sampler event per online CPU, for both VMs");
    let names = held.program_names();
    let mut once = names.clone();
    once.dedup();
    assert_eq!(names, once, "each program loaded once for both VMs");
    assert!(names.iter().any(|n| n == "on_cpu_sample") && names.iter().any(|n| n == "on_entries"), "{names:?}");
    let share = |m: &Metrics, vm: u32, name: &str| m.get("beam_top_process_cpu_ratio", &[("os_pid", &vm.to_string()), ("name", name)]);
    let start = Instant::now();
    let m = loop {
        let m = probe.metrics();
        if share(&m, a.os_pid, "scope_burner_a").is_some() && share(&m, b.os_pid, "scope_burner_b").is_some() {
            break m;
        }
        assert!(start.elapsed() < DRAIN, "both burners in their VM's series: {:?}", m.all("beam_top_process_cpu_ratio"));
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(share(&m, a.os_pid, "scope_burner_b"), None, "B's burner is not A's");
    assert_eq!(share(&m, b.os_pid, "scope_burner_a"), None, "A's burner is not B's");
    for vm in [a.os_pid, b.os_pid] {
        let samples = m.get("beam_cpu_samples_total", &[("os_pid", &vm.to_string())]).expect("each VM's samples");
        assert!(samples > 0.0, "VM {vm}: {samples} samples");
        let schedules = m.get("beam_process_schedules_total", &[("os_pid", &vm.to_string())]).expect("each VM's schedules");
        assert!(schedules > 0.0, "VM {vm}: {schedules} schedules");
    }
    let (status, stderr) = probe.stop();
    assert!(status.success(), "{status:?} {stderr:?}");
}

/// Seconds until `series` with `os_pid` appears (or, `present` false, is gone), polling
/// the metrics; panics after `within`.
fn wait_series(probe: &Probe, series: &str, os_pid: u32, present: bool, within: Duration) -> Duration {
    let start = Instant::now();
    let pid = os_pid.to_string();
    loop {
        if probe.metrics().get(series, &[("os_pid", &pid)]).is_some() == present {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{series} of VM {os_pid} {} after {within:?}", if present { "missing" } else { "still there" });
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `--all`: a VM started after scope-probe is observed within 5 s (it looks each second and
/// attaches in well under a second), named by its node; one that stops is let go within 3 s.
#[test]
fn all_picks_up_a_new_vm_and_lets_go_of_one_that_stops() {
    let _shared = beside_others();
    let probe = Probe::attach_several(&[], &["--mode", "sample"]);
    let late = Beam::start_with(Path::new("/usr/bin/erl"), &["-sname", "scope_late_node"], &[]);
    let found = wait_series(&probe, "scope_probe_build_info", late.os_pid, true, Duration::from_secs(5));
    let m = probe.metrics();
    let node = m
        .all("scope_probe_build_info")
        .into_iter()
        .find(|s| s.labels.get("os_pid") == Some(&late.os_pid.to_string()))
        .and_then(|s| s.labels.get("node").cloned())
        .expect("the VM's node");
    assert!(node.starts_with("scope_late_node@"), "node label {node}");
    let vm = late.os_pid;
    drop(late);
    let gone = wait_series(&probe, "scope_probe_build_info", vm, false, Duration::from_secs(3));
    eprintln!("picked up in {found:?}, let go in {gone:?}");
    // Its series are gone but one: attached 0, for an alert to fire on.
    let m = probe.metrics();
    assert_eq!(m.get("scope_probe_attached", &[("os_pid", &vm.to_string())]), Some(0.0), "{}", m.text);
    assert_eq!(m.get("scope_probe_attached", &[("node", &node)]), Some(0.0));
    let said = probe.stderr();
    assert!(said.iter().any(|l| l.contains(&format!("(pid {vm}) exited: detaching"))), "{said:?}");
    let (status, stderr) = probe.stop();
    assert!(status.success(), "{status:?} {stderr:?}");
}

/// The probe's resident memory less the BPF maps it has mapped (each attached VM's ring
/// buffers, which come and go with the VMs attached at the moment: other tests' VMs too, under
/// `--all`), in KiB.
fn rss_kib_besides_bpf_maps(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let (mut total, mut bpf_map) = (0, false);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            bpf_map = line.ends_with("anon_inode:bpf-map");
        } else if let Some(kb) = line.strip_prefix("Rss:")
            && !bpf_map
        {
            total += kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap();
        }
    }
    total
}

/// 100 attach/detach cycles under `--all` in the default (adaptive) mode, five VMs at a time,
/// after 40 to warm up (measured: the probe's memory settles after about 35) and 20 to read a
/// baseline (the highest of their readings): its resident memory besides the BPF ring buffers
/// grows by at most 8 MiB over the baseline (each attach builds symbol tables, starts threads
/// and may read DWARF; the shared BPF objects come and go with the first and last VM: none of
/// it may stay behind).
#[test]
fn a_hundred_attach_detach_cycles_keep_memory_flat() {
    let _alone = ALONE.write().unwrap_or_else(|e| e.into_inner());
    const AT_ONCE: usize = 5;
    const WARM_ROUNDS: usize = 8;
    const BASE_ROUNDS: usize = 4;
    const ROUNDS: usize = WARM_ROUNDS + BASE_ROUNDS + 20;
    let probe = Probe::attach_several(&[], &[]);
    let mut warm = 0;
    for round in 0..ROUNDS {
        let vms: Vec<Beam> = (0..AT_ONCE).map(|_| Beam::start_with(Path::new("/usr/bin/erl"), &[], &[])).collect();
        for vm in &vms {
            wait_series(&probe, "scope_probe_build_info", vm.os_pid, true, Duration::from_secs(20));
        }
        let pids: Vec<u32> = vms.iter().map(|v| v.os_pid).collect();
        drop(vms);
        for pid in &pids {
            wait_series(&probe, "scope_probe_build_info", *pid, false, Duration::from_secs(5));
        }
        // Measured once their sessions have stopped (their series go first, then the detach).
        let start = Instant::now();
        while !pids.iter().all(|p| probe.stderr().iter().any(|l| l.contains(&format!(") from pid {p} (")))) {
            assert!(start.elapsed() < Duration::from_secs(10), "the sessions of {pids:?} did not stop: {:?}", probe.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
        // Readings swing by a few MiB with what the last sessions left in malloc's caches:
        // the highest of a few rounds after the warm-up is the baseline.
        if (WARM_ROUNDS..WARM_ROUNDS + BASE_ROUNDS).contains(&round) {
            warm = warm.max(rss_kib_besides_bpf_maps(probe.os_pid()));
        }
    }
    let end = rss_kib_besides_bpf_maps(probe.os_pid());
    let cycles = AT_ONCE * (ROUNDS - WARM_ROUNDS - BASE_ROUNDS);
    eprintln!(
        "probe RSS besides BPF maps: at most {warm} KiB after {} cycles, {end} KiB after {cycles} more",
        AT_ONCE * (WARM_ROUNDS + BASE_ROUNDS)
    );
    assert!(end <= warm + 8 * 1024, "RSS besides BPF maps grew from {warm} KiB to {end} KiB over {cycles} attach/detach cycles");
    let (status, stderr) = probe.stop();
    assert!(status.success(), "{status:?} {stderr:?}");
}

/// A VM as a container runs it (pid and mount namespaces of its own: it is pid 1 and its files
/// are under its root): found under `--all` by its host pid, named by its node, and counted
/// exactly in trace mode.
#[test]
fn a_vm_in_its_own_pid_namespace_is_found_by_its_host_pid() {
    let _shared = beside_others();
    let root = provisioned("trixie").unwrap_or_else(|e| panic!("the trixie chroot is missing: {e}"));
    let mut beam = scope_probe_tests::chroot::start_beam_in_pid_namespace(&root);
    assert_eq!(beam.call("os:getpid()")["value"].trim_matches('"'), "1", "pid 1 inside");
    let all = Probe::attach_several(&[], &["--mode", "sample"]);
    wait_series(&all, "scope_probe_build_info", beam.os_pid, true, Duration::from_secs(5));
    let (status, stderr) = all.stop();
    assert!(status.success(), "{status:?} {stderr:?}");
    let probe = Probe::attach(beam.os_pid, &["--mode", "trace"]);
    let r = beam.call("scope_fixtures:sends(10000)");
    let (a, b) = (r["a"].as_str(), r["b"].as_str());
    let pair = |m: &Metrics| m.get("beam_top_pair_messages_sent_total", &[("sender", a), ("receiver", b)]);
    assert_eq!(wait_stable(DRAIN, SETTLE, || pair(&probe.metrics())), Some(10000.0));
    let (status, stderr) = probe.stop();
    assert!(status.success(), "{status:?} {stderr:?}");
}

/// `snapshot` of several VMs: one table each, as a JSON array, each with its node, OS pid and
/// the VM's own process count; `--all-vms` finds both among the host's VMs.
#[test]
fn snapshot_reads_several_vms() {
    let _shared = beside_others();
    let root = provisioned("trixie").unwrap_or_else(|e| panic!("the trixie chroot is missing: {e}"));
    let mut host = Beam::start_with(Path::new("/usr/bin/erl"), &[], &[]);
    let mut trixie = start_beam_in_chroot(&root, &[]);
    let (a, b) = (host.os_pid.to_string(), trixie.os_pid.to_string());
    let out = scope_probe_tests::probe::run(&["snapshot", "--pid", &a, "--pid", &b, "--json", "--all"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let views: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(views.len(), 2);
    for (view, beam, otp) in [(&views[0], &mut host, "25"), (&views[1], &mut trixie, "27")] {
        assert_eq!(view["os_pid"], beam.os_pid);
        assert_eq!(view["otp_release"], otp);
        assert_eq!(view["node"], "nonode@nohost");
        let count: u64 = beam.call("erlang:system_info(process_count)")["value"].parse().unwrap();
        assert!(view["processes"].as_array().unwrap().len().abs_diff(count as usize) <= 2, "{} processes read, the VM says {count}", view["processes"]);
    }
    let out = scope_probe_tests::probe::run(&["snapshot", "--all-vms", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    for pid in [host.os_pid, trixie.os_pid] {
        assert!(all.iter().any(|v| v["os_pid"] == pid), "{pid} among {} VMs", all.len());
    }
}

/// `top` of two nodes: a table each, grouped under its node's line (in the order of the
/// nodes' names), each VM's processes in its own table; ←/→ move between them.
#[test]
fn top_groups_several_vms_by_node() {
    let _shared = beside_others();
    let mut b = Beam::start_with(Path::new("/usr/bin/erl"), &["-sname", "scope_top_b"], &[]);
    let mut a = Beam::start_with(Path::new("/usr/bin/erl"), &["-sname", "scope_top_a"], &[]);
    a.call("scope_table:mailbox(scope_box_of_a, 300)");
    b.call("scope_table:mailbox(scope_box_of_b, 700)");
    let cmd = format!(
        "{} top --pid {} --pid {} --interval 500ms",
        scope_probe_tests::probe::binary().display(),
        b.os_pid,
        a.os_pid
    );
    let tmux = scope_probe_tests::tmux::Tmux::start(&cmd);
    let screen = tmux.wait_for(|s| s.contains("scope_box_of_a") && s.contains("scope_box_of_b"));
    let line = |needle: &str| screen.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle} not on screen:\n{screen}"));
    assert!(screen.contains("2 VMs"), "{screen}");
    let (node_a, node_b) = (line("scope_top_a@"), line("scope_top_b@"));
    assert!(node_a < line("scope_box_of_a") && line("scope_box_of_a") < node_b, "a's box under a's line:\n{screen}");
    assert!(node_b < line("scope_box_of_b"), "b's box under b's line:\n{screen}");
    assert!(screen.lines().nth(node_a).unwrap().contains(&format!("pid {}", a.os_pid)), "{screen}");
    tmux.keys("Right");
    assert!(tmux.quit(), "q quits");
}

/// `profile` of two nodes: one graph, every stack under its node's root frame, each VM's burner
/// (named apart) only under its own node, with about the share of the CPU it used.
#[test]
fn profile_of_two_vms_has_a_root_per_node() {
    let _shared = beside_others();
    let mut a = Beam::start_with(Path::new("/usr/bin/erl"), &["-sname", "scope_prof_a"], &[]);
    let mut b = Beam::start_with(Path::new("/usr/bin/erl"), &["-sname", "scope_prof_b"], &[]);
    a.call("scope_burn:start(scope_burner_of_a, 50, 50)");
    b.call("scope_burn:start(scope_burner_of_b, 50, 50)");
    let out = std::env::temp_dir().join(format!("scope-probe-two-{}.folded", std::process::id()));
    let run = scope_probe_tests::probe::run(&[
        "profile",
        "--pid",
        &a.os_pid.to_string(),
        "--pid",
        &b.os_pid.to_string(),
        "--duration",
        "3s",
        "--by-process",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let folded = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let mut per_root: std::collections::HashMap<String, (u64, u64, u64)> = Default::default();
    for line in folded.lines() {
        let (stack, n) = line.rsplit_once(' ').unwrap();
        let n: u64 = n.parse().unwrap();
        // Folded stacks keep spaces for the count: a frame's own read as no-break spaces.
        let root = stack.split(';').next().unwrap().replace('\u{a0}', " ");
        let e = per_root.entry(root).or_default();
        e.0 += n;
        e.1 += if stack.contains("scope_burner_of_a") { n } else { 0 };
        e.2 += if stack.contains("scope_burner_of_b") { n } else { 0 };
    }
    assert_eq!(per_root.len(), 2, "a root per node: {:?}", per_root.keys());
    let root_of = |beam: &Beam, node: &str| {
        per_root
            .iter()
            .find(|(r, _)| r.starts_with(node) && r.ends_with(&format!("(pid {})", beam.os_pid)))
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{node}'s root among {:?}", per_root.keys()))
    };
    let (ra, rb) = (root_of(&a, "scope_prof_a@"), root_of(&b, "scope_prof_b@"));
    assert!(ra.1 > 0 && ra.2 == 0, "a's burner under a only: {ra:?}");
    assert!(rb.2 > 0 && rb.1 == 0, "b's burner under b only: {rb:?}");
    // Both burn half the time: neither VM's share is far from the other's.
    let share = ra.1 as f64 / (ra.1 + rb.2) as f64;
    assert!((0.3..=0.7).contains(&share), "a's burner {} samples, b's {}", ra.1, rb.2);
}

/// `record --all`: every VM running (and starting) while it records, in one merged file with
/// each VM's node; no part is left beside it.
#[test]
fn record_all_keeps_every_vm_in_one_file() {
    let _shared = beside_others();
    let mut a = Beam::start_with(Path::new("/usr/bin/erl"), &["-sname", "scope_rec_all"], &[]);
    let node = a.call("node()")["value"].trim_matches('\'').to_owned();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("all.scope");
    // Sample mode: other tests' VMs are recorded too, and must not get hooks from this one.
    let run = scope_probe_tests::probe::run(&["record", "--all", "--mode", "sample", "--duration", "3s", "-o", out.to_str().unwrap()]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let left: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, ["all.scope"], "the parts are merged and removed");
    let replay = scope_probe_tests::probe::run(&["replay", out.to_str().unwrap(), "--kind", "table"]);
    let text = String::from_utf8_lossy(&replay.stdout);
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    // One VM alone is the recording itself; several, a merged one naming each.
    assert!(text.contains(&format!("{node} (os pid {}", a.os_pid)), "{text}");
}
