//! BEAMs inside the minimal Debian chroots that `cargo xtask chroot <suite>` provisions under
//! `.cache/chroots/<suite>/` (trixie: OTP 27, forky: OTP 29), for the build-matrix tests.
//!
//! A command runs in the chroot in its own mount namespace, with `/proc` mounted and `/dev`
//! bind-mounted under the chroot's root: the mounts are private to that namespace, nobody else
//! sees them, and the kernel removes them when the last process in it exits. Nothing to unmount
//! by hand, even when a test panics or is killed. The process keeps its host pid (no pid
//! namespace), so scope-probe, outside, finds it by that pid and its files through
//! `/proc/PID/root`. The chroot's `/tmp` is its own directory (the VM's perf map lands there).
//! Needs root (mount namespaces, mount, chroot).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Beam;

/// Debian forky's beam.smp inside its chroot (ERTS 17.1).
pub const FORKY_BEAM_SMP: &str = "/usr/lib/erlang/erts-17.1/bin/beam.smp";

/// The suites `cargo xtask chroot` provisions.
pub const SUITES: &[&str] = &["trixie", "forky"];

/// File at the root of a chroot, written last by `cargo xtask chroot`: without it the chroot is
/// incomplete (and gets redone).
pub const STAMP: &str = ".xtask-chroot-complete";

/// `.cache/chroots/<suite>` under the workspace root.
pub fn chroot_dir(suite: &str) -> PathBuf {
    crate::workspace_root().join(".cache/chroots").join(suite)
}

/// The complete chroot of `suite`, or a message saying how to provision it.
pub fn provisioned(suite: &str) -> Result<PathBuf, String> {
    let dir = chroot_dir(suite);
    if dir.join(STAMP).is_file() {
        Ok(dir)
    } else if dir.exists() {
        Err(format!(
            "{} is incomplete (no {STAMP}): run `cargo xtask chroot {suite} --force`",
            dir.display()
        ))
    } else {
        Err(format!("{} does not exist: run `cargo xtask chroot {suite}` (as root)", dir.display()))
    }
}

