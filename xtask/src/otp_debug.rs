//! `cargo xtask otp-debug [--suite S]`: a beam.smp with DWARF, built from Debian's own OTP
//! source: the host's (Debian 12, OTP 25) by default, or a chroot suite's (`--suite trixie`:
//! OTP 27, `--suite forky`: OTP 29) inside that suite's chroot (see [`suite`]).
//!
//! Debian's `erlang-base` ships beam.smp stripped. Its struct layouts (the offsets in
//! `beam_probes/src/builds/`) can be checked against DWARF only with a build of the same
//! source configured the same way. Every result is cached at `.cache/otp-debug/<suite>/beam.smp`
//! (the host's under its codename, e.g. `bookworm`). For the host, this step:
//!
//! 1. adds a `deb-src` entry for the mirrors apt already uses (its own file,
//!    `/etc/apt/sources.list.d/scope-probe-src.sources`, derived from `debian.sources`) and
//!    runs `apt-get update`;
//! 2. installs the few packages `./configure && make emulator` needs ([`BUILD_PACKAGES`]);
//! 3. `apt-get source erlang` (the version of the installed `erlang-base` when apt still has
//!    it) into `.cache/otp25-src/` (git-ignored);
//! 4. configures with Debian's flags (`debian/rules`, `configure-stnd`), minus what only
//!    concerns applications or tools outside the emulator, plus `--without-wx --without-javac
//!    --without-odbc`, with Debian's `CFLAGS` (`-g -O2 -fno-strict-aliasing`: `-g` keeps the
//!    DWARF, Debian strips it when packaging);
//! 5. `make emulator` (it may stop after beam.smp on erl_call: harmless);
//! 6. copies beam.smp to `.cache/otp-debug/<host codename>/beam.smp` (a copy left at the
//!    former path, `.cache/otp25-debug/beam.smp`, is adopted instead of rebuilding).
//!
//! The result is reused when present; `--force` rebuilds from a fresh source tree.

pub mod suite;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::setup::{apt, install_missing};

/// What building the emulator needs, beyond a Debian base system (perl, xz-utils). Not
/// Debian's whole Build-Depends: no autoconf (the shipped configure scripts are used; Debian's
/// patches to configure.ac only concern non-Linux systems), no wx, Java, ODBC or OpenSSL.
/// (To read a layout by eye: `gdb -batch -ex 'ptype /o struct process' beam.smp`.)
pub const BUILD_PACKAGES: &[&str] = &[
    "build-essential", // gcc, g++ (the JIT is C++), make, dpkg-dev (apt-get source unpacks with dpkg-source)
    "libncurses-dev",  // configure refuses to build the emulator without termcap
    "zlib1g-dev",      // Debian's --enable-shared-zlib --disable-builtin-zlib
    "libsctp-dev",     // Debian's --enable-sctp (inet_drv, in the emulator)
];

/// Debian's own configure flags (debian/rules, configure-stnd, amd64), minus
/// `--enable-systemd` (epmd only) and the OpenSSL flags (crypto only): neither changes a line of
/// the emulator. `--enable-hybrid-heap` and `--enable-smp-support` are ignored by OTP 25 but
/// kept to read like Debian's list.
const DEBIAN_CONFIGURE_FLAGS: &[&str] = &[
    "--build=x86_64-linux-gnu",
    "--host=x86_64-linux-gnu",
    "--prefix=/usr",
    "--libexecdir=/usr/bin",
    "--infodir=/usr/share/info",
    "--mandir=/usr/share/man",
    "--enable-hybrid-heap",
    "--enable-threads",
    "--enable-smp-support",
    "--enable-kernel-poll",
    "--enable-esock",
    "--enable-sctp",
    "--enable-clock-gettime",
    "--enable-ethread-pre-pentium4-compatibility",
    "--enable-shared-zlib",
    "--disable-builtin-zlib",
    "--without-ssl-zlib",
    "--disable-silent-rules",
];

/// Ours: no OpenSSL, no wx, no Java, no ODBC (none of them is part of the emulator).
const EXTRA_CONFIGURE_FLAGS: &[&str] = &["--without-ssl", "--without-wx", "--without-javac", "--without-odbc"];

