//! The systemtap (USDT) OTP 25 beam.smp that `cargo xtask otp-usdt` builds from Debian's own
//! source (cached at .cache/otp25-usdt/beam.smp): it carries the `erlang` USDT probes scope-probe
//! needs (`.note.stapsdt`, each with its argument format and a semaphore), and a VM running it
//! says `erlang:system_info(dynamic_trace)` is `systemtap`.
//!
//! Ignored by default: `cargo xtask test` does not provision that build yet. Run with
//! `cargo xtask otp-usdt && cargo test -p scope-probe-tests --test usdt_build -- --ignored`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::read::elf::{ElfFile64, SectionHeader};
use object::Endianness;
use scope_probe_tests::workspace_root;

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
#[ignore = "needs cargo xtask otp-usdt; run with --ignored"]
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
#[ignore = "needs cargo xtask otp-usdt; run with --ignored"]
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
#[ignore = "needs cargo xtask otp-usdt; run with --ignored"]
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
