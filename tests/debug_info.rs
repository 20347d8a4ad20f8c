//! Finding a stripped beam.smp's debug info outside the binary: `--debug-file`, and a real
//! debuginfod server (elfutils) through `DEBUGINFOD_URLS`, with the client cache elfutils uses.
//!
//! The VM runs a copy of the DWARF build of Debian's OTP 25 source (`cargo xtask otp-debug`)
//! with its DWARF stripped and no debug link, so only these two ways can find its debug file;
//! the proof that they did is that the offsets come from DWARF and say where it came from.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use beam_probes::elf::ElfInfo;
use scope_probe_tests::debuginfod::Debuginfod;
use scope_probe_tests::otp_copy::OtpCopy;
use scope_probe_tests::probe;

fn debug_beam() -> PathBuf {
    let path = scope_probe_tests::otp_debug_beam(&scope_probe_tests::host_suite());
    assert!(path.exists(), "{} is missing: run `cargo xtask otp-debug` (`cargo xtask test` does)", path.display());
    path
}

fn objcopy(args: &[&std::ffi::OsStr]) {
    let status = Command::new("objcopy").args(args).status().expect("objcopy (binutils)");
    assert!(status.success(), "objcopy {args:?}");
}

/// An OTP copy running the debug build stripped of its DWARF (no debug link), and the debug
/// file split off it, in a directory of its own that no search path covers.
struct Stripped {
    copy: OtpCopy,
    debug_dir: tempfile::TempDir,
    debug_file: PathBuf,
    build_id: String,
}

fn stripped_copy() -> Stripped {
    let copy = OtpCopy::with_beam(&debug_beam());
    let debug_dir = tempfile::tempdir().unwrap();
    let debug_file = debug_dir.path().join("beam.smp.debug");
    objcopy(&["--only-keep-debug".as_ref(), copy.beam_smp.as_os_str(), debug_file.as_os_str()]);
    objcopy(&["--strip-debug".as_ref(), copy.beam_smp.as_os_str()]);
    assert!(!beam_probes::dwarf::has_debug_info(&copy.beam_smp));
    let build_id = ElfInfo::open(&copy.beam_smp).unwrap().build_id.expect("a build-id");
    Stripped { copy, debug_dir, debug_file, build_id }
}

fn snapshot(pid: u32, extra: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(probe::binary());
    cmd.args(["snapshot", "--json", "--pid", &pid.to_string()]).args(extra);
    // No debuginfod from the environment the tests run in, unless a test sets it.
    cmd.env_remove("DEBUGINFOD_URLS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running scope-probe")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "scope-probe failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("snapshot JSON")
}

#[test]
fn debug_file_option() {
    let s = stripped_copy();
    let vm = s.copy.start();

    let plain = json(&snapshot(vm.os_pid, &[], &[]));
    assert_eq!(plain["offsets"], "table", "nothing finds the debug file by itself: {plain}");
    assert!(plain["debug_info"].is_null());

    let given = json(&snapshot(vm.os_pid, &["--debug-file", s.debug_file.to_str().unwrap()], &[]));
    assert_eq!(given["offsets"], "dwarf", "{given}");
    assert_eq!(given["debug_info"], "--debug-file");
    assert_eq!(given["debug_file"], s.debug_file.to_str().unwrap());

    // Another build's file is refused by build-id, in one line, without a panic.
    let stock = "/usr/lib/erlang/erts-13.1.5/bin/beam.smp";
    let out = snapshot(vm.os_pid, &["--debug-file", stock], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not this VM's debug file") && err.contains(&s.build_id), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let out = snapshot(vm.os_pid, &["--debug-file", "/nonexistent/beam.smp.debug"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/nonexistent/beam.smp.debug"), "{err}");
}

#[test]
fn debuginfod_server_and_client_cache() {
    let s = stripped_copy();
    let vm = s.copy.start();
    let cache = tempfile::tempdir().unwrap();
    let server = Debuginfod::serve(s.debug_dir.path(), &s.build_id);
    let urls = PathBuf::from(&server.url);
    let env = [("DEBUGINFOD_URLS", urls.as_path()), ("DEBUGINFOD_CACHE_PATH", cache.path())];

    let out = snapshot(vm.os_pid, &[], &env);
    let fetched = json(&out);
    assert_eq!(fetched["offsets"], "dwarf", "{fetched}");
    assert_eq!(fetched["debug_info"], format!("debuginfod {}", server.url));
    let cached = cache.path().join(&s.build_id).join("debuginfo");
    assert_eq!(fetched["debug_file"], cached.to_str().unwrap());
    assert_eq!(ElfInfo::open(&cached).unwrap().build_id.as_deref(), Some(s.build_id.as_str()), "the cached file");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fetching debug info for build-id") && stderr.contains("fetched"), "progress: {stderr}");

    // The server gone, the cache answers (as it does for gdb), without a download.
    drop(server);
    let out = snapshot(vm.os_pid, &[], &env);
    assert_eq!(json(&out)["offsets"], "dwarf");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("fetching"), "no download from the cache");

    // --no-debuginfod: not asked, and the cache is the client's, not consulted either.
    assert_eq!(json(&snapshot(vm.os_pid, &["--no-debuginfod"], &env))["offsets"], "table");
}

/// A server without the file, then a port nobody listens on: the table's offsets (OTP 25 needs
/// no debug info), no error, nothing cached.
#[test]
fn debuginfod_without_the_file_falls_back() {
    let s = stripped_copy();
    let vm = s.copy.start();
    let cache = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let server = Debuginfod::serve_ready(empty.path());
    let urls = format!("{} http://127.0.0.1:{}", server.url, probe::free_port());
    let env = [
        ("DEBUGINFOD_URLS", Path::new(&urls)),
        ("DEBUGINFOD_CACHE_PATH", cache.path()),
        ("DEBUGINFOD_TIMEOUT", Path::new("5")),
    ];
    let out = snapshot(vm.os_pid, &[], &env);
    let v = json(&out);
    assert_eq!(v["offsets"], "table", "{v}");
    assert!(v["debug_info"].is_null(), "{v}");
    assert!(!cache.path().join(&s.build_id).join("debuginfo").exists());
}
