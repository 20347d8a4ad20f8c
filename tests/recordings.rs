//! Recordings of real VMs, read back by every command that works from one: replayed counts
//! against the VM's own tracing, the state at a moment against what the fixture made, the
//! Perfetto export parsed by Perfetto's own protos, a diff of a changed workload, `why` on a
//! client of a slow server, and `check`'s verdicts and exit status.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant, SystemTime};

use scope_probe_tests::Beam;
use scope_probe_tests::probe::{self, Running, Stop};

/// `scope-probe record` on the VM into `path`, running once it says it records.
fn record(beam: &Beam, path: &Path, extra: &[&str]) -> Running {
    let pid = beam.os_pid.to_string();
    let args = [&["record", "--pid", &pid, "-o", path.to_str().unwrap()][..], extra].concat();
    Running::start(&args, beam.os_pid, "recording to")
}

fn run(args: &[&str]) -> (Output, String) {
    let out = probe::run(args);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out, text)
}

/// The recording's header (its JSON meta), read as the format documents it.
fn meta(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"SCOPEREC");
    let len = u32::from_le_bytes(bytes[10..14].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[14..14 + len]).unwrap()
}

/// `replay --json` lines.
fn replay_json(path: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let (out, text) = run(&[&["replay", path.to_str().unwrap(), "--json"][..], extra].concat());
    assert!(out.status.success(), "{text}");
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Runs `body` (Python) on a Perfetto trace parsed by Perfetto's own protos, after `names`,
/// `parents` and `pids` (of the process tracks) by track uuid, the counter tracks' names
/// (`counters`) and `events` ((timestamp, track event) in order) are read; its stdout is JSON.
fn perfetto_query(trace: &Path, body: &str) -> serde_json::Value {
    let python = scope_probe_tests::workspace_root().join(".cache/python");
    assert!(python.join("perfetto").exists(), "{} missing: `cargo xtask setup` installs the perfetto package", python.display());
    let preamble = r#"
import json, sys
from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace
t = Trace()
t.ParseFromString(open(sys.argv[1], 'rb').read())
names, parents, pids, counters = {}, {}, {}, set()
for p in t.packet:
    if p.HasField('track_descriptor'):
        d = p.track_descriptor
        names[d.uuid] = d.name or d.process.process_name
        parents[d.uuid] = d.parent_uuid
        if d.HasField('process'):
            pids[d.uuid] = d.process.pid
        if d.HasField('counter'):
            counters.add(d.name)
events = [(p.timestamp, p.track_event) for p in t.packet if p.HasField('track_event')]
"#;
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &format!("{preamble}{body}")])
        .arg(trace)
        .env("PYTHONPATH", &python)
        .output()
        .expect("/usr/bin/python3");
    assert!(out.status.success(), "the perfetto protos did not parse it: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Sends, spawns, exits and collections with the VM's own trace counts, recorded in trace
/// mode: `check` counts each exactly, and refutes a count one off.
#[test]
fn replayed_counts_equal_the_vms_in_trace_mode() {
    let mut beam = Beam::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counts.scope");
    let recorder = record(&beam, &path, &["--mode", "trace", "--snapshot-interval", "1s"]);
    let sends = beam.call("scope_fixtures:sends(5000)");
    let spawns = beam.call("scope_fixtures:spawns(200)");
    let gcs = beam.call("scope_fixtures:forced_gcs(50)");
    // A table read sees the fixtures' processes (the pids are named in the recording by then).
    std::thread::sleep(Duration::from_millis(1500));
    let (status, stderr) = recorder.finish(Stop::Signal(libc::SIGINT));
    assert!(status.success(), "{stderr:?}");
    assert!(stderr.iter().any(|l| l.contains("recorded") && l.contains("entries")), "{stderr:?}");

    let p = path.to_str().unwrap();
    let exact = [
        format!("count send from {} to {} == {}", sends["a"], sends["b"], sends["traced"]),
        format!("count spawn of {} == {}", spawns["spawner"], spawns["traced_spawns"]),
        format!("count gc of {} == {}", gcs["pid"], gcs["traced"]),
    ];
    for a in &exact {
        let (out, text) = run(&["check", p, "--assert", a]);
        assert!(out.status.success() && text.contains("CONFIRMED"), "{a}: {text}");
    }
    let off_by_one = format!("count send from {} to {} == {}", sends["a"], sends["b"], sends["traced"].parse::<u64>().unwrap() + 1);
    let (out, text) = run(&["check", p, "--assert", &off_by_one]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("REFUTED") && text.replace(',', "").contains(&format!("count send is {}", sends["traced"])), "{text}");

    // The spawner's children, each exited: by the listing's spawn and exit entries.
    let lines = replay_json(&path, &["--kind", "spawn,exit", "--all"]);
    let children: std::collections::HashSet<String> = lines
        .iter()
        .filter(|l| l["kind"] == "spawn" && l["parent"]["pid"] == spawns["spawner"].as_str())
        .map(|l| l["child"]["pid"].as_str().unwrap().to_owned())
        .collect();
    let exits = lines.iter().filter(|l| l["kind"] == "exit" && children.contains(l["process"]["pid"].as_str().unwrap())).count();
    assert_eq!(children.len().to_string(), spawns["traced_spawns"]);
    assert_eq!(exits.to_string(), spawns["traced_exits"]);

    // The summary says how it was observed; the header carries the VM.
    let (out, text) = run(&["replay", p, "--summary"]);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("mode trace") && text.contains(&format!("os pid {}", beam.os_pid)), "{text}");
    assert_eq!(meta(&path)["vm"]["os_pid"], beam.os_pid);
}

