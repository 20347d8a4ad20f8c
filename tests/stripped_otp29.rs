//! Debian forky's OTP 29 (ERTS 17.1): a stripped beam.smp that exports only the NIF and driver
//! API (330 symbols). The VM runs in the forky chroot (`cargo xtask chroot forky`), scope-probe
//! outside, finding its files through /proc/PID/root.
//!
//! - Without debug info: everything that needs the VM's internal symbols is refused with one
//!   line saying what to install; CPU profiling still works from the VM's perf map.
//! - With the debug file installed in the VM's root (as `apt install erlang-base-dbgsym`
//!   would), or served by a real debuginfod: attach, snapshot and counts work (the ground-truth
//!   suites run against this build in the test matrix, see `cargo xtask test`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use beam_probes::elf::ElfInfo;
use scope_probe_tests::chroot::{provisioned, start_beam_in_chroot};
use scope_probe_tests::{Beam, probe};

fn forky() -> PathBuf {
    provisioned("forky").unwrap_or_else(|e| panic!("the forky chroot is missing: {e}"))
}

fn scope_probe(args: &[&str]) -> Output {
    let mut cmd = Command::new(probe::binary());
    cmd.args(args).env_remove("DEBUGINFOD_URLS");
    cmd.output().expect("running scope-probe")
}

