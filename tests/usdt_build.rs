//! The systemtap (USDT) OTP 25 beam.smp that `cargo xtask otp-usdt` builds from Debian's own
//! source (cached at .cache/otp25-usdt/beam.smp): it carries the `erlang` USDT probes scope-probe
//! needs (`.note.stapsdt`, each with its argument format and a semaphore), and a VM running it
//! says `erlang:system_info(dynamic_trace)` is `systemtap`.
//!
//! `cargo xtask test` provisions that build first (`cargo xtask otp-usdt`, cached). Alone:
//! `cargo xtask otp-usdt && cargo test -p scope-probe-tests --test usdt_build`.
//!
//! With it, scope-probe's USDT sources are checked against the VM's own trace and against its
//! uprobe sources on the same run: two scope-probe instances, `--probe-source usdt` and
//! `--probe-source uprobe`, attached to one VM during one workload.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::read::elf::{ElfFile64, SectionHeader};
use object::Endianness;
use std::time::Duration;

use scope_probe_tests::{wait_stable, workspace_root};

/// The probes issue 5 attaches to (provider `erlang`; `__` as in the source, `_` in the note).
const NEEDED: &[&str] = &[
    "message__send",
    "message__queued",
    "gc_minor__start",
    "gc_minor__end",
    "gc_major__start",
    "gc_major__end",
    "process__spawn",
    "process__exit",
    "process__unscheduled",
    "process__scheduled",
];

/// `NT_STAPSDT`: the note type of systemtap's `sdt.h` probes (owner "stapsdt").
const NT_STAPSDT: object::elf::NoteType = object::elf::NoteType(3);

#[derive(Debug)]
struct Probe {
    pc: u64,
    semaphore: u64,
    args: String,
}