/// In adaptive mode events exist in windows: a paced sender's rate from the recorded windows
/// is the VM's rate, within the sampling error of short windows.
#[test]
fn adaptive_recordings_give_rates_from_their_windows() {
    let mut beam = Beam::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adaptive.scope");
    beam.call("scope_record:parked(paced_sink)");
    // 10 messages every 10 ms (~900 a second with the timer's slack), counted by the VM: the
    // sink never receives, so its mailbox is the count.
    beam.call("scope_record:paced_sender(paced_sender, paced_sink, 10)");
    let started = Instant::now();
    let len0 = beam.call("element(2, process_info(whereis(paced_sink), message_queue_len))")["value"].parse::<f64>().unwrap();
    let recorder = record(&beam, &path, &["--overhead-budget", "5%", "--duration", "25s"]);
    let (status, stderr) = recorder.finish(Stop::OnItsOwn(Duration::from_secs(40)));
    assert!(status.success(), "{stderr:?}");
    let len1 = beam.call("element(2, process_info(whereis(paced_sink), message_queue_len))")["value"].parse::<f64>().unwrap();
    let vm_rate = (len1 - len0) / started.elapsed().as_secs_f64();

    let lines = replay_json(&path, &["--kind", "send,window", "--all"]);
    let sends = lines.iter().filter(|l| l["kind"] == "send" && l["to"]["name"] == "paced_sink").count() as f64;
    let mut observed = 0.0;
    let mut opened: Option<f64> = None;
    for l in lines.iter().filter(|l| l["kind"] == "window" && l["capabilities"].as_array().unwrap().iter().any(|c| c == "send")) {
        match (l["open"].as_bool().unwrap(), opened) {
            (true, None) => opened = l["t"].as_f64(),
            (false, Some(t)) => {
                observed += l["t"].as_f64().unwrap() - t;
                opened = None;
            }
            _ => {}
        }
    }
    // What a failure needs to be read: the windows and why they opened.
    let summary = run(&["replay", path.to_str().unwrap(), "--summary"]).1;
    // A window still open when the recording ended counts to its end ("# started ..., 25.5 s;
    // mode ..."): a detector's request (the sink's mailbox grows all along) can hold one open.
    if let Some(t) = opened {
        let length: f64 = summary
            .lines()
            .find_map(|l| l.strip_prefix("# started "))
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no length in {summary}"));
        observed += length - t;
    }
    assert!(observed > 0.5, "send windows of {observed:.2} s in 25 s\n{summary}");
    let rate = sends / observed;
    assert!(
        (rate - vm_rate).abs() <= vm_rate * 0.25,
        "recorded {rate:.0}/s ({sends} in {observed:.2} s of windows), the VM {vm_rate:.0}/s\n{summary}"
    );
    // check reads the same rate.
    let (out, text) = run(&["check", path.to_str().unwrap(), "--assert", &format!("rate send to paced_sink > {}", vm_rate * 0.75)]);
    assert!(out.status.success(), "{text}\n{summary}");
}

