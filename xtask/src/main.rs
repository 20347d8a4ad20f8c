//! `cargo xtask`: everything around the build that a fresh machine needs.
//!
//! - `setup`: installs the Debian packages scope-probe builds and tests with; mounts tracefs.
//! - `build`: the release binary.
//! - `demo`: setup + build, starts the bundled demo BEAM workload and attaches scope-probe.
//! - `test`: setup + build + the debug beam.smp (`otp-debug`, cached) + the whole test suite
//!   (needs root: it attaches to real VMs).
//! - `bench`: what scope-probe costs the observed VM in each mode, next to the BEAM's own
//!   tracer and `perf record`, on synthetic workloads, 100,000 processes and yaws; its own CPU,
//!   memory, event rate and start-up; written to bench/results/.
//! - `soak`: 10 minutes of the default mode with the flight recorder against yaws under load.
//! - `otp-debug [--suite S]`: a beam.smp with DWARF built from Debian's own OTP source, the
//!   host's or a chroot suite's (cached).
//! - `otp-usdt`: the same with the VM's USDT probes (`--with-dynamic-trace=systemtap`; cached).
//! - `offsets`: a build table's struct offsets from a beam.smp's DWARF, as Rust; `--check`.
//! - `chroot`: a minimal Debian trixie/forky chroot with newer OTP (cached); `--run -- CMD`.

