//! Installs what building and testing need, from Debian's packages, and mounts tracefs.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Debian packages: the BPF toolchain, the VM under observation, and the tools the tests use.
pub const APT_PACKAGES: &[&str] = &[
    "clang",       // compiles the BPF programs
    "libelf-dev",  // libbpf (vendored) links against libelf
    "zlib1g-dev",  // ...and zlib
    "pkg-config",
    "make",
    "bpftool",     // regenerates ebpf/vmlinux.h
    "erlang-base", // the BEAM under observation (OTP 25 on Debian 12)
    "prometheus",  // promtool, to validate the exposition; a real Prometheus for the deploy tests
    "prometheus-alertmanager", // a real Alertmanager for the alert tests
    "util-linux",  // setpriv, to test running without privileges
    "procps",      // pgrep
    "elixir",      // Elixir fixtures (Elixir-style frame names)
    "tmux",        // drives `scope-probe top` in the tests
    "time",        // GNU time: peak memory in the benchmark
    "python3-jsonschema", // validates speedscope output against speedscope's schema
    "debuginfod",  // a real debuginfod server for the tests of scope-probe's debuginfod client
    "chromium",    // opens the HTML report headless in the tests
    "python3-pip", // installs the `perfetto` package, whose protos parse the Perfetto export
    "openssl",     // makes the certificates of the TLS tests (--web-config)
    "curl",        // reaches the endpoint over TLS with basic auth in those tests
    "erlang-yaws", // the real application of the benchmark and the soak (the library, no service)
    "erlang-poolboy", // a real pool for the pool-wait tests
    "wrk",         // ...and its HTTP load
    "linux-perf",  // the benchmark's peer: perf record with +JPperf
];

/// The `perfetto` PyPI package: its trace protos check `scope-probe export --format perfetto`.
const PERFETTO_PY: &str = "perfetto==0.59.1";
/// Validates the Kubernetes DaemonSet under deploy/kubernetes/ against the API's schemas.
const KUBERNETES_VALIDATE_PY: &str = "kubernetes-validate==1.37.0";

/// speedscope's file-format schema ships in its npm package; tests validate against it.
const SPEEDSCOPE: &str = "speedscope@1.25.0";

pub fn require_root(why: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("run as root: {why}");
    }
    Ok(())
}

pub(crate) fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// apt-get as every caller wants it: no prompts, quiet, waiting for the dpkg lock.
pub(crate) fn apt(args: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(["-q", "-o", "DPkg::Lock::Timeout=600"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("apt-get {} failed", args.join(" "));
    }
    Ok(())
}

/// Installs the packages of `packages` that are missing (after `apt-get update`); returns them.
pub(crate) fn install_missing(packages: &[&str]) -> Result<Vec<String>> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if !missing.is_empty() {
        require_root("installing Debian packages")?;
        eprintln!("xtask: installing {}", missing.join(" "));
        apt(&["update"])?;
        let mut args = vec!["install", "-y", "--no-install-recommends"];
        args.extend(&missing);
        apt(&args)?;
    }
    Ok(missing.into_iter().map(str::to_owned).collect())
}

pub fn setup() -> Result<()> {
    install_missing(APT_PACKAGES)?;
    // npm fetches speedscope's schema; a machine may have its own Node.js (not Debian's), so
    // Debian's npm is installed only when there is no npm at all.
    if !on_path("npm") {
        install_missing(&["npm"])?;
    }
    mount_tracefs();
    // Only one test needs it; the demo and the rest must not fail without it.
    if let Err(e) = fetch_speedscope_schema() {
        eprintln!("xtask: warning: {e:#} (the speedscope schema test will fail)");
    }
    if let Err(e) = fetch_perfetto_protos() {
        eprintln!("xtask: warning: {e:#} (the Perfetto export test will fail)");
    }
    if let Err(e) = fetch_kubernetes_validate() {
        eprintln!("xtask: warning: {e:#} (the DaemonSet's validation test will fail)");
    }
    Ok(())
}

/// Installs the `perfetto` package (with protobuf) under .cache/python for Debian's python3.
fn fetch_perfetto_protos() -> Result<()> {
    pip_install(PERFETTO_PY, "python", "perfetto/protos/perfetto/trace/perfetto_trace_pb2.py", "its trace protos")
}

/// Installs `kubernetes-validate` under .cache/python-kubernetes-validate.
fn fetch_kubernetes_validate() -> Result<()> {
    pip_install(KUBERNETES_VALIDATE_PY, "python-kubernetes-validate", "kubernetes_validate/__main__.py", "the DaemonSet's validator")
}

/// `pip install --target .cache/DIR SPEC` with Debian's python3, unless `marker` is there.
fn pip_install(spec: &str, dir: &str, marker: &str, why: &str) -> Result<()> {
    let dir = crate::workspace_root().join(".cache").join(dir);
    if dir.join(marker).exists() {
        return Ok(());
    }
    eprintln!("xtask: installing {spec} ({why}) under {}", dir.display());
    let out = Command::new("/usr/bin/python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
        .arg(&dir)
        .arg(spec)
        .output()
        .context("running pip")?;
    if !out.status.success() {
        bail!("pip install {spec} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Unpacks speedscope's npm package under .cache/speedscope (git-ignored) once.
fn fetch_speedscope_schema() -> Result<()> {
    let dir = crate::workspace_root().join(".cache/speedscope");
    if dir.join("package/dist/release/file-format-schema.json").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)?;
    eprintln!("xtask: fetching {SPEEDSCOPE} (for its file-format schema)");
    let out = Command::new("npm").args(["pack", "--silent", SPEEDSCOPE]).current_dir(&dir).output().context("running npm")?;
    if !out.status.success() {
        bail!("npm pack {SPEEDSCOPE} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let tarball = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let status = Command::new("tar").args(["xzf", &tarball]).current_dir(&dir).status()?;
    if !status.success() {
        bail!("unpacking {tarball} failed");
    }
    Ok(())
}

/// Uprobes attached through perf events do not need tracefs, but bpftool and debugging do;
/// mount it when missing and we may.
fn mount_tracefs() {
    let dir = Path::new("/sys/kernel/tracing");
    if dir.join("trace").exists() || !dir.exists() {
        return;
    }
    let _ = Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]).status();
}