fn usdt_beam() -> PathBuf {
    let path = workspace_root().join(".cache/otp25-usdt/beam.smp");
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask otp-usdt` (builds a systemtap beam.smp from Debian's OTP 25 source)",
        path.display()
    );
    path
}

/// The `erlang` provider's probes in `.note.stapsdt`, by name (`__` spelled as in the source).
/// A probe compiled in at several places (inlined) has several notes: the first is kept.
fn stapsdt_probes(path: &Path) -> BTreeMap<String, Vec<Probe>> {
    let data = std::fs::read(path).unwrap();
    let file = ElfFile64::<Endianness>::parse(&*data).unwrap();
    let endian = file.endian();
    let sections = file.elf_section_table();
    let section = sections
        .iter()
        .find(|s| sections.section_name(endian, s).is_ok_and(|n| n == b".note.stapsdt"))
        .expect("a .note.stapsdt section");
    let mut notes = section.notes(endian, &*data).unwrap().expect("a SHT_NOTE section");
    let mut probes: BTreeMap<String, Vec<Probe>> = BTreeMap::new();
    while let Some(note) = notes.next().unwrap() {
        if note.name() != b"stapsdt" || note.n_type(endian) != NT_STAPSDT {
            continue;
        }
        // desc: pc, base (.stapsdt.base), semaphore (0: none), then provider\0 name\0 args\0.
        let desc = note.desc();
        let word = |i: usize| u64::from_le_bytes(desc[i * 8..i * 8 + 8].try_into().unwrap());
        let mut strings = desc[24..].split(|&b| b == 0).map(|s| String::from_utf8_lossy(s).into_owned());
        let (provider, name, args) = (strings.next().unwrap(), strings.next().unwrap(), strings.next().unwrap_or_default());
        if provider == "erlang" {
            probes.entry(source_name(&name)).or_default().push(Probe { pc: word(0), semaphore: word(2), args });
        }
    }
    probes
}

/// The note spells `message__send` as `message__send` (sdt.h keeps the name as written); this
/// is the identity unless a toolchain folds `__` to `_`, which then maps back.
fn source_name(note_name: &str) -> String {
    if note_name.contains("__") {
        return note_name.to_owned();
    }
    NEEDED
        .iter()
        .find(|n| n.replace("__", "_") == note_name)
        .map_or_else(|| note_name.to_owned(), |n| (*n).to_owned())
}

#[test]
fn usdt_build_has_the_needed_stapsdt_probes() {
    let beam = usdt_beam();
    let probes = stapsdt_probes(&beam);
    assert!(probes.len() >= NEEDED.len(), "erlang probes: {:?}", probes.keys());
    let mut missing = vec![];
    for name in NEEDED {
        let Some(sites) = probes.get(*name) else {
            missing.push(*name);
            continue;
        };
        for site in sites {
            assert_ne!(site.pc, 0, "{name}: no location");
            // Every erlang probe is guarded by a semaphore (DTRACE_ENABLED): one per probe.
            assert_ne!(site.semaphore, 0, "{name}: no semaphore");
            assert_eq!(site.semaphore, sites[0].semaphore, "{name}: one semaphore for all its sites");
            assert!(!site.args.is_empty(), "{name}: no argument format");
        }
    }
    assert!(missing.is_empty(), "missing erlang probes {missing:?}; have {:?}", probes.keys());
    // Pids are strings: the first argument of message__send (the sender) is a pointer, 8 bytes.
    let send = &probes["message__send"][0].args;
    assert!(send.starts_with("8@"), "message__send args: {send}");
    assert!(beam_probes::dwarf::has_debug_info(&beam), "the USDT build keeps its DWARF too");
}

#[test]
fn vm_boots_from_the_usdt_build_with_dynamic_trace_systemtap() {
    let usdt = usdt_beam();
    let copy = scope_probe_tests::otp_copy::OtpCopy::with_beam(&usdt);
    let mut vm = copy.start();
    assert_eq!(vm.call("erlang:system_info(otp_release)")["value"], "\"25\"");
    assert_eq!(vm.call("erlang:system_info(dynamic_trace)")["value"], "systemtap");
    assert_eq!(vm.call("erlang:system_info(dynamic_trace_probes)")["value"], "true");
}

/// The systemtap build shifts `struct process` by 16 bytes after `seq_trace_token`: without its
/// DWARF the OTP 25 table would read the wrong fields, so scope-probe refuses it by name; with
/// DWARF it reads the offsets from there.
#[test]
fn stripped_usdt_build_is_refused_and_dwarf_build_is_read() {
    let usdt = usdt_beam();
    let with_dwarf = scope_probe_tests::otp_copy::OtpCopy::with_beam(&usdt);
    let mut vm = with_dwarf.start();
    let out = scope_probe_tests::probe::run(&["snapshot", "--pid", &vm.os_pid.to_string(), "--json", "--all"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["offsets"], "dwarf");
    let vm_count: u64 = vm.call("erlang:system_info(process_count)")["value"].parse().unwrap();
    assert!(json["process_count"].as_u64().unwrap().abs_diff(vm_count) <= 1, "{json}");

    let stripped = scope_probe_tests::otp_copy::OtpCopy::with_beam(&usdt);
    let status = Command::new("objcopy").arg("--strip-debug").arg(&stripped.beam_smp).status().unwrap();
    assert!(status.success());
    let vm = stripped.start();
    let out = scope_probe_tests::probe::run(&["snapshot", "--pid", &vm.os_pid.to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unsupported BEAM build") && stderr.contains("dynamic trace"), "{stderr}");
}

const DRAIN: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_millis(500);

/// The value of the semaphore of an `erlang` probe in the live VM (the kernel raises it by one
/// per attached USDT link, and lowers it when the link goes).
fn semaphore(os_pid: u32, probes: &BTreeMap<String, Vec<Probe>>, name: &str) -> u16 {
    let target = beam_probes::BeamTarget::open(os_pid).unwrap();
    let addr = probes[name][0].semaphore.wrapping_add(target.load_bias);
    let bytes = target.mem.read_vec(addr, 2, "semaphore").unwrap();
    u16::from_le_bytes([bytes[0], bytes[1]])
}

fn source_line<'a>(stderr: &'a [String], capability: &str) -> &'a str {
    let prefix = format!("scope-probe: source of {capability}: ");
    stderr.iter().find(|l| l.starts_with(&prefix)).map_or("", |l| &l[prefix.len()..])
}

/// On the systemtap build: sends, spawns/exits by parent and GCs counted through USDT equal the
/// VM's own trace, and equal what a uprobe-sourced scope-probe counts on the same VM and run.
/// Detaching leaves every semaphore at 0.
#[test]
fn usdt_and_uprobe_sources_agree_with_trace_and_each_other() {
    let usdt = usdt_beam();
    let notes = stapsdt_probes(&usdt);
    let copy = scope_probe_tests::otp_copy::OtpCopy::with_beam(&usdt);
    let mut vm = copy.start();
    for name in ["message__send", "gc_major__start", "process__exit", "process__spawn"] {
        assert_eq!(semaphore(vm.os_pid, &notes, name), 0, "{name} before attach");
    }
    let by_usdt = scope_probe_tests::Probe::attach(vm.os_pid, &["--mode", "trace", "--probe-source", "usdt", "--frequency", "0"]);
    let by_uprobe = scope_probe_tests::Probe::attach(vm.os_pid, &["--mode", "trace", "--probe-source", "uprobe", "--frequency", "0"]);
    let stderr = by_usdt.stderr();
    for cap in ["send", "gc", "spawn", "exit"] {
        assert!(source_line(&stderr, cap).starts_with("usdt"), "{cap}: {stderr:?}");
    }
    assert!(source_line(&stderr, "schedule").starts_with("uprobe (no USDT probe serves it"), "{stderr:?}");
    assert!(source_line(&by_uprobe.stderr(), "send").starts_with("uprobe"), "{:?}", by_uprobe.stderr());
    let m = by_usdt.metrics();
    assert_eq!(m.get("scope_probe_capability_source", &[("capability", "send"), ("source", "usdt")]), Some(1.0));
    assert!(by_usdt.metrics_text().contains("source=\"usdt+uprobe\""), "build_info");
    // The kernel counts the semaphore up once per attached site (message__send has 5); the
    // uprobe instance does not touch semaphores.
    for name in ["message__send", "gc_minor__start", "gc_major__end", "process__exit", "process__spawn"] {
        let sites = notes[name].len() as u16;
        assert_eq!(semaphore(vm.os_pid, &notes, name), sites, "{name} while attached");
    }

    // Sends: exactly N from A to B, in both, equal to the trace.
    const N: u64 = 100_000;
    let r = vm.call(&format!("scope_fixtures:sends({N})"));
    let (a, b) = (r["a"].clone(), r["b"].clone());
    assert_eq!(r["traced"].parse::<u64>().unwrap(), N, "the VM's own trace");
    for probe in [&by_usdt, &by_uprobe] {
        let pair = || {
            probe.metrics().get("beam_top_pair_messages_sent_total", &[("sender", a.as_str()), ("receiver", b.as_str())])
        };
        assert_eq!(wait_stable(DRAIN, SETTLE, pair), Some(N as f64), "A->B pair");
    }

    // Spawns and exits, by parent (with USDT the parent comes from the schedule hook).
    const K: usize = 500;
    let r = vm.call(&format!("scope_fixtures:spawns({K})"));
    let spawner = r["spawner"].clone();
    assert_eq!((r["traced_spawns"].parse::<usize>().unwrap(), r["traced_exits"].parse::<usize>().unwrap()), (K, K));
    let children = |probe: &scope_probe_tests::Probe| {
        let mut kids: Vec<(String, bool)> = probe
            .processes()
            .into_iter()
            .filter(|p| p["parent"] == spawner.as_str())
            .map(|p| (p["pid"].as_str().unwrap_or_default().to_owned(), p["exited"] == true))
            .collect();
        kids.sort();
        kids
    };
    let kids_usdt = wait_stable(DRAIN, SETTLE, || children(&by_usdt));
    let kids_uprobe = wait_stable(DRAIN, SETTLE, || children(&by_uprobe));
    assert_eq!(kids_usdt.len(), K, "children seen through USDT");
    assert!(kids_usdt.iter().all(|(_, exited)| *exited), "every child's exit seen through USDT");
    assert_eq!(kids_usdt, kids_uprobe, "the same children, pid by pid");

    // Forced GCs of an idle process: full sweeps, so one major start each in the trace, one
    // collector invocation each for the uprobes.
    const M: u64 = 300;
    let r = vm.call(&format!("scope_fixtures:forced_gcs({M})"));
    let pid = r["pid"].clone();
    assert_eq!(r["traced"].parse::<u64>().unwrap(), M);
    for probe in [&by_usdt, &by_uprobe] {
        let gcs = wait_stable(DRAIN, SETTLE, || probe.process(&pid).map(|p| (p["gcs"].as_u64(), p["gc_ns"].as_u64())));
        let (count, ns) = gcs.expect("the collected process is known");
        assert_eq!(count, Some(M), "GCs of {pid}");
        assert!(ns.unwrap_or(0) > 0);
    }

    let m = by_usdt.metrics();
    for reason in ["pid_string", "ring_buffer_full", "read_fault"] {
        assert_eq!(m.get("scope_probe_events_lost_total", &[("reason", reason)]), Some(0.0), "{reason}");
    }
    let (status, stderr) = by_usdt.stop();
    assert!(status.success(), "{stderr:?}");
    let (status, stderr) = by_uprobe.stop();
    assert!(status.success(), "{stderr:?}");
    for name in ["message__send", "gc_minor__start", "gc_minor__end", "gc_major__start", "gc_major__end", "process__exit", "process__spawn"] {
        assert_eq!(semaphore(vm.os_pid, &notes, name), 0, "{name} after detach");
    }
    // Killed with SIGKILL (nothing of scope-probe's runs): the kernel lowers the semaphores
    // as the process's links go.
    let killed = scope_probe_tests::Probe::attach(vm.os_pid, &["--mode", "trace", "--probe-source", "usdt", "--frequency", "0"]);
    assert_eq!(semaphore(vm.os_pid, &notes, "message__send"), notes["message__send"].len() as u16, "attached again");
    let (status, _) = killed.finish(scope_probe_tests::probe::Stop::Signal(libc::SIGKILL));
    assert!(!status.success());
    for name in ["message__send", "gc_minor__start", "gc_minor__end", "gc_major__start", "gc_major__end", "process__exit", "process__spawn"] {
        assert_eq!(semaphore(vm.os_pid, &notes, name), 0, "{name} after SIGKILL");
    }
    assert_eq!(vm.call("erlang:is_process_alive(self())")["value"], "true", "the VM is unharmed");
}

/// `auto` takes USDT for sends, GCs and exits on this build, keeps uprobes for spawns (the
/// parent) and schedules, and says so.
#[test]
fn auto_picks_usdt_where_nothing_is_lost() {
    let usdt = usdt_beam();
    let copy = scope_probe_tests::otp_copy::OtpCopy::with_beam(&usdt);
    let vm = copy.start();
    let probe = scope_probe_tests::Probe::attach(vm.os_pid, &["--mode", "trace", "--frequency", "0"]);
    let stderr = probe.stderr();
    for cap in ["send", "gc", "exit"] {
        assert!(source_line(&stderr, cap).starts_with("usdt"), "{cap}: {stderr:?}");
    }
    assert!(source_line(&stderr, "spawn").starts_with("uprobe (auto keeps the uprobe"), "{stderr:?}");
    let m = probe.metrics();
    assert_eq!(
        m.get("scope_probe_capability_source", &[("capability", "spawn"), ("source", "uprobe"), ("reason", "auto_prefers_uprobe")]),
        Some(1.0)
    );
    let (status, _) = probe.stop();
    assert!(status.success());
}
