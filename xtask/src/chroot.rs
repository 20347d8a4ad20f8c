//! `cargo xtask chroot <trixie|forky>`: a minimal Debian chroot with that suite's Erlang/OTP and
//! Elixir, for the build-matrix tests (trixie: OTP 27, forky: OTP 29, next to the host's OTP 25).
//!
//! 1. installs `debootstrap` when missing (apt-get);
//! 2. `debootstrap --variant=minbase --include=erlang-base,elixir <suite> <dir> <mirror> <script>`
//!    into `.cache/chroots/<suite>.partial/`, from the mirror apt already uses (the `URIs` of
//!    `/etc/apt/sources.list.d/debian.sources`), with the suite's own debootstrap script when
//!    this debootstrap has one (bookworm's has trixie, not forky) and the sid script otherwise;
//! 3. drops the downloaded .debs, checks that the chroot's `erl` runs and prints its OTP
//!    release and ERTS version;
//! 4. writes the stamp file ([`STAMP`]) and renames the directory to `.cache/chroots/<suite>/`.
//!
//! A chroot with its stamp is reused as is (`--force` redoes it); one without (an interrupted
//! run) is removed and redone. `--run -- CMD...` runs a command inside the chroot, with /proc and
//! /dev mounted for it only (a private mount namespace: see `tests/harness/chroot.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use scope_probe_tests::chroot::{self as harness, STAMP, SUITES};

const DEBIAN_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
const SCRIPTS: &str = "/usr/share/debootstrap/scripts";

pub fn run(suite: &str, force: bool, run: bool, cmd: &[String]) -> Result<()> {
    if !SUITES.contains(&suite) {
        bail!("unknown suite {suite:?}: one of {}", SUITES.join(", "));
    }
    crate::setup::require_root("debootstrap and chroot need root")?;
    let dir = provision(suite, force)?;
    if run {
        let (program, args) = cmd.split_first().context("--run needs a command: --run -- erl -version")?;
        let program = if program.contains('/') { program.clone() } else { find_in_chroot(&dir, program)? };
        let status = harness::command(&dir, &program)
            .args(args)
            .status()
            .with_context(|| format!("running {program} in {}", dir.display()))?;
        if !status.success() {
            bail!("{program} in the {suite} chroot: {status}");
        }
    }
    Ok(())
}

/// The chroot's `/usr/bin/X`, `/bin/X`, ... for a bare command name.
fn find_in_chroot(dir: &Path, name: &str) -> Result<String> {
    ["usr/local/bin", "usr/bin", "usr/sbin", "bin", "sbin"]
        .iter()
        .map(|d| format!("/{d}/{name}"))
        .find(|p| dir.join(&p[1..]).exists())
        .with_context(|| format!("no {name} in {}", dir.display()))
}

/// Makes sure `.cache/chroots/<suite>` is complete; returns it.
pub fn provision(suite: &str, force: bool) -> Result<PathBuf> {
    let t0 = Instant::now();
    let dir = harness::chroot_dir(suite);
    if dir.join(STAMP).is_file() && !force {
        eprintln!("xtask: chroot {suite}: cached in {} ({})", dir.display(), stamp_summary(&dir));
        return Ok(dir);
    }
    let partial = dir.with_extension("partial");
    for d in [&dir, &partial] {
        if d.exists() {
            eprintln!("xtask: chroot {suite}: removing {}{}", d.display(), if d == &dir && !force { " (incomplete)" } else { "" });
            remove_tree(d)?;
        }
    }
    std::fs::create_dir_all(dir.parent().expect("parent"))?;

    step(&format!("chroot {suite}: debootstrap installed"), install_debootstrap)?;

    let mirror = mirror()?;
    let script = script_for(suite);
    eprintln!("xtask: chroot {suite}: debootstrap from {mirror} with {} (takes minutes)", script.display());
    step(&format!("chroot {suite}: debootstrap"), || {
        let status = Command::new("debootstrap")
            .args(["--variant=minbase", "--include=erlang-base,elixir", suite])
            .arg(&partial)
            .arg(&mirror)
            .arg(&script)
            .status()
            .context("running debootstrap")?;
        if !status.success() {
            // debootstrap mounts /proc and /sys inside while it installs; a failure can leave them.
            let _ = unmount_under(&partial);
            bail!("debootstrap {suite} failed ({status}); the log is {}/debootstrap/debootstrap.log", partial.display());
        }
        Ok(())
    })?;
    unmount_under(&partial)?;
    // The .debs debootstrap downloaded: ~100 MB nobody needs again.
    let archives = partial.join("var/cache/apt/archives");
    if let Ok(rd) = std::fs::read_dir(&archives) {
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "deb") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let release = step(&format!("chroot {suite}: erl runs"), || {
        let out = harness::command(&partial, "/usr/bin/erl")
            .args([
                "-noshell",
                "-eval",
                "io:format(\"~s ~s~n\", [erlang:system_info(otp_release), erlang:system_info(version)]), halt().",
            ])
            .output()
            .context("running the chroot's erl")?;
        if !out.status.success() {
            bail!("the chroot's erl failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let (otp, erts) = s.split_once(' ').with_context(|| format!("unexpected output of erl: {s:?}"))?;
        Ok(format!("OTP {otp}, ERTS {erts}"))
    })?;
    let stamp = format!(
        "suite={suite}\nmirror={mirror}\nscript={}\nrelease={release}\ncreated_unix={}\n",
        script.display(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    );
    std::fs::write(partial.join(STAMP), stamp)?;
    std::fs::rename(&partial, &dir).with_context(|| format!("renaming {} to {}", partial.display(), dir.display()))?;
    eprintln!("xtask: chroot {suite}: ready in {} ({release}) after {:.1?}", dir.display(), t0.elapsed());
    Ok(dir)
}

fn install_debootstrap() -> Result<()> {
    if Path::new("/usr/sbin/debootstrap").exists() {
        return Ok(());
    }
    crate::setup::install_missing(&["debootstrap"]).map(|_| ())
}

fn step<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let r = f();
    eprintln!("xtask: {what}: {} in {:.1?}", if r.is_ok() { "done" } else { "FAILED" }, t.elapsed());
    r
}

fn stamp_summary(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(STAMP))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("release=").map(str::to_owned)))
        .unwrap_or_else(|| "release unknown".into())
}

