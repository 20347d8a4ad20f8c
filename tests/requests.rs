//! Request latency from the outside (issue 16): Debian's yaws serving a page whose handler waits
//! a known time on a gen_server, under a bounded HTTP client that times every request; and
//! request processes of our own, one per request as Cowboy runs them, timed from inside. What
//! scope-probe makes of spawns, exits and sends agrees with both.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use scope_probe_tests::probe::{self, Running, Stop};
use scope_probe_tests::{Beam, Probe};

const YAWS_EBIN: &str = "/usr/lib/yaws/ebin";
const ACCEPTOR: &str = "yaws_server:acceptor0/2";

/// A VM serving /work?ms=N through yaws on a free port, its handler calling scope_web_db.
fn yaws(beam: &mut Beam) -> u16 {
    assert!(Path::new(YAWS_EBIN).exists(), "{YAWS_EBIN} is missing: `cargo xtask setup` installs erlang-yaws");
    beam.call(&format!("code:add_path(\"{YAWS_EBIN}\")"));
    let port = probe::free_port();
    let dir = tempfile::tempdir().unwrap().keep();
    beam.call(&format!("scope_web:start({port}, \"{}\")", dir.display()));
    port
}

/// `clients` clients, each making `requests` requests one after the other, one connection each
/// (`Connection: close`): one in five asks for 50 ms of work, the others for 10 ms (the server
/// serves one at a time, so they also queue). Returns every request's latency as the client
/// measured it, connect to the last byte, sorted.
fn load(port: u16, clients: usize, requests: usize) -> Vec<Duration> {
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                (0..requests)
                    .map(|i| {
                        let ms = if (i + c) % 5 == 0 { 50 } else { 10 };
                        let t0 = Instant::now();
                        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                        write!(s, "GET /work?ms={ms} HTTP/1.1\r\nHost: scope\r\nConnection: close\r\n\r\n").unwrap();
                        let mut reply = String::new();
                        s.read_to_string(&mut reply).unwrap();
                        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
                        t0.elapsed()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    all.sort();
    all
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q).round() as usize).clamp(1, sorted.len()) - 1].as_secs_f64()
}

/// Within 10% of the client's.
fn close(ours: f64, theirs: f64, what: &str) {
    assert!((ours - theirs).abs() <= theirs * 0.10, "{what}: scope-probe {:.2} ms, the client {:.2} ms", ours * 1e3, theirs * 1e3);
}

