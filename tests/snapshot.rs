//! The process table read from outside: `snapshot` against process_info/2, the monitor's
//! snapshot metrics, and the `top` view driven in tmux.

use std::time::Duration;

use scope_probe_tests::tmux::Tmux;
use scope_probe_tests::{Beam, Probe, probe};

/// `snapshot --json --all`; on a test target, also checks the snapshot says its offsets and
/// debug info came the way the target is about (see `TestTarget::snapshot_says`).
fn snapshot_json(pid: u32) -> serde_json::Value {
    let o = probe::run(&["snapshot", "--pid", &pid.to_string(), "--json", "--all"]);
    assert!(o.status.success(), "snapshot failed: {}", String::from_utf8_lossy(&o.stderr));
    let snap: serde_json::Value = serde_json::from_slice(&o.stdout).expect("snapshot JSON");
    if let Some((field, value)) = scope_probe_tests::beam::test_target().and_then(|t| t.snapshot_says) {
        let got = snap[field].as_str().unwrap_or_default();
        assert!(got.starts_with(value), "snapshot {field}: {got:?}, expected {value:?} on this target");
    }
    snap
}

fn row<'a>(snap: &'a serde_json::Value, pid: &str) -> &'a serde_json::Value {
    snap["processes"].as_array().unwrap().iter().find(|p| p["pid"] == pid).unwrap_or_else(|| panic!("{pid} not in snapshot"))
}