/// `replay --at` gives the state at that moment: a mailbox filled to a known length, a
/// process that exited after, one that did not exist yet; and the listing filters by process.
#[test]
fn the_state_at_a_moment_is_the_vms_then() {
    let mut beam = Beam::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("at.scope");
    beam.call("scope_record:parked(at_box)");
    beam.call("scope_record:parked(at_gone)");
    let recorder = record(&beam, &path, &["--mode", "trace", "--snapshot-interval", "1s", "--frequency", "0"]);
    assert_eq!(beam.call("scope_record:fill(at_box, 300)")["len"], "300");
    let first = unix_now();
    let count_then = beam.call("erlang:system_info(process_count)")["value"].parse::<i64>().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(beam.call("scope_record:fill(at_box, 300)")["len"], "600");
    beam.call("scope_record:exits_now(at_gone)");
    beam.call("scope_record:parked(at_late)");
    let second = unix_now();
    std::thread::sleep(Duration::from_secs(3));
    let (status, stderr) = recorder.finish(Stop::Signal(libc::SIGINT));
    assert!(status.success(), "{stderr:?}");

    let started = meta(&path)["started_unix"].as_f64().unwrap();
    let at = |t: f64| -> String {
        let (out, text) = run(&["replay", path.to_str().unwrap(), "--at", &format!("{:.3}s", t - started)]);
        assert!(out.status.success(), "{text}");
        text
    };
    let row = |text: &str, name: &str| -> Option<Vec<String>> {
        text.lines().find(|l| l.split_whitespace().nth(1) == Some(name)).map(|l| l.split_whitespace().map(str::to_owned).collect())
    };
    // Two seconds after each change: a table read (every second) has seen it.
    let then = at(first + 2.0);
    assert_eq!(row(&then, "at_box").expect("at_box listed")[3], "300", "{then}");
    assert!(row(&then, "at_gone").is_some(), "at_gone was alive then: {then}");
    assert!(row(&then, "at_late").is_none(), "at_late did not exist yet: {then}");
    let live: i64 = then.lines().find_map(|l| l.strip_prefix("Processes: ")).and_then(|l| l.split_whitespace().next()).unwrap().replace(',', "").parse().unwrap();
    assert!((live - count_then).abs() <= 2, "{live} live processes at the moment, the VM counted {count_then}: {then}");
    let later = at(second + 2.0);
    assert_eq!(row(&later, "at_box").expect("at_box listed")[3], "600", "{later}");
    assert!(row(&later, "at_gone").is_none(), "at_gone had exited: {later}");
    assert!(row(&later, "at_late").is_some(), "at_late existed: {later}");

    // The listing, for one process: only its entries.
    let (out, text) = run(&["replay", path.to_str().unwrap(), "--process", "at_gone", "--kind", "exit"]);
    assert!(out.status.success(), "{text}");
    let exits: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && l.contains(" exit ")).collect();
    assert_eq!(exits.len(), 1, "{text}");
    assert!(exits[0].contains("at_gone"), "{text}");
    let (out, text) = run(&["replay", path.to_str().unwrap(), "--process", "no_such_process"]);
    assert!(!out.status.success() && text.contains("no process in the recording"), "{text}");
}

