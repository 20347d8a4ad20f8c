//! `cargo xtask otp-usdt`: a beam.smp with the VM's own USDT probes (systemtap `sdt.h`) and
//! DWARF, built from Debian's own OTP 25 source.
//!
//! Same recipe as `otp-debug` (Debian's configure flags and CFLAGS, `make emulator`), plus
//! `systemtap-sdt-dev` and `--with-dynamic-trace=systemtap`, in a separate source tree,
//! `.cache/otp25-usdt-src/`, so the DWARF build's tree stays as it is. The source is unpacked
//! from the files `otp-debug` already downloaded into `.cache/otp25-src/` (`dpkg-source -x`)
//! when they are there, else fetched with `apt-get source`. The result is
//! `.cache/otp25-usdt/beam.smp`, reused when present; `--force` rebuilds from a fresh tree.
//!
//! Boot it by copying the installed OTP (`/usr/lib/erlang`, same version) and swapping in this
//! beam.smp; `erlang:system_info(dynamic_trace)` then says `systemtap`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::otp_debug;

/// Provides `sys/sdt.h` and the `dtrace` script configure looks for.
const USDT_PACKAGES: &[&str] = &["systemtap-sdt-dev"];

/// Where the USDT beam.smp is cached.
pub fn usdt_beam_path() -> PathBuf {
    crate::workspace_root().join(".cache/otp25-usdt/beam.smp")
}

fn src_dir() -> PathBuf {
    crate::workspace_root().join(".cache/otp25-usdt-src")
}

/// Ensures `.cache/otp25-usdt/beam.smp` exists (builds it unless cached or `force`); returns it.
pub fn provision(force: bool) -> Result<PathBuf> {
    let why = "building the USDT beam.smp installs Debian packages and adds a deb-src entry";
    otp_debug::cached_or_build("otp-usdt", &usdt_beam_path(), force, why, |step| {
        otp_debug::prepare_apt(USDT_PACKAGES, step)?;
        let src = src_dir();
        let tree = match cached_dsc() {
            Some(dsc) => unpack(&dsc, &src, step)?,
            None => otp_debug::download_source(&src, step)?,
        };
        step("./configure (Debian's flags, CFLAGS with -g, --with-dynamic-trace=systemtap)");
        let configure_log = src.join("configure.log");
        otp_debug::configure(&tree, &["--with-dynamic-trace=systemtap"], &configure_log)?;
        let built = otp_debug::make_emulator(&tree, &src.join("make.log"), "otp-usdt", step)?;
        let probes = stapsdt_erlang_probes(&built)?;
        if probes == 0 {
            bail!(
                "{} has no erlang USDT probes (.note.stapsdt): did configure find sys/sdt.h? see {}",
                built.display(),
                configure_log.display()
            );
        }
        step(&format!("{probes} erlang USDT probes"));
        Ok(built)
    })
}

/// The `.dsc` `otp-debug` downloaded, when its tarballs are all there.
fn cached_dsc() -> Option<PathBuf> {
    let dir = otp_debug::src_dir();
    let dsc = std::fs::read_dir(&dir).ok()?.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
        p.extension().is_some_and(|x| x == "dsc")
    })?;
    let text = std::fs::read_to_string(&dsc).ok()?;
    // The `Files:` section lists what dpkg-source needs: " md5 size name".
    let files: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Files:"))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    (!files.is_empty() && files.iter().all(|f| dir.join(f).exists())).then_some(dsc)
}

/// Empties `src` and unpacks `dsc` (Debian's patches applied) into it; returns the tree.
fn unpack(dsc: &Path, src: &Path, step: &dyn Fn(&str)) -> Result<PathBuf> {
    if src.exists() {
        std::fs::remove_dir_all(src).with_context(|| format!("removing {}", src.display()))?;
    }
    std::fs::create_dir_all(src)?;
    let name = dsc.file_stem().and_then(|s| s.to_str()).unwrap_or("erlang");
    // erlang_25.2.3+dfsg-1+deb12u4 -> erlang-25.2.3+dfsg, like apt-get source names it.
    let dir = name.split_once('_').map_or(name.to_owned(), |(p, v)| {
        format!("{p}-{}", v.rsplit_once('-').map_or(v, |(upstream, _)| upstream))
    });
    let tree = src.join(dir);
    step(&format!("dpkg-source -x {} into {}", dsc.display(), tree.display()));
    let log = src.join("dpkg-source.log");
    let file = std::fs::File::create(&log)?;
    let status = Command::new("dpkg-source")
        .arg("-x")
        .arg(dsc)
        .arg(&tree)
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .context("running dpkg-source")?;
    if !status.success() {
        bail!("dpkg-source -x {} failed, see {}", dsc.display(), log.display());
    }
    otp_debug::unpacked_tree(src)
}

/// How many stapsdt notes with provider `erlang` `binary` has (`readelf -n`).
fn stapsdt_erlang_probes(binary: &Path) -> Result<usize> {
    let out = Command::new("readelf")
        .args(["-n", "--wide"])
        .arg(binary)
        .output()
        .context("running readelf -n")?;
    if !out.status.success() {
        bail!("readelf -n {} failed", binary.display());
    }
    // With --wide, each note is one line: "  stapsdt  0x.. NT_STAPSDT (...)\t    Provider: erlang".
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.trim_end().ends_with("Provider: erlang")).count())
}