/// Debian's CFLAGS for amd64 (debian/rules: `-g $(OPTIMIZATION) -fno-strict-aliasing`), and the
/// `GEN_OPT_FLGS` it passes to make (OTP's default would be -O3). Neither changes a struct
/// layout; they keep the code close to the packaged one.
const DEBIAN_CFLAGS: &str = "-g -O2 -fno-strict-aliasing";
const DEBIAN_GEN_OPT_FLGS: &str = "-O2 -fno-strict-aliasing";

const SOURCES_FILE: &str = "/etc/apt/sources.list.d/scope-probe-src.sources";
const DEBIAN_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";

/// Where the debug beam.smp of `suite` (`None`: the host's) is cached.
pub fn debug_beam_path(suite: Option<&str>) -> PathBuf {
    let suite = suite.map_or_else(scope_probe_tests::host_suite, str::to_owned);
    scope_probe_tests::otp_debug_beam(&suite)
}

/// Where the host build kept its beam.smp before builds were per suite (others' checkouts
/// may still use it: it is adopted, never removed).
fn former_host_path() -> PathBuf {
    crate::workspace_root().join(".cache/otp25-debug/beam.smp")
}

pub(crate) fn src_dir() -> PathBuf {
    crate::workspace_root().join(".cache/otp25-src")
}

/// The prologue and epilogue every cached beam.smp build shares: returns `out` when it exists
/// (unless `force`); else checks for root, runs `build` (given a step printer, returning the
/// built beam.smp), copies the result to `out` atomically and checks that it kept its DWARF.
pub(crate) fn cached_or_build(
    what: &str,
    out: &Path,
    force: bool,
    why_root: &str,
    build: impl FnOnce(&dyn Fn(&str)) -> Result<PathBuf>,
) -> Result<PathBuf> {
    if out.exists() && !force {
        eprintln!("xtask: {what}: using cached {}", out.display());
        return Ok(out.to_owned());
    }
    crate::setup::require_root(why_root)?;
    let started = Instant::now();
    let step = |msg: &str| eprintln!("xtask: {what} [{:>5.0}s] {msg}", started.elapsed().as_secs_f64());
    let built = build(&step)?;
    std::fs::create_dir_all(out.parent().context("output path without a parent")?)?;
    let tmp = out.with_extension("tmp");
    std::fs::copy(&built, &tmp).with_context(|| format!("copying {}", built.display()))?;
    std::fs::rename(&tmp, out)?;
    if !beam_probes::dwarf::has_debug_info(out) {
        bail!("{} has no .debug_info: were CFLAGS honoured? (build logs next to {})", out.display(), built.display());
    }
    step(&format!("done: {} (built as {})", out.display(), built.display()));
    Ok(out.to_owned())
}

/// Ensures the debug beam.smp of `suite` (`None`: the host's) exists (builds it unless cached
/// or `force`); returns it. For a chroot suite it also writes the split debug file and, when
/// the build is not bit-for-bit Debian's, a stripped copy (see [`suite::debug_artifacts`]).
pub fn provision(suite: Option<&str>, force: bool) -> Result<PathBuf> {
    let out = debug_beam_path(suite);
    let Some(name) = suite else { return provision_host(&out, force) };
    if !scope_probe_tests::chroot::SUITES.contains(&name) {
        bail!("unknown suite {name:?}: one of {} (or none, for the host's)", scope_probe_tests::chroot::SUITES.join(", "));
    }
    let what = format!("otp-debug {name}");
    let fresh = force || !out.exists();
    let out = cached_or_build(&what, &out, force, "the build uses a chroot (mounts, chroot, apt inside it)", |step| {
        suite::build(name, force, step)
    })?;
    if fresh || !suite::dir(name).join("debug/.build-id").exists() {
        let a = suite::debug_artifacts(name, &out)?;
        let verdict = match &a.packaged_build_id {
            Some(p) if *p == a.build_id => "identical to Debian's packaged beam.smp (reproducible)".to_owned(),
            Some(p) => format!("differs from Debian's packaged beam.smp ({p})"),
            None => "no packaged beam.smp to compare with".to_owned(),
        };
        eprintln!("xtask: {what}: build-id {} {verdict}", a.build_id);
        eprintln!("xtask: {what}: split debug file (as dh_strip): {}", a.debug_file.display());
        if let Some(s) = &a.stripped {
            eprintln!("xtask: {what}: stripped as dh_strip, with .gnu_debuglink: {}", s.display());
        }
    }
    Ok(out)
}