/// The Perfetto export, parsed with the `perfetto` package's protos: the fixture's processes
/// are tracks under the VM, their run and GC slices and the message arrows are there; the
/// Chrome JSON export holds the same slices.
#[test]
fn the_perfetto_export_parses_with_perfettos_protos() {
    let mut beam = Beam::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("timeline.scope");
    let recorder = record(&beam, &path, &["--mode", "trace", "--snapshot-interval", "1s"]);
    beam.call("register(tl_sender, self())");
    let sends = beam.call("scope_fixtures:sends(2000)");
    let gcs = beam.call("scope_fixtures:forced_gcs(20)");
    std::thread::sleep(Duration::from_millis(1500));
    let (status, stderr) = recorder.finish(Stop::Signal(libc::SIGINT));
    assert!(status.success(), "{stderr:?}");

    let trace = dir.path().join("timeline.perfetto-trace");
    let (out, text) = run(&["export", path.to_str().unwrap(), "--format", "perfetto", "-o", trace.to_str().unwrap()]);
    assert!(out.status.success(), "{text}");
    let v = perfetto_query(
        &trace,
        r#"
slices, flows = {}, 0
for ts, e in events:
    if e.type == e.TYPE_SLICE_BEGIN:
        key = names.get(e.track_uuid, '?') + '|' + e.name
        slices[key] = slices.get(key, 0) + 1
    flows += len(e.flow_ids)
process = list(pids.values())[-1] if pids else None
print(json.dumps({'tracks': list(names.values()), 'slices': slices, 'flows': flows, 'counters': sorted(counters), 'process': process}))
"#,
    );
    assert_eq!(v["process"], beam.os_pid);
    let tracks: Vec<&str> = v["tracks"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    for pid in [&sends["a"], &sends["b"], &gcs["pid"]] {
        assert!(tracks.iter().any(|t| t.starts_with(pid.as_str())), "no track for {pid}: {tracks:?}");
    }
    let slices = v["slices"].as_object().unwrap();
    let count = |track: &str, name: &str| -> u64 {
        slices.iter().filter(|(k, _)| k.starts_with(track) && k.ends_with(&format!("|{name}"))).map(|(_, n)| n.as_u64().unwrap()).sum()
    };
    assert!(count(&sends["b"], "running") > 0, "no run slices of the receiver: {slices:?}");
    assert_eq!(count(&gcs["pid"], "garbage collection").to_string(), gcs["traced"], "{slices:?}");
    // Every send is an arrow (the fixture's among them).
    assert!(v["flows"].as_u64().unwrap() >= sends["traced"].parse::<u64>().unwrap(), "{} arrows", v["flows"]);
    let counters: Vec<&str> = v["counters"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(counters.contains(&"resident memory") && counters.contains(&"scheduler CPU"), "{counters:?}");
    assert!(counters.iter().any(|c| c.starts_with("mailbox ")), "{counters:?}");

    let json = dir.path().join("timeline.json");
    let (out, text) = run(&["export", path.to_str().unwrap(), "--format", "chrome-json", "-o", json.to_str().unwrap()]);
    assert!(out.status.success(), "{text}");
    let chrome: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let gc_slices = chrome["traceEvents"].as_array().unwrap().iter().filter(|e| e["ph"] == "X" && e["name"] == "garbage collection").count();
    assert!(gc_slices as u64 >= gcs["traced"].parse::<u64>().unwrap(), "{gc_slices} GC slices");
}

/// Two runs of a load, the second with one function doing more work per call and one pair
/// sending four times as much: the diff names those two first.
#[test]
fn diff_names_the_slower_function_and_the_busier_pair_first() {
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<PathBuf> = [("before", "50000, 5"), ("after", "250000, 20")]
        .iter()
        .map(|(name, load)| {
            let mut beam = Beam::start();
            beam.call(&format!("scope_record:diff_load({load})"));
            let path = dir.path().join(format!("{name}.scope"));
            let recorder = record(&beam, &path, &["--overhead-budget", "5%", "--duration", "15s"]);
            let (status, stderr) = recorder.finish(Stop::OnItsOwn(Duration::from_secs(40)));
            assert!(status.success(), "{stderr:?}");
            path
        })
        .collect();
    let svg = dir.path().join("diff.svg");
    let (out, text) = run(&["diff", runs[0].to_str().unwrap(), runs[1].to_str().unwrap(), "--flamegraph", svg.to_str().unwrap()]);
    assert!(out.status.success(), "{text}");
    let top: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("Biggest changes")).skip(1).take(2).collect();
    assert_eq!(top.len(), 2, "{text}");
    assert!(top.iter().any(|l| l.contains("CPU") && l.contains("scope_record:step/")), "{text}");
    assert!(top.iter().any(|l| l.contains("messages") && l.contains("diff_sender -> diff_sink")), "{text}");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.contains("<svg") && svg.contains("scope_record:step"), "the differential flame graph");
}

