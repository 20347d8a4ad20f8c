//! Newer OTP builds in Debian chroots (`cargo xtask chroot trixie|forky`, cached under
//! .cache/chroots/): the VM runs inside the chroot, scope-probe outside. Trixie's OTP 27 has a
//! table: it is attached to and read (the ground-truth suites run against it too, see
//! `cargo xtask test`). Forky's stripped OTP 29 is refused with one clear line saying that the
//! symbols are missing.
//!
//! Ignored by default (needs the chroots); `cargo xtask test` provisions them and runs these
//! with `--ignored`. By hand: `cargo xtask chroot trixie && cargo xtask chroot forky &&
//! cargo xtask test --test chroot_targets -- --ignored` (as root).

use beam_probes::elf::ElfInfo;
use scope_probe_tests::chroot::{provisioned, start_beam_in_chroot};
use scope_probe_tests::probe;

fn chroot_or_fail(suite: &str) -> std::path::PathBuf {
    provisioned(suite).unwrap_or_else(|e| panic!("the {suite} chroot is missing: {e}"))
}

/// scope-probe against `pid`: must fail with exactly one line, exit code 1, no panic; returns
/// that line.
fn refusal(pid: u32) -> String {
    let port = probe::free_port().to_string();
    let out = probe::run(&["--pid", &pid.to_string(), "--listen", &format!("127.0.0.1:{port}"), "--duration", "5s"]);
    let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_owned();
    assert!(!out.status.success(), "expected a refusal, got {:?}: {stderr}", out.status);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
#[ignore = "needs cargo xtask chroot trixie|forky; run with --ignored"]
fn trixie_otp27_is_read_with_its_table() {
    let root = chroot_or_fail("trixie");
    let mut beam = start_beam_in_chroot(&root, &[]);
    let otp = beam.call("erlang:system_info(otp_release)")["value"].trim_matches('"').to_owned();
    assert_eq!(otp, "27", "trixie ships OTP 27");
    let code_server = beam.call("pid_to_list(whereis(code_server))")["value"].trim_matches('"').to_owned();
    let count: usize = beam.call("erlang:system_info(process_count)")["value"].parse().unwrap();

    let out = probe::run(&["snapshot", "--pid", &beam.os_pid.to_string(), "--json", "--all"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let procs = json["processes"].as_array().unwrap();
    // Pids as Erlang prints them (OTP 27's pid terms carry the table index: decoded with the
    // VM's own masks), names from the atom table.
    assert!(
        procs.iter().any(|p| p["name"] == "code_server" && p["pid"] == code_server.as_str()),
        "code_server as {code_server}: {procs:?}"
    );
    assert!(procs.iter().any(|p| p["pid"] == "<0.0.0>" && p["name"] == "init"), "init is <0.0.0>");
    // The controller's own queries spawn nothing lasting: the count is the VM's, give or take
    // the query processes.
    assert!(procs.len().abs_diff(count) <= 2, "{} processes read, VM says {count}", procs.len());
}

#[test]
#[ignore = "needs cargo xtask chroot trixie|forky; run with --ignored"]
fn forky_stripped_otp29_is_refused_for_missing_symbols() {
    let root = chroot_or_fail("forky");
    let mut beam = start_beam_in_chroot(&root, &[]);
    let otp = beam.call("erlang:system_info(otp_release)")["value"].trim_matches('"').to_owned();
    assert_eq!(otp, "29", "forky ships OTP 29");
    // Stripped: only the NIF and driver API is exported (330 symbols in erts 17.1).
    let exe = std::fs::read_link(format!("/proc/{}/exe", beam.os_pid)).expect("the VM's executable");
    let elf = ElfInfo::open(&exe).expect("reading beam.smp");
    assert!(elf.symbol("erts_send_message").is_none(), "forky's beam.smp exports its internals now: update this test");
    let build_id = elf.build_id.expect("beam.smp has a build-id");
    let msg = refusal(beam.os_pid);
    assert!(msg.contains("unsupported BEAM build"), "{msg}");
    assert!(msg.contains("ERTS 17.1"), "names the ERTS version from the install path: {msg}");
    assert!(msg.contains(&format!("build-id {build_id}")), "names the build: {msg}");
    assert!(
        msg.contains("etp_otp_release") && (msg.contains("not exported") || msg.contains("not found")),
        "says which symbols are missing: {msg}"
    );
}