/// The VM's entry of /api/requests once `handler` holds at least `n` requests.
fn requests(probe: &Probe, handler: &str, n: u64) -> (serde_json::Value, serde_json::Value) {
    let mut last = serde_json::Value::Null;
    for _ in 0..50 {
        let vms: Vec<serde_json::Value> = serde_json::from_str(&probe.get("/api/requests")).unwrap();
        last = vms[0].clone();
        if let Some(h) = last["handlers"].as_array().unwrap().iter().find(|h| h["handler"] == handler)
            && h["requests"].as_u64() >= Some(n)
        {
            return (h.clone(), last.clone());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{handler}: {n} requests not seen; last {last}");
}

/// yaws' acceptors, each serving one connection (one request) at a time: trace mode times every
/// request but those the acceptors alive before the attach had already begun waiting for; the
/// slowest are named by handler with the server they waited on; the adaptive mode times a part
/// of them in its windows, and those agree too.
#[test]
fn yaws_request_latency_agrees_with_the_client() {
    let mut beam = Beam::start();
    let port = yaws(&mut beam);
    let probe = Probe::attach(beam.os_pid, &["--mode", "trace"]);
    let client = load(port, 4, 40);
    let n = client.len() as u64;
    // The acceptors already waiting in accept at the attach are not known to be idle: their
    // first request is not timed (yaws keeps a pool of at most 8).
    let (h, all) = requests(&probe, ACCEPTOR, n - 8);
    let timed = h["requests"].as_u64().unwrap();
    assert!(timed <= n, "{timed} timed of {n} requests: {h}");
    close(h["p50_seconds"].as_f64().unwrap(), quantile(&client, 0.5), "p50");
    close(h["p99_seconds"].as_f64().unwrap(), quantile(&client, 0.99), "p99");
    // The slowest: a yaws request, most of it waiting on the database server, with its CPU.
    let slowest = &all["slowest"][0];
    assert_eq!(slowest["handler"], ACCEPTOR, "{all}");
    let wait = &slowest["waited_on"][0];
    assert_eq!(wait["name"], "scope_web_db", "{all}");
    assert!(wait["share"].as_f64().unwrap() > 0.8, "{all}");
    assert!(slowest["cpu_seconds"].as_f64().is_some_and(|c| c > 0.0 && c < 0.01), "{all}");
    let m = probe.metrics();
    assert_eq!(m.get("beam_request_duration_seconds_count", &[("handler", ACCEPTOR)]), Some(timed as f64));
    let (status, stderr) = probe.stop();
    assert!(status.success(), "{stderr:?}");

    // Adaptive mode (the default): the request processes ask for windows of sends, spawns and
    // exits within the budget.
    let probe = Probe::attach(beam.os_pid, &[]);
    std::thread::sleep(Duration::from_secs(1));
    let client = load(port, 4, 100);
    let (h, _) = requests(&probe, ACCEPTOR, 1);
    let timed = h["requests"].as_u64().unwrap();
    assert!(timed >= 50 && timed <= client.len() as u64, "{timed} of {} requests timed in windows: {h}", client.len());
    close(h["p50_seconds"].as_f64().unwrap(), quantile(&client, 0.5), "adaptive p50");
    let (status, stderr) = probe.stop();
    assert!(status.success(), "{stderr:?}");
}

/// Processes spawned one per request (proc_lib, as Cowboy's stream handler does), named with
/// `--request-process`: every one is timed from its spawn to its exit, in agreement with what
/// each measured of itself.
#[test]
fn request_processes_are_timed_spawn_to_exit() {
    let mut beam = Beam::start();
    beam.call("scope_calls:start(scope_web_db)");
    let probe = Probe::attach(beam.os_pid, &["--mode", "trace", "--request-process", "scope_web:request/2"]);
    let r = beam.call("scope_web:spawn_requests(200, 4, 5)");
    let n: u64 = r["requests"].parse().unwrap();
    let (h, all) = requests(&probe, "scope_web:request/2", n);
    assert_eq!(h["requests"].as_u64(), Some(n), "{h}");
    let us = |k: &str| r[k].parse::<f64>().unwrap() / 1e6;
    close(h["p50_seconds"].as_f64().unwrap(), us("p50_us"), "p50");
    close(h["p99_seconds"].as_f64().unwrap(), us("p99_us"), "p99");
    assert_eq!(all["slowest"][0]["waited_on"][0]["name"], "scope_web_db", "{all}");
    let (status, stderr) = probe.stop();
    assert!(status.success(), "{stderr:?}");
}

/// A recording of yaws under load: `why` on its acceptors says what their slowest requests
/// waited on, and the HTML report lists the slowest requests by handler.
#[test]
fn why_and_the_report_name_the_slowest_requests() {
    let mut beam = Beam::start();
    let port = yaws(&mut beam);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.scope");
    let pid = beam.os_pid.to_string();
    let args = ["record", "--pid", &pid, "-o", path.to_str().unwrap(), "--mode", "trace", "--snapshot-interval", "250ms"];
    let recorder = Running::start(&args, beam.os_pid, "recording to");
    std::thread::sleep(Duration::from_millis(500));
    load(port, 2, 20);
    let (status, stderr) = recorder.finish(Stop::Signal(libc::SIGINT));
    assert!(status.success(), "{stderr:?}");
    let out = probe::run(&["why", path.to_str().unwrap(), ACCEPTOR]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("Requests of {ACCEPTOR}")), "{text}");
    let on = text.lines().find(|l| l.contains("the slowest waited")).unwrap_or_else(|| panic!("{text}"));
    assert!(on.contains("(scope_web_db)"), "{text}");
    let html = dir.path().join("web.html");
    let out = probe::run(&["report", path.to_str().unwrap(), "-o", html.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    let section = &page[page.find("id=\"sp-requests\"").expect("a requests section")..];
    let section = &section[..section.find("</section>").unwrap()];
    assert!(section.contains("Slowest requests") && section.contains(ACCEPTOR) && section.contains("scope_web_db"), "{section}");
}
