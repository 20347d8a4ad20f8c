//! Bad input: one clear line on stderr, a non-zero exit, no panic, nothing left attached.

use std::process::Command;

use beam_probes::elf::ElfInfo;
use scope_probe_tests::{Beam, probe};

fn assert_clean_failure(out: &std::process::Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got {:?}: {stderr}", out.status);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(expected), "expected {expected:?} in {stderr:?}");
}

/// The VM's code is what its file holds: no uprobe breakpoint stayed behind.
fn nothing_left_in(beam: &Beam) {
    if let Err(left) = scope_probe_tests::held::Held::released_code(beam.os_pid) {
        panic!("{left}");
    }
}

/// A free port, and a duration so that a wrongly successful attach cannot hang the test.
fn listen_args() -> Vec<String> {
    vec!["--listen".into(), format!("127.0.0.1:{}", probe::free_port()), "--duration".into(), "5s".into()]
}

fn run_on(pid: u32) -> std::process::Output {
    let mut args = vec!["--pid".to_owned(), pid.to_string()];
    args.extend(listen_args());
    probe::run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn pid_that_does_not_exist() {
    // pid_max is at most 4194304: this one cannot exist.
    let out = run_on(4_194_399);
    assert_clean_failure(&out, "no process with pid 4194399");
}

#[test]
fn pid_that_is_not_a_beam() {
    let mut sleep = Command::new("sleep").arg("30").spawn().unwrap();
    // Until exec completes the child still carries this thread's name.
    for _ in 0..100 {
        if std::fs::read_to_string(format!("/proc/{}/comm", sleep.id())).is_ok_and(|c| c.trim() == "sleep") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = run_on(sleep.id());
    let _ = sleep.kill();
    let _ = sleep.wait();
    assert_clean_failure(&out, &format!("pid {} (sleep) is not a BEAM VM", sleep.id()));
}

#[test]
fn without_privileges() {
    let beam = Beam::start();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(probe::binary())
        .args(["--pid", &beam.os_pid.to_string()])
        .args(listen_args())
        .output()
        .expect("setpriv (util-linux)");
    assert_clean_failure(&out, "insufficient privileges");
    assert!(String::from_utf8_lossy(&out.stderr).contains("CAP_BPF"));
}

/// Not root, only CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE (as user nobody, given them by
/// setpriv): every hook, the sampler and the table reads work, and the counts are exact.
#[test]
fn runs_as_nobody_with_only_the_three_capabilities() {
    let mut beam = Beam::start();
    let caps = "+bpf,+perfmon,+sys_ptrace";
    let wrapper = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", &format!("--inh-caps={caps}"), &format!("--ambient-caps={caps}")];
    let probe = scope_probe_tests::Probe::attach_under(&wrapper, beam.os_pid, &["--mode", "trace"]);
    assert_eq!(capabilities(probe.os_pid(), "CapEff"), 0xc0_0008_0000, "CAP_SYS_PTRACE, CAP_PERFMON and CAP_BPF only");
    let r = beam.call("scope_fixtures:sends(3000)");
    let labels = [("sender", r["a"].as_str()), ("receiver", r["b"].as_str())];
    let pair = scope_probe_tests::wait_stable(std::time::Duration::from_secs(10), std::time::Duration::from_millis(500), || {
        probe.metrics().get("beam_top_pair_messages_sent_total", &labels)
    });
    assert_eq!(pair, Some(3000.0), "the pair's sends, as the VM's own trace counted them: {}", r["traced"]);
    let m = probe.metrics();
    assert!(m.value("beam_processes") > 10.0, "the process table is read");
    let (status, stderr) = probe.stop();
    assert!(status.success(), "{stderr:?}");
}

/// With only the three capabilities (as nobody), `profile` names the VM's C functions: their
/// files are read through the VM's root, not `/proc/PID/map_files` (which wants
/// CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN).
#[test]
fn profile_names_c_frames_with_only_the_three_capabilities() {
    let mut beam = Beam::start();
    beam.call("scope_cpu:bif_server()");
    let dir = tempfile::tempdir().unwrap();
    // nobody writes the profile there.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let folded = dir.path().join("cpu.folded");
    let caps = "+bpf,+perfmon,+sys_ptrace";
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", &format!("--inh-caps={caps}"), &format!("--ambient-caps={caps}")])
        .arg(probe::binary())
        .args(["profile", "--pid", &beam.os_pid.to_string(), "--duration", "3s", "--format", "folded", "-o"])
        .arg(&folded)
        .output()
        .expect("setpriv (util-linux)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&folded).unwrap();
    let frames: Vec<&str> = text.lines().filter_map(|l| l.rsplit_once(' ')).flat_map(|(stack, _)| stack.split(';')).collect();
    // C frames: neither Erlang (`M:f/A`), kernel (`_[k]`) nor bracketed placeholders.
    let named_c = frames.iter().filter(|f| !f.contains(':') && !f.ends_with("_[k]") && !f.starts_with(['[', '<'])).count();
    // beam.smp's own (a stripped build's static functions stay `[beam.smp+0x...]` without its
    // debug file, with every capability too).
    assert!(named_c > 0 && frames.iter().any(|f| f.starts_with("erts_")), "no beam.smp function named in {text}");
}

/// Run as root, scope-probe keeps only the three capabilities it needs and the two that name
/// frames in profiles (effective, permitted and bounding sets), whatever root had.
#[test]
fn root_drops_every_capability_it_does_not_need() {
    let beam = Beam::start();
    // The default mode: it also measures what a hook hit costs, with what it kept.
    let probe = scope_probe_tests::Probe::attach(beam.os_pid, &[]);
    // CAP_SYS_PTRACE 19, CAP_SYSLOG 34, CAP_PERFMON 38, CAP_BPF 39, CAP_CHECKPOINT_RESTORE 40.
    let kept: u64 = [19, 34, 38, 39, 40].iter().map(|c| 1u64 << c).sum();
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(capabilities(probe.os_pid(), set), kept, "{set}: {:#x}", capabilities(probe.os_pid(), set));
    }
    for set in ["CapInh", "CapAmb"] {
        assert_eq!(capabilities(probe.os_pid(), set), 0, "{set}");
    }
    let (status, stderr) = probe.stop();
    assert!(status.success(), "{stderr:?}");
    // What it dropped did not cost it the measured hook cost (once, it did: a single uprobe's
    // perf event wants CAP_SYS_ADMIN).
    assert!(stderr.iter().any(|l| l.contains(", calibrated)")), "{stderr:?}");
}

/// A process's capability set as /proc shows it.
fn capabilities(pid: u32, set: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status.lines().find_map(|l| l.strip_prefix(&format!("{set}:"))).unwrap().trim();
    u64::from_str_radix(hex, 16).unwrap()
}

#[test]
fn missing_one_capability_is_named() {
    let beam = Beam::start();
    for (given, missing) in [("+bpf,+perfmon", "CAP_SYS_PTRACE"), ("+bpf,+sys_ptrace", "CAP_PERFMON"), ("+perfmon,+sys_ptrace", "CAP_BPF")] {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args([format!("--inh-caps={given}"), format!("--ambient-caps={given}")])
            .arg(probe::binary())
            .args(["--pid", &beam.os_pid.to_string()])
            .args(listen_args())
            .output()
            .expect("setpriv (util-linux)");
        assert_clean_failure(&out, &format!("insufficient privileges: missing {missing};"));
    }
}

#[test]
fn port_already_in_use() {
    let beam = Beam::start();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = probe::run(&["--pid", &beam.os_pid.to_string(), "--listen", &addr]);
    assert_clean_failure(&out, &format!("cannot listen on {addr}"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already in use"));
    nothing_left_in(&beam);
}

#[test]
fn bad_duration_is_a_usage_error() {
    let out = probe::run(&["--pid", "1", "--duration", "soon"]);
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'soon'"));
}

/// A real BEAM whose ERTS version no table knows: a copy of this machine's OTP with the
/// version string in beam.smp changed (the VM runs normally; only its identity differs).
#[test]
fn unsupported_build_is_refused_by_name() {
    let copy = scope_probe_tests::otp_copy::OtpCopy::new();
    let beam_smp = copy.beam_smp.clone();
    let elf = ElfInfo::open(&beam_smp).unwrap();
    let sym = elf.symbol("etp_erts_version").expect("OTP 25 exports etp_erts_version");
    let off = elf.file_offset(sym.address).unwrap() as usize;
    let mut bytes = std::fs::read(&beam_smp).unwrap();
    let end = off + bytes[off..].iter().position(|&b| b == 0).unwrap();
    let original = String::from_utf8(bytes[off..end].to_vec()).unwrap();
    // Same length, unknown to every table.
    let fake: String = original.chars().map(|c| if c.is_ascii_digit() { '9' } else { c }).collect();
    bytes[off..end].copy_from_slice(fake.as_bytes());
    // Another build has another build-id too (a known one identifies its table by itself).
    let id_end = {
        use object::{Object, ObjectSection};
        let file = object::File::parse(&*bytes).unwrap();
        let (o, n) = file.section_by_name(".note.gnu.build-id").unwrap().file_range().unwrap();
        (o + n) as usize
    };
    bytes[id_end - 1] ^= 0xff;
    std::fs::write(&beam_smp, bytes).unwrap();

    let beam = copy.start();
    let out = run_on(beam.os_pid);
    assert_clean_failure(&out, "unsupported BEAM build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("ERTS {fake}")), "names the build: {stderr}");
    assert!(stderr.contains("no offsets table"), "says what is missing: {stderr}");
    assert!(stderr.contains("cargo xtask offsets"), "names the command that derives a table: {stderr}");
}

/// A known release whose binary lacks one function its table hooks (the name of
/// `erts_schedule` changed in the dynamic string table of a copy; the VM runs normally since
/// nothing looks that name up): refused in one line naming the missing symbol, nothing
/// attached.
#[test]
fn build_missing_a_hooked_symbol_is_refused_naming_it() {
    use object::{Object, ObjectSection};
    let copy = scope_probe_tests::otp_copy::OtpCopy::new();
    let mut bytes = std::fs::read(&copy.beam_smp).unwrap();
    let (dynstr_off, dynstr_len) = {
        let file = object::File::parse(&*bytes).unwrap();
        let (off, len) = file.section_by_name(".dynstr").unwrap().file_range().unwrap();
        (off as usize, len as usize)
    };
    let dynstr = &mut bytes[dynstr_off..dynstr_off + dynstr_len];
    let name = b"\0erts_schedule\0";
    let at = dynstr.windows(name.len()).position(|w| w == name).expect("erts_schedule in .dynstr");
    dynstr[at + name.len() - 2] = b'X'; // erts_schedulX
    std::fs::write(&copy.beam_smp, bytes).unwrap();
    assert!(ElfInfo::open(&copy.beam_smp).unwrap().symbol("erts_schedule").is_none());

    let beam = copy.start();
    let out = run_on(beam.os_pid);
    assert_clean_failure(&out, "erts_schedule");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("OTP 25") && stderr.contains("ERTS 13.1.5"), "names the build: {stderr}");
    assert!(!stderr.contains("erts_send_message"), "only what is missing: {stderr}");
    nothing_left_in(&beam);
}

/// Flags that cannot mean anything are usage errors (exit 2), named, before anything runs.
#[test]
fn meaningless_flags_are_usage_errors() {
    let cases: [(&[&str], &str); 10] = [
        (&["--pid", "abc"], "invalid value 'abc' for '--pid <PID>'"),
        (&["--pid", "-1"], "unexpected argument '-1'"),
        (&["--pid", "1", "--listen", "nonsense"], "invalid value 'nonsense' for '--listen <ADDR>'"),
        (&["--pid", "1", "--alertmanager", "alertmanager:9093"], "not an http:// or https:// URL"),
        (&["--pid", "1", "--alertmanager", "http://"], "no host in the URL"),
        (&["--pid", "1", "--snapshot-interval", "0s"], "must be more than 0"),
        (&["--pid", "1", "--max-processes", "0"], "must be at least 1"),
        (&["--pid", "1", "--overhead-budget", "200%"], "--overhead-budget"),
        (&["--pid", "1", "--mode", "fast"], "invalid value 'fast' for '--mode"),
        (&["profile", "--pid", "1", "--duration", "0s"], "must be more than 0"),
    ];
    for (args, says) in cases {
        let out = probe::run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: expected {says:?} in {stderr}");
    }
}

/// Addresses that cannot be listened on and malformed configuration files: one line, exit 1,
/// nothing attached.
#[test]
fn unusable_addresses_and_malformed_configuration_files() {
    let beam = Beam::start();
    let pid = beam.os_pid.to_string();
    // An address of no interface here.
    let out = probe::run(&["--pid", &pid, "--listen", "192.0.2.1:9568"]);
    assert_clean_failure(&out, "cannot listen on 192.0.2.1:9568");
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("missing.toml", None, "cannot read the configuration file"),
        ("toml.toml", Some("mode = \"adaptive\n"), "in the configuration file"),
        ("key.toml", Some("mood = \"adaptive\"\n"), "unknown field `mood`"),
        ("value.toml", Some("mode = \"fast\"\n"), "unknown variant `fast`"),
        ("url.toml", Some("[alerts]\nalertmanager = [\"alertmanager:9093\"]\n"), "alerts.alertmanager \"alertmanager:9093\": not an http"),
        ("budget.toml", Some("overhead_budget = \"2 percent\"\n"), "line 1, column 19: \"2 percent\" is not a share"),
    ];
    for (name, text, says) in cases {
        let path = dir.path().join(name);
        if let Some(text) = text {
            std::fs::write(&path, text).unwrap();
        }
        let out = probe::run(&["--pid", &pid, "--config", path.to_str().unwrap(), "--listen", &format!("127.0.0.1:{}", probe::free_port())]);
        assert_clean_failure(&out, says);
    }
    nothing_left_in(&beam);
}