/// The suite's own debootstrap script when there is one, else sid's (which serves any
/// current suite: bookworm's debootstrap knows no forky).
fn script_for(suite: &str) -> PathBuf {
    let own = Path::new(SCRIPTS).join(suite);
    if own.exists() { own } else { Path::new(SCRIPTS).join("sid") }
}

/// The Debian mirror apt already uses: the first `URIs` of a deb822 stanza in
/// `debian.sources` that is not the security archive; else a `deb` line of
/// `/etc/apt/sources.list`; else deb.debian.org.
fn mirror() -> Result<String> {
    if let Ok(s) = std::fs::read_to_string(DEBIAN_SOURCES)
        && let Some(m) = mirror_from_deb822(&s) {
            return Ok(m);
        }
    if let Ok(s) = std::fs::read_to_string("/etc/apt/sources.list")
        && let Some(m) = mirror_from_list(&s) {
            return Ok(m);
        }
    eprintln!("xtask: no Debian mirror found in apt's sources; using {DEFAULT_MIRROR}");
    Ok(DEFAULT_MIRROR.into())
}

fn mirror_from_deb822(s: &str) -> Option<String> {
    s.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')).map(str::trim))
        };
        if !field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb")) {
            return None;
        }
        if field("Suites").is_some_and(|s| s.split_whitespace().all(|s| s.contains("security"))) {
            return None;
        }
        field("URIs")?.split_whitespace().find(|u| !u.contains("security")).map(str::to_owned)
    })
}

fn mirror_from_list(s: &str) -> Option<String> {
    s.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        if w.next() != Some("deb") {
            return None;
        }
        let uri = w.find(|x| !x.starts_with('['))?;
        (!uri.contains("security")).then(|| uri.to_owned())
    })
}

/// Mount points at or under `dir`, deepest first, from /proc/self/mountinfo.
fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(&dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    Ok(v)
}

fn unmount_under(dir: &Path) -> Result<()> {
    for m in mounts_under(dir)? {
        eprintln!("xtask: unmounting {}", m.display());
        let _ = Command::new("umount").arg("-l").arg(&m).status();
    }
    Ok(())
}

/// Removes a chroot, refusing while anything is still mounted inside it (a bind-mounted /dev
/// must never be deleted through).
fn remove_tree(dir: &Path) -> Result<()> {
    unmount_under(dir)?;
    let left = mounts_under(dir)?;
    if !left.is_empty() {
        bail!("still mounted under {}: {left:?}; unmount them first", dir.display());
    }
    let status = Command::new("rm").args(["-rf", "--one-file-system"]).arg(dir).status()?;
    if !status.success() {
        bail!("rm -rf {} failed", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_from_apt_sources() {
        let deb822 = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
                      URIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        assert_eq!(mirror_from_deb822(deb822).as_deref(), Some("http://deb.debian.org/debian"));
        let sec_first = "Types: deb\nURIs: http://security.debian.org/debian-security\nSuites: bookworm-security\n\n\
                         Types: deb deb-src\nURIs: http://ftp.fr.debian.org/debian\nSuites: bookworm\n";
        assert_eq!(mirror_from_deb822(sec_first).as_deref(), Some("http://ftp.fr.debian.org/debian"));
        assert_eq!(mirror_from_deb822("Types: deb-src\nURIs: x\n"), None);
        let list = "# comment\ndeb http://security.debian.org/ bookworm-security main\n\
                    deb [arch=amd64] http://mirror.example/debian bookworm main\n";
        assert_eq!(mirror_from_list(list).as_deref(), Some("http://mirror.example/debian"));
    }
}
