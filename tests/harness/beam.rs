//! A real `erl` VM running the controller module (tests/fixtures/scope_ctl.erl) with the
//! fixtures compiled and loaded; the test sends it expressions line by line.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;

/// The fixtures compiled by the host's `erlc` (and `elixirc`, when Elixir is installed), once
/// per compiler and set of sources, under target/ (so that they go with `cargo clean`).
pub fn fixtures_ebin() -> &'static Path {
    static EBIN: OnceLock<PathBuf> = OnceLock::new();
    EBIN.get_or_init(|| {
        let compilers = format!("{} / {}", crate::fixtures::host_tool("erlc"), crate::fixtures::host_tool("elixirc"));
        let parent = crate::workspace_root().join("target");
        crate::fixtures::cached_dir(&parent, "fixtures-ebin", crate::fixtures::key(&compilers), |out| {
            let (erl, ex) = crate::fixtures::sources();
            let status = Command::new("erlc").arg("-o").arg(out).args(&erl).status().expect("running erlc");
            assert!(status.success(), "erlc failed on {erl:?}");
            // Elixir fixtures when Elixir is installed (Debian's `elixir`); tests that need
            // them check [`elixir_available`].
            if elixir_available() && !ex.is_empty() {
                let status = Command::new("elixirc").arg("-o").arg(out).args(&ex).status().expect("running elixirc");
                assert!(status.success(), "elixirc failed on {ex:?}");
            }
        })
    })
}

pub fn elixir_available() -> bool {
    Command::new("elixirc").arg("--version").output().is_ok_and(|o| o.status.success())
}

pub struct Beam {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The OS pid of beam.smp, as the VM reports it (os:getpid/0).
    pub os_pid: u32,
    /// The chroot the VM runs in (`None`: the host's own OTP).
    pub root: Option<PathBuf>,
    /// The private OTP copy the VM runs from, removed with it.
    copy: Option<crate::otp_copy::OtpCopy>,
}

/// The environment variable choosing the VM the ground-truth tests start: `host` (default:
/// the host's `erl`) or a chroot suite (`trixie`, `forky`: the chroot's `erl`, see
/// [`crate::chroot`]). `cargo xtask test` sets it for its runs on extra targets.
pub const TARGET_VAR: &str = "SCOPE_PROBE_TEST_TARGET";

/// Extra targets that run a chroot's VM on a beam.smp other than the packaged one: forky's OTP
/// 29 stripped like Debian strips it, from the source build (`cargo xtask otp-debug --suite
/// forky`), whose debug info scope-probe must find by itself. `forky-dbgsym`: the split debug
/// file is installed in the VM's root (`/usr/lib/debug/.build-id/...`, as `apt install
/// erlang-base-dbgsym` would); `forky-debuginfod`: nothing is installed and a debuginfod server
/// serves it (`cargo xtask test` starts one and sets DEBUGINFOD_URLS).
pub const STRIPPED_TARGETS: &[&str] = &["forky-dbgsym", "forky-debuginfod"];

/// Targets that run the host's OTP 25 with another beam.smp in a private copy of it: the DWARF
/// build of Debian's source (`cargo xtask otp-debug`; offsets read from its DWARF) and the
/// systemtap build (`cargo xtask otp-usdt`; send, gc and exit through its USDT probes).
pub const HOST_COPY_TARGETS: &[&str] = &["otp25-dwarf", "otp25-usdt"];

/// A VM to run the tests against, other than the host's.
#[derive(Debug, Clone)]
pub struct TestTarget {
    /// What the user asked for (`trixie`, `forky-dbgsym`...).
    pub name: String,
    pub vm: TargetVm,
    /// What scope-probe's attach lines must say on this target: that the offsets, probes or
    /// debug info came the way the target is about (a run that got them some other way would
    /// not test that way).
    pub attach_says: Option<&'static str>,
    /// What `snapshot --json` must say on this target, as (field, prefix of its value): the
    /// snapshot reads the process table with those offsets, so it must get them the same way.
    pub snapshot_says: Option<(&'static str, &'static str)>,
}