/// A client calling a server that takes 200 ms per call: `why` says it waits for that server,
/// and that the server sleeps.
#[test]
fn why_names_the_server_a_client_waits_on() {
    let mut beam = Beam::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("why.scope");
    let server = beam.call("scope_record:slow_server(200)")["pid"].clone();
    beam.call("scope_record:slow_client()");
    let recorder = record(&beam, &path, &["--snapshot-interval", "1s", "--duration", "8s"]);
    let (status, stderr) = recorder.finish(Stop::OnItsOwn(Duration::from_secs(30)));
    assert!(status.success(), "{stderr:?}");
    let (out, text) = run(&["why", path.to_str().unwrap(), "why_client"]);
    assert!(out.status.success(), "{text}");
    let first = text.lines().find(|l| l.trim_start().starts_with("1.")).unwrap_or_default();
    assert!(first.contains(&format!("waiting for a reply from {server} (why_server)")), "{text}");
    assert!(text.contains("which it waits on") && text.contains("sleeping in timer:sleep/1"), "{text}");
    let (out, text) = run(&["why", path.to_str().unwrap(), "nobody_by_that_name"]);
    assert!(!out.status.success() && text.contains("no process in"), "{text}");
}

/// A caller of a poolboy pool of 2 workers under 10 callers: `why` says it waits on the pool,
/// that it is a pool, and what its callers waited at checkout and held (pairing the recording's
/// sends again).
#[test]
fn why_says_a_caller_waits_on_a_pool() {
    let mut beam = Beam::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.scope");
    let pool = beam.call("scope_pool:start(scope_pool_pool, 2)")["pid"].clone();
    let recorder = record(&beam, &path, &["--mode", "trace", "--snapshot-interval", "250ms", "--duration", "8s"]);
    // 10 callers, 2 workers, 20 ms of work each time: about 5 s of queueing.
    beam.call("scope_pool:run(scope_pool_pool, 10, 50, 20)");
    let (status, stderr) = recorder.finish(Stop::OnItsOwn(Duration::from_secs(30)));
    assert!(status.success(), "{stderr:?}");
    let (out, text) = run(&["why", path.to_str().unwrap(), "scope_pool_caller"]);
    assert!(out.status.success(), "{text}");
    let first = text.lines().find(|l| l.trim_start().starts_with("1.")).unwrap_or_default();
    assert!(first.contains(&format!("waiting for a reply from {pool} (scope_pool_pool)")), "{text}");
    assert!(text.contains("a pool: callers waited at checkout"), "{text}");
    assert!(text.contains("held what they checked out"), "{text}");
    // The pool's answers went to its callers' aliases, and the recording says so.
    let sends = replay_json(&path, &["--kind", "send", "--all", "--limit", "0"]);
    let answers = sends.iter().filter(|l| l["alias"] == true && l["from"]["pid"] == pool.as_str()).count();
    assert_eq!(answers, 500, "the pool's answers to aliases in the recording");
}

