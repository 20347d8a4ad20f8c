//! `cargo xtask otp-debug --suite <trixie|forky>`: Debian's own erlang source package of a
//! chroot suite, built inside a chroot of that suite the way its `debian/rules` builds it.
//!
//! 1. the suite's test chroot (`cargo xtask chroot <suite>`, cached) is copied to
//!    `.cache/otp-debug/<suite>/root/` (once): the build installs a compiler and adds a deb-src
//!    entry, and the test chroot must stay the stock install the tests compare against;
//! 2. a `deb-src` line for the mirror and suite of the chroot's own `deb` lines, `apt-get
//!    update` (the mirror may serve a Release file past its Valid-Until: not checked), the
//!    build packages ([`super::BUILD_PACKAGES`] plus what Debian's configure flags need);
//! 3. `apt-get source erlang=<installed erlang-base version>` into
//!    `/build/reproducible-path/` (Debian's buildd path: `-ffile-prefix-map` maps it to `.`).
//!    When the mirror lacks that version's source (trixie's deb13u4 security upload), the
//!    newest older revision of the same upstream version on the mirror is used instead and the
//!    choice is recorded in `source-version` and printed;
//! 4. `build_in_chroot.sh` (next to this file): debian/rules' own `automake-stamp` and
//!    `configure-stamp` targets in the environment dpkg-buildpackage gives them
//!    (SOURCE_DATE_EPOCH, no exported build flags), then `make emulator` with the rules'
//!    GEN_OPT_FLGS: no flag is re-typed here;
//! 5. copies beam.smp (with DWARF) to `.cache/otp-debug/<suite>/beam.smp`, then writes the
//!    split debug file as dh_strip would and compares build-ids with the packaged beam.smp
//!    (see [`debug_artifacts`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use beam_probes::elf::ElfInfo;
use scope_probe_tests::chroot as harness;

/// The build recipe run inside the chroot.
const BUILD_SCRIPT: &str = include_str!("build_in_chroot.sh");

/// Beyond [`super::BUILD_PACKAGES`]: the part of Debian's Build-Depends that debian/rules'
/// automake-stamp and configure-stamp use (autoconf regeneration, dh_testdir, grep-status;
/// `--enable-systemd` and `--enable-dynamic-ssl-lib` check for their headers; pkgconf, bison,
/// flex and ed as configure finds them on Debian's buildds). Not wx, ODBC, Java or docs.
const SUITE_PACKAGES: &[&str] = &[
    "libssl-dev",
    "libsystemd-dev",
    "autoconf",
    "m4",
    "autotools-dev",
    "debhelper",
    "dctrl-tools",
    "pkgconf",
    "bison",
    "flex",
    "ed",
    "openssl",
];

/// `.cache/otp-debug/<suite>/`.
pub fn dir(suite: &str) -> PathBuf {
    crate::workspace_root().join(".cache/otp-debug").join(suite)
}

/// Builds beam.smp for `suite` in its build root; returns the built file (in the root).
pub fn build(suite: &str, force: bool, step: &dyn Fn(&str)) -> Result<PathBuf> {
    let chroot = crate::chroot::provision(suite, false)?;
    let root = build_root(suite, &chroot, force, step)?;
    let version = in_root(&root, "dpkg-query -W -f='${Version}' erlang-base")?.trim().to_owned();
    if version.is_empty() {
        bail!("erlang-base is not installed in {}", root.display());
    }
    step(&format!("{suite}: erlang-base {version}; deb-src entry, apt-get update, build packages"));
    prepare_apt(&root, suite)?;

    let work = root.join("build/reproducible-path");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    let used = fetch_source(&root, &version, step)?;
    std::fs::write(dir(suite).join("source-version"), format!("installed={version}\nsource={used}\n"))?;
    let tree = super::unpacked_tree(&work)?;
    let inside = format!("/{}", tree.strip_prefix(&root)?.display());

    std::fs::write(root.join("build/build_in_chroot.sh"), BUILD_SCRIPT)?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    step(&format!("{suite}: configure + make emulator (Debian's flags; logs in {})", work.display()));
    let out = chroot_cmd(&root, "/bin/sh")
        .args(["/build/build_in_chroot.sh", &inside, &jobs.to_string()])
        .output()
        .context("running the build in the chroot")?;
    let log = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    std::fs::write(dir(suite).join("build.log"), &log)?;
    for l in log.lines().filter(|l| l.contains('=') || l.starts_with("configure")) {
        step(&format!("{suite}:   {l}"));
    }
    let built = tree.join("bin/x86_64-pc-linux-gnu/beam.smp");
    if !out.status.success() || !built.exists() {
        bail!("building beam.smp in {} failed ({}); see {}", root.display(), out.status, dir(suite).join("build.log").display());
    }
    Ok(built)
}