#[derive(Debug, Clone)]
pub enum TargetVm {
    /// In a chroot, with bind mounts private to the VM (host path, path inside the chroot).
    Chroot { suite: String, binds: Vec<(PathBuf, String)> },
    /// The host's OTP in a private copy whose beam.smp is this one.
    HostCopy { beam_smp: PathBuf },
}

/// The target the tests run against, `None` for the host. Panics on an unknown value: a
/// typo must not quietly test the host instead.
pub fn test_target() -> Option<TestTarget> {
    let name = match std::env::var(TARGET_VAR).ok().as_deref().map(str::trim) {
        None | Some("") | Some("host") => return None,
        Some(s) => s.to_owned(),
    };
    let built = |path: PathBuf, how: &str| {
        assert!(path.exists(), "test target {name}: {} is missing: run `cargo xtask {how}`", path.display());
        path
    };
    let (vm, attach_says, snapshot_says) = if crate::chroot::SUITES.contains(&name.as_str()) {
        (TargetVm::Chroot { suite: name.clone(), binds: Vec::new() }, None, Some(("offsets", "table")))
    } else if STRIPPED_TARGETS.contains(&name.as_str()) {
        let stripped = built(crate::otp_debug_stripped("forky"), "otp-debug --suite forky");
        let mut binds = vec![(stripped, crate::chroot::FORKY_BEAM_SMP.to_owned())];
        let (says, snapshot) = if name == "forky-dbgsym" {
            let root = crate::chroot::provisioned("forky").unwrap_or_else(|e| panic!("test target {name}: {e}"));
            std::fs::create_dir_all(root.join("usr/lib/debug")).expect("a mount point for the debug files");
            binds.push((crate::otp_debug_dir("forky"), "/usr/lib/debug".to_owned()));
            ("debug info: installed debug file", "installed debug file")
        } else {
            ("debug info: debuginfod http://127.0.0.1:", "debuginfod http://127.0.0.1:")
        };
        (TargetVm::Chroot { suite: "forky".into(), binds }, Some(says), Some(("debug_info", snapshot)))
    } else if name == "otp25-dwarf" {
        let beam_smp = built(crate::otp_debug_beam(&crate::host_suite()), "otp-debug");
        (TargetVm::HostCopy { beam_smp }, Some("(offsets from dwarf)"), Some(("offsets", "dwarf")))
    } else if name == "otp25-usdt" {
        let beam_smp = built(crate::workspace_root().join(".cache/otp25-usdt/beam.smp"), "otp-usdt");
        (TargetVm::HostCopy { beam_smp }, Some("source of send: usdt"), Some(("offsets", "dwarf")))
    } else {
        panic!(
            "{TARGET_VAR}={name}: expected host or one of {:?}, {STRIPPED_TARGETS:?}, {HOST_COPY_TARGETS:?}",
            crate::chroot::SUITES
        )
    };
    Some(TestTarget { name, vm, attach_says, snapshot_says })
}

/// A reply of the controller: `key=value` pairs, or a single value under "value".
pub type Reply = HashMap<String, String>;

impl Beam {
    /// Starts `erl` from PATH, or the test target's (see [`TARGET_VAR`]).
    pub fn start() -> Beam {
        Beam::start_with(Path::new("erl"), &[], &[])
    }

