//! Trixie's OTP 27 in its Debian chroot (`cargo xtask chroot trixie`, cached under
//! .cache/chroots/; `cargo xtask test` provisions it): the VM runs inside the chroot,
//! scope-probe outside, and reads it with its table (the ground-truth suites run against it
//! too, see `cargo xtask test`). Forky's stripped OTP 29: tests/stripped_otp29.rs.

use scope_probe_tests::chroot::{provisioned, start_beam_in_chroot};
use scope_probe_tests::probe;

fn chroot_or_fail(suite: &str) -> std::path::PathBuf {
    provisioned(suite).unwrap_or_else(|e| panic!("the {suite} chroot is missing: {e}"))
}

#[test]
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