/// A refusal: exit code 1, one line, no panic. Returns the line.
fn refused(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_owned();
    assert_eq!(out.status.code(), Some(1), "expected a refusal: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

fn start(root: &Path, args: &[&str]) -> (Beam, String) {
    let beam = start_beam_in_chroot(root, args);
    let exe = std::fs::read_link(format!("/proc/{}/exe", beam.os_pid)).expect("the VM's executable");
    let elf = ElfInfo::open(&exe).expect("reading beam.smp");
    assert!(elf.symbol("erts_send_message").is_none(), "forky's beam.smp exports its internals now: update this test");
    (beam, elf.build_id.expect("a build-id"))
}

#[test]
fn without_debug_info_only_profiling_works() {
    let root = forky();
    let (mut beam, build_id) = start(&root, &["+JPperf", "map"]);
    let otp = beam.call("erlang:system_info(otp_release)")["value"].trim_matches('"').to_owned();
    assert_eq!(otp, "29", "forky ships OTP 29");
    let pid = beam.os_pid.to_string();
    let listen = format!("127.0.0.1:{}", probe::free_port());

    let monitor = refused(&scope_probe(&["--pid", &pid, "--listen", &listen, "--duration", "5s"]));
    let snapshot = refused(&scope_probe(&["snapshot", "--pid", &pid]));
    for msg in [&monitor, &snapshot] {
        // Names the build (release from the install layout, the symbols being absent)...
        assert!(msg.contains("OTP 29") && msg.contains("ERTS 17.1") && msg.contains(&build_id), "{msg}");
        // ...what is missing and every way to provide it.
        assert!(msg.contains("is stripped") && msg.contains("erts_proc"), "{msg}");
        let debug_path = format!("/usr/lib/debug/.build-id/{}/{}.debug", &build_id[..2], &build_id[2..]);
        assert!(msg.contains(&debug_path) && msg.contains("erlang-base-dbgsym"), "{msg}");
        assert!(msg.contains("DEBUGINFOD_URLS") && msg.contains("--debug-file"), "{msg}");
        assert!(msg.contains("scope-probe profile"), "says what still works: {msg}");
    }
    assert!(monitor.contains("erts_send_message"), "{monitor}");

    // Profiling needs no symbol of beam.smp: JIT names come from the perf map.
    let burner = beam.call("scope_burn:start(scope_burner)")["pid"].clone();
    assert!(burner.starts_with("<0."), "{burner}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cpu.folded");
    let o = scope_probe(&["profile", "--pid", &pid, "--duration", "4s", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "profile failed: {}", String::from_utf8_lossy(&o.stderr));
    let stacks: HashMap<String, u64> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            let (s, n) = l.rsplit_once(' ').unwrap();
            (s.to_owned(), n.parse().unwrap())
        })
        .collect();
    let burning: u64 = stacks.iter().filter(|(s, _)| s.contains("scope_burn:")).map(|(_, n)| n).sum();
    let chain: u64 = stacks
        .iter()
        .filter(|(s, _)| s.ends_with("scope_burn:outer/1;scope_burn:middle/1;scope_burn:burn/2"))
        .map(|(_, n)| n)
        .sum();
    // One busy process on two cores: about half of all samples.
    assert!(burning >= 100, "samples in scope_burn: {burning} of {stacks:?}");
    assert!(chain as f64 >= 0.9 * burning as f64, "burn <- middle <- outer in {chain} of {burning}: {stacks:?}");
}

/// Without a perf map either (no `+JPperf`): the GDB JIT interface's descriptor, a local symbol
/// here, is found by its layout in beam.smp's data, and leaf frames are named from it.
#[test]
fn without_debug_info_or_perf_map_the_jit_interface_is_found_by_layout() {
    let root = forky();
    let (mut beam, _) = start(&root, &[]);
    beam.call("scope_burn:start(scope_burner)");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cpu.folded");
    let pid = beam.os_pid.to_string();
    let o = scope_probe(&["profile", "--pid", &pid, "--duration", "4s", "-o", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "profile failed: {stderr}");
    assert!(stderr.contains("GDB JIT interface"), "{stderr}");
    let mut burning = 0u64;
    let mut leaf = 0u64;
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let (stack, n) = line.rsplit_once(' ').unwrap();
        let n: u64 = n.parse().unwrap();
        if stack.contains("scope_burn:") {
            burning += n;
        }
        if stack.ends_with("scope_burn:burn/2") {
            leaf += n;
        }
    }
    assert!(burning >= 100, "samples named in scope_burn: {burning}");
    assert!(leaf as f64 >= 0.9 * burning as f64, "leaf burn/2 in {leaf} of {burning}");
}

/// The same build's source, stripped like Debian strips it (`cargo xtask otp-debug --suite
/// forky`; Debian's own debug file cannot be fetched here and ours carries another build-id,
/// see beam_probes/notes), with its debug file installed where `erlang-base-dbgsym` puts it:
/// symbols, release and offsets come from that file, and every uprobe steps over the
/// `endbr64` these builds open functions with (a uprobe on it costs a single-step).
#[test]
fn installed_debug_file_gives_symbols_offsets_and_hooks() {
    let root = forky();
    let stripped = scope_probe_tests::otp_debug_stripped("forky");
    let debug_dir = scope_probe_tests::otp_debug_dir("forky");
    assert!(stripped.exists(), "{} is missing: run `cargo xtask otp-debug --suite forky`", stripped.display());
    std::fs::create_dir_all(root.join("usr/lib/debug")).unwrap();
    let beam = scope_probe_tests::chroot::start_beam_in_chroot_with(
        &root,
        &[],
        &[(&stripped, scope_probe_tests::chroot::FORKY_BEAM_SMP), (&debug_dir, "/usr/lib/debug")],
    );
    let target = beam_probes::BeamTarget::open(beam.os_pid).expect("scope-probe reads the VM");
    assert_eq!((target.otp_release.as_str(), target.erts_version.as_str()), ("29", "17.1"));
    assert_eq!(target.table.id, "otp29-x86_64-jit");
    assert_eq!(target.debug_origin, Some(beam_probes::target::DebugOrigin::Installed));
    assert_eq!(target.offsets, beam_probes::target::OffsetSource::Dwarf);
    let hooks = target.resolve_hooks().expect("every hook resolves through the debug file");
    let code = std::fs::read(&stripped).unwrap();
    for hook in &hooks {
        let entry = target.elf.file_offset(target.elf.symbol(&hook.symbol).unwrap().address).unwrap();
        assert_eq!(code[entry as usize..entry as usize + 4], [0xf3, 0x0f, 0x1e, 0xfa], "{} opens with endbr64", hook.symbol);
        assert_eq!(hook.file_offset, entry + 4, "{}: the probe goes after endbr64", hook.symbol);
    }

    // Debian 12's OTP 25 has no endbr64: probes stay on the entry.
    let host = Beam::start_with(Path::new("/usr/bin/erl"), &[], &[]);
    let target = beam_probes::BeamTarget::open(host.os_pid).unwrap();
    for hook in target.resolve_hooks().unwrap() {
        let entry = target.elf.file_offset(target.elf.symbol(&hook.symbol).unwrap().address).unwrap();
        assert_eq!(hook.file_offset, entry, "{}", hook.symbol);
    }
}