mod bench;
mod chroot;
mod demo;
mod offsets;
mod otp_debug;
mod otp_usdt;
mod setup;
mod soak;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "scope-probe's build, demo, test and benchmark automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the Debian packages needed to build and test (apt-get), mount tracefs.
    Setup,
    /// Build the release binary (target/release/scope-probe).
    Build,
    /// Set up, build, start the demo BEAM workload and run scope-probe against it.
    Demo {
        /// How long to run; 0 runs until Ctrl-C.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Address of the metrics endpoint.
        #[arg(long, default_value = "127.0.0.1:9568")]
        listen: String,
    },
    /// Set up, build and run every test (unit and integration; needs root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Benchmarks: overhead of scope-probe on the observed VM, as ratios against a baseline.
    Bench {
        /// Length of each measurement.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        each: std::time::Duration,
        /// Rounds of (baseline, probe, erlang:trace), interleaved; the median is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Run only one part (its tables are printed, not written): `overhead` (every
        /// workload's ratios), `app` (yaws under wrk), `adaptive` (budget and rate estimates
        /// over longer runs), `events` (the largest event rate taken in with nothing lost),
        /// `start` (time to first metric), `snapshot` (the process table at 100,000 processes)
        /// or `profile` (its memory with 100,000 JIT symbols).
        #[arg(long)]
        only: Option<String>,
        /// Where a whole run writes latest.md and latest.json.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
    },
    /// Leave scope-probe running (default mode, flight recorder on) against yaws under load:
    /// its memory stays flat, nothing is lost, the application's cost as ratios; written to
    /// bench/results/soak.md and soak.json. Not part of `test` (10 minutes).
    Soak {
        /// How long scope-probe runs (after a 60 s baseline without it).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Where it writes soak.md and soak.json.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
    },
    /// Build a beam.smp with DWARF from Debian's own OTP source into .cache/otp-debug/<suite>/
    /// (cached): the host's, or with --suite that chroot suite's, built inside the chroot.
    OtpDebug {
        /// trixie or forky: build that suite's erlang source package inside its chroot (also
        /// writes the split debug file and, if the build-id differs from Debian's, a stripped copy).
        #[arg(long)]
        suite: Option<String>,
        /// Rebuild from a fresh source tree even when the cached binary exists.
        #[arg(long)]
        force: bool,
    },
    /// Build a beam.smp with USDT probes (systemtap) and DWARF from Debian's OTP 25 source into
    /// .cache/otp25-usdt/ (cached).
    OtpUsdt {
        /// Rebuild from a fresh source tree even when the cached binary exists.
        #[arg(long)]
        force: bool,
    },
    /// Print a build table's struct offsets read from a beam.smp's DWARF, as Rust.
    Offsets {
        /// The beam.smp (with DWARF, or with --debug-file).
        binary: PathBuf,
        /// Separate debug file holding the binary's DWARF (same build-id).
        #[arg(long)]
        debug_file: Option<PathBuf>,
        /// Compare with the build table matching the binary's release; fail on any difference.
        #[arg(long)]
        check: bool,
        /// Compare with this table (its id) instead of the one matching the release.
        #[arg(long)]
        table: Option<String>,
    },
    /// A minimal Debian chroot (trixie: OTP 27, forky: OTP 29) with erlang-base and elixir in
    /// .cache/chroots/<suite>/ (cached); `--run -- CMD...` runs a command inside it.
    Chroot {
        /// trixie or forky.
        suite: String,
        /// Redo it even when cached.
        #[arg(long)]
        force: bool,
        /// Run the command after `--` inside the chroot (with /proc and /dev mounted for it).
        #[arg(long)]
        run: bool,
        #[arg(last = true)]
        cmd: Vec<String>,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Setup => setup::setup(),
        Cmd::Build => build().map(|_| ()),
        Cmd::Demo { duration, listen } => {
            setup::setup()?;
            let bin = build()?;
            demo::run(&bin, duration, &listen)
        }
        Cmd::Test { args } => {
            setup::setup()?;
            otp_debug::provision(None, false)?;
            // tests/usdt_build.rs runs a VM on the systemtap build (cached after the first run).
            otp_usdt::provision(false)?;
            let bin = build()?;
            if !args.is_empty() {
                // A filtered run is for the host only: the extra targets run whole suites.
                return test(&bin, &args, None, &[]);
            }
            let t = std::time::Instant::now();
            for suite in scope_probe_tests::chroot::SUITES {
                chroot::provision(suite, false)?;
                otp_debug::provision(Some(suite), false)?;
            }
            eprintln!("xtask: extra targets provisioned in {:.1?}", t.elapsed());
            let mut failed = Vec::new();
            // The flight recorder's ten-minute test runs beside the others (its VM idles).
            let long = spawn_long_test(&bin, "flight_recorder")?;
            if let Err(e) = test(&bin, &[], None, &[]) {
                failed.push(format!("host: {e:#}"));
            }
            let mut args: Vec<String> = Vec::new();
            for name in GROUND_TRUTH_TESTS {
                args.extend(["--test".to_owned(), name.to_string()]);
            }
            for target in EXTRA_TEST_TARGETS {
                let t = std::time::Instant::now();
                // forky-debuginfod: nothing installed in the VM's root; a real debuginfod on
                // this machine serves the debug file, into a client cache of this run's own.
                let (_server, cache, env) = if *target == "forky-debuginfod" {
                    let (server, cache) = start_debuginfod()?;
                    let env = vec![
                        ("DEBUGINFOD_URLS".to_owned(), server.url.clone()),
                        ("DEBUGINFOD_CACHE_PATH".to_owned(), cache.path().display().to_string()),
                    ];
                    (Some(server), Some(cache), env)
                } else {
                    (None, None, Vec::new())
                };
                let r = test(&bin, &args, Some(target), &env);
                drop(cache);
                eprintln!("xtask: ground-truth tests on {target}: {} in {:.1?}", if r.is_ok() { "passed" } else { "FAILED" }, t.elapsed());
                if let Err(e) = r {
                    failed.push(format!("{target}: {e:#}"));
                }
            }
            if let Err(e) = long.wait() {
                failed.push(format!("host: {e:#}"));
            }
            if !failed.is_empty() {
                bail!("tests failed: {}", failed.join("; "));
            }
            Ok(())
        }
        Cmd::Bench { each, rounds, only, out } => {
            setup::setup()?;
            // SCOPE_PROBE_BIN benchmarks another scope-probe binary (e.g. an older build).
            let bin = match std::env::var_os("SCOPE_PROBE_BIN") {
                Some(bin) => PathBuf::from(bin),
                None => build()?,
            };
            bench::run(&bin, each, rounds, only.as_deref(), &workspace_root().join(out))
        }
        Cmd::Soak { duration, out } => {
            setup::setup()?;
            let bin = match std::env::var_os("SCOPE_PROBE_BIN") {
                Some(bin) => PathBuf::from(bin),
                None => build()?,
            };
            soak::run(&bin, duration, &workspace_root().join(out))
        }
        Cmd::OtpDebug { suite, force } => otp_debug::provision(suite.as_deref(), force).map(|_| ()),
        Cmd::OtpUsdt { force } => otp_usdt::provision(force).map(|_| ()),
        Cmd::Offsets { binary, debug_file, check, table } => {
            offsets::run(&binary, debug_file.as_deref(), check, table.as_deref())
        }
        Cmd::Chroot { suite, force, run, cmd } => chroot::run(&suite, force, run, &cmd),
    }
}