fn provision_host(out: &Path, force: bool) -> Result<PathBuf> {
    let former = former_host_path();
    if !out.exists() && !force && former.exists() {
        std::fs::create_dir_all(out.parent().context("output path without a parent")?)?;
        std::fs::copy(&former, out).with_context(|| format!("copying {}", former.display()))?;
        eprintln!("xtask: otp-debug: adopted {} as {}", former.display(), out.display());
    }
    let why = "building the debug beam.smp installs Debian packages and adds a deb-src entry";
    cached_or_build("otp-debug", out, force, why, |step| {
        prepare_apt(&[], step)?;
        let src = src_dir();
        let tree = download_source(&src, step)?;
        step("./configure (Debian's flags, CFLAGS with -g)");
        configure(&tree, &[], &src.join("configure.log"))?;
        make_emulator(&tree, &src.join("make.log"), "otp-debug", step)
    })
}

/// Adds the deb-src entry if needed, runs `apt-get update` when something is missing, and
/// installs [`BUILD_PACKAGES`] plus `extra` (those not installed yet).
pub(crate) fn prepare_apt(extra: &[&str], step: &dyn Fn(&str)) -> Result<()> {
    step("deb-src entry");
    let wrote_sources = ensure_deb_src()?;
    if wrote_sources || !apt_knows_source() {
        step("apt-get update");
        apt(&["update"])?;
    }
    let packages: Vec<&str> = BUILD_PACKAGES.iter().chain(extra).copied().collect();
    let installed = install_missing(&packages)?;
    if !installed.is_empty() {
        step(&format!("installed build dependencies: {}", installed.join(" ")));
    }
    Ok(())
}

/// Empties `src` and `apt-get source`s Debian's OTP source (the installed version when apt has
/// it) into it; returns the unpacked tree.
pub(crate) fn download_source(src: &Path, step: &dyn Fn(&str)) -> Result<PathBuf> {
    if src.exists() {
        std::fs::remove_dir_all(src).with_context(|| format!("removing {}", src.display()))?;
    }
    std::fs::create_dir_all(src)?;
    let wanted = source_version();
    step(&format!("apt-get source {wanted} into {}", src.display()));
    let status = Command::new("apt-get")
        .args(["source", "-q", &wanted])
        .current_dir(src)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get source")?;
    if !status.success() {
        bail!("apt-get source {wanted} failed (is {SOURCES_FILE} right for this mirror?)");
    }
    unpacked_tree(src)
}

/// The unpacked OTP source tree under `dir`.
pub(crate) fn unpacked_tree(dir: &Path) -> Result<PathBuf> {
    std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_dir() && p.join("erts/configure").exists())
        .with_context(|| format!("no unpacked OTP source tree under {}", dir.display()))
}

/// `./configure` in `tree` with Debian's flags, ours, and `extra`, with Debian's CFLAGS;
/// output into `log`.
pub(crate) fn configure(tree: &Path, extra: &[&str], log: &Path) -> Result<()> {
    run_logged(
        Command::new("./configure")
            .args(DEBIAN_CONFIGURE_FLAGS)
            .args(EXTRA_CONFIGURE_FLAGS)
            .args(extra)
            .env("CFLAGS", DEBIAN_CFLAGS)
            .current_dir(tree),
        log,
    )
    .with_context(|| format!("configure failed, see {}", log.display()))
}

/// `make emulator` in a configured `tree` (output into `log`); returns the built beam.smp.
pub(crate) fn make_emulator(tree: &Path, log: &Path, what: &str, step: &dyn Fn(&str)) -> Result<PathBuf> {
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    step(&format!("make -j{jobs} emulator (log: {})", log.display()));
    // `make emulator` builds beam.smp, then may fail on erl_call (erl_interface): only
    // beam.smp matters, so success is judged by it being there.
    let make_ok = run_logged(
        Command::new("make")
            .arg(format!("-j{jobs}"))
            .arg(format!("GEN_OPT_FLGS={DEBIAN_GEN_OPT_FLGS}"))
            .arg("emulator")
            .current_dir(tree),
        log,
    )
    .is_ok();
    let built = tree.join("bin/x86_64-pc-linux-gnu/beam.smp");
    let built = if built.exists() { built } else { find_beam_smp(&tree.join("bin")).unwrap_or(built) };
    if !built.exists() {
        bail!("make emulator did not produce beam.smp, see {}", log.display());
    }
    if !make_ok {
        eprintln!("xtask: {what}: make stopped after beam.smp (harmless: see {})", log.display());
    }
    Ok(built)
}