/// `check --pid` records a live VM for --duration and checks it; a hypothesis that cannot
/// be read is refused before anything attaches.
#[test]
fn check_on_a_live_vm() {
    let mut beam = Beam::start();
    beam.call("scope_record:parked(live_box)");
    beam.call("scope_record:fill(live_box, 2000)");
    let pid = beam.os_pid.to_string();
    let (out, text) = run(&["check", "--pid", &pid, "--duration", "3s", "--assert", "no mailbox over 100", "--assert", "max mailbox of live_box >= 2000"]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("REFUTED    no mailbox over 100") && text.contains("live_box"), "{text}");
    assert!(text.contains("CONFIRMED  max mailbox of live_box >= 2000"), "{text}");
    let (out, text) = run(&["check", "--pid", &pid, "--assert", "max mailbox <<< 3"]);
    assert!(!out.status.success() && text.contains("expected an operator") && !text.contains("attached"), "{text}");
}

/// A recorder killed outright leaves a file that reads up to its last whole block; files that
/// are not recordings, or are damaged, get a clear error or warning, never a panic.
#[test]
fn a_killed_recorder_leaves_a_readable_file_and_bad_files_are_refused() {
    let mut beam = Beam::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed.scope");
    let recorder = record(&beam, &path, &["--mode", "trace", "--snapshot-interval", "1s"]);
    beam.call("scope_fixtures:sends(20000)");
    // Blocks are written each second: wait for a few, then no chance to finish the file.
    std::thread::sleep(Duration::from_secs(3));
    let (status, stderr) = recorder.finish(Stop::Signal(libc::SIGKILL));
    assert!(!status.success(), "{stderr:?}");
    let (out, text) = run(&["replay", path.to_str().unwrap(), "--summary"]);
    assert!(out.status.success(), "{text}");
    let sends: u64 = text
        .split(" sends")
        .next()
        .and_then(|s| s.rsplit(['(', ' ']).next())
        .map(|n| n.replace(',', "").parse().unwrap())
        .expect("a send count");
    assert!(sends >= 20000, "the killed recording holds {sends} sends of the 20,000: {text}");

    // Cut in the middle of a block: the blocks before read, with a warning saying where.
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.scope");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let (out, text) = run(&["replay", cut.to_str().unwrap(), "--summary"]);
    assert!(out.status.success() && text.contains("warning") && text.contains("cut short"), "{text}");
    // A byte flipped inside: that block skipped, said where.
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n / 2] ^= 0xff;
    let bad = dir.path().join("flipped.scope");
    std::fs::write(&bad, &flipped).unwrap();
    let (out, text) = run(&["replay", bad.to_str().unwrap(), "--summary"]);
    assert!(out.status.success() && text.contains("damaged at byte"), "{text}");
    // Not recordings at all.
    for (what, content) in [("passwd", std::fs::read("/etc/passwd").unwrap()), ("empty", Vec::new())] {
        let f = dir.path().join(what);
        std::fs::write(&f, content).unwrap();
        for cmd in [&["replay", f.to_str().unwrap()][..], &["export", f.to_str().unwrap()], &["why", f.to_str().unwrap(), "x"]] {
            let (out, text) = run(cmd);
            assert_eq!(out.status.code(), Some(1), "{cmd:?}: {text}");
            assert!(text.contains("not a scope-probe recording") && !text.contains("panicked"), "{cmd:?}: {text}");
        }
    }
    let (out, text) = run(&["replay", dir.path().join("missing.scope").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("No such file"), "{text}");
}