/// The build root: a copy of the suite's chroot (made once; `force` remakes it).
fn build_root(suite: &str, chroot: &Path, force: bool, step: &dyn Fn(&str)) -> Result<PathBuf> {
    let root = dir(suite).join("root");
    if root.join("etc/debian_version").exists() && !force {
        return Ok(root);
    }
    let partial = dir(suite).join("root.partial");
    for d in [&root, &partial] {
        if d.exists() {
            // --one-file-system: never follow a leftover bind mount out of the tree.
            let status = Command::new("rm").args(["-rf", "--one-file-system"]).arg(d).status()?;
            if !status.success() {
                bail!("removing {} failed", d.display());
            }
        }
    }
    std::fs::create_dir_all(dir(suite))?;
    step(&format!("{suite}: copying {} to {}", chroot.display(), root.display()));
    let status = Command::new("cp").args(["-a", "--reflink=auto"]).arg(chroot).arg(&partial).status()?;
    if !status.success() {
        bail!("copying {} failed", chroot.display());
    }
    let _ = std::fs::remove_file(partial.join(harness::STAMP));
    std::fs::rename(&partial, &root)?;
    Ok(root)
}

/// A command in the build root with a clean environment: nothing of cargo's or the host's
/// (CFLAGS, MAKEFLAGS...) may leak into a build meant to match Debian's.
fn chroot_cmd(root: &Path, program: &str) -> Command {
    let mut c = harness::command(root, program);
    c.env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root")
        .env("DEBIAN_FRONTEND", "noninteractive");
    c
}