pub fn workspace_root() -> PathBuf {
    scope_probe_tests::workspace_root()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// A test binary's ignored (long) tests running in the background, its output in a log.
struct LongTest {
    name: &'static str,
    child: std::process::Child,
    log: PathBuf,
    started: std::time::Instant,
}

/// Builds the test binary `name` and starts its `--ignored` tests against the host's OTP.
fn spawn_long_test(bin: &std::path::Path, name: &'static str) -> Result<LongTest> {
    let out = cargo()
        .args(["test", "--release", "-p", "scope-probe-tests", "--test", name, "--no-run", "--message-format=json"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("building the long tests")?;
    if !out.status.success() {
        bail!("building the {name} test failed");
    }
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|m| m["target"]["name"] == name && m["executable"].is_string())
        .and_then(|m| m["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("no executable for the {name} test"))?;
    let dir = workspace_root().join("target/test-artefacts");
    std::fs::create_dir_all(&dir)?;
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log)?;
    eprintln!("xtask: running {name}'s long tests in the background (log: {})", log.display());
    let child = Command::new(exe)
        .args(["--ignored", "--test-threads=1"])
        .current_dir(workspace_root().join("tests"))
        .env("SCOPE_PROBE_BIN", bin)
        .env(scope_probe_tests::beam::TARGET_VAR, "host")
        .env("DEBUGINFOD_URLS", "")
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting the {name} test"))?;
    Ok(LongTest { name, child, log, started: std::time::Instant::now() })
}

impl LongTest {
    fn wait(mut self) -> Result<()> {
        let status = self.child.wait()?;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        eprintln!("xtask: {}'s long tests: {} in {:.1?}", self.name, if status.success() { "passed" } else { "FAILED" }, self.started.elapsed());
        if !status.success() {
            eprintln!("{log}");
            bail!("{}'s long tests failed (log: {})", self.name, self.log.display());
        }
        Ok(())
    }
}

/// Builds the release binary and returns its path.
fn build() -> Result<PathBuf> {
    eprintln!("xtask: building scope-probe (release)");
    let status = cargo().args(["build", "--release", "-p", "scope-probe"]).status().context("running cargo")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    Ok(workspace_root().join("target/release/scope-probe"))
}

/// Targets the ground-truth tests also run against (`cargo xtask test`), after the host's
/// OTP 25 (see `SCOPE_PROBE_TEST_TARGET` in tests/harness/beam.rs): OTP 25 built with DWARF
/// (offsets from DWARF) and with systemtap (USDT sources), in private copies of the host's OTP;
/// trixie's OTP 27 as packaged; forky's OTP 29 stripped like Debian strips it (from its source
/// build), with its debug file installed in the VM's root, then served by debuginfod only.
const EXTRA_TEST_TARGETS: &[&str] = &["otp25-dwarf", "otp25-usdt", "trixie", "forky-dbgsym", "forky-debuginfod"];

/// A debuginfod server serving forky's split debug file, and an empty client cache.
fn start_debuginfod() -> Result<(scope_probe_tests::debuginfod::Debuginfod, tempfile::TempDir)> {
    let debug_dir = scope_probe_tests::otp_debug_dir("forky");
    let stripped = scope_probe_tests::otp_debug_stripped("forky");
    let build_id = beam_probes::elf::ElfInfo::open(&stripped)
        .with_context(|| format!("reading {}", stripped.display()))?
        .build_id
        .context("forky's stripped beam.smp has no build-id")?;
    let t = std::time::Instant::now();
    let server = scope_probe_tests::debuginfod::Debuginfod::serve(&debug_dir, &build_id);
    eprintln!("xtask: debuginfod serving {} on {} (ready in {:.1?})", debug_dir.display(), server.url, t.elapsed());
    Ok((server, tempfile::tempdir()?))
}

/// The test files whose ground truth comes from the observed VM itself (erlang:trace,
/// process_info, the VM's own function names): they run once more per extra target.
const GROUND_TRUTH_TESTS: &[&str] = &["foundation", "snapshot", "identity", "profile", "jit_symbols", "detectors", "distribution"];

/// `cargo test` with `args`; against the host's VM, or with `target` the chroot suite's
/// (`SCOPE_PROBE_TEST_TARGET`, read by the harness's `Beam::start`).
fn test(bin: &std::path::Path, args: &[String], target: Option<&str>, env: &[(String, String)]) -> Result<()> {
    setup::require_root("the integration tests attach probes to real BEAM processes")?;
    eprintln!("xtask: running tests {args:?} against {}", target.unwrap_or("the host's OTP"));
    let mut cmd = cargo();
    cmd.args(["test", "--release", "--no-fail-fast"]);
    if !args.iter().any(|a| a == "--test" || a == "-p") {
        cmd.arg("--workspace");
    } else if args.iter().any(|a| a == "--test") {
        cmd.args(["-p", "scope-probe-tests"]);
    }
    let status = cmd
        .args(args)
        .env("SCOPE_PROBE_BIN", bin)
        .env(scope_probe_tests::beam::TARGET_VAR, target.unwrap_or("host"))
        // No debuginfod from the caller's environment (Debian's profile.d sets one for login
        // shells): a target that uses one says so in `env`.
        .env("DEBUGINFOD_URLS", "")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("tests failed");
    }
    Ok(())
}