fn cstring(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// `program` (a path inside the chroot, e.g. `/usr/bin/erl`) as a command to run with `root` as
/// its root directory, in a private mount namespace with `/proc` and `/dev` mounted (see the
/// module documentation). The working directory is the chroot's `/`; `PATH` and `HOME` are set
/// for the chroot; the rest of the environment is inherited.
pub fn command(root: &Path, program: &str) -> Command {
    command_with_binds(root, program, &[])
}

/// [`command`], with host files or directories bind-mounted over paths inside the chroot, in
/// the command's private mount namespace only (`(host path, path inside the chroot)`; the
/// target must exist). What the chroot looks like to everybody else does not change: this is
/// how a test "installs" a debug file or swaps beam.smp for one VM. scope-probe sees the
/// binds through `/proc/PID/root`, like it sees a container's files.
pub fn command_with_binds(root: &Path, program: &str, binds: &[(&Path, &str)]) -> Command {
    let root = root.canonicalize().unwrap_or_else(|e| panic!("chroot {}: {e}", root.display()));
    let binds: Vec<(CString, CString)> = binds
        .iter()
        .map(|(host, inside)| {
            let target = root.join(inside.trim_start_matches('/'));
            assert!(target.exists(), "bind target {} does not exist", target.display());
            (cstring(host), cstring(&target))
        })
        .collect();
    let c_root = cstring(&root);
    let c_proc = cstring(&root.join("proc"));
    let c_dev = cstring(&root.join("dev"));
    let (none, slash, proc_, dev) = (c"none", c"/", c"proc", c"/dev");
    let mut cmd = Command::new(program);
    cmd.env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").env("HOME", "/root");
    let check = |r: libc::c_int| if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
    // SAFETY: only async-signal-safe system calls between fork and exec, on CStrings prepared
    // before the fork.
    unsafe {
        cmd.pre_exec(move || {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Mounts made from here on must not propagate back to the host's namespace.
            check(libc::mount(none.as_ptr(), slash.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()))?;
            check(libc::mount(
                proc_.as_ptr(),
                c_proc.as_ptr(),
                proc_.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ))?;
            check(libc::mount(dev.as_ptr(), c_dev.as_ptr(), std::ptr::null(), libc::MS_BIND | libc::MS_REC, std::ptr::null()))?;
            for (host, target) in &binds {
                check(libc::mount(host.as_ptr(), target.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()))?;
            }
            check(libc::chroot(c_root.as_ptr()))?;
            check(libc::chdir(slash.as_ptr()))?;
            Ok(())
        });
    }
    cmd
}

/// The fixtures (Erlang and Elixir) compiled with the chroot's own `erlc` and `elixirc`, once
/// per chroot build and set of sources, under the chroot's `/tmp`; returns that directory as the
/// chroot sees it. (The chroot's compilers rather than the host's: a .beam must not depend on
/// which OTP the host has.)
pub fn fixtures_ebin_in(root: &Path) -> String {
    // The stamp names the chroot's suite and release: a chroot made anew compiles anew.
    let stamp = std::fs::read_to_string(root.join(STAMP)).unwrap_or_default();
    let key = crate::fixtures::key(&format!("{} {stamp}", root.display()));
    let inside = |p: &Path| format!("/{}", p.strip_prefix(root).expect("under the chroot").display());
    let dir = crate::fixtures::cached_dir(&root.join("tmp"), "scope-fixtures", key, |out| {
        let src = out.join("src");
        std::fs::create_dir(&src).expect("src dir");
        let (erl, ex) = crate::fixtures::sources();
        for (compiler, files) in [("/usr/bin/erlc", erl), ("/usr/bin/elixirc", ex)] {
            if files.is_empty() {
                continue;
            }
            let mut names = Vec::new();
            for p in &files {
                let copy = src.join(p.file_name().expect("file name"));
                std::fs::copy(p, &copy).expect("copying a fixture into the chroot");
                names.push(inside(&copy));
            }
            let out = command(root, compiler).arg("-o").arg(inside(out)).args(&names).output().expect("running a chroot compiler");
            assert!(out.status.success(), "{compiler} in {} failed: {}", root.display(), String::from_utf8_lossy(&out.stderr));
        }
    });
    inside(&dir)
}

/// Starts the chroot's `erl` running the controller (tests/fixtures/scope_ctl.erl), like
/// [`Beam::start_with`]: the same protocol, with extra emulator arguments `args`. The returned
/// [`Beam::os_pid`] is the host pid of the chroot's beam.smp.
pub fn start_beam_in_chroot(root: &Path, args: &[&str]) -> Beam {
    start_beam_in_chroot_with(root, args, &[])
}

/// [`start_beam_in_chroot`] with bind mounts private to this VM (see [`command_with_binds`]).
pub fn start_beam_in_chroot_with(root: &Path, args: &[&str], binds: &[(&Path, &str)]) -> Beam {
    let ebin = fixtures_ebin_in(root);
    let mut cmd = command_with_binds(root, "/usr/bin/erl", binds);
    cmd.args(["-noshell", "-pa", &ebin]).args(args).args(["-eval", "scope_ctl:main()"]);
    let mut beam = Beam::spawn(cmd, &format!("erl in {}", root.display()));
    beam.root = Some(root.to_owned());
    beam
}

/// [`start_beam_in_chroot`] as a container runs it: in pid and mount namespaces of its own
/// (`unshare --pid --fork --mount-proc --root`), where it is pid 1 and sees only itself. The
/// returned [`Beam::os_pid`] is its pid on the host, found among the descendants of `unshare`.
pub fn start_beam_in_pid_namespace(root: &Path) -> Beam {
    let ebin = fixtures_ebin_in(root);
    let root = root.canonicalize().unwrap_or_else(|e| panic!("chroot {}: {e}", root.display()));
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", "--mount", "--mount-proc"])
        .arg(format!("--root={}", root.display()))
        .args(["/usr/bin/erl", "-noshell", "-pa", &ebin, "-eval", "scope_ctl:main()"])
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root");
    let mut beam = Beam::spawn(cmd, &format!("erl in its own pid namespace in {}", root.display()));
    assert_eq!(beam.os_pid, 1, "the VM is pid 1 of its namespace");
    beam.os_pid = host_pid_of_beam_under(beam.child_pid()).expect("the VM's host pid");
    beam.root = Some(root);
    beam
}

/// The host pid of the beam.smp descended from `ancestor`.
fn host_pid_of_beam_under(ancestor: u32) -> Option<u32> {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    std::fs::read_dir("/proc").ok()?.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()).find(|&pid| {
        let is_beam = std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "beam.smp");
        let mut p = pid;
        let mut under = false;
        for _ in 0..8 {
            match parent(p) {
                Some(q) if q == ancestor => {
                    under = true;
                    break;
                }
                Some(q) if q > 1 => p = q,
                _ => break,
            }
        }
        is_beam && under
    })
}