/// Runs a shell command in the root; its stdout, or an error with its stderr.
fn in_root(root: &Path, script: &str) -> Result<String> {
    let out = chroot_cmd(root, "/bin/sh").args(["-c", script]).output().with_context(|| format!("running {script:?}"))?;
    if !out.status.success() {
        bail!("{script:?} in {} failed: {}", root.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn prepare_apt(root: &Path, suite: &str) -> Result<()> {
    let list = root.join("etc/apt/sources.list.d/scope-probe-src.list");
    if !list.exists() {
        let sources = std::fs::read_to_string(root.join("etc/apt/sources.list")).unwrap_or_default();
        let src: String = sources
            .lines()
            .filter_map(|l| l.strip_prefix("deb "))
            .map(|rest| format!("deb-src {rest}\n"))
            .collect();
        if src.is_empty() {
            bail!("no `deb` line in the {suite} chroot's /etc/apt/sources.list to derive a deb-src line from");
        }
        std::fs::write(&list, format!("# Written by `cargo xtask otp-debug --suite {suite}` (scope-probe).\n{src}"))?;
    }
    let packages: Vec<&str> = super::BUILD_PACKAGES.iter().chain(SUITE_PACKAGES).copied().collect();
    in_root(
        root,
        &format!(
            "apt-get -q -o Acquire::Check-Valid-Until=false update >/dev/null && \
             apt-get install -y -q --no-install-recommends {} >/dev/null",
            packages.join(" ")
        ),
    )?;
    Ok(())
}

/// `apt-get source erlang=<version>` in `/build/reproducible-path`; when the mirror does not
/// have that source, the newest older Debian revision of the same upstream version that it
/// has (fetched from the pool and unpacked with dpkg-source). Returns the version used.
fn fetch_source(root: &Path, version: &str, step: &dyn Fn(&str)) -> Result<String> {
    step(&format!("apt-get source erlang={version}"));
    let apt = in_root(root, &format!("cd /build/reproducible-path && apt-get source -q erlang={version} 2>&1"));
    if apt.is_ok() && super::unpacked_tree(&root.join("build/reproducible-path")).is_ok() {
        return Ok(version.to_owned());
    }
    let (pool, mirror) = pool_url(root)?;
    for candidate in older_revisions(version) {
        let no_epoch = candidate.split_once(':').map_or(candidate.as_str(), |(_, v)| v);
        let dsc_name = format!("erlang_{no_epoch}.dsc");
        let dsc_path = root.join("build/reproducible-path").join(&dsc_name);
        if !download(&format!("{mirror}/{pool}/{dsc_name}"), &dsc_path)? {
            continue;
        }
        step(&format!(
            "the mirror has no source for erlang {version}; using {candidate}, the newest older revision it has"
        ));
        let dsc = std::fs::read_to_string(&dsc_path)?;
        for file in dsc_files(&dsc) {
            let dest = root.join("build/reproducible-path").join(&file);
            if !dest.exists() && !download(&format!("{mirror}/{pool}/{file}"), &dest)? {
                bail!("{mirror}/{pool}/{file} (listed in {dsc_name}) is not on the mirror");
            }
        }
        // dpkg-source checks every file against the .dsc's checksums.
        in_root(root, &format!("cd /build/reproducible-path && dpkg-source -x {dsc_name} >/dev/null"))?;
        return Ok(candidate);
    }
    bail!("neither erlang={version} nor an older revision of it is on the mirror ({mirror}/{pool})")
}

/// The pool directory of the erlang source (`apt-cache showsrc`) and the mirror's URL.
fn pool_url(root: &Path) -> Result<(String, String)> {
    let showsrc = in_root(root, "apt-cache showsrc erlang")?;
    let pool = showsrc
        .lines()
        .find_map(|l| l.strip_prefix("Directory: "))
        .context("apt-cache showsrc erlang gives no Directory")?
        .trim()
        .to_owned();
    let sources = std::fs::read_to_string(root.join("etc/apt/sources.list"))?;
    let mirror = sources
        .lines()
        .find_map(|l| l.strip_prefix("deb ").and_then(|r| r.split_whitespace().find(|w| !w.starts_with('['))))
        .context("no mirror in the chroot's sources.list")?
        .trim_end_matches('/')
        .to_owned();
    Ok((pool, mirror))
}

/// Older Debian revisions of `version`, newest first: `...+deb13u4` -> u3, u2, u1, then the
/// revision without the stable-update suffix.
fn older_revisions(version: &str) -> Vec<String> {
    let Some((base, n)) = version.rsplit_once('u').and_then(|(b, n)| Some((b, n.parse::<u32>().ok()?))) else {
        return Vec::new();
    };
    if !base.contains("+deb") {
        return Vec::new();
    }
    let mut v: Vec<String> = (1..n).rev().map(|k| format!("{base}u{k}")).collect();
    if let Some((plain, _)) = base.rsplit_once("+deb") {
        v.push(plain.to_owned());
    }
    v
}

/// The files a .dsc lists (`Files:` section, " md5 size name").
fn dsc_files(dsc: &str) -> Vec<String> {
    dsc.lines()
        .skip_while(|l| !l.starts_with("Files:"))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .collect()
}

/// Downloads `url` to `dest` with the host's curl; false when the server has no such file.
fn download(url: &str, dest: &Path) -> Result<bool> {
    let url = url.replace('+', "%2b");
    let out = Command::new("curl").args(["-sS", "-f", "-o"]).arg(dest).arg(&url).output().context("running curl")?;
    if !out.status.success() {
        let _ = std::fs::remove_file(dest);
    }
    Ok(out.status.success())
}

/// What `debug_artifacts` found.
pub struct DebugArtifacts {
    pub build_id: String,
    pub packaged_build_id: Option<String>,
    pub debug_file: PathBuf,
    pub stripped: Option<PathBuf>,
}

/// The split debug file of `beam` as Debian's dh_strip makes it (`objcopy --only-keep-debug
/// --compress-debug-sections`) at `<dir>/debug/.build-id/xx/rest.debug`; and, when the
/// build-id differs from the packaged beam.smp's (the build is not bit-for-bit Debian's), a
/// copy stripped like dh_strip strips executables (`strip --remove-section=.comment
/// --remove-section=.note`) with a `.gnu_debuglink` to that file, at `<dir>/beam.smp.stripped`.
pub fn debug_artifacts(suite: &str, beam: &Path) -> Result<DebugArtifacts> {
    let build_id = ElfInfo::open(beam)?.build_id.context("the built beam.smp has no build-id")?;
    let packaged = packaged_beam(&harness::chroot_dir(suite))
        .and_then(|p| ElfInfo::open(&p).ok())
        .and_then(|e| e.build_id);
    // One debug file, for the current build: a stale one of an earlier build would only mislead.
    let debug_dir = scope_probe_tests::otp_debug_dir(suite);
    let _ = std::fs::remove_dir_all(&debug_dir);
    let ids = debug_dir.join(".build-id").join(&build_id[..2]);
    std::fs::create_dir_all(&ids)?;
    let debug_file = ids.join(format!("{}.debug", &build_id[2..]));
    run(Command::new("objcopy").args(["--only-keep-debug", "--compress-debug-sections"]).arg(beam).arg(&debug_file))?;
    let stripped = if packaged.as_deref() == Some(build_id.as_str()) {
        let _ = std::fs::remove_file(scope_probe_tests::otp_debug_stripped(suite));
        None
    } else {
        let out = scope_probe_tests::otp_debug_stripped(suite);
        run(Command::new("strip").args(["--remove-section=.comment", "--remove-section=.note", "-o"]).arg(&out).arg(beam))?;
        run(Command::new("objcopy").arg(format!("--add-gnu-debuglink={}", debug_file.display())).arg(&out))?;
        Some(out)
    };
    Ok(DebugArtifacts { build_id, packaged_build_id: packaged, debug_file, stripped })
}

/// The packaged beam.smp in a chroot (`usr/lib/erlang/erts-*/bin/beam.smp`).
pub fn packaged_beam(chroot: &Path) -> Option<PathBuf> {
    std::fs::read_dir(chroot.join("usr/lib/erlang"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("erts-")))
        .map(|p| p.join("bin/beam.smp"))
        .find(|p| p.exists())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!("{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{dsc_files, older_revisions};

    #[test]
    fn older_revisions_of_a_stable_update() {
        assert_eq!(
            older_revisions("1:27.3.4.1+dfsg-1+deb13u4"),
            ["1:27.3.4.1+dfsg-1+deb13u3", "1:27.3.4.1+dfsg-1+deb13u2", "1:27.3.4.1+dfsg-1+deb13u1", "1:27.3.4.1+dfsg-1"]
        );
        assert!(older_revisions("1:29.1.1+dfsg-1").is_empty());
    }

    #[test]
    fn files_of_a_dsc() {
        let dsc = "Format: 3.0 (quilt)\nFiles:\n abc 47613664 erlang_27.3.4.1+dfsg.orig.tar.xz\n \
                   def 150788 erlang_27.3.4.1+dfsg-1+deb13u3.debian.tar.xz\nChecksums-Sha256:\n x 1 y\n";
        assert_eq!(dsc_files(dsc), ["erlang_27.3.4.1+dfsg.orig.tar.xz", "erlang_27.3.4.1+dfsg-1+deb13u3.debian.tar.xz"]);
    }
}
