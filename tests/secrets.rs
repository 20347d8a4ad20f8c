//! Nothing scope-probe outputs contains what the VM's processes hold or send: processes that
//! keep a secret in their heaps, dictionaries, mailboxes, a gen_server's state, an ETS table's
//! objects and a socket's queues, and send it in every message, are observed in every way (the monitor's endpoint under every hook with
//! the flight recorder on, snapshot, top, profile, a recording and everything made from it),
//! and no output holds the secret, while each shows those processes by pid and name.

use std::path::Path;
use std::time::Duration;

use scope_probe_tests::probe::{Running, Stop, run};
use scope_probe_tests::tmux::Tmux;
use scope_probe_tests::{Beam, Probe};

/// Output of a scope-probe command, stdout and stderr, failing the test if it failed.
fn output(args: &[&str]) -> Vec<u8> {
    let out = run(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    [out.stdout, out.stderr].concat()
}

/// Every file under `dir`, by path.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            all.extend(files(&p));
        } else {
            all.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_output_holds_what_the_processes_hold_or_send() {
    let secret = format!("SCOPE-SECRET-{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    let mut beam = Beam::start();
    let procs = beam.call(&format!("scope_secret:start(\"{secret}\")"));
    let holder = procs["holder"].clone();
    // The VM does hold and pass it: anything reading contents would find it.
    let held = beam.call(&format!("io_lib:format(\"~p\", [process_info(list_to_pid(\"{holder}\"), dictionary)])"));
    assert!(held["value"].contains(&secret), "{held:?}");
    assert_eq!(beam.call("element(2, process_info(whereis(scope_secret_sink), message_queue_len))")["value"], "2000");
    let dir = tempfile::tempdir().unwrap();
    let (pid, d) = (beam.os_pid.to_string(), |name: &str| dir.path().join(name).display().to_string());
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();

    // The monitor, under every hook, with the flight recorder on.
    let flight = d("flight");
    let probe = Probe::attach(beam.os_pid, &["--mode", "trace", "--snapshot-interval", "1s", "--flight-recorder", &flight]);
    std::thread::sleep(Duration::from_secs(4));
    let flow = format!("/flow.svg?os_pid={pid}");
    for path in ["/metrics", "/api/processes", "/api/pairs", "/api/calls", "/api/requests", "/api/table", "/api/findings", "/", "/flamegraph.svg", &flow] {
        outputs.push((path.into(), probe.get(path).into_bytes()));
    }
    // The flight recorder's segments (it removes them when it stops: nobody asked for them).
    let segments = files(Path::new(&flight));
    assert!(!segments.is_empty(), "the flight recorder's segments");
    outputs.extend(segments);
    let (status, stderr) = probe.stop();
    assert!(status.success(), "{stderr:?}");
    outputs.push(("monitor's stderr".into(), stderr.join("\n").into_bytes()));

    outputs.push(("snapshot --json".into(), output(&["snapshot", "--pid", &pid, "--json", "--all"])));
    outputs.push(("snapshot".into(), output(&["snapshot", "--pid", &pid, "--all"])));
    for (name, extra) in [("p.folded", vec!["--by-process"]), ("p.svg", vec![]), ("p.json", vec![])] {
        let file = d(name);
        let args = [&["profile", "--pid", &pid, "--duration", "2s", "-o", &file][..], &extra].concat();
        outputs.push((format!("profile {name} (stderr)"), output(&args)));
        outputs.push((format!("profile {name}"), std::fs::read(&file).unwrap()));
    }
    let tmux = Tmux::start(&format!("{} top --pid {pid} --all --interval 500ms", scope_probe_tests::probe::binary().display()));
    let screen = tmux.wait_for(|s| s.contains("scope_secret_holder"));
    outputs.push(("top".into(), screen.into_bytes()));
    // Every view: servers, tree, ETS tables, ports, memory.
    for view in ["WAITING", "SUPERVISOR", "OBJECTS", "DRIVER", "KIND"] {
        tmux.keys("Tab");
        let screen = tmux.wait_for(|s| s.contains(view));
        outputs.push((format!("top ({view})"), screen.into_bytes()));
    }
    drop(tmux);

    // A recording and everything made from it.
    let rec = d("run.scope");
    let r =
        Running::start(&["record", "--pid", &pid, "--mode", "trace", "--snapshot-interval", "1s", "-o", &rec], beam.os_pid, "recording to");
    std::thread::sleep(Duration::from_secs(3));
    let (status, stderr) = r.finish(Stop::Signal(libc::SIGINT));
    assert!(status.success(), "{stderr:?}");
    outputs.push(("run.scope".into(), std::fs::read(&rec).unwrap()));
    outputs.push(("replay --json".into(), output(&["replay", &rec, "--json", "--all"])));
    outputs.push(("replay --at".into(), output(&["replay", &rec, "--at", "1s", "--all"])));
    outputs.push(("why".into(), output(&["why", &rec, "scope_secret_sender"])));
    for (format, file) in [("perfetto", d("run.perfetto-trace")), ("chrome-json", d("run.json"))] {
        output(&["export", &rec, "--format", format, "-o", &file]);
        outputs.push((format.into(), std::fs::read(&file).unwrap()));
    }
    let report = d("report.html");
    output(&["report", &rec, "-o", &report]);
    outputs.push(("report".into(), std::fs::read(&report).unwrap()));
    outputs.push(("diff".into(), output(&["diff", &rec, &rec])));
    beam.call("scope_secret:stop()");

    for (what, bytes) in &outputs {
        assert!(!contains(bytes, secret.as_bytes()), "{what} holds the secret");
    }
    // The outputs are real: the processes are there, by name.
    for what in ["/api/processes", "snapshot --json", "top", "replay --json", "report", "/api/table", "top (OBJECTS)"] {
        let bytes = &outputs.iter().find(|(w, _)| w == what).unwrap().1;
        assert!(contains(bytes, b"scope_secret_holder") || contains(bytes, b"scope_secret_sender"), "{what} shows the processes");
    }
    assert!(outputs.len() > 20, "{} outputs checked", outputs.len());
}