fn num(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Queue lengths, names, current functions and statuses equal what the VM reports; heaps are
/// equal for processes with empty mailboxes (process_info's total_heap_size also counts message
/// data not yet copied to the heap, which the snapshot does not read: mailbox processes show
/// less).
#[test]
fn snapshot_matches_process_info() {
    let mut beam = Beam::start();
    let mbox = beam.call("scope_table:mailbox(scope_mbox, 12345)");
    let heap = beam.call("scope_table:big_heap(scope_heap, 200000)");
    let blocked = beam.call("scope_table:blocked(scope_blocked)");
    let snap = snapshot_json(beam.os_pid);

    let m = row(&snap, &mbox["pid"]);
    assert_eq!(num(&m["message_queue_len"]), 12345);
    assert_eq!(mbox["queue"], "12345", "the VM agrees");
    assert_eq!(m["name"], "scope_mbox");
    // The heap it owns, exactly as garbage_collection_info counts it (total_heap_size also
    // counts the queued messages' data outside the heap).
    assert_eq!(num(&m["total_heap_words"]), mbox["own_heap_words"].parse::<u64>().unwrap(), "heap of scope_mbox");

    for (vm, name) in [(&heap, "scope_heap"), (&blocked, "scope_blocked")] {
        let r = row(&snap, &vm["pid"]);
        assert_eq!(r["name"], name);
        assert_eq!(r["name"], vm["name"].as_str());
        assert_eq!(num(&r["message_queue_len"]), 0);
        assert_eq!(num(&r["total_heap_words"]), vm["heap_words"].parse::<u64>().unwrap(), "heap of {name}");
        assert_eq!(vm["heap_words"], vm["own_heap_words"], "an empty mailbox holds no data outside the heap");
        assert_eq!(r["status"], vm["status"].as_str(), "status of {name}");
    }
    let b = row(&snap, &blocked["pid"]);
    assert_eq!(b["current_function"], "scope_table:waiting_here/0");
    // The controller prints strings quoted.
    assert_eq!(b["current_function"], blocked["current"].trim_matches('"'), "current function as process_info says");

    // The node name, read from the VM's memory (erts_this_node), is node()'s.
    let node = beam.call("node()")["value"].trim_matches('\'').to_owned();
    assert_eq!(snap["node"], node.as_str(), "the node name");
    let target = beam_probes::BeamTarget::open(beam.os_pid).expect("opening the VM");
    assert_eq!(target.node_name().expect("the node name read from the VM"), node);

    let vm_count: u64 = beam.call("erlang:system_info(process_count)")["value"].parse().unwrap();
    assert!(num(&snap["process_count"]).abs_diff(vm_count) <= 1, "process count {} vs {vm_count}", snap["process_count"]);
    assert_eq!(num(&snap["torn"]), 0, "an idle VM has no torn records");
}

/// The VM's processes and the churn's spawn counter, read in one call (scope_table:census/0).
struct Census {
    spawned: u64,
    pids: std::collections::BTreeSet<String>,
    names: std::collections::BTreeMap<String, String>,
}

fn census(beam: &mut Beam) -> Census {
    let r = beam.call("scope_table:census()");
    let list = |k: &str| r[k].trim_matches('"').split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect::<Vec<_>>();
    Census {
        spawned: r["spawned"].parse().unwrap(),
        pids: list("pids").into_iter().collect(),
        names: list("names").iter().map(|kv| kv.split_once('=').map(|(p, n)| (p.to_owned(), n.to_owned())).unwrap()).collect(),
    }
}

/// Snapshots of a VM whose processes spawn and exit children as fast as they can, each taken
/// between two censuses by the VM itself: every process alive at both is in the snapshot with
/// its registered name; a pid the VM listed at neither must have been spawned in between (at
/// most as many as the churn counted); no pid twice; and records skipped as torn are at most
/// the processes that came or went meanwhile (only a slot changing under the reader tears one).
#[test]
fn snapshots_under_process_churn_agree_with_the_vm() {
    let mut beam = Beam::start();
    beam.call("scope_table:churn(4)");
    std::thread::sleep(Duration::from_millis(300));
    let (mut churned, mut torn_total, mut strangers_total) = (0, 0, 0);
    for round in 0..20 {
        let before = census(&mut beam);
        let snap = snapshot_json(beam.os_pid);
        let after = census(&mut beam);
        let spawned = after.spawned - before.spawned;
        assert!(spawned >= 10, "round {round}: the churn ran only {spawned} spawns during the snapshot");
        churned += spawned;
        let rows = snap["processes"].as_array().unwrap();
        let pids: std::collections::BTreeSet<&str> = rows.iter().map(|p| p["pid"].as_str().unwrap()).collect();
        assert_eq!(pids.len(), rows.len(), "round {round}: a pid listed twice");
        assert_eq!(num(&snap["process_count"]), rows.len() as u64);
        for pid in before.pids.intersection(&after.pids) {
            assert!(pids.contains(pid.as_str()), "round {round}: {pid}, alive throughout, is missing");
            let name = row(&snap, pid)["name"].as_str().map(str::to_owned);
            assert_eq!(name, before.names.get(pid).cloned(), "round {round}: name of {pid}");
        }
        let strangers = pids.iter().filter(|p| !before.pids.contains(**p) && !after.pids.contains(**p)).count() as u64;
        assert!(strangers <= spawned, "round {round}: {strangers} pids the VM never listed, {spawned} spawned meanwhile");
        let gone = before.pids.difference(&after.pids).count() as u64;
        let torn = num(&snap["torn"]);
        assert!(torn <= gone + spawned, "round {round}: {torn} torn records, {gone} exits and {spawned} spawns meanwhile");
        torn_total += torn;
        strangers_total += strangers;
    }
    eprintln!("churn: {churned} spawns during 20 snapshots; {strangers_total} short-lived processes caught, {torn_total} torn records");
    assert!(churned >= 1000, "the churn ran: {churned} spawns during the snapshots");
}

#[test]
fn monitor_exports_snapshot_metrics() {
    let mut beam = Beam::start();
    let mbox = beam.call("scope_table:mailbox(scope_mbox, 7000)");
    let heap = beam.call("scope_table:big_heap(scope_heap, 150000)");
    let probe = Probe::attach(beam.os_pid, &["--frequency", "0"]);
    let m = probe.metrics();
    assert_eq!(m.get("beam_top_process_message_queue_length", &[("pid", &mbox["pid"]), ("name", "scope_mbox")]), Some(7000.0));
    assert!(m.value("beam_process_message_queue_length_max") >= 7000.0);
    assert!(m.value("beam_processes_queued_messages") >= 7000.0);
    let heap_bytes = heap["heap_words"].parse::<f64>().unwrap() * 8.0;
    assert_eq!(m.get("beam_top_process_heap_bytes", &[("pid", &heap["pid"]), ("name", "scope_heap")]), Some(heap_bytes));
    assert!(m.value("beam_processes_heap_bytes") >= heap_bytes);
    // Seconds, not ms or ns: a table of a few dozen processes reads in well under 100 ms.
    let read = m.value("scope_probe_snapshot_seconds");
    assert!(read > 0.0 && read < 0.1, "scope_probe_snapshot_seconds {read}");
}

fn line_of(screen: &str, needle: &str) -> usize {
    screen.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle} not on screen:\n{screen}"))
}