    /// Starts a given `erl` with extra emulator arguments and environment. The plain `erl`
    /// with no environment is the test target's when a chroot target is selected; an explicit
    /// path (a copy of the host's OTP) always runs on the host.
    pub fn start_with(erl: &Path, args: &[&str], env: &[(&str, &Path)]) -> Beam {
        if erl == Path::new("erl") && env.is_empty()
            && let Some(target) = test_target()
        {
            // Once per test binary, on the terminal: which VM these results are about.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                let _ = writeln!(std::io::stderr(), "test target {}: {:?}", target.name, target.vm);
            });
            return match &target.vm {
                TargetVm::Chroot { suite, binds } => {
                    let root = crate::chroot::provisioned(suite).unwrap_or_else(|e| panic!("test target {}: {e}", target.name));
                    let binds: Vec<(&Path, &str)> = binds.iter().map(|(h, i)| (h.as_path(), i.as_str())).collect();
                    crate::chroot::start_beam_in_chroot_with(&root, args, &binds)
                }
                TargetVm::HostCopy { beam_smp } => {
                    let copy = crate::otp_copy::OtpCopy::with_beam(beam_smp);
                    let mut beam = Beam::start_fresh_binary(&copy.erl, args);
                    beam.copy = Some(copy);
                    beam
                }
            };
        }
        Beam::spawn(Beam::host_command(erl, args, env), &erl.display().to_string())
    }

    /// The command that starts the controller on this machine's `erl` (or a copy's).
    fn host_command(erl: &Path, args: &[&str], env: &[(&str, &Path)]) -> Command {
        let mut cmd = Command::new(erl);
        cmd.envs(env.iter().copied())
            .args(["-noshell", "-pa"])
            .arg(fixtures_ebin())
            .args(args)
            .args(["-eval", "scope_ctl:main()"]);
        cmd
    }

    /// Starts the controller on a beam.smp this test process has just written (a copy of the
    /// installed OTP). Retried a few times: while the file was open for writing, another test
    /// thread may have forked a child that still holds that descriptor until it execs, and
    /// executing the file meanwhile fails with ETXTBSY (erlexec: "Error 26").
    pub fn start_fresh_binary(erl: &Path, args: &[&str]) -> Beam {
        let mut tries = 0;
        loop {
            match Beam::try_spawn(Beam::host_command(erl, args, &[])) {
                Ok(beam) => return beam,
                Err(line) if tries < 5 => {
                    tries += 1;
                    eprintln!("starting {} failed ({line:?}), retrying", erl.display());
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Err(line) => panic!("unexpected first line from {}: {line:?}", erl.display()),
            }
        }
    }

    /// Spawns a prepared command that starts a VM running the controller (`-eval
    /// scope_ctl:main()` with the fixtures on its code path; e.g. a VM in a chroot, see
    /// [`crate::chroot`]) and waits for its `ready` line; `what` names it in panics.
    pub fn spawn(cmd: Command, what: &str) -> Beam {
        Beam::try_spawn(cmd).unwrap_or_else(|line| panic!("unexpected first line from {what}: {line:?}"))
    }

    /// [`Beam::spawn`], or the VM's first line when it is not the controller's `ready` line.
    fn try_spawn(mut cmd: Command) -> Result<Beam, String> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start: {e}"))?;
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("reading the VM's first line");
        let Some(os_pid) = line.trim().strip_prefix("ready os_pid=").and_then(|p| p.parse().ok()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(line);
        };
        Ok(Beam { child, stdin, stdout, os_pid, root: None, copy: None })
    }

    /// The OS pid of the process the harness started (`erl`, or what wraps it).
    pub fn child_pid(&self) -> u32 {
        self.child.id()
    }

    /// Evaluates one Erlang expression (without the final dot) in the VM.
    pub fn call(&mut self, expr: &str) -> Reply {
        writeln!(self.stdin, "{expr}.").expect("writing to the VM");
        self.stdin.flush().expect("flushing to the VM");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("reading from the VM");
        let line = line.trim_end();
        let body = line.strip_prefix("ok ").unwrap_or_else(|| panic!("{expr} failed in the VM: {line}"));
        let mut reply = Reply::new();
        if body.contains('=') {
            for kv in body.split(' ') {
                let (k, v) = kv.split_once('=').expect("key=value");
                reply.insert(k.to_owned(), v.to_owned());
            }
        } else {
            reply.insert("value".to_owned(), body.to_owned());
        }
        reply
    }
}

impl Drop for Beam {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A VM started with +JPperf leaves its perf map (and jitdump) behind: a few MB each,
        // in its own /tmp (the chroot's for a chrooted VM).
        let tmp = self.root.as_ref().map_or_else(|| PathBuf::from("/tmp"), |r| r.join("tmp"));
        for f in [format!("perf-{}.map", self.os_pid), format!("jit-{}.dump", self.os_pid)] {
            let _ = std::fs::remove_file(tmp.join(f));
        }
    }
}
