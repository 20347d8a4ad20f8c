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

/// The build-ids in the tables are the packaged binaries' own: Debian 12's OTP 25 on this
/// machine, Debian 13's OTP 27 and forky's stripped OTP 29 in their chroots, each read from the
/// running VM's executable, select their table by build-id (not by falling back on the release
/// strings), and that table's release is the one the VM reports.
#[test]
fn packaged_binaries_are_known_by_their_real_build_ids() {
    use beam_probes::target::TableMatch;
    let host = scope_probe_tests::Beam::start_with(std::path::Path::new("/usr/bin/erl"), &[], &[]);
    let trixie = start_beam_in_chroot(&chroot_or_fail("trixie"), &[]);
    let forky = start_beam_in_chroot(&chroot_or_fail("forky"), &[]);
    for (mut beam, table) in [
        (host, beam_probes::builds::DEBIAN12_OTP25.id),
        (trixie, beam_probes::builds::DEBIAN13_OTP27.id),
        (forky, beam_probes::builds::DEBIAN_FORKY_OTP29.id),
    ] {
        let exe = std::path::PathBuf::from(format!("/proc/{}/exe", beam.os_pid));
        let build_id = beam_probes::elf::ElfInfo::open(&exe).unwrap().build_id.expect("a build-id");
        let target = beam_probes::BeamTarget::open(beam.os_pid).unwrap();
        assert_eq!(target.table.id, table, "build-id {build_id}");
        assert_eq!(target.table_matched_by, TableMatch::BuildId, "{table}: build-id {build_id} is not in its table");
        assert!(target.table.build_ids.contains(&build_id.as_str()));
        let otp = beam.call("erlang:system_info(otp_release)")["value"].trim_matches('"').to_owned();
        let erts = beam.call("erlang:system_info(version)")["value"].trim_matches('"').to_owned();
        assert_eq!((target.table.otp_release, target.table.erts_versions.contains(&erts.as_str())), (otp.as_str(), true));
    }
}