#[test]
fn top_shows_names_and_sorts_by_queue_length() {
    let mut beam = Beam::start();
    beam.call("scope_table:mailbox(scope_small_box, 100)");
    beam.call("scope_table:mailbox(scope_big_box, 5000)");
    beam.call("scope_table:blocked(scope_blocked)");
    let cmd = format!("{} top --pid {} --interval 500ms", probe::binary().display(), beam.os_pid);
    let tmux = Tmux::start(&cmd);
    let screen = tmux.wait_for(|s| s.contains("scope_big_box") && s.contains("scope_blocked"));
    assert!(screen.contains("scope_small_box") && screen.contains("scope_blocked"), "{screen}");
    let otp = beam.call("erlang:system_info(otp_release)")["value"].trim_matches('"').to_owned();
    assert!(screen.contains(&format!("OTP {otp}")) && screen.contains("processes"), "header: {screen}");
    assert!(!screen.contains("code_server"), "system processes hidden by default:\n{screen}");

    tmux.keys("m");
    let screen = tmux.wait_for(|s| s.contains("MSGQ ▼"));
    assert!(line_of(&screen, "scope_big_box") < line_of(&screen, "scope_small_box"), "largest queue first:\n{screen}");
    tmux.keys("m");
    let screen = tmux.wait_for(|s| s.contains("MSGQ ▲"));
    assert!(line_of(&screen, "scope_big_box") > line_of(&screen, "scope_small_box"), "reversed:\n{screen}");

    tmux.keys("M");
    let screen = tmux.wait_for(|s| s.contains("MEMORY ▼"));
    assert!(line_of(&screen, "scope_big_box") < line_of(&screen, "scope_small_box"), "most memory first:\n{screen}");

    tmux.keys("a");
    let screen = tmux.wait_for(|s| s.contains("code_server"));
    assert!(screen.contains("code_server"), "`a` shows system processes:\n{screen}");

    tmux.keys("/");
    tmux.keys("big");
    tmux.keys("Enter");
    let screen = tmux.wait_for(|s| !s.contains("scope_small_box"));
    assert!(screen.contains("scope_big_box") && !screen.contains("scope_small_box"), "filtered:\n{screen}");

    assert!(tmux.quit(), "q quits");
}

/// The supervision tree of an application with nested supervisors and workers, read from
/// outside, equals the VM's own walk of it (`supervisor:which_children/1` from the top), in
/// `snapshot --json` and in `top`'s tree view.
#[test]
fn supervision_tree_equals_which_children() {
    let mut beam = Beam::start();
    let r = beam.call("scope_tree:start()");
    let theirs: std::collections::BTreeSet<(String, String)> =
        r["edges"].trim_matches('"').split(',').map(|e| e.split_once('-').unwrap()).map(|(a, b)| (a.to_owned(), b.to_owned())).collect();
    assert_eq!(theirs.len(), 8, "{r:?}");
    let snap = snapshot_json(beam.os_pid);
    let trees = snap["supervision"]["trees"].as_array().unwrap_or_else(|| panic!("{}", snap["supervision"]));
    let top = trees.iter().find(|t| t["pid"] == r["top"].trim_matches('"')).unwrap_or_else(|| panic!("no tree at the top: {trees:?}"));
    assert_eq!(top["identity"], "scope_tree_sup");
    // Supervisor -> child edges: a worker's own helpers (none here) are not the supervisor's.
    fn edges(n: &serde_json::Value, out: &mut std::collections::BTreeSet<(String, String)>) {
        for c in n["children"].as_array().unwrap() {
            if n["supervisor"] == true {
                out.insert((n["pid"].as_str().unwrap().to_owned(), c["pid"].as_str().unwrap().to_owned()));
            }
            edges(c, out);
        }
    }
    let mut ours = std::collections::BTreeSet::new();
    edges(top, &mut ours);
    assert_eq!(ours, theirs);
    // With --all, OTP's own trees too, marked as OTP's (kernel's, under its application).
    assert!(trees.iter().any(|t| t["identity"] == "kernel_sup" && t["system"] == true), "{trees:?}");
    assert_eq!(top["system"], false);

    let tmux = Tmux::top(beam.os_pid, "", 2);
    let screen = tmux.wait_for(|s| s.contains("SUPERVISOR / CHILD") && s.contains("scope_tree_sup"));
    // Indented by depth: the leaf supervisor's workers sit three levels down.
    assert!(screen.lines().any(|l| l.starts_with("▾ scope_tree_sup")), "{screen}");
    assert!(screen.lines().any(|l| l.starts_with("      · ")), "{screen}");
    assert!(tmux.quit(), "q quits");
}

