//! `scope-probe report` on a recording of a real VM running the demo workload
//! (tests/fixtures/scope_demo.erl, started by scope_report.erl once the recorder is attached,
//! with the VM's own tracer counting sends). The page is opened in headless Chromium: no
//! console message, no network request, a screenshot kept (target/test-artefacts/report.png,
//! with the page beside it), and what the page's script measured it drew (`#sp-drawn`) agrees
//! with the VM: the busiest pair, the spawn tree under the starter, the longest mailbox, the
//! largest process. The checks themselves are shown to catch a page that throws and loads
//! from the network.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use scope_probe_tests::probe::{self, Running, Stop};
use scope_probe_tests::{Beam, workspace_root};
use serde_json::Value;

const CHROMIUM: &str = "/usr/bin/chromium";

/// What Chromium made of a page.
struct Rendered {
    /// The DOM after the page's scripts ran.
    dom: String,
    /// Console messages and uncaught errors (Chromium logs them all as `CONSOLE` lines).
    console: Vec<String>,
    /// URLs the page asked the network for (the browser's own requests left out).
    requests: Vec<String>,
}

/// Opens `page` in headless Chromium with its logging on stderr and a net log, takes a
/// screenshot to `screenshot` and dumps the DOM.
fn render(page: &Path, screenshot: &Path, work: &Path) -> Rendered {
    render_url(&format!("file://{}", page.display()), &[], screenshot, work)
}

/// The same for a page at `url`, with more Chromium arguments.
fn render_url(url: &str, extra: &[&str], screenshot: &Path, work: &Path) -> Rendered {
    let page = url;
    let net_log = work.join(format!("{}.netlog.json", screenshot.file_stem().unwrap().to_string_lossy()));
    let profile = work.join("chromium-profile");
    let mut child = Command::new(CHROMIUM)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        .args(["--enable-logging=stderr", "--v=0", "--window-size=1400,4000", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--log-net-log={}", net_log.display()))
        .arg(format!("--screenshot={}", screenshot.display()))
        .args(extra)
        .arg("--dump-dom")
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {CHROMIUM} (Debian's chromium package): {e}"));
    // Read both pipes to the end while waiting, with a deadline: a browser that hangs must
    // not hang the test.
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).ok();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).ok();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish with {page} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (dom, stderr) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "chromium failed on {page} ({status}): {stderr}");
    let console = stderr.lines().filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught")).map(str::to_owned).collect();
    Rendered { dom, console, requests: page_requests(&net_log) }
}

/// The requests a net log shows the page made: each request job names its initiator; the
/// browser's own (component updates and the like, which still happen with
/// --disable-background-networking) have none ("not an origin"), a page's has its origin
/// ("null" for a file:// page). One event per line.
fn page_requests(net_log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(net_log).unwrap_or_else(|e| panic!("{}: {e}", net_log.display()));
    assert!(text.contains("\"constants\""), "not a net log: {}", net_log.display());
    let mut urls = Vec::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line.trim().trim_end_matches(',')) else { continue };
        let params = &event["params"];
        if let (Some(url), Some(initiator)) = (params["url"].as_str(), params["initiator"].as_str())
            && initiator != "not an origin"
        {
            urls.push(format!("{url} (initiator {initiator})"));
        }
    }
    urls
}

/// References in the HTML to anything outside it: a src/href/srcset/url()/@import that is
/// not a fragment (#id) or data:, and elements that load by themselves.
fn external_references(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let mut found = Vec::new();
    for needle in ["src=", "href=", "srcset=", "url(", "@import"] {
        for (i, _) in lower.match_indices(needle) {
            let rest = lower[i + needle.len()..].trim_start_matches([' ', '"', '\'']);
            if !(rest.starts_with('#') || rest.starts_with("data:")) {
                found.push(html[i..(i + 80).min(html.len())].to_owned());
            }
        }
    }
    for tag in ["<link", "<iframe", "<object", "<embed", "<base"] {
        found.extend(lower.match_indices(tag).map(|(i, _)| html[i..(i + 80).min(html.len())].to_owned()));
    }
    found
}