/// `record --pid A --pid B`: one file, merged as `merge` would (each VM recorded to a part,
/// then merged, the parts removed), with both sides of each message between the nodes.
#[test]
fn a_recording_of_two_nodes_is_one_merged_file() {
    const N: u64 = 200;
    let sname = |s: &str| format!("{s}_{}", std::process::id());
    let mut a = Beam::start_with(Path::new("/usr/bin/erl"), &["-sname", &sname("scope_rec2_a")], &[]);
    let mut b = Beam::start_with(Path::new("/usr/bin/erl"), &["-sname", &sname("scope_rec2_b")], &[]);
    b.call("scope_dist:sink(scope_dist_sink)");
    let b_node = b.call("node()")["value"].trim_matches('\'').to_owned();
    let a_node = a.call("node()")["value"].trim_matches('\'').to_owned();
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("both.scope");
    let (pa, pb) = (a.os_pid.to_string(), b.os_pid.to_string());
    let args = ["record", "--pid", &pa, "--pid", &pb, "-o", all.to_str().unwrap(), "--mode", "trace", "--snapshot-interval", "1s"];
    let r = Running::start(&args, a.os_pid, "recording to");
    let sent = a.call(&format!("scope_dist:send('{b_node}', scope_dist_sink, {N})"));
    let (sender, sink) = (sent["a"].clone(), sent["sink"].trim_matches('"').to_owned());
    assert_eq!(b.call("scope_dist:count(scope_dist_sink)")["count"], N.to_string());
    std::thread::sleep(Duration::from_millis(1500));
    let (status, stderr) = r.finish(Stop::Signal(libc::SIGINT));
    assert!(status.success(), "{stderr:?}");
    let left: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, ["both.scope"], "the parts are merged and removed");
    let m = meta(&all);
    let mut nodes: Vec<&str> = m["vms"].as_array().unwrap().iter().map(|v| v["vm"]["node"].as_str().unwrap()).collect();
    nodes.sort();
    let mut want = [a_node.as_str(), b_node.as_str()];
    want.sort();
    assert_eq!(nodes, want);
    let events = replay_json(&all, &["--kind", "dist_send,dist_receive"]);
    let count = |kind: &str| {
        events.iter().filter(|e| e["kind"] == kind && e["from"]["pid"] == sender.as_str() && e["to"]["pid"] == sink.as_str()).count() as u64
    };
    assert_eq!((count("dist_send"), count("dist_receive")), (N, N), "both sides of the pair in the one recording");

    // The state at a moment: each node's own table read, under its name.
    let (out, text) = run(&["replay", all.to_str().unwrap(), "--at", "1s"]);
    assert!(out.status.success(), "{text}");
    let section = |node: &str| {
        let from = text.find(&format!("Node {node} ")).unwrap_or_else(|| panic!("{node} in:\n{text}"));
        let rest = &text[from + 5..];
        rest[..rest.find("\nNode ").unwrap_or(rest.len())].to_owned()
    };
    let (in_a, in_b) = (section(&a_node), section(&b_node));
    assert!(in_b.contains("scope_dist_sink") && !in_a.contains("scope_dist_sink"), "the sink under b only:\n{text}");
    for s in [&in_a, &in_b] {
        assert!(s.contains("Processes:") && s.contains("Schedulers:"), "{s}");
    }
}