/// Writes [`SOURCES_FILE`]: `debian.sources` with `Types: deb-src` (same URIs, suites,
/// components and keys), unless a deb-src entry is already configured. True when written.
fn ensure_deb_src() -> Result<bool> {
    if Path::new(SOURCES_FILE).exists() || deb_src_configured() {
        return Ok(false);
    }
    let existing = std::fs::read_to_string(DEBIAN_SOURCES)
        .with_context(|| format!("reading {DEBIAN_SOURCES} (the mirrors to take sources from)"))?;
    let Some(out) = deb_src_from(&existing) else {
        bail!("{DEBIAN_SOURCES} has no `Types: deb` stanza to derive a deb-src entry from");
    };
    std::fs::write(SOURCES_FILE, out).with_context(|| format!("writing {SOURCES_FILE}"))?;
    Ok(true)
}

/// The deb822 `deb` stanzas of `existing` as `deb-src` stanzas (comments dropped).
fn deb_src_from(existing: &str) -> Option<String> {
    let mut out = String::from(
        "# Written by `cargo xtask otp-debug` (scope-probe): Debian source packages from the mirrors\n\
         # of debian.sources, to build a beam.smp with DWARF from Debian's own OTP source.\n",
    );
    let mut stanzas = 0;
    for stanza in existing.split("\n\n") {
        let lines: Vec<&str> = stanza.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()).collect();
        if !lines.iter().any(|l| l.starts_with("Types:") && l.split_whitespace().any(|t| t == "deb")) {
            continue;
        }
        out.push('\n');
        for l in lines {
            if l.starts_with("Types:") {
                out.push_str("Types: deb-src\n");
            } else {
                out.push_str(l);
                out.push('\n');
            }
        }
        stanzas += 1;
    }
    (stanzas > 0).then_some(out)
}

/// Whether apt's lists already hold the `erlang` source package.
fn apt_knows_source() -> bool {
    Command::new("apt-cache")
        .args(["showsrc", "erlang"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("Package: erlang"))
}

/// Whether some apt source (one-line or deb822 format) already has source packages.
fn deb_src_configured() -> bool {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| {
            p.extension().is_some_and(|x| x == "list" || x == "sources")
        }));
    }
    files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).any(|text| {
        text.lines().map(str::trim).any(|l| {
            l.starts_with("deb-src ") || (l.starts_with("Types:") && l.split_whitespace().any(|t| t == "deb-src"))
        })
    })
}

/// `erlang=<version of the installed erlang-base>` when apt has that source version, so the
/// debug build is the source of the installed binary; else the newest `erlang` source.
fn source_version() -> String {
    let installed = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "erlang-base"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|v| !v.is_empty());
    let Some(version) = installed else { return "erlang".into() };
    let available = Command::new("apt-cache")
        .args(["showsrc", "erlang"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == format!("Version: {version}")));
    if available { format!("erlang={version}") } else { "erlang".into() }
}

fn find_beam_smp(bin: &Path) -> Option<PathBuf> {
    std::fs::read_dir(bin).ok()?.filter_map(|e| e.ok()).map(|e| e.path().join("beam.smp")).find(|p| p.exists())
}

/// Runs a command with stdout and stderr into `log`.
fn run_logged(cmd: &mut Command, log: &Path) -> Result<()> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let status = cmd
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} exited with {status}", cmd.get_program());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::deb_src_from;

    #[test]
    fn deb_src_entry_mirrors_debian_sources() {
        let debian = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
                      URIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\
                      Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\
                      Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
        let out = deb_src_from(debian).unwrap();
        let stanzas: Vec<&str> = out.split("\n\n").skip(1).collect();
        assert_eq!(
            stanzas,
            [
                "Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\
                 Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg",
                "Types: deb-src\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\
                 Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
            ]
        );
        assert!(deb_src_from("Types: deb-src\nURIs: x\n").is_none());
    }
}