/// What the page's script wrote into `#sp-drawn` once the graphs were drawn.
fn drawn(dom: &str) -> Value {
    let open = "<script type=\"application/json\" id=\"sp-drawn\">";
    let start = dom.find(open).unwrap_or_else(|| panic!("no #sp-drawn in the DOM: {}", &dom[..dom.len().min(2000)])) + open.len();
    let end = start + dom[start..].find("</script>").expect("#sp-drawn ends");
    serde_json::from_str(&dom[start..end]).unwrap_or_else(|e| panic!("#sp-drawn is not JSON ({e}): {}", &dom[start..end]))
}

fn artefacts() -> PathBuf {
    let dir = workspace_root().join("target/test-artefacts");
    std::fs::create_dir_all(&dir).expect("target/test-artefacts");
    dir
}

/// A PNG's width and height, from its header.
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(b.len() > 24 && &b[1..4] == b"PNG", "{} is not a PNG", path.display());
    (u32::from_be_bytes(b[16..20].try_into().unwrap()), u32::from_be_bytes(b[20..24].try_into().unwrap()))
}

/// The checks below catch what they are for: a page that throws, logs and loads from the
/// network fails each of them.
#[test]
fn the_checks_catch_a_broken_page() {
    let work = tempfile::tempdir().unwrap();
    let page = work.path().join("broken.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><head><link rel=\"stylesheet\" href=\"http://127.0.0.1:9/style.css\"></head><body>\
         <img src=\"https://127.0.0.1:9/a.png\"><script>console.error('logged');throw new Error('deliberate');</script></body></html>",
    )
    .unwrap();
    let r = render(&page, &work.path().join("broken.png"), work.path());
    assert!(r.console.iter().any(|l| l.contains("Uncaught Error: deliberate")), "the throw was not caught: {:?}", r.console);
    assert!(r.console.iter().any(|l| l.contains("logged")), "console.error was not caught: {:?}", r.console);
    assert!(
        r.requests.iter().any(|u| u.starts_with("http://127.0.0.1:9/style.css")),
        "the stylesheet request was missed: {:?}",
        r.requests
    );
    assert!(r.requests.iter().any(|u| u.starts_with("https://127.0.0.1:9/a.png")), "the image request was missed: {:?}", r.requests);
    let refs = external_references(&std::fs::read_to_string(&page).unwrap());
    assert_eq!(refs.len(), 3, "the static check missed a reference: {refs:?}");
}