/// Two nodes recorded apart, then merged: one clock (the host's monotonic one, exact), both
/// nodes' processes under their own VM, and each message from one node to the other one arrow
/// from the sender on the first to the receiver on the second in the Perfetto export; the
/// commands that rank one node's processes refuse the merged file by name.
#[test]
fn merged_recordings_of_two_nodes_draw_each_message_between_them_as_one_arrow() {
    const N: u64 = 300;
    let sname = |s: &str| format!("{s}_{}", std::process::id());
    let a = Beam::start_with(Path::new("/usr/bin/erl"), &["-sname", &sname("scope_merge_a")], &[]);
    let mut b = Beam::start_with(Path::new("/usr/bin/erl"), &["-sname", &sname("scope_merge_b")], &[]);
    let mut a = a;
    b.call("scope_dist:sink(scope_dist_sink)");
    let b_node = b.call("node()")["value"].trim_matches('\'').to_owned();
    let a_node = a.call("node()")["value"].trim_matches('\'').to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb, all) = (dir.path().join("a.scope"), dir.path().join("b.scope"), dir.path().join("all.scope"));
    let ra = record(&a, &pa, &["--mode", "trace", "--snapshot-interval", "1s"]);
    let rb = record(&b, &pb, &["--mode", "trace", "--snapshot-interval", "1s"]);
    let sent = a.call(&format!("scope_dist:send('{b_node}', scope_dist_sink, {N})"));
    let (sender, sink) = (sent["a"].clone(), sent["sink"].trim_matches('"').to_owned());
    assert_eq!(b.call("scope_dist:count(scope_dist_sink)")["count"], N.to_string());
    std::thread::sleep(Duration::from_millis(1500));
    for r in [ra, rb] {
        let (status, stderr) = r.finish(Stop::Signal(libc::SIGINT));
        assert!(status.success(), "{stderr:?}");
    }
    let (out, text) = run(&["merge", pa.to_str().unwrap(), pb.to_str().unwrap(), "-o", all.to_str().unwrap()]);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("one host's monotonic clock"), "{text}");
    let m = meta(&all);
    let nodes: Vec<&str> = m["vms"].as_array().unwrap().iter().map(|v| v["vm"]["node"].as_str().unwrap()).collect();
    assert_eq!(nodes, [a_node.as_str(), b_node.as_str()]);

    // Both sides of the pair, in the merged file.
    let events = replay_json(&all, &["--kind", "dist_send,dist_receive"]);
    let sends = events.iter().filter(|e| e["kind"] == "dist_send" && e["from"]["pid"] == sender.as_str() && e["to"]["pid"] == sink.as_str()).count();
    let receives =
        events.iter().filter(|e| e["kind"] == "dist_receive" && e["from"]["pid"] == sender.as_str() && e["to"]["pid"] == sink.as_str()).count();
    assert_eq!((sends as u64, receives as u64), (N, N), "sends and receives of the pair in the merged replay");

    let trace = dir.path().join("all.perfetto-trace");
    let (out, text) = run(&["export", all.to_str().unwrap(), "--format", "perfetto", "-o", trace.to_str().unwrap()]);
    assert!(out.status.success(), "{text}");
    let pairs = perfetto_query(
        &trace,
        r#"
starts, ends = {}, {}
for ts, e in events:
    for f in e.flow_ids:
        starts[f] = (e.track_uuid, ts)
    for f in e.terminating_flow_ids:
        ends[f] = (e.track_uuid, ts)
pairs = {}
for f, (s, ts) in starts.items():
    if f in ends:
        e, te = ends[f]
        key = json.dumps([names[s], pids.get(parents[s]), names[e], pids.get(parents[e]), te >= ts])
        pairs[key] = pairs.get(key, 0) + 1
print(json.dumps(pairs))
"#,
    );
    let pairs = pairs.as_object().unwrap();
    // Arrows from the sender's track under node a's VM to the sink's under node b's, forward in time.
    let across: u64 = pairs
        .iter()
        .filter(|(k, _)| {
            let k: Vec<serde_json::Value> = serde_json::from_str(k).unwrap();
            k[0].as_str().unwrap().starts_with(&format!("{sender} on {a_node}"))
                && k[1] == a.os_pid
                && k[2].as_str().unwrap().starts_with(&format!("{sink} on {b_node}"))
                && k[3] == b.os_pid
                && k[4] == true
        })
        .map(|(_, n)| n.as_u64().unwrap())
        .sum();
    assert_eq!(across, N, "arrows between the nodes: {pairs:?}");

    let (out, text) = run(&["report", all.to_str().unwrap(), "-o", dir.path().join("r.html").to_str().unwrap()]);
    assert!(!out.status.success() && text.contains("merged recording"), "{text}");
}
