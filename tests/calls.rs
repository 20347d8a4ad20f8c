//! Call latency from the outside (issue 16): servers whose calls take a known time, under
//! concurrent callers that time their own calls; what scope-probe pairs from the sends agrees
//! with the callers.

use std::time::Duration;

use scope_probe_tests::tmux::Tmux;
use scope_probe_tests::{Beam, Probe, probe};

/// The server's row of /api/calls once it holds `calls` calls.
fn row(probe: &Probe, name: &str, calls: u64) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..50 {
        let rows: Vec<serde_json::Value> = serde_json::from_str(&probe.get("/api/calls")).unwrap();
        last = serde_json::json!(rows.clone());
        if let Some(r) = rows.into_iter().find(|r| r["name"] == name) {
            if r["calls"].as_u64() >= Some(calls) {
                return r;
            }
            last = r;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{name}: {calls} calls not seen; last {last}");
}

/// Within 10% of what the callers measured (and never below their 50 µs floor of scheduling).
fn close(ours_s: f64, theirs_us: f64, what: &str) {
    let ours_us = ours_s * 1e6;
    assert!((ours_us - theirs_us).abs() <= theirs_us * 0.10, "{what}: scope-probe {ours_us:.0} µs, the callers {theirs_us:.0} µs");
}

/// Two gen_servers that answer in 2 ms and 20 ms, four callers each: the replies go to the
/// callers' aliases (OTP 24+), which the alias-send hook sees.
#[test]
fn call_latency_agrees_with_the_callers() {
    let mut beam = Beam::start();
    beam.call("scope_calls:start(scope_calls_fast)");
    beam.call("scope_calls:start(scope_calls_slow)");
    let probe = Probe::attach(beam.os_pid, &["--mode", "trace"]);
    // 4 callers each: the fast server answers in 2 ms, the slow one in 20 ms, and callers queue.
    for (name, calls, ms) in [("scope_calls_fast", 50, 2), ("scope_calls_slow", 10, 20)] {
        let r = beam.call(&format!("scope_calls:run({name}, 4, {calls}, {ms})"));
        let n: u64 = r["calls"].parse().unwrap();
        let ours = row(&probe, name, n);
        assert_eq!(ours["calls"].as_u64(), Some(n), "{ours}");
        close(ours["p50_seconds"].as_f64().unwrap(), r["p50_us"].parse().unwrap(), &format!("{name} p50"));
        close(ours["p99_seconds"].as_f64().unwrap(), r["p99_us"].parse().unwrap(), &format!("{name} p99"));
        // The callers are the four that called.
        let callers = ours["top_callers"].as_array().unwrap();
        assert_eq!(callers.len(), 4, "{ours}");
        assert_eq!(callers.iter().map(|c| c[1].as_u64().unwrap()).sum::<u64>(), n, "{ours}");
    }
    let (status, stderr) = probe.stop();
    assert!(status.success(), "{stderr:?}");
}

/// A poolboy pool (Debian's erlang-poolboy) of 2 workers under 10 callers: the wait at
/// checkout and the time each caller holds its worker agree with the callers' own timing, and
/// the pool is known as a pool.
#[test]
fn pool_waits_and_holds_agree_with_the_callers() {
    let mut beam = Beam::start();
    beam.call("scope_pool:start(scope_pool_pool, 2)");
    let probe = Probe::attach(beam.os_pid, &["--mode", "trace"]);
    let r = beam.call("scope_pool:run(scope_pool_pool, 10, 10, 10)");
    let n: u64 = r["checkouts"].parse().unwrap();
    let pool = row(&probe, "scope_pool_pool", n);
    assert_eq!(pool["role"], "pool", "{pool}");
    assert_eq!(pool["calls"].as_u64(), Some(n), "{pool}");
    close(pool["p50_seconds"].as_f64().unwrap(), r["wait_p50_us"].parse().unwrap(), "checkout wait p50");
    close(pool["p99_seconds"].as_f64().unwrap(), r["wait_p99_us"].parse().unwrap(), "checkout wait p99");
    close(pool["hold_p50_seconds"].as_f64().unwrap(), r["hold_p50_us"].parse().unwrap(), "hold p50");
    close(pool["hold_p99_seconds"].as_f64().unwrap(), r["hold_p99_us"].parse().unwrap(), "hold p99");
    let m = probe.metrics();
    let waits = m.get("beam_top_server_call_duration_seconds_count", &[("name", "scope_pool_pool")]);
    assert_eq!(waits, Some(n as f64), "the pool's waits in /metrics");
    // The last checkins may still be on their way when the last checkout has been seen.
    let holds = scope_probe_tests::wait_stable(Duration::from_secs(10), Duration::from_millis(500), || {
        probe.metrics().get("beam_top_pool_hold_duration_seconds_count", &[("name", "scope_pool_pool")])
    });
    assert_eq!(holds, Some(n as f64), "the pool's holds in /metrics");
    let (status, stderr) = probe.stop();
    assert!(status.success(), "{stderr:?}");
}

/// An Elixir GenServer reads the Elixir way in the call view (`ScopeProbe.ElixirServer.init/1`,
/// or its label on OTP 27+).
#[test]
fn elixir_servers_read_like_elixir_in_the_call_view() {
    assert!(scope_probe_tests::beam::elixir_available(), "Elixir is not installed: `cargo xtask setup` installs it");
    let mut beam = Beam::start();
    let pid = beam.call("'Elixir.ScopeProbe.ElixirServer':start()")["pid"].clone();
    let probe = Probe::attach(beam.os_pid, &["--mode", "trace"]);
    let r = beam.call(&format!("scope_calls:run(list_to_pid(\"{pid}\"), 2, 100, 0)"));
    let n: u64 = r["calls"].parse().unwrap();
    let otp: u32 = beam.call("erlang:system_info(otp_release)")["value"].trim_matches('"').parse().unwrap();
    let name = if otp >= 27 { "<<\"elixir worker\">>" } else { "ScopeProbe.ElixirServer.init/1" };
    let ours = row(&probe, name, n);
    assert_eq!(ours["server"], pid.as_str(), "{ours}");
    let (status, stderr) = probe.stop();
    assert!(status.success(), "{stderr:?}");
}

/// In adaptive mode (the default) the calls are paired in windows: table reads find the callers
/// blocked in their calls and ask for send windows, within the budget. The windows see a part of
/// the calls, and those agree with the callers.
#[test]
fn call_latency_in_adaptive_mode_comes_from_its_windows() {
    let mut beam = Beam::start();
    beam.call("scope_calls:start(scope_calls_steady)");
    let probe = Probe::attach(beam.os_pid, &[]);
    // 4 callers queue behind a server that answers in 2 ms: each waits about 8 ms, for 12 s.
    let r = beam.call("scope_calls:run(scope_calls_steady, 4, 1500, 2)");
    let n: u64 = r["calls"].parse().unwrap();
    let ours = row(&probe, "scope_calls_steady", 1);
    let seen = ours["calls"].as_u64().unwrap();
    assert!(seen >= 100 && seen < n, "windows paired {seen} of {n} calls: {ours}");
    close(ours["p50_seconds"].as_f64().unwrap(), r["p50_us"].parse().unwrap(), "p50");
    let m = probe.metrics();
    let asked = m.get("scope_probe_escalations_total", &[("reason", "calls")]).unwrap_or(0.0);
    assert!(asked >= 1.0, "windows opened for calls: {asked}");
    eprintln!("adaptive: {seen} of {n} calls paired, p50 {} s (callers {} µs), {asked} windows for calls", ours["p50_seconds"], r["p50_us"]);
    let (status, stderr) = probe.stop();
    assert!(status.success(), "{stderr:?}");
}

/// `top`'s servers view (`tab`): the server four callers are blocked on, with how many wait.
#[test]
fn top_shows_the_server_callers_are_blocked_on() {
    let mut beam = Beam::start();
    beam.call("scope_calls:start(scope_calls_busy)");
    beam.call("scope_calls:run_async(scope_calls_busy, 4, 500, 20)");
    let cmd = format!("{} top --pid {} --interval 500ms", probe::binary().display(), beam.os_pid);
    let tmux = Tmux::start(&cmd);
    tmux.wait_for(|s| s.contains("scope_calls_busy"));
    tmux.keys("Tab");
    let screen = tmux.wait_for(|s| s.contains("WAITING") && s.contains("scope_calls_busy") && s.contains("≥"));
    assert!(screen.contains("BLOCKED FOR"), "{screen}");
    let line = screen.lines().find(|l| l.contains("scope_calls_busy")).unwrap_or_default();
    let waiting: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    // Four callers: one being served (blocked too: it waits for the reply), three queued.
    assert!(waiting.first().is_some_and(|&n| (3..=4).contains(&n)), "{screen}");
    tmux.keys("Tab");
    tmux.wait_for(|s| s.contains("REDS/S"));
    assert!(tmux.quit(), "q quits");
}

/// `top --calls` times the calls of the servers callers are blocked on, in windows of send
/// hooks within its budget: the servers view's p50 agrees with the callers', the selected
/// server's histogram holds the calls timed, and quitting leaves the VM's code as it was.
#[test]
fn top_with_calls_times_the_server_callers_wait_on() {
    let mut beam = Beam::start();
    beam.call("scope_calls:start(scope_calls_timed)");
    let tmux = Tmux::top(beam.os_pid, "--calls", 1);
    tmux.wait_for(|s| s.contains("P50") && s.contains("TOP CALLER"));
    // 4 callers of a 20 ms server: each waits about 80 ms, for 24 s. The VM is nearly idle (its
    // processes sleep), so its budget is small: the first windows long enough to pair 80 ms
    // calls come after about 10 s.
    let r = beam.call("scope_calls:run(scope_calls_timed, 4, 300, 20)");
    let theirs: f64 = r["p50_us"].parse().unwrap();
    let screen = tmux.wait_for(|s| s.lines().any(|l| l.contains("scope_calls_timed") && l.contains(" ms ")));
    let line = screen.lines().find(|l| l.contains("scope_calls_timed") && l.contains(" ms ")).unwrap();
    // PID SERVER WAITING BLOCKED-FOR CALLS/S P50 P99 ...: the first "N ms" is the p50.
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "ms").unwrap_or_else(|| panic!("{screen}"));
    let ours: f64 = words[at - 1].parse().unwrap_or_else(|_| panic!("{screen}"));
    close(ours / 1e3, theirs, "top's p50");
    let foot = screen.lines().find(|l| l.contains("calls timed since start")).unwrap_or_else(|| panic!("no histogram line: {screen}"));
    assert!(foot.contains("scope_calls_timed") && foot.contains("≤100ms"), "{foot}");
    assert!(tmux.quit(), "q quits");
    if let Err(left) = scope_probe_tests::held::Held::released_code(beam.os_pid) {
        panic!("top --calls left breakpoints in the VM: {left:?}");
    }
}