#[test]
fn the_report_of_a_demo_recording_shows_what_the_vm_did() {
    let work = tempfile::tempdir().unwrap();
    let recording = work.path().join("run.scope");
    let page = work.path().join("report.html");

    // Record the demo in trace mode from its start, the VM's tracer counting its sends.
    let mut beam = Beam::start();
    let vm = beam.os_pid.to_string();
    let recorder = Running::start(
        &["record", "--pid", &vm, "--mode", "trace", "--snapshot-interval", "1s", "-o", recording.to_str().unwrap()],
        beam.os_pid,
        "recording to",
    );
    let started = beam.call("scope_report:start()");
    std::thread::sleep(Duration::from_secs(8));
    let truth = beam.call("scope_report:stop()");
    let (status, stderr) = recorder.finish(Stop::Signal(libc::SIGTERM));
    assert!(status.success(), "record failed: {stderr:?}");
    drop(beam);
    assert_eq!(truth["demo"], "9", "the demo's processes: {truth:?}");
    assert_eq!(truth["spawned_by_starter"], "9", "the VM says the starter spawned the demo's processes: {truth:?}");

    let o = probe::run(&["report", recording.to_str().unwrap(), "-o", page.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "report failed: {said}");
    assert!(said.contains(&format!("wrote {} (", page.display())) && said.contains(" KiB)"), "report said: {said}");
    let html = std::fs::read_to_string(&page).unwrap();
    std::fs::copy(&page, artefacts().join("report.html")).unwrap();

    // Self-contained: nothing to fetch, and the browser fetched nothing.
    let refs = external_references(&html);
    assert!(refs.is_empty(), "the report refers to outside resources: {refs:?}");
    let screenshot = artefacts().join("report.png");
    let _ = std::fs::remove_file(&screenshot);
    let r = render(&page, &screenshot, work.path());
    assert!(r.console.is_empty(), "console messages (errors) while rendering: {:#?}", r.console);
    assert!(r.requests.is_empty(), "the page made network requests: {:#?}", r.requests);
    assert_eq!(png_size(&screenshot), (1400, 4000), "screenshot {}", screenshot.display());
    let png_bytes = std::fs::metadata(&screenshot).unwrap().len();
    // A blank page compresses to about 10 KB; one with the graphs drawn to hundreds.
    assert!(png_bytes > 60_000, "the screenshot looks blank ({png_bytes} bytes): {}", screenshot.display());

    let d = drawn(&r.dom);
    assert_eq!(d["errors"], serde_json::json!([]), "errors on the page: {d:#}");
    let names = |v: &Value| v.as_str().unwrap_or("").to_owned();

    // The flame graph: drawn, fitted by its own script, a process of the demo among its roots.
    let flame = &d["flame"];
    assert!(flame["frames"].as_u64().unwrap_or(0) >= 20, "flame graph frames: {flame:#}");
    assert_eq!(flame["scripted"], true, "the flame graph's script did not run: {flame:#}");
    let roots: Vec<String> = flame["roots"].as_array().expect("flame roots").iter().map(names).collect();
    assert!(roots.iter().any(|r| r.contains("order_worker_")), "no worker among the flame graph's roots: {roots:?}");

    // The message flow: the demo's processes drawn, the heaviest edge the VM's busiest pair,
    // with the count the VM traced (the recording spans the tracing, a little longer).
    let flow = &d["flow"];
    let nodes: Vec<String> = flow["nodes"].as_array().expect("flow nodes").iter().map(|n| names(&n["who"])).collect();
    for name in ["order_intake", "order_router", "order_worker_1", "order_worker_4", "order_ledger", "order_auditor"] {
        assert!(nodes.iter().any(|n| n.ends_with(&format!("({name})"))), "{name} not drawn in the flow graph: {nodes:?}");
    }
    let edges = flow["edges"].as_array().expect("flow edges");
    assert!(edges.iter().all(|e| e["length"].as_u64().unwrap_or(0) > 0), "an edge without length: {flow:#}");
    let heaviest = edges.iter().max_by_key(|e| e["n"].as_u64().unwrap_or(0)).expect("an edge");
    let (from, to) = (names(&heaviest["from"]), names(&heaviest["to"]));
    assert!(
        from.ends_with(&format!("({})", truth["from"])) && to.ends_with(&format!("({})", truth["to"])),
        "heaviest edge {from} -> {to}, the VM's busiest pair {} -> {}",
        truth["from"],
        truth["to"]
    );
    let (n, traced): (u64, u64) = (heaviest["n"].as_u64().unwrap(), truth["sends"].parse().unwrap());
    assert!(n >= traced && n <= traced + traced / 10 + 100, "{from} -> {to}: {n} in the report, {traced} traced by the VM");
    let widest = edges.iter().map(|e| e["width"].as_f64().unwrap_or(0.0)).fold(0.0, f64::max);
    assert_eq!(heaviest["width"].as_f64(), Some(widest), "the heaviest edge is not the thickest: {flow:#}");

    // The spawn tree: the demo's processes under the starter, the spawner's tasks folded.
    let tree = d["tree"].as_array().expect("spawn tree");
    let starter = format!("{} (report_demo)", truth["starter"]);
    for name in ["order_ledger", "order_auditor", "order_worker_1", "order_worker_2", "order_router", "order_intake", "task_spawner"] {
        let node = tree.iter().find(|c| names(&c["who"]).ends_with(&format!("({name})")));
        let node = node.unwrap_or_else(|| panic!("{name} not in the spawn tree: {tree:#?}"));
        assert_eq!(names(&node["parent"]), starter, "{name}'s parent in the spawn tree");
        assert_eq!(node["shown"], true, "{name}'s cell is not drawn: {node}");
        assert!(names(&node["colour"]).starts_with("rgb("), "{name}'s cell is not coloured: {node}");
    }
    let folded = tree.iter().find(|c| names(&c["parent"]).ends_with("(task_spawner)") && !names(&c["more"]).is_empty());
    let folded = folded.unwrap_or_else(|| panic!("task_spawner's tasks are not folded into \"+k more\": {tree:#?}"));
    let more: u64 = names(&folded["more"]).trim_start_matches('+').split(' ').next().unwrap().replace(',', "").parse().unwrap();
    assert!(more > 500, "task_spawner spawns 500 tasks a second; folded: {folded}");
    assert_eq!(started["starter"], truth["starter"], "the starter");

    // Timelines: the longest mailbox and the largest process the VM reports, the VM's memory
    // and CPU with a point per /proc read.
    let charts = d["charts"].as_array().expect("charts");
    let chart = |id: &str| charts.iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no chart {id}: {charts:#?}"));
    let series = |id: &str| -> Vec<String> { chart(id)["series"].as_array().unwrap().iter().map(|s| names(&s["name"])).collect() };
    let demo_first = series("sp-chart-mailbox").into_iter().find(|s| s.contains("(order_") || s.contains("(task_spawner)"));
    assert_eq!(
        demo_first.as_deref().map(|s| s.ends_with(&format!("({})", truth["longest_mailbox"]))),
        Some(true),
        "the demo's longest mailbox in the VM is {}; the chart: {:?}",
        truth["longest_mailbox"],
        series("sp-chart-mailbox")
    );
    let memory = series("sp-chart-memory");
    assert!(
        memory.iter().any(|s| s.ends_with(&format!("({})", truth["largest_memory"]))),
        "the demo's largest process in the VM is {}; the chart: {memory:?}",
        truth["largest_memory"]
    );
    for id in ["sp-chart-mailbox", "sp-chart-memory", "sp-chart-rss", "sp-chart-cpu"] {
        for s in chart(id)["series"].as_array().unwrap() {
            let points = s["points"].as_u64().unwrap_or(0);
            assert!(points >= 1 && (points == 1 || s["length"].as_u64().unwrap_or(0) > 0), "{id}: {s} drew no line");
            if id == "sp-chart-rss" || id == "sp-chart-cpu" {
                assert!(points >= 5, "{id}: {s} has too few points for 8 s of /proc reads every second");
            }
        }
    }
}

/// The live dashboard at the probe's endpoint, in headless Chromium: every view shows the
/// fixture's names (a process with a long mailbox, an application's supervision tree, a server
/// under callers), no console message, no request outside the probe; a screenshot kept
/// (target/test-artefacts/dashboard.png). `curl` still gets the list of endpoints.
#[test]
fn the_dashboard_shows_the_live_views() {
    let work = tempfile::tempdir().unwrap();
    let mut beam = Beam::start();
    beam.call("scope_tree:start()");
    beam.call("scope_ets:start()");
    let ports = beam.call("scope_ports:start()");
    let client = ports["client"].replace('<', "&lt;").replace('>', "&gt;");
    beam.call("scope_record:parked(dash_box)");
    beam.call("scope_record:fill(dash_box, 3000)");
    beam.call("scope_calls:start(dash_server)");
    beam.call("scope_calls:run_async(dash_server, 2, 100000, 5)");
    // CPU for the flame graph (the server sleeps through its calls: a loaded machine's sampler
    // may catch none of its callers' few instructions).
    beam.call("scope_burn:start(dash_burner, 30, 70)");
    let probe = scope_probe_tests::Probe::attach(beam.os_pid, &["--mode", "trace", "--snapshot-interval", "1s"]);
    // A table read and some calls first.
    std::thread::sleep(Duration::from_secs(3));
    let text = probe.get("/");
    assert!(text.contains("/metrics") && text.contains("/api/table"), "{text}");
    let screenshot = artefacts().join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let url = format!("http://127.0.0.1:{}/", probe.port);
    // Virtual time lets the page's fetches and its first refreshes finish before the dump.
    let r = render_url(&url, &["--virtual-time-budget=6000"], &screenshot, work.path());
    std::fs::write(artefacts().join("dashboard.html"), &r.dom).unwrap();
    assert!(r.console.is_empty(), "console messages (errors) while rendering: {:#?}", r.console);
    let origin = format!("http://127.0.0.1:{}/", probe.port);
    let outside: Vec<&String> = r.requests.iter().filter(|u| !u.starts_with(&origin)).collect();
    assert!(outside.is_empty(), "requests outside the probe: {outside:#?}");
    for (section, what) in [("sp-processes", "dash_box"), ("sp-processes", "3000"), ("sp-tree", "scope_tree_sup"), ("sp-servers", "dash_server"),
        ("sp-ets", "scope_ets_set"), ("sp-ets", "scope_ets_owner"), ("sp-ets", ">1000<"), ("sp-ets", "ordered_set"),
        ("sp-ports", client.as_str()), ("sp-ports", "tcp_inet"), ("sp-ports", "busy"), ("sp-ports", ports["client_peer"].as_str()),
        ("sp-memory", ">processes_used<"), ("sp-memory", ">binary<"), ("sp-memory", ">100.0%<")] {
        let at = r.dom.find(&format!("id=\"{section}\"")).unwrap_or_else(|| panic!("no {section}: {}", r.dom));
        let body = &r.dom[at..];
        let body = &body[..body.find("</section>").unwrap()];
        assert!(body.contains(what), "{section} does not show {what}: {body}");
    }
    assert!(r.dom.contains("attached ·"), "the status line: {}", &r.dom[..r.dom.len().min(3000)]);
    // The last minute's flame graph: the VM's processes as root frames, the callers' work in
    // Erlang terms above them.
    let svg = probe.get("/flamegraph.svg");
    assert!(svg.contains("<svg") && svg.contains("the last minute"), "{}", &svg[..svg.len().min(2000)]);
    assert!(svg.contains("&lt;0.") && svg.contains("scope_burn:"), "no process frame or workload function in the flame graph");
    // The message flow: the server between its callers, drawn by the report's code.
    assert!(r.dom.contains(&format!("/flow.svg?os_pid={}", beam.os_pid)), "no flow graph on the page");
    let flow = probe.get(&format!("/flow.svg?os_pid={}", beam.os_pid));
    assert!(flow.starts_with("<svg") && flow.contains("sp-edge") && flow.contains("dash_server"), "{}", &flow[..flow.len().min(2000)]);
    let (status, stderr) = probe.stop();
    assert!(status.success(), "{stderr:?}");
}

/// The dashboard keeps working through a VM restart under `--all`: it shows the first VM's ETS
/// tables, then says that VM is detached once it stops, then shows the VM started again in its
/// place (same node name, new pid), with no console error at any step.
#[test]
fn the_dashboard_keeps_working_through_a_vm_restart() {
    let work = tempfile::tempdir().unwrap();
    let erl = Path::new("/usr/bin/erl");
    let probe = scope_probe_tests::Probe::attach_several(&[], &["--mode", "sample", "--snapshot-interval", "1s"]);
    let url = format!("http://127.0.0.1:{}/", probe.port);
    let attached = |os_pid: u32, value: f64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while probe.metrics().get("scope_probe_attached", &[("os_pid", &os_pid.to_string())]) != Some(value) {
            assert!(Instant::now() < deadline, "scope_probe_attached of {os_pid} never {value}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let render = |name: &str| {
        let r = render_url(&url, &["--virtual-time-budget=4000"], &artefacts().join(format!("{name}.png")), work.path());
        assert!(r.console.is_empty(), "console messages while rendering {name}: {:#?}", r.console);
        r.dom
    };
    let section = |dom: &str, id: &str| {
        let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no {id}"));
        dom[at..][..dom[at..].find("</section>").unwrap()].to_owned()
    };

    let mut first = Beam::start_with(erl, &["-sname", "scope_dash_restart"], &[]);
    attached(first.os_pid, 1.0);
    first.call("scope_ets:start()");
    std::thread::sleep(Duration::from_secs(2));
    let dom = render("dashboard-before-restart");
    assert!(dom.contains(&format!("pid {}", first.os_pid)), "the VM among the nodes");
    assert!(section(&dom, "sp-ets").contains("scope_ets_owner"), "{}", section(&dom, "sp-ets"));

    let old = first.os_pid;
    drop(first);
    attached(old, 0.0);
    let dom = render("dashboard-vm-stopped");
    let status = &dom[dom.find("id=\"sp-status\"").unwrap()..];
    let status = &status[..status.find("</span>").unwrap()];
    // Other VMs of the host may have stopped too (--all sees them all).
    assert!(status.contains("detached from") && status.contains("scope_dash_restart@"), "{status}");

    let mut again = Beam::start_with(erl, &["-sname", "scope_dash_restart"], &[]);
    attached(again.os_pid, 1.0);
    again.call("scope_ets:start()");
    std::thread::sleep(Duration::from_secs(2));
    let dom = render("dashboard-after-restart");
    assert!(dom.contains(&format!("pid {}", again.os_pid)), "the new VM among the nodes");
    assert!(section(&dom, "sp-ets").contains("scope_ets_owner"), "{}", section(&dom, "sp-ets"));
    let (status, stderr) = probe.stop();
    assert!(status.success(), "{stderr:?}");
}