/// ETS tables read from outside equal what `ets:info/2` says of each: named and unnamed, of
/// every type and protection, with centralized and decentralized counters; sizes exact, memory
/// within 5% (a table's memory moves with its allocator's bookkeeping), owners named.
#[test]
fn ets_tables_equal_ets_info() {
    let mut beam = Beam::start();
    let r = beam.call("scope_ets:start()");
    let owner = r["owner"].clone();
    let word: u64 = r["word_size"].parse().unwrap();
    let snap = snapshot_json(beam.os_pid);
    let tables = snap["ets"]["tables"].as_array().unwrap_or_else(|| panic!("no ets section: {}", snap["ets"]));
    let theirs: Vec<Vec<&str>> = r["tables"].trim_matches('"').split(',').map(|t| t.split(':').collect()).collect();
    assert_eq!(theirs.len(), 6, "{r:?}");
    for t in &theirs {
        let [name, id, size, words, owner_pid, kind, protection] = t[..] else { panic!("{t:?}") };
        let ours = tables.iter().find(|o| o["id"] == id).unwrap_or_else(|| panic!("table {name} ({id}) not read: {tables:?}"));
        assert_eq!(ours["name"], name);
        assert_eq!(num(&ours["size"]), size.parse::<u64>().unwrap(), "objects in {name}");
        let bytes = words.parse::<u64>().unwrap() * word;
        assert!(num(&ours["memory_bytes"]).abs_diff(bytes) * 20 <= bytes, "memory of {name}: {} vs the VM's {bytes}", ours["memory_bytes"]);
        assert_eq!(ours["owner"], owner_pid);
        assert_eq!(ours["owner"], owner.as_str());
        assert_eq!(ours["owner_identity"], "scope_ets_owner");
        assert_eq!(ours["type"], kind, "type of {name}");
        assert_eq!(ours["protection"], protection, "protection of {name}");
        assert_eq!(ours["named"], matches!(name, "scope_ets_set" | "scope_ets_ord"), "named: {name}");
    }
    // Every table the VM has, OTP's own among them, and no other.
    let all: u64 = beam.call("length(ets:all())")["value"].parse().unwrap();
    assert_eq!(tables.len() as u64, all, "tables read vs ets:all()");
    assert_eq!(num(&snap["ets"]["torn"]), 0, "an idle VM has no torn tables");

    // top's fourth view: the same tables, largest first, owners named.
    let tmux = Tmux::top(beam.os_pid, "", 3);
    let screen = tmux.wait_for(|s| s.contains("OBJECTS") && s.contains("scope_ets_set"));
    let set = screen.lines().find(|l| l.starts_with("scope_ets_set")).unwrap_or_else(|| panic!("{screen}"));
    assert!(set.contains("scope_ets_owner") && set.contains(" 1000 ") && set.contains("public"), "{set}");
    // OTP's own tables only with `a`.
    assert!(!screen.contains("inet_db"), "{screen}");
    assert!(tmux.quit(), "q quits");
}

/// Memory by kind read from outside equals `erlang:memory()` within 5%, on a VM holding known
/// data in each kind (32 MB of binaries, a 16 MB heap, a table of 100,000 objects, 5,000 atoms
/// made at run time), the code's static tables found through the functions that size them.
#[test]
fn memory_by_kind_equals_erlang_memory() {
    let mut beam = Beam::start();
    beam.call("scope_ets:hold_memory()");
    beam.call("length([list_to_atom(\"scope_mem_atom_\" ++ integer_to_list(I)) || I <- lists:seq(1, 5000)])");
    let before = beam.call("erlang:memory()");
    let snap = snapshot_json(beam.os_pid);
    let after = beam.call("erlang:memory()");
    let ours = &snap["memory"];
    assert!(ours.is_object(), "no memory in snapshot --json: {}", snap["memory_error"]);
    let vm = |r: &scope_probe_tests::beam::Reply, k: &str| -> u64 { r[k].parse().unwrap_or_else(|_| panic!("{k} in {r:?}")) };
    for kind in ["total", "processes", "processes_used", "system", "atom", "atom_used", "binary", "code", "ets"] {
        let (lo, hi) = (vm(&before, kind).min(vm(&after, kind)), vm(&before, kind).max(vm(&after, kind)));
        let read = num(&ours[kind]);
        assert!(read * 20 >= lo * 19 && read * 20 <= hi * 21, "{kind}: read {read}, erlang:memory() {lo}..{hi}");
    }
    assert!(vm(&after, "binary") > 32 << 20 && vm(&after, "ets") > 8 << 20 && vm(&after, "processes") > 16 << 20, "{after:?}");
    // The loaded code alone is most of it (what a build whose tables cannot be found shows).
    let code = vm(&after, "code");
    assert!(num(&ours["code_loaded"]) < code && num(&ours["code_loaded"]) * 2 >= code, "code_loaded {} of code {code}", ours["code_loaded"]);
    // The text table says the same.
    let o = probe::run(&["snapshot", "--pid", &beam.os_pid.to_string()]);
    assert!(o.status.success(), "snapshot failed: {}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text.lines().find(|l| l.starts_with("binary ")).unwrap_or_else(|| panic!("no binary line: {text}"));
    let bytes: u64 = line.split_whitespace().nth(1).and_then(|b| b.parse().ok()).unwrap_or_else(|| panic!("{line}"));
    assert!(bytes.abs_diff(num(&ours["binary"])) * 20 <= bytes, "{line} vs {}", ours["binary"]);

    // The monitor reads again and again, counting only the atoms made since its last read:
    // after 20,000 more, its atom kinds still agree.
    let probe = Probe::attach(beam.os_pid, &["--frequency", "0", "--snapshot-interval", "1s"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while probe.metrics().get("beam_memory_bytes", &[("kind", "atom")]).is_none() {
        assert!(std::time::Instant::now() < deadline, "no beam_memory_bytes{{kind=\"atom\"}} in 10 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    beam.call("length([list_to_atom(\"scope_mem_later_\" ++ integer_to_list(I)) || I <- lists:seq(1, 20000)])");
    std::thread::sleep(Duration::from_millis(2500));
    let m = probe.metrics();
    let now = beam.call("erlang:memory()");
    for kind in ["atom", "atom_used", "total", "processes"] {
        let read = m.get("beam_memory_bytes", &[("kind", kind)]).unwrap_or_default() as u64;
        assert!(read.abs_diff(vm(&now, kind)) * 20 <= vm(&now, kind), "{kind}: the monitor's {read}, erlang:memory() {}", now[kind]);
    }
    drop(probe);

    // top's sixth view: the kinds, with their shares of the total.
    let tmux = Tmux::top(beam.os_pid, "", 5);
    let screen = tmux.wait_for(|s| s.contains("KIND") && s.contains("processes_used"));
    let binary = screen.lines().find(|l| l.starts_with("binary ")).unwrap_or_else(|| panic!("{screen}"));
    assert!(binary.contains(" MiB") && binary.contains('%'), "{binary}");
    assert!(tmux.quit(), "q quits");
}

/// The port table read from outside equals what the VM says of each port
/// (`erlang:port_info/2`, `erlang:ports/0`, `inet:sockname/peername`, `inet:getstat`): a TCP
/// listener, a connected pair whose receiver never reads while the sender is blocked on the
/// busy port (its queue full), a spawned `cat` that echoed a known line, a `spawn_executable`
/// and a UDP socket. For the stuck pair, the kernel's queues account for every byte the sender's
/// port passed on: the data handed to the port minus what it still queues is exactly what sits
/// in the kernel, unacknowledged at the sender or unread at the receiver.
#[test]
fn ports_match_port_info() {
    let mut beam = Beam::start();
    let vm = beam.call("scope_ports:start()");
    let snap = snapshot_json(beam.os_pid);
    let after = beam.call("scope_ports:info()");
    let census = beam.call("scope_ports:census()");
    let table = &snap["ports"];
    assert!(table.is_object(), "snapshot --json has no ports: {}", snap.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>().join(",")).unwrap_or_default());
    assert_eq!(num(&table["torn"]), 0, "an idle VM has no torn ports");
    let ports = table["ports"].as_array().unwrap();
    let port = |id: &str| ports.iter().find(|p| p["id"] == id).unwrap_or_else(|| panic!("{id} not in the snapshot: {ports:?}"));

    // Every port the VM lists, with its owner and name, and no other (the VM's own too: the
    // forker, and on OTP 25 the fd ports of standard I/O).
    let theirs: std::collections::BTreeSet<String> = census["ports"].split(',').map(str::to_owned).collect();
    let ours: std::collections::BTreeSet<String> = ports
        .iter()
        .map(|p| {
            let name: String = p["name"].as_str().unwrap().chars().map(|c| if c == ' ' || c == ',' { '_' } else { c }).collect();
            format!("{}={}={name}", p["id"].as_str().unwrap(), p["connected"].as_str().unwrap())
        })
        .collect();
    assert_eq!(ours, theirs, "ports, their connected processes and names");

    // A value the VM reported before and after the snapshot: equal when it did not change,
    // else between the two.
    let same = |key: &str, got: &serde_json::Value| {
        let (a, b) = (&vm[key], &after[key]);
        if a == "undefined" {
            assert!(got.is_null(), "{key}: {got} but the VM says undefined");
            return;
        }
        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
        let g = num(got);
        assert!(a.min(b) <= g && g <= a.max(b), "{key}: {g}, the VM said {a} then {b}");
    };
    let mut compared = Vec::new();
    for (key, driver) in
        [("client", "tcp_inet"), ("server", "tcp_inet"), ("listener", "tcp_inet"), ("udp", "udp_inet"), ("cat", "spawn"), ("sleep", "spawn")]
    {
        let p = port(&vm[key]);
        let k = |item: &str| format!("{key}_{item}");
        assert_eq!(p["name"], vm[&k("name")].as_str(), "name of {key}");
        assert_eq!(p["driver"], driver, "driver of {key}");
        assert_eq!(p["connected"], vm[&k("connected")].as_str(), "connected of {key}");
        assert_eq!(vm[&k("connected")], after[&k("connected")]);
        same(&k("queue_size"), &p["queue_bytes"]);
        same(&k("input"), &p["bytes_in"]);
        same(&k("output"), &p["bytes_out"]);
        same(&k("os_pid"), &p["os_pid"]);
        compared.push(format!("{key} {} queue {} in {} out {}", p["id"], p["queue_bytes"], p["bytes_in"], p["bytes_out"]));
    }
    assert_eq!(vm["listener_connected"], vm["listener_owner"]);
    assert_eq!(port(&vm["cat"])["connected"], vm["cat_owner"].as_str());
    assert_eq!((num(&port(&vm["cat"])["bytes_in"]), num(&port(&vm["cat"])["bytes_out"])), (12, 12), "cat echoed one line");

    // The stuck sender: its port over the high watermark (inet_drv marks it busy there), the
    // sender held in its send, the queue exactly what port_info and getstat say.
    let client = port(&vm["client"]);
    let queue = num(&client["queue_bytes"]);
    let high: u64 = vm["high_watermark"].parse().unwrap();
    assert_eq!(vm["client_queue_size"], after["client_queue_size"], "the sender is stopped: its queue does not move");
    assert_eq!(queue, vm["send_pend"].parse::<u64>().unwrap(), "queue as inet:getstat(send_pend) says");
    assert!(queue >= high, "queue {queue} under the high watermark {high}");
    assert_eq!(client["busy"], true, "the sender's port is busy");
    for key in ["server", "listener", "udp", "cat", "sleep"] {
        assert_eq!(port(&vm[key])["busy"], false, "{key} is not busy");
    }

    // The sockets as the kernel sees them.
    let cs = &client["socket"];
    assert_eq!(cs["local"], vm["client_local"].as_str(), "{cs}");
    assert_eq!(cs["peer"], vm["client_peer"].as_str(), "{cs}");
    assert_eq!(cs["state"], "ESTABLISHED");
    let ss = &port(&vm["server"])["socket"];
    assert_eq!(ss["local"], vm["client_peer"].as_str(), "{ss}");
    assert_eq!(ss["peer"], vm["client_local"].as_str(), "{ss}");
    let ls = &port(&vm["listener"])["socket"];
    assert_eq!((ls["local"].as_str(), ls["peer"].as_str(), ls["state"].as_str()), (vm["listen_address"].as_str().into(), None, Some("LISTEN")));
    let us = &port(&vm["udp"])["socket"];
    assert_eq!(us["protocol"], "udp", "{us}");
    assert!(us["peer"].is_null(), "{us}");
    let in_kernel = num(&cs["send_queue"]) + num(&ss["recv_queue"]);
    // The data the sender handed to its port, less what the port still queues, is in the
    // kernel. (port_info's output, `bytes_out`, also counts the header prim_inet puts before
    // each send's data on OTP 26+: 28 bytes, a monitor reference, which the driver strips.)
    let data_sent: u64 = vm["data_sent"].parse().unwrap();
    assert!(num(&client["bytes_out"]) >= data_sent, "bytes out {} < data sent {data_sent}", client["bytes_out"]);
    let passed_on = data_sent - queue;
    assert!(num(&ss["recv_queue"]) > 0, "the receiver never reads: {ss}");
    assert_eq!(in_kernel, passed_on, "sender's send queue {} + receiver's receive queue {} = data sent {data_sent} - queued {queue}", cs["send_queue"], ss["recv_queue"]);
    eprintln!(
        "ports: {} ports ({}), {} slots; {}; client send_queue {} + server recv_queue {} = {passed_on}",
        ports.len(),
        ports.iter().map(|p| format!("{} {}", p["driver"].as_str().unwrap(), p["name"].as_str().unwrap())).collect::<Vec<_>>().join(", "),
        table["slots"],
        compared.join("; "),
        cs["send_queue"],
        ss["recv_queue"]
    );

    // The text table lists them after the processes.
    let o = probe::run(&["snapshot", "--pid", &beam.os_pid.to_string()]);
    assert!(o.status.success(), "snapshot failed: {}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text.lines().find(|l| l.starts_with(&format!("{} ", vm["client"]))).unwrap_or_else(|| panic!("no line for the client port: {text}"));
    assert!(line.contains("tcp_inet") && line.contains("busy") && line.contains(vm["client_peer"].as_str()), "{line}");

    // top's fifth view: the stuck socket first (the fullest queue), busy, with its peer.
    let tmux = Tmux::top(beam.os_pid, "", 4);
    let screen = tmux.wait_for(|s| s.contains("KERNEL Q") && s.contains("tcp_inet"));
    let first = screen.lines().find(|l| l.starts_with("#Port<")).unwrap_or_else(|| panic!("{screen}"));
    assert!(first.starts_with(vm["client"].as_str()) && first.contains("busy") && first.contains(vm["client_peer"].as_str()), "{first}");
    assert!(tmux.quit(), "q quits");
}
